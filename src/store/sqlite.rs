//! The SQLite store: one file, no server, the zero-setup default. Writes are serialised by
//! `BEGIN IMMEDIATE`; WAL lets reads go on meanwhile; `synchronous=FULL` makes every
//! acknowledged write durable.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::query::Query;
use sqlx::sqlite::SqliteArguments;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::audit_events;
use super::index_write;
use super::migrate::SQLITE;
use super::postgres::pending;
use super::search_sql::{Bind, Dialect, Sql};
use super::{
    at_entry, check_expected, db_error, now, page, sort_values, Found, HistoryPage, HistoryQuery,
    HistoryScope, Indexer, Method, ResourceStore, Trail, Updated, Version, Write, Written,
};
use crate::error::{Error, Result};
use crate::fhir::{id::new_id, meta::stamp};
use crate::search::registry::ParamType;
use std::sync::Arc;

#[derive(Clone)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
    /// SQLite has one writer at a time, and its busy handler polls unfairly: a writer can
    /// starve past any timeout under load. Writers queue here instead, first come first served.
    pub(super) writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    pub(super) indexer: Arc<Indexer>,
}

/// A compiled search statement with its binds.
pub(super) fn query(sql: &Sql) -> Query<'_, Sqlite, SqliteArguments> {
    // Not kept as a prepared statement: search and index SQL vary in shape (the cache would
    // churn), and a one-off statement is planned for its actual values, never with a generic
    // plan that ignores how selective they are.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.text.clone())).persistent(false);
    for b in &sql.binds {
        q = match b {
            Bind::Text(s) => q.bind(s.clone()),
            Bind::Int(i) => q.bind(*i),
            Bind::Float(f) => q.bind(*f),
        };
    }
    q
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| Error::internal("bad timestamp in the store"))
}

fn to_text(body: &Value) -> Result<String> {
    serde_json::to_string(body).map_err(|e| Error::internal(format!("cannot serialise: {e}")))
}

