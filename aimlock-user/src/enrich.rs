//! What only /proc knows about an event: paths, namespace pids, containers, holders.

use aimlock_common::FileName;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::{
    clock::Clock,
    decode::{LockOp, comm_str},
    events::{
        self, DeadlockStep, EventKind, EventLine, LineageStep, LockRef, ProcRef, ReleaseReason,
        UnknownWhy, this_host,
    },
    file_paths::{FileKey, FilePaths, PathOf, Viewer},
    fold::Summary,
    lock_table::{self, Taker},
    procfs::{self, MountView, ProcessInfo},
    tracker::{Actor, Blocker, CycleStep, END_OF_FILE, LockId, Output, Step, Via, Why},
};

/// Adds what only /proc knows (paths, namespace pids, containers, holders), with caches so that
/// a burst of events on one file costs one lookup.
#[derive(Default)]
pub struct Enricher {
    processes: HashMap<u32, Option<ProcessInfo>>,
    paths: FilePaths,
    /// "MAJ:MIN" by kernel device number.
    devices: HashMap<u32, String>,
    /// Command names by pid, with the bytes they were made from.
    comms: HashMap<u32, ([u8; 16], String)>,
    /// Which mounts each process sees, read once per process while it runs.
    mount_views: HashMap<u32, MountView>,
    /// Pids whose exit record has been read but whose exit line has not been written yet: a
    /// record of theirs without a start time from the kernel may be another process's, that
    /// got the pid since.
    exited: HashSet<u32>,
}

impl Enricher {
    pub fn forget(&mut self, pid: u32) {
        self.exited.remove(&pid);
        self.processes.remove(&pid);
        self.paths.forget_process(pid);
        self.comms.remove(&pid);
        self.mount_views.remove(&pid);
    }

    /// Whose view of paths the lines of `pid` give.
    fn viewer(&mut self, pid: u32) -> Viewer {
        let view = match self.mount_views.get(&pid) {
            Some(view) => Some(*view),
            None => procfs::mount_view(pid).inspect(|view| {
                self.mount_views.insert(pid, *view);
            }),
        };
        viewer_of(view)
    }

    fn comm(&mut self, actor: &Actor) -> String {
        let cached = self
            .comms
            .entry(actor.pid)
            .or_insert_with(|| (actor.comm, comm_str(&actor.comm)));
        if cached.0 != actor.comm {
            *cached = (actor.comm, comm_str(&actor.comm));
        }
        cached.1.clone()
    }

    fn device(&mut self, dev: u32) -> String {
        self.devices
            .entry(dev)
            .or_insert_with(|| {
                let (major, minor) = aimlock_common::kernel_dev_split(dev);
                format!("{major}:{minor}")
            })
            .clone()
    }

    /// Reads the process of a lock record while it most likely still runs; where it is gone
    /// already, the namespace pid its record carried still names it. A record whose kernel
    /// could not tell when its process started gets the start time /proc gave.
    pub fn process_of(&mut self, op: &mut LockOp) {
        // Where the kernel did not tell, a process that exited may have left its pid to
        // another: /proc says which one runs now.
        let started = match op.start_time {
            0 if self.exited.contains(&op.pid) => procfs::start_time(op.pid),
            0 => None,
            known => Some(known),
        };
        // What was read of an earlier process with this pid says nothing of this one.
        if let Some(started) = started
            && let Some(Some(info)) = self.processes.get(&op.pid)
            && info.start_time.is_some_and(|start| start != started)
        {
            self.forget(op.pid);
        }
        let info = self.processes.entry(op.pid).or_insert_with(|| {
            ProcessInfo::read(op.pid).or_else(|| {
                (op.ns_pid != 0 && op.ns_pid != op.pid).then(|| ProcessInfo {
                    pid: op.pid,
                    ns_pid: Some(op.ns_pid),
                    ..ProcessInfo::default()
                })
            })
        });
        if let Some(info) = info {
            if info.ns_pid.is_none() && op.ns_pid != 0 && op.ns_pid != op.pid {
                info.ns_pid = Some(op.ns_pid);
            }
            if op.start_time == 0 {
                op.start_time = info.start_time.unwrap_or(0);
            }
        }
    }

    /// When a process started, where its kernel could not tell (before 5.11): as its earlier
    /// records were given it, or as /proc still shows it (an exiting one until it is reaped).
    pub fn start_time_of(&mut self, pid: u32) -> u64 {
        self.process(pid)
            .and_then(|info| info.start_time)
            .unwrap_or(0)
    }

    /// Notes a process's exit record: until its exit line is written (and the pid forgotten),
    /// records of the pid without a start time are checked against /proc.
    pub fn exited(&mut self, pid: u32) {
        self.exited.insert(pid);
    }

