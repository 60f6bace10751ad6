//! One invocation: request and outcome types, and the flow from input checks through a fresh
//! instance to a classified, scrubbed result with its stats.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::Runtime;
use super::component::LoadedComponent;
use super::contract::GuestErrorKind;
use super::error::{ErrorKind, InvokeError};
use super::guest_state::{About, GuestState, GuestStateAccess};
use super::logs::{LogSink, Logs};
use super::state::StateStore;
use crate::outbound::trace::Exchange;
use crate::outbound::{Credential, Grant, LimitHit, Scrubber};
use airlock_contract::ConnectorErrorKind;
use airlock_model::CompiledAction;
use airlock_model::auth::AuthSpec;
use airlock_model::{ConnectionId, StateScope, TenantId, TenantLimits};

/// Which export to call.
#[derive(Debug, Clone)]
pub enum Call {
    /// `invoke(action, input)`; `input` is JSON text.
    Action { action: String, input: String },
    /// `test-connection()`.
    TestConnection,
}

/// Everything one invocation needs besides the component.
pub struct InvokeRequest {
    pub tenant: TenantId,
    /// The connection whose credential this is: the guest's state is scoped by it.
    pub connection: Option<ConnectionId>,
    pub call: Call,
    pub limits: TenantLimits,
    pub credential: Credential,
    /// Where the guest's `state` import reads and writes; `None` uses the runtime's
    /// in-memory store.
    pub state: Option<Arc<dyn StateStore>>,
    /// A durable run's step key, sent upstream as `Idempotency-Key` (see
    /// [`crate::outbound::Grant::idempotency_key`]).
    pub idempotency_key: Option<String>,
    /// The connection's non-secret config (an object; `None`: `{}`): the guest reads it, and
    /// the manifest's `{config.NAME}` hosts resolve with it.
    pub config: Option<Arc<Value>>,
    /// Keep every HTTP exchange in the outcome (`testAction`).
    pub trace: bool,
    /// The span the call runs under (a run's step, or the API request): the invocation's
    /// span is its child, and each upstream request's `traceparent` a child of that.
    pub trace_context: Option<airlock_telemetry::TraceContext>,
}

impl InvokeRequest {
    pub fn action(
        tenant: impl Into<TenantId>,
        action: impl Into<String>,
        input: impl Into<String>,
    ) -> Self {
        Self::new(
            tenant,
            Call::Action {
                action: action.into(),
                input: input.into(),
            },
        )
    }

    pub fn test_connection(tenant: impl Into<TenantId>) -> Self {
        Self::new(tenant, Call::TestConnection)
    }

    fn new(tenant: impl Into<TenantId>, call: Call) -> Self {
        Self {
            tenant: tenant.into(),
            connection: None,
            call,
            limits: TenantLimits::default(),
            credential: Credential::None,
            state: None,
            idempotency_key: None,
            config: None,
            trace: false,
            trace_context: None,
        }
    }

    pub fn with_limits(mut self, limits: TenantLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The connection the credential comes from; scopes the guest's state to it.
    pub fn with_connection(mut self, connection: ConnectionId) -> Self {
        self.connection = Some(connection);
        self
    }

    pub fn with_credential(mut self, credential: Credential) -> Self {
        self.credential = credential;
        self
    }

    pub fn with_state(mut self, state: Arc<dyn StateStore>) -> Self {
        self.state = Some(state);
        self
    }

    pub fn with_idempotency_key(mut self, key: Option<String>) -> Self {
        self.idempotency_key = key;
        self
    }

    pub fn with_trace(mut self) -> Self {
        self.trace = true;
        self
    }

    pub fn with_config(mut self, config: Arc<Value>) -> Self {
        self.config = Some(config);
        self
    }
}

/// What an invocation consumed. Present on success and on every failure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub fuel_used: u64,
    pub duration_us: u64,
    pub peak_memory_bytes: u64,
    pub outbound_requests: u32,
    pub outbound_denied: u32,
    pub outbound_bytes_out: u64,
    pub outbound_bytes_in: u64,
    /// The limit that stopped or refused the guest, if any, even when the guest recovered.
    pub limit_hit: Option<ErrorKind>,
}

/// The result of an invocation: output or a named error, plus logs and stats either way.
#[derive(Debug, Clone, Serialize)]
pub struct InvokeOutcome {
    pub result: Result<Value, InvokeError>,
    pub logs: Logs,
    pub stats: Stats,
    /// The HTTP exchanges, when the request asked for them ([`InvokeRequest::with_trace`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<Exchange>,
}

