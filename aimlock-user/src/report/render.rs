//! Telling each lock's history: a short narrative, or the same as JSON.

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet, hash_map::Entry},
    fmt::{self, Write as _},
    io::Write,
    ops::Range,
};

use rayon::prelude::*;
use rustc_hash::FxHashSet;
use serde::Serialize;

use crate::events::{LockKind, Mode, ReleaseReason};

use super::{
    line::{Actor, ByteRange, Name, Names, Nanos, SeenPath},
    timeline::{Blocker, Hold, Lock, Refusal, Release, Wait, WaitOutcome},
};

/// Holds or waits listed per lock in the narrative; the notable ones are kept first.
pub const SHOWN: usize = 20;
/// Refused processes named one by one; more are summed up in one line.
const REFUSED_SHOWN: usize = 5;
/// Longest waits named in the totals.
const LONGEST_WAITS: usize = 3;
/// From this many matching locks on, the narrative opens with a summary.
pub const SUMMARY_FROM: usize = 4;
/// Items named on each line of the summary.
const SUMMARY_ITEMS: usize = 3;
/// Files named in the fleet summary.
const FLEET_FILES: usize = 20;
/// Holders followed from lock to lock when a wait's chain is told (A waits for B, which
/// waits for C...).
const CHAIN_DEPTH: usize = 4;
/// How the fleet summary names the host of lines that name none.
const UNNAMED_HOST: &str = "(unnamed host)";

pub struct Renderer<'a> {
    pub names: &'a Names,
    /// When the logs end: the end of what is still held or awaited.
    pub end: Nanos,
    /// `--at`: the instant whose POSIX locks are listed byte by byte.
    pub at: Option<Nanos>,
    /// The locks told are on several hosts: each is named with its host.
    pub several_hosts: bool,
    /// Pids that named more than one process in the logs (a pid reused): each mention of
    /// them says when its process started.
    pub reused_pids: FxHashSet<u32>,
    /// Every lock told, and the waits of each process among them, for wait chains.
    pub locks: &'a [Lock],
    pub waits_by_process: &'a WaitsByProcess,
    /// Locks each job goes through at a time, for the first screens.
    pub locks_per_job: usize,
}

/// The waits of each process (by host and pid): (index of the lock, index of the wait).
pub type WaitsByProcess = HashMap<(Name, u32), Vec<(usize, usize)>>;

/// Indexes the waits of `locks` by process.
/// Gathered by the jobs, a run of locks each, and put together in the locks' order.
pub fn waits_by_process(locks: &[Lock], locks_per_job: usize) -> WaitsByProcess {
    locks
        .par_chunks(locks_per_job)
        .enumerate()
        .map(|(run, locks)| {
            let mut index = WaitsByProcess::new();
            for (at, lock) in locks.iter().enumerate() {
                for (wait, waiting) in lock.waits.iter().enumerate() {
                    index
                        .entry((lock.key.host, waiting.waiter.pid))
                        .or_default()
                        .push((run * locks_per_job + at, wait));
                }
            }
            index
        })
        .reduce(WaitsByProcess::new, |mut before, after| {
            for (process, waits) in after {
                before.entry(process).or_default().extend(waits);
            }
            before
        })
}

/// Locks each job goes through at a time, for what is gathered across all of them.
pub const LOCKS_PER_JOB: usize = 4096;

