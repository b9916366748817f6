//! Paths under churn: a million short-lived processes, each locking a new file, while the tracer
//! names every one; its memory must stay flat after warm-up, and no record may be lost.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use super::{
    Goal, Outcome, Tools,
    common::{Background, StopLine, status_kib},
};

const JOBS: usize = 1_000_000;
/// Memory is read after each tenth of the jobs.
const STEPS: usize = 10;

pub fn churn(tools: &Tools) -> Result<Outcome> {
    let scratch = &tools.scratch;
    let dir = scratch.join("churn");
    fs::create_dir_all(&dir)?;
    // A copy of lockwork under its own name: --comm selects the jobs alone.
    let jobs_binary = scratch.join("churn-jobs");
    fs::copy(&tools.lockwork, &jobs_binary).context("copy lockwork")?;
    let log = scratch.join("churn-trace.json");
    let mut tracer = Background::aimlock(
        &tools.aimlock,
        "aimlock-churn",
        &["--comm", "churn-jobs"],
        &log,
        scratch,
    )?;
    let pid = tracer.pid();
    let mut rss_kib = Vec::with_capacity(STEPS);
    let mut seconds = 0.0;
    for _ in 0..STEPS {
        let mut jobs = Command::new(&jobs_binary)
            .arg(format!("churn:{}:{}", dir.display(), JOBS / STEPS))
            .stdout(Stdio::piped())
            .spawn()
            .context("start the jobs")?;
        let stdout = jobs.stdout.take().context("the jobs' stdout")?;
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if let Ok(report) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(taken) = report["churn"]["seconds"].as_f64()
            {
                seconds += taken;
            }
        }
        if !jobs.wait()?.success() {
            bail!("the jobs failed");
        }
        rss_kib.push(status_kib(pid, "VmRSS")?);
    }
    let peak_kib = status_kib(pid, "VmHWM")?;
    tracer.stop()?;
    let stop = StopLine::read(&log)?;
    let text = fs::read_to_string(&log)?;
    let named = text
        .lines()
        .filter(|line| line.contains("\"event\":\"acquire\"") && line.contains("\"path\":"))
        .count();
    let unnamed = text
        .lines()
        .filter(|line| line.contains("\"event\":\"acquire\"") && line.contains("\"path_unknown\""))
        .count();
    fs::remove_file(&log)?;
    let _ = fs::remove_dir_all(&dir);

    let mib = |kib: u64| kib as f64 / 1024.0;
    let warm = rss_kib[0];
    let last = *rss_kib.last().unwrap_or(&warm);
    let growth = last as f64 / warm.max(1) as f64;
    let met = growth <= 1.1 && stop.lost == 0;
    let mut out = String::new();
    writeln!(out, "## 7. Paths under churn")?;
    writeln!(out)?;
    writeln!(
        out,
        "`aimlock trace --comm churn-jobs --output FILE` while `lockwork churn:DIR:N` runs \
         {JOBS} jobs in {STEPS} batches, one after the other: each job is a process of its own \
         that creates its file, locks it, deletes it and exits, so the kernel hands freed inode \
         numbers to later jobs ({seconds:.0} s of jobs in all). The tracer's VmRSS is read after \
         each batch."
    )?;
    writeln!(out)?;
    writeln!(out, "| after jobs | VmRSS |")?;
    writeln!(out, "| ---: | ---: |")?;
    for (step, kib) in rss_kib.iter().enumerate() {
        writeln!(
            out,
            "| {} | {:.1} MiB |",
            (step + 1) * JOBS / STEPS,
            mib(*kib)
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "Peak {:.1} MiB; last batch {growth:.2}x the first; {} records lost; {named} acquires \
         named, {unnamed} with `path_unknown`.",
        mib(peak_kib),
        stop.lost
    )?;
    Ok(Outcome {
        markdown: out,
        goals: vec![Goal {
            goal: format!("{JOBS} short-lived processes locking new files: memory flat, 0 lost"),
            figure: format!(
                "VmRSS {:.1} MiB after the first tenth, {:.1} MiB at the end; {} lost",
                mib(warm),
                mib(last),
                stop.lost
            ),
            met,
            why: (!met).then(|| {
                format!(
                    "the tracer's memory grew {growth:.2}x after warm-up, or the ring lost \
                     records ({})",
                    stop.lost
                )
            }),
        }],
    })
}
