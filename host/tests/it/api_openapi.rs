//! `/openapi.json` tells the truth about the server: the statuses a route answers are declared,
//! problems are `application/problem+json`, the upload body is binary, and nullability matches
//! what is served and accepted. schemathesis checks the same against a live server in CI
//! (`scripts/schemathesis`); this catches a regression without it.

use reqwest::Method;
use serde_json::{Value, json};

use crate::api_support::{Body, Db, TestServer, assert_problem};

/// Follows a local `$ref` (`#/components/...`) until it reaches a value that is not one.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    for _ in 0..8 {
        let Some(pointer) = value.get("$ref").and_then(Value::as_str) else {
            return value;
        };
        let pointer = pointer.strip_prefix('#').expect("a local $ref");
        value = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref {pointer}"));
    }
    panic!("a $ref chain longer than 8");
}

/// Whether `schema` admits JSON null: no type at all, or `null` among its types.
fn admits_null(schema: &Value) -> bool {
    match schema.get("type") {
        None => !schema.get("oneOf").is_some_and(|o| {
            o.as_array()
                .is_some_and(|branches| !branches.iter().any(admits_null))
        }),
        Some(Value::String(t)) => t == "null",
        Some(Value::Array(types)) => types.iter().any(|t| t == "null"),
        Some(_) => false,
    }
}

/// Every (method, path, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            all.push((method.to_uppercase(), path.clone(), operation));
        }
    }
    all
}

