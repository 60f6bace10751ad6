//! `cargo bench -p airlock --bench api`: the service under load on loopback. Starts the
//! release `airlock serve` as its own process (SQLite in a temporary data directory, or a
//! fresh PostgreSQL database when `AIRLOCK_BENCH_DATABASE_URL` names a server), provisions
//! tenants through the API, then drives each phase with the in-repo closed-loop generator
//! (`load.rs`) and prints throughput and latency percentiles next to the issue's targets.
//!
//! Phases: `healthz` (the HTTP stack and the generator, no auth, no database: the floor),
//! `invoke` (sync invoke of the transform connector), `read` (one connection), `write`
//! (create a connection with an encrypted API key); then fairness: `quiet` (the invoke
//! phase's tenants on a few connections, alone) and `quiet+flood` (the same while one more
//! tenant floods the pool with slow invocations over many connections), whose p99s are
//! compared.
//!
//! Knobs (environment): `AIRLOCK_LOAD_SECONDS` per phase (default 10), `AIRLOCK_LOAD_CONNECTIONS`
//! (default 32), `AIRLOCK_LOAD_TENANTS` (default: at least 320, more for longer phases; each
//! tenant may run 500 invocations an hour, the cap, so the invoke phase spreads over enough
//! tenants never to hit it),
//! `AIRLOCK_BENCH_DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`),
//! `AIRLOCK_BENCH_SERVER` (another `airlock` binary to serve, to compare two builds),
//! `AIRLOCK_FAIR_SECONDS` per fairness phase (default 5), `AIRLOCK_QUIET_CONNECTIONS`
//! (default 4), `AIRLOCK_FLOOD_CONNECTIONS` (default 100), `AIRLOCK_FLOOD_SLEEP_MS` (how long
//! each flooding invocation sleeps, default 2,000).

mod load;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock::api::{JwtKeys, Role};
use airlock::secrets::Secret;
use bytes::Bytes;
use futures::StreamExt;
use hyper::Method;
use load::{Measured, Scenario, Shot};
use serde_json::{Value, json};

const RUNS_PER_HOUR_CAP: u64 = 500;

/// How long the flood runs before the quiet tenants are measured beside it: long enough for
/// every flooding connection to be running or queued.
const FLOOD_RAMP: Duration = Duration::from_secs(1);

struct Knobs {
    seconds: u64,
    connections: usize,
    tenants: usize,
    database_url: Option<String>,
    fair_seconds: u64,
    quiet_connections: usize,
    flood_connections: usize,
    flood_sleep_ms: u64,
}

impl Knobs {
    fn from_env() -> Knobs {
        let number = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let seconds = number("AIRLOCK_LOAD_SECONDS", 10);
        let fair_seconds = number("AIRLOCK_FAIR_SECONDS", 5);
        Knobs {
            seconds,
            connections: number("AIRLOCK_LOAD_CONNECTIONS", 32) as usize,
            tenants: number(
                "AIRLOCK_LOAD_TENANTS",
                default_tenants(seconds + 2 * fair_seconds + FLOOD_RAMP.as_secs()),
            ) as usize,
            database_url: std::env::var("AIRLOCK_BENCH_DATABASE_URL").ok(),
            fair_seconds,
            quiet_connections: number("AIRLOCK_QUIET_CONNECTIONS", 4) as usize,
            flood_connections: number("AIRLOCK_FLOOD_CONNECTIONS", 100) as usize,
            flood_sleep_ms: number("AIRLOCK_FLOOD_SLEEP_MS", 2_000),
        }
    }
}

/// Enough tenants that the warm-up and the invoke phase, at up to 15,000 invocations a
/// second, never meet a tenant's hourly cap: a refusal would count as a failure, not speed.
fn default_tenants(seconds: u64) -> u64 {
    ((seconds + 1) * 15_000)
        .div_ceil(RUNS_PER_HOUR_CAP)
        .max(320)
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (`cargo test --benches`) is a smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let mut knobs = Knobs::from_env();
    if smoke {
        knobs.seconds = 1;
        knobs.fair_seconds = 1;
        knobs.flood_connections = knobs.flood_connections.min(8);
        knobs.flood_sleep_ms = knobs.flood_sleep_ms.min(200);
        knobs.tenants = knobs.tenants.min(8);
    }
    // One thread for the generator: the server gets the rest of the machine.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(bench(&knobs)),
        Err(error) => Err(error.to_string()),
    };
    match result {
        Ok(report) => print!("{report}"),
        Err(error) => {
            eprintln!("api benchmark failed: {error}");
            std::process::exit(1);
        }
    }
}

