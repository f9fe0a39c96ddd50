//! Parsing a search request into a typed AST. Every parameter is checked here: an unknown
//! parameter, a modifier that does not apply, or an illegal value is a 400 that names the
//! parameter, before any SQL is written. <https://hl7.org/fhir/R4/search.html>

use std::sync::Arc;

use super::index::{micros, Micros, IDENTIFIER_SUFFIX, OF_TYPE_SUFFIX};
use super::registry::{ParamType, Registry, SearchParam};
use super::text::fold;
use crate::fhir::datetime::{self, Kind};
use crate::fhir::resource_type::is_resource_type;

/// A search, ready for the store.
#[derive(Debug, Clone)]
pub struct Search {
    pub resource_type: String,
    /// A system-level search over these types (`resource_type` is then only the type the
    /// parameters were checked against).
    pub types: Vec<String>,
    /// All must hold (AND).
    pub filters: Vec<Filter>,
    pub sort: Vec<Sort>,
    pub count: usize,
    pub total: Total,
    pub summary: Summary,
    /// `_elements`: the top-level elements to keep.
    pub elements: Option<Vec<String>>,
    pub includes: Vec<Include>,
    pub revincludes: Vec<Include>,
    /// The opaque position of the page to return.
    pub cursor: Option<String>,
    /// Parameters ignored under `Prefer: handling=lenient`, to report.
    pub ignored: Vec<String>,
    /// The parameters as understood, to write the `self` and `next` links.
    pub canonical: Vec<(String, String)>,
}

/// One condition on a resource.
#[derive(Debug, Clone)]
pub enum Filter {
    /// `_id`: the logical id is one of these.
    Ids(Vec<String>),
    /// One of `values` matches the index rows of `param` (or, `negate`d, none does).
    Match {
        param: String,
        kind: ParamType,
        values: Vec<Predicate>,
        negate: bool,
    },
    /// `:missing`: the parameter has (false) or has no (true) value.
    Missing {
        param: String,
        kind: ParamType,
        missing: bool,
    },
    /// Chaining: a reference in `param` points to a resource of one of the types that
    /// satisfies that type's filter.
    Chain {
        param: String,
        targets: Vec<(String, Box<Filter>)>,
        /// Many resources satisfy the chained filters: check each candidate row on its own
        /// instead of collecting every match first (set by the store before it plans).
        dense: bool,
    },
    /// Reverse chaining (`_has`): some `source_type` resource refers to this one through
    /// `param` and satisfies `inner`.
    Has {
        source_type: String,
        param: String,
        inner: Box<Filter>,
    },
    /// Any of these holds (compartments).
    AnyOf(Vec<Filter>),
    /// All of these hold (a chained or `_has` filter narrowed to a compartment).
    AllOf(Vec<Filter>),
}

/// How a string value matches. <https://hl7.org/fhir/R4/search.html#string>
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMode {
    /// Folded value starts with the folded search value (the default).
    Prefix,
    Contains,
    Exact,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemMatch {
    /// `code`: any system.
    Any,
    /// `|code`: no system.
    Absent,
    /// `system|code` or `system|`.
    Is(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriMode {
    Exact,
    /// `:below`: the indexed uri starts with the value.
    Below,
    /// `:above`: the value starts with the indexed uri.
    Above,
}

/// The comparison prefixes of number, date and quantity.
/// <https://hl7.org/fhir/R4/search.html#prefix>
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

/// One value of a parameter, normalised like the index rows it is compared with.
#[derive(Debug, Clone)]
pub enum Predicate {
    String {
        mode: StringMode,
        value: String,
    },
    Token {
        system: SystemMatch,
        code: Option<String>,
    },
    /// `:text`: the folded display text starts with this.
    TokenText(String),
    /// The search value covers the instants [lo, hi).
    Date {
        prefix: Prefix,
        lo: Micros,
        hi: Micros,
    },
    /// `value` with its implicit precision range [lo, hi).
    Number {
        prefix: Prefix,
        value: f64,
        lo: f64,
        hi: f64,
    },
    Quantity {
        prefix: Prefix,
        value: f64,
        lo: f64,
        hi: f64,
        system: Option<String>,
        code: Option<String>,
    },
    Reference {
        target_type: Option<String>,
        id: Option<String>,
        url: Option<String>,
    },
    Uri {
        mode: UriMode,
        value: String,
    },
    /// All components match, in the same element (`code$value`).
    Composite(Vec<Predicate>),
    /// All of these hold on the same index row.
    All(Vec<Predicate>),
    /// The indexed date range starts after this instant: an implied bound that lets an
    /// index serve `ge`/`gt`/`eq` on short (at most a year long) date values.
    StartsAfter(Micros),
}

#[derive(Debug, Clone)]
pub struct Sort {
    /// A parameter code, or `_id` / `_lastUpdated`.
    pub param: String,
    pub kind: ParamType,
    pub descending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    None,
    Accurate,
}

/// `_summary`. <https://hl7.org/fhir/R4/search.html#summary>
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    False,
    True,
    Text,
    Data,
    Count,
}

/// `_include` / `_revinclude`: `source_type:param[:target_type]`, or every reference (`*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    pub source_type: String,
    /// `None` for `*`.
    pub param: Option<String>,
    pub target_type: Option<String>,
    pub iterate: bool,
}

pub const DEFAULT_COUNT: usize = 20;
pub const MAX_COUNT: usize = 1000;
/// How deep chains and `_has` may nest.
const MAX_DEPTH: usize = 4;

/// Why a parameter was refused: the parameter and the reason, for the OperationOutcome.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamError {
    pub param: String,
    pub message: String,
}

