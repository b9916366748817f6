//! The highest lock-event rate `aimlock trace` records without loss, and what it loses at twice
//! that rate.
//!
//! A copy of lockwork with a name of its own generates flock pairs at a fixed rate, and the
//! tracer only records that name (`--comm`), so its stop line counts exactly that workload:
//! two records per pair and one for the process's exit.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, ensure};

use super::{
    Goal, Outcome, Tools,
    common::{Background, StopLine, cpu_seconds},
};

/// The workload's command name, unique on the machine so that nothing else is recorded.
const WORKLOAD_NAME: &str = "lw-bench-rate";
const PROBE_SECONDS: f64 = 2.0;
const FIRST_RATE: f64 = 250_000.0;
const GOAL_RATE: f64 = 1_000_000.0;
/// The rate the tracer should record without loss, using at most one core.
const HIGH_GOAL_RATE: f64 = 4_000_000.0;
/// The search stops probing new rates after this long.
const SEARCH_BUDGET: Duration = Duration::from_secs(150);
/// A probe counts as run at its rate when the workload reached this share of it.
const REACHED: f64 = 0.95;

struct Probe {
    target: f64,
    achieved: f64,
    threads: u32,
    expected: u64,
    stop: StopLine,
    /// The tracer's CPU seconds per second of workload.
    tracer_cpu: f64,
    /// The machine's 1-minute load average right after the workload: other work competing
    /// with the tracer for the cores.
    load: f64,
}

impl Probe {
    fn missing(&self) -> i64 {
        self.expected as i64 - self.stop.records as i64
    }

    fn reached(&self) -> bool {
        self.achieved >= REACHED * self.target
    }
}

pub fn lossless_rate(tools: &Tools) -> Result<Outcome> {
    let workload = tools.scratch.join(WORKLOAD_NAME);
    fs::copy(&tools.lockwork, &workload)
        .with_context(|| format!("copy lockwork to {}", workload.display()))?;
    let started = Instant::now();
    let mut runner = Runner {
        tools,
        workload: &workload,
        threads: 1,
        probes: Vec::new(),
    };

    // Double the rate until the tracer loses records or the workload cannot go faster...
    let mut rate = FIRST_RATE;
    loop {
        let probe = runner.probe(rate)?;
        let go_on = probe.stop.lost == 0 && probe.reached();
        if !go_on || started.elapsed() > SEARCH_BUDGET {
            break;
        }
        rate *= 2.0;
    }
    // ...then bisect between the highest lossless rate and the lowest lossy one.
    while let (Some(low), Some(high)) = (runner.best_lossless(), runner.lowest_lossy()) {
        if high / low < 1.15 || started.elapsed() > SEARCH_BUDGET {
            break;
        }
        runner.probe((low * high).sqrt().round())?;
    }
    for goal in [GOAL_RATE, HIGH_GOAL_RATE] {
        if !runner.probes.iter().any(|probe| probe.target == goal) {
            runner.probe(goal)?;
        }
    }
    let best = runner
        .best_lossless()
        .ok_or_else(|| anyhow!("aimlock lost records even at {FIRST_RATE} events/s"))?;
    let bare = runner.bare_rate(HIGH_GOAL_RATE)?;
    runner.probe(2.0 * best)?;
    let (twice, probes) = runner.probes.split_last().expect("just probed");
    report(probes, best, twice, bare)
}

struct Runner<'a> {
    tools: &'a Tools,
    workload: &'a Path,
    /// Workload threads; raised to 2 once one thread cannot keep up with the rate asked.
    threads: u32,
    probes: Vec<Probe>,
}

