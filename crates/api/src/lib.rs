//! The HTTP API (`airlock serve`): axum routers under `/v1`, the bearer-token extractor,
//! problem+json errors, health and readiness, and the generated OpenAPI document.
//!
//! Every handler takes a [`auth::Principal`] and passes its tenant to the store; a resource of
//! another tenant is therefore not found (404), never shown.

mod access;
mod audit;
pub mod auth;
mod catalog;
pub mod compile_slots;
mod connections;
mod connectors;
mod dates;
pub mod error;
mod health;
mod invoke;
mod lifecycle;
mod metrics;
mod names;
mod notices;
pub mod oidc;
mod openapi;
mod otlp;
mod runs;
mod server;
mod tenants;
pub mod token_keys;
mod trace;
mod triggers;
mod workflows;

pub use triggers::MAX_HOOK_BODY;

use std::path::PathBuf;
use std::sync::Arc;

use airlock_core::fresh::FreshCache;
use airlock_core::{Clock, Pipeline, PipelineOptions};
use airlock_runs::{
    KeyExpiry, NoticeOptions, Notices, Retention, Runs, RunsOptions, Scheduler, SchedulerOptions,
    WorkerOptions, Workers,
};
use airlock_runtime::{Runtime, RuntimeError, RuntimeOptions};
use airlock_secrets::{Keyring, Secret};
use airlock_store::{Store, StoreError, StoreOptions};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use audit::UNAUDITED;
pub use auth::{JwtKeys, Principal, Role, unverified_id};
pub use error::{ApiError, Problem};
pub use metrics::{MetricsExposure, router as metrics_router, serve as serve_metrics};
pub use openapi::openapi;
pub use otlp::{OtlpExporter, OtlpOptions};
pub use server::{MAX_HEAD_BYTES, MAX_HEADERS, MAX_URI_BYTES, ServerOptions};

/// Largest JSON body any route accepts.
pub const MAX_JSON_BYTES: usize = 64 * 1024;

