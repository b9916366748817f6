//! The lock table: a pure state machine, decoded kernel inputs in, lock events out, no I/O.
//!
//! Inputs are first put back in timestamp order (the ring delivers records in the order CPUs
//! reserved them, which can differ slightly from the order they happened), then applied:
//! - the table is keyed by (dev, ino, owner, kind) and holds the ranges each owner has locked;
//! - deferred attempts of one blocking call become one `wait` then one `acquire` with `wait_ns`;
//! - an exit opens a grace period during which the exiting process closes its files; locks it
//!   took that are still held when the grace period ends are suspected of having outlived it,
//!   and the kernel's own table (a [`KernelView`], applied in time order like any input) decides:
//!   an orphan with the holders of its open file description, or a release the ring lost;
//! - a kernel view also seeds the table at start (`held`) and reconciles it after lost records:
//!   what the table holds and the kernel does not is released (`reason: lost`), what the kernel
//!   holds and the table lacks is added (`held`). Files changed while the view was taken are left
//!   alone: the records about them say what happened;
//! - every wait and refusal names who holds the locks in its way (its `blockers`), and waits
//!   that come back to where they started are a `deadlock`, said once ([`waits`]);
//! - the forks, execs and descriptor passing of the processes that may hold locks say how each
//!   holder of an orphan came to hold it (its `lineage`), and an `inherit` when a flock or OFD
//!   lock's description reaches another process ([`lineage`]).

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, hash_map::Entry},
};

use aimlock_common::{FILE_LOCK_DEFERRED, FileName, fl_flags, fl_type};
// The tracker sits on the hot path of every event: FxHash, not SipHash. Its keys are kernel
// values, not attacker-chosen strings.
use indexmap::{IndexMap, map::Entry as TableEntry};
use rustc_hash::{FxBuildHasher, FxHashMap as HashMap, FxHashSet as HashSet};
use smallvec::SmallVec;

use crate::{
    decode::{Input, LockOp},
    events::{LockKind, Mode, ReleaseReason},
    lock_table::{self, Taker},
};

mod lineage;
mod pending;
mod waits;

pub use lineage::{Step, Via, Why};
pub use waits::{Blocker, Blockers, CycleStep, Request};

/// How long an input waits for possibly earlier inputs from other CPUs.
pub const REORDER_WINDOW_NS: u64 = 10_000_000;
/// How long a kernel view waits for the ring's reader to catch up with its end: past that, it
/// applies as it is.
const VIEW_WAIT_MAX_NS: u64 = 2_000_000_000;
/// How long after its exit event a process may still be closing its files. Generous: on a loaded
/// machine the end of an exit can wait long for a CPU, and a lock released late in it is not an
/// orphan.
pub const EXIT_GRACE_NS: u64 = 1_000_000_000;
/// `OFFSET_MAX`: a range that ends here runs to the end of the file.
pub const END_OF_FILE: i64 = i64::MAX;
/// Kernel views in which a suspected orphan may show no holder (its last holder in the middle of
/// exiting) before it is declared an orphan all the same (a description no process can be seen
/// to hold: an fd in flight in a unix socket).
pub const ORPHAN_LOOKS: u8 = 5;
/// Owners at or below this are not kernel pointers but numbers the tracker gives the locks it
/// found in a kernel view, whose owner it cannot know until a record names it.
const SEEDED_OWNERS: u64 = u32::MAX as u64;

/// The room of a process's emptied set of locks taken that is kept for its next lock.
const TAKEN_KEPT_EMPTY: usize = 8;

/// Who did something: the thread group id in the initial namespace and its command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Actor {
    pub pid: u32,
    pub tid: u32,
    pub comm: [u8; 16],
    /// When the process started (`procfs::start_time`), 0 when not known: with the pid, it
    /// names the process apart from a later one that reuses the pid.
    pub start_time: u64,
}

impl Actor {
    /// A process, by its main thread.
    pub fn process(pid: u32, comm: [u8; 16], start_time: u64) -> Self {
        Self {
            pid,
            tid: pid,
            comm,
            start_time,
        }
    }

    /// The thread that made a lock call.
    fn of_op(op: &LockOp) -> Self {
        Self {
            pid: op.pid,
            tid: op.tid,
            comm: op.comm,
            start_time: op.start_time,
        }
    }

    /// Whether both name one process: the same pid, started at the same time where both
    /// start times are known (a pid reused after an exit is another process).
    pub fn same_process(&self, other: &Actor) -> bool {
        self.pid == other.pid
            && (self.start_time == 0
                || other.start_time == 0
                || self.start_time == other.start_time)
    }
}

/// Which lock an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LockId {
    pub dev: u32,
    pub ino: u64,
    /// `i_generation`: a later file that reuses the inode number is another lock file (0 where
    /// the kernel's record does not say, and for locks found in a kernel view until a record
    /// names them).
    pub generation: u32,
    /// `fl_owner`: the open file description (flock, OFD, lease) or the files_struct (POSIX).
    pub owner: u64,
    pub kind: LockKind,
}

impl LockId {
    /// The lock a record's call is about.
    fn of_op(op: &LockOp) -> Self {
        Self {
            dev: op.dev,
            ino: op.ino,
            generation: op.file.generation,
            owner: op.owner,
            kind: op.kind,
        }
    }
}

/// A lock of a file whose device and inode the index it is kept in says: half a [`LockId`],
/// which matters with a hundred thousand files locked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileLock {
    owner: u64,
    generation: u32,
    kind: LockKind,
}

impl FileLock {
    fn of(id: &LockId) -> Self {
        Self {
            owner: id.owner,
            generation: id.generation,
            kind: id.kind,
        }
    }

    fn id(self, (dev, ino): (u32, u64)) -> LockId {
        LockId {
            dev,
            ino,
            generation: self.generation,
            owner: self.owner,
            kind: self.kind,
        }
    }
}

/// A range held by one owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub start: i64,
    pub end: i64,
    pub mode: Mode,
    /// None: held before the tracer saw it taken (found in a kernel view).
    pub since_ns: Option<u64>,
    /// Pid 0 when the kernel does not record it (OFD locks found in a kernel view).
    pub taker: Actor,
    pub orphan: Orphan,
}

/// Whether a lock has outlived its taker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Orphan {
    No,
    /// Its taker's exit grace ended while it was held: the next kernel view decides.
    Suspect {
        taker_exit: u64,
        looks: u8,
    },
    /// An `orphan` line was written. `taker_exit` is None when the taker was gone before the
    /// tracer started.
    Yes {
        taker_exit: Option<u64>,
    },
}

/// The kernel's lock table as a scan of /proc showed it, from the time given to
/// [`Tracker::push_scan_begin`] to `end_ns` (CLOCK_MONOTONIC).
#[derive(Debug)]
pub struct KernelView {
    pub end_ns: u64,
    /// False when /proc/locks could not be read: the view only ends the scan.
    pub complete: bool,
    /// The locks the trace is about, and the other locks on the files the table has locks on
    /// (`in_scope` false): those tell the table's locks apart, and are never added to it.
    pub locks: Vec<ViewedLock>,
}

#[derive(Debug)]
pub struct ViewedLock {
    pub lock: lock_table::Lock,
    pub in_scope: bool,
}

/// What the tracker tells the sinks. `at` is the event's time (CLOCK_MONOTONIC, ns).
#[derive(Clone, Debug)]
pub enum Output {
    /// `first`: its owner held nothing of `lock` before the call (see [`Tracker::mark_stretch`]).
    Acquire {
        at: u64,
        actor: Actor,
        lock: LockId,
        mode: Mode,
        start: i64,
        end: i64,
        wait_ns: Option<u64>,
        file: FileName,
        first: bool,
    },
    /// A blocking attempt was queued behind a conflicting lock, held by `blockers`.
    Wait {
        at: u64,
        actor: Actor,
        lock: LockId,
        mode: Mode,
        start: i64,
        end: i64,
        file: FileName,
        blockers: Blockers,
    },
    /// `last`: the call's last release, after which its owner holds nothing of `lock`.
    Release {
        at: u64,
        actor: Actor,
        lock: LockId,
        held: Held,
        /// The part of `held` that was released.
        start: i64,
        end: i64,
        reason: ReleaseReason,
        file: FileName,
        last: bool,
    },
    Fail {
        at: u64,
        actor: Actor,
        lock: LockId,
        mode: Mode,
        start: i64,
        end: i64,
        errno: i32,
        file: FileName,
        /// Who held a conflicting lock then.
        blockers: Blockers,
    },
    /// A process exited. `took_locks`: it had taken locks that were held, and `locks` of
    /// them still were when it exited.
    Exit {
        at: u64,
        actor: Actor,
        locks: u64,
        took_locks: bool,
    },
    /// `held` outlived its taker, which exited at `taker_exit` (None: before the tracer
    /// started); `kernel` is the lock as the kernel's table showed it, with its holders.
    Orphan {
        at: u64,
        lock: LockId,
        held: Held,
        taker_exit: Option<u64>,
        kernel: Box<lock_table::Lock>,
        /// How its holders came to hold it, from the taker on.
        lineage: Vec<Step>,
    },
    /// `actor` now references the description of a flock or OFD lock that `from` held: a
    /// child it forked, a program it ran (`via` exec, still holding it), a descriptor it sent.
    Inherit {
        at: u64,
        actor: Actor,
        lock: LockId,
        held: Held,
        from: Actor,
        via: Via,
    },
    /// An orphan was finally released by `by`.
    OrphanEnd {
        at: u64,
        by: Actor,
        lock: LockId,
        held: Held,
        taker_exit: Option<u64>,
        reason: ReleaseReason,
        file: FileName,
    },
    /// A process exited while it waited for a lock.
    WaitAbandoned {
        at: u64,
        actor: Actor,
        lock: LockId,
        mode: Mode,
        start: i64,
        end: i64,
        blockers: Blockers,
    },
    /// Processes that each wait for a lock the next one holds, the last one for a lock the
    /// first one holds: none of them can go on.
    Deadlock { at: u64, cycle: Vec<CycleStep> },
    /// The kernel holds a lock the tracer had not seen taken: `kernel` as its table showed it.
    Held {
        at: u64,
        lock: LockId,
        held: Held,
        kernel: Box<lock_table::Lock>,
    },
}

/// The ranges one owner holds on one file: one, nearly always (flock and lease locks are whole
/// files), so it is kept inline rather than in an allocation of its own.
type Ranges = SmallVec<[Held; 1]>;

/// The held ranges of each lock. Its entries are kept in a vector beside a table of their
/// indices, rather than in the hash table's own slots: when the table grows, what is rehashed
/// and briefly held twice is 8 bytes a lock, not a lock's key and ranges, which is most of the
/// tracker's memory with many locks held.
type LockTable = IndexMap<LockId, Ranges, FxBuildHasher>;

#[derive(Clone, Copy)]
struct Waiting {
    since_ns: u64,
    actor: Actor,
    lock: LockId,
    /// What was asked for.
    mode: Mode,
    start: i64,
    end: i64,
    /// The file as the wait's record named it.
    file: FileName,
}

impl Waiting {
    fn request(&self) -> Request {
        Request {
            lock: self.lock,
            mode: self.mode,
            start: self.start,
            end: self.end,
        }
    }
}

struct Exiting {
    at: u64,
    actor: Actor,
}

/// A lock found in a kernel view, not yet named by a record, and the pids that then held its
/// description (for POSIX locks: the owner).
type Seeded = (LockId, Vec<u32>);

/// A description a process got from another one.
#[derive(Clone, Copy)]
struct Inherited {
    lock: LockId,
    from: Actor,
    /// A fork not said yet, with its time: most children close the description (on exec, or
    /// by exiting) while their parent still runs, and are not worth a line. A fork is said
    /// when the child runs a program still holding it, or outlives the process it came from.
    unsaid_fork: Option<u64>,
}

/// What waits in the reorder queue.
enum Pending {
    Kernel(Input),
    /// A scan of the kernel's table began: from here on, the files whose locks change are noted.
    ScanBegin(u64),
    Scan(Box<KernelView>),
}

impl Pending {
    fn ts_ns(&self) -> u64 {
        match self {
            Self::Kernel(input) => input.ts_ns(),
            Self::ScanBegin(ts_ns) => *ts_ns,
            Self::Scan(view) => view.end_ns,
        }
    }
}

/// Why the tracker wants to see the kernel's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScanWanted {
    /// A record names a lock found in an earlier view that it cannot tie to one lock.
    Reconcile,
    /// Locks whose taker has exited are still held: orphans, or releases lost?
    Orphans,
}

/// The identity of a lock line in /proc/locks: what the table and a kernel view are compared by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct LineKey {
    kind: LockKind,
    dev: u32,
    ino: u64,
    start: i64,
    end: i64,
    mode: Mode,
    /// As the kernel records it: the taker's tgid, -1 for OFD locks.
    pid: i64,
}

impl LineKey {
    fn of_table(lock: &LockId, held: &Held) -> Self {
        Self {
            kind: lock.kind,
            dev: lock.dev,
            ino: lock.ino,
            start: held.start,
            end: held.end,
            mode: held.mode,
            pid: recorded_pid(lock.kind, held.taker.pid),
        }
    }

    fn of_kernel(lock: &lock_table::Lock) -> Self {
        Self {
            kind: lock.kind,
            dev: lock.kernel_dev,
            ino: lock.ino,
            start: lock.start.min(END_OF_FILE as u64) as i64,
            end: lock
                .end
                .map_or(END_OF_FILE, |end| end.min(END_OF_FILE as u64) as i64),
            mode: lock.mode,
            pid: recorded_pid(lock.kind, u32::try_from(lock.pid).unwrap_or(0)),
        }
    }
}

fn recorded_pid(kind: LockKind, pid: u32) -> i64 {
    if kind == LockKind::Ofd {
        -1
    } else {
        i64::from(pid)
    }
}

