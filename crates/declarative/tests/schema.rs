//! The published JSON Schema of the format (`schema/declarative.schema.json`): generated from
//! the format's types (the `schema` feature), so it cannot drift from what the host parses.
//! Run with `cargo test -p airlock-declarative --features schema`; `AIRLOCK_BLESS=1` rewrites
//! the committed file after a change to `format.rs`.
//!
//! The schema describes the field names this crate writes; the contract's camelCase aliases
//! (`endpointTemplate`, ...), which the host also accepts, are left out of it.

#![cfg(feature = "schema")]

use std::path::{Path, PathBuf};

use airlock_declarative::Definition;
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn committed_path() -> PathBuf {
    repo_root().join("schema/declarative.schema.json")
}

/// The schema as the committed file holds it: pretty JSON and a final newline.
fn generated_text() -> String {
    let schema = schemars::schema_for!(Definition);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}

fn generated() -> Value {
    serde_json::from_str(&generated_text()).expect("the schema is JSON")
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&generated()).expect("the generated schema compiles")
}

#[test]
fn the_committed_schema_is_the_generated_one() {
    let path = committed_path();
    let fresh = generated_text();
    if std::env::var_os("AIRLOCK_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir schema/");
        std::fs::write(&path, &fresh).expect("write the schema");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "schema/declarative.schema.json is not the schema the format's types generate \
         (format.rs changed?). Regenerate it with `AIRLOCK_BLESS=1 cargo test -p \
         airlock-declarative --features schema --test schema` and commit the result."
    );
}

/// The definitions in `connectors/declarative/` (JSON, or YAML read as JSON, as the host
/// reads an upload), by file name.
fn examples() -> Vec<(String, Value)> {
    let dir = repo_root().join("connectors/declarative");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, Value)> = entries
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            let name = path.file_name()?.to_string_lossy().into_owned();
            let text = std::fs::read(&path).ok()?;
            let value = match path.extension()?.to_str()? {
                "json" => serde_json::from_slice(&text)
                    .unwrap_or_else(|e| panic!("{name} is not JSON: {e}")),
                "yaml" | "yml" => serde_norway::from_slice(&text)
                    .unwrap_or_else(|e| panic!("{name} is not YAML: {e}")),
                _ => return None,
            };
            Some((name, value))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

