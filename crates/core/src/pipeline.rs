//! [`Pipeline`]: the shared state, and [`Pipeline::invoke`].

use std::sync::Arc;

use airlock_model::{ConnectionId, LimitCaps, TenantId, TenantQuota};
use airlock_runtime::outbound::Credential;
use airlock_runtime::{
    Call, ErrorKind, InvokeError, InvokeOutcome, InvokeRequest, LoadError, Runtime,
    SharedComponent, StateStore,
};
use airlock_secrets::Keyring;
use airlock_store::{ConnectionRecord, ConnectorRecord, RunAdmission, Store};
use tokio_util::task::TaskTracker;

use crate::credentials::Credentials;
use crate::hot_rows::HotRows;
use crate::oauth::RefreshLocks;
use crate::state::DbStateStore;
use crate::{CoreError, local};
use airlock_model::clock::{Clock, SystemClock};

/// Everything the pipeline is built from.
pub struct PipelineOptions {
    pub store: Store,
    pub runtime: Arc<Runtime>,
    pub keyring: Keyring,
    /// Where to reload the keyring from when another process rotated it.
    pub keys_path: Option<std::path::PathBuf>,
    /// The operator's caps on tenant limits.
    pub caps: LimitCaps,
    pub clock: Arc<dyn Clock>,
}

impl PipelineOptions {
    pub fn new(store: Store, runtime: Arc<Runtime>, keyring: Keyring) -> Self {
        let caps = LimitCaps {
            memory_bytes: runtime.options().engine.max_memory_bytes,
            ..LimitCaps::default()
        };
        Self {
            store,
            runtime,
            keyring,
            keys_path: None,
            caps,
            clock: Arc::new(SystemClock),
        }
    }
}

/// The pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) state_store: Arc<DbStateStore>,
    pub(crate) credentials: Credentials,
    pub(crate) caps: LimitCaps,
    pub(crate) clock: Arc<dyn Clock>,
    /// Names this process as the holder of OAuth2 refresh leases in the database.
    pub(crate) instance_id: String,
    pub(crate) refresh_locks: RefreshLocks,
    /// One read-and-load of a component's bytes per digest at a time (see `component`).
    pub(crate) loading: airlock_runtime::KeyedLocks<String>,
    pub(crate) hot: HotRows,
    pub(crate) tasks: TaskTracker,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

/// Whether an invocation counts against the tenant's hourly runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// An action run: counted once its checks pass.
    Run,
    /// A connection test: not counted.
    Free,
}

/// One invocation as a caller asks for it.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub tenant: TenantId,
    /// The connector's name; `None`: the connector of `connection` (test-connection).
    pub connector: Option<String>,
    /// A version to run; `None`: the newest not deprecated.
    pub version: Option<String>,
    pub connection: Option<ConnectionId>,
    pub call: Call,
    pub charge: Charge,
    /// A wall-clock budget below the tenant's `timeout_ms` (a workflow step's timeout).
    pub timeout_ms: Option<u64>,
    /// A durable run's step key, sent upstream as `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// The span the call runs under (a run's step, or the API request): the invocation's
    /// span is its child, and its requests carry `traceparent`s under that.
    pub trace_context: Option<airlock_telemetry::TraceContext>,
}

/// The guest ran: its outcome (success or a guest-side failure), and which version ran.
#[derive(Debug)]
pub struct Ran {
    pub connector: Arc<ConnectorRecord>,
    pub outcome: InvokeOutcome,
}

