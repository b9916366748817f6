//! A path in the log is the locked file's own, as it was at that moment: never another file's
//! that reused its inode number, renamed and deleted files named as they then were.

use std::{
    collections::HashMap,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use aimlock_tests::{
    TempDir, Tracer, Workload, eventually, inode, lock_table, lockwork_bin, of_kind, on_inode,
    run_aimlock,
};
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(60);

const CHURNED: usize = 2000;

/// Job runners create a lock file, lock it and delete it: `CHURNED` such jobs, each its own
/// short-lived process, under a tracer started with `options`. Returns the tracer's events and
/// each job's own file by pid, as the jobs name it. With `container`, the jobs run in a mount
/// namespace of their own where `dir` is mounted on `container`, and name their files there.
fn churn(
    dir: &TempDir,
    options: &[&str],
    container: Option<&Path>,
) -> (Vec<Value>, HashMap<u64, String>) {
    let files = container.unwrap_or(dir.path());
    let enter =
        container.map(|inside| format!("mountns:{}:{}", dir.path().display(), inside.display()));
    let enter = enter.as_slice();
    // A copy of lockwork under its own name, so that --comm selects only this test's records.
    let churn = dir.path().join("lw-churn");
    std::fs::copy(lockwork_bin(), &churn).expect("copy lockwork");
    let tracer = Tracer::start(&[&["--comm", "lw-churn"], options].concat());
    // The directory becomes known through a process that shows one of its files; the jobs,
    // gone before the tracer reads their records, are named through it.
    let first = files.join("first");
    let mut shown = Workload::start_as(
        &churn,
        &[
            enter,
            &[
                format!("open:{}", first.display()),
                "flock:ex".to_owned(),
                "wait-stdin".to_owned(),
            ],
        ]
        .concat()
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    tracer.wait_for("the first file's acquire", SETTLE, |e| {
        e["event"] == "acquire" && e["path"] == first.display().to_string()
    });
    shown.proceed();
    shown.finish();
    // The kernel hands each freed inode number to the next file.
    let output = Command::new(&churn)
        .args(enter)
        .arg(format!("churn:{}:{CHURNED}:pids", files.display()))
        .output()
        .expect("run the jobs");
    assert!(output.status.success(), "{output:?}");
    let jobs: HashMap<u64, String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|line| {
            let job = line["job"].as_u64()?;
            let path = files.join(format!("job-{job}"));
            Some((line["pid"].as_u64()?, path.display().to_string()))
        })
        .collect();
    assert_eq!(jobs.len(), CHURNED);
    let events = eventually("every job's release", SETTLE, || {
        let events = tracer.events();
        let released = of_kind(&events, "release")
            .iter()
            .filter(|e| jobs.contains_key(&e["pid"].as_u64().unwrap_or(0)))
            .count();
        (released == CHURNED).then_some(events)
    });
    let stop = tracer.stop();
    assert_eq!(stop.last().unwrap()["lost"], 0, "the ring lost records");
    (events, jobs)
}

/// The job's acquire and release lines (with `pid` in `jobs`).
fn job_lines<'a>(events: &'a [Value], jobs: &HashMap<u64, String>) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["event"] == "acquire" || e["event"] == "release")
        .filter(|e| jobs.contains_key(&e["pid"].as_u64().unwrap_or(0)))
        .collect()
}

/// How many times an inode number went to another job's file.
fn inode_reuses(events: &[Value], jobs: &HashMap<u64, String>) -> usize {
    let mut inodes: Vec<u64> = job_lines(events, jobs)
        .iter()
        .filter(|e| e["event"] == "acquire")
        .filter_map(|e| e["ino"].as_u64())
        .collect();
    inodes.sort();
    inodes.dedup();
    CHURNED - inodes.len()
}

/// tmpfs (a VM's /tmp) never hands an inode number out again; ext4 and xfs do at once.
fn reuses_numbers(dir: &TempDir) -> bool {
    nix::sys::statfs::statfs(dir.path())
        .is_ok_and(|fs| fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC)
}

fn assert_numbers_were_reused(dir: &TempDir, reused: usize) {
    assert!(
        reused > 0 || !reuses_numbers(dir),
        "the kernel reused no inode number: the test proves nothing"
    );
}

