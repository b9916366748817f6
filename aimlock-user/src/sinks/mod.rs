//! Where events go: JSON lines or readable text to stdout or a rotated file, the systemd
//! journal, syslog, an OpenTelemetry collector; several at once.
//!
//! A sink that fails (a full disk, a closed pipe, a journal that is gone) is reported once on
//! stderr; the lines it could not take are counted, the count is given in the `stop` line and
//! in the metrics, and the tracer goes on.

mod file;
pub mod journald;
mod otlp;
mod syslog;
mod text;

use std::{
    io::{self, IsTerminal as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use crate::{events::EventLine, metrics::Recorder, otlp::Endpoint};

pub use file::Rotation;

/// The journal's native protocol socket.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// The local syslog socket.
const SYSLOG_SOCKET: &str = "/dev/log";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line (the log format `aimlock report` reads).
    Json,
    /// One readable line per event; orphans highlighted on a terminal.
    Text,
}

#[derive(Debug, clap::Args)]
pub struct SinkArgs {
    /// Format of --output and of the --syslog messages.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Write events to a file (appended to, created mode 0640, never through a symbolic link
    /// nor onto another user's file) or `-` for stdout. Stdout when no sink is given.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Rotate the --output file before it grows past this size (K, M, G suffixes).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    rotate_size: Option<u64>,
    /// Rotate the --output file once it has been written to for this long (`1h`, `1day`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    rotate_age: Option<Duration>,
    /// Rotated files to keep: FILE.1 (the newest) to FILE.N; older ones are removed.
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    keep: u32,
    /// Compress rotated files with gzip (FILE.1.gz), in the background.
    #[arg(long)]
    compress: bool,
    /// Send events to the systemd journal, with structured fields (LOCK_PATH, LOCK_KIND,
    /// HOLDER_PIDS...). SOCKET defaults to the journal's own.
    #[arg(long, value_name = "SOCKET", num_args = 0..=1, require_equals = true,
          default_missing_value = JOURNAL_SOCKET)]
    journald: Option<PathBuf>,
    /// Send events to syslog as RFC 5424 messages (facility daemon). SOCKET defaults to
    /// /dev/log.
    #[arg(long, value_name = "SOCKET", num_args = 0..=1, require_equals = true,
          default_missing_value = SYSLOG_SOCKET)]
    syslog: Option<PathBuf>,
    /// Send events as OpenTelemetry log records, and the metrics, to an OTLP/HTTP collector
    /// at this base URL (http://127.0.0.1:4318: POST /v1/logs and /v1/metrics, protobuf).
    #[arg(long, value_name = "URL", value_parser = Endpoint::parse)]
    otlp: Option<Endpoint>,
    /// Records the --otlp queue holds while the collector is down or slow; past that the
    /// oldest are dropped, and counted.
    #[arg(long, value_name = "RECORDS", default_value_t = 16384, requires = "otlp",
          value_parser = clap::value_parser!(u32).range(1..))]
    otlp_queue: u32,
    /// How often the metrics are sent to the --otlp collector.
    #[arg(long, value_name = "DURATION", default_value = "10s", requires = "otlp",
          value_parser = parse_interval)]
    otlp_interval: Duration,
}

impl SinkArgs {
    /// The --otlp collector and how often it gets the metrics.
    pub fn otlp_metrics(&self) -> Option<(Endpoint, Duration)> {
        self.otlp
            .clone()
            .map(|endpoint| (endpoint, self.otlp_interval))
    }
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .ok()
        .filter(|interval| !interval.is_zero())
        .ok_or_else(|| format!("{text:?} is not a duration such as 10s or 1min"))
}

/// "100M", "64K", "1G" or a number of bytes.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let units = [(b'K', 1 << 10), (b'M', 1 << 20), (b'G', 1 << 30)];
    let (digits, unit) = match units
        .iter()
        .find(|(suffix, _)| text.as_bytes().last() == Some(suffix))
    {
        Some((_, unit)) => (&text[..text.len() - 1], *unit),
        None => (text, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|&bytes| bytes > 0)
        .ok_or_else(|| format!("{text:?} is not a size in bytes (such as 100M, 64K or 1G)"))
}

/// One destination of event lines.
enum Sink {
    Stream(file::StreamSink),
    Journald(journald::JournaldSink),
    Syslog(syslog::SyslogSink),
    Otlp(otlp::OtlpSink),
}

impl Sink {
    fn failures(&self) -> &Failures {
        match self {
            Self::Stream(sink) => &sink.failures,
            Self::Journald(sink) => &sink.failures,
            Self::Syslog(sink) => &sink.failures,
            Self::Otlp(sink) => &sink.failures,
        }
    }
}

/// Every sink the tracer writes to, and the metrics that count what they are given.
pub struct Sinks {
    sinks: Vec<Sink>,
    format: Format,
    colour: bool,
    /// The event being written, serialized once for every sink that takes it in `format`.
    line: Vec<u8>,
    metrics: Option<Recorder>,
}