type Parsed<T> = Result<T, ParamError>;

fn err<T>(param: &str, message: impl Into<String>) -> Parsed<T> {
    Err(ParamError {
        param: param.to_string(),
        message: message.into(),
    })
}

/// Parses the query of `GET [base]/[type]?...`. `lenient` ignores unknown parameters
/// (recording them in `ignored`) instead of refusing them.
pub fn parse(
    registry: &Registry,
    base_url: &str,
    resource_type: &str,
    params: &[(String, String)],
    lenient: bool,
) -> Result<Search, ParamError> {
    let mut search = Search {
        resource_type: resource_type.to_string(),
        types: Vec::new(),
        filters: Vec::new(),
        sort: Vec::new(),
        count: DEFAULT_COUNT,
        total: Total::None,
        summary: Summary::False,
        elements: None,
        includes: Vec::new(),
        revincludes: Vec::new(),
        cursor: None,
        ignored: Vec::new(),
        canonical: Vec::new(),
    };
    for (key, value) in params {
        let (name, modifier) = match key.split_once(':') {
            Some((n, m)) => (n, Some(m)),
            None => (key.as_str(), None),
        };
        let kept = match name {
            "_count" => {
                search.count = match value.parse::<usize>() {
                    Ok(n) => n.min(MAX_COUNT),
                    Err(_) => return err(key, "must be a non-negative integer"),
                };
                true
            }
            "_cursor" => {
                search.cursor = Some(value.clone());
                false
            }
            "_sort" => {
                search.sort = parse_sort(registry, resource_type, value)?;
                true
            }
            "_total" => {
                search.total = match value.as_str() {
                    "none" => Total::None,
                    "estimate" | "accurate" => Total::Accurate,
                    _ => return err(key, "must be none, estimate or accurate"),
                };
                true
            }
            "_summary" => {
                search.summary = match value.as_str() {
                    "true" => Summary::True,
                    "false" => Summary::False,
                    "text" => Summary::Text,
                    "data" => Summary::Data,
                    "count" => Summary::Count,
                    _ => return err(key, "must be true, false, text, data or count"),
                };
                true
            }
            "_elements" => {
                let list: Vec<String> = value
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if list.iter().any(|e| e.contains('.')) {
                    return err(key, "only top-level element names are supported");
                }
                search.elements = Some(list);
                true
            }
            "_include" | "_revinclude" => {
                let iterate = match modifier {
                    None => false,
                    Some("iterate") | Some("recurse") => true,
                    Some(m) => return err(key, format!("unknown modifier ':{m}'")),
                };
                let include = parse_include(registry, key, value, iterate)?;
                if name == "_include" {
                    search.includes.push(include);
                } else {
                    search.revincludes.push(include);
                }
                true
            }
            "_contained" => {
                if value != "false" {
                    return err(key, "only _contained=false is supported");
                }
                true
            }
            _ => match parse_filter(registry, base_url, resource_type, key, value, 0) {
                Ok(filter) => {
                    search.filters.push(filter);
                    true
                }
                Err(e) if lenient && e.message.starts_with(UNKNOWN) => {
                    search.ignored.push(key.clone());
                    false
                }
                Err(e) => return Err(e),
            },
        };
        if kept {
            search.canonical.push((key.clone(), value.clone()));
        }
    }
    merge_date_ranges(registry, resource_type, &mut search.filters);
    Ok(search)
}

