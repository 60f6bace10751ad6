//! `Definition` and `Action`: what a connector declares, and the manifest JSON
//! (docs/manifest.md) generated from it, schemas included.

use std::collections::HashSet;

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::auth::Auth;
use crate::context::Context;
use crate::error::ConnectorError;

/// Everything a connector declares: identity, auth, hosts and actions.
pub struct Definition {
    name: String,
    version: String,
    description: String,
    auth: Auth,
    hosts: Vec<String>,
    config_schema: Option<Value>,
    actions: Vec<Action>,
    fallback: Option<Fallback>,
}

/// Runs an action the definition does not list: the declarative runner's dispatch.
pub(crate) type Fallback = fn(&Context, &str, &str) -> Result<String, ConnectorError>;

impl Definition {
    /// `version` is usually `env!("CARGO_PKG_VERSION")`, so the manifest follows the crate.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Definition {
            name: name.into(),
            version: version.into(),
            description: String::new(),
            auth: Auth::None,
            hosts: Vec::new(),
            config_schema: None,
            actions: Vec::new(),
            fallback: None,
        }
    }

    /// The JSON Schema of a connection's config (an object schema): the host checks each
    /// connection's config against it, actions read it with `cx.config()`, and `hosts` may
    /// name its properties (`{config.subdomain}.example.com`, `{config.hosts*}`).
    pub fn config_schema(mut self, schema: Value) -> Self {
        self.config_schema = Some(schema);
        self
    }

    /// Every action name the definition does not list goes to `handler` (with its raw JSON
    /// input). For the declarative runner, whose actions are the definition's it is given.
    #[doc(hidden)]
    pub fn fallback(
        mut self,
        handler: fn(&Context, &str, &str) -> Result<String, ConnectorError>,
    ) -> Self {
        self.fallback = Some(handler);
        self
    }

    pub(crate) fn fallback_handler(&self) -> Option<Fallback> {
        self.fallback
    }

    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    pub fn auth(mut self, auth: impl Into<Auth>) -> Self {
        self.auth = auth.into();
        self
    }

    /// A host the connector may call: `api.example.com`, `*.example.com`, or `*` (any host the
    /// tenant allows, and never with a credential).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.hosts.push(host.into());
        self
    }

    pub fn action(mut self, action: Action) -> Self {
        self.actions.push(action);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    pub(crate) fn find_action(&self, name: &str) -> Option<&Action> {
        self.actions.iter().find(|a| a.name == name)
    }

    /// The manifest as the host reads it.
    pub fn manifest(&self) -> Value {
        let manifest = ManifestJson {
            name: &self.name,
            version: &self.version,
            description: &self.description,
            auth: &self.auth,
            hosts: &self.hosts,
            config_schema: self.config_schema.as_ref(),
            actions: self.actions.iter().map(Action::manifest).collect(),
        };
        // Every field is a string, a list or an already-built `Value`, none of which can fail.
        serde_json::to_value(manifest).unwrap_or(Value::Null)
    }

    /// Rule violations the host would reject the manifest for (docs/manifest.md), so a
    /// connector's own `cargo test` catches them before a load does.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !is_valid_name(&self.name) {
            problems.push(format!(
                "connector name {:?} must be 1-64 of a-z, 0-9, '-', '_' starting with a letter",
                self.name
            ));
        }
        if !is_semver(&self.version) {
            problems.push(format!(
                "version {:?} is not MAJOR.MINOR.PATCH",
                self.version
            ));
        }
        for host in &self.hosts {
            let bare = host.strip_prefix("*.").unwrap_or(host);
            // `{config.NAME}` entries are checked by the host against `config_schema`.
            if host.contains("{config.") {
                if self.config_schema.is_none() {
                    problems.push(format!(
                        "host {host:?} reads the config: set a config_schema"
                    ));
                }
                continue;
            }
            if host != "*" && (bare.is_empty() || bare.contains(['*', '/', ':', ' '])) {
                problems.push(format!(
                    "host {host:?} must be a host name, '*.suffix' or '*'"
                ));
            }
        }
        if self.actions.is_empty() {
            problems.push("a connector needs at least one action".into());
        }
        let mut seen = HashSet::new();
        for action in &self.actions {
            if !is_valid_name(&action.name) {
                problems.push(format!(
                    "action name {:?} breaks the naming rule",
                    action.name
                ));
            }
            if !seen.insert(action.name.as_str()) {
                problems.push(format!("action {:?} is declared twice", action.name));
            }
            if action.retry.is_some_and(|r| r.max_attempts == 0) {
                problems.push(format!(
                    "action {:?}: retry.max_attempts must be >= 1",
                    action.name
                ));
            }
        }
        problems
    }
}

