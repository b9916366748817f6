//! `aimlock trace` as a service: rotated files, journald and syslog sinks, metrics, dropped
//! capabilities, refused outputs, a full disk, and the systemd unit.

use std::{
    collections::HashMap,
    io::Read as _,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use aimlock_tests::{
    PrivateJournal, TempDir, Workload, aimlock_bin, eventually, free_port, lockwork_bin,
    require_root,
};
use serde_json::Value;

/// A tracer writing to files and sockets rather than to stdout.
struct ServiceTracer {
    child: Child,
}

impl ServiceTracer {
    /// Starts `aimlock trace ARGS` and waits for the start line in `log`.
    fn start(args: &[&str], log: &Path) -> Self {
        require_root();
        let child = Command::new(aimlock_bin())
            .arg("trace")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn aimlock trace");
        let tracer = Self { child };
        eventually("the start line", Duration::from_secs(60), || {
            std::fs::read_to_string(log)
                .ok()
                .filter(|text| text.starts_with("{\"event\":\"start\""))
        });
        tracer
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT; asserts a clean exit and returns what the tracer wrote on stderr.
    fn stop(mut self) -> String {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("SIGINT the tracer");
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .expect("read stderr");
        let status = self.child.wait().expect("wait for the tracer");
        assert!(
            status.success(),
            "aimlock trace exited with {status}: {stderr}"
        );
        stderr
    }
}

impl Drop for ServiceTracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A copy of lockwork under its own name, so that `--comm` selects only this test's records.
fn own_lockwork(dir: &TempDir, name: &str) -> PathBuf {
    let copy = dir.path().join(name);
    std::fs::copy(lockwork_bin(), &copy).expect("copy lockwork");
    copy
}

fn parse_lines(text: &str, file: &Path) -> Vec<Value> {
    text.lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|_| panic!("torn or bad line in {}: {line:?}", file.display()))
        })
        .collect()
}

/// Uncompressed contents of a log file, gunzipped if its name ends in .gz.
fn read_log(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read a log file");
    if path.extension().is_some_and(|ext| ext == "gz") {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .expect("gunzip a rotated file");
        text
    } else {
        String::from_utf8(bytes).expect("UTF-8 log")
    }
}

fn count(events: &[Value], event: &str) -> u64 {
    events.iter().filter(|e| e["event"] == event).count() as u64
}

#[test]
fn rotation_under_a_burst_loses_and_tears_nothing() {
    let dir = TempDir::new("rotate");
    let file = dir.file("lock");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let log = logs.join("trace.log");
    let workload = own_lockwork(&dir, "lw-rotate");
    let rotate_size = 256 * 1024;
    let tracer = ServiceTracer::start(
        &[
            "--output",
            log.to_str().unwrap(),
            "--rotate-size",
            "256K",
            "--keep",
            "1000",
            "--compress",
            "--path",
            file.to_str().unwrap(),
            "--comm",
            "lw-rotate",
            "--ring-size",
            "16M",
            "--every-event",
        ],
        &log,
    );
    let pairs = aimlock_tests::burst_size(20_000, 5_000);
    let status = Command::new(&workload)
        .args([
            &format!("open:{}", file.display()),
            &format!("loop:{pairs}:flock"),
        ])
        .stdout(Stdio::null())
        .status()
        .expect("run the burst");
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));
    tracer.stop();

    // Oldest first: trace.log.N.gz ... trace.log.1.gz, then trace.log.
    let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&logs).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name == "trace.log" {
            continue;
        }
        let number = name
            .strip_prefix("trace.log.")
            .and_then(|rest| rest.strip_suffix(".gz"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected file {name} among the rotated logs"));
        rotated.push((number, path));
    }
    rotated.sort_by_key(|(number, _)| std::cmp::Reverse(*number));
    assert!(
        rotated.len() >= 3,
        "{pairs} pairs in 256 KiB files make several rotations: {rotated:?}"
    );
    let numbers: Vec<u32> = rotated.iter().map(|(n, _)| *n).collect();
    let expected: Vec<u32> = (1..=rotated.len() as u32).rev().collect();
    assert_eq!(
        numbers, expected,
        "rotated files are numbered without a gap"
    );
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, path)| path).collect();
    files.push(log.clone());

    let mut events = Vec::new();
    for path in &files {
        let text = read_log(path);
        assert!(
            text.len() <= rotate_size,
            "{} has {} bytes, over --rotate-size",
            path.display(),
            text.len()
        );
        assert!(
            text.ends_with('\n'),
            "{} ends in a torn line",
            path.display()
        );
        events.extend(parse_lines(&text, path));
    }
    assert_eq!(events[0]["event"], "start");
    let stop = events.last().unwrap().clone();
    assert_eq!(stop["event"], "stop", "the stop line is last");
    let records = stop["records"].as_u64().unwrap();
    let lost = stop["lost"].as_u64().unwrap();
    assert_eq!(records + lost, 2 * pairs + 1, "{stop}");
    assert_eq!(stop["unwritten"], 0, "{stop}");
    assert_eq!(
        stop["events"].as_u64().unwrap(),
        events.len() as u64 - 2,
        "every line between start and stop is in the files: {stop}"
    );
    let (acquires, releases) = (count(&events, "acquire"), count(&events, "release"));
    assert_eq!(lost, 0, "a 16 MiB ring takes the burst: {stop}");
    assert_eq!((acquires, releases), (pairs, pairs), "{stop}");
    // Lines come in time order across the files.
    let times: Vec<&str> = events.iter().map(|e| e["ts"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]));
}

