//! Where events go: JSON lines or readable text, to stdout or a file.
//!
//! A sink that fails (a full disk, a closed pipe) is reported once on stderr; the lines it
//! could not take are counted and the count is given in the `stop` line.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, IsTerminal as _, Write},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Result;

use crate::events::{EventKind, EventLine, ProcRef};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line (the log format `aimlock report` reads).
    Json,
    /// One readable line per event; orphans highlighted on a terminal.
    Text,
}

enum Target {
    Stdout(io::Stdout),
    File(File),
}

impl Write for Target {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Stdout(out) => out.write(buf),
            Self::File(file) => file.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Stdout(out) => out.flush(),
            Self::File(file) => file.flush(),
        }
    }
}

/// A buffered destination for event lines.
pub struct Sink {
    name: String,
    format: Format,
    colour: bool,
    out: BufWriter<Target>,
    line: Vec<u8>,
    /// Lines written to the buffer since the last successful flush.
    in_buffer: u64,
    /// Lines lost to write errors.
    pub unwritten: u64,
    failed: bool,
}

impl Sink {
    /// `-` is stdout; any other path is appended to, created with mode 0640, and refused when
    /// it is a symbolic link.
    pub fn open(path: &Path, format: Format) -> Result<Self> {
        let (name, target, terminal) = if path == Path::new("-") {
            let stdout = io::stdout();
            let terminal = stdout.is_terminal();
            ("stdout".to_owned(), Target::Stdout(stdout), terminal)
        } else {
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o640)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)
                .map_err(|err| match err.raw_os_error() {
                    Some(libc::ELOOP) => anyhow::anyhow!(
                        "cannot open output {}: it is a symbolic link",
                        path.display()
                    ),
                    _ => anyhow::Error::new(err)
                        .context(format!("cannot open output {}", path.display())),
                })?;
            (
                PathBuf::from(path).display().to_string(),
                Target::File(file),
                false,
            )
        };
        Ok(Self {
            name,
            format,
            colour: terminal && std::env::var_os("NO_COLOR").is_none(),
            out: BufWriter::with_capacity(1 << 16, target),
            line: Vec::with_capacity(512),
            in_buffer: 0,
            unwritten: 0,
            failed: false,
        })
    }

    pub fn write(&mut self, event: &EventLine) {
        self.line.clear();
        match self.format {
            Format::Json => event.write_json(&mut self.line),
            Format::Text => text_line(&mut self.line, event, self.colour),
        }
        self.line.push(b'\n');
        if self.failed {
            self.unwritten += 1;
            return;
        }
        match self.out.write_all(&self.line) {
            Ok(()) => self.in_buffer += 1,
            Err(err) => self.fail(err, 1),
        }
    }

    /// Pushes buffered lines to the destination.
    pub fn flush(&mut self) {
        if self.failed {
            return;
        }
        match self.out.flush() {
            Ok(()) => self.in_buffer = 0,
            Err(err) => self.fail(err, 0),
        }
    }

    /// Reports the first failure once; the lines still buffered, and all later lines, are
    /// counted as unwritten.
    fn fail(&mut self, err: io::Error, lines: u64) {
        if !self.failed {
            eprintln!(
                "aimlock: cannot write to {}: {err}; counting what is lost",
                self.name
            );
        }
        self.failed = true;
        self.unwritten += self.in_buffer + lines;
        self.in_buffer = 0;
    }
}

fn text_line(out: &mut Vec<u8>, event: &EventLine, colour: bool) {
    let kind = event.event.unwrap_or(EventKind::Unknown);
    let mut words = vec![event.ts.clone(), format!("{:<10}", kind.name())];
    if let Some(kind) = event.kind {
        words.push(kind.name().to_owned());
    }
    if let Some(mode) = event.mode {
        words.push(mode.name().to_owned());
    }
    if let Some(pid) = event.pid {
        words.push(format!(
            "pid={pid}({})",
            event.comm.as_deref().unwrap_or("?")
        ));
    }
    if let (Some(dev), Some(ino)) = (&event.dev, event.ino) {
        words.push(format!("{dev}:{ino}"));
    }
    if let Some(path) = &event.path {
        let deleted = if event.deleted == Some(true) {
            " (deleted)"
        } else {
            ""
        };
        words.push(format!("{path}{deleted}"));
    }
    if let Some(start) = event.start {
        match event.end {
            Some(Some(end)) => words.push(format!("[{start}-{end}]")),
            _ => words.push(format!("[{start}-EOF]")),
        }
    }
    for (label, value) in [
        ("wait", event.wait_ns),
        ("held", event.held_ns),
        ("orphaned", event.orphan_ns),
    ] {
        if let Some(ns) = value {
            let rounded = Duration::from_micros(ns / 1000);
            words.push(format!("{label}={}", humantime::format_duration(rounded)));
        }
    }
    if let Some(reason) = event.reason {
        words.push(format!("reason={}", reason.name()));
    }
    if let Some(errno) = &event.errno {
        words.push(format!("errno={errno}"));
    }
    if let Some(holders) = &event.holders {
        words.push(format!("holders={}", proc_list(holders)));
    }
    if let Some(by) = &event.by {
        words.push(format!("by={}", proc_list(std::slice::from_ref(by))));
    }
    if let Some(lost) = event.lost {
        words.push(format!("lost={lost}"));
    }
    let highlight = colour && matches!(kind, EventKind::Orphan | EventKind::OrphanEnd);
    if highlight {
        out.extend_from_slice(b"\x1b[1;31m");
    }
    out.extend_from_slice(words.join(" ").as_bytes());
    if highlight {
        out.extend_from_slice(b"\x1b[0m");
    }
}

fn proc_list(procs: &[ProcRef]) -> String {
    if procs.is_empty() {
        return "none".to_owned();
    }
    procs
        .iter()
        .map(|p| format!("{}({})", p.pid, p.comm))
        .collect::<Vec<_>>()
        .join(",")
}
