//! The database: one `sqlx::Any` pool over SQLite or PostgreSQL, migrations chosen by URL
//! scheme and applied at start, and the tenant-scoped repositories (`tenants`, `connectors`,
//! `connections`, `state`, `usage`, `workflows`, `runs`, `triggers`).
//!
//! One code path serves both databases: queries use `$N` placeholders (SQLite accepts them),
//! times are `i64` unix milliseconds, ids are text, blobs are bytes, booleans are integers.
//! Every query on tenant data takes the tenant id; queries name their columns.

mod access;
mod audit;
mod breaker;
mod claim;
mod connections;
mod connectors;
mod enqueue;
mod journal;
mod json_rows;
mod lifecycle;
mod notices;
mod retention;
mod revocations;
mod rotation;
mod runs;
mod state;
mod tenants;
mod triggers;
mod usage;
mod workflows;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row};

pub use access::AccessMinute;
pub use audit::{
    AuditDraft, AuditEntry, AuditPruned, BrokenLink, PRUNED_ACTION, PruneMark,
    verify as verify_audit_chain, with_pending_audit,
};
pub use breaker::BreakerOptions;
pub use claim::{ClaimCandidate, HeldLease};
pub use connections::{ConnectionChange, ConnectionRecord, NewConnection, NewCredential};
pub use connectors::{CATALOG, ConnectorRecord, ConnectorSummary, PutOutcome, version_key};
pub use lifecycle::{Column, Deleted, LifecycleRefusal, TENANT_TABLES, TenantTable};
pub use notices::{DeadLetterHook, NoticeCounts, NoticeOutcome, NoticeRecord};
pub use retention::Pruned;
pub use rotation::{RotationReport, reencrypt_secrets};
pub use runs::{
    AfterFailure, AuditRecord, Cancelled, Claimed, Cost, DayUsage, Enqueued, FailureHandler,
    Finish, ItemRecord, ItemResult, KeptItems, Lease, LeaseStatus, NewRun, ReplayAdmission,
    ReplayRefusal, RunFilter, RunRecord, RunState, StepRecord, StepResult,
};
pub use tenants::TenantRecord;
pub use triggers::{Fired, TICK_RETENTION_MS, Tick, TickPlan, TriggerRecord};
pub use usage::RunAdmission;
pub use workflows::WorkflowRecord;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

impl DbKind {
    pub fn from_url(url: &str) -> Result<DbKind, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(DbKind::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DbKind::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    /// A pool of up to `max` connections. A pooled SQLite connection is a handle on a local
    /// file and cannot go stale; pinging it before every use cost a thread round trip per
    /// query. PostgreSQL connections can die with the server, so they are still checked.
    ///
    /// On PostgreSQL an acquire waits at most `acquire_timeout` (a server that is down fails
    /// requests within it, instead of sqlx's 30 s). SQLite keeps sqlx's: its file cannot go
    /// away, and a wait there is a queue for its one writer, not an outage.
    async fn open_pool(
        self,
        url: &str,
        max: u32,
        acquire_timeout: std::time::Duration,
    ) -> Result<AnyPool, sqlx::Error> {
        let mut options = AnyPoolOptions::new()
            .max_connections(max)
            .test_before_acquire(self == DbKind::Postgres);
        if self == DbKind::Postgres {
            options = options.acquire_timeout(acquire_timeout);
        }
        // Statements would reach the host log at `debug` with their bound values (run
        // inputs, webhook bodies); the store's own errors say what failed instead.
        let connect = <sqlx::any::AnyConnectOptions as std::str::FromStr>::from_str(url)?;
        options
            .connect_with(sqlx::ConnectOptions::disable_statement_logging(connect))
            .await
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            DbKind::Sqlite => &SQLITE_MIGRATIONS,
            DbKind::Postgres => &POSTGRES_MIGRATIONS,
        }
    }
}