/// The metrics endpoint's samples, by name with labels, after checking the text format.
fn scrape(port: u16) -> HashMap<String, f64> {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let mut samples = HashMap::new();
    let mut typed = Vec::new();
    for line in body.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let words: Vec<&str> = comment.splitn(3, ' ').collect();
            assert!(
                matches!(words[0], "HELP" | "TYPE") && words.len() == 3,
                "bad comment {line:?}"
            );
            if words[0] == "TYPE" {
                assert!(
                    ["counter", "gauge", "histogram"].contains(&words[2]),
                    "{line:?}"
                );
                typed.push(words[1].to_owned());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let name = series.split('{').next().unwrap();
        assert!(name.starts_with("aimlock_"), "{line:?}");
        assert!(
            typed.iter().any(|family| name.starts_with(family.as_str())),
            "{name} has no TYPE line before it"
        );
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(series.to_owned(), value);
    }
    samples
}

#[test]
fn metrics_count_a_scripted_scenario() {
    let dir = TempDir::new("metrics");
    let (plain, contended, orphaned) = (
        dir.file("plain"),
        dir.file("contended"),
        dir.file("orphaned"),
    );
    let log = dir.path().join("trace.log");
    let port = free_port();
    let path_args: Vec<String> = [&plain, &contended, &orphaned]
        .iter()
        .flat_map(|path| ["--path".to_owned(), path.display().to_string()])
        .collect();
    let mut args = vec![
        "--output".to_owned(),
        log.display().to_string(),
        "--metrics".to_owned(),
        format!("127.0.0.1:{port}"),
    ];
    args.extend(path_args);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let tracer = ServiceTracer::start(&args, &log);

    // A plain lock and unlock: a short hold, which may fold into a summary.
    Workload::start(&[&format!("open:{}", plain.display()), "flock:ex", "flock:un"]).finish();
    // A waiter blocked for about 0.3 s.
    let holder = Workload::start(&[
        &format!("open:{}", contended.display()),
        "flock:ex",
        "sleep:0.5",
        "flock:un",
    ]);
    holder.wait_step("flock:ex");
    let waiter = Workload::start(&[
        &format!("open:{}", contended.display()),
        "sleep:0.2",
        "flock:ex",
    ]);
    holder.finish();
    waiter.finish();
    // An orphan: the taker exits while a forked child keeps the lock for 2 s.
    let taker = Workload::start(&[
        &format!("open:{}", orphaned.display()),
        "flock:ex",
        "hold-in-child:3",
    ]);
    let child = taker.holder_pid();
    taker.finish();

    let during = eventually("the orphan in the metrics", Duration::from_secs(10), || {
        let samples = scrape(port);
        (samples.get("aimlock_orphans_held") == Some(&1.0)).then_some(samples)
    });
    assert_eq!(during["aimlock_orphans_total{kind=\"flock\"}"], 1.0);
    assert!(
        during["aimlock_locks_held{kind=\"flock\"}"] >= 1.0,
        "{during:?}"
    );

    eventually("the orphan's end", Duration::from_secs(10), || {
        (!aimlock_tests::alive(child)).then_some(())
    });
    let after = eventually(
        "the orphan's release in the metrics",
        Duration::from_secs(10),
        || {
            let samples = scrape(port);
            (samples.get("aimlock_orphans_held") == Some(&0.0)).then_some(samples)
        },
    );
    let events = |event: &str| after[&format!("aimlock_events_total{{event=\"{event}\"}}")];
    assert_eq!(events("start"), 1.0);
    assert_eq!(events("acquire"), 4.0, "{after:?}");
    assert_eq!(events("release"), 4.0, "{after:?}");
    assert_eq!(events("wait"), 1.0, "{after:?}");
    assert_eq!(events("orphan"), 1.0, "{after:?}");
    assert_eq!(events("orphan_end"), 1.0, "{after:?}");
    assert_eq!(after["aimlock_orphans_total{kind=\"flock\"}"], 1.0);
    assert_eq!(
        after["aimlock_lock_wait_seconds_count{kind=\"flock\"}"],
        1.0
    );
    assert_eq!(
        after["aimlock_lock_wait_seconds_bucket{kind=\"flock\",le=\"+Inf\"}"],
        1.0
    );
    assert_eq!(
        after["aimlock_lock_hold_seconds_count{kind=\"flock\"}"],
        4.0
    );
    assert_eq!(after["aimlock_lost_records_total"], 0.0);
    assert_eq!(
        after[&format!(
            "aimlock_unwritten_lines_total{{sink=\"{}\"}}",
            log.display()
        )],
        0.0
    );
    assert!(after["aimlock_records_total"] >= 9.0, "{after:?}");
    tracer.stop();

    // The log agrees with the counters: the plain lock's short hold is its own pair of lines or
    // a summary's count, as it folded or not.
    let logged = parse_lines(&std::fs::read_to_string(&log).unwrap(), &log);
    let summarized: u64 = logged
        .iter()
        .filter(|e| e["event"] == "summary")
        .map(|summary| summary["holds"].as_u64().unwrap())
        .sum();
    assert_eq!(count(&logged, "acquire") + summarized, 4);
    assert_eq!(count(&logged, "orphan"), 1);
    // The wait is in the buckets its length, as the log gives it, belongs to: about 0.3 s, less
    // where the waiter took long to start (an emulated machine).
    let waits: Vec<u64> = logged
        .iter()
        .filter_map(|event| event["wait_ns"].as_u64())
        .collect();
    let [wait_ns] = waits[..] else {
        panic!("one acquire after a wait, not {waits:?}");
    };
    let waited = wait_ns as f64 / 1e9;
    let sum = after["aimlock_lock_wait_seconds_sum{kind=\"flock\"}"];
    assert!((sum - waited).abs() < 1e-6, "{sum} s against {waited} s");
    for (bound, bound_ns) in [
        ("0.01", 10_000_000),
        ("0.1", 100_000_000),
        ("1", 1_000_000_000),
        ("10", 10_000_000_000),
    ] {
        let bucket = format!("aimlock_lock_wait_seconds_bucket{{kind=\"flock\",le=\"{bound}\"}}");
        let within = f64::from(u8::from(wait_ns <= bound_ns));
        assert_eq!(
            after[&bucket], within,
            "{bucket} after a wait of {waited} s"
        );
    }
}

