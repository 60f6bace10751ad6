//! The process's Prometheus metrics (`GET /metrics`, OpenMetrics text).
//!
//! One [`Metrics`] per process, built with the runtime and reached by every layer through
//! it. Recording is a hash lookup and an atomic add; nothing here blocks on I/O. Every label
//! value comes from a closed set (a route template, a status class, an error kind this crate
//! knows) or is a tenant id that [`TenantCap`] bounds, so no caller (a guest naming its own
//! error kind, a flood of new tenants) can grow the number of series without limit.

mod cap;
mod log_gate;
mod names;
mod spans;
mod trace;

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use cap::{OVERFLOW, TenantCap};
pub use log_gate::LogGate;
pub use names::{CronTick, NoticeAttempt, RunOutcome, WebhookOutcome, kind_label, status_class};
pub use spans::{AttrValue, Span, SpanData, SpanId, SpanKind, SpanOptions, Spans, TraceContext};
pub use trace::TraceId;

/// Labels: a short list of (name, value) pairs.
type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;
/// Gauges of floating-point values (seconds).
type GaugeF = Gauge<f64, AtomicU64>;

/// Distinct tenants each per-tenant metric keeps by default; the rest share
/// [`OVERFLOW`]. 1,000 tenants × the handful of per-tenant series stays under 10,000.
pub const DEFAULT_TENANT_CAP: usize = 1_000;

/// Refusal log lines (a webhook refused, ...) written a second, at most; the rest are
/// counted into the next line.
const REFUSAL_LINES_PER_SECOND: u32 = 10;

/// Seconds: 1 ms to 10 s, for HTTP requests and admission waits.
const FAST: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Seconds: 10 ms to 1 h, for queue waits and whole runs.
const SLOW: [f64; 14] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

fn fast() -> Histogram {
    Histogram::new(FAST)
}

fn slow() -> Histogram {
    Histogram::new(SLOW)
}

/// Every metric of the process. Cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    tenant_cap: usize,
    /// `false`: every recording method returns at once (the overhead benchmark's baseline).
    enabled: bool,
    ready: Gauge,
    refusal_log: LogGate,
    http_requests: Family<Labels, Counter>,
    http_duration: Histograms,
    runs_created: Family<Labels, Counter>,
    runs_started: Counter,
    runs_finished: Family<Labels, Counter>,
    runs_finished_tenants: TenantCap,
    schedule_to_start: Histogram,
    run_duration: Histograms,
    step_attempts: Family<Labels, Counter>,
    step_retries: Family<Labels, Counter>,
    dead_letters: Family<Labels, Counter>,
    queue_depth: Gauge,
    queue_oldest: GaugeF,
    invocations: Family<Labels, Counter>,
    invocations_tenants: TenantCap,
    invocation_errors: Family<Labels, Counter>,
    limit_hits: Family<Labels, Counter>,
    tenant_limit_hits: Family<Labels, Counter>,
    limit_hits_tenants: TenantCap,
    outbound: Family<Labels, Counter>,
    webhooks: Family<Labels, Counter>,
    cron_ticks: Family<Labels, Counter>,
    notices: Family<Labels, Counter>,
    pool_in_use: Gauge,
    pool_size: Gauge,
    admission_wait: Histogram,
    db_connections: Family<Labels, Gauge>,
    db_acquire: Histogram,
    retention_runs: Family<Labels, Counter>,
    retention_batch: Histogram,
    spans: std::sync::OnceLock<Spans>,
    spans_dropped: Family<Labels, Counter>,
    spans_exported: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("tenant_cap", &self.tenant_cap)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(DEFAULT_TENANT_CAP)
    }
}

