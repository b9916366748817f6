//! What more than one subcommand reads from its command line: an inode, a time, a pid.

use std::{fmt, time::SystemTime};

use crate::procfs::LockLine;

/// An inode by device (major, minor) and number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inode {
    pub major: u32,
    pub minor: u32,
    pub ino: u64,
}

impl Inode {
    /// The device in the kernel's encoding, as /proc lock lines carry it.
    pub fn dev(self) -> u32 {
        aimlock_common::kernel_dev(self.major, self.minor)
    }

    /// The device as `aimlock trace` writes it: "MAJOR:MINOR" in decimal.
    pub fn dev_name(self) -> String {
        format!("{}:{}", self.major, self.minor)
    }

    pub fn holds(self, lock: &LockLine) -> bool {
        lock.dev() == self.dev() && lock.ino == self.ino
    }
}

impl fmt::Display for Inode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.major, self.minor, self.ino)
    }
}

/// `--inode`: MAJOR:MINOR:INODE with the device in decimal, as `aimlock trace` and
/// `stat -c %Hd:%Ld:%i` print it, or in hexadecimal as /proc/locks prints it (`fe:00:INODE`,
/// each device number two digits at least). /proc/locks' form is told apart by a hexadecimal
/// letter or a leading zero; a device with neither (`10:10`) is taken as decimal.
pub fn parse_inode(text: &str) -> Result<Inode, String> {
    let wanted = || {
        format!(
            "{text:?} is not MAJOR:MINOR:INODE (254:0:10010728, or fe:00:10010728 as /proc/locks \
             prints it)"
        )
    };
    let [major, minor, ino] = text.split(':').collect::<Vec<_>>()[..] else {
        return Err(wanted());
    };
    let hexadecimal = [major, minor].iter().any(|part| {
        part.bytes().any(|b| b.is_ascii_alphabetic()) || (part.len() > 1 && part.starts_with('0'))
    });
    let radix = if hexadecimal { 16 } else { 10 };
    let number = |part: &str| {
        part.bytes()
            .all(|b| b.is_ascii_hexdigit())
            .then(|| u32::from_str_radix(part, radix).ok())
            .flatten()
            .ok_or_else(wanted)
    };
    Ok(Inode {
        major: number(major)?,
        minor: number(minor)?,
        ino: ino.parse().map_err(|_| wanted())?,
    })
}

/// `--since`, `--until`, `--at`: an RFC 3339 time with its offset (`Z`, `+02:00`, `-05:00`),
/// or a duration before now (`2h`, `30min`, `1h 30min ago`). A time without an offset is
/// refused rather than guessed.
pub fn parse_time(text: &str) -> Result<SystemTime, String> {
    if let Ok(time) = text.parse::<jiff::Timestamp>() {
        return SystemTime::try_from(time).map_err(|err| format!("{text:?}: {err}"));
    }
    if text.parse::<jiff::civil::DateTime>().is_ok() {
        return Err(format!(
            "{text:?} has no UTC offset: add Z for UTC, or the offset, such as +02:00"
        ));
    }
    let ago = text.strip_suffix(" ago").unwrap_or(text);
    humantime::parse_duration(ago)
        .ok()
        .and_then(|ago| SystemTime::now().checked_sub(ago))
        .ok_or_else(|| {
            format!(
                "{text:?} is neither an RFC 3339 time (2026-11-27T05:04:50Z, \
                 2026-11-27T00:04:50-05:00) nor a duration before now (2h, 30min)"
            )
        })
}

/// Whether a process with this pid exists now (a zombie too: its pid is still taken).
pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inodes_read_in_decimal_or_as_proc_locks_prints_them() {
        let vda = Inode {
            major: 254,
            minor: 0,
            ino: 10010728,
        };
        assert_eq!(parse_inode("254:0:10010728"), Ok(vda));
        assert_eq!(parse_inode("fe:00:10010728"), Ok(vda));
        assert_eq!(parse_inode("FE:00:10010728"), Ok(vda));
        let sda1 = Inode {
            major: 8,
            minor: 1,
            ino: 12,
        };
        assert_eq!(parse_inode("08:01:12"), Ok(sda1));
        assert_eq!(parse_inode("8:1:12"), Ok(sda1));
        assert_eq!(parse_inode("00:2d:7").map(|inode| inode.minor), Ok(45));
        assert_eq!(parse_inode("253:10:7").map(|inode| inode.minor), Ok(10));
        assert_eq!(vda.dev_name(), "254:0");
        for bad in [
            "",
            "254:0",
            "254:0:12:9",
            "254:0:-1",
            "fe:0g:1",
            "254:0:0x10",
            "+1:0:1",
        ] {
            let err = parse_inode(bad).unwrap_err();
            assert!(err.contains("fe:00:10010728"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn times_need_an_offset_and_take_any() {
        let utc = parse_time("2026-11-27T05:04:50Z").unwrap();
        assert_eq!(parse_time("2026-11-27T00:04:50-05:00"), Ok(utc));
        assert_eq!(parse_time("2026-11-27T07:04:50+02:00"), Ok(utc));
        let err = parse_time("2026-11-27T05:04:50").unwrap_err();
        assert!(err.contains("no UTC offset"), "{err}");
        let ago = parse_time("2h").unwrap();
        let expected = SystemTime::now() - std::time::Duration::from_secs(7200);
        assert!(expected.duration_since(ago).unwrap().as_secs() < 5);
        assert_eq!(
            parse_time("1h 30min ago").is_ok(),
            parse_time("90min").is_ok()
        );
        let err = parse_time("yesterday").unwrap_err();
        assert!(err.contains("neither"), "{err}");
    }
}
