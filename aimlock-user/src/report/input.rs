//! Finding, opening and scanning the logs: large reads, and with `--inode` a byte search that
//! picks the candidate lines so that only they are parsed.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io::{self, BufRead as _, BufReader, Read},
    path::{Path, PathBuf},
};

use flate2::read::MultiGzDecoder;
use memchr::memmem;

use super::{
    BadInput,
    line::{
        Exit, LockKey, Name, Names, Nanos, Origin, Parsed, Record, Skip, is_text_line, line_ts,
        parse,
    },
};

/// Bytes read at a time; lines longer than this grow the buffer.
const CHUNK: usize = 8 << 20;
/// How many lines at the start or end of a chunk may be damaged before its first or last
/// timestamp is given up.
const TS_PROBES: usize = 64;
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
/// How the tracer writes an exit line's event.
const EXIT_NEEDLE: &[u8] = br#""event":"exit""#;

/// A log to read: a file or stdin.
#[derive(Debug)]
pub struct Source {
    pub name: String,
    path: Option<PathBuf>,
}

/// Turns the LOG arguments into sources: `-` is stdin, a name that is not a file but has glob
/// characters is expanded, and a file named twice is read once.
pub fn expand(args: &[String]) -> Result<Vec<Source>, BadInput> {
    let mut sources = Vec::new();
    let mut seen = HashSet::new();
    for arg in args {
        if arg == "-" {
            if seen.insert(PathBuf::from("-")) {
                sources.push(Source {
                    name: "<stdin>".into(),
                    path: None,
                });
            }
            continue;
        }
        let is_glob = arg.contains(['*', '?', '[']);
        let paths = if is_glob && !Path::new(arg).exists() {
            let matched: Vec<PathBuf> = glob::glob(arg)
                .map_err(|err| BadInput(format!("{arg}: {err}")))?
                .filter_map(Result::ok)
                .collect();
            if matched.is_empty() {
                return Err(BadInput(format!("{arg}: no file matches")));
            }
            matched
        } else {
            vec![PathBuf::from(arg)]
        };
        for path in paths {
            let identity = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if seen.insert(identity) {
                sources.push(Source {
                    name: path.display().to_string(),
                    path: Some(path),
                });
            }
        }
    }
    Ok(sources)
}

/// Which lines to parse.
pub enum Prefilter {
    Everything,
    /// Only lines about this inode, found by searching for `"ino":N`, then checked; and exit
    /// lines, which end the exited processes' POSIX locks.
    Inode {
        dev: String,
        ino: u64,
    },
}

/// The lines of one lock, in file order, and the paths it was seen under.
#[derive(Debug, Default)]
pub struct LockLines {
    pub records: Vec<Record>,
    pub paths: Vec<Name>,
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

/// Everything kept from the logs.
#[derive(Debug, Default)]
pub struct Scan {
    pub names: Names,
    pub locks: HashMap<LockKey, LockLines>,
    /// Every process exit, by pid, in file order.
    pub exits: HashMap<u32, Vec<Exit>>,
    pub sources: Vec<SourceSummary>,
    /// The last time any log speaks of.
    pub end: Option<Nanos>,
}

impl Scan {
    /// Whether any lock line kept names the process.
    pub fn names_pid(&self, pid: u32) -> bool {
        self.locks
            .values()
            .flat_map(|lines| &lines.records)
            .any(|record| {
                record.actor.pid == pid || record.others.iter().any(|other| other.pid == pid)
            })
    }
}

pub fn scan(sources: &[Source], prefilter: &Prefilter) -> Result<Scan, BadInput> {
    let needle = match prefilter {
        Prefilter::Everything => None,
        Prefilter::Inode { ino, .. } => Some(format!("\"ino\":{ino}")),
    };
    let mut scanner = Scanner {
        prefilter,
        finder: needle
            .as_deref()
            .map(|needle| memmem::Finder::new(needle).into_owned()),
        exit_finder: memmem::Finder::new(EXIT_NEEDLE).into_owned(),
        scan: Scan::default(),
        lines_before: 0,
        generations: HashMap::new(),
        untagged: HashMap::new(),
    };
    let mut buffer = vec![0; CHUNK];
    for (index, source) in sources.iter().enumerate() {
        let mut reader = open(source)?;
        scanner.scan.sources.push(SourceSummary {
            name: source.name.clone(),
            ..Default::default()
        });
        scanner.lines_before = 0;
        scanner.read_source(&mut reader, index as u32, &mut buffer, source)?;
    }
    Ok(scanner.scan)
}

/// Opens a file or stdin, decompressing it if it starts like gzip.
fn open(source: &Source) -> Result<Box<dyn Read>, BadInput> {
    let unreadable = |err: io::Error| BadInput(format!("{}: {err}", source.name));
    let inner: Box<dyn Read> = match &source.path {
        Some(path) => {
            let file = File::open(path).map_err(unreadable)?;
            if file.metadata().map_err(unreadable)?.is_dir() {
                return Err(BadInput(format!("{}: is a directory", source.name)));
            }
            Box::new(file)
        }
        None => Box::new(io::stdin().lock()),
    };
    let mut reader = BufReader::with_capacity(64 << 10, inner);
    let head = reader.fill_buf().map_err(unreadable)?;
    if head.starts_with(GZIP_MAGIC) {
        // Multi-member: rotated logs are often concatenated gzip files.
        Ok(Box::new(MultiGzDecoder::new(reader)))
    } else {
        Ok(Box::new(reader))
    }
}

struct Scanner<'a> {
    prefilter: &'a Prefilter,
    /// The latest generation of each inode, for the lines that do not say theirs (found in the
    /// kernel's table: `held`, releases the ring lost) and the keys such lines made before a
    /// line said it.
    generations: HashMap<(Name, u64), u32>,
    untagged: HashMap<(Name, u64), Vec<LockKey>>,
    finder: Option<memmem::Finder<'static>>,
    exit_finder: memmem::Finder<'static>,
    scan: Scan,
    /// Lines in the current source before the current chunk.
    lines_before: u64,
}