async fn document(server: &TestServer) -> Value {
    let reply = server
        .call(Method::GET, "/openapi.json", None, Body::None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_declares_what_the_server_answers() {
    let Some(server) = TestServer::start(Db::Sqlite).await else {
        return;
    };
    let doc = document(&server).await;
    let ops = operations(&doc);
    assert!(ops.len() >= 19, "{} operations", ops.len());

    for (method, path, operation) in &ops {
        let what = format!("{method} {path}");
        let responses = operation["responses"].as_object().expect("responses");
        let declares = |status: &str| responses.contains_key(status);

        // Every route under /v1 takes a bearer token, so it can answer 401.
        if path.starts_with("/v1/") {
            assert_eq!(
                operation["security"],
                json!([{"bearer": []}]),
                "{what} takes a token"
            );
            for status in ["401", "503"] {
                assert!(declares(status), "{what} does not declare {status}");
            }
        }
        // Every role-checked route can answer 403: all of /v1 but reading a tenant and its
        // limits, where another tenant is 404 and an operator may read any.
        let reads_tenant =
            method == "GET" && (path == "/v1/tenants/{id}" || path == "/v1/tenants/{id}/limits");
        if path.starts_with("/v1/") && !reads_tenant {
            assert!(declares("403"), "{what} does not declare 403");
        }
        // A path parameter that is not UTF-8 after percent-decoding is a 400.
        if path.contains('{') {
            assert!(declares("400"), "{what} does not declare 400");
        }
        // A body can be malformed, too large, or of another content type; one taken as
        // bytes of any type (a webhook delivery) can only be too large.
        let any_body = operation["requestBody"]["content"].get("*/*").is_some();
        if any_body {
            assert!(declares("413"), "{what} does not declare 413");
        } else if operation.get("requestBody").is_some() {
            for status in ["400", "413", "415", "422"] {
                assert!(declares(status), "{what} does not declare {status}");
            }
        }

        // Every refusal is a Problem served as application/problem+json, and nothing else.
        for (status, response) in responses {
            if !status.starts_with('4') && !status.starts_with('5') {
                continue;
            }
            let response = resolve(&doc, response);
            let content = response["content"]
                .as_object()
                .unwrap_or_else(|| panic!("{what} {status} has no content"));
            let types: Vec<&String> = content.keys().collect();
            assert_eq!(
                types,
                vec!["application/problem+json"],
                "{what} {status} content types"
            );
            assert_eq!(
                content["application/problem+json"]["schema"]["$ref"],
                json!("#/components/schemas/Problem"),
                "{what} {status} schema"
            );
        }
    }

    // A component upload is bytes, so clients and fuzzers send bytes; a definition is JSON
    // or YAML text.
    let upload = &doc["paths"]["/v1/connectors"]["post"]["requestBody"]["content"];
    assert_eq!(
        upload
            .as_object()
            .map(|c| c.keys().cloned().collect::<Vec<_>>()),
        Some(vec![
            "application/json".to_owned(),
            "application/wasm".to_owned(),
            "application/yaml".to_owned()
        ])
    );
    let upload = resolve(&doc, &upload["application/wasm"]["schema"]);
    assert_eq!(
        (&upload["type"], &upload["format"]),
        (&json!("string"), &json!("binary")),
        "{upload}"
    );

    // An invocation's output and error are null when they do not apply, as served.
    let invoke = resolve(&doc, &doc["components"]["schemas"]["InvokeResponse"]);
    for field in ["output", "error"] {
        let schema = resolve(&doc, &invoke["properties"][field]);
        assert!(admits_null(schema), "InvokeResponse.{field}: {schema}");
        assert!(
            invoke["required"]
                .as_array()
                .is_some_and(|r| r.contains(&json!(field))),
            "InvokeResponse.{field} is always present"
        );
    }
    let problem = resolve(&doc, &doc["components"]["schemas"]["Problem"]);
    assert!(
        !admits_null(&problem["properties"]["field"]),
        "Problem.field is absent, never null"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limits_schema_admits_null_only_where_the_server_does() {
    let Some(server) = TestServer::start(Db::Sqlite).await else {
        return;
    };
    let doc = document(&server).await;
    let limits = resolve(&doc, &doc["components"]["schemas"]["Limits"]);
    let properties = limits["properties"].as_object().expect("properties");
    assert!(properties.contains_key("fuel"), "{limits}");
    assert_eq!(
        limits["additionalProperties"],
        json!(false),
        "unknown fields are refused"
    );
    let required = limits["required"].as_array().map_or(0, Vec::len);
    assert_eq!(required, 0, "every field may be left out: {limits}");

    let operator = server.operator();
    server.tenant("acme").await;
    for (field, schema) in properties {
        let schema = resolve(&doc, schema);
        let reply = server
            .put("/v1/tenants/acme/limits", &operator, json!({ field: null }))
            .await;
        if admits_null(schema) {
            assert_eq!(
                reply.status, 200,
                "{field}: null is declared: {}",
                reply.text
            );
        } else {
            assert_problem(&reply, 422, "validation");
        }
    }

    // A PATCH takes null for every field (back to its default), as its schema says.
    let patch = resolve(&doc, &doc["components"]["schemas"]["LimitsPatch"]);
    let patchable = patch["properties"].as_object().expect("properties");
    assert_eq!(
        patchable.keys().collect::<Vec<_>>(),
        properties.keys().collect::<Vec<_>>()
    );
    assert_eq!(patch["additionalProperties"], json!(false));
    for (field, schema) in patchable {
        assert!(admits_null(resolve(&doc, schema)), "{field}: {schema}");
        let reply = server
            .patch("/v1/tenants/acme/limits", &operator, json!({ field: null }))
            .await;
        assert_eq!(reply.status, 200, "{field}: {}", reply.text);
    }
}

/// Each numeric limit's declared bounds are the server's: the bounds are taken, one past
/// either is refused naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limits_schema_bounds_are_the_servers_caps() {
    let Some(server) = TestServer::start(Db::Sqlite).await else {
        return;
    };
    let doc = document(&server).await;
    let limits = resolve(&doc, &doc["components"]["schemas"]["Limits"]);
    let operator = server.operator();
    server.tenant("acme").await;
    let mut bounded = 0;
    for (field, schema) in limits["properties"].as_object().expect("properties") {
        let schema = resolve(&doc, schema);
        if schema["type"] != json!("integer") {
            continue;
        }
        let (Some(min), Some(max)) = (schema["minimum"].as_u64(), schema["maximum"].as_u64())
        else {
            panic!("{field} declares no minimum and maximum: {schema}");
        };
        bounded += 1;
        for value in [min, max] {
            let reply = server
                .put(
                    "/v1/tenants/acme/limits",
                    &operator,
                    json!({ field: value }),
                )
                .await;
            assert_eq!(reply.status, 200, "{field} = {value}: {}", reply.text);
        }
        let mut outside = vec![max + 1];
        if min > 0 {
            outside.push(min - 1);
        }
        for value in outside {
            let reply = server
                .put(
                    "/v1/tenants/acme/limits",
                    &operator,
                    json!({ field: value }),
                )
                .await;
            assert_problem(&reply, 422, "validation");
            assert_eq!(reply.body["field"], json!(field), "{}", reply.text);
        }
    }
    assert!(bounded >= 16, "{bounded} bounded fields");
}

/// Names are limited in characters, as the document's `maxLength` says, not in bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_limited_in_characters_as_declared() {
    let Some(server) = TestServer::start(Db::Sqlite).await else {
        return;
    };
    let doc = document(&server).await;
    let max_length = |schema: &str| {
        let schema = resolve(&doc, &doc["components"]["schemas"][schema]);
        let max = schema["properties"]["name"]["maxLength"].as_u64();
        usize::try_from(max.expect("name declares maxLength")).expect("small")
    };
    let operator = server.operator();
    let tenant_max = max_length("CreateTenant");
    // Two bytes each: a byte count would refuse this name at half the length.
    let reply = server
        .post(
            "/v1/tenants",
            &operator,
            json!({"id": "acme", "name": "é".repeat(tenant_max)}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let reply = server
        .post(
            "/v1/tenants",
            &operator,
            json!({"id": "other", "name": "é".repeat(tenant_max + 1)}),
        )
        .await;
    assert_problem(&reply, 422, "validation");
    assert_eq!(reply.body["field"], json!("name"));

    let admin = server.token(Some("acme"), airlock::api::Role::Admin);
    let uploaded = server
        .upload(&admin, airlock_test_artifacts::CONNECTOR_TRANSFORM)
        .await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    let connection_max = max_length("CreateConnection");
    let create = |name: String| {
        server.post(
            "/v1/connections",
            &admin,
            json!({"connector": "transform", "name": name}),
        )
    };
    let reply = create("é".repeat(connection_max)).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let reply = create("é".repeat(connection_max + 1)).await;
    assert_problem(&reply, 422, "validation");
    assert_eq!(reply.body["field"], json!("name"));
}

/// Reading a tenant when the database fails is the declared 503, not a 404 that says the
/// tenant does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_database_is_503_when_reading_a_tenant() {
    let Some(server) = TestServer::start(Db::Sqlite).await else {
        return;
    };
    let operator = server.operator();
    server.tenant("acme").await;
    let pool = server.raw_db().await;
    sqlx::query("ALTER TABLE tenants RENAME TO tenants_elsewhere")
        .execute(&pool)
        .await
        .expect("rename");
    pool.close().await;
    let reply = server.get("/v1/tenants/acme", &operator).await;
    assert_problem(&reply, 503, "unavailable");
}

/// A run's and a step's `output` and `error` are null until they apply: the document says
/// so, and a run the server just queued shows them null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_and_step_output_and_error_are_nullable_as_served() {
    let Some(server) = TestServer::start(Db::Sqlite).await else {
        return;
    };
    let doc = document(&server).await;
    for schema in ["Run", "Step"] {
        let object = resolve(&doc, &doc["components"]["schemas"][schema]);
        for field in ["output", "error"] {
            let property = resolve(&doc, &object["properties"][field]);
            assert!(admits_null(property), "{schema}.{field}: {property}");
            assert!(
                object["required"]
                    .as_array()
                    .is_some_and(|r| r.contains(&json!(field))),
                "{schema}.{field} is always present"
            );
        }
    }

    let admin = crate::runs_support::tenant_with_hostile(&server, "acme").await;
    let workflow = crate::runs_support::create_workflow(
        &server,
        &admin,
        "echo",
        json!([{"id": "only", "connector": "hostile", "action": "echo"}]),
    )
    .await;
    let run = server
        .post(&format!("/v1/workflows/{workflow}/runs"), &admin, json!({}))
        .await;
    assert_eq!(run.status, 202, "{}", run.text);
    assert_eq!(run.body["output"], Value::Null, "{}", run.text);
    assert_eq!(run.body["error"], Value::Null, "{}", run.text);
    assert!(run.body.get("output").is_some(), "{}", run.text);
}

/// Every example in the document is a body the server takes: the trigger example is one
/// whole cron trigger, not an example per field adding up to both kinds at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documents_trigger_example_is_accepted() {
    let Some(server) = TestServer::start(Db::Sqlite).await else {
        return;
    };
    let doc = document(&server).await;
    let create = resolve(&doc, &doc["components"]["schemas"]["CreateTrigger"]);
    for (field, schema) in create["properties"].as_object().expect("properties") {
        assert!(
            schema.get("example").is_none() && schema.get("examples").is_none(),
            "CreateTrigger.{field} has its own example: {schema}"
        );
    }
    let example = create["example"].clone();
    assert!(example.is_object(), "{create}");

    let admin = crate::runs_support::tenant_with_hostile(&server, "acme").await;
    let workflow = crate::runs_support::create_workflow(
        &server,
        &admin,
        "echo",
        json!([{"id": "only", "connector": "hostile", "action": "echo"}]),
    )
    .await;
    let reply = server
        .post(
            &format!("/v1/workflows/{workflow}/triggers"),
            &admin,
            example,
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
}

/// Names carry the names rule as a `pattern` (built from the rule's table: every refused
/// range is excluded), and the server checks the name as sent: a control character anywhere,
/// even where trimming would drop it, is refused, as the pattern says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_carry_the_names_rule_as_declared() {
    let Some(server) = TestServer::start(Db::Sqlite).await else {
        return;
    };
    let doc = document(&server).await;
    for (schema, field) in [
        ("CreateTenant", "name"),
        ("CreateConnection", "name"),
        ("CreateConnection", "connector"),
        ("CreateWorkflow", "name"),
        ("UpdateWorkflow", "name"),
        ("WorkflowStep", "connector"),
        ("WorkflowStep", "action"),
        ("WorkflowStep", "version"),
        ("WorkflowStep", "connection"),
    ] {
        let object = resolve(&doc, &doc["components"]["schemas"][schema]);
        let pattern = object["properties"][field]["pattern"]
            .as_str()
            .unwrap_or_else(|| panic!("{schema}.{field} has no pattern: {object}"));
        for refused in ["\\u0000-\\u001F", "\\u007F-\\u009F", "\\u202E", "\u{E0000}"] {
            assert!(
                pattern.contains(refused),
                "{schema}.{field} does not exclude {refused}: {pattern}"
            );
        }
        assert!(
            pattern.starts_with('^') && pattern.ends_with('$'),
            "{pattern}"
        );
    }

    let operator = server.operator();
    for (id, name) in [
        ("a", "\nAcme"),
        ("b", "Ac\u{0}me"),
        ("c", "Acme\u{202E}"),
        ("d", " \u{3000} "),
        ("e", ""),
    ] {
        let reply = server
            .post("/v1/tenants", &operator, json!({"id": id, "name": name}))
            .await;
        assert_problem(&reply, 422, "validation");
        assert_eq!(
            reply.body["field"],
            json!("name"),
            "{name:?}: {}",
            reply.text
        );
    }
    let reply = server
        .post(
            "/v1/tenants",
            &operator,
            json!({"id": "f", "name": " Acme "}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.body["name"], json!("Acme"));
}

/// A body that is JSON but not an object is refused by the shared reader on every route that
/// reads a JSON body (422 `validation` on `body`), before the handler acts on it: serde would
/// read `[]` as a struct of defaults and `["x"]` as its first field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_body_that_is_not_an_object_is_refused_everywhere() {
    let Some(server) = TestServer::start(Db::Sqlite).await else {
        return;
    };
    let doc = document(&server).await;
    let operator = server.operator();
    let admin = server.tenant("acme").await;
    let mut checked = 0;
    for (method, path, operation) in operations(&doc) {
        if operation["requestBody"]["content"]
            .get("application/json")
            .is_none()
        {
            continue;
        }
        let token =
            if operation["tags"] == json!(["tenants"]) || operation["tags"] == json!(["catalog"]) {
                &operator
            } else {
                &admin
            };
        let path = path.replace("{id}", "acme");
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        for body in [json!([]), json!(["acme", "Acme"]), json!("x"), json!(7)] {
            let reply = server
                .call(method.clone(), &path, Some(token), Body::Json(body.clone()))
                .await;
            assert_problem(&reply, 422, "validation");
            assert_eq!(
                reply.body["field"],
                json!("body"),
                "{method} {path}: {}",
                reply.text
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "{checked} routes read a JSON body");
    let tenants = server.get("/v1/tenants", &operator).await;
    assert_eq!(
        tenants.body.as_array().map(Vec::len),
        Some(1),
        "{}",
        tenants.text
    );
}

/// Every 503 and 429 a route declares says it may carry Retry-After, and the database's
/// `unavailable` does carry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_declared_where_it_is_sent() {
    let Some(server) = TestServer::start(Db::Sqlite).await else {
        return;
    };
    let doc = document(&server).await;
    for (method, path, operation) in operations(&doc) {
        for status in ["429", "503"] {
            let Some(response) = operation["responses"].get(status) else {
                continue;
            };
            let response = resolve(&doc, response);
            assert!(
                response["headers"].get("Retry-After").is_some(),
                "{method} {path} {status}: {response}"
            );
        }
    }

    let operator = server.operator();
    server.tenant("acme").await;
    let pool = server.raw_db().await;
    sqlx::query("ALTER TABLE tenants RENAME TO tenants_elsewhere")
        .execute(&pool)
        .await
        .expect("rename");
    pool.close().await;
    let reply = server.get("/v1/tenants/acme", &operator).await;
    assert_problem(&reply, 503, "unavailable");
    let retry = reply
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(retry.is_some_and(|s| s >= 1), "{:?}", reply.headers);
}
