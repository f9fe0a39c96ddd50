//! Test harness: a real Hearth server on a random port, on a fresh PostgreSQL database or a
//! temporary SQLite file, spoken to over HTTP.
//!
//! PostgreSQL is found at `HEARTH_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each server gets its own database, dropped
//! afterwards. When that variable is unset and nothing answers at the default address, the
//! harness starts a temporary PostgreSQL cluster of its own from the installed binaries
//! (`initdb`, `pg_ctl`), one per test process, removed when the process ends;
//! `HEARTH_TEST_POSTGRES=temporary` always does so. `HEARTH_TEST_BACKENDS=sqlite` (or
//! `postgres`) runs one backend only.
#![allow(dead_code)]

use std::future::Future;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hearth::{Config, Hearth};
use serde_json::Value;
use sqlx::Connection;

/// Connects to `$url` as `$conn`, and for each `(key, packed)` AuditEvent row `$pick`
/// selects runs `$update` with `$rewrite(packed)` and the key, behind Hearth's back; answers
/// the connection and how many rows changed.
macro_rules! rewrite_packed {
    ($conn:ty, $url:expr, $pick:expr, $update:expr, $rewrite:expr) => {{
        let mut c = <$conn>::connect(&$url).await.unwrap();
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as($pick).fetch_all(&mut c).await.unwrap();
        let mut changed = 0;
        for (key, packed) in rows {
            changed += sqlx::query($update)
                .bind($rewrite(packed))
                .bind(key)
                .execute(&mut c)
                .await
                .unwrap()
                .rows_affected();
        }
        (c, changed)
    }};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Server {
    pub base: String,
    pub root: String,
    pub client: reqwest::Client,
    pub backend: Backend,
    /// The PostgreSQL database of this server, dropped with the last server on it.
    pub database: Option<String>,
    /// The server's authorization server, to register users and clients as `hearth user`
    /// and `hearth client` do.
    pub auth: Arc<hearth::auth::server::AuthServer>,
    storage: Arc<Storage>,
    runtime: ServerRuntime,
    running: Mutex<Option<Running>>,
}

/// Where a server's tasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerRuntime {
    /// On the test's own runtime (the default).
    Shared,
    /// On a thread and runtime of its own, ended as soon as `Hearth::serve` returns, as the
    /// process ends in production: whatever the server still had running then is cut off.
    /// For shutdown tests, which would otherwise not see a `serve` that returns too early.
    Own,
}

/// The database (or SQLite file) behind one or more servers: see [`Server::reopen`].
struct Storage {
    config: Config,
    database: Option<String>,
    _dir: tempfile::TempDir,
}

/// A serving server: the sender that stops it, and what `Hearth::serve` returned once its
/// runtime is gone.
struct Running {
    shutdown: tokio::sync::oneshot::Sender<()>,
    done: tokio::sync::oneshot::Receiver<std::io::Result<()>>,
}

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The URL of the test PostgreSQL server's `postgres` database, as a superuser (or a role
/// allowed to create databases). Decided once per test process: see [`choose_postgres`].
pub fn admin_url() -> String {
    static POSTGRES: OnceLock<Result<TestPostgres, String>> = OnceLock::new();
    match POSTGRES.get_or_init(choose_postgres) {
        Ok(pg) => pg.admin_url.clone(),
        Err(why) => panic!("{why}"),
    }
}

/// The URL of database `name` on the test PostgreSQL server.
pub fn database_url(name: &str) -> String {
    let admin = admin_url();
    let (server, _) = admin
        .rsplit_once('/')
        .expect("a PostgreSQL URL has a database part");
    format!("{server}/{name}")
}

fn enabled(backend: Backend) -> bool {
    match std::env::var("HEARTH_TEST_BACKENDS") {
        Ok(list) => list.split(',').any(|b| {
            b.trim().eq_ignore_ascii_case(match backend {
                Backend::Sqlite => "sqlite",
                Backend::Postgres => "postgres",
            })
        }),
        Err(_) => true,
    }
}

