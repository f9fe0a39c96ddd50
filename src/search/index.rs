//! Extraction of search index values from a resource, at write time.
//! <https://hl7.org/fhir/R4/search.html#ptypes>
//!
//! Each indexed parameter's expression selects elements; each element becomes zero or more
//! [`IndexRow`]s, normalised for the comparisons search makes: folded strings, token
//! system/code pairs, dates as the instant range their precision implies, references as the
//! (type, id) they point to.

use serde_json::Value;

use super::fhirpath::Node;
use super::registry::{ParamType, Registry, SearchParam};
use super::text::fold;
use crate::fhir::datetime::{self, Kind};

/// Microseconds since the Unix epoch: how dates are indexed in both databases.
pub type Micros = i64;

/// The lowest and highest instants an open-ended Period bound stands for.
pub const MIN_MICROS: Micros = i64::MIN / 2;
pub const MAX_MICROS: Micros = i64::MAX / 2;

/// One normalised value of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    /// `folded` for the default and `:contains` matches; `exact` for `:exact`.
    String {
        folded: String,
        exact: String,
    },
    /// `text` (folded display or CodeableConcept.text) serves `:text`.
    Token {
        system: Option<String>,
        code: Option<String>,
        text: Option<String>,
    },
    /// The instants [lo, hi) the value covers.
    Date {
        lo: Micros,
        hi: Micros,
    },
    Number {
        value: f64,
    },
    Quantity {
        value: f64,
        system: Option<String>,
        code: Option<String>,
        unit: Option<String>,
    },
    /// A local reference as (type, id); anything else (absolute elsewhere, canonical, urn)
    /// as its url.
    Reference {
        target_type: Option<String>,
        target_id: Option<String>,
        url: Option<String>,
    },
    Uri {
        value: String,
    },
    /// One value per component, taken from the same element.
    Composite(Vec<IndexValue>),
}

/// A value of the parameter `param` (its code).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow {
    pub param: String,
    pub value: IndexValue,
}

/// The suffix under which a Reference's `identifier` is indexed as a token, for
/// `[param]:identifier=system|value`.
pub const IDENTIFIER_SUFFIX: &str = ":identifier";

/// The suffix under which an Identifier's type and value are indexed for
/// `[param]:of-type=type-system|type-code|value`: the row's system is the type's system and
/// its code is `type-code|value`. <https://hl7.org/fhir/R4/search.html#token>
pub const OF_TYPE_SUFFIX: &str = ":of-type";

fn identifier_types(code: &str, identifier: &Value, rows: &mut Vec<IndexRow>) {
    let Some(value) = str_of(identifier, "value") else {
        return;
    };
    let codings = identifier
        .get("type")
        .and_then(|t| t.get("coding"))
        .and_then(Value::as_array);
    for coding in codings.into_iter().flatten() {
        if let Some(type_code) = str_of(coding, "code") {
            push(
                rows,
                &format!("{code}{OF_TYPE_SUFFIX}"),
                IndexValue::Token {
                    system: str_of(coding, "system").map(str::to_string),
                    code: Some(format!("{type_code}|{value}")),
                    text: None,
                },
            );
        }
    }
}

/// Every index row of `resource`. `base_url` recognises absolute references to this server.
pub fn extract(registry: &Registry, resource: &Value, base_url: &str) -> Vec<IndexRow> {
    extract_some(registry, resource, base_url, None)
}

/// The index rows of `resource` for the parameters named in `codes` only.
pub fn extract_only(
    registry: &Registry,
    resource: &Value,
    base_url: &str,
    codes: &[String],
) -> Vec<IndexRow> {
    extract_some(registry, resource, base_url, Some(codes))
}

fn extract_some(
    registry: &Registry,
    resource: &Value,
    base_url: &str,
    codes: Option<&[String]>,
) -> Vec<IndexRow> {
    let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for param in registry.params(resource_type) {
        if codes.is_some_and(|c| !c.contains(&param.code)) {
            continue;
        }
        if !param.is_indexed() {
            continue;
        }
        let Some(expression) = &param.expression else {
            continue;
        };
        for node in expression.evaluate(resource) {
            if param.kind == ParamType::Composite {
                composites(param, resource, node, base_url, &mut rows);
            } else {
                values_of(&param.code, param.kind, &node, base_url, &mut rows);
            }
        }
    }
    rows.dedup();
    rows
}

