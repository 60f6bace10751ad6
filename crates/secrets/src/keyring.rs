//! `Keyring`: the AES-256-GCM keys by id, which one seals new envelopes, and which are retired.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use zeroize::Zeroizing;

use super::envelope::NONCE_LEN;
use super::{Aad, Envelope, KeyId, SecretBytes, SecretsError};

pub(super) const KEY_LEN: usize = 32;

/// One key: its bytes (kept to write the key file back) and the cipher expanded from them once.
/// Both are overwritten on drop (`aes-gcm`'s `zeroize` feature covers the key schedule).
#[derive(Clone)]
pub(super) struct KeyMaterial {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    cipher: Aes256Gcm,
}

impl KeyMaterial {
    pub(super) fn new(bytes: Zeroizing<[u8; KEY_LEN]>) -> KeyMaterial {
        let cipher = Aes256Gcm::new((&*bytes).into());
        KeyMaterial { bytes, cipher }
    }

    /// A fresh key from the operating system's CSPRNG. Redrawn in the (about 1 in 10^14) case
    /// that it looks weak, so production mode can never refuse a key we generated.
    fn generate() -> Result<KeyMaterial, SecretsError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        loop {
            getrandom::fill(&mut bytes[..]).map_err(SecretsError::Random)?;
            if !is_weak(&bytes) {
                return Ok(KeyMaterial::new(bytes));
            }
        }
    }

    pub(super) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

/// Default, example and hand-typed keys: fewer than 16 distinct byte values (all-zero, one
/// repeated pattern), or only printable ASCII (a passphrase, not random bytes). 32 random bytes
/// show about 30 distinct values and are all printable with probability about 10^-14.
fn is_weak(bytes: &[u8; KEY_LEN]) -> bool {
    let mut seen = [false; 256];
    for &b in bytes {
        seen[usize::from(b)] = true;
    }
    let distinct = seen.iter().filter(|&&s| s).count();
    distinct < 16 || bytes.iter().all(|&b| b == b' ' || b.is_ascii_graphic())
}

/// The keys by id. Immutable while shared: a process that serves requests holds it behind an
/// `Arc` and swaps in a reloaded one; only rotation tooling mutates one.
#[derive(Clone)]
pub struct Keyring {
    pub(super) current: KeyId,
    pub(super) keys: BTreeMap<KeyId, KeyMaterial>,
    /// Ids that once held keys, so an envelope under one fails with "retired" rather than
    /// "unknown", and `rotate` never hands out an id that old envelopes still name.
    pub(super) retired: BTreeSet<KeyId>,
}

impl Keyring {
    /// One fresh random key, `k1`, current.
    pub fn generate() -> Result<Keyring, SecretsError> {
        let current = KeyId::new("k1")?;
        let keys = BTreeMap::from([(current.clone(), KeyMaterial::generate()?)]);
        Ok(Keyring {
            current,
            keys,
            retired: BTreeSet::new(),
        })
    }

    /// The key new envelopes are sealed under.
    pub fn current(&self) -> &KeyId {
        &self.current
    }

