//! Changing a connection (`PATCH /v1/connections/{id}`) and replaying what failed because of
//! it: a fixed credential reaches the next call and a replayed run, a test before saving keeps
//! a bad credential out, every change is checked as a creation is; and a replay with the
//! workflow's current version. Both databases, against a GitHub stand-in that accepts one key.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use crate::api_canary::every_cell;
use crate::api_support::{Db, TestServer, assert_problem, on_both_databases};
use crate::runs_support::{create_workflow, ended, fast_workers, in_state, start_run, wait_for};
use crate::support::{Server, options_for_tls};

on_both_databases!(
    a_replaced_credential_reaches_the_next_call_and_a_replayed_run,
    a_connection_change_is_checked_as_a_creation_is,
    a_replay_can_take_the_workflows_current_version,
    a_changed_credential_takes_the_refresh_lease_away,
);

/// What the stand-in saw: each request's `Authorization` and path.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// GitHub's `/user` and issue list: 401 unless the bearer token is `good`, 404 for the
/// repository `missing`.
fn github(seen: Seen, good: String) -> Router {
    let check = move |headers: &HeaderMap, path: String| -> bool {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        let ok = auth == format!("Bearer {good}");
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((auth, path));
        ok
    };
    let user = check.clone();
    Router::new()
        .route(
            "/user",
            get(move |headers: HeaderMap| {
                let ok = user(&headers, "/user".into());
                async move {
                    if ok {
                        axum::Json(json!({"login": "octocat"})).into_response()
                    } else {
                        unauthorized()
                    }
                }
            }),
        )
        .route(
            "/repos/{owner}/{repo}/issues",
            get(
                move |Path((owner, repo)): Path<(String, String)>, headers: HeaderMap| {
                    let ok = check(&headers, format!("/repos/{owner}/{repo}/issues"));
                    async move {
                        if !ok {
                            unauthorized()
                        } else if repo == "missing" {
                            (
                                StatusCode::NOT_FOUND,
                                axum::Json(json!({"message": "Not Found"})),
                            )
                                .into_response()
                        } else {
                            axum::Json(json!([])).into_response()
                        }
                    }
                },
            ),
        )
}

fn unauthorized() -> axum::response::Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"message": "Bad credentials"})),
    )
        .into_response()
}

fn calls_to(seen: &Seen, path: &str) -> usize {
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(_, p)| p == path)
        .count()
}

/// A server whose `api.github.com` is the stand-in, tenant `acme` with the GitHub connector.
async fn server(db: Db, upstream: &Server) -> Option<(TestServer, String)> {
    let mut options = options_for_tls(upstream, &["api.github.com"]);
    options.engine.pool_size = 4;
    let server = TestServer::start_configured(db, options, fast_workers).await?;
    let admin = server.tenant("acme").await;
    let uploaded = server
        .upload(&admin, airlock_test_artifacts::CONNECTOR_GITHUB)
        .await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    Some((server, admin))
}

