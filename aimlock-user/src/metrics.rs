//! `aimlock trace --metrics ADDR:PORT`: Prometheus text exposition (format 0.0.4) at
//! `GET /metrics`, from a minimal HTTP server on the tracer's runtime.
//!
//! The trace loop counts into plain integers and copies them, once per batch, into the
//! snapshot the server reads; the server itself adds the locks held now from /proc/locks, read
//! on tokio's blocking pool so that a scrape never holds up the drain of the ring.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr, ToSocketAddrs as _},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::{
    events::{EventKind, EventLine, LockKind},
    procfs,
};

/// Event types, in the order of `Counts::events`.
const EVENT_KINDS: [EventKind; 10] = [
    EventKind::Start,
    EventKind::Stop,
    EventKind::Acquire,
    EventKind::Wait,
    EventKind::Release,
    EventKind::Fail,
    EventKind::Exit,
    EventKind::Orphan,
    EventKind::OrphanEnd,
    EventKind::Held,
];

/// Upper bounds of the wait histogram's buckets, in nanoseconds and as exposed.
const WAIT_BUCKETS: [(u64, &str); 8] = [
    (100_000, "0.0001"),
    (1_000_000, "0.001"),
    (10_000_000, "0.01"),
    (100_000_000, "0.1"),
    (1_000_000_000, "1"),
    (10_000_000_000, "10"),
    (60_000_000_000, "60"),
    (300_000_000_000, "300"),
];

/// How often the kernel's drop counters are read for the metrics (a syscall per CPU).
const LOST_READ_INTERVAL: Duration = Duration::from_millis(250);

/// A scrape that has not sent its request by then is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Default)]
struct Counts {
    events: [u64; EVENT_KINDS.len()],
    orphans_now: u64,
    orphans_total: u64,
    /// Waits per bucket (not cumulative), the last one being +Inf.
    waits: [u64; WAIT_BUCKETS.len() + 1],
    wait_sum_ns: u64,
    records: u64,
    lost: u64,
    /// Lines each sink could not write, by sink name.
    unwritten: Vec<(String, u64)>,
}

/// The trace loop's side: counts what is written and publishes it to the server.
pub struct Recorder {
    counts: Counts,
    shared: Arc<Mutex<Counts>>,
    lost_read_at: Option<Instant>,
}

/// `PORT`, `:PORT` (both on 127.0.0.1), `ADDR:PORT` or `HOST:PORT`.
pub fn parse_listen_address(text: &str) -> Result<SocketAddr, String> {
    let port_only = text.strip_prefix(':').unwrap_or(text);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    text.to_socket_addrs()
        .ok()
        .and_then(|mut found| found.next())
        .ok_or_else(|| format!("{text:?} is not an address to listen on (such as 127.0.0.1:9464)"))
}

/// Listens on `address` and serves the metrics from a task on the current runtime.
pub fn serve(address: SocketAddr) -> Result<Recorder> {
    let listener = std::net::TcpListener::bind(address)
        .with_context(|| format!("--metrics: cannot listen on {address}"))?;
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let shared = Arc::new(Mutex::new(Counts::default()));
    let served = Arc::clone(&shared);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of fds, most likely: wait rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let served = Arc::clone(&served);
            tokio::spawn(async move {
                if let Err(err) = answer(stream, &served).await {
                    log::debug!("metrics request: {err}");
                }
            });
        }
    });
    Ok(Recorder {
        counts: Counts::default(),
        shared,
        lost_read_at: None,
    })
}

impl Recorder {
    pub fn observe(&mut self, event: &EventLine) {
        let Some(kind) = event.event else { return };
        if let Some(index) = EVENT_KINDS.iter().position(|known| *known == kind) {
            self.counts.events[index] += 1;
        }
        match kind {
            EventKind::Acquire => {
                if let Some(wait_ns) = event.wait_ns {
                    let bucket = WAIT_BUCKETS
                        .iter()
                        .position(|(bound, _)| wait_ns <= *bound)
                        .unwrap_or(WAIT_BUCKETS.len());
                    self.counts.waits[bucket] += 1;
                    self.counts.wait_sum_ns = self.counts.wait_sum_ns.saturating_add(wait_ns);
                }
            }
            EventKind::Orphan => {
                self.counts.orphans_now += 1;
                self.counts.orphans_total += 1;
            }
            EventKind::OrphanEnd => {
                self.counts.orphans_now = self.counts.orphans_now.saturating_sub(1);
            }
            _ => {}
        }
    }

    pub fn count_records(&mut self, records: u64, lost: impl FnOnce() -> Option<u64>) {
        self.counts.records = records;
        let now = Instant::now();
        if self
            .lost_read_at
            .is_none_or(|at| now.duration_since(at) >= LOST_READ_INTERVAL)
        {
            self.lost_read_at = Some(now);
            if let Some(lost) = lost() {
                self.counts.lost = lost;
            }
        }
    }

    /// Makes the counts so far, with each sink's unwritten lines, what the server serves.
    pub fn publish<'a>(&mut self, unwritten: impl Iterator<Item = (&'a str, u64)>) {
        for (index, (name, lines)) in unwritten.enumerate() {
            match self.counts.unwritten.get_mut(index) {
                Some(entry) => entry.1 = lines,
                None => self.counts.unwritten.push((name.to_owned(), lines)),
            }
        }
        if let Ok(mut shared) = self.shared.lock() {
            shared.clone_from(&self.counts);
        }
    }
}

