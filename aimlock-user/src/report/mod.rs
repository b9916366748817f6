//! `aimlock report`: the post-mortem of a HOT incident, from the logs `aimlock trace` wrote.
//!
//! The logs are read in large chunks, parsed by several threads. A query that names a path,
//! a pid or orphans first finds, by a byte search, the inodes whose lines can match; one that
//! names a time span first replays each lock's holds and waits from a few fields of each line
//! to find the locks busy in it, and the stretch of their lines that tells it; with those (or
//! `--inode`, `--host`), only their lines are parsed and kept, each lock's by the shard thread of
//! its inode (beyond 2^20 lines, in a temporary file: see [`spill`]). Each lock's lines are then
//! put in time order across files and folded by that thread into holds, waits and refusals (a
//! file's POSIX locks by their byte ranges, as the kernel keeps them), which the query narrows
//! and the renderer tells.

mod busy;
mod candidates;
mod fast;
mod input;
mod journal;
mod line;
mod mapped;
mod posix;
mod processes;
mod render;
mod scan;
mod shards;
mod spill;
mod stored;
mod table;
mod timeline;

use std::{
    collections::{HashMap, HashSet},
    io::{BufWriter, Write},
    num::NonZeroUsize,
    sync::Arc,
};

use rayon::prelude::*;

use anyhow::{Context as _, Result};

use crate::{
    cli::{self, Inode},
    events::EventKind,
};
use line::{Exits, LockKey, Name, Names, Nanos};
use processes::Processes;
use render::Renderer;
use scan::{LockLines, Scan, Selection};
use spill::SortedLines;
use stored::Stored;
use timeline::Lock;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Logs written by `aimlock trace`: files, quoted globs of rotated files
    /// (`'trace.log*'`), gzip-compressed files, or `-` for stdin.
    #[arg(required = true, value_name = "LOG")]
    logs: Vec<String>,
    /// Only locks on files whose path matches this glob (`*` also matches `/`).
    #[arg(long, value_name = "GLOB")]
    path: Option<glob::Pattern>,
    /// Only locks on this inode: MAJOR:MINOR:INODE in decimal as the log names it
    /// (254:0:10010728), or in hexadecimal as /proc/locks does (fe:00:10010728).
    #[arg(long, value_name = "DEV:INO", value_parser = cli::parse_inode)]
    inode: Option<Inode>,
    /// Only locks this process took, held, released, waited for or was refused. Repeatable.
    #[arg(long)]
    pid: Vec<u32>,
    /// Only what was under way from this time on: RFC 3339 with its UTC offset
    /// (`2026-11-27T05:04:50Z`, `...-05:00`), or a duration before now (`2h`, `30min`).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<Nanos>,
    /// Only what was under way until this time (same forms as --since).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<Nanos>,
    /// Who held what, and who waited, at this instant (same forms as --since).
    #[arg(long, value_name = "TIME", value_parser = parse_time, conflicts_with_all = ["since", "until"])]
    at: Option<Nanos>,
    /// Only locks that outlived the process that took them.
    #[arg(long)]
    orphans: bool,
    /// Only locks on this host, as the log lines name it (`host`). Repeatable.
    #[arg(long, value_name = "NAME")]
    host: Vec<String>,
    /// Threads that read and parse the logs (default: one per CPU).
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<NonZeroUsize>,
    /// One JSON object per lock instead of the narrative.
    #[arg(long)]
    json: bool,
}

/// Locks told at a time, by all jobs, before their text is written.
const RENDER_BATCH: usize = 1024;
/// Locks whose narratives one job writes into one text: a few dozen, so that the jobs share a
/// batch evenly.
const LOCKS_PER_TEXT: usize = 32;

/// The command name aimlock's own lines carry (see [`leave_out_own_lines`]).
const OWN_COMMAND: &str = "aimlock";

/// Logs that cannot be reported on at all: none given, none found, empty or unreadable.
/// `aimlock` exits 2 for it.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

fn parse_time(text: &str) -> Result<Nanos, String> {
    cli::parse_time(text).map(line::nanos)
}

pub fn run(args: ReportArgs) -> Result<()> {
    keep_freed_memory(jobs(&args));
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    report_into(&args, &mut out)?;
    out.flush().context("cannot write the report")
}

