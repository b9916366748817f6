//! Folding one lock's lines, in time order, into holds, waits and refusals. POSIX locks are
//! folded per file by [`super::posix`].

use std::io;

use crate::events::{EventKind, LockKind, Mode, ReleaseReason};

use super::{
    line::{Actor, ByteRange, Exit, Exits, LockKey, Name, Nanos, Origin, Paths, Record},
    posix, render,
    scan::LockLines,
    spill::{RunLines, SortedLines, Waited},
    stored::Stored,
};

/// One lock's history: for POSIX locks, one section of a file (bytes that overlapping locks,
/// waits and refusals tie together).
#[derive(Debug, Clone)]
pub struct Lock {
    pub key: LockKey,
    pub paths: Paths,
    pub holds: Vec<Hold>,
    pub waits: Vec<Wait>,
    pub refusals: Vec<Refusal>,
    /// The holds no narrative tells, left out of `holds` (see [`Lock::leave_out_untold_holds`]).
    pub left_out: LeftOut,
}

/// What the totals and the order of the locks need of the holds left out.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeftOut {
    pub holds: usize,
    /// Summed over them.
    pub held_ns: u64,
    /// When the earliest was taken.
    pub first: Option<Nanos>,
}

impl LeftOut {
    /// Counts a hold left out; `end`: when the logs end, for one never released.
    fn count(&mut self, hold: &Hold, end: Nanos) {
        self.holds += 1;
        self.held_ns += render::held_ns(hold, end).unwrap_or(0);
        self.first = self.first.into_iter().chain(hold.first_time()).min();
    }
}

/// A lock from the moment it was taken until it was released.
#[derive(Debug, Clone, Default)]
pub struct Hold {
    /// None when only lines that do not name the taker are in the logs.
    pub taker: Option<Actor>,
    pub mode: Option<Mode>,
    /// None when the lock was taken before the logs start and no line tells when.
    pub acquired: Option<Nanos>,
    /// False when the time was worked out from a later line's `held_ns`.
    pub acquire_logged: bool,
    /// When a tracer starting (or reconciling) found the kernel holding it, if no line before
    /// says it was taken.
    pub found_held: Option<Nanos>,
    pub wait_ns: Option<u64>,
    /// When the taker exited while the lock was still held (it outlived the taker), or when
    /// the taker's exit released it.
    pub taker_exit: Option<Nanos>,
    pub orphaned: bool,
    /// Live processes that still referenced the lock when its taker had gone.
    pub holders: Vec<Actor>,
    /// The bytes it covered when taken.
    pub range: ByteRange,
    /// POSIX: bytes inside `range` that it never had (the owner held them already, in the
    /// same mode, when it took the rest).
    pub excluded: Vec<ByteRange>,
    /// POSIX: the parts released before the rest, in time order.
    pub partial_releases: Vec<PartialRelease>,
    /// When the last of it was released.
    pub release: Option<Release>,
}

impl Hold {
    /// Whether a process took it, held it or released it.
    fn involves(&self, pid: u32) -> bool {
        self.taker.is_some_and(|taker| taker.pid == pid)
            || self.holders.iter().any(|holder| holder.pid == pid)
            || self.release.is_some_and(|release| release.by.pid == pid)
    }

    /// When its story starts, for ordering locks.
    fn first_time(&self) -> Option<Nanos> {
        self.acquired.or(self.found_held).or(self.taker_exit)
    }

    /// The bytes it held at `at`: none before it was taken or once released.
    pub fn held_at(&self, at: Nanos) -> Vec<ByteRange> {
        let taken = self.acquired.is_none_or(|acquired| acquired <= at);
        let released = self.release.is_some_and(|release| release.at <= at);
        if !taken || released {
            return Vec::new();
        }
        let gone = self.excluded.iter().copied().chain(
            self.partial_releases
                .iter()
                .filter(|part| part.release.at <= at)
                .map(|part| part.range),
        );
        subtract(self.range, gone)
    }
}

/// The moments a lock's narrative asks who held it: each wait, from its start until it ended
/// (or at its start, for one that ended at once), and each refusal. As spans [from, to), by
/// `from`, with the latest `to` of each span and those before it.
struct AskedAbout {
    from: Vec<Nanos>,
    latest_to: Vec<Nanos>,
}

impl AskedAbout {
    fn new(lock: &Lock) -> Self {
        let waits = lock.waits.iter().map(|wait| {
            let to = wait
                .until()
                .map_or(Nanos::MAX, |until| until.max(wait.since.saturating_add(1)));
            (wait.since, to)
        });
        let refusals = lock
            .refusals
            .iter()
            .map(|refusal| (refusal.at, refusal.at.saturating_add(1)));
        let mut spans: Vec<(Nanos, Nanos)> = waits.chain(refusals).collect();
        spans.sort_unstable();
        let mut latest = 0;
        let latest_to = spans
            .iter()
            .map(|&(_, to)| {
                latest = latest.max(to);
                latest
            })
            .collect();
        Self {
            from: spans.into_iter().map(|(from, _)| from).collect(),
            latest_to,
        }
    }

