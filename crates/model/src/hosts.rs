//! Host patterns and the allowlist decision: a host is reachable only if it matches the
//! connector's declared hosts AND the tenant's policy, and receives the credential only if a
//! declared pattern names it explicitly.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

/// One entry of a host allowlist, as written in a manifest or a tenant policy.
///
/// Parsed from `"*"` (any host), `"api.example.com"` (exactly that host) or `"*.example.com"`
/// (any subdomain of `example.com`, at any depth, but not `example.com` itself). Names are kept
/// lowercase (IDNA names in punycode) without a trailing dot, which is how they are compared.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    Any,
    /// A host name or IP literal (IPv6 in brackets: `[2001:db8::1]`).
    Exact(String),
    /// The parent domain, without the `*.`: `Suffix("example.com")` is written `*.example.com`.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host pattern {pattern:?}: {reason}")]
pub struct HostPatternError {
    pub pattern: String,
    pub reason: &'static str,
}

impl FromStr for HostPattern {
    type Err = HostPatternError;

    fn from_str(pattern: &str) -> Result<HostPattern, HostPatternError> {
        let error = |reason| HostPatternError {
            pattern: pattern.to_owned(),
            reason,
        };
        if pattern == "*" {
            return Ok(HostPattern::Any);
        }
        let (is_suffix, name) = match pattern.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, pattern),
        };
        // A `*` anywhere else ("a.*.com", "*example.com") is not a pattern we support; refusing
        // it beats guessing what the author meant.
        if name.contains('*') {
            return Err(error("`*` is only allowed alone or as a leading `*.`"));
        }
        // WHATWG host parsing gives the same normalization the URL parser applies to request
        // URLs (lowercase, punycode, canonical IP literals), so both sides compare alike. It
        // also rejects ports, paths, userinfo and whitespace.
        let host = url::Host::parse(name).map_err(|_| error("not a valid host name"))?;
        let normalized = match host {
            url::Host::Domain(domain) => normalize_name(&domain),
            url::Host::Ipv4(_) | url::Host::Ipv6(_) if is_suffix => {
                return Err(error("`*.` needs a domain name, not an IP address"));
            }
            ip => ip.to_string(),
        };
        if normalized.is_empty() {
            return Err(error("empty host name"));
        }
        Ok(if is_suffix {
            HostPattern::Suffix(normalized)
        } else {
            HostPattern::Exact(normalized)
        })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Suffix(name) => write!(f, "*.{name}"),
        }
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<HostPattern, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl HostPattern {
    /// Whether this pattern names hosts explicitly (exact or `*.suffix`), which is what earns a
    /// request the connection's credential. A bare `*` never does.
    pub fn is_explicit(&self) -> bool {
        !matches!(self, HostPattern::Any)
    }

    pub fn matches(&self, host: &RequestHost) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(name) => normalize_name(name) == host.name,
            // A suffix never matches an IP literal: "*.0.0.1" must not admit 127.0.0.1.
            HostPattern::Suffix(parent) if !host.is_ip => {
                // Tolerate a pattern built by hand with its "*." still on.
                let parent = normalize_name(parent.strip_prefix("*.").unwrap_or(parent));
                host.name.len() > parent.len() + 1
                    && host.name.ends_with(parent.as_str())
                    && host.name.as_bytes()[host.name.len() - parent.len() - 1] == b'.'
            }
            HostPattern::Suffix(_) => false,
        }
    }
}

/// Lowercase, without one trailing dot: `API.Example.com.` and `api.example.com` are one host.
pub fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// A request's host in the form patterns are compared against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHost {
    /// Normalized name, or the canonical IP literal (`[...]` for IPv6).
    pub name: String,
    pub is_ip: bool,
}

impl RequestHost {
    pub fn of(url: &Url) -> Option<RequestHost> {
        Some(match url.host()? {
            url::Host::Domain(domain) => RequestHost {
                name: normalize_name(domain),
                is_ip: false,
            },
            url::Host::Ipv4(ip) => RequestHost {
                name: ip.to_string(),
                is_ip: true,
            },
            url::Host::Ipv6(ip) => RequestHost {
                name: format!("[{ip}]"),
                is_ip: true,
            },
        })
    }
}

/// The outcome of checking one host against a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostDecision {
    Allowed { credential: bool },
    Denied(String),
}

