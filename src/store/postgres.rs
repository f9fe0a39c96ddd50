//! The PostgreSQL store: resources as `jsonb`. Production's backend.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Row};

use super::audit_events;
use super::index_write;
use super::migrate::{Migration, POSTGRES};
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
pub struct PgStore {
    pub(super) pool: PgPool,
    pub(super) indexer: Arc<Indexer>,
}

/// A compiled search statement with its binds.
pub(super) fn query(sql: &Sql) -> Query<'_, Postgres, PgArguments> {
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

/// Replaces the index rows of resource `key` with those of `body` (none once deleted).
async fn write_index(
    tx: &mut sqlx::PgConnection,
    indexer: &Indexer,
    key: i64,
    resource_type: &str,
    body: Option<&Value>,
    fresh: bool,
) -> Result<()> {
    let mut pending = Pending::new();
    index_later(tx, indexer, &mut pending, key, resource_type, body, fresh).await?;
    flush(tx, &mut pending).await
}

/// Replaces the index rows of `key`: old rows go now, new rows wait in `pending` to be
/// inserted together with others (a few statements for a whole Bundle).
async fn index_later(
    tx: &mut sqlx::PgConnection,
    indexer: &Indexer,
    pending: &mut Pending,
    key: i64,
    resource_type: &str,
    body: Option<&Value>,
    fresh: bool,
) -> Result<()> {
    if !fresh {
        for sql in index_write::deletes(Dialect::Postgres, key) {
            query(&sql).execute(&mut *tx).await.map_err(db_error)?;
        }
    }
    if let Some(body) = body {
        pending.push((key, resource_type.to_string(), indexer.rows(body)));
    }
    Ok(())
}

impl PgStore {
    pub async fn connect(url: &str, pool_size: u32, indexer: Arc<Indexer>) -> Result<PgStore> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::bad_request(format!("invalid PostgreSQL URL: {e}")))?
            .application_name("hearth");
        // Connect lazily: a database that is down at start makes requests fail with 503
        // until it is back, instead of stopping the server.
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        Ok(PgStore { pool, indexer })
    }

    pub async fn migrate(&self) -> Result<Vec<&'static str>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // One migrator at a time across every Hearth process sharing this database.
        sqlx::query("SELECT pg_advisory_xact_lock(7270276806)")
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS hearth_migration (
                version bigint PRIMARY KEY, name text NOT NULL, checksum bigint NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())",
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
        for m in pending(POSTGRES, &applied)? {
            sqlx::raw_sql(sqlx::AssertSqlSafe(m.sql))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            sqlx::query(
                "INSERT INTO hearth_migration (version, name, checksum) VALUES ($1, $2, $3)",
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

/// The migrations not yet applied; an error if an applied one was changed since.
pub(super) fn pending<'m>(
    all: &'m [Migration],
    applied: &[(i64, i64)],
) -> Result<Vec<&'m Migration>> {
    let mut todo = Vec::new();
    for m in all {
        match applied.iter().find(|(v, _)| *v == m.version) {
            Some((_, sum)) if *sum != m.checksum() => {
                return Err(Error::internal(format!(
                    "migration {} ({}) was changed after it was applied to this database",
                    m.version, m.name
                )))
            }
            Some(_) => {}
            None => todo.push(m),
        }
    }
    Ok(todo)
}

