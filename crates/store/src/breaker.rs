//! The circuit breaker in front of the PostgreSQL pool, and [`Guarded`], the pool handle every
//! repository query goes through.
//!
//! While the database is unreachable every query would wait the pool's whole acquire timeout
//! before failing, and callers pile up behind each other. After
//! [`BreakerOptions::failures`] connection-level failures in a row the breaker opens: queries
//! fail at once with a connection error (so `StoreError::Unavailable`) for
//! [`BreakerOptions::open_for`]. Then one query is let through as a probe (half-open): if it
//! gets a connection the breaker closes, if not it opens again. Only connection-level errors
//! count (no connection within the timeout, I/O, TLS, protocol); an error the server answered
//! with (a constraint, a lock timeout) is an answer, so the database is reachable. Successes
//! reset the count, so a pool that is merely busy (some acquires time out while others get a
//! connection) does not open it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use sqlx::any::{AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo};
use sqlx::{Any, AnyPool, Either, Execute, Executor};

/// When the breaker opens, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerOptions {
    /// Connection-level failures in a row that open the breaker (0: never opens).
    pub failures: u32,
    /// How long an open breaker fails queries at once before it lets one probe through.
    pub open_for: Duration,
}

impl Default for BreakerOptions {
    fn default() -> Self {
        Self {
            failures: 3,
            open_for: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    /// A half-open probe is out: others still fail fast until it comes back.
    probing: bool,
}

/// The breaker's state, shared by the read pool and the writer.
#[derive(Debug)]
pub(crate) struct Breaker {
    options: BreakerOptions,
    state: Mutex<State>,
}

/// A query let through; told how it went (dropped untold: a probe that never ran, so the
/// next caller probes instead).
struct Pass {
    breaker: Arc<Breaker>,
    probe: bool,
    told: bool,
}

impl Breaker {
    pub(crate) fn new(options: BreakerOptions) -> Arc<Breaker> {
        Arc::new(Breaker {
            options,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few integers, consistent after every assignment: a panic elsewhere
        // while it was held leaves nothing half-written.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether queries are being refused at once (open, or half-open with its probe out).
    pub(crate) fn is_open(&self) -> bool {
        let state = self.state();
        state.probing || state.open_until.is_some_and(|until| Instant::now() < until)
    }

    fn enter(self: &Arc<Self>) -> Result<Pass, sqlx::Error> {
        let mut state = self.state();
        let probe = match state.open_until {
            None => false,
            Some(until) if Instant::now() < until || state.probing => return Err(open_error()),
            Some(_) => {
                state.probing = true;
                true
            }
        };
        Ok(Pass {
            breaker: self.clone(),
            probe,
            told: false,
        })
    }
}

impl Pass {
    fn observe<T>(mut self, result: &Result<T, sqlx::Error>) {
        self.told = true;
        let reached = match result {
            Ok(_) => true,
            Err(error) => !connection_level(error),
        };
        let options = self.breaker.options;
        let mut state = self.breaker.state();
        if self.probe {
            state.probing = false;
        }
        if reached {
            if state.open_until.take().is_some() {
                tracing::info!("the database answers again: circuit closed");
            }
            state.failures = 0;
            return;
        }
        state.failures = state.failures.saturating_add(1);
        let opens = self.probe || (options.failures > 0 && state.failures >= options.failures);
        if opens {
            if state.open_until.is_none() {
                tracing::warn!(
                    failures = state.failures,
                    open_for_ms = options.open_for.as_millis(),
                    "the database is unreachable: circuit open, queries fail at once"
                );
            }
            state.open_until = Some(Instant::now() + options.open_for);
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if self.probe && !self.told {
            self.breaker.state().probing = false;
        }
    }
}

/// Failures that say the database could not be reached (as opposed to an answer from it).
fn connection_level(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
    )
}

fn open_error() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "the database is unreachable (circuit open)",
    ))
}

/// A pool whose acquires go through a [`Breaker`] (`None`: SQLite, a local file that cannot
/// become unreachable). Derefs to the pool for what needs no connection (closing, sizes).
#[derive(Debug, Clone)]
pub(crate) struct Guarded {
    pool: AnyPool,
    breaker: Option<Arc<Breaker>>,
}

impl std::ops::Deref for Guarded {
    type Target = AnyPool;

    fn deref(&self) -> &AnyPool {
        &self.pool
    }
}

impl Guarded {
    pub(crate) fn new(pool: AnyPool, breaker: Option<Arc<Breaker>>) -> Guarded {
        Guarded { pool, breaker }
    }

    fn enter(&self) -> Result<Option<Pass>, sqlx::Error> {
        self.breaker.as_ref().map(Breaker::enter).transpose()
    }

    pub(crate) async fn begin(&self) -> Result<sqlx::Transaction<'static, Any>, sqlx::Error> {
        let pass = self.enter()?;
        let result = self.pool.begin().await;
        if let Some(pass) = pass {
            pass.observe(&result);
        }
        result
    }

    pub(crate) async fn begin_with(
        &self,
        statement: &'static str,
    ) -> Result<sqlx::Transaction<'static, Any>, sqlx::Error> {
        let pass = self.enter()?;
        let result = self.pool.begin_with(statement).await;
        if let Some(pass) = pass {
            pass.observe(&result);
        }
        result
    }
}