fn push(rows: &mut Vec<IndexRow>, param: &str, value: IndexValue) {
    let row = IndexRow {
        param: param.to_string(),
        value,
    };
    if !rows.contains(&row) {
        rows.push(row);
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The most value combinations one composite element may produce.
const MAX_COMBINATIONS: usize = 64;

/// The rows of a composite parameter for one element: every combination of its components'
/// values (e.g. each coding of `code` with the `valueQuantity`).
fn composites<'a>(
    param: &SearchParam,
    resource: &'a Value,
    node: Node<'a>,
    base_url: &str,
    rows: &mut Vec<IndexRow>,
) {
    let mut combos: Vec<Vec<IndexValue>> = vec![Vec::new()];
    for component in &param.components {
        let mut values = Vec::new();
        for n in component.expression.evaluate_at(resource, node) {
            let mut tmp = Vec::new();
            values_of("", component.kind, &n, base_url, &mut tmp);
            values.extend(
                tmp.into_iter()
                    .filter(|r| r.param.is_empty())
                    .map(|r| r.value),
            );
        }
        if values.is_empty() {
            return;
        }
        combos = combos
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push(v.clone());
                    c
                })
            })
            .take(MAX_COMBINATIONS)
            .collect();
    }
    for combo in combos {
        push(rows, &param.code, IndexValue::Composite(combo));
    }
}

fn values_of(
    code: &str,
    kind: ParamType,
    node: &Node<'_>,
    base_url: &str,
    rows: &mut Vec<IndexRow>,
) {
    let v = node.value;
    match kind {
        ParamType::String => strings(v, &mut |s| {
            push(
                rows,
                code,
                IndexValue::String {
                    folded: fold(s),
                    exact: s.to_string(),
                },
            )
        }),
        ParamType::Token => {
            tokens(node, &mut |system, code_, text| {
                push(
                    rows,
                    code,
                    IndexValue::Token {
                        system: system.map(str::to_string),
                        code: code_.map(str::to_string),
                        text: text.map(fold),
                    },
                )
            });
            if node.type_name == "Identifier" && !code.is_empty() {
                identifier_types(code, v, rows);
            }
        }
        ParamType::Date => {
            if let Some((lo, hi)) = date_range(node) {
                push(rows, code, IndexValue::Date { lo, hi });
            }
            if let Some(events) = v.get("event").and_then(Value::as_array) {
                for e in events.iter().filter_map(Value::as_str) {
                    if let Some(r) = datetime::parse(e, Kind::DateTime) {
                        push(
                            rows,
                            code,
                            IndexValue::Date {
                                lo: micros(r.start),
                                hi: micros(r.end),
                            },
                        );
                    }
                }
            }
        }
        ParamType::Number => {
            if let Some(value) = number(v) {
                push(rows, code, IndexValue::Number { value });
            }
        }
        ParamType::Quantity => {
            if let Some(value) = v.get("value").and_then(number) {
                let (system, unit_code) = if node.type_name == "Money" {
                    (
                        Some("urn:iso:std:iso:4217".to_string()),
                        str_of(v, "currency").map(str::to_string),
                    )
                } else {
                    (
                        str_of(v, "system").map(str::to_string),
                        str_of(v, "code").map(str::to_string),
                    )
                };
                push(
                    rows,
                    code,
                    IndexValue::Quantity {
                        value,
                        system,
                        code: unit_code,
                        unit: str_of(v, "unit").map(str::to_string),
                    },
                );
            }
        }
        ParamType::Reference => {
            if let Some(reference) = v.as_str() {
                // canonical or uri elements used as references
                push(rows, code, parse_reference(reference, base_url));
            } else if v.is_object() {
                if let Some(reference) = str_of(v, "reference") {
                    if !reference.starts_with('#') {
                        push(rows, code, parse_reference(reference, base_url));
                    }
                }
                if let Some(identifier) = v.get("identifier") {
                    let param = format!("{code}{IDENTIFIER_SUFFIX}");
                    if let Some(value) = str_of(identifier, "value") {
                        push(
                            rows,
                            &param,
                            IndexValue::Token {
                                system: str_of(identifier, "system").map(str::to_string),
                                code: Some(value.to_string()),
                                text: None,
                            },
                        );
                    }
                }
            }
        }
        ParamType::Uri => {
            if let Some(s) = v.as_str().filter(|s| !s.is_empty()) {
                push(
                    rows,
                    code,
                    IndexValue::Uri {
                        value: s.to_string(),
                    },
                );
            }
        }
        ParamType::Composite | ParamType::Special => {}
    }
}

