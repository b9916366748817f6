//! Every wait ends in the log as the kernel ended it: granted, refused, interrupted, or given up
//! by the waiter's exit; and the post-mortem says so. Every wait and refusal names who held the
//! lock in its way; waits that form a cycle are a deadlock, in the log and in `aimlock locks`.

use std::{process::Command, time::Duration};

use aimlock_tests::{
    KillOnDrop, TempDir, Tracer, Workload, aimlock_bin, inode, kinds, lock_table, on_inode,
    proc_start_time, run_aimlock, write_log,
};
use serde_json::{Value, json};

const SETTLE: Duration = Duration::from_secs(60);

#[test]
fn a_waiter_that_gives_up_on_a_ghost_ends_its_wait() {
    let dir = TempDir::new("waits-give-up");
    let file = dir.file("lock");
    let ino = inode(&file);
    let path = file.display().to_string();
    let tracer = Tracer::start(&["--path", &path]);
    // The ghost: a child keeps the flock its parent took, the parent exits.
    let ghost = Workload::start(&[
        &format!("open:{path}"),
        "flock:ex",
        "hold-in-child:60",
        "exit:0",
    ]);
    let holder = ghost.holder_pid();
    let _ghost = KillOnDrop(holder);
    let holder_start = proc_start_time(holder).expect("the ghost runs");
    ghost.finish();
    tracer.wait_for("the orphan", SETTLE, |e| {
        e["event"] == "orphan" && e["ino"] == ino
    });
    // `flock -w 2`: a blocking flock that a signal ends after 2 s.
    let waiter = Workload::start(&[&format!("open:{path}"), "alarm:2", "flock:ex"]);
    let waiter_pid = waiter.pid();
    let status = waiter.finish_any();
    assert!(!status.success(), "the waiter got a lock held by a ghost");
    let end = tracer.wait_for("the end of the wait", SETTLE, |e| {
        e["event"] == "fail" && e["ino"] == ino && e["pid"] == waiter_pid
    });
    let events = tracer.stop();
    let mine: Vec<_> = on_inode(&events, ino)
        .into_iter()
        .filter(|e| e["pid"] == waiter_pid)
        .collect();
    assert_eq!(kinds(&mine), ["wait", "fail"], "{mine:#?}");
    // The signal ended it, not the waiter's exit; never a kernel-internal code.
    assert_eq!(end["errno"], "EINTR", "{end}");
    // What it waited for was held by the ghost, an orphan.
    for line in &mine {
        assert_eq!(
            line["blockers"],
            json!([{"pid": holder, "start_time": holder_start, "comm": "lockwork", "orphan": true}]),
            "{line}"
        );
    }

    // The post-mortem's longest wait is the 2 s the waiter really waited.
    let log = dir.path().join("trace.log");
    write_log(&log, &events);
    let output = Command::new(aimlock_bin())
        .args(["report", "--json", "--path", &path])
        .arg(&log)
        .output()
        .expect("run aimlock report");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    let lock: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let waits = lock["waits"].as_array().expect("waits");
    let wait = waits
        .iter()
        .find(|wait| wait["waiter"]["pid"] == waiter_pid)
        .unwrap_or_else(|| panic!("the waiter's wait: {lock:#}"));
    assert!(wait["until"].is_string(), "the wait has an end: {wait}");
    assert_ne!(wait["outcome"], "waiting", "{wait}");
    let waited = wait["wait_ns"].as_u64().expect("wait_ns");
    assert!((1_500_000_000..10_000_000_000).contains(&waited), "{wait}");
}

#[test]
fn a_flock_wait_that_a_caught_signal_interrupts_ends_while_the_waiter_goes_on() {
    let dir = TempDir::new("waits-caught-signal");
    let file = dir.file("lock");
    let ino = inode(&file);
    let path = file.display().to_string();
    let tracer = Tracer::start(&["--path", &path]);
    let mut holder = Workload::start(&[&format!("open:{path}"), "flock:ex", "wait-stdin"]);
    holder.wait_step("flock:ex");
    // Each waiter's handler returns and its flock(2) fails with EINTR; it lives on until told.
    for round in 0..3 {
        let mut waiter = Workload::start(&[
            &format!("open:{path}"),
            // Time enough for the call to queue, even on an emulated CPU.
            "alarm:2",
            "flock:ex:go-on",
            "wait-stdin",
        ]);
        let pid = waiter.pid();
        let end = tracer.wait_for(
            &format!("round {round}: the end of the wait"),
            SETTLE,
            |e| e["event"] == "fail" && e["ino"] == ino && e["pid"] == pid,
        );
        // Seen while the waiter still waits for its stdin: the signal ended the wait, not an exit.
        assert_eq!(end["errno"], "EINTR", "round {round}: {end}");
        assert!(end.get("reason").is_none(), "round {round}: {end}");
        waiter.wait_step("flock:ex:go-on");
        waiter.proceed();
        waiter.finish();
    }
    holder.proceed();
    holder.finish();
    let events = tracer.stop();
    let waits = on_inode(&events, ino)
        .into_iter()
        .filter(|e| e["event"] == "wait" || e["event"] == "fail")
        .count();
    assert_eq!(waits, 6, "a wait and its end for each round: {events:#?}");
}

