//! The only room with SQL. A [`Store`] persists resources and their versions in PostgreSQL
//! (`jsonb`) or SQLite; both implement [`ResourceStore`] and pass the same black-box tests.
//!
//! Every write is one database transaction: the resource row, its version row (and, later,
//! its index rows) commit together or not at all. Updates lock the resource row and check the
//! expected version, so concurrent updates queue up instead of overwriting each other.

pub mod audit;
pub mod audit_events;
pub mod auth;
pub mod index_write;
pub mod migrate;
mod pg_index;
pub mod postgres;
pub mod search_sql;
pub mod sqlite;

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::search::index::{extract, IndexRow};
use crate::search::query::{Include, Search};
use crate::search::registry::{ParamType, Registry};
use search_sql::{Bind, Dialect, PageCursor, Sql};

/// What the store needs to index a resource: the search parameters, and the base URL that
/// makes absolute references to this server local.
/// The registry changes when SearchParameter resources are written, so it sits behind a lock
/// and is handed out as a snapshot.
pub struct Indexer {
    registry: std::sync::RwLock<Arc<Registry>>,
    pub base_url: String,
}

impl Indexer {
    pub fn new(registry: Registry, base_url: String) -> Indexer {
        Indexer {
            registry: std::sync::RwLock::new(Arc::new(registry)),
            base_url,
        }
    }

    /// The current registry.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_registry(&self, registry: Registry) {
        *self.registry.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(registry);
    }

    pub fn rows(&self, resource: &Value) -> Vec<IndexRow> {
        extract(&self.registry(), resource, &self.base_url)
    }
}

/// A resource found by a search, with its surrogate key and its sort values.
#[derive(Debug, Clone)]
pub struct Found {
    pub key: i64,
    pub version: Version,
    pub sort: Vec<Option<Bind>>,
}

/// One page of search results.
#[derive(Debug, Clone)]
pub struct SearchPage {
    pub matches: Vec<Version>,
    /// `_include` / `_revinclude` results, each resource once.
    pub included: Vec<Version>,
    /// The cursor of the next page, if there is one.
    pub next: Option<String>,
    pub total: Option<i64>,
}

/// How many resources one include step may add, to bound a page's size.
const MAX_INCLUDED: usize = 1000;
/// How many rounds `:iterate` includes may take.
const MAX_ITERATIONS: usize = 4;

/// The interaction that produced a version, as history reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }

    fn parse(s: &str) -> Result<Method> {
        match s {
            "POST" => Ok(Method::Post),
            "PUT" => Ok(Method::Put),
            "DELETE" => Ok(Method::Delete),
            other => Err(Error::internal(format!(
                "unknown method '{other}' in the store"
            ))),
        }
    }
}

/// One version of one resource. `body` is `None` for a deletion.
#[derive(Debug, Clone)]
pub struct Version {
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    pub last_updated: DateTime<Utc>,
    pub method: Method,
    pub body: Option<Value>,
}

impl Version {
    pub fn is_deleted(&self) -> bool {
        self.body.is_none()
    }
}

/// The result of an update: the new version, and whether it created the resource (201) or
/// replaced it (200).
#[derive(Debug, Clone)]
pub struct Updated {
    pub version: Version,
    pub created: bool,
}

/// Which history: the whole server, one type, or one resource.
#[derive(Debug, Clone)]
pub enum HistoryScope {
    System,
    Type(String),
    Instance(String, String),
}

/// A position in a history listing: the (lastUpdated, sequence) of the last entry shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub last_updated: DateTime<Utc>,
    pub seq: i64,
}

/// A history request, already validated.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub scope: HistoryScope,
    /// `_since`: versions created at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// `_at`: versions that were current at some point in [start, end).
    pub at: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Continue after this entry.
    pub after: Option<Cursor>,
    /// At most this many entries (the store returns one more to tell whether a next page exists).
    pub count: usize,
}

/// A page of history, newest first, and where the next page starts.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub versions: Vec<Version>,
    pub next: Option<Cursor>,
}

/// One write of a transaction Bundle, with its id already decided.
/// <https://hl7.org/fhir/R4/http.html#transaction>
#[derive(Debug, Clone)]
pub enum Write {
    /// Create at `id` (server-assigned before the transaction starts); fails if it exists. The
    /// `If-None-Exist` condition, if any, is checked again inside the transaction.
    Create {
        resource_type: String,
        id: String,
        body: Value,
        unless: Option<Sql>,
    },
    /// Update (or create at a client id), optionally expecting a version.
    Update {
        resource_type: String,
        id: String,
        body: Value,
        expected: Option<i64>,
    },
    Delete {
        resource_type: String,
        id: String,
        expected: Option<i64>,
    },
}

