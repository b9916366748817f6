//! POSIX locks as the kernel keeps them (fs/locks.c `posix_lock_inode`): each owner, a process,
//! holds disjoint byte ranges of a file, each in one mode. A grant merges with what the owner
//! holds in the same mode and converts what it holds in the other; an unlock splits ranges;
//! the process's exit ends them all.
//!
//! A hold is the bytes one grant newly took, until the last of them is released; bytes the
//! owner already held in that mode stay with the hold that took them. Waits and refusals name
//! the other processes' locks on the bytes they asked for. The file is then cut into sections:
//! bytes that holds, waits and refusals overlap or touch.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::events::{EventKind, Mode, ReleaseReason};

use super::{
    line::{Actor, ByteRange, Exit, LockKey, Nanos, Record},
    timeline::{
        Blocker, Hold, LeftOut, Lock, PartialRelease, Refusal, Release, Wait, WaitOutcome, subtract,
    },
};

/// How long after an exit line the releases its closes caused may still come (the tracer's
/// grace period). Bytes the process still holds then were released in lines that are missing.
const EXIT_GRACE_NS: u64 = 1_000_000_000;

/// Bytes of one owner held in one mode, taken by one hold.
#[derive(Debug, Clone, Copy)]
struct Segment {
    end: u64,
    mode: Mode,
    hold: usize,
}

/// A process's POSIX locks on the file: segments by their first byte.
#[derive(Debug)]
struct Owner {
    actor: Actor,
    segments: BTreeMap<u64, Segment>,
}

impl Owner {
    /// The owner's locks as the kernel stores them (touching segments of one mode are one lock)
    /// that overlap `range`.
    fn locks_overlapping(&self, range: ByteRange) -> Vec<(ByteRange, Mode)> {
        let mut from = range.start;
        if let Some((&start, segment)) = self.segments.range(..=range.start).next_back()
            && segment.end >= range.start
        {
            from = start;
            while let Some((&before, previous)) = self.segments.range(..from).next_back() {
                if previous.mode != segment.mode || previous.end + 1 != from {
                    break;
                }
                from = before;
            }
        }
        let mut locks: Vec<(ByteRange, Mode)> = Vec::new();
        for (&start, segment) in self.segments.range(from..) {
            let piece = ByteRange {
                start,
                end: segment.end,
            };
            match locks.last_mut() {
                Some((lock, mode)) if *mode == segment.mode && lock.touches(piece) => {
                    lock.end = piece.end;
                }
                _ if start > range.end => break,
                _ => locks.push((piece, segment.mode)),
            }
        }
        locks.retain(|(lock, _)| lock.overlaps(range));
        locks
    }

    /// The held bytes within `range`, in order.
    fn held_within(&self, range: ByteRange) -> Vec<ByteRange> {
        let mut held: Vec<ByteRange> = self
            .segments
            .range(..=range.end)
            .rev()
            .take_while(|(_, segment)| segment.end >= range.start)
            .filter_map(|(&start, segment)| {
                ByteRange {
                    start,
                    end: segment.end,
                }
                .intersection(range)
            })
            .collect();
        held.reverse();
        held
    }
}

struct Fold {
    lock: Lock,
    owners: HashMap<u32, Owner>,
    /// Per hold: how many of its segments are still held.
    live: Vec<u32>,
    /// Exits whose releases may still come, with the end of their grace.
    exiting: Vec<(Nanos, Exit)>,
    /// Processes whose exit has ended their locks, and which have not locked since: their late
    /// release lines are about bytes already counted as released.
    exited: HashSet<u32>,
}

/// Folds a file's POSIX lines (in time order) and the exits of their processes into holds,
/// waits and refusals, and returns them cut into sections.
pub fn fold(lock: Lock, records: &[Record], exits: &[Exit]) -> Vec<Lock> {
    let mut fold = Fold {
        lock,
        owners: HashMap::new(),
        live: Vec::new(),
        exiting: Vec::new(),
        exited: HashSet::new(),
    };
    let mut exits = exits.iter().peekable();
    for record in records {
        while let Some(exit) = exits.next_if(|exit| exit.at <= record.at) {
            fold.exiting
                .push((exit.at.saturating_add(EXIT_GRACE_NS), *exit));
        }
        fold.end_exits(|grace_end, _| grace_end < record.at);
        fold.apply(record);
    }
    fold.exiting
        .extend(exits.map(|exit| (exit.at.saturating_add(EXIT_GRACE_NS), *exit)));
    fold.end_exits(|_, _| true);
    sections(fold.lock)
}

