//! Triggers as the API sees them: creating, pausing, rotating and deleting webhook and cron
//! triggers, and receiving a webhook delivery.
//!
//! A delivery is verified before anything is stored or charged: a request that fails
//! verification costs an HMAC (and two reads when its trigger is not cached), and leaves nothing
//! but this process's counter. Only then come the per-trigger rate limit (after
//! verification, so nobody without the secret can spend a sender's budget), the tenant's
//! `runs_per_hour` and the queue limits. The delivery id is the run's idempotency key: a
//! redelivery answers with the run it made.
//!
//! The trigger and its workflow are read through a cache ([`HookTargets`]): this process's
//! own writes (pause, rotate, delete, a new workflow version) take effect at once, another
//! process's within [`airlock_core::fresh::TTL`].

use std::collections::BTreeMap;
use std::sync::Arc;

use airlock_core::fresh::FreshCache;
use airlock_model::{Predicate, TenantId};
use airlock_secrets::Secret;
use airlock_store::{RunRecord, StoreError, TriggerRecord, WorkflowRecord};
use airlock_triggers::schedule::{MAX_CATCH_UP, MissedTicks, Schedule};
use airlock_triggers::webhook::{self, Scheme, VerifyError};
use serde_json::{Value, json};

use crate::{Runs, RunsError};

/// Live triggers one tenant may have.
pub const MAX_TRIGGERS_PER_TENANT: u32 = 100;
/// Deliveries a webhook trigger accepts per minute unless its creator says otherwise.
pub const DEFAULT_RATE_PER_MINUTE: u32 = 6_000;
/// The highest per-trigger rate a tenant may set.
pub const MAX_RATE_PER_MINUTE: u32 = 600_000;
/// How long the previous secret keeps verifying after a rotation, unless told otherwise.
pub const DEFAULT_ROTATION_OVERLAP_S: u64 = 86_400;
/// The longest overlap a rotation may ask for.
pub const MAX_ROTATION_OVERLAP_S: u64 = 7 * 86_400;
/// Late ticks fired under `missed_ticks: all` unless the creator says otherwise.
pub const DEFAULT_MISSED_CAP: u32 = 10;

/// What a new trigger is.
#[derive(Debug, Clone)]
pub enum TriggerSpec {
    Webhook {
        scheme: Scheme,
        /// Supplied by the tenant (Stripe generates its own signing secrets); generated
        /// when `None`.
        secret: Option<Secret>,
        rate_per_minute: Option<u32>,
    },
    Cron {
        expression: String,
        time_zone: String,
        missed_ticks: MissedTicks,
        missed_cap: Option<u32>,
        overlap: Overlap,
    },
}

/// Whether a cron tick starts a run while the trigger's previous run is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    #[default]
    Allow,
    Skip,
}

impl Overlap {
    /// The serde spelling, which is also how it is stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Allow => "allow",
            Overlap::Skip => "skip",
        }
    }

    pub fn parse(text: &str) -> Option<Overlap> {
        [Overlap::Allow, Overlap::Skip]
            .into_iter()
            .find(|o| o.as_str() == text)
    }
}

/// A trigger with what is computed from it.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub record: TriggerRecord,
    /// Cron: the next fire times (up to 5), none while paused.
    pub next_fire_times: Vec<i64>,
    /// Webhook: deliveries refused by verification in this process since it started.
    pub rejected_here: u64,
}

/// A trigger just created or rotated, with the secret shown this once.
#[derive(Debug)]
pub struct WithSecret {
    pub trigger: Trigger,
    pub secret: Option<Secret>,
}

/// What a delivery to a webhook trigger needs: the trigger, its filter and its workflow.
#[derive(Debug)]
pub(crate) struct HookTarget {
    trigger: TriggerRecord,
    filter: Option<Predicate>,
    workflow: WorkflowRecord,
}

/// The cache of [`HookTarget`]s by trigger id.
pub(crate) type HookTargets = FreshCache<String, Arc<HookTarget>>;

/// Memory the cached hook targets may take: a workflow definition can be 64 KiB, and each
/// trigger of it holds its own copy.
const HOOK_TARGETS_BYTES: u64 = 64 << 20;

