//! The one configuration of a Hearth server: command-line flags, each with a `HEARTH_*`
//! environment variable. The README lists them all.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Database URL: `postgres://user@host/db` or `sqlite:path`. Default: an SQLite file in
    /// the data directory.
    #[arg(long, env = "HEARTH_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Directory for the embedded SQLite database.
    #[arg(long, env = "HEARTH_DATA_DIR", default_value = "./hearth-data")]
    pub data_dir: PathBuf,

    /// Address and port to listen on.
    #[arg(long, env = "HEARTH_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The public base URL of the FHIR endpoint, used in Location headers and Bundle links.
    /// Default: http://<listen>/fhir.
    #[arg(long, env = "HEARTH_BASE_URL")]
    pub base_url: Option<String>,

    /// Largest request body accepted, in bytes (larger ones get 413).
    #[arg(long, env = "HEARTH_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Database connections in the pool.
    #[arg(long, env = "HEARTH_DB_POOL_SIZE", default_value_t = 32)]
    pub db_pool_size: u32,

    /// Do not apply pending migrations when the server starts (run `hearth migrate` instead).
    #[arg(long, env = "HEARTH_NO_MIGRATE")]
    pub no_migrate: bool,

    /// Log format.
    #[arg(long, env = "HEARTH_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Authorization: `on` (SMART on FHIR, the default) or `off` (every request is allowed;
    /// for local experiments only, and said loudly at start-up).
    #[arg(long, env = "HEARTH_AUTH", value_enum, default_value = "on")]
    pub auth: AuthMode,

    /// With `--auth off`, Hearth refuses to listen on anything but a loopback address unless
    /// this flag says you know.
    #[arg(long, env = "HEARTH_ALLOW_REMOTE_WITHOUT_AUTH")]
    pub allow_remote_without_auth: bool,

    /// How long an access token is valid, in minutes.
    #[arg(long, env = "HEARTH_ACCESS_TOKEN_MINUTES", default_value_t = 15)]
    pub access_token_minutes: i64,

    /// How long an `offline_access` refresh token is valid, in days (`online_access` ones:
    /// 12 hours).
    #[arg(long, env = "HEARTH_REFRESH_TOKEN_DAYS", default_value_t = 90)]
    pub refresh_token_days: i64,

    /// How often the token signing key is replaced, in days.
    #[arg(long, env = "HEARTH_SIGNING_KEY_DAYS", default_value_t = 30)]
    pub signing_key_days: i64,

    /// Failed sign-ins in a row that lock an account.
    #[arg(long, env = "HEARTH_MAX_FAILED_LOGINS", default_value_t = 5)]
    pub max_failed_logins: u32,

    /// How long a locked account stays locked, in minutes.
    #[arg(long, env = "HEARTH_LOCKOUT_MINUTES", default_value_t = 15)]
    pub lockout_minutes: i64,

    /// Record an AuditEvent for every access (`on`, the default). `off` is for benchmarks
    /// only: nothing is audited, and the server says so loudly at start-up.
    #[arg(long, env = "HEARTH_AUDIT", value_enum, default_value_t = AuthMode::On)]
    pub audit: AuthMode,

    /// Audit events waiting to be stored before requests are made to wait (backpressure).
    #[arg(long, env = "HEARTH_AUDIT_BUFFER", default_value_t = 10_000)]
    pub audit_buffer: usize,

    /// How long AuditEvents are kept, in days (default 7 years); `hearth audit purge`, or the
    /// daily purge with `--audit-purge-daily`, removes older ones.
    #[arg(long, env = "HEARTH_AUDIT_RETENTION_DAYS", default_value_t = 2557)]
    pub audit_retention_days: i64,

    /// Purge AuditEvents older than the retention period once a day while serving.
    #[arg(long, env = "HEARTH_AUDIT_PURGE_DAILY")]
    pub audit_purge_daily: bool,

    /// Also append every stored AuditEvent as a line of NDJSON to this file (`-`: standard
    /// output), for a SIEM.
    #[arg(long, env = "HEARTH_AUDIT_EXPORT")]
    pub audit_export: Option<String>,

    /// How unknown search parameters are handled when the client does not say
    /// (`Prefer: handling=`): `strict` refuses them with 400, `lenient` ignores them and
    /// reports them in the result Bundle. Conditional interactions are always strict.
    #[arg(
        long,
        env = "HEARTH_SEARCH_HANDLING",
        value_enum,
        default_value = "strict"
    )]
    pub search_handling: Handling,

    /// The most entries a batch or transaction Bundle may have (more: 413).
    #[arg(long, env = "HEARTH_MAX_BUNDLE_ENTRIES", default_value_t = 5000)]
    pub max_bundle_entries: usize,

    /// The longest window, in days, an `Appointment/$find` may search (longer: 400).
    #[arg(long, env = "HEARTH_FIND_MAX_DAYS", default_value_t = 62)]
    pub find_max_days: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    On,
    Off,
}

