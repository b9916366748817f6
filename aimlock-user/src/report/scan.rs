//! Parsing the logs into each lock's lines. A chunk is cut into pieces at line ends, one per
//! job; each piece is scanned on its own (its own strings, its own locks) and the pieces are
//! merged in log order, so that the result is the one a single reader would have.
//!
//! What a query does not need is not parsed: the selection names the inodes (and hosts) whose
//! lines are kept, and the tracer's lines start alike (`{"event":"NAME","ts":"TIME"`), so a
//! line of another lock is passed over after a look at its head and its `"ino":`.

use std::{
    collections::hash_map::Entry,
    io,
    sync::{Arc, LazyLock, Mutex},
};

use memchr::memmem;
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

use super::{
    BadInput, OWN_COMMAND, Processes,
    busy::{ChunkLine, Cold, ColdChunks, Windows},
    input::{self, Source},
    line::{
        ByteRange, Exit, LockKey, Name, Names, Nanos, Origin, Parsed, Paths, SeenPath, Skip, head,
        is_text_line, line_ts, parse,
    },
    shards::Shards,
    spill::{LOCK_KEPT_LINES, SortedLines, Spill},
    stored::{Stored, StoredLines},
};
use crate::events::{EventKind, LockKind};

/// Bytes each job parses at a time.
const PIECE: usize = 8 << 20;
/// How many lines ahead the merge asks for the memory of the lock a line goes to.
const FETCH_AHEAD: usize = 8;
/// How many lines at the start or end of a chunk may be damaged before its first or last
/// timestamp is given up.
const TS_PROBES: usize = 64;
/// How the tracer writes an exit line's event.
const EXIT_NEEDLE: &[u8] = br#""event":"exit""#;
const INO_FIELD: &[u8] = br#""ino":"#;

/// Which lock lines to keep. Exit lines are always kept (they end POSIX locks).
pub struct Selection {
    /// Only lines about these inode numbers (and, when a first read found them, only on the
    /// hosts it found them on); None: every inode.
    inodes: Option<Candidates>,
    /// Only this device (`--inode`).
    dev: Option<String>,
    /// Only lines of these hosts; empty: every host.
    hosts: Vec<String>,
    reading: Reading,
    /// Of some inodes on some hosts, only the lines of a window of time (`--since`,
    /// `--until`).
    windows: Option<Windows>,
    /// Per source, the chunks whose lines are only counted (see `busy::ColdChunks`).
    cold: Vec<ColdChunks>,
    /// Bytes each job parses at a time.
    piece_bytes: usize,
}

/// How lines are picked for parsing.
enum Reading {
    /// Every line is parsed.
    Everything,
    /// Every line's head is read; the lines of the selected inodes and hosts, and those whose
    /// head is not the tracer's (damaged or unknown lines, counted as the full parse counts
    /// them), are parsed.
    Heads {
        ino: Box<memmem::Finder<'static>>,
        /// `"host":"NAME"` of each selected host, when every name can be searched for as is.
        hosts: Vec<memmem::Finder<'static>>,
    },
    /// `--inode`: only the lines naming the inode (`"ino":N`) and exit lines are looked at;
    /// damage elsewhere goes uncounted.
    Mention {
        needle: Box<memmem::Finder<'static>>,
        exit: Box<memmem::Finder<'static>>,
    },
}

impl Selection {
    /// `inodes`: the inode numbers whose lines are kept (None: all). `mention`: only lines
    /// naming them are looked at (`--inode`).
    pub fn new(
        inodes: Option<Candidates>,
        dev: Option<String>,
        hosts: Vec<String>,
        mention: Option<u64>,
    ) -> Self {
        let reading = match (mention, &inodes) {
            (Some(ino), _) => Reading::Mention {
                needle: Box::new(
                    memmem::Finder::new(format!("\"ino\":{ino}").as_bytes()).into_owned(),
                ),
                exit: Box::new(memmem::Finder::new(EXIT_NEEDLE).into_owned()),
            },
            (None, None) if hosts.is_empty() => Reading::Everything,
            (None, _) => Reading::Heads {
                ino: Box::new(memmem::Finder::new(INO_FIELD).into_owned()),
                hosts: host_finders(&hosts),
            },
        };
        Self {
            inodes,
            dev,
            hosts,
            reading,
            windows: None,
            cold: Vec::new(),
            piece_bytes: PIECE,
        }
    }

    /// The same selection, of whose locks named in `windows` only the lines in their window
    /// are read (when lines are picked by their heads).
    pub fn within(mut self, windows: Option<Windows>) -> Self {
        self.windows = windows;
        self
    }

    /// The same selection, in which the lines of these chunks of each source are only counted.
    pub fn skipping(mut self, cold: Vec<ColdChunks>) -> Self {
        self.cold = cold;
        self
    }

