//! `airlock serve`: the REST service on SQLite (default) or PostgreSQL, until ctrl-c or
//! SIGTERM, then a graceful shutdown.

use std::process::ExitCode;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::EXIT_SETUP;
use airlock_api::bind;

use crate::config::Config;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: Config,
}

pub async fn run(args: ServeArgs) -> ExitCode {
    let config = args.config;
    let service = match config.start_service(config.runtime_options()).await {
        Ok(service) => service,
        Err(error) => {
            errln!("error: {error}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    let listener = match bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            errln!("error: {error}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| config.listen.to_string());
    errln!(
        "airlock: serving http://{addr} ({:?} mode, database {})",
        config.mode,
        database_label(&config)
    );
    let shutdown = CancellationToken::new();
    if let Some(addr) = config.metrics_listen {
        let listener = match bind(addr).await {
            Ok(listener) => listener,
            Err(error) => {
                errln!("error: metrics: {error}");
                return ExitCode::from(EXIT_SETUP);
            }
        };
        errln!("airlock: metrics on http://{addr}/metrics");
        let (state, stop) = (service.state.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(error) = airlock_api::serve_metrics(listener, state, stop).await {
                tracing::error!(%error, "the metrics listener failed");
            }
        });
    }
    tokio::spawn(wait_for_signal(shutdown.clone()));
    match service.serve(listener, shutdown).await {
        Ok(()) => {
            errln!("airlock: stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            errln!("error: {error}");
            ExitCode::from(EXIT_SETUP)
        }
    }
}

/// The database kind and location without credentials.
fn database_label(config: &Config) -> String {
    let url = config.database_url();
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{}", host.split('?').next().unwrap_or(host))
        }
        None => "?".into(),
    }
}

async fn wait_for_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    errln!("airlock: shutting down, finishing requests in flight");
    shutdown.cancel();
}
