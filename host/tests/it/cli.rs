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

/// Every flag and variable the operations guide lists is one `airlock serve` knows, under the
/// same name (the guide once named `--max-component-size` for `--max-component-bytes`).
#[test]
fn the_operations_guide_names_the_real_flags() {
    let help = airlock(&["serve", "--help"]);
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    let guide = include_str!("../../../docs/operations.md");
    let mut checked = 0;
    for row in guide.lines().filter(|l| l.starts_with("| `--")) {
        // `--mode dev\|production`: an escaped bar is not a cell boundary.
        let row = row.replace("\\|", "/");
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let flag = cells[1]
            .trim_start_matches('`')
            .split(['`', ' '])
            .next()
            .unwrap_or_default();
        let env = cells[2]
            .trim_start_matches('`')
            .split('`')
            .next()
            .unwrap_or_default();
        // A flag with a value reads `--flag <VALUE>`; a switch ends its line.
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "no flag {flag}: {help}"
        );
        assert!(
            help.contains(&format!("[env: {env}")),
            "no variable {env}: {help}"
        );
        checked += 1;
    }
    assert!(checked >= 9, "the guide's table was not found");
}

/// Runs `airlock args` with stdout a pipe whose reader is already gone, as in
/// `airlock manifest x.wasm | head -c 10` once `head` has its bytes.
fn with_stdout_closed(args: &[&str]) -> Output {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(args)
        .env("AIRLOCK_CACHE_DIR", crate::support::cache_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run airlock");
    // Closing the only read end: every write to the pipe now fails with EPIPE.
    drop(child.stdout.take());
    child.wait_with_output().expect("wait")
}

#[tokio::test]
async fn a_closed_pipe_ends_every_command_quietly() {
    let data = tempfile::tempdir().expect("temp dir");
    let data_dir = data.path().to_str().expect("utf-8 path");
    // `keys list` reads an existing database only.
    let config = airlock::config::Config::dev(data.path());
    airlock::store::Store::connect(&config.database_url(), &Default::default())
        .await
        .expect("database")
        .close()
        .await;
    let input = json!({"data": {"a": 1}, "mapping": {"x": "/a"}}).to_string();
    let commands: [&[&str]; 5] = [
        &["manifest", airlock_test_artifacts::CONNECTOR_GITHUB],
        &[
            "invoke",
            airlock_test_artifacts::CONNECTOR_TRANSFORM,
            "map",
            "--input",
            input.as_str(),
        ],
        &[
            "token",
            "issue",
            "--data-dir",
            data_dir,
            "--tenant",
            "acme",
            "--role",
            "admin",
        ],
        &["keys", "list", "--data-dir", data_dir],
        &["--help"],
    ];
    for args in commands {
        let out = with_stdout_closed(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
        if args[0] != "--help" {
            // 128 + SIGPIPE, as a shell reports a tool the signal ended.
            assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
        }
    }
}
