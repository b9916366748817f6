//! The JSON-lines event schema: what `aimlock trace` writes and `aimlock report` reads.
//!
//! One flat struct serves every event type, with absent fields left out, so that a reader of
//! an older or newer schema can skip what it does not know. `docs/events.md` documents it.

use std::{borrow::Cow, sync::OnceLock};

use serde::{Deserialize, Serialize};

/// Version of this schema, carried by the `start` line. Bumped when a field changes meaning.
/// 2: every line names its `host` (the `start` line's `hostname` before).
pub const SCHEMA_VERSION: u32 = 2;

/// This machine's node name (uname), read once: every line the tracer writes names it, so that
/// lines stay attributable once a log shipper has split or merged the files of many hosts.
pub fn this_host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        nix::sys::utsname::uname()
            .map(|uts| uts.nodename().to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".to_owned())
    })
}

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
    /// A lock the kernel held when the tracer looked (at its start, or to reconcile after
    /// records were lost) that the tracer had not seen taken.
    Held,
    /// Threads that each wait for a lock the next one holds: none can go on.
    Deadlock,
    /// A process came to reference the open file description of a flock or OFD lock another
    /// process holds (a ghost being born).
    Inherit,
    /// Short holds of one file by one process within a second, each released by an explicit
    /// unlock with nobody waiting: counted, not written one by one.
    Summary,
    /// An event type from a newer schema.
    #[serde(other)]
    Unknown,
}

impl EventKind {
    /// Every event type, in the order declared.
    pub const ALL: [EventKind; 14] = [
        EventKind::Start,
        EventKind::Stop,
        EventKind::Acquire,
        EventKind::Wait,
        EventKind::Release,
        EventKind::Fail,
        EventKind::Exit,
        EventKind::Orphan,
        EventKind::OrphanEnd,
        EventKind::Held,
        EventKind::Deadlock,
        EventKind::Inherit,
        EventKind::Summary,
        EventKind::Unknown,
    ];
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

impl Mode {
    /// Every mode, in the order declared.
    pub const ALL: [Mode; 3] = [Mode::Read, Mode::Write, Mode::Unlock];
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
    /// The kernel no longer holds it, and no record the tracer received says how it ended:
    /// the ring lost it, or a lock held before the tracer started was released through a
    /// description the tracer could not tie to it.
    Lost,
}

impl ReleaseReason {
    /// Every reason, in the order declared.
    pub const ALL: [ReleaseReason; 5] = [
        ReleaseReason::Unlock,
        ReleaseReason::Close,
        ReleaseReason::Exit,
        ReleaseReason::Convert,
        ReleaseReason::Lost,
    ];
}

/// A process that still references an orphaned lock's open file description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRef {
    pub pid: u32,
    /// When it started: nanoseconds since boot (see `docs/events.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    pub comm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

/// A process holding a lock that a `wait` or `fail` conflicts with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocker {
    pub pid: u32,
    /// When it started: nanoseconds since boot (see `docs/events.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    pub comm: String,
    /// `true` when that lock has outlived its taker (`pid` is then one of its holders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphan: Option<bool>,
}

/// A lock named inside another event (a deadlock's steps).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRef {
    pub kind: LockKind,
    pub mode: Mode,
    pub dev: String,
    pub ino: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub start: u64,
    /// `null`: to the end of the file.
    pub end: Option<u64>,
}

/// How a process came to reference an open file description.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// Inherited from the parent that forked it.
    Fork,
    /// Kept across an exec (its descriptor had no close-on-exec).
    Exec,
    /// Received as SCM_RIGHTS over a unix socket.
    UnixSocket,
    /// The tracer could not see how (`why` says why).
    Unknown,
}

/// Why a lineage step is `unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownWhy {
    /// The lock and its holder were there before the tracer started.
    BeforeStart,
    /// The holder got the description in a way the tracer did not see (before it followed
    /// the process, or through a path it does not trace).
    NotSeen,
}

/// One step of an orphan's lineage: `pid`, then named `comm`, got the lock's description from
/// `from` (its parent for a fork, itself for an exec, the sender over a socket).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineageStep {
    pub pid: u32,
    pub comm: String,
    pub via: Via,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<UnknownWhy>,
}