/// Threads that read and parse the logs, and shards that keep the locks' lines.
fn jobs(args: &ReportArgs) -> usize {
    args.jobs
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get)
}

/// Freed memory is kept for what comes next: glibc would give it back to the kernel and take
/// it again, zeroed (a quarter of the time went there), and the static release's mimalloc
/// would do so sooner (see [`crate::allocator::give_memory_back_after_a_while`]). With glibc
/// and one job, one arena for every thread: memory freed in one thread's arena is not reused
/// by another's, and with one the pieces parsed are reused for the lines kept (the peak is an
/// eighth lower). With several, an arena for each thread: each shard takes and frees its
/// lines' memory in its own, and shards folding their locks in one arena wait on its lock (on
/// two cores, 0.8 s to fold a 1 GB log's locks against 0.3 s).
fn keep_freed_memory(jobs: usize) {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets the allocator's thresholds; nothing is allocated yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        if jobs == 1 {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
    #[cfg(target_env = "musl")]
    crate::allocator::give_memory_back_after_a_while();
    #[cfg(not(target_env = "gnu"))]
    let _ = jobs;
}

/// Reads the logs and writes the report; returns what was read.
fn report_into(args: &ReportArgs, out: &mut impl Write) -> Result<Scan> {
    report_reading(args, Reading::Selective, spill::KEPT_LINES, out)
}

/// Whether the lines a query cannot match are passed over (as always), or every line is
/// parsed (to check that passing over changes nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    Selective,
    #[cfg(test)]
    Everything,
    /// As `Selective`, with every line a piece of its own, merged with the others.
    #[cfg(test)]
    LineByLine,
}

/// `keep_lines`: lines kept in memory before they are written out (see [`spill`]).
fn report_reading(
    args: &ReportArgs,
    reading: Reading,
    keep_lines: usize,
    out: &mut impl Write,
) -> Result<Scan> {
    let sources = input::expand(&args.logs)?;
    let jobs = jobs(args);
    let selection = match reading {
        Reading::Selective => selection(args, &sources, jobs)?,
        #[cfg(test)]
        Reading::Everything => Selection::new(
            args.inode.map(|inode| on_any_host(inode.ino)),
            args.inode.map(Inode::dev_name),
            args.host.clone(),
            None,
        )
        .parsing_every_line(),
        #[cfg(test)]
        Reading::LineByLine => selection(args, &sources, jobs)?.in_pieces_of(1),
    };
    let mut scan = scan::scan(&sources, &selection, jobs, keep_lines)?;
    let end = tell_what_was_skipped(&scan)?;
    for failed in scan.shards.each(|_, shard| shard.spill_failed()) {
        failed.map_or(Ok(()), Err)?;
    }
    let own = scan.names.find(OWN_COMMAND);
    let (processes, pids_named) = Processes::of(&scan, own, &args.pid);
    tell_pids_unnamed(&args.pid, &pids_named);
    let before_fold = Arc::new(BeforeFold { own, processes });
    // The full read tells every hold, to check that leaving out the untold changes nothing;
    // reading line by line also gathers the first screens a lock at a time, to check that
    // putting the jobs' runs of locks together changes nothing.
    #[cfg(test)]
    let telling = Telling {
        every_hold: args.json || reading == Reading::Everything,
        locks_per_job: match reading {
            Reading::LineByLine => 1,
            _ => render::LOCKS_PER_JOB,
        },
    };
    #[cfg(not(test))]
    let telling = Telling {
        every_hold: args.json,
        locks_per_job: render::LOCKS_PER_JOB,
    };
    write_report(args, &mut scan, &before_fold, end, telling, jobs, out)?;
    Ok(scan)
}

/// An inode number whose lines are wanted on every host.
fn on_any_host(ino: u64) -> scan::Candidates {
    std::iter::once((ino, Vec::new())).collect()
}

