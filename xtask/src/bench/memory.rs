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
    common::{Background, StopLine, cpu_seconds, status_kib},
};

const LOCKS: usize = 100_000;
/// Holders, each with its share of the locks: one process cannot open 100,000 files under this
/// machine's RLIMIT_NOFILE hard limit.
const HOLDERS: usize = 10;
const GOAL_MIB: f64 = 64.0;

pub fn peak_memory(tools: &Tools) -> Result<Outcome> {
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
    let prefix = format!("\"path\":\"{}/", dir.display());
    let acquired = fs::read_to_string(&log)?
        .lines()
        .filter(|line| line.contains("\"event\":\"acquire\"") && line.contains(&prefix))
        .count();
    drop(holders);
    tracer.stop()?;
    let stop = StopLine::read(&log)?;
    fs::remove_file(&log)?;
    let _ = fs::remove_dir_all(&dir);

    let mib = |kib: u64| kib as f64 / 1024.0;
    let per_lock = (peak_kib.saturating_sub(idle_kib) * 1024) as f64 / LOCKS as f64;
    let met = mib(peak_kib) < GOAL_MIB && stop.lost == 0 && acquired == LOCKS;
    let mut out = String::new();
    writeln!(out, "## 5. Peak memory with 100,000 held locks")?;
    writeln!(out)?;
    writeln!(
        out,
        "`aimlock trace --output FILE` (no filter, default 8 MiB ring) runs while {HOLDERS} \
         `lockwork hold-many:DIR:{per_holder}` processes (under `prlimit --nofile`), started one \
         after the other, each open {per_holder} files and lock them, in turn with flock, a POSIX and an OFD write lock, \
         and keep them. Once every holder has its locks and the tracer has been idle for half \
         a second ({settled:.1} s after), its VmHWM is read from /proc/PID/status."
    )?;
    writeln!(out)?;
    writeln!(out, "| figure | value |")?;
    writeln!(out, "| --- | ---: |")?;
    writeln!(
        out,
        "| VmHWM once attached, before the locks | {:.1} MiB |",
        mib(idle_kib)
    )?;
    writeln!(
        out,
        "| VmHWM with {LOCKS} locks held | **{:.1} MiB** |",
        mib(peak_kib)
    )?;
    writeln!(
        out,
        "| VmRSS with {LOCKS} locks held | {:.1} MiB |",
        mib(rss_kib)
    )?;
    writeln!(out, "| growth per held lock | {per_lock:.0} bytes |")?;
    writeln!(out, "| acquires of the held files logged | {acquired} |")?;
    writeln!(out, "| lost (stop line) | {} |", stop.lost)?;
    Ok(Outcome {
        markdown: out,
        goals: vec![Goal {
            goal: format!("peak memory under {GOAL_MIB} MiB with {LOCKS} held locks"),
            figure: format!(
                "{:.1} MiB VmHWM ({acquired} acquires logged, {} lost)",
                mib(peak_kib),
                stop.lost
            ),
            met,
            why: Some(format!(
                "{:.1} MiB once attached, then {per_lock:.0} bytes per held lock; {}",
                mib(idle_kib),
                if acquired == LOCKS && stop.lost == 0 {
                    "the per-lock state (tracker entry, path, holder) is what to shrink".into()
                } else {
                    format!(
                        "the tracer did not see every lock ({acquired} of {LOCKS} acquires, \
                         {} lost), so the figure is not the one asked for",
                        stop.lost
                    )
                }
            )),
        }],
    })
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
    let mut holder = Command::new("prlimit")
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