impl Renderer<'_> {
    /// `pid 812 (python3)`, with its start time when the pid was reused and its pid in its
    /// namespace when it has another.
    fn actor(&self, actor: Actor) -> impl fmt::Display {
        fmt::from_fn(move |f| self.write_actor(f, actor))
    }

    /// [`Renderer::actor`], written in pieces rather than by a format: most lines name a
    /// process.
    fn write_actor(&self, out: &mut impl fmt::Write, actor: Actor) -> fmt::Result {
        out.write_str("pid ")?;
        out.write_str(itoa::Buffer::new().format(actor.pid))?;
        out.write_str(" (")?;
        out.write_str(self.names.get(actor.comm))?;
        if let Some(start_time) = actor
            .start_time
            .filter(|_| self.reused_pids.contains(&actor.pid))
        {
            out.write_str(", started ")?;
            write_since_boot(out, start_time)?;
        }
        if let Some(ns_pid) = actor.ns_pid {
            write!(out, ", pid {ns_pid} in its namespace")?;
        }
        out.write_str(")")
    }

    fn held_ns(&self, hold: &Hold) -> Option<u64> {
        held_ns(hold, self.end)
    }

    fn orphan_ns(&self, hold: &Hold) -> Option<u64> {
        let until = hold.release.map_or(self.end, |release| release.at);
        hold.taker_exit
            .filter(|_| hold.orphaned)
            .map(|exit| until.saturating_sub(exit))
    }

    fn wait_ns(&self, wait: &Wait) -> u64 {
        wait.until().unwrap_or(self.end).saturating_sub(wait.since)
    }

    pub fn totals(&self, lock: &Lock) -> Totals<'_> {
        let mut waits: Vec<&Wait> = lock.waits.iter().collect();
        waits.sort_by_key(|wait| std::cmp::Reverse(self.wait_ns(wait)));
        Totals {
            holds: lock.holds.len() + lock.left_out.holds,
            held_ns: lock
                .holds
                .iter()
                .filter_map(|hold| self.held_ns(hold))
                .sum::<u64>()
                + lock.left_out.held_ns,
            still_held: lock
                .holds
                .iter()
                .filter(|hold| hold.release.is_none())
                .count(),
            orphans: lock.holds.iter().filter(|hold| hold.orphaned).count(),
            longest_orphan_ns: lock
                .holds
                .iter()
                .filter_map(|hold| self.orphan_ns(hold))
                .max(),
            waiters: lock
                .waits
                .iter()
                .map(|wait| wait.waiter.pid)
                .collect::<HashSet<_>>()
                .len(),
            still_waiting: lock
                .waits
                .iter()
                .filter(|wait| wait.outcome == WaitOutcome::Waiting)
                .count(),
            longest_waits: waits
                .iter()
                .take(LONGEST_WAITS)
                .map(|wait| WaitTotal {
                    process: self.proc(wait.waiter),
                    wait_ns: self.wait_ns(wait),
                })
                .collect(),
            refusals: lock.refusals.len(),
        }
    }

    fn proc(&self, actor: Actor) -> Proc<'_> {
        Proc {
            pid: actor.pid,
            start_time: actor.start_time,
            comm: self.names.get(actor.comm),
            ns_pid: actor.ns_pid,
        }
    }

    /// A path the lock's file had, with the host that named it when hosts named it apart.
    fn seen_path(&self, seen: &SeenPath) -> impl fmt::Display {
        fmt::from_fn(move |f| match seen.host {
            Some(host) => write!(
                f,
                "{} (host: {})",
                self.names.get(seen.path),
                self.names.get(host)
            ),
            None => f.write_str(self.names.get(seen.path)),
        })
    }

    fn title(&self, out: &mut String, lock: &Lock) -> fmt::Result {
        let key = &lock.key;
        let kind = match key.kind {
            LockKind::Flock => "flock",
            LockKind::Posix => "POSIX lock",
            LockKind::Ofd => "OFD lock",
            LockKind::Lease => "lease",
        };
        match lock.paths.split_first() {
            Some((first, [])) => write!(out, "{}", self.seen_path(first))?,
            Some((first, others)) => write!(
                out,
                "{} (also {})",
                self.seen_path(first),
                joined(others, ", ", |seen| self.seen_path(seen))
            )?,
            None => out.push_str("(path not logged)"),
        }
        write!(out, ": {kind}, ")?;
        match key.range {
            ByteRange::WHOLE_FILE => out.push_str("whole file"),
            range => write!(out, "{}", bytes(range))?,
        }
        out.push_str(" (");
        if self.several_hosts {
            write!(
                out,
                "host {}, ",
                self.host_name_of(self.names.get(key.host))
            )?;
        }
        write!(out, "dev {}, inode {}", self.names.get(key.dev), key.ino)?;
        if key.generation != 0 {
            write!(out, ", generation {}", key.generation)?;
        }
        out.push(')');
        Ok(())
    }

    /// The narratives of `locks`, one after the other: each lock's events in time order, then
    /// its totals. Written into one string, its lines made in one place: most narratives are a
    /// few lines, and a string each would cost more to allocate than to write.
    pub fn texts(&self, locks: &[Lock]) -> Result<String, fmt::Error> {
        let mut text = String::with_capacity(locks.len() * NARRATIVE_BYTES);
        let mut lines = Lines {
            text: String::with_capacity(NARRATIVE_BYTES),
            ends: Vec::with_capacity(2 * SHOWN),
        };
        for lock in locks {
            lines.text.clear();
            lines.ends.clear();
            self.narrative(&mut text, &mut lines, lock)?;
        }
        Ok(text)
    }

    fn narrative(&self, out: &mut String, lines: &mut Lines, lock: &Lock) -> fmt::Result {
        self.title(out, lock)?;
        out.push('\n');
        let holds = self.notable(&lock.holds, |hold| hold_score(hold, self.end));
        let posix = lock.key.kind == LockKind::Posix;
        for hold in &holds {
            self.hold_lines(hold, posix, lines)?;
        }
        let waits = self.notable(&lock.waits, |wait| {
            (wait.outcome == WaitOutcome::Waiting, self.wait_ns(wait))
        });
        for wait in &waits {
            self.wait_lines(lock, wait, posix, lines)?;
        }
        self.refusal_lines(lock, posix, lines)?;
        if let (true, Some(at)) = (posix, self.at) {
            self.held_at_lines(lock, at, lines)?;
        }
        lines.ends.sort_by_key(|(at, _)| *at);
        for (at, range) in &lines.ends {
            out.push_str("  ");
            out.push_str(time_text(*at).as_str());
            out.push_str("  ");
            out.push_str(&lines.text.as_str()[range.clone()]);
            out.push('\n');
        }
        for (kind, shown, all) in [
            ("holds", holds.len(), lock.holds.len() + lock.left_out.holds),
            ("waits", waits.len(), lock.waits.len()),
        ] {
            if shown < all {
                writeln!(
                    out,
                    "  ({} shorter {kind} not shown; --json lists them all)",
                    all - shown
                )?;
            }
        }
        out.push_str("  totals: ");
        self.totals_text(out, &self.totals(lock))?;
        out.push_str("\n\n");
        Ok(())
    }

    /// Up to SHOWN items, notable and longest first, back in time order.
    fn notable<'b, T>(&self, items: &'b [T], score: impl Fn(&T) -> (bool, u64)) -> Vec<&'b T> {
        notable(items, score)
            .into_iter()
            .map(|index| &items[index])
            .collect()
    }

    fn hold_lines(&self, hold: &Hold, posix: bool, lines: &mut Lines) -> fmt::Result {
        // `write lock on bytes 0-9` in a POSIX section, `write lock` otherwise.
        let lock = hold.mode.and_then(lock_mode).map(|mode| {
            fmt::from_fn(move |f| match posix {
                true => write!(f, "{mode} on {}", bytes(hold.range)),
                false => f.write_str(mode),
            })
        });
        let mode = fmt::from_fn(|f| match &lock {
            Some(lock) => write!(f, "a {lock}"),
            None => f.write_str("the lock"),
        });
        let taker = hold.taker.map(|taker| self.actor(taker));
        if let Some(acquired) = hold.acquired {
            let who = or(taker.as_ref(), "a process these logs do not name");
            write!(lines.text, "{who} took {mode}")?;
            if let Some(wait_ns) = hold.wait_ns {
                lines.text.push_str(" after waiting ");
                lines.text.push_str(duration_text(wait_ns).as_str());
            }
            if !hold.acquire_logged {
                lines.text.push_str(" (before these logs start)");
            }
            lines.end(acquired);
        } else if let Some(found) = hold.found_held {
            let who = or(taker.as_ref(), "a process the kernel does not name");
            write!(
                lines.text,
                "{who} held {mode} when the tracer looked (taken before these logs)"
            )?;
            lines.end(found);
        }
        let orphan_ns = self.orphan_ns(hold);
        if let (true, Some(exit)) = (hold.orphaned, hold.taker_exit) {
            match hold.taker {
                Some(taker) => write!(lines.text, "pid {} exited", taker.pid)?,
                None => lines.text.push_str("its taker exited"),
            }
            if hold.acquired.is_none() {
                write!(lines.text, " (it took {mode} before these logs start)")?;
            }
            if hold.holders.is_empty() {
                lines.text.push_str("; the lock outlived it");
            } else {
                write!(
                    lines.text,
                    "; the lock survived in {}",
                    self.actors(&hold.holders)
                )?;
            }
            if let Some(ns) = orphan_ns {
                lines.text.push_str(" for ");
                lines.text.push_str(duration_text(ns).as_str());
            }
            lines.end(exit);
        } else if let (true, None, Some(found)) = (hold.orphaned, hold.taker_exit, hold.found_held)
        {
            lines
                .text
                .push_str("its taker had exited before these logs; the lock survived in ");
            if hold.holders.is_empty() {
                lines.text.push_str("no process the tracer could see");
            } else {
                write!(lines.text, "{}", self.actors(&hold.holders))?;
            }
            lines.end(found);
        }
        // In a POSIX section several holds end alike: say which.
        let posix_lock = lock.as_ref().filter(|_| posix);
        if let Some(lock) = posix_lock {
            for part in &hold.partial_releases {
                let what = format_args!("{} of its {lock}", bytes(part.range));
                self.posix_release(&mut lines.text, part.release, what)?;
                lines.end(part.release.at);
            }
        }
        let end = match hold.release {
            Some(release) => {
                match posix_lock {
                    Some(lock) if hold.partial_releases.is_empty() => {
                        self.posix_release(&mut lines.text, release, format_args!("its {lock}"))?;
                    }
                    Some(lock) => self.posix_release(
                        &mut lines.text,
                        release,
                        format_args!("the rest of its {lock}"),
                    )?,
                    None => {
                        lines.text.push_str("released when ");
                        self.write_how_released(&mut lines.text, release)?;
                    }
                }
                release.at
            }
            None => {
                match (posix_lock, hold.taker) {
                    (Some(lock), Some(taker)) => write!(
                        lines.text,
                        "pid {}'s {lock} still held when the logs end",
                        taker.pid
                    )?,
                    _ => lines.text.push_str("still held when the logs end"),
                }
                self.end
            }
        };
        if let Some(ns) = orphan_ns {
            write!(lines.text, ", {} after its taker exited", duration(ns))?;
        }
        if let Some(ns) = self.held_ns(hold) {
            lines.text.push_str("; held ");
            lines.text.push_str(duration_text(ns).as_str());
        }
        lines.end(end);
        Ok(())
    }

    fn write_how_released(&self, out: &mut String, release: Release) -> fmt::Result {
        let what = match release.reason {
            Some(ReleaseReason::Unlock) => " unlocked it",
            Some(ReleaseReason::Close) => " closed the file",
            Some(ReleaseReason::Exit) => " exited",
            Some(ReleaseReason::Convert) => " converted it",
            Some(ReleaseReason::Lost) => {
                out.push_str("the tracer lost the record (the kernel no longer held it)");
                return Ok(());
            }
            None => {
                out.push_str("by ");
                return self.write_actor(out, release.by);
            }
        };
        self.write_actor(out, release.by)?;
        out.push_str(what);
        Ok(())
    }

    /// A POSIX release, by the owner: `what` is `its write lock on bytes 0-9`, or a part of it.
    fn posix_release(
        &self,
        out: &mut String,
        release: Release,
        what: impl fmt::Display,
    ) -> fmt::Result {
        let by = self.actor(release.by);
        match release.reason {
            Some(ReleaseReason::Unlock) => write!(out, "{by} unlocked {what}"),
            Some(ReleaseReason::Close) => write!(out, "{by} closed the file, releasing {what}"),
            Some(ReleaseReason::Exit) => write!(out, "{by} exited, releasing {what}"),
            Some(ReleaseReason::Convert) => write!(out, "{by} converted {what}"),
            Some(ReleaseReason::Lost) => write!(
                out,
                "the tracer lost the release of {} (the kernel no longer held it)",
                what.to_string()
                    .replacen("its", &format!("pid {}'s", release.by.pid), 1)
            ),
            None => write!(out, "{by} released {what}"),
        }
    }

    /// Who held what, in the way of a POSIX request.
    fn blockers<'b>(&'b self, blockers: &'b [Blocker]) -> impl fmt::Display {
        fmt::from_fn(move |f| {
            if blockers.is_empty() {
                return f.write_str("no lock these logs show was in the way");
            }
            let blocker = |blocker: &'b Blocker| {
                fmt::from_fn(move |f| {
                    write!(
                        f,
                        "{} held a {} on {}",
                        self.actor(blocker.holder),
                        lock_mode(blocker.mode).unwrap_or("lock"),
                        bytes(blocker.range)
                    )
                })
            };
            write!(f, "{}", joined(blockers, ", ", blocker))
        })
    }

    /// `pid 812 (python3), pid 813 (sh)`.
    fn actors<'b>(&'b self, actors: &'b [Actor]) -> impl fmt::Display {
        joined(actors, ", ", |&actor| self.actor(actor))
    }

    fn wait_lines(&self, lock: &Lock, wait: &Wait, posix: bool, lines: &mut Lines) -> fmt::Result {
        let waiter = self.actor(wait.waiter);
        match wait.mode.and_then(lock_mode).filter(|_| posix) {
            Some(mode) => write!(
                lines.text,
                "{waiter} queued for a {mode} on {}: {}",
                bytes(wait.range),
                self.blockers(&wait.blockers)
            )?,
            None => {
                write!(lines.text, "{waiter} queued for the lock")?;
                let mut seen = vec![wait.waiter.pid];
                self.held_by(&mut lines.text, lock, wait.since, 0, &mut seen)?;
            }
        }
        lines.end(wait.since);
        match wait.outcome {
            // The acquire line says how long it waited.
            WaitOutcome::Acquired(_) => {}
            WaitOutcome::Failed(at, errno) => {
                let errno = errno.map_or("", |errno| self.names.get(errno));
                let waited = duration(at.saturating_sub(wait.since));
                write!(
                    lines.text,
                    "{waiter} gave up after waiting {waited} ({errno})"
                )?;
                lines.end(at);
            }
            WaitOutcome::Waiting => {
                let waited = duration(self.end.saturating_sub(wait.since));
                write!(
                    lines.text,
                    "{waiter} still waiting when the logs end, for {waited}"
                )?;
                lines.end(self.end);
            }
        }
        Ok(())
    }

    /// One line per refused process (for POSIX locks: per process, request and the locks in
    /// its way): polling loops make thousands. Past REFUSED_SHOWN of them, one line.
    fn refusal_lines(&self, lock: &Lock, posix: bool, lines: &mut Lines) -> fmt::Result {
        struct Group<'r> {
            first: &'r Refusal,
            last: Nanos,
            count: u64,
            errnos: Vec<&'r str>,
        }
        let mut groups: Vec<Group> = Vec::new();
        /// Refusals told together: the process, what it asked for, what was in the way.
        type Same<'r> = (u32, Option<Mode>, ByteRange, &'r [Blocker]);
        let mut index: HashMap<Same, usize> = HashMap::new();
        for refusal in &lock.refusals {
            let errno = refusal.errno.map_or("?", |errno| self.names.get(errno));
            let key = if posix {
                (
                    refusal.actor.pid,
                    refusal.mode,
                    refusal.range,
                    &*refusal.blockers,
                )
            } else {
                (refusal.actor.pid, None, lock.key.range, &[][..])
            };
            let group = *index.entry(key).or_insert_with(|| {
                groups.push(Group {
                    first: refusal,
                    last: refusal.at,
                    count: 0,
                    errnos: Vec::new(),
                });
                groups.len() - 1
            });
            let group = &mut groups[group];
            group.last = refusal.at;
            group.count += 1;
            if !group.errnos.contains(&errno) {
                group.errnos.push(errno);
            }
        }
        if groups.len() > REFUSED_SHOWN {
            let (first, last) = (
                lock.refusals[0].at,
                lock.refusals[lock.refusals.len() - 1].at,
            );
            let processes: HashSet<u32> =
                groups.iter().map(|group| group.first.actor.pid).collect();
            let mut errnos: Vec<&str> = groups
                .iter()
                .flat_map(|group| group.errnos.iter().copied())
                .collect();
            errnos.sort_unstable();
            errnos.dedup();
            write!(
                lines.text,
                "{} processes were refused the lock {} times ({}), the last at {}",
                processes.len(),
                lock.refusals.len(),
                joined(&errnos, ", ", |errno| errno),
                time(last)
            )?;
            if posix {
                let mut holders: Vec<Actor> = lock
                    .refusals
                    .iter()
                    .flat_map(|refusal| refusal.blockers.iter().map(|blocker| blocker.holder))
                    .collect();
                holders.sort_unstable_by_key(|holder| holder.pid);
                holders.dedup();
                if !holders.is_empty() {
                    write!(
                        lines.text,
                        "; the locks in the way were held by {}",
                        self.actors(&holders)
                    )?;
                }
            }
            lines.end(first);
            return Ok(());
        }
        for group in groups {
            let refusal = group.first;
            let actor = self.actor(refusal.actor);
            let what = fmt::from_fn(
                |f| match refusal.mode.and_then(lock_mode).filter(|_| posix) {
                    Some(mode) => write!(f, "a {mode} on {}", bytes(refusal.range)),
                    None => f.write_str("the lock"),
                },
            );
            let errnos = joined(&group.errnos, ", ", |errno| errno);
            if group.count == 1 {
                write!(lines.text, "{actor} was refused {what} ({errnos})")?;
            } else {
                write!(
                    lines.text,
                    "{actor} was refused {what} {} times ({errnos}), the last at {}",
                    group.count,
                    time(group.last)
                )?;
            }
            if posix {
                write!(lines.text, ": {}", self.blockers(&refusal.blockers))?;
            } else {
                let mut seen = vec![refusal.actor.pid];
                self.held_by(&mut lines.text, lock, refusal.at, 0, &mut seen)?;
            }
            lines.end(refusal.at);
        }
        Ok(())
    }

    /// Who held a (whole-file) lock at `at`, if anyone: ", held by pid 812 (python3), an
    /// orphan of pid 640 (update.sh)", and, when a holder was itself waiting for another lock
    /// then, for which and held by whom, `depth` locks on at most. `seen`: the processes
    /// already named, where a chain that comes back stops.
    fn held_by(
        &self,
        out: &mut String,
        lock: &Lock,
        at: Nanos,
        depth: usize,
        seen: &mut Vec<u32>,
    ) -> fmt::Result {
        let mut first = true;
        for hold in lock.holds.iter().filter(|hold| held_then(hold, at)) {
            let orphaned = hold.orphaned
                && !hold.holders.is_empty()
                && hold.taker_exit.is_none_or(|exit| exit <= at);
            let (holders, orphan_of) = if orphaned {
                (&hold.holders[..], hold.taker)
            } else {
                (hold.taker.as_slice(), None)
            };
            for &holder in holders {
                out.push_str(if first { ", held by " } else { " and " });
                first = false;
                write!(out, "{}", self.actor(holder))?;
                if let Some(taker) = orphan_of {
                    write!(out, ", an orphan of {}", self.actor(taker))?;
                }
                if depth + 1 < CHAIN_DEPTH && !seen.contains(&holder.pid) {
                    seen.push(holder.pid);
                    self.waiting_then(out, lock.key.host, holder.pid, at, depth, seen)?;
                }
            }
        }
        Ok(())
    }

    /// ", itself waiting for" the lock `pid` was waiting for at `at`, and who held it; nothing
    /// if it was not waiting.
    fn waiting_then(
        &self,
        out: &mut String,
        host: Name,
        pid: u32,
        at: Nanos,
        depth: usize,
        seen: &mut Vec<u32>,
    ) -> fmt::Result {
        let Some((lock, _)) = self.waits_by_process.get(&(host, pid)).and_then(|waits| {
            waits
                .iter()
                .map(|&(lock, wait)| (&self.locks[lock], &self.locks[lock].waits[wait]))
                .find(|(_, wait)| wait.since <= at && wait.until().is_none_or(|until| until > at))
        }) else {
            return Ok(());
        };
        write!(out, ", itself waiting for {}", self.file(lock))?;
        self.held_by(out, lock, at, depth + 1, seen)
    }

    /// Who held which POSIX locks at `at`, by process and mode, as the kernel merges them.
    fn held_at_lines(&self, lock: &Lock, at: Nanos, lines: &mut Lines) -> fmt::Result {
        for (holder, mode, ranges) in held_at(lock, at) {
            write!(
                lines.text,
                "at that instant {} held a {} on {}",
                self.actor(holder),
                lock_mode(mode).unwrap_or("lock"),
                joined(&ranges, ", ", |&range| bytes(range))
            )?;
            lines.end(at);
        }
        Ok(())
    }

    /// The first screen when many locks match: the orphans, what is still held, the longest
    /// waits and the most refused processes across them all, each naming its lock.
    pub fn summary(&self, out: &mut impl Write, locks: &[Lock]) -> std::io::Result<()> {
        let name = |lock: &Lock| {
            let file = match lock.paths.first() {
                Some(seen) => self.names.get(seen.path).to_owned(),
                None => format!("inode {}", lock.key.ino),
            };
            match self.several_hosts {
                true => format!("{file} on {}", self.host_name(lock)),
                false => file,
            }
        };
        let Notable {
            mut orphans,
            mut held,
            mut waits,
            mut refused,
        } = locks
            .par_chunks(self.locks_per_job)
            .map(|locks| self.notable_of(locks))
            .reduce(Notable::default, Notable::and);
        orphans.sort_by_key(|&(by, ..)| std::cmp::Reverse(by));
        held.sort_by_key(|&(ns, ..)| std::cmp::Reverse(ns));
        waits.sort_by_key(|&(ns, ..)| std::cmp::Reverse(ns));
        refused.sort_by_key(|&(count, ..)| std::cmp::Reverse(count));
        let refusals: usize = locks.iter().map(|lock| lock.refusals.len()).sum();
        writeln!(
            out,
            "summary of {} locks: {} orphaned, {} still held when the logs end, {} {}, {} {}",
            locks.len(),
            orphans.len(),
            held.len(),
            waits.len(),
            plural(waits.len(), "wait", "waits"),
            refusals,
            plural(refusals, "refusal", "refusals"),
        )?;
        // Only the first SUMMARY_ITEMS of each are told; the others are counted.
        let lines: [(&str, usize, Vec<String>); 4] = [
            (
                "orphans",
                orphans.len(),
                orphans
                    .iter()
                    .take(SUMMARY_ITEMS)
                    .map(|&(by, lock, count)| match count {
                        1 => format!("{} outlived its taker by {}", name(lock), duration(by)),
                        _ => format!(
                            "{} outlived {count} takers, the longest by {}",
                            name(lock),
                            duration(by)
                        ),
                    })
                    .collect(),
            ),
            (
                "still held",
                held.len(),
                held.iter()
                    .take(SUMMARY_ITEMS)
                    .map(|&(ns, taker, lock)| {
                        let by = taker
                            .map_or(String::new(), |taker| format!(" by {}", self.actor(taker)));
                        format!("{}{by} for {}", name(lock), duration(ns))
                    })
                    .collect(),
            ),
            (
                "longest waits",
                waits.len(),
                waits
                    .iter()
                    .take(SUMMARY_ITEMS)
                    .map(|&(ns, waiter, lock)| {
                        format!(
                            "{} by {} on {}",
                            duration(ns),
                            self.actor(waiter),
                            name(lock)
                        )
                    })
                    .collect(),
            ),
            (
                "most refused",
                refused.len(),
                refused
                    .iter()
                    .take(SUMMARY_ITEMS)
                    .map(|&(count, actor, lock)| {
                        let times = plural(count, "time", "times");
                        format!("{} {count} {times} on {}", self.actor(actor), name(lock))
                    })
                    .collect(),
            ),
        ];
        for (label, all, shown) in lines {
            if all == 0 {
                continue;
            }
            let more = match all.saturating_sub(SUMMARY_ITEMS) {
                0 => String::new(),
                more => format!(" (and {more} more)"),
            };
            writeln!(out, "  {label}: {}{more}", shown.join("; "))?;
        }
        writeln!(out)
    }

    /// What the summary picks from, of a run of locks, in their order.
    fn notable_of<'l>(&self, locks: &'l [Lock]) -> Notable<'l> {
        let mut notable = Notable::default();
        for lock in locks {
            let orphaned = lock.holds.iter().filter(|hold| hold.orphaned).count();
            if orphaned > 0 {
                let by = lock.holds.iter().filter_map(|hold| self.orphan_ns(hold));
                notable
                    .orphans
                    .push((by.max().unwrap_or(0), lock, orphaned));
            }
            for hold in lock.holds.iter().filter(|hold| hold.release.is_none()) {
                let held = (self.held_ns(hold).unwrap_or(0), hold.taker, lock);
                notable.held.push(held);
            }
            notable.waits.extend(
                lock.waits
                    .iter()
                    .map(|wait| (self.wait_ns(wait), wait.waiter, lock)),
            );
            // Each process refused this lock: its place in `refused`.
            let mut refused_here: HashMap<Actor, usize> = HashMap::new();
            for refusal in &lock.refusals {
                match refused_here.entry(refusal.actor) {
                    Entry::Occupied(known) => notable.refused[*known.get()].0 += 1,
                    Entry::Vacant(new) => {
                        new.insert(notable.refused.len());
                        notable.refused.push((1, refusal.actor, lock));
                    }
                }
            }
        }
        notable
    }

    /// A lock's file: its path, or its inode when no line gave the path.
    fn file(&self, lock: &Lock) -> Cow<'_, str> {
        match lock.paths.first() {
            Some(seen) => Cow::Borrowed(self.names.get(seen.path)),
            None => Cow::Owned(format!(
                "dev {} inode {}",
                self.names.get(lock.key.dev),
                lock.key.ino
            )),
        }
    }

    /// The first screen of a report on several hosts: per file, on how many hosts its lock
    /// outlived a taker, made processes wait or refused them, where that happened first and
    /// longest, and which commands held the orphaned locks.
    pub fn fleet(&self, out: &mut impl Write, locks: &[Lock]) -> std::io::Result<()> {
        let mut hosts: Vec<&str> = locks.iter().map(|lock| self.host_name(lock)).collect();
        hosts.sort_unstable();
        hosts.dedup();
        let files = locks
            .par_chunks(self.locks_per_job)
            .map(|locks| self.fleet_files(locks))
            .reduce(HashMap::new, |mut before, after| {
                for (path, file) in after {
                    before.entry(path).or_default().absorb(file);
                }
                before
            });
        let mut files: Vec<(Cow<str>, FleetFile)> = files
            .into_iter()
            .filter(|(_, file)| !file.is_quiet())
            .collect();
        // By path, then (stable) by the hosts it troubled.
        files.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        files.sort_by_key(|(_, file)| {
            std::cmp::Reverse((
                file.orphans.hosts.len(),
                file.waits.hosts.len(),
                file.refusals.hosts.len(),
            ))
        });
        writeln!(
            out,
            "fleet summary of {} hosts ({}): {} {} with orphans, waits or refusals",
            hosts.len(),
            hosts.join(", "),
            files.len(),
            plural(files.len(), "file", "files"),
        )?;
        for (path, file) in files.iter().take(FLEET_FILES) {
            let mut parts = Vec::new();
            if let Some(orphans) = file.orphans.text("orphans", "outlived its taker") {
                parts.push(format!("{orphans}; held by {}", file.commands.join(", ")));
            }
            parts.extend(file.waits.text("waits", "waited"));
            parts.extend(file.refusals.text("refusals", ""));
            writeln!(out, "  {path}: {}", parts.join("; "))?;
        }
        if files.len() > FLEET_FILES {
            writeln!(out, "  (and {} more files)", files.len() - FLEET_FILES)?;
        }
        writeln!(out)
    }

    /// The fleet summary's files, of a run of locks.
    fn fleet_files(&self, locks: &[Lock]) -> HashMap<Cow<'_, str>, FleetFile<'_>> {
        let mut files: HashMap<Cow<str>, FleetFile> = HashMap::new();
        for lock in locks {
            let host = self.host_name(lock);
            let file = files.entry(self.file(lock)).or_default();
            for hold in lock.holds.iter().filter(|hold| hold.orphaned) {
                let since = hold.taker_exit.or(hold.acquired).or(hold.found_held);
                file.orphans
                    .note(host, since, self.orphan_ns(hold).unwrap_or(0));
                let holders = if hold.holders.is_empty() {
                    hold.taker.iter().copied().collect()
                } else {
                    hold.holders.clone()
                };
                for holder in holders {
                    file.note_command(self.names.get(holder.comm));
                }
            }
            for wait in &lock.waits {
                file.waits.note(host, Some(wait.since), self.wait_ns(wait));
            }
            for refusal in &lock.refusals {
                file.refusals.note(host, Some(refusal.at), 0);
            }
        }
        files
    }

    fn host_name(&self, lock: &Lock) -> &str {
        self.host_name_of(self.names.get(lock.key.host))
    }

    fn host_name_of<'b>(&self, host: &'b str) -> &'b str {
        match host {
            "" => UNNAMED_HOST,
            host => host,
        }
    }

    fn totals_text(&self, out: &mut String, totals: &Totals) -> fmt::Result {
        out.push_str("held ");
        out.push_str(duration_text(totals.held_ns).as_str());
        out.push_str(" in ");
        out.push_str(itoa::Buffer::new().format(totals.holds));
        out.push(' ');
        out.push_str(plural(totals.holds, "hold", "holds"));
        if totals.still_held > 0 {
            write!(out, " ({} still held)", totals.still_held)?;
        }
        if let Some(longest) = totals.longest_orphan_ns {
            write!(
                out,
                "; {} outlived {} taker, the longest by {}",
                totals.orphans,
                plural(totals.orphans, "its", "their"),
                duration(longest)
            )?;
        }
        if totals.waiters > 0 {
            write!(
                out,
                "; {} {}, longest waits {}",
                totals.waiters,
                plural(totals.waiters, "waiter", "waiters"),
                joined(&totals.longest_waits, ", ", |wait| fmt::from_fn(move |f| {
                    write!(
                        f,
                        "{} by pid {} ({})",
                        duration(wait.wait_ns),
                        wait.process.pid,
                        wait.process.comm
                    )
                }))
            )?;
        }
        if totals.still_waiting > 0 {
            write!(out, "; {} still waiting", totals.still_waiting)?;
        }
        if totals.refusals > 0 {
            write!(
                out,
                "; {} {}",
                totals.refusals,
                plural(totals.refusals, "refusal", "refusals")
            )?;
        }
        Ok(())
    }

    pub fn json(&self, lock: &Lock) -> LockJson<'_> {
        let key = &lock.key;
        LockJson {
            host: self.names.get(key.host),
            dev: self.names.get(key.dev),
            ino: key.ino,
            generation: Some(key.generation).filter(|&generation| generation != 0),
            kind: key.kind,
            start: key.range.start,
            end: key.range.logged_end(),
            paths: lock
                .paths
                .iter()
                .map(|seen| self.names.get(seen.path))
                .collect(),
            host_paths: lock
                .paths
                .iter()
                .filter_map(|seen| Some((self.names.get(seen.path), self.names.get(seen.host?))))
                .collect(),
            holds: lock
                .holds
                .iter()
                .map(|hold| HoldJson {
                    taker: hold.taker.map(|taker| self.proc(taker)),
                    mode: hold.mode,
                    acquired: hold.acquired.map(json_time),
                    acquire_logged: hold.acquire_logged,
                    found_held: hold.found_held.map(json_time),
                    wait_ns: hold.wait_ns,
                    taker_exit: hold.taker_exit.map(json_time),
                    orphaned: hold.orphaned,
                    holders: hold
                        .holders
                        .iter()
                        .map(|&holder| self.proc(holder))
                        .collect(),
                    start: hold.range.start,
                    end: hold.range.logged_end(),
                    excluded: hold.excluded.iter().map(|&range| range.into()).collect(),
                    partial_releases: hold
                        .partial_releases
                        .iter()
                        .map(|part| PartialReleaseJson {
                            start: part.range.start,
                            end: part.range.logged_end(),
                            at: json_time(part.release.at),
                            by: self.proc(part.release.by),
                            reason: part.release.reason,
                        })
                        .collect(),
                    released: hold.release.map(|release| json_time(release.at)),
                    released_by: hold.release.map(|release| self.proc(release.by)),
                    reason: hold.release.and_then(|release| release.reason),
                    still_held: hold.release.is_none(),
                    held_ns: self.held_ns(hold),
                    orphan_ns: self.orphan_ns(hold),
                })
                .collect(),
            waits: lock
                .waits
                .iter()
                .map(|wait| WaitJson {
                    waiter: self.proc(wait.waiter),
                    mode: wait.mode,
                    start: wait.range.start,
                    end: wait.range.logged_end(),
                    blockers: self.blockers_json(&wait.blockers),
                    since: json_time(wait.since),
                    until: wait.until().map(json_time),
                    wait_ns: self.wait_ns(wait),
                    outcome: match wait.outcome {
                        WaitOutcome::Acquired(_) => "acquired",
                        WaitOutcome::Failed(..) => "failed",
                        WaitOutcome::Waiting => "waiting",
                    },
                    errno: match wait.outcome {
                        WaitOutcome::Failed(_, errno) => errno.map(|errno| self.names.get(errno)),
                        _ => None,
                    },
                })
                .collect(),
            refusals: lock
                .refusals
                .iter()
                .map(|refusal| RefusalJson {
                    at: json_time(refusal.at),
                    process: self.proc(refusal.actor),
                    errno: refusal.errno.map(|errno| self.names.get(errno)),
                    mode: refusal.mode,
                    start: refusal.range.start,
                    end: refusal.range.logged_end(),
                    blockers: self.blockers_json(&refusal.blockers),
                })
                .collect(),
            totals: self.totals(lock),
            logs_end: json_time(self.end),
            held_at: self
                .at
                .filter(|_| lock.key.kind == LockKind::Posix)
                .map(|at| {
                    held_at(lock, at)
                        .into_iter()
                        .flat_map(|(holder, mode, ranges)| {
                            ranges.into_iter().map(move |range| HeldJson {
                                process: self.proc(holder),
                                mode,
                                start: range.start,
                                end: range.logged_end(),
                            })
                        })
                        .collect()
                }),
        }
    }

    fn blockers_json(&self, blockers: &[Blocker]) -> Vec<HeldJson<'_>> {
        blockers
            .iter()
            .map(|blocker| HeldJson {
                process: self.proc(blocker.holder),
                mode: blocker.mode,
                start: blocker.range.start,
                end: blocker.range.logged_end(),
            })
            .collect()
    }
}