pub(crate) fn hook_targets(clock: Arc<dyn airlock_core::Clock>) -> HookTargets {
    FreshCache::weighed(clock, HOOK_TARGETS_BYTES, |target: &Arc<HookTarget>| {
        let trigger = &target.trigger;
        let size = 1024
            + target.workflow.definition.len()
            + trigger.secret.as_ref().map_or(0, String::len)
            + trigger.expression.as_ref().map_or(0, String::len)
            + 4 * trigger.filter.as_ref().map_or(0, String::len)
            + target.filter.as_ref().map_or(0, |f| {
                f.patterns() * 2 * airlock_model::predicate::REGEX_SIZE_LIMIT
            });
        u32::try_from(size).unwrap_or(u32::MAX)
    })
}

/// A delivery accepted: the run it created, or the one an earlier delivery with its id did;
/// no run when the trigger's filter did not match it.
#[derive(Debug)]
pub struct Delivered {
    pub run: Option<RunRecord>,
    pub created: bool,
}

/// Why a delivery was refused, beyond the refusals every run creation has.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("no such hook")]
    NotFound,
    #[error("the request's signature does not verify: {0}")]
    Unverified(VerifyError),
    #[error("this trigger is paused")]
    Paused,
    #[error("this trigger accepts {limit} deliveries a minute; retry later")]
    RateLimited { limit: u32, retry_after_s: u64 },
    #[error(transparent)]
    Runs(#[from] RunsError),
}

impl Runs {
    /// Creates a trigger of a workflow. A webhook trigger's secret is returned this once.
    /// `filter`: the predicate a delivery must match to create a run; it reads only
    /// `/trigger/...` (there are no steps yet).
    pub async fn create_trigger(
        &self,
        tenant: &TenantId,
        workflow_id: &str,
        spec: TriggerSpec,
        filter: Option<&Predicate>,
    ) -> Result<WithSecret, RunsError> {
        let t = tenant.as_str();
        if let Some(pointer) = filter
            .into_iter()
            .flat_map(Predicate::pointers)
            .find(|p| *p != "/trigger" && !p.starts_with("/trigger/"))
        {
            return Err(RunsError::Invalid {
                field: "filter".into(),
                detail: format!("`{pointer}`: a filter reads the delivery, /trigger/..."),
            });
        }
        let id = format!("trg_{}", uuid::Uuid::new_v4().simple());
        let now = airlock_store::now_ms();
        let mut record = TriggerRecord {
            tenant_id: t.to_owned(),
            id: id.clone(),
            workflow_id: workflow_id.to_owned(),
            kind: String::new(),
            paused: false,
            scheme: None,
            secret: None,
            previous_until: None,
            rate_per_minute: None,
            expression: None,
            time_zone: None,
            missed_policy: None,
            missed_cap: None,
            overlap: None,
            filter: filter.map(|f| f.source().to_string()),
            next_fire_at: None,
            last_fired_at: None,
            last_run_id: None,
            fired: 0,
            missed: 0,
            skipped: 0,
            refused: 0,
            created_at: now,
            updated_at: now,
        };
        let mut shown = None;
        match spec {
            TriggerSpec::Webhook {
                scheme,
                secret,
                rate_per_minute,
            } => {
                let secret = choose_secret(scheme, secret)?;
                let rate = rate_per_minute.unwrap_or(DEFAULT_RATE_PER_MINUTE);
                if rate == 0 || rate > MAX_RATE_PER_MINUTE {
                    return Err(RunsError::Invalid {
                        field: "rate_per_minute".into(),
                        detail: format!("must be 1-{MAX_RATE_PER_MINUTE}"),
                    });
                }
                record.kind = "webhook".into();
                record.scheme = Some(scheme.as_str().into());
                record.secret = Some(self.seal_secrets(t, &id, &secret, None)?);
                record.rate_per_minute = Some(i64::from(rate));
                shown = Some(secret);
            }
            TriggerSpec::Cron {
                expression,
                time_zone,
                missed_ticks,
                missed_cap,
                overlap,
            } => {
                let schedule = parse_schedule(&expression, &time_zone)?;
                let cap = missed_cap.unwrap_or(DEFAULT_MISSED_CAP);
                if cap == 0 || cap > MAX_CATCH_UP {
                    return Err(RunsError::Invalid {
                        field: "missed_cap".into(),
                        detail: format!("must be 1-{MAX_CATCH_UP}"),
                    });
                }
                record.kind = "cron".into();
                record.expression = Some(schedule.expression().to_owned());
                record.time_zone = Some(schedule.time_zone().to_owned());
                record.missed_policy = Some(missed_ticks.as_str().into());
                record.missed_cap = Some(i64::from(cap));
                record.overlap = Some(overlap.as_str().into());
                record.next_fire_at = schedule.next_after(now);
            }
        }
        let record = self
            .pipeline
            .store()
            .create_trigger(&record, MAX_TRIGGERS_PER_TENANT)
            .await
            .map_err(RunsError::or_not_found("workflow"))?;
        self.pipeline.store().wake_scheduler();
        Ok(WithSecret {
            trigger: self.view(record),
            secret: shown,
        })
    }

