//! How each process that may hold a lock came to reference open file descriptions: the forks,
//! execs and descriptors received over unix sockets of the processes the kernel follows (those
//! that took locks, and their descendants), as chains of [`Step`]s.
//!
//! A process's chain is how it came to be, oldest step first: copied from its parent's at a
//! fork, then extended by its own execs. A description received over a socket gets a chain of
//! its own: the sender's then (when the sender was seen sending it), the receipt, and the
//! receiver's execs since. The lineage of a lock's holder is the part of the chain from the
//! lock's taker on.

use rustc_hash::FxHashMap as HashMap;
use smallvec::SmallVec;

use super::Actor;

/// Steps a chain keeps: the most recent ones (a fork bomb's depth is not worth remembering).
const MAX_STEPS: usize = 16;

/// Descriptions sent and not yet received that are remembered at most.
const MAX_IN_FLIGHT: usize = 4096;

/// How a process came to reference a description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Inherited from its parent, which forked it.
    Fork,
    /// Kept across an exec (the descriptor had no close-on-exec).
    Exec,
    /// Received as SCM_RIGHTS over a unix socket.
    UnixSocket,
    /// The tracer could not see how.
    Unknown(Why),
}

/// Why a step is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// The lock and its holder were there before the tracer started.
    BeforeStart,
    /// The holder got the description in a way the tracer did not see.
    NotSeen,
}

/// One step of a lineage: `pid`, then named `comm`, got the description from `from` (its
/// parent for a fork, itself for an exec, the sender for a receipt; 0 when not known).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub pid: u32,
    pub comm: [u8; 16],
    pub via: Via,
    pub from: u32,
    /// CLOCK_MONOTONIC; `None` for an unknown step.
    pub at: Option<u64>,
}

/// A description received over a socket.
#[derive(Clone, Debug)]
struct Received {
    file: u64,
    /// The sender's chain then, and the receipt.
    chain: Vec<Step>,
    /// The length of the receiver's own chain then: its later steps (execs) count too.
    own_len: usize,
}

#[derive(Clone, Debug, Default)]
struct Process {
    chain: Vec<Step>,
    received: SmallVec<[Received; 1]>,
}

#[derive(Default)]
pub struct Lineages {
    processes: HashMap<u32, Process>,
    /// Descriptions sent by a followed process, with the sender and its chain then, until
    /// received.
    in_flight: HashMap<u64, (Actor, Vec<Step>)>,
}

impl Lineages {
    /// `pid` (named `comm`) started `child`.
    pub fn fork(&mut self, at: u64, pid: u32, comm: [u8; 16], child: u32) {
        let mut process = self.processes.get(&pid).cloned().unwrap_or_default();
        push_step(
            &mut process,
            Step {
                pid: child,
                comm,
                via: Via::Fork,
                from: pid,
                at: Some(at),
            },
        );
        self.processes.insert(child, process);
    }

    /// `pid` ran a new program, `comm`.
    pub fn exec(&mut self, at: u64, pid: u32, comm: [u8; 16]) {
        let process = self.processes.entry(pid).or_default();
        push_step(
            process,
            Step {
                pid,
                comm,
                via: Via::Exec,
                from: pid,
                at: Some(at),
            },
        );
    }

    /// `sender` sent descriptions `files`: whoever receives them got them from it.
    pub fn sent(&mut self, sender: Actor, files: &[u64]) {
        let chain = self
            .processes
            .get(&sender.pid)
            .map(|process| process.chain.clone())
            .unwrap_or_default();
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            // Descriptions sent and never received (their socket closed): forgotten in bulk.
            self.in_flight.clear();
        }
        for &file in files {
            self.in_flight.insert(file, (sender, chain.clone()));
        }
    }

    /// `pid` received descriptions `files`; returns who sent each (pid 0: the sending was not
    /// seen).
    pub fn received(
        &mut self,
        at: u64,
        pid: u32,
        comm: [u8; 16],
        files: &[u64],
    ) -> SmallVec<[Actor; 2]> {
        let mut senders = SmallVec::new();
        for &file in files {
            let (sender, mut chain) = self
                .in_flight
                .remove(&file)
                .unwrap_or_else(|| (Actor::process(0, [0; 16], 0), Vec::new()));
            chain.push(Step {
                pid,
                comm,
                via: Via::UnixSocket,
                from: sender.pid,
                at: Some(at),
            });
            let process = self.processes.entry(pid).or_default();
            let own_len = process.chain.len();
            process.received.retain(|received| received.file != file);
            process.received.push(Received {
                file,
                chain,
                own_len,
            });
            senders.push(sender);
        }
        senders
    }

    /// `pid` is gone: its chain is no longer needed (its children have copies). What it sent
    /// may still be in flight: a sender that exits at once is the pattern that leaves ghosts.
    pub fn exit(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    /// How `holder` came to reference the description `file`, on which `taker` took a lock at
    /// `since` (None: before the tracer started): the steps from the taker on. `None` when the
    /// tracer did not see it.
    pub fn of(&self, taker: u32, since: Option<u64>, holder: u32, file: u64) -> Option<Vec<Step>> {
        if holder == taker {
            return Some(Vec::new());
        }
        let process = self.processes.get(&holder)?;
        let after_lock = |step: &Step| step.at.zip(since).is_none_or(|(at, since)| at >= since);
        if let Some(received) = process.received.iter().find(|r| r.file == file) {
            // From the taker on, when the sender got it from the taker; else from the receipt.
            let chain = &received.chain;
            let from = chain
                .iter()
                .position(|step| step.from == taker && after_lock(step))
                .unwrap_or(chain.len() - 1);
            let mut steps = chain[from..].to_vec();
            steps.extend_from_slice(process.chain.get(received.own_len..).unwrap_or_default());
            return Some(steps);
        }
        let from = process
            .chain
            .iter()
            .position(|step| step.from == taker && after_lock(step))?;
        Some(process.chain[from..].to_vec())
    }

    #[cfg(test)]
    pub fn followed(&self) -> usize {
        self.processes.len()
    }
}

