//! The first of two reads for `--since`, `--until` and `--at`: which locks were busy in the
//! span, and from when to when their lines are needed, found from the lines' heads and a few
//! fields, so that the second read parses only those lines.
//!
//! Each lock's acquires, releases, waits, refusals and orphans are replayed as the timeline
//! folds them, keeping only which holds and waits are open. A lock is wanted when a line about
//! it is in the span, or when a hold or a wait was open as the span began; its lines are needed
//! from the last moment before the span when nothing was open (what came before was over, and
//! cannot be under way in the span) to the first such moment after it: the memory a query
//! needs is bounded by the locks busy in the span, not by the log. Whatever the replay cannot
//! follow exactly has all of its lock's lines read: POSIX locks, an orphan line without its
//! taker's open hold or an orphan's end not just after its release, `held` lines, several locks
//! or paths under one inode and host, lines out of time order or repeated, the tracer's own
//! locks, a hold or a wait after the span told as begun before its end (a release whose acquire
//! is not in the logs, a wait told only by `wait_ns`), and lines not in the tracer's own shape
//! (those are parsed, and their inode read on every host).

use std::sync::Mutex;

use memchr::memmem;
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

use super::{
    BadInput,
    fast::{Key, ONES, first_flagged, zero_bytes},
    input::{self, Source},
    line::{Head, Names, Nanos, Origin, Parsed, eight_digits_value, head, parse},
    scan::{Candidates, line_host, line_ino, same_bytes},
    table::prefetch,
};
use crate::events::EventKind;

/// Bytes each job reads at a time.
const PIECE: usize = 8 << 20;

/// The span asked for: from `since` to `until`, both included; None: unbounded.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    pub since: Option<Nanos>,
    pub until: Option<Nanos>,
}

impl Span {
    fn contains(self, at: Nanos) -> bool {
        !self.before(at) && !self.after(at)
    }

    fn before(self, at: Nanos) -> bool {
        self.since.is_some_and(|since| at < since)
    }

    fn after(self, at: Nanos) -> bool {
        self.until.is_some_and(|until| at > until)
    }

    /// Whether something begun at `from` (None: unknown) and still under way after the span
    /// was under way in it.
    fn begun_by_its_end(self, from: Option<Nanos>) -> bool {
        from.is_none_or(|from| self.until.is_none_or(|until| from <= until))
    }
}

/// The times between which a lock's lines are needed, both included; None: unbounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from: Option<Nanos>,
    pub to: Option<Nanos>,
}

impl Window {
    pub fn contains(self, at: Nanos) -> bool {
        self.from.is_none_or(|from| at >= from) && self.to.is_none_or(|to| at <= to)
    }
}

/// Per inode, the hosts (as their lines write them) whose lines need only a window of time.
pub type Windows = FxHashMap<u64, SmallVec<[(Box<[u8]>, Window); 2]>>;

/// The locks that may have been busy in the span: their inodes, each on the hosts whose lines
/// about it are wanted, and the windows of time of those that need only some of their lines.
pub struct Busy {
    pub inodes: Candidates,
    pub windows: Windows,
    /// Per source, the chunks the second read need not look into (see [`Quiet`]).
    pub cold: Vec<ColdChunks>,
}

/// Chunks of a source by where they start (see [`Cold`]).
pub type ColdChunks = FxHashMap<u64, Cold>;

/// A quiet chunk (see [`Quiet`]) when no lock it may have lines of is read whole: the second
/// read parses its exits (they end POSIX locks) and the lines in their locks' windows, found
/// where the first read saw them, and takes the other lines' count and times as they are. A
/// lock held for hours has a window of hours, but only its own lines are looked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cold {
    pub len: usize,
    /// Its lines, counted as the second read counts them.
    pub lines: u32,
    /// The times the second read would have found in it: the first line's, the latest.
    pub first: Nanos,
    pub latest: Nanos,
    /// Its exits and its lines in their locks' windows, in order.
    pub looked_for: Box<[ChunkLine]>,
}

/// A line of a chunk: where it starts, and how many lines come before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChunkLine {
    pub start: u32,
    pub before: u32,
}

/// A chunk in which no line asks the second read for more than its time, or is an exit: every
/// line is the tracer's (a head, an inode where a lock line has one, whole objects or none) and
/// one the replay follows, and no deadlock or inheritance is told.
#[derive(Debug)]
struct Quiet {
    start: u64,
    len: usize,
    lines: u32,
    first: Nanos,
    latest: Nanos,
    exits: Vec<ChunkLine>,
}

pub fn locks(sources: &[Source], span: Span, jobs: usize) -> Result<Busy, BadInput> {
    let fields = Fields::new();
    let mut replay = Replay::default();
    // Merged pieces, emptied: their lists are filled again rather than grown afresh.
    let spare = Mutex::new(Vec::new());
    for (index, source) in sources.iter().enumerate() {
        replay.quiet.push(Vec::new());
        input::read_pieces(
            source,
            PIECE,
            jobs,
            |bytes, start| {
                let piece = spare.lock().expect("no job panics").pop();
                Piece::read(piece.unwrap_or_default(), bytes, start, &fields)
            },
            |chunk, mut piece| {
                replay.merge(chunk, &mut piece, index as u32, span);
                spare.lock().expect("no job panics").push(piece.cleared());
            },
        )?;
    }
    Ok(replay.finish())
}

/// What one lock line says, as far as the replay needs it.
#[derive(Clone, Copy, Debug)]
struct Fact {
    line: ChunkLine,
    ino: u64,
    /// Its host's index in the piece's `hosts`.
    host: u32,
    /// Where its identity is in the piece's `identities`.
    identity: Place,
    at: Nanos,
    step: Step,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Acquire {
        pid: u32,
        wait_ns: Option<u64>,
    },
    Release {
        pid: u32,
        held_ns: Option<u64>,
    },
    Wait {
        pid: u32,
    },
    Fail {
        pid: u32,
    },
    /// The taker of a hold exited and other processes still hold it.
    Orphan {
        taker: Taker,
    },
    /// An orphaned hold was released (just after its release line).
    OrphanEnd {
        taker: Taker,
    },
    /// Anything the replay does not follow: all the lock's lines are read.
    Other,
}

/// A process as the timeline tells processes apart (pid, start time and command), from the
/// bytes of its line: equal bytes are the same process, whatever other lines fill in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Taker {
    pid: u32,
    start_time: Option<u64>,
    comm: [u8; 16],
    comm_len: u8,
}

impl Taker {
    /// None for a command longer than the kernel's (an escaped one).
    fn new(pid: u32, start_time: Option<u64>, comm: &[u8]) -> Option<Self> {
        let mut bytes = [0; 16];
        bytes.get_mut(..comm.len())?.copy_from_slice(comm);
        Some(Self {
            pid,
            start_time,
            comm: bytes,
            comm_len: comm.len() as u8,
        })
    }
}

