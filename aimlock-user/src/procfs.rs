//! What /proc says about processes, their open files and their locks.
//!
//! `/proc/locks` names the pid that TOOK a lock, which may be dead, 0 or -1; the `lock:` lines of
//! `/proc/PID/fdinfo/FD` name the locks on that fd's open file description (flock, OFD) or
//! owned by that process (POSIX). Only the latter finds who really holds a lock.

use std::{
    fs,
    io::{self, Read as _},
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
};

use crate::events::{LockKind, Mode};

/// Every live process id in /proc.
pub fn pids() -> io::Result<Vec<u32>> {
    Ok(fs::read_dir("/proc")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// A process, as far as /proc could tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
    /// The pid inside the process's own PID namespace, when it differs from `pid`.
    pub ns_pid: Option<u32>,
    /// The cgroup v2 path, when it is not the root.
    pub cgroup: Option<String>,
    /// Exited but not yet reaped: it holds no files any more.
    pub zombie: bool,
    /// When it started (see [`start_time`]).
    pub start_time: Option<u64>,
    /// Its parent (0 when not told).
    pub ppid: u32,
}

impl ProcessInfo {
    /// `None` when the process is gone.
    pub fn read(pid: u32) -> Option<Self> {
        let status = read_small(&format!("/proc/{pid}/status")).ok()?;
        let mut info = Self {
            pid,
            ..Self::default()
        };
        for line in status.lines() {
            if let Some(name) = line.strip_prefix("Name:") {
                info.comm = name.trim().to_owned();
            } else if let Some(ppid) = line.strip_prefix("PPid:") {
                info.ppid = ppid.trim().parse().unwrap_or(0);
            } else if let Some(state) = line.strip_prefix("State:") {
                info.zombie = matches!(state.trim_start().as_bytes().first(), Some(b'Z' | b'X'));
            } else if let Some(ns_pids) = line.strip_prefix("NSpid:") {
                info.ns_pid = ns_pids
                    .split_whitespace()
                    .last()
                    .and_then(|last| last.parse().ok())
                    .filter(|&ns_pid| ns_pid != pid);
            }
        }
        info.cgroup = read_small(&format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|text| cgroup_path(&text));
        info.start_time = start_time(pid);
        Some(info)
    }
}

/// When a process started, which with its pid names it apart from a later process that reuses
/// the pid: nanoseconds since boot (CLOCK_BOOTTIME), counted in the clock ticks of field 22 of
/// /proc/PID/stat (USER_HZ, 10 ms), so that the kernel programs' reading
/// ([`start_time_from_boottime`]) and this one agree exactly. `None` when the process is gone.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = read_small(&format!("/proc/{pid}/stat")).ok()?;
    start_time_in_stat(&stat)
}

/// Field 22 (`starttime`, in clock ticks since boot) of a /proc/PID/stat line, in nanoseconds.
fn start_time_in_stat(stat: &str) -> Option<u64> {
    let ticks: u64 = stat_field(stat, 22)?.parse().ok()?;
    Some(ticks * tick_ns())
}

/// Field `number` (counted from 1, as proc(5) does) of a /proc/PID/stat line, from field 3 on.
fn stat_field(stat: &str, number: usize) -> Option<&str> {
    // The command (field 2) is in parentheses and may hold spaces and parentheses itself.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(number.checked_sub(3)?)
}

/// Whether the process `pid` (started at `start_time`, 0 when not known) is alive and has not
/// begun to exit. Asked after reading its descriptors, a yes says they were read before its
/// exit closed them: an exiting process's empty descriptor table says nothing about the locks
/// it held.
pub fn running_as(pid: u32, start_time: u64) -> bool {
    let Ok(stat) = read_small(&format!("/proc/{pid}/stat")) else {
        return false;
    };
    running_in_stat(&stat, start_time)
}

