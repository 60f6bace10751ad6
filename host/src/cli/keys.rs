//! `airlock keys`: `rotate` adds a key to the key file and makes it current, then re-encrypts
//! every stored connection credential and webhook trigger secret under it, while servers keep
//! serving (they still decrypt old key ids, and reload the key file when they meet the new
//! one); `reencrypt` moves stragglers;
//! `list` counts the secrets sealed under each key; `retire` removes a key nothing needs.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{EXIT_FAILED, EXIT_SETUP};
use crate::config::Config;
use airlock_secrets::{KeyId, Keyring, SecretsError};
use airlock_store::{Store, StoreOptions, reencrypt_secrets};

/// Bad arguments, as clap exits on its own (see the codes in `cli/mod.rs`).
const EXIT_USAGE: u8 = 2;

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new key, make it current, and re-encrypt every connection credential and webhook
    /// trigger secret under it.
    Rotate(PassArgs),
    /// Re-encrypt secrets still under an older key (e.g. written during a rotation).
    Reencrypt(PassArgs),
    /// Print each key id, which is current, and how many secrets each seals.
    List(ListArgs),
    /// Remove an old key from the key file, once nothing is sealed under it.
    Retire(RetireArgs),
}

#[derive(Debug, Args)]
pub struct PassArgs {
    /// Connections read per page.
    #[arg(long, default_value_t = 100)]
    pub batch: i64,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Args)]
pub struct RetireArgs {
    /// The key to remove, e.g. `k1` (see `airlock keys list`).
    #[arg(long)]
    pub key_id: KeyId,
    #[command(flatten)]
    pub config: Config,
}

pub async fn run(args: KeysArgs) -> ExitCode {
    let done = match args.command {
        KeysCommand::Rotate(args) => pass(true, &args).await,
        KeysCommand::Reencrypt(args) => pass(false, &args).await,
        KeysCommand::List(args) => list(&args.config).await,
        KeysCommand::Retire(args) => retire(&args).await,
    };
    match done {
        Ok(code) => code,
        Err(error) => {
            errln!("error: {error}");
            ExitCode::from(EXIT_SETUP)
        }
    }
}