/// What the fleet summary says of one file.
#[derive(Default)]
struct FleetFile<'a> {
    orphans: FleetEvents<'a>,
    waits: FleetEvents<'a>,
    refusals: FleetEvents<'a>,
    /// The commands the orphaned locks survived in.
    commands: Vec<&'a str>,
}

impl<'a> FleetFile<'a> {
    fn is_quiet(&self) -> bool {
        self.orphans.count + self.waits.count + self.refusals.count == 0
    }

    fn note_command(&mut self, comm: &'a str) {
        if !self.commands.contains(&comm) {
            self.commands.push(comm);
        }
    }

    /// What the locks after these say of the same file.
    fn absorb(&mut self, after: Self) {
        self.orphans.absorb(after.orphans);
        self.waits.absorb(after.waits);
        self.refusals.absorb(after.refusals);
        for comm in after.commands {
            self.note_command(comm);
        }
    }
}

/// What the summary picks from: orphaned locks (by how long, with how many), holds still held
/// (by how long), waits (by how long) and refusals (by how many, per process and lock).
#[derive(Default)]
struct Notable<'l> {
    orphans: Vec<(u64, &'l Lock, usize)>,
    held: Vec<(u64, Option<Actor>, &'l Lock)>,
    waits: Vec<(u64, Actor, &'l Lock)>,
    refused: Vec<(usize, Actor, &'l Lock)>,
}

impl Notable<'_> {
    /// These, then those of the locks after them.
    fn and(mut self, after: Self) -> Self {
        self.orphans.extend(after.orphans);
        self.held.extend(after.held);
        self.waits.extend(after.waits);
        self.refused.extend(after.refused);
        self
    }
}

/// Orphans, waits or refusals of one file across hosts.
#[derive(Default)]
struct FleetEvents<'a> {
    count: usize,
    hosts: Vec<&'a str>,
    first: Option<(Nanos, &'a str)>,
    longest: Option<(u64, &'a str)>,
}

impl<'a> FleetEvents<'a> {
    fn note(&mut self, host: &'a str, at: Option<Nanos>, ns: u64) {
        self.count += 1;
        self.note_host(host);
        if let Some(at) = at
            && self.first.is_none_or(|(first, _)| at < first)
        {
            self.first = Some((at, host));
        }
        if self.longest.is_none_or(|(longest, _)| ns > longest) {
            self.longest = Some((ns, host));
        }
    }

    fn note_host(&mut self, host: &'a str) {
        if !self.hosts.contains(&host) {
            self.hosts.push(host);
        }
    }

    /// What later locks say after what these said: the first and the longest stay the
    /// earliest told when others tie with them.
    fn absorb(&mut self, after: Self) {
        self.count += after.count;
        for host in after.hosts {
            self.note_host(host);
        }
        if let Some((at, host)) = after.first
            && self.first.is_none_or(|(first, _)| at < first)
        {
            self.first = Some((at, host));
        }
        if let Some((ns, host)) = after.longest
            && self.longest.is_none_or(|(longest, _)| ns > longest)
        {
            self.longest = Some((ns, host));
        }
    }

    /// `orphans on 2 hosts (3), the first on web-1 at T, the longest on web-2 (5s)`; `what`
    /// names the duration (none for refusals).
    fn text(&self, label: &str, what: &str) -> Option<String> {
        if self.count == 0 {
            return None;
        }
        let hosts = self.hosts.len();
        let mut text = format!(
            "{label} on {hosts} {} ({})",
            plural(hosts, "host", "hosts"),
            self.count
        );
        if let Some((at, host)) = self.first {
            text += &format!(", the first on {host} at {}", time(at));
        }
        if let (false, Some((ns, host))) = (what.is_empty(), self.longest) {
            text += &format!(", the longest on {host} ({what} {})", duration(ns));
        }
        Some(text)
    }
}

#[derive(Debug, Serialize)]
pub struct Proc<'a> {
    pub pid: u32,
    /// When it started, nanoseconds since boot, when the logs gave it: with `pid`, the process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    pub comm: &'a str,
    /// Its pid in its own PID namespace, when the logs gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct WaitTotal<'a> {
    #[serde(flatten)]
    pub process: Proc<'a>,
    pub wait_ns: u64,
}

#[derive(Debug, Serialize)]
pub struct Totals<'a> {
    pub holds: usize,
    /// Summed over holds; a hold still held counts until the logs end.
    pub held_ns: u64,
    pub still_held: usize,
    pub orphans: usize,
    pub longest_orphan_ns: Option<u64>,
    pub waiters: usize,
    pub still_waiting: usize,
    pub longest_waits: Vec<WaitTotal<'a>>,
    pub refusals: usize,
}

#[derive(Debug, Serialize)]
pub struct LockJson<'a> {
    /// The host whose logs tell of it; absent when the lines did not say.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub host: &'a str,
    pub dev: &'a str,
    pub ino: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    pub kind: LockKind,
    pub start: u64,
    pub end: Option<u64>,
    pub paths: Vec<&'a str>,
    /// The host's path of each path seen through a container's mounts.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub host_paths: std::collections::BTreeMap<&'a str, &'a str>,
    pub holds: Vec<HoldJson<'a>>,
    pub waits: Vec<WaitJson<'a>>,
    pub refusals: Vec<RefusalJson<'a>>,
    pub totals: Totals<'a>,
    pub logs_end: String,
    /// `--at`, POSIX locks: who held which bytes at that instant, as the kernel merges them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_at: Option<Vec<HeldJson<'a>>>,
}