pub async fn admin_connection() -> sqlx::PgConnection {
    let url = admin_url();
    match sqlx::PgConnection::connect(&url).await {
        Ok(c) => c,
        Err(e) => panic!(
            "PostgreSQL is not reachable at {url}: {e}.\n\
             The tests need a PostgreSQL server (14 or newer). Start one, point \
             HEARTH_TEST_POSTGRES_URL at it, or run only the SQLite half with \
             HEARTH_TEST_BACKENDS=sqlite."
        ),
    }
}

/// Runs a future to completion on a runtime of its own, in a thread of its own: usable from
/// `Drop`, from plain functions, and from inside another runtime alike.
fn run_apart<T, F>(make: impl FnOnce() -> F + Send + 'static) -> T
where
    F: Future<Output = T>,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(make())
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

impl Server {
    /// Starts a server, or `None` if this backend is switched off for the run.
    pub async fn start(backend: Backend) -> Option<Server> {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tune: impl FnOnce(&mut Config)) -> Option<Server> {
        Self::start_in(backend, ServerRuntime::Shared, tune).await
    }

    /// Starts a server with authorization on, as `hearth serve` runs by default.
    pub async fn start_secured(backend: Backend) -> Option<Server> {
        Self::start_with(backend, |c| c.auth = hearth::config::AuthMode::On).await
    }

    /// Starts a server on a runtime of its own: see [`ServerRuntime::Own`].
    pub async fn start_on_own_runtime(backend: Backend) -> Option<Server> {
        Self::start_in(backend, ServerRuntime::Own, |_| {}).await
    }

    pub async fn start_in(
        backend: Backend,
        runtime: ServerRuntime,
        tune: impl FnOnce(&mut Config),
    ) -> Option<Server> {
        if !enabled(backend) {
            eprintln!("skipped: {backend:?} is not in HEARTH_TEST_BACKENDS");
            return None;
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (url, database) = match backend {
            Backend::Sqlite => (
                format!("sqlite:{}", dir.path().join("hearth.db").display()),
                None,
            ),
            Backend::Postgres => {
                let name = format!("hearth_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = admin_connection().await;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .expect("CREATE DATABASE");
                (database_url(&name), Some(name))
            }
        };
        let mut config = Config::for_database(&url);
        config.db_pool_size = 8;
        // These tests are about FHIR behaviour; tests/auth.rs turns authorization back on
        // (the server's own default) and tests it.
        config.auth = hearth::config::AuthMode::Off;
        tune(&mut config);
        let storage = Arc::new(Storage {
            config,
            database,
            _dir: dir,
        });
        Some(Self::launch(backend, storage, runtime).await)
    }

    /// Starts a server on `storage`.
    async fn launch(backend: Backend, storage: Arc<Storage>, runtime: ServerRuntime) -> Server {
        let config = storage.config.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<_, String>>();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let serve = async move {
            let hearth = match Hearth::start(&config).await {
                Ok(hearth) => hearth,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:?}")));
                    return Ok(());
                }
            };
            let addresses = (
                format!("http://{}", hearth.local_addr()),
                hearth.base_url.clone(),
                hearth.auth(),
            );
            let _ = ready_tx.send(Ok(addresses));
            hearth
                .serve(async {
                    let _ = stop.await;
                })
                .await
        };
        match runtime {
            ServerRuntime::Shared => {
                tokio::spawn(async move {
                    let _ = done_tx.send(serve.await);
                });
            }
            ServerRuntime::Own => {
                std::thread::Builder::new()
                    .name("hearth-server".into())
                    .spawn(move || {
                        let runtime = tokio::runtime::Builder::new_multi_thread()
                            .worker_threads(2)
                            .enable_all()
                            .build()
                            .expect("a runtime");
                        let served = runtime.block_on(serve);
                        // The process would exit here: stop whatever is left.
                        drop(runtime);
                        let _ = done_tx.send(served);
                    })
                    .expect("a server thread");
            }
        }
        let (root, base, auth) = ready_rx
            .await
            .expect("the server task starts")
            .unwrap_or_else(|e| panic!("the server starts: {e}"));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        Server {
            base,
            root,
            auth,
            client,
            backend,
            database: storage.database.clone(),
            storage,
            runtime,
            running: Mutex::new(Some(Running { shutdown, done })),
        }
    }

    /// Tells the server to shut down, as SIGTERM does, and waits until `Hearth::serve` has
    /// returned (in-flight requests finished, database pool closed) and, on its own runtime,
    /// that runtime is gone. Returns what `serve` returned; a server already shut down
    /// returns `Ok`.
    pub async fn shutdown(&self) -> std::io::Result<()> {
        let running = self.running.lock().unwrap().take();
        let Some(Running { shutdown, done }) = running else {
            return Ok(());
        };
        let _ = shutdown.send(());
        done.await.expect("the server ends without panicking")
    }

    /// Starts another server (on a port of its own, the same kind of runtime) on the same
    /// PostgreSQL database or SQLite file, as a restart after [`Server::shutdown`] would. The
    /// storage is kept until the last server on it is dropped.
    pub async fn reopen(&self) -> Server {
        Self::launch(self.backend, self.storage.clone(), self.runtime).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST")
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .expect("DELETE")
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .await
            .expect("PUT")
    }

    /// Creates a resource and returns the stored body.
    pub async fn create(&self, body: &Value) -> Value {
        let t = body["resourceType"].as_str().expect("a resourceType");
        let r = self.post_json(t, body).await;
        assert_eq!(r.status(), 201, "create {t}");
        r.json().await.expect("a JSON body")
    }

    /// A backend-service token for everything (`system/*.cruds`), minted as `hearth token`
    /// does for the registered client `ops`: for seeding data with authorization on.
    pub async fn system_token(&self) -> String {
        use hearth::auth::accounts::{Client, ClientKind};
        self.auth
            .put_client(&Client {
                client_id: "ops".into(),
                name: "ops".into(),
                kind: ClientKind::ConfidentialAsymmetric,
                secret_hash: None,
                redirect_uris: vec![],
                scope: "system/*.cruds".into(),
                jwks: Some(serde_json::json!({"keys": []})),
            })
            .await
            .expect("the ops client is registered");
        let t = self
            .auth
            .mint("ops", None, "system/*.cruds", None)
            .await
            .expect("a system token");
        t["access_token"]
            .as_str()
            .expect("an access token")
            .to_string()
    }

    /// The server's database URL, for the `hearth` commands that work on it directly.
    pub fn database_url(&self) -> String {
        self.storage.config.database_url()
    }

    /// Changes the outcome of the second AuditEvent of the audit chain in the database,
    /// as someone with database access and bad intentions would; returns its position.
    pub async fn tamper_with_an_audit_event(&self) -> i64 {
        const VICTIM: i64 = 2;
        // The text is packed (`hearth::audit::pack`): unpack, change, pack again.
        let pick = "SELECT key, packed FROM audit_event
            WHERE key = (SELECT key FROM audit_link WHERE seq = 2)";
        let update = "UPDATE audit_event SET packed = $1 WHERE key = $2";
        let change = |packed: Vec<u8>| {
            let text = hearth::audit::pack::unpack(&packed).expect("packed text");
            let changed = text.replace("\"outcome\":\"0\"", "\"outcome\":\"8\"");
            assert_ne!(text, changed);
            hearth::audit::pack::pack(&changed)
        };
        let url = self.database_url();
        let changed = match self.backend {
            Backend::Postgres => rewrite_packed!(sqlx::PgConnection, url, pick, update, change).1,
            Backend::Sqlite => rewrite_packed!(sqlx::SqliteConnection, url, pick, update, change).1,
        };
        assert_eq!(changed, 1, "the chain has a second event to tamper with");
        VICTIM
    }

    /// A number the database answers to `sql`, read behind Hearth's back.
    pub async fn scalar(&self, sql: &str) -> i64 {
        let url = self.database_url();
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        match self.backend {
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
        }
    }

    /// Puts the database back in the shape Hearth before migration 0007 left it: every
    /// AuditEvent a generic resource (with its version row), queued for the chain, and no
    /// audit table. The chain starts over (its old hashes covered the audit table's text).
    /// Run on a stopped server; a server started on it again must migrate it forward.
    pub async fn undo_the_audit_table(&self) {
        self.undo_the_packed_text().await;
        let url = self.database_url();
        let (last_updated, body) = match self.backend {
            Backend::Postgres => ("to_timestamp(last_updated / 1000000.0)", "body::jsonb"),
            Backend::Sqlite => ("last_updated", "body"),
        };
        let script = format!(
            "DROP TABLE audit_link;
             DROP TABLE audit_queue;
             CREATE TABLE audit_chain (key bigint PRIMARY KEY, recorded bigint NOT NULL,
                seq bigint UNIQUE, prev text, hash text);
             CREATE INDEX audit_chain_unsealed ON audit_chain (key) WHERE seq IS NULL;
             INSERT INTO resource (type, id, version, last_updated, body)
                SELECT 'AuditEvent', id, 1, {last_updated}, {body} FROM audit_event ORDER BY key;
             INSERT INTO resource_version (key, type, id, version, last_updated, method, body)
                SELECT key, type, id, version, last_updated, 'POST', body FROM resource
                WHERE type = 'AuditEvent';
             INSERT INTO audit_chain (key, recorded)
                SELECT key, 0 FROM resource WHERE type = 'AuditEvent';
             DROP TABLE audit_ref;
             DROP TABLE audit_event;
             DELETE FROM hearth_migration WHERE version IN (7, 8);"
        );
        match self.backend {
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(script))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(script))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        }
    }

    /// Puts a stopped server's database back into its shape before migration 0009: every
    /// AuditEvent's text in `body`, no `packed` column.
    pub async fn undo_the_packed_text(&self) {
        let url = self.database_url();
        let pick = "SELECT key, packed FROM audit_event WHERE packed IS NOT NULL";
        let update = "UPDATE audit_event SET body = $1, packed = NULL WHERE key = $2";
        let text = |packed: Vec<u8>| hearth::audit::pack::unpack(&packed).expect("packed text");
        let drop_packed = "ALTER TABLE audit_event DROP COLUMN packed;
            DELETE FROM hearth_migration WHERE version = 9;";
        match self.backend {
            Backend::Postgres => {
                let (mut c, _) = rewrite_packed!(sqlx::PgConnection, url, pick, update, text);
                let not_null = "ALTER TABLE audit_event ALTER COLUMN body SET NOT NULL";
                sqlx::raw_sql(drop_packed).execute(&mut c).await.unwrap();
                sqlx::raw_sql(not_null).execute(&mut c).await.unwrap();
            }
            Backend::Sqlite => {
                let (mut c, _) = rewrite_packed!(sqlx::SqliteConnection, url, pick, update, text);
                sqlx::raw_sql(drop_packed).execute(&mut c).await.unwrap();
            }
        }
    }

    /// Puts a stopped server's database back into its shape before migration 0008: single
    /// subtypes and request ids back into `audit_ref` rows, the columns gone.
    pub async fn undo_the_audit_columns(&self) {
        self.undo_the_packed_text().await;
        let script = "INSERT INTO audit_ref (key, param, system, value)
                SELECT key, 'subtype', subtype_system, subtype_code FROM audit_event
                WHERE subtype_code IS NOT NULL;
             INSERT INTO audit_ref (key, param, system, value)
                SELECT key, 'entity:identifier', entity_id_system, entity_id_value FROM audit_event
                WHERE entity_id_value IS NOT NULL;
             DROP INDEX audit_event_entity_id;
             ALTER TABLE audit_event DROP COLUMN subtype_system;
             ALTER TABLE audit_event DROP COLUMN subtype_code;
             ALTER TABLE audit_event DROP COLUMN entity_id_system;
             ALTER TABLE audit_event DROP COLUMN entity_id_value;
             DELETE FROM hearth_migration WHERE version = 8;";
        let url = self.database_url();
        match self.backend {
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(script).execute(&mut c).await.unwrap();
            }
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(script).execute(&mut c).await.unwrap();
            }
        }
    }

    /// How many versions of resources of this type the server holds (0 proves nothing was written).
    pub async fn version_count(&self, resource_type: &str) -> usize {
        let r = self
            .get(&format!("{resource_type}/_history?_count=1000"))
            .await;
        assert_eq!(r.status(), 200);
        let b: Value = r.json().await.unwrap();
        b["entry"].as_array().map_or(0, Vec::len)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(running) = self
            .running
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = running.shutdown.send(());
        }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(name) = self.database.take() {
            // Drop cannot await: drop the database from a runtime of its own.
            run_apart(move || async move {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                }
            });
        }
    }
}