/// The blockers of the first line of `event` by `pid` on `ino`.
fn blockers_of(tracer: &Tracer, event: &str, pid: u32, ino: u64) -> Value {
    let line = tracer.wait_for(&format!("the {event} of {pid}"), SETTLE, |e| {
        e["event"] == event && e["pid"] == pid && e["ino"] == ino
    });
    line["blockers"].clone()
}

#[test]
fn a_blocked_flock_a_blocked_posix_waiter_and_a_refusal_name_their_blocker() {
    let dir = TempDir::new("waits-blockers");
    let (flock_file, posix_file) = (dir.file("flock"), dir.file("posix"));
    let (flock_ino, posix_ino) = (inode(&flock_file), inode(&posix_file));
    let (flock_path, posix_path) = (
        flock_file.display().to_string(),
        posix_file.display().to_string(),
    );
    let tracer = Tracer::start(&["--path", &flock_path, "--path", &posix_path]);
    let mut holder = Workload::start(&[
        &format!("open:{flock_path}"),
        "flock:ex",
        "keep",
        &format!("open:{posix_path}"),
        "posix:w:0:10",
        "wait-stdin",
    ]);
    holder.wait_step("posix:w:0:10");
    let holder_pid = holder.pid();
    let holder_start = proc_start_time(holder_pid).expect("the holder runs");
    let expected = json!([{"pid": holder_pid, "start_time": holder_start, "comm": "lockwork"}]);

    let flock_waiter = Workload::start(&[&format!("open:{flock_path}"), "flock:ex"]);
    // Bytes 5-14 overlap the holder's 0-9; a read of bytes 20-29 would not have waited.
    let posix_waiter = Workload::start(&[&format!("open:{posix_path}"), "posix:r:5:10:wait"]);
    let refused = Workload::start(&[&format!("open:{flock_path}"), "flock:sh:nb"]);
    assert_eq!(
        blockers_of(&tracer, "wait", flock_waiter.pid(), flock_ino),
        expected
    );
    assert_eq!(
        blockers_of(&tracer, "wait", posix_waiter.pid(), posix_ino),
        expected
    );
    let refused_pid = refused.pid();
    assert!(!refused.finish_any().success(), "LOCK_NB was granted");
    let refusal = tracer.wait_for("the refusal", SETTLE, |e| {
        e["event"] == "fail" && e["pid"] == refused_pid
    });
    assert_eq!(refusal["errno"], "EAGAIN", "{refusal}");
    assert_eq!(refusal["blockers"], expected, "{refusal}");

    // The holder lets go: both waiters get their lock.
    holder.proceed();
    holder.finish();
    flock_waiter.finish();
    posix_waiter.finish();
    tracer.stop();
}

