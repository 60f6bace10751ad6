//! The HTTP server under the API over raw sockets: what an anonymous client can do to it
//! (half-sent heads, idle connections, connection floods, slow requests) and what hyper itself
//! refuses, answered as problem documents.

use std::time::Duration;

use airlock::config::Config;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::api_support::{Db, TestServer, on_both_databases};

/// Far above every timeout a test configures: reaching it means the server did not act.
const PATIENCE: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(300);

async fn server(configure: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_configured(Db::Sqlite, crate::support::options(), configure)
        .await
        .expect("SQLite always starts")
}

async fn connect(server: &TestServer) -> TcpStream {
    TcpStream::connect(server.addr).await.expect("connect")
}

/// Everything the server sends until it closes the connection; panics if it does not close
/// it within [`PATIENCE`].
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server kept the connection open; it sent {:?}",
        String::from_utf8_lossy(&bytes)
    );
    bytes
}

/// A parsed response: status, lower-case header lines, body.
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn assert_problem(&self, status: u16, slug: &str) {
        assert_eq!(self.status, status, "{}\n\n{}", self.head, self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.head
        );
        let problem = self.json();
        assert_eq!(
            problem["type"],
            format!("https://airlock.dev/problems/{slug}"),
            "{}",
            self.body
        );
        assert_eq!(problem["status"], status);
        assert!(problem["title"].is_string() && problem["detail"].is_string());
        let length: usize = self
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .expect("a content length");
        assert_eq!(length, self.body.len());
    }
}

