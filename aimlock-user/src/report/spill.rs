//! A shard's lines kept on disk rather than in memory, so that a report's memory is bounded by
//! its locks and what it tells of them, not by the lines of the logs.
//!
//! Each time a shard keeps more lines than its share of [`KEPT_LINES`], it writes them out,
//! lock after lock in the order of their places, as one run, to a temporary file that is
//! already unlinked (in `$TMPDIR`, else `/var/tmp`: a disk rather than memory on most systems).
//! What they tell of processes is gathered as they are written, so that only the fold reads
//! them back; the few lines aimlock itself is the actor of stay in memory, as what is left out
//! of them depends on a lock's other lines of aimlock's. Folding reads each lock's lines back,
//! in the same order of places, from every run at once: one cursor per run, each a short
//! buffer, however many locks there are. A lock's lines come back in another order than read,
//! which the fold does not see: it puts them in time order itself.
//!
//! A lock other than POSIX whose lines in memory grow past [`LOCK_KEPT_LINES`] writes them out
//! on its own, in time order: a sorted run. The fold merges its sorted runs, read a line at a
//! time, with its lines in memory, so that one lock of a long history (a lock every job takes,
//! for months) never has all its lines in memory at once.

use std::{
    fs::File,
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use rustc_hash::FxHashMap;

use super::{
    line::{Nanos, Origin},
    stored::{Stored, StoredLines, read_back_one, write_out_one},
};
use crate::events::EventKind;

/// Lines the shards keep in memory together before writing them out: 64 bytes each, 64 MiB.
pub const KEPT_LINES: usize = 1 << 20;

/// Lines of one lock other than POSIX kept in memory before they are written out in time
/// order: 512 KiB. (A POSIX lock is folded per file with all its lines at once.)
pub const LOCK_KEPT_LINES: usize = 1 << 13;

/// What a cursor reads at a time.
const READ_SIZE: usize = 64 << 10;
/// What a cursor of a sorted run reads at a time: a lock of a long history has many.
const SORTED_READ_SIZE: usize = 16 << 10;
/// What is written at a time.
const WRITE_SIZE: usize = 1 << 20;

/// A lock's lines in a run: its place, and the length of what follows.
const HEADER: usize = 4 + 8;

/// The runs a shard wrote.
pub struct Spill {
    file: File,
    dir: PathBuf,
    written: u64,
    /// Where each run starts and ends in the file.
    runs: Vec<(u64, u64)>,
    /// Places whose lines were added to another's (a lock whose lines said their generation
    /// only after some lines had been kept) after some were written out: their lines, read
    /// back, go to that other place. It comes later in the order of places.
    moved: FxHashMap<u32, u32>,
    /// The sorted runs of each place that has some.
    sorted: FxHashMap<u32, SortedRuns>,
    buffer: Vec<u8>,
}

/// An acquire that waited first, among a lock's lines written out in time order: the fold
/// needs to know when each wait began before it reads them (see `timeline::AskedFrom`).
#[derive(Clone, Copy, Debug)]
pub struct Waited {
    pub at: Nanos,
    pub origin: Origin,
    pub began: Nanos,
}

impl Waited {
    /// The wait before an acquire, if it had one.
    pub fn of(line: &Stored) -> Option<Self> {
        let waited = line.duration_ns().filter(|&waited| waited > 0)?;
        (line.event() == EventKind::Acquire).then(|| Self {
            at: line.at(),
            origin: line.origin(),
            began: line.at().saturating_sub(waited),
        })
    }
}

/// A lock's sorted runs: each its lines in the order of their times, sources and lines.
#[derive(Debug, Default)]
pub struct SortedRuns {
    runs: Vec<(u64, u64)>,
    held: InRuns,
}

/// What the fold needs to know of a lock's lines in sorted runs before it reads them.
#[derive(Debug, Default)]
pub struct InRuns {
    pub lines: usize,
    pub acquires: usize,
    pub waited: Vec<Waited>,
}

impl SortedRuns {
    fn absorb(&mut self, other: SortedRuns) {
        self.runs.extend(other.runs);
        self.held.lines += other.held.lines;
        self.held.acquires += other.held.acquires;
        self.held.waited.extend(other.held.waited);
    }
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spill({} runs, {} bytes)", self.runs.len(), self.written)
    }
}

