//! What real applications pay: SQLite transactions on tmpfs and on disk, dpkg's lock-frontend /
//! lock churn, and `flock(1)`-wrapped short jobs, each bare, under the empty-program floor,
//! under aimlock and under bpftrace; `perf stat` on the workload and on the tracer says where
//! aimlock's extra time goes.
//!
//! The SQLite and dpkg clients are one small C program built here with gcc against Debian's
//! libsqlite3: it builds in a fraction of a second, calls the same library Debian's services
//! use, and costs next to nothing of its own per transaction. A Rust client would need
//! rusqlite, whose `bundled` feature compiles the whole SQLite amalgamation into the test
//! crate's build, and which without it links to this same libsqlite3 anyway.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail, ensure};

use super::{
    Goal, Outcome, Tools,
    common::{Background, ContenderRow, Stats, StopLine, contender_table, cpu_seconds},
    overhead::BPFTRACE_SCRIPT,
    perf_stat::{self, Attached, Counters, Events},
};
use crate::{Step, run_step};

const CLIENT_SOURCE: &str = include_str!("applications_client.c");
const GOAL_VS_BARE: f64 = 1.05;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    SqliteTmpfs,
    SqliteDisk,
    Dpkg,
    FlockJobs,
}

const WORKLOADS: [Workload; 4] = [
    Workload::SqliteTmpfs,
    Workload::SqliteDisk,
    Workload::Dpkg,
    Workload::FlockJobs,
];

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::SqliteTmpfs => "SQLite transactions, database on tmpfs",
            Self::SqliteDisk => "SQLite transactions, database on disk",
            Self::Dpkg => "dpkg-style lock-frontend / lock churn",
            Self::FlockJobs => "`flock FILE true` jobs",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::SqliteTmpfs | Self::SqliteDisk => "transaction",
            Self::Dpkg => "cycle",
            Self::FlockJobs => "job",
        }
    }

    /// Units per run: about a second bare on this machine, a few on a busy one. On disk each
    /// transaction, and each dpkg cycle (ext4 flushes a file renamed over another), waits for
    /// the disk.
    fn units(self) -> u64 {
        match self {
            Self::SqliteTmpfs => 20_000,
            Self::SqliteDisk => 500,
            Self::Dpkg => 500,
            Self::FlockJobs => 500,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    Bare,
    Floor,
    Aimlock,
    Bpftrace,
}

const CONTENDERS: [Contender; 4] = [
    Contender::Bare,
    Contender::Floor,
    Contender::Aimlock,
    Contender::Bpftrace,
];

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Self::Bare => "bare",
            Self::Floor => "floor: empty tp_btf programs",
            Self::Aimlock => "`aimlock trace --output FILE`",
            Self::Bpftrace => "bpftrace, one line per event to a file",
        }
    }
}

/// Where each workload runs and what it runs.
struct Setup {
    client: PathBuf,
    tmpfs: PathBuf,
    disk: PathBuf,
}

impl Setup {
    fn new(tools: &Tools) -> Result<Self> {
        let source = tools.scratch.join("applications_client.c");
        let client = tools.scratch.join("applications_client");
        fs::write(&source, CLIENT_SOURCE)?;
        run_step(
            Step("build the applications client (gcc, libsqlite3)"),
            Command::new("gcc")
                .args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
                .arg(&client)
                .arg(&source)
                .arg("-lsqlite3"),
        )?;
        let tmpfs = PathBuf::from(format!("/dev/shm/aimlock-bench-{}", std::process::id()));
        ensure_tmpfs(Path::new("/dev/shm"))?;
        let disk = tools.scratch.join("applications");
        for dir in [&tmpfs, &disk] {
            fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        Ok(Self {
            client,
            tmpfs,
            disk,
        })
    }

    /// A fresh start for the workload (an empty database), then its command.
    fn prepare(&self, workload: Workload) -> Result<Command> {
        let units = workload.units().to_string();
        let mut command = match workload {
            Workload::SqliteTmpfs | Workload::SqliteDisk => {
                let dir = if workload == Workload::SqliteTmpfs {
                    &self.tmpfs
                } else {
                    &self.disk
                };
                let database = dir.join("bench.db");
                for path in [&database, &dir.join("bench.db-journal")] {
                    let _ = fs::remove_file(path);
                }
                let mut command = Command::new(&self.client);
                command.arg("sqlite").arg(database).arg(units);
                command
            }
            Workload::Dpkg => {
                let mut command = Command::new(&self.client);
                command.arg("dpkg").arg(&self.disk).arg(units);
                command
            }
            Workload::FlockJobs => {
                // A shell loop, as a cron job or a script wraps its commands.
                let mut command = Command::new("sh");
                command
                    .arg("-c")
                    .arg(r#"i=0; while [ "$i" -lt "$1" ]; do flock "$2" true; i=$((i+1)); done"#)
                    .args(["sh", &units])
                    .arg(self.disk.join("job.lock"));
                command
            }
        };
        command.stdout(Stdio::null());
        Ok(command)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.tmpfs);
    }
}

fn ensure_tmpfs(mount: &Path) -> Result<()> {
    let mounts = fs::read_to_string("/proc/mounts")?;
    let tmpfs = mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == mount.to_str().as_ref() && fields.get(2) == Some(&"tmpfs")
    });
    if !tmpfs {
        bail!("bench: {} is not a tmpfs mount", mount.display());
    }
    Ok(())
}

