//! The connector manifest: parsed from the guest's `manifest()` export, validated once at
//! load, with every action's JSON Schemas compiled for reuse on each invocation.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{AuthConfigError, AuthSpec};
use crate::host_entry::{HostEntry, HostEntryError};
use crate::hosts::HostPattern;

/// The manifest exactly as the guest declared it (see `docs/manifest.md`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub auth: AuthSpec,
    /// Patterns, or patterns with `{config.NAME}` labels, or `{config.NAME*}` (a list in the
    /// connection's config): see `host_entry.rs`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// JSON Schema of a connection's non-secret config (base URL parts, region, account id),
    /// checked when a connection is created; `None`: connections take no config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_schema: Option<Value>,
    pub actions: Vec<ActionSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub input_schema: Value,
    pub output_schema: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    #[serde(default = "RetryPolicy::default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    #[serde(default = "RetryPolicy::default_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

impl RetryPolicy {
    fn default_initial_backoff_ms() -> u64 {
        1_000
    }
    fn default_max_backoff_ms() -> u64 {
        60_000
    }
}

/// Why a manifest was refused. Each message names the offending field.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON for the manifest format: {0}")]
    Parse(String),
    #[error("manifest field `{field}` is invalid: {reason}")]
    Field { field: String, reason: String },
    #[error("schema `{field}` is not a valid JSON Schema: {reason}")]
    Schema { field: String, reason: String },
}

/// A manifest that passed validation, with compiled schemas and parsed host patterns.
pub struct ValidatedManifest {
    manifest: Manifest,
    hosts: Vec<HostEntry>,
    config: Option<jsonschema::Validator>,
    actions: HashMap<String, CompiledAction>,
}

impl fmt::Debug for ValidatedManifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidatedManifest")
            .field("name", &self.manifest.name)
            .field("version", &self.manifest.version)
            .finish_non_exhaustive()
    }
}

/// One action's compiled schemas.
pub struct CompiledAction {
    pub spec: ActionSpec,
    input: jsonschema::Validator,
    output: jsonschema::Validator,
}

/// A value that failed an action's schema: where (a JSON pointer) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaViolation {
    pub pointer: String,
    pub message: String,
}

impl CompiledAction {
    pub fn check_input(&self, value: &Value) -> Result<(), SchemaViolation> {
        check(&self.input, value)
    }

    pub fn check_output(&self, value: &Value) -> Result<(), SchemaViolation> {
        check(&self.output, value)
    }
}

fn check(validator: &jsonschema::Validator, value: &Value) -> Result<(), SchemaViolation> {
    match validator.validate(value) {
        Ok(()) => Ok(()),
        Err(error) => Err(SchemaViolation {
            pointer: error.instance_path().to_string(),
            message: error.to_string(),
        }),
    }
}

impl Manifest {
    /// Checks a connection's config for this (stored, already validated) manifest: against
    /// `config_schema`, and every `{config.NAME}` host resolves with it. Compiles only the
    /// config schema.
    pub fn check_config(&self, config: &Value) -> Result<(), SchemaViolation> {
        if !config.is_object() {
            return Err(SchemaViolation {
                pointer: String::new(),
                message: "the config is a JSON object".into(),
            });
        }
        match &self.config_schema {
            Some(schema) => {
                let validator = jsonschema::validator_for(schema).map_err(|e| SchemaViolation {
                    pointer: String::new(),
                    message: format!("the connector's config_schema does not compile: {e}"),
                })?;
                check(&validator, config)?;
            }
            None if config.as_object().is_some_and(|o| o.is_empty()) => {}
            None => {
                return Err(SchemaViolation {
                    pointer: String::new(),
                    message: "this connector takes no config".into(),
                });
            }
        }
        self.hosts_for(config).map_err(|e| SchemaViolation {
            pointer: String::new(),
            message: e.to_string(),
        })?;
        self.auth
            .resolve(config, self.config_schema.as_ref())
            .map_err(|e| SchemaViolation {
                pointer: String::new(),
                message: e.to_string(),
            })?;
        Ok(())
    }

    /// The declared hosts for a connection with `config`, from this stored manifest.
    pub fn hosts_for(&self, config: &Value) -> Result<Vec<HostPattern>, HostEntryError> {
        let mut patterns = Vec::with_capacity(self.hosts.len());
        for host in &self.hosts {
            patterns.extend(HostEntry::parse(host)?.resolve(config)?);
        }
        Ok(patterns)
    }
}

