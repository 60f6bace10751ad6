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

// ---------------------------------------------------------------------------------------
// The authoring kit: declarative definitions in `manifest` and `invoke`, `connector new`,
// `connector from-openapi`.

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn path_str(path: &std::path::Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The `connector new` template, compiled here and its tests run with the CLI's (the crate it
/// generates builds it outside this workspace: `a_new_crate_builds_outside_the_workspace_*`).
#[path = "../../src/cli/templates/code/lib.rs"]
mod connector_template;

/// `connector new --declarative` writes a definition that `manifest` loads and `invoke` runs
/// against an HTTPS server whose CA only `--ca-cert` makes trusted, with the connection's
/// `--config` picking the host and the `--secret-env` credential attached by the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_declarative_connector_loads_and_runs_with_config_ca_and_secret() {
    use axum::extract::Path;
    use axum::http::HeaderMap;
    use axum::routing::get;

    let dir = tempfile::tempdir().expect("temp dir");
    let dir_str = path_str(dir.path());
    let created = airlock(&[
        "connector",
        "new",
        "shop",
        "--declarative",
        "--dir",
        dir_str,
    ]);
    assert!(created.status.success(), "{}", stderr_of(&created));
    let definition = dir.path().join("shop.yaml");
    assert!(definition.is_file());
    let again = airlock(&[
        "connector",
        "new",
        "shop",
        "--declarative",
        "--dir",
        dir_str,
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr_of(&again).contains("already exists"),
        "{}",
        stderr_of(&again)
    );

    let manifest = airlock(&["manifest", path_str(&definition)]);
    assert!(manifest.status.success(), "{}", stderr_of(&manifest));
    let manifest = json_of(&manifest);
    assert_eq!(manifest["name"], json!("shop"));
    assert_eq!(manifest["hosts"], json!(["{config.subdomain}.example.com"]));
    assert_eq!(manifest["actions"][0]["name"], json!("get_item"));
    assert!(manifest["config_schema"].is_object(), "{manifest}");

    let app = axum::Router::new().route(
        "/api/v1/items/{id}",
        get(|Path(id): Path<String>, headers: HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            axum::Json(json!({"id": id, "name": "an item", "bearer": auth == "Bearer s3cret"}))
        }),
    );
    let server = crate::support::Server::start_tls(app, &["acme.example.com"]).await;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, server.ca_pem.as_deref().expect("ca")).expect("write ca");
    let resolve = format!("acme.example.com={}", server.addr);
    let invoke = |extra: &[&str]| {
        let mut args = vec![
            "invoke",
            path_str(&definition),
            "get_item",
            "--input",
            r#"{"path": {"id": "42"}}"#,
            "--resolve",
            &resolve,
            "--allow-private",
            "127.0.0.0/8",
            "--secret-env",
            "AIRLOCK_TEST_SHOP_TOKEN",
            "--json",
        ];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_airlock"))
            .args(&args)
            .env("AIRLOCK_CACHE_DIR", crate::support::cache_dir())
            .env("AIRLOCK_TEST_SHOP_TOKEN", "s3cret")
            .output()
            .expect("run airlock")
    };
    let config = r#"{"subdomain": "acme"}"#;
    let ca_str = path_str(&ca);

    let ran = invoke(&["--config", config, "--ca-cert", ca_str]);
    assert!(ran.status.success(), "{}", stderr_of(&ran));
    let doc = json_of(&ran);
    assert_eq!(
        doc["output"],
        json!({"id": "42", "name": "an item", "bearer": true}),
        "{doc}"
    );
    assert_eq!(server.hits(), 1);

    // Without the CA the server's certificate is not trusted: the call fails, nothing is
    // answered.
    let untrusted = invoke(&["--config", config]);
    assert_eq!(
        untrusted.status.code(),
        Some(1),
        "{}",
        stderr_of(&untrusted)
    );
    assert_eq!(json_of(&untrusted)["ok"], json!(false));
    assert_eq!(server.hits(), 1);

    // A config the connector's config_schema refuses is reported before anything runs.
    let missing = invoke(&["--ca-cert", ca_str]);
    assert_eq!(missing.status.code(), Some(3));
    let stderr = stderr_of(&missing);
    assert!(
        stderr.contains("subdomain") && stderr.contains("--config"),
        "{stderr}"
    );
    let extra = invoke(&[
        "--ca-cert",
        ca_str,
        "--config",
        r#"{"subdomain": "acme", "x": 1}"#,
    ]);
    assert_eq!(extra.status.code(), Some(3));
    assert!(
        stderr_of(&extra).contains("config"),
        "{}",
        stderr_of(&extra)
    );
    let bad_label = invoke(&["--ca-cert", ca_str, "--config", r#"{"subdomain": "a.b"}"#]);
    assert_eq!(
        bad_label.status.code(),
        Some(3),
        "{}",
        stderr_of(&bad_label)
    );
    let not_json = invoke(&["--ca-cert", ca_str, "--config", "{subdomain"]);
    assert_eq!(not_json.status.code(), Some(3));
    assert!(stderr_of(&not_json).contains("--config is not JSON"));
    let no_ca = invoke(&["--config", config, "--ca-cert", "/nonexistent/ca.pem"]);
    assert_eq!(no_ca.status.code(), Some(3));
    assert!(stderr_of(&no_ca).contains("/nonexistent/ca.pem"));
    assert_eq!(server.hits(), 1);
}

#[test]
fn manifest_reports_a_broken_definition_with_its_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = dir.path().join("broken.yml");
    std::fs::write(
        &yaml,
        "format: airlock.declarative/v1\nname: broken\nversion: 1.0.0\n\
         base_url: https://api.example.test\nactions: []\n",
    )
    .expect("write");
    let out = airlock(&["manifest", path_str(&yaml)]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr_of(&out).contains("broken.yml"),
        "{}",
        stderr_of(&out)
    );

    let json_file = dir.path().join("bad.json");
    std::fs::write(&json_file, "{\"format\": ").expect("write");
    let out = airlock(&["manifest", path_str(&json_file)]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr_of(&out).contains("not valid JSON"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn connector_new_writes_a_crate_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir_str = path_str(dir.path());
    let out = airlock(&["connector", "new", "acme-crm", "--dir", dir_str]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let root = dir.path().join("acme-crm");
    let read = |name: &str| std::fs::read_to_string(root.join(name)).expect(name);
    let cargo_toml = read("Cargo.toml");
    assert!(cargo_toml.contains("name = \"acme-crm\""), "{cargo_toml}");
    assert!(cargo_toml.contains(r#"crate-type = ["cdylib", "rlib"]"#));
    // Built from this checkout: the SDK by its absolute path.
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../guest-sdk")
        .canonicalize()
        .expect("guest-sdk");
    assert!(
        cargo_toml.contains(&format!("airlock-sdk = {{ path = \"{}\" }}", sdk.display())),
        "{cargo_toml}"
    );
    assert_eq!(
        read("src/lib.rs"),
        include_str!("../../src/cli/templates/code/lib.rs")
    );
    let readme = read("README.md");
    assert!(readme.contains("cargo build --release --target wasm32-wasip2"));
    assert!(
        readme.contains("target/wasm32-wasip2/release/acme_crm.wasm"),
        "{readme}"
    );

    let again = airlock(&["connector", "new", "acme-crm", "--dir", dir_str]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr_of(&again).contains("already exists"));
    let bad = airlock(&["connector", "new", "Acme CRM", "--dir", dir_str]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr_of(&bad).contains("connector name"),
        "{}",
        stderr_of(&bad)
    );
}

/// Runs cargo `args` in `root` (a crate `connector new` wrote, outside this workspace), offline
/// (its dependencies are the SDK's, already in cargo's cache) and into `target/connector-new`
/// of this repository, kept between runs so that a re-run builds only the new crate.
fn cargo_outside(root: &std::path::Path, args: &[&str]) {
    let target_dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/connector-new");
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .args(args)
        .arg("--offline")
        .current_dir(root)
        .env("CARGO_TARGET_DIR", &target_dir);
    // What the build of these tests set for the host target would change the fingerprints.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    ] {
        command.env_remove(var);
    }
    let started = std::time::Instant::now();
    let output = command.output().expect("run cargo");
    eprintln!("cargo {args:?}: {:.1?}", started.elapsed());
    assert!(
        output.status.success(),
        "cargo {args:?}: {}",
        stderr_of(&output)
    );
}

/// The important one: the crate `connector new` writes builds for wasm32-wasip2 on its own,
/// outside this workspace, and the component loads and its example action runs (against a
/// local HTTPS server standing in for `api.example.com`). About 60 s on 2 cores with an
/// empty `target/connector-new`, 2 s after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_crate_builds_outside_the_workspace_loads_and_runs() {
    use axum::extract::Path;
    use axum::http::HeaderMap;
    use axum::routing::get;

    let dir = tempfile::tempdir().expect("temp dir");
    let out = airlock(&[
        "connector",
        "new",
        "hello-kit",
        "--dir",
        path_str(dir.path()),
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let root = dir.path().join("hello-kit");
    cargo_outside(&root, &["build", "--release", "--target", "wasm32-wasip2"]);
    let wasm = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/connector-new/wasm32-wasip2/release/hello_kit.wasm");

    let manifest = airlock(&["manifest", path_str(&wasm)]);
    assert!(manifest.status.success(), "{}", stderr_of(&manifest));
    let manifest = json_of(&manifest);
    assert_eq!(manifest["name"], json!("hello-kit"));
    assert_eq!(manifest["version"], json!("0.1.0"));
    assert_eq!(manifest["hosts"], json!(["api.example.com"]));
    assert_eq!(manifest["actions"][0]["name"], json!("get_item"));

    let app = axum::Router::new().route(
        "/items/{id}",
        get(|Path(id): Path<u64>, headers: HeaderMap| async move {
            let bearer =
                headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer k3y");
            axum::Json(json!({"id": id, "name": if bearer { "authorized" } else { "anonymous" }}))
        }),
    );
    let server = crate::support::Server::start_tls(app, &["api.example.com"]).await;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, server.ca_pem.as_deref().expect("ca")).expect("write ca");
    let ran = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args([
            "invoke",
            path_str(&wasm),
            "get_item",
            "--input",
            r#"{"id": 7}"#,
            "--resolve",
            &format!("api.example.com={}", server.addr),
            "--allow-private",
            "127.0.0.0/8",
            "--ca-cert",
            path_str(&ca),
            "--secret-env",
            "AIRLOCK_TEST_HELLO_KEY",
            "--json",
        ])
        .env("AIRLOCK_CACHE_DIR", crate::support::cache_dir())
        .env("AIRLOCK_TEST_HELLO_KEY", "k3y")
        .output()
        .expect("run airlock");
    assert!(ran.status.success(), "{}", stderr_of(&ran));
    assert_eq!(
        json_of(&ran)["output"],
        json!({"id": 7, "name": "authorized"})
    );
}

/// The generated crate's own tests pass natively outside this workspace (the template's
/// tests also run above, compiled into this binary as `connector_template`).
#[test]
#[ignore = "a native debug build of the SDK's dependencies outside the workspace: 70-95 s on \
            2 cores with an empty target/connector-new, 3 s after; run with --ignored"]
fn a_new_crate_passes_its_own_tests_outside_the_workspace() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = airlock(&[
        "connector",
        "new",
        "hello-kit",
        "--dir",
        path_str(dir.path()),
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    cargo_outside(&dir.path().join("hello-kit"), &["test"]);
}

/// An OpenAPI description in YAML (status codes as YAML integers) with an operation the
/// format cannot express (a required cookie).
const PETS_OPENAPI: &str = r##"
openapi: 3.0.3
info: {title: Pet Store, version: 2.1.0}
servers: [{url: "https://pets.example.test/v1"}]
components:
  securitySchemes:
    key: {type: apiKey, in: header, name: X-Api-Key}
  schemas:
    Pet:
      type: object
      required: [id]
      properties:
        id: {type: string}
        name: {type: string}
security: [{key: []}]
paths:
  /pets:
    get:
      operationId: listPets
      tags: [pets]
      parameters:
        - {name: limit, in: query, schema: {type: integer, maximum: 100}}
      responses:
        200:
          description: pets
          content:
            application/json:
              schema: {type: array, items: {$ref: "#/components/schemas/Pet"}}
  /pets/{petId}:
    get:
      operationId: getPet
      tags: [pets]
      parameters:
        - {name: petId, in: path, required: true, schema: {type: string}}
      responses:
        "200":
          description: a pet
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Pet"}
  /session:
    get:
      operationId: getSession
      parameters:
        - {name: sid, in: cookie, required: true, schema: {type: string}}
      responses:
        "204": {description: none}
"##;

#[test]
fn from_openapi_imports_reports_checks_and_writes_json_or_yaml() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = dir.path().join("pets.yaml");
    std::fs::write(&spec, PETS_OPENAPI).expect("write spec");

    // To stdout, as JSON, with the summary on stderr.
    let out = airlock(&["connector", "from-openapi", path_str(&spec)]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let definition = json_of(&out);
    assert_eq!(definition["format"], json!("airlock.declarative/v1"));
    assert_eq!(definition["version"], json!("2.1.0"));
    assert_eq!(definition["auth"]["name"], json!("X-Api-Key"));
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("imported 2 of 3 selected operations (3 in the document)"),
        "{stderr}"
    );
    assert!(stderr.contains("skipped (1):\n  getSession: "), "{stderr}");
    assert!(
        stderr.contains("passes the checks of an upload"),
        "{stderr}"
    );

    // To a YAML file, selected and renamed; `manifest` loads what was written.
    let written = dir.path().join("pets-def.yaml");
    let out = airlock(&[
        "connector",
        "from-openapi",
        path_str(&spec),
        "--select",
        "tag:pets",
        "--name",
        "pets",
        "--version",
        "1.0.0",
        "--base-url",
        "https://{config.region}.pets.example.test/v1",
        "-o",
        path_str(&written),
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(out.stdout.is_empty());
    let stderr = stderr_of(&out);
    assert!(stderr.contains("imported 2 of 2 selected"), "{stderr}");
    assert!(stderr.contains("wrote "), "{stderr}");
    let text = std::fs::read_to_string(&written).expect("written");
    assert!(text.starts_with("format: airlock.declarative/v1"), "{text}");
    let manifest = airlock(&["manifest", path_str(&written)]);
    assert!(manifest.status.success(), "{}", stderr_of(&manifest));
    let manifest = json_of(&manifest);
    assert_eq!(manifest["name"], json!("pets"));
    assert_eq!(
        manifest["hosts"],
        json!(["{config.region}.pets.example.test"])
    );
    let actions: Vec<&str> = manifest["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(actions, ["list_pets", "get_pet"]);

    // Failures: nothing matches, nothing importable, not OpenAPI; nothing written.
    let none = dir.path().join("none.json");
    let out = airlock(&[
        "connector",
        "from-openapi",
        path_str(&spec),
        "--select",
        "deletePet",
        "-o",
        path_str(&none),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("`deletePet` matches no operation"),
        "{}",
        stderr_of(&out)
    );
    let out = airlock(&[
        "connector",
        "from-openapi",
        path_str(&spec),
        "--select",
        "getSession",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("getSession: "),
        "{}",
        stderr_of(&out)
    );
    let out = airlock(&[
        "connector",
        "from-openapi",
        path_str(&spec),
        "--auth",
        "{\"type\": \"nope\"}",
        "-o",
        path_str(&none),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let not_openapi = dir.path().join("x.json");
    std::fs::write(&not_openapi, "{\"swagger\": \"2.0\"}").expect("write");
    let out = airlock(&["connector", "from-openapi", path_str(&not_openapi)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("Swagger 2.0"),
        "{}",
        stderr_of(&out)
    );
    assert!(!none.exists());
}
