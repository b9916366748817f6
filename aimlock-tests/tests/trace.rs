//! `aimlock trace` on the running kernel, with real processes taking real locks.

use std::time::Duration;

use aimlock_tests::{
    TempDir, TraceToFile, Tracer, Workload, inode, kinds, of_kind, on_inode, proc_start_time,
    run_aimlock, write_log,
};
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
    let tracer = Tracer::start(&["--path", &file.display().to_string()]);
    // The pause lets aimlock read the path from the process's fds while it is alive.
    let work = Workload::start(&[
        &format!("open:{}", file.display()),
        "flock:ex",
        "sleep:0.3",
        "flock:un",
    ]);
    let pid = work.pid();
    work.finish();
    tracer.wait_for("the release", SETTLE, |e| {
        e["event"] == "release" && e["ino"] == ino && e["pid"] == pid
    });
    let events = tracer.stop();
    assert_eq!(events[0]["event"], "start");
    assert_eq!(events[0]["schema"], 2);
    let stop = events.last().unwrap();
    assert_eq!(stop["event"], "stop");
    assert!(stop["lost"].is_u64(), "{stop}");
    // Every line names the host, start and stop included: the node name, as uname gives it.
    let host = nix::sys::utsname::uname().unwrap();
    let host = host.nodename().to_str().unwrap();
    assert!(!host.is_empty());
    for event in &events {
        assert_eq!(event["host"], host, "{event}");
    }

    let mine = lock_events(&events, ino, pid);
    assert_eq!(kinds(&mine), ["acquire", "release"], "{mine:#?}");
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

#[test]
fn posix_range_acquire_split_and_release() {
    let dir = TempDir::new("posix");
    let file = dir.file("lock");
    let ino = inode(&file);
    let tracer = Tracer::start(&["--path", &file.display().to_string()]);
    // Lock bytes 0-99, unlock 10-19 (splits the lock in two), then close: both parts go.
    let work = Workload::start(&[
        &format!("open:{}", file.display()),
        "posix:w:0:100",
        "posix:u:10:10",
        "close",
    ]);
    let pid = work.pid();
    work.finish();
    tracer.wait_for("the release on close", SETTLE, |e| {
        e["event"] == "release" && e["ino"] == ino && e["reason"] == "close"
    });
    let events = tracer.stop();
    let mine = lock_events(&events, ino, pid);
    let summary: Vec<(String, u64, Value, String)> = mine
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["start"].as_u64().unwrap(),
                e["end"].clone(),
                e["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        mine.iter()
            .all(|e| e["kind"] == "posix" && e["mode"] == "write"),
        "{mine:#?}"
    );
    assert_eq!(
        summary[0],
        ("acquire".into(), 0, 99.into(), "".into()),
        "{mine:#?}"
    );
    assert_eq!(
        summary[1],
        ("release".into(), 10, 19.into(), "unlock".into()),
        "{mine:#?}"
    );
    let mut on_close: Vec<_> = summary[2..].to_vec();
    on_close.sort_by_key(|s| s.1);
    assert_eq!(
        on_close,
        [
            ("release".into(), 0, 9.into(), "close".into()),
            ("release".into(), 20, 99.into(), "close".into())
        ],
        "{mine:#?}"
    );
}

#[test]
fn ofd_acquire_and_release_on_close() {
    let dir = TempDir::new("ofd");
    let file = dir.file("lock");
    let ino = inode(&file);
    let tracer = Tracer::start(&["--path", &file.display().to_string()]);
    let work = Workload::start(&[&format!("open:{}", file.display()), "ofd:r:5:0", "close"]);
    let pid = work.pid();
    work.finish();
    tracer.wait_for("the release", SETTLE, |e| {
        e["event"] == "release" && e["ino"] == ino
    });
    let events = tracer.stop();
    let mine = lock_events(&events, ino, pid);
    assert_eq!(kinds(&mine), ["acquire", "release"], "{mine:#?}");
    assert!(
        mine.iter()
            .all(|e| e["kind"] == "ofd" && e["mode"] == "read")
    );
    assert_eq!(mine[0]["start"], 5);
    assert_eq!(mine[0]["end"], Value::Null);
    assert_eq!(mine[1]["reason"], "close");
}

#[test]
fn release_at_exit_is_not_an_orphan() {
    let dir = TempDir::new("exit");
    let file = dir.file("lock");
    let ino = inode(&file);
    let tracer = Tracer::start(&["--path", &file.display().to_string()]);
    let work = Workload::start(&[&format!("open:{}", file.display()), "flock:ex", "exit:0"]);
    let pid = work.pid();
    let _ = work.finish_any();
    tracer.wait_for("the release at exit", SETTLE, |e| {
        e["event"] == "release" && e["ino"] == ino && e["pid"] == pid
    });
    // Past the exit grace period (1 s), an orphan would have been reported.
    std::thread::sleep(Duration::from_millis(1500));
    let events = tracer.stop();
    let mine = on_inode(&events, ino);
    assert_eq!(kinds(&mine), ["acquire", "release"], "{mine:#?}");
    assert_eq!(mine[1]["reason"], "exit");
    let exit = events
        .iter()
        .find(|e| e["event"] == "exit" && e["pid"] == pid)
        .expect("an exit event");
    assert_eq!(exit["locks"], 1);
}

