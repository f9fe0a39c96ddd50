//! The audit trail's own table (`migrations/*/0007_audit_table.sql`, `0008_audit_columns`).
//! AuditEvents are written once, never changed, and are the most written resource by far, so
//! they are not stored as generic resources: each is one `audit_event` row (its single-valued
//! search parameters as columns, and its only subtype and only `entity:identifier` when it
//! has one of each, as Hearth's own events do; its text as the hash chain covers it) plus one
//! `audit_ref` row per patient, agent and entity, and per subtype or identifier of an event
//! with several. Reads, searches and history of AuditEvent are answered from
//! here; the store routes them ([`super::Store`]).
//!
//! The parameters searched here are those of the IHE Basic Audit Log Patterns: `date`,
//! `type`, `subtype`, `action`, `outcome`, `patient`, `agent` (with `:identifier`), `entity`
//! (with `:identifier`), and `_id`, `_lastUpdated`.
//! <https://profiles.ihe.net/ITI/BALP/content.html>, <https://hl7.org/fhir/R4/auditevent.html#search>

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;

use super::search_sql::{predicate, Bind, Cols, Dialect, PageCursor, Sql};
use super::{db_error, Indexer, Method, Version, Write, Written};
use crate::error::{Error, Result};
use crate::fhir::meta::stamp;
use crate::search::index::IndexValue;
use crate::search::query::{Filter, Search};
use crate::search::registry::ParamType;

/// The parameters kept as `audit_ref` rows.
pub const REF_PARAMS: [&str; 6] = [
    "patient",
    "agent",
    "entity",
    "subtype",
    "agent:identifier",
    "entity:identifier",
];

/// One `audit_ref` row: a reference as (type, id) in (system, value), an absolute one as
/// (`None`, url), a token as (system, code).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AuditRef {
    pub param: &'static str,
    pub system: Option<String>,
    pub value: String,
}

/// An AuditEvent as it is stored: `body` is its complete text (id and meta included).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub id: String,
    /// `recorded` as the instants [lo, hi) it covers, in microseconds.
    pub recorded: (i64, i64),
    pub last_updated: DateTime<Utc>,
    pub type_system: Option<String>,
    pub type_code: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub body: String,
    /// Sorted, without repeats.
    pub refs: Vec<AuditRef>,
}

impl AuditRecord {
    /// The stored AuditEvent as a version (there is only ever version 1).
    pub fn version(id: String, last_updated: i64, body: &str) -> Result<Version> {
        Ok(Version {
            resource_type: "AuditEvent".into(),
            id,
            version: 1,
            last_updated: DateTime::from_timestamp_micros(last_updated)
                .ok_or_else(|| Error::internal("an AuditEvent's lastUpdated is out of range"))?,
            method: Method::Post,
            body: Some(
                serde_json::from_str(body).map_err(|e| {
                    Error::internal(format!("a stored AuditEvent is not JSON: {e}"))
                })?,
            ),
        })
    }
}

/// The parameters an `audit_event` row keeps in columns when the event has exactly one value
/// for them (migration 0008), as (parameter, system column, value column). Hearth's own
/// events have one subtype (the interaction) and one `entity:identifier` (the X-Request-Id):
/// two `audit_ref` rows, and their index entries, fewer per event.
/// Only `entity_id_value` has an index: a request id is looked up on its own, a subtype with
/// a date or a patient.
const COLUMN_PARAMS: [(&str, &str, &str); 2] = [
    ("subtype", "subtype_system", "subtype_code"),
    ("entity:identifier", "entity_id_system", "entity_id_value"),
];

/// Where a record's refs are stored: the single-valued ones of [`COLUMN_PARAMS`] in their
/// columns, in that order, and the others as `audit_ref` rows.
pub struct Placed<'a> {
    pub columns: [Option<&'a AuditRef>; 2],
    pub rows: Vec<&'a AuditRef>,
}