impl Runner<'_> {
    /// Runs a probe at `target` events/s and keeps it, last in `probes`.
    fn probe(&mut self, target: f64) -> Result<&Probe> {
        let mut probe = self.run(target)?;
        if !probe.reached() && self.threads == 1 {
            self.threads = 2;
            probe = self.run(target)?;
        }
        println!(
            "    {:>9.0} events/s asked, {:>9.0} reached ({} thread(s)): lost {}, \
             missing {}, tracer CPU {:.2}",
            probe.target,
            probe.achieved,
            probe.threads,
            probe.stop.lost,
            probe.missing(),
            probe.tracer_cpu
        );
        self.probes.push(probe);
        Ok(self.probes.last().expect("just pushed"))
    }

    /// What the workload reaches on two threads with no tracer at all, asked for `target`.
    fn bare_rate(&self, target: f64) -> Result<f64> {
        let scratch = &self.tools.scratch;
        let output = Command::new(self.workload)
            .arg(format!("open:{}", scratch.join("rate-lock").display()))
            .arg(format!("rate:{target}:{PROBE_SECONDS}:flock:2"))
            .output()
            .context("run the rate workload")?;
        ensure!(
            output.status.success(),
            "the rate workload exited with {}",
            output.status
        );
        let (_, rate) = reached_rate(&output.stdout)?;
        println!(
            "    {target:>9.0} events/s asked with no tracer, {rate:>9.0} reached (2 threads)"
        );
        Ok(rate)
    }

    fn run(&self, target: f64) -> Result<Probe> {
        let scratch = &self.tools.scratch;
        let log = scratch.join("rate-trace.json");
        let mut tracer = Background::aimlock(
            &self.tools.aimlock,
            "aimlock-rate",
            &["--comm", WORKLOAD_NAME],
            &log,
            scratch,
        )?;
        let pid = tracer.pid();
        let cpu_before = cpu_seconds(pid)?;
        let started = Instant::now();
        let output = Command::new(self.workload)
            .arg(format!("open:{}", scratch.join("rate-lock").display()))
            .arg(format!(
                "rate:{target}:{PROBE_SECONDS}:flock:{}",
                self.threads
            ))
            .output()
            .context("run the rate workload")?;
        let seconds = started.elapsed().as_secs_f64();
        let tracer_cpu = (cpu_seconds(pid)? - cpu_before) / seconds;
        let load = load_average()?;
        ensure!(
            output.status.success(),
            "the rate workload exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout)
        );
        tracer.stop()?;
        let stop = StopLine::read(&log)?;
        fs::remove_file(&log)?;
        let (pairs, achieved) = reached_rate(&output.stdout)?;
        Ok(Probe {
            target,
            achieved,
            threads: self.threads,
            // Two per pair, and the process's exit.
            expected: 2 * pairs + 1,
            stop,
            tracer_cpu,
            load,
        })
    }

    /// The highest rate asked and reached with nothing lost.
    fn best_lossless(&self) -> Option<f64> {
        self.probes
            .iter()
            .filter(|probe| probe.stop.lost == 0 && probe.reached())
            .map(|probe| probe.target)
            .max_by(f64::total_cmp)
    }

    /// The lowest rate at which records were lost.
    fn lowest_lossy(&self) -> Option<f64> {
        self.probes
            .iter()
            .filter(|probe| probe.stop.lost > 0)
            .map(|probe| probe.target)
            .min_by(f64::total_cmp)
    }
}

/// The pairs made and the events a second reached, from the workload's `rate` line.
fn reached_rate(stdout: &[u8]) -> Result<(u64, f64)> {
    let stdout = String::from_utf8_lossy(stdout);
    let rate: serde_json::Value = stdout
        .lines()
        .find_map(|line| {
            let json: serde_json::Value = serde_json::from_str(line).ok()?;
            json.get("rate").cloned()
        })
        .ok_or_else(|| anyhow!("no rate line from the workload: {stdout}"))?;
    Ok((
        rate["pairs"].as_u64().context("pairs")?,
        rate["events_per_sec"].as_f64().context("events_per_sec")?,
    ))
}

