//! `aimlock break`: release an orphaned flock or OFD lock without ending what holds it.
//!
//! Both belong to an open file description. A duplicate of one holder's descriptor, taken with
//! pidfd_open + pidfd_getfd, refers to that same description, so unlocking through it releases
//! the lock for every process sharing it while they keep running. A POSIX lock belongs to its
//! process (its files_struct): nothing outside that process can release it.

use std::{
    fmt, fs,
    io::{self, Write as _},
    os::{
        fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    },
    path::PathBuf,
    time::SystemTime,
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Serialize;

use crate::{
    events::{LockKind, Mode, rfc3339},
    procfs::{self, LockLine, ProcessInfo},
};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["path", "inode"])))]
pub struct BreakArgs {
    /// The locked file.
    #[arg(long, value_name = "PATH")]
    path: Option<PathBuf>,
    /// The locked inode as MAJOR:MINOR:INODE, in decimal (the `dev` and `ino` that
    /// `aimlock trace` prints; `stat -c %Hd:%Ld:%i FILE`).
    #[arg(long, value_name = "DEV:INO", value_parser = parse_inode)]
    inode: Option<Inode>,
    /// When several owners hold locks on the file: break the one this process holds a
    /// descriptor on.
    #[arg(long, value_name = "PID")]
    holder: Option<u32>,
    /// Break the lock. Without it, show what would be done and change nothing.
    #[arg(long)]
    yes: bool,
    /// Break it even though its taker is alive and still holds it, or cannot be known.
    #[arg(long)]
    force: bool,
    /// Also append the audit record of a break to this file.
    #[arg(long, value_name = "PATH")]
    audit_log: Option<PathBuf>,
}

/// An inode by device (major, minor) and number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Inode {
    major: u32,
    minor: u32,
    ino: u64,
}

impl Inode {
    /// The device in the kernel's encoding, as /proc lock lines carry it.
    fn dev(self) -> u32 {
        aimlock_common::kernel_dev(self.major, self.minor)
    }

    fn holds(self, lock: &LockLine) -> bool {
        lock.dev() == self.dev() && lock.ino == self.ino
    }
}

impl fmt::Display for Inode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.major, self.minor, self.ino)
    }
}

fn parse_inode(text: &str) -> Result<Inode, String> {
    let wanted = || format!("{text:?} is not MAJOR:MINOR:INODE in decimal (e.g. 254:0:10010728)");
    let [major, minor, ino] = text.split(':').collect::<Vec<_>>()[..] else {
        return Err(wanted());
    };
    Ok(Inode {
        major: major.parse().map_err(|_| wanted())?,
        minor: minor.parse().map_err(|_| wanted())?,
        ino: ino.parse().map_err(|_| wanted())?,
    })
}

/// A live process with a descriptor on a lock's owner.
#[derive(Clone, Debug)]
struct Holder {
    process: ProcessInfo,
    fd: i32,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let process = &self.process;
        write!(f, "pid {} ({}) fd {}", process.pid, process.comm, self.fd)?;
        if let Some(ns_pid) = process.ns_pid {
            write!(f, ", pid {ns_pid} in its namespace")?;
        }
        if let Some(cgroup) = &process.cgroup {
            write!(f, ", cgroup {cgroup}")?;
        }
        Ok(())
    }
}

/// The granted locks of one owner on the inode, with every process holding a descriptor on
/// that owner: an open file description for flock, OFD locks and leases, a process for POSIX.
#[derive(Clone, Debug)]
struct HeldLock {
    kind: LockKind,
    /// One line per range (an OFD owner may hold several).
    locks: Vec<LockLine>,
    holders: Vec<Holder>,
}

impl HeldLock {
    fn mode(&self) -> Mode {
        self.locks[0].mode
    }

    fn holder_pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.holders.iter().map(|holder| holder.process.pid)
    }
}

