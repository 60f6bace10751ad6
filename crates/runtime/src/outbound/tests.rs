//! Tests of the gate against real HTTP servers on loopback: one test per rule, each failing if
//! its rule is removed. Names like `api.example.test` are mapped to the local servers through
//! `resolve_overrides`, so the allowlist sees real host names while traffic stays on 127.0.0.1.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::*;
use airlock_secrets::Secret;

const API: &str = "api.example.test";
const OTHER: &str = "other.example.test";
const AUTH: &str = "auth.example.test";
const SECRET: &str = "s3cret-T0ken/with+chars";

// ---------------------------------------------------------------------------------------------
// Test servers

/// What the echo server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query.
    uri: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

struct TestServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestServer {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// Starts an HTTP server on 127.0.0.1 that records every request. Routes:
/// - `/echo` (and anything unknown): the request as JSON (method, uri, headers, body), plus the
///   request's Authorization in an `x-echo-authorization` response header;
/// - `/redirect?to=URL&status=CODE`: a redirect (302 by default);
/// - `/bytes?n=N`: N bytes with a Content-Length;
/// - `/stream`: an endless chunked body without a Content-Length;
/// - `/slow`: answers after 30 s;
/// - `/bearer?accept=TOKEN`: 401 (quoting the Authorization it got) unless the request
///   carries `Bearer TOKEN`, then the echo;
/// - `/token`: a token response with `access_token` `fresh-from-token-endpoint`;
/// - `/described`: the echo with an ETag and digests of its bytes;
/// - `/base64`: the Authorization, its credential part and the whole echo base64-encoded in
///   both alphabets, padded and not (and the Authorization in an `x-echo-base64` header);
/// - `/encoded`: the echo reversed, with `Content-Encoding: x-reverse` (a stand-in for gzip
///   that needs no library), when the request accepts `x-reverse` or says `?always`.
async fn spawn_server() -> TestServer {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let router = axum::Router::new()
        .fallback(handle)
        .with_state(Arc::clone(&seen));
    let addr = airlock_testkit::serve(router).await;
    TestServer { addr, seen }
}

async fn handle(State(seen): State<Arc<Mutex<Vec<Seen>>>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap()
        .to_vec();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.to_string())
        .unwrap_or_default();
    let record = Seen {
        method: parts.method.to_string(),
        uri: uri.clone(),
        headers: headers.clone(),
        body: body.clone(),
    };
    seen.lock().unwrap().push(record);

    let query: HashMap<String, String> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    match parts.uri.path() {
        "/redirect" => {
            let status: u16 = query.get("status").map_or(302, |s| s.parse().unwrap());
            Response::builder()
                .status(status)
                .header(header::LOCATION, query["to"].as_str())
                .body(Body::empty())
                .unwrap()
        }
        "/bytes" => {
            let n: usize = query["n"].parse().unwrap();
            Response::new(Body::from(vec![b'x'; n]))
        }
        "/stream" => {
            let chunks = futures::stream::repeat_with(|| {
                Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 16 * 1024]))
            });
            Response::new(Body::from_stream(chunks))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Response::new(Body::from("late"))
        }
        "/bearer"
            if parts
                .headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes)
                != Some(format!("Bearer {}", query["accept"]).as_bytes()) =>
        {
            let given = parts
                .headers
                .get(header::AUTHORIZATION)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            Response::builder()
                .status(401)
                .body(Body::from(format!("rejected {given}")))
                .unwrap()
        }
        "/token" => {
            let grant = json!({"access_token": "fresh-from-token-endpoint", "expires_in": 60});
            Response::new(Body::from(grant.to_string()))
        }
        path => {
            let echo = json!({
                "method": parts.method.as_str(),
                "uri": uri,
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            });
            let mut response = Response::new(Body::from(echo.to_string()));
            if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
                response
                    .headers_mut()
                    .insert("x-echo-authorization", auth.clone());
            }
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let accepts_reverse = parts
                .headers
                .get(header::ACCEPT_ENCODING)
                .is_some_and(|v| String::from_utf8_lossy(v.as_bytes()).contains("x-reverse"));
            match path {
                "/described" => {
                    for (name, value) in [
                        ("etag", "\"v1\""),
                        ("content-md5", "Q2hlY2sgSW50ZWdyaXR5IQ=="),
                        (
                            "digest",
                            "sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=",
                        ),
                        (
                            "content-digest",
                            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
                        ),
                    ] {
                        response
                            .headers_mut()
                            .insert(name, HeaderValue::from_static(value));
                    }
                }
                "/base64" => {
                    // An upstream that reflects what it got base64-encoded: the Authorization
                    // value, its credential part, and the whole echo, in both alphabets,
                    // padded and not; and the Authorization in a header.
                    use base64::engine::general_purpose::{
                        STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
                    };
                    let auth = parts
                        .headers
                        .get(header::AUTHORIZATION)
                        .map(|v| v.as_bytes().to_vec())
                        .unwrap_or_default();
                    let credential = auth
                        .splitn(2, |b| *b == b' ')
                        .last()
                        .unwrap_or_default()
                        .to_vec();
                    let whole = echo.to_string();
                    let mut reflected = Vec::new();
                    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
                        reflected.push(json!({
                            "authorization": engine.encode(&auth),
                            "credential": engine.encode(&credential),
                            "echo": engine.encode(&whole),
                        }));
                    }
                    *response.body_mut() = Body::from(Value::from(reflected).to_string());
                    response.headers_mut().insert(
                        "x-echo-base64",
                        HeaderValue::from_str(&STANDARD.encode(&auth)).unwrap(),
                    );
                }
                "/encoded" if accepts_reverse || query.contains_key("always") => {
                    let mut reversed = echo.to_string().into_bytes();
                    reversed.reverse();
                    *response.body_mut() = Body::from(reversed);
                    response.headers_mut().insert(
                        header::CONTENT_ENCODING,
                        HeaderValue::from_static("x-reverse"),
                    );
                }
                _ => {}
            }
            response
        }
    }
}

/// A TCP listener that accepts and counts connections and never answers: proof that a refused
/// request did not even connect.
async fn spawn_tripwire() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, accepted)
}

/// A loopback port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// An HTTPS echo server (same routes as [`spawn_server`]) with a certificate for API and OTHER,
/// signed by a fresh test CA; returns the server and the CA's PEM.
async fn spawn_tls_server() -> (TestServer, String) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let router = axum::Router::new()
        .fallback(handle)
        .with_state(Arc::clone(&seen));
    let (addr, ca_pem) = airlock_testkit::serve_tls(router, &[API, OTHER]).await;
    (TestServer { addr, seen }, ca_pem)
}

// ---------------------------------------------------------------------------------------------
// Gate and request helpers

/// The configuration tests use to reach their loopback servers: http allowed, loopback
/// allowed, API, OTHER and evil.example.test all mapped to `addr`.
fn loopback_config(addr: SocketAddr) -> OutboundConfig {
    OutboundConfig {
        allow_http: true,
        allowed_private_ranges: vec!["127.0.0.0/8".parse().unwrap()],
        resolve_overrides: overrides(addr),
        ..OutboundConfig::default()
    }
}

fn overrides(addr: SocketAddr) -> HashMap<String, Vec<SocketAddr>> {
    [API, OTHER, AUTH, "evil.example.test"]
        .into_iter()
        .map(|host| (host.to_owned(), vec![addr]))
        .collect()
}

fn patterns(list: &[&str]) -> Vec<HostPattern> {
    list.iter().map(|p| p.parse().unwrap()).collect()
}

fn grant(declared: &[&str]) -> Grant {
    Grant {
        declared_hosts: patterns(declared),
        ..Grant::default()
    }
}

fn bearer_grant(declared: &[&str]) -> Grant {
    Grant {
        auth: AuthSpec::OAuth2 {
            token_url: "https://auth.example.test/token".into(),
            authorization_url: None,
            scopes: vec![],
        },
        credential: Credential::oauth2(Secret::from(SECRET)),
        ..grant(declared)
    }
}