impl AuditRecord {
    pub fn placed(&self) -> Placed<'_> {
        let mut columns = [None; 2];
        for (slot, (param, _, _)) in columns.iter_mut().zip(COLUMN_PARAMS) {
            let mut values = self.refs.iter().filter(|r| r.param == param);
            if let (Some(only), None) = (values.next(), values.next()) {
                *slot = Some(only);
            }
        }
        let rows = self
            .refs
            .iter()
            .filter(|r| !columns.iter().flatten().any(|c| std::ptr::eq(*c, *r)))
            .collect();
        Placed { columns, rows }
    }
}

/// Sorts `refs` and drops repeats, and the `patient` rows an `entity` row already says: the
/// R4 `patient` parameter is every agent or entity that is a Patient, so a patient search
/// looks at both kinds of rows ([`filter`]), and a Patient entity needs one row, not two.
pub fn normalise(mut refs: Vec<AuditRef>) -> Vec<AuditRef> {
    refs.sort();
    refs.dedup();
    let entities: Vec<String> = refs
        .iter()
        .filter(|r| r.param == "entity" && r.system.as_deref() == Some("Patient"))
        .map(|r| r.value.clone())
        .collect();
    refs.retain(|r| {
        !(r.param == "patient"
            && r.system.as_deref() == Some("Patient")
            && entities.contains(&r.value))
    });
    refs
}

/// The record of any AuditEvent resource (one a client sent, or one stored before this
/// table existed), stamped already: columns from its elements, refs from its index rows.
pub fn record_of(
    indexer: &Indexer,
    body: &Value,
    text: String,
    last_updated: DateTime<Utc>,
) -> AuditRecord {
    let mut refs = Vec::new();
    let mut recorded = None;
    for row in indexer.rows(body) {
        let param = REF_PARAMS.iter().copied().find(|p| *p == row.param);
        match (param, row.value) {
            (
                Some(param),
                IndexValue::Reference {
                    target_type,
                    target_id: Some(id),
                    ..
                },
            ) => refs.push(AuditRef {
                param,
                system: target_type,
                value: id,
            }),
            (Some(param), IndexValue::Reference { url: Some(url), .. }) => refs.push(AuditRef {
                param,
                system: None,
                value: url,
            }),
            (
                Some(param),
                IndexValue::Token {
                    system,
                    code: Some(code),
                    ..
                },
            ) => refs.push(AuditRef {
                param,
                system,
                value: code,
            }),
            (None, IndexValue::Date { lo, hi }) if row.param == "date" && recorded.is_none() => {
                recorded = Some((lo, hi))
            }
            _ => {}
        }
    }
    let refs = normalise(refs);
    let text_at = |pointer: &str| {
        body.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let at = last_updated.timestamp_micros();
    AuditRecord {
        id: text_at("/id").unwrap_or_default(),
        recorded: recorded.unwrap_or((at, at + 1)),
        last_updated,
        type_system: text_at("/type/system"),
        type_code: text_at("/type/code"),
        action: text_at("/action"),
        outcome: text_at("/outcome"),
        body: text,
        refs,
    }
}

/// An AuditEvent write of a transaction, made ready for [`insert_pg`] or [`insert_sqlite`]:
/// a create, or a `PUT` at a client's id (which may only create). Changing or deleting one is
/// refused.
pub(super) fn prepare(
    indexer: &Indexer,
    write: Write,
    last_updated: DateTime<Utc>,
) -> Result<(AuditRecord, Version, bool)> {
    let (id, mut body, put) = match write {
        Write::Create {
            unless: Some(_), ..
        } => {
            return Err(Error::bad_request(
                "conditional create (If-None-Exist) is not supported for AuditEvent",
            ))
        }
        Write::Create { id, body, .. } => (id, body, false),
        Write::Update { id, body, .. } => (id, body, true),
        Write::Delete { .. } => return Err(super::append_only()),
    };
    stamp(&mut body, &id, 1, last_updated);
    let text = serde_json::to_string(&body)
        .map_err(|e| Error::internal(format!("cannot serialise a resource: {e}")))?;
    let record = record_of(indexer, &body, text, last_updated);
    let version = Version {
        resource_type: "AuditEvent".into(),
        id,
        version: 1,
        last_updated,
        method: if put { Method::Put } else { Method::Post },
        body: Some(body),
    };
    Ok((record, version, put))
}

/// What a prepared AuditEvent write did, given the key it got (`None`: its id was taken).
pub(super) fn written(keys: Vec<Option<i64>>, version: Version, put: bool) -> Result<Written> {
    match (keys.first().is_some_and(Option::is_some), put) {
        (true, _) => Ok(Written {
            version: Some(version),
            created: true,
            before: None,
        }),
        (false, true) => Err(super::append_only()),
        (false, false) => Err(Error::conflict(format!(
            "AuditEvent/{} already exists",
            version.id
        ))),
    }
}

/// Whether an insert may meet an id that is stored already: a client's `PUT` of an
/// AuditEvent, or a batch retried after its outcome was lost. Fresh ids cannot be taken, and
/// skip the costlier `ON CONFLICT` (speculative) insertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ids {
    Fresh,
    MaybeTaken,
}

