//! The circuit breaker: per tenant and upstream origin (scheme, host, port), requests fail fast
//! while that upstream keeps failing, instead of each guest waiting out its own timeouts.
//!
//! States: closed (requests pass; consecutive failures are counted) → open after
//! `failure_threshold` in a row (requests are refused without a connection attempt) → after
//! the cool-down, half-open: exactly one request, the probe, goes through; its success closes
//! the breaker, its failure opens it again with the cool-down doubled, up to `max_cool_down`.
//!
//! What counts as a failure is the gate's call ([`Outcome`]): transport failures and 502, 503,
//! 504. A 4xx says the upstream is up and answering; a 429 is handled by `Retry-After`.
//!
//! One [`Breakers`] per process (in the gate), shared by every invocation. Memory is bounded:
//! only origins with a failure on record are held (a success forgets a closed one), at most
//! `max_hosts_per_tenant` per tenant, so a guest calling many failing hosts cannot grow the map.
//! Keys are per tenant: one tenant's failures never refuse another tenant's requests.
//!
//! The state machine takes the time as an argument (`now`); only the gate reads the clock.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use airlock_model::TenantId;
use url::Url;

/// The breaker's settings, chosen by the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker. 0 turns the breaker off.
    pub failure_threshold: u32,
    /// How long an opened breaker refuses requests before it lets a probe through.
    pub cool_down: Duration,
    /// The longest cool-down: each failed probe doubles it up to this.
    pub max_cool_down: Duration,
    /// Origins tracked per tenant; beyond it, a new failing origin is tracked only if an older
    /// closed (or expired open) one can be forgotten.
    pub max_hosts_per_tenant: usize,
}

impl Default for BreakerConfig {
    fn default() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 5,
            cool_down: Duration::from_secs(10),
            max_cool_down: Duration::from_secs(60),
            max_hosts_per_tenant: 64,
        }
    }
}

/// Scheme, host and port: the unit the breaker judges. Never a path or a query, which may
/// carry secrets and which the logs must not show.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Origin(String);

impl Origin {
    pub(crate) fn of(url: &Url) -> Option<Origin> {
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        Some(Origin(format!(
            "{}://{}:{port}",
            url.scheme(),
            host.to_ascii_lowercase()
        )))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How one request that the breaker let through ended, for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The upstream answered with something other than 502, 503 or 504.
    Success,
    /// A transport failure (refused, reset, timed out) or a 502, 503 or 504.
    Failure,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed {
        failures: u32,
        last_failure: Instant,
    },
    Open {
        until: Instant,
        cool_down: Duration,
    },
    HalfOpen {
        probe: u64,
        cool_down: Duration,
    },
}

/// Why a request was refused: the breaker for its origin is open (or probing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) origin: Origin,
    /// How long until a probe may go through; at least a millisecond.
    pub(crate) retry_in: Duration,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} keeps failing; the circuit breaker refuses requests to it for {} ms",
            self.origin,
            self.retry_in.as_millis()
        )
    }
}

/// The process's breakers.
#[derive(Debug)]
pub(crate) struct Breakers {
    config: BreakerConfig,
    tenants: Mutex<HashMap<TenantId, HashMap<Origin, State>>>,
    next_probe: AtomicU64,
}

/// A request the breaker let through. Settled with its [`Outcome`]; dropped unsettled (the
/// request was refused by a limit or a policy check before it reached the upstream), it
/// counts as nothing, and a probe gives its turn to the next request.
#[derive(Debug)]
pub(crate) struct Ticket {
    breakers: Arc<Breakers>,
    tenant: TenantId,
    origin: Origin,
    probe: Option<u64>,
    settled: bool,
}

impl Ticket {
    pub(crate) fn settle(mut self, outcome: Outcome, now: Instant) {
        self.settled = true;
        self.breakers
            .record(&self.tenant, &self.origin, self.probe, outcome, now);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled
            && let Some(probe) = self.probe
        {
            self.breakers
                .release_probe(&self.tenant, &self.origin, probe, Instant::now());
        }
    }
}

