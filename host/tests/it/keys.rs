//! `airlock keys list` and `airlock keys retire` as an operator runs them, against the
//! database and key file of a running server: a key is retired only when it is not current,
//! exists, and seals no connection, and every connection still decrypts afterwards.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use airlock::secrets::{Aad, Envelope, KeyId, Keyring};
use reqwest::Method;
use serde_json::json;
use sqlx::Row as _;

use crate::api_support::{Body, Db, TestServer, on_both_databases};

on_both_databases!(
    retire_refuses_a_key_that_still_seals_connections,
    retire_after_rotate_drops_the_old_key_and_connections_still_decrypt,
    webhook_trigger_secrets_are_counted_rotated_and_still_verify,
);

/// Runs `airlock keys <args>` on `data` (its key file, and its SQLite database unless
/// `database_url` names another), with no configuration from this process's environment.
fn keys(data: &Path, database_url: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_airlock"));
    command.arg("keys").args(args).arg("--data-dir").arg(data);
    if let Some(url) = database_url {
        command.args(["--database-url", url]);
    }
    for var in [
        "AIRLOCK_DATA_DIR",
        "AIRLOCK_DATABASE_URL",
        "AIRLOCK_KEYS_FILE",
        "AIRLOCK_MODE",
        "AIRLOCK_JWT_SECRET",
        "AIRLOCK_JWT_SECRET_FILE",
    ] {
        command.env_remove(var);
    }
    command.output().expect("run airlock")
}

/// [`keys`] against a running server's data directory and database, off the async runtime.
async fn server_keys(server: &TestServer, args: &[&str]) -> Output {
    let data = data_dir(server);
    let url = server.database_url.clone();
    let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        keys(&data, Some(&url), &args)
    })
    .await
    .expect("airlock ran")
}

/// `airlock keys list`, split into rows of columns.
async fn list(server: &TestServer) -> Vec<Vec<String>> {
    let out = server_keys(server, &["list"]).await;
    assert_success(&out);
    text(&out.stdout)
        .lines()
        .map(|line| line.split_whitespace().map(str::to_owned).collect())
        .collect()
}