impl Write {
    pub fn resource_type(&self) -> &str {
        match self {
            Write::Create { resource_type, .. }
            | Write::Update { resource_type, .. }
            | Write::Delete { resource_type, .. } => resource_type,
        }
    }
}

/// What a [`Write`] did: the new version (none for the delete of nothing) and whether it
/// created the resource.
#[derive(Debug, Clone)]
pub struct Written {
    pub version: Option<Version>,
    pub created: bool,
    /// For a delete, the body it removed (the tombstone has none): the audit trail names
    /// the patients whose data it was.
    pub before: Option<serde_json::Value>,
}

impl Written {
    fn created(version: Version) -> Written {
        Written {
            version: Some(version),
            created: true,
            before: None,
        }
    }

    /// The version a single write made (it always makes one).
    fn into_version([w]: [Written; 1]) -> Version {
        w.version.expect("a single write made a version")
    }

    fn into_updated([w]: [Written; 1]) -> Updated {
        Updated {
            created: w.created,
            version: w.version.expect("an update made a version"),
        }
    }
}

/// What to write in the same database transaction as some writes, made from what they did:
/// the AuditEvents of those writes, so that a write and its record commit or fail together.
pub type Trail<'a> = &'a (dyn Fn(&[Written]) -> Vec<audit_events::AuditRecord> + Send + Sync);

/// Prefixes an error with the Bundle entry it is about.
pub fn at_entry(index: usize, mut e: Error) -> Error {
    for issue in &mut e.issues {
        let d = issue.diagnostics.take().unwrap_or_default();
        issue.diagnostics = Some(format!("Bundle.entry[{index}]: {d}"));
        issue.expression.insert(0, format!("Bundle.entry[{index}]"));
    }
    e
}

/// What both databases can do. `expected` is the version an `If-Match` header demands.
pub trait ResourceStore {
    /// Creates a resource with a server-assigned id (the body's id is ignored). Every write
    /// also writes its [`Trail`], if given, in the same transaction.
    fn create(
        &self,
        resource_type: &str,
        body: Value,
        trail: Option<Trail<'_>>,
    ) -> impl Future<Output = Result<Version>> + Send;
    /// Updates or creates the resource at a client-chosen id.
    fn update(
        &self,
        resource_type: &str,
        id: &str,
        body: Value,
        expected: Option<i64>,
        trail: Option<Trail<'_>>,
    ) -> impl Future<Output = Result<Updated>> + Send;
    /// Deletes a resource; `None` when there was nothing to delete (and no trail written).
    fn delete(
        &self,
        resource_type: &str,
        id: &str,
        expected: Option<i64>,
        trail: Option<Trail<'_>>,
    ) -> impl Future<Output = Result<Option<Version>>> + Send;
    /// The current version (possibly a deletion), or `None` if the resource never existed.
    fn read(
        &self,
        resource_type: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<Version>>> + Send;
    /// One version of a resource.
    fn vread(
        &self,
        resource_type: &str,
        id: &str,
        version: i64,
    ) -> impl Future<Output = Result<Option<Version>>> + Send;
    /// A page of history.
    fn history(&self, query: &HistoryQuery) -> impl Future<Output = Result<HistoryPage>> + Send;
    /// Whether the database answers.
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;
    /// Runs a search query built by [`search_sql`]; `sort` gives the types of its sort columns.
    fn fetch(
        &self,
        sql: Sql,
        sort: &[ParamType],
    ) -> impl Future<Output = Result<Vec<Found>>> + Send;
    /// Runs a `count(*)` query built by [`search_sql`].
    fn count(&self, sql: Sql) -> impl Future<Output = Result<i64>> + Send;
    /// Creates a resource unless `condition` (a search query, see [`Store::create_if_none_exist`])
    /// finds one: then nothing is written and the matches come back. The check and the
    /// write are one transaction, serialised with other creates under the same condition.
    fn create_unless(
        &self,
        resource_type: &str,
        body: Value,
        condition: (String, Sql),
        trail: Option<Trail<'_>>,
    ) -> impl Future<Output = Result<std::result::Result<Version, Vec<Version>>>> + Send;
    /// Runs `writes` in order in one database transaction: all of them or none. Each write
    /// carries the index of its Bundle entry, which an error names.
    fn transaction(
        &self,
        writes: Vec<(usize, Write)>,
        trail: Option<Trail<'_>>,
    ) -> impl Future<Output = Result<Vec<Written>>> + Send;
    /// Recomputes the index rows of every current resource of `types` (all types if `None`),
    /// after a registry change.
    fn reindex(&self, types: Option<&[String]>) -> impl Future<Output = Result<u64>> + Send;
}

/// The configured store: PostgreSQL or SQLite.
#[derive(Clone)]
pub enum Store {
    Postgres(postgres::PgStore),
    Sqlite(sqlite::SqliteStore),
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Postgres($store) => $call.await,
            Store::Sqlite($store) => $call.await,
        }
    };
}

