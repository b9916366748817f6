//! `aimlock trace --otlp`: events as OpenTelemetry log records and the metrics, received by a
//! collector on loopback that decodes the protobuf with the official definitions; a collector
//! that refuses for a while loses nothing that fits the queue, and what does not is counted.

use std::time::Duration;

use aimlock_tests::{
    TempDir, TraceToFile, Workload, eventually, inode,
    otlp_collector::{Collector, attribute, int_attribute, str_attribute},
};
use opentelemetry_proto::tonic::{
    common::v1::any_value::Value as Any,
    logs::v1::{LogRecord, SeverityNumber},
    metrics::v1::metric::Data,
};

/// The records received about one inode, in the order they came.
fn on_inode(collector: &Collector, ino: u64) -> Vec<LogRecord> {
    collector
        .logs()
        .into_iter()
        .map(|(_, record)| record)
        .filter(|record| {
            int_attribute(&record.attributes, "aimlock.lock.inode") == Some(ino as i64)
        })
        .collect()
}

#[test]
fn an_orphan_arrives_with_its_attributes_resource_and_severity() {
    let dir = TempDir::new("otlp-orphan");
    let file = dir.file("orphaned");
    let log = dir.file("trace.log");
    let collector = Collector::start();
    let tracer = TraceToFile::start(
        &log,
        &[
            "--otlp",
            &collector.url,
            "--otlp-interval",
            "200ms",
            "--path",
            file.to_str().unwrap(),
        ],
    );
    let ino = inode(&file);
    // The taker exits while a forked child keeps the lock for 4 s: long enough to be judged an
    // orphan on a loaded machine.
    let before_taker = std::time::SystemTime::now();
    let taker = Workload::start(&[
        &format!("open:{}", file.display()),
        "flock:ex",
        "hold-in-child:4",
    ]);
    let taker_pid = taker.pid();
    let child = taker.holder_pid();
    taker.finish();

    let orphan = eventually("the orphan record", Duration::from_secs(15), || {
        collector.logs().into_iter().find(|(_, record)| {
            record.event_name == "orphan"
                && int_attribute(&record.attributes, "aimlock.lock.inode") == Some(ino as i64)
        })
    });
    let (resource, record) = orphan;
    assert_eq!(record.severity_number, SeverityNumber::Warn as i32);
    assert_eq!(record.severity_text, "WARN");
    let attributes = &record.attributes;
    assert_eq!(
        int_attribute(attributes, "process.pid"),
        Some(i64::from(taker_pid)),
        "the taker: {record:?}"
    );
    assert_eq!(str_attribute(attributes, "process.command"), "lockwork");
    // When the taker started, as a wall-clock time: after this test started it, give or take
    // the 10 ms clock tick it is counted in.
    let created = humantime::parse_rfc3339(str_attribute(attributes, "process.creation.time"))
        .unwrap_or_else(|err| panic!("process.creation.time: {err}: {record:?}"));
    let tick = Duration::from_millis(20);
    assert!(
        created + tick >= before_taker && created <= std::time::SystemTime::now(),
        "{created:?} is not when the taker started ({before_taker:?})"
    );
    assert_eq!(str_attribute(attributes, "aimlock.lock.kind"), "flock");
    assert_eq!(str_attribute(attributes, "aimlock.lock.mode"), "write");
    assert_eq!(
        str_attribute(attributes, "aimlock.lock.path"),
        file.to_str().unwrap()
    );
    let stat = std::fs::metadata(&file).unwrap();
    let dev = {
        use std::os::unix::fs::MetadataExt as _;
        stat.dev()
    };
    assert_eq!(
        str_attribute(attributes, "aimlock.lock.device"),
        format!("{}:{}", libc::major(dev), libc::minor(dev))
    );
    assert_eq!(int_attribute(attributes, "aimlock.lock.start"), Some(0));
    assert_eq!(attribute(attributes, "aimlock.lock.end"), None, "to EOF");
    let Some(Any::ArrayValue(holders)) = attribute(attributes, "aimlock.lock.holder.pids") else {
        panic!("no holders in {record:?}")
    };
    assert_eq!(
        holders.values[0].value,
        Some(Any::IntValue(i64::from(child)))
    );
    assert!(
        !str_attribute(attributes, "aimlock.lock.taker_exit").is_empty(),
        "{record:?}"
    );
    let Some(Any::StringValue(body)) = record.body.as_ref().and_then(|body| body.value.clone())
    else {
        panic!("no body in {record:?}")
    };
    assert!(
        body.contains("orphan") && body.contains(&format!("pid={taker_pid}")),
        "{body}"
    );

    let host = nix::sys::utsname::uname().unwrap();
    let resource = &resource.attributes;
    assert_eq!(str_attribute(resource, "service.name"), "aimlock");
    assert_eq!(
        str_attribute(resource, "service.version"),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        str_attribute(resource, "host.name"),
        host.nodename().to_str().unwrap()
    );

    // The metrics come too: the orphan gauge, then its end.
    let gauge = |value: i64| {
        collector.metrics().iter().any(|request| {
            request.resource_metrics[0].scope_metrics[0]
                .metrics
                .iter()
                .any(|metric| {
                    metric.name == "aimlock_orphans_held"
                        && matches!(&metric.data, Some(Data::Gauge(gauge))
                            if gauge.data_points[0].value
                                == Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(value)))
                })
        })
    };
    eventually(
        "aimlock_orphans_held 1 over OTLP",
        Duration::from_secs(10),
        || gauge(1).then_some(()),
    );
    eventually("the orphan's end", Duration::from_secs(15), || {
        on_inode(&collector, ino)
            .iter()
            .any(|record| record.event_name == "orphan_end")
            .then_some(())
    });
    tracer.stop();

    // Every line of the log came as a record, and INFO unless it is the orphan or the child's
    // inheritance of the lock that made it.
    let lines = std::fs::read_to_string(&log).unwrap();
    let received = collector.logs();
    assert_eq!(received.len(), lines.lines().count(), "{received:#?}");
    for (_, record) in &received {
        let warn = matches!(record.event_name.as_str(), "orphan" | "inherit");
        assert_eq!(
            record.severity_number,
            if warn {
                SeverityNumber::Warn
            } else {
                SeverityNumber::Info
            } as i32,
            "{record:?}"
        );
    }
    let stop = &received.last().unwrap().1;
    assert_eq!(stop.event_name, "stop");
    assert_eq!(
        int_attribute(&stop.attributes, "aimlock.unwritten"),
        Some(0)
    );
}

