//! Spans of the OpenTelemetry trace model: a request, a run's enqueue, claim and steps, an
//! invocation and each of its outbound requests. Recording a span never blocks and never
//! does I/O: a finished span goes into a bounded queue that the binary's exporter drains
//! (OTLP); a full queue drops the span and counts it.
//!
//! Spans are recorded only when an exporter is configured ([`SpanOptions`]) and the trace
//! is sampled. Sampling is decided where a trace enters (a request, a cron tick) and travels
//! with it (in a run's row, in `traceparent` upstream): a caller's unsampled parent is
//! followed, and a sampled one is followed at the operator's ratio, so no caller can turn
//! recording on for more than that ratio of its requests.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::trace::{TraceId, hex, is_hex, random_bytes};

/// A span id: 16 lowercase hex digits, not all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

impl SpanId {
    pub fn random() -> SpanId {
        let mut bytes = [0u8; 8];
        random_bytes(&mut bytes);
        if bytes.iter().all(|b| *b == 0) {
            bytes[7] = 1;
        }
        SpanId(bytes)
    }

    pub fn parse(text: &str) -> Option<SpanId> {
        if text.len() != 16 || !is_hex(text) {
            return None;
        }
        let mut bytes = [0u8; 8];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        (!bytes.iter().all(|b| *b == 0)).then_some(SpanId(bytes))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// Where a span sits: its trace, its own id (the parent of the spans it starts) and whether
/// the trace is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

impl TraceContext {
    /// The context a `traceparent` header carries (`00-<trace>-<span>-<flags>`), if it is
    /// one (the rules of [`TraceId::from_traceparent`]).
    pub fn from_traceparent(header: &str) -> Option<TraceContext> {
        let trace_id = TraceId::from_traceparent(header)?;
        let mut parts = header.trim().splitn(5, '-').skip(2);
        let span_id = SpanId::parse(parts.next()?)?;
        let flags = u8::from_str_radix(parts.next()?.get(..2)?, 16).ok()?;
        Some(TraceContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// This context as a `traceparent` header: what an upstream sees as its parent.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{}",
            self.trace_id,
            self.span_id,
            if self.sampled { "01" } else { "00" }
        )
    }

    /// The part a run keeps beside its trace id: `<span id>-<flags>`.
    pub fn stored_parent(&self) -> String {
        format!(
            "{}-{}",
            self.span_id,
            if self.sampled { "01" } else { "00" }
        )
    }

    /// A run's context from its stored trace id and parent. A run stored without a parent
    /// (made before parents were kept) joins its trace unsampled, under a new span id.
    pub fn from_stored(trace_id: &str, parent: Option<&str>) -> Option<TraceContext> {
        let trace_id = TraceId::parse(trace_id)?;
        let parsed = parent.and_then(|p| {
            let (span, flags) = p.split_once('-')?;
            Some((SpanId::parse(span)?, flags == "01"))
        });
        let (span_id, sampled) = parsed.unwrap_or_else(|| (SpanId::random(), false));
        Some(TraceContext {
            trace_id,
            span_id,
            sampled,
        })
    }

    /// A context in a new trace, recorded or not (the root of a cron tick in a process
    /// without an exporter, a test).
    pub fn new_root(sampled: bool) -> TraceContext {
        TraceContext {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            sampled,
        }
    }

    /// A context for one call made without its own span: same trace, fresh span id, the
    /// sampled flag off (nothing recorded it).
    pub fn unrecorded_child(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id.clone(),
            span_id: SpanId::random(),
            sampled: false,
        }
    }
}

/// OpenTelemetry's span kinds (their OTLP numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl From<&str> for AttrValue {
    fn from(v: &str) -> Self {
        AttrValue::Str(v.to_owned())
    }
}

impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue::Str(v)
    }
}

impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Int(v)
    }
}

impl From<u16> for AttrValue {
    fn from(v: u16) -> Self {
        AttrValue::Int(i64::from(v))
    }
}

impl From<u32> for AttrValue {
    fn from(v: u32) -> Self {
        AttrValue::Int(i64::from(v))
    }
}

impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}

/// A finished span, as the exporter sends it.
#[derive(Debug, Clone)]
pub struct SpanData {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub name: Cow<'static, str>,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// `Some(message)`: the span ended in an error.
    pub error: Option<String>,
}

/// How spans are recorded.
#[derive(Debug, Clone, Copy)]
pub struct SpanOptions {
    /// Finished spans held for the exporter; past this, new ones are dropped and counted.
    pub queue: usize,
    /// The share of traces recorded (0.0 to 1.0), of those whose parent (if any) was sampled.
    pub ratio: f64,
}

impl Default for SpanOptions {
    fn default() -> Self {
        SpanOptions {
            queue: 8_192,
            ratio: 1.0,
        }
    }
}

/// Attributes one span keeps at most, and the bytes of one string value: the span's
/// memory is bounded whatever a caller sends.
const MAX_ATTRIBUTES: usize = 32;
const MAX_VALUE_BYTES: usize = 512;

