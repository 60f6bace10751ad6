//! Durable runs under load: `cargo bench -p airlock --bench runs` (add `-- --quick` for a
//! short pass). The service runs in this process on SQLite (a temp dir) and, when reachable,
//! PostgreSQL (a database made for the run), with the `transform` connector's `pick` as the
//! step (a guest that does almost nothing, so the queue is what is measured).
//!
//! Scenarios, each printed as one line:
//! - enqueue-to-start on an idle queue (p50, p99: a run's `started_at - created_at`);
//! - completed single-step runs per second (8 tenants enqueueing at once);
//! - a small tenant's enqueue-to-start while another has a 10,000-run backlog;
//! - crash-to-resume: runs held by a worker that died (never heartbeats) are started again
//!   after the lease expires and the reaper passes (default lease 30 s, reaper every 5 s);
//! - signed webhook ingest: deliveries answered 202 per second and their latency, from
//!   concurrent senders to one Standard Webhooks trigger per tenant, then received-to-started
//!   of their runs; once with the default workers in the process (`AIRLOCK_HOOK_WORKERS`),
//!   once on an API-only process;
//! - cron: how late each tick's run is created and started (every-second triggers);
//! - drain: completed runs per second from a prefilled backlog (8 tenants, then one), one
//!   process on SQLite and two on PostgreSQL (`AIRLOCK_DRAIN_RUNS`, `AIRLOCK_DRAIN_WORKERS`);
//! - for_each: one run's `for_each` of 1,000 trivial items (concurrency 16, then 64), as
//!   items per second and as a share of the single-step drain rate measured just before.
//!
//! `cargo bench -p airlock --bench runs -- webhook cron` runs only the scenarios named.
//! `AIRLOCK_HOOK_SENDERS` sets the concurrent webhook senders (default 32): ingest is a
//! closed loop, so its rate is the senders over the latency.
//! Figures are in docs/performance.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock::api::{AppState, Role, Service};
use airlock::config::Config;
use airlock::store::{NewRun, Store};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The `airlock` binary's allocator (`host/src/main.rs`): the service measured here is the
/// one that ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

