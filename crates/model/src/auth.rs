//! How a connector authenticates: the manifest's [`AuthSpec`] and the [`AuthType`] a
//! connection is stored with.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a connector authenticates, as declared in its manifest (`docs/manifest.md`). Holds no
/// secret, so it serializes as the manifest wrote it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuthSpec {
    #[default]
    None,
    ApiKey {
        #[serde(rename = "in")]
        in_: ApiKeyLocation,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
    },
    Basic,
    CustomHeader {
        headers: Vec<String>,
    },
    #[serde(rename = "oauth2")]
    OAuth2 {
        token_url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        authorization_url: Option<String>,
        #[serde(default)]
        scopes: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeyLocation {
    Header,
    Query,
}

impl AuthSpec {
    /// The manifest's `auth.type`, which is also the stored [`AuthType`] spelling.
    pub fn type_name(&self) -> &'static str {
        AuthType::from(self).as_str()
    }
}

/// The prefix of a config reference in an auth field: `{config.NAME}`.
const CONFIG_REF: (&str, &str) = ("{config.", "}");

/// Longest auth header name, query parameter name or prefix taken from a connection's config.
const MAX_CONFIG_AUTH_BYTES: usize = 128;

/// Headers a credential may not occupy: the transport's own, which the gate derives from the
/// URL and the body. A credential there would smuggle framing or move the virtual host.
const TRANSPORT_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "http2-settings",
];

/// An auth field that names a config property it cannot be resolved from. Never holds a
/// credential: only the connection's non-secret config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthConfigError(pub String);

/// The property an auth field reads when it is exactly `{config.NAME}`.
fn config_ref(value: &str) -> Option<&str> {
    value
        .strip_prefix(CONFIG_REF.0)
        .and_then(|rest| rest.strip_suffix(CONFIG_REF.1))
}

