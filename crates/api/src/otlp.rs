//! OTLP/HTTP export of the process's spans: JSON encoding, `POST <endpoint>/v1/traces`, the
//! protocol an OpenTelemetry Collector (and Jaeger, Tempo, Honeycomb...) takes on port 4318.
//!
//! A task drains the span queue every [`EVERY`], or in batches of [`BATCH`] when more are
//! waiting, so recording a span never waits on the collector: when the collector is slow
//! or down, the queue fills and new spans are dropped and counted
//! (`airlock_trace_spans_dropped_total{reason="queue_full"}`); a batch the collector refuses
//! or does not answer is dropped and counted too (`reason="export_failed"`). Shutdown sends
//! what is left, once.

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use url::Url;

use airlock_telemetry::{AttrValue, Metrics, SpanData, SpanOptions};

/// How often the queue is drained when it is not full.
const EVERY: Duration = Duration::from_secs(1);
/// Spans per request to the collector.
const BATCH: usize = 512;
/// The collector's time to answer one batch.
const TIMEOUT: Duration = Duration::from_secs(10);
/// A failing collector is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Where spans go, and which.
#[derive(Debug, Clone)]
pub struct OtlpOptions {
    /// The collector's OTLP/HTTP base (`http://collector:4318`), or its full traces URL
    /// (ending in `/v1/traces`).
    pub endpoint: Url,
    /// `service.name` on every span.
    pub service_name: String,
    /// The share of new traces recorded (a caller's unsampled parent is always followed).
    pub sample_ratio: f64,
    /// Finished spans waiting for export, at most.
    pub queue: usize,
}

impl OtlpOptions {
    /// Checks the endpoint (http or https, a host, no credentials in it) and the ratio.
    pub fn new(endpoint: &str, service_name: &str, sample_ratio: f64) -> Result<Self, String> {
        let endpoint = Url::parse(endpoint).map_err(|e| format!("`{endpoint}`: {e}"))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            return Err(format!("`{endpoint}` is not an http(s) URL with a host"));
        }
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            return Err("the endpoint must not carry credentials".into());
        }
        if !(0.0..=1.0).contains(&sample_ratio) {
            return Err(format!(
                "the sample ratio {sample_ratio} is not between 0 and 1"
            ));
        }
        if service_name.is_empty() {
            return Err("the service name is empty".into());
        }
        Ok(OtlpOptions {
            endpoint,
            service_name: service_name.to_owned(),
            sample_ratio,
            queue: SpanOptions::default().queue,
        })
    }

    /// The URL batches are posted to.
    fn traces_url(&self) -> Url {
        if self.endpoint.path().ends_with("/v1/traces") {
            return self.endpoint.clone();
        }
        let mut url = self.endpoint.clone();
        let path = format!("{}/v1/traces", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url
    }

    /// How the process records spans for this exporter.
    pub fn spans(&self) -> SpanOptions {
        SpanOptions {
            queue: self.queue,
            ratio: self.sample_ratio,
        }
    }
}

/// The running export task (started by [`crate::Service::serve`] when `otlp` is set; public
/// for benchmarks that run a bare runtime).
pub struct OtlpExporter {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl OtlpExporter {
    /// Drains `metrics`' spans to the collector. The spans must be recorded
    /// ([`Metrics::record_spans`] with [`OtlpOptions::spans`]).
    pub fn start(metrics: Arc<Metrics>, options: &OtlpOptions) -> OtlpExporter {
        let stop = CancellationToken::new();
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let sender = Sender {
            metrics,
            client,
            url: options.traces_url(),
            resource: resource(&options.service_name),
            warned: None,
        };
        let task = tokio::spawn(sender.run(stop.clone()));
        OtlpExporter { stop, task }
    }

    /// Sends what is left and stops.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

struct Sender {
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    url: Url,
    resource: Value,
    warned: Option<Instant>,
}

impl Sender {
    async fn run(mut self, stop: CancellationToken) {
        loop {
            let stopping = tokio::select! {
                () = stop.cancelled() => true,
                () = tokio::time::sleep(EVERY) => false,
            };
            self.send_waiting().await;
            if stopping {
                return;
            }
        }
    }

    /// Sends every span waiting now, a batch at a time.
    async fn send_waiting(&mut self) {
        loop {
            let batch = self.metrics.spans().drain(BATCH);
            if batch.is_empty() {
                return;
            }
            let full = batch.len() == BATCH;
            self.send(&batch).await;
            if !full {
                return;
            }
        }
    }

    async fn send(&mut self, batch: &[SpanData]) {
        let n = u64::try_from(batch.len()).unwrap_or(u64::MAX);
        let body = encode(&self.resource, batch);
        let sent = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let failure = match sent {
            Ok(response) if response.status().is_success() => {
                self.metrics.spans_exported(n);
                return;
            }
            Ok(response) => format!("the collector answered {}", response.status()),
            Err(error) => format!("the collector did not answer: {}", error.without_url()),
        };
        self.metrics.spans().dropped("export_failed", n);
        if self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            self.warned = Some(Instant::now());
            // The origin only: an endpoint's path or query may carry a collector's key.
            let collector = self.url.origin().ascii_serialization();
            tracing::warn!(%collector, spans = n, "span export failed: {failure}");
        }
    }
}

fn resource(service_name: &str) -> Value {
    json!({
        "attributes": [
            attribute("service.name", &AttrValue::Str(service_name.to_owned())),
            attribute("service.version", &AttrValue::Str(env!("CARGO_PKG_VERSION").to_owned())),
            attribute("process.pid", &AttrValue::Int(i64::from(std::process::id()))),
        ]
    })
}

/// One `ExportTraceServiceRequest` in OTLP's JSON mapping: ids in hex, times and 64-bit
/// integers as decimal strings, enums as numbers. Written straight into bytes: building a
/// `Value` tree per span cost more than the rest of a webhook delivery's spans together.
fn encode(resource: &Value, batch: &[SpanData]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + batch.len() * 512);
    out.extend_from_slice(b"{\"resourceSpans\":[{\"resource\":");
    // A Value always serializes.
    let _ = serde_json::to_writer(&mut out, resource);
    out.extend_from_slice(b",\"scopeSpans\":[{\"scope\":{\"name\":\"airlock\",\"version\":");
    text(&mut out, env!("CARGO_PKG_VERSION"));
    out.extend_from_slice(b"},\"spans\":[");
    for (i, data) in batch.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        span(&mut out, data);
    }
    out.extend_from_slice(b"]}]}]}");
    out
}

