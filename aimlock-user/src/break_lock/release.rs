//! Releasing the lock: a duplicate of a holder's descriptor (pidfd_getfd) onto the lock's open
//! file description, the unlock through it, the check that the description no longer holds it,
//! and a probe of whether the file is free.

use std::{
    fs, io,
    os::{
        fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    },
};

use anyhow::{Context as _, Result, anyhow, bail};

use super::{OwnedLock, describe_holder};
use crate::{
    events::{LockKind, Mode},
    lock_table::Holder,
    procfs::{self, LockLine},
};

/// The call that releases the lock through the duplicate.
pub(super) fn action(kind: LockKind) -> &'static str {
    match kind {
        LockKind::Ofd => "fcntl(F_OFD_SETLK, F_UNLCK, whole file)",
        _ => "flock(LOCK_UN)",
    }
}

/// What a real break did.
pub(super) struct Attempt {
    /// The holder whose descriptor was duplicated, once one could be.
    pub holder: Option<Holder>,
    pub result: Result<Released>,
}

pub(super) struct Released {
    /// Pids /proc/locks shows holding a lock the probe ran into (a waiter that got it).
    pub now_held_by: Vec<i32>,
}

/// Releases the lock through a duplicate of the first holder's descriptor that can be taken.
pub(super) fn release(lock: &OwnedLock) -> Attempt {
    let mut failures = Vec::new();
    for holder in &lock.holders {
        let duplicate = match duplicate_holder_fd(holder, lock) {
            Ok(duplicate) => duplicate,
            Err(err) => {
                failures.push(format!("{}: {err:#}", describe_holder(holder)));
                continue;
            }
        };
        return Attempt {
            holder: Some(holder.clone()),
            result: unlock_and_verify(&duplicate, lock),
        };
    }
    Attempt {
        holder: None,
        result: Err(anyhow!(
            "no holder's descriptor could be duplicated: {}",
            failures.join("; ")
        )),
    }
}

/// pidfd_getfd of the holder's fd, checked to still be on the inode and to own the lock: the
/// holder may have closed it and reused the number since /proc was read.
fn duplicate_holder_fd(holder: &Holder, lock: &OwnedLock) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, holder.pid as libc::pid_t, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error()).context("pidfd_open");
    }
    // SAFETY: pidfd_open just returned this fd to us.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    same_process(holder)?;
    // SAFETY: pidfd_getfd takes a pidfd, a target fd number and flags; it returns a new fd
    // (close-on-exec) or -1.
    let duplicate =
        unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), holder.fd, 0) };
    if duplicate < 0 {
        let err = io::Error::last_os_error();
        let hint = if err.raw_os_error() == Some(libc::EPERM) {
            " (it needs ptrace attach rights over the holder: run as root)"
        } else {
            ""
        };
        return Err(err).with_context(|| format!("pidfd_getfd{hint}"));
    }
    // SAFETY: pidfd_getfd just returned this fd to us.
    let duplicate = unsafe { OwnedFd::from_raw_fd(duplicate as i32) };
    let meta = fs::metadata(format!("/proc/self/fd/{}", duplicate.as_raw_fd()))
        .context("stat the duplicate")?;
    let first = lock.first();
    if (procfs::user_dev_to_kernel(meta.dev()), meta.ino()) != (first.kernel_dev, first.ino) {
        bail!("fd {} is now another file", holder.fd);
    }
    if !owns_lock(&duplicate, lock) {
        bail!("fd {} no longer holds the lock", holder.fd);
    }
    Ok(duplicate)
}

/// Checks, once a pidfd holds the holder's pid, that the process behind the pid is still the
/// one the lock table showed: a process that started when it did is the same one, and the
/// pidfd, opened before, can only be of that process. A pid reused since the table was read is
/// another process, whose descriptor must not be taken.
fn same_process(holder: &Holder) -> Result<()> {
    let Some(started) = holder.start_time else {
        bail!("cannot tell when pid {} started", holder.pid);
    };
    match procfs::start_time(holder.pid) {
        Some(now) if now == started => Ok(()),
        Some(_) => bail!(
            "pid {} is another process now (its pid was reused since the lock table was read)",
            holder.pid
        ),
        None => bail!("pid {} has exited", holder.pid),
    }
}

/// Whether the description behind our own descriptor owns a lock of the lock's kind on its
/// inode.
fn owns_lock(fd: &OwnedFd, lock: &OwnedLock) -> bool {
    procfs::fd_locks(std::process::id())
        .into_iter()
        .any(|held| {
            held.fd == fd.as_raw_fd()
                && held.lock.kind == lock.kind()
                && !held.lock.blocked
                && on_inode(&held.lock, lock)
        })
}

