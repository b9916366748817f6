//! The tracer's lock table is the kernel's: seeded at start, orphans confirmed and their holders
//! named from the kernel's own table, reconciled after lost records, continuous across restarts.

use std::{process::Command, time::Duration};

use aimlock_tests::{
    KillOnDrop, TempDir, Tracer, Workload, aimlock_bin, alive, eventually, inode, kinds, of_kind,
    on_inode, write_log,
};
use serde_json::Value;

/// Generous: the suite also runs in emulated VMs, where a burst starves everything else.
const SETTLE: Duration = Duration::from_secs(60);

fn holder_pids(line: &Value) -> Vec<u64> {
    line["holders"]
        .as_array()
        .unwrap_or_else(|| panic!("no holders in {line}"))
        .iter()
        .map(|holder| holder["pid"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_lock_taken_before_the_start_is_held_then_orphaned_when_its_taker_exits() {
    let dir = TempDir::new("truth-before");
    let file = dir.file("lock");
    let ino = inode(&file);
    let mut work = Workload::start(&[
        &format!("open:{}", file.display()),
        "flock:ex",
        "hold-in-child:60",
        "wait-stdin",
        "exit:0",
    ]);
    let taker = work.pid();
    let holder = work.holder_pid();
    let _cleanup = KillOnDrop(holder);
    work.wait_step("hold-in-child:60");

    let tracer = Tracer::start(&["--path", &file.display().to_string()]);
    let held = tracer.wait_for("the held line", SETTLE, |e| {
        e["event"] == "held" && e["ino"] == ino
    });
    assert_eq!(held["pid"], taker, "{held}");
    assert_eq!(held["comm"], "lockwork");
    assert_eq!(held["mode"], "write");
    assert_eq!(held["orphan"], false);
    assert_eq!(held["path"], file.display().to_string());
    let mut holders = holder_pids(&held);
    holders.sort();
    assert_eq!(holders, [u64::from(taker), u64::from(holder)], "{held}");

    work.proceed();
    work.finish();
    let orphan = tracer.wait_for("the orphan", SETTLE, |e| {
        e["event"] == "orphan" && e["ino"] == ino
    });
    assert_eq!(orphan["pid"], taker, "{orphan}");
    assert_eq!(holder_pids(&orphan), [u64::from(holder)], "{orphan}");
    assert!(
        orphan["taker_exit"].is_string(),
        "{:#?}",
        on_inode(&tracer.events(), ino)
    );

    drop(_cleanup);
    let end = tracer.wait_for("the orphan's end", SETTLE, |e| {
        e["event"] == "orphan_end" && e["ino"] == ino
    });
    assert_eq!(end["by"]["pid"], holder);
    let events = tracer.stop();
    let release = on_inode(&events, ino)
        .into_iter()
        .find(|e| e["event"] == "release")
        .expect("a release");
    // Taken before the trace began: how long it was held is not known.
    assert!(release.get("held_ns").is_none(), "{release}");
    assert_eq!(release["reason"], "exit");
}

#[test]
fn an_orphan_present_at_start_is_reported_at_once() {
    let dir = TempDir::new("truth-orphan-at-start");
    let file = dir.file("lock");
    let ino = inode(&file);
    let work = Workload::start(&[
        &format!("open:{}", file.display()),
        "flock:sh",
        "hold-in-child:60",
        "exit:0",
    ]);
    let taker = work.pid();
    let holder = work.holder_pid();
    let _cleanup = KillOnDrop(holder);
    work.finish();
    assert!(!alive(taker));

    let tracer = Tracer::start(&["--path", &file.display().to_string()]);
    let events = eventually("the orphan", SETTLE, || {
        let events = on_inode(&tracer.events(), ino);
        events
            .iter()
            .any(|e| e["event"] == "orphan")
            .then_some(events)
    });
    assert_eq!(kinds(&events), ["held", "orphan"], "{events:#?}");
    let (held, orphan) = (&events[0], &events[1]);
    assert_eq!(held["orphan"], true, "{held}");
    assert_eq!(held["pid"], taker);
    assert_eq!(held["mode"], "read");
    assert_eq!(holder_pids(held), [u64::from(holder)]);
    assert_eq!(orphan["pid"], taker);
    assert_eq!(orphan["ts"], held["ts"]);
    assert_eq!(holder_pids(orphan), [u64::from(holder)]);
    // The taker was gone before the tracer started: when, nobody recorded.
    assert!(orphan.get("taker_exit").is_none(), "{orphan}");
    assert_eq!(orphan["path"], file.display().to_string());
    tracer.stop();
}

#[test]
fn holders_exiting_at_the_edge_of_the_grace_period_never_lose_a_release() {
    let dir = TempDir::new("truth-grace-edge");
    let files: Vec<_> = (0..8)
        .map(|index| dir.file(&format!("lock-{index}")))
        .collect();
    let paths: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let mut args = Vec::new();
    for path in &paths {
        args.extend(["--path", path.as_str()]);
    }
    let tracer = Tracer::start(&args);
    // The exit grace is 1 s: holders exit from 0.95 to 1.05 s after their takers.
    let mut holders = Vec::new();
    for (index, path) in paths.iter().enumerate() {
        let seconds = 0.95 + 0.1 * index as f64 / 7.0;
        let work = Workload::start(&[
            &format!("open:{path}"),
            "flock:ex",
            &format!("hold-in-child:{seconds:.3}"),
            "exit:0",
        ]);
        holders.push(work.holder_pid());
        work.finish();
    }
    for &holder in &holders {
        eventually("the holders' exit", SETTLE, || {
            (!alive(holder)).then_some(())
        });
    }
    // Long enough for any orphan to be confirmed or cleared.
    std::thread::sleep(Duration::from_secs(3));
    let events = tracer.stop();
    for (file, holder) in files.iter().zip(&holders) {
        let mine = on_inode(&events, inode(file));
        let count = |kind| of_kind(&mine, kind).len();
        assert_eq!(count("acquire"), 1, "{mine:#?}");
        assert_eq!(
            count("release"),
            1,
            "every acquire has its release: {mine:#?}"
        );
        let release = of_kind(&mine, "release")[0];
        assert_eq!(release["reason"], "exit", "{release}");
        assert_eq!(release["pid"], *holder, "{release}");
        assert!(
            count("orphan_end") <= count("orphan"),
            "an orphan_end without an orphan: {mine:#?}"
        );
        for orphan in of_kind(&mine, "orphan") {
            assert_eq!(holder_pids(orphan), [u64::from(*holder)], "{orphan}");
        }
    }
}

#[test]
fn only_the_processes_sharing_the_description_hold_an_orphan() {
    let dir = TempDir::new("truth-two-shared");
    let file = dir.file("lock");
    let ino = inode(&file);
    let open = format!("open:{}", file.display());
    let tracer = Tracer::start(&["--path", &file.display().to_string()]);
    // An unrelated reader with its own open and its own shared lock.
    let bystander = Workload::start(&[&open, "flock:sh", "wait-stdin"]);
    bystander.wait_step("flock:sh");
    let work = Workload::start(&[&open, "flock:sh", "hold-in-child:4", "exit:0"]);
    let taker = work.pid();
    let holder = work.holder_pid();
    let orphan = tracer.wait_for("the orphan", SETTLE, |e| {
        e["event"] == "orphan" && e["ino"] == ino
    });
    assert_eq!(orphan["pid"], taker);
    assert_eq!(holder_pids(&orphan), [u64::from(holder)], "{orphan}");
    drop(work);
    drop(bystander);
    tracer.stop();
}

/// Sends `signal` to the tracer's process (every thread of it).
fn signal_tracer(tracer: &Tracer, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(tracer.pid() as i32), signal)
        .unwrap_or_else(|err| panic!("{signal} to the tracer: {err}"));
}

#[test]
fn an_orphan_made_while_the_ring_overflows_is_still_reported() {
    let dir = TempDir::new("truth-overflow");
    let file = dir.file("lock");
    let burst_file = dir.file("burst");
    let ino = inode(&file);
    // Every event, each call on another byte: no call folds or shrinks to a repeat record.
    let tracer = Tracer::start(&[
        "--path",
        &file.display().to_string(),
        "--path",
        &burst_file.display().to_string(),
        "--ring-size",
        "4096",
        "--backlog-size",
        "4096",
        "--every-event",
    ]);
    let burst = Workload::start(&[
        &format!("open:{}", burst_file.display()),
        "loop:3000000:posix-bytes",
    ]);
    burst.only_on_spare_cpu();
    let burst_ino = inode(&burst_file);
    tracer.wait_for("the burst", SETTLE, |e| e["ino"] == burst_ino);
    // The tracer stopped, the burst fills the ring for certain (a reader at a raised priority
    // drained it as fast as one emulated CPU's niced burst filled it), and the orphan's records,
    // its taker's exit among them, find it full.
    signal_tracer(&tracer, nix::sys::signal::Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(300));
    let work = Workload::start(&[
        &format!("open:{}", file.display()),
        "flock:ex",
        "hold-in-child:8",
        "exit:0",
    ]);
    let taker = work.pid();
    let holder = work.holder_pid();
    let _cleanup = KillOnDrop(holder);
    work.finish();
    signal_tracer(&tracer, nix::sys::signal::Signal::SIGCONT);
    let orphan = tracer.wait_for("the orphan", SETTLE, |e| {
        e["event"] == "orphan" && e["ino"] == ino
    });
    assert_eq!(orphan["pid"], taker, "{orphan}");
    assert_eq!(holder_pids(&orphan), [u64::from(holder)], "{orphan}");
    drop(burst);
    let events = tracer.stop();
    let stop = events.last().unwrap();
    assert!(
        stop["lost"].as_u64().unwrap() > 0,
        "the ring never overflowed: {stop}"
    );
}

#[test]
fn a_report_across_a_tracer_restart_shows_one_continuous_hold() {
    let dir = TempDir::new("truth-restart");
    let file = dir.file("lock");
    let ino = inode(&file);
    let path = file.display().to_string();
    let first = Tracer::start(&["--path", &path]);
    let mut work = Workload::start(&[&format!("open:{path}"), "flock:ex", "wait-stdin", "exit:0"]);
    let taker = work.pid();
    let acquire = first.wait_for("the acquire", SETTLE, |e| {
        e["event"] == "acquire" && e["ino"] == ino
    });
    let dev = acquire["dev"].as_str().unwrap().to_owned();
    // A `systemctl restart`: SIGTERM, then a new tracer.
    let first_run = first.stop_with(nix::sys::signal::Signal::SIGTERM);
    let second = Tracer::start(&["--path", &path]);
    second.wait_for("the held line", SETTLE, |e| {
        e["event"] == "held" && e["ino"] == ino
    });
    work.proceed();
    work.finish();
    second.wait_for("the release", SETTLE, |e| {
        e["event"] == "release" && e["ino"] == ino
    });
    let second_run = second.stop();
    let (log1, log2) = (dir.path().join("run1.log"), dir.path().join("run2.log"));
    write_log(&log1, &first_run);
    write_log(&log2, &second_run);

    let output = Command::new(aimlock_bin())
        .args(["report", "--json", "--inode", &format!("{dev}:{ino}")])
        .arg(&log1)
        .arg(&log2)
        .output()
        .expect("run aimlock report");
    assert!(output.status.success(), "{output:?}");
    let locks: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(locks.len(), 1, "{locks:#?}");
    let holds = locks[0]["holds"].as_array().unwrap();
    assert_eq!(
        holds.len(),
        1,
        "one hold from the acquire to the release: {holds:#?}"
    );
    let hold = &holds[0];
    assert_eq!(hold["taker"]["pid"], taker);
    assert_eq!(hold["acquire_logged"], true, "{hold}");
    // The report gives milliseconds.
    let acquired = hold["acquired"].as_str().unwrap().trim_end_matches('Z');
    assert!(
        acquire["ts"].as_str().unwrap().starts_with(acquired),
        "{hold}"
    );
    assert_eq!(hold["still_held"], false, "{hold}");
    assert_eq!(hold["reason"], "exit", "{hold}");
}
