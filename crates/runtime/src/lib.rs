//! The sandboxed runtime: one engine, a cache of loaded components, and invocations that each
//! get a fresh instance under the tenant's limits.
//!
//! Flow of an invocation: [`Runtime::prepare`] checks the action and the input against the
//! manifest; [`Runtime::run`] waits for a pool slot ([`admission`]), builds a `Store` holding the tenant's
//! limits, an empty WASI context, an outbound session and a log buffer ([`guest_state`]),
//! instantiates from the component's `InstancePre`, calls the export under fuel, memory and
//! wall-clock limits, classifies how it ended ([`error::ErrorKind`]), checks the output, and
//! scrubs secrets from everything it returns.

mod admission;
mod artifacts;
mod component;
mod contract;
mod declarative;
mod engine;
mod error;
mod guest_state;
mod invoke;
mod keyed_locks;
mod limiter;
mod logs;
pub mod outbound;
mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

pub use airlock_model::{
    ActionSpec, LimitBound, LimitCaps, LimitError, Manifest, ManifestError, RetryPolicy,
    StateScope, TenantLimits, ValidatedManifest,
};
pub use component::{LoadedComponent, SharedComponent, digest};
pub use declarative::{MAX_DEFINITION_BYTES, RUNNER_WASM, is_definition};
pub use engine::{EPOCH_TICK, EngineOptions};
pub use error::{ErrorKind, InvokeError, LoadError, RuntimeError};
pub use invoke::{Call, InvokeOutcome, InvokeRequest, Prepared, Stats};
pub use keyed_locks::{KeyedGuard, KeyedLocks};
pub use logs::{LogLevel, LogLine, LogSource, Logs};
pub use state::{MemoryStateStore, StateError, StateStore};

use crate::outbound::{Gate, OutboundConfig};
use admission::{Admission, AdmissionOptions};
use artifacts::ArtifactCache;
use contract::{Connector, ConnectorPre};
use guest_state::GuestState;

/// Everything the runtime is configured with at start.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub engine: EngineOptions,
    pub outbound: OutboundConfig,
    /// Where precompiled components are cached; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// Loaded components kept in memory (each holds its compiled code and `InstancePre`).
    pub component_cache_capacity: u64,
    /// Invocations that may wait for a pool slot before new ones are refused as overloaded.
    pub queue_capacity: usize,
    /// Of those, how many one tenant may hold, so that one tenant cannot fill the queue.
    pub tenant_queue_capacity: usize,
    /// How long one invocation may wait for a pool slot.
    pub queue_timeout: Duration,
    /// Components compiled at once (Cranelift is CPU-bound: more than the cores only makes
    /// every compilation slower). Further loads wait for a slot.
    pub max_concurrent_compiles: usize,
    /// How long a load may wait for a compilation slot before it fails as [`LoadError::Busy`].
    pub compile_queue_timeout: Duration,
    /// The process's metrics; every layer records through the runtime's.
    pub metrics: Arc<airlock_telemetry::Metrics>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            engine: EngineOptions::default(),
            outbound: OutboundConfig::default(),
            cache_dir: None,
            component_cache_capacity: 256,
            queue_capacity: 1024,
            tenant_queue_capacity: 64,
            queue_timeout: Duration::from_secs(10),
            max_concurrent_compiles: std::thread::available_parallelism()
                .map_or(2, std::num::NonZeroUsize::get),
            compile_queue_timeout: Duration::from_secs(30),
            metrics: Arc::default(),
        }
    }
}

/// The runtime. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Runtime {
    engine: Engine,
    linker: Linker<GuestState>,
    gate: Gate,
    artifacts: Option<ArtifactCache>,
    components: moka::sync::Cache<String, SharedComponent>,
    /// One load per digest at a time: callers that arrive while it compiles get its result
    /// instead of compiling the same bytes again.
    loading: Arc<KeyedLocks<String>>,
    admission: Admission,
    /// Compilation slots (`max_concurrent_compiles`).
    compiles: Arc<tokio::sync::Semaphore>,
    /// Manifest reads at once: each takes one of the pool's `LOAD_SLOTS` spare slots, so more
    /// would take slots that admitted invocations count on.
    manifest_reads: Arc<tokio::sync::Semaphore>,
    /// Components compiled by this runtime (not loaded from the artifact cache).
    compiled: Arc<std::sync::atomic::AtomicU64>,
    default_state: Arc<dyn StateStore>,
    options: RuntimeOptions,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Limits for reading a manifest at load: no network, no state, small budgets.
const LOAD_FUEL: u64 = 1_000_000_000;
const LOAD_MEMORY: u64 = 64 * 1024 * 1024;
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);
const LOAD_LOG_BYTES: u64 = 16 * 1024;
const LOAD_LOG_LINES: u32 = 100;

