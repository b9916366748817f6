//! `cargo xtask bench`: aimlock against the floor (empty programs on the same hooks) and against
//! the tools operators would use instead; writes docs/bench.md and holds the figures against
//! the goals.
//!
//! Sections: overhead on the worst case (a tight lock/unlock loop), the highest lossless event
//! rate, `aimlock locks` against `lslocks`, `aimlock report` against `jq`, the tracer's peak
//! memory with 100,000 locks held, its table seeded from and reconciled with the kernel's, and
//! its paths and memory under a million short-lived processes, and what real applications pay
//! (SQLite transactions, dpkg's lock churn, `flock(1)` jobs), and what the lineage hooks cost
//! a fork/exec-heavy workload.

mod applications;
mod churn;
pub mod common;
mod kernel_table;
mod lineage;
mod locks;
mod memory;
mod overhead;
mod perf_stat;
pub mod rate;
mod report;

use std::{fmt::Write as _, fs, path::PathBuf, time::Instant};

use anyhow::{Context as _, Result};

use crate::{Step, arch::Arch, cargo, dist, run_step, setup, workspace_root};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    Overhead,
    Rate,
    Locks,
    Report,
    Memory,
    KernelTable,
    Churn,
    Applications,
    Lineage,
}

pub struct Options {
    /// Rounds of each comparison (at least 3).
    pub runs: usize,
    /// Run only this section.
    pub only: Option<Section>,
}

/// The binaries and the scratch directory the sections share.
pub struct Tools {
    pub aimlock: PathBuf,
    pub lockwork: PathBuf,
    pub hookfloor: PathBuf,
    /// On the same disk as the workspace, so a log is written where a real one would be.
    pub scratch: PathBuf,
}

/// A goal from the issue, the figure held against it, and, when missed, the measured reason.
pub struct Goal {
    pub goal: String,
    pub figure: String,
    pub met: bool,
    pub why: Option<String>,
}

/// A section of docs/bench.md and the goals it measured.
pub struct Outcome {
    pub markdown: String,
    pub goals: Vec<Goal>,
}

pub fn bench(options: &Options) -> Result<()> {
    let runs = options.runs.max(3);
    setup::setup()?;
    // What operators run: the static release binary, its allocator included.
    let aimlock = dist::build_static_binary(Arch::X86_64)?;
    run_step(
        Step("build lockwork and hookfloor (release)"),
        cargo()
            .args(["build", "--release", "--package", "aimlock-tests"])
            .args(["--bin", "lockwork", "--bin", "hookfloor"]),
    )?;
    let root = workspace_root();
    let tools = Tools {
        aimlock,
        lockwork: root.join("target/release/lockwork"),
        hookfloor: root.join("target/release/hookfloor"),
        scratch: root.join("target/bench"),
    };
    let _ = fs::remove_dir_all(&tools.scratch);
    fs::create_dir_all(&tools.scratch)
        .with_context(|| format!("create {}", tools.scratch.display()))?;

    let started = Instant::now();
    let load_before = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let selected = |section| options.only.is_none_or(|only| only == section);
    let mut outcomes = Vec::new();
    if selected(Section::Overhead) {
        println!("==> bench: overhead on the worst case");
        outcomes.push(overhead::overhead(&tools, runs)?);
    }
    if selected(Section::Rate) {
        println!("==> bench: lossless event rate");
        outcomes.push(rate::lossless_rate(&tools)?);
    }
    if selected(Section::Locks) {
        println!("==> bench: aimlock locks against lslocks");
        outcomes.push(locks::locks_against_lslocks(&tools, runs)?);
    }
    if selected(Section::Report) {
        println!("==> bench: aimlock report against jq");
        outcomes.push(report::report_against_jq(&tools, runs)?);
    }
    if selected(Section::Memory) {
        println!("==> bench: peak memory with 100,000 held locks");
        outcomes.push(memory::peak_memory(&tools, runs)?);
    }
    if selected(Section::KernelTable) {
        println!("==> bench: the tracer's table seeded from and reconciled with the kernel's");
        outcomes.push(kernel_table::kernel_table(&tools, runs)?);
    }
    if selected(Section::Churn) {
        println!("==> bench: paths under churn, a million short-lived processes");
        outcomes.push(churn::churn(&tools)?);
    }
    if selected(Section::Applications) {
        println!("==> bench: applications: SQLite, dpkg, flock(1)");
        outcomes.push(applications::applications(&tools, runs)?);
    }
    if selected(Section::Lineage) {
        println!("==> bench: lineage hooks on a fork/exec-heavy loop");
        outcomes.push(lineage::lineage(&tools, runs)?);
    }
    let _ = fs::remove_dir_all(&tools.scratch);

    let load = format!(
        "load average (1, 5, 15 min) before: {}; after: {}",
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let document = document(
        &outcomes,
        runs,
        options.only,
        started.elapsed().as_secs(),
        &load,
    )?;
    let path = root.join("docs/bench.md");
    fs::write(&path, document).with_context(|| format!("write {}", path.display()))?;
    println!("==> wrote {}", path.display());
    println!();
    for goal in outcomes.iter().flat_map(|outcome| &outcome.goals) {
        println!(
            "{:6} {}: {}",
            if goal.met { "met" } else { "MISSED" },
            goal.goal,
            goal.figure
        );
    }
    Ok(())
}

fn document(
    outcomes: &[Outcome],
    runs: usize,
    only: Option<Section>,
    seconds: u64,
    load: &str,
) -> Result<String> {
    let mut out = String::new();
    writeln!(out, "# Benchmarks")?;
    writeln!(out)?;
    writeln!(
        out,
        "Generated by `cargo xtask bench` ({runs} rounds{}) in {} min {} s; every figure below \
         comes from that run. The machine is shared and noisy: compare figures within one \
         run, and read ratios (computed within each round, then the median taken) rather than \
         absolute times.",
        only.map_or(String::new(), |section| format!(
            ", only the {section:?} section"
        )),
        seconds / 60,
        seconds % 60
    )?;
    writeln!(out)?;
    writeln!(out, "## Machine")?;
    writeln!(out)?;
    for line in common::machine() {
        writeln!(out, "- {line}")?;
    }
    writeln!(
        out,
        "- aimlock: the static release binary (musl, mimalloc), as `cargo xtask dist` builds it"
    )?;
    writeln!(out, "- Machine {load}")?;
    writeln!(out)?;
    writeln!(out, "## Goals")?;
    writeln!(out)?;
    writeln!(out, "| goal | measured | met |")?;
    writeln!(out, "| --- | --- | --- |")?;
    let goals: Vec<&Goal> = outcomes.iter().flat_map(|outcome| &outcome.goals).collect();
    for goal in &goals {
        writeln!(
            out,
            "| {} | {} | {} |",
            goal.goal,
            goal.figure,
            if goal.met { "met" } else { "**missed**" }
        )?;
    }
    writeln!(out)?;
    for outcome in outcomes {
        writeln!(out, "{}", outcome.markdown.trim_end())?;
        writeln!(out)?;
    }
    let missed: Vec<&&Goal> = goals.iter().filter(|goal| !goal.met).collect();
    if !missed.is_empty() {
        writeln!(out, "## Missed goals: why, and what would close the gap")?;
        writeln!(out)?;
        for goal in missed {
            writeln!(
                out,
                "- **{}** ({}): {}",
                goal.goal,
                goal.figure,
                goal.why.as_deref().unwrap_or("no reason measured")
            )?;
        }
    }
    Ok(out)
}
