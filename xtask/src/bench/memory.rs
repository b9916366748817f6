//! The tracer's peak memory while it tracks 100,000 locks held at once.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    Goal, Outcome, Tools,
    common::{Background, StopLine, cpu_seconds, ends_with_the_bench, status_kib},
};

const LOCKS: usize = 100_000;
/// Holders, each with its share of the locks: one process cannot open 100,000 files under this
/// machine's RLIMIT_NOFILE hard limit.
const HOLDERS: usize = 10;
const GOAL_MIB: f64 = 64.0;

/// What one run measured.
struct Run {
    idle_kib: u64,
    peak_kib: u64,
    rss_kib: u64,
    /// VmHWM once the holders have been killed together and their releases handled.
    after_exits_kib: u64,
    settled: f64,
    acquired: usize,
    released: usize,
    lost: u64,
}

impl Run {
    fn met(&self) -> bool {
        mib(self.peak_kib) < GOAL_MIB
            && self.lost == 0
            && self.acquired == LOCKS
            && self.released == LOCKS
    }

    fn per_lock(&self) -> f64 {
        (self.peak_kib.saturating_sub(self.idle_kib) * 1024) as f64 / LOCKS as f64
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn peak_memory(tools: &Tools, runs: usize) -> Result<Outcome> {
    let runs = (0..runs)
        .map(|_| one_run(tools))
        .collect::<Result<Vec<_>>>()?;
    let per_holder = LOCKS / HOLDERS;
    let mut out = String::new();
    writeln!(out, "## 5. Peak memory with 100,000 held locks")?;
    writeln!(out)?;
    writeln!(
        out,
        "`aimlock trace --output FILE` (no filter, default 8 MiB ring and 64 MiB backlog) runs \
         while {HOLDERS} `lockwork hold-many:DIR:{per_holder}` processes (under `prlimit --nofile`), \
         started one after the other, each open {per_holder} files and lock them, in turn with \
         flock, a POSIX and an OFD write lock, and keep them. Once every holder has its locks and \
         the tracer has been idle for half a second, its VmHWM is read from /proc/PID/status. \
         Then the {HOLDERS} holders are killed together: their exits release {LOCKS} locks in a \
         burst, far more records than the ring holds, which the tracer's ring-reader thread \
         copies into its backlog while the tracker catches up; VmHWM is read again once the \
         tracer is idle. {} runs, each with a tracer of its own.",
        runs.len()
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| run | VmHWM attached | **VmHWM, {LOCKS} locks held** | VmRSS, held | per held lock | VmHWM after the exits | acquires logged | releases logged | lost |"
    )?;
    writeln!(
        out,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )?;
    for (index, run) in runs.iter().enumerate() {
        writeln!(
            out,
            "| {} | {:.1} MiB | **{:.1} MiB** | {:.1} MiB | {:.0} bytes | {:.1} MiB | {} | {} | {} |",
            index + 1,
            mib(run.idle_kib),
            mib(run.peak_kib),
            mib(run.rss_kib),
            run.per_lock(),
            mib(run.after_exits_kib),
            run.acquired,
            run.released,
            run.lost
        )?;
    }
    let peaks: Vec<String> = runs
        .iter()
        .map(|run| format!("{:.1}", mib(run.peak_kib)))
        .collect();
    let lost: Vec<String> = runs.iter().map(|run| run.lost.to_string()).collect();
    let worst = runs
        .iter()
        .max_by_key(|run| run.peak_kib)
        .context("no run")?;
    Ok(Outcome {
        markdown: out,
        goals: vec![Goal {
            goal: format!(
                "peak memory under {GOAL_MIB} MiB and 0 lost with {LOCKS} held locks, in every run"
            ),
            figure: format!(
                "{} runs: {} MiB VmHWM, lost {}",
                runs.len(),
                peaks.join(", "),
                lost.join(", ")
            ),
            met: runs.iter().all(Run::met),
            why: Some(format!(
                "{:.1} MiB once attached, then {:.0} bytes per held lock (the run with the \
                 highest peak); {}",
                mib(worst.idle_kib),
                worst.per_lock(),
                match runs.iter().find(|run| !run.met()) {
                    Some(run)
                        if run.acquired == LOCKS && run.released == LOCKS && run.lost == 0 =>
                    {
                        "the per-lock state (tracker entry, path, holder) is what to shrink".into()
                    }
                    Some(run) => format!(
                        "a run's tracer did not see every lock ({} of {LOCKS} acquires and {} \
                         releases logged, {} lost)",
                        run.acquired, run.released, run.lost
                    ),
                    None => "met".into(),
                }
            )),
        }],
    })
}

fn one_run(tools: &Tools) -> Result<Run> {
    let scratch = &tools.scratch;
    let dir = scratch.join("held");
    fs::create_dir_all(&dir)?;
    let log = scratch.join("memory-trace.json");
    let mut tracer = Background::aimlock(&tools.aimlock, "aimlock-memory", &[], &log, scratch)?;
    let pid = tracer.pid();
    let idle_kib = status_kib(pid, "VmHWM")?;

    let per_holder = LOCKS / HOLDERS;
    let mut holders = Holders(Vec::with_capacity(HOLDERS));
    // One holder at a time: the figure is what tracking costs, not how the ring copes with
    // ten processes taking locks at once.
    for _ in 0..HOLDERS {
        hold_many(tools, &dir, per_holder, &mut holders)?;
    }
    let settled = settle(pid)?;
    let peak_kib = status_kib(pid, "VmHWM")?;
    let rss_kib = status_kib(pid, "VmRSS")?;
    drop(holders);
    settle(pid)?;
    let after_exits_kib = status_kib(pid, "VmHWM")?;
    tracer.stop()?;
    let stop = StopLine::read(&log)?;
    let prefix = format!("\"path\":\"{}/", dir.display());
    let text = fs::read_to_string(&log)?;
    let count = |event: &str| {
        let event = format!("\"event\":\"{event}\"");
        text.lines()
            .filter(|line| line.contains(&event) && line.contains(&prefix))
            .count()
    };
    let run = Run {
        idle_kib,
        peak_kib,
        rss_kib,
        after_exits_kib,
        settled,
        acquired: count("acquire"),
        released: count("release"),
        lost: stop.lost,
    };
    fs::remove_file(&log)?;
    let _ = fs::remove_dir_all(&dir);
    println!(
        "    {:.1} MiB held, {:.1} MiB after the exits, {} acquires, {} releases, {} lost (settled in {:.1} s)",
        mib(run.peak_kib),
        mib(run.after_exits_kib),
        run.acquired,
        run.released,
        run.lost,
        run.settled
    );
    Ok(run)
}

/// Waits until the tracer's CPU time stops growing: it has handled every record. Returns the
/// seconds waited.
fn settle(pid: u32) -> Result<f64> {
    let started = Instant::now();
    let mut last = cpu_seconds(pid)?;
    loop {
        sleep(Duration::from_millis(500));
        let now = cpu_seconds(pid)?;
        if now == last || started.elapsed() > Duration::from_secs(60) {
            return Ok(started.elapsed().as_secs_f64());
        }
        last = now;
    }
}

/// Starts a `lockwork hold-many:DIR:COUNT` process (under `prlimit`, so that it may open that
/// many files) and returns once it holds its locks.
pub fn hold_many(tools: &Tools, dir: &Path, count: usize, holders: &mut Holders) -> Result<()> {
    let nofile = count + 64;
    let mut holder = ends_with_the_bench(&mut Command::new("prlimit"))
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg(&tools.lockwork)
        .arg(format!("hold-many:{}:{count}", dir.display()))
        .arg("sleep:86400")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("start a lockwork holder under prlimit")?;
    let stdout = holder.stdout.take().context("holder's stdout")?;
    holders.0.push(holder);
    // Its first line reports the locks taken.
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if !line.contains("\"ok\":true") {
        bail!("a holder could not take its locks: {}", line.trim());
    }
    Ok(())
}

/// The lockwork processes holding the locks; killed when dropped.
pub struct Holders(pub Vec<Child>);

impl Drop for Holders {
    fn drop(&mut self) {
        for holder in &mut self.0 {
            let _ = holder.kill();
        }
        for holder in &mut self.0 {
            let _ = holder.wait();
        }
    }
}
