//! One log line, read with borrowed fields, and the compact record kept of it.

use std::{
    borrow::Cow,
    cell::Cell,
    time::{SystemTime, UNIX_EPOCH},
};

use hashbrown::HashTable;
use serde::Deserialize;

use super::fast;
use crate::events::{EventKind, LockKind, Mode, ReleaseReason};

/// Nanoseconds since the Unix epoch.
pub type Nanos = u64;

/// A borrowed view of an `EventLine`: only the fields the report uses, so that parsing a line
/// allocates nothing but the lists of holders. Unknown fields are ignored.
#[derive(Debug, PartialEq, Deserialize)]
pub struct RawLine<'a> {
    pub event: Option<EventKind>,
    pub ts: &'a str,
    #[serde(borrow)]
    pub host: Option<Cow<'a, str>>,
    pub pid: Option<u32>,
    pub start_time: Option<u64>,
    pub ns_pid: Option<u32>,
    #[serde(borrow)]
    pub comm: Option<Cow<'a, str>>,
    pub kind: Option<LockKind>,
    pub mode: Option<Mode>,
    pub dev: Option<&'a str>,
    pub ino: Option<u64>,
    #[serde(borrow)]
    pub path: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub host_path: Option<Cow<'a, str>>,
    pub start: Option<u64>,
    pub end: Option<u64>,
    pub wait_ns: Option<u64>,
    pub held_ns: Option<u64>,
    pub orphan_ns: Option<u64>,
    pub reason: Option<ReleaseReason>,
    #[serde(borrow)]
    pub errno: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub holders: Option<Vec<RawProc<'a>>>,
    #[serde(borrow)]
    pub by: Option<RawProc<'a>>,
    pub taker_exit: Option<&'a str>,
    pub orphan: Option<bool>,
    pub generation: Option<u32>,
}

impl RawLine<'_> {
    /// A line with no field, for [`fast::raw_line_into`] to fill.
    pub fn empty() -> Self {
        Self {
            event: None,
            ts: "",
            host: None,
            pid: None,
            start_time: None,
            ns_pid: None,
            comm: None,
            kind: None,
            mode: None,
            dev: None,
            ino: None,
            path: None,
            host_path: None,
            start: None,
            end: None,
            wait_ns: None,
            held_ns: None,
            orphan_ns: None,
            reason: None,
            errno: None,
            holders: None,
            by: None,
            taker_exit: None,
            orphan: None,
            generation: None,
        }
    }
}

#[derive(Debug, PartialEq, Deserialize)]
pub struct RawProc<'a> {
    pub pid: u32,
    pub start_time: Option<u64>,
    pub ns_pid: Option<u32>,
    #[serde(borrow)]
    pub comm: Cow<'a, str>,
}

/// Reads an RFC 3339 UTC timestamp as written by the tracer.
pub fn parse_ts(text: &str) -> Option<Nanos> {
    if let Some(at) = tracer_ts(text.as_bytes()) {
        return Some(at);
    }
    let time = humantime::parse_rfc3339(text).ok()?;
    Some(nanos(time))
}

/// The tracer's own form, `2026-11-27T05:04:50.603984745Z`, read without a general parser:
/// every line has one. None for anything else (which the general parser then reads or
/// rejects). Lines come in time order, many to a minute: the seconds since the epoch at the
/// start of the last minute read are kept, and a time in the same minute only reads its
/// seconds and fraction.
fn tracer_ts(text: &[u8]) -> Option<Nanos> {
    thread_local! {
        /// The last minute read (`2026-11-27T05:04`, as one number), and its seconds.
        static LAST_MINUTE: Cell<Option<(u128, u64)>> = const { Cell::new(None) };
    }
    let (minute, rest) = text.split_first_chunk::<16>()?;
    let key = u128::from_le_bytes(*minute);
    let minute_seconds = match LAST_MINUTE.get() {
        Some((known, seconds)) if known == key => seconds,
        _ => {
            let seconds = minute_seconds(minute)?;
            LAST_MINUTE.set(Some((key, seconds)));
            seconds
        }
    };
    let &[b':', s0, s1, b'.', ref rest @ ..] = rest else {
        return None;
    };
    let (&b'Z', fraction) = rest.split_last()? else {
        return None;
    };
    if fraction.is_empty() || fraction.len() > 9 {
        return None;
    }
    let second = digits(&[s0, s1])?;
    if second > 59 {
        return None;
    }
    let nanos = match fraction.split_first_chunk::<8>() {
        // The tracer's own nine digits.
        Some((first, &[last])) => eight_digits(first)? * 10 + digits(&[last])?,
        _ => digits(fraction)? * 10u64.pow(9 - fraction.len() as u32),
    };
    (minute_seconds + second)
        .checked_mul(1_000_000_000)?
        .checked_add(nanos)
}