    /// Whether the hold held the lock at any of those moments (as the narrative's
    /// `held_then` tells): some span starts before the hold ends and ends after it starts.
    fn while_held(&self, hold: &Hold) -> bool {
        let start = hold.acquired.or(hold.found_held).unwrap_or(0);
        let end = hold.release.map_or(Nanos::MAX, |release| release.at);
        let before_end = self.from.partition_point(|&from| from < end);
        before_end > 0 && self.latest_to[before_end - 1] > start
    }
}

/// `range` without the bytes of `gone`, in order.
pub fn subtract(range: ByteRange, gone: impl IntoIterator<Item = ByteRange>) -> Vec<ByteRange> {
    let mut cuts: Vec<ByteRange> = gone
        .into_iter()
        .filter_map(|cut| cut.intersection(range))
        .collect();
    cuts.sort_unstable();
    let mut left = Vec::new();
    // The first byte neither cut nor kept yet; None once the end of `range` is reached.
    let mut next = Some(range.start);
    for cut in cuts {
        let Some(from) = next else { break };
        if cut.start > from {
            left.push(ByteRange {
                start: from,
                end: cut.start - 1,
            });
        }
        next = match cut.end.checked_add(1) {
            Some(after) if cut.end < range.end => Some(after.max(from)),
            _ => None,
        };
    }
    if let Some(from) = next {
        left.push(ByteRange {
            start: from,
            end: range.end,
        });
    }
    left
}

/// Part of a POSIX hold released while the rest stayed held.
#[derive(Debug, Clone, Copy)]
pub struct PartialRelease {
    pub range: ByteRange,
    pub release: Release,
}

#[derive(Debug, Clone, Copy)]
pub struct Release {
    pub at: Nanos,
    pub by: Actor,
    pub reason: Option<ReleaseReason>,
}

/// A blocking request queued behind the lock.
#[derive(Debug, Clone)]
pub struct Wait {
    pub waiter: Actor,
    pub mode: Option<Mode>,
    /// The bytes requested.
    pub range: ByteRange,
    pub since: Nanos,
    pub outcome: WaitOutcome,
    /// POSIX: the other processes' locks on those bytes when it began to wait.
    pub blockers: Box<[Blocker]>,
}

/// A lock that conflicted with a request: who held which bytes, in which mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Blocker {
    pub holder: Actor,
    pub mode: Mode,
    pub range: ByteRange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    Acquired(Nanos),
    Failed(Nanos, Option<Name>),
    /// Still waiting when the logs end.
    Waiting,
}

impl Wait {
    pub(super) fn new(record: &Record, blockers: Box<[Blocker]>) -> Self {
        Self {
            waiter: record.actor,
            mode: record.mode,
            range: record.range,
            since: record.at,
            outcome: WaitOutcome::Waiting,
            blockers,
        }
    }

    pub fn until(&self) -> Option<Nanos> {
        match self.outcome {
            WaitOutcome::Acquired(at) | WaitOutcome::Failed(at, _) => Some(at),
            WaitOutcome::Waiting => None,
        }
    }
}

/// A request the lock refused (a non-blocking attempt, a deadlock, an interrupted wait).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub at: Nanos,
    pub actor: Actor,
    pub errno: Option<Name>,
    pub mode: Option<Mode>,
    /// The bytes requested.
    pub range: ByteRange,
    /// POSIX: the other processes' locks on those bytes then.
    pub blockers: Box<[Blocker]>,
}

impl Refusal {
    pub(super) fn new(record: &Record, blockers: Box<[Blocker]>) -> Self {
        Self {
            at: record.at,
            actor: record.actor,
            errno: record.errno,
            mode: record.mode,
            range: record.range,
            blockers,
        }
    }
}

thread_local! {
    /// Each job's room for sorting a lock's lines, kept from lock to lock.
    static SORTED_LINES: std::cell::Cell<Vec<Stored>> = const { std::cell::Cell::new(Vec::new()) };
}

/// What a fold may leave out as it goes: the holds of a flock, OFD lock or lease that no
/// narrative will tell, whatever lines come after (see [`Lock::leave_out_outranked`]), so that
/// a lock of a long history never has all its holds at once. Only for a narrative of the
/// whole history (not `--json`, not a span): `pids` are those the query asks about, whose
/// holds decide whether the lock is told.
#[derive(Clone, Copy)]
pub struct Pruning<'a> {
    pub pids: &'a [u32],
}

/// Holds a lock has before the first look for those to leave out; then each time they double.
const PRUNE_FROM: usize = 4 * render::SHOWN;