#[derive(Default)]
pub struct Tracker {
    /// Inputs not yet applied, in timestamp order (equal timestamps in arrival order).
    pending: pending::Ordered<Pending>,
    locks: LockTable,
    /// The keys of `locks` by file, for the conflicts of a request.
    by_file: HashMap<(u32, u64), SmallVec<[FileLock; 1]>>,
    /// The processes the kernel's table showed holding a lock that its taker no longer holds
    /// (an orphan, a lock found at start), who block its waiters.
    holders: HashMap<LockId, SmallVec<[Actor; 1]>>,
    /// The waits of each deadlock already said, (thread, start of its wait), sorted.
    deadlocks: HashSet<SmallVec<[(u32, u64); 2]>>,
    /// Locks each process took, for its exit (empty once it released them, while small).
    taken_by: HashMap<u32, HashSet<LockId>>,
    /// Blocking calls in progress, by thread.
    waiting: HashMap<u32, Waiting>,
    /// Failures `posix_lock_inode` reported, so that `fcntl_setlk` does not report them again.
    posix_failed: HashMap<u32, i32>,
    /// Processes in their exit grace period, by pid, with the time of their exit.
    exiting: HashMap<u32, Exiting>,
    exit_order: BinaryHeap<Reverse<(u64, u32)>>,
    /// Locks found in a kernel view whose owner no record has named yet, with the pids that
    /// held their description then, by file.
    seeded: HashMap<(u32, u64), SmallVec<[Seeded; 1]>>,
    last_seeded_owner: u64,
    /// Locks with a suspected orphan range (may name locks released since).
    suspects: HashSet<LockId>,
    /// Locks kernel views found with their taker gone though no record said it exited, with
    /// when that was first seen: its exit may still be on its way through the ring (read late
    /// under load), so only a view an exit's grace period later decides.
    taker_vanished: HashMap<LockId, u64>,
    reconcile: bool,
    /// Files whose locks changed since the kernel view being taken began.
    scan_touched: Option<HashSet<(u32, u64)>>,
    lineages: lineage::Lineages,
    /// The flock and OFD locks each process references through a description it did not lock
    /// itself.
    inherited: HashMap<u32, SmallVec<[Inherited; 1]>>,
    /// Every record timestamped before this has been read from the ring, as its reader says
    /// ([`Tracker::ring_read_until`]); no record read says it of the older ones, as the CPUs'
    /// batches reach the ring after records of other CPUs taken later. A view waits for it to
    /// pass its end: a record older than the view but read after it (a reader behind under
    /// load) would otherwise meet a table the view already changed, as a lost exit or a lost
    /// release. `None`: no reader says, and views apply in time order alone.
    read_until: Option<u64>,
    /// Every input timestamped up to this has been applied.
    applied_until: u64,
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues an input; nothing is applied until [`Tracker::advance`].
    pub fn push(&mut self, input: Input) {
        self.enqueue(Pending::Kernel(input));
    }

    /// A scan of the kernel's table begins now (CLOCK_MONOTONIC); its view follows with
    /// [`Tracker::push_view`].
    pub fn push_scan_begin(&mut self, now_ns: u64) {
        self.enqueue(Pending::ScanBegin(now_ns));
    }

    /// The kernel's table, applied in time order at the end of its scan.
    pub fn push_view(&mut self, view: KernelView) {
        self.enqueue(Pending::Scan(Box::new(view)));
    }

    fn enqueue(&mut self, pending: Pending) {
        self.pending.push(pending.ts_ns(), pending);
    }

    /// The ring's reader has read every record timestamped before `now_ns`.
    pub fn ring_read_until(&mut self, now_ns: u64) {
        self.read_until = Some(self.read_until.map_or(now_ns, |read| read.max(now_ns)));
    }

    /// Whether the tracker needs a look at the kernel's table, and how urgently.
    pub fn scan_wanted(&self) -> Option<ScanWanted> {
        if !self.suspects.is_empty() {
            Some(ScanWanted::Orphans)
        } else if self.reconcile {
            Some(ScanWanted::Reconcile)
        } else {
            None
        }
    }

    /// Applies every input older than `now_ns - REORDER_WINDOW_NS` and ends the exit grace
    /// periods that are over by then. `now_ns` is CLOCK_MONOTONIC, as the inputs' timestamps.
    pub fn advance(&mut self, now_ns: u64, out: &mut Vec<Output>) {
        self.apply_until(now_ns.saturating_sub(REORDER_WINDOW_NS), out);
    }

    /// Applies everything: the end of a trace, once every record has been read.
    pub fn finish(&mut self, out: &mut Vec<Output>) {
        self.read_until = None;
        self.apply_until(u64::MAX, out);
    }

    /// Every input timestamped up to this has been read and applied: no output to come is about
    /// an earlier event, but for exits whose grace period ends later. A reader behind (a burst
    /// in the backlog) may still hold records older than what was applied.
    pub fn settled_until(&self) -> u64 {
        self.read_until
            .map_or(self.applied_until, |read| read.min(self.applied_until))
    }

    /// The files the table has locks on.
    pub fn files(&self) -> HashSet<(u32, u64)> {
        self.locks.keys().map(|id| (id.dev, id.ino)).collect()
    }

    /// Currently held locks.
    #[cfg(test)]
    pub fn held(&self) -> impl Iterator<Item = (&LockId, &Held)> {
        self.locks
            .iter()
            .flat_map(|(id, ranges)| ranges.iter().map(move |held| (id, held)))
    }

    fn apply_until(&mut self, mut until: u64, out: &mut Vec<Output>) {
        // Inputs are applied where they wait, not moved out: a queue of 10 ms of a burst is
        // megabytes, and each input a few hundred bytes. Applying never queues an input.
        let mut pending = std::mem::take(&mut self.pending);
        while let Some((ts, first)) = pending.first() {
            if ts > until {
                break;
            }
            if let (Pending::Scan(_), Some(read_until)) = (first, self.read_until)
                && ts >= read_until
                && ts.saturating_add(VIEW_WAIT_MAX_NS) > until
            {
                // Records older than the view may still be in the ring: it waits, and so does
                // everything after it.
                until = ts - 1;
                break;
            }
            // Exits whose grace ended before this input are settled first.
            self.end_exits(ts.saturating_sub(EXIT_GRACE_NS), out);
            match first {
                Pending::Kernel(input) => self.apply_input(input, out),
                Pending::ScanBegin(_) => self.scan_touched = Some(HashSet::default()),
                Pending::Scan(_) => {
                    if let Some(Pending::Scan(view)) = pending.pop_first() {
                        self.apply_view(*view, out);
                    }
                    continue;
                }
            }
            pending.remove_first();
        }
        self.pending = pending;
        // A grace period ends on time only once the reader has read every record of it: a
        // reader behind (a burst in the backlog) still holds the closes of the exit.
        let read = self.read_until.map_or(until, |read| read.min(until));
        self.end_exits(read.saturating_sub(EXIT_GRACE_NS), out);
        self.applied_until = self.applied_until.max(until);
    }

    fn apply_input(&mut self, input: &Input, out: &mut Vec<Output>) {
        match input {
            Input::Lock(op) => self.apply_lock(op, out),
            Input::FcntlFailure(op) => self.apply_fcntl_failure(op, out),
            Input::FlockWaitEnd(op) => self.apply_flock_wait_end(op, out),
            &Input::Exit {
                ts_ns,
                pid,
                comm,
                start_time,
            } => self.apply_exit(ts_ns, Actor::process(pid, comm, start_time), out),
            &Input::Fork {
                ts_ns,
                pid,
                comm,
                start_time,
                child,
            } => self.apply_fork(ts_ns, Actor::process(pid, comm, start_time), child),
            Input::Exec {
                ts_ns,
                pid,
                comm,
                start_time,
                locked,
            } => self.apply_exec(
                *ts_ns,
                Actor::process(*pid, *comm, *start_time),
                locked.as_deref(),
                out,
            ),
            Input::Passed {
                ts_ns,
                pid,
                comm,
                start_time,
                received,
                files,
            } => self.apply_passed(
                *ts_ns,
                Actor::process(*pid, *comm, *start_time),
                *received,
                files,
                out,
            ),
        }
    }

    fn apply_lock(&mut self, op: &LockOp, out: &mut Vec<Output>) {
        let lock = LockId::of_op(op);
        // Locks found in the kernel's table may become this owner's in the call.
        let marked = self.seeded.is_empty();
        // Only a call that takes a lock may begin a stretch.
        let takes = op.ret == 0 && op.lock_type != fl_type::UNLCK;
        let held_before = marked && takes && self.locks.contains_key(&lock);
        let from = out.len();
        self.apply_lock_call(op, lock, out);
        if marked {
            self.mark_stretch(lock, held_before, &mut out[from..]);
        }
    }

    /// Marks where the owner's holding of `lock` begins and ends in a call's outputs: its
    /// acquire, if the owner held nothing of it before (`held_before` false), and its last
    /// release, if it holds nothing of it after. Between the two is a stretch of the owner's own
    /// locking that the log may count in summaries (see [`crate::fold`]).
    fn mark_stretch(&self, lock: LockId, held_before: bool, outputs: &mut [Output]) {
        for output in outputs.iter_mut() {
            if let Output::Acquire {
                lock: acquired,
                first,
                ..
            } = output
                && *acquired == lock
            {
                *first = !held_before;
            }
        }
        let last_release = outputs.iter_mut().rev().find_map(|output| match output {
            Output::Release {
                lock: released,
                last,
                ..
            } if *released == lock => Some(last),
            _ => None,
        });
        if let Some(last) = last_release {
            *last = !self.locks.contains_key(&lock);
        }
    }

    fn apply_lock_call(&mut self, op: &LockOp, lock: LockId, out: &mut Vec<Output>) {
        let actor = Actor::of_op(op);
        if op.kind == LockKind::Posix {
            self.posix_failed.remove(&op.tid);
        }
        // FL_ACCESS requests only test for conflicts and never store a lock.
        if op.flags & fl_flags::ACCESS != 0 {
            return;
        }
        let mode = match op.lock_type {
            fl_type::RDLCK => Mode::Read,
            fl_type::WRLCK => Mode::Write,
            _ => Mode::Unlock,
        };
        if op.ret == 0 {
            if let Some(touched) = &mut self.scan_touched {
                touched.insert((op.dev, op.ino));
            }
            if !self.seeded.is_empty() && !self.locks.contains_key(&lock) {
                self.adopt_seeded(lock, actor.pid, mode == Mode::Unlock, op.flags);
            }
        }
        if mode == Mode::Unlock {
            if op.ret == 0 {
                // The kernel says whether the closing task was in its exit, however long after
                // the exit event; where it could not, a close in the exit's grace period is its.
                let at_exit = op.exiting.unwrap_or_else(|| {
                    self.exiting
                        .get(&op.pid)
                        .is_some_and(|exiting| exiting.actor.same_process(&actor))
                });
                let reason = if op.flags & fl_flags::CLOSE == 0 {
                    ReleaseReason::Unlock
                } else if at_exit {
                    ReleaseReason::Exit
                } else {
                    ReleaseReason::Close
                };
                self.release_range(
                    op.ts_ns, actor, lock, op.start, op.end, reason, op.file, out,
                );
                if op.kind == LockKind::Posix {
                    // The last close of a file releases its OFD locks with a plain POSIX
                    // request (locks_remove_file -> locks_remove_posix, no FL_OFDLCK); the
                    // owner, the file itself, tells them apart.
                    let ofd = LockId {
                        kind: LockKind::Ofd,
                        ..lock
                    };
                    self.release_range(
                        op.ts_ns, actor, ofd, op.start, op.end, reason, op.file, out,
                    );
                }
            }
            return;
        }
        // flock(2) drops the owner's current lock before it tries a conversion (fs/locks.c
        // flock_lock_inode), so a conversion releases the old mode whatever its outcome.
        if op.kind == LockKind::Flock {
            let held_mode = self
                .locks
                .get(&lock)
                .and_then(|r| r.first())
                .map(|h| h.mode);
            match held_mode {
                // Same mode again: the kernel leaves the lock as it is.
                Some(held) if held == mode && op.ret == 0 => {
                    self.waiting.remove(&op.tid);
                    return;
                }
                Some(held) if held != mode => self.release_range(
                    op.ts_ns,
                    actor,
                    lock,
                    0,
                    END_OF_FILE,
                    ReleaseReason::Convert,
                    op.file,
                    out,
                ),
                _ => {}
            }
        }
        match op.ret {
            0 => {
                let wait_ns = match self.waiting.remove(&op.tid) {
                    Some(waiting) if waiting.lock == lock => {
                        Some(op.ts_ns.saturating_sub(waiting.since_ns))
                    }
                    _ => None,
                };
                if self.covered(&lock, op.start, op.end, mode) {
                    return;
                }
                self.insert_range(op.ts_ns, actor, lock, mode, op.start, op.end, op.file, out);
                out.push(Output::Acquire {
                    at: op.ts_ns,
                    actor,
                    lock,
                    mode,
                    start: op.start,
                    end: op.end,
                    wait_ns,
                    file: op.file,
                    first: false,
                });
            }
            FILE_LOCK_DEFERRED => {
                let new_wait = match self.waiting.get(&op.tid) {
                    Some(waiting) => waiting.lock != lock,
                    None => true,
                };
                if new_wait {
                    let waiting = Waiting {
                        since_ns: op.ts_ns,
                        actor,
                        lock,
                        mode,
                        start: op.start,
                        end: op.end,
                        file: op.file,
                    };
                    self.waiting.insert(op.tid, waiting);
                    out.push(Output::Wait {
                        at: op.ts_ns,
                        actor,
                        lock,
                        mode,
                        start: op.start,
                        end: op.end,
                        file: op.file,
                        blockers: self.blockers(&waiting.request(), op.pid),
                    });
                    self.find_deadlocks(op.ts_ns, Some(op.tid), out);
                }
            }
            errno => {
                self.waiting.remove(&op.tid);
                if op.kind != LockKind::Flock {
                    self.posix_failed.insert(op.tid, errno);
                }
                let request = Request {
                    lock,
                    mode,
                    start: op.start,
                    end: op.end,
                };
                out.push(Output::Fail {
                    at: op.ts_ns,
                    actor,
                    lock,
                    mode,
                    start: op.start,
                    end: op.end,
                    errno: -errno,
                    file: op.file,
                    blockers: self.blockers(&request, op.pid),
                });
            }
        }
    }

    /// A failed fcntl lock call. Refusals that `posix_lock_inode` reported are not repeated;
    /// what is left is a wait that ended without the lock (EINTR) or a call refused earlier.
    fn apply_fcntl_failure(&mut self, op: &LockOp, out: &mut Vec<Output>) {
        if self.posix_failed.remove(&op.tid) == Some(op.ret) {
            return;
        }
        self.waiting.remove(&op.tid);
        let mode = match op.lock_type {
            fl_type::RDLCK => Mode::Read,
            fl_type::WRLCK => Mode::Write,
            _ => Mode::Unlock,
        };
        let request = Request {
            lock: LockId::of_op(op),
            mode,
            start: op.start,
            end: op.end,
        };
        out.push(Output::Fail {
            at: op.ts_ns,
            actor: Actor::of_op(op),
            lock: request.lock,
            mode,
            start: op.start,
            end: op.end,
            errno: -op.ret,
            file: op.file,
            blockers: self.blockers(&request, op.pid),
        });
    }

    /// A queued flock call that ended without the lock: the end of its wait.
    fn apply_flock_wait_end(&mut self, op: &LockOp, out: &mut Vec<Output>) {
        // Its wait may have ended already: granted, then a signal (the kernel's entry for the
        // queued call outlives a grant), or refused. A POSIX or OFD wait of the thread ends
        // with a record of its own (`fcntl_setlk`).
        let Some(waiting) = self
            .waiting
            .get(&op.tid)
            .filter(|waiting| waiting.lock.kind == LockKind::Flock)
        else {
            return;
        };
        let waiting = *waiting;
        self.waiting.remove(&op.tid);
        out.push(Output::Fail {
            at: op.ts_ns,
            actor: Actor::of_op(op),
            lock: waiting.lock,
            mode: waiting.mode,
            start: waiting.start,
            end: waiting.end,
            errno: -op.ret,
            // The wait's record named the file; the record of its end does not.
            file: waiting.file,
            blockers: self.blockers(&waiting.request(), op.pid),
        });
    }