async fn bench(knobs: &Knobs) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let database = Database::create(knobs.database_url.as_deref(), dir.path()).await?;
    let jwt_file = dir.path().join("jwt.key");
    let jwt_secret = format!("{:032x}{:032x}", rand_u128(), rand_u128());
    std::fs::write(&jwt_file, &jwt_secret).map_err(|e| e.to_string())?;
    let server = Server::start(dir.path(), &jwt_file, &database.url)?;
    let jwt = JwtKeys::new(&Secret::new(jwt_secret));
    let result = async {
        let setup = Instant::now();
        let fleet = provision(server.addr, &jwt, knobs.tenants).await?;
        let noisy = provision_noisy(server.addr, &jwt, knobs.flood_sleep_ms).await?;
        let setup = setup.elapsed();
        let seconds = Duration::from_secs(knobs.seconds);
        let phases: [(&str, Arc<dyn Scenario>); 4] = [
            ("healthz", Arc::new(Healthz)),
            ("invoke", Arc::new(Invoke(fleet.clone()))),
            ("read", Arc::new(Read(fleet.clone()))),
            ("write", Arc::new(Write(fleet.clone()))),
        ];
        // Warm the instance cache and the database's pages before anything is timed.
        load::run(
            server.addr,
            Arc::new(Invoke(fleet.clone())),
            knobs.connections,
            Duration::from_secs(1),
        )
        .await;
        let mut results = Vec::new();
        for (name, scenario) in phases {
            let measured = load::run(server.addr, scenario, knobs.connections, seconds).await;
            results.push((name, measured));
        }
        let fairness = fairness(server.addr, knobs, &fleet, noisy).await;
        let mut out = report(knobs, &database.label, setup, &results);
        out.push_str(&fairness);
        Ok::<_, String>(out)
    }
    .await;
    drop(server);
    database.drop().await;
    result
}

/// Tenant `i`'s token, its connection of the transform connector, for every tenant.
#[derive(Clone)]
struct Fleet {
    tenants: Arc<Vec<TenantFixture>>,
}

struct TenantFixture {
    token: Arc<str>,
    connection: String,
}

impl Fleet {
    fn tenant(&self, n: u64) -> &TenantFixture {
        &self.tenants[(n % self.tenants.len() as u64) as usize]
    }
}

async fn provision(addr: SocketAddr, jwt: &JwtKeys, tenants: usize) -> Result<Fleet, String> {
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let operator = jwt
        .issue("bench", None, Role::Operator, Duration::from_secs(3600))
        .map_err(|e| e.to_string())?;
    let transform = std::fs::read(airlock_test_artifacts::CONNECTOR_TRANSFORM)
        .map_err(|e| format!("the transform connector: {e}"))?;
    let github = std::fs::read(airlock_test_artifacts::CONNECTOR_GITHUB)
        .map_err(|e| format!("the github connector: {e}"))?;
    let one = |i: usize| {
        let (client, base, operator) = (client.clone(), base.clone(), operator.clone());
        let (transform, github) = (transform.clone(), github.clone());
        async move {
            let id = format!("bench-{i}");
            let admin = jwt
                .issue("bench", Some(&id), Role::Admin, Duration::from_secs(3600))
                .map_err(|e| e.to_string())?;
            let call = |method: reqwest::Method, path: &str, token: &str| {
                client
                    .request(method, format!("{base}{path}"))
                    .bearer_auth(token)
            };
            expect(
                call(reqwest::Method::POST, "/v1/tenants", &operator)
                    .header("content-type", "application/json")
                    .body(json!({"id": id, "name": id}).to_string()),
                201,
            )
            .await?;
            let limits = format!("/v1/tenants/{id}/limits");
            expect(
                call(reqwest::Method::PUT, &limits, &operator)
                    .header("content-type", "application/json")
                    .body(json!({"runs_per_hour": RUNS_PER_HOUR_CAP}).to_string()),
                200,
            )
            .await?;
            for bytes in [transform, github] {
                expect(
                    call(reqwest::Method::POST, "/v1/connectors", &admin)
                        .header("content-type", "application/wasm")
                        .body(bytes),
                    201,
                )
                .await?;
            }
            let connection = expect(
                call(reqwest::Method::POST, "/v1/connections", &admin)
                    .header("content-type", "application/json")
                    .body(json!({"connector": "transform", "name": "main"}).to_string()),
                201,
            )
            .await?;
            let connection = connection["id"]
                .as_str()
                .ok_or("a connection without an id")?
                .to_owned();
            Ok::<_, String>(TenantFixture {
                token: admin.into(),
                connection,
            })
        }
    };
    let fixtures: Vec<Result<TenantFixture, String>> = futures::stream::iter(0..tenants)
        .map(one)
        .buffer_unordered(4)
        .collect()
        .await;
    Ok(Fleet {
        tenants: Arc::new(fixtures.into_iter().collect::<Result<_, _>>()?),
    })
}