fn is_valid_name(name: &str) -> bool {
    airlock_contract::connector::check_name(name).is_ok()
}

fn is_semver(version: &str) -> bool {
    airlock_contract::connector::check_version(version).is_ok()
}

#[derive(Serialize)]
struct ManifestJson<'a> {
    name: &'a str,
    version: &'a str,
    description: &'a str,
    auth: &'a Auth,
    hosts: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    config_schema: Option<&'a Value>,
    actions: Vec<Value>,
}

type Handler = Box<dyn Fn(&Context, &str) -> Result<String, ConnectorError>>;

/// One action: a typed function plus what the manifest says about it.
pub struct Action {
    name: String,
    description: String,
    timeout_ms: Option<u64>,
    retry: Option<Retry>,
    // Schemas are built only when the manifest is asked for, never on the invoke path.
    input_schema: fn() -> Value,
    output_schema: fn() -> Value,
    handler: Handler,
}

impl Action {
    /// `handler` is any `fn(&Context, I) -> Result<O, ConnectorError>`: the SDK decodes `I`
    /// from the input JSON (failures become `invalid_input`), encodes `O`, and derives both
    /// schemas from the types.
    pub fn new<I, O, F>(name: impl Into<String>, handler: F) -> Self
    where
        I: DeserializeOwned + JsonSchema,
        O: Serialize + JsonSchema,
        F: Fn(&Context, I) -> Result<O, ConnectorError> + 'static,
    {
        Action {
            name: name.into(),
            description: String::new(),
            timeout_ms: None,
            retry: None,
            input_schema: schema_of::<I, true>,
            output_schema: schema_of::<O, false>,
            handler: Box::new(move |cx, input| {
                let input: I = serde_json::from_str(input).map_err(|e| {
                    ConnectorError::invalid_input(format_args!("invalid input: {e}"))
                })?;
                let output = handler(cx, input)?;
                serde_json::to_string(&output).map_err(|e| {
                    ConnectorError::internal(format_args!("output does not serialize: {e}"))
                })
            }),
        }
    }

    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// The action's wall-clock budget; the host clamps it to the tenant's limit.
    pub fn timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.timeout_ms = Some(timeout_ms);
        self
    }

    /// How durable runs retry this action after a retryable error.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    pub(crate) fn call(&self, cx: &Context, input: &str) -> Result<String, ConnectorError> {
        (self.handler)(cx, input)
    }

    /// The input and output schemas, as the manifest carries them (for `MockHost`'s checks).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn schemas(&self) -> (Value, Value) {
        ((self.input_schema)(), (self.output_schema)())
    }

    fn manifest(&self) -> Value {
        let mut action = serde_json::json!({
            "name": self.name,
            "description": self.description,
            "input_schema": (self.input_schema)(),
            "output_schema": (self.output_schema)(),
        });
        if let Some(timeout_ms) = self.timeout_ms {
            action["timeout_ms"] = timeout_ms.into();
        }
        if let Some(retry) = self.retry {
            action["retry"] = serde_json::json!(retry);
        }
        action
    }
}

/// The schema of `T` as the host validates it: draft 2020-12, definitions inline under
/// `$defs`. Inputs use serde's deserialize view (`default` fields are optional) and outputs
/// the serialize view (`skip_serializing_if` fields are optional), since those are the two
/// directions the JSON travels.
fn schema_of<T: JsonSchema, const INPUT: bool>() -> Value {
    let settings = SchemaSettings::draft2020_12();
    let settings = if INPUT {
        settings.for_deserialize()
    } else {
        settings.for_serialize()
    };
    match settings
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
    {
        // The manifest format wants objects; `true` and `{}` accept the same documents.
        Value::Bool(true) => Value::Object(Default::default()),
        Value::Bool(false) => serde_json::json!({ "not": {} }),
        schema => schema,
    }
}

/// Retry policy for durable runs (`max_attempts` counts the first attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Retry {
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Retry {
    /// Up to `max_attempts` attempts with backoff from 1 s doubling to at most 60 s.
    pub fn attempts(max_attempts: u32) -> Self {
        Retry {
            max_attempts,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 60_000,
        }
    }

    pub fn initial_backoff_ms(mut self, ms: u64) -> Self {
        self.initial_backoff_ms = ms;
        self
    }

    pub fn max_backoff_ms(mut self, ms: u64) -> Self {
        self.max_backoff_ms = ms;
        self
    }
}