impl Scanner<'_> {
    /// A line that does not give its inode's generation belongs to the latest one; the first
    /// line that gives it claims what such lines gathered before.
    fn with_generation(&mut self, key: LockKey) -> LockKey {
        let inode = (key.dev, key.ino);
        if key.generation == 0 {
            return match self.generations.get(&inode) {
                Some(&generation) => LockKey { generation, ..key },
                None => {
                    let untagged = self.untagged.entry(inode).or_default();
                    if !untagged.contains(&key) {
                        untagged.push(key);
                    }
                    key
                }
            };
        }
        if self.generations.insert(inode, key.generation).is_none() {
            for old in self.untagged.remove(&inode).unwrap_or_default() {
                if let Some(lines) = self.scan.locks.remove(&old) {
                    let claimed = LockKey {
                        generation: key.generation,
                        ..old
                    };
                    let lock = self.scan.locks.entry(claimed).or_default();
                    lock.records.extend(lines.records);
                    for path in lines.paths {
                        if !lock.paths.contains(&path) {
                            lock.paths.push(path);
                        }
                    }
                }
            }
        }
        key
    }

    fn summary(&mut self) -> &mut SourceSummary {
        self.scan
            .sources
            .last_mut()
            .expect("a source is being read")
    }

    fn read_source(
        &mut self,
        reader: &mut dyn Read,
        source: u32,
        buffer: &mut Vec<u8>,
        named: &Source,
    ) -> Result<(), BadInput> {
        let mut filled = 0;
        let mut eof = false;
        while !eof {
            while filled < buffer.len() {
                match reader.read(&mut buffer[filled..]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(read) => {
                        filled += read;
                        self.summary().bytes += read as u64;
                    }
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) if self.summary().bytes == 0 => {
                        return Err(BadInput(format!("{}: {err}", named.name)));
                    }
                    // A crash can leave a log torn anywhere: keep what came before.
                    Err(err) => {
                        self.summary().cut_short = Some(err.to_string());
                        eof = true;
                        break;
                    }
                }
            }
            let complete = if eof {
                filled
            } else {
                match memchr::memrchr(b'\n', &buffer[..filled]) {
                    Some(newline) => newline + 1,
                    None => {
                        buffer.resize(buffer.len() * 2, 0);
                        continue;
                    }
                }
            };
            self.scan_chunk(&buffer[..complete], source);
            buffer.copy_within(complete..filled, 0);
            filled -= complete;
        }
        Ok(())
    }

    fn scan_chunk(&mut self, chunk: &[u8], source: u32) {
        if self.lines_before == 0
            && let Some(first) = chunk
                .split(|&b| b == b'\n')
                .find(|line| !line.trim_ascii().is_empty())
        {
            self.summary().text_format = is_text_line(first);
        }
        self.note_bounds(chunk);
        // Newlines before `counted` are in `lines`.
        let mut lines = self.lines_before;
        let mut counted = 0;
        match self.finder.clone() {
            None => {
                for newline in memchr::memchr_iter(b'\n', chunk) {
                    self.line(
                        &chunk[counted..newline],
                        Origin {
                            source,
                            line: lines + 1,
                        },
                    );
                    lines += 1;
                    counted = newline + 1;
                }
                if counted < chunk.len() {
                    // A last line without a newline: a torn log.
                    self.line(
                        &chunk[counted..],
                        Origin {
                            source,
                            line: lines + 1,
                        },
                    );
                }
            }
            Some(finder) => {
                let mut next_lock = self.next_inode_line(&finder, chunk, 0);
                let mut next_exit = self.exit_finder.find(chunk);
                loop {
                    // Whichever comes first of the next line about the inode and the next exit.
                    let found = match (next_lock, next_exit) {
                        (Some(lock), Some(exit)) => lock.min(exit),
                        (Some(at), None) | (None, Some(at)) => at,
                        (None, None) => break,
                    };
                    let start = memchr::memrchr(b'\n', &chunk[..found]).map_or(0, |i| i + 1);
                    let end =
                        memchr::memchr(b'\n', &chunk[found..]).map_or(chunk.len(), |i| found + i);
                    lines += count_newlines(&chunk[counted..start]);
                    counted = start;
                    let origin = Origin {
                        source,
                        line: lines + 1,
                    };
                    if next_lock.is_some_and(|lock| lock < end) {
                        self.line(&chunk[start..end], origin);
                        next_lock = self.next_inode_line(&finder, chunk, end);
                    } else {
                        self.exit_line(&chunk[start..end], origin);
                    }
                    if next_exit.is_some_and(|exit| exit < end) {
                        next_exit = self.exit_finder.find(&chunk[end..]).map(|i| end + i);
                    }
                }
                lines += count_newlines(&chunk[counted..]);
            }
        }
        if !chunk.ends_with(b"\n") && !chunk.is_empty() {
            lines += 1;
        }
        self.lines_before = lines;
        self.summary().lines = lines;
    }

    /// Where the next `"ino":N` at or after `from` is (not the start of a longer number).
    fn next_inode_line(
        &self,
        finder: &memmem::Finder<'_>,
        chunk: &[u8],
        mut from: usize,
    ) -> Option<usize> {
        while let Some(found) = finder.find(&chunk[from..]) {
            let after = from + found + finder.needle().len();
            if !chunk.get(after).is_some_and(u8::is_ascii_digit) {
                return Some(from + found);
            }
            from = after;
        }
        None
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

    fn note_time(&mut self, at: Nanos) {
        self.scan.end = self.scan.end.max(Some(at));
        let summary = self.summary();
        if summary.first_ts.is_none() {
            summary.first_ts = Some(at);
        }
    }

    fn line(&mut self, line: &[u8], origin: Origin) {
        let line = line.trim_ascii();
        if line.is_empty() {
            return;
        }
        match parse(line, origin, &mut self.scan.names) {
            Ok(Parsed::Lock(key, path, record)) => {
                if let Prefilter::Inode { dev, ino } = self.prefilter
                    && (key.ino != *ino || self.scan.names.get(key.dev) != dev)
                {
                    return;
                }
                self.note_time(record.at);
                let key = self.with_generation(key);
                let lock = self.scan.locks.entry(key).or_default();
                lock.records.push(record);
                if let Some(path) = path
                    && !lock.paths.contains(&path)
                {
                    lock.paths.push(path);
                }
            }
            Ok(Parsed::Exit(exit)) => self.note_exit(exit),
            Ok(Parsed::Other(at)) => self.note_time(at),
            Ok(Parsed::UnknownEvent) => self.skipped(Skip::UnknownEvent, origin.line),
            Err(skip) => self.skipped(skip, origin.line),
        }
    }

    /// A line the search for exits found: kept if it is one, else left alone (as every line
    /// not about the inode is).
    fn exit_line(&mut self, line: &[u8], origin: Origin) {
        if let Ok(Parsed::Exit(exit)) = parse(line.trim_ascii(), origin, &mut self.scan.names) {
            self.note_exit(exit);
        }
    }

    fn note_exit(&mut self, exit: Exit) {
        self.note_time(exit.at);
        self.scan
            .exits
            .entry(exit.actor.pid)
            .or_default()
            .push(exit);
    }

    fn skipped(&mut self, skip: Skip, line: u64) {
        let summary = self.summary();
        match skip {
            Skip::Unreadable => summary.unreadable += 1,
            Skip::UnknownEvent => summary.unknown_events += 1,
        }
        summary.first_skipped_line.get_or_insert(line);
    }
}

fn count_newlines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}
