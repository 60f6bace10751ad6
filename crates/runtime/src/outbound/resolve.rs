//! The gate's DNS resolver: operator overrides, else the system resolver, and in both cases
//! every address is checked before reqwest may connect to it.
//!
//! Checking inside the resolver (rather than resolving once to check and letting the client
//! resolve again to connect) is what defeats DNS rebinding: the addresses checked are exactly
//! the addresses the connector hands to `connect`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::address::blocked_reason;
use airlock_model::hosts::normalize_name;

/// The resolver refused a host because one of its addresses is blocked. Travels through
/// reqwest's error chain as the source of a connect error; the gate finds it there and turns
/// the failure into `HttpError::Denied`.
#[derive(Debug, thiserror::Error)]
#[error("host {host} resolves to {addr}, {reason}")]
pub struct BlockedAddress {
    pub host: String,
    pub addr: std::net::IpAddr,
    pub reason: &'static str,
}

#[derive(Debug, thiserror::Error)]
#[error("host {0} has no addresses")]
struct NoAddresses(String);

#[derive(Debug)]
pub struct GateResolver {
    /// Keys normalized like request hosts (lowercase, no trailing dot).
    overrides: HashMap<String, Vec<SocketAddr>>,
    allowed: Arc<[IpNet]>,
}

impl GateResolver {
    pub fn new(overrides: HashMap<String, Vec<SocketAddr>>, allowed: Arc<[IpNet]>) -> GateResolver {
        let overrides = overrides
            .into_iter()
            .map(|(host, addrs)| (normalize_name(&host), addrs))
            .collect();
        GateResolver { overrides, allowed }
    }
}

impl Resolve for GateResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = normalize_name(name.as_str());
        let overridden = self.overrides.get(&host).cloned();
        let allowed = Arc::clone(&self.allowed);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match overridden {
                Some(addrs) => addrs,
                // Port 0: hyper puts the URL's port (or the scheme's default) in its place.
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            if addrs.is_empty() {
                return Err(NoAddresses(host).into());
            }
            // Refuse the whole host if any address is blocked, not just skip that address:
            // a name that mixes public and private answers is a rebinding attempt or a
            // misconfiguration, and either way the connector should hear about it.
            for addr in &addrs {
                if let Some(reason) = blocked_reason(addr.ip(), &allowed) {
                    return Err(BlockedAddress {
                        host,
                        addr: addr.ip(),
                        reason,
                    }
                    .into());
                }
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn resolver(overrides: &[(&str, &str)], allowed: &[&str]) -> GateResolver {
        let overrides = overrides
            .iter()
            .map(|(host, addr)| (host.to_string(), vec![addr.parse().unwrap()]))
            .collect();
        let allowed: Vec<IpNet> = allowed.iter().map(|net| net.parse().unwrap()).collect();
        GateResolver::new(overrides, allowed.into())
    }

    async fn resolve(resolver: &GateResolver, host: &str) -> Result<Vec<SocketAddr>, String> {
        let name: Name = host.parse().unwrap();
        match resolver.resolve(name).await {
            Ok(addrs) => Ok(addrs.collect()),
            Err(err) => Err(err.to_string()),
        }
    }

    #[tokio::test]
    async fn overrides_are_checked_like_dns_answers() {
        let r = resolver(
            &[
                ("API.example.test", "127.0.0.1:8080"),
                ("pub.test", "8.8.8.8:443"),
            ],
            &[],
        );
        let denied = resolve(&r, "api.example.test.").await.unwrap_err();
        assert!(denied.contains("loopback"), "{denied}");
        assert_eq!(
            resolve(&r, "pub.test").await.unwrap(),
            ["8.8.8.8:443".parse().unwrap()]
        );

        let r = resolver(&[("api.example.test", "127.0.0.1:8080")], &["127.0.0.0/8"]);
        assert_eq!(
            resolve(&r, "api.example.test").await.unwrap(),
            ["127.0.0.1:8080".parse().unwrap()]
        );
    }

    #[tokio::test]
    async fn system_dns_answers_are_checked() {
        // "localhost" comes from /etc/hosts, so this never leaves the machine.
        let r = resolver(&[], &[]);
        let denied = resolve(&r, "localhost").await.unwrap_err();
        assert!(denied.contains("loopback"), "{denied}");
    }
}
