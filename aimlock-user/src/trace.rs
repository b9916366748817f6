//! `aimlock trace`: kernel -> ring -> decoder -> tracker -> sinks.

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail};
use smallvec::SmallVec;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    cli,
    clock::Clock,
    decode::{Decoded, Decoder, Input, records_in},
    enrich::Enricher,
    events::{EventKind, EventLine, LockKind, SCHEMA_VERSION, rfc3339, this_host},
    fold::{Folder, Line},
    followed_paths::{Changes, FollowedPaths},
    kernel_views::KernelViews,
    loader::{Batch, Filters, Holders, InodeFilter, RingReader, Tracer},
    metrics, otlp, privileges, procfs,
    sinks::{SinkArgs, Sinks},
    tracker::{KernelView, Output, ScanWanted, Tracker},
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
    /// How many processes the --pid filter holds at once; for tests, which fill it cheaply.
    #[arg(long, default_value_t = aimlock_common::MAX_FILTER_ENTRIES, hide = true,
          value_parser = clap::value_parser!(u32).range(1..))]
    pid_filter_size: u32,
    /// Run the lock hooks as classic tracepoints, as on a kernel without BTF; for tests.
    #[arg(long, hide = true)]
    classic_lock_hooks: bool,
    /// Only trace processes with this command name (at most 15 bytes). Repeatable.
    #[arg(long, short)]
    comm: Vec<String>,
    /// Only trace locks on these files (held open while traced; a file re-created at the path is
    /// followed within a second). Repeatable.
    #[arg(long)]
    path: Vec<PathBuf>,
    /// The tracer's nice value (-20 to 19). Raised by default so that the tracer keeps draining
    /// the ring while lock holders exit in bulk and take the CPUs.
    #[arg(long, default_value_t = -10, allow_hyphen_values = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    nice: i32,
    /// Follow descriptors passed over unix sockets (SCM_RIGHTS), for orphans' lineage. Off by
    /// default: it attaches syscall tracepoints, which slow every system call of every process
    /// (about 50 ns each here).
    #[arg(long)]
    follow_unix_sockets: bool,
    /// Size of the kernel's ring buffer in bytes (a power of two; K and M suffixes accepted).
    #[arg(long, default_value = "8M", value_parser = parse_size)]
    ring_size: u32,
    /// How many bytes of records may wait in the tracer's memory, copied out of the ring but not
    /// yet handled (K and M suffixes accepted): what lets a burst of releases, as when lock
    /// holders exit in bulk, outgrow the ring without loss.
    #[arg(long, default_value = "64M", value_parser = parse_backlog_size)]
    backlog_size: u32,
    /// Write every acquire and release. By default an owner's locking of a file that goes from
    /// holding none of its lock to holding none again within 100 us (a lock taken and unlocked;
    /// a SQLite transaction's byte ranges), that nobody waited for or was refused and that no one
    /// else's lock touched, is counted in `summary` lines (one per process, file, mode and
    /// second) instead: what keeps a tight lock loop or a busy database from costing the tracer
    /// a line per call. Waits, failures, releases on close or exit, exits and orphans are always
    /// lines of their own.
    #[arg(long)]
    every_event: bool,
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

/// At least a record: a smaller backlog would take nothing out of the ring.
fn parse_backlog_size(text: &str) -> Result<u32, String> {
    let size = parse_size(text)?;
    if (size as usize) < aimlock_common::Record::SIZE {
        return Err(format!(
            "{text:?} is smaller than a record ({} bytes)",
            aimlock_common::Record::SIZE
        ));
    }
    Ok(size)
}

/// The tracer runs for months: a block of 1 MiB or more (a lock table as it grows) is mapped on
/// its own, unmapped when freed, and grows in place by `mremap`. glibc's default raises that
/// threshold to the largest block freed so far, so that later blocks below it come from the heap
/// and stay resident once freed. The ring reader's batches (256 KiB at most) stay below it, on
/// the heap, reused from one to the next rather than mapped and zeroed each time.
#[cfg(target_env = "gnu")]
fn release_large_blocks_when_freed() {
    // SAFETY: mallopt only sets an allocator parameter; 0 (refused) leaves the default.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
}

/// The static release's mimalloc gives every freed page back at once (see
/// [`crate::allocator::give_memory_back_at_once`]).
#[cfg(target_env = "musl")]
fn release_large_blocks_when_freed() {
    crate::allocator::give_memory_back_at_once();
}