impl Store {
    /// Connects to `database_url` (`postgres://...` or `sqlite:...`).
    pub async fn connect(
        database_url: &str,
        pool_size: u32,
        indexer: Arc<Indexer>,
    ) -> Result<Store> {
        if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
            Ok(Store::Postgres(
                postgres::PgStore::connect(database_url, pool_size, indexer).await?,
            ))
        } else if database_url.starts_with("sqlite:") {
            Ok(Store::Sqlite(
                sqlite::SqliteStore::connect(database_url, pool_size, indexer).await?,
            ))
        } else {
            Err(Error::bad_request(
                "the database URL must start with postgres:// or sqlite:",
            ))
        }
    }

    /// Applies the migrations this binary carries that the database has not seen yet.
    pub async fn migrate(&self) -> Result<Vec<&'static str>> {
        let applied = match self {
            Store::Postgres(s) => s.migrate().await,
            Store::Sqlite(s) => s.migrate().await,
        }?;
        if applied.contains(&"audit_table") {
            let moved = self.audit_move_legacy().await?;
            tracing::info!(moved, "AuditEvents moved to the audit table");
        }
        Ok(applied)
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Store::Postgres(_) => Dialect::Postgres,
            Store::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// One page of a search, with its includes and, if asked, the total.
    /// <https://hl7.org/fhir/R4/search.html>
    pub async fn search(&self, search: &Search, count_only: bool) -> Result<SearchPage> {
        if search.resource_type == AUDIT_EVENT && search.types.is_empty() {
            return self.audit_search(search, count_only).await;
        }
        if search
            .revincludes
            .iter()
            .any(|r| r.source_type == AUDIT_EVENT)
        {
            return Err(Error::bad_request(
                "AuditEvents are not included in other searches; search AuditEvent?patient=... instead",
            ));
        }
        let dialect = self.dialect();
        let after = match &search.cursor {
            Some(token) => Some(PageCursor::decode(token).ok_or_else(|| {
                Error::bad_request("the _cursor parameter is not one this server wrote")
            })?),
            None => None,
        };
        let want_total = count_only || search.total == crate::search::query::Total::Accurate;
        if count_only {
            let total = self.count(search_sql::count_query(dialect, search)).await?;
            return Ok(SearchPage {
                matches: Vec::new(),
                included: Vec::new(),
                next: None,
                total: Some(total),
            });
        }
        let kinds: Vec<ParamType> = search.sort.iter().map(|s| s.kind).collect();
        let planned = self.plan_chains(search).await?;
        let search = &planned;
        let sql = search_sql::page_query(dialect, search, after.as_ref(), search.count + 1);
        let mut found = self.fetch(sql, &kinds).await?;
        let next = if found.len() > search.count {
            found.truncate(search.count);
            found.last().map(|f| {
                PageCursor {
                    values: f.sort.clone(),
                    key: f.key,
                }
                .encode()
            })
        } else {
            None
        };
        let total = if want_total {
            if after.is_none() && next.is_none() {
                Some(found.len() as i64)
            } else {
                Some(self.count(search_sql::count_query(dialect, search)).await?)
            }
        } else if after.is_none() && next.is_none() {
            // The whole result is on this page: the total costs nothing.
            Some(found.len() as i64)
        } else {
            None
        };
        let included = self
            .includes(&found, &search.includes, &search.revincludes)
            .await?;
        Ok(SearchPage {
            matches: found.into_iter().map(|f| f.version).collect(),
            included,
            next,
            total,
        })
    }

    /// The indexer this store writes with.
    pub fn indexer(&self) -> &Arc<Indexer> {
        match self {
            Store::Postgres(s) => &s.indexer,
            Store::Sqlite(s) => &s.indexer,
        }
    }

    /// Rebuilds the registry from the official parameters and the active SearchParameter
    /// resources stored here. Returns why any stored one was not taken.
    pub async fn load_search_parameters(&self) -> Result<Vec<String>> {
        let params = vec![("status".to_string(), "active".to_string())];
        let search = crate::search::query::parse(
            Registry::r4(),
            &self.indexer().base_url,
            "SearchParameter",
            &params,
            false,
        )
        .map_err(|e| Error::internal(e.message))?;
        let custom: Vec<Value> = self
            .matches(&search, 10_000)
            .await?
            .into_iter()
            .filter_map(|v| v.body)
            .collect();
        let (registry, refused) = Registry::with_custom(&custom);
        self.indexer().set_registry(registry);
        Ok(refused)
    }

    /// The current resources matching `search`, at most `limit` (conditional interactions).
    pub async fn matches(&self, search: &Search, limit: usize) -> Result<Vec<Version>> {
        let sql = search_sql::page_query(self.dialect(), search, None, limit);
        Ok(self
            .fetch(sql, &[])
            .await?
            .into_iter()
            .map(|f| f.version)
            .collect())
    }

    /// Conditional create (`If-None-Exist`): `Ok(created)`, or `Err(matches)` with nothing
    /// written. <https://hl7.org/fhir/R4/http.html#ccreate>
    pub async fn create_if_none_exist(
        &self,
        resource_type: &str,
        body: Value,
        search: &Search,
        trail: Option<Trail<'_>>,
    ) -> Result<std::result::Result<Version, Vec<Version>>> {
        let mut criteria: Vec<String> = search
            .canonical
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        criteria.sort();
        let lock = format!("{resource_type}?{}", criteria.join("&"));
        let sql = search_sql::page_query(self.dialect(), search, None, 2);
        self.create_unless(resource_type, body, (lock, sql), trail)
            .await
    }

    /// Marks the chains whose chained filters match many resources as dense (see
    /// [`crate::search::query::Filter::Chain`]): a capped count per chain decides.
    async fn plan_chains(&self, search: &Search) -> Result<Search> {
        const DENSE: usize = 1000;
        let mut planned = search.clone();
        if self.dialect() != Dialect::Postgres || !search.sort.is_empty() {
            return Ok(planned);
        }
        for f in &mut planned.filters {
            if let crate::search::query::Filter::Chain { targets, dense, .. } = f {
                let mut matches = 0;
                for (target_type, inner) in targets.iter() {
                    let mut probe = search.clone();
                    probe.resource_type = target_type.clone();
                    probe.types = Vec::new();
                    probe.filters = vec![(**inner).clone()];
                    matches += self
                        .count(search_sql::at_least_query(Dialect::Postgres, &probe, DENSE))
                        .await?;
                }
                *dense = matches >= DENSE as i64;
            }
        }
        Ok(planned)
    }

    /// `_include` and `_revinclude`, iterated where asked, each resource at most once and
    /// never one that is already a match.
    async fn includes(
        &self,
        matches: &[Found],
        includes: &[Include],
        revincludes: &[Include],
    ) -> Result<Vec<Version>> {
        let dialect = self.dialect();
        let mut seen: std::collections::HashSet<i64> = matches.iter().map(|f| f.key).collect();
        let mut included: Vec<Found> = Vec::new();
        let mut frontier: Vec<Found> = matches.to_vec();
        for round in 0..MAX_ITERATIONS {
            let mut added = Vec::new();
            let keys: Vec<i64> = frontier.iter().map(|f| f.key).collect();
            let targets: Vec<(String, String)> = frontier
                .iter()
                .map(|f| (f.version.resource_type.clone(), f.version.id.clone()))
                .collect();
            if keys.is_empty() {
                break;
            }
            for inc in includes.iter().filter(|i| round == 0 || i.iterate) {
                let source = (inc.source_type != "*").then_some(inc.source_type.as_str());
                let sql = search_sql::include_query(
                    dialect,
                    source,
                    inc.param.as_deref(),
                    inc.target_type.as_deref(),
                    &keys,
                );
                added.extend(self.fetch(sql, &[]).await?);
            }
            for inc in revincludes.iter().filter(|i| round == 0 || i.iterate) {
                let source = (inc.source_type != "*").then_some(inc.source_type.as_str());
                let wanted: Vec<(String, String)> = match &inc.target_type {
                    Some(t) => targets.iter().filter(|(tt, _)| tt == t).cloned().collect(),
                    None => targets.clone(),
                };
                let sql =
                    search_sql::revinclude_query(dialect, source, inc.param.as_deref(), &wanted);
                added.extend(self.fetch(sql, &[]).await?);
            }
            frontier = added.into_iter().filter(|f| seen.insert(f.key)).collect();
            included.extend(frontier.iter().cloned());
            if included.len() > MAX_INCLUDED {
                return Err(Error::new(
                    crate::error::ErrorKind::Unprocessable,
                    crate::fhir::outcome::IssueType::TooCostly,
                    format!(
                        "the includes add more than {MAX_INCLUDED} resources; use a smaller _count"
                    ),
                ));
            }
        }
        Ok(included.into_iter().map(|f| f.version).collect())
    }

    /// Which backend this is, for logs and metrics.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        match self {
            Store::Postgres(s) => s.pool.close().await,
            Store::Sqlite(s) => s.pool.close().await,
        }
    }
}