/// What, besides the inode and host, makes a lock line's lock, and its path: one lock and one
/// path per inode and host is what the replay follows.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Identity<'a> {
    kind: &'a [u8],
    dev: &'a [u8],
    path: Option<&'a [u8]>,
    host_path: Option<&'a [u8]>,
    generation: Option<u64>,
    start: Option<u64>,
    end: Option<u64>,
}

/// An identity as bytes, compared whole: each string ends in 0xff, an absent one is 0xfe (the
/// lines are UTF-8, which has neither), a number is 0xfd and its 8 bytes, an absent one 0xfe.
type IdentityBytes = SmallVec<[u8; 64]>;

impl Identity<'_> {
    fn write_to(&self, out: &mut Vec<u8>) {
        let text = |out: &mut Vec<u8>, text: Option<&[u8]>| {
            match text {
                Some(text) => out.extend_from_slice(text),
                None => out.push(0xfe),
            }
            out.push(0xff);
        };
        let number = |out: &mut Vec<u8>, number: Option<u64>| match number {
            Some(number) => {
                out.push(0xfd);
                out.extend_from_slice(&number.to_le_bytes());
            }
            None => out.push(0xfe),
        };
        text(out, Some(self.kind));
        text(out, Some(self.dev));
        text(out, self.path);
        text(out, self.host_path);
        number(out, self.generation);
        number(out, self.start);
        number(out, self.end);
    }
}

/// The finder for the field every lock line is looked up by.
struct Fields {
    ino: memmem::Finder<'static>,
}

impl Fields {
    fn new() -> Self {
        Self {
            ino: memmem::Finder::new(br#""ino":"#).into_owned(),
        }
    }
}

/// Where bytes are in a chunk: offset and length.
type Place = (u32, u32);

/// Where `part` is in `chunk`.
fn place_in(chunk: &[u8], part: &[u8]) -> Place {
    (
        (part.as_ptr() as usize - chunk.as_ptr() as usize) as u32,
        part.len() as u32,
    )
}

fn bytes_at(chunk: &[u8], (offset, len): Place) -> &[u8] {
    &chunk[offset as usize..offset as usize + len as usize]
}

/// A piece's lock lines, in order.
#[derive(Default)]
struct Piece {
    /// The hosts its lines name, as they write them, where each is first named in the chunk.
    hosts: Vec<Place>,
    facts: Vec<Fact>,
    /// The facts' identities, end to end.
    identities: Vec<u8>,
    /// Locks of lines the replay cannot follow.
    whole: Vec<(u64, Box<[u8]>)>,
    /// Inodes of lock lines whose inode only a parse finds, read on every host (as the second
    /// read keeps such lines).
    parsed: FxHashSet<u64>,
    /// The chunk, if it is quiet.
    quiet: Option<Quiet>,
}

impl Piece {
    /// Reads `bytes` into `spare`, an empty piece.
    fn read(spare: Piece, bytes: &[u8], start: u64, fields: &Fields) -> Self {
        let mut piece = spare;
        // Sized for lines of a couple of hundred bytes: the lists do not grow line by line.
        let lines = bytes.len() / 200;
        piece.facts.reserve(lines);
        piece.identities.reserve(lines * 64);
        let mut names = Names::default();
        // The first line's time and the latest, while the chunk is quiet.
        let mut times: Option<(Nanos, Nanos)> = None;
        let mut quiet = true;
        let mut exits = Vec::new();
        let (mut from, mut lines) = (0, 0);
        while from < bytes.len() {
            let end = memchr::memchr(b'\n', &bytes[from..]).map_or(bytes.len(), |at| from + at);
            let line = bytes[from..end].trim_ascii();
            let chunk_line = ChunkLine {
                start: from as u32,
                before: lines,
            };
            from = end + 1;
            lines += 1;
            if line.is_empty() {
                continue;
            }
            let head = head(line);
            let read = read_line(line, head, fields, &mut names);
            if quiet {
                match head.filter(|&head| quiet_line(head, &read)) {
                    Some(head) => {
                        if head.event == EventKind::Exit {
                            exits.push(chunk_line);
                        }
                        let at = head.at;
                        times =
                            Some(times.map_or((at, at), |(first, latest)| (first, latest.max(at))));
                    }
                    None => quiet = false,
                }
            }
            match read {
                Read::NotALock => {}
                Read::Lock {
                    ino,
                    host,
                    identity,
                    at,
                    step,
                } => {
                    let hosts = &mut piece.hosts;
                    let host = match hosts
                        .iter()
                        .position(|&known| same_bytes(bytes_at(bytes, known), host))
                    {
                        Some(index) => index,
                        None => {
                            hosts.push(place_in(bytes, host));
                            hosts.len() - 1
                        }
                    } as u32;
                    let start = piece.identities.len();
                    identity.write_to(&mut piece.identities);
                    piece.facts.push(Fact {
                        line: chunk_line,
                        ino,
                        host,
                        identity: (start as u32, (piece.identities.len() - start) as u32),
                        at,
                        step,
                    });
                }
                Read::Whole(ino, host) => piece.whole.push((ino, host.into())),
                Read::Parse => {
                    let origin = Origin { source: 0, line: 0 };
                    if let Ok(Parsed::Lock(key, _, _)) = parse(line, origin, &mut names) {
                        piece.parsed.insert(key.ino);
                    }
                }
            }
        }
        piece.quiet = times.filter(|_| quiet).map(|(first, latest)| Quiet {
            start,
            len: bytes.len(),
            lines,
            first,
            latest,
            exits,
        });
        piece
    }

