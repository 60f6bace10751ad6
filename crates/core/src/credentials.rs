//! Connection credentials: sealing secret fields into an envelope, opening it (reloading the
//! key file when another process rotated it), and the [`Credential`] the gate attaches.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use airlock_model::AuthType;
use airlock_runtime::outbound::Credential;
use airlock_secrets::{Aad, Envelope, Keyring, Secret, SecretsError};
use airlock_store::ConnectionRecord;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::CoreError;

/// The keyring, replaceable: a decrypt that meets a key id this copy does not know reloads
/// the key file once (another process, or `airlock keys rotate`, rotated it).
#[derive(Debug)]
pub struct Credentials {
    keyring: RwLock<Arc<Keyring>>,
    keys_path: Option<PathBuf>,
}

impl Credentials {
    /// `keys_path`: where to reload the keyring from; `None` never reloads.
    pub fn new(keyring: Keyring, keys_path: Option<PathBuf>) -> Self {
        Self {
            keyring: RwLock::new(Arc::new(keyring)),
            keys_path,
        }
    }

    fn keyring(&self) -> Arc<Keyring> {
        // A poisoned lock still holds a whole keyring: it is only ever replaced, not edited.
        self.keyring
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads the key file after a rotation elsewhere. Returns whether it loaded.
    fn reload(&self) -> bool {
        let Some(path) = &self.keys_path else {
            return false;
        };
        match Keyring::load(path) {
            Ok(keyring) => {
                *self.keyring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keyring);
                tracing::warn!("reloaded the encryption key file after meeting a new key id");
                true
            }
            Err(error) => {
                tracing::error!(%error, "cannot reload the encryption key file");
                false
            }
        }
    }

    /// Seals a connection's secret fields into one envelope bound to tenant and connection.
    pub fn seal(
        &self,
        tenant: &str,
        id: &str,
        secrets: &BTreeMap<String, Secret>,
    ) -> Result<String, CoreError> {
        let plain: BTreeMap<&str, &str> = secrets
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        let bytes = Zeroizing::new(serde_json::to_vec(&plain).map_err(|_| CoreError::Internal)?);
        let envelope = self
            .keyring()
            .encrypt(&Aad::new(tenant, id), &bytes)
            .map_err(|e| {
                tracing::error!(error = %e, "cannot encrypt a credential");
                CoreError::Internal
            })?;
        Ok(envelope.encode())
    }

    /// Opens a connection's secret fields.
    pub fn open(
        &self,
        tenant: &str,
        record: &ConnectionRecord,
    ) -> Result<BTreeMap<String, Secret>, CoreError> {
        match &record.secret {
            Some(encoded) => self.open_sealed(tenant, &record.id, encoded),
            None => Ok(BTreeMap::new()),
        }
    }

    /// Opens what [`Credentials::seal`] sealed for `(tenant, id)`: a connection's secret
    /// fields, or a webhook trigger's secrets (ids never collide: their prefixes differ).
    pub fn open_sealed(
        &self,
        tenant: &str,
        id: &str,
        encoded: &str,
    ) -> Result<BTreeMap<String, Secret>, CoreError> {
        let fail = |e: SecretsError| {
            tracing::error!(error = %e, owner = %id, "cannot decrypt a sealed secret");
            CoreError::Internal
        };
        let envelope = Envelope::decode(encoded).map_err(fail)?;
        let aad = Aad::new(tenant, id);
        let plain = match self.keyring().decrypt(&aad, &envelope) {
            Err(SecretsError::UnknownKey(_)) if self.reload() => {
                self.keyring().decrypt(&aad, &envelope)
            }
            other => other,
        }
        .map_err(fail)?;
        serde_json::from_slice(plain.expose()).map_err(|_| {
            tracing::error!(owner = %id, "a decrypted secret is not a JSON object of strings");
            CoreError::Internal
        })
    }
}

/// The credential the gate attaches, from a connection's record and opened secrets.
pub fn credential_from(
    record: &ConnectionRecord,
    secrets: &BTreeMap<String, Secret>,
) -> Credential {
    let secret = |name: &str| secrets.get(name).cloned().unwrap_or_default();
    match record.auth_type {
        AuthType::ApiKey => Credential::ApiKey(secret("api_key")),
        AuthType::Basic => Credential::Basic {
            username: record
                .fields
                .get("username")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            password: secret("password"),
        },
        AuthType::CustomHeader => Credential::CustomHeaders(
            secrets
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
        ),
        AuthType::OAuth2 => match secrets.get("access_token") {
            Some(token) => Credential::oauth2(token.clone()),
            None => Credential::None,
        },
        AuthType::None => Credential::None,
    }
}
