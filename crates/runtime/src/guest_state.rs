//! The data of one invocation's `Store`: the tenant's limits as enforced by wasmtime, the
//! empty WASI context, the outbound session, the log buffer and the state scope.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::error::ErrorKind;
use super::limiter::MemoryLimiter;
use super::logs::{LogSink, LogSource};
use super::state::StateStore;
use crate::outbound::Session;
use airlock_model::StateScope;

pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    /// `None` while a component is loaded: reading a manifest needs no network.
    pub(crate) outbound: Option<Session>,
    pub(crate) logs: LogSink,
    pub(crate) state: Option<GuestStateAccess>,
    /// The first host-enforced limit (other than memory and fuel) that refused the guest.
    pub(crate) limit_hit: Option<ErrorKind>,
    /// What the `invocation` import tells the guest besides its idempotency key.
    pub(crate) about: About,
}

/// The connection's config and, for the declarative runner, the plan it interprets.
#[derive(Debug, Clone, Default)]
pub struct About {
    /// JSON text of an object; empty means `{}`.
    pub config: Arc<str>,
    pub plan: Option<Arc<str>>,
}

/// The state store as one invocation may use it.
#[derive(Clone)]
pub struct GuestStateAccess {
    pub store: Arc<dyn StateStore>,
    pub scope: StateScope,
    pub max_value_bytes: u64,
    pub max_keys: u32,
}

impl GuestState {
    pub fn new(
        memory_bytes: u64,
        logs: LogSink,
        outbound: Option<Session>,
        state: Option<GuestStateAccess>,
    ) -> Self {
        Self {
            wasi: empty_wasi(&logs),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_bytes),
            outbound,
            logs,
            state,
            limit_hit: None,
            about: About::default(),
        }
    }

    pub(crate) fn record_limit(&mut self, kind: ErrorKind) {
        self.limit_hit.get_or_insert(kind);
    }
}

/// WASI with nothing granted: no files, no environment, no arguments, no sockets, no name
/// lookups. Clocks and randomness stay available because std needs them; stdout and stderr
/// go to the invocation's capped log.
fn empty_wasi(logs: &LogSink) -> WasiCtx {
    WasiCtx::builder()
        .stdout(logs.stream(LogSource::Stdout))
        .stderr(logs.stream(LogSource::Stderr))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