/// Inserts AuditEvents and queues them for the hash chain, in one statement. Answers each
/// record's key, or `None` where its id was taken already (nothing is written for those).
pub(super) async fn insert_pg(
    conn: &mut sqlx::PgConnection,
    records: &[AuditRecord],
    ids: Ids,
) -> Result<Vec<Option<i64>>> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let mut e = EventColumns::default();
    let mut r = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for rec in records {
        let placed = rec.placed();
        e.push(rec, &placed);
        for x in placed.rows {
            r.0.push(rec.id.as_str());
            r.1.push(x.param);
            r.2.push(x.system.as_deref());
            r.3.push(x.value.as_str());
        }
    }
    let text = format!(
        "WITH e AS (
            INSERT INTO audit_event (id, recorded, recorded_hi, last_updated, type_system,
                type_code, action, outcome, packed, subtype_system, subtype_code,
                entity_id_system, entity_id_value)
            SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[],
                $5::text[], $6::text[], $7::text[], $8::text[], $9::bytea[], $10::text[],
                $11::text[], $12::text[], $13::text[])
            {}
            RETURNING key, id, recorded),
         r AS (
            INSERT INTO audit_ref (key, param, system, value)
            SELECT e.key, x.param, x.system, x.value
            FROM unnest($14::text[], $15::text[], $16::text[], $17::text[])
                AS x(id, param, system, value)
            JOIN e ON e.id = x.id),
         c AS (
            INSERT INTO audit_queue (key, recorded) SELECT key, recorded / 1000 FROM e)
         SELECT key, id FROM e",
        match ids {
            Ids::Fresh => "",
            Ids::MaybeTaken => "ON CONFLICT (id) DO NOTHING",
        }
    );
    let inserted: Vec<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(text))
        .bind(&e.id)
        .bind(&e.lo)
        .bind(&e.hi)
        .bind(&e.last_updated)
        .bind(&e.type_system)
        .bind(&e.type_code)
        .bind(&e.action)
        .bind(&e.outcome)
        .bind(&e.packed)
        .bind(&e.columns[0].0)
        .bind(&e.columns[0].1)
        .bind(&e.columns[1].0)
        .bind(&e.columns[1].1)
        .bind(&r.0)
        .bind(&r.1)
        .bind(&r.2)
        .bind(&r.3)
        .fetch_all(conn)
        .await
        .map_err(db_error)?;
    let keys: std::collections::HashMap<&str, i64> = inserted
        .iter()
        .map(|(key, id)| (id.as_str(), *key))
        .collect();
    Ok(records
        .iter()
        .map(|r| keys.get(r.id.as_str()).copied())
        .collect())
}

