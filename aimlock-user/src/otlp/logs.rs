//! An event as an OpenTelemetry log record (the logs data model): the event type as
//! `EventName`, the readable line as body, WARN for orphans and for a stop that lost records,
//! and the event's fields as attributes, under the semantic conventions' names where they
//! have one (`process.*`, `thread.id`) and under `aimlock.*` otherwise. docs/service.md lists
//! them.

use std::{
    sync::OnceLock,
    time::{Duration, SystemTime},
};

use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
};

use super::{attribute, string};
use crate::{
    clock::Clock,
    events::{EventKind, EventLine, LineageStep, ProcRef, rfc3339},
};

pub fn record(event: &EventLine, text: &str) -> LogRecord {
    let kind = event.event.unwrap_or(EventKind::Unknown);
    let warn = matches!(kind, EventKind::Orphan | EventKind::Inherit)
        || (kind == EventKind::Stop && event.lost.is_some_and(|lost| lost > 0));
    let (severity, severity_text) = if warn {
        (SeverityNumber::Warn, "WARN")
    } else {
        (SeverityNumber::Info, "INFO")
    };
    LogRecord {
        time_unix_nano: humantime::parse_rfc3339(&event.ts)
            .map(unix_nanos)
            .unwrap_or_default(),
        observed_time_unix_nano: unix_nanos(SystemTime::now()),
        severity_number: severity as i32,
        severity_text: severity_text.to_owned(),
        body: Some(AnyValue {
            value: Some(Value::StringValue(text.to_owned())),
        }),
        attributes: attributes(event),
        event_name: kind.name().to_owned(),
        ..Default::default()
    }
}

