//! The service's one typed configuration: flags with environment fallbacks, parsed once in
//! `main` and passed down; and the start-up checks and key loading that depend on the mode
//! (dev generates missing keys into the data directory, production refuses weak ones).

use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};

use airlock_api::oidc::OidcOptions;
use airlock_api::{OtlpOptions, ServerOptions, Service, ServiceOptions, StartError};
use std::sync::Arc;

use airlock_core::SystemClock;
use airlock_runs::{RunsOptions, SchedulerOptions, WorkerOptions};
use airlock_runtime::RuntimeOptions;
use airlock_runtime::outbound::OutboundConfig;
use airlock_secrets::{Keyring, Secret, SecretsError};
use airlock_store::StoreOptions;

/// Where the JWT secret comes from when it is not in a file.
pub const JWT_SECRET_ENV: &str = "AIRLOCK_JWT_SECRET";

/// Shortest JWT secret production accepts (HS256 wants at least the hash's 32 bytes).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Secrets people paste from examples; production refuses them whatever their length.
const DEFAULT_JWT_SECRETS: &[&str] = &[
    "secret",
    "changeme",
    "change-me",
    "dev",
    "development",
    "airlock",
    "jwt-secret",
    "your-256-bit-secret",
];

/// `--metrics`: see [`airlock_api::MetricsExposure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetricsAccess {
    Operator,
    Public,
    Off,
}

