//! `airlock token issue`: prints a signed bearer token, with the same key the server uses
//! (the same flags and environment; dev mode creates the key if it is missing), the current
//! key of the set when there is one. `airlock token keys rotate|list|retire` manages that
//! set (`<data-dir>/token-keys.json`; servers on the host reload it within a second), and
//! `airlock token revoke` refuses one token by its id in every process within a second.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::EXIT_SETUP;
use crate::config::Config;
use crate::units::parse_millis;
use airlock_api::token_keys::{KeyAlg, KeySet, LEGACY_KID};
use airlock_api::{JwtKeys, Role, unverified_id};

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a token for a role in a tenant (operators: no tenant).
    Issue(IssueArgs),
    /// The signing keys: rotate (a new current key), list, retire (its tokens are refused).
    Keys(KeysArgs),
    /// Refuse one token from now on, by its id (`jti`) or the token itself.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a key and sign new tokens with it; tokens of the other keys keep verifying.
    Rotate {
        #[arg(long, value_enum, default_value = "eddsa")]
        alg: KeyAlg,
        #[command(flatten)]
        config: Config,
    },
    /// Every key: id, algorithm, created, and whether it signs, verifies or was retired.
    List {
        #[command(flatten)]
        config: Config,
    },
    /// Refuse the tokens of key KID (`legacy`: tokens without a kid, of the JWT secret).
    Retire {
        kid: String,
        #[command(flatten)]
        config: Config,
    },
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The token's id (its `jti` claim).
    #[arg(long, conflicts_with = "token", required_unless_present = "token")]
    pub jti: Option<String>,
    /// The token itself (its id and expiry are read from it; its signature is not checked).
    #[arg(long)]
    pub token: Option<String>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The tenant the token acts in; omit (or `*`) for the operator role.
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long, value_enum)]
    pub role: Role,
    /// How long the token is valid, e.g. 30m, 1h, 24h.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// The token's subject (who it was issued to).
    #[arg(long, default_value = "cli")]
    pub subject: String,
    #[command(flatten)]
    pub config: Config,
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Some(hours) = text.strip_suffix('h') {
        let hours: u64 = hours
            .parse()
            .map_err(|_| format!("`{text}` is not a duration like 30m, 1h or 24h"))?;
        return Ok(Duration::from_secs(hours.saturating_mul(3600)));
    }
    if let Some(days) = text.strip_suffix('d') {
        let days: u64 = days
            .parse()
            .map_err(|_| format!("`{text}` is not a duration like 30m, 1h or 7d"))?;
        return Ok(Duration::from_secs(days.saturating_mul(86_400)));
    }
    parse_millis(text).map(Duration::from_millis)
}

pub async fn run(args: TokenArgs) -> ExitCode {
    match args.command {
        TokenCommand::Issue(args) => issue(args),
        TokenCommand::Keys(args) => keys(args.command).await,
        TokenCommand::Revoke(args) => revoke(args).await,
    }
}

