//! `aimlock report` on logs the real tracer wrote, and on damaged or missing logs.

use std::{
    collections::BTreeSet,
    io::Write as _,
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, SystemTime},
};

use aimlock_tests::{
    KillOnDrop, PrivateJournal, TempDir, TraceToFile, Workload, aimlock_bin, eventually, inode,
    lockwork_bin, proc_locks_lines, proc_start_time, require_root, spawn_with_pid, wait_pid,
    write_log,
};
use serde_json::Value;

fn report(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(aimlock_bin())
        .arg("report")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn aimlock report");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default())
        .expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait for aimlock report")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_real_orphan_is_reported_from_a_torn_log() {
    let dir = TempDir::new("report-orphan");
    let file = dir.file("job.lock");
    let ino = inode(&file);
    let log = dir.path().join("trace.log");
    let tracer = TraceToFile::start(&log, &["--path", &file.display().to_string()]);
    let work = Workload::start(&[
        &format!("open:{}", file.display()),
        "flock:ex",
        "hold-in-child:3",
        "exit:0",
    ]);
    let taker = work.pid();
    let holder = work.holder_pid();
    tracer.wait_for("the orphan", |line| {
        line["event"] == "orphan" && line["ino"] == ino
    });
    let end = tracer.wait_for("the orphan's end", |line| {
        line["event"] == "orphan_end" && line["ino"] == ino
    });
    drop(work);
    tracer.stop();
    let dev = end["dev"].as_str().expect("dev").to_owned();

    // A crash tears the last line.
    let mut bytes = std::fs::read(&log).unwrap();
    assert!(bytes.ends_with(b"}\n"), "{}", text(&bytes));
    bytes.truncate(bytes.len() - 12);
    std::fs::write(&log, &bytes).unwrap();
    let lines = bytes.iter().filter(|&&b| b == b'\n').count() + 1;

    let log = log.display().to_string();
    let path = file.display().to_string();
    let output = report(&["--path", &path, &log], None);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("{log}: skipped 1 of {lines} lines (1 unreadable, 0 of unknown event types), the first at line {lines}")),
        "{stderr}"
    );
    assert!(
        stdout.starts_with(&format!("{path}: flock, whole file")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("pid {taker} (lockwork) took a write lock")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "pid {taker} exited; the lock survived in pid {holder} (lockwork) for "
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("released when pid {holder} (lockwork) exited")),
        "{stdout}"
    );

    // The same, as data, by inode: who took it, who kept it, and for how long.
    let output = report(
        &[
            "--json",
            "--orphans",
            "--inode",
            &format!("{dev}:{ino}"),
            &log,
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let locks: Vec<Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(locks.len(), 1, "{locks:#?}");
    assert_eq!(locks[0]["paths"][0], path.as_str());
    let hold = &locks[0]["holds"][0];
    assert_eq!(hold["taker"]["pid"], taker);
    assert_eq!(hold["holders"][0]["pid"], holder);
    assert_eq!(hold["released_by"]["pid"], holder);
    assert_eq!(hold["reason"], "exit");
    let orphan_ns = hold["orphan_ns"].as_u64().expect("orphan_ns");
    assert_eq!(orphan_ns, end["orphan_ns"].as_u64().unwrap(), "{hold}");
    assert!(
        (2_000_000_000..10_000_000_000).contains(&orphan_ns),
        "{hold}"
    );
    let survived = format!(
        "survived in pid {holder} (lockwork) for {}",
        duration_text(orphan_ns)
    );
    assert!(stdout.contains(&survived), "{survived:?} not in {stdout}");
}

/// The narrative's rounding of a duration: milliseconds from a second up.
fn duration_text(ns: u64) -> String {
    let ms = ns / 1_000_000;
    let (seconds, ms) = (ms / 1000, ms % 1000);
    if ms == 0 {
        format!("{seconds}s")
    } else {
        format!("{seconds}s {ms}ms")
    }
}

const LOG: &str = r#"{"event":"start","ts":"2026-11-27T03:00:00Z","schema":1}
{"event":"acquire","ts":"2026-11-27T03:00:01Z","pid":812,"comm":"orchestrator","kind":"flock","mode":"write","dev":"254:0","ino":77,"path":"/var/lock/job.lock","start":0,"end":null}
{"event":"acquire","ts":"2026-11-27T03:00:02Z","pid":812,"comm":"orchestrator","kind":"flock","mode":"write","dev":"254:0","in
{"event":"release","ts":"2026-11-27T03:00:05Z","pid":812,"comm":"orchestrator","kind":"flock","mode":"write","dev":"254:0","ino":77,"start":0,"end":null,"held_ns":4000000000,"reason":"unlock"}
"#;

#[test]
fn reads_stdin_and_goes_on_past_damage() {
    let output = report(&["-"], Some(LOG.as_bytes()));
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        stdout.contains("pid 812 (orchestrator) took a write lock"),
        "{stdout}"
    );
    assert!(
        stdout.contains("released when pid 812 (orchestrator) unlocked it; held 4s"),
        "{stdout}"
    );
    assert_eq!(
        text(&output.stderr),
        "aimlock: <stdin>: skipped 1 of 4 lines (1 unreadable, 0 of unknown event types), the first at line 3\n"
    );
}

#[test]
fn no_log_an_empty_or_an_unreadable_one_exits_2_with_one_line() {
    let dir = TempDir::new("report-bad");
    let empty = dir.file("empty.log");
    let missing = dir.path().join("missing.log");
    let glob = dir.path().join("rotated.log*");
    for args in [
        vec![empty.display().to_string()],
        vec![missing.display().to_string()],
        vec![glob.display().to_string()],
        vec![dir.path().display().to_string()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = report(&args, None);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("aimlock: "), "{stderr}");
    }
    let output = report(&[], None);
    assert_eq!(
        output.status.code(),
        Some(2),
        "no LOG argument is a usage error"
    );
}

#[test]
fn many_locks_open_with_a_summary_and_the_command_line_reads_proc_locks_inodes() {
    let dir = TempDir::new("report-summary");
    let files: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|name| dir.file(name).display().to_string())
        .collect();
    let log = dir.path().join("trace.log");
    let mut args: Vec<&str> = files.iter().flat_map(|file| ["--path", file]).collect();
    args.push("--every-event");
    let tracer = TraceToFile::start(&log, &args);
    let holder = Workload::start(&[&format!("open:{}", files[0]), "flock:ex", "wait-stdin"]);
    holder.wait_step("flock:ex");
    let refused = Workload::start(&[&format!("open:{}", files[0]), "flock:ex:nb"]);
    let refused_pid = refused.pid();
    assert!(!refused.finish_any().success());
    for file in &files[1..] {
        Workload::start(&[&format!("open:{file}"), "flock:sh", "flock:un"]).finish();
    }
    let ino = inode(Path::new(&files[0]));
    tracer.wait_for("the refusal", |line| {
        line["event"] == "fail" && line["ino"] == ino
    });
    let last = inode(Path::new(&files[3]));
    let release = tracer.wait_for("the last release", |line| {
        line["event"] == "release" && line["ino"] == last
    });
    tracer.stop();

    // The tracer traced these four files alone (the path of a short-lived holder's lock may
    // be missing from the log: no --path here).
    let log = log.display().to_string();
    let output = report(&[&log], None);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("summary of 4 locks: 0 orphaned, 1 still held when the logs end, 0 waits, 1 refusal"),
        "{stdout}"
    );
    // How the summary names the lock: by its path, if any line of the log gave it.
    let name = if stdout.contains(&format!("{}: flock", files[0])) {
        files[0].clone()
    } else {
        format!("inode {ino}")
    };
    let holder_pid = holder.pid();
    assert!(
        lines.next().is_some_and(|line| line.starts_with(&format!(
            "  still held: {name} by pid {holder_pid} (lockwork) for "
        ))),
        "{stdout}"
    );
    assert_eq!(
        lines.next(),
        Some(format!("  most refused: pid {refused_pid} (lockwork) 1 time on {name}").as_str()),
        "{stdout}"
    );

    // /proc/locks prints the device in hexadecimal: the same lock as the log's decimal.
    let dev = release["dev"].as_str().expect("dev");
    let (major, minor) = dev.split_once(':').unwrap();
    let hex = format!(
        "{:02x}:{:02x}:{last}",
        major.parse::<u32>().unwrap(),
        minor.parse::<u32>().unwrap()
    );
    for inode_arg in [format!("{dev}:{last}"), hex] {
        let output = report(&["--json", "--inode", &inode_arg, &log], None);
        let locks: Vec<Value> = text(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(locks.len(), 1, "{inode_arg}: {locks:#?}");
        assert_eq!(locks[0]["ino"], last, "{inode_arg}");
    }

    // Any UTC offset; none is an error, not UTC.
    let output = report(&["--since", "2000-01-01T00:00:00-05:00", &log], None);
    assert!(text(&output.stdout).starts_with("summary of 4 locks"));
    let output = report(&["--since", "2000-01-01T00:00:00", &log], None);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no UTC offset"), "{stderr}");

    // A pid the logs never name is said so.
    let output = report(&["--pid", "2147483647", &log], None);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        text(&output.stderr),
        "aimlock: pid 2147483647 appears in no lock line read\n"
    );
    assert_eq!(text(&output.stdout), "no lock in these logs matches\n");
}

