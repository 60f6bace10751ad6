//! Connectors: immutable versions of a tenant's uploaded components, their manifests, and
//! the component bytes stored once per tenant and digest.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, findable, now_ms, parse_json};
use airlock_model::Manifest;

/// One version of a connector, without its bytes.
#[derive(Debug, Clone)]
pub struct ConnectorRecord {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub manifest: Manifest,
    pub size_bytes: i64,
    pub deprecated: bool,
    pub created_at: i64,
}

/// A connector name with its versions, newest first.
#[derive(Debug, Clone)]
pub struct ConnectorSummary {
    pub name: String,
    pub versions: Vec<ConnectorRecord>,
}

const COLUMNS: &str = "name, version, digest, manifest, size_bytes, deprecated, created_at";

/// The owner of the platform's shared catalog: connector versions the operator publishes
/// for every tenant. Not a tenant id (those start with a letter or digit), so no tenant can
/// be it, and no tenant's export or deletion reaches its rows.
pub const CATALOG: &str = "_catalog";

fn connector(row: &AnyRow) -> Result<ConnectorRecord, StoreError> {
    let manifest: String = row.try_get("manifest")?;
    Ok(ConnectorRecord {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        digest: row.try_get("digest")?,
        manifest: parse_json(&manifest, "connector manifest")?,
        size_bytes: row.try_get("size_bytes")?,
        deprecated: row.try_get::<i64, _>("deprecated")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

/// Orders `MAJOR.MINOR.PATCH` numerically; the manifest check guarantees the shape, and an
/// unparsable part sorts first.
pub fn version_key(version: &str) -> Vec<u64> {
    version
        .split(['.', '-', '+'])
        .take(3)
        .map(|part| part.parse().unwrap_or(0))
        .collect()
}

/// What [`Store::put_connector`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    /// The same name, version and digest were already stored: an idempotent re-upload.
    Unchanged,
}

/// The audit chain a change of `tenant_id`'s connectors goes to: the catalog's are the
/// platform's (the operator's) changes.
fn audit_chain(tenant_id: &str) -> &str {
    if tenant_id == CATALOG { "" } else { tenant_id }
}

impl Store {
    /// Stores a new connector version. The same name and version with another digest is a
    /// conflict: versions are immutable.
    pub async fn put_connector(
        &self,
        tenant_id: &str,
        manifest: &Manifest,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(ConnectorRecord, PutOutcome), StoreError> {
        match self
            .connector_version(tenant_id, &manifest.name, &manifest.version)
            .await
        {
            Ok(existing) if existing.digest == digest => {
                return Ok((existing, PutOutcome::Unchanged));
            }
            Ok(_) => return Err(StoreError::Conflict),
            Err(StoreError::NotFound) => {}
            Err(other) => return Err(other),
        }
        let manifest_json =
            serde_json::to_string(manifest).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let now = now_ms();
        let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        let mut tx = self.begin_write().await?;
        if tenant_id != CATALOG {
            // An upload that compiled while its tenant was deleted stores nothing.
            super::lock_tenant(&mut tx, tenant_id).await?;
        }
        sqlx::query(
            "INSERT INTO component_blobs (tenant_id, digest, bytes, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, digest) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(digest)
        .bind(bytes)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO connectors (tenant_id, name, version, digest, manifest, size_bytes, deprecated, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7)",
        )
        .bind(tenant_id)
        .bind(&manifest.name)
        .bind(&manifest.version)
        .bind(digest)
        .bind(&manifest_json)
        .bind(size)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let target = format!("{}@{}", manifest.name, manifest.version);
        self.commit_change(tx, audit_chain(tenant_id), &target)
            .await?;
        let record = ConnectorRecord {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            digest: digest.to_owned(),
            manifest: manifest.clone(),
            size_bytes: size,
            deprecated: false,
            created_at: now,
        };
        Ok((record, PutOutcome::Created))
    }

    pub async fn list_connectors(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<ConnectorSummary>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM connectors WHERE tenant_id = $1 ORDER BY name"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        let mut summaries: Vec<ConnectorSummary> = Vec::new();
        for row in &rows {
            let record = connector(row)?;
            match summaries.last_mut() {
                Some(last) if last.name == record.name => last.versions.push(record),
                _ => summaries.push(ConnectorSummary {
                    name: record.name.clone(),
                    versions: vec![record],
                }),
            }
        }
        for summary in &mut summaries {
            summary
                .versions
                .sort_by_key(|v| std::cmp::Reverse(version_key(&v.version)));
        }
        Ok(summaries)
    }

    pub async fn connector_versions(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> Result<Vec<ConnectorRecord>, StoreError> {
        findable(&[tenant_id, name])?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM connectors WHERE tenant_id = $1 AND name = $2"
        ))
        .bind(tenant_id)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        let mut versions = rows.iter().map(connector).collect::<Result<Vec<_>, _>>()?;
        versions.sort_by_key(|v| std::cmp::Reverse(version_key(&v.version)));
        Ok(versions)
    }

    pub async fn connector_version(
        &self,
        tenant_id: &str,
        name: &str,
        version: &str,
    ) -> Result<ConnectorRecord, StoreError> {
        findable(&[tenant_id, name, version])?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM connectors WHERE tenant_id = $1 AND name = $2 AND version = $3"
        ))
        .bind(tenant_id)
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        connector(&row)
    }

    /// The version to run when none is named: the newest that is not deprecated.
    pub async fn current_connector(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> Result<ConnectorRecord, StoreError> {
        self.connector_versions(tenant_id, name)
            .await?
            .into_iter()
            .find(|v| !v.deprecated)
            .ok_or(StoreError::NotFound)
    }

    /// Marks a version deprecated (not run unless named) or, with `deprecated: false`, undoes
    /// that. Setting the flag it already has is not an error.
    pub async fn set_connector_deprecated(
        &self,
        tenant_id: &str,
        name: &str,
        version: &str,
        deprecated: bool,
    ) -> Result<(), StoreError> {
        findable(&[tenant_id, name, version])?;
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("UPDATE connectors SET deprecated = $4 WHERE tenant_id = $1 AND name = $2 AND version = $3")
            .bind(tenant_id)
            .bind(name)
            .bind(version)
            .bind(i64::from(deprecated))
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.commit_change(tx, audit_chain(tenant_id), &format!("{name}@{version}"))
            .await
    }

    /// The bytes of `digest` as the tenant holds them, or as the catalog does (a shared
    /// version it runs); never another tenant's.
    pub async fn component_bytes(
        &self,
        tenant_id: &str,
        digest: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let row = sqlx::query(
            "SELECT bytes FROM component_blobs WHERE tenant_id IN ($1, $3) AND digest = $2 \
             ORDER BY CASE WHEN tenant_id = $1 THEN 0 ELSE 1 END LIMIT 1",
        )
        .bind(tenant_id)
        .bind(digest)
        .bind(CATALOG)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(row.try_get("bytes")?)
    }

    /// Whose connector `name` is inside the tenant: its own when it has any version of that
    /// name (deprecated ones included), else the catalog's.
    async fn owner_of<'a>(&self, tenant_id: &'a str, name: &str) -> Result<&'a str, StoreError> {
        findable(&[tenant_id, name])?;
        let own = sqlx::query(
            "SELECT 1 AS one FROM connectors WHERE tenant_id = $1 AND name = $2 LIMIT 1",
        )
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(if own.is_some() { tenant_id } else { CATALOG })
    }

    /// [`Store::connector_version`] as the tenant runs it: its own, else the catalog's.
    pub async fn resolved_connector_version(
        &self,
        tenant_id: &str,
        name: &str,
        version: &str,
    ) -> Result<ConnectorRecord, StoreError> {
        let owner = self.owner_of(tenant_id, name).await?;
        self.connector_version(owner, name, version).await
    }

    /// [`Store::current_connector`] as the tenant runs it: its own, else the catalog's.
    pub async fn resolved_current_connector(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> Result<ConnectorRecord, StoreError> {
        let owner = self.owner_of(tenant_id, name).await?;
        self.current_connector(owner, name).await
    }
}