/// The strings a string parameter matches in an element: the element itself if it is a
/// string, or the parts of a HumanName or Address (each part separately, and the text).
fn strings(v: &Value, out: &mut dyn FnMut(&str)) {
    match v {
        Value::String(s) if !s.is_empty() => out(s),
        Value::Object(map) => {
            for key in [
                "family",
                "given",
                "prefix",
                "suffix",
                "text",
                "line",
                "city",
                "district",
                "state",
                "postalCode",
                "country",
            ] {
                match map.get(key) {
                    Some(Value::String(s)) if !s.is_empty() => out(s),
                    Some(Value::Array(items)) => {
                        for s in items.iter().filter_map(Value::as_str) {
                            if !s.is_empty() {
                                out(s);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// Receives (system, code, text) triples.
type TokenSink<'s> = dyn FnMut(Option<&str>, Option<&str>, Option<&str>) + 's;

/// The (system, code, text) triples of a token element, by its FHIR type (or, when the model
/// does not know it, by its shape). <https://hl7.org/fhir/R4/search.html#token>
fn tokens(node: &Node<'_>, out: &mut TokenSink) {
    let v = node.value;
    match v {
        Value::String(s) if !s.is_empty() => out(None, Some(s), None),
        Value::Bool(b) => out(None, Some(if *b { "true" } else { "false" }), None),
        Value::Object(_) => match node.type_name {
            "CodeableConcept" => codeable_concept(v, out),
            "Coding" => coding(v, None, out),
            "Identifier" => out(
                str_of(v, "system"),
                str_of(v, "value"),
                v.get("type").and_then(|t| str_of(t, "text")),
            ),
            "ContactPoint" => out(None, str_of(v, "value"), None),
            _ if v.get("coding").is_some() || v.get("text").is_some() => codeable_concept(v, out),
            _ if v.get("code").is_some() => coding(v, None, out),
            _ if v.get("value").is_some() => out(str_of(v, "system"), str_of(v, "value"), None),
            _ => {}
        },
        _ => {}
    }
}

fn coding(v: &Value, text: Option<&str>, out: &mut TokenSink) {
    let display = str_of(v, "display").or(text);
    if str_of(v, "code").is_some() || str_of(v, "system").is_some() || display.is_some() {
        out(str_of(v, "system"), str_of(v, "code"), display);
    }
}

fn codeable_concept(v: &Value, out: &mut TokenSink) {
    let text = str_of(v, "text");
    let codings = v.get("coding").and_then(Value::as_array);
    match codings {
        Some(codings) if !codings.is_empty() => {
            for c in codings {
                coding(c, text, out);
            }
            // The concept's text is searchable by :text even when the codings have displays.
            if let Some(t) = text {
                if codings.iter().all(|c| str_of(c, "display") != Some(t)) {
                    out(None, None, Some(t));
                }
            }
        }
        _ => {
            if let Some(t) = text {
                out(None, None, Some(t));
            }
        }
    }
}

pub fn micros(t: chrono::DateTime<chrono::Utc>) -> Micros {
    t.timestamp_micros()
}

/// The instant range of a date-like element: date, dateTime, instant, Period.
fn date_range(node: &Node<'_>) -> Option<(Micros, Micros)> {
    match node.value {
        Value::String(s) => {
            let r =
                datetime::parse(s, Kind::DateTime).or_else(|| datetime::parse(s, Kind::Instant))?;
            Some((micros(r.start), micros(r.end)))
        }
        Value::Object(map) if map.contains_key("start") || map.contains_key("end") => {
            let bound = |key: &str| {
                map.get(key)
                    .and_then(Value::as_str)
                    .and_then(|s| datetime::parse(s, Kind::DateTime))
            };
            let lo = bound("start").map_or(MIN_MICROS, |r| micros(r.start));
            let hi = bound("end").map_or(MAX_MICROS, |r| micros(r.end));
            Some((lo, hi))
        }
        _ => None,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// Splits a reference into what the index keeps. Relative `Type/id` (with or without
/// `_history`), and absolute URLs on this server, become (type, id); others keep their url
/// (a canonical's `|version` dropped).
pub fn parse_reference(reference: &str, base_url: &str) -> IndexValue {
    let local = reference
        .strip_prefix(base_url.trim_end_matches('/'))
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(reference);
    let mut parts = local.split('/');
    if let (Some(t), Some(id)) = (parts.next(), parts.next()) {
        let rest: Vec<&str> = parts.collect();
        let history_ok = rest.is_empty() || (rest.len() == 2 && rest[0] == "_history");
        if history_ok
            && crate::fhir::resource_type::is_resource_type(t)
            && crate::fhir::id::is_valid_id(id)
        {
            return IndexValue::Reference {
                target_type: Some(t.to_string()),
                target_id: Some(id.to_string()),
                url: None,
            };
        }
    }
    let url = reference.split('|').next().unwrap_or(reference);
    // An absolute reference to another server still names its type when it ends in
    // `Type/id`: keep it, so that `subject:Patient=` can filter on it.
    let segments: Vec<&str> = url.rsplitn(3, '/').collect();
    let target_type = match segments.as_slice() {
        [_, t, _] if crate::fhir::resource_type::is_resource_type(t) => Some(t.to_string()),
        _ => None,
    };
    IndexValue::Reference {
        target_type,
        target_id: None,
        url: Some(url.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://localhost:8080/fhir";

    fn reference(t: Option<&str>, id: Option<&str>, url: Option<&str>) -> IndexValue {
        IndexValue::Reference {
            target_type: t.map(str::to_string),
            target_id: id.map(str::to_string),
            url: url.map(str::to_string),
        }
    }

    #[test]
    fn references_resolve_to_local_type_and_id() {
        assert_eq!(
            parse_reference("Patient/123", BASE),
            reference(Some("Patient"), Some("123"), None)
        );
        assert_eq!(
            parse_reference("Patient/123/_history/4", BASE),
            reference(Some("Patient"), Some("123"), None)
        );
        assert_eq!(
            parse_reference("http://localhost:8080/fhir/Patient/9", BASE),
            reference(Some("Patient"), Some("9"), None)
        );
        assert_eq!(
            parse_reference("http://elsewhere.org/fhir/Patient/9", BASE),
            reference(
                Some("Patient"),
                None,
                Some("http://elsewhere.org/fhir/Patient/9")
            )
        );
        assert_eq!(
            parse_reference("http://hl7.org/fhir/ValueSet/x|4.0.1", BASE),
            reference(
                Some("ValueSet"),
                None,
                Some("http://hl7.org/fhir/ValueSet/x")
            )
        );
        assert_eq!(
            parse_reference("urn:uuid:1234", BASE),
            reference(None, None, Some("urn:uuid:1234"))
        );
    }

    #[test]
    fn extracts_patient_values() {
        let patient = serde_json::json!({
            "resourceType": "Patient",
            "id": "p1",
            "meta": {"lastUpdated": "2024-01-02T03:04:05.000006Z"},
            "name": [{"family": "Müller", "given": ["Anna", "Lena"]}],
            "gender": "female",
            "birthDate": "1980-05",
            "identifier": [{"system": "urn:mrn", "value": "42"}],
            "active": true,
            "generalPractitioner": [{"reference": "Practitioner/dr1"}],
            "telecom": [{"system": "email", "value": "anna@example.org"}]
        });
        let rows = extract(Registry::r4(), &patient, BASE);
        let has = |param: &str, value: IndexValue| {
            assert!(
                rows.iter().any(|r| r.param == param && r.value == value),
                "missing {param} {value:?} in {rows:#?}"
            )
        };
        has(
            "family",
            IndexValue::String {
                folded: "muller".into(),
                exact: "Müller".into(),
            },
        );
        has(
            "name",
            IndexValue::String {
                folded: "lena".into(),
                exact: "Lena".into(),
            },
        );
        has(
            "gender",
            IndexValue::Token {
                system: None,
                code: Some("female".into()),
                text: None,
            },
        );
        has(
            "active",
            IndexValue::Token {
                system: None,
                code: Some("true".into()),
                text: None,
            },
        );
        has(
            "identifier",
            IndexValue::Token {
                system: Some("urn:mrn".into()),
                code: Some("42".into()),
                text: None,
            },
        );
        has(
            "email",
            IndexValue::Token {
                system: None,
                code: Some("anna@example.org".into()),
                text: None,
            },
        );
        has(
            "general-practitioner",
            reference(Some("Practitioner"), Some("dr1"), None),
        );
        let may = datetime::parse("1980-05", Kind::Date).unwrap();
        has(
            "birthdate",
            IndexValue::Date {
                lo: micros(may.start),
                hi: micros(may.end),
            },
        );
        has(
            "_id",
            IndexValue::Token {
                system: None,
                code: Some("p1".into()),
                text: None,
            },
        );
        assert!(rows.iter().any(|r| r.param == "_lastUpdated"));
    }

    #[test]
    fn extracts_observation_values() {
        let obs = serde_json::json!({
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}], "text": "HR"},
            "subject": {"reference": "Patient/p1"},
            "effectivePeriod": {"start": "2024-01-01T10:00:00Z"},
            "valueQuantity": {"value": 72, "unit": "beats/min", "system": "http://unitsofmeasure.org", "code": "/min"}
        });
        let rows = extract(Registry::r4(), &obs, BASE);
        let find = |param: &str| rows.iter().filter(|r| r.param == param).collect::<Vec<_>>();
        assert_eq!(find("code").len(), 2, "{rows:#?}");
        assert_eq!(find("patient").len(), 1);
        assert_eq!(find("subject").len(), 1);
        match &find("date")[0].value {
            IndexValue::Date { hi, .. } => assert_eq!(*hi, MAX_MICROS),
            other => panic!("{other:?}"),
        }
        match &find("value-quantity")[0].value {
            IndexValue::Quantity { value, code, .. } => {
                assert_eq!(*value, 72.0);
                assert_eq!(code.as_deref(), Some("/min"));
            }
            other => panic!("{other:?}"),
        }
    }
}