#[test]
fn scrapes_during_a_burst_hold_up_no_record_and_count_the_held_locks() {
    // About a second of 10 lock/unlock pairs a millisecond, when nothing holds it up.
    let burst_batches = aimlock_tests::burst_size(1000, 250);
    let dir = TempDir::new("metrics-burst");
    let file = dir.file("lock");
    let log = dir.path().join("trace.log");
    let workload = own_lockwork(&dir, "lw-scrape");
    // Thousands of held locks make /proc/locks long, and each scrape slow to read it: tens of
    // milliseconds that must not be spent on the thread that drains the ring.
    let many = dir.path().join("many");
    std::fs::create_dir(&many).unwrap();
    let per_kind = aimlock_tests::burst_size(3000, 750);
    let hold_many = format!("hold-many:{}:{}", many.display(), 3 * per_kind);
    let mut holding = Workload::start(&[&hold_many, "wait-stdin"]);
    holding.wait_step(&hold_many);

    let port = free_port();
    let tracer = ServiceTracer::start(
        &[
            "--output",
            log.to_str().unwrap(),
            "--metrics",
            &format!("127.0.0.1:{port}"),
            "--path",
            file.to_str().unwrap(),
            "--comm",
            "lw-scrape",
            // About 900 records: 45 ms of this burst.
            "--ring-size",
            "128K",
            "--every-event",
        ],
        &log,
    );
    let bursting = Arc::new(AtomicBool::new(true));
    let scrapers: Vec<_> = (0..2)
        .map(|_| {
            let bursting = Arc::clone(&bursting);
            std::thread::spawn(move || {
                let mut scrapes = vec![scrape(port)];
                while bursting.load(Ordering::Relaxed) {
                    scrapes.push(scrape(port));
                }
                scrapes
            })
        })
        .collect();
    // Paced by sleeps rather than by the clock: reading /proc/locks holds up lock calls for a
    // moment, and a workload that caught up afterwards would overflow any ring by itself.
    let mut steps = vec![format!("open:{}", file.display())];
    for _ in 0..burst_batches {
        steps.extend(["loop:10:flock".to_owned(), "sleep:0.001".to_owned()]);
    }
    let burst = Command::new(&workload)
        .args(&steps)
        .stdout(Stdio::null())
        .status()
        .expect("run the burst");
    bursting.store(false, Ordering::Relaxed);
    assert!(burst.success());
    let scrapes: Vec<HashMap<String, f64>> = scrapers
        .into_iter()
        .flat_map(|scraper| scraper.join().expect("a scrape failed"))
        .collect();
    holding.proceed();
    holding.finish();
    std::thread::sleep(Duration::from_millis(300));
    tracer.stop();

    // The kernel hands /proc/locks out a page at a time, and locks taken or released between
    // two pages (the burst's own) shift the lines after them: a scrape may miss a few.
    let at_least = (per_kind - per_kind / 100) as f64;
    for samples in &scrapes {
        for kind in ["flock", "posix", "ofd"] {
            let held = samples[&format!("aimlock_locks_held{{kind=\"{kind}\"}}")];
            assert!(
                held >= at_least,
                "{kind}: {held} held, not about {per_kind}"
            );
        }
    }
    let pairs = 10 * burst_batches;
    let events = parse_lines(&std::fs::read_to_string(&log).unwrap(), &log);
    let stop = events.last().unwrap();
    assert_eq!(stop["event"], "stop", "{stop}");
    assert_eq!(
        stop["lost"],
        0,
        "{} scrapes during the burst held up the ring: {stop}",
        scrapes.len()
    );
    assert_eq!(count(&events, "acquire"), pairs, "{stop}");
    assert_eq!(count(&events, "release"), pairs, "{stop}");
}

