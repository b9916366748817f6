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

use super::{BadInput, journal, mapped::Window};

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

/// How a source is read: a plain file in windows mapped in place; gzip, a journal export or
/// stdin decoded into buffers.
enum Opened {
    Mapped(File),
    Read(Box<dyn Read + Send>),
}

/// Opens a file or stdin, decompressing it if it starts like gzip.
fn open(source: &Source) -> Result<Opened, BadInput> {
    let unreadable = |err: io::Error| BadInput(format!("{}: {err}", source.name));
    let inner: Box<dyn Read + Send> = match &source.path {
        Some(path) => {
            let file = File::open(path).map_err(unreadable)?;
            let metadata = file.metadata().map_err(unreadable)?;
            if metadata.is_dir() {
                return Err(BadInput(format!("{}: is a directory", source.name)));
            }
            if metadata.is_file() && metadata.len() > 0 {
                let mut head = vec![0; HEAD.min(metadata.len() as usize)];
                let read =
                    std::os::unix::fs::FileExt::read_at(&file, &mut head, 0).map_err(unreadable)?;
                head.truncate(read);
                if !head.starts_with(GZIP_MAGIC) && !journal::is_journal_export(&head) {
                    return Ok(Opened::Mapped(file));
                }
            }
            Box::new(file)
        }
        None => Box::new(io::stdin()),
    };
    let mut reader = BufReader::with_capacity(HEAD, inner);
    let head = reader.fill_buf().map_err(unreadable)?;
    let plain: Box<dyn BufRead + Send> = if head.starts_with(GZIP_MAGIC) {
        // Multi-member: rotated logs are often concatenated gzip files.
        Box::new(BufReader::with_capacity(HEAD, MultiGzDecoder::new(reader)))
    } else {
        Box::new(reader)
    };
    journal_or_lines(plain)
        .map(Opened::Read)
        .map_err(unreadable)
}

/// Bytes looked at to tell a gzip file or a journal export, and read at a time from one.
const HEAD: usize = 64 << 10;

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

/// A read chunk: whole lines, except at the end of the source, where the last may be torn.
struct Chunk {
    bytes: Bytes,
    /// Where its first byte is in the source (as read: after decompression).
    start: u64,
}

enum Bytes {
    /// `buffer[..len]`.
    Buffer { buffer: Vec<u8>, len: usize },
    /// `window[..len]`.
    Window { window: Window, len: usize },
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Buffer { buffer, len } => &buffer[..*len],
            Bytes::Window { window, len } => &window[..*len],
        }
    }

    /// Whether a page of its window was past the end of a file that shrank while it was read.
    fn torn(&self) -> bool {
        matches!(&self.bytes, Bytes::Window { window, .. } if window.torn())
    }

    /// Its buffer, to be filled again; a window is unmapped, and its place given back empty.
    fn into_buffer(self) -> Vec<u8> {
        match self.bytes {
            Bytes::Buffer { buffer, .. } => buffer,
            Bytes::Window { .. } => Vec::new(),
        }
    }
}

