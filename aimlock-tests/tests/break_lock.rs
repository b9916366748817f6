//! `aimlock break` on the running kernel, against locks held by real processes.

use std::{
    fs::File,
    os::{
        fd::{AsFd as _, AsRawFd as _},
        unix::fs::MetadataExt as _,
    },
    path::Path,
    process::{Command, Output},
};

use aimlock_tests::{
    KillOnDrop, PROCESS_DEADLINE, TempDir, TraceToFile, Workload, aimlock_bin, alive, inode,
    lock_table, output_within, require_root,
};
use serde_json::Value;

/// Runs `aimlock break ARGS...`.
fn aimlock_break(args: &[&str]) -> Output {
    require_root();
    output_within(
        Command::new(aimlock_bin()).arg("break").args(args),
        PROCESS_DEADLINE,
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Whether an exclusive flock on a fresh open of the file would be granted now. A granted
/// probe is released at once (and its description is closed, which would release it anyway).
fn flock_free(path: &Path) -> bool {
    let file = File::open(path).expect("open for the probe");
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        assert_eq!(err.raw_os_error(), Some(libc::EWOULDBLOCK), "probe: {err}");
        return false;
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) }, 0);
    true
}

/// What F_GETLK (POSIX) or F_OFD_GETLK says would block a whole-file write lock.
fn getlk(path: &Path, ofd: bool) -> libc::flock {
    let file = File::open(path).expect("open for the probe");
    // SAFETY: flock is plain data; all-zero is a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as i16;
    lock.l_whence = libc::SEEK_SET as i16;
    let arg = if ofd {
        nix::fcntl::FcntlArg::F_OFD_GETLK(&mut lock)
    } else {
        nix::fcntl::FcntlArg::F_GETLK(&mut lock)
    };
    nix::fcntl::fcntl(file.as_fd(), arg).expect("getlk");
    lock
}

/// Whether some fdinfo of `pid` shows a lock on the inode.
fn fdinfo_shows_lock(pid: u32, ino: u64) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return false;
    };
    dir.flatten().any(|entry| {
        std::fs::read_to_string(entry.path()).is_ok_and(|text| {
            text.lines()
                .filter(|line| line.starts_with("lock:"))
                .any(|line| line.contains(&format!(":{ino} ")))
        })
    })
}

/// Starts `lockwork` with a lock taken by `steps` and left to a child that holds it for a
/// minute after its parent, the taker, has exited. Returns the taker's and the holder's pids.
fn orphan(steps: &[&str]) -> (u32, KillOnDrop) {
    let mut all = steps.to_vec();
    all.extend(["hold-in-child:60", "exit:0"]);
    let work = Workload::start(&all);
    let taker = work.pid();
    let holder = KillOnDrop(work.holder_pid());
    work.finish();
    (taker, holder)
}

#[test]
fn a_dry_run_changes_nothing_and_yes_releases_an_orphaned_flock_while_its_holder_runs() {
    let dir = TempDir::new("break-flock");
    let file = dir.file("lock");
    let path = file.to_str().unwrap();
    let ino = inode(&file);
    let audit_log = dir.path().join("audit.jsonl");
    let audit_log = audit_log.to_str().unwrap();
    let (taker, holder) = orphan(&[&format!("open:{path}"), "flock:ex"]);
    assert!(!flock_free(&file), "the orphaned flock is not held");

    let dry = aimlock_break(&["--path", path, "--audit-log", audit_log]);
    assert!(dry.status.success(), "dry run failed: {}", stderr(&dry));
    let shown = stdout(&dry);
    assert!(
        shown.contains(&format!("pid {taker}, no longer running")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("pid {} (lockwork) fd", holder.0)),
        "{shown}"
    );
    assert!(shown.contains("flock(LOCK_UN)"), "{shown}");
    assert!(shown.contains("Dry run: nothing changed"), "{shown}");
    // The command it suggests names the file as the operator did, not by an inode number a
    // later file may get.
    assert!(
        shown.contains(&format!(
            "To break it: aimlock break --path {path} --holder {} --yes",
            holder.0
        )),
        "{shown}"
    );
    assert!(!flock_free(&file), "the dry run released the lock");
    assert!(fdinfo_shows_lock(holder.0, ino));
    assert!(
        !Path::new(audit_log).exists(),
        "a dry run wrote an audit record"
    );

    let broken = aimlock_break(&["--path", path, "--yes", "--audit-log", audit_log]);
    assert!(broken.status.success(), "break failed: {}", stderr(&broken));
    let shown = stdout(&broken);
    assert!(shown.contains("Released"), "{shown}");
    assert!(shown.contains("it is free"), "{shown}");
    assert!(flock_free(&file), "the lock is still held after the break");
    assert!(
        !fdinfo_shows_lock(holder.0, ino),
        "the holder's fdinfo still shows the lock"
    );
    assert!(alive(holder.0), "the holder did not survive the break");

    let records = std::fs::read_to_string(audit_log).expect("the audit log");
    let lines: Vec<&str> = records.lines().collect();
    assert_eq!(lines.len(), 1, "{records}");
    assert!(
        stderr(&broken).contains(lines[0]),
        "the record is not on stderr"
    );
    let record: Value = serde_json::from_str(lines[0]).expect("a JSON record");
    assert_eq!(record["event"], "break");
    assert_eq!(record["outcome"], "released");
    assert_eq!(record["forced"], false);
    assert_eq!(record["by"]["uid"], 0);
    assert_eq!(record["lock"]["kind"], "flock");
    assert_eq!(record["lock"]["mode"], "write");
    assert_eq!(record["lock"]["ino"], ino);
    assert_eq!(record["lock"]["taker"]["pid"], taker);
    assert_eq!(record["lock"]["taker"]["status"], "gone");
    assert_eq!(record["holder"]["pid"], holder.0);
    assert!(record["holder"]["fd"].is_i64(), "{record}");
    assert!(record["ts"].as_str().unwrap().ends_with('Z'), "{record}");
}