/// Where the runs are written.
fn temporary_dir() -> PathBuf {
    std::env::var_os("TMPDIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from)
}

impl Spill {
    pub fn create() -> io::Result<Self> {
        let dir = temporary_dir();
        let file = tempfile::tempfile_in(&dir).map_err(|err| in_dir(&dir, "create a file", err))?;
        Ok(Self {
            file,
            dir,
            written: 0,
            runs: Vec::new(),
            moved: FxHashMap::default(),
            sorted: FxHashMap::default(),
            buffer: Vec::with_capacity(WRITE_SIZE + READ_SIZE),
        })
    }

    /// Writes out the lines of every lock (`locks`, by place) as one run, but those `stays`
    /// picks (given each line's place), which stay.
    pub fn write_run<'a>(
        &mut self,
        locks: impl Iterator<Item = &'a mut StoredLines>,
        mut stays: impl FnMut(usize, &Stored) -> bool,
    ) -> io::Result<()> {
        let start = self.written;
        for (place, lines) in locks.enumerate() {
            if lines.is_empty() {
                continue;
            }
            let header = self.buffer.len();
            self.buffer.resize(header + HEADER, 0);
            lines.write_out(&mut self.buffer, |line| stays(place, line));
            let len = (self.buffer.len() - header - HEADER) as u64;
            if len == 0 {
                self.buffer.truncate(header);
                continue;
            }
            self.buffer[header..header + 4].copy_from_slice(&(place as u32).to_ne_bytes());
            self.buffer[header + 4..header + HEADER].copy_from_slice(&len.to_ne_bytes());
            if self.buffer.len() >= WRITE_SIZE {
                self.flush()?;
            }
        }
        self.flush()?;
        if self.written > start {
            self.runs.push((start, self.written));
        }
        Ok(())
    }

    /// Writes out the lines of the lock at `place`, other than POSIX, in time order as a sorted
    /// run of its own, but those `stays` picks, which stay.
    pub fn write_sorted(
        &mut self,
        place: usize,
        lines: &mut StoredLines,
        stays: impl FnMut(&Stored) -> bool,
    ) -> io::Result<()> {
        let mut taken = lines.take_out(stays);
        if taken.is_empty() {
            return Ok(());
        }
        taken.sort_unstable_by_key(|line| {
            let origin = line.origin();
            (line.at(), origin.source, origin.line)
        });
        let start = self.written;
        let mut run = SortedRuns::default();
        run.held.lines = taken.len();
        for line in &taken {
            if line.event() == EventKind::Acquire {
                run.held.acquires += 1;
                run.held.waited.extend(Waited::of(line));
            }
            write_out_one(line, &mut self.buffer);
            if self.buffer.len() >= WRITE_SIZE {
                self.flush()?;
            }
        }
        self.flush()?;
        run.runs.push((start, self.written));
        self.sorted.entry(place as u32).or_default().absorb(run);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file
            .write_all_at(&self.buffer, self.written)
            .map_err(|err| in_dir(&self.dir, "write to a file", err))?;
        self.written += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    /// The lines of place `from`, from now on added to place `to`'s, a later one.
    pub fn moved(&mut self, from: usize, to: usize) {
        assert!(from < to, "a lock's lines move to a later place");
        self.moved.insert(from as u32, to as u32);
        if let Some(runs) = self.sorted.remove(&(from as u32)) {
            self.sorted.entry(to as u32).or_default().absorb(runs);
        }
    }

    /// Every place's sorted runs, to be read with [`Spill::sorted_lines`].
    pub fn take_sorted(&mut self) -> FxHashMap<u32, SortedRuns> {
        std::mem::take(&mut self.sorted)
    }

    /// A lock's sorted runs, each to be read a line at a time.
    pub fn sorted_lines(&self, runs: SortedRuns) -> SortedLines<'_> {
        SortedLines {
            runs: runs
                .runs
                .into_iter()
                .map(|(start, end)| RunLines {
                    spill: self,
                    cursor: Cursor::new(start, end, SORTED_READ_SIZE),
                })
                .collect(),
            held: runs.held,
        }
    }

    /// What is said when lines read back are not as written.
    fn broken(&self) -> io::Error {
        in_dir(
            &self.dir,
            "read back a file",
            io::Error::new(io::ErrorKind::InvalidData, "its lines are not as written"),
        )
    }

    /// Reads the lines back, a place at a time, in the order of places.
    pub fn read_back(&self) -> ReadBack<'_> {
        ReadBack {
            spill: self,
            cursors: self
                .runs
                .iter()
                .map(|&(start, end)| Cursor::new(start, end, READ_SIZE))
                .collect(),
            moved_here: FxHashMap::default(),
        }
    }
}

/// An I/O error, with what was being done and where.
fn in_dir(dir: &Path, doing: &str, err: io::Error) -> io::Error {
    io::Error::new(
        err.kind(),
        format!(
            "cannot {doing} in {} to keep the lines read (set TMPDIR to another directory): {err}",
            dir.display()
        ),
    )
}

