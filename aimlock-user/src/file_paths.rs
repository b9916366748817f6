//! The path of a locked file, and never another file's.
//!
//! A file is known by (device, inode, generation): a file created after another was deleted may
//! get its inode number, never its generation. With each record the kernel programs name the
//! file's dentry and the inode of the directory it is in. A directory's path, learnt once from
//! some process's open fds, then names every later file in it, also when the process that
//! locked one has exited before user space looks; and since the name comes with every record,
//! a rename shows at the next one. Where the kernel does not name the file (classic
//! tracepoints), the path is looked up in the locking process's fds, and only that process's
//! lines use it. A process that sees other mounts (a container) gets its own view of the path,
//! with the host's beside it; a directory learnt so names that container's later files, and is
//! checked through its path here.

use std::{
    os::unix::fs::MetadataExt as _,
    time::{Duration, Instant},
};

use aimlock_common::{FileName, NAME_LEN};
use rustc_hash::FxHashMap as HashMap;

use crate::{
    host_paths::HostPaths,
    procfs::{self, OpenPath},
};

/// Files remembered at most; past this the cache starts again (a file is named again from its
/// next record). Keeps memory flat however many files come and go.
const MAX_FILES: usize = 200_000;
const MAX_DIRS: usize = 50_000;
/// How long a directory's path is trusted before it is checked again (it may have been renamed).
const DIR_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Fds tried past the highest one seen, when a lock is on a file not seen yet.
const FD_PROBES: usize = 8;
const FULL_SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// Which file: the inode and its generation (0 where the kernel does not say).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u32,
    pub ino: u64,
    pub generation: u32,
}

/// Whose view of the paths a line gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Viewer {
    /// A process that sees this tracer's mounts.
    Host,
    /// A process that sees other mounts (`procfs::mount_view`).
    Container(u64),
    /// A process that is gone: the view a file was last seen through.
    Gone,
}

/// What a line can say of a file's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathOf {
    Known {
        path: String,
        deleted: bool,
        /// The path from this tracer's mounts, where the process sees the file elsewhere (a
        /// container's mount namespace or root).
        host_path: Option<String>,
    },
    /// No process showed the file before it was closed: `reason`, and the file's name when
    /// the kernel gave it.
    Unknown {
        reason: &'static str,
        name: Option<String>,
    },
}

struct Known {
    path: Result<String, &'static str>,
    deleted: bool,
    host_path: Option<String>,
    parent_ino: u64,
    name: [u8; NAME_LEN],
}

struct Dir {
    path: String,
    checked: Instant,
}

/// A directory as processes that see other mounts (a container) name it, learnt from one of
/// them: its path there, and its path here, by which it is checked.
struct ForeignDir {
    /// The mount view it was seen through (`procfs::mount_view`).
    view: u64,
    path: String,
    /// `None` where the path is the same here.
    host_path: Option<String>,
    checked: Instant,
}

impl ForeignDir {
    fn path_here(&self) -> &str {
        self.host_path.as_deref().unwrap_or(&self.path)
    }
}

#[derive(Default)]
struct FdScan {
    /// The next fd number not looked at yet.
    next_fd: i32,
    last_full: Option<Instant>,
}

/// A record's file as `learn` last saw it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Learnt {
    pid: u32,
    view: Option<u64>,
    key: FileKey,
    parent_ino: u64,
    name: [u8; NAME_LEN],
}