/// One journal entry in the native protocol: fields in order.
fn parse_journal_entry(datagram: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut fields = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'=' || b == b'\n')
            .expect("a field name ends with = or a newline");
        let key = String::from_utf8(rest[..end].to_vec()).unwrap();
        assert!(
            !key.is_empty()
                && !key.starts_with('_')
                && key
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
            "bad journal field name {key:?}"
        );
        let value;
        if rest[end] == b'=' {
            let tail = &rest[end + 1..];
            let newline = tail.iter().position(|&b| b == b'\n').expect("field ends");
            value = tail[..newline].to_vec();
            rest = &tail[newline + 1..];
        } else {
            let tail = &rest[end + 1..];
            let len = u64::from_le_bytes(tail[..8].try_into().unwrap()) as usize;
            value = tail[8..8 + len].to_vec();
            assert_eq!(tail[8 + len], b'\n', "a binary field ends with a newline");
            rest = &tail[8 + len + 1..];
        }
        fields.push((key, value));
    }
    fields
}

fn receive_all(socket: &UnixDatagram) -> Vec<Vec<u8>> {
    socket.set_nonblocking(true).unwrap();
    let mut datagrams = Vec::new();
    let mut buffer = vec![0u8; 1 << 16];
    while let Ok(len) = socket.recv(&mut buffer) {
        datagrams.push(buffer[..len].to_vec());
    }
    datagrams
}