impl InvokeOutcome {
    /// The outcome of a call refused before any guest ran: no logs, no stats.
    pub fn refused(error: InvokeError) -> Self {
        Self {
            result: Err(error),
            logs: Logs::default(),
            stats: Stats::default(),
            trace: Vec::new(),
        }
    }

    fn refused_after(error: InvokeError, started: Instant) -> Self {
        let mut refused = Self::refused(error);
        refused.stats.duration_us = elapsed_us(started);
        refused
    }
}

fn elapsed_us(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// How the guest call ended, before output checks.
enum Ended {
    Returned(Result<String, super::contract::ConnectorError>),
    /// Instantiation failed: before any guest code ran its export.
    NotStarted(wasmtime::Error),
    /// The call failed: a trap, or the guest broke the component contract.
    Failed(wasmtime::Error),
    TimedOut,
}

/// A call checked against the manifest and the tenant's limits, not yet run: nothing has
/// been charged, no slot taken, no guest started. [`Runtime::prepare`] makes one,
/// [`Runtime::run`] runs it. Callers that charge a run (the pipeline) do it in between, so a
/// request refused here (unknown action, invalid input) costs the tenant nothing.
pub struct Prepared<'c> {
    component: &'c LoadedComponent,
    request: InvokeRequest,
    action: Option<&'c CompiledAction>,
    timeout: Duration,
    tenant_hosts: Vec<airlock_model::HostPattern>,
    declared_hosts: Vec<airlock_model::HostPattern>,
    /// The manifest's auth with the connection's config filled in.
    auth: AuthSpec,
    about: About,
}

impl std::fmt::Debug for Prepared<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("digest", &self.component.digest)
            .field("tenant", &self.request.tenant)
            .finish_non_exhaustive()
    }
}

impl Prepared<'_> {
    /// Sets the credential: the pipeline decrypts (and refreshes) it only once the run is
    /// admitted.
    pub fn set_credential(&mut self, credential: Credential) {
        self.request.credential = credential;
    }
}

impl Runtime {
    /// Runs one call in a fresh instance of `component` under `request.limits`:
    /// [`Runtime::prepare`], then [`Runtime::run`].
    pub async fn invoke(
        &self,
        component: &LoadedComponent,
        request: InvokeRequest,
    ) -> InvokeOutcome {
        let started = Instant::now();
        match self.prepare(component, request) {
            Ok(prepared) => self.run(prepared).await,
            Err(error) => InvokeOutcome::refused_after(error, started),
        }
    }