/// One run under one contender.
struct Run {
    seconds: f64,
    /// The tracer's CPU seconds per second of workload.
    tracer_cpu: Option<f64>,
    stop: Option<StopLine>,
}

/// One workload's rounds, per contender.
struct Measured {
    workload: Workload,
    us_per_unit: Vec<Vec<f64>>,
    vs_bare: Vec<Vec<f64>>,
    vs_floor: Vec<Vec<f64>>,
    tracer_cpu: Vec<Vec<f64>>,
    stops: Vec<StopLine>,
}

pub fn applications(tools: &Tools, runs: usize) -> Result<Outcome> {
    let setup = Setup::new(tools)?;
    let events = Events::available();
    let mut measured = Vec::new();
    for workload in WORKLOADS {
        let mut this = Measured {
            workload,
            us_per_unit: vec![Vec::new(); CONTENDERS.len()],
            vs_bare: vec![Vec::new(); CONTENDERS.len()],
            vs_floor: vec![Vec::new(); CONTENDERS.len()],
            tracer_cpu: vec![Vec::new(); CONTENDERS.len()],
            stops: Vec::new(),
        };
        for round in 0..runs {
            // Each round starts with a different contender, so none always runs first.
            let mut order = CONTENDERS.to_vec();
            order.rotate_left(round % CONTENDERS.len());
            let mut seconds = [0.0; CONTENDERS.len()];
            for contender in order {
                let index = index_of(contender);
                let run = run(tools, &setup, workload, contender)?;
                let us = run.seconds * 1e6 / workload.units() as f64;
                println!(
                    "    {} round {}: {:40} {us:10.1} us/{}",
                    workload.unit(),
                    round + 1,
                    contender.name(),
                    workload.unit()
                );
                seconds[index] = run.seconds;
                if let Some(cpu) = run.tracer_cpu {
                    this.tracer_cpu[index].push(cpu);
                }
                this.stops.extend(run.stop);
            }
            for (index, &taken) in seconds.iter().enumerate() {
                this.us_per_unit[index].push(taken * 1e6 / workload.units() as f64);
                this.vs_bare[index].push(taken / seconds[index_of(Contender::Bare)]);
                this.vs_floor[index].push(taken / seconds[index_of(Contender::Floor)]);
            }
        }
        // On every workload, not only where aimlock misses the goal: on a shared machine the
        // noise can hide a cost, or make one up.
        println!("    {}: perf stat, bare, floor, aimlock", workload.name());
        let diagnosis = diagnose(tools, &setup, workload, &events, runs)?;
        measured.push((this, diagnosis));
    }
    summarize(&measured, &events, runs)
}

