//! Lines to stdout or to a file rotated by size and age.
//!
//! Lines are gathered in a buffer and written whole, so a rotation, which happens only
//! between two flushes, never splits a line. A failed write is cut back from the file, so a
//! full disk leaves no torn line either.

use std::{
    ffi::OsString,
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::{
        fd::AsRawFd as _,
        unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow};

use super::Failures;
use crate::{events::LockKind, procfs};

/// Bytes gathered before they are written out between flushes.
const BUFFER_BYTES: usize = 1 << 16;

/// When and how the output file is rotated.
#[derive(Clone, Copy, Debug)]
pub struct Rotation {
    pub size: Option<u64>,
    pub age: Option<Duration>,
    pub keep: u32,
    pub compress: bool,
}

impl Rotation {
    pub fn enabled(&self) -> bool {
        self.size.is_some() || self.age.is_some() || self.compress
    }
}

enum Target {
    Stdout(io::Stdout),
    File(RotatedFile),
}

struct RotatedFile {
    path: PathBuf,
    file: File,
    /// Bytes in the file: where a failed write is cut back to.
    len: u64,
    opened: Instant,
    rotation: Rotation,
    /// Takes rotated files in order, to number (and compress) them.
    rotator: Option<Rotator>,
    /// Numbers the renamed files waiting for the rotator.
    rotations: u64,
    /// A rotation failed and was reported.
    rotation_failed: bool,
}

pub struct StreamSink {
    target: Target,
    buffer: Vec<u8>,
    lines_in_buffer: u64,
    pub(super) failures: Failures,
}

impl StreamSink {
    pub fn stdout() -> Self {
        Self::new(Target::Stdout(io::stdout()), "stdout".to_owned())
    }

    /// Appends to `path`, created mode 0640; refused when it is a symbolic link, not a regular
    /// file, or another user's file.
    pub fn file(path: &Path, rotation: Rotation) -> Result<Self> {
        let file = open_output(path, false)
            .map_err(|err| anyhow!("cannot open output {}: {err}", path.display()))?;
        let len = file.metadata()?.len();
        let rotator = match rotation.enabled() {
            true => Some(Rotator::start(path, rotation)?),
            false => None,
        };
        let target = Target::File(RotatedFile {
            path: path.to_owned(),
            file,
            len,
            opened: Instant::now(),
            rotation,
            rotator,
            rotations: 0,
            rotation_failed: false,
        });
        Ok(Self::new(target, path.display().to_string()))
    }

    fn new(target: Target, name: String) -> Self {
        Self {
            target,
            buffer: Vec::with_capacity(BUFFER_BYTES + 4096),
            lines_in_buffer: 0,
            failures: Failures::new(name),
        }
    }

    /// Takes one whole line.
    pub fn write(&mut self, line: &[u8]) {
        if let Target::File(file) = &self.target
            && let Some(limit) = file.rotation.size
        {
            let pending = file.len + self.buffer.len() as u64;
            if pending > 0 && pending + line.len() as u64 > limit {
                self.flush();
                self.rotate();
            }
        }
        self.buffer.extend_from_slice(line);
        self.lines_in_buffer += 1;
        if self.buffer.len() >= BUFFER_BYTES {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let result = match &mut self.target {
            Target::Stdout(out) => out.write_all(&self.buffer).and_then(|()| out.flush()),
            Target::File(file) => file.append(&self.buffer),
        };
        if let Err(err) = result {
            self.failures.lost(self.lines_in_buffer, &err);
        }
        self.buffer.clear();
        self.lines_in_buffer = 0;
    }

    /// Rotates a file older than `--rotate-age`; an empty one only starts a new period.
    pub fn rotate_if_old(&mut self, now: Instant) {
        let Target::File(file) = &mut self.target else {
            return;
        };
        let Some(age) = file.rotation.age else {
            return;
        };
        if now.duration_since(file.opened) < age {
            return;
        }
        if file.len == 0 && self.buffer.is_empty() {
            file.opened = now;
            return;
        }
        self.flush();
        self.rotate();
    }

    /// Moves the (flushed) file aside for the rotator and starts a new one. On failure the
    /// current file is kept and written to, and the next line over the size tries again.
    fn rotate(&mut self) {
        let Target::File(file) = &mut self.target else {
            return;
        };
        if let Err(err) = file.start_next()
            && !file.rotation_failed
        {
            eprintln!(
                "aimlock: cannot rotate {}: {err}; writing on to it",
                file.path.display()
            );
            file.rotation_failed = true;
        }
    }
}

impl RotatedFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(err) => {
                // A partial write would leave half a line: cut it off.
                let _ = self.file.set_len(self.len);
                Err(err)
            }
        }
    }

    fn start_next(&mut self) -> io::Result<()> {
        self.rotations += 1;
        // The pid keeps a file left by an earlier run that was killed from being overwritten.
        let aside = suffixed(
            &self.path,
            &format!(".rotating-{}-{}", std::process::id(), self.rotations),
        );
        fs::rename(&self.path, &aside)?;
        let file = match open_output(&self.path, true) {
            Ok(file) => file,
            Err(err) => {
                // Put it back so that the writes go on into it.
                let _ = fs::rename(&aside, &self.path);
                return Err(err);
            }
        };
        self.file = file;
        self.len = 0;
        self.opened = Instant::now();
        if let Some(rotator) = &self.rotator {
            rotator.send(aside);
        }
        Ok(())
    }
}

