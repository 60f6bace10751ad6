//! Bearer-token auth: HS256 JWTs with an expiry (and `nbf`, `iat` honoured), the `tenant` and
//! `role` claims, and the extractors handlers take: [`Member`] (a tenant's token with at least
//! a role), [`Operator`], or [`Principal`] (any valid token). Another tenant's resources are
//! out of reach because handlers only ever pass the caller's tenant to the store; a token
//! naming a tenant that does not exist is refused here, once, for every route.
//!
//! The role is checked by the extractor, before the body and the query are read: a caller
//! that may not use a route gets 403 whatever it sent, never a 400 or 422 about a body it was
//! not allowed to send (which would also tell it what the route accepts).

use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::token_keys::{KeyRefusal, KeySetError, LiveKeys};
use airlock_core::CoreError;
use airlock_secrets::Secret;

/// What a token may do. `operator` is platform-wide (tenants and limits); the others act
/// within one tenant, each including the rights of those below it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Editor,
    Admin,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
            Role::Operator => "operator",
        }
    }
}

/// The claims Airlock signs and accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// The tenant the token acts in; absent or `*` for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub role: Role,
    pub iat: u64,
    pub exp: u64,
    /// Not valid before (unix seconds); Airlock does not set it but honours it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The token's id, for revocation. Tokens issued before ids existed have none and cannot
    /// be revoked one by one (retire their key instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// Clock skew allowed on `exp` and `nbf` between the issuer and this host.
const LEEWAY_S: u64 = 5;

/// How far in the future an `iat` may be: a token issued by a host whose clock runs a little
/// ahead still works, one claiming to be issued later than that was not issued by a sane clock
/// (or was minted to outlive a key rotation) and is refused.
pub const MAX_FUTURE_IAT_S: u64 = 60;

/// Signs and verifies tokens: with the current key of the key set (its `kid` in the header),
/// or the JWT secret when the set has none (no `kid`); see [`crate::token_keys`].
#[derive(Clone)]
pub struct JwtKeys {
    live: Arc<LiveKeys>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(***)")
    }
}

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the operator role takes no tenant (omit --tenant or pass `*`)")]
    OperatorWithTenant,
    #[error("the {0} role needs --tenant")]
    MissingTenant(&'static str),
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl JwtKeys {
    /// The JWT secret alone: tokens without a `kid`.
    pub fn new(secret: &Secret) -> JwtKeys {
        JwtKeys {
            live: Arc::new(LiveKeys::unkeyed(secret.expose().as_bytes())),
        }
    }

    /// The JWT secret and the key set in `path` (a missing file is an empty set), reloaded
    /// when the file changes.
    pub fn with_key_file(secret: &Secret, path: PathBuf) -> Result<JwtKeys, KeySetError> {
        Ok(JwtKeys {
            live: Arc::new(LiveKeys::new(secret.expose().as_bytes(), Some(path))?),
        })
    }

    /// Issues a token for `role` in `tenant` (none or `*` for operators), valid for `ttl`,
    /// with a fresh `jti` (what `airlock token revoke` names).
    pub fn issue(
        &self,
        subject: &str,
        tenant: Option<&str>,
        role: Role,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        let tenant = tenant.filter(|t| *t != "*");
        match (role, tenant) {
            (Role::Operator, Some(_)) => return Err(TokenError::OperatorWithTenant),
            (Role::Operator, None) => {}
            (other, None) => return Err(TokenError::MissingTenant(other.as_str())),
            (_, Some(_)) => {}
        }
        let iat = now_s();
        let claims = Claims {
            sub: subject.to_owned(),
            tenant: tenant.map(str::to_owned),
            role,
            iat,
            exp: iat.saturating_add(ttl.as_secs()),
            nbf: None,
            jti: Some(uuid::Uuid::new_v4().simple().to_string()),
        };
        let keys = self.live.current();
        let mut header = Header::new(keys.signing.algorithm);
        header.kid = keys.signing.kid.clone();
        jsonwebtoken::encode(&header, &claims, &keys.signing.key)
            .map_err(|e| TokenError::Sign(e.to_string()))
    }

    /// Verifies the signature with the key its `kid` names (the JWT secret's without one), in
    /// that key's algorithm whatever the header says; expiry (required), `nbf` (when present),
    /// an `iat` not in the future, and the role/tenant pairing. Revocation is the caller's
    /// (it needs the database).
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ApiError::Unauthorized("the token is not valid"))?;
        let keys = self.live.current();
        let (algorithm, key) = keys.verifying(header.kid.as_deref()).map_err(|refusal| {
            ApiError::Unauthorized(match refusal {
                KeyRefusal::Unknown => "the token's signing key is not known",
                KeyRefusal::Retired => "the token's signing key was retired",
            })
        })?;
        let mut validation = Validation::new(*algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = LEEWAY_S;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| {
            ApiError::Unauthorized(match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "the token has expired",
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => "the token is not valid yet",
                _ => "the token is not valid",
            })
        })?;
        let claims = data.claims;
        if claims.iat > now_s().saturating_add(MAX_FUTURE_IAT_S) {
            return Err(ApiError::Unauthorized(
                "the token claims to be issued in the future",
            ));
        }
        Principal::paired(claims.sub, claims.tenant, claims.role, claims.jti)
    }
}