fn data_dir(server: &TestServer) -> PathBuf {
    server.dir.path().join("data")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn id(id: &str) -> KeyId {
    KeyId::new(id).expect("key id")
}

/// Tenant `acme` with no outbound host allowed (testing a connection never leaves the
/// machine), the GitHub connector, and two connections sealed under the server's key.
async fn two_connections(server: &TestServer) -> (String, Vec<String>) {
    let admin = server.tenant("acme").await;
    let limits = json!({"allowed_hosts": []});
    let reply = server
        .put("/v1/tenants/acme/limits", &server.operator(), limits)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let reply = server
        .upload(&admin, airlock_test_artifacts::CONNECTOR_GITHUB)
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let mut ids = Vec::new();
    for name in ["gh1", "gh2"] {
        let body = json!({"connector": "github", "name": name, "credential": {"api_key": format!("key-{name}")}});
        let created = server.post("/v1/connections", &admin, body).await;
        assert_eq!(created.status, 201, "{}", created.text);
        ids.push(created.body["id"].as_str().expect("id").to_owned());
    }
    (admin, ids)
}

/// Every stored envelope opens with the key file's keyring, to the credential it was given.
async fn every_connection_decrypts_with(server: &TestServer, keyring: &Keyring) {
    let pool = server.raw_db().await;
    let rows = sqlx::query("SELECT tenant_id, id, secret FROM connections ORDER BY name")
        .fetch_all(&pool)
        .await
        .expect("rows");
    pool.close().await;
    assert_eq!(rows.len(), 2);
    for (row, name) in rows.iter().zip(["gh1", "gh2"]) {
        let tenant: String = row.try_get("tenant_id").expect("tenant_id");
        let connection: String = row.try_get("id").expect("id");
        let secret: String = row.try_get("secret").expect("secret");
        let envelope = Envelope::decode(&secret).expect("envelope");
        let plain = keyring
            .decrypt(&Aad::new(tenant, connection), &envelope)
            .expect("decrypts");
        let plain: serde_json::Value =
            serde_json::from_slice(plain.expose()).expect("the envelope holds JSON");
        assert_eq!(
            plain,
            serde_json::json!({"api_key": format!("key-{name}")}),
            "{name}"
        );
    }
}

/// The server decrypts the credential to test the connection: a 200 (whatever the guest
/// made of a request with no host allowed) means it did; a failed decrypt is a 500.
async fn server_decrypts(server: &TestServer, admin: &str, connection: &str) {
    let path = format!("/v1/connections/{connection}/test");
    let reply = server
        .call(Method::POST, &path, Some(admin), Body::None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply.body["ok"].is_boolean(), "{}", reply.text);
}

async fn retire_refuses_a_key_that_still_seals_connections(db: Db) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    let (admin, ids) = two_connections(&server).await;
    // A rotation whose re-encryption pass has not run yet: k2 current, both rows under k1.
    let keys_path = data_dir(&server).join("keys.json");
    let mut keyring = Keyring::load(&keys_path).expect("key file");
    assert_eq!(keyring.rotate().expect("rotate"), id("k2"));
    keyring.save(&keys_path).expect("save");
    let before = std::fs::read(&keys_path).expect("key file");

    assert_eq!(
        list(&server).await,
        [
            ["key", "state", "sealed"],
            ["k1", "old", "2"],
            ["k2", "current", "0"]
        ]
    );

    let refused = server_keys(&server, &["retire", "--key-id", "k1"]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    let message = text(&refused.stderr);
    assert!(
        message.contains("2 secret(s) (connection credentials, webhook trigger secrets) are still sealed under key k1")
            && message.contains("airlock keys reencrypt"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(&keys_path).expect("key file"),
        before,
        "a refused retire leaves the key file as it was"
    );
    for connection in &ids {
        server_decrypts(&server, &admin, connection).await;
    }

    // As the refusal says: re-encrypt, then retire.
    assert_success(&server_keys(&server, &["reencrypt"]).await);
    let retired = server_keys(&server, &["retire", "--key-id", "k1"]).await;
    assert_success(&retired);
    assert_eq!(
        list(&server).await,
        [
            ["key", "state", "sealed"],
            ["k1", "retired", "0"],
            ["k2", "current", "2"]
        ]
    );
    // Retiring again is a no-op that succeeds, so tooling can be re-run.
    let again = server_keys(&server, &["retire", "--key-id", "k1"]).await;
    assert_success(&again);
    assert!(
        text(&again.stdout).contains("already retired"),
        "{}",
        text(&again.stdout)
    );
}

async fn retire_after_rotate_drops_the_old_key_and_connections_still_decrypt(db: Db) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    let (admin, ids) = two_connections(&server).await;

    let rotated = server_keys(&server, &["rotate"]).await;
    assert_success(&rotated);
    assert!(
        text(&rotated.stdout).contains("re-encrypted 2 secret(s) under key k2"),
        "{}",
        text(&rotated.stdout)
    );
    let retired = server_keys(&server, &["retire", "--key-id", "k1"]).await;
    assert_success(&retired);
    assert!(
        text(&retired.stdout).contains("retired key k1"),
        "{}",
        text(&retired.stdout)
    );

    let keys_path = data_dir(&server).join("keys.json");
    let keyring = Keyring::load(&keys_path).expect("key file");
    assert_eq!(keyring.key_ids().collect::<Vec<_>>(), [&id("k2")]);
    assert_eq!(keyring.retired_ids().collect::<Vec<_>>(), [&id("k1")]);
    let file = std::fs::read_to_string(&keys_path).expect("key file");
    assert!(!file.contains("\"k1\":"), "the key bytes are gone: {file}");

    every_connection_decrypts_with(&server, &keyring).await;
    // The server loaded k1 at start; it meets k2, reloads the file, and decrypts.
    for connection in &ids {
        server_decrypts(&server, &admin, connection).await;
    }
}

/// A webhook trigger's secret is an envelope like a connection's: `list` and `retire` count
/// it, `rotate` re-encrypts it, and the hook still verifies deliveries afterwards.
async fn webhook_trigger_secrets_are_counted_rotated_and_still_verify(db: Db) {
    use crate::triggers::{deliver, signed, webhook};
    use airlock::triggers::webhook::Scheme;
    let Some(server) = crate::runs_support::start(db).await else {
        return;
    };
    let admin = crate::runs_support::tenant_with_hostile(&server, "acme").await;
    let workflow = crate::runs_support::create_workflow(
        &server,
        &admin,
        "echo",
        json!([{"id": "echo", "connector": "hostile", "action": "echo", "input": {}}]),
    )
    .await;
    let (hook, secret) = webhook(&server, &admin, &workflow).await;
    assert_eq!(
        list(&server).await,
        [["key", "state", "sealed"], ["k1", "current", "1"]]
    );
    let rotated = server_keys(&server, &["rotate"]).await;
    assert_success(&rotated);
    assert!(
        text(&rotated.stdout).contains("re-encrypted 1 secret(s) under key k2"),
        "{}",
        text(&rotated.stdout)
    );
    let retired = server_keys(&server, &["retire", "--key-id", "k1"]).await;
    assert_success(&retired);
    // The server meets k2, reloads the key file, and verifies with the same secret.
    let body = br#"{"n": 1}"#;
    let now = airlock::store::now_ms() / 1000;
    let headers = signed(
        Scheme::StandardWebhooks,
        &secret,
        "after-rotation",
        now,
        body,
    );
    let reply = deliver(&server, &hook, &headers, body).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
}

/// A data directory with a key file (`k1` current) and no database.
fn key_file_only() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    Keyring::generate()
        .expect("keyring")
        .save(&data.join("keys.json"))
        .expect("save");
    let before = std::fs::read(data.join("keys.json")).expect("key file");
    (dir, data, before)
}

