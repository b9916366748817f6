//! A thread that does nothing but move records out of the kernel's ring into user memory.
//!
//! When lock holders exit in bulk, the kernel writes a release record for every lock they held
//! within a few milliseconds, on every CPU, while the exiting processes take those CPUs. A
//! reader that decodes, tracks and writes each record before taking the next one falls behind
//! and the ring overflows. Copying a record costs a small fraction of handling it, so this
//! thread keeps the ring drained and the records wait in a backlog of bounded size instead,
//! for the tracker's thread to take at its pace. What does not fit in the backlog stays in the
//! ring, where the kernel counts it as lost exactly as before.

use std::{
    collections::VecDeque,
    os::fd::AsRawFd as _,
    ptr::NonNull,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use tokio::sync::mpsc as async_mpsc;

use super::BatchFlusher;
use crate::clock::Clock;

/// Bytes of records one batch carries at most: large enough that a burst moves in few hand-overs,
/// small enough that the tracker sees records within a moment of their copy.
const BATCH_BYTES: usize = 256 * 1024;
/// How long the thread waits for the ring to become readable before it says again that the ring
/// is empty (the kernel wakes a reader at most once a millisecond per CPU).
const POLL_TIMEOUT: Duration = Duration::from_millis(10);
/// The same after a pass that copied records: what a burst leaves in a CPU's batch wakes no one,
/// and waits for the next pass, which must come well within the tracker's reorder window. A
/// burst's first call always goes to the ring at once and wakes the thread, so an idle machine
/// keeps the longer wait.
const ACTIVE_POLL_TIMEOUT: Duration = Duration::from_millis(3);
/// A pass that copied this share of the ring is taken as a burst: the thread looks at the ring
/// again after [`BURST_PAUSE`] rather than waiting for the kernel's wakeup, which comes at most
/// once a millisecond per CPU, while such a burst would fill the ring in a few. Steady flows
/// stay below it and cost no more wakeups than the kernel's.
const BURST_SHARE_OF_RING: usize = 8;
const BURST_PAUSE: Duration = Duration::from_micros(200);
/// How long the thread pauses when the backlog is full.
const FULL_PAUSE: Duration = Duration::from_millis(1);
/// The most a program takes from reading its timestamp to putting its record in the ring or in
/// its CPU's batch (a few hundred nanoseconds; an interrupt in between is the worst case), with
/// a wide margin.
const RESERVE_DELAY_MAX_NS: u64 = 1_000_000;
/// Flushes the thread remembers until it has read past them: one a pass, a thousand a second
/// while the backlog is full; the oldest is forgotten first (a later one says more).
const FLUSHES_KEPT: usize = 1024;

/// Records copied out of the ring, in the ring's order.
pub struct Batch {
    bytes: Vec<u8>,
    /// Every record timestamped before this CLOCK_MONOTONIC time is in this batch or an earlier
    /// one (see [`Flushes`]).
    pub read_until: Option<u64>,
}

impl Batch {
    fn new(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            read_until: None,
        }
    }

    fn push(&mut self, record: &[u8]) {
        let len = u32::try_from(record.len()).expect("a ring record is smaller than 4 GiB");
        self.bytes.extend_from_slice(&len.to_ne_bytes());
        self.bytes.extend_from_slice(record);
    }

    /// The records, each as the kernel wrote it.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = self.bytes.as_slice();
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let (record, tail) = tail.split_at(u32::from_ne_bytes(*len) as usize);
            rest = tail;
            Some(record)
        })
    }
}

