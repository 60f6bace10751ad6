//! The HTTP API (`airlock serve`): axum routers under `/v1`, the bearer-token extractor,
//! problem+json errors, health and readiness, and the generated OpenAPI document.
//!
//! Every handler takes a [`auth::Principal`] and passes its tenant to the store; a resource of
//! another tenant is therefore not found (404), never shown.

pub mod auth;
pub mod compile_slots;
mod connections;
mod connectors;
pub mod error;
mod health;
mod hot_rows;
mod invoke;
mod oauth;
mod openapi;
mod server;
mod tenants;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::{Config, ConfigError};
use crate::outbound::OutboundConfig;
use crate::runtime::{
    EngineOptions, LimitCaps, Runtime, RuntimeError, RuntimeOptions, SharedComponent,
};
use crate::secrets::Keyring;
use crate::store::{DbStateStore, Store, StoreError, StoreOptions};
pub use auth::{JwtKeys, Principal, Role};
pub use error::{ApiError, Problem};
pub use openapi::openapi;
pub use server::{MAX_HEAD_BYTES, MAX_HEADERS, MAX_URI_BYTES, ServerOptions};

/// Largest JSON body any route accepts.
pub const MAX_JSON_BYTES: usize = 64 * 1024;

/// Everything a handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    state_store: Arc<DbStateStore>,
    runtime: Runtime,
    /// Replaced when a decrypt meets a key id this copy does not know: another process (or
    /// `airlock keys rotate`) rotated the key file.
    keyring: RwLock<Arc<Keyring>>,
    keys_path: PathBuf,
    jwt: JwtKeys,
    caps: LimitCaps,
    /// Loaded components by digest. The digest is only ever taken from the caller's own
    /// tenant's connector rows, so sharing compiled code across tenants reveals nothing.
    components: moka::sync::Cache<String, SharedComponent>,
    max_component_bytes: usize,
    /// Names this service instance as the holder of OAuth2 refresh leases in the database.
    instance_id: String,
    /// One async lock per connection being refreshed in this process (see `oauth`).
    refresh_locks: oauth::RefreshLocks,
    /// Quotas and current connector versions, which every invocation reads.
    hot: hot_rows::HotRows,
    /// Uploads loading per tenant.
    compile_slots: compile_slots::CompileSlots,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    pub fn jwt(&self) -> &JwtKeys {
        &self.inner.jwt
    }

    /// The per-tenant bound on uploads loading at once (tests hold slots through it).
    pub fn compile_slots(&self) -> &compile_slots::CompileSlots {
        &self.inner.compile_slots
    }

    fn keyring(&self) -> Arc<Keyring> {
        // A poisoned lock still holds a whole keyring: it is only ever replaced, not edited.
        self.inner
            .keyring
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads the key file after a rotation elsewhere. Returns whether it loaded.
    fn reload_keyring(&self) -> bool {
        match Keyring::load(&self.inner.keys_path) {
            Ok(keyring) => {
                *self
                    .inner
                    .keyring
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = Arc::new(keyring);
                tracing::warn!("reloaded the encryption key file after meeting a new key id");
                true
            }
            Err(error) => {
                tracing::error!(%error, "cannot reload the encryption key file");
                false
            }
        }
    }

    fn caps(&self) -> &LimitCaps {
        &self.inner.caps
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
}

/// A started service: its state and the configuration it came from.
pub struct Service {
    pub state: AppState,
    cors_origins: Vec<String>,
    server: ServerOptions,
}

impl Service {
    /// Loads keys (generating them in dev mode), connects to the database and migrates it,
    /// and builds the runtime. Logs what dev mode generated.
    pub async fn start(
        config: &Config,
        runtime_options: RuntimeOptions,
    ) -> Result<Service, StartError> {
        let keys = config.load_keys()?;
        for path in &keys.generated {
            tracing::warn!(path = %path.display(), "dev mode: generated a new key file");
        }
        let store = Store::connect(&config.database_url(), &StoreOptions::default()).await?;
        let caps = LimitCaps {
            memory_bytes: runtime_options.engine.max_memory_bytes,
            ..LimitCaps::default()
        };
        let runtime = Runtime::new(runtime_options)?;
        let state = AppState {
            inner: Arc::new(Inner {
                state_store: Arc::new(DbStateStore::new(store.clone())),
                store,
                runtime,
                keyring: RwLock::new(Arc::new(keys.keyring)),
                keys_path: config.keys_path(),
                jwt: JwtKeys::new(&keys.jwt_secret),
                caps,
                components: moka::sync::Cache::new(256),
                max_component_bytes: usize::try_from(config.max_component_bytes)
                    .unwrap_or(usize::MAX),
                instance_id: format!("airlock-{}", uuid::Uuid::new_v4().simple()),
                refresh_locks: oauth::RefreshLocks::default(),
                hot: hot_rows::HotRows::default(),
                compile_slots: compile_slots::CompileSlots::default(),
            }),
        };
        Ok(Service {
            state,
            cors_origins: config.cors_origins.clone(),
            server: config.server_options(),
        })
    }

    /// The runtime options `airlock serve` uses for `config`.
    pub fn runtime_options(config: &Config) -> RuntimeOptions {
        RuntimeOptions {
            engine: EngineOptions {
                pool_size: config.pool_size,
                ..EngineOptions::default()
            },
            cache_dir: Some(config.cache_dir()),
            outbound: OutboundConfig {
                credentials_follow_redirects_across_origins: config
                    .credentials_follow_redirects_across_origins,
                ..OutboundConfig::default()
            },
            ..RuntimeOptions::default()
        }
    }

    pub fn router(&self) -> Router {
        let mut router = router(self.state.clone());
        if !self.cors_origins.is_empty() {
            let origins: Vec<HeaderValue> = self
                .cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
                .collect();
            let allow = if self.cors_origins.iter().any(|o| o.trim() == "*") {
                AllowOrigin::any()
            } else {
                AllowOrigin::list(origins)
            };
            router = router.layer(
                CorsLayer::new()
                    .allow_origin(allow)
                    .allow_methods(tower_http::cors::Any)
                    .allow_headers(tower_http::cors::Any),
            );
        }
        router
    }

    /// Serves until `shutdown` is cancelled, then finishes in-flight requests (for at most
    /// the configured shutdown grace) and closes the database pool.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let router = self.router();
        let store = self.state.store().clone();
        let result = server::serve(listener, router, self.server, shutdown).await;
        store.close().await;
        result
    }
}

/// Binds `config.listen`.
pub async fn bind(config: &Config) -> Result<TcpListener, StartError> {
    TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Listen {
            addr: config.listen.to_string(),
            reason: e.to_string(),
        })
}

/// Every route, with body limits, the problem+json fallbacks and the catch-all mapping.
pub fn router(state: AppState) -> Router {
    let upload_limit = state.inner.max_component_bytes;
    let v1 = Router::new()
        .merge(tenants::routes())
        .merge(connectors::routes(upload_limit))
        .merge(connections::routes())
        .merge(invoke::routes());
    Router::new()
        .nest("/v1", v1)
        .merge(health::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .layer(axum::middleware::map_response(error::ensure_problem))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