/// Runs `pairs` flock/unlock pairs while the collector refuses for 2 s, with a queue of
/// `queue` records; returns (records received, the stop line's unwritten, lines in the log).
fn refused_for_two_seconds(name: &str, pairs: u32, queue: u32) -> (Vec<LogRecord>, u64, u64) {
    let dir = TempDir::new(name);
    let file = dir.file("busy");
    let log = dir.file("trace.log");
    let collector = Collector::start();
    let tracer = TraceToFile::start(
        &log,
        &[
            "--otlp",
            &collector.url,
            "--otlp-queue",
            &queue.to_string(),
            "--path",
            file.to_str().unwrap(),
            "--every-event",
        ],
    );
    let ino = inode(&file);
    collector.refuse_for(Duration::from_secs(2));
    Workload::start(&[
        &format!("open:{}", file.display()),
        &format!("loop:{pairs}:flock"),
    ])
    .finish();
    eventually("the workload in the log", Duration::from_secs(10), || {
        (aimlock_tests::on_inode(&tracer.lines(), ino).len() == 2 * pairs as usize).then_some(())
    });
    // Past the refusal, the queue empties into the collector.
    std::thread::sleep(Duration::from_secs(3));
    assert!(collector.refused() > 0, "the collector never refused");
    tracer.stop();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let stop = lines.last().unwrap();
    assert_eq!(stop["event"], "stop");
    let unwritten = stop["unwritten"].as_u64().unwrap();
    let received: Vec<LogRecord> = collector.logs().into_iter().map(|(_, r)| r).collect();
    assert_eq!(
        received.last().map(|record| record.event_name.as_str()),
        Some("stop"),
        "the stop record arrives last"
    );
    (received, unwritten, lines.len() as u64)
}