/// Asserts a response is an OperationOutcome error with this status, and returns it.
pub async fn expect_outcome(r: reqwest::Response, status: u16) -> Value {
    let got = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    assert_eq!(got, status, "status; body: {text}");
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("an OperationOutcome, got: {text}"));
    assert_eq!(body["resourceType"], "OperationOutcome", "{text}");
    assert!(body["issue"][0]["severity"].is_string(), "{text}");
    body
}

/// Runs each named `async fn(&Server)` against SQLite and PostgreSQL, on servers started by
/// `Server::start`, or by another constructor taking a `Backend`:
/// `on_both_backends!(start = start_on_own_runtime; name, ...)`.
#[macro_export]
macro_rules! on_both_backends {
    (start = $start:ident; $($name:ident),* $(,)?) => {
        $(
            mod $name {
                use super::*;
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    if let Some(s) = common::Server::$start(common::Backend::Sqlite).await {
                        super::$name(&s).await;
                    }
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(s) = common::Server::$start(common::Backend::Postgres).await {
                        super::$name(&s).await;
                    }
                }
            }
        )*
    };
    ($($name:ident),* $(,)?) => {
        $crate::on_both_backends!(start = start; $($name),*);
    };
}

// --- The test PostgreSQL server -----------------------------------------------------------