impl Pipeline {
    pub fn new(options: PipelineOptions) -> Self {
        let PipelineOptions {
            store,
            runtime,
            keyring,
            keys_path,
            caps,
            clock,
        } = options;
        Self {
            inner: Arc::new(Inner {
                state_store: Arc::new(DbStateStore::new(store.clone())),
                store,
                runtime,
                credentials: Credentials::new(keyring, keys_path),
                caps,
                instance_id: format!("airlock-{}", uuid::Uuid::new_v4().simple()),
                refresh_locks: RefreshLocks::default(),
                loading: airlock_runtime::KeyedLocks::default(),
                hot: HotRows::new(clock.clone()),
                clock,
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// For reads (listings, single rows). Writes that change what invocations read go
    /// through the pipeline's own methods, which keep its caches in step.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    pub fn caps(&self) -> &LimitCaps {
        &self.inner.caps
    }

    pub fn credentials(&self) -> &Credentials {
        &self.inner.credentials
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// The tenant's outbound host policy, as stored now: what the host's own requests for
    /// it (an OAuth2 refresh, a dead-letter notice) are held to.
    pub async fn tenant_hosts(
        &self,
        tenant: &str,
    ) -> Result<Vec<airlock_model::HostPattern>, CoreError> {
        let quota = self.inner.store.tenant_quota(tenant).await?;
        quota.runtime.host_patterns().map_err(|error| {
            tracing::error!(%error, tenant, "a stored tenant policy does not parse");
            CoreError::Internal
        })
    }

    /// The clock behind quotas and cache freshness (a test's manual clock, or the system's).
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    /// Stops taking background work and waits for what is running (OAuth2 refreshes, whose
    /// rotated refresh tokens must reach the database).
    pub async fn shutdown(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// The tenant's limits and quotas: an operator's change through this process applies to
    /// the next invocation; through another process, within [`crate::HOT_ROW_TTL`].
    pub async fn quota(&self, tenant: &str) -> Result<TenantQuota, CoreError> {
        let load = self.inner.store.tenant_quota(tenant);
        self.inner
            .hot
            .quota(tenant, load)
            .await
            .map_err(CoreError::or_not_found("tenant"))
    }

    /// The connector version `version`, or the current one (through the hot rows).
    pub async fn connector(
        &self,
        tenant: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<Arc<ConnectorRecord>, CoreError> {
        let store = &self.inner.store;
        match version {
            Some(version) => store
                .resolved_connector_version(tenant, name, version)
                .await
                .map(Arc::new),
            None => {
                let load = store.resolved_current_connector(tenant, name);
                self.inner.hot.current_connector(tenant, name, load).await
            }
        }
        .map_err(CoreError::or_not_found(if version.is_some() {
            "connector version"
        } else {
            "connector"
        }))
    }

    pub async fn connection(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Arc<ConnectionRecord>, CoreError> {
        let load = self.inner.store.connection(tenant, id);
        self.inner
            .hot
            .connection(tenant, id, load)
            .await
            .map_err(CoreError::or_not_found("connection"))
    }

    /// The loaded component of one of the tenant's connector versions: the runtime's cache,
    /// or the stored bytes (compiled once per digest by the runtime's artifact cache).
    pub async fn component(
        &self,
        tenant: &str,
        record: &ConnectorRecord,
    ) -> Result<SharedComponent, CoreError> {
        let runtime = &self.inner.runtime;
        if let Some(component) = runtime.cached(&record.digest) {
            return Ok(component);
        }
        // Every worker that meets a component this process has not loaded (after a start,
        // or an eviction) would read its bytes and compile it: the first does, the others
        // find it cached once their turn comes.
        let _turn = self.inner.loading.lock(&record.digest).await;
        if let Some(component) = runtime.cached(&record.digest) {
            return Ok(component);
        }
        let bytes = self
            .inner
            .store
            .component_bytes(tenant, &record.digest)
            .await
            .map_err(|error| match error {
                airlock_store::StoreError::NotFound => {
                    tracing::error!(digest = %record.digest, "a connector version's component bytes are missing");
                    CoreError::Internal
                }
                other => other.into(),
            })?;
        runtime.load(&bytes).await.map_err(|e| match e {
            LoadError::Busy => CoreError::Overloaded { retry_after_s: 5 },
            e => {
                tracing::error!(error = %e, digest = %record.digest, "a stored component no longer loads");
                CoreError::Internal
            }
        })
    }

    /// Runs one invocation: see the crate documentation for the order of its steps.
    pub async fn invoke(&self, invocation: Invocation) -> Result<Ran, CoreError> {
        self.invoke_with(invocation, false, None).await
    }

    /// Runs the connector's `test-connection` with a connection as it would be after a change
    /// that is not saved yet (`PATCH /v1/connections/{id}` with `test`). A new credential
    /// (`new_credential`) is used as given: an OAuth2 token is not refreshed, since a refresh
    /// writes the row. A kept one is refreshed as for any invocation.
    pub async fn test_candidate(
        &self,
        tenant: TenantId,
        candidate: ConnectionRecord,
        new_credential: bool,
        trace_context: Option<airlock_telemetry::TraceContext>,
    ) -> Result<Ran, CoreError> {
        let invocation = Invocation {
            tenant,
            connector: None,
            version: None,
            connection: None,
            call: Call::TestConnection,
            charge: Charge::Free,
            timeout_ms: None,
            idempotency_key: None,
            trace_context,
        };
        self.invoke_with(
            invocation,
            false,
            Some((Arc::new(candidate), new_credential)),
        )
        .await
    }

    /// [`Pipeline::invoke`], keeping every HTTP exchange in the outcome (`testAction`):
    /// requests as sent with the credential masked, responses as the guest got them.
    pub async fn invoke_traced(&self, invocation: Invocation) -> Result<Ran, CoreError> {
        self.invoke_with(invocation, true, None).await
    }

    /// `candidate`: a connection not saved yet, used in place of `invocation.connection`, and
    /// whether its credential is new (used as given, never refreshed).
    async fn invoke_with(
        &self,
        invocation: Invocation,
        trace: bool,
        candidate: Option<(Arc<ConnectionRecord>, bool)>,
    ) -> Result<Ran, CoreError> {
        let Invocation {
            tenant,
            connector,
            version,
            connection,
            call,
            charge,
            timeout_ms,
            idempotency_key,
            trace_context,
        } = invocation;
        let t = tenant.as_str();
        let quota = self.quota(t).await?;
        let as_given = candidate.as_ref().is_some_and(|(_, new)| *new);
        let connection = match (&connection, candidate) {
            (_, Some((candidate, _))) => Some(candidate),
            (Some(id), None) => Some(self.connection(t, id.as_str()).await?),
            (None, None) => None,
        };
        let name = match (&connector, &connection) {
            (Some(name), _) => name.as_str(),
            (None, Some(connection)) => connection.connector.as_str(),
            (None, None) => {
                return Err(CoreError::Invalid {
                    field: "connector",
                    detail: "name a connector or a connection".into(),
                });
            }
        };
        let record = self.connector(t, name, version.as_deref()).await?;
        if let Some(connection) = &connection
            && connection.connector != record.name
        {
            return Err(CoreError::Invalid {
                field: "connection",
                detail: format!(
                    "connection `{}` belongs to connector `{}`",
                    connection.id, connection.connector
                ),
            });
        }
        let state_store: Arc<dyn StateStore> = self.inner.state_store.clone();
        let mut limits = quota.runtime.clone();
        if let Some(timeout_ms) = timeout_ms {
            limits.timeout_ms = limits.timeout_ms.min(timeout_ms);
        }
        let action = match &call {
            Call::Action { action, .. } => Some(action.clone()),
            Call::TestConnection => None,
        };
        let mut request = match call {
            Call::Action { action, input } => InvokeRequest::action(tenant.clone(), action, input),
            Call::TestConnection => InvokeRequest::test_connection(tenant.clone()),
        }
        .with_limits(limits)
        .with_state(state_store)
        .with_idempotency_key(idempotency_key);
        request.trace_context = trace_context;
        if trace {
            request = request.with_trace();
        }
        if let Some(connection) = &connection {
            request = request
                .with_connection(ConnectionId::new(&connection.id))
                .with_config(connection.config.clone());
        }
        // Checks first: a request refused by them costs the tenant nothing. With the component
        // in memory, every check runs before the charge. Without it, loading it runs the
        // guest's `manifest()` and takes a slot: only the checks the stored manifest answers
        // (the action exists) come first, the load is charged, and a request the remaining
        // checks refuse is refunded. `charged_for_load` is `Some` once charged that way.
        let (component, charged_for_load) = match self.inner.runtime.cached(&record.digest) {
            Some(component) => (component, None),
            None => {
                if let Some(action) = &action
                    && !record.manifest.actions.iter().any(|a| &a.name == action)
                {
                    return Err(local::refusal(InvokeError::unknown_action(action)));
                }
                let charged = self.charge(t, &quota, charge).await?;
                match self.component(t, &record).await {
                    Ok(component) => (component, Some(charged)),
                    Err(error) => {
                        self.refund(t, charged);
                        return Err(error);
                    }
                }
            }
        };
        let mut prepared = match self.inner.runtime.prepare(&component, request) {
            Ok(prepared) => prepared,
            Err(refused) => {
                self.refund(t, charged_for_load.flatten());
                return Err(local::refusal(refused));
            }
        };
        let charged = match charged_for_load {
            Some(charged) => charged,
            None => self.charge(t, &quota, charge).await?,
        };
        let credential = match &connection {
            Some(connection) if as_given => {
                let secrets = self.inner.credentials.open(t, connection)?;
                crate::credentials::credential_from(connection, &secrets)
            }
            Some(connection) => {
                self.invocation_credential(&tenant, connection, &record.manifest.auth)
                    .await?
            }
            None => Credential::None,
        };
        prepared.set_credential(credential);
        let outcome = self.inner.runtime.run(prepared).await;
        if let Err(error) = &outcome.result
            && error.kind == ErrorKind::Overloaded
        {
            // No slot: no guest ran, and the run is taken back.
            self.refund(t, charged);
        }
        let outcome = local::ran(outcome).map_err(local::refusal)?;
        Ok(Ran {
            connector: record,
            outcome,
        })
    }

    /// Counts the run against the tenant's hour (`Charge::Run`); returns the hour charged.
    pub async fn charge(
        &self,
        tenant: &str,
        quota: &TenantQuota,
        charge: Charge,
    ) -> Result<Option<i64>, CoreError> {
        match charge {
            Charge::Free => Ok(None),
            Charge::Run => match self
                .inner
                .store
                .admit_run(tenant, quota.runs_per_hour)
                .await?
            {
                RunAdmission::Admitted { hour, .. } => Ok(Some(hour)),
                RunAdmission::OverQuota { retry_after_s } => Err(CoreError::QuotaExceeded {
                    limit: quota.runs_per_hour,
                    retry_after_s,
                }),
            },
        }
    }

    /// Takes back a run [`Pipeline::charge`] counted (best-effort, see the store).
    pub fn refund(&self, tenant: &str, charged: Option<i64>) {
        if let Some(hour) = charged {
            self.inner.store.refund_run(tenant, hour);
        }
    }
}
