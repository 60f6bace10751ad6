//! Workflows: a name and immutable versions of a definition (JSON text). Saving a change
//! adds a version; a run keeps the version it started with. A deleted workflow keeps its
//! versions for the runs that use them and frees its name and its place in the quota.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, findable, lock_tenant, now_ms};

#[derive(Debug, Clone)]
pub struct WorkflowRecord {
    pub id: String,
    pub name: String,
    pub version: i64,
    /// The definition of `version`, as JSON text.
    pub definition: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "w.id, w.name, v.version, v.definition, w.created_at, w.updated_at";

fn workflow(row: &AnyRow) -> Result<WorkflowRecord, StoreError> {
    Ok(WorkflowRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        definition: row.try_get("definition")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    /// Creates a workflow at version 1, unless the tenant has `max_workflows` already
    /// ([`StoreError::LimitReached`]) or one of that name (a conflict). The count and the
    /// insert are serialized per tenant by the tenant's row lock, so two concurrent creations
    /// cannot both take the last place.
    pub async fn create_workflow(
        &self,
        tenant_id: &str,
        id: &str,
        name: &str,
        definition: &str,
        max_workflows: u32,
    ) -> Result<WorkflowRecord, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        lock_tenant(&mut tx, tenant_id).await?;
        let live: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM workflows WHERE tenant_id = $1 AND deleted_at IS NULL",
        )
        .bind(tenant_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if live >= i64::from(max_workflows) {
            return Err(StoreError::LimitReached {
                quota: "max_workflows",
                limit: u64::from(max_workflows),
            });
        }
        sqlx::query(
            "INSERT INTO workflows (tenant_id, id, name, current_version, created_at, updated_at) \
             VALUES ($1, $2, $3, 1, $4, $4)",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        insert_version(&mut tx, tenant_id, id, 1, definition, now).await?;
        self.commit_change(tx, tenant_id, id).await?;
        Ok(WorkflowRecord {
            id: id.to_owned(),
            name: name.to_owned(),
            version: 1,
            definition: definition.to_owned(),
            created_at: now,
            updated_at: now,
        })
    }

    /// Saves `definition` as the workflow's next version (and `name`, if given).
    pub async fn put_workflow_version(
        &self,
        tenant_id: &str,
        id: &str,
        name: Option<&str>,
        definition: &str,
    ) -> Result<WorkflowRecord, StoreError> {
        findable(&[tenant_id, id])?;
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        // The bump locks the row: concurrent saves get consecutive versions.
        let row = sqlx::query(
            "UPDATE workflows SET current_version = current_version + 1, updated_at = $3, \
             name = COALESCE($4, name) \
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL \
             RETURNING current_version, name, created_at",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(now)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let version: i64 = row.try_get("current_version")?;
        let record = WorkflowRecord {
            id: id.to_owned(),
            name: row.try_get("name")?,
            version,
            definition: definition.to_owned(),
            created_at: row.try_get("created_at")?,
            updated_at: now,
        };
        insert_version(&mut tx, tenant_id, id, version, definition, now).await?;
        self.commit_change(tx, tenant_id, id).await?;
        Ok(record)
    }

    /// The workflow at its current version (`version: None`) or at `version`. A deleted
    /// workflow is not found, whatever the version.
    pub async fn workflow(
        &self,
        tenant_id: &str,
        id: &str,
        version: Option<i64>,
    ) -> Result<WorkflowRecord, StoreError> {
        findable(&[tenant_id, id])?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM workflows w JOIN workflow_versions v \
               ON v.tenant_id = w.tenant_id AND v.workflow_id = w.id \
             WHERE w.tenant_id = $1 AND w.id = $2 AND w.deleted_at IS NULL \
               AND v.version = COALESCE($3, w.current_version)"
        ))
        .bind(tenant_id)
        .bind(id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        workflow(&row)
    }

    /// One version's definition, deleted workflow or not: what a run started with.
    pub async fn workflow_definition(
        &self,
        tenant_id: &str,
        id: &str,
        version: i64,
    ) -> Result<String, StoreError> {
        let row = sqlx::query(
            "SELECT definition FROM workflow_versions \
             WHERE tenant_id = $1 AND workflow_id = $2 AND version = $3",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(row.try_get("definition")?)
    }

    /// The tenant's live workflows at their current versions, by name.
    pub async fn list_workflows(&self, tenant_id: &str) -> Result<Vec<WorkflowRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM workflows w JOIN workflow_versions v \
               ON v.tenant_id = w.tenant_id AND v.workflow_id = w.id AND v.version = w.current_version \
             WHERE w.tenant_id = $1 AND w.deleted_at IS NULL ORDER BY w.name"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(workflow).collect()
    }

    /// Deletes a workflow and its triggers: new runs of it are refused; runs already created
    /// keep going on the version they started with.
    pub async fn delete_workflow(&self, tenant_id: &str, id: &str) -> Result<(), StoreError> {
        findable(&[tenant_id, id])?;
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        // Serialized with `create_trigger`, which checks the workflow under the same lock.
        lock_tenant(&mut tx, tenant_id).await?;
        let done = sqlx::query(
            "UPDATE workflows SET deleted_at = $3 \
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "UPDATE triggers SET deleted_at = $3, updated_at = $3 \
             WHERE tenant_id = $1 AND workflow_id = $2 AND deleted_at IS NULL",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        self.commit_change(tx, tenant_id, id).await
    }
}

async fn insert_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant_id: &str,
    id: &str,
    version: i64,
    definition: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO workflow_versions (tenant_id, workflow_id, version, definition, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(version)
    .bind(definition)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
