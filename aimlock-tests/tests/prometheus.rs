//! A real Prometheus server (Debian's `prometheus`, installed by `cargo xtask setup`) scrapes
//! `aimlock trace --metrics` on loopback during a scripted scenario (a lock wait, a hold, an
//! orphan); the histograms and the orphan gauge read back through its HTTP query API match
//! the scenario.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use aimlock_tests::{TempDir, TraceToFile, Workload, eventually, free_port};
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A Prometheus server scraping one target every second, with its data in `dir`.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    fn start(dir: &Path, target_port: u16) -> Self {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: run `cargo xtask setup` (it installs Debian's prometheus)"
        );
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: aimlock\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let prometheus = Self { child, port };
        eventually("Prometheus to be ready", Duration::from_secs(30), || {
            prometheus
                .get("/-/ready")
                .filter(|(status, _)| *status == 200)
        });
        prometheus
    }

    /// GET `path`; (status, body), or `None` when it does not answer.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
            self.port
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    }

    /// The value of an instant query that yields one series, if it yields one.
    fn query(&self, promql: &str) -> Option<f64> {
        let (status, body) = self.get(&format!("/api/v1/query?query={}", encode(promql)))?;
        assert_eq!(status, 200, "{promql}: {body}");
        let answer: Value = serde_json::from_str(&body).expect("a JSON answer");
        let result = answer["data"]["result"].as_array()?;
        assert!(result.len() <= 1, "{promql} yields several series: {body}");
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `promql` yields `expected`.
    fn wait_for(&self, promql: &str, expected: f64) {
        let mut last = None;
        let found = (0..300).any(|_| {
            last = self.query(promql);
            std::thread::sleep(Duration::from_millis(100));
            last == Some(expected)
        });
        assert!(
            found,
            "{promql}: expected {expected}, Prometheus says {last:?}"
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query string value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"_.-".contains(&byte) {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

#[test]
fn prometheus_reads_the_scenarios_histograms_and_orphan_gauge() {
    let dir = TempDir::new("prometheus");
    let (contended, orphaned) = (dir.file("contended"), dir.file("orphaned"));
    let metrics_port = free_port();
    let log = dir.file("trace.log");
    let tracer = TraceToFile::start(
        &log,
        &[
            "--metrics",
            &format!("127.0.0.1:{metrics_port}"),
            "--path",
            contended.to_str().unwrap(),
            "--path",
            orphaned.to_str().unwrap(),
        ],
    );
    let prometheus = Prometheus::start(dir.path(), metrics_port);
    prometheus.wait_for("up{job=\"aimlock\"}", 1.0);

    // A hold of 1.5 s, with a waiter blocked for about 1.2 s of it (then a short hold).
    let holder = Workload::start(&[
        &format!("open:{}", contended.display()),
        "flock:ex",
        "sleep:1.5",
        "flock:un",
    ]);
    holder.wait_step("flock:ex");
    let waiter = Workload::start(&[
        &format!("open:{}", contended.display()),
        "sleep:0.3",
        "flock:ex",
        "flock:un",
    ]);
    holder.finish();
    waiter.finish();
    // An orphan: the taker exits while a forked child keeps the lock for 3 s.
    let taker = Workload::start(&[
        &format!("open:{}", orphaned.display()),
        "flock:ex",
        "hold-in-child:3",
    ]);
    let child = taker.holder_pid();
    taker.finish();
    prometheus.wait_for("aimlock_orphans_held", 1.0);
    prometheus.wait_for("aimlock_orphans_total{kind=\"flock\"}", 1.0);

    eventually(
        "the orphan's holder to exit",
        Duration::from_secs(10),
        || (!aimlock_tests::alive(child)).then_some(()),
    );
    prometheus.wait_for("aimlock_orphans_held", 0.0);
    prometheus.wait_for("max_over_time(aimlock_orphans_held[5m])", 1.0);

    // One wait of about 1.2 s: over 1 s, under 10 s.
    let wait = |le: &str| format!("aimlock_lock_wait_seconds_bucket{{kind=\"flock\",le=\"{le}\"}}");
    prometheus.wait_for("aimlock_lock_wait_seconds_count{kind=\"flock\"}", 1.0);
    prometheus.wait_for(&wait("1"), 0.0);
    prometheus.wait_for(&wait("10"), 1.0);
    let waited = prometheus
        .query("aimlock_lock_wait_seconds_sum{kind=\"flock\"}")
        .unwrap();
    assert!((1.0..1.5).contains(&waited), "waited {waited} s");
    // Three holds: the waiter's short one, the 1.5 s one and the orphan's 3 s.
    let hold = |le: &str| format!("aimlock_lock_hold_seconds_bucket{{kind=\"flock\",le=\"{le}\"}}");
    prometheus.wait_for("aimlock_lock_hold_seconds_count{kind=\"flock\"}", 3.0);
    prometheus.wait_for(&hold("1"), 1.0);
    prometheus.wait_for(&hold("10"), 3.0);
    let held = prometheus
        .query("aimlock_lock_hold_seconds_sum{kind=\"flock\"}")
        .unwrap();
    assert!((4.5..6.0).contains(&held), "held {held} s in all");
    // Nothing else on the machine shows in these series: the trace was filtered by path.
    prometheus.wait_for("aimlock_lock_wait_seconds_count{kind=\"posix\"}", 0.0);
    prometheus.wait_for("sum(aimlock_releases_total{kind=\"flock\"})", 3.0);
    tracer.stop();
}
