//! `--otlp URL`: every event as an OpenTelemetry log record, sent in batches by an exporter
//! thread.
//!
//! The trace loop only puts records in a bounded queue: a collector that is down or slow never
//! slows it. When the queue is full the oldest record makes room for the new one, so that a
//! collector that comes back gets the newest; what could not be delivered (pushed out of the
//! queue, or a batch still refused once its retries ran out) is counted as this sink's
//! unwritten lines.

use std::{
    collections::VecDeque,
    io,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message as _;
use tokio::sync::Notify;

use super::{Failures, text::text_line};
use crate::{
    events::EventLine,
    otlp::{Client, Endpoint, logs},
};

/// Records in one export request (the OpenTelemetry SDKs' default).
const MAX_BATCH: usize = 512;
/// A batch smaller than `MAX_BATCH` waits at most this long to be sent.
const SCHEDULE_DELAY: Duration = Duration::from_millis(1000);
/// How long a batch is retried before it is given up (and counted).
const MAX_RETRY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Queue {
    /// The lines themselves: the exporter thread makes them log records, not the trace loop.
    records: VecDeque<EventLine>,
    /// Records of the batch being sent.
    in_flight: usize,
    /// Records the collector did not take: batches given up, records it rejected.
    undelivered: u64,
    /// Past the stop's deadline: what is still queued or in flight has been counted.
    closed: bool,
    /// Send what is queued now rather than wait for a full batch.
    flush: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Notify,
}

impl Shared {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic elsewhere cannot leave the queue half-changed: recover it.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub struct OtlpSink {
    shared: Arc<Shared>,
    capacity: usize,
    /// Records this side dropped: pushed out of the full queue, or come after the stop's
    /// deadline.
    dropped: u64,
    pub(super) failures: Failures,
}

impl OtlpSink {
    /// Starts the exporter task on the current runtime.
    pub fn open(endpoint: Endpoint, capacity: usize) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
        });
        let failures = Failures::new(format!("otlp ({})", endpoint.url));
        // A thread of its own: during a burst the trace loop keeps its thread busy draining
        // the ring, and the exporter must still get its turn.
        let exporter = Arc::clone(&shared);
        let started = std::thread::Builder::new()
            .name("otlp-export".to_owned())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(export(exporter, Client::new(endpoint))),
                    Err(err) => log::error!("the OTLP exporter cannot start: {err}"),
                }
            });
        if let Err(err) = started {
            log::error!("the OTLP exporter cannot start: {err}");
        }
        Self {
            shared,
            capacity,
            dropped: 0,
            failures,
        }
    }

    pub fn write(&mut self, event: &EventLine) {
        let record = event.clone();
        let mut queue = self.shared.queue();
        if queue.closed {
            drop(queue);
            self.dropped += 1;
            self.failures.lost(
                1,
                &io::Error::other("the collector did not take the records before the stop"),
            );
            return;
        }
        let full = queue.records.len() >= self.capacity;
        if full {
            queue.records.pop_front();
        }
        queue.records.push_back(record);
        let batch_ready = queue.records.len() >= MAX_BATCH;
        drop(queue);
        if full {
            self.dropped += 1;
            self.failures.lost(
                1,
                &io::Error::other(format!(
                    "its queue of {} records is full, the oldest make room",
                    self.capacity
                )),
            );
        }
        if batch_ready {
            self.shared.wake.notify_one();
        }
    }

    /// Brings the count of unwritten records up to date with the exporter's.
    pub fn refresh(&mut self) {
        let undelivered = self.shared.queue().undelivered;
        self.failures.lines = self.dropped + undelivered;
    }

    /// Waits until the collector has taken every queued record, or `deadline`; what is left
    /// then is counted as unwritten.
    pub async fn settle(&mut self, deadline: Instant) {
        loop {
            {
                let mut queue = self.shared.queue();
                // Once closed, what was left has been counted.
                if queue.closed || (queue.records.is_empty() && queue.in_flight == 0) {
                    break;
                }
                if Instant::now() >= deadline {
                    let left = queue.records.len() + queue.in_flight;
                    queue.records.clear();
                    queue.undelivered += left as u64;
                    queue.closed = true;
                    break;
                }
                queue.flush = true;
            }
            self.shared.wake.notify_one();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.refresh();
    }
}

/// The exporter task: sends batches as they fill, or once `SCHEDULE_DELAY` has passed.
async fn export(shared: Arc<Shared>, mut client: Client) {
    let mut text = Vec::with_capacity(512);
    loop {
        let _ = tokio::time::timeout(SCHEDULE_DELAY, shared.wake.notified()).await;
        loop {
            let batch: Vec<EventLine> = {
                let mut queue = shared.queue();
                let take = queue.records.len().min(MAX_BATCH);
                let batch: Vec<EventLine> = queue.records.drain(..take).collect();
                queue.in_flight = batch.len();
                if queue.records.is_empty() {
                    queue.flush = false;
                }
                batch
            };
            if batch.is_empty() {
                break;
            }
            let sent = batch.len();
            let records = batch
                .iter()
                .map(|event| {
                    text.clear();
                    text_line(&mut text, event, false);
                    logs::record(event, &String::from_utf8_lossy(&text))
                })
                .collect();
            // Encoded once: a retry sends the same bytes again.
            let body = Bytes::from(logs::request(records).encode_to_vec());
            let lost = match client
                .send("/v1/logs", body, Instant::now() + MAX_RETRY)
                .await
            {
                Ok(answer) => rejected(&answer).min(sent as u64),
                Err(_) => sent as u64,
            };
            let mut queue = shared.queue();
            queue.in_flight = 0;
            if !queue.closed {
                queue.undelivered += lost;
            }
            if queue.records.len() < MAX_BATCH && !queue.flush {
                break;
            }
        }
    }
}

/// The records a collector said it rejected (a partial success).
fn rejected(answer: &[u8]) -> u64 {
    ExportLogsServiceResponse::decode(answer)
        .ok()
        .and_then(|response| response.partial_success)
        .map(|partial| u64::try_from(partial.rejected_log_records).unwrap_or(0))
        .unwrap_or(0)
}