    /// The same piece, empty, its lists kept for the next.
    fn cleared(mut self) -> Self {
        self.hosts.clear();
        self.facts.clear();
        self.identities.clear();
        self.whole.clear();
        self.parsed.clear();
        self.quiet = None;
        self
    }
}

/// Whether the second read would only take the line's time from it (see [`Quiet`]).
fn quiet_line(head: Head, read: &Read) -> bool {
    match head.event {
        // The second read parses a cold chunk's exits as it parses any chunk's.
        EventKind::Start | EventKind::Stop | EventKind::Exit | EventKind::Summary => true,
        EventKind::Deadlock | EventKind::Inherit => false,
        // A line the replay follows is flat, or an orphan's line that parses; a lock read
        // whole makes no chunk cold.
        _ => matches!(read, Read::Lock { .. }),
    }
}

enum Read<'a> {
    /// Not a lock line (a start, stop or exit, a deadlock, an inheritance, a summary), or none
    /// at all.
    NotALock,
    Lock {
        ino: u64,
        host: &'a [u8],
        identity: Identity<'a>,
        at: Nanos,
        step: Step,
    },
    /// A line about this inode and host that the byte reading does not vouch for.
    Whole(u64, &'a [u8]),
    /// A line whose inode only a parse finds.
    Parse,
}

fn read_line<'a>(
    line: &'a [u8],
    head: Option<Head>,
    fields: &Fields,
    names: &mut Names,
) -> Read<'a> {
    let Some(head) = head else {
        return Read::Parse;
    };
    match head.event {
        EventKind::Start
        | EventKind::Stop
        | EventKind::Exit
        | EventKind::Deadlock
        | EventKind::Inherit
        | EventKind::Summary => return Read::NotALock,
        _ => {}
    }
    // Flat, whole and text, as the tracer writes the lines the replay follows: not two lines
    // run together (a torn write), no zeroed bytes. An orphan's lines name processes in
    // objects of their own: they are followed when the parse vouches for them.
    let LineBytes { nested, ascii } = LineBytes::of(&line[1..]);
    let orphan = matches!(head.event, EventKind::Orphan | EventKind::OrphanEnd);
    let followed = !(nested && !(orphan && parses(line, names)))
        && (ascii || std::str::from_utf8(line).is_ok());
    let flat = followed
        .then(|| FlatLine::read(line, nested, head.end))
        .flatten();
    // A flat line's first `"ino":` and `"host":"` are its keys (a string holds no bare
    // quote): read with the rest, rather than searched for.
    let (ino, host) = match &flat {
        Some(flat) if !nested => (
            flat.ino.or_else(|| line_ino(&fields.ino, line)),
            flat.host.unwrap_or_default(),
        ),
        _ => (line_ino(&fields.ino, line), line_host(line)),
    };
    let Some(ino) = ino else {
        return Read::Parse;
    };
    let whole = || Read::Whole(ino, host);
    let Some(flat) = flat else {
        return whole();
    };
    let Some(identity) = flat.identity() else {
        return whole();
    };
    if !matches!(identity.kind, b"flock" | b"ofd" | b"lease")
        || !matches!(flat.mode, None | Some(b"read" | b"write" | b"unlock"))
        || !matches!(
            flat.reason,
            None | Some(b"unlock" | b"close" | b"exit" | b"convert" | b"lost")
        )
        || flat.comm == Some(super::OWN_COMMAND.as_bytes())
    {
        return whole();
    }
    let Some(Ok(pid)) = flat.pid.map(u32::try_from) else {
        return whole();
    };
    let step = match head.event {
        EventKind::Acquire => Step::Acquire {
            pid,
            wait_ns: flat.wait_ns,
        },
        EventKind::Release => Step::Release {
            pid,
            held_ns: flat.held_ns,
        },
        EventKind::Wait => Step::Wait { pid },
        EventKind::Fail => Step::Fail { pid },
        EventKind::Orphan | EventKind::OrphanEnd => {
            let Some(taker) = flat
                .comm
                .and_then(|comm| Taker::new(pid, flat.start_time, comm))
            else {
                return whole();
            };
            if head.event == EventKind::Orphan {
                Step::Orphan { taker }
            } else {
                Step::OrphanEnd { taker }
            }
        }
        _ => Step::Other,
    };
    Read::Lock {
        ino,
        host,
        identity,
        at: head.at,
        step,
    }
}

/// Whether the full parse reads the line as a lock line (not two run together).
fn parses(line: &[u8], names: &mut Names) -> bool {
    let origin = Origin { source: 0, line: 0 };
    matches!(parse(line, origin, names), Ok(Parsed::Lock(..)))
}

/// The fields the replay reads from a flat line (no object or array inside, but for an
/// orphan's lines), each read once in one pass over the line.
#[derive(Debug, Default, PartialEq, Eq)]
struct FlatLine<'a> {
    kind: Option<&'a [u8]>,
    dev: Option<&'a [u8]>,
    path: Option<&'a [u8]>,
    host_path: Option<&'a [u8]>,
    generation: Option<u64>,
    start: Option<u64>,
    end: Option<u64>,
    mode: Option<&'a [u8]>,
    reason: Option<&'a [u8]>,
    comm: Option<&'a [u8]>,
    pid: Option<u64>,
    start_time: Option<u64>,
    wait_ns: Option<u64>,
    held_ns: Option<u64>,
    /// The inode, if in plain digits.
    ino: Option<u64>,
    /// The host, if a string.
    host: Option<&'a [u8]>,
}

/// The keys the replay reads, each with its bit in `FlatLine::read`'s keys seen.
fn key_bit(key: &[u8]) -> u32 {
    // By length first: a comparison of a few bytes each, not a call.
    match key.len() {
        3 if key == b"dev" => 1,
        3 if key == b"end" => 5,
        3 if key == b"ino" => 12,
        3 if key == b"pid" => 9,
        4 if key == b"kind" => 0,
        4 if key == b"path" => 2,
        4 if key == b"mode" => 6,
        4 if key == b"comm" => 8,
        4 if key == b"host" => 13,
        5 if key == b"start" => 4,
        6 if key == b"reason" => 7,
        7 if key == b"wait_ns" => 10,
        7 if key == b"held_ns" => 11,
        9 if key == b"host_path" => 14,
        10 if key == b"generation" => 3,
        10 if key == b"start_time" => 15,
        _ => OTHER_KEY,
    }
}

const OTHER_KEY: u32 = 16;

