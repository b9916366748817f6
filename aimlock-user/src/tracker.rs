//! The lock table: a pure state machine, decoded kernel inputs in, lock events out, no I/O.
//!
//! Inputs are first put back in timestamp order (the ring delivers records in the order CPUs
//! reserved them, which can differ slightly from the order they happened), then applied:
//! - the table is keyed by (dev, ino, owner, kind) and holds the ranges each owner has locked;
//! - deferred attempts of one blocking call become one `wait` then one `acquire` with `wait_ns`;
//! - an exit opens a grace period during which the exiting process closes its files; locks it
//!   took that are still held when the grace period ends have outlived it: orphans.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque, hash_map::Entry},
};

use aimlock_common::{FILE_LOCK_DEFERRED, fl_flags, fl_type};
// The tracker sits on the hot path of every event: FxHash, not SipHash. Its keys are kernel
// values, not attacker-chosen strings.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use smallvec::SmallVec;

use crate::{
    decode::{Input, LockOp},
    events::{LockKind, Mode, ReleaseReason},
};

/// How long an input waits for possibly earlier inputs from other CPUs.
pub const REORDER_WINDOW_NS: u64 = 10_000_000;
/// How long after its exit event a process may still be closing its files. Generous: on a loaded
/// machine the end of an exit can wait long for a CPU, and a lock released late in it is not an
/// orphan.
pub const EXIT_GRACE_NS: u64 = 1_000_000_000;
/// `OFFSET_MAX`: a range that ends here runs to the end of the file.
pub const END_OF_FILE: i64 = i64::MAX;

/// Who did something: the thread group id in the initial namespace and its command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Actor {
    pub pid: u32,
    pub tid: u32,
    pub comm: [u8; 16],
}

/// Which lock an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LockId {
    pub dev: u32,
    pub ino: u64,
    /// `fl_owner`: the open file description (flock, OFD, lease) or the files_struct (POSIX).
    pub owner: u64,
    pub kind: LockKind,
}

/// A range held by one owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub start: i64,
    pub end: i64,
    pub mode: Mode,
    pub since_ns: u64,
    pub taker: Actor,
    /// When the taker exited, if the lock outlived it.
    pub orphaned_at: Option<u64>,
}

/// What the tracker tells the sinks. `at` is the event's time (CLOCK_MONOTONIC, ns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Acquire {
        at: u64,
        actor: Actor,
        lock: LockId,
        mode: Mode,
        start: i64,
        end: i64,
        wait_ns: Option<u64>,
    },
    /// A blocking attempt was queued behind a conflicting lock.
    Wait {
        at: u64,
        actor: Actor,
        lock: LockId,
        mode: Mode,
        start: i64,
        end: i64,
    },
    Release {
        at: u64,
        actor: Actor,
        lock: LockId,
        held: Held,
        /// The part of `held` that was released.
        start: i64,
        end: i64,
        reason: ReleaseReason,
    },
    Fail {
        at: u64,
        actor: Actor,
        lock: LockId,
        mode: Mode,
        start: i64,
        end: i64,
        errno: i32,
    },
    /// A process exited. `took_locks`: it had taken locks that were held, and `locks` of
    /// them still were when it exited.
    Exit {
        at: u64,
        actor: Actor,
        locks: u64,
        took_locks: bool,
    },
    /// `held` outlived its taker, which exited at `taker_exit`.
    Orphan {
        at: u64,
        lock: LockId,
        held: Held,
        taker_exit: u64,
    },
    /// An orphan was finally released by `by`.
    OrphanEnd {
        at: u64,
        by: Actor,
        lock: LockId,
        held: Held,
        taker_exit: u64,
        reason: ReleaseReason,
    },
}

/// The ranges one owner holds on one file: one, nearly always (flock and lease locks are whole
/// files), so it is kept inline rather than in an allocation of its own.
type Ranges = SmallVec<[Held; 1]>;

struct Waiting {
    since_ns: u64,
    pid: u32,
    lock: LockId,
}

struct Exiting {
    at: u64,
    actor: Actor,
}