#[test]
fn lock_inherited_by_a_forked_child_is_an_orphan_held_by_the_child() {
    let dir = TempDir::new("fork");
    let file = dir.file("lock");
    let ino = inode(&file);
    let tracer = Tracer::start(&["--path", &file.display().to_string()]);
    let work = Workload::start(&[
        &format!("open:{}", file.display()),
        "flock:ex",
        "hold-in-child:2",
        "exit:0",
    ]);
    let taker = work.pid();
    let holder = work.holder_pid();
    let orphan = tracer.wait_for("the orphan", SETTLE, |e| {
        e["event"] == "orphan" && e["ino"] == ino
    });
    assert_eq!(orphan["pid"], taker);
    assert_eq!(orphan["kind"], "flock");
    assert_eq!(orphan["mode"], "write");
    assert_eq!(orphan["path"], file.display().to_string());
    let holders = orphan["holders"].as_array().expect("holders");
    assert_eq!(holders.len(), 1, "{orphan}");
    assert_eq!(holders[0]["pid"], holder);
    assert_eq!(holders[0]["comm"], "lockwork");
    let end = tracer.wait_for("the orphan's end", SETTLE, |e| {
        e["event"] == "orphan_end" && e["ino"] == ino
    });
    assert_eq!(end["by"]["pid"], holder);
    assert_eq!(end["reason"], "exit");
    let orphaned = end["orphan_ns"].as_u64().unwrap();
    assert!((1_000_000_000..10_000_000_000).contains(&orphaned), "{end}");
    drop(work);
    tracer.stop();
}

#[test]
fn lock_passed_over_a_unix_socket_is_an_orphan_held_by_the_receiver() {
    let dir = TempDir::new("scm");
    let file = dir.file("lock");
    let socket = dir.path().join("sock");
    let ino = inode(&file);
    let tracer = Tracer::start(&["--path", &file.display().to_string()]);
    let receiver = Workload::start(&[&format!("recvfd:{}", socket.display()), "sleep:3"]);
    receiver.wait_step("listening");
    let sender = Workload::start(&[
        &format!("open:{}", file.display()),
        "flock:sh",
        &format!("sendfd:{}", socket.display()),
        "close",
        "exit:0",
    ]);
    let taker = sender.pid();
    let orphan = tracer.wait_for("the orphan", SETTLE, |e| {
        e["event"] == "orphan" && e["ino"] == ino
    });
    assert_eq!(orphan["pid"], taker);
    assert_eq!(orphan["mode"], "read");
    let holders = orphan["holders"].as_array().expect("holders");
    assert_eq!(holders.len(), 1, "{orphan}");
    assert_eq!(holders[0]["pid"], receiver.pid());
    drop(sender);
    drop(receiver);
    tracer.stop();
}

#[test]
fn orphan_inside_a_pid_namespace_is_reported_with_host_pids() {
    let dir = TempDir::new("pidns");
    let file = dir.file("lock");
    let ino = inode(&file);
    let tracer = Tracer::start(&["--path", &file.display().to_string()]);
    let work = Workload::start(&[
        "pidns",
        &format!("open:{}", file.display()),
        "flock:ex",
        "hold-in-child:2",
        "exit:0",
    ]);
    // Inside the namespace the taker is pid 2 and the holder pid 3: the tracer must name
    // the host's pids.
    let taker_line = work.wait_step("flock:ex");
    assert_eq!(
        taker_line["pid"], 2,
        "lockwork runs as pid 2 in its namespace"
    );
    let orphan = tracer.wait_for("the orphan", SETTLE, |e| {
        e["event"] == "orphan" && e["ino"] == ino
    });
    let taker = orphan["pid"].as_u64().unwrap();
    assert_ne!(
        taker, 2,
        "the orphan names the host pid, not the namespace pid"
    );
    let acquire = events_of(&tracer, ino, "acquire");
    assert_eq!(acquire["pid"], taker);
    assert_eq!(acquire["ns_pid"], 2);
    let holders = orphan["holders"].as_array().expect("holders");
    assert_eq!(holders.len(), 1, "{orphan}");
    assert_eq!(holders[0]["ns_pid"], 3, "{orphan}");
    assert_ne!(holders[0]["pid"], 3, "{orphan}");
    drop(work);
    let events = tracer.stop();

    // The post-mortem keeps the pids the container saw, beside the host's.
    let log = dir.path().join("trace.log");
    write_log(&log, &events);
    let path = file.display().to_string();
    let log = log.display().to_string();
    let output = run_aimlock(&["report", "--path", &path, &log]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        text.contains(&format!(
            "pid {taker} (lockwork, pid 2 in its namespace) took a write lock"
        )),
        "{text}"
    );
    assert!(text.contains(", pid 3 in its namespace)"), "{text}");
    let output = run_aimlock(&["report", "--json", "--path", &path, &log]);
    let lock: Value = serde_json::from_slice(&output.stdout).expect("one JSON lock");
    let hold = &lock["holds"][0];
    assert_eq!(hold["taker"]["ns_pid"], 2, "{hold}");
    assert_eq!(hold["holders"][0]["ns_pid"], 3, "{hold}");
}

fn events_of(tracer: &Tracer, ino: u64, event: &str) -> Value {
    on_inode(&tracer.events(), ino)
        .into_iter()
        .find(|e| e["event"] == event)
        .unwrap_or_else(|| panic!("no {event} on inode {ino}"))
}

