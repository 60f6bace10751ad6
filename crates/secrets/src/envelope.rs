//! The at-rest format: `KeyId`, the associated data `Aad`, and `Envelope` with its text encoding.
//!
//! An envelope encodes as `v1.<key id>.<nonce>.<ciphertext and tag>` (base64url, no padding).
//! The key id is in the clear so a rotation can find what is not yet under the current key with
//! a plain `LIKE` on the column ([`Envelope::prefix`]); key ids never contain a `.`.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::SecretsError;

/// The version tag of the one format so far; a new cipher or layout gets `v2`.
const VERSION: &str = "v1";
pub(super) const NONCE_LEN: usize = 12;
pub(super) const TAG_LEN: usize = 16;
const MAX_KEY_ID_LEN: usize = 32;

/// Names a key in a keyring, e.g. `k1`: 1 to 32 of `A-Z a-z 0-9 _ -`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    pub fn new(id: impl Into<String>) -> Result<KeyId, SecretsError> {
        let id = id.into();
        let valid = (1..=MAX_KEY_ID_LEN).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(KeyId(id))
        } else {
            Err(SecretsError::InvalidKeyId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for KeyId {
    type Err = SecretsError;

    fn from_str(s: &str) -> Result<KeyId, SecretsError> {
        KeyId::new(s)
    }
}

/// What an envelope is bound to: it decrypts only with the same tenant and connection ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aad {
    tenant_id: String,
    connection_id: String,
}

impl Aad {
    pub fn new(tenant_id: impl Into<String>, connection_id: impl Into<String>) -> Aad {
        Aad {
            tenant_id: tenant_id.into(),
            connection_id: connection_id.into(),
        }
    }

    /// A label, then each id prefixed with its length, so `("ab", "c")` and `("a", "bc")` never
    /// encode alike, and bytes sealed for some other purpose under the same keys never verify.
    pub(super) fn encode(&self) -> Vec<u8> {
        const LABEL: &[u8] = b"airlock connection credential v1";
        let mut out =
            Vec::with_capacity(LABEL.len() + 16 + self.tenant_id.len() + self.connection_id.len());
        out.extend_from_slice(LABEL);
        for field in [&self.tenant_id, &self.connection_id] {
            out.extend_from_slice(&(field.len() as u64).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }
}

/// A sealed value: which key, the nonce, and the ciphertext with its 16-byte tag appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    key_id: KeyId,
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
}

impl Envelope {
    pub(super) fn new(key_id: KeyId, nonce: [u8; NONCE_LEN], ciphertext: Vec<u8>) -> Envelope {
        Envelope {
            key_id,
            nonce,
            ciphertext,
        }
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    pub(super) fn nonce(&self) -> &[u8; NONCE_LEN] {
        &self.nonce
    }

    pub(super) fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }

    /// What every encoded envelope under `key_id` starts with (the trailing `.` keeps `k1` from
    /// matching `k10`). In SQL `LIKE`, `_` is a wildcard and may appear in a key id: escape it,
    /// or compare `substr(col, 1, length(prefix)) = prefix`.
    pub fn prefix(key_id: &KeyId) -> String {
        format!("{VERSION}.{key_id}.")
    }

    /// `v1.<key id>.<base64url nonce>.<base64url ciphertext+tag>`.
    pub fn encode(&self) -> String {
        format!(
            "{}{}.{}",
            Envelope::prefix(&self.key_id),
            URL_SAFE_NO_PAD.encode(self.nonce),
            URL_SAFE_NO_PAD.encode(&self.ciphertext)
        )
    }

    pub fn decode(s: &str) -> Result<Envelope, SecretsError> {
        let malformed = SecretsError::MalformedEnvelope;
        let mut parts = s.split('.');
        let (Some(version), Some(key_id), Some(nonce), Some(ciphertext), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(malformed(
                "expected four dot-separated parts: v1.<key id>.<nonce>.<ciphertext>",
            ));
        };
        if version != VERSION {
            return Err(malformed("unsupported version (expected v1)"));
        }
        let key_id = KeyId::new(key_id).map_err(|_| malformed("invalid key id"))?;
        let nonce = URL_SAFE_NO_PAD
            .decode(nonce)
            .map_err(|_| malformed("nonce is not base64url"))?;
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| malformed("nonce is not 12 bytes"))?;
        let ciphertext = URL_SAFE_NO_PAD
            .decode(ciphertext)
            .map_err(|_| malformed("ciphertext is not base64url"))?;
        if ciphertext.len() < TAG_LEN {
            return Err(malformed("ciphertext is shorter than its 16-byte tag"));
        }
        Ok(Envelope::new(key_id, nonce, ciphertext))
    }
}