async fn github_connection(server: &TestServer, token: &str, name: &str, key: &str) -> String {
    let created = server
        .post(
            "/v1/connections",
            token,
            json!({"connector": "github", "name": name, "credential": {"api_key": key}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    created.body["id"].as_str().expect("id").to_owned()
}

fn issues_step(id: &str, connection: &str, repo: &str) -> Value {
    json!({"id": id, "connector": "github", "action": "list_issues", "connection": connection,
        "input": {"owner": "o", "repo": repo}})
}

async fn list_issues(server: &TestServer, token: &str, connection: &str) -> Value {
    let reply = server
        .post(
            "/v1/connectors/github/actions/list_issues/invoke",
            token,
            json!({"connection": connection, "input": {"owner": "o", "repo": "r"}}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body
}

async fn a_replaced_credential_reaches_the_next_call_and_a_replayed_run(db: Db) {
    let old = format!("canary-old-{}", uuid::Uuid::new_v4().simple());
    let wrong = format!("canary-wrong-{}", uuid::Uuid::new_v4().simple());
    let new = format!("canary-new-{}", uuid::Uuid::new_v4().simple());
    let seen: Seen = Arc::default();
    let upstream = Server::start_tls(github(seen.clone(), new.clone()), &["api.github.com"]).await;
    let Some((server, admin)) = server(db, &upstream).await else {
        return;
    };
    let editor = server.token(Some("acme"), airlock::api::Role::Editor);
    let mut responses = String::new();
    let gh = github_connection(&server, &admin, "gh", &old).await;
    let workflow = create_workflow(
        &server,
        &admin,
        "issues",
        json!([issues_step("issues", &gh, "r")]),
    )
    .await;

    // The credential expired: the run is dead-lettered with an auth error.
    let run = start_run(&server, &admin, &workflow, json!({})).await;
    let dead = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(dead["state"], "dead", "{dead}");

    // A replacement that fails the connector's test is not saved; a test alone tests the
    // connection as it is.
    let before = server.get(&format!("/v1/connections/{gh}"), &admin).await;
    let as_is = server
        .patch(
            &format!("/v1/connections/{gh}"),
            &editor,
            json!({"test": true}),
        )
        .await;
    assert_problem(&as_is, 422, "validation");
    assert_eq!(as_is.body["field"], "test", "{}", as_is.text);
    let refused = server
        .patch(
            &format!("/v1/connections/{gh}"),
            &editor,
            json!({"credential": {"api_key": wrong}, "test": true}),
        )
        .await;
    assert_problem(&refused, 422, "validation");
    assert_eq!(refused.body["field"], "test", "{}", refused.text);
    responses.push_str(&refused.text);
    let after = server.get(&format!("/v1/connections/{gh}"), &admin).await;
    assert_eq!(
        after.body, before.body,
        "a refused change changed the connection"
    );
    assert_eq!(list_issues(&server, &admin, &gh).await["ok"], false);

    // The fixed credential: tested, saved, masked, and used by the very next call.
    let fixed = server
        .patch(
            &format!("/v1/connections/{gh}"),
            &editor,
            json!({"credential": {"api_key": new}, "test": true}),
        )
        .await;
    assert_eq!(fixed.status, 200, "{}", fixed.text);
    assert_eq!(fixed.body["credential"]["api_key"], "***", "{}", fixed.text);
    assert_eq!(fixed.body["id"], json!(gh));
    assert!(fixed.body["updated_at_ms"].as_i64() >= before.body["updated_at_ms"].as_i64());
    responses.push_str(&fixed.text);
    let ok = list_issues(&server, &admin, &gh).await;
    assert_eq!(ok["ok"], true, "{ok}");

    // The dead run, replayed as it ran (same workflow version and connection), succeeds.
    let replayed = server
        .post(&format!("/v1/runs/{run}/replay"), &editor, json!({}))
        .await;
    assert_eq!(replayed.status, 200, "{}", replayed.text);
    let done = wait_for(&server, &admin, &run, ended).await;
    assert_eq!(done["state"], "succeeded", "{done}");

    // The change is audited, naming the connection and no value.
    let audit = server.get("/v1/audit?limit=500", &admin).await;
    let patches: Vec<&Value> = audit
        .body
        .as_array()
        .expect("audit")
        .iter()
        .filter(|r| {
            r["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("PATCH "))
        })
        .collect();
    assert_eq!(patches.len(), 1, "one change saved: {}", audit.text);
    assert!(
        patches[0]["target"]
            .as_str()
            .is_some_and(|t| t.contains(&gh)),
        "{}",
        audit.text
    );
    responses.push_str(&audit.text);

    // Upstream saw each key where it was used; no response and no database cell holds one.
    let used = |key: &str| {
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(auth, _)| auth.contains(key))
            .count()
    };
    assert!(used(&old) >= 2 && used(&wrong) == 1 && used(&new) >= 3);
    let (cells, _) = every_cell(&server, db).await;
    for key in [&old, &wrong, &new] {
        assert!(
            !responses.contains(key.as_str()),
            "a response holds a credential"
        );
        assert!(
            !cells.contains(key.as_str()),
            "the database holds a credential in clear"
        );
    }
}

async fn a_connection_change_is_checked_as_a_creation_is(db: Db) {
    let good = format!("key-{}", uuid::Uuid::new_v4().simple());
    let seen: Seen = Arc::default();
    let upstream = Server::start_tls(github(seen, good.clone()), &["api.github.com"]).await;
    let Some((server, admin)) = server(db, &upstream).await else {
        return;
    };
    let viewer = server.token(Some("acme"), airlock::api::Role::Viewer);
    let gh = github_connection(&server, &admin, "gh", &good).await;
    let _other = github_connection(&server, &admin, "taken", &good).await;
    let path = format!("/v1/connections/{gh}");
    let original = server.get(&path, &admin).await;
    let body = json!({"name": "renamed"});

    let unknown = server
        .patch("/v1/connections/conn_nope", &admin, body.clone())
        .await;
    assert_problem(&unknown, 404, "not-found");
    let stranger = server.tenant("globex").await;
    assert_problem(
        &server.patch(&path, &stranger, body.clone()).await,
        404,
        "not-found",
    );
    assert_problem(
        &server.patch(&path, &viewer, body.clone()).await,
        403,
        "forbidden",
    );
    for (change, field) in [
        // The required field is missing before the stray one is seen.
        (
            json!({"credential": {"password": "x"}}),
            "credential.api_key",
        ),
        (
            json!({"credential": {"api_key": "k", "password": "x"}}),
            "credential.password",
        ),
        (json!({"credential": {"api_key": ""}}), "credential.api_key"),
        (json!({"credential": "key"}), "credential"),
        (json!({"name": "  "}), "name"),
    ] {
        let refused = server.patch(&path, &admin, change.clone()).await;
        assert_problem(&refused, 422, "validation");
        assert_eq!(refused.body["field"], field, "{change}: {}", refused.text);
    }
    let conflict = server.patch(&path, &admin, json!({"name": "taken"})).await;
    assert_problem(&conflict, 409, "conflict");
    let unknown_field = server
        .patch(&path, &admin, json!({"connector": "http"}))
        .await;
    assert!(
        unknown_field.status == 400 || unknown_field.status == 422,
        "{}",
        unknown_field.text
    );
    // Nothing refused changed anything.
    assert_eq!(server.get(&path, &admin).await.body, original.body);

    // An empty change changes nothing; a rename keeps the credential.
    let empty = server.patch(&path, &admin, json!({})).await;
    assert_eq!(empty.status, 200, "{}", empty.text);
    assert_eq!(empty.body, original.body);
    let renamed = server.patch(&path, &admin, body).await;
    assert_eq!(renamed.status, 200, "{}", renamed.text);
    assert_eq!(renamed.body["name"], "renamed");
    assert_eq!(list_issues(&server, &admin, &gh).await["ok"], true);

    // The `http` connector's credential needs explicit hosts in its config, on a change as
    // on a creation.
    let http = server
        .upload(&admin, airlock_test_artifacts::CONNECTOR_HTTP)
        .await;
    assert_eq!(http.status, 201, "{}", http.text);
    let created = server
        .post(
            "/v1/connections",
            &admin,
            json!({"connector": "http", "name": "crm", "credential": {"api_key": "k"},
                "config": {"credential_hosts": ["api.crm.test"]}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let crm = created.body["id"].as_str().expect("id");
    let hostless = server
        .patch(
            &format!("/v1/connections/{crm}"),
            &admin,
            json!({"config": {}}),
        )
        .await;
    assert_problem(&hostless, 422, "validation");
    assert_eq!(hostless.body["field"], "config", "{}", hostless.text);
    // The stored key stays with its hosts: a config alone cannot send it elsewhere (an editor
    // cannot read it, and must not be able to redirect it); with the key given again it can.
    for hosts in [json!(["evil.test"]), json!(["api.crm.test", "evil.test"])] {
        let redirected = server
            .patch(
                &format!("/v1/connections/{crm}"),
                &admin,
                json!({"config": {"credential_hosts": hosts}, "test": true}),
            )
            .await;
        assert_problem(&redirected, 422, "validation");
        assert_eq!(
            redirected.body["field"], "credential",
            "{}",
            redirected.text
        );
    }
    let narrowed = server
        .patch(
            &format!("/v1/connections/{crm}"),
            &admin,
            json!({"config": {"credential_hosts": ["api.crm.test"], "auth_header": "X-Api-Key"}}),
        )
        .await;
    assert_eq!(narrowed.status, 200, "{}", narrowed.text);
    let moved = server
        .patch(
            &format!("/v1/connections/{crm}"),
            &admin,
            json!({"config": {"credential_hosts": ["eu.crm.test"]}, "credential": {"api_key": "k2"}}),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    assert_eq!(
        moved.body["config"]["credential_hosts"],
        json!(["eu.crm.test"])
    );
    assert_eq!(moved.body["credential"]["api_key"], "***");
}

async fn a_replay_can_take_the_workflows_current_version(db: Db) {
    let good = format!("key-{}", uuid::Uuid::new_v4().simple());
    let seen: Seen = Arc::default();
    let upstream = Server::start_tls(github(seen.clone(), good.clone()), &["api.github.com"]).await;
    let Some((server, admin)) = server(db, &upstream).await else {
        return;
    };
    let gh = github_connection(&server, &admin, "gh", &good).await;
    // Version 1's second step reads a repository that does not exist: runs die there.
    let workflow = create_workflow(
        &server,
        &admin,
        "two-steps",
        json!([issues_step("a", &gh, "r"), issues_step("b", &gh, "missing")]),
    )
    .await;
    let one = start_run(&server, &admin, &workflow, json!({})).await;
    let two = start_run(&server, &admin, &workflow, json!({})).await;
    for run in [&one, &two] {
        assert_eq!(wait_for(&server, &admin, run, ended).await["state"], "dead");
    }
    let replay = |run: String, body: Value| {
        let server = &server;
        let admin = &admin;
        async move {
            server
                .post(&format!("/v1/runs/{run}/replay"), admin, body)
                .await
        }
    };

    // As it ran (the default): the same version, the same failure.
    let again = replay(one.clone(), json!({"workflow_version": "as_ran"})).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(
        wait_for(&server, &admin, &one, ended).await["state"],
        "dead"
    );

    // Version 2 renames the first step: its journaled output cannot stand for it.
    let put = |steps: Value| {
        let server = &server;
        let admin = &admin;
        let workflow = workflow.clone();
        async move {
            let reply = server
                .put(
                    &format!("/v1/workflows/{workflow}"),
                    admin,
                    json!({"steps": steps}),
                )
                .await;
            assert_eq!(reply.status, 200, "{}", reply.text);
        }
    };
    put(json!([
        issues_step("first", &gh, "r"),
        issues_step("b", &gh, "r")
    ]))
    .await;
    let mismatch = replay(two.clone(), json!({"workflow_version": "current"})).await;
    assert_problem(&mismatch, 422, "validation");
    assert_eq!(
        mismatch.body["field"], "workflow_version",
        "{}",
        mismatch.text
    );
    let still = server.get(&format!("/v1/runs/{two}"), &admin).await;
    assert_eq!(
        still.body["state"], "dead",
        "a refused replay changed the run"
    );
    // From the renamed step it can: nothing journaled is kept.
    let from_first = replay(
        two.clone(),
        json!({"workflow_version": "current", "from_step": "first"}),
    )
    .await;
    assert_eq!(from_first.status, 200, "{}", from_first.text);
    let done = wait_for(&server, &admin, &two, in_state("succeeded")).await;
    assert_eq!(done["workflow_version"], 2, "{done}");

    // Version 3 fixes step b and keeps step a: the replay runs b alone on version 3.
    put(json!([
        issues_step("a", &gh, "r"),
        issues_step("b", &gh, "r")
    ]))
    .await;
    let fixed = replay(one.clone(), json!({"workflow_version": "current"})).await;
    assert_eq!(fixed.status, 200, "{}", fixed.text);
    assert_eq!(fixed.body["workflow_version"], 3, "{}", fixed.text);
    assert_eq!(
        wait_for(&server, &admin, &one, ended).await["state"],
        "succeeded"
    );
    // `r` was read by each run's first attempt at step a (2), the second run's replay from
    // `first` (2) and the first run's step b on version 3 (1): step a was not run again.
    assert_eq!(calls_to(&seen, "/repos/o/r/issues"), 5);
    let audit = server.get("/v1/audit?limit=500", &admin).await;
    let record = audit
        .body
        .as_array()
        .expect("audit")
        .iter()
        .find(|r| r["action"] == "replay" && r["run_id"] == json!(one))
        .cloned()
        .expect("the replay's record");
    assert_eq!(
        record["detail"]["workflow_version"],
        json!({"ran": 1, "now": 3})
    );

    // A deleted workflow has no current version; replaying as it ran still works.
    put(json!([issues_step("a", &gh, "missing")])).await;
    let three = start_run(&server, &admin, &workflow, json!({})).await;
    assert_eq!(
        wait_for(&server, &admin, &three, ended).await["state"],
        "dead"
    );
    let deleted = server
        .delete(&format!("/v1/workflows/{workflow}"), &admin)
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let gone = replay(three.clone(), json!({"workflow_version": "current"})).await;
    assert_problem(&gone, 422, "validation");
    assert_eq!(gone.body["field"], "workflow_version", "{}", gone.text);
    let as_ran = replay(three.clone(), json!({})).await;
    assert_eq!(as_ran.status, 200, "{}", as_ran.text);
}

/// An OAuth2 refresh of the old credential that is in flight when the credential is replaced
/// must not write its tokens over the new one: a new credential drops the refresh lease, so
/// the refresher's write (fenced by the lease) finds it gone. A rename leaves the lease alone.
async fn a_changed_credential_takes_the_refresh_lease_away(db: Db) {
    use airlock::store::{ConnectionChange, NewCredential};
    let seen: Seen = Arc::default();
    let upstream = Server::start_tls(github(seen, "k".into()), &["api.github.com"]).await;
    let Some((server, admin)) = server(db, &upstream).await else {
        return;
    };
    let gh = github_connection(&server, &admin, "gh", "k").await;
    let store = server.state.store();
    let now = airlock::store::now_ms();
    let refresh = |owner: &'static str| {
        let store = store.clone();
        let gh = gh.clone();
        async move {
            assert!(
                store
                    .try_refresh_lease("acme", &gh, owner, now, now + 60_000)
                    .await
                    .expect("lease"),
                "{owner} takes the lease"
            );
        }
    };
    let finish = |owner: &'static str| {
        let store = store.clone();
        let gh = gh.clone();
        async move {
            store
                .finish_refresh("acme", &gh, owner, &json!({}), "refreshed-envelope")
                .await
                .expect("finish")
        }
    };

    refresh("p1").await;
    store
        .update_connection(
            "acme",
            &gh,
            ConnectionChange {
                name: Some("renamed".into()),
                ..ConnectionChange::default()
            },
        )
        .await
        .expect("rename");
    assert!(finish("p1").await, "a rename does not take the lease");

    refresh("p2").await;
    let replaced = store
        .update_connection(
            "acme",
            &gh,
            ConnectionChange {
                credential: Some(NewCredential {
                    auth_type: airlock::model::AuthType::ApiKey,
                    fields: json!({}),
                    secret: Some("new-envelope".into()),
                }),
                ..ConnectionChange::default()
            },
        )
        .await
        .expect("replace");
    assert_eq!(replaced.secret.as_deref(), Some("new-envelope"));
    assert!(
        !finish("p2").await,
        "the old refresh wrote after the credential changed"
    );
    let row = store.connection("acme", &gh).await.expect("row");
    assert_eq!(row.secret.as_deref(), Some("new-envelope"));
}