/// One export request of `records`, from this tracer.
pub fn request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(super::resource()),
            scope_logs: vec![ScopeLogs {
                scope: Some(super::scope()),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

fn int(key: &str, value: u64) -> KeyValue {
    attribute(
        key,
        Value::IntValue(i64::try_from(value).unwrap_or(i64::MAX)),
    )
}

fn attributes(event: &EventLine) -> Vec<KeyValue> {
    let mut out = Vec::with_capacity(16);
    let opt_int = |out: &mut Vec<KeyValue>, key: &str, value: Option<u64>| {
        if let Some(value) = value {
            out.push(int(key, value));
        }
    };
    opt_int(&mut out, "process.pid", event.pid.map(u64::from));
    opt_int(&mut out, "process.vpid", event.ns_pid.map(u64::from));
    opt_int(&mut out, "thread.id", event.tid.map(u64::from));
    let opt_str = |out: &mut Vec<KeyValue>, key: &str, value: Option<&str>| {
        if let Some(value) = value {
            out.push(string(key, value));
        }
    };
    if let Some(start_time) = event.start_time {
        out.push(string("process.creation.time", &creation_time(start_time)));
    }
    opt_str(&mut out, "process.command", event.comm.as_deref());
    opt_str(&mut out, "process.linux.cgroup", event.cgroup.as_deref());

    opt_str(
        &mut out,
        "aimlock.lock.kind",
        event.kind.map(|kind| kind.name()),
    );
    opt_str(
        &mut out,
        "aimlock.lock.mode",
        event.mode.map(|mode| mode.name()),
    );
    opt_str(&mut out, "aimlock.lock.device", event.dev.as_deref());
    opt_int(&mut out, "aimlock.lock.inode", event.ino);
    opt_int(
        &mut out,
        "aimlock.lock.generation",
        event.generation.map(u64::from),
    );
    opt_str(&mut out, "aimlock.lock.path", event.path.as_deref());
    if let Some(deleted) = event.deleted {
        out.push(attribute("aimlock.lock.deleted", Value::BoolValue(deleted)));
    }
    opt_str(
        &mut out,
        "aimlock.lock.path_unknown",
        event.path_unknown.as_deref(),
    );
    opt_str(&mut out, "aimlock.lock.name", event.name.as_deref());
    opt_int(&mut out, "aimlock.lock.start", event.start);
    // Absent with a start: the range runs to the end of the file.
    opt_int(&mut out, "aimlock.lock.end", event.end.flatten());
    opt_int(&mut out, "aimlock.lock.wait_ns", event.wait_ns);
    opt_int(&mut out, "aimlock.lock.held_ns", event.held_ns);
    opt_int(&mut out, "aimlock.lock.holds", event.holds);
    opt_int(&mut out, "aimlock.lock.longest_ns", event.longest_ns);
    opt_str(
        &mut out,
        "aimlock.lock.reason",
        event.reason.map(|reason| reason.name()),
    );
    opt_str(&mut out, "aimlock.lock.errno", event.errno.as_deref());
    if let Some(orphan) = event.orphan {
        out.push(attribute("aimlock.lock.orphan", Value::BoolValue(orphan)));
    }
    opt_int(&mut out, "aimlock.lock.orphan_ns", event.orphan_ns);
    opt_str(
        &mut out,
        "aimlock.lock.taker_exit",
        event.taker_exit.as_deref(),
    );
    if let Some(holders) = &event.holders {
        out.push(array("aimlock.lock.holder.pids", holders, |holder| {
            Value::IntValue(i64::from(holder.pid))
        }));
        out.push(array("aimlock.lock.holder.commands", holders, |holder| {
            Value::StringValue(holder.comm.clone())
        }));
    }
    if let Some(by) = &event.by {
        out.push(int("aimlock.lock.by.pid", u64::from(by.pid)));
        out.push(string("aimlock.lock.by.command", &by.comm));
    }
    if let Some(lineage) = &event.lineage {
        let values = |value: &dyn Fn(&LineageStep) -> Value| {
            let values = lineage
                .iter()
                .map(|step| AnyValue {
                    value: Some(value(step)),
                })
                .collect();
            Value::ArrayValue(ArrayValue { values })
        };
        out.push(attribute(
            "aimlock.lineage.pids",
            values(&|step| Value::IntValue(i64::from(step.pid))),
        ));
        out.push(attribute(
            "aimlock.lineage.commands",
            values(&|step| Value::StringValue(step.comm.clone())),
        ));
        out.push(attribute(
            "aimlock.lineage.via",
            values(&|step| Value::StringValue(step.via.name().to_owned())),
        ));
        out.push(attribute(
            "aimlock.lineage.from",
            values(&|step| Value::IntValue(step.from.map_or(0, i64::from))),
        ));
        out.push(attribute(
            "aimlock.lineage.why",
            values(&|step| Value::StringValue(step.why.map_or("", |why| why.name()).to_owned())),
        ));
    }
    if let Some(from) = &event.from {
        out.push(int("aimlock.inherit.from.pid", u64::from(from.pid)));
        out.push(string("aimlock.inherit.from.command", &from.comm));
    }
    opt_str(
        &mut out,
        "aimlock.inherit.via",
        event.via.map(|via| via.name()),
    );
    opt_int(&mut out, "aimlock.exit.locks", event.locks);

    opt_int(&mut out, "aimlock.schema", event.schema.map(u64::from));
    opt_int(&mut out, "aimlock.lost", event.lost);
    opt_int(&mut out, "aimlock.unwritten", event.unwritten);
    opt_int(&mut out, "aimlock.records", event.records);
    opt_int(&mut out, "aimlock.events", event.events);
    opt_int(&mut out, "aimlock.table_reads", event.table_reads);
    opt_int(
        &mut out,
        "aimlock.untraced_children",
        event.untraced_children,
    );
    out
}

/// A start time (nanoseconds since this machine booted) as the semantic conventions' ISO 8601
/// wall-clock time. The boot's wall-clock time is measured once: the events come from this
/// machine, and a later step of the wall clock does not move when processes started.
fn creation_time(start_time: u64) -> String {
    static BOOT: OnceLock<u64> = OnceLock::new();
    let boot = *BOOT.get_or_init(Clock::boot_unix_ns);
    rfc3339(SystemTime::UNIX_EPOCH + Duration::from_nanos(boot.saturating_add(start_time)))
}

fn array(key: &str, procs: &[ProcRef], value: impl Fn(&ProcRef) -> Value) -> KeyValue {
    let values = procs
        .iter()
        .map(|proc| AnyValue {
            value: Some(value(proc)),
        })
        .collect();
    attribute(key, Value::ArrayValue(ArrayValue { values }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{LockKind, Mode};

    fn find<'a>(record: &'a LogRecord, key: &str) -> Option<&'a Value> {
        record
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn an_orphan_is_a_warning_with_its_lock_and_holders() {
        let orphan = EventLine {
            event: Some(EventKind::Orphan),
            ts: "2026-11-27T05:04:50.000000001Z".to_owned(),
            pid: Some(812),
            start_time: Some(1_500_000_000),
            comm: Some("flock".to_owned()),
            kind: Some(LockKind::Flock),
            mode: Some(Mode::Write),
            dev: Some("254:0".to_owned()),
            ino: Some(77),
            path: Some("/var/lock/job.lock".to_owned()),
            start: Some(0),
            end: Some(None),
            holders: Some(vec![ProcRef {
                pid: 840,
                start_time: None,
                comm: "sleep".to_owned(),
                ns_pid: None,
                fd: Some(3),
                cgroup: None,
            }]),
            ..Default::default()
        };
        let record = record(&orphan, "the line");
        assert_eq!(record.severity_number, SeverityNumber::Warn as i32);
        assert_eq!(record.severity_text, "WARN");
        assert_eq!(record.event_name, "orphan");
        assert_eq!(record.time_unix_nano, 1_795_755_890_000_000_001);
        assert_eq!(
            record.body.as_ref().unwrap().value,
            Some(Value::StringValue("the line".to_owned()))
        );
        assert_eq!(find(&record, "process.pid"), Some(&Value::IntValue(812)));
        // 1.5 s after this machine booted, as a wall-clock time.
        let Some(Value::StringValue(created)) = find(&record, "process.creation.time") else {
            panic!("no process.creation.time")
        };
        let created = humantime::parse_rfc3339(created).unwrap();
        let expected =
            SystemTime::UNIX_EPOCH + Duration::from_nanos(Clock::boot_unix_ns() + 1_500_000_000);
        let apart = created
            .duration_since(expected)
            .unwrap_or_else(|err| err.duration());
        assert!(apart < Duration::from_millis(100), "{apart:?}");
        assert_eq!(
            find(&record, "process.command"),
            Some(&Value::StringValue("flock".to_owned()))
        );
        assert_eq!(
            find(&record, "aimlock.lock.path"),
            Some(&Value::StringValue("/var/lock/job.lock".to_owned()))
        );
        assert_eq!(
            find(&record, "aimlock.lock.inode"),
            Some(&Value::IntValue(77))
        );
        assert_eq!(
            find(&record, "aimlock.lock.start"),
            Some(&Value::IntValue(0))
        );
        assert_eq!(find(&record, "aimlock.lock.end"), None, "to end of file");
        let Some(Value::ArrayValue(pids)) = find(&record, "aimlock.lock.holder.pids") else {
            panic!("no holder pids")
        };
        assert_eq!(pids.values[0].value, Some(Value::IntValue(840)));
    }

    #[test]
    fn an_orphans_lineage_is_one_array_per_step_field() {
        let orphan = EventLine {
            event: Some(EventKind::Orphan),
            lineage: crate::events::every_field().lineage,
            ..Default::default()
        };
        let record = record(&orphan, "");
        let Some(Value::ArrayValue(via)) = find(&record, "aimlock.lineage.via") else {
            panic!("no lineage")
        };
        let via: Vec<_> = via.values.iter().map(|v| v.value.clone()).collect();
        assert_eq!(
            via,
            [
                Some(Value::StringValue("fork".to_owned())),
                Some(Value::StringValue("unknown".to_owned()))
            ]
        );
        let Some(Value::ArrayValue(why)) = find(&record, "aimlock.lineage.why") else {
            panic!("no why")
        };
        assert_eq!(
            why.values[1].value,
            Some(Value::StringValue("before_start".to_owned()))
        );
    }

    #[test]
    fn a_stop_is_a_warning_only_when_records_were_lost() {
        let stop = |lost| EventLine {
            event: Some(EventKind::Stop),
            lost: Some(lost),
            ..Default::default()
        };
        assert_eq!(
            record(&stop(0), "").severity_number,
            SeverityNumber::Info as i32
        );
        let lossy = record(&stop(3), "");
        assert_eq!(lossy.severity_number, SeverityNumber::Warn as i32);
        assert_eq!(find(&lossy, "aimlock.lost"), Some(&Value::IntValue(3)));
    }
}