/// The PostgreSQL server the tests of this process use.
struct TestPostgres {
    admin_url: String,
    /// The temporary cluster, when the harness started one.
    _cluster: Option<TemporaryCluster>,
}

/// Decides, once per test process, which PostgreSQL server the tests use:
///
/// - `HEARTH_TEST_POSTGRES=temporary`: a temporary cluster, whatever else is running;
/// - `HEARTH_TEST_POSTGRES_URL` set: that server, and an error if it is not reachable (a server
///   asked for by name is never silently replaced);
/// - otherwise the default URL if something answers there, else a temporary cluster.
fn choose_postgres() -> Result<TestPostgres, String> {
    let how_to_fix = "To run the PostgreSQL tests, install PostgreSQL 14 or newer (its server \
        binaries: initdb, pg_ctl, postgres), or start a server and point HEARTH_TEST_POSTGRES_URL \
        at it; HEARTH_TEST_BACKENDS=sqlite runs only the SQLite half.";
    let temporary = |why: String| {
        TemporaryCluster::start()
            .map(|cluster| TestPostgres {
                admin_url: cluster.admin_url(),
                _cluster: Some(cluster),
            })
            .map_err(|e| {
                format!("{why}, and no temporary PostgreSQL could be started: {e}\n{how_to_fix}")
            })
    };
    match std::env::var("HEARTH_TEST_POSTGRES")
        .unwrap_or_default()
        .as_str()
    {
        "temporary" => return temporary("HEARTH_TEST_POSTGRES=temporary".into()),
        "" | "auto" => {}
        other => {
            return Err(format!(
                "HEARTH_TEST_POSTGRES={other} is not understood: use `temporary` (always start a \
                 temporary cluster) or `auto` (the default)"
            ))
        }
    }
    let explicit = std::env::var("HEARTH_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let url = explicit
        .clone()
        .unwrap_or_else(|| DEFAULT_POSTGRES_URL.into());
    match probe(&url) {
        Ok(()) => Ok(TestPostgres {
            admin_url: url,
            _cluster: None,
        }),
        Err(e) if explicit.is_some() => Err(format!(
            "PostgreSQL is not reachable at HEARTH_TEST_POSTGRES_URL={url}: {e}.\n\
             Start that server or correct the variable (unset it to let the tests start a \
             temporary cluster from the installed binaries). {how_to_fix}"
        )),
        Err(e) => {
            eprintln!("hearth tests: no PostgreSQL at {url} ({e}); starting a temporary cluster");
            temporary(format!("PostgreSQL is not reachable at {url} ({e})"))
        }
    }
}

/// Connects once to `url`, within a few seconds.
fn probe(url: &str) -> Result<(), String> {
    let url = url.to_string();
    run_apart(move || async move {
        match tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(&url)).await
        {
            Ok(Ok(c)) => {
                let _ = c.close().await;
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 10 s".into()),
        }
    })
}

/// A PostgreSQL cluster of this test process: created by `initdb` in a temporary directory,
/// listening on 127.0.0.1 only (and a socket inside that directory), trusting local
/// connections as `postgres`, without fsync.
///
/// Lifecycle: it lives in a static, and statics are never dropped, so cleanup cannot rely on
/// `Drop`. Instead, before anything is created, a watchdog shell is started with a pipe from
/// this process as its stdin; it ignores terminal signals and waits for end-of-file. The write
/// end of that pipe is held here and never closed, so the kernel closes it when this process
/// ends, however it ends (normal exit, panic, Ctrl-C, SIGKILL). The watchdog then stops the
/// cluster (`pg_ctl -m immediate stop`) and removes the directory. Test threads share the
/// cluster; the `OnceLock` in [`admin_url`] makes them wait for the one start.
struct TemporaryCluster {
    dir: PathBuf,
    port: u16,
    /// Never written to: the watchdog's end-of-file. See above.
    _watchdog: std::process::ChildStdin,
}

/// How to run a PostgreSQL program: `initdb` refuses to run as root, so root runs them as the
/// `postgres` user.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RunAs {
    Me,
    /// `runuser -u postgres --`
    Runuser,
    /// `su -s /bin/sh postgres -c ...`
    Su,
}

