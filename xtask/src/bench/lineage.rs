//! What the lineage hooks cost processes: a fork/exec-heavy shell loop that takes no locks
//! (every process leaves the fork and exec programs after one lookup), and the same
//! loop run by a process holding a flock lock (each child is followed: a record per fork and
//! per exec, and a look at its fdinfo), bare and under `aimlock trace`, alternated per round.
//! Measured in CPU time (the loop's processes, user and system), which a busy machine
//! disturbs far less than wall time.

use std::{
    fmt::Write as _,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, ensure};

use super::{
    Goal, Outcome, Tools,
    common::{Background, Stats, StopLine, stat_seconds},
};

/// Fork and exec of `/bin/true` per loop run.
const SPAWNS: u32 = 2000;
/// The goal: a process that holds no lock forks and execs at the bare speed, within noise.
const GOAL_VS_BARE: f64 = 1.1;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Loop {
    /// `sh -c 'for ...; do /bin/true; done'`.
    NoLock,
    /// The same loop under `flock FILE`: every child inherits the locked description.
    UnderFlock,
}

impl Loop {
    fn name(self) -> &'static str {
        match self {
            Self::NoLock => "no lock held",
            Self::UnderFlock => "under `flock FILE` (every child inherits the lock)",
        }
    }

    fn command(self, lockfile: &Path) -> Command {
        let script = format!("i=0; while [ $i -lt {SPAWNS} ]; do /bin/true; i=$((i+1)); done");
        let mut command = match self {
            Self::NoLock => Command::new("sh"),
            Self::UnderFlock => {
                let mut command = Command::new("flock");
                command.arg(lockfile).arg("sh");
                command
            }
        };
        command.args(["-c", &script]).stdout(Stdio::null());
        command
    }
}

const LOOPS: [Loop; 2] = [Loop::NoLock, Loop::UnderFlock];

pub fn lineage(tools: &Tools, runs: usize) -> Result<Outcome> {
    let lockfile = tools.scratch.join("lineage-lock");
    let log = tools.scratch.join("lineage-trace.json");
    // (bare, traced) µs per spawn, and traced/bare, per loop and round.
    let mut measured: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = vec![Default::default(); LOOPS.len()];
    let mut records = Vec::new();
    for round in 0..runs {
        for (index, &workload) in LOOPS.iter().enumerate() {
            // Alternated: the traced run first in every other round.
            let traced_first = round % 2 == 1;
            let mut bare = 0.0;
            let mut traced = 0.0;
            for traced_now in [traced_first, !traced_first] {
                if traced_now {
                    let tracer =
                        Background::aimlock(&tools.aimlock, "aimlock", &[], &log, &tools.scratch)?;
                    traced = timed(workload.command(&lockfile))?;
                    tracer.stop()?;
                    records.push(StopLine::read(&log)?.records);
                } else {
                    bare = timed(workload.command(&lockfile))?;
                }
            }
            let per_spawn = |seconds: f64| seconds * 1e6 / f64::from(SPAWNS);
            println!(
                "    round {}: {:50} CPU bare {:6.0} µs/spawn, traced {:6.0} µs/spawn",
                round + 1,
                workload.name(),
                per_spawn(bare),
                per_spawn(traced)
            );
            measured[index].0.push(per_spawn(bare));
            measured[index].1.push(per_spawn(traced));
            measured[index].2.push(traced / bare);
        }
    }
    let mut out = String::new();
    writeln!(out, "## 9. Lineage hooks on fork and exec")?;
    writeln!(out)?;
    writeln!(
        out,
        "A shell loop that forks and execs `/bin/true` {SPAWNS} times; the CPU time (user and \
         system) of its processes, which includes what the kernel programs cost them, bare and \
         under `aimlock trace --output FILE` (no filter), the two alternated \
         within each of {runs} rounds. Without a lock, every process leaves the lineage \
         programs (`task:task_newtask`, `sched:sched_process_exec`) after one map lookup; \
         what remains is the hooks themselves and the exit and free hooks every process \
         passes. (`--follow-unix-sockets`, off here, would add syscall tracepoints, which \
         slow every system call.) Under `flock FILE`, every child inherits the locked \
         description: each fork and exec writes a record, and each exec a look at the new \
         program's fdinfo (flock(1) opens the file without close-on-exec, so every \
         `/bin/true` keeps it: a pair of `inherit` lines when the tracer reads its fdinfo \
         before it exits, which it rarely lives long enough for)."
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| loop | CPU µs per fork+exec, bare (median, min - max) | traced | x bare (median) |"
    )?;
    writeln!(out, "| --- | ---: | ---: | ---: |")?;
    let mut goals = Vec::new();
    for (index, workload) in LOOPS.iter().enumerate() {
        let (bare, traced, ratio) = &measured[index];
        let (bare, traced, ratio) = (Stats::of(bare), Stats::of(traced), Stats::of(ratio));
        writeln!(
            out,
            "| {} | {:.0} ({:.0} - {:.0}) | {:.0} ({:.0} - {:.0}) | {:.2} |",
            workload.name(),
            bare.median,
            bare.min,
            bare.max,
            traced.median,
            traced.min,
            traced.max,
            ratio.median
        )?;
        if *workload == Loop::NoLock {
            goals.push(Goal {
                goal: format!(
                    "fork+exec of a process holding no lock under the tracer within \
                     {GOAL_VS_BARE}x bare"
                ),
                figure: format!("{:.2}x", ratio.median),
                met: ratio.median <= GOAL_VS_BARE,
                why: (ratio.median > GOAL_VS_BARE).then(|| {
                    "every exit is recorded (sched_process_exit), and every fork and free \
                     runs a program"
                        .to_owned()
                }),
            });
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "Records the tracer received per traced run, from the whole machine (both loops \
         alternated, all rounds): {}.",
        records
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    Ok(Outcome {
        markdown: out,
        goals,
    })
}

/// CPU seconds (user and system) of a command and every process it waited for, run to
/// completion, which must succeed.
fn timed(mut command: Command) -> Result<f64> {
    let before = children_cpu_seconds()?;
    let status = command
        .status()
        .with_context(|| format!("run {command:?}"))?;
    ensure!(status.success(), "{command:?} exited with {status}");
    Ok(children_cpu_seconds()? - before)
}

/// `cutime` and `cstime` of this process (fields 16 and 17 of /proc/PID/stat in proc(5)): the
/// CPU time of the children it has waited for.
fn children_cpu_seconds() -> Result<f64> {
    stat_seconds("/proc/self/stat", [13, 14])
}