impl Breakers {
    pub(crate) fn new(config: BreakerConfig) -> Breakers {
        Breakers {
            config,
            tenants: Mutex::new(HashMap::new()),
            next_probe: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TenantId, HashMap<Origin, State>>> {
        // The map stays consistent at every await-free step; a panic elsewhere cannot leave
        // it half-written.
        self.tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lets a request to `origin` through (with a ticket to settle) or refuses it.
    pub(crate) fn admit(
        self: &Arc<Self>,
        tenant: &TenantId,
        origin: Origin,
        now: Instant,
    ) -> Result<Option<Ticket>, Refused> {
        if self.config.failure_threshold == 0 {
            return Ok(None);
        }
        let mut tenants = self.lock();
        let state = tenants.get_mut(tenant).and_then(|t| t.get_mut(&origin));
        let probe = match state.as_deref().copied() {
            None | Some(State::Closed { .. }) => None,
            Some(State::Open { until, .. }) if until > now => {
                let retry_in = (until - now).max(Duration::from_millis(1));
                return Err(Refused { origin, retry_in });
            }
            Some(State::Open { cool_down, .. }) => {
                let probe = self.next_probe.fetch_add(1, Ordering::Relaxed);
                if let Some(state) = state {
                    *state = State::HalfOpen { probe, cool_down };
                }
                tracing::info!(tenant = %tenant, host = %origin, "circuit breaker half-open: probing");
                Some(probe)
            }
            Some(State::HalfOpen { .. }) => {
                // The probe decides; until it does, the base cool-down is the honest guess.
                let retry_in = self.config.cool_down.max(Duration::from_millis(1));
                return Err(Refused { origin, retry_in });
            }
        };
        drop(tenants);
        Ok(Some(Ticket {
            breakers: Arc::clone(self),
            tenant: tenant.clone(),
            origin,
            probe,
            settled: false,
        }))
    }

    fn record(
        &self,
        tenant: &TenantId,
        origin: &Origin,
        probe: Option<u64>,
        outcome: Outcome,
        now: Instant,
    ) {
        let config = self.config;
        let mut tenants = self.lock();
        let origins = tenants.entry(tenant.clone()).or_default();
        match (outcome, origins.get(origin).copied()) {
            (Outcome::Success, Some(State::Closed { .. })) => {
                origins.remove(origin);
            }
            (Outcome::Success, Some(State::HalfOpen { probe: current, .. }))
                if probe == Some(current) =>
            {
                origins.remove(origin);
                tracing::info!(tenant = %tenant, host = %origin, "circuit breaker closed: the probe succeeded");
            }
            // Untracked when there is no room (see `make_room`).
            (Outcome::Failure, None) if make_room(origins, config.max_hosts_per_tenant, now) => {
                let state = closed_or_open(1, now, config);
                origins.insert(origin.clone(), state);
                log_if_opened(tenant, origin, state, 1);
            }
            (Outcome::Failure, Some(State::Closed { failures, .. })) => {
                let failures = failures.saturating_add(1);
                let state = closed_or_open(failures, now, config);
                origins.insert(origin.clone(), state);
                log_if_opened(tenant, origin, state, failures);
            }
            (
                Outcome::Failure,
                Some(State::HalfOpen {
                    probe: current,
                    cool_down,
                }),
            ) if probe == Some(current) => {
                let cool_down = cool_down.saturating_mul(2).min(config.max_cool_down);
                origins.insert(
                    origin.clone(),
                    State::Open {
                        until: now + cool_down,
                        cool_down,
                    },
                );
                tracing::info!(
                    tenant = %tenant,
                    host = %origin,
                    cool_down_ms = cool_down.as_millis() as u64,
                    "circuit breaker opened again: the probe failed"
                );
            }
            // Results of requests let through before the breaker opened, or while another
            // request probes, say nothing about the upstream now.
            _ => {}
        }
        if origins.is_empty() {
            tenants.remove(tenant);
        }
    }

    /// A probe that never reached the upstream: the next request probes instead.
    fn release_probe(&self, tenant: &TenantId, origin: &Origin, probe: u64, now: Instant) {
        let mut tenants = self.lock();
        if let Some(state) = tenants.get_mut(tenant).and_then(|t| t.get_mut(origin))
            && let State::HalfOpen {
                probe: current,
                cool_down,
            } = *state
            && current == probe
        {
            *state = State::Open {
                until: now,
                cool_down,
            };
        }
    }

    #[cfg(test)]
    fn tracked(&self, tenant: &TenantId) -> usize {
        self.lock().get(tenant).map_or(0, HashMap::len)
    }
}

fn closed_or_open(failures: u32, now: Instant, config: BreakerConfig) -> State {
    if failures >= config.failure_threshold {
        State::Open {
            until: now + config.cool_down,
            cool_down: config.cool_down,
        }
    } else {
        State::Closed {
            failures,
            last_failure: now,
        }
    }
}

fn log_if_opened(tenant: &TenantId, origin: &Origin, state: State, failures: u32) {
    if let State::Open { cool_down, .. } = state {
        tracing::info!(
            tenant = %tenant,
            host = %origin,
            failures,
            cool_down_ms = cool_down.as_millis() as u64,
            "circuit breaker opened"
        );
    }
}

/// Makes room for one more origin: at the cap, forgets the closed origin whose last failure is
/// oldest, else an open one whose cool-down is over (its next request would only probe).
/// Returns false when every tracked origin is open or probing: the new one goes untracked.
fn make_room(origins: &mut HashMap<Origin, State>, cap: usize, now: Instant) -> bool {
    if origins.len() < cap {
        return true;
    }
    let oldest_closed = origins
        .iter()
        .filter_map(|(origin, state)| match state {
            State::Closed { last_failure, .. } => Some((*last_failure, origin)),
            _ => None,
        })
        .min_by_key(|(at, _)| *at)
        .map(|(_, origin)| origin.clone());
    let victim = oldest_closed.or_else(|| {
        origins
            .iter()
            .find(|(_, state)| matches!(state, State::Open { until, .. } if *until <= now))
            .map(|(origin, _)| origin.clone())
    });
    match victim {
        Some(origin) => {
            origins.remove(&origin);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: BreakerConfig = BreakerConfig {
        failure_threshold: 3,
        cool_down: Duration::from_secs(10),
        max_cool_down: Duration::from_secs(60),
        max_hosts_per_tenant: 4,
    };

    fn origin(host: &str) -> Origin {
        Origin::of(&Url::parse(&format!("https://{host}/path?token=secret")).unwrap()).unwrap()
    }

    fn fail(b: &Arc<Breakers>, tenant: &TenantId, host: &str, now: Instant) {
        if let Some(ticket) = b.admit(tenant, origin(host), now).unwrap() {
            ticket.settle(Outcome::Failure, now);
        }
    }

    #[test]
    fn the_origin_is_scheme_host_and_port_without_path_or_query() {
        assert_eq!(
            origin("API.example.test").to_string(),
            "https://api.example.test:443"
        );
        let url = Url::parse("http://a.test:8080/x?key=v").unwrap();
        assert_eq!(Origin::of(&url).unwrap().to_string(), "http://a.test:8080");
    }

    #[test]
    fn opens_after_the_threshold_probes_once_after_the_cool_down_and_closes_on_success() {
        let b = Arc::new(Breakers::new(CONFIG));
        let t = TenantId::from("t1");
        let now = Instant::now();
        for _ in 0..2 {
            fail(&b, &t, "a.test", now);
        }
        assert!(b.admit(&t, origin("a.test"), now).is_ok(), "still closed");
        fail(&b, &t, "a.test", now);
        let refused = b.admit(&t, origin("a.test"), now).unwrap_err();
        assert_eq!(refused.retry_in, CONFIG.cool_down);
        let later = now + CONFIG.cool_down;
        let probe = b.admit(&t, origin("a.test"), later).unwrap().unwrap();
        assert!(
            b.admit(&t, origin("a.test"), later).is_err(),
            "only one probe at a time"
        );
        probe.settle(Outcome::Success, later);
        assert!(b.admit(&t, origin("a.test"), later).is_ok());
        assert_eq!(b.tracked(&t), 0, "a closed breaker is forgotten");
    }

    #[test]
    fn a_success_resets_the_count_of_consecutive_failures() {
        let b = Arc::new(Breakers::new(CONFIG));
        let t = TenantId::from("t1");
        let now = Instant::now();
        fail(&b, &t, "a.test", now);
        fail(&b, &t, "a.test", now);
        let ticket = b.admit(&t, origin("a.test"), now).unwrap().unwrap();
        ticket.settle(Outcome::Success, now);
        fail(&b, &t, "a.test", now);
        fail(&b, &t, "a.test", now);
        assert!(b.admit(&t, origin("a.test"), now).is_ok());
    }

    #[test]
    fn a_failed_probe_doubles_the_cool_down_up_to_the_cap() {
        let b = Arc::new(Breakers::new(CONFIG));
        let t = TenantId::from("t1");
        let mut now = Instant::now();
        for _ in 0..3 {
            fail(&b, &t, "a.test", now);
        }
        for expected in [20, 40, 60, 60] {
            now += Duration::from_secs(60);
            let probe = b.admit(&t, origin("a.test"), now).unwrap().unwrap();
            probe.settle(Outcome::Failure, now);
            let refused = b.admit(&t, origin("a.test"), now).unwrap_err();
            assert_eq!(refused.retry_in, Duration::from_secs(expected));
        }
    }

    #[test]
    fn an_unsettled_probe_gives_its_turn_to_the_next_request() {
        let b = Arc::new(Breakers::new(CONFIG));
        let t = TenantId::from("t1");
        let now = Instant::now();
        for _ in 0..3 {
            fail(&b, &t, "a.test", now);
        }
        let later = now + CONFIG.cool_down;
        drop(b.admit(&t, origin("a.test"), later).unwrap());
        let probe = b.admit(&t, origin("a.test"), later + Duration::from_secs(1));
        assert!(probe.unwrap().is_some());
    }

    #[test]
    fn results_of_requests_sent_before_it_opened_change_nothing() {
        let b = Arc::new(Breakers::new(CONFIG));
        let t = TenantId::from("t1");
        let now = Instant::now();
        let early = b.admit(&t, origin("a.test"), now).unwrap().unwrap();
        for _ in 0..3 {
            fail(&b, &t, "a.test", now);
        }
        early.settle(Outcome::Success, now);
        assert!(b.admit(&t, origin("a.test"), now).is_err(), "still open");
    }

    #[test]
    fn one_tenants_failures_never_open_another_tenants_breaker() {
        let b = Arc::new(Breakers::new(CONFIG));
        let (t1, t2) = (TenantId::from("t1"), TenantId::from("t2"));
        let now = Instant::now();
        for _ in 0..3 {
            fail(&b, &t1, "a.test", now);
        }
        assert!(b.admit(&t1, origin("a.test"), now).is_err());
        assert!(b.admit(&t2, origin("a.test"), now).is_ok());
    }

    #[test]
    fn each_tenant_tracks_at_most_the_cap_of_origins() {
        let b = Arc::new(Breakers::new(CONFIG));
        let t = TenantId::from("t1");
        let now = Instant::now();
        // Closed origins with one failure each: the oldest is forgotten for a newer one.
        for i in 0..100 {
            fail(
                &b,
                &t,
                &format!("h{i}.test"),
                now + Duration::from_millis(i),
            );
        }
        assert_eq!(b.tracked(&t), CONFIG.max_hosts_per_tenant);
        // All open: a new failing origin goes untracked rather than evicting an open breaker.
        let b = Arc::new(Breakers::new(CONFIG));
        for i in 0..4 {
            for _ in 0..3 {
                fail(&b, &t, &format!("o{i}.test"), now);
            }
        }
        for _ in 0..3 {
            fail(&b, &t, "new.test", now);
        }
        assert_eq!(b.tracked(&t), 4);
        assert!(b.admit(&t, origin("o0.test"), now).is_err());
        assert!(b.admit(&t, origin("new.test"), now).is_ok());
    }

    #[test]
    fn a_zero_threshold_turns_the_breaker_off() {
        let b = Arc::new(Breakers::new(BreakerConfig {
            failure_threshold: 0,
            ..CONFIG
        }));
        let t = TenantId::from("t1");
        assert!(
            b.admit(&t, origin("a.test"), Instant::now())
                .unwrap()
                .is_none()
        );
    }
}