impl From<MetricsAccess> for airlock_api::MetricsExposure {
    fn from(access: MetricsAccess) -> Self {
        match access {
            MetricsAccess::Operator => airlock_api::MetricsExposure::Operator,
            MetricsAccess::Public => airlock_api::MetricsExposure::Public,
            MetricsAccess::Off => airlock_api::MetricsExposure::Off,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Generates missing keys into the data directory on first start.
    Dev,
    /// Refuses to start with a missing or default JWT key, encryption key or wildcard CORS.
    Production,
}

/// Everything `airlock serve` (and `airlock token`) is configured with.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "AIRLOCK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory for the SQLite database, generated keys and the compiled-component cache.
    #[arg(long, env = "AIRLOCK_DATA_DIR", default_value = "./airlock-data")]
    pub data_dir: PathBuf,
    /// `sqlite://PATH?mode=rwc` or `postgres://USER@HOST/DB`; default: SQLite in the data dir.
    #[arg(long, env = "AIRLOCK_DATABASE_URL")]
    pub database_url: Option<String>,
    #[arg(long, env = "AIRLOCK_MODE", value_enum, default_value = "dev")]
    pub mode: Mode,
    /// File holding the JWT signing secret (default: `<data-dir>/jwt.key`). The secret may
    /// instead be given in the AIRLOCK_JWT_SECRET environment variable, never as a flag.
    #[arg(long, env = "AIRLOCK_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Encryption key file for connection credentials (default: `<data-dir>/keys.json`).
    #[arg(long, env = "AIRLOCK_KEYS_FILE")]
    pub keys_file: Option<PathBuf>,
    /// Origin allowed to call the API from a browser (repeatable, or comma-separated in the
    /// environment). None: no CORS headers.
    #[arg(
        long = "cors-origin",
        env = "AIRLOCK_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// Largest component upload, e.g. 16MiB.
    #[arg(long, env = "AIRLOCK_MAX_COMPONENT_BYTES", default_value = "16MiB", value_parser = crate::units::parse_bytes)]
    pub max_component_bytes: u64,
    /// Who may read `/metrics` on the API listener: `operator` (an operator token), `public`
    /// (anyone who reaches the listener; tenant ids are in the figures), or `off`.
    #[arg(long, env = "AIRLOCK_METRICS", value_enum, default_value = "operator")]
    pub metrics: MetricsAccess,
    /// Also serve `/metrics` (no token) on this address of its own, e.g. 127.0.0.1:9090 for
    /// a Prometheus on the same host or network.
    #[arg(long, env = "AIRLOCK_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Distinct tenants each per-tenant metric labels; the rest are counted under
    /// `tenant="_other"`, so a flood of tenants cannot grow the series without bound.
    #[arg(long, env = "AIRLOCK_METRICS_TENANT_CAP", default_value_t = airlock_telemetry::DEFAULT_TENANT_CAP)]
    pub metrics_tenant_cap: usize,
    /// Export spans (request, enqueue, claim, step, invoke, each upstream request) to this
    /// OpenTelemetry collector, over OTLP/HTTP with JSON: its base (`http://collector:4318`)
    /// or its full `/v1/traces` URL. Unset: no span is recorded; trace ids still travel.
    #[arg(long, env = "AIRLOCK_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The share of new traces recorded, 0 to 1. A caller's sampled `traceparent` is
    /// recorded at this same ratio, so no caller can raise it; an unsampled one never is.
    #[arg(long, env = "AIRLOCK_OTLP_SAMPLE_RATIO", default_value_t = 1.0)]
    pub otlp_sample_ratio: f64,
    /// `service.name` on exported spans.
    #[arg(long, env = "AIRLOCK_OTLP_SERVICE_NAME", default_value = "airlock")]
    pub otlp_service_name: String,
    /// How often this process applies the tenants' retention policies (`retain_run_data_days`,
    /// `retain_runs_days`) to ended runs.
    #[arg(long, env = "AIRLOCK_RETENTION_EVERY", default_value = "10m", value_parser = crate::units::parse_timeout)]
    pub retention_every: Duration,
    /// Instance pool slots (invocations running at once).
    #[arg(long, env = "AIRLOCK_POOL_SIZE", default_value_t = 64)]
    pub pool_size: u32,
    /// Database connections this process keeps at most (PostgreSQL; SQLite reads use it too
    /// and write through one). Give each process its share of the server's
    /// `max_connections`.
    #[arg(long, env = "AIRLOCK_DATABASE_POOL_SIZE", default_value_t = 16,
        value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub database_pool_size: u32,
    /// Let a redirect to another origin (scheme, host or port) that the connector also
    /// declares carry the connection's credential and the guest's own `Authorization` and
    /// `Cookie` headers. Off: they go only to the origin of the guest's request, as in curl
    /// and browsers.
    #[arg(
        long,
        env = "AIRLOCK_CREDENTIALS_FOLLOW_REDIRECTS_ACROSS_ORIGINS",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub credentials_follow_redirects_across_origins: bool,
    /// Let connectors reach addresses in this private range (CIDR, repeatable), e.g. an
    /// internal API at 10.1.2.0/24. Loopback, link-local and metadata addresses are private
    /// too. Off: every private address is refused.
    #[arg(
        long = "outbound-allow-private",
        env = "AIRLOCK_OUTBOUND_ALLOW_PRIVATE",
        value_delimiter = ','
    )]
    pub outbound_allow_private: Vec<ipnet::IpNet>,
    /// Let connectors use plain `http://` (off: https only).
    #[arg(long, env = "AIRLOCK_OUTBOUND_ALLOW_HTTP", value_parser = clap::builder::FalseyValueParser::new())]
    pub outbound_allow_http: bool,
    /// Resolve a host name to a fixed address, as curl's `--resolve` (`HOST=IP:PORT`,
    /// repeatable): for split-horizon names and local test upstreams.
    #[arg(long = "outbound-resolve", env = "AIRLOCK_OUTBOUND_RESOLVE", value_delimiter = ',', value_parser = parse_resolve)]
    pub outbound_resolve: Vec<(String, SocketAddr)>,
    /// Time a client has to send a request line and its headers, counted from a new
    /// connection or from the first byte of a request on a kept-alive one.
    #[arg(long, env = "AIRLOCK_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = crate::units::parse_timeout)]
    pub header_read_timeout: Duration,
    /// Time a kept-alive connection may stay idle between requests (counted from when the
    /// last response was ready) before it is closed.
    #[arg(long, env = "AIRLOCK_IDLE_TIMEOUT", default_value = "60s", value_parser = crate::units::parse_timeout)]
    pub idle_timeout: Duration,
    /// Longest time one request may take, from its head to its response; then 503
    /// `request-timeout`.
    #[arg(long, env = "AIRLOCK_REQUEST_TIMEOUT", default_value = "60s", value_parser = crate::units::parse_timeout)]
    pub request_timeout: Duration,
    /// Open connections served; beyond them (and the health reserve) a connection is
    /// closed as soon as it is accepted. Keep it below the open-file limit.
    #[arg(long, env = "AIRLOCK_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Extra connections kept for `/healthz` and `/readyz` when `--max-connections` is
    /// reached; any other request on them gets 503.
    #[arg(long, env = "AIRLOCK_HEALTH_CONNECTIONS", default_value_t = 16)]
    pub health_connections: usize,
    /// Requests handled at once (health checks not counted); beyond it: 503 with Retry-After.
    #[arg(long, env = "AIRLOCK_MAX_REQUESTS_IN_FLIGHT", default_value_t = 1024)]
    pub max_requests_in_flight: usize,
    /// On shutdown, how long requests in flight may take to finish before their connections
    /// are dropped.
    #[arg(long, env = "AIRLOCK_SHUTDOWN_GRACE", default_value = "30s", value_parser = crate::units::parse_timeout)]
    pub shutdown_grace: Duration,
    /// Durable-run workers in this process (runs worked on at once); 0: an API-only process.
    #[arg(long, env = "AIRLOCK_WORKERS", default_value_t = 32)]
    pub workers: usize,
    /// Serve no REST API, only `/healthz`, `/readyz` and `/openapi.json`: a workers-only
    /// process.
    #[arg(long, env = "AIRLOCK_NO_API", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_api: bool,
    /// How long a worker's claim on a run lasts without a heartbeat: a killed process's runs
    /// are taken over this long after its last heartbeat (plus one reaper pass).
    #[arg(long, env = "AIRLOCK_RUN_LEASE", default_value = "30s", value_parser = crate::units::parse_timeout)]
    pub run_lease: Duration,
    /// How often a running step's lease is renewed (well under `--run-lease`).
    #[arg(long, env = "AIRLOCK_RUN_HEARTBEAT", default_value = "5s", value_parser = crate::units::parse_timeout)]
    pub run_heartbeat: Duration,
    /// How often an idle worker looks at the queue when nothing woke it.
    #[arg(long, env = "AIRLOCK_RUN_POLL", default_value = "1s", value_parser = crate::units::parse_timeout)]
    pub run_poll: Duration,
    /// How often runs whose lease expired are re-queued.
    #[arg(long, env = "AIRLOCK_RUN_REAP_EVERY", default_value = "5s", value_parser = crate::units::parse_timeout)]
    pub run_reap_every: Duration,
    /// On shutdown, how long running steps may take before they are stopped and their runs
    /// released to other processes.
    #[arg(long, env = "AIRLOCK_WORKER_GRACE", default_value = "10s", value_parser = crate::units::parse_timeout)]
    pub worker_grace: Duration,
    /// How often an idle process looks for dead-letter notices due to tenants' webhooks.
    #[arg(long, env = "AIRLOCK_DEAD_LETTER_POLL", default_value = "1s", value_parser = crate::units::parse_timeout)]
    pub dead_letter_poll: Duration,
    /// Wall-clock bound on one attempt to deliver a dead-letter notice.
    #[arg(long, env = "AIRLOCK_DEAD_LETTER_TIMEOUT", default_value = "10s", value_parser = crate::units::parse_timeout)]
    pub dead_letter_timeout: Duration,
    /// The waits between attempts to deliver a dead-letter notice (one more attempt than
    /// waits; then the notice fails), comma-separated.
    #[arg(long, env = "AIRLOCK_DEAD_LETTER_BACKOFF", value_delimiter = ',',
        default_value = "5s,30s,2m,10m,30m,1h,2h,4h,8h", value_parser = crate::units::parse_timeout)]
    pub dead_letter_backoff: Vec<Duration>,
    /// Runs one tenant may have waiting; more are refused with 429 (`max_queued_runs`).
    #[arg(long, env = "AIRLOCK_MAX_QUEUED_RUNS_PER_TENANT", default_value_t = airlock_runs::DEFAULT_MAX_QUEUED_PER_TENANT)]
    pub max_queued_runs_per_tenant: u64,
    /// Runs waiting across all tenants beyond which new runs get 503 `queue-full` and
    /// `/readyz` reports not ready.
    #[arg(long, env = "AIRLOCK_MAX_QUEUE_DEPTH", default_value_t = airlock_runs::DEFAULT_MAX_QUEUE_DEPTH)]
    pub max_queue_depth: i64,
    /// How long an `Idempotency-Key` (or a webhook delivery id) holds the run it made; after
    /// it the same key makes a new run. Tenants with no run for this long also leave the
    /// claim rotation until their next run.
    #[arg(long, env = "AIRLOCK_IDEMPOTENCY_TTL", default_value = "24h", value_parser = crate::units::parse_timeout)]
    pub idempotency_ttl: Duration,
    /// Fire no cron ticks in this process (another process does; any number may).
    #[arg(long, env = "AIRLOCK_NO_SCHEDULER", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_scheduler: bool,
    /// A cron tick at most this late fires whatever its trigger's missed-ticks policy; an
    /// older one was missed (no process ran) and follows the policy.
    #[arg(long, env = "AIRLOCK_CRON_GRACE", default_value = "60s", value_parser = crate::units::parse_timeout)]
    pub cron_grace: Duration,
    /// Also accept tokens of this identity provider (OIDC): those whose `iss` is this value,
    /// checked with its JWKS; needs --oidc-audience and --oidc-jwks-url.
    #[arg(long, env = "AIRLOCK_OIDC_ISSUER", requires_all = ["oidc_audience", "oidc_jwks_url"])]
    pub oidc_issuer: Option<String>,
    /// The `aud` the provider's tokens must carry.
    #[arg(long, env = "AIRLOCK_OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,
    /// Where the provider's keys are fetched (https, or http to a loopback address).
    #[arg(long, env = "AIRLOCK_OIDC_JWKS_URL")]
    pub oidc_jwks_url: Option<String>,
    /// The claim holding the tenant id (absent for operators).
    #[arg(
        long,
        env = "AIRLOCK_OIDC_TENANT_CLAIM",
        default_value = "airlock_tenant"
    )]
    pub oidc_tenant_claim: String,
    /// The claim holding the role: viewer, editor, admin or operator.
    #[arg(long, env = "AIRLOCK_OIDC_ROLE_CLAIM", default_value = "airlock_role")]
    pub oidc_role_claim: String,
    /// The claim naming the caller (the audit log's actor).
    #[arg(long, env = "AIRLOCK_OIDC_SUBJECT_CLAIM", default_value = "sub")]
    pub oidc_subject_claim: String,
    /// The JWT secret from the environment, read once at parse time.
    #[arg(skip = std::env::var(JWT_SECRET_ENV).ok().map(Secret::new))]
    pub jwt_secret_env: Option<Secret>,
}