async fn answer(mut stream: TcpStream, counts: &Mutex<Counts>) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    let read_head = async {
        let mut chunk = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                break;
            }
            request.extend_from_slice(&chunk[..read]);
        }
        std::io::Result::Ok(())
    };
    if tokio::time::timeout(REQUEST_TIMEOUT, read_head)
        .await
        .is_err()
    {
        return Ok(());
    }
    let request_line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = request_line.split(|&b| b == b' ');
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let (status, body) = match (method, target) {
        (b"GET", b"/metrics") => {
            let snapshot = counts
                .lock()
                .map(|counts| counts.clone())
                .unwrap_or_default();
            // /proc/locks takes a while to read when it is long: not on the thread that
            // drains the ring.
            let held = tokio::task::spawn_blocking(locks_held)
                .await
                .unwrap_or_default();
            ("200 OK", render(&snapshot, &held))
        }
        (b"GET", _) => ("404 Not Found", "aimlock serves GET /metrics\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "aimlock serves GET /metrics\n".to_owned(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Locks held now by kind (flock, posix, ofd, lease), from /proc/locks: every lock on the
/// system, whatever the trace's filters. Blocked requests are waiters, not locks.
fn locks_held() -> [u64; 4] {
    let mut held = [0; 4];
    let Ok(table) = procfs::proc_locks() else {
        return held;
    };
    for listed in &table.locks {
        let kind = match listed.lock.kind {
            LockKind::Flock => 0,
            LockKind::Posix => 1,
            LockKind::Ofd => 2,
            LockKind::Lease => 3,
        };
        held[kind] += 1;
    }
    held
}

fn render(counts: &Counts, locks_held: &[u64; 4]) -> String {
    let mut out = String::with_capacity(4096);
    family(
        &mut out,
        "aimlock_events_total",
        "counter",
        "Events the tracer wrote, by event type.",
    );
    for (kind, count) in EVENT_KINDS.iter().zip(counts.events) {
        let _ = writeln!(
            out,
            "aimlock_events_total{{event=\"{}\"}} {count}",
            kind.name()
        );
    }
    family(
        &mut out,
        "aimlock_locks_held",
        "gauge",
        "Locks held now, by kind, from /proc/locks.",
    );
    for (kind, count) in ["flock", "posix", "ofd", "lease"].iter().zip(locks_held) {
        let _ = writeln!(out, "aimlock_locks_held{{kind=\"{kind}\"}} {count}");
    }
    family(
        &mut out,
        "aimlock_orphans",
        "gauge",
        "Orphaned locks (they outlived their taker) still held.",
    );
    let _ = writeln!(out, "aimlock_orphans {}", counts.orphans_now);
    family(
        &mut out,
        "aimlock_orphans_total",
        "counter",
        "Locks that outlived the process that took them.",
    );
    let _ = writeln!(out, "aimlock_orphans_total {}", counts.orphans_total);
    family(
        &mut out,
        "aimlock_lock_wait_seconds",
        "histogram",
        "Time blocked callers waited before they got their lock.",
    );
    let mut cumulative = 0;
    for ((_, bound), count) in WAIT_BUCKETS.iter().zip(counts.waits) {
        cumulative += count;
        let _ = writeln!(
            out,
            "aimlock_lock_wait_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += counts.waits[WAIT_BUCKETS.len()];
    let _ = writeln!(
        out,
        "aimlock_lock_wait_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        out,
        "aimlock_lock_wait_seconds_sum {}",
        counts.wait_sum_ns as f64 / 1e9
    );
    let _ = writeln!(out, "aimlock_lock_wait_seconds_count {cumulative}");
    family(
        &mut out,
        "aimlock_records_total",
        "counter",
        "Records received from the kernel.",
    );
    let _ = writeln!(out, "aimlock_records_total {}", counts.records);
    family(
        &mut out,
        "aimlock_lost_records_total",
        "counter",
        "Records the kernel could not deliver because the ring was full.",
    );
    let _ = writeln!(out, "aimlock_lost_records_total {}", counts.lost);
    family(
        &mut out,
        "aimlock_unwritten_lines_total",
        "counter",
        "Lines a sink could not write (a full disk, a closed pipe, a journal that is gone).",
    );
    for (sink, lines) in &counts.unwritten {
        let _ = writeln!(
            out,
            "aimlock_unwritten_lines_total{{sink=\"{}\"}} {lines}",
            label_value(sink)
        );
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value escaped as the exposition format wants it.
fn label_value(text: &str) -> String {
    text.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_default_to_loopback() {
        assert_eq!(
            parse_listen_address("9464"),
            Ok("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(
            parse_listen_address(":9464"),
            Ok("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(
            parse_listen_address("[::1]:80"),
            Ok("[::1]:80".parse().unwrap())
        );
        assert!(parse_listen_address("nowhere").is_err());
    }

    #[test]
    fn waits_fill_cumulative_buckets() {
        let mut counts = Counts::default();
        counts.waits[1] = 2; // two waits of at most 1 ms
        counts.waits[WAIT_BUCKETS.len()] = 1; // one longer than 300 s
        let text = render(&counts, &[0; 4]);
        assert!(text.contains("aimlock_lock_wait_seconds_bucket{le=\"0.0001\"} 0\n"));
        assert!(text.contains("aimlock_lock_wait_seconds_bucket{le=\"0.001\"} 2\n"));
        assert!(text.contains("aimlock_lock_wait_seconds_bucket{le=\"300\"} 2\n"));
        assert!(text.contains("aimlock_lock_wait_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("aimlock_lock_wait_seconds_count 3\n"));
    }
}