impl SqliteStore {
    pub async fn connect(url: &str, pool_size: u32, indexer: Arc<Indexer>) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::bad_request(format!("invalid SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(db_error)?;
        Ok(SqliteStore {
            pool,
            writer: Default::default(),
            indexer,
        })
    }

    pub async fn migrate(&self) -> Result<Vec<&'static str>> {
        let _writing = self.writer.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS hearth_migration (
                version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum INTEGER NOT NULL,
                applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)",
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let applied: Vec<(i64, i64)> =
            sqlx::query_as("SELECT version, checksum FROM hearth_migration")
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
        let mut done = Vec::new();
        for m in pending(SQLITE, &applied)? {
            sqlx::raw_sql(sqlx::AssertSqlSafe(m.sql))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            sqlx::query(
                "INSERT INTO hearth_migration (version, name, checksum) VALUES (?1, ?2, ?3)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(m.checksum())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            done.push(m.name);
        }
        tx.commit().await.map_err(db_error)?;
        Ok(done)
    }
}

fn found(rows: &[SqliteRow], sort: &[ParamType]) -> Result<Vec<Found>> {
    rows.iter()
        .map(|row| {
            Ok(Found {
                key: row.try_get("key").map_err(db_error)?,
                version: version_from_row(row)?,
                sort: sort_values(row, sort)?,
            })
        })
        .collect()
}

fn version_from_row(row: &SqliteRow) -> Result<Version> {
    let body: Option<String> = row.try_get("body").map_err(db_error)?;
    let body = body
        .map(|b| serde_json::from_str(&b))
        .transpose()
        .map_err(|e| Error::internal(format!("unreadable body in the store: {e}")))?;
    let method: String = row.try_get("method").map_err(db_error)?;
    Ok(Version {
        resource_type: row.try_get("type").map_err(db_error)?,
        id: row.try_get("id").map_err(db_error)?,
        version: row.try_get("version").map_err(db_error)?,
        last_updated: from_micros(row.try_get("last_updated").map_err(db_error)?)?,
        method: Method::parse(&method)?,
        body,
    })
}

/// The current body of resource `key`, which a delete is about to remove.
async fn removed_body(conn: &mut SqliteConnection, key: i64) -> Result<Option<Value>> {
    let body: Option<Option<String>> =
        sqlx::query_scalar("SELECT body FROM resource WHERE key = ?1")
            .bind(key)
            .fetch_optional(conn)
            .await
            .map_err(db_error)?;
    body.flatten()
        .map(|b| serde_json::from_str(&b))
        .transpose()
        .map_err(|e| Error::internal(format!("unreadable body in the store: {e}")))
}

async fn current(
    conn: &mut SqliteConnection,
    resource_type: &str,
    id: &str,
) -> Result<Option<(i64, i64, bool)>> {
    sqlx::query_as("SELECT key, version, deleted FROM resource WHERE type = ?1 AND id = ?2")
        .bind(resource_type)
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(db_error)
}

async fn insert_version(
    conn: &mut SqliteConnection,
    key: i64,
    v: &Version,
    body: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO resource_version (key, type, id, version, last_updated, method, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .bind(key)
    .bind(&v.resource_type)
    .bind(&v.id)
    .bind(v.version)
    .bind(micros(v.last_updated))
    .bind(v.method.as_str())
    .bind(body)
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

impl SqliteStore {
    /// Writes `v` as the new current version: inserts or updates the resource row and adds
    /// the version row, in the caller's transaction.
    async fn write(
        &self,
        conn: &mut SqliteConnection,
        key: Option<i64>,
        v: &Version,
    ) -> Result<()> {
        let body = v.body.as_ref().map(to_text).transpose()?;
        let fresh = key.is_none();
        let key = match key {
            Some(key) => {
                sqlx::query("UPDATE resource SET version = ?2, last_updated = ?3, deleted = ?4, body = ?5 WHERE key = ?1")
                    .bind(key)
                    .bind(v.version)
                    .bind(micros(v.last_updated))
                    .bind(body.is_none())
                    .bind(body.as_deref())
                    .execute(&mut *conn)
                    .await
                    .map_err(db_error)?;
                key
            }
            None => sqlx::query_scalar(
                "INSERT INTO resource (type, id, version, last_updated, body) VALUES (?1, ?2, ?3, ?4, ?5) RETURNING key",
            )
            .bind(&v.resource_type)
            .bind(&v.id)
            .bind(v.version)
            .bind(micros(v.last_updated))
            .bind(body.as_deref())
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?,
        };
        insert_version(conn, key, v, body.as_deref()).await?;
        self.write_index(conn, key, &v.resource_type, v.body.as_ref(), fresh)
            .await
    }

    /// Replaces the index rows of resource `key` with those of `body` (none once deleted).
    async fn write_index(
        &self,
        conn: &mut SqliteConnection,
        key: i64,
        resource_type: &str,
        body: Option<&Value>,
        fresh: bool,
    ) -> Result<()> {
        if !fresh {
            for sql in index_write::deletes(Dialect::Sqlite, key) {
                query(&sql).execute(&mut *conn).await.map_err(db_error)?;
            }
        }
        if let Some(body) = body {
            let rows = self.indexer.rows(body);
            for sql in index_write::inserts(Dialect::Sqlite, key, resource_type, &rows) {
                query(&sql).execute(&mut *conn).await.map_err(db_error)?;
            }
        }
        Ok(())
    }
}

impl SqliteStore {
    /// Writes what `trail` makes of `done` in `conn`.
    async fn append_trail(
        &self,
        conn: &mut SqliteConnection,
        trail: Option<Trail<'_>>,
        done: &[Written],
    ) -> Result<()> {
        let Some(trail) = trail else {
            return Ok(());
        };
        let keys = audit_events::insert_sqlite(conn, &trail(done)).await?;
        audit_events::all_written(&keys)
    }

    /// One write of a transaction, in `conn` (the writer lock is held).
    async fn write_one(&self, conn: &mut SqliteConnection, write: Write) -> Result<Written> {
        let last_updated = now();
        if write.resource_type() == "AuditEvent" {
            let (record, version, put) = audit_events::prepare(&self.indexer, write, last_updated)?;
            let keys = audit_events::insert_sqlite(conn, std::slice::from_ref(&record)).await?;
            return audit_events::written(keys, version, put);
        }
        match write {
            Write::Create {
                resource_type,
                id,
                mut body,
                unless,
            } => {
                if let Some(condition) = unless {
                    let rows = query(&condition)
                        .fetch_all(&mut *conn)
                        .await
                        .map_err(db_error)?;
                    if !rows.is_empty() {
                        return Err(Error::precondition_failed(
                            "a resource matching If-None-Exist appeared meanwhile",
                        ));
                    }
                }
                if current(conn, &resource_type, &id).await?.is_some() {
                    return Err(Error::conflict(format!(
                        "{resource_type}/{id} already exists"
                    )));
                }
                stamp(&mut body, &id, 1, last_updated);
                let v = Version {
                    resource_type,
                    id,
                    version: 1,
                    last_updated,
                    method: Method::Post,
                    body: Some(body),
                };
                self.write(conn, None, &v).await?;
                Ok(Written {
                    version: Some(v),
                    created: true,
                    before: None,
                })
            }
            Write::Update {
                resource_type,
                id,
                mut body,
                expected,
            } => {
                let found = current(conn, &resource_type, &id).await?;
                check_expected(
                    expected,
                    found.map(|(_, v, _)| v),
                    &format!("{resource_type}/{id}"),
                )?;
                let version = found.map_or(1, |(_, v, _)| v + 1);
                stamp(&mut body, &id, version, last_updated);
                let v = Version {
                    resource_type,
                    id,
                    version,
                    last_updated,
                    method: Method::Put,
                    body: Some(body),
                };
                self.write(conn, found.map(|(key, _, _)| key), &v).await?;
                Ok(Written {
                    version: Some(v),
                    created: found.is_none_or(|(_, _, deleted)| deleted),
                    before: None,
                })
            }
            Write::Delete {
                resource_type,
                id,
                expected,
            } => {
                let found = current(conn, &resource_type, &id).await?;
                check_expected(
                    expected,
                    found.map(|(_, v, _)| v),
                    &format!("{resource_type}/{id}"),
                )?;
                let Some((key, version, false)) = found else {
                    return Ok(Written {
                        version: None,
                        created: false,
                        before: None,
                    });
                };
                let v = Version {
                    resource_type,
                    id,
                    version: version + 1,
                    last_updated,
                    method: Method::Delete,
                    body: None,
                };
                let before = removed_body(conn, key).await?;
                self.write(conn, Some(key), &v).await?;
                Ok(Written {
                    version: Some(v),
                    created: false,
                    before,
                })
            }
        }
    }
}

impl ResourceStore for SqliteStore {
    async fn create(
        &self,
        resource_type: &str,
        mut body: Value,
        trail: Option<Trail<'_>>,
    ) -> Result<Version> {
        let id = new_id();
        let last_updated = now();
        stamp(&mut body, &id, 1, last_updated);
        let v = Version {
            resource_type: resource_type.into(),
            id,
            version: 1,
            last_updated,
            method: Method::Post,
            body: Some(body),
        };
        let _writing = self.writer.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)?;
        self.write(&mut tx, None, &v).await?;
        let done = [Written::created(v)];
        self.append_trail(&mut tx, trail, &done).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(Written::into_version(done))
    }

    async fn update(
        &self,
        resource_type: &str,
        id: &str,
        mut body: Value,
        expected: Option<i64>,
        trail: Option<Trail<'_>>,
    ) -> Result<Updated> {
        let _writing = self.writer.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)?;
        let found = current(&mut tx, resource_type, id).await?;
        check_expected(
            expected,
            found.map(|(_, v, _)| v),
            &format!("{resource_type}/{id}"),
        )?;
        let last_updated = now();
        let version = found.map_or(1, |(_, v, _)| v + 1);
        stamp(&mut body, id, version, last_updated);
        let v = Version {
            resource_type: resource_type.into(),
            id: id.into(),
            version,
            last_updated,
            method: Method::Put,
            body: Some(body),
        };
        self.write(&mut tx, found.map(|(key, _, _)| key), &v)
            .await?;
        let done = [Written {
            version: Some(v),
            created: found.is_none_or(|(_, _, deleted)| deleted),
            before: None,
        }];
        self.append_trail(&mut tx, trail, &done).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(Written::into_updated(done))
    }

    async fn delete(
        &self,
        resource_type: &str,
        id: &str,
        expected: Option<i64>,
        trail: Option<Trail<'_>>,
    ) -> Result<Option<Version>> {
        let _writing = self.writer.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)?;
        let found = current(&mut tx, resource_type, id).await?;
        check_expected(
            expected,
            found.map(|(_, v, _)| v),
            &format!("{resource_type}/{id}"),
        )?;
        let Some((key, version, false)) = found else {
            return Ok(None);
        };
        let v = Version {
            resource_type: resource_type.into(),
            id: id.into(),
            version: version + 1,
            last_updated: now(),
            method: Method::Delete,
            body: None,
        };
        let before = removed_body(&mut tx, key).await?;
        self.write(&mut tx, Some(key), &v).await?;
        let done = [Written {
            version: Some(v),
            created: false,
            before,
        }];
        self.append_trail(&mut tx, trail, &done).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(Some(Written::into_version(done)))
    }