/// A token's `jti` and expiry, read without checking its signature: what `airlock token
/// revoke --token` needs to name it. Never used to let a request in.
pub fn unverified_id(token: &str) -> Option<(String, u64)> {
    let claims: Claims = unverified_claims(token)?;
    Some((claims.jti?, claims.exp))
}

/// A token's claims as `T`, read without checking anything: only to decide what to check
/// it with, or to name it.
pub(crate) fn unverified_claims<T: serde::de::DeserializeOwned>(token: &str) -> Option<T> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        payload.trim_end_matches('='),
    )
    .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Who is calling, from a verified bearer token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub subject: String,
    /// `None` for operators.
    pub tenant: Option<String>,
    pub role: Role,
    /// The token's id, when it has one.
    pub jti: Option<String>,
}

impl Principal {
    /// The caller of a checked token, if its role and tenant fit together (operators have
    /// no tenant, everyone else one; `*` is none): Airlock's tokens and a provider's alike.
    pub(crate) fn paired(
        subject: String,
        tenant: Option<String>,
        role: Role,
        jti: Option<String>,
    ) -> Result<Principal, ApiError> {
        let tenant = tenant.filter(|t| t != "*");
        match (role, &tenant) {
            (Role::Operator, None) => {}
            (Role::Operator, Some(_)) | (_, None) => {
                return Err(ApiError::Unauthorized(
                    "the token's role and tenant do not fit together",
                ));
            }
            _ => {}
        }
        Ok(Principal {
            subject,
            tenant,
            role,
            jti,
        })
    }

    /// Operators only.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        if self.role == Role::Operator {
            Ok(())
        } else {
            Err(ApiError::Forbidden("this needs the operator role".into()))
        }
    }

    /// The caller's tenant, if its role is at least `min`. Operators manage tenants, they do
    /// not act inside one: they get 403 here and use a tenant token instead.
    pub fn tenant(&self, min: Role) -> Result<&str, ApiError> {
        match &self.tenant {
            None => Err(ApiError::Forbidden(
                "operator tokens manage tenants and limits; use a token of the tenant".into(),
            )),
            Some(_) if self.role < min => Err(ApiError::Forbidden(format!(
                "this needs the {} role or higher",
                min.as_str()
            ))),
            Some(tenant) => Ok(tenant),
        }
    }

    /// Whether the caller may read tenant `id`: operators any, members their own.
    pub fn can_read_tenant(&self, id: &str) -> bool {
        self.role == Role::Operator || self.tenant.as_deref() == Some(id)
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header =
            parts
                .headers
                .get(axum::http::header::AUTHORIZATION)
                .ok_or(ApiError::Unauthorized(
                    "missing bearer token (Authorization: Bearer <token>)",
                ))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(ApiError::Unauthorized(
                "the Authorization header must be `Bearer <token>`",
            ))?;
        let principal = state.verify_token(token).await?;
        if let Some(jti) = &principal.jti {
            state.not_revoked(jti).await?;
        }
        if let Some(tenant) = &principal.tenant {
            state.tenant_exists(tenant).await?;
        }
        if let Some(slot) = parts.extensions.get::<super::access::PrincipalSlot>() {
            let _ = slot.0.set(principal.clone());
        }
        Ok(principal)
    }
}

/// The least role a route needs, as a type ([`at_least`]), so that [`Member`] checks it as an
/// extractor.
pub trait MinRole {
    const ROLE: Role;
}

/// The roles [`Member`] can require.
pub mod at_least {
    use super::{MinRole, Role};