impl Config {
    /// A dev-mode configuration over `data_dir` with every other setting at its default, for
    /// tests and embedding.
    pub fn dev(data_dir: impl Into<PathBuf>) -> Config {
        let server = ServerOptions::default();
        let workers = WorkerOptions::default();
        let runs = RunsOptions::default();
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            database_url: None,
            mode: Mode::Dev,
            jwt_secret_file: None,
            keys_file: None,
            cors_origins: Vec::new(),
            max_component_bytes: 16 * 1024 * 1024,
            metrics: MetricsAccess::Operator,
            metrics_listen: None,
            metrics_tenant_cap: airlock_telemetry::DEFAULT_TENANT_CAP,
            otlp_endpoint: None,
            otlp_sample_ratio: 1.0,
            otlp_service_name: "airlock".into(),
            retention_every: airlock_runs::retention::DEFAULT_PERIOD,
            pool_size: 64,
            database_pool_size: StoreOptions::default().max_connections,
            credentials_follow_redirects_across_origins: false,
            outbound_allow_private: Vec::new(),
            outbound_allow_http: false,
            outbound_resolve: Vec::new(),
            header_read_timeout: server.header_read_timeout,
            idle_timeout: server.idle_timeout,
            request_timeout: server.request_timeout,
            max_connections: server.max_connections,
            health_connections: server.health_connections,
            max_requests_in_flight: server.max_requests_in_flight,
            shutdown_grace: server.shutdown_grace,
            workers: workers.workers,
            no_api: false,
            run_lease: workers.lease,
            run_heartbeat: workers.heartbeat,
            run_poll: workers.poll,
            run_reap_every: workers.reap_every,
            worker_grace: workers.grace,
            dead_letter_poll: workers.notices.poll,
            dead_letter_timeout: workers.notices.timeout,
            dead_letter_backoff: workers.notices.backoff.clone(),
            max_queued_runs_per_tenant: runs.max_queued_per_tenant,
            max_queue_depth: runs.max_queue_depth,
            idempotency_ttl: runs.idempotency_ttl,
            no_scheduler: false,
            cron_grace: SchedulerOptions::default().grace,
            oidc_issuer: None,
            oidc_audience: None,
            oidc_jwks_url: None,
            oidc_tenant_claim: "airlock_tenant".into(),
            oidc_role_claim: "airlock_role".into(),
            oidc_subject_claim: "sub".into(),
            jwt_secret_env: None,
        }
    }

    /// The durable-run workers' settings.
    pub fn worker_options(&self) -> WorkerOptions {
        WorkerOptions {
            workers: self.workers,
            lease: self.run_lease,
            heartbeat: self.run_heartbeat,
            poll: self.run_poll,
            reap_every: self.run_reap_every,
            grace: self.worker_grace,
            notices: airlock_runs::NoticeOptions {
                poll: self.dead_letter_poll,
                timeout: self.dead_letter_timeout,
                backoff: self.dead_letter_backoff.clone(),
            },
        }
    }

    /// The HTTP server's limits and timeouts.
    pub fn server_options(&self) -> ServerOptions {
        ServerOptions {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            request_timeout: self.request_timeout,
            max_connections: self.max_connections,
            health_connections: self.health_connections,
            max_requests_in_flight: self.max_requests_in_flight,
            shutdown_grace: self.shutdown_grace,
        }
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("airlock.db").display()
            ),
        }
    }

    pub fn jwt_secret_path(&self) -> PathBuf {
        self.jwt_secret_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("jwt.key"))
    }

    pub fn keys_path(&self) -> PathBuf {
        self.keys_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys.json"))
    }

    /// The identity provider whose tokens are accepted, if one is configured.
    pub fn oidc_options(&self) -> Result<Option<OidcOptions>, ConfigError> {
        let (Some(issuer), Some(audience), Some(jwks_url)) =
            (&self.oidc_issuer, &self.oidc_audience, &self.oidc_jwks_url)
        else {
            return Ok(None);
        };
        let jwks_url = airlock_api::oidc::Url::parse(jwks_url)
            .map_err(|e| ConfigError::Oidc(format!("--oidc-jwks-url {jwks_url}: {e}")))?;
        let options = OidcOptions {
            issuer: issuer.clone(),
            audience: audience.clone(),
            jwks_url,
            tenant_claim: self.oidc_tenant_claim.clone(),
            role_claim: self.oidc_role_claim.clone(),
            subject_claim: self.oidc_subject_claim.clone(),
        };
        options
            .check()
            .map_err(|e| ConfigError::Oidc(e.to_string()))?;
        Ok(Some(options))
    }

    /// The token signing key set (`airlock token keys`): beside the keyring.
    pub fn token_keys_path(&self) -> PathBuf {
        self.data_dir.join("token-keys.json")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.data_dir.join("artifacts")
    }

    /// Checks what does not need files: a wildcard CORS origin in production.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mode == Mode::Production && self.cors_origins.iter().any(|o| o.trim() == "*") {
            return Err(ConfigError::WildcardCors);
        }
        Ok(())
    }

    /// Loads (dev: creates if missing) the JWT secret and the keyring, refusing in production
    /// what is missing or default. `Keys::generated` says what was created, for the log.
    pub fn load_keys(&self) -> Result<Keys, ConfigError> {
        self.validate()?;
        if self.mode == Mode::Dev {
            create_private_dir(&self.data_dir)
                .map_err(|e| ConfigError::DataDir(format!("{}: {e}", self.data_dir.display())))?;
        }
        let mut generated = Vec::new();
        let jwt_secret = match &self.jwt_secret_env {
            Some(secret) => secret.clone(),
            None => {
                let path = self.jwt_secret_path();
                match fs::read_to_string(&path) {
                    Ok(text) => Secret::new(text.trim()),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::NotFound && self.mode == Mode::Dev =>
                    {
                        let secret = generate_jwt_secret(&path)?;
                        generated.push(path);
                        secret
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(ConfigError::MissingJwtSecret(path.display().to_string()));
                    }
                    Err(e) => {
                        return Err(ConfigError::JwtSecretFile(format!(
                            "{}: {e}",
                            path.display()
                        )));
                    }
                }
            }
        };
        if jwt_secret.is_empty() {
            return Err(ConfigError::MissingJwtSecret(
                self.jwt_secret_path().display().to_string(),
            ));
        }
        if self.mode == Mode::Production && is_default_jwt_secret(&jwt_secret) {
            return Err(ConfigError::DefaultJwtSecret);
        }

        let keys_path = self.keys_path();
        let keyring = match self.mode {
            Mode::Dev => {
                let (keyring, created) =
                    Keyring::load_or_create(&keys_path).map_err(ConfigError::Keys)?;
                if created {
                    generated.push(keys_path);
                }
                keyring
            }
            Mode::Production => match Keyring::load(&keys_path) {
                Ok(keyring) => keyring,
                Err(SecretsError::MissingKeyFile { .. }) => {
                    return Err(ConfigError::MissingKeys(keys_path.display().to_string()));
                }
                Err(e) => return Err(ConfigError::Keys(e)),
            },
        };
        if self.mode == Mode::Production && keyring.is_default_or_weak() {
            return Err(ConfigError::WeakKeys(
                keyring
                    .ensure_strong()
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
            ));
        }
        Ok(Keys {
            jwt_secret,
            keyring,
            generated,
        })
    }
}

