//! The lock table as the kernel has it, the one model that `locks`, `break`, `trace` and the
//! metrics share: /proc/locks merged with the `lock:` lines of every fdinfo, each lock resolved
//! to the processes that really hold it, and one judgement of its taker (the orphan predicate).

use std::{
    cmp::Ordering,
    collections::{HashMap, hash_map::Entry},
    io, thread,
};

use serde::Serialize;

use crate::{
    events::{LockKind, Mode},
    host_paths::HostPaths,
    procfs::{self, FdLock, ListedLock, LockLine, OpenPath, ProcessInfo},
};

/// A lock as it really is.
#[derive(Clone, Debug, Serialize)]
pub struct Lock {
    pub kind: LockKind,
    pub mode: Mode,
    pub start: u64,
    /// `None`: to end of file.
    pub end: Option<u64>,
    /// "major:minor", as `ls -l` and lslocks print it.
    pub dev: String,
    /// The same device in the kernel's encoding (major << 20 | minor), as trace records carry it.
    #[serde(skip)]
    pub kernel_dev: u32,
    pub ino: u64,
    /// As the holder whose fd showed it sees it (relative to its container's root and mounts);
    /// `None` when no holder was seen.
    pub path: Option<String>,
    /// The path on this host's mounts, where it differs from `path`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    pub deleted: bool,
    /// The taker, as the kernel recorded it: maybe dead, 0 (not visible from here) or -1 (OFD).
    pub pid: i32,
    /// The taker's command, while it runs.
    pub command: Option<String>,
    /// The taker judged against the holders.
    pub taker: Taker,
    /// Outlived its taker: a flock, OFD lock or lease whose taker is gone while holders remain.
    pub orphan: bool,
    /// /proc/locks leaves it out: only the holders' fdinfo shows it.
    pub hidden: bool,
    /// Every fd of a live process on the lock's open file description (for a POSIX lock: the
    /// owner's fds through which it was taken).
    pub holders: Vec<Holder>,
    /// Requests blocked by this lock.
    pub waiters: Vec<Waiter>,
}

/// What /proc says of the process that took a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Taker {
    /// Its recorded pid is one of the holders: it may still rely on the lock.
    Holding,
    /// Its recorded pid holds no descriptor on the lock: exited, closed its fd, or a pid since
    /// reused by another process.
    Gone,
    /// Not recorded (-1 for every OFD lock, 0 for a taker in a PID namespace not visible
    /// here), or not visible: a taker whose fds the caller may not read.
    Unknown,
}

impl Taker {
    pub fn judge(recorded_pid: i32, holders: &[Holder]) -> Self {
        match u32::try_from(recorded_pid).ok().filter(|&pid| pid > 0) {
            None => Self::Unknown,
            Some(pid) if holders.iter().any(|holder| holder.pid == pid) => Self::Holding,
            Some(_) => Self::Gone,
        }
    }
}

/// The one orphan predicate: a lock that outlived its taker while other processes still hold
/// it. POSIX locks belong to their process and never outlive it.
pub fn is_orphan(kind: LockKind, taker: Taker, holders: &[Holder]) -> bool {
    kind != LockKind::Posix && taker == Taker::Gone && !holders.is_empty()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub pid: u32,
    pub comm: String,
    pub fd: i32,
    /// Its pid in its own PID namespace, when that differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    /// Its cgroup, when it differs from aimlock's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// When it started (`procfs::start_time`): tells it from a later process with its pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    /// The ancestor it inherited the description from (the taker, or another holder), when
    /// its parent chain shows one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inherited_from: Option<u32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Waiter {
    /// As recorded: -1 for an OFD request.
    pub pid: i32,
    pub comm: Option<String>,
    pub kind: LockKind,
    pub mode: Mode,
    pub start: u64,
    pub end: Option<u64>,
}

/// What the scan could not see.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Blind {
    /// /proc/locks itself could not be read.
    pub proc_locks: Option<String>,
    pub unparsed_lines: usize,
    /// Processes whose fds the caller may not read, in order.
    pub denied: Vec<u32>,
    /// Processes or fds that went away while they were read.
    pub vanished: usize,
    /// Pairs of fds that kcmp refused to compare: their locks are grouped by range alone.
    pub uncompared: usize,
}