const UNKNOWN: &str = "unknown search parameter";

/// Parses one filter parameter `key=value` of `resource_type` (recursively for chains).
pub fn parse_filter(
    registry: &Registry,
    base_url: &str,
    resource_type: &str,
    key: &str,
    value: &str,
    depth: usize,
) -> Parsed<Filter> {
    if depth > MAX_DEPTH {
        return err(key, "chains and _has nest too deep");
    }
    if let Some(rest) = key.strip_prefix("_has:") {
        return parse_has(registry, base_url, resource_type, key, rest, value, depth);
    }
    // Chaining: `param[:Type].rest`.
    if let Some((head, rest)) = key.split_once('.') {
        let (code, type_modifier) = match head.split_once(':') {
            Some((c, t)) => (c, Some(t)),
            None => (head, None),
        };
        let param = lookup(registry, resource_type, code, key)?;
        if param.kind != ParamType::Reference {
            return err(
                key,
                format!("'{code}' is not a reference parameter and cannot be chained"),
            );
        }
        let types: Vec<String> = match type_modifier {
            Some(t) if param.targets.iter().any(|x| x == t) => vec![t.to_string()],
            Some(t) => return err(key, format!("'{code}' cannot refer to a {t}")),
            None => param.targets.clone(),
        };
        let mut targets = Vec::new();
        let mut last_error = None;
        for t in types {
            match parse_filter(registry, base_url, &t, rest, value, depth + 1) {
                Ok(f) => targets.push((t, Box::new(f))),
                Err(e) => last_error = Some(e),
            }
        }
        if targets.is_empty() {
            return Err(last_error.unwrap_or(ParamError {
                param: key.to_string(),
                message: "the chain has no target type".into(),
            }));
        }
        return Ok(Filter::Chain {
            param: code.to_string(),
            targets,
            dense: false,
        });
    }
    let (code, modifier) = match key.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (key, None),
    };
    if code == "_id" {
        return match modifier {
            None => Ok(Filter::Ids(
                split_or(value).into_iter().map(|s| unescape(&s)).collect(),
            )),
            Some("not") => Ok(Filter::Match {
                param: "_id".into(),
                kind: ParamType::Token,
                values: token_values(key, value)?,
                negate: true,
            }),
            Some(m) => err(key, format!("modifier ':{m}' does not apply to _id")),
        };
    }
    let param = lookup(registry, resource_type, code, key)?;
    if !param.is_indexed() {
        return err(
            key,
            format!(
                "search parameter '{code}' ({}) is not supported yet",
                param.kind.code()
            ),
        );
    }
    if modifier == Some("missing") {
        return match value {
            "true" | "false" => Ok(Filter::Missing {
                param: code.into(),
                kind: param.kind,
                missing: value == "true",
            }),
            _ => err(key, ":missing must be true or false"),
        };
    }
    if value.is_empty() {
        return err(key, "has no value");
    }
    let kind = param.kind;
    let mut negate = false;
    let values = match (kind, modifier) {
        (ParamType::String, None) => string_values(value, StringMode::Prefix),
        (ParamType::String, Some("contains")) => string_values(value, StringMode::Contains),
        (ParamType::String, Some("exact")) => string_values(value, StringMode::Exact),
        (ParamType::Token, None) => token_values(key, value)?,
        (ParamType::Token, Some("not")) => {
            negate = true;
            token_values(key, value)?
        }
        (ParamType::Token, Some("of-type")) => {
            let values = split_or(value)
                .iter()
                .map(|v| match split_unescaped(v, '|').as_slice() {
                    [system, type_code, id] if !type_code.is_empty() && !id.is_empty() => {
                        Ok(Predicate::Token {
                            system: if system.is_empty() {
                                SystemMatch::Any
                            } else {
                                SystemMatch::Is(unescape(system))
                            },
                            code: Some(format!("{}|{}", unescape(type_code), unescape(id))),
                        })
                    }
                    _ => err(key, ":of-type takes type-system|type-code|value"),
                })
                .collect::<Parsed<Vec<_>>>()?;
            return Ok(Filter::Match {
                param: format!("{code}{OF_TYPE_SUFFIX}"),
                kind: ParamType::Token,
                values,
                negate: false,
            });
        }
        (ParamType::Token, Some("text")) => split_or(value)
            .iter()
            .map(|v| Predicate::TokenText(fold(&unescape(v))))
            .collect(),
        (ParamType::Date, None) => split_or(value)
            .iter()
            .map(|v| {
                let p = date_value(key, v)?;
                Ok(if param.short_dates {
                    with_start_bound(p)
                } else {
                    p
                })
            })
            .collect::<Parsed<_>>()?,
        (ParamType::Number, None) => split_or(value)
            .iter()
            .map(|v| number_value(key, v))
            .collect::<Parsed<_>>()?,
        (ParamType::Quantity, None) => split_or(value)
            .iter()
            .map(|v| quantity_value(key, v))
            .collect::<Parsed<_>>()?,
        (ParamType::Composite, None) => split_or(value)
            .iter()
            .map(|v| composite_value(key, param, v, base_url))
            .collect::<Parsed<_>>()?,
        (ParamType::Uri, None) => uri_values(value, UriMode::Exact),
        (ParamType::Uri, Some("below")) => uri_values(value, UriMode::Below),
        (ParamType::Uri, Some("above")) => uri_values(value, UriMode::Above),
        (ParamType::Reference, Some("identifier")) => {
            return Ok(Filter::Match {
                param: format!("{code}{IDENTIFIER_SUFFIX}"),
                kind: ParamType::Token,
                values: token_values(key, value)?,
                negate: false,
            })
        }
        (ParamType::Reference, None) => split_or(value)
            .iter()
            .map(|v| reference_value(key, param, None, v, base_url))
            .collect::<Parsed<_>>()?,
        (ParamType::Reference, Some(t)) if is_resource_type(t) => {
            if !param.targets.iter().any(|x| x == t) {
                return err(key, format!("'{code}' cannot refer to a {t}"));
            }
            split_or(value)
                .iter()
                .map(|v| reference_value(key, param, Some(t), v, base_url))
                .collect::<Parsed<_>>()?
        }
        (_, Some(m)) => {
            return err(
                key,
                format!(
                    "modifier ':{m}' is not supported on {} parameters",
                    kind.code()
                ),
            )
        }
        (_, None) => return err(key, "this parameter type is not supported"),
    };
    Ok(Filter::Match {
        param: code.to_string(),
        kind,
        values,
        negate,
    })
}