fn errors(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_schema_accepts_the_example_definitions() {
    let validator = validator();
    let examples = examples();
    if examples.is_empty() {
        println!("no example definitions in connectors/declarative/: nothing to check");
    }
    for (name, example) in &examples {
        let errors = errors(&validator, example);
        assert!(errors.is_empty(), "{name} fails the schema: {errors:#?}");
        // And the host takes them: a schema that accepted what the checks refuse would
        // mislead an editor.
        airlock_declarative::compile_json(&example.to_string())
            .unwrap_or_else(|e| panic!("{name} is refused: {e}"));
    }
}

fn minimal() -> Value {
    json!({
        "$schema": "../schema/declarative.schema.json",
        "format": "airlock.declarative/v1",
        "name": "crm",
        "version": "1.0.0",
        "base_url": "https://{config.subdomain}.crm.test/api",
        "config_schema": {"type": "object", "required": ["subdomain"],
            "properties": {"subdomain": {"type": "string"}}},
        "errors": [{"status": [401, "4xx"], "kind": "auth", "message": "/message"},
            {"when": {"pointer": "/ok", "equals": false}, "kind": "invalid_input"}],
        "actions": [{
            "name": "list_contacts",
            "method": "GET",
            "endpoint": "/contacts{?q}",
            "query_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
            "pagination": {"type": "cursor", "param": "after", "cursor": "/next",
                "items": "/data", "max_pages": 10}
        }, {
            "name": "create_contact",
            "method": "POST",
            "endpoint": "/contacts",
            "body_schema": {"type": "object"},
            "body": {"encoding": "form", "template": {"name": {"$input": "/body/name"}}}
        }]
    })
}

#[test]
fn the_schema_takes_what_the_host_takes_and_refuses_what_serde_refuses() {
    let validator = validator();
    let ok = minimal();
    assert!(
        errors(&validator, &ok).is_empty(),
        "{:#?}",
        errors(&validator, &ok)
    );
    airlock_declarative::compile_json(&ok.to_string()).expect("the host takes it too");

    // Each of these fails to parse as a `Definition`, and the schema says so too.
    let mut unknown = minimal();
    unknown["extra"] = json!(1);
    let mut no_cap = minimal();
    no_cap["actions"][0]["pagination"]
        .as_object_mut()
        .expect("object")
        .remove("max_pages");
    let mut bad_method = minimal();
    bad_method["actions"][0]["method"] = json!("TRACE");
    let mut bad_strategy = minimal();
    bad_strategy["actions"][0]["pagination"]["type"] = json!("scroll");
    let mut stray_field = minimal();
    stray_field["actions"][0]["pagination"]["limit"] = json!(5);
    let mut no_actions = minimal();
    no_actions
        .as_object_mut()
        .expect("object")
        .remove("actions");
    for (what, value) in [
        ("an unknown field", unknown),
        ("a pagination without max_pages", no_cap),
        ("an unknown method", bad_method),
        ("an unknown pagination type", bad_strategy),
        ("a field of another strategy", stray_field),
        ("no actions", no_actions),
    ] {
        assert!(
            serde_json::from_value::<Definition>(value.clone()).is_err(),
            "{what}: serde took it"
        );
        assert!(
            !validator.is_valid(&value),
            "{what}: the schema accepts what the host refuses"
        );
    }
}

/// The patterns and ranges the schema adds for editors agree with the checks: one field of a
/// valid definition changed at a time, the schema and `compile` say the same.
#[test]
fn the_schemas_rules_agree_with_the_checks() {
    let validator = validator();
    let cases: Vec<(&str, Value)> = [
        "crm", "a", "my-crm_2", "Crm", "1crm", "-crm", "crm.io", "", "é",
    ]
    .iter()
    .map(|name| ("/name", json!(name)))
    .chain(std::iter::once(("/name", json!("a".repeat(64)))))
    .chain(std::iter::once(("/name", json!("a".repeat(65)))))
    .chain(
        [
            "1.0.0",
            "0.10.3-beta.1",
            "1.0.0+build.5",
            "1.0.0-",
            "1.0",
            "1.0.0.1",
            "v1.0.0",
            "1.0.x",
            "1.0.0_1",
            "01.2.3",
        ]
        .iter()
        .map(|version| ("/version", json!(version))),
    )
    .chain(std::iter::once((
        "/version",
        json!(format!("1.0.0-{}", "a".repeat(60))),
    )))
    .chain(
        [
            json!(404),
            json!(99),
            json!(600),
            json!("4xx"),
            json!("5XX"),
            json!("6xx"),
            json!("4x"),
            json!("40x"),
            json!([400, "5xx"]),
            json!([400, 700]),
        ]
        .into_iter()
        .map(|status| ("/errors/0/status", status)),
    )
    .chain(
        [
            "auth",
            "success",
            "upstream",
            "http_denied",
            "timeout",
            "Auth",
        ]
        .iter()
        .map(|kind| ("/errors/1/kind", json!(kind))),
    )
    .chain(
        [json!(1), json!(1000), json!(0), json!(1001)]
            .into_iter()
            .map(|max| ("/actions/0/pagination/max_pages", max)),
    )
    .chain(
        [json!(1), json!(0)]
            .into_iter()
            .map(|timeout| ("/actions/0/timeout_ms", timeout)),
    )
    .collect();
    for (pointer, value) in cases {
        let mut definition = minimal();
        let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
        definition
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .expect("the parent exists")
            .insert(key.to_owned(), value.clone());
        let schema_says = validator.is_valid(&definition);
        let host_says = airlock_declarative::compile_json(&definition.to_string());
        assert_eq!(
            schema_says,
            host_says.is_ok(),
            "{pointer} = {value}: the schema says {schema_says}, the host {host_says:?}"
        );
    }
}
