//! How a connector authenticates: the manifest's [`AuthSpec`] and the [`AuthType`] a
//! connection is stored with.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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
}