/// The flooding tenant: its own hostile connector, whose `sleep` action holds a slot without
/// using CPU (a connector waiting on a slow upstream). Its limits stay the defaults, but for
/// the runs per hour, at the cap.
async fn provision_noisy(addr: SocketAddr, jwt: &JwtKeys, sleep_ms: u64) -> Result<Flood, String> {
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let id = "bench-noisy";
    let operator = jwt
        .issue("bench", None, Role::Operator, Duration::from_secs(3600))
        .map_err(|e| e.to_string())?;
    let admin = jwt
        .issue("bench", Some(id), Role::Admin, Duration::from_secs(3600))
        .map_err(|e| e.to_string())?;
    let hostile = std::fs::read(airlock_test_artifacts::HOSTILE)
        .map_err(|e| format!("the hostile guest: {e}"))?;
    expect(
        client
            .post(format!("{base}/v1/tenants"))
            .bearer_auth(&operator)
            .header("content-type", "application/json")
            .body(json!({"id": id, "name": id}).to_string()),
        201,
    )
    .await?;
    expect(
        client
            .put(format!("{base}/v1/tenants/{id}/limits"))
            .bearer_auth(&operator)
            .header("content-type", "application/json")
            .body(json!({"runs_per_hour": RUNS_PER_HOUR_CAP}).to_string()),
        200,
    )
    .await?;
    expect(
        client
            .post(format!("{base}/v1/connectors"))
            .bearer_auth(&admin)
            .header("content-type", "application/wasm")
            .body(hostile),
        201,
    )
    .await?;
    Ok(Flood {
        token: admin.into(),
        body: Bytes::from(json!({"input": {"ms": sleep_ms}}).to_string()),
    })
}

/// The quiet tenants alone, then beside one tenant flooding the pool; their p99s compared.
async fn fairness(addr: SocketAddr, knobs: &Knobs, fleet: &Fleet, flood: Flood) -> String {
    let seconds = Duration::from_secs(knobs.fair_seconds);
    let quiet = || Arc::new(Invoke(fleet.clone())) as Arc<dyn Scenario>;
    let idle = load::run(addr, quiet(), knobs.quiet_connections, seconds).await;
    let flooding = tokio::spawn(load::run(
        addr,
        Arc::new(flood),
        knobs.flood_connections,
        FLOOD_RAMP + seconds,
    ));
    tokio::time::sleep(FLOOD_RAMP).await;
    let beside = load::run(addr, quiet(), knobs.quiet_connections, seconds).await;
    let flood = flooding.await.ok();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "fairness: quiet tenants on {} connections, {} s each; flood: one tenant, {} connections \
         of `sleep` {} ms",
        knobs.quiet_connections, knobs.fair_seconds, knobs.flood_connections, knobs.flood_sleep_ms
    );
    phase_table(&mut out, &[("quiet", &idle), ("quiet+flood", &beside)]);
    if let Some(flood) = flood {
        let refused: Vec<String> = flood
            .failures
            .iter()
            .map(|(status, count, _)| format!("{count} x {status}"))
            .collect();
        let _ = writeln!(
            out,
            "flood: {} invocations ran (p50 {:.0} ms, max {:.0} ms), refused: {}",
            flood.latencies.len(),
            ms(flood.percentile(50.0)),
            ms(flood.latencies.last().copied().unwrap_or_default()),
            if refused.is_empty() {
                "none".to_owned()
            } else {
                refused.join(", ")
            }
        );
    }
    let ratio = ms(beside.percentile(99.0)) / ms(idle.percentile(99.0)).max(0.001);
    let ok = ratio <= 2.0 && beside.failed() == 0;
    let _ = writeln!(
        out,
        "target quiet p99 under flood <= 2x its idle p99: {} ({ratio:.2}x)",
        if ok { "met" } else { "MISSED" }
    );
    out
}