impl RunAs {
    fn detect() -> Result<RunAs, String> {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| format!("cannot run `id -u`: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Ok(RunAs::Me);
        }
        let has_postgres_user = Command::new("id")
            .args(["-u", "postgres"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_postgres_user {
            return Err(
                "the tests run as root, initdb refuses to run as root, and there is no \
                 `postgres` user to run it as (create one, or run the tests as another user)"
                    .into(),
            );
        }
        if which("runuser").is_some() {
            Ok(RunAs::Runuser)
        } else if which("su").is_some() {
            Ok(RunAs::Su)
        } else {
            Err(
                "the tests run as root and neither `runuser` nor `su` is available to run \
                 initdb as the `postgres` user"
                    .into(),
            )
        }
    }

    fn command(self, program: &Path) -> Command {
        match self {
            RunAs::Me => Command::new(program),
            RunAs::Runuser => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            }
            RunAs::Su => {
                let mut c = Command::new("su");
                c.args(["-s", "/bin/sh", "postgres", "-c", r#"exec "$0" "$@""#])
                    .arg(program);
                c
            }
        }
    }

    /// The same, for the watchdog script.
    fn shell_word(self) -> &'static str {
        match self {
            RunAs::Me => "me",
            RunAs::Runuser => "runuser",
            RunAs::Su => "su",
        }
    }
}

/// The watchdog: waits for end-of-file on stdin, then stops the cluster and removes its
/// directory. Its parameters come as environment variables, so nothing needs quoting.
const WATCHDOG: &str = r#"
trap '' INT TERM HUP QUIT
cat >/dev/null
as_pg() {
  case "$HEARTH_PG_AS" in
    runuser) runuser -u postgres -- "$@" ;;
    su) su -s /bin/sh postgres -c 'exec "$0" "$@"' "$@" ;;
    *) "$@" ;;
  esac
}
if [ -f "$HEARTH_PG_DIR/data/postmaster.pid" ]; then
  as_pg "$HEARTH_PG_CTL" -D "$HEARTH_PG_DIR/data" -m immediate -w -t 60 stop >/dev/null 2>&1
