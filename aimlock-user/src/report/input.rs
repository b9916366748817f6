//! Finding and opening the logs, and reading them in large chunks of whole lines on a thread
//! of their own, so that reading (and decompressing) goes on while the chunk before is parsed.

use std::{
    collections::{BTreeMap, HashSet},
    fs::File,
    io::{self, BufRead, BufReader, Read},
    path::{Path, PathBuf},
    sync::{Mutex, mpsc},
    thread,
};

use flate2::read::MultiGzDecoder;

use super::{BadInput, journal};

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];

/// A log to read: a file or stdin.
#[derive(Debug)]
pub struct Source {
    pub name: String,
    path: Option<PathBuf>,
}

impl Source {
    /// Whether it can be read a second time (stdin cannot).
    pub fn rereadable(&self) -> bool {
        self.path.is_some()
    }
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

/// Opens a file or stdin, decompressing it if it starts like gzip.
fn open(source: &Source) -> Result<Box<dyn Read + Send>, BadInput> {
    let unreadable = |err: io::Error| BadInput(format!("{}: {err}", source.name));
    let inner: Box<dyn Read + Send> = match &source.path {
        Some(path) => {
            let file = File::open(path).map_err(unreadable)?;
            if file.metadata().map_err(unreadable)?.is_dir() {
                return Err(BadInput(format!("{}: is a directory", source.name)));
            }
            Box::new(file)
        }
        None => Box::new(io::stdin()),
    };
    let mut reader = BufReader::with_capacity(64 << 10, inner);
    let head = reader.fill_buf().map_err(unreadable)?;
    let plain: Box<dyn BufRead + Send> = if head.starts_with(GZIP_MAGIC) {
        // Multi-member: rotated logs are often concatenated gzip files.
        Box::new(BufReader::with_capacity(
            64 << 10,
            MultiGzDecoder::new(reader),
        ))
    } else {
        Box::new(reader)
    };
    journal_or_lines(plain).map_err(unreadable)
}

/// The tracer's JSON lines as they are, or a journal export (`journalctl -o json`) read as them.
fn journal_or_lines(mut reader: Box<dyn BufRead + Send>) -> io::Result<Box<dyn Read + Send>> {
    if journal::is_journal_export(reader.fill_buf()?) {
        Ok(Box::new(journal::JournalLines::new(reader)))
    } else {
        Ok(reader)
    }
}

/// How reading a source ended.
#[derive(Debug, Default)]
pub struct ReadEnd {
    pub bytes: u64,
    /// Why reading stopped before the end (a truncated gzip stream, an I/O error).
    pub cut_short: Option<String>,
}

/// A read chunk: `buffer[..len]` is whole lines, except at the end of the source, where the
/// last may be torn.
struct Chunk {
    buffer: Vec<u8>,
    len: usize,
    /// Where its first byte is in the source (as read: after decompression).
    start: u64,
}

/// Reads a source in chunks of about `size` bytes of whole lines (a longer line grows its
/// chunk), has `jobs` threads `work` on them as they come, and hands each chunk with what
/// `work` made of it to `merge`, in order. `work` is also told where the chunk starts in the
/// source: the same source read again in chunks of the same size is cut at the same places.
/// Reading, working and merging overlap; at most `jobs + 2` chunks are in memory.
pub fn read_pieces<T: Send>(
    source: &Source,
    size: usize,
    jobs: usize,
    work: impl Fn(&[u8], u64) -> T + Sync,
    mut merge: impl FnMut(&[u8], T),
) -> Result<ReadEnd, BadInput> {
    let mut reader = open(source)?;
    let (full_tx, full_rx) = mpsc::sync_channel::<Chunk>(jobs);
    let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
    let (done_tx, done_rx) = mpsc::channel::<(u64, Chunk, T)>();
    // Buffers grow to `size` as they are filled: a small log needs no more than its size.
    for _ in 0..jobs + 2 {
        free_tx.send(Vec::new()).expect("the channel is open");
    }
    // Workers take the next chunk as they become free; the numbers keep the order.
    let full_rx = Mutex::new(full_rx.into_iter().zip(0u64..));
    thread::scope(|scope| {
        let reading =
            scope.spawn(move || fill_chunks(&mut *reader, &source.name, size, &full_tx, &free_rx));
        for _ in 0..jobs {
            let done_tx = done_tx.clone();
            let (full_rx, work) = (&full_rx, &work);
            scope.spawn(move || {
                loop {
                    let next = full_rx.lock().expect("no worker panics").next();
                    let Some((chunk, number)) = next else {
                        break;
                    };
                    let made = work(&chunk.buffer[..chunk.len], chunk.start);
                    if done_tx.send((number, chunk, made)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let mut waiting = BTreeMap::new();
        let mut next = 0;
        for (number, chunk, made) in done_rx {
            waiting.insert(number, (chunk, made));
            while let Some((chunk, made)) = waiting.remove(&next) {
                merge(&chunk.buffer[..chunk.len], made);
                // The reader may have finished: the buffer is then no longer needed.
                let _ = free_tx.send(chunk.buffer);
                next += 1;
            }
        }
        reading.join().expect("the reading thread does not panic")
    })
}

/// The size a buffer starts at.
const FIRST_BUFFER: usize = 64 << 10;

fn fill_chunks(
    reader: &mut dyn Read,
    name: &str,
    size: usize,
    full: &mpsc::SyncSender<Chunk>,
    free: &mpsc::Receiver<Vec<u8>>,
) -> Result<ReadEnd, BadInput> {
    let mut end = ReadEnd::default();
    // The start of a line that the previous chunk ended in.
    let mut carry: Vec<u8> = Vec::new();
    let mut start = 0;
    let mut eof = false;
    while !eof {
        let Ok(mut buffer) = free.recv() else {
            break;
        };
        if buffer.len() < carry.len() * 2 {
            buffer.resize(carry.len() * 2, 0);
        }
        buffer[..carry.len()].copy_from_slice(&carry);
        let mut filled = carry.len();
        carry.clear();
        loop {
            if filled == buffer.len() {
                if buffer.len() >= size && memchr::memchr(b'\n', &buffer[..filled]).is_some() {
                    break;
                }
                let grown = if buffer.len() < size {
                    (buffer.len() * 2).clamp(FIRST_BUFFER.min(size), size)
                } else {
                    buffer.len() * 2
                };
                buffer.resize(grown, 0);
            }
            match reader.read(&mut buffer[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(read) => {
                    filled += read;
                    end.bytes += read as u64;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if end.bytes == 0 => return Err(BadInput(format!("{name}: {err}"))),
                // A crash can leave a log torn anywhere: keep what came before.
                Err(err) => {
                    end.cut_short = Some(err.to_string());
                    eof = true;
                    break;
                }
            }
        }
        let len = if eof {
            filled
        } else {
            let complete =
                memchr::memrchr(b'\n', &buffer[..filled]).map_or(0, |newline| newline + 1);
            carry.extend_from_slice(&buffer[complete..filled]);
            complete
        };
        if full.send(Chunk { buffer, len, start }).is_err() {
            break;
        }
        start += len as u64;
    }
    Ok(end)
}
