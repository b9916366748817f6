//! When the tracer looks at the kernel's lock table, and what it keeps of it.
//!
//! A look is a scan of /proc (the [`lock_table`] model), run on a blocking thread so that the ring
//! keeps draining meanwhile. The tracker gets the time the scan began at once and the view when it
//! is done, and applies it in time order with the records. Looks are taken:
//! - once at start, to seed the table (`held` lines, orphans already there);
//! - after the kernel counted lost records, at most once a second;
//! - while locks whose taker has exited wait for the kernel's word (orphan or lost release),
//!   at most every 100 ms; and when a record cannot be tied to a lock found in an earlier look,
//!   at most once a second.
//!
//! While the ring overflows, every look waits a second after the last: a sustained overflow
//! costs one read of the table a second, whatever else calls for one. And a look waits at least
//! four times as long as the last one took, so that on a host with very many locks reading the
//! table never takes more than a fifth of a core.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rustc_hash::FxHashSet as HashSet;
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{
    clock::Clock,
    loader::Filters,
    lock_table::{self, Lock},
    tracker::{KernelView, ScanWanted, Tracker, ViewedLock},
};

const ORPHAN_LOOK_INTERVAL: Duration = Duration::from_millis(100);
const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);
/// A look waits at least this many times as long as the last one took.
const COST_FACTOR: u32 = 4;
/// How often the kernel's drop counter is read.
const LOSS_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Which of the kernel's locks the trace is about: the same filters the kernel programs apply,
/// judged on the lock's taker and holders.
struct Scope {
    pids: Vec<u32>,
    comms: Vec<String>,
    inodes: HashSet<(u32, u64)>,
}

impl Scope {
    fn covers(&self, lock: &Lock) -> bool {
        // The tracer's own lock on its output file is not the trace's business.
        let own = std::process::id();
        if u32::try_from(lock.pid) == Ok(own)
            || (!lock.holders.is_empty() && lock.holders.iter().all(|holder| holder.pid == own))
        {
            return false;
        }
        let pid_ok = self.pids.is_empty()
            || u32::try_from(lock.pid).is_ok_and(|pid| self.pids.contains(&pid))
            || lock
                .holders
                .iter()
                .any(|holder| self.pids.contains(&holder.pid));
        let comm_ok = self.comms.is_empty()
            || lock
                .command
                .as_ref()
                .is_some_and(|command| self.comms.contains(command))
            || lock
                .holders
                .iter()
                .any(|holder| self.comms.contains(&holder.comm));
        pid_ok && comm_ok
    }
}

/// The looks taken, the one under way, and the limits on how often.
pub struct KernelViews {
    scope: Arc<Scope>,
    under_way: Option<oneshot::Receiver<KernelView>>,
    last_look: Option<Instant>,
    /// How long the last look took, from its start to its view.
    last_cost: Duration,
    last_loss_check: Option<Instant>,
    lost_seen: u64,
    lost_pending: bool,
    /// When the drop counter last rose.
    last_loss: Option<Instant>,
    /// The files traced changed since the last look: locks taken on a new one before the kernel
    /// let its records in are found by the next.
    rescoped: bool,
    /// Looks taken so far.
    pub taken: u64,
}

impl KernelViews {
    pub fn new(filters: &Filters) -> Self {
        Self {
            scope: Arc::new(Scope {
                pids: filters.pids.clone(),
                comms: filters.comms.clone(),
                inodes: filters.inodes.iter().copied().collect(),
            }),
            under_way: None,
            last_look: None,
            last_cost: Duration::ZERO,
            last_loss_check: None,
            lost_seen: 0,
            lost_pending: false,
            last_loss: None,
            rescoped: false,
            taken: 0,
        }
    }

    /// Starts a look now: the first one, which seeds the table.
    pub fn look(&mut self, tracker: &mut Tracker, clock: &Clock) {
        let (done, under_way) = oneshot::channel();
        let begin_ns = clock.monotonic_now();
        tracker.push_scan_begin(begin_ns);
        let scope = Arc::clone(&self.scope);
        // Files the table has locks on are compared whatever the filters say: a lock the table
        // holds must be found in the view, or it would be taken for released.
        let tracked = tracker.files();
        let task: JoinHandle<()> = tokio::task::spawn_blocking(move || {
            let keep = |line: &crate::procfs::LockLine| {
                scope.inodes.is_empty() || scope.inodes.contains(&(line.dev(), line.ino))
            };
            let (locks, blind) = lock_table::take_where(&keep);
            // Without /proc/locks the view would miss every lock: it must not be compared.
            let complete = blind.proc_locks.is_none();
            if let Some(err) = &blind.proc_locks {
                log::warn!("cannot read the kernel's lock table: {err}");
            }
            let locks = locks
                .into_iter()
                .map(|lock| ViewedLock {
                    in_scope: scope.covers(&lock),
                    lock,
                })
                .filter(|viewed| {
                    viewed.in_scope || tracked.contains(&(viewed.lock.kernel_dev, viewed.lock.ino))
                })
                .collect();
            let end_ns = Clock::read_monotonic();
            let _ = done.send(KernelView {
                end_ns,
                complete,
                locks,
            });
        });
        drop(task);
        self.under_way = Some(under_way);
        self.last_look = Some(Instant::now());
        self.taken += 1;
    }

    /// The files the trace is about now (`--path` followed a file re-created at its path).
    pub fn rescope(&mut self, inodes: Vec<(u32, u64)>) {
        self.scope = Arc::new(Scope {
            pids: self.scope.pids.clone(),
            comms: self.scope.comms.clone(),
            inodes: inodes.into_iter().collect(),
        });
        self.rescoped = true;
    }

    /// The look under way, once it is done.
    pub async fn done(&mut self) -> Option<KernelView> {
        let view = self.under_way.as_mut()?.await.ok();
        self.under_way = None;
        self.last_cost = self
            .last_look
            .map_or(Duration::ZERO, |start| start.elapsed());
        view
    }

    pub fn under_way(&self) -> bool {
        self.under_way.is_some()
    }

    /// Starts a look if the tracker or the kernel's drop counter calls for one and the limits
    /// allow it. `lost` reads the drop counter.
    pub fn maybe_look(
        &mut self,
        tracker: &mut Tracker,
        clock: &Clock,
        lost: impl FnOnce() -> Option<u64>,
    ) {
        let now = Instant::now();
        if self
            .last_loss_check
            .is_none_or(|last| now.duration_since(last) >= LOSS_CHECK_INTERVAL)
        {
            self.last_loss_check = Some(now);
            if let Some(lost) = lost()
                && lost > self.lost_seen
            {
                self.lost_seen = lost;
                self.lost_pending = true;
                self.last_loss = Some(now);
            }
        }
        if self.under_way() {
            return;
        }
        let overflowing = self
            .last_loss
            .is_some_and(|at| now.duration_since(at) < RECONCILE_INTERVAL);
        let interval = match (tracker.scan_wanted(), self.lost_pending || self.rescoped) {
            (Some(ScanWanted::Orphans), _) if !overflowing => ORPHAN_LOOK_INTERVAL,
            (Some(_), _) | (None, true) => RECONCILE_INTERVAL,
            (None, false) => return,
        }
        .max(self.last_cost * COST_FACTOR);
        if self
            .last_look
            .is_some_and(|last| now.duration_since(last) < interval)
        {
            return;
        }
        self.lost_pending = false;
        self.rescoped = false;
        self.look(tracker, clock);
    }
}
