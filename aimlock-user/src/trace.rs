//! `aimlock trace`: kernel -> ring -> decoder -> tracker -> sinks.

use std::{
    net::SocketAddr,
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use rustc_hash::FxHashMap as HashMap;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    decode::{Decoder, Input, comm_str},
    events::{EventKind, EventLine, LockKind, ProcRef, SCHEMA_VERSION, rfc3339},
    loader::{Filters, Tracer},
    metrics, privileges,
    procfs::{self, ProcessInfo},
    sinks::{SinkArgs, Sinks},
    tracker::{Actor, END_OF_FILE, Held, LockId, Output, Tracker},
};

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    #[command(flatten)]
    sinks: SinkArgs,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (PORT alone: on 127.0.0.1).
    #[arg(long, value_name = "ADDR:PORT", value_parser = metrics::parse_listen_address)]
    metrics: Option<SocketAddr>,
    /// Only trace these processes (thread group ids) and the children they fork. Repeatable.
    #[arg(long, short)]
    pid: Vec<u32>,
    /// Only trace processes with this command name (at most 15 bytes). Repeatable.
    #[arg(long, short)]
    comm: Vec<String>,
    /// Only trace locks on these files (resolved to inodes at start). Repeatable.
    #[arg(long)]
    path: Vec<PathBuf>,
    /// Size of the kernel's ring buffer in bytes (a power of two; K and M suffixes accepted).
    #[arg(long, default_value = "8M", value_parser = parse_size)]
    ring_size: u32,
}

fn parse_size(text: &str) -> Result<u32, String> {
    let (digits, unit) = match text.as_bytes().last() {
        Some(b'K' | b'k') => (&text[..text.len() - 1], 1024),
        Some(b'M' | b'm') => (&text[..text.len() - 1], 1024 * 1024),
        _ => (text, 1),
    };
    digits
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("{text:?} is not a size in bytes (such as 65536, 64K or 8M)"))
}

pub async fn run(args: TraceArgs) -> Result<()> {
    let mut sink = Sinks::open(&args.sinks)?;
    if let Some(address) = args.metrics {
        sink.record_metrics(metrics::serve(address)?);
    }
    let filters = Filters {
        pids: args.pid.clone(),
        comms: args.comm.clone(),
        inodes: args
            .path
            .iter()
            .map(|path| {
                let meta = std::fs::metadata(path)
                    .with_context(|| format!("--path {}", path.display()))?;
                Ok((procfs::user_dev_to_kernel(meta.dev()), meta.ino()))
            })
            .collect::<Result<_>>()?,
    };
    let tracer = Tracer::load(&filters, args.ring_size)?;
    for missing in &tracer.missing {
        log::warn!("not traced on this kernel: {missing}");
    }
    let Tracer {
        ebpf: attached,
        events,
        drops,
        logger,
        decode,
        ..
    } = tracer;
    let decoder = Decoder::new(decode);
    let mut events = poll_readable(events).context("cannot poll the ring buffer")?;
    if let Some(logger) = logger {
        spawn_kernel_logger(logger)?;
    }
    privileges::drop_after_attach()?;

    let clock = Clock::new();
    let mut enricher = Enricher::default();
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;

    sink.write(&start_line(&clock));
    sink.flush();

    let mut tracker = Tracker::new();
    let mut outputs = Vec::new();
    let mut written = 0u64;
    let mut records = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            // Readiness is cleared before the drain below, so that records arriving during it
            // wake the loop again.
            guard = events.readable_mut() => guard?.clear_ready(),
            // Records written without a wakeup (the kernel wakes the reader at most once a
            // millisecond per CPU) are picked up on the tick.
            _ = tick.tick() => {}
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
        // In batches, so that a full ring moves to the log a batch at a time rather than all at
        // once into memory.
        loop {
            let batch = drain(
                events.get_mut(),
                &decoder,
                &mut tracker,
                &mut enricher,
                DRAIN_BATCH,
            );
            records += batch;
            tracker.advance(clock.monotonic_now(), &mut outputs);
            written += emit(&mut outputs, &mut tracker, &clock, &mut enricher, &mut sink);
            if batch < DRAIN_BATCH {
                break;
            }
        }
        sink.count_records(records, || drops.total().ok());
        sink.flush();
    }

    // Stop: detach first, so that a busy system cannot keep the final drain going; then take
    // what is still in the ring, settle everything, account for losses.
    drop(attached);
    records += drain(
        events.get_mut(),
        &decoder,
        &mut tracker,
        &mut enricher,
        u64::MAX,
    );
    tracker.finish(&mut outputs);
    written += emit(&mut outputs, &mut tracker, &clock, &mut enricher, &mut sink);
    let lost = drops.total().unwrap_or_else(|err| {
        log::warn!("{err:#}");
        0
    });
    sink.flush();
    let stop = EventLine {
        event: Some(EventKind::Stop),
        ts: rfc3339(SystemTime::now()),
        lost: Some(lost),
        records: Some(records),
        events: Some(written),
        unwritten: Some(sink.unwritten()),
        ..Default::default()
    };
    sink.write(&stop);
    sink.flush();
    Ok(())
}