/// What is on the inode.
struct LockTable {
    held: Vec<HeldLock>,
    /// Granted locks in /proc/locks, whether or not a process has a descriptor on them.
    listed: usize,
    /// Requests blocked on the inode's locks.
    waiters: usize,
}

/// Reads /proc/locks and every process's fdinfo for the inode's locks and groups the holders
/// by owner, comparing descriptions with kcmp.
fn read_lock_table(target: Inode) -> Result<LockTable> {
    let proc_locks = procfs::read_small("/proc/locks").context("read /proc/locks")?;
    let listed: Vec<LockLine> = proc_locks
        .lines()
        .filter_map(LockLine::parse)
        .filter(|lock| target.holds(lock))
        .collect();
    let waiters = listed.iter().filter(|lock| lock.blocked).count();

    let mut fd_locks: Vec<_> = procfs::pids()
        .context("list /proc")?
        .into_iter()
        .flat_map(procfs::fd_locks)
        .filter(|held| !held.lock.blocked && target.holds(&held.lock))
        .collect();
    fd_locks.sort_by_key(|held| (held.pid, held.fd));

    let mut held: Vec<HeldLock> = Vec::new();
    for fd_lock in fd_locks {
        let Some(process) = ProcessInfo::read(fd_lock.pid) else {
            continue; // gone since its fdinfo was read
        };
        let mut owner = None;
        for (index, group) in held.iter().enumerate() {
            if group.kind != fd_lock.lock.kind {
                continue;
            }
            let first = &group.holders[0];
            let same_owner = if group.kind == LockKind::Posix {
                first.process.pid == fd_lock.pid
            } else {
                match procfs::same_description(first.process.pid, first.fd, fd_lock.pid, fd_lock.fd)
                {
                    Ok(same) => same,
                    // A process or fd that went away since it was read holds nothing now.
                    Err(err) if matches!(err.raw_os_error(), Some(libc::ESRCH | libc::EBADF)) => {
                        false
                    }
                    Err(err) => {
                        return Err(anyhow!(err)).context(
                            "cannot tell open file descriptions apart (kcmp needs ptrace read \
                             access to every holder: run as root)",
                        );
                    }
                }
            };
            if same_owner {
                owner = Some(index);
                break;
            }
        }
        let holder = Holder {
            process,
            fd: fd_lock.fd,
        };
        match owner {
            Some(index) => {
                let group = &mut held[index];
                if !group.locks.contains(&fd_lock.lock) {
                    group.locks.push(fd_lock.lock);
                }
                if !group
                    .holders
                    .iter()
                    .any(|known| known.process.pid == fd_lock.pid && known.fd == fd_lock.fd)
                {
                    group.holders.push(holder);
                }
            }
            None => held.push(HeldLock {
                kind: fd_lock.lock.kind,
                locks: vec![fd_lock.lock],
                holders: vec![holder],
            }),
        }
    }
    Ok(LockTable {
        held,
        listed: listed.len() - waiters,
        waiters,
    })
}

/// The process that took a lock, judged against its current holders.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Taker {
    /// Alive and still holding a descriptor on the lock: it may still rely on it.
    Holding { pid: u32, comm: String, fd: i32 },
    /// Its recorded pid holds no descriptor on the lock any more: the lock is orphaned.
    /// `running` names a process now using that pid (the taker closed its fd, or the pid
    /// was reused).
    Gone { pid: u32, running: Option<String> },
    /// /proc does not say: -1 for every OFD lock, 0 for a taker in a PID namespace not
    /// visible from here.
    Unknown { recorded: i32 },
}

impl Taker {
    fn of(lock: &HeldLock) -> Self {
        let recorded = lock.locks[0].pid;
        let Some(pid) = u32::try_from(recorded).ok().filter(|&pid| pid > 0) else {
            return Self::Unknown { recorded };
        };
        match lock.holders.iter().find(|holder| holder.process.pid == pid) {
            Some(holder) => Self::Holding {
                pid,
                comm: holder.process.comm.clone(),
                fd: holder.fd,
            },
            None => Self::Gone {
                pid,
                running: ProcessInfo::read(pid).map(|process| process.comm),
            },
        }
    }

