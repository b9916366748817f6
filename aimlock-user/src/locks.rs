//! `aimlock locks`: the current lock table as it really is, from /proc alone (no eBPF).
//!
//! `/proc/locks` names the process that TOOK each lock, which may be long gone; the fdinfo of
//! every process names the locks on each of its fds. Merging the two, and telling open file
//! descriptions apart with kcmp, gives every lock its real holders, including the locks that
//! `/proc/locks` hides or attributes to a dead pid.

mod table;

use std::io::{self, IsTerminal as _, Write};

use anyhow::{Context as _, Result, bail};
use globset::GlobMatcher;

use crate::{
    cli,
    lock_table::{self, Lock},
};

#[derive(Debug, clap::Args)]
#[command(after_help = table::columns_help())]
pub struct LocksArgs {
    /// Columns to show, comma-separated; `+COLS` adds them to the default ones.
    #[arg(short = 'o', long = "output", value_name = "COLS")]
    output: Option<String>,
    /// Leave out the heading line.
    #[arg(short = 'n', long = "noheadings")]
    no_headings: bool,
    /// Raw output: cells separated by one space, unaligned, with whitespace escaped as \xHH.
    #[arg(short = 'r', long = "raw")]
    raw: bool,
    /// Never shorten text to fit the terminal.
    #[arg(short = 'u', long = "notruncate")]
    no_truncate: bool,
    /// One JSON document, `{"locks": [...]}`, with every field.
    #[arg(short = 'J', long = "json", conflicts_with_all = ["output", "no_headings", "raw", "no_truncate"])]
    json: bool,
    /// Only orphaned locks (ORPHAN yes: taker gone, holders still there); `--orphans=all` also
    /// those whose taker cannot be known (ORPHAN unknown: every OFD lock, holders hidden from
    /// this user).
    #[arg(long, value_name = "WHICH", value_enum, num_args = 0..=1, require_equals = true,
          default_missing_value = "yes")]
    orphans: Option<Orphans>,
    /// Only locks taken or held by this process.
    #[arg(short = 'p', long = "pid", value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pid: Option<u32>,
    /// Only locks on files whose path matches GLOB (`*` stays within a directory, `**` does
    /// not).
    #[arg(long = "path", value_name = "GLOB")]
    path: Option<String>,
}

/// Which locks `--orphans` keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Orphans {
    /// Orphaned for certain.
    Yes,
    /// Orphaned, or maybe: the taker cannot be known.
    All,
}

pub fn run(args: LocksArgs) -> Result<()> {
    let columns = match &args.output {
        Some(list) => table::parse_columns(list)?,
        None => table::DEFAULT_COLUMNS.to_vec(),
    };
    let path_glob = args.path.as_deref().map(path_matcher).transpose()?;

    let (mut locks, blind) = lock_table::take();
    // Any lock's holders may be among the processes this user may not read.
    let unseen = !blind.denied.is_empty();
    let total = locks.len();
    locks.retain(|lock| {
        args.orphans
            .is_none_or(|wanted| match table::orphan_verdict(lock, unseen) {
                table::Verdict::Yes => true,
                table::Verdict::Unknown => wanted == Orphans::All,
                table::Verdict::No => false,
            })
            && args.pid.is_none_or(|pid| involves(lock, pid))
            && path_glob.as_ref().is_none_or(|glob| {
                // A container's file matches by the path it sees or the host's.
                [&lock.path, &lock.host_path]
                    .into_iter()
                    .flatten()
                    .any(|path| glob.is_match(path))
            })
    });
    if let Some(pid) = args.pid
        && !cli::process_exists(pid)
    {
        // A dead pid may still be recorded as the taker of the locks it left behind.
        if locks.is_empty() {
            bail!("no process {pid} is running, and no lock names it as its taker");
        }
        eprintln!("aimlock: no process {pid} is running: these are the locks it took");
    }

    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let written = if args.json {
        json_document(&mut out, &locks, unseen)
    } else {
        let layout = table::Layout {
            headings: !args.no_headings,
            raw: args.raw,
            width: (!args.no_truncate && !args.raw && io::stdout().is_terminal())
                .then(terminal_width)
                .flatten(),
        };
        table::write(&mut out, &locks, &columns, &layout, unseen)
    };
    match written.and_then(|()| out.flush()) {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {}
        other => other.context("cannot write the lock table")?,
    }
    for note in blind.notes() {
        eprintln!("aimlock: {note}");
    }
    if locks.is_empty() {
        if total == 0 {
            eprintln!("aimlock: no lock is held");
        } else {
            eprintln!("aimlock: none of the {total} locks held matches");
        }
    }
    Ok(())
}

/// `{"locks": [...]}`, each lock's `orphan` the verdict: true, false, or null for unknown.
fn json_document(out: &mut impl Write, locks: &[Lock], unseen: bool) -> io::Result<()> {
    let locks = locks
        .iter()
        .map(|lock| {
            let mut value = serde_json::to_value(lock)?;
            value["orphan"] = match table::orphan_verdict(lock, unseen) {
                table::Verdict::Yes => true.into(),
                table::Verdict::No => false.into(),
                table::Verdict::Unknown => serde_json::Value::Null,
            };
            Ok(value)
        })
        .collect::<serde_json::Result<Vec<_>>>()?;
    serde_json::to_writer_pretty(&mut *out, &serde_json::json!({ "locks": locks }))?;
    writeln!(out)
}

/// A lock concerns a process that took it or holds it.
fn involves(lock: &Lock, pid: u32) -> bool {
    i64::from(lock.pid) == i64::from(pid) || lock.holders.iter().any(|holder| holder.pid == pid)
}

fn path_matcher(glob: &str) -> Result<GlobMatcher> {
    Ok(globset::GlobBuilder::new(glob)
        .literal_separator(true)
        .build()
        .with_context(|| format!("invalid --path glob {glob:?}"))?
        .compile_matcher())
}

fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills a winsize; on failure it is left zeroed and ignored.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_globs_keep_to_one_directory_unless_doubled() {
        let one = path_matcher("/tmp/*.lock").unwrap();
        assert!(one.is_match("/tmp/a.lock"));
        assert!(!one.is_match("/tmp/sub/a.lock"));
        assert!(
            path_matcher("/tmp/**/*.lock")
                .unwrap()
                .is_match("/tmp/sub/a.lock")
        );
        let err = path_matcher("/tmp/[").unwrap_err();
        assert!(format!("{err:#}").starts_with("invalid --path glob \"/tmp/[\""));
    }
}
