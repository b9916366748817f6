//! The files `--path` names, followed at their paths.
//!
//! Each traced file is held open without access (`O_PATH`): an inode that stays referenced
//! cannot be freed, so its number cannot go to a file created later, which the kernel's
//! (device, inode) filter would then let in. When the file at a path is deleted and another is
//! created there (a lock file each job re-creates), the new one is followed from the next check,
//! at most a second later; the one it replaced stays in the filter, held, as long as the tracer
//! knows of a lock on it, so that its release is still seen, and is let go after.

use std::{
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use rustc_hash::FxHashSet as HashSet;

use crate::procfs;

/// How often each path is looked up again.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A file held open so that its inode number stays its own.
struct Pinned {
    _file: File,
    inode: (u32, u64),
}

struct Followed {
    path: PathBuf,
    /// The file at the path when last looked.
    current: Pinned,
    /// Files that were at the path before and still had locks when last looked.
    replaced: Vec<Pinned>,
}

/// What a check changed in the set of traced files. The files let go are closed when the
/// changes are dropped: only after the kernel's filter no longer has them, or a file created
/// meanwhile could get a number still in the filter.
#[derive(Default)]
pub struct Changes {
    pub added: Vec<(u32, u64)>,
    pub removed: Vec<(u32, u64)>,
    _let_go: Vec<Pinned>,
}

pub struct FollowedPaths {
    followed: Vec<Followed>,
    last_check: Instant,
}

impl FollowedPaths {
    /// Holds each named file open; an error names the path that cannot be.
    pub fn pin(paths: &[PathBuf]) -> Result<Self> {
        let followed = paths
            .iter()
            .map(|path| {
                let current =
                    pin_file(path).with_context(|| format!("--path {}", path.display()))?;
                Ok(Followed {
                    path: path.clone(),
                    current,
                    replaced: Vec::new(),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            followed,
            last_check: Instant::now(),
        })
    }

    /// Every file traced now, as (kernel device, inode).
    pub fn inodes(&self) -> Vec<(u32, u64)> {
        let mut inodes: Vec<(u32, u64)> = self
            .followed
            .iter()
            .flat_map(|followed| {
                std::iter::once(&followed.current)
                    .chain(&followed.replaced)
                    .map(|pinned| pinned.inode)
            })
            .collect();
        inodes.sort_unstable();
        inodes.dedup();
        inodes
    }

    /// At most once a second: follows each path to the file now there, and lets go of replaced
    /// files without a lock in `locked` (which is only asked for when there are some).
    pub fn check(&mut self, locked: impl FnOnce() -> HashSet<(u32, u64)>) -> Option<Changes> {
        if self.followed.is_empty() || self.last_check.elapsed() < CHECK_INTERVAL {
            return None;
        }
        self.last_check = Instant::now();
        let before = self.inodes();
        for followed in &mut self.followed {
            // A path with no file at the moment keeps its last file until one is created.
            let Ok(meta) = std::fs::metadata(&followed.path) else {
                continue;
            };
            if inode_of(&meta) == followed.current.inode {
                continue;
            }
            // Its own inode, not the stat's: the path may have changed once more meanwhile.
            let Ok(now_there) = pin_file(&followed.path) else {
                continue;
            };
            let earlier = std::mem::replace(&mut followed.current, now_there);
            followed.replaced.push(earlier);
            // Renamed back: the file is the current one again.
            let current = followed.current.inode;
            followed.replaced.retain(|pinned| pinned.inode != current);
        }
        let mut let_go = Vec::new();
        if self.followed.iter().any(|f| !f.replaced.is_empty()) {
            let locked = locked();
            for followed in &mut self.followed {
                let (kept, unlocked) = std::mem::take(&mut followed.replaced)
                    .into_iter()
                    .partition(|pinned| locked.contains(&pinned.inode));
                followed.replaced = kept;
                let_go.extend::<Vec<Pinned>>(unlocked);
            }
        }
        let after = self.inodes();
        let changes = Changes {
            added: after
                .iter()
                .filter(|inode| before.binary_search(inode).is_err())
                .copied()
                .collect(),
            removed: before
                .iter()
                .filter(|inode| after.binary_search(inode).is_err())
                .copied()
                .collect(),
            _let_go: let_go,
        };
        (!changes.added.is_empty() || !changes.removed.is_empty()).then_some(changes)
    }
}

fn inode_of(meta: &std::fs::Metadata) -> (u32, u64) {
    (procfs::user_dev_to_kernel(meta.dev()), meta.ino())
}

/// Opens `path` without read or write access (O_PATH) and says which inode it is. Not through
/// std's `custom_flags`: with musl (the static release) it takes O_PATH for an access mode bit
/// and drops it, and a file open for reading would keep a write lease from being taken.
fn pin_file(path: &Path) -> Result<Pinned> {
    use nix::{fcntl::OFlag, sys::stat::Mode};
    let fd = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())?;
    let file = File::from(fd);
    let inode = inode_of(&file.metadata()?);
    Ok(Pinned { _file: file, inode })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_re_created_at_its_path_is_followed_and_the_replaced_one_kept_while_locked() {
        let dir = std::env::temp_dir().join(format!("aimlock-followed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("job.lock");
        std::fs::write(&path, b"").unwrap();
        let mut followed = FollowedPaths::pin(std::slice::from_ref(&path)).unwrap();
        let first = followed.inodes();
        assert_eq!(first.len(), 1);
        let changed = |followed: &mut FollowedPaths, locked: HashSet<(u32, u64)>| {
            followed.last_check -= CHECK_INTERVAL;
            followed
                .check(|| locked)
                .map(|changes| (changes.added, changes.removed))
        };
        assert_eq!(changed(&mut followed, HashSet::default()), None);

        // Deleted: the file stays followed until another is at the path.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(changed(&mut followed, HashSet::default()), None);

        // Re-created (a new inode: the first is still held): followed; the first stays while
        // it has a lock.
        std::fs::write(&path, b"").unwrap();
        let second = inode_of(&std::fs::metadata(&path).unwrap());
        assert_ne!(second, first[0]);
        let still_locked = first.iter().copied().collect();
        assert_eq!(
            changed(&mut followed, still_locked),
            Some((vec![second], vec![]))
        );
        assert_eq!(followed.inodes().len(), 2);
        assert_eq!(
            changed(&mut followed, HashSet::default()),
            Some((vec![], first.clone()))
        );
        assert_eq!(followed.inodes(), [second]);
        // Not looked at again before a second has passed.
        assert!(followed.check(|| unreachable!()).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_path_that_cannot_be_opened_is_named() {
        let err = FollowedPaths::pin(&[PathBuf::from("/nonexistent/aimlock")])
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").starts_with("--path /nonexistent/aimlock:"),
            "{err:#}"
        );
    }
}
