//! The canary: a connection holds a unique secret string; after every endpoint has been
//! exercised (the connection tested and its connector invoked against a careless upstream that
//! echoes the Authorization header back in its body and headers), the string appears in no
//! response body or header, no log line captured at trace level, no database cell or file of
//! the data directory, and nothing the guest saw (its outputs and logs). The upstream did
//! receive it: that is the positive control.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use airlock::api::Role;
use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use reqwest::Method;
use serde_json::json;
use sqlx::Row as _;

use crate::api_support::{Body, Db, Reply, TestServer, assert_problem, on_both_databases};
use crate::support::{Server, options_for_tls};

on_both_databases!(a_connection_secret_appears_in_no_response_log_row_or_guest_output);

/// Every tracing event (and `log` record) of the process at trace level, while a canary test
/// runs. The server runs in-process on the test's multi-threaded runtime, and the runtime and
/// the database drivers have threads of their own, so a thread-local default subscriber would
/// miss most of it: this is a global one, installed once, recording only while a canary test is
/// active. Lines of tests running alongside land here too; they cannot hold this test's canary.
struct Capture {
    lines: Arc<Mutex<Vec<u8>>>,
}

static CAPTURE: OnceLock<Capture> = OnceLock::new();
static CAPTURING: AtomicUsize = AtomicUsize::new(0);

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> &'static Capture {
    CAPTURE.get_or_init(|| {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_target(true)
            .with_thread_names(true)
            .with_writer(move || Sink(sink.clone()))
            .with_filter(tracing_subscriber::filter::filter_fn(|_| {
                CAPTURING.load(Ordering::SeqCst) > 0
            }));
        tracing_subscriber::registry()
            .with(layer)
            .try_init()
            .expect("the canary test installs the only global subscriber and log bridge");
        Capture { lines }
    })
}

/// Records while alive.
pub(crate) struct Recording;

impl Recording {
    pub(crate) fn start() -> Recording {
        capture();
        CAPTURING.fetch_add(1, Ordering::SeqCst);
        Recording
    }