/// Whether a lock line is on the lock's inode.
fn on_inode(line: &LockLine, lock: &OwnedLock) -> bool {
    (line.dev(), line.ino) == (lock.first().kernel_dev, lock.first().ino)
}

fn unlock_and_verify(duplicate: &OwnedFd, lock: &OwnedLock) -> Result<Released> {
    match lock.kind() {
        LockKind::Ofd => {
            nix::fcntl::fcntl(
                duplicate.as_fd(),
                nix::fcntl::FcntlArg::F_OFD_SETLK(&whole_file(libc::F_UNLCK)),
            )
            .context("fcntl(F_OFD_SETLK, F_UNLCK)")?;
        }
        _ => {
            // SAFETY: flock on a descriptor we own.
            let ret = unsafe { libc::flock(duplicate.as_raw_fd(), libc::LOCK_UN) };
            if ret != 0 {
                return Err(io::Error::last_os_error()).context("flock(LOCK_UN)");
            }
        }
    }
    if owns_lock(duplicate, lock) {
        bail!(
            "the open file description still holds the lock after {}",
            action(lock.kind())
        );
    }
    let free = probe(duplicate, lock).context("probe the file")?;
    let now_held_by = if free { Vec::new() } else { now_held_by(lock)? };
    Ok(Released { now_held_by })
}

fn whole_file(lock_type: libc::c_int) -> libc::flock {
    // SAFETY: flock is plain data; all-zero is a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = lock_type as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock
}

/// Whether the lock could be taken now by someone else, asked on a fresh open file
/// description of the same inode (reopened through our duplicate, so it works for deleted
/// files and files in other mount namespaces). The probe leaves nothing behind: an OFD probe
/// is F_OFD_GETLK, which takes nothing; a flock probe that succeeds is unlocked at once, and
/// closing the probe's own description would release it anyway.
fn probe(duplicate: &OwnedFd, lock: &OwnedLock) -> Result<bool> {
    let fresh = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", duplicate.as_raw_fd()))
        .context("reopen the file")?;
    let write = lock.mode() == Mode::Write;
    if lock.kind() == LockKind::Ofd {
        for held in &lock.ranges {
            let mut wanted = whole_file(if write { libc::F_WRLCK } else { libc::F_RDLCK });
            wanted.l_start = held.start as libc::off_t;
            wanted.l_len = held
                .end
                .map_or(0, |end| (end - held.start + 1) as libc::off_t);
            nix::fcntl::fcntl(
                fresh.as_fd(),
                nix::fcntl::FcntlArg::F_OFD_GETLK(&mut wanted),
            )
            .context("fcntl(F_OFD_GETLK)")?;
            if wanted.l_type != libc::F_UNLCK as libc::c_short {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    let how = if write { libc::LOCK_EX } else { libc::LOCK_SH };
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(fresh.as_raw_fd(), how | libc::LOCK_NB) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Ok(false);
        }
        return Err(err).context("flock(LOCK_NB)");
    }
    // SAFETY: as above.
    if unsafe { libc::flock(fresh.as_raw_fd(), libc::LOCK_UN) } != 0 {
        return Err(io::Error::last_os_error()).context("flock(LOCK_UN) after the probe");
    }
    Ok(true)
}

/// The pids /proc/locks records for the granted locks on the lock's inode.
fn now_held_by(lock: &OwnedLock) -> Result<Vec<i32>> {
    let table = procfs::proc_locks().context("read /proc/locks")?;
    let mut pids: Vec<i32> = table
        .locks
        .iter()
        .filter(|listed| on_inode(&listed.lock, lock))
        .map(|listed| listed.lock.pid)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::break_lock::tests::{owned, table_lock};

    #[test]
    fn a_reused_pid_is_not_acted_on() {
        let pid = std::process::id();
        let mut lock = owned(table_lock(LockKind::Flock, pid as i32, &[pid], 0));
        let started = procfs::start_time(pid).expect("this process runs");
        // As if the table had been read while another process had this pid.
        lock.holders[0].start_time = Some(started + 1_000_000_000);
        let err = duplicate_holder_fd(&lock.holders[0], &lock).unwrap_err();
        assert!(format!("{err:#}").contains("reused"), "{err:#}");
        lock.holders[0].start_time = None;
        let err = duplicate_holder_fd(&lock.holders[0], &lock).unwrap_err();
        assert!(format!("{err:#}").contains("started"), "{err:#}");
        // The process the table showed: the check lets it through (fd 3 is then not the file).
        lock.holders[0].start_time = Some(started);
        let err = duplicate_holder_fd(&lock.holders[0], &lock).unwrap_err();
        assert!(!format!("{err:#}").contains("reused"), "{err:#}");
    }
}