impl ResourceStore for Store {
    async fn create(
        &self,
        resource_type: &str,
        body: Value,
        trail: Option<Trail<'_>>,
    ) -> Result<Version> {
        if resource_type == AUDIT_EVENT {
            let create = Write::Create {
                resource_type: resource_type.into(),
                id: crate::fhir::id::new_id(),
                body,
                unless: None,
            };
            let written = self.transaction(vec![(0, create)], trail).await?;
            return Ok(Written::into_version(
                written
                    .try_into()
                    .map_err(|_| Error::internal("one write, one result"))?,
            ));
        }
        dispatch!(self, s => s.create(resource_type, body, trail))
    }
    async fn update(
        &self,
        resource_type: &str,
        id: &str,
        body: Value,
        expected: Option<i64>,
        trail: Option<Trail<'_>>,
    ) -> Result<Updated> {
        if resource_type == AUDIT_EVENT {
            return Err(append_only());
        }
        dispatch!(self, s => s.update(resource_type, id, body, expected, trail))
    }
    async fn delete(
        &self,
        resource_type: &str,
        id: &str,
        expected: Option<i64>,
        trail: Option<Trail<'_>>,
    ) -> Result<Option<Version>> {
        if resource_type == AUDIT_EVENT {
            return Err(append_only());
        }
        dispatch!(self, s => s.delete(resource_type, id, expected, trail))
    }
    async fn read(&self, resource_type: &str, id: &str) -> Result<Option<Version>> {
        if resource_type == AUDIT_EVENT {
            return self.audit_read(id).await;
        }
        dispatch!(self, s => s.read(resource_type, id))
    }
    async fn vread(&self, resource_type: &str, id: &str, version: i64) -> Result<Option<Version>> {
        if resource_type == AUDIT_EVENT {
            return Ok(self.audit_read(id).await?.filter(|_| version == 1));
        }
        dispatch!(self, s => s.vread(resource_type, id, version))
    }
    async fn history(&self, query: &HistoryQuery) -> Result<HistoryPage> {
        match &query.scope {
            HistoryScope::Type(t) | HistoryScope::Instance(t, _) if t == AUDIT_EVENT => {
                self.audit_history(query).await
            }
            _ => dispatch!(self, s => s.history(query)),
        }
    }
    async fn ping(&self) -> Result<()> {
        dispatch!(self, s => s.ping())
    }
    async fn fetch(&self, sql: Sql, sort: &[ParamType]) -> Result<Vec<Found>> {
        dispatch!(self, s => s.fetch(sql, sort))
    }
    async fn count(&self, sql: Sql) -> Result<i64> {
        dispatch!(self, s => s.count(sql))
    }
    async fn reindex(&self, types: Option<&[String]>) -> Result<u64> {
        dispatch!(self, s => s.reindex(types))
    }
    async fn transaction(
        &self,
        writes: Vec<(usize, Write)>,
        trail: Option<Trail<'_>>,
    ) -> Result<Vec<Written>> {
        dispatch!(self, s => s.transaction(writes, trail))
    }
    async fn create_unless(
        &self,
        resource_type: &str,
        body: Value,
        condition: (String, Sql),
        trail: Option<Trail<'_>>,
    ) -> Result<std::result::Result<Version, Vec<Version>>> {
        if resource_type == AUDIT_EVENT {
            return Err(Error::bad_request(
                "conditional create (If-None-Exist) is not supported for AuditEvent",
            ));
        }
        dispatch!(self, s => s.create_unless(resource_type, body, condition, trail))
    }
}