/// Manifests are read from guest memory; bound them before parsing.
pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;

impl ValidatedManifest {
    pub fn parse(json: &str) -> Result<Self, ManifestError> {
        if json.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::Parse(format!(
                "manifest is {} bytes, more than the {MAX_MANIFEST_BYTES} allowed",
                json.len()
            )));
        }
        let manifest: Manifest =
            serde_json::from_str(json).map_err(|e| ManifestError::Parse(e.to_string()))?;
        Self::validate(manifest)
    }

    pub fn validate(manifest: Manifest) -> Result<Self, ManifestError> {
        check_name("name", &manifest.name)?;
        check_version(&manifest.version)?;
        let hosts = manifest
            .hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                HostEntry::parse(host).map_err(|e| field(format!("hosts[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let config = match &manifest.config_schema {
            Some(schema) => {
                if schema.get("type").and_then(Value::as_str) != Some("object") {
                    return Err(field(
                        "config_schema",
                        "must be a JSON Schema with `\"type\": \"object\"`",
                    ));
                }
                Some(compile("config_schema", schema)?)
            }
            None => None,
        };
        let declared = |name: &str| {
            manifest
                .config_schema
                .as_ref()
                .and_then(|s| s.get("properties"))
                .and_then(|p| p.get(name))
                .is_some()
        };
        for (i, entry) in hosts.iter().enumerate() {
            if let Some(name) = entry.config_names().into_iter().find(|n| !declared(n)) {
                return Err(field(
                    format!("hosts[{i}]"),
                    format!("`config_schema` declares no property `{name}`"),
                ));
            }
        }
        manifest
            .auth
            .check(declared)
            .map_err(|(name, reason)| field(name, reason))?;
        if manifest.actions.is_empty() {
            return Err(field("actions", "a connector needs at least one action"));
        }
        let mut actions = HashMap::with_capacity(manifest.actions.len());
        for (i, spec) in manifest.actions.iter().enumerate() {
            check_name(&format!("actions[{i}].name"), &spec.name)?;
            if let Some(retry) = &spec.retry
                && retry.max_attempts == 0
            {
                return Err(field(
                    format!("actions[{i}].retry.max_attempts"),
                    "must be at least 1",
                ));
            }
            if spec.timeout_ms == Some(0) {
                return Err(field(
                    format!("actions[{i}].timeout_ms"),
                    "must be positive",
                ));
            }
            let compiled = CompiledAction {
                input: compile(&format!("actions[{i}].input_schema"), &spec.input_schema)?,
                output: compile(&format!("actions[{i}].output_schema"), &spec.output_schema)?,
                spec: spec.clone(),
            };
            if actions.insert(spec.name.clone(), compiled).is_some() {
                return Err(field(
                    format!("actions[{i}].name"),
                    format!("duplicate action `{}`", spec.name),
                ));
            }
        }
        Ok(Self {
            manifest,
            hosts,
            config,
            actions,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn host_entries(&self) -> &[HostEntry] {
        &self.hosts
    }

    /// The declared hosts for a connection with `config` (`{}` without a connection).
    pub fn hosts_for(&self, config: &Value) -> Result<Vec<HostPattern>, HostEntryError> {
        let mut patterns = Vec::with_capacity(self.hosts.len());
        for entry in &self.hosts {
            patterns.extend(entry.resolve(config)?);
        }
        Ok(patterns)
    }

    /// The auth for a connection with `config`: `{config.NAME}` fields filled in from it
    /// (or from the property's `default` in `config_schema`).
    pub fn auth_for(&self, config: &Value) -> Result<AuthSpec, AuthConfigError> {
        self.manifest
            .auth
            .resolve(config, self.manifest.config_schema.as_ref())
    }

    /// Checks a connection's config against `config_schema`. Without one, only `{}` (or no
    /// config) is accepted: a connector that reads no config should not be handed one.
    pub fn check_config(&self, config: &Value) -> Result<(), SchemaViolation> {
        match &self.config {
            Some(validator) => check(validator, config),
            None if config.as_object().is_some_and(|o| o.is_empty()) => Ok(()),
            None => Err(SchemaViolation {
                pointer: String::new(),
                message: "this connector takes no config".into(),
            }),
        }
    }

    pub fn action(&self, name: &str) -> Option<&CompiledAction> {
        self.actions.get(name)
    }
}

fn field(field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

fn check_name(name: &str, value: &str) -> Result<(), ManifestError> {
    airlock_contract::connector::check_name(value).map_err(|reason| field(name, reason))
}

fn check_version(version: &str) -> Result<(), ManifestError> {
    airlock_contract::connector::check_version(version).map_err(|reason| field("version", reason))
}

fn compile(name: &str, schema: &Value) -> Result<jsonschema::Validator, ManifestError> {
    let schema_error = |reason: String| ManifestError::Schema {
        field: name.to_owned(),
        reason,
    };
    jsonschema::meta::validate(schema).map_err(|e| schema_error(e.to_string()))?;
    jsonschema::validator_for(schema).map_err(|e| schema_error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(actions: Value) -> Value {
        json!({"name": "demo", "version": "1.2.3", "hosts": ["api.example.test"], "actions": actions})
    }

    fn parse(value: Value) -> Result<ValidatedManifest, ManifestError> {
        ValidatedManifest::parse(&value.to_string())
    }

    fn echo_action() -> Value {
        json!({"name": "echo", "input_schema": {"type": "object", "required": ["n"],
            "properties": {"n": {"type": "integer"}}}, "output_schema": {}})
    }

    #[test]
    fn accepts_a_valid_manifest_and_checks_values_against_schemas() {
        let m = parse(manifest(json!([echo_action()]))).expect("valid");
        let action = m.action("echo").expect("declared");
        assert!(action.check_input(&json!({"n": 1})).is_ok());
        let violation = action
            .check_input(&json!({"n": "x"}))
            .expect_err("not an integer");
        assert_eq!(violation.pointer, "/n");
        assert!(m.action("missing").is_none());
    }

    #[test]
    fn rejects_bad_names_versions_and_duplicates() {
        let bad_name = json!({"name": "Demo!", "version": "1.0.0", "actions": [echo_action()]});
        assert!(
            matches!(parse(bad_name), Err(ManifestError::Field { field, .. }) if field == "name")
        );
        for version in ["1.0", "1.0.0-\u{0}", "1.0.0+\u{202E}x", "1.0.0-a b"] {
            let bad_version =
                json!({"name": "demo", "version": version, "actions": [echo_action()]});
            assert!(
                matches!(parse(bad_version), Err(ManifestError::Field { field, .. }) if field == "version"),
                "{version:?}"
            );
        }
        let prerelease =
            json!({"name": "demo", "version": "1.0.0-rc.1+build.7", "actions": [echo_action()]});
        assert!(parse(prerelease).is_ok());
        let dup = manifest(json!([echo_action(), echo_action()]));
        assert!(
            matches!(parse(dup), Err(ManifestError::Field { field, .. }) if field == "actions[1].name")
        );
        let none = manifest(json!([]));
        assert!(
            matches!(parse(none), Err(ManifestError::Field { field, .. }) if field == "actions")
        );
    }

    #[test]
    fn rejects_invalid_schemas_and_unknown_fields() {
        let bad_schema = manifest(
            json!([{"name": "a", "input_schema": {"type": "nonsense"}, "output_schema": {}}]),
        );
        assert!(
            matches!(parse(bad_schema), Err(ManifestError::Schema { field, .. }) if field == "actions[0].input_schema")
        );
        let unknown =
            json!({"name": "demo", "version": "1.0.0", "actions": [echo_action()], "extra": 1});
        assert!(matches!(parse(unknown), Err(ManifestError::Parse(_))));
        let zero_retry = manifest(
            json!([{"name": "a", "input_schema": {}, "output_schema": {}, "retry": {"max_attempts": 0}}]),
        );
        assert!(
            matches!(parse(zero_retry), Err(ManifestError::Field { field, .. }) if field == "actions[0].retry.max_attempts")
        );
    }

    #[test]
    fn rejects_malformed_host_patterns() {
        let bad_host = json!({"name": "demo", "version": "1.0.0", "hosts": ["http://x"], "actions": [echo_action()]});
        assert!(
            matches!(parse(bad_host), Err(ManifestError::Field { field, .. }) if field == "hosts[0]")
        );
    }
}