    /// Ids of the keys that can decrypt (the current one among them).
    pub fn key_ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.keys()
    }

    /// Ids of retired keys: they decrypt nothing, and are never handed out again.
    pub fn retired_ids(&self) -> impl Iterator<Item = &KeyId> {
        self.retired.iter()
    }

    /// Adds a fresh key under the next free `k<n>` and makes it current; older keys still
    /// decrypt until retired.
    pub fn rotate(&mut self) -> Result<KeyId, SecretsError> {
        // Above every numbered id ever used, retired ones included. Ids are at most 32
        // characters, so the number fits a u128 with room for the +1; one too long to be an id
        // fails in `KeyId::new` instead of wrapping onto an old id.
        let highest = self
            .keys
            .keys()
            .chain(&self.retired)
            .filter_map(|id| id.as_str().strip_prefix('k')?.parse::<u128>().ok())
            .max()
            .unwrap_or(0);
        let id = KeyId::new(format!("k{}", highest + 1))?;
        self.keys.insert(id.clone(), KeyMaterial::generate()?);
        self.current = id.clone();
        Ok(id)
    }

    /// Drops a key for good: envelopes under it fail with [`SecretsError::RetiredKey`]. Retire a
    /// key only once no stored envelope names it (see [`Envelope::prefix`]). Retiring a retired
    /// key again is a no-op, so tooling can be re-run.
    pub fn retire(&mut self, id: &KeyId) -> Result<(), SecretsError> {
        if *id == self.current {
            return Err(SecretsError::RetireCurrent(id.clone()));
        }
        if self.retired.contains(id) {
            return Ok(());
        }
        if self.keys.remove(id).is_none() {
            return Err(SecretsError::UnknownKey(id.clone()));
        }
        self.retired.insert(id.clone());
        Ok(())
    }

    /// Seals `plaintext` under the current key with a fresh random nonce, bound to `aad`.
    ///
    /// Random 96-bit nonces stay safe for about 2^32 encryptions per key; rotating long before
    /// that is what `rotate` is for.
    pub fn encrypt(&self, aad: &Aad, plaintext: &[u8]) -> Result<Envelope, SecretsError> {
        let key = self.key(&self.current)?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(SecretsError::Random)?;
        let ciphertext = key
            .cipher
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: plaintext,
                    aad: &aad.encode(),
                },
            )
            .map_err(|_| SecretsError::Encrypt)?;
        Ok(Envelope::new(self.current.clone(), nonce, ciphertext))
    }

    /// Opens `envelope` with the key it names, checking it was sealed for `aad`.
    pub fn decrypt(&self, aad: &Aad, envelope: &Envelope) -> Result<SecretBytes, SecretsError> {
        let key = self.key(envelope.key_id())?;
        let plaintext = key
            .cipher
            .decrypt(
                envelope.nonce().into(),
                Payload {
                    msg: envelope.ciphertext(),
                    aad: &aad.encode(),
                },
            )
            .map_err(|_| SecretsError::Decrypt)?;
        Ok(SecretBytes::new(plaintext))
    }

    /// For the rotation job: `Some` envelope under the current key if `envelope` is under an
    /// older one, `None` if it is already current. The caller stores it with a compare-and-swap
    /// (`UPDATE … SET ciphertext = new WHERE id = … AND ciphertext = old`), so a credential
    /// changed concurrently is not overwritten, and batches can run while the service serves.
    pub fn reencrypt(
        &self,
        aad: &Aad,
        envelope: &Envelope,
    ) -> Result<Option<Envelope>, SecretsError> {
        if *envelope.key_id() == self.current {
            return Ok(None);
        }
        let plaintext = self.decrypt(aad, envelope)?;
        self.encrypt(aad, plaintext.expose()).map(Some)
    }

    /// Whether any key that can decrypt is a default or weak one. Production mode refuses to
    /// start on one: anyone who can guess it can read and forge what it seals.
    pub fn is_default_or_weak(&self) -> bool {
        self.ensure_strong().is_err()
    }

    /// [`Keyring::is_default_or_weak`] as an error naming the first weak key, for startup.
    pub fn ensure_strong(&self) -> Result<(), SecretsError> {
        match self.keys.iter().find(|(_, key)| is_weak(key.bytes())) {
            Some((id, _)) => Err(SecretsError::WeakKey(id.clone())),
            None => Ok(()),
        }
    }

    fn key(&self, id: &KeyId) -> Result<&KeyMaterial, SecretsError> {
        match self.keys.get(id) {
            Some(key) => Ok(key),
            None if self.retired.contains(id) => Err(SecretsError::RetiredKey(id.clone())),
            None => Err(SecretsError::UnknownKey(id.clone())),
        }
    }
}

/// Ids only: key bytes never reach a log line.
impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.as_str())
            .field(
                "keys",
                &self.keys.keys().map(KeyId::as_str).collect::<Vec<_>>(),
            )
            .field(
                "retired",
                &self.retired.iter().map(KeyId::as_str).collect::<Vec<_>>(),
            )
            .finish()
    }
}