    /// Checks the call before any instance exists: the action exists, the input fits its
    /// size limit, is JSON and matches the action's schema, and the tenant's host policy
    /// parses. Refusals are [`ErrorKind::UnknownAction`], [`ErrorKind::InvalidInput`] and
    /// (a stored policy that does not parse) [`ErrorKind::Internal`].
    pub fn prepare<'c>(
        &self,
        component: &'c LoadedComponent,
        request: InvokeRequest,
    ) -> Result<Prepared<'c>, InvokeError> {
        let (action, timeout) = check_call(component, &request)?;
        let tenant_hosts = request
            .limits
            .host_patterns()
            .map_err(|error| InvokeError::new(ErrorKind::Internal, error.to_string()))?;
        let empty = Value::Object(Default::default());
        let config = request.config.as_deref().unwrap_or(&empty);
        // The connection's config was checked when saved, but against the version current
        // then; a later version may read it differently.
        let declared_hosts = component.manifest.hosts_for(config).map_err(|error| {
            InvokeError::new(
                ErrorKind::InvalidInput,
                format!("the connection's config does not fit this connector's hosts: {error}"),
            )
        })?;
        let auth = match component.manifest.auth_for(config) {
            Ok(auth) => auth,
            // Without a connection there is no credential to place, so nothing to resolve.
            Err(_) if request.config.is_none() => AuthSpec::None,
            Err(error) => {
                return Err(InvokeError::new(
                    ErrorKind::InvalidInput,
                    format!("the connection's config does not fit this connector's auth: {error}"),
                ));
            }
        };
        let plan = component
            .plans
            .as_ref()
            .and_then(|plans| match &request.call {
                Call::Action { action, .. } => plans.actions.get(action).cloned(),
                Call::TestConnection => plans.test.clone(),
            });
        let about = About {
            config: match &request.config {
                Some(config) => Arc::from(config.to_string()),
                None => Arc::from(""),
            },
            plan,
        };
        Ok(Prepared {
            component,
            request,
            action,
            timeout,
            tenant_hosts,
            declared_hosts,
            auth,
            about,
        })
    }

    /// Waits for a pool slot (refused as [`ErrorKind::Overloaded`] when the tenant's queue or
    /// the pool's is full, or the wait times out), then runs the prepared call in a fresh
    /// instance.
    pub async fn run(&self, prepared: Prepared<'_>) -> InvokeOutcome {
        let Prepared {
            component,
            request,
            action,
            timeout,
            tenant_hosts,
            declared_hosts,
            auth,
            about,
        } = prepared;
        // Stats measure the run: the slot wait, the instance and the call.
        let started = Instant::now();
        let permit = match self
            .admission
            .enter(request.tenant.as_str(), request.limits.max_concurrent_runs)
            .await
        {
            Ok(permit) => permit,
            Err(error) => {
                self.metrics()
                    .invocation(request.tenant.as_str(), Some(error.kind.as_str()));
                return InvokeOutcome::refused_after(error, started);
            }
        };
        let metrics = self.metrics().clone();
        metrics.admission_wait(started.elapsed());
        let tenant = request.tenant.clone();
        let mut span = request.trace_context.as_ref().map(|parent| {
            let mut span = metrics.spans().start(
                "connector.invoke",
                airlock_telemetry::SpanKind::Internal,
                parent,
            );
            span.set("airlock.tenant", tenant.as_str());
            span.set(
                "airlock.connector",
                component.manifest.manifest().name.as_str(),
            );
            span.set(
                "airlock.action",
                match &request.call {
                    Call::Action { action, .. } => action.as_str(),
                    Call::TestConnection => "test-connection",
                },
            );
            span
        });

        let manifest = component.manifest.manifest();
        let limits = &request.limits;
        let mut session = self.gate.session(Grant {
            declared_hosts,
            tenant_hosts,
            auth,
            credential: request.credential,
            limits: limits.outbound(),
            idempotency_key: request
                .idempotency_key
                .as_deref()
                .and_then(|key| reqwest::header::HeaderValue::from_str(key).ok()),
            tenant: Some(request.tenant.clone()),
            trace: span.as_ref().map(|span| span.context().clone()),
        });
        if request.trace {
            session.enable_trace();
        }
        let scrubber = session.scrubber();
        let logs = LogSink::new(limits.max_log_bytes, limits.max_log_lines);
        let state = GuestStateAccess {
            store: request.state.unwrap_or_else(|| self.default_state.clone()),
            scope: StateScope {
                tenant: request.tenant,
                connector: manifest.name.as_str().into(),
                connection: request.connection,
            },
            max_value_bytes: limits.max_state_value_bytes,
            max_keys: limits.max_state_keys,
        };
        let mut guest = GuestState::new(
            limits.memory_bytes,
            logs.clone(),
            Some(session),
            Some(state),
        );
        guest.about = about;
        let mut store = self.new_store(guest, limits.fuel);

        let run = async {
            let instance = match component.pre.instantiate_async(&mut store).await {
                Ok(instance) => instance,
                Err(error) => return Ended::NotStarted(error),
            };
            let returned = match &request.call {
                Call::Action { action, input } => {
                    instance.call_invoke(&mut store, action, input).await
                }
                Call::TestConnection => instance
                    .call_test_connection(&mut store)
                    .await
                    .map(|r| r.map(|()| "null".to_owned())),
            };
            match returned {
                Ok(returned) => Ended::Returned(returned),
                Err(error) => Ended::Failed(error),
            }
        };
        let ended = tokio::time::timeout(timeout, run)
            .await
            .unwrap_or(Ended::TimedOut);

        let mut stats = Stats::default();
        if self.options.engine.metered() {
            stats.fuel_used = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        }
        let guest = store.data();
        stats.peak_memory_bytes = guest.limiter.peak_bytes as u64;
        let mut limit_hit = guest.limit_hit;
        let mut retry_after = None;
        let mut breaker_refusal = None;
        if let Some(session) = &guest.outbound {
            retry_after = session.retry_after();
            breaker_refusal = session.breaker_refusal();
            let outbound = session.stats();
            stats.outbound_requests = outbound.requests;
            stats.outbound_denied = outbound.denied;
            stats.outbound_bytes_out = outbound.bytes_out;
            stats.outbound_bytes_in = outbound.bytes_in;
            if let Some(hit) = session.limit_hit() {
                limit_hit.get_or_insert(match hit {
                    LimitHit::HttpDenied(_) => ErrorKind::HttpDenied,
                    LimitHit::OutboundLimit(_) => ErrorKind::OutboundLimit,
                });
            }
        }
        if guest.limiter.refused {
            limit_hit.get_or_insert(ErrorKind::MemoryLimit);
        }
        let memory_refused = guest.limiter.refused;
        let trace = store
            .data_mut()
            .outbound
            .as_mut()
            .map(|session| session.take_trace())
            .unwrap_or_default();
        // Return the slot to the pool before the permit lets the next invocation in.
        drop(store);
        drop(permit);

        let mut result = match ended {
            Ended::TimedOut => Err(InvokeError::new(
                ErrorKind::Timeout,
                format!("the invocation ran longer than {} ms", timeout.as_millis()),
            )),
            Ended::NotStarted(error) => Err(classify_failure(&error, memory_refused, false)),
            Ended::Failed(error) => Err(classify_failure(&error, memory_refused, true)),
            Ended::Returned(Err(guest_error)) => Err(connector_error(
                guest_error,
                limit_hit,
                breaker_refusal.is_some(),
                &scrubber,
            )),
            Ended::Returned(Ok(output)) => check_output(action, output, limits, &scrubber),
        };
        if let Err(error) = &mut result
            && error.retryable
        {
            // An open breaker's cool-down is the earliest a retry can reach the upstream.
            let wait = match error.kind {
                ErrorKind::UpstreamUnavailable => retry_after.or(breaker_refusal),
                _ => retry_after,
            };
            error.retry_after_ms =
                wait.map(|wait| u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        }
        stats.limit_hit = settle_limit_hit(&result, limit_hit);
        stats.duration_us = elapsed_us(started);
        metrics.invocation(
            tenant.as_str(),
            result.as_ref().err().map(|error| error.kind.as_str()),
        );
        if let Some(hit) = stats.limit_hit {
            metrics.limit_hit(tenant.as_str(), hit.as_str());
        }
        if let (Some(span), Err(error)) = (&mut span, &result) {
            span.fail(error.kind.as_str());
        }
        drop(span);
        let mut logs = logs.finish();
        for line in &mut logs.lines {
            line.message = scrubber.scrub_str(&line.message);
        }
        InvokeOutcome {
            result,
            logs,
            stats,
            trace,
        }
    }
}