/// Everything a handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    /// Lookups, credentials, run admission, the runtime: everything an invocation needs.
    pipeline: Pipeline,
    jwt: JwtKeys,
    /// Whether a token id was revoked, per process for at most a second.
    revoked: FreshCache<String, bool>,
    oidc: Option<oidc::Oidc>,
    max_component_bytes: usize,
    /// Uploads loading per tenant.
    compile_slots: compile_slots::CompileSlots,
    /// Workflows and durable runs.
    runs: Runs,
    /// Who reads `/metrics` on the API listener.
    metrics: MetricsExposure,
    /// Calls counted for the access history, flushed every few seconds.
    access: access::AccessLog,
    /// How dead-letter notices are sent (the test send of `POST /v1/dead-letters/webhook/test`
    /// uses its timeout).
    notices: NoticeOptions,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("pipeline", &self.inner.pipeline)
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub fn pipeline(&self) -> &Pipeline {
        &self.inner.pipeline
    }

    /// For reads; writes go through [`AppState::pipeline`].
    pub fn store(&self) -> &Store {
        self.inner.pipeline.store()
    }

    pub fn runtime(&self) -> &Runtime {
        self.inner.pipeline.runtime()
    }

    pub fn jwt(&self) -> &JwtKeys {
        &self.inner.jwt
    }

    /// The caller a bearer token names: the identity provider's when its `iss` is the
    /// configured issuer, else Airlock's own (see `auth.rs`).
    pub(crate) async fn verify_token(&self, token: &str) -> Result<Principal, ApiError> {
        if let Some(oidc) = &self.inner.oidc
            && oidc::unverified_issuer(token).is_some_and(|iss| oidc.issues(&iss))
        {
            return oidc.verify(token).await;
        }
        self.inner.jwt.verify(token)
    }

    /// Refuses a revoked token id (see `airlock token revoke`): this process within a second
    /// of the revocation, like every other. A database that does not answer refuses too.
    pub(crate) async fn not_revoked(&self, jti: &str) -> Result<(), ApiError> {
        let store = self.store();
        let revoked = self
            .inner
            .revoked
            .get_or_load(jti.to_owned(), store.is_token_revoked(jti))
            .await?;
        if revoked {
            Err(ApiError::Unauthorized("the token was revoked"))
        } else {
            Ok(())
        }
    }

    pub(crate) fn notice_options(&self) -> &NoticeOptions {
        &self.inner.notices
    }

    pub fn runs(&self) -> &Runs {
        &self.inner.runs
    }

    /// The per-tenant bound on uploads loading at once (tests hold slots through it).
    pub fn compile_slots(&self) -> &compile_slots::CompileSlots {
        &self.inner.compile_slots
    }

    fn access(&self) -> &access::AccessLog {
        &self.inner.access
    }

    fn caps(&self) -> &airlock_model::LimitCaps {
        self.inner.pipeline.caps()
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("token signing keys: {0}")]
    TokenKeys(#[from] token_keys::KeySetError),
    #[error(transparent)]
    Oidc(#[from] oidc::OidcConfigError),
}

/// What the service is started with; the binary builds it from its configuration.
pub struct ServiceOptions {
    pub database_url: String,
    pub store: StoreOptions,
    pub keyring: Keyring,
    /// The key file, reloaded when a decrypt meets a key id this process does not know.
    pub keys_path: Option<PathBuf>,
    pub jwt_secret: Secret,
    /// The token signing key set (`token_keys`); none: the JWT secret alone.
    pub token_keys_path: Option<PathBuf>,
    /// Tokens of an identity provider, accepted beside Airlock's own.
    pub oidc: Option<oidc::OidcOptions>,
    pub max_component_bytes: u64,
    pub cors_origins: Vec<String>,
    pub server: ServerOptions,
    pub runtime: RuntimeOptions,
    /// The clock of the pipeline and the run counter (cache freshness, OAuth2 back-off, the
    /// hour of `runs_per_hour`); tests pass a manual one.
    pub clock: Arc<dyn Clock>,
    /// Serve the REST API; `false`: only `/healthz`, `/readyz` and `/openapi.json` (a
    /// workers-only process).
    pub api: bool,
    /// Durable-run workers in this process (`workers: 0`: none, an API-only process).
    pub workers: WorkerOptions,
    pub runs: RunsOptions,
    /// The cron scheduler of this process (`enabled: false`: this process fires no ticks).
    pub scheduler: SchedulerOptions,
    /// Who reads `/metrics` on the API listener.
    pub metrics: MetricsExposure,
    /// How often this process's retention pruner runs.
    pub retention_every: std::time::Duration,
    /// Where spans are exported (OTLP/HTTP); `None`: none are recorded.
    pub otlp: Option<OtlpOptions>,
}

/// A started service: its state and the configuration it came from.
pub struct Service {
    pub state: AppState,
    cors_origins: Vec<String>,
    server: ServerOptions,
    api: bool,
    workers: WorkerOptions,
    scheduler: SchedulerOptions,
    retention_every: std::time::Duration,
    otlp: Option<OtlpOptions>,
}

impl Service {
    /// Connects to the database and migrates it, and builds the runtime and the pipeline.
    pub async fn start(options: ServiceOptions) -> Result<Service, StartError> {
        let store_options = StoreOptions {
            clock: options.clock.clone(),
            ..options.store
        };
        let store = Store::connect(&options.database_url, &store_options).await?;
        if let Some(otlp) = &options.otlp {
            options.runtime.metrics.record_spans(otlp.spans());
        }
        let runtime = Arc::new(Runtime::new(options.runtime)?);
        let mut pipeline = PipelineOptions::new(store, runtime, options.keyring);
        pipeline.keys_path = options.keys_path;
        pipeline.clock = options.clock;
        let pipeline = Pipeline::new(pipeline);
        let jwt = match options.token_keys_path {
            Some(path) => JwtKeys::with_key_file(&options.jwt_secret, path)?,
            None => JwtKeys::new(&options.jwt_secret),
        };
        let clock = pipeline.clock();
        let oidc = options.oidc.map(oidc::Oidc::new).transpose()?;
        let state = AppState {
            inner: Arc::new(Inner {
                runs: Runs::new(pipeline.clone(), options.runs),
                pipeline,
                jwt,
                revoked: FreshCache::new(clock),
                oidc,
                max_component_bytes: usize::try_from(options.max_component_bytes)
                    .unwrap_or(usize::MAX),
                compile_slots: compile_slots::CompileSlots::default(),
                metrics: options.metrics,
                access: access::AccessLog::default(),
                notices: options.workers.notices.clone(),
            }),
        };
        Ok(Service {
            state,
            cors_origins: options.cors_origins,
            server: options.server,
            api: options.api,
            workers: options.workers,
            scheduler: options.scheduler,
            retention_every: options.retention_every,
            otlp: options.otlp,
        })
    }
    pub fn router(&self) -> Router {
        let mut router = if self.api {
            router(self.state.clone())
        } else {
            health_router(self.state.clone())
        };
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
        let exporter = self
            .otlp
            .as_ref()
            .map(|otlp| OtlpExporter::start(self.state.runtime().metrics().clone(), otlp));
        let pipeline = self.state.pipeline().clone();
        let workers = std::sync::Arc::new(Workers::start(pipeline.clone(), self.workers.clone()));
        // Claiming stops the moment shutdown begins, not after the HTTP drain: a run claimed
        // now would only be released again.
        let stop_claiming = {
            let (workers, shutdown) = (workers.clone(), shutdown.clone());
            tokio::spawn(async move {
                shutdown.cancelled().await;
                workers.stop_claiming();
            })
        };
        // A process that runs workers also sends the dead-letter notices.
        let notices = (self.workers.workers > 0)
            .then(|| Notices::start(self.state.runs().clone(), self.workers.notices.clone()));
        let scheduler = Scheduler::start(self.state.runs().clone(), self.scheduler.clone());
        let expiry = KeyExpiry::start(self.state.runs().clone());
        let retention = Retention::start(self.state.runs().clone(), self.retention_every);
        let stop_access = CancellationToken::new();
        let access = tokio::spawn(access::flush_until(self.state.clone(), stop_access.clone()));
        let result = server::serve(listener, router, self.server, shutdown).await;
        retention.shutdown().await;
        stop_access.cancel();
        let _ = access.await;
        expiry.shutdown().await;
        // Running steps finish (or are stopped after the grace period) and their runs go
        // back to the queue; in-flight refreshes finish (a rotated refresh token must reach
        // the database) before the pool closes.
        scheduler.shutdown().await;
        stop_claiming.abort();
        workers.shutdown().await;
        if let Some(notices) = notices {
            notices.shutdown().await;
        }
        pipeline.shutdown().await;
        pipeline.store().close().await;
        if let Some(exporter) = exporter {
            exporter.shutdown().await;
        }
        result
    }
}

/// Binds `addr`.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::Listen {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
}

/// Every route, with body limits, the problem+json fallbacks and the catch-all mapping.
pub fn router(state: AppState) -> Router {
    let upload_limit = state.inner.max_component_bytes;
    let v1 = Router::new()
        .merge(tenants::routes())
        .merge(lifecycle::routes())
        .merge(connectors::routes(upload_limit))
        .merge(catalog::routes(upload_limit))
        .merge(connections::routes())
        .merge(invoke::routes())
        .merge(workflows::routes())
        .merge(triggers::routes())
        .merge(runs::routes())
        .merge(notices::routes())
        .merge(access::routes());
    Router::new()
        .nest("/v1", v1)
        .merge(triggers::hook_routes())
        .merge(health::routes())
        .merge(metrics::routes(state.inner.metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .layer(axum::middleware::map_response(error::ensure_problem))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::record,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::track,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            trace::server_span,
        ))
        .layer(axum::middleware::from_fn(audit::request_id))
        .with_state(state)
}

/// A workers-only process: health, readiness and the document, nothing else.
fn health_router(state: AppState) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(metrics::routes(state.inner.metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response(error::ensure_problem))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
