//! `airlock token issue`: prints a signed bearer token, with the same key the server uses
//! (the same flags and environment; dev mode creates the key if it is missing).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::EXIT_SETUP;
use crate::config::Config;
use crate::units::parse_millis;
use airlock_api::{JwtKeys, Role};

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a token for a role in a tenant (operators: no tenant).
    Issue(IssueArgs),
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

pub fn run(args: TokenArgs) -> ExitCode {
    match args.command {
        TokenCommand::Issue(args) => issue(args),
    }
}

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
    match JwtKeys::new(&keys.jwt_secret).issue(
        &args.subject,
        args.tenant.as_deref(),
        args.role,
        args.ttl,
    ) {
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