fn running_in_stat(stat: &str, start_time: u64) -> bool {
    let state = stat_field(stat, 3);
    let flags = stat_field(stat, 9).and_then(|flags| flags.parse::<u64>().ok());
    let same_process = start_time == 0 || start_time_in_stat(stat) == Some(start_time);
    !matches!(state, None | Some("Z" | "X" | "x"))
        // `PF_EXITING` is set by `exit_signals()` at the start of `do_exit()`, before
        // `exit_files()` closes the process's descriptors.
        && flags.is_some_and(|flags| flags & u64::from(aimlock_common::PF_EXITING) == 0)
        && same_process
}

/// The kernel's `task_struct.start_boottime` (nanoseconds) at the precision /proc gives it;
/// 0 (not read) stays 0.
pub fn start_time_from_boottime(boottime_ns: u64) -> u64 {
    let tick = tick_ns();
    boottime_ns / tick * tick
}

/// Nanoseconds per clock tick of /proc (`sysconf(_SC_CLK_TCK)`, 100 a second on Linux).
fn tick_ns() -> u64 {
    static TICK_NS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICK_NS.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        1_000_000_000
            / u64::try_from(per_second)
                .ok()
                .filter(|&hz| hz > 0)
                .unwrap_or(100)
    })
}

/// The unified (v2) hierarchy's path from /proc/PID/cgroup, or the first one; `None` for "/".
fn cgroup_path(text: &str) -> Option<String> {
    let line = text
        .lines()
        .find(|line| line.starts_with("0::"))
        .or_else(|| text.lines().next())?;
    let path = line.splitn(3, ':').nth(2)?;
    (path != "/" && !path.is_empty()).then(|| path.to_owned())
}

/// Reads a small /proc file in one go.
pub fn read_small(path: &str) -> io::Result<String> {
    let mut text = String::with_capacity(1024);
    fs::File::open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// The path of an open file as a process sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenPath {
    pub fd: i32,
    /// Relative to the process's root directory (its container's root, if it has one).
    pub path: String,
    pub deleted: bool,
    /// The path from this tracer's root, where the process's root is another directory of the
    /// same mounts (a chroot). See `host_paths` for other mount namespaces.
    pub from_host_root: Option<String>,
}

/// The file an fd of `pid` refers to: (kernel device, inode) and the path the process sees.
/// `Ok(None)` when it is not a regular file or a directory; an error of kind `NotFound` when
/// the process has no such fd.
pub fn fd_file(pid: u32, fd: i32) -> io::Result<Option<((u32, u64), OpenPath)>> {
    let link = format!("/proc/{pid}/fd/{fd}");
    let meta = fs::metadata(&link)?;
    if !meta.is_file() && !meta.is_dir() {
        return Ok(None);
    }
    let target = fs::read_link(&link)?;
    let key = (user_dev_to_kernel(meta.dev()), meta.ino());
    let root = process_root(pid);
    Ok(Some((key, process_view(root.as_deref(), fd, target))))
}

/// Every regular file and directory `pid` has open, by (kernel device, inode).
pub fn open_files(pid: u32) -> Vec<((u32, u64), OpenPath)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter_map(|fd| fd_file(pid, fd).ok().flatten())
        .collect()
}

/// The process's root directory as this tracer sees it, when it is not `/`.
fn process_root(pid: u32) -> Option<String> {
    let root = fs::read_link(format!("/proc/{pid}/root")).ok()?;
    let root = root.to_string_lossy();
    (root != "/").then(|| root.into_owned())
}

/// Turns a /proc/PID/fd link into the path as the process sees it: relative to its `root`, with
/// the kernel's " (deleted)" suffix taken off and reported separately.
fn process_view(root: Option<&str>, fd: i32, link: PathBuf) -> OpenPath {
    let mut path = link.to_string_lossy().into_owned();
    let deleted = path.ends_with(" (deleted)");
    if deleted {
        path.truncate(path.len() - " (deleted)".len());
    }
    let mut from_host_root = None;
    if let Some(root) = root
        && let Some(inner) = path.strip_prefix(root)
        && inner.starts_with('/')
    {
        let inner = inner.to_owned();
        from_host_root = Some(std::mem::replace(&mut path, inner));
    }
    OpenPath {
        fd,
        path,
        deleted,
        from_host_root,
    }
}