/// Why a repository call failed. Messages carry no SQL and no credentials: the API may log
/// them, and maps each variant to a problem type without showing the text.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    Conflict,
    #[error("the database URL must start with sqlite: or postgres://")]
    UnsupportedUrl,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database migration failed: {0}")]
    Migrate(String),
    #[error("a stored value cannot be read: {0}")]
    Corrupt(String),
    /// A bounded queue in front of the database is full: try again shortly.
    #[error("the database is busy: {0}")]
    Busy(&'static str),
    /// A count the tenant may not exceed (`quota`: `max_workflows`, `max_queued_runs`).
    #[error("the tenant has reached its `{quota}` of {limit}")]
    LimitReached { quota: &'static str, limit: u64 },
    /// The tenant used its `runs_per_hour` (`limit`) this clock hour.
    #[error("the tenant used all {limit} runs of this hour")]
    OverQuota { limit: u32, retry_after_s: u64 },
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt(error.to_string()),
            sqlx::Error::PoolTimedOut => {
                pool_exhausted();
                StoreError::Unavailable(error.to_string())
            }
            _ => StoreError::Unavailable(error.to_string()),
        }
    }
}

/// Logs, at most every 10 s, that a query waited out the acquire timeout: every pooled
/// connection was busy (or the server did not answer). Said as such, since the 503s it causes
/// look like an outage otherwise; the remedy is `--database-pool-size` or fewer workers.
fn pool_exhausted() {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_S: AtomicU64 = AtomicU64::new(0);
    let now_s = u64::try_from(now_ms() / 1000).unwrap_or_default();
    let last = LAST_S.load(Ordering::Relaxed);
    if now_s >= last.saturating_add(10)
        && LAST_S
            .compare_exchange(last, now_s, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            "database pool exhausted: no connection came free within the acquire timeout; \
             requests are answered 503 (raise --database-pool-size, or check the database)"
        );
    }
}

/// `url` with `application_name` set to `name` unless the operator's URL sets one, so that
/// `pg_stat_activity` tells the processes (and their roles) apart.
fn with_application_name(url: &str, name: Option<&str>) -> String {
    let Some(name) = name else {
        return url.to_owned();
    };
    if url.contains("application_name=") {
        return url.to_owned();
    }
    let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={encoded}")
}

/// The database handle the API and the state store share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    /// Both pools go through one circuit breaker on PostgreSQL (`breaker.rs`).
    pool: breaker::Guarded,
    /// Where every write goes. On SQLite, its own pool of one connection: SQLite has one
    /// writer at a time, and writers that collide wait in its busy handler, which sleeps with
    /// backoff (seen here: a 2 s tail on writes under load); queueing for the one connection
    /// instead serves them in order. On PostgreSQL, the same pool as reads.
    writer: breaker::Guarded,
    breaker: Option<std::sync::Arc<breaker::Breaker>>,
    kind: DbKind,
    /// What audit records are timed by (`StoreOptions::clock`).
    clock: std::sync::Arc<dyn airlock_model::Clock>,
    runs: usage::RunCounter,
    /// Creates durable runs, group-committed.
    enqueuer: enqueue::Enqueuer,
    /// Guest state writes queued for the writer at once (see [`Store::state_set`]).
    state_lane: std::sync::Arc<tokio::sync::Semaphore>,
    /// Wakes this process's idle run workers when a run becomes claimable.
    wakeups: std::sync::Arc<tokio::sync::Notify>,
    /// Woken when a cancel is asked for (see [`Store::lease_checks`]).
    lease_checks: std::sync::Arc<tokio::sync::Notify>,
    /// Completion writes (journal, failure, finish), group-committed.
    journal: journal::Journal,
    /// Woken when a cron trigger is created, paused or resumed in this process.
    scheduler_wakeups: std::sync::Arc<tokio::sync::Notify>,
    /// For the PostgreSQL `LISTEN` connection, which is not pooled. It may hold a password.
    url: airlock_secrets::Secret,
}