/// One process of a deadlock: it holds what the step before it waits for, and waits for what
/// the step after it holds (the last step's, the first's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadlockStep {
    pub pid: u32,
    /// When it started: nanoseconds since boot (see `docs/events.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    pub tid: u32,
    pub comm: String,
    pub holds: LockRef,
    pub waits_for: LockRef,
}

/// One line of the log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventLine {
    pub event: Option<EventKind>,
    /// RFC 3339, UTC, nanoseconds.
    pub ts: String,
    /// The node name of the machine the tracer ran on; on every line. Borrowed from
    /// [`this_host`] when written, so that naming it costs no allocation per event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Cow<'static, str>>,

    // `start` and `stop`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// `start`: how the lock hooks run (`btf`, `classic` or `mixed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_hooks: Option<String>,
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
    /// `stop`: reads of the kernel's lock table (at start, after lost records, for orphans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_reads: Option<u64>,
    /// `stop`, with `--pid`: processes started by traced processes that the full filter could
    /// not take, and so were not traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untraced_children: Option<u64>,

    // The process the event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When that process started: nanoseconds since boot, to the clock tick (see
    /// `docs/events.md`); with `pid`, one process even where its pid is later reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
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
    /// The inode's generation: tells the file from a later one that reuses its number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The path on the tracer's host, where the process sees the file elsewhere (a container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    /// Why `path` is absent ("process gone", ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_unknown: Option<String>,
    /// The file's name (its last path component), when `path` is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
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
    /// `summary`: the holds' durations, summed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_ns: Option<u64>,
    /// `summary`: how many holds it counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holds: Option<u64>,
    /// `summary`: the longest of its holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ReleaseReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    /// `exit`: locks the process had taken and still held when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locks: Option<u64>,
    /// `orphan` and `held`: live processes that reference the lock's open file description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holders: Option<Vec<ProcRef>>,
    /// `held`: true when the lock has outlived its taker (an `orphan` line follows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphan: Option<bool>,
    /// `orphan_end`: the process whose unlock, close or exit released the orphan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<ProcRef>,
    /// `orphan_end`: how long the lock outlived its taker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphan_ns: Option<u64>,
    /// `orphan` and `orphan_end`: when the taker exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taker_exit: Option<String>,
    /// `wait` and `fail`: the processes holding a conflicting lock at that moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blockers: Option<Vec<Blocker>>,
    /// `deadlock`: the processes that wait on each other, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle: Option<Vec<DeadlockStep>>,
    /// `orphan`: how its holders came to hold it, step by step from its taker on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<Vec<LineageStep>>,
    /// `inherit`: the process the description came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<ProcRef>,
    /// `inherit`: how it came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Via>,
}

/// The names serde gives these enums' variants, for the fast writer below.
macro_rules! wire_names {
    ($($ty:ty { $($variant:ident => $name:literal),+ $(,)? })+) => {
        $(impl $ty {
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }
        })+
    };
}

wire_names! {
    EventKind {
        Start => "start", Stop => "stop", Acquire => "acquire", Wait => "wait",
        Release => "release", Fail => "fail", Exit => "exit", Orphan => "orphan",
        OrphanEnd => "orphan_end", Held => "held", Deadlock => "deadlock", Inherit => "inherit",
        Summary => "summary", Unknown => "unknown",
    }
    Via { Fork => "fork", Exec => "exec", UnixSocket => "unix-socket", Unknown => "unknown" }
    UnknownWhy { BeforeStart => "before_start", NotSeen => "not_seen" }
    LockKind { Flock => "flock", Posix => "posix", Ofd => "ofd", Lease => "lease" }
    Mode { Read => "read", Write => "write", Unlock => "unlock" }
    ReleaseReason {
        Unlock => "unlock", Close => "close", Exit => "exit", Convert => "convert", Lost => "lost",
    }
}

