//! `aimlock locks` against util-linux `lslocks` on a large lock table: 10,000 locks (flock,
//! POSIX and OFD in turn) held by 500 processes, each command timed alternately.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

const PROCESSES: usize = 500;
const LOCKS_PER_PROCESS: usize = 20;

/// Sets up the table, times each command `runs` times (at least 3) and returns a Markdown
/// section with the machine, the medians, the ranges and the ratios.
pub fn bench_locks(aimlock: &Path, lockwork: &Path, runs: usize) -> Result<String> {
    let runs = runs.max(3);
    let holders = Holders::start(lockwork)?;
    let commands: [(&str, &Path, &[&str]); 4] = [
        ("aimlock locks", aimlock, &["locks"]),
        ("lslocks", Path::new("lslocks"), &[]),
        ("aimlock locks --json", aimlock, &["locks", "--json"]),
        ("lslocks -J", Path::new("lslocks"), &["-J"]),
    ];
    // A first run of each warms the caches and checks that it lists the whole table.
    for (name, program, args) in &commands {
        let output = Command::new(program)
            .args(*args)
            .stderr(Stdio::null())
            .output()
            .with_context(|| format!("run {name}"))?;
        ensure!(
            output.status.success(),
            "{name} exited with {}",
            output.status
        );
        let lines = output.stdout.split(|&byte| byte == b'\n').count();
        let expected = PROCESSES * LOCKS_PER_PROCESS;
        ensure!(
            lines > expected,
            "{name} printed {lines} lines for {expected} locks"
        );
    }
    let mut times = vec![Vec::with_capacity(runs); commands.len()];
    for _ in 0..runs {
        for ((name, program, args), times) in commands.iter().zip(&mut times) {
            let started = Instant::now();
            let status = Command::new(program)
                .args(*args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .with_context(|| format!("run {name}"))?;
            times.push(started.elapsed());
            ensure!(status.success(), "{name} exited with {status}");
        }
    }
    drop(holders);

    let mut report = String::from("## aimlock locks vs lslocks\n\n");
    report.push_str(&format!(
        "{} locks (flock, POSIX and OFD in turn, one file each) held by {PROCESSES} processes; \
         {runs} runs of each command, alternating, output to /dev/null.\n\n",
        PROCESSES * LOCKS_PER_PROCESS
    ));
    report.push_str(&format!("Machine: {}.\n\n", machine()));
    report.push_str("| command | median | min-max |\n| --- | ---: | ---: |\n");
    let mut medians = Vec::with_capacity(times.len());
    for ((name, ..), times) in commands.iter().zip(&mut times) {
        times.sort();
        let median = times[times.len() / 2];
        medians.push(median);
        report.push_str(&format!(
            "| `{name}` | {} | {}-{} |\n",
            millis(median),
            millis(times[0]),
            millis(times[times.len() - 1])
        ));
    }
    report.push_str(&format!(
        "\nMedians: `aimlock locks` takes {:.2}x the time of `lslocks`, `aimlock locks --json` \
         {:.2}x that of `lslocks -J` (below 1 is faster).\n",
        ratio(medians[0], medians[1]),
        ratio(medians[2], medians[3])
    ));
    Ok(report)
}

fn millis(time: Duration) -> String {
    format!("{:.1} ms", time.as_secs_f64() * 1000.0)
}

fn ratio(numerator: Duration, denominator: Duration) -> f64 {
    numerator.as_secs_f64() / denominator.as_secs_f64()
}

/// CPU, cores, kernel and lslocks version.
fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                Some(
                    line.strip_prefix("model name")?
                        .split_once(':')?
                        .1
                        .trim()
                        .to_owned(),
                )
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |cores| cores.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let lslocks = Command::new("lslocks")
        .arg("--version")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}; {lslocks}", kernel.trim())
}

/// The processes holding the table, and their files; killed and removed when dropped.
struct Holders {
    dir: PathBuf,
    children: Vec<Child>,
}

impl Holders {
    fn start(lockwork: &Path) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("aimlock-bench-locks-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let mut holders = Self {
            dir,
            children: Vec::with_capacity(PROCESSES),
        };
        let hold = format!("hold-many:{}:{LOCKS_PER_PROCESS}", holders.dir.display());
        for _ in 0..PROCESSES {
            let mut child = Command::new(lockwork)
                .args([hold.as_str(), "sleep:86400"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .with_context(|| format!("run {}", lockwork.display()))?;
            // Its first line reports the locks taken; the pipe is closed after it so that 500
            // holders do not keep 500 pipes open here.
            let stdout = child.stdout.take().context("lockwork's stdout")?;
            holders.children.push(child);
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line)?;
            if !line.contains("\"ok\":true") {
                bail!("lockwork could not take its locks: {}", line.trim());
            }
        }
        Ok(holders)
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