fn lookup<'r>(
    registry: &'r Registry,
    resource_type: &str,
    code: &str,
    key: &str,
) -> Parsed<&'r Arc<SearchParam>> {
    match registry.get(resource_type, code) {
        Some(p) => Ok(p),
        None => err(key, format!("{UNKNOWN} '{code}' for {resource_type}")),
    }
}

/// `_has:Source:param:rest=value`. <https://hl7.org/fhir/R4/search.html#has>
fn parse_has(
    registry: &Registry,
    base_url: &str,
    resource_type: &str,
    key: &str,
    rest: &str,
    value: &str,
    depth: usize,
) -> Parsed<Filter> {
    let mut parts = rest.splitn(3, ':');
    let (Some(source), Some(code), Some(inner_key)) = (parts.next(), parts.next(), parts.next())
    else {
        return err(
            key,
            "_has must look like _has:Type:reference-param:param=value",
        );
    };
    if !is_resource_type(source) {
        return err(key, format!("'{source}' is not a resource type"));
    }
    let param = lookup(registry, source, code, key)?;
    if param.kind != ParamType::Reference {
        return err(
            key,
            format!("'{code}' of {source} is not a reference parameter"),
        );
    }
    if !param.targets.is_empty() && !param.targets.iter().any(|t| t == resource_type) {
        return err(
            key,
            format!("'{code}' of {source} cannot refer to a {resource_type}"),
        );
    }
    let inner = parse_filter(registry, base_url, source, inner_key, value, depth + 1)?;
    Ok(Filter::Has {
        source_type: source.to_string(),
        param: code.to_string(),
        inner: Box::new(inner),
    })
}

/// Splits a value on the commas that are not escaped (`\,`). The pieces keep their escapes.
pub fn split_or(value: &str) -> Vec<String> {
    split_unescaped(value, ',')
}

fn split_unescaped(value: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            current.push(c);
            if let Some(n) = chars.next() {
                current.push(n);
            }
        } else if c == sep {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts
}

/// Removes the search escapes `\,` `\$` `\|` `\\`. <https://hl7.org/fhir/R4/search.html#escaping>
pub fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) => out.push(n),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn string_values(value: &str, mode: StringMode) -> Vec<Predicate> {
    split_or(value)
        .iter()
        .map(|v| {
            let v = unescape(v);
            Predicate::String {
                mode,
                value: if mode == StringMode::Exact {
                    v
                } else {
                    fold(&v)
                },
            }
        })
        .collect()
}