/// Puts the lines in time order (equal times in the order of their files, then lines) and
/// folds them: one lock, or for POSIX locks the sections of the file. `sorted`: the lock's
/// lines written out in time order, if any (never a POSIX lock's), each made ready by
/// `prepare` as it is read. `rank` orders the sources; `exits` are every process's exits.
pub fn build(
    key: LockKey,
    lines: LockLines,
    sorted: Option<SortedLines>,
    prepare: impl Fn(&mut Stored),
    rank: &[u32],
    exits: &Exits,
    pruning: Option<Pruning>,
) -> io::Result<Vec<Lock>> {
    let LockLines {
        records: stored,
        paths,
    } = lines;
    let order = |at: Nanos, origin: Origin| (at, rank[origin.source as usize], origin.line);
    let mut lock = Lock {
        key,
        paths,
        holds: Vec::new(),
        waits: Vec::new(),
        refusals: Vec::new(),
        left_out: LeftOut::default(),
    };
    // Each vector's room is taken at once: grown a line at a time, it would be copied again
    // and again. No two lines have the same source and line number: unstable sorting is
    // stable here, and needs no room of its own. The same line read twice (overlapping
    // rotated copies) counts once.
    if key.kind == LockKind::Posix {
        debug_assert!(sorted.is_none(), "a POSIX lock's lines are all kept");
        let mut records: Vec<Record> = Vec::with_capacity(stored.len());
        records.extend(stored.into_records(key.range));
        records.sort_unstable_by_key(|r| order(r.at, r.origin));
        records.dedup_by(|a, b| {
            a.at == b.at
                && a.event == b.event
                && a.actor == b.actor
                && a.range == b.range
                && a.mode == b.mode
                && a.duration_ns == b.duration_ns
                && a.reason == b.reason
        });
        let mut pids: Vec<u32> = records.iter().map(|record| record.actor.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        let mut file_exits: Vec<Exit> = pids
            .iter()
            .flat_map(|&pid| exits.of(key.host, pid))
            .copied()
            .collect();
        file_exits.sort_unstable_by_key(|exit| order(exit.at, exit.origin));
        file_exits.dedup_by_key(|exit| (exit.at, exit.actor.pid));
        return Ok(posix::fold(lock, &records, &file_exits));
    }
    // The lines of another lock all have its range: they are sorted as kept (a record is twice
    // their size) and read one at a time.
    let mut kept = SORTED_LINES.take();
    stored.move_lines_into(&mut kept);
    kept.sort_unstable_by_key(|line| order(line.at(), line.origin()));
    if sorted.is_none() {
        kept.dedup_by(|a, b| a.repeats(b));
    }
    let (written, written_acquires) = sorted
        .as_ref()
        .map_or((0, 0), |sorted| (sorted.held.lines, sorted.held.acquires));
    // A lock of fewer lines than that never has that many holds: nothing to look for.
    let pruning = pruning.filter(|_| kept.len() + written >= PRUNE_FROM);
    let asked_from = pruning.map(|_| {
        let waited = kept.iter().filter_map(Waited::of);
        let written = sorted
            .iter()
            .flat_map(|sorted| &sorted.held.waited)
            .copied();
        AskedFrom::new(waited.chain(written), order)
    });
    if asked_from.is_none() {
        // Most holds begin with an acquire line; one more for a hold taken before the logs.
        let acquires = kept
            .iter()
            .filter(|line| line.event() == EventKind::Acquire)
            .count();
        lock.holds.reserve_exact(acquires + written_acquires + 1);
    }
    let mut folding = Folding {
        lock,
        released_before: 0,
        prune_at: PRUNE_FROM,
        pruning: pruning.zip(asked_from),
    };
    let folded = match sorted {
        None => {
            for line in kept.drain(..) {
                let key = order(line.at(), line.origin());
                folding.add(line, key);
            }
            Ok(())
        }
        Some(sorted) => {
            let mut merged = Merged::new(kept.drain(..), sorted.runs, prepare);
            while let Some(line) = merged.next_line(order) {
                let key = order(line.at(), line.origin());
                folding.add(line, key);
            }
            merged.finish()
        }
    };
    SORTED_LINES.set(kept);
    folded.map(|()| vec![folding.lock])
}

/// The order of the fold: time, then the rank of the source, then the line.
type FoldOrder = (Nanos, u32, u64);

/// A lock being folded a line at a time, with the holds no narrative tells left out as it goes.
struct Folding<'a> {
    lock: Lock,
    released_before: usize,
    /// How many holds the lock has when next to look for those to leave out.
    prune_at: usize,
    pruning: Option<(Pruning<'a>, AskedFrom)>,
}

impl Folding<'_> {
    fn add(&mut self, line: Stored, order: FoldOrder) {
        let lock = &mut self.lock;
        if let Some((pruning, asked_from)) = &mut self.pruning
            && lock.holds.len() >= self.prune_at
        {
            lock.leave_out_outranked(line.at(), asked_from.at(order), pruning.pids);
            self.released_before = 0;
            self.prune_at = (lock.holds.len() * 2).max(PRUNE_FROM);
        }
        lock.apply(&line.into_record(lock.key.range), &mut self.released_before);
    }
}

/// For each line, the earliest moment it or a later line can ask who held the lock (see
/// [`AskedAbout`]): a wait or a refusal from its own time on, a wait told only by an acquire's
/// `wait_ns` from when that wait began. Only the waits before acquires can ask about a moment
/// before a line's own: those are kept, in the fold's order, with the earliest each and the
/// ones after it began.
struct AskedFrom {
    /// The order of each acquire that waited, and the earliest moment it or a later one began
    /// to wait.
    waited: Vec<(FoldOrder, Nanos)>,
    /// The first of `waited` not before the line asked about last.
    next: usize,
}