/// The secrets the service starts with.
#[derive(Debug)]
pub struct Keys {
    pub jwt_secret: Secret,
    pub keyring: Keyring,
    /// Files dev mode created on this start.
    pub generated: Vec<PathBuf>,
}

/// Why `airlock serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
}

impl Config {
    /// The runtime options `airlock serve` uses.
    pub fn runtime_options(&self) -> RuntimeOptions {
        let mut resolve_overrides = std::collections::HashMap::<String, Vec<SocketAddr>>::new();
        for (host, addr) in &self.outbound_resolve {
            resolve_overrides
                .entry(host.clone())
                .or_default()
                .push(*addr);
        }
        let mut options = RuntimeOptions {
            cache_dir: Some(self.cache_dir()),
            outbound: OutboundConfig {
                credentials_follow_redirects_across_origins: self
                    .credentials_follow_redirects_across_origins,
                allow_http: self.outbound_allow_http,
                allowed_private_ranges: self.outbound_allow_private.clone(),
                resolve_overrides,
                ..OutboundConfig::default()
            },
            metrics: Arc::new(airlock_telemetry::Metrics::new(self.metrics_tenant_cap)),
            ..RuntimeOptions::default()
        };
        options.engine.pool_size = self.pool_size;
        options
    }

    /// What this process calls itself on its PostgreSQL connections (`pg_stat_activity`):
    /// its roles and its process id, e.g. `airlock api+workers+scheduler pid 4242`.
    pub fn application_name(&self) -> String {
        let roles: Vec<&str> = [
            (!self.no_api, "api"),
            (self.workers > 0, "workers"),
            (!self.no_scheduler, "scheduler"),
        ]
        .into_iter()
        .filter_map(|(on, role)| on.then_some(role))
        .collect();
        let roles = if roles.is_empty() {
            "health".to_owned()
        } else {
            roles.join("+")
        };
        format!("airlock {roles} pid {}", std::process::id())
    }

