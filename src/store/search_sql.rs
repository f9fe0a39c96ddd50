//! Compiles a search AST ([`crate::search::query::Search`]) to SQL over the index tables of
//! migration 0002, for either database. Every value from the request is a bound parameter;
//! the only text spliced into SQL is Hearth's own (table names, aliases, operators).

use super::index_write::table_of;
use crate::search::index::{Micros, IDENTIFIER_SUFFIX};
use crate::search::query::{Filter, Predicate, Prefix, Search, StringMode, SystemMatch, UriMode};
use crate::search::registry::ParamType;
use crate::search::text::{like_escape, prefix_upper_bound};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Text(String),
    Int(i64),
    Float(f64),
}

/// SQL text with its binds, in placeholder order.
#[derive(Debug, Clone)]
pub struct Sql {
    dialect: Dialect,
    pub text: String,
    pub binds: Vec<Bind>,
    aliases: usize,
    /// While compiling a page in key order: the cursor's key, repeated inside each index
    /// lookup of the resource row `r` so that the index scan starts there.
    after_key: Option<i64>,
}

impl Sql {
    pub fn new(dialect: Dialect) -> Sql {
        Sql {
            dialect,
            text: String::new(),
            binds: Vec::new(),
            aliases: 0,
            after_key: None,
        }
    }

    pub fn push(&mut self, s: &str) -> &mut Sql {
        self.text.push_str(s);
        self
    }

    pub fn bind(&mut self, b: Bind) -> &mut Sql {
        self.binds.push(b);
        match self.dialect {
            Dialect::Postgres => {
                let n = self.binds.len();
                self.text.push_str(&format!("${n}"));
            }
            Dialect::Sqlite => self.text.push('?'),
        }
        self
    }

    pub fn text_bind(&mut self, s: &str) -> &mut Sql {
        self.bind(Bind::Text(s.to_string()))
    }

    pub fn int(&mut self, i: i64) -> &mut Sql {
        self.bind(Bind::Int(i))
    }

    fn float(&mut self, f: f64) -> &mut Sql {
        self.bind(Bind::Float(f))
    }

    /// A fresh table alias.
    fn alias(&mut self, prefix: &str) -> String {
        self.aliases += 1;
        format!("{prefix}{}", self.aliases)
    }

    /// The resource type index rows must have: `rtype`, or, in a search over several types
    /// (`rtype` empty), the type of the resource row `r`.
    pub fn type_of(&mut self, rtype: &str, r: &str) -> &mut Sql {
        if rtype.is_empty() {
            self.push(&format!("{r}.type"))
        } else {
            self.text_bind(rtype)
        }
    }

    /// `alias` is a live (not deleted) resource row.
    pub fn live(&mut self, alias: &str) -> &mut Sql {
        match self.dialect {
            Dialect::Postgres => self.push(&format!("NOT {alias}.deleted")),
            Dialect::Sqlite => self.push(&format!("{alias}.deleted = 0")),
        }
    }
}

/// The columns of a search row: the current version of a resource.
pub const RESOURCE_COLUMNS: &str =
    "r.key, r.type, r.id, r.version, r.last_updated, 'PUT' AS method, r.body";

/// The WHERE clause for `search` on resource alias `r` (without the keyword).
pub fn where_clause(sql: &mut Sql, search: &Search) {
    if search.types.is_empty() {
        sql.push("r.type = ").text_bind(&search.resource_type);
    } else {
        // A system-level search: `_type`, or every type.
        sql.push("r.type IN (");
        for (n, t) in search.types.iter().enumerate() {
            if n > 0 {
                sql.push(", ");
            }
            sql.text_bind(t);
        }
        sql.push(")");
    }
    sql.push(" AND ");
    sql.live("r");
    let rtype = if search.types.is_empty() {
        search.resource_type.as_str()
    } else {
        ""
    };
    for f in &search.filters {
        sql.push(" AND ");
        filter(sql, f, "r", rtype);
    }
}