    /// What the first read found of the chunk of `source` at `start`, `len` bytes long, if only
    /// the lines it names are to be parsed (see [`Cold`]).
    fn cold_chunk(&self, source: usize, start: u64, len: usize) -> Option<&Cold> {
        if !matches!(self.reading, Reading::Heads { .. }) {
            return None;
        }
        self.cold
            .get(source)?
            .get(&start)
            .filter(|cold| cold.len == len)
    }

    /// Whether a line of this inode and host (as the line writes it), at this time, is in the
    /// lock's window, if it has one.
    fn in_window(&self, ino: u64, host: &[u8], at: Nanos) -> bool {
        let Some(windows) = &self.windows else {
            return true;
        };
        windows.get(&ino).is_none_or(|hosts| {
            hosts
                .iter()
                .find(|(known, _)| same_bytes(known, host))
                .is_none_or(|(_, window)| window.contains(at))
        })
    }

    /// The same selection, read in pieces of about `bytes` (whole lines: at least one).
    #[cfg(test)]
    pub fn in_pieces_of(mut self, bytes: usize) -> Self {
        self.piece_bytes = bytes;
        self
    }

    /// The same selection, made by parsing every line.
    #[cfg(test)]
    pub fn parsing_every_line(mut self) -> Self {
        self.reading = Reading::Everything;
        self
    }

    /// Whether a parsed lock line is one the query keeps.
    fn keeps(&self, key: &LockKey, names: &Names) -> bool {
        self.inodes
            .as_ref()
            .is_none_or(|inodes| inodes.contains_key(&key.ino))
            && self
                .dev
                .as_deref()
                .is_none_or(|dev| names.get(key.dev) == dev)
            && self.keeps_host(key.host, names)
    }

    fn keeps_host(&self, host: Name, names: &Names) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|name| names.get(host) == name)
    }
}

/// `"host":"NAME"` finders, or none if a name would be escaped in JSON (then each parsed line
/// is checked instead).
fn host_finders(hosts: &[String]) -> Vec<memmem::Finder<'static>> {
    if hosts.iter().any(|host| {
        host.bytes()
            .any(|byte| byte == b'"' || byte == b'\\' || byte < 0x20)
    }) {
        return Vec::new();
    }
    hosts
        .iter()
        .map(|host| memmem::Finder::new(format!("\"host\":\"{host}\"").as_bytes()).into_owned())
        .collect()
}

/// Inode numbers, each with the hosts (as their lines write them, `""` for none) whose lines
/// about it are wanted. Empty host lists: on any host (`--inode`).
pub type Candidates = FxHashMap<u64, Vec<Box<[u8]>>>;

const HOST_FIELD: &[u8] = br#""host":""#;

static HOST_FINDER: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(HOST_FIELD));

/// A line's host as the line writes it (still escaped); empty when it names none.
pub fn line_host(line: &[u8]) -> &[u8] {
    HOST_FINDER
        .find(line)
        .and_then(|at| string_from(line, at + HOST_FIELD.len()))
        .unwrap_or_default()
}

/// Equal bytes, compared inline: a few short strings (hosts, paths) are compared on every
/// line, where a call to `memcmp` for each would cost more than the comparison.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut words_a, mut words_b) = (a.chunks_exact(8), b.chunks_exact(8));
    let word = |bytes: &[u8]| u64::from_ne_bytes(bytes.try_into().expect("8 bytes"));
    if (&mut words_a)
        .zip(&mut words_b)
        .any(|(x, y)| word(x) != word(y))
    {
        return false;
    }
    let (rest_a, rest_b) = (words_a.remainder(), words_b.remainder());
    (0..rest_a.len()).all(|index| rest_a[index] == rest_b[index])
}

/// The string after a line's first `field` (`"name":"`), between the quotes, still escaped.
pub fn string_value<'a>(line: &'a [u8], field: &[u8]) -> Option<&'a [u8]> {
    string_from(line, memmem::find(line, field)? + field.len())
}

/// The string that starts at `from`, up to its closing quote, still escaped.
pub fn string_from(line: &[u8], from: usize) -> Option<&[u8]> {
    let mut escaped = false;
    for (offset, &byte) in line[from..].iter().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return Some(&line[from..from + offset]),
            _ => {}
        }
    }
    None
}

/// The number after a line's first `"ino":`.
pub fn line_ino(finder: &memmem::Finder<'_>, line: &[u8]) -> Option<u64> {
    let from = finder.find(line)? + finder.needle().len();
    let digits = line[from..]
        .iter()
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    if digits == 0 {
        return None;
    }
    line[from..from + digits]
        .iter()
        .try_fold(0u64, |number, &digit| {
            number.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        })
}

/// The lines of one lock, in file order, and the paths it was seen under.
#[derive(Debug, Default)]
pub struct LockLines {
    pub records: StoredLines,
    pub paths: Paths,
}

impl LockLines {
    fn absorb(&mut self, other: LockLines) {
        self.records.append(other.records);
        for path in other.paths {
            if path.is_new_in(&mut self.paths) {
                self.paths.push(path);
            }
        }
    }
}