fn found(rows: &[PgRow], sort: &[ParamType]) -> Result<Vec<Found>> {
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

fn version_from_row(row: &PgRow) -> Result<Version> {
    let body: Option<Json<Value>> = row.try_get("body").map_err(db_error)?;
    let method: String = row.try_get("method").map_err(db_error)?;
    Ok(Version {
        resource_type: row.try_get("type").map_err(db_error)?,
        id: row.try_get("id").map_err(db_error)?,
        version: row.try_get("version").map_err(db_error)?,
        last_updated: row.try_get("last_updated").map_err(db_error)?,
        method: Method::parse(&method)?,
        body: body.map(|b| b.0),
    })
}

/// Locks the resource row for the rest of the transaction: (key, version, deleted).
async fn lock_current(
    tx: &mut sqlx::PgConnection,
    resource_type: &str,
    id: &str,
) -> Result<Option<(i64, i64, bool)>> {
    sqlx::query_as(
        "SELECT key, version, deleted FROM resource WHERE type = $1 AND id = $2 FOR UPDATE",
    )
    .bind(resource_type)
    .bind(id)
    .fetch_optional(tx)
    .await
    .map_err(db_error)
}

/// [`lock_current`] for a delete: also the current body, which the delete is about to remove
/// (the audit trail names its patients), read with the lock instead of after it.
async fn lock_for_delete(
    tx: &mut sqlx::PgConnection,
    resource_type: &str,
    id: &str,
) -> Result<Option<(i64, i64, bool, Option<Value>)>> {
    let row: Option<(i64, i64, bool, Option<Json<Value>>)> = sqlx::query_as(
        "SELECT key, version, deleted, body FROM resource WHERE type = $1 AND id = $2 FOR UPDATE",
    )
    .bind(resource_type)
    .bind(id)
    .fetch_optional(tx)
    .await
    .map_err(db_error)?;
    Ok(row.map(|(key, version, deleted, body)| (key, version, deleted, body.map(|b| b.0))))
}

/// Writes a new version of an existing resource row, and its version row.
async fn write_version(
    tx: &mut sqlx::PgConnection,
    key: i64,
    version: i64,
    last_updated: DateTime<Utc>,
    method: Method,
    body: Option<&Value>,
) -> Result<()> {
    sqlx::query(
        "WITH r AS (
            UPDATE resource SET version = $2, last_updated = $3, deleted = $5, body = $4
            WHERE key = $1 RETURNING key, type, id, version, last_updated, body)
         INSERT INTO resource_version (key, type, id, version, last_updated, method, body)
         SELECT key, type, id, version, last_updated, $6, body FROM r",
    )
    .bind(key)
    .bind(version)
    .bind(last_updated)
    .bind(body.map(Json))
    .bind(body.is_none())
    .bind(method.as_str())
    .execute(tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Inserts version 1 of a resource: its key, or `None` if the (type, id) is taken.
async fn insert_new(
    conn: &mut sqlx::PgConnection,
    resource_type: &str,
    id: &str,
    last_updated: DateTime<Utc>,
    method: Method,
    body: &Value,
) -> Result<Option<i64>> {
    let key: Option<i64> = sqlx::query_scalar(
        "WITH r AS (
            INSERT INTO resource (type, id, version, last_updated, body) VALUES ($1, $2, 1, $3, $4)
            ON CONFLICT (type, id) DO NOTHING RETURNING key, body)
         INSERT INTO resource_version (key, type, id, version, last_updated, method, body)
         SELECT key, $1, $2, 1, $3, $5, body FROM r RETURNING key",
    )
    .bind(resource_type)
    .bind(id)
    .bind(last_updated)
    .bind(Json(body))
    .bind(method.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(key)
}

impl PgStore {
    /// Writes what `trail` makes of `done` in `tx`: new resources, each with a fresh id.
    async fn append_trail(
        &self,
        tx: &mut sqlx::PgConnection,
        trail: Option<Trail<'_>>,
        done: &[Written],
    ) -> Result<()> {
        let Some(trail) = trail else {
            return Ok(());
        };
        let keys = audit_events::insert_pg(tx, &trail(done), audit_events::Ids::Fresh).await?;
        audit_events::all_written(&keys)
    }

    /// One write of a transaction, in `tx`.
    async fn write_one(
        &self,
        tx: &mut sqlx::PgConnection,
        write: Write,
        pending: &mut Pending,
    ) -> Result<Written> {
        let last_updated = now();
        if write.resource_type() == "AuditEvent" {
            let (record, version, put) = audit_events::prepare(&self.indexer, write, last_updated)?;
            // A client's AuditEvent may name an id that is taken (`written` says so).
            let ids = audit_events::Ids::MaybeTaken;
            let keys = audit_events::insert_pg(tx, std::slice::from_ref(&record), ids).await?;
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
                    // The condition must see what earlier entries wrote.
                    flush(tx, pending).await?;
                    let rows = query(&condition)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    if !rows.is_empty() {
                        return Err(Error::precondition_failed(
                            "a resource matching If-None-Exist appeared meanwhile",
                        ));
                    }
                }
                stamp(&mut body, &id, 1, last_updated);
                let key = insert_new(
                    &mut *tx,
                    &resource_type,
                    &id,
                    last_updated,
                    Method::Post,
                    &body,
                )
                .await?
                .ok_or_else(|| Error::conflict(format!("{resource_type}/{id} already exists")))?;
                index_later(
                    tx,
                    &self.indexer,
                    pending,
                    key,
                    &resource_type,
                    Some(&body),
                    true,
                )
                .await?;
                Ok(Written {
                    version: Some(Version {
                        resource_type,
                        id,
                        version: 1,
                        last_updated,
                        method: Method::Post,
                        body: Some(body),
                    }),
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
                let current = lock_current(tx, &resource_type, &id).await?;
                check_expected(
                    expected,
                    current.map(|(_, v, _)| v),
                    &format!("{resource_type}/{id}"),
                )?;
                let (version, created) = match current {
                    None => {
                        stamp(&mut body, &id, 1, last_updated);
                        let key = insert_new(
                            &mut *tx,
                            &resource_type,
                            &id,
                            last_updated,
                            Method::Put,
                            &body,
                        )
                        .await?
                        .ok_or_else(|| {
                            Error::conflict(format!(
                                "{resource_type}/{id} was created concurrently; retry"
                            ))
                        })?;
                        index_later(
                            tx,
                            &self.indexer,
                            pending,
                            key,
                            &resource_type,
                            Some(&body),
                            true,
                        )
                        .await?;
                        (1, true)
                    }
                    Some((key, v, deleted)) => {
                        stamp(&mut body, &id, v + 1, last_updated);
                        write_version(tx, key, v + 1, last_updated, Method::Put, Some(&body))
                            .await?;
                        index_later(
                            tx,
                            &self.indexer,
                            pending,
                            key,
                            &resource_type,
                            Some(&body),
                            false,
                        )
                        .await?;
                        (v + 1, deleted)
                    }
                };
                Ok(Written {
                    version: Some(Version {
                        resource_type,
                        id,
                        version,
                        last_updated,
                        method: Method::Put,
                        body: Some(body),
                    }),
                    created,
                    before: None,
                })
            }
            Write::Delete {
                resource_type,
                id,
                expected,
            } => {
                let current = lock_for_delete(tx, &resource_type, &id).await?;
                check_expected(
                    expected,
                    current.as_ref().map(|(_, v, _, _)| *v),
                    &format!("{resource_type}/{id}"),
                )?;
                let Some((key, v, false, before)) = current else {
                    return Ok(Written {
                        version: None,
                        created: false,
                        before: None,
                    });
                };
                write_version(tx, key, v + 1, last_updated, Method::Delete, None).await?;
                index_later(tx, &self.indexer, pending, key, &resource_type, None, false).await?;
                Ok(Written {
                    version: Some(Version {
                        resource_type,
                        id,
                        version: v + 1,
                        last_updated,
                        method: Method::Delete,
                        body: None,
                    }),
                    created: false,
                    before,
                })
            }
        }
    }
}

/// Index rows waiting to be inserted: (key, type, rows).
type Pending = Vec<(i64, String, Vec<crate::search::index::IndexRow>)>;

/// Inserts the pending index rows, table by table, in as few statements as fit.
async fn flush(tx: &mut sqlx::PgConnection, pending: &mut Pending) -> Result<()> {
    let items: Vec<(i64, &str, &[crate::search::index::IndexRow])> = pending
        .iter()
        .map(|(k, t, rows)| (*k, t.as_str(), rows.as_slice()))
        .collect();
    super::pg_index::insert_rows(tx, &items).await?;
    pending.clear();
    Ok(())
}

impl ResourceStore for PgStore {
    async fn create(
        &self,
        resource_type: &str,
        mut body: Value,
        trail: Option<Trail<'_>>,
    ) -> Result<Version> {
        let id = new_id();
        let last_updated = now();
        stamp(&mut body, &id, 1, last_updated);
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let Some(key) = insert_new(
            &mut tx,
            resource_type,
            &id,
            last_updated,
            Method::Post,
            &body,
        )
        .await?
        else {
            return Err(Error::internal("a freshly generated id was already taken"));
        };
        write_index(
            &mut tx,
            &self.indexer,
            key,
            resource_type,
            Some(&body),
            true,
        )
        .await?;
        let v = Version {
            resource_type: resource_type.into(),
            id,
            version: 1,
            last_updated,
            method: Method::Post,
            body: Some(body),
        };
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
        loop {
            let mut tx = self.pool.begin().await.map_err(db_error)?;
            let current = lock_current(&mut tx, resource_type, id).await?;
            let what = format!("{resource_type}/{id}");
            check_expected(expected, current.map(|(_, v, _)| v), &what)?;
            let last_updated = now();
            let (version, created) = match current {
                None => {
                    stamp(&mut body, id, 1, last_updated);
                    let Some(key) =
                        insert_new(&mut tx, resource_type, id, last_updated, Method::Put, &body)
                            .await?
                    else {
                        // Another request created it first: start again, now as an update.
                        continue;
                    };
                    write_index(
                        &mut tx,
                        &self.indexer,
                        key,
                        resource_type,
                        Some(&body),
                        true,
                    )
                    .await?;
                    (1, true)
                }
                Some((key, v, deleted)) => {
                    stamp(&mut body, id, v + 1, last_updated);
                    write_version(&mut tx, key, v + 1, last_updated, Method::Put, Some(&body))
                        .await?;
                    write_index(
                        &mut tx,
                        &self.indexer,
                        key,
                        resource_type,
                        Some(&body),
                        false,
                    )
                    .await?;
                    (v + 1, deleted)
                }
            };
            let done = [Written {
                version: Some(Version {
                    resource_type: resource_type.into(),
                    id: id.into(),
                    version,
                    last_updated,
                    method: Method::Put,
                    body: Some(body),
                }),
                created,
                before: None,
            }];
            self.append_trail(&mut tx, trail, &done).await?;
            tx.commit().await.map_err(db_error)?;
            return Ok(Written::into_updated(done));
        }
    }

    async fn delete(
        &self,
        resource_type: &str,
        id: &str,
        expected: Option<i64>,
        trail: Option<Trail<'_>>,
    ) -> Result<Option<Version>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let current = lock_for_delete(&mut tx, resource_type, id).await?;
        check_expected(
            expected,
            current.as_ref().map(|(_, v, _, _)| *v),
            &format!("{resource_type}/{id}"),
        )?;
        let Some((key, v, false, before)) = current else {
            return Ok(None);
        };
        let last_updated = now();
        write_version(&mut tx, key, v + 1, last_updated, Method::Delete, None).await?;
        write_index(&mut tx, &self.indexer, key, resource_type, None, false).await?;
        let done = [Written {
            version: Some(Version {
                resource_type: resource_type.into(),
                id: id.into(),
                version: v + 1,
                last_updated,
                method: Method::Delete,
                body: None,
            }),
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
             FROM resource WHERE type = $1 AND id = $2",
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
             WHERE r.type = $1 AND r.id = $2 AND v.version = $3",
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
        let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(
            "SELECT v.seq, v.type, v.id, v.version, v.last_updated, v.method, v.body FROM resource_version v WHERE true",
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
            sql.push(" AND v.last_updated >= ").push_bind(since);
        }
        if let Some((start, end)) = q.at {
            sql.push(" AND v.last_updated < ").push_bind(end);
            sql.push(
                " AND NOT EXISTS (SELECT 1 FROM resource_version n
                   WHERE n.key = v.key AND n.version = v.version + 1 AND n.last_updated <= ",
            )
            .push_bind(start)
            .push(")");
        }
        if let Some(c) = q.after {
            sql.push(" AND (v.last_updated, v.seq) < (")
                .push_bind(c.last_updated)
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
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let mut done = Vec::with_capacity(writes.len());
        let mut pending = Pending::new();
        let mut last = 0;
        for (n, write) in writes {
            last = n;
            let written = self
                .write_one(&mut tx, write, &mut pending)
                .await
                .map_err(|e| at_entry(n, e))?;
            done.push(written);
        }
        flush(&mut tx, &mut pending)
            .await
            .map_err(|e| at_entry(last, e))?;
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
        (lock, condition): (String, Sql),
        trail: Option<Trail<'_>>,
    ) -> Result<std::result::Result<Version, Vec<Version>>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // Two creates with the same condition wait for each other, so the second sees the
        // first's resource instead of creating a duplicate.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(&lock)
            .execute(&mut *tx)
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
        let key = insert_new(
            &mut tx,
            resource_type,
            &id,
            last_updated,
            Method::Post,
            &body,
        )
        .await?
        .ok_or_else(|| Error::internal("a freshly generated id was already taken"))?;
        write_index(
            &mut tx,
            &self.indexer,
            key,
            resource_type,
            Some(&body),
            true,
        )
        .await?;
        let done = [Written::created(Version {
            resource_type: resource_type.into(),
            id,
            version: 1,
            last_updated,
            method: Method::Post,
            body: Some(body),
        })];
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
            // Locked, so that a concurrent update cannot be indexed from a stale body.
            let mut tx = self.pool.begin().await.map_err(db_error)?;
            let batch: Vec<(i64, String, Json<Value>)> = sqlx::query_as(
                "SELECT key, type, body FROM resource WHERE key > $1 AND NOT deleted
                 AND ($2::text[] IS NULL OR type = ANY($2))
                 ORDER BY key LIMIT 200 FOR UPDATE",
            )
            .bind(after)
            .bind(types.map(<[String]>::to_vec))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
            let Some(last) = batch.last() else {
                return Ok(done);
            };
            after = last.0;
            for (key, resource_type, body) in &batch {
                write_index(
                    &mut tx,
                    &self.indexer,
                    *key,
                    resource_type,
                    Some(&body.0),
                    false,
                )
                .await?;
            }
            tx.commit().await.map_err(db_error)?;
            done += batch.len() as u64;
        }
    }
}
