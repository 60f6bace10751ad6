//! Re-encrypting every stored connection under the keyring's current key, tenant by tenant
//! in pages, each row replaced with a compare-and-swap so a credential changed meanwhile is
//! never overwritten. Runs while servers serve: old key ids still decrypt until retired.
//! And counting the connections sealed under each key, so a key is retired only once
//! nothing needs it.

use sqlx::Row;

use super::{Store, StoreError};
use airlock_secrets::{Aad, Envelope, KeyId, Keyring};

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

/// Counting envelopes by key, for `airlock keys list` and `airlock keys retire`. Across every
/// tenant on purpose, like the rotation pass, but in one statement rather than tenant by
/// tenant: a row whose tenant row is gone still holds a credential that retiring its key
/// would make unreadable, and only counts leave the database, never a tenant's data.
impl Store {
    /// How many connections are sealed under each of `key_ids` (in the same order), and how
    /// many hold a secret at all (under any key, named in `key_ids` or not). One statement,
    /// so one table scan and one consistent snapshot however many keys are asked about.
    pub async fn connections_per_key(
        &self,
        key_ids: &[KeyId],
    ) -> Result<(Vec<u64>, u64), StoreError> {
        // Only placeholders and column aliases are formatted in; the prefixes are bound.
        let mut sql = String::from("SELECT COUNT(secret) AS sealed");
        for i in 1..=key_ids.len() {
            sql.push_str(&format!(
                ", COALESCE(SUM(CASE WHEN substr(secret, 1, length(${i})) = ${i} \
                 THEN 1 ELSE 0 END), 0) AS under_{i}"
            ));
        }
        sql.push_str(" FROM connections WHERE secret IS NOT NULL");
        let mut query = sqlx::query(&sql);
        for id in key_ids {
            query = query.bind(Envelope::prefix(id));
        }
        let row = query.fetch_one(&self.pool).await?;
        let count = |column: &str| -> Result<u64, StoreError> {
            let n: i64 = row.try_get(column)?;
            u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count {n}")))
        };
        let per_key = (1..=key_ids.len())
            .map(|i| count(&format!("under_{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((per_key, count("sealed")?))
    }

    /// How many connections, in every tenant, are sealed under `key_id`.
    pub async fn connections_under(&self, key_id: &KeyId) -> Result<u64, StoreError> {
        let (per_key, _) = self
            .connections_per_key(std::slice::from_ref(key_id))
            .await?;
        Ok(per_key.iter().sum())
    }
}