/// What was read from one source.
#[derive(Debug, Default)]
pub struct SourceSummary {
    pub name: String,
    pub bytes: u64,
    pub lines: u64,
    pub first_ts: Option<Nanos>,
    pub unreadable: u64,
    pub unknown_events: u64,
    pub first_skipped_line: Option<u64>,
    /// Its first line is in `aimlock trace --format text`'s form, which report cannot read.
    pub text_format: bool,
    /// Why reading stopped before the end (a truncated gzip stream, an I/O error).
    pub cut_short: Option<String>,
}

/// One file on one host: what generation tags are tracked by.
type InodeId = (Name, Name, u64);

fn inode_of(key: &LockKey) -> InodeId {
    (key.host, key.dev, key.ino)
}

/// Everything kept from the logs.
#[derive(Debug)]
pub struct Scan {
    pub names: Names,
    /// Every lock's lines, each kept by the thread of its inode (see [`shard_of`]).
    pub shards: Shards<LockShard>,
    /// Every process exit, in file order: one vector rather than one per process, whose
    /// overhead would double their memory.
    pub exits: Vec<Exit>,
    pub sources: Vec<SourceSummary>,
    /// The last time any log speaks of.
    pub end: Option<Nanos>,
}

/// The shard that keeps the lines of this inode number: the lines of one file, of every
/// generation, on every host, are kept together.
fn shard_of(ino: u64, shards: usize) -> usize {
    (ino % shards as u64) as usize
}

/// The locks of some inodes, kept by one thread from the read to the fold.
#[derive(Debug, Default)]
pub struct LockShard {
    /// Every lock's lines once the logs are read, in the order of their places (see
    /// [`LockShard::visit`]). If lines were written out, only their paths are kept here.
    locks: Vec<(LockKey, LockLines)>,
    /// If lines were written out: the place of each of `locks`.
    places_kept: Vec<usize>,
    /// While reading: each lock's place in `lines` (`locks` is filled from them at the end), so
    /// that a piece's lines are added with one look-up per lock, not per line.
    places: FxHashMap<LockKey, usize>,
    lines: Vec<LockLines>,
    /// Of each inode, what the lines that do not say their generation need (see
    /// [`Generations`]).
    generations: FxHashMap<InodeId, Generations>,
    /// Lines kept in memory before they are written out (none: never).
    keep_at_most: Option<usize>,
    kept: usize,
    spill: Option<Spill>,
    /// Why lines could not be written out.
    spill_failed: Option<io::Error>,
    /// aimlock's command name, once a line names it: the lines it is the actor of stay in
    /// memory (see [`LockShard::visit`]).
    own: Option<Name>,
    written: Written,
}

/// What the lines written out tell: of the processes, and which pids they name.
#[derive(Debug, Default)]
pub(super) struct Written {
    pub(super) processes: Processes,
    pub(super) pids: FxHashSet<u32>,
}

impl Written {
    /// Whether a line of a lock on `host` stays in memory: those aimlock (`own`) is the actor
    /// of do. What the others tell is noted, as they are written out.
    fn note(&mut self, host: Name, own: Option<Name>, line: &Stored) -> bool {
        if own.is_some_and(|own| line.actor().comm == own) {
            return true;
        }
        self.processes.add_line(host, line);
        self.pids.extend(line.actors().map(|actor| actor.pid));
        false
    }
}

/// The latest generation of an inode, for the lines that do not say theirs (found in the
/// kernel's table: `held`, releases the ring lost), and the keys such lines made before a line
/// said one, with their places. One look-up finds them all: the merge makes one for each lock
/// of each piece.
#[derive(Debug, Default)]
struct Generations {
    latest: Option<u32>,
    untagged: SmallVec<[(LockKey, usize); 1]>,
}

/// A line kept, with its lock's index in its piece's locks.
type PieceLine = (u32, Stored, ByteRange);

/// Lists of lines the shards have emptied.
type Emptied = Arc<Mutex<Vec<Vec<PieceLine>>>>;

/// What every shard needs of a piece to add its lines: its locks and generations, and what its
/// names are among the report's.
struct PieceLocks {
    names: Vec<Name>,
    /// aimlock's command name among the report's, if a line so far names it.
    own: Option<Name>,
    locks: Vec<PieceLock>,
    generations: FxHashMap<InodeId, (u32, u32)>,
    /// The lines of the source before the piece's first.
    lines_before: u64,
}

impl LockShard {
    /// Hands each lock's lines kept in memory to `visit`, in the order of their places. A lock
    /// whose lines it leaves empty, and none written out, is gone. What the lines written out
    /// tell was gathered as they were written (see [`LockShard::written`]): they are never
    /// aimlock's own (their actor is not aimlock), which is all `visit` may leave out.
    pub fn visit(&mut self, mut visit: impl FnMut(&LockKey, &mut LockLines)) {
        if self.spill.is_some() {
            for (key, lines) in &mut self.locks {
                visit(key, lines);
            }
            return;
        }
        self.locks.retain_mut(|(key, lines)| {
            visit(key, lines);
            !lines.records.is_empty()
        });
    }