struct Recorder {
    options: SpanOptions,
    queue: Mutex<VecDeque<SpanData>>,
    dropped: Family<Vec<(&'static str, String)>, Counter>,
}

impl Recorder {
    fn push(&self, span: SpanData) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() >= self.options.queue {
            drop(queue);
            self.dropped
                .get_or_create(&vec![("reason", "queue_full".to_owned())])
                .inc();
            return;
        }
        queue.push_back(span);
    }
}

/// The process's span recorder: off (every span is a cheap no-op that still carries ids
/// for `traceparent`) unless an exporter asked for spans.
#[derive(Clone, Default)]
pub struct Spans {
    recorder: Option<Arc<Recorder>>,
}

impl fmt::Debug for Spans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spans")
            .field("recording", &self.recorder.is_some())
            .finish()
    }
}

impl Spans {
    /// Records nothing.
    pub const OFF: Spans = Spans { recorder: None };

    pub(crate) fn recording(
        options: SpanOptions,
        dropped: Family<Vec<(&'static str, String)>, Counter>,
    ) -> Spans {
        Spans {
            recorder: Some(Arc::new(Recorder {
                options,
                queue: Mutex::new(VecDeque::new()),
                dropped,
            })),
        }
    }

    /// Whether spans are recorded at all (an exporter is configured).
    pub fn is_recording(&self) -> bool {
        self.recorder.is_some()
    }

    /// Starts a span where a trace enters the process: under the caller's `traceparent`
    /// (`remote`, untrusted) when it sent one, else in a new trace. Recorded when the
    /// parent, if any, was sampled and the ratio draws it.
    pub fn start_entry(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        remote: Option<&TraceContext>,
    ) -> Span {
        let sampled = match &self.recorder {
            Some(recorder) => remote.is_none_or(|r| r.sampled) && draw(recorder.options.ratio),
            None => false,
        };
        let context = TraceContext {
            trace_id: remote.map_or_else(TraceId::random, |r| r.trace_id.clone()),
            span_id: SpanId::random(),
            sampled,
        };
        self.begin(name.into(), kind, context, remote.map(|r| r.span_id))
    }

    /// Starts a span under `parent` (in this process, or a run's stored context): same trace,
    /// same sampling.
    pub fn start(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        parent: &TraceContext,
    ) -> Span {
        let context = TraceContext {
            trace_id: parent.trace_id.clone(),
            span_id: SpanId::random(),
            sampled: parent.sampled && self.recorder.is_some(),
        };
        self.begin(name.into(), kind, context, Some(parent.span_id))
    }

    fn begin(
        &self,
        name: Cow<'static, str>,
        kind: SpanKind,
        context: TraceContext,
        parent: Option<SpanId>,
    ) -> Span {
        let recording = match (&self.recorder, context.sampled) {
            (Some(recorder), true) => Some((
                recorder.clone(),
                SpanData {
                    trace_id: context.trace_id.clone(),
                    span_id: context.span_id,
                    parent,
                    name,
                    kind,
                    start: SystemTime::now(),
                    end: SystemTime::UNIX_EPOCH,
                    attributes: Vec::new(),
                    error: None,
                },
            )),
            _ => None,
        };
        Span { context, recording }
    }

    /// Takes up to `max` finished spans, oldest first.
    pub fn drain(&self, max: usize) -> Vec<SpanData> {
        let Some(recorder) = &self.recorder else {
            return Vec::new();
        };
        let mut queue = recorder.queue.lock().unwrap_or_else(|e| e.into_inner());
        let n = queue.len().min(max);
        queue.drain(..n).collect()
    }

    /// Counts spans lost after they left the queue (an export the collector refused).
    pub fn dropped(&self, reason: &'static str, n: u64) {
        if let Some(recorder) = &self.recorder {
            recorder
                .dropped
                .get_or_create(&vec![("reason", reason.to_owned())])
                .inc_by(n);
        }
    }
}

/// `true` with probability `ratio`.
fn draw(ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 || ratio.is_nan() {
        return false;
    }
    let mut bytes = [0u8; 8];
    random_bytes(&mut bytes);
    #[allow(clippy::cast_precision_loss)]
    let unit = (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
    unit < ratio
}

/// A span in progress; recorded when dropped (or [`Span::end`]ed), if its trace is sampled.
pub struct Span {
    context: TraceContext,
    recording: Option<(Arc<Recorder>, SpanData)>,
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Span")
            .field("context", &self.context)
            .field("recording", &self.recording.is_some())
            .finish()
    }
}

impl Span {
    /// The context of this span: the parent of what it starts, the `traceparent` it sends.
    pub fn context(&self) -> &TraceContext {
        &self.context
    }

    pub fn is_recording(&self) -> bool {
        self.recording.is_some()
    }