#[test]
fn journald_sink_speaks_the_native_protocol() {
    let dir = TempDir::new("journald");
    // A name with a newline needs the protocol's length-prefixed form.
    let file = dir.file("odd\nname");
    let socket_path = dir.path().join("journal.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind a stand-in journal socket");
    let log = dir.path().join("trace.log");
    let tracer = ServiceTracer::start(
        &[
            "--output",
            log.to_str().unwrap(),
            &format!("--journald={}", socket_path.display()),
            "--path",
            file.to_str().unwrap(),
        ],
        &log,
    );
    // The pause lets the tracer read the path from the taker's fds while it is alive.
    let taker = Workload::start(&[
        &format!("open:{}", file.display()),
        "flock:ex",
        "sleep:0.3",
        "hold-in-child:3",
    ]);
    let child = taker.holder_pid();
    let taker_pid = taker.pid();
    taker.finish();
    eventually(
        "the orphan's end in the log",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|text| text.contains("\"event\":\"orphan_end\""))
        },
    );
    tracer.stop();

    let entries: Vec<HashMap<String, Vec<u8>>> = receive_all(&socket)
        .iter()
        .map(|datagram| parse_journal_entry(datagram).into_iter().collect())
        .collect();
    let field = |entry: &HashMap<String, Vec<u8>>, key: &str| {
        String::from_utf8(entry.get(key).cloned().unwrap_or_default()).unwrap()
    };
    let of = |event: &str| {
        entries
            .iter()
            .find(|entry| field(entry, "LOCK_EVENT") == event)
            .unwrap_or_else(|| panic!("no {event} entry among {} entries", entries.len()))
    };
    for entry in &entries {
        assert_eq!(field(entry, "SYSLOG_IDENTIFIER"), "aimlock");
        assert!(!field(entry, "MESSAGE").is_empty());
    }
    assert_eq!(field(of("start"), "PRIORITY"), "6");
    let acquire = of("acquire");
    assert_eq!(field(acquire, "LOCK_KIND"), "flock");
    assert_eq!(field(acquire, "LOCK_MODE"), "write");
    assert_eq!(field(acquire, "LOCK_PATH"), file.display().to_string());
    assert_eq!(field(acquire, "LOCK_PID"), taker_pid.to_string());
    assert_eq!(field(acquire, "LOCK_END"), "EOF");
    assert_eq!(field(acquire, "PRIORITY"), "6");
    let orphan = of("orphan");
    assert_eq!(field(orphan, "PRIORITY"), "4", "orphans are warnings");
    assert_eq!(field(orphan, "HOLDER_PIDS"), child.to_string());
    assert_eq!(field(of("orphan_end"), "LOCK_BY_PID"), child.to_string());
    assert_eq!(field(of("stop"), "AIMLOCK_LOST"), "0");

    // The journal holds the whole log: each entry, read back through the documented field
    // names, is its JSON line but for `host`, which the journal records as `_HOSTNAME`.
    let lines = parse_lines(&std::fs::read_to_string(&log).unwrap(), &log);
    let from_journal: Vec<Value> = entries.iter().map(journal_entry_as_line).collect();
    let without_host: Vec<Value> = lines
        .into_iter()
        .map(|mut line| {
            line.as_object_mut().unwrap().remove("host");
            line
        })
        .collect();
    assert_eq!(from_journal, without_host);
}

#[test]
fn a_real_journal_keeps_every_line_and_its_host() {
    let journal = PrivateJournal::start("journal");
    let dir = TempDir::new("real-journal");
    let file = dir.file("lock");
    let log = dir.path().join("trace.log");
    let tracer = ServiceTracer::start(
        &[
            "--output",
            log.to_str().unwrap(),
            &format!("--journald={}", journal.socket().display()),
            "--path",
            file.to_str().unwrap(),
        ],
        &log,
    );
    // An orphan and its end: entries with holders and `by`.
    let taker = Workload::start(&[
        &format!("open:{}", file.display()),
        "flock:ex",
        "sleep:0.3",
        "hold-in-child:2",
    ]);
    taker.finish();
    eventually(
        "the orphan's end in the log",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|text| text.contains("\"event\":\"orphan_end\""))
        },
    );
    tracer.stop();

    // As `journalctl -o json` gives them: every value a string, the journal's own fields
    // (`_HOSTNAME`, `__REALTIME_TIMESTAMP`, ...) beside the tracer's.
    let entries = journal.aimlock_entries();
    let lines = parse_lines(&std::fs::read_to_string(&log).unwrap(), &log);
    assert_eq!(entries.len(), lines.len(), "{entries:#?}");
    let mut from_journal = Vec::new();
    let mut without_host = Vec::new();
    for (entry, mut line) in entries.into_iter().zip(lines) {
        let host = line.as_object_mut().unwrap().remove("host").unwrap();
        assert_eq!(entry["_HOSTNAME"], host, "{entry}");
        let fields: HashMap<String, Vec<u8>> = entry
            .as_object()
            .unwrap()
            .iter()
            .filter(|(key, _)| !key.starts_with('_'))
            .map(|(key, value)| {
                let text = value.as_str().unwrap_or_else(|| panic!("{key}: {value}"));
                (key.clone(), text.as_bytes().to_vec())
            })
            .collect();
        from_journal.push(journal_entry_as_line(&fields));
        without_host.push(line);
    }
    assert_eq!(from_journal, without_host);
    assert!(
        from_journal
            .iter()
            .any(|line| line["event"] == "orphan_end"),
        "{from_journal:#?}"
    );
}

