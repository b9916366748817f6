//! What the tracer counts for `--metrics` (Prometheus) and `--otlp` (OpenTelemetry metrics):
//! one set of metric families, rendered by each exporter.
//!
//! The trace loop counts into plain integers and copies them, once per batch, into the
//! snapshot the exporters read. Labels come only from bounded sets (event type, lock kind,
//! mode, release reason, sink): never a path or a pid, which would make a new series for every
//! file and every process (docs/service.md says more).

pub mod prometheus;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    events::{EventKind, EventLine, LockKind, Mode, ReleaseReason},
    procfs,
};

pub use prometheus::{parse_listen_address, serve};

/// Event types, in the order of `Counts::events`.
const EVENT_KINDS: [EventKind; 11] = [
    EventKind::Start,
    EventKind::Stop,
    EventKind::Acquire,
    EventKind::Wait,
    EventKind::Release,
    EventKind::Fail,
    EventKind::Exit,
    EventKind::Orphan,
    EventKind::OrphanEnd,
    EventKind::Held,
    EventKind::Deadlock,
];

const LOCK_KINDS: [LockKind; 4] = [
    LockKind::Flock,
    LockKind::Posix,
    LockKind::Ofd,
    LockKind::Lease,
];

const MODES: [Mode; 3] = Mode::ALL;

const REASONS: [ReleaseReason; 5] = ReleaseReason::ALL;

/// Upper bounds of the wait and hold histograms' buckets: in nanoseconds, as Prometheus
/// writes them, and in seconds. A last bucket, +Inf, follows.
pub const BUCKETS: [(u64, &str, f64); 9] = [
    (100_000, "0.0001", 0.0001),
    (1_000_000, "0.001", 0.001),
    (10_000_000, "0.01", 0.01),
    (100_000_000, "0.1", 0.1),
    (1_000_000_000, "1", 1.0),
    (10_000_000_000, "10", 10.0),
    (60_000_000_000, "60", 60.0),
    (300_000_000_000, "300", 300.0),
    (3_600_000_000_000, "3600", 3600.0),
];

/// How often the kernel's drop counters are read for the metrics (a syscall per CPU).
const LOST_READ_INTERVAL: Duration = Duration::from_millis(250);

/// Durations counted into `BUCKETS`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative), the last one being +Inf.
    pub buckets: [u64; BUCKETS.len() + 1],
    pub sum_ns: u64,
}

