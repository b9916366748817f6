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
    KillOnDrop, TempDir, Workload, aimlock_bin, alive, churning, eventually, inode, lock_table,
    lockwork_bin, parse_lock_table, proc_locks_lines, require_root, run_aimlock,
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
        (&true.into(), &Value::Null, &"unknown".into())
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
        let (judged, orphan) = if taker.kind == "ofd" {
            ("unknown", Value::Null)
        } else {
            ("holding", false.into())
        };
        assert_eq!(lock["taker"], judged, "{lock:#}");
        assert_eq!(lock["orphan"], orphan, "{lock:#}");
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

/// Runs a copy of aimlock as nobody (uid 65534), which may read no other user's fds.
fn aimlock_as_nobody(dir: &TempDir, args: &[&str]) -> std::process::Output {
    // A copy that the unprivileged user may run wherever the build tree lives.
    let binary = dir.path().join("aimlock");
    if !binary.exists() {
        std::fs::copy(aimlock_bin(), &binary).expect("copy aimlock");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Another test's fork may briefly hold the copy's write fd open: ETXTBSY until it execs.
    eventually(
        "the copy to become executable",
        SETTLE,
        || match Command::new(&binary)
            .args(args)
            .uid(65534)
            .gid(65534)
            .output()
        {
            Err(err) if err.kind() == std::io::ErrorKind::ExecutableFileBusy => None,
            output => Some(output.expect("run aimlock as nobody")),
        },
    )
}

#[test]
fn a_caller_without_root_sees_what_it_may_and_says_what_it_cannot() {
    require_root();
    let dir = TempDir::new("locks-nonroot");
    // A live taker, and an orphan whose taker exited: root's, so nobody sees neither's holders.
    let live_file = dir.file("live");
    let work = Workload::start(&[
        &format!("open:{}", live_file.display()),
        "flock:ex",
        "wait-stdin",
    ]);
    work.wait_step("flock:ex");
    let orphan_file = dir.file("orphan");
    let orphaned = Workload::start(&[
        &format!("open:{}", orphan_file.display()),
        "flock:ex",
        "hold-in-child:60",
        "exit:0",
    ]);
    let _holder = KillOnDrop(orphaned.holder_pid());
    let taker = orphaned.pid();
    orphaned.finish();

    let output = aimlock_as_nobody(&dir, &["locks", "--json"]);
    let all = parse_lock_table(&output);
    let live = on_inode(&all, inode(&live_file));
    assert_eq!(live.len(), 1, "{live:#?}");
    assert_eq!(live[0]["pid"], work.pid());
    assert_eq!(live[0]["holders"], Value::Array(Vec::new()));
    // Its taker's fds are out of sight: whether it still holds the lock cannot be told.
    assert_eq!(live[0]["taker"], "unknown", "{live:#?}");
    assert_eq!(live[0]["orphan"], Value::Null, "{live:#?}");
    // The taker is gone, but whether a holder remains cannot be seen either.
    let orphan = on_inode(&all, inode(&orphan_file));
    assert_eq!(orphan.len(), 1, "{orphan:#?}");
    assert_eq!(orphan[0]["pid"], taker);
    assert_eq!(orphan[0]["taker"], "gone", "{orphan:#?}");
    assert_eq!(orphan[0]["orphan"], Value::Null, "{orphan:#?}");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("permission denied reading the fds of"),
        "{stderr}"
    );
    // The note names pids, and says they are pids.
    assert!(
        stderr.contains(&format!(" {}", work.pid())) || stderr.contains("..."),
        "{stderr}"
    );
    assert!(
        stderr.contains("(pids ") || stderr.contains("(pid "),
        "{stderr}"
    );
    assert!(
        stderr.lines().all(|line| line.starts_with("aimlock: ")),
        "{stderr}"
    );

    // The table says unknown, never no; --orphans=all lists both, --orphans neither. Their
    // paths are unknown too: only a holder's fd tells it.
    let ours = [inode(&live_file), inode(&orphan_file)].map(|ino| ino.to_string());
    let table = |args: &[&str]| {
        let output = aimlock_as_nobody(
            &dir,
            &[&["locks", "-r", "-n", "-o", "INODE,ORPHAN"], args].concat(),
        );
        assert!(output.status.success(), "{output:?}");
        let mut rows: Vec<String> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .filter(|row| ours.iter().any(|ino| row.split(' ').next() == Some(ino)))
            .map(str::to_owned)
            .collect();
        rows.sort();
        rows
    };
    let mut unknown: Vec<String> = ours.iter().map(|ino| format!("{ino} unknown")).collect();
    unknown.sort();
    assert_eq!(table(&[]), unknown);
    assert_eq!(table(&["--orphans=all"]), unknown);
    assert_eq!(table(&["--orphans"]), Vec::<String>::new());
}