#[derive(Default)]
pub struct Tracker {
    /// Inputs not yet applied, in timestamp order (equal timestamps in arrival order). The
    /// ring delivers them nearly in order, so an insertion from the back is almost always a
    /// push.
    pending: VecDeque<Input>,
    locks: HashMap<LockId, Ranges>,
    /// Locks each process took, for its exit.
    taken_by: HashMap<u32, HashSet<LockId>>,
    /// Blocking calls in progress, by thread.
    waiting: HashMap<u32, Waiting>,
    /// Failures `posix_lock_inode` reported, so that `fcntl_setlk` does not report them again.
    posix_failed: HashMap<u32, i32>,
    /// Processes in their exit grace period, by pid, with the time of their exit.
    exiting: HashMap<u32, Exiting>,
    exit_order: BinaryHeap<Reverse<(u64, u32)>>,
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues an input; nothing is applied until [`Tracker::advance`].
    pub fn push(&mut self, input: Input) {
        let ts = input.ts_ns();
        let position = self
            .pending
            .iter()
            .rposition(|queued| queued.ts_ns() <= ts)
            .map_or(0, |before| before + 1);
        self.pending.insert(position, input);
    }

    /// Applies every input older than `now_ns - REORDER_WINDOW_NS` and ends the exit grace
    /// periods that are over by then. `now_ns` is CLOCK_MONOTONIC, as the inputs' timestamps.
    pub fn advance(&mut self, now_ns: u64, out: &mut Vec<Output>) {
        self.apply_until(now_ns.saturating_sub(REORDER_WINDOW_NS), out);
    }

    /// Applies everything: the end of a trace.
    pub fn finish(&mut self, out: &mut Vec<Output>) {
        self.apply_until(u64::MAX, out);
    }

    /// Currently held locks.
    #[cfg(test)]
    pub fn held(&self) -> impl Iterator<Item = (&LockId, &Held)> {
        self.locks
            .iter()
            .flat_map(|(id, ranges)| ranges.iter().map(move |held| (id, held)))
    }

    /// Drops a range without a release: an orphan that /proc shows nobody holds, because the
    /// record of its release was lost.
    pub fn forget(&mut self, lock: LockId, start: i64, end: i64) {
        self.cut(lock, start, end);
    }

    fn apply_until(&mut self, until: u64, out: &mut Vec<Output>) {
        while let Some(input) = self.pending.front() {
            let ts = input.ts_ns();
            if ts > until {
                break;
            }
            let Some(input) = self.pending.pop_front() else {
                break;
            };
            // Exits whose grace ended before this input are settled first.
            self.end_exits(ts.saturating_sub(EXIT_GRACE_NS), out);
            self.apply(input, out);
        }
        self.end_exits(until.saturating_sub(EXIT_GRACE_NS), out);
    }

