//! `airlock audit verify`: walks every tenant's audit hash chain (or one) and reports the
//! first record that does not follow.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{EXIT_FAILED, EXIT_SETUP};
use crate::config::Config;

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute every chained record's hash and link; exit 1 at the first broken one.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Only this tenant's chain (`""` is the system chain: key commands).
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub config: Config,
}

pub async fn run(args: AuditArgs) -> ExitCode {
    let AuditCommand::Verify(args) = args.command;
    let store = match super::keys::existing_store(&args.config).await {
        Ok(store) => store,
        Err(error) => {
            errln!("error: {error}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    let code = verify(&store, args.tenant).await;
    store.close().await;
    code
}

async fn verify(store: &airlock_store::Store, tenant: Option<String>) -> ExitCode {
    let tenants = match tenant {
        Some(tenant) => vec![tenant],
        None => match store.audit_tenants().await {
            Ok(tenants) => tenants,
            Err(error) => {
                errln!("error: {error}");
                return ExitCode::from(EXIT_SETUP);
            }
        },
    };
    let mut records = 0;
    for tenant in &tenants {
        let chain = match store.audit_chain(tenant).await {
            Ok(chain) => chain,
            Err(error) => {
                errln!("error: {error}");
                return ExitCode::from(EXIT_SETUP);
            }
        };
        match airlock_store::verify_audit_chain(&chain) {
            Ok(checked) => records += checked,
            Err(broken) => {
                outln!(
                    "broken: tenant {:?}, record {} (seq {}): {}",
                    broken.tenant_id,
                    broken.id,
                    broken.seq,
                    broken.reason
                );
                return ExitCode::from(EXIT_FAILED);
            }
        }
    }
    outln!(
        "ok: {records} record(s) in {} chain(s) verified",
        tenants.len()
    );
    ExitCode::SUCCESS
}