/// Opens an output file for appending: created 0640 (`new`: it must not exist), never through
/// a symbolic link, and only a regular file of the running user.
fn open_output(path: &Path, new: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK);
    if new {
        options.create_new(true);
    } else {
        options.create(true);
    }
    let file = options.open(path).map_err(|err| match err.raw_os_error() {
        Some(libc::ELOOP) => io::Error::other("it is a symbolic link"),
        _ => err,
    })?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::other("it is not a regular file"));
    }
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(io::Error::other(format!(
            "it belongs to uid {}, not to uid {uid}",
            meta.uid()
        )));
    }
    claim(&file)?;
    // O_NONBLOCK only kept a FIFO from blocking the open; writes to a file never block.
    let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(file)
}

/// Takes an exclusive lock on an output file for as long as it is written, so that a second
/// tracer given the same file refuses it rather than interleaving its lines. A flock, not an
/// OFD lock: /proc/locks records a flock's taker, whom the refusal names.
fn claim(file: &File) -> io::Result<()> {
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
        return Err(err);
    }
    let meta = file.metadata()?;
    let (dev, ino) = (procfs::user_dev_to_kernel(meta.dev()), meta.ino());
    let writer = procfs::proc_locks().ok().and_then(|table| {
        table
            .locks
            .into_iter()
            .find(|listed| {
                let lock = &listed.lock;
                lock.kind == LockKind::Flock && (lock.dev(), lock.ino) == (dev, ino)
            })
            .and_then(|listed| u32::try_from(listed.lock.pid).ok())
    });
    Err(io::Error::other(match writer {
        Some(pid) => {
            let comm = procfs::ProcessInfo::read(pid).map_or("exited".to_owned(), |info| info.comm);
            format!("pid {pid} ({comm}) is already writing to it (it holds a lock on the file)")
        }
        None => "another process is already writing to it (it holds a lock on the file)".to_owned(),
    }))
}