#[derive(Default)]
pub struct FilePaths {
    files: HashMap<FileKey, Known>,
    /// Files as the last process that saw them through other mounts (a container) names them,
    /// with that process's mount view (see `procfs::mount_view`). Directories are not shared
    /// with those: the same directory has another path there.
    foreign: HashMap<FileKey, (u64, Known)>,
    /// Files the kernel did not name (classic tracepoints, which give no generation either), by
    /// the process whose fds showed them: the same inode number may be another file for
    /// another process.
    unnamed: HashMap<(u32, FileKey), Known>,
    /// Directories' paths by (device, inode).
    dirs: HashMap<(u32, u64), Dir>,
    /// Directories' paths as the last process that saw them through other mounts names them,
    /// by (device, inode): they name that view's later files, also of processes gone already.
    foreign_dirs: HashMap<(u32, u64), ForeignDir>,
    /// How far each process's fds have been looked at, so that a burst of locks on newly
    /// opened files costs a few lookups each, not a scan of every fd.
    fd_scans: HashMap<u32, FdScan>,
    /// The last file learnt, as its record named it: a burst on one file is learnt once.
    last: Option<Learnt>,
    host_paths: HostPaths,
}

impl FilePaths {
    pub fn forget_process(&mut self, pid: u32) {
        self.fd_scans.remove(&pid);
    }

    /// Makes sure the file a record of `pid` is about can be named, while that process is most
    /// likely still alive: its directory's path, or else its own, from the process's fds.
    /// `viewer`: which mounts the process sees (a process already gone only leaves its reason).
    pub fn learn(&mut self, pid: u32, key: FileKey, file: &FileName, viewer: Viewer) {
        let view = match viewer {
            Viewer::Host | Viewer::Gone => None,
            Viewer::Container(view) => Some(view),
        };
        let this = Learnt {
            pid,
            view,
            key,
            parent_ino: file.parent_ino,
            name: file.name,
        };
        if self.last == Some(this) {
            return;
        }
        // A process gone before its mounts were read: a directory seen through other mounts
        // names its file as well as one seen here.
        let gone_in_known_dir =
            viewer == Viewer::Gone && self.foreign_dir(key.dev, file.parent_ino, None).is_some();
        match view {
            _ if gone_in_known_dir => {}
            _ if name_of(&file.name).is_empty() => self.learn_unnamed(pid, key, view),
            None => self.learn_anew(pid, key, file),
            Some(view) => self.learn_foreign(pid, key, file, view),
        }
        self.last = Some(this);
    }

    /// A file the kernel did not name, looked up in the process's fds at each of its records
    /// but a burst's first.
    fn learn_unnamed(&mut self, pid: u32, key: FileKey, view: Option<u64>) {
        if self.unnamed.len() >= MAX_FILES {
            self.unnamed.clear();
        }
        let known = match self.find_open(pid, key) {
            Some(open) => Known {
                host_path: view.and_then(|view| {
                    self.host_paths
                        .host_path(pid, view, &open, key.dev, key.ino)
                }),
                path: Ok(open.path),
                deleted: open.deleted,
                parent_ino: 0,
                name: [0; NAME_LEN],
            },
            None => Known {
                path: Err(gone_or_closed(pid)),
                deleted: false,
                host_path: None,
                parent_ino: 0,
                name: [0; NAME_LEN],
            },
        };
        self.unnamed.insert((pid, key), known);
    }

    /// A file of a process that sees other mounts: named through that process's fds only, with
    /// the path it has here beside it.
    fn learn_foreign(&mut self, pid: u32, key: FileKey, file: &FileName, view: u64) {
        if self
            .foreign_dir(key.dev, file.parent_ino, Some(view))
            .is_some()
        {
            return;
        }
        if let Some((seen_by, known)) = self.foreign.get(&key)
            && *seen_by == view
            && known.path.is_ok()
            && known.name == file.name
            && known.parent_ino == file.parent_ino
        {
            return;
        }
        if self.foreign.len() >= MAX_FILES {
            self.foreign.clear();
        }
        let known = match self.find_open(pid, key) {
            Some(open) => {
                let host_path = self
                    .host_paths
                    .host_path(pid, view, &open, key.dev, key.ino);
                self.learn_foreign_dir(view, key.dev, file.parent_ino, &open.path, &host_path);
                Known {
                    host_path,
                    path: Ok(shown(open.path, name_of(&file.name))),
                    deleted: open.deleted,
                    parent_ino: file.parent_ino,
                    name: file.name,
                }
            }
            None => Known {
                path: Err(gone_or_closed(pid)),
                deleted: false,
                host_path: None,
                parent_ino: file.parent_ino,
                name: file.name,
            },
        };
        match self.foreign.get(&key) {
            // A path seen earlier stays: a line about that moment may still need it.
            Some((seen_by, earlier))
                if *seen_by == view && known.path.is_err() && earlier.path.is_ok() => {}
            _ => {
                self.foreign.insert(key, (view, known));
            }
        }
    }