impl Fold {
    fn apply(&mut self, record: &Record) {
        match record.event {
            EventKind::Acquire => {
                self.new_life(record);
                let wait_ns = self.lock.end_acquired_wait(record);
                self.take(record, |hold| {
                    hold.acquired = Some(record.at);
                    hold.acquire_logged = true;
                    hold.wait_ns = wait_ns;
                });
            }
            EventKind::Held => {
                self.new_life(record);
                self.take(record, |hold| hold.found_held = Some(record.at));
            }
            EventKind::Wait => {
                self.new_life(record);
                let blockers = self.blockers(record);
                self.lock.waits.push(Wait::new(record, blockers));
            }
            EventKind::Fail => {
                self.new_life(record);
                let outcome = WaitOutcome::Failed(record.at, record.errno);
                if !self.lock.end_wait(record.actor, outcome) {
                    let blockers = self.blockers(record);
                    self.lock.refusals.push(Refusal::new(record, blockers));
                }
            }
            EventKind::Release => self.release(record),
            // POSIX locks never outlive their process.
            EventKind::Orphan
            | EventKind::OrphanEnd
            | EventKind::Start
            | EventKind::Stop
            | EventKind::Exit
            | EventKind::Deadlock
            | EventKind::Inherit
            | EventKind::Summary
            | EventKind::Unknown => {}
        }
    }

    /// A process that locks after an exit line of its pid is a new one: what the old one
    /// held ended with it.
    fn new_life(&mut self, record: &Record) {
        let pid = record.actor.pid;
        self.end_exits(|_, exit| exit.actor.pid == pid && exit.at <= record.at);
        self.exited.remove(&pid);
    }

    /// Ends the exits `due` picks: whatever their processes still hold was released when they
    /// exited.
    fn end_exits(&mut self, due: impl Fn(Nanos, &Exit) -> bool) {
        if self.exiting.is_empty() {
            return;
        }
        let (ended, waiting): (Vec<_>, Vec<_>) = self
            .exiting
            .drain(..)
            .partition(|(grace_end, exit)| due(*grace_end, exit));
        self.exiting = waiting;
        for (_, exit) in ended {
            let pid = exit.actor.pid;
            let removed = self.remove(pid, ByteRange::WHOLE_FILE, None);
            self.released(
                removed,
                Release {
                    at: exit.at,
                    by: exit.actor,
                    reason: Some(ReleaseReason::Exit),
                },
            );
            self.exited.insert(pid);
        }
    }

    /// A grant (or a lock found held): bytes held in the other mode are converted, bytes
    /// already held in this mode stay as they are, and the rest is a new hold, which
    /// `describe` completes.
    fn take(&mut self, record: &Record, describe: impl FnOnce(&mut Hold)) {
        let mode = match record.mode {
            Some(mode @ (Mode::Read | Mode::Write)) => mode,
            _ => return,
        };
        let actor = record.actor;
        let converted = self.remove(actor.pid, record.range, Some(other_mode(mode)));
        self.released(
            converted,
            Release {
                at: record.at,
                by: actor,
                reason: Some(ReleaseReason::Convert),
            },
        );
        let owner = self.owners.entry(actor.pid).or_insert_with(|| Owner {
            actor,
            segments: BTreeMap::new(),
        });
        owner.actor = actor;
        let new = subtract(record.range, owner.held_within(record.range));
        let (Some(first), Some(last)) = (new.first(), new.last()) else {
            return;
        };
        let range = ByteRange {
            start: first.start,
            end: last.end,
        };
        let hold = self.lock.holds.len();
        for piece in &new {
            owner.segments.insert(
                piece.start,
                Segment {
                    end: piece.end,
                    mode,
                    hold,
                },
            );
        }
        self.live.push(new.len() as u32);
        let mut taken = Hold {
            taker: Some(actor),
            mode: Some(mode),
            range,
            excluded: subtract(range, new),
            ..Default::default()
        };
        describe(&mut taken);
        self.lock.holds.push(taken);
    }

    /// A release line: the bytes it names end (for a conversion, only those held in the old
    /// mode). Bytes the owner is not known to hold were taken before these logs start.
    fn release(&mut self, record: &Record) {
        let actor = record.actor;
        let only = match (record.reason, record.mode) {
            (Some(ReleaseReason::Convert), Some(mode @ (Mode::Read | Mode::Write))) => Some(mode),
            _ => None,
        };
        let known = self
            .owners
            .get(&actor.pid)
            .map(|owner| owner.held_within(record.range))
            .unwrap_or_default();
        let removed = self.remove(actor.pid, record.range, only);
        let release = Release {
            at: record.at,
            by: actor,
            reason: record.reason,
        };
        self.released(removed, release);
        if self.exited.contains(&actor.pid) {
            return;
        }
        for range in subtract(record.range, known) {
            self.live.push(0);
            self.lock.holds.push(Hold {
                taker: Some(actor),
                mode: record.mode,
                acquired: record
                    .duration_ns
                    .map(|held| record.at.saturating_sub(held)),
                range,
                release: Some(release),
                ..Default::default()
            });
        }
    }