/// What `read_pieces` says of a file that shrank while it was mapped.
const SHRANK: &str = "the file shrank while it was read (truncated in place?)";

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
    let opened = open(source)?;
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
        let reading = scope.spawn(move || match opened {
            Opened::Mapped(file) => fill_windows(&file, &source.name, size, &full_tx, &free_rx),
            Opened::Read(mut reader) => {
                fill_chunks(&mut *reader, &source.name, size, &full_tx, &free_rx)
            }
        });
        for _ in 0..jobs {
            let done_tx = done_tx.clone();
            let (full_rx, work) = (&full_rx, &work);
            scope.spawn(move || {
                loop {
                    let next = full_rx.lock().expect("no worker panics").next();
                    let Some((chunk, number)) = next else {
                        break;
                    };
                    let made = work(chunk.bytes(), chunk.start);
                    if done_tx.send((number, chunk, made)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let mut waiting = BTreeMap::new();
        let mut next = 0;
        let mut torn = false;
        for (number, chunk, made) in done_rx {
            waiting.insert(number, (chunk, made));
            while let Some((chunk, made)) = waiting.remove(&next) {
                merge(chunk.bytes(), made);
                torn |= chunk.torn();
                // The reader may have finished: the buffer is then no longer needed.
                let _ = free_tx.send(chunk.into_buffer());
                next += 1;
            }
        }
        let mut end = reading.join().expect("the reading thread does not panic")?;
        if torn {
            end.cut_short.get_or_insert_with(|| SHRANK.to_owned());
        }
        Ok(end)
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
        let bytes = Bytes::Buffer { buffer, len };
        if full.send(Chunk { bytes, start }).is_err() {
            break;
        }
        start += len as u64;
    }
    Ok(end)
}

/// As `fill_chunks`, for a plain file: each chunk a window of it, mapped, cut at the last line
/// end before `size` bytes (a longer line grows its window). The file's size is looked at for
/// each: lines added while it is read are read, and a file cut short (truncated in place, as
/// `copytruncate` rotates a log) ends the read, told as cut short.
fn fill_windows(
    file: &File,
    name: &str,
    size: usize,
    full: &mpsc::SyncSender<Chunk>,
    free: &mpsc::Receiver<Vec<u8>>,
) -> Result<ReadEnd, BadInput> {
    let mut end = ReadEnd::default();
    let length = |end: &mut ReadEnd| match file.metadata() {
        Ok(metadata) => Some(metadata.len()),
        Err(err) => {
            end.cut_short = Some(err.to_string());
            None
        }
    };
    let mut start = 0;
    let mut longest = 0;
    // A place for a chunk, as buffers are for read chunks: at most so many are mapped.
    while free.recv().is_ok() {
        let Some(file_len) = length(&mut end) else {
            break;
        };
        if file_len < longest {
            end.cut_short = Some(SHRANK.to_owned());
            break;
        }
        longest = file_len;
        if file_len == start {
            break;
        }
        let left = usize::try_from(file_len - start).unwrap_or(usize::MAX);
        let mut window_len = size.max(1).min(left);
        let (window, mut len) = loop {
            let window = match Window::map(file, start, window_len) {
                Ok(window) => window,
                Err(err) if start == 0 => return Err(BadInput(format!("{name}: {err}"))),
                Err(err) => {
                    end.cut_short = Some(err.to_string());
                    return Ok(end);
                }
            };
            if window_len == left {
                break (window, window_len);
            }
            if let Some(newline) = memchr::memrchr(b'\n', &window) {
                break (window, newline + 1);
            }
            window_len = window_len.saturating_mul(2).min(left);
        };
        // Cut short while its line ends were looked for: what is left of it, and no more.
        let now = length(&mut end).unwrap_or(0);
        let torn = window.torn() || now < longest;
        if torn {
            len = len.min(usize::try_from(now.saturating_sub(start)).unwrap_or(len));
            end.cut_short = Some(SHRANK.to_owned());
        }
        end.bytes += len as u64;
        let bytes = Bytes::Window { window, len };
        if len > 0 && full.send(Chunk { bytes, start }).is_err() || torn {
            break;
        }
        start += len as u64;
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A file in a directory of its own, removed with it.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("aimlock-input-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn file(&self, name: &str, bytes: &[u8]) -> Source {
            let path = self.0.join(name);
            std::fs::write(&path, bytes).unwrap();
            Source {
                name: name.into(),
                path: Some(path),
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Each chunk as `work` saw it, with where it starts, and how the read ended.
    fn chunks(source: &Source, size: usize, jobs: usize) -> (Vec<(u64, Vec<u8>)>, ReadEnd) {
        let mut seen = Vec::new();
        let end = read_pieces(
            source,
            size,
            jobs,
            |bytes, start| (start, bytes.to_vec()),
            |merged, (start, bytes)| {
                assert_eq!(merged, &bytes[..]);
                seen.push((start, bytes));
            },
        )
        .unwrap();
        (seen, end)
    }

    #[test]
    fn a_mapped_file_is_read_in_whole_lines_cut_where_reading_it_would_cut_them() {
        let scratch = Scratch::new("cuts");
        let mut text = Vec::new();
        for n in 0..3_000 {
            // Lines of many lengths, one longer than most chunks, and a torn last one.
            let width = if n == 1_234 { 5_000 } else { n % 97 };
            writeln!(text, "{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(width)).unwrap();
        }
        text.extend_from_slice(b"{\"torn\":");
        let plain = scratch.file("plain.log", &text);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&text).unwrap();
        let read = scratch.file("read.log.gz", &gz.finish().unwrap());
        assert!(matches!(open(&plain).unwrap(), Opened::Mapped(_)));
        assert!(matches!(open(&read).unwrap(), Opened::Read(_)));
        for (size, jobs) in [(1, 1), (4096, 2), (65_536, 3), (1 << 20, 1)] {
            let (mapped, end) = chunks(&plain, size, jobs);
            assert_eq!(end.bytes, text.len() as u64);
            assert!(end.cut_short.is_none());
            let mut next = 0;
            for (index, (start, bytes)) in mapped.iter().enumerate() {
                assert_eq!(*start, next, "chunks of {size} bytes follow each other");
                next += bytes.len() as u64;
                if index + 1 < mapped.len() {
                    assert!(
                        bytes.ends_with(b"\n"),
                        "chunks of {size} bytes are whole lines"
                    );
                    assert!(bytes.len() <= size.max(2 * 5_100), "{} bytes", bytes.len());
                }
            }
            let whole: Vec<u8> = mapped.iter().flat_map(|(_, bytes)| bytes.clone()).collect();
            assert_eq!(whole, text);
            // The second read of a query finds the first read's chunks where it left them.
            assert_eq!(chunks(&plain, size, jobs).0, mapped);
            // A buffer grown for a long line stays longer: below that, reading cuts elsewhere.
            if size > 5_100 {
                assert_eq!(
                    chunks(&read, size, jobs).0,
                    mapped,
                    "chunks of {size} bytes"
                );
            }
        }
    }

    #[test]
    fn a_file_truncated_while_mapped_is_read_as_cut_short() {
        let scratch = Scratch::new("truncated");
        let line = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(200));
        let text = line.repeat(20_000);
        let source = scratch.file("shrinking.log", text.as_bytes());
        let path = source.path.clone().unwrap();
        // Repeated: the read may find the file shorter before it maps a window, or map one
        // past the new end.
        for _ in 0..5 {
            std::fs::write(&path, &text).unwrap();
            let end = read_pieces(
                &source,
                64 << 10,
                1,
                |bytes, start| {
                    if start == 0 {
                        File::options()
                            .write(true)
                            .open(&path)
                            .unwrap()
                            .set_len(100 << 10)
                            .unwrap();
                    }
                    bytes.len()
                },
                |_, _| {},
            )
            .unwrap();
            assert_eq!(end.cut_short.as_deref(), Some(SHRANK));
            assert!(end.bytes < text.len() as u64, "{} bytes read", end.bytes);
        }
    }
}
