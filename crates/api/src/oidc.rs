//! Tokens from the company's identity provider (OIDC): accepted when `--oidc-issuer` is set and
//! a token's `iss` is that issuer. Its signature is checked with the provider's JWKS, fetched
//! from the one configured URL (never a URL a token names), cached, and fetched again when a
//! token names a key id the cache lacks (at most once per [`REFETCH_AFTER`], so forged ids
//! cannot make the server hammer the provider) and once it is [`KEYS_MAX_AGE`] old. Asymmetric algorithms only: an HS256 token
//! "signed" with the provider's public key is refused. The audience, expiry and `nbf` are
//! checked; the tenant, role and subject come from claims the operator names.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
pub use url::Url;

use super::auth::{Principal, Role};
use super::error::ApiError;

/// How soon an unknown key id may fetch the JWKS again.
pub const REFETCH_AFTER: Duration = Duration::from_secs(10);
/// How long a fetched key set is trusted: a key the provider removed (a compromise, say)
/// stops verifying within this, even if its tokens keep coming.
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(600);
/// The largest JWKS document read.
const MAX_JWKS_BYTES: usize = 256 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// What the operator configures (`--oidc-*`).
#[derive(Debug, Clone)]
pub struct OidcOptions {
    pub issuer: String,
    pub audience: String,
    /// https, or http to a loopback address (a local provider).
    pub jwks_url: url::Url,
    pub tenant_claim: String,
    pub role_claim: String,
    pub subject_claim: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OidcConfigError {
    #[error("--oidc-jwks-url must be https (or http to a loopback address), not {0}")]
    InsecureJwksUrl(String),
    #[error("--oidc-issuer and --oidc-audience must not be empty")]
    Empty,
}

impl OidcOptions {
    pub fn check(&self) -> Result<(), OidcConfigError> {
        if self.issuer.trim().is_empty() || self.audience.trim().is_empty() {
            return Err(OidcConfigError::Empty);
        }
        let loopback = match self.jwks_url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name == "localhost",
            None => false,
        };
        match self.jwks_url.scheme() {
            "https" => Ok(()),
            "http" if loopback => Ok(()),
            _ => Err(OidcConfigError::InsecureJwksUrl(self.jwks_url.to_string())),
        }
    }
}

/// The provider: its options and the cached key set.
pub(crate) struct Oidc {
    options: OidcOptions,
    client: reqwest::Client,
    keys: tokio::sync::Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    set: Option<Arc<JwkSet>>,
    fetched: Option<Instant>,
}