/// [`insert_pg`] for SQLite: a few statements per event.
pub(super) async fn insert_sqlite(
    conn: &mut sqlx::SqliteConnection,
    records: &[AuditRecord],
) -> Result<Vec<Option<i64>>> {
    let mut keys = Vec::with_capacity(records.len());
    for rec in records {
        let placed = rec.placed();
        let [subtype, entity_id] = placed.columns;
        let key: Option<i64> = sqlx::query_scalar(
            "INSERT INTO audit_event (id, recorded, recorded_hi, last_updated, type_system,
                type_code, action, outcome, body, packed, subtype_system, subtype_code,
                entity_id_system, entity_id_value)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, '', ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT (id) DO NOTHING RETURNING key",
        )
        .bind(&rec.id)
        .bind(rec.recorded.0)
        .bind(rec.recorded.1)
        .bind(rec.last_updated.timestamp_micros())
        .bind(&rec.type_system)
        .bind(&rec.type_code)
        .bind(&rec.action)
        .bind(&rec.outcome)
        .bind(crate::audit::pack::pack(&rec.body))
        .bind(subtype.and_then(|r| r.system.as_deref()))
        .bind(subtype.map(|r| r.value.as_str()))
        .bind(entity_id.and_then(|r| r.system.as_deref()))
        .bind(entity_id.map(|r| r.value.as_str()))
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
        keys.push(key);
        let Some(key) = key else { continue };
        for x in placed.rows {
            sqlx::query(
                "INSERT INTO audit_ref (key, param, system, value) VALUES (?1, ?2, ?3, ?4)",
            )
            .bind(key)
            .bind(x.param)
            .bind(&x.system)
            .bind(&x.value)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        }
        sqlx::query("INSERT INTO audit_queue (key, recorded) VALUES (?1, ?2)")
            .bind(key)
            .bind(rec.recorded.0 / 1000)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    Ok(keys)
}

/// Checks that every record of a batch with fresh ids was written.
pub(super) fn all_written(keys: &[Option<i64>]) -> Result<()> {
    if keys.iter().all(Option::is_some) {
        Ok(())
    } else {
        Err(Error::internal(
            "a freshly generated AuditEvent id was already taken",
        ))
    }
}

/// The columns of a batch of `audit_event` rows, for `unnest`.
#[derive(Default)]
struct EventColumns<'a> {
    id: Vec<&'a str>,
    lo: Vec<i64>,
    hi: Vec<i64>,
    last_updated: Vec<i64>,
    type_system: Vec<Option<&'a str>>,
    type_code: Vec<Option<&'a str>>,
    action: Vec<Option<&'a str>>,
    outcome: Vec<Option<&'a str>>,
    /// The text, packed (`audit::pack`).
    packed: Vec<Vec<u8>>,
    /// (system, value) of each of [`COLUMN_PARAMS`].
    columns: [(Column<'a>, Column<'a>); 2],
}

/// One nullable text column of a batch.
type Column<'a> = Vec<Option<&'a str>>;

impl<'a> EventColumns<'a> {
    fn push(&mut self, r: &'a AuditRecord, placed: &Placed<'a>) {
        for (column, value) in self.columns.iter_mut().zip(placed.columns) {
            column.0.push(value.and_then(|v| v.system.as_deref()));
            column.1.push(value.map(|v| v.value.as_str()));
        }
        self.id.push(&r.id);
        self.lo.push(r.recorded.0);
        self.hi.push(r.recorded.1);
        self.last_updated.push(r.last_updated.timestamp_micros());
        self.type_system.push(r.type_system.as_deref());
        self.type_code.push(r.type_code.as_deref());
        self.action.push(r.action.as_deref());
        self.outcome.push(r.outcome.as_deref());
        self.packed.push(crate::audit::pack::pack(&r.body));
    }
}

/// The columns every AuditEvent query selects, in this order.
const COLUMNS: &str = "e.key, e.id, e.last_updated, e.body, e.packed";

/// One AuditEvent by id.
pub fn read_query(dialect: Dialect, id: &str) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push(&format!(
        "SELECT {COLUMNS} FROM audit_event e WHERE e.id = "
    ))
    .text_bind(id);
    sql
}

/// The sort of an AuditEvent search: by `date` or `_lastUpdated` (either direction), or
/// by the order they were stored.
fn sort_column(search: &Search) -> Result<Option<(&'static str, bool)>> {
    match search.sort.as_slice() {
        [] => Ok(None),
        [s] if s.param == "date" => Ok(Some(("e.recorded", s.descending))),
        [s] if s.param == "_lastUpdated" => Ok(Some(("e.last_updated", s.descending))),
        _ => Err(Error::bad_request(
            "AuditEvents can be sorted by date or _lastUpdated only",
        )),
    }
}