async fn expect(request: reqwest::RequestBuilder, status: u16) -> Result<Value, String> {
    let response = request.send().await.map_err(|e| e.to_string())?;
    let got = response.status().as_u16();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if got != status {
        return Err(format!("expected {status}, got {got}: {text}"));
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

struct Healthz;

impl Scenario for Healthz {
    fn shot(&self, _: u64) -> Shot {
        Shot {
            method: Method::GET,
            path: "/healthz".into(),
            token: None,
            body: None,
        }
    }

    fn accept(&self, status: u16, _: &[u8]) -> bool {
        status == 200
    }
}

/// Sync invoke of the transform connector's `map` action, spread over the tenants.
struct Invoke(Fleet);

impl Scenario for Invoke {
    fn shot(&self, n: u64) -> Shot {
        let tenant = self.0.tenant(n);
        let body = json!({
            "connection": tenant.connection,
            "input": {
                "data": {"user": {"login": "octocat", "id": n}},
                "mapping": {"who": "/user/login", "id": "/user/id"}
            }
        });
        Shot {
            method: Method::POST,
            path: "/v1/connectors/transform/actions/map/invoke".into(),
            token: Some(tenant.token.clone()),
            body: Some(Bytes::from(body.to_string())),
        }
    }

    fn accept(&self, status: u16, body: &[u8]) -> bool {
        status == 200 && memchr::memmem::find(body, br#""ok":true"#).is_some()
    }
}

/// One tenant's slow invocations (the hostile guest's `sleep`), all on its one token. A
/// refused one (503 overloaded, 429 quota) waits a second, as its `Retry-After` says.
struct Flood {
    token: Arc<str>,
    body: Bytes,
}

impl Scenario for Flood {
    fn shot(&self, _: u64) -> Shot {
        Shot {
            method: Method::POST,
            path: "/v1/connectors/hostile/actions/sleep/invoke".into(),
            token: Some(self.token.clone()),
            body: Some(self.body.clone()),
        }
    }

    fn accept(&self, status: u16, _: &[u8]) -> bool {
        status == 200
    }

    fn backoff(&self, _: u16) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }
}

/// `GET /v1/connections/{id}`: one row, its credential masked.
struct Read(Fleet);

impl Scenario for Read {
    fn shot(&self, n: u64) -> Shot {
        let tenant = self.0.tenant(n);
        Shot {
            method: Method::GET,
            path: format!("/v1/connections/{}", tenant.connection),
            token: Some(tenant.token.clone()),
            body: None,
        }
    }

    fn accept(&self, status: u16, _: &[u8]) -> bool {
        status == 200
    }
}

/// `POST /v1/connections`: a new GitHub connection, its API key sealed under the tenant and
/// connection ids.
struct Write(Fleet);

impl Scenario for Write {
    fn shot(&self, n: u64) -> Shot {
        let tenant = self.0.tenant(n);
        let body = json!({
            "connector": "github",
            "name": format!("write-{n}"),
            "credential": {"api_key": format!("ghp_bench{n:030}")}
        });
        Shot {
            method: Method::POST,
            path: "/v1/connections".into(),
            token: Some(tenant.token.clone()),
            body: Some(Bytes::from(body.to_string())),
        }
    }

    fn accept(&self, status: u16, _: &[u8]) -> bool {
        status == 201
    }
}

fn report(knobs: &Knobs, database: &str, setup: Duration, results: &[(&str, Measured)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "airlock API load: {database}, {} connections, {} s per phase, {} tenants \
         (provisioned in {:.1} s), generator on one thread{}",
        knobs.connections,
        knobs.seconds,
        knobs.tenants,
        setup.as_secs_f64(),
        std::env::var("AIRLOCK_BENCH_SERVER")
            .map(|s| format!(", server {s}"))
            .unwrap_or_default()
    );
    let rows: Vec<(&str, &Measured)> = results.iter().map(|(name, m)| (*name, m)).collect();
    phase_table(&mut out, &rows);
    let find = |phase: &str| results.iter().find(|(n, _)| *n == phase).map(|(_, m)| m);
    if let (Some(health), Some(invoke)) = (find("healthz"), find("invoke")) {
        let _ = writeln!(
            out,
            "invoke throughput is {:.2}x the healthz floor's",
            invoke.throughput() / health.throughput().max(1.0)
        );
    }
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    if let Some(m) = find("invoke") {
        let ok = m.throughput() >= 8000.0 && ms(m.percentile(99.0)) <= 10.0 && m.failed() == 0;
        let _ = writeln!(
            out,
            "target invoke >= 8000/s with p99 <= 10 ms: {}",
            verdict(ok)
        );
    }
    if let Some(m) = find("read") {
        let ok = ms(m.percentile(95.0)) <= 30.0 && m.failed() == 0;
        let _ = writeln!(out, "target read p95 <= 30 ms: {}", verdict(ok));
    }
    if let Some(m) = find("write") {
        let ok = ms(m.percentile(95.0)) <= 50.0 && m.failed() == 0;
        let _ = writeln!(out, "target write p95 <= 50 ms: {}", verdict(ok));
    }
    out
}

/// The server under test, as a child process; killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(dir: &Path, jwt_file: &Path, database_url: &str) -> Result<Server, String> {
        let log_path = dir.join("server.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let binary = std::env::var_os("AIRLOCK_BENCH_SERVER")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_airlock").into());
        let child = Command::new(binary)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--database-url", database_url])
            .arg("--jwt-secret-file")
            .arg(jwt_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start airlock serve: {e}"))?;
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(addr) = text
                .split("serving http://")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|addr| addr.parse().ok())
            {
                server.addr = addr;
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("airlock serve exited ({status}):\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("airlock serve did not start within 60 s".into())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SQLite in the temporary directory, or a fresh database on the PostgreSQL server named by
/// `server_url`, dropped afterwards.
struct Database {
    url: String,
    label: String,
    postgres: Option<(String, String)>,
}

impl Database {
    async fn create(server_url: Option<&str>, dir: &Path) -> Result<Database, String> {
        let Some(server_url) = server_url else {
            return Ok(Database {
                url: format!("sqlite://{}?mode=rwc", dir.join("airlock.db").display()),
                label: "SQLite".into(),
                postgres: None,
            });
        };
        let name = format!("airlock_bench_{}", std::process::id());
        let admin = admin_pool(server_url).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .map_err(|e| e.to_string())?;
        let base = server_url
            .rsplit_once('/')
            .map_or(server_url, |(base, _)| base);
        Ok(Database {
            url: format!("{base}/{name}"),
            label: "PostgreSQL".into(),
            postgres: Some((server_url.to_owned(), name)),
        })
    }

    async fn drop(self) {
        if let Some((server_url, name)) = self.postgres
            && let Ok(admin) = admin_pool(&server_url).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&admin)
                .await;
        }
    }
}

async fn admin_pool(url: &str) -> Result<sqlx::AnyPool, String> {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One line per phase: answers, rate, percentiles, failures (with a sample of each).
fn phase_table(out: &mut String, rows: &[(&str, &Measured)]) {
    let width = rows
        .iter()
        .map(|(name, _)| name.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let _ = writeln!(
        out,
        "{:<width$} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "phase", "answers", "per s", "p50 ms", "p95 ms", "p99 ms", "max ms", "failed"
    );
    for (name, m) in rows {
        let _ = writeln!(
            out,
            "{:<width$} {:>9} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7}",
            name,
            m.latencies.len(),
            m.throughput(),
            ms(m.percentile(50.0)),
            ms(m.percentile(95.0)),
            ms(m.percentile(99.0)),
            ms(m.latencies.last().copied().unwrap_or_default()),
            m.failed()
        );
        for (status, count, body) in &m.failures {
            let _ = writeln!(out, "  {count} answers with status {status}, e.g. {body}");
        }
    }
}

fn rand_u128() -> u128 {
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    u128::from_le_bytes(bytes)
}