/// Options for [`Store::connect`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// Run admissions that may wait for the group-commit task; beyond it they are refused
    /// with [`StoreError::Busy`] rather than queued without bound.
    pub admission_queue: usize,
    /// How long one admission batch may take (transaction and commit); past it every run of
    /// the batch is refused as unavailable.
    pub batch_deadline: std::time::Duration,
    /// What decides the clock hour of `runs_per_hour`; tests pass a manual one.
    pub clock: std::sync::Arc<dyn airlock_model::Clock>,
    /// PostgreSQL: the longest wait for a pooled connection; past it the query fails as
    /// unavailable (the API answers 503 with `Retry-After`).
    pub acquire_timeout: std::time::Duration,
    /// PostgreSQL: when the circuit breaker in front of the pool opens.
    pub breaker: BreakerOptions,
    /// PostgreSQL: the `application_name` of this process's connections (unless the URL
    /// sets one).
    pub application_name: Option<String>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            admission_queue: 4096,
            batch_deadline: std::time::Duration::from_secs(5),
            clock: std::sync::Arc::new(airlock_model::SystemClock),
            acquire_timeout: std::time::Duration::from_secs(1),
            breaker: BreakerOptions::default(),
            application_name: None,
        }
    }
}

impl Store {
    /// Connects and applies the migrations of the URL's database kind.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        let kind = DbKind::from_url(url)?;
        let url = &match kind {
            DbKind::Postgres => with_application_name(url, options.application_name.as_deref()),
            DbKind::Sqlite => url.to_owned(),
        };
        if kind == DbKind::Sqlite {
            create_private_sqlite_file(url);
        }
        install_default_drivers();
        let pool = open_first_pool(kind, url, options).await?;
        if kind == DbKind::Sqlite {
            // WAL lets readers proceed while one writer commits; it is a property of the file,
            // so setting it once per start is enough.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        migrate(kind, &pool).await?;
        let writer = match kind {
            DbKind::Sqlite => kind
                .open_pool(url, 1, options.acquire_timeout)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?,
            DbKind::Postgres => pool.clone(),
        };
        let runs = usage::RunCounter::start(
            writer.clone(),
            options.admission_queue,
            options.batch_deadline,
            options.clock.clone(),
        );
        let wakeups = std::sync::Arc::new(tokio::sync::Notify::new());
        let enqueuer = enqueue::Enqueuer::start(
            writer.clone(),
            kind,
            options.admission_queue,
            options.batch_deadline,
            options.clock.clone(),
            wakeups.clone(),
        );
        let journal = journal::Journal::start(writer.clone(), kind, wakeups.clone());
        // SQLite: one guest write at a time waits for the one writer, so a burst of `state.set`
        // cannot queue ahead of a run admission batch. PostgreSQL has row locks and a pool.
        let state_lane = match kind {
            DbKind::Sqlite => 1,
            DbKind::Postgres => (options.max_connections as usize / 2).max(1),
        };
        let breaker = (kind == DbKind::Postgres).then(|| breaker::Breaker::new(options.breaker));
        Ok(Store {
            pool: breaker::Guarded::new(pool, breaker.clone()),
            writer: breaker::Guarded::new(writer, breaker.clone()),
            breaker,
            kind,
            clock: options.clock.clone(),
            runs,
            enqueuer,
            state_lane: std::sync::Arc::new(tokio::sync::Semaphore::new(state_lane)),
            journal,
            wakeups,
            lease_checks: std::sync::Arc::default(),
            scheduler_wakeups: std::sync::Arc::default(),
            url: airlock_secrets::Secret::new(url),
        })
    }