    async fn read(&self, resource_type: &str, id: &str) -> Result<Option<Version>> {
        let row = sqlx::query(
            "SELECT type, id, version, last_updated, CASE WHEN deleted THEN 'DELETE' ELSE 'PUT' END AS method, body
             FROM resource WHERE type = ?1 AND id = ?2",
        )
        .bind(resource_type)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref().map(version_from_row).transpose()
    }

    async fn vread(&self, resource_type: &str, id: &str, version: i64) -> Result<Option<Version>> {
        let row = sqlx::query(
            "SELECT v.type, v.id, v.version, v.last_updated, v.method, v.body
             FROM resource r JOIN resource_version v ON v.key = r.key
             WHERE r.type = ?1 AND r.id = ?2 AND v.version = ?3",
        )
        .bind(resource_type)
        .bind(id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref().map(version_from_row).transpose()
    }

    async fn history(&self, q: &HistoryQuery) -> Result<HistoryPage> {
        let mut sql: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT v.seq, v.type, v.id, v.version, v.last_updated, v.method, v.body FROM resource_version v WHERE 1",
        );
        match &q.scope {
            // The audit trail is read through AuditEvent (its search and history), not
            // interleaved with every other change.
            HistoryScope::System => {
                sql.push(" AND v.type <> 'AuditEvent'");
            }
            HistoryScope::Type(t) => {
                sql.push(" AND v.type = ").push_bind(t.clone());
            }
            HistoryScope::Instance(t, id) => {
                sql.push(" AND v.key = (SELECT key FROM resource WHERE type = ")
                    .push_bind(t.clone())
                    .push(" AND id = ")
                    .push_bind(id.clone())
                    .push(")");
            }
        }
        if let Some(since) = q.since {
            sql.push(" AND v.last_updated >= ").push_bind(micros(since));
        }
        if let Some((start, end)) = q.at {
            sql.push(" AND v.last_updated < ").push_bind(micros(end));
            sql.push(
                " AND NOT EXISTS (SELECT 1 FROM resource_version n
                   WHERE n.key = v.key AND n.version = v.version + 1 AND n.last_updated <= ",
            )
            .push_bind(micros(start))
            .push(")");
        }
        if let Some(c) = q.after {
            sql.push(" AND (v.last_updated, v.seq) < (")
                .push_bind(micros(c.last_updated))
                .push(", ")
                .push_bind(c.seq)
                .push(")");
        }
        sql.push(" ORDER BY v.last_updated DESC, v.seq DESC LIMIT ")
            .push_bind(q.count as i64 + 1);
        let rows = sql.build().fetch_all(&self.pool).await.map_err(db_error)?;
        let versions = rows
            .iter()
            .map(|row| {
                Ok((
                    version_from_row(row)?,
                    row.try_get::<i64, _>("seq").map_err(db_error)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(page(versions, q.count))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn transaction(
        &self,
        writes: Vec<(usize, Write)>,
        trail: Option<Trail<'_>>,
    ) -> Result<Vec<Written>> {
        let _writing = self.writer.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)?;
        let mut done = Vec::with_capacity(writes.len());
        for (n, write) in writes {
            let written = self
                .write_one(&mut tx, write)
                .await
                .map_err(|e| at_entry(n, e))?;
            done.push(written);
        }
        self.append_trail(&mut tx, trail, &done).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(done)
    }

    async fn fetch(&self, sql: Sql, sort: &[ParamType]) -> Result<Vec<Found>> {
        let rows = query(&sql).fetch_all(&self.pool).await.map_err(db_error)?;
        found(&rows, sort)
    }

    async fn create_unless(
        &self,
        resource_type: &str,
        mut body: Value,
        (_, condition): (String, Sql),
        trail: Option<Trail<'_>>,
    ) -> Result<std::result::Result<Version, Vec<Version>>> {
        // The writer queue serialises every write, so the check and the create are atomic.
        let _writing = self.writer.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)?;
        let rows = query(&condition)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        if !rows.is_empty() {
            return Ok(Err(found(&rows, &[])?
                .into_iter()
                .map(|f| f.version)
                .collect()));
        }
        let id = new_id();
        let last_updated = now();
        stamp(&mut body, &id, 1, last_updated);
        let v = Version {
            resource_type: resource_type.into(),
            id,
            version: 1,
            last_updated,
            method: Method::Post,
            body: Some(body),
        };
        self.write(&mut tx, None, &v).await?;
        let done = [Written::created(v)];
        self.append_trail(&mut tx, trail, &done).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(Ok(Written::into_version(done)))
    }

    async fn count(&self, sql: Sql) -> Result<i64> {
        query(&sql)
            .fetch_one(&self.pool)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(db_error)
    }

    async fn reindex(&self, types: Option<&[String]>) -> Result<u64> {
        let mut done = 0;
        let mut after = 0i64;
        loop {
            let _writing = self.writer.lock().await;
            let mut tx = self
                .pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(db_error)?;
            let batch: Vec<(i64, String, String)> = sqlx::query_as(
                "SELECT key, type, body FROM resource WHERE key > ?1 AND deleted = 0
                 AND (?2 IS NULL OR type IN (SELECT value FROM json_each(?2)))
                 ORDER BY key LIMIT 200",
            )
            .bind(after)
            .bind(types.map(|t| serde_json::json!(t).to_string()))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
            let Some(last) = batch.last() else {
                return Ok(done);
            };
            after = last.0;
            for (key, resource_type, body) in &batch {
                let body: Value = serde_json::from_str(body)
                    .map_err(|e| Error::internal(format!("unreadable body in the store: {e}")))?;
                self.write_index(&mut tx, *key, resource_type, Some(&body), false)
                    .await?;
            }
            tx.commit().await.map_err(db_error)?;
            done += batch.len() as u64;
        }
    }
}
