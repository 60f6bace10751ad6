//! Declarative connectors through the service: uploaded as JSON or YAML, connections with a
//! config that picks the host, the credential attached by the host and never seen by the
//! runner, templates that keep values in their place, and the same sandbox as code
//! connectors.

use std::sync::{Arc, Mutex};

use airlock::api::Role;
use axum::Router;
use axum::extract::{Path, RawQuery};
use axum::http::HeaderMap;
use axum::routing::get;
use reqwest::Method;
use serde_json::{Value, json};

use crate::api_support::{Body, Db, TestServer, assert_problem, on_both_databases};
use crate::support::{Server, options_for_tls};

on_both_databases!(
    a_definition_uploaded_as_json_or_yaml_runs_with_the_connections_config_and_credential,
    connection_config_is_checked_and_cannot_move_the_host,
    the_credential_stays_on_declared_hosts_and_out_of_every_answer_and_row,
);

/// A CRM whose contacts echo what the request carried: the path id, the query, the API key
/// header (kept for the positive control) and the account header. `/redirect` sends the
/// client to evil.test; `/pages` links its next page to evil.test.
fn crm(received: Arc<Mutex<Vec<(String, String)>>>) -> Router {
    Router::new()
        .route(
            "/api/v2/redirect",
            get(|| async {
                (
                    axum::http::StatusCode::FOUND,
                    [("location", "https://evil.test/steal")],
                )
            }),
        )
        .route(
            "/api/v2/pages",
            get(|| async {
                (
                    [("link", "<https://evil.test/steal?page=2>; rel=\"next\"")],
                    axum::Json(json!([{"id": 1}])),
                )
            }),
        )
        .route(
            "/api/v2/contacts/{id}",
            get(
                move |Path(id): Path<String>, RawQuery(query): RawQuery, headers: HeaderMap| {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    received
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((header("x-api-key"), header("host")));
                    let body = json!({"contact": {
                        "id": id,
                        "query": query,
                        "account": header("x-account"),
                        "echoed_key": header("x-api-key"),
                    }});
                    async move { axum::Json(body) }
                },
            ),
        )
}

pub fn crm_definition() -> Value {
    json!({
        "format": "airlock.declarative/v1",
        "name": "crm",
        "version": "1.0.0",
        "description": "A CRM's contacts",
        "auth": {"type": "api_key", "in": "header", "name": "X-Api-Key"},
        "base_url": "https://{config.subdomain}.crm.test/api/v2",
        "config_schema": {
            "type": "object",
            "required": ["subdomain"],
            "additionalProperties": false,
            "properties": {
                "subdomain": {"type": "string"},
                "account": {"type": "string"}
            }
        },
        "headers": {"X-Account": "{config.account}"},
        "test": {"action": "get_contact", "input": {"path": {"id": "me"}}},
        "actions": [{
            "name": "get_contact",
            "description": "One contact",
            "method": "GET",
            "endpoint": "/contacts/{id}{?fields}",
            "path_schema": {"type": "object", "required": ["id"],
                "properties": {"id": {"type": ["string", "integer"]}}},
            "query_schema": {"type": "object",
                "properties": {"fields": {"type": "array", "items": {"type": "string"}}}},
            "output": "/contact",
            "output_schema": {"type": "object", "required": ["id"]}
        }]
    })
}

const CRM_YAML: &str = r#"
format: airlock.declarative/v1
name: crm
version: 1.0.0
description: A CRM's contacts
auth: {type: api_key, in: header, name: X-Api-Key}
base_url: "https://{config.subdomain}.crm.test/api/v2"
config_schema:
  type: object
  required: [subdomain]
  additionalProperties: false
  properties:
    subdomain: {type: string}
    account: {type: string}
headers: {X-Account: "{config.account}"}
test: {action: get_contact, input: {path: {id: me}}}
actions:
  - name: get_contact
    description: One contact
    method: GET
    endpoint: "/contacts/{id}{?fields}"
    path_schema:
      type: object
      required: [id]
      properties: {id: {type: [string, integer]}}
    query_schema:
      type: object
      properties: {fields: {type: array, items: {type: string}}}
    output: /contact
    output_schema: {type: object, required: [id]}
"#;

pub async fn upload_definition(
    server: &TestServer,
    token: &str,
    definition: &Value,
) -> crate::api_support::Reply {
    server
        .call(
            Method::POST,
            "/v1/connectors",
            Some(token),
            Body::Raw("application/json", definition.to_string().into_bytes()),
        )
        .await
}

