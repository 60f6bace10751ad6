//! A real `airlock serve` in-process on 127.0.0.1:0, over its own database: SQLite in a temp
//! dir, or a fresh PostgreSQL database (`airlock_test_<random>`) dropped afterwards. When
//! PostgreSQL is not reachable, PostgreSQL tests fail, unless the person running them opted
//! out with `AIRLOCK_TEST_SKIP_POSTGRES=1`; then each skipped test prints a SKIPPED line with
//! the number skipped so far in this run.

use std::time::Duration;

use airlock::api::{AppState, JwtKeys, Role};
use airlock::config::Config;
use airlock::secrets::Secret;
use reqwest::Method;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Set to `1` to skip PostgreSQL tests when no server is reachable (they fail otherwise).
pub const SKIP_POSTGRES_ENV: &str = "AIRLOCK_TEST_SKIP_POSTGRES";

/// PostgreSQL tests skipped in this run (only ever non-zero with the opt-out set).
static SKIPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn pg_admin_url() -> String {
    std::env::var("AIRLOCK_TEST_PG_URL").unwrap_or_else(|_| PG_ADMIN_URL.to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Runs one scenario on SQLite and on PostgreSQL, as two tests `<name>::sqlite` and
/// `<name>::postgres`.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(crate::api_support::Db::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(crate::api_support::Db::Postgres).await
            }
        }
    )*};
}
pub(crate) use on_both_databases;