#[test]
fn blocking_flock_reports_its_wait() {
    let dir = TempDir::new("wait");
    let file = dir.file("lock");
    let ino = inode(&file);
    let path = format!("open:{}", file.display());
    let tracer = Tracer::start(&["--path", &file.display().to_string()]);
    let mut holder = Workload::start(&[&path, "flock:ex", "wait-stdin", "sleep:0.5", "flock:un"]);
    holder.wait_step("flock:ex");
    let waiter = Workload::start(&[&path, "flock:ex", "flock:un"]);
    let waiter_pid = waiter.pid();
    // The holder keeps the lock 0.5 s more once the waiter is queued behind it.
    tracer.wait_for("the waiter to queue", SETTLE, |e| {
        e["event"] == "wait" && e["ino"] == ino && e["pid"] == waiter_pid
    });
    holder.proceed();
    waiter.finish();
    holder.finish();
    let acquire = tracer.wait_for("the waiter's acquire", SETTLE, |e| {
        e["event"] == "acquire" && e["ino"] == ino && e["pid"] == waiter_pid
    });
    let wait_ns = acquire["wait_ns"].as_u64().expect("wait_ns");
    assert!((400_000_000..2_000_000_000).contains(&wait_ns), "{acquire}");
    let events = tracer.stop();
    let waiter_events = lock_events(&events, ino, waiter_pid);
    assert_eq!(
        kinds(&waiter_events),
        ["wait", "acquire", "release"],
        "{waiter_events:#?}"
    );
}

#[test]
fn refused_nonblocking_flock_is_a_failure_with_eagain() {
    let dir = TempDir::new("eagain");
    let file = dir.file("lock");
    let ino = inode(&file);
    let path = format!("open:{}", file.display());
    let tracer = Tracer::start(&["--path", &file.display().to_string()]);
    let holder = Workload::start(&[&path, "flock:ex", "sleep:1"]);
    holder.wait_step("flock:ex");
    let refused = Workload::start(&[&path, "flock:ex:nb"]);
    let refused_pid = refused.pid();
    assert!(
        refused.finish_any().code() == Some(1),
        "the LOCK_NB attempt must fail"
    );
    let fail = tracer.wait_for("the failure", SETTLE, |e| {
        e["event"] == "fail" && e["ino"] == ino && e["pid"] == refused_pid
    });
    assert_eq!(fail["errno"], "EAGAIN");
    assert_eq!(fail["kind"], "flock");
    assert_eq!(fail["mode"], "write");
    drop(holder);
    tracer.stop();
}

/// Runs lockwork's `loop_step` on a new file under a tracer that follows it; returns the file's
/// path and the loop's lock lines, once it has checked that nothing was lost and (but on an
/// emulated CPU, which may take 100 us over every hold) that some holds were summarized.
fn folded_loop(name: &str, loop_step: &str, round: usize) -> (String, Vec<Value>) {
    let dir = TempDir::new(name);
    let file = dir.file("lock");
    let ino = inode(&file);
    let path = file.display().to_string();
    let tracer = Tracer::start(&["--path", &path]);
    let work = Workload::start(&[&format!("open:{path}"), loop_step]);
    let pid = work.pid();
    work.finish();
    let events = tracer.stop();
    let stop = events.last().unwrap();
    assert_eq!(stop["lost"], 0, "round {round}: {stop}");
    let mine = lock_events(&events, ino, pid);
    assert!(
        !of_kind(&mine, "summary").is_empty() || aimlock_tests::emulated_machine(),
        "round {round}: no summary"
    );
    (path, mine)
}

/// By default a tight loop's holds are counted in `summary` lines: each hold exactly once, in a
/// summary's count or, when it lasted 100 us or more, as its own acquire and release; nothing
/// lost. With `--every-event` each is its own pair of lines. Three rounds, since which holds
/// fold depends on timing; alone on the machine, since no loss is part of the claim.
#[test]
fn short_holds_are_counted_in_summaries_each_once() {
    let _alone = aimlock_tests::alone_on_the_machine();
    let pairs = aimlock_tests::burst_size(200_000u64, 20_000);
    for round in 0..3 {
        let (path, mine) = folded_loop("fold", &format!("loop:{pairs}:flock"), round);
        let summaries = of_kind(&mine, "summary");
        let mut folded = 0;
        for summary in &summaries {
            assert_eq!(summary["path"], path.as_str(), "{summary}");
            assert_eq!(summary["comm"], "lockwork", "{summary}");
            assert_eq!(
                (&summary["kind"], &summary["mode"]),
                (&"flock".into(), &"write".into())
            );
            let holds = summary["holds"].as_u64().unwrap();
            let longest = summary["longest_ns"].as_u64().unwrap();
            assert!(longest < 100_000, "{summary}");
            assert!(
                summary["held_ns"].as_u64().unwrap() <= holds * longest,
                "{summary}"
            );
            assert!(summary.get("start").is_none(), "{summary}");
            folded += holds;
        }
        let acquires = of_kind(&mine, "acquire");
        let releases = of_kind(&mine, "release");
        assert_eq!(acquires.len(), releases.len(), "round {round}");
        for release in &releases {
            assert_eq!(release["reason"], "unlock", "{release}");
            assert!(release["held_ns"].as_u64().unwrap() >= 100_000, "{release}");
        }
        assert_eq!(
            folded + acquires.len() as u64,
            pairs,
            "round {round}: {folded} holds in {} summaries, {} written",
            summaries.len(),
            acquires.len()
        );
    }

    let dir = TempDir::new("every-event");
    let file = dir.file("lock");
    let path = file.display().to_string();
    let tracer = Tracer::start(&["--path", &path, "--every-event"]);
    let looper = Workload::start(&[&format!("open:{path}"), "loop:2000:flock"]);
    let pid = looper.pid();
    looper.finish();
    let events = tracer.stop();
    let mine = lock_events(&events, inode(&file), pid);
    assert_eq!(of_kind(&mine, "acquire").len(), 2000);
    assert_eq!(of_kind(&mine, "release").len(), 2000);
    assert!(of_kind(&mine, "summary").is_empty());
}