impl AuthSpec {
    /// The config properties this auth reads: an `api_key`'s `name` or `prefix` may be
    /// `{config.NAME}`, so a generic connector (`http`) lets each connection say how its
    /// credential is sent (`Authorization: Bearer …`, `X-Api-Key: …`).
    pub fn config_names(&self) -> Vec<&str> {
        match self {
            AuthSpec::ApiKey { name, prefix, .. } => [Some(name.as_str()), prefix.as_deref()]
                .into_iter()
                .flatten()
                .filter_map(config_ref)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Checks the spec as a manifest declares it: each `{config.NAME}` whole (never part of
    /// a value) and declared by `declared`, and a fixed header name a header a credential may
    /// occupy. Returns the offending field and why.
    pub fn check(&self, declared: impl Fn(&str) -> bool) -> Result<(), (String, String)> {
        let AuthSpec::ApiKey { in_, name, prefix } = self else {
            return Ok(());
        };
        for (field, value) in [("auth.name", Some(name)), ("auth.prefix", prefix.as_ref())] {
            let Some(value) = value else { continue };
            match config_ref(value) {
                Some(property) if !declared(property) => {
                    return Err((
                        field.into(),
                        format!("`config_schema` declares no property `{property}`"),
                    ));
                }
                Some(_) => {}
                None if value.contains('{') => {
                    return Err((
                        field.into(),
                        "`{` may appear only as a whole `{config.NAME}`".into(),
                    ));
                }
                None if field == "auth.name" => {
                    check_key_name(*in_, value).map_err(|e| (field.into(), e.0))?;
                }
                None => {}
            }
        }
        Ok(())
    }

    /// This spec with every `{config.NAME}` replaced by the connection's config value, or the
    /// property's `default` in `schema` when the config leaves it out. A name must fit where
    /// the key goes (a header a credential may occupy); a prefix is printable ASCII.
    pub fn resolve(
        &self,
        config: &Value,
        schema: Option<&Value>,
    ) -> Result<AuthSpec, AuthConfigError> {
        let AuthSpec::ApiKey { in_, name, prefix } = self else {
            return Ok(self.clone());
        };
        let lookup = |value: &str| -> Result<String, AuthConfigError> {
            let Some(property) = config_ref(value) else {
                return Ok(value.to_owned());
            };
            let default = schema
                .and_then(|s| s.get("properties"))
                .and_then(|p| p.get(property))
                .and_then(|p| p.get("default"));
            match config.get(property).or(default) {
                Some(Value::String(s)) if s.len() <= MAX_CONFIG_AUTH_BYTES => Ok(s.clone()),
                Some(Value::String(_)) => Err(AuthConfigError(format!(
                    "the connection's config `{property}` is longer than {MAX_CONFIG_AUTH_BYTES} bytes"
                ))),
                _ => Err(AuthConfigError(format!(
                    "the connection's config has no `{property}` (a string) for its credential"
                ))),
            }
        };
        let resolved_name = lookup(name)?;
        check_key_name(*in_, &resolved_name)?;
        let resolved_prefix = match prefix {
            Some(prefix) => {
                let value = lookup(prefix)?;
                if !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
                    return Err(AuthConfigError(
                        "the credential's prefix must be printable ASCII".into(),
                    ));
                }
                Some(value).filter(|p| !p.is_empty())
            }
            None => None,
        };
        Ok(AuthSpec::ApiKey {
            in_: *in_,
            name: resolved_name,
            prefix: resolved_prefix,
        })
    }
}

/// An api_key's header or query parameter name: a header token the transport does not own,
/// or a non-empty printable parameter name.
fn check_key_name(location: ApiKeyLocation, name: &str) -> Result<(), AuthConfigError> {
    let printable = |b: u8| (b'!'..=b'~').contains(&b);
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || name.len() > MAX_CONFIG_AUTH_BYTES {
        return Err(AuthConfigError(format!(
            "the credential's name must be 1 to {MAX_CONFIG_AUTH_BYTES} bytes"
        )));
    }
    match location {
        ApiKeyLocation::Header if !name.bytes().all(token) => Err(AuthConfigError(format!(
            "{name:?} is not an HTTP header name"
        ))),
        ApiKeyLocation::Header => {
            let lower = name.to_ascii_lowercase();
            if TRANSPORT_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
                Err(AuthConfigError(format!(
                    "the credential may not be sent in `{name}`: the transport owns that header"
                )))
            } else {
                Ok(())
            }
        }
        ApiKeyLocation::Query if !name.bytes().all(printable) => Err(AuthConfigError(format!(
            "{name:?} is not a printable query parameter name"
        ))),
        ApiKeyLocation::Query => Ok(()),
    }
}

/// The auth type of a connection: which fields its credential holds. Stored as its
/// [`AuthType::as_str`] spelling, the same as the manifest's `auth.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthType {
    None,
    ApiKey,
    Basic,
    CustomHeader,
    #[serde(rename = "oauth2")]
    OAuth2,
}

impl AuthType {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::None => "none",
            AuthType::ApiKey => "api_key",
            AuthType::Basic => "basic",
            AuthType::CustomHeader => "custom_header",
            AuthType::OAuth2 => "oauth2",
        }
    }
}

impl From<&AuthSpec> for AuthType {
    fn from(spec: &AuthSpec) -> Self {
        match spec {
            AuthSpec::None => AuthType::None,
            AuthSpec::ApiKey { .. } => AuthType::ApiKey,
            AuthSpec::Basic => AuthType::Basic,
            AuthSpec::CustomHeader { .. } => AuthType::CustomHeader,
            AuthSpec::OAuth2 { .. } => AuthType::OAuth2,
        }
    }
}

impl fmt::Display for AuthType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored auth type this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown auth type {0:?}")]
pub struct UnknownAuthType(pub String);

