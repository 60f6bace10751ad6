//! A tenant's lifecycle: suspend and resume, export, and delete.
//!
//! [`TENANT_TABLES`] names every table holding a tenant's rows, and for each the columns an
//! export carries and the ones it withholds (with why). A test compares it with the schema,
//! so a new table or column cannot be missed by delete, nor leak a secret through export.

use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::tenants::{TENANT_COLUMNS, TenantRecord};
use super::{DbKind, Store, StoreError, findable, now_ms};

/// How an exported column is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Text(&'static str),
    Int(&'static str),
    /// Text holding JSON: exported as the value, not a string.
    Json(&'static str),
    /// Not exported, and why.
    Withheld(&'static str, &'static str),
}

impl Column {
    pub fn name(self) -> &'static str {
        match self {
            Column::Text(name) | Column::Int(name) | Column::Json(name) => name,
            Column::Withheld(name, _) => name,
        }
    }
}

/// A table of tenant rows, keyed by its `tenant_id` column.
#[derive(Debug, Clone, Copy)]
pub struct TenantTable {
    pub name: &'static str,
    /// Every column but `tenant_id`.
    pub columns: &'static [Column],
    /// The order rows are exported in (the primary key, so exports are stable).
    pub order: &'static str,
}

use Column::{Int, Json, Text, Withheld};

const SEALED: &str = "a sealed secret";
const LEASE: &str = "a process's lease, meaningless outside it";
const GUEST: &str = "a connector's own state, which may hold tokens it was given";
const BLOB: &str = "the component's bytes; the digest names them";

/// Every table with a `tenant_id` column. Delete removes their rows in this order.
pub const TENANT_TABLES: &[TenantTable] = &[
    TenantTable {
        name: "dead_letter_notices",
        columns: &[
            Text("id"),
            Text("run_id"),
            Json("payload"),
            Text("state"),
            Int("attempts"),
            Int("next_at"),
            Int("last_status"),
            Text("last_error"),
            Int("created_at"),
            Int("updated_at"),
        ],
        order: "id",
    },
    TenantTable {
        name: "dead_letter_hooks",
        columns: &[
            Text("id"),
            Text("url"),
            Withheld("secret", SEALED),
            Int("previous_until"),
            Int("version"),
            Int("created_at"),
            Int("updated_at"),
        ],
        order: "id",
    },
    TenantTable {
        name: "run_items",
        columns: &[
            Text("run_id"),
            Int("step_index"),
            Int("item"),
            Int("body_index"),
            Text("step_id"),
            Text("status"),
            Json("output"),
            Json("logs"),
            Int("fuel_used"),
            Int("duration_us"),
            Int("peak_memory_bytes"),
            Int("outbound_requests"),
            Int("outbound_bytes"),
            Int("finished_at"),
        ],
        order: "run_id, step_index, item, body_index",
    },
    TenantTable {
        name: "run_steps",
        columns: &[
            Text("run_id"),
            Int("step_index"),
            Text("step_id"),
            Text("status"),
            Int("attempts"),
            Json("output"),
            Json("error"),
            Json("logs"),
            Int("fuel_used"),
            Int("duration_us"),
            Int("peak_memory_bytes"),
            Int("outbound_requests"),
            Int("outbound_bytes"),
            Int("finished_at"),
        ],
        order: "run_id, step_index",
    },
    TenantTable {
        name: "runs",
        columns: &[
            Text("id"),
            Text("workflow_id"),
            Int("workflow_version"),
            Text("state"),
            Json("input"),
            Text("idempotency_key"),
            Int("next_step"),
            Int("attempt"),
            Int("run_at"),
            Int("lease_epoch"),
            Withheld("lease_owner", LEASE),
            Withheld("lease_until", LEASE),
            Int("cancel_requested"),
            Json("output"),
            Json("error"),
            Int("fuel_used"),
            Int("duration_us"),
            Int("peak_memory_bytes"),
            Int("outbound_requests"),
            Int("outbound_bytes"),
            Int("created_at"),
            Int("started_at"),
            Int("finished_at"),
            Int("updated_at"),
            Text("trigger_id"),
            Text("request_hash"),
            Text("trace_id"),
            Text("trace_parent"),
            Text("handles"),
        ],
        order: "id",
    },
    TenantTable {
        name: "run_tenants",
        columns: &[
            Withheld("last_turn", "the claim rotation's bookkeeping"),
            Withheld("running", "the claim rotation's bookkeeping"),
            Withheld("max_running", "the claim rotation's copy of a limit"),
        ],
        order: "tenant_id",
    },
    TenantTable {
        name: "trigger_ticks",
        columns: &[
            Text("trigger_id"),
            Int("scheduled_at"),
            Text("outcome"),
            Text("run_id"),
            Int("created_at"),
        ],
        order: "trigger_id, scheduled_at",
    },
    TenantTable {
        name: "triggers",
        columns: &[
            Text("id"),
            Text("workflow_id"),
            Text("kind"),
            Int("paused"),
            Text("scheme"),
            Withheld("secret", SEALED),
            Int("previous_until"),
            Int("rate_per_minute"),
            Text("expression"),
            Text("time_zone"),
            Text("missed_policy"),
            Int("missed_cap"),
            Text("overlap"),
            Json("filter"),
            Int("next_fire_at"),
            Int("last_fired_at"),
            Text("last_run_id"),
            Int("fired"),
            Int("missed"),
            Int("skipped"),
            Int("refused"),
            Int("created_at"),
            Int("updated_at"),
            Int("deleted_at"),
        ],
        order: "id",
    },
    TenantTable {
        name: "workflow_versions",
        columns: &[
            Text("workflow_id"),
            Int("version"),
            Json("definition"),
            Int("created_at"),
        ],
        order: "workflow_id, version",
    },
    TenantTable {
        name: "workflows",
        columns: &[
            Text("id"),
            Text("name"),
            Int("current_version"),
            Int("created_at"),
            Int("updated_at"),
            Int("deleted_at"),
        ],
        order: "id",
    },
    TenantTable {
        name: "connector_state",
        columns: &[
            Text("connector"),
            Text("connection_id"),
            Text("key"),
            Withheld("value", GUEST),
        ],
        order: "connector, connection_id, key",
    },
    TenantTable {
        name: "connections",
        columns: &[
            Text("id"),
            Text("connector"),
            Text("name"),
            Text("auth_type"),
            Json("fields"),
            Withheld("secret", SEALED),
            Json("config"),
            Int("created_at"),
            Int("updated_at"),
            Withheld("refresh_lease_until", LEASE),
            Withheld("refresh_lease_owner", LEASE),
        ],
        order: "id",
    },
    TenantTable {
        name: "connectors",
        columns: &[
            Text("name"),
            Text("version"),
            Text("digest"),
            Json("manifest"),
            Int("size_bytes"),
            Int("deprecated"),
            Int("created_at"),
        ],
        order: "name, version",
    },
    TenantTable {
        name: "component_blobs",
        columns: &[Text("digest"), Withheld("bytes", BLOB), Int("created_at")],
        order: "digest",
    },
    TenantTable {
        name: "usage_hours",
        columns: &[Int("hour"), Int("runs")],
        order: "hour",
    },
    TenantTable {
        name: "usage_days",
        columns: &[
            Int("day"),
            Int("runs"),
            Int("steps"),
            Int("fuel_used"),
            Int("duration_us"),
            Int("outbound_requests"),
            Int("outbound_bytes"),
        ],
        order: "day",
    },
    TenantTable {
        name: "access_minutes",
        columns: &[
            Int("minute"),
            Text("subject"),
            Text("method"),
            Text("route"),
            Int("calls"),
            Int("errors"),
        ],
        order: "minute, subject, method, route",
    },
    // Last: its rows may go only once the tenant's row is gone (see migration 0015).
    TenantTable {
        name: "audit_log",
        columns: &[
            Text("id"),
            Int("seq"),
            Int("at"),
            Text("actor"),
            Text("action"),
            Text("target"),
            Text("run_id"),
            Json("detail"),
            Text("request_id"),
            Text("prev_hash"),
            Text("hash"),
        ],
        order: "at, id",
    },
];