fn uri_values(value: &str, mode: UriMode) -> Vec<Predicate> {
    split_or(value)
        .iter()
        .map(|v| Predicate::Uri {
            mode,
            value: unescape(v),
        })
        .collect()
}

fn token_values(key: &str, value: &str) -> Parsed<Vec<Predicate>> {
    split_or(value)
        .iter()
        .map(|v| {
            let parts = split_unescaped(v, '|');
            let token = match parts.as_slice() {
                [code] => Predicate::Token {
                    system: SystemMatch::Any,
                    code: Some(unescape(code)),
                },
                [system, code] => Predicate::Token {
                    system: if system.is_empty() {
                        SystemMatch::Absent
                    } else {
                        SystemMatch::Is(unescape(system))
                    },
                    code: (!code.is_empty()).then(|| unescape(code)),
                },
                _ => return err(key, format!("'{v}' has more than one unescaped '|'")),
            };
            match &token {
                Predicate::Token {
                    system: SystemMatch::Absent,
                    code: None,
                } => err(key, "a token needs a code or a system"),
                Predicate::Token {
                    system: SystemMatch::Any,
                    code: Some(c),
                } if c.is_empty() => err(key, "a token needs a code or a system"),
                _ => Ok(token),
            }
        })
        .collect()
}

/// Splits the comparison prefix off a number, date or quantity value.
fn prefix_of(value: &str) -> (Prefix, &str) {
    let table = [
        ("eq", Prefix::Eq),
        ("ne", Prefix::Ne),
        ("gt", Prefix::Gt),
        ("lt", Prefix::Lt),
        ("ge", Prefix::Ge),
        ("le", Prefix::Le),
        ("sa", Prefix::Sa),
        ("eb", Prefix::Eb),
        ("ap", Prefix::Ap),
    ];
    for (text, prefix) in table {
        if let Some(rest) = value.strip_prefix(text) {
            return (prefix, rest);
        }
    }
    (Prefix::Eq, value)
}

/// The longest range a date value can stand for: a year (`2024`), plus a day for leap years
/// and zones.
const LONGEST_DATE: Micros = 367 * 86_400 * 1_000_000;

/// Adds the start bound that `eq`, `gt`, `ge` and `sa` imply on short date values.
fn with_start_bound(p: Predicate) -> Predicate {
    match p {
        Predicate::Date {
            prefix: Prefix::Eq | Prefix::Gt | Prefix::Ge | Prefix::Sa,
            lo,
            ..
        } => Predicate::All(vec![
            p,
            Predicate::StartsAfter(lo.saturating_sub(LONGEST_DATE)),
        ]),
        other => other,
    }
}

/// Date filters of one single-valued parameter joined by AND (`ge2020&lt2021`) test one row
/// together, so that an index sees both bounds.
fn merge_date_ranges(registry: &Registry, resource_type: &str, filters: &mut Vec<Filter>) {
    let mut merged: Vec<Filter> = Vec::new();
    for f in filters.drain(..) {
        if let Filter::Match {
            param,
            kind: ParamType::Date,
            values,
            negate: false,
        } = &f
        {
            let single = registry
                .get(resource_type, param)
                .is_some_and(|p| p.single_valued);
            if single && values.len() == 1 {
                let existing = merged.iter_mut().find(|m| {
                    matches!(m, Filter::Match { param: p, kind: ParamType::Date, values: v, negate: false }
                        if p == param && v.len() == 1)
                });
                if let Some(Filter::Match { values: v, .. }) = existing {
                    let first = v.pop().expect("one value");
                    let mut all = match first {
                        Predicate::All(ps) => ps,
                        other => vec![other],
                    };
                    match values[0].clone() {
                        Predicate::All(ps) => all.extend(ps),
                        other => all.push(other),
                    }
                    v.push(Predicate::All(all));
                    continue;
                }
            }
        }
        merged.push(f);
    }
    *filters = merged;
}