impl Histogram {
    fn observe(&mut self, ns: u64) {
        let bucket = BUCKETS
            .iter()
            .position(|(bound, _, _)| ns <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Counts {
    events: [u64; EVENT_KINDS.len()],
    orphans_held: u64,
    orphans: [u64; LOCK_KINDS.len()],
    waits: [Histogram; LOCK_KINDS.len()],
    holds: [Histogram; LOCK_KINDS.len()],
    refusals: [[u64; MODES.len()]; LOCK_KINDS.len()],
    releases: [[u64; REASONS.len()]; LOCK_KINDS.len()],
    records: u64,
    lost: u64,
    /// Lines each sink could not write, by sink name.
    unwritten: Vec<(String, u64)>,
}

/// The counts as the exporters last saw them published.
pub type Published = Arc<Mutex<Counts>>;

/// The trace loop's side: counts what is written and publishes it to the exporters.
pub struct Recorder {
    counts: Counts,
    shared: Published,
    lost_read_at: Option<Instant>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            counts: Counts::default(),
            shared: Arc::default(),
            lost_read_at: None,
        }
    }

    /// What the exporters read.
    pub fn published(&self) -> Published {
        Arc::clone(&self.shared)
    }

    pub fn observe(&mut self, event: &EventLine) {
        let Some(kind) = event.event else { return };
        if kind == EventKind::Summary {
            self.observe_summary(event);
            return;
        }
        if let Some(index) = EVENT_KINDS.iter().position(|known| *known == kind) {
            self.counts.events[index] += 1;
        }
        let lock = event
            .kind
            .and_then(|lock| LOCK_KINDS.iter().position(|known| *known == lock));
        let Some(lock) = lock else {
            return;
        };
        let counts = &mut self.counts;
        match kind {
            EventKind::Acquire => {
                if let Some(wait_ns) = event.wait_ns {
                    counts.waits[lock].observe(wait_ns);
                }
            }
            EventKind::Release => {
                if let Some(held_ns) = event.held_ns {
                    counts.holds[lock].observe(held_ns);
                }
                if let Some(reason) = event.reason.and_then(|reason| index_of(&REASONS, reason)) {
                    counts.releases[lock][reason] += 1;
                }
            }
            EventKind::Fail => {
                if let Some(mode) = event.mode.and_then(|mode| index_of(&MODES, mode)) {
                    counts.refusals[lock][mode] += 1;
                }
            }
            EventKind::Orphan => {
                counts.orphans_held += 1;
                counts.orphans[lock] += 1;
            }
            EventKind::OrphanEnd => {
                counts.orphans_held = counts.orphans_held.saturating_sub(1);
            }
            _ => {}
        }
    }

    /// A summary's holds, as their acquires and releases would have been counted: each was
    /// shorter than the first hold bucket's bound. (A summary counts releases: where a POSIX
    /// acquire merged into a range already held, or a range was released in pieces, its
    /// acquires were fewer or more.)
    fn observe_summary(&mut self, summary: &EventLine) {
        let (Some(holds), Some(lock)) = (
            summary.holds,
            summary.kind.and_then(|lock| index_of(&LOCK_KINDS, lock)),
        ) else {
            return;
        };
        let counts = &mut self.counts;
        for kind in [EventKind::Acquire, EventKind::Release] {
            if let Some(index) = index_of(&EVENT_KINDS, kind) {
                counts.events[index] += holds;
            }
        }
        let hold = &mut counts.holds[lock];
        hold.buckets[0] += holds;
        hold.sum_ns = hold.sum_ns.saturating_add(summary.held_ns.unwrap_or(0));
        if let Some(unlock) = index_of(&REASONS, ReleaseReason::Unlock) {
            counts.releases[lock][unlock] += holds;
        }
    }

    pub fn count_records(&mut self, records: u64, lost: impl FnOnce() -> Option<u64>) {
        self.counts.records = records;
        let now = Instant::now();
        if self
            .lost_read_at
            .is_none_or(|at| now.duration_since(at) >= LOST_READ_INTERVAL)
        {
            self.lost_read_at = Some(now);
            if let Some(lost) = lost() {
                self.counts.lost = lost;
            }
        }
    }

    /// Makes the counts so far, with each sink's unwritten lines, what the exporters read.
    pub fn publish<'a>(&mut self, unwritten: impl Iterator<Item = (&'a str, u64)>) {
        for (index, (name, lines)) in unwritten.enumerate() {
            match self.counts.unwritten.get_mut(index) {
                Some(entry) => entry.1 = lines,
                None => self.counts.unwritten.push((name.to_owned(), lines)),
            }
        }
        if let Ok(mut shared) = self.shared.lock() {
            shared.clone_from(&self.counts);
        }
    }
}

