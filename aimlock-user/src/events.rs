//! The JSON-lines event schema: what `aimlock trace` writes and `aimlock report` reads.
//!
//! One flat struct serves every event type, with absent fields left out, so that a reader of
//! an older or newer schema can skip what it does not know. `docs/events.md` documents it.

use serde::{Deserialize, Serialize};

/// Version of this schema, carried by the `start` line. Bumped when a field changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Start,
    Stop,
    Acquire,
    Wait,
    Release,
    Fail,
    Exit,
    Orphan,
    OrphanEnd,
    /// An event type from a newer schema.
    #[serde(other)]
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockKind {
    Flock,
    Posix,
    Ofd,
    Lease,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Read,
    Write,
    Unlock,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// LOCK_UN or F_UNLCK.
    Unlock,
    /// A close() (the last close of the description, for flock and OFD locks).
    Close,
    /// The closes done by the exit of the releasing process.
    Exit,
    /// A flock or POSIX conversion (upgrade or downgrade) replaced this lock or part of it.
    Convert,
}

/// A process that still references an orphaned lock's open file description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRef {
    pub pid: u32,
    pub comm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

/// One line of the log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventLine {
    pub event: Option<EventKind>,
    /// RFC 3339, UTC, nanoseconds.
    pub ts: String,

    // `start` and `stop`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `stop`: records the kernel could not deliver (ring full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    /// `stop`: lines that could not be written to a sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unwritten: Option<u64>,
    /// `stop`: records received from the kernel (with `lost`, every record the kernel made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    /// `stop`: lock events written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,

    // The process the event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,

    // The lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<LockKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// "MAJ:MIN" of the file system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    /// First byte of the range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    /// Last byte of the range; null means to end of file. Absent when the event has no range.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "nullable_field"
    )]
    pub end: Option<Option<u64>>,

    // What happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ReleaseReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    /// `exit`: locks the process had taken and still held when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locks: Option<u64>,
    /// `orphan`: live processes that still reference the lock's open file description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holders: Option<Vec<ProcRef>>,
    /// `orphan_end`: the process whose unlock, close or exit released the orphan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<ProcRef>,
    /// `orphan_end`: how long the lock outlived its taker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphan_ns: Option<u64>,
    /// `orphan` and `orphan_end`: when the taker exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taker_exit: Option<String>,
}

/// Serializes `Some(None)` as `null` and reads `null` back as `Some(None)`, so that "to end of
/// file" and "no range" stay apart.
mod nullable_field {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(
        value: &Option<Option<T>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(deserializer).map(Some)
    }
}

/// Formats a wall-clock time as RFC 3339, UTC, with nanoseconds.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_nanos(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_of_file_is_null_and_absent_range_is_absent() {
        let eof = EventLine {
            event: Some(EventKind::Acquire),
            end: Some(None),
            ..Default::default()
        };
        let json = serde_json::to_string(&eof).unwrap();
        assert!(json.contains("\"end\":null"), "{json}");
        assert_eq!(
            serde_json::from_str::<EventLine>(&json).unwrap().end,
            Some(None)
        );

        let no_range = EventLine {
            event: Some(EventKind::Exit),
            ..Default::default()
        };
        let json = serde_json::to_string(&no_range).unwrap();
        assert!(!json.contains("end"), "{json}");
        assert_eq!(serde_json::from_str::<EventLine>(&json).unwrap().end, None);
    }

    #[test]
    fn unknown_event_types_and_fields_are_tolerated() {
        let line = r#"{"event":"teleport","ts":"2026-01-01T00:00:00Z","warp":9}"#;
        let parsed: EventLine = serde_json::from_str(line).unwrap();
        assert_eq!(parsed.event, Some(EventKind::Unknown));
    }
}