impl Metrics {
    /// Metrics whose per-tenant families keep at most `tenant_cap` distinct tenants each.
    pub fn new(tenant_cap: usize) -> Metrics {
        let mut registry = Registry::with_prefix("airlock");
        let build: Family<Labels, Gauge> = Family::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())])
            .set(1);
        registry.register("build_info", "The running build (always 1)", build);

        let metrics = Metrics {
            tenant_cap,
            enabled: true,
            ready: Gauge::default(),
            refusal_log: LogGate::new(REFUSAL_LINES_PER_SECOND, Duration::from_secs(1)),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(fast),
            runs_created: Family::default(),
            runs_started: Counter::default(),
            runs_finished: Family::default(),
            runs_finished_tenants: TenantCap::new(tenant_cap),
            schedule_to_start: slow(),
            run_duration: Family::new_with_constructor(slow),
            step_attempts: Family::default(),
            step_retries: Family::default(),
            dead_letters: Family::default(),
            queue_depth: Gauge::default(),
            queue_oldest: GaugeF::default(),
            invocations: Family::default(),
            invocations_tenants: TenantCap::new(tenant_cap),
            invocation_errors: Family::default(),
            limit_hits: Family::default(),
            tenant_limit_hits: Family::default(),
            limit_hits_tenants: TenantCap::new(tenant_cap),
            outbound: Family::default(),
            webhooks: Family::default(),
            cron_ticks: Family::default(),
            notices: Family::default(),
            pool_in_use: Gauge::default(),
            pool_size: Gauge::default(),
            admission_wait: fast(),
            db_connections: Family::default(),
            db_acquire: fast(),
            retention_runs: Family::default(),
            retention_batch: fast(),
            spans: std::sync::OnceLock::new(),
            spans_dropped: Family::default(),
            spans_exported: Counter::default(),
            registry,
        };
        metrics.register()
    }

    /// Metrics that record nothing: the baseline the overhead benchmark measures against.
    pub fn disabled() -> Metrics {
        Metrics {
            enabled: false,
            ..Metrics::new(0)
        }
    }

    fn register(mut self) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "ready",
            "1 when this process's readiness checks passed at scrape, else 0",
            self.ready.clone(),
        );
        r.register(
            "http_requests",
            "API requests by route template, method and status",
            self.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "API request latency by route template and method",
            self.http_duration.clone(),
        );
        r.register(
            "runs_created",
            "Durable runs created, by trigger (api, webhook, cron, replay)",
            self.runs_created.clone(),
        );
        r.register(
            "runs_started",
            "Run claims by a worker (a retried run is started again)",
            self.runs_started.clone(),
        );
        r.register(
            "runs_finished",
            "Runs ended, by tenant and outcome (succeeded, dead, cancelled)",
            self.runs_finished.clone(),
        );
        r.register(
            "run_schedule_to_start_seconds",
            "From when a run was due to when a worker claimed it",
            self.schedule_to_start.clone(),
        );
        r.register(
            "run_duration_seconds",
            "From a run's creation to its end, by outcome",
            self.run_duration.clone(),
        );
        r.register(
            "step_attempts",
            "Step attempts by result (ok, or the error kind)",
            self.step_attempts.clone(),
        );
        r.register(
            "step_retries",
            "Failed step attempts scheduled for another try, by error kind",
            self.step_retries.clone(),
        );
        r.register(
            "dead_letters",
            "Runs dead-lettered, by the last error kind",
            self.dead_letters.clone(),
        );
        r.register(
            "queue_depth",
            "Runs waiting in the queue, every tenant (read at scrape)",
            self.queue_depth.clone(),
        );
        r.register(
            "queue_oldest_waiting_seconds",
            "Age of the oldest run due and not claimed (read at scrape)",
            self.queue_oldest.clone(),
        );
        r.register(
            "invocations",
            "Connector invocations (steps and direct calls), by tenant and outcome (ok, error)",
            self.invocations.clone(),
        );
        r.register(
            "invocation_errors",
            "Failed invocations by error kind",
            self.invocation_errors.clone(),
        );
        r.register(
            "limit_hits",
            "Invocations stopped by a limit, by kind",
            self.limit_hits.clone(),
        );
        r.register(
            "tenant_limit_hits",
            "Invocations stopped by a limit, by tenant",
            self.tenant_limit_hits.clone(),
        );
        r.register(
            "outbound_requests",
            "Guest HTTP requests by status class (2xx..5xx, or error when no response)",
            self.outbound.clone(),
        );
        r.register(
            "webhook_deliveries",
            "Webhook deliveries by outcome",
            self.webhooks.clone(),
        );
        r.register(
            "cron_ticks",
            "Cron ticks by outcome (fired, late, missed)",
            self.cron_ticks.clone(),
        );
        r.register(
            "dead_letter_notices",
            "Attempts to deliver a dead-letter notice to a tenant's webhook, by outcome",
            self.notices.clone(),
        );
        r.register(
            "pool_slots_in_use",
            "Invocation slots running a guest (read at scrape)",
            self.pool_in_use.clone(),
        );
        r.register(
            "pool_slots",
            "Invocation slots of this process",
            self.pool_size.clone(),
        );
        r.register(
            "admission_wait_seconds",
            "Time invocations waited for a slot",
            self.admission_wait.clone(),
        );
        r.register(
            "db_pool_connections",
            "Database pool connections by state (in_use, idle, max) (read at scrape)",
            self.db_connections.clone(),
        );
        r.register(
            "db_pool_acquire_seconds",
            "Time taken to get a database connection, sampled at each scrape",
            self.db_acquire.clone(),
        );
        r.register(
            "retention_runs",
            "Ended runs pruned by retention, by what was done (blanked, removed)",
            self.retention_runs.clone(),
        );
        r.register(
            "retention_longest_batch_seconds",
            "The longest pruning batch (one transaction) of each pass",
            self.retention_batch.clone(),
        );
        r.register(
            "trace_spans_dropped",
            "Spans not exported, by reason (queue_full: the exporter fell behind; export_failed: \
             the collector did not take them)",
            self.spans_dropped.clone(),
        );
        r.register(
            "trace_spans_exported",
            "Spans the OTLP collector accepted",
            self.spans_exported.clone(),
        );
        self
    }

    /// Records spans for an exporter (`--otlp-endpoint`) from now on; without this, spans
    /// only carry ids (for `traceparent`) and record nothing. Once per process: `false` if
    /// spans were already being recorded.
    pub fn record_spans(&self, options: SpanOptions) -> bool {
        self.spans
            .set(Spans::recording(options, self.spans_dropped.clone()))
            .is_ok()
    }

    /// The process's span recorder.
    pub fn spans(&self) -> &Spans {
        static OFF: Spans = Spans::OFF;
        self.spans.get().unwrap_or(&OFF)
    }

    /// Spans the collector took.
    pub fn spans_exported(&self, n: u64) {
        self.spans_exported.inc_by(n);
    }

    pub fn tenant_cap(&self) -> usize {
        self.tenant_cap
    }

    /// Whether a refusal may be logged now: `Some(lines held back before it)`.
    pub fn refusal_log(&self) -> Option<u64> {
        self.refusal_log.allow()
    }

    pub fn set_ready(&self, ready: bool) {
        if !self.enabled {
            return;
        }
        self.ready.set(i64::from(ready));
    }

    /// One API request. `route` is the matched template (`/v1/runs/{id}`), never the path.
    pub fn http_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        let method = names::method_label(method);
        self.http_requests
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("method", method.to_owned()),
                ("status", status.to_string()),
            ])
            .inc();
        self.http_duration
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("method", method.to_owned()),
            ])
            .observe(elapsed.as_secs_f64());
    }

    pub fn run_created(&self, trigger: &'static str) {
        self.runs_created_n(trigger, 1);
    }

    /// `count` runs created at once (a cron claim's ticks).
    pub fn runs_created_n(&self, trigger: &'static str, count: u64) {
        if !self.enabled {
            return;
        }
        if count == 0 {
            return;
        }
        self.runs_created
            .get_or_create(&vec![("trigger", trigger.to_owned())])
            .inc_by(count);
    }

    /// A worker claimed a run that was due `waited` ago.
    pub fn run_started(&self, waited: Duration) {
        if !self.enabled {
            return;
        }
        self.runs_started.inc();
        self.schedule_to_start.observe(waited.as_secs_f64());
    }

    /// A run ended, `age` after it was created.
    pub fn run_finished(&self, tenant: &str, outcome: RunOutcome, age: Duration) {
        if !self.enabled {
            return;
        }
        self.runs_finished
            .get_or_create(&vec![
                ("tenant", self.runs_finished_tenants.label(tenant)),
                ("outcome", outcome.as_str().to_owned()),
            ])
            .inc();
        self.run_duration
            .get_or_create(&vec![("outcome", outcome.as_str().to_owned())])
            .observe(age.as_secs_f64());
    }

    /// A step attempt ended: `error` is its error kind, `None` when it succeeded.
    pub fn step_attempt(&self, error: Option<&str>) {
        if !self.enabled {
            return;
        }
        let result = error.map_or("ok", kind_label);
        self.step_attempts
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
    }

    pub fn step_retry(&self, kind: &str) {
        if !self.enabled {
            return;
        }
        self.step_retries
            .get_or_create(&vec![("kind", kind_label(kind).to_owned())])
            .inc();
    }

    pub fn dead_letter(&self, kind: &str) {
        if !self.enabled {
            return;
        }
        self.dead_letters
            .get_or_create(&vec![("kind", kind_label(kind).to_owned())])
            .inc();
    }

    pub fn set_queue(&self, depth: i64, oldest_waiting: Duration) {
        if !self.enabled {
            return;
        }
        self.queue_depth.set(depth);
        self.queue_oldest.set(oldest_waiting.as_secs_f64());
    }

    /// An invocation ended: `error` is its error kind, `None` when it succeeded. Per tenant
    /// only ok/error, so the tenant label multiplies two series, not every kind.
    pub fn invocation(&self, tenant: &str, error: Option<&str>) {
        if !self.enabled {
            return;
        }
        self.invocations
            .get_or_create(&vec![
                ("tenant", self.invocations_tenants.label(tenant)),
                (
                    "outcome",
                    if error.is_some() { "error" } else { "ok" }.to_owned(),
                ),
            ])
            .inc();
        if let Some(kind) = error {
            self.invocation_errors
                .get_or_create(&vec![("kind", kind_label(kind).to_owned())])
                .inc();
        }
    }

    pub fn limit_hit(&self, tenant: &str, kind: &str) {
        if !self.enabled {
            return;
        }
        self.limit_hits
            .get_or_create(&vec![("kind", kind_label(kind).to_owned())])
            .inc();
        self.tenant_limit_hits
            .get_or_create(&vec![("tenant", self.limit_hits_tenants.label(tenant))])
            .inc();
    }

    /// One guest HTTP request: its status, or `None` when no response came.
    pub fn outbound(&self, status: Option<u16>) {
        if !self.enabled {
            return;
        }
        self.outbound
            .get_or_create(&vec![("class", status_class(status).to_owned())])
            .inc();
    }

    pub fn webhook(&self, outcome: WebhookOutcome) {
        if !self.enabled {
            return;
        }
        self.webhooks
            .get_or_create(&vec![("outcome", outcome.as_str().to_owned())])
            .inc();
    }

    /// `count` cron ticks with one outcome.
    pub fn cron_ticks(&self, tick: CronTick, count: u64) {
        if !self.enabled {
            return;
        }
        if count == 0 {
            return;
        }
        self.cron_ticks
            .get_or_create(&vec![("outcome", tick.as_str().to_owned())])
            .inc_by(count);
    }

    /// One attempt to deliver a dead-letter notice.
    pub fn notice_attempt(&self, attempt: NoticeAttempt) {
        if !self.enabled {
            return;
        }
        self.notices
            .get_or_create(&vec![("outcome", attempt.as_str().to_owned())])
            .inc();
    }

    pub fn set_pool(&self, in_use: usize, size: usize) {
        if !self.enabled {
            return;
        }
        self.pool_in_use
            .set(i64::try_from(in_use).unwrap_or(i64::MAX));
        self.pool_size.set(i64::try_from(size).unwrap_or(i64::MAX));
    }

    pub fn admission_wait(&self, waited: Duration) {
        if !self.enabled {
            return;
        }
        self.admission_wait.observe(waited.as_secs_f64());
    }

    pub fn set_db_pool(&self, in_use: u32, idle: u32, max: u32) {
        if !self.enabled {
            return;
        }
        for (state, value) in [("in_use", in_use), ("idle", idle), ("max", max)] {
            self.db_connections
                .get_or_create(&vec![("state", state.to_owned())])
                .set(i64::from(value));
        }
    }

    pub fn db_acquire(&self, waited: Duration) {
        if !self.enabled {
            return;
        }
        self.db_acquire.observe(waited.as_secs_f64());
    }

    /// One retention pass: runs blanked and removed, and its longest batch.
    pub fn retention(&self, blanked: u64, removed: u64, longest_batch: Duration) {
        if !self.enabled {
            return;
        }
        for (what, count) in [("blanked", blanked), ("removed", removed)] {
            self.retention_runs
                .get_or_create(&vec![("what", what.to_owned())])
                .inc_by(count);
        }
        self.retention_batch.observe(longest_batch.as_secs_f64());
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if encode(&mut out, &self.registry).is_err() {
            // Writing to a String does not fail; keep the scrape parseable if it ever does.
            out.clear();
            let _ = writeln!(out, "# EOF");
        }
        out
    }
}

#[cfg(test)]
mod tests;
