//! Sending dead-letter notices: the loop that claims due notices from the outbox and POSTs
//! each to its tenant's webhook, and the one-off test send.
//!
//! At least once: a notice is marked delivered only after a 2xx, and a process killed
//! mid-send leaves it due again when its claim's lease is over. Each notice keeps its
//! `webhook-id` across attempts, so a receiver drops a repeat. Attempts back off on a fixed
//! schedule (5 s to 8 h, ±20% jitter, 10 attempts over about 16 hours), then the notice fails
//! and stays listed with its last error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_model::hosts::{HostPattern, RequestHost};
use airlock_model::{OutboundLimits, TenantId};
use airlock_runtime::outbound::{Grant, GuestRequest};
use airlock_store::{DeadLetterHook, NoticeOutcome, NoticeRecord, StoreError};
use airlock_telemetry::NoticeAttempt;
use airlock_triggers::webhook::{self, Scheme, standard};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::background::Task;
use crate::{Runs, RunsError};

/// Notices one process sends at once, and claims of one tenant at once: a tenant with
/// thousands of dead runs, or a receiver that hangs, holds at most a few slots, and the others
/// go on being claimed and sent as each slot frees.
const SLOTS: usize = 32;
const PER_TENANT: usize = 4;
/// The largest response body read from a receiver (its body is not used).
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;
/// Redirect hops a receiver may send a notice through (each checked like the first).
const MAX_REQUESTS: u32 = 4;
/// Test sends a tenant may make a minute, in each process.
pub const TEST_SENDS_PER_MINUTE: u32 = 6;

/// When and how notices are sent.
#[derive(Debug, Clone)]
pub struct NoticeOptions {
    /// How often an idle process looks for due notices.
    pub poll: Duration,
    /// Wall-clock bound on one attempt (connecting, redirects, the response).
    pub timeout: Duration,
    /// The wait after each failed attempt; its length plus one is the number of attempts.
    pub backoff: Vec<Duration>,
}

impl Default for NoticeOptions {
    fn default() -> NoticeOptions {
        const MIN: u64 = 60;
        NoticeOptions {
            poll: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            backoff: [
                5,
                30,
                2 * MIN,
                10 * MIN,
                30 * MIN,
                60 * MIN,
                120 * MIN,
                240 * MIN,
                480 * MIN,
            ]
            .map(Duration::from_secs)
            .to_vec(),
        }
    }
}

impl NoticeOptions {
    /// How long a claim holds a notice: past any attempt's end, so a live sender's notice
    /// is never claimed twice, and short enough that a killed one's comes back soon.
    fn lease_ms(&self) -> i64 {
        i64::try_from(self.timeout.as_millis().saturating_mul(3)).unwrap_or(i64::MAX)
    }
}

/// What a test send came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestDelivery {
    /// The `webhook-id` it was sent with.
    pub id: String,
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    /// Why it was not delivered, when it was not (a non-2xx status, a refusal, a timeout).
    pub error: Option<String>,
}

/// The running sender of this process.
pub struct Notices(Task);

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notices").finish_non_exhaustive()
    }
}

impl Notices {
    pub fn start(runs: Runs, options: NoticeOptions) -> Notices {
        Notices(Task::spawn(|stop| send_due(runs, options, stop)))
    }

    /// Stops claiming; the sends in flight finish (each bounded by the timeout).
    pub async fn shutdown(self) {
        self.0.stop().await;
    }
}

/// Claims due notices into free slots and sends each in a task of its own, until `stop`;
/// then waits for the sends in flight (each bounded by the timeout).
async fn send_due(runs: Runs, options: NoticeOptions, stop: CancellationToken) {
    let options = Arc::new(options);
    let slots = Arc::new(Semaphore::new(SLOTS));
    let sending: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let tasks = TaskTracker::new();
    loop {
        if stop.is_cancelled() {
            break;
        }
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                _ = stop.cancelled() => break,
                permit = Arc::clone(&slots).acquire_owned() => drop(permit),
            }
            continue;
        }
        // Tenants with a claim's worth in flight wait for those; the rest are claimed.
        let busy: Vec<String> = lock(&sending)
            .iter()
            .filter(|(_, n)| **n >= PER_TENANT)
            .map(|(tenant, _)| tenant.clone())
            .collect();
        let skip: Vec<&str> = busy.iter().map(String::as_str).collect();
        let now = runs.pipeline.clock().now_ms();
        let claimed = runs
            .pipeline
            .store()
            .claim_notices(
                now,
                options.lease_ms(),
                PER_TENANT as i64,
                free as i64,
                &skip,
            )
            .await;
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "claiming dead-letter notices failed");
                Vec::new()
            }
        };
        let full = claimed.len() >= free;
        for notice in claimed {
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                // Only this loop takes permits, and it claimed no more than were free.
                break;
            };
            *lock(&sending).entry(notice.tenant_id.clone()).or_default() += 1;
            let (runs, options, sending) =
                (runs.clone(), Arc::clone(&options), Arc::clone(&sending));
            tasks.spawn(async move {
                runs.send_claimed(&notice, &options).await;
                let mut sending = lock(&sending);
                if let Some(n) = sending.get_mut(&notice.tenant_id) {
                    *n -= 1;
                    if *n == 0 {
                        sending.remove(&notice.tenant_id);
                    }
                }
                drop(permit);
            });
        }
        // Slots left over say nothing more is due (for now): wait a poll.
        if !full {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(options.poll) => {}
            }
        }
    }
    tasks.close();
    tasks.wait().await;
}