    pub async fn trigger(&self, tenant: &TenantId, id: &str) -> Result<Trigger, RunsError> {
        let record = self
            .pipeline
            .store()
            .trigger(tenant.as_str(), id)
            .await
            .map_err(RunsError::or_not_found("trigger"))?;
        Ok(self.view(record))
    }

    pub async fn list_triggers(
        &self,
        tenant: &TenantId,
        workflow_id: Option<&str>,
    ) -> Result<Vec<Trigger>, RunsError> {
        let records = self
            .pipeline
            .store()
            .list_triggers(tenant.as_str(), workflow_id)
            .await?;
        Ok(records.into_iter().map(|r| self.view(r)).collect())
    }

    /// Pauses (`true`) or resumes a trigger. A resumed cron trigger fires from its next tick
    /// after now: the ticks of the pause are not caught up.
    pub async fn set_paused(
        &self,
        tenant: &TenantId,
        id: &str,
        paused: bool,
    ) -> Result<Trigger, RunsError> {
        let store = self.pipeline.store();
        let current = store
            .trigger(tenant.as_str(), id)
            .await
            .map_err(RunsError::or_not_found("trigger"))?;
        let next = match (&current.expression, &current.time_zone, paused) {
            (Some(expression), Some(zone), false) => {
                let schedule = parse_schedule(expression, zone)?;
                // Never before a tick already fired, whatever this process's clock says.
                let from = airlock_store::now_ms().max(current.last_fired_at.unwrap_or(0));
                schedule.next_after(from)
            }
            _ => current.next_fire_at,
        };
        let record = store
            .set_trigger_paused(tenant.as_str(), id, paused, next)
            .await
            .map_err(RunsError::or_not_found("trigger"))?;
        self.hook_targets.invalidate(&record.id);
        store.wake_scheduler();
        Ok(self.view(record))
    }

    /// Gives a webhook trigger a new secret (`secret`, or a generated one); the previous one
    /// keeps verifying for `overlap_s` seconds, so senders can switch without losing a
    /// delivery.
    pub async fn rotate_secret(
        &self,
        tenant: &TenantId,
        id: &str,
        secret: Option<Secret>,
        overlap_s: Option<u64>,
    ) -> Result<WithSecret, RunsError> {
        let t = tenant.as_str();
        let store = self.pipeline.store();
        let current = store
            .trigger(t, id)
            .await
            .map_err(RunsError::or_not_found("trigger"))?;
        let (Some(scheme), Some(sealed)) = (
            current.scheme.as_deref().and_then(Scheme::parse),
            &current.secret,
        ) else {
            return Err(RunsError::Conflict(
                "only a webhook trigger has a secret to rotate".into(),
            ));
        };
        let overlap_s = overlap_s.unwrap_or(DEFAULT_ROTATION_OVERLAP_S);
        if overlap_s > MAX_ROTATION_OVERLAP_S {
            return Err(RunsError::Invalid {
                field: "overlap_seconds".into(),
                detail: format!("must be 0-{MAX_ROTATION_OVERLAP_S}"),
            });
        }
        let secret = choose_secret(scheme, secret)?;
        let old = self.open_secrets(t, id, sealed)?;
        let previous = old.get("current").filter(|_| overlap_s > 0);
        let until = previous.map(|_| {
            airlock_store::now_ms().saturating_add(i64::try_from(overlap_s * 1000).unwrap_or(0))
        });
        let fresh = self.seal_secrets(t, id, &secret, previous)?;
        let record = store
            .rotate_trigger_secret(t, id, sealed, &fresh, until)
            .await
            .map_err(|e| match e {
                airlock_store::StoreError::Conflict => RunsError::Conflict(
                    "the secret was rotated meanwhile; read the trigger and rotate again".into(),
                ),
                other => RunsError::or_not_found("trigger")(other),
            })?;
        // The old secret stops verifying here now, not within the cache's TTL.
        self.hook_targets.invalidate(&record.id);
        Ok(WithSecret {
            trigger: self.view(record),
            secret: Some(secret),
        })
    }

