//! Test helpers shared by the runtime's unit tests and the host's integration tests, so there
//! is one test CA and one way to serve a fake upstream:
//! - [`TestCa`]: a fresh certificate authority and leaf certificates it signs;
//! - [`serve`] and [`serve_tls`]: an axum router on 127.0.0.1, plain or over TLS.
//!
//! Tests reach "real" host names over real TLS: the gate maps the names to the server's
//! address (`OutboundConfig::resolve_overrides`) and trusts the CA
//! (`extra_root_certificates`), the operator's own knobs.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test helpers: a failure is a failed test.

use std::net::SocketAddr;

use axum::Router;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM: what the gate is told to trust.
    pub pem: String,
}

/// A leaf certificate and its key, PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names`, signed by this CA.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let key = KeyPair::generate().expect("leaf key");
        let cert = CertificateParams::new(names)
            .expect("leaf params")
            .signed_by(&key, &self.issuer)
            .expect("leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// Serves `router` over plain HTTP on 127.0.0.1 (a free port) until the runtime ends.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// Serves `router` over TLS on 127.0.0.1 with a certificate for `names` from a fresh
/// [`TestCa`]; returns the address and the CA's PEM.
pub async fn serve_tls(router: Router, names: &[&str]) -> (SocketAddr, String) {
    let ca = TestCa::new();
    let leaf = ca.leaf(names);
    let config = axum_server::tls_rustls::RustlsConfig::from_pem(
        leaf.cert_pem.into_bytes(),
        leaf.key_pem.into_bytes(),
    )
    .await
    .expect("tls config");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let server = axum_server::from_tcp_rustls(listener, config).expect("tls server");
    tokio::spawn(async move {
        let _ = server.serve(router.into_make_service()).await;
    });
    (addr, ca.pem)
}