impl EventLine {
    /// Appends the line as JSON: exactly what serde_json writes for it (a test holds the two
    /// together), several times faster, since the tracer writes one per lock event.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut object = JsonObject::start(out);
        match self.event {
            Some(event) => object.plain("event", event.name()),
            None => object.raw("event", "null"),
        }
        object.plain("ts", &self.ts);
        object.opt_str("host", self.host.as_deref());
        object.opt_u64("schema", self.schema.map(u64::from));
        object.opt_str("version", self.version.as_deref());
        object.opt_str("kernel", self.kernel.as_deref());
        object.opt_str("lock_hooks", self.lock_hooks.as_deref());
        object.opt_u64("lost", self.lost);
        object.opt_u64("unwritten", self.unwritten);
        object.opt_u64("records", self.records);
        object.opt_u64("events", self.events);
        object.opt_u64("table_reads", self.table_reads);
        object.opt_u64("untraced_children", self.untraced_children);
        object.opt_u64("pid", self.pid.map(u64::from));
        object.opt_u64("start_time", self.start_time);
        object.opt_u64("ns_pid", self.ns_pid.map(u64::from));
        object.opt_u64("tid", self.tid.map(u64::from));
        object.opt_str("comm", self.comm.as_deref());
        object.opt_str("cgroup", self.cgroup.as_deref());
        object.opt_plain("kind", self.kind.map(LockKind::name));
        object.opt_plain("mode", self.mode.map(Mode::name));
        object.opt_str("dev", self.dev.as_deref());
        object.opt_u64("ino", self.ino);
        object.opt_u64("generation", self.generation.map(u64::from));
        object.opt_str("path", self.path.as_deref());
        object.opt_str("host_path", self.host_path.as_deref());
        if let Some(deleted) = self.deleted {
            object.raw("deleted", if deleted { "true" } else { "false" });
        }
        object.opt_str("path_unknown", self.path_unknown.as_deref());
        object.opt_str("name", self.name.as_deref());
        object.opt_u64("start", self.start);
        match self.end {
            Some(Some(end)) => object.opt_u64("end", Some(end)),
            Some(None) => object.raw("end", "null"),
            None => {}
        }
        object.opt_u64("wait_ns", self.wait_ns);
        object.opt_u64("held_ns", self.held_ns);
        object.opt_u64("holds", self.holds);
        object.opt_u64("longest_ns", self.longest_ns);
        object.opt_plain("reason", self.reason.map(ReleaseReason::name));
        object.opt_str("errno", self.errno.as_deref());
        object.opt_u64("locks", self.locks);
        if let Some(holders) = &self.holders {
            object.key("holders");
            write_array(object.out, holders, ProcRef::write_json);
        }
        if let Some(orphan) = self.orphan {
            object.raw("orphan", if orphan { "true" } else { "false" });
        }
        if let Some(by) = &self.by {
            object.key("by");
            by.write_json(object.out);
        }
        object.opt_u64("orphan_ns", self.orphan_ns);
        object.opt_str("taker_exit", self.taker_exit.as_deref());
        if let Some(blockers) = &self.blockers {
            object.key("blockers");
            write_array(object.out, blockers, Blocker::write_json);
        }
        if let Some(cycle) = &self.cycle {
            object.key("cycle");
            write_array(object.out, cycle, DeadlockStep::write_json);
        }
        if let Some(lineage) = &self.lineage {
            object.key("lineage");
            write_array(object.out, lineage, LineageStep::write_json);
        }
        if let Some(from) = &self.from {
            object.key("from");
            from.write_json(object.out);
        }
        object.opt_plain("via", self.via.map(Via::name));
        object.end();
    }
}

impl LineageStep {
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut object = JsonObject::start(out);
        object.opt_u64("pid", Some(u64::from(self.pid)));
        object.str("comm", &self.comm);
        object.plain("via", self.via.name());
        object.opt_u64("from", self.from.map(u64::from));
        object.opt_str("ts", self.ts.as_deref());
        object.opt_plain("why", self.why.map(UnknownWhy::name));
        object.end();
    }
}

/// A JSON array of `items`, each written by `write`.
pub fn write_array<T>(out: &mut Vec<u8>, items: &[T], write: fn(&T, &mut Vec<u8>)) {
    out.push(b'[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write(item, out);
    }
    out.push(b']');
}

impl Blocker {
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut object = JsonObject::start(out);
        object.opt_u64("pid", Some(u64::from(self.pid)));
        object.opt_u64("start_time", self.start_time);
        object.str("comm", &self.comm);
        if let Some(orphan) = self.orphan {
            object.raw("orphan", if orphan { "true" } else { "false" });
        }
        object.end();
    }
}