    /// Loads the keys (generating them in dev mode, logged) and starts the service with
    /// `runtime`: the database connected and migrated, the runtime and pipeline built.
    pub async fn start_service(&self, runtime: RuntimeOptions) -> Result<Service, ServeError> {
        Ok(Service::start(self.service_options(runtime)?).await?)
    }

    /// What [`Config::start_service`] starts the service with: the keys loaded (generated in
    /// dev mode, logged), the system clock.
    pub fn service_options(&self, runtime: RuntimeOptions) -> Result<ServiceOptions, ConfigError> {
        let keys = self.load_keys()?;
        for path in &keys.generated {
            tracing::warn!(path = %path.display(), "dev mode: generated a new key file");
        }
        let options = ServiceOptions {
            database_url: self.database_url(),
            store: StoreOptions {
                max_connections: self.database_pool_size,
                application_name: Some(self.application_name()),
                ..StoreOptions::default()
            },
            keyring: keys.keyring,
            keys_path: Some(self.keys_path()),
            jwt_secret: keys.jwt_secret,
            token_keys_path: Some(self.token_keys_path()),
            oidc: self.oidc_options()?,
            max_component_bytes: self.max_component_bytes,
            cors_origins: self.cors_origins.clone(),
            server: self.server_options(),
            runtime,
            clock: Arc::new(SystemClock),
            api: !self.no_api,
            workers: self.worker_options(),
            runs: RunsOptions {
                max_queued_per_tenant: self.max_queued_runs_per_tenant,
                max_queue_depth: self.max_queue_depth,
                idempotency_ttl: self.idempotency_ttl,
            },
            scheduler: SchedulerOptions {
                enabled: !self.no_scheduler,
                grace: self.cron_grace,
                ..SchedulerOptions::default()
            },
            metrics: self.metrics.into(),
            retention_every: self.retention_every,
            otlp: self
                .otlp_endpoint
                .as_deref()
                .map(|endpoint| {
                    OtlpOptions::new(endpoint, &self.otlp_service_name, self.otlp_sample_ratio)
                })
                .transpose()
                .map_err(ConfigError::Otlp)?,
        };
        Ok(options)
    }
}

