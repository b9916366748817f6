//! Folds uncontended short holds into `summary` lines: between the tracker and the sinks.
//!
//! A hold folds when its owner releases it by an explicit unlock within [`SHORT_HOLD_NS`] of
//! taking it without a wait, and nothing else is said of the file in between (no wait, no
//! refusal, no other lock, no inheritance). Its two lines become a count in one `summary`
//! line per process, file, mode and second: a tight lock loop then costs the tracer a hash
//! look-up per event instead of two enriched, formatted and written lines. Every wait, failure,
//! release on close or exit, exit and orphan stays its own line, as does every hold that
//! anything else touched: what a post-mortem needs.
//!
//! Outputs pass through in the tracker's order. An acquire that may fold waits until the
//! tracker has read and applied [`SHORT_HOLD_NS`] past it, with the lines behind it: by then
//! its release, if it came in time, has been seen.

use std::collections::VecDeque;

use aimlock_common::FileName;
use rustc_hash::FxHashMap as HashMap;
use smallvec::SmallVec;

use crate::{
    events::{LockKind, Mode, ReleaseReason},
    tracker::{Actor, LockId, Output},
};

/// Holds released by their owner within this, uncontended, fold into a summary: the upper
/// bound of the metrics' first hold bucket, so that folded holds are counted there exactly.
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
    /// Lines in the order they go out; `None` where an acquire folded away.
    queue: VecDeque<Option<Line>>,
    /// The sequence number of `queue[0]`.
    queue_base: u64,
    /// The acquire in the queue that may still fold, by file, as its sequence number: at most
    /// one, since any other line about the file ends a file's candidate.
    candidates: HashMap<(u32, u64), u64>,
    /// Summaries still gathering holds, by pid.
    summaries: HashMap<u32, SmallVec<[Summary; 1]>>,
    /// The earliest time a summary is complete: what the tracker must have settled.
    next_summary_due: u64,
}

impl Folder {
    pub fn new(folding: bool) -> Self {
        Self {
            folding,
            queue: VecDeque::new(),
            queue_base: 0,
            candidates: HashMap::default(),
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
        if self.fold(&output) {
            return;
        }
        if let Some(file) = file_of(&output) {
            // Anything else said of the file: its holds in the queue are not uncontended.
            self.candidates.remove(&file);
        }
        if let Output::Exit { actor, .. } = &output {
            // A process's summaries come before its exit, while its paths are still known.
            self.summarize_process(actor.pid);
        }
        let seq = self.queue_base + self.queue.len() as u64;
        if let Output::Acquire {
            lock,
            wait_ns: None,
            ..
        } = &output
            && lock.kind != LockKind::Lease
        {
            self.candidates.insert((lock.dev, lock.ino), seq);
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
            if let Some(Line::Event(Output::Acquire { at, lock, .. })) = front {
                let file = (lock.dev, lock.ino);
                let waiting = self
                    .candidates
                    .get(&file)
                    .is_some_and(|&seq| seq == self.queue_base);
                if waiting {
                    if at.saturating_add(SHORT_HOLD_NS) > settled {
                        break;
                    }
                    self.candidates.remove(&file);
                }
            }
            self.queue_base += 1;
            if let Some(Some(line)) = self.queue.pop_front() {
                out(line);
            }
        }
    }

    /// Folds `output` if it releases a candidate: true when it did.
    fn fold(&mut self, output: &Output) -> bool {
        let Output::Release {
            at,
            actor,
            lock,
            held,
            start,
            end,
            reason: ReleaseReason::Unlock,
            ..
        } = output
        else {
            return false;
        };
        let file = (lock.dev, lock.ino);
        let Some(held_ns) = held.since_ns.map(|since| at.saturating_sub(since)) else {
            return false;
        };
        let Some(&seq) = self.candidates.get(&file) else {
            return false;
        };
        let index = (seq - self.queue_base) as usize;
        let Some(Some(Line::Event(Output::Acquire {
            at: taken_at,
            actor: taker,
            lock: taken,
            mode,
            start: taken_start,
            end: taken_end,
            ..
        }))) = self.queue.get(index)
        else {
            return false;
        };
        let releases_it = taken == lock
            && taker.same_process(actor)
            && Some(*taken_at) == held.since_ns
            && (*mode, *taken_start, *taken_end) == (held.mode, held.start, held.end)
            && (*start, *end) == (held.start, held.end);
        if held_ns >= SHORT_HOLD_NS || !releases_it {
            return false;
        }
        self.candidates.remove(&file);
        // The fields the summary needs, copied out of the slot: the whole acquire is a few
        // hundred bytes.
        let Some(Some(Line::Event(Output::Acquire {
            at,
            actor,
            lock,
            mode,
            file,
            ..
        }))) = self.queue.get(index)
        else {
            unreachable!("the slot was matched as an acquire just above");
        };
        let hold = Summary {
            at: *at,
            actor: *actor,
            lock: *lock,
            mode: *mode,
            file: *file,
            holds: 1,
            held_ns,
            longest_ns: held_ns,
        };
        self.queue[index] = None;
        self.add_to_summary(hold);
        true
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
        if let Output::Release { end, .. } = &mut part {
            *end = 99;
        }
        folder.push(part);
        assert_eq!(drain(&mut folder, SECOND_NS), ["acquire@0", "release@1000"]);
    }
}