    /// A write transaction. On SQLite it takes the write lock at `BEGIN` (`IMMEDIATE`): a
    /// deferred transaction that reads first and then writes fails at once with
    /// `SQLITE_BUSY` when another process committed in between (its snapshot is stale), and
    /// no busy handler retries that; an immediate one waits its turn instead.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.kind {
            DbKind::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await?,
            DbKind::Postgres => self.writer.begin().await?,
        })
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// How long taking a connection from the read pool takes right now (a sample, taken at
    /// metrics scrape: a saturated pool shows here before queries time out).
    pub async fn acquire_time(&self) -> Result<std::time::Duration, StoreError> {
        let started = std::time::Instant::now();
        let connection = self.pool().acquire().await?;
        drop(connection);
        Ok(started.elapsed())
    }

    /// The read pool's connections: (in use, idle, most allowed).
    pub fn pool_stats(&self) -> (u32, u32, u32) {
        let pool = self.pool();
        let size = pool.size();
        let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
        (
            size.saturating_sub(idle),
            idle,
            pool.options().get_max_connections(),
        )
    }

    /// Whether the circuit breaker is refusing queries at once because the database did not
    /// answer (PostgreSQL only; `/readyz` says so).
    pub fn unreachable(&self) -> bool {
        self.breaker.as_ref().is_some_and(|b| b.is_open())
    }

    /// Closes the pools, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    /// The store's background task that has stopped, if one has (`/readyz` names it).
    pub fn stopped_task(&self) -> Option<&'static str> {
        if self.runs.stopped() {
            Some("run counter stopped")
        } else if self.enqueuer.stopped() {
            Some("run creation task stopped")
        } else {
            None
        }
    }

    /// Ready when the database answers and every migration this build knows is applied.
    pub async fn ready(&self) -> Result<(), StoreError> {
        if self.runs.stopped() {
            return Err(StoreError::Unavailable(
                "the run counter has stopped".into(),
            ));
        }
        if self.enqueuer.stopped() {
            return Err(StoreError::Unavailable(
                "the run creation task has stopped".into(),
            ));
        }
        let rows = sqlx::query("SELECT version FROM _sqlx_migrations WHERE success = $1")
            .bind(true)
            .fetch_all(&self.pool)
            .await?;
        let applied: Vec<i64> = rows
            .iter()
            .map(|r| r.try_get::<i64, _>("version"))
            .collect::<Result<_, _>>()?;
        let missing = self
            .kind
            .migrator()
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .count();
        if missing > 0 {
            return Err(StoreError::Migrate(format!(
                "{missing} migration(s) not applied"
            )));
        }
        Ok(())
    }
}

/// Applies this build's migrations and checks that it can read the schema: a database a
/// newer release migrated (its migrations unknown here) is fine while those were expand
/// steps, and refused once a contract step raised `schema_compat.oldest_reader` past this
/// build's newest migration (see migration 0017 and docs/operations.md, "Upgrading").
async fn migrate(kind: DbKind, pool: &AnyPool) -> Result<(), StoreError> {
    let embedded = kind.migrator();
    // sqlx refuses applied migrations it does not know unless told to ignore them; the
    // compatibility check below decides instead. (The fields are sqlx's own, public for
    // `migrate!`; the version is pinned in Cargo.lock.)
    let migrator = Migrator {
        migrations: embedded.migrations.clone(),
        ignore_missing: true,
        locking: embedded.locking,
        no_tx: embedded.no_tx,
    };
    migrator
        .run(pool)
        .await
        .map_err(|e| StoreError::Migrate(e.to_string()))?;
    let newest = embedded.iter().map(|m| m.version).max().unwrap_or(0);
    let oldest_reader: i64 = sqlx::query("SELECT oldest_reader FROM schema_compat WHERE id = 1")
        .fetch_one(pool)
        .await?
        .try_get("oldest_reader")?;
    if newest < oldest_reader {
        return Err(StoreError::Migrate(format!(
            "the database was migrated by a newer release that this one cannot run on (it \
             needs migration {oldest_reader} or later; this release knows up to {newest}): \
             run the newer release, or restore the backup taken before the upgrade"
        )));
    }
    let newer: i64 = sqlx::query("SELECT COUNT(*) AS n FROM _sqlx_migrations WHERE version > $1")
        .bind(newest)
        .fetch_one(pool)
        .await?
        .try_get("n")?;
    if newer > 0 {
        tracing::info!(
            newer,
            known = newest,
            "the database holds migrations of a newer release; running on its expanded schema"
        );
    }
    Ok(())
}