impl Blind {
    /// One line per blind spot, for stderr.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(err) = &self.proc_locks {
            notes.push(format!(
                "cannot read /proc/locks ({err}): only locks that holders' fdinfo shows are listed"
            ));
        }
        if self.unparsed_lines > 0 {
            notes.push(format!(
                "skipped {} line(s) of /proc/locks in an unknown format",
                self.unparsed_lines
            ));
        }
        if !self.denied.is_empty() {
            let mut pids: Vec<String> = self.denied.iter().take(5).map(u32::to_string).collect();
            if self.denied.len() > pids.len() {
                pids.push("...".to_owned());
            }
            let (processes, pid) = match self.denied.len() {
                1 => ("1 process".to_owned(), "pid"),
                count => (format!("{count} processes"), "pids"),
            };
            notes.push(format!(
                "permission denied reading the fds of {processes} ({pid} {}): locks they hold \
                 are listed without those holders, and locks only they show are missing",
                pids.join(", ")
            ));
        }
        if self.vanished > 0 {
            notes.push(format!(
                "{} process(es) or fd(s) went away during the scan",
                self.vanished
            ));
        }
        if self.uncompared > 0 {
            notes.push(format!(
                "kcmp refused {} comparison(s): open file descriptions with identical locks \
                 may be shown as one",
                self.uncompared
            ));
        }
        notes
    }
}

/// Which lock lines a snapshot keeps (by kind, device and inode, say): what it leaves out costs
/// no path lookup and no kcmp.
pub type Keep<'a> = dyn Fn(&LockLine) -> bool + Sync + 'a;

/// Takes the snapshot of every lock.
pub fn take() -> (Vec<Lock>, Blind) {
    take_where(&|_| true)
}

/// Takes the snapshot of the locks `keep` accepts.
///
/// The kernel writes /proc/locks a page per read, and between two pages the locks taken or
/// released elsewhere shift the rest of its list: under churn one read shows some locks twice
/// and skips others (measured: 100 held flocks read 4,866 times beside two processes locking
/// and unlocking 200 files each in a loop: 17,029 lines shown twice, 9,937 locks missed). Each
/// fdinfo is written whole, so the locks the fds show are counted from the fds, one per open
/// file description (one per process for POSIX locks); /proc/locks adds what no fd shows (a
/// holder whose fds cannot be read, a file held only by a mapping or a descriptor in flight),
/// one lock per distinct line that two of its reads show. Two such locks printed identically
/// would count as one: the price of never counting a line shown twice as two locks.
pub fn take_where(keep: &Keep<'_>) -> (Vec<Lock>, Blind) {
    let mut blind = Blind::default();
    let before = match read_listed(keep) {
        Ok((listed, unparsed)) => {
            blind.unparsed_lines = unparsed;
            Some(listed)
        }
        Err(err) => {
            blind.proc_locks = Some(err.to_string());
            None
        }
    };
    let (found, paths) = scan_fds(keep, &mut blind);
    let mut held = descriptions(found, &mut blind);
    let mut listed = match before {
        Some(before) => agreed_listing(before, &held, keep),
        None => Listing::new(),
    };

    let mut keys: Vec<LockKey> = held.keys().chain(listed.keys()).copied().collect();
    keys.sort_by_key(LockKey::order);
    keys.dedup();
    let mut processes = Processes::new(paths);
    let mut locks = Vec::new();
    for key in keys {
        let entry = listed.remove(&key);
        let descriptions = held.remove(&key).unwrap_or_default();
        let mut waiters_of = entry.as_ref().map(|entry| &entry.waiters);
        let hidden = entry.is_none();
        let mut add = |line: &LockLine, fds, hidden| {
            let mut lock = resolve(line, fds, hidden, &mut processes, &mut blind);
            // Which of several identical locks a waiter waits for, the lines do not say.
            if let Some(lines) = waiters_of.take() {
                lock.waiters = waiters(lines, &mut processes);
            }
            locks.push(lock);
        };
        match (descriptions.is_empty(), &entry) {
            (true, Some(entry)) => add(&entry.lock, Vec::new(), false),
            _ => {
                for held in descriptions {
                    add(&held.line, held.fds, hidden);
                }
            }
        }
    }
    (locks, blind)
}

/// One read of /proc/locks: each lock line `keep` accepts, once.
type Listing = HashMap<LockKey, ListedLock>;

fn read_listed(keep: &Keep<'_>) -> io::Result<(Listing, usize)> {
    let table = procfs::proc_locks()?;
    let listed = table
        .locks
        .into_iter()
        .filter(|entry| keep(&entry.lock))
        .map(|entry| (LockKey::of(&entry.lock), entry))
        .collect();
    Ok((listed, table.unparsed))
}

