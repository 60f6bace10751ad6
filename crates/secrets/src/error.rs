//! `SecretsError`: what can go wrong with keys, key files and envelopes.
//!
//! No message carries key bytes or plaintext, nor text copied from a key file or an envelope
//! (a mangled key file may hold a key where an id belongs): only ids that passed validation,
//! lengths, positions and our own words.

use std::io;
use std::path::PathBuf;

use super::KeyId;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("invalid key id: expected 1 to 32 characters from A-Z, a-z, 0-9, '_' and '-'")]
    InvalidKeyId,

    /// Sealed under a key this keyring never had. A process that loaded the key file before a
    /// rotation elsewhere sees this for the new key: reload the key file and retry.
    #[error("no key {0} in the keyring")]
    UnknownKey(KeyId),

    #[error("key {0} was retired; what was sealed under it can no longer be decrypted")]
    RetiredKey(KeyId),

    #[error("key {0} is the current key and cannot be retired; rotate first")]
    RetireCurrent(KeyId),

    /// Deliberately one variant for every authentication failure: telling "wrong tenant" from
    /// "tampered" would need the key, and would tell an attacker which guess was closer.
    #[error(
        "decryption failed: the envelope was altered, or belongs to another tenant or connection"
    )]
    Decrypt,

    #[error("encryption failed: plaintext too long for AES-GCM")]
    Encrypt,

    #[error("malformed envelope: {0}")]
    MalformedEnvelope(&'static str),

    /// Built from our own words, ids and positions, never from the file's text.
    #[error("invalid key file: {0}")]
    KeyFile(String),

    #[error("no key file at {}", path.display())]
    MissingKeyFile { path: PathBuf },

    #[error("cannot {action} key file {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    #[error(
        "key {0} is a default or weak key (repetitive bytes, or text instead of random bytes); \
         generate one with `openssl rand -base64 32`"
    )]
    WeakKey(KeyId),

    #[error("the operating system's random number generator failed: {0}")]
    Random(getrandom::Error),
}