/// `2026-11-27T05:04`: the seconds from the epoch to that minute.
fn minute_seconds(minute: &[u8; 16]) -> Option<u64> {
    let &[
        y0,
        y1,
        y2,
        y3,
        b'-',
        m0,
        m1,
        b'-',
        d0,
        d1,
        b'T',
        h0,
        h1,
        b':',
        i0,
        i1,
    ] = minute
    else {
        return None;
    };
    let year = digits(&[y0, y1, y2, y3])?;
    let month = digits(&[m0, m1])?;
    let day = digits(&[d0, d1])?;
    let (hour, minute) = (digits(&[h0, h1])?, digits(&[i0, i1])?);
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if year < 1970 || day == 0 || day > month_days || hour > 23 || minute > 59 {
        return None;
    }
    // Days since the epoch of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = (era * 146_097 + day_of_era).checked_sub(719_468)?;
    Some(days * 86_400 + hour * 3600 + minute * 60)
}

/// Eight decimal digits, read as one word (the steps of Lemire's "Faster parsing of
/// integers").
fn eight_digits(bytes: &[u8; 8]) -> Option<u64> {
    use fast::ONES;
    let word = u64::from_le_bytes(*bytes);
    // Each byte is 0x30 to 0x39: its high half 3, and adding 6 leaves it 3.
    let high = ONES * 0xf0;
    if (word & high) | ((word.wrapping_add(ONES * 0x06) & high) >> 4) != ONES * 0x33 {
        return None;
    }
    Some(eight_digits_value(word))
}

/// The number of a little-endian word of eight ASCII digits, the first in its lowest byte.
#[inline]
pub(super) fn eight_digits_value(word: u64) -> u64 {
    use fast::ONES;
    // Pairs of digits, then fours, then the eight.
    let value = word - ONES * u64::from(b'0');
    let value = value.wrapping_mul(10).wrapping_add(value >> 8);
    let pairs = 0x0000_00ff_0000_00ff;
    ((value & pairs)
        .wrapping_mul(100 + (1_000_000 << 32))
        .wrapping_add(((value >> 16) & pairs).wrapping_mul(1 + (10_000 << 32))))
        >> 32
}

/// Decimal digits, and nothing else.
fn digits(bytes: &[u8]) -> Option<u64> {
    bytes.iter().try_fold(0u64, |value, &byte| {
        byte.is_ascii_digit()
            .then(|| value * 10 + u64::from(byte - b'0'))
    })
}

pub fn nanos(time: SystemTime) -> Nanos {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos().min(u128::from(u64::MAX)) as u64)
}

/// A path a line named a file by, and the host's path of the file where the line gave one (the
/// file seen through a container's mounts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeenPath {
    pub path: Name,
    pub host: Option<Name>,
}

/// The paths a lock was seen under: nearly always one, kept inline (a lock's lines are added
/// to thousands of locks in turn, and a look at a list elsewhere in memory costs each).
pub type Paths = smallvec::SmallVec<[SeenPath; 1]>;

impl SeenPath {
    /// Whether `paths` lacks this one; a host's path it gives is filled in where a line of the
    /// same path did not give it.
    pub fn is_new_in(self, paths: &mut [SeenPath]) -> bool {
        let same = paths.iter_mut().find(|known| {
            known.path == self.path
                && (known.host == self.host || known.host.is_none() || self.host.is_none())
        });
        match same {
            Some(known) => {
                known.host = known.host.or(self.host);
                false
            }
            None => true,
        }
    }
}

/// An interned string (a command name, a device, an errno, a path).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Name(u32);