/// The lines the query needs: of the inodes it names or that the first read finds (stdin
/// cannot be read twice: then every line is parsed), on the hosts it names.
fn selection(args: &ReportArgs, sources: &[input::Source], jobs: usize) -> Result<Selection> {
    let wanted = candidates::Wanted {
        path: args.path.as_ref(),
        pids: &args.pid,
        orphans: args.orphans,
    };
    let mut inodes = args.inode.map(|inode| on_any_host(inode.ino));
    let mut windows = None;
    let mut cold = Vec::new();
    if wanted.any() && sources.iter().all(input::Source::rereadable) {
        let mut found = candidates::inodes(sources, &wanted, jobs)?.unwrap_or_default();
        if let Some(inode) = args.inode {
            found.retain(|&ino, _| ino == inode.ino);
        }
        inodes = Some(found);
    }
    if let Some(span) = span(args)
        && args.inode.is_none()
        && sources.iter().all(input::Source::rereadable)
    {
        let busy = busy::locks(sources, span, jobs)?;
        inodes = Some(match inodes {
            Some(found) => candidates::both(found, busy.inodes),
            None => busy.inodes,
        });
        windows = Some(busy.windows);
        cold = busy.cold;
    }
    Ok(Selection::new(
        inodes,
        args.inode.map(Inode::dev_name),
        args.host.clone(),
        args.inode.as_ref().map(|inode| inode.ino),
    )
    .within(windows)
    .skipping(cold))
}

/// The time span the query narrows to, if any.
fn span(args: &ReportArgs) -> Option<busy::Span> {
    match (args.at, args.since, args.until) {
        (Some(at), _, _) => Some(busy::Span {
            since: Some(at),
            until: Some(at),
        }),
        (None, None, None) => None,
        // A span that ends before it begins: every line is read, as the timelines decide.
        (None, Some(since), Some(until)) if since > until => None,
        (None, since, until) => Some(busy::Span { since, until }),
    }
}

/// How much the report tells, and how.
#[derive(Clone, Copy)]
struct Telling {
    /// Every hold (`--json`), or only those a narrative tells.
    every_hold: bool,
    /// Locks each job goes through at a time for the first screens.
    locks_per_job: usize,
}

fn write_report(
    args: &ReportArgs,
    scan: &mut Scan,
    before_fold: &Arc<BeforeFold>,
    end: Nanos,
    telling: Telling,
    jobs: usize,
    out: &mut impl Write,
) -> Result<()> {
    let pool = scan::thread_pool(jobs)?;
    let untold_left_out = (!telling.every_hold).then_some(end);
    let names = Arc::new(std::mem::take(&mut scan.names));
    let locks = select(args, scan, before_fold, &names, untold_left_out, &pool)?;
    let several_hosts = locks.iter().any(|lock| lock.key.host != locks[0].key.host);
    let waits_by_process = pool.install(|| render::waits_by_process(&locks, telling.locks_per_job));
    let renderer = Renderer {
        names: &names,
        end,
        at: args.at,
        several_hosts,
        reused_pids: before_fold.processes.reused_pids(),
        locks: &locks,
        waits_by_process: &waits_by_process,
        locks_per_job: telling.locks_per_job,
    };
    if locks.is_empty() && !args.json {
        writeln!(out, "no lock in these logs matches")?;
    }
    // The first screens are gathered by every job, and written once told.
    if several_hosts && !args.json {
        let mut text = Vec::new();
        pool.install(|| renderer.fleet(&mut text, &locks))?;
        out.write_all(&text)?;
    }
    if locks.len() >= render::SUMMARY_FROM && !args.json {
        let mut text = Vec::new();
        pool.install(|| renderer.summary(&mut text, &locks))?;
        out.write_all(&text)?;
    }
    // Told by every job, a batch at a time, and written in order.
    for batch in locks.chunks(RENDER_BATCH) {
        let told: Vec<Vec<u8>> = pool.install(|| {
            if !args.json {
                return batch
                    .par_chunks(LOCKS_PER_TEXT)
                    .map(|locks| Ok(renderer.texts(locks)?.into_bytes()))
                    .collect::<Result<_>>();
            }
            batch
                .par_iter()
                .map(|lock| -> Result<Vec<u8>> {
                    let mut text = Vec::new();
                    serde_json::to_writer(&mut text, &renderer.json(lock))?;
                    writeln!(text)?;
                    Ok(text)
                })
                .collect::<Result<_>>()
        })?;
        for text in told {
            out.write_all(&text)?;
        }
    }
    Ok(())
}

