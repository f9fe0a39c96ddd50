//! The `hearth` command line.

use clap::{Parser, Subcommand};
use hearth::auth::accounts::{self, ClientKind};
use hearth::auth::policy::Role;
use hearth::auth::server::AuthServer;
use hearth::config::{AuthMode, Config, LogFormat};
use hearth::Hearth;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc. Hearth allocates on one thread and frees on another
/// (an audit event is made by the request and freed by the writer task; buffers move between
/// tokio workers), and profiles of the read load spent a fifth of the server's time in glibc's
/// malloc, free and their chunk consolidation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Manage the people who sign in (patients, practitioners, administrators).
    User {
        #[command(subcommand)]
        action: UserAction,
        #[command(flatten)]
        config: Config,
    },
    /// Manage the applications that may ask for tokens.
    Client {
        #[command(subcommand)]
        action: ClientAction,
        #[command(flatten)]
        config: Config,
    },
    /// Mint an access token for a script, as an operator on the server's machine.
    Token {
        /// The registered client the token is for.
        #[arg(long)]
        client: String,
        /// The user the token acts for; without it, a backend-service (system) token.
        #[arg(long)]
        user: Option<String>,
        /// Space-separated SMART scopes (only those the client is registered for are given).
        #[arg(long)]
        scope: String,
        /// The launch patient, for patient/ scopes of a practitioner.
        #[arg(long)]
        patient: Option<String>,
        #[command(flatten)]
        config: Config,
    },
    /// Replace the token signing key now (tokens already issued stay valid).
    RotateKey(Config),
    /// Check or trim the audit trail.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
        #[command(flatten)]
        config: Config,
    },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Check the hash chain of every stored AuditEvent; fails at the first break.
    Verify,
    /// Remove the AuditEvents older than --audit-retention-days, and record the purge.
    Purge,
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a user. The password is read from HEARTH_NEW_PASSWORD or the first line of
    /// standard input; practitioners and administrators get a TOTP secret to enrol.
    Add {
        username: String,
        #[arg(long, value_enum)]
        role: Role,
        /// The user's own FHIR resource: `Patient/123`, `Practitioner/7`.
        #[arg(long)]
        fhir_user: Option<String>,
    },
    /// List users (never their secrets).
    List,
    /// Refuse a user's sign-ins and refreshes from now on.
    Disable { username: String },
    /// Allow a disabled or locked user again.
    Enable { username: String },
}