/// The second read of /proc/locks, and a third when needed, agreed with the first.
fn agreed_listing(before: Listing, held: &HashMap<LockKey, Vec<Held>>, keep: &Keep<'_>) -> Listing {
    let Ok((after, _)) = read_listed(keep) else {
        return before;
    };
    let third = || {
        read_listed(keep)
            .map(|(third, _)| third)
            .unwrap_or_default()
    };
    agree(before, after, |key| held.contains_key(key), third)
}

/// The lines of /proc/locks as its reads agree: a line two of three reads show, the third read
/// taken only when the first two disagree on a line no fd shows (`described`: a line an fd
/// shows is a lock whatever the reads say).
fn agree(
    mut before: Listing,
    mut after: Listing,
    described: impl Fn(&LockKey) -> bool,
    third: impl FnOnce() -> Listing,
) -> Listing {
    let keys: Vec<LockKey> = before.keys().chain(after.keys()).copied().collect();
    let disputed: Vec<LockKey> = keys
        .iter()
        .filter(|key| before.contains_key(key) != after.contains_key(key) && !described(key))
        .copied()
        .collect();
    let third = if disputed.is_empty() {
        Listing::new()
    } else {
        third()
    };
    let mut agreed = Listing::new();
    for key in keys {
        if disputed.contains(&key) && !third.contains_key(&key) {
            continue;
        }
        // The later read's waiters are the more recent.
        if let Some(entry) = after.remove(&key).or_else(|| before.remove(&key)) {
            agreed.insert(key, entry);
        }
    }
    agreed
}

fn waiters(lines: &[LockLine], processes: &mut Processes) -> Vec<Waiter> {
    lines
        .iter()
        .map(|waiter| Waiter {
            pid: waiter.pid,
            comm: processes.comm(waiter.pid),
            kind: waiter.kind,
            mode: waiter.mode,
            start: waiter.start,
            end: waiter.end,
        })
        .collect()
}

/// The lock line fields that one lock prints identically in /proc/locks and in every fdinfo
/// that shows it (both translate the pid into the same procfs's namespace).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct LockKey {
    kind: LockKind,
    mode: Mode,
    dev: u32,
    ino: u64,
    start: u64,
    end: Option<u64>,
    pid: i32,
}

impl LockKey {
    fn of(line: &LockLine) -> Self {
        Self {
            kind: line.kind,
            mode: line.mode,
            dev: line.dev(),
            ino: line.ino,
            start: line.start,
            end: line.end,
            pid: line.pid,
        }
    }

    /// By file, then range, then taker: the order the snapshot lists its locks in.
    fn order(&self) -> (u32, u64, u64, Option<u64>, i32, u8, u8) {
        let (dev, ino, start, end, pid) = (self.dev, self.ino, self.start, self.end, self.pid);
        (dev, ino, start, end, pid, self.kind as u8, self.mode as u8)
    }
}

/// One lock as the fdinfo of its holders shows it.
struct Held {
    line: LockLine,
    /// (pid, fd) of each holder.
    fds: Vec<(u32, i32)>,
}

/// The path of each (pid, fd) that holds a lock.
type Paths = HashMap<(u32, i32), OpenPath>;