#[test]
fn a_text_log_is_recognised_and_a_log_with_no_readable_line_fails() {
    require_root();
    let dir = TempDir::new("report-text");
    let file = dir.file("lock");
    let log = dir.path().join("trace.txt");
    let mut tracer = Command::new(aimlock_bin())
        .args(["trace", "--format", "text", "--output"])
        .arg(&log)
        .arg("--path")
        .arg(&file)
        .spawn()
        .expect("spawn aimlock trace");
    let _tracer = KillOnDrop(tracer.id());
    let logged = |word: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|line| line.split_whitespace().nth(1) == Some(word))
    };
    eventually("the start line", Duration::from_secs(60), || {
        logged("start").then_some(())
    });
    Workload::start(&[&format!("open:{}", file.display()), "flock:ex"]).finish();
    eventually("the release", Duration::from_secs(10), || {
        logged("release").then_some(())
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tracer.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(tracer.wait().unwrap().success());

    let log = log.display().to_string();
    let output = report(&[&log], None);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "aimlock: {log}: skipped {lines} of {lines} lines ({lines} unreadable, 0 of unknown \
             event types), the first at line 1\n\
             aimlock: {log}: looks like the output of `aimlock trace --format text`; report reads \
             the JSON lines of `--format json`\n\
             aimlock: {log}: no line is one that `aimlock trace` writes (a JSON object with a \
             \"ts\")\n",
            lines = std::fs::read_to_string(&log).unwrap().lines().count()
        )
    );
    assert!(output.stdout.is_empty());

    // Not a log at all: the same failure, without the guess.
    let output = report(&["-"], Some(b"hello\nworld\n"));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("--format text"), "{stderr}");
    assert!(
        stderr.ends_with("aimlock: <stdin>: no line is one that `aimlock trace` writes (a JSON object with a \"ts\")\n"),
        "{stderr}"
    );
}

