//! The first of two reads for `--since`, `--until` and `--at`: which locks were busy in the
//! span, found from the lines' heads and a few fields, so that the second read parses only
//! those locks' lines.
//!
//! A lock is picked when a line about it is in the span, when a hold or a wait of it was open
//! as the span began (replayed from its acquires, releases, waits and refusals before it, as
//! the timeline folds them), or when a line after the span tells of a hold or a wait begun
//! before its end (a release whose acquire is not in the logs, a wait told only by `wait_ns`).
//! Whatever this replay cannot follow exactly picks the lock too, to be told from all its
//! lines: POSIX locks, orphans, `held` lines, several locks under one inode and host, lines out
//! of time order or repeated, the tracer's own locks, and lines not in the tracer's own shape
//! (those are parsed, and their inode picked on every host).

use memchr::memmem;
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

use super::{
    BadInput,
    input::{self, Source},
    line::{Names, Nanos, Origin, Parsed, head, parse},
    scan::{Candidates, line_host, line_ino, string_value},
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
        self.since.is_none_or(|since| at >= since) && self.until.is_none_or(|until| at <= until)
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

/// The inodes, each on the hosts whose lines about it are wanted, of the locks that may have
/// been busy in the span.
pub fn inodes(sources: &[Source], span: Span, jobs: usize) -> Result<Candidates, BadInput> {
    let fields = Fields::new();
    let mut replay = Replay::default();
    for (index, source) in sources.iter().enumerate() {
        input::read_pieces(
            source,
            PIECE,
            jobs,
            |bytes| Piece::read(bytes, span, &fields),
            |_, piece| replay.merge(piece, index as u32, span),
        )?;
    }
    let found = replay.finish();
    if std::env::var_os("AIMLOCK_DEBUG_BUSY").is_some() {
        eprintln!("busy: {} inodes, {} keys", found.len(), found.values().map(|h| h.len().max(1)).sum::<usize>());
    }
    Ok(found)
}

/// What one lock line says, as far as the replay needs it.
#[derive(Clone, Copy, Debug)]
struct Fact {
    lock: u32,
    at: Nanos,
    step: Step,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// In the span: the lock is picked.
    InSpan,
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
    /// Anything the replay does not follow: the lock is picked.
    Other,
}

/// One (inode, host) as a piece's lines name it, and the rest of the lock's identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PieceLock<'a> {
    ino: u64,
    host: &'a [u8],
    identity: Identity<'a>,
}

/// What, besides the inode and host, makes a lock line's lock: one lock per inode and host
/// is what the replay follows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Identity<'a> {
    kind: &'a [u8],
    dev: &'a [u8],
    generation: Option<u64>,
    start: Option<u64>,
    end: Option<u64>,
}

/// An identity kept across pieces.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct OwnedIdentity {
    kind: Box<[u8]>,
    dev: Box<[u8]>,
    generation: Option<u64>,
    start: Option<u64>,
    end: Option<u64>,
}

impl Identity<'_> {
    fn owned(&self) -> OwnedIdentity {
        OwnedIdentity {
            kind: self.kind.into(),
            dev: self.dev.into(),
            generation: self.generation,
            start: self.start,
            end: self.end,
        }
    }
}

/// The finders for the fields read.
struct Fields {
    ino: memmem::Finder<'static>,
    kind: memmem::Finder<'static>,
    dev: memmem::Finder<'static>,
    mode: memmem::Finder<'static>,
    reason: memmem::Finder<'static>,
    generation: memmem::Finder<'static>,
    start: memmem::Finder<'static>,
    end: memmem::Finder<'static>,
    pid: memmem::Finder<'static>,
    wait_ns: memmem::Finder<'static>,
    held_ns: memmem::Finder<'static>,
    own: memmem::Finder<'static>,
}

