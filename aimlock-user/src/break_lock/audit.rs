//! The audit record of a real break: one JSON line on stderr and, on request, in a log file.

use std::{fs, os::unix::fs::OpenOptionsExt as _, path::Path, time::SystemTime};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::{
    Inode, OwnedLock,
    release::{Attempt, action},
};
use crate::{
    events::{LockKind, Mode, rfc3339},
    lock_table::Taker,
    procfs,
};

/// Opens the audit log for appending, created readable by its owner alone.
pub(super) fn open_log(log: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(log)
        .with_context(|| format!("open the audit log {}", log.display()))
}

/// One JSON line per real break.
#[derive(Debug, Serialize)]
pub(super) struct Record {
    event: &'static str,
    ts: String,
    by: Operator,
    lock: AuditLock,
    /// The holder whose descriptor was duplicated.
    #[serde(skip_serializing_if = "Option::is_none")]
    holder: Option<AuditHolder>,
    action: &'static str,
    forced: bool,
    /// "released" or "failed".
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Whether the probe after the break found the file free (a waiter may have taken it).
    #[serde(skip_serializing_if = "Option::is_none")]
    free_after: Option<bool>,
}

/// Who ran the break: the real user, and the login user the kernel's audit tracks across
/// sudo and su.
#[derive(Debug, Serialize)]
struct Operator {
    uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    login_uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sudo_user: Option<String>,
    pid: u32,
}

#[derive(Debug, Serialize)]
struct AuditLock {
    kind: LockKind,
    mode: Mode,
    dev: String,
    ino: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    ranges: Vec<AuditRange>,
    taker: AuditTaker,
}

#[derive(Debug, Serialize)]
struct AuditRange {
    start: u64,
    /// `null`: to end of file.
    end: Option<u64>,
}

#[derive(Debug, Serialize)]
struct AuditTaker {
    /// The recorded pid, when /proc records one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    /// The lock table's judgement: "holding", "gone" or "unknown".
    status: Taker,
}

#[derive(Debug, Serialize)]
struct AuditHolder {
    pid: u32,
    /// When it started (nanoseconds since boot): the process, even if its pid is reused.
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<u64>,
    comm: String,
    fd: i32,
}

impl Record {
    pub(super) fn new(
        lock: &OwnedLock,
        target: Inode,
        path: Option<String>,
        forced: bool,
        attempt: &Attempt,
    ) -> Self {
        let uid = nix::unistd::getuid();
        let first = lock.first();
        Self {
            event: "break",
            ts: rfc3339(SystemTime::now()),
            by: Operator {
                uid: uid.as_raw(),
                user: nix::unistd::User::from_uid(uid)
                    .ok()
                    .flatten()
                    .map(|user| user.name),
                login_uid: procfs::read_small("/proc/self/loginuid")
                    .ok()
                    .and_then(|text| text.trim().parse().ok())
                    .filter(|&login_uid| login_uid != u32::MAX),
                sudo_user: std::env::var("SUDO_USER").ok(),
                pid: std::process::id(),
            },
            lock: AuditLock {
                kind: lock.kind(),
                mode: lock.mode(),
                dev: format!("{}:{}", target.major, target.minor),
                ino: target.ino,
                path,
                ranges: lock
                    .ranges
                    .iter()
                    .map(|range| AuditRange {
                        start: range.start,
                        end: range.end,
                    })
                    .collect(),
                taker: AuditTaker {
                    pid: u32::try_from(first.pid).ok().filter(|&pid| pid > 0),
                    status: first.taker,
                },
            },
            holder: attempt.holder.as_ref().map(|holder| AuditHolder {
                pid: holder.pid,
                start_time: holder.start_time,
                comm: holder.comm.clone(),
                fd: holder.fd,
            }),
            action: action(lock.kind()),
            forced,
            outcome: if attempt.result.is_ok() {
                "released"
            } else {
                "failed"
            },
            error: attempt.result.as_ref().err().map(|err| format!("{err:#}")),
            free_after: attempt
                .result
                .as_ref()
                .ok()
                .map(|released| released.now_held_by.is_empty()),
        }
    }
}
