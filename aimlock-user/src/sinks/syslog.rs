//! Events to syslog as RFC 5424 messages over a local datagram socket:
//! `<PRI>1 TIMESTAMP HOSTNAME aimlock PID EVENT - LINE`.

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use super::Failures;
use crate::events::{EventKind, EventLine};

/// facility daemon (3), times 8, plus the severity.
const DAEMON_WARNING: u8 = 3 * 8 + 4;
const DAEMON_INFO: u8 = 3 * 8 + 6;

pub struct SyslogSink {
    socket: UnixDatagram,
    path: PathBuf,
    /// "HOSTNAME aimlock PID ", the same for every message.
    origin: String,
    message: Vec<u8>,
    pub(super) failures: Failures,
}

impl SyslogSink {
    pub fn open(path: &Path) -> Result<Self> {
        let socket = UnixDatagram::unbound().context("cannot create a socket for --syslog")?;
        socket
            .connect(path)
            .with_context(|| format!("--syslog: cannot reach {}", path.display()))?;
        // A syslog daemon that cannot keep up costs lines (counted), never the tracer's pace.
        socket.set_nonblocking(true)?;
        let hostname = nix::sys::utsname::uname()
            .ok()
            .and_then(|uts| uts.nodename().to_str().map(str::to_owned))
            .filter(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_else(|| "-".to_owned());
        Ok(Self {
            socket,
            path: path.to_owned(),
            origin: format!("{hostname} aimlock {} ", std::process::id()),
            message: Vec::with_capacity(1024),
            failures: Failures::new(format!("syslog ({})", path.display())),
        })
    }

    /// Sends `line` (the event in --format, newline-terminated) as one message.
    pub fn write(&mut self, event: &EventLine, line: &[u8]) {
        let kind = event.event.unwrap_or(EventKind::Unknown);
        let priority = if matches!(
            kind,
            EventKind::Orphan | EventKind::Deadlock | EventKind::Inherit
        ) {
            DAEMON_WARNING
        } else {
            DAEMON_INFO
        };
        self.message.clear();
        self.message.push(b'<');
        self.message
            .extend_from_slice(itoa::Buffer::new().format(priority).as_bytes());
        self.message.extend_from_slice(b">1 ");
        self.message
            .extend_from_slice(to_microseconds(&event.ts).as_bytes());
        self.message.extend_from_slice(b"Z ");
        self.message.extend_from_slice(self.origin.as_bytes());
        self.message.extend_from_slice(kind.name().as_bytes());
        self.message.extend_from_slice(b" - ");
        self.message
            .extend_from_slice(line.strip_suffix(b"\n").unwrap_or(line));
        if let Err(err) = super::send_datagram(&self.socket, &self.path, &self.message) {
            self.failures.lost(1, &err);
        }
    }
}

/// RFC 5424 allows six digits of a second: "2026-11-27T05:04:50.602120982Z" becomes
/// "2026-11-27T05:04:50.602120", to which the caller adds the "Z".
fn to_microseconds(ts: &str) -> &str {
    let ts = ts.strip_suffix('Z').unwrap_or(ts);
    match ts.find('.') {
        Some(dot) if ts.len() > dot + 7 => &ts[..dot + 7],
        _ => ts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_microseconds() {
        assert_eq!(
            to_microseconds("2026-11-27T05:04:50.602120982Z"),
            "2026-11-27T05:04:50.602120"
        );
    }
}