    fn apply_exit(&mut self, at: u64, actor: Actor, out: &mut Vec<Output>) {
        let pid = actor.pid;
        // A process that exits while it waits gives its wait up.
        let mut abandoned: Vec<(u32, Waiting)> = self
            .waiting
            .iter()
            .filter(|(_, waiting)| waiting.actor.pid == pid)
            .map(|(&tid, &waiting)| (tid, waiting))
            .collect();
        abandoned.sort_by_key(|(tid, _)| *tid);
        self.waiting.retain(|_, waiting| waiting.actor.pid != pid);
        for (tid, waiting) in abandoned {
            out.push(Output::WaitAbandoned {
                at,
                actor: Actor { tid, ..actor },
                lock: waiting.lock,
                mode: waiting.mode,
                start: waiting.start,
                end: waiting.end,
                blockers: self.blockers(&waiting.request(), pid),
            });
        }
        self.posix_failed.remove(&pid);
        self.lineages.exit(pid);
        self.inherited.remove(&pid);
        self.say_orphaned_forks(pid, out);
        let taken = self.taken_by.get(&pid).filter(|taken| !taken.is_empty());
        let locks = taken.map(|taken| {
            taken
                .iter()
                .filter_map(|id| self.locks.get(id))
                .flatten()
                .filter(|held| held.taker.pid == pid && held.orphan == Orphan::No)
                .count() as u64
        });
        out.push(Output::Exit {
            at,
            actor,
            locks: locks.unwrap_or(0),
            took_locks: locks.is_some(),
        });
        // Every exit opens a grace period: its closes release locks "at exit", whoever took them.
        self.exiting.insert(pid, Exiting { at, actor });
        self.exit_order.push(Reverse((at, pid)));
    }

    /// Ends the grace periods of exits that happened at or before `until`: what the exited
    /// process took and is still held has outlived it.
    fn end_exits(&mut self, until: u64, out: &mut Vec<Output>) {
        while let Some(Reverse((at, pid))) = self.exit_order.peek().copied() {
            if at > until {
                break;
            }
            self.exit_order.pop();
            match self.exiting.get(&pid) {
                Some(exiting) if exiting.at == at => {}
                _ => continue,
            }
            let Some(exiting) = self.exiting.remove(&pid) else {
                continue;
            };
            let Some(taken) = self.taken_by.remove(&pid) else {
                continue;
            };
            // Locks taken since by another process that got the pid stay its own.
            let mut reused: HashSet<LockId> = HashSet::default();
            for id in taken {
                let Some(ranges) = self.locks.get_mut(&id) else {
                    continue;
                };
                if id.kind == LockKind::Posix {
                    // POSIX locks belong to the process and cannot outlive it: what is left
                    // here was released in records that were lost.
                    let (gone, kept): (Ranges, Ranges) = ranges
                        .drain(..)
                        .partition(|held| held.taker.same_process(&exiting.actor));
                    *ranges = kept;
                    if ranges.iter().any(|held| held.taker.pid == pid) {
                        reused.insert(id);
                    }
                    for held in gone {
                        out.push(Output::Release {
                            at: exiting.at,
                            actor: exiting.actor,
                            lock: id,
                            held,
                            start: held.start,
                            end: held.end,
                            reason: ReleaseReason::Exit,
                            file: FileName::NONE,
                            last: false,
                        });
                    }
                    if ranges.is_empty() {
                        self.locks.swap_remove(&id);
                        self.forget_lock(id);
                    }
                    continue;
                }
                for held in ranges.iter_mut() {
                    if !held.taker.same_process(&exiting.actor) {
                        if held.taker.pid == pid {
                            reused.insert(id);
                        }
                    } else if held.orphan == Orphan::No {
                        held.orphan = Orphan::Suspect {
                            taker_exit: exiting.at,
                            looks: 0,
                        };
                        self.suspects.insert(id);
                    }
                }
            }
            if !reused.is_empty() {
                self.taken_by.insert(pid, reused);
            }
        }
    }

    /// True when `lock` already holds [start, end] in `mode` (a repeated request changes nothing).
    fn covered(&self, lock: &LockId, start: i64, end: i64, mode: Mode) -> bool {
        self.locks.get(lock).is_some_and(|ranges| {
            ranges
                .iter()
                .any(|held| held.mode == mode && held.start <= start && held.end >= end)
        })
    }

    /// Records a granted range. Parts of the owner's ranges it overlaps are replaced: in the
    /// same mode they merge into it, in the other mode they are converted (and released).
    /// Adjacent ranges of the same mode merge too, as the kernel merges them
    /// (fs/locks.c posix_lock_inode), so that the table's ranges are the kernel's.
    #[allow(clippy::too_many_arguments)]
    fn insert_range(
        &mut self,
        at: u64,
        actor: Actor,
        lock: LockId,
        mode: Mode,
        mut start: i64,
        mut end: i64,
        file: FileName,
        out: &mut Vec<Output>,
    ) {
        let mut since_ns = Some(at);
        let mut removed = self.cut(lock, start, end);
        if let Some(ranges) = self.locks.get_mut(&lock) {
            let adjacent = |held: &Held| {
                held.mode == mode
                    && ((start > 0 && held.end == start - 1)
                        || (end != END_OF_FILE && held.start == end + 1))
            };
            removed.extend(ranges.iter().filter(|held| adjacent(held)).copied());
            ranges.retain(|held| !adjacent(held));
        }
        for held in &removed {
            if held.mode == mode {
                since_ns = since_ns.zip(held.since_ns).map(|(a, b)| a.min(b));
                start = start.min(held.start);
                end = end.max(held.end);
            } else {
                out.push(Output::Release {
                    at,
                    actor,
                    lock,
                    held: *held,
                    start: held.start,
                    end: held.end,
                    reason: ReleaseReason::Convert,
                    file,
                    last: false,
                });
            }
        }
        let held = Held {
            start,
            end,
            mode,
            since_ns,
            taker: actor,
            orphan: Orphan::No,
        };
        self.hold(lock, held);
        self.taken_by.entry(actor.pid).or_default().insert(lock);
    }

    /// Releases [start, end] of `lock`'s ranges, splitting ranges that extend beyond it.
    #[allow(clippy::too_many_arguments)]
    fn release_range(
        &mut self,
        at: u64,
        actor: Actor,
        lock: LockId,
        start: i64,
        end: i64,
        reason: ReleaseReason,
        file: FileName,
        out: &mut Vec<Output>,
    ) {
        for held in self.cut(lock, start, end) {
            out.push(Output::Release {
                at,
                actor,
                lock,
                held,
                start: held.start,
                end: held.end,
                reason,
                file,
                last: false,
            });
            if let Orphan::Yes { taker_exit } = held.orphan {
                out.push(Output::OrphanEnd {
                    at,
                    by: actor,
                    lock,
                    held,
                    taker_exit,
                    reason,
                    file,
                });
            }
        }
    }

    /// Removes [start, end] from `lock`'s ranges; returns the removed pieces (each clipped to
    /// [start, end], with its original mode, time and taker).
    fn cut(&mut self, lock: LockId, start: i64, end: i64) -> Ranges {
        let TableEntry::Occupied(mut entry) = self.locks.entry(lock) else {
            return Ranges::new();
        };
        let ranges = entry.get_mut();
        let mut removed = Ranges::new();
        let mut kept = Ranges::new();
        for held in ranges.drain(..) {
            if held.end < start || held.start > end {
                kept.push(held);
                continue;
            }
            if held.start < start {
                kept.push(Held {
                    end: start - 1,
                    ..held
                });
            }
            if held.end > end {
                kept.push(Held {
                    start: end + 1,
                    ..held
                });
            }
            removed.push(Held {
                start: held.start.max(start),
                end: held.end.min(end),
                ..held
            });
        }
        if kept.is_empty() {
            entry.swap_remove();
            self.forget_lock(lock);
            if lock.owner <= SEEDED_OWNERS {
                self.forget_seed(lock);
            }
            for held in &removed {
                if let Some(taken) = self.taken_by.get_mut(&held.taker.pid) {
                    taken.remove(&lock);
                    // A small set emptied stays for the process's next lock (a lock loop
                    // would take and free one a pair); its exit removes it.
                    if taken.is_empty()
                        && taken.capacity() > TAKEN_KEPT_EMPTY
                        && !self.exiting.contains_key(&held.taker.pid)
                    {
                        self.taken_by.remove(&held.taker.pid);
                    }
                }
            }
        } else {
            *ranges = kept;
        }
        removed
    }

    /// A record names an owner the table does not know, on a file with locks found in a kernel
    /// view: if it can only be one of them (the POSIX locks of the record's process, the one
    /// description of that kind the process held), that lock is the record's from now on. An
    /// unlock the tracker cannot tie to one of them asks for a new view instead.
    fn adopt_seeded(&mut self, lock: LockId, pid: u32, unlock: bool, flags: u32) {
        let Some(seeded) = self.seeded.get(&(lock.dev, lock.ino)) else {
            return;
        };
        let held_by = |kind: LockKind| {
            seeded
                .iter()
                .filter(move |(id, holders)| id.kind == kind && holders.contains(&pid))
                .map(|(id, _)| *id)
        };
        let candidates: SmallVec<[LockId; 2]> = held_by(lock.kind).collect();
        let close = flags & fl_flags::CLOSE != 0;
        // The last close of a description releases its OFD locks with a plain POSIX request:
        // which of the process's descriptions that was, the record does not say.
        let ofd_close = unlock && close && lock.kind == LockKind::Posix;
        if ofd_close && held_by(LockKind::Ofd).next().is_some() {
            self.reconcile = true;
        }
        match candidates.as_slice() {
            [seed] => self.adopt(*seed, lock),
            // Several descriptions of this process hold one: which, only the kernel can say.
            [_, _, ..] if unlock => self.reconcile = true,
            // An explicit unlock of a lock the process did not hold when the view was taken
            // (its fd came later, over a socket): the view is out of date. A close unlocks every
            // file with locks, held or not: nothing to learn from it.
            [] if unlock && !close && seeded.iter().any(|(id, _)| id.kind == lock.kind) => {
                self.reconcile = true
            }
            _ => {}
        }
    }

    /// The lock found in a view as `seed` is `lock`, whose owner a record has just named.
    fn adopt(&mut self, seed: LockId, lock: LockId) {
        self.forget_seed(seed);
        let Some(ranges) = self.locks.swap_remove(&seed) else {
            return;
        };
        let holders = self.holders.remove(&seed);
        self.forget_lock(seed);
        for held in &ranges {
            if let Some(taken) = self.taken_by.get_mut(&held.taker.pid)
                && taken.remove(&seed)
            {
                taken.insert(lock);
            }
        }
        if self.suspects.remove(&seed) {
            self.suspects.insert(lock);
        }
        self.locks.insert(lock, ranges);
        self.by_file
            .entry((lock.dev, lock.ino))
            .or_default()
            .push(FileLock::of(&lock));
        if let Some(holders) = holders {
            self.holders.insert(lock, holders);
        }
    }

    fn forget_seed(&mut self, id: LockId) {
        if let Entry::Occupied(mut entry) = self.seeded.entry((id.dev, id.ino)) {
            entry.get_mut().retain(|(seed, _)| *seed != id);
            if entry.get().is_empty() {
                entry.remove();
            }
        }
    }

    /// Compares the table with the kernel's, file by file, except the files whose locks
    /// changed while the view was taken; confirms or clears the suspected orphans.
    fn apply_view(&mut self, view: KernelView, out: &mut Vec<Output>) {
        let touched = self.scan_touched.take().unwrap_or_default();
        if !view.complete {
            return;
        }
        self.reconcile = false;
        let at = view.end_ns;
        let compared = |dev: u32, ino: u64, kind: LockKind| {
            kind != LockKind::Lease && !touched.contains(&(dev, ino))
        };
        let mut kernel: HashMap<LineKey, SmallVec<[ViewedLock; 1]>> = HashMap::default();
        for viewed in view.locks {
            let lock = &viewed.lock;
            if compared(lock.kernel_dev, lock.ino, lock.kind) {
                kernel
                    .entry(LineKey::of_kernel(lock))
                    .or_default()
                    .push(viewed);
            }
        }
        // Pair every range of the table with a lock line of the kernel.
        let mut gone: Vec<(LockId, Held)> = Vec::new();
        let mut suspects = HashSet::default();
        let mut taker_vanished = HashMap::default();
        for (id, ranges) in self.locks.iter_mut() {
            if !compared(id.dev, id.ino, id.kind) {
                if ranges
                    .iter()
                    .any(|held| matches!(held.orphan, Orphan::Suspect { .. }))
                {
                    suspects.insert(*id);
                }
                continue;
            }
            for held in ranges.iter_mut() {
                let key = LineKey::of_table(id, held);
                let Some(ViewedLock { lock: found, .. }) =
                    kernel.get_mut(&key).and_then(|locks| locks.pop())
                else {
                    gone.push((*id, *held));
                    continue;
                };
                let Orphan::Suspect { taker_exit, looks } = held.orphan else {
                    // The kernel's table shows what no record said: the taker is gone while
                    // others still hold the lock (its exit was among the records lost). A taker
                    // that still runs (mid-exit, or alive without its fd) is left to its exit's
                    // grace period, and so is an exit already in it.
                    if held.orphan == Orphan::No
                        && found.orphan
                        && found.command.is_none()
                        && !self.exiting.contains_key(&held.taker.pid)
                    {
                        let first_seen = self.taker_vanished.get(id).copied().unwrap_or(at);
                        if at.saturating_sub(first_seen) < EXIT_GRACE_NS {
                            // Looked at again soon: its exit record arrives meanwhile, if any.
                            taker_vanished.insert(*id, first_seen);
                            suspects.insert(*id);
                            continue;
                        }
                        held.orphan = Orphan::Yes { taker_exit: None };
                        self.holders.insert(*id, holder_actors(&found.holders));
                        out.push(Output::Orphan {
                            at,
                            lock: *id,
                            held: *held,
                            taker_exit: None,
                            lineage: lineage_of(&self.lineages, id, held, &found),
                            kernel: Box::new(found),
                        });
                    }
                    continue;
                };
                if found.holders.is_empty() && looks + 1 < ORPHAN_LOOKS {
                    // Its last holder may be closing its files right now.
                    held.orphan = Orphan::Suspect {
                        taker_exit,
                        looks: looks + 1,
                    };
                    suspects.insert(*id);
                    continue;
                }
                held.orphan = Orphan::Yes {
                    taker_exit: Some(taker_exit),
                };
                self.holders.insert(*id, holder_actors(&found.holders));
                out.push(Output::Orphan {
                    at,
                    lock: *id,
                    held: *held,
                    taker_exit: Some(taker_exit),
                    lineage: lineage_of(&self.lineages, id, held, &found),
                    kernel: Box::new(found),
                });
            }
        }
        self.suspects = suspects;
        self.taker_vanished = taker_vanished;
        // Held here, not in the kernel: released in records that never arrived.
        for (id, held) in gone {
            self.release_range(
                at,
                held.taker,
                id,
                held.start,
                held.end,
                ReleaseReason::Lost,
                FileName::NONE,
                out,
            );
        }
        // Held in the kernel, not here: taken while nothing recorded it.
        let mut found: Vec<lock_table::Lock> = kernel
            .into_values()
            .flatten()
            .filter(|viewed| viewed.in_scope)
            .map(|viewed| viewed.lock)
            .collect();
        found.sort_by_key(|lock| (lock.kernel_dev, lock.ino, lock.start, lock.pid));
        for lock in found {
            self.seed(at, lock, out);
        }
        // Holders the table learnt of may be waiting themselves.
        if !self.waiting.is_empty() {
            self.find_deadlocks(at, None, out);
        }
    }