#[test]
fn two_processes_taking_two_flocks_in_opposite_order_are_a_deadlock() {
    let dir = TempDir::new("waits-deadlock");
    let (a, b) = (dir.file("a"), dir.file("b"));
    let (a_path, b_path) = (a.display().to_string(), b.display().to_string());
    let tracer = Tracer::start(&["--path", &a_path, "--path", &b_path]);
    let take_then_wait = |first: &str, second: &str| {
        Workload::start(&[
            &format!("open:{first}"),
            "flock:ex",
            "keep",
            "wait-stdin",
            &format!("open:{second}"),
            "flock:ex",
        ])
    };
    let mut first = take_then_wait(&a_path, &b_path);
    let mut second = take_then_wait(&b_path, &a_path);
    first.wait_step("keep");
    second.wait_step("keep");
    first.proceed();
    blockers_of(&tracer, "wait", first.pid(), inode(&b));
    second.proceed();
    let deadlock = tracer.wait_for("the deadlock", SETTLE, |e| {
        e["event"] == "deadlock"
            && e["cycle"]
                .as_array()
                .is_some_and(|cycle| cycle.iter().any(|step| step["pid"] == first.pid()))
    });
    let lock = |path: &str| json!({"kind": "flock", "mode": "write", "path": path, "start": 0, "end": null});
    let steps: Vec<Value> = deadlock["cycle"]
        .as_array()
        .expect("a cycle")
        .iter()
        .map(|step| {
            let strip = |lock: &Value| {
                json!({"kind": lock["kind"], "mode": lock["mode"], "path": lock["path"],
                       "start": lock["start"], "end": lock["end"]})
            };
            json!({"pid": step["pid"], "holds": strip(&step["holds"]),
                   "waits_for": strip(&step["waits_for"])})
        })
        .collect();
    let (first_step, second_step) = (
        json!({"pid": first.pid(), "holds": lock(&a_path), "waits_for": lock(&b_path)}),
        json!({"pid": second.pid(), "holds": lock(&b_path), "waits_for": lock(&a_path)}),
    );
    assert!(
        steps == [first_step.clone(), second_step.clone()] || steps == [second_step, first_step],
        "{deadlock:#}"
    );

    // `aimlock locks` sees the same cycle in the kernel's table.
    let glob = format!("{}/*", dir.path().display());
    let output = run_aimlock(&["locks", "--json", "--path", &glob]);
    assert!(output.status.success(), "{output:?}");
    let document: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    let chains = document["chains"].as_array().expect("chains");
    assert_eq!(chains.len(), 1, "{document:#}");
    assert_eq!(chains[0]["deadlock"], true, "{document:#}");
    let mut pids: Vec<u64> = chains[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["pid"].as_u64().unwrap())
        .collect();
    pids.sort_unstable();
    let mut expected = vec![u64::from(first.pid()), u64::from(second.pid())];
    expected.sort_unstable();
    assert_eq!(pids, expected, "{document:#}");
    let text = run_aimlock(&["locks", "--path", &glob]);
    let text = String::from_utf8_lossy(&text.stdout);
    let line = text
        .lines()
        .find(|line| line.starts_with("deadlock: "))
        .unwrap_or_else(|| panic!("no deadlock line in {text}"));
    assert!(
        line.contains(&format!("{}(lockwork)", first.pid())),
        "{line}"
    );
    assert!(line.contains(&a_path) && line.contains(&b_path), "{line}");

    // Killing one ends it (the drops kill both); the log has the deadlock once.
    drop(first);
    let events = tracer.stop();
    let deadlocks = events
        .iter()
        .filter(|e| e["event"] == "deadlock" && e["cycle"] == deadlock["cycle"])
        .count();
    assert_eq!(deadlocks, 1);
}

#[test]
fn aimlock_locks_shows_a_chain_of_waiters_that_ends_at_an_orphan() {
    let dir = TempDir::new("waits-chain");
    let (a, b) = (dir.file("a"), dir.file("b"));
    let (a_path, b_path) = (a.display().to_string(), b.display().to_string());
    // The ghost: a child keeps the flock on `a` its parent took, the parent exits.
    let ghost = Workload::start(&[
        &format!("open:{a_path}"),
        "flock:ex",
        "hold-in-child:60",
        "exit:0",
    ]);
    let ghost_pid = ghost.holder_pid();
    let _ghost = KillOnDrop(ghost_pid);
    ghost.finish();
    // The middle one holds `b` and waits for `a`; the last one waits for `b`.
    let middle = Workload::start(&[
        &format!("open:{b_path}"),
        "flock:ex",
        "keep",
        &format!("open:{a_path}"),
        "flock:ex",
    ]);
    middle.wait_step("keep");
    let last = Workload::start(&[&format!("open:{b_path}"), "flock:ex"]);
    let glob = format!("{}/*", dir.path().display());
    let chain = aimlock_tests::eventually("the chain", SETTLE, || {
        let output = run_aimlock(&["locks", "--json", "--path", &glob]);
        let document: Value = serde_json::from_slice(&output.stdout).ok()?;
        let chains = document["chains"].as_array()?;
        chains
            .iter()
            .find(|chain| chain["steps"].as_array().is_some_and(|s| s.len() == 2))
            .cloned()
    });
    let steps = chain["steps"].as_array().unwrap();
    assert_eq!(chain["deadlock"], false, "{chain:#}");
    assert_eq!(steps[0]["pid"], last.pid(), "{chain:#}");
    assert_eq!(steps[0]["waits_for"]["path"], b_path.as_str(), "{chain:#}");
    assert_eq!(
        steps[0]["held_by"],
        json!([{"pid": middle.pid(), "comm": "lockwork"}])
    );
    assert_eq!(steps[1]["pid"], middle.pid(), "{chain:#}");
    assert_eq!(steps[1]["waits_for"]["path"], a_path.as_str(), "{chain:#}");
    assert_eq!(steps[1]["waits_for"]["orphan"], true, "{chain:#}");
    assert_eq!(
        steps[1]["held_by"],
        json!([{"pid": ghost_pid, "comm": "lockwork"}])
    );
    // The table still lists the locks, and the text says the chain under it.
    assert!(!lock_table(&["--path", &glob]).is_empty());
    let text = run_aimlock(&["locks", "--path", &glob]);
    let text = String::from_utf8_lossy(&text.stdout);
    let expected = format!(
        "wait chain: {}(lockwork) waits for {b_path} (flock write) held by {}(lockwork), and \
         {}(lockwork) waits for {a_path} (flock write) held by {ghost_pid}(lockwork) (an orphan)",
        last.pid(),
        middle.pid(),
        middle.pid()
    );
    assert!(text.lines().any(|line| line == expected), "{text}");
}