fn run(tools: &Tools, setup: &Setup, workload: Workload, contender: Contender) -> Result<Run> {
    let command = setup.prepare(workload)?;
    let scratch = &tools.scratch;
    Ok(match contender {
        Contender::Bare => Run {
            seconds: timed(command)?,
            tracer_cpu: None,
            stop: None,
        },
        Contender::Floor => {
            let mut floor = Background::start(
                "hookfloor",
                Command::new(&tools.hookfloor).arg("btf"),
                scratch,
                None,
                "\"ready\":true",
            )?;
            let (seconds, cpu) = timed_under(&mut floor, command)?;
            floor.stop()?;
            Run {
                seconds,
                tracer_cpu: Some(cpu),
                stop: None,
            }
        }
        Contender::Aimlock => {
            let log = scratch.join("applications-trace.json");
            let mut tracer = Background::aimlock(&tools.aimlock, "aimlock", &[], &log, scratch)?;
            let (seconds, cpu) = timed_under(&mut tracer, command)?;
            tracer.stop()?;
            let stop = StopLine::read(&log)?;
            fs::remove_file(&log)?;
            Run {
                seconds,
                tracer_cpu: Some(cpu),
                stop: Some(stop),
            }
        }
        Contender::Bpftrace => {
            let output = scratch.join("applications-bpftrace.txt");
            let mut tracer = Background::start(
                "bpftrace",
                Command::new("bpftrace")
                    .args(["-B", "line", "-o"])
                    .arg(&output)
                    .args(["-e", BPFTRACE_SCRIPT]),
                scratch,
                Some(&output),
                "ready",
            )?;
            let (seconds, cpu) = timed_under(&mut tracer, command)?;
            tracer.stop()?;
            fs::remove_file(&output)?;
            Run {
                seconds,
                tracer_cpu: Some(cpu),
                stop: None,
            }
        }
    })
}

/// Wall time of a command run to completion, which must succeed.
fn timed(mut command: Command) -> Result<f64> {
    let started = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("run {command:?}"))?;
    let seconds = started.elapsed().as_secs_f64();
    ensure!(status.success(), "{command:?} exited with {status}");
    Ok(seconds)
}

/// Wall time of the workload, and the tracer's CPU seconds per second of it.
fn timed_under(tracer: &mut Background, workload: Command) -> Result<(f64, f64)> {
    let pid = tracer.pid();
    let cpu_before = cpu_seconds(pid)?;
    let seconds = timed(workload)?;
    Ok((seconds, (cpu_seconds(pid)? - cpu_before) / seconds))
}

/// `perf stat` on bare runs, runs under the floor (what the hooks alone add to the workload's
/// CPU), and runs under aimlock with the tracer counted too: each figure the median of as many
/// runs as the rounds.
struct Diagnosis {
    bare: Counters,
    floor: Counters,
    traced: Counters,
    tracer: Counters,
    bare_seconds: f64,
    traced_seconds: f64,
    runs: usize,
}

fn diagnose(
    tools: &Tools,
    setup: &Setup,
    workload: Workload,
    events: &Events,
    runs: usize,
) -> Result<Diagnosis> {
    let mut all: [Vec<Counters>; 4] = Default::default();
    let mut seconds: [Vec<f64>; 2] = Default::default();
    for _ in 0..runs {
        let ([bare, floor, traced], tracer) = diagnose_once(tools, setup, workload, events)?;
        seconds[0].push(bare.1);
        seconds[1].push(traced.1);
        for (index, counters) in [bare.0, floor.0, traced.0, tracer].into_iter().enumerate() {
            all[index].push(counters);
        }
    }
    let [bare, floor, traced, tracer] = all.map(|runs| Counters::median(&runs));
    Ok(Diagnosis {
        bare,
        floor,
        traced,
        tracer,
        bare_seconds: Stats::of(&seconds[0]).median,
        traced_seconds: Stats::of(&seconds[1]).median,
        runs,
    })
}

/// One bare run, one under the floor and one under aimlock, each under `perf stat`, with
/// their wall times; and the tracer's counts during the last.
fn diagnose_once(
    tools: &Tools,
    setup: &Setup,
    workload: Workload,
    events: &Events,
) -> Result<([(Counters, f64); 3], Counters)> {
    let scratch = &tools.scratch;
    let output = scratch.join("applications-perf-workload.csv");
    let counted = |command: Command| -> Result<(Counters, f64)> {
        let started = Instant::now();
        let counters = perf_stat::run(events, &output, &command)?;
        Ok((counters, started.elapsed().as_secs_f64()))
    };
    let bare = counted(setup.prepare(workload)?)?;

    let floor = Background::start(
        "hookfloor",
        Command::new(&tools.hookfloor).arg("btf"),
        scratch,
        None,
        "\"ready\":true",
    )?;
    let under_floor = counted(setup.prepare(workload)?)?;
    floor.stop()?;

    let log = scratch.join("applications-trace.json");
    let mut tracer = Background::aimlock(&tools.aimlock, "aimlock", &[], &log, scratch)?;
    let on_tracer = Attached::start(
        events,
        tracer.pid(),
        &scratch.join("applications-perf-tracer.csv"),
    )?;
    let traced = counted(setup.prepare(workload)?)?;
    let tracer_counts = on_tracer.stop()?;
    tracer.stop()?;
    fs::remove_file(&log)?;
    Ok(([bare, under_floor, traced], tracer_counts))
}