/// Checks the call against the manifest before any instance exists. Returns the action (for
/// output checks) and the wall-clock budget.
fn check_call<'a>(
    component: &'a LoadedComponent,
    request: &InvokeRequest,
) -> Result<(Option<&'a CompiledAction>, Duration), InvokeError> {
    let limits = &request.limits;
    let tenant_timeout = limits.timeout();
    let Call::Action { action, input } = &request.call else {
        return Ok((None, tenant_timeout));
    };
    let compiled = component
        .manifest
        .action(action)
        .ok_or_else(|| InvokeError::unknown_action(action))?;
    if input.len() as u64 > limits.max_input_bytes {
        return Err(InvokeError::new(
            ErrorKind::InvalidInput,
            format!(
                "input is {} bytes, more than the {} allowed",
                input.len(),
                limits.max_input_bytes
            ),
        ));
    }
    let value: Value = serde_json::from_str(input).map_err(|e| {
        InvokeError::new(ErrorKind::InvalidInput, format!("input is not JSON: {e}"))
    })?;
    compiled.check_input(&value).map_err(|violation| {
        InvokeError::new(ErrorKind::InvalidInput, violation.message).at(violation.pointer)
    })?;
    let timeout = compiled.spec.timeout_ms.map_or(tenant_timeout, |ms| {
        tenant_timeout.min(Duration::from_millis(ms))
    });
    Ok((Some(compiled), timeout))
}

/// The one rule for `stats.limit_hit`: when the invocation failed with a limit's kind, that
/// limit stopped the guest and is the one reported, whatever the guest met and recovered from
/// before (a refused state write, then a memory limit: `memory_limit` in both places).
/// Otherwise (success, the guest's own error, a trap) it is the first refusal the guest met.
fn settle_limit_hit(
    result: &Result<Value, InvokeError>,
    first_refusal: Option<ErrorKind>,
) -> Option<ErrorKind> {
    match result {
        Err(error) if error.kind.is_limit() => Some(error.kind),
        _ => first_refusal,
    }
}