/// Reads every process's fdinfo, and the paths of the fds that hold locks, on as many threads
/// as there are cores.
fn scan_fds(keep: &Keep<'_>, blind: &mut Blind) -> (Vec<FdLock>, Paths) {
    let pids = match procfs::pids() {
        Ok(pids) => pids,
        Err(err) => {
            blind
                .proc_locks
                .get_or_insert_with(|| format!("/proc: {err}"));
            return Default::default();
        }
    };
    let threads = thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = pids.len().div_ceil(threads).max(1);
    let results: Vec<(Vec<FdLock>, Paths, Vec<u32>, usize)> = thread::scope(|scope| {
        let workers: Vec<_> = pids
            .chunks(chunk)
            .map(|pids| {
                scope.spawn(move || {
                    let (mut found, mut paths) = (Vec::new(), Paths::new());
                    let (mut denied, mut vanished) = (Vec::new(), 0);
                    let mut buf = Vec::new();
                    for &pid in pids {
                        let before = found.len();
                        match procfs::read_fd_locks(pid, &mut found, &mut buf) {
                            Ok(()) => {}
                            Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
                                denied.push(pid)
                            }
                            Err(_) => vanished += 1,
                        }
                        let kept: Vec<FdLock> = found
                            .drain(before..)
                            .filter(|held| keep(&held.lock))
                            .collect();
                        found.extend(kept);
                        let mut fds: Vec<i32> =
                            found[before..].iter().map(|held| held.fd).collect();
                        fds.dedup();
                        if !fds.is_empty() {
                            paths.extend(
                                procfs::fd_paths(pid, fds)
                                    .into_iter()
                                    .map(|open| ((pid, open.fd), open)),
                            );
                        }
                    }
                    (found, paths, denied, vanished)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("fdinfo scan thread panicked"))
            .collect()
    });
    let (mut all, mut all_paths) = (Vec::new(), Paths::new());
    for (found, paths, denied, vanished) in results {
        all.extend(found);
        all_paths.extend(paths);
        blind.denied.extend(denied);
        blind.vanished += vanished;
    }
    blind.denied.sort_unstable();
    (all, all_paths)
}

/// Groups the fdinfo lock lines into locks: one per open file description for flock, OFD and
/// leases (told apart with kcmp), one per owner process for POSIX locks.
fn descriptions(found: Vec<FdLock>, blind: &mut Blind) -> HashMap<LockKey, Vec<Held>> {
    let mut by_line: HashMap<LockKey, Held> = HashMap::new();
    for found in found.into_iter().filter(|found| !found.lock.blocked) {
        let fd = (found.pid, found.fd);
        match by_line.entry(LockKey::of(&found.lock)) {
            Entry::Occupied(entry) => entry.into_mut().fds.push(fd),
            Entry::Vacant(entry) => {
                entry.insert(Held {
                    line: found.lock,
                    fds: vec![fd],
                });
            }
        }
    }
    by_line
        .into_iter()
        .map(|(key, held)| {
            let locks = if key.kind == LockKind::Posix || held.fds.len() == 1 {
                vec![held]
            } else {
                split_by_description(held.fds, blind)
                    .into_iter()
                    .map(|fds| Held {
                        line: held.line.clone(),
                        fds,
                    })
                    .collect()
            };
            (key, locks)
        })
        .collect()
}

/// Splits fds showing one identical lock line into groups on the same open file description.
/// The groups are kept in kcmp's order of their first fd, so that each fd costs O(log groups)
/// kcmp calls rather than one per group.
fn split_by_description(fds: Vec<(u32, i32)>, blind: &mut Blind) -> Vec<Vec<(u32, i32)>> {
    let mut groups: Vec<Vec<(u32, i32)>> = Vec::new();
    'fds: for fd in fds {
        loop {
            match find_description(&groups, fd) {
                Ok(Ok(index)) => groups[index].push(fd),
                Ok(Err(index)) => groups.insert(index, vec![fd]),
                Err((index, err)) => {
                    // A process or fd gone fails kcmp too: which one, this fd or the group's
                    // first? Any other failure (no ptrace access, no kcmp in this kernel) is
                    // a pair kcmp may not compare.
                    let failed = if is_gone(&err) {
                        procfs::compare_descriptions(fd, fd).err()
                    } else {
                        Some(err)
                    };
                    match failed {
                        Some(err) if is_gone(&err) => blind.vanished += 1,
                        Some(_) => {
                            blind.uncompared += 1;
                            groups[index].push(fd);
                        }
                        None => {
                            // The group's first fd went away: the next one stands for the group.
                            blind.vanished += 1;
                            groups[index].remove(0);
                            if groups[index].is_empty() {
                                groups.remove(index);
                            }
                            continue;
                        }
                    }
                }
            }
            continue 'fds;
        }
    }
    groups
}

/// kcmp's error for a process or fd that went away.
fn is_gone(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ESRCH | libc::EBADF))
}

/// Binary search over the groups' first fds: `Ok(index)` of the group on `fd`'s description,
/// or `Err(index)` where a new group goes; the outer `Err` names the group kcmp failed on.
#[allow(clippy::type_complexity)]
fn find_description(
    groups: &[Vec<(u32, i32)>],
    fd: (u32, i32),
) -> Result<Result<usize, usize>, (usize, io::Error)> {
    let (mut low, mut high) = (0, groups.len());
    while low < high {
        let middle = (low + high) / 2;
        match procfs::compare_descriptions(fd, groups[middle][0]) {
            Ok(Ordering::Equal) => return Ok(Ok(middle)),
            Ok(Ordering::Less) => high = middle,
            Ok(Ordering::Greater) => low = middle + 1,
            Err(err) => return Err((middle, err)),
        }
    }
    Ok(Err(low))
}

