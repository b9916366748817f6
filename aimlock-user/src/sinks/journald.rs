//! Events to the systemd journal over its native protocol: one datagram per event, one
//! `KEY=value` line per field, or, for a value holding a newline, the key, a newline, the
//! value's length as 64-bit little endian, the value and a newline.

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use super::{Failures, text::text_line};
use crate::events::{
    Blocker, DeadlockStep, EventKind, EventLine, LineageStep, ProcRef, write_array,
};

/// syslog(3) priorities, as journald's PRIORITY field takes them.
const WARNING: u8 = 4;
const INFO: u8 = 6;

pub struct JournaldSink {
    socket: UnixDatagram,
    path: PathBuf,
    message: Vec<u8>,
    text: Vec<u8>,
    pub(super) failures: Failures,
}

impl JournaldSink {
    pub fn open(path: &Path) -> Result<Self> {
        let socket = UnixDatagram::unbound().context("cannot create a socket for --journald")?;
        socket
            .connect(path)
            .with_context(|| format!("--journald: cannot reach {}", path.display()))?;
        // A journal that cannot keep up costs lines (counted), never the tracer's pace.
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            path: path.to_owned(),
            message: Vec::with_capacity(1024),
            text: Vec::with_capacity(512),
            failures: Failures::new(format!("journald ({})", path.display())),
        })
    }

    pub fn write(&mut self, event: &EventLine) {
        self.text.clear();
        text_line(&mut self.text, event, false);
        self.message.clear();
        encode(&mut self.message, event, &self.text);
        if let Err(err) = super::send_datagram(&self.socket, &self.path, &self.message) {
            self.failures.lost(1, &err);
        }
    }
}