async fn pass(rotate: bool, args: &PassArgs) -> Result<ExitCode, String> {
    let config = &args.config;
    let mut keyring = config.load_keys().map_err(|e| e.to_string())?.keyring;
    if rotate {
        let id = keyring.rotate().map_err(|e| e.to_string())?;
        keyring
            .save(&config.keys_path())
            .map_err(|e| e.to_string())?;
        errln!(
            "airlock: key {id} added to {} and made current",
            config.keys_path().display()
        );
    }
    let store = Store::connect(&config.database_url(), &StoreOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let report = reencrypt_secrets(&store, &keyring, args.batch.max(1))
        .await
        .map_err(|e| e.to_string())?;
    let action = if rotate {
        "keys.rotate"
    } else {
        "keys.reencrypt"
    };
    let detail = serde_json::json!({
        "current_key": keyring.current().as_str(),
        "reencrypted": report.reencrypted,
        "changed_meanwhile": report.changed_meanwhile,
        "failed": report.failed,
    });
    let audited = audit(&store, action, keyring.current().as_str(), detail).await;
    store.close().await;
    audited?;
    outln!(
        "re-encrypted {} secret(s) under key {}; {} changed meanwhile; {} failed",
        report.reencrypted,
        keyring.current(),
        report.changed_meanwhile,
        report.failed
    );
    if report.changed_meanwhile > 0 {
        errln!("airlock: run `airlock keys reencrypt` again to pick up rows written meanwhile");
    }
    Ok(if report.failed > 0 {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

async fn list(config: &Config) -> Result<ExitCode, String> {
    let keyring = Keyring::load(&config.keys_path()).map_err(|e| e.to_string())?;
    let mut ids: Vec<KeyId> = keyring
        .key_ids()
        .chain(keyring.retired_ids())
        .cloned()
        .collect();
    // Oldest first for the generated `k<n>` ids: k2 before k10.
    ids.sort_by(|a, b| (a.as_str().len(), a).cmp(&(b.as_str().len(), b)));
    let store = existing_store(config).await?;
    let counted = store.sealed_per_key(&ids).await;
    store.close().await;
    let (per_key, sealed) = counted.map_err(|e| e.to_string())?;

    let width = ids
        .iter()
        .map(|id| id.as_str().len())
        .max()
        .unwrap_or(0)
        .max(3);
    outln!("{:<width$}  {:<7}  sealed", "key", "state");
    for (id, count) in ids.iter().zip(&per_key) {
        let state = if id == keyring.current() {
            "current"
        } else if keyring.key_ids().any(|held| held == id) {
            "old"
        } else {
            "retired"
        };
        outln!("{:<width$}  {state:<7}  {count}", id.as_str());
    }
    // Rows under a key id the file does not name (another key file's, or garbage) decrypt
    // with nothing here: worth saying, as it usually means a mismatched file and database.
    let unnamed = sealed.saturating_sub(per_key.iter().sum());
    if unnamed > 0 {
        outln!("{unnamed} secret(s) are sealed under a key id this key file does not name");
    }
    Ok(ExitCode::SUCCESS)
}

async fn retire(args: &RetireArgs) -> Result<ExitCode, String> {
    let path = args.config.keys_path();
    let id = &args.key_id;
    let mut keyring = Keyring::load(&path).map_err(|e| e.to_string())?;
    let loaded = keyring.to_json();
    let held = keyring.key_ids().any(|held| held == id);
    // `Keyring::retire` is the one place that refuses the current key and unknown ids.
    match keyring.retire(id) {
        Ok(()) if held => {}
        Ok(()) => {
            outln!("key {id} is already retired in {}", path.display());
            return Ok(ExitCode::SUCCESS);
        }
        Err(SecretsError::RetireCurrent(_)) => {
            errln!(
                "error: key {id} is the current key and cannot be retired; run \
                 `airlock keys rotate` first, then retire {id}"
            );
            return Ok(ExitCode::from(EXIT_FAILED));
        }
        Err(SecretsError::UnknownKey(_)) => {
            errln!(
                "error: no key {id} in {} (see `airlock keys list`)",
                path.display()
            );
            return Ok(ExitCode::from(EXIT_USAGE));
        }
        Err(error) => return Err(error.to_string()),
    }

    let store = existing_store(&args.config).await?;
    let counted = store.sealed_under(id).await;
    let sealed = match counted {
        Ok(sealed) => sealed,
        Err(error) => {
            store.close().await;
            return Err(error.to_string());
        }
    };
    if sealed > 0 {
        errln!(
            "error: {sealed} secret(s) (connection credentials, webhook trigger secrets) are still sealed under key {id}; run \
             `airlock keys reencrypt` to move them to key {}, then retire {id}",
            keyring.current()
        );
        store.close().await;
        return Ok(ExitCode::from(EXIT_FAILED));
    }

    // Counting can take a while on a large table: if another `keys` command saved the file
    // meanwhile (a rotation), writing ours would drop its key.
    let now = Keyring::load(&path).map_err(|e| e.to_string())?;
    if now.to_json() != loaded {
        errln!(
            "error: {} changed while counting; run again",
            path.display()
        );
        store.close().await;
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    keyring.save(&path).map_err(|e| e.to_string())?;
    let audited = audit(&store, "keys.retire", id.as_str(), serde_json::json!({})).await;
    store.close().await;
    audited?;
    outln!(
        "retired key {id}: removed from {}; nothing was sealed under it",
        path.display()
    );
    errln!(
        "airlock: a running server keeps key {id} in memory until it restarts or next reloads \
         the key file (on meeting a key id it does not know); copy {} to every host \
         (docs/operations.md, \"Retiring an old key\")",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The configured database, which must exist already: `list` and `retire` only read it, and a
/// database created by a mistyped `--data-dir` would count no connection under any key, and
/// so let `retire` drop a key the real database still needs.
pub(super) async fn existing_store(config: &Config) -> Result<Store, String> {
    let url = config.database_url();
    let url = match url.strip_suffix("mode=rwc") {
        Some(base) if url.starts_with("sqlite:") => format!("{base}mode=rw"),
        _ => url,
    };
    Store::connect(&url, &StoreOptions::default())
        .await
        .map_err(|e| {
            format!(
                "{e} (keys commands read an existing database: check --database-url or --data-dir)"
            )
        })
}

/// Appends the system audit record (tenant `""`) of a key command, with the operating
/// system user as the actor (`cli:<user>`).
pub(super) async fn audit(
    store: &Store,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), String> {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let draft = airlock_store::AuditDraft {
        tenant_id: String::new(),
        actor: format!("cli:{user}"),
        action: action.to_owned(),
        target: target.to_owned(),
        request_id: String::new(),
        detail,
    };
    store
        .append_audit(&draft)
        .await
        .map(|_| ())
        .map_err(|e| format!("the change is done, but its audit record was not written: {e}"))
}
