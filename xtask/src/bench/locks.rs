//! `aimlock locks` against util-linux `lslocks` on a large lock table: 10,000 locks (flock,
//! POSIX and OFD in turn) held by 500 processes, each command timed alternately.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::bench::{
    Goal, Outcome, Tools,
    common::{Stats, ends_with_the_bench},
};

const PROCESSES: usize = 500;
const LOCKS_PER_PROCESS: usize = 20;

/// Sets up the table, times each command `runs` times (at least 3), alternating, and returns
/// the section with the medians, the ranges, the ratios and the goal.
pub fn locks_against_lslocks(tools: &Tools, runs: usize) -> Result<Outcome> {
    let runs = runs.max(3);
    let holders = Holders::start(&tools.lockwork)?;
    let aimlock = tools.aimlock.as_path();
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
    let mut millis = vec![Vec::with_capacity(runs); commands.len()];
    for _ in 0..runs {
        for ((name, program, args), millis) in commands.iter().zip(&mut millis) {
            let started = Instant::now();
            let status = Command::new(program)
                .args(*args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .with_context(|| format!("run {name}"))?;
            millis.push(started.elapsed().as_secs_f64() * 1000.0);
            ensure!(status.success(), "{name} exited with {status}");
        }
    }
    drop(holders);

    let stats: Vec<Stats> = millis.iter().map(|millis| Stats::of(millis)).collect();
    let mut out = String::new();
    writeln!(out, "## 3. aimlock locks vs lslocks")?;
    writeln!(out)?;
    writeln!(
        out,
        "{} locks (flock, POSIX and OFD in turn, one file each) held by {PROCESSES} processes; \
         {runs} runs of each command, alternating, output to /dev/null.",
        PROCESSES * LOCKS_PER_PROCESS
    )?;
    writeln!(out)?;
    writeln!(out, "| command | median | min-max |")?;
    writeln!(out, "| --- | ---: | ---: |")?;
    for ((name, ..), stats) in commands.iter().zip(&stats) {
        writeln!(
            out,
            "| `{name}` | {:.1} ms | {:.1} ms-{:.1} ms |",
            stats.median, stats.min, stats.max
        )?;
    }
    let text_ratio = stats[0].median / stats[1].median;
    let json_ratio = stats[2].median / stats[3].median;
    writeln!(out)?;
    writeln!(
        out,
        "Medians: `aimlock locks` takes {text_ratio:.2}x the time of `lslocks`, `aimlock locks \
         --json` {json_ratio:.2}x that of `lslocks -J` (below 1 is faster)."
    )?;
    let met = text_ratio < 1.0;
    Ok(Outcome {
        markdown: out,
        goals: vec![Goal {
            goal: "`aimlock locks` faster than `lslocks` (10,000 locks, 500 processes)".into(),
            figure: format!("{text_ratio:.2}x the time of lslocks (median)"),
            met,
            why: (!met).then(|| {
                "`aimlock locks` reads every `/proc/PID/fdinfo/FD` of every process and tells \
                 open file descriptions apart with kcmp, where lslocks reads /proc/locks and \
                 one fdinfo per lock; see the section above for the figures"
                    .into()
            }),
        }],
    })
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
            let mut child = ends_with_the_bench(&mut Command::new(lockwork))
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