/// A SQLite transaction's POSIX locks on its database (several byte ranges, a conversion, then
/// all unlocked) fold as one stretch: by default its holds are counted in `summary` lines, read
/// and write, each exactly once in a count or, when the transaction lasted 100 us or more, in
/// its own release lines; nothing lost.
#[test]
fn a_sqlite_transaction_s_byte_ranges_fold_into_summaries() {
    let transactions = aimlock_tests::burst_size(20_000u64, 2_000);
    for round in 0..3 {
        let step = format!("loop:{transactions}:posix-sqlite");
        let (_, mine) = folded_loop("fold-sqlite", &step, round);
        let summaries = of_kind(&mine, "summary");
        let mut folded = [0, 0];
        for summary in &summaries {
            assert_eq!(summary["kind"], "posix", "{summary}");
            assert!(
                summary["longest_ns"].as_u64().unwrap() < 100_000,
                "{summary}"
            );
            let mode = usize::from(summary["mode"] == "write");
            folded[mode] += summary["holds"].as_u64().unwrap();
        }
        let releases = of_kind(&mine, "release");
        let written = |mode: &str| releases.iter().filter(|r| r["mode"] == mode).count() as u64;
        // Per transaction: the pending byte's and the shared range's read locks, one write lock.
        assert_eq!(
            (folded[0] + written("read"), folded[1] + written("write")),
            (2 * transactions, transactions),
            "round {round}: {} summaries, {} releases written",
            summaries.len(),
            releases.len()
        );
        // What is written is whole transactions: as many acquires of the write lock (the
        // shared range, merged with the reserved byte before it) as releases of it.
        let acquired_write = of_kind(&mine, "acquire")
            .iter()
            .filter(|a| a["mode"] == "write" && a["end"] == 0x4000_01ffu64)
            .count() as u64;
        assert_eq!(acquired_write, written("write"), "round {round}");
    }
}

/// A lock taken right after a burst waits in its CPU's batch, with nothing after it to send the
/// batch to the ring: the tracer sends it itself, and the lock's acquire reaches the log while
/// its holder still waits, after every event of the burst. Repeated, as it races the burst's
/// last batch.
#[test]
fn a_lock_taken_right_after_a_burst_is_logged_while_it_is_held() {
    let pairs = aimlock_tests::burst_size(20_000, 2_000);
    let dir = TempDir::new("batch-tail");
    let (burst, held) = (dir.file("burst"), dir.file("held"));
    let (burst_ino, held_ino) = (inode(&burst), inode(&held));
    let tracer = Tracer::start(&[
        "--path",
        &burst.display().to_string(),
        "--path",
        &held.display().to_string(),
        "--every-event",
    ]);
    for round in 0..5 {
        let mut work = Workload::start(&[
            &format!("open:{}", burst.display()),
            &format!("loop:{pairs}:flock"),
            &format!("open:{}", held.display()),
            "flock:ex",
            "wait-stdin",
        ]);
        let pid = work.pid();
        work.wait_step("flock:ex");
        let acquire = tracer.wait_for("the held lock's acquire", SETTLE, |e| {
            e["event"] == "acquire" && e["ino"] == held_ino && e["pid"] == pid
        });
        let events = tracer.events();
        let burst_events = lock_events(&events, burst_ino, pid);
        assert_eq!(
            of_kind(&burst_events, "acquire").len() as u64,
            pairs,
            "round {round}"
        );
        assert_eq!(
            of_kind(&burst_events, "release").len() as u64,
            pairs,
            "round {round}"
        );
        let last_release = of_kind(&burst_events, "release").last().unwrap()["ts"].clone();
        assert!(
            acquire["ts"].as_str() > last_release.as_str(),
            "round {round}: {acquire} before the burst's end {last_release}"
        );
        work.proceed();
        work.finish();
    }
    let events = tracer.stop();
    assert_eq!(
        events.last().unwrap()["lost"],
        0,
        "{}",
        events.last().unwrap()
    );
}

