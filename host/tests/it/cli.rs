//! The `airlock` binary as a user runs it: exit codes, `--json`, secrets from the environment.

use std::process::{Command, Output};

use serde_json::{Value, json};

fn airlock(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(args)
        .env("AIRLOCK_CACHE_DIR", crate::support::cache_dir())
        .output()
        .expect("run airlock")
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn invoke_prints_the_output_and_exits_zero() {
    let input = json!({"data": {"a": {"b": 7}}, "mapping": {"x": "/a/b"}}).to_string();
    let out = airlock(&[
        "invoke",
        airlock_test_artifacts::CONNECTOR_TRANSFORM,
        "map",
        "--input",
        &input,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json_of(&out);
    assert_eq!(doc["ok"], json!(true));
    assert_eq!(doc["output"], json!({"x": 7}));
    assert!(doc["stats"]["fuel_used"].as_u64().unwrap_or(0) > 0);
}

#[test]
fn a_limit_hit_exits_nonzero_and_names_the_kind() {
    let out = airlock(&[
        "invoke",
        airlock_test_artifacts::HOSTILE,
        "spin",
        "--fuel",
        "10000000",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_of(&out)["error"]["kind"], json!("fuel_exhausted"));

    let plain = airlock(&[
        "invoke",
        airlock_test_artifacts::HOSTILE,
        "spin",
        "--timeout",
        "100ms",
        "--fuel",
        "100000000000",
    ]);
    assert_eq!(plain.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&plain.stderr).contains("error: timeout"),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
}

#[test]
fn bad_input_and_bad_flags_are_reported_clearly() {
    let out = airlock(&[
        "invoke",
        airlock_test_artifacts::HOSTILE,
        "echo",
        "--input",
        "{\"n\": -1}",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let doc = json_of(&out);
    assert_eq!(doc["error"]["kind"], json!("invalid_input"));
    assert_eq!(doc["error"]["pointer"], json!("/n"));

    let missing = airlock(&["invoke", "/nonexistent.wasm", "x"]);
    assert_eq!(missing.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.wasm"));

    let over_cap = airlock(&[
        "invoke",
        airlock_test_artifacts::HOSTILE,
        "echo",
        "--timeout",
        "301s",
    ]);
    assert_eq!(over_cap.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&over_cap.stderr).contains("timeout_ms"));

    let unset = airlock(&[
        "invoke",
        airlock_test_artifacts::CONNECTOR_GITHUB,
        "list_issues",
        "--secret-env",
        "AIRLOCK_TEST_UNSET_VAR",
    ]);
    assert_eq!(unset.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&unset.stderr).contains("AIRLOCK_TEST_UNSET_VAR"));
}

#[test]
fn manifest_prints_the_validated_manifest() {
    let out = airlock(&["manifest", airlock_test_artifacts::CONNECTOR_GITHUB]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = json_of(&out);
    assert_eq!(manifest["name"], json!("github"));
    assert_eq!(manifest["hosts"], json!(["api.github.com"]));
    assert_eq!(manifest["auth"]["type"], json!("api_key"));
}