/// Which mounts a process sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountView {
    /// This tracer's: the same mount namespace and root.
    Own,
    /// Another mount namespace or root (a container); processes with the same ones share the id.
    Other(u64),
}

/// Which mounts `pid` sees; `None` when the process is gone.
pub fn mount_view(pid: u32) -> Option<MountView> {
    static OWN: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let namespace = |pid: &str| {
        let link = fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()?;
        link.to_str()?
            .strip_prefix("mnt:[")?
            .strip_suffix(']')?
            .parse::<u64>()
            .ok()
    };
    let own = *OWN.get_or_init(|| namespace("self"));
    let theirs = namespace(&pid.to_string())?;
    Some(match process_root(pid) {
        None if Some(theirs) == own => MountView::Own,
        None => MountView::Other(theirs),
        Some(root) => {
            use std::hash::BuildHasher as _;
            MountView::Other(rustc_hash::FxBuildHasher.hash_one((theirs, root)))
        }
    })
}

/// Converts a `st_dev` (glibc's encoding) to the kernel's `s_dev` encoding (major << 20 | minor).
pub fn user_dev_to_kernel(dev: u64) -> u32 {
    let major = libc::major(dev);
    let minor = libc::minor(dev);
    aimlock_common::kernel_dev(major, minor)
}

/// One `lock:` line of /proc/locks or /proc/PID/fdinfo/FD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockLine {
    pub kind: LockKind,
    pub mode: Mode,
    /// The pid stored in the lock: its taker's tgid, 0 or -1 where /proc cannot say.
    pub pid: i32,
    /// (major, minor) as printed.
    pub major: u32,
    pub minor: u32,
    pub ino: u64,
    pub start: u64,
    /// `None`: to end of file.
    pub end: Option<u64>,
    /// A request blocked on the lock above it (`->` in /proc/locks).
    pub blocked: bool,
}

impl LockLine {
    /// Parses `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`, with or without `lock:\t`.
    pub fn parse(line: &str) -> Option<Self> {
        let line = line.strip_prefix("lock:").unwrap_or(line).trim();
        let mut words = line.split_whitespace();
        words.next()?; // "1:"
        let mut kind_word = words.next()?;
        let blocked = kind_word == "->";
        if blocked {
            kind_word = words.next()?;
        }
        let kind = match kind_word {
            "FLOCK" => LockKind::Flock,
            "POSIX" => LockKind::Posix,
            "OFDLCK" => LockKind::Ofd,
            "LEASE" | "DELEG" => LockKind::Lease,
            _ => return None,
        };
        words.next()?; // ADVISORY / MANDATORY / ACTIVE / BREAKING ...
        let mode = match words.next()? {
            "READ" => Mode::Read,
            "WRITE" => Mode::Write,
            _ => Mode::Unlock,
        };
        let pid = words.next()?.parse().ok()?;
        let mut dev = words.next()?.split(':');
        let major = u32::from_str_radix(dev.next()?, 16).ok()?;
        let minor = u32::from_str_radix(dev.next()?, 16).ok()?;
        let ino = dev.next()?.parse().ok()?;
        let start = words.next()?.parse().ok()?;
        let end = match words.next()? {
            "EOF" => None,
            end => Some(end.parse().ok()?),
        };
        Some(Self {
            kind,
            mode,
            pid,
            major,
            minor,
            ino,
            start,
            end,
            blocked,
        })
    }

    /// The device in the kernel's encoding.
    pub fn dev(&self) -> u32 {
        aimlock_common::kernel_dev(self.major, self.minor)
    }
}