/// Records taken from the ring between two passes through the tracker.
const DRAIN_BATCH: u64 = 4096;

/// Moves up to `limit` records from the ring into the tracker; returns how many. Paths are looked up
/// now, while the process that locked the file is most likely still alive.
fn drain(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    decoder: &Decoder,
    tracker: &mut Tracker,
    enricher: &mut Enricher,
    limit: u64,
) -> u64 {
    let mut count = 0;
    while count < limit
        && let Some(item) = ring.next()
    {
        count += 1;
        match decoder.decode(&item) {
            Some(input) => {
                if let Input::Lock(op) = &input {
                    enricher.learn_path(op.pid, op.dev, op.ino);
                    enricher.process(op.pid);
                }
                tracker.push(input);
            }
            None => log::warn!(
                "skipped a record of {} bytes this binary cannot read",
                item.len()
            ),
        }
    }
    count
}

/// Writes the tracker's outputs; returns how many lines that was.
fn emit(
    outputs: &mut Vec<Output>,
    tracker: &mut Tracker,
    clock: &Clock,
    enricher: &mut Enricher,
    sink: &mut Sinks,
) -> u64 {
    let mut count = 0;
    for output in outputs.drain(..) {
        match output {
            Output::Exit {
                actor,
                took_locks: false,
                ..
            } => {
                // Exits only matter to the log for processes that had locks.
                enricher.forget(actor.pid);
                continue;
            }
            Output::Orphan { lock, held, .. } => {
                let holders = enricher.holders(&lock, &held);
                if holders.is_empty() {
                    // Nobody holds it: its release was among the records the ring lost.
                    log::debug!("no holder of {lock:?}: its release was lost");
                    tracker.forget(lock, held.start, held.end);
                    continue;
                }
                let mut line = enricher.line(&output, clock);
                line.holders = Some(holders);
                sink.write(&line);
            }
            _ => sink.write(&enricher.line(&output, clock)),
        }
        count += 1;
        if let Output::Exit { actor, .. } = output {
            enricher.forget(actor.pid);
        }
    }
    count
}

fn start_line(clock: &Clock) -> EventLine {
    let uname = nix::sys::utsname::uname().ok();
    let field = |get: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uname
            .as_ref()
            .map(|u| get(u).to_string_lossy().into_owned())
    };
    EventLine {
        event: Some(EventKind::Start),
        ts: clock.format(clock.monotonic_now()),
        schema: Some(SCHEMA_VERSION),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        kernel: field(|u| u.release()),
        hostname: field(|u| u.nodename()),
        ..Default::default()
    }
}

/// Registers a ring buffer with the reactor.
fn poll_readable<T: std::os::fd::AsRawFd>(ring: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: the ring owns its map fd, which stays open and unchanged while the AsyncFd owns
    // the ring.
    unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|err| std::io::Error::other(err.to_string()))
}

