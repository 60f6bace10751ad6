//! Cross-tenant isolation and roles, table-driven over every operation of `/openapi.json`.
//!
//! Tenant A owns connectors, connections and limits; the table says, for each (method, path
//! template) of the document, how to fill its path with A's real ids, which roles may call it
//! and a valid body. Then every caller (no token, a garbage token, the operator, tenant B's
//! viewer, editor and admin, and A's own roles) calls every route, and the answer must be the
//! documented one: another tenant's resource is 404 and never its data, a role too low is
//! 403, no token is 401, and every refusal is a problem document. The test fails when the
//! document has an operation the table lacks, or the table one the document lacks.

use std::collections::BTreeSet;

use airlock::api::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::api_support::{Body, Db, Reply, TestServer, assert_problem, on_both_databases};

on_both_databases!(every_openapi_route_keeps_tenants_apart_and_enforces_roles);

/// The tenant the lifecycle routes suspend, export and delete.
const TENANT_C: &str = "tc-lifecycle";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// No token needed.
    Public,
    /// Any valid token, operators' and every tenant's (the shared catalog's reads).
    Anyone,
    /// Operators only (tenants and their limits).
    Operator,
    /// The tenant named in the path: operators, or members of that tenant.
    MemberOrOperator,
    /// Inside the caller's own tenant, with at least this role; operators get 403.
    Tenant(Role),
    /// As `Tenant`, and operators read every tenant's (read-only operator views).
    TenantOrOperator(Role),
    /// As `Tenant(role)`; an operator names the tenant with `?tenant=` (422 without).
    Reader(Role),
    /// No token: the request's signature authenticates it (a webhook). Unsigned, it is 401
    /// `invalid-signature` whoever sends it, tokens or not.
    Signed,
}