#[derive(Subcommand)]
enum ClientAction {
    /// Register (or replace) a client. A confidential-symmetric client's secret is printed
    /// once.
    Add {
        client_id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_enum)]
        kind: Kind,
        /// A redirect URI (repeat for several).
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// The scopes the client may be granted, space-separated.
        #[arg(long)]
        scope: String,
        /// A file with the client's public keys (a JWK Set), for confidential-asymmetric
        /// clients (backend services).
        #[arg(long)]
        jwks_file: Option<std::path::PathBuf>,
    },
    List,
    Remove {
        client_id: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Kind {
    Public,
    ConfidentialSymmetric,
    ConfidentialAsymmetric,
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
        Command::User { action, config } => {
            init_logs(config.log_format);
            user(config, action).await
        }
        Command::Client { action, config } => {
            init_logs(config.log_format);
            client(config, action).await
        }
        Command::Token {
            client,
            user,
            scope,
            patient,
            config,
        } => {
            init_logs(config.log_format);
            match auth_server(&config).await {
                Ok(auth) => auth
                    .mint(&client, user.as_deref(), &scope, patient.as_deref())
                    .await
                    .map(|t| println!("{t:#}")),
                Err(e) => Err(e),
            }
        }
        Command::Audit { action, config } => {
            init_logs(config.log_format);
            audit(config, action).await
        }
        Command::RotateKey(config) => {
            init_logs(config.log_format);
            match auth_server(&config).await {
                Ok(auth) => auth
                    .rotate_keys()
                    .await
                    .map(|kid| println!("new signing key {kid}")),
                Err(e) => Err(e),
            }
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
    let auth_off = config.auth == AuthMode::Off;
    if auth_off && !config.listen.ip().is_loopback() && !config.allow_remote_without_auth {
        return Err(hearth::Error::bad_request(format!(
            "refusing to listen on {} with --auth off: anyone who can reach it could read and \
             change every record. Add --allow-remote-without-auth if that is really meant",
            config.listen
        )));
    }
    if auth_off {
        tracing::warn!(
            "AUTHORIZATION IS OFF (--auth off): every request may read and change every record"
        );
    }
    if config.audit == AuthMode::Off {
        tracing::warn!("AUDITING IS OFF (--audit off): accesses to records are not recorded");
    }
    let server = Hearth::start(&config).await?;
    tracing::info!(
        base = %server.base_url,
        database = if config.database_url.is_some() { "configured" } else { "embedded SQLite" },
        authorization = if auth_off { "OFF" } else { "SMART on FHIR" },
        "Hearth is serving FHIR R4"
    );
    server
        .serve(shutdown_signal())
        .await
        .map_err(|e| hearth::Error::internal(format!("server error: {e}")))
}

/// Applies migrations; rebuilds the search index when asked or when the index tables are new.
/// The configured database, migrated, for the commands that work on it directly.
async fn open_store(config: &Config) -> hearth::Result<(hearth::store::Store, Vec<&'static str>)> {
    config.prepare_data_dir()?;
    let indexer = std::sync::Arc::new(hearth::store::Indexer::new(
        hearth::search::registry::Registry::r4().clone(),
        config.base_url(config.listen),
    ));
    let store = hearth::store::Store::connect(&config.database_url(), 1, indexer).await?;
    let applied = store.migrate().await?;
    Ok((store, applied))
}

async fn migrate(config: Config, reindex: bool) -> hearth::Result<()> {
    use hearth::store::ResourceStore;
    let (store, applied) = open_store(&config).await?;
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

/// The authorization server on the configured database, for the account commands.
async fn auth_server(config: &Config) -> hearth::Result<AuthServer> {
    let (store, _) = open_store(config).await?;
    AuthServer::start(store, config.auth_settings(&config.base_url(config.listen))).await
}

/// `hearth audit verify|purge`.
async fn audit(config: Config, action: AuditAction) -> hearth::Result<()> {
    let (store, _) = open_store(&config).await?;
    match action {
        AuditAction::Verify => {
            let report = hearth::audit::chain::verify(&store).await?;
            store.close().await;
            if let Some((seq, why)) = &report.broken {
                return Err(hearth::Error::bad_request(format!(
                    "the audit chain is broken at event #{seq}: {why} ({} events checked)",
                    report.links
                )));
            }
            if report.outside > 0 {
                return Err(hearth::Error::bad_request(format!(
                    "{} AuditEvents are outside the audit chain (written behind Hearth's back)",
                    report.outside
                )));
            }
            match (report.first_seq, &report.anchor) {
                (Some(first), Some(anchor)) => println!(
                    "audit chain intact: {} events, #{first} onwards (after a purge; it starts from {anchor})",
                    report.links
                ),
                _ => println!("audit chain intact: {} events", report.links),
            }
            Ok(())
        }
        AuditAction::Purge => {
            let log = hearth::audit::AuditLog::start(
                store.clone(),
                config.base_url(config.listen),
                &config.audit_settings(),
            )?;
            let removed = log.purge(config.audit_retention_days).await?;
            log.shutdown().await;
            store.close().await;
            println!(
                "removed {removed} AuditEvents older than {} days",
                config.audit_retention_days
            );
            Ok(())
        }
    }
}

fn new_password() -> hearth::Result<String> {
    let password = match std::env::var("HEARTH_NEW_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map_err(|e| {
                hearth::Error::bad_request(format!("cannot read the password: {e}"))
            })?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    accounts::check_password_policy(&password).map_err(hearth::Error::bad_request)?;
    Ok(password)
}

async fn user(config: Config, action: UserAction) -> hearth::Result<()> {
    let auth = auth_server(&config).await?;
    match action {
        UserAction::Add {
            username,
            role,
            fhir_user,
        } => {
            if role == Role::System {
                return Err(hearth::Error::bad_request(
                    "backend services are clients (hearth client add), not users",
                ));
            }
            if role == Role::Patient
                && !fhir_user
                    .as_deref()
                    .is_some_and(|f| f.starts_with("Patient/"))
            {
                return Err(hearth::Error::bad_request(
                    "a patient user needs --fhir-user Patient/<id>",
                ));
            }
            let password = new_password()?;
            let mut user = accounts::User {
                username: username.clone(),
                password_hash: accounts::hash_secret(&password),
                role,
                fhir_user,
                totp_secret: None,
                totp_last_step: None,
                disabled: false,
                failed_logins: 0,
                locked_until: None,
            };
            if user.needs_totp() {
                user.totp_secret = Some(accounts::new_totp_secret());
            }
            if !auth.add_user(&user).await? {
                return Err(hearth::Error::bad_request(format!(
                    "the user name '{username}' is taken"
                )));
            }
            println!("added user {username}");
            if let Some(secret) = &user.totp_secret {
                println!("TOTP secret (enrol it in an authenticator app): {secret}");
                println!("{}", accounts::totp_uri(secret, &username));
            }
        }
        UserAction::List => {
            for u in auth.users().await? {
                println!(
                    "{}\t{:?}\t{}\t{}",
                    u.username,
                    u.role,
                    u.fhir_user.as_deref().unwrap_or("-"),
                    if u.disabled { "disabled" } else { "enabled" }
                );
            }
        }
        UserAction::Disable { username } => {
            if !auth.set_user_disabled(&username, true).await? {
                return Err(hearth::Error::bad_request(format!("no user '{username}'")));
            }
            println!("disabled {username}");
        }
        UserAction::Enable { username } => {
            if !auth.set_user_disabled(&username, false).await? {
                return Err(hearth::Error::bad_request(format!("no user '{username}'")));
            }
            println!("enabled {username}");
        }
    }
    Ok(())
}

async fn client(config: Config, action: ClientAction) -> hearth::Result<()> {
    let auth = auth_server(&config).await?;
    match action {
        ClientAction::Add {
            client_id,
            name,
            kind,
            redirect_uris,
            scope,
            jwks_file,
        } => {
            hearth::auth::scope::parse_list(&scope)
                .map_err(|e| hearth::Error::bad_request(e.to_string()))?;
            let kind = match kind {
                Kind::Public => ClientKind::Public,
                Kind::ConfidentialSymmetric => ClientKind::ConfidentialSymmetric,
                Kind::ConfidentialAsymmetric => ClientKind::ConfidentialAsymmetric,
            };
            let jwks = match jwks_file {
                Some(path) => {
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        hearth::Error::bad_request(format!("cannot read {}: {e}", path.display()))
                    })?;
                    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                        hearth::Error::bad_request(format!("the JWKS is not JSON: {e}"))
                    })?;
                    Some(v)
                }
                None => None,
            };
            if kind == ClientKind::ConfidentialAsymmetric && jwks.is_none() {
                return Err(hearth::Error::bad_request(
                    "a confidential-asymmetric client needs --jwks-file",
                ));
            }
            let secret = (kind == ClientKind::ConfidentialSymmetric)
                .then(hearth::auth::server::random_secret);
            let client = accounts::Client {
                client_id: client_id.clone(),
                name: name.unwrap_or(client_id.clone()),
                kind,
                secret_hash: secret.as_deref().map(accounts::hash_secret),
                redirect_uris,
                scope,
                jwks,
            };
            auth.put_client(&client).await?;
            println!("registered client {client_id}");
            if let Some(secret) = secret {
                println!("client secret (shown once): {secret}");
            }
        }
        ClientAction::List => {
            for c in auth.clients().await? {
                println!(
                    "{}\t{:?}\t{}\t{}",
                    c.client_id,
                    c.kind,
                    c.scope,
                    c.redirect_uris.join(" ")
                );
            }
        }
        ClientAction::Remove { client_id } => {
            if !auth.remove_client(&client_id).await? {
                return Err(hearth::Error::bad_request(format!(
                    "no client '{client_id}'"
                )));
            }
            println!("removed {client_id}");
        }
    }
    Ok(())
}