/// `aimlock report ARGS` as JSON: one lock (or POSIX section) a line.
fn report_json(args: &[&str]) -> Vec<Value> {
    let output = report(&[&["--json"], args].concat(), None);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// A POSIX lock as /proc/locks shows it: pid, mode, first byte, last byte (None: EOF).
type PosixLock = (u64, String, u64, Option<u64>);

/// The POSIX locks /proc/locks lists on an inode.
fn proc_posix_locks(ino: u64) -> BTreeSet<PosixLock> {
    proc_locks_lines(ino)
        .iter()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.get(1) != Some(&"POSIX") {
                return None;
            }
            let end = match words[7] {
                "EOF" => None,
                end => Some(end.parse().unwrap()),
            };
            Some((
                words[4].parse().unwrap(),
                words[3].to_lowercase(),
                words[6].parse().unwrap(),
                end,
            ))
        })
        .collect()
}

/// The POSIX locks `report --at` says were held, over every section.
fn reported_posix_locks(locks: &[Value]) -> BTreeSet<PosixLock> {
    locks
        .iter()
        .flat_map(|lock| lock["held_at"].as_array().cloned().unwrap_or_default())
        .map(|held| {
            (
                held["pid"].as_u64().unwrap(),
                held["mode"].as_str().unwrap().to_owned(),
                held["start"].as_u64().unwrap(),
                held["end"].as_u64(),
            )
        })
        .collect()
}

#[test]
fn merged_and_split_posix_ranges_end_released() {
    let dir = TempDir::new("report-posix-merge");
    let file = dir.file("data.db");
    let log = dir.path().join("trace.log");
    // Every event: the first three calls take and free the process's whole holding at once,
    // which the log would otherwise count in summaries.
    let path = file.display().to_string();
    let tracer = TraceToFile::start(&log, &["--path", &path, "--every-event"]);
    let work = Workload::start(&[
        &format!("open:{}", file.display()),
        // lockf 0-9, then 10-19 (the kernel merges them), then unlock 0-19.
        "posix:w:0:10",
        "posix:w:10:10",
        "posix:u:0:20",
        "posix:w:0:100",
        "posix:u:10:10",
        "posix:r:50:10",
        // Exits holding 0-9, 20-49, 60-99 (write) and 50-59 (read).
        "exit:0",
    ]);
    let pid = work.pid();
    work.finish();
    let ino = inode(&file);
    let release = tracer.wait_for("the release at exit", |line| {
        line["event"] == "release"
            && line["pid"] == pid
            && line["ino"] == ino
            && line["mode"] == "read"
    });
    tracer.stop();

    let log = log.display().to_string();
    // By inode: the process may exit before the tracer sees the file's path.
    let dev = release["dev"].as_str().expect("dev");
    let output = report(&["--inode", &format!("{dev}:{ino}"), &log], None);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        stdout.contains(&format!(": POSIX lock, bytes 0-99 (dev {dev}, inode {ino}")),
        "one section for the bytes the process locked: {stdout}"
    );
    assert_eq!(stdout.matches(": POSIX lock").count(), 1, "{stdout}");
    for line in [
        format!("pid {pid} (lockwork) took a write lock on bytes 0-9\n"),
        format!("pid {pid} (lockwork) took a write lock on bytes 10-19\n"),
        format!("pid {pid} (lockwork) unlocked its write lock on bytes 0-9; held "),
        format!("pid {pid} (lockwork) unlocked bytes 10-19 of its write lock on bytes 0-99\n"),
        format!("pid {pid} (lockwork) converted bytes 50-59 of its write lock on bytes 0-99\n"),
    ] {
        assert!(stdout.contains(&line), "{line:?} not in {stdout}");
    }
    for wrong in ["still held", "do not name", "before these logs"] {
        assert!(!stdout.contains(wrong), "{wrong:?} in {stdout}");
    }
}