impl AskedFrom {
    fn new(
        waited: impl Iterator<Item = Waited>,
        order: impl Fn(Nanos, Origin) -> FoldOrder,
    ) -> Self {
        let mut waited: Vec<(FoldOrder, Nanos)> = waited
            .map(|waited| (order(waited.at, waited.origin), waited.began))
            .collect();
        waited.sort_unstable_by_key(|&(order, _)| order);
        let mut earliest = Nanos::MAX;
        for (_, began) in waited.iter_mut().rev() {
            earliest = earliest.min(*began);
            *began = earliest;
        }
        Self { waited, next: 0 }
    }

    /// For the line of `order`, asked about in the fold's order.
    fn at(&mut self, order: FoldOrder) -> Nanos {
        while self
            .waited
            .get(self.next)
            .is_some_and(|&(waited, _)| waited < order)
        {
            self.next += 1;
        }
        let began = self
            .waited
            .get(self.next)
            .map_or(Nanos::MAX, |&(_, began)| began);
        order.0.min(began)
    }
}

/// A lock's lines in the fold's order, each read once: those kept in memory, in that order
/// already, merged with its sorted runs. A run's lines of one time may be of several sources,
/// in the order of the sources' numbers rather than their ranks: the lines of each time are
/// put in order together, and the same line read twice counts once.
struct Merged<'a, M, P> {
    memory: M,
    runs: Vec<RunLines<'a>>,
    prepare: P,
    /// The next line of the memory (first) and of each run; None once it is read.
    heads: Vec<Option<Stored>>,
    /// The lines of the time being handed out, last first.
    same_time: Vec<Stored>,
    failed: Option<io::Error>,
}

impl<'a, M: Iterator<Item = Stored>, P: Fn(&mut Stored)> Merged<'a, M, P> {
    fn new(mut memory: M, runs: Vec<RunLines<'a>>, prepare: P) -> Self {
        let mut merged = Self {
            heads: vec![memory.next()],
            memory,
            runs,
            prepare,
            same_time: Vec::new(),
            failed: None,
        };
        for run in 0..merged.runs.len() {
            let head = merged.read(run);
            merged.heads.push(head);
        }
        merged
    }

    /// The next line of run `run`, made ready; None at its end or after a failure.
    fn read(&mut self, run: usize) -> Option<Stored> {
        match self.runs[run].next_line() {
            Ok(Some(mut line)) => {
                (self.prepare)(&mut line);
                Some(line)
            }
            Ok(None) => None,
            Err(err) => {
                self.failed.get_or_insert(err);
                None
            }
        }
    }

    fn next_line(&mut self, order: impl Fn(Nanos, Origin) -> FoldOrder) -> Option<Stored> {
        if self.same_time.is_empty() {
            let at = self.heads.iter().flatten().map(Stored::at).min()?;
            for source in 0..self.heads.len() {
                while self.heads[source]
                    .as_ref()
                    .is_some_and(|line| line.at() == at)
                {
                    let next = match source {
                        0 => self.memory.next(),
                        run => self.read(run - 1),
                    };
                    let line = std::mem::replace(&mut self.heads[source], next);
                    self.same_time.extend(line);
                }
            }
            self.same_time
                .sort_unstable_by_key(|line| order(line.at(), line.origin()));
            self.same_time
                .dedup_by(|later, earlier| later.repeats(earlier));
            self.same_time.reverse();
        }
        self.same_time.pop()
    }

    /// Why a run could not be read to its end, if it could not.
    fn finish(self) -> io::Result<()> {
        self.failed.map_or(Ok(()), Err)
    }
}

