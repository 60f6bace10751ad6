//! Re-encrypting every stored connection under the keyring's current key, tenant by tenant
//! in pages, each row replaced with a compare-and-swap so a credential changed meanwhile is
//! never overwritten. Runs while servers serve: old key ids still decrypt until retired.

use super::{Store, StoreError};
use crate::secrets::{Aad, Envelope, Keyring};

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationReport {
    pub reencrypted: u64,
    /// Rows that changed between the read and the swap (they were written meanwhile, so
    /// under whatever key that writer had); a second pass picks up any still old.
    pub changed_meanwhile: u64,
    /// Rows whose envelope could not be decrypted with this keyring (logged by id).
    pub failed: u64,
}

/// Re-encrypts, under `keyring.current()`, every connection sealed under another key.
pub async fn reencrypt_connections(
    store: &Store,
    keyring: &Keyring,
    batch: i64,
) -> Result<RotationReport, StoreError> {
    let prefix = Envelope::prefix(keyring.current());
    let mut report = RotationReport::default();
    for tenant in store.list_tenants().await? {
        let mut after = String::new();
        loop {
            let page = store
                .connections_not_under(&tenant.id, &prefix, &after, batch)
                .await?;
            let Some((last, _)) = page.last() else { break };
            after = last.clone();
            for (id, encoded) in &page {
                let aad = Aad::new(tenant.id.as_str(), id.as_str());
                let fresh = Envelope::decode(encoded).and_then(|e| keyring.reencrypt(&aad, &e));
                match fresh {
                    Ok(Some(envelope)) => {
                        if store
                            .swap_connection_secret(&tenant.id, id, encoded, &envelope.encode())
                            .await?
                        {
                            report.reencrypted += 1;
                        } else {
                            report.changed_meanwhile += 1;
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::error!(tenant = %tenant.id, connection = %id, %error, "cannot re-encrypt");
                        report.failed += 1;
                    }
                }
            }
        }
    }
    Ok(report)
}
