//! Tokens of an identity provider (OIDC), with a JWKS served by the test: accepted by issuer,
//! audience and key; the tenant and role from their claims; a key the cache lacks fetched
//! again, but not for every forged key id; symmetric algorithms and other audiences refused.
//! The signing key is a fixed RSA test key (`tests/fixtures/oidc-rsa-*`, made with openssl
//! for these tests only). Both databases.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::api_support::{Db, TestServer, assert_problem, on_both_databases};

on_both_databases!(identity_provider_tokens_are_checked_by_issuer_audience_and_jwks);

const PRIVATE: &[u8] = include_bytes!("../fixtures/oidc-rsa-private.der");
const PUBLIC: &str = include_str!("../fixtures/oidc-rsa-public.jwk.json");
const ISSUER: &str = "https://idp.example.test/";
const AUDIENCE: &str = "airlock";

/// The JWKS endpoint: the keys it serves now, and how often it was asked.
#[derive(Clone, Default)]
struct Jwks {
    kids: Arc<std::sync::Mutex<Vec<String>>>,
    fetches: Arc<AtomicUsize>,
}

impl Jwks {
    fn serve_kids(&self, kids: &[&str]) {
        *self.kids.lock().unwrap_or_else(|p| p.into_inner()) =
            kids.iter().map(|k| (*k).to_owned()).collect();
    }

    fn document(&self) -> Value {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let public: Value = serde_json::from_str(PUBLIC).expect("jwk");
        let keys: Vec<Value> = self
            .kids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|kid| {
                let mut key = public.clone();
                key["kid"] = json!(kid);
                key
            })
            .collect();
        json!({ "keys": keys })
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn claims(role: &str, tenant: Option<&str>) -> Value {
    let mut claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice@example.test",
        "exp": now_s() + 600, "iat": now_s(), "airlock_role": role,
    });
    if let Some(tenant) = tenant {
        claims["airlock_tenant"] = json!(tenant);
    }
    claims
}

fn sign(kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(PRIVATE)).expect("sign")
}

async fn identity_provider_tokens_are_checked_by_issuer_audience_and_jwks(db: Db) {
    let jwks = Jwks::default();
    jwks.serve_kids(&["k1"]);
    let served = jwks.clone();
    let app = Router::new().route(
        "/jwks.json",
        get(move || {
            let served = served.clone();
            async move { axum::Json(served.document()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let jwks_url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let Some(server) = TestServer::start_configured(db, crate::support::options(), |c| {
        c.oidc_issuer = Some(ISSUER.into());
        c.oidc_audience = Some(AUDIENCE.into());
        c.oidc_jwks_url = Some(jwks_url.clone());
    })
    .await
    else {
        return;
    };
    server.tenant("acme").await;

    // The provider's admin of acme acts in acme; its actor is the provider's subject.
    let admin = sign("k1", &claims("admin", Some("acme")));
    let workflows = server.get("/v1/workflows", &admin).await;
    assert_eq!(workflows.status, 200, "{}", workflows.text);
    let operator = sign("k1", &claims("operator", None));
    assert_eq!(server.get("/v1/tenants", &operator).await.status, 200);
    let changed = server
        .patch(
            "/v1/tenants/acme/limits",
            &operator,
            json!({"max_workflows": 7}),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    let audit = server.get("/v1/audit?limit=1", &operator).await;
    assert_eq!(
        audit.body[0]["actor"], "alice@example.test",
        "{}",
        audit.text
    );
    let fetched = jwks.fetches.load(Ordering::SeqCst);
    assert_eq!(fetched, 1, "the keys are cached");

    // Refused: another audience, a role that does not fit its tenant, no role, an unknown
    // tenant, an expired token, an HS256 token "signed" with the public key.
    let mut other_audience = claims("admin", Some("acme"));
    other_audience["aud"] = json!("someone-else");
    let mut no_role = claims("admin", Some("acme"));
    no_role
        .as_object_mut()
        .expect("object")
        .remove("airlock_role");
    let mut expired = claims("admin", Some("acme"));
    expired["exp"] = json!(now_s() - 3600);
    let public: Value = serde_json::from_str(PUBLIC).expect("jwk");
    let mut confused = Header::new(Algorithm::HS256);
    confused.kid = Some("k1".into());
    let confused = jsonwebtoken::encode(
        &confused,
        &claims("operator", None),
        &EncodingKey::from_secret(public["n"].as_str().expect("n").as_bytes()),
    )
    .expect("sign");
    for (what, token) in [
        ("another audience", sign("k1", &other_audience)),
        (
            "an operator with a tenant",
            sign("k1", &claims("operator", Some("acme"))),
        ),
        (
            "an admin without a tenant",
            sign("k1", &claims("admin", None)),
        ),
        ("no role", sign("k1", &no_role)),
        (
            "an unknown tenant",
            sign("k1", &claims("admin", Some("nobody"))),
        ),
        ("expired", sign("k1", &expired)),
        ("HS256 with the public key", confused),
    ] {
        let reply = server.get("/v1/workflows", &token).await;
        assert_eq!(reply.status, 401, "{what}: {}", reply.text);
        assert_problem(&reply, 401, "unauthorized");
    }

    // The provider rotates: a token of the new key fetches the keys again, and works, once
    // the last fetch is older than the refetch interval (in production it usually is).
    jwks.serve_kids(&["k1", "k2"]);
    tokio::time::sleep(airlock::api::oidc::REFETCH_AFTER).await;
    let rotated = sign("k2", &claims("viewer", Some("acme")));
    assert_eq!(server.get("/v1/workflows", &rotated).await.status, 200);
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 2);
    // Forged key ids do not make it fetch for each: once per ten seconds at most.
    for n in 0..20 {
        let forged = sign(&format!("forged-{n}"), &claims("viewer", Some("acme")));
        assert_eq!(server.get("/v1/workflows", &forged).await.status, 401);
    }
    assert_eq!(
        jwks.fetches.load(Ordering::SeqCst),
        2,
        "a forged kid fetched the keys"
    );
    // Airlock's own tokens still work beside the provider's.
    let own = server.token(Some("acme"), airlock::api::Role::Viewer);
    assert_eq!(server.get("/v1/workflows", &own).await.status, 200);
}