/// Ancestors looked through for a holder's inheritance.
const ANCESTORS: usize = 16;

/// Marks the holders of a description that got it by inheritance, as far as /proc can tell:
/// those with an ancestor (by parent pid) that is the lock's taker or another holder of the
/// same description. A holder whose parent exited (reparented to init or a subreaper) cannot
/// be told so.
fn mark_inherited(holders: &mut [Holder], taker: i32, processes: &mut Processes) {
    let sharing: Vec<u32> = holders
        .iter()
        .map(|holder| holder.pid)
        .chain(u32::try_from(taker).ok().filter(|&pid| pid > 0))
        .collect();
    for holder in holders.iter_mut() {
        let mut pid = holder.pid;
        for _ in 0..ANCESTORS {
            let Some(parent) = processes.get(pid).map(|info| info.ppid) else {
                break;
            };
            if parent <= 1 {
                break;
            }
            if sharing.contains(&parent) {
                holder.inherited_from = Some(parent);
                break;
            }
            pid = parent;
        }
    }
}

/// Builds the lock from its line and the fds that hold it.
fn resolve(
    line: &LockLine,
    fds: Vec<(u32, i32)>,
    hidden: bool,
    processes: &mut Processes,
    blind: &mut Blind,
) -> Lock {
    let mut holders: Vec<Holder> = Vec::new();
    let own_cgroup = processes.own_cgroup.clone();
    for (pid, fd) in fds {
        let Some(info) = processes.get(pid) else {
            blind.vanished += 1;
            continue;
        };
        let cgroup = info
            .cgroup
            .clone()
            .filter(|cgroup| Some(cgroup) != own_cgroup.as_ref());
        holders.push(Holder {
            pid,
            comm: info.comm.clone(),
            fd,
            ns_pid: info.ns_pid,
            cgroup,
            start_time: info.start_time,
            inherited_from: None,
        });
    }
    holders.sort_by_key(|holder| (holder.pid, holder.fd));
    if line.kind != LockKind::Posix {
        mark_inherited(&mut holders, line.pid, processes);
    }
    let open = holders.iter().find_map(|holder| {
        let open = processes.paths.get(&(holder.pid, holder.fd))?;
        Some((holder.pid, open.clone()))
    });
    let host_path = open
        .as_ref()
        .and_then(|(pid, open)| match procfs::mount_view(*pid)? {
            procfs::MountView::Own => None,
            procfs::MountView::Other(view) => {
                processes
                    .host_paths
                    .host_path(*pid, view, open, line.dev(), line.ino)
            }
        });
    let command = processes.comm(line.pid);
    let taker = match Taker::judge(line.pid, &holders) {
        // Its own fds were not seen: whether it holds the lock cannot be told.
        Taker::Gone
            if u32::try_from(line.pid)
                .is_ok_and(|pid| blind.denied.binary_search(&pid).is_ok()) =>
        {
            Taker::Unknown
        }
        judged => judged,
    };
    let (major, minor) = (line.major, line.minor);
    Lock {
        kind: line.kind,
        mode: line.mode,
        start: line.start,
        end: line.end,
        dev: format!("{major}:{minor}"),
        kernel_dev: line.dev(),
        ino: line.ino,
        deleted: open.as_ref().is_some_and(|(_, open)| open.deleted),
        path: open.map(|(_, open)| open.path),
        host_path,
        pid: line.pid,
        command,
        orphan: is_orphan(line.kind, taker, &holders),
        taker,
        hidden,
        holders,
        waiters: Vec::new(),
    }
}

/// What the scan learnt about processes: /proc/PID/status, read once per process, and the
/// paths of the fds that hold locks.
struct Processes {
    known: HashMap<u32, Option<ProcessInfo>>,
    own_cgroup: Option<String>,
    paths: Paths,
    host_paths: HostPaths,
}

impl Processes {
    fn new(paths: Paths) -> Self {
        Self {
            known: HashMap::new(),
            own_cgroup: ProcessInfo::read(std::process::id()).and_then(|me| me.cgroup),
            paths,
            host_paths: HostPaths::default(),
        }
    }

    /// A live process (not a zombie).
    fn get(&mut self, pid: u32) -> Option<&ProcessInfo> {
        match self.known.entry(pid) {
            Entry::Occupied(entry) => entry.into_mut().as_ref(),
            Entry::Vacant(entry) => entry
                .insert(ProcessInfo::read(pid).filter(|info| !info.zombie))
                .as_ref(),
        }
    }