/// Sends aya-log messages from the kernel programs to the `log` crate's logger.
fn spawn_kernel_logger(logger: aya_log::EbpfLogger<&'static dyn log::Log>) -> Result<()> {
    let mut logger = poll_readable(logger).context("cannot poll the kernel log ring")?;
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = logger.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
    Ok(())
}

/// Converts the kernel's CLOCK_MONOTONIC timestamps to wall-clock time.
pub struct Clock {
    /// realtime - monotonic, in nanoseconds, measured once at start.
    offset_ns: i128,
    /// The last second formatted and its "YYYY-MM-DDTHH:MM:SS" text: a burst of events in one
    /// second formats the date once.
    second: std::cell::RefCell<(u64, String)>,
}

impl Clock {
    pub fn new() -> Self {
        let monotonic = Self::read(libc::CLOCK_MONOTONIC);
        let realtime = Self::read(libc::CLOCK_REALTIME);
        Self {
            offset_ns: i128::from(realtime) - i128::from(monotonic),
            second: std::cell::RefCell::new((u64::MAX, String::new())),
        }
    }

    fn read(clock: libc::clockid_t) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes a timespec; these clocks always exist.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    pub fn monotonic_now(&self) -> u64 {
        Self::read(libc::CLOCK_MONOTONIC)
    }

    fn unix_ns(&self, monotonic_ns: u64) -> u64 {
        (i128::from(monotonic_ns) + self.offset_ns).max(0) as u64
    }

    /// RFC 3339, UTC, nanoseconds: the same text as [`rfc3339`], faster.
    pub fn format(&self, monotonic_ns: u64) -> String {
        let unix_ns = self.unix_ns(monotonic_ns);
        let (seconds, nanos) = (unix_ns / 1_000_000_000, unix_ns % 1_000_000_000);
        let mut cache = self.second.borrow_mut();
        if cache.0 != seconds {
            let whole = UNIX_EPOCH + Duration::from_secs(seconds);
            *cache = (
                seconds,
                humantime::format_rfc3339_seconds(whole).to_string(),
            );
            cache.1.pop(); // the 'Z'
        }
        let mut text = String::with_capacity(31);
        text.push_str(&cache.1);
        text.push('.');
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(nanos);
        for _ in digits.len()..9 {
            text.push('0');
        }
        text.push_str(digits);
        text.push('Z');
        text
    }
}

/// Paths remembered at most; past this the cache starts again (a path is looked up again from
/// the process that locks the file next).
const MAX_CACHED_PATHS: usize = 200_000;
/// Fds tried past the highest one seen, when a lock is on a file not seen yet.
const FD_PROBES: usize = 8;
const FULL_SCAN_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct FdScan {
    /// The next fd number not looked at yet.
    next_fd: i32,
    last_full: Option<Instant>,
}

/// Adds what only /proc knows (paths, namespace pids, containers, holders), with caches so that
/// a burst of events on one file costs one lookup.
#[derive(Default)]
struct Enricher {
    processes: HashMap<u32, Option<ProcessInfo>>,
    paths: HashMap<(u32, u64), procfs::OpenPath>,
    /// "MAJ:MIN" by kernel device number.
    devices: HashMap<u32, String>,
    /// Command names by pid, with the bytes they were made from.
    comms: HashMap<u32, ([u8; 16], String)>,
    /// How far each process's fds have been looked at, so that a burst of locks on newly
    /// opened files costs a few lookups each, not a scan of every fd.
    fd_scans: HashMap<u32, FdScan>,
}