/// One filter on the resource row `r` of type `rtype`.
pub fn filter(sql: &mut Sql, f: &Filter, r: &str, rtype: &str) {
    match f {
        Filter::Ids(ids) => {
            if ids.is_empty() {
                sql.push("1 = 0");
                return;
            }
            sql.push(&format!("{r}.id IN ("));
            for (n, id) in ids.iter().enumerate() {
                if n > 0 {
                    sql.push(", ");
                }
                sql.text_bind(id);
            }
            sql.push(")");
        }
        Filter::Match {
            param,
            kind,
            values,
            negate,
        } => {
            let i = sql.alias("i");
            if *negate {
                sql.push("NOT ");
            }
            sql.push(&format!(
                "EXISTS (SELECT 1 FROM {} {i} WHERE {i}.key = {r}.key AND {i}.type = ",
                table_of(*kind)
            ));
            sql.type_of(rtype, r);
            sql.push(&format!(" AND {i}.param = ")).text_bind(param);
            if let (Some(key), "r", false) = (sql.after_key, r, *negate) {
                sql.push(&format!(" AND {i}.key > ")).int(key);
            }
            sql.push(" AND (");
            for (n, v) in values.iter().enumerate() {
                if n > 0 {
                    sql.push(" OR ");
                }
                predicate(sql, v, &Cols::of(&i));
            }
            sql.push("))");
        }
        Filter::Missing {
            param,
            kind,
            missing,
        } => {
            let i = sql.alias("i");
            sql.push(if *missing { "NOT (" } else { "(" });
            sql.push(&format!(
                "EXISTS (SELECT 1 FROM {} {i} WHERE {i}.key = {r}.key AND {i}.type = ",
                table_of(*kind)
            ));
            sql.type_of(rtype, r);
            sql.push(&format!(" AND {i}.param = ")).text_bind(param);
            sql.push(")");
            if *kind == ParamType::Reference {
                // A reference given only by its identifier is present too.
                let j = sql.alias("i");
                sql.push(&format!(
                    " OR EXISTS (SELECT 1 FROM search_token {j} WHERE {j}.key = {r}.key AND {j}.type = "
                ));
                sql.type_of(rtype, r);
                sql.push(&format!(" AND {j}.param = "))
                    .text_bind(&format!("{param}{IDENTIFIER_SUFFIX}"));
                sql.push(")");
            }
            sql.push(")");
        }
        Filter::Chain {
            param,
            targets,
            dense,
        } => {
            let (c, t) = (sql.alias("c"), sql.alias("t"));
            // Dense chains (many targets match) are checked row by row, in the order the page
            // walks: from this resource's reference to its target. OFFSET 0 keeps PostgreSQL
            // from turning either check into a join over every match.
            let fenced = *dense && sql.dialect == Dialect::Postgres;
            sql.push(&format!(
                "EXISTS (SELECT 1 FROM search_reference {c} WHERE {c}.key = {r}.key AND {c}.type = "
            ));
            sql.type_of(rtype, r);
            sql.push(&format!(" AND {c}.param = ")).text_bind(param);
            sql.push(&format!(
                " AND EXISTS (SELECT 1 FROM resource {t} \
                 WHERE {t}.type = {c}.target_type AND {t}.id = {c}.target_id AND "
            ));
            sql.live(&t);
            sql.push(" AND (");
            for (n, (target_type, inner)) in targets.iter().enumerate() {
                if n > 0 {
                    sql.push(" OR ");
                }
                sql.push(&format!("({t}.type = ")).text_bind(target_type);
                sql.push(" AND ");
                filter(sql, inner, &t, target_type);
                sql.push(")");
            }
            sql.push(if fenced {
                ") OFFSET 0) OFFSET 0)"
            } else {
                ")))"
            });
        }
        Filter::Has {
            source_type,
            param,
            inner,
        } => {
            let (h, s) = (sql.alias("h"), sql.alias("s"));
            sql.push(&format!(
                "EXISTS (SELECT 1 FROM search_reference {h} JOIN resource {s} ON {s}.key = {h}.key \
                 WHERE {h}.type = "
            ));
            sql.text_bind(source_type);
            sql.push(&format!(" AND {h}.param = ")).text_bind(param);
            sql.push(&format!(
                " AND {h}.target_type = {r}.type AND {h}.target_id = {r}.id AND "
            ));
            filter(sql, inner, &s, source_type);
            sql.push(")");
        }
        Filter::AnyOf(filters) => {
            sql.push("(");
            for (n, f) in filters.iter().enumerate() {
                if n > 0 {
                    sql.push(" OR ");
                }
                filter(sql, f, r, rtype);
            }
            if filters.is_empty() {
                sql.push("1 = 0");
            }
            sql.push(")");
        }
        Filter::AllOf(filters) => {
            sql.push("(");
            for (n, f) in filters.iter().enumerate() {
                if n > 0 {
                    sql.push(" AND ");
                }
                filter(sql, f, r, rtype);
            }
            if filters.is_empty() {
                sql.push("1 = 1");
            }
            sql.push(")");
        }
    }
}