#[test]
fn a_posix_lock_is_refused_and_its_owner_untouched() {
    let dir = TempDir::new("break-posix");
    let file = dir.file("lock");
    let path = file.to_str().unwrap();
    let mut work = Workload::start(&[&format!("open:{path}"), "posix:w:0:0", "wait-stdin"]);
    work.wait_step("posix:w:0:0");
    let owner = work.pid();

    for args in [&["--path", path][..], &["--path", path, "--yes", "--force"]] {
        let refused = aimlock_break(args);
        assert!(
            !refused.status.success(),
            "{args:?} was not refused: {}",
            stdout(&refused)
        );
        let reason = stderr(&refused);
        assert!(
            reason.contains("POSIX lock belongs to its process"),
            "{reason}"
        );
        assert!(
            reason.contains(&format!("only pid {owner} (lockwork)")),
            "{reason}"
        );
        assert!(
            !reason.contains("\"event\":\"break\""),
            "a refusal wrote a record: {reason}"
        );
    }
    assert!(alive(owner), "the owner did not survive");
    assert_eq!(
        getlk(&file, false).l_pid,
        owner as i32,
        "the POSIX lock is gone"
    );

    work.proceed();
    work.finish();
}

#[test]
fn a_live_takers_flock_is_refused_without_force_and_broken_with_it() {
    let dir = TempDir::new("break-live");
    let file = dir.file("lock");
    let path = file.to_str().unwrap();
    let mut work = Workload::start(&[&format!("open:{path}"), "flock:ex", "wait-stdin"]);
    work.wait_step("flock:ex");
    let taker = work.pid();

    let refused = aimlock_break(&["--path", path, "--yes"]);
    assert!(
        !refused.status.success(),
        "not refused: {}",
        stdout(&refused)
    );
    let reason = stderr(&refused);
    assert!(
        reason.contains(&format!("its taker, pid {taker} (lockwork), is alive")),
        "{reason}"
    );
    assert!(reason.contains("--force"), "{reason}");
    assert!(!flock_free(&file), "a refused break released the lock");

    let forced = aimlock_break(&["--path", path, "--yes", "--force"]);
    assert!(
        forced.status.success(),
        "forced break failed: {}",
        stderr(&forced)
    );
    assert!(
        stderr(&forced).contains("\"forced\":true"),
        "{}",
        stderr(&forced)
    );
    assert!(flock_free(&file), "the forced break left the lock held");
    assert!(alive(taker), "the taker did not survive the break");

    work.proceed();
    work.finish();
}