    /// A file the kernel named, of a process that sees this tracer's mounts.
    fn learn_anew(&mut self, pid: u32, key: FileKey, file: &FileName) {
        if self.dir_path(key.dev, file.parent_ino).is_some() {
            return;
        }
        if let Some(known) = self.files.get(&key)
            && known.path.is_ok()
            && known.name == file.name
            && known.parent_ino == file.parent_ino
        {
            return;
        }
        if self.files.len() >= MAX_FILES {
            self.files.clear();
        }
        let path = match self.find_open(pid, key) {
            Some(open) => {
                if let Some((dir, _)) = open.path.rsplit_once('/') {
                    self.learn_dir(
                        key.dev,
                        file.parent_ino,
                        if dir.is_empty() { "/" } else { dir },
                    );
                }
                Ok((shown(open.path, name_of(&file.name)), open.deleted))
            }
            None => Err(gone_or_closed(pid)),
        };
        let known = self.files.entry(key).or_insert(Known {
            path: Err("not seen"),
            deleted: false,
            host_path: None,
            parent_ino: file.parent_ino,
            name: file.name,
        });
        match path {
            Ok((path, deleted)) => {
                *known = Known {
                    path: Ok(path),
                    deleted,
                    host_path: None,
                    parent_ino: file.parent_ino,
                    name: file.name,
                }
            }
            // A path seen earlier stays: a line about that moment may still need it.
            Err(reason) if known.path.is_err() => known.path = Err(reason),
            Err(_) => {}
        }
    }

    /// A path the kernel's lock table showed through a holder's fd.
    pub fn remember(&mut self, key: FileKey, path: &str, deleted: bool, host_path: Option<&str>) {
        self.files.insert(
            key,
            Known {
                path: Ok(path.to_owned()),
                deleted,
                host_path: host_path.map(str::to_owned),
                parent_ino: 0,
                name: [0; NAME_LEN],
            },
        );
    }

    /// The path of the file as a record of `pid` named it (`file`), at that record's moment,
    /// as `viewer` sees it.
    pub fn path(&self, pid: u32, key: FileKey, file: &FileName, viewer: Viewer) -> PathOf {
        let name = name_of(&file.name);
        let named = !name.is_empty();

        if named
            && let Some(dir) = self.foreign_dirs.get(&(key.dev, file.parent_ino))
            && match viewer {
                Viewer::Host => false,
                Viewer::Container(view) => view == dir.view,
                // A process gone before its mounts were read: as this tracer's mounts name
                // the file, where they can.
                Viewer::Gone => !self.dirs.contains_key(&(key.dev, file.parent_ino)),
            }
        {
            return PathOf::Known {
                path: join(&dir.path, name),
                deleted: file.nlink == 0,
                host_path: dir.host_path.as_deref().map(|host| join(host, name)),
            };
        }
        let foreign = self.foreign.get(&key);
        let foreign = match viewer {
            Viewer::Host => None,
            Viewer::Container(view) => foreign.filter(|(seen_by, _)| *seen_by == view),
            Viewer::Gone => foreign,
        };
        if foreign.is_none()
            && !matches!(viewer, Viewer::Container(_))
            && named
            && let Some(dir) = self.dirs.get(&(key.dev, file.parent_ino))
        {
            return PathOf::Known {
                path: join(&dir.path, name),
                deleted: file.nlink == 0,
                host_path: None,
            };
        }
        // A memfd lives in the kernel's internal tmpfs, unlinked from birth: its name is all
        // there is, and enough.
        if name.starts_with(b"memfd:") && file.nlink == 0 {
            return PathOf::Known {
                path: String::from_utf8_lossy(name).into_owned(),
                deleted: true,
                host_path: None,
            };
        }
        let unknown = |reason| PathOf::Unknown {
            reason,
            name: named.then(|| String::from_utf8_lossy(name).into_owned()),
        };
        let known = match (viewer, foreign) {
            // As this process's own fds showed it.
            _ if !named && self.unnamed.contains_key(&(pid, key)) => self.unnamed.get(&(pid, key)),
            (_, Some((_, known))) => Some(known),
            (Viewer::Container(_), None) => None,
            _ => self.files.get(&key),
        };
        match known {
            // Seen under another name: renamed since, in a directory this tracer cannot see.
            Some(known) if named && known.name != file.name => unknown("renamed"),
            Some(Known {
                path: Ok(path),
                deleted,
                host_path,
                ..
            }) => PathOf::Known {
                path: path.clone(),
                deleted: if named { file.nlink == 0 } else { *deleted },
                host_path: host_path.clone(),
            },
            Some(Known {
                path: Err(reason), ..
            }) => unknown(reason),
            None => unknown("not seen"),
        }
    }