/// One value of a parameter against the index columns `c`.
pub(super) fn predicate(sql: &mut Sql, p: &Predicate, c: &Cols) {
    match p {
        Predicate::String { mode, value } => match mode {
            StringMode::Prefix => prefix_range(sql, &c.folded, value),
            StringMode::Contains => {
                sql.push(&format!("{} LIKE ", c.folded))
                    .text_bind(&format!("%{}%", like_escape(value)));
                sql.push(" ESCAPE '\\'");
            }
            StringMode::Exact => {
                sql.push(&format!("{} = ", c.exact)).text_bind(value);
            }
        },
        Predicate::Token { system, code } => {
            let mut terms: Vec<(String, Option<&str>)> = Vec::new();
            if let Some(code) = code {
                terms.push((format!("{} = ", c.code), Some(code)));
            }
            match system {
                SystemMatch::Any => {}
                SystemMatch::Absent => terms.push((format!("{} IS NULL", c.system), None)),
                SystemMatch::Is(s) => terms.push((format!("{} = ", c.system), Some(s))),
            }
            sql.push("(");
            for (n, (term, bind)) in terms.iter().enumerate() {
                if n > 0 {
                    sql.push(" AND ");
                }
                sql.push(term);
                if let Some(b) = bind {
                    sql.text_bind(b);
                }
            }
            if terms.is_empty() {
                sql.push("1 = 1");
            }
            sql.push(")");
        }
        Predicate::TokenText(text) => prefix_range(sql, &c.text, text),
        Predicate::Date { prefix, lo, hi } => date(sql, *prefix, *lo, *hi, &c.lo, &c.hi),
        Predicate::Number {
            prefix,
            value,
            lo,
            hi,
        } => number(sql, *prefix, *value, *lo, *hi, &c.value),
        Predicate::Quantity {
            prefix,
            value,
            lo,
            hi,
            system,
            code,
        } => {
            sql.push("(");
            number(sql, *prefix, *value, *lo, *hi, &c.value);
            if let Some(s) = system {
                sql.push(&format!(" AND {} = ", c.system)).text_bind(s);
            }
            if let Some(u) = code {
                if system.is_some() {
                    sql.push(&format!(" AND {} = ", c.code)).text_bind(u);
                } else {
                    sql.push(&format!(" AND ({} = ", c.code)).text_bind(u);
                    sql.push(&format!(" OR {} = ", c.unit)).text_bind(u);
                    sql.push(")");
                }
            }
            sql.push(")");
        }
        Predicate::Reference {
            target_type,
            id,
            url,
        } => {
            sql.push("(");
            if let Some(url) = url {
                sql.push(&format!("{} = ", c.url)).text_bind(url);
            } else {
                sql.push(&format!("{} = ", c.target_id))
                    .text_bind(id.as_deref().unwrap_or_default());
                if let Some(t) = target_type {
                    sql.push(&format!(" AND {} = ", c.target_type)).text_bind(t);
                }
            }
            sql.push(")");
        }
        Predicate::Uri { mode, value } => match mode {
            UriMode::Exact => {
                sql.push(&format!("{} = ", c.value)).text_bind(value);
            }
            UriMode::Below => prefix_range(sql, &c.value, value),
            UriMode::Above => {
                sql.push("substr(").text_bind(value);
                sql.push(&format!(", 1, length({v})) = {v}", v = c.value));
            }
        },
        Predicate::All(parts) => {
            sql.push("(");
            for (n, part) in parts.iter().enumerate() {
                if n > 0 {
                    sql.push(" AND ");
                }
                predicate(sql, part, c);
            }
            sql.push(")");
        }
        Predicate::StartsAfter(at) => {
            sql.push(&format!("{} > ", c.lo)).int(*at);
        }
        Predicate::Composite(parts) => {
            sql.push("(");
            for (n, part) in parts.iter().enumerate() {
                if n > 0 {
                    sql.push(" AND ");
                }
                predicate(sql, part, &c.component(n));
            }
            sql.push(")");
        }
    }
}

