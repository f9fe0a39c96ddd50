//! Test harness: a real Hearth server on a random port, on a fresh PostgreSQL database or a
//! temporary SQLite file, spoken to over HTTP.
//!
//! PostgreSQL is found at `HEARTH_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each server gets its own database, dropped
//! afterwards. `HEARTH_TEST_BACKENDS=sqlite` (or `postgres`) runs one backend only.
#![allow(dead_code)]

use std::time::Duration;

use hearth::{Config, Hearth};
use serde_json::Value;
use sqlx::Connection;

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
    /// The PostgreSQL database of this server, dropped with it.
    pub database: Option<String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

pub fn admin_url() -> String {
    std::env::var("HEARTH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
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

impl Server {
    /// Starts a server, or `None` if this backend is switched off for the run.
    pub async fn start(backend: Backend) -> Option<Server> {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tune: impl FnOnce(&mut Config)) -> Option<Server> {
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
        tune(&mut config);
        let hearth = Hearth::start(&config).await.expect("the server starts");
        let root = format!("http://{}", hearth.local_addr());
        let base = hearth.base_url.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(hearth.serve(async {
            let _ = rx.await;
        }));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        Some(Server {
            base,
            root,
            client,
            backend,
            database,
            shutdown: Some(tx),
            _dir: dir,
        })
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
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(name) = self.database.take() {
            // Drop the database from a thread of its own: Drop cannot await.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url()).await {
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut admin)
                        .await;
                    }
                });
            })
            .join();
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

/// Runs each named `async fn(&Server)` against SQLite and PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use super::*;
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    if let Some(s) = common::Server::start(common::Backend::Sqlite).await {
                        super::$name(&s).await;
                    }
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(s) = common::Server::start(common::Backend::Postgres).await {
                        super::$name(&s).await;
                    }
                }
            }
        )*
    };
}
