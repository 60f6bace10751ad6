//! The generic `http` connector with a credential: each connection lists the hosts its key
//! is for (`credential_hosts`) and how it is sent (`auth_header`, `auth_prefix`); the gate
//! attaches it there and nowhere else, redirects included. Both databases.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use crate::api_support::{Db, TestServer, assert_problem, on_both_databases};
use crate::support::{Server, options_for_tls};

on_both_databases!(
    the_key_goes_only_to_the_connections_hosts_as_the_connection_says,
    a_credential_without_hosts_or_with_a_bad_header_is_refused,
);

const API: &str = "api.crm.test";
const OTHER_API: &str = "eu.crm.test";
const EVIL: &str = "evil.test";

type Seen = Arc<Mutex<Vec<String>>>;

/// Records each request's headers (as `name: value` lines) and echoes them back; `/hop`
/// redirects to evil.test.
fn recorder(seen: Seen) -> Router {
    let record = move |headers: HeaderMap| {
        let lines: Vec<String> = headers
            .iter()
            .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("?")))
            .collect();
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(lines.join("\n"));
        lines
    };
    let echo = record.clone();
    Router::new()
        .route(
            "/hop",
            get(move |headers: HeaderMap| {
                let _ = record(headers);
                async {
                    (
                        StatusCode::FOUND,
                        [(header::LOCATION, format!("https://{EVIL}/landed"))],
                    )
                        .into_response()
                }
            }),
        )
        .fallback(move |headers: HeaderMap| {
            let lines = echo(headers);
            async move { axum::Json(json!({"headers": lines})) }
        })
}

fn seen_text(seen: &Seen) -> String {
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .join("\n---\n")
}

/// A server with tenant `acme` holding the `http` connector; `api.crm.test`, `eu.crm.test`
/// and `evil.test` resolve to two recording upstreams.
async fn server(db: Db, api: &Server, evil: &Server) -> Option<(TestServer, String)> {
    let mut options = options_for_tls(api, &[API, OTHER_API]);
    options
        .outbound
        .resolve_overrides
        .insert(EVIL.into(), vec![evil.addr]);
    options
        .outbound
        .extra_root_certificates
        .extend(evil.ca_pem.iter().cloned());
    options.engine.pool_size = 4;
    let server = TestServer::start_with(db, options).await?;
    let admin = server.tenant("acme").await;
    let uploaded = server
        .upload(&admin, airlock_test_artifacts::CONNECTOR_HTTP)
        .await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    Some((server, admin))
}