impl Fields {
    fn new() -> Self {
        let finder = |needle: &str| memmem::Finder::new(needle.as_bytes()).into_owned();
        Self {
            ino: finder(r#""ino":"#),
            kind: finder(r#""kind":""#),
            dev: finder(r#""dev":""#),
            mode: finder(r#""mode":"#),
            reason: finder(r#""reason":"#),
            generation: finder(r#""generation":"#),
            start: finder(r#""start":"#),
            end: finder(r#""end":"#),
            pid: finder(r#","pid":"#),
            wait_ns: finder(r#""wait_ns":"#),
            held_ns: finder(r#""held_ns":"#),
            own: finder(r#""comm":"aimlock""#),
        }
    }
}

/// A piece's lock lines, in order.
#[derive(Default)]
struct Piece {
    locks: Vec<(u64, Box<[u8]>, OwnedIdentity)>,
    facts: Vec<Fact>,
    /// Locks of lines the replay cannot follow.
    picked: Vec<(u64, Box<[u8]>)>,
    /// Inodes of lock lines whose inode only a parse finds, wanted on every host (as the
    /// second read keeps such lines).
    parsed: FxHashSet<u64>,
}

impl Piece {
    fn read(bytes: &[u8], span: Span, fields: &Fields) -> Self {
        let mut piece = Piece::default();
        let mut places: FxHashMap<PieceLock<'_>, u32> = FxHashMap::default();
        let mut names = Names::default();
        for line in bytes.split(|&byte| byte == b'\n') {
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            match read_line(line, span, fields) {
                Read::NotALock => {}
                Read::Lock(lock, at, step) => {
                    let next = places.len() as u32;
                    let index = *places.entry(lock).or_insert(next);
                    piece.facts.push(Fact {
                        lock: index,
                        at,
                        step,
                    });
                }
                Read::Pick(ino, host) => piece.picked.push((ino, host.into())),
                Read::Parse => {
                    let origin = Origin { source: 0, line: 0 };
                    if let Ok(Parsed::Lock(key, _, _)) = parse(line, origin, &mut names) {
                        piece.parsed.insert(key.ino);
                    }
                }
            }
        }
        let mut locks: Vec<_> = places.into_iter().collect();
        locks.sort_unstable_by_key(|(_, index)| *index);
        piece.locks = locks
            .into_iter()
            .map(|(lock, _)| (lock.ino, Box::from(lock.host), lock.identity.owned()))
            .collect();
        piece
    }
}

enum Read<'a> {
    /// Not a lock line (a start, stop or exit, a deadlock, an inheritance), or none at all.
    NotALock,
    Lock(PieceLock<'a>, Nanos, Step),
    /// A line about this inode and host that the byte reading does not vouch for.
    Pick(u64, &'a [u8]),
    /// A line whose inode only a parse finds.
    Parse,
}

fn read_line<'a>(line: &'a [u8], span: Span, fields: &Fields) -> Read<'a> {
    let Some(head) = head(line) else {
        return Read::Parse;
    };
    match head.event {
        EventKind::Start
        | EventKind::Stop
        | EventKind::Exit
        | EventKind::Deadlock
        | EventKind::Inherit => return Read::NotALock,
        _ => {}
    }
    let Some(ino) = line_ino(&fields.ino, line) else {
        return Read::Parse;
    };
    let host = line_host(line);
    let unusual = || Read::Pick(ino, host);
    // Flat, whole and text, as the tracer writes the lines the replay follows: not two lines
    // run together (a torn write), no zeroed bytes.
    if memchr::memchr2(b'{', 0, &line[1..]).is_some() || std::str::from_utf8(line).is_err() {
        return unusual();
    }
    let identity = |kind| -> Option<Identity<'a>> {
        Some(Identity {
            kind,
            dev: string_value(line, fields.dev.needle())?,
            generation: number(line, &fields.generation)?,
            start: number(line, &fields.start)?,
            end: number(line, &fields.end)?,
        })
    };
    let Some(kind) = string_value(line, fields.kind.needle()) else {
        return unusual();
    };
    let Some(identity) = identity(kind) else {
        return unusual();
    };
    let lock = PieceLock {
        ino,
        host,
        identity,
    };
    if span.contains(head.at) {
        return Read::Lock(lock, head.at, Step::InSpan);
    }
    if !matches!(kind, b"flock" | b"ofd" | b"lease" | b"posix")
        || !string_is(line, &fields.mode, &[b"read", b"write", b"unlock"])
        || !string_is(
            line,
            &fields.reason,
            &[b"unlock", b"close", b"exit", b"convert", b"lost"],
        )
    {
        return unusual();
    }
    if kind == b"posix" || fields.own.find(line).is_some() {
        return Read::Lock(lock, head.at, Step::Other);
    }
    let Some(Some(pid)) = number(line, &fields.pid) else {
        return unusual();
    };
    let Ok(pid) = u32::try_from(pid) else {
        return unusual();
    };
    let step = match head.event {
        EventKind::Acquire => match number(line, &fields.wait_ns) {
            Some(wait_ns) => Step::Acquire { pid, wait_ns },
            None => return unusual(),
        },
        EventKind::Release => match number(line, &fields.held_ns) {
            Some(held_ns) => Step::Release { pid, held_ns },
            None => return unusual(),
        },
        EventKind::Wait => Step::Wait { pid },
        EventKind::Fail => Step::Fail { pid },
        _ => Step::Other,
    };
    Read::Lock(lock, head.at, step)
}

/// A number field: Some(None) when absent or null, None when it is something else.
fn number(line: &[u8], field: &memmem::Finder<'_>) -> Option<Option<u64>> {
    let Some(found) = field.find(line) else {
        return Some(None);
    };
    let rest = &line[found + field.needle().len()..];
    if rest.starts_with(b"null") {
        return Some(None);
    }
    let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
    if !matches!(rest.get(digits), Some(b',' | b'}')) || digits == 0 || digits > 19 {
        return None;
    }
    std::str::from_utf8(&rest[..digits])
        .ok()?
        .parse()
        .ok()
        .map(Some)
}

/// Whether a string field is absent, null or one of `known`.
fn string_is(line: &[u8], field: &memmem::Finder<'_>, known: &[&[u8]]) -> bool {
    let Some(found) = field.find(line) else {
        return true;
    };
    let rest = &line[found + field.needle().len()..];
    if rest.starts_with(b"null") {
        return true;
    }
    known.iter().any(|name| {
        rest.strip_prefix(b"\"")
            .and_then(|rest| rest.strip_prefix(*name))
            .is_some_and(|rest| rest.starts_with(b"\""))
    })
}

/// Each lock's state as its lines are replayed in log order.
#[derive(Default)]
struct Replay {
    places: FxHashMap<(u64, Box<[u8]>), usize>,
    locks: Vec<Lock>,
    parsed: FxHashSet<u64>,
}

struct Lock {
    ino: u64,
    host: Box<[u8]>,
    identity: OwnedIdentity,
    picked: bool,
    /// The state as the span ended has been looked at.
    past: bool,
    /// The last line's time, event and source.
    last: Option<(Nanos, Step, u32)>,
    /// Unreleased holds, in the order taken: the taker's pid and when.
    holds: SmallVec<[(u32, Nanos); 2]>,
    /// Open waits' pids, in the order begun.
    waits: SmallVec<[u32; 2]>,
}

impl Replay {
    fn merge(&mut self, piece: Piece, source: u32, span: Span) {
        self.parsed.extend(piece.parsed);
        let places: Vec<usize> = piece
            .locks
            .into_iter()
            .map(|(ino, host, identity)| {
                let place = self.place(ino, host, identity.clone());
                let lock = &mut self.locks[place];
                if lock.identity != identity {
                    lock.picked = true;
                }
                place
            })
            .collect();
        for fact in piece.facts {
            let lock = &mut self.locks[places[fact.lock as usize]];
            if !lock.picked {
                lock.replay(fact, source, span);
            }
        }
        for (ino, host) in piece.picked {
            let place = self.place(ino, host, OwnedIdentity::default());
            self.locks[place].picked = true;
        }
    }

    /// The lock of this inode and host, new with this identity if not seen before.
    fn place(&mut self, ino: u64, host: Box<[u8]>, identity: OwnedIdentity) -> usize {
        let next = self.locks.len();
        let place = *self.places.entry((ino, host.clone())).or_insert(next);
        if place == next {
            self.locks.push(Lock {
                ino,
                host,
                identity,
                picked: false,
                past: false,
                last: None,
                holds: SmallVec::new(),
                waits: SmallVec::new(),
            });
        }
        place
    }

    fn finish(self) -> Candidates {
        let mut candidates = Candidates::default();
        for lock in self.locks {
            let busy_at_the_end = !lock.past && !lock.idle();
            if (lock.picked || busy_at_the_end) && !self.parsed.contains(&lock.ino) {
                candidates.entry(lock.ino).or_default().push(lock.host);
            }
        }
        for ino in self.parsed {
            candidates.insert(ino, Vec::new());
        }
        candidates
    }
}

impl Lock {
    /// Folds one line as the timeline would, as far as whether anything was under way in the
    /// span; picks the lock when it was, or when the replay cannot tell.
    fn replay(&mut self, fact: Fact, source: u32, span: Span) {
        let at = fact.at;
        if let Some((last, step, last_source)) = self.last {
            // The timeline sorts by time and drops a line repeated at the same instant: lines
            // out of order, or the same event twice at one instant, are left to it.
            let same_kind = std::mem::discriminant(&step) == std::mem::discriminant(&fact.step);
            if at < last || (at == last && (same_kind || source != last_source)) {
                self.picked = true;
                return;
            }
        }
        self.last = Some((at, fact.step, source));
        if span.after(at) && !self.past {
            self.past = true;
            // Nothing in the span: what was open as it ended was open all through it.
            if !self.idle() {
                self.picked = true;
                return;
            }
        }
        let past = span.after(at);
        match fact.step {
            Step::InSpan | Step::Other => self.picked = true,
            Step::Wait { pid } => self.waits.push(pid),
            Step::Fail { pid } => {
                self.end_wait(pid);
            }
            Step::Acquire { pid, wait_ns } => {
                // A wait its own line did not tell, from `wait_ns`.
                let wait_ns = wait_ns.filter(|&ns| ns > 0);
                if !self.end_wait(pid)
                    && let Some(wait_ns) = wait_ns
                    && past
                    && span.begun_by_its_end(Some(at.saturating_sub(wait_ns)))
                {
                    self.picked = true;
                }
                self.holds.push((pid, at));
            }
            Step::Release { pid, held_ns } => {
                let acquired = held_ns.map(|held| at.saturating_sub(held));
                let open = match acquired {
                    Some(acquired) => self
                        .holds
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, (taker, taken))| (taken.abs_diff(acquired), *taker != pid))
                        .map(|(index, _)| index),
                    None => self.holds.iter().rposition(|(taker, _)| *taker == pid),
                };
                match open {
                    Some(index) => {
                        self.holds.remove(index);
                    }
                    // A hold taken before the logs, released here.
                    None => {
                        if past && span.begun_by_its_end(acquired) {
                            self.picked = true;
                        }
                    }
                }
            }
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
