//! `aimlock report` on logs the real tracer wrote, and on damaged or missing logs.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use aimlock_tests::{TempDir, Workload, aimlock_bin, inode, require_root};
use serde_json::Value;

/// How long the tracer may take to start or to write an event.
const SETTLE: Duration = Duration::from_secs(60);

/// `aimlock trace` writing its log to a file, as in production.
struct TraceToFile {
    child: Child,
    log: PathBuf,
}

impl TraceToFile {
    fn start(log: &Path, file: &Path) -> Self {
        require_root();
        let child = Command::new(aimlock_bin())
            .args(["trace", "--format", "json", "--output"])
            .arg(log)
            .arg("--path")
            .arg(file)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn aimlock trace");
        let tracer = Self {
            child,
            log: log.to_owned(),
        };
        tracer.wait_for("the start line", |line| line["event"] == "start");
        tracer
    }

    fn lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + SETTLE;
        loop {
            if let Some(found) = self.lines().into_iter().find(|line| pred(line)) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the log has {:#?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGINT; returns once the tracer has written its stop line and exited.
    fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("SIGINT the tracer");
        let status = self.child.wait().expect("wait for the tracer");
        assert!(status.success(), "aimlock trace exited with {status}");
    }
}

impl Drop for TraceToFile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    let tracer = TraceToFile::start(&log, &file);
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