    /// Adds a range to the table.
    fn hold(&mut self, id: LockId, held: Held) {
        match self.locks.entry(id) {
            TableEntry::Occupied(mut entry) => entry.get_mut().push(held),
            TableEntry::Vacant(entry) => {
                entry.insert(smallvec::smallvec![held]);
                self.by_file
                    .entry((id.dev, id.ino))
                    .or_default()
                    .push(FileLock::of(&id));
            }
        }
    }

    /// Forgets what is known of a lock whose last range has left the table.
    fn forget_lock(&mut self, id: LockId) {
        if let Entry::Occupied(mut entry) = self.by_file.entry((id.dev, id.ino)) {
            entry.get_mut().retain(|known| *known != FileLock::of(&id));
            if entry.get().is_empty() {
                entry.remove();
            }
        }
        if !self.holders.is_empty() {
            self.holders.remove(&id);
        }
    }

    /// The ranges in the table that `request` of process `pid` conflicts with.
    fn conflicting<'a>(
        &'a self,
        request: &'a Request,
        pid: u32,
    ) -> impl Iterator<Item = (&'a LockId, &'a Held)> + 'a {
        let file = (request.lock.dev, request.lock.ino);
        self.by_file
            .get(&file)
            .into_iter()
            .flatten()
            .filter_map(move |known| self.locks.get_key_value(&known.id(file)))
            .flat_map(|(id, ranges)| ranges.iter().map(move |held| (id, held)))
            .filter(move |(id, held)| waits::conflicts(request, pid, id, held))
    }

    /// Who holds a range: the processes the kernel's table showed on its description when its
    /// taker no longer holds it, else its taker (the thread that took it).
    fn holders_of(&self, id: &LockId, held: &Held) -> SmallVec<[Actor; 1]> {
        match self.holders.get(id) {
            Some(holders) if !holders.is_empty() => holders.clone(),
            _ if held.taker.pid != 0 => smallvec::smallvec![held.taker],
            _ => SmallVec::new(),
        }
    }

    /// The processes holding what `request` of process `pid` conflicts with, by pid.
    fn blockers(&self, request: &Request, pid: u32) -> Blockers {
        let mut blockers = Blockers::new();
        for (id, held) in self.conflicting(request, pid) {
            let orphan = matches!(held.orphan, Orphan::Yes { .. });
            for holder in self.holders_of(id, held) {
                if !blockers
                    .iter()
                    .any(|known: &Blocker| known.holder.pid == holder.pid)
                {
                    blockers.push(Blocker { holder, orphan });
                }
            }
        }
        blockers.sort_by_key(|blocker| blocker.holder.pid);
        blockers
    }

    /// Says each new cycle among the waits, once: threads that each wait for a lock the next
    /// one took (or, for a lock its taker no longer holds, a process holding it), the last for
    /// one the first took. Threads, not processes: a thread waiting for a lock another thread
    /// of its process holds is no deadlock while that thread runs. `from`: the thread whose
    /// new wait may close a cycle, which then runs through it (None: look at every wait).
    fn find_deadlocks(&mut self, at: u64, from: Option<u32>, out: &mut Vec<Output>) {
        let waiting = &self.waiting;
        self.deadlocks.retain(|waits| {
            waits.iter().all(|(tid, since_ns)| {
                waiting
                    .get(tid)
                    .is_some_and(|wait| wait.since_ns == *since_ns)
            })
        });
        // The waits reachable from `from` (so a pile of waiters behind one running holder
        // costs each new waiter a look at its own wait only), or all of them.
        let mut to_visit: Vec<u32> = match from {
            Some(tid) => vec![tid],
            None => {
                let mut tids: Vec<u32> = self.waiting.keys().copied().collect();
                tids.sort_unstable_by(|a, b| b.cmp(a));
                tids
            }
        };
        let mut visited: HashSet<u32> = HashSet::default();
        let mut edges = Vec::new();
        let mut blocked_by = Vec::new();
        while let Some(tid) = to_visit.pop() {
            let Some(wait) = self.waiting.get(&tid).copied() else {
                continue;
            };
            if !visited.insert(tid) {
                continue;
            }
            let request = wait.request();
            for (id, held) in self.conflicting(&request, wait.actor.pid) {
                for holder in self.holders_of(id, held) {
                    edges.push(waits::Edge {
                        from: tid,
                        to: holder.tid,
                    });
                    blocked_by.push((tid, *id, *held));
                    to_visit.push(holder.tid);
                }
            }
        }
        for cycle in waits::cycles(&edges) {
            let mut key: SmallVec<[(u32, u64); 2]> = cycle
                .iter()
                .map(|&edge| {
                    let tid = blocked_by[edge].0;
                    (tid, self.waiting[&tid].since_ns)
                })
                .collect();
            key.sort_unstable();
            if !self.deadlocks.insert(key) {
                continue;
            }
            // Each thread holds what the one before it in the cycle waits for.
            let steps = cycle
                .iter()
                .enumerate()
                .map(|(index, &edge)| {
                    let wait = self.waiting[&blocked_by[edge].0];
                    let before = cycle[(index + cycle.len() - 1) % cycle.len()];
                    let (_, id, held) = blocked_by[before];
                    CycleStep {
                        actor: wait.actor,
                        holds: (id, held),
                        waits_for: wait.request(),
                        file: wait.file,
                    }
                })
                .collect();
            out.push(Output::Deadlock { at, cycle: steps });
        }
    }

    /// Adds a lock found in a kernel view, under an owner of its own until a record names it.
    fn seed(&mut self, at: u64, kernel: lock_table::Lock, out: &mut Vec<Output>) {
        self.last_seeded_owner += 1;
        let id = LockId {
            dev: kernel.kernel_dev,
            ino: kernel.ino,
            generation: 0,
            owner: self.last_seeded_owner,
            kind: kernel.kind,
        };
        let taker_pid = u32::try_from(kernel.pid).unwrap_or(0);
        let comm = kernel.command.as_deref().map_or([0; 16], comm_bytes);
        let key = LineKey::of_kernel(&kernel);
        if kernel.taker != Taker::Holding && !kernel.holders.is_empty() {
            self.holders.insert(id, holder_actors(&kernel.holders));
        }
        let held = Held {
            start: key.start,
            end: key.end,
            mode: kernel.mode,
            since_ns: None,
            taker: Actor::process(
                taker_pid,
                comm,
                // A taker that holds the lock is one of its holders, read just now.
                kernel
                    .holders
                    .iter()
                    .find(|holder| holder.pid == taker_pid && kernel.taker == Taker::Holding)
                    .and_then(|holder| holder.start_time)
                    .unwrap_or(0),
            ),
            orphan: if kernel.orphan {
                Orphan::Yes { taker_exit: None }
            } else {
                Orphan::No
            },
        };
        self.hold(id, held);
        if kernel.taker == Taker::Holding {
            self.taken_by.entry(taker_pid).or_default().insert(id);
        }
        let holders = kernel.holders.iter().map(|holder| holder.pid).collect();
        self.seeded
            .entry((id.dev, id.ino))
            .or_default()
            .push((id, holders));
        let orphan = kernel.orphan.then(|| kernel.clone());
        out.push(Output::Held {
            at,
            lock: id,
            held,
            kernel: Box::new(kernel),
        });
        if let Some(kernel) = orphan {
            out.push(Output::Orphan {
                at,
                lock: id,
                held,
                taker_exit: None,
                lineage: lineage_of(&self.lineages, &id, &held, &kernel),
                kernel: Box::new(kernel),
            });
        }
    }

    /// The child inherits every description of its parent; whether that is worth a line is
    /// decided later (see [`Inherited::unsaid_fork`]).
    fn apply_fork(&mut self, at: u64, from: Actor, child: u32) {
        self.lineages.fork(at, from.pid, from.comm, child);
        for lock in self.descriptions_held(from.pid) {
            self.inherited.entry(child).or_default().push(Inherited {
                lock,
                from,
                unsaid_fork: Some(at),
            });
        }
    }

    /// The children of `pid`, which exits, that still hold a description it gave them: their
    /// forks are said now, with their own time.
    fn say_orphaned_forks(&mut self, pid: u32, out: &mut Vec<Output>) {
        let mut said = Vec::new();
        for (&child, inherited) in &mut self.inherited {
            for entry in inherited.iter_mut().filter(|entry| entry.from.pid == pid) {
                if let Some(at) = entry.unsaid_fork.take() {
                    said.push((at, child, *entry));
                }
            }
        }
        said.sort_by_key(|(at, child, _)| (*at, *child));
        for (at, child, entry) in said {
            // Forked and not seen since: its parent's command, its own start time unknown.
            let actor = Actor::process(child, entry.from.comm, 0);
            self.push_inherit(at, actor, entry.lock, entry.from, Via::Fork, out);
        }
    }

    /// `locked`: the files on which the process's descriptors still show flock or OFD locks
    /// after the exec (`None`: not known); the descriptions it inherited on other files were
    /// closed on exec.
    fn apply_exec(
        &mut self,
        at: u64,
        actor: Actor,
        locked: Option<&[(u32, u64)]>,
        out: &mut Vec<Output>,
    ) {
        let pid = actor.pid;
        self.lineages.exec(at, pid, actor.comm);
        let Some(locked) = locked else {
            return;
        };
        let Some(inherited) = self.inherited.get_mut(&pid) else {
            return;
        };
        inherited.retain(|entry| locked.contains(&(entry.lock.dev, entry.lock.ino)));
        let kept: SmallVec<[Inherited; 1]> = inherited
            .iter_mut()
            .map(|entry| {
                let before = *entry;
                entry.unsaid_fork = None;
                before
            })
            .collect();
        for entry in kept {
            if let Some(forked) = entry.unsaid_fork {
                let child = Actor {
                    comm: entry.from.comm,
                    ..actor
                };
                self.push_inherit(forked, child, entry.lock, entry.from, Via::Fork, out);
            }
            self.push_inherit(at, actor, entry.lock, entry.from, Via::Exec, out);
        }
    }

    fn apply_passed(
        &mut self,
        at: u64,
        actor: Actor,
        received: bool,
        files: &[u64],
        out: &mut Vec<Output>,
    ) {
        if !received {
            self.lineages.sent(actor, files);
            return;
        }
        let senders = self.lineages.received(at, actor.pid, actor.comm, files);
        for (&file, &from) in files.iter().zip(&senders) {
            let locks: SmallVec<[LockId; 1]> = self
                .locks
                .keys()
                .filter(|lock| lock.owner == file && inheritable(lock.kind))
                .copied()
                .collect();
            for lock in locks {
                self.inherited
                    .entry(actor.pid)
                    .or_default()
                    .push(Inherited {
                        lock,
                        from,
                        unsaid_fork: None,
                    });
                self.push_inherit(at, actor, lock, from, Via::UnixSocket, out);
            }
        }
    }

    /// The flock and OFD locks `pid` holds through a description: those it took and those it
    /// got from another process.
    fn descriptions_held(&self, pid: u32) -> SmallVec<[LockId; 1]> {
        let mut held: SmallVec<[LockId; 1]> = SmallVec::new();
        let taken = self.taken_by.get(&pid).into_iter().flatten();
        let inherited = self.inherited.get(&pid).into_iter().flatten();
        for lock in taken.chain(inherited.map(|entry| &entry.lock)) {
            if inheritable(lock.kind) && self.locks.contains_key(lock) && !held.contains(lock) {
                held.push(*lock);
            }
        }
        held
    }

    fn push_inherit(
        &self,
        at: u64,
        actor: Actor,
        lock: LockId,
        from: Actor,
        via: Via,
        out: &mut Vec<Output>,
    ) {
        let Some(held) = self.locks.get(&lock).and_then(|ranges| ranges.first()) else {
            return;
        };
        out.push(Output::Inherit {
            at,
            actor,
            lock,
            held: *held,
            from,
            via,
        });
    }
}

/// How the holders the kernel showed came to hold `lock`, taken as `held`.
fn lineage_of(
    lineages: &lineage::Lineages,
    lock: &LockId,
    held: &Held,
    kernel: &lock_table::Lock,
) -> Vec<Step> {
    let why = if held.since_ns.is_none() {
        Why::BeforeStart
    } else {
        Why::NotSeen
    };
    lineage::merged(holder_actors(&kernel.holders).iter().map(|holder| {
        lineages
            .of(held.taker.pid, held.since_ns, holder.pid, lock.owner)
            .unwrap_or_else(|| {
                vec![Step {
                    pid: holder.pid,
                    comm: holder.comm,
                    via: Via::Unknown(why),
                    from: 0,
                    at: None,
                }]
            })
    }))
}

/// Locks that belong to an open file description, which other processes can come to share.
fn inheritable(kind: LockKind) -> bool {
    matches!(kind, LockKind::Flock | LockKind::Ofd)
}

/// A command name as the kernel keeps it: at most 15 bytes, NUL-padded.
fn comm_bytes(command: &str) -> [u8; 16] {
    let mut comm = [0u8; 16];
    let len = command.len().min(15);
    comm[..len].copy_from_slice(&command.as_bytes()[..len]);
    comm
}

/// The holders the kernel's table showed, as actors (their main threads).
fn holder_actors(holders: &[lock_table::Holder]) -> SmallVec<[Actor; 1]> {
    let mut actors: SmallVec<[Actor; 1]> = holders
        .iter()
        .map(|holder| {
            Actor::process(
                holder.pid,
                comm_bytes(&holder.comm),
                holder.start_time.unwrap_or(0),
            )
        })
        .collect();
    // Sorted by pid: one per process, whatever its number of fds on the lock.
    actors.dedup_by_key(|actor| actor.pid);
    actors
}

#[cfg(test)]
mod tests {
    use aimlock_common::{FILE_LOCK_DEFERRED, fl_flags, fl_type};

    use super::*;

    const MS: u64 = 1_000_000;
    const DEV: u32 = (8 << 20) | 1;
    const INO: u64 = 77;
    /// `struct file *` values, for flock and OFD owners.
    const FILE_A: u64 = 0xffff_0000_0000_a000;
    const FILE_B: u64 = 0xffff_0000_0000_b000;
    /// A `files_struct *`, for POSIX owners.
    const FILES_1: u64 = 0xffff_0000_0001_0000;

