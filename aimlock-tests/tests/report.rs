//! `aimlock report` on logs the real tracer wrote, and on damaged or missing logs.

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use aimlock_tests::{
    KillOnDrop, TempDir, TraceToFile, Workload, aimlock_bin, eventually, inode, require_root,
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
    let paths: Vec<&str> = files.iter().flat_map(|file| ["--path", file]).collect();
    let tracer = TraceToFile::start(&log, &paths);
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
