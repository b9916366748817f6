//! The metric families `/metrics` serves, exported over OTLP (`POST URL/v1/metrics`) at a
//! fixed interval: counters as cumulative monotonic sums, gauges as gauges, histograms as
//! cumulative explicit-bucket histograms with the same bounds, under the same names and labels.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    metrics::v1::{
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
    },
};
use prost::Message as _;

use super::{Client, Endpoint, string};
use crate::metrics::{BUCKETS, Family, FamilyType, Published, Value, snapshot};

/// Exports the published counts every `interval` from a task on the current runtime. A failed
/// export is retried until the next one is due; the counts are cumulative, so the next one
/// carries what it would have.
pub fn spawn(endpoint: Endpoint, published: Published, interval: Duration) {
    let started = unix_nanos(SystemTime::now());
    tokio::spawn(async move {
        let mut client = Client::new(endpoint);
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let families = snapshot(&published).await;
            let body = Bytes::from(request(&families, started).encode_to_vec());
            let _ = client
                .send("/v1/metrics", body, Instant::now() + interval)
                .await;
        }
    });
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// One export request of every family, counted since `started` (Unix nanoseconds).
pub fn request(families: &[Family], started: u64) -> ExportMetricsServiceRequest {
    let now = unix_nanos(SystemTime::now());
    let metrics = families
        .iter()
        .map(|family| metric(family, started, now))
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(super::resource()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(super::scope()),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metric(family: &Family, started: u64, now: u64) -> Metric {
    let cumulative = AggregationTemporality::Cumulative as i32;
    let labels = |sample: &crate::metrics::Sample| {
        sample
            .labels
            .iter()
            .map(|(key, value)| string(key, value))
            .collect::<Vec<_>>()
    };
    let numbers = || {
        family
            .samples
            .iter()
            .filter_map(|sample| match sample.value {
                Value::Number(value) => Some(NumberDataPoint {
                    attributes: labels(sample),
                    start_time_unix_nano: started,
                    time_unix_nano: now,
                    value: Some(number_data_point::Value::AsInt(
                        i64::try_from(value).unwrap_or(i64::MAX),
                    )),
                    ..Default::default()
                }),
                Value::Histogram(_) => None,
            })
            .collect()
    };
    let data = match family.family_type {
        FamilyType::Counter => Data::Sum(Sum {
            data_points: numbers(),
            aggregation_temporality: cumulative,
            is_monotonic: true,
        }),
        FamilyType::Gauge => Data::Gauge(Gauge {
            data_points: numbers(),
        }),
        FamilyType::Histogram => Data::Histogram(Histogram {
            data_points: family
                .samples
                .iter()
                .filter_map(|sample| match &sample.value {
                    Value::Histogram(histogram) => Some(HistogramDataPoint {
                        attributes: labels(sample),
                        start_time_unix_nano: started,
                        time_unix_nano: now,
                        count: histogram.count(),
                        sum: Some(histogram.sum_ns as f64 / 1e9),
                        bucket_counts: histogram.buckets.to_vec(),
                        explicit_bounds: BUCKETS.iter().map(|(_, _, seconds)| *seconds).collect(),
                        ..Default::default()
                    }),
                    Value::Number(_) => None,
                })
                .collect(),
            aggregation_temporality: cumulative,
        }),
    };
    Metric {
        name: family.name.to_owned(),
        description: family.help.to_owned(),
        unit: family.unit.to_owned(),
        data: Some(data),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        events::{EventKind, EventLine, LockKind},
        metrics::Recorder,
    };

    #[test]
    fn every_family_is_exported_with_its_type() {
        let mut recorder = Recorder::new();
        recorder.observe(&EventLine {
            event: Some(EventKind::Acquire),
            kind: Some(LockKind::Posix),
            wait_ns: Some(5_000_000),
            ..Default::default()
        });
        recorder.publish(std::iter::empty());
        let counts = recorder.published().lock().unwrap().clone();
        let families = counts.families(&[1, 2, 3, 4]);
        let request = request(&families, 1);
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(metrics.len(), families.len());
        let waits = metrics
            .iter()
            .find(|metric| metric.name == "aimlock_lock_wait_seconds")
            .unwrap();
        assert_eq!(waits.unit, "s");
        let Some(Data::Histogram(histogram)) = &waits.data else {
            panic!("not a histogram")
        };
        let posix = histogram
            .data_points
            .iter()
            .find(|point| {
                point.attributes[0].value.as_ref().unwrap().value
                    == Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                            "posix".to_owned(),
                        ),
                    )
            })
            .unwrap();
        assert_eq!(posix.count, 1);
        assert_eq!(posix.bucket_counts.len(), posix.explicit_bounds.len() + 1);
        assert_eq!(posix.bucket_counts[2], 1, "5 ms falls in the 10 ms bucket");
        let events = metrics
            .iter()
            .find(|metric| metric.name == "aimlock_events_total")
            .unwrap();
        assert!(matches!(&events.data, Some(Data::Sum(sum)) if sum.is_monotonic));
        let orphans = metrics
            .iter()
            .find(|metric| metric.name == "aimlock_orphans_held")
            .unwrap();
        assert!(matches!(&orphans.data, Some(Data::Gauge(_))));
    }
}
