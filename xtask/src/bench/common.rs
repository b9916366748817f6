//! What the sections share: the machine's description, statistics, and tracers run in the
//! background while a workload runs.

use std::{
    fs::{self, File},
    io::{self, Read as _, Seek as _, SeekFrom},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Has `command`'s process sent SIGTERM when the bench ends: a bench stopped midway (Ctrl-C, a
/// kill) must not leave a tracer or empty programs attached to the lock hooks, where they slow
/// every lock call of the next run, nor holders asleep on their locks. (The signal comes when the
/// thread that started the process ends: the sections start them from the main thread.)
pub fn ends_with_the_bench(command: &mut Command) -> &mut Command {
    let bench = std::process::id();
    // SAFETY: between fork and exec the child only calls prctl(2) and getppid(2), which are
    // async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
            // The bench may have ended before the call took effect.
            if nix::unistd::getppid().as_raw() as u32 != bench {
                return Err(io::Error::other("the bench has ended"));
            }
            Ok(())
        })
    }
}

/// CPU, cores, memory, kernel, date and the versions of the tools compared.
pub fn machine() -> Vec<String> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = field(&cpuinfo, "model name").unwrap_or("unknown CPU");
    let cores = cpuinfo
        .lines()
        .filter(|line| line.starts_with("processor"))
        .count();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: f64 = field(&meminfo, "MemTotal")
        .and_then(|value| value.trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = output_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    vec![
        format!(
            "CPU: {cpu}, {cores} cores; memory: {:.1} GiB",
            memory_kib / 1024.0 / 1024.0
        ),
        format!("Kernel: Linux {}", kernel.trim()),
        format!("Date: {date}"),
        format!(
            "Tools: {}; {}; {}; {}",
            output_of("bpftrace", &["--version"]),
            output_of("strace", &["-V"]),
            output_of("lslocks", &["--version"]),
            output_of("jq", &["--version"]),
        ),
    ]
}

/// The value of a `NAME : VALUE` line of a /proc file.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim())
    })
}

/// The first line a command prints, or "unknown" when it does not run.
fn output_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("{program}: unknown version"))
}

/// Median, minimum and maximum of some measurements.
#[derive(Clone, Copy)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        } else {
            sorted[middle]
        };
        Self {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        }
    }
}

/// One contender's measurements over the rounds of a comparison: a row of [`contender_table`].
pub struct ContenderRow<'a> {
    pub name: &'a str,
    /// The measured cost per unit of work.
    pub values: &'a [f64],
    pub vs_bare: &'a [f64],
    pub vs_floor: &'a [f64],
    /// The tracer's CPU per workload second; empty where there is no tracer.
    pub tracer_cpu: &'a [f64],
}

/// The table every comparison of contenders writes: the median, range and ratios of each,
/// `value` naming the cost column and `decimals` its precision.
pub fn contender_table<'a>(
    out: &mut String,
    value: &str,
    floor: &str,
    decimals: usize,
    rows: impl IntoIterator<Item = ContenderRow<'a>>,
) -> std::fmt::Result {
    use std::fmt::Write as _;
    writeln!(
        out,
        "| contender | {value}, median | min - max | x bare | x floor{floor} | tracer CPU per \
         workload second |"
    )?;
    writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |")?;
    for row in rows {
        let stats = Stats::of(row.values);
        let cpu = if row.tracer_cpu.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.2}", Stats::of(row.tracer_cpu).median)
        };
        writeln!(
            out,
            "| {} | {:.decimals$} | {:.decimals$} - {:.decimals$} | {:.2} | {:.2} | {cpu} |",
            row.name,
            stats.median,
            stats.min,
            stats.max,
            Stats::of(row.vs_bare).median,
            Stats::of(row.vs_floor).median,
        )?;
    }
    Ok(())
}

