//! The inputs the tracker has not applied yet, in timestamp order (equal timestamps in arrival
//! order).
//!
//! The ring does not deliver them in that order: in a burst on two CPUs, each CPU's batch of
//! records goes to the ring whole, so the records of one batch belong among those of the other.
//! In one ordered queue each would move those after it: 5.2 GB moved for 6 million records
//! taken at 2 million a second on two threads, up to 40% of the tracer's time. Here they go in
//! runs instead, each in order: an input joins the run that ends latest at or before it, which
//! for the CPUs' batches is the run of its own CPU's records, and the first input is the first
//! of one of the runs.

use std::collections::VecDeque;

/// Runs kept at most; an input that no run can take after that goes among those of the first.
const RUNS: usize = 16;

pub struct Ordered<T> {
    /// None empty.
    runs: Vec<Run<T>>,
    /// Runs emptied, to be filled again rather than allocated.
    spare: Vec<Run<T>>,
    arrivals: u64,
}

/// Items in order of their timestamps and arrival numbers, kept apart from them: an item is
/// moved once in and once out.
struct Run<T> {
    keys: VecDeque<(u64, u64)>,
    items: VecDeque<T>,
}

impl<T> Run<T> {
    fn push(&mut self, key: (u64, u64), item: T) {
        self.keys.push_back(key);
        self.items.push_back(item);
    }

    fn last_ts(&self) -> Option<u64> {
        self.keys.back().map(|&(ts, _)| ts)
    }
}

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Self {
            runs: Vec::new(),
            spare: Vec::new(),
            arrivals: 0,
        }
    }
}

impl<T> Ordered<T> {
    /// Queues `item` after every item timestamped `ts` or earlier.
    pub fn push(&mut self, ts: u64, item: T) {
        let key = (ts, self.arrivals);
        self.arrivals += 1;
        let latest_before = (0..self.runs.len())
            .filter_map(|run| Some((self.runs[run].last_ts()?, run)))
            .filter(|&(last, _)| last <= ts)
            .max_by_key(|&(last, _)| last)
            .map(|(_, run)| run);
        match latest_before {
            Some(run) => self.runs[run].push(key, item),
            None if self.runs.len() < RUNS => {
                let mut run = self.spare.pop().unwrap_or_else(|| Run {
                    keys: VecDeque::new(),
                    items: VecDeque::new(),
                });
                run.push(key, item);
                self.runs.push(run);
            }
            None => {
                let run = &mut self.runs[0];
                let position = run
                    .keys
                    .iter()
                    .rposition(|&(queued, _)| queued <= ts)
                    .map_or(0, |before| before + 1);
                run.keys.insert(position, key);
                run.items.insert(position, item);
            }
        }
    }

    /// The run whose first item comes first.
    fn first_run(&self) -> Option<usize> {
        (0..self.runs.len()).min_by_key(|&run| self.runs[run].keys.front())
    }

    /// The first item and its timestamp.
    pub fn first(&self) -> Option<(u64, &T)> {
        let run = &self.runs[self.first_run()?];
        Some((run.keys.front()?.0, run.items.front()?))
    }

    pub fn pop_first(&mut self) -> Option<T> {
        let index = self.first_run()?;
        let run = &mut self.runs[index];
        run.keys.pop_front();
        let item = run.items.pop_front();
        if run.keys.is_empty() {
            self.spare.push(self.runs.swap_remove(index));
        }
        item
    }

    /// Drops the first item, where it lies.
    pub fn remove_first(&mut self) {
        let Some(index) = self.first_run() else {
            return;
        };
        let run = &mut self.runs[index];
        run.keys.pop_front();
        run.items.drain(..1);
        if run.keys.is_empty() {
            self.spare.push(self.runs.swap_remove(index));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items come out by timestamp, those of equal timestamps in the order they went in,
    /// whatever order they were pushed in and however pushes and pops alternate.
    #[test]
    fn items_come_out_in_timestamp_order_ties_in_arrival_order() {
        let mut ordered = Ordered::default();
        let mut expected = Vec::new();
        let mut out = Vec::new();
        // Two interleaved runs, as two CPUs' batches, with ties and pops in between.
        let mut arrival = 0;
        for round in 0..50u64 {
            for ts in [round * 10, round * 10 + 5, round * 10 + 5, round * 10 + 9] {
                ordered.push(ts, (ts, arrival));
                expected.push((ts, arrival));
                arrival += 1;
            }
            for ts in [round * 10 + 1, round * 10 + 5, round * 10 + 8] {
                ordered.push(ts, (ts, arrival));
                expected.push((ts, arrival));
                arrival += 1;
            }
            if round % 3 == 2 {
                // Whatever is older than the round's start is applied.
                while let Some((ts, _)) = ordered.first() {
                    if ts >= round * 10 {
                        break;
                    }
                    out.push(ordered.pop_first().unwrap());
                }
            }
        }
        while let Some(item) = ordered.pop_first() {
            out.push(item);
        }
        expected.sort_by_key(|&(ts, arrival)| (ts, arrival));
        assert_eq!(out, expected);
        assert_eq!(ordered.first(), None);
        assert!(ordered.runs.is_empty());
    }

    /// Against one queue kept in order by insertion, on pushes in no order at all (more runs
    /// than are kept) and pops and removals between them.
    #[test]
    fn any_order_of_pushes_and_pops_gives_what_one_ordered_queue_gives() {
        let mut ordered = Ordered::default();
        let mut model: VecDeque<(u64, u32)> = VecDeque::new();
        let mut random = 12345u64;
        let mut next = || {
            random = random
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            random >> 33
        };
        for arrival in 0..5000u32 {
            let ts = next() % 200;
            ordered.push(ts, (ts, arrival));
            let position = model
                .iter()
                .rposition(|&(queued, _)| queued <= ts)
                .map_or(0, |before| before + 1);
            model.insert(position, (ts, arrival));
            if next() % 3 == 0 {
                assert_eq!(
                    ordered.first().map(|(ts, &item)| (ts, item)),
                    model.front().map(|&item| (item.0, item))
                );
                if arrival % 2 == 0 {
                    assert_eq!(ordered.pop_first(), model.pop_front());
                } else {
                    ordered.remove_first();
                    model.pop_front();
                }
            }
        }
        while let Some(item) = model.pop_front() {
            assert_eq!(ordered.pop_first(), Some(item));
        }
        assert_eq!(ordered.pop_first(), None);
    }
}