/// A date search value: a date or dateTime of any precision (seconds may be left out).
fn date_value(key: &str, raw: &str) -> Parsed<Predicate> {
    let (prefix, text) = prefix_of(raw);
    let range = datetime::parse(text, Kind::DateTime).or_else(|| {
        // `2024-01-02T10:00Z`: minutes precision is common in search values.
        let (time_part, zone) = split_zone(text)?;
        if time_part.len() == 16 && time_part.as_bytes().get(10) == Some(&b'T') {
            let with_seconds = format!("{time_part}:00{zone}");
            let r = datetime::parse(&with_seconds, Kind::DateTime)?;
            Some(datetime::Range {
                start: r.start,
                end: r.start + chrono::Duration::minutes(1),
            })
        } else {
            None
        }
    });
    match range {
        Some(r) => Ok(Predicate::Date {
            prefix,
            lo: micros(r.start),
            hi: micros(r.end),
        }),
        None => err(
            key,
            format!(
                "'{raw}' is not a date search value (such as ge2024-01-31 or 2024-01-31T10:00:00Z)"
            ),
        ),
    }
}

fn split_zone(text: &str) -> Option<(&str, &str)> {
    if let Some(t) = text.strip_suffix('Z') {
        return Some((t, "Z"));
    }
    let at = text.len().checked_sub(6)?;
    let zone = text.get(at..)?;
    if (zone.starts_with('+') || zone.starts_with('-')) && zone.as_bytes()[3] == b':' {
        Some((&text[..at], zone))
    } else {
        None
    }
}

/// A decimal and the half-width of its implicit precision: `100` is [99.5, 100.5),
/// `1.50` is [1.495, 1.505). <https://hl7.org/fhir/R4/search.html#number>
pub fn decimal_with_precision(text: &str) -> Option<(f64, f64)> {
    let value: f64 = text.parse().ok()?;
    if !value.is_finite()
        || !text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
    {
        return None;
    }
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let decimals = mantissa.split_once('.').map_or(0, |(_, f)| f.len() as i32);
    let half = 0.5 * 10f64.powi(exponent - decimals);
    Some((value, half))
}

fn number_value(key: &str, raw: &str) -> Parsed<Predicate> {
    let (prefix, text) = prefix_of(raw);
    match decimal_with_precision(text) {
        Some((value, half)) => Ok(Predicate::Number {
            prefix,
            value,
            lo: value - half,
            hi: value + half,
        }),
        None => err(key, format!("'{raw}' is not a number search value")),
    }
}

/// `[prefix]number|system|code`, or `number||code`, or `number`.
fn quantity_value(key: &str, raw: &str) -> Parsed<Predicate> {
    let parts = split_unescaped(raw, '|');
    let (prefix, text) = prefix_of(&parts[0]);
    let Some((value, half)) = decimal_with_precision(text) else {
        return err(key, format!("'{raw}' is not a quantity search value"));
    };
    let (system, code) = match parts.len() {
        1 => (None, None),
        3 => (
            Some(unescape(&parts[1])).filter(|s| !s.is_empty()),
            Some(unescape(&parts[2])).filter(|s| !s.is_empty()),
        ),
        _ => {
            return err(
                key,
                "a quantity is number, number|system|code or number||code",
            )
        }
    };
    Ok(Predicate::Quantity {
        prefix,
        value,
        lo: value - half,
        hi: value + half,
        system,
        code,
    })
}

/// `a$b[$c]`: one value per component, each parsed as its component's type.
/// <https://hl7.org/fhir/R4/search.html#composite>
fn composite_value(key: &str, param: &SearchParam, raw: &str, base_url: &str) -> Parsed<Predicate> {
    let parts = split_unescaped(raw, '$');
    if parts.len() != param.components.len() {
        return err(
            key,
            format!(
                "'{raw}' needs {} values separated by '$'",
                param.components.len()
            ),
        );
    }
    let mut predicates = Vec::new();
    for (part, component) in parts.iter().zip(&param.components) {
        let one = match component.kind {
            ParamType::String => string_values(part, StringMode::Prefix).pop(),
            ParamType::Token => token_values(key, part)?.pop(),
            ParamType::Date => Some(date_value(key, part)?),
            ParamType::Number => Some(number_value(key, part)?),
            ParamType::Quantity => Some(quantity_value(key, part)?),
            ParamType::Uri => uri_values(part, UriMode::Exact).pop(),
            ParamType::Reference => Some(reference_value(key, param, None, part, base_url)?),
            ParamType::Composite | ParamType::Special => None,
        };
        match one {
            Some(p) => predicates.push(p),
            None => return err(key, format!("'{part}' is not a value for this component")),
        }
    }
    Ok(Predicate::Composite(predicates))
}

