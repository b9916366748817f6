//! What the lines tell of the processes they name, gathered over every line a query keeps: a
//! mention without a start time or a pid in its namespace gets the one the process's other lines
//! gave, and a pid that named more than one process is told with its start time.

use rustc_hash::{FxHashMap, FxHashSet};

use super::{
    leave_out_own_lines,
    line::{LockKey, Name},
    scan::{LockLines, Scan},
    stored::Stored,
    table::{Slot, Table},
};

/// What the lines tell of the processes, gathered in one walk over every line kept.
#[derive(Debug, Default)]
pub(super) struct Processes {
    /// Each pid on each host that a line gave a start time: one small entry while every such
    /// line named one process (one command and start time), which is most pids.
    pids: Table<PidOnHost>,
    /// Each command of a pid on a host whose lines named more than one (command, start time):
    /// its start time, if its lines gave only one. Not every line about a process carries its
    /// start time (an orphan line names a taker that had exited before the tracer could read
    /// it): a mention without one gets the one its pid and command were given.
    by_command: Table<CommandOfPid>,
    /// Not every line about a process carries its `ns_pid` (an orphan line names a taker that
    /// has exited): each mention of the process gets the one any line gave.
    ns_pids: FxHashMap<(Name, u32, Name), u32>,
    /// Mentions with a start time not noted yet: they are noted a batch at a time, the slots of
    /// each asked for a few mentions ahead.
    waiting: Vec<Mention>,
    /// The latest mention: a process's lines mostly follow one another, and noting a mention
    /// again changes nothing.
    latest: Option<Mention>,
}

/// Mentions noted at a time.
const MENTIONS_PER_BATCH: usize = 64;
/// How many mentions ahead their slots are asked for.
const MENTIONS_AHEAD: usize = 8;

/// A line's mention of a process that gave its start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mention {
    host: Name,
    pid: u32,
    comm: Name,
    start: u64,
}

/// A host's name and a pid, in one word: the tables' key.
fn host_pid(host: Name, pid: u32) -> u64 {
    ((host.index() as u64) << 32) | u64::from(pid)
}

/// A pid on a host: the first start time its lines gave, and, while every line that gave one
/// named it with one command and that start time, the command (`PER_COMMAND` past that: see
/// [`Processes::by_command`]); whether it named more than one process.
#[derive(Clone, Copy, Debug)]
struct PidOnHost {
    host_pid: u64,
    start: u64,
    only: Name,
    reused: bool,
}

/// No name: a `PidOnHost`'s commands are in [`Processes::by_command`].
const PER_COMMAND: Name = Name::from_index(u32::MAX);

impl Slot for PidOnHost {
    type Key = u64;
    const EMPTY: Self = Self {
        host_pid: u64::MAX,
        start: 0,
        only: PER_COMMAND,
        reused: false,
    };
    fn key(&self) -> Option<u64> {
        (self.host_pid != u64::MAX).then_some(self.host_pid)
    }
}

/// A command of a pid on a host: its start time, unless more than one process had both.
#[derive(Clone, Copy, Debug)]
struct CommandOfPid {
    host_pid: u64,
    comm: Name,
    ambiguous: bool,
    start: u64,
}

impl CommandOfPid {
    fn start(&self) -> Option<u64> {
        (!self.ambiguous).then_some(self.start)
    }
}

impl Slot for CommandOfPid {
    type Key = (u64, Name);
    const EMPTY: Self = Self {
        host_pid: u64::MAX,
        comm: Name::from_index(0),
        ambiguous: false,
        start: 0,
    };
    fn key(&self) -> Option<(u64, Name)> {
        (self.host_pid != u64::MAX).then_some((self.host_pid, self.comm))
    }
}

impl Processes {
    /// Gathered by each shard of its own lines, without those of aimlock's own locks (`own`:
    /// its command name), then put together; with whether any line names each of `pids`.
    pub(super) fn of(scan: &Scan, own: Option<Name>, pids: &[u32]) -> (Self, Vec<bool>) {
        let asked = pids.to_vec();
        let gathered = scan.shards.each(move |_, shard| {
            let mut processes = Self::default();
            let mut named = vec![false; asked.len()];
            shard.visit(|key, lines| {
                if let Some(own) = own {
                    leave_out_own_lines(own, lines);
                }
                for line in lines.records.iter() {
                    processes.add_line(key.host, line);
                    for (named, &pid) in named.iter_mut().zip(&asked) {
                        *named = *named || line.actors().any(|actor| actor.pid == pid);
                    }
                }
            });
            let written = shard.written();
            for (named, pid) in named.iter_mut().zip(&asked) {
                *named = *named || written.pids.contains(pid);
            }
            (processes.and(written.processes), named)
        });
        let mut all = Self::default();
        let mut named = vec![false; pids.len()];
        for (processes, shard_named) in gathered {
            all = all.and(processes);
            for (named, shard_named) in named.iter_mut().zip(shard_named) {
                *named |= shard_named;
            }
        }
        (all, named)
    }