/// What deleting a tenant removed.
#[derive(Debug, Default)]
pub struct Deleted {
    /// Rows, all tables together (the tenant's own row included).
    pub rows: u64,
    /// Component digests the tenant held that no other tenant does: their compiled
    /// artifacts can go too.
    pub orphaned_digests: Vec<String>,
}

/// Why a lifecycle change was refused.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleRefusal {
    #[error("tenant `{0}` is not suspended; suspend it first")]
    NotSuspended(String),
    /// Steps already in flight when it was suspended finish (and their guests may still
    /// write state): deleting waits for them, or it would leave what they write behind.
    #[error(
        "tenant `{tenant}` still has {running} run(s) in a step; retry once they are back in the queue (at most a step's timeout)"
    )]
    Running { tenant: String, running: i64 },
}

impl Store {
    /// Suspends the tenant (a second call keeps the first time) and stops claims of its
    /// runs at once: its claim-rotation row's cap is 0 until resumed.
    pub async fn suspend_tenant(&self, tenant_id: &str) -> Result<TenantRecord, StoreError> {
        findable(&[tenant_id])?;
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE tenants SET suspended_at = COALESCE(suspended_at, $2) WHERE id = $1",
        )
        .bind(tenant_id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("UPDATE run_tenants SET max_running = 0 WHERE tenant_id = $1")
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?;
        let record = tenant_in(&mut tx, tenant_id).await?;
        self.commit_change(tx, tenant_id, tenant_id).await?;
        Ok(record)
    }

    /// Resumes the tenant: its runs are claimed again, up to its limit.
    pub async fn resume_tenant(&self, tenant_id: &str) -> Result<TenantRecord, StoreError> {
        findable(&[tenant_id])?;
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("UPDATE tenants SET suspended_at = NULL WHERE id = $1")
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let record = tenant_in(&mut tx, tenant_id).await?;
        super::tenants::write_quota(&mut tx, tenant_id, &record.quota).await?;
        self.commit_change(tx, tenant_id, tenant_id).await?;
        Ok(record)
    }

