//! Benchmark of `aimlock report`: how fast it reads a large log, against `jq`.
//!
//! It writes a ~1 GB synthetic log in the exact schema `aimlock trace` writes (many inodes,
//! acquires and releases, waits, refusals, exits, orphans), then times
//! `aimlock report --inode DEV:INO` and `jq -c 'select(.ino==N)'` on it, alternating, both
//! pinned to one core when `taskset` is there, and returns a Markdown section.

use std::{
    fmt::Write as _,
    fs::File,
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

const LOG_BYTES: u64 = 1 << 30;
const INODES: u64 = 20_000;
/// The queried lock: busier than the others, as a contended lock is.
const HOT_INODE: u64 = 1_000_000 + 4_242;
const DEV: &str = "254:0";
const MIN_RUNS: usize = 3;

/// Writes the log, times both tools `runs` times (at least 3) and returns the results.
pub fn bench_report(aimlock: &Path, runs: usize) -> Result<String> {
    let runs = runs.max(MIN_RUNS);
    ensure!(
        aimlock.exists(),
        "{} does not exist: build it first",
        aimlock.display()
    );
    let dir = ScratchDir::new()?;
    let log = dir.0.join("trace.log");
    let generated = generate(&log, LOG_BYTES)?;
    let pinned = Command::new("taskset")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    let pin = |program: &Path| {
        let mut command = if pinned {
            let mut command = Command::new("taskset");
            command.args(["-c", "0"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.stdin(Stdio::null()).stderr(Stdio::inherit());
        command
    };
    let inode_arg = format!("{DEV}:{HOT_INODE}");
    let filter = format!("select(.ino=={HOT_INODE})");
    let aimlock_command = || {
        let mut command = pin(aimlock);
        command.args(["report", "--inode", &inode_arg]).arg(&log);
        command
    };
    let jq_command = || {
        let mut command = pin(Path::new("jq"));
        command.args(["-c", &filter]).arg(&log);
        command
    };

    // Both must find the same lines before their speed means anything.
    let (_, jq_out) = timed(jq_command())?;
    let jq_lines = jq_out.lines().count() as u64;
    ensure!(
        jq_lines == generated.hot_lines,
        "jq found {jq_lines} lines on the hot inode, not {}",
        generated.hot_lines
    );
    let mut check = pin(aimlock);
    check
        .args(["report", "--json", "--inode", &inode_arg])
        .arg(&log);
    let (_, json) = timed(check)?;
    let holds = json.matches("\"acquire_logged\":true").count() as u64;
    ensure!(
        holds == generated.hot_acquires,
        "aimlock found {holds} holds on the hot inode, not {}",
        generated.hot_acquires
    );

    let mut aimlock_times = Vec::new();
    let mut jq_times = Vec::new();
    for _ in 0..runs {
        aimlock_times.push(timed(aimlock_command())?.0);
        jq_times.push(timed(jq_command())?.0);
    }
    let aimlock_stats = Stats::new(&mut aimlock_times, generated.bytes);
    let jq_stats = Stats::new(&mut jq_times, generated.bytes);

    let mut out = String::new();
    writeln!(out, "## aimlock report: reading a large log")?;
    writeln!(out)?;
    writeln!(
        out,
        "A synthetic log of {:.2} GB ({} lines, {INODES} inodes) in the schema `aimlock trace` writes; \
         the query is one busy inode ({} of its lines). {runs} runs of each, alternating, warm page cache, {}.",
        generated.bytes as f64 / 1e9,
        generated.lines,
        generated.hot_lines,
        if pinned {
            "each pinned to one core with `taskset -c 0`"
        } else {
            "not pinned (no taskset)"
        },
    )?;
    writeln!(out)?;
    writeln!(out, "| command | median | min - max | MB/s (median) |")?;
    writeln!(out, "| --- | ---: | ---: | ---: |")?;
    for (name, stats) in [
        (
            format!("`aimlock report --inode {inode_arg}`"),
            &aimlock_stats,
        ),
        (format!("`jq -c '{filter}'`"), &jq_stats),
    ] {
        writeln!(
            out,
            "| {name} | {:.2} s | {:.2} - {:.2} s | {:.0} |",
            stats.median.as_secs_f64(),
            stats.min.as_secs_f64(),
            stats.max.as_secs_f64(),
            stats.mb_per_s,
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "aimlock is {:.1}x faster than jq (median against median).",
        jq_stats.median.as_secs_f64() / aimlock_stats.median.as_secs_f64()
    )?;
    Ok(out)
}

struct Stats {
    median: Duration,
    min: Duration,
    max: Duration,
    mb_per_s: f64,
}

impl Stats {
    fn new(times: &mut [Duration], bytes: u64) -> Self {
        times.sort();
        let median = times[times.len() / 2];
        Self {
            median,
            min: times[0],
            max: times[times.len() - 1],
            mb_per_s: bytes as f64 / 1e6 / median.as_secs_f64(),
        }
    }
}

/// Runs a command to completion; its wall time and stdout.
fn timed(mut command: Command) -> Result<(Duration, String)> {
    let started = Instant::now();
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        bail!("{command:?} exited with {}", output.status);
    }
    Ok((
        elapsed,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

struct Generated {
    bytes: u64,
    lines: u64,
    hot_lines: u64,
    hot_acquires: u64,
}

/// A day of a busy machine: each step is one lock's acquire and release (with a wait, a
/// refusal or an exit now and then), one in a hundred on the hot inode; one lock in five
/// hundred outlives its taker.
fn generate(path: &Path, target: u64) -> Result<Generated> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut log = Generated {
        bytes: 0,
        lines: 0,
        hot_lines: 0,
        hot_acquires: 0,
    };
    let mut clock = Clock(0);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let write = |out: &mut BufWriter<File>,
                 log: &mut Generated,
                 line: &str,
                 ino: Option<u64>|
     -> Result<()> {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        log.bytes += line.len() as u64 + 1;
        log.lines += 1;
        if ino == Some(HOT_INODE) {
            log.hot_lines += 1;
        }
        Ok(())
    };
    let start = format!(
        r#"{{"event":"start","ts":"{}","host":"bench","schema":2,"version":"0.1.0","kernel":"6.18.44"}}"#,
        clock.ts()
    );
    write(&mut out, &mut log, &start, None)?;
    let mut step = 0u64;
    while log.bytes < target {
        step += 1;
        let ino = if step.is_multiple_of(100) {
            HOT_INODE
        } else {
            1_000_000 + rng.next() % INODES
        };
        let pid = 2_000 + (rng.next() % 30_000) as u32;
        let comm = [
            "cron",
            "backup.sh",
            "postgres",
            "orchestrator",
            "rsync",
            "flock",
        ][(rng.next() % 6) as usize];
        let lock = format!(
            r#""kind":"flock","mode":"write","dev":"{DEV}","ino":{ino},"path":"/var/lib/jobs/job-{ino}.lock","start":0,"end":null"#
        );
        let process = format!(r#""pid":{pid},"comm":"{comm}""#);
        let roll = rng.next() % 1000;
        if roll < 20 {
            let line = format!(
                r#"{{"event":"fail","ts":"{}","host":"bench",{process},{lock},"errno":"EAGAIN"}}"#,
                clock.tick()
            );
            write(&mut out, &mut log, &line, Some(ino))?;
            continue;
        }
        let mut wait_ns = String::new();
        if roll < 60 {
            let line = format!(
                r#"{{"event":"wait","ts":"{}","host":"bench",{process},{lock}}}"#,
                clock.tick()
            );
            write(&mut out, &mut log, &line, Some(ino))?;
            wait_ns = format!(r#","wait_ns":{}"#, clock.advance(rng.next() % 50_000_000));
        }
        let acquired = clock.now();
        let line = format!(
            r#"{{"event":"acquire","ts":"{}","host":"bench",{process},{lock}{wait_ns}}}"#,
            clock.tick()
        );
        write(&mut out, &mut log, &line, Some(ino))?;
        if ino == HOT_INODE {
            log.hot_acquires += 1;
        }
        clock.advance(rng.next() % 20_000_000);
        if roll >= 998 {
            // The taker exits; a child it forked keeps the lock, then exits too.
            let exit = clock.now();
            let line = format!(
                r#"{{"event":"exit","ts":"{}","host":"bench",{process},"locks":1}}"#,
                clock.tick()
            );
            write(&mut out, &mut log, &line, None)?;
            clock.advance(100_000_000);
            let holder = pid + 1;
            let line = format!(
                r#"{{"event":"orphan","ts":"{}","host":"bench",{process},{lock},"taker_exit":"{}","holders":[{{"pid":{holder},"comm":"sleep","fd":3}}]}}"#,
                clock.tick(),
                Clock(exit).ts()
            );
            write(&mut out, &mut log, &line, Some(ino))?;
            clock.advance(rng.next() % 2_000_000_000);
            let held = clock.now() - acquired;
            let orphaned = clock.now() - exit;
            let at = clock.tick();
            let release = format!(
                r#"{{"event":"release","ts":"{at}","host":"bench","pid":{holder},"comm":"sleep",{lock},"held_ns":{held},"reason":"exit"}}"#
            );
            write(&mut out, &mut log, &release, Some(ino))?;
            let end = format!(
                r#"{{"event":"orphan_end","ts":"{at}","host":"bench",{process},{lock},"held_ns":{held},"reason":"exit","orphan_ns":{orphaned},"taker_exit":"{}","by":{{"pid":{holder},"comm":"sleep"}}}}"#,
                Clock(exit).ts()
            );
            write(&mut out, &mut log, &end, Some(ino))?;
            continue;
        }
        let held = clock.now() - acquired;
        let reason = if roll < 900 { "unlock" } else { "close" };
        let line = format!(
            r#"{{"event":"release","ts":"{}","host":"bench",{process},{lock},"held_ns":{held},"reason":"{reason}"}}"#,
            clock.tick()
        );
        write(&mut out, &mut log, &line, Some(ino))?;
    }
    let stop = format!(
        r#"{{"event":"stop","ts":"{}","host":"bench","lost":0,"records":0,"events":{},"unwritten":0}}"#,
        clock.tick(),
        log.lines
    );
    write(&mut out, &mut log, &stop, None)?;
    out.flush()?;
    Ok(log)
}

/// Nanoseconds since 2026-11-27T00:00:00Z.
struct Clock(u64);

impl Clock {
    fn now(&self) -> u64 {
        self.0
    }

    fn advance(&mut self, ns: u64) -> u64 {
        self.0 += ns;
        ns
    }

    /// A few microseconds on, then the time as RFC 3339.
    fn tick(&mut self) -> String {
        self.0 += 3_217;
        self.ts()
    }

    fn ts(&self) -> String {
        let seconds = self.0 / 1_000_000_000;
        let (days, rest) = (seconds / 86_400, seconds % 86_400);
        format!(
            "2026-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
            11 + (26 + days) / 30,
            (26 + days) % 30 + 1,
            rest / 3600,
            rest / 60 % 60,
            rest % 60,
            self.0 % 1_000_000_000
        )
    }
}

/// A small fast generator: the log only needs to look varied, not be unpredictable.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A directory for the generated log, removed afterwards.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("aimlock-bench-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