    fn comm(name: &str) -> [u8; 16] {
        let mut comm = [0u8; 16];
        comm[..name.len()].copy_from_slice(name.as_bytes());
        comm
    }

    struct Op(LockOp);

    impl Op {
        fn flock(at_ms: u64, pid: u32, owner: u64, lock_type: u8, ret: i32) -> Self {
            Self(LockOp {
                ts_ns: at_ms * MS,
                pid,
                tid: pid,
                comm: comm("worker"),
                kind: LockKind::Flock,
                dev: DEV,
                ino: INO,
                owner,
                lock_type,
                flags: fl_flags::FLOCK,
                start: 0,
                end: END_OF_FILE,
                ret,
                file: aimlock_common::FileName::NONE,
                ns_pid: 0,
                start_time: 0,
                exiting: None,
            })
        }

        fn posix(at_ms: u64, pid: u32, lock_type: u8, start: i64, end: i64) -> Self {
            Self(LockOp {
                kind: LockKind::Posix,
                owner: FILES_1,
                flags: fl_flags::POSIX,
                start,
                end,
                ..Self::flock(at_ms, pid, 0, lock_type, 0).0
            })
        }

        fn flags(mut self, flags: u32) -> Self {
            self.0.flags |= flags;
            self
        }

        fn tid(mut self, tid: u32) -> Self {
            self.0.tid = tid;
            self
        }

        fn owner(mut self, owner: u64) -> Self {
            self.0.owner = owner;
            self
        }

        fn ino(mut self, ino: u64) -> Self {
            self.0.ino = ino;
            self
        }

        fn ret(mut self, ret: i32) -> Self {
            self.0.ret = ret;
            self
        }

        /// An OFD request: the owner is the open file description.
        fn ofd(at_ms: u64, pid: u32, owner: u64, lock_type: u8, start: i64, end: i64) -> Self {
            Self(LockOp {
                kind: LockKind::Ofd,
                flags: fl_flags::OFDLCK,
                ..Self::posix(at_ms, pid, lock_type, start, end)
                    .owner(owner)
                    .0
            })
        }

        fn input(self) -> Input {
            Input::Lock(self.0)
        }
    }

    fn exit(at_ms: u64, pid: u32) -> Input {
        Input::Exit {
            ts_ns: at_ms * MS,
            pid,
            comm: comm("worker"),
            start_time: 0,
        }
    }

    /// What a test feeds the tracker: a record, or a scan of the kernel's table that began at
    /// `begin_ms` and found `locks` by `end_ms`.
    enum Feed {
        Record(Input),
        View {
            begin_ms: u64,
            end_ms: u64,
            locks: Vec<lock_table::Lock>,
        },
    }

    impl From<Input> for Feed {
        fn from(input: Input) -> Self {
            Self::Record(input)
        }
    }

    fn view(begin_ms: u64, end_ms: u64, locks: Vec<lock_table::Lock>) -> Feed {
        Feed::View {
            begin_ms,
            end_ms,
            locks,
        }
    }

    /// A lock as a scan of /proc shows it: recorded taker `pid` (0 for an OFD lock), `holders`
    /// with an fd on it; whether the taker is among them decides the orphan, as in lock_table.
    fn kernel_lock(kind: LockKind, mode: Mode, pid: i32, holders: &[u32]) -> lock_table::Lock {
        let recorded = if kind == LockKind::Ofd { -1 } else { pid };
        lock_table::Lock {
            dev: "8:1".to_owned(),
            kernel_dev: DEV,
            ino: INO,
            path: Some("/run/x.lock".to_owned()),
            ..lock_table::example(kind, mode, recorded, holders)
        }
    }

    fn ranged(mut lock: lock_table::Lock, start: u64, end: u64) -> lock_table::Lock {
        lock.start = start;
        lock.end = Some(end);
        lock
    }

    /// Feeds inputs in the given order and returns everything the tracker says.
    fn run(inputs: impl IntoIterator<Item = Input>) -> (Tracker, Vec<Output>) {
        feed(inputs.into_iter().map(Feed::from))
    }

    /// As [`run`], with kernel views among the records.
    fn feed(steps: impl IntoIterator<Item = Feed>) -> (Tracker, Vec<Output>) {
        let mut tracker = Tracker::new();
        let mut out = Vec::new();
        for step in steps {
            match step {
                Feed::Record(input) => tracker.push(input),
                Feed::View {
                    begin_ms,
                    end_ms,
                    locks,
                } => {
                    tracker.push_scan_begin(begin_ms * MS);
                    let locks = locks
                        .into_iter()
                        .map(|lock| ViewedLock {
                            lock,
                            in_scope: true,
                        })
                        .collect();
                    tracker.push_view(KernelView {
                        end_ns: end_ms * MS,
                        complete: true,
                        locks,
                    });
                }
            }
        }
        tracker.finish(&mut out);
        out.retain(|o| {
            !matches!(
                o,
                Output::Exit {
                    took_locks: false,
                    ..
                }
            )
        });
        (tracker, out)
    }

