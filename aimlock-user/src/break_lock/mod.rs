//! `aimlock break`: release an orphaned flock or OFD lock without ending what holds it.
//!
//! Both belong to an open file description. A duplicate of one holder's descriptor, taken with
//! pidfd_open + pidfd_getfd, refers to that same description, so unlocking through it releases
//! the lock for every process sharing it while they keep running. A POSIX lock belongs to its
//! process (its files_struct): nothing outside that process can release it.
//!
//! The locks, their holders and the judgement of their taker come from the shared lock table
//! (`lock_table`); this module groups them by owner, shows one, and asks `policy` whether it
//! may be broken, `release` to break it and `audit` to record it.

mod audit;
mod policy;
mod release;

use std::{fs, io::Write as _, os::unix::fs::MetadataExt as _, path::PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::{
    cli::{self, Inode},
    events::{LockKind, Mode},
    lock_table::{self, Holder, Lock, Taker},
};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["path", "inode"])))]
pub struct BreakArgs {
    /// The locked file.
    #[arg(long, value_name = "PATH")]
    path: Option<PathBuf>,
    /// The locked inode as MAJOR:MINOR:INODE: in decimal, as `aimlock trace` prints it
    /// (`stat -c %Hd:%Ld:%i FILE`), or in hexadecimal as /proc/locks does (fe:00:10010728).
    #[arg(long, value_name = "DEV:INO", value_parser = cli::parse_inode)]
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

/// The granted locks of one owner on the inode, with every process holding a descriptor on
/// that owner: an open file description for flock, OFD locks and leases, a process for POSIX.
#[derive(Clone, Debug)]
struct OwnedLock {
    /// The lock table's locks of this owner, one per range (an OFD owner may hold several),
    /// in the order of their ranges. They share their kind, taker and judgement.
    ranges: Vec<Lock>,
    /// The ranges' holders together: a POSIX owner may have taken each range through another
    /// of its fds.
    holders: Vec<Holder>,
}

impl OwnedLock {
    /// The range that speaks for the owner: its kind, mode, taker and judgement are the
    /// owner's.
    fn first(&self) -> &Lock {
        &self.ranges[0]
    }

    fn kind(&self) -> LockKind {
        self.first().kind
    }

    fn mode(&self) -> Mode {
        self.first().mode
    }

    /// The holder that is the taker itself, when the table judged it holding.
    fn holding_taker(&self) -> Option<&Holder> {
        let lock = self.first();
        (lock.taker == Taker::Holding)
            .then(|| {
                self.holders
                    .iter()
                    .find(|holder| i64::from(holder.pid) == i64::from(lock.pid))
            })
            .flatten()
    }