fn text(out: &mut Vec<u8>, s: &str) {
    // Escapes as JSON; writing a `str` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn span(out: &mut Vec<u8>, data: &SpanData) {
    use std::io::Write as _;
    let nanos = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let _ = write!(
        out,
        "{{\"traceId\":\"{}\",\"spanId\":\"{}\",",
        data.trace_id, data.span_id
    );
    if let Some(parent) = data.parent {
        let _ = write!(out, "\"parentSpanId\":\"{parent}\",");
    }
    out.extend_from_slice(b"\"name\":");
    text(out, &data.name);
    let _ = write!(
        out,
        ",\"kind\":{},\"startTimeUnixNano\":\"{}\",\"endTimeUnixNano\":\"{}\",\"attributes\":[",
        data.kind as i32,
        nanos(data.start),
        nanos(data.end)
    );
    for (i, (key, value)) in data.attributes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"key\":");
        text(out, key);
        out.extend_from_slice(b",\"value\":");
        match value {
            AttrValue::Str(s) => {
                out.extend_from_slice(b"{\"stringValue\":");
                text(out, s);
                out.push(b'}');
            }
            AttrValue::Int(n) => {
                let _ = write!(out, "{{\"intValue\":\"{n}\"}}");
            }
            AttrValue::Bool(b) => {
                let _ = write!(out, "{{\"boolValue\":{b}}}");
            }
        }
        out.push(b'}');
    }
    out.push(b']');
    if let Some(message) = &data.error {
        // STATUS_CODE_ERROR.
        out.extend_from_slice(b",\"status\":{\"code\":2,\"message\":");
        text(out, message);
        out.push(b'}');
    }
    out.push(b'}');
}

fn attribute(key: &str, value: &AttrValue) -> Value {
    let value = match value {
        AttrValue::Str(s) => json!({ "stringValue": s }),
        AttrValue::Int(i) => json!({ "intValue": i.to_string() }),
        AttrValue::Bool(b) => json!({ "boolValue": b }),
    };
    json!({ "key": key, "value": value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_telemetry::{SpanKind, TraceContext};

    #[test]
    fn the_endpoint_is_checked_and_the_traces_path_added_once() {
        let url = |e: &str| OtlpOptions::new(e, "airlock", 1.0).map(|o| o.traces_url().to_string());
        assert_eq!(
            url("http://127.0.0.1:4318").as_deref(),
            Ok("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            url("https://otel.example/prefix/").as_deref(),
            Ok("https://otel.example/prefix/v1/traces")
        );
        assert_eq!(
            url("http://c:4318/v1/traces").as_deref(),
            Ok("http://c:4318/v1/traces")
        );
        for bad in [
            "ftp://c/",
            "not a url",
            "http://user:pw@c:4318",
            "file:///x",
        ] {
            assert!(url(bad).is_err(), "{bad}");
        }
        assert!(OtlpOptions::new("http://c", "airlock", 1.5).is_err());
        assert!(OtlpOptions::new("http://c", "", 1.0).is_err());
    }

    #[test]
    fn spans_encode_in_otlp_json() {
        let metrics = Metrics::default();
        assert!(metrics.record_spans(SpanOptions::default()));
        let root = TraceContext::new_root(true);
        let mut span = metrics.spans().start("run.step", SpanKind::Internal, &root);
        span.set("airlock.step", "post");
        span.set("airlock.attempt", 2_i64);
        span.fail("timeout");
        drop(span);
        let mut second = metrics
            .spans()
            .start("quoted \"name\"\n", SpanKind::Client, &root);
        second.set("note", "a \"quote\", a \\ and a\nnewline");
        second.set("ok", true);
        drop(second);
        let batch = metrics.spans().drain(10);
        let encoded: Value =
            serde_json::from_slice(&encode(&resource("airlock"), &batch)).expect("valid JSON");
        let span = &encoded["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], root.trace_id.as_str());
        assert_eq!(span["parentSpanId"], root.span_id.to_string());
        assert_eq!(span["kind"], 1);
        assert_eq!(span["status"]["code"], 2);
        assert_eq!(span["attributes"][1]["value"]["intValue"], "2");
        let start: u128 = span["startTimeUnixNano"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert!(start > 1_600_000_000_000_000_000);
        assert_eq!(
            encoded["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "airlock"
        );
        let second = &encoded["resourceSpans"][0]["scopeSpans"][0]["spans"][1];
        assert_eq!(second["name"], "quoted \"name\"\n");
        assert_eq!(second["kind"], 3);
        assert_eq!(
            second["attributes"][0]["value"]["stringValue"],
            "a \"quote\", a \\ and a\nnewline"
        );
        assert_eq!(second["attributes"][1]["value"]["boolValue"], true);
        assert!(second.get("status").is_none());
    }
}