/// `column` starts with `prefix`, as a range an index can serve. PostgreSQL gets a `LIKE`
/// on its `C`-collated columns: it serves it from the same index and estimates how many rows
/// a prefix matches far better than for an open-ended range.
fn prefix_range(sql: &mut Sql, column: &str, prefix: &str) {
    if sql.dialect == Dialect::Postgres {
        sql.push(&format!("{column} LIKE "))
            .text_bind(&format!("{}%", like_escape(prefix)));
        sql.push(" ESCAPE '\\'");
        return;
    }
    sql.push(&format!("({column} >= ")).text_bind(prefix);
    sql.push(&format!(" AND {column} < "))
        .text_bind(&prefix_upper_bound(prefix));
    sql.push(")");
}

/// The columns a predicate compares, by role: those of one index table, or of one component
/// of a composite row.
pub struct Cols {
    alias: String,
    folded: String,
    exact: String,
    code: String,
    system: String,
    text: String,
    lo: String,
    hi: String,
    value: String,
    unit: String,
    target_id: String,
    target_type: String,
    url: String,
}

impl Cols {
    /// The columns of the index tables of migration 0002, on alias `i`.
    pub fn of(i: &str) -> Cols {
        let col = |name: &str| format!("{i}.{name}");
        Cols {
            alias: i.to_string(),
            folded: col("folded"),
            exact: col("exact"),
            code: col("code"),
            system: col("system"),
            text: col("text"),
            lo: col("lo"),
            hi: col("hi"),
            value: col("value"),
            unit: col("unit"),
            target_id: col("target_id"),
            target_type: col("target_type"),
            url: col("url"),
        }
    }

    /// Columns given by role, for tables other than the index tables (the audit trail's):
    /// `code` and `system` serve tokens, `value` and `system` references (id and type, or
    /// url in `value`), `lo` and `hi` dates. Other roles compare with `NULL`.
    pub(super) fn roles(code: &str, system: &str, lo: &str, hi: &str) -> Cols {
        let none = || "NULL".to_string();
        Cols {
            alias: String::new(),
            folded: none(),
            exact: none(),
            code: code.to_string(),
            system: system.to_string(),
            text: none(),
            lo: lo.to_string(),
            hi: hi.to_string(),
            value: none(),
            unit: none(),
            target_id: code.to_string(),
            target_type: system.to_string(),
            url: code.to_string(),
        }
    }

    /// The columns of component `n` of a `search_composite` row (see migration 0003): `t`
    /// holds the main text (folded string, code, id, uri), `x` the second text (exact
    /// string, system, target type), `lo`/`hi` the numbers, `u` the unit, display or url.
    fn component(&self, n: usize) -> Cols {
        let i = &self.alias;
        let col = |name: &str| format!("{i}.c{n}_{name}");
        Cols {
            alias: i.clone(),
            folded: col("t"),
            exact: col("x"),
            code: col("t"),
            system: col("x"),
            text: col("u"),
            lo: col("lo"),
            hi: col("hi"),
            // numbers and quantities; composites have no uri components in R4
            value: col("lo"),
            unit: col("u"),
            target_id: col("t"),
            target_type: col("x"),
            url: col("u"),
        }
    }
}

