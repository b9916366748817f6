//! `aimlock trace --metrics ADDR:PORT`: Prometheus text exposition (format 0.0.4) at
//! `GET /metrics`, from a minimal HTTP server on the tracer's runtime.
//!
//! The server renders the counts the trace loop last published, with the locks held now from
//! /proc/locks, read on tokio's blocking pool so that a scrape never holds up the drain of the
//! ring.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr, ToSocketAddrs as _},
    time::Duration,
};

use anyhow::{Context as _, Result};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use super::{BUCKETS, Family, FamilyType, Published, Value};

/// A scrape that has not sent its request by then is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Listens on `address` and serves the published counts from a task on the current runtime.
pub fn serve(address: SocketAddr, published: Published) -> Result<()> {
    let listener = std::net::TcpListener::bind(address)
        .with_context(|| format!("--metrics: cannot listen on {address}"))?;
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of fds, most likely: wait rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let published = Published::clone(&published);
            tokio::spawn(async move {
                if let Err(err) = answer(stream, &published).await {
                    log::debug!("metrics request: {err}");
                }
            });
        }
    });
    Ok(())
}

async fn answer(mut stream: TcpStream, published: &Published) -> std::io::Result<()> {
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
        (b"GET", b"/metrics") => ("200 OK", render(&super::snapshot(published).await)),
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

fn render(families: &[Family]) -> String {
    let mut out = String::with_capacity(8192);
    for family in families {
        let kind = match family.family_type {
            FamilyType::Counter => "counter",
            FamilyType::Gauge => "gauge",
            FamilyType::Histogram => "histogram",
        };
        let name = family.name;
        let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", family.help);
        for sample in &family.samples {
            let labels = sample
                .labels
                .iter()
                .map(|(key, value)| format!("{key}=\"{}\"", label_value(value)))
                .collect::<Vec<_>>();
            match &sample.value {
                Value::Number(value) => {
                    let _ = writeln!(out, "{name}{} {value}", braces(&labels));
                }
                Value::Histogram(histogram) => {
                    let mut cumulative = 0;
                    let bounds = BUCKETS.iter().map(|(_, bound, _)| *bound).chain(["+Inf"]);
                    for (bound, count) in bounds.zip(histogram.buckets) {
                        cumulative += count;
                        let mut with_le = labels.clone();
                        with_le.push(format!("le=\"{bound}\""));
                        let _ = writeln!(out, "{name}_bucket{} {cumulative}", braces(&with_le));
                    }
                    let labels = braces(&labels);
                    let _ = writeln!(
                        out,
                        "{name}_sum{labels} {}\n{name}_count{labels} {cumulative}",
                        histogram.sum_ns as f64 / 1e9
                    );
                }
            }
        }
    }
    out
}

fn braces(labels: &[String]) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", labels.join(","))
    }
}

/// A label value escaped as the exposition format wants it.
fn label_value(text: &str) -> String {
    text.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::{super::Counts, *};
    use crate::events::{EventKind, EventLine, LockKind};

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
    fn waits_fill_cumulative_buckets_by_kind() {
        let mut recorder = super::super::Recorder::new();
        for wait_ns in [500_000, 900_000, 400_000_000_000] {
            recorder.observe(&EventLine {
                event: Some(EventKind::Acquire),
                kind: Some(LockKind::Flock),
                wait_ns: Some(wait_ns),
                ..Default::default()
            });
        }
        recorder.publish(std::iter::empty());
        let counts: Counts = recorder.published().lock().unwrap().clone();
        let text = render(&counts.families(&[0; 4]));
        let bucket =
            |le: &str| format!("aimlock_lock_wait_seconds_bucket{{kind=\"flock\",le=\"{le}\"}}");
        assert!(
            text.contains(&format!("{} 0\n", bucket("0.0001"))),
            "{text}"
        );
        assert!(text.contains(&format!("{} 2\n", bucket("0.001"))));
        assert!(text.contains(&format!("{} 2\n", bucket("300"))));
        assert!(text.contains(&format!("{} 3\n", bucket("3600"))));
        assert!(text.contains(&format!("{} 3\n", bucket("+Inf"))));
        assert!(text.contains("aimlock_lock_wait_seconds_count{kind=\"flock\"} 3\n"));
        assert!(text.contains("aimlock_lock_wait_seconds_count{kind=\"posix\"} 0\n"));
        assert!(text.contains("aimlock_orphans_held 0\n"));
    }
}