/// A page of an AuditEvent search: the sort value comes back as column `s`.
pub fn page_query(
    dialect: Dialect,
    search: &Search,
    after: Option<&PageCursor>,
    limit: usize,
) -> Result<Sql> {
    let sort = sort_column(search)?;
    let mut sql = Sql::new(dialect);
    sql.push(&format!("SELECT {COLUMNS}"));
    if let Some((column, _)) = sort {
        sql.push(&format!(", {column} AS s"));
    }
    sql.push(" FROM audit_event e WHERE ");
    where_clause(&mut sql, search)?;
    match (sort, after) {
        (None, Some(c)) => {
            sql.push(" AND e.key > ").int(c.key);
        }
        (Some((column, descending)), Some(c)) => {
            let value = match c.values.first() {
                Some(Some(Bind::Int(v))) => *v,
                _ => {
                    return Err(Error::bad_request(
                        "the _cursor parameter is not one this server wrote",
                    ))
                }
            };
            let op = if descending { "<" } else { ">" };
            sql.push(&format!(" AND ({column} {op} ")).int(value);
            sql.push(&format!(" OR ({column} = ")).int(value);
            sql.push(" AND e.key > ").int(c.key);
            sql.push("))");
        }
        _ => {}
    }
    match sort {
        Some((column, true)) => sql.push(&format!(" ORDER BY {column} DESC, e.key")),
        Some((column, false)) => sql.push(&format!(" ORDER BY {column}, e.key")),
        None => sql.push(" ORDER BY e.key"),
    };
    sql.push(" LIMIT ").int(limit as i64);
    Ok(sql)
}

/// The number of AuditEvents matching `search`.
pub fn count_query(dialect: Dialect, search: &Search) -> Result<Sql> {
    let mut sql = Sql::new(dialect);
    sql.push("SELECT count(*) FROM audit_event e WHERE ");
    where_clause(&mut sql, search)?;
    Ok(sql)
}

fn where_clause(sql: &mut Sql, search: &Search) -> Result<()> {
    if !search.includes.is_empty() || !search.revincludes.is_empty() {
        return Err(Error::bad_request(
            "_include and _revinclude are not supported on AuditEvent",
        ));
    }
    sql.push("1 = 1");
    for f in &search.filters {
        sql.push(" AND ");
        filter(sql, f)?;
    }
    Ok(())
}

fn unsupported(what: &str) -> Error {
    Error::bad_request(format!(
        "{what} is not supported on AuditEvent; search by date, type, subtype, action, \
         outcome, patient, agent, entity, _id or _lastUpdated"
    ))
}