impl Runtime {
    pub fn new(options: RuntimeOptions) -> Result<Self, RuntimeError> {
        let engine = engine::build(&options.engine)?;
        if options.engine.metered() {
            engine::spawn_ticker(&engine)?;
        }
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| RuntimeError::Engine(format!("linking WASI: {e:#}")))?;
        Connector::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| RuntimeError::Engine(format!("linking the contract: {e:#}")))?;
        let artifacts = match &options.cache_dir {
            Some(dir) => Some(
                ArtifactCache::new(dir.clone(), &engine)
                    .map_err(|e| RuntimeError::Cache(format!("{}: {e}", dir.display())))?,
            ),
            None => None,
        };
        let gate = Gate::new(options.outbound.clone())?.with_metrics(options.metrics.clone());
        let slots = usize::try_from(options.engine.pool_size).unwrap_or(usize::MAX);
        Ok(Self {
            admission: Admission::new(AdmissionOptions {
                pool_size: slots,
                queue_capacity: options.queue_capacity,
                tenant_queue_capacity: options.tenant_queue_capacity,
                queue_timeout: options.queue_timeout,
            }),
            components: moka::sync::Cache::new(options.component_cache_capacity),
            loading: Arc::default(),
            compiles: Arc::new(tokio::sync::Semaphore::new(
                options.max_concurrent_compiles.max(1),
            )),
            compiled: Arc::default(),
            manifest_reads: Arc::new(tokio::sync::Semaphore::new(engine::LOAD_SLOTS as usize)),
            default_state: Arc::new(MemoryStateStore::default()),
            engine,
            linker,
            gate,
            artifacts,
            options,
        })
    }

    pub fn options(&self) -> &RuntimeOptions {
        &self.options
    }

    /// The outbound gate, for host-initiated requests held to the same rules as guest ones
    /// (the OAuth2 token refresh).
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// How many components this runtime has compiled with Cranelift (a load served by the
    /// artifact cache or the in-memory cache compiles nothing).
    pub fn compilations(&self) -> u64 {
        self.compiled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Arc<airlock_telemetry::Metrics> {
        &self.options.metrics
    }

    /// Sets the gauges read at scrape time: pool slots in use.
    pub fn observe(&self) {
        let size = usize::try_from(self.options.engine.pool_size).unwrap_or(usize::MAX);
        self.options
            .metrics
            .set_pool(size.saturating_sub(self.admission.available()), size);
    }

    /// Pool slots free for invocations right now.
    pub fn available_slots(&self) -> usize {
        self.admission.available()
    }

    /// Invocations waiting for a pool slot right now, all tenants together.
    pub fn queued_invocations(&self) -> usize {
        self.admission.waiting()
    }

    /// The kept component with this digest, if this process holds it: the one in-memory
    /// component cache, which callers consult before reading a component's bytes.
    pub fn cached(&self, digest: &str) -> Option<SharedComponent> {
        self.components.get(digest)
    }

    /// Drops the component with this digest from memory and its compilation from the
    /// artifact cache: the code of a deleted tenant that no other tenant holds. A later load
    /// of the same bytes compiles them again.
    pub fn forget(&self, digest: &str) {
        self.components.invalidate(digest);
        if let Some(cache) = &self.artifacts {
            cache.remove(digest);
        }
    }

    /// Loads a component from a file (see [`Runtime::load`]).
    pub async fn load_file(&self, path: &Path) -> Result<SharedComponent, LoadError> {
        let bytes = tokio::fs::read(path).await.map_err(|e| LoadError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        self.load(&bytes).await
    }

    /// Validates, compiles (once per digest) and links a component and reads its manifest,
    /// keeping the result (see [`Runtime::keep`]). Loading the same bytes again returns the
    /// cached component.
    ///
    /// Concurrent loads of the same bytes compile once: the others wait for it (64 workers
    /// meeting a component this process had not loaded compiled it 64 times).
    pub async fn load(&self, bytes: &[u8]) -> Result<SharedComponent, LoadError> {
        let digest = component::digest(bytes);
        if let Some(loaded) = self.components.get(&digest) {
            return Ok(loaded);
        }
        let _turn = self.loading.lock(&digest).await;
        let loaded = self.load_unkept(bytes).await?;
        self.keep(&loaded).await;
        Ok(loaded)
    }

    /// [`Runtime::load`] without keeping anything: the compiled code is neither written to
    /// the artifact cache nor held in memory. For uploads, which the service may still refuse
    /// (a version conflict, a bad manifest); it keeps the component only once it accepted it.
    /// An already kept component (same digest) is returned as is.
    pub async fn load_unkept(&self, bytes: &[u8]) -> Result<SharedComponent, LoadError> {
        let digest = component::digest(bytes);
        if let Some(loaded) = self.components.get(&digest) {
            return Ok(loaded);
        }
        if declarative::is_definition(bytes) {
            return self.load_definition(bytes).await;
        }
        component::check_header(bytes)?;
        let compiled = self
            .artifacts
            .as_ref()
            .and_then(|cache| cache.get(&self.engine, &digest));
        let compiled = match compiled {
            Some(compiled) => compiled,
            None => self.compile(bytes).await?,
        };
        component::check_imports(&self.engine, &compiled)?;
        let pre = self
            .linker
            .instantiate_pre(&compiled)
            .map_err(|e| LoadError::MissingExport(format!("{e:#}")))?;
        let pre = ConnectorPre::new(pre).map_err(|e| LoadError::MissingExport(format!("{e:#}")))?;
        let manifest = self.read_manifest(&pre).await?;
        Ok(Arc::new(LoadedComponent {
            digest,
            manifest,
            pre,
            plans: None,
        }))
    }

    /// Keeps a loaded component: its compiled code in the artifact cache (unless there
    /// already) and the component in the in-memory cache, so the next load of these bytes
    /// compiles nothing. Failing to write the cache is logged, not fatal.
    pub async fn keep(&self, loaded: &SharedComponent) {
        if self.components.contains_key(&loaded.digest) {
            return;
        }
        // A definition's code is the runner's, kept when the runner was.
        if let Some(cache) = self.artifacts.clone()
            && !loaded.is_declarative()
            && !cache.contains(&loaded.digest)
        {
            let digest = loaded.digest.clone();
            let compiled = loaded.pre.instance_pre().component().clone();
            // Serializing and the fsync are blocking file work.
            let written = tokio::task::spawn_blocking(move || cache.put(&digest, &compiled)).await;
            if let Err(error) = written {
                tracing::warn!(%error, "cannot cache the compiled component");
            }
        }
        self.components
            .insert(loaded.digest.clone(), Arc::clone(loaded));
    }

    /// Cranelift is CPU-bound for tens to hundreds of milliseconds (seconds for a large
    /// component): on a blocking thread, off the async workers that serve invocations, and
    /// at most `max_concurrent_compiles` at once, so a burst of uploads queues here instead
    /// of taking every core from the invocations.
    async fn compile(&self, bytes: &[u8]) -> Result<Component, LoadError> {
        let permit = tokio::time::timeout(
            self.options.compile_queue_timeout,
            Arc::clone(&self.compiles).acquire_owned(),
        )
        .await
        .map_err(|_| LoadError::Busy)?
        .map_err(|_| LoadError::Busy)?;
        let engine = self.engine.clone();
        let owned = bytes.to_vec();
        self.compiled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let compiled = Component::new(&engine, &owned);
            drop(permit);
            compiled
        })
        .await
        .map_err(|e| LoadError::Compile(e.to_string()))?
        .map_err(|e| LoadError::Compile(format!("{e:#}")))
    }

    async fn read_manifest(
        &self,
        pre: &ConnectorPre<GuestState>,
    ) -> Result<ValidatedManifest, LoadError> {
        let _slot = tokio::time::timeout(
            self.options.compile_queue_timeout,
            self.manifest_reads.acquire(),
        )
        .await
        .map_err(|_| LoadError::Busy)?
        .map_err(|_| LoadError::Busy)?;
        let state = GuestState::new(
            LOAD_MEMORY,
            logs::LogSink::new(LOAD_LOG_BYTES, LOAD_LOG_LINES),
            None,
            None,
        );
        let mut store = self.new_store(state, LOAD_FUEL);
        let call = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_manifest(&mut store).await
        };
        let json = match tokio::time::timeout(LOAD_TIMEOUT, call).await {
            Ok(Ok(json)) => json,
            Ok(Err(error)) => return Err(LoadError::ManifestCall(format!("{error:#}"))),
            Err(_) => {
                return Err(LoadError::ManifestCall(format!(
                    "did not return within {LOAD_TIMEOUT:?}"
                )));
            }
        };
        Ok(ValidatedManifest::parse(&json)?)
    }

    fn new_store(&self, state: GuestState, fuel: u64) -> wasmtime::Store<GuestState> {
        let mut store = wasmtime::Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        if self.options.engine.metered() {
            // Both only fail when the engine has fuel or epochs disabled, checked just above.
            let _ = store.set_fuel(fuel);
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(|_| Ok(wasmtime::UpdateDeadline::Yield(1)));
        }
        store
    }
}