    /// The command of a live process named by a recorded pid.
    fn comm(&mut self, pid: i32) -> Option<String> {
        let pid = u32::try_from(pid).ok().filter(|&pid| pid > 0)?;
        self.get(pid).map(|info| info.comm.clone())
    }
}

/// A lock as a scan builds it, for unit tests: the whole file, `recorded` as its taker's pid,
/// held through fd 3 of each of `holders`, judged as [`take`] judges.
#[cfg(test)]
pub fn example(kind: LockKind, mode: Mode, recorded: i32, holders: &[u32]) -> Lock {
    let holders: Vec<Holder> = holders
        .iter()
        .map(|&pid| Holder {
            pid,
            comm: "worker".to_owned(),
            fd: 3,
            ns_pid: None,
            cgroup: None,
            start_time: None,
            inherited_from: None,
        })
        .collect();
    let taker = Taker::judge(recorded, &holders);
    Lock {
        kind,
        mode,
        start: 0,
        end: None,
        dev: "254:0".to_owned(),
        kernel_dev: aimlock_common::kernel_dev(254, 0),
        ino: 42,
        path: None,
        host_path: None,
        deleted: false,
        pid: recorded,
        command: (taker == Taker::Holding).then(|| "worker".to_owned()),
        orphan: is_orphan(kind, taker, &holders),
        taker,
        hidden: false,
        holders,
        waiters: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holders(pids: &[u32]) -> Vec<Holder> {
        example(LockKind::Flock, Mode::Write, 0, pids).holders
    }

    #[test]
    fn a_taker_counts_as_holding_only_while_it_holds_the_description() {
        assert_eq!(Taker::judge(100, &holders(&[100, 101])), Taker::Holding);
        // Exited, closed its own fd, or a pid since reused: all the same to the lock.
        assert_eq!(Taker::judge(100, &holders(&[101])), Taker::Gone);
        assert_eq!(Taker::judge(-1, &holders(&[101])), Taker::Unknown);
        assert_eq!(Taker::judge(0, &holders(&[101])), Taker::Unknown);
    }

    #[test]
    fn only_a_description_lock_with_holders_outlives_its_taker() {
        let child = holders(&[101]);
        assert!(is_orphan(LockKind::Flock, Taker::Gone, &child));
        assert!(is_orphan(LockKind::Ofd, Taker::Gone, &child));
        assert!(!is_orphan(LockKind::Posix, Taker::Gone, &child));
        assert!(!is_orphan(LockKind::Flock, Taker::Gone, &[]));
        assert!(!is_orphan(LockKind::Flock, Taker::Holding, &child));
        assert!(!is_orphan(LockKind::Ofd, Taker::Unknown, &child));
    }

    fn listing(lines: &[(u64, i32)]) -> Listing {
        lines
            .iter()
            .map(|&(ino, pid)| {
                let text = format!("1: FLOCK  ADVISORY  WRITE {pid} fe:00:{ino} 0 EOF");
                let lock = LockLine::parse(&text).expect("a lock line");
                let listed = ListedLock {
                    lock,
                    waiters: Vec::new(),
                };
                (LockKey::of(&listed.lock), listed)
            })
            .collect()
    }

    fn inodes(listing: &Listing) -> Vec<u64> {
        let mut inodes: Vec<u64> = listing.keys().map(|key| key.ino).collect();
        inodes.sort_unstable();
        inodes
    }

    #[test]
    fn a_lock_one_read_skips_is_kept_when_the_third_read_shows_it() {
        // Read 2 skips lock 20 (the list shifted between two pages); read 1 showed a lock 40
        // released since.
        let before = listing(&[(10, 1), (20, 2), (30, 3), (40, 4)]);
        let after = listing(&[(10, 1), (30, 3)]);
        let third = listing(&[(10, 1), (20, 2), (30, 3)]);
        assert_eq!(
            inodes(&agree(before, after, |_| false, || third)),
            [10, 20, 30]
        );
    }

    #[test]
    fn reads_that_agree_or_that_the_fds_vouch_for_need_no_third_read() {
        let no_third = || -> Listing { panic!("a third read") };
        let agreed = agree(
            listing(&[(10, 1)]),
            listing(&[(10, 1)]),
            |_| false,
            no_third,
        );
        assert_eq!(inodes(&agreed), [10]);
        // Taken between the reads, and seen by the fd scan.
        let agreed = agree(listing(&[]), listing(&[(10, 1)]), |_| true, no_third);
        assert_eq!(inodes(&agreed), [10]);
    }
}
