//! The SQL of the audit chain (`migrations/*/0006_audit.sql`, split into `audit_queue` and
//! `audit_link` by 0007): every AuditEvent is queued for the chain in the transaction that creates it (see [`audit_events`]), one sealer at a time links the
//! queued events into the chain, `hearth audit verify` reads the chain back in order, and
//! retention removes its oldest part. The hashing itself is the caller's (`audit::chain`).

use std::collections::HashMap;

use sqlx::Row;

use super::audit_events::{self, AuditRecord};
use super::index_write::TABLES;
use super::search_sql::{Bind, PageCursor, Sql};
use super::{
    db_error, HistoryPage, HistoryQuery, HistoryScope, ResourceStore, SearchPage, Store, Version,
};
use crate::error::{Error, Result};
use crate::search::query::{Search, Total};

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
    /// Stores a batch of new AuditEvents in one transaction, queued for the chain. Answers
    /// their keys, in order. A `retry` of a batch whose outcome was lost skips the events
    /// that were stored after all (their key is `None`).
    pub async fn append_audit_events(
        &self,
        records: &[AuditRecord],
        retry: bool,
    ) -> Result<Vec<Option<i64>>> {
        let keys = match self {
            // One statement: atomic without a BEGIN and COMMIT round trip.
            Store::Postgres(s) => {
                let mut conn = s.pool.acquire().await.map_err(db_error)?;
                let ids = match retry {
                    true => audit_events::Ids::MaybeTaken,
                    false => audit_events::Ids::Fresh,
                };
                audit_events::insert_pg(&mut conn, records, ids).await?
            }
            Store::Sqlite(s) => {
                let _writing = s.writer.lock().await;
                let mut tx = s
                    .pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(db_error)?;
                let keys = audit_events::insert_sqlite(&mut tx, records).await?;
                tx.commit().await.map_err(db_error)?;
                keys
            }
        };
        if !retry {
            audit_events::all_written(&keys)?;
        }
        Ok(keys)
    }

    /// Links up to `limit` queued AuditEvents into the chain, in the order they were stored,
    /// with `link_hash(prev, body_text)`. `known` holds the text of events this process
    /// stored, by key (taken out as they are linked); the others are read back. Answers the
    /// sealed events' stored text, in chain order (for an export stream).
    pub async fn audit_seal(
        &self,
        limit: i64,
        link_hash: fn(&str, &str) -> String,
        known: &mut HashMap<i64, String>,
    ) -> Result<Vec<String>> {
        in_transaction!(self, |tx, sql| {
            let head = sqlx::query(sqlx::AssertSqlSafe(sql(
                "SELECT seq, hash FROM audit_link ORDER BY seq DESC LIMIT 1",
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
            let queued: Vec<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql(
                "SELECT key, recorded FROM audit_queue ORDER BY key LIMIT $1",
            )))
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
            // Events this process did not store (the writes' own, other processes') are
            // read back in one statement.
            let missing: Vec<i64> = queued
                .iter()
                .map(|(key, _)| *key)
                .filter(|key| !known.contains_key(key))
                .collect();
            let mut unknown: HashMap<i64, String> = HashMap::new();
            if !missing.is_empty() {
                let list: Vec<String> = (1..=missing.len()).map(|n| format!("${n}")).collect();
                let text = format!(
                    "SELECT key, body, packed FROM audit_event WHERE key IN ({})",
                    list.join(", ")
                );
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql(&text))).persistent(false);
                for key in &missing {
                    q = q.bind(*key);
                }
                let rows: Vec<(i64, Option<String>, Option<Vec<u8>>)> =
                    q.fetch_all(&mut *tx).await.map_err(db_error)?;
                unknown = rows
                    .into_iter()
                    .filter_map(|(key, body, packed)| {
                        Some((key, crate::audit::pack::stored_text(body, packed)?))
                    })
                    .collect();
            }
            let mut links = Vec::with_capacity(queued.len());
            let mut sealed = Vec::with_capacity(queued.len());
            for (key, recorded) in queued {
                // A queued event whose row is gone stays queued: verify reports the gap.
                let Some(body) = known.remove(&key).or_else(|| unknown.remove(&key)) else {
                    continue;
                };
                seq += 1;
                let hash = link_hash(&prev, &body);
                links.push(NewLink {
                    seq,
                    key,
                    recorded,
                    prev: std::mem::replace(&mut prev, hash.clone()),
                    hash,
                });
                sealed.push(body);
            }
            link_all(&mut *tx, links).await?;
            Ok(sealed)
        })
    }

    /// The links after position `after`, at most `limit`, in chain order.
    pub async fn audit_links(&self, after: i64, limit: i64) -> Result<Vec<Link>> {
        let text = "SELECT l.seq, l.key, l.prev, l.hash, e.body, e.packed FROM audit_link l
             LEFT JOIN audit_event e ON e.key = l.key
             WHERE l.seq > $1 ORDER BY l.seq LIMIT $2";
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
            Store::Sqlite(s) => sqlx::query(sqlx::AssertSqlSafe(text.replace('$', "?")))
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
            (SELECT count(*) FROM audit_link),
            (SELECT count(*) FROM audit_queue),
            (SELECT count(*) FROM audit_event e
                WHERE NOT EXISTS (SELECT 1 FROM audit_link l WHERE l.key = e.key)
                AND NOT EXISTS (SELECT 1 FROM audit_queue q WHERE q.key = e.key))";
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
    /// first one recorded at or after `before_ms`, with its search rows. Answers
    /// how many were removed and the hash the remaining chain now starts from.
    pub async fn audit_purge(&self, before_ms: i64) -> Result<(i64, Option<String>)> {
        in_transaction!(self, |tx, sql| {
            let last: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql(
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM audit_link WHERE recorded >= $1)
                    THEN (SELECT min(seq) - 1 FROM audit_link WHERE recorded >= $1)
                    ELSE (SELECT max(seq) FROM audit_link) END",
            )))
            .bind(before_ms)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
            let Some(last) = last.filter(|l| *l > 0) else {
                return Ok((0, None));
            };
            let doomed = "SELECT key FROM audit_link WHERE seq <= $1";
            for table in ["audit_ref", "audit_event"] {
                sqlx::query(sqlx::AssertSqlSafe(sql(&format!(
                    "DELETE FROM {table} WHERE key IN ({doomed})"
                ))))
                .bind(last)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            }
            let removed = sqlx::query(sqlx::AssertSqlSafe(sql(
                "DELETE FROM audit_link WHERE seq <= $1",
            )))
            .bind(last)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected() as i64;
            let anchor: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql(
                "SELECT prev FROM audit_link ORDER BY seq LIMIT 1",
            )))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
            Ok((removed, anchor))
        })
    }
}

