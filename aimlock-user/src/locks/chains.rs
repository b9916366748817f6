//! Wait chains: who waits for whom across the lock table, from the requests /proc/locks shows
//! blocked on each lock (its `->` lines) and the processes that hold that lock.
//!
//! A waiter is known by the pid the kernel recorded in its request: OFD requests record none
//! (-1), so their waiters cannot be placed in a chain.

use std::collections::{BTreeMap, BTreeSet};

use crate::lock_table::Lock;

/// Processes each waiting for a lock held by the next one: the first waits and nobody waits for
/// it; the last holds what the one before it waits for and waits for nothing, or, in a deadlock,
/// waits for a lock held by a process earlier in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub steps: Vec<Step>,
    /// The chain ends where it had been: its last holder waits for a lock held by the process
    /// of step `deadlock_from` (so the steps from there on wait for each other forever).
    pub deadlock_from: Option<usize>,
}

/// One process waiting for one lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub pid: u32,
    pub comm: Option<String>,
    /// The lock it waits for: its index in the table the chains were made from.
    pub lock: usize,
    /// The processes holding that lock.
    pub held_by: Vec<HeldBy>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HeldBy {
    pub pid: u32,
    pub comm: Option<String>,
}

/// The wait chains of a lock table, in the order of their first waiter's pid; cycles that no
/// other waiter leads into come last, each starting at its lowest pid.
pub fn find(locks: &[Lock]) -> Vec<Chain> {
    // The locks each process waits for (several threads may wait), and who holds each lock.
    let mut waits: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut comms: BTreeMap<u32, Option<String>> = BTreeMap::new();
    for (index, lock) in locks.iter().enumerate() {
        for waiter in &lock.waiters {
            if let Some(pid) = u32::try_from(waiter.pid).ok().filter(|&pid| pid > 0) {
                waits.entry(pid).or_default().push(index);
                comms.entry(pid).or_insert_with(|| waiter.comm.clone());
            }
        }
    }
    for list in waits.values_mut() {
        list.dedup();
    }
    let held_by = |index: usize| -> Vec<HeldBy> {
        let lock = &locks[index];
        let mut holders: Vec<HeldBy> = lock
            .holders
            .iter()
            .map(|holder| HeldBy {
                pid: holder.pid,
                comm: Some(holder.comm.clone()),
            })
            .collect();
        holders.dedup_by_key(|holder| holder.pid);
        if holders.is_empty()
            && let Some(pid) = u32::try_from(lock.pid).ok().filter(|&pid| pid > 0)
        {
            // No holder seen (hidden from this user): the taker the kernel recorded.
            holders.push(HeldBy {
                pid,
                comm: lock.command.clone(),
            });
        }
        holders
    };
    // The process a waiter's chain goes on with: the first holder of what it waits for that
    // waits itself. A process waiting for a lock it holds itself (through another open file
    // description) is left out: another of its threads may release it.
    let next = |pid: u32, held_by: &[HeldBy]| {
        held_by
            .iter()
            .map(|holder| holder.pid)
            .find(|&holder| holder != pid && waits.contains_key(&holder))
    };
    let waited_for: BTreeSet<u32> = waits
        .iter()
        .flat_map(|(&pid, locks)| {
            locks
                .iter()
                .flat_map(move |&index| held_by(index).into_iter().map(|h| h.pid))
                .filter(move |&holder| holder != pid)
                .collect::<Vec<_>>()
        })
        .collect();

    let mut chains = Vec::new();
    let mut placed: BTreeSet<u32> = BTreeSet::new();
    let first_waiters = waits.keys().filter(|pid| !waited_for.contains(pid));
    // Then the cycles nobody leads into, from what is left.
    let starts: Vec<u32> = first_waiters.copied().collect();
    for start in starts
        .into_iter()
        .chain(waits.keys().copied().collect::<Vec<_>>())
    {
        if placed.contains(&start) {
            continue;
        }
        let mut steps: Vec<Step> = Vec::new();
        let mut pid = start;
        let deadlock_from = loop {
            let lock = waits[&pid][0];
            let holders = held_by(lock);
            let following = next(pid, &holders);
            placed.insert(pid);
            steps.push(Step {
                pid,
                comm: comms[&pid].clone(),
                lock,
                held_by: holders,
            });
            match following {
                None => break None,
                Some(holder) => match steps.iter().position(|step| step.pid == holder) {
                    Some(index) => break Some(index),
                    None => pid = holder,
                },
            }
        };
        chains.push(Chain {
            steps,
            deadlock_from,
        });
    }
    chains
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        events::{LockKind, Mode},
        lock_table::{Waiter, example},
    };

    /// A flock lock on inode `ino` taken by `taker`, held by `holders`, with `waiters` queued.
    fn lock(ino: u64, taker: i32, holders: &[u32], waiters: &[i32]) -> Lock {
        Lock {
            ino,
            waiters: waiters
                .iter()
                .map(|&pid| Waiter {
                    pid,
                    comm: Some(format!("p{pid}")),
                    kind: LockKind::Flock,
                    mode: Mode::Write,
                    start: 0,
                    end: None,
                })
                .collect(),
            ..example(LockKind::Flock, Mode::Write, taker, holders)
        }
    }

    /// Each chain's (waiter, lock index) steps, and where its deadlock starts.
    type Shape = (Vec<(u32, u64)>, Option<usize>);

    fn shape(chains: &[Chain]) -> Vec<Shape> {
        chains
            .iter()
            .map(|chain| {
                (
                    chain
                        .steps
                        .iter()
                        .map(|step| (step.pid, step.lock as u64))
                        .collect(),
                    chain.deadlock_from,
                )
            })
            .collect()
    }

    #[test]
    fn a_chain_follows_waiters_to_the_holder_that_waits_for_nothing() {
        // 30 waits for lock 0, held by 20, which waits for lock 1, held by an orphan's holder
        // 11 (taker 10 gone), which waits for nothing. 40 also waits for lock 1.
        let locks = [lock(1, 20, &[20], &[30]), lock(2, 10, &[11], &[20, 40])];
        assert!(locks[1].orphan);
        let chains = find(&locks);
        assert_eq!(
            shape(&chains),
            [(vec![(30, 0), (20, 1)], None), (vec![(40, 1)], None)]
        );
        let holders: Vec<u32> = chains[0].steps[1]
            .held_by
            .iter()
            .map(|holder| holder.pid)
            .collect();
        assert_eq!(holders, [11]);
    }

    #[test]
    fn waiters_that_wait_for_each_other_are_a_deadlock() {
        // 10 holds lock 0 and waits for lock 1; 20 holds lock 1 and waits for lock 0; 30 waits
        // for lock 1 behind them.
        let locks = [lock(1, 10, &[10], &[20]), lock(2, 20, &[20], &[10, 30])];
        assert_eq!(
            shape(&find(&locks)),
            [(vec![(30, 1), (20, 0), (10, 1)], Some(1))]
        );
        // Without 30, the cycle alone, from its lowest pid.
        let locks = [lock(1, 10, &[10], &[20]), lock(2, 20, &[20], &[10])];
        assert_eq!(shape(&find(&locks)), [(vec![(10, 1), (20, 0)], Some(0))]);
    }

    #[test]
    fn ofd_waiters_and_a_process_waiting_on_itself_make_no_chain_step() {
        let locks = [lock(1, 10, &[10], &[-1, 10])];
        assert_eq!(shape(&find(&locks)), [(vec![(10, 0)], None)]);
        // A lock whose holders cannot be seen is held, as far as can be told, by its taker.
        let hidden = [lock(1, 50, &[], &[60])];
        let chains = find(&hidden);
        assert_eq!(chains[0].steps[0].held_by[0].pid, 50);
    }
}
