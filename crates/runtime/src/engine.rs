//! The process's one wasmtime `Engine`: configured once (pooling allocator with copy-on-write
//! memory images, fuel, epoch interruption, async), plus the single epoch ticker thread.

use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::error::RuntimeError;

/// How often the epoch advances. Every tick, a running guest yields to the async executor,
/// so a spinning guest cannot hold a worker thread for longer than this.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Engine-wide settings chosen by the operator at start.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Instances that may exist at once (pool slots). Invocations beyond it wait in the
    /// admission queue; component loads use a few extra slots.
    pub pool_size: u32,
    /// Largest linear memory any tenant may be granted (the pool reserves this per slot).
    pub max_memory_bytes: u64,
    /// `false` gives the on-demand allocator (used by the benchmark as a baseline).
    pub pooling: bool,
    /// `false` turns fuel and epoch interruption off: the benchmark's baseline only (a guest
    /// could then spin forever), so it exists only with the `unmetered` feature, which no
    /// serving crate enables.
    #[cfg(feature = "unmetered")]
    pub enforce_limits: bool,
}

impl EngineOptions {
    /// Whether fuel and epoch interruption are on: always, unless an `unmetered` build turned
    /// them off.
    pub fn metered(&self) -> bool {
        #[cfg(feature = "unmetered")]
        return self.enforce_limits;
        #[cfg(not(feature = "unmetered"))]
        true
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            pool_size: 64,
            max_memory_bytes: airlock_model::LimitCaps::default().memory_bytes,
            pooling: true,
            #[cfg(feature = "unmetered")]
            enforce_limits: true,
        }
    }
}

/// Linear memory per pool slot reset with memset rather than returned to the kernel.
const KEEP_RESIDENT: usize = 2 * 1024 * 1024;

/// Slots kept beside `pool_size` for loads, which instantiate a component to read its manifest.
pub(crate) const LOAD_SLOTS: u32 = 8;

pub(crate) fn build(options: &EngineOptions) -> Result<Engine, RuntimeError> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(options.metered())
        .epoch_interruption(options.metered())
        .max_wasm_stack(512 * 1024)
        .async_stack_size(2 * 1024 * 1024);
    if options.pooling {
        let slots = options.pool_size.saturating_add(LOAD_SLOTS);
        let max_memory = usize::try_from(options.max_memory_bytes)
            .map_err(|_| RuntimeError::Engine("max_memory_bytes does not fit usize".into()))?;
        let mut pool = PoolingAllocationConfig::default();
        // A Rust wasip2 component has a handful of core instances (the program plus the
        // shims wit-component adds) and one memory; leave headroom for other toolchains.
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(8))
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(8))
            .total_stacks(slots)
            .max_memory_size(max_memory)
            .max_memories_per_component(2)
            .max_core_instances_per_component(16)
            .max_tables_per_component(16)
            // Reset the pages a guest dirtied with memset (found with Linux's PAGEMAP_SCAN
            // where available) instead of madvise: the next instance in the slot then takes
            // no page faults. Measured: instantiate + call fell from ~19 µs to ~7 µs. The cost
            // is up to KEEP_RESIDENT of resident memory per pool slot.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 * 1024)
            .pagemap_scan(wasmtime::Enabled::Auto);
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .memory_init_cow(true);
    }
    Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
///
/// Without the ticker, spinning guests would never yield and the wall-clock timeout could not
/// fire inside wasm, so failing to start it is an error, not a warning.
pub(crate) fn spawn_ticker(engine: &Engine) -> Result<(), RuntimeError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("airlock-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(drop)
        .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch ticker thread: {e}")))
}