    /// What a lock line tells; `host`: its lock's.
    pub(super) fn add_line(&mut self, host: Name, line: &Stored) {
        for actor in line.actors() {
            if let Some(ns_pid) = actor.ns_pid {
                self.ns_pids.insert((host, actor.pid, actor.comm), ns_pid);
            }
            if let Some(start) = actor.start_time {
                self.note_start(Mention {
                    host,
                    pid: actor.pid,
                    comm: actor.comm,
                    start,
                });
            }
        }
    }

    /// That a line named a process with its start time: noted with the next batch.
    fn note_start(&mut self, mention: Mention) {
        if self.latest == Some(mention) {
            return;
        }
        self.latest = Some(mention);
        self.waiting.push(mention);
        if self.waiting.len() == MENTIONS_PER_BATCH {
            self.note_waiting();
        }
    }

    fn note_waiting(&mut self) {
        let mut waiting = std::mem::take(&mut self.waiting);
        for (index, mention) in waiting.iter().enumerate() {
            if let Some(ahead) = waiting.get(index + MENTIONS_AHEAD) {
                let key = host_pid(ahead.host, ahead.pid);
                self.pids.prefetch(&key);
                self.by_command.prefetch(&(key, ahead.comm));
            }
            self.note(*mention);
        }
        waiting.clear();
        self.waiting = waiting;
    }

    fn note(
        &mut self,
        Mention {
            host,
            pid,
            comm,
            start,
        }: Mention,
    ) {
        let key = host_pid(host, pid);
        let (known, already) = self.pids.get_or_insert(key, || PidOnHost {
            host_pid: key,
            start,
            only: comm,
            reused: false,
        });
        if !already {
            return;
        }
        if known.start != start {
            known.reused = true;
        }
        if known.only == PER_COMMAND {
            note_by_command(&mut self.by_command, key, comm, Some(start));
        } else if known.only != comm || known.start != start {
            // A second process, or a second command: per command from now on.
            let only = std::mem::replace(&mut known.only, PER_COMMAND);
            note_by_command(&mut self.by_command, key, only, Some(known.start));
            note_by_command(&mut self.by_command, key, comm, Some(start));
        }
    }

    /// What two shards' lines tell together: the fewer processes go into the tables of the
    /// more (a copy of the larger, beside it, was the peak of a query's memory), each `ns_pid`
    /// of `self` kept over `other`'s.
    pub(super) fn and(mut self, mut other: Self) -> Self {
        self.note_waiting();
        other.note_waiting();
        let size = |processes: &Self| processes.pids.len() + processes.ns_pids.len();
        let (mut more, fewer, fewer_first) = if size(&self) >= size(&other) {
            (self, other, false)
        } else {
            (other, self, true)
        };
        for (process, ns_pid) in fewer.ns_pids {
            if fewer_first {
                more.ns_pids.insert(process, ns_pid);
            } else {
                more.ns_pids.entry(process).or_insert(ns_pid);
            }
        }
        for theirs in fewer.pids.into_slots() {
            let key = theirs.host_pid;
            let (ours, already) = more.pids.get_or_insert(key, || theirs);
            if !already {
                // Its commands, if it has them apart, come with the others' below.
                continue;
            }
            // Which of two start times a pid keeps does not matter: it is then reused.
            if ours.start != theirs.start || theirs.reused {
                ours.reused = true;
            }
            if ours.start == theirs.start && ours.only != PER_COMMAND && ours.only == theirs.only {
                continue;
            }
            let only = std::mem::replace(&mut ours.only, PER_COMMAND);
            if only != PER_COMMAND {
                note_by_command(&mut more.by_command, key, only, Some(ours.start));
            }
            if theirs.only != PER_COMMAND {
                note_by_command(&mut more.by_command, key, theirs.only, Some(theirs.start));
            }
        }
        // Each of these pids is now per command on both sides.
        for theirs in fewer.by_command.into_slots() {
            note_by_command(
                &mut more.by_command,
                theirs.host_pid,
                theirs.comm,
                theirs.start(),
            );
        }
        more
    }

