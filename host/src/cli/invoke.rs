//! `airlock invoke` and `airlock manifest`: run one action of a connector from the shell. The
//! connector is a component (`.wasm`) or a declarative definition (`.json`, `.yaml`, `.yml`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use serde_json::json;

use super::{EXIT_FAILED, EXIT_SETUP, ManifestArgs, RuntimeArgs};
use crate::units::{parse_bytes, parse_millis};
use airlock_core::definitions::{Syntax, canonical};
use airlock_runtime::outbound::{AuthSpec, Credential};
use airlock_runtime::{
    InvokeOutcome, InvokeRequest, Runtime, RuntimeOptions, SharedComponent, TenantLimits,
};
use airlock_secrets::Secret;

#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// Path to the component (.wasm) or declarative definition (.json, .yaml, .yml).
    pub component: PathBuf,
    /// The action to run (see `airlock manifest`).
    pub action: String,
    /// The action's input as JSON.
    #[arg(long, conflicts_with = "input_file", default_value = "{}")]
    pub input: String,
    /// Read the input JSON from a file.
    #[arg(long)]
    pub input_file: Option<PathBuf>,
    /// Fuel for the invocation (about one unit per wasm instruction).
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Memory limit, e.g. 64MiB.
    #[arg(long, value_parser = parse_bytes)]
    pub memory: Option<u64>,
    /// Wall-clock limit, e.g. 30s or 500ms.
    #[arg(long, value_parser = parse_millis)]
    pub timeout: Option<u64>,
    /// A host the guest may reach (repeatable); intersected with the connector's declared
    /// hosts. Without it, every declared host is allowed.
    #[arg(long = "allow-host")]
    pub allow_hosts: Vec<String>,
    /// Name of an environment variable holding the connection's secret (API key, token,
    /// `user:password` for basic auth). Secrets are never taken from the command line.
    #[arg(long)]
    pub secret_env: Option<String>,
    /// The connection's config as a JSON object, checked against the connector's
    /// `config_schema` (`{}` when absent). Not for secrets: see --secret-env.
    #[arg(long)]
    pub config: Option<String>,
    /// Print `{ok, output, error, logs, stats}` as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
}

/// Operator-level outbound settings, for trying connectors against local servers.
#[derive(Debug, Clone, Args)]
pub struct NetworkArgs {
    /// Allow plain http:// URLs (https only by default).
    #[arg(long)]
    pub allow_http: bool,
    /// Allow an otherwise blocked address range, e.g. 127.0.0.0/8 (repeatable).
    #[arg(long = "allow-private")]
    pub allow_private: Vec<ipnet::IpNet>,
    /// Resolve a host to an address instead of using DNS: `api.example.test=127.0.0.1:8080`.
    #[arg(long = "resolve", value_parser = parse_resolve)]
    pub resolve: Vec<(String, std::net::SocketAddr)>,
    /// Let a redirect to another declared origin carry the credential (as `airlock serve`'s
    /// flag of the same name).
    #[arg(long)]
    pub credentials_follow_redirects_across_origins: bool,
    /// A PEM file of CA certificates trusted for outbound HTTPS on top of the built-in roots,
    /// e.g. a local test server's CA (repeatable). Certificates are always checked.
    #[arg(long = "ca-cert", value_name = "PATH")]
    pub ca_certs: Vec<PathBuf>,
}

fn parse_resolve(text: &str) -> Result<(String, std::net::SocketAddr), String> {
    let (host, addr) = text.split_once('=').ok_or("expected HOST=IP:PORT")?;
    let addr = addr.parse().map_err(|e| format!("`{addr}`: {e}"))?;
    Ok((host.to_ascii_lowercase(), addr))
}

pub fn runtime_options(
    runtime: &RuntimeArgs,
    network: Option<&NetworkArgs>,
) -> Result<RuntimeOptions, String> {
    let mut options = RuntimeOptions {
        cache_dir: runtime.cache_dir.clone(),
        ..RuntimeOptions::default()
    };
    if let Some(network) = network {
        for path in &network.ca_certs {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the CA certificate {}: {e}", path.display()))?;
            options.outbound.extra_root_certificates.push(pem);
        }
        options.outbound.allow_http = network.allow_http;
        options.outbound.allowed_private_ranges = network.allow_private.clone();
        options.outbound.credentials_follow_redirects_across_origins =
            network.credentials_follow_redirects_across_origins;
        for (host, addr) in &network.resolve {
            options
                .outbound
                .resolve_overrides
                .entry(host.clone())
                .or_default()
                .push(*addr);
        }
    }
    Ok(options)
}