/// Lines written out, read back a place at a time.
pub struct ReadBack<'a> {
    spill: &'a Spill,
    cursors: Vec<Cursor>,
    /// The lines of moved places read so far, by the place they went to.
    moved_here: FxHashMap<u32, StoredLines>,
}

impl ReadBack<'_> {
    /// Adds to `lines` those written out for `place`. Places are asked for in increasing order;
    /// the lines of those not asked for are passed over.
    pub fn lines_of(&mut self, place: usize, lines: &mut StoredLines) -> io::Result<()> {
        let place = place as u32;
        let file = &self.spill.file;
        let broken = || self.spill.broken();
        for cursor in &mut self.cursors {
            while let Some(next) = cursor.next_place(file)? {
                if next > place {
                    break;
                }
                let bytes = cursor.take(file)?;
                let into = match self.spill.moved.get(&next) {
                    Some(&to) => self.moved_here.entry(to).or_default(),
                    None if next == place => &mut *lines,
                    // A place not asked for.
                    None => continue,
                };
                into.read_back(bytes).ok_or_else(broken)?;
            }
        }
        if let Some(moved) = self.moved_here.remove(&place) {
            lines.append(moved);
        }
        Ok(())
    }
}

/// A lock's lines written out in time order: its sorted runs, and what the fold needs to know
/// of them before it reads them.
pub struct SortedLines<'a> {
    pub runs: Vec<RunLines<'a>>,
    pub held: InRuns,
}

/// A sorted run, read a line at a time.
pub struct RunLines<'a> {
    spill: &'a Spill,
    cursor: Cursor,
}

impl RunLines<'_> {
    /// The run's next line; None once it is read.
    pub fn next_line(&mut self) -> io::Result<Option<Stored>> {
        let file = &self.spill.file;
        let cursor = &mut self.cursor;
        loop {
            let ahead = &cursor.buffer[cursor.at..];
            if ahead.is_empty() && cursor.next == cursor.end {
                return Ok(None);
            }
            if let Some((line, len)) = read_back_one(ahead) {
                cursor.at += len;
                return Ok(Some(line));
            }
            // The line goes on past what was read, or is not a line.
            let want = ahead.len() + 1;
            if !cursor.fill(file, want)? {
                return Err(self.spill.broken());
            }
        }
    }
}

/// Where a run is read up to, and what was read of it ahead.
struct Cursor {
    /// Where the file's next bytes to read are.
    next: u64,
    end: u64,
    buffer: Vec<u8>,
    /// Where the buffer's next bytes are.
    at: usize,
    /// What it reads at a time, at least.
    read_size: usize,
}

impl Cursor {
    /// A cursor at the start of the run from `start` to `end` of the file.
    fn new(start: u64, end: u64, read_size: usize) -> Self {
        Self {
            next: start,
            end,
            buffer: Vec::new(),
            at: 0,
            read_size,
        }
    }

    /// Whether `want` more bytes could be had in the buffer.
    fn fill(&mut self, file: &File, want: usize) -> io::Result<bool> {
        if self.buffer.len() - self.at >= want {
            return Ok(true);
        }
        self.buffer.drain(..self.at);
        self.at = 0;
        let room = (want - self.buffer.len()).max(self.read_size) as u64;
        let read = room.min(self.end - self.next) as usize;
        let old = self.buffer.len();
        self.buffer.resize(old + read, 0);
        file.read_exact_at(&mut self.buffer[old..], self.next)?;
        self.next += read as u64;
        Ok(self.buffer.len() >= want)
    }

    /// The place of the next lock in the run, if any.
    fn next_place(&mut self, file: &File) -> io::Result<Option<u32>> {
        if !self.fill(file, HEADER)? {
            return match self.buffer.len() - self.at {
                0 => Ok(None),
                _ => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "a run ends within a header",
                )),
            };
        }
        let bytes = &self.buffer[self.at..self.at + 4];
        Ok(Some(u32::from_ne_bytes(bytes.try_into().expect("4 bytes"))))
    }

    /// The lines of the next lock in the run, written out.
    fn take(&mut self, file: &File) -> io::Result<&[u8]> {
        let len_bytes = &self.buffer[self.at + 4..self.at + HEADER];
        let len = u64::from_ne_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
        if !self.fill(file, HEADER + len)? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a run ends within a lock's lines",
            ));
        }
        let start = self.at + HEADER;
        self.at = start + len;
        Ok(&self.buffer[start..start + len])
    }
}