    pub async fn delete_trigger(&self, tenant: &TenantId, id: &str) -> Result<(), RunsError> {
        let deleted = self
            .pipeline
            .store()
            .delete_trigger(tenant.as_str(), id)
            .await
            .map_err(RunsError::or_not_found("trigger"));
        self.hook_targets.invalidate(&id.to_owned());
        deleted
    }

    /// Receives a delivery to `/hooks/{id}`: verify, then rate-limit, then create the run
    /// (or find the one this delivery id made). `now_s`: unix seconds, for the timestamp
    /// tolerance. `trace`: the delivery's span (under the sender's `traceparent`, if any),
    /// which the run joins.
    pub async fn receive_hook(
        &self,
        id: &str,
        headers: &http::HeaderMap,
        body: &[u8],
        now_s: i64,
        trace: &airlock_telemetry::TraceContext,
    ) -> Result<Delivered, HookError> {
        let Some(target) = self.hook_target(id).await? else {
            return Err(HookError::NotFound);
        };
        let trigger = &target.trigger;
        let (Some(scheme), Some(sealed)) = (
            trigger.scheme.as_deref().and_then(Scheme::parse),
            &trigger.secret,
        ) else {
            tracing::error!(trigger = %trigger.id, "a webhook trigger without a scheme or secret");
            return Err(RunsError::Core(airlock_core::CoreError::Internal).into());
        };
        let secrets = self.open_secrets(&trigger.tenant_id, &trigger.id, sealed)?;
        let now_ms = now_s.saturating_mul(1000);
        let mut candidates: Vec<&str> = Vec::with_capacity(2);
        if let Some(current) = secrets.get("current") {
            candidates.push(current.expose());
        }
        if let (Some(previous), Some(until)) = (secrets.get("previous"), trigger.previous_until)
            && until > now_ms
        {
            candidates.push(previous.expose());
        }
        let verified = match webhook::verify(scheme, &candidates, headers, body, now_s) {
            Ok(verified) => verified,
            Err(error) => {
                if error.is_server_fault() {
                    tracing::error!(trigger = %trigger.id, %error, "a stored webhook secret does not parse");
                    return Err(RunsError::Core(airlock_core::CoreError::Internal).into());
                }
                self.hook_counters.rejected(&trigger.id);
                return Err(HookError::Unverified(error));
            }
        };
        let key = format!("hook:{}:{}", trigger.id, verified.delivery_id);
        crate::check_idempotency_key(&key)?;
        let tenant = TenantId::new(trigger.tenant_id.clone());
        let limit = trigger
            .rate_per_minute
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(DEFAULT_RATE_PER_MINUTE);
        let refused = if trigger.paused {
            Err(HookError::Paused)
        } else {
            self.hook_rates
                .take(&trigger.id, limit, now_ms)
                .map_err(|retry_after_s| HookError::RateLimited {
                    limit,
                    retry_after_s,
                })
        };
        // The filter reads a delivery that is verified, for a trigger that is not paused,
        // within the trigger's rate: a flood of signed deliveries it drops is bounded like
        // any other. Dropped, it writes nothing and uses none of the tenant's hourly runs.
        if refused.is_ok()
            && let Some(filter) = &target.filter
        {
            // A suspended tenant's deliveries are refused as ever, filter or not.
            let quota = self
                .pipeline
                .quota(&trigger.tenant_id)
                .await
                .map_err(RunsError::from)?;
            if quota.suspended {
                return Err(RunsError::TenantSuspended(trigger.tenant_id.clone()).into());
            }
            let mut seen = hook_input(&verified, headers, body, now_ms);
            if let Value::Object(fields) = &mut seen {
                // The raw bytes are the run's to keep, not the filter's to scan.
                fields.remove("body_base64");
                fields.insert("headers".into(), filter_headers(headers));
            }
            let steps = BTreeMap::new();
            let context = airlock_model::predicate::Context::new(&seen, &steps);
            if !filter.eval(context) {
                return Ok(Delivered {
                    run: None,
                    created: false,
                });
            }
        }
        let request = crate::Keyed::delivery(body);
        let created = match refused {
            Ok(()) => {
                let input = hook_input(&verified, headers, body, now_ms);
                self.create_run(
                    &tenant,
                    &target.workflow,
                    &input,
                    Some(&key),
                    &request,
                    crate::Origin {
                        trigger_id: Some(&trigger.id),
                        trace: Some(trace),
                    },
                )
                .await
                .map_err(HookError::from)
            }
            Err(refused) => Err(refused),
        };
        match created {
            Ok((run, created)) => {
                if !created {
                    // A redelivery: it counts against nothing.
                    self.hook_rates.give_back(&trigger.id);
                }
                Ok(Delivered {
                    run: Some(run),
                    created,
                })
            }
            // The delivery id was taken by another body: never answered with that run.
            Err(reused @ HookError::Runs(RunsError::Conflict(_))) => {
                self.hook_rates.give_back(&trigger.id);
                Err(reused)
            }
            // A redelivery of an accepted delivery gets its run, whatever refused it now (the
            // trigger paused, its rate or the queue used up, the database busy): the sender
            // stops retrying. The run creation itself answers a taken key before any tenant
            // limit, so only these refusals come before the key was looked at.
            Err(
                refused @ (HookError::Paused | HookError::RateLimited { .. } | HookError::Runs(_)),
            ) => match self.existing_run(&tenant, &key, &request).await {
                Ok(Some(run)) => {
                    if matches!(refused, HookError::Runs(_)) {
                        // It took a token before the creation refused it.
                        self.hook_rates.give_back(&trigger.id);
                    }
                    Ok(Delivered {
                        run: Some(run),
                        created: false,
                    })
                }
                Ok(None) | Err(_) => Err(refused),
            },
            Err(other) => Err(other),
        }
    }