impl Lock {
    /// Folds in the next line. `released_before`: every hold before it is released (see
    /// [`Lock::open_hold`]).
    fn apply(&mut self, record: &Record, released_before: &mut usize) {
        let actor = record.actor;
        match record.event {
            EventKind::Wait => {
                self.waits.push(Wait::new(record, Box::new([])));
            }
            EventKind::Acquire => {
                let wait_ns = self.end_acquired_wait(record);
                self.holds.push(Hold {
                    taker: Some(actor),
                    mode: record.mode,
                    acquired: Some(record.at),
                    acquire_logged: true,
                    wait_ns,
                    range: record.range,
                    ..Default::default()
                });
            }
            EventKind::Fail => {
                if !self.end_wait(actor, WaitOutcome::Failed(record.at, record.errno)) {
                    self.refusals.push(Refusal::new(record, Box::new([])));
                }
            }
            EventKind::Release => {
                let acquired = record
                    .duration_ns
                    .map(|held| record.at.saturating_sub(held));
                // Who took a lock first seen at its release is unknown: any process sharing
                // the open file description may release it.
                let hold = self.open_hold(released_before, Some(actor.pid), acquired, record, None);
                if record.reason == Some(ReleaseReason::Exit)
                    && hold.taker == Some(actor)
                    && hold.taker_exit.is_none()
                {
                    hold.taker_exit = Some(record.at);
                }
                hold.release = Some(Release {
                    at: record.at,
                    by: actor,
                    reason: record.reason,
                });
            }
            EventKind::Orphan => {
                let hold =
                    self.open_hold(released_before, Some(actor.pid), None, record, Some(actor));
                hold.orphaned = true;
                hold.taker = Some(actor);
                hold.taker_exit = record.taker_exit.or(hold.taker_exit);
                hold.holders = record.others.to_vec();
            }
            EventKind::OrphanEnd => {
                let by = record.others.first().copied();
                // Normally the release line just before it, from the same instant.
                let index = self.holds.iter().rposition(|hold| {
                    hold.release.is_some_and(|release| release.at == record.at)
                        && (hold.taker == Some(actor) || hold.taker.is_none())
                });
                let hold = match index {
                    Some(index) => &mut self.holds[index],
                    None => {
                        let acquired = record
                            .duration_ns
                            .map(|held| record.at.saturating_sub(held));
                        let hold =
                            self.open_hold(released_before, None, acquired, record, Some(actor));
                        hold.release = by.map(|by| Release {
                            at: record.at,
                            by,
                            reason: record.reason,
                        });
                        hold
                    }
                };
                hold.orphaned = true;
                hold.taker = Some(actor);
                hold.taker_exit = record.taker_exit.or(hold.taker_exit);
            }
            EventKind::Held => {
                // A restarted tracer picks up the hold its predecessor saw taken, if any.
                let taker = (actor.pid != 0).then_some(actor);
                let hold = self.open_hold(
                    released_before,
                    taker.map(|taker| taker.pid),
                    None,
                    record,
                    taker,
                );
                if !hold.acquire_logged && hold.found_held.is_none() {
                    hold.found_held = Some(record.at);
                }
                if record.orphan {
                    hold.orphaned = true;
                    hold.holders = record.others.to_vec();
                }
            }
            EventKind::Start
            | EventKind::Stop
            | EventKind::Exit
            | EventKind::Deadlock
            | EventKind::Inherit
            | EventKind::Summary
            | EventKind::Unknown => {}
        }
    }

    /// Ends the wait of an acquire line's process, or adds the wait its `wait_ns` tells of when
    /// its wait line is in a log that is not here. Returns how long it waited.
    pub(super) fn end_acquired_wait(&mut self, record: &Record) -> Option<u64> {
        let wait_ns = record.duration_ns.filter(|&ns| ns > 0);
        let outcome = WaitOutcome::Acquired(record.at);
        if !self.end_wait(record.actor, outcome)
            && let Some(wait_ns) = wait_ns
        {
            let mut wait = Wait::new(record, Box::new([]));
            wait.since = record.at.saturating_sub(wait_ns);
            wait.outcome = outcome;
            self.waits.push(wait);
        }
        wait_ns
    }

    /// Ends the open wait of this process; false if it had none.
    pub(super) fn end_wait(&mut self, waiter: Actor, outcome: WaitOutcome) -> bool {
        let open = self
            .waits
            .iter_mut()
            .rev()
            .find(|wait| wait.waiter.pid == waiter.pid && wait.outcome == WaitOutcome::Waiting);
        match open {
            Some(wait) => {
                wait.outcome = outcome;
                true
            }
            None => false,
        }
    }

    /// The unreleased hold a line is about: the one taken at `acquired` if known (a release's
    /// `held_ns` tells), else the latest taken by `taker`, else a new hold begun before the
    /// logs, taken by `new_taker`. Holds are released and never opened again: those before
    /// `released_before`, which it moves on, are not looked at (a busy lock has thousands).
    fn open_hold(
        &mut self,
        released_before: &mut usize,
        taker: Option<u32>,
        acquired: Option<Nanos>,
        record: &Record,
        new_taker: Option<Actor>,
    ) -> &mut Hold {
        while self
            .holds
            .get(*released_before)
            .is_some_and(|hold| hold.release.is_some())
        {
            *released_before += 1;
        }
        let open = self
            .holds
            .iter()
            .enumerate()
            .skip(*released_before)
            .filter(|(_, hold)| hold.release.is_none());
        let best = match acquired {
            Some(acquired) => open
                .min_by_key(|(_, hold)| {
                    let distance = hold.acquired.map_or(u64::MAX, |at| at.abs_diff(acquired));
                    (distance, hold.taker.map(|t| t.pid) != taker)
                })
                .map(|(index, _)| index),
            None => open
                .filter(|(_, hold)| taker.is_none() || hold.taker.map(|t| t.pid) == taker)
                .map(|(index, _)| index)
                .next_back(),
        };
        let index = match best {
            Some(index) => index,
            None => {
                self.holds.push(Hold {
                    taker: new_taker,
                    mode: record.mode,
                    acquired,
                    range: record.range,
                    ..Default::default()
                });
                self.holds.len() - 1
            }
        };
        let hold = &mut self.holds[index];
        if hold.acquired.is_none() {
            hold.acquired = acquired;
        }
        hold.mode = hold.mode.or(record.mode);
        hold
    }