/// The strings of a log, each stored once: a busy log repeats a few names millions of times.
/// They are kept end to end in one buffer, so that a new string costs no allocation of its own
/// (a piece of a log meets thousands of paths).
#[derive(Debug, Default)]
pub struct Names {
    /// Every string, end to end.
    text: String,
    /// Where each name's string ends in `text`; it starts where the one before ends.
    ends: Vec<usize>,
    /// The names, found by their strings' hashes, each with where its string is: a look-up
    /// compares strings without a look at `ends` first (thousands of paths do not stay in the
    /// cache).
    ids: HashTable<Interned>,
}

#[derive(Debug)]
struct Interned {
    name: Name,
    len: u32,
    start: usize,
}

impl Interned {
    fn text<'a>(&self, text: &'a str) -> &'a [u8] {
        &text.as_bytes()[self.start..self.start + self.len as usize]
    }
}

impl Names {
    pub fn intern(&mut self, text: &str) -> Name {
        let hash = hash_str(text);
        let Self {
            text: all,
            ends,
            ids,
        } = self;
        if let Some(known) = ids.find(hash, |known| known.text(all) == text.as_bytes()) {
            return known.name;
        }
        let name = Name(ends.len() as u32);
        let start = all.len();
        all.push_str(text);
        ends.push(all.len());
        let len = u32::try_from(text.len()).expect("a name is shorter than 4 GiB");
        ids.insert_unique(hash, Interned { name, len, start }, |known| {
            hash_bytes(known.text(all))
        });
        name
    }

    /// The name of a string the logs hold, without storing it.
    pub fn find(&self, text: &str) -> Option<Name> {
        self.ids
            .find(hash_str(text), |known| {
                known.text(&self.text) == text.as_bytes()
            })
            .map(|known| known.name)
    }

    pub fn get(&self, name: Name) -> &str {
        let index = name.0 as usize;
        let start = index.checked_sub(1).map_or(0, |before| self.ends[before]);
        &self.text[start..self.ends[index]]
    }

    /// Forgets every string, keeping the room they took.
    pub fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
        self.ids.clear();
    }

    /// Stores `other`'s strings too; returns what each of `other`'s names is here, by
    /// [`Name::index`].
    pub fn absorb(&mut self, other: &Names) -> Vec<Name> {
        (0..other.ends.len() as u32)
            .map(|index| self.intern(other.get(Name(index))))
            .collect()
    }
}

fn hash_str(text: &str) -> u64 {
    hash_bytes(text.as_bytes())
}

fn hash_bytes(bytes: &[u8]) -> u64 {
    use std::hash::BuildHasher as _;
    rustc_hash::FxBuildHasher.hash_one(bytes)
}

impl Name {
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The name of this index in the same table (as [`Name::index`] gave it).
    pub const fn from_index(index: u32) -> Self {
        Self(index)
    }
}

/// Bytes of a file, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteRange {
    pub start: u64,
    /// `EOF`: to the end of the file (and beyond).
    pub end: u64,
}

impl ByteRange {
    pub const EOF: u64 = u64::MAX;
    pub const WHOLE_FILE: Self = Self {
        start: 0,
        end: Self::EOF,
    };

    /// A range as the log writes it: `end` null means to the end of the file.
    pub fn from_log(start: u64, end: Option<u64>) -> Self {
        Self {
            start,
            end: end.unwrap_or(Self::EOF).max(start),
        }
    }

    /// The `end` the log would write.
    pub fn logged_end(self) -> Option<u64> {
        (self.end != Self::EOF).then_some(self.end)
    }

    pub fn overlaps(self, other: Self) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    pub fn intersection(self, other: Self) -> Option<Self> {
        self.overlaps(other).then(|| Self {
            start: self.start.max(other.start),
            end: self.end.min(other.end),
        })
    }

    /// Whether `next` starts right after this range ends.
    pub fn touches(self, next: Self) -> bool {
        self.end != Self::EOF && self.end + 1 == next.start
    }
}

/// flock locks and leases cover the whole file.
impl Default for ByteRange {
    fn default() -> Self {
        Self::WHOLE_FILE
    }
}

