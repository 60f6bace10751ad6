//! Token signing keys with ids (`kid`): a key set kept in one private file beside the JWT
//! secret (`<data-dir>/token-keys.json`), so that a rotation overlaps instead of killing every
//! token at once. New tokens are signed with the current key and carry its `kid`; tokens with
//! any other key of the set verify until it is retired. Keys are HS256 (a random secret) or
//! EdDSA (Ed25519: the private key signs here, the public one verifies). The set's JWT secret
//! of old (`jwt.key`) is the key of tokens without a `kid` ("legacy") until retired too.
//!
//! The algorithm a token is checked with is its key's, never its header's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};

/// The name `list` and `retire` give the JWT secret's key.
pub const LEGACY_KID: &str = "legacy";
/// How often a server looks for a changed key file.
const RELOAD_EVERY_MS: u128 = 1_000;

/// A key's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum KeyAlg {
    #[serde(rename = "HS256")]
    #[value(name = "hs256")]
    Hs256,
    #[serde(rename = "EdDSA")]
    #[value(name = "eddsa")]
    EdDsa,
}

impl KeyAlg {
    fn algorithm(self) -> Algorithm {
        match self {
            KeyAlg::Hs256 => Algorithm::HS256,
            KeyAlg::EdDsa => Algorithm::EdDSA,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlg::Hs256 => "HS256",
            KeyAlg::EdDsa => "EdDSA",
        }
    }
}

/// One key as the file keeps it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredKey {
    pub kid: String,
    pub alg: KeyAlg,
    /// HS256: the secret; EdDSA: the PKCS#8 private key (base64url, unpadded).
    secret: String,
    /// EdDSA: the public key (base64url, unpadded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<u64>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// The key set file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySet {
    /// The key new tokens are signed with; none: the JWT secret, without a `kid`.
    #[serde(default)]
    pub current: Option<String>,
    /// Tokens without a `kid` (signed with the JWT secret) are refused.
    #[serde(default)]
    pub legacy_retired: bool,
    #[serde(default)]
    pub keys: Vec<StoredKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("no key `{0}` in the set")]
    Unknown(String),
    #[error("`{0}` signs new tokens: rotate to another key before retiring it")]
    Current(String),
    #[error("the JWT secret's tokens (no kid) are the only ones issued: rotate first")]
    LegacyOnly,
    #[error("cannot make a key: {0}")]
    Generate(String),
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl KeySet {
    /// The set in `path`; a missing file is an empty set.
    pub fn load(path: &Path) -> Result<KeySet, KeySetError> {
        let file_error = |reason: String| KeySetError::File {
            path: path.display().to_string(),
            reason,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| file_error(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeySet::default()),
            Err(e) => Err(file_error(e.to_string())),
        }
    }

    /// Writes the set to `path` atomically (a new file renamed over the old), owner-only.
    pub fn save(&self, path: &Path) -> Result<(), KeySetError> {
        let file_error = |reason: String| KeySetError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| file_error(e.to_string()))?;
        airlock_secrets::key_file::write_private(path, &text).map_err(|e| file_error(e.to_string()))
    }

    /// Adds a new key of `alg` and makes it current; the others keep verifying.
    pub fn rotate(&mut self, alg: KeyAlg) -> Result<String, KeySetError> {
        let rng = ring::rand::SystemRandom::new();
        let (secret, public) = match alg {
            KeyAlg::Hs256 => {
                let mut bytes = [0u8; 32];
                ring::rand::SecureRandom::fill(&rng, &mut bytes)
                    .map_err(|_| KeySetError::Generate("no randomness".into()))?;
                (B64.encode(bytes), None)
            }
            KeyAlg::EdDsa => {
                let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| KeySetError::Generate("Ed25519".into()))?;
                let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                    .map_err(|_| KeySetError::Generate("Ed25519".into()))?;
                let public = ring::signature::KeyPair::public_key(&pair);
                (
                    B64.encode(pkcs8.as_ref()),
                    Some(B64.encode(public.as_ref())),
                )
            }
        };
        let kid = format!("k{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        self.keys.push(StoredKey {
            kid: kid.clone(),
            alg,
            secret,
            public,
            created_at: now_s(),
            retired_at: None,
        });
        self.current = Some(kid.clone());
        Ok(kid)
    }

    /// Stops accepting tokens of `kid` (or of the JWT secret, [`LEGACY_KID`]).
    pub fn retire(&mut self, kid: &str) -> Result<(), KeySetError> {
        if self.current.as_deref() == Some(kid) {
            return Err(KeySetError::Current(kid.to_owned()));
        }
        if kid == LEGACY_KID {
            if self.current.is_none() {
                return Err(KeySetError::LegacyOnly);
            }
            self.legacy_retired = true;
            return Ok(());
        }
        let key = self
            .keys
            .iter_mut()
            .find(|k| k.kid == kid)
            .ok_or_else(|| KeySetError::Unknown(kid.to_owned()))?;
        key.retired_at.get_or_insert_with(now_s);
        Ok(())
    }
}

/// A key ready to sign with.
pub(crate) struct Signing {
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub key: EncodingKey,
}

/// Why a token's key does not verify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyRefusal {
    Unknown,
    Retired,
}

/// The set compiled: the signing key and every verifying key by id.
pub(crate) struct Loaded {
    pub signing: Signing,
    verifying: HashMap<String, Result<(Algorithm, DecodingKey), KeyRefusal>>,
    legacy: Result<(Algorithm, DecodingKey), KeyRefusal>,
}

