//! A hash table of small fixed-size slots (open addressing, linear probing) whose slot for a key
//! can be asked into the cache before it is looked at. A whole report looks up each line's
//! process in tables of hundreds of thousands of processes; between two look-ups the log's pages
//! and the lines kept have pushed the tables out of the cache, so that each look-up of a
//! std map waited for memory (a second of a 4.4 s report). Asked for a batch ahead, those waits
//! overlap.

use std::hash::{BuildHasher as _, Hash};

/// What a table's slot holds: a key and its value, or nothing.
pub trait Slot: Copy {
    type Key: Copy + Eq + Hash;
    /// A slot that holds nothing.
    const EMPTY: Self;
    /// Its key; None if it holds nothing.
    fn key(&self) -> Option<Self::Key>;
}

/// Slots a table starts with: a power of two.
const FIRST_SLOTS: usize = 1 << 10;

pub struct Table<S> {
    slots: Vec<S>,
    len: usize,
}

impl<S> std::fmt::Debug for Table<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("len", &self.len).finish()
    }
}

impl<S> Default for Table<S> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<S: Slot> Table<S> {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Where `key` is, or would be put, first looked for.
    fn home(&self, key: &S::Key) -> usize {
        let bits = self.slots.len().trailing_zeros();
        // Fibonacci hashing: the top bits of the product mix every bit of the hash.
        let hash = rustc_hash::FxBuildHasher
            .hash_one(key)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (hash >> (64 - bits)) as usize
    }

    /// Asks for the slot where `key` is first looked for to be brought into the cache.
    pub fn prefetch(&self, key: &S::Key) {
        if !self.slots.is_empty() {
            prefetch(&self.slots[self.home(key)]);
        }
    }

    pub fn get(&self, key: &S::Key) -> Option<&S> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut at = self.home(key);
        loop {
            let slot = &self.slots[at];
            match slot.key() {
                None => return None,
                Some(found) if found == *key => return Some(slot),
                Some(_) => at = (at + 1) & mask,
            }
        }
    }

    /// The slot of `key`, and whether it was already there; an empty one is filled by `new`.
    pub fn get_or_insert(&mut self, key: S::Key, new: impl FnOnce() -> S) -> (&mut S, bool) {
        // At most three quarters full: probes stay short.
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut at = self.home(&key);
        loop {
            match self.slots[at].key() {
                None => break,
                Some(found) if found == key => return (&mut self.slots[at], true),
                Some(_) => at = (at + 1) & mask,
            }
        }
        self.slots[at] = new();
        self.len += 1;
        (&mut self.slots[at], false)
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(FIRST_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![S::EMPTY; size]);
        let mask = size - 1;
        for slot in old {
            if let Some(key) = slot.key() {
                let mut at = self.home(&key);
                while self.slots[at].key().is_some() {
                    at = (at + 1) & mask;
                }
                self.slots[at] = slot;
            }
        }
    }

    /// The slots that hold something.
    pub fn slots(&self) -> impl Iterator<Item = &S> {
        self.slots.iter().filter(|slot| slot.key().is_some())
    }

    /// The slots that hold something.
    pub fn into_slots(self) -> impl Iterator<Item = S> {
        self.slots.into_iter().filter(|slot| slot.key().is_some())
    }
}

/// Asks for the memory of `value` to be brought into the cache.
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = (value as *const T).cast::<i8>();
        for offset in (0..size_of::<T>()).step_by(64) {
            // SAFETY: a prefetch reads nothing; the address is within `value`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Counted {
        key: u64,
        count: u32,
    }

    impl Slot for Counted {
        type Key = u64;
        const EMPTY: Self = Self {
            key: u64::MAX,
            count: 0,
        };
        fn key(&self) -> Option<u64> {
            (self.key != u64::MAX).then_some(self.key)
        }
    }

    /// As many keys as a std map counts, each with its count, through several growths and with
    /// keys that share their first slot.
    #[test]
    fn counts_what_a_std_map_counts() {
        let mut table = Table::<Counted>::default();
        let mut model = std::collections::HashMap::new();
        for step in 0..20_000u64 {
            let key = (step * 7919) % 5_003 * if step % 3 == 0 { 1 << 40 } else { 1 };
            table.prefetch(&key);
            let (slot, _) = table.get_or_insert(key, || Counted { key, count: 0 });
            slot.count += 1;
            *model.entry(key).or_insert(0u32) += 1;
        }
        assert_eq!(table.len(), model.len());
        for (key, count) in &model {
            assert_eq!(table.get(key).map(|slot| slot.count), Some(*count));
        }
        assert_eq!(table.get(&12_345_678), None);
        let mut counts: Vec<(u64, u32)> = table
            .into_slots()
            .map(|slot| (slot.key, slot.count))
            .collect();
        let mut expected: Vec<(u64, u32)> = model.into_iter().collect();
        counts.sort_unstable();
        expected.sort_unstable();
        assert_eq!(counts, expected);
    }
}
