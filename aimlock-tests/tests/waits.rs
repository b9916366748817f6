//! Every wait ends in the log as the kernel ended it: granted, refused, interrupted, or given up
//! by the waiter's exit; and the post-mortem says so.

use std::{process::Command, time::Duration};

use aimlock_tests::{
    KillOnDrop, TempDir, Tracer, Workload, aimlock_bin, inode, kinds, on_inode, write_log,
};

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
    let _ghost = KillOnDrop(ghost.holder_pid());
    ghost.finish();
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
    // Where the kernel lets the end of the call be seen, it was interrupted; elsewhere the
    // waiter's exit ends it. Never a kernel-internal code.
    assert!(
        end["errno"] == "EINTR" || (end.get("errno").is_none() && end["reason"] == "exit"),
        "{end}"
    );

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
