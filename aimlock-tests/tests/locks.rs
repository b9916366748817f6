//! `aimlock locks` against real processes holding real locks on the running kernel.
//!
//! Other tests take locks at the same time: each test looks only at its own files.

use std::{
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use aimlock_tests::{
    KillOnDrop, TempDir, Workload, aimlock_bin, alive, eventually, inode, lock_table, lockwork_bin,
    parse_lock_table, proc_locks_lines, require_root, run_aimlock,
};
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(10);

fn on_inode(locks: &[Value], ino: u64) -> Vec<Value> {
    locks
        .iter()
        .filter(|lock| lock["ino"] == ino)
        .cloned()
        .collect()
}

/// (pid, fd) of each holder.
fn holders(lock: &Value) -> Vec<(u64, u64)> {
    lock["holders"]
        .as_array()
        .expect("holders")
        .iter()
        .map(|holder| {
            (
                holder["pid"].as_u64().unwrap(),
                holder["fd"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn flock_inherited_in_a_pid_namespace_is_an_orphan_held_by_the_child() {
    require_root();
    let dir = TempDir::new("locks-pidns");
    let file = dir.file("lock");
    let ino = inode(&file);
    let open = format!("open:{}", file.display());
    let work = Workload::start(&["pidns", &open, "flock:ex", "hold-in-child:60"]);
    let holder_ns_pid = u64::from(work.holder_pid());
    let taker_ns_pid = work.wait_step("flock:ex")["pid"].as_u64().unwrap();
    assert_ne!(taker_ns_pid, holder_ns_pid);

    // Seen from the host: /proc/locks names the dead taker, aimlock the child that holds it.
    let lock = eventually("the taker's exit to orphan the lock", SETTLE, || {
        on_inode(&lock_table(&[]), ino)
            .into_iter()
            .find(|lock| lock["orphan"] == true)
    });
    let holder = &lock["holders"][0];
    let holder_pid = holder["pid"].as_u64().unwrap();
    let _cleanup = KillOnDrop(holder_pid as u32);
    assert_eq!(lock["holders"].as_array().unwrap().len(), 1, "{lock:#}");
    assert_eq!(holder["ns_pid"], holder_ns_pid, "{lock:#}");
    assert_eq!(holder["comm"], "lockwork");
    assert!(alive(holder_pid as u32));
    assert_eq!(
        (&lock["kind"], &lock["mode"]),
        (&Value::from("flock"), &Value::from("write"))
    );
    assert_eq!(lock["path"], file.display().to_string());
    assert_eq!(lock["hidden"], false);
    assert_eq!(lock["command"], Value::Null);
    let taker = lock["pid"].as_i64().unwrap();
    assert!(
        taker > 0 && taker as u64 != holder_pid && !alive(taker as u32),
        "{lock:#}"
    );
    let listed = proc_locks_lines(ino);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].contains(&format!(" {taker} ")), "{listed:?}");

    // Seen from inside the namespace: /proc/locks leaves the lock out; aimlock still lists it.
    let inside = |program: &str, args: &[&str]| {
        Command::new("nsenter")
            .args(["-t", &holder_pid.to_string(), "-p", "-m", "--", program])
            .args(args)
            .output()
            .expect("run nsenter (util-linux)")
    };
    let proc_locks = inside("cat", &["/proc/locks"]);
    assert!(proc_locks.status.success());
    let proc_locks = String::from_utf8_lossy(&proc_locks.stdout);
    assert!(!proc_locks.contains(&format!(":{ino} ")), "{proc_locks}");
    let aimlock = aimlock_bin();
    let locks = parse_lock_table(&inside(aimlock.to_str().unwrap(), &["locks", "--json"]));
    let lock = on_inode(&locks, ino);
    assert_eq!(lock.len(), 1, "{locks:#?}");
    let lock = &lock[0];
    // Pid 0: a taker this namespace cannot see, exited or outside it. Unknown, not an orphan.
    assert_eq!(
        (&lock["hidden"], &lock["orphan"], &lock["taker"]),
        (&true.into(), &false.into(), &"unknown".into())
    );
    assert_eq!(lock["pid"], 0);
    assert_eq!(
        holders(lock),
        [(holder_ns_pid, holder["fd"].as_u64().unwrap())]
    );
    assert_eq!(
        lock["holders"][0]["ns_pid"],
        Value::Null,
        "the pid is already the namespace's"
    );
    assert_eq!(lock["path"], file.display().to_string());
}

/// How one of the twenty processes locks its file, and what the table must say.
struct Taker {
    steps: &'static [&'static str],
    kind: &'static str,
    mode: &'static str,
    start: u64,
    end: Option<u64>,
}

const TAKERS: &[Taker] = &[
    Taker {
        steps: &["flock:ex"],
        kind: "flock",
        mode: "write",
        start: 0,
        end: None,
    },
    Taker {
        steps: &["flock:sh"],
        kind: "flock",
        mode: "read",
        start: 0,
        end: None,
    },
    Taker {
        steps: &["posix:w:0:0"],
        kind: "posix",
        mode: "write",
        start: 0,
        end: None,
    },
    Taker {
        steps: &["posix:r:100:10"],
        kind: "posix",
        mode: "read",
        start: 100,
        end: Some(109),
    },
    Taker {
        steps: &["ofd:w:0:0"],
        kind: "ofd",
        mode: "write",
        start: 0,
        end: None,
    },
    Taker {
        steps: &["ofd:r:5:5"],
        kind: "ofd",
        mode: "read",
        start: 5,
        end: Some(9),
    },
    Taker {
        steps: &["lease:w"],
        kind: "lease",
        mode: "write",
        start: 0,
        end: None,
    },
];

#[test]
fn twenty_processes_with_mixed_kinds_are_each_reported_right() {
    require_root();
    let dir = TempDir::new("locks-twenty");
    let mut works = Vec::new();
    for index in 0..20 {
        let taker = &TAKERS[index % TAKERS.len()];
        let path = dir.path().join(format!("file-{index}"));
        let open = format!("open:{}", path.display());
        let steps: Vec<&str> = [&[open.as_str()], taker.steps, &["wait-stdin"]].concat();
        let work = Workload::start(&steps);
        work.wait_step(taker.steps[0]);
        works.push((work, taker, path));
    }
    let glob = format!("{}/*", dir.path().display());
    let locks = lock_table(&["--path", &glob]);
    assert_eq!(locks.len(), 20, "{locks:#?}");
    for (work, taker, path) in &works {
        let pid = u64::from(work.pid());
        let lock: Vec<&Value> = locks
            .iter()
            .filter(|lock| lock["path"] == path.display().to_string())
            .collect();
        assert_eq!(lock.len(), 1, "{path:?} in {locks:#?}");
        let lock = lock[0];
        assert_eq!(lock["kind"], taker.kind, "{lock:#}");
        assert_eq!(lock["mode"], taker.mode, "{lock:#}");
        assert_eq!(
            (lock["start"].as_u64(), lock["end"].as_u64()),
            (Some(taker.start), taker.end)
        );
        assert_eq!(lock["ino"], inode(path));
        // The kernel records no taker for an OFD lock: aimlock names it through its holders.
        let recorded = if taker.kind == "ofd" { -1 } else { pid as i64 };
        assert_eq!(lock["pid"], recorded, "{lock:#}");
        // Nor can it say whether that taker is gone: unknown, never an orphan.
        let judged = if taker.kind == "ofd" {
            "unknown"
        } else {
            "holding"
        };
        assert_eq!(lock["taker"], judged, "{lock:#}");
        assert_eq!(lock["orphan"], false, "{lock:#}");
        assert_eq!(lock["hidden"], false);
        let held = holders(lock);
        assert_eq!(held.len(), 1, "{lock:#}");
        assert_eq!(held[0].0, pid, "{lock:#}");
        assert_eq!(lock["holders"][0]["comm"], "lockwork");
    }

    // The table, and -p, agree.
    let (work, taker, path) = &works[3];
    let pid = work.pid().to_string();
    let output = run_aimlock(&["locks", "-r", "-n", "-o", "PID,KIND,MODE,PATH", "-p", &pid]);
    assert!(output.status.success());
    let rows = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        rows,
        format!("{pid} {} {} {}\n", taker.kind, taker.mode, path.display())
    );
    let output = run_aimlock(&["locks", "-o", "PID,HOLDERS", "--path", &glob]);
    let table = String::from_utf8(output.stdout).unwrap();
    let mut lines = table.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["PID", "HOLDERS"]
    );
    assert_eq!(lines.count(), 20, "{table}");
    assert!(table.contains(&format!("{pid}(lockwork):3")), "{table}");
}

#[test]
fn ofd_locks_are_resolved_to_the_holders_of_each_description() {
    require_root();
    let dir = TempDir::new("locks-ofd");
    let file = dir.file("lock");
    let ino = inode(&file);
    let open = format!("open:{}", file.display());
    // Two descriptions hold identical read locks; one of them is shared with a child.
    let shared = Workload::start(&[&open, "ofd:r:0:100", "hold-in-child:60", "wait-stdin"]);
    let child = u64::from(shared.holder_pid());
    let _cleanup = KillOnDrop(child as u32);
    let alone = Workload::start(&[&open, "ofd:r:0:100", "wait-stdin"]);
    alone.wait_step("ofd:r:0:100");
    let writer = Workload::start(&[&open, "ofd:w:200:10", "wait-stdin"]);
    writer.wait_step("ofd:w:200:10");

    let listed = proc_locks_lines(ino);
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|line| line.contains("OFDLCK") && line.contains(" -1 ")),
        "{listed:?}"
    );

    let mut locks = on_inode(&lock_table(&[]), ino);
    locks.sort_by_key(|lock| holders(lock).len());
    assert_eq!(locks.len(), 3, "{locks:#?}");
    let (parent, alone, writer) = (
        u64::from(shared.pid()),
        u64::from(alone.pid()),
        u64::from(writer.pid()),
    );
    let by_holders: Vec<Vec<u64>> = locks
        .iter()
        .map(|lock| holders(lock).into_iter().map(|(pid, _)| pid).collect())
        .collect();
    let mut singles = [by_holders[0][0], by_holders[1][0]];
    singles.sort();
    let mut expected = [alone, writer];
    expected.sort();
    assert_eq!(singles, expected, "{locks:#?}");
    let mut pair = by_holders[2].clone();
    pair.sort();
    assert_eq!(pair, [parent.min(child), parent.max(child)], "{locks:#?}");
    for lock in &locks {
        assert_eq!(lock["kind"], "ofd");
        assert_eq!(lock["pid"], -1);
        assert_eq!(lock["path"], file.display().to_string());
        let holder_pids: Vec<u64> = holders(lock).into_iter().map(|(pid, _)| pid).collect();
        let expected_mode = if holder_pids == [writer] {
            "write"
        } else {
            "read"
        };
        assert_eq!(lock["mode"], expected_mode, "{lock:#}");
    }
}