/// Loads a connector file: a component, or a declarative definition, which is turned into
/// its stored form first (YAML to JSON), as an upload is.
pub async fn load_connector(runtime: &Runtime, path: &Path) -> Result<SharedComponent, String> {
    let declarative = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("json" | "yaml" | "yml")
    );
    if !declarative {
        return runtime.load_file(path).await.map_err(|e| e.to_string());
    }
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bytes = canonical(&text, Syntax::from_path(path))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    runtime
        .load(&bytes)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub async fn manifest(args: ManifestArgs) -> ExitCode {
    let setup = async {
        let runtime =
            Runtime::new(runtime_options(&args.runtime, None)?).map_err(|e| e.to_string())?;
        let component = load_connector(&runtime, &args.component).await?;
        serde_json::to_string_pretty(component.manifest().manifest()).map_err(|e| e.to_string())
    };
    match setup.await {
        Ok(json) => {
            outln!("{json}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            errln!("error: {error}");
            ExitCode::from(EXIT_SETUP)
        }
    }
}

pub async fn run(args: InvokeArgs) -> ExitCode {
    let outcome = match invoke(&args).await {
        Ok(outcome) => outcome,
        Err(error) => {
            errln!("error: {error}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    print(&outcome, args.json);
    if outcome.result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

async fn invoke(args: &InvokeArgs) -> Result<InvokeOutcome, String> {
    let input = match &args.input_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        None => args.input.clone(),
    };
    let mut limits = TenantLimits::default();
    if let Some(fuel) = args.fuel {
        limits.fuel = fuel;
    }
    if let Some(memory) = args.memory {
        limits.memory_bytes = memory;
    }
    if let Some(timeout) = args.timeout {
        limits.timeout_ms = timeout;
    }
    if !args.allow_hosts.is_empty() {
        limits.allowed_hosts = args.allow_hosts.clone();
    }
    let options = runtime_options(&args.runtime, Some(&args.network))?;
    // The CLI is the operator: validate against the engine's own caps.
    let caps = airlock_runtime::LimitCaps {
        memory_bytes: options.engine.max_memory_bytes,
        ..Default::default()
    };
    limits.validate(&caps).map_err(|e| e.to_string())?;

    let config: serde_json::Value = match &args.config {
        Some(text) => {
            serde_json::from_str(text).map_err(|e| format!("--config is not JSON: {e}"))?
        }
        None => json!({}),
    };

    let runtime = Runtime::new(options).map_err(|e| e.to_string())?;
    let component = load_connector(&runtime, &args.component).await?;
    // As the API checks a connection's config when it is saved.
    component
        .manifest()
        .manifest()
        .check_config(&config)
        .map_err(|violation| {
            let at = match violation.pointer.as_str() {
                "" => String::new(),
                pointer => format!(" at {pointer}"),
            };
            let hint = if args.config.is_none() {
                " (pass the connection's config with --config '{...}')"
            } else {
                ""
            };
            format!(
                "the config does not fit the connector{at}: {}{hint}",
                violation.message
            )
        })?;
    let credential = match &args.secret_env {
        Some(var) => {
            let value =
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?;
            credential_for(&component.manifest().manifest().auth, Secret::new(value))?
        }
        None => Credential::None,
    };
    let request = InvokeRequest::action("cli", &args.action, input)
        .with_limits(limits)
        .with_credential(credential)
        .with_config(Arc::new(config));
    // The pipeline's last stage: the same checks, run and refused-or-ran split as the API.
    Ok(
        match airlock_core::local::invoke(&runtime, &component, request).await {
            Ok(outcome) => outcome,
            Err(refused) => InvokeOutcome::refused(refused),
        },
    )
}

/// Shapes a single secret into the credential the connector's auth type expects.
fn credential_for(auth: &AuthSpec, secret: Secret) -> Result<Credential, String> {
    Ok(match auth {
        AuthSpec::None => {
            return Err("the connector declares no auth; --secret-env has nowhere to go".into());
        }
        AuthSpec::ApiKey { .. } => Credential::ApiKey(secret),
        AuthSpec::OAuth2 { .. } => Credential::oauth2(secret),
        AuthSpec::Basic => {
            let (username, password) = secret
                .expose()
                .split_once(':')
                .ok_or("basic auth expects the variable to hold `username:password`")?;
            Credential::Basic {
                username: username.to_owned(),
                password: Secret::new(password),
            }
        }
        AuthSpec::CustomHeader { headers } => match headers.as_slice() {
            [name] => Credential::CustomHeaders(vec![(name.clone(), secret)]),
            _ => {
                return Err(
                    "this connector takes several custom headers; use the API to set them".into(),
                );
            }
        },
    })
}

fn print(outcome: &InvokeOutcome, as_json: bool) {
    if as_json {
        let (output, error) = match &outcome.result {
            Ok(output) => (output.clone(), serde_json::Value::Null),
            Err(error) => (serde_json::Value::Null, json!(error)),
        };
        let document = json!({
            "ok": outcome.result.is_ok(),
            "output": output,
            "error": error,
            "logs": outcome.logs,
            "stats": outcome.stats,
        });
        outln!(
            "{}",
            serde_json::to_string_pretty(&document).unwrap_or_default()
        );
        return;
    }
    for line in &outcome.logs.lines {
        errln!("[{:?} {:?}] {}", line.source, line.level, line.message);
    }
    if outcome.logs.dropped_lines > 0 || outcome.logs.dropped_bytes > 0 {
        errln!(
            "[log truncated: {} lines, {} bytes dropped]",
            outcome.logs.dropped_lines,
            outcome.logs.dropped_bytes
        );
    }
    match &outcome.result {
        Ok(output) => outln!(
            "{}",
            serde_json::to_string_pretty(output).unwrap_or_default()
        ),
        Err(error) => {
            let at = error
                .pointer
                .as_deref()
                .map(|p| format!(" (at {p})"))
                .unwrap_or_default();
            errln!("error: {}: {}{at}", error.kind, error.message);
        }
    }
    let s = &outcome.stats;
    errln!(
        "stats: {} µs, fuel {}, peak memory {} B, outbound {} requests ({} denied, {} B out, {} B in){}",
        s.duration_us,
        s.fuel_used,
        s.peak_memory_bytes,
        s.outbound_requests,
        s.outbound_denied,
        s.outbound_bytes_out,
        s.outbound_bytes_in,
        s.limit_hit
            .map(|k| format!(", limit hit: {k}"))
            .unwrap_or_default()
    );
}