fn filter(sql: &mut Sql, f: &Filter) -> Result<()> {
    match f {
        Filter::Ids(ids) => {
            sql.push("e.id IN (");
            for (n, id) in ids.iter().enumerate() {
                if n > 0 {
                    sql.push(", ");
                }
                sql.text_bind(id);
            }
            if ids.is_empty() {
                sql.push("NULL");
            }
            sql.push(")");
        }
        Filter::Match {
            param,
            values,
            negate,
            kind,
        } => {
            let column = |code: &str, system: &str| Cols::roles(code, system, "NULL", "NULL");
            let cols = match (param.as_str(), kind) {
                ("date", ParamType::Date) => {
                    Cols::roles("NULL", "NULL", "e.recorded", "e.recorded_hi")
                }
                ("_lastUpdated", ParamType::Date) => {
                    Cols::roles("NULL", "NULL", "e.last_updated", "(e.last_updated + 1)")
                }
                ("type", _) => column("e.type_code", "e.type_system"),
                ("action", _) => column("e.action", "'http://hl7.org/fhir/audit-event-action'"),
                ("outcome", _) => column("e.outcome", "'http://hl7.org/fhir/audit-event-outcome'"),
                (p, _) if REF_PARAMS.contains(&p) => {
                    sql.push(if *negate { "NOT (" } else { "(" });
                    // A single value is in the event's columns, several in `audit_ref`. The
                    // indexed request id is looked up (a union of index scans); a subtype is
                    // checked on the events the other conditions found.
                    let in_columns = COLUMN_PARAMS.iter().find(|c| c.0 == p);
                    let alias = match in_columns {
                        Some(("entity:identifier", ..)) => "c",
                        _ => "e",
                    };
                    if let Some((_, system, value)) = in_columns {
                        let (value, system) =
                            (format!("{alias}.{value}"), format!("{alias}.{system}"));
                        sql.push(if alias == "c" {
                            "e.key IN (SELECT c.key FROM audit_event c WHERE ("
                        } else {
                            "("
                        });
                        let cols = column(&value, &system);
                        for (n, v) in values.iter().enumerate() {
                            if n > 0 {
                                sql.push(" OR ");
                            }
                            predicate(sql, v, &cols);
                        }
                        sql.push(if alias == "c" {
                            ") UNION ALL "
                        } else {
                            ") IS TRUE OR e.key IN ("
                        });
                    } else {
                        sql.push("e.key IN (");
                    }
                    sql.push("SELECT a.key FROM audit_ref a WHERE ");
                    if p == "patient" {
                        // See `normalise`: Patient entities are patients too.
                        sql.push("(a.param = 'patient' OR (a.param = 'entity' AND a.system = 'Patient'))");
                    } else {
                        sql.push("a.param = ").text_bind(p);
                    }
                    sql.push(" AND (");
                    let cols = column("a.value", "a.system");
                    for (n, v) in values.iter().enumerate() {
                        if n > 0 {
                            sql.push(" OR ");
                        }
                        predicate(sql, v, &cols);
                    }
                    sql.push(")))");
                    return Ok(());
                }
                (p, _) => return Err(unsupported(&format!("the parameter '{p}'"))),
            };
            sql.push(if *negate { "NOT (" } else { "(" });
            for (n, v) in values.iter().enumerate() {
                if n > 0 {
                    sql.push(" OR ");
                }
                predicate(sql, v, &cols);
            }
            if values.is_empty() {
                sql.push("1 = 0");
            }
            sql.push(")");
            // A value that is absent never matches, negated or not.
            if *negate && !param.starts_with('_') && param != "date" {
                let c = match param.as_str() {
                    "type" => "e.type_code",
                    "action" => "e.action",
                    _ => "e.outcome",
                };
                sql.push(&format!(" AND {c} IS NOT NULL"));
            }
        }
        Filter::AnyOf(parts) | Filter::AllOf(parts) => {
            let joiner = if matches!(f, Filter::AnyOf(_)) {
                " OR "
            } else {
                " AND "
            };
            sql.push("(");
            for (n, part) in parts.iter().enumerate() {
                if n > 0 {
                    sql.push(joiner);
                }
                filter(sql, part)?;
            }
            if parts.is_empty() {
                sql.push(if matches!(f, Filter::AnyOf(_)) {
                    "1 = 0"
                } else {
                    "1 = 1"
                });
            }
            sql.push(")");
        }
        Filter::Missing { param, .. } => return Err(unsupported(&format!("'{param}:missing'"))),
        Filter::Chain { param, .. } => {
            return Err(unsupported(&format!("chaining through '{param}'")))
        }
        Filter::Has { .. } => return Err(unsupported("_has")),
    }
    Ok(())
}

/// A page of AuditEvent history, newest first: `[since]`, `[before]` (`_at`'s end) and a
/// cursor, as (lastUpdated, key) in microseconds. Sort column `s` is lastUpdated.
pub fn history_query(
    dialect: Dialect,
    since: Option<i64>,
    before: Option<i64>,
    after: Option<(i64, i64)>,
    limit: usize,
) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push(&format!(
        "SELECT {COLUMNS}, e.last_updated AS s FROM audit_event e WHERE 1 = 1"
    ));
    if let Some(s) = since {
        sql.push(" AND e.last_updated >= ").int(s);
    }
    if let Some(b) = before {
        sql.push(" AND e.last_updated < ").int(b);
    }
    if let Some((at, key)) = after {
        sql.push(" AND (e.last_updated < ").int(at);
        sql.push(" OR (e.last_updated = ").int(at);
        sql.push(" AND e.key < ").int(key);
        sql.push("))");
    }
    sql.push(" ORDER BY e.last_updated DESC, e.key DESC LIMIT ")
        .int(limit as i64);
    sql
}

