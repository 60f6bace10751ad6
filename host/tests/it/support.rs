//! Shared test helpers: runtimes with test-friendly options, loading the built guests, and
//! local HTTP servers that tests map real-looking host names onto.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use airlock::runtime::{
    EngineOptions, InvokeOutcome, InvokeRequest, Runtime, RuntimeOptions, SharedComponent,
    TenantLimits,
};
use axum::Router;

/// Precompiled components shared by every test process of this run.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("airlock-artifact-cache")
}

pub fn options() -> RuntimeOptions {
    RuntimeOptions {
        engine: EngineOptions {
            pool_size: 16,
            ..EngineOptions::default()
        },
        cache_dir: Some(cache_dir()),
        ..RuntimeOptions::default()
    }
}

/// A runtime whose gate may reach loopback servers over plain http, with `hosts` resolving
/// to `addr`. Only tests that need a local server use this; the default config blocks both.
pub fn options_reaching(addr: SocketAddr, hosts: &[&str]) -> RuntimeOptions {
    let mut options = options();
    options.outbound.allow_http = true;
    options.outbound.allowed_private_ranges = vec!["127.0.0.0/8".parse().expect("cidr")];
    for host in hosts {
        options
            .outbound
            .resolve_overrides
            .insert((*host).to_owned(), vec![addr]);
    }
    options
}

/// A runtime whose gate reaches the HTTPS `server` at `hosts` (resolved to it, its test CA
/// trusted, its loopback address allowed) while keeping https-only.
pub fn options_for_tls(server: &Server, hosts: &[&str]) -> RuntimeOptions {
    let mut options = options_reaching(server.addr, hosts);
    options.outbound.allow_http = false;
    options.outbound.extra_root_certificates = server.ca_pem.iter().cloned().collect();
    options
}

pub fn runtime() -> Runtime {
    Runtime::new(options()).expect("runtime")
}

pub async fn load(runtime: &Runtime, path: &str) -> SharedComponent {
    runtime.load_file(path.as_ref()).await.expect("guest loads")
}

pub async fn hostile(runtime: &Runtime) -> SharedComponent {
    load(runtime, airlock_test_artifacts::HOSTILE).await
}

/// Runs `action` of `component` for tenant "t1" with `limits`.
pub async fn run(
    runtime: &Runtime,
    component: &SharedComponent,
    action: &str,
    input: serde_json::Value,
    limits: TenantLimits,
) -> InvokeOutcome {
    let request = InvokeRequest::action("t1", action, input.to_string()).with_limits(limits);
    runtime.invoke(component, request).await
}

/// A local HTTP(S) server on 127.0.0.1 that counts the requests it receives.
pub struct Server {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    /// For HTTPS servers: the PEM of the test CA that signed the server's certificate.
    pub ca_pem: Option<String>,
}

fn counting(router: Router) -> (Router, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let router = router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            counter.fetch_add(1, Ordering::SeqCst);
            next.run(request)
        },
    ));
    (router, hits)
}

impl Server {
    /// Plain HTTP; URLs must carry the port (`Server::url`).
    pub async fn start(router: Router) -> Server {
        let (router, hits) = counting(router);
        let addr = airlock_testkit::serve(router).await;
        Server {
            addr,
            hits,
            ca_pem: None,
        }
    }

    /// HTTPS with a certificate for `names`, signed by a fresh test CA. With
    /// [`options_for_tls`], guests reach it at `https://<name>/` exactly as in production.
    pub async fn start_tls(router: Router, names: &[&str]) -> Server {
        let (router, hits) = counting(router);
        let (addr, ca_pem) = airlock_testkit::serve_tls(router, names).await;
        Server {
            addr,
            hits,
            ca_pem: Some(ca_pem),
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.addr.port())
    }
}

pub fn error_kind(outcome: &InvokeOutcome) -> Option<airlock::runtime::ErrorKind> {
    outcome.result.as_ref().err().map(|e| e.kind)
}