/// A PostgreSQL database made for one test, dropped when this is dropped.
pub struct PgDatabase {
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    /// `None` (after a loud message) when the server is unreachable and skipping was asked for.
    pub async fn create() -> Option<PgDatabase> {
        use sqlx::Connection as _;
        let admin = pg_admin_url();
        let connect =
            tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&admin)).await;
        let mut conn = match connect {
            Ok(Ok(conn)) => conn,
            failure => {
                let why = match failure {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                if std::env::var(SKIP_POSTGRES_ENV).is_ok_and(|v| v == "1") {
                    let skipped = SKIPPED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    eprintln!(
                        "\n==== SKIPPED ({skipped} PostgreSQL tests skipped so far): \
                         PostgreSQL not reachable at {admin} ({why}); {SKIP_POSTGRES_ENV}=1 ====\n"
                    );
                    return None;
                }
                panic!(
                    "PostgreSQL not reachable at {admin}: {why}. Start it (README), point \
                     AIRLOCK_TEST_PG_URL at one, or opt out with {SKIP_POSTGRES_ENV}=1"
                );
            }
        };
        let name = format!("airlock_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create database");
        let _ = conn.close().await;
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base)
            .to_owned();
        Some(PgDatabase {
            url: format!("{base}/{name}"),
            name,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; the database must go even when the test
        // panicked, so use a thread with its own small runtime.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                use sqlx::Connection as _;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// A started server and what tests need to talk to it.
pub struct TestServer {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub database_url: String,
    pub dir: tempfile::TempDir,
    /// The running service's state, for tests that reach inside (hold a slot, read a cache).
    pub state: AppState,
    client: reqwest::Client,
    jwt: JwtKeys,
    shutdown: CancellationToken,
    /// The server's task: it ends when a shutdown has drained.
    pub serving: tokio::task::JoinHandle<std::io::Result<()>>,
    _pg: Option<PgDatabase>,
}

/// A response: status, content type, and the body as JSON (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

pub enum Body<'a> {
    None,
    Json(Value),
    Raw(&'a str, Vec<u8>),
}

impl TestServer {
    /// `None` only for PostgreSQL when it is unreachable and skipping was asked for.
    pub async fn start(db: Db) -> Option<TestServer> {
        let mut options = crate::support::options();
        options.engine.pool_size = 8;
        TestServer::start_with(db, options).await
    }

    /// [`TestServer::start`] with the runtime options `options` (e.g. an outbound gate that
    /// reaches a local fake upstream).
    pub async fn start_with(
        db: Db,
        options: airlock::runtime::RuntimeOptions,
    ) -> Option<TestServer> {
        TestServer::start_configured(db, options, |_| {}).await
    }

    /// [`TestServer::start_with`] with `configure` applied to the server's `Config` first
    /// (e.g. the HTTP server's timeouts and limits).
    pub async fn start_configured(
        db: Db,
        options: airlock::runtime::RuntimeOptions,
        configure: impl FnOnce(&mut Config),
    ) -> Option<TestServer> {
        TestServer::start_clocked(db, options, configure, None).await
    }

    /// [`TestServer::start_configured`] with the pipeline on `clock` (a manual clock moves
    /// time for caches and back-offs without sleeping).
    pub async fn start_clocked(
        db: Db,
        options: airlock::runtime::RuntimeOptions,
        configure: impl FnOnce(&mut Config),
        clock: Option<std::sync::Arc<dyn airlock::pipeline::Clock>>,
    ) -> Option<TestServer> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::dev(dir.path().join("data"));
        configure(&mut config);
        let pg = match db {
            Db::Sqlite => None,
            Db::Postgres => Some(PgDatabase::create().await?),
        };
        if let Some(pg) = &pg {
            config.database_url = Some(pg.url.clone());
        }
        let mut service_options = config.service_options(options).expect("configuration");
        if let Some(clock) = clock {
            service_options.clock = clock;
        }
        let service = airlock::api::Service::start(service_options)
            .await
            .expect("service starts");
        let jwt = service.state.jwt().clone();
        let state = service.state.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(service.serve(listener, shutdown.clone()));
        let secret =
            std::fs::read_to_string(config.jwt_secret_path()).expect("dev mode wrote the JWT key");
        assert_eq!(
            JwtKeys::new(&Secret::new(secret.trim()))
                .verify(
                    &jwt.issue("t", None, Role::Operator, Duration::from_secs(60))
                        .expect("token")
                )
                .map(|p| p.role)
                .ok(),
            Some(Role::Operator),
            "the key file holds the server's key"
        );
        Some(TestServer {
            base: format!("http://{addr}"),
            addr,
            database_url: config.database_url(),
            dir,
            state,
            // No idle connections: a server that answers early (401, 413) may close its end,
            // and reusing that connection raced the close and failed a request now and then.
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("client"),
            jwt,
            shutdown,
            serving,
            _pg: pg,
        })
    }

    /// Starts the server's graceful shutdown (what SIGTERM does).
    pub fn shut_down(&self) {
        self.shutdown.cancel();
    }

    pub fn token(&self, tenant: Option<&str>, role: Role) -> String {
        self.jwt
            .issue("test", tenant, role, Duration::from_secs(600))
            .expect("token")
    }

    /// A token whose subject (the audit log's actor) is `subject`.
    pub fn token_for(&self, subject: &str, tenant: Option<&str>, role: Role) -> String {
        self.jwt
            .issue(subject, tenant, role, Duration::from_secs(600))
            .expect("token")
    }

    pub fn operator(&self) -> String {
        self.token(None, Role::Operator)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Body<'_>,
    ) -> Reply {
        let what = format!("{method} {path}");
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request = match body {
            Body::None => request,
            Body::Json(value) => request
                .header("content-type", "application/json")
                .body(value.to_string()),
            Body::Raw(content_type, bytes) => {
                request.header("content-type", content_type).body(bytes)
            }
        };
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {what}: {e:#}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            content_type,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), Body::None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(token), Body::Json(body))
            .await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(token), Body::Json(body))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(token), Body::Json(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.call(Method::DELETE, path, Some(token), Body::None)
            .await
    }

    /// Creates tenant `id` and returns an admin token for it.
    pub async fn tenant(&self, id: &str) -> String {
        let reply = self
            .post(
                "/v1/tenants",
                &self.operator(),
                serde_json::json!({"id": id, "name": id}),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        self.token(Some(id), Role::Admin)
    }

    pub async fn upload(&self, token: &str, path: &str) -> Reply {
        let bytes = std::fs::read(path).expect("guest built");
        self.call(
            Method::POST,
            "/v1/connectors",
            Some(token),
            Body::Raw("application/wasm", bytes),
        )
        .await
    }

    /// A direct connection to the server's database, for reading rows raw.
    pub async fn raw_db(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&self.database_url)
            .await
            .expect("raw db")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Asserts `reply` is a problem document with `status` and the problem type `slug`.
pub fn assert_problem(reply: &Reply, status: u16, slug: &str) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert!(
        reply.content_type.starts_with("application/problem+json"),
        "content type {:?}: {}",
        reply.content_type,
        reply.text
    );
    assert_eq!(
        reply.body["type"],
        Value::String(format!("https://airlock.dev/problems/{slug}")),
        "{}",
        reply.text
    );
    assert_eq!(reply.body["status"], Value::from(status));
    assert!(
        reply.body["title"].is_string() && reply.body["detail"].is_string(),
        "{}",
        reply.text
    );
}