/// A row of [`COLUMNS`] (and the sort column `s`, if selected): key, version, sort value.
pub fn found<R: Row>(row: &R) -> Result<(i64, Version, Option<i64>)>
where
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<Vec<u8>>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    let key: i64 = row.try_get("key").map_err(db_error)?;
    let id: String = row.try_get("id").map_err(db_error)?;
    let last_updated: i64 = row.try_get("last_updated").map_err(db_error)?;
    let body = crate::audit::pack::stored_text(
        row.try_get("body").map_err(db_error)?,
        row.try_get("packed").map_err(db_error)?,
    )
    .ok_or_else(|| Error::internal("a stored AuditEvent has no text"))?;
    let sort: Option<i64> = row.try_get("s").ok();
    Ok((key, AuditRecord::version(id, last_updated, &body)?, sort))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::query::parse;
    use crate::search::registry::Registry;

    fn search(query: &str) -> Search {
        let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        parse(
            Registry::r4(),
            "http://h/fhir",
            "AuditEvent",
            &params,
            false,
        )
        .unwrap()
    }

    #[test]
    fn the_balp_parameters_compile_onto_the_audit_tables() {
        let q = search("patient=p1&date=ge2026-01-01&subtype=read&outcome=4&_sort=-date");
        let sql = page_query(Dialect::Postgres, &q, None, 11).unwrap();
        assert!(
            sql.text
                .contains("audit_ref a WHERE (a.param = 'patient' OR (a.param = 'entity'"),
            "{}",
            sql.text
        );
        assert!(sql.text.contains("e.recorded"), "{}", sql.text);
        assert!(
            sql.text
                .ends_with("ORDER BY e.recorded DESC, e.key LIMIT $10"),
            "{}",
            sql.text
        );
        assert_eq!(sql.binds[0], Bind::Text("p1".into()));
        // A subtype is in the event's columns, or in `audit_ref` when an event has several.
        assert!(
            sql.text.contains("e.subtype_code = ")
                && sql.text.contains(
                    ") IS TRUE OR e.key IN (SELECT a.key FROM audit_ref a WHERE a.param = "
                ),
            "{}",
            sql.text
        );
        // A request id is looked up through the columns' index and `audit_ref`'s.
        let q = search("entity:identifier=abc");
        let sql = page_query(Dialect::Sqlite, &q, None, 11).unwrap();
        assert!(
            sql.text.contains(
                "e.key IN (SELECT c.key FROM audit_event c WHERE ((c.entity_id_value = ?))"
            ) && sql
                .text
                .contains(" UNION ALL SELECT a.key FROM audit_ref a WHERE"),
            "{}",
            sql.text
        );
    }

    #[test]
    fn single_valued_subtype_and_request_id_go_to_columns() {
        let r = |param, value: &str| AuditRef {
            param,
            system: None,
            value: value.into(),
        };
        let mut record = AuditRecord {
            id: "a".into(),
            recorded: (0, 1000),
            last_updated: DateTime::from_timestamp_micros(0).unwrap(),
            type_system: None,
            type_code: None,
            action: None,
            outcome: None,
            body: "{}".into(),
            refs: normalise(vec![
                r("subtype", "read"),
                r("entity:identifier", "req-1"),
                r("entity", "p1"),
            ]),
        };
        let placed = record.placed();
        assert_eq!(placed.columns[0].map(|c| c.value.as_str()), Some("read"));
        assert_eq!(placed.columns[1].map(|c| c.value.as_str()), Some("req-1"));
        assert_eq!(placed.rows.len(), 1);
        assert_eq!(placed.rows[0].param, "entity");

        // Several values of one parameter all stay rows: a search must see them alike.
        record.refs = normalise(vec![r("subtype", "read"), r("subtype", "vread")]);
        let placed = record.placed();
        assert_eq!(placed.columns, [None, None]);
        assert_eq!(placed.rows.len(), 2);
    }

    #[test]
    fn what_the_audit_table_cannot_answer_is_a_bad_request() {
        for query in [
            "patient:missing=true",
            "patient.name=x",
            "_sort=outcome",
            "_revinclude=AuditEvent:patient",
        ] {
            let q = search(query);
            assert!(page_query(Dialect::Sqlite, &q, None, 5).is_err(), "{query}");
        }
    }
}
