//! Writing search index rows: which table holds which parameter type, and the statements
//! that replace a resource's rows. Runs inside the write's transaction.

use super::search_sql::{Bind, Dialect, Sql};
use crate::search::index::{IndexRow, IndexValue};
use crate::search::registry::ParamType;

/// The index table of a parameter type.
pub fn table_of(kind: ParamType) -> &'static str {
    match kind {
        ParamType::String => "search_string",
        ParamType::Token => "search_token",
        ParamType::Date => "search_date",
        ParamType::Number => "search_number",
        ParamType::Quantity => "search_quantity",
        ParamType::Reference => "search_reference",
        ParamType::Composite => "search_composite",
        ParamType::Uri | ParamType::Special => "search_uri",
    }
}

pub const TABLES: [&str; 8] = [
    "search_composite",
    "search_string",
    "search_token",
    "search_date",
    "search_number",
    "search_quantity",
    "search_reference",
    "search_uri",
];

/// Rows per INSERT statement: well under PostgreSQL's 65,535 binds.
const CHUNK: usize = 500;

fn table_and_columns(value: &IndexValue) -> (&'static str, &'static str) {
    match value {
        IndexValue::String { .. } => ("search_string", "folded, exact"),
        IndexValue::Token { .. } => ("search_token", "system, code, text"),
        IndexValue::Date { .. } => ("search_date", "lo, hi"),
        IndexValue::Number { .. } => ("search_number", "value"),
        IndexValue::Quantity { .. } => ("search_quantity", "value, system, code, unit"),
        IndexValue::Reference { .. } => ("search_reference", "target_type, target_id, url"),
        IndexValue::Uri { .. } => ("search_uri", "value"),
        IndexValue::Composite(_) => (
            "search_composite",
            "c0_t, c0_x, c0_lo, c0_hi, c0_u, c1_t, c1_x, c1_lo, c1_hi, c1_u, \
             c2_t, c2_x, c2_lo, c2_hi, c2_u",
        ),
    }
}

/// The columns of one composite component: (t, x, lo, hi, u).
pub type ComponentColumns<'v> = (
    Option<&'v String>,
    Option<&'v String>,
    Option<f64>,
    Option<f64>,
    Option<&'v String>,
);

/// A composite component as (t, x, lo, hi, u): see `Cols::component` in search_sql.
fn component(sql: &mut Sql, value: Option<&IndexValue>) {
    let (t, x, lo, hi, u) = component_columns(value);
    opt(sql, &t.cloned());
    sql.push(", ");
    opt(sql, &x.cloned());
    sql.push(", ");
    float(sql, lo);
    sql.push(", ");
    float(sql, hi);
    sql.push(", ");
    opt(sql, &u.cloned());
}

/// The (t, x, lo, hi, u) columns of a composite component.
pub fn component_columns(value: Option<&IndexValue>) -> ComponentColumns<'_> {
    match value {
        None | Some(IndexValue::Composite(_)) => (None, None, None, None, None),
        Some(IndexValue::String { folded, exact }) => (Some(folded), Some(exact), None, None, None),
        Some(IndexValue::Token { system, code, text }) => {
            (code.as_ref(), system.as_ref(), None, None, text.as_ref())
        }
        Some(IndexValue::Date { lo, hi }) => (None, None, Some(*lo as f64), Some(*hi as f64), None),
        Some(IndexValue::Number { value }) => (None, None, Some(*value), None, None),
        Some(IndexValue::Quantity {
            value,
            system,
            code,
            unit,
        }) => (
            code.as_ref(),
            system.as_ref(),
            Some(*value),
            None,
            unit.as_ref(),
        ),
        Some(IndexValue::Reference {
            target_type,
            target_id,
            url,
        }) => (
            target_id.as_ref(),
            target_type.as_ref(),
            None,
            None,
            url.as_ref(),
        ),
        Some(IndexValue::Uri { value }) => (Some(value), None, None, None, None),
    }
}

fn float(sql: &mut Sql, v: Option<f64>) {
    match v {
        Some(f) => {
            sql.bind(Bind::Float(f));
        }
        None => {
            sql.push("NULL");
        }
    }
}