    /// What the lines written out tell.
    pub(super) fn written(&mut self) -> Written {
        std::mem::take(&mut self.written)
    }

    /// Gives each lock's lines to `take`, in the order of their places: those kept in memory,
    /// with those of runs read back after them, and the lock's sorted runs if it has some. The
    /// shard keeps no lock after.
    pub fn drain(
        &mut self,
        mut take: impl FnMut(LockKey, LockLines, Option<SortedLines<'_>>) -> io::Result<()>,
    ) -> io::Result<()> {
        let locks = std::mem::take(&mut self.locks);
        let Some(mut spill) = self.spill.take() else {
            for (key, lines) in locks {
                take(key, lines, None)?;
            }
            return Ok(());
        };
        let mut sorted = spill.take_sorted();
        let mut read_back = spill.read_back();
        for ((key, mut lines), &place) in locks.into_iter().zip(&self.places_kept) {
            read_back.lines_of(place, &mut lines.records)?;
            let runs = sorted.remove(&(place as u32));
            take(key, lines, runs.map(|runs| spill.sorted_lines(runs)))?;
        }
        Ok(())
    }

    /// Why lines could not be written out, if they could not: the report cannot be made.
    pub fn spill_failed(&mut self) -> Option<io::Error> {
        self.spill_failed.take()
    }

    /// Writes out, in time order, the lines of each of `locks` (places, with their keys) other
    /// than POSIX that keeps more in memory than a lock may, but those aimlock is the actor of.
    fn spill_long_histories(&mut self, locks: impl Iterator<Item = (usize, LockKey)>) {
        let Some(most) = self.keep_at_most.map(|most| most.min(LOCK_KEPT_LINES)) else {
            return;
        };
        for (place, key) in locks {
            let lines = &mut self.lines[place].records;
            if key.kind == LockKind::Posix || lines.len() <= most {
                continue;
            }
            let before = lines.len();
            let (own, written) = (self.own, &mut self.written);
            let result = self
                .spill
                .take()
                .map_or_else(Spill::create, Ok)
                .and_then(|mut spill| {
                    spill.write_sorted(place, lines, |line| written.note(key.host, own, line))?;
                    Ok(spill)
                });
            let after = self.lines[place].records.len();
            if !self.keep(result) {
                return;
            }
            self.kept -= before - after;
        }
    }

    /// Writes out the lines kept in memory, if there are more than the shard may keep, but
    /// those aimlock is the actor of.
    fn spill_if_over(&mut self) {
        if self.keep_at_most.is_none_or(|most| self.kept <= most) {
            return;
        }
        let mut hosts = vec![None; self.lines.len()];
        for (key, &place) in &self.places {
            hosts[place] = Some(key.host);
        }
        let (own, written) = (self.own, &mut self.written);
        let mut stayed = 0;
        let records = self.lines.iter_mut().map(|lock| &mut lock.records);
        let result = self
            .spill
            .take()
            .map_or_else(Spill::create, Ok)
            .and_then(|mut spill| {
                spill.write_run(records, |place, line| {
                    let host = hosts[place].expect("a lock with lines has a key");
                    let stays = written.note(host, own, line);
                    stayed += usize::from(stays);
                    stays
                })?;
                Ok(spill)
            });
        if self.keep(result) {
            self.kept = stayed;
        }
    }

    /// Keeps the spill lines were written to, or why they could not be: then some may be
    /// lost, and the report stops once the logs are read. Whether they were written.
    fn keep(&mut self, written: io::Result<Spill>) -> bool {
        match written {
            Ok(spill) => {
                self.spill = Some(spill);
                true
            }
            Err(err) => {
                self.spill_failed = Some(err);
                self.keep_at_most = None;
                false
            }
        }
    }

    /// Adds this shard's lines of a piece, the next in log order; `mine` tells its inodes.
    /// Gives back their list, emptied.
    fn merge(
        &mut self,
        piece: &PieceLocks,
        mut records: Vec<PieceLine>,
        mine: impl Fn(u64) -> bool,
    ) -> Vec<PieceLine> {
        let name = |name: Name| piece.names[name.index()];
        let rekey = |key: LockKey| LockKey {
            host: name(key.host),
            dev: name(key.dev),
            ..key
        };
        // Lines that did not say their generation before any line of the piece did: they
        // belong to the latest generation seen before the piece, or, if none, to the first one
        // said (see `with_generation`).
        let mut places = Vec::new();
        let untagged_locks = piece
            .locks
            .iter()
            .filter(|lock| lock.key.generation == 0 && mine(lock.key.ino));
        for lock in untagged_locks {
            let key = rekey(lock.key);
            let inode = self.generations.entry(inode_of(&key)).or_default();
            let place = match inode.latest {
                Some(generation) => place_in(
                    &mut self.places,
                    &mut self.lines,
                    LockKey { generation, ..key },
                ),
                None => match inode.untagged.iter().find(|(known, _)| *known == key) {
                    Some(&(_, place)) => place,
                    None => {
                        let place = place_in(&mut self.places, &mut self.lines, key);
                        inode.untagged.push((key, place));
                        place
                    }
                },
            };
            places.push(place);
        }
        let said = piece
            .generations
            .iter()
            .filter(|((_, _, ino), _)| mine(*ino));
        for (&(host, dev, ino), &(first, last)) in said {
            let inode = self
                .generations
                .entry((name(host), name(dev), ino))
                .or_default();
            // The first generation said claims the keys of the lines before it.
            let claimed = match inode.latest {
                None => std::mem::take(&mut inode.untagged),
                Some(_) => SmallVec::new(),
            };
            inode.latest = Some(last);
            for (old, _) in claimed {
                if let Some(place) = self.places.remove(&old) {
                    let lines = std::mem::take(&mut self.lines[place]);
                    let target = self.place(LockKey {
                        generation: first,
                        ..old
                    });
                    if let Some(spill) = &mut self.spill {
                        spill.moved(place, target);
                    }
                    self.lines[target].absorb(lines);
                    // The untagged lines of this piece go where the claimed ones went.
                    for same in places.iter_mut().filter(|same| **same == place) {
                        *same = target;
                    }
                }
            }
        }
        // `places` follows the untagged locks, then the tagged ones, each in piece order; the
        // locks of other shards have none.
        let mut untagged = places.into_iter();
        let piece_places: Vec<usize> = piece
            .locks
            .iter()
            .map(|lock| match lock.key.generation {
                _ if !mine(lock.key.ino) => usize::MAX,
                0 => untagged.next().expect("a place for each untagged lock"),
                _ => self.place(rekey(lock.key)),
            })
            .collect();
        for (lock, &place) in piece.locks.iter().zip(&piece_places) {
            if place == usize::MAX {
                continue;
            }
            let paths = &mut self.lines[place].paths;
            let seen = lock.paths.iter().map(|seen| SeenPath {
                path: name(seen.path),
                host: seen.host.map(name),
            });
            for path in seen {
                if path.is_new_in(paths) {
                    paths.push(path);
                }
            }
        }
        // Each line goes to another lock than the one before, whose memory the caches seldom
        // hold: a lock is fetched a few lines ahead, then where its next line goes.
        let targets: Vec<usize> = records
            .iter()
            .map(|&(lock, ..)| piece_places[lock as usize])
            .collect();
        for (index, (lock, mut record, range)) in records.drain(..).enumerate() {
            if let Some(&ahead) = targets.get(index + 2 * FETCH_AHEAD) {
                self.lines[ahead].records.prefetch();
            }
            if let Some(&ahead) = targets.get(index + FETCH_AHEAD) {
                self.lines[ahead].records.prefetch_next();
            }
            record.read_after(piece.lines_before, name);
            let posix = piece.locks[lock as usize].key.kind == LockKind::Posix;
            self.lines[targets[index]]
                .records
                .push(record, posix.then_some(range));
        }
        self.own = piece.own;
        self.kept += targets.len();
        let mine = piece.locks.iter().zip(&piece_places);
        self.spill_long_histories(
            mine.filter(|&(_, &place)| place != usize::MAX)
                .map(|(lock, &place)| (place, rekey(lock.key))),
        );
        self.spill_if_over();
        records
    }

    /// Where a lock's lines are kept; a new place for a lock not seen before.
    fn place(&mut self, key: LockKey) -> usize {
        place_in(&mut self.places, &mut self.lines, key)
    }

    /// Every lock's lines, by lock, once every source is read.
    fn gather(&mut self) {
        let mut places: Vec<(usize, LockKey)> = std::mem::take(&mut self.places)
            .into_iter()
            .map(|(key, place)| (place, key))
            .collect();
        places.sort_unstable_by_key(|&(place, _)| place);
        let lines = &mut self.lines;
        self.locks = places
            .iter()
            .map(|&(place, key)| (key, std::mem::take(&mut lines[place])))
            .collect();
        if self.spill.is_some() {
            self.places_kept = places.into_iter().map(|(place, _)| place).collect();
        }
        self.lines = Vec::new();
        self.generations = FxHashMap::default();
    }
}

impl Scan {
    fn note_time(&mut self, at: Nanos) {
        self.end = self.end.max(Some(at));
        let summary = self.summary();
        if summary.first_ts.is_none() {
            summary.first_ts = Some(at);
        }
    }