#[test]
fn two_thousand_processes_locking_and_deleting_their_own_file_each_name_it() {
    let dir = TempDir::new("paths-churn");
    let (events, jobs) = churn(&dir, &[], None);
    let reused = inode_reuses(&events, &jobs);
    let mut wrong = Vec::new();
    for event in job_lines(&events, &jobs) {
        let own = &jobs[&event["pid"].as_u64().unwrap()];
        if event["path"] != own.as_str() {
            wrong.push(event.clone());
        }
        // Each job deletes its file before its exit releases the lock.
        if event["event"] == "release" && event["deleted"] != true {
            wrong.push(event.clone());
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} lines name another file or miss the deletion (inode numbers reused {reused} \
         times), such as {:#?}",
        wrong.len(),
        2 * CHURNED,
        &wrong[..wrong.len().min(3)]
    );
    assert_numbers_were_reused(&dir, reused);
}

#[test]
fn two_thousand_processes_in_a_containers_mount_namespace_each_name_their_own_file_both_ways() {
    let dir = TempDir::new("paths-churn-mountns");
    let mount_point = TempDir::new("paths-churn-mountpoint");
    let (events, jobs) = churn(&dir, &[], Some(mount_point.path()));
    let reused = inode_reuses(&events, &jobs);
    let inside = mount_point.path().display().to_string();
    let outside = dir.path().display().to_string();
    let mut wrong = Vec::new();
    for event in job_lines(&events, &jobs) {
        let own = &jobs[&event["pid"].as_u64().unwrap()];
        let on_host = own.replacen(&inside, &outside, 1);
        let not_deleted = event["event"] == "release" && event["deleted"] != true;
        if event["path"] != own.as_str() || event["host_path"] != on_host.as_str() || not_deleted {
            wrong.push(event.clone());
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} lines name another file, miss the host's path or the deletion (inode numbers \
         reused {reused} times), such as {:#?}",
        wrong.len(),
        2 * CHURNED,
        &wrong[..wrong.len().min(3)]
    );
    assert_numbers_were_reused(&dir, reused);
}

#[test]
fn without_btf_a_short_lived_processs_file_is_named_right_or_not_at_all() {
    let dir = TempDir::new("paths-churn-classic");
    // Classic tracepoints give neither the file's name nor its generation: the path can only
    // come from the locking process's fds, and a job may be gone before they are read.
    let (events, jobs) = churn(&dir, &["--classic-lock-hooks"], None);
    let reused = inode_reuses(&events, &jobs);
    let lines = job_lines(&events, &jobs);
    let wrong: Vec<&&Value> = lines
        .iter()
        .filter(|e| {
            let own = &jobs[&e["pid"].as_u64().unwrap()];
            match e["path"].as_str() {
                Some(path) => path != own,
                None => !e["path_unknown"].is_string(),
            }
        })
        .collect();
    let named = lines.iter().filter(|e| e["path"].is_string()).count();
    assert!(
        wrong.is_empty(),
        "{} of {} lines name another file or give no reason (inode numbers reused {reused} \
         times, {named} named), such as {:#?}",
        wrong.len(),
        lines.len(),
        &wrong[..wrong.len().min(3)]
    );
    assert_numbers_were_reused(&dir, reused);
}

#[test]
fn a_file_renamed_while_locked_is_released_under_its_new_name() {
    let dir = TempDir::new("paths-rename");
    let before = dir.file("job.lock");
    let after = dir.path().join("job.lock.old");
    let ino = inode(&before);
    let tracer = Tracer::start(&["--path", &before.display().to_string()]);
    let rename = format!("rename:{}:{}", before.display(), after.display());
    let mut work = Workload::start(&[
        &format!("open:{}", before.display()),
        "flock:ex",
        "wait-stdin",
        &rename,
        "wait-stdin",
        "exit:0",
    ]);
    // Named while its process runs: the file's directory is known from then on.
    tracer.wait_for("the acquire", SETTLE, |e| {
        e["event"] == "acquire" && e["ino"] == ino
    });
    work.proceed();
    work.wait_step(&rename);
    work.proceed();
    work.finish();
    let release = tracer.wait_for("the release", SETTLE, |e| {
        e["event"] == "release" && e["ino"] == ino
    });
    let events = tracer.stop();
    let acquire = of_kind(&on_inode(&events, ino), "acquire")[0].clone();
    assert_eq!(acquire["path"], before.display().to_string(), "{acquire}");
    assert_eq!(release["path"], after.display().to_string(), "{release}");
    assert!(release.get("deleted").is_none(), "{release}");
}

#[test]
fn a_file_deleted_while_locked_is_released_as_deleted() {
    let dir = TempDir::new("paths-deleted");
    let file = dir.file("job.lock");
    let ino = inode(&file);
    let path = file.display().to_string();
    let tracer = Tracer::start(&["--path", &path]);
    let mut work = Workload::start(&[
        &format!("open:{path}"),
        "flock:sh",
        "wait-stdin",
        &format!("unlink:{path}"),
        "wait-stdin",
        "flock:un",
        "exit:0",
    ]);
    // Named while its process runs: the file's directory is known from then on.
    let acquire = tracer.wait_for("the acquire", SETTLE, |e| {
        e["event"] == "acquire" && e["ino"] == ino
    });
    assert_eq!(acquire["path"], path, "{acquire}");
    work.proceed();
    work.wait_step(&format!("unlink:{path}"));
    work.proceed();
    work.finish();
    let release = tracer.wait_for("the release", SETTLE, |e| {
        e["event"] == "release" && e["ino"] == ino
    });
    tracer.stop();
    assert_eq!(release["path"], path, "{release}");
    assert_eq!(release["deleted"], true, "{release}");
    assert_eq!(release["reason"], "unlock");
}

#[test]
fn a_lock_on_a_memfd_is_named_by_the_memfd() {
    let dir = TempDir::new("paths-memfd");
    // A comm of its own: a memfd has no path to filter by.
    let binary = dir.path().join("lw-memfd");
    std::fs::copy(lockwork_bin(), &binary).expect("copy lockwork");
    let tracer = Tracer::start(&["--comm", "lw-memfd"]);
    let status = Command::new(&binary)
        .args(["memfd:aimlock-jobs", "flock:ex", "ofd:w:0:10", "exit:0"])
        .stdout(Stdio::null())
        .status()
        .expect("run lockwork");
    assert!(status.success());
    let acquire = tracer.wait_for("the acquire", SETTLE, |e| {
        e["event"] == "acquire" && e["comm"] == "lw-memfd"
    });
    let events = tracer.stop();
    assert_eq!(acquire["path"], "memfd:aimlock-jobs", "{acquire}");
    let lines: Vec<&Value> = events
        .iter()
        .filter(|e| e["comm"] == "lw-memfd" && e["ino"].is_u64())
        .collect();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    for line in lines {
        assert_eq!(line["path"], "memfd:aimlock-jobs", "{line}");
    }
}

#[test]
fn a_path_filter_lets_in_no_later_file_that_could_reuse_the_inode_number() {
    const JOBS: usize = 200;
    let dir = TempDir::new("paths-filter");
    let file = dir.file("job.lock");
    let ino = inode(&file);
    let path = file.display().to_string();
    let tracer = Tracer::start(&["--path", &path]);
    // The named file is locked, deleted and closed: nothing but the tracer keeps its inode.
    let work = Workload::start(&[
        &format!("open:{path}"),
        "flock:ex",
        &format!("unlink:{path}"),
        "exit:0",
    ]);
    work.finish();
    tracer.wait_for("the named file's release", SETTLE, |e| {
        e["event"] == "release" && e["ino"] == ino
    });
    // New files in the same directory, each locked by its own process: on ext4 the first of
    // them would get the freed inode number at once.
    let jobs = Command::new(lockwork_bin())
        .arg(format!("churn:{}:{JOBS}:pids", dir.path().display()))
        .output()
        .expect("run the jobs");
    assert!(jobs.status.success(), "{jobs:?}");
    let job_pids: Vec<u64> = String::from_utf8_lossy(&jobs.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["job"].is_u64())
        .filter_map(|line| line["pid"].as_u64())
        .collect();
    assert_eq!(job_pids.len(), JOBS);
    let events = tracer.stop();
    let foreign: Vec<&Value> = events
        .iter()
        .filter(|e| job_pids.contains(&e["pid"].as_u64().unwrap_or(0)))
        .collect();
    assert!(
        foreign.is_empty(),
        "the filter let in files the operator did not name: {foreign:#?}"
    );
    assert_eq!(of_kind(&on_inode(&events, ino), "acquire").len(), 1);
}

#[test]
fn a_path_filter_follows_a_file_re_created_at_the_path_and_no_file_that_reuses_a_number() {
    let dir = TempDir::new("paths-recreated");
    let file = dir.file("job.lock");
    let path = file.display().to_string();
    let first = inode(&file);
    let tracer = Tracer::start(&["--path", &path]);
    let mut holder =
        Workload::start(&[&format!("open:{path}"), "flock:ex", "wait-stdin", "exit:0"]);
    tracer.wait_for("the first file's acquire", SETTLE, |e| {
        e["event"] == "acquire" && e["ino"] == first
    });
    // Deleted while locked, and another file created at its path (another inode: the first is
    // still open), as a job runner re-creates its lock file.
    std::fs::remove_file(&file).expect("delete the first file");
    std::fs::write(&file, b"").expect("create the second file");
    let second = inode(&file);
    assert_ne!(second, first);
    // Followed within a second: a job that locks the file at the path then shows.
    let lock_at_path = || {
        let status = Command::new(lockwork_bin())
            .args([&format!("open:{path}"), "flock:ex", "exit:0"])
            .stdout(Stdio::null())
            .status()
            .expect("run lockwork");
        assert!(status.success());
    };
    let acquire = eventually("an acquire on the re-created file", SETTLE, || {
        lock_at_path();
        of_kind(&tracer.events(), "acquire")
            .into_iter()
            .find(|e| e["ino"] == second)
            .cloned()
    });
    assert_eq!(acquire["path"], path, "{acquire}");
    assert!(acquire.get("deleted").is_none(), "{acquire}");

    // The first file stays traced while locked: its release shows, as deleted.
    holder.proceed();
    holder.finish();
    let release = tracer.wait_for("the first file's release", SETTLE, |e| {
        e["event"] == "release" && e["ino"] == first
    });
    assert_eq!(release["path"], path, "{release}");
    assert_eq!(release["deleted"], true, "{release}");

    // Then the tracer lets it go, and its inode number may go to a new file elsewhere, which
    // is not the file the operator named and must not show.
    if reuses_numbers(&dir) {
        let mut tries = 0;
        let reused = eventually(
            "a new file with the first file's inode number",
            SETTLE,
            || {
                tries += 1;
                let other = dir.path().join(format!("other-{tries}"));
                std::fs::write(&other, b"").expect("create a file");
                if inode(&other) == first {
                    return Some(other);
                }
                std::fs::remove_file(&other).expect("delete it");
                None
            },
        );
        let work = Workload::start(&[&format!("open:{}", reused.display()), "flock:ex", "exit:0"]);
        let other_pid = u64::from(work.pid());
        work.finish();
        // A lock at the path after it, so that the tracer has read past the other file's.
        let last = tracer.events().len();
        eventually("a later acquire at the path", SETTLE, || {
            lock_at_path();
            tracer.events()[last..]
                .iter()
                .any(|e| e["event"] == "acquire" && e["ino"] == second)
                .then_some(())
        });
        let events = tracer.stop();
        let foreign: Vec<&Value> = events
            .iter()
            .filter(|e| e["pid"] == other_pid || e["path"] == reused.display().to_string())
            .collect();
        assert!(
            foreign.is_empty(),
            "a file the operator did not name showed: {foreign:#?}"
        );
    } else {
        tracer.stop();
    }
}

#[test]
fn a_lock_in_a_containers_mount_namespace_is_named_as_the_container_sees_it_and_as_the_host_does() {
    let dir = TempDir::new("paths-mountns");
    let host_dir = dir.path().join("host");
    let container_dir = dir.path().join("container");
    std::fs::create_dir_all(&host_dir).expect("host dir");
    std::fs::create_dir_all(&container_dir).expect("container dir");
    let host_file = host_dir.join("job.lock");
    std::fs::write(&host_file, b"").expect("create the file");
    let ino = inode(&host_file);
    let host_path = host_file.display().to_string();
    // Inside the namespace the host's directory is mounted where the host has an empty one.
    let container_path = container_dir.join("job.lock").display().to_string();
    // A host process's lock on a host path, for comparison.
    let host_only = host_dir.join("host.lock");
    std::fs::write(&host_only, b"").expect("create the host's file");
    let host_only_ino = inode(&host_only);
    let tracer = Tracer::start(&[
        "--path",
        &host_path,
        "--path",
        &host_only.display().to_string(),
    ]);
    // Held until its acquire is seen: named while its process runs.
    let mut host_work = Workload::start(&[
        &format!("open:{}", host_only.display()),
        "flock:ex",
        "wait-stdin",
        "exit:0",
    ]);
    let host_acquire = tracer.wait_for("the host process's acquire", SETTLE, |e| {
        e["event"] == "acquire" && e["ino"] == host_only_ino
    });
    host_work.proceed();
    host_work.finish();
    assert_eq!(
        host_acquire["path"],
        host_only.display().to_string(),
        "{host_acquire}"
    );
    assert!(host_acquire.get("host_path").is_none(), "{host_acquire}");
    let mut work = Workload::start(&[
        &format!("mountns:{}:{}", host_dir.display(), container_dir.display()),
        &format!("open:{container_path}"),
        "flock:ex",
        "wait-stdin",
        "exit:0",
    ]);
    let acquire = tracer.wait_for("the acquire", SETTLE, |e| {
        e["event"] == "acquire" && e["ino"] == ino
    });
    assert_eq!(acquire["path"], container_path, "{acquire}");
    assert_eq!(acquire["host_path"], host_path, "{acquire}");

    // `locks` finds it by either path, and names it both ways.
    for path in [&container_path, &host_path] {
        let table = lock_table(&["--path", path]);
        assert_eq!(table.len(), 1, "--path {path}: {table:#?}");
        assert_eq!(table[0]["path"], container_path, "{table:#?}");
        assert_eq!(table[0]["host_path"], host_path, "{table:#?}");
    }
    // The text table puts the host's path beside the container's.
    let text = run_aimlock(&["locks", "--raw", "--path", &container_path]);
    assert!(text.status.success(), "{text:?}");
    let text = String::from_utf8_lossy(&text.stdout);
    let mut rows = text.lines();
    let headings: Vec<&str> = rows.next().unwrap_or_default().split(' ').collect();
    let row: Vec<&str> = rows.next().unwrap_or_default().split(' ').collect();
    let cell = |name: &str| {
        let column = headings.iter().position(|&h| h == name);
        column.and_then(|column| row.get(column).copied())
    };
    assert_eq!(cell("PATH"), Some(container_path.as_str()), "{text}");
    assert_eq!(cell("HOSTPATH"), Some(host_path.as_str()), "{text}");

    work.proceed();
    work.finish();
    let release = tracer.wait_for("the release", SETTLE, |e| {
        e["event"] == "release" && e["ino"] == ino
    });
    tracer.stop();
    assert_eq!(release["path"], container_path, "{release}");
    assert_eq!(release["host_path"], host_path, "{release}");
}

#[test]
fn files_are_named_by_the_kernel_wherever_it_has_btf() {
    // Every kernel aimlock is proven on has BTF: the lock hooks must run as BTF tracepoints
    // there, or the records would carry neither the file's name nor its generation.
    assert!(
        std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        "this kernel has no BTF"
    );
    for (options, expected) in [(&[][..], "btf"), (&["--classic-lock-hooks"][..], "classic")] {
        let tracer = Tracer::start(options);
        let events = tracer.stop();
        assert_eq!(events[0]["event"], "start", "{events:#?}");
        assert_eq!(
            events[0]["lock_hooks"], expected,
            "{options:?}: {}",
            events[0]
        );
    }
}