#[test]
fn a_live_ofd_lock_is_no_certain_orphan_but_is_listed_by_orphans_all() {
    require_root();
    let dir = TempDir::new("locks-ofd-orphans");
    let file = dir.file("disk.img");
    let ino = inode(&file);
    let work = Workload::start(&[
        &format!("open:{}", file.display()),
        "ofd:w:0:0",
        "wait-stdin",
    ]);
    work.wait_step("ofd:w:0:0");
    let path = file.display().to_string();

    assert!(on_inode(&lock_table(&["--orphans", "--path", &path]), ino).is_empty());
    let maybe = on_inode(&lock_table(&["--orphans=all", "--path", &path]), ino);
    assert_eq!(maybe.len(), 1, "{maybe:#?}");
    assert_eq!(maybe[0]["orphan"], Value::Null, "{maybe:#?}");
    assert_eq!(holders(&maybe[0]), [(u64::from(work.pid()), 3)]);

    let output = run_aimlock(&["locks", "-r", "-n", "-o", "KIND,ORPHAN", "--path", &path]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ofd unknown\n");
    // Nothing matched: said on stderr, and not an error.
    let output = run_aimlock(&["locks", "--orphans", "--path", &path]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("aimlock: none of the ") && last.ends_with(" locks held matches"),
        "{stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 1);
}

#[test]
fn a_pid_that_is_not_running_is_said_so() {
    // i32::MAX is above any pid_max: never a running process.
    let output = run_aimlock(&["locks", "-p", "2147483647"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "aimlock: no process 2147483647 is running, and no lock names it as its taker\n"
    );
}

#[test]
fn a_dead_taker_named_by_pid_shows_the_locks_it_left_and_says_it_is_gone() {
    require_root();
    let dir = TempDir::new("locks-dead-pid");
    let file = dir.file("lock");
    let work = Workload::start(&[
        &format!("open:{}", file.display()),
        "flock:ex",
        "hold-in-child:60",
        "exit:0",
    ]);
    let _holder = KillOnDrop(work.holder_pid());
    let taker = work.pid().to_string();
    work.finish();
    let output = eventually("the taker to be gone", SETTLE, || {
        let output = run_aimlock(&["locks", "-r", "-n", "-o", "PID,ORPHAN", "-p", &taker]);
        (!alive(taker.parse().unwrap()) && output.status.success()).then_some(output)
    });
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{taker} yes\n")
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).lines().next(),
        Some(
            format!("aimlock: no process {taker} is running: these are the locks it took").as_str()
        )
    );
}

#[test]
fn mistyped_names_get_a_suggestion_on_one_line() {
    for (args, suggested) in [
        (&["lcoks"][..], "did you mean 'locks'?"),
        (&["locks", "--orphan"], "did you mean '--orphans'?"),
        (&["locks", "--orphans=al"], "did you mean 'all'?"),
    ] {
        let output = run_aimlock(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("aimlock: "), "{stderr}");
        assert!(stderr.contains(suggested), "{args:?}: {stderr}");
    }
    let help = run_aimlock(&["--help"]);
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for command in ["trace", "locks", "report", "break", "completions", "man"] {
        assert!(
            help.lines()
                .any(|line| line.trim_start().starts_with(command)),
            "{command} not in {help}"
        );
    }
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
    let _churn = churning();
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

/// The kernel writes /proc/locks a page per read, and locks taken or released between two pages
/// shift the rest of its list: one read shows some locks twice and skips others. The table must
/// still list every held lock once.
#[test]
fn every_held_lock_is_listed_once_while_other_locks_come_and_go() {
    require_root();
    let _churn = churning();
    let held_dir = TempDir::new("locks-once-held");
    let churn_dir = TempDir::new("locks-once-churn");
    const HELD: usize = 300;
    let holder = Workload::start(&[
        &format!("hold-many:{}:{HELD}", held_dir.path().display()),
        "wait-stdin",
    ]);
    holder.wait_step(&format!("hold-many:{}:{HELD}", held_dir.path().display()));
    let stop = Instant::now() + Duration::from_secs(4);
    // Processes that each take 200 locks and exit: every one shifts the kernel's list by 200.
    let churners: Vec<_> = (0..2)
        .map(|_| {
            let steps = format!("hold-many:{}:200", churn_dir.path().display());
            thread::spawn(move || {
                let mut rounds = 0;
                while Instant::now() < stop {
                    let status = Command::new(lockwork_bin())
                        .arg(&steps)
                        .stdout(std::process::Stdio::null())
                        .status()
                        .expect("run lockwork");
                    assert!(status.success());
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    // By inode: a lock listed twice would have no holder, so no path, the second time.
    let held: std::collections::HashSet<u64> = std::fs::read_dir(held_dir.path())
        .expect("the held files")
        .map(|entry| inode(&entry.expect("a held file").path()))
        .collect();
    assert_eq!(held.len(), HELD);
    let mut scans = 0;
    while Instant::now() < stop {
        let table = lock_table(&[]);
        let mut listed: Vec<u64> = table
            .iter()
            .map(|lock| lock["ino"].as_u64().unwrap())
            .filter(|ino| held.contains(ino))
            .collect();
        listed.sort_unstable();
        let count = listed.len();
        listed.dedup();
        assert_eq!(
            (count, listed.len()),
            (HELD, HELD),
            "scan {scans}: (locks listed, distinct files) of {HELD} held"
        );
        scans += 1;
    }
    for churner in churners {
        assert!(churner.join().unwrap() > 0);
    }
    // One scan takes a few seconds in an emulated VM: what counts is that each one was exact.
    assert!(scans > 0);
}