#[test]
fn a_collector_that_refuses_for_two_seconds_loses_nothing_that_fits_the_queue() {
    let (received, unwritten, lines) = refused_for_two_seconds("otlp-refused", 300, 4096);
    assert_eq!(unwritten, 0);
    assert_eq!(received.len() as u64, lines, "every line arrived");
    let acquires = received
        .iter()
        .filter(|record| record.event_name == "acquire")
        .count();
    assert_eq!(acquires, 300);
}

#[test]
fn what_does_not_fit_the_queue_is_counted_and_the_newest_arrive() {
    let (received, unwritten, lines) = refused_for_two_seconds("otlp-overflow", 300, 100);
    assert!(unwritten > 0, "nothing was counted");
    assert_eq!(
        received.len() as u64 + unwritten,
        lines,
        "each line either arrived or was counted"
    );
    // The oldest made room: the workload's last release is among what arrived.
    let releases: Vec<&LogRecord> = received
        .iter()
        .filter(|record| record.event_name == "release")
        .collect();
    assert!(!releases.is_empty());
    let last_release_ts = releases.iter().map(|r| r.time_unix_nano).max().unwrap();
    let before_stop = received
        .iter()
        .filter(|record| record.event_name != "stop")
        .map(|r| r.time_unix_nano)
        .max()
        .unwrap();
    assert_eq!(last_release_ts, before_stop, "the newest records arrived");
}

#[test]
fn a_slow_collector_does_not_slow_the_tracer() {
    let dir = TempDir::new("otlp-slow");
    let file = dir.file("busy");
    let log = dir.file("trace.log");
    let collector = Collector::start();
    let tracer = TraceToFile::start(
        &log,
        &[
            "--otlp",
            &collector.url,
            "--path",
            file.to_str().unwrap(),
            "--every-event",
        ],
    );
    let ino = inode(&file);
    let open = format!("open:{}", file.display());
    // The collector stalls on its next request (the export of one lock pair, or metrics) for
    // 8 s (within the tracer's 10 s request timeout), and every request after it waits too.
    collector.hold_next(Duration::from_secs(8));
    Workload::start(&[&open, "loop:1:flock"]).finish();
    eventually("a request held back", Duration::from_secs(10), || {
        collector.holding().then_some(())
    });
    // While it stalls, a workload is logged: a log that waited for the collector would wait
    // until the answer.
    let started = std::time::Instant::now();
    Workload::start(&[&open, "loop:500:flock"]).finish();
    eventually("the workload in the log", Duration::from_secs(20), || {
        (aimlock_tests::on_inode(&tracer.lines(), ino).len() == 1002).then_some(())
    });
    let logged_after = started.elapsed();
    assert!(
        collector.holding(),
        "the log took {logged_after:?}: the collector had answered by then"
    );
    // Once the collector keeps up again, everything arrives.
    eventually(
        "every record at the collector",
        Duration::from_secs(40),
        || (on_inode(&collector, ino).len() == 1002).then_some(()),
    );
    tracer.stop();
    let stop = collector.logs().last().unwrap().1.clone();
    assert_eq!(stop.event_name, "stop");
    assert_eq!(
        int_attribute(&stop.attributes, "aimlock.unwritten"),
        Some(0)
    );
    assert_eq!(int_attribute(&stop.attributes, "aimlock.lost"), Some(0));
}