#[test]
fn an_orphaned_ofd_lock_has_an_unknown_taker_and_needs_force() {
    let dir = TempDir::new("break-ofd");
    let file = dir.file("lock");
    let path = file.to_str().unwrap();
    let (_taker, holder) = orphan(&[&format!("open:{path}"), "ofd:w:0:0"]);
    assert_eq!(
        getlk(&file, true).l_type,
        libc::F_WRLCK as i16,
        "the OFD lock is not held"
    );

    let dry = aimlock_break(&["--path", path]);
    assert!(!dry.status.success(), "dry run did not report the refusal");
    assert!(
        stdout(&dry).contains("unknown: /proc records pid -1 for every OFD lock"),
        "{}",
        stdout(&dry)
    );
    let refused = aimlock_break(&["--path", path, "--yes"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("taker is unknown"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        getlk(&file, true).l_type,
        libc::F_WRLCK as i16,
        "a refusal released the lock"
    );

    let forced = aimlock_break(&["--path", path, "--yes", "--force"]);
    assert!(
        forced.status.success(),
        "forced break failed: {}",
        stderr(&forced)
    );
    assert!(
        stdout(&forced).contains("F_OFD_SETLK"),
        "{}",
        stdout(&forced)
    );
    assert_eq!(
        getlk(&file, true).l_type,
        libc::F_UNLCK as i16,
        "the OFD lock is still held"
    );
    assert!(alive(holder.0), "the holder did not survive the break");
}

#[test]
fn a_lock_it_cannot_find_and_bad_input_are_refused() {
    let dir = TempDir::new("break-input");
    let file = dir.file("unlocked");
    let path = file.to_str().unwrap();
    let missing = dir.path().join("missing");
    let cases: [(&[&str], &str); 5] = [
        (&["--path", path, "--yes"], "no lock on"),
        (&["--inode", "1:2", "--yes"], "is not MAJOR:MINOR:INODE"),
        (&["--path", missing.to_str().unwrap()], "No such file"),
        (&["--yes"], "--path"),
        (&["--path", path, "--inode", "1:2:3"], "cannot be used with"),
    ];
    for (args, expected) in cases {
        let refused = aimlock_break(args);
        assert!(!refused.status.success(), "{args:?} succeeded");
        let reason = stderr(&refused);
        assert!(reason.contains(expected), "{args:?}: {reason}");
    }
}

#[test]
fn with_several_owners_it_asks_for_a_holder_and_breaks_only_that_ones_lock() {
    let dir = TempDir::new("break-shared");
    let file = dir.file("lock");
    let path = file.to_str().unwrap();
    let ino = inode(&file);
    let (_taker, orphan_holder) = orphan(&[&format!("open:{path}"), "flock:sh"]);
    let mut live = Workload::start(&[&format!("open:{path}"), "flock:sh", "wait-stdin"]);
    live.wait_step("flock:sh");

    let ambiguous = aimlock_break(&["--path", path, "--yes"]);
    assert!(!ambiguous.status.success(), "{}", stdout(&ambiguous));
    assert!(
        stderr(&ambiguous).contains("choose one with --holder PID"),
        "{}",
        stderr(&ambiguous)
    );
    let listed = stdout(&ambiguous);
    assert!(
        listed.contains(&format!("pid {} (lockwork)", orphan_holder.0)),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("pid {} (lockwork)", live.pid())),
        "{listed}"
    );

    let holder = orphan_holder.0.to_string();
    let broken = aimlock_break(&["--path", path, "--holder", &holder, "--yes"]);
    assert!(broken.status.success(), "break failed: {}", stderr(&broken));
    assert!(
        !fdinfo_shows_lock(orphan_holder.0, ino),
        "the orphan is still held"
    );
    assert!(
        fdinfo_shows_lock(live.pid(), ino),
        "the live owner's lock was broken too"
    );
    assert!(alive(orphan_holder.0));

    live.proceed();
    live.finish();
}

#[test]
fn a_live_taker_that_closed_its_descriptor_left_an_orphan_for_locks_and_break_alike() {
    let dir = TempDir::new("break-closed");
    let file = dir.file("lock");
    let path = file.to_str().unwrap();
    let ino = inode(&file);
    let mut work = Workload::start(&[
        &format!("open:{path}"),
        "flock:ex",
        "hold-in-child:60",
        "close",
        "wait-stdin",
    ]);
    work.wait_step("close");
    let taker = work.pid();
    let holder = KillOnDrop(work.holder_pid());

    let listed: Vec<Value> = lock_table(&[])
        .into_iter()
        .filter(|lock| lock["ino"] == ino)
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["taker"], "gone", "{listed:?}");
    assert_eq!(listed[0]["orphan"], true, "{listed:?}");

    let dry = aimlock_break(&["--path", path]);
    assert!(dry.status.success(), "dry run refused: {}", stderr(&dry));
    assert!(
        stdout(&dry).contains(&format!(
            "pid {taker} (lockwork), holding no descriptor on it"
        )),
        "{}",
        stdout(&dry)
    );
    let broken = aimlock_break(&["--path", path, "--yes"]);
    assert!(broken.status.success(), "break failed: {}", stderr(&broken));
    assert!(
        stderr(&broken).contains(&format!(
            "\"taker\":{{\"pid\":{taker},\"status\":\"gone\"}}"
        )),
        "{}",
        stderr(&broken)
    );
    assert!(flock_free(&file), "the orphan is still held");
    assert!(alive(taker) && alive(holder.0), "a process did not survive");

    work.proceed();
    work.finish();
}

