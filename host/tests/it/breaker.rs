//! The outbound gate's circuit breaker as guests meet it: an upstream that keeps failing for a
//! tenant is refused without a request reaching it, the step fails with the retryable
//! `upstream_unavailable`, one probe goes through after the cool-down, and other tenants are
//! never affected.
//!
//! Times are scaled down from the defaults (10 s cool-down, 60 s cap) keeping their ratio;
//! the threshold is the default's 5.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::Duration;

use airlock::outbound::BreakerConfig;
use airlock::runs::retry::StepError;
use airlock::runtime::{
    ErrorKind, InvokeOutcome, InvokeRequest, Runtime, RuntimeOptions, SharedComponent,
};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;
use tokio::sync::Notify;

use crate::support::{Server, error_kind, hostile, options_reaching};

const COOL_DOWN: Duration = Duration::from_secs(2);

fn breaker() -> BreakerConfig {
    let defaults = BreakerConfig::default();
    BreakerConfig {
        cool_down: COOL_DOWN,
        max_cool_down: COOL_DOWN * 6,
        ..defaults
    }
}

/// An upstream whose status the test sets, and which can hold requests until released.
struct Upstream {
    status: AtomicU16,
    hold: AtomicBool,
    release: Notify,
}

async fn answer(State(up): State<Arc<Upstream>>) -> StatusCode {
    if up.hold.load(Ordering::SeqCst) {
        up.release.notified().await;
    }
    StatusCode::from_u16(up.status.load(Ordering::SeqCst))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

struct Setup {
    up: Arc<Upstream>,
    server: Server,
    rt: Runtime,
    guest: SharedComponent,
}

async fn setup(status: u16) -> Setup {
    let up = Arc::new(Upstream {
        status: AtomicU16::new(status),
        hold: AtomicBool::new(false),
        release: Notify::new(),
    });
    let server = Server::start(Router::new().route("/", get(answer)).with_state(up.clone())).await;
    let rt = runtime(options_reaching(server.addr, &["api.example.test"]));
    let guest = hostile(&rt).await;
    Setup {
        up,
        server,
        rt,
        guest,
    }
}

fn runtime(mut options: RuntimeOptions) -> Runtime {
    options.outbound.breaker = breaker();
    Runtime::new(options).expect("runtime")
}

impl Setup {
    fn url(&self) -> String {
        // The query stands for a secret a URL may carry: it must never show in a refusal.
        self.server.url("api.example.test", "/?token=s3cret")
    }

    async fn fetch(&self, tenant: &str) -> InvokeOutcome {
        fetch(&self.rt, &self.guest, tenant, &self.url()).await
    }

    async fn fail_until_open(&self, tenant: &str) {
        for _ in 0..breaker().failure_threshold {
            let outcome = self.fetch(tenant).await;
            let output = outcome.result.expect("a 503 is a response");
            assert_eq!(output["status"], json!(503));
        }
    }
}

async fn fetch(rt: &Runtime, guest: &SharedComponent, tenant: &str, url: &str) -> InvokeOutcome {
    let request = InvokeRequest::action(tenant, "fetch", json!({ "url": url }).to_string());
    rt.invoke(guest, request).await
}

/// Asserts the call was refused by the breaker, and returns the wait it asked for (ms).
fn assert_refused(outcome: &InvokeOutcome) -> u64 {
    let error = outcome.result.as_ref().expect_err("refused");
    assert_eq!(error.kind, ErrorKind::UpstreamUnavailable, "{error:?}");
    assert!(error.retryable, "{error:?}");
    assert!(error.message.contains("circuit breaker"), "{error:?}");
    assert!(!error.message.contains("s3cret"), "{error:?}");
    // Counted as an attempt (so `max_requests` bounds a guest retrying in a loop), not sent.
    assert_eq!(outcome.stats.outbound_requests, 1);
    assert_eq!(outcome.stats.outbound_bytes_in, 0);
    // Not a limit: nothing about the guest's input would make it fail again.
    assert_eq!(outcome.stats.limit_hit, None);
    error.retry_after_ms.expect("the cool-down is the wait")
}

#[tokio::test]
async fn after_five_failures_the_next_request_fails_fast_and_other_tenants_still_get_through() {
    let s = setup(503).await;
    s.fail_until_open("t1").await;
    assert_eq!(s.server.hits(), 5);

    let refused = s.fetch("t1").await;
    let wait = assert_refused(&refused);
    assert!(wait > 0 && wait <= COOL_DOWN.as_millis() as u64, "{wait}");
    assert_eq!(s.server.hits(), 5, "no request reached the upstream");

    // The guest's own error says it is not retryable; the breaker's kind makes the step one
    // the run's policy retries, with the cool-down as the floor of its wait.
    let step = StepError::from_guest(refused.result.as_ref().expect_err("refused"));
    assert_eq!(step.kind, "upstream_unavailable");
    assert!(step.retryable);
    assert_eq!(step.upstream_retry_after_ms, Some(wait));

    // Same host, same process, another tenant: its breaker is its own.
    let other = s.fetch("t2").await;
    assert_eq!(other.result.expect("t2 reaches it")["status"], json!(503));
    assert_eq!(s.server.hits(), 6);
}

#[tokio::test]
async fn client_errors_and_rate_limits_never_open_it() {
    for status in [404, 429, 500] {
        let s = setup(status).await;
        for _ in 0..breaker().failure_threshold * 2 {
            let outcome = s.fetch("t1").await;
            assert_eq!(outcome.result.expect("a response")["status"], json!(status));
        }
        assert_eq!(s.server.hits(), 10, "{status}");
    }
}

#[tokio::test]
async fn after_the_cool_down_exactly_one_probe_goes_through_and_its_success_closes_it() {
    let s = setup(503).await;
    s.fail_until_open("t1").await;
    s.up.status.store(200, Ordering::SeqCst);
    s.up.hold.store(true, Ordering::SeqCst);
    tokio::time::sleep(COOL_DOWN + Duration::from_millis(200)).await;

    let probe = s.fetch("t1");
    let meanwhile = async {
        // Wait for the probe to reach the upstream (which holds it), then try another request.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while s.server.hits() < 6 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the probe never arrived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let second = s.fetch("t1").await;
        assert_refused(&second);
        assert_eq!(s.server.hits(), 6, "only the probe went through");
        s.up.hold.store(false, Ordering::SeqCst);
        s.up.release.notify_one();
    };
    let (probe, ()) = tokio::join!(probe, meanwhile);
    assert_eq!(probe.result.expect("the probe")["status"], json!(200));

    let closed = s.fetch("t1").await;
    assert_eq!(closed.result.expect("closed again")["status"], json!(200));
    assert_eq!(s.server.hits(), 7);
}

#[tokio::test]
async fn a_failed_probe_opens_it_again_for_twice_the_cool_down() {
    let s = setup(503).await;
    s.fail_until_open("t1").await;
    tokio::time::sleep(COOL_DOWN + Duration::from_millis(200)).await;
    let probe = s.fetch("t1").await;
    assert_eq!(probe.result.expect("the probe")["status"], json!(503));
    assert_eq!(s.server.hits(), 6);

    let wait = assert_refused(&s.fetch("t1").await);
    let doubled = 2 * COOL_DOWN.as_millis() as u64;
    assert!(
        wait > COOL_DOWN.as_millis() as u64 && wait <= doubled,
        "{wait}"
    );
    assert_eq!(s.server.hits(), 6);
}

#[tokio::test]
async fn connection_failures_open_it_too() {
    // A port nothing listens on: every attempt is refused by the kernel.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = listener.local_addr().expect("addr");
    drop(listener);
    let rt = runtime(options_reaching(dead, &["api.example.test"]));
    let guest = hostile(&rt).await;
    let url = format!("http://api.example.test:{}/", dead.port());
    for _ in 0..breaker().failure_threshold {
        let outcome = fetch(&rt, &guest, "t1", &url).await;
        assert_eq!(error_kind(&outcome), Some(ErrorKind::ConnectorError));
        assert_eq!(outcome.stats.outbound_requests, 1);
    }
    assert_refused(&fetch(&rt, &guest, "t1", &url).await);
    let other = fetch(&rt, &guest, "t2", &url).await;
    assert_eq!(error_kind(&other), Some(ErrorKind::ConnectorError));
}
