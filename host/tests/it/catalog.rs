//! The shared connector catalog: the operator publishes once, every tenant invokes, connects
//! and runs workflows with it without uploading; a tenant's own connector of that name wins
//! inside it; a shared deprecation reaches every tenant using the shared version and no
//! tenant with its own. Both databases.

use serde_json::{Value, json};

use crate::api_support::{Body, Db, TestServer, assert_problem, on_both_databases};
use crate::runs_support::{create_workflow, ended, fast_workers, start_run, wait_for};

on_both_databases!(a_shared_connector_serves_every_tenant_and_a_tenants_own_wins);

fn map_input() -> Value {
    json!({"data": {"user": {"login": "octocat"}}, "mapping": {"who": "/user/login"}})
}

async fn invoke(server: &TestServer, token: &str) -> crate::api_support::Reply {
    server
        .post(
            "/v1/connectors/transform/actions/map/invoke",
            token,
            json!({"input": map_input()}),
        )
        .await
}

async fn a_shared_connector_serves_every_tenant_and_a_tenants_own_wins(db: Db) {
    let Some(server) =
        TestServer::start_configured(db, crate::support::options(), fast_workers).await
    else {
        return;
    };
    let operator = server.operator();
    let user = server.tenant("user").await;
    let owner = server.tenant("owner").await;
    let bytes = std::fs::read(airlock_test_artifacts::CONNECTOR_TRANSFORM).expect("guest built");

    // Members cannot publish; the operator can, once.
    let refused = server
        .call(
            axum::http::Method::POST,
            "/v1/catalog/connectors",
            Some(&user),
            Body::Raw("application/wasm", bytes.clone()),
        )
        .await;
    assert_problem(&refused, 403, "forbidden");
    let published = server
        .call(
            axum::http::Method::POST,
            "/v1/catalog/connectors",
            Some(&operator),
            Body::Raw("application/wasm", bytes.clone()),
        )
        .await;
    assert_eq!(published.status, 201, "{}", published.text);
    let version = published.body["version"]
        .as_str()
        .expect("version")
        .to_owned();

    // Every token reads the catalog; a tenant's own list stays its own.
    let listed = server.get("/v1/catalog/connectors", &user).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.body[0]["name"], "transform", "{}", listed.text);
    let own = server.get("/v1/connectors", &user).await;
    assert_eq!(own.body, json!([]), "{}", own.text);
    let shown = server
        .get(
            &format!("/v1/catalog/connectors/transform/versions/{version}"),
            &user,
        )
        .await;
    assert_eq!(shown.status, 200, "{}", shown.text);

    // The user tenant invokes it, connects to it and runs a workflow with it: no upload.
    let invoked = invoke(&server, &user).await;
    assert_eq!(invoked.status, 200, "{}", invoked.text);
    assert_eq!(
        invoked.body["output"],
        json!({"who": "octocat"}),
        "{}",
        invoked.text
    );
    let connection = server
        .post(
            "/v1/connections",
            &user,
            json!({"connector": "transform", "name": "shared", "credential": {}}),
        )
        .await;
    assert_eq!(connection.status, 201, "{}", connection.text);
    let workflow = create_workflow(
        &server,
        &user,
        "shared",
        json!([{"id": "map", "connector": "transform", "action": "map", "input": map_input()}]),
    )
    .await;
    let run = start_run(&server, &user, &workflow, json!({})).await;
    let done = wait_for(&server, &user, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");

    // The owner tenant uploads its own `transform`: inside it, its own wins.
    let uploaded = server
        .upload(&owner, airlock_test_artifacts::CONNECTOR_TRANSFORM)
        .await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);

    // The operator deprecates the shared version: every tenant using it stops using it when
    // no version is named; a tenant with its own is not touched.
    let deprecated = server
        .post(
            &format!("/v1/catalog/connectors/transform/versions/{version}/deprecate"),
            &operator,
            Value::Null,
        )
        .await;
    assert_eq!(deprecated.status, 200, "{}", deprecated.text);
    assert_eq!(deprecated.body["deprecated"], true);
    let gone = invoke(&server, &user).await;
    assert_problem(&gone, 404, "not-found");
    assert_eq!(invoke(&server, &owner).await.status, 200);
    // Named, the deprecated shared version still runs (as a tenant's own would).
    let named = server
        .post(
            "/v1/connectors/transform/actions/map/invoke",
            &user,
            json!({"input": map_input(), "version": version}),
        )
        .await;
    assert_eq!(named.status, 200, "{}", named.text);
    // A member cannot deprecate the shared version through its own routes: it is not its.
    let sideways = server
        .post(
            &format!("/v1/connectors/transform/versions/{version}/undeprecate"),
            &user,
            Value::Null,
        )
        .await;
    assert_problem(&sideways, 404, "not-found");
    let back = server
        .post(
            &format!("/v1/catalog/connectors/transform/versions/{version}/undeprecate"),
            &operator,
            Value::Null,
        )
        .await;
    assert_eq!(back.status, 200, "{}", back.text);
    assert_eq!(invoke(&server, &user).await.status, 200);
}