async fn a_definition_uploaded_as_json_or_yaml_runs_with_the_connections_config_and_credential(
    db: Db,
) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let upstream = Server::start_tls(crm(received.clone()), &["acme.crm.test"]).await;
    let mut options = options_for_tls(&upstream, &["acme.crm.test"]);
    options.engine.pool_size = 4;
    let Some(server) = TestServer::start_with(db, options).await else {
        return;
    };
    let admin = server.tenant("acme").await;
    let editor = server.token(Some("acme"), Role::Editor);

    let uploaded = upload_definition(&server, &admin, &crm_definition()).await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    assert_eq!(
        uploaded.body["manifest"]["hosts"],
        json!(["{config.subdomain}.crm.test"])
    );
    let input_schema = &uploaded.body["manifest"]["actions"][0]["input_schema"];
    assert_eq!(input_schema["required"], json!(["path"]), "{input_schema}");
    // The same definition in YAML is the same version: same digest, nothing new.
    let yaml = server
        .call(
            Method::POST,
            "/v1/connectors",
            Some(&admin),
            Body::Raw("application/yaml", CRM_YAML.as_bytes().to_vec()),
        )
        .await;
    assert_eq!(yaml.status, 200, "{}", yaml.text);
    assert_eq!(yaml.body["digest"], uploaded.body["digest"]);

    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let created = server
        .post(
            "/v1/connections",
            &editor,
            json!({"connector": "crm", "name": "main",
                "config": {"subdomain": "acme", "account": "acct-7"},
                "credential": {"api_key": canary}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(
        created.body["config"],
        json!({"subdomain": "acme", "account": "acct-7"})
    );
    let connection = created.body["id"].as_str().expect("id").to_owned();

    let invoked = server
        .post(
            "/v1/connectors/crm/actions/get_contact/invoke",
            &editor,
            json!({"connection": connection,
                "input": {"path": {"id": 478}, "query": {"fields": ["name", "e mail"]}}}),
        )
        .await;
    assert_eq!(invoked.status, 200, "{}", invoked.text);
    assert_eq!(invoked.body["ok"], json!(true), "{}", invoked.text);
    let output = &invoked.body["output"];
    assert_eq!(output["id"], json!("478"));
    assert_eq!(output["query"], json!("fields=name,e%20mail"));
    assert_eq!(output["account"], json!("acct-7"));
    // The upstream echoed the key; the runner and the caller see it masked.
    assert!(!invoked.text.contains(&canary), "{}", invoked.text);
    let got = received.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(
        got.last().map(|(key, _)| key.as_str()),
        Some(canary.as_str())
    );

    // Invalid input is refused before anything is sent.
    let sent = got.len();
    let refused = server
        .post(
            "/v1/connectors/crm/actions/get_contact/invoke",
            &editor,
            json!({"connection": connection, "input": {"query": {}}}),
        )
        .await;
    assert_problem(&refused, 422, "validation");
    // A hostile id stays one path segment.
    let hostile = server
        .post(
            "/v1/connectors/crm/actions/get_contact/invoke",
            &editor,
            json!({"connection": connection, "input": {"path": {"id": "../../admin?x=1#y"}}}),
        )
        .await;
    assert_eq!(hostile.body["ok"], json!(true), "{}", hostile.text);
    assert_eq!(hostile.body["output"]["id"], json!("../../admin?x=1#y"));
    assert_eq!(
        received.lock().unwrap_or_else(|p| p.into_inner()).len(),
        sent + 1
    );

    // test-connection runs the definition's test call.
    let tested = server
        .call(
            Method::POST,
            &format!("/v1/connections/{connection}/test"),
            Some(&editor),
            Body::None,
        )
        .await;
    assert_eq!(tested.body["ok"], json!(true), "{}", tested.text);
}

/// Everything evil.test receives: the headers of each request.
fn evil(received: Arc<Mutex<Vec<String>>>) -> Router {
    Router::new().fallback(move |headers: HeaderMap| {
        received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{headers:?}"));
        async { "stolen" }
    })
}

fn with_leaky_actions(mut definition: Value) -> Value {
    let actions = definition["actions"].as_array_mut().expect("actions");
    actions.push(json!({
        "name": "follow_redirect", "method": "GET", "endpoint": "/redirect"
    }));
    actions.push(json!({
        "name": "list_pages", "method": "GET", "endpoint": "/pages",
        "pagination": {"type": "next_link", "from": "header", "max_pages": 5}
    }));
    definition["version"] = json!("1.1.0");
    definition
}

async fn the_credential_stays_on_declared_hosts_and_out_of_every_answer_and_row(db: Db) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let stolen = Arc::new(Mutex::new(Vec::new()));
    let upstream = Server::start_tls(crm(received.clone()), &["acme.crm.test"]).await;
    let evil = Server::start_tls(evil(stolen.clone()), &["evil.test"]).await;
    let mut options = options_for_tls(&upstream, &["acme.crm.test"]);
    options
        .outbound
        .resolve_overrides
        .insert("evil.test".into(), vec![evil.addr]);
    options
        .outbound
        .extra_root_certificates
        .extend(evil.ca_pem.iter().cloned());
    let Some(server) = TestServer::start_with(db, options).await else {
        return;
    };
    let admin = server.tenant("acme").await;
    let uploaded = upload_definition(&server, &admin, &with_leaky_actions(crm_definition())).await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let created = server
        .post(
            "/v1/connections",
            &admin,
            json!({"connector": "crm", "name": "main", "config": {"subdomain": "acme"},
                "credential": {"api_key": canary}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let connection = created.body["id"].as_str().expect("id").to_owned();
    let mut answers = String::new();

    // testAction: the request as sent, the key masked; the response as the runner got it.
    let tested = server
        .post(
            "/v1/connectors/crm/actions/get_contact/test",
            &admin,
            json!({"connection": connection, "input": {"path": {"id": 7}}}),
        )
        .await;
    assert_eq!(tested.status, 200, "{}", tested.text);
    answers.push_str(&tested.text);
    let request = &tested.body["request"];
    assert_eq!(request["method"], json!("GET"));
    assert_eq!(
        request["url"],
        json!("https://acme.crm.test/api/v2/contacts/7")
    );
    let headers = request["headers"].as_array().expect("headers");
    assert!(
        headers.contains(&json!(["x-api-key", "***"])),
        "{}",
        tested.text
    );
    assert_eq!(tested.body["response"]["status"], json!(200));
    assert!(
        tested.body["response"]["body"]
            .as_str()
            .expect("body")
            .contains("\"echoed_key\":\"***\""),
        "{}",
        tested.text
    );
    assert_eq!(tested.body["result"]["ok"], json!(true), "{}", tested.text);
    assert_eq!(tested.body["result"]["output"]["id"], json!("7"));

    // A redirect to an undeclared host is not followed with the key, nor at all.
    let redirected = server
        .post(
            "/v1/connectors/crm/actions/follow_redirect/invoke",
            &admin,
            json!({"connection": connection}),
        )
        .await;
    answers.push_str(&redirected.text);
    assert_eq!(redirected.body["ok"], json!(false), "{}", redirected.text);
    assert_eq!(
        redirected.body["error"]["kind"],
        json!("http_denied"),
        "{}",
        redirected.text
    );
    // A next page on an undeclared host is refused by the runner before it is asked for.
    let paged = server
        .post(
            "/v1/connectors/crm/actions/list_pages/invoke",
            &admin,
            json!({"connection": connection}),
        )
        .await;
    answers.push_str(&paged.text);
    assert_eq!(paged.body["ok"], json!(false), "{}", paged.text);
    let message = paged.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("pagination_left_hosts"), "{}", paged.text);
    assert!(
        stolen.lock().unwrap_or_else(|p| p.into_inner()).is_empty(),
        "evil.test was reached"
    );
    // The positive control: the declared host got the key.
    assert!(
        received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|(key, _)| key == &canary)
    );
    let listed = server.get("/v1/connections", &admin).await;
    answers.push_str(&listed.text);
    assert!(!answers.contains(&canary), "{answers}");
    let (cells, count) = crate::api_canary::every_cell(&server, db).await;
    assert!(count > 0);
    assert!(!cells.contains(&canary), "the canary is in the database");
}

async fn connection_config_is_checked_and_cannot_move_the_host(db: Db) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let upstream = Server::start_tls(crm(received.clone()), &["acme.crm.test", "evil.test"]).await;
    let options = options_for_tls(&upstream, &["acme.crm.test", "evil.test"]);
    let Some(server) = TestServer::start_with(db, options).await else {
        return;
    };
    let admin = server.tenant("acme").await;
    let uploaded = upload_definition(&server, &admin, &crm_definition()).await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    for config in [
        json!({}),
        json!({"subdomain": 7}),
        json!({"subdomain": "acme", "extra": 1}),
        json!({"subdomain": "evil.test#"}),
        json!({"subdomain": "evil.test/x"}),
        json!({"subdomain": "Acme"}),
        json!("acme"),
    ] {
        let refused = server
            .post(
                "/v1/connections",
                &admin,
                json!({"connector": "crm", "name": "c", "config": config,
                    "credential": {"api_key": "k"}}),
            )
            .await;
        assert_problem(&refused, 422, "validation");
    }
    assert!(
        received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    );
    // Invalid definitions name the field.
    let mut bad = crm_definition();
    bad["actions"][0]["endpoint"] = json!("{id}");
    let refused = upload_definition(&server, &admin, &bad).await;
    assert_problem(&refused, 422, "invalid-definition");
    assert!(
        refused.text.contains("actions[0].endpoint"),
        "{}",
        refused.text
    );
    let mut reserved = crm_definition();
    reserved["headers"] = json!({"Authorization": "Bearer {config.account}"});
    let refused = upload_definition(&server, &admin, &reserved).await;
    assert_problem(&refused, 422, "invalid-definition");
}