impl Diagnosis {
    /// The counts per unit of work, as one sentence of the section.
    /// `records` per unit: the fewest of the stop lines', the others having counted locks and
    /// exits elsewhere on the machine too.
    fn describe(&self, workload: Workload, events: &Events, records: f64) -> String {
        let units = workload.units() as f64;
        let per = |counters: &Counters, event: &str| counters.get(event) / units;
        // task-clock is in ms.
        let us = |counters: &Counters| per(counters, "task-clock") * 1e3;
        let unit = workload.unit();
        let wall_added = (self.traced_seconds - self.bare_seconds) * 1e6 / units;
        let cpu_added = us(&self.traced) - us(&self.bare);
        let mut text = format!(
            "perf stat, medians of {} runs each bare, under the floor and under aimlock, per \
             {unit}: \
             wall time {:.1} us bare, {:.1} us traced ({wall_added:+.1} us); the workload's CPU \
             (task-clock, which includes the kernel programs, run in its context) {:.1} us \
             bare, {:.1} us under the floor, {:.1} us under aimlock ({cpu_added:+.1} us over \
             bare); its context switches {:.3} bare, {:.3} under the floor, {:.3} under \
             aimlock; its CPU migrations {:.3} bare, {:.3} under aimlock; the tracer's CPU \
             {:.1} us, its context switches (wakeups to drain the ring) {:.3}, its migrations \
             {:.3}",
            self.runs,
            self.bare_seconds * 1e6 / units,
            self.traced_seconds * 1e6 / units,
            us(&self.bare),
            us(&self.floor),
            us(&self.traced),
            per(&self.bare, "context-switches"),
            per(&self.floor, "context-switches"),
            per(&self.traced, "context-switches"),
            per(&self.bare, "cpu-migrations"),
            per(&self.traced, "cpu-migrations"),
            us(&self.tracer),
            per(&self.tracer, "context-switches"),
            per(&self.tracer, "cpu-migrations"),
        );
        if events.hardware {
            let _ = write!(
                text,
                "; instructions: the workload's {:.0} bare, {:.0} under the floor, {:.0} \
                 under aimlock, the tracer's {:.0}",
                per(&self.bare, "instructions"),
                per(&self.floor, "instructions"),
                per(&self.traced, "instructions"),
                per(&self.tracer, "instructions"),
            );
        }
        let hooks = us(&self.floor) - us(&self.bare);
        let programs = us(&self.traced) - us(&self.floor);
        let tracer = us(&self.tracer);
        let _ = write!(
            text,
            ". So the CPU added per {unit} ({records:.1} records each) is: the hooks {hooks:.1} \
             us (floor - bare), aimlock's programs {programs:.1} us (aimlock - floor, {:.2} us \
             a record), and the tracer's own work {tracer:.1} us ({:.2} us and {:.3} wakeups a \
             record); together {:.1} us, {:.0}% of the workload's bare CPU, on two cores the \
             rest of the machine keeps busy",
            programs / records,
            tracer / records,
            per(&self.tracer, "context-switches") / records,
            hooks + programs + tracer,
            (hooks + programs + tracer) / us(&self.bare) * 100.0,
        );
        text
    }
}

