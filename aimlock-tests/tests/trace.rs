//! `aimlock trace` on the running kernel, with real processes taking real locks.

use std::time::Duration;

use aimlock_tests::{Tracer, Workload, TempDir, inode, on_inode};
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(10);

fn lock_events(events: &[Value], ino: u64, pid: u32) -> Vec<Value> {
    on_inode(events, ino)
        .into_iter()
        .filter(|e| e["pid"] == pid)
        .collect()
}

#[test]
fn flock_acquire_and_release_of_a_child_process() {
    let dir = TempDir::new("flock");
    let file = dir.file("lock");
    let ino = inode(&file);
    let tracer = Tracer::start(&[]);
    // The pause lets aimlock read the path from the process's fds while it is alive.
    let work = Workload::start(&[&format!("open:{}", file.display()), "flock:ex", "sleep:0.3", "flock:un"]);
    let pid = work.pid();
    work.finish();
    tracer.wait_for("the release", SETTLE, |e| {
        e["event"] == "release" && e["ino"] == ino && e["pid"] == pid
    });
    let events = tracer.stop();
    assert_eq!(events[0]["event"], "start");
    assert!(events[0]["schema"].is_u64());
    let stop = events.last().unwrap();
    assert_eq!(stop["event"], "stop");
    assert!(stop["lost"].is_u64(), "{stop}");

    let mine = lock_events(&events, ino, pid);
    let kinds: Vec<&str> = mine.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["acquire", "release"], "{mine:#?}");
    for event in &mine {
        assert_eq!(event["kind"], "flock");
        assert_eq!(event["mode"], "write");
        assert_eq!(event["comm"], "lockwork");
        assert!(event["dev"].as_str().unwrap().contains(':'));
        assert!(event["ts"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(mine[1]["reason"], "unlock");
    assert_eq!(mine[0]["path"], file.display().to_string());
}