/// `path` with `suffix` appended to its file name.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// Numbers rotated files in a background thread: FILE.1 is the newest, FILE.N the oldest
/// kept, each compressed when asked. Files are taken in the order they were rotated, so the
/// numbering holds however far behind compression falls.
struct Rotator {
    files: Option<mpsc::Sender<PathBuf>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Rotator {
    fn start(path: &Path, rotation: Rotation) -> Result<Self> {
        let (files, incoming) = mpsc::channel::<PathBuf>();
        let path = path.to_owned();
        let thread = thread::Builder::new()
            .name("aimlock-rotate".to_owned())
            .spawn(move || {
                for aside in incoming {
                    if let Err(err) = number(&path, &aside, rotation) {
                        eprintln!(
                            "aimlock: cannot number the rotated file {}: {err}",
                            aside.display()
                        );
                    }
                }
            })
            .map_err(|err| anyhow!("cannot start the rotation thread: {err}"))?;
        Ok(Self {
            files: Some(files),
            thread: Some(thread),
        })
    }

    fn send(&self, aside: PathBuf) {
        if let Some(files) = &self.files {
            let _ = files.send(aside);
        }
    }
}

impl Drop for Rotator {
    /// Finishes the files already rotated before the tracer exits.
    fn drop(&mut self) {
        self.files = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Shifts FILE.1..FILE.(keep-1) up by one (dropping FILE.keep), then makes `aside` FILE.1.
fn number(path: &Path, aside: &Path, rotation: Rotation) -> io::Result<()> {
    let numbered =
        |n: u32, gz: bool| suffixed(path, &format!(".{n}{}", if gz { ".gz" } else { "" }));
    for gz in [false, true] {
        match fs::remove_file(numbered(rotation.keep, gz)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
    }
    for n in (1..rotation.keep).rev() {
        for gz in [false, true] {
            match fs::rename(numbered(n, gz), numbered(n + 1, gz)) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                _ => {}
            }
        }
    }
    if !rotation.compress {
        return fs::rename(aside, numbered(1, false));
    }
    let partial = suffixed(aside, ".gz");
    compress(aside, &partial)?;
    fs::rename(&partial, numbered(1, true))?;
    fs::remove_file(aside)
}

fn compress(from: &Path, to: &Path) -> io::Result<()> {
    let mut input = File::open(from)?;
    let output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(to)?;
    let mut encoder = flate2::write::GzEncoder::new(output, flate2::Compression::default());
    io::copy(&mut input, &mut encoder)?;
    encoder.finish()?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_in(path: &Path) -> Vec<String> {
        let bytes = fs::read(path).unwrap();
        let text = if path.extension().is_some_and(|ext| ext == "gz") {
            let mut text = String::new();
            io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text)
                .unwrap();
            text
        } else {
            String::from_utf8(bytes).unwrap()
        };
        text.lines().map(str::to_owned).collect()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("aimlock-sink-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn rotation_by_size_splits_between_lines_and_keeps_n_files() {
        let dir = temp_dir("size");
        let path = dir.join("log");
        let rotation = Rotation {
            size: Some(100),
            age: None,
            keep: 3,
            compress: true,
        };
        let mut sink = StreamSink::file(&path, rotation).unwrap();
        for n in 0..20 {
            sink.write(format!("line {n:02} of twenty-one bytes\n").as_bytes());
        }
        sink.flush();
        drop(sink);
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["log", "log.1.gz", "log.2.gz", "log.3.gz"]);
        // Each file takes 3 lines of 28 bytes; the newest files hold the last lines.
        let newest_first: Vec<Vec<String>> = ["log", "log.1.gz", "log.2.gz", "log.3.gz"]
            .iter()
            .map(|name| lines_in(&dir.join(name)))
            .collect();
        assert_eq!(
            newest_first[0],
            ["line 18 of twenty-one bytes", "line 19 of twenty-one bytes"]
        );
        assert_eq!(newest_first[1][0], "line 15 of twenty-one bytes");
        assert_eq!(newest_first[3][0], "line 09 of twenty-one bytes");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotation_by_age_leaves_an_empty_file_alone() {
        let dir = temp_dir("age");
        let path = dir.join("log");
        let rotation = Rotation {
            size: None,
            age: Some(Duration::from_millis(1)),
            keep: 2,
            compress: false,
        };
        let mut sink = StreamSink::file(&path, rotation).unwrap();
        sink.rotate_if_old(Instant::now() + Duration::from_secs(1));
        sink.write(b"one\n");
        sink.flush();
        sink.rotate_if_old(Instant::now() + Duration::from_secs(2));
        sink.write(b"two\n");
        sink.flush();
        drop(sink);
        assert_eq!(lines_in(&path), ["two"]);
        assert_eq!(lines_in(&dir.join("log.1")), ["one"]);
        assert!(!dir.join("log.2").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn another_users_file_is_refused() {
        let dir = temp_dir("owner");
        let path = dir.join("log");
        fs::write(&path, b"").unwrap();
        let other = nix::unistd::geteuid().as_raw() + 1;
        nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(other)), None).unwrap();
        let err = open_output(&path, false).unwrap_err();
        assert!(err.to_string().contains("belongs to uid"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_being_written_is_refused_to_a_second_writer_until_closed() {
        let dir = temp_dir("claimed");
        let path = dir.join("log");
        let rotation = Rotation {
            size: None,
            age: None,
            keep: 0,
            compress: false,
        };
        let first = StreamSink::file(&path, rotation).unwrap();
        let err = StreamSink::file(&path, rotation).err().unwrap().to_string();
        // /proc/locks names this process: the flock's taker.
        let own = format!("pid {} (", std::process::id());
        assert!(
            err.contains(&own) && err.contains("is already writing to it"),
            "{err}"
        );
        drop(first);
        assert!(StreamSink::file(&path, rotation).is_ok());
        fs::remove_dir_all(&dir).unwrap();
    }
}