/// A link the sealer makes: the event `key` at position `seq`, and its hashes.
struct NewLink {
    seq: i64,
    key: i64,
    recorded: i64,
    prev: String,
    hash: String,
}

/// Appends a sealing batch to the chain and takes its events off the queue: one statement
/// on PostgreSQL. Nothing is updated in place.
trait LinkAll {
    async fn link_all(&mut self, links: Vec<NewLink>) -> Result<()>;
}

impl LinkAll for sqlx::PgConnection {
    async fn link_all(&mut self, links: Vec<NewLink>) -> Result<()> {
        let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for l in links {
            columns.0.push(l.seq);
            columns.1.push(l.key);
            columns.2.push(l.recorded);
            columns.3.push(l.prev);
            columns.4.push(l.hash);
        }
        sqlx::query(
            "WITH d AS (DELETE FROM audit_queue WHERE key = ANY($2))
             INSERT INTO audit_link (seq, key, recorded, prev, hash)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[])",
        )
        .bind(&columns.0)
        .bind(&columns.1)
        .bind(&columns.2)
        .bind(&columns.3)
        .bind(&columns.4)
        .execute(self)
        .await
        .map_err(db_error)?;
        Ok(())
    }
}

impl LinkAll for sqlx::SqliteConnection {
    async fn link_all(&mut self, links: Vec<NewLink>) -> Result<()> {
        for l in links {
            sqlx::query("DELETE FROM audit_queue WHERE key = ?1")
                .bind(l.key)
                .execute(&mut *self)
                .await
                .map_err(db_error)?;
            sqlx::query(
                "INSERT INTO audit_link (seq, key, recorded, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(l.seq)
            .bind(l.key)
            .bind(l.recorded)
            .bind(l.prev)
            .bind(l.hash)
            .execute(&mut *self)
            .await
            .map_err(db_error)?;
        }
        Ok(())
    }
}

async fn link_all<C: LinkAll>(conn: &mut C, links: Vec<NewLink>) -> Result<()> {
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
    for<'a> Option<Vec<u8>>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    Ok(Link {
        seq: row.try_get(0)?,
        key: row.try_get(1)?,
        prev: row.try_get(2)?,
        hash: row.try_get(3)?,
        body: crate::audit::pack::stored_text(row.try_get(4)?, row.try_get(5)?),
    })
}

