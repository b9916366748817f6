//! How the holders of orphaned locks came to hold them (`lineage`), and the `inherit` lines
//! that say so as it happens: real processes, traced on the running kernel.

use std::{path::Path, process::Command, time::Duration};

use aimlock_tests::{
    KillOnDrop, TempDir, Tracer, Workload, inode, lock_table, of_kind, on_inode, proc_start_time,
    run_aimlock,
};
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(10);

/// `flock FILE -c 'sleep 30 &'` under /bin/sh: flock(1) takes the lock, its child runs the
/// shell, which starts `sleep` in the background and exits; flock(1) exits with it. Returns
/// flock's pid and the sleep, which holds the lock from then on.
fn flock_background_sleep(file: &Path) -> (u32, KillOnDrop) {
    let output = Command::new("sh")
        .arg("-c")
        // flock(1) runs the command with $SHELL; the sleep's output is not the pipe read here.
        .arg(r#"flock "$0" -c 'sleep 30 >/dev/null 2>&1 & echo sleep=$!' & echo flock=$!; wait"#)
        .arg(file)
        .env("SHELL", "/bin/sh")
        .output()
        .expect("run flock(1)");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let pid = |name: &str| -> u32 {
        stdout
            .split_whitespace()
            .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no {name} pid in {stdout:?}"))
    };
    (pid("flock"), KillOnDrop(pid("sleep")))
}

/// (pid, comm, via, from) of each step.
fn steps(lineage: &Value) -> Vec<(u64, String, String, Option<u64>)> {
    lineage
        .as_array()
        .expect("a lineage")
        .iter()
        .map(|step| {
            (
                step["pid"].as_u64().unwrap(),
                step["comm"].as_str().unwrap().to_owned(),
                step["via"].as_str().unwrap().to_owned(),
                step["from"].as_u64(),
            )
        })
        .collect()
}

/// Rounds of the flock(1) scenario under one tracer: the shell that hands the lock on exits
/// within a millisecond of its exec, a race with the tracer's look at its descriptors.
const FLOCK_ROUNDS: usize = 3;

#[test]
fn a_background_command_of_flock_is_born_holding_the_lock_and_its_lineage_says_how() {
    let dir = TempDir::new("lineage-flock");
    let files: Vec<_> = (0..FLOCK_ROUNDS)
        .map(|round| dir.file(&format!("lock{round}")))
        .collect();
    let paths: Vec<String> = files
        .iter()
        .map(|file| file.display().to_string())
        .collect();
    let args: Vec<&str> = paths.iter().flat_map(|path| ["--path", path]).collect();
    let tracer = Tracer::start(&args);
    let mut rounds = Vec::new();
    for file in &files {
        let ino = inode(file);
        let (flock, sleep) = flock_background_sleep(file);
        let orphan = tracer.wait_for("the orphan", SETTLE, |e| {
            e["event"] == "orphan" && e["ino"] == ino
        });
        assert_eq!(orphan["pid"], flock);
        assert_eq!(orphan["holders"][0]["pid"], sleep.0, "{orphan}");
        let shell = check_flock_lineage(&orphan, flock, sleep.0);
        rounds.push((ino, shell, sleep));
    }
    // Each sleep's birth holding the lock was said as it happened, before its orphan.
    let events = tracer.stop();
    for (ino, shell, sleep) in &rounds {
        let born: Vec<&Value> = of_kind(&events, "inherit")
            .into_iter()
            .filter(|e| e["ino"] == *ino && e["pid"] == sleep.0)
            .collect();
        let vias: Vec<&str> = born.iter().map(|e| e["via"].as_str().unwrap()).collect();
        assert_eq!(vias, ["fork", "exec"], "{:#?}", of_kind(&events, "inherit"));
        let exec = born[1];
        assert_eq!(exec["comm"], "sleep");
        assert_eq!(exec["from"]["pid"], *shell, "{exec}");
        assert_eq!(exec["kind"], "flock");
        assert_eq!(exec["mode"], "write");
        let orphan_at = events
            .iter()
            .position(|e| e["event"] == "orphan" && e["ino"] == *ino)
            .unwrap();
        let exec_at = events.iter().position(|e| e == exec).unwrap();
        assert!(exec_at < orphan_at);
    }
}

/// Checks the orphan's lineage: flock's child runs the shell, which forks the child that runs
/// sleep. Returns the shell's pid.
fn check_flock_lineage(orphan: &Value, flock: u32, sleep: u32) -> u64 {
    let lineage = steps(&orphan["lineage"]);
    let [first, second, third, fourth] = &lineage[..] else {
        panic!("four steps: {orphan}");
    };
    let shell = first.0;
    assert_eq!(
        (first.1.as_str(), first.2.as_str(), first.3),
        ("flock", "fork", Some(u64::from(flock))),
        "{orphan}"
    );
    assert_eq!(
        (second.0, second.1.as_str(), second.2.as_str()),
        (shell, "sh", "exec"),
        "{orphan}"
    );
    assert_eq!(
        (third.0, third.1.as_str(), third.2.as_str(), third.3),
        (u64::from(sleep), "sh", "fork", Some(shell)),
        "{orphan}"
    );
    assert_eq!(
        (fourth.0, fourth.1.as_str(), fourth.2.as_str()),
        (u64::from(sleep), "sleep", "exec"),
        "{orphan}"
    );
    for step in orphan["lineage"].as_array().unwrap() {
        assert!(step["ts"].as_str().unwrap().ends_with('Z'), "{step}");
    }
    shell
}

#[test]
fn a_lock_passed_over_a_unix_socket_has_a_unix_socket_lineage() {
    let dir = TempDir::new("lineage-scm");
    let file = dir.file("lock");
    let socket = dir.path().join("sock");
    let ino = inode(&file);
    let tracer = Tracer::start(&[
        "--path",
        &file.display().to_string(),
        "--follow-unix-sockets",
    ]);
    let receiver = Workload::start(&[&format!("recvfd:{}", socket.display()), "sleep:3"]);
    receiver.wait_step("listening");
    let sender = Workload::start(&[
        &format!("open:{}", file.display()),
        "flock:ex",
        &format!("sendfd:{}", socket.display()),
        "close",
        "exit:0",
    ]);
    let taker = sender.pid();
    let orphan = tracer.wait_for("the orphan", SETTLE, |e| {
        e["event"] == "orphan" && e["ino"] == ino
    });
    assert_eq!(orphan["pid"], taker);
    assert_eq!(
        steps(&orphan["lineage"]),
        [(
            u64::from(receiver.pid()),
            "lockwork".to_owned(),
            "unix-socket".to_owned(),
            Some(u64::from(taker))
        )],
        "{orphan}"
    );
    let events = tracer.stop();
    let received: Vec<&Value> = of_kind(&events, "inherit")
        .into_iter()
        .filter(|e| e["ino"] == ino)
        .collect();
    assert_eq!(received.len(), 1, "{received:#?}");
    assert_eq!(received[0]["pid"], receiver.pid());
    assert_eq!(received[0]["via"], "unix-socket");
    assert_eq!(received[0]["from"]["pid"], taker);
    // Both processes are named with their start times, from the records themselves: the
    // receiver's as /proc says it, the sender's (gone now) as its own lock line said it.
    assert_eq!(
        received[0]["start_time"].as_u64(),
        proc_start_time(receiver.pid()),
        "{}",
        received[0]
    );
    let acquire = events
        .iter()
        .find(|e| e["event"] == "acquire" && e["pid"] == taker && e["ino"] == ino)
        .expect("the sender's acquire");
    assert!(acquire["start_time"].as_u64().is_some(), "{acquire}");
    assert_eq!(
        received[0]["from"]["start_time"], acquire["start_time"],
        "{}",
        received[0]
    );
    drop(sender);
    drop(receiver);
}

#[test]
fn without_follow_unix_sockets_a_received_description_has_a_lineage_not_seen() {
    let dir = TempDir::new("lineage-scm-off");
    let file = dir.file("lock");
    let socket = dir.path().join("sock");
    let ino = inode(&file);
    let tracer = Tracer::start(&["--path", &file.display().to_string()]);
    let receiver = Workload::start(&[&format!("recvfd:{}", socket.display()), "sleep:3"]);
    receiver.wait_step("listening");
    let sender = Workload::start(&[
        &format!("open:{}", file.display()),
        "flock:ex",
        &format!("sendfd:{}", socket.display()),
        "close",
        "exit:0",
    ]);
    let orphan = tracer.wait_for("the orphan", SETTLE, |e| {
        e["event"] == "orphan" && e["ino"] == ino
    });
    let lineage = orphan["lineage"].as_array().expect("a lineage");
    assert_eq!(lineage.len(), 1, "{orphan}");
    assert_eq!(lineage[0]["pid"], receiver.pid());
    assert_eq!(lineage[0]["via"], "unknown");
    assert_eq!(lineage[0]["why"], "not_seen");
    drop(sender);
    drop(receiver);
    tracer.stop();
}

#[test]
fn a_lock_orphaned_before_the_tracer_started_has_an_unknown_lineage_that_says_why() {
    let dir = TempDir::new("lineage-before");
    let file = dir.file("lock");
    let ino = inode(&file);
    let (_, sleep) = flock_background_sleep(&file);
    let tracer = Tracer::start(&["--path", &file.display().to_string()]);
    let orphan = tracer.wait_for("the orphan", SETTLE, |e| {
        e["event"] == "orphan" && e["ino"] == ino
    });
    let lineage = orphan["lineage"].as_array().expect("a lineage");
    assert_eq!(lineage.len(), 1, "{orphan}");
    assert_eq!(lineage[0]["pid"], sleep.0);
    assert_eq!(lineage[0]["comm"], "sleep");
    assert_eq!(lineage[0]["via"], "unknown");
    assert_eq!(lineage[0]["why"], "before_start");
    assert!(lineage[0].get("ts").is_none(), "{orphan}");
    tracer.stop();
}

/// A process that took its lock before the tracer started is followed from the tracer's first
/// look at the kernel's locks: the child it forks afterwards, left holding the lock when it
/// exits, has a lineage that says how. Twice, with the holder's pids given out anew.
#[test]
fn a_holder_from_before_the_start_is_followed_and_its_later_fork_is_in_the_lineage() {
    for round in 0..2 {
        let dir = TempDir::new(&format!("lineage-seeded-{round}"));
        let file = dir.file("lock");
        let ino = inode(&file);
        let mut work = Workload::start(&[
            &format!("open:{}", file.display()),
            "flock:ex",
            "wait-stdin",
            "hold-in-child:30",
            "exit:0",
        ]);
        work.wait_step("flock:ex");
        let tracer = Tracer::start(&["--path", &file.display().to_string()]);
        // Said once the kernel follows it.
        tracer.wait_for("the lock held at the start", SETTLE, |e| {
            e["event"] == "held" && e["ino"] == ino
        });
        work.proceed();
        let (parent, child) = (work.pid(), work.holder_pid());
        let _child = KillOnDrop(child);
        let orphan = tracer.wait_for("the orphan", SETTLE, |e| {
            e["event"] == "orphan" && e["ino"] == ino
        });
        assert_eq!(orphan["pid"], parent, "{orphan}");
        assert_eq!(orphan["holders"][0]["pid"], child, "{orphan}");
        let lineage = steps(&orphan["lineage"]);
        assert_eq!(
            lineage
                .iter()
                .map(|(pid, comm, via, from)| (*pid, comm.as_str(), via.as_str(), *from))
                .collect::<Vec<_>>(),
            [(
                u64::from(child),
                "lockwork",
                "fork",
                Some(u64::from(parent))
            )],
            "{orphan}"
        );
        tracer.stop();
    }
}

#[test]
fn aimlock_locks_marks_a_holder_that_inherited_the_description_from_its_parent() {
    let dir = TempDir::new("lineage-locks");
    let file = dir.file("lock");
    let ino = inode(&file);
    let work = Workload::start(&[
        &format!("open:{}", file.display()),
        "flock:ex",
        "hold-in-child:5",
        "sleep:5",
    ]);
    let (parent, child) = (work.pid(), work.holder_pid());
    let locks = on_inode(&lock_table(&[]), ino);
    assert_eq!(locks.len(), 1, "{locks:#?}");
    let holders = locks[0]["holders"].as_array().expect("holders");
    let by_pid = |pid: u32| {
        holders
            .iter()
            .find(|holder| holder["pid"] == pid)
            .unwrap_or_else(|| panic!("no holder {pid} in {holders:#?}"))
    };
    assert_eq!(by_pid(child)["inherited_from"], parent, "{holders:#?}");
    assert!(
        by_pid(parent).get("inherited_from").is_none(),
        "{holders:#?}"
    );
    let table = String::from_utf8(run_aimlock(&["locks", "--path", file.to_str().unwrap()]).stdout)
        .unwrap();
    assert!(
        table.contains(&format!("{child}(lockwork):3<{parent}")),
        "{table}"
    );
    drop(work);
}