enum Payload {
    None,
    Json(Value),
    Wasm(&'static str),
}

/// One operation of the API, its path filled with tenant A's ids.
struct Route {
    method: Method,
    template: &'static str,
    path: String,
    access: Access,
    /// The path or body names one of A's resources (so tenant B must get 404).
    touches_a: bool,
    payload: Payload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    Operator,
    /// A member of tenant B, calling with A's ids.
    Other(Role),
    /// A member of tenant A.
    Owner(Role),
}

enum Expect {
    Success,
    Problem(u16, &'static str),
}

fn expected(route: &Route, who: Who) -> Expect {
    use Expect::{Problem, Success};
    match (route.access, who) {
        (Access::Public, _) => Success,
        (Access::Anyone, Who::Anonymous) => Problem(401, "unauthorized"),
        (Access::Anyone, _) => Success,
        (Access::Signed, _) => Problem(401, "invalid-signature"),
        (_, Who::Anonymous) => Problem(401, "unauthorized"),
        (Access::Operator, Who::Operator) => Success,
        (Access::Operator, _) => Problem(403, "forbidden"),
        (Access::MemberOrOperator, Who::Operator | Who::Owner(_)) => Success,
        (Access::MemberOrOperator, Who::Other(_)) => Problem(404, "not-found"),
        (Access::Tenant(_), Who::Operator) => Problem(403, "forbidden"),
        (Access::TenantOrOperator(_), Who::Operator) => Success,
        (Access::Reader(_), Who::Operator) => Problem(422, "validation"),
        (Access::Reader(min), Who::Other(role) | Who::Owner(role)) if role < min => {
            Problem(403, "forbidden")
        }
        (Access::Reader(_), Who::Other(_)) if route.touches_a => Problem(404, "not-found"),
        (Access::Reader(_), Who::Other(_) | Who::Owner(_)) => Success,
        (
            Access::Tenant(min) | Access::TenantOrOperator(min),
            Who::Other(role) | Who::Owner(role),
        ) if role < min => Problem(403, "forbidden"),
        (Access::Tenant(_) | Access::TenantOrOperator(_), Who::Other(_)) if route.touches_a => {
            Problem(404, "not-found")
        }
        // B's own (empty or B-made) data, or A acting on its own resources.
        (Access::Tenant(_) | Access::TenantOrOperator(_), Who::Other(_) | Who::Owner(_)) => Success,
    }
}

/// Tenant A's resources, and the strings that would give them away.
struct Fixture {
    tenant: String,
    transform_version: String,
    github_version: String,
    transform_connection: String,
    workflow: String,
    /// A queued run (the server runs no workers here): cancelled, then replayed, by A.
    run: String,
    /// A webhook trigger of `workflow`.
    trigger: String,
    markers: Vec<String>,
}

async fn tenant_a(server: &TestServer) -> Fixture {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let tenant = format!("ta-{}", &tag[..12]);
    let tenant_name = format!("Tenant A {tag}");
    let operator = server.operator();
    let created = server
        .post(
            "/v1/tenants",
            &operator,
            json!({"id": tenant, "name": tenant_name}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let limits = json!({"runs_per_hour": 77, "max_workflows": 7});
    let put = server
        .put(&format!("/v1/tenants/{tenant}/limits"), &operator, limits)
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    let admin = server.token(Some(&tenant), Role::Admin);
    let mut markers = vec![tenant.clone(), tenant_name];
    let mut versions = Vec::new();
    for artifact in [
        airlock_test_artifacts::CONNECTOR_TRANSFORM,
        airlock_test_artifacts::CONNECTOR_GITHUB,
    ] {
        let uploaded = server.upload(&admin, artifact).await;
        assert_eq!(uploaded.status, 201, "{}", uploaded.text);
        versions.push(
            uploaded.body["version"]
                .as_str()
                .expect("version")
                .to_owned(),
        );
    }
    let github = server.get("/v1/connectors", &admin).await;
    let github_digest = github.body.as_array().and_then(|list| {
        list.iter()
            .find(|c| c["name"] == json!("github"))
            .and_then(|c| c["versions"][0]["digest"].as_str())
    });
    markers.push(github_digest.expect("github digest").to_owned());
    let mut connections = Vec::new();
    for (connector, credential) in [
        ("transform", Value::Null),
        ("github", json!({"api_key": format!("a-key-{tag}")})),
    ] {
        let name = format!("a-{connector}-{tag}");
        let created = server
            .post(
                "/v1/connections",
                &admin,
                json!({"connector": connector, "name": name, "credential": credential}),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text);
        let id = created.body["id"].as_str().expect("id").to_owned();
        markers.extend([id.clone(), name]);
        connections.push(id);
    }
    let workflow_name = format!("a-workflow-{tag}");
    let created = server
        .post(
            "/v1/workflows",
            &admin,
            json!({"name": workflow_name, "steps": workflow_steps(&connections[0])}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let workflow = created.body["id"].as_str().expect("id").to_owned();
    let started = server
        .post(
            &format!("/v1/workflows/{workflow}/runs"),
            &admin,
            json!({"input": {"marker": format!("a-run-input-{tag}")}}),
        )
        .await;
    assert_eq!(started.status, 202, "{}", started.text);
    let run = started.body["id"].as_str().expect("id").to_owned();
    let hook = server
        .post(
            &format!("/v1/workflows/{workflow}/triggers"),
            &admin,
            json!({"kind": "webhook"}),
        )
        .await;
    assert_eq!(hook.status, 201, "{}", hook.text);
    let trigger = hook.body["id"].as_str().expect("id").to_owned();
    markers.extend([
        trigger.clone(),
        hook.body["secret"].as_str().expect("secret").to_owned(),
    ]);
    // A's dead-letter webhook: its URL and secret never reach B.
    let dead_letters = server
        .put(
            "/v1/dead-letters/webhook",
            &admin,
            json!({"url": format!("https://localhost/a-dead-letters-{tag}")}),
        )
        .await;
    assert_eq!(dead_letters.status, 201, "{}", dead_letters.text);
    markers.extend([
        format!("a-dead-letters-{tag}"),
        dead_letters.body["secret"]
            .as_str()
            .expect("secret")
            .to_owned(),
        dead_letters.body["id"].as_str().expect("id").to_owned(),
    ]);
    // The run's id is not a marker: a batch replay echoes the ids its caller sent.
    markers.extend([
        workflow.clone(),
        workflow_name,
        format!("a-run-input-{tag}"),
    ]);
    Fixture {
        tenant,
        workflow,
        run,
        trigger,
        transform_version: versions[0].clone(),
        github_version: versions[1].clone(),
        transform_connection: connections[0].clone(),
        markers,
    }
}

/// A one-step workflow of A's `transform` with A's connection: B has a `transform` of its
/// own, so B is refused for the connection.
fn workflow_steps(connection: &str) -> Value {
    json!([{"id": "pick", "connector": "transform", "action": "pick", "connection": connection,
            "input": {"data": {"$from": "/trigger"}, "fields": ["marker"]}}])
}

/// Every operation of the API, filled with A's ids. Keep in step with `/openapi.json`: the
/// test fails on any difference.
fn table(a: &Fixture) -> Vec<Route> {
    use Access::{
        Anyone, MemberOrOperator, Operator, Public, Reader, Signed, Tenant, TenantOrOperator,
    };
    let route = |method: Method,
                 template: &'static str,
                 path: String,
                 access: Access,
                 touches_a: bool,
                 payload: Payload| Route {
        method,
        template,
        path,
        access,
        touches_a,
        payload,
    };
    let tenant = &a.tenant;
    let connection = &a.transform_connection;
    let github = format!("/v1/connectors/github/versions/{}", a.github_version);
    vec![
        route(
            Method::POST,
            "/v1/tenants",
            "/v1/tenants".into(),
            Operator,
            false,
            Payload::Json(json!({"name": "made by the isolation table"})),
        ),
        route(
            Method::GET,
            "/v1/tenants",
            "/v1/tenants".into(),
            Operator,
            false,
            Payload::None,
        ),
        route(
            Method::GET,
            "/v1/tenants/{id}",
            format!("/v1/tenants/{tenant}"),
            MemberOrOperator,
            true,
            Payload::None,
        ),
        route(
            Method::GET,
            "/v1/tenants/{id}/limits",
            format!("/v1/tenants/{tenant}/limits"),
            MemberOrOperator,
            true,
            Payload::None,
        ),
        route(
            Method::PUT,
            "/v1/tenants/{id}/limits",
            format!("/v1/tenants/{tenant}/limits"),
            Operator,
            true,
            // A's own limits again, so the operator's successful call changes nothing.
            Payload::Json(json!({"runs_per_hour": 77, "max_workflows": 7})),
        ),
        route(
            Method::PATCH,
            "/v1/tenants/{id}/limits",
            format!("/v1/tenants/{tenant}/limits"),
            Operator,
            true,
            Payload::Json(json!({"max_workflows": 7})),
        ),
        // The shared catalog: the operator publishes (transform, in A's and B's hands
        // already), everyone reads.
        route(
            Method::POST,
            "/v1/catalog/connectors",
            "/v1/catalog/connectors".into(),
            Operator,
            false,
            Payload::Wasm(airlock_test_artifacts::CONNECTOR_TRANSFORM),
        ),
        route(
            Method::GET,
            "/v1/catalog/connectors",
            "/v1/catalog/connectors".into(),
            Anyone,
            false,
            Payload::None,
        ),
        route(
            Method::GET,
            "/v1/catalog/connectors/{name}/versions/{version}",
            format!(
                "/v1/catalog/connectors/transform/versions/{}",
                a.transform_version
            ),
            Anyone,
            false,
            Payload::None,
        ),
        route(
            Method::POST,
            "/v1/catalog/connectors/{name}/versions/{version}/deprecate",
            format!(
                "/v1/catalog/connectors/transform/versions/{}/deprecate",
                a.transform_version
            ),
            Operator,
            false,
            Payload::None,
        ),
        route(
            Method::POST,
            "/v1/catalog/connectors/{name}/versions/{version}/undeprecate",
            format!(
                "/v1/catalog/connectors/transform/versions/{}/undeprecate",
                a.transform_version
            ),
            Operator,
            false,
            Payload::None,
        ),
        // The lifecycle acts on tenant C, made for it (deleting A would end the table): in
        // this order the operator's calls all succeed (resume is a no-op on an active tenant,
        // delete needs the suspension before it).
        route(
            Method::POST,
            "/v1/tenants/{id}/resume",
            format!("/v1/tenants/{TENANT_C}/resume"),
            Operator,
            false,
            Payload::None,
        ),
        route(
            Method::POST,
            "/v1/tenants/{id}/suspend",
            format!("/v1/tenants/{TENANT_C}/suspend"),
            Operator,
            false,
            Payload::None,
        ),
        route(
            Method::GET,
            "/v1/tenants/{id}/export",
            format!("/v1/tenants/{TENANT_C}/export"),
            Operator,
            false,
            Payload::None,
        ),
        route(
            Method::DELETE,
            "/v1/tenants/{id}",
            format!("/v1/tenants/{TENANT_C}"),
            Operator,
            false,
            Payload::None,
        ),
        route(
            Method::POST,
            "/v1/connectors",
            "/v1/connectors".into(),
            Tenant(Role::Editor),
            false,
            Payload::Wasm(airlock_test_artifacts::CONNECTOR_HTTP),
        ),
        route(
            Method::GET,
            "/v1/connectors",
            "/v1/connectors".into(),
            Tenant(Role::Viewer),
            false,
            Payload::None,
        ),
        route(
            Method::GET,
            "/v1/connectors/{name}/versions/{version}",
            github.clone(),
            Tenant(Role::Viewer),
            true,
            Payload::None,
        ),
        route(
            Method::POST,
            "/v1/connectors/{name}/versions/{version}/deprecate",
            format!("{github}/deprecate"),
            Tenant(Role::Editor),
            true,
            Payload::None,
        ),
        route(
            Method::POST,
            "/v1/connectors/{name}/versions/{version}/undeprecate",
            format!("{github}/undeprecate"),
            Tenant(Role::Editor),
            true,
            Payload::None,
        ),
        route(
            Method::POST,
            "/v1/connections",
            "/v1/connections".into(),
            Tenant(Role::Editor),
            // Names A's connector, which B does not have.
            true,
            Payload::Json(
                json!({"connector": "github", "name": "made-by-the-table", "credential": {"api_key": "k"}}),
            ),
        ),
        route(
            Method::GET,
            "/v1/connections",
            "/v1/connections".into(),
            Tenant(Role::Viewer),
            false,
            Payload::None,
        ),
        route(
            Method::GET,
            "/v1/connections/{id}",
            format!("/v1/connections/{connection}"),
            Tenant(Role::Viewer),
            true,
            Payload::None,
        ),
        route(
            Method::PATCH,
            "/v1/connections/{id}",
            format!("/v1/connections/{connection}"),
            Tenant(Role::Editor),
            true,
            // An empty change: the owner's call succeeds and changes nothing.
            Payload::Json(json!({})),
        ),
        route(
            Method::DELETE,
            "/v1/connections/{id}",
            format!("/v1/connections/{connection}"),
            Tenant(Role::Editor),
            true,
            Payload::None,
        ),
        route(
            Method::POST,
            "/v1/connections/{id}/test",
            format!("/v1/connections/{connection}/test"),
            Tenant(Role::Editor),
            true,
            Payload::None,
        ),
        route(
            Method::POST,
            "/v1/connectors/{name}/actions/{action}/invoke",
            // B has a `transform` connector of its own: the 404 must come from A's connection.
            "/v1/connectors/transform/actions/map/invoke".into(),
            Tenant(Role::Editor),
            true,
            Payload::Json(json!({
                "connection": connection,
                "version": a.transform_version,
                "input": {"data": {"user": {"login": "octocat"}}, "mapping": {"who": "/user/login"}},
            })),
        ),
        route(
            Method::POST,
            "/v1/connectors/{name}/actions/{action}/test",
            // As invoke: the 404 must come from A's connection, B's `transform` is its own.
            "/v1/connectors/transform/actions/map/test".into(),
            Tenant(Role::Editor),
            true,
            Payload::Json(json!({
                "connection": connection,
                "version": a.transform_version,
                "input": {"data": {"user": {"login": "octocat"}}, "mapping": {"who": "/user/login"}},
            })),
        ),
        route(
            Method::GET,
            "/v1/usage",
            "/v1/usage".into(),
            Reader(Role::Viewer),
            false,
            Payload::None,
        ),
        // Before the workflow's routes: deleting the workflow deletes its triggers.
        route(
            Method::POST,
            "/v1/workflows/{id}/triggers",
            format!("/v1/workflows/{}/triggers", a.workflow),
            Tenant(Role::Editor),
            true,
            Payload::Json(json!({"kind": "cron", "expression": "0 0 1 1 *"})),
        ),
        route(
            Method::GET,
            "/v1/triggers",
            "/v1/triggers".into(),
            Tenant(Role::Viewer),
            false,
            Payload::None,
        ),
        route(
            Method::GET,
            "/v1/triggers/{id}",
            format!("/v1/triggers/{}", a.trigger),
            Tenant(Role::Viewer),
            true,
            Payload::None,
        ),
        route(
            Method::POST,
            "/v1/triggers/{id}/pause",
            format!("/v1/triggers/{}/pause", a.trigger),
            Tenant(Role::Editor),
            true,
            Payload::None,
        ),
        route(
            Method::POST,
            "/v1/triggers/{id}/resume",
            format!("/v1/triggers/{}/resume", a.trigger),
            Tenant(Role::Editor),
            true,
            Payload::None,
        ),
        route(
            Method::POST,
            "/v1/triggers/{id}/rotate-secret",
            format!("/v1/triggers/{}/rotate-secret", a.trigger),
            Tenant(Role::Editor),
            true,
            Payload::Json(json!({})),
        ),
        route(
            Method::DELETE,
            "/v1/triggers/{id}",
            format!("/v1/triggers/{}", a.trigger),
            Tenant(Role::Editor),
            true,
            Payload::None,
        ),
        route(
            Method::POST,
            "/hooks/{id}",
            format!("/hooks/{}", a.trigger),
            Signed,
            true,
            Payload::Json(json!({"unsigned": true})),
        ),
        route(
            Method::POST,
            "/v1/workflows",
            "/v1/workflows".into(),
            Tenant(Role::Editor),
            true,
            Payload::Json(
                json!({"name": "made by the table", "steps": workflow_steps(connection)}),
            ),
        ),
        route(
            Method::GET,
            "/v1/workflows",
            "/v1/workflows".into(),
            Tenant(Role::Viewer),
            false,
            Payload::None,
        ),
        route(
            Method::GET,
            "/v1/workflows/{id}",
            format!("/v1/workflows/{}", a.workflow),
            Tenant(Role::Viewer),
            true,
            Payload::None,
        ),
        route(
            Method::PUT,
            "/v1/workflows/{id}",
            format!("/v1/workflows/{}", a.workflow),
            Tenant(Role::Editor),
            true,
            Payload::Json(json!({"steps": workflow_steps(connection)})),
        ),
        route(
            Method::DELETE,
            "/v1/workflows/{id}",
            format!("/v1/workflows/{}", a.workflow),
            Tenant(Role::Editor),
            true,
            Payload::None,
        ),
        route(
            Method::POST,
            "/v1/workflows/{id}/runs",
            format!("/v1/workflows/{}/runs", a.workflow),
            Tenant(Role::Editor),
            true,
            Payload::Json(json!({"input": {}})),
        ),
        route(
            Method::GET,
            "/v1/runs",
            "/v1/runs".into(),
            Reader(Role::Viewer),
            false,
            Payload::None,
        ),
        route(
            Method::GET,
            "/v1/runs/{id}",
            format!("/v1/runs/{}", a.run),
            Reader(Role::Viewer),
            true,
            Payload::None,
        ),
        route(
            Method::GET,
            "/v1/runs/{id}/iterations",
            format!("/v1/runs/{}/iterations", a.run),
            Reader(Role::Viewer),
            true,
            Payload::None,
        ),
        // Cancel before replay: A's editor cancels the queued run, then replays it.
        route(
            Method::POST,
            "/v1/runs/{id}/cancel",
            format!("/v1/runs/{}/cancel", a.run),
            Tenant(Role::Editor),
            true,
            Payload::None,
        ),
        route(
            Method::POST,
            "/v1/runs/{id}/replay",
            format!("/v1/runs/{}/replay", a.run),
            Tenant(Role::Editor),
            true,
            Payload::Json(json!({})),
        ),
        route(
            Method::GET,
            "/v1/dead-letters",
            "/v1/dead-letters".into(),
            Reader(Role::Viewer),
            false,
            Payload::None,
        ),
        // Each id is replayed or refused on its own: B gets a report refusing A's run as
        // not found, never a 404 for the batch.
        route(
            Method::POST,
            "/v1/dead-letters/replay",
            "/v1/dead-letters/replay".into(),
            Tenant(Role::Editor),
            false,
            Payload::Json(json!({"run_ids": [a.run]})),
        ),
        // B has a webhook of its own (set below): B's callers read and change it, never A's.
        route(
            Method::GET,
            "/v1/dead-letters/webhook",
            "/v1/dead-letters/webhook".into(),
            Reader(Role::Viewer),
            false,
            Payload::None,
        ),
        route(
            Method::PUT,
            "/v1/dead-letters/webhook",
            "/v1/dead-letters/webhook".into(),
            Tenant(Role::Admin),
            false,
            Payload::Json(json!({"url": "https://localhost/b-dead-letters"})),
        ),
        route(
            Method::GET,
            "/v1/dead-letters/webhook/notices",
            "/v1/dead-letters/webhook/notices".into(),
            Reader(Role::Viewer),
            false,
            Payload::None,
        ),
        route(
            Method::POST,
            "/v1/dead-letters/webhook/test",
            "/v1/dead-letters/webhook/test".into(),
            Tenant(Role::Editor),
            false,
            Payload::None,
        ),
        // Last of the webhook's: B's admin removes B's.
        route(
            Method::DELETE,
            "/v1/dead-letters/webhook",
            "/v1/dead-letters/webhook".into(),
            Tenant(Role::Admin),
            false,
            Payload::None,
        ),
        route(
            Method::GET,
            "/v1/access",
            "/v1/access".into(),
            Reader(Role::Admin),
            false,
            Payload::None,
        ),
        route(
            Method::GET,
            "/v1/audit",
            "/v1/audit".into(),
            TenantOrOperator(Role::Viewer),
            false,
            Payload::None,
        ),
        route(
            Method::GET,
            "/v1/usage/daily",
            "/v1/usage/daily".into(),
            Reader(Role::Viewer),
            false,
            Payload::None,
        ),
        route(
            Method::GET,
            "/healthz",
            "/healthz".into(),
            Public,
            false,
            Payload::None,
        ),
        route(
            Method::GET,
            "/readyz",
            "/readyz".into(),
            Public,
            false,
            Payload::None,
        ),
        route(
            Method::GET,
            "/openapi.json",
            "/openapi.json".into(),
            Public,
            false,
            Payload::None,
        ),
    ]
}

async fn call(server: &TestServer, route: &Route, token: Option<&str>) -> Reply {
    let body = match &route.payload {
        Payload::None => Body::None,
        Payload::Json(value) => Body::Json(value.clone()),
        Payload::Wasm(path) => Body::Raw(
            "application/wasm",
            std::fs::read(path).expect("guest built"),
        ),
    };
    server
        .call(route.method.clone(), &route.path, token, body)
        .await
}

/// The operations of the served document, as (METHOD, path template), and whether each
/// declares a security requirement.
fn spec_operations(doc: &Value) -> Vec<(String, String, bool)> {
    let paths = doc["paths"].as_object().expect("paths in /openapi.json");
    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in [
            "get", "put", "post", "delete", "patch", "head", "options", "trace",
        ] {
            if let Some(operation) = item.get(method) {
                let secured = operation["security"]
                    .as_array()
                    .is_some_and(|s| !s.is_empty());
                operations.push((method.to_uppercase(), path.clone(), secured));
            }
        }
    }
    operations
}

fn fits_template(path: &str, template: &str) -> bool {
    let (path, template): (Vec<_>, Vec<_>) =
        (path.split('/').collect(), template.split('/').collect());
    path.len() == template.len()
        && path
            .iter()
            .zip(&template)
            .all(|(p, t)| p == t || (t.starts_with('{') && t.ends_with('}') && !p.is_empty()))
}

async fn every_openapi_route_keeps_tenants_apart_and_enforces_roles(db: Db) {
    // No workers: A's run stays queued, so it can be cancelled and replayed by the table.
    let mut options = crate::support::options();
    options.engine.pool_size = 8;
    let Some(server) = TestServer::start_configured(db, options, |c| c.workers = 0).await else {
        return;
    };
    let a = tenant_a(&server).await;
    server.tenant(TENANT_C).await;
    let b = "tb-isolation";
    let b_admin = server.tenant(b).await;
    // B has its own `transform` (so invoking it with A's connection is about the connection)
    // and nothing named `github`.
    let b_transform = server
        .upload(&b_admin, airlock_test_artifacts::CONNECTOR_TRANSFORM)
        .await;
    assert_eq!(b_transform.status, 201, "{}", b_transform.text);
    let b_hook = server
        .put(
            "/v1/dead-letters/webhook",
            &b_admin,
            json!({"url": "https://localhost/b-dead-letters"}),
        )
        .await;
    assert_eq!(b_hook.status, 201, "{}", b_hook.text);
    let routes = table(&a);

    // (a) The table and the served document describe the same operations.
    let doc = server
        .call(Method::GET, "/openapi.json", None, Body::None)
        .await;
    assert_eq!(doc.status, 200, "{}", doc.text);
    let operations = spec_operations(&doc.body);
    let in_spec: BTreeSet<(String, String)> = operations
        .iter()
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect();
    let in_table: BTreeSet<(String, String)> = routes
        .iter()
        .map(|r| (r.method.as_str().to_owned(), r.template.to_owned()))
        .collect();
    assert_eq!(
        in_table.len(),
        routes.len(),
        "a route is twice in the table"
    );
    let uncovered: Vec<_> = in_spec.difference(&in_table).collect();
    assert!(
        uncovered.is_empty(),
        "routes in /openapi.json that the isolation table does not cover: {uncovered:?}"
    );
    let stale: Vec<_> = in_table.difference(&in_spec).collect();
    assert!(
        stale.is_empty(),
        "routes in the isolation table that /openapi.json lacks: {stale:?}"
    );
    for route in &routes {
        assert!(
            fits_template(&route.path, route.template),
            "{} does not fill {}",
            route.path,
            route.template
        );
        let secured = operations
            .iter()
            .find(|(m, p, _)| m == route.method.as_str() && p == route.template)
            .is_some_and(|(_, _, secured)| *secured);
        assert_eq!(
            secured,
            !matches!(route.access, Access::Public | Access::Signed),
            "{} {}: the document's security requirement disagrees with the table",
            route.method,
            route.template
        );
    }

    // (b), (c), (d): everyone but A's writers, on everything.
    let operator = server.operator();
    let callers: Vec<(&str, Option<String>, Who)> = vec![
        ("no token", None, Who::Anonymous),
        (
            "a garbage token",
            Some("not-a-jwt".to_owned()),
            Who::Anonymous,
        ),
        ("the operator", Some(operator.clone()), Who::Operator),
        (
            "B's viewer",
            Some(server.token(Some(b), Role::Viewer)),
            Who::Other(Role::Viewer),
        ),
        (
            "B's editor",
            Some(server.token(Some(b), Role::Editor)),
            Who::Other(Role::Editor),
        ),
        ("B's admin", Some(b_admin.clone()), Who::Other(Role::Admin)),
        (
            "A's viewer",
            Some(server.token(Some(&a.tenant), Role::Viewer)),
            Who::Owner(Role::Viewer),
        ),
        (
            "A's admin",
            Some(server.token(Some(&a.tenant), Role::Admin)),
            Who::Owner(Role::Admin),
        ),
    ];
    let a_reader = server.token(Some(&a.tenant), Role::Admin);
    let audit_before = audit_ids(&server, &a_reader).await;
    let mut calls = 0;
    for (label, token, who) in &callers {
        for route in &routes {
            let expect = expected(route, *who);
            // A's own successful writes run once, last, as A's editor (below).
            if matches!(who, Who::Owner(_))
                && matches!(expect, Expect::Success)
                && route.method != Method::GET
            {
                continue;
            }
            let reply = call(&server, route, token.as_deref()).await;
            calls += 1;
            let what = format!("{label}: {} {}", route.method, route.path);
            check(&reply, &expect, &what);
            let may_see_a = matches!(who, Who::Owner(_))
                || (*who == Who::Operator
                    && matches!(
                        route.access,
                        Access::Operator | Access::MemberOrOperator | Access::TenantOrOperator(_)
                    ));
            if !may_see_a {
                for marker in &a.markers {
                    assert!(
                        !reply.text.contains(marker.as_str()),
                        "{what}: the reply shows A's {marker:?}: {}",
                        reply.text
                    );
                }
            }
        }
    }

    // Nothing B or the operator did changed A's resources.
    let a_admin = server.token(Some(&a.tenant), Role::Admin);
    let connection = server
        .get(
            &format!("/v1/connections/{}", a.transform_connection),
            &a_admin,
        )
        .await;
    assert_eq!(connection.status, 200, "{}", connection.text);
    let listed = server.get("/v1/connections", &a_admin).await;
    assert_eq!(
        listed.body.as_array().map(Vec::len),
        Some(2),
        "{}",
        listed.text
    );
    let github = server
        .get(
            &format!("/v1/connectors/github/versions/{}", a.github_version),
            &a_admin,
        )
        .await;
    assert_eq!(github.body["deprecated"], json!(false), "{}", github.text);
    let limits = server
        .get(&format!("/v1/tenants/{}/limits", a.tenant), &a_admin)
        .await;
    assert_eq!(limits.body["runs_per_hour"], json!(77), "{}", limits.text);
    let usage = server.get("/v1/usage", &a_admin).await;
    assert_eq!(usage.body["runs_this_hour"], json!(1), "{}", usage.text);
    let run = server.get(&format!("/v1/runs/{}", a.run), &a_admin).await;
    assert_eq!(run.body["state"], json!("queued"), "{}", run.text);
    // The operator views: an operator reads A's runs, dead letters and usage by naming A.
    let operator = server.operator();
    for path in [
        "/v1/runs",
        "/v1/dead-letters",
        "/v1/usage",
        "/v1/usage/daily",
    ] {
        let named = server
            .get(&format!("{path}?tenant={}", a.tenant), &operator)
            .await;
        assert_eq!(named.status, 200, "{path}: {}", named.text);
    }
    let runs = server
        .get(&format!("/v1/runs?tenant={}", a.tenant), &operator)
        .await;
    assert!(runs.text.contains(&a.run), "{}", runs.text);
    let one = server
        .get(
            &format!("/v1/runs/{}?tenant={}", a.run, a.tenant),
            &operator,
        )
        .await;
    assert_eq!(one.status, 200, "{}", one.text);
    let unknown = server
        .get("/v1/runs?tenant=no-such-tenant", &operator)
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    // A member cannot use the operator's parameter to reach another tenant: the answer is
    // that of a tenant that does not exist. Naming its own is the default made explicit.
    let b_admin = server.token(Some(b), Role::Admin);
    for path in [
        "/v1/runs",
        "/v1/dead-letters",
        "/v1/usage",
        "/v1/usage/daily",
        "/v1/audit",
        "/v1/access",
    ] {
        let sideways = server
            .get(&format!("{path}?tenant={}", a.tenant), &b_admin)
            .await;
        assert_eq!(sideways.status, 404, "{path}: {}", sideways.text);
        assert!(!sideways.text.contains(&a.run), "{}", sideways.text);
        let absent = server
            .get(&format!("{path}?tenant=no-such"), &b_admin)
            .await;
        assert_eq!(absent.status, 404, "{path}: {}", absent.text);
        assert_eq!(absent.body["type"], sideways.body["type"], "{path}");
        let own = server.get(&format!("{path}?tenant={b}"), &b_admin).await;
        assert_eq!(own.status, 200, "{path}: {}", own.text);
    }
    let one = server
        .get(&format!("/v1/runs/{}?tenant={}", a.run, a.tenant), &b_admin)
        .await;
    assert_eq!(one.status, 404, "{}", one.text);

    // The only changes in A's audit log: the operator's (no-op) writes of A's limits.
    let audit = server.get("/v1/audit?limit=500", &a_admin).await;
    for record in audit.body.as_array().expect("audit") {
        if !audit_before.contains(record["id"].as_str().unwrap_or_default()) {
            assert_eq!(record["detail"]["role"], json!("operator"), "{record}");
            assert!(
                matches!(
                    record["action"].as_str(),
                    Some("PUT /v1/tenants/{id}/limits" | "PATCH /v1/tenants/{id}/limits")
                ),
                "{record}"
            );
        }
    }

    // A's editor does everything the table lets it, destructive calls last: the same filled
    // paths and bodies that B was refused work for their owner.
    let a_editor = server.token(Some(&a.tenant), Role::Editor);
    let mut owned: Vec<&Route> = routes.iter().collect();
    owned.sort_by_key(|r| (r.method == Method::DELETE, r.path.ends_with("/deprecate")));
    for route in owned {
        let expect = expected(route, Who::Owner(Role::Editor));
        let reply = call(&server, route, Some(&a_editor)).await;
        calls += 1;
        check(
            &reply,
            &expect,
            &format!("A's editor: {} {}", route.method, route.path),
        );
    }
    // The fixture's run, the table's run, the table's invocation and its testAction (a
    // testAction runs the action, so it counts as one), and A's replay (a replay is a run;
    // B's refused replays count nothing).
    let usage = server.get("/v1/usage", &a_admin).await;
    assert_eq!(usage.body["runs_this_hour"], json!(5), "{}", usage.text);
    let audit = server.get("/v1/audit", &a_admin).await;
    let actions: Vec<&str> = audit
        .body
        .as_array()
        .expect("audit")
        .iter()
        .filter_map(|r| r["action"].as_str())
        .filter(|a| matches!(*a, "replay" | "cancel"))
        .collect();
    assert_eq!(actions, ["replay", "cancel"], "{}", audit.text);
    eprintln!("api_isolation: {} routes, {calls} calls", routes.len());
}

fn check(reply: &Reply, expect: &Expect, what: &str) {
    match expect {
        Expect::Success => assert!(
            (200..300).contains(&reply.status),
            "{what}: expected success, got {}: {}",
            reply.status,
            reply.text
        ),
        Expect::Problem(status, slug) => {
            assert_eq!(reply.status, *status, "{what}: {}", reply.text);
            assert_problem(reply, *status, slug);
            // A bad signature is not a login to retry: no challenge.
            if *status == 401 && *slug == "unauthorized" {
                assert_eq!(
                    reply
                        .headers
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok()),
                    Some("Bearer"),
                    "{what}"
                );
            }
        }
    }
    if !(200..300).contains(&reply.status) {
        assert!(
            reply.content_type.starts_with("application/problem+json"),
            "{what}: a refusal that is not a problem document ({:?}): {}",
            reply.content_type,
            reply.text
        );
    }
}

async fn audit_ids(server: &TestServer, token: &str) -> std::collections::HashSet<String> {
    let audit = server.get("/v1/audit?limit=500", token).await;
    audit
        .body
        .as_array()
        .expect("audit")
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect()
}