/// A date prefix against the index row's [lo, hi). <https://hl7.org/fhir/R4/search.html#prefix>
fn date(sql: &mut Sql, prefix: Prefix, lo: Micros, hi: Micros, lo_col: &str, hi_col: &str) {
    let eq = |sql: &mut Sql| {
        sql.push(&format!("({lo_col} >= ")).int(lo);
        sql.push(&format!(" AND {hi_col} <= ")).int(hi);
        sql.push(")");
    };
    match prefix {
        Prefix::Eq => eq(sql),
        Prefix::Ne => {
            sql.push("NOT ");
            eq(sql);
        }
        Prefix::Gt => {
            sql.push(&format!("{hi_col} > ")).int(hi);
        }
        Prefix::Lt => {
            sql.push(&format!("{lo_col} < ")).int(lo);
        }
        Prefix::Ge => {
            sql.push(&format!("({hi_col} > ")).int(hi);
            sql.push(" OR ");
            eq(sql);
            sql.push(")");
        }
        Prefix::Le => {
            sql.push(&format!("({lo_col} < ")).int(lo);
            sql.push(" OR ");
            eq(sql);
            sql.push(")");
        }
        Prefix::Sa => {
            sql.push(&format!("{lo_col} >= ")).int(hi);
        }
        Prefix::Eb => {
            sql.push(&format!("{hi_col} <= ")).int(lo);
        }
        Prefix::Ap => {
            // Approximately: the search range widened by 10% of its distance from now.
            let now = chrono::Utc::now().timestamp_micros();
            let widen = ((now - lo).abs() / 10).max(86_400_000_000);
            sql.push(&format!("({lo_col} < "))
                .int(hi.saturating_add(widen));
            sql.push(&format!(" AND {hi_col} > "))
                .int(lo.saturating_sub(widen));
            sql.push(")");
        }
    }
}

/// A number prefix against `column`; `value` has the implicit range [lo, hi).
fn number(sql: &mut Sql, prefix: Prefix, value: f64, lo: f64, hi: f64, column: &str) {
    match prefix {
        Prefix::Eq => {
            sql.push(&format!("({column} >= ")).float(lo);
            sql.push(&format!(" AND {column} < ")).float(hi);
            sql.push(")");
        }
        Prefix::Ne => {
            sql.push(&format!("({column} < ")).float(lo);
            sql.push(&format!(" OR {column} >= ")).float(hi);
            sql.push(")");
        }
        Prefix::Gt | Prefix::Sa => {
            sql.push(&format!("{column} > ")).float(value);
        }
        Prefix::Lt | Prefix::Eb => {
            sql.push(&format!("{column} < ")).float(value);
        }
        Prefix::Ge => {
            sql.push(&format!("{column} >= ")).float(value);
        }
        Prefix::Le => {
            sql.push(&format!("{column} <= ")).float(value);
        }
        Prefix::Ap => {
            let margin = (value.abs() * 0.1).max(hi - lo);
            sql.push(&format!("({column} >= ")).float(value - margin);
            sql.push(&format!(" AND {column} <= "))
                .float(value + margin);
            sql.push(")");
        }
    }
}

/// The sort value of resource `r` for a sort key, as a scalar subquery (or column).
pub fn sort_expression(sql: &mut Sql, param: &str, kind: ParamType, descending: bool, rtype: &str) {
    if param == "_id" {
        sql.push("r.id");
        return;
    }
    let agg = if descending { "max" } else { "min" };
    let column = match kind {
        ParamType::String => "folded",
        ParamType::Token => "code",
        ParamType::Date => {
            if descending {
                "hi"
            } else {
                "lo"
            }
        }
        ParamType::Reference => "target_id",
        _ => "value",
    };
    let i = sql.alias("o");
    sql.push(&format!(
        "(SELECT {agg}({i}.{column}) FROM {} {i} WHERE {i}.key = r.key AND {i}.type = ",
        table_of(kind)
    ));
    sql.type_of(rtype, "r");
    sql.push(&format!(" AND {i}.param = ")).text_bind(param);
    sql.push(")");
}

/// Where a page of search results starts: the sort values and key of the last row shown.
#[derive(Debug, Clone, PartialEq)]
pub struct PageCursor {
    pub values: Vec<Option<Bind>>,
    pub key: i64,
}

