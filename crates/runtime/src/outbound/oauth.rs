//! OAuth2 in the gate: the refresh-token grant (RFC 6749 §6), and the hook through which the
//! gate asks for a fresh access token after an upstream answered 401.
//!
//! The grant is sent by the gate itself rather than by a guest. The token URL comes from a
//! manifest, so it is held to the rules of guest traffic: https unless the operator allows
//! http, no userinfo, a host the tenant's outbound policy allows (the manifest side of
//! "manifest ∩ tenant" is the token URL itself, which the manifest names exactly), and no
//! private, loopback, link-local or metadata address (checked on IP literals here and on every
//! DNS answer in the gate's resolver). It goes out through the gate's one client, which follows
//! no redirects. The manifest's scopes, when it declares any, are sent as `scope`.
//!
//! The token host is deliberately not required among the manifest's `hosts`: declaring it
//! there would also attach the access token to guest requests for it.
//!
//! A [`TokenRefresher`] travels with an OAuth2 credential into the session. When a request
//! that carried the bearer token gets a 401, the session hands it the rejected token and
//! retries that one request once with what it returns (see [`super::Session::send`]). The
//! refresher is implemented by whoever owns the stored token (the API's single-flight
//! refresh); the gate only knows it as this trait.
//!
//! What goes in and comes back are secrets: they travel in [`Secret`], and no error message
//! quotes the request or the response body.

use std::error::Error as _;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use url::Url;
use url::form_urlencoded;
use zeroize::Zeroizing;

use super::{Gate, HostPattern, Scrubber, describe};
use airlock_secrets::Secret;

/// Largest token response read; a token response is a few hundred bytes.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;
/// Bound on one refresh: connecting, sending and reading the answer.
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(20);

/// What the refresh-token grant sends.
#[derive(Debug)]
pub struct RefreshRequest<'a> {
    pub client_id: &'a str,
    pub client_secret: &'a Secret,
    pub refresh_token: &'a Secret,
    /// The manifest's scopes, sent space-separated as `scope` when not empty.
    pub scopes: &'a [String],
}

/// A token endpoint's answer.
#[derive(Debug)]
pub struct TokenGrant {
    pub access_token: Secret,
    /// Seconds from now, when the server says.
    pub expires_in: Option<u64>,
    /// A rotated refresh token, when the server issues one.
    pub refresh_token: Option<Secret>,
}

/// Why a refresh failed. Messages name the cause, never a token or the client secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    #[error("the connector's token URL is not allowed: {0}")]
    Denied(String),
    #[error("the token endpoint could not be reached: {0}")]
    Unreachable(String),
    #[error("the token endpoint did not answer within {}s", REFRESH_TIMEOUT.as_secs())]
    Timeout,
    #[error("the token endpoint refused the refresh (HTTP {status}{})",
        .error.as_deref().map(|e| format!(", error `{e}`")).unwrap_or_default())]
    Rejected { status: u16, error: Option<String> },
    #[error("the token endpoint's answer is not a token response: {0}")]
    BadResponse(String),
}

/// Supplies a fresh access token after an upstream rejected one with 401.
pub trait RefreshAccessToken: Send + Sync {
    /// A valid access token in place of `rejected`: the stored one if another task already
    /// replaced `rejected`, else a new one from the token endpoint. The error is a message
    /// that names the cause and quotes no secret.
    fn refresh<'a>(&'a self, rejected: &'a Secret) -> BoxFuture<'a, Result<Secret, String>>;
}

/// A shared [`RefreshAccessToken`], carried by [`super::Credential::OAuth2`].
#[derive(Clone)]
pub struct TokenRefresher(Arc<dyn RefreshAccessToken>);

impl TokenRefresher {
    pub fn new(refresher: impl RefreshAccessToken + 'static) -> TokenRefresher {
        TokenRefresher(Arc::new(refresher))
    }

    pub async fn refresh(&self, rejected: &Secret) -> Result<Secret, String> {
        self.0.refresh(rejected).await
    }
}

impl fmt::Debug for TokenRefresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenRefresher")
    }
}

#[derive(Deserialize)]
struct RawGrant {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct RawError {
    error: String,
}

impl Gate {
    /// Exchanges a refresh token for a new access token at `token_url`, whose host must be
    /// allowed by `tenant_hosts` (the tenant's outbound policy).
    pub async fn refresh_oauth2(
        &self,
        token_url: &str,
        tenant_hosts: &[HostPattern],
        request: RefreshRequest<'_>,
    ) -> Result<TokenGrant, RefreshError> {
        let scrubber = Scrubber::new(vec![
            request.client_secret.clone(),
            request.refresh_token.clone(),
        ]);
        let url = self.check_token_url(token_url, tenant_hosts)?;
        let result = tokio::time::timeout(REFRESH_TIMEOUT, self.send_refresh(url, &request))
            .await
            .unwrap_or(Err(RefreshError::Timeout));
        result.map_err(|err| match err {
            RefreshError::Unreachable(m) => RefreshError::Unreachable(scrubber.scrub_str(&m)),
            RefreshError::Denied(m) => RefreshError::Denied(scrubber.scrub_str(&m)),
            other => other,
        })
    }

    fn check_token_url(
        &self,
        token_url: &str,
        tenant_hosts: &[HostPattern],
    ) -> Result<Url, RefreshError> {
        self.check_host_url(token_url, tenant_hosts)
            .map_err(RefreshError::Denied)
    }

