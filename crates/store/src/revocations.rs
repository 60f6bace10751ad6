//! Revoked tokens, by `jti`.

use sqlx::Row;

use super::{Store, StoreError, now_ms};

impl Store {
    /// Revokes the token `jti` until `expires_at` (unix ms; past it the token is refused as
    /// expired anyway). Revoking it again keeps the first revocation.
    pub async fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, revoked_at, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(now_ms())
        .bind(expires_at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn is_token_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 AS one FROM revoked_tokens WHERE jti = $1")
            .bind(jti)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Forgets revocations of tokens expired before `before` (unix ms).
    pub async fn prune_revoked_tokens(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < $1")
            .bind(before)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    /// Revocations in force, for `airlock token revoked`: (jti, revoked at, expires at).
    pub async fn revoked_tokens(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        sqlx::query("SELECT jti, revoked_at, expires_at FROM revoked_tokens ORDER BY revoked_at")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("jti")?,
                    row.try_get("revoked_at")?,
                    row.try_get("expires_at")?,
                ))
            })
            .collect()
    }
}