impl PageCursor {
    /// An opaque, URL-safe token for the `next` link.
    pub fn encode(&self) -> String {
        use base64::Engine;
        let values: Vec<serde_json::Value> = self
            .values
            .iter()
            .map(|v| match v {
                None => serde_json::Value::Null,
                Some(Bind::Text(s)) => serde_json::json!({"s": s}),
                Some(Bind::Int(i)) => serde_json::json!({"i": i}),
                Some(Bind::Float(f)) => serde_json::json!({"f": f}),
            })
            .collect();
        let json = serde_json::json!([values, self.key]).to_string();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode(token: &str) -> Option<PageCursor> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()?;
        let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let values = json.get(0)?.as_array()?;
        let key = json.get(1)?.as_i64()?;
        let values = values
            .iter()
            .map(|v| {
                if v.is_null() {
                    Some(None)
                } else if let Some(s) = v.get("s").and_then(|s| s.as_str()) {
                    Some(Some(Bind::Text(s.to_string())))
                } else if let Some(i) = v.get("i").and_then(|i| i.as_i64()) {
                    Some(Some(Bind::Int(i)))
                } else {
                    v.get("f")
                        .and_then(|f| f.as_f64())
                        .map(|f| Some(Bind::Float(f)))
                }
            })
            .collect::<Option<Vec<_>>>()?;
        Some(PageCursor { values, key })
    }
}

/// The page query: current versions matching `search`, in the sort order then by key,
/// after `after`, at most `limit` rows. Sort values come back as columns `s0`, `s1`...
pub fn page_query(
    dialect: Dialect,
    search: &Search,
    after: Option<&PageCursor>,
    limit: usize,
) -> Sql {
    let mut sql = Sql::new(dialect);
    let rtype = if search.types.is_empty() {
        search.resource_type.as_str()
    } else {
        ""
    };
    // Keys first, bodies last: the filtering, sorting and LIMIT touch only index columns,
    // and only the page's bodies are read.
    sql.push("SELECT ").push(RESOURCE_COLUMNS);
    for n in 0..search.sort.len() {
        sql.push(&format!(", p.s{n}"));
    }
    sql.push(" FROM (SELECT * FROM (SELECT r.key");
    for (n, s) in search.sort.iter().enumerate() {
        sql.push(", ");
        sort_expression(&mut sql, &s.param, s.kind, s.descending, rtype);
        sql.push(&format!(" AS s{n}"));
    }
    sql.push(" FROM resource r WHERE ");
    // In key order, the cursor bounds every index scan, so a page costs what it returns.
    if search.sort.is_empty() {
        sql.after_key = after.map(|c| c.key);
    }
    where_clause(&mut sql, search);
    if let Some(key) = sql.after_key {
        sql.push(" AND r.key > ").int(key);
    }
    sql.after_key = None;
    sql.push(") q");
    if let Some(cursor) = after {
        sql.push(" WHERE ");
        keyset(&mut sql, search, cursor, 0);
    }
    let order = |alias: &str| {
        let mut o = String::from(" ORDER BY ");
        for (n, s) in search.sort.iter().enumerate() {
            o.push_str(&format!(
                "({alias}.s{n} IS NULL), {alias}.s{n}{}, ",
                if s.descending { " DESC" } else { "" }
            ));
        }
        o.push_str(&format!("{alias}.key"));
        o
    };
    sql.push(&order("q"));
    sql.push(" LIMIT ").int(limit as i64);
    sql.push(") p JOIN resource r ON r.key = p.key");
    sql.push(&order("p"));
    sql
}

/// Rows strictly after the cursor in the page order (NULL sort values last).
fn keyset(sql: &mut Sql, search: &Search, cursor: &PageCursor, n: usize) {
    if n == search.sort.len() || n >= cursor.values.len() {
        sql.push("q.key > ").int(cursor.key);
        return;
    }
    let col = format!("q.s{n}");
    match &cursor.values[n] {
        None => {
            sql.push(&format!("({col} IS NULL AND "));
            keyset(sql, search, cursor, n + 1);
            sql.push(")");
        }
        Some(value) => {
            let op = if search.sort[n].descending { "<" } else { ">" };
            sql.push(&format!("({col} IS NULL OR {col} {op} "))
                .bind(value.clone());
            sql.push(&format!(" OR ({col} = ")).bind(value.clone());
            sql.push(" AND ");
            keyset(sql, search, cursor, n + 1);
            sql.push("))");
        }
    }
}

/// The number of matches.
pub fn count_query(dialect: Dialect, search: &Search) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("SELECT count(*) FROM resource r WHERE ");
    where_clause(&mut sql, search);
    sql
}