/// A tracer running in the background, its stdout and stderr in files; interrupted (SIGINT,
/// as an operator would with Ctrl-C) by [`Background::stop`], killed if dropped before.
pub struct Background {
    name: String,
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Background {
    /// Starts `aimlock trace FILTERS... --output LOG` afresh and waits for its `start` line,
    /// which it writes once every program is attached.
    pub fn aimlock(
        aimlock: &Path,
        name: &str,
        filters: &[&str],
        log: &Path,
        scratch: &Path,
    ) -> Result<Self> {
        let _ = fs::remove_file(log);
        Self::start(
            name,
            Command::new(aimlock)
                .arg("trace")
                .args(filters)
                .arg("--output")
                .arg(log),
            scratch,
            Some(log),
            "\"event\":\"start\"",
        )
    }

    /// Starts the command and waits until `ready_file` contains `marker`: only then are its
    /// hooks attached.
    pub fn start(
        name: &str,
        command: &mut Command,
        scratch: &Path,
        ready_file: Option<&Path>,
        marker: &str,
    ) -> Result<Self> {
        let stdout = scratch.join(format!("{name}.stdout"));
        let stderr = scratch.join(format!("{name}.stderr"));
        let child = ends_with_the_bench(command)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout)?)
            .stderr(File::create(&stderr)?)
            .spawn()
            .with_context(|| format!("start {name}: {command:?}"))?;
        let mut background = Self {
            name: name.to_owned(),
            child: Some(child),
            stdout,
            stderr,
        };
        let ready_file = ready_file.unwrap_or(&background.stdout).to_owned();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if fs::read_to_string(&ready_file).is_ok_and(|text| text.contains(marker)) {
                return Ok(background);
            }
            if let Some(status) = background.child_mut().try_wait()? {
                bail!(
                    "{name} exited with {status} before it was ready: {}",
                    background.stderr_text()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} was not ready after 60 s: {}",
                    background.stderr_text()
                );
            }
            // A process exit is an event on a traced hook: bpftrace only hands its BEGIN line
            // over once a later event wakes its reader up.
            Command::new("true").status()?;
            sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&mut self) -> u32 {
        self.child_mut().id()
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("a running tracer")
    }

    pub fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr)
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// SIGINT, then waits (the tracer drains its backlog) until it exits, which must be with 0.
    pub fn stop(mut self) -> Result<String> {
        let pid = self.pid();
        let status = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -INT {pid} ({}) failed", self.name);
        }
        let mut child = self.child.take().expect("a running tracer");
        let deadline = Instant::now() + Duration::from_secs(600);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("{} did not stop within 600 s of SIGINT", self.name);
            }
            sleep(Duration::from_millis(20));
        };
        if !status.success() {
            bail!("{} exited with {status}: {}", self.name, self.stderr_text());
        }
        Ok(fs::read_to_string(&self.stdout).unwrap_or_default())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last line of a file that may be large.
pub fn last_line(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let length = file.metadata()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(64 * 1024)))?;
    let mut tail = String::new();
    file.read_to_string(&mut tail)?;
    Ok(tail.lines().last().unwrap_or_default().to_owned())
}

/// The fields of `aimlock trace`'s stop line.
pub struct StopLine {
    pub lost: u64,
    pub records: u64,
    pub events: u64,
    pub unwritten: u64,
}

impl StopLine {
    /// Reads the stop line that ends an `aimlock trace --output` log.
    pub fn read(log: &Path) -> Result<Self> {
        let line = last_line(log)?;
        let json: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("the last line of {} is not JSON: {line}", log.display()))?;
        if json["event"] != "stop" {
            bail!("{} does not end with a stop line: {line}", log.display());
        }
        let number = |name: &str| {
            json[name]
                .as_u64()
                .with_context(|| format!("no {name} in the stop line: {line}"))
        };
        Ok(Self {
            lost: number("lost")?,
            records: number("records")?,
            events: number("events")?,
            unwritten: number("unwritten")?,
        })
    }
}

/// Seconds of CPU a process has used (user + system), from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    // utime and stime, fields 14 and 15 of proc(5).
    stat_seconds(&format!("/proc/{pid}/stat"), [11, 12])
}

/// The sum of two clock-tick fields of a /proc stat file, in seconds; `fields` count from the
/// first field after the command name (field 3 of proc(5) is 0), in USER_HZ: 100 on Linux.
pub fn stat_seconds(path: &str, fields: [usize; 2]) -> Result<f64> {
    let stat = fs::read_to_string(path)?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let after_command: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| -> Result<f64> {
        Ok(after_command
            .get(index)
            .with_context(|| format!("short {path}"))?
            .parse::<f64>()?)
    };
    Ok((ticks(fields[0])? + ticks(fields[1])?) / 100.0)
}

/// A `/proc/PID/status` figure in KiB (VmHWM, VmRSS...).
pub fn status_kib(pid: u32, name: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    field(&status, name)
        .and_then(|value| value.trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {name} in /proc/{pid}/status"))
}