    pub enum Viewer {}
    pub enum Editor {}
    pub enum Admin {}

    impl MinRole for Viewer {
        const ROLE: Role = Role::Viewer;
    }
    impl MinRole for Editor {
        const ROLE: Role = Role::Editor;
    }
    impl MinRole for Admin {
        const ROLE: Role = Role::Admin;
    }
}

/// A caller acting in its own tenant with at least the role `R` (403 otherwise, operators
/// included: they manage tenants, they do not act inside one).
#[derive(Debug)]
pub struct Member<R> {
    pub principal: Principal,
    _role: PhantomData<fn() -> R>,
}

impl<R> Member<R> {
    /// The caller's tenant.
    pub fn tenant(&self) -> &str {
        // `from_request_parts` only builds a `Member` from a principal with a tenant.
        self.principal.tenant.as_deref().unwrap_or_default()
    }

    pub fn tenant_id(&self) -> airlock_model::TenantId {
        airlock_model::TenantId::new(self.tenant())
    }
}

impl<R: MinRole> FromRequestParts<AppState> for Member<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        principal.tenant(R::ROLE)?;
        Ok(Member {
            principal,
            _role: PhantomData,
        })
    }
}

/// A read-only view of one tenant: a member of it with at least the viewer role, or an
/// operator naming it with `?tenant=ID` (the operator views of runs, dead letters, usage and
/// access history). An operator that names none gets 422.
#[derive(Debug)]
pub struct Reader {
    pub principal: Principal,
    tenant: String,
}

impl Reader {
    pub fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ReadScope { principal, tenant } = ReadScope::from_request_parts(parts, state).await?;
        let Some(tenant) = tenant else {
            return Err(ApiError::validation(
                "tenant",
                "an operator reads one tenant's runs, dead letters, usage and access with ?tenant=ID",
            ));
        };
        Ok(Reader { principal, tenant })
    }
}

/// The `?tenant=` of a read-only view, for the document of routes that take no other query.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// An operator: the tenant to read (required). A member: its own (the default); another
    /// is 404.
    #[allow(dead_code)] // Read by the `Reader` extractor; here for the document.
    pub tenant: Option<String>,
}

/// What a read-only view may read: one tenant, or (`None`) every tenant for an operator that
/// names none (the audit log).
///
/// A member reads its own tenant with at least the viewer role; naming it in `?tenant=` is
/// allowed, naming any other is 404, the same answer as a tenant that does not exist, so a
/// member cannot learn which tenants do. An operator's named tenant must exist (404).
#[derive(Debug)]
pub struct ReadScope {
    pub principal: Principal,
    pub tenant: Option<String>,
}

impl FromRequestParts<AppState> for ReadScope {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let named = parts.uri.query().and_then(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == "tenant")
                .map(|(_, value)| value.into_owned())
        });
        let tenant = match (&principal.tenant, named) {
            (Some(own), Some(named)) if *own != named => return Err(ApiError::not_found("tenant")),
            (Some(_), _) => Some(principal.tenant(Role::Viewer)?.to_owned()),
            (None, Some(tenant)) => {
                if !super::tenants::valid_tenant_id(&tenant) {
                    return Err(ApiError::not_found("tenant"));
                }
                match state.pipeline().quota(&tenant).await {
                    Ok(_) => Some(tenant),
                    Err(CoreError::NotFound { .. }) => return Err(ApiError::not_found("tenant")),
                    Err(other) => return Err(other.into()),
                }
            }
            (None, None) => None,
        };
        Ok(ReadScope { principal, tenant })
    }
}

/// A caller with the operator role (403 otherwise).
#[derive(Debug)]
pub struct Operator(pub Principal);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        principal.require_operator()?;
        Ok(Operator(principal))
    }
}