/// A live process's fd whose fdinfo shows a lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdLock {
    pub pid: u32,
    pub fd: i32,
    pub lock: LockLine,
}

/// The locks in every fdinfo of `pid`. Unreadable entries (a process or fd that went away, or
/// that the caller may not see) are skipped.
pub fn fd_locks(pid: u32) -> Vec<FdLock> {
    let mut found = Vec::new();
    let _ = read_fd_locks(pid, &mut found, &mut Vec::new());
    found
}

/// Appends the locks in every fdinfo of `pid` to `found`, reading through `buf`. An error means
/// the process's fd table could not be listed: `NotFound` when it exited, `PermissionDenied`
/// when the caller may not look. An fd closed during the scan is skipped.
pub fn read_fd_locks(pid: u32, found: &mut Vec<FdLock>, buf: &mut Vec<u8>) -> io::Result<()> {
    let dir_path = format!("/proc/{pid}/fdinfo");
    // Opening each entry relative to the directory spares the kernel a full path walk per fd.
    let dir = fs::File::open(&dir_path)?;
    for entry in fs::read_dir(&dir_path)? {
        let name = entry?.file_name();
        let Some(fd) = name.to_str().and_then(|fd| fd.parse().ok()) else {
            continue;
        };
        let len = match read_at(&dir, fd, buf) {
            Ok(len) => len,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        let Ok(text) = std::str::from_utf8(&buf[..len]) else {
            continue;
        };
        // Most fds hold no lock: one search spares the line split.
        let Some(first) = text.find("lock:") else {
            continue;
        };
        found.extend(
            text[first..]
                .lines()
                .filter(|line| line.starts_with("lock:"))
                .filter_map(LockLine::parse)
                .map(|lock| FdLock { pid, fd, lock }),
        );
    }
    Ok(())
}

/// Reads the entry `fd` of an fdinfo directory into `buf`. An fdinfo file is one seq_file
/// record, which a read returns whole when it fits: a short read is its end, which spares the
/// size probe and the extra read of `read_to_end`.
/// Returns the length read; `buf` keeps its size from one call to the next.
fn read_at(dir: &fs::File, fd: i32, buf: &mut Vec<u8>) -> io::Result<usize> {
    use nix::{fcntl::OFlag, sys::stat::Mode};
    let file = nix::fcntl::openat(
        dir,
        fd.to_string().as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut file = fs::File::from(file);
    let mut filled = 0;
    loop {
        if buf.len() < filled + 4096 {
            buf.resize(filled + 4096, 0);
        }
        let read = file.read(&mut buf[filled..])?;
        filled += read;
        if read == 0 || filled < buf.len() {
            return Ok(filled);
        }
    }
}

/// kcmp(KCMP_FILE)'s order between the open file descriptions behind two (pid, fd): equal for
/// the same description (exact where comparing lock ranges is not), otherwise an order that is
/// stable until reboot, so that descriptions can be kept sorted and found by binary search.
/// Needs PTRACE_MODE_READ over both processes.
pub fn compare_descriptions(a: (u32, i32), b: (u32, i32)) -> io::Result<std::cmp::Ordering> {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp only reads its integer arguments.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            a.0 as libc::pid_t,
            b.0 as libc::pid_t,
            KCMP_FILE,
            a.1 as libc::c_ulong,
            b.1 as libc::c_ulong,
        )
    };
    match ret {
        0 => Ok(std::cmp::Ordering::Equal),
        1 => Ok(std::cmp::Ordering::Less),
        2 => Ok(std::cmp::Ordering::Greater),
        _ => Err(io::Error::last_os_error()),
    }
}

/// One lock of /proc/locks and the requests blocked on it (the `->` lines under it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedLock {
    pub lock: LockLine,
    pub waiters: Vec<LockLine>,
}

/// /proc/locks, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcLocks {
    pub locks: Vec<ListedLock>,
    /// Lines that did not parse (a format this code does not know).
    pub unparsed: usize,
}