impl FromStr for AuthType {
    type Err = UnknownAuthType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            AuthType::None,
            AuthType::ApiKey,
            AuthType::Basic,
            AuthType::CustomHeader,
            AuthType::OAuth2,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
        .ok_or_else(|| UnknownAuthType(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_spelling_round_trips_and_matches_the_manifest() {
        for spec in [
            AuthSpec::None,
            AuthSpec::Basic,
            AuthSpec::CustomHeader { headers: vec![] },
            AuthSpec::OAuth2 {
                token_url: "https://t.test".into(),
                authorization_url: None,
                scopes: vec![],
            },
        ] {
            let kind = AuthType::from(&spec);
            assert_eq!(kind.as_str(), spec.type_name());
            assert_eq!(kind.as_str().parse::<AuthType>(), Ok(kind));
        }
        assert!("bearer".parse::<AuthType>().is_err());
    }

    fn key_from_config() -> AuthSpec {
        AuthSpec::ApiKey {
            in_: ApiKeyLocation::Header,
            name: "{config.auth_header}".into(),
            prefix: Some("{config.auth_prefix}".into()),
        }
    }

    fn header(name: &str, prefix: Option<&str>) -> AuthSpec {
        AuthSpec::ApiKey {
            in_: ApiKeyLocation::Header,
            name: name.into(),
            prefix: prefix.map(str::to_owned),
        }
    }

    #[test]
    fn config_references_must_be_whole_and_declared() {
        let spec = key_from_config();
        assert_eq!(spec.config_names(), ["auth_header", "auth_prefix"]);
        assert_eq!(spec.check(|_| true), Ok(()));
        let undeclared = spec.check(|name| name == "auth_header").unwrap_err();
        assert_eq!(undeclared.0, "auth.prefix");
        let partial = header("X-{config.kind}-Key", None)
            .check(|_| true)
            .unwrap_err();
        assert_eq!(partial.0, "auth.name");
        let partial = header("X-Key", Some("Bearer {config.x}"))
            .check(|_| true)
            .unwrap_err();
        assert_eq!(partial.0, "auth.prefix");
        // A fixed name is held to the same rule as one from a config.
        let host = header("Host", None).check(|_| true).unwrap_err();
        assert!(host.1.contains("transport"), "{host:?}");
        assert_eq!(header("X-Api-Key", Some("Token ")).check(|_| false), Ok(()));
    }

    #[test]
    fn resolves_from_the_config_then_the_schema_default() {
        let schema = serde_json::json!({"type": "object", "properties": {
            "auth_header": {"type": "string", "default": "Authorization"},
            "auth_prefix": {"type": "string", "default": "Bearer "}}});
        let spec = key_from_config();
        let empty = serde_json::json!({});
        assert_eq!(
            spec.resolve(&empty, Some(&schema)),
            Ok(header("Authorization", Some("Bearer ")))
        );
        let config = serde_json::json!({"auth_header": "X-Api-Key", "auth_prefix": ""});
        assert_eq!(
            spec.resolve(&config, Some(&schema)),
            Ok(header("X-Api-Key", None))
        );
        // Without a default, a missing property is an error, not an empty header name.
        assert!(spec.resolve(&empty, None).is_err());
        // Fixed fields and other auth types come back as they are.
        assert_eq!(
            header("X-Key", None).resolve(&empty, None),
            Ok(header("X-Key", None))
        );
        assert_eq!(AuthSpec::Basic.resolve(&config, None), Ok(AuthSpec::Basic));
    }

    #[test]
    fn a_config_cannot_move_the_credential_into_framing_or_break_the_header() {
        let spec = key_from_config();
        for (config, why) in [
            (
                serde_json::json!({"auth_header": "Host", "auth_prefix": ""}),
                "host",
            ),
            (
                serde_json::json!({"auth_header": "transfer-encoding", "auth_prefix": ""}),
                "framing",
            ),
            (
                serde_json::json!({"auth_header": "Proxy-Authorization", "auth_prefix": ""}),
                "proxy",
            ),
            (
                serde_json::json!({"auth_header": "X-Key\r\nEvil: 1", "auth_prefix": ""}),
                "crlf in name",
            ),
            (
                serde_json::json!({"auth_header": "", "auth_prefix": ""}),
                "empty name",
            ),
            (
                serde_json::json!({"auth_header": "X-Key", "auth_prefix": "Bearer\r\nEvil: 1 "}),
                "crlf in prefix",
            ),
            (
                serde_json::json!({"auth_header": "X-Key", "auth_prefix": 7}),
                "not a string",
            ),
            (
                serde_json::json!({"auth_header": "X".repeat(129), "auth_prefix": ""}),
                "too long",
            ),
        ] {
            assert!(spec.resolve(&config, None).is_err(), "{why}");
        }
    }
}
