//! Where this tracer reaches a file that a process sees through other mounts (a container's
//! mount namespace or root): the process's mount that holds the file says where in its file
//! system the file is, and this tracer's mounts of that file system say where that shows here.
//! A path found so is checked to be the same inode (the file is open, so no other file can have
//! its number meanwhile) before it is given; otherwise nothing is.
//!
//! Mount tables are read once per mount view (a mount namespace and root) and again at most
//! once a second, so that a container locking many files costs no more reads than one: a
//! table changed meanwhile can only make the check fail, never name another file.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap as HashMap;

use crate::procfs::{self, OpenPath};

/// How long a mount table read is used.
const TABLE_LIFETIME: Duration = Duration::from_secs(1);
/// Mount views remembered at most: past this the cache starts again.
const MAX_VIEWS: usize = 1024;

struct Table {
    mounts: Vec<Mount>,
    read: Instant,
}

impl Table {
    fn read(pid: &str) -> Option<Self> {
        let text = procfs::read_small(&format!("/proc/{pid}/mountinfo")).ok()?;
        Some(Self {
            mounts: mounts(&text).collect(),
            read: Instant::now(),
        })
    }

    fn fresh(&self) -> bool {
        self.read.elapsed() < TABLE_LIFETIME
    }
}

/// The mount tables of this tracer and of the mount views its processes see.
#[derive(Default)]
pub struct HostPaths {
    own: Option<Table>,
    views: HashMap<u64, Table>,
}

impl HostPaths {
    /// The path this tracer reaches the file `open` of `pid` by, where it differs from the path
    /// the process sees; `view` names the mounts `pid` sees (`procfs::MountView::Other`).
    /// `None` where they do not differ, or where the file cannot be reached from here.
    pub fn host_path(
        &mut self,
        pid: u32,
        view: u64,
        open: &OpenPath,
        dev: u32,
        ino: u64,
    ) -> Option<String> {
        let same_file = |path: &str| {
            fs::metadata(path).is_ok_and(|meta| {
                procfs::user_dev_to_kernel(meta.dev()) == dev && meta.ino() == ino
            })
        };
        if let Some(path) = &open.from_host_root {
            return same_file(path).then(|| path.clone());
        }
        if !self.own.as_ref().is_some_and(Table::fresh) {
            self.own = Table::read("self");
        }
        if !self.views.get(&view).is_some_and(Table::fresh) {
            if self.views.len() >= MAX_VIEWS {
                self.views.clear();
            }
            self.views.insert(view, Table::read(&pid.to_string())?);
        }
        let theirs = &self.views.get(&view)?.mounts;
        let ours = &self.own.as_ref()?.mounts;
        let (within, mount) = theirs
            .iter()
            .filter(|mount| mount.dev == dev)
            .filter_map(|mount| Some((beneath(&open.path, &mount.point)?, mount)))
            .max_by_key(|(_, mount)| mount.point.len())?;
        let in_file_system = joined(&mount.root, within);
        ours.iter()
            .filter(|mount| mount.dev == dev)
            .filter_map(|mount| {
                let rest = beneath(&in_file_system, &mount.root)?;
                Some(joined(&mount.point, rest))
            })
            .find(|path| same_file(path))
            .filter(|path| *path != open.path)
    }
}

/// One line of /proc/PID/mountinfo: the device, the directory of the file system mounted
/// (`root`) and where it is mounted (`point`, relative to the process's root).
struct Mount {
    dev: u32,
    root: String,
    point: String,
}

fn mounts(mountinfo: &str) -> impl Iterator<Item = Mount> + '_ {
    mountinfo.lines().filter_map(|line| {
        let mut fields = line.split(' ').skip(2);
        let (major, minor) = fields.next()?.split_once(':')?;
        let dev = aimlock_common::kernel_dev(major.parse().ok()?, minor.parse().ok()?);
        Some(Mount {
            dev,
            root: unescape_mount_path(fields.next()?),
            point: unescape_mount_path(fields.next()?),
        })
    })
}

/// mountinfo writes space, tab, newline and backslash in paths as octal escapes (`\040`).
fn unescape_mount_path(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let octal = bytes.get(index + 1..index + 4).filter(|digits| {
            bytes[index] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        });
        match octal {
            Some(digits) => {
                out.push(
                    digits
                        .iter()
                        .fold(0u8, |value, d| value.wrapping_mul(8) + (d - b'0')),
                );
                index += 4;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What is left of `path` below the directory `dir` ("" for `dir` itself), if it is below it.
fn beneath<'a>(path: &'a str, dir: &str) -> Option<&'a str> {
    if dir == "/" {
        return Some(path);
    }
    let rest = path.strip_prefix(dir)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

fn joined(dir: &str, rest: &str) -> String {
    match (dir, rest) {
        ("/", "") => "/".to_owned(),
        ("/", rest) => rest.to_owned(),
        (dir, rest) => format!("{dir}{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_path_is_found_through_the_file_systems_own_path() {
        let container = "36 35 8:1 /srv/data /data rw,relatime - ext4 /dev/sda1 rw\n\
                         37 35 0:22 / /proc rw - proc proc rw\n";
        let mount = mounts(container).next().unwrap();
        assert_eq!(mount.dev, aimlock_common::kernel_dev(8, 1));
        assert_eq!(
            (mount.root.as_str(), mount.point.as_str()),
            ("/srv/data", "/data")
        );
        let within = beneath("/data/app/lock", &mount.point).unwrap();
        assert_eq!(joined(&mount.root, within), "/srv/data/app/lock");
        assert_eq!(beneath("/database/lock", "/data"), None);
        assert_eq!(beneath("/data", "/data"), Some(""));
        assert_eq!(joined("/", "/srv/data/lock"), "/srv/data/lock");
        assert_eq!(joined("/", ""), "/");
        assert_eq!(unescape_mount_path("/mnt/my\\040disk"), "/mnt/my disk");
        assert_eq!(unescape_mount_path("/a\\b"), "/a\\b");
    }
}