/// The journal entry of one event: the text line as MESSAGE, and every field of the JSON line
/// (but `host`: the journal records `_HOSTNAME` itself) as a field of its own, so that the
/// journal holds the whole log (`journalctl -o json` gives every value as a string). A few
/// fields are also given in forms made for `journalctl FIELD=VALUE` matches (HOLDER_PIDS,
/// LOCK_BY_PID, LOCK_BY_COMM, BLOCKER_PIDS, DEADLOCK_PIDS, LINEAGE_PIDS, LOCK_FROM_PID).
/// Orphans, deadlocks and inheritances (a lock's description reaching another process, the
/// start of a ghost) are warnings.
fn encode(out: &mut Vec<u8>, event: &EventLine, text: &[u8]) {
    let kind = event.event.unwrap_or(EventKind::Unknown);
    let warn = matches!(
        kind,
        EventKind::Orphan | EventKind::Deadlock | EventKind::Inherit
    ) || (kind == EventKind::Stop && event.lost.is_some_and(|lost| lost > 0));
    field(out, "MESSAGE", text);
    number(
        out,
        "PRIORITY",
        u64::from(if warn { WARNING } else { INFO }),
    );
    field(out, "SYSLOG_IDENTIFIER", b"aimlock");
    field(out, "LOCK_EVENT", kind.name().as_bytes());
    // The event's own time: the entry's __REALTIME_TIMESTAMP is when the journal received it.
    field(out, "LOCK_TS", event.ts.as_bytes());
    optional_number(out, "AIMLOCK_SCHEMA", event.schema.map(u64::from));
    optional(out, "AIMLOCK_VERSION", event.version.as_deref());
    optional(out, "AIMLOCK_KERNEL", event.kernel.as_deref());
    optional(out, "AIMLOCK_LOCK_HOOKS", event.lock_hooks.as_deref());
    optional(out, "LOCK_KIND", event.kind.map(|kind| kind.name()));
    optional(out, "LOCK_MODE", event.mode.map(|mode| mode.name()));
    optional(out, "LOCK_PATH", event.path.as_deref());
    optional(out, "LOCK_HOST_PATH", event.host_path.as_deref());
    optional_bool(out, "LOCK_DELETED", event.deleted);
    optional(out, "LOCK_PATH_UNKNOWN", event.path_unknown.as_deref());
    optional(out, "LOCK_NAME", event.name.as_deref());
    optional(out, "LOCK_DEV", event.dev.as_deref());
    optional_number(out, "LOCK_INO", event.ino);
    optional_number(out, "LOCK_GENERATION", event.generation.map(u64::from));
    optional_number(out, "LOCK_START", event.start);
    if let Some(end) = event.end {
        match end {
            Some(end) => number(out, "LOCK_END", end),
            None => field(out, "LOCK_END", b"EOF"),
        }
    }
    optional_number(out, "LOCK_PID", event.pid.map(u64::from));
    optional_number(out, "LOCK_START_TIME", event.start_time);
    optional_number(out, "LOCK_NS_PID", event.ns_pid.map(u64::from));
    optional_number(out, "LOCK_TID", event.tid.map(u64::from));
    optional(out, "LOCK_COMM", event.comm.as_deref());
    optional(out, "LOCK_CGROUP", event.cgroup.as_deref());
    optional(out, "LOCK_REASON", event.reason.map(|reason| reason.name()));
    optional(out, "LOCK_ERRNO", event.errno.as_deref());
    optional_number(out, "LOCK_WAIT_NS", event.wait_ns);
    optional_number(out, "LOCK_HELD_NS", event.held_ns);
    optional_number(out, "LOCK_HOLDS", event.holds);
    optional_number(out, "LOCK_LONGEST_NS", event.longest_ns);
    optional_number(out, "LOCK_LOCKS", event.locks);
    optional_bool(out, "LOCK_ORPHAN", event.orphan);
    optional_number(out, "LOCK_ORPHAN_NS", event.orphan_ns);
    optional(out, "LOCK_TAKER_EXIT", event.taker_exit.as_deref());
    if let Some(holders) = &event.holders {
        let pids = holders.iter().map(|holder| holder.pid);
        field(out, "HOLDER_PIDS", pid_list(pids).as_bytes());
        let mut json = Vec::new();
        write_array(&mut json, holders, ProcRef::write_json);
        field(out, "LOCK_HOLDERS", &json);
    }
    if let Some(by) = &event.by {
        number(out, "LOCK_BY_PID", u64::from(by.pid));
        field(out, "LOCK_BY_COMM", by.comm.as_bytes());
        let mut json = Vec::new();
        by.write_json(&mut json);
        field(out, "LOCK_BY", &json);
    }
    if let Some(blockers) = &event.blockers {
        let pids = blockers.iter().map(|blocker| blocker.pid);
        field(out, "BLOCKER_PIDS", pid_list(pids).as_bytes());
        let mut json = Vec::new();
        write_array(&mut json, blockers, Blocker::write_json);
        field(out, "LOCK_BLOCKERS", &json);
    }
    if let Some(cycle) = &event.cycle {
        let pids = cycle.iter().map(|step| step.pid);
        field(out, "DEADLOCK_PIDS", pid_list(pids).as_bytes());
        let mut json = Vec::new();
        write_array(&mut json, cycle, DeadlockStep::write_json);
        field(out, "LOCK_CYCLE", &json);
    }
    if let Some(lineage) = &event.lineage {
        let pids = lineage.iter().map(|step| step.pid);
        field(out, "LINEAGE_PIDS", pid_list(pids).as_bytes());
        let mut json = Vec::new();
        write_array(&mut json, lineage, LineageStep::write_json);
        field(out, "LOCK_LINEAGE", &json);
    }
    if let Some(from) = &event.from {
        number(out, "LOCK_FROM_PID", u64::from(from.pid));
        let mut json = Vec::new();
        from.write_json(&mut json);
        field(out, "LOCK_FROM", &json);
    }
    optional(out, "LOCK_VIA", event.via.map(|via| via.name()));
    optional_number(out, "AIMLOCK_LOST", event.lost);
    optional_number(out, "AIMLOCK_RECORDS", event.records);
    optional_number(out, "AIMLOCK_EVENTS", event.events);
    optional_number(out, "AIMLOCK_TABLE_READS", event.table_reads);
    optional_number(out, "AIMLOCK_UNWRITTEN", event.unwritten);
    optional_number(out, "AIMLOCK_UNTRACED_CHILDREN", event.untraced_children);
}

/// How a journal field's value stands for its line field's.
#[derive(Clone, Copy, Debug)]
pub enum Form {
    Text,
    Number,
    Bool,
    /// A number, or `EOF` for null (`end`).
    EndOfFile,
    /// The field's JSON (`holders`, `by`, `blockers`, `cycle`).
    Json,
}