/// How a failed instantiation (`in_call == false`) or call ended, as the guest's fault or the
/// host's.
///
/// A wasmtime error that is not a trap during the call is the guest breaking the component
/// contract: the host lifting what the guest handed over failed (a string that is not UTF-8,
/// a pointer or length outside its memory, an invalid discriminant), in a return value or in
/// the arguments of an import. Our imports report their own failures to the guest as values,
/// never as errors, so the host failures there are the few [`host_failure`] names.
fn classify_failure(error: &wasmtime::Error, memory_refused: bool, in_call: bool) -> InvokeError {
    if host_failure(error) {
        return InvokeError::new(
            ErrorKind::Internal,
            format!("the invocation failed in the host: {error:#}"),
        );
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::OutOfFuel) => InvokeError::new(
            ErrorKind::FuelExhausted,
            "the guest used all the fuel of its invocation",
        ),
        // A refused growth usually surfaces as an allocation-failure abort (`unreachable`):
        // report the limit, not the symptom.
        Some(_) | None if memory_refused => InvokeError::new(
            ErrorKind::MemoryLimit,
            format!(
                "the guest trapped after its memory limit refused a growth: {}",
                trap_message(error)
            ),
        ),
        Some(trap) => InvokeError::new(ErrorKind::GuestTrap, format!("the guest trapped: {trap}")),
        None if in_call && error.is::<std::str::Utf8Error>() => InvokeError::new(
            ErrorKind::InvalidOutput,
            format!(
                "the guest handed the host a string that is not UTF-8 (as its output or \
                     an import's argument): {error:#}"
            ),
        ),
        None if in_call => InvokeError::new(
            ErrorKind::GuestTrap,
            format!("the guest broke the component contract: {error:#}"),
        ),
        None => InvokeError::new(
            ErrorKind::Internal,
            format!("the instance could not be created: {error:#}"),
        ),
    }
}

/// Whether the host failed whatever the guest did: the pool had no room (slots, stacks,
/// memories), the host is out of memory, or wasmtime reports a bug of its own.
fn host_failure(error: &wasmtime::Error) -> bool {
    error.is::<wasmtime::PoolConcurrencyLimitError>()
        || error.is::<wasmtime::OutOfMemory>()
        || error.is::<wasmtime::WasmtimeBug>()
}

fn trap_message(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{error:#}"),
    }
}

fn connector_error(
    error: super::contract::ConnectorError,
    limit_hit: Option<ErrorKind>,
    breaker_refused: bool,
    scrubber: &Scrubber,
) -> InvokeError {
    // A limit the host enforced explains the failure better than whatever the guest made of
    // the refusal; the guest's own kind stays available in `connector_kind`. So does an open
    // circuit breaker, whose kind is retryable whatever the guest said: the upstream, not the
    // input, was the trouble.
    let kind = match (limit_hit, error.kind) {
        (
            Some(kind @ (ErrorKind::HttpDenied | ErrorKind::OutboundLimit | ErrorKind::StateLimit)),
            _,
        ) => kind,
        (_, GuestErrorKind::HttpDenied) => ErrorKind::HttpDenied,
        _ if breaker_refused => ErrorKind::UpstreamUnavailable,
        _ => ErrorKind::ConnectorError,
    };
    InvokeError {
        kind,
        message: scrubber.scrub_str(&error.message),
        pointer: None,
        connector_kind: Some(ConnectorErrorKind::from(error.kind).as_str().to_owned()),
        retryable: match kind {
            ErrorKind::ConnectorError => error.retryable,
            other => other.retryable(),
        },
        retry_after_ms: None,
    }
}

fn check_output(
    action: Option<&CompiledAction>,
    output: String,
    limits: &TenantLimits,
    scrubber: &Scrubber,
) -> Result<Value, InvokeError> {
    if output.len() as u64 > limits.max_output_bytes {
        return Err(InvokeError::new(
            ErrorKind::OutputTooLarge,
            format!(
                "output is {} bytes, more than the {} allowed",
                output.len(),
                limits.max_output_bytes
            ),
        ));
    }
    let output = scrubber.scrub_str(&output);
    let value: Value = serde_json::from_str(&output).map_err(|e| {
        InvokeError::new(ErrorKind::InvalidOutput, format!("output is not JSON: {e}"))
    })?;
    if let Some(action) = action {
        action.check_output(&value).map_err(|violation| {
            InvokeError::new(ErrorKind::InvalidOutput, violation.message).at(violation.pointer)
        })?;
    }
    Ok(value)
}