fn opt(sql: &mut Sql, v: &Option<String>) {
    match v {
        Some(s) => {
            sql.text_bind(s);
        }
        None => {
            sql.push("NULL");
        }
    }
}

fn values(sql: &mut Sql, value: &IndexValue) {
    match value {
        IndexValue::String { folded, exact } => {
            sql.text_bind(folded).push(", ").text_bind(exact);
        }
        IndexValue::Token { system, code, text } => {
            opt(sql, system);
            sql.push(", ");
            opt(sql, code);
            sql.push(", ");
            opt(sql, text);
        }
        IndexValue::Date { lo, hi } => {
            sql.int(*lo).push(", ").int(*hi);
        }
        IndexValue::Number { value } => {
            sql.bind(Bind::Float(*value));
        }
        IndexValue::Quantity {
            value,
            system,
            code,
            unit,
        } => {
            sql.bind(Bind::Float(*value)).push(", ");
            opt(sql, system);
            sql.push(", ");
            opt(sql, code);
            sql.push(", ");
            opt(sql, unit);
        }
        IndexValue::Reference {
            target_type,
            target_id,
            url,
        } => {
            opt(sql, target_type);
            sql.push(", ");
            opt(sql, target_id);
            sql.push(", ");
            opt(sql, url);
        }
        IndexValue::Uri { value } => {
            sql.text_bind(value);
        }
        IndexValue::Composite(parts) => {
            for n in 0..3 {
                if n > 0 {
                    sql.push(", ");
                }
                component(sql, parts.get(n));
            }
        }
    }
}

/// INSERT statements for `rows` of resource `key` of type `rtype`, one per table and chunk.
pub fn inserts(dialect: Dialect, key: i64, rtype: &str, rows: &[IndexRow]) -> Vec<Sql> {
    inserts_many(dialect, &[(key, rtype, rows)])
}

/// INSERT statements for the rows of several resources (key, type, rows): one per table and
/// chunk, whatever the number of resources.
pub fn inserts_many(dialect: Dialect, resources: &[(i64, &str, &[IndexRow])]) -> Vec<Sql> {
    let mut statements = Vec::new();
    for table in TABLES {
        let of_table: Vec<(i64, &str, &IndexRow)> = resources
            .iter()
            .flat_map(|(key, rtype, rows)| rows.iter().map(move |r| (*key, *rtype, r)))
            .filter(|(_, _, r)| table_and_columns(&r.value).0 == table)
            .collect();
        for chunk in of_table.chunks(CHUNK) {
            let columns = table_and_columns(&chunk[0].2.value).1;
            let mut sql = Sql::new(dialect);
            sql.push(&format!(
                "INSERT INTO {table} (key, type, param, {columns}) VALUES "
            ));
            for (n, (key, rtype, row)) in chunk.iter().enumerate() {
                if n > 0 {
                    sql.push(", ");
                }
                sql.push("(")
                    .int(*key)
                    .push(", ")
                    .text_bind(rtype)
                    .push(", ");
                sql.text_bind(&row.param).push(", ");
                values(&mut sql, &row.value);
                sql.push(")");
            }
            statements.push(sql);
        }
    }
    statements
}

/// Statements deleting every index row of resource `key`.
pub fn deletes(dialect: Dialect, key: i64) -> Vec<Sql> {
    match dialect {
        // One round trip on PostgreSQL.
        Dialect::Postgres => {
            let mut sql = Sql::new(dialect);
            sql.push("WITH ");
            for (n, table) in TABLES.iter().enumerate() {
                if n > 0 {
                    sql.push(", ");
                }
                sql.push(&format!("d{n} AS (DELETE FROM {table} WHERE key = $1)"));
            }
            sql.push(" SELECT 1");
            sql.binds.push(Bind::Int(key));
            vec![sql]
        }
        Dialect::Sqlite => TABLES
            .iter()
            .map(|table| {
                let mut sql = Sql::new(dialect);
                sql.push(&format!("DELETE FROM {table} WHERE key = "))
                    .int(key);
                sql
            })
            .collect(),
    }
}
