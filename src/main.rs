//! The `hearth` command line.

use clap::{Parser, Subcommand};
use hearth::config::{Config, LogFormat};
use hearth::Hearth;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "hearth", version, about = "An HL7 FHIR R4 server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the FHIR API (applies pending migrations first unless --no-migrate).
    Serve(Config),
    /// Apply pending database migrations and exit.
    Migrate(Config),
    /// Rebuild the search index of every current resource and exit.
    Reindex(Config),
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_env("HEARTH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing requests in flight");
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(config) => {
            init_logs(config.log_format);
            serve(config).await
        }
        Command::Migrate(config) => {
            init_logs(config.log_format);
            migrate(config, false).await
        }
        Command::Reindex(config) => {
            init_logs(config.log_format);
            migrate(config, true).await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", e.message());
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> hearth::Result<()> {
    if !config.listen.ip().is_loopback() && !config.allow_remote_without_auth {
        return Err(hearth::Error::bad_request(format!(
            "refusing to listen on {}: Hearth does not authorise requests yet, so it only listens on \
             loopback addresses unless --allow-remote-without-auth is given",
            config.listen
        )));
    }
    let server = Hearth::start(&config).await?;
    tracing::info!(
        base = %server.base_url,
        database = if config.database_url.is_some() { "configured" } else { "embedded SQLite" },
        "Hearth is serving FHIR R4; authorization is NOT enforced yet"
    );
    server
        .serve(shutdown_signal())
        .await
        .map_err(|e| hearth::Error::internal(format!("server error: {e}")))
}

/// Applies migrations; rebuilds the search index when asked or when the index tables are new.
async fn migrate(config: Config, reindex: bool) -> hearth::Result<()> {
    use hearth::store::ResourceStore;
    let indexer = std::sync::Arc::new(hearth::store::Indexer::new(
        hearth::search::registry::Registry::r4().clone(),
        config.base_url(config.listen),
    ));
    let store = hearth::store::Store::connect(&config.database_url(), 1, indexer).await?;
    let applied = store.migrate().await?;
    tracing::info!(?applied, "migrations up to date");
    if reindex || applied.iter().any(|m| m.starts_with("search_")) {
        for refused in store.load_search_parameters().await? {
            tracing::warn!(refused, "custom SearchParameter not used");
        }
        let n = store.reindex(None).await?;
        tracing::info!(resources = n, "search index rebuilt");
    }
    store.close().await;
    Ok(())
}