/// `Prefer: handling` when the client does not send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Handling {
    Strict,
    Lenient,
}

impl Config {
    /// A configuration with every default, for tests and examples.
    pub fn for_database(database_url: &str) -> Config {
        Config {
            database_url: Some(database_url.to_string()),
            data_dir: PathBuf::from("./hearth-data"),
            listen: "127.0.0.1:0".parse().expect("a literal address"),
            base_url: None,
            max_body_bytes: 16 * 1024 * 1024,
            db_pool_size: 16,
            no_migrate: false,
            log_format: LogFormat::Text,
            auth: AuthMode::On,
            allow_remote_without_auth: false,
            access_token_minutes: 15,
            refresh_token_days: 90,
            signing_key_days: 30,
            max_failed_logins: 5,
            lockout_minutes: 15,
            audit: AuthMode::On,
            audit_buffer: 10_000,
            audit_retention_days: 2557,
            audit_purge_daily: false,
            audit_export: None,
            search_handling: Handling::Strict,
            max_bundle_entries: 5000,
            find_max_days: 62,
        }
    }

    /// The authorization server's settings for a server whose FHIR base is `base_url`.
    pub fn auth_settings(&self, base_url: &str) -> crate::auth::server::Settings {
        let origin = base_url.strip_suffix("/fhir").unwrap_or(base_url);
        crate::auth::server::Settings {
            fhir_base: base_url.to_string(),
            issuer: format!("{origin}/auth"),
            access_token_seconds: self.access_token_minutes * 60,
            refresh_token_seconds: self.refresh_token_days * 86_400,
            online_refresh_seconds: 12 * 3600,
            key_rotation_seconds: self.signing_key_days * 86_400,
            max_failed_logins: self.max_failed_logins,
            lockout_seconds: self.lockout_minutes * 60,
        }
    }

    /// How the audit trail is kept.
    pub fn audit_settings(&self) -> crate::audit::AuditSettings {
        crate::audit::AuditSettings {
            enabled: self.audit == AuthMode::On,
            buffer: self.audit_buffer,
            export: self.audit_export.clone(),
        }
    }

    /// Creates the data directory of the embedded database, if that is the one in use.
    pub fn prepare_data_dir(&self) -> crate::Result<()> {
        if self.database_url.is_none() {
            std::fs::create_dir_all(&self.data_dir).map_err(|e| {
                crate::Error::internal(format!(
                    "cannot create the data directory {}: {e}",
                    self.data_dir.display()
                ))
            })?;
        }
        Ok(())
    }

    /// The database URL, defaulting to `<data_dir>/hearth.db`.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite:{}", self.data_dir.join("hearth.db").display()),
        }
    }

    /// The FHIR base URL without a trailing slash.
    pub fn base_url(&self, bound: SocketAddr) -> String {
        match &self.base_url {
            Some(b) => b.trim_end_matches('/').to_string(),
            None => format!("http://{bound}/fhir"),
        }
    }
}
