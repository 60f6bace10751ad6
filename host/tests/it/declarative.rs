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
);

/// A CRM whose contacts echo what the request carried: the path id, the query, the API key
/// header (kept for the positive control) and the account header.
fn crm(received: Arc<Mutex<Vec<(String, String)>>>) -> Router {
    Router::new().route(
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

pub async fn upload_definition(server: &TestServer, token: &str, definition: &Value) -> crate::api_support::Reply {
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
    assert_eq!(uploaded.body["manifest"]["hosts"], json!(["{config.subdomain}.crm.test"]));
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
    assert_eq!(created.body["config"], json!({"subdomain": "acme", "account": "acct-7"}));
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
    assert_eq!(output["query"], json!("fields=name&fields=e%20mail"));
    assert_eq!(output["account"], json!("acct-7"));
    // The upstream echoed the key; the runner and the caller see it masked.
    assert!(!invoked.text.contains(&canary), "{}", invoked.text);
    let got = received.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(got.last().map(|(key, _)| key.as_str()), Some(canary.as_str()));

    // Invalid input is refused before anything is sent.
    let sent = got.len();
    let refused = server
        .post(
            "/v1/connectors/crm/actions/get_contact/invoke",
            &editor,
            json!({"connection": connection, "input": {"query": {}}}),
        )
        .await;
    assert_problem(&refused, 422, "invalid-input");
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
    assert_eq!(received.lock().unwrap_or_else(|p| p.into_inner()).len(), sent + 1);

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
    assert!(received.lock().unwrap_or_else(|p| p.into_inner()).is_empty());
    // Invalid definitions name the field.
    let mut bad = crm_definition();
    bad["actions"][0]["endpoint"] = json!("{id}");
    let refused = upload_definition(&server, &admin, &bad).await;
    assert_problem(&refused, 422, "invalid-definition");
    assert!(refused.text.contains("actions[0].endpoint"), "{}", refused.text);
    let mut reserved = crm_definition();
    reserved["headers"] = json!({"Authorization": "Bearer {config.account}"});
    let refused = upload_definition(&server, &admin, &reserved).await;
    assert_problem(&refused, 422, "invalid-definition");
}