async fn keys(command: KeysCommand) -> ExitCode {
    let config = match &command {
        KeysCommand::Rotate { config, .. }
        | KeysCommand::Retire { config, .. }
        | KeysCommand::List { config } => config,
    };
    let path = config.token_keys_path();
    let mut set = match KeySet::load(&path) {
        Ok(set) => set,
        Err(error) => {
            errln!("error: {error}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    let changed = match &command {
        KeysCommand::List { .. } => {
            list(&set);
            return ExitCode::SUCCESS;
        }
        KeysCommand::Rotate { alg, .. } => set.rotate(*alg),
        KeysCommand::Retire { kid, .. } => set.retire(kid).map(|()| kid.clone()),
    };
    let kid = match changed.and_then(|kid| set.save(&path).map(|()| kid)) {
        Ok(kid) => kid,
        Err(error) => {
            errln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let action = if let KeysCommand::Rotate { .. } = command {
        outln!("{kid}");
        errln!(
            "airlock: new tokens are signed with {kid}; servers on this host use it within a second"
        );
        "token keys rotate"
    } else {
        errln!("airlock: tokens of {kid} are refused within a second");
        "token keys retire"
    };
    // The change is the file's; its record goes to the database when there is one (a first
    // rotation may come before any server created it).
    match super::keys::existing_store(config).await {
        Ok(store) => {
            let detail = serde_json::json!({});
            if let Err(error) = super::keys::audit(&store, action, &kid, detail).await {
                errln!("airlock: {error}");
            }
            store.close().await;
        }
        Err(error) => errln!("airlock: no audit record of this change: {error}"),
    }
    ExitCode::SUCCESS
}

/// One line a key: id, algorithm, created (unix s), and whether it signs, verifies or was
/// retired.
fn list(set: &KeySet) {
    let legacy = if set.legacy_retired {
        "retired"
    } else if set.current.is_none() {
        "signs"
    } else {
        "verifies"
    };
    outln!("{LEGACY_KID}\tHS256\t-\t{legacy}");
    for key in &set.keys {
        let state = if key.retired_at.is_some() {
            "retired"
        } else if set.current.as_deref() == Some(key.kid.as_str()) {
            "signs"
        } else {
            "verifies"
        };
        outln!(
            "{}\t{}\t{}\t{state}",
            key.kid,
            key.alg.as_str(),
            key.created_at
        );
    }
}

async fn revoke(args: RevokeArgs) -> ExitCode {
    // Until the token expires; a bare id, whose expiry is unknown, for good.
    let (jti, expires_at_ms) = match (&args.jti, &args.token) {
        (Some(jti), _) => (jti.clone(), NEVER_MS),
        (None, Some(token)) => match unverified_id(token.trim()) {
            Some((jti, exp)) => (
                jti,
                i64::try_from(exp.saturating_mul(1000)).unwrap_or(i64::MAX),
            ),
            None => {
                errln!("error: the token has no id (`jti`): retire its signing key instead");
                return ExitCode::from(2);
            }
        },
        (None, None) => return ExitCode::from(2),
    };
    if jti.is_empty() || jti.len() > 128 || jti.contains(char::is_control) {
        errln!("error: a token id is 1-128 printable characters");
        return ExitCode::from(2);
    }
    let store = match super::keys::existing_store(&args.config).await {
        Ok(store) => store,
        Err(error) => {
            errln!("error: {error}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    let done = store.revoke_token(&jti, expires_at_ms).await;
    let code = match done {
        Ok(()) => {
            let audited = super::keys::audit(
                &store,
                "token revoke",
                &jti,
                serde_json::json!({"expires_at_ms": expires_at_ms}),
            )
            .await;
            if let Err(error) = audited {
                errln!("airlock: {error}");
            }
            errln!("airlock: token {jti} is refused by every process within a second");
            ExitCode::SUCCESS
        }
        Err(error) => {
            errln!("error: {error}");
            ExitCode::from(EXIT_SETUP)
        }
    };
    store.close().await;
    code
}

/// The expiry a revocation by bare id is kept until: never pruned.
const NEVER_MS: i64 = i64::MAX / 2;

fn issue(args: IssueArgs) -> ExitCode {
    let keys = match args.config.load_keys() {
        Ok(keys) => keys,
        Err(error) => {
            errln!("error: {error}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    for path in &keys.generated {
        errln!("airlock: dev mode generated {}", path.display());
    }
    let jwt = match JwtKeys::with_key_file(&keys.jwt_secret, args.config.token_keys_path()) {
        Ok(jwt) => jwt,
        Err(error) => {
            errln!("error: {error}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    match jwt.issue(&args.subject, args.tenant.as_deref(), args.role, args.ttl) {
        Ok(token) => {
            outln!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            errln!("error: {error}");
            ExitCode::from(2)
        }
    }
}