/// The key the tracer most often writes after the one of `bit` (`OTHER_KEY`: after the
/// line's head, or after a key the replay does not read), with its bit.
fn usually_after(bit: u32) -> Option<(&'static Key, u32)> {
    Some(match bit {
        OTHER_KEY => (const { &Key::new(br#""host":"#) }, 13),
        13 => (const { &Key::new(br#""pid":"#) }, 9),
        9 => (const { &Key::new(br#""start_time":"#) }, 15),
        15 => (const { &Key::new(br#""comm":"#) }, 8),
        8 => (const { &Key::new(br#""kind":"#) }, 0),
        0 => (const { &Key::new(br#""mode":"#) }, 6),
        6 => (const { &Key::new(br#""dev":"#) }, 1),
        1 => (const { &Key::new(br#""ino":"#) }, 12),
        12 => (const { &Key::new(br#""generation":"#) }, 3),
        3 => (const { &Key::new(br#""path":"#) }, 2),
        2 | 14 => (const { &Key::new(br#""start":"#) }, 4),
        4 => (const { &Key::new(br#""end":"#) }, 5),
        5 => (const { &Key::new(br#""held_ns":"#) }, 11),
        11 => (const { &Key::new(br#""reason":"#) }, 7),
        _ => return None,
    })
}

/// How many decimal digits `bytes` start with, and their number (wrapped past 19 digits).
#[inline]
fn leading_digits(bytes: &[u8]) -> (usize, u64) {
    let mut number = 0u64;
    let mut at = 0;
    // Eight bytes at a time: the digits among them found and read at once.
    while let Some(eight) = bytes[at..].first_chunk::<8>() {
        let word = u64::from_le_bytes(*eight);
        let digits = (not_digits(word).trailing_zeros() / 8) as usize;
        if digits == 0 {
            return (at, number);
        }
        // The digits moved to the top of the word, zeros before them.
        let shift = 64 - 8 * digits as u32;
        let word = (word << shift) | ((ONES * u64::from(b'0')) & !(u64::MAX << shift));
        number = number
            .wrapping_mul(TENS[digits])
            .wrapping_add(eight_digits_value(word));
        at += digits;
        if digits < 8 {
            return (at, number);
        }
    }
    for &byte in &bytes[at..] {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return (at, number);
        }
        number = number.wrapping_mul(10).wrapping_add(u64::from(digit));
        at += 1;
    }
    (at, number)
}

/// 10 to the power of each number of digits up to eight.
const TENS: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// The high bit of each byte of a little-endian word that is not an ASCII digit, and maybe of
/// bytes after it (carries run upwards): the lowest one set is always the first such byte.
fn not_digits(word: u64) -> u64 {
    let offset = word ^ (ONES * u64::from(b'0'));
    // 0 to 9 stay below 0x80 with 0x76 added; anything else reaches it, or had it already.
    (offset.wrapping_add(ONES * 0x76) | offset) & (ONES * 0x80)
}

/// What the bytes of a line (after its opening brace) hold that decides how it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LineBytes {
    /// An object or array inside, or a zero byte.
    nested: bool,
    /// Only ASCII.
    ascii: bool,
}

impl LineBytes {
    /// Read in one pass, sixteen bytes at a time where the line has them: a line is read
    /// whole either way, so no early end is worth a branch per block.
    fn of(bytes: &[u8]) -> Self {
        match Self::by_sixteen(bytes) {
            Some(found) => found,
            None => Self {
                nested: memchr::memchr2(b'{', 0, bytes).is_some(),
                ascii: bytes.is_ascii(),
            },
        }
    }

    /// None for fewer than sixteen bytes.
    #[cfg(target_arch = "x86_64")]
    fn by_sixteen(bytes: &[u8]) -> Option<Self> {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
            _mm_set1_epi8, _mm_setzero_si128,
        };
        let last = bytes.len().checked_sub(16)?;
        // SAFETY: SSE2 is part of x86_64; each load reads sixteen bytes of `bytes`, the last
        // one its final sixteen (again, in part: or-ing them twice changes nothing).
        let (nested, high) = unsafe {
            let load = |at: usize| _mm_loadu_si128(bytes[at..at + 16].as_ptr().cast::<__m128i>());
            let (brace, zero) = (_mm_set1_epi8(b'{' as i8), _mm_setzero_si128());
            let (mut nested, mut high) = (zero, zero);
            let mut fold = |block: __m128i| {
                nested = _mm_or_si128(nested, _mm_cmpeq_epi8(block, brace));
                nested = _mm_or_si128(nested, _mm_cmpeq_epi8(block, zero));
                high = _mm_or_si128(high, block);
            };
            let mut at = 0;
            while at < last {
                fold(load(at));
                at += 16;
            }
            fold(load(last));
            (_mm_movemask_epi8(nested), _mm_movemask_epi8(high))
        };
        Some(Self {
            nested: nested != 0,
            ascii: high == 0,
        })
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn by_sixteen(_: &[u8]) -> Option<Self> {
        None
    }
}

/// Where the first of two bytes is, a few bytes on: a line's keys and values are short, and
/// a loop over them costs less than a vector search set up for each.
fn short_find(bytes: &[u8], one: u8, other: u8) -> Option<usize> {
    bytes.iter().position(|&byte| byte == one || byte == other)
}

/// Where the first quote or backslash is: sixteen bytes at a time where the line has them (most
/// strings end within the first sixteen), then eight (strings are too short for the call of a
/// vector search).
fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    let checked = match quote_or_backslash_by_sixteen(bytes) {
        Ok(at) => return Some(at),
        Err(checked) => checked,
    };
    let either = |word: u64| {
        zero_bytes(word ^ (ONES * u64::from(b'"'))) | zero_bytes(word ^ (ONES * u64::from(b'\\')))
    };
    first_flagged(&bytes[checked..], either, |byte| {
        byte == b'"' || byte == b'\\'
    })
    .map(|at| checked + at)
}

/// Where the first quote or backslash is, looked for sixteen bytes at a time with SSE2; if none
/// is, how many bytes were looked through (fewer than sixteen are left).
#[cfg(target_arch = "x86_64")]
fn quote_or_backslash_by_sixteen(bytes: &[u8]) -> Result<usize, usize> {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    let mut at = 0;
    while let Some(sixteen) = bytes[at..].first_chunk::<16>() {
        // SAFETY: SSE2 is part of x86_64; the load reads the sixteen bytes of `sixteen`.
        let found = unsafe {
            let bytes = _mm_loadu_si128(sixteen.as_ptr().cast::<__m128i>());
            let quotes = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'"' as i8));
            let backslashes = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\\' as i8));
            _mm_movemask_epi8(_mm_or_si128(quotes, backslashes))
        };
        if found != 0 {
            return Ok(at + found.trailing_zeros() as usize);
        }
        at += 16;
    }
    Err(at)
}

#[cfg(not(target_arch = "x86_64"))]
fn quote_or_backslash_by_sixteen(_: &[u8]) -> Result<usize, usize> {
    Err(0)
}

/// The string that starts at `from`, up to its closing quote, still escaped.
#[inline(always)]
fn quoted_from(line: &[u8], from: usize) -> Option<&[u8]> {
    let mut at = from;
    loop {
        at += quote_or_backslash(&line[at..])?;
        if line[at] == b'"' {
            return Some(&line[from..at]);
        }
        at += 2;
        if at > line.len() {
            return None;
        }
    }
}

/// Where the object or array that starts at `from` ends (just after it); strings inside are
/// passed over whole.
fn nested_end(line: &[u8], from: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut at = from;
    while at < line.len() {
        match line[at] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(at + 1);
                }
            }
            b'"' => at += quoted_from(line, at + 1)?.len() + 1,
            _ => {}
        }
        at += 1;
    }
    None
}

impl<'a> FlatLine<'a> {
    /// None for anything but `{"key":value,...}` with string, number and null values (and,
    /// if `nested`, objects and arrays, passed over), each key once, a number in plain
    /// digits.
    /// `from`: where the line goes on after its head (`{"event":"NAME","ts":"TIME"`), read
    /// already.
    fn read(line: &'a [u8], nested: bool, from: usize) -> Option<Self> {
        let mut flat = FlatLine::default();
        let mut at = match line.get(from) {
            Some(b',') => from + 1,
            Some(b'}') if from + 1 == line.len() => return Some(flat),
            _ => return None,
        };
        let mut usual = UsualKeys {
            line,
            at,
            seen: 0,
            last: OTHER_KEY,
            ended: false,
        };
        flat.read_usual_keys(&mut usual);
        if usual.ended {
            return Some(flat);
        }
        at = usual.at;
        // Keys seen, by their bit: the full parse refuses a key given twice.
        let mut seen = usual.seen;
        // The key the tracer usually writes next: found by one comparison, when it is.
        let mut expected = usually_after(usual.last);
        loop {
            let (bit, value_start) = match expected.filter(|(key, _)| key.starts(&line[at..])) {
                Some((key, bit)) => (bit, at + key.len()),
                None => {
                    let key_start = at + 1;
                    if line.get(at) != Some(&b'"') {
                        return None;
                    }
                    let key_end = key_start + quote_or_backslash(&line[key_start..])?;
                    if line[key_end] != b'"' || line.get(key_end + 1) != Some(&b':') {
                        return None;
                    }
                    (key_bit(&line[key_start..key_end]), key_end + 2)
                }
            };
            // The value, and its number if it is one in plain digits that fits in 19 of them.
            let (value, quoted, value_end, plain) = match line.get(value_start) {
                Some(b'"') => {
                    let string = quoted_from(line, value_start + 1)?;
                    (string, true, value_start + 1 + string.len() + 1, None)
                }
                Some(b'{' | b'[') if nested => {
                    let end = nested_end(line, value_start)?;
                    (&line[value_start..end], false, end, None)
                }
                _ => {
                    // Digits, as most such values are: read as their end is found.
                    let (digits, number) = leading_digits(&line[value_start..]);
                    let (len, plain) = match line.get(value_start + digits) {
                        Some(b',' | b'}') => (digits, (1..=19).contains(&digits).then_some(number)),
                        _ => (short_find(&line[value_start..], b',', b'}')?, None),
                    };
                    let value = &line[value_start..value_start + len];
                    (value, false, value_start + len, plain)
                }
            };
            expected = usually_after(bit);
            if bit < OTHER_KEY {
                if seen & (1 << bit) != 0 {
                    return None;
                }
                seen |= 1 << bit;
            }
            let string = || quoted.then_some(value);
            let null = !quoted && value == b"null";
            let number = || -> Option<Option<u64>> {
                if null {
                    return Some(None);
                }
                plain.map(Some)
            };
            let text = || -> Option<Option<&'a [u8]>> {
                if null { Some(None) } else { string().map(Some) }
            };
            match bit {
                0 => flat.kind = Some(string()?),
                1 => flat.dev = Some(string()?),
                2 => flat.path = Some(string()?),
                3 => flat.generation = number()?,
                4 => flat.start = number()?,
                5 => flat.end = number()?,
                6 => flat.mode = text()?,
                7 => flat.reason = text()?,
                8 => flat.comm = text()?,
                9 => flat.pid = number()?,
                10 => flat.wait_ns = number()?,
                11 => flat.held_ns = number()?,
                12 => flat.ino = plain,
                13 => flat.host = string(),
                14 => flat.host_path = text()?,
                15 => flat.start_time = number()?,
                _ => {}
            }
            match line.get(value_end) {
                Some(b',') => at = value_end + 1,
                Some(b'}') if value_end + 1 == line.len() => return Some(flat),
                _ => return None,
            }
        }
    }

    /// Reads the keys a lock line of the tracer's has, in its order, as far as they come so,
    /// each with its value as the tracer writes it: straight on, without asking which key
    /// each is. `usual` is left at the first key not read, for [`FlatLine::read`] to go on
    /// from, or at the line's end.
    fn read_usual_keys(&mut self, usual: &mut UsualKeys<'a>) -> Option<()> {
        self.host = Some(usual.string(const { &Key::new(br#""host":""#) }, 13)?);
        self.pid = Some(usual.number(const { &Key::new(br#""pid":"#) }, 9)?);
        self.start_time = Some(usual.number(const { &Key::new(br#""start_time":"#) }, 15)?);
        self.comm = Some(usual.string(const { &Key::new(br#""comm":""#) }, 8)?);
        self.kind = Some(usual.string(const { &Key::new(br#""kind":""#) }, 0)?);
        self.mode = Some(usual.string(const { &Key::new(br#""mode":""#) }, 6)?);
        self.dev = Some(usual.string(const { &Key::new(br#""dev":""#) }, 1)?);
        self.ino = Some(usual.number(const { &Key::new(br#""ino":"#) }, 12)?);
        self.generation = Some(usual.number(const { &Key::new(br#""generation":"#) }, 3)?);
        self.path = Some(usual.string(const { &Key::new(br#""path":""#) }, 2)?);
        self.start = Some(usual.number(const { &Key::new(br#""start":"#) }, 4)?);
        self.end = usual.number_or_null(const { &Key::new(br#""end":"#) }, 5)?;
        // A release's, or an acquire's after a wait.
        if let Some(held_ns) = usual.number(const { &Key::new(br#""held_ns":"#) }, 11) {
            self.held_ns = Some(held_ns);
            self.reason = Some(usual.string(const { &Key::new(br#""reason":""#) }, 7)?);
        } else {
            self.wait_ns = Some(usual.number(const { &Key::new(br#""wait_ns":"#) }, 10)?);
        }
        Some(())
    }

    fn identity(&self) -> Option<Identity<'a>> {
        Some(Identity {
            kind: self.kind?,
            dev: self.dev?,
            path: self.path,
            host_path: self.host_path,
            generation: self.generation,
            start: self.start,
            end: self.end,
        })
    }
}

/// A lock line read key by key in the tracer's order.
struct UsualKeys<'a> {
    line: &'a [u8],
    /// Where the next key starts.
    at: usize,
    /// The bits of the keys read (see `key_bit`), and the last one's.
    seen: u32,
    last: u32,
    /// The line ended after the last value read.
    ended: bool,
}

impl<'a> UsualKeys<'a> {
    /// The string after `key` (with the string's opening quote) if the line goes on with
    /// them: None once the line has ended.
    #[inline(always)]
    fn string(&mut self, key: &Key, bit: u32) -> Option<&'a [u8]> {
        let from = self.after(key)?;
        let string = quoted_from(self.line, from)?;
        self.read(from + string.len() + 1, bit)?;
        Some(string)
    }

    /// The number after `key` if the line goes on with them, in plain digits that fit in 19
    /// of them.
    #[inline(always)]
    fn number(&mut self, key: &Key, bit: u32) -> Option<u64> {
        let from = self.after(key)?;
        let (digits, number) = leading_digits(&self.line[from..]);
        if !(1..=19).contains(&digits) {
            return None;
        }
        self.read(from + digits, bit)?;
        Some(number)
    }

    /// As [`UsualKeys::number`], or `null` (Some(None)).
    #[inline(always)]
    fn number_or_null(&mut self, key: &Key, bit: u32) -> Option<Option<u64>> {
        let from = self.after(key)?;
        if self.line[from..].starts_with(b"null") {
            self.read(from + 4, bit)?;
            return Some(None);
        }
        self.number(key, bit).map(Some)
    }

    #[inline(always)]
    fn after(&self, key: &Key) -> Option<usize> {
        (!self.ended && key.starts(&self.line[self.at..])).then_some(self.at + key.len())
    }

    /// Notes the key of `bit` read, its value ending at `end`: where a comma or the line's
    /// closing brace follows.
    #[inline(always)]
    fn read(&mut self, end: usize, bit: u32) -> Option<()> {
        match self.line.get(end) {
            Some(b',') => self.at = end + 1,
            Some(b'}') if end + 1 == self.line.len() => self.ended = true,
            _ => return None,
        }
        self.seen |= 1 << bit;
        self.last = bit;
        Some(())
    }
}

/// How many lines ahead the merge asks for a lock's state.
const PREFETCH_AHEAD: usize = 8;

/// Each lock's state as its lines are replayed in log order.
#[derive(Default)]
struct Replay {
    /// The hosts met, as lines write them.
    hosts: Vec<Box<[u8]>>,
    /// Each lock's index in `locks`, by inode and host's index in `hosts`: a small table,
    /// which stays in the cache.
    places: FxHashMap<(u64, u32), u32>,
    keys: Vec<(u64, u32)>,
    locks: Vec<Lock>,
    parsed: FxHashSet<u64>,
    /// Per source, its quiet chunks, each with its place among all chunks merged.
    quiet: Vec<Vec<(u32, Quiet)>>,
    /// The chunks merged so far, all sources together.
    chunks: u32,
}

struct Lock {
    /// Its first line's; a line of another makes it whole.
    identity: IdentityBytes,
    /// All its lines are read.
    whole: bool,
    /// Some of its lines are the replay's (rather than all read whole from the start).
    followed: bool,
    /// Something of it was under way in the span.
    wanted: bool,
    /// A line after the span has been replayed.
    past: bool,
    /// Its lines needed, if wanted.
    window: Window,
    /// Its lines in its window so far, each with its chunk's place among all chunks merged.
    lines_in_window: SmallVec<[(u32, ChunkLine); 2]>,
    /// The last line's time, event and source.
    last: Option<(Nanos, std::mem::Discriminant<Step>, u32)>,
    /// Unreleased holds, in the order taken.
    holds: SmallVec<[OpenHold; 2]>,
    /// The hold the line before released, at the same instant or earlier: the orphan line's
    /// taker, if it had one.
    released: Option<Option<Box<Taker>>>,
    /// Open waits' pids, in the order begun.
    waits: SmallVec<[u32; 2]>,
}

/// A hold taken and not yet released.
#[derive(Clone, Debug)]
struct OpenHold {
    /// The taker's pid.
    pid: u32,
    taken: Nanos,
    /// Who an orphan line said took it: the timeline's taker from then on (rare: out of the
    /// way).
    orphan_taker: Option<Box<Taker>>,
}

impl Replay {
    fn merge(&mut self, chunk: &[u8], piece: &mut Piece, source: u32, span: Span) {
        let chunk_place = self.chunks;
        self.chunks += 1;
        self.parsed.extend(piece.parsed.drain());
        self.quiet[source as usize].extend(piece.quiet.take().map(|quiet| (chunk_place, quiet)));
        let hosts: Vec<u32> = piece
            .hosts
            .iter()
            .map(|&host| self.host_index(bytes_at(chunk, host)))
            .collect();
        let places: Vec<u32> = piece
            .facts
            .iter()
            .map(|fact| {
                let identity = bytes_at(&piece.identities, fact.identity);
                self.place(fact.ino, hosts[fact.host as usize], || identity.into())
            })
            .collect();
        for (index, &fact) in piece.facts.iter().enumerate() {
            // The locks are met in no order: each would be a wait for memory, unless asked for
            // a few lines ahead.
            if let Some(&ahead) = places.get(index + PREFETCH_AHEAD) {
                prefetch(&self.locks[ahead as usize]);
            }
            let identity = bytes_at(&piece.identities, fact.identity);
            let lock = &mut self.locks[places[index] as usize];
            lock.followed = true;
            if lock.whole {
                continue;
            }
            if same_bytes(&lock.identity, identity) {
                lock.replay(fact, source, chunk_place, span);
            } else {
                lock.whole = true;
            }
        }
        for (ino, host) in piece.whole.drain(..) {
            let host = self.host_index(&host);
            let place = self.place(ino, host, IdentityBytes::new);
            self.locks[place as usize].whole = true;
        }
    }

    fn host_index(&mut self, host: &[u8]) -> u32 {
        (match self.hosts.iter().position(|known| same_bytes(known, host)) {
            Some(index) => index,
            None => {
                self.hosts.push(host.into());
                self.hosts.len() - 1
            }
        }) as u32
    }

    /// The index of the lock of this inode and host, new with this identity if not seen
    /// before.
    fn place(&mut self, ino: u64, host: u32, identity: impl FnOnce() -> IdentityBytes) -> u32 {
        let next = self.locks.len() as u32;
        let place = *self.places.entry((ino, host)).or_insert(next);
        if place == next {
            self.keys.push((ino, host));
            self.locks.push(Lock {
                identity: identity(),
                whole: false,
                followed: false,
                wanted: false,
                past: false,
                window: Window {
                    from: None,
                    to: None,
                },
                lines_in_window: SmallVec::new(),
                last: None,
                holds: SmallVec::new(),
                released: None,
                waits: SmallVec::new(),
            });
        }
        place
    }

    fn finish(self) -> Busy {
        let mut busy = Busy {
            inodes: Candidates::default(),
            windows: Windows::default(),
            cold: Vec::new(),
        };
        // A lock read whole needs every line: those of a lock whose every line the replay
        // refused (a POSIX lock) are in chunks that are not quiet; a lock the replay followed
        // for a while, or an inode only a parse finds, may have lines anywhere.
        let every_lock_in_windows =
            self.parsed.is_empty() && !self.locks.iter().any(|lock| lock.whole && lock.followed);
        // Per chunk, the wanted locks' lines in their windows.
        let mut in_windows: Vec<Vec<ChunkLine>> = vec![Vec::new(); self.chunks as usize];
        for ((ino, host), lock) in self.keys.into_iter().zip(self.locks) {
            if self.parsed.contains(&ino) {
                continue;
            }
            // Still open at the end of the logs, with no line after the span.
            let wanted = lock.wanted || (!lock.past && !lock.idle());
            if !lock.whole && wanted {
                for &(chunk, line) in &lock.lines_in_window {
                    in_windows[chunk as usize].push(line);
                }
                busy.windows
                    .entry(ino)
                    .or_default()
                    .push((self.hosts[host as usize].clone(), lock.window));
            }
            if lock.whole || wanted {
                let host = self.hosts[host as usize].clone();
                busy.inodes.entry(ino).or_default().push(host);
            }
        }
        for ino in self.parsed {
            busy.inodes.insert(ino, Vec::new());
        }
        busy.cold = self
            .quiet
            .into_iter()
            .map(|chunks| {
                chunks
                    .into_iter()
                    .filter(|_| every_lock_in_windows)
                    .map(|(place, chunk)| {
                        let mut looked_for = std::mem::take(&mut in_windows[place as usize]);
                        looked_for.extend(chunk.exits);
                        looked_for.sort_unstable();
                        let cold = Cold {
                            len: chunk.len,
                            lines: chunk.lines,
                            first: chunk.first,
                            latest: chunk.latest,
                            looked_for: looked_for.into(),
                        };
                        (chunk.start, cold)
                    })
                    .collect()
            })
            .collect();
        busy
    }
}

impl Lock {
    /// Folds one line as the timeline would, as far as which holds and waits are open; marks
    /// the lock wanted when something of it was under way in the span, and moves its window.
    fn replay(&mut self, fact: Fact, source: u32, chunk: u32, span: Span) {
        let at = fact.at;
        let later = match self.last {
            // The timeline sorts by time and drops a line repeated at the same instant: lines
            // out of order, or the same event twice at one instant, are left to it.
            Some((last, kind, last_source)) => {
                let same_kind = kind == std::mem::discriminant(&fact.step);
                if at < last || (at == last && (same_kind || source != last_source)) {
                    self.whole = true;
                    return;
                }
                at > last
            }
            None => true,
        };
        // Nothing open before this line, and no earlier line at its instant: what came
        // before was over, and nothing of it was under way in the span.
        if span.before(at) && self.idle() && later {
            self.window.from = Some(at);
            self.lines_in_window.clear();
        }
        self.last = Some((at, std::mem::discriminant(&fact.step), source));
        let released = self.released.take();
        let past = span.after(at);
        if past && !self.past {
            self.past = true;
            // No line in the span: what was open as it ended was open all through it.
            if !self.idle() {
                self.wanted = true;
            }
        }
        if span.contains(at) {
            self.wanted = true;
        }
        // Its lines are kept while it may be wanted: after the span, only if it is. `to` is set
        // by the line that ends the window, after this; a line at its instant is in it.
        if self.past && !self.wanted {
            self.lines_in_window = SmallVec::new();
        } else if self.window.to.is_none_or(|to| at <= to) {
            self.lines_in_window.push((chunk, fact.line));
        }
        match fact.step {
            Step::Other => self.whole = true,
            Step::Wait { pid } => self.waits.push(pid),
            Step::Fail { pid } => {
                self.end_wait(pid);
            }
            // The timeline marks the taker's latest open hold orphaned; with none, it would
            // open one.
            Step::Orphan { taker } => {
                match self.holds.iter().rposition(|hold| hold.pid == taker.pid) {
                    Some(index) => self.holds[index].orphan_taker = Some(Box::new(taker)),
                    None => self.whole = true,
                }
            }
            // The timeline finds the hold released at the same instant by the same taker; with
            // none, it would end another.
            Step::OrphanEnd { taker } => {
                if later || released.flatten().is_none_or(|released| *released != taker) {
                    self.whole = true;
                }
            }
            Step::Acquire { pid, wait_ns } => {
                // A wait its own line did not tell, from `wait_ns`.
                let wait_ns = wait_ns.filter(|&ns| ns > 0);
                if !self.end_wait(pid)
                    && let Some(wait_ns) = wait_ns
                    && past
                    && span.begun_by_its_end(Some(at.saturating_sub(wait_ns)))
                {
                    self.whole = true;
                }
                self.holds.push(OpenHold {
                    pid,
                    taken: at,
                    orphan_taker: None,
                });
            }
            Step::Release { pid, held_ns } => {
                let acquired = held_ns.map(|held| at.saturating_sub(held));
                let open = match acquired {
                    Some(acquired) => self
                        .holds
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, hold)| (hold.taken.abs_diff(acquired), hold.pid != pid))
                        .map(|(index, _)| index),
                    None => self.holds.iter().rposition(|hold| hold.pid == pid),
                };
                match open {
                    Some(index) => {
                        self.released = Some(self.holds.remove(index).orphan_taker);
                    }
                    // A hold taken before the logs, released here.
                    None => {
                        if past && span.begun_by_its_end(acquired) {
                            self.whole = true;
                        }
                    }
                }
            }
        }
        // The first moment after the span with nothing open: what comes after is not under
        // way in it.
        if past && self.wanted && self.window.to.is_none() && self.idle() {
            self.window.to = Some(at);
        }
    }

    /// No hold or wait open.
    fn idle(&self) -> bool {
        self.holds.is_empty() && self.waits.is_empty()
    }

    fn end_wait(&mut self, pid: u32) -> bool {
        match self.waits.iter().rposition(|&waiter| waiter == pid) {
            Some(index) => {
                self.waits.remove(index);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Eight bytes at a time, the digits a line's value starts with read as one by one.
    #[test]
    fn leading_digits_read_as_a_byte_at_a_time() {
        let one_by_one = |bytes: &[u8]| {
            let digits = bytes
                .iter()
                .take_while(|byte| byte.is_ascii_digit())
                .count();
            let number = bytes[..digits].iter().fold(0u64, |number, &byte| {
                number.wrapping_mul(10).wrapping_add(u64::from(byte - b'0'))
            });
            (digits, number)
        };
        let all = "98765432109876543210123456789";
        for len in 0..=all.len() {
            for after in ["", ",", "}", "a", "/", ":", " ", "\u{80}", "\0", ",\"9\"}"] {
                let text = format!("{}{after}", &all[..len]);
                let bytes = text.as_bytes();
                assert_eq!(leading_digits(bytes), one_by_one(bytes), "{text}");
            }
        }
        for byte in 0..=u8::MAX {
            let bytes = [b'1', b'2', byte, b'4', b'5', b'6', b'7', b'8', b'9', b'0'];
            assert_eq!(leading_digits(&bytes), one_by_one(&bytes), "{byte}");
        }
    }

    /// Sixteen bytes at a time, what a line holds is what a byte search finds.
    #[test]
    fn a_lines_bytes_are_read_as_a_byte_search_reads_them() {
        for len in 0..48 {
            for at in 0..len {
                for special in [b'{', 0, 0x80, 0xff, b'a'] {
                    let mut bytes = vec![b'x'; len];
                    bytes[at] = special;
                    assert_eq!(
                        LineBytes::of(&bytes),
                        LineBytes {
                            nested: memchr::memchr2(b'{', 0, &bytes).is_some(),
                            ascii: bytes.is_ascii(),
                        },
                        "{bytes:?}"
                    );
                }
            }
        }
    }

    /// A lock line read straight in the tracer's key order reads as key by key: its fields, or
    /// None, the same for lines torn anywhere, with a key missing, given twice or out of order,
    /// and with values of every other shape.
    #[test]
    fn lines_read_straight_read_as_key_by_key() {
        let head = r#"{"event":"release","ts":"2026-11-27T05:04:50.602120982Z""#;
        let usual: Vec<(&str, &str)> = vec![
            ("host", r#""web-1""#),
            ("pid", "812"),
            ("start_time", "64955200000000"),
            ("comm", r#""backup.sh""#),
            ("kind", r#""flock""#),
            ("mode", r#""write""#),
            ("dev", r#""254:0""#),
            ("ino", "1002989"),
            ("generation", "231115525"),
            ("path", r#""/var/lib/jobs/job.lock""#),
            ("start", "0"),
            ("end", "null"),
            ("held_ns", "100242170"),
            ("reason", r#""unlock""#),
        ];
        let line = |pairs: &[(&str, &str)]| {
            let keys: String = pairs
                .iter()
                .map(|(key, value)| format!(r#","{key}":{value}"#))
                .collect();
            format!("{head}{keys}}}")
        };
        let mut lines = Vec::new();
        let whole = line(&usual);
        // Torn anywhere, and closed there.
        for cut in head.len()..whole.len() {
            lines.push(format!("{}}}", &whole[..cut]));
        }
        let values = [
            "null",
            r#""7""#,
            "0",
            "00",
            "-1",
            "1e5",
            "1.5",
            "true",
            "{}",
            "[1]",
            r#""""#,
            r#""a\"b""#,
            "12345678901234567890",
            "1234567890123456789",
            r#""fl\u006fck""#,
        ];
        for at in 0..usual.len() {
            for value in values {
                let mut pairs = usual.clone();
                pairs[at].1 = value;
                lines.push(line(&pairs));
            }
            let mut pairs = usual.clone();
            pairs.remove(at);
            lines.push(line(&pairs));
            for again in 0..usual.len() {
                let mut pairs = usual.clone();
                pairs.insert(again, usual[at]);
                lines.push(line(&pairs));
            }
            let mut pairs = usual.clone();
            pairs.swap(at, (at + 1) % usual.len());
            lines.push(line(&pairs));
            // Ended early, or with an unknown key, a container's path or a wait.
            for tail in [
                &[][..],
                &[("errno", r#""EAGAIN""#)],
                &[("host_path", r#""/srv/job.lock""#)],
                &[("wait_ns", "5000")],
            ] {
                let mut pairs = usual[..at].to_vec();
                pairs.extend_from_slice(tail);
                lines.push(line(&pairs));
            }
        }
        for line in &lines {
            let bytes = line.as_bytes();
            let Some(end) = super::head(bytes).map(|head| head.end) else {
                continue;
            };
            if !line[end..].starts_with(',') {
                continue;
            }
            let nested = LineBytes::of(&bytes[1..]).nested;
            // An unknown key first: every key is then read one by one.
            let by_key = format!(r#"{},"x":0{}"#, &line[..end], &line[end..]);
            assert_eq!(
                FlatLine::read(bytes, nested, end),
                FlatLine::read(by_key.as_bytes(), nested, end),
                "{line}"
            );
        }
    }

    /// Each usual next key is given the bit `key_bit` gives it.
    #[test]
    fn the_usual_next_keys_carry_their_own_bits() {
        let names = [
            "kind",
            "dev",
            "path",
            "generation",
            "start",
            "end",
            "mode",
            "reason",
            "comm",
            "pid",
            "wait_ns",
            "held_ns",
            "ino",
            "host",
            "host_path",
            "start_time",
        ];
        let mut predicted = 0;
        for bit in 0..=OTHER_KEY {
            let Some((key, next)) = usually_after(bit) else {
                continue;
            };
            let name = names
                .iter()
                .find(|name| {
                    key.len() == name.len() + 3 && key.starts(format!(r#""{name}":"#).as_bytes())
                })
                .unwrap_or_else(|| panic!("the key after bit {bit} is not one the replay reads"));
            assert_eq!(key_bit(name.as_bytes()), next, "{name}");
            predicted += 1;
        }
        assert_eq!(predicted, 15);
    }

    /// After the line's head and after each key of the tracer's usual lines, the key it writes
    /// next is the one guessed.
    #[test]
    fn the_guessed_next_key_is_the_one_the_tracer_writes() {
        for keys in crate::report::tests::usual_tracer_keys() {
            assert_eq!(keys[..2], ["event", "ts"]);
            let mut after = OTHER_KEY;
            for key in &keys[2..] {
                let (guessed, bit) = usually_after(after).unwrap();
                assert!(
                    guessed.starts(format!(r#""{key}":"#).as_bytes()),
                    "after bit {after}, {key} in {keys:?}"
                );
                assert_eq!(bit, key_bit(key.as_bytes()));
                after = bit;
            }
        }
    }

    /// The search sixteen and eight bytes at a time finds what a byte-at-a-time one finds,
    /// wherever the quote or backslash is, next to any other byte.
    #[test]
    fn quotes_and_backslashes_are_found_where_a_byte_search_finds_them() {
        for len in 0..48 {
            for at in 0..=len {
                for special in [b'"', b'\\'] {
                    for filler in [b'a', 0, 0x80, 0xff, b'"' ^ 1, b'\\' + 1, b'!'] {
                        let mut bytes = vec![filler; len];
                        if at < len {
                            bytes[at] = special;
                        }
                        assert_eq!(
                            quote_or_backslash(&bytes),
                            short_find(&bytes, b'"', b'\\'),
                            "{bytes:?}"
                        );
                    }
                }
            }
        }
    }
}
