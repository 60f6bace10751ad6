//! Token signing keys and revocation through the CLI against a running server: a rotation
//! overlaps (old and new tokens both work), a retirement ends a key's tokens, a revoked token
//! is refused within a second while every other keeps working. Both databases.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use airlock::api::Role;

use crate::api_support::{Db, TestServer, assert_problem, on_both_databases};

on_both_databases!(
    a_revoked_token_is_refused_within_a_second_and_no_other,
    a_key_rotation_overlaps_and_a_retirement_ends_its_tokens,
);

fn data_dir(server: &TestServer) -> PathBuf {
    server.dir.path().join("data")
}

fn airlock(server: &TestServer, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir(server))
        .args(["--database-url", &server.database_url])
        .output()
        .expect("run airlock");
    assert!(
        out.status.success(),
        "airlock {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Polls `GET /v1/tenants` with `token` until its status is `status`, for at most 3 s (the
/// documented second, with room for a loaded machine).
async fn until_status(server: &TestServer, token: &str, status: u16) -> crate::api_support::Reply {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let reply = server.get("/v1/tenants", token).await;
        if reply.status == status || Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the server signs its tokens with `kid`.
async fn signs_with(server: &TestServer, kid: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let token = server.token(None, Role::Operator);
        if jsonwebtoken::decode_header(&token)
            .expect("header")
            .kid
            .as_deref()
            == Some(kid)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not take key {kid}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_revoked_token_is_refused_within_a_second_and_no_other(db: Db) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    let doomed = server.operator();
    let kept = server.operator();
    assert_eq!(server.get("/v1/tenants", &doomed).await.status, 200);
    airlock(&server, &["token", "revoke", "--token", &doomed]);
    let refused = until_status(&server, &doomed, 401).await;
    assert_problem(&refused, 401, "unauthorized");
    assert!(refused.text.contains("revoked"), "{}", refused.text);
    assert_eq!(server.get("/v1/tenants", &kept).await.status, 200);
    // By id, and a second time (nothing changes).
    let (jti, _) = airlock::api::unverified_id(&kept).expect("an id");
    airlock(&server, &["token", "revoke", "--jti", &jti]);
    airlock(&server, &["token", "revoke", "--jti", &jti]);
    assert_eq!(until_status(&server, &kept, 401).await.status, 401);
    // Each revocation is in the platform's audit record.
    let fresh = server.operator();
    let audit = server.get("/v1/audit?limit=500", &fresh).await;
    let revokes = audit
        .body
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["action"] == "token revoke")
        .count();
    assert_eq!(revokes, 3, "{}", audit.text);
}

async fn a_key_rotation_overlaps_and_a_retirement_ends_its_tokens(db: Db) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    let legacy = server.operator();
    let kid = stdout(&airlock(&server, &["token", "keys", "rotate"]));
    assert!(kid.starts_with('k'), "{kid}");
    // A token the CLI issues now carries the new key's id and works against the server.
    let issued = stdout(&airlock(
        &server,
        &[
            "token",
            "issue",
            "--role",
            "operator",
            "--subject",
            "rotated",
        ],
    ));
    let header = jsonwebtoken::decode_header(&issued).expect("header");
    assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(until_status(&server, &issued, 200).await.status, 200);
    // The overlap: tokens of the JWT secret still work.
    assert_eq!(server.get("/v1/tenants", &legacy).await.status, 200);
    // The server signs with the new key too, once it has reloaded.
    signs_with(&server, &kid).await;

    let listed = stdout(&airlock(&server, &["token", "keys", "list"]));
    assert!(listed.contains("legacy\tHS256\t-\tverifies"), "{listed}");
    assert!(
        listed.contains(&format!("{kid}\tEdDSA")) && listed.contains("signs"),
        "{listed}"
    );
    airlock(&server, &["token", "keys", "retire", "legacy"]);
    let refused = until_status(&server, &legacy, 401).await;
    assert_problem(&refused, 401, "unauthorized");
    assert!(refused.text.contains("retired"), "{}", refused.text);
    assert_eq!(server.get("/v1/tenants", &issued).await.status, 200);

    // A second rotation; then the first key retires and its tokens go.
    let second = stdout(&airlock(
        &server,
        &["token", "keys", "rotate", "--alg", "hs256"],
    ));
    assert_ne!(second, kid);
    signs_with(&server, &second).await;
    let current = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["token", "keys", "retire", &second])
        .arg("--data-dir")
        .arg(data_dir(&server))
        .output()
        .expect("run airlock");
    assert!(!current.status.success(), "the signing key was retired");
    airlock(&server, &["token", "keys", "retire", &kid]);
    let refused = until_status(&server, &issued, 401).await;
    assert_problem(&refused, 401, "unauthorized");
    let newest = server.token(None, Role::Operator);
    assert_eq!(until_status(&server, &newest, 200).await.status, 200);
    // Each change of the key set is a platform audit record, with the key's id.
    let audit = server.get("/v1/audit?limit=500", &newest).await;
    let records: Vec<(String, String)> = audit
        .body
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["tenant_id"] == "")
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default().to_owned(),
                r["target"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("token keys rotate".to_owned(), kid.clone()),
        ("token keys retire".to_owned(), "legacy".to_owned()),
        ("token keys rotate".to_owned(), second.clone()),
        ("token keys retire".to_owned(), kid.clone()),
    ] {
        assert!(records.contains(&expected), "{expected:?} in {records:?}");
    }
}
