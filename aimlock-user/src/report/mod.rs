//! `aimlock report`: the post-mortem of a HOT incident, from the logs `aimlock trace` wrote.
//!
//! The logs are read once, in large chunks. With `--inode`, a byte search picks the lines
//! that can be about the lock (and the exits) and only those are parsed. Each lock's lines are
//! then put in time order across files and folded into holds, waits and refusals (a file's
//! POSIX locks by their byte ranges, as the kernel keeps them), which the query narrows and
//! the renderer tells.

mod input;
mod line;
mod posix;
mod render;
mod timeline;

use std::{
    io::{BufWriter, Write},
    time::SystemTime,
};

use anyhow::{Context as _, Result};

use input::{Prefilter, Scan};
use line::Nanos;
use render::Renderer;
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
    /// Only locks on this inode, as the log names it: MAJ:MIN:INO (such as 254:0:10010728).
    #[arg(long, value_name = "DEV:INO", value_parser = parse_inode)]
    inode: Option<(String, u64)>,
    /// Only locks this process took, held, released, waited for or was refused. Repeatable.
    #[arg(long)]
    pid: Vec<u32>,
    /// Only what was under way from this time on: RFC 3339 in UTC, or a duration before now
    /// (`2h`, `30min`).
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
    /// One JSON object per lock instead of the narrative.
    #[arg(long)]
    json: bool,
}

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

fn parse_inode(text: &str) -> Result<(String, u64), String> {
    let bad = || format!("{text:?} is not MAJ:MIN:INO (such as 254:0:10010728)");
    let (dev, ino) = text.rsplit_once(':').ok_or_else(bad)?;
    let (major, minor) = dev.split_once(':').ok_or_else(bad)?;
    let numbers = [major, minor]
        .iter()
        .all(|part| part.parse::<u32>().is_ok());
    match ino.parse() {
        Ok(ino) if numbers => Ok((dev.to_owned(), ino)),
        _ => Err(bad()),
    }
}

fn parse_time(text: &str) -> Result<Nanos, String> {
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(line::nanos(time));
    }
    let ago = text.strip_suffix(" ago").unwrap_or(text);
    humantime::parse_duration(ago)
        .ok()
        .and_then(|ago| SystemTime::now().checked_sub(ago))
        .map(line::nanos)
        .ok_or_else(|| format!("{text:?} is neither an RFC 3339 time nor a duration such as 2h"))
}

pub fn run(args: ReportArgs) -> Result<()> {
    let sources = input::expand(&args.logs)?;
    let prefilter = match &args.inode {
        Some((dev, ino)) => Prefilter::Inode {
            dev: dev.clone(),
            ino: *ino,
        },
        None => Prefilter::Everything,
    };
    let mut scan = input::scan(&sources, &prefilter)?;
    tell_what_was_skipped(&scan)?;
    let Some(end) = scan.end else {
        return Ok(());
    };
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    write_report(&args, &mut scan, end, &mut out)?;
    out.flush().context("cannot write the report")
}

fn write_report(
    args: &ReportArgs,
    scan: &mut Scan,
    end: Nanos,
    out: &mut impl Write,
) -> Result<()> {
    let locks = select(args, scan);
    let renderer = Renderer {
        names: &scan.names,
        end,
        at: args.at,
    };
    if locks.is_empty() && !args.json {
        writeln!(out, "no lock in these logs matches")?;
    }
    for lock in &locks {
        if args.json {
            serde_json::to_writer(&mut *out, &renderer.json(lock))?;
            writeln!(out)?;
        } else {
            renderer.text(out, lock)?;
        }
    }
    Ok(())
}

/// Says on stderr what could not be read; fails when nothing could.
fn tell_what_was_skipped(scan: &Scan) -> Result<(), BadInput> {
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
        if let Some(why) = &source.cut_short {
            eprintln!(
                "aimlock: {name}: read stopped after {} bytes: {why}",
                source.bytes
            );
        }
    }
    if all_empty {
        let names: Vec<&str> = scan
            .sources
            .iter()
            .map(|source| source.name.as_str())
            .collect();
        return Err(BadInput(format!("{}: empty", names.join(", "))));
    }
    Ok(())
}

/// Builds the timelines and keeps the locks the query asks for, oldest first.
fn select(args: &ReportArgs, scan: &mut Scan) -> Vec<Lock> {
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
    let names = &scan.names;
    let mut locks: Vec<Lock> = std::mem::take(&mut scan.locks)
        .into_iter()
        .filter(|(_, lines)| match &args.path {
            Some(glob) => lines
                .paths
                .iter()
                .any(|&path| glob.matches(names.get(path))),
            None => true,
        })
        .flat_map(|(key, lines)| timeline::build(key, lines, &rank, &scan.exits))
        .filter_map(|lock| lock.narrow(since, until))
        .filter(|lock| args.pid.is_empty() || args.pid.iter().any(|&pid| lock.involves(pid)))
        .filter(|lock| !args.orphans || lock.holds.iter().any(|hold| hold.orphaned))
        .collect();
    locks.sort_by_key(|lock| (lock.first_time(), lock.key.ino, lock.key.range.start));
    locks
}

#[cfg(test)]
mod tests;