/// Says on stderr what could not be read; fails when nothing could. The end of the logs.
fn tell_what_was_skipped(scan: &Scan) -> Result<Nanos, BadInput> {
    let all_empty = scan.sources.iter().all(|source| source.bytes == 0);
    for source in &scan.sources {
        let name = &source.name;
        if source.bytes == 0 && !all_empty {
            eprintln!("aimlock: {name}: empty");
        }
        let skipped = source.unreadable + source.unknown_events;
        if let Some(first) = source.first_skipped_line {
            eprintln!(
                "aimlock: {name}: skipped {skipped} of {} lines ({} unreadable, {} of unknown event types), the first at line {first}",
                source.lines, source.unreadable, source.unknown_events
            );
        }
        if source.text_format {
            eprintln!(
                "aimlock: {name}: looks like the output of `aimlock trace --format text`; report \
                 reads the JSON lines of `--format json`"
            );
        }
        if let Some(why) = &source.cut_short {
            eprintln!(
                "aimlock: {name}: read stopped after {} bytes: {why}",
                source.bytes
            );
        }
    }
    let names = || {
        let names: Vec<&str> = scan
            .sources
            .iter()
            .map(|source| source.name.as_str())
            .collect();
        names.join(", ")
    };
    if all_empty {
        return Err(BadInput(format!("{}: empty", names())));
    }
    scan.end.ok_or_else(|| {
        BadInput(format!(
            "{}: no line is one that `aimlock trace` writes (a JSON object with a \"ts\")",
            names()
        ))
    })
}

/// Says on stderr which of the pids asked for no lock line kept names.
fn tell_pids_unnamed(pids: &[u32], named: &[bool]) {
    for (pid, _) in pids.iter().zip(named).filter(|(_, named)| !**named) {
        eprintln!("aimlock: pid {pid} appears in no lock line read");
    }
}

/// What is done to each lock's lines before they are folded.
#[derive(Default)]
struct BeforeFold {
    /// aimlock's command name, if a line names it (see [`leave_out_own_lines`]).
    own: Option<Name>,
    processes: Processes,
}

impl BeforeFold {
    fn apply(&self, key: &LockKey, lines: &mut LockLines) {
        if let Some(own) = self.own {
            leave_out_own_lines(own, lines);
        }
        self.processes.share_with(key, lines);
    }
}

/// `aimlock` takes locks of its own: `trace` on the file it writes, `break` on the file it has
/// just freed, to probe whether it is free. Neither contends for anything: their lines are left
/// out, but not `break`'s release of another process's lock, which it took before it probed.
/// `own`: aimlock's command name.
fn leave_out_own_lines(own: Name, lines: &mut LockLines) {
    // When each aimlock process first took the lock.
    let mut took: HashMap<u32, Nanos> = HashMap::new();
    for record in lines.records.iter() {
        if record.actor().comm == own
            && matches!(record.event(), EventKind::Acquire | EventKind::Held)
        {
            let first = took.entry(record.actor().pid).or_insert(record.at());
            *first = (*first).min(record.at());
        }
    }
    lines.records.retain(|record| {
        let actor = record.actor();
        let own_lock = actor.comm == own
            && match record.event() {
                EventKind::Acquire | EventKind::Held | EventKind::Fail | EventKind::Wait => true,
                EventKind::Release => took
                    .get(&actor.pid)
                    .is_some_and(|&first| record.at() >= first),
                _ => false,
            };
        !own_lock
    });
}