    /// For the audit record.
    fn status(&self) -> &'static str {
        match self {
            Self::Holding { .. } => "holding",
            Self::Gone { .. } => "gone",
            Self::Unknown { .. } => "unknown",
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Self::Holding { pid, .. } | Self::Gone { pid, .. } => Some(*pid),
            Self::Unknown { .. } => None,
        }
    }
}

impl fmt::Display for Taker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Holding { pid, comm, fd } => {
                write!(
                    f,
                    "pid {pid} ({comm}), alive and still holding it (fd {fd})"
                )
            }
            Self::Gone { pid, running: None } => {
                write!(f, "pid {pid}, no longer running: the lock is orphaned")
            }
            Self::Gone {
                pid,
                running: Some(comm),
            } => write!(
                f,
                "pid {pid} ({comm}), holding no descriptor on it (closed, exiting, or a reused \
                 pid): the lock is orphaned"
            ),
            Self::Unknown { recorded: -1 } => write!(
                f,
                "unknown: /proc records pid -1 for every OFD lock; any holder may have taken it"
            ),
            Self::Unknown { recorded } => write!(
                f,
                "unknown: /proc records pid {recorded}, a taker in a PID namespace not visible \
                 from here"
            ),
        }
    }
}

/// Why the lock must not be broken, if it must not. POSIX locks and leases are never broken;
/// a flock or OFD lock only when no holder may still be relying on it, unless forced.
fn refusal(lock: &HeldLock, taker: &Taker, force: bool) -> Option<String> {
    match lock.kind {
        LockKind::Posix => {
            let owner = &lock.holders[0].process;
            Some(format!(
                "a POSIX lock belongs to its process: only pid {} ({}) can release it, by \
                 unlocking it, by closing any of its descriptors on the file, or by ending",
                owner.pid, owner.comm
            ))
        }
        LockKind::Lease => Some(
            "a lease is not a lock aimlock break releases: its holder gives it up when the \
             lease is broken by an open that conflicts with it"
                .to_owned(),
        ),
        LockKind::Flock | LockKind::Ofd if force => None,
        LockKind::Flock | LockKind::Ofd => match taker {
            Taker::Gone { .. } => None,
            Taker::Holding { pid, comm, .. } => Some(format!(
                "its taker, pid {pid} ({comm}), is alive and still holds it: end that process \
                 or let it unlock, or rerun with --force if you know it no longer needs the lock"
            )),
            Taker::Unknown { .. } => Some(
                "its taker is unknown, so a holder may still rely on it: check that none of \
                 the holders uses the lock, then rerun with --force"
                    .to_owned(),
            ),
        },
    }
}

fn kind_name(kind: LockKind) -> &'static str {
    match kind {
        LockKind::Flock => "flock",
        LockKind::Ofd => "OFD lock",
        LockKind::Posix => "POSIX lock",
        LockKind::Lease => "lease",
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Read => "shared (read)",
        Mode::Write => "exclusive (write)",
        Mode::Unlock => "unlocking",
    }
}

fn range(lock: &LockLine) -> String {
    match (lock.start, lock.end) {
        (0, None) => "whole file".to_owned(),
        (start, None) => format!("bytes {start} to end of file"),
        (start, Some(end)) => format!("bytes {start}-{end}"),
    }
}

/// The call that releases the lock through the duplicate.
fn action(kind: LockKind) -> &'static str {
    match kind {
        LockKind::Ofd => "fcntl(F_OFD_SETLK, F_UNLCK, whole file)",
        _ => "flock(LOCK_UN)",
    }
}