#[test]
fn posix_refusals_and_waits_name_the_lock_in_their_way() {
    let dir = TempDir::new("report-posix-blocked");
    let file = dir.file("data.db");
    let ino = inode(&file);
    let log = dir.path().join("trace.log");
    let tracer = TraceToFile::start(&log, &["--path", &file.display().to_string()]);
    let open = format!("open:{}", file.display());
    let mut holder = Workload::start(&[&open, "posix:w:0:100", "wait-stdin", "posix:u:0:0"]);
    holder.wait_step("posix:w:0:100");
    // Refused at once: the step fails and the workload exits.
    let refused = Workload::start(&[&open, "posix:r:50:1"]);
    let refused_pid = refused.pid();
    assert!(!refused.finish_any().success());
    let waiter = Workload::start(&[&open, "posix:w:10:1:wait"]);
    let waiter_pid = waiter.pid();
    tracer.wait_for("the wait", |line| {
        line["event"] == "wait" && line["pid"] == waiter_pid && line["ino"] == ino
    });
    holder.proceed();
    waiter.wait_step("posix:w:10:1:wait");
    let holder_pid = holder.pid();
    holder.finish();
    waiter.finish();
    tracer.wait_for("the waiter's release", |line| {
        line["event"] == "release" && line["pid"] == waiter_pid && line["ino"] == ino
    });
    tracer.stop();

    let log = log.display().to_string();
    let path = file.display().to_string();
    let output = report(&["--path", &path, &log], None);
    let stdout = text(&output.stdout);
    let in_the_way = format!("pid {holder_pid} (lockwork) held a write lock on bytes 0-99");
    for line in [
        format!(
            "pid {refused_pid} (lockwork) was refused a read lock on byte 50 (EAGAIN): {in_the_way}"
        ),
        format!("pid {waiter_pid} (lockwork) queued for a write lock on byte 10: {in_the_way}"),
        format!("pid {waiter_pid} (lockwork) took a write lock on byte 10 after waiting "),
    ] {
        assert!(stdout.contains(&line), "{line:?} not in {stdout}");
    }
    assert!(!stdout.contains("still held"), "{stdout}");

    let locks = report_json(&["--path", &path, &log]);
    assert_eq!(locks.len(), 1, "{locks:#?}");
    let blocker = &locks[0]["refusals"][0]["blockers"][0];
    assert_eq!(
        (
            &blocker["pid"],
            &blocker["mode"],
            &blocker["start"],
            &blocker["end"]
        ),
        (
            &Value::from(holder_pid),
            &Value::from("write"),
            &Value::from(0),
            &Value::from(99)
        )
    );
}

