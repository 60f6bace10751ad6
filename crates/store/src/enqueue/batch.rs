//! SQLite: a batch of run creations in a few statements: one insert for up to 64 runs, two
//! count reads and three count writes, plus one read per key taken before this batch and one
//! delete per refused run.
//!
//! The rules are [`RunInserts`](crate::runs::RunInserts)': a taken key answers with its run
//! before any limit; then `max_queued_runs`, then `runs_per_hour`; a refused run writes
//! nothing. They are applied here in arrival order, in memory, from counts read once per
//! batch. That is exact because the transaction holds SQLite's one write lock from `BEGIN
//! IMMEDIATE` to its commit: no other writer, in this process or another, can change a
//! count in between. PostgreSQL has no such lock, so there the hourly count is a guarded
//! statement, run by run.
//!
//! Why: a batch is the one thing every delivery waits for, and statement by statement (two
//! a run, three a tenant, each a round trip to SQLite's thread) a batch of 16 took 4.2 ms.

use std::collections::{HashMap, HashSet};

use sqlx::Row as _;

use crate::runs::{DAY_MS, RunRecord, Tx, WAITING, bind_new_run, insert_runs_sql, run_by_key_in};
use crate::usage::{HOUR_MS, over_quota};
use crate::{Enqueued, NewRun, StoreError};

/// Rows per insert statement: 9 parameters each, far below SQLite's 32,766.
const INSERT_ROWS: usize = 64;

/// One tenant's part of the batch.
#[derive(Default)]
struct Tenant {
    /// Its runs waiting before this batch's.
    waiting_before: i64,
    /// Its runs counted in the current hour before this batch's.
    hour_before: i64,
    /// This batch's runs admitted so far, and those of them counted in the hour.
    admitted: i64,
    counted: i64,
}