impl Form {
    /// The line's value of a journal value; None where it cannot be one this form writes.
    pub fn value(self, text: &str) -> Option<serde_json::Value> {
        use serde_json::Value;
        match self {
            Self::Text => Some(Value::from(text)),
            Self::Number => text.parse::<u64>().ok().map(Value::from),
            Self::Bool => text.parse::<bool>().ok().map(Value::from),
            Self::EndOfFile if text == "EOF" => Some(Value::Null),
            Self::EndOfFile => Self::Number.value(text),
            Self::Json => serde_json::from_str(text).ok(),
        }
    }
}

/// A journal field that holds a field of the JSON line.
pub struct LineField {
    pub journal: &'static str,
    pub line: &'static str,
    pub form: Form,
}

const fn line_field(journal: &'static str, line: &'static str, form: Form) -> LineField {
    LineField {
        journal,
        line,
        form,
    }
}

/// Every journal field [`encode`] writes for a field of the line (the host aside: the journal's
/// `_HOSTNAME`), for reading an entry back as its line (`aimlock report` on `journalctl -o
/// json`); a unit test holds the two together.
pub const LINE_FIELDS: &[LineField] = &[
    line_field("LOCK_EVENT", "event", Form::Text),
    line_field("LOCK_TS", "ts", Form::Text),
    line_field("AIMLOCK_SCHEMA", "schema", Form::Number),
    line_field("AIMLOCK_VERSION", "version", Form::Text),
    line_field("AIMLOCK_KERNEL", "kernel", Form::Text),
    line_field("AIMLOCK_LOCK_HOOKS", "lock_hooks", Form::Text),
    line_field("LOCK_KIND", "kind", Form::Text),
    line_field("LOCK_MODE", "mode", Form::Text),
    line_field("LOCK_PATH", "path", Form::Text),
    line_field("LOCK_HOST_PATH", "host_path", Form::Text),
    line_field("LOCK_DELETED", "deleted", Form::Bool),
    line_field("LOCK_PATH_UNKNOWN", "path_unknown", Form::Text),
    line_field("LOCK_NAME", "name", Form::Text),
    line_field("LOCK_DEV", "dev", Form::Text),
    line_field("LOCK_INO", "ino", Form::Number),
    line_field("LOCK_GENERATION", "generation", Form::Number),
    line_field("LOCK_START", "start", Form::Number),
    line_field("LOCK_END", "end", Form::EndOfFile),
    line_field("LOCK_PID", "pid", Form::Number),
    line_field("LOCK_START_TIME", "start_time", Form::Number),
    line_field("LOCK_NS_PID", "ns_pid", Form::Number),
    line_field("LOCK_TID", "tid", Form::Number),
    line_field("LOCK_COMM", "comm", Form::Text),
    line_field("LOCK_CGROUP", "cgroup", Form::Text),
    line_field("LOCK_REASON", "reason", Form::Text),
    line_field("LOCK_ERRNO", "errno", Form::Text),
    line_field("LOCK_WAIT_NS", "wait_ns", Form::Number),
    line_field("LOCK_HELD_NS", "held_ns", Form::Number),
    line_field("LOCK_HOLDS", "holds", Form::Number),
    line_field("LOCK_LONGEST_NS", "longest_ns", Form::Number),
    line_field("LOCK_LOCKS", "locks", Form::Number),
    line_field("LOCK_ORPHAN", "orphan", Form::Bool),
    line_field("LOCK_ORPHAN_NS", "orphan_ns", Form::Number),
    line_field("LOCK_TAKER_EXIT", "taker_exit", Form::Text),
    line_field("LOCK_HOLDERS", "holders", Form::Json),
    line_field("LOCK_BY", "by", Form::Json),
    line_field("LOCK_BLOCKERS", "blockers", Form::Json),
    line_field("LOCK_CYCLE", "cycle", Form::Json),
    line_field("LOCK_LINEAGE", "lineage", Form::Json),
    line_field("LOCK_FROM", "from", Form::Json),
    line_field("LOCK_VIA", "via", Form::Text),
    line_field("AIMLOCK_LOST", "lost", Form::Number),
    line_field("AIMLOCK_RECORDS", "records", Form::Number),
    line_field("AIMLOCK_EVENTS", "events", Form::Number),
    line_field("AIMLOCK_TABLE_READS", "table_reads", Form::Number),
    line_field("AIMLOCK_UNWRITTEN", "unwritten", Form::Number),
    line_field(
        "AIMLOCK_UNTRACED_CHILDREN",
        "untraced_children",
        Form::Number,
    ),
];