/// The receiving end: batches in the ring's order, until the thread has taken the last record.
pub struct RingReader {
    batches: async_mpsc::UnboundedReceiver<Batch>,
    backlog: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RingReader {
    /// Starts the thread at the nice value `nice`, with no capability, on a ring of `ring_size`
    /// bytes. `backlog_limit`: bytes of copied records it may hold in user memory before it
    /// leaves records in the ring.
    pub fn spawn(
        ring: RingBuf<MapData>,
        flusher: BatchFlusher,
        ring_size: usize,
        backlog_limit: usize,
        nice: i32,
    ) -> Result<Self> {
        let (sender, batches) = async_mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let positions = RingPositions::map(&ring)?;
        let copier = Copier {
            ring,
            positions,
            flushes: Flushes::default(),
            flusher,
            sender,
            filling: Vec::with_capacity(BATCH_BYTES),
            backlog: Arc::clone(&backlog),
            backlog_limit,
            burst_bytes: ring_size / BURST_SHARE_OF_RING,
            stop: Arc::clone(&stop),
        };
        let (started, ready) = mpsc::sync_channel(1);
        let thread = thread::Builder::new()
            .name("ring-reader".into())
            .spawn(move || {
                let outcome = prepare_thread(nice);
                let failed = outcome.is_err();
                let _ = started.send(outcome);
                if !failed {
                    copier.run();
                }
            })
            .context("cannot start the ring's reader thread")?;
        ready
            .recv()
            .context("the ring's reader thread ended at its start")??;
        Ok(Self {
            batches,
            backlog,
            stop,
            thread: Some(thread),
        })
    }

    /// The next batch; `None` once the thread has stopped and every batch has been taken.
    pub async fn next(&mut self) -> Option<Batch> {
        self.batches.recv().await
    }

    /// The next batch if one is waiting.
    pub fn try_next(&mut self) -> Option<Batch> {
        self.batches.try_recv().ok()
    }

    /// Gives a handled batch's memory back.
    pub fn done(&self, batch: Batch) {
        self.backlog
            .fetch_sub(batch.bytes.capacity(), Ordering::Relaxed);
    }

    /// Asks the thread to take what is left in the ring and stop; [`RingReader::next`] then gives
    /// the rest and ends.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl Drop for RingReader {
    fn drop(&mut self) {
        self.stop();
        // Batches not taken are dropped with the receiver; the thread sees it and ends.
        self.batches.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Takes the reader thread's priority while the capability to raise it is there, then drops every
/// capability but the one the flushes of the CPUs' batches need: the thread only reads mapped
/// memory, polls and runs the flush program.
fn prepare_thread(nice: i32) -> Result<()> {
    // SAFETY: plain system calls on the calling thread (Linux applies nice per thread).
    let set = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if set != 0 {
        log::warn!(
            "cannot set the ring reader's nice value to {nice}: {}",
            std::io::Error::last_os_error()
        );
    }
    crate::privileges::keep_only_bpf_in_this_thread()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The ring is empty, after `copied` bytes of records.
    Emptied { copied: usize },
    /// The backlog is full: records were left in the ring.
    Full,
}

struct Copier {
    ring: RingBuf<MapData>,
    positions: RingPositions,
    flushes: Flushes,
    flusher: BatchFlusher,
    sender: async_mpsc::UnboundedSender<Batch>,
    /// Where a batch is filled, then copied out at its size: many small batches (a reader that
    /// wakes often, on one CPU) must not each hold a whole batch's allocation.
    filling: Vec<u8>,
    backlog: Arc<AtomicUsize>,
    backlog_limit: usize,
    burst_bytes: usize,
    stop: Arc<AtomicBool>,
}

impl Copier {
    fn run(mut self) {
        // Closed: the tracker is gone, and with it any reason to copy.
        while !self.sender.is_closed() {
            // Read before the last pass, so that a stop asked during it still gets one more.
            let stopping = self.stop.load(Ordering::Acquire);
            let Some(pass) = self.copy_until_empty_or_full() else {
                return;
            };
            if stopping && pass != Pass::Full {
                return;
            }
            match pass {
                Pass::Full => thread::sleep(FULL_PAUSE),
                Pass::Emptied { copied } if copied >= self.burst_bytes => {
                    thread::sleep(BURST_PAUSE)
                }
                Pass::Emptied { copied: 0 } => self.wait_readable(POLL_TIMEOUT),
                Pass::Emptied { .. } => self.wait_readable(ACTIVE_POLL_TIMEOUT),
            }
        }
    }

    /// Copies records until the ring is empty or the backlog full; `None` once nobody receives.
    fn copy_until_empty_or_full(&mut self) -> Option<Pass> {
        let mut copied = 0;
        loop {
            let began = Clock::read_monotonic();
            // What bursts left in the CPUs' batches goes to the ring first, so that once the
            // reader is past where the producer then was, every record timestamped before
            // `began` is read.
            if self.flusher.flush() {
                self.flushes.done(self.positions.producer(), began);
            }
            let mut batch = Batch::new(std::mem::take(&mut self.filling));
            let room = self
                .backlog_limit
                .saturating_sub(self.backlog.load(Ordering::Relaxed))
                .min(BATCH_BYTES);
            let mut emptied = false;
            while batch.bytes.len() < room {
                match self.ring.next() {
                    Some(record) => batch.push(&record),
                    None => {
                        emptied = true;
                        break;
                    }
                }
            }
            let full = !emptied && room < BATCH_BYTES;
            copied += batch.bytes.len();
            if !batch.bytes.is_empty() || emptied {
                let sent = Batch {
                    bytes: batch.bytes.as_slice().to_vec(),
                    read_until: self.flushes.read_past(self.positions.consumer()),
                };
                self.backlog
                    .fetch_add(sent.bytes.capacity(), Ordering::Relaxed);
                self.sender.send(sent).ok()?;
            }
            self.filling = batch.bytes;
            self.filling.clear();
            if full {
                return Some(Pass::Full);
            }
            if emptied {
                return Some(Pass::Emptied { copied });
            }
        }
    }

    fn wait_readable(&self, timeout: Duration) {
        let mut poll = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call. An error or a timeout both
        // lead to another look at the ring.
        unsafe { libc::poll(&mut poll, 1, timeout.as_millis() as libc::c_int) };
    }
}

/// The flushes of the CPUs' batches, each with where the ring's producer was once it was done.
///
/// The ring holds records in the order their programs put them there, which is not the order
/// of their timestamps: a CPU's batch goes to the ring when full or flushed, after records of
/// other CPUs taken later. So no record read says that every older one was read. A flush that
/// began at T does: once it is done, every record timestamped before T (less the delay of a
/// program still running then) is in the ring, before the producer's position, or read already.
/// The reader's claim is the latest flush whose position it has read past, found empty or not.
#[derive(Debug, Default)]
struct Flushes {
    /// Oldest first: (producer position once done, CLOCK_MONOTONIC time it began).
    pending: VecDeque<(u64, u64)>,
}

impl Flushes {
    fn done(&mut self, producer: u64, began: u64) {
        match self.pending.back_mut() {
            // Nothing reached the ring since the last: this one says more of the same records.
            Some(last) if last.0 == producer => last.1 = began,
            _ => {
                if self.pending.len() == FLUSHES_KEPT {
                    self.pending.pop_front();
                }
                self.pending.push_back((producer, began));
            }
        }
    }

    /// With the reader at `consumer`: before when every record is read, if it is past a flush.
    fn read_past(&mut self, consumer: u64) -> Option<u64> {
        let mut began = None;
        while let Some(&(producer, at)) = self.pending.front()
            && producer <= consumer
        {
            began = Some(at);
            self.pending.pop_front();
        }
        began.map(|at| at.saturating_sub(RESERVE_DELAY_MAX_NS))
    }
}

/// The ring's consumer and producer positions, read from a read-only mapping of their two pages
/// beside aya's (kernel/bpf/ringbuf.c: the consumer's page, then the producer's, each position
/// a 64-bit count of bytes that only grows).
struct RingPositions {
    pages: NonNull<libc::c_void>,
    page_size: usize,
}

// SAFETY: the mapping is only read, through atomic loads, and unmapped once, on drop.
unsafe impl Send for RingPositions {}

impl RingPositions {
    fn map(ring: &RingBuf<MapData>) -> Result<Self> {
        // SAFETY: sysconf reads a constant of the system.
        let page_size = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .context("the page size")?;
        // SAFETY: a new shared read-only mapping of the ring's first two pages, which the
        // kernel lets any reader map; nothing else refers to it.
        let pages = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page_size,
                libc::PROT_READ,
                libc::MAP_SHARED,
                ring.as_raw_fd(),
                0,
            )
        };
        if pages == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("cannot map the ring's positions");
        }
        let pages = NonNull::new(pages).context("the ring's positions mapped at 0")?;
        Ok(Self { pages, page_size })
    }

