//! How a connector declares the credential it needs: the manifest's `auth` object.
//!
//! The declaration is all a connector does about auth. The credential lives with the host's
//! connection and is added to requests by the host's outbound gate; the guest never sees it.

use serde::Serialize;

/// The manifest's `auth`; see docs/manifest.md for what the host adds for each type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Auth {
    None,
    ApiKey(ApiKey),
    Basic,
    CustomHeader {
        headers: Vec<String>,
    },
    #[serde(rename = "oauth2")]
    OAuth2(OAuth2),
}

impl Auth {
    pub fn none() -> Auth {
        Auth::None
    }

    /// An API key sent in the header `name`; add `.prefix("Bearer ")` for bearer tokens.
    pub fn api_key_header(name: impl Into<String>) -> ApiKey {
        ApiKey {
            location: KeyLocation::Header,
            name: name.into(),
            prefix: None,
        }
    }

    /// An API key sent as the query parameter `name`.
    pub fn api_key_query(name: impl Into<String>) -> ApiKey {
        ApiKey {
            location: KeyLocation::Query,
            name: name.into(),
            prefix: None,
        }
    }

    pub fn basic() -> Auth {
        Auth::Basic
    }

    /// Each header gets the connection's value for it.
    pub fn custom_headers<I, S>(headers: I) -> Auth
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Auth::CustomHeader {
            headers: headers.into_iter().map(Into::into).collect(),
        }
    }

    pub fn oauth2(token_url: impl Into<String>) -> OAuth2 {
        OAuth2 {
            token_url: token_url.into(),
            authorization_url: None,
            scopes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyLocation {
    Header,
    Query,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    #[serde(rename = "in")]
    pub location: KeyLocation,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

impl ApiKey {
    /// Text the host puts before the key, e.g. `"Bearer "`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }
}

impl From<ApiKey> for Auth {
    fn from(key: ApiKey) -> Auth {
        Auth::ApiKey(key)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OAuth2 {
    pub token_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_url: Option<String>,
    pub scopes: Vec<String>,
}

impl OAuth2 {
    pub fn authorization_url(mut self, url: impl Into<String>) -> Self {
        self.authorization_url = Some(url.into());
        self
    }

    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }
}

impl From<OAuth2> for Auth {
    fn from(oauth: OAuth2) -> Auth {
        Auth::OAuth2(oauth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_of(auth: impl Into<Auth>) -> serde_json::Value {
        serde_json::to_value(auth.into()).unwrap_or_default()
    }

    #[test]
    fn auth_serializes_in_the_manifest_format() {
        assert_eq!(json_of(Auth::none()), json!({"type": "none"}));
        assert_eq!(
            json_of(Auth::api_key_header("Authorization").prefix("Bearer ")),
            json!({"type": "api_key", "in": "header", "name": "Authorization", "prefix": "Bearer "})
        );
        assert_eq!(
            json_of(Auth::api_key_query("key")),
            json!({"type": "api_key", "in": "query", "name": "key"})
        );
        assert_eq!(json_of(Auth::basic()), json!({"type": "basic"}));
        assert_eq!(
            json_of(Auth::custom_headers(["X-Api-Key", "X-Tenant"])),
            json!({"type": "custom_header", "headers": ["X-Api-Key", "X-Tenant"]})
        );
        assert_eq!(
            json_of(Auth::oauth2("https://a.test/token").scope("repo")),
            json!({"type": "oauth2", "token_url": "https://a.test/token", "scopes": ["repo"]})
        );
    }
}
