//! A stand-in OpenTelemetry collector: an OTLP/HTTP receiver on loopback that decodes what
//! `aimlock trace --otlp` sends with the official protobuf definitions, and can refuse (503)
//! for a while, as a collector that is down or restarting does.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::{logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest},
    common::v1::{KeyValue, any_value::Value},
    logs::v1::LogRecord,
    resource::v1::Resource,
};
use prost::Message as _;

#[derive(Default)]
struct State {
    logs: Mutex<Vec<(Resource, LogRecord)>>,
    metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
    refuse_until: Mutex<Option<Instant>>,
    refused: AtomicU64,
    /// The next answer is held back by this long.
    hold_next: Mutex<Option<Duration>>,
    /// An answer is being held back.
    holding: AtomicBool,
    stop: AtomicBool,
}

pub struct Collector {
    /// The base URL to give `--otlp`.
    pub url: String,
    state: Arc<State>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Collector {
    pub fn start() -> Self {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("listen on loopback");
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let state = Arc::new(State::default());
        let served = Arc::clone(&state);
        let thread = thread::spawn(move || {
            while !served.stop.load(Ordering::Relaxed) {
                if let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(50)) {
                    answer(&served, request);
                }
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            state,
            thread: Some(thread),
        }
    }

    /// Answers 503 Service Unavailable to every request for `span` from now.
    pub fn refuse_for(&self, span: Duration) {
        *self.state.refuse_until.lock().unwrap() = Some(Instant::now() + span);
    }

    /// Holds the answer to the next request back by `delay`, as a collector that stalls does
    /// (it answers one request at a time: every other waits too).
    pub fn hold_next(&self, delay: Duration) {
        *self.state.hold_next.lock().unwrap() = Some(delay);
    }

    /// Whether an answer is being held back now.
    pub fn holding(&self) -> bool {
        self.state.holding.load(Ordering::Relaxed)
    }

    /// Requests answered 503 so far.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::Relaxed)
    }

    /// Every log record received, with the resource it came with.
    pub fn logs(&self) -> Vec<(Resource, LogRecord)> {
        self.state.logs.lock().unwrap().clone()
    }

    pub fn metrics(&self) -> Vec<ExportMetricsServiceRequest> {
        self.state.metrics.lock().unwrap().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(state: &State, mut request: tiny_http::Request) {
    let hold = state.hold_next.lock().unwrap().take();
    if let Some(delay) = hold {
        state.holding.store(true, Ordering::Relaxed);
        thread::sleep(delay);
        state.holding.store(false, Ordering::Relaxed);
    }
    let mut body = Vec::new();
    let read = request.as_reader().read_to_end(&mut body);
    let refusing = state
        .refuse_until
        .lock()
        .unwrap()
        .is_some_and(|until| Instant::now() < until);
    let ok = read.is_ok()
        && request.method() == &tiny_http::Method::Post
        && request
            .headers()
            .iter()
            .any(|h| h.field.equiv("Content-Type") && h.value == "application/x-protobuf");
    let status = if refusing {
        state.refused.fetch_add(1, Ordering::Relaxed);
        503
    } else if !ok {
        400
    } else {
        match request.url() {
            "/v1/logs" => match ExportLogsServiceRequest::decode(&body[..]) {
                Ok(export) => {
                    let mut logs = state.logs.lock().unwrap();
                    for resource_logs in export.resource_logs {
                        let resource = resource_logs.resource.unwrap_or_default();
                        for scope in resource_logs.scope_logs {
                            for record in scope.log_records {
                                logs.push((resource.clone(), record));
                            }
                        }
                    }
                    200
                }
                Err(_) => 400,
            },
            "/v1/metrics" => match ExportMetricsServiceRequest::decode(&body[..]) {
                Ok(export) => {
                    state.metrics.lock().unwrap().push(export);
                    200
                }
                Err(_) => 400,
            },
            _ => 404,
        }
    };
    let _ = request.respond(tiny_http::Response::empty(status));
}

/// The value of attribute `key`, if it is there.
pub fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

/// A string attribute, or "" when absent or not a string.
pub fn str_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> &'a str {
    match attribute(attributes, key) {
        Some(Value::StringValue(text)) => text,
        _ => "",
    }
}

/// An integer attribute.
pub fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key) {
        Some(Value::IntValue(value)) => Some(*value),
        _ => None,
    }
}