    fn summary(&mut self) -> &mut SourceSummary {
        self.sources.last_mut().expect("a source is being read")
    }

    /// Keeps the first time of the source and the last time of any source, read from the
    /// chunk's first and last readable lines.
    fn note_bounds(&mut self, chunk: &[u8]) {
        if self.summary().first_ts.is_none() {
            let first = chunk
                .split(|&b| b == b'\n')
                .take(TS_PROBES)
                .find_map(line_ts);
            self.summary().first_ts = first;
        }
        if let Some(last) = chunk
            .rsplit(|&b| b == b'\n')
            .take(TS_PROBES)
            .find_map(line_ts)
        {
            self.note_time(last);
        }
    }

    /// Adds a piece scanned on its own, the next in log order, whose first line is line
    /// `lines_before + 1` of its source: its names, exits and counts here, its lock lines on
    /// the shards' threads.
    fn merge(&mut self, piece: &mut Piece, lines_before: u64, emptied: &Emptied) {
        let map = self.names.absorb(&piece.names);
        for mut exit in piece.exits.drain(..) {
            exit.host = map[exit.host.index()];
            exit.actor.comm = map[exit.actor.comm.index()];
            exit.origin.line += lines_before;
            self.exits.push(exit);
        }
        let shared = Arc::new(PieceLocks {
            names: map,
            own: self.names.find(OWN_COMMAND),
            locks: std::mem::take(&mut piece.locks),
            generations: std::mem::take(&mut piece.generations),
            lines_before,
        });
        let shards = self.shards.count();
        for (index, records) in piece.records.drain(..).enumerate() {
            let (piece, emptied) = (Arc::clone(&shared), Arc::clone(emptied));
            self.shards.send(index, move |shard| {
                let records = shard.merge(&piece, records, |ino| shard_of(ino, shards) == index);
                emptied.lock().expect("no job panics").push(records);
            });
        }
        if let Some(first) = piece.first_time {
            self.note_time(first);
        }
        if let Some(last) = piece.last_time {
            self.note_time(last);
        }
        let summary = self.summary();
        summary.unreadable += piece.unreadable;
        summary.unknown_events += piece.unknown_events;
        if summary.first_skipped_line.is_none() {
            summary.first_skipped_line = piece.first_skipped_line.map(|line| line + lines_before);
        }
        summary.lines = lines_before + piece.lines;
    }
}

/// Where a lock's lines are kept in `lines`; a new place for a lock not seen before.
fn place_in(
    places: &mut FxHashMap<LockKey, usize>,
    lines: &mut Vec<LockLines>,
    key: LockKey,
) -> usize {
    match places.entry(key) {
        Entry::Occupied(known) => *known.get(),
        Entry::Vacant(new) => {
            lines.push(LockLines::default());
            *new.insert(lines.len() - 1)
        }
    }
}

/// Reads every source and keeps the lines the selection picks, with `jobs` threads.
/// The shards keep at most `keep_lines` lines in memory together (see [`Spill`]).
pub fn scan(
    sources: &[Source],
    selection: &Selection,
    jobs: usize,
    keep_lines: usize,
) -> Result<Scan, BadInput> {
    let shards: Shards<LockShard> = Shards::start(jobs)
        .map_err(|err| BadInput(format!("cannot start {jobs} threads: {err}")))?;
    let keep_at_most = keep_lines / jobs;
    shards.each(move |_, shard| shard.keep_at_most = Some(keep_at_most));
    let mut scan = Scan {
        names: Names::default(),
        shards,
        exits: Vec::new(),
        sources: Vec::new(),
        end: None,
    };
    let spare = Mutex::new(Vec::new());
    // The lists of lines the shards have added, emptied, for the next pieces to fill: taken
    // and given back, they are not freed.
    let emptied: Emptied = Arc::default();
    for (index, source) in sources.iter().enumerate() {
        scan.sources.push(SourceSummary {
            name: source.name.clone(),
            ..Default::default()
        });
        let mut lines_before = 0;
        let end = input::read_pieces(
            source,
            selection.piece_bytes,
            jobs,
            |bytes, start| {
                let mut spare: Piece = spare
                    .lock()
                    .expect("no job panics")
                    .pop()
                    .unwrap_or_default();
                let mut refill = emptied.lock().expect("no job panics");
                spare
                    .records
                    .resize_with(jobs, || refill.pop().unwrap_or_default());
                drop(refill);
                match selection.cold_chunk(index, start, bytes.len()) {
                    Some(cold) => Piece::cold(spare, bytes, index as u32, selection, cold),
                    None => Piece::scan(spare, bytes, index as u32, selection),
                }
            },
            |chunk, mut piece| {
                if lines_before == 0
                    && let Some(first) = chunk
                        .split(|&b| b == b'\n')
                        .find(|line| !line.trim_ascii().is_empty())
                {
                    scan.summary().text_format = is_text_line(first);
                }
                scan.note_bounds(chunk);
                let lines = piece.lines;
                scan.merge(&mut piece, lines_before, &emptied);
                lines_before += lines;
                spare.lock().expect("no job panics").push(piece.cleared());
            },
        )?;
        let summary = scan.summary();
        summary.bytes = end.bytes;
        summary.cut_short = end.cut_short;
    }
    scan.shards.each(|_, shard| shard.gather());
    Ok(scan)
}

pub fn thread_pool(jobs: usize) -> Result<rayon::ThreadPool, BadInput> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .map_err(|err| BadInput(format!("cannot start {jobs} threads: {err}")))
}