#[test]
fn waiters_are_listed_under_the_lock_that_blocks_them() {
    require_root();
    let dir = TempDir::new("locks-waiter");
    let file = dir.file("lock");
    let ino = inode(&file);
    let open = format!("open:{}", file.display());
    let holder = Workload::start(&[&open, "posix:w:0:0", "wait-stdin"]);
    holder.wait_step("posix:w:0:0");
    let waiter = Workload::start(&[&open, "posix:w:0:10:wait"]);
    eventually("the waiter to block", SETTLE, || {
        proc_locks_lines(ino)
            .iter()
            .any(|line| line.contains("->"))
            .then_some(())
    });
    let locks = on_inode(&lock_table(&[]), ino);
    assert_eq!(locks.len(), 1, "{locks:#?}");
    let lock = &locks[0];
    assert_eq!(lock["pid"], holder.pid());
    let waiters = lock["waiters"].as_array().unwrap();
    assert_eq!(waiters.len(), 1, "{lock:#}");
    assert_eq!(waiters[0]["pid"], waiter.pid());
    assert_eq!(waiters[0]["comm"], "lockwork");
    assert_eq!(
        (&waiters[0]["kind"], &waiters[0]["mode"]),
        (&"posix".into(), &"write".into())
    );
    assert_eq!(
        (&waiters[0]["start"], &waiters[0]["end"]),
        (&0.into(), &9.into())
    );
}