/// A journal entry of `--journald` as the JSON line it stands for, through the field names
/// README lists; a field not listed there fails.
fn journal_entry_as_line(entry: &HashMap<String, Vec<u8>>) -> Value {
    let mut line = serde_json::Map::new();
    for (key, value) in entry {
        let text = String::from_utf8(value.clone()).unwrap();
        let number = || Value::from(text.parse::<u64>().unwrap());
        let boolean = || Value::from(text.parse::<bool>().unwrap());
        let json = || serde_json::from_str::<Value>(&text).unwrap();
        let (name, value) = match key.as_str() {
            // The text line, and forms made for journalctl matches (checked above).
            "MESSAGE" | "PRIORITY" | "SYSLOG_IDENTIFIER" | "HOLDER_PIDS" | "LOCK_BY_PID"
            | "LOCK_BY_COMM" | "BLOCKER_PIDS" | "DEADLOCK_PIDS" | "LINEAGE_PIDS"
            | "LOCK_FROM_PID" => continue,
            "LOCK_END" if text == "EOF" => ("end", Value::Null),
            "LOCK_EVENT" => ("event", Value::from(text.clone())),
            "LOCK_TS" => ("ts", Value::from(text.clone())),
            "AIMLOCK_VERSION" => ("version", Value::from(text.clone())),
            "AIMLOCK_KERNEL" => ("kernel", Value::from(text.clone())),
            "AIMLOCK_LOCK_HOOKS" => ("lock_hooks", Value::from(text.clone())),
            "LOCK_KIND" => ("kind", Value::from(text.clone())),
            "LOCK_MODE" => ("mode", Value::from(text.clone())),
            "LOCK_PATH" => ("path", Value::from(text.clone())),
            "LOCK_HOST_PATH" => ("host_path", Value::from(text.clone())),
            "LOCK_PATH_UNKNOWN" => ("path_unknown", Value::from(text.clone())),
            "LOCK_NAME" => ("name", Value::from(text.clone())),
            "LOCK_DEV" => ("dev", Value::from(text.clone())),
            "LOCK_COMM" => ("comm", Value::from(text.clone())),
            "LOCK_CGROUP" => ("cgroup", Value::from(text.clone())),
            "LOCK_REASON" => ("reason", Value::from(text.clone())),
            "LOCK_ERRNO" => ("errno", Value::from(text.clone())),
            "LOCK_TAKER_EXIT" => ("taker_exit", Value::from(text.clone())),
            "LOCK_DELETED" => ("deleted", boolean()),
            "LOCK_ORPHAN" => ("orphan", boolean()),
            "LOCK_HOLDERS" => ("holders", json()),
            "LOCK_BY" => ("by", json()),
            "LOCK_BLOCKERS" => ("blockers", json()),
            "LOCK_CYCLE" => ("cycle", json()),
            "LOCK_LINEAGE" => ("lineage", json()),
            "LOCK_FROM" => ("from", json()),
            "LOCK_VIA" => ("via", Value::from(text.clone())),
            "AIMLOCK_SCHEMA" => ("schema", number()),
            "AIMLOCK_LOST" => ("lost", number()),
            "AIMLOCK_RECORDS" => ("records", number()),
            "AIMLOCK_EVENTS" => ("events", number()),
            "AIMLOCK_TABLE_READS" => ("table_reads", number()),
            "AIMLOCK_UNWRITTEN" => ("unwritten", number()),
            "AIMLOCK_UNTRACED_CHILDREN" => ("untraced_children", number()),
            "LOCK_INO" => ("ino", number()),
            "LOCK_GENERATION" => ("generation", number()),
            "LOCK_START" => ("start", number()),
            "LOCK_END" => ("end", number()),
            "LOCK_PID" => ("pid", number()),
            "LOCK_START_TIME" => ("start_time", number()),
            "LOCK_NS_PID" => ("ns_pid", number()),
            "LOCK_TID" => ("tid", number()),
            "LOCK_WAIT_NS" => ("wait_ns", number()),
            "LOCK_HELD_NS" => ("held_ns", number()),
            "LOCK_LOCKS" => ("locks", number()),
            "LOCK_ORPHAN_NS" => ("orphan_ns", number()),
            other => panic!("journal field {other} is not documented"),
        };
        line.insert(name.to_string(), value);
    }
    Value::Object(line)
}