impl Enricher {
    fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
        self.fd_scans.remove(&pid);
        self.comms.remove(&pid);
    }

    fn comm(&mut self, actor: &Actor) -> String {
        let cached = self
            .comms
            .entry(actor.pid)
            .or_insert_with(|| (actor.comm, comm_str(&actor.comm)));
        if cached.0 != actor.comm {
            *cached = (actor.comm, comm_str(&actor.comm));
        }
        cached.1.clone()
    }

    fn device(&mut self, dev: u32) -> String {
        self.devices
            .entry(dev)
            .or_insert_with(|| {
                let (major, minor) = aimlock_common::kernel_dev_split(dev);
                format!("{major}:{minor}")
            })
            .clone()
    }

    fn process(&mut self, pid: u32) -> Option<&ProcessInfo> {
        self.processes
            .entry(pid)
            .or_insert_with(|| ProcessInfo::read(pid))
            .as_ref()
    }

    /// Finds the path of (dev, ino) among `pid`'s open files. New files usually get the next
    /// fd numbers, so those are tried first; a full scan of the fds is done at most once a
    /// second per process.
    fn learn_path(&mut self, pid: u32, dev: u32, ino: u64) {
        let key = (dev, ino);
        if self.paths.contains_key(&key) {
            return;
        }
        if self.paths.len() >= MAX_CACHED_PATHS {
            self.paths.clear();
        }
        let scan = self.fd_scans.entry(pid).or_default();
        for _ in 0..FD_PROBES {
            match procfs::fd_file(pid, scan.next_fd) {
                Ok(found) => {
                    scan.next_fd += 1;
                    if let Some((file, path)) = found {
                        self.paths.insert(file, path);
                    }
                }
                Err(_) => break,
            }
        }
        if self.paths.contains_key(&key) {
            return;
        }
        let now = Instant::now();
        if scan
            .last_full
            .is_some_and(|last| now.duration_since(last) < FULL_SCAN_INTERVAL)
        {
            return;
        }
        scan.last_full = Some(now);
        for (file, path) in procfs::open_files(pid) {
            scan.next_fd = scan.next_fd.max(path.fd + 1);
            self.paths.insert(file, path);
        }
    }

    fn path(&mut self, pid: u32, lock: &LockId) -> Option<&procfs::OpenPath> {
        self.learn_path(pid, lock.dev, lock.ino);
        self.paths.get(&(lock.dev, lock.ino))
    }

    fn line(&mut self, output: &Output, clock: &Clock) -> EventLine {
        let (at, actor, lock) = match output {
            Output::Acquire {
                at, actor, lock, ..
            }
            | Output::Wait {
                at, actor, lock, ..
            }
            | Output::Release {
                at, actor, lock, ..
            }
            | Output::Fail {
                at, actor, lock, ..
            } => (*at, *actor, Some(*lock)),
            Output::Exit { at, actor, .. } => (*at, *actor, None),
            Output::Orphan { at, lock, held, .. } | Output::OrphanEnd { at, lock, held, .. } => {
                (*at, held.taker, Some(*lock))
            }
        };
        let mut line = EventLine {
            ts: clock.format(at),
            pid: Some(actor.pid),
            comm: Some(self.comm(&actor)),
            ..Default::default()
        };
        if let Some(info) = self.process(actor.pid).filter(|info| info.ns_pid.is_some()) {
            line.ns_pid = info.ns_pid;
            line.cgroup = info.cgroup.clone();
        }
        if let Some(lock) = lock {
            line.kind = Some(lock.kind);
            line.dev = Some(self.device(lock.dev));
            line.ino = Some(lock.ino);
            if let Some(found) = self.path(actor.pid, &lock) {
                line.path = Some(found.path.clone());
                line.deleted = found.deleted.then_some(true);
            }
        }
        let range = |line: &mut EventLine, start: i64, end: i64| {
            line.start = Some(start.max(0) as u64);
            line.end = Some((end != END_OF_FILE).then_some(end.max(0) as u64));
        };
        match output {
            Output::Acquire {
                mode,
                start,
                end,
                wait_ns,
                ..
            } => {
                line.event = Some(EventKind::Acquire);
                line.mode = Some(*mode);
                line.wait_ns = *wait_ns;
                range(&mut line, *start, *end);
            }
            Output::Wait {
                mode, start, end, ..
            } => {
                line.event = Some(EventKind::Wait);
                line.mode = Some(*mode);
                range(&mut line, *start, *end);
            }
            Output::Release {
                held,
                start,
                end,
                reason,
                at,
                ..
            } => {
                line.event = Some(EventKind::Release);
                line.mode = Some(held.mode);
                line.reason = Some(*reason);
                line.held_ns = Some(at.saturating_sub(held.since_ns));
                range(&mut line, *start, *end);
            }
            Output::Fail {
                mode,
                start,
                end,
                errno,
                ..
            } => {
                line.event = Some(EventKind::Fail);
                line.mode = Some(*mode);
                line.errno = Some(errno_name(*errno));
                range(&mut line, *start, *end);
            }
            Output::Exit { locks, .. } => {
                line.event = Some(EventKind::Exit);
                line.locks = Some(*locks);
            }
            Output::Orphan {
                held, taker_exit, ..
            } => {
                line.event = Some(EventKind::Orphan);
                line.mode = Some(held.mode);
                line.taker_exit = Some(clock.format(*taker_exit));
                range(&mut line, held.start, held.end);
            }
            Output::OrphanEnd {
                at,
                by,
                held,
                taker_exit,
                reason,
                ..
            } => {
                line.event = Some(EventKind::OrphanEnd);
                line.mode = Some(held.mode);
                line.reason = Some(*reason);
                line.held_ns = Some(at.saturating_sub(held.since_ns));
                line.orphan_ns = Some(at.saturating_sub(*taker_exit));
                line.taker_exit = Some(clock.format(*taker_exit));
                range(&mut line, held.start, held.end);
                line.by = Some(self.proc_ref(by, None));
            }
        }
        line
    }

    /// Live processes with an fd on the orphan's open file description.
    fn holders(&mut self, lock: &LockId, held: &Held) -> Vec<ProcRef> {
        let end = (held.end != END_OF_FILE).then_some(held.end as u64);
        let mut holders: Vec<ProcRef> =
            procfs::holders(lock.kind, lock.dev, lock.ino, held.start.max(0) as u64, end)
                .into_iter()
                .filter(|found| lock.kind != LockKind::Posix && found.lock.mode == held.mode)
                .filter_map(|found| {
                    let info = self.process(found.pid)?.clone();
                    Some(ProcRef {
                        pid: found.pid,
                        comm: info.comm,
                        ns_pid: info.ns_pid,
                        fd: Some(found.fd),
                        cgroup: info.ns_pid.and(info.cgroup),
                    })
                })
                .collect();
        holders.sort_by_key(|holder| (holder.pid, holder.fd));
        if let Some(holder) = holders.first() {
            // The holders' view of the path, since the taker's is gone.
            if let Some(found) = procfs::open_path(holder.pid, lock.dev, lock.ino) {
                self.paths.insert((lock.dev, lock.ino), found);
            }
        }
        holders
    }

    fn proc_ref(&mut self, actor: &Actor, fd: Option<i32>) -> ProcRef {
        let info = self.process(actor.pid).cloned();
        ProcRef {
            pid: actor.pid,
            comm: comm_str(&actor.comm),
            ns_pid: info.as_ref().and_then(|info| info.ns_pid),
            fd,
            cgroup: info.and_then(|info| info.ns_pid.and(info.cgroup)),
        }
    }
}

/// "EAGAIN" for 11, and so on.
pub fn errno_name(errno: i32) -> String {
    format!("{:?}", nix::errno::Errno::from_raw(errno))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_timestamps_match_humantime() {
        let clock = Clock::new();
        for monotonic in [0, 1, 999_999_999, 1_000_000_000, 123_456_789_012_345] {
            let unix = UNIX_EPOCH + Duration::from_nanos(clock.unix_ns(monotonic));
            assert_eq!(clock.format(monotonic), rfc3339(unix));
        }
    }
}
