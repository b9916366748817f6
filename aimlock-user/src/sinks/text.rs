//! The readable one-line form of an event (`--format text`, and the journal's MESSAGE).

use std::time::Duration;

use crate::events::{Blocker, DeadlockStep, EventKind, EventLine, LineageStep, LockRef, ProcRef};

pub fn text_line(out: &mut Vec<u8>, event: &EventLine, colour: bool) {
    let kind = event.event.unwrap_or(EventKind::Unknown);
    let mut words = vec![event.ts.clone(), format!("{:<10}", kind.name())];
    // A text log is read where it was written: its start and stop lines name the host, the
    // events between them do not repeat it (JSON lines, made for shipping, all carry it).
    if matches!(kind, EventKind::Start | EventKind::Stop)
        && let Some(host) = &event.host
    {
        words.push(format!("host={host}"));
    }
    if let Some(kind) = event.kind {
        words.push(kind.name().to_owned());
    }
    if let Some(mode) = event.mode {
        words.push(mode.name().to_owned());
    }
    if let Some(pid) = event.pid {
        words.push(format!(
            "pid={pid}({})",
            event.comm.as_deref().unwrap_or("?")
        ));
    }
    if let (Some(dev), Some(ino)) = (&event.dev, event.ino) {
        words.push(format!("{dev}:{ino}"));
    }
    if let Some(path) = &event.path {
        let deleted = if event.deleted == Some(true) {
            " (deleted)"
        } else {
            ""
        };
        words.push(format!("{path}{deleted}"));
    }
    if let Some(start) = event.start {
        match event.end {
            Some(Some(end)) => words.push(format!("[{start}-{end}]")),
            _ => words.push(format!("[{start}-EOF]")),
        }
    }
    if let Some(holds) = event.holds {
        words.push(format!("holds={holds}"));
    }
    for (label, value) in [
        ("wait", event.wait_ns),
        ("held", event.held_ns),
        ("longest", event.longest_ns),
        ("orphaned", event.orphan_ns),
    ] {
        if let Some(ns) = value {
            let rounded = Duration::from_micros(ns / 1000);
            words.push(format!("{label}={}", humantime::format_duration(rounded)));
        }
    }
    if let Some(reason) = event.reason {
        words.push(format!("reason={}", reason.name()));
    }
    if let Some(errno) = &event.errno {
        words.push(format!("errno={errno}"));
    }
    if event.orphan == Some(true) {
        words.push("orphan".to_owned());
    }
    if let Some(holders) = &event.holders {
        words.push(format!("holders={}", proc_list(holders)));
    }
    if let Some(by) = &event.by {
        words.push(format!("by={}", proc_list(std::slice::from_ref(by))));
    }
    if let Some(blockers) = &event.blockers {
        words.push(format!("blockers={}", blocker_list(blockers)));
    }
    if let Some(cycle) = &event.cycle {
        words.push(format!("cycle={}", cycle_text(cycle)));
    }
    if let Some(lineage) = &event.lineage {
        words.push(format!("lineage={}", lineage_text(lineage)));
    }
    if let Some(from) = &event.from {
        words.push(format!("from={}", proc_list(std::slice::from_ref(from))));
    }
    if let Some(via) = event.via {
        words.push(format!("via={}", via.name()));
    }
    if let Some(lost) = event.lost {
        words.push(format!("lost={lost}"));
    }
    if let Some(untraced) = event.untraced_children {
        words.push(format!("untraced_children={untraced}"));
    }
    let highlight = colour
        && matches!(
            kind,
            EventKind::Orphan | EventKind::OrphanEnd | EventKind::Deadlock | EventKind::Inherit
        );
    if highlight {
        out.extend_from_slice(b"\x1b[1;31m");
    }
    out.extend_from_slice(words.join(" ").as_bytes());
    if highlight {
        out.extend_from_slice(b"\x1b[0m");
    }
}

