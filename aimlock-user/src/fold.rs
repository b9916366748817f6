//! Folds uncontended short holds into `summary` lines: between the tracker and the sinks.
//!
//! What folds is a stretch of one owner's own locking of one file: from an acquire when it held
//! nothing of the lock, through its further acquires and its explicit unlocks and conversions of
//! byte ranges, to the release after which it holds nothing of the lock again, all within
//! [`SHORT_HOLD_NS`] and without a wait, with nothing else said of the file in between (no
//! wait, no refusal, no other owner's lock, no release on close or exit, no inheritance). A
//! flock lock taken and unlocked is the shortest such stretch; a SQLite transaction's POSIX
//! locks on its database (shared, reserved, pending, exclusive, each a byte range, then all
//! unlocked) is another. Its lines become counts, each release a hold of its mode, in one
//! `summary` line per process, file, mode and second: a tight lock loop or a busy database then
//! costs the tracer a hash look-up per event instead of enriched, formatted and written lines.
//! Every wait, failure, release on close or exit, exit and orphan stays its own line, as does
//! every hold that anything else touched: what a post-mortem needs. A stretch leaves the lock
//! as it found it (the owner holding none of it), so the lines left tell the same holds.
//!
//! Outputs pass through in the tracker's order. A stretch's first line waits until the tracker
//! has read and applied [`SHORT_HOLD_NS`] past it, with the lines behind it: by then its last
//! release, if it came in time, has been seen.

use std::collections::VecDeque;

use aimlock_common::FileName;
use rustc_hash::FxHashMap as HashMap;
use smallvec::SmallVec;

use crate::{
    events::{LockKind, Mode, ReleaseReason},
    tracker::{Actor, LockId, Output},
};

/// Stretches that end within this, uncontended, fold into summaries: the upper bound of the
/// metrics' first hold bucket, so that folded holds (each shorter than its stretch) are counted
/// there exactly.
pub const SHORT_HOLD_NS: u64 = 100_000;

const SECOND_NS: u64 = 1_000_000_000;

/// What the sinks get: the tracker's outputs, and the summaries of the holds folded away.
pub enum Line {
    Event(Output),
    Summary(Summary),
}

/// Short holds of one file by one process, in one mode, within one second.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The first hold's acquire.
    pub at: u64,
    /// The first hold's taker.
    pub actor: Actor,
    /// The first hold's lock (its owner: later holds may have opened the file again).
    pub lock: LockId,
    pub mode: Mode,
    pub file: FileName,
    pub holds: u64,
    /// The holds' durations, summed.
    pub held_ns: u64,
    pub longest_ns: u64,
}

/// The tracker's outputs on their way to the sinks, short holds folded.
pub struct Folder {
    /// False with `--every-event`: every output passes as it comes.
    folding: bool,
    /// Lines in the order they go out; `None` where a line folded away.
    queue: VecDeque<Option<Line>>,
    /// The sequence number of `queue[0]`.
    queue_base: u64,
    /// The stretches that may still fold, by file: at most one, since any other line about the
    /// file ends a file's stretch.
    stretches: HashMap<(u32, u64), Stretch>,
    /// Summaries still gathering holds, by pid.
    summaries: HashMap<u32, SmallVec<[Summary; 1]>>,
    /// The earliest time a summary is complete: what the tracker must have settled.
    next_summary_due: u64,
}

/// One owner's locking of a file that may still fold (see the module's text).
struct Stretch {
    /// Its first acquire's time.
    began: u64,
    /// Its queued lines' sequence numbers, in order: the first is its acquire, which names the
    /// owner's lock and process (kept there, not copied here: a stretch is made and ended on
    /// every call of a tight lock loop).
    lines: SmallVec<[u64; 3]>,
}

impl Stretch {
    /// Whether `output`, about the stretch's file, is the owner's own locking within the bound;
    /// `first` is the stretch's acquire.
    fn goes_on_with(&self, first: &Output, output: &Output) -> bool {
        let Output::Acquire {
            lock: owned,
            actor: owner,
            ..
        } = first
        else {
            return false;
        };
        let (lock, actor, at) = match output {
            Output::Acquire {
                lock,
                actor,
                at,
                wait_ns: None,
                first: false,
                ..
            } => (lock, actor, at),
            Output::Release {
                lock,
                actor,
                at,
                reason: ReleaseReason::Unlock | ReleaseReason::Convert,
                ..
            } => (lock, actor, at),
            _ => return false,
        };
        lock == owned && actor.same_process(owner) && at.saturating_sub(self.began) < SHORT_HOLD_NS
    }
}