    fn names(out: &[Output]) -> Vec<&'static str> {
        out.iter()
            .map(|o| match o {
                Output::Acquire { .. } => "acquire",
                Output::Wait { .. } => "wait",
                Output::Release { .. } => "release",
                Output::Fail { .. } => "fail",
                Output::Exit { .. } => "exit",
                Output::Orphan { .. } => "orphan",
                Output::OrphanEnd { .. } => "orphan_end",
                Output::Held { .. } => "held",
                Output::WaitAbandoned { .. } => "abandoned",
                Output::Deadlock { .. } => "deadlock",
                Output::Inherit { via, .. } => match via {
                    Via::Fork => "inherit-fork",
                    Via::Exec => "inherit-exec",
                    _ => "inherit",
                },
            })
            .collect()
    }

    /// A process that gets the pid of one that exited a moment ago (within its exit's grace
    /// period) is another process: its closes are no exit's, and the end of the first one's
    /// grace leaves its locks alone.
    #[test]
    fn a_pid_reused_during_an_exits_grace_is_another_process() {
        const FILES_2: u64 = 0xffff_0000_0002_0000;
        let started = |op: Op, start_time| Input::Lock(LockOp { start_time, ..op.0 });
        let (tracker, out) = run([
            started(Op::posix(1, 10, fl_type::WRLCK, 0, 9), 1),
            Input::Exit {
                ts_ns: 100 * MS,
                pid: 10,
                comm: comm("worker"),
                start_time: 1,
            },
            started(
                Op::posix(110, 10, fl_type::UNLCK, 0, 9).flags(fl_flags::CLOSE),
                1,
            ),
            // Pid 10 again, 400 ms into the first one's grace.
            started(Op::posix(500, 10, fl_type::WRLCK, 0, 9).owner(FILES_2), 2),
            started(Op::posix(600, 10, fl_type::WRLCK, 20, 29).owner(FILES_2), 2),
            started(
                Op::posix(700, 10, fl_type::UNLCK, 20, 29)
                    .owner(FILES_2)
                    .flags(fl_flags::CLOSE),
                2,
            ),
            // Past the first one's grace: the second still holds bytes 0-9.
            started(Op::posix(1500, 20, fl_type::RDLCK, 50, 59), 3),
        ]);
        assert_eq!(
            names(&out),
            [
                "acquire", "exit", "release", "acquire", "acquire", "release", "acquire"
            ]
        );
        let reasons: Vec<(u64, ReleaseReason)> = out
            .iter()
            .filter_map(|output| match output {
                Output::Release { actor, reason, .. } => Some((actor.start_time, *reason)),
                _ => None,
            })
            .collect();
        assert_eq!(
            reasons,
            [(1, ReleaseReason::Exit), (2, ReleaseReason::Close)]
        );
        let held: Vec<(u64, i64)> = tracker
            .held()
            .map(|(_, held)| (held.taker.start_time, held.start))
            .collect();
        assert!(held.contains(&(2, 0)), "{held:?}");
    }

    #[test]
    fn flock_acquire_then_unlock() {
        let (tracker, out) = run([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input(),
            Op::flock(5, 10, FILE_A, fl_type::UNLCK, 0).input(),
        ]);
        assert_eq!(names(&out), ["acquire", "release"]);
        let Output::Release {
            held, reason, at, ..
        } = &out[1]
        else {
            unreachable!()
        };
        assert_eq!(
            (*reason, at - held.since_ns.unwrap()),
            (ReleaseReason::Unlock, 4 * MS)
        );
        assert_eq!(tracker.held().count(), 0);
    }

    #[test]
    fn deferred_retries_of_one_call_give_one_wait_and_one_acquire() {
        let (_, out) = run([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, FILE_LOCK_DEFERRED).input(),
            Op::flock(200, 10, FILE_A, fl_type::WRLCK, FILE_LOCK_DEFERRED).input(),
            Op::flock(400, 10, FILE_A, fl_type::WRLCK, FILE_LOCK_DEFERRED).input(),
            Op::flock(501, 10, FILE_A, fl_type::WRLCK, 0).input(),
        ]);
        assert_eq!(names(&out), ["wait", "acquire"]);
        let Output::Acquire { wait_ns, .. } = out[1] else {
            unreachable!()
        };
        assert_eq!(wait_ns, Some(500 * MS));
    }

    #[test]
    fn refused_attempt_is_a_failure_with_its_errno() {
        let (tracker, out) = run([Op::flock(1, 10, FILE_A, fl_type::WRLCK, -11).input()]);
        assert_eq!(names(&out), ["fail"]);
        let Output::Fail { errno, .. } = out[0] else {
            unreachable!()
        };
        assert_eq!(errno, 11);
        assert_eq!(tracker.held().count(), 0);
    }

    #[test]
    fn flock_upgrade_drops_the_old_lock_first() {
        let (tracker, out) = run([
            Op::flock(1, 10, FILE_A, fl_type::RDLCK, 0).input(),
            // The upgrade is refused: flock(2) has already dropped the shared lock.
            Op::flock(2, 10, FILE_A, fl_type::WRLCK, -11).input(),
        ]);
        assert_eq!(names(&out), ["acquire", "release", "fail"]);
        let Output::Release { reason, .. } = out[1] else {
            unreachable!()
        };
        assert_eq!(reason, ReleaseReason::Convert);
        assert_eq!(tracker.held().count(), 0);

        let (tracker, out) = run([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input(),
            Op::flock(2, 10, FILE_A, fl_type::RDLCK, 0).input(),
            // Asking again for the mode already held changes nothing.
            Op::flock(3, 10, FILE_A, fl_type::RDLCK, 0).input(),
        ]);
        assert_eq!(names(&out), ["acquire", "release", "acquire"]);
        let held: Vec<_> = tracker.held().map(|(_, held)| held.mode).collect();
        assert_eq!(held, [Mode::Read]);
    }

    #[test]
    fn posix_unlock_in_the_middle_splits_the_range() {
        let (tracker, out) = run([
            Op::posix(1, 10, fl_type::WRLCK, 0, 99).input(),
            Op::posix(2, 10, fl_type::UNLCK, 10, 19).input(),
        ]);
        assert_eq!(names(&out), ["acquire", "release"]);
        let Output::Release { start, end, .. } = out[1] else {
            unreachable!()
        };
        assert_eq!((start, end), (10, 19));
        let mut left: Vec<_> = tracker.held().map(|(_, h)| (h.start, h.end)).collect();
        left.sort();
        assert_eq!(left, [(0, 9), (20, 99)]);
    }

    #[test]
    fn posix_downgrade_of_part_of_a_range_converts_that_part() {
        let (tracker, out) = run([
            Op::posix(1, 10, fl_type::WRLCK, 0, 99).input(),
            Op::posix(2, 10, fl_type::RDLCK, 50, 59).input(),
        ]);
        assert_eq!(names(&out), ["acquire", "release", "acquire"]);
        let Output::Release {
            start, end, reason, ..
        } = out[1]
        else {
            unreachable!()
        };
        assert_eq!((start, end, reason), (50, 59, ReleaseReason::Convert));
        let mut held: Vec<_> = tracker
            .held()
            .map(|(_, h)| (h.start, h.end, h.mode))
            .collect();
        held.sort_by_key(|h| h.0);
        assert_eq!(
            held,
            [
                (0, 49, Mode::Write),
                (50, 59, Mode::Read),
                (60, 99, Mode::Write)
            ]
        );
    }

    #[test]
    fn overlapping_and_adjacent_posix_ranges_of_one_mode_merge_keeping_the_first_time() {
        let (tracker, out) = run([
            Op::posix(1, 10, fl_type::WRLCK, 0, 9).input(),
            Op::posix(2, 10, fl_type::WRLCK, 5, 19).input(),
            // Already covered: nothing to say.
            Op::posix(3, 10, fl_type::WRLCK, 6, 7).input(),
            // Adjacent: the kernel merges it into one lock, 0-29.
            Op::posix(4, 10, fl_type::WRLCK, 20, 29).input(),
        ]);
        assert_eq!(names(&out), ["acquire", "acquire", "acquire"]);
        let held: Vec<_> = tracker
            .held()
            .map(|(_, h)| (h.start, h.end, h.since_ns))
            .collect();
        assert_eq!(held, [(0, 29, Some(MS))]);

        let (tracker, out) = run([
            Op::posix(1, 10, fl_type::WRLCK, 0, 9).input(),
            Op::posix(2, 10, fl_type::WRLCK, 10, 19).input(),
            Op::posix(4, 10, fl_type::UNLCK, 0, END_OF_FILE).input(),
        ]);
        assert_eq!(names(&out), ["acquire", "acquire", "release"]);
        let Output::Release {
            start, end, held, ..
        } = out[2]
        else {
            unreachable!()
        };
        assert_eq!((start, end, held.since_ns), (0, 19, Some(MS)));
        assert_eq!(tracker.held().count(), 0);
    }

    #[test]
    fn access_checks_store_nothing() {
        let (tracker, out) = run([Op::posix(1, 10, fl_type::WRLCK, 0, 9)
            .flags(fl_flags::ACCESS)
            .input()]);
        assert!(names(&out).is_empty());
        assert_eq!(tracker.held().count(), 0);
    }

    #[test]
    fn release_during_the_takers_exit_is_not_an_orphan() {
        let (_, out) = run([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input(),
            exit(50, 10),
            Op::flock(51, 10, FILE_A, fl_type::UNLCK, 0)
                .flags(fl_flags::CLOSE)
                .input(),
        ]);
        assert_eq!(names(&out), ["acquire", "exit", "release"]);
        let Output::Release { reason, .. } = out[2] else {
            unreachable!()
        };
        assert_eq!(reason, ReleaseReason::Exit);
    }

    /// An acquire says whether its owner held nothing of the lock before the call, and a call's
    /// last release whether it holds nothing after: where a stretch of its own locking begins
    /// and ends, for the folder.
    #[test]
    fn acquires_and_releases_say_where_an_owner_s_holding_begins_and_ends() {
        let (_, out) = run([
            Op::posix(1, 10, fl_type::RDLCK, 100, 100).input(),
            Op::posix(2, 10, fl_type::RDLCK, 102, 611).input(),
            Op::posix(3, 10, fl_type::UNLCK, 100, 100).input(),
            // The shared range converted: released in its read mode, taken in write.
            Op::posix(4, 10, fl_type::WRLCK, 102, 611).input(),
            // Everything: one call, its last release the only one that ends the holding.
            Op::posix(5, 10, fl_type::UNLCK, 0, END_OF_FILE).input(),
            Op::flock(6, 10, FILE_A, fl_type::WRLCK, 0).input(),
            // A flock conversion keeps the lock.
            Op::flock(7, 10, FILE_A, fl_type::RDLCK, 0).input(),
            Op::flock(8, 10, FILE_A, fl_type::UNLCK, 0).input(),
        ]);
        let marks: Vec<String> = out
            .iter()
            .map(|output| match output {
                Output::Acquire { first, .. } => format!("acquire first:{first}"),
                Output::Release { last, reason, .. } => {
                    format!("release {reason:?} last:{last}")
                }
                _ => "other".to_owned(),
            })
            .collect();
        assert_eq!(
            marks,
            [
                "acquire first:true",
                "acquire first:false",
                "release Unlock last:false",
                "release Convert last:false",
                "acquire first:false",
                "release Unlock last:true",
                "acquire first:true",
                "release Convert last:false",
                "acquire first:false",
                "release Unlock last:true",
            ]
        );
    }

    /// A process that released every lock it took exits with none: its exit is not the log's,
    /// however often it locked (its emptied set of locks taken is kept for its next lock, and
    /// says nothing); one that still holds a lock exits with it.
    #[test]
    fn an_exit_after_every_lock_was_released_takes_no_lock_with_it() {
        let mut inputs = Vec::new();
        for pair in 0..20 {
            inputs.push(Op::flock(1 + 2 * pair, 10, FILE_A, fl_type::WRLCK, 0).input());
            inputs.push(Op::flock(2 + 2 * pair, 10, FILE_A, fl_type::UNLCK, 0).input());
        }
        inputs.push(Op::flock(50, 11, FILE_B, fl_type::WRLCK, 0).input());
        inputs.push(Op::flock(51, 11, FILE_B, fl_type::UNLCK, 0).input());
        inputs.push(Op::flock(52, 11, FILE_B, fl_type::WRLCK, 0).input());
        inputs.push(exit(60, 10));
        inputs.push(exit(61, 11));
        let (tracker, out) = run(inputs);
        let exits: Vec<(u32, u64)> = out
            .iter()
            .filter_map(|output| match output {
                Output::Exit { actor, locks, .. } => Some((actor.pid, *locks)),
                _ => None,
            })
            .collect();
        assert_eq!(exits, [(11, 1)]);
        // Both exits' graces have ended: neither set is kept.
        assert!(tracker.taken_by.is_empty());
    }

    /// An exit that closes thousands of files (or waits for a CPU) can take longer than its
    /// grace: the kernel's word that the closing task was exiting makes its releases the exit's
    /// however late they come; without it, a close past the grace is a plain close.
    #[test]
    fn a_close_by_a_task_the_kernel_saw_exiting_is_a_release_at_exit_however_late() {
        let late_close = |exiting: Option<bool>| {
            let (_, out) = run([
                Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input(),
                exit(50, 10),
                Input::Lock(LockOp {
                    exiting,
                    ..Op::flock(50 + 3 * EXIT_GRACE_NS / MS, 10, FILE_A, fl_type::UNLCK, 0)
                        .flags(fl_flags::CLOSE)
                        .0
                }),
            ]);
            out.iter()
                .find_map(|output| match output {
                    Output::Release { reason, .. } => Some(*reason),
                    _ => None,
                })
                .expect("a release")
        };
        assert_eq!(late_close(Some(true)), ReleaseReason::Exit);
        assert_eq!(late_close(None), ReleaseReason::Close);
        // A close the kernel saw outside any exit is a close, even within an exit's grace.
        let (_, out) = run([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input(),
            exit(50, 10),
            Input::Lock(LockOp {
                exiting: Some(false),
                ..Op::flock(51, 10, FILE_A, fl_type::UNLCK, 0)
                    .flags(fl_flags::CLOSE)
                    .0
            }),
        ]);
        let Output::Release { reason, .. } = out[2] else {
            unreachable!()
        };
        assert_eq!(reason, ReleaseReason::Close);
    }

    /// The closes of an exit can reach the tracker seconds after it, when a burst of them waits
    /// in the reader's backlog: the exit's grace does not end on the clock alone before the
    /// reader has read past it.
    #[test]
    fn an_exits_grace_waits_for_a_reader_that_is_behind() {
        // 10 locks and exits; at 5 s the reader has read only up to the exit.
        let exited_with_the_reader_behind = || {
            let mut tracker = Tracker::new();
            let mut out = Vec::new();
            tracker.push(Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input());
            tracker.push(exit(50, 10));
            tracker.ring_read_until(50 * MS);
            tracker.advance(5000 * MS, &mut out);
            (tracker, out)
        };
        let (mut tracker, mut out) = exited_with_the_reader_behind();
        assert_eq!(names(&out), ["acquire", "exit"]);
        assert_eq!(tracker.scan_wanted(), None, "no suspect yet");
        tracker.push(
            Op::flock(51, 10, FILE_A, fl_type::UNLCK, 0)
                .flags(fl_flags::CLOSE)
                .input(),
        );
        tracker.ring_read_until(5000 * MS);
        tracker.advance(5100 * MS, &mut out);
        assert_eq!(names(&out), ["acquire", "exit", "release"]);
        let Output::Release { reason, .. } = out[2] else {
            unreachable!()
        };
        assert_eq!(reason, ReleaseReason::Exit);

        // Once the reader has read past the grace, what the exit left held is suspected.
        let (mut tracker, mut out) = exited_with_the_reader_behind();
        assert_eq!(tracker.scan_wanted(), None);
        tracker.ring_read_until(5000 * MS);
        tracker.advance(5000 * MS, &mut out);
        assert_eq!(tracker.scan_wanted(), Some(ScanWanted::Orphans));
    }

    fn fork(at_ms: u64, pid: u32, name: &str, child: u32) -> Input {
        Input::Fork {
            ts_ns: at_ms * MS,
            pid,
            comm: comm(name),
            start_time: 0,
            child,
        }
    }

    /// An exec whose descriptors still show flock/OFD locks on `locked` inodes (on DEV).
    fn exec(at_ms: u64, pid: u32, name: &str, locked: &[u64]) -> Input {
        Input::Exec {
            ts_ns: at_ms * MS,
            pid,
            comm: comm(name),
            start_time: 0,
            locked: Some(locked.iter().map(|&ino| (DEV, ino)).collect()),
        }
    }

    fn passed(at_ms: u64, pid: u32, name: &str, received: bool, files: &[u64]) -> Input {
        Input::Passed {
            ts_ns: at_ms * MS,
            pid,
            comm: comm(name),
            start_time: 0,
            received,
            files: files.iter().copied().collect(),
        }
    }

    fn lineage_of_orphan(out: &[Output]) -> Vec<(u32, Via, u32)> {
        let Some(Output::Orphan { lineage, .. }) =
            out.iter().find(|o| matches!(o, Output::Orphan { .. }))
        else {
            panic!("no orphan in {:?}", names(out));
        };
        lineage.iter().map(|s| (s.pid, s.via, s.from)).collect()
    }

    fn inherits(out: &[Output]) -> Vec<(u32, Via, u32)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Inherit {
                    actor, from, via, ..
                } => Some((actor.pid, *via, from.pid)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_background_command_of_a_locked_shell_inherits_the_lock_and_is_its_orphans_holder() {
        // flock FILE -c 'sleep 30 &': flock(1) 10 locks, forks 11 which runs sh, which forks
        // 12 which runs sleep; sh and flock exit, sleep holds the lock.
        let (_, out) = feed([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input().into(),
            fork(2, 10, "flock", 11).into(),
            exec(3, 11, "sh", &[INO]).into(),
            fork(4, 11, "sh", 12).into(),
            exec(5, 12, "sleep", &[INO]).into(),
            exit(6, 11).into(),
            exit(7, 10).into(),
            view(
                1100,
                1110,
                vec![kernel_lock(LockKind::Flock, Mode::Write, 10, &[12])],
            ),
        ]);
        assert_eq!(
            inherits(&out),
            [
                (11, Via::Fork, 10),
                (11, Via::Exec, 10),
                (12, Via::Fork, 11),
                (12, Via::Exec, 11)
            ]
        );
        assert_eq!(
            lineage_of_orphan(&out),
            [
                (11, Via::Fork, 10),
                (11, Via::Exec, 11),
                (12, Via::Fork, 11),
                (12, Via::Exec, 12)
            ]
        );
        let Some(Output::Inherit { actor, lock, .. }) =
            out.iter().rfind(|o| matches!(o, Output::Inherit { .. }))
        else {
            unreachable!()
        };
        assert_eq!((actor.comm, lock.owner), (comm("sleep"), FILE_A));
    }

    #[test]
    fn children_that_close_the_description_on_exec_or_exit_first_are_not_said() {
        let (_, out) = run([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input(),
            // A compiler run with the lock's fd close-on-exec, and a helper that exits.
            fork(2, 10, "make", 11),
            exec(3, 11, "cc", &[]),
            fork(4, 10, "make", 12),
            exit(5, 12),
            exit(6, 11),
            Op::flock(7, 10, FILE_A, fl_type::UNLCK, 0).input(),
        ]);
        assert!(inherits(&out).is_empty(), "{:?}", names(&out));
    }

    #[test]
    fn a_child_that_outlives_its_parent_with_the_description_is_said_at_the_parents_exit() {
        let (_, out) = run([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input(),
            fork(2, 10, "daemon", 11),
            exit(3, 10),
        ]);
        assert_eq!(inherits(&out), [(11, Via::Fork, 10)]);
        let Some(Output::Inherit { at, .. }) =
            out.iter().find(|o| matches!(o, Output::Inherit { .. }))
        else {
            unreachable!()
        };
        assert_eq!(*at, 2 * MS, "said with the fork's own time");
        // POSIX locks are not inherited.
        let (_, out) = run([
            Op::posix(1, 10, fl_type::WRLCK, 0, 9).input(),
            fork(2, 10, "daemon", 11),
            exit(3, 10),
        ]);
        assert!(inherits(&out).is_empty());
    }

    #[test]
    fn a_description_received_over_a_socket_is_inherited_and_its_lineage_says_so() {
        let (_, out) = feed([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input().into(),
            passed(2, 10, "sender", false, &[FILE_A]).into(),
            passed(3, 20, "receiver", true, &[FILE_A]).into(),
            exit(4, 10).into(),
            view(
                1100,
                1110,
                vec![kernel_lock(LockKind::Flock, Mode::Write, 10, &[20])],
            ),
        ]);
        assert_eq!(inherits(&out), [(20, Via::UnixSocket, 10)]);
        assert_eq!(lineage_of_orphan(&out), [(20, Via::UnixSocket, 10)]);
    }

    #[test]
    fn a_holder_the_tracer_did_not_see_get_the_description_has_an_unknown_lineage() {
        // Seen taken, but not how its holder got it.
        let (_, out) = feed([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input().into(),
            exit(4, 10).into(),
            view(
                1100,
                1110,
                vec![kernel_lock(LockKind::Flock, Mode::Write, 10, &[30])],
            ),
        ]);
        assert_eq!(
            lineage_of_orphan(&out),
            [(30, Via::Unknown(Why::NotSeen), 0)]
        );
        // Held, with its taker gone, before the tracer started.
        let (_, out) = feed([view(
            1,
            2,
            vec![kernel_lock(LockKind::Flock, Mode::Write, 99_999, &[30])],
        )]);
        assert_eq!(
            lineage_of_orphan(&out),
            [(30, Via::Unknown(Why::BeforeStart), 0)]
        );
    }

    #[test]
    fn lock_still_held_after_the_grace_period_is_an_orphan_until_its_holder_releases_it() {
        let (tracker, out) = feed([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input().into(),
            exit(50, 10).into(),
            // The grace ends at 1050 ms: the kernel's table is asked.
            view(
                1100,
                1110,
                vec![kernel_lock(LockKind::Flock, Mode::Write, 10, &[11])],
            ),
            // The child that inherited the description exits two seconds later.
            exit(2050, 11).into(),
            Op::flock(2051, 11, FILE_A, fl_type::UNLCK, 0)
                .flags(fl_flags::CLOSE)
                .input()
                .into(),
        ]);
        assert_eq!(
            names(&out),
            ["acquire", "exit", "orphan", "release", "orphan_end"]
        );
        let Output::Orphan {
            taker_exit,
            held,
            ref kernel,
            at,
            ..
        } = out[2]
        else {
            unreachable!()
        };
        assert_eq!((taker_exit, held.taker.pid), (Some(50 * MS), 10));
        assert_eq!(at, 1110 * MS);
        let holders: Vec<u32> = kernel.holders.iter().map(|holder| holder.pid).collect();
        assert_eq!(holders, [11]);
        let Output::OrphanEnd {
            by,
            reason,
            at,
            taker_exit,
            ..
        } = out[4]
        else {
            unreachable!()
        };
        assert_eq!((by.pid, reason), (11, ReleaseReason::Exit));
        assert_eq!(at - taker_exit.unwrap(), 2001 * MS);
        assert_eq!(tracker.held().count(), 0);
    }

    #[test]
    fn locks_held_at_start_are_seeded_and_tied_to_the_records_that_later_name_them() {
        let (tracker, out) = feed([
            view(
                1,
                2,
                vec![
                    kernel_lock(LockKind::Flock, Mode::Write, 10, &[10]),
                    ranged(kernel_lock(LockKind::Posix, Mode::Read, 20, &[20]), 0, 9),
                ],
            ),
            // Their owners, unknown until now, come with these records.
            Op::flock(5, 10, FILE_A, fl_type::UNLCK, 0).input().into(),
            exit(6, 20).into(),
            Op::posix(7, 20, fl_type::UNLCK, 0, END_OF_FILE)
                .flags(fl_flags::CLOSE)
                .input()
                .into(),
        ]);
        assert_eq!(names(&out), ["held", "held", "release", "exit", "release"]);
        let Output::Release {
            held,
            reason,
            actor,
            ..
        } = out[2]
        else {
            unreachable!()
        };
        // Taken before the trace: no time, so no held_ns.
        assert_eq!(
            (held.since_ns, reason, actor.pid),
            (None, ReleaseReason::Unlock, 10)
        );
        let Output::Exit { locks, .. } = out[3] else {
            unreachable!()
        };
        assert_eq!(locks, 1);
        let Output::Release {
            reason, start, end, ..
        } = out[4]
        else {
            unreachable!()
        };
        assert_eq!((reason, start, end), (ReleaseReason::Exit, 0, 9));
        assert_eq!(tracker.held().count(), 0);
    }

    #[test]
    fn an_orphan_present_at_start_is_said_at_once_and_ends_with_its_holder() {
        let (tracker, out) = feed([
            // Taker 10 is gone; child 11 holds the description.
            view(
                1,
                2,
                vec![kernel_lock(LockKind::Flock, Mode::Write, 10, &[11])],
            ),
            exit(3000, 11).into(),
            Op::flock(3001, 11, FILE_A, fl_type::UNLCK, 0)
                .flags(fl_flags::CLOSE)
                .input()
                .into(),
        ]);
        assert_eq!(names(&out), ["held", "orphan", "release", "orphan_end"]);
        let Output::Orphan { taker_exit, .. } = out[1] else {
            unreachable!()
        };
        assert_eq!(taker_exit, None);
        let Output::OrphanEnd {
            by,
            taker_exit,
            reason,
            ..
        } = out[3]
        else {
            unreachable!()
        };
        assert_eq!((by.pid, taker_exit), (11, None));
        assert_eq!(reason, ReleaseReason::Exit);
        assert_eq!(tracker.held().count(), 0);
    }

    #[test]
    fn a_release_that_comes_before_the_kernels_word_is_no_orphan() {
        // The holder exits just after the taker's grace: its release record comes before the
        // view that would have shown the lock.
        for release_ms in [1049, 1051, 1099, 1105] {
            let (_, out) = feed([
                Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input().into(),
                exit(50, 10).into(),
                Op::flock(release_ms, 11, FILE_A, fl_type::UNLCK, 0)
                    .flags(fl_flags::CLOSE)
                    .input()
                    .into(),
                // Scanned from 1100 to 1110: a release during the scan leaves the file alone.
                view(1100, 1110, Vec::new()),
            ]);
            assert_eq!(
                names(&out),
                ["acquire", "exit", "release"],
                "release at {release_ms} ms"
            );
        }
    }

    #[test]
    fn a_suspect_the_kernel_no_longer_holds_was_released_in_lost_records() {
        let (tracker, out) = feed([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input().into(),
            exit(50, 10).into(),
            view(1100, 1110, Vec::new()),
        ]);
        assert_eq!(names(&out), ["acquire", "exit", "release"]);
        let Output::Release { reason, at, .. } = out[2] else {
            unreachable!()
        };
        assert_eq!((reason, at), (ReleaseReason::Lost, 1110 * MS));
        assert_eq!(tracker.held().count(), 0);
    }

    #[test]
    fn a_suspect_without_a_visible_holder_waits_for_more_views() {
        let mut steps: Vec<Feed> = vec![
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input().into(),
            exit(50, 10).into(),
        ];
        for look in 0..u64::from(ORPHAN_LOOKS) {
            let at = 1100 + 100 * look;
            // The kernel holds it; no process can be seen holding it (mid-exit, or in flight).
            steps.push(view(
                at,
                at + 5,
                vec![kernel_lock(LockKind::Flock, Mode::Write, 10, &[])],
            ));
        }
        let (_, out) = feed(steps);
        assert_eq!(names(&out), ["acquire", "exit", "orphan"]);
        let Output::Orphan { at, ref kernel, .. } = out[2] else {
            unreachable!()
        };
        assert_eq!(at, (1100 + 100 * (u64::from(ORPHAN_LOOKS) - 1) + 5) * MS);
        assert!(kernel.holders.is_empty());
    }

    #[test]
    fn an_orphans_holders_are_those_of_its_own_description() {
        let (_, out) = feed([
            Op::flock(1, 10, FILE_A, fl_type::RDLCK, 0).input().into(),
            Op::flock(2, 20, FILE_B, fl_type::RDLCK, 0).input().into(),
            exit(50, 10).into(),
            // Process 20 holds a shared lock of its own on the same file.
            view(
                1100,
                1110,
                vec![
                    kernel_lock(LockKind::Flock, Mode::Read, 20, &[20]),
                    kernel_lock(LockKind::Flock, Mode::Read, 10, &[11]),
                ],
            ),
        ]);
        assert_eq!(names(&out), ["acquire", "acquire", "exit", "orphan"]);
        let Output::Orphan { ref kernel, .. } = out[3] else {
            unreachable!()
        };
        let holders: Vec<u32> = kernel.holders.iter().map(|holder| holder.pid).collect();
        assert_eq!(holders, [11]);
    }

    #[test]
    fn a_view_after_lost_records_releases_what_the_kernel_dropped_and_adds_what_it_holds() {
        let (tracker, out) = feed([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input().into(),
            // Lost: 10's unlock, and 30's POSIX lock on bytes 0-9.
            view(
                100,
                110,
                vec![ranged(
                    kernel_lock(LockKind::Posix, Mode::Write, 30, &[30]),
                    0,
                    9,
                )],
            ),
        ]);
        assert_eq!(names(&out), ["acquire", "release", "held"]);
        let Output::Release { reason, .. } = out[1] else {
            unreachable!()
        };
        assert_eq!(reason, ReleaseReason::Lost);
        let held: Vec<_> = tracker
            .held()
            .map(|(id, h)| (id.kind, h.start, h.end, h.taker.pid))
            .collect();
        assert_eq!(held, [(LockKind::Posix, 0, 9, 30)]);
    }

    #[test]
    fn a_view_waits_for_the_records_older_than_it_that_the_reader_has_not_read_yet() {
        let empty_view = |tracker: &mut Tracker| {
            tracker.push_scan_begin(35 * MS);
            tracker.push_view(KernelView {
                end_ns: 40 * MS,
                complete: true,
                locks: Vec::new(),
            });
        };
        let mut tracker = Tracker::new();
        let mut out = Vec::new();
        tracker.push(Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input());
        tracker.ring_read_until(5 * MS);
        tracker.advance(20 * MS, &mut out);
        // 10 unlocks at 30 ms; the reader, behind, has not read that record when a view that
        // ended at 40 ms (the lock no longer in it) arrives.
        empty_view(&mut tracker);
        tracker.ring_read_until(25 * MS);
        tracker.advance(1000 * MS, &mut out);
        assert_eq!(names(&out), ["acquire"], "the view waited");
        tracker.push(Op::flock(30, 10, FILE_A, fl_type::UNLCK, 0).input());
        tracker.ring_read_until(1000 * MS);
        tracker.advance(1100 * MS, &mut out);
        assert_eq!(names(&out), ["acquire", "release"]);
        let Output::Release { reason, at, .. } = out[1] else {
            unreachable!()
        };
        assert_eq!(
            (reason, at),
            (ReleaseReason::Unlock, 30 * MS),
            "not taken for lost"
        );
        // A record newer than the view's end says nothing of older ones still in a CPU's
        // batch: the view waits for the reader to say it read past them.
        let mut tracker = Tracker::new();
        let mut out = Vec::new();
        tracker.push(Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input());
        tracker.ring_read_until(5 * MS);
        empty_view(&mut tracker);
        tracker.push(Op::flock(41, 20, FILE_B, fl_type::WRLCK, 0).input());
        tracker.push(Op::flock(42, 20, FILE_B, fl_type::UNLCK, 0).input());
        tracker.advance(1000 * MS, &mut out);
        assert_eq!(names(&out), ["acquire"], "the view and what follows waited");
        // The batch's unlock at 30 ms, read after them.
        tracker.push(Op::flock(30, 10, FILE_A, fl_type::UNLCK, 0).input());
        tracker.ring_read_until(43 * MS);
        tracker.advance(1000 * MS, &mut out);
        assert_eq!(names(&out), ["acquire", "release", "acquire", "release"]);
        let Output::Release { reason, .. } = out[1] else {
            unreachable!()
        };
        assert_eq!(reason, ReleaseReason::Unlock, "not taken for lost");
        // A reader that never catches up does not hold a view back for ever.
        let mut tracker = Tracker::new();
        let mut out = Vec::new();
        tracker.push(Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input());
        tracker.ring_read_until(5 * MS);
        empty_view(&mut tracker);
        tracker.advance(
            40 * MS + VIEW_WAIT_MAX_NS + REORDER_WINDOW_NS + MS,
            &mut out,
        );
        assert_eq!(names(&out), ["acquire", "release"]);
        let Output::Release { reason, .. } = out[1] else {
            unreachable!()
        };
        assert_eq!(reason, ReleaseReason::Lost);
    }

    #[test]
    fn an_orphan_whose_takers_exit_was_lost_is_said_by_a_view_a_grace_period_later() {
        let orphaned = || vec![kernel_lock(LockKind::Flock, Mode::Write, 10, &[11])];
        let (_, out) = feed([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input().into(),
            // Lost: 10's exit. The kernel's table says 10 no longer holds it; 11 does. The
            // first views wait for an exit record still on its way; one an exit's grace period
            // after the first decides.
            view(3000, 3010, orphaned()),
            view(3100, 3110, orphaned()),
            view(4100, 4110, orphaned()),
        ]);
        assert_eq!(names(&out), ["acquire", "orphan"]);
        let Output::Orphan { taker_exit, .. } = out[1] else {
            unreachable!()
        };
        assert_eq!(taker_exit, None);
        // The exit record arrives between the two views, read late: the orphan names it.
        let (_, out) = feed([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input().into(),
            view(3000, 3010, orphaned()),
            exit(2990, 10).into(),
            view(4500, 4510, orphaned()),
        ]);
        let orphan = out
            .iter()
            .find_map(|output| match output {
                Output::Orphan { taker_exit, .. } => Some(*taker_exit),
                _ => None,
            })
            .expect("an orphan");
        assert_eq!(orphan, Some(2990 * MS));
        // A taker that still runs without holding it (mid-exit, or it closed its fd) is left to
        // its exit: the record of that exit may still be on its way.
        let still_running = lock_table::Lock {
            command: Some("worker".to_owned()),
            ..kernel_lock(LockKind::Flock, Mode::Write, 10, &[11])
        };
        let (_, out) = feed([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input().into(),
            view(3000, 3010, vec![still_running]),
        ]);
        assert_eq!(names(&out), ["acquire"]);
        // While the taker's exit grace runs, the grace decides.
        let (_, out) = feed([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input().into(),
            exit(2990, 10).into(),
            view(
                3000,
                3010,
                vec![kernel_lock(LockKind::Flock, Mode::Write, 10, &[11])],
            ),
        ]);
        assert_eq!(names(&out), ["acquire", "exit"]);
    }

    #[test]
    fn locks_outside_the_trace_tell_the_tables_locks_apart_but_are_never_added() {
        let mut tracker = Tracker::new();
        let mut out = Vec::new();
        tracker.push(Op::flock(1, 10, FILE_A, fl_type::RDLCK, 0).input());
        tracker.push_scan_begin(100 * MS);
        let viewed = |pid, in_scope| ViewedLock {
            lock: kernel_lock(LockKind::Flock, Mode::Read, pid, &[pid as u32]),
            in_scope,
        };
        tracker.push_view(KernelView {
            end_ns: 110 * MS,
            complete: true,
            locks: vec![viewed(10, true), viewed(20, false)],
        });
        tracker.finish(&mut out);
        assert_eq!(names(&out), ["acquire"]);
        assert_eq!(tracker.held().count(), 1);
    }

    #[test]
    fn an_unlock_that_cannot_be_tied_to_a_seeded_lock_asks_for_a_view() {
        let mut tracker = Tracker::new();
        let mut out = Vec::new();
        tracker.push_scan_begin(MS);
        let shared = kernel_lock(LockKind::Flock, Mode::Read, 10, &[10]);
        tracker.push_view(KernelView {
            end_ns: 2 * MS,
            complete: true,
            locks: vec![
                ViewedLock {
                    lock: shared.clone(),
                    in_scope: true,
                },
                ViewedLock {
                    lock: shared,
                    in_scope: true,
                },
            ],
        });
        tracker.advance(2 * MS + REORDER_WINDOW_NS, &mut out);
        assert_eq!(names(&out), ["held", "held"]);
        assert_eq!(tracker.scan_wanted(), None);
        // Process 10 holds two descriptions with a shared lock each: which one it unlocked,
        // only the kernel can say.
        tracker.push(Op::flock(5, 10, FILE_A, fl_type::UNLCK, 0).input());
        tracker.advance(5 * MS + REORDER_WINDOW_NS, &mut out);
        assert_eq!(tracker.scan_wanted(), Some(ScanWanted::Reconcile));
        tracker.push_scan_begin(20 * MS);
        tracker.push_view(KernelView {
            end_ns: 21 * MS,
            complete: true,
            locks: vec![ViewedLock {
                lock: kernel_lock(LockKind::Flock, Mode::Read, 10, &[10]),
                in_scope: true,
            }],
        });
        tracker.finish(&mut out);
        assert_eq!(names(&out), ["held", "held", "release"]);
        assert_eq!(tracker.held().count(), 1);
        assert_eq!(tracker.scan_wanted(), None);
    }

    #[test]
    fn files_that_change_during_a_scan_are_left_to_their_records() {
        let (tracker, out) = feed([
            // Taken while /proc was being read: the scan may or may not have seen it.
            view(100, 110, Vec::new()),
            Op::flock(105, 10, FILE_A, fl_type::WRLCK, 0).input().into(),
        ]);
        assert_eq!(names(&out), ["acquire"]);
        assert_eq!(tracker.held().count(), 1);
        // The table and the kernel agree: nothing to say.
        let (_, out) = feed([
            Op::posix(1, 30, fl_type::WRLCK, 0, 9).input().into(),
            Op::posix(2, 30, fl_type::WRLCK, 10, 19).input().into(),
            view(
                100,
                110,
                vec![ranged(
                    kernel_lock(LockKind::Posix, Mode::Write, 30, &[30]),
                    0,
                    19,
                )],
            ),
        ]);
        assert_eq!(names(&out), ["acquire", "acquire"]);
    }

    #[test]
    fn posix_locks_never_become_orphans() {
        // The release records were lost: the exit still settles the table.
        let (tracker, out) = run([Op::posix(1, 10, fl_type::WRLCK, 0, 9).input(), exit(5, 10)]);
        assert_eq!(names(&out), ["acquire", "exit", "release"]);
        assert_eq!(tracker.held().count(), 0);
    }

    #[test]
    fn inputs_out_of_order_across_cpus_are_applied_in_time_order() {
        // The ring delivers the release (CPU 1) before the acquire (CPU 0) it follows.
        let mut tracker = Tracker::new();
        let mut out = Vec::new();
        tracker.push(Op::flock(3, 10, FILE_A, fl_type::UNLCK, 0).input());
        tracker.push(Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input());
        // Nothing is applied inside the reorder window...
        tracker.advance(MS + REORDER_WINDOW_NS - 1, &mut out);
        assert!(out.is_empty());
        // ...and once it has passed, the two are applied in timestamp order.
        tracker.advance(3 * MS + REORDER_WINDOW_NS, &mut out);
        assert_eq!(names(&out), ["acquire", "release"]);
    }

    #[test]
    fn lost_records_leave_the_table_consistent() {
        // Lost: the acquire of FILE_B, the release of FILE_A, a deferred attempt's success.
        let (tracker, out) = run([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input(),
            Op::flock(2, 20, FILE_B, fl_type::UNLCK, 0).input(),
            Op::flock(3, 10, FILE_A, fl_type::WRLCK, 0).input(),
            Op::flock(4, 30, FILE_B, fl_type::RDLCK, FILE_LOCK_DEFERRED)
                .tid(31)
                .input(),
            exit(5, 30),
            Op::flock(9, 40, FILE_B, fl_type::RDLCK, 0).tid(31).input(),
        ]);
        // A release of a lock never seen says nothing; a repeated acquire is not doubled; a
        // waiter that exited gave its wait up, and does not lend it to a later thread with its
        // id.
        assert_eq!(names(&out), ["acquire", "wait", "abandoned", "acquire"]);
        let Output::Acquire { wait_ns, .. } = out[3] else {
            unreachable!()
        };
        assert_eq!(wait_ns, None);
        assert_eq!(tracker.held().count(), 2);
    }

    #[test]
    fn every_wait_ends_granted_interrupted_or_with_its_waiters_exit() {
        let interrupted = LockOp {
            ret: -512, // ERESTARTSYS: the caller sees EINTR
            ..Op::flock(300, 10, FILE_A, fl_type::WRLCK, 0).0
        };
        let (_, out) = run([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, FILE_LOCK_DEFERRED).input(),
            Input::FlockWaitEnd(interrupted),
            // A later call's end, with no wait open, says nothing more.
            Input::FlockWaitEnd(LockOp {
                ts_ns: 400 * MS,
                ..interrupted
            }),
            Op::flock(500, 20, FILE_B, fl_type::RDLCK, FILE_LOCK_DEFERRED).input(),
            exit(600, 20),
        ]);
        assert_eq!(names(&out), ["wait", "fail", "wait", "abandoned"]);
        let Output::Fail { errno, at, .. } = out[1] else {
            unreachable!()
        };
        assert_eq!(
            (crate::enrich::errno_name(errno), at),
            ("EINTR".into(), 300 * MS)
        );
        let Output::WaitAbandoned { actor, mode, .. } = out[3] else {
            unreachable!()
        };
        assert_eq!((actor.pid, mode), (20, Mode::Read));
    }

    #[test]
    fn a_flock_wait_end_after_a_grant_ends_no_posix_wait_of_the_same_thread() {
        let late = LockOp {
            ret: -512,
            ..Op::flock(300, 10, FILE_A, fl_type::WRLCK, 0).0
        };
        let (_, out) = run([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, FILE_LOCK_DEFERRED).input(),
            Op::flock(2, 10, FILE_A, fl_type::WRLCK, 0).input(),
            Op::posix(200, 10, fl_type::WRLCK, 0, 9)
                .ret(FILE_LOCK_DEFERRED)
                .ino(INO + 1)
                .input(),
            // A signal to the thread, long after its flock wait was granted.
            Input::FlockWaitEnd(late),
        ]);
        assert_eq!(names(&out), ["wait", "acquire", "wait"]);
    }

    #[test]
    fn the_same_pid_on_another_file_keeps_its_own_locks() {
        let (tracker, out) = run([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input(),
            Op::flock(2, 10, FILE_B, fl_type::WRLCK, -11).input(),
        ]);
        assert_eq!(names(&out), ["acquire", "fail"]);
        assert_eq!(tracker.held().count(), 1);
    }

    /// The (pid, orphan) of each blocker a wait or refusal names.
    fn blockers_of(output: &Output) -> Vec<(u32, bool)> {
        let (Output::Wait { blockers, .. }
        | Output::Fail { blockers, .. }
        | Output::WaitAbandoned { blockers, .. }) = output
        else {
            panic!("no blockers on {output:?}")
        };
        blockers
            .iter()
            .map(|blocker| (blocker.holder.pid, blocker.orphan))
            .collect()
    }

    const FILE_C: u64 = 0xffff_0000_0000_c000;
    const FILE_D: u64 = 0xffff_0000_0000_d000;
    const FILES_2: u64 = 0xffff_0000_0002_0000;
    const OTHER_INO: u64 = 78;

    #[test]
    fn a_wait_and_a_refusal_name_the_holders_of_the_conflicting_flock() {
        let (_, out) = run([
            Op::flock(1, 10, FILE_A, fl_type::RDLCK, 0).input(),
            Op::flock(2, 20, FILE_B, fl_type::RDLCK, 0).input(),
            // Shared with shared: no wait.
            Op::flock(3, 30, FILE_C, fl_type::RDLCK, 0).input(),
            Op::flock(4, 40, FILE_D, fl_type::WRLCK, FILE_LOCK_DEFERRED).input(),
            // LOCK_NB refused, on the same file; another file's lock blocks nobody here.
            Op::flock(5, 50, FILE_A, fl_type::WRLCK, 0)
                .ino(OTHER_INO)
                .input(),
            Op::flock(6, 60, 0xffff_0000_0000_e000, fl_type::WRLCK, -11).input(),
        ]);
        assert_eq!(
            names(&out),
            ["acquire", "acquire", "acquire", "wait", "acquire", "fail"]
        );
        assert_eq!(
            blockers_of(&out[3]),
            [(10, false), (20, false), (30, false)]
        );
        assert_eq!(
            blockers_of(&out[5]),
            [(10, false), (20, false), (30, false)]
        );
    }

    #[test]
    fn posix_and_ofd_ranges_block_where_they_overlap_and_flock_never_blocks_them() {
        let (_, out) = run([
            Op::posix(1, 10, fl_type::WRLCK, 0, 9).input(),
            Op::posix(2, 20, fl_type::RDLCK, 20, 29)
                .owner(FILES_2)
                .input(),
            Op::flock(3, 30, FILE_C, fl_type::WRLCK, 0).input(),
            // Overlaps both: the write lock and the read lock.
            Op::ofd(4, 40, FILE_D, fl_type::WRLCK, 5, 25)
                .ret(FILE_LOCK_DEFERRED)
                .input(),
            // Between the two ranges: nothing conflicts, even though the kernel refused it
            // (the tracker knows only what it saw).
            Op::posix(5, 50, fl_type::WRLCK, 10, 19)
                .owner(0xffff_0000_0005_0000)
                .ret(-11)
                .input(),
            // A read from the start to the end of the file: the write lock is in the way, the
            // read lock is not (and a queued request blocks nobody).
            Op::posix(6, 60, fl_type::RDLCK, 0, END_OF_FILE)
                .owner(0xffff_0000_0006_0000)
                .ret(-11)
                .input(),
        ]);
        assert_eq!(
            names(&out),
            ["acquire", "acquire", "acquire", "wait", "fail", "fail"]
        );
        assert_eq!(blockers_of(&out[3]), [(10, false), (20, false)]);
        assert_eq!(blockers_of(&out[4]), []);
        assert_eq!(blockers_of(&out[5]), [(10, false)]);
    }

    #[test]
    fn an_orphans_waiters_are_blocked_by_the_processes_holding_its_description() {
        let (_, out) = feed([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input().into(),
            exit(50, 10).into(),
            view(
                1100,
                1110,
                vec![kernel_lock(LockKind::Flock, Mode::Write, 10, &[11, 12])],
            ),
            Op::flock(1200, 30, FILE_B, fl_type::WRLCK, FILE_LOCK_DEFERRED)
                .input()
                .into(),
            exit(1300, 30).into(),
        ]);
        assert_eq!(
            names(&out),
            ["acquire", "exit", "orphan", "wait", "abandoned"]
        );
        assert_eq!(blockers_of(&out[3]), [(11, true), (12, true)]);
        assert_eq!(blockers_of(&out[4]), [(11, true), (12, true)]);
    }

    #[test]
    fn a_lock_found_at_start_blocks_through_its_holders_when_its_taker_is_unknown() {
        let (_, out) = feed([
            view(
                0,
                1,
                vec![kernel_lock(LockKind::Ofd, Mode::Write, 0, &[70])],
            ),
            Op::ofd(10, 30, FILE_B, fl_type::WRLCK, 0, 0)
                .ret(-11)
                .input()
                .into(),
        ]);
        assert_eq!(names(&out), ["held", "fail"]);
        assert_eq!(blockers_of(&out[1]), [(70, false)]);
    }

    fn deadlocks(out: &[Output]) -> Vec<&Vec<CycleStep>> {
        out.iter()
            .filter_map(|output| match output {
                Output::Deadlock { cycle, .. } => Some(cycle),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn two_processes_waiting_for_each_others_flock_are_a_deadlock_said_once() {
        let (_, out) = run([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input(),
            Op::flock(2, 20, FILE_B, fl_type::WRLCK, 0)
                .ino(OTHER_INO)
                .input(),
            Op::flock(3, 10, FILE_C, fl_type::WRLCK, FILE_LOCK_DEFERRED)
                .ino(OTHER_INO)
                .input(),
            Op::flock(4, 20, FILE_D, fl_type::WRLCK, FILE_LOCK_DEFERRED).input(),
            // The kernel retries both calls now and then: the same waits, no new deadlock.
            Op::flock(300, 10, FILE_C, fl_type::WRLCK, FILE_LOCK_DEFERRED)
                .ino(OTHER_INO)
                .input(),
            Op::flock(301, 20, FILE_D, fl_type::WRLCK, FILE_LOCK_DEFERRED).input(),
            // Someone else queues behind one of them: still the same cycle.
            Op::flock(
                302,
                30,
                0xffff_0000_0000_e000,
                fl_type::WRLCK,
                FILE_LOCK_DEFERRED,
            )
            .input(),
        ]);
        assert_eq!(
            names(&out),
            ["acquire", "acquire", "wait", "wait", "deadlock", "wait"]
        );
        let found = deadlocks(&out);
        let cycle = found[0];
        let steps: Vec<(u32, u64, u64, u64)> = cycle
            .iter()
            .map(|step| {
                (
                    step.actor.pid,
                    step.holds.0.ino,
                    step.holds.0.owner,
                    step.waits_for.lock.ino,
                )
            })
            .collect();
        assert_eq!(
            steps,
            [(10, INO, FILE_A, OTHER_INO), (20, OTHER_INO, FILE_B, INO)]
        );
        assert_eq!(blockers_of(&out[5]), [(10, false)]);
    }

    #[test]
    fn a_deadlock_ended_and_formed_again_is_said_again() {
        let (_, out) = run([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input(),
            Op::ofd(2, 20, FILE_B, fl_type::WRLCK, 0, END_OF_FILE)
                .ino(OTHER_INO)
                .input(),
            // Mixed: a flock holder waits for an OFD lock, and the other way round.
            Op::ofd(3, 10, FILE_C, fl_type::WRLCK, 0, 0)
                .ino(OTHER_INO)
                .ret(FILE_LOCK_DEFERRED)
                .input(),
            Op::flock(4, 20, FILE_D, fl_type::WRLCK, FILE_LOCK_DEFERRED).input(),
            // Pid 20 is killed: its wait ends and its lock goes.
            exit(10, 20),
            Op::ofd(11, 20, FILE_B, fl_type::UNLCK, 0, END_OF_FILE)
                .ino(OTHER_INO)
                .flags(fl_flags::CLOSE)
                .input(),
            Op::ofd(12, 10, FILE_C, fl_type::WRLCK, 0, 0)
                .ino(OTHER_INO)
                .input(),
            // Pid 21 takes the same turn.
            Op::ofd(20, 10, FILE_C, fl_type::UNLCK, 0, 0)
                .ino(OTHER_INO)
                .input(),
            Op::ofd(21, 21, FILE_B, fl_type::WRLCK, 0, END_OF_FILE)
                .ino(OTHER_INO)
                .input(),
            Op::flock(22, 21, FILE_D, fl_type::WRLCK, FILE_LOCK_DEFERRED).input(),
            Op::ofd(23, 10, FILE_C, fl_type::WRLCK, 0, 0)
                .ino(OTHER_INO)
                .ret(FILE_LOCK_DEFERRED)
                .input(),
        ]);
        assert_eq!(deadlocks(&out).len(), 2, "{:?}", names(&out));
        let second: Vec<u32> = deadlocks(&out)[1]
            .iter()
            .map(|step| step.actor.pid)
            .collect();
        assert_eq!(second, [10, 21]);
    }

    #[test]
    fn a_thread_waiting_for_a_lock_another_thread_of_its_process_took_is_no_deadlock() {
        let (_, out) = run([
            // OFD locks between the threads of one process: what they are made for.
            Op::ofd(1, 10, FILE_A, fl_type::WRLCK, 0, 0).input(),
            Op::ofd(2, 10, FILE_B, fl_type::WRLCK, 0, 0)
                .tid(11)
                .ret(FILE_LOCK_DEFERRED)
                .input(),
            // But a thread that waits for a lock it holds itself through another open file
            // description waits forever.
            Op::flock(3, 20, FILE_C, fl_type::WRLCK, 0)
                .ino(OTHER_INO)
                .input(),
            Op::flock(4, 20, FILE_D, fl_type::WRLCK, FILE_LOCK_DEFERRED)
                .ino(OTHER_INO)
                .input(),
        ]);
        assert_eq!(
            names(&out),
            ["acquire", "wait", "acquire", "wait", "deadlock"]
        );
        let cycle = deadlocks(&out)[0];
        assert_eq!(cycle.len(), 1);
        assert_eq!(
            (
                cycle[0].actor.pid,
                cycle[0].holds.0.owner,
                cycle[0].waits_for.lock.owner
            ),
            (20, FILE_C, FILE_D)
        );
    }

    #[test]
    fn a_deadlock_through_an_orphan_is_found_when_the_kernel_names_its_holders() {
        let (_, out) = feed([
            // Pid 10 takes the lock on INO and leaves it to its child 11.
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input().into(),
            exit(50, 10).into(),
            // Pid 30 holds OTHER_INO and waits for the orphan.
            Op::flock(60, 30, FILE_B, fl_type::WRLCK, 0)
                .ino(OTHER_INO)
                .input()
                .into(),
            Op::flock(70, 30, FILE_C, fl_type::WRLCK, FILE_LOCK_DEFERRED)
                .input()
                .into(),
            // The child waits for pid 30's lock.
            Op::flock(80, 11, FILE_D, fl_type::WRLCK, FILE_LOCK_DEFERRED)
                .ino(OTHER_INO)
                .input()
                .into(),
            view(
                1100,
                1110,
                vec![
                    kernel_lock(LockKind::Flock, Mode::Write, 10, &[11]),
                    lock_table::Lock {
                        ino: OTHER_INO,
                        ..kernel_lock(LockKind::Flock, Mode::Write, 30, &[30])
                    },
                ],
            ),
        ]);
        assert_eq!(
            names(&out),
            [
                "acquire", "exit", "acquire", "wait", "wait", "orphan", "deadlock"
            ]
        );
        let pids: Vec<u32> = deadlocks(&out)[0]
            .iter()
            .map(|step| step.actor.pid)
            .collect();
        assert_eq!(pids, [11, 30]);
    }
}