/// The type stored in its own table ([`audit_events`]).
const AUDIT_EVENT: &str = "AuditEvent";

/// AuditEvents are append-only (405). <https://hl7.org/fhir/R4/auditevent.html>
pub fn append_only() -> Error {
    Error::new(
        crate::error::ErrorKind::MethodNotAllowed,
        crate::fhir::outcome::IssueType::NotSupported,
        "AuditEvents cannot be changed or deleted: the audit trail is append-only",
    )
}

/// The time a write is stamped with: now, at the microsecond precision both databases keep.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Checks an `If-Match` expectation against the version found.
fn check_expected(expected: Option<i64>, found: Option<i64>, what: &str) -> Result<()> {
    match (expected, found) {
        (None, _) => Ok(()),
        (Some(e), Some(f)) if e == f => Ok(()),
        (Some(e), Some(f)) => Err(Error::precondition_failed(format!(
            "{what} is at version {f}, not the version {e} that If-Match requires"
        ))),
        (Some(e), None) => Err(Error::precondition_failed(format!(
            "{what} does not exist, so it cannot be at the version {e} that If-Match requires"
        ))),
    }
}

/// Decodes the sort columns `s0`, `s1`... of a search row by their parameter types.
fn sort_values<R: sqlx::Row>(row: &R, sort: &[ParamType]) -> Result<Vec<Option<Bind>>>
where
    usize: sqlx::ColumnIndex<R>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<f64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    sort.iter()
        .enumerate()
        .map(|(n, kind)| {
            let col = format!("s{n}");
            Ok(match kind {
                ParamType::Date => row
                    .try_get::<Option<i64>, _>(col.as_str())
                    .map_err(db_error)?
                    .map(Bind::Int),
                ParamType::Number | ParamType::Quantity => row
                    .try_get::<Option<f64>, _>(col.as_str())
                    .map_err(db_error)?
                    .map(Bind::Float),
                _ => row
                    .try_get::<Option<String>, _>(col.as_str())
                    .map_err(db_error)?
                    .map(Bind::Text),
            })
        })
        .collect()
}