impl Folder {
    pub fn new(folding: bool) -> Self {
        Self {
            folding,
            queue: VecDeque::new(),
            queue_base: 0,
            stretches: HashMap::default(),
            summaries: HashMap::default(),
            next_summary_due: u64::MAX,
        }
    }

    /// Takes the tracker's outputs, in its order.
    pub fn push(&mut self, output: Output) {
        if !self.folding {
            self.queue.push_back(Some(Line::Event(output)));
            return;
        }
        let seq = self.queue_base + self.queue.len() as u64;
        if let Some(file) = file_of(&output)
            && let Some(stretch) = self.stretches.get_mut(&file)
        {
            let first = self
                .queue
                .get((stretch.lines[0] - self.queue_base) as usize);
            if let Some(Some(Line::Event(first))) = first
                && stretch.goes_on_with(first, &output)
            {
                if !matches!(output, Output::Release { last: true, .. }) {
                    stretch.lines.push(seq);
                    self.queue.push_back(Some(Line::Event(output)));
                } else if let Some(stretch) = self.stretches.remove(&file) {
                    // Its last release folds with it, never queued.
                    self.fold(&stretch);
                    self.add_release(&output, stretch.began);
                }
                return;
            }
            // Anything else said of the file: its stretch in the queue is not uncontended.
            self.stretches.remove(&file);
        }
        if let Output::Exit { actor, .. } = &output {
            // A process's summaries come before its exit, while its paths are still known.
            self.summarize_process(actor.pid);
        }
        if let Output::Acquire {
            at,
            lock,
            wait_ns: None,
            first: true,
            ..
        } = &output
            && lock.kind != LockKind::Lease
        {
            let stretch = Stretch {
                began: *at,
                lines: SmallVec::from_slice(&[seq]),
            };
            self.stretches.insert((lock.dev, lock.ino), stretch);
        }
        self.queue.push_back(Some(Line::Event(output)));
    }

    /// Gives `out` the lines ready to go out, once every input up to `settled` has been read
    /// and applied (`u64::MAX`: everything, at the end of a trace).
    pub fn ready(&mut self, settled: u64, mut out: impl FnMut(Line)) {
        if settled >= self.next_summary_due {
            self.summarize_until(settled);
        }
        while let Some(front) = self.queue.front() {
            // A stretch's first line is its acquire.
            if let Some(Line::Event(Output::Acquire { lock, .. })) = front
                && let file = (lock.dev, lock.ino)
                && let Some(stretch) = self.stretches.get(&file)
                && stretch.lines[0] == self.queue_base
            {
                if stretch.began.saturating_add(SHORT_HOLD_NS) > settled {
                    break;
                }
                self.stretches.remove(&file);
            }
            self.queue_base += 1;
            if let Some(Some(line)) = self.queue.pop_front() {
                out(line);
            }
        }
    }

    /// Folds an ended stretch's queued lines away: each release a hold in its process's
    /// summary.
    fn fold(&mut self, stretch: &Stretch) {
        for &seq in &stretch.lines {
            let index = (seq - self.queue_base) as usize;
            // Read in its slot, not moved out: a line is a few hundred bytes.
            if let Some(Some(Line::Event(output))) = self.queue.get(index) {
                let hold = hold_of(output, stretch.began);
                self.queue[index] = None;
                if let Some(hold) = hold {
                    self.add_to_summary(hold);
                }
            }
        }
    }

    /// Counts a release of a folded stretch that began at `began`.
    fn add_release(&mut self, output: &Output, began: u64) {
        if let Some(hold) = hold_of(output, began) {
            self.add_to_summary(hold);
        }
    }