/// Reads, searches and history of AuditEvent, answered from the audit table.
impl Store {
    async fn audit_rows(&self, sql: Sql) -> Result<Vec<(i64, Version, Option<i64>)>> {
        match self {
            Store::Postgres(s) => super::postgres::query(&sql)
                .fetch_all(&s.pool)
                .await
                .map_err(db_error)?
                .iter()
                .map(audit_events::found)
                .collect(),
            Store::Sqlite(s) => super::sqlite::query(&sql)
                .fetch_all(&s.pool)
                .await
                .map_err(db_error)?
                .iter()
                .map(audit_events::found)
                .collect(),
        }
    }

    /// One AuditEvent (they have one version only).
    pub(super) async fn audit_read(&self, id: &str) -> Result<Option<Version>> {
        let rows = self
            .audit_rows(audit_events::read_query(self.dialect(), id))
            .await?;
        Ok(rows.into_iter().next().map(|(_, v, _)| v))
    }

    /// A search of AuditEvents: a page, and the total when asked or free.
    pub(super) async fn audit_search(
        &self,
        search: &Search,
        count_only: bool,
    ) -> Result<SearchPage> {
        let dialect = self.dialect();
        let count = audit_events::count_query(dialect, search)?;
        if count_only {
            return Ok(SearchPage {
                matches: Vec::new(),
                included: Vec::new(),
                next: None,
                total: Some(self.count(count).await?),
            });
        }
        let after = match &search.cursor {
            Some(token) => Some(PageCursor::decode(token).ok_or_else(|| {
                Error::bad_request("the _cursor parameter is not one this server wrote")
            })?),
            None => None,
        };
        let sql = audit_events::page_query(dialect, search, after.as_ref(), search.count + 1)?;
        let mut rows = self.audit_rows(sql).await?;
        let next = if rows.len() > search.count {
            rows.truncate(search.count);
            rows.last().map(|(key, _, sort)| {
                PageCursor {
                    values: sort.iter().map(|s| Some(Bind::Int(*s))).collect(),
                    key: *key,
                }
                .encode()
            })
        } else {
            None
        };
        let total = if after.is_none() && next.is_none() {
            Some(rows.len() as i64)
        } else if search.total == Total::Accurate {
            Some(self.count(count).await?)
        } else {
            None
        };
        Ok(SearchPage {
            matches: rows.into_iter().map(|(_, v, _)| v).collect(),
            included: Vec::new(),
            next,
            total,
        })
    }