    /// The path as a holder sees it, marked when the file was deleted.
    fn path(&self) -> Option<String> {
        self.ranges.iter().find_map(|lock| {
            let path = lock.path.as_ref()?;
            Some(if lock.deleted {
                format!("{path} (deleted)")
            } else {
                path.clone()
            })
        })
    }
}

/// What is on the inode.
struct OnInode {
    owners: Vec<OwnedLock>,
    /// Granted locks in /proc/locks, whether or not a process has a descriptor on them.
    listed: usize,
    /// Requests blocked on the inode's locks.
    waiters: usize,
}

/// Takes the lock table of the inode and groups its locks by owner. A table whose open file
/// descriptions kcmp could not tell apart may put holders of two locks under one: breaking
/// through the wrong one would release another lock, so that is an error.
fn read_locks(target: Inode) -> Result<OnInode> {
    let (locks, blind) = lock_table::take_where(&move |line| target.holds(line));
    if let Some(err) = &blind.proc_locks {
        bail!("cannot read the lock table: {err}");
    }
    if blind.uncompared > 0 {
        bail!(
            "cannot tell open file descriptions apart (kcmp needs ptrace read access to every \
             holder: run as root): kcmp refused {} comparison(s)",
            blind.uncompared
        );
    }
    for note in blind.notes() {
        eprintln!("aimlock: {note}");
    }
    Ok(OnInode {
        listed: locks.iter().filter(|lock| !lock.hidden).count(),
        waiters: locks.iter().map(|lock| lock.waiters.len()).sum(),
        owners: by_owner(locks),
    })
}

/// Groups the table's locks, one per range and owner, by owner: the ranges of one open file
/// description have the same holders, those of one POSIX owner the same process. Locks no
/// process has a descriptor on are out of reach and left out.
fn by_owner(locks: Vec<Lock>) -> Vec<OwnedLock> {
    let mut owners: Vec<OwnedLock> = Vec::new();
    for lock in locks.into_iter().filter(|lock| !lock.holders.is_empty()) {
        let same_owner = |owner: &&mut OwnedLock| {
            owner.kind() == lock.kind
                && if lock.kind == LockKind::Posix {
                    owner.holders[0].pid == lock.holders[0].pid
                } else {
                    owner.first().holders == lock.holders
                }
        };
        match owners.iter_mut().find(same_owner) {
            Some(owner) => {
                for holder in &lock.holders {
                    if !owner.holders.contains(holder) {
                        owner.holders.push(holder.clone());
                    }
                }
                owner.ranges.push(lock);
            }
            None => owners.push(OwnedLock {
                holders: lock.holders.clone(),
                ranges: vec![lock],
            }),
        }
    }
    for owner in &mut owners {
        owner.ranges.sort_by_key(|lock| (lock.start, lock.end));
        owner.holders.sort_by_key(|holder| (holder.pid, holder.fd));
    }
    owners.sort_by_key(|owner| (owner.holders[0].pid, owner.holders[0].fd));
    owners
}

pub fn run(args: BreakArgs) -> Result<()> {
    // The named file is held open (without access) until the end: while it is, its inode
    // number is its own, so every lock found on that number is on this very file, even if it
    // is deleted and another file created meanwhile.
    let (target, path, _pinned) = match (&args.path, args.inode) {
        (Some(path), _) => {
            let pinned =
                open_without_access(path).with_context(|| format!("{}", path.display()))?;
            let meta = pinned
                .metadata()
                .with_context(|| format!("{}", path.display()))?;
            let inode = Inode {
                major: libc::major(meta.dev()),
                minor: libc::minor(meta.dev()),
                ino: meta.ino(),
            };
            (inode, Some(path.display().to_string()), Some(pinned))
        }
        (None, Some(inode)) => (inode, None, None),
        (None, None) => unreachable!("clap requires --path or --inode"),
    };

    let on_inode = read_locks(target)?;
    let lock = choose(&on_inode, target, path.as_deref(), args.holder)?;
    let path = path.or_else(|| lock.path());
    show(&lock, target, path.as_deref(), on_inode.waiters);

    if let Some(reason) = policy::refusal(&lock, args.force) {
        bail!("refusing to break it: {reason}");
    }
    if !args.yes {
        println!("Dry run: nothing changed.");
        // Named as the operator named it: by its path, the file at that path then, never a
        // later file that got its inode number.
        let file = match &args.path {
            Some(path) => format!("--path {}", shell_word(&path.to_string_lossy())),
            None => format!("--inode {target}"),
        };
        let force = if args.force { " --force" } else { "" };
        println!(
            "To break it: aimlock break {file} --holder {}{force} --yes",
            lock.holders[0].pid
        );
        return Ok(());
    }

    // Opened first: no break without its record.
    let mut audit_log = args.audit_log.as_deref().map(audit::open_log).transpose()?;

    let attempt = release::release(&lock);
    let record = audit::Record::new(&lock, target, path, args.force, &attempt);
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
        kind_name(lock.kind()),
        holder.fd,
        holder.pid,
        holder.comm
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

/// Opens `path` without read or write access (O_PATH): it neither counts as a reader or writer
/// (a lease stays possible) nor needs permission to read the file.
fn open_without_access(path: &std::path::Path) -> Result<fs::File> {
    use nix::{fcntl::OFlag, sys::stat::Mode};
    let fd = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())?;
    Ok(fs::File::from(fd))
}

/// `text` as one word for a POSIX shell: as it is when it is plain, else single-quoted.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:@%+=,".contains(&b));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Picks the one lock to break: the only one on the inode, or the one `holder` has a
/// descriptor on.
fn choose(
    on_inode: &OnInode,
    target: Inode,
    path: Option<&str>,
    holder: Option<u32>,
) -> Result<OwnedLock> {
    let name = match path {
        Some(path) => format!("{path} ({target})"),
        None => format!("inode {target}"),
    };
    if on_inode.owners.is_empty() {
        if on_inode.listed > 0 && !nix::unistd::geteuid().is_root() {
            bail!(
                "{name} is locked ({} in /proc/locks) but no process this user may inspect \
                 has a descriptor on it: run aimlock break as root",
                on_inode.listed
            );
        }
        if on_inode.listed > 0 {
            bail!(
                "{name} is locked ({} in /proc/locks) but no process has a descriptor on it: \
                 a memory mapping, a descriptor in flight on a unix socket or io_uring keeps \
                 it, out of reach of aimlock break",
                on_inode.listed
            );
        }
        bail!("no lock on {name}");
    }
    let candidates: Vec<&OwnedLock> = on_inode
        .owners
        .iter()
        .filter(|lock| holder.is_none_or(|pid| lock.holders.iter().any(|held| held.pid == pid)))
        .collect();
    match (candidates.as_slice(), holder) {
        ([lock], _) => {
            let mut lock = (*lock).clone();
            // The chosen holder's descriptor is the one duplicated.
            if let Some(pid) = holder {
                lock.holders.sort_by_key(|held| held.pid != pid);
            }
            Ok(lock)
        }
        ([], Some(pid)) => bail!("pid {pid} holds no descriptor on a lock on {name}"),
        (several, _) => {
            println!("{} owners hold locks on {name}:", several.len());
            for lock in several {
                let holders: Vec<String> = lock.holders.iter().map(describe_holder).collect();
                println!(
                    "  {} {}, {}: {}",
                    kind_name(lock.kind()),
                    mode_name(lock.mode()),
                    range(lock.first()),
                    holders.join("; ")
                );
            }
            bail!("several locks on {name}: choose one with --holder PID")
        }
    }
}

fn show(lock: &OwnedLock, target: Inode, path: Option<&str>, waiters: usize) {
    let ranges: Vec<String> = lock.ranges.iter().map(range).collect();
    println!(
        "Lock:    {}, {}, {}",
        kind_name(lock.kind()),
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
    if lock.kind() == LockKind::Posix {
        let owner = &lock.holders[0];
        println!(
            "Owner:   pid {} ({}): a POSIX lock belongs to its process",
            owner.pid, owner.comm
        );
    } else {
        println!("Taker:   {}", describe_taker(lock));
    }
    println!(
        "Holders: {} descriptor(s) on the {}:",
        lock.holders.len(),
        if lock.kind() == LockKind::Posix {
            "locked file"
        } else {
            "open file description that owns the lock"
        }
    );
    for holder in &lock.holders {
        println!("           {}", describe_holder(holder));
    }
    println!("Waiters: {waiters} blocked request(s) on the file");
    if matches!(lock.kind(), LockKind::Flock | LockKind::Ofd) {
        let holder = &lock.holders[0];
        println!(
            "Action:  duplicate fd {} of pid {} with pidfd_open + pidfd_getfd, then\n         \
             {} on the duplicate.\n\
             Effect:  the lock is released for every holder; they keep running and keep\n         \
             their descriptors.",
            holder.fd,
            holder.pid,
            release::action(lock.kind())
        );
    }
}

/// The lock table's judgement of the taker, with the processes behind it.
fn describe_taker(lock: &OwnedLock) -> String {
    let first = lock.first();
    let recorded = first.pid;
    match (first.taker, lock.holding_taker(), &first.command) {
        (Taker::Holding, Some(taker), _) => format!(
            "pid {recorded} ({}), alive and still holding it (fd {})",
            taker.comm, taker.fd
        ),
        (Taker::Unknown, ..) if recorded == -1 => {
            "unknown: /proc records pid -1 for every OFD lock; any holder may have taken it"
                .to_owned()
        }
        (Taker::Unknown, ..) if recorded == 0 => {
            "unknown: /proc records pid 0, a taker in a PID namespace not visible from here"
                .to_owned()
        }
        (Taker::Unknown, ..) => format!(
            "unknown: pid {recorded}, whose descriptors this user may not read (run as root)"
        ),
        (_, _, None) => format!("pid {recorded}, no longer running: the lock is orphaned"),
        (_, _, Some(running)) => format!(
            "pid {recorded} ({running}), holding no descriptor on it (closed, exiting, or a \
             reused pid): the lock is orphaned"
        ),
    }
}

fn describe_holder(holder: &Holder) -> String {
    let mut text = format!("pid {} ({}) fd {}", holder.pid, holder.comm, holder.fd);
    if let Some(ns_pid) = holder.ns_pid {
        text.push_str(&format!(", pid {ns_pid} in its namespace"));
    }
    if let Some(cgroup) = &holder.cgroup {
        text.push_str(&format!(", cgroup {cgroup}"));
    }
    text
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

fn range(lock: &Lock) -> String {
    match (lock.start, lock.end) {
        (0, None) => "whole file".to_owned(),
        (start, None) => format!("bytes {start} to end of file"),
        (start, Some(end)) => format!("bytes {start}-{end}"),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn a_path_is_suggested_as_one_shell_word() {
        assert_eq!(shell_word("/run/lock/x.lock"), "/run/lock/x.lock");
        assert_eq!(shell_word("/tmp/my lock"), "'/tmp/my lock'");
        assert_eq!(shell_word("/tmp/it's"), r"'/tmp/it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    /// A lock of the table as `lock_table` would judge it: `taker` recorded, held through fd 3
    /// of each of `holders`, over the ten bytes from `start`.
    pub(super) fn table_lock(kind: LockKind, taker: i32, holders: &[u32], start: u64) -> Lock {
        Lock {
            start,
            end: Some(start + 9),
            command: None,
            ..lock_table::example(kind, Mode::Write, taker, holders)
        }
    }

    pub(super) fn owned(lock: Lock) -> OwnedLock {
        let mut owners = by_owner(vec![lock]);
        owners.pop().unwrap()
    }

    #[test]
    fn the_ranges_of_one_owner_make_one_lock() {
        let mut posix_other_fd = table_lock(LockKind::Posix, 100, &[100], 40);
        posix_other_fd.holders[0].fd = 4;
        let owners = by_owner(vec![
            table_lock(LockKind::Ofd, -1, &[101], 20),
            table_lock(LockKind::Ofd, -1, &[101], 0),
            table_lock(LockKind::Ofd, -1, &[102], 0),
            table_lock(LockKind::Posix, 100, &[100], 0),
            posix_other_fd,
            table_lock(LockKind::Flock, 7, &[], 0),
        ]);
        let summary: Vec<String> = owners
            .iter()
            .map(|owner| {
                let starts: Vec<u64> = owner.ranges.iter().map(|lock| lock.start).collect();
                let fds: Vec<(u32, i32)> = owner.holders.iter().map(|h| (h.pid, h.fd)).collect();
                format!("{:?} {starts:?} {fds:?}", owner.kind())
            })
            .collect();
        assert_eq!(
            summary,
            [
                "Posix [0, 40] [(100, 3), (100, 4)]",
                "Ofd [0, 20] [(101, 3)]",
                "Ofd [0] [(102, 3)]",
            ]
        );
    }

    #[test]
    fn the_taker_is_described_from_the_tables_judgement() {
        let holding = owned(table_lock(LockKind::Flock, 100, &[100, 101], 0));
        assert_eq!(
            describe_taker(&holding),
            "pid 100 (worker), alive and still holding it (fd 3)"
        );
        let mut reused = table_lock(LockKind::Flock, 100, &[101], 0);
        assert_eq!(
            describe_taker(&owned(reused.clone())),
            "pid 100, no longer running: the lock is orphaned"
        );
        reused.command = Some("bash".to_owned());
        assert!(
            describe_taker(&owned(reused)).starts_with("pid 100 (bash), holding no descriptor")
        );
        let ofd = owned(table_lock(LockKind::Ofd, -1, &[101], 0));
        assert!(describe_taker(&ofd).starts_with("unknown: /proc records pid -1"));
        let hidden = owned(table_lock(LockKind::Flock, 0, &[101], 0));
        assert!(describe_taker(&hidden).contains("PID namespace"));
    }
}
