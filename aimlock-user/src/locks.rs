//! `aimlock locks`: the current lock table as it really is, from /proc alone (no eBPF).
//!
//! `/proc/locks` names the process that TOOK each lock, which may be long gone; the fdinfo of
//! every process names the locks on each of its fds. Merging the two, and telling open file
//! descriptions apart with kcmp, gives every lock its real holders, including the locks that
//! `/proc/locks` hides or attributes to a dead pid.

mod chains;
mod table;

use std::io::{self, IsTerminal as _, Write};

use anyhow::{Context as _, Result, bail};
use globset::GlobMatcher;

use crate::{
    cli,
    events::LockKind,
    lock_table::{self, Lock},
};
use chains::Chain;

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
    let columns = args
        .output
        .as_deref()
        .map(table::parse_columns)
        .transpose()?;
    let path_glob = args.path.as_deref().map(path_matcher).transpose()?;

    let (mut locks, blind) = lock_table::take();
    // Any lock's holders may be among the processes this user may not read.
    let unseen = !blind.denied.is_empty();
    let total = locks.len();
    let wanted = |lock: &Lock| {
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
    };
    let shown: Vec<bool> = locks.iter().map(wanted).collect();
    // Chains run through every lock, shown or not; those that touch a shown lock are shown.
    let chains: Vec<Chain> = chains::find(&locks)
        .into_iter()
        .filter(|chain| chain.steps.iter().any(|step| shown[step.lock]))
        .collect();
    let chains_json = chains_json(&chains, &locks);
    let chain_lines: Vec<String> = chains
        .iter()
        .filter(|chain| chain.steps.len() > 1 || chain.deadlock_from.is_some())
        .map(|chain| chain_line(chain, &locks))
        .collect();
    let mut shown = shown.into_iter();
    locks.retain(|_| shown.next().unwrap_or(false));
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
        json_document(&mut out, &locks, chains_json, unseen)
    } else {
        let layout = table::Layout {
            headings: !args.no_headings,
            raw: args.raw,
            width: (!args.no_truncate && !args.raw && io::stdout().is_terminal())
                .then(terminal_width)
                .flatten(),
        };
        let columns = columns.unwrap_or_else(|| table::default_columns(&locks));
        table::write(&mut out, &locks, &columns, &layout, unseen).and_then(|()| {
            // Below the table for a reader; left out of the forms scripts parse.
            if args.raw || args.no_headings || chain_lines.is_empty() {
                return Ok(());
            }
            writeln!(out)?;
            chain_lines
                .iter()
                .try_for_each(|line| writeln!(out, "{line}"))
        })
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

/// `{"locks": [...], "chains": [...]}`, each lock's `orphan` the verdict: true, false, or null
/// for unknown.
fn json_document(
    out: &mut impl Write,
    locks: &[Lock],
    chains: serde_json::Value,
    unseen: bool,
) -> io::Result<()> {
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
    let document = serde_json::json!({ "locks": locks, "chains": chains });
    serde_json::to_writer_pretty(&mut *out, &document)?;
    writeln!(out)
}

/// The chains as JSON: each step's process, the lock it waits for and who holds it.
fn chains_json(chains: &[Chain], locks: &[Lock]) -> serde_json::Value {
    chains
        .iter()
        .map(|chain| {
            let steps: Vec<serde_json::Value> = chain
                .steps
                .iter()
                .map(|step| {
                    let lock = &locks[step.lock];
                    let mut step_json = serde_json::json!({
                        "pid": step.pid,
                        "comm": step.comm,
                        "waits_for": {
                            "kind": lock.kind,
                            "mode": lock.mode,
                            "dev": lock.dev,
                            "ino": lock.ino,
                            "path": lock.path,
                            "start": lock.start,
                            "end": lock.end,
                            "orphan": lock.orphan,
                        },
                        "held_by": step.held_by,
                    });
                    if let Some(host_path) = &lock.host_path {
                        step_json["waits_for"]["host_path"] = host_path.as_str().into();
                    }
                    step_json
                })
                .collect();
            let mut value = serde_json::json!({
                "steps": steps,
                "deadlock": chain.deadlock_from.is_some(),
            });
            if let Some(from) = chain.deadlock_from {
                value["cycle_from"] = from.into();
            }
            value
        })
        .collect()
}

/// `wait chain: 30(make) waits for /run/a.lock (flock write) held by 20(sh), and 20(sh) waits
/// for ...`, or `deadlock: ...` when the chain comes back to a process in it.
fn chain_line(chain: &Chain, locks: &[Lock]) -> String {
    let name = |pid: u32, comm: &Option<String>| match comm {
        Some(comm) => format!("{pid}({comm})"),
        None => pid.to_string(),
    };
    let steps: Vec<String> = chain
        .steps
        .iter()
        .map(|step| {
            let lock = &locks[step.lock];
            let file = match &lock.path {
                Some(path) => path.clone(),
                None => format!("{}:{}", lock.dev, lock.ino),
            };
            let range = match (lock.kind, lock.end) {
                (LockKind::Flock | LockKind::Lease, _) => String::new(),
                (_, Some(end)) => format!(" {}-{end}", lock.start),
                (_, None) => format!(" {}-EOF", lock.start),
            };
            let holders: Vec<String> = step
                .held_by
                .iter()
                .map(|holder| name(holder.pid, &holder.comm))
                .collect();
            let holders = match holders.is_empty() {
                true => "no process this user can see".to_owned(),
                false => holders.join(", "),
            };
            let orphan = if lock.orphan { " (an orphan)" } else { "" };
            format!(
                "{} waits for {file} ({} {}{range}) held by {holders}{orphan}",
                name(step.pid, &step.comm),
                lock.kind.name(),
                lock.mode.name(),
            )
        })
        .collect();
    let label = match chain.deadlock_from {
        Some(_) => "deadlock",
        None => "wait chain",
    };
    format!("{label}: {}", steps.join(", and "))
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