    pub fn process(&mut self, pid: u32) -> Option<&ProcessInfo> {
        self.processes
            .entry(pid)
            .or_insert_with(|| ProcessInfo::read(pid))
            .as_ref()
    }

    /// Learns the path of the file a lock record is about, while its process most likely
    /// still runs.
    pub fn learn_file(&mut self, op: &LockOp) {
        let viewer = self.viewer(op.pid);
        self.paths.learn(
            op.pid,
            file_key(op.dev, op.ino, op.file.generation),
            &op.file,
            viewer,
        );
    }

    pub fn line(&mut self, output: &Output, clock: &Clock) -> EventLine {
        let (at, actor, lock) = match output {
            Output::Acquire {
                at, actor, lock, ..
            }
            | Output::Wait {
                at, actor, lock, ..
            }
            | Output::Release {
                at, actor, lock, ..
            }
            | Output::Fail {
                at, actor, lock, ..
            }
            | Output::WaitAbandoned {
                at, actor, lock, ..
            }
            | Output::Inherit {
                at, actor, lock, ..
            } => (*at, *actor, Some(*lock)),
            Output::Exit { at, actor, .. } => (*at, *actor, None),
            Output::Orphan { at, lock, held, .. }
            | Output::OrphanEnd { at, lock, held, .. }
            | Output::Held { at, lock, held, .. } => (*at, held.taker, Some(*lock)),
            Output::Deadlock { at, cycle } => return self.deadlock_line(*at, cycle, clock),
        };
        // The file as the record behind the output named it.
        let file = match output {
            Output::Acquire { file, .. }
            | Output::Wait { file, .. }
            | Output::Release { file, .. }
            | Output::Fail { file, .. }
            | Output::OrphanEnd { file, .. } => *file,
            _ => FileName::NONE,
        };
        // The kernel's table, where the output comes from it, names the holders and the path
        // exactly (through the holders' fds), whoever the taker was.
        let kernel = match output {
            Output::Orphan { kernel, .. } | Output::Held { kernel, .. } => Some(kernel),
            _ => None,
        };
        // Whose records named the file: an inheritor's own records have not (yet).
        let viewer = match output {
            Output::Inherit { held, .. } => held.taker.pid,
            _ => actor.pid,
        };
        let mut line = EventLine {
            ts: clock.format(at),
            host: Some(this_host().into()),
            // Pid 0: the kernel does not record who took it (an OFD lock found in its table).
            pid: (actor.pid != 0).then_some(actor.pid),
            start_time: known(actor.start_time),
            comm: Some(self.comm(&actor)).filter(|comm| !comm.is_empty()),
            ..Default::default()
        };
        // A taker the kernel's table judged gone may have left its pid to another process.
        let taker_gone = kernel.is_some_and(|kernel| kernel.taker != Taker::Holding);
        if !taker_gone
            && let Some(info) = self.process(actor.pid).filter(|info| info.ns_pid.is_some())
        {
            line.ns_pid = info.ns_pid;
            line.cgroup = info.cgroup.clone();
        }
        if let Some(lock) = lock {
            line.kind = Some(lock.kind);
            line.dev = Some(self.device(lock.dev));
            line.ino = Some(lock.ino);
            line.generation = Some(lock.generation).filter(|&generation| generation != 0);
            match kernel {
                Some(kernel) => {
                    if let Some(path) = &kernel.path {
                        // The holders' view of the path, for the lines to come when the taker
                        // is gone.
                        let key = file_key(lock.dev, lock.ino, lock.generation);
                        self.paths
                            .remember(key, path, kernel.deleted, kernel.host_path.as_deref());
                    }
                    line.path = kernel.path.clone();
                    line.host_path = kernel.host_path.clone();
                    line.deleted = kernel.deleted.then_some(true);
                    line.holders = Some(kernel.holders.iter().map(proc_ref).collect());
                }
                None => match self.path_seen_by(viewer, &lock, &file) {
                    PathOf::Known {
                        path,
                        deleted,
                        host_path,
                    } => {
                        line.path = Some(path);
                        line.deleted = deleted.then_some(true);
                        line.host_path = host_path;
                    }
                    PathOf::Unknown { reason, name } => {
                        line.path_unknown = Some(reason.to_owned());
                        line.name = name;
                    }
                },
            }
        }
        let range = |line: &mut EventLine, start: i64, end: i64| {
            line.start = Some(start.max(0) as u64);
            line.end = Some((end != END_OF_FILE).then_some(end.max(0) as u64));
        };
        match output {
            Output::Acquire {
                mode,
                start,
                end,
                wait_ns,
                ..
            } => {
                line.event = Some(EventKind::Acquire);
                line.mode = Some(*mode);
                line.wait_ns = *wait_ns;
                range(&mut line, *start, *end);
            }
            Output::Wait {
                mode,
                start,
                end,
                blockers,
                ..
            } => {
                line.event = Some(EventKind::Wait);
                line.mode = Some(*mode);
                range(&mut line, *start, *end);
                line.blockers = Some(blockers.iter().map(blocker).collect());
            }
            Output::Release {
                held,
                start,
                end,
                reason,
                at,
                ..
            } => {
                line.event = Some(EventKind::Release);
                line.mode = Some(held.mode);
                line.reason = Some(*reason);
                line.held_ns = held.since_ns.map(|since| at.saturating_sub(since));
                range(&mut line, *start, *end);
            }
            Output::Fail {
                mode,
                start,
                end,
                errno,
                blockers,
                ..
            } => {
                line.event = Some(EventKind::Fail);
                line.mode = Some(*mode);
                line.errno = Some(errno_name(*errno));
                range(&mut line, *start, *end);
                line.blockers = Some(blockers.iter().map(blocker).collect());
            }
            Output::WaitAbandoned {
                mode,
                start,
                end,
                blockers,
                ..
            } => {
                // A wait ended by the waiter's exit: a failure without an errno.
                line.event = Some(EventKind::Fail);
                line.mode = Some(*mode);
                line.reason = Some(ReleaseReason::Exit);
                range(&mut line, *start, *end);
                line.blockers = Some(blockers.iter().map(blocker).collect());
            }
            Output::Exit { locks, .. } => {
                line.event = Some(EventKind::Exit);
                line.locks = Some(*locks);
            }
            Output::Orphan {
                held,
                taker_exit,
                lineage,
                ..
            } => {
                line.event = Some(EventKind::Orphan);
                line.mode = Some(held.mode);
                line.taker_exit = taker_exit.map(|at| clock.format(at));
                range(&mut line, held.start, held.end);
                line.lineage = Some(
                    lineage
                        .iter()
                        .map(|step| lineage_step(step, clock))
                        .collect(),
                );
            }
            Output::Inherit {
                held, from, via, ..
            } => {
                line.event = Some(EventKind::Inherit);
                line.mode = Some(held.mode);
                range(&mut line, held.start, held.end);
                line.from = Some(self.proc_ref(from, None));
                line.via = Some(via_name(*via).0);
            }
            Output::Held { held, kernel, .. } => {
                line.event = Some(EventKind::Held);
                line.mode = Some(held.mode);
                line.orphan = Some(kernel.orphan);
                range(&mut line, held.start, held.end);
            }
            Output::OrphanEnd {
                at,
                by,
                held,
                taker_exit,
                reason,
                ..
            } => {
                line.event = Some(EventKind::OrphanEnd);
                line.mode = Some(held.mode);
                line.reason = Some(*reason);
                line.held_ns = held.since_ns.map(|since| at.saturating_sub(since));
                line.orphan_ns = taker_exit.map(|exit| at.saturating_sub(exit));
                line.taker_exit = taker_exit.map(|exit| clock.format(exit));
                range(&mut line, held.start, held.end);
                line.by = Some(self.proc_ref(by, None));
            }
            // Written whole above.
            Output::Deadlock { .. } => {}
        }
        line
    }