/// Declared ∩ tenant: the host must match at least one pattern of each list. An empty
/// declared list allows nothing (a connector that declares no hosts gets no network), and so
/// does an empty tenant list.
pub fn decide(
    declared: &[HostPattern],
    tenant: &[HostPattern],
    host: &RequestHost,
) -> HostDecision {
    let name = &host.name;
    if declared.is_empty() {
        return HostDecision::Denied(format!(
            "host {name} is not allowed: the connector declares no hosts"
        ));
    }
    if !declared.iter().any(|pattern| pattern.matches(host)) {
        return HostDecision::Denied(format!(
            "host {name} is not allowed: it is not among the connector's declared hosts"
        ));
    }
    if !tenant.iter().any(|pattern| pattern.matches(host)) {
        return HostDecision::Denied(format!(
            "host {name} is not allowed by the tenant's outbound policy"
        ));
    }
    let credential = declared
        .iter()
        .any(|pattern| pattern.is_explicit() && pattern.matches(host));
    HostDecision::Allowed { credential }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn host(url: &str) -> RequestHost {
        RequestHost::of(&Url::parse(url).unwrap()).unwrap()
    }

    fn pattern(text: &str) -> HostPattern {
        text.parse().unwrap()
    }

    #[test]
    fn parses_and_normalizes_patterns() {
        assert_eq!(pattern("*"), HostPattern::Any);
        assert_eq!(
            pattern("API.GitHub.com."),
            HostPattern::Exact("api.github.com".into())
        );
        assert_eq!(
            pattern("*.Slack.com"),
            HostPattern::Suffix("slack.com".into())
        );
        assert_eq!(pattern("[::1]"), HostPattern::Exact("[::1]".into()));
        assert_eq!(pattern("127.1"), HostPattern::Exact("127.0.0.1".into()));
        for bad in [
            "",
            "*.",
            "a.*.com",
            "*example.com",
            "**",
            "api.x.com:443",
            "http://x.com",
            "x.com/path",
            "a b",
            "user@x.com",
            "*.1.2.3.4",
        ] {
            assert!(
                bad.parse::<HostPattern>().is_err(),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn serde_round_trips_as_strings() {
        let patterns: Vec<HostPattern> =
            serde_json::from_str(r#"["*", "api.x.com", "*.x.com"]"#).unwrap();
        assert_eq!(
            patterns,
            [
                HostPattern::Any,
                HostPattern::Exact("api.x.com".into()),
                HostPattern::Suffix("x.com".into())
            ]
        );
        assert_eq!(
            serde_json::to_string(&patterns).unwrap(),
            r#"["*","api.x.com","*.x.com"]"#
        );
        assert!(serde_json::from_str::<Vec<HostPattern>>(r#"["a.*.com"]"#).is_err());
    }

    #[test]
    fn suffix_matches_subdomains_only() {
        let suffix = pattern("*.example.com");
        assert!(suffix.matches(&host("https://a.example.com/")));
        assert!(suffix.matches(&host("https://a.b.EXAMPLE.com./")));
        assert!(!suffix.matches(&host("https://example.com/")));
        assert!(!suffix.matches(&host("https://badexample.com/")));
        assert!(!suffix.matches(&host("https://example.com.evil.test/")));
        // Built by hand (parsing refuses it): a suffix never matches an IP literal.
        assert!(!HostPattern::Suffix("0.0.1".into()).matches(&host("https://127.0.0.1/")));
    }

    #[test]
    fn exact_matches_case_insensitively_and_without_trailing_dot() {
        let exact = pattern("api.example.com");
        assert!(exact.matches(&host("https://API.example.com./x")));
        assert!(!exact.matches(&host("https://api.example.com.evil.test/")));
        assert!(!exact.matches(&host("https://xapi.example.com/")));
        assert!(pattern("[::1]").matches(&host("http://[0:0::1]/")));
    }

    #[test]
    fn host_must_match_declared_and_tenant() {
        let declared = [pattern("api.a.test"), pattern("*.b.test")];
        let any = [HostPattern::Any];
        assert_eq!(
            decide(&declared, &any, &host("https://api.a.test/")),
            HostDecision::Allowed { credential: true }
        );
        assert!(matches!(
            decide(&declared, &any, &host("https://c.test/")),
            HostDecision::Denied(reason) if reason.starts_with("host c.test is not allowed")
        ));
        // In the declared list but not the tenant's.
        assert!(matches!(
            decide(
                &declared,
                &[pattern("x.b.test")],
                &host("https://api.a.test/")
            ),
            HostDecision::Denied(_)
        ));
        // In the tenant's list but not declared.
        assert!(matches!(
            decide(
                &[pattern("api.a.test")],
                &[pattern("*.b.test")],
                &host("https://x.b.test/")
            ),
            HostDecision::Denied(_)
        ));
        // Empty declared list: no network even with a permissive tenant.
        assert!(matches!(
            decide(&[], &any, &host("https://api.a.test/")),
            HostDecision::Denied(_)
        ));
        // An empty tenant list allows nothing either.
        assert!(matches!(
            decide(&declared, &[], &host("https://api.a.test/")),
            HostDecision::Denied(_)
        ));
    }

    #[test]
    fn credential_only_for_explicitly_declared_hosts() {
        let declared = [HostPattern::Any, pattern("api.a.test"), pattern("*.b.test")];
        let any = [HostPattern::Any];
        let credential = |url| match decide(&declared, &any, &host(url)) {
            HostDecision::Allowed { credential } => credential,
            HostDecision::Denied(reason) => panic!("{reason}"),
        };
        assert!(credential("https://api.a.test/"));
        assert!(credential("https://x.b.test/"));
        assert!(!credential("https://other.test/"));
        assert!(!credential("https://b.test/"));
    }
}