    /// The directory's path, checked against its inode at most once a second: a renamed or
    /// removed directory is forgotten.
    fn dir_path(&mut self, dev: u32, ino: u64) -> Option<String> {
        let dir = self.dirs.get_mut(&(dev, ino))?;
        if dir.checked.elapsed() >= DIR_CHECK_INTERVAL {
            let same = std::fs::metadata(&dir.path).is_ok_and(|meta| {
                procfs::user_dev_to_kernel(meta.dev()) == dev && meta.ino() == ino
            });
            if !same {
                self.dirs.remove(&(dev, ino));
                return None;
            }
            dir.checked = Instant::now();
        }
        Some(dir.path.clone())
    }

    /// The directory as the view it was last seen through names it (only if that is `view`,
    /// when given), checked against its inode here at most once a second.
    fn foreign_dir(&mut self, dev: u32, ino: u64, view: Option<u64>) -> Option<&ForeignDir> {
        let dir = self.foreign_dirs.get_mut(&(dev, ino))?;
        if view.is_some_and(|view| view != dir.view) {
            return None;
        }
        if dir.checked.elapsed() >= DIR_CHECK_INTERVAL {
            if !is_dir_here(dir.path_here(), dev, ino) {
                self.foreign_dirs.remove(&(dev, ino));
                return None;
            }
            dir.checked = Instant::now();
        }
        self.foreign_dirs.get(&(dev, ino))
    }

    /// The directory of a file a process that sees other mounts showed at `path`, and that is
    /// at `host_path` here: remembered where its path here is checked to be that directory.
    fn learn_foreign_dir(
        &mut self,
        view: u64,
        dev: u32,
        ino: u64,
        path: &str,
        host_path: &Option<String>,
    ) {
        let parent = |path: &str| {
            path.rsplit_once('/')
                .map(|(dir, _)| if dir.is_empty() { "/" } else { dir }.to_owned())
        };
        let Some(dir_path) = parent(path) else {
            return;
        };
        let host_dir = host_path.as_deref().and_then(parent);
        let dir = ForeignDir {
            view,
            path: dir_path,
            host_path: host_dir,
            checked: Instant::now(),
        };
        if !is_dir_here(dir.path_here(), dev, ino) {
            return;
        }
        if self.foreign_dirs.len() >= MAX_DIRS {
            self.foreign_dirs.clear();
        }
        self.foreign_dirs.insert((dev, ino), dir);
    }