/// `812(python3,orphan),900(make)`: who held what a request wanted; `none` when the tracer
/// knows of no one.
fn blocker_list(blockers: &[Blocker]) -> String {
    if blockers.is_empty() {
        return "none".to_owned();
    }
    blockers
        .iter()
        .map(|blocker| {
            let orphan = if blocker.orphan == Some(true) {
                ",orphan"
            } else {
                ""
            };
            format!("{}({}{orphan})", blocker.pid, blocker.comm)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `fork:101(flock),exec:101(sh),fork:102(sh),exec:102(sleep)`: how each holder came to hold
/// the lock, from its taker on; `unknown:812(python3,before_start)` when not seen.
fn lineage_text(lineage: &[LineageStep]) -> String {
    lineage
        .iter()
        .map(|step| match step.why {
            Some(why) => format!(
                "{}:{}({},{})",
                step.via.name(),
                step.pid,
                step.comm,
                why.name()
            ),
            None => format!("{}:{}({})", step.via.name(), step.pid, step.comm),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `7(a):/tmp/x->/tmp/y;8(b):/tmp/y->/tmp/x`: each process, the lock it holds and the one it
/// waits for.
fn cycle_text(cycle: &[DeadlockStep]) -> String {
    let lock = |lock: &LockRef| match &lock.path {
        Some(path) => path.clone(),
        None => format!("{}:{}", lock.dev, lock.ino),
    };
    cycle
        .iter()
        .map(|step| {
            format!(
                "{}({}):{}->{}",
                step.pid,
                step.comm,
                lock(&step.holds),
                lock(&step.waits_for)
            )
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn proc_list(procs: &[ProcRef]) -> String {
    if procs.is_empty() {
        return "none".to_owned();
    }
    procs
        .iter()
        .map(|p| format!("{}({})", p.pid, p.comm))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(event: &EventLine) -> String {
        let mut out = Vec::new();
        text_line(&mut out, event, false);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn start_and_stop_name_the_host_and_events_do_not() {
        let at = "2026-11-27T05:04:50.602120982Z".to_owned();
        let line = |event| EventLine {
            event: Some(event),
            ts: at.clone(),
            host: Some("node7".into()),
            pid: Some(812),
            comm: Some("lockwork".to_owned()),
            ..Default::default()
        };
        assert_eq!(
            text(&line(EventKind::Start)),
            format!("{at} start      host=node7 pid=812(lockwork)")
        );
        assert!(text(&line(EventKind::Stop)).contains(" stop       host=node7"));
        assert!(!text(&line(EventKind::Acquire)).contains("node7"));
    }

    #[test]
    fn blockers_and_a_deadlocks_cycle_are_spelled_out() {
        let wait = EventLine {
            event: Some(EventKind::Wait),
            blockers: Some(vec![
                Blocker {
                    pid: 812,
                    start_time: None,
                    comm: "python3".to_owned(),
                    orphan: Some(true),
                },
                Blocker {
                    pid: 900,
                    start_time: None,
                    comm: "make".to_owned(),
                    orphan: None,
                },
            ]),
            ..Default::default()
        };
        assert!(
            text(&wait).ends_with(" blockers=812(python3,orphan),900(make)"),
            "{}",
            text(&wait)
        );
        let nobody = EventLine {
            blockers: Some(Vec::new()),
            ..wait
        };
        assert!(text(&nobody).ends_with(" blockers=none"));

        let lock = |path: Option<&str>, ino| LockRef {
            kind: crate::events::LockKind::Flock,
            mode: crate::events::Mode::Write,
            dev: "254:0".to_owned(),
            ino,
            path: path.map(str::to_owned),
            start: 0,
            end: None,
        };
        let step = |pid, holds, waits_for| DeadlockStep {
            pid,
            start_time: None,
            tid: pid,
            comm: "sync".to_owned(),
            holds,
            waits_for,
        };
        let deadlock = EventLine {
            event: Some(EventKind::Deadlock),
            cycle: Some(vec![
                step(7, lock(Some("/run/a"), 1), lock(None, 2)),
                step(8, lock(None, 2), lock(Some("/run/a"), 1)),
            ]),
            ..Default::default()
        };
        assert!(
            text(&deadlock).ends_with(" cycle=7(sync):/run/a->254:0:2;8(sync):254:0:2->/run/a"),
            "{}",
            text(&deadlock)
        );
    }
}