    fn apply(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::Lock(op) => self.apply_lock(op, out),
            Input::FcntlFailure(op) => self.apply_fcntl_failure(op, out),
            Input::Exit { ts_ns, pid, comm } => self.apply_exit(ts_ns, pid, comm, out),
        }
    }

    fn apply_lock(&mut self, op: LockOp, out: &mut Vec<Output>) {
        let actor = Actor {
            pid: op.pid,
            tid: op.tid,
            comm: op.comm,
        };
        let lock = LockId {
            dev: op.dev,
            ino: op.ino,
            owner: op.owner,
            kind: op.kind,
        };
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
        if mode == Mode::Unlock {
            if op.ret == 0 {
                let reason = if op.flags & fl_flags::CLOSE == 0 {
                    ReleaseReason::Unlock
                } else if self.exiting.contains_key(&op.pid) {
                    ReleaseReason::Exit
                } else {
                    ReleaseReason::Close
                };
                self.release_range(op.ts_ns, actor, lock, op.start, op.end, reason, out);
                if op.kind == LockKind::Posix {
                    // The last close of a file releases its OFD locks with a plain POSIX
                    // request (locks_remove_file -> locks_remove_posix, no FL_OFDLCK); the
                    // owner, the file itself, tells them apart.
                    let ofd = LockId {
                        kind: LockKind::Ofd,
                        ..lock
                    };
                    self.release_range(op.ts_ns, actor, ofd, op.start, op.end, reason, out);
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
                self.insert_range(op.ts_ns, actor, lock, mode, op.start, op.end, out);
                out.push(Output::Acquire {
                    at: op.ts_ns,
                    actor,
                    lock,
                    mode,
                    start: op.start,
                    end: op.end,
                    wait_ns,
                });
            }
            FILE_LOCK_DEFERRED => {
                let new_wait = match self.waiting.get(&op.tid) {
                    Some(waiting) => waiting.lock != lock,
                    None => true,
                };
                if new_wait {
                    self.waiting.insert(
                        op.tid,
                        Waiting {
                            since_ns: op.ts_ns,
                            pid: op.pid,
                            lock,
                        },
                    );
                    out.push(Output::Wait {
                        at: op.ts_ns,
                        actor,
                        lock,
                        mode,
                        start: op.start,
                        end: op.end,
                    });
                }
            }
            errno => {
                self.waiting.remove(&op.tid);
                if op.kind != LockKind::Flock {
                    self.posix_failed.insert(op.tid, errno);
                }
                out.push(Output::Fail {
                    at: op.ts_ns,
                    actor,
                    lock,
                    mode,
                    start: op.start,
                    end: op.end,
                    errno: -errno,
                });
            }
        }
    }

    /// A failed fcntl lock call. Refusals that `posix_lock_inode` reported are not repeated;
    /// what is left is a wait that ended without the lock (EINTR) or a call refused earlier.
    fn apply_fcntl_failure(&mut self, op: LockOp, out: &mut Vec<Output>) {
        if self.posix_failed.remove(&op.tid) == Some(op.ret) {
            return;
        }
        self.waiting.remove(&op.tid);
        let mode = match op.lock_type {
            fl_type::RDLCK => Mode::Read,
            fl_type::WRLCK => Mode::Write,
            _ => Mode::Unlock,
        };
        out.push(Output::Fail {
            at: op.ts_ns,
            actor: Actor {
                pid: op.pid,
                tid: op.tid,
                comm: op.comm,
            },
            lock: LockId {
                dev: op.dev,
                ino: op.ino,
                owner: op.owner,
                kind: op.kind,
            },
            mode,
            start: op.start,
            end: op.end,
            errno: -op.ret,
        });
    }

    fn apply_exit(&mut self, at: u64, pid: u32, comm: [u8; 16], out: &mut Vec<Output>) {
        self.waiting.retain(|_, waiting| waiting.pid != pid);
        self.posix_failed.remove(&pid);
        let locks = self.taken_by.get(&pid).map(|taken| {
            taken
                .iter()
                .filter_map(|id| self.locks.get(id))
                .flatten()
                .filter(|held| held.taker.pid == pid && held.orphaned_at.is_none())
                .count() as u64
        });
        let actor = Actor {
            pid,
            tid: pid,
            comm,
        };
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
            for id in taken {
                let Some(ranges) = self.locks.get_mut(&id) else {
                    continue;
                };
                if id.kind == LockKind::Posix {
                    // POSIX locks belong to the process and cannot outlive it: what is left
                    // here was released in records that were lost.
                    let (gone, kept): (Ranges, Ranges) =
                        ranges.drain(..).partition(|held| held.taker.pid == pid);
                    *ranges = kept;
                    for held in gone {
                        out.push(Output::Release {
                            at: exiting.at,
                            actor: exiting.actor,
                            lock: id,
                            held,
                            start: held.start,
                            end: held.end,
                            reason: ReleaseReason::Exit,
                        });
                    }
                    if ranges.is_empty() {
                        self.locks.remove(&id);
                    }
                    continue;
                }
                for held in ranges.iter_mut() {
                    if held.taker.pid == pid && held.orphaned_at.is_none() {
                        held.orphaned_at = Some(exiting.at);
                        out.push(Output::Orphan {
                            at: exiting.at + EXIT_GRACE_NS,
                            lock: id,
                            held: *held,
                            taker_exit: exiting.at,
                        });
                    }
                }
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
    #[allow(clippy::too_many_arguments)]
    fn insert_range(
        &mut self,
        at: u64,
        actor: Actor,
        lock: LockId,
        mode: Mode,
        start: i64,
        end: i64,
        out: &mut Vec<Output>,
    ) {
        let mut since_ns = at;
        let removed = self.cut(lock, start, end);
        for held in &removed {
            if held.mode == mode {
                since_ns = since_ns.min(held.since_ns);
            } else {
                out.push(Output::Release {
                    at,
                    actor,
                    lock,
                    held: *held,
                    start: held.start,
                    end: held.end,
                    reason: ReleaseReason::Convert,
                });
            }
        }
        let held = Held {
            start,
            end,
            mode,
            since_ns,
            taker: actor,
            orphaned_at: None,
        };
        self.locks.entry(lock).or_default().push(held);
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
            });
            if let Some(taker_exit) = held.orphaned_at {
                out.push(Output::OrphanEnd {
                    at,
                    by: actor,
                    lock,
                    held,
                    taker_exit,
                    reason,
                });
            }
        }
    }

    /// Removes [start, end] from `lock`'s ranges; returns the removed pieces (each clipped to
    /// [start, end], with its original mode, time and taker).
    fn cut(&mut self, lock: LockId, start: i64, end: i64) -> Vec<Held> {
        let Entry::Occupied(mut entry) = self.locks.entry(lock) else {
            return Vec::new();
        };
        let ranges = entry.get_mut();
        let mut removed = Vec::new();
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
            entry.remove();
            for held in &removed {
                if let Some(taken) = self.taken_by.get_mut(&held.taker.pid) {
                    taken.remove(&lock);
                    if taken.is_empty() && !self.exiting.contains_key(&held.taker.pid) {
                        self.taken_by.remove(&held.taker.pid);
                    }
                }
            }
        } else {
            *ranges = kept;
        }
        removed
    }
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

        fn input(self) -> Input {
            Input::Lock(self.0)
        }
    }

    fn exit(at_ms: u64, pid: u32) -> Input {
        Input::Exit {
            ts_ns: at_ms * MS,
            pid,
            comm: comm("worker"),
        }
    }

    /// Feeds inputs in the given order and returns everything the tracker says.
    fn run(inputs: impl IntoIterator<Item = Input>) -> (Tracker, Vec<Output>) {
        let mut tracker = Tracker::new();
        let mut out = Vec::new();
        for input in inputs {
            tracker.push(input);
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
            })
            .collect()
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
            (*reason, at - held.since_ns),
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
    fn adjacent_posix_ranges_of_one_mode_merge_keeping_the_first_time() {
        let (tracker, out) = run([
            Op::posix(1, 10, fl_type::WRLCK, 0, 9).input(),
            Op::posix(2, 10, fl_type::WRLCK, 5, 19).input(),
            // Already covered: nothing to say.
            Op::posix(3, 10, fl_type::WRLCK, 6, 7).input(),
            Op::posix(4, 10, fl_type::UNLCK, 0, END_OF_FILE).input(),
        ]);
        assert_eq!(names(&out), ["acquire", "acquire", "release", "release"]);
        let since: Vec<u64> = out[2..]
            .iter()
            .map(|o| match o {
                Output::Release { held, .. } => held.since_ns,
                _ => unreachable!(),
            })
            .collect();
        assert!(since.iter().all(|&ns| ns == MS), "{since:?}");
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

    #[test]
    fn lock_still_held_after_the_grace_period_is_an_orphan_until_its_holder_releases_it() {
        let (tracker, out) = run([
            Op::flock(1, 10, FILE_A, fl_type::WRLCK, 0).input(),
            exit(50, 10),
            // The child that inherited the description exits two seconds later.
            exit(2050, 11),
            Op::flock(2051, 11, FILE_A, fl_type::UNLCK, 0)
                .flags(fl_flags::CLOSE)
                .input(),
        ]);
        assert_eq!(
            names(&out),
            ["acquire", "exit", "orphan", "release", "orphan_end"]
        );
        let Output::Orphan {
            taker_exit, held, ..
        } = out[2]
        else {
            unreachable!()
        };
        assert_eq!((taker_exit, held.taker.pid), (50 * MS, 10));
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
        assert_eq!(at - taker_exit, 2001 * MS);
        assert_eq!(tracker.held().count(), 0);
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
        // waiter that exited does not lend its wait to a later thread with its id.
        assert_eq!(names(&out), ["acquire", "wait", "acquire"]);
        let Output::Acquire { wait_ns, .. } = out[2] else {
            unreachable!()
        };
        assert_eq!(wait_ns, None);
        assert_eq!(tracker.held().count(), 2);
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
}