async fn connection(server: &TestServer, token: &str, name: &str, body: Value) -> String {
    let mut body = body;
    body["connector"] = json!("http");
    body["name"] = json!(name);
    let created = server.post("/v1/connections", token, body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    created.body["id"].as_str().expect("id").to_owned()
}

async fn request(
    server: &TestServer,
    token: &str,
    connection: Option<&str>,
    input: Value,
) -> Value {
    let mut body = json!({"input": input});
    if let Some(connection) = connection {
        body["connection"] = json!(connection);
    }
    let reply = server
        .post("/v1/connectors/http/actions/request/invoke", token, body)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body
}

async fn the_key_goes_only_to_the_connections_hosts_as_the_connection_says(db: Db) {
    let seen_api: Seen = Arc::default();
    let seen_evil: Seen = Arc::default();
    let api = Server::start_tls(recorder(seen_api.clone()), &[API, OTHER_API]).await;
    let evil = Server::start_tls(recorder(seen_evil.clone()), &[EVIL]).await;
    let Some((server, admin)) = server(db, &api, &evil).await else {
        return;
    };
    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let mut answers = String::new();

    // An X-Api-Key API: the header and an empty prefix from the connection's config.
    let crm = connection(
        &server,
        &admin,
        "crm",
        json!({"credential": {"api_key": canary},
            "config": {"credential_hosts": [API], "auth_header": "X-Api-Key", "auth_prefix": ""}}),
    )
    .await;
    let reply = request(
        &server,
        &admin,
        Some(&crm),
        // The guest's own value for the credential's header is replaced, not sent beside it.
        json!({"url": format!("https://{API}/contacts"), "headers": {"x-api-key": "guest-set"}}),
    )
    .await;
    answers.push_str(&reply.to_string());
    assert_eq!(reply["ok"], json!(true), "{reply}");
    let got = seen_text(&seen_api);
    assert!(got.contains(&format!("x-api-key: {canary}")), "{got}");
    assert!(!got.contains("guest-set"), "{got}");
    assert!(!got.contains("authorization"), "{got}");
    // The upstream echoed the key; the caller sees it masked.
    let echoed = reply["output"]["body"]["headers"].to_string();
    assert!(echoed.contains("x-api-key: ***"), "{echoed}");

    // A host the config does not list gets the request without the key, even a sibling.
    let sibling = request(
        &server,
        &admin,
        Some(&crm),
        json!({"url": format!("https://{OTHER_API}/contacts")}),
    )
    .await;
    answers.push_str(&sibling.to_string());
    assert_eq!(sibling["ok"], json!(true), "{sibling}");
    let direct = request(
        &server,
        &admin,
        Some(&crm),
        json!({"url": format!("https://{EVIL}/direct")}),
    )
    .await;
    answers.push_str(&direct.to_string());
    assert_eq!(direct["ok"], json!(true), "{direct}");
    // A redirect from the listed host to another is followed without the key.
    let hopped = request(
        &server,
        &admin,
        Some(&crm),
        json!({"url": format!("https://{API}/hop")}),
    )
    .await;
    answers.push_str(&hopped.to_string());
    assert_eq!(hopped["ok"], json!(true), "{hopped}");
    assert_eq!(hopped["output"]["status"], json!(200), "{hopped}");
    // The positive control: evil.test was reached twice (directly and by the redirect).
    let evil_got = seen_text(&seen_evil);
    assert_eq!(
        seen_evil.lock().unwrap_or_else(|p| p.into_inner()).len(),
        2,
        "{evil_got}"
    );
    assert!(!evil_got.contains(&canary), "{evil_got}");
    let api_got = seen_text(&seen_api);
    assert_eq!(
        api_got.matches(&canary).count(),
        2,
        "the key went to the listed host for /contacts and /hop only, not to {OTHER_API}: {api_got}"
    );

    // The defaults: `Authorization: Bearer …`, a wildcard list entry.
    let bearer_key = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let chat = connection(
        &server,
        &admin,
        "chat",
        json!({"credential": {"api_key": bearer_key},
            "config": {"credential_hosts": ["*.crm.test"]}}),
    )
    .await;
    let reply = request(
        &server,
        &admin,
        Some(&chat),
        json!({"url": format!("https://{OTHER_API}/messages")}),
    )
    .await;
    answers.push_str(&reply.to_string());
    assert_eq!(reply["ok"], json!(true), "{reply}");
    assert!(
        seen_text(&seen_api).contains(&format!("authorization: Bearer {bearer_key}")),
        "{}",
        seen_text(&seen_api)
    );

    // Without a connection nothing is attached, and the guest's own header goes as written.
    let before = seen_text(&seen_api).matches(&canary).count();
    let bare = request(
        &server,
        &admin,
        None,
        json!({"url": format!("https://{API}/public"), "headers": {"authorization": "Bearer mine"}}),
    )
    .await;
    assert_eq!(bare["ok"], json!(true), "{bare}");
    let api_got = seen_text(&seen_api);
    assert_eq!(api_got.matches(&canary).count(), before);
    assert!(api_got.contains("authorization: Bearer mine"), "{api_got}");

    let listed = server.get("/v1/connections", &admin).await;
    answers.push_str(&listed.text);
    for key in [&canary, &bearer_key] {
        assert!(!answers.contains(key.as_str()), "{answers}");
    }
    let (cells, count) = crate::api_canary::every_cell(&server, db).await;
    assert!(count > 0);
    for key in [&canary, &bearer_key] {
        assert!(!cells.contains(key.as_str()), "a key is in the database");
    }
}

async fn a_credential_without_hosts_or_with_a_bad_header_is_refused(db: Db) {
    let api = Server::start_tls(recorder(Seen::default()), &[API]).await;
    let evil = Server::start_tls(recorder(Seen::default()), &[EVIL]).await;
    let Some((server, admin)) = server(db, &api, &evil).await else {
        return;
    };
    let key = json!({"api_key": "k-123"});
    for (config, field) in [
        // Nowhere to send it: refused now rather than a 401 from the upstream later.
        (json!({}), "config"),
        (json!({"credential_hosts": []}), "config"),
        // `*` would hand it to every host.
        (json!({"credential_hosts": ["*"]}), "config"),
        (json!({"credential_hosts": ["api.crm.test/x"]}), "config"),
        // The transport's headers, and a header name that is not one.
        (
            json!({"credential_hosts": [API], "auth_header": "Host"}),
            "config",
        ),
        (
            json!({"credential_hosts": [API], "auth_header": "Transfer-Encoding"}),
            "config",
        ),
        (
            json!({"credential_hosts": [API], "auth_header": "X-Key\r\nEvil: 1"}),
            "config",
        ),
        (
            json!({"credential_hosts": [API], "auth_prefix": "Bearer\r\nEvil: 1 "}),
            "config",
        ),
        // The config schema's own rules.
        (json!({"credential_hosts": [API], "region": "eu"}), "config"),
    ] {
        let refused = server
            .post(
                "/v1/connections",
                &admin,
                json!({"connector": "http", "name": "bad", "credential": key, "config": config}),
            )
            .await;
        assert_problem(&refused, 422, "validation");
        let pointer = refused.body["field"].as_str().unwrap_or("");
        assert!(pointer.starts_with(field), "{config}: {}", refused.text);
        assert!(!refused.text.contains("k-123"), "{}", refused.text);
    }
    let listed = server.get("/v1/connections", &admin).await;
    assert_eq!(listed.body, json!([]), "{}", listed.text);
}