/// `Type/id`, `id` (with `:Type` or a single target), or an absolute URL.
fn reference_value(
    key: &str,
    param: &SearchParam,
    type_modifier: Option<&str>,
    raw: &str,
    base_url: &str,
) -> Parsed<Predicate> {
    let raw = unescape(raw);
    // An absolute URL on this server is the local reference it names.
    let raw = match raw
        .strip_prefix(base_url.trim_end_matches('/'))
        .and_then(|rest| rest.strip_prefix('/'))
    {
        Some(local) if !base_url.is_empty() => local.to_string(),
        _ => raw,
    };
    if raw.contains("://") || raw.starts_with("urn:") {
        return Ok(Predicate::Reference {
            target_type: None,
            id: None,
            url: Some(raw.split('|').next().unwrap_or(&raw).to_string()),
        });
    }
    let mut segments = raw.split('/');
    let (target_type, id) = match (segments.next(), segments.next(), segments.next()) {
        (Some(t), Some(id), None) if is_resource_type(t) => (Some(t.to_string()), id.to_string()),
        (Some(t), Some(id), Some("_history")) if is_resource_type(t) => {
            (Some(t.to_string()), id.to_string())
        }
        (Some(id), None, None) => (type_modifier.map(str::to_string), id.to_string()),
        _ => {
            return err(
                key,
                format!("'{raw}' is not a reference (Type/id, id or a URL)"),
            )
        }
    };
    if let (Some(t), Some(m)) = (&target_type, type_modifier) {
        if t != m {
            return err(key, format!("'{raw}' is not a {m}"));
        }
    }
    if let Some(t) = &target_type {
        if !param.targets.is_empty() && !param.targets.iter().any(|x| x == t) {
            return err(key, format!("'{}' cannot refer to a {t}", param.code));
        }
    }
    if !crate::fhir::id::is_valid_id(&id) {
        return err(key, format!("'{id}' is not a valid id"));
    }
    Ok(Predicate::Reference {
        target_type,
        id: Some(id),
        url: None,
    })
}

fn parse_sort(registry: &Registry, resource_type: &str, value: &str) -> Parsed<Vec<Sort>> {
    let mut keys = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (descending, code) = match item.strip_prefix('-') {
            Some(c) => (true, c),
            None => (false, item),
        };
        let kind = match code {
            "_id" => ParamType::Token,
            _ => {
                let param = lookup(registry, resource_type, code, "_sort")?;
                if !param.is_indexed() || param.kind == ParamType::Composite {
                    return err("_sort", format!("cannot sort by '{code}'"));
                }
                param.kind
            }
        };
        keys.push(Sort {
            param: code.to_string(),
            kind,
            descending,
        });
    }
    Ok(keys)
}