/// Which lock a line is about: the log's lock identity. POSIX lines are grouped by file (their
/// ranges merge and split as the kernel's do); other locks are identified by their range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LockKey {
    /// The host whose log it is: the same device and inode on two hosts are two files. The
    /// empty name for lines that do not say (logs of one host, or older ones).
    pub host: Name,
    pub dev: Name,
    pub ino: u64,
    /// The inode's generation: a file that reuses a deleted one's inode number is another lock
    /// file. 0 where the line does not say.
    pub generation: u32,
    pub kind: LockKind,
    pub range: ByteRange,
}

#[derive(Clone, Copy, Debug, Eq)]
pub struct Actor {
    pub pid: u32,
    pub comm: Name,
    /// When it started (nanoseconds since boot), when a line gave it: two processes that had
    /// the same pid one after the other are two actors.
    pub start_time: Option<u64>,
    /// Its pid in its own PID namespace (a container's), when a line gave it.
    pub ns_pid: Option<u32>,
}

/// One process is one pid, start time and command: lines about it may or may not carry its
/// `ns_pid`.
impl PartialEq for Actor {
    fn eq(&self, other: &Self) -> bool {
        (self.pid, self.start_time, self.comm) == (other.pid, other.start_time, other.comm)
    }
}

impl std::hash::Hash for Actor {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.pid, self.start_time, self.comm).hash(state);
    }
}

/// Where a line came from, to keep lines with equal timestamps in log order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub source: u32,
    pub line: u64,
}

/// What the report keeps of one lock line.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub at: Nanos,
    pub origin: Origin,
    pub event: EventKind,
    pub actor: Actor,
    pub mode: Option<Mode>,
    /// The bytes the line names: requested, granted or released.
    pub range: ByteRange,
    pub reason: Option<ReleaseReason>,
    /// `wait_ns` of an acquire; `held_ns` of a release or an orphan_end.
    pub duration_ns: Option<u64>,
    pub taker_exit: Option<Nanos>,
    pub errno: Option<Name>,
    /// An orphan's or a held lock's holders, or the one process that released an orphan.
    pub others: Box<[Actor]>,
    /// A `held` line's lock had outlived its taker.
    pub orphan: bool,
}

/// What a parsed line is.
pub enum Parsed {
    Lock(LockKey, Option<SeenPath>, Record),
    /// A process exited: its POSIX locks are gone once its files are closed.
    Exit(Exit),
    /// `start`, `stop`: only their time matters here.
    Other(Nanos),
    UnknownEvent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    pub host: Name,
    pub at: Nanos,
    pub origin: Origin,
    pub actor: Actor,
}

/// Every process exit, by host and pid (in file order for each).
#[derive(Debug, Default)]
pub struct Exits(Vec<Exit>);

impl Exits {
    pub fn new(mut exits: Vec<Exit>) -> Self {
        exits.sort_by_key(|exit| (exit.host.index(), exit.actor.pid));
        Self(exits)
    }

    /// The exits of a pid on a host.
    pub fn of(&self, host: Name, pid: u32) -> &[Exit] {
        let process = |exit: &Exit| (exit.host.index(), exit.actor.pid);
        let asked = (host.index(), pid);
        let start = self.0.partition_point(|exit| process(exit) < asked);
        let len = self.0[start..].partition_point(|exit| process(exit) == asked);
        &self.0[start..start + len]
    }
}

/// Why a line was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    Unreadable,
    UnknownEvent,
}