impl<'p> Executor<'p> for &'_ Guarded {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let pass = match self.enter() {
            Ok(pass) => pass,
            Err(error) => return futures::stream::once(async move { Err(error) }).boxed(),
        };
        let mut pass = pass;
        // The first item tells whether a connection was had (an acquire error comes first).
        (&self.pool)
            .fetch_many(query)
            .map(move |item| {
                if let Some(pass) = pass.take() {
                    pass.observe(&item);
                }
                item
            })
            .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let pass = match self.enter() {
            Ok(pass) => pass,
            Err(error) => return Box::pin(async move { Err(error) }),
        };
        let query = (&self.pool).fetch_optional(query);
        Box::pin(async move {
            let result = query.await;
            if let Some(pass) = pass {
                pass.observe(&result);
            }
            result
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement<'q>, sqlx::Error>>
    where
        'p: 'e,
    {
        (&self.pool).prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<sqlx::Describe<Any>, sqlx::Error>>
    where
        'p: 'e,
    {
        (&self.pool).describe(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Result<(), sqlx::Error> {
        Err(sqlx::Error::PoolTimedOut)
    }

    #[test]
    fn opens_after_failures_in_a_row_and_a_success_resets_the_count() {
        let breaker = Breaker::new(BreakerOptions {
            failures: 3,
            open_for: Duration::from_secs(60),
        });
        for _ in 0..2 {
            breaker.enter().expect("closed").observe(&refused());
        }
        breaker.enter().expect("closed").observe(&Ok(()));
        for _ in 0..2 {
            breaker.enter().expect("closed").observe(&refused());
        }
        assert!(!breaker.is_open(), "a success in between resets the count");
        breaker.enter().expect("closed").observe(&refused());
        assert!(breaker.is_open());
        assert!(breaker.enter().is_err(), "open: fails at once");
    }

    #[test]
    fn an_answer_from_the_server_is_not_a_failure() {
        let breaker = Breaker::new(BreakerOptions {
            failures: 1,
            open_for: Duration::from_secs(60),
        });
        let answered: Result<(), sqlx::Error> = Err(sqlx::Error::RowNotFound);
        breaker.enter().expect("closed").observe(&answered);
        assert!(!breaker.is_open());
    }

    #[test]
    fn half_open_lets_one_probe_through_and_closes_on_success() {
        let breaker = Breaker::new(BreakerOptions {
            failures: 1,
            open_for: Duration::from_millis(1),
        });
        breaker.enter().expect("closed").observe(&refused());
        std::thread::sleep(Duration::from_millis(5));
        let probe = breaker.enter().expect("half-open: one probe");
        assert!(breaker.enter().is_err(), "only one probe at a time");
        // A failed probe opens it again.
        probe.observe(&refused());
        assert!(breaker.enter().is_err());
        std::thread::sleep(Duration::from_millis(5));
        let probe = breaker.enter().expect("half-open again");
        drop(probe);
        // A probe dropped untold lets the next caller probe.
        let probe = breaker.enter().expect("the next caller probes");
        probe.observe(&Ok(()));
        assert!(!breaker.is_open());
        breaker.enter().expect("closed");
    }
}