/// Creates `requests` in `tx`, answering each in order.
pub(super) async fn create_all(
    tx: &mut Tx<'_>,
    requests: &[(&str, &NewRun)],
    now: i64,
    hour_now: i64,
) -> Result<Vec<Result<Enqueued, StoreError>>, StoreError> {
    // Only the ids come back: the rest of each row is what was just written, and reading
    // every column of every run back cost 10-15% of the ingest rate.
    let mut inserted: HashSet<String> = HashSet::with_capacity(requests.len());
    for chunk in requests.chunks(INSERT_ROWS) {
        let sql = insert_runs_sql(chunk.len(), "id");
        // The text varies with the batch: kept out of the writer's statement cache, where
        // dozens of one-off shapes would push out the statements every run uses.
        let mut query = sqlx::query(&sql).persistent(false);
        for &(tenant_id, new) in chunk {
            query = bind_new_run(query, tenant_id, new, now);
        }
        for row in query.fetch_all(&mut **tx).await? {
            inserted.insert(row.try_get("id")?);
        }
    }
    let mut tenants: HashMap<&str, Tenant> = HashMap::new();
    for &(tenant_id, new) in requests {
        if inserted.contains(&new.id) {
            // The count read next includes this batch's runs.
            tenants.entry(tenant_id).or_default().waiting_before -= 1;
        }
    }
    read_counts(tx, &mut tenants, hour_now).await?;

    let mut results: Vec<Result<Enqueued, StoreError>> = Vec::with_capacity(requests.len());
    let mut refused = Vec::new();
    // Which request of this batch inserted each key: a later one with the same key shares
    // its outcome, refusal included (the refused row is deleted below, so reading it back
    // would answer with a run that never was).
    let mut holders: HashMap<(&str, &str), usize> = HashMap::new();
    for &(tenant_id, new) in requests {
        let key = new.idempotency_key.as_deref();
        if !inserted.remove(&new.id) {
            let key = key.unwrap_or_default();
            let result = match holders.get(&(tenant_id, key)) {
                Some(&holder) => same_outcome(&results[holder]),
                // Taken by a run committed before this batch.
                None => match run_by_key_in(tx, tenant_id, key).await? {
                    Some(existing) => Ok(Enqueued::Existing(existing)),
                    None => Err(StoreError::Conflict),
                },
            };
            results.push(result);
            continue;
        }
        if let Some(key) = key {
            holders.insert((tenant_id, key), results.len());
        }
        let tenant = tenants.entry(tenant_id).or_default();
        let max_queued = i64::try_from(new.max_queued).unwrap_or(i64::MAX);
        let refusal = if tenant.waiting_before + tenant.admitted >= max_queued {
            Some(StoreError::LimitReached {
                quota: "max_queued_runs",
                limit: new.max_queued,
            })
        } else {
            new.runs_per_hour
                .filter(|&limit| tenant.hour_before + tenant.counted >= i64::from(limit))
                .map(|limit| over_quota(limit, hour_now))
        };
        match refusal {
            Some(refusal) => {
                refused.push((tenant_id, &new.id));
                results.push(Err(refusal));
            }
            None => {
                tenant.admitted += 1;
                if new.runs_per_hour.is_some() {
                    tenant.counted += 1;
                }
                results.push(Ok(Enqueued::Created(RunRecord::queued(new, now))));
            }
        }
    }
    for (tenant_id, id) in refused {
        sqlx::query("DELETE FROM runs WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    write_counts(tx, &tenants, now, hour_now).await?;
    Ok(results)
}

/// What a request whose key an earlier request of the batch inserted is answered: that
/// run, or that refusal.
fn same_outcome(holder: &Result<Enqueued, StoreError>) -> Result<Enqueued, StoreError> {
    match holder {
        Ok(Enqueued::Created(run) | Enqueued::Existing(run)) => Ok(Enqueued::Existing(run.clone())),
        Err(StoreError::LimitReached { quota, limit }) => Err(StoreError::LimitReached {
            quota,
            limit: *limit,
        }),
        Err(StoreError::OverQuota {
            limit,
            retry_after_s,
        }) => Err(StoreError::OverQuota {
            limit: *limit,
            retry_after_s: *retry_after_s,
        }),
        Err(_) => Err(StoreError::Conflict),
    }
}

/// Each tenant's waiting runs and its count in the current hour, one statement each for
/// the whole batch.
async fn read_counts(
    tx: &mut Tx<'_>,
    tenants: &mut HashMap<&str, Tenant>,
    hour_now: i64,
) -> Result<(), StoreError> {
    if tenants.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = tenants.keys().copied().collect();
    let sql = format!(
        "SELECT tenant_id, COUNT(*) AS n FROM runs WHERE {WAITING} AND tenant_id IN ({}) \
         GROUP BY tenant_id",
        placeholders(1, ids.len())
    );
    let hour_sql = format!(
        "SELECT tenant_id, runs FROM usage_hours WHERE hour = $1 AND tenant_id IN ({})",
        placeholders(2, ids.len())
    );
    let mut waiting = sqlx::query(&sql).persistent(false);
    let mut hours = sqlx::query(&hour_sql)
        .persistent(false)
        .bind(hour_now.div_euclid(HOUR_MS));
    for id in &ids {
        waiting = waiting.bind(*id);
        hours = hours.bind(*id);
    }
    for row in waiting.fetch_all(&mut **tx).await? {
        let id: String = row.try_get("tenant_id")?;
        if let Some(tenant) = tenants.get_mut(id.as_str()) {
            tenant.waiting_before += row.try_get::<i64, _>("n")?;
        }
    }
    for row in hours.fetch_all(&mut **tx).await? {
        let id: String = row.try_get("tenant_id")?;
        if let Some(tenant) = tenants.get_mut(id.as_str()) {
            tenant.hour_before = row.try_get("runs")?;
        }
    }
    Ok(())
}

/// The admitted runs' hourly counts, their tenants' places in the claim rotation and their
/// day's usage: one statement each.
async fn write_counts(
    tx: &mut Tx<'_>,
    tenants: &HashMap<&str, Tenant>,
    now: i64,
    hour_now: i64,
) -> Result<(), StoreError> {
    let admitted: Vec<(&str, &Tenant)> = tenants
        .iter()
        .filter(|(_, t)| t.admitted > 0)
        .map(|(id, t)| (*id, t))
        .collect();
    if admitted.is_empty() {
        return Ok(());
    }
    let counted: Vec<&(&str, &Tenant)> = admitted.iter().filter(|(_, t)| t.counted > 0).collect();
    if !counted.is_empty() {
        let sql = format!(
            "INSERT INTO usage_hours (tenant_id, hour, runs) VALUES {} \
             ON CONFLICT (tenant_id, hour) DO UPDATE SET runs = usage_hours.runs + excluded.runs",
            rows(counted.len(), 3, "")
        );
        let mut query = sqlx::query(&sql).persistent(false);
        for (id, tenant) in &counted {
            query = query
                .bind(*id)
                .bind(hour_now.div_euclid(HOUR_MS))
                .bind(tenant.counted);
        }
        query.execute(&mut **tx).await?;
    }
    let sql = format!(
        "INSERT INTO run_tenants (tenant_id, last_turn) VALUES {} \
         ON CONFLICT (tenant_id) DO NOTHING",
        rows(admitted.len(), 1, ", 0")
    );
    let mut query = sqlx::query(&sql).persistent(false);
    for (id, _) in &admitted {
        query = query.bind(*id);
    }
    query.execute(&mut **tx).await?;
    let sql = format!(
        "INSERT INTO usage_days (tenant_id, day, runs, steps, fuel_used, duration_us, \
           outbound_requests, outbound_bytes) VALUES {} \
         ON CONFLICT (tenant_id, day) DO UPDATE SET runs = usage_days.runs + excluded.runs",
        rows(admitted.len(), 3, ", 0, 0, 0, 0, 0")
    );
    let mut query = sqlx::query(&sql).persistent(false);
    for (id, tenant) in &admitted {
        query = query
            .bind(*id)
            .bind(now.div_euclid(DAY_MS))
            .bind(tenant.admitted);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

/// `$first, $first+1, …` for `count` values.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `count` rows of `width` parameters each, numbered from `$1`, each ending with `literal`:
/// `rows(2, 2, ", 0")` is `($1, $2, 0), ($3, $4, 0)`.
fn rows(count: usize, width: usize, literal: &str) -> String {
    (0..count)
        .map(|r| format!("({}{literal})", placeholders(r * width + 1, width)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_number_their_parameters_in_order() {
        assert_eq!(rows(2, 2, ", 0"), "($1, $2, 0), ($3, $4, 0)");
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
    }
}