    /// The time this lock's history starts, for ordering locks.
    pub fn first_time(&self) -> Nanos {
        let holds = self.holds.iter().filter_map(Hold::first_time);
        let waits = self.waits.iter().map(|wait| wait.since);
        let refusals = self.refusals.iter().map(|refusal| refusal.at);
        holds
            .chain(self.left_out.first)
            .chain(waits)
            .chain(refusals)
            .min()
            .unwrap_or(0)
    }

    /// For the narrative of a flock, OFD lock or lease (not `--json`'s list of every hold):
    /// leaves out the holds it cannot tell, counted for its totals, so that a lock's memory is
    /// what its story needs rather than its whole history. Kept: the SHOWN most notable, the
    /// orphaned, those never released, and any that held the lock while it was waited for or
    /// refused (a wait or a refusal names who held the lock then, and a wait chain from
    /// another lock may ask about any moment of a wait). `end`: when the logs end.
    pub fn leave_out_untold_holds(&mut self, end: Nanos) {
        if self.key.kind == LockKind::Posix || self.holds.len() <= render::SHOWN {
            return;
        }
        let mut told = vec![false; self.holds.len()];
        for index in render::notable(&self.holds, |hold| render::hold_score(hold, end)) {
            told[index] = true;
        }
        let asked = AskedAbout::new(self);
        let mut index = 0;
        let left_out = &mut self.left_out;
        self.holds.retain(|hold| {
            let keep =
                told[index] || hold.orphaned || hold.release.is_none() || asked.while_held(hold);
            index += 1;
            if !keep {
                left_out.count(hold, end);
            }
            keep
        });
        self.holds.shrink_to_fit();
    }

    /// Leaves out, while the lock is folded, the holds its narrative will not tell whatever the
    /// lines after `at` say, counted as [`Lock::leave_out_untold_holds`] counts them: released
    /// before `at` (a later line can end only an open hold, or orphan one released at its own
    /// time) and by `asked_from` (no later wait or refusal asks who held the lock then), not
    /// orphaned, held while no wait or refusal so far was under way, taken, held and released
    /// by none of `pids`, and outranked by `SHOWN` released holds already. Those rank above it
    /// for good (a released hold's length is fixed; an orphaned one ranks first): it cannot be
    /// among the `SHOWN` most notable at the end.
    fn leave_out_outranked(&mut self, at: Nanos, asked_from: Nanos, pids: &[u32]) {
        let mut ranked: Vec<usize> = (0..self.holds.len())
            .filter(|&index| {
                let hold = &self.holds[index];
                hold.release.is_some() && !hold.orphaned
            })
            .collect();
        // As `render::notable` ranks them: longer first, equal ones in the order taken.
        ranked.sort_by_key(|&index| {
            std::cmp::Reverse(render::held_ns(&self.holds[index], at).unwrap_or(u64::MAX))
        });
        let mut outranked = vec![false; self.holds.len()];
        for &index in ranked.iter().skip(render::SHOWN) {
            outranked[index] = true;
        }
        let asked = AskedAbout::new(self);
        let mut index = 0;
        let left_out = &mut self.left_out;
        self.holds.retain(|hold| {
            let leave = outranked[index]
                && hold
                    .release
                    .is_some_and(|release| release.at < at && release.at <= asked_from)
                && !asked.while_held(hold)
                && !pids.iter().any(|&pid| hold.involves(pid));
            index += 1;
            if leave {
                left_out.count(hold, at);
            }
            !leave
        });
    }

    /// Keeps what overlaps [since, until]: holds and waits that were under way in it,
    /// refusals that happened in it. None when nothing is left.
    pub fn narrow(mut self, since: Option<Nanos>, until: Option<Nanos>) -> Option<Self> {
        let overlaps = |from: Option<Nanos>, to: Option<Nanos>| {
            from.is_none_or(|from| until.is_none_or(|until| from <= until))
                && to.is_none_or(|to| since.is_none_or(|since| to >= since))
        };
        self.holds
            .retain(|hold| overlaps(hold.acquired, hold.release.map(|release| release.at)));
        self.waits
            .retain(|wait| overlaps(Some(wait.since), wait.until()));
        self.refusals
            .retain(|refusal| overlaps(Some(refusal.at), Some(refusal.at)));
        let empty = self.holds.is_empty() && self.waits.is_empty() && self.refusals.is_empty();
        (!empty).then_some(self)
    }