#[test]
fn retire_refuses_the_current_key() {
    let (_dir, data, before) = key_file_only();
    let out = keys(&data, None, &["retire", "--key-id", "k1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let message = text(&out.stderr);
    assert!(
        message.contains("k1 is the current key") && message.contains("airlock keys rotate"),
        "{message}"
    );
    assert_eq!(std::fs::read(data.join("keys.json")).expect("file"), before);
}

#[test]
fn retire_refuses_an_unknown_key_id() {
    let (_dir, data, before) = key_file_only();
    let out = keys(&data, None, &["retire", "--key-id", "k7"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no key k7"),
        "{}",
        text(&out.stderr)
    );
    // Not even an id: clap refuses it, with the same exit code.
    let out = keys(&data, None, &["retire", "--key-id", "../k1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(data.join("keys.json")).expect("file"), before);
}

#[test]
fn list_and_retire_never_create_a_database() {
    // k2 current, so k1 could be retired if the (missing) database held nothing under it.
    let (_dir, data, _) = key_file_only();
    let mut keyring = Keyring::load(&data.join("keys.json")).expect("key file");
    keyring.rotate().expect("rotate");
    keyring.save(&data.join("keys.json")).expect("save");
    let before = std::fs::read(data.join("keys.json")).expect("key file");
    for args in [&["list"][..], &["retire", "--key-id", "k1"]] {
        let out = keys(&data, None, args);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("--data-dir"),
            "{}",
            text(&out.stderr)
        );
        assert!(!data.join("airlock.db").exists(), "{args:?}");
    }
    assert_eq!(std::fs::read(data.join("keys.json")).expect("file"), before);
}