#[test]
fn a_full_ring_is_counted_in_the_stop_line() {
    let dir = TempDir::new("overflow");
    let file = dir.file("lock");
    // A copy of lockwork under its own name, so that --comm selects only this test's records.
    let workload = dir.path().join("lw-overflow");
    std::fs::copy(aimlock_tests::lockwork_bin(), &workload).expect("copy lockwork");
    // Nothing waits in the tracer's memory either: what the ring cannot hold is lost.
    let tracer = Tracer::start(&[
        "--comm",
        "lw-overflow",
        "--ring-size",
        "4096",
        "--backlog-size",
        "4096",
    ]);
    let pairs = aimlock_tests::burst_size(100_000, 25_000);
    let status = std::process::Command::new(&workload)
        .args([
            &format!("open:{}", file.display()),
            &format!("loop:{pairs}:flock"),
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run the burst");
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));
    let (events, stderr) = tracer.stop_with_stderr();
    let stop = events.last().unwrap();
    let lost = stop["lost"].as_u64().unwrap();
    let records = stop["records"].as_u64().unwrap();
    assert!(
        lost > 0,
        "a 4 KiB ring cannot take {pairs} pairs at once: {stop}"
    );
    // Every lock/unlock and the exit: each either reached user space or was counted lost. What
    // the log and stderr say, should they not add up.
    let mut lines = std::collections::BTreeMap::new();
    for event in &events {
        *lines.entry(event["event"].to_string()).or_insert(0) += 1;
    }
    assert_eq!(
        records + lost,
        2 * pairs + 1,
        "{stop}\nlines by event: {lines:?}\nthe tracer's stderr: {stderr}"
    );
}