pub fn parse(bytes: &[u8], origin: Origin, names: &mut Names) -> Result<Parsed, Skip> {
    // Filled in place and borrowed, never moved: a line's fields are a few hundred bytes, and
    // each copy is a call of memcpy.
    let mut fast = RawLine::empty();
    let parsed: RawLine;
    let raw = match fast::raw_line_into(bytes, &mut fast) {
        Some(()) => &fast,
        None => {
            parsed = serde_json::from_slice(bytes).map_err(|_| Skip::Unreadable)?;
            &parsed
        }
    };
    let at = parse_ts(raw.ts).ok_or(Skip::Unreadable)?;
    let event = raw.event.ok_or(Skip::Unreadable)?;
    let host = names.intern(raw.host.as_deref().unwrap_or(""));
    match event {
        EventKind::Unknown => return Ok(Parsed::UnknownEvent),
        // A deadlock's locks are in its waits' own lines; an inheritance is told by the
        // orphan's lineage; a summary's holds were short, uncontended and released.
        EventKind::Start
        | EventKind::Stop
        | EventKind::Deadlock
        | EventKind::Inherit
        | EventKind::Summary => {
            return Ok(Parsed::Other(at));
        }
        EventKind::Exit => {
            let pid = raw.pid.ok_or(Skip::Unreadable)?;
            let comm = names.intern(raw.comm.as_deref().unwrap_or("?"));
            return Ok(Parsed::Exit(Exit {
                host,
                at,
                origin,
                actor: Actor {
                    pid,
                    comm,
                    start_time: raw.start_time,
                    ns_pid: raw.ns_pid,
                },
            }));
        }
        _ => {}
    }
    // A `held` line names no taker when the kernel records none (an OFD lock): pid 0.
    let pid = raw.pid.or((event == EventKind::Held).then_some(0));
    let (Some(dev), Some(ino), Some(kind), Some(pid)) = (raw.dev, raw.ino, raw.kind, pid) else {
        return Err(Skip::Unreadable);
    };
    let range = ByteRange::from_log(raw.start.unwrap_or(0), raw.end);
    let key = LockKey {
        host,
        dev: names.intern(dev),
        ino,
        generation: raw.generation.unwrap_or(0),
        kind,
        range: match kind {
            LockKind::Posix => ByteRange::WHOLE_FILE,
            _ => range,
        },
    };
    let mut actor = |pid: u32, comm: Option<&str>, start_time, ns_pid| Actor {
        pid,
        comm: names.intern(comm.unwrap_or("?")),
        start_time,
        ns_pid,
    };
    let mut proc_actor =
        |proc: &RawProc| actor(proc.pid, Some(&proc.comm), proc.start_time, proc.ns_pid);
    let others: Box<[Actor]> = match (&raw.holders, &raw.by) {
        (Some(holders), _) => holders.iter().map(&mut proc_actor).collect(),
        (None, Some(by)) => Box::new([proc_actor(by)]),
        (None, None) => Box::new([]),
    };
    let taker_exit = match raw.taker_exit {
        Some(text) => parse_ts(text),
        None => raw.orphan_ns.map(|orphan_ns| at.saturating_sub(orphan_ns)),
    };
    let record = Record {
        at,
        origin,
        event,
        actor: actor(pid, raw.comm.as_deref(), raw.start_time, raw.ns_pid),
        mode: raw.mode,
        range,
        reason: raw.reason,
        duration_ns: match event {
            EventKind::Acquire => raw.wait_ns,
            _ => raw.held_ns,
        },
        taker_exit,
        errno: raw.errno.as_deref().map(|errno| names.intern(errno)),
        others,
        orphan: raw.orphan == Some(true),
    };
    let path = raw.path.as_deref().map(|path| SeenPath {
        path: names.intern(path),
        host: raw.host_path.as_deref().map(|host| names.intern(host)),
    });
    Ok(Parsed::Lock(key, path, record))
}

/// What the tracer writes first on every line: `{"event":"NAME","ts":"TIME"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub event: EventKind,
    pub at: Nanos,
    /// Where the line goes on after the time's closing quote.
    pub end: usize,
}

/// The event and time of a trimmed line that starts and ends as the tracer writes lines, read
/// without parsing the rest; None for any other line (damaged, of a newer schema, written by
/// another program), which only a full parse can tell about.
pub fn head(line: &[u8]) -> Option<Head> {
    const EVENT: &[u8] = br#"{"event":""#;
    const TS: &[u8] = br#"","ts":""#;
    if !line.ends_with(b"}") {
        return None;
    }
    let rest = line.strip_prefix(EVENT)?;
    let name_len = memchr::memchr(b'"', &rest[..rest.len().min(16)])?;
    let event = match event_kind(&rest[..name_len]) {
        EventKind::Unknown => return None,
        known => known,
    };
    let rest = rest[name_len..].strip_prefix(TS)?;
    let ts_len = memchr::memchr(b'"', &rest[..rest.len().min(40)])?;
    let at = tracer_ts(&rest[..ts_len])?;
    let end = line.len() - rest.len() + ts_len + 1;
    Some(Head { event, at, end })
}