/// The pool the service starts with. PostgreSQL may still be starting (a restart of both):
/// refused connections are retried for up to 30 s, as sqlx's own acquire timeout did before
/// the pool's became short.
async fn open_first_pool(
    kind: DbKind,
    url: &str,
    options: &StoreOptions,
) -> Result<AnyPool, StoreError> {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match kind
            .open_pool(url, options.max_connections, options.acquire_timeout)
            .await
        {
            Ok(pool) => return Ok(pool),
            // What a server that is not up yet looks like; anything else (a password, a
            // database that does not exist) will not change by waiting.
            Err(sqlx::Error::PoolTimedOut) if std::time::Instant::now() < give_up => {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(sqlx::Error::Io(e))
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && std::time::Instant::now() < give_up =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => return Err(StoreError::Unavailable(e.to_string())),
        }
    }
}

/// SQLite would create a missing database file with the process umask, usually
/// world-readable, and its `-wal` and `-shm` files copy the database file's mode: create it
/// first, owner-only (0600), like the key files. An existing file is left as it is.
fn create_private_sqlite_file(url: &str) {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or_default();
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    // Only where SQLite itself would create the file (`mode=rwc`, its default): a caller that
    // opens with `mode=rw` (`airlock keys`) relies on a missing database being an error.
    let creates = !query.split('&').any(|p| p.starts_with("mode=")) || query.contains("mode=rwc");
    if path.is_empty() || path == ":memory:" || !creates {
        return;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    // An existing file is fine, and a path that cannot be created (a missing directory, a
    // read-only mount) is for SQLite to report in its own words.
    let _ = options.open(path);
}

/// A lookup by keys a caller chose (a path segment, a body field): a key that breaks the naming
/// rule (`crate::names`) cannot equal any stored name, so it is "not found" without a query.
/// PostgreSQL refuses a NUL in a text parameter with an error, which would otherwise turn a
/// bad path into a 503 and an error in the log.
fn findable(keys: &[&str]) -> Result<(), StoreError> {
    if keys
        .iter()
        .all(|key| airlock_contract::names::is_clean(key))
    {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

/// Now, in unix milliseconds (the system clock).
pub fn now_ms() -> i64 {
    airlock_model::Clock::now_ms(&airlock_model::SystemClock)
}

/// Writes the tenant's row in `tx` (not found: the tenant is gone): a row lock on PostgreSQL (the one writer on SQLite) that
/// serializes the tenant's state writes with each other and with a connection's deletion.
pub(crate) async fn lock_tenant(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant_id: &str,
) -> Result<(), StoreError> {
    let done = sqlx::query("UPDATE tenants SET id = id WHERE id = $1")
        .bind(tenant_id)
        .execute(&mut **tx)
        .await?;
    // A write that raced with the tenant's deletion must not bring a row of it back.
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::with_application_name;

    #[test]
    fn the_application_name_is_added_unless_the_url_sets_one() {
        let name = Some("airlock api+workers 42");
        assert_eq!(
            with_application_name("postgres://u@h/db", name),
            "postgres://u@h/db?application_name=airlock+api%2Bworkers+42"
        );
        assert_eq!(
            with_application_name("postgres://u@h/db?sslmode=require", name),
            "postgres://u@h/db?sslmode=require&application_name=airlock+api%2Bworkers+42"
        );
        let own = "postgres://u@h/db?application_name=mine";
        assert_eq!(with_application_name(own, name), own);
        assert_eq!(
            with_application_name("postgres://u@h/db", None),
            "postgres://u@h/db"
        );
    }
}