    /// Counts one hold (`hold`, a summary of it alone) in its process's summary for its file,
    /// mode and second.
    fn add_to_summary(&mut self, hold: Summary) {
        let second = hold.at / SECOND_NS;
        let summaries = self.summaries.entry(hold.actor.pid).or_default();
        let same = summaries.iter_mut().find(|summary| {
            summary.actor.start_time == hold.actor.start_time
                && summary.at / SECOND_NS == second
                && summary.mode == hold.mode
                && (
                    summary.lock.dev,
                    summary.lock.ino,
                    summary.lock.generation,
                    summary.lock.kind,
                ) == (
                    hold.lock.dev,
                    hold.lock.ino,
                    hold.lock.generation,
                    hold.lock.kind,
                )
        });
        match same {
            Some(summary) => {
                summary.holds += hold.holds;
                summary.held_ns = summary.held_ns.saturating_add(hold.held_ns);
                summary.longest_ns = summary.longest_ns.max(hold.longest_ns);
            }
            None => {
                self.next_summary_due = self.next_summary_due.min(due(hold.at));
                summaries.push(hold);
            }
        }
    }

    /// Queues the summaries no hold can join any more once `settled` is settled.
    fn summarize_until(&mut self, settled: u64) {
        let mut next_due = u64::MAX;
        let mut complete = Vec::new();
        self.summaries.retain(|_, summaries| {
            summaries.retain(|summary| {
                if due(summary.at) <= settled {
                    complete.push(summary.clone());
                    false
                } else {
                    next_due = next_due.min(due(summary.at));
                    true
                }
            });
            !summaries.is_empty()
        });
        self.next_summary_due = next_due;
        complete.sort_by_key(|summary| summary.at);
        self.queue.extend(
            complete
                .into_iter()
                .map(|summary| Some(Line::Summary(summary))),
        );
    }

    fn summarize_process(&mut self, pid: u32) {
        if let Some(summaries) = self.summaries.remove(&pid) {
            self.queue.extend(
                summaries
                    .into_iter()
                    .map(|summary| Some(Line::Summary(summary))),
            );
        }
    }
}

/// A release in a stretch that began at `began`, as a summary of its hold alone.
fn hold_of(output: &Output, began: u64) -> Option<Summary> {
    let Output::Release {
        at,
        actor,
        lock,
        held,
        file,
        ..
    } = output
    else {
        return None;
    };
    let since = held.since_ns.unwrap_or(began);
    let held_ns = at.saturating_sub(since);
    Some(Summary {
        at: since,
        actor: *actor,
        lock: *lock,
        mode: held.mode,
        file: *file,
        holds: 1,
        held_ns,
        longest_ns: held_ns,
    })
}

/// When every hold of the summary's second has had its time to fold.
fn due(at: u64) -> u64 {
    (at / SECOND_NS + 1) * SECOND_NS + SHORT_HOLD_NS
}