    pub(crate) fn text(&self) -> String {
        let lines = capture().lines.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&lines).into_owned()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        CAPTURING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A careless GitHub: every answer echoes the Authorization header it received, in a header
/// and in the body, and every value received is kept for the positive control.
fn careless_github(received: Arc<Mutex<Vec<String>>>) -> Router {
    let echo = move |headers: HeaderMap| {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(auth.clone());
        auth
    };
    let issue = |auth: &str| {
        json!({
            "number": 1, "title": auth, "state": "open",
            "html_url": "https://github.com/o/r/issues/1",
            "user": {"login": auth}, "labels": [{"name": auth}],
        })
    };
    let (user, list, create) = (echo.clone(), echo.clone(), echo);
    Router::new()
        .route(
            "/user",
            get(move |headers: HeaderMap| {
                let auth = user(headers);
                async move {
                    (
                        [("x-echo-auth", auth.clone())],
                        axum::Json(json!({"login": auth})),
                    )
                }
            }),
        )
        .route(
            "/repos/{owner}/{repo}/issues",
            get(move |headers: HeaderMap| {
                let auth = list(headers);
                async move {
                    (
                        [("x-echo-auth", auth.clone())],
                        axum::Json(json!([issue(&auth)])),
                    )
                }
            })
            .post(move |headers: HeaderMap| {
                let auth = create(headers);
                async move {
                    (
                        axum::http::StatusCode::CREATED,
                        [("x-echo-auth", auth.clone())],
                        axum::Json(issue(&auth)),
                    )
                }
            }),
        )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn reply_text(label: &str, reply: &Reply) -> String {
    let headers: Vec<String> = reply
        .headers
        .iter()
        .map(|(name, value)| format!("{name}: {}", String::from_utf8_lossy(value.as_bytes())))
        .collect();
    format!(
        "== {label} {}\n{}\n{}\n",
        reply.status,
        headers.join("\n"),
        reply.text
    )
}

/// Every cell of every table, as text (blobs and bytea as hex too).
pub(crate) async fn every_cell(server: &TestServer, db: Db) -> (String, usize) {
    let pool = server.raw_db().await;
    let mut dump = String::new();
    let mut cells = 0;
    match db {
        Db::Sqlite => {
            let tables: Vec<String> =
                sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table'")
                    .fetch_all(&pool)
                    .await
                    .expect("tables")
                    .iter()
                    .map(|r| r.try_get::<String, _>("name").expect("name"))
                    .collect();
            assert!(tables.iter().any(|t| t == "connections"), "{tables:?}");
            for table in tables {
                let columns: Vec<String> =
                    sqlx::query(&format!("SELECT name FROM pragma_table_info('{table}')"))
                        .fetch_all(&pool)
                        .await
                        .expect("columns")
                        .iter()
                        .map(|r| r.try_get::<String, _>("name").expect("column"))
                        .collect();
                for column in columns {
                    // hex() renders text, blobs and numbers alike as the hex of their bytes.
                    let rows =
                        sqlx::query(&format!("SELECT hex(\"{column}\") AS h FROM \"{table}\""))
                            .fetch_all(&pool)
                            .await
                            .expect("cells");
                    for row in rows {
                        let h: Option<String> = row.try_get("h").expect("hex");
                        let h = h.unwrap_or_default().to_lowercase();
                        let bytes: Vec<u8> = (0..h.len() / 2)
                            .filter_map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok())
                            .collect();
                        dump.push_str(&format!(
                            "{table}.{column}: {h} {}\n",
                            String::from_utf8_lossy(&bytes)
                        ));
                        cells += 1;
                    }
                }
            }
        }
        Db::Postgres => {
            let tables: Vec<(String, String)> = sqlx::query(
                "SELECT table_schema::text AS s, table_name::text AS t FROM information_schema.tables \
                 WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')",
            )
            .fetch_all(&pool)
            .await
            .expect("tables")
            .iter()
            .map(|r| (r.try_get("s").expect("schema"), r.try_get("t").expect("table")))
            .collect();
            assert!(tables.iter().any(|(_, t)| t == "connections"), "{tables:?}");
            for (schema, table) in tables {
                // Every column of the row; bytea appears as `\x<hex>`.
                let rows = sqlx::query(&format!(
                    "SELECT row_to_json(t)::text AS j FROM \"{schema}\".\"{table}\" t"
                ))
                .fetch_all(&pool)
                .await
                .expect("rows");
                for row in rows {
                    let j: String = row.try_get("j").expect("row");
                    dump.push_str(&format!("{schema}.{table}: {j}\n"));
                    cells += 1;
                }
            }
        }
    }
    pool.close().await;
    (dump, cells)
}

/// Every file under `dir`, raw.
fn every_file(dir: &std::path::Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            every_file(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
}

async fn a_connection_secret_appears_in_no_response_log_row_or_guest_output(db: Db) {
    let recording = Recording::start();
    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let received = Arc::new(Mutex::new(Vec::new()));
    let upstream = Server::start_tls(careless_github(received.clone()), &["api.github.com"]).await;
    let mut options = options_for_tls(&upstream, &["api.github.com"]);
    options.engine.pool_size = 8;
    let Some(server) = TestServer::start_with(db, options).await else {
        return;
    };
    let operator = server.operator();
    let admin = server.tenant("acme").await;
    let editor = server.token(Some("acme"), Role::Editor);
    let viewer = server.token(Some("acme"), Role::Viewer);
    let mut seen = String::new();
    let mut record = |label: &str, reply: &Reply| seen.push_str(&reply_text(label, reply));

    let github = server
        .upload(&admin, airlock_test_artifacts::CONNECTOR_GITHUB)
        .await;
    assert_eq!(github.status, 201, "{}", github.text);
    record("upload", &github);
    let version = github.body["version"].as_str().expect("version").to_owned();

    // Refused creations that carry the canary answer without it.
    let wrong_field = server
        .post(
            "/v1/connections",
            &editor,
            json!({"connector": "github", "name": "gh", "credential": {"password": canary}}),
        )
        .await;
    assert_problem(&wrong_field, 422, "validation");
    record("wrong field", &wrong_field);
    let wrong_type = server
        .post(
            "/v1/connections",
            &editor,
            json!({"connector": "github", "name": "gh", "credential": {"api_key": [canary]}}),
        )
        .await;
    assert_problem(&wrong_type, 422, "validation");
    record("wrong type", &wrong_type);
    let by_viewer = server
        .post(
            "/v1/connections",
            &viewer,
            json!({"connector": "github", "name": "gh", "credential": {"api_key": canary}}),
        )
        .await;
    assert_problem(&by_viewer, 403, "forbidden");
    record("by viewer", &by_viewer);

    let connection_name = format!("gh-{}", uuid::Uuid::new_v4().simple());
    let created = server
        .post(
            "/v1/connections",
            &editor,
            json!({"connector": "github", "name": connection_name, "credential": {"api_key": canary}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    record("create", &created);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let again = server
        .post(
            "/v1/connections",
            &editor,
            json!({"connector": "github", "name": connection_name, "credential": {"api_key": canary}}),
        )
        .await;
    assert_problem(&again, 409, "conflict");
    record("same name", &again);

    // The guest runs with the credential: test-connection and both actions reach the
    // careless upstream, which echoes the header back.
    let tested = server
        .call(
            Method::POST,
            &format!("/v1/connections/{id}/test"),
            Some(&editor),
            Body::None,
        )
        .await;
    assert_eq!(tested.status, 200, "{}", tested.text);
    assert_eq!(tested.body["ok"], json!(true), "{}", tested.text);
    record("test", &tested);
    let listed = server
        .post(
            "/v1/connectors/github/actions/list_issues/invoke",
            &editor,
            json!({"connection": id, "input": {"owner": "o", "repo": "r", "state": "all"}}),
        )
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.body["ok"], json!(true), "{}", listed.text);
    // What the guest saw of the echo: the header, masked by the gate.
    assert!(
        listed.body["output"][0]["title"]
            .as_str()
            .is_some_and(|t| t.starts_with("Bearer ") && t.contains("***")),
        "{}",
        listed.text
    );
    record("list_issues", &listed);
    let opened = server
        .post(
            "/v1/connectors/github/actions/create_issue/invoke",
            &admin,
            json!({"connection": id, "version": version, "input": {"owner": "o", "repo": "r", "title": "t"}}),
        )
        .await;
    assert_eq!(opened.status, 200, "{}", opened.text);
    assert_eq!(opened.body["ok"], json!(true), "{}", opened.text);
    record("create_issue", &opened);
    let invalid = server
        .post(
            "/v1/connectors/github/actions/list_issues/invoke",
            &editor,
            json!({"connection": id, "input": {"owner": "../x", "repo": "r"}}),
        )
        .await;
    assert_problem(&invalid, 422, "validation");
    record("invalid input", &invalid);
    let unknown = server
        .post(
            "/v1/connectors/github/actions/nope/invoke",
            &editor,
            json!({"connection": id, "input": {}}),
        )
        .await;
    assert_problem(&unknown, 404, "not-found");
    record("unknown action", &unknown);

    // Every read, by every role that may make it.
    for (label, path, token) in [
        ("connections admin", "/v1/connections".to_owned(), &admin),
        ("connections viewer", "/v1/connections".to_owned(), &viewer),
        ("connection", format!("/v1/connections/{id}"), &admin),
        (
            "connection viewer",
            format!("/v1/connections/{id}"),
            &viewer,
        ),
        ("connectors", "/v1/connectors".to_owned(), &viewer),
        (
            "version",
            format!("/v1/connectors/github/versions/{version}"),
            &viewer,
        ),
        ("usage", "/v1/usage".to_owned(), &viewer),
        ("tenant", "/v1/tenants/acme".to_owned(), &viewer),
        ("limits", "/v1/tenants/acme/limits".to_owned(), &admin),
        ("tenants", "/v1/tenants".to_owned(), &operator),
        ("limits op", "/v1/tenants/acme/limits".to_owned(), &operator),
        ("tenant op", "/v1/tenants/acme".to_owned(), &operator),
    ] {
        let reply = server.get(&path, token).await;
        assert_eq!(reply.status, 200, "{label}: {}", reply.text);
        record(label, &reply);
    }
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        let reply = server.call(Method::GET, path, None, Body::None).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        record(path, &reply);
    }
    let put = server
        .put("/v1/tenants/acme/limits", &operator, json!({}))
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    record("put limits", &put);
    let deprecated = server
        .call(
            Method::POST,
            &format!("/v1/connectors/github/versions/{version}/deprecate"),
            Some(&editor),
            Body::None,
        )
        .await;
    assert_eq!(deprecated.status, 200, "{}", deprecated.text);
    record("deprecate", &deprecated);
    let named = server
        .post(
            "/v1/connectors/github/actions/list_issues/invoke",
            &editor,
            json!({"connection": id, "version": version, "input": {"owner": "o", "repo": "r"}}),
        )
        .await;
    assert_eq!(named.body["ok"], json!(true), "{}", named.text);
    record("named version", &named);

    // The positive control: the upstream got the secret, on every call.
    let received = received.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(received.len(), 4, "{received:?}");
    assert!(
        received
            .iter()
            .all(|auth| *auth == format!("Bearer {canary}")),
        "{received:?}"
    );
    assert_eq!(upstream.hits(), 4);

    // Every cell of the database, before and after the connection goes.
    let (cells, count) = every_cell(&server, db).await;
    assert!(
        cells.contains(&connection_name) && cells.contains(&id),
        "the raw read misses the connection row"
    );
    for needle in [canary.clone(), hex(canary.as_bytes())] {
        assert!(
            !cells.to_lowercase().contains(&needle),
            "plaintext secret in the database: {}",
            cells
                .lines()
                .filter(|l| l.to_lowercase().contains(&needle))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let deleted = server
        .call(
            Method::DELETE,
            &format!("/v1/connections/{id}"),
            Some(&editor),
            Body::None,
        )
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    record("delete", &deleted);
    let (after, _) = every_cell(&server, db).await;
    assert!(!after.contains(&canary));

    // Every file of the data directory (the SQLite database, its WAL, the key files).
    let mut files = Vec::new();
    every_file(server.dir.path(), &mut files);
    if db == Db::Sqlite {
        assert!(
            files
                .iter()
                .any(|(p, b)| p.ends_with("airlock.db") && !b.is_empty()),
            "{:?}",
            files.iter().map(|(p, _)| p).collect::<Vec<_>>()
        );
    }
    for (path, bytes) in &files {
        assert!(
            !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "plaintext secret in {path}"
        );
    }

    // Every response, headers and bodies, guest outputs and logs included.
    assert!(seen.contains("Bearer ***"), "the echo reached the guest");
    assert!(
        !seen.contains(&canary),
        "the secret in a response: {}",
        seen.lines()
            .filter(|l| l.contains(&canary))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Every log line at trace level. The capture works: the server's own start-up line and
    // the database driver's statements are there.
    let logs = recording.text();
    drop(recording);
    assert!(
        logs.contains("dev mode: generated a new key file"),
        "the capture misses the server's lines"
    );
    assert!(
        logs.contains("sqlx::query"),
        "the capture misses trace-level dependency lines"
    );
    assert!(
        !logs.contains(&canary),
        "the secret in a log line: {}",
        logs.lines()
            .filter(|l| l.contains(&canary))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "api_canary ({db:?}): {} bytes of responses, {count} database cells, {} files, {} bytes of logs",
        seen.len(),
        files.len(),
        logs.len()
    );
}