pub fn run(args: BreakArgs) -> Result<()> {
    let (target, path) = match (&args.path, args.inode) {
        (Some(path), _) => {
            let meta = fs::metadata(path).with_context(|| format!("{}", path.display()))?;
            let inode = Inode {
                major: libc::major(meta.dev()),
                minor: libc::minor(meta.dev()),
                ino: meta.ino(),
            };
            (inode, Some(path.display().to_string()))
        }
        (None, Some(inode)) => (inode, None),
        (None, None) => unreachable!("clap requires --path or --inode"),
    };

    let table = read_lock_table(target)?;
    let lock = choose(&table, target, path.as_deref(), args.holder)?;
    let path = path.or_else(|| {
        let holder = &lock.holders[0];
        procfs::open_path(holder.process.pid, target.dev(), target.ino).map(|open| {
            if open.deleted {
                format!("{} (deleted)", open.path)
            } else {
                open.path
            }
        })
    });
    let taker = Taker::of(&lock);
    show(&lock, &taker, target, path.as_deref(), table.waiters);

    if let Some(reason) = refusal(&lock, &taker, args.force) {
        bail!("refusing to break it: {reason}");
    }
    let chosen = &lock.holders[0];
    if !args.yes {
        println!("Dry run: nothing changed.");
        let force = if args.force { " --force" } else { "" };
        println!(
            "To break it: aimlock break --inode {target} --holder {}{force} --yes",
            chosen.process.pid
        );
        return Ok(());
    }

    // Opened first: no break without its record.
    let mut audit_log = args
        .audit_log
        .as_ref()
        .map(|log| {
            fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(log)
                .with_context(|| format!("open the audit log {}", log.display()))
        })
        .transpose()?;

    let attempt = release(&lock, target);
    let record = AuditRecord::new(&lock, &taker, target, path, args.force, &attempt);
    let line = serde_json::to_string(&record).context("serialize the audit record")?;
    eprintln!("{line}");
    if let (Some(file), Some(log)) = (audit_log.as_mut(), &args.audit_log) {
        file.write_all(format!("{line}\n").as_bytes())
            .with_context(|| format!("write the audit log {}", log.display()))?;
    }

    let released = attempt.result?;
    let holder = attempt.holder.expect("a release names its holder");
    println!(
        "Released: the {} through a duplicate of fd {} of pid {} ({}).",
        kind_name(lock.kind),
        holder.fd,
        holder.process.pid,
        holder.process.comm
    );
    println!("Verified: the open file description no longer holds it; the holders keep running.");
    match released.now_held_by.as_slice() {
        [] => println!("Probe:    a non-blocking lock attempt on the file succeeded: it is free."),
        pids => println!(
            "Probe:    the file is locked again, by pid {} (likely a waiter that was blocked on it).",
            pids.iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    Ok(())
}

/// Picks the one lock to break: the only one on the inode, or the one `holder` has a
/// descriptor on.
fn choose(
    table: &LockTable,
    target: Inode,
    path: Option<&str>,
    holder: Option<u32>,
) -> Result<HeldLock> {
    let name = match path {
        Some(path) => format!("{path} ({target})"),
        None => format!("inode {target}"),
    };
    if table.held.is_empty() {
        if table.listed > 0 && !nix::unistd::geteuid().is_root() {
            bail!(
                "{name} is locked ({} in /proc/locks) but no process this user may inspect \
                 has a descriptor on it: run aimlock break as root",
                table.listed
            );
        }
        if table.listed > 0 {
            bail!(
                "{name} is locked ({} in /proc/locks) but no process has a descriptor on it: \
                 a memory mapping, a descriptor in flight on a unix socket or io_uring keeps \
                 it, out of reach of aimlock break",
                table.listed
            );
        }
        bail!("no lock on {name}");
    }
    let candidates: Vec<&HeldLock> = table
        .held
        .iter()
        .filter(|lock| holder.is_none_or(|pid| lock.holder_pids().any(|held| held == pid)))
        .collect();
    match (candidates.as_slice(), holder) {
        ([lock], _) => {
            let mut lock = (*lock).clone();
            // The chosen holder's descriptor is the one duplicated.
            if let Some(pid) = holder {
                lock.holders.sort_by_key(|held| held.process.pid != pid);
            }
            Ok(lock)
        }
        ([], Some(pid)) => bail!("pid {pid} holds no descriptor on a lock on {name}"),
        (several, _) => {
            println!("{} owners hold locks on {name}:", several.len());
            for lock in several {
                let holders: Vec<String> = lock.holders.iter().map(Holder::to_string).collect();
                println!(
                    "  {} {}, {}: {}",
                    kind_name(lock.kind),
                    mode_name(lock.mode()),
                    range(&lock.locks[0]),
                    holders.join("; ")
                );
            }
            bail!("several locks on {name}: choose one with --holder PID")
        }
    }
}

fn show(lock: &HeldLock, taker: &Taker, target: Inode, path: Option<&str>, waiters: usize) {
    let ranges: Vec<String> = lock.locks.iter().map(range).collect();
    println!(
        "Lock:    {}, {}, {}",
        kind_name(lock.kind),
        mode_name(lock.mode()),
        ranges.join(", ")
    );
    println!(
        "File:    {} (dev {}:{}, inode {})",
        path.unwrap_or("(path unknown)"),
        target.major,
        target.minor,
        target.ino
    );
    if lock.kind == LockKind::Posix {
        let owner = &lock.holders[0].process;
        println!(
            "Owner:   pid {} ({}): a POSIX lock belongs to its process",
            owner.pid, owner.comm
        );
    } else {
        println!("Taker:   {taker}");
    }
    println!(
        "Holders: {} descriptor(s) on the {}:",
        lock.holders.len(),
        if lock.kind == LockKind::Posix {
            "locked file"
        } else {
            "open file description that owns the lock"
        }
    );
    for holder in &lock.holders {
        println!("           {holder}");
    }
    println!("Waiters: {waiters} blocked request(s) on the file");
    if matches!(lock.kind, LockKind::Flock | LockKind::Ofd) {
        let holder = &lock.holders[0];
        println!(
            "Action:  duplicate fd {} of pid {} with pidfd_open + pidfd_getfd, then\n         \
             {} on the duplicate.\n\
             Effect:  the lock is released for every holder; they keep running and keep\n         \
             their descriptors.",
            holder.fd,
            holder.process.pid,
            action(lock.kind)
        );
    }
}

/// What a real break did.
struct Attempt {
    /// The holder whose descriptor was duplicated, once one could be.
    holder: Option<Holder>,
    result: Result<Released>,
}

struct Released {
    /// Pids /proc/locks shows holding a lock the probe ran into (a waiter that got it).
    now_held_by: Vec<i32>,
}

/// Releases the lock through a duplicate of the first holder's descriptor that can be taken.
fn release(lock: &HeldLock, target: Inode) -> Attempt {
    let mut failures = Vec::new();
    for holder in &lock.holders {
        let duplicate = match duplicate_holder_fd(holder, lock.kind, target) {
            Ok(duplicate) => duplicate,
            Err(err) => {
                failures.push(format!("{holder}: {err:#}"));
                continue;
            }
        };
        return Attempt {
            holder: Some(holder.clone()),
            result: unlock_and_verify(&duplicate, lock, target),
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
fn duplicate_holder_fd(holder: &Holder, kind: LockKind, target: Inode) -> Result<OwnedFd> {
    let pid = holder.process.pid;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error()).context("pidfd_open");
    }
    // SAFETY: pidfd_open just returned this fd to us.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
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
    if meta.ino() != target.ino || procfs::user_dev_to_kernel(meta.dev()) != target.dev() {
        bail!("fd {} is now another file", holder.fd);
    }
    if !owns_lock(&duplicate, kind, target) {
        bail!("fd {} no longer holds the lock", holder.fd);
    }
    Ok(duplicate)
}

/// Whether the description behind our own descriptor owns a lock of this kind on the inode.
fn owns_lock(fd: &OwnedFd, kind: LockKind, target: Inode) -> bool {
    procfs::fd_locks(std::process::id())
        .into_iter()
        .any(|held| {
            held.fd == fd.as_raw_fd()
                && held.lock.kind == kind
                && !held.lock.blocked
                && target.holds(&held.lock)
        })
}

fn unlock_and_verify(duplicate: &OwnedFd, lock: &HeldLock, target: Inode) -> Result<Released> {
    match lock.kind {
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
    if owns_lock(duplicate, lock.kind, target) {
        bail!(
            "the open file description still holds the lock after {}",
            action(lock.kind)
        );
    }
    let free = probe(duplicate, lock).context("probe the file")?;
    let now_held_by = if free {
        Vec::new()
    } else {
        now_held_by(target)?
    };
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
fn probe(duplicate: &OwnedFd, lock: &HeldLock) -> Result<bool> {
    let fresh = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", duplicate.as_raw_fd()))
        .context("reopen the file")?;
    let write = lock.mode() == Mode::Write;
    if lock.kind == LockKind::Ofd {
        for held in &lock.locks {
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

/// The pids /proc/locks records for the inode's granted locks.
fn now_held_by(target: Inode) -> Result<Vec<i32>> {
    let text = procfs::read_small("/proc/locks").context("read /proc/locks")?;
    let mut pids: Vec<i32> = text
        .lines()
        .filter_map(LockLine::parse)
        .filter(|lock| !lock.blocked && target.holds(lock))
        .map(|lock| lock.pid)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// One JSON line per real break.
#[derive(Debug, Serialize)]
struct AuditRecord {
    event: &'static str,
    ts: String,
    by: Operator,
    lock: AuditLock,
    /// The holder whose descriptor was duplicated.
    #[serde(skip_serializing_if = "Option::is_none")]
    holder: Option<AuditHolder>,
    action: &'static str,
    forced: bool,
    /// "released" or "failed".
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Whether the probe after the break found the file free (a waiter may have taken it).
    #[serde(skip_serializing_if = "Option::is_none")]
    free_after: Option<bool>,
}

/// Who ran the break: the real user, and the login user the kernel's audit tracks across
/// sudo and su.
#[derive(Debug, Serialize)]
struct Operator {
    uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    login_uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sudo_user: Option<String>,
    pid: u32,
}

#[derive(Debug, Serialize)]
struct AuditLock {
    kind: LockKind,
    mode: Mode,
    dev: String,
    ino: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    ranges: Vec<AuditRange>,
    taker: AuditTaker,
}

#[derive(Debug, Serialize)]
struct AuditRange {
    start: u64,
    /// `null`: to end of file.
    end: Option<u64>,
}

#[derive(Debug, Serialize)]
struct AuditTaker {
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    status: &'static str,
}

#[derive(Debug, Serialize)]
struct AuditHolder {
    pid: u32,
    comm: String,
    fd: i32,
}

impl AuditRecord {
    fn new(
        lock: &HeldLock,
        taker: &Taker,
        target: Inode,
        path: Option<String>,
        forced: bool,
        attempt: &Attempt,
    ) -> Self {
        let uid = nix::unistd::getuid();
        Self {
            event: "break",
            ts: rfc3339(SystemTime::now()),
            by: Operator {
                uid: uid.as_raw(),
                user: nix::unistd::User::from_uid(uid)
                    .ok()
                    .flatten()
                    .map(|user| user.name),
                login_uid: procfs::read_small("/proc/self/loginuid")
                    .ok()
                    .and_then(|text| text.trim().parse().ok())
                    .filter(|&login_uid| login_uid != u32::MAX),
                sudo_user: std::env::var("SUDO_USER").ok(),
                pid: std::process::id(),
            },
            lock: AuditLock {
                kind: lock.kind,
                mode: lock.mode(),
                dev: format!("{}:{}", target.major, target.minor),
                ino: target.ino,
                path,
                ranges: lock
                    .locks
                    .iter()
                    .map(|held| AuditRange {
                        start: held.start,
                        end: held.end,
                    })
                    .collect(),
                taker: AuditTaker {
                    pid: taker.pid(),
                    status: taker.status(),
                },
            },
            holder: attempt.holder.as_ref().map(|holder| AuditHolder {
                pid: holder.process.pid,
                comm: holder.process.comm.clone(),
                fd: holder.fd,
            }),
            action: action(lock.kind),
            forced,
            outcome: if attempt.result.is_ok() {
                "released"
            } else {
                "failed"
            },
            error: attempt.result.as_ref().err().map(|err| format!("{err:#}")),
            free_after: attempt
                .result
                .as_ref()
                .ok()
                .map(|released| released.now_held_by.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(kind: LockKind, taker_pid: i32, holder_pids: &[u32]) -> HeldLock {
        let line = format!("1: FLOCK  ADVISORY  WRITE {taker_pid} fe:00:42 0 EOF");
        let mut lock = LockLine::parse(&line).unwrap();
        lock.kind = kind;
        HeldLock {
            kind,
            locks: vec![lock],
            holders: holder_pids
                .iter()
                .map(|&pid| Holder {
                    process: ProcessInfo {
                        pid,
                        comm: "worker".to_owned(),
                        ..ProcessInfo::default()
                    },
                    fd: 3,
                })
                .collect(),
        }
    }

    #[test]
    fn inode_is_major_minor_number_in_decimal() {
        assert_eq!(
            parse_inode("254:0:10010728"),
            Ok(Inode {
                major: 254,
                minor: 0,
                ino: 10010728
            })
        );
        for bad in ["", "254:0", "fe:00:12", "254:0:12:9", "254:0:-1"] {
            assert!(parse_inode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_taker_counts_as_alive_only_while_it_holds_the_description() {
        let holding = held(LockKind::Flock, 100, &[100, 101]);
        assert!(matches!(
            Taker::of(&holding),
            Taker::Holding { pid: 100, .. }
        ));
        // i32::MAX is above any pid_max: never a running process.
        let gone = held(LockKind::Flock, i32::MAX, &[101]);
        assert_eq!(
            Taker::of(&gone),
            Taker::Gone {
                pid: i32::MAX as u32,
                running: None
            }
        );
        assert_eq!(
            Taker::of(&held(LockKind::Ofd, -1, &[101])),
            Taker::Unknown { recorded: -1 }
        );
        assert_eq!(
            Taker::of(&held(LockKind::Flock, 0, &[101])),
            Taker::Unknown { recorded: 0 }
        );
    }

    #[test]
    fn only_orphans_break_without_force_and_posix_locks_never() {
        let orphan = held(LockKind::Flock, i32::MAX, &[101]);
        assert_eq!(refusal(&orphan, &Taker::of(&orphan), false), None);

        let live = held(LockKind::Flock, 100, &[100]);
        assert!(
            refusal(&live, &Taker::of(&live), false)
                .unwrap()
                .contains("--force")
        );
        assert_eq!(refusal(&live, &Taker::of(&live), true), None);

        let ofd = held(LockKind::Ofd, -1, &[101]);
        assert!(
            refusal(&ofd, &Taker::of(&ofd), false)
                .unwrap()
                .contains("unknown")
        );
        assert_eq!(refusal(&ofd, &Taker::of(&ofd), true), None);

        let posix = held(LockKind::Posix, 100, &[100]);
        let reason = refusal(&posix, &Taker::of(&posix), true).unwrap();
        assert!(reason.contains("pid 100"), "{reason}");
    }
}