    /// Takes `range` (only the bytes held in `only` mode, if given) out of a process's
    /// segments; returns the removed pieces with their holds.
    fn remove(
        &mut self,
        pid: u32,
        range: ByteRange,
        only: Option<Mode>,
    ) -> Vec<(usize, ByteRange)> {
        let Some(owner) = self.owners.get_mut(&pid) else {
            return Vec::new();
        };
        let starts: Vec<u64> = owner
            .segments
            .range(..=range.end)
            .rev()
            .take_while(|(_, segment)| segment.end >= range.start)
            .filter(|(_, segment)| only.is_none_or(|mode| segment.mode == mode))
            .map(|(&start, _)| start)
            .collect();
        let mut removed = Vec::with_capacity(starts.len());
        for start in starts {
            let Some(segment) = owner.segments.remove(&start) else {
                continue;
            };
            let piece = ByteRange {
                start,
                end: segment.end,
            };
            self.live[segment.hold] -= 1;
            if start < range.start {
                let before = Segment {
                    end: range.start - 1,
                    ..segment
                };
                owner.segments.insert(start, before);
                self.live[segment.hold] += 1;
            }
            if segment.end > range.end {
                owner.segments.insert(range.end + 1, segment);
                self.live[segment.hold] += 1;
            }
            if let Some(gone) = piece.intersection(range) {
                removed.push((segment.hold, gone));
            }
        }
        if owner.segments.is_empty() {
            self.owners.remove(&pid);
        }
        removed
    }

    /// Tells the holds what `release` took from them: the rest of a hold ends it, less is a
    /// partial release.
    fn released(&mut self, mut removed: Vec<(usize, ByteRange)>, release: Release) {
        removed.sort_unstable_by_key(|&(hold, range)| (hold, range.start));
        for pieces in removed.chunk_by(|a, b| a.0 == b.0) {
            let index = pieces[0].0;
            let hold = &mut self.lock.holds[index];
            if self.live[index] > 0 {
                hold.partial_releases.extend(
                    pieces
                        .iter()
                        .map(|&(_, range)| PartialRelease { range, release }),
                );
                continue;
            }
            if release.reason == Some(ReleaseReason::Exit) && hold.taker == Some(release.by) {
                hold.taker_exit.get_or_insert(release.at);
            }
            hold.release = Some(release);
        }
    }

    /// The other processes' locks that conflict with a request: any lock on its bytes for a
    /// write lock, write locks for a read lock.
    fn blockers(&self, record: &Record) -> Box<[Blocker]> {
        let Some(wanted) = record.mode else {
            return Box::new([]);
        };
        let mut blockers: Vec<Blocker> = self
            .owners
            .iter()
            .filter(|(pid, _)| **pid != record.actor.pid)
            .flat_map(|(_, owner)| {
                owner
                    .locks_overlapping(record.range)
                    .into_iter()
                    .filter(|&(_, mode)| wanted == Mode::Write || mode == Mode::Write)
                    .map(|(range, mode)| Blocker {
                        holder: owner.actor,
                        mode,
                        range,
                    })
            })
            .collect();
        blockers.sort_by_key(|blocker| (blocker.range.start, blocker.holder.pid));
        blockers.into_boxed_slice()
    }
}

fn other_mode(mode: Mode) -> Mode {
    match mode {
        Mode::Read => Mode::Write,
        _ => Mode::Read,
    }
}

/// Cuts a file's history into sections: the bytes that overlapping or touching holds, waits and
/// refusals tie together (the kernel merges touching ranges), each with its own.
fn sections(file: Lock) -> Vec<Lock> {
    let mut spans: Vec<ByteRange> = file
        .holds
        .iter()
        .map(|hold| hold.range)
        .chain(file.waits.iter().map(|wait| wait.range))
        .chain(file.refusals.iter().map(|refusal| refusal.range))
        .collect();
    spans.sort_unstable();
    let mut bounds: Vec<ByteRange> = Vec::new();
    for span in spans {
        match bounds.last_mut() {
            Some(last) if last.overlaps(span) || last.touches(span) => {
                last.end = last.end.max(span.end);
            }
            _ => bounds.push(span),
        }
    }
    let mut sections: Vec<Lock> = bounds
        .iter()
        .map(|&range| Lock {
            key: LockKey { range, ..file.key },
            paths: file.paths.clone(),
            holds: Vec::new(),
            waits: Vec::new(),
            refusals: Vec::new(),
            left_out: LeftOut::default(),
        })
        .collect();
    let section = |range: ByteRange| bounds.partition_point(|bound| bound.end < range.start);
    for hold in file.holds {
        sections[section(hold.range)].holds.push(hold);
    }
    for wait in file.waits {
        sections[section(wait.range)].waits.push(wait);
    }
    for refusal in file.refusals {
        sections[section(refusal.range)].refusals.push(refusal);
    }
    sections
}