impl Loaded {
    pub(crate) fn new(legacy_secret: &[u8], set: &KeySet) -> Loaded {
        let legacy_decoding = DecodingKey::from_secret(legacy_secret);
        let legacy = if set.legacy_retired {
            Err(KeyRefusal::Retired)
        } else {
            Ok((Algorithm::HS256, legacy_decoding))
        };
        let mut verifying = HashMap::new();
        let mut signing = Signing {
            kid: None,
            algorithm: Algorithm::HS256,
            key: EncodingKey::from_secret(legacy_secret),
        };
        for key in &set.keys {
            let compiled = compile(key);
            if let (Some((encoding, decoding)), true) = (&compiled, key.retired_at.is_none()) {
                if set.current.as_deref() == Some(key.kid.as_str()) {
                    signing = Signing {
                        kid: Some(key.kid.clone()),
                        algorithm: key.alg.algorithm(),
                        key: encoding.clone(),
                    };
                }
                verifying.insert(key.kid.clone(), Ok((key.alg.algorithm(), decoding.clone())));
            } else if key.retired_at.is_some() {
                verifying.insert(key.kid.clone(), Err(KeyRefusal::Retired));
            } else {
                tracing::error!(kid = %key.kid, "a token signing key does not parse; its tokens are refused");
            }
        }
        Loaded {
            signing,
            verifying,
            legacy,
        }
    }

    /// The key a token with header `kid` is checked with.
    pub(crate) fn verifying(
        &self,
        kid: Option<&str>,
    ) -> Result<&(Algorithm, DecodingKey), KeyRefusal> {
        match kid {
            None => self.legacy.as_ref().map_err(|r| *r),
            Some(kid) => match self.verifying.get(kid) {
                Some(found) => found.as_ref().map_err(|r| *r),
                None => Err(KeyRefusal::Unknown),
            },
        }
    }
}

fn compile(key: &StoredKey) -> Option<(EncodingKey, DecodingKey)> {
    let secret = B64.decode(&key.secret).ok()?;
    match key.alg {
        KeyAlg::Hs256 => Some((
            EncodingKey::from_secret(&secret),
            DecodingKey::from_secret(&secret),
        )),
        KeyAlg::EdDsa => {
            // Checked here, so that a damaged key is found at load, not when signing.
            ring::signature::Ed25519KeyPair::from_pkcs8(&secret).ok()?;
            let public = key.public.as_deref()?;
            Some((
                EncodingKey::from_ed_der(&secret),
                DecodingKey::from_ed_components(public).ok()?,
            ))
        }
    }
}

/// The key set a server reads, reloaded when its file changes (looked at once a second at
/// most, on the next token checked), so a rotation or a retirement by `airlock token keys`
/// reaches every process on the host within about a second.
pub(crate) struct LiveKeys {
    legacy_secret: Vec<u8>,
    path: Option<PathBuf>,
    state: RwLock<LiveState>,
}

struct LiveState {
    loaded: Arc<Loaded>,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl LiveKeys {
    /// The JWT secret alone, no key file.
    pub(crate) fn unkeyed(legacy_secret: &[u8]) -> LiveKeys {
        LiveKeys::with(legacy_secret, None, &KeySet::default(), None)
    }

    pub(crate) fn new(
        legacy_secret: &[u8],
        path: Option<PathBuf>,
    ) -> Result<LiveKeys, KeySetError> {
        let (set, modified) = match &path {
            Some(path) => (KeySet::load(path)?, modified_at(path)),
            None => (KeySet::default(), None),
        };
        Ok(LiveKeys::with(legacy_secret, path, &set, modified))
    }

    fn with(
        legacy_secret: &[u8],
        path: Option<PathBuf>,
        set: &KeySet,
        modified: Option<SystemTime>,
    ) -> LiveKeys {
        LiveKeys {
            legacy_secret: legacy_secret.to_vec(),
            state: RwLock::new(LiveState {
                loaded: Arc::new(Loaded::new(legacy_secret, set)),
                modified,
                checked: Instant::now(),
            }),
            path,
        }
    }

    /// The keys now, reloaded first when the file changed.
    pub(crate) fn current(&self) -> Arc<Loaded> {
        let (loaded, stale) = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            (
                state.loaded.clone(),
                state.checked.elapsed().as_millis() >= RELOAD_EVERY_MS,
            )
        };
        let Some(path) = self.path.as_deref().filter(|_| stale) else {
            return loaded;
        };
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed().as_millis() < RELOAD_EVERY_MS {
            return state.loaded.clone();
        }
        state.checked = Instant::now();
        let modified = modified_at(path);
        if modified == state.modified {
            return state.loaded.clone();
        }
        if modified.is_none() {
            // Gone after it was read (deleted, or not yet copied to this host): an empty set
            // would accept the JWT secret's tokens again, retired or not. Keep the keys.
            tracing::error!(path = %path.display(), "the token key file is gone; the previous keys stay");
            return state.loaded.clone();
        }
        match KeySet::load(path) {
            Ok(set) => {
                state.loaded = Arc::new(Loaded::new(&self.legacy_secret, &set));
                state.modified = modified;
                tracing::info!(path = %path.display(), "token signing keys reloaded");
            }
            // Keep the keys in use: a half-written or damaged file must not lock everyone out.
            Err(error) => {
                tracing::error!(%error, "the token key file does not load; the previous keys stay")
            }
        }
        state.loaded.clone()
    }
}

fn modified_at(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