impl AppState {
    /// Refuses a token whose tenant does not exist (issued for a typo, or by hand) or is
    /// suspended, before any handler can read or write on its behalf. The answer comes from the hot-row quota cache
    /// that invocations read anyway, so the invoke path gains no query. A malformed id is
    /// refused without asking the database (PostgreSQL errors on a NUL in a text parameter).
    async fn tenant_exists(&self, tenant: &str) -> Result<(), ApiError> {
        const UNKNOWN: &str = "the token's tenant does not exist";
        if !super::tenants::valid_tenant_id(tenant) {
            return Err(ApiError::Unauthorized(UNKNOWN));
        }
        match self.pipeline().quota(tenant).await {
            // Within the quota cache's second of a suspension, in every process.
            Ok(quota) if quota.suspended => Err(ApiError::TenantSuspended),
            Ok(_) => Ok(()),
            Err(CoreError::NotFound { .. }) => Err(ApiError::Unauthorized(UNKNOWN)),
            Err(other) => Err(other.into()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(&Secret::new("a-test-secret-that-is-long-enough-for-hs256"))
    }

    fn sign(claims: &Claims) -> String {
        let key =
            jsonwebtoken::EncodingKey::from_secret(b"a-test-secret-that-is-long-enough-for-hs256");
        jsonwebtoken::encode(&Header::new(jsonwebtoken::Algorithm::HS256), claims, &key).unwrap()
    }

    fn claims(iat: u64, nbf: Option<u64>) -> Claims {
        Claims {
            sub: "s".into(),
            tenant: Some("acme".into()),
            role: Role::Admin,
            iat,
            exp: now_s() + 40 * 365 * 86_400,
            nbf,
            jti: None,
        }
    }

    fn refusal(token: &str) -> String {
        match keys().verify(token) {
            Err(ApiError::Unauthorized(why)) => why.to_owned(),
            other => panic!("expected 401, got {other:?}"),
        }
    }

    #[test]
    fn a_token_not_valid_yet_is_refused() {
        let in_30_years = now_s() + 30 * 365 * 86_400;
        let token = sign(&claims(now_s(), Some(in_30_years)));
        assert_eq!(refusal(&token), "the token is not valid yet");
        // Within the clock-skew leeway, and in the past, `nbf` lets the token through.
        for nbf in [now_s() + 2, now_s() - 60] {
            let token = sign(&claims(now_s(), Some(nbf)));
            assert_eq!(keys().verify(&token).unwrap().role, Role::Admin);
        }
    }

    #[test]
    fn a_token_issued_in_the_future_is_refused() {
        let token = sign(&claims(now_s() + MAX_FUTURE_IAT_S + 120, None));
        assert_eq!(
            refusal(&token),
            "the token claims to be issued in the future"
        );
        let skewed = sign(&claims(now_s() + MAX_FUTURE_IAT_S / 2, None));
        assert!(keys().verify(&skewed).is_ok());
    }

    fn key_file() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token-keys.json");
        (dir, path)
    }

    fn secret() -> Secret {
        Secret::new("a-test-secret-that-is-long-enough-for-hs256")
    }

    fn kid_of(token: &str) -> Option<String> {
        jsonwebtoken::decode_header(token).unwrap().kid
    }

    #[test]
    fn a_rotation_overlaps_and_a_retirement_ends_a_keys_tokens() {
        use crate::token_keys::{KeyAlg, KeySet, LEGACY_KID};
        let (_dir, path) = key_file();
        let keys = JwtKeys::with_key_file(&secret(), path.clone()).unwrap();
        let ttl = Duration::from_secs(600);
        let legacy = keys.issue("s", Some("acme"), Role::Admin, ttl).unwrap();
        assert_eq!(kid_of(&legacy), None);

        for alg in [KeyAlg::EdDsa, KeyAlg::Hs256] {
            let mut set = KeySet::load(&path).unwrap();
            let kid = set.rotate(alg).unwrap();
            set.save(&path).unwrap();
            // A fresh reader sees it at once (a server within its reload second).
            let keys = JwtKeys::with_key_file(&secret(), path.clone()).unwrap();
            let token = keys.issue("s", Some("acme"), Role::Admin, ttl).unwrap();
            assert_eq!(kid_of(&token).as_deref(), Some(kid.as_str()));
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(
                header.alg.eq(&jsonwebtoken::Algorithm::EdDSA),
                alg == KeyAlg::EdDsa
            );
            assert!(keys.verify(&token).unwrap().jti.is_some());
            // The older tokens still verify: the rotation overlaps.
            assert!(keys.verify(&legacy).is_ok());
        }
        let mut set = KeySet::load(&path).unwrap();
        let first = set.keys[0].kid.clone();
        let keys = JwtKeys::with_key_file(&secret(), path.clone()).unwrap();
        // A token signed with the first key before its retirement.
        let older = {
            let mut only_first = set.clone();
            only_first.current = Some(first.clone());
            only_first.save(&path).unwrap();
            JwtKeys::with_key_file(&secret(), path.clone())
                .unwrap()
                .issue("s", Some("acme"), Role::Admin, ttl)
                .unwrap()
        };
        assert!(keys.verify(&older).is_ok());
        assert!(matches!(
            set.retire(set.current.clone().unwrap().as_str()),
            Err(crate::token_keys::KeySetError::Current(_))
        ));
        set.retire(&first).unwrap();
        set.retire(LEGACY_KID).unwrap();
        set.save(&path).unwrap();
        let keys = JwtKeys::with_key_file(&secret(), path.clone()).unwrap();
        for (token, why) in [
            (&older, "the token's signing key was retired"),
            (&legacy, "the token's signing key was retired"),
        ] {
            match keys.verify(token) {
                Err(ApiError::Unauthorized(found)) => assert_eq!(found, why),
                other => panic!("expected 401, got {other:?}"),
            }
        }
        // A kid the set never had, and a token whose header names the HS256 algorithm for an
        // EdDSA key: refused.
        let mut forged = Header::new(jsonwebtoken::Algorithm::HS256);
        forged.kid = Some("k-unknown".into());
        let unknown = jsonwebtoken::encode(
            &forged,
            &claims(now_s(), None),
            &jsonwebtoken::EncodingKey::from_secret(b"x"),
        )
        .unwrap();
        match keys.verify(&unknown) {
            Err(ApiError::Unauthorized(why)) => {
                assert_eq!(why, "the token's signing key is not known")
            }
            other => panic!("expected 401, got {other:?}"),
        }
        let ed = set
            .keys
            .iter()
            .find(|k| k.alg == KeyAlg::EdDsa)
            .unwrap()
            .kid
            .clone();
        let mut confused = Header::new(jsonwebtoken::Algorithm::HS256);
        confused.kid = Some(ed);
        let public = serde_json::to_value(&set).unwrap()["keys"][0]["public"]
            .as_str()
            .unwrap()
            .to_owned();
        let confused = jsonwebtoken::encode(
            &confused,
            &claims(now_s(), None),
            &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()),
        )
        .unwrap();
        assert!(keys.verify(&confused).is_err(), "algorithm confusion");
    }