/// The file an output is about, if one.
fn file_of(output: &Output) -> Option<(u32, u64)> {
    match output {
        Output::Acquire { lock, .. }
        | Output::Wait { lock, .. }
        | Output::Release { lock, .. }
        | Output::Fail { lock, .. }
        | Output::Orphan { lock, .. }
        | Output::Inherit { lock, .. }
        | Output::OrphanEnd { lock, .. }
        | Output::WaitAbandoned { lock, .. }
        | Output::Held { lock, .. } => Some((lock.dev, lock.ino)),
        Output::Exit { .. } | Output::Deadlock { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::{Held, Orphan};

    const US: u64 = 1_000;

    fn actor(pid: u32) -> Actor {
        Actor::process(pid, *b"lockwork\0\0\0\0\0\0\0\0", 7)
    }

    fn lock(ino: u64, owner: u64) -> LockId {
        LockId {
            dev: 8,
            ino,
            generation: 1,
            owner,
            kind: LockKind::Flock,
        }
    }

    fn acquire(at: u64, pid: u32, lock: LockId) -> Output {
        Output::Acquire {
            at,
            actor: actor(pid),
            lock,
            mode: Mode::Write,
            start: 0,
            end: crate::tracker::END_OF_FILE,
            wait_ns: None,
            file: FileName::NONE,
            first: true,
        }
    }

    fn release(since: u64, at: u64, pid: u32, lock: LockId, reason: ReleaseReason) -> Output {
        Output::Release {
            at,
            actor: actor(pid),
            lock,
            held: Held {
                start: 0,
                end: crate::tracker::END_OF_FILE,
                mode: Mode::Write,
                since_ns: Some(since),
                taker: actor(pid),
                orphan: Orphan::No,
            },
            start: 0,
            end: crate::tracker::END_OF_FILE,
            reason,
            file: FileName::NONE,
            last: true,
        }
    }

    fn exit(at: u64, pid: u32) -> Output {
        Output::Exit {
            at,
            actor: actor(pid),
            locks: 0,
            took_locks: true,
        }
    }

    /// What goes out: "acquire@T", "release@T", "exit@T", "summary@T×N".
    fn drain(folder: &mut Folder, applied: u64) -> Vec<String> {
        let mut lines = Vec::new();
        folder.ready(applied, |line| lines.push(line));
        lines.iter().map(describe).collect()
    }

    fn describe(line: &Line) -> String {
        match line {
            Line::Summary(summary) => format!(
                "summary@{}x{}:{}:{}",
                summary.at, summary.holds, summary.held_ns, summary.longest_ns
            ),
            Line::Event(Output::Acquire { at, .. }) => format!("acquire@{at}"),
            Line::Event(Output::Release { at, .. }) => format!("release@{at}"),
            Line::Event(Output::Wait { at, .. }) => format!("wait@{at}"),
            Line::Event(Output::Exit { at, .. }) => format!("exit@{at}"),
            Line::Event(_) => "other".to_owned(),
        }
    }

    #[test]
    fn short_uncontended_holds_become_one_summary_per_second() {
        let mut folder = Folder::new(true);
        let file = lock(1, 0xa);
        for (at, held) in [
            (10 * US, 5 * US),
            (500 * US, 20 * US),
            (SECOND_NS + US, 3 * US),
        ] {
            folder.push(acquire(at, 1, file));
            folder.push(release(at, at + held, 1, file, ReleaseReason::Unlock));
        }
        // The first second's summary can still gain holds until its end and one short hold more.
        assert!(drain(&mut folder, SECOND_NS + SHORT_HOLD_NS - 1).is_empty());
        assert_eq!(
            drain(&mut folder, SECOND_NS + SHORT_HOLD_NS),
            ["summary@10000x2:25000:20000"]
        );
        let mut lines = Vec::new();
        folder.ready(u64::MAX, |line| lines.push(line));
        assert_eq!(
            lines.iter().map(describe).collect::<Vec<_>>(),
            ["summary@1000001000x1:3000:3000"]
        );
    }

    #[test]
    fn a_hold_as_long_as_the_bound_is_written_whole() {
        let mut folder = Folder::new(true);
        let file = lock(1, 0xa);
        folder.push(acquire(0, 1, file));
        folder.push(release(0, SHORT_HOLD_NS, 1, file, ReleaseReason::Unlock));
        assert_eq!(
            drain(&mut folder, SHORT_HOLD_NS),
            ["acquire@0", "release@100000"]
        );
    }

    #[test]
    fn a_hold_anything_else_touched_is_written_whole() {
        let file = lock(1, 0xa);
        let wait = Output::Wait {
            at: 2 * US,
            actor: actor(2),
            lock: lock(1, 0xb),
            mode: Mode::Write,
            start: 0,
            end: crate::tracker::END_OF_FILE,
            file: FileName::NONE,
            blockers: Default::default(),
        };
        let mut folder = Folder::new(true);
        folder.push(acquire(0, 1, file));
        folder.push(wait);
        folder.push(release(0, 5 * US, 1, file, ReleaseReason::Unlock));
        assert_eq!(
            drain(&mut folder, SECOND_NS),
            ["acquire@0", "wait@2000", "release@5000"]
        );

        // Released by a close, or by another process's unlock: not an explicit release by
        // its owner.
        let mut folder = Folder::new(true);
        folder.push(acquire(0, 1, file));
        folder.push(release(0, 5 * US, 1, file, ReleaseReason::Close));
        folder.push(acquire(10 * US, 1, file));
        folder.push(release(10 * US, 15 * US, 3, file, ReleaseReason::Unlock));
        let mut lines = Vec::new();
        folder.ready(u64::MAX, |line| lines.push(line));
        assert_eq!(
            lines.iter().map(describe).collect::<Vec<_>>(),
            [
                "acquire@0",
                "release@5000",
                "acquire@10000",
                "release@15000"
            ]
        );
    }

    #[test]
    fn an_acquire_that_ends_a_wait_is_written() {
        let mut folder = Folder::new(true);
        let file = lock(1, 0xa);
        let mut waited = acquire(0, 1, file);
        if let Output::Acquire { wait_ns, .. } = &mut waited {
            *wait_ns = Some(3 * US);
        }
        folder.push(waited);
        folder.push(release(0, US, 1, file, ReleaseReason::Unlock));
        assert_eq!(drain(&mut folder, SECOND_NS), ["acquire@0", "release@1000"]);
    }

    #[test]
    fn lines_behind_a_candidate_keep_their_order() {
        let mut folder = Folder::new(true);
        folder.push(acquire(0, 1, lock(1, 0xa)));
        folder.push(exit(US, 2));
        // Its release may still come: nothing goes out past it.
        assert!(drain(&mut folder, SHORT_HOLD_NS - 1).is_empty());
        assert_eq!(
            drain(&mut folder, SHORT_HOLD_NS),
            ["acquire@0", "exit@1000"]
        );
    }

    #[test]
    fn a_process_s_summaries_come_before_its_exit() {
        let mut folder = Folder::new(true);
        let file = lock(1, 0xa);
        folder.push(acquire(0, 1, file));
        folder.push(release(0, US, 1, file, ReleaseReason::Unlock));
        folder.push(exit(2 * US, 1));
        assert_eq!(
            drain(&mut folder, 3 * US),
            ["summary@0x1:1000:1000", "exit@2000"]
        );
    }

    #[test]
    fn every_event_passes_every_output() {
        let mut folder = Folder::new(false);
        let file = lock(1, 0xa);
        folder.push(acquire(0, 1, file));
        folder.push(release(0, US, 1, file, ReleaseReason::Unlock));
        assert_eq!(drain(&mut folder, 0), ["acquire@0", "release@1000"]);
    }

    #[test]
    fn a_posix_range_released_in_part_is_written() {
        let mut folder = Folder::new(true);
        let file = LockId {
            kind: LockKind::Posix,
            ..lock(1, 0xa)
        };
        folder.push(acquire(0, 1, file));
        let mut part = release(0, US, 1, file, ReleaseReason::Unlock);
        if let Output::Release { end, last, .. } = &mut part {
            *end = 99;
            // The rest is still held.
            *last = false;
        }
        folder.push(part);
        assert_eq!(drain(&mut folder, SECOND_NS), ["acquire@0", "release@1000"]);
    }

    /// A POSIX lock on its own byte range.
    fn ranged(output: Output, range: (i64, i64), mode: Mode) -> Output {
        match output {
            Output::Acquire {
                at,
                actor,
                lock,
                wait_ns,
                file,
                first,
                ..
            } => Output::Acquire {
                at,
                actor,
                lock,
                mode,
                start: range.0,
                end: range.1,
                wait_ns,
                file,
                first,
            },
            Output::Release {
                at,
                actor,
                lock,
                mut held,
                reason,
                file,
                last,
                ..
            } => {
                (held.start, held.end, held.mode) = (range.0, range.1, mode);
                Output::Release {
                    at,
                    actor,
                    lock,
                    held,
                    start: range.0,
                    end: range.1,
                    reason,
                    file,
                    last,
                }
            }
            other => other,
        }
    }

    fn not_first(mut output: Output) -> Output {
        if let Output::Acquire { first, .. } = &mut output {
            *first = false;
        }
        output
    }

    fn not_last(mut output: Output) -> Output {
        if let Output::Release { last, .. } = &mut output {
            *last = false;
        }
        output
    }

    /// A SQLite transaction's POSIX locks, as the tracker tells them: the shared lock (pending
    /// byte, then the shared range), the reserved byte, the exclusive lock (the shared range
    /// converted), then everything unlocked.
    fn transaction(folder: &mut Folder, at: u64, pid: u32, file: LockId) {
        let (pending, reserved, shared) = ((100, 100), (101, 101), (102, 611));
        let t = |step: u64| at + step * US;
        folder.push(ranged(acquire(t(0), pid, file), pending, Mode::Read));
        folder.push(not_first(ranged(
            acquire(t(1), pid, file),
            shared,
            Mode::Read,
        )));
        let unlock = ReleaseReason::Unlock;
        let release = |since, step, range, mode| {
            not_last(ranged(
                release(since, t(step), pid, file, unlock),
                range,
                mode,
            ))
        };
        folder.push(release(t(0), 2, pending, Mode::Read));
        folder.push(not_first(ranged(
            acquire(t(3), pid, file),
            reserved,
            Mode::Write,
        )));
        let convert = not_last(ranged(
            self::release(t(1), t(4), pid, file, ReleaseReason::Convert),
            shared,
            Mode::Read,
        ));
        folder.push(convert);
        folder.push(not_first(ranged(
            acquire(t(4), pid, file),
            shared,
            Mode::Write,
        )));
        folder.push(release(t(3), 5, reserved, Mode::Write));
        let last = ranged(
            self::release(t(4), t(6), pid, file, unlock),
            shared,
            Mode::Write,
        );
        folder.push(last);
    }

    fn posix(ino: u64) -> LockId {
        LockId {
            kind: LockKind::Posix,
            ..lock(ino, 0xf11e5)
        }
    }

    #[test]
    fn a_posix_stretch_from_nothing_held_to_nothing_held_folds_into_summaries() {
        let mut folder = Folder::new(true);
        let file = posix(1);
        transaction(&mut folder, 0, 1, file);
        transaction(&mut folder, 50 * US, 1, file);
        let mut lines = Vec::new();
        folder.ready(u64::MAX, |line| lines.push(line));
        // Per transaction, three read holds (the pending byte, the shared range before its
        // conversion) and two write holds: in a summary per mode.
        let summaries: Vec<(Mode, u64, u64, u64)> = lines
            .iter()
            .map(|line| match line {
                Line::Summary(summary) => (
                    summary.mode,
                    summary.holds,
                    summary.held_ns,
                    summary.longest_ns,
                ),
                Line::Event(_) => {
                    panic!("a line of the transactions was written: {}", describe(line))
                }
            })
            .collect();
        assert_eq!(
            summaries,
            [
                (Mode::Read, 4, 2 * (2 + 3) * US, 3 * US),
                (Mode::Write, 4, 2 * (2 + 2) * US, 2 * US),
            ]
        );
    }

    #[test]
    fn a_posix_stretch_that_anything_else_touched_or_that_lasted_is_written_whole() {
        let file = posix(1);
        let lines_of = |folder: &mut Folder| {
            let mut lines = Vec::new();
            folder.ready(u64::MAX, |line| lines.push(line));
            lines
                .iter()
                .filter(|line| matches!(line, Line::Event(_)))
                .count()
        };
        // Another process's lock on the file in the middle.
        let mut touched = Folder::new(true);
        touched.push(ranged(acquire(0, 1, file), (100, 100), Mode::Read));
        touched.push(ranged(
            acquire(
                US,
                2,
                LockId {
                    owner: 0xbeef,
                    ..file
                },
            ),
            (700, 800),
            Mode::Read,
        ));
        touched.push(ranged(
            release(0, 2 * US, 1, file, ReleaseReason::Unlock),
            (100, 100),
            Mode::Read,
        ));
        assert_eq!(lines_of(&mut touched), 3);
        // A stretch that ends past the bound.
        let mut long = Folder::new(true);
        transaction(&mut long, 0, 1, file);
        long.push(ranged(acquire(SECOND_NS, 1, file), (100, 100), Mode::Read));
        long.push(ranged(
            release(
                SECOND_NS,
                SECOND_NS + SHORT_HOLD_NS,
                1,
                file,
                ReleaseReason::Unlock,
            ),
            (100, 100),
            Mode::Read,
        ));
        assert_eq!(lines_of(&mut long), 2);
        // A stretch whose owner still holds a range when its lines stop.
        let mut held = Folder::new(true);
        held.push(ranged(acquire(0, 1, file), (100, 100), Mode::Read));
        held.push(not_first(ranged(
            acquire(US, 1, file),
            (102, 611),
            Mode::Read,
        )));
        held.push(not_last(ranged(
            release(0, 2 * US, 1, file, ReleaseReason::Unlock),
            (100, 100),
            Mode::Read,
        )));
        assert_eq!(lines_of(&mut held), 3);
    }
}