/// The resources that `sources` (keys) refer to through `param` (`None`: any reference
/// parameter), optionally only of `target_type`: `_include`.
pub fn include_query(
    dialect: Dialect,
    source_type: Option<&str>,
    param: Option<&str>,
    target_type: Option<&str>,
    sources: &[i64],
) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("SELECT DISTINCT ").push(RESOURCE_COLUMNS);
    sql.push(" FROM search_reference i JOIN resource r ON r.type = i.target_type AND r.id = i.target_id WHERE ");
    sql.live("r");
    keys_in(&mut sql, "i.key", sources);
    if let Some(t) = source_type {
        sql.push(" AND i.type = ").text_bind(t);
    }
    if let Some(p) = param {
        sql.push(" AND i.param = ").text_bind(p);
    }
    if let Some(t) = target_type {
        sql.push(" AND i.target_type = ").text_bind(t);
    }
    sql
}

/// The resources of `source_type` that refer to one of `targets` (type, id) through
/// `param` (`None`: any): `_revinclude`.
pub fn revinclude_query(
    dialect: Dialect,
    source_type: Option<&str>,
    param: Option<&str>,
    targets: &[(String, String)],
) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("SELECT DISTINCT ").push(RESOURCE_COLUMNS);
    sql.push(" FROM search_reference i JOIN resource r ON r.key = i.key WHERE ");
    sql.live("r");
    if let Some(t) = source_type {
        sql.push(" AND i.type = ").text_bind(t);
    }
    if let Some(p) = param {
        sql.push(" AND i.param = ").text_bind(p);
    }
    sql.push(" AND (");
    for (n, (t, id)) in targets.iter().enumerate() {
        if n > 0 {
            sql.push(" OR ");
        }
        sql.push("(i.target_type = ").text_bind(t);
        sql.push(" AND i.target_id = ").text_bind(id);
        sql.push(")");
    }
    if targets.is_empty() {
        sql.push("1 = 0");
    }
    sql.push(")");
    sql
}

fn keys_in(sql: &mut Sql, column: &str, keys: &[i64]) {
    sql.push(&format!(" AND {column} IN ("));
    for (n, k) in keys.iter().enumerate() {
        if n > 0 {
            sql.push(", ");
        }
        sql.int(*k);
    }
    if keys.is_empty() {
        sql.push("NULL");
    }
    sql.push(")");
}

/// Whether at least `limit` current resources match `search` (a capped count).
pub fn at_least_query(dialect: Dialect, search: &Search, limit: usize) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("SELECT count(*) FROM (SELECT 1 FROM resource r WHERE ");
    where_clause(&mut sql, search);
    sql.push(" LIMIT ").int(limit as i64);
    sql.push(") x");
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::{query, registry::Registry};

    fn compile(dialect: Dialect, q: &[(&str, &str)]) -> Sql {
        let params: Vec<(String, String)> = q
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let search = query::parse(
            Registry::r4(),
            "http://h/fhir",
            "Observation",
            &params,
            false,
        )
        .unwrap();
        page_query(dialect, &search, None, 21)
    }

    #[test]
    fn placeholders_match_binds() {
        let q = [
            ("subject:Patient.name", "anna"),
            ("code", "http://loinc.org|8867-4,1234"),
            ("date", "ge2020"),
            ("_sort", "-date"),
        ];
        let pg = compile(Dialect::Postgres, &q);
        assert!(pg.text.contains(&format!("${}", pg.binds.len())));
        assert!(!pg.text.contains(&format!("${}", pg.binds.len() + 1)));
        let lite = compile(Dialect::Sqlite, &q);
        assert_eq!(lite.text.matches('?').count(), lite.binds.len());
        assert!(
            !lite.text.contains("anna"),
            "values are bound, never spliced"
        );
    }

    #[test]
    fn cursors_round_trip() {
        let c = PageCursor {
            values: vec![
                None,
                Some(Bind::Text("a b".into())),
                Some(Bind::Int(-5)),
                Some(Bind::Float(1.5)),
            ],
            key: 42,
        };
        assert_eq!(PageCursor::decode(&c.encode()), Some(c));
        assert_eq!(PageCursor::decode("garbage!"), None);
    }
}