    /// Whether a process took, held, released, waited for or was refused this lock.
    pub fn involves(&self, pid: u32) -> bool {
        self.holds.iter().any(|hold| hold.involves(pid))
            || self.waits.iter().any(|wait| wait.waiter.pid == pid)
            || self.refusals.iter().any(|refusal| refusal.actor.pid == pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{line::Names, spill::Spill};

    /// Adds a write lock's line of the whole file.
    fn line(records: &mut Vec<Record>, at: Nanos, event: EventKind, actor: Actor) -> &mut Record {
        records.push(Record {
            at,
            origin: Origin { source: 0, line: 0 },
            event,
            actor,
            mode: Some(Mode::Write),
            range: ByteRange::WHOLE_FILE,
            reason: None,
            duration_ns: None,
            taker_exit: None,
            errno: None,
            others: Box::new([]),
            orphan: false,
        });
        records.last_mut().expect("just added")
    }

    /// A flock's long history, in time order: holds of lengths that often tie, waits ended by
    /// an acquire, acquires whose `wait_ns` reaches back over earlier holds (their wait line in
    /// no log), refusals, overlapping read holds, orphans ended at the instant of their
    /// release (if `orphans`), a few holds by pid 4242, and one hold never released (if
    /// `orphans`: else the most notable holds are the longest released).
    fn long_history(names: &mut Names, seed: u64, orphans: bool) -> Vec<Record> {
        let comm = names.intern("job");
        let child = names.intern("sleep");
        let eagain = names.intern("EAGAIN");
        let actor = |pid: u32, comm: Name| Actor {
            pid,
            comm,
            start_time: None,
            ns_pid: None,
        };
        let mut records = Vec::new();
        let mut random = 0x9e37_79b9_7f4a_7c15_u64 ^ seed;
        let mut next = move || {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            random
        };
        let mut at: Nanos = 1_000_000_000;
        for round in 0..2_000u32 {
            let pid = if round % 97 == 0 { 4242 } else { 1000 + round };
            let held = 1_000 * (1 + next() % 10);
            match next() % 10 {
                5 => {
                    line(&mut records, at, EventKind::Wait, actor(pid, comm));
                    let acquired =
                        line(&mut records, at + 500, EventKind::Acquire, actor(pid, comm));
                    acquired.duration_ns = Some(500);
                    let released = line(
                        &mut records,
                        at + 500 + held,
                        EventKind::Release,
                        actor(pid, comm),
                    );
                    released.reason = Some(ReleaseReason::Unlock);
                    released.duration_ns = Some(held);
                }
                6 => {
                    let acquired = line(&mut records, at, EventKind::Acquire, actor(pid, comm));
                    acquired.duration_ns = Some(if next() % 8 == 0 { 600_000 } else { 40_000 });
                    let released = line(
                        &mut records,
                        at + held,
                        EventKind::Release,
                        actor(pid, comm),
                    );
                    released.reason = Some(ReleaseReason::Close);
                }
                7 => {
                    let refused = line(&mut records, at, EventKind::Fail, actor(pid, comm));
                    refused.errno = Some(eagain);
                }
                8 => {
                    line(&mut records, at, EventKind::Acquire, actor(pid, comm)).mode =
                        Some(Mode::Read);
                    line(
                        &mut records,
                        at + 1,
                        EventKind::Acquire,
                        actor(pid + 1, comm),
                    )
                    .mode = Some(Mode::Read);
                    let first = line(
                        &mut records,
                        at + held,
                        EventKind::Release,
                        actor(pid, comm),
                    );
                    first.reason = Some(ReleaseReason::Unlock);
                    let second = line(
                        &mut records,
                        at + 2 * held,
                        EventKind::Release,
                        actor(pid + 1, comm),
                    );
                    second.reason = Some(ReleaseReason::Unlock);
                }
                4 if orphans => {
                    // Taken in a log that is not here: first seen as its holder exits.
                    let released =
                        line(&mut records, at, EventKind::Release, actor(pid + 1, child));
                    released.reason = Some(ReleaseReason::Exit);
                    released.duration_ns = Some(held);
                    let end = line(&mut records, at, EventKind::OrphanEnd, actor(pid, comm));
                    end.taker_exit = Some(at - 1);
                    end.duration_ns = Some(held);
                    end.others = Box::new([actor(pid + 1, child)]);
                }
                9 if orphans => {
                    line(&mut records, at, EventKind::Acquire, actor(pid, comm));
                    let orphan = line(&mut records, at + 10, EventKind::Orphan, actor(pid, comm));
                    orphan.taker_exit = Some(at + 10);
                    orphan.others = Box::new([actor(pid + 1, child)]);
                    let released = line(
                        &mut records,
                        at + 10 + held,
                        EventKind::Release,
                        actor(pid + 1, child),
                    );
                    released.reason = Some(ReleaseReason::Exit);
                    let end = line(
                        &mut records,
                        at + 10 + held,
                        EventKind::OrphanEnd,
                        actor(pid, comm),
                    );
                    end.taker_exit = Some(at + 10);
                    end.others = Box::new([actor(pid + 1, child)]);
                }
                _ => {
                    line(&mut records, at, EventKind::Acquire, actor(pid, comm));
                    let released = line(
                        &mut records,
                        at + held,
                        EventKind::Release,
                        actor(pid, comm),
                    );
                    released.reason = Some(ReleaseReason::Unlock);
                }
            }
            at += 30_000;
        }
        if orphans {
            line(&mut records, at, EventKind::Acquire, actor(7, comm));
        }
        for (index, record) in records.iter_mut().enumerate() {
            record.origin.line = index as u64 + 1;
        }
        records
    }

    fn fold(records: &[Record], key: LockKey, pruning: Option<Pruning>) -> Lock {
        let mut lines = LockLines::default();
        for record in records {
            let (stored, _) = Stored::new(record.clone());
            lines.records.push(stored, None);
        }
        let built = build(key, lines, None, |_| {}, &[0], &Exits::default(), pruning);
        let mut built = built.expect("lines in memory only");
        assert_eq!(built.len(), 1);
        built.pop().expect("one lock")
    }

    /// The key of [`long_history`]'s lock.
    fn flock_key(names: &mut Names) -> LockKey {
        LockKey {
            host: names.intern(""),
            dev: names.intern("254:0"),
            ino: 7,
            generation: 0,
            kind: LockKind::Flock,
            range: ByteRange::WHOLE_FILE,
        }
    }

    #[test]
    fn holds_left_out_as_a_lock_is_folded_are_those_left_out_after() {
        for seed in 0..40 {
            let mut names = Names::default();
            let records = long_history(&mut names, seed, seed % 2 == 0);
            let key = flock_key(&mut names);
            let end = records.last().expect("lines").at + 1;
            for pids in [&[][..], &[4242]] {
                let mut whole = fold(&records, key, None);
                let mut pruned = fold(&records, key, Some(Pruning { pids }));
                assert!(
                    pruned.holds.len() * 4 < whole.holds.len() * 3,
                    "{} of {} holds kept while folding",
                    pruned.holds.len(),
                    whole.holds.len()
                );
                for pid in pids {
                    assert_eq!(
                        pruned
                            .holds
                            .iter()
                            .filter(|hold| hold.involves(*pid))
                            .count(),
                        whole
                            .holds
                            .iter()
                            .filter(|hold| hold.involves(*pid))
                            .count()
                    );
                }
                whole.leave_out_untold_holds(end);
                pruned.leave_out_untold_holds(end);
                assert_eq!(
                    format!("{pruned:?}"),
                    format!("{whole:?}"),
                    "seed {seed}, pids {pids:?}"
                );
                assert!(whole.left_out.holds > 0);
            }
        }
    }

    /// A long history in three sources (the third repeating some lines of the others, as
    /// overlapping rotated copies do), each numbered on its own and ranked against the order
    /// of their numbers, with start times shared by `prepare`.
    fn in_three_sources(records: &[Record]) -> Vec<Record> {
        let mut lines = [0u64; 3];
        let mut numbered = |mut record: Record, source: u32| {
            lines[source as usize] += 1;
            record.origin = Origin {
                source,
                line: lines[source as usize],
            };
            record
        };
        let mut sources = Vec::new();
        for (index, record) in records.iter().enumerate() {
            let source = u32::from(index % 5 == 0);
            sources.push(numbered(record.clone(), source));
            if index % 13 == 0 {
                sources.push(numbered(record.clone(), 2));
            }
        }
        sources
    }

    #[test]
    fn a_long_history_written_out_in_sorted_runs_folds_as_when_kept_in_memory() {
        let rank = [1, 0, 2];
        let share = |line: &mut Stored| {
            line.update_actors(|actor| {
                if actor.pid == 4242 {
                    actor.start_time = Some(77);
                }
            })
        };
        for seed in 0..12 {
            let mut names = Names::default();
            let records = in_three_sources(&long_history(&mut names, seed, seed % 2 == 0));
            let key = flock_key(&mut names);
            let end = records.iter().map(|record| record.at).max().expect("lines") + 1;
            for pids in [None, Some(&[][..]), Some(&[4242][..])] {
                let pruning = pids.map(|pids| Pruning { pids });
                let fold = |lines: LockLines, sorted| {
                    let built = build(key, lines, sorted, share, &rank, &Exits::default(), pruning);
                    let mut lock = built.expect("read back").pop().expect("one lock");
                    lock.leave_out_untold_holds(end);
                    lock
                };
                let mut kept = LockLines::default();
                for record in &records {
                    let (mut stored, _) = Stored::new(record.clone());
                    share(&mut stored);
                    kept.records.push(stored, None);
                }
                let whole = fold(kept, None);

                // Runs of uneven lengths, each written from lines in the order read; the last
                // lines stay in memory.
                let mut spill = Spill::create().expect("a temporary file");
                let mut lines = LockLines::default();
                let mut runs = 0;
                for (index, record) in records.iter().enumerate() {
                    let (stored, _) = Stored::new(record.clone());
                    lines.records.push(stored, None);
                    if lines.records.len() == 97 + 31 * (runs % 5) && index + 50 < records.len() {
                        spill
                            .write_sorted(0, &mut lines.records, |_| false)
                            .expect("written");
                        runs += 1;
                    }
                }
                assert!(runs > 10 && !lines.records.is_empty());
                for line in lines.records.iter_mut() {
                    share(line);
                }
                let mut sorted = spill.take_sorted();
                let sorted = spill.sorted_lines(sorted.remove(&0).expect("runs written"));
                assert_eq!(sorted.runs.len(), runs);
                let merged = fold(lines, Some(sorted));
                assert_eq!(
                    format!("{merged:?}"),
                    format!("{whole:?}"),
                    "seed {seed}, pids {pids:?}"
                );
            }
        }
    }
}