/// The fields of the entry [`JournaldSink`] writes for `event`, as (name, value).
#[cfg(test)]
pub fn entry_fields(event: &EventLine) -> Vec<(String, Vec<u8>)> {
    let mut entry = Vec::new();
    encode(&mut entry, event, b"text");
    let mut fields = Vec::new();
    let mut rest = &entry[..];
    while let Some(end) = rest.iter().position(|&b| b == b'=' || b == b'\n') {
        let key = String::from_utf8(rest[..end].to_vec()).expect("ASCII names");
        let tail = &rest[end + 1..];
        let (value, next) = if rest[end] == b'=' {
            let len = tail.iter().position(|&b| b == b'\n').expect("a line");
            (&tail[..len], &tail[len + 1..])
        } else {
            let len = u64::from_le_bytes(tail[..8].try_into().expect("a length")) as usize;
            (&tail[8..8 + len], &tail[8 + len + 1..])
        };
        fields.push((key, value.to_vec()));
        rest = next;
    }
    fields
}

/// Comma-separated pids.
fn pid_list(pids: impl Iterator<Item = u32>) -> String {
    pids.map(|pid| pid.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn field(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    out.extend_from_slice(key.as_bytes());
    if value.contains(&b'\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn number(out: &mut Vec<u8>, key: &str, value: u64) {
    field(out, key, itoa::Buffer::new().format(value).as_bytes());
}

fn optional(out: &mut Vec<u8>, key: &str, value: Option<&str>) {
    if let Some(value) = value {
        field(out, key, value.as_bytes());
    }
}

fn optional_bool(out: &mut Vec<u8>, key: &str, value: Option<bool>) {
    if let Some(value) = value {
        field(out, key, if value { b"true" } else { b"false" });
    }
}

fn optional_number(out: &mut Vec<u8>, key: &str, value: Option<u64>) {
    if let Some(value) = value {
        number(out, key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field names of an encoded entry.
    fn keys(entry: &[u8]) -> Vec<String> {
        let mut keys = Vec::new();
        let mut rest = entry;
        while let Some(end) = rest.iter().position(|&b| b == b'=' || b == b'\n') {
            keys.push(String::from_utf8(rest[..end].to_vec()).unwrap());
            let tail = &rest[end + 1..];
            rest = if rest[end] == b'=' {
                &tail[tail.iter().position(|&b| b == b'\n').unwrap() + 1..]
            } else {
                let len = u64::from_le_bytes(tail[..8].try_into().unwrap()) as usize;
                &tail[8 + len + 1..]
            };
        }
        keys
    }

    #[test]
    fn every_field_of_the_line_has_its_own_journal_field() {
        let event = crate::events::every_field();
        let mut entry = Vec::new();
        encode(&mut entry, &event, b"text");
        let line = serde_json::to_value(&event).unwrap();
        // `host` is the journal's own _HOSTNAME; the rest of the entry's extra fields are the
        // text line, its priority and tag, and forms made for journalctl matches.
        let extra = [
            "MESSAGE",
            "PRIORITY",
            "SYSLOG_IDENTIFIER",
            "HOLDER_PIDS",
            "LOCK_BY_PID",
            "LOCK_BY_COMM",
            "BLOCKER_PIDS",
            "DEADLOCK_PIDS",
            "LINEAGE_PIDS",
            "LOCK_FROM_PID",
        ];
        let fields: Vec<String> = keys(&entry)
            .into_iter()
            .filter(|key| !extra.contains(&key.as_str()))
            .collect();
        assert_eq!(
            fields.len(),
            line.as_object().unwrap().len() - 1,
            "a field of the JSON line has no journal field: {fields:?} for {line}"
        );
    }

    #[test]
    fn a_value_with_a_newline_is_length_prefixed() {
        let mut out = Vec::new();
        field(&mut out, "LOCK_PATH", b"/tmp/a\nb");
        field(&mut out, "LOCK_KIND", b"flock");
        let mut expected = b"LOCK_PATH\n".to_vec();
        expected.extend_from_slice(&8u64.to_le_bytes());
        expected.extend_from_slice(b"/tmp/a\nb\nLOCK_KIND=flock\n");
        assert_eq!(out, expected);
    }
}
