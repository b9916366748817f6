//! Telling each lock's history: a short narrative, or the same as JSON.

use std::{collections::HashSet, io::Write, time::Duration};

use serde::Serialize;

use crate::events::{LockKind, Mode, ReleaseReason};

use super::{
    line::{Actor, Names, Nanos, system_time},
    timeline::{Hold, Lock, Wait, WaitOutcome},
};

/// Holds or waits listed per lock in the narrative; the notable ones are kept first.
const SHOWN: usize = 20;
/// Refused processes named one by one; more are summed up in one line.
const REFUSED_SHOWN: usize = 5;
/// Longest waits named in the totals.
const LONGEST_WAITS: usize = 3;
/// From this many matching locks on, the narrative opens with a summary.
pub const SUMMARY_FROM: usize = 4;
/// Items named on each line of the summary.
const SUMMARY_ITEMS: usize = 3;

pub struct Renderer<'a> {
    pub names: &'a Names,
    /// When the logs end: the end of what is still held or awaited.
    pub end: Nanos,
}

impl Renderer<'_> {
    fn actor(&self, actor: Actor) -> String {
        let comm = self.names.get(actor.comm);
        match actor.ns_pid {
            Some(ns_pid) => format!("pid {} ({comm}, pid {ns_pid} in its namespace)", actor.pid),
            None => format!("pid {} ({comm})", actor.pid),
        }
    }

    fn held_ns(&self, hold: &Hold) -> Option<u64> {
        let until = hold.release.map_or(self.end, |release| release.at);
        hold.acquired.map(|acquired| until.saturating_sub(acquired))
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
            holds: lock.holds.len(),
            held_ns: lock
                .holds
                .iter()
                .filter_map(|hold| self.held_ns(hold))
                .sum(),
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
            comm: self.names.get(actor.comm),
            ns_pid: actor.ns_pid,
        }
    }

    fn title(&self, lock: &Lock) -> String {
        let key = &lock.key;
        let dev = self.names.get(key.dev);
        let kind = match key.kind {
            LockKind::Flock => "flock",
            LockKind::Posix => "POSIX lock",
            LockKind::Ofd => "OFD lock",
            LockKind::Lease => "lease",
        };
        let range = match (key.start, key.end) {
            (0, None) => "whole file".to_owned(),
            (start, None) => format!("bytes {start} to the end"),
            (start, Some(end)) => format!("bytes {start}-{end}"),
        };
        let mut paths = lock.paths.iter().map(|&path| self.names.get(path));
        let name = match paths.next() {
            Some(first) => {
                let others: Vec<&str> = paths.collect();
                if others.is_empty() {
                    first.to_owned()
                } else {
                    format!("{first} (also {})", others.join(", "))
                }
            }
            None => "(path not logged)".to_owned(),
        };
        format!("{name}: {kind}, {range} (dev {dev}, inode {})", key.ino)
    }

    /// The narrative of one lock: its events in time order, then totals.
    pub fn text(&self, out: &mut impl Write, lock: &Lock) -> std::io::Result<()> {
        writeln!(out, "{}", self.title(lock))?;
        let mut lines: Vec<(Nanos, String)> = Vec::new();
        let holds = self.notable(&lock.holds, |hold| {
            let notable = hold.orphaned || hold.release.is_none();
            (notable, self.held_ns(hold).unwrap_or(u64::MAX))
        });
        for hold in &holds {
            self.hold_lines(hold, &mut lines);
        }
        let waits = self.notable(&lock.waits, |wait| {
            (wait.outcome == WaitOutcome::Waiting, self.wait_ns(wait))
        });
        for wait in &waits {
            self.wait_lines(wait, &mut lines);
        }
        self.refusal_lines(lock, &mut lines);
        lines.sort_by_key(|(at, _)| *at);
        for (at, line) in lines {
            writeln!(out, "  {}  {line}", time(at))?;
        }
        for (kind, shown, all) in [
            ("holds", holds.len(), lock.holds.len()),
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
        writeln!(out, "  totals: {}", self.totals_text(&self.totals(lock)))?;
        writeln!(out)
    }

    /// Up to SHOWN items, notable and longest first, back in time order.
    fn notable<'b, T>(&self, items: &'b [T], score: impl Fn(&T) -> (bool, u64)) -> Vec<&'b T> {
        if items.len() <= SHOWN {
            return items.iter().collect();
        }
        let mut ranked: Vec<usize> = (0..items.len()).collect();
        ranked.sort_by_key(|&index| std::cmp::Reverse(score(&items[index])));
        ranked.truncate(SHOWN);
        ranked.sort_unstable();
        ranked.into_iter().map(|index| &items[index]).collect()
    }

    fn hold_lines(&self, hold: &Hold, lines: &mut Vec<(Nanos, String)>) {
        let mode = match hold.mode {
            Some(Mode::Read) => "a read lock",
            Some(Mode::Write) => "a write lock",
            Some(Mode::Unlock) | None => "the lock",
        };
        let taker = hold.taker.map(|taker| self.actor(taker));
        if let Some(acquired) = hold.acquired {
            let who = taker
                .as_deref()
                .unwrap_or("a process these logs do not name");
            let mut line = format!("{who} took {mode}");
            if let Some(wait_ns) = hold.wait_ns {
                line += &format!(" after waiting {}", duration(wait_ns));
            }
            if !hold.acquire_logged {
                line += " (before these logs start)";
            }
            lines.push((acquired, line));
        } else if let Some(found) = hold.found_held {
            let who = taker
                .as_deref()
                .unwrap_or("a process the kernel does not name");
            lines.push((
                found,
                format!("{who} held {mode} when the tracer looked (taken before these logs)"),
            ));
        }
        let orphan_ns = self.orphan_ns(hold);
        if let (true, Some(exit)) = (hold.orphaned, hold.taker_exit) {
            let who = hold
                .taker
                .map_or("its taker".to_owned(), |taker| format!("pid {}", taker.pid));
            let mut line = format!("{who} exited");
            if hold.acquired.is_none() {
                line += &format!(" (it took {mode} before these logs start)");
            }
            let holders: Vec<String> = hold
                .holders
                .iter()
                .map(|&holder| self.actor(holder))
                .collect();
            let survival = orphan_ns.map_or(String::new(), |ns| format!(" for {}", duration(ns)));
            if holders.is_empty() {
                line += &format!("; the lock outlived it{survival}");
            } else {
                line += &format!("; the lock survived in {}{survival}", holders.join(", "));
            }
            lines.push((exit, line));
        } else if let (true, None, Some(found)) = (hold.orphaned, hold.taker_exit, hold.found_held)
        {
            let holders: Vec<String> = hold
                .holders
                .iter()
                .map(|&holder| self.actor(holder))
                .collect();
            lines.push((
                found,
                format!(
                    "its taker had exited before these logs; the lock survived in {}",
                    if holders.is_empty() {
                        "no process the tracer could see".to_owned()
                    } else {
                        holders.join(", ")
                    }
                ),
            ));
        }
        let held = self
            .held_ns(hold)
            .map_or(String::new(), |ns| format!("; held {}", duration(ns)));
        match hold.release {
            Some(release) => {
                let by = self.actor(release.by);
                let how = match release.reason {
                    Some(ReleaseReason::Unlock) => format!("{by} unlocked it"),
                    Some(ReleaseReason::Close) => format!("{by} closed the file"),
                    Some(ReleaseReason::Exit) => format!("{by} exited"),
                    Some(ReleaseReason::Convert) => format!("{by} converted it"),
                    Some(ReleaseReason::Lost) => {
                        "the tracer lost the record (the kernel no longer held it)".to_owned()
                    }
                    None => format!("by {by}"),
                };
                let mut line = format!("released when {how}");
                if let Some(ns) = orphan_ns {
                    line += &format!(", {} after its taker exited", duration(ns));
                }
                lines.push((release.at, line + &held));
            }
            None => {
                let mut line = "still held when the logs end".to_owned();
                if let Some(ns) = orphan_ns {
                    line += &format!(", {} after its taker exited", duration(ns));
                }
                lines.push((self.end, line + &held));
            }
        }
    }

    fn wait_lines(&self, wait: &Wait, lines: &mut Vec<(Nanos, String)>) {
        let waiter = self.actor(wait.waiter);
        lines.push((wait.since, format!("{waiter} queued for the lock")));
        match wait.outcome {
            // The acquire line says how long it waited.
            WaitOutcome::Acquired(_) => {}
            WaitOutcome::Failed(at, errno) => {
                let errno = errno.map_or("", |errno| self.names.get(errno));
                let waited = duration(at.saturating_sub(wait.since));
                lines.push((
                    at,
                    format!("{waiter} gave up after waiting {waited} ({errno})"),
                ));
            }
            WaitOutcome::Waiting => {
                let waited = duration(self.end.saturating_sub(wait.since));
                lines.push((
                    self.end,
                    format!("{waiter} still waiting when the logs end, for {waited}"),
                ));
            }
        }
    }

    /// One line per refused process: polling loops make thousands.
    fn refusal_lines(&self, lock: &Lock, lines: &mut Vec<(Nanos, String)>) {
        let mut by_pid: Vec<(Actor, Nanos, Nanos, u64, Vec<&str>)> = Vec::new();
        for refusal in &lock.refusals {
            let errno = refusal.errno.map_or("?", |errno| self.names.get(errno));
            match by_pid
                .iter_mut()
                .find(|entry| entry.0.pid == refusal.actor.pid)
            {
                Some((_, _, last, count, errnos)) => {
                    *last = refusal.at;
                    *count += 1;
                    if !errnos.contains(&errno) {
                        errnos.push(errno);
                    }
                }
                None => by_pid.push((refusal.actor, refusal.at, refusal.at, 1, vec![errno])),
            }
        }
        if by_pid.len() > REFUSED_SHOWN {
            let (first, last) = (
                lock.refusals[0].at,
                lock.refusals[lock.refusals.len() - 1].at,
            );
            let mut errnos: Vec<&str> = by_pid
                .iter()
                .flat_map(|entry| entry.4.iter().copied())
                .collect();
            errnos.sort_unstable();
            errnos.dedup();
            let line = format!(
                "{} processes were refused the lock {} times ({}), the last at {}",
                by_pid.len(),
                lock.refusals.len(),
                errnos.join(", "),
                time(last)
            );
            lines.push((first, line));
            return;
        }
        for (actor, first, last, count, errnos) in by_pid {
            let errnos = errnos.join(", ");
            let line = if count == 1 {
                format!("{} was refused the lock ({errnos})", self.actor(actor))
            } else {
                format!(
                    "{} was refused the lock {count} times ({errnos}), the last at {}",
                    self.actor(actor),
                    time(last)
                )
            };
            lines.push((first, line));
        }
    }

    /// The first screen when many locks match: the orphans, what is still held, the longest
    /// waits and the most refused processes across them all, each naming its lock.
    pub fn summary(&self, out: &mut impl Write, locks: &[Lock]) -> std::io::Result<()> {
        let name = |lock: &Lock| match lock.paths.first() {
            Some(&path) => self.names.get(path).to_owned(),
            None => format!("inode {}", lock.key.ino),
        };
        let mut orphans = Vec::new();
        let mut held = Vec::new();
        let mut waits = Vec::new();
        let mut refused: Vec<(usize, Actor, &Lock)> = Vec::new();
        for lock in locks {
            let totals = self.totals(lock);
            if totals.orphans > 0 {
                let by = totals.longest_orphan_ns.unwrap_or(0);
                orphans.push((by, lock, totals.orphans));
            }
            for hold in lock.holds.iter().filter(|hold| hold.release.is_none()) {
                held.push((self.held_ns(hold).unwrap_or(0), hold.taker, lock));
            }
            waits.extend(
                lock.waits
                    .iter()
                    .map(|wait| (self.wait_ns(wait), wait.waiter, lock)),
            );
            for refusal in &lock.refusals {
                match refused
                    .iter_mut()
                    .find(|(_, actor, on)| *actor == refusal.actor && std::ptr::eq(*on, lock))
                {
                    Some((count, ..)) => *count += 1,
                    None => refused.push((1, refusal.actor, lock)),
                }
            }
        }
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
        let lines: [(&str, Vec<String>); 4] = [
            (
                "orphans",
                orphans
                    .iter()
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
                held.iter()
                    .map(|&(ns, taker, lock)| {
                        let by = taker
                            .map_or(String::new(), |taker| format!(" by {}", self.actor(taker)));
                        format!("{}{by} for {}", name(lock), duration(ns))
                    })
                    .collect(),
            ),
            (
                "longest waits",
                waits
                    .iter()
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
                refused
                    .iter()
                    .map(|&(count, actor, lock)| {
                        let times = plural(count, "time", "times");
                        format!("{} {count} {times} on {}", self.actor(actor), name(lock))
                    })
                    .collect(),
            ),
        ];
        for (label, items) in lines {
            if items.is_empty() {
                continue;
            }
            let more = match items.len().saturating_sub(SUMMARY_ITEMS) {
                0 => String::new(),
                more => format!(" (and {more} more)"),
            };
            let shown: Vec<&str> = items
                .iter()
                .take(SUMMARY_ITEMS)
                .map(String::as_str)
                .collect();
            writeln!(out, "  {label}: {}{more}", shown.join("; "))?;
        }
        writeln!(out)
    }

    fn totals_text(&self, totals: &Totals) -> String {
        let mut parts = vec![format!(
            "held {} in {} {}",
            duration(totals.held_ns),
            totals.holds,
            plural(totals.holds, "hold", "holds")
        )];
        if totals.still_held > 0 {
            parts[0] += &format!(" ({} still held)", totals.still_held);
        }
        if let Some(longest) = totals.longest_orphan_ns {
            parts.push(format!(
                "{} outlived {} taker, the longest by {}",
                totals.orphans,
                plural(totals.orphans, "its", "their"),
                duration(longest)
            ));
        }
        if totals.waiters > 0 {
            let longest: Vec<String> = totals
                .longest_waits
                .iter()
                .map(|wait| {
                    format!(
                        "{} by pid {} ({})",
                        duration(wait.wait_ns),
                        wait.process.pid,
                        wait.process.comm
                    )
                })
                .collect();
            parts.push(format!(
                "{} {}, longest waits {}",
                totals.waiters,
                plural(totals.waiters, "waiter", "waiters"),
                longest.join(", ")
            ));
        }
        if totals.still_waiting > 0 {
            parts.push(format!("{} still waiting", totals.still_waiting));
        }
        if totals.refusals > 0 {
            parts.push(format!(
                "{} {}",
                totals.refusals,
                plural(totals.refusals, "refusal", "refusals")
            ));
        }
        parts.join("; ")
    }

    pub fn json(&self, lock: &Lock) -> LockJson<'_> {
        let key = &lock.key;
        LockJson {
            dev: self.names.get(key.dev),
            ino: key.ino,
            kind: key.kind,
            start: key.start,
            end: key.end,
            paths: lock
                .paths
                .iter()
                .map(|&path| self.names.get(path))
                .collect(),
            holds: lock
                .holds
                .iter()
                .map(|hold| HoldJson {
                    taker: hold.taker.map(|taker| self.proc(taker)),
                    mode: hold.mode,
                    acquired: hold.acquired.map(time),
                    acquire_logged: hold.acquire_logged,
                    found_held: hold.found_held.map(time),
                    wait_ns: hold.wait_ns,
                    taker_exit: hold.taker_exit.map(time),
                    orphaned: hold.orphaned,
                    holders: hold
                        .holders
                        .iter()
                        .map(|&holder| self.proc(holder))
                        .collect(),
                    released: hold.release.map(|release| time(release.at)),
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
                    since: time(wait.since),
                    until: wait.until().map(time),
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
                    at: time(refusal.at),
                    process: self.proc(refusal.actor),
                    errno: refusal.errno.map(|errno| self.names.get(errno)),
                })
                .collect(),
            totals: self.totals(lock),
            logs_end: time(self.end),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Proc<'a> {
    pub pid: u32,
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
    pub dev: &'a str,
    pub ino: u64,
    pub kind: LockKind,
    pub start: u64,
    pub end: Option<u64>,
    pub paths: Vec<&'a str>,
    pub holds: Vec<HoldJson<'a>>,
    pub waits: Vec<WaitJson<'a>>,
    pub refusals: Vec<RefusalJson<'a>>,
    pub totals: Totals<'a>,
    pub logs_end: String,
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
}

fn plural<'a>(count: usize, one: &'a str, many: &'a str) -> &'a str {
    if count == 1 { one } else { many }
}

/// RFC 3339, UTC, milliseconds: what `--at` and `--since` accept back.
pub fn time(at: Nanos) -> String {
    humantime::format_rfc3339_millis(system_time(at)).to_string()
}

/// Milliseconds from a second up, microseconds below.
pub fn duration(ns: u64) -> String {
    let rounded = if ns >= 1_000_000_000 {
        ns / 1_000_000 * 1_000_000
    } else {
        ns / 1_000 * 1_000
    };
    humantime::format_duration(Duration::from_nanos(rounded)).to_string()
}