/// `HOST=IP:PORT` for `--outbound-resolve`.
fn parse_resolve(text: &str) -> Result<(String, SocketAddr), String> {
    let (host, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not HOST=IP:PORT"))?;
    let addr = addr
        .parse::<SocketAddr>()
        .map_err(|e| format!("`{addr}` is not IP:PORT: {e}"))?;
    if host.is_empty() {
        return Err(format!("`{text}` names no host"));
    }
    Ok((host.to_ascii_lowercase(), addr))
}

/// Why the service refuses to start. Messages name the setting to fix, never a key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "production mode needs a JWT secret: set {JWT_SECRET_ENV} or --jwt-secret-file (no file at {0})"
    )]
    MissingJwtSecret(String),
    #[error(
        "production mode refuses a default or short JWT secret: use at least {MIN_JWT_SECRET_BYTES} random bytes, e.g. `openssl rand -hex 32`"
    )]
    DefaultJwtSecret,
    #[error("cannot read the JWT secret file {0}")]
    JwtSecretFile(String),
    #[error(
        "production mode needs an encryption key file: create {0} (see docs/operations.md) or pass --keys-file"
    )]
    MissingKeys(String),
    #[error("production mode refuses a default or weak encryption key: {0}")]
    WeakKeys(String),
    #[error("encryption keys: {0}")]
    Keys(SecretsError),
    #[error(
        "production mode refuses a wildcard CORS origin (`*`): list the allowed origins with --cors-origin"
    )]
    WildcardCors,
    #[error("cannot create the data directory {0}")]
    DataDir(String),
    #[error("OIDC: {0}")]
    Oidc(String),
    #[error("--otlp-endpoint: {0}")]
    Otlp(String),
}