impl Sinks {
    /// Opens every sink named in `args`; a bad one is an error before anything is traced.
    pub fn open(args: &SinkArgs) -> Result<Self> {
        let rotation = Rotation {
            size: args.rotate_size,
            age: args.rotate_age,
            keep: args.keep,
            compress: args.compress,
        };
        let stdout_path = Path::new("-");
        let output = match &args.output {
            Some(path) => Some(path.as_path()),
            None if args.journald.is_none() && args.syslog.is_none() && args.otlp.is_none() => {
                Some(stdout_path)
            }
            None => None,
        };
        if rotation.enabled() && output.is_none_or(|path| path == stdout_path) {
            bail!("--rotate-size, --rotate-age and --compress need --output FILE");
        }
        let mut sinks = Vec::new();
        let mut colour = false;
        if let Some(path) = output {
            if path == stdout_path {
                let terminal = io::stdout().is_terminal();
                colour = terminal && std::env::var_os("NO_COLOR").is_none();
                sinks.push(Sink::Stream(file::StreamSink::stdout()));
            } else {
                sinks.push(Sink::Stream(file::StreamSink::file(path, rotation)?));
            }
        }
        if let Some(socket) = &args.journald {
            sinks.push(Sink::Journald(journald::JournaldSink::open(socket)?));
        }
        if let Some(socket) = &args.syslog {
            sinks.push(Sink::Syslog(syslog::SyslogSink::open(socket)?));
        }
        if let Some(endpoint) = &args.otlp {
            sinks.push(Sink::Otlp(otlp::OtlpSink::open(
                endpoint.clone(),
                args.otlp_queue as usize,
            )));
        }
        Ok(Self {
            sinks,
            format: args.format,
            colour,
            line: Vec::with_capacity(512),
            metrics: None,
        })
    }

    /// Counts every line written from now on for the metrics endpoint.
    pub fn record_metrics(&mut self, recorder: Recorder) {
        self.metrics = Some(recorder);
    }

    pub fn write(&mut self, event: &EventLine) {
        self.line.clear();
        match self.format {
            Format::Json => event.write_json(&mut self.line),
            Format::Text => text::text_line(&mut self.line, event, self.colour),
        }
        self.line.push(b'\n');
        for sink in &mut self.sinks {
            match sink {
                Sink::Stream(sink) => sink.write(&self.line),
                Sink::Journald(sink) => sink.write(event),
                Sink::Syslog(sink) => sink.write(event, &self.line),
                Sink::Otlp(sink) => sink.write(event),
            }
        }
        if let Some(metrics) = &mut self.metrics {
            metrics.observe(event);
        }
    }

    /// Pushes buffered lines out, rotates a file that has grown old, and publishes the
    /// metrics; called after every batch and on the tracer's tick.
    pub fn flush(&mut self) {
        let now = Instant::now();
        for sink in &mut self.sinks {
            match sink {
                Sink::Stream(sink) => {
                    sink.flush();
                    sink.rotate_if_old(now);
                }
                Sink::Otlp(sink) => sink.refresh(),
                _ => {}
            }
        }
        if let Some(metrics) = &mut self.metrics {
            let unwritten = self
                .sinks
                .iter()
                .map(|sink| (sink.failures().name.as_str(), sink.failures().lines));
            metrics.publish(unwritten);
        }
    }

    /// Tells the metrics how many records the kernel delivered and lost so far.
    pub fn count_records(&mut self, records: u64, lost: impl FnOnce() -> Option<u64>) {
        if let Some(metrics) = &mut self.metrics {
            metrics.count_records(records, lost);
        }
    }

    /// Waits, until `deadline` at most, for the sinks that send in the background (--otlp) to
    /// deliver what they hold; what they could not is then counted as unwritten.
    pub async fn settle(&mut self, deadline: Instant) {
        for sink in &mut self.sinks {
            if let Sink::Otlp(sink) = sink {
                sink.settle(deadline).await;
            }
        }
    }

    /// Lines that some sink could not take, summed over the sinks.
    pub fn unwritten(&self) -> u64 {
        self.sinks.iter().map(|sink| sink.failures().lines).sum()
    }
}

/// What a sink could not write, and whether it has said so yet.
struct Failures {
    /// The sink, as the error message and the metrics name it.
    name: String,
    lines: u64,
    reported: bool,
}

impl Failures {
    fn new(name: String) -> Self {
        Self {
            name,
            lines: 0,
            reported: false,
        }
    }

    /// Counts `lines` lost to `err`; the first failure is reported, once.
    fn lost(&mut self, lines: u64, err: &io::Error) {
        if !self.reported {
            eprintln!(
                "aimlock: cannot write to {}: {err}; counting what is lost",
                self.name
            );
            self.reported = true;
        }
        self.lines += lines;
    }
}

/// Sends one datagram to a local daemon's socket; when the daemon restarted (its socket is a new
/// one at the same path), connects again and sends once more.
fn send_datagram(
    socket: &std::os::unix::net::UnixDatagram,
    path: &std::path::Path,
    message: &[u8],
) -> std::io::Result<()> {
    match socket.send(message) {
        Err(err) if err.raw_os_error() == Some(libc::ECONNREFUSED) => {
            socket.connect(path)?;
            socket.send(message).map(drop)
        }
        other => other.map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_bytes("100M"), Ok(100 << 20));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("1T").is_err());
        assert!(parse_bytes("M").is_err());
    }
}