fn push_step(process: &mut Process, step: Step) {
    process.chain.push(step);
    if process.chain.len() > MAX_STEPS {
        let over = process.chain.len() - MAX_STEPS;
        process.chain.drain(..over);
        for received in &mut process.received {
            received.own_len = received.own_len.saturating_sub(over);
        }
    }
}

/// The steps of several holders' lineages, each step once, in time order (unknown steps last).
pub fn merged(lineages: impl IntoIterator<Item = Vec<Step>>) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for step in lineages.into_iter().flatten() {
        if !steps.contains(&step) {
            steps.push(step);
        }
    }
    steps.sort_by_key(|step| step.at.unwrap_or(u64::MAX));
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comm(name: &str) -> [u8; 16] {
        let mut comm = [0u8; 16];
        comm[..name.len()].copy_from_slice(name.as_bytes());
        comm
    }

    fn vias(steps: &[Step]) -> Vec<(u32, Via, u32)> {
        steps.iter().map(|s| (s.pid, s.via, s.from)).collect()
    }

    #[test]
    fn a_background_command_of_a_locked_shell_has_fork_exec_fork_exec() {
        let mut lineages = Lineages::default();
        // flock(1) 100 took the lock at 5, forked 101, which ran sh, which forked 102: sleep.
        lineages.fork(10, 100, comm("flock"), 101);
        lineages.exec(11, 101, comm("sh"));
        lineages.fork(12, 101, comm("sh"), 102);
        lineages.exec(13, 102, comm("sleep"));
        lineages.exit(101);
        let steps = lineages.of(100, Some(5), 102, 0xf11e).unwrap();
        assert_eq!(
            vias(&steps),
            [
                (101, Via::Fork, 100),
                (101, Via::Exec, 101),
                (102, Via::Fork, 101),
                (102, Via::Exec, 102)
            ]
        );
        assert_eq!(steps[3].comm, comm("sleep"));
        assert_eq!(lineages.of(100, Some(5), 999, 0xf11e), None);
    }

    #[test]
    fn steps_before_the_lock_was_taken_are_not_part_of_its_lineage() {
        let mut lineages = Lineages::default();
        // 50 forked 100 (which then took a lock at 20) and 100 forked 101 after.
        lineages.fork(10, 50, comm("sh"), 100);
        lineages.exec(11, 100, comm("taker"));
        lineages.fork(30, 100, comm("taker"), 101);
        let steps = lineages.of(100, Some(20), 101, 1).unwrap();
        assert_eq!(vias(&steps), [(101, Via::Fork, 100)]);
    }

    #[test]
    fn a_received_description_carries_the_senders_lineage_and_later_execs() {
        let mut lineages = Lineages::default();
        lineages.fork(10, 100, comm("taker"), 101);
        lineages.sent(Actor::process(101, comm("taker"), 0), &[0xd1]);
        // The sender exits before the receiver gets it.
        lineages.exit(101);
        lineages.received(20, 300, comm("server"), &[0xd1]);
        lineages.exec(21, 300, comm("worker"));
        let steps = lineages.of(100, Some(5), 300, 0xd1).unwrap();
        assert_eq!(
            vias(&steps),
            [
                (101, Via::Fork, 100),
                (300, Via::UnixSocket, 101),
                (300, Via::Exec, 300)
            ]
        );
        // Received from a sender the tracer did not see: the receipt alone.
        lineages.received(30, 400, comm("other"), &[0xd2]);
        let steps = lineages.of(100, Some(5), 400, 0xd2).unwrap();
        assert_eq!(vias(&steps), [(400, Via::UnixSocket, 0)]);
    }

    #[test]
    fn chains_keep_their_latest_steps_and_exits_forget_processes() {
        let mut lineages = Lineages::default();
        for pid in 1..40 {
            lineages.fork(u64::from(pid), pid, comm("sh"), pid + 1);
            lineages.exit(pid);
        }
        assert_eq!(lineages.followed(), 1);
        let steps = lineages.of(30, None, 40, 1).unwrap();
        assert_eq!(steps.len(), 10);
    }

    #[test]
    fn merged_lineages_name_each_step_once_in_time_order() {
        let step = |pid, at| Step {
            pid,
            comm: comm("x"),
            via: Via::Fork,
            from: 1,
            at,
        };
        let merged = merged([
            vec![step(2, Some(5)), step(3, Some(7))],
            vec![step(2, Some(5)), step(4, None), step(5, Some(6))],
        ]);
        let pids: Vec<u32> = merged.iter().map(|s| s.pid).collect();
        assert_eq!(pids, [2, 5, 3, 4]);
    }
}
