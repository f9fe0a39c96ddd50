//! PostgreSQL index inserts as `unnest` over array binds: one fixed statement per table,
//! prepared once per connection whatever the number of rows. (A `VALUES` list is a new
//! statement for every number and shape of rows: PostgreSQL parses and plans each, and the
//! connection's statement cache churns.)

use sqlx::PgConnection;

use super::db_error;
use super::index_write::component_columns;
use crate::error::Result;
use crate::search::index::{IndexRow, IndexValue};

type Text<'a> = Option<&'a str>;

#[derive(Default)]
struct Rows<'a, C> {
    key: Vec<i64>,
    rtype: Vec<&'a str>,
    param: Vec<&'a str>,
    columns: C,
}

impl<'a, C> Rows<'a, C> {
    fn row(&mut self, key: i64, rtype: &'a str, param: &'a str) -> &mut C {
        self.key.push(key);
        self.rtype.push(rtype);
        self.param.push(param);
        &mut self.columns
    }
}

#[derive(Default)]
struct Component<'a> {
    t: Vec<Text<'a>>,
    x: Vec<Text<'a>>,
    lo: Vec<Option<f64>>,
    hi: Vec<Option<f64>>,
    u: Vec<Text<'a>>,
}

/// value, system, code, unit.
type QuantityColumns<'a> = (Vec<f64>, Vec<Text<'a>>, Vec<Text<'a>>, Vec<Text<'a>>);

#[derive(Default)]
struct Tables<'a> {
    string: Rows<'a, (Vec<&'a str>, Vec<&'a str>)>,
    token: Rows<'a, (Vec<Text<'a>>, Vec<Text<'a>>, Vec<Text<'a>>)>,
    date: Rows<'a, (Vec<i64>, Vec<i64>)>,
    number: Rows<'a, Vec<f64>>,
    quantity: Rows<'a, QuantityColumns<'a>>,
    reference: Rows<'a, (Vec<Text<'a>>, Vec<Text<'a>>, Vec<Text<'a>>)>,
    uri: Rows<'a, Vec<&'a str>>,
    composite: Rows<'a, [Component<'a>; 3]>,
}

/// Inserts the index rows of several resources (key, type, rows).
pub(super) async fn insert_rows(
    conn: &mut PgConnection,
    resources: &[(i64, &str, &[IndexRow])],
) -> Result<()> {
    let mut t = Tables::default();
    for (key, rtype, rows) in resources {
        for row in rows.iter() {
            let (key, param) = (*key, row.param.as_str());
            match &row.value {
                IndexValue::String { folded, exact } => {
                    let c = t.string.row(key, rtype, param);
                    c.0.push(folded);
                    c.1.push(exact);
                }
                IndexValue::Token { system, code, text } => {
                    let c = t.token.row(key, rtype, param);
                    c.0.push(system.as_deref());
                    c.1.push(code.as_deref());
                    c.2.push(text.as_deref());
                }
                IndexValue::Date { lo, hi } => {
                    let c = t.date.row(key, rtype, param);
                    c.0.push(*lo);
                    c.1.push(*hi);
                }
                IndexValue::Number { value } => t.number.row(key, rtype, param).push(*value),
                IndexValue::Quantity {
                    value,
                    system,
                    code,
                    unit,
                } => {
                    let c = t.quantity.row(key, rtype, param);
                    c.0.push(*value);
                    c.1.push(system.as_deref());
                    c.2.push(code.as_deref());
                    c.3.push(unit.as_deref());
                }
                IndexValue::Reference {
                    target_type,
                    target_id,
                    url,
                } => {
                    let c = t.reference.row(key, rtype, param);
                    c.0.push(target_type.as_deref());
                    c.1.push(target_id.as_deref());
                    c.2.push(url.as_deref());
                }
                IndexValue::Uri { value } => t.uri.row(key, rtype, param).push(value),
                IndexValue::Composite(parts) => {
                    let c = t.composite.row(key, rtype, param);
                    for (n, component) in c.iter_mut().enumerate() {
                        let (ct, cx, lo, hi, u) = component_columns(parts.get(n));
                        component.t.push(ct.map(String::as_str));
                        component.x.push(cx.map(String::as_str));
                        component.lo.push(lo);
                        component.hi.push(hi);
                        component.u.push(u.map(String::as_str));
                    }
                }
            }
        }
    }
    macro_rules! insert {
        ($rows:expr, $sql:literal, |$q:ident, $c:ident| $bind:expr) => {
            if !$rows.key.is_empty() {
                let $c = &$rows.columns;
                let $q = sqlx::query($sql)
                    .bind(&$rows.key)
                    .bind(&$rows.rtype)
                    .bind(&$rows.param);
                $bind.execute(&mut *conn).await.map_err(db_error)?;
            }
        };
    }
    insert!(
        t.string,
        "INSERT INTO search_string (key, type, param, folded, exact) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])",
        |q, c| q.bind(&c.0).bind(&c.1)
    );
    insert!(t.token,
        "INSERT INTO search_token (key, type, param, system, code, text) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])",
        |q, c| q.bind(&c.0).bind(&c.1).bind(&c.2));
    insert!(
        t.date,
        "INSERT INTO search_date (key, type, param, lo, hi) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])",
        |q, c| q.bind(&c.0).bind(&c.1)
    );
    insert!(
        t.number,
        "INSERT INTO search_number (key, type, param, value) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::float8[])",
        |q, c| q.bind(c)
    );
    insert!(t.quantity,
        "INSERT INTO search_quantity (key, type, param, value, system, code, unit) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::float8[], $5::text[], $6::text[], $7::text[])",
        |q, c| q.bind(&c.0).bind(&c.1).bind(&c.2).bind(&c.3));
    insert!(t.reference,
        "INSERT INTO search_reference (key, type, param, target_type, target_id, url) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])",
        |q, c| q.bind(&c.0).bind(&c.1).bind(&c.2));
    insert!(
        t.uri,
        "INSERT INTO search_uri (key, type, param, value) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])",
        |q, c| q.bind(c)
    );
    insert!(t.composite,
        "INSERT INTO search_composite (key, type, param, \
           c0_t, c0_x, c0_lo, c0_hi, c0_u, c1_t, c1_x, c1_lo, c1_hi, c1_u, c2_t, c2_x, c2_lo, c2_hi, c2_u) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], \
           $4::text[], $5::text[], $6::float8[], $7::float8[], $8::text[], \
           $9::text[], $10::text[], $11::float8[], $12::float8[], $13::text[], \
           $14::text[], $15::text[], $16::float8[], $17::float8[], $18::text[])",
        |q, c| q
            .bind(&c[0].t).bind(&c[0].x).bind(&c[0].lo).bind(&c[0].hi).bind(&c[0].u)
            .bind(&c[1].t).bind(&c[1].x).bind(&c[1].lo).bind(&c[1].hi).bind(&c[1].u)
            .bind(&c[2].t).bind(&c[2].x).bind(&c[2].lo).bind(&c[2].hi).bind(&c[2].u));
    Ok(())
}