/// Builds the timelines and keeps the locks the query asks for, oldest first; each shard's
/// on its own thread. With the end of the logs, each lock's holds that no narrative tells are
/// left out as it is built.
fn select(
    args: &ReportArgs,
    scan: &mut Scan,
    before_fold: &Arc<BeforeFold>,
    names: &Arc<Names>,
    untold_left_out: Option<Nanos>,
    pool: &rayon::ThreadPool,
) -> Result<Vec<Lock>> {
    // Files in the order of their first timestamps, so that rotated logs given in any order
    // read as one.
    let mut order: Vec<usize> = (0..scan.sources.len()).collect();
    order.sort_by_key(|&index| (scan.sources[index].first_ts.unwrap_or(u64::MAX), index));
    let mut rank = vec![0; order.len()];
    for (position, &index) in order.iter().enumerate() {
        rank[index] = position as u32;
    }
    let (since, until) = match args.at {
        Some(at) => (Some(at), Some(at)),
        None => (args.since, args.until),
    };
    let query = Query {
        hosts: args.host.clone(),
        path: args.path.clone(),
        pids: args.pid.clone(),
        orphans: args.orphans,
        since,
        until,
        untold_left_out,
        names: Arc::clone(names),
        rank,
    };
    let exits = Arc::new(Exits::new(std::mem::take(&mut scan.exits)));
    let before_fold = Arc::clone(before_fold);
    let built = scan.shards.each(move |_, shard| {
        let mut kept = Vec::new();
        shard.drain(|key, mut lines, sorted| {
            before_fold.apply(&key, &mut lines);
            if !lines.records.is_empty() || sorted.is_some() {
                let prepare = |line: &mut Stored| before_fold.processes.share_with_line(&key, line);
                let told = query.keep(key, lines, sorted, prepare, &exits)?;
                kept.extend(told);
            }
            Ok(())
        })?;
        Ok::<_, std::io::Error>(kept)
    });
    let mut locks = Vec::new();
    for shard in built {
        locks.extend(shard?);
    }
    // Hosts by name, each named by its place: a few, against a lock each.
    let hosts: HashSet<Name> = locks.iter().map(|lock| lock.key.host).collect();
    let mut hosts: Vec<Name> = hosts.into_iter().collect();
    hosts.sort_by_key(|&host| names.get(host));
    let host_rank: HashMap<Name, usize> = hosts.into_iter().zip(0..).collect();
    pool.install(|| {
        locks.par_sort_by_cached_key(|lock| {
            let key = &lock.key;
            (
                lock.first_time(),
                key.ino,
                key.range.start,
                host_rank[&key.host],
            )
        });
    });
    Ok(locks)
}

/// What a query keeps of the locks, for the threads of the shards.
struct Query {
    hosts: Vec<String>,
    path: Option<glob::Pattern>,
    pids: Vec<u32>,
    orphans: bool,
    since: Option<Nanos>,
    until: Option<Nanos>,
    untold_left_out: Option<Nanos>,
    names: Arc<Names>,
    /// Of each source, its place in time order.
    rank: Vec<u32>,
}

impl Query {
    /// The timelines of a lock's lines the query asks for; `sorted`, its lines written out in
    /// time order, each made ready by `prepare`.
    fn keep(
        &self,
        key: LockKey,
        lines: LockLines,
        sorted: Option<SortedLines>,
        prepare: impl Fn(&mut Stored),
        exits: &Exits,
    ) -> std::io::Result<Vec<Lock>> {
        let names = &self.names;
        let on_host =
            self.hosts.is_empty() || self.hosts.iter().any(|host| names.get(key.host) == host);
        let on_path = match &self.path {
            Some(glob) => lines
                .paths
                .iter()
                .flat_map(|seen| std::iter::once(seen.path).chain(seen.host))
                .any(|path| glob.matches(names.get(path))),
            None => true,
        };
        if !on_host || !on_path {
            return Ok(Vec::new());
        }
        // A span narrows the holds before the untold are left out: then none goes early.
        let pruning =
            (self.untold_left_out.is_some() && self.since.is_none() && self.until.is_none())
                .then_some(timeline::Pruning { pids: &self.pids });
        let built = timeline::build(key, lines, sorted, prepare, &self.rank, exits, pruning)?;
        let told = built
            .into_iter()
            .filter_map(|lock| lock.narrow(self.since, self.until))
            .filter(|lock| self.pids.is_empty() || self.pids.iter().any(|&pid| lock.involves(pid)))
            .filter(|lock| !self.orphans || lock.holds.iter().any(|hold| hold.orphaned))
            .map(|mut lock| {
                if let Some(end) = self.untold_left_out {
                    lock.leave_out_untold_holds(end);
                }
                lock
            })
            .collect();
        Ok(told)
    }
}

#[cfg(test)]
mod tests;