    async fn send_refresh(
        &self,
        url: Url,
        request: &RefreshRequest<'_>,
    ) -> Result<TokenGrant, RefreshError> {
        let body = Zeroizing::new(refresh_form(request));
        let response = self
            .inner
            .client
            .post(url)
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header(
                reqwest::header::USER_AGENT,
                HeaderValue::from_static(super::DEFAULT_USER_AGENT),
            )
            .body(body.as_bytes().to_vec())
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let body = read_capped(response).await?;
        if !status.is_success() {
            // The OAuth error code (`invalid_grant`, ...) is a protocol word, not a secret;
            // anything else the body says is not repeated.
            let error = serde_json::from_slice::<RawError>(&body)
                .ok()
                .map(|e| e.error)
                .filter(|e| {
                    e.len() <= 64 && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                });
            return Err(RefreshError::Rejected {
                status: status.as_u16(),
                error,
            });
        }
        let raw: RawGrant = serde_json::from_slice(&body).map_err(|_| {
            RefreshError::BadResponse("expected JSON with an `access_token` string".to_owned())
        })?;
        if raw.access_token.is_empty() {
            return Err(RefreshError::BadResponse(
                "`access_token` is empty".to_owned(),
            ));
        }
        let expires_in = match raw.expires_in {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            // Some servers send the number as a string.
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            Some(_) => None,
        };
        Ok(TokenGrant {
            access_token: Secret::new(raw.access_token),
            expires_in,
            refresh_token: raw.refresh_token.filter(|t| !t.is_empty()).map(Secret::new),
        })
    }
}

/// The grant's form body (RFC 6749 §6); `scope` only when the manifest declares scopes.
fn refresh_form(request: &RefreshRequest<'_>) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "refresh_token")
        .append_pair("refresh_token", request.refresh_token.expose())
        .append_pair("client_id", request.client_id)
        .append_pair("client_secret", request.client_secret.expose());
    if !request.scopes.is_empty() {
        form.append_pair("scope", &request.scopes.join(" "));
    }
    form.finish()
}

async fn read_capped(mut response: reqwest::Response) -> Result<Zeroizing<Vec<u8>>, RefreshError> {
    let too_large =
        || RefreshError::BadResponse(format!("larger than {MAX_TOKEN_RESPONSE_BYTES} bytes"));
    if response
        .content_length()
        .is_some_and(|len| len > MAX_TOKEN_RESPONSE_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_TOKEN_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A resolver refusal is a denial; anything else a failure to reach the endpoint.
fn transport_error(err: reqwest::Error) -> RefreshError {
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(blocked) = cause.downcast_ref::<super::BlockedAddress>() {
            return RefreshError::Denied(blocked.to_string());
        }
        source = cause.source();
    }
    if err.is_timeout() {
        return RefreshError::Timeout;
    }
    RefreshError::Unreachable(describe(&err.without_url()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::outbound::OutboundConfig;

    fn gate(allow_http: bool) -> Gate {
        Gate::new(OutboundConfig {
            allow_http,
            ..OutboundConfig::default()
        })
        .unwrap()
    }

    fn any() -> Vec<HostPattern> {
        vec![HostPattern::Any]
    }

    #[test]
    fn token_urls_meet_the_gate_rules() {
        let strict = gate(false);
        assert!(
            strict
                .check_token_url("https://auth.example.test/token", &any())
                .is_ok()
        );
        for url in [
            "http://auth.example.test/token",
            "ftp://auth.example.test/token",
            "https://user:pw@auth.example.test/token",
            "https://127.0.0.1/token",
            "https://169.254.169.254/latest",
            "https://[::1]/token",
            "https://10.0.0.1/token",
            "not a url",
        ] {
            assert!(
                matches!(
                    strict.check_token_url(url, &any()),
                    Err(RefreshError::Denied(_))
                ),
                "{url}"
            );
        }
        assert!(
            gate(true)
                .check_token_url("http://auth.example.test/token", &any())
                .is_ok()
        );
    }

    #[test]
    fn token_hosts_meet_the_tenant_policy() {
        let strict = gate(false);
        let url = "https://auth.example.test/token";
        let allows = |tenant: &[&str]| {
            let tenant: Vec<HostPattern> = tenant.iter().map(|p| p.parse().unwrap()).collect();
            strict.check_token_url(url, &tenant)
        };
        assert!(allows(&["*.example.test"]).is_ok());
        assert!(allows(&["auth.example.test", "api.example.test"]).is_ok());
        for tenant in [&["api.example.test"][..], &[], &["*.other.test"]] {
            match allows(tenant) {
                Err(RefreshError::Denied(reason)) => assert!(
                    reason.contains("auth.example.test") && reason.contains("tenant"),
                    "{reason}"
                ),
                other => panic!("{tenant:?}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_private_address_is_refused_before_sending_and_quotes_no_secret() {
        let secret = Secret::from("client-secret-9f2");
        let refresh = Secret::from("refresh-token-9f2");
        let err = gate(false)
            .refresh_oauth2(
                "https://127.0.0.1:1/token",
                &any(),
                RefreshRequest {
                    client_id: "c",
                    client_secret: &secret,
                    refresh_token: &refresh,
                    scopes: &[],
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, RefreshError::Denied(_)), "{err}");
        let message = err.to_string();
        assert!(!message.contains("9f2"), "{message}");
    }
}