/// One piece of a chunk, scanned on its own: its own strings, its line numbers from 1.
#[derive(Default)]
struct Piece {
    names: Names,
    /// The locks its lines are about, in the order first met.
    locks: Vec<PieceLock>,
    places: FxHashMap<LockKey, u32>,
    /// Each line kept, with its lock's index in `locks`, in line order, by the shard that keeps
    /// its lock: made compact here, by the job, rather than by the shard.
    records: Vec<Vec<PieceLine>>,
    exits: Vec<Exit>,
    /// Per inode: the first and the latest generation its lines said.
    generations: FxHashMap<InodeId, (u32, u32)>,
    lines: u64,
    unreadable: u64,
    unknown_events: u64,
    first_skipped_line: Option<u64>,
    first_time: Option<Nanos>,
    last_time: Option<Nanos>,
}

/// A lock a piece's lines are about, and the paths they name it by.
struct PieceLock {
    key: LockKey,
    paths: Paths,
}

impl Piece {
    /// Scans `bytes` into `spare`, an empty piece (a merged one, cleared: its tables are
    /// reused rather than freed, which would leave holes in the heap between the locks' lines).
    fn scan(spare: Piece, bytes: &[u8], source: u32, selection: &Selection) -> Self {
        let mut piece = spare;
        let origin = |line: u64| Origin {
            source,
            line: line + 1,
        };
        // Newlines before `counted` are in `lines`.
        let mut lines = 0;
        let mut counted = 0;
        match &selection.reading {
            Reading::Everything | Reading::Heads { .. } => {
                let mut from = 0;
                while from < bytes.len() {
                    let end =
                        memchr::memchr(b'\n', &bytes[from..]).map_or(bytes.len(), |at| from + at);
                    let line = bytes[from..end].trim_ascii();
                    if !line.is_empty() {
                        piece.pick(line, origin(lines), selection);
                    }
                    lines += 1;
                    from = end + 1;
                }
                piece.lines = lines;
                return piece;
            }
            Reading::Mention { needle, exit } => {
                let mut next_lock = next_inode_line(needle, bytes, 0);
                let mut next_exit = exit.find(bytes);
                loop {
                    // Whichever comes first of the next line about the inode and the next exit.
                    let found = match (next_lock, next_exit) {
                        (Some(lock), Some(exit)) => lock.min(exit),
                        (Some(at), None) | (None, Some(at)) => at,
                        (None, None) => break,
                    };
                    let (start, end) = line_around(bytes, found);
                    lines += count_newlines(&bytes[counted..start]);
                    counted = start;
                    let line = bytes[start..end].trim_ascii();
                    if next_lock.is_some_and(|lock| lock < end) {
                        piece.line(line, origin(lines), selection);
                        next_lock = next_inode_line(needle, bytes, end);
                    } else if let Ok(Parsed::Exit(exit)) =
                        parse(line, origin(lines), &mut piece.names)
                    {
                        piece.note_exit(exit, selection);
                    }
                    if next_exit.is_some_and(|exit| exit < end) {
                        next_exit = exit.find(&bytes[end..]).map(|i| end + i);
                    }
                }
                lines += count_newlines(&bytes[counted..]);
            }
        }
        if !bytes.ends_with(b"\n") && !bytes.is_empty() {
            lines += 1;
        }
        piece.lines = lines;
        piece
    }

