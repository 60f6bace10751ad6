//! Start-up configuration: dev mode generates keys once; production refuses missing or
//! default keys and a wildcard CORS origin, each with its own message. And `airlock token`.

use std::process::Command;

use airlock::api::{JwtKeys, Role};
use airlock::config::{Config, ConfigError, Mode};
use airlock::secrets::Secret;

fn production(dir: &std::path::Path) -> Config {
    Config {
        mode: Mode::Production,
        ..Config::dev(dir)
    }
}

const STRONG_JWT: &str = "4f9c2b7e1d8a6035c4e7b9f2a1d3c5e7f9b2d4a6c8e1f3a5b7d9c2e4f6a8b1d3";

#[test]
fn dev_mode_generates_keys_once() {
    let dir = tempfile::tempdir().expect("dir");
    let config = Config::dev(dir.path().join("data"));
    let first = config.load_keys().expect("dev mode starts");
    assert_eq!(first.generated.len(), 2, "{:?}", first.generated);
    assert!(config.jwt_secret_path().exists() && config.keys_path().exists());
    let second = config.load_keys().expect("dev mode starts again");
    assert!(second.generated.is_empty());
    assert_eq!(first.jwt_secret.expose(), second.jwt_secret.expose());
}

#[test]
fn production_refuses_missing_or_default_keys_and_wildcard_cors() {
    let dir = tempfile::tempdir().expect("dir");
    let mut config = production(dir.path());
    assert!(matches!(
        config.load_keys(),
        Err(ConfigError::MissingJwtSecret(_))
    ));

    config.jwt_secret_env = Some(Secret::new("secret"));
    let error = config.load_keys().expect_err("default JWT secret");
    assert!(matches!(error, ConfigError::DefaultJwtSecret), "{error}");
    assert!(
        !error.to_string().contains("secret\""),
        "the message does not echo the key"
    );

    config.jwt_secret_env = Some(Secret::new(STRONG_JWT));
    let error = config.load_keys().expect_err("no key file");
    assert!(matches!(error, ConfigError::MissingKeys(_)), "{error}");

    // A key file with an all-zero key is a default key.
    let zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    std::fs::write(
        config.keys_path(),
        format!(r#"{{"current": "k1", "keys": {{"k1": "{zero}"}}, "retired": []}}"#),
    )
    .expect("write key file");
    let error = config.load_keys().expect_err("weak key");
    // Refused as weak, not because the file failed to parse.
    assert!(
        matches!(&error, ConfigError::WeakKeys(id) if id.contains("k1")),
        "{error}"
    );

    let strong = airlock::secrets::Keyring::generate().expect("keyring");
    strong
        .save(&config.keys_path().with_extension("new"))
        .expect("save");
    std::fs::rename(config.keys_path().with_extension("new"), config.keys_path()).expect("rename");
    config
        .load_keys()
        .expect("production starts with strong keys");

    config.cors_origins = vec!["https://app.example.com".into(), "*".into()];
    assert!(matches!(config.load_keys(), Err(ConfigError::WildcardCors)));
    config.cors_origins = vec!["https://app.example.com".into()];
    config.load_keys().expect("a listed origin is fine");
}

#[test]
fn token_issue_prints_a_token_the_server_key_verifies() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_airlock"))
            .args(["token", "issue"])
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .env_remove("AIRLOCK_JWT_SECRET")
            .output()
            .expect("run airlock")
    };
    let out = run(&["--tenant", "acme", "--role", "editor", "--ttl", "2h"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let secret = std::fs::read_to_string(data.join("jwt.key")).expect("key generated");
    let principal = JwtKeys::new(&Secret::new(secret.trim()))
        .verify(&token)
        .expect("valid token");
    assert_eq!(
        (principal.tenant.as_deref(), principal.role),
        (Some("acme"), Role::Editor)
    );

    let operator = run(&["--role", "operator"]);
    assert!(
        operator.status.success(),
        "{}",
        String::from_utf8_lossy(&operator.stderr)
    );
    let refused = run(&["--role", "operator", "--tenant", "acme"]);
    assert!(!refused.status.success());
    let refused = run(&["--role", "viewer"]);
    assert!(!refused.status.success());
}

#[test]
fn keys_rotate_adds_a_current_key_and_reencrypts() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["keys", "rotate", "--data-dir"])
        .arg(&data)
        .env_remove("AIRLOCK_JWT_SECRET")
        .env_remove("AIRLOCK_DATABASE_URL")
        .output()
        .expect("run airlock");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-encrypted 0 secret(s)"));
    let keyring = airlock::secrets::Keyring::load(&data.join("keys.json")).expect("key file");
    assert_eq!(keyring.key_ids().count(), 2);
}