    #[test]
    fn a_damaged_key_file_is_refused_at_start_and_kept_out_of_a_running_server() {
        let (_dir, path) = key_file();
        std::fs::write(&path, "{not json").unwrap();
        assert!(JwtKeys::with_key_file(&secret(), path.clone()).is_err());
        std::fs::remove_file(&path).unwrap();
        let keys = JwtKeys::with_key_file(&secret(), path.clone()).unwrap();
        let token = keys
            .issue("s", Some("acme"), Role::Admin, Duration::from_secs(60))
            .unwrap();
        std::fs::write(&path, "{not json").unwrap();
        std::thread::sleep(Duration::from_millis(1_100));
        assert!(
            keys.verify(&token).is_ok(),
            "a damaged file locked everyone out"
        );
    }

    #[test]
    fn a_key_file_that_disappears_leaves_the_keys_in_use() {
        use crate::token_keys::{KeyAlg, KeySet, LEGACY_KID};
        let (_dir, path) = key_file();
        let mut set = KeySet::default();
        set.rotate(KeyAlg::EdDsa).unwrap();
        set.retire(LEGACY_KID).unwrap();
        set.save(&path).unwrap();
        let keys = JwtKeys::with_key_file(&secret(), path.clone()).unwrap();
        let token = keys
            .issue("s", Some("acme"), Role::Admin, Duration::from_secs(60))
            .unwrap();
        let legacy = jsonwebtoken::encode(
            &Header::new(jsonwebtoken::Algorithm::HS256),
            &claims(now_s(), None),
            &jsonwebtoken::EncodingKey::from_secret(secret().expose().as_bytes()),
        )
        .unwrap();
        assert!(keys.verify(&legacy).is_err());
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(Duration::from_millis(1_100));
        assert!(keys.verify(&token).is_ok(), "the keys were dropped");
        assert!(keys.verify(&legacy).is_err(), "a retired secret came back");
    }

    #[test]
    fn a_tokens_id_is_read_for_revocation() {
        let token = keys()
            .issue("s", None, Role::Operator, Duration::from_secs(60))
            .unwrap();
        let (jti, exp) = unverified_id(&token).unwrap();
        assert_eq!(Some(jti), keys().verify(&token).unwrap().jti);
        assert!(exp > now_s());
        assert_eq!(unverified_id("not.a.token"), None);
    }
}
