//! `perf stat` on a workload and on a tracer beside it: where a tracer's extra time goes, counted
//! on both sides rather than guessed.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};

use super::common::Stats;

/// The events counted, and whether the hardware ones are among them.
pub struct Events {
    pub names: Vec<&'static str>,
    pub hardware: bool,
}

impl Events {
    /// Instructions and cycles where this machine's hardware counters work (most VMs have
    /// none), the scheduler's software counters always.
    pub fn available() -> Self {
        let hardware = Command::new("perf")
            .args(["stat", "-x,", "-e", "instructions", "true"])
            .output()
            .is_ok_and(|output| {
                let text = String::from_utf8_lossy(&output.stderr);
                output.status.success() && !text.contains("<not supported>")
            });
        let mut names = vec!["task-clock", "context-switches", "cpu-migrations"];
        if hardware {
            names.extend(["instructions", "cycles"]);
        }
        Self { names, hardware }
    }

    fn list(&self) -> String {
        self.names.join(",")
    }
}

/// Each counted event's value (task-clock in ms), as `perf stat -x,` wrote it.
pub struct Counters(BTreeMap<String, f64>);

impl Counters {
    fn read(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        // Lines of `value,unit,event,...`; comments start with '#'. A counter that never ran
        // (the process did nothing) reads `<not counted>`.
        let values: BTreeMap<String, f64> = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(',').collect();
                let value = match *fields.first()? {
                    "<not counted>" => 0.0,
                    value => value.parse().ok()?,
                };
                Some((fields.get(2)?.to_string(), value))
            })
            .collect();
        ensure!(
            values.contains_key("task-clock"),
            "no task-clock in perf stat's output {}: {text}",
            path.display()
        );
        Ok(Self(values))
    }

    /// Each event's median over several runs.
    pub fn median(runs: &[Counters]) -> Self {
        let events: BTreeSet<&String> = runs.iter().flat_map(|run| run.0.keys()).collect();
        Self(
            events
                .into_iter()
                .map(|event| {
                    let values: Vec<f64> = runs.iter().map(|run| run.get(event)).collect();
                    (event.clone(), Stats::of(&values).median)
                })
                .collect(),
        )
    }

    /// An event's value, 0 when it was not counted.
    pub fn get(&self, event: &str) -> f64 {
        self.0.get(event).copied().unwrap_or(0.0)
    }
}

/// Runs `workload` to completion under `perf stat` (its children counted too).
pub fn run(events: &Events, output: &Path, workload: &Command) -> Result<Counters> {
    let status = Command::new("perf")
        .args(["stat", "-x,", "-e", &events.list(), "-o"])
        .arg(output)
        .arg("--")
        .arg(workload.get_program())
        .args(workload.get_args())
        .stdout(Stdio::null())
        .status()
        .context("run perf stat")?;
    ensure!(
        status.success(),
        "perf stat {workload:?} exited with {status}"
    );
    Counters::read(output)
}

/// `perf stat -p PID` on a running process, every thread it has, until [`Attached::stop`].
pub struct Attached {
    child: Child,
    output: PathBuf,
}

impl Attached {
    pub fn start(events: &Events, pid: u32, output: &Path) -> Result<Self> {
        let child = Command::new("perf")
            .args(["stat", "-x,", "-e", &events.list(), "-o"])
            .arg(output)
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("start perf stat -p")?;
        // perf opens its counters before its first sleep; the tracer is idle until the
        // workload starts, so the margin adds nothing to its counts.
        sleep(Duration::from_millis(300));
        Ok(Self {
            child,
            output: output.to_owned(),
        })
    }

    /// SIGINT, as perf stat expects to print its counts; then reads them.
    pub fn stop(mut self) -> Result<Counters> {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-INT", &pid]).status()?;
        ensure!(status.success(), "kill -INT {pid} (perf stat) failed");
        let status = self.child.wait()?;
        // perf stat exits with the signal's status once interrupted.
        if !status.success() && status.code().is_some_and(|code| code != 130) {
            bail!("perf stat -p exited with {status}");
        }
        Counters::read(&self.output)
    }
}