/// Turns the history rows fetched (up to `count + 1`) into a page.
fn page(mut versions: Vec<(Version, i64)>, count: usize) -> HistoryPage {
    let next = if versions.len() > count {
        versions.truncate(count);
        versions.last().map(|(v, seq)| Cursor {
            last_updated: v.last_updated,
            seq: *seq,
        })
    } else {
        None
    };
    HistoryPage {
        versions: versions.into_iter().map(|(v, _)| v).collect(),
        next,
    }
}

/// Maps a database failure to what the client should hear. Connection trouble is a 503 (the
/// client may retry); anything else is a defect, logged without the statement's values.
fn db_error(e: sqlx::Error) -> Error {
    use sqlx::Error as E;
    match &e {
        E::PoolTimedOut
        | E::PoolClosed
        | E::Io(_)
        | E::Tls(_)
        | E::WorkerCrashed
        | E::Protocol(_) => {
            tracing::warn!(error = %e, "database unavailable");
            Error::unavailable("the database is unavailable; try again shortly")
        }
        E::Database(db) => {
            let code = db.code().unwrap_or_default().to_string();
            // PostgreSQL classes 08 (connection), 57 (operator intervention), 53 (resources),
            // 28 (authorisation), 3D000 (no such database), 55000 (database not accepting
            // connections); SQLite 5/6 (busy, locked).
            let unavailable = ["08", "57", "53", "28"].iter().any(|c| code.starts_with(c))
                || ["3D000", "55000", "5", "6"].contains(&code.as_str());
            if unavailable {
                tracing::warn!(code, "database unavailable");
                Error::unavailable("the database is unavailable or busy; try again shortly")
            } else if code == "40001" || code == "40P01" {
                Error::conflict("a concurrent transaction conflicted with this one; retry it")
            } else if code.starts_with("22") {
                Error::bad_request("the resource holds a value the database cannot store")
            } else {
                tracing::error!(code, "database error");
                Error::internal("unexpected database error")
            }
        }
        _ => {
            tracing::error!(error = %e, "database error");
            Error::internal("unexpected database error")
        }
    }
}