fn session(config: OutboundConfig, grant: Grant) -> Session {
    Gate::new(config).unwrap().session(grant)
}

fn request(method: &str, url: &str) -> GuestRequest {
    GuestRequest {
        method: method.into(),
        url: url.into(),
        headers: vec![],
        body: None,
    }
}

fn get(url: &str) -> GuestRequest {
    request("GET", url)
}

fn api(path: &str) -> String {
    format!("http://{API}{path}")
}

fn redirect_to(to: &str, status: u16) -> String {
    let to: String = url::form_urlencoded::byte_serialize(to.as_bytes()).collect();
    format!("/redirect?status={status}&to={to}")
}

fn json_body(response: &GuestResponse) -> Value {
    serde_json::from_slice(&response.body).unwrap()
}

#[track_caller]
fn assert_denied(result: Result<GuestResponse, HttpError>, needle: &str) {
    match result {
        Err(HttpError::Denied(reason)) => {
            assert!(reason.contains(needle), "{reason:?} lacks {needle:?}")
        }
        other => panic!("expected Denied({needle:?}..), got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Rule 1: declared ∩ tenant hosts

#[tokio::test]
async fn denies_host_not_declared_without_connecting() {
    let server = spawn_server().await;
    let mut s = session(loopback_config(server.addr), grant(&[API]));
    assert_denied(
        s.send(get(&format!("http://{OTHER}/echo"))).await,
        "host other.example.test is not allowed",
    );
    assert_eq!(server.count(), 0);
    assert!(matches!(s.limit_hit(), Some(LimitHit::HttpDenied(_))));
    assert_eq!(s.stats().denied, 1);
    assert_eq!(s.stats().requests, 0);
    // The declared host itself works.
    assert_eq!(s.send(get(&api("/echo"))).await.unwrap().status, 200);
}

#[tokio::test]
async fn denies_declared_host_outside_tenant_policy() {
    let server = spawn_server().await;
    let grant = Grant {
        tenant_hosts: patterns(&[API]),
        ..grant(&["*"])
    };
    let mut s = session(loopback_config(server.addr), grant);
    assert_denied(s.send(get(&format!("http://{OTHER}/echo"))).await, "tenant");
    assert_eq!(server.count(), 0);
    assert_eq!(s.send(get(&api("/echo"))).await.unwrap().status, 200);
}

#[tokio::test]
async fn empty_declared_hosts_means_no_network() {
    let server = spawn_server().await;
    let mut s = session(loopback_config(server.addr), grant(&[]));
    assert_denied(s.send(get(&api("/echo"))).await, "declares no hosts");
    assert_eq!(server.count(), 0);
}

#[tokio::test]
async fn suffix_pattern_allows_subdomains() {
    let server = spawn_server().await;
    let mut s = session(loopback_config(server.addr), grant(&["*.example.test"]));
    assert_eq!(s.send(get(&api("/echo"))).await.unwrap().status, 200);
    assert_eq!(
        s.send(get(&format!("http://{OTHER}/echo")))
            .await
            .unwrap()
            .status,
        200
    );
}

// ---------------------------------------------------------------------------------------------
// Rule 2: schemes and userinfo

#[tokio::test]
async fn default_config_denies_plain_http_without_connecting() {
    let (addr, accepted) = spawn_tripwire().await;
    let config = OutboundConfig {
        resolve_overrides: overrides(addr),
        allowed_private_ranges: vec!["127.0.0.0/8".parse().unwrap()],
        ..OutboundConfig::default()
    };
    let mut s = session(config, grant(&[API]));
    assert_denied(s.send(get(&api("/"))).await, "plain http");
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn other_schemes_are_always_denied() {
    let server = spawn_server().await;
    let mut s = session(loopback_config(server.addr), grant(&["*"]));
    for url in [
        "file:///etc/passwd",
        "ftp://api.example.test/x",
        "data:text/plain,hello",
        "ws://api.example.test/",
        "gopher://api.example.test/",
    ] {
        assert_denied(s.send(get(url)).await, "scheme");
    }
    assert_eq!(server.count(), 0);
}

#[tokio::test]
async fn urls_with_userinfo_are_denied() {
    let server = spawn_server().await;
    let mut s = session(loopback_config(server.addr), grant(&[API]));
    for url in [
        "http://user:pass@api.example.test/echo",
        "http://user@api.example.test/echo",
    ] {
        assert_denied(s.send(get(url)).await, "credentials");
    }
    assert_eq!(server.count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Rule 3: non-public addresses

#[tokio::test]
async fn default_config_denies_private_ip_literals_before_connecting() {
    let (addr, accepted) = spawn_tripwire().await;
    let port = addr.port();
    let mut s = session(OutboundConfig::default(), grant(&["*"]));
    for url in [
        format!("https://127.0.0.1:{port}/"),
        format!("https://127.1:{port}/"),
        format!("https://2130706433:{port}/"),
        format!("https://0x7f.0.0.1:{port}/"),
        format!("https://[::1]:{port}/"),
        format!("https://[::ffff:127.0.0.1]:{port}/"),
        format!("https://0.0.0.0:{port}/"),
        "https://10.1.2.3/".into(),
        "https://192.168.1.1/".into(),
        "https://172.16.0.1/".into(),
        "https://169.254.169.254/latest/meta-data/".into(),
        "https://[fd00:ec2::254]/latest/meta-data/".into(),
        "https://[::ffff:169.254.169.254]/".into(),
        "https://100.64.0.1/".into(),
        "https://[fe80::1]/".into(),
        "https://224.0.0.1/".into(),
        "https://255.255.255.255/".into(),
    ] {
        assert_denied(s.send(get(&url)).await, "address");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn http_private_ip_literals_are_denied_for_their_address() {
    // With http allowed, the denial must come from the address check, not the scheme check.
    let (addr, accepted) = spawn_tripwire().await;
    let config = OutboundConfig {
        allow_http: true,
        ..OutboundConfig::default()
    };
    let mut s = session(config, grant(&["*"]));
    for url in [
        format!("http://127.0.0.1:{}/", addr.port()),
        "http://10.1.2.3/".into(),
        "http://169.254.169.254/latest/meta-data/".into(),
        "http://[::1]/".into(),
    ] {
        assert_denied(s.send(get(&url)).await, "address");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn name_resolving_to_loopback_is_denied_before_connecting() {
    let (addr, accepted) = spawn_tripwire().await;
    for allow_http in [false, true] {
        let config = OutboundConfig {
            allow_http,
            resolve_overrides: overrides(addr),
            ..OutboundConfig::default()
        };
        let mut s = session(config, grant(&[API]));
        let scheme = if allow_http { "http" } else { "https" };
        assert_denied(
            s.send(get(&format!("{scheme}://{API}/"))).await,
            "resolves to 127.0.0.1",
        );
        assert!(matches!(s.limit_hit(), Some(LimitHit::HttpDenied(_))));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn localhost_from_system_dns_is_denied_before_connecting() {
    // "localhost" resolves through /etc/hosts (the system resolver), never through overrides.
    let (addr, accepted) = spawn_tripwire().await;
    let mut s = session(OutboundConfig::default(), grant(&["localhost"]));
    assert_denied(
        s.send(get(&format!("https://localhost:{}/", addr.port())))
            .await,
        "loopback",
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn one_blocked_address_in_an_answer_denies_the_host() {
    let (addr, accepted) = spawn_tripwire().await;
    let config = OutboundConfig {
        allow_http: true,
        resolve_overrides: HashMap::from([(
            API.to_owned(),
            vec!["8.8.8.8:80".parse().unwrap(), addr],
        )]),
        ..OutboundConfig::default()
    };
    let mut s = session(config, grant(&[API]));
    assert_denied(s.send(get(&api("/"))).await, "resolves to 127.0.0.1");
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn operator_allowed_range_reaches_loopback() {
    let server = spawn_server().await;
    let mut s = session(loopback_config(server.addr), grant(&["*"]));
    assert_eq!(s.send(get(&api("/echo"))).await.unwrap().status, 200);
    let literal = format!("http://127.0.0.1:{}/echo", server.addr.port());
    assert_eq!(s.send(get(&literal)).await.unwrap().status, 200);
    assert_eq!(server.count(), 2);
}

// ---------------------------------------------------------------------------------------------
// Rule 4: redirects

#[tokio::test]
async fn follows_redirects_on_declared_host_with_credential() {
    let server = spawn_server().await;
    let mut s = session(loopback_config(server.addr), bearer_grant(&[API]));
    let response = s.send(get(&api(&redirect_to("/echo", 302)))).await.unwrap();
    assert_eq!(response.status, 200);
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].uri, "/echo");
    let expected = format!("Bearer {SECRET}");
    assert!(
        seen.iter()
            .all(|r| r.header("authorization") == [expected.as_str()])
    );
    assert_eq!(s.stats().requests, 2);
}

#[tokio::test]
async fn redirect_to_wildcard_only_host_drops_credential() {
    let server = spawn_server().await;
    let mut s = session(loopback_config(server.addr), bearer_grant(&[API, "*"]));
    let target = format!("http://{OTHER}/echo");
    let response = s.send(get(&api(&redirect_to(&target, 302)))).await.unwrap();
    assert_eq!(response.status, 200);
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("authorization").len(), 1);
    assert_eq!(seen[1].header("host"), [OTHER]);
    assert!(seen[1].header("authorization").is_empty(), "{:?}", seen[1]);
}

/// Two HTTPS echo servers, each with its own test CA, and an https-only configuration that
/// trusts both and maps every test name to the first.
async fn two_tls_servers() -> (TestServer, TestServer, OutboundConfig) {
    let (first, first_ca) = spawn_tls_server().await;
    let (second, second_ca) = spawn_tls_server().await;
    let config = OutboundConfig {
        allowed_private_ranges: vec!["127.0.0.0/8".parse().unwrap()],
        resolve_overrides: overrides(first.addr),
        extra_root_certificates: vec![first_ca, second_ca],
        ..OutboundConfig::default()
    };
    (first, second, config)
}

/// A grant for `declared` whose credential goes in `x-api-key`, so the guest's own
/// `Authorization` is not replaced by it and both can be watched.
fn keyed_grant(declared: &[&str]) -> Grant {
    Grant {
        auth: AuthSpec::ApiKey {
            in_: ApiKeyLocation::Header,
            name: "x-api-key".into(),
            prefix: None,
        },
        credential: Credential::ApiKey(Secret::from(SECRET)),
        ..grant(declared)
    }
}

/// A GET to `https://API` that redirects (307) to `target`, carrying the guest's own
/// `Authorization` and `Cookie`.
fn redirect_with_guest_credentials(target: &str) -> GuestRequest {
    let mut request = get(&format!("https://{API}{}", redirect_to(target, 307)));
    request.headers = vec![
        ("authorization".into(), "Bearer guest-own".into()),
        ("cookie".into(), "session=guest-own".into()),
    ];
    request
}

/// Whether the hop `seen` carried the connection's credential and the guest's own ones: all
/// three, or none.
#[track_caller]
fn assert_credentials(seen: &Seen, carried: bool) {
    let expected: [(&str, &[&str]); 3] = if carried {
        [
            ("x-api-key", &[SECRET]),
            ("authorization", &["Bearer guest-own"]),
            ("cookie", &["session=guest-own"]),
        ]
    } else {
        [("x-api-key", &[]), ("authorization", &[]), ("cookie", &[])]
    };
    for (name, values) in expected {
        assert_eq!(
            seen.header(name),
            values,
            "{name} on {} {}",
            seen.uri,
            seen.header("host")[0]
        );
    }
}

#[tokio::test]
async fn redirect_to_another_port_of_the_declared_host_drops_credentials() {
    let (first, second, config) = two_tls_servers().await;
    let mut s = session(config, keyed_grant(&[API]));
    let target = format!("https://{API}:{}/echo", second.addr.port());
    let response = s
        .send(redirect_with_guest_credentials(&target))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_credentials(&first.seen()[0], true);
    let hop = &second.seen()[0];
    assert_eq!(
        hop.header("host"),
        [format!("{API}:{}", second.addr.port())]
    );
    assert_credentials(hop, false);
}

#[tokio::test]
async fn redirect_to_another_declared_host_drops_credentials_until_it_comes_back() {
    let (server, _, config) = two_tls_servers().await;
    let mut s = session(config, keyed_grant(&[API, OTHER]));
    let back = format!("https://{API}/echo");
    let target = format!("https://{OTHER}{}", redirect_to(&back, 307));
    let response = s
        .send(redirect_with_guest_credentials(&target))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert_credentials(&seen[0], true);
    assert_eq!(seen[1].header("host"), [OTHER]);
    assert_credentials(&seen[1], false);
    // Back at the origin the guest asked for, the credentials are its again.
    assert_eq!(seen[2].header("host"), [API]);
    assert_credentials(&seen[2], true);
}

#[tokio::test]
async fn operator_may_let_credentials_follow_redirects_across_origins() {
    let (first, second, mut config) = two_tls_servers().await;
    config.credentials_follow_redirects_across_origins = true;
    let mut s = session(config, keyed_grant(&[API, OTHER]));
    for target in [
        format!("https://{API}:{}/echo", second.addr.port()),
        format!("https://{OTHER}/echo"),
    ] {
        let response = s
            .send(redirect_with_guest_credentials(&target))
            .await
            .unwrap();
        assert_eq!(response.status, 200);
    }
    let seen = first.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].header("host"), [OTHER]);
    for hop in seen.iter().chain(&second.seen()) {
        assert_credentials(hop, true);
    }
}

#[tokio::test]
async fn redirect_hops_are_checked_against_every_rule() {
    let server = spawn_server().await;
    let mut s = session(loopback_config(server.addr), grant(&[API]));
    assert_denied(
        s.send(get(&api(&redirect_to(
            &format!("http://{OTHER}/echo"),
            302,
        ))))
        .await,
        "not allowed",
    );
    assert_eq!(server.count(), 1);
    // With `*` declared too, the host check passes and the other rules must refuse.
    let mut s = session(loopback_config(server.addr), grant(&[API, "*"]));
    let cases = [
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "address",
        ),
        ("http://10.0.0.1/".to_owned(), "address"),
        ("file:///etc/passwd".to_owned(), "scheme"),
        (format!("http://user:pw@{API}/echo"), "credentials"),
    ];
    for (target, reason) in cases {
        let before = server.count();
        assert_denied(s.send(get(&api(&redirect_to(&target, 302)))).await, reason);
        assert_eq!(
            server.count(),
            before + 1,
            "only the first hop reached the server"
        );
    }
}

#[tokio::test]
async fn redirect_to_private_name_is_denied_by_the_resolver() {
    let server = spawn_server().await;
    let mut config = loopback_config(server.addr);
    config.resolve_overrides.insert(
        "internal.example.test".into(),
        vec!["10.0.0.7:80".parse().unwrap()],
    );
    let mut g = grant(&["*"]);
    // Were the hop not refused at resolution, connecting to 10.0.0.7 would hang until this.
    g.limits.request_timeout = Duration::from_secs(5);
    let mut s = session(config, g);
    assert_denied(
        s.send(get(&api(&redirect_to(
            "http://internal.example.test/",
            307,
        ))))
        .await,
        "resolves to 10.0.0.7",
    );
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn credential_in_redirect_url_to_undeclared_host_is_denied() {
    let server = spawn_server().await;
    let grant = Grant {
        auth: AuthSpec::ApiKey {
            in_: ApiKeyLocation::Query,
            name: "key".into(),
            prefix: None,
        },
        credential: Credential::ApiKey(Secret::from(SECRET)),
        ..grant(&[API, "*"])
    };
    let mut s = session(loopback_config(server.addr), grant);
    let leak: String = url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect();
    let target = format!("http://{OTHER}/echo?stolen={leak}");
    let result = s.send(get(&api(&redirect_to(&target, 302)))).await;
    assert_denied(result.clone(), "credential");
    let Err(HttpError::Denied(reason)) = result else {
        unreachable!()
    };
    assert!(!reason.contains(SECRET) && !reason.contains(&leak));
    assert_eq!(server.count(), 1);
    // Back to the declared host, which holds the credential anyway, is fine.
    let target = format!("http://{API}/echo?stolen={leak}");
    assert_eq!(
        s.send(get(&api(&redirect_to(&target, 302))))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(server.count(), 3);
}

#[tokio::test]
async fn redirect_limit_is_enforced() {
    let server = spawn_server().await;
    let mut config = loopback_config(server.addr);
    config.max_redirects = 2;
    let mut s = session(config, grant(&[API]));
    let chain = redirect_to(&redirect_to(&redirect_to("/echo", 302), 302), 302);
    match s.send(get(&api(&chain))).await {
        Err(HttpError::Other(message)) => {
            assert!(message.contains("too many redirects"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.count(), 3);
    // Two redirects are fine.
    let chain = redirect_to(&redirect_to("/echo", 302), 302);
    assert_eq!(s.send(get(&api(&chain))).await.unwrap().status, 200);
}

#[tokio::test]
async fn redirects_rewrite_method_and_body_per_status() {
    let server = spawn_server().await;
    let mut s = session(loopback_config(server.addr), grant(&[API]));
    for (method, status, expected_method, keeps_body) in [
        ("POST", 303, "GET", false),
        ("PUT", 303, "GET", false),
        ("POST", 302, "GET", false),
        ("POST", 301, "GET", false),
        ("PUT", 302, "PUT", true),
        ("POST", 307, "POST", true),
        ("POST", 308, "POST", true),
    ] {
        let mut req = request(method, &api(&redirect_to("/echo", status)));
        req.body = Some(b"payload".to_vec());
        req.headers = vec![("content-type".into(), "text/plain".into())];
        let echo = json_body(&s.send(req).await.unwrap());
        assert_eq!(echo["method"], expected_method, "{method} {status}");
        let body = if keeps_body { "payload" } else { "" };
        assert_eq!(echo["body"], body, "{method} {status}");
        let last = server.seen().pop().unwrap();
        assert_eq!(
            last.header("content-type").is_empty(),
            !keeps_body,
            "{method} {status}"
        );
    }
}

#[tokio::test]
async fn each_redirect_hop_counts_against_max_requests() {
    let server = spawn_server().await;
    let mut g = grant(&[API]);
    g.limits.max_requests = 2;
    let mut s = session(loopback_config(server.addr), g);
    let chain = redirect_to(&redirect_to("/echo", 302), 302);
    assert_eq!(
        s.send(get(&api(&chain))).await,
        Err(HttpError::TooManyRequests)
    );
    assert_eq!(server.count(), 2);
    assert_eq!(
        s.limit_hit(),
        Some(LimitHit::OutboundLimit(OutboundLimit::Requests))
    );
}

// ---------------------------------------------------------------------------------------------
// Rule 5: limits

#[tokio::test]
async fn max_requests_per_session() {
    let server = spawn_server().await;
    let mut g = grant(&[API]);
    g.limits.max_requests = 2;
    let mut s = session(loopback_config(server.addr), g);
    assert!(s.send(get(&api("/echo"))).await.is_ok());
    assert!(s.send(get(&api("/echo"))).await.is_ok());
    assert_eq!(
        s.send(get(&api("/echo"))).await,
        Err(HttpError::TooManyRequests)
    );
    assert_eq!(server.count(), 2);
    assert_eq!(
        s.limit_hit(),
        Some(LimitHit::OutboundLimit(OutboundLimit::Requests))
    );
    assert_eq!(s.stats().requests, 2);
}

#[tokio::test]
async fn limit_hit_keeps_the_first_refusal() {
    let server = spawn_server().await;
    let mut g = grant(&[API]);
    g.limits.max_requests = 1;
    let mut s = session(loopback_config(server.addr), g);
    assert_eq!(s.limit_hit(), None);
    assert!(s.send(get(&api("/echo"))).await.is_ok());
    assert_eq!(s.limit_hit(), None, "a successful request is no limit hit");
    assert_eq!(
        s.send(get(&api("/echo"))).await,
        Err(HttpError::TooManyRequests)
    );
    assert_denied(
        s.send(get(&format!("http://{OTHER}/"))).await,
        "not allowed",
    );
    assert_eq!(
        s.limit_hit(),
        Some(LimitHit::OutboundLimit(OutboundLimit::Requests))
    );
}

#[tokio::test]
async fn request_body_over_limit_is_refused_before_sending() {
    let server = spawn_server().await;
    let mut g = grant(&[API]);
    g.limits.max_request_body_bytes = 10;
    let mut s = session(loopback_config(server.addr), g);
    let mut req = request("POST", &api("/echo"));
    req.body = Some(vec![b'a'; 11]);
    assert!(matches!(
        s.send(req.clone()).await,
        Err(HttpError::TooLarge(_))
    ));
    assert_eq!(server.count(), 0);
    assert_eq!(
        s.limit_hit(),
        Some(LimitHit::OutboundLimit(OutboundLimit::RequestBody))
    );
    req.body = Some(vec![b'a'; 10]);
    assert!(s.send(req).await.is_ok());
}

#[tokio::test]
async fn response_body_over_limit_by_content_length() {
    let server = spawn_server().await;
    let mut g = grant(&[API]);
    g.limits.max_response_body_bytes = 1000;
    let mut s = session(loopback_config(server.addr), g);
    assert_eq!(
        s.send(get(&api("/bytes?n=1000"))).await.unwrap().body.len(),
        1000
    );
    assert!(matches!(
        s.send(get(&api("/bytes?n=1001"))).await,
        Err(HttpError::TooLarge(_))
    ));
    assert_eq!(
        s.limit_hit(),
        Some(LimitHit::OutboundLimit(OutboundLimit::ResponseBody))
    );
}

#[tokio::test]
async fn endless_streamed_response_is_cut_at_the_cap() {
    let server = spawn_server().await;
    let mut g = grant(&[API]);
    let cap = 100 * 1024;
    g.limits.max_response_body_bytes = cap;
    g.limits.request_timeout = Duration::from_secs(20);
    let mut s = session(loopback_config(server.addr), g);
    // Reading to the end would never finish: only stopping at the cap gives TooLarge.
    assert!(matches!(
        s.send(get(&api("/stream"))).await,
        Err(HttpError::TooLarge(_))
    ));
    let read = s.stats().bytes_in;
    assert!(read > cap && read <= cap + 64 * 1024, "read {read} bytes");
}

#[tokio::test]
async fn total_bytes_out_are_capped_per_session() {
    let server = spawn_server().await;
    let mut g = grant(&[API]);
    g.limits.max_total_bytes_out = 15;
    let mut s = session(loopback_config(server.addr), g);
    let mut req = request("POST", &api("/echo"));
    req.body = Some(vec![b'a'; 10]);
    assert!(s.send(req.clone()).await.is_ok());
    assert!(matches!(s.send(req).await, Err(HttpError::TooLarge(_))));
    assert_eq!(server.count(), 1);
    assert_eq!(s.stats().bytes_out, 10);
    assert_eq!(
        s.limit_hit(),
        Some(LimitHit::OutboundLimit(OutboundLimit::TotalBytesOut))
    );
}

#[tokio::test]
async fn total_bytes_in_are_capped_per_session() {
    let server = spawn_server().await;
    let mut g = grant(&[API]);
    g.limits.max_total_bytes_in = 1500;
    let mut s = session(loopback_config(server.addr), g);
    assert!(s.send(get(&api("/bytes?n=1000"))).await.is_ok());
    assert!(matches!(
        s.send(get(&api("/bytes?n=1000"))).await,
        Err(HttpError::TooLarge(_))
    ));
    assert!(s.send(get(&api("/bytes?n=500"))).await.is_ok());
    assert_eq!(
        s.limit_hit(),
        Some(LimitHit::OutboundLimit(OutboundLimit::TotalBytesIn))
    );
}

#[tokio::test]
async fn slow_response_times_out() {
    let server = spawn_server().await;
    let mut g = grant(&[API]);
    g.limits.request_timeout = Duration::from_millis(300);
    let mut s = session(loopback_config(server.addr), g);
    let started = std::time::Instant::now();
    assert_eq!(s.send(get(&api("/slow"))).await, Err(HttpError::Timeout));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn https_to_a_trusted_ca_works_and_an_untrusted_certificate_fails_to_connect() {
    let (server, ca_pem) = spawn_tls_server().await;
    let https_only = |extra_root_certificates: Vec<String>| OutboundConfig {
        allowed_private_ranges: vec!["127.0.0.0/8".parse().unwrap()],
        resolve_overrides: overrides(server.addr),
        extra_root_certificates,
        ..OutboundConfig::default()
    };
    let url = format!("https://{API}/echo");

    let mut s = session(https_only(vec![ca_pem]), bearer_grant(&[API]));
    assert_eq!(s.send(get(&url)).await.unwrap().status, 200);
    let expected = format!("Bearer {SECRET}");
    assert_eq!(
        server.seen()[0].header("authorization"),
        [expected.as_str()]
    );

    // The certificate is checked: without the test CA the handshake fails.
    let mut s = session(https_only(vec![]), bearer_grant(&[API]));
    assert!(matches!(
        s.send(get(&url)).await,
        Err(HttpError::ConnectFailed(_))
    ));
    assert_eq!(server.count(), 1);
}

#[test]
fn invalid_extra_root_certificates_are_refused() {
    for pem in ["", "not a certificate"] {
        let config = OutboundConfig {
            extra_root_certificates: vec![pem.to_owned()],
            ..OutboundConfig::default()
        };
        let result = Gate::new(config);
        assert!(
            matches!(
                result,
                Err(OutboundError::InvalidCertificate { index: 0, .. })
            ),
            "{pem:?}: {result:?}"
        );
    }
}

#[tokio::test]
async fn refused_connection_is_connect_failed() {
    let addr = closed_port().await;
    let mut s = session(loopback_config(addr), grant(&[API]));
    assert!(matches!(
        s.send(get(&api("/"))).await,
        Err(HttpError::ConnectFailed(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// Rule 6: credentials

/// Sends one request with the guest's own versions of the credential headers and returns what
/// the server saw.
async fn send_with_auth(
    auth: AuthSpec,
    credential: Credential,
    url_path: &str,
    guest_headers: &[(&str, &str)],
) -> Seen {
    let server = spawn_server().await;
    let g = Grant {
        auth,
        credential,
        ..grant(&[API])
    };
    let mut s = session(loopback_config(server.addr), g);
    let mut req = get(&api(url_path));
    req.headers = guest_headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert_eq!(s.send(req).await.unwrap().status, 200);
    server.seen().pop().unwrap()
}

#[tokio::test]
async fn api_key_header_replaces_guest_headers_of_that_name() {
    let seen = send_with_auth(
        AuthSpec::ApiKey {
            in_: ApiKeyLocation::Header,
            name: "Authorization".into(),
            prefix: Some("Bearer ".into()),
        },
        Credential::ApiKey(Secret::from(SECRET)),
        "/echo",
        &[
            ("authorization", "Bearer guest"),
            ("AUTHORIZATION", "other"),
            ("x-keep", "1"),
        ],
    )
    .await;
    assert_eq!(
        seen.header("authorization"),
        [format!("Bearer {SECRET}").as_str()]
    );
    assert_eq!(seen.header("x-keep"), ["1"]);
}

#[tokio::test]
async fn api_key_query_replaces_guest_param_of_that_name() {
    let seen = send_with_auth(
        AuthSpec::ApiKey {
            in_: ApiKeyLocation::Query,
            name: "api_key".into(),
            prefix: None,
        },
        Credential::ApiKey(Secret::from(SECRET)),
        "/echo?api_key=guest&q=a%20b&api%5Fkey=again",
        &[],
    )
    .await;
    let query: Vec<(String, String)> = url::Url::parse(&format!("http://x{}", seen.uri))
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(
        query,
        [
            ("q".to_owned(), "a b".to_owned()),
            ("api_key".to_owned(), SECRET.to_owned())
        ]
    );
}

#[tokio::test]
async fn basic_auth_replaces_guest_authorization() {
    let seen = send_with_auth(
        AuthSpec::Basic,
        Credential::Basic {
            username: "alice".into(),
            password: Secret::from(SECRET),
        },
        "/echo",
        &[("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")],
    )
    .await;
    let blob = base64::engine::general_purpose::STANDARD.encode(format!("alice:{SECRET}"));
    assert_eq!(
        seen.header("authorization"),
        [format!("Basic {blob}").as_str()]
    );
}

#[tokio::test]
async fn custom_headers_replace_guest_headers() {
    let seen = send_with_auth(
        AuthSpec::CustomHeader {
            headers: vec!["X-Api-Key".into(), "X-Org".into()],
        },
        Credential::CustomHeaders(vec![
            ("x-api-key".into(), Secret::from(SECRET)),
            ("X-Org".into(), Secret::from("org-42")),
            // Not listed in the auth spec: never sent.
            ("X-Extra".into(), Secret::from("extra-secret")),
        ]),
        "/echo",
        &[("x-api-key", "guest"), ("x-org", "guest-org")],
    )
    .await;
    assert_eq!(seen.header("x-api-key"), [SECRET]);
    assert_eq!(seen.header("x-org"), ["org-42"]);
    assert!(seen.header("x-extra").is_empty());
}

#[tokio::test]
async fn oauth2_sends_the_access_token_as_bearer() {
    let seen = send_with_auth(
        bearer_grant(&[]).auth,
        bearer_grant(&[]).credential,
        "/echo",
        &[("authorization", "Bearer forged")],
    )
    .await;
    assert_eq!(
        seen.header("authorization"),
        [format!("Bearer {SECRET}").as_str()]
    );
}

#[tokio::test]
async fn credential_headers_are_reserved_even_without_a_value() {
    // No credential on the connection: the guest still may not fill the credential's place.
    let seen = send_with_auth(
        bearer_grant(&[]).auth,
        Credential::None,
        "/echo",
        &[("authorization", "Bearer forged")],
    )
    .await;
    assert!(seen.header("authorization").is_empty(), "{seen:?}");
    // A custom header the credential has no value for is removed too.
    let seen = send_with_auth(
        AuthSpec::CustomHeader {
            headers: vec!["X-Api-Key".into(), "X-Org".into()],
        },
        Credential::CustomHeaders(vec![("X-Api-Key".into(), Secret::from(SECRET))]),
        "/echo",
        &[("x-org", "guest-org")],
    )
    .await;
    assert_eq!(seen.header("x-api-key"), [SECRET]);
    assert!(seen.header("x-org").is_empty(), "{seen:?}");
}

#[tokio::test]
async fn credential_is_never_sent_to_wildcard_only_matches() {
    let server = spawn_server().await;
    // Only `*` declared: no host is explicit, so no request gets the credential.
    let mut s = session(loopback_config(server.addr), bearer_grant(&["*"]));
    s.send(get(&api("/echo"))).await.unwrap();
    // `*` next to an explicit host: only that host gets it.
    let mut s = session(loopback_config(server.addr), bearer_grant(&[API, "*"]));
    s.send(get(&format!("http://{OTHER}/echo"))).await.unwrap();
    s.send(get(&api("/echo"))).await.unwrap();
    let seen = server.seen();
    assert!(seen[0].header("authorization").is_empty());
    assert!(seen[1].header("authorization").is_empty());
    assert_eq!(
        seen[2].header("authorization"),
        [format!("Bearer {SECRET}").as_str()]
    );
}

#[tokio::test]
async fn mismatched_credential_fails_instead_of_sending_unauthenticated() {
    let server = spawn_server().await;
    let g = Grant {
        auth: AuthSpec::Basic,
        credential: Credential::ApiKey(Secret::from(SECRET)),
        ..grant(&[API])
    };
    let mut s = session(loopback_config(server.addr), g);
    assert!(matches!(
        s.send(get(&api("/echo"))).await,
        Err(HttpError::Other(_))
    ));
    assert_eq!(server.count(), 0);
}

#[tokio::test]
async fn transport_headers_from_the_guest_are_stripped() {
    let server = spawn_server().await;
    let mut s = session(loopback_config(server.addr), grant(&[API]));
    let mut req = request("POST", &api("/echo"));
    req.body = Some(b"hello".to_vec());
    req.headers = [
        ("Host", "evil.example.test"),
        ("Content-Length", "999"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "upgrade"),
        ("Upgrade", "websocket"),
        ("Proxy-Authorization", "Basic eDp5"),
        ("Proxy-Connection", "keep-alive"),
        ("x-fine", "yes"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    assert_eq!(s.send(req).await.unwrap().status, 200);
    let seen = server.seen().pop().unwrap();
    assert_eq!(seen.header("host"), [API]);
    assert_eq!(seen.header("content-length"), ["5"]);
    assert_eq!(seen.body, b"hello");
    for absent in [
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            seen.header(absent).is_empty(),
            "{absent} reached the server"
        );
    }
    assert!(
        seen.header("connection")
            .iter()
            .all(|v| !v.contains("upgrade"))
    );
    assert_eq!(seen.header("x-fine"), ["yes"]);
}

/// A durable run's step key goes on every request that is not a safe method, unless the guest
/// chose its own; GET carries none.
#[tokio::test]
async fn a_step_key_is_sent_as_idempotency_key_on_unsafe_methods() {
    let server = spawn_server().await;
    let keyed = Grant {
        idempotency_key: Some(HeaderValue::from_static("run_1:charge")),
        ..grant(&[API])
    };
    let mut s = session(loopback_config(server.addr), keyed);
    for method in ["POST", "GET", "DELETE"] {
        assert_eq!(
            s.send(request(method, &api("/echo"))).await.unwrap().status,
            200
        );
    }
    let mut own = request("PUT", &api("/echo"));
    own.headers = vec![("Idempotency-Key".into(), "guest-chosen".into())];
    assert_eq!(s.send(own).await.unwrap().status, 200);
    let seen = server.seen();
    let keys: Vec<Vec<&str>> = seen.iter().map(|r| r.header("idempotency-key")).collect();
    assert_eq!(
        keys,
        [
            vec!["run_1:charge"],
            vec![],
            vec!["run_1:charge"],
            vec!["guest-chosen"],
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Rule 7: scrubbing

#[tokio::test]
async fn echoed_credential_is_scrubbed_from_response_headers_and_body() {
    let server = spawn_server().await;
    let basic = Credential::Basic {
        username: "alice".into(),
        password: Secret::from(SECRET),
    };
    let api_key = AuthSpec::ApiKey {
        in_: ApiKeyLocation::Header,
        name: "Authorization".into(),
        prefix: Some("Token ".into()),
    };
    // (auth, credential, what the guest sees of the echoed Authorization header)
    let cases = [
        (
            bearer_grant(&[]).auth,
            bearer_grant(&[]).credential,
            "Bearer ***",
        ),
        (AuthSpec::Basic, basic, "Basic ***"),
        (
            api_key,
            Credential::ApiKey(Secret::from(SECRET)),
            "Token ***",
        ),
    ];
    let basic_blob = base64::engine::general_purpose::STANDARD.encode(format!("alice:{SECRET}"));
    for (auth, credential, expected) in cases {
        let is_basic = auth == AuthSpec::Basic;
        let g = Grant {
            auth,
            credential,
            ..grant(&[API])
        };
        let mut s = session(loopback_config(server.addr), g);
        let response = s.send(get(&api("/echo"))).await.unwrap();
        let seen = server.seen().pop().unwrap();
        assert_eq!(
            seen.header("authorization").len(),
            1,
            "the server got the credential"
        );

        let body = String::from_utf8(response.body.clone()).unwrap();
        let headers = format!("{:?}", response.headers);
        for leak in [SECRET, basic_blob.as_str()] {
            assert!(!body.contains(leak), "body leaks {leak}: {body}");
            assert!(!headers.contains(leak), "headers leak {leak}: {headers}");
        }
        assert!(body.contains(expected), "{body}");
        let echoed = response
            .headers
            .iter()
            .find(|(n, _)| n == "x-echo-authorization");
        assert_eq!(echoed.unwrap().1, expected);
        // The scrubber handed to the runtime redacts the same forms from logs and outputs.
        let scrubber = s.scrubber();
        assert_eq!(scrubber.scrub_str(&format!("log {SECRET}")), "log ***");
        let blob_line = format!("log {basic_blob}");
        assert_eq!(scrubber.scrub_str(&blob_line) == "log ***", is_basic);
    }
}

#[tokio::test]
async fn a_credential_reflected_in_base64_is_scrubbed() {
    use super::scrub::tests::{decodings, reveals};
    let server = spawn_server().await;
    let pair = format!("alice:{SECRET}");
    let cases = [
        bearer_grant(&[API]),
        Grant {
            auth: AuthSpec::Basic,
            credential: Credential::Basic {
                username: "alice".into(),
                password: Secret::from(SECRET),
            },
            ..grant(&[API])
        },
    ];
    for g in cases {
        let mut s = session(loopback_config(server.addr), g);
        let response = s.send(get(&api("/base64"))).await.unwrap();
        let body = String::from_utf8(response.body.clone()).unwrap();
        assert!(body.contains("***"), "{body}");
        let headers: Vec<String> = response.headers.iter().map(|(_, v)| v.clone()).collect();
        for text in headers.iter().chain([&body]) {
            assert!(!text.contains(SECRET), "{text}");
            for bytes in decodings(text) {
                for leak in [SECRET, pair.as_str()] {
                    assert!(
                        !reveals(&bytes, leak.as_bytes()),
                        "{text} decodes to {}",
                        String::from_utf8_lossy(&bytes)
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn headers_describe_the_scrubbed_body() {
    let server = spawn_server().await;
    let header = |response: &GuestResponse, name: &str| {
        response
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut s = session(loopback_config(server.addr), bearer_grant(&[API]));
    let response = s.send(get(&api("/described"))).await.unwrap();
    let body = String::from_utf8(response.body.clone()).unwrap();
    assert!(
        body.contains("Bearer ***") && !body.contains(SECRET),
        "{body}"
    );
    assert_eq!(
        header(&response, "content-length"),
        Some(response.body.len().to_string())
    );
    for gone in ["etag", "content-md5", "digest", "content-digest"] {
        assert_eq!(
            header(&response, gone),
            None,
            "{gone} describes the old bytes"
        );
    }
    // A body the gate left as it came keeps every header describing it.
    let mut s = session(loopback_config(server.addr), grant(&[API]));
    let response = s.send(get(&api("/described"))).await.unwrap();
    assert_eq!(
        header(&response, "content-length"),
        Some(response.body.len().to_string())
    );
    assert_eq!(header(&response, "etag").as_deref(), Some("\"v1\""));
    assert!(header(&response, "content-digest").is_some());
}

#[tokio::test]
async fn an_encoded_body_the_scrubber_cannot_read_never_reaches_the_guest() {
    let server = spawn_server().await;
    let asks_for_encoding = || {
        let mut request = get(&api("/encoded"));
        request.headers = vec![("accept-encoding".into(), "x-reverse, gzip".into())];
        request
    };
    let mut s = session(loopback_config(server.addr), bearer_grant(&[API]));
    let response = s.send(asks_for_encoding()).await.unwrap();
    assert_eq!(server.seen()[0].header("accept-encoding"), ["identity"]);
    let mut decoded = response.body.clone();
    if response
        .headers
        .iter()
        .any(|(n, _)| n == "content-encoding")
    {
        decoded.reverse();
    }
    let decoded = String::from_utf8_lossy(&decoded);
    assert!(!decoded.contains(SECRET), "the guest can decode {decoded}");
    // An upstream that encodes anyway is refused before a byte of its body is read.
    let bytes_in = s.stats().bytes_in;
    match s.send(get(&api("/encoded?always"))).await {
        Err(HttpError::Other(message)) => assert!(message.contains("x-reverse"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.stats().bytes_in, bytes_in);
    // Without a credential there is nothing to scrub, and the guest negotiates as it likes.
    let mut s = session(loopback_config(server.addr), grant(&[API]));
    let response = s.send(asks_for_encoding()).await.unwrap();
    assert_eq!(
        server.seen().pop().unwrap().header("accept-encoding"),
        ["x-reverse, gzip"]
    );
    assert!(
        response
            .headers
            .iter()
            .any(|(n, v)| n == "content-encoding" && v == "x-reverse")
    );
}

#[tokio::test]
async fn error_messages_do_not_carry_the_credential() {
    let addr = closed_port().await;
    let g = Grant {
        auth: AuthSpec::ApiKey {
            in_: ApiKeyLocation::Query,
            name: "key".into(),
            prefix: None,
        },
        credential: Credential::ApiKey(Secret::from(SECRET)),
        ..grant(&[API])
    };
    let mut s = session(loopback_config(addr), g);
    let err = s.send(get(&api("/echo"))).await.unwrap_err();
    let encoded: String = url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, HttpError::ConnectFailed(_)), "{err:?}");
    assert!(!text.contains(SECRET) && !text.contains(&encoded), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Rules 8 and 9: request validation, user agent

#[tokio::test]
async fn invalid_methods_urls_and_headers_are_invalid_requests() {
    let server = spawn_server().await;
    let mut s = session(loopback_config(server.addr), grant(&["*"]));
    for method in ["TRACE", "CONNECT", "FOO", "", "GET POST"] {
        let result = s.send(request(method, &api("/echo"))).await;
        assert!(
            matches!(result, Err(HttpError::InvalidRequest(_))),
            "{method:?}: {result:?}"
        );
    }
    for url in [
        "not a url",
        "http://",
        "/relative/path",
        "http://exa mple.test/",
    ] {
        let result = s.send(get(url)).await;
        assert!(
            matches!(result, Err(HttpError::InvalidRequest(_))),
            "{url:?}: {result:?}"
        );
    }
    for (name, value) in [
        ("x-bad", "a\r\nInjected: yes"),
        ("bad name", "v"),
        ("x-nul", "a\0b"),
    ] {
        let mut req = get(&api("/echo"));
        req.headers = vec![(name.into(), value.into())];
        let result = s.send(req).await;
        assert!(
            matches!(result, Err(HttpError::InvalidRequest(_))),
            "{name:?}: {result:?}"
        );
    }
    assert_eq!(server.count(), 0);
    assert_eq!(s.limit_hit(), None, "malformed requests are not limit hits");
    // Every allowed method goes through (lowercase accepted).
    for method in [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "get",
    ] {
        let response = s.send(request(method, &api("/echo"))).await.unwrap();
        assert_eq!(response.status, 200, "{method}");
    }
    let methods: Vec<String> = server.seen().into_iter().map(|r| r.method).collect();
    assert_eq!(
        methods,
        [
            "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "GET"
        ]
    );
}

#[tokio::test]
async fn default_user_agent_unless_the_guest_sets_one() {
    let server = spawn_server().await;
    let mut s = session(loopback_config(server.addr), grant(&[API]));
    s.send(get(&api("/echo"))).await.unwrap();
    let mut req = get(&api("/echo"));
    req.headers = vec![("User-Agent".into(), "my-connector/1.0".into())];
    s.send(req).await.unwrap();
    let seen = server.seen();
    assert_eq!(
        seen[0].header("user-agent"),
        [concat!("airlock/", env!("CARGO_PKG_VERSION"))]
    );
    assert_eq!(seen[1].header("user-agent"), ["my-connector/1.0"]);
}

// ---------------------------------------------------------------------------------------------
// Gate construction and statistics

/// The runtime keeps a `Session` in wasmtime store data and awaits `send` from an async host
/// import: both must be `Send`.
#[test]
fn session_and_send_future_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let mut s = Gate::new(OutboundConfig::default())
        .unwrap()
        .session(Grant::default());
    is_send(&s);
    is_send(&s.send(get("https://example.test/")));
}

#[test]
fn invalid_resolve_overrides_are_refused() {
    for host in ["", "127.0.0.1", "[::1]", "*.x.test", "a b"] {
        let config = OutboundConfig {
            resolve_overrides: HashMap::from([(
                host.to_owned(),
                vec!["127.0.0.1:80".parse().unwrap()],
            )]),
            ..OutboundConfig::default()
        };
        assert!(
            matches!(
                Gate::new(config),
                Err(OutboundError::InvalidOverride { .. })
            ),
            "{host:?}"
        );
    }
    let config = OutboundConfig {
        resolve_overrides: HashMap::from([(API.to_owned(), vec![])]),
        ..OutboundConfig::default()
    };
    assert!(Gate::new(config).is_err());
}

#[tokio::test]
async fn stats_count_requests_denials_and_bytes() {
    let server = spawn_server().await;
    let mut s = session(loopback_config(server.addr), grant(&[API]));
    let mut req = request("POST", &api("/bytes?n=300"));
    req.body = Some(vec![0; 7]);
    s.send(req).await.unwrap();
    let _ = s.send(get(&format!("http://{OTHER}/"))).await;
    assert_eq!(
        s.stats(),
        OutboundStats {
            requests: 1,
            denied: 1,
            bytes_out: 7,
            bytes_in: 300
        }
    );
}

// ---------------------------------------------------------------------------------------------
// OAuth2: refresh once after a 401, and the refresh-token grant

const NEW_TOKEN: &str = "n3w-T0ken/after+401";

/// A refresher that records the tokens it was asked to replace and answers `answer`.
struct FakeRefresher {
    asked: Arc<Mutex<Vec<String>>>,
    answer: Result<&'static str, &'static str>,
}

impl RefreshAccessToken for FakeRefresher {
    fn refresh<'a>(
        &'a self,
        rejected: &'a Secret,
    ) -> futures::future::BoxFuture<'a, Result<Secret, String>> {
        self.asked
            .lock()
            .unwrap()
            .push(rejected.expose().to_owned());
        let answer = self.answer.map(Secret::from).map_err(str::to_owned);
        Box::pin(async move { answer })
    }
}

/// A bearer grant for API whose refresher answers `answer`; returns the refresher's record.
fn refreshable_grant(
    answer: Result<&'static str, &'static str>,
) -> (Grant, Arc<Mutex<Vec<String>>>) {
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let refresher = TokenRefresher::new(FakeRefresher {
        asked: Arc::clone(&asked),
        answer,
    });
    let grant = Grant {
        credential: Credential::OAuth2 {
            access_token: Secret::from(SECRET),
            refresher: Some(refresher),
        },
        ..bearer_grant(&[API])
    };
    (grant, asked)
}

fn bearer_accepting(token: &str) -> String {
    let token: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    api(&format!("/bearer?accept={token}"))
}

#[tokio::test]
async fn a_401_to_a_refreshable_bearer_is_resent_once_with_the_new_token() {
    let server = spawn_server().await;
    let (grant, asked) = refreshable_grant(Ok(NEW_TOKEN));
    let mut s = session(loopback_config(server.addr), grant);
    // Taken before the refresh, as the runtime takes it before the guest runs.
    let runtime_scrubber = s.scrubber();
    let mut req = request("POST", &bearer_accepting(NEW_TOKEN));
    req.body = Some(b"payload".to_vec());
    req.headers = vec![
        ("x-keep".into(), "1".into()),
        ("authorization".into(), "Bearer forged".into()),
    ];
    let response = s.send(req).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(*asked.lock().unwrap(), [SECRET]);

    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    for hop in &seen {
        assert_eq!(hop.method, "POST");
        assert_eq!(hop.uri, seen[0].uri);
        assert_eq!(hop.body, b"payload");
        assert_eq!(hop.header("x-keep"), ["1"]);
    }
    assert_eq!(
        seen[0].header("authorization"),
        [format!("Bearer {SECRET}").as_str()]
    );
    assert_eq!(
        seen[1].header("authorization"),
        [format!("Bearer {NEW_TOKEN}").as_str()]
    );
    // The retry is a request like any other.
    assert_eq!(s.stats().requests, 2);
    assert_eq!(s.stats().bytes_out, 14);

    // The new token is scrubbed like the old one, here and in the runtime's copy.
    let body = String::from_utf8(response.body.clone()).unwrap();
    let echoed = response
        .headers
        .iter()
        .find(|(n, _)| n == "x-echo-authorization");
    assert_eq!(echoed.unwrap().1, "Bearer ***");
    assert!(
        !body.contains(NEW_TOKEN) && body.contains("Bearer ***"),
        "{body}"
    );
    assert_eq!(
        runtime_scrubber.scrub_str(&format!("{NEW_TOKEN} {SECRET}")),
        "*** ***"
    );

    // Later requests of the invocation carry the new token.
    s.send(get(&api("/echo"))).await.unwrap();
    assert_eq!(
        server.seen()[2].header("authorization"),
        [format!("Bearer {NEW_TOKEN}").as_str()]
    );
}

#[tokio::test]
async fn a_second_401_goes_back_to_the_guest_and_the_session_refreshes_once() {
    let server = spawn_server().await;
    let (grant, asked) = refreshable_grant(Ok(NEW_TOKEN));
    let mut s = session(loopback_config(server.addr), grant);
    let response = s.send(get(&bearer_accepting("nothing"))).await.unwrap();
    assert_eq!(response.status, 401);
    assert_eq!(server.count(), 2);
    assert_eq!(asked.lock().unwrap().len(), 1);
    // What the guest sees of the second 401 quotes the new token, scrubbed.
    assert_eq!(response.body, b"rejected Bearer ***");

    let response = s.send(get(&bearer_accepting("nothing"))).await.unwrap();
    assert_eq!(response.status, 401);
    assert_eq!(server.count(), 3);
    assert_eq!(asked.lock().unwrap().len(), 1);
    assert_eq!(s.limit_hit(), None);
}

#[tokio::test]
async fn a_failed_refresh_gives_the_guest_the_original_401() {
    let server = spawn_server().await;
    let (grant, asked) = refreshable_grant(Err("the token endpoint refused"));
    let mut s = session(loopback_config(server.addr), grant);
    let response = s.send(get(&bearer_accepting(NEW_TOKEN))).await.unwrap();
    assert_eq!(response.status, 401);
    assert_eq!(response.body, b"rejected Bearer ***");
    assert_eq!(server.count(), 1);
    assert_eq!(*asked.lock().unwrap(), [SECRET]);
    assert_eq!(s.stats().requests, 1);
    assert_eq!(s.limit_hit(), None);
}

#[tokio::test]
async fn no_retry_when_the_limits_leave_no_room_for_it() {
    let server = spawn_server().await;
    let (mut grant, asked) = refreshable_grant(Ok(NEW_TOKEN));
    grant.limits.max_requests = 1;
    let mut s = session(loopback_config(server.addr), grant);
    let response = s.send(get(&bearer_accepting(NEW_TOKEN))).await.unwrap();
    assert_eq!(response.status, 401);
    assert_eq!(server.count(), 1);
    // The token was refreshed (for the next invocation), but the retry was not sent, and a
    // request the guest never made is no limit hit of the guest's.
    assert_eq!(asked.lock().unwrap().len(), 1);
    assert_eq!(s.stats().requests, 1);
    assert_eq!(s.limit_hit(), None);
}

#[tokio::test]
async fn only_a_refreshable_bearer_is_refreshed() {
    let server = spawn_server().await;
    // A token without a refresher (the CLI's): the 401 goes back as is.
    let mut s = session(loopback_config(server.addr), bearer_grant(&[API]));
    let response = s.send(get(&bearer_accepting(NEW_TOKEN))).await.unwrap();
    assert_eq!((response.status, server.count()), (401, 1));
    // A hop that carried no credential (a host only `*` admits).
    let (mut grant, asked) = refreshable_grant(Ok(NEW_TOKEN));
    grant.declared_hosts = patterns(&[API, "*"]);
    let mut s = session(loopback_config(server.addr), grant);
    let other = format!("http://{OTHER}/bearer?accept=x");
    assert_eq!(s.send(get(&other)).await.unwrap().status, 401);
    assert_eq!(server.count(), 2);
    assert!(asked.lock().unwrap().is_empty());
}

/// Sends the refresh-token grant to the test server's `/token` with `scopes`, allowed by
/// `tenant`.
async fn refresh_at(
    server: &TestServer,
    tenant: &[&str],
    scopes: &[String],
) -> Result<TokenGrant, RefreshError> {
    let gate = Gate::new(loopback_config(server.addr)).unwrap();
    gate.refresh_oauth2(
        &format!("http://{AUTH}/token"),
        &patterns(tenant),
        RefreshRequest {
            client_id: "client-1",
            client_secret: &Secret::from("client-secret"),
            refresh_token: &Secret::from("refresh-1"),
            scopes,
        },
    )
    .await
}

fn form_of(seen: &Seen) -> HashMap<String, String> {
    url::form_urlencoded::parse(&seen.body)
        .into_owned()
        .collect()
}

#[tokio::test]
async fn the_refresh_sends_the_manifests_scopes_space_separated() {
    let server = spawn_server().await;
    let scopes = vec!["read:user".to_owned(), "repo".to_owned()];
    let grant = refresh_at(&server, &["*"], &scopes).await.unwrap();
    assert_eq!(grant.access_token.expose(), "fresh-from-token-endpoint");
    let form = form_of(&server.seen()[0]);
    assert_eq!(form["scope"], "read:user repo");
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], "refresh-1");

    // No declared scopes: no `scope` parameter (the grant keeps the original scope).
    refresh_at(&server, &["*"], &[]).await.unwrap();
    assert!(!form_of(&server.seen()[1]).contains_key("scope"));
}

#[tokio::test]
async fn a_token_host_outside_the_tenant_policy_is_never_called() {
    let server = spawn_server().await;
    let err = refresh_at(&server, &[API], &[]).await.unwrap_err();
    match err {
        RefreshError::Denied(reason) => assert!(
            reason.contains("host auth.example.test is not allowed by the tenant"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.count(), 0);
    // The same URL under a policy that names it goes out.
    refresh_at(&server, &[API, AUTH], &[]).await.unwrap();
    assert_eq!(server.count(), 1);
}