/// Reads /proc/locks in large reads: the kernel walks the lock list from the start for each
/// read, so small reads make a long table quadratic.
pub fn proc_locks() -> io::Result<ProcLocks> {
    let mut text = String::with_capacity(1 << 20);
    fs::File::open("/proc/locks")?.read_to_string(&mut text)?;
    Ok(parse_proc_locks(&text))
}

fn parse_proc_locks(text: &str) -> ProcLocks {
    let mut table = ProcLocks::default();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        match LockLine::parse(line) {
            Some(lock) if lock.blocked => match table.locks.last_mut() {
                Some(listed) => listed.waiters.push(lock),
                None => table.unparsed += 1,
            },
            Some(lock) => table.locks.push(ListedLock {
                lock,
                waiters: Vec::new(),
            }),
            None => table.unparsed += 1,
        }
    }
    table
}

/// The files that some fds of `pid` refer to, as the process sees them (relative to its root), with
/// the kernel's " (deleted)" suffix taken off and reported separately. Fds that went away are
/// left out.
pub fn fd_paths(pid: u32, fds: impl IntoIterator<Item = i32>) -> Vec<OpenPath> {
    let Ok(dir) = fs::File::open(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let root = process_root(pid);
    fds.into_iter()
        .filter_map(|fd| {
            let link = nix::fcntl::readlinkat(&dir, fd.to_string().as_str()).ok()?;
            Some(process_view(root.as_deref(), fd, link.into()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_start_time_past_a_command_with_spaces_and_parentheses() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 95 0 0 0 0 0 0 0 20 0 1 0 123456 \
                    2310144 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(start_time_in_stat(stat), Some(123_456 * tick_ns()));
        assert_eq!(start_time_in_stat("4242 (gone"), None);
        assert_eq!(
            start_time_from_boottime(1_234_567_890_123),
            1_234_560_000_000
        );
        // This process's own reading, through /proc and through the kernel's clock, agree.
        let mine = start_time(std::process::id()).expect("this process runs");
        assert!(mine > 0 && mine.is_multiple_of(tick_ns()));
    }

    #[test]
    fn a_process_that_began_to_exit_or_is_another_is_not_running_as_asked() {
        let stat = |state: &str, flags: u64| {
            format!(
                "4242 (a (b) c) {state} 1 4242 4242 0 -1 {flags} 95 0 0 0 0 0 0 0 20 0 1 0 \
                 123456 2310144 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"
            )
        };
        let started = 123_456 * tick_ns();
        assert!(running_in_stat(&stat("S", 0x40_0100), started));
        assert!(running_in_stat(&stat("R", 0x40_0100), 0));
        // do_exit() has set PF_EXITING: its descriptors may already be closed.
        assert!(!running_in_stat(&stat("R", 0x40_0104), started));
        assert!(!running_in_stat(&stat("Z", 0x40_0100), started));
        // The pid now names a later process.
        assert!(!running_in_stat(&stat("S", 0x40_0100), started + tick_ns()));
        assert!(!running_in_stat("4242 (gone", 0));
        assert!(running_as(std::process::id(), 0));
    }

    #[test]
    fn parses_proc_locks_and_fdinfo_lines() {
        let flock =
            LockLine::parse("lock:\t1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF").unwrap();
        assert_eq!(
            (flock.kind, flock.mode, flock.pid),
            (LockKind::Flock, Mode::Write, 1234)
        );
        assert_eq!((flock.major, flock.minor, flock.ino), (8, 1, 5678));
        assert_eq!((flock.start, flock.end, flock.blocked), (0, None, false));

        let ofd = LockLine::parse("2: OFDLCK ADVISORY  READ  -1 fd:00:42 10 19").unwrap();
        assert_eq!(
            (ofd.kind, ofd.mode, ofd.pid),
            (LockKind::Ofd, Mode::Read, -1)
        );
        assert_eq!((ofd.major, ofd.minor, ofd.end), (0xfd, 0, Some(19)));

        let waiter = LockLine::parse("1: -> FLOCK  ADVISORY  WRITE 99 00:1f:7 0 EOF").unwrap();
        assert!(waiter.blocked);
        assert_eq!(LockLine::parse("garbage"), None);
    }

    #[test]
    fn kcmp_tells_descriptions_apart() {
        use std::os::fd::AsRawFd as _;
        let file = tempfile_in_tmp();
        let dup = file.try_clone().unwrap();
        let reopened = fs::File::open(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap();
        let me = std::process::id();
        let (a, b, c) = (file.as_raw_fd(), dup.as_raw_fd(), reopened.as_raw_fd());
        assert!(compare_descriptions((me, a), (me, b)).unwrap().is_eq());
        assert!(compare_descriptions((me, a), (me, c)).unwrap().is_ne());
    }

    fn tempfile_in_tmp() -> fs::File {
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let count = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("aimlock-procfs-{}-{count}", std::process::id());
        let path = std::env::temp_dir().join(name);
        let file = fs::File::create(&path).unwrap();
        fs::remove_file(&path).unwrap();
        file
    }

    #[test]
    fn kcmp_orders_descriptions() {
        use std::os::fd::AsRawFd as _;
        let (first, second) = (tempfile_in_tmp(), tempfile_in_tmp());
        let me = std::process::id();
        let (a, b) = ((me, first.as_raw_fd()), (me, second.as_raw_fd()));
        let forward = compare_descriptions(a, b).unwrap();
        assert!(forward.is_ne());
        assert_eq!(compare_descriptions(b, a).unwrap(), forward.reverse());
        assert!(compare_descriptions(a, (me, 999_999)).is_err());
    }

    #[test]
    fn waiters_attach_to_the_lock_above_them() {
        let table = parse_proc_locks(
            "1: POSIX  ADVISORY  WRITE 10 fd:00:7 0 EOF\n\
             1: -> POSIX  ADVISORY  WRITE 11 fd:00:7 0 EOF\n\
             1:  -> POSIX  ADVISORY  READ 12 fd:00:7 0 9\n\
             2: FLOCK  ADVISORY  READ 13 fd:00:8 0 EOF\n\
             3: what is this\n",
        );
        assert_eq!(table.locks.len(), 2);
        let waiters: Vec<i32> = table.locks[0].waiters.iter().map(|w| w.pid).collect();
        assert_eq!(waiters, [11, 12]);
        assert!(table.locks[1].waiters.is_empty());
        assert_eq!(table.unparsed, 1);
    }

    #[test]
    fn own_fd_locks_are_read_from_fdinfo() {
        use std::os::fd::AsRawFd as _;
        let file = tempfile_in_tmp();
        // SAFETY: flock on an fd this test owns.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH) }, 0);
        let me = std::process::id();
        let mine: Vec<FdLock> = fd_locks(me)
            .into_iter()
            .filter(|held| held.fd == file.as_raw_fd())
            .collect();
        assert_eq!(mine.len(), 1, "{mine:?}");
        assert_eq!(
            (mine[0].lock.kind, mine[0].lock.mode),
            (LockKind::Flock, Mode::Read)
        );
        assert_eq!(mine[0].lock.pid, me as i32);
        let paths = fd_paths(me, [file.as_raw_fd(), 999_999]);
        assert_eq!(paths.len(), 1);
        assert!(
            paths[0].deleted && paths[0].path.contains("aimlock-procfs-"),
            "{paths:?}"
        );
        let err = read_fd_locks(u32::MAX, &mut Vec::new(), &mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn cgroup_root_is_no_container() {
        assert_eq!(cgroup_path("0::/\n"), None);
        assert_eq!(
            cgroup_path("0::/system.slice/docker-1.scope\n").as_deref(),
            Some("/system.slice/docker-1.scope")
        );
    }
}