fn parse_include(registry: &Registry, key: &str, value: &str, iterate: bool) -> Parsed<Include> {
    if value == "*" {
        return Ok(Include {
            source_type: "*".into(),
            param: None,
            target_type: None,
            iterate,
        });
    }
    let parts: Vec<&str> = value.split(':').collect();
    let (source, code, target) = match parts.as_slice() {
        [s, c] => (*s, *c, None),
        [s, c, t] => (*s, *c, Some(*t)),
        _ => return err(key, "must look like Type:param or Type:param:TargetType"),
    };
    if !is_resource_type(source) {
        return err(key, format!("'{source}' is not a resource type"));
    }
    let param = if code == "*" {
        None
    } else {
        let p = lookup(registry, source, code, key)?;
        if p.kind != ParamType::Reference {
            return err(
                key,
                format!("'{code}' of {source} is not a reference parameter"),
            );
        }
        Some(code.to_string())
    };
    if let Some(t) = target {
        if !is_resource_type(t) {
            return err(key, format!("'{t}' is not a resource type"));
        }
    }
    Ok(Include {
        source_type: source.to_string(),
        param,
        target_type: target.map(str::to_string),
        iterate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(t: &str, k: &str, v: &str) -> Parsed<Filter> {
        parse_filter(Registry::r4(), "http://h/fhir", t, k, v, 0)
    }

    #[test]
    fn splits_on_unescaped_commas_only() {
        assert_eq!(split_or(r"a,b\,c,d"), vec!["a", r"b\,c", "d"]);
        assert_eq!(unescape(r"b\,c\\d\|e"), r"b,c\d|e");
    }

    #[test]
    fn decimals_carry_their_precision() {
        assert_eq!(decimal_with_precision("100"), Some((100.0, 0.5)));
        let (v, h) = decimal_with_precision("1.50").unwrap();
        assert_eq!(v, 1.5);
        assert!((h - 0.005).abs() < 1e-12);
        let (v, h) = decimal_with_precision("1e2").unwrap();
        assert_eq!((v, h), (100.0, 50.0));
        assert!(decimal_with_precision("abc").is_none());
        assert!(decimal_with_precision("NaN").is_none());
    }

    #[test]
    fn tokens_parse_system_and_code() {
        match parse_one("Patient", "identifier", "urn:mrn|42,|x,sys|").unwrap() {
            Filter::Match { values, .. } => {
                assert!(
                    matches!(&values[0], Predicate::Token { system: SystemMatch::Is(s), code: Some(c) } if s == "urn:mrn" && c == "42")
                );
                assert!(
                    matches!(&values[1], Predicate::Token { system: SystemMatch::Absent, code: Some(c) } if c == "x")
                );
                assert!(matches!(
                    &values[2],
                    Predicate::Token {
                        system: SystemMatch::Is(_),
                        code: None
                    }
                ));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dates_take_prefixes_and_precision() {
        match parse_one("Patient", "birthdate", "ge1980-05").unwrap() {
            Filter::Match { values, .. } => match &values[0] {
                // A birth date is at most a year long: `ge` implies where its range starts.
                Predicate::All(parts) => {
                    assert!(
                        matches!(parts[0], Predicate::Date { prefix: Prefix::Ge, lo, hi } if hi > lo)
                    );
                    assert!(matches!(parts[1], Predicate::StartsAfter(_)));
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        // Two bounds on a single-valued date test one row together.
        let params = vec![
            ("birthdate".to_string(), "ge1980".to_string()),
            ("birthdate".to_string(), "lt1990".to_string()),
        ];
        let s = parse(Registry::r4(), "http://h/fhir", "Patient", &params, false).unwrap();
        assert_eq!(s.filters.len(), 1, "{:?}", s.filters);
        // A Period-valued date keeps one lookup per bound.
        let params = vec![
            ("date".to_string(), "ge1980".to_string()),
            ("date".to_string(), "lt1990".to_string()),
        ];
        let s = parse(Registry::r4(), "http://h/fhir", "Encounter", &params, false).unwrap();
        assert_eq!(s.filters.len(), 2);
        assert!(parse_one("Patient", "birthdate", "2024-13-01").is_err());
        assert!(parse_one("Observation", "date", "2024-01-02T10:00Z").is_ok());
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = parse_one("Patient", "nonsense", "x").unwrap_err();
        assert_eq!(e.param, "nonsense");
        assert!(parse_one("Patient", "name:below", "x").is_err());
        assert!(parse_one("Patient", "gender:exact", "x").is_err());
        assert!(parse_one("Patient", "birthdate", "yesterday").is_err());
        assert!(parse_one("Observation", "subject", "Practitioner/1").is_err());
    }

    #[test]
    fn chains_and_has_resolve_their_types() {
        match parse_one("Observation", "subject:Patient.name", "anna").unwrap() {
            Filter::Chain { param, targets, .. } => {
                assert_eq!(param, "subject");
                assert_eq!(targets.len(), 1);
                assert_eq!(targets[0].0, "Patient");
            }
            other => panic!("{other:?}"),
        }
        match parse_one("Patient", "_has:Observation:patient:code", "1234-5").unwrap() {
            Filter::Has {
                source_type, param, ..
            } => {
                assert_eq!(source_type, "Observation");
                assert_eq!(param, "patient");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_one("Patient", "_has:Observation:code:code", "x").is_err());
    }

    #[test]
    fn result_parameters() {
        let params = vec![
            ("_count".to_string(), "5".to_string()),
            ("_sort".to_string(), "-birthdate,name".to_string()),
            (
                "_include".to_string(),
                "Patient:general-practitioner".to_string(),
            ),
            ("_total".to_string(), "accurate".to_string()),
        ];
        let s = parse(Registry::r4(), "http://h/fhir", "Patient", &params, false).unwrap();
        assert_eq!(s.count, 5);
        assert_eq!(s.sort.len(), 2);
        assert!(s.sort[0].descending);
        assert_eq!(s.includes.len(), 1);
        assert_eq!(s.total, Total::Accurate);
        let bad = vec![("foo".to_string(), "1".to_string())];
        assert!(parse(Registry::r4(), "http://h/fhir", "Patient", &bad, false).is_err());
        let lenient = parse(Registry::r4(), "http://h/fhir", "Patient", &bad, true).unwrap();
        assert_eq!(lenient.ignored, vec!["foo"]);
    }
}