    /// The live webhook trigger `id` with its workflow's current version, from the cache
    /// (fresh within [`airlock_core::fresh::TTL`]; this process's writes invalidate it).
    /// `None` for an id no live webhook trigger has; that answer is not cached.
    async fn hook_target(&self, id: &str) -> Result<Option<Arc<HookTarget>>, RunsError> {
        let store = self.pipeline.store();
        let load = async {
            let trigger = store.hook_trigger(id).await?.ok_or(StoreError::NotFound)?;
            let workflow = store
                .workflow(&trigger.tenant_id, &trigger.workflow_id, None)
                .await?;
            let filter = trigger
                .filter
                .as_deref()
                .map(|text| {
                    serde_json::from_str::<Predicate>(text)
                        .map_err(|e| StoreError::Corrupt(format!("trigger filter: {e}")))
                })
                .transpose()?;
            Ok::<_, StoreError>(Arc::new(HookTarget {
                trigger,
                filter,
                workflow,
            }))
        };
        match self.hook_targets.get_or_load(id.to_owned(), load).await {
            Ok(target) => Ok(Some(target)),
            Err(StoreError::NotFound) => Ok(None),
            Err(other) => Err(other.into()),
        }
    }

    fn view(&self, record: TriggerRecord) -> Trigger {
        // The stored next tick, then the schedule's: `next_fire_at` may be a tick still due.
        let next_fire_times = match (
            &record.expression,
            &record.time_zone,
            record.next_fire_at,
            record.paused,
        ) {
            (Some(expression), Some(zone), Some(next), false) => Schedule::parse(expression, zone)
                .map(|s| {
                    let mut times = vec![next];
                    times.extend(s.upcoming(next, 4));
                    times
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let rejected_here = self.hook_counters.get(&record.id);
        Trigger {
            record,
            next_fire_times,
            rejected_here,
        }
    }

    /// One envelope sealed to `(tenant, id)` holding `current` and, during a rotation's
    /// overlap, `previous`: a webhook trigger's secrets, and a dead-letter webhook's.
    pub(crate) fn seal_secrets(
        &self,
        tenant: &str,
        id: &str,
        current: &Secret,
        previous: Option<&Secret>,
    ) -> Result<String, RunsError> {
        let mut secrets = BTreeMap::new();
        secrets.insert("current".to_owned(), current.clone());
        if let Some(previous) = previous {
            secrets.insert("previous".to_owned(), previous.clone());
        }
        Ok(self.pipeline.credentials().seal(tenant, id, &secrets)?)
    }

    pub(crate) fn open_secrets(
        &self,
        tenant: &str,
        id: &str,
        sealed: &str,
    ) -> Result<BTreeMap<String, Secret>, RunsError> {
        Ok(self
            .pipeline
            .credentials()
            .open_sealed(tenant, id, sealed)?)
    }
}

/// The secret a webhook trigger gets: the one given (checked for its scheme), or a new one.
/// Stripe makes its endpoints' signing secrets itself, so a Stripe trigger's must be given.
fn choose_secret(scheme: Scheme, given: Option<Secret>) -> Result<Secret, RunsError> {
    match given {
        Some(secret) => {
            webhook::check_secret(scheme, secret.expose()).map_err(|e| RunsError::Invalid {
                field: "secret".into(),
                detail: e.to_string(),
            })?;
            Ok(secret)
        }
        None if scheme == Scheme::Stripe => Err(RunsError::Invalid {
            field: "secret".into(),
            detail: "a Stripe trigger needs the endpoint's signing secret (`whsec_…`, from \
                     Stripe's dashboard)"
                .into(),
        }),
        None => Ok(Secret::new(webhook::generate_secret())),
    }
}

fn parse_schedule(expression: &str, time_zone: &str) -> Result<Schedule, RunsError> {
    Schedule::parse(expression, time_zone).map_err(|e| RunsError::Invalid {
        field: if matches!(
            e,
            airlock_triggers::schedule::ScheduleError::UnknownTimeZone(_)
        ) {
            "time_zone".into()
        } else {
            "expression".into()
        },
        detail: e.to_string(),
    })
}

/// The run's trigger input: the raw body (base64, byte for byte) and, when it is JSON, the
/// parsed value, with the delivery's id and content type.
fn hook_input(
    verified: &webhook::Verified,
    headers: &http::HeaderMap,
    body: &[u8],
    received_at: i64,
) -> Value {
    use base64::Engine as _;
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    json!({
        "source": "webhook",
        "delivery_id": verified.delivery_id,
        "received_at": received_at,
        "content_type": content_type,
        "json": serde_json::from_slice::<Value>(body).ok(),
        "body_base64": base64::engine::general_purpose::STANDARD.encode(body),
    })
}

/// Headers a filter reads at `/trigger/headers/<lower-case name>`: the senders' event and
/// delivery headers on this list, nothing else (a proxy's or a sender's secret headers are
/// never a filter's to probe), the last value of each, up to 256 bytes. The signature
/// schemes sign the body, not these: a filter on them is routing, not authentication.
const FILTER_HEADERS: [&str; 12] = [
    "content-type",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "x-github-event",
    "x-github-delivery",
    "x-github-hook-installation-target-type",
    "x-gitlab-event",
    "x-event-key",
    "x-shopify-topic",
    "x-event-type",
    "x-webhook-event",
];

fn filter_headers(headers: &http::HeaderMap) -> Value {
    let mut seen = serde_json::Map::new();
    for name in FILTER_HEADERS {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok())
            && value.len() <= 256
        {
            seen.insert(name.to_owned(), Value::String(value.to_owned()));
        }
    }
    Value::Object(seen)
}

/// Per-process counts of refused deliveries, by trigger: a refused request writes nothing.
#[derive(Debug, Default)]
pub(crate) struct HookCounters {
    rejected: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl HookCounters {
    /// Bounded: past this many triggers the oldest counts are not kept apart (ids of real
    /// triggers only reach here, after the lookup).
    const MAX: usize = 10_000;

    fn rejected(&self, id: &str) {
        let mut map = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= Self::MAX && !map.contains_key(id) {
            map.clear();
        }
        *map.entry(id.to_owned()).or_default() += 1;
    }

    fn get(&self, id: &str) -> u64 {
        let map = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).copied().unwrap_or(0)
    }
}