/// Two processes make random POSIX calls on one file; at pauses between bursts, `report --at`
/// must say exactly what /proc/locks said, and once they are killed, that nothing is held.
#[test]
fn report_at_says_what_proc_locks_said_for_random_ranges() {
    const BURSTS: u64 = 4;
    let dir = TempDir::new("report-posix-random");
    let file = dir.file("data.db");
    let ino = inode(&file);
    let log = dir.path().join("trace.log");
    let tracer = TraceToFile::start(&log, &["--path", &file.display().to_string()]);
    let open = format!("open:{}", file.display());
    let steps = |worker: u64| -> Vec<String> {
        let mut steps = vec![open.clone()];
        for burst in 0..BURSTS {
            steps.push(format!("random-ranges:{}:75", 1 + worker * 100 + burst));
            steps.push("wait-stdin".to_owned());
        }
        steps
    };
    let start = |steps: &[String]| {
        let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
        Workload::start(&steps)
    };
    let (steps_a, steps_b) = (steps(1), steps(2));
    let mut workers = [start(&steps_a), start(&steps_b)];
    let mut snapshots = Vec::new();
    for burst in 0..BURSTS as usize {
        for (worker, steps) in workers.iter().zip([&steps_a, &steps_b]) {
            worker.wait_step(&steps[1 + 2 * burst]);
        }
        // Both are paused: nothing changes until they proceed.
        std::thread::sleep(Duration::from_millis(100));
        let at = SystemTime::now();
        let held = proc_posix_locks(ino);
        snapshots.push((at, held));
        std::thread::sleep(Duration::from_millis(100));
        if burst + 1 < BURSTS as usize {
            for worker in &mut workers {
                worker.proceed();
            }
        }
    }
    let pids: Vec<u32> = workers.iter().map(Workload::pid).collect();
    let calls = workers
        .iter()
        .flat_map(Workload::lines)
        .filter(|line| line["call"].is_string())
        .count();
    assert_eq!(calls as u64, 2 * BURSTS * 75);
    // Killed while holding their locks.
    drop(workers);
    for &pid in &pids {
        tracer.wait_for("the exit", |line| {
            line["event"] == "exit" && line["pid"] == pid
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    tracer.stop();
    let end = SystemTime::now();

    let log = log.display().to_string();
    let dev = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .find_map(|line| {
            let line: Value = serde_json::from_str(line).ok()?;
            (line["ino"] == ino).then(|| line["dev"].as_str().unwrap().to_owned())
        })
        .expect("a line about the file");
    let inode_arg = format!("{dev}:{ino}");
    assert!(
        snapshots.iter().any(|(_, held)| held.len() > 2),
        "the bursts left too little held to compare: {snapshots:?}"
    );
    for (at, held) in &snapshots {
        let at = humantime::format_rfc3339_nanos(*at).to_string();
        let locks = report_json(&["--at", &at, "--inode", &inode_arg, &log]);
        assert_eq!(&reported_posix_locks(&locks), held, "at {at}: {locks:#?}");
    }
    let locks = report_json(&["--inode", &inode_arg, &log]);
    assert!(!locks.is_empty());
    let mut refusals = 0;
    for lock in &locks {
        assert_eq!(lock["totals"]["still_held"], 0, "{lock:#}");
        // Only the other worker can have been in the way.
        for refusal in lock["refusals"].as_array().unwrap() {
            refusals += 1;
            let refused = refusal["process"]["pid"].as_u64().unwrap();
            let blockers = refusal["blockers"].as_array().expect("blockers");
            assert!(!blockers.is_empty(), "{refusal:#}");
            for blocker in blockers {
                let holder = blocker["pid"].as_u64().unwrap();
                assert!(
                    holder != refused && pids.contains(&(holder as u32)),
                    "{refusal:#}"
                );
            }
        }
    }
    assert!(refusals > 0, "the workers never got in each other's way");
    let at = humantime::format_rfc3339_nanos(end).to_string();
    let locks = report_json(&["--at", &at, "--inode", &inode_arg, &log]);
    assert!(reported_posix_locks(&locks).is_empty(), "{locks:#?}");
}

/// A small ext4 of the test's own, loop-mounted: it hands a freed inode number to the next
/// file at once, and no other test takes it first. Unmounted when dropped.
struct PrivateExt4(std::path::PathBuf);

impl PrivateExt4 {
    fn mount(dir: &TempDir) -> Self {
        let image = dir.path().join("ext4.img");
        let mount_point = dir.path().join("fs");
        std::fs::create_dir_all(&mount_point).expect("mount point");
        std::fs::File::create(&image)
            .and_then(|file| file.set_len(32 << 20))
            .expect("image");
        for command in [
            vec!["mkfs.ext4", "-q", image.to_str().unwrap()],
            vec![
                "mount",
                "-o",
                "loop",
                image.to_str().unwrap(),
                mount_point.to_str().unwrap(),
            ],
        ] {
            let status = Command::new(command[0])
                .args(&command[1..])
                .status()
                .expect("run mkfs.ext4 or mount");
            assert!(status.success(), "{command:?}: {status}");
        }
        Self(mount_point)
    }
}

impl Drop for PrivateExt4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn two_files_that_shared_an_inode_number_are_two_timelines() {
    let dir = TempDir::new("report-generations");
    let log = dir.path().join("trace.log");
    let fs = PrivateExt4::mount(&dir);
    let file = |name: &str| {
        let path = fs.0.join(name);
        std::fs::write(&path, b"").expect("create a file");
        path
    };
    let first = file("first.lock");
    let ino = inode(&first);
    // A command of its own, not --path (which holds its file's inode, so no new file would
    // get its number).
    let lockwork = dir.path().join("lw-generations");
    std::fs::copy(lockwork_bin(), &lockwork).expect("copy lockwork");
    let tracer = TraceToFile::start(&log, &["--comm", "lw-generations"]);
    // Each job waits until its acquire is logged: its file is named through its fds then (a
    // process gone before the tracer looks is named only through a directory already known).
    let mut first_job = Workload::start_as(
        &lockwork,
        &[
            &format!("open:{}", first.display()),
            "flock:ex",
            "wait-stdin",
            &format!("unlink:{}", first.display()),
            "exit:0",
        ],
    );
    let first_pid = first_job.pid();
    tracer.wait_for("the first file's acquire", |line| {
        line["event"] == "acquire" && line["pid"] == first_pid
    });
    first_job.proceed();
    first_job.finish();
    tracer.wait_for("the first file's release", |line| {
        line["event"] == "release" && line["pid"] == first_pid
    });
    // A new file that gets the freed inode number (the kernel hands it out again soon).
    // The inode is freed once the job's last reference goes, which may lag its exit: keep
    // trying, removing each file that got another number.
    let second = (0..2000)
        .find_map(|index| {
            let path = file(&format!("second-{index}.lock"));
            if inode(&path) == ino {
                return Some(path);
            }
            std::fs::remove_file(&path).expect("remove the probe");
            std::thread::sleep(std::time::Duration::from_millis(5));
            None
        })
        .expect("no new file got the freed inode number");
    let mut second_job = Workload::start_as(
        &lockwork,
        &[
            &format!("open:{}", second.display()),
            "flock:ex",
            "wait-stdin",
            "exit:0",
        ],
    );
    let second_pid = second_job.pid();
    tracer.wait_for("the second file's acquire", |line| {
        line["event"] == "acquire" && line["pid"] == second_pid
    });
    second_job.proceed();
    second_job.finish();
    let release = tracer.wait_for("the second file's release", |line| {
        line["event"] == "release" && line["pid"] == second_pid
    });
    tracer.stop();
    let dev = release["dev"].as_str().unwrap().to_owned();

    let locks = report_json(&[
        "--inode",
        &format!("{dev}:{ino}"),
        &log.display().to_string(),
    ]);
    assert_eq!(locks.len(), 2, "one timeline per file: {locks:#?}");
    assert_ne!(locks[0]["generation"], locks[1]["generation"], "{locks:#?}");
    for (lock, (path, pid)) in locks
        .iter()
        .zip([(&first, first_pid), (&second, second_pid)])
    {
        assert_eq!(
            lock["paths"],
            serde_json::json!([path.display().to_string()]),
            "{lock:#}"
        );
        let holds = lock["holds"].as_array().unwrap();
        assert_eq!(holds.len(), 1, "{lock:#}");
        assert_eq!(holds[0]["taker"]["pid"], pid, "{lock:#}");
        assert_eq!(holds[0]["still_held"], false, "{lock:#}");
    }
}

/// An orphan on one host, as the tracer logs it: `taker` locks at `minute`:01, exits at :09
/// leaving the lock to its child 840, which exits at :30; 900 waits meanwhile.
fn orphan_on_host(host: &str, minute: u64, taker: u32) -> Vec<Value> {
    let ts = |second: u64| format!("2026-11-27T04:{minute:02}:{second:02}.000000000Z");
    let lock = serde_json::json!({
        "host": host, "kind": "flock", "mode": "write", "dev": "254:0", "ino": 4242,
        "path": "/etc/app/config.lock", "start": 0, "end": null,
    });
    let line = |event: &str, second: u64, pid: u32, comm: &str, extra: Value| {
        let mut line = lock.clone();
        let fields = line.as_object_mut().unwrap();
        fields.extend(
            serde_json::json!({"event": event, "ts": ts(second), "pid": pid, "comm": comm})
                .as_object()
                .unwrap()
                .clone(),
        );
        fields.extend(extra.as_object().unwrap().clone());
        line
    };
    vec![
        serde_json::json!({"event": "start", "ts": ts(0), "host": host, "schema": 1}),
        line("acquire", 1, taker, "deploy", serde_json::json!({})),
        line("wait", 5, 900, "cron", serde_json::json!({})),
        serde_json::json!({"event": "exit", "ts": ts(9), "host": host, "pid": taker, "comm": "deploy", "locks": 1}),
        line(
            "orphan",
            9,
            taker,
            "deploy",
            serde_json::json!({
                "taker_exit": ts(9), "holders": [{"pid": 840, "comm": "sleep", "fd": 3}],
            }),
        ),
        line(
            "release",
            30,
            840,
            "sleep",
            serde_json::json!({"held_ns": 29_000_000_000u64, "reason": "exit"}),
        ),
        line(
            "orphan_end",
            30,
            taker,
            "deploy",
            serde_json::json!({
                "held_ns": 29_000_000_000u64, "orphan_ns": 21_000_000_000u64, "reason": "exit",
                "taker_exit": ts(9), "by": {"pid": 840, "comm": "sleep"},
            }),
        ),
        line(
            "acquire",
            30,
            900,
            "cron",
            serde_json::json!({"wait_ns": 25_000_000_000u64}),
        ),
        line(
            "release",
            31,
            900,
            "cron",
            serde_json::json!({"held_ns": 1_000_000_000u64, "reason": "unlock"}),
        ),
    ]
}

#[test]
fn two_hosts_logs_of_the_same_inode_stay_two_timelines() {
    let dir = TempDir::new("report-hosts");
    // Identical images: the same file has the same device and inode on both hosts.
    let alpha = dir.path().join("alpha.log");
    let beta = dir.path().join("beta.log");
    write_log(&alpha, &orphan_on_host("alpha", 1, 1200));
    write_log(&beta, &orphan_on_host("beta", 2, 1200));
    let (alpha, beta) = (alpha.display().to_string(), beta.display().to_string());

    let locks = report_json(&[&beta, &alpha]);
    assert_eq!(locks.len(), 2, "{locks:#?}");
    for (lock, host) in locks.iter().zip(["alpha", "beta"]) {
        assert_eq!(lock["host"], host, "{lock:#}");
        assert_eq!(
            (lock["dev"].as_str(), lock["ino"].as_u64()),
            (Some("254:0"), Some(4242))
        );
        let holds = lock["holds"].as_array().unwrap();
        assert_eq!(holds.len(), 2, "{lock:#}");
        assert_eq!(holds[0]["orphaned"], true, "{lock:#}");
        assert_eq!(holds[0]["holders"][0]["pid"], 840, "{lock:#}");
        assert_eq!(lock["waits"][0]["wait_ns"], 25_000_000_000u64, "{lock:#}");
    }

    let output = report(&[&alpha, &beta], None);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let fleet = stdout.lines().take(2).collect::<Vec<_>>().join("\n");
    assert_eq!(
        fleet,
        "fleet summary of 2 hosts (alpha, beta): 1 file with orphans, waits or refusals\n  \
         /etc/app/config.lock: orphans on 2 hosts (2), the first on alpha at \
         2026-11-27T04:01:09.000Z, the longest on alpha (outlived its taker 21s); held by \
         sleep; waits on 2 hosts (2), the first on alpha at 2026-11-27T04:01:05.000Z, the \
         longest on alpha (waited 25s)"
    );
    for host in ["alpha", "beta"] {
        assert!(
            stdout.contains(&format!(
                "/etc/app/config.lock: flock, whole file (host {host}, dev 254:0, inode 4242)"
            )),
            "{stdout}"
        );
    }

    let locks = report_json(&["--host", "beta", &alpha, &beta]);
    assert_eq!(locks.len(), 1, "{locks:#?}");
    assert_eq!(locks[0]["host"], "beta");
}

/// Two processes that had the same pid one after the other (the second made to get it with
/// clone3's set_tid) are two processes in the log, in the report's timeline and in `--pid`:
/// with the start time the kernel programs read, and with the one /proc gives where they
/// cannot (classic tracepoints, as on a kernel without BTF).
#[test]
fn a_reused_pid_is_two_processes() {
    for hooks in [&[][..], &["--classic-lock-hooks"][..]] {
        reused_pid_is_two_processes(hooks);
    }
}

fn reused_pid_is_two_processes(hooks: &[&str]) {
    let dir = TempDir::new(&format!("report-reused-pid{}", hooks.len()));
    let file = dir.file("job.lock");
    let ino = inode(&file);
    let log = dir.path().join("trace.log");
    let path = file.display().to_string();
    let mut args = vec!["--path", &path];
    args.extend(hooks);
    let tracer = TraceToFile::start(&log, &args);
    let open = format!("open:{}", file.display());
    let steps = [
        open.as_str(),
        "flock:ex",
        "sleep:0.2",
        "flock:un",
        "sleep:0.3",
    ];
    // A process of the machine may take the pid between the first's end and the second's
    // start: then both are run again.
    let mut refusals = Vec::new();
    let (pid, second_start) = (0..20)
        .find_map(|_| {
            let first = Workload::start(&steps);
            let pid = first.pid();
            first.finish();
            let second = spawn_with_pid(pid, &lockwork_bin(), &steps)
                .inspect_err(|err| refusals.push(*err))
                .ok()?;
            // Read while it runs: the kernel programs' reading must be /proc's.
            let started = proc_start_time(second);
            let status = wait_pid(second);
            assert!(
                matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
                "{status:?}"
            );
            Some((pid, started.expect("the second process's /proc/PID/stat")))
        })
        .unwrap_or_else(|| {
            panic!("no pid could be taken again (clone3 with set_tid needs root): {refusals:?}")
        });
    let acquires = |lines: &[Value]| -> Vec<u64> {
        lines
            .iter()
            .filter(|line| line["event"] == "acquire" && line["ino"] == ino && line["pid"] == pid)
            .map(|line| line["start_time"].as_u64().expect("start_time"))
            .collect()
    };
    eventually("both processes' acquires", Duration::from_secs(30), || {
        (acquires(&tracer.lines()).len() == 2).then_some(())
    });
    tracer.wait_for("the second release", |line| {
        line["event"] == "release" && line["ino"] == ino && line["start_time"] == second_start
    });
    tracer.stop();
    let starts = acquires(&parse_log(&log));
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert!(starts[0] < starts[1], "{starts:?}");
    assert_eq!(
        starts[1], second_start,
        "the kernel's start time is /proc's"
    );

    let log = log.display().to_string();
    let pid_arg = pid.to_string();
    let output = report(&["--pid", &pid_arg, "--json", &log], None);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let locks: Vec<Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON lock"))
        .collect();
    let takers: Vec<&Value> = locks
        .iter()
        .filter(|lock| lock["ino"] == ino)
        .flat_map(|lock| lock["holds"].as_array().expect("holds"))
        .map(|hold| &hold["taker"])
        .collect();
    let taker_starts: Vec<u64> = takers
        .iter()
        .map(|taker| {
            assert_eq!(taker["pid"], pid, "{taker}");
            taker["start_time"].as_u64().expect("start_time")
        })
        .collect();
    assert_eq!(
        taker_starts, starts,
        "two holds, one by each process: {locks:#?}"
    );

    // The narrative says which process each mention of the pid is.
    let output = report(&["--pid", &pid_arg, &log], None);
    let stdout = text(&output.stdout);
    let since_boot = |ns: u64| {
        format!(
            "{}.{:02} s after boot",
            ns / 1_000_000_000,
            ns / 10_000_000 % 100
        )
    };
    for start in &starts {
        let mention = format!(
            "pid {pid} (lockwork, started {}) took a write lock",
            since_boot(*start)
        );
        assert!(stdout.contains(&mention), "no {mention:?} in\n{stdout}");
    }
}

fn parse_log(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .expect("read the log")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// The journal as input: the entries `--journald` wrote in a run, exported with `journalctl -o
/// json` (whole, with only some fields, gzipped, on stdin), tell the same timelines as the
/// JSON-lines log the same run wrote.
#[test]
fn a_journal_export_tells_what_the_log_of_the_same_run_tells() {
    let journal = PrivateJournal::start("report");
    let dir = TempDir::new("report-journal");
    let file = dir.file("job.lock");
    let ino = inode(&file);
    let log = dir.path().join("trace.log");
    let tracer = TraceToFile::start(
        &log,
        &[
            "--path",
            &file.display().to_string(),
            &format!("--journald={}", journal.socket().display()),
        ],
    );
    // An orphan, a wait behind it and a refusal: holders, `by` and blockers.
    let open = format!("open:{}", file.display());
    let taker = Workload::start(&[&open, "flock:ex", "hold-in-child:4", "exit:0"]);
    tracer.wait_for("the orphan", |line| {
        line["event"] == "orphan" && line["ino"] == ino
    });
    Workload::start(&[&open, "flock:ex:nb"]).finish_any();
    Workload::start(&[&open, "flock:ex", "flock:un"]).finish();
    tracer.wait_for("the orphan's end", |line| {
        line["event"] == "orphan_end" && line["ino"] == ino
    });
    drop(taker);
    let tracer_pid = tracer.pid().to_string();
    tracer.stop();

    let by_tracer = format!("_PID={tracer_pid}");
    let export = journal.journalctl(&["-o", "json", &by_tracer]);
    let fields = [
        "_HOSTNAME",
        "LOCK_EVENT",
        "LOCK_TS",
        "LOCK_KIND",
        "LOCK_MODE",
        "LOCK_DEV",
        "LOCK_INO",
        "LOCK_GENERATION",
        "LOCK_PATH",
        "LOCK_START",
        "LOCK_END",
        "LOCK_PID",
        "LOCK_START_TIME",
        "LOCK_COMM",
        "LOCK_REASON",
        "LOCK_ERRNO",
        "LOCK_WAIT_NS",
        "LOCK_HELD_NS",
        "LOCK_ORPHAN",
        "LOCK_ORPHAN_NS",
        "LOCK_TAKER_EXIT",
        "LOCK_HOLDERS",
        "LOCK_BY",
        "LOCK_BLOCKERS",
    ]
    .join(",");
    let some_fields = journal.journalctl(&[
        "-o",
        "json",
        &format!("--output-fields={fields}"),
        &by_tracer,
    ]);
    assert!(
        text(&export).contains(r#""LOCK_EVENT":"orphan_end""#),
        "{}",
        text(&export)
    );
    let exported = dir.path().join("journal.json");
    std::fs::write(&exported, &export).unwrap();
    let narrowed = dir.path().join("journal-fields.json");
    std::fs::write(&narrowed, &some_fields).unwrap();
    let gzipped = dir.path().join("journal.json.gz");
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&export).unwrap();
    std::fs::write(&gzipped, gzip.finish().unwrap()).unwrap();

    let path = file.display().to_string();
    let log = log.display().to_string();
    for query in [
        vec![],
        vec!["--json"],
        vec!["--path", &path],
        vec!["--orphans", "--json"],
    ] {
        let tell = |input: &str, stdin: Option<&[u8]>| {
            let mut args = query.clone();
            args.push(input);
            let output = report(&args, stdin);
            assert_eq!(
                output.status.code(),
                Some(0),
                "{args:?}: {}",
                text(&output.stderr)
            );
            text(&output.stdout)
        };
        let from_log = tell(&log, None);
        assert!(from_log.contains(&path), "{query:?}: {from_log}");
        if query.is_empty() {
            for told in [
                "the lock survived in",
                "was refused the lock",
                "after waiting",
            ] {
                assert!(from_log.contains(told), "no {told:?} in {from_log}");
            }
        }
        for input in [&exported, &narrowed, &gzipped] {
            let from_journal = tell(&input.display().to_string(), None);
            assert_eq!(from_journal, from_log, "{query:?} on {}", input.display());
        }
        assert_eq!(tell("-", Some(&export)), from_log, "{query:?} on stdin");
    }
}

#[test]
fn a_three_process_wait_chain_is_narrated_down_to_its_end() {
    let dir = TempDir::new("report-chain");
    let (first, second) = (dir.file("first"), dir.file("second"));
    let log = dir.file("trace.log");
    let tracer = TraceToFile::start(
        &log,
        &[
            "--path",
            first.to_str().unwrap(),
            "--path",
            second.to_str().unwrap(),
        ],
    );
    // C holds the second lock; B holds the first and waits for the second; A waits for the
    // first: A waits for B, which waits for C.
    let c = Workload::start(&[&format!("open:{}", second.display()), "flock:ex", "sleep:3"]);
    c.wait_step("flock:ex");
    let b = Workload::start(&[
        &format!("open:{}", first.display()),
        "flock:ex",
        "keep",
        &format!("open:{}", second.display()),
        "flock:ex",
    ]);
    let waits =
        |pid: u32| move |e: &Value| e["event"] == "wait" && e["pid"] == pid && e["kind"] == "flock";
    tracer.wait_for("B's wait", waits(b.pid()));
    let a = Workload::start(&[&format!("open:{}", first.display()), "flock:ex"]);
    tracer.wait_for("A's wait", waits(a.pid()));
    let (pid_a, pid_b, pid_c) = (a.pid(), b.pid(), c.pid());
    c.finish();
    b.finish();
    a.finish();
    tracer.wait_for("A's acquire", |e| {
        e["event"] == "acquire" && e["pid"] == pid_a
    });
    tracer.stop();

    let output = report(&[log.to_str().unwrap()], None);
    assert!(output.status.success(), "{output:?}");
    let told = text(&output.stdout);
    let expected = format!(
        "pid {pid_a} (lockwork) queued for the lock, held by pid {pid_b} (lockwork), itself \
         waiting for {}, held by pid {pid_c} (lockwork)",
        second.display()
    );
    assert!(told.contains(&expected), "{expected}\nnot in\n{told}");
    assert!(
        told.contains(&format!(
            "pid {pid_b} (lockwork) queued for the lock, held by pid {pid_c} (lockwork)"
        )),
        "{told}"
    );
}

/// A log of more lines than the report keeps in memory (2^20): 1,000 locks, each taken and
/// released 550 times by one process, a millisecond apart.
fn log_of_many_lines(path: &Path) {
    let mut text = String::with_capacity(200 << 20);
    for turn in 0..550u64 {
        for lock in 0..1000u64 {
            for (step, event) in ["acquire", "release"].iter().enumerate() {
                let ms = (turn * 1000 + lock) * 2 + step as u64;
                let (seconds, ms) = (ms / 1000, ms % 1000);
                text += &format!(
                    r#"{{"event":"{event}","ts":"2026-11-27T03:{:02}:{:02}.{ms:03}Z","host":"web-1","pid":{},"comm":"job","kind":"flock","mode":"write","dev":"254:0","ino":{},"path":"/var/lock/many-{lock}.lock","start":0,"end":null}}"#,
                    seconds / 60,
                    seconds % 60,
                    10_000 + lock,
                    1_000 + lock,
                );
                text.push('\n');
            }
        }
    }
    std::fs::write(path, text).expect("write the log");
}

#[test]
fn lines_beyond_what_memory_keeps_go_to_tmpdir_and_a_tmpdir_that_takes_none_fails_in_one_line() {
    let dir = TempDir::new("report-spill");
    let log = dir.file("trace.log");
    log_of_many_lines(&log);
    let log = log.display().to_string();
    let run = |tmpdir: &Path| {
        Command::new(aimlock_bin())
            .args(["report", &log])
            .env("TMPDIR", tmpdir)
            .output()
            .expect("run aimlock report")
    };
    let spills = dir.path().join("spill");
    std::fs::create_dir(&spills).expect("make the directory");
    let output = run(&spills);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        stdout.contains("totals: held 550ms in 550 holds"),
        "{stdout}"
    );
    // The file the lines went to was removed as soon as it was made.
    let left: Vec<_> = std::fs::read_dir(&spills)
        .expect("read the directory")
        .collect();
    assert!(left.is_empty(), "{left:?}");

    let output = run(Path::new("/proc"));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "aimlock: cannot create a file in /proc to keep the lines read (set TMPDIR to another \
             directory): "
        ),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}