    /// Sets an attribute (the first [`MAX_ATTRIBUTES`]; strings cut at [`MAX_VALUE_BYTES`]).
    pub fn set(&mut self, key: &'static str, value: impl Into<AttrValue>) {
        let Some((_, data)) = &mut self.recording else {
            return;
        };
        if data.attributes.len() >= MAX_ATTRIBUTES {
            return;
        }
        let value = match value.into() {
            AttrValue::Str(s) => AttrValue::Str(cut(s, MAX_VALUE_BYTES)),
            other => other,
        };
        data.attributes.push((key, value));
    }

    /// Marks the span failed, with a short description (never a payload or a secret).
    pub fn fail(&mut self, message: impl Into<String>) {
        if let Some((_, data)) = &mut self.recording {
            data.error = Some(cut(message.into(), MAX_VALUE_BYTES));
        }
    }

    /// Renames the span (a route template learnt after it started).
    pub fn rename(&mut self, name: impl Into<Cow<'static, str>>) {
        if let Some((_, data)) = &mut self.recording {
            data.name = name.into();
        }
    }

    pub fn end(self) {}
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some((recorder, mut data)) = self.recording.take() {
            data.end = SystemTime::now();
            recorder.push(data);
        }
    }
}

fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(queue: usize, ratio: f64) -> Spans {
        Spans::recording(SpanOptions { queue, ratio }, Family::default())
    }

    #[test]
    fn contexts_round_trip_through_traceparent_and_the_runs_row() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::from_traceparent(header).expect("valid");
        assert!(context.sampled);
        assert_eq!(context.traceparent(), header);
        let stored = context.stored_parent();
        assert_eq!(stored, "00f067aa0ba902b7-01");
        assert_eq!(
            TraceContext::from_stored(context.trace_id.as_str(), Some(&stored)),
            Some(context.clone())
        );
        // A run stored before parents were kept: same trace, not sampled.
        let old = TraceContext::from_stored(context.trace_id.as_str(), None).expect("trace");
        assert_eq!(old.trace_id, context.trace_id);
        assert!(!old.sampled);
        assert_eq!(SpanId::parse("0000000000000000"), None);
        assert_eq!(SpanId::parse("00F067AA0BA902B7"), None);
    }

    #[test]
    fn only_sampled_spans_of_a_recording_process_are_queued() {
        let off = Spans::default();
        let span = off.start_entry("GET /v1/runs", SpanKind::Server, None);
        assert!(!span.context().sampled && !span.is_recording());
        drop(span);
        assert!(off.drain(10).is_empty());

        let on = recording(10, 1.0);
        let unsampled = TraceContext::new_root(false);
        drop(on.start_entry("x", SpanKind::Server, Some(&unsampled)));
        assert!(on.drain(10).is_empty(), "an unsampled parent is followed");

        let sampled = TraceContext::new_root(true);
        let mut entry = on.start_entry("POST /hooks/{id}", SpanKind::Server, Some(&sampled));
        entry.set("http.route", "/hooks/{id}");
        let child = on.start("run.enqueue", SpanKind::Producer, entry.context());
        assert_eq!(child.context().trace_id, sampled.trace_id);
        let child_id = child.context().span_id;
        drop(child);
        let entry_id = entry.context().span_id;
        entry.end();
        let spans = on.drain(10);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].span_id, child_id);
        assert_eq!(spans[0].parent, Some(entry_id));
        assert_eq!(spans[1].parent, Some(sampled.span_id));
        assert!(spans[1].end >= spans[1].start);
    }

    #[test]
    fn a_caller_cannot_raise_the_ratio_and_a_full_queue_drops_and_counts() {
        let never = recording(10, 0.0);
        for _ in 0..100 {
            drop(never.start_entry("x", SpanKind::Server, Some(&TraceContext::new_root(true))));
        }
        assert!(never.drain(1000).is_empty());

        let dropped = Family::<Vec<(&'static str, String)>, Counter>::default();
        let small = Spans::recording(
            SpanOptions {
                queue: 3,
                ratio: 1.0,
            },
            dropped.clone(),
        );
        for _ in 0..5 {
            drop(small.start_entry("x", SpanKind::Internal, None));
        }
        assert_eq!(small.drain(100).len(), 3);
        assert_eq!(
            dropped
                .get_or_create(&vec![("reason", "queue_full".to_owned())])
                .get(),
            2
        );
    }

    #[test]
    fn attributes_are_bounded() {
        let on = recording(10, 1.0);
        let mut span = on.start_entry("x", SpanKind::Internal, None);
        for _ in 0..100 {
            span.set("k", "é".repeat(1000));
        }
        span.fail("e".repeat(10_000));
        drop(span);
        let data = on.drain(1).pop().expect("one span");
        assert_eq!(data.attributes.len(), MAX_ATTRIBUTES);
        assert!(matches!(&data.attributes[0].1, AttrValue::Str(s) if s.len() <= MAX_VALUE_BYTES));
        assert!(data.error.is_some_and(|e| e.len() == MAX_VALUE_BYTES));
    }
}