    fn learn_dir(&mut self, dev: u32, ino: u64, path: &str) {
        // Only a directory this tracer can check again (not one seen inside another mount
        // namespace under another name).
        let visible = std::fs::metadata(path)
            .is_ok_and(|meta| procfs::user_dev_to_kernel(meta.dev()) == dev && meta.ino() == ino);
        if !visible {
            return;
        }
        if self.dirs.len() >= MAX_DIRS {
            self.dirs.clear();
        }
        self.dirs.insert(
            (dev, ino),
            Dir {
                path: path.to_owned(),
                checked: Instant::now(),
            },
        );
    }

    /// Finds the file among `pid`'s open fds. New files usually get the next fd numbers, so
    /// those are tried first; a full scan of the fds is done at most once a second per process.
    fn find_open(&mut self, pid: u32, key: FileKey) -> Option<OpenPath> {
        let wanted = (key.dev, key.ino);
        let scan = self.fd_scans.entry(pid).or_default();
        for _ in 0..FD_PROBES {
            match procfs::fd_file(pid, scan.next_fd) {
                Ok(found) => {
                    scan.next_fd += 1;
                    if let Some((file, open)) = found
                        && file == wanted
                    {
                        return Some(open);
                    }
                }
                Err(_) => break,
            }
        }
        let now = Instant::now();
        if scan
            .last_full
            .is_some_and(|last| now.duration_since(last) < FULL_SCAN_INTERVAL)
        {
            return None;
        }
        scan.last_full = Some(now);
        let mut found = None;
        for (file, open) in procfs::open_files(pid) {
            scan.next_fd = scan.next_fd.max(open.fd + 1);
            if file == wanted {
                found = Some(open);
            }
        }
        found
    }
}

/// Whether `path` is, from here, the directory (`dev`, `ino`).
fn is_dir_here(path: &str, dev: u32, ino: u64) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| procfs::user_dev_to_kernel(meta.dev()) == dev && meta.ino() == ino)
}

/// Why a file was not found among a process's fds.
fn gone_or_closed(pid: u32) -> &'static str {
    if procfs::ProcessInfo::read(pid).is_none() {
        "process gone"
    } else {
        "not open in the process"
    }
}

/// The name's bytes up to its NUL.
fn name_of(name: &[u8; NAME_LEN]) -> &[u8] {
    let len = name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    &name[..len]
}

fn join(dir: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    // A memfd lives in the kernel's internal tmpfs: its name is all there is.
    if dir == "/" && name.starts_with("memfd:") {
        return name.into_owned();
    }
    // Built by hand: this runs for nearly every line, and `format!` costs several times more.
    let dir = dir.strip_suffix('/').unwrap_or(dir);
    let mut path = String::with_capacity(dir.len() + 1 + name.len());
    path.push_str(dir);
    path.push('/');
    path.push_str(&name);
    path
}