/// A POSIX lock: held at an instant, or in the way of a request.
#[derive(Debug, Serialize)]
pub struct HeldJson<'a> {
    #[serde(flatten)]
    pub process: Proc<'a>,
    pub mode: Mode,
    pub start: u64,
    pub end: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct RangeJson {
    pub start: u64,
    pub end: Option<u64>,
}

impl From<ByteRange> for RangeJson {
    fn from(range: ByteRange) -> Self {
        Self {
            start: range.start,
            end: range.logged_end(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PartialReleaseJson<'a> {
    pub start: u64,
    pub end: Option<u64>,
    pub at: String,
    pub by: Proc<'a>,
    pub reason: Option<ReleaseReason>,
}

#[derive(Debug, Serialize)]
pub struct HoldJson<'a> {
    pub taker: Option<Proc<'a>>,
    pub mode: Option<Mode>,
    pub acquired: Option<String>,
    pub acquire_logged: bool,
    /// When a tracer found the kernel holding it (a `held` line), if no line says when it was
    /// taken.
    pub found_held: Option<String>,
    pub wait_ns: Option<u64>,
    pub taker_exit: Option<String>,
    pub orphaned: bool,
    pub holders: Vec<Proc<'a>>,
    /// The bytes it covered when taken.
    pub start: u64,
    pub end: Option<u64>,
    /// POSIX: bytes between `start` and `end` it never had (already held in that mode).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<RangeJson>,
    /// POSIX: parts released before the rest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partial_releases: Vec<PartialReleaseJson<'a>>,
    pub released: Option<String>,
    pub released_by: Option<Proc<'a>>,
    pub reason: Option<ReleaseReason>,
    pub still_held: bool,
    pub held_ns: Option<u64>,
    pub orphan_ns: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct WaitJson<'a> {
    pub waiter: Proc<'a>,
    pub mode: Option<Mode>,
    pub start: u64,
    pub end: Option<u64>,
    /// POSIX: the other processes' locks on those bytes when it began to wait.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blockers: Vec<HeldJson<'a>>,
    pub since: String,
    pub until: Option<String>,
    pub wait_ns: u64,
    pub outcome: &'static str,
    pub errno: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub struct RefusalJson<'a> {
    pub at: String,
    pub process: Proc<'a>,
    pub errno: Option<&'a str>,
    pub mode: Option<Mode>,
    pub start: u64,
    pub end: Option<u64>,
    /// POSIX: the other processes' locks on those bytes then.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blockers: Vec<HeldJson<'a>>,
}

/// The POSIX locks of a section held at `at`: per process and mode, the ranges as the kernel
/// keeps them (touching ranges of one mode merged), by first byte.
fn held_at(lock: &Lock, at: Nanos) -> Vec<(Actor, Mode, Vec<ByteRange>)> {
    let mut held: HashMap<(u32, Mode), (Actor, Vec<ByteRange>)> = HashMap::new();
    for hold in &lock.holds {
        let (Some(taker), Some(mode)) = (hold.taker, hold.mode) else {
            continue;
        };
        let pieces = hold.held_at(at);
        if !pieces.is_empty() {
            held.entry((taker.pid, mode))
                .or_insert((taker, Vec::new()))
                .1
                .extend(pieces);
        }
    }
    let mut held: Vec<(Actor, Mode, Vec<ByteRange>)> = held
        .into_iter()
        .map(|((_, mode), (holder, mut ranges))| {
            ranges.sort_unstable();
            let mut merged: Vec<ByteRange> = Vec::new();
            for range in ranges {
                match merged.last_mut() {
                    Some(last) if last.overlaps(range) || last.touches(range) => {
                        last.end = last.end.max(range.end);
                    }
                    _ => merged.push(range),
                }
            }
            (holder, mode, merged)
        })
        .collect();
    held.sort_unstable_by_key(|(holder, _, ranges)| (ranges[0].start, holder.pid));
    held
}

/// `write lock`, `read lock`.
/// Whether a hold was held at `at` (one taken before the logs, from their start).
/// The indexes of up to SHOWN items, notable and longest first (the earliest of equals), in
/// time order.
pub fn notable<T>(items: &[T], score: impl Fn(&T) -> (bool, u64)) -> Vec<usize> {
    let mut ranked: Vec<usize> = (0..items.len()).collect();
    if items.len() > SHOWN {
        ranked.sort_by_key(|&index| std::cmp::Reverse(score(&items[index])));
        ranked.truncate(SHOWN);
        ranked.sort_unstable();
    }
    ranked
}

/// How a hold ranks to be told: orphaned or never released first, then the longest held.
pub fn hold_score(hold: &Hold, end: Nanos) -> (bool, u64) {
    let notable = hold.orphaned || hold.release.is_none();
    (notable, held_ns(hold, end).unwrap_or(u64::MAX))
}

/// How long a hold was held; until `end`, the end of the logs, if never released.
pub fn held_ns(hold: &Hold, end: Nanos) -> Option<u64> {
    let until = hold.release.map_or(end, |release| release.at);
    hold.acquired.map(|acquired| until.saturating_sub(acquired))
}

/// Whether a hold held the lock at `at`.
pub fn held_then(hold: &Hold, at: Nanos) -> bool {
    let since = hold.acquired.or(hold.found_held);
    since.is_none_or(|since| since <= at) && hold.release.is_none_or(|release| release.at > at)
}

fn lock_mode(mode: Mode) -> Option<&'static str> {
    match mode {
        Mode::Read => Some("read lock"),
        Mode::Write => Some("write lock"),
        Mode::Unlock => None,
    }
}

/// `bytes 0-9`, `byte 7`, `bytes 100 to the end`, `the whole file`.
pub fn bytes(range: ByteRange) -> impl fmt::Display {
    fmt::from_fn(move |f| match (range.start, range.logged_end()) {
        (0, None) => f.write_str("the whole file"),
        (start, None) => write!(f, "bytes {start} to the end"),
        (start, Some(end)) if start == end => write!(f, "byte {start}"),
        (start, Some(end)) => write!(f, "bytes {start}-{end}"),
    })
}

/// Room for a lock's narrative, most of which fit: the jobs that render share one malloc
/// arena, and each time a string grows they wait for each other.
const NARRATIVE_BYTES: usize = 4096;

/// A lock's narrative lines, written end to end into one string: one allocation per lock
/// rather than several per line.
struct Lines {
    text: String,
    /// Each line's time and where it is in `text`.
    ends: Vec<(Nanos, Range<usize>)>,
}

impl Lines {
    /// Ends the line written since the last one ended: it is told at `at`.
    fn end(&mut self, at: Nanos) {
        let start = self.ends.last().map_or(0, |(_, range)| range.end);
        self.ends.push((at, start..self.text.len()));
    }
}

/// `value`, or `otherwise` when there is none.
fn or<T: fmt::Display>(value: Option<T>, otherwise: &str) -> impl fmt::Display {
    fmt::from_fn(move |f| match &value {
        Some(value) => value.fmt(f),
        None => f.write_str(otherwise),
    })
}

/// `items`, each as `show` writes it, separated by `separator`.
fn joined<'i, T, D: fmt::Display>(
    items: &'i [T],
    separator: &'i str,
    show: impl Fn(&'i T) -> D,
) -> impl fmt::Display {
    fmt::from_fn(move |f| {
        for (index, item) in items.iter().enumerate() {
            if index > 0 {
                f.write_str(separator)?;
            }
            show(item).fmt(f)?;
        }
        Ok(())
    })
}

fn plural<'a>(count: usize, one: &'a str, many: &'a str) -> &'a str {
    if count == 1 { one } else { many }
}

/// RFC 3339, UTC, milliseconds: what `--at` and `--since` accept back. Written as humantime's
/// `format_rfc3339_millis` writes it (a test holds them side by side), in one piece: a report
/// writes a time on most of its lines.
pub fn time(at: Nanos) -> impl fmt::Display {
    fmt::from_fn(move |f| f.write_str(time_text(at).as_str()))
}

/// [`time`], as a short text.
fn time_text(at: Nanos) -> Short {
    let seconds = at / 1_000_000_000;
    let (year, month, day) = civil_date(seconds / 86_400);
    let of_day = seconds % 86_400;
    let mut text = Short::default();
    text.digits(year, 4);
    text.push("-");
    text.digits(month, 2);
    text.push("-");
    text.digits(day, 2);
    text.push("T");
    text.digits(of_day / 3600, 2);
    text.push(":");
    text.digits(of_day / 60 % 60, 2);
    text.push(":");
    text.digits(of_day % 60, 2);
    text.push(".");
    text.digits(at / 1_000_000 % 1000, 3);
    text.push("Z");
    text
}

/// The year, month and day of a day counted from 1970-01-01 (Howard Hinnant's
/// civil_from_days).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A short text made on the stack: a time or a duration.
struct Short {
    bytes: [u8; 64],
    len: usize,
}

impl Default for Short {
    fn default() -> Self {
        Self {
            bytes: [0; 64],
            len: 0,
        }
    }
}

impl Short {
    /// A few bytes, one at a time: shorter than a call to copy them.
    fn push(&mut self, text: &str) {
        for &byte in text.as_bytes() {
            self.bytes[self.len] = byte;
            self.len += 1;
        }
    }