fn index_of<T: PartialEq>(set: &[T], value: T) -> Option<usize> {
    set.iter().position(|known| *known == value)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyType {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Number(u64),
    Histogram(Histogram),
}

impl PartialEq for Histogram {
    fn eq(&self, other: &Self) -> bool {
        self.buckets == other.buckets && self.sum_ns == other.sum_ns
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: Value,
}

/// One metric, with every labelled series it has.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub family_type: FamilyType,
    /// UCUM, as OTLP carries it: "s", or "1" for counts.
    pub unit: &'static str,
    pub samples: Vec<Sample>,
}

impl Family {
    fn new(name: &'static str, family_type: FamilyType, help: &'static str) -> Self {
        Self {
            name,
            help,
            family_type,
            unit: if family_type == FamilyType::Histogram {
                "s"
            } else {
                "1"
            },
            samples: Vec::new(),
        }
    }

    fn sample(mut self, labels: Vec<(&'static str, String)>, value: Value) -> Self {
        self.samples.push(Sample { labels, value });
        self
    }

    fn number(self, labels: Vec<(&'static str, String)>, value: u64) -> Self {
        self.sample(labels, Value::Number(value))
    }
}

fn kind_label(kind: LockKind) -> (&'static str, String) {
    ("kind", kind.name().to_owned())
}

impl Counts {
    /// Every metric, with `locks_held` (by kind, in `LOCK_KINDS` order) read from /proc/locks.
    pub fn families(&self, locks_held: &[u64; 4]) -> Vec<Family> {
        use FamilyType::{Counter, Gauge, Histogram as Hist};
        let mut events = Family::new(
            "aimlock_events_total",
            Counter,
            "Events the tracer wrote, by event type.",
        );
        for (kind, count) in EVENT_KINDS.iter().zip(self.events) {
            events = events.number(vec![("event", kind.name().to_owned())], count);
        }
        let by_kind = |family: Family, values: &[u64; 4]| {
            LOCK_KINDS
                .iter()
                .zip(values)
                .fold(family, |family, (kind, value)| {
                    family.number(vec![kind_label(*kind)], *value)
                })
        };
        let histograms = |family: Family, values: &[Histogram; 4]| {
            LOCK_KINDS
                .iter()
                .zip(values)
                .fold(family, |family, (kind, value)| {
                    family.sample(vec![kind_label(*kind)], Value::Histogram(*value))
                })
        };
        let mut refusals = Family::new(
            "aimlock_refusals_total",
            Counter,
            "Lock requests refused or abandoned (fail events), by lock kind and mode.",
        );
        let mut releases = Family::new(
            "aimlock_releases_total",
            Counter,
            "Locks released, by lock kind and reason.",
        );
        for (kind_index, kind) in LOCK_KINDS.iter().enumerate() {
            for (mode_index, mode) in MODES.iter().enumerate() {
                refusals = refusals.number(
                    vec![kind_label(*kind), ("mode", mode.name().to_owned())],
                    self.refusals[kind_index][mode_index],
                );
            }
            for (reason_index, reason) in REASONS.iter().enumerate() {
                releases = releases.number(
                    vec![kind_label(*kind), ("reason", reason.name().to_owned())],
                    self.releases[kind_index][reason_index],
                );
            }
        }
        let mut unwritten = Family::new(
            "aimlock_unwritten_lines_total",
            Counter,
            "Lines a sink could not write (a full disk, a closed pipe, a journal or collector \
             that is gone).",
        );
        for (sink, lines) in &self.unwritten {
            unwritten = unwritten.number(vec![("sink", sink.clone())], *lines);
        }
        vec![
            events,
            by_kind(
                Family::new(
                    "aimlock_locks_held",
                    Gauge,
                    "Locks held now, by kind, from /proc/locks.",
                ),
                locks_held,
            ),
            Family::new(
                "aimlock_orphans_held",
                Gauge,
                "Orphaned locks (they outlived their taker) still held.",
            )
            .number(Vec::new(), self.orphans_held),
            by_kind(
                Family::new(
                    "aimlock_orphans_total",
                    Counter,
                    "Locks that outlived the process that took them, by kind.",
                ),
                &self.orphans,
            ),
            histograms(
                Family::new(
                    "aimlock_lock_wait_seconds",
                    Hist,
                    "Time blocked callers waited before they got their lock, by kind.",
                ),
                &self.waits,
            ),
            histograms(
                Family::new(
                    "aimlock_lock_hold_seconds",
                    Hist,
                    "Time locks were held, from their grant to their release, by kind.",
                ),
                &self.holds,
            ),
            refusals,
            releases,
            Family::new(
                "aimlock_records_total",
                Counter,
                "Records received from the kernel.",
            )
            .number(Vec::new(), self.records),
            Family::new(
                "aimlock_lost_records_total",
                Counter,
                "Records the kernel could not deliver because the ring was full.",
            )
            .number(Vec::new(), self.lost),
            unwritten,
        ]
    }
}

/// Locks held now by kind (flock, posix, ofd, lease), from /proc/locks: every lock on the
/// system, whatever the trace's filters. Blocked requests are waiters, not locks. Slow on a
/// long table: callers run it on tokio's blocking pool.
pub fn locks_held() -> [u64; 4] {
    let mut held = [0; 4];
    let Ok(table) = procfs::proc_locks() else {
        return held;
    };
    for listed in &table.locks {
        if let Some(kind) = index_of(&LOCK_KINDS, listed.lock.kind) {
            held[kind] += 1;
        }
    }
    held
}

/// The published counts now, with the locks held read off the ring's thread.
pub async fn snapshot(published: &Published) -> Vec<Family> {
    let counts = published
        .lock()
        .map(|counts| counts.clone())
        .unwrap_or_default();
    let held = tokio::task::spawn_blocking(locks_held)
        .await
        .unwrap_or_default();
    counts.families(&held)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(event: EventKind, kind: LockKind) -> EventLine {
        EventLine {
            event: Some(event),
            kind: Some(kind),
            ..Default::default()
        }
    }

    #[test]
    fn events_fill_the_families_by_bounded_labels() {
        let mut recorder = Recorder::new();
        recorder.observe(&EventLine {
            wait_ns: Some(300_000_000),
            ..line(EventKind::Acquire, LockKind::Ofd)
        });
        recorder.observe(&EventLine {
            held_ns: Some(2_000_000_000),
            reason: Some(ReleaseReason::Exit),
            ..line(EventKind::Release, LockKind::Flock)
        });
        recorder.observe(&EventLine {
            mode: Some(Mode::Write),
            ..line(EventKind::Fail, LockKind::Posix)
        });
        recorder.observe(&line(EventKind::Orphan, LockKind::Flock));
        // 1000 short holds: 1000 acquires and unlocks, each in the first hold bucket.
        recorder.observe(&EventLine {
            holds: Some(1000),
            held_ns: Some(5_000_000),
            longest_ns: Some(90_000),
            ..line(EventKind::Summary, LockKind::Flock)
        });
        let families = recorder.counts.families(&[0; 4]);
        let family = |name: &str| families.iter().find(|f| f.name == name).unwrap();
        let with = |name: &str, labels: &[(&str, &str)]| {
            family(name)
                .samples
                .iter()
                .find(|sample| {
                    sample.labels.len() == labels.len()
                        && labels.iter().all(|(key, value)| {
                            sample.labels.iter().any(|(k, v)| k == key && v == value)
                        })
                })
                .map(|sample| sample.value.clone())
                .unwrap()
        };
        let Value::Histogram(waits) = with("aimlock_lock_wait_seconds", &[("kind", "ofd")]) else {
            panic!("not a histogram")
        };
        assert_eq!(waits.count(), 1);
        assert_eq!(waits.buckets[4], 1, "0.3 s falls in the 1 s bucket");
        let Value::Histogram(holds) = with("aimlock_lock_hold_seconds", &[("kind", "flock")])
        else {
            panic!("not a histogram")
        };
        assert_eq!(holds.buckets[5], 1, "2 s falls in the 10 s bucket");
        assert_eq!((holds.buckets[0], holds.count()), (1000, 1001));
        assert_eq!(holds.sum_ns, 2_005_000_000);
        assert_eq!(
            with("aimlock_events_total", &[("event", "acquire")]),
            Value::Number(1001)
        );
        assert_eq!(
            with("aimlock_events_total", &[("event", "release")]),
            Value::Number(1001)
        );
        assert_eq!(
            with(
                "aimlock_releases_total",
                &[("kind", "flock"), ("reason", "unlock")]
            ),
            Value::Number(1000)
        );
        assert_eq!(
            with(
                "aimlock_releases_total",
                &[("kind", "flock"), ("reason", "exit")]
            ),
            Value::Number(1)
        );
        assert_eq!(
            with(
                "aimlock_refusals_total",
                &[("kind", "posix"), ("mode", "write")]
            ),
            Value::Number(1)
        );
        assert_eq!(with("aimlock_orphans_held", &[]), Value::Number(1));
        assert_eq!(
            with("aimlock_orphans_total", &[("kind", "flock")]),
            Value::Number(1)
        );
        for family in &families {
            for sample in &family.samples {
                for (label, _) in &sample.labels {
                    assert!(
                        ["event", "kind", "mode", "reason", "sink"].contains(label),
                        "{} has label {label}",
                        family.name
                    );
                }
            }
        }
    }
}