pub fn is_default_jwt_secret(secret: &Secret) -> bool {
    let value = secret.expose();
    let lower = value.to_ascii_lowercase();
    value.len() < MIN_JWT_SECRET_BYTES
        || DEFAULT_JWT_SECRETS
            .iter()
            .any(|d| lower.contains(d) && lower.len() < 2 * MIN_JWT_SECRET_BYTES)
        || value.bytes().all(|b| b == value.as_bytes()[0])
}

pub use airlock_secrets::private_dir::create_private_dir;

/// 32 random bytes, hex-encoded, written with owner-only permissions.
fn generate_jwt_secret(path: &Path) -> Result<Secret, ConfigError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ConfigError::JwtSecretFile(format!("random: {e}")))?;
    let secret = Secret::new(hex::encode(bytes));
    if let Some(dir) = path.parent() {
        create_private_dir(dir)
            .map_err(|e| ConfigError::DataDir(format!("{}: {e}", dir.display())))?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| ConfigError::JwtSecretFile(format!("{}: {e}", path.display())))?;
    file.write_all(secret.expose().as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .map_err(|e| ConfigError::JwtSecretFile(format!("{}: {e}", path.display())))?;
    Ok(secret)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn outbound_resolve_is_host_equals_ip_and_port() {
        assert_eq!(
            parse_resolve("API.example.test=127.0.0.1:8443").unwrap(),
            (
                "api.example.test".to_owned(),
                "127.0.0.1:8443".parse().unwrap()
            )
        );
        assert!(parse_resolve("[::1]:443").is_err(), "no host");
        assert!(parse_resolve("=127.0.0.1:443").is_err());
        assert!(
            parse_resolve("api.example.test=127.0.0.1").is_err(),
            "no port"
        );
        assert!(parse_resolve("api.example.test=example.com:443").is_err());
    }
}