/// The path a process showed, as a line shows it (a memfd by its name).
fn shown(path: String, name: &[u8]) -> String {
    match path.strip_prefix('/') {
        Some(rest) if rest.as_bytes() == name && rest.starts_with("memfd:") => rest.to_owned(),
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_name(name: &str, parent_ino: u64, nlink: u32) -> FileName {
        let mut file = FileName {
            generation: 7,
            nlink,
            parent_ino,
            name: [0; NAME_LEN],
        };
        file.name[..name.len()].copy_from_slice(name.as_bytes());
        file
    }

    #[test]
    fn a_known_directory_names_files_of_processes_already_gone() {
        let dir = std::env::temp_dir();
        let meta = std::fs::metadata(&dir).unwrap();
        let dev = procfs::user_dev_to_kernel(meta.dev());
        let mut paths = FilePaths::default();
        let dir_path = dir.to_str().unwrap().trim_end_matches('/').to_owned();
        paths.learn_dir(dev, meta.ino(), &dir_path);
        let key = FileKey {
            dev,
            ino: 1,
            generation: 7,
        };
        // Pid 0 is no process: only the directory can name the file.
        let taken = file_name("job.lock", meta.ino(), 1);
        paths.learn(0, key, &taken, Viewer::Host);
        // Renamed, then unlinked: each record names it as it was then.
        let released = file_name("job.old", meta.ino(), 0);
        paths.learn(0, key, &released, Viewer::Host);
        assert_eq!(
            paths.path(0, key, &taken, Viewer::Host),
            PathOf::Known {
                path: format!("{dir_path}/job.lock"),
                deleted: false,
                host_path: None,
            }
        );
        assert_eq!(
            paths.path(0, key, &released, Viewer::Host),
            PathOf::Known {
                path: format!("{dir_path}/job.old"),
                deleted: true,
                host_path: None,
            }
        );
        // Another file with the same inode number, in a directory not known: nothing known of
        // it, whatever was known of the first.
        let reused = FileKey {
            generation: 8,
            ..key
        };
        assert_eq!(
            paths.path(0, reused, &file_name("other", 5, 1), Viewer::Host),
            PathOf::Unknown {
                reason: "not seen",
                name: Some("other".to_owned())
            }
        );
    }

    #[test]
    fn a_directory_seen_through_a_containers_mounts_names_its_later_files_both_ways() {
        let dir = std::env::temp_dir();
        let meta = std::fs::metadata(&dir).unwrap();
        let dev = procfs::user_dev_to_kernel(meta.dev());
        let host_dir = dir.to_str().unwrap().trim_end_matches('/').to_owned();
        let mut paths = FilePaths::default();
        // A container (view 5) showed /data/first, which is {host_dir}/first here.
        paths.learn_foreign_dir(
            5,
            dev,
            meta.ino(),
            "/data/first",
            &Some(format!("{host_dir}/first")),
        );
        let key = FileKey {
            dev,
            ino: 1,
            generation: 7,
        };
        let job = file_name("job.lock", meta.ino(), 0);
        let both_ways = PathOf::Known {
            path: "/data/job.lock".to_owned(),
            deleted: true,
            host_path: Some(format!("{host_dir}/job.lock")),
        };
        // Pid 0 is no process: only the directory can name the file, for that container and
        // for a process gone before its mounts were read.
        paths.learn(0, key, &job, Viewer::Container(5));
        assert_eq!(paths.path(0, key, &job, Viewer::Container(5)), both_ways);
        paths.learn(0, key, &job, Viewer::Gone);
        assert_eq!(paths.path(0, key, &job, Viewer::Gone), both_ways);
        // Not for another container, nor for a process that sees this tracer's mounts.
        for viewer in [Viewer::Container(6), Viewer::Host] {
            assert!(
                matches!(paths.path(0, key, &job, viewer), PathOf::Unknown { .. }),
                "{viewer:?}"
            );
        }
        // A directory whose path here is not that directory is not remembered.
        let mut paths = FilePaths::default();
        paths.learn_foreign_dir(
            5,
            dev,
            meta.ino(),
            "/data/first",
            &Some("/nonexistent/first".into()),
        );
        assert!(paths.foreign_dirs.is_empty());
    }

    #[test]
    fn without_a_directory_or_a_process_the_path_is_unknown_and_says_why() {
        let mut paths = FilePaths::default();
        let key = FileKey {
            dev: 1,
            ino: 2,
            generation: 3,
        };
        let gone = file_name("gone.lock", 99, 1);
        paths.learn(0, key, &gone, Viewer::Host);
        assert_eq!(
            paths.path(0, key, &gone, Viewer::Host),
            PathOf::Unknown {
                reason: "process gone",
                name: Some("gone.lock".to_owned())
            }
        );
    }

    #[test]
    fn a_memfd_is_named_by_its_name() {
        assert_eq!(join("/", b"memfd:jobs"), "memfd:jobs");
        assert_eq!(join("/run", b"x"), "/run/x");
        assert_eq!(shown("/memfd:jobs".to_owned(), b"memfd:jobs"), "memfd:jobs");
    }
}