impl LockRef {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut object = JsonObject::start(out);
        object.plain("kind", self.kind.name());
        object.plain("mode", self.mode.name());
        object.str("dev", &self.dev);
        object.opt_u64("ino", Some(self.ino));
        object.opt_str("path", self.path.as_deref());
        object.opt_u64("start", Some(self.start));
        match self.end {
            Some(end) => object.opt_u64("end", Some(end)),
            None => object.raw("end", "null"),
        }
        object.end();
    }
}

impl DeadlockStep {
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut object = JsonObject::start(out);
        object.opt_u64("pid", Some(u64::from(self.pid)));
        object.opt_u64("start_time", self.start_time);
        object.opt_u64("tid", Some(u64::from(self.tid)));
        object.str("comm", &self.comm);
        object.key("holds");
        self.holds.write_json(object.out);
        object.key("waits_for");
        self.waits_for.write_json(object.out);
        object.end();
    }
}

impl ProcRef {
    /// Appends the process as JSON, as it appears in a line's `holders` and `by`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut object = JsonObject::start(out);
        object.opt_u64("pid", Some(u64::from(self.pid)));
        object.opt_u64("start_time", self.start_time);
        object.str("comm", &self.comm);
        object.opt_u64("ns_pid", self.ns_pid.map(u64::from));
        if let Some(fd) = self.fd {
            object.key("fd");
            object
                .out
                .extend_from_slice(itoa::Buffer::new().format(fd).as_bytes());
        }
        object.opt_str("cgroup", self.cgroup.as_deref());
        object.end();
    }
}

struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> JsonObject<'a> {
    fn start(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, empty: true }
    }

    fn end(self) {
        self.out.push(b'}');
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A string of this program's own making that needs no escape (a name, a timestamp).
    fn plain(&mut self, key: &str, value: &str) {
        self.key(key);
        self.out.push(b'"');
        self.out.extend_from_slice(value.as_bytes());
        self.out.push(b'"');
    }

    fn opt_plain(&mut self, key: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.plain(key, value);
        }
    }

    fn raw(&mut self, key: &str, value: &str) {
        self.key(key);
        self.out.extend_from_slice(value.as_bytes());
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        write_json_string(self.out, value);
    }

    fn opt_str(&mut self, key: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.str(key, value);
        }
    }

    fn opt_u64(&mut self, key: &str, value: Option<u64>) {
        if let Some(value) = value {
            self.key(key);
            self.out
                .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        }
    }
}