    /// A chunk whose lines the first read found to need no more than their count and times,
    /// but for its exits and the lines of the locks it looks for.
    fn cold(spare: Piece, bytes: &[u8], source: u32, selection: &Selection, cold: &Cold) -> Self {
        let mut piece = spare;
        for &ChunkLine { start, before } in &cold.looked_for {
            let (start, end) = line_around(bytes, start as usize);
            let origin = Origin {
                source,
                line: u64::from(before) + 1,
            };
            // As every chunk's line would be: an exit, or a lock line kept if in its window.
            piece.pick(bytes[start..end].trim_ascii(), origin, selection);
        }
        piece.lines = cold.lines.into();
        piece.first_time = Some(cold.first);
        piece.last_time = Some(cold.latest);
        piece
    }

    /// The same piece, empty, its tables kept for the next.
    fn cleared(mut self) -> Self {
        self.names.clear();
        self.locks.clear();
        self.places.clear();
        self.records.iter_mut().for_each(Vec::clear);
        self.exits.clear();
        self.generations.clear();
        Self {
            names: self.names,
            locks: self.locks,
            places: self.places,
            records: self.records,
            exits: self.exits,
            generations: self.generations,
            ..Self::default()
        }
    }

    /// A non-empty line: parsed if the selection may keep it.
    fn pick(&mut self, line: &[u8], origin: Origin, selection: &Selection) {
        let Reading::Heads { ino, hosts } = &selection.reading else {
            return self.line(line, origin, selection);
        };
        let Some(head) = head(line) else {
            return self.line(line, origin, selection);
        };
        match head.event {
            EventKind::Start | EventKind::Stop => self.note_time(head.at),
            EventKind::Exit => self.line(line, origin, selection),
            _ => {
                let inode_wanted = match (&selection.inodes, line_ino(ino, line)) {
                    (None, _) => true,
                    (Some(inodes), Some(number)) => inodes.get(&number).is_some_and(|hosts| {
                        let host = line_host(line);
                        (hosts.is_empty() || hosts.iter().any(|known| same_bytes(known, host)))
                            && selection.in_window(number, host, head.at)
                    }),
                    // Not a line the tracer writes: the parse tells why.
                    (Some(_), None) => return self.line(line, origin, selection),
                };
                let host_wanted =
                    hosts.is_empty() || hosts.iter().any(|host| host.find(line).is_some());
                // A line with an object inside may be two run together (a torn write), or have
                // zeroed bytes: the parse counts them as the full read does.
                let flat = memchr::memchr2(b'{', 0, &line[1..]).is_none();
                if inode_wanted && host_wanted {
                    self.line(line, origin, selection);
                } else if !flat && let Err(skip) = parse(line, origin, &mut self.names) {
                    self.skipped(skip, origin.line);
                } else {
                    self.note_time(head.at);
                }
            }
        }
    }

