//! Access history: calls per token subject, route and minute (`access_minutes`).

use sqlx::Row;

use crate::{Store, StoreError};

/// One aggregated row: a subject's calls of a route in one minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessMinute {
    pub tenant_id: String,
    /// Minutes since the unix epoch.
    pub minute: i64,
    pub subject: String,
    pub method: String,
    /// The route template (`/v1/runs/{id}`).
    pub route: String,
    pub calls: i64,
    /// Calls answered 400 or above.
    pub errors: i64,
}

/// Rows written per statement when flushing.
const FLUSH_ROWS: usize = 200;

impl Store {
    /// Adds the counts of `rows` to the stored minutes (creating them as needed).
    /// Counts of a tenant deleted since they were taken are dropped: a flush must not bring
    /// back rows of a tenant whose deletion removed every other.
    pub async fn record_access(&self, rows: &[AccessMinute]) -> Result<(), StoreError> {
        let mut tenants: Vec<&str> = rows.iter().map(|r| r.tenant_id.as_str()).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let mut live = std::collections::HashSet::new();
        for chunk in tenants.chunks(FLUSH_ROWS) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!("SELECT id FROM tenants WHERE id IN ({})", marks.join(", "));
            let mut query = sqlx::query(&sql);
            for tenant in chunk {
                query = query.bind(*tenant);
            }
            for row in query.fetch_all(&self.pool).await? {
                live.insert(row.try_get::<String, _>("id")?);
            }
        }
        let rows: Vec<&AccessMinute> = rows
            .iter()
            .filter(|r| live.contains(&r.tenant_id))
            .collect();
        for chunk in rows.chunks(FLUSH_ROWS) {
            let values: Vec<String> = (0..chunk.len())
                .map(|r| {
                    let p = |i: usize| r * 7 + i;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                        p(1),
                        p(2),
                        p(3),
                        p(4),
                        p(5),
                        p(6),
                        p(7)
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO access_minutes (tenant_id, minute, subject, method, route, calls, \
                   errors) VALUES {} \
                 ON CONFLICT (tenant_id, minute, subject, method, route) DO UPDATE SET \
                   calls = access_minutes.calls + excluded.calls, \
                   errors = access_minutes.errors + excluded.errors",
                values.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for row in chunk {
                query = query
                    .bind(&row.tenant_id)
                    .bind(row.minute)
                    .bind(&row.subject)
                    .bind(&row.method)
                    .bind(&row.route)
                    .bind(row.calls)
                    .bind(row.errors);
            }
            query.execute(&self.writer).await?;
        }
        Ok(())
    }

    /// The tenant's access history, newest minute first.
    pub async fn access_history(
        &self,
        tenant_id: &str,
        limit: i64,
    ) -> Result<Vec<AccessMinute>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, minute, subject, method, route, calls, errors FROM access_minutes \
             WHERE tenant_id = $1 ORDER BY minute DESC, subject, route, method LIMIT $2",
        )
        .bind(tenant_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AccessMinute {
                    tenant_id: row.try_get("tenant_id")?,
                    minute: row.try_get("minute")?,
                    subject: row.try_get("subject")?,
                    method: row.try_get("method")?,
                    route: row.try_get("route")?,
                    calls: row.try_get("calls")?,
                    errors: row.try_get("errors")?,
                })
            })
            .collect()
    }

    /// Removes the tenant's minutes before `before_minute`.
    pub async fn prune_access(
        &self,
        tenant_id: &str,
        before_minute: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM access_minutes WHERE tenant_id = $1 AND minute < $2")
            .bind(tenant_id)
            .bind(before_minute)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }
}