/// A holder that is killed releases every lock it held within milliseconds: here twice what the
/// ring holds. The tracer's ring-reader thread copies them into its backlog while the tracker
/// catches up, and every release reaches the log. Twice, as it depends on how the exit and the
/// tracer share the CPUs; alone on the machine, since that is what it measures.
#[test]
fn releases_of_holders_exiting_together_outgrow_the_ring_without_loss() {
    let _alone = aimlock_tests::alone_on_the_machine();
    const HOLDERS: usize = 4;
    // The ring holds about 5,000 records a MiB: 20,000 of the 32,000 releases (natively).
    let (per_holder, ring_size) = aimlock_tests::burst_size((8_000, "4M"), (2_000, "1M"));
    for round in 0..2 {
        let dir = TempDir::new("exit-burst");
        let workload = dir.path().join("lw-exit-burst");
        std::fs::copy(aimlock_tests::lockwork_bin(), &workload).expect("copy lockwork");
        let tracer = Tracer::start(&["--comm", "lw-exit-burst", "--ring-size", ring_size]);
        let holders: Vec<Workload> = (0..HOLDERS)
            .map(|index| {
                let held = dir.path().join(format!("held-{index}"));
                std::fs::create_dir(&held).expect("create the holder's directory");
                let step = format!("hold-many:{}:{per_holder}", held.display());
                let holder = Workload::start_as(&workload, &[&step, "wait-stdin"]);
                holder.wait_step(&step);
                holder
            })
            .collect();
        for holder in &holders {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(holder.pid() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .expect("kill a holder");
        }
        for holder in holders {
            holder.finish_any();
        }
        // Reaped: every release record is in the ring or the backlog by now, and the stop
        // takes them all before its stop line.
        let (events, stderr) = tracer.stop_with_stderr();
        let stop = events.last().unwrap();
        assert_eq!(stop["lost"], 0, "round {round}: {stop}");
        let releases = of_kind(&events, "release")
            .into_iter()
            .filter(|release| release["reason"] == "exit")
            .count();
        let mut said: std::collections::BTreeMap<String, usize> = Default::default();
        for event in &events {
            let what = format!("{} {}", event["event"], event["reason"]);
            *said.entry(what).or_default() += 1;
        }
        assert_eq!(
            (of_kind(&events, "acquire").len(), releases),
            (HOLDERS * per_holder, HOLDERS * per_holder),
            "round {round}: acquires and releases at exit; events said: {said:?}; {stop}; \
             the tracer's stderr: {stderr}"
        );
    }
}

#[test]
fn sigterm_mid_burst_drains_and_writes_the_stop_line() {
    let dir = TempDir::new("sigterm");
    let file = dir.file("lock");
    let ino = inode(&file);
    // Every line is parsed: a torn line fails the test. The burst outruns the
    // tracker and fills the ring and the backlog, which the stop drains: 2 MiB of each (about
    // 55,000 lock records in all) keeps the lines this test holds within a small VM's memory.
    let buffer = aimlock_tests::burst_size("2M", "512K");
    // Every event: a loop's short holds would otherwise fold, and the burst not outrun anything.
    let tracer = Tracer::start(&[
        "--path",
        &file.display().to_string(),
        "--ring-size",
        buffer,
        "--backlog-size",
        buffer,
        "--every-event",
    ]);
    let burst = Workload::start(&[&format!("open:{}", file.display()), "loop:1000000:flock"]);
    // Signalled as soon as the test sees the burst's first pair, rather than when the burst
    // lets it run: on one emulated CPU, the niced burst may have made one record by then.
    burst.only_on_spare_cpu();
    tracer.wait_for("the burst", SETTLE, |e| {
        e["ino"] == ino && e["event"] == "release"
    });
    let events = tracer.stop_with(nix::sys::signal::Signal::SIGTERM);
    drop(burst);
    assert_eq!(events[0]["event"], "start");
    let stop = events.last().unwrap();
    assert!(stop["lost"].is_u64() && stop["records"].is_u64(), "{stop}");
    let burst_lines = on_inode(&events, ino);
    assert!(
        burst_lines.len() > 1,
        "the burst's events before the signal are in the log: {burst_lines:?}, then {stop}"
    );
}

#[test]
fn bad_invocations_fail_with_one_line() {
    let run = |args: &[&str]| {
        let output = std::process::Command::new(aimlock_tests::aimlock_bin())
            .args(args)
            .output()
            .expect("run aimlock");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["trace", "--no-such-flag"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");

    let (code, stderr) = run(&["trace", "--output", "/proc/no/such/dir/log"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.starts_with("aimlock: cannot open output"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    let dir = TempDir::new("badargs");
    let target = dir.file("target");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (code, stderr) = run(&["trace", "--output", &link.display().to_string()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("symbolic link"), "{stderr}");

    let (code, stderr) = run(&["trace", "--ring-size", "1000"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("power of two"), "{stderr}");

    let (code, stderr) = run(&["trace", "--backlog-size", "100"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("smaller than a record"), "{stderr}");

    let unprivileged = {
        use std::os::unix::process::CommandExt as _;
        std::process::Command::new(aimlock_tests::aimlock_bin())
            .arg("trace")
            .uid(65534)
            .gid(65534)
            .output()
            .expect("run aimlock as nobody")
    };
    let stderr = String::from_utf8_lossy(&unprivileged.stderr);
    assert_eq!(unprivileged.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    let (code, stderr) = run(&["trace", "--path", "/no/such/file"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("/no/such/file"), "{stderr}");

    // i32::MAX is above any pid_max: never a running process.
    let (code, stderr) = run(&["trace", "--pid", "2147483647"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr, "aimlock: --pid 2147483647: no such process\n");

    let (code, stderr) = run(&["tarce"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("did you mean 'trace'?"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn a_second_tracer_refuses_the_output_the_first_one_writes() {
    let dir = TempDir::new("two-tracers");
    let log = dir.path().join("trace.log");
    let first = TraceToFile::start(&log, &["--path", &dir.file("quiet").display().to_string()]);
    let second = std::process::Command::new(aimlock_tests::aimlock_bin())
        .args(["trace", "--output"])
        .arg(&log)
        .output()
        .expect("run a second aimlock trace");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "aimlock: cannot open output {}: pid {} (aimlock) is already writing to it (it holds \
             a lock on the file)\n",
            log.display(),
            first.pid()
        )
    );
    first.stop();
    // Only the first tracer wrote: one start line, one stop line.
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches(r#""event":"start""#).count(), 1, "{text}");
    assert_eq!(text.matches(r#""event":"stop""#).count(), 1, "{text}");
    // Once the first is gone, the file is free for the next.
    let next = TraceToFile::start(&log, &["--path", &dir.file("quiet2").display().to_string()]);
    next.stop();
}

#[test]
fn text_format_prints_one_readable_line_per_event() {
    let dir = TempDir::new("text");
    let file = dir.file("lock");
    let mut tracer = std::process::Command::new(aimlock_tests::aimlock_bin())
        .args([
            "trace",
            "--format",
            "text",
            "--path",
            &file.display().to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tracer");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = tracer.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("the start line");
    assert!(start.contains("start"), "{start}");
    Workload::start(&[
        &format!("open:{}", file.display()),
        "flock:sh",
        "sleep:0.2",
        "flock:un",
    ])
    .finish();
    let acquire = loop {
        let line = lines.recv_timeout(SETTLE).expect("an acquire line");
        if line.contains("acquire") {
            break line;
        }
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tracer.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(tracer.wait().unwrap().success());
    let rest: Vec<String> = lines.iter().collect();
    assert!(acquire.contains("flock read"), "{acquire}");
    assert!(acquire.contains(&file.display().to_string()), "{acquire}");
    for line in std::iter::once(&acquire).chain(&rest) {
        assert!(
            !line.contains('\x1b'),
            "no colour when stdout is not a terminal: {line}"
        );
    }
    assert!(rest.last().unwrap().contains("stop"), "{rest:?}");
}

#[test]
fn a_getlk_probe_records_nothing_and_a_lease_is_acquired_and_released() {
    let dir = TempDir::new("getlk-lease");
    let file = dir.file("lock");
    let ino = inode(&file);
    let tracer = Tracer::start(&["--path", &file.display().to_string()]);
    // F_GETLK only asks; a write lease needs the only open to be this one, read-write.
    let work = Workload::start(&[
        &format!("open:{}", file.display()),
        "getlk:0:0",
        "lease:w",
        "sleep:0.2",
        "lease:u",
    ]);
    let pid = work.pid();
    work.finish();
    tracer.wait_for("the lease's release", SETTLE, |e| {
        e["event"] == "release" && e["ino"] == ino && e["kind"] == "lease"
    });
    let events = tracer.stop();
    let mine = lock_events(&events, ino, pid);
    assert_eq!(kinds(&mine), ["acquire", "release"], "{mine:#?}");
    assert!(
        mine.iter()
            .all(|e| e["kind"] == "lease" && e["mode"] == "write"),
        "{mine:#?}"
    );
    assert_eq!(mine[1]["reason"], "unlock");
}

/// The pid the workload's `forked` step reports: the child that runs the steps after `fork`.
fn forked_pid(work: &Workload) -> u32 {
    work.wait_step("forked")["pid"].as_u64().expect("pid") as u32
}

/// The acquire and release of the `flock:ex`, `flock:un` steps of `pid`, after `tracer` saw the
/// release; and the stop line.
fn flock_pair_of(tracer: Tracer, ino: u64, pid: u32) -> (Vec<Value>, Value) {
    tracer.wait_for("the child's release", SETTLE, |e| {
        e["event"] == "release" && e["ino"] == ino && e["pid"] == pid
    });
    let events = tracer.stop();
    let stop = events.last().unwrap().clone();
    (lock_events(&events, ino, pid), stop)
}

#[test]
fn pid_follows_a_child_forked_by_a_thread_that_does_not_lead_its_process() {
    let dir = TempDir::new("pid-thread-fork");
    let file = dir.file("lock");
    let ino = inode(&file);
    // The second thread exists before the tracer starts: only its process is in the filter.
    let mut work = Workload::start(&[
        "in-thread",
        "wait-stdin",
        "fork",
        &format!("open:{}", file.display()),
        "flock:ex",
        "flock:un",
    ]);
    work.wait_step("in-thread");
    let tracer = Tracer::start(&["--pid", &work.pid().to_string(), "--every-event"]);
    work.proceed();
    let child = forked_pid(&work);
    work.finish();
    let (mine, stop) = flock_pair_of(tracer, ino, child);
    assert_eq!(kinds(&mine), ["acquire", "release"], "{mine:#?}");
    assert_eq!(stop["untraced_children"], 0, "{stop}");
}

#[test]
fn pid_threads_do_not_fill_the_filter() {
    let dir = TempDir::new("pid-threads");
    let file = dir.file("lock");
    let ino = inode(&file);
    let mut work = Workload::start(&[
        "wait-stdin",
        // More than the filter's 4096 entries.
        aimlock_tests::burst_size("threads:10000", "threads:5000"),
        "fork",
        &format!("open:{}", file.display()),
        "flock:ex",
        "flock:un",
    ]);
    let tracer = Tracer::start(&["--pid", &work.pid().to_string(), "--every-event"]);
    work.proceed();
    let child = forked_pid(&work);
    work.finish();
    let (mine, stop) = flock_pair_of(tracer, ino, child);
    assert_eq!(kinds(&mine), ["acquire", "release"], "{mine:#?}");
    assert_eq!(stop["untraced_children"], 0, "{stop}");
}

#[test]
fn pid_exited_processes_leave_the_filter() {
    let dir = TempDir::new("pid-reaped");
    let file = dir.file("lock");
    let ino = inode(&file);
    // Four times more children over its life than the filter holds. A reaped child leaves the
    // filter an RCU grace period later (about 10 ms here), so they come in small rounds: three
    // rounds still waiting for their grace period would fit.
    let mut steps = vec!["wait-stdin".to_owned()];
    for _ in 0..16 {
        steps.extend(["fork-reap:4".to_owned(), "sleep:0.1".to_owned()]);
    }
    steps.extend([
        "fork".to_owned(),
        format!("open:{}", file.display()),
        "flock:ex".to_owned(),
        "flock:un".to_owned(),
    ]);
    let mut work = Workload::start(&steps.iter().map(String::as_str).collect::<Vec<_>>());
    let tracer = Tracer::start(&[
        "--pid",
        &work.pid().to_string(),
        "--pid-filter-size",
        "16",
        "--every-event",
    ]);
    work.proceed();
    let child = forked_pid(&work);
    work.finish();
    let (mine, stop) = flock_pair_of(tracer, ino, child);
    assert_eq!(kinds(&mine), ["acquire", "release"], "{mine:#?}");
    assert_eq!(stop["untraced_children"], 0, "{stop}");
}

#[test]
fn pid_a_full_filter_is_said_once_and_counted() {
    const FULL: &str = "aimlock: --pid filter full (4 entries): children of traced processes \
                        are no longer followed";
    // The workload and three children fill the filter; each child lives long enough to keep
    // its entry until the tracer stops.
    let mut steps = vec!["wait-stdin"];
    steps.extend(["hold-in-child:30"; 6]);
    steps.push("wait-stdin");
    steps.extend(["hold-in-child:30"; 2]);
    let mut work = Workload::start(&steps);
    let tracer = Tracer::start(&["--pid", &work.pid().to_string(), "--pid-filter-size", "4"]);
    work.proceed();
    tracer.wait_for_stderr(FULL, SETTLE);
    // More children are refused after the message: they are counted, not said again.
    work.proceed();
    // Past the tracer's next look at its counters.
    std::thread::sleep(Duration::from_millis(1500));
    let holders = work.lines();
    work.finish();
    let (events, stderr) = tracer.stop_with_stderr();
    for holder in holders.iter().filter(|line| line["step"] == "holder") {
        let holder = holder["pid"].as_u64().unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(holder as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert_eq!(stderr.matches(FULL).count(), 1, "{stderr}");
    let stop = events.last().unwrap();
    assert_eq!(stop["untraced_children"], 5, "{stop}");
}

#[test]
fn the_tracer_drains_the_ring_at_a_raised_priority() {
    // Field 19 of /proc/PID/stat: the nice value of the process's main thread, which drains
    // the ring.
    let nice_of = |pid: u32| -> i64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
        let after_comm = &stat[stat.rfind(')').expect("comm") + 2..];
        after_comm.split(' ').nth(16).unwrap().parse().unwrap()
    };
    for (options, expected) in [(&[][..], -10), (&["--nice", "5"][..], 5)] {
        let tracer = Tracer::start(options);
        assert_eq!(nice_of(tracer.pid()), expected, "{options:?}");
        tracer.stop();
    }
}

/// A lock record names its process and file through the last context its CPU wrote (a new one
/// whenever either changes). Two processes that look alike (one program, one name, started
/// 30 ms apart) take turns on one CPU (each runs a loop, then waits for the test to let the
/// other run): the first locks a file (flock), renames it and locks it again (OFD), the second
/// locks the same file right after it (only the process tells the two turns apart), then each
/// locks a file of its own. Every lock event must keep its own process's start time and its file's path.
#[test]
fn processes_and_files_taking_turns_on_one_cpu_keep_their_own_names() {
    const PAIRS: usize = 2_000;
    let dir = TempDir::new("turns");
    let workload = dir.path().join("lw-turns");
    std::fs::copy(aimlock_tests::lockwork_bin(), &workload).expect("copy lockwork");
    let (a, renamed, b, c) = (
        dir.file("a"),
        dir.file("a-renamed"),
        dir.file("b"),
        dir.file("c"),
    );
    let (ino_a, ino_b, ino_c) = (inode(&a), inode(&b), inode(&c));
    // The default ring (8 MiB) holds every record (20,000 lock events), so that
    // nothing depends on how fast the tracer reads.
    let tracer = Tracer::start(&["--comm", "lw-turns", "--every-event"]);
    // The workloads inherit this thread's CPU.
    let mut cpu = nix::sched::CpuSet::new();
    cpu.set(0).expect("CPU 0");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpu).expect("pin to CPU 0");
    let (flock, posix, ofd) = (
        format!("loop:{PAIRS}:flock"),
        format!("loop:{PAIRS}:posix"),
        format!("loop:{PAIRS}:ofd"),
    );
    let mut first = Workload::start_as(
        &workload,
        &[
            &format!("open:{}", a.display()),
            "wait-stdin",
            &flock,
            &format!("rename:{}:{}", a.display(), renamed.display()),
            &ofd,
            "wait-stdin",
            &format!("open:{}", b.display()),
            &posix,
        ],
    );
    let first_started = proc_start_time(first.pid()).expect("the first's start time");
    // Three clock ticks later: another start time.
    std::thread::sleep(Duration::from_millis(30));
    let mut second = Workload::start_as(
        &workload,
        &[
            &format!("open:{}", a.display()),
            "wait-stdin",
            &flock,
            "wait-stdin",
            &format!("open:{}", c.display()),
            &ofd,
        ],
    );
    let second_started = proc_start_time(second.pid()).expect("the second's start time");
    assert_ne!(first_started, second_started);
    // Turns: the first on a and then a-renamed, the second on a-renamed (opened as a, before
    // the rename), the first on b, the second on c.
    second.wait_step(&format!("open:{}", a.display()));
    first.proceed();
    first.wait_step(&ofd);
    second.proceed();
    second.wait_step(&flock);
    first.proceed();
    first.wait_step(&posix);
    second.proceed();
    second.wait_step(&ofd);
    let (first_pid, second_pid) = (first.pid(), second.pid());
    first.finish();
    second.finish();
    // Reaped: every record is in the ring by now, and the stop takes them all.
    let events = tracer.stop();
    let is_lock = |e: &Value| matches!(e["event"].as_str(), Some("acquire" | "release"));
    assert_eq!(
        events.last().unwrap()["lost"],
        0,
        "{}",
        events.last().unwrap()
    );
    let locks: Vec<&Value> = events.iter().filter(|e| is_lock(e)).collect();
    let expected = [
        (first_pid, first_started, ino_a, 2 * PAIRS),
        (second_pid, second_started, ino_a, PAIRS),
        (first_pid, first_started, ino_b, PAIRS),
        (second_pid, second_started, ino_c, PAIRS),
    ];
    let named = |file: &std::path::Path| file.display().to_string();
    for (pid, started, ino, pairs) in expected {
        let mine: Vec<&&Value> = locks
            .iter()
            .filter(|e| e["pid"] == pid && e["ino"] == ino)
            .collect();
        assert_eq!(mine.len(), 2 * pairs, "{pid} on {ino}");
        for event in &mine {
            assert_eq!(event["comm"], "lw-turns", "{event}");
            // The programs read it from the kernel on every kernel (before 5.11 through the
            // fault-safe helper): never missing, never another process's, even when the
            // process is gone before the tracer reads its records.
            assert_eq!(event["start_time"], started, "{event}");
        }
        let paths: Vec<&str> = mine
            .iter()
            .map(|event| event["path"].as_str().unwrap_or_default())
            .collect();
        if ino == ino_a && pid == second_pid {
            assert!(paths.iter().all(|p| *p == named(&renamed)), "{paths:?}");
        } else if ino == ino_a {
            // Named a, then a-renamed from the rename on, never back.
            let switch = paths.iter().position(|p| *p == named(&renamed));
            let switch = switch.expect("events after the rename name the new path");
            assert!(paths[..switch].iter().all(|p| *p == named(&a)), "{paths:?}");
            assert!(paths[switch..].iter().all(|p| *p == named(&renamed)));
        } else {
            let file = if ino == ino_b { &b } else { &c };
            assert!(paths.iter().all(|p| *p == named(file)), "{pid}: {paths:?}");
        }
    }
    // The two took turns on the CPU: the lock events' pids change at least three times.
    let turns = locks
        .windows(2)
        .filter(|pair| pair[0]["pid"] != pair[1]["pid"])
        .count();
    assert!(turns >= 3, "the processes took {turns} turns");
}