    fn consumer(&self) -> u64 {
        self.load(0)
    }

    fn producer(&self) -> u64 {
        self.load(self.page_size)
    }

    fn load(&self, offset: usize) -> u64 {
        // SAFETY: `offset` is the start of one of the two mapped pages, where the kernel keeps
        // an aligned 64-bit position, written with release semantics.
        unsafe {
            (*self.pages.as_ptr().byte_add(offset).cast::<AtomicU64>()).load(Ordering::Acquire)
        }
    }
}

impl Drop for RingPositions {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.pages.as_ptr(), 2 * self.page_size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_waits_for_the_reader_to_pass_a_flush() {
        let mut flushes = Flushes::default();
        assert_eq!(flushes.read_past(0), None, "no flush yet");
        flushes.done(100, 10 * RESERVE_DELAY_MAX_NS);
        // The reader took records up to 99 only: a batch flushed then may lie before 100.
        assert_eq!(flushes.read_past(99), None);
        flushes.done(300, 20 * RESERVE_DELAY_MAX_NS);
        flushes.done(300, 25 * RESERVE_DELAY_MAX_NS);
        // Past the first flush, not the second: the first's time, less a program's delay.
        assert_eq!(flushes.read_past(250), Some(9 * RESERVE_DELAY_MAX_NS));
        assert_eq!(flushes.read_past(250), None, "said once");
        // The second flush saw the same producer as the one before it: its later time holds.
        assert_eq!(flushes.read_past(300), Some(24 * RESERVE_DELAY_MAX_NS));
        // A reader that never catches up keeps the latest flushes.
        for index in 0..2 * FLUSHES_KEPT as u64 {
            flushes.done(1000 + index, index);
        }
        assert_eq!(flushes.pending.len(), FLUSHES_KEPT);
        assert_eq!(
            flushes.read_past(u64::MAX),
            Some(0),
            "the latest, saturated"
        );
    }

    #[test]
    fn a_batch_gives_back_each_record_whole_and_in_order() {
        let records: [&[u8]; 4] = [b"first record", b"", &[0xff; 300], b"last"];
        let mut batch = Batch::new(Vec::new());
        for record in records {
            batch.push(record);
        }
        assert!(batch.records().eq(records));
    }
}
