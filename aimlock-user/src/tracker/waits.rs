//! Who waits on whom: which held locks keep a request waiting, by the kernel's conflict rules,
//! and the cycles the waits form (deadlocks the kernel only detects among POSIX locks).

use aimlock_common::FileName;
use rustc_hash::FxHashMap as HashMap;
use smallvec::SmallVec;

use super::{Actor, Held, LockId};
use crate::events::{LockKind, Mode};

/// What a lock call asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub lock: LockId,
    pub mode: Mode,
    pub start: i64,
    pub end: i64,
}

/// A process holding a lock that a request conflicts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocker {
    /// For an orphan, a process the kernel's table showed with an fd on its description (its
    /// gone taker when it showed none).
    pub holder: Actor,
    /// The lock has outlived its taker.
    pub orphan: bool,
}

pub type Blockers = SmallVec<[Blocker; 1]>;

/// One step of a deadlock: `actor` holds `holds`, which the previous step waits for, and waits
/// for `waits_for`, which the next step holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CycleStep {
    pub actor: Actor,
    pub holds: (LockId, Held),
    pub waits_for: Request,
    /// The file waited for, as the wait's record named it.
    pub file: FileName,
}

/// Whether `held`, a range of `id`, keeps `request` of process `pid` from being granted, as the
/// kernel judges it: flock locks conflict with flock locks on the whole file; POSIX and OFD
/// locks with POSIX and OFD locks whose range overlaps; unless both are shared, and never with
/// the requester's own lock. flock and POSIX/OFD locks ignore each other on Linux; leases
/// conflict with opens, not with locks.
pub fn conflicts(request: &Request, pid: u32, id: &LockId, held: &Held) -> bool {
    let asked = &request.lock;
    if (id.dev, id.ino) != (asked.dev, asked.ino)
        || id.owner == asked.owner
        || (id.generation != 0 && asked.generation != 0 && id.generation != asked.generation)
        || (request.mode == Mode::Read && held.mode == Mode::Read)
    {
        return false;
    }
    match (asked.kind, id.kind) {
        (LockKind::Flock, LockKind::Flock) => true,
        (LockKind::Posix | LockKind::Ofd, LockKind::Posix | LockKind::Ofd) => {
            // A process's POSIX locks never conflict with each other (a lock found in the
            // kernel's table has no owner the request could be compared with).
            let own = asked.kind == LockKind::Posix
                && id.kind == LockKind::Posix
                && held.taker.pid == pid;
            !own && held.start <= request.end && request.start <= held.end
        }
        _ => false,
    }
}

/// A wait between processes: `from` waits for a lock that `to` holds.
#[derive(Clone, Copy, Debug)]
pub struct Edge {
    pub from: u32,
    pub to: u32,
}

/// Cycles among the waits: each a list of indices into `edges`, in order around the cycle.
/// Every cycle closed by a back edge of a depth-first search is found: so at least one in every
/// group of processes that wait on each other.
pub fn cycles(edges: &[Edge]) -> Vec<Vec<usize>> {
    let mut leaving: HashMap<u32, Vec<usize>> = HashMap::default();
    for (index, edge) in edges.iter().enumerate() {
        leaving.entry(edge.from).or_default().push(index);
    }
    let mut starts: Vec<u32> = leaving.keys().copied().collect();
    starts.sort_unstable();

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Seen {
        OnPath,
        Done,
    }
    let mut seen: HashMap<u32, Seen> = HashMap::default();
    let mut found = Vec::new();
    for start in starts {
        if seen.contains_key(&start) {
            continue;
        }
        // The path being explored, with the next edge to try from each process on it, and
        // the edges that led from each to the next.
        let mut path: Vec<(u32, usize)> = vec![(start, 0)];
        let mut taken: Vec<usize> = Vec::new();
        seen.insert(start, Seen::OnPath);
        while let Some((node, next)) = path.last_mut() {
            let Some(&edge) = leaving.get(node).and_then(|out| out.get(*next)) else {
                seen.insert(*node, Seen::Done);
                path.pop();
                taken.pop();
                continue;
            };
            *next += 1;
            let to = edges[edge].to;
            match seen.get(&to) {
                None => {
                    seen.insert(to, Seen::OnPath);
                    path.push((to, 0));
                    taken.push(edge);
                }
                Some(Seen::OnPath) => {
                    let from = path
                        .iter()
                        .position(|(on_path, _)| *on_path == to)
                        .expect("a process on the path is on the path");
                    let mut cycle = taken[from..].to_vec();
                    cycle.push(edge);
                    found.push(cycle);
                }
                Some(Seen::Done) => {}
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges(pairs: &[(u32, u32)]) -> Vec<Edge> {
        pairs.iter().map(|&(from, to)| Edge { from, to }).collect()
    }

    #[test]
    fn a_cycle_is_found_once_in_its_order() {
        assert_eq!(cycles(&edges(&[(1, 2), (2, 1)])), [vec![0, 1]]);
        assert_eq!(cycles(&edges(&[(3, 1), (1, 2), (2, 3)])), [vec![1, 2, 0]]);
        // A process waiting for a lock it holds itself through another description.
        assert_eq!(cycles(&edges(&[(5, 5)])), [vec![0]]);
    }

    #[test]
    fn chains_and_shared_holders_are_no_cycle() {
        assert!(cycles(&edges(&[(1, 2), (2, 3), (4, 3), (5, 2)])).is_empty());
        assert!(cycles(&[]).is_empty());
    }

    #[test]
    fn a_cycle_reached_from_a_chain_is_found() {
        let found = cycles(&edges(&[(1, 2), (2, 3), (3, 4), (4, 2)]));
        assert_eq!(found, [vec![1, 2, 3]]);
    }
}