#[test]
fn syslog_sink_sends_rfc5424_messages() {
    let dir = TempDir::new("syslog");
    let file = dir.file("lock");
    let socket_path = dir.path().join("log.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind a stand-in syslog socket");
    let log = dir.path().join("trace.log");
    let tracer = ServiceTracer::start(
        &[
            "--output",
            log.to_str().unwrap(),
            &format!("--syslog={}", socket_path.display()),
            "--path",
            file.to_str().unwrap(),
            "--every-event",
        ],
        &log,
    );
    Workload::start(&[&format!("open:{}", file.display()), "flock:sh", "flock:un"]).finish();
    eventually("the release in the log", Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|text| text.contains("\"event\":\"release\""))
    });
    let tracer_pid = tracer.pid();
    tracer.stop();

    let messages: Vec<String> = receive_all(&socket)
        .into_iter()
        .map(|datagram| String::from_utf8(datagram).unwrap())
        .collect();
    let events: Vec<&str> = messages
        .iter()
        .map(|message| message.split(' ').nth(5).unwrap())
        .collect();
    assert_eq!(
        events,
        ["start", "acquire", "release", "stop"],
        "{messages:#?}"
    );
    for message in &messages {
        // <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG
        let parts: Vec<&str> = message.splitn(8, ' ').collect();
        assert_eq!(parts[0], "<30>1", "daemon.info: {message}");
        let ts = parts[1];
        assert!(
            ts.ends_with('Z') && ts.len() == "2026-11-27T05:04:50.602120Z".len(),
            "{ts}"
        );
        assert!(!parts[2].is_empty());
        assert_eq!(parts[3], "aimlock");
        assert_eq!(parts[4], tracer_pid.to_string());
        assert_eq!(parts[6], "-");
        let line: Value = serde_json::from_str(parts[7]).expect("the message is the JSON line");
        assert_eq!(line["event"], parts[5]);
    }
}