const ALLOWED: [Algorithm; 7] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl Oidc {
    pub(crate) fn new(options: OidcOptions) -> Result<Oidc, OidcConfigError> {
        options.check()?;
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Ok(Oidc {
            options,
            client,
            keys: tokio::sync::Mutex::new(Cache::default()),
        })
    }

    /// Whether `iss` (read before any check) names this provider.
    pub(crate) fn issues(&self, iss: &str) -> bool {
        iss == self.options.issuer
    }

    pub(crate) async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ApiError::Unauthorized("the token is not valid"))?;
        if !ALLOWED.contains(&header.alg) {
            return Err(ApiError::Unauthorized(
                "the identity provider's tokens must use an asymmetric algorithm",
            ));
        }
        let kid = header.kid.ok_or(ApiError::Unauthorized(
            "the identity provider's token names no key (kid)",
        ))?;
        let jwk = self.key(&kid).await?;
        let named = |alg: &dyn erased::Named| alg.name();
        if let Some(alg) = jwk.common.key_algorithm
            && named(&alg) != named(&header.alg)
        {
            return Err(ApiError::Unauthorized(
                "the token's algorithm is not its key's",
            ));
        }
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|_| ApiError::Unauthorized("the identity provider's key is not usable"))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.options.issuer]);
        validation.set_audience(&[&self.options.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 5;
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| {
                ApiError::Unauthorized(match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => "the token has expired",
                    jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                        "the token is not for this audience"
                    }
                    _ => "the token is not valid",
                })
            })?
            .claims;
        self.principal(&claims)
    }

    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, ApiError> {
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let subject = text(&self.options.subject_claim).ok_or(ApiError::Unauthorized(
            "the identity provider's token has no subject claim",
        ))?;
        let role = text(&self.options.role_claim)
            .and_then(|r| serde_json::from_value::<Role>(Value::String(r)).ok())
            .ok_or(ApiError::Unauthorized(
                "the identity provider's token has no valid role claim",
            ))?;
        Principal::paired(subject, text(&self.options.tenant_claim), role, text("jti"))
    }

    /// The provider's key `kid`: from the cache, else from a fresh fetch (when the last one
    /// is older than [`REFETCH_AFTER`]).
    async fn key(&self, kid: &str) -> Result<Jwk, ApiError> {
        const UNKNOWN: ApiError =
            ApiError::Unauthorized("the identity provider's key is not known");
        let mut cache = self.keys.lock().await;
        let fresh = cache.fetched.is_some_and(|at| at.elapsed() < KEYS_MAX_AGE);
        if let Some(found) = cache.set.as_ref().and_then(|set| set.find(kid))
            && fresh
        {
            return Ok(found.clone());
        }
        if cache.fetched.is_some_and(|at| at.elapsed() < REFETCH_AFTER) {
            return Err(UNKNOWN);
        }
        cache.fetched = Some(Instant::now());
        match self.fetch().await {
            // The whole set is replaced: a key the provider dropped is gone here too.
            Ok(set) => cache.set = Some(Arc::new(set)),
            Err(reason) => {
                // Keys past their age are not trusted on a failed refresh either.
                tracing::warn!(url = %self.options.jwks_url, %reason, "the identity provider's keys could not be fetched");
                if cache.set.is_none() || !fresh {
                    cache.set = None;
                    return Err(ApiError::Unavailable);
                }
            }
        }
        cache
            .set
            .as_ref()
            .and_then(|set| set.find(kid))
            .cloned()
            .ok_or(UNKNOWN)
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let mut response = self
            .client
            .get(self.options.jwks_url.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    }
}

mod erased {
    /// An algorithm's JOSE name, from its serde form (the JWK's and the header's enums differ).
    pub trait Named {
        fn name(&self) -> Option<String>;
    }

    impl<T: serde::Serialize> Named for T {
        fn name(&self) -> Option<String> {
            serde_json::to_value(self)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
        }
    }
}

/// The `iss` of a token, read without checking anything: which verifier it goes to.
pub(crate) fn unverified_issuer(token: &str) -> Option<String> {
    let claims: Map<String, Value> = super::auth::unverified_claims(token)?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn options(url: &str) -> OidcOptions {
        OidcOptions {
            issuer: "https://idp.example/".into(),
            audience: "airlock".into(),
            jwks_url: Url::parse(url).unwrap(),
            tenant_claim: "t".into(),
            role_claim: "r".into(),
            subject_claim: "sub".into(),
        }
    }

    #[test]
    fn the_keys_come_over_https_or_from_this_host() {
        for ok in [
            "https://idp.example/jwks",
            "http://127.0.0.1:8080/jwks",
            "http://[::1]/jwks",
            "http://localhost/jwks",
        ] {
            options(ok).check().unwrap();
        }
        for refused in [
            "http://idp.example/jwks",
            "http://10.0.0.1/jwks",
            "ftp://idp.example/",
        ] {
            assert!(matches!(
                options(refused).check(),
                Err(OidcConfigError::InsecureJwksUrl(_))
            ));
        }
        let mut empty = options("https://idp.example/jwks");
        empty.audience = " ".into();
        assert!(matches!(empty.check(), Err(OidcConfigError::Empty)));
    }

    #[test]
    fn the_issuer_is_read_only_to_route_the_token() {
        let payload = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"iss":"https://idp.example/"}"#,
        );
        assert_eq!(
            unverified_issuer(&format!("e30.{payload}.sig")).as_deref(),
            Some("https://idp.example/")
        );
        assert_eq!(unverified_issuer("garbage"), None);
    }
}