/// A JSON string, escaped as serde_json escapes it.
fn write_json_string(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    let bytes = value.as_bytes();
    // Almost every string needs no escape; this test vectorizes, the loop below does not.
    let needs_escape = bytes.iter().fold(false, |found, &b| {
        found | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !needs_escape {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut clean_from = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean_from..index]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        clean_from = index + 1;
    }
    out.extend_from_slice(&bytes[clean_from..]);
    out.push(b'"');
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

/// A line with every field set, with values that need escaping: for the writers' tests.
#[cfg(test)]
pub fn every_field() -> EventLine {
    let holder = ProcRef {
        pid: 840,
        start_time: Some(1_230_000_000),
        comm: "sle\"ep\\\u{1}\n".to_owned(),
        ns_pid: Some(3),
        fd: Some(-1),
        cgroup: Some("/ctr".to_owned()),
    };
    EventLine {
        event: Some(EventKind::OrphanEnd),
        ts: "2026-11-27T05:04:50.602120982Z".to_owned(),
        schema: Some(1),
        version: Some("0.1.0".to_owned()),
        host: Some("h\u{7f}é".into()),
        kernel: Some("6.18".to_owned()),
        lock_hooks: Some("btf".to_owned()),
        lost: Some(1),
        unwritten: Some(2),
        records: Some(3),
        events: Some(4),
        table_reads: Some(14),
        untraced_children: Some(15),
        pid: Some(5),
        start_time: Some(7_890_000_000),
        ns_pid: Some(6),
        tid: Some(7),
        comm: Some("comm\t".to_owned()),
        cgroup: Some("/a/b".to_owned()),
        kind: Some(LockKind::Ofd),
        mode: Some(Mode::Read),
        dev: Some("8:1".to_owned()),
        ino: Some(u64::MAX),
        generation: Some(u32::MAX),
        path: Some("/tmp/x (deleted)".to_owned()),
        host_path: Some("/srv/c/tmp/x".to_owned()),
        deleted: Some(false),
        path_unknown: Some("process gone".to_owned()),
        name: Some("x\"y".to_owned()),
        start: Some(0),
        end: Some(Some(9)),
        wait_ns: Some(10),
        held_ns: Some(11),
        holds: Some(12),
        longest_ns: Some(13),
        reason: Some(ReleaseReason::Convert),
        errno: Some("EAGAIN".to_owned()),
        locks: Some(12),
        holders: Some(vec![holder.clone(), holder.clone()]),
        orphan: Some(true),
        by: Some(holder),
        orphan_ns: Some(13),
        taker_exit: Some("t".to_owned()),
        blockers: Some(vec![
            Blocker {
                pid: 812,
                start_time: Some(4_560_000_000),
                comm: "python3".to_owned(),
                orphan: Some(true),
            },
            Blocker {
                pid: 9,
                start_time: None,
                comm: "a\"b".to_owned(),
                orphan: None,
            },
        ]),
        cycle: Some(vec![DeadlockStep {
            pid: 1,
            start_time: Some(2_000_000_000),
            tid: 2,
            comm: "x\n".to_owned(),
            holds: LockRef {
                kind: LockKind::Flock,
                mode: Mode::Write,
                dev: "8:1".to_owned(),
                ino: 3,
                path: Some("/tmp/\"a".to_owned()),
                start: 0,
                end: None,
            },
            waits_for: LockRef {
                kind: LockKind::Ofd,
                mode: Mode::Read,
                dev: "8:1".to_owned(),
                ino: 4,
                path: None,
                start: 5,
                end: Some(6),
            },
        }]),
        lineage: Some(vec![
            LineageStep {
                pid: 101,
                comm: "s\"h".to_owned(),
                via: Via::Fork,
                from: Some(100),
                ts: Some("t".to_owned()),
                why: None,
            },
            LineageStep {
                pid: 102,
                comm: "sleep".to_owned(),
                via: Via::Unknown,
                from: None,
                ts: None,
                why: Some(UnknownWhy::BeforeStart),
            },
        ]),
        from: Some(ProcRef {
            pid: 100,
            start_time: None,
            comm: "flock".to_owned(),
            ns_pid: None,
            fd: None,
            cgroup: None,
        }),
        via: Some(Via::UnixSocket),
    }
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
    fn the_fast_writer_writes_what_serde_writes() {
        let full = every_field();
        let lines = [
            full.clone(),
            EventLine::default(),
            EventLine {
                end: Some(None),
                deleted: Some(true),
                holders: Some(Vec::new()),
                blockers: Some(Vec::new()),
                cycle: Some(Vec::new()),
                ..EventLine::default()
            },
        ];
        for line in lines {
            let mut fast = Vec::new();
            line.write_json(&mut fast);
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                serde_json::to_string(&line).unwrap()
            );
        }
        for kind in [
            EventKind::Start,
            EventKind::Unknown,
            EventKind::Wait,
            EventKind::Held,
            EventKind::Deadlock,
            EventKind::Inherit,
            EventKind::Summary,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.name());
        }
        for via in [Via::Fork, Via::Exec, Via::UnixSocket, Via::Unknown] {
            assert_eq!(serde_json::to_value(via).unwrap(), via.name());
        }
        for why in [UnknownWhy::BeforeStart, UnknownWhy::NotSeen] {
            assert_eq!(serde_json::to_value(why).unwrap(), why.name());
        }
        for kind in [LockKind::Flock, LockKind::Posix, LockKind::Lease] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.name());
        }
        for mode in [Mode::Write, Mode::Unlock] {
            assert_eq!(serde_json::to_value(mode).unwrap(), mode.name());
        }
        for reason in [
            ReleaseReason::Unlock,
            ReleaseReason::Close,
            ReleaseReason::Exit,
            ReleaseReason::Lost,
        ] {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.name());
        }
    }

    #[test]
    fn unknown_event_types_and_fields_are_tolerated() {
        let line = r#"{"event":"teleport","ts":"2026-01-01T00:00:00Z","warp":9}"#;
        let parsed: EventLine = serde_json::from_str(line).unwrap();
        assert_eq!(parsed.event, Some(EventKind::Unknown));
    }
}