fn summarize(measured: &[(Measured, Diagnosis)], events: &Events, runs: usize) -> Result<Outcome> {
    let mut out = String::new();
    writeln!(out, "## 8. Applications: SQLite, dpkg, flock(1)")?;
    writeln!(out)?;
    writeln!(
        out,
        "What a real application pays, rather than the tight loop's worst case. A small C \
         client built with gcc against Debian's libsqlite3 (its own cost per transaction is a \
         few microseconds of library code):"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "- SQLite: `BEGIN IMMEDIATE; INSERT; COMMIT`, one row each, prepared once, SQLite's \
         defaults (rollback journal, `synchronous=FULL`); {} transactions on tmpfs \
         (/dev/shm), {} on disk (the workspace's disk), a fresh database each run;",
        Workload::SqliteTmpfs.units(),
        Workload::SqliteDisk.units()
    )?;
    writeln!(
        out,
        "- dpkg: {} cycles of what dpkg does with /var/lib/dpkg's locks, on files in the \
         bench's scratch directory on disk: open and `fcntl(F_SETLK)` a whole-file write \
         lock on `lock-frontend`, then on `lock`, rewrite a status file and rename it over \
         the old one (ext4 flushes it), then unlock and close both in reverse order;",
        Workload::Dpkg.units()
    )?;
    writeln!(
        out,
        "- flock(1): a `sh` loop running `flock FILE true` {} times, as scripts and cron \
         jobs wrap their commands (two processes a job).",
        Workload::FlockJobs.units()
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "Contenders: bare; the floor (`hookfloor btf`, empty tp_btf programs on aimlock's \
         hooks); `aimlock trace --output FILE`; bpftrace with the overhead section's script. \
         {runs} rounds; in each every contender runs once, in an order rotated from round to \
         round; ratios are computed within each round and the table gives their median. The \
         tracer's CPU is its user + system time per second of workload. For each workload, one \
         more bare run and one more traced run are made under `perf stat` ({}; this machine's hardware counters are {}), with a second \
         `perf stat -p` on the tracer during the traced run, and one under the floor. The \
         machine is shared: the disk-bound workloads (SQLite on disk, dpkg) wait on other \
         users' I/O too, so their min - max spans show the noise, and a ratio below 1 means \
         that noise is larger than what a tracer costs.",
        events.names.join(", "),
        if events.hardware {
            "available"
        } else {
            "not supported, so software counters only"
        }
    )?;
    writeln!(out)?;
    let aimlock = index_of(Contender::Aimlock);
    let mut goals = Vec::new();
    let mut lost_total = 0;
    let mut stop_count = 0;
    for (this, diagnosis) in measured {
        let workload = this.workload;
        writeln!(out, "### {}", workload.name())?;
        writeln!(out)?;
        contender_table(
            &mut out,
            &format!("us per {}", workload.unit()),
            "",
            1,
            CONTENDERS
                .iter()
                .enumerate()
                .map(|(index, contender)| ContenderRow {
                    name: contender.name(),
                    values: &this.us_per_unit[index],
                    vs_bare: &this.vs_bare[index],
                    vs_floor: &this.vs_floor[index],
                    tracer_cpu: &this.tracer_cpu[index],
                }),
        )?;
        writeln!(out)?;
        let lost: Vec<u64> = this.stops.iter().map(|stop| stop.lost).collect();
        let records: Vec<u64> = this.stops.iter().map(|stop| stop.records).collect();
        lost_total += lost.iter().sum::<u64>();
        stop_count += lost.len();
        writeln!(
            out,
            "aimlock's stop lines (one per round; records include whatever else on the \
             machine took locks or exited): lost {lost:?}, records {records:?}."
        )?;
        let vs_bare = Stats::of(&this.vs_bare[aimlock]).median;
        let records_per_unit =
            records.iter().min().copied().unwrap_or(0) as f64 / workload.units() as f64;
        let why = diagnosis.describe(workload, events, records_per_unit);
        writeln!(out)?;
        writeln!(out, "{why}.")?;
        writeln!(out)?;
        goals.push(Goal {
            goal: format!(
                "applications: aimlock within {GOAL_VS_BARE}x bare, {}",
                workload.name()
            ),
            figure: format!("{vs_bare:.2}x (median)"),
            met: vs_bare <= GOAL_VS_BARE,
            why: Some(why),
        });
    }
    goals.push(Goal {
        goal: "applications: no lost events".into(),
        figure: format!("{lost_total} lost over {stop_count} traced runs"),
        met: lost_total == 0,
        why: Some("see each workload's stop lines in the section".into()),
    });
    Ok(Outcome {
        markdown: out,
        goals,
    })
}

fn index_of(contender: Contender) -> usize {
    CONTENDERS
        .iter()
        .position(|&c| c == contender)
        .expect("listed")
}