fi
rm -rf "$HEARTH_PG_DIR"
"#;

impl TemporaryCluster {
    fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start() -> Result<TemporaryCluster, String> {
        let (bin, version) = find_postgres_binaries()?;
        let run_as = RunAs::detect()?;
        let dir = tempfile::Builder::new()
            .prefix("hearth-test-pg-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?
            .keep();
        let pg_ctl = bin.join("pg_ctl");

        // The watchdog first, so that whatever happens from here on is cleaned up.
        let mut watchdog = Command::new("sh")
            .args(["-c", WATCHDOG])
            .env("HEARTH_PG_DIR", &dir)
            .env("HEARTH_PG_CTL", &pg_ctl)
            .env("HEARTH_PG_AS", run_as.shell_word())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0) // out of the terminal's process group: Ctrl-C is not for it
            .spawn()
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(&dir);
                format!("cannot start sh: {e}")
            })?;
        let watchdog_stdin = watchdog.stdin.take().expect("a piped stdin");
        // Reap nothing: the watchdog outlives us by design.
        drop(watchdog);

        if run_as != RunAs::Me {
            run(
                Command::new("chown").arg("postgres").arg(&dir),
                "chown postgres",
            )?;
        }
        let data = dir.join("data");
        let log = dir.join("postgres.log");
        run(
            run_as
                .command(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
                .arg("--no-sync")
                .current_dir(&dir),
            "initdb",
        )?;
        let conf_dir = dir.display().to_string().replace('\'', "''");
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .map_err(|e| format!("cannot open postgresql.conf: {e}"))?;
        write!(
            conf,
            "\n# hearth tests\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{conf_dir}'\nmax_connections = 200\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        )
        .map_err(|e| format!("cannot write postgresql.conf: {e}"))?;
        drop(conf);

        // A free port can be taken between our look and the postmaster's bind: try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            let started = run(
                run_as
                    .command(&pg_ctl)
                    .arg("-D")
                    .arg(&data)
                    .arg("-l")
                    .arg(&log)
                    .args(["-w", "-t", "120", "-o"])
                    .arg(format!("-p {port}"))
                    .arg("start")
                    .current_dir(&dir),
                "pg_ctl start",
            );
            match started {
                Ok(()) => {
                    let cluster = TemporaryCluster {
                        dir,
                        port,
                        _watchdog: watchdog_stdin,
                    };
                    probe(&cluster.admin_url())?;
                    eprintln!(
                        "hearth tests: temporary PostgreSQL {version} on 127.0.0.1:{port} in {}",
                        cluster.dir.display()
                    );
                    return Ok(cluster);
                }
                Err(e) => {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(10).collect();
                    last_error = format!(
                        "{e}\nlast lines of the server log:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        }
        // Dropping `watchdog_stdin` here lets the watchdog clean up now.
        Err(last_error)
    }
}

/// Runs a command to completion; its output becomes the error if it fails.
fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The directory holding `initdb` and `pg_ctl` of PostgreSQL 14 or newer, and its version:
/// from `PATH`, then `/usr/lib/postgresql/<version>/bin` (newest first), then
/// `pg_config --bindir`.
fn find_postgres_binaries() -> Result<(PathBuf, String), String> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, e.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|v| std::cmp::Reverse(v.0));
    candidates.extend(versioned.into_iter().map(|(_, p)| p));
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        }
    }
    let mut too_old = Vec::new();
    for dir in candidates {
        if !(dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()) {
            continue;
        }
        // "pg_ctl (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)"
        let version = Command::new(dir.join("pg_ctl"))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let number = version
            .split("(PostgreSQL)")
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or("")
            .to_string();
        let major: u32 = number
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major >= 14 {
            return Ok((dir, number));
        }
        too_old.push(format!("{} ({})", dir.display(), version.trim()));
    }
    if too_old.is_empty() {
        Err(
            "the PostgreSQL server programs initdb and pg_ctl were not found on PATH, in \
             /usr/lib/postgresql/*/bin, or at `pg_config --bindir`"
                .into(),
        )
    } else {
        Err(format!(
            "only PostgreSQL older than 14 was found: {}",
            too_old.join(", ")
        ))
    }
}

/// The password every test account has.
pub const PASSWORD: &str = "Correct horse 9!";

/// A user account as `hearth user add` makes it, with [`PASSWORD`] and the given TOTP
/// secret.
pub fn account(
    name: &str,
    role: hearth::auth::policy::Role,
    fhir_user: Option<&str>,
    totp_secret: Option<String>,
) -> hearth::auth::accounts::User {
    hearth::auth::accounts::User {
        username: name.into(),
        password_hash: hearth::auth::accounts::hash_secret(PASSWORD),
        role,
        fhir_user: fhir_user.map(str::to_string),
        totp_secret,
        totp_last_step: None,
        disabled: false,
        failed_logins: 0,
        locked_until: None,
    }
}
