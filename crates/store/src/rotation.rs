//! Re-encrypting every stored envelope (connection credentials, webhook trigger secrets and
//! dead-letter webhook secrets, each sealed to its tenant and row id) under the keyring's current key, tenant by tenant in
//! pages, each row replaced with a compare-and-swap so a secret changed meanwhile is never
//! overwritten. Runs while servers serve: old key ids still decrypt until retired. And
//! counting the envelopes sealed under each key, so a key is retired only once nothing needs
//! it.

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

/// The tables whose `secret` column holds an envelope sealed to `(tenant_id, id)`. Only these
/// constant names are formatted into statements.
const SEALED_TABLES: [&str; 3] = ["connections", "triggers", "dead_letter_hooks"];

/// Re-encrypts, under `keyring.current()`, every connection credential, webhook trigger
/// secret and dead-letter webhook secret sealed under another key.
pub async fn reencrypt_secrets(
    store: &Store,
    keyring: &Keyring,
    batch: i64,
) -> Result<RotationReport, StoreError> {
    let prefix = Envelope::prefix(keyring.current());
    let mut report = RotationReport::default();
    let tenants = store.list_tenants().await?;
    for (table, tenant) in SEALED_TABLES
        .iter()
        .flat_map(|table| tenants.iter().map(move |tenant| (*table, tenant)))
    {
        let mut after = String::new();
        loop {
            let page = store
                .sealed_not_under(table, &tenant.id, &prefix, &after, batch)
                .await?;
            let Some((last, _)) = page.last() else { break };
            after = last.clone();
            for (id, encoded) in &page {
                let aad = Aad::new(tenant.id.as_str(), id.as_str());
                let fresh = Envelope::decode(encoded).and_then(|e| keyring.reencrypt(&aad, &e));
                match fresh {
                    Ok(Some(envelope)) => {
                        if store
                            .swap_sealed(table, &tenant.id, id, encoded, &envelope.encode())
                            .await?
                        {
                            report.reencrypted += 1;
                        } else {
                            report.changed_meanwhile += 1;
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::error!(tenant = %tenant.id, table, id = %id, %error, "cannot re-encrypt");
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
    /// One page of a tenant's rows of `table` (one of [`SEALED_TABLES`]) whose envelope does
    /// not start with `prefix` (the current key's), in id order after `after`.
    async fn sealed_not_under(
        &self,
        table: &'static str,
        tenant_id: &str,
        prefix: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT id, secret FROM {table} WHERE tenant_id = $1 AND secret IS NOT NULL \
             AND substr(secret, 1, length($2)) <> $2 AND id > $3 ORDER BY id LIMIT $4"
        ))
        .bind(tenant_id)
        .bind(prefix)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("id")?, row.try_get("secret")?)))
            .collect()
    }

    /// Replaces a row's envelope if it still holds `expected`.
    async fn swap_sealed(
        &self,
        table: &'static str,
        tenant_id: &str,
        id: &str,
        expected: &str,
        replacement: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(&format!(
            "UPDATE {table} SET secret = $4, updated_at = $5 \
             WHERE tenant_id = $1 AND id = $2 AND secret = $3"
        ))
        .bind(tenant_id)
        .bind(id)
        .bind(expected)
        .bind(replacement)
        .bind(super::now_ms())
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// How many envelopes (connection credentials, webhook trigger secrets and dead-letter
    /// webhook secrets, deleted triggers included: a key is retired only when nothing at all needs it) are sealed
    /// under each of `key_ids` (in the same order), and how many there are at all (under any
    /// key, named in `key_ids` or not). One statement, so one consistent snapshot however
    /// many keys are asked about.
    pub async fn sealed_per_key(&self, key_ids: &[KeyId]) -> Result<(Vec<u64>, u64), StoreError> {
        // Only placeholders and column aliases are formatted in; the prefixes are bound.
        let mut sql = String::from("SELECT COUNT(secret) AS sealed");
        for i in 1..=key_ids.len() {
            sql.push_str(&format!(
                ", COALESCE(SUM(CASE WHEN substr(secret, 1, length(${i})) = ${i} \
                 THEN 1 ELSE 0 END), 0) AS under_{i}"
            ));
        }
        sql.push_str(
            " FROM (SELECT secret FROM connections WHERE secret IS NOT NULL \
             UNION ALL SELECT secret FROM triggers WHERE secret IS NOT NULL \
             UNION ALL SELECT secret FROM dead_letter_hooks) AS sealed_rows",
        );
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

    /// How many envelopes, in every tenant, are sealed under `key_id`.
    pub async fn sealed_under(&self, key_id: &KeyId) -> Result<u64, StoreError> {
        let (per_key, _) = self.sealed_per_key(std::slice::from_ref(key_id)).await?;
        Ok(per_key.iter().sum())
    }
}