#[test]
fn capabilities_are_dropped_once_attached() {
    let dir = TempDir::new("caps");
    let log = dir.path().join("trace.log");
    let tracer = ServiceTracer::start(&["--output", log.to_str().unwrap(), "--pid", "1"], &log);
    let status = std::fs::read_to_string(format!("/proc/{}/status", tracer.pid())).unwrap();
    let set = |name: &str| {
        let line = status
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {status}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    // CAP_DAC_READ_SEARCH (2), CAP_SYS_PTRACE (19), CAP_BPF (39).
    let kept = (1u64 << 2) | (1 << 19) | (1 << 39);
    assert_eq!(set("CapEff:"), kept, "{status}");
    assert_eq!(set("CapPrm:"), kept, "{status}");
    assert_eq!(set("CapBnd:"), kept, "{status}");
    assert_eq!(set("CapInh:"), 0, "{status}");
    assert_eq!(set("CapAmb:"), 0, "{status}");
    tracer.stop();
}

/// `aimlock ARGS`: exit code and stderr.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(aimlock_bin())
        .args(args)
        .output()
        .expect("run aimlock");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A refusal at start: exit 1 and one line.
fn assert_one_line_error(args: &[&str], expected: &str) {
    let (code, stderr) = run(args);
    assert_eq!(code, Some(1), "{args:?}: {stderr}");
    assert!(stderr.starts_with("aimlock: "), "{args:?}: {stderr}");
    assert!(stderr.contains(expected), "{args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
}

/// A bad value on the command line: exit 2 and the reason on the first line (clap's usage
/// hint follows).
fn assert_usage_error(args: &[&str], expected: &str) {
    let (code, stderr) = run(args);
    assert_eq!(code, Some(2), "{args:?}: {stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.contains(expected), "{args:?}: {stderr}");
}

#[test]
fn bad_outputs_are_refused_with_one_line() {
    require_root();
    let dir = TempDir::new("refused");
    let target = dir.file("target");
    std::fs::write(&target, b"kept\n").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert_one_line_error(
        &[
            "trace",
            "--output",
            link.to_str().unwrap(),
            "--rotate-size",
            "1M",
        ],
        "symbolic link",
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"kept\n",
        "the link's target is untouched"
    );

    let foreign = dir.file("foreign");
    nix::unistd::chown(&foreign, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    assert_one_line_error(
        &["trace", "--output", foreign.to_str().unwrap()],
        "belongs to uid 65534",
    );

    assert_one_line_error(&["trace", "--rotate-size", "1M"], "need --output FILE");
    assert_one_line_error(
        &["trace", "--output", "-", "--compress"],
        "need --output FILE",
    );
    assert_usage_error(&["trace", "--rotate-size", "lots"], "not a size");
    assert_usage_error(&["trace", "--otlp", "https://collector:4318"], "plain http");
    assert_usage_error(&["trace", "--otlp", "127.0.0.1:4318"], "not a URL");
    assert_usage_error(
        &[
            "trace",
            "--otlp",
            "http://127.0.0.1:4318",
            "--otlp-interval",
            "0s",
        ],
        "not a duration",
    );
    assert_usage_error(&["trace", "--keep", "0"], "--keep");
    assert_usage_error(&["trace", "--rotate-age", "soon"], "--rotate-age");
    assert_usage_error(&["trace", "--metrics", "no-such-host:x"], "not an address");
    let missing = dir.path().join("no-journal.sock");
    assert_one_line_error(
        &["trace", &format!("--journald={}", missing.display())],
        "--journald: cannot reach",
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    assert_one_line_error(
        &["trace", "--metrics", &port.to_string()],
        "--metrics: cannot listen on 127.0.0.1:",
    );
}

#[test]
fn a_full_disk_is_reported_once_and_counted() {
    let dir = TempDir::new("fulldisk");
    let file = dir.file("lock");
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&small)
        .status()
        .expect("run mount");
    assert!(mounted.success(), "cannot mount a small tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());
    let log = small.join("trace.log");
    let workload = own_lockwork(&dir, "lw-fulldisk");
    let port = free_port();
    let tracer = ServiceTracer::start(
        &[
            "--output",
            log.to_str().unwrap(),
            "--metrics",
            &port.to_string(),
            "--path",
            file.to_str().unwrap(),
            "--comm",
            "lw-fulldisk",
            "--every-event",
        ],
        &log,
    );
    // Far more than 64 KiB of lines.
    let status = Command::new(&workload)
        .args([&format!("open:{}", file.display()), "loop:2000:flock"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));
    // Every line the full disk refused is counted: the lines in the file and those the file
    // did not take make up every line written so far.
    let samples = scrape(port);
    let unwritten = samples[&format!(
        "aimlock_unwritten_lines_total{{sink=\"{}\"}}",
        log.display()
    )] as u64;
    let lines_written: f64 = samples
        .iter()
        .filter(|(series, _)| series.starts_with("aimlock_events_total"))
        .map(|(_, value)| value)
        .sum();
    let in_file = parse_lines(&std::fs::read_to_string(&log).unwrap(), &log);
    assert!(unwritten > 0, "{samples:?}");
    assert_eq!(in_file.len() as u64 + unwritten, lines_written as u64);

    // Room again: the tracer writes on, and its stop line gives the count.
    let grown = Command::new("mount")
        .args(["-o", "remount,size=16m"])
        .arg(&small)
        .status()
        .expect("run mount");
    assert!(grown.success(), "cannot grow the tmpfs");
    let stderr = tracer.stop();
    let complaint = format!("cannot write to {}: ", log.display());
    let complaints = stderr.lines().filter(|l| l.contains(&complaint)).count();
    assert_eq!(complaints, 1, "said once: {stderr}");
    let logged = parse_lines(&std::fs::read_to_string(&log).unwrap(), &log);
    let stop = logged.last().unwrap();
    assert_eq!(stop["event"], "stop");
    assert_eq!(stop["unwritten"], unwritten, "{stop}");
    assert_eq!(
        logged.len() as u64 + unwritten,
        stop["events"].as_u64().unwrap() + 2,
        "start, events and stop are each in the file or counted: {stop}"
    );
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let dir = TempDir::new("unit");
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/aimlock.service"),
    )
    .expect("packaging/aimlock.service");
    assert!(unit.contains("ExecStart=/usr/bin/aimlock trace "), "{unit}");
    // The unit as installed, with the binary under test in place of /usr/bin/aimlock.
    let copy = dir.path().join("aimlock.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/aimlock", aimlock_bin().to_str().unwrap()),
    )
    .unwrap();
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze (the systemd package; cargo xtask setup installs it)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("aimlock.service"))
        .collect();
    assert!(about_unit.is_empty(), "{stderr}");
}

#[test]
fn completions_and_man_pages_come_from_the_cli() {
    let output = Command::new(aimlock_bin())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let script = String::from_utf8(output.stdout).unwrap();
    assert!(
        script.contains("--rotate-size") && script.contains("--journald"),
        "{script}"
    );
    let dir = TempDir::new("man");
    let output = Command::new(aimlock_bin())
        .arg("man")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let page = std::fs::read_to_string(dir.path().join("aimlock-trace.1")).unwrap();
    assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
    assert!(page.contains("rotate\\-size"), "{page}");
}