/// The `ts` of a line found by a byte search, without parsing the rest of it.
pub fn line_ts(line: &[u8]) -> Option<Nanos> {
    const FIELD: &[u8] = b"\"ts\":\"";
    let from = memchr::memmem::find(line, FIELD)? + FIELD.len();
    let len = memchr::memchr(b'"', &line[from..])?;
    parse_ts(std::str::from_utf8(&line[from..from + len]).ok()?)
}

/// Whether a line is in `aimlock trace --format text`'s form: a timestamp, then an event name.
pub fn is_text_line(line: &[u8]) -> bool {
    let Ok(line) = std::str::from_utf8(line) else {
        return false;
    };
    let mut words = line.split_whitespace();
    words.next().and_then(parse_ts).is_some()
        && words.next().is_some_and(|event| {
            serde_json::from_value::<EventKind>(event.into())
                .is_ok_and(|kind| kind != EventKind::Unknown)
        })
}

/// The event a line's `event` names; `Unknown` for one this version does not know.
pub(super) fn event_kind(name: &[u8]) -> EventKind {
    match name {
        b"acquire" => EventKind::Acquire,
        b"release" => EventKind::Release,
        b"wait" => EventKind::Wait,
        b"fail" => EventKind::Fail,
        b"exit" => EventKind::Exit,
        b"orphan" => EventKind::Orphan,
        b"orphan_end" => EventKind::OrphanEnd,
        b"held" => EventKind::Held,
        b"deadlock" => EventKind::Deadlock,
        b"inherit" => EventKind::Inherit,
        b"summary" => EventKind::Summary,
        b"start" => EventKind::Start,
        b"stop" => EventKind::Stop,
        _ => EventKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EventLine, ProcRef};

    const ORIGIN: Origin = Origin { source: 0, line: 1 };

    #[test]
    fn reads_what_the_tracer_writes() {
        let line = EventLine {
            event: Some(EventKind::OrphanEnd),
            ts: "2026-11-27T05:04:50.603984745Z".into(),
            pid: Some(812),
            start_time: Some(12_340_000_000),
            ns_pid: Some(7),
            comm: Some("orchestrator".into()),
            kind: Some(LockKind::Flock),
            mode: Some(Mode::Write),
            dev: Some("254:0".into()),
            ino: Some(42),
            path: Some("/tmp/x \"quoted\"".into()),
            host_path: Some("/srv/c/tmp/x".into()),
            start: Some(0),
            end: Some(None),
            held_ns: Some(5),
            orphan_ns: Some(3),
            reason: Some(ReleaseReason::Exit),
            by: Some(ProcRef {
                pid: 840,
                start_time: Some(5_670_000_000),
                comm: "sleep".into(),
                ns_pid: Some(3),
                fd: Some(3),
                cgroup: None,
            }),
            taker_exit: Some("2026-11-27T05:04:50.603984742Z".into()),
            ..Default::default()
        };
        let json = serde_json::to_vec(&line).unwrap();
        let mut names = Names::default();
        let Ok(Parsed::Lock(key, path, record)) = parse(&json, ORIGIN, &mut names) else {
            panic!("not a lock line");
        };
        assert_eq!(names.get(key.dev), "254:0");
        assert_eq!(
            (key.ino, key.kind, key.range),
            (42, LockKind::Flock, ByteRange::WHOLE_FILE)
        );
        let path = path.unwrap();
        assert_eq!(names.get(path.path), "/tmp/x \"quoted\"");
        assert_eq!(path.host.map(|host| names.get(host)), Some("/srv/c/tmp/x"));
        assert_eq!(record.at, 1_795_755_890_603_984_745);
        assert_eq!(record.taker_exit, Some(record.at - 3));
        assert_eq!(record.duration_ns, Some(5));
        assert_eq!(record.actor.pid, 812);
        assert_eq!(record.actor.ns_pid, Some(7));
        assert_eq!(record.actor.start_time, Some(12_340_000_000));
        assert_eq!(record.others[0].start_time, Some(5_670_000_000));
        assert_eq!(names.get(record.others[0].comm), "sleep");
        assert_eq!(record.others[0].ns_pid, Some(3));
        assert_eq!(line_ts(&json), Some(record.at));
        let head = head(&json).unwrap();
        assert_eq!((head.event, head.at), (EventKind::OrphanEnd, record.at));
        assert_eq!(&json[head.end..head.end + 2], b",\"");
    }

    #[test]
    fn eight_digits_read_as_a_number_and_anything_else_is_refused() {
        for number in [
            0u64, 1, 9, 10, 12_345_678, 90_000_001, 99_999_999, 40_506_070,
        ] {
            let text = format!("{number:08}");
            let bytes = text.as_bytes().try_into().unwrap();
            assert_eq!(eight_digits(bytes), Some(number), "{text}");
            for at in 0..8 {
                for other in [b'/', b':', b' ', b'a', 0, 0x80, 0xb0, 0xff] {
                    let mut bytes = *bytes;
                    bytes[at] = other;
                    assert_eq!(eight_digits(&bytes), None, "{text} with {other} at {at}");
                }
            }
        }
    }

    #[test]
    fn the_tracers_timestamps_read_as_the_general_parser_reads_them() {
        for text in [
            "2026-11-27T05:04:50.603984745Z",
            "1970-01-01T00:00:00.000000001Z",
            "2024-02-29T23:59:59.999999999Z",
            "2100-03-01T00:00:00.5Z",
            "2000-12-31T12:00:00.000001Z",
            "2026-11-27T05:04:50.000000000Z",
            "2026-11-27T05:04:50.999999990Z",
            "2026-11-27T05:04:50.10000000Z",
        ] {
            let general = nanos(humantime::parse_rfc3339(text).unwrap());
            assert_eq!(tracer_ts(text.as_bytes()), Some(general), "{text}");
        }
        for text in [
            "2026-02-29T00:00:00.0Z",
            "2026-13-01T00:00:00.0Z",
            "2026-11-27T24:00:00.0Z",
            "2026-11-27T05:04:50Z",
            "2026-11-27T05:04:50.1234567890Z",
            "2026-11-27T05:04:50.6+01:00",
            // After a valid time in the same minute, what follows its minute is still checked.
            "2026-11-27T05:04:60.0Z",
            "2026-11-27T05:04:5x.0Z",
            "2026-11-27T05:04:50.0",
            "2026-11-27T05:04:50.60398474xZ",
            "2026-11-27T05:04:50.6039847/5Z",
            "2026-11-27T05:04:50.:03984745Z",
        ] {
            let minute = nanos(humantime::parse_rfc3339("2026-11-27T05:04:00Z").unwrap());
            assert_eq!(tracer_ts(b"2026-11-27T05:04:00.0Z"), Some(minute));
            assert_eq!(tracer_ts(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn text_format_lines_are_recognised() {
        let text = b"2026-11-27T05:04:50.603984745Z acquire    flock write pid=812(lockwork) \
                     254:0:42 /tmp/x [0-EOF] wait=0s";
        assert!(is_text_line(text));
        let json = br#"{"event":"acquire","ts":"2026-11-27T05:04:50.603984745Z","pid":812}"#;
        assert!(!is_text_line(json));
        assert!(!is_text_line(b"2026-11-27T05:04:50Z something else"));
    }

    #[test]
    fn newer_schemas_and_damage_are_told_apart() {
        let mut names = Names::default();
        let unknown = br#"{"event":"teleport","ts":"2026-01-01T00:00:00Z","warp":9}"#;
        assert!(matches!(
            parse(unknown, ORIGIN, &mut names),
            Ok(Parsed::UnknownEvent)
        ));
        let extra_field = br#"{"event":"stop","ts":"2026-01-01T00:00:00Z","lost":0,"new":[1]}"#;
        assert!(matches!(
            parse(extra_field, ORIGIN, &mut names),
            Ok(Parsed::Other(_))
        ));
        for damaged in [
            &br#"{"event":"acquire","ts":"2026-01-01T00:00:00Z","pid":1,"dev":"8:1","ino":"#[..],
            b"\x00\x00garbage",
            br#"{"event":"acquire","ts":"yesterday","pid":1,"dev":"8:1","ino":2,"kind":"flock"}"#,
            br#"{"event":"acquire","ts":"2026-01-01T00:00:00Z","pid":1}"#,
            br#"{"event":"acquire","ts":"2026-01-01T00:00:00Z","pid":1,"dev":"8:1","ino":2,"kind":"shiny"}"#,
        ] {
            assert_eq!(parse(damaged, ORIGIN, &mut names).err(), Some(Skip::Unreadable));
        }
    }
}