fn report(probes: &[Probe], best: f64, twice: &Probe, bare: f64) -> Result<Outcome> {
    let mut out = String::new();
    writeln!(out, "## 2. Lossless event rate")?;
    writeln!(out)?;
    writeln!(
        out,
        "A copy of lockwork named `{WORKLOAD_NAME}` runs `rate:R:{PROBE_SECONDS}:flock:T`: \
         flock lock/unlock pairs on one file at R lock events a second (two per pair) for \
         {PROBE_SECONDS} s, paced in 1 ms batches against the clock, on T threads (2 once one \
         thread cannot reach the rate); it reports the rate it reached. `aimlock trace --comm \
         {WORKLOAD_NAME} --output FILE` (default 8 MiB ring) records it alone, so its stop line \
         must count 2 records per pair plus 1 for the exit: missing = expected - records. The \
         rate is doubled from {FIRST_RATE} until records are lost, then bisected (time-bounded), \
         and {GOAL_RATE} events/s is always probed; one run per rate."
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| asked (events/s) | reached | threads | expected records | records | lost | missing | \
         lost = missing | tracer CPU per second | load average after |"
    )?;
    writeln!(
        out,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"
    )?;
    let mut sorted: Vec<&Probe> = probes.iter().collect();
    sorted.sort_by(|a, b| a.target.total_cmp(&b.target));
    for probe in &sorted {
        writeln!(
            out,
            "| {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} |",
            probe.target,
            probe.achieved,
            probe.threads,
            probe.expected,
            probe.stop.records,
            probe.stop.lost,
            probe.missing(),
            if probe.missing() == probe.stop.lost as i64 {
                "yes"
            } else {
                "**no**"
            },
            probe.tracer_cpu,
            probe.load
        )?;
    }
    writeln!(out)?;
    let accounted = twice.missing() == twice.stop.lost as i64;
    writeln!(
        out,
        "Highest lossless rate found: **{best:.0} events/s**. At twice that rate ({:.0} asked, \
         {:.0} reached) the stop line reports {} lost and {} records are missing from the \
         expected count: the loss report is {}.",
        twice.target,
        twice.achieved,
        twice.stop.lost,
        twice.missing(),
        if accounted { "exact" } else { "**wrong**" }
    )?;
    let goal = probes
        .iter()
        .find(|probe| probe.target == GOAL_RATE)
        .expect("the goal rate is always probed");
    let met = goal.stop.lost == 0 && goal.missing() == 0 && goal.reached();
    writeln!(
        out,
        "At {GOAL_RATE:.0} events/s ({:.0} reached): {} lost, {} missing: {}.",
        goal.achieved,
        goal.stop.lost,
        goal.missing(),
        if met { "lossless" } else { "not lossless" }
    )?;
    let high = probes
        .iter()
        .find(|probe| probe.target == HIGH_GOAL_RATE)
        .expect("the high goal rate is always probed");
    let high_met = high.stop.lost == 0 && high.missing() == 0 && high.reached();
    let one_core = high.tracer_cpu <= 1.0;
    writeln!(
        out,
        "At {HIGH_GOAL_RATE:.0} events/s asked: {:.0} reached under the tracer ({} lost, {} \
         missing, the tracer at {:.2} CPU seconds a second); with no tracer at all, the same \
         workload on 2 threads reached {bare:.0} events/s.",
        high.achieved,
        high.stop.lost,
        high.missing(),
        high.tracer_cpu
    )?;
    let high_why = if !high.reached() {
        format!(
            "the workload cannot make {HIGH_GOAL_RATE:.0} lock events a second on this machine \
             while anything else runs: with no tracer it reached {bare:.0} on 2 threads ({:.0} \
             ns of CPU a lock call, both cores busy), and under the tracer, which took {:.2} of \
             a core, {:.0} with {} lost",
            2.0 * 1e9 / bare,
            high.tracer_cpu,
            high.achieved,
            high.stop.lost
        )
    } else {
        format!(
            "at {:.0} events/s the tracer used {:.2} CPU seconds a second and lost {}",
            high.achieved, high.tracer_cpu, high.stop.lost
        )
    };
    let saturated = probes
        .iter()
        .filter(|probe| probe.stop.lost > 0)
        .min_by(|a, b| a.target.total_cmp(&b.target));
    let why = match saturated {
        // A reader near a full core is the bottleneck itself.
        Some(probe) if probe.tracer_cpu >= 0.8 => format!(
            "records are first lost at {:.0} events/s, where the tracer's reader used {:.2} \
             CPU seconds per second: it drains about {:.0} records per CPU-second, so past that \
             the ring fills and the kernel drops. Closing the gap takes less user-space work per \
             record (decoding, tracking, formatting and writing JSON) or spreading it over \
             cores; a bigger ring only absorbs longer bursts",
            probe.target,
            probe.tracer_cpu,
            probe.stop.records as f64 / (probe.tracer_cpu * PROBE_SECONDS).max(f64::EPSILON)
        ),
        Some(probe) => format!(
            "records are first lost at {:.0} events/s while the tracer's reader used only {:.2} \
             CPU seconds per second, with the machine's load average at {:.2} on {} cores: the \
             reader was not busy but waiting for a core or for a wakeup, while the workload \
             filled the ring. On a quiet machine the same probe measures the reader itself; \
             here, a larger ring (`--ring-size`) rides out the stretches when the reader is \
             off-CPU, and waking the reader more often than once per millisecond per CPU (the \
             kernel programs' wakeup throttle) shortens them",
            probe.target,
            probe.tracer_cpu,
            probe.load,
            std::thread::available_parallelism().map_or(0, |cores| cores.get())
        ),
        None => format!(
            "no records were lost; the workload reached {:.0} events/s at {GOAL_RATE:.0} asked",
            goal.achieved
        ),
    };
    Ok(Outcome {
        markdown: out,
        goals: vec![
            Goal {
                goal: "no loss at 1,000,000 lock events/s".into(),
                figure: format!(
                    "{} lost, {} missing at {:.0} events/s; highest lossless {best:.0}",
                    goal.stop.lost,
                    goal.missing(),
                    goal.achieved
                ),
                met,
                why: Some(why),
            },
            Goal {
                goal: format!(
                    "no loss at {:.0},000,000 lock events/s, the tracer using at most one core",
                    HIGH_GOAL_RATE / 1e6
                ),
                figure: format!(
                    "{:.0} reached ({bare:.0} with no tracer), {} lost, tracer {:.2} CPU",
                    high.achieved, high.stop.lost, high.tracer_cpu
                ),
                met: high_met && one_core,
                why: Some(high_why),
            },
            Goal {
                goal: "the stop line's `lost` equals the records missing, at twice the lossless \
                       rate"
                    .into(),
                figure: format!("lost {}, missing {}", twice.stop.lost, twice.missing()),
                met: accounted,
                why: Some(format!(
                    "the stop line says {} lost but {} of the {} expected records never \
                     arrived",
                    twice.stop.lost,
                    twice.missing(),
                    twice.expected
                )),
            },
        ],
    })
}

/// The 1-minute load average.
pub fn load_average() -> Result<f64> {
    fs::read_to_string("/proc/loadavg")?
        .split_whitespace()
        .next()
        .context("empty /proc/loadavg")?
        .parse()
        .context("read /proc/loadavg")
}