    fn line(&mut self, line: &[u8], origin: Origin, selection: &Selection) {
        match parse(line, origin, &mut self.names) {
            Ok(Parsed::Lock(key, path, record)) => {
                // The logs' end is that of every line, kept or not.
                self.note_time(record.at);
                if !selection.keeps(&key, &self.names) {
                    return;
                }
                let key = self.with_generation(key);
                let index = match self.places.entry(key) {
                    Entry::Occupied(known) => *known.get(),
                    Entry::Vacant(new) => {
                        self.locks.push(PieceLock {
                            key,
                            paths: Paths::new(),
                        });
                        *new.insert(self.locks.len() as u32 - 1)
                    }
                };
                let (record, range) = Stored::new(record);
                let shard = shard_of(key.ino, self.records.len());
                self.records[shard].push((index, record, range));
                let paths = &mut self.locks[index as usize].paths;
                if let Some(path) = path
                    && path.is_new_in(paths)
                {
                    paths.push(path);
                }
            }
            Ok(Parsed::Exit(exit)) => self.note_exit(exit, selection),
            Ok(Parsed::Other(at)) => self.note_time(at),
            Ok(Parsed::UnknownEvent) => self.skipped(Skip::UnknownEvent, origin.line),
            Err(skip) => self.skipped(skip, origin.line),
        }
    }

    /// A line that does not give its inode's generation belongs to the latest one; before any
    /// line of the piece gave one, it is left untagged for the merge to decide.
    fn with_generation(&mut self, key: LockKey) -> LockKey {
        let inode = inode_of(&key);
        if key.generation == 0 {
            return match self.generations.get(&inode) {
                Some(&(_, latest)) => LockKey {
                    generation: latest,
                    ..key
                },
                None => key,
            };
        }
        self.generations
            .entry(inode)
            .and_modify(|(_, latest)| *latest = key.generation)
            .or_insert((key.generation, key.generation));
        key
    }

    fn note_exit(&mut self, exit: Exit, selection: &Selection) {
        self.note_time(exit.at);
        if selection.keeps_host(exit.host, &self.names) {
            self.exits.push(exit);
        }
    }

    fn note_time(&mut self, at: Nanos) {
        self.first_time.get_or_insert(at);
        self.last_time = self.last_time.max(Some(at));
    }

    fn skipped(&mut self, skip: Skip, line: u64) {
        match skip {
            Skip::Unreadable => self.unreadable += 1,
            Skip::UnknownEvent => self.unknown_events += 1,
        }
        self.first_skipped_line.get_or_insert(line);
    }
}

/// Where the line that the byte at `at` is in starts and ends (at its newline, or the end).
fn line_around(bytes: &[u8], at: usize) -> (usize, usize) {
    let start = memchr::memrchr(b'\n', &bytes[..at]).map_or(0, |i| i + 1);
    let end = memchr::memchr(b'\n', &bytes[at..]).map_or(bytes.len(), |i| at + i);
    (start, end)
}

/// Where the next `"ino":N` at or after `from` is (not the start of a longer number).
fn next_inode_line(finder: &memmem::Finder<'_>, chunk: &[u8], mut from: usize) -> Option<usize> {
    while let Some(found) = finder.find(&chunk[from..]) {
        let after = from + found + finder.needle().len();
        if !chunk.get(after).is_some_and(u8::is_ascii_digit) {
            return Some(from + found);
        }
        from = after;
    }
    None
}

fn count_newlines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}