pub async fn run(args: TraceArgs) -> Result<()> {
    release_large_blocks_when_freed();
    if let Some(pid) = args.pid.iter().find(|&&pid| !cli::process_exists(pid)) {
        bail!("--pid {pid}: no such process");
    }
    let mut sink = Sinks::open(&args.sinks)?;
    let otlp_metrics = args.sinks.otlp_metrics();
    if args.metrics.is_some() || otlp_metrics.is_some() {
        let recorder = metrics::Recorder::new();
        if let Some(address) = args.metrics {
            metrics::serve(address, recorder.published())?;
        }
        if let Some((endpoint, interval)) = otlp_metrics {
            otlp::metrics::spawn(endpoint, recorder.published(), interval);
        }
        sink.record_metrics(recorder);
    }
    let mut followed = FollowedPaths::pin(&args.path)?;
    let filters = Filters {
        pids: args.pid.clone(),
        pid_capacity: args.pid_filter_size,
        comms: args.comm.clone(),
        inodes: followed.inodes(),
    };
    let tracer = Tracer::load(
        &filters,
        args.ring_size,
        args.classic_lock_hooks,
        args.follow_unix_sockets,
    )?;
    for missing in &tracer.missing {
        log::warn!("not traced on this kernel: {missing}");
    }
    let Tracer {
        ebpf: attached,
        events,
        flusher,
        drops,
        mut pid_filter,
        logger,
        decode,
        lock_hooks,
        mut holders,
        mut inode_filter,
        ..
    } = tracer;
    let mut intake = Intake {
        decoder: Decoder::new(decode),
        fd_locks: FdLocks::default(),
    };
    if let Some(logger) = logger {
        spawn_kernel_logger(logger)?;
    }
    // While CAP_SYS_NICE is still held; the table readers started from here on inherit it.
    // SAFETY: a plain system call on the calling thread (Linux applies nice per thread).
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, args.nice) } != 0 {
        log::warn!(
            "cannot set the tracer's nice value to {}: {}",
            args.nice,
            std::io::Error::last_os_error()
        );
    }
    // Ten nice levels above the tracker's thread, which shares a CPU with it: the ring must be
    // drained within the moment a burst takes to fill it, however busy the tracker is.
    let reader_nice = (args.nice - 10).max(-20);
    let mut ring = RingReader::spawn(
        events,
        flusher,
        args.ring_size as usize,
        args.backlog_size as usize,
        reader_nice,
    )?;
    privileges::drop_after_attach()?;

    let clock = Clock::new();
    let mut enricher = Enricher::default();
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;

    sink.write(&start_line(&clock, lock_hooks));
    sink.flush();

    let mut tracker = Tracker::new();
    // Every log is self-contained from its start line: what the kernel holds now comes first.
    let mut views = KernelViews::new(&filters);
    views.look(&mut tracker, &clock);
    let mut emitter = Emitter {
        outputs: Vec::new(),
        folder: Folder::new(!args.every_event),
    };
    let mut written = 0u64;
    let mut records = 0u64;
    loop {
        let mut arrived = None;
        tokio::select! {
            // At least every 10 ms, empty when the ring is: exit grace periods end, and views
            // apply, on time alone.
            batch = ring.next() => {
                arrived = Some(batch.context("the ring's reader thread ended")?);
            }
            Some(view) = views.done() => {
                follow_holders(&mut holders, &view);
                tracker.push_view(view);
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
        clock.refresh();
        pid_filter.say_once_when_full();
        // The batches waiting, each through the tracker to the log before the next, so that a
        // burst moves to the log a batch at a time; a few at most before the loop looks at
        // signals, views and the flush again.
        for _ in 0..BATCHES_PER_PASS {
            let Some(batch) = arrived.take().or_else(|| ring.try_next()) else {
                break;
            };
            records += intake.take(&batch, &mut tracker, &mut enricher);
            ring.done(batch);
            written += emitter.advance(&mut tracker, &clock, &mut enricher, &mut sink);
        }
        written += emitter.advance(&mut tracker, &clock, &mut enricher, &mut sink);
        if let Some(changes) = followed.check(|| tracker.files()) {
            follow(&changes, &mut inode_filter);
            views.rescope(followed.inodes());
        }
        views.maybe_look(&mut tracker, &clock, || drops.total().ok());
        sink.count_records(records, || drops.total().ok());
        sink.flush();
    }

    // Stop: detach first, so that a busy system cannot keep the final drain going; then take
    // what is still in the ring, settle everything, account for losses. Locks whose taker's
    // exit grace has ended get the kernel's word before the end.
    drop(attached);
    ring.stop();
    while let Some(batch) = ring.next().await {
        records += intake.take(&batch, &mut tracker, &mut enricher);
        ring.done(batch);
    }
    if let Some(view) = views.done().await {
        tracker.push_view(view);
    }
    written += emitter.advance(&mut tracker, &clock, &mut enricher, &mut sink);
    if tracker.scan_wanted() == Some(ScanWanted::Orphans) {
        views.look(&mut tracker, &clock);
        if let Some(view) = views.done().await {
            tracker.push_view(view);
        }
    }
    written += emitter.finish(&mut tracker, &clock, &mut enricher, &mut sink);
    let lost = drops.total().unwrap_or_else(|err| {
        log::warn!("{err:#}");
        0
    });
    sink.flush();
    // What a collector has not taken by then is counted in the stop line.
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    sink.settle(deadline).await;
    let stop = EventLine {
        event: Some(EventKind::Stop),
        ts: rfc3339(SystemTime::now()),
        host: Some(this_host().into()),
        lost: Some(lost),
        records: Some(records),
        events: Some(written),
        table_reads: Some(views.taken),
        unwritten: Some(sink.unwritten()),
        untraced_children: pid_filter.untraced_children(),
        ..Default::default()
    };
    sink.write(&stop);
    sink.flush();
    sink.settle(deadline + STOP_LINE_TIMEOUT).await;
    Ok(())
}

/// At the stop, how long sinks that send in the background get to deliver what they hold, and
/// then the stop line.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
const STOP_LINE_TIMEOUT: Duration = Duration::from_secs(1);

/// Batches (of up to 256 KiB of records) handled between two looks at signals and views.
const BATCHES_PER_PASS: usize = 16;

/// What turns the ring's records into the tracker's inputs.
struct Intake {
    decoder: Decoder,
    fd_locks: FdLocks,
}

impl Intake {
    /// Moves a batch of records into the tracker; returns how many events they held (a context
    /// record is part of the lock records that follow it). Paths are looked up now, while the
    /// process that locked the file is most likely still alive.
    fn take(&mut self, batch: &Batch, tracker: &mut Tracker, enricher: &mut Enricher) -> u64 {
        let mut count = 0;
        for item in batch.records().flat_map(records_in) {
            // Made ready where the decoder wrote it, and moved once, into the tracker: a copy
            // just after the decoder's writes waits for each of them.
            let mut decoded = self.decoder.decode(item);
            match &mut decoded {
                Decoded::Context => continue,
                Decoded::Input(input) => {
                    if let Input::Exec {
                        pid,
                        start_time,
                        locked,
                        ..
                    } = input
                    {
                        *locked = self.fd_locks.description_locks(*pid, *start_time);
                    }
                    match input {
                        Input::Lock(op) | Input::FcntlFailure(op) => {
                            // The process first: a short-lived one may be gone by the time its
                            // fds have been looked through.
                            enricher.process_of(op);
                            enricher.learn_file(op);
                        }
                        // Its file is the wait's, which the wait's record named.
                        Input::FlockWaitEnd(op) => enricher.process_of(op),
                        Input::Exit {
                            pid, start_time, ..
                        } if *start_time == 0 => {
                            *start_time = enricher.start_time_of(*pid);
                            enricher.exited(*pid);
                        }
                        Input::Fork {
                            pid, start_time, ..
                        }
                        | Input::Exec {
                            pid, start_time, ..
                        }
                        | Input::Passed {
                            pid, start_time, ..
                        } if *start_time == 0 => *start_time = enricher.start_time_of(*pid),
                        _ => {}
                    }
                }
                Decoded::Unreadable => log::warn!(
                    "skipped a record of {} bytes this binary cannot read",
                    item.len()
                ),
            }
            if let Decoded::Input(input) = decoded {
                tracker.push(input);
            }
            count += 1;
        }
        if let Some(read_until) = batch.read_until {
            tracker.ring_read_until(read_until);
        }
        count
    }
}

/// Puts the files `--path` follows now into the kernel's filter.
fn follow(changes: &Changes, filter: &mut InodeFilter) {
    for &inode in &changes.added {
        if let Err(err) = filter.add(inode) {
            log::warn!("{err:#}: {}:{}", inode.0, inode.1);
        }
    }
    for &inode in &changes.removed {
        if let Err(err) = filter.remove(inode) {
            log::warn!("{err:#}: {}:{}", inode.0, inode.1);
        }
    }
}

/// Has the kernel follow the forks, execs and passed descriptors of the processes a kernel view
/// shows holding locks (those that held them before the tracer started, above all). The kernel
/// drops a pid when its process is freed; a holder freed between the view and its adding would
/// leave its pid to the next process given it: each is looked for again once added, and taken
/// back out if gone. Each process once, however many locks it holds.
fn follow_holders(holders: &mut Holders, view: &KernelView) {
    let processes: std::collections::BTreeSet<(u32, u64)> = view
        .locks
        .iter()
        .flat_map(|viewed| &viewed.lock.holders)
        .map(|holder| (holder.pid, holder.start_time.unwrap_or(0)))
        .collect();
    for (pid, start_time) in processes {
        holders.add(pid);
        if !procfs::running_as(pid, start_time) {
            holders.remove(pid);
        }
    }
}

/// Reads which files a process's descriptors hold flock and OFD locks on (its fdinfo), with a
/// buffer kept between reads.
#[derive(Default)]
struct FdLocks {
    found: Vec<procfs::FdLock>,
    buf: Vec<u8>,
}

impl FdLocks {
    /// `None` when the process's descriptors cannot be read as they were before its exit: it
    /// is gone, exiting (its table may be empty already), or the pid names a later process.
    fn description_locks(
        &mut self,
        pid: u32,
        start_time: u64,
    ) -> Option<SmallVec<[(u32, u64); 2]>> {
        self.found.clear();
        procfs::read_fd_locks(pid, &mut self.found, &mut self.buf).ok()?;
        if !procfs::running_as(pid, start_time) {
            return None;
        }
        Some(
            self.found
                .iter()
                .filter(|found| matches!(found.lock.kind, LockKind::Flock | LockKind::Ofd))
                .map(|found| (found.lock.dev(), found.lock.ino))
                .collect(),
        )
    }
}

/// The way from the tracker to the sinks: short holds folded, lines enriched.
struct Emitter {
    outputs: Vec<Output>,
    folder: Folder,
}

impl Emitter {
    /// Applies what the tracker can apply by now and writes the lines that lets go; returns how
    /// many.
    fn advance(
        &mut self,
        tracker: &mut Tracker,
        clock: &Clock,
        enricher: &mut Enricher,
        sink: &mut Sinks,
    ) -> u64 {
        tracker.advance(clock.monotonic_now(), &mut self.outputs);
        self.write(tracker.settled_until(), clock, enricher, sink)
    }

    /// Applies and writes everything left: the end of a trace.
    fn finish(
        &mut self,
        tracker: &mut Tracker,
        clock: &Clock,
        enricher: &mut Enricher,
        sink: &mut Sinks,
    ) -> u64 {
        tracker.finish(&mut self.outputs);
        self.write(u64::MAX, clock, enricher, sink)
    }

    /// Folds the tracker's outputs and writes what `settled` lets go.
    fn write(
        &mut self,
        settled: u64,
        clock: &Clock,
        enricher: &mut Enricher,
        sink: &mut Sinks,
    ) -> u64 {
        for output in self.outputs.drain(..) {
            self.folder.push(output);
        }
        let mut written = 0;
        self.folder.ready(settled, |line| {
            written += write_line(line, clock, enricher, sink);
        });
        written
    }
}

/// Writes a line to the sinks; returns 1 if it did, 0 for an exit the log has no use for.
fn write_line(line: Line, clock: &Clock, enricher: &mut Enricher, sink: &mut Sinks) -> u64 {
    let output = match line {
        Line::Summary(summary) => {
            sink.write(&enricher.summary_line(&summary, clock));
            return 1;
        }
        Line::Event(output) => output,
    };
    if let Output::Exit {
        actor,
        took_locks: false,
        ..
    } = output
    {
        // Exits only matter to the log for processes that had locks.
        enricher.forget(actor.pid);
        return 0;
    }
    sink.write(&enricher.line(&output, clock));
    if let Output::Exit { actor, .. } = output {
        enricher.forget(actor.pid);
    }
    1
}

fn start_line(clock: &Clock, lock_hooks: &str) -> EventLine {
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
        host: Some(this_host().into()),
        kernel: field(|u| u.release()),
        lock_hooks: Some(lock_hooks.to_owned()),
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
