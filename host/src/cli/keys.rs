//! `airlock keys rotate` and `airlock keys reencrypt`: add a key to the key file and make it
//! current, then re-encrypt every stored connection under it, while servers keep serving
//! (they still decrypt old key ids, and reload the key file when they meet the new one).

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{EXIT_FAILED, EXIT_SETUP};
use crate::config::Config;
use crate::store::{Store, StoreOptions, reencrypt_connections};

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new key, make it current, and re-encrypt every connection under it.
    Rotate(PassArgs),
    /// Re-encrypt connections still under an older key (e.g. written during a rotation).
    Reencrypt(PassArgs),
}

#[derive(Debug, Args)]
pub struct PassArgs {
    /// Connections read per page.
    #[arg(long, default_value_t = 100)]
    pub batch: i64,
    #[command(flatten)]
    pub config: Config,
}

pub async fn run(args: KeysArgs) -> ExitCode {
    let (rotate, args) = match args.command {
        KeysCommand::Rotate(args) => (true, args),
        KeysCommand::Reencrypt(args) => (false, args),
    };
    match pass(rotate, &args).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
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
        eprintln!(
            "airlock: key {id} added to {} and made current",
            config.keys_path().display()
        );
    }
    let store = Store::connect(&config.database_url(), &StoreOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let report = reencrypt_connections(&store, &keyring, args.batch.max(1))
        .await
        .map_err(|e| e.to_string())?;
    store.close().await;
    println!(
        "re-encrypted {} connection(s) under key {}; {} changed meanwhile; {} failed",
        report.reencrypted,
        keyring.current(),
        report.changed_meanwhile,
        report.failed
    );
    if report.changed_meanwhile > 0 {
        eprintln!("airlock: run `airlock keys reencrypt` again to pick up rows written meanwhile");
    }
    Ok(if report.failed > 0 {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}
