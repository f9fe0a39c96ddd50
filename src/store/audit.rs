//! The SQL of the audit chain (`migrations/*/0006_audit.sql`): every AuditEvent resource is
//! queued for the chain in the transaction that creates it, one sealer at a time links the
//! queued events into the chain, `hearth audit verify` reads the chain back in order, and
//! retention removes its oldest part. The hashing itself is the caller's (`audit::chain`).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;

use super::index_write::TABLES;
use super::{db_error, Store};
use crate::error::Result;

/// `AuditEvent.recorded` in Unix milliseconds, or the write time if it is unreadable.
fn recorded_ms(body: &Value, written: DateTime<Utc>) -> i64 {
    body["recorded"]
        .as_str()
        .and_then(|r| DateTime::parse_from_rfc3339(r).ok())
        .map_or(written.timestamp_millis(), |r| r.timestamp_millis())
}

/// Queues a new AuditEvent (resource `key`) for the chain, in its creating transaction.
pub(super) async fn enqueue_pg(
    conn: &mut sqlx::PgConnection,
    key: i64,
    body: &Value,
    written: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("INSERT INTO audit_chain (key, recorded) VALUES ($1, $2)")
        .bind(key)
        .bind(recorded_ms(body, written))
        .execute(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// [`enqueue_pg`] for a batch of new AuditEvents (resource keys and bodies), in one statement.
pub(super) async fn enqueue_many_pg(
    conn: &mut sqlx::PgConnection,
    events: &[(i64, &Value)],
    written: DateTime<Utc>,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let keys: Vec<i64> = events.iter().map(|(k, _)| *k).collect();
    let recorded: Vec<i64> = events
        .iter()
        .map(|(_, b)| recorded_ms(b, written))
        .collect();
    sqlx::query(
        "INSERT INTO audit_chain (key, recorded) SELECT * FROM unnest($1::bigint[], $2::bigint[])",
    )
    .bind(&keys)
    .bind(&recorded)
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// [`enqueue_pg`] for SQLite.
pub(super) async fn enqueue_sqlite(
    conn: &mut sqlx::SqliteConnection,
    key: i64,
    body: &Value,
    written: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("INSERT INTO audit_chain (key, recorded) VALUES (?1, ?2)")
        .bind(key)
        .bind(recorded_ms(body, written))
        .execute(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// One link of the chain as stored: its position, the hashes, and the stored text of its
/// AuditEvent (`None` if that resource is gone).
#[derive(Debug, Clone)]
pub struct Link {
    pub seq: i64,
    pub key: i64,
    pub prev: String,
    pub hash: String,
    pub body: Option<String>,
}

/// How far the chain is sealed, and what is outside it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainState {
    pub sealed: i64,
    pub unsealed: i64,
    /// AuditEvent resources with no chain row at all: inserted behind Hearth's back.
    pub outside: i64,
}

/// Serialises sealers across processes on one PostgreSQL (any constant will do).
const SEAL_LOCK: i64 = 7_270_276_807;

macro_rules! in_transaction {
    ($store:expr, |$tx:ident, $sql:ident| $body:expr) => {
        match $store {
            Store::Postgres(s) => {
                let mut $tx = s.pool.begin().await.map_err(db_error)?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(SEAL_LOCK)
                    .execute(&mut *$tx)
                    .await
                    .map_err(db_error)?;
                let $sql = |text: &str| text.to_string();
                let out = $body;
                $tx.commit().await.map_err(db_error)?;
                out
            }
            Store::Sqlite(s) => {
                let _writing = s.writer.lock().await;
                let mut $tx = s
                    .pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(db_error)?;
                let $sql = |text: &str| text.replace('$', "?").replace("::text", "");
                let out = $body;
                $tx.commit().await.map_err(db_error)?;
                out
            }
        }
    };
}

impl Store {
    /// Stores a batch of new AuditEvents (each gets a fresh id) in one transaction, queued
    /// for the chain.
    pub async fn append_audit_events(&self, bodies: Vec<Value>) -> Result<()> {
        match self {
            Store::Postgres(s) => s.append_many("AuditEvent", bodies).await,
            Store::Sqlite(s) => s.append_many("AuditEvent", bodies).await,
        }
    }

    /// Links up to `limit` queued AuditEvents into the chain, in the order they were stored,
    /// with `link_hash(prev, body_text)`. Answers the sealed events' stored text, in chain
    /// order (for an export stream).
    pub async fn audit_seal(
        &self,
        limit: i64,
        link_hash: fn(&str, &str) -> String,
    ) -> Result<Vec<String>> {
        in_transaction!(self, |tx, sql| {
            let head = sqlx::query(sqlx::AssertSqlSafe(sql(
                "SELECT seq, hash FROM audit_chain WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1",
            )))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
            let (mut seq, mut prev): (i64, String) = match head {
                Some(row) => (
                    row.try_get(0).map_err(db_error)?,
                    row.try_get(1).map_err(db_error)?,
                ),
                None => (0, String::new()),
            };
            let queued = sqlx::query(sqlx::AssertSqlSafe(sql(
                "SELECT c.key, r.body::text FROM audit_chain c JOIN resource r ON r.key = c.key
                 WHERE c.seq IS NULL ORDER BY c.key LIMIT $1",
            )))
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
            let mut links = Vec::with_capacity(queued.len());
            let mut sealed = Vec::with_capacity(queued.len());
            for row in queued {
                let key: i64 = row.try_get(0).map_err(db_error)?;
                let body: String = row.try_get(1).map_err(db_error)?;
                seq += 1;
                let hash = link_hash(&prev, &body);
                links.push((key, seq, std::mem::replace(&mut prev, hash.clone()), hash));
                sealed.push(body);
            }
            link_all(&mut *tx, links).await?;
            Ok(sealed)
        })
    }

    /// The links after position `after`, at most `limit`, in chain order.
    pub async fn audit_links(&self, after: i64, limit: i64) -> Result<Vec<Link>> {
        let text = "SELECT c.seq, c.key, c.prev, c.hash, r.body::text FROM audit_chain c
             LEFT JOIN resource r ON r.key = c.key AND r.type = 'AuditEvent'
             WHERE c.seq > $1 ORDER BY c.seq LIMIT $2";
        let rows = match self {
            Store::Postgres(s) => sqlx::query(text)
                .bind(after)
                .bind(limit)
                .fetch_all(&s.pool)
                .await
                .map_err(db_error)?
                .iter()
                .map(link)
                .collect::<std::result::Result<Vec<_>, _>>(),
            Store::Sqlite(s) => sqlx::query(sqlx::AssertSqlSafe(
                text.replace('$', "?").replace("::text", ""),
            ))
            .bind(after)
            .bind(limit)
            .fetch_all(&s.pool)
            .await
            .map_err(db_error)?
            .iter()
            .map(link)
            .collect::<std::result::Result<Vec<_>, _>>(),
        };
        rows.map_err(db_error)
    }

    /// How many events are sealed, queued, and outside the chain.
    pub async fn audit_state(&self) -> Result<ChainState> {
        let text = "SELECT
            (SELECT count(*) FROM audit_chain WHERE seq IS NOT NULL),
            (SELECT count(*) FROM audit_chain WHERE seq IS NULL),
            (SELECT count(*) FROM resource r WHERE r.type = 'AuditEvent'
                AND NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.key = r.key))";
        let row = match self {
            Store::Postgres(s) => sqlx::query(text).fetch_one(&s.pool).await.map(AnyRow::Pg),
            Store::Sqlite(s) => sqlx::query(text)
                .fetch_one(&s.pool)
                .await
                .map(AnyRow::Sqlite),
        }
        .map_err(db_error)?;
        let get = |n: usize| -> Result<i64> {
            match &row {
                AnyRow::Pg(r) => r.try_get(n),
                AnyRow::Sqlite(r) => r.try_get(n),
            }
            .map_err(db_error)
        };
        Ok(ChainState {
            sealed: get(0)?,
            unsealed: get(1)?,
            outside: get(2)?,
        })
    }

    /// Removes the oldest part of the chain: every sealed event up to (not including) the
    /// first one recorded at or after `before_ms`, with its versions and index rows. Answers
    /// how many were removed and the hash the remaining chain now starts from.
    pub async fn audit_purge(&self, before_ms: i64) -> Result<(i64, Option<String>)> {
        in_transaction!(self, |tx, sql| {
            let last: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql(
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM audit_chain WHERE seq IS NOT NULL AND recorded >= $1)
                    THEN (SELECT min(seq) - 1 FROM audit_chain WHERE seq IS NOT NULL AND recorded >= $1)
                    ELSE (SELECT max(seq) FROM audit_chain) END",
            )))
            .bind(before_ms)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
            let Some(last) = last.filter(|l| *l > 0) else {
                return Ok((0, None));
            };
            let doomed = "SELECT key FROM audit_chain WHERE seq IS NOT NULL AND seq <= $1";
            for table in TABLES.iter().chain(&["resource_version", "resource"]) {
                sqlx::query(sqlx::AssertSqlSafe(sql(&format!(
                    "DELETE FROM {table} WHERE key IN ({doomed})"
                ))))
                .bind(last)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            }
            let removed = sqlx::query(sqlx::AssertSqlSafe(sql(
                "DELETE FROM audit_chain WHERE seq IS NOT NULL AND seq <= $1",
            )))
            .bind(last)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected() as i64;
            let anchor: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql(
                "SELECT prev FROM audit_chain WHERE seq IS NOT NULL ORDER BY seq LIMIT 1",
            )))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
            Ok((removed, anchor))
        })
    }
}