    /// History of AuditEvents: one version per event, newest first.
    pub(super) async fn audit_history(&self, q: &HistoryQuery) -> Result<HistoryPage> {
        if let HistoryScope::Instance(_, id) = &q.scope {
            let found = self.audit_read(id).await?;
            let since = |v: &Version| q.since.is_none_or(|s| v.last_updated >= s);
            let at = |v: &Version| q.at.is_none_or(|(_, end)| v.last_updated < end);
            return Ok(HistoryPage {
                versions: found.into_iter().filter(|v| since(v) && at(v)).collect(),
                next: None,
            });
        }
        let sql = audit_events::history_query(
            self.dialect(),
            q.since.map(|s| s.timestamp_micros()),
            q.at.map(|(_, end)| end.timestamp_micros()),
            q.after.map(|c| (c.last_updated.timestamp_micros(), c.seq)),
            q.count + 1,
        );
        let rows = self.audit_rows(sql).await?;
        Ok(super::page(
            rows.into_iter().map(|(key, v, _)| (v, key)).collect(),
            q.count,
        ))
    }

    /// Moves the AuditEvents stored as generic resources (before migration 0007) into the
    /// audit table, keeping their keys and so their place in the chain. Answers how many.
    pub(super) async fn audit_move_legacy(&self) -> Result<u64> {
        let indexer = self.indexer().clone();
        let mut moved = 0;
        loop {
            let n = in_transaction!(self, |tx, sql| {
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql(
                    "SELECT key, body::text FROM resource WHERE type = 'AuditEvent' ORDER BY key LIMIT 500",
                )))
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
                let mut keys = Vec::with_capacity(rows.len());
                for row in &rows {
                    let key: i64 = row.try_get(0).map_err(db_error)?;
                    let text: Option<String> = row.try_get(1).map_err(db_error)?;
                    keys.push(key);
                    let Some(text) = text else { continue };
                    let body: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                        Error::internal(format!("a stored AuditEvent is not JSON: {e}"))
                    })?;
                    let last_updated = body
                        .pointer("/meta/lastUpdated")
                        .and_then(serde_json::Value::as_str)
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map_or_else(chrono::Utc::now, |t| t.with_timezone(&chrono::Utc));
                    let r = audit_events::record_of(&indexer, &body, text, last_updated);
                    let placed = r.placed();
                    let [subtype, entity_id] = placed.columns;
                    sqlx::query(sqlx::AssertSqlSafe(sql(
                        "INSERT INTO audit_event (key, id, recorded, recorded_hi, last_updated,
                            type_system, type_code, action, outcome, body, subtype_system,
                            subtype_code, entity_id_system, entity_id_value)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                    )))
                    .bind(key)
                    .bind(&r.id)
                    .bind(r.recorded.0)
                    .bind(r.recorded.1)
                    .bind(r.last_updated.timestamp_micros())
                    .bind(&r.type_system)
                    .bind(&r.type_code)
                    .bind(&r.action)
                    .bind(&r.outcome)
                    .bind(&r.body)
                    .bind(subtype.and_then(|x| x.system.as_deref()))
                    .bind(subtype.map(|x| x.value.as_str()))
                    .bind(entity_id.and_then(|x| x.system.as_deref()))
                    .bind(entity_id.map(|x| x.value.as_str()))
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    for x in placed.rows {
                        sqlx::query(sqlx::AssertSqlSafe(sql(
                            "INSERT INTO audit_ref (key, param, system, value) VALUES ($1, $2, $3, $4)",
                        )))
                        .bind(key)
                        .bind(x.param)
                        .bind(&x.system)
                        .bind(&x.value)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    }
                }
                for table in TABLES.iter().chain(&["resource_version", "resource"]) {
                    for key in &keys {
                        sqlx::query(sqlx::AssertSqlSafe(sql(&format!(
                            "DELETE FROM {table} WHERE key = $1"
                        ))))
                        .bind(key)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    }
                }
                Ok::<u64, Error>(rows.len() as u64)
            })?;
            moved += n;
            if n == 0 {
                break;
            }
        }
        if moved > 0 {
            if let Store::Postgres(s) = self {
                sqlx::query(
                    "SELECT setval(pg_get_serial_sequence('audit_event', 'key'),
                        (SELECT max(key) FROM audit_event))",
                )
                .execute(&s.pool)
                .await
                .map_err(db_error)?;
            }
        }
        Ok(moved)
    }
}