fn lock(
    sending: &Mutex<HashMap<String, usize>>,
) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    sending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A `run.dead` (or test) event as it is sent: the Standard Webhooks payload shape.
fn event(kind: &str, at_ms: i64, data: Value) -> Vec<u8> {
    serde_json::json!({
        "type": kind,
        "timestamp": airlock_model::clock::rfc3339_ms(at_ms),
        "data": data,
    })
    .to_string()
    .into_bytes()
}

impl Runs {
    /// Sends one claimed notice and writes what the attempt came to.
    async fn send_claimed(&self, notice: &NoticeRecord, options: &NoticeOptions) {
        let outcome = self.attempt(notice, options).await;
        let attempt = match &outcome {
            NoticeOutcome::Delivered { .. } => NoticeAttempt::Delivered,
            NoticeOutcome::Retry { .. } => NoticeAttempt::Retried,
            NoticeOutcome::Failed { .. } => NoticeAttempt::Failed,
        };
        self.metrics().notice_attempt(attempt);
        if let NoticeOutcome::Failed { error, .. } = &outcome {
            tracing::warn!(tenant = %notice.tenant_id, notice = %notice.id, %error, "dead-letter notice given up");
        }
        let written = self
            .pipeline
            .store()
            .finish_notice(&notice.tenant_id, &notice.id, notice.attempts, &outcome)
            .await;
        match written {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(notice = %notice.id, "a notice's claim ended (its lease ran out, or the run died again) before its outcome was written");
            }
            Err(error) => {
                // The claim's lease brings the notice back: sent again, never lost.
                tracing::warn!(notice = %notice.id, %error, "writing a notice's outcome failed");
            }
        }
    }

    /// Sends a `run.dead.test` event to the tenant's webhook now, once, and says how it
    /// went. Nothing is stored. At most [`TEST_SENDS_PER_MINUTE`] a minute per tenant.
    pub async fn test_dead_letter_hook(
        &self,
        tenant: &TenantId,
        options: &NoticeOptions,
    ) -> Result<TestDelivery, RunsError> {
        let hook = match self
            .pipeline
            .store()
            .dead_letter_hook(tenant.as_str())
            .await
        {
            Err(StoreError::NotFound) => {
                return Err(RunsError::NotFound {
                    what: "dead-letter webhook",
                });
            }
            other => other?,
        };
        let now = self.pipeline.clock().now_ms();
        // A test send costs the tenant nothing else: without this, a loop of them would be
        // free traffic from our addresses to any host its policy allows.
        let bucket = format!("dead-letter-test:{}", tenant.as_str());
        if let Err(retry_after_s) = self.hook_rates.take(&bucket, TEST_SENDS_PER_MINUTE, now) {
            return Err(RunsError::RateLimited {
                detail: format!(
                    "at most {TEST_SENDS_PER_MINUTE} test sends a minute; try again in \
                     {retry_after_s} s"
                ),
                retry_after_s,
            });
        }
        let id = format!("test_{}", uuid::Uuid::new_v4().simple());
        let body = event(
            "run.dead.test",
            now,
            serde_json::json!({"message": "a test of the dead-letter webhook; no run died"}),
        );
        let (status, error) = match self.send(&hook, &id, body, options).await {
            Sent::Delivered(status) => (Some(status), None),
            Sent::NotDelivered { status, error } => (status, Some(error)),
        };
        Ok(TestDelivery { id, status, error })
    }

    /// One attempt of one notice, and what follows it.
    async fn attempt(&self, notice: &NoticeRecord, options: &NoticeOptions) -> NoticeOutcome {
        let hook = match self
            .pipeline
            .store()
            .dead_letter_hook(&notice.tenant_id)
            .await
        {
            Ok(hook) => hook,
            Err(StoreError::NotFound) => {
                return NoticeOutcome::Failed {
                    status: None,
                    error: "the tenant has no dead-letter webhook".into(),
                };
            }
            Err(error) => {
                return self.retry(
                    notice,
                    options,
                    None,
                    format!("reading the webhook: {error}"),
                );
            }
        };
        let data: Value = serde_json::from_str(&notice.payload).unwrap_or(Value::Null);
        let body = event("run.dead", notice.created_at, data);
        match self.send(&hook, &notice.id, body, options).await {
            Sent::Delivered(status) => NoticeOutcome::Delivered {
                status: i64::from(status),
            },
            Sent::NotDelivered { status, error } => {
                self.retry(notice, options, status.map(i64::from), error)
            }
        }
    }

    /// A failed attempt: due again after the schedule's wait, or failed when none is left.
    fn retry(
        &self,
        notice: &NoticeRecord,
        options: &NoticeOptions,
        status: Option<i64>,
        error: String,
    ) -> NoticeOutcome {
        let done = usize::try_from(notice.attempts.max(1) - 1).unwrap_or(usize::MAX);
        let Some(wait) = options.backoff.get(done) else {
            return NoticeOutcome::Failed { status, error };
        };
        let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        // ±20%, so notices of one outage do not all come back in the same second.
        let spread = wait_ms / 5;
        let jitter = i64::try_from(getrandom::u64().unwrap_or(0) % (2 * spread as u64 + 1))
            .unwrap_or(0)
            - spread;
        let at = self
            .pipeline
            .clock()
            .now_ms()
            .saturating_add(wait_ms.saturating_add(jitter));
        NoticeOutcome::Retry { at, status, error }
    }

    /// POSTs `body` to the hook's URL, signed with its secret (and the previous one during a
    /// rotation's overlap), through the outbound gate under the tenant's host policy.
    async fn send(
        &self,
        hook: &DeadLetterHook,
        id: &str,
        body: Vec<u8>,
        options: &NoticeOptions,
    ) -> Sent {
        let not_delivered = |error: String| Sent::NotDelivered {
            status: None,
            error,
        };
        let hosts = match self.pipeline.tenant_hosts(&hook.tenant_id).await {
            Ok(hosts) => hosts,
            Err(error) => return not_delivered(format!("reading the tenant's policy: {error}")),
        };
        let gate = self.pipeline.runtime().gate();
        let url = match gate.check_host_url(&hook.url, &hosts) {
            Ok(url) => url,
            Err(reason) => return not_delivered(format!("refused: {reason}")),
        };
        let Some(host) = RequestHost::of(&url) else {
            return not_delivered("refused: the URL has no host".into());
        };
        let headers = match self.signed_headers(hook, id, &body) {
            Ok(headers) => headers,
            Err(error) => return not_delivered(error),
        };
        let mut session = gate.session(Grant {
            declared_hosts: vec![HostPattern::Exact(host.name)],
            tenant_hosts: hosts,
            tenant: Some(TenantId::new(&hook.tenant_id)),
            limits: OutboundLimits {
                max_requests: MAX_REQUESTS,
                max_response_body_bytes: MAX_RESPONSE_BYTES,
                max_total_bytes_in: MAX_RESPONSE_BYTES * u64::from(MAX_REQUESTS),
                request_timeout: options.timeout,
                ..OutboundLimits::default()
            },
            ..Grant::default()
        });
        let request = GuestRequest {
            method: "POST".into(),
            url: url.to_string(),
            headers,
            body: Some(body),
        };
        match session.send(request).await {
            Ok(response) if (200..300).contains(&response.status) => {
                Sent::Delivered(response.status)
            }
            Ok(response) => Sent::NotDelivered {
                status: Some(response.status),
                error: format!("the webhook answered HTTP {}", response.status),
            },
            Err(error) => not_delivered(error.to_string()),
        }
    }

    /// The Standard Webhooks headers: `webhook-signature` holds one `v1,` signature per
    /// secret that signs now.
    fn signed_headers(
        &self,
        hook: &DeadLetterHook,
        id: &str,
        body: &[u8],
    ) -> Result<Vec<(String, String)>, String> {
        let secrets = self.open_hook(hook).map_err(|error| {
            tracing::error!(tenant = %hook.tenant_id, %error, "a dead-letter webhook's secret does not open");
            "the webhook's secret cannot be read".to_owned()
        })?;
        let now = self.pipeline.clock().now_ms();
        let previous = secrets
            .get("previous")
            .filter(|_| hook.previous_until.is_some_and(|until| until > now));
        let timestamp = now.div_euclid(1000);
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        let mut signatures = Vec::new();
        for secret in secrets.get("current").into_iter().chain(previous) {
            let signed = webhook::sign(
                Scheme::StandardWebhooks,
                secret.expose(),
                id,
                timestamp,
                body,
            )
            .map_err(|error| format!("the webhook's secret does not sign: {error}"))?;
            for (name, value) in signed {
                if name == standard::SIGNATURE_HEADER {
                    signatures.push(value);
                } else if !headers.iter().any(|(n, _)| n == name.as_str()) {
                    headers.push((name.as_str().to_owned(), value));
                }
            }
        }
        if signatures.is_empty() {
            return Err("the webhook has no secret".into());
        }
        headers.push((standard::SIGNATURE_HEADER.to_owned(), signatures.join(" ")));
        Ok(headers)
    }
}

enum Sent {
    Delivered(u16),
    NotDelivered { status: Option<u16>, error: String },
}
