//! Tenants and their quota.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, findable, now_ms, parse_json};
use airlock_model::TenantQuota;

#[derive(Debug, Clone)]
pub struct TenantRecord {
    pub id: String,
    pub name: String,
    pub quota: TenantQuota,
    pub created_at: i64,
    /// When the operator suspended the tenant (unix ms), or `None`.
    pub suspended_at: Option<i64>,
}

pub(crate) fn tenant(row: &AnyRow) -> Result<TenantRecord, StoreError> {
    let suspended_at: Option<i64> = row.try_get("suspended_at")?;
    Ok(TenantRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        quota: quota(row)?,
        created_at: row.try_get("created_at")?,
        suspended_at,
    })
}

/// The quota of a row holding `limits` and `suspended_at`.
pub(crate) fn quota(row: &AnyRow) -> Result<TenantQuota, StoreError> {
    let limits: String = row.try_get("limits")?;
    let suspended_at: Option<i64> = row.try_get("suspended_at")?;
    Ok(TenantQuota {
        suspended: suspended_at.is_some(),
        ..parse_json(&limits, "tenant limits")?
    })
}

pub(crate) const TENANT_COLUMNS: &str = "id, name, limits, created_at, suspended_at";

fn quota_json(quota: &TenantQuota) -> Result<String, StoreError> {
    serde_json::to_string(quota).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Store {
    /// Creates a tenant with the default quota; an existing id is a conflict.
    pub async fn create_tenant(&self, id: &str, name: &str) -> Result<TenantRecord, StoreError> {
        let record = TenantRecord {
            id: id.to_owned(),
            name: name.to_owned(),
            quota: TenantQuota::default(),
            created_at: now_ms(),
            suspended_at: None,
        };
        let mut tx = self.begin_write().await?;
        let taken = sqlx::query("SELECT 1 AS one FROM tenants WHERE id = $1")
            .bind(&record.id)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict);
        }
        // No live tenant owns rows of this id: any are a deleted one's leftovers (the audit
        // log's guard lets them go while no tenant row exists).
        Store::purge_leftovers(&mut tx, &record.id).await?;
        sqlx::query("INSERT INTO tenants (id, name, limits, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&record.id)
            .bind(&record.name)
            .bind(quota_json(&record.quota)?)
            .bind(record.created_at)
            .execute(&mut *tx)
            .await?;
        self.commit_change(tx, &record.id, &record.id).await?;
        Ok(record)
    }

    pub async fn list_tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant).collect()
    }

    pub async fn tenant(&self, tenant_id: &str) -> Result<TenantRecord, StoreError> {
        findable(&[tenant_id])?;
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"
        ))
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        tenant(&row)
    }

    /// The tenant's quota as stored now: read on every invocation.
    pub async fn tenant_quota(&self, tenant_id: &str) -> Result<TenantQuota, StoreError> {
        findable(&[tenant_id])?;
        let row = sqlx::query("SELECT limits, suspended_at FROM tenants WHERE id = $1")
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        quota(&row)
    }

    pub async fn set_tenant_quota(
        &self,
        tenant_id: &str,
        quota: &TenantQuota,
    ) -> Result<(), StoreError> {
        findable(&[tenant_id])?;
        let mut tx = self.begin_write().await?;
        write_quota(&mut tx, tenant_id, quota).await?;
        self.commit_change(tx, tenant_id, tenant_id).await
    }

    /// Changes the tenant's quota by `change`, which sees the stored one, in one transaction
    /// that holds the tenant's row (PostgreSQL; SQLite has one writer): two changes at once
    /// both land, neither undoes the other. `change` refusing writes nothing.
    pub async fn change_tenant_quota<E>(
        &self,
        tenant_id: &str,
        change: impl FnOnce(TenantQuota) -> Result<TenantQuota, E>,
    ) -> Result<Result<TenantQuota, E>, StoreError> {
        findable(&[tenant_id])?;
        let mut tx = self.begin_write().await?;
        let lock = match self.kind {
            super::DbKind::Postgres => " FOR UPDATE",
            super::DbKind::Sqlite => "",
        };
        let row = sqlx::query(&format!(
            "SELECT limits, suspended_at FROM tenants WHERE id = $1{lock}"
        ))
        .bind(tenant_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let quota = match change(quota(&row)?) {
            Ok(quota) => quota,
            Err(refused) => return Ok(Err(refused)),
        };
        write_quota(&mut tx, tenant_id, &quota).await?;
        self.commit_change(tx, tenant_id, tenant_id).await?;
        Ok(Ok(quota))
    }
}

pub(crate) async fn write_quota(
    tx: &mut super::runs::Tx<'_>,
    tenant_id: &str,
    quota: &TenantQuota,
) -> Result<(), StoreError> {
    let done = sqlx::query("UPDATE tenants SET limits = $2 WHERE id = $1")
        .bind(tenant_id)
        .bind(quota_json(quota)?)
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    // The claim reads the cap from the tenant's claim-rotation row (see `claim.rs`); a
    // suspended tenant's stays 0, whatever its limits say.
    sqlx::query(
        "UPDATE run_tenants SET max_running = CASE WHEN EXISTS (SELECT 1 FROM tenants \
         WHERE id = $1 AND suspended_at IS NOT NULL) THEN 0 ELSE $2 END WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .bind(i64::from(quota.runtime.max_concurrent_runs))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
