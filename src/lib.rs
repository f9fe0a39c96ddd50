//! Hearth: an HL7 FHIR R4 server on PostgreSQL JSONB or embedded SQLite.
//!
//! [`Hearth::start`] builds the whole application from a [`Config`]; the binary, the tests
//! and the examples all embed the same server this way.

pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod fhir;
pub mod http;
pub mod scheduling;
pub mod search;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;

pub use config::Config;
pub use error::{Error, Result};
use store::{ResourceStore, Store};

/// A server bound to its port, ready to serve.
pub struct Hearth {
    listener: TcpListener,
    router: axum::Router,
    store: Store,
    pub base_url: String,
    /// The authorization server's periodic upkeep, stopped with the server.
    upkeep: tokio::task::JoinHandle<()>,
    auth: std::sync::Arc<auth::server::AuthServer>,
    audit: std::sync::Arc<audit::AuditLog>,
}

impl Hearth {
    /// Connects the store, applies migrations (unless disabled), compiles the validator and
    /// binds the listening socket.
    pub async fn start(config: &Config) -> Result<Hearth> {
        config.prepare_data_dir()?;
        let database_url = config.database_url();
        // Bind first: the base URL (with the real port) is part of what the store indexes.
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| Error::internal(format!("cannot listen on {}: {e}", config.listen)))?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::internal(format!("no local address: {e}")))?;
        let base_url = config.base_url(bound);
        let indexer = std::sync::Arc::new(store::Indexer::new(
            search::registry::Registry::r4().clone(),
            base_url.clone(),
        ));
        let store = Store::connect(&database_url, config.db_pool_size, indexer).await?;
        if !config.no_migrate {
            let applied = store.migrate().await?;
            if !applied.is_empty() {
                tracing::info!(?applied, "migrations applied");
            }
            if applied.iter().any(|m| m.starts_with("search_")) {
                // Resources stored before search existed get their index rows now.
                let n = store.reindex(None).await?;
                tracing::info!(resources = n, "search index built");
            }
        }
        for refused in store.load_search_parameters().await? {
            tracing::warn!(refused, "custom SearchParameter not used");
        }
        let auth = std::sync::Arc::new(
            auth::server::AuthServer::start(store.clone(), config.auth_settings(&base_url)).await?,
        );
        let audit =
            audit::AuditLog::start(store.clone(), base_url.clone(), &config.audit_settings())?;
        let upkeep = {
            let auth = auth.clone();
            let audit = audit.clone();
            let retention = config
                .audit_purge_daily
                .then_some(config.audit_retention_days);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
                tick.tick().await;
                let mut minutes = 0u64;
                loop {
                    tick.tick().await;
                    if let Err(e) = auth.maintain().await {
                        tracing::warn!(error = e.message(), "authorization upkeep failed");
                    }
                    minutes += 1;
                    if let Some(days) = retention.filter(|_| minutes % (24 * 60) == 1) {
                        if let Err(e) = audit.purge(days).await {
                            tracing::warn!(error = e.message(), "the daily audit purge failed");
                        }
                    }
                }
            })
        };
        let started = fhir::datetime::format_instant(chrono::Utc::now());
        let state = http::AppState::new(http::Shared {
            store: store.clone(),
            base_url: base_url.clone(),
            max_body_bytes: config.max_body_bytes,
            validator: fhir::validate::Validator::shared(),
            metrics: http::metrics::Metrics::default(),
            capability: std::sync::RwLock::new(http::capability::statement(
                &base_url,
                &started,
                &store.indexer().registry(),
                (config.auth == config::AuthMode::On).then_some(auth.settings.issuer.as_str()),
            )),
            started,
            lenient_by_default: config.search_handling == config::Handling::Lenient,
            max_bundle_entries: config.max_bundle_entries,
            find_max_days: config.find_max_days,
            auth: auth.clone(),
            audit: audit.clone(),
            enforce_auth: config.auth == config::AuthMode::On,
        });
        // Build the element model now (the first write would), then give back what start-up
        // parsing left behind.
        let _ = search::index::extract(
            &store.indexer().registry(),
            &serde_json::json!({"resourceType": "Patient", "birthDate": "2000"}),
            &base_url,
        );
        release_startup_memory();
        Ok(Hearth {
            listener,
            router: http::router(state),
            store,
            base_url,
            upkeep,
            auth,
            audit,
        })
    }

    /// The authorization server: users, clients and keys, as the `hearth user`, `client`
    /// and `token` commands manage them.
    pub fn auth(&self) -> std::sync::Arc<auth::server::AuthServer> {
        self.auth.clone()
    }

    /// The audit trail, as `hearth audit` works on it.
    pub fn audit(&self) -> std::sync::Arc<audit::AuditLog> {
        self.audit.clone()
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish and closes the
    /// database pool.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        self.upkeep.abort();
        self.audit.shutdown().await;
        self.store.close().await;
        Ok(())
    }
}

/// Building the validator and the search registry parses the R4 schema and definitions (tens
/// of MB, briefly). glibc keeps freed memory in its arenas; give it back to the system so
/// that an idle server stays small.
fn release_startup_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