    /// Deletes every row of a suspended tenant, in one transaction, which also appends
    /// `record` (the platform's record of the deletion): the chain goes only with it.
    pub async fn delete_tenant(
        &self,
        tenant_id: &str,
        record: &super::AuditDraft,
    ) -> Result<Result<Deleted, LifecycleRefusal>, StoreError> {
        findable(&[tenant_id])?;
        let mut tx = self.begin_write().await?;
        let lock = match self.kind {
            DbKind::Postgres => " FOR UPDATE",
            DbKind::Sqlite => "",
        };
        let row = sqlx::query(&format!(
            "SELECT suspended_at FROM tenants WHERE id = $1{lock}"
        ))
        .bind(tenant_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        if row.try_get::<Option<i64>, _>("suspended_at")?.is_none() {
            return Ok(Err(LifecycleRefusal::NotSuspended(tenant_id.to_owned())));
        }
        let running: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM runs WHERE tenant_id = $1 AND state = 'running'",
        )
        .bind(tenant_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if running > 0 {
            return Ok(Err(LifecycleRefusal::Running {
                tenant: tenant_id.to_owned(),
                running,
            }));
        }
        let orphaned_digests = sqlx::query(
            "SELECT DISTINCT digest FROM component_blobs b WHERE b.tenant_id = $1 \
             AND NOT EXISTS (SELECT 1 FROM component_blobs o \
               WHERE o.digest = b.digest AND o.tenant_id <> $1) ORDER BY digest",
        )
        .bind(tenant_id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| row.try_get::<String, _>("digest"))
        .collect::<Result<Vec<_>, _>>()?;
        let rows = sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            + Store::purge_leftovers(&mut tx, tenant_id).await?;
        super::audit::append(&mut tx, self.audit_at(), record, "").await?;
        tx.commit().await?;
        Ok(Ok(Deleted {
            rows,
            orphaned_digests,
        }))
    }

    /// Removes every row of `tenant_id` from [`TENANT_TABLES`], in their order, and counts
    /// them: a deletion's (after the tenant's row), and before an id is created again, what a
    /// deleted tenant of that id may have left (a write that raced with its deletion), so a
    /// new tenant inherits nothing. Audit rows go only while no tenant row of the id exists.
    pub(crate) async fn purge_leftovers(
        tx: &mut super::runs::Tx<'_>,
        tenant_id: &str,
    ) -> Result<u64, StoreError> {
        let mut rows = 0;
        for table in TENANT_TABLES {
            rows += sqlx::query(&format!("DELETE FROM {} WHERE tenant_id = $1", table.name))
                .bind(tenant_id)
                .execute(&mut **tx)
                .await?
                .rows_affected();
        }
        Ok(rows)
    }

    /// The tenant's row as an export shows it.
    pub async fn export_tenant_row(&self, tenant_id: &str) -> Result<Value, StoreError> {
        let record = self.tenant(tenant_id).await?;
        let limits =
            serde_json::to_value(&record.quota).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(serde_json::json!({
            "id": record.id,
            "name": record.name,
            "created_at": record.created_at,
            "suspended_at": record.suspended_at,
            "limits": limits,
        }))
    }

    /// One page of the exported rows of `table` for the tenant, in `table.order`: `limit`
    /// rows after the first `offset`. Paged, so that an export holds no connection while
    /// its reader is slow, and a tenant's runs need not fit in memory.
    pub async fn export_page(
        &self,
        tenant_id: &str,
        table: &TenantTable,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<Value>, StoreError> {
        findable(&[tenant_id])?;
        let columns: Vec<&str> = table
            .columns
            .iter()
            .filter(|c| !matches!(c, Withheld(..)))
            .map(|c| c.name())
            .collect();
        if columns.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {} FROM {} WHERE tenant_id = $1 ORDER BY {} LIMIT $2 OFFSET $3",
            columns.join(", "),
            table.name,
            table.order
        );
        sqlx::query(&sql)
            .bind(tenant_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| exported(row, table.columns))
            .collect()
    }
}

fn exported(row: &AnyRow, columns: &[Column]) -> Result<Value, StoreError> {
    let mut object = Map::new();
    for column in columns {
        let value = match *column {
            Text(name) => row
                .try_get::<Option<String>, _>(name)?
                .map_or(Value::Null, Value::String),
            Int(name) => row
                .try_get::<Option<i64>, _>(name)?
                .map_or(Value::Null, Value::from),
            // Text that is not JSON (an older row, say) is kept as text, not dropped.
            Json(name) => row
                .try_get::<Option<String>, _>(name)?
                .map_or(Value::Null, |text| {
                    serde_json::from_str(&text).unwrap_or(Value::String(text))
                }),
            Withheld(..) => continue,
        };
        object.insert(column.name().to_owned(), value);
    }
    Ok(Value::Object(object))
}

async fn tenant_in(
    tx: &mut super::runs::Tx<'_>,
    tenant_id: &str,
) -> Result<TenantRecord, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"
    ))
    .bind(tenant_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound)?;
    super::tenants::tenant(&row)
}