/// Writes the chain positions and hashes of a sealing batch: one statement on PostgreSQL.
trait LinkAll {
    async fn link_all(&mut self, links: Vec<(i64, i64, String, String)>) -> Result<()>;
}

impl LinkAll for sqlx::PgConnection {
    async fn link_all(&mut self, links: Vec<(i64, i64, String, String)>) -> Result<()> {
        let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (key, seq, prev, hash) in links {
            columns.0.push(key);
            columns.1.push(seq);
            columns.2.push(prev);
            columns.3.push(hash);
        }
        sqlx::query(
            "UPDATE audit_chain c SET seq = u.seq, prev = u.prev, hash = u.hash
             FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[]) AS u(key, seq, prev, hash)
             WHERE c.key = u.key",
        )
        .bind(&columns.0)
        .bind(&columns.1)
        .bind(&columns.2)
        .bind(&columns.3)
        .execute(self)
        .await
        .map_err(db_error)?;
        Ok(())
    }
}

impl LinkAll for sqlx::SqliteConnection {
    async fn link_all(&mut self, links: Vec<(i64, i64, String, String)>) -> Result<()> {
        for (key, seq, prev, hash) in links {
            sqlx::query("UPDATE audit_chain SET seq = ?2, prev = ?3, hash = ?4 WHERE key = ?1")
                .bind(key)
                .bind(seq)
                .bind(prev)
                .bind(hash)
                .execute(&mut *self)
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }
}

async fn link_all<C: LinkAll>(conn: &mut C, links: Vec<(i64, i64, String, String)>) -> Result<()> {
    conn.link_all(links).await
}

enum AnyRow {
    Pg(sqlx::postgres::PgRow),
    Sqlite(sqlx::sqlite::SqliteRow),
}

fn link<R: Row>(row: &R) -> std::result::Result<Link, sqlx::Error>
where
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    Ok(Link {
        seq: row.try_get(0)?,
        key: row.try_get(1)?,
        prev: row.try_get(2)?,
        hash: row.try_get(3)?,
        body: row.try_get(4)?,
    })
}