    /// `value` in `width` digits, zeros first (`value` has no more).
    fn digits(&mut self, mut value: u64, width: usize) {
        for at in (self.len..self.len + width).rev() {
            self.bytes[at] = b'0' + (value % 10) as u8;
            value /= 10;
        }
        self.len += width;
    }

    /// `value` in as many digits as it has.
    fn number(&mut self, value: u64) {
        self.digits(
            value,
            value.checked_ilog10().map_or(1, |log| log as usize + 1),
        );
    }

    fn as_str(&self) -> &str {
        // SAFETY: every byte written is an ASCII digit or part of a whole `str` pushed.
        unsafe { std::str::from_utf8_unchecked(&self.bytes[..self.len]) }
    }
}

/// `time` for the JSON report.
fn json_time(at: Nanos) -> String {
    time(at).to_string()
}

/// Milliseconds from a second up, microseconds below.
/// A process's start time as the report tells it: `1234.56 s after boot`.
/// `21388.10 s after boot`, in pieces rather than by a format: in a log whose pids were reused,
/// most lines name a process by it.
fn write_since_boot(out: &mut impl fmt::Write, start_time: u64) -> fmt::Result {
    let centis = start_time / 10_000_000;
    out.write_str(itoa::Buffer::new().format(centis / 100))?;
    let hundredths = (centis % 100) as u8;
    out.write_char('.')?;
    out.write_char(char::from(b'0' + hundredths / 10))?;
    out.write_char(char::from(b'0' + hundredths % 10))?;
    out.write_str(" s after boot")
}

pub fn duration(ns: u64) -> impl fmt::Display {
    fmt::from_fn(move |f| f.write_str(duration_text(ns).as_str()))
}

/// [`duration`], as a short text.
fn duration_text(ns: u64) -> Short {
    let rounded = if ns >= 1_000_000_000 {
        ns / 1_000_000 * 1_000_000
    } else {
        ns / 1_000 * 1_000
    };
    humane_duration(rounded)
}

/// A duration as humantime's `format_duration` writes it (a test holds them side by side), in
/// one piece: a report writes one on most of its lines.
fn humane_duration(ns: u64) -> Short {
    const YEAR: u64 = 31_557_600;
    const MONTH: u64 = 2_630_016;
    let mut text = Short::default();
    if ns == 0 {
        text.push("0s");
        return text;
    }
    let mut part = |value: u64, unit: &str, plural: bool| {
        if value == 0 {
            return;
        }
        if text.len > 0 {
            text.push(" ");
        }
        text.number(value);
        text.push(unit);
        if plural && value > 1 {
            text.push("s");
        }
    };
    let (seconds, below) = (ns / 1_000_000_000, ns % 1_000_000_000);
    // Most durations are under a minute: their larger parts are all zero.
    let in_day = if seconds < 60 {
        seconds
    } else {
        let (in_year, in_month) = (seconds % YEAR, seconds % YEAR % MONTH);
        let in_day = in_month % 86_400;
        part(seconds / YEAR, "year", true);
        part(in_year / MONTH, "month", true);
        part(in_month / 86_400, "day", true);
        part(in_day / 3600, "h", false);
        part(in_day % 3600 / 60, "m", false);
        in_day
    };
    part(in_day % 60, "s", false);
    part(below / 1_000_000, "ms", false);
    part(below / 1000 % 1000, "us", false);
    part(below % 1000, "ns", false);
    text
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    /// Values spread over the whole range, and the edges where a field rolls over.
    fn samples() -> impl Iterator<Item = u64> {
        let edges = [
            0,
            1,
            999,
            1000,
            999_999,
            1_000_000,
            999_999_999,
            1_000_000_000,
            86_399_999_999_999,
            86_400_000_000_000,
            // 2000-02-29 and 2000-03-01, 2100-02-28 and 2100-03-01.
            951_782_400_000_000_000,
            951_868_800_000_000_000,
            4_107_456_000_000_000_000,
            4_107_542_400_000_000_000,
            u64::MAX,
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let spread = std::iter::repeat_with(move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Every scale, from nanoseconds to centuries.
            state >> (state % 64)
        });
        edges.into_iter().chain(spread.take(200_000))
    }

    #[test]
    fn times_and_durations_read_as_humantime_writes_them() {
        for at in samples() {
            assert_eq!(
                time(at).to_string(),
                humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(at)).to_string(),
                "{at}"
            );
            assert_eq!(
                humane_duration(at).as_str(),
                humantime::format_duration(Duration::from_nanos(at)).to_string(),
                "{at}"
            );
        }
    }

    #[test]
    fn start_times_read_as_a_format_writes_them() {
        for start_time in samples() {
            let mut written = String::new();
            write_since_boot(&mut written, start_time).unwrap();
            let centis = start_time / 10_000_000;
            assert_eq!(
                written,
                format!("{}.{:02} s after boot", centis / 100, centis % 100)
            );
        }
    }
}