    /// Pids that named more than one process (by start time) on one host.
    pub(super) fn reused_pids(&self) -> FxHashSet<u32> {
        self.pids
            .slots()
            .filter(|known| known.reused)
            .map(|known| known.host_pid as u32)
            .collect()
    }

    /// The start time the lines gave this pid and command on this host, if only one.
    fn start_of(&self, host: Name, pid: u32, comm: Name) -> Option<u64> {
        let key = host_pid(host, pid);
        let known = self.pids.get(&key)?;
        if known.only == PER_COMMAND {
            self.by_command.get(&(key, comm))?.start()
        } else {
            (known.only == comm).then_some(known.start)
        }
    }

    /// Gives each mention of a process in a lock's lines the `ns_pid` and start time other
    /// lines gave it. (A start time shared is one the process's other lines gave: no pid is
    /// reused by it.)
    pub(super) fn share_with(&self, key: &LockKey, lines: &mut LockLines) {
        if self.ns_pids.is_empty() && self.pids.len() == 0 {
            return;
        }
        for record in lines.records.iter_mut() {
            self.share_with_line(key, record);
        }
    }

    /// As [`Processes::share_with`], for one line.
    pub(super) fn share_with_line(&self, key: &LockKey, line: &mut Stored) {
        line.update_actors(|actor| {
            let process = (key.host, actor.pid, actor.comm);
            actor.ns_pid = actor.ns_pid.or_else(|| self.ns_pids.get(&process).copied());
            if actor.start_time.is_none() {
                actor.start_time = self.start_of(key.host, actor.pid, actor.comm);
            }
        });
    }
}

/// Notes a start time (None: more than one) of a pid and command on a host.
fn note_by_command(
    by_command: &mut Table<CommandOfPid>,
    host_pid: u64,
    comm: Name,
    start: Option<u64>,
) {
    let (known, already) = by_command.get_or_insert((host_pid, comm), || CommandOfPid {
        host_pid,
        comm,
        ambiguous: start.is_none(),
        start: start.unwrap_or(0),
    });
    if already && known.start() != start {
        known.ambiguous = true;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    /// What the processes' tables tell (each mention's start time where it has none, the reused
    /// pids) is what one table per (host, pid, command) and one per (host, pid) tell, however the
    /// mentions are split between the two sides put together: on mentions that reuse few pids,
    /// commands and start times, so that every case meets.
    #[test]
    fn the_processes_tables_tell_what_one_entry_per_process_tells() {
        type Process = (Name, u32, Name);
        let mut random = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |below: u64| {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            random % below
        };
        for round in 0..300 {
            let mentions: Vec<(Process, u64)> = (0..next(150))
                .map(|_| {
                    let process = (
                        Name::from_index(next(2) as u32),
                        next(4) as u32,
                        Name::from_index(next(3) as u32 + 2),
                    );
                    (process, next(3))
                })
                .collect();
            // The model: per (host, pid, command) its start time while only one; per (host, pid)
            // every start time.
            let mut model: HashMap<Process, Option<u64>> = HashMap::new();
            let mut starts: HashMap<(Name, u32), HashSet<u64>> = HashMap::new();
            for &(process, start) in &mentions {
                model
                    .entry(process)
                    .and_modify(|seen| {
                        if *seen != Some(start) {
                            *seen = None;
                        }
                    })
                    .or_insert(Some(start));
                starts
                    .entry((process.0, process.1))
                    .or_default()
                    .insert(start);
            }
            let split = next(mentions.len() as u64 + 1) as usize;
            let side = |mentions: &[(Process, u64)]| {
                let mut processes = Processes::default();
                for &((host, pid, comm), start) in mentions {
                    processes.note_start(Mention {
                        host,
                        pid,
                        comm,
                        start,
                    });
                }
                processes
            };
            let (first, second) = (side(&mentions[..split]), side(&mentions[split..]));
            let together = if round % 2 == 0 {
                first.and(second)
            } else {
                second.and(first)
            };
            for host in 0..2 {
                for pid in 0..4 {
                    for comm in 2..5 {
                        let process = (Name::from_index(host), pid, Name::from_index(comm));
                        assert_eq!(
                            together.start_of(process.0, pid, process.2),
                            model.get(&process).copied().flatten(),
                            "{process:?} after {mentions:?} split at {split}"
                        );
                    }
                }
            }
            let reused: FxHashSet<u32> = starts
                .iter()
                .filter(|(_, starts)| starts.len() > 1)
                .map(|((_, pid), _)| *pid)
                .collect();
            assert_eq!(together.reused_pids(), reused, "{mentions:?}");
        }
    }
}
