//! `aimlock trace --otlp URL`: OpenTelemetry logs and metrics over OTLP/HTTP with protobuf
//! bodies (`POST URL/v1/logs`, `POST URL/v1/metrics`).
//!
//! This module holds what both signals share: the endpoint, the resource that names this
//! tracer, and the HTTP client with its retries. The queue of log records is the OTLP sink
//! (`sinks/otlp.rs`); `logs` maps an event to a log record, `metrics` the metric families to
//! OTLP metrics.

pub mod logs;
pub mod metrics;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{
    Request, StatusCode, Uri,
    client::conn::http1::{self, SendRequest},
    header,
};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    resource::v1::Resource,
};

/// One request that has not been answered by then has failed (and is retried).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The first wait before a retry; it doubles at each failure, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A collector's `Retry-After` is followed up to this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Where the collector listens: `http://HOST:PORT[/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// As given, for messages and the metrics' `sink` label.
    pub url: String,
    host: String,
    port: u16,
    /// The path before `/v1/logs`, without its last `/`.
    prefix: String,
}

impl Endpoint {
    /// `http://HOST[:PORT][/PREFIX]`, the base URL OTLP/HTTP exporters take (4318 is the
    /// collector's usual port). Plain HTTP only: a local collector carries it further.
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: Uri = text
            .parse()
            .map_err(|_| format!("{text:?} is not a URL such as http://127.0.0.1:4318"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "{text:?}: aimlock sends OTLP over plain http only; point it at a local \
                     collector, which can forward over TLS"
                ));
            }
            _ => {
                return Err(format!(
                    "{text:?} is not a URL such as http://127.0.0.1:4318"
                ));
            }
        }
        let host = uri
            .host()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| format!("{text:?} names no host"))?;
        if uri.query().is_some() {
            return Err(format!(
                "{text:?}: a query has no place in an OTLP base URL"
            ));
        }
        Ok(Self {
            url: text.to_owned(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: uri.port_u16().unwrap_or(80),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The resource every record and metric carries: this tracer on this host.
pub fn resource() -> Resource {
    let uname = nix::sys::utsname::uname().ok();
    let mut attributes = vec![
        string("service.name", "aimlock"),
        string("service.version", env!("CARGO_PKG_VERSION")),
        string("os.type", "linux"),
    ];
    // The same name as every line's `host`.
    attributes.push(string("host.name", crate::events::this_host()));
    if let Some(uname) = uname {
        attributes.push(string("os.version", &uname.release().to_string_lossy()));
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

pub fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "aimlock".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    }
}

pub fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub fn string(key: &str, value: &str) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.to_owned()))
}

/// Why one attempt failed, and whether trying again may help.
struct Failed {
    why: String,
    retry: bool,
    retry_after: Option<Duration>,
}

/// An HTTP/1.1 client of one collector, keeping its connection between requests.
pub struct Client {
    endpoint: Endpoint,
    connection: Option<SendRequest<Full<Bytes>>>,
    /// The first failure is said on stderr, once.
    said_failure: bool,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            connection: None,
            said_failure: false,
        }
    }

    /// POSTs `body` (an encoded export request) to `path`, retrying with exponential backoff
    /// while the collector is unreachable or asks to retry (429, 502, 503, 504), until
    /// `give_up_at`. Returns the collector's answer, or why it was not delivered.
    pub async fn send(
        &mut self,
        path: &str,
        body: Bytes,
        give_up_at: Instant,
    ) -> Result<Bytes, String> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let failed =
                match tokio::time::timeout(REQUEST_TIMEOUT, self.post(path, body.clone())).await {
                    Ok(Ok(answer)) => return Ok(answer),
                    Ok(Err(failed)) => failed,
                    Err(_) => Failed {
                        why: "no answer within 10 s".to_owned(),
                        retry: true,
                        retry_after: None,
                    },
                };
            if !self.said_failure {
                self.said_failure = true;
                eprintln!(
                    "aimlock: cannot send to the OTLP collector at {}: {}; retrying, counting \
                     what cannot be sent",
                    self.endpoint.url, failed.why
                );
            }
            let wait = failed.retry_after.unwrap_or(backoff);
            if !failed.retry || Instant::now() + wait >= give_up_at {
                return Err(failed.why);
            }
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn post(&mut self, path: &str, body: Bytes) -> Result<Bytes, Failed> {
        let retry = |why: String| Failed {
            why,
            retry: true,
            retry_after: None,
        };
        let connection = match self.connection.take() {
            Some(connection) if !connection.is_closed() => connection,
            _ => self.connect().await.map_err(retry)?,
        };
        let mut connection = connection;
        connection
            .ready()
            .await
            .map_err(|err| retry(err.to_string()))?;
        let request = Request::post(format!("{}{path}", self.endpoint.prefix))
            .header(header::HOST, self.endpoint.authority())
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body))
            .map_err(|err| Failed {
                why: err.to_string(),
                retry: false,
                retry_after: None,
            })?;
        let response = connection
            .send_request(request)
            .await
            .map_err(|err| retry(err.to_string()))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok()?.trim().parse().ok())
            .map(|seconds: u64| Duration::from_secs(seconds).min(MAX_RETRY_AFTER));
        let answer = response
            .into_body()
            .collect()
            .await
            .map_err(|err| retry(err.to_string()))?
            .to_bytes();
        self.connection = Some(connection);
        if status.is_success() {
            return Ok(answer);
        }
        Err(Failed {
            why: format!("{path} answered {status}"),
            retry: matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS
                    | StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            ),
            retry_after,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream =
            tokio::net::TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
                .await
                .map_err(|err| err.to_string())?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| err.to_string())?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                log::debug!("OTLP connection: {err}");
            }
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_plain_http_base_urls() {
        let endpoint = Endpoint::parse("http://127.0.0.1:4318").unwrap();
        assert_eq!(endpoint.authority(), "127.0.0.1:4318");
        assert_eq!(endpoint.prefix, "");
        let endpoint = Endpoint::parse("http://collector/otlp/").unwrap();
        assert_eq!(endpoint.authority(), "collector:80");
        assert_eq!(endpoint.prefix, "/otlp");
        let endpoint = Endpoint::parse("http://[::1]:4318").unwrap();
        assert_eq!(endpoint.authority(), "[::1]:4318");
        for bad in [
            "127.0.0.1:4318",
            "https://collector:4318",
            "ftp://x",
            "http://",
            "http://x/?a=b",
            "",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
