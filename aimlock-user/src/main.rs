//! aimlock: trace Linux file locks with eBPF, and find the locks that outlive their owner.

#[cfg(target_env = "musl")]
mod allocator;
mod break_lock;
mod btf;
mod cli;
mod clock;
mod decode;
mod enrich;
mod events;
mod file_paths;
mod fold;
mod followed_paths;
mod host_paths;
mod kernel_views;
#[cfg(any(target_env = "musl", test))]
mod libc_mem;
mod loader;
mod lock_table;
mod locks;
mod metrics;
mod otlp;
mod privileges;
mod procfs;
mod report;
mod sinks;
mod trace;
mod tracker;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "aimlock", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Record every lock acquisition, wait, failure and release, and flag the locks that
    /// outlive the process that took them.
    Trace(trace::TraceArgs),
    /// The current lock table as it really is: real holders, orphans, waiters.
    Locks(locks::LocksArgs),
    /// The post-mortem of a HOT incident, from the logs `aimlock trace` wrote.
    Report(report::ReportArgs),
    /// Release an orphaned flock or OFD lock through one of its holders' descriptors
    /// (a dry run unless --yes).
    Break(break_lock::BreakArgs),
    /// Print the completion script for SHELL, generated from this binary's options.
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (aimlock.1, aimlock-trace.1, ...) into DIR.
    Man { dir: std::path::PathBuf },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("aimlock: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Trace(args) => trace::run(args).await,
            Command::Locks(args) => locks::run(args),
            Command::Report(args) => report::run(args),
            Command::Break(args) => break_lock::run(args),
            Command::Completions { shell } => {
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "aimlock",
                    &mut std::io::stdout(),
                );
                Ok(())
            }
            Command::Man { dir } => clap_mangen::generate_to(Cli::command(), &dir).map_err(|err| {
                anyhow::anyhow!("cannot write the man pages into {}: {err}", dir.display())
            }),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("aimlock: {err:#}");
            if err.is::<report::BadInput>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Help and version go to stdout as clap prints them; a bad command line is one line on stderr
/// and exit 2.
fn usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = err.print();
        return if err.use_stderr() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    // clap's first paragraph, which may list arguments on lines of their own, on one line,
    // then its suggestion for a mistyped name.
    let rendered = err.render().to_string();
    let message = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    match suggestion(&err) {
        Some(suggested) => eprintln!("aimlock: {message}; did you mean {suggested}? (see --help)"),
        None => eprintln!("aimlock: {message} (see --help)"),
    }
    ExitCode::from(2)
}

/// The names clap found close to a mistyped subcommand, flag or value.
fn suggestion(err: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    let quoted = |names: &[String]| {
        names
            .iter()
            .map(|name| format!("'{name}'"))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    [
        ContextKind::SuggestedSubcommand,
        ContextKind::SuggestedArg,
        ContextKind::SuggestedValue,
    ]
    .into_iter()
    .find_map(|kind| match err.get(kind)? {
        ContextValue::String(name) => Some(quoted(std::slice::from_ref(name))),
        ContextValue::Strings(names) if !names.is_empty() => Some(quoted(names)),
        _ => None,
    })
}