    /// A `summary` line: its first hold's acquire, with the count and durations of its holds.
    pub fn summary_line(&mut self, summary: &Summary, clock: &Clock) -> EventLine {
        let mut line = self.line(
            &Output::Acquire {
                at: summary.at,
                actor: summary.actor,
                lock: summary.lock,
                mode: summary.mode,
                start: 0,
                end: END_OF_FILE,
                wait_ns: None,
                file: summary.file,
                first: true,
            },
            clock,
        );
        line.event = Some(EventKind::Summary);
        // Its holds may have had different ranges.
        (line.start, line.end) = (None, None);
        line.holds = Some(summary.holds);
        line.held_ns = Some(summary.held_ns);
        line.longest_ns = Some(summary.longest_ns);
        line
    }

    /// The path of a lock's file as `pid` sees it, as far as its records have shown it.
    fn path_seen_by(&self, pid: u32, lock: &LockId, file: &FileName) -> PathOf {
        self.paths.path(
            pid,
            file_key(lock.dev, lock.ino, lock.generation),
            file,
            // As seen while its records were read: a process gone by now is not looked up
            // again (its pid may be another's).
            viewer_of(self.mount_views.get(&pid).copied()),
        )
    }

    fn deadlock_line(&mut self, at: u64, cycle: &[CycleStep], clock: &Clock) -> EventLine {
        // The path of each file waited for, as its waiter's record named it.
        let waited: Vec<Option<String>> = cycle
            .iter()
            .map(
                |step| match self.path_seen_by(step.actor.pid, &step.waits_for.lock, &step.file) {
                    PathOf::Known { path, .. } => Some(path),
                    PathOf::Unknown { .. } => None,
                },
            )
            .collect();
        let mut lock_ref = |lock: &LockId, mode, start: i64, end: i64, path| LockRef {
            kind: lock.kind,
            mode,
            dev: self.device(lock.dev),
            ino: lock.ino,
            path,
            start: start.max(0) as u64,
            end: (end != END_OF_FILE).then_some(end.max(0) as u64),
        };
        let steps = cycle
            .iter()
            .enumerate()
            .map(|(index, step)| {
                let (held_lock, held) = &step.holds;
                let wanted = &step.waits_for;
                // What a thread holds is what the thread before it waits for.
                let before = (index + cycle.len() - 1) % cycle.len();
                DeadlockStep {
                    pid: step.actor.pid,
                    start_time: known(step.actor.start_time),
                    tid: step.actor.tid,
                    comm: comm_str(&step.actor.comm),
                    holds: lock_ref(
                        held_lock,
                        held.mode,
                        held.start,
                        held.end,
                        waited[before].clone(),
                    ),
                    waits_for: lock_ref(
                        &wanted.lock,
                        wanted.mode,
                        wanted.start,
                        wanted.end,
                        waited[index].clone(),
                    ),
                }
            })
            .collect();
        EventLine {
            event: Some(EventKind::Deadlock),
            ts: clock.format(at),
            cycle: Some(steps),
            ..Default::default()
        }
    }