#[test]
fn a_caller_without_root_sees_what_it_may_and_says_what_it_cannot() {
    require_root();
    let dir = TempDir::new("locks-nonroot");
    let file = dir.file("lock");
    let ino = inode(&file);
    let work = Workload::start(&[
        &format!("open:{}", file.display()),
        "flock:ex",
        "wait-stdin",
    ]);
    work.wait_step("flock:ex");
    // A copy that the unprivileged user may run wherever the build tree lives.
    let binary = dir.path().join("aimlock");
    std::fs::copy(aimlock_bin(), &binary).expect("copy aimlock");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Another test's fork may briefly hold the copy's write fd open: ETXTBSY until it execs.
    let output = eventually(
        "the copy to become executable",
        SETTLE,
        || match Command::new(&binary)
            .args(["locks", "--json"])
            .uid(65534)
            .gid(65534)
            .output()
        {
            Err(err) if err.kind() == std::io::ErrorKind::ExecutableFileBusy => None,
            output => Some(output.expect("run aimlock as nobody")),
        },
    );
    let locks = on_inode(&parse_lock_table(&output), ino);
    assert_eq!(locks.len(), 1, "{locks:#?}");
    assert_eq!(locks[0]["pid"], work.pid());
    assert_eq!(locks[0]["holders"], Value::Array(Vec::new()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(
        stderr.lines().all(|line| line.starts_with("aimlock: ")),
        "{stderr}"
    );
}

#[test]
fn bad_input_gets_one_line_and_a_failure() {
    for args in [
        &["locks", "-o", "PID,NOPE"][..],
        &["locks", "--path", "/tmp/["],
    ] {
        let output = run_aimlock(args);
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("aimlock: "), "{stderr}");
        assert!(output.stdout.is_empty());
    }
    for args in [
        &["locks", "-p", "abc"][..],
        &["locks", "-p", "0"],
        &["locks", "--json", "-r"],
    ] {
        assert!(!run_aimlock(args).status.success(), "{args:?}");
    }
}

#[test]
fn the_scan_goes_on_while_lock_holders_come_and_go() {
    require_root();
    let dir = TempDir::new("locks-churn");
    let file = dir.file("lock");
    let open = format!("open:{}", file.display());
    let stop = Instant::now() + Duration::from_secs(4);
    let churn = thread::spawn(move || {
        let mut rounds = 0;
        while Instant::now() < stop {
            let mut batch: Vec<_> = (0..8)
                .map(|_| {
                    Command::new(lockwork_bin())
                        .args([open.as_str(), "flock:sh", "hold-in-child:0.01", "ofd:r:0:1"])
                        .stdout(std::process::Stdio::null())
                        .spawn()
                        .expect("spawn lockwork")
                })
                .collect();
            for child in &mut batch {
                child.wait().expect("wait lockwork");
            }
            rounds += 1;
        }
        rounds
    });
    let mut scans = 0;
    while Instant::now() < stop {
        let output = run_aimlock(&["locks", "--json"]);
        parse_lock_table(&output);
        scans += 1;
    }
    assert!(churn.join().unwrap() > 0);
    assert!(scans > 1);
}