struct Bench {
    base: String,
    client: reqwest::Client,
    state: AppState,
    operator: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start(database_url: Option<String>, workers: usize) -> Bench {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::dev(dir.path().join("data"));
    config.database_url = database_url;
    config.workers = workers;
    config.pool_size = 32;
    let mut runtime = config.runtime_options();
    runtime.engine.pool_size = 32;
    let service = Service::start(config.service_options(runtime).expect("config"))
        .await
        .expect("service");
    let state = service.state.clone();
    let operator = state
        .jwt()
        .issue("bench", None, Role::Operator, Duration::from_secs(3600))
        .expect("token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    tokio::spawn(service.serve(listener, shutdown.clone()));
    Bench {
        base,
        client: reqwest::Client::new(),
        state,
        operator,
        shutdown,
        _dir: dir,
    }
}

impl Bench {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some((content_type, bytes)) = body {
            request = request.header("content-type", content_type).body(bytes);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.send(
            reqwest::Method::POST,
            path,
            token,
            Some(("application/json", body.to_string().into_bytes())),
        )
        .await
    }

    /// A tenant with `transform` and a one-step workflow; returns (admin token, workflow id).
    async fn tenant(&self, id: &str) -> (String, String) {
        let (status, body) = self
            .post("/v1/tenants", &self.operator, json!({"id": id, "name": id}))
            .await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = self
            .send(
                reqwest::Method::PUT,
                &format!("/v1/tenants/{id}/limits"),
                &self.operator,
                Some((
                    "application/json",
                    json!({"runs_per_hour": 500, "max_concurrent_runs": 256})
                        .to_string()
                        .into_bytes(),
                )),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let admin = self
            .state
            .jwt()
            .issue("bench", Some(id), Role::Admin, Duration::from_secs(3600))
            .expect("token");
        let wasm = std::fs::read(airlock_test_artifacts::CONNECTOR_TRANSFORM).expect("guest built");
        let (status, body) = self
            .send(
                reqwest::Method::POST,
                "/v1/connectors",
                &admin,
                Some(("application/wasm", wasm)),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = self
            .post(
                "/v1/workflows",
                &admin,
                json!({"name": "pick", "steps": [{"id": "pick", "connector": "transform", "action": "pick",
                        "input": {"data": {"$from": "/trigger"}, "fields": ["i"]}}]}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (admin, body["id"].as_str().expect("id").to_owned())
    }

    async fn enqueue(&self, admin: &str, workflow: &str, i: usize) -> String {
        let (status, body) = self
            .post(
                &format!("/v1/workflows/{workflow}/runs"),
                admin,
                json!({"input": {"i": i}}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    fn store(&self) -> &Store {
        self.state.store()
    }

    /// Seconds from `started_ms` (unix ms) to the last run's finish, as the database
    /// recorded it: independent of how often the bench polls.
    async fn finished_since(&self, started_ms: i64) -> f64 {
        use sqlx::Row as _;
        let last: Option<i64> = sqlx::query("SELECT MAX(finished_at) AS last FROM runs")
            .fetch_one(self.store().pool())
            .await
            .expect("last finish")
            .get("last");
        (last.unwrap_or(started_ms) - started_ms).max(1) as f64 / 1000.0
    }

    /// Waits until `tenant` has `n` runs succeeded; returns each one's start - creation (ms).
    /// It polls a count (an index scan), and reads the rows once: reading every row on each
    /// poll took a measurable share of the 2 cores from the service measured.
    async fn wait_succeeded(&self, tenant: &str, n: usize, within: Duration) -> Vec<i64> {
        use sqlx::Row as _;
        let deadline = Instant::now() + within;
        loop {
            let done: i64 = sqlx::query(
                "SELECT COUNT(*) AS n FROM runs WHERE tenant_id = $1 AND state = 'succeeded'",
            )
            .bind(tenant)
            .fetch_one(self.store().pool())
            .await
            .expect("count")
            .get("n");
            if usize::try_from(done).unwrap_or(0) >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{tenant}: {done} of {n} runs done"
            );
            // The count reads every succeeded run's row: polled less often for big
            // backlogs, whose rates are timed from the runs' own `finished_at`.
            let poll = if n < 1_000 { 20 } else { 100 };
            tokio::time::sleep(Duration::from_millis(poll)).await;
        }
        sqlx::query(
            "SELECT created_at, started_at FROM runs WHERE tenant_id = $1 AND state = 'succeeded'",
        )
        .bind(tenant)
        .fetch_all(self.store().pool())
        .await
        .expect("runs")
        .iter()
        .map(|r| r.get::<i64, _>("started_at") - r.get::<i64, _>("created_at"))
        .collect()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn percentile(values: &mut [i64], p: f64) -> i64 {
    values.sort_unstable();
    if values.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

async fn idle_enqueue_to_start(label: &str, url: Option<String>, n: usize) {
    let bench = start(url, 8).await;
    let (admin, workflow) = bench.tenant("idle").await;
    for i in 0..n {
        bench.enqueue(&admin, &workflow, i).await;
        // Each run finds the queue idle: it is done before the next is created.
        bench
            .wait_succeeded("idle", i + 1, Duration::from_secs(30))
            .await;
    }
    let mut waits = bench
        .wait_succeeded("idle", n, Duration::from_secs(30))
        .await;
    println!(
        "{label}: idle enqueue-to-start over {n} runs: p50 {} ms, p99 {} ms, max {} ms",
        percentile(&mut waits, 50.0),
        percentile(&mut waits, 99.0),
        percentile(&mut waits, 100.0)
    );
}

async fn throughput(label: &str, url: Option<String>, tenants: usize, per_tenant: usize) {
    let bench = Arc::new(start(url, 16).await);
    let mut setups = Vec::new();
    for t in 0..tenants {
        let id = format!("tp{t}");
        let (admin, workflow) = bench.tenant(&id).await;
        setups.push((id, admin, workflow));
    }
    let started = Instant::now();
    let mut clients = Vec::new();
    for (_, admin, workflow) in setups.clone() {
        let bench = bench.clone();
        clients.push(tokio::spawn(async move {
            for i in 0..per_tenant {
                bench.enqueue(&admin, &workflow, i).await;
            }
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
    let enqueued = started.elapsed();
    for (id, _, _) in &setups {
        bench
            .wait_succeeded(id, per_tenant, Duration::from_secs(600))
            .await;
    }
    let total = tenants * per_tenant;
    let elapsed = started.elapsed();
    println!(
        "{label}: {total} single-step runs ({tenants} tenants) enqueued in {:.2} s, all succeeded in {:.2} s: {:.0} runs/s completed",
        enqueued.as_secs_f64(),
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
}

/// Completed runs per second from a backlog: `tenants` tenants' `per_tenant` runs created
/// first (no workers), then `processes` services on the same database (each its own pool,
/// store and `workers` run workers; one process's CPU share is what each gets here) drain it.
/// The rate is runs done over the time from the workers' start to the last run's finish.
async fn drain(
    label: &str,
    url: Option<String>,
    tenants: usize,
    per_tenant: usize,
    processes: usize,
    workers: usize,
) -> f64 {
    let bench = Arc::new(start(url.clone(), 0).await);
    let mut ids = Vec::new();
    for t in 0..tenants {
        let id = format!("dr{t}");
        let (_, workflow) = bench.tenant(&id).await;
        ids.push((id, workflow));
    }
    // Created concurrently, so SQLite's group commit and PostgreSQL's pool are used.
    let mut fills = Vec::new();
    for (id, workflow) in ids.clone() {
        for chunk in 0..8 {
            let (bench, id, workflow) = (bench.clone(), id.clone(), workflow.clone());
            fills.push(tokio::spawn(async move {
                for i in (chunk..per_tenant).step_by(8) {
                    let run = NewRun {
                        id: format!("run_{id}_{i:06}"),
                        workflow_id: workflow.clone(),
                        workflow_version: 1,
                        input: json!({"i": i}).to_string(),
                        idempotency_key: None,
                        request_hash: None,
                        trigger_id: None,
                        trace_id: None,
                        trace_parent: None,
                        runs_per_hour: None,
                        max_queued: u64::MAX,
                    };
                    bench.store().create_run(&id, run).await.expect("backlog");
                }
            }));
        }
    }
    for fill in fills {
        fill.await.expect("fill");
    }
    let mut extra = Vec::new();
    let mut pipelines = vec![bench.state.pipeline().clone()];
    for _ in 1..processes {
        let other = start(url.clone(), 0).await;
        pipelines.push(other.state.pipeline().clone());
        extra.push(other);
    }
    // Steady state: every process has the component compiled (as one restarted with its
    // artifact cache would), so a compile is not part of the rate.
    let wasm = std::fs::read(airlock_test_artifacts::CONNECTOR_TRANSFORM).expect("guest built");
    for pipeline in &pipelines {
        pipeline
            .runtime()
            .load(&wasm)
            .await
            .expect("component loads");
    }
    let options = airlock::runs::WorkerOptions {
        workers,
        ..airlock::runs::WorkerOptions::default()
    };
    let started_ms = airlock::store::now_ms();
    let running: Vec<_> = pipelines
        .into_iter()
        .map(|pipeline| airlock::runs::Workers::start(pipeline, options.clone()))
        .collect();
    for (id, _) in &ids {
        bench
            .wait_succeeded(id, per_tenant, Duration::from_secs(600))
            .await;
    }
    let elapsed = bench.finished_since(started_ms).await;
    let total = tenants * per_tenant;
    println!(
        "{label}: drained a {total}-run backlog ({tenants} tenant{}) with {processes} process{} x {workers} workers in {elapsed:.2} s: {:.0} runs/s completed",
        if tenants == 1 { "" } else { "s" },
        if processes == 1 { "" } else { "es" },
        total as f64 / elapsed
    );
    for workers in running {
        workers.shutdown().await;
    }
    drop(extra);
    total as f64 / elapsed
}

/// A `for_each` of `items` items whose body is the same trivial step, in one run, against
/// the engine's single-step rate measured here first: four times as many one-step runs
/// drained from a backlog by one process (a for_each is one run: one process runs it) with
/// 64 workers, on the same kind of database. The issue's goal: at least 50%.
async fn for_each(label: &str, baseline_url: Option<String>, url: Option<String>, items: usize) {
    let baseline = drain(label, baseline_url, 1, 4 * items, 1, 64).await;
    let bench = start(url, 16).await;
    let (admin, _) = bench.tenant("fe").await;
    let (status, body) = bench
        .send(
            reqwest::Method::PUT,
            "/v1/tenants/fe/limits",
            &bench.operator,
            Some((
                "application/json",
                json!({"runs_per_hour": 500, "max_concurrent_runs": 256, "max_iterations": items})
                    .to_string()
                    .into_bytes(),
            )),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for concurrency in [16, 64] {
        let (status, body) = bench
            .post(
                "/v1/workflows",
                &admin,
                json!({"name": format!("fan-{concurrency}"), "steps": [{"id": "each", "for_each": {
                    "items": {"$from": "/trigger/items"}, "concurrency": concurrency,
                    "steps": [{"id": "pick", "connector": "transform", "action": "pick",
                               "input": {"data": {"$from": "/item"}, "fields": ["i"]}}]}}]}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let workflow = body["id"].as_str().expect("id").to_owned();
        // The first run compiles the component: warmed with one item.
        for n in [1, items] {
            let list: Vec<Value> = (0..n).map(|i| json!({"i": i})).collect();
            let (status, body) = bench
                .post(
                    &format!("/v1/workflows/{workflow}/runs"),
                    &admin,
                    json!({"input": {"items": list}}),
                )
                .await;
            assert_eq!(status, 202, "{body}");
            let run = body["id"].as_str().expect("id").to_owned();
            let deadline = Instant::now() + Duration::from_secs(600);
            let record = loop {
                let record = bench.store().run("fe", &run).await.expect("run");
                if record.state.as_str() == "succeeded" {
                    break record;
                }
                assert!(
                    record.state.as_str() != "dead" && Instant::now() < deadline,
                    "{run}: {:?} {:?}",
                    record.state,
                    record.error
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            if n == 1 {
                continue;
            }
            let started = record.started_at.unwrap_or(record.created_at);
            let finished = record.finished_at.unwrap_or(started);
            let elapsed = (finished - started).max(1) as f64 / 1000.0;
            let rate = n as f64 / elapsed;
            println!(
                "{label}: a for_each of {n} items (concurrency {concurrency}) ran in {elapsed:.2} s: {rate:.0} items/s, {:.0}% of the single-step rate ({baseline:.0} runs/s; goal >= 50%)",
                100.0 * rate / baseline
            );
        }
    }
}

async fn fairness(label: &str, url: Option<String>, backlog: usize, probes: usize) {
    let bench = start(url, 0).await;
    let (_, big_workflow) = bench.tenant("big").await;
    let (small_admin, small_workflow) = bench.tenant("small").await;
    let filled = Instant::now();
    for i in 0..backlog {
        let run = NewRun {
            id: format!("run_big_{i:06}"),
            workflow_id: big_workflow.clone(),
            workflow_version: 1,
            input: json!({"i": i}).to_string(),
            idempotency_key: None,
            request_hash: None,
            trigger_id: None,
            trace_id: None,
            trace_parent: None,
            runs_per_hour: None,
            max_queued: u64::MAX,
        };
        bench.store().create_run("big", run).await.expect("backlog");
    }
    let fill = filled.elapsed();
    let options = airlock::runs::WorkerOptions {
        workers: 8,
        ..airlock::runs::WorkerOptions::default()
    };
    let workers = airlock::runs::Workers::start(bench.state.pipeline().clone(), options);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..probes {
        bench.enqueue(&small_admin, &small_workflow, i).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut waits = bench
        .wait_succeeded("small", probes, Duration::from_secs(120))
        .await;
    let big_done = bench
        .wait_succeeded("big", 0, Duration::from_secs(1))
        .await
        .len();
    println!(
        "{label}: small tenant's enqueue-to-start behind a {backlog}-run backlog (filled in {:.1} s; {big_done} of it done meanwhile): p50 {} ms, p99 {} ms over {probes} runs",
        fill.as_secs_f64(),
        percentile(&mut waits, 50.0),
        percentile(&mut waits, 99.0)
    );
    workers.shutdown().await;
}

async fn crash_to_resume(label: &str, url: Option<String>, n: usize) {
    let bench = start(url, 0).await;
    let (admin, workflow) = bench.tenant("crash").await;
    for i in 0..n {
        bench.enqueue(&admin, &workflow, i).await;
    }
    // A worker claims them and dies: it never heartbeats again.
    let options = airlock::runs::WorkerOptions::default();
    let lease_ms = i64::try_from(options.lease.as_millis()).unwrap_or(i64::MAX);
    for _ in 0..n {
        bench
            .store()
            .claim_run("dead-worker", lease_ms)
            .await
            .expect("claim")
            .expect("a run");
    }
    let died = Instant::now();
    let workers = airlock::runs::Workers::start(bench.state.pipeline().clone(), options.clone());
    bench
        .wait_succeeded("crash", n, Duration::from_secs(120))
        .await;
    println!(
        "{label}: crash-to-resume ({n} runs held by a killed worker; lease {} s, reaper every {} s): all resumed and done {:.1} s after the last heartbeat",
        options.lease.as_secs(),
        options.reap_every.as_secs(),
        died.elapsed().as_secs_f64()
    );
    workers.shutdown().await;
}

async fn postgres_database() -> Option<String> {
    use sqlx::Connection as _;
    let admin = std::env::var("AIRLOCK_TEST_PG_URL").unwrap_or_else(|_| PG_ADMIN.to_owned());
    let mut conn =
        match tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&admin))
            .await
        {
            Ok(Ok(conn)) => conn,
            _ => {
                println!("PostgreSQL not reachable at {admin}: its scenarios are skipped");
                return None;
            }
        };
    let name = format!("airlock_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .ok()?;
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base)
        .to_owned();
    Some(format!("{base}/{name}"))
}

/// `tenants` webhook triggers (one per tenant, `per_tenant` deliveries each, within the
/// tenant's hourly runs) and `senders` concurrent senders signing every delivery, on a
/// process with `workers` run workers (0: API-only, nothing started here).
async fn webhook_ingest(
    label: &str,
    url: Option<String>,
    tenants: usize,
    per_tenant: usize,
    senders: usize,
    probes: usize,
    workers: usize,
) {
    use airlock::triggers::webhook::{Scheme, sign};
    let bench = Arc::new(start(url, workers).await);
    let mut hooks = Vec::new();
    for t in 0..tenants {
        let id = format!("wh{t}");
        let (admin, workflow) = bench.tenant(&id).await;
        let (status, trigger) = bench
            .post(
                &format!("/v1/workflows/{workflow}/triggers"),
                &admin,
                json!({"kind": "webhook", "rate_per_minute": 600_000}),
            )
            .await;
        assert_eq!(status, 201, "{trigger}");
        let hook = trigger["webhook"]["url"].as_str().expect("url").to_owned();
        let secret = trigger["secret"].as_str().expect("secret").to_owned();
        hooks.push((id, hook, secret));
    }
    // One sender, one delivery at a time, each waiting for its run to start: the latency
    // a delivery sees on an idle service.
    let (probe, hook, secret) = &hooks[0];
    let probes = if workers == 0 { 0 } else { probes };
    for n in 0..probes {
        let body = json!({"i": n}).to_string().into_bytes();
        let now = airlock::store::now_ms() / 1000;
        let headers = sign(
            Scheme::StandardWebhooks,
            secret,
            &format!("probe{n}"),
            now,
            &body,
        )
        .expect("sign");
        let mut request = bench
            .client
            .post(format!("{}{hook}", bench.base))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.expect("delivery");
        assert_eq!(response.status().as_u16(), 202);
        bench
            .wait_succeeded(probe, n + 1, Duration::from_secs(30))
            .await;
    }
    if probes > 0 {
        let mut idle = bench
            .wait_succeeded(probe, probes, Duration::from_secs(30))
            .await;
        println!(
            "{label}: webhook received-to-started on an idle service over {probes} deliveries: p50 {} ms, p95 {} ms, p99 {} ms",
            percentile(&mut idle, 50.0),
            percentile(&mut idle, 95.0),
            percentile(&mut idle, 99.0),
        );
    }
    let hooks = Arc::new(hooks);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let total = tenants * per_tenant;
    // A mark for profilers attaching to this phase (`perf record -p`).
    eprintln!("{label}: sending {total} deliveries, {workers} workers");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (bench, hooks, next) = (bench.clone(), hooks.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= total {
                    return latencies;
                }
                let (_, hook, secret) = &hooks[n % hooks.len()];
                let body = json!({"i": n}).to_string().into_bytes();
                let now = airlock::store::now_ms() / 1000;
                let headers = sign(
                    Scheme::StandardWebhooks,
                    secret,
                    &format!("d{n}"),
                    now,
                    &body,
                )
                .expect("sign");
                let sent = Instant::now();
                let mut request = bench
                    .client
                    .post(format!("{}{hook}", bench.base))
                    .header("content-type", "application/json")
                    .body(body);
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                let response = request.send().await.expect("delivery");
                let status = response.status().as_u16();
                let text = response.text().await.expect("body");
                assert_eq!(status, 202, "{text}");
                latencies.push(i64::try_from(sent.elapsed().as_micros()).unwrap_or(i64::MAX));
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("sender"));
    }
    let elapsed = started.elapsed();
    let rate = format!(
        "{label}: {total} signed webhook deliveries ({tenants} triggers, {senders} senders, {workers} workers in the process) answered 202 in {:.2} s: {:.0}/s, latency p50 {:.1} ms, p99 {:.1} ms",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        percentile(&mut latencies, 50.0) as f64 / 1000.0,
        percentile(&mut latencies, 99.0) as f64 / 1000.0,
    );
    if workers == 0 {
        println!("{rate} (an API-only process: workers elsewhere run them)");
        return;
    }
    let mut to_start = Vec::new();
    for (id, _, _) in hooks.iter() {
        to_start.extend(
            bench
                .wait_succeeded(id, per_tenant, Duration::from_secs(600))
                .await,
        );
    }
    println!(
        "{rate}; received-to-started p50 {} ms, p95 {} ms (under that load)",
        percentile(&mut to_start, 50.0),
        percentile(&mut to_start, 95.0),
    );
}

/// `triggers` every-second cron triggers for `seconds`: how late each tick's run was
/// created, and started, after its scheduled time.
async fn cron_lateness(label: &str, url: Option<String>, triggers: usize, seconds: u64) {
    use sqlx::Row as _;
    let bench = start(url, 8).await;
    let (admin, workflow) = bench.tenant("cron").await;
    let mut ids = Vec::new();
    for _ in 0..triggers {
        let (status, trigger) = bench
            .post(
                &format!("/v1/workflows/{workflow}/triggers"),
                &admin,
                json!({"kind": "cron", "expression": "* * * * * *"}),
            )
            .await;
        assert_eq!(status, 201, "{trigger}");
        ids.push(trigger["id"].as_str().expect("id").to_owned());
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    for id in &ids {
        let (status, body) = bench
            .post(&format!("/v1/triggers/{id}/pause"), &admin, json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rows = sqlx::query(
        "SELECT r.created_at, r.started_at, t.scheduled_at FROM runs r \
         JOIN trigger_ticks t ON t.run_id = r.id WHERE r.tenant_id = 'cron' \
           AND r.started_at IS NOT NULL",
    )
    .fetch_all(bench.store().pool())
    .await
    .expect("runs");
    let mut created: Vec<i64> = rows
        .iter()
        .map(|r| r.get::<i64, _>("created_at") - r.get::<i64, _>("scheduled_at"))
        .collect();
    let mut started: Vec<i64> = rows
        .iter()
        .map(|r| r.get::<i64, _>("started_at") - r.get::<i64, _>("scheduled_at"))
        .collect();
    println!(
        "{label}: cron, {triggers} every-second triggers for {seconds} s, {} ticks: run created p50 {} ms, p99 {} ms, max {} ms after the tick; started p50 {} ms, p99 {} ms",
        rows.len(),
        percentile(&mut created, 50.0),
        percentile(&mut created, 99.0),
        percentile(&mut created, 100.0),
        percentile(&mut started, 50.0),
        percentile(&mut started, 99.0),
    );
}

/// A fresh database for a scenario: SQLite in the service's temp dir (`None`), or a new
/// PostgreSQL database, remembered in `made` to be dropped at the end.
async fn fresh(pg: bool, made: &mut Vec<String>) -> Option<String> {
    if !pg {
        return None;
    }
    let url = postgres_database().await;
    made.extend(url.clone());
    url
}

async fn drop_databases(urls: &[String]) {
    use sqlx::Connection as _;
    let admin = std::env::var("AIRLOCK_TEST_PG_URL").unwrap_or_else(|_| PG_ADMIN.to_owned());
    let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await else {
        return;
    };
    for url in urls {
        if let Some((_, name)) = url.rsplit_once('/') {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // Scenario names given as arguments (`idle`, `throughput`, `fairness`, `webhook`, `cron`,
    // `crash`) run only those.
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let only = |scenario: &str| named.is_empty() || named.iter().any(|n| n == scenario);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (idle, tenants, per_tenant, backlog, crashed) = if quick {
            (50, 4, 100, 1_000, 4)
        } else {
            (300, 8, 400, 10_000, 20)
        };
        let (hook_tenants, hook_senders, cron_seconds) =
            if quick { (4, 16, 3) } else { (20, 32, 10) };
        // `AIRLOCK_HOOK_SENDERS`: concurrent webhook senders (default 32).
        let hook_senders = std::env::var("AIRLOCK_HOOK_SENDERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(hook_senders);
        println!(
            "durable runs, 2 worker threads, release build{}",
            if quick { ", --quick" } else { "" }
        );
        // `AIRLOCK_DRAIN_RUNS`, `AIRLOCK_DRAIN_WORKERS`: the backlog drained and the workers
        // per process (defaults 20,000 and 64).
        let env = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let (drain_runs, drain_workers) = (
            env("AIRLOCK_DRAIN_RUNS", 20_000),
            env("AIRLOCK_DRAIN_WORKERS", 64),
        );
        let mut made = Vec::new();
        let probe = postgres_database().await;
        let postgres = probe.is_some();
        made.extend(probe);
        // `AIRLOCK_BENCH_DATABASES`: `sqlite`, `postgres` or both (the default).
        let databases = std::env::var("AIRLOCK_BENCH_DATABASES").unwrap_or_default();
        for (label, pg) in [("sqlite", false), ("postgres", true)] {
            if (pg && !postgres) || !(databases.is_empty() || databases.contains(label)) {
                continue;
            }
            if only("idle") {
                idle_enqueue_to_start(label, fresh(pg, &mut made).await, idle).await;
            }
            if only("throughput") {
                throughput(label, fresh(pg, &mut made).await, tenants, per_tenant).await;
            }
            if only("drain") {
                let processes = if pg { 2 } else { 1 };
                let (n, workers) = if quick {
                    (2_000, 64)
                } else {
                    (drain_runs, drain_workers)
                };
                drain(
                    label,
                    fresh(pg, &mut made).await,
                    8,
                    n / 8,
                    processes,
                    workers,
                )
                .await;
                drain(label, fresh(pg, &mut made).await, 1, n, processes, workers).await;
            }
            if only("for_each") {
                let n = if quick { 200 } else { 1_000 };
                let baseline = fresh(pg, &mut made).await;
                for_each(label, baseline, fresh(pg, &mut made).await, n).await;
            }
            if only("fairness") {
                fairness(label, fresh(pg, &mut made).await, backlog, 20).await;
            }
            if only("webhook") {
                // With the default workers running the runs in the same process
                // (`AIRLOCK_HOOK_WORKERS` to change), then on an API-only process
                // (`--workers 0`), the shape of an ingest tier.
                let in_process = env(
                    "AIRLOCK_HOOK_WORKERS",
                    airlock::runs::WorkerOptions::default().workers,
                );
                for workers in [in_process, 0] {
                    webhook_ingest(
                        label,
                        fresh(pg, &mut made).await,
                        hook_tenants,
                        per_tenant,
                        hook_senders,
                        50,
                        workers,
                    )
                    .await;
                }
            }
            if only("cron") {
                cron_lateness(label, fresh(pg, &mut made).await, 10, cron_seconds).await;
            }
            if !quick && only("crash") {
                crash_to_resume(label, fresh(pg, &mut made).await, crashed).await;
            }
        }
        drop_databases(&made).await;
    });
}