/// Reads one response whose body has a content length, leaving the connection open.
async fn read_response(stream: &mut TcpStream) -> Raw {
    let mut bytes = Vec::new();
    let raw = tokio::time::timeout(PATIENCE, async {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(raw) = parse(&bytes) {
                let length = raw
                    .header("content-length")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if raw.body.len() >= length {
                    return raw;
                }
            }
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(
                n > 0,
                "closed mid-response: {:?}",
                String::from_utf8_lossy(&bytes)
            );
            bytes.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    raw.expect("a response in time")
}

fn parse(bytes: &[u8]) -> Option<Raw> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(Raw {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// Sends `request` on a new connection and reads until the server closes it.
async fn exchange(server: &TestServer, request: &[u8]) -> Raw {
    let mut stream = connect(server).await;
    stream.write_all(request).await.expect("write");
    let bytes = read_to_close(&mut stream).await;
    parse(&bytes).unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&bytes)))
}

fn get(path: &str, token: Option<&str>) -> Vec<u8> {
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    format!("GET {path} HTTP/1.1\r\nhost: airlock\r\n{auth}\r\n").into_bytes()
}

/// A `POST /v1/tenants` that announces a body it never sends: the handler waits for it.
fn stalled_post(token: &str) -> Vec<u8> {
    format!(
        "POST /v1/tenants HTTP/1.1\r\nhost: airlock\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"id\":"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_line_is_closed_after_the_header_read_timeout() {
    let server = server(|c| c.header_read_timeout = SHORT).await;
    let mut stream = connect(&server).await;
    stream.write_all(b"GET /heal").await.expect("write");
    let sent = read_to_close(&mut stream).await;
    assert!(sent.is_empty(), "{:?}", String::from_utf8_lossy(&sent));

    // A head trickled byte by byte is bounded by the same timer from its first byte.
    let mut stream = connect(&server).await;
    let trickle = async {
        for byte in b"GET /healthz HTTP/1.1\r\nhost: a\r\nx-slow: "
            .iter()
            .cycle()
        {
            if stream.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert!(
        tokio::time::timeout(PATIENCE, trickle).await.is_ok(),
        "a trickled head kept its connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    // Long enough that the second request below is surely sent within it, even on a busy
    // machine; short enough for the test.
    let server = server(|c| {
        c.idle_timeout = Duration::from_secs(1);
        c.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let mut stream = connect(&server).await;
    stream
        .write_all(&get("/healthz", None))
        .await
        .expect("write");
    let first = read_response(&mut stream).await;
    assert_eq!(first.status, 200, "{}", first.body);
    // Kept alive: the connection serves a second request.
    stream
        .write_all(&get("/healthz", None))
        .await
        .expect("write");
    assert_eq!(read_response(&mut stream).await.status, 200);
    let after = read_to_close(&mut stream).await;
    assert!(after.is_empty(), "{:?}", String::from_utf8_lossy(&after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_health_checks_still_answer_on_the_reserve() {
    let server = server(|c| {
        c.max_connections = 2;
        c.health_connections = 2;
    })
    .await;
    // Fill the cap with two kept-alive connections (each answered, so surely accepted).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&server).await;
        stream
            .write_all(&get("/healthz", None))
            .await
            .expect("write");
        assert_eq!(read_response(&mut stream).await.status, 200);
        held.push(stream);
    }
    // A reserve connection refuses a normal route, and closes.
    let refused = exchange(&server, &get("/v1/tenants", Some(&server.operator()))).await;
    refused.assert_problem(503, "overloaded");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // The other reserve connection answers the probe.
    let probe = exchange(&server, &get("/healthz", None)).await;
    assert_eq!(probe.status, 200, "{}", probe.body);
    assert_eq!(probe.json()["status"], "ok");
    drop(held);
}

/// Sends a stalled request on a new connection to a server that allows one request in
/// flight, and returns once the server counts it: then every other counted request is
/// refused, and that refusal is returned too.
async fn hold_the_one_place(server: &TestServer) -> (TcpStream, Raw) {
    let operator = server.operator();
    let mut stalled = connect(server).await;
    stalled
        .write_all(&stalled_post(&operator))
        .await
        .expect("write");
    for _ in 0..500 {
        let reply = exchange_keep(server, &get("/v1/tenants", Some(&operator))).await;
        if reply.status == 503 {
            return (stalled, reply);
        }
        // A probe in flight when the stalled request arrived took the one place, and the
        // stalled request was refused instead (it has an answer waiting): stall a new one.
        let mut peek = [0u8; 1];
        if !matches!(stalled.try_read(&mut peek), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        {
            stalled = connect(server).await;
            stalled
                .write_all(&stalled_post(&operator))
                .await
                .expect("write");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the stalled request never counted as in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_requests_in_flight_limit_the_server_answers_503_with_retry_after() {
    let server = server(|c| c.max_requests_in_flight = 1).await;
    let (stalled, refused) = hold_the_one_place(&server).await;
    refused.assert_problem(503, "overloaded");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // Health checks are not counted.
    let probe = exchange_keep(&server, &get("/healthz", None)).await;
    assert_eq!(probe.status, 200, "{}", probe.body);
    drop(stalled);
}

/// One request on a new connection, reading its response without waiting for a close.
async fn exchange_keep(server: &TestServer, request: &[u8]) -> Raw {
    let mut stream = connect(server).await;
    stream.write_all(request).await.expect("write");
    read_response(&mut stream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_outlives_the_request_timeout_is_answered_with_a_problem() {
    let server = server(|c| c.request_timeout = SHORT).await;
    let mut stream = connect(&server).await;
    stream
        .write_all(&stalled_post(&server.operator()))
        .await
        .expect("write");
    let bytes = read_to_close(&mut stream).await;
    let reply = parse(&bytes).expect("a response");
    reply.assert_problem(503, "request-timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_hyper_refuses_itself_is_a_problem_document() {
    let server = server(|_| {}).await;

    let garbage = exchange(&server, b"\x01\x02 garbage \x7f\r\n\r\n").await;
    garbage.assert_problem(400, "bad-request");

    let long_uri = format!(
        "GET /v1/{} HTTP/1.1\r\nhost: airlock\r\nconnection: close\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    exchange(&server, long_uri.as_bytes())
        .await
        .assert_problem(414, "uri-too-long");

    let mut many = String::from("GET /healthz HTTP/1.1\r\nhost: airlock\r\nconnection: close\r\n");
    for i in 0..200 {
        many.push_str(&format!("x-header-{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    exchange(&server, many.as_bytes())
        .await
        .assert_problem(431, "header-fields-too-large");

    let huge = format!(
        "GET /healthz HTTP/1.1\r\nhost: airlock\r\nconnection: close\r\nx-big: {}\r\n\r\n",
        "b".repeat(airlock::api::MAX_HEAD_BYTES)
    );
    exchange(&server, huge.as_bytes())
        .await
        .assert_problem(431, "header-fields-too-large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_request_in_flight_finish() {
    let mut server = server(|c| c.max_requests_in_flight = 1).await;
    let (mut stalled, _) = hold_the_one_place(&server).await;
    server.shut_down();
    // `stalled_post` sent `{"id":` of the 1000 bytes it announced.
    let rest = r#""drain","name":"drain"}"#;
    let body = format!("{rest}{}", " ".repeat(1000 - 6 - rest.len()));
    stalled
        .write_all(body.as_bytes())
        .await
        .expect("write the rest of the body");
    let bytes = read_to_close(&mut stalled).await;
    let reply = parse(&bytes).expect("a response");
    assert_eq!(reply.status, 201, "{}", reply.body);
    let served = tokio::time::timeout(PATIENCE, &mut server.serving).await;
    assert!(matches!(served, Ok(Ok(Ok(())))), "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drops_what_outlives_the_grace() {
    let mut server = server(|c| {
        c.max_requests_in_flight = 1;
        c.shutdown_grace = SHORT;
    })
    .await;
    let (mut stalled, _) = hold_the_one_place(&server).await;
    server.shut_down();
    read_to_close(&mut stalled).await;
    let served = tokio::time::timeout(PATIENCE, &mut server.serving).await;
    assert!(matches!(served, Ok(Ok(Ok(())))), "{served:?}");
}

/// A client may half-close its write side once its request is sent (HTTP/1.1 allows it; some
/// load balancers and `curl --no-keepalive`-style tools do): it still gets its whole answer.
async fn half_closed(server: &TestServer, request: &[u8]) -> Raw {
    let mut stream = connect(server).await;
    stream.write_all(request).await.expect("write");
    stream.shutdown().await.expect("half-close");
    let bytes = read_to_close(&mut stream).await;
    parse(&bytes).unwrap_or_else(|| {
        panic!(
            "no response to a half-closed request: {:?}",
            String::from_utf8_lossy(&bytes)
        )
    })
}

on_both_databases!(
    a_client_that_half_closes_after_its_request_gets_the_whole_response,
    a_half_closed_incomplete_request_frees_its_connection,
);

/// Was intermittent (80 of 200 probes and 176 of 200 listings unanswered): many rounds.
const HALF_CLOSE_ROUNDS: usize = 100;

async fn a_client_that_half_closes_after_its_request_gets_the_whole_response(db: Db) {
    let Some(server) = TestServer::start_configured(db, crate::support::options(), |_| {}).await
    else {
        return;
    };
    let operator = server.operator();
    for round in 0..HALF_CLOSE_ROUNDS {
        let probe = half_closed(&server, &get("/healthz", None)).await;
        assert_eq!(probe.status, 200, "round {round}: {}", probe.body);
        assert_eq!(probe.json()["status"], "ok", "round {round}");

        let listing = half_closed(&server, &get("/v1/tenants", Some(&operator))).await;
        assert_eq!(listing.status, 200, "round {round}: {}", listing.body);
        let length: usize = listing
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .expect("a content length");
        assert_eq!(listing.body.len(), length, "round {round}: a whole body");
        assert!(!listing.json().is_null(), "round {round}: {}", listing.body);
    }
}

/// Half-closing does not turn an unfinished request into a held connection: with every timer
/// far beyond the test's patience, the EOF itself must end it and give its place back.
async fn a_half_closed_incomplete_request_frees_its_connection(db: Db) {
    let Some(server) = TestServer::start_configured(db, crate::support::options(), |c| {
        c.header_read_timeout = Duration::from_secs(600);
        c.idle_timeout = Duration::from_secs(600);
        c.request_timeout = Duration::from_secs(600);
        c.max_connections = 1;
        c.health_connections = 1;
    })
    .await
    else {
        return;
    };
    let operator = server.operator();
    let partial_head = b"GET /v1/tenants HTTP/1.1\r\nhost: airl".to_vec();
    let partial_body = stalled_post(&operator);
    for (what, request) in [("head", partial_head), ("body", partial_body)] {
        let mut bytes;
        loop {
            let mut stream = connect(&server).await;
            stream.write_all(&request).await.expect("write");
            stream.shutdown().await.expect("half-close");
            bytes = read_to_close(&mut stream).await;
            // Taken by the reserve because the previous check's place was not given back yet
            // (that happens just after its socket closes): again.
            if parse(&bytes).is_some_and(|reply| reply.status == 503) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            break;
        }
        if let Some(reply) = parse(&bytes) {
            assert!(
                (400..500).contains(&reply.status),
                "an incomplete {what} was answered {}: {}",
                reply.status,
                reply.body
            );
        }
        // The one place is free again (the reserve would answer 503): the slot is given back
        // just after the socket closes, so wait for it rather than assume it.
        let freed = tokio::time::timeout(PATIENCE, async {
            loop {
                let reply = half_closed(&server, &get("/v1/tenants", Some(&operator))).await;
                if reply.status == 200 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            freed.is_ok(),
            "a half-closed incomplete {what} kept its connection"
        );
    }
}