#[test]
fn an_ofd_owners_ranges_are_shown_and_broken_together() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = TempDir::new("break-ranges");
    let file = dir.file("lock");
    let path = file.to_str().unwrap();
    let (_taker, holder) = orphan(&[&format!("open:{path}"), "ofd:w:0:10", "ofd:w:20:10"]);
    let meta = std::fs::metadata(&file).unwrap();
    let target = format!(
        "{}:{}:{}",
        libc::major(meta.dev()),
        libc::minor(meta.dev()),
        meta.ino()
    );

    let dry = aimlock_break(&["--inode", &target, "--force"]);
    assert!(dry.status.success(), "dry run failed: {}", stderr(&dry));
    let shown = stdout(&dry);
    assert!(
        shown.contains("Lock:    OFD lock, exclusive (write), bytes 0-9, bytes 20-29"),
        "{shown}"
    );
    assert!(shown.contains(&format!("File:    {path} (dev")), "{shown}");

    let broken = aimlock_break(&["--inode", &target, "--yes", "--force"]);
    assert!(broken.status.success(), "break failed: {}", stderr(&broken));
    let record: Value = stderr(&broken)
        .lines()
        .find_map(|line| serde_json::from_str(line).ok())
        .expect("the audit record");
    assert_eq!(
        record["lock"]["ranges"],
        serde_json::json!([{"start": 0, "end": 9}, {"start": 20, "end": 29}]),
        "{record}"
    );
    assert_eq!(
        getlk(&file, true).l_type,
        libc::F_UNLCK as i16,
        "a range is still held"
    );
    assert!(alive(holder.0), "the holder did not survive the break");
}

#[test]
fn a_break_by_proc_locks_inode_is_reported_without_its_probe() {
    let dir = TempDir::new("break-report");
    let file = dir.file("lock");
    let path = file.to_str().unwrap();
    let ino = inode(&file);
    let log = dir.path().join("trace.log");
    // The break's probe is a short uncontended hold: a summary unless every event is written.
    let tracer = TraceToFile::start(&log, &["--path", path, "--every-event"]);
    let (taker, holder) = orphan(&[&format!("open:{path}"), "flock:ex"]);
    tracer.wait_for("the orphan", |line| {
        line["event"] == "orphan" && line["ino"] == ino
    });

    // The inode as /proc/locks prints it: the device in hexadecimal.
    let dev = std::fs::metadata(&file).unwrap().dev();
    let hex = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    let broken = aimlock_break(&["--inode", &hex, "--yes"]);
    assert!(broken.status.success(), "break failed: {}", stderr(&broken));
    assert!(
        stdout(&broken).contains("it is free"),
        "{}",
        stdout(&broken)
    );
    // The break's probe: an acquire and a release of aimlock's own.
    tracer.wait_for("the probe's release", |line| {
        line["event"] == "release"
            && line["ino"] == ino
            && line["comm"] == "aimlock"
            && line["held_ns"]
                .as_u64()
                .is_some_and(|ns| ns < 1_000_000_000)
    });
    tracer.stop();

    let output = output_within(
        Command::new(aimlock_bin())
            .args(["report", "--path", path])
            .arg(&log),
        PROCESS_DEADLINE,
    );
    let report = stdout(&output);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        report.contains(&format!(
            "pid {taker} exited; the lock survived in pid {} (lockwork)",
            holder.0
        )),
        "{report}"
    );
    let released = report
        .lines()
        .filter(|line| line.contains("(aimlock)"))
        .collect::<Vec<_>>();
    assert_eq!(released.len(), 1, "{report}");
    assert!(released[0].contains("released when pid "), "{report}");
    assert!(released[0].contains(" (aimlock) unlocked it"), "{report}");
    assert!(!report.contains("refused"), "{report}");
    assert!(report.contains("in 1 hold;"), "{report}");
}