    fn proc_ref(&mut self, actor: &Actor, fd: Option<i32>) -> ProcRef {
        let info = self.process(actor.pid).cloned();
        ProcRef {
            pid: actor.pid,
            start_time: known(actor.start_time),
            comm: comm_str(&actor.comm),
            ns_pid: info.as_ref().and_then(|info| info.ns_pid),
            fd,
            cgroup: info.and_then(|info| info.ns_pid.and(info.cgroup)),
        }
    }
}

fn blocker(blocker: &Blocker) -> events::Blocker {
    events::Blocker {
        pid: blocker.holder.pid,
        start_time: known(blocker.holder.start_time),
        comm: comm_str(&blocker.holder.comm),
        orphan: blocker.orphan.then_some(true),
    }
}

/// A holder as the kernel's table named it.
fn lineage_step(step: &Step, clock: &Clock) -> LineageStep {
    let (via, why) = via_name(step.via);
    LineageStep {
        pid: step.pid,
        comm: comm_str(&step.comm),
        via,
        from: (step.from != 0).then_some(step.from),
        ts: step.at.map(|at| clock.format(at)),
        why,
    }
}

fn via_name(via: Via) -> (events::Via, Option<UnknownWhy>) {
    match via {
        Via::Fork => (events::Via::Fork, None),
        Via::Exec => (events::Via::Exec, None),
        Via::UnixSocket => (events::Via::UnixSocket, None),
        Via::Unknown(Why::BeforeStart) => (events::Via::Unknown, Some(UnknownWhy::BeforeStart)),
        Via::Unknown(Why::NotSeen) => (events::Via::Unknown, Some(UnknownWhy::NotSeen)),
    }
}

fn proc_ref(holder: &lock_table::Holder) -> ProcRef {
    ProcRef {
        pid: holder.pid,
        start_time: holder.start_time,
        comm: holder.comm.clone(),
        ns_pid: holder.ns_pid,
        fd: Some(holder.fd),
        cgroup: holder.ns_pid.and(holder.cgroup.clone()),
    }
}

/// A start time the tracker knows (0: not known).
fn known(start_time: u64) -> Option<u64> {
    (start_time != 0).then_some(start_time)
}

/// "EAGAIN" for 11, and so on. The kernel's internal restart codes (ERESTARTSYS and its kin,
/// include/linux/errno.h) are what a wait interrupted by a signal returns inside the kernel; the
/// caller sees EINTR, or its call restarted.
pub fn errno_name(errno: i32) -> String {
    const ERESTARTSYS: i32 = 512;
    const ERESTART_RESTARTBLOCK: i32 = 516;
    if (ERESTARTSYS..=ERESTART_RESTARTBLOCK).contains(&errno) {
        return "EINTR".to_owned();
    }
    format!("{:?}", nix::errno::Errno::from_raw(errno))
}

fn file_key(dev: u32, ino: u64, generation: u32) -> FileKey {
    FileKey {
        dev,
        ino,
        generation,
    }
}
/// Whose view of paths a process's lines give, from the mounts it was seen with (`None`: gone).
fn viewer_of(view: Option<MountView>) -> Viewer {
    match view {
        Some(MountView::Own) => Viewer::Host,
        Some(MountView::Other(view)) => Viewer::Container(view),
        None => Viewer::Gone,
    }
}
