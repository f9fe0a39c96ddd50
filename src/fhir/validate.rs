//! Structural validation of R4 resources. <https://hl7.org/fhir/R4/validation.html>
//!
//! Three layers, cheapest and most precise first:
//! 1. the official R4 JSON schema (vendored as `conformance/fhir.schema.json`), patched at load
//!    time (see [`prepare_schema`]) and compiled once: unknown elements, wrong JSON types,
//!    primitive patterns, required-binding codes, with a path for every error;
//! 2. Hearth's own checks plugged into that schema as formats: real calendar dates
//!    (`2020-02-30` is refused), 32-bit integer ranges, well-formed narrative XHTML;
//! 3. fhirbolt's typed model in strict mode, which sees what a schema cannot: missing
//!    mandatory elements and two values of one choice element.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use super::datetime::{self, Kind};
use super::outcome::{Issue, IssueType};
use super::resource_type::{is_resource_type, RESOURCE_TYPES};
use super::xhtml;

const SCHEMA: &str = include_str!("../../conformance/fhir.schema.json");

/// The published pattern of `string`, and the rule Hearth checks instead.
const STRING_PATTERN: &str = "^[ \\r\\n\\t\\S]+$";
const STRING_RULE: &str = "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F]+$";

/// At most this many issues are reported for one resource.
const MAX_ISSUES: usize = 20;

pub struct Validator {
    schema: jsonschema::Validator,
}

impl Validator {
    /// The process-wide validator, compiled on first use.
    pub fn shared() -> &'static Validator {
        static VALIDATOR: OnceLock<Validator> = OnceLock::new();
        VALIDATOR.get_or_init(Validator::new)
    }

    fn new() -> Validator {
        let raw: Value = serde_json::from_str(SCHEMA).expect("the vendored R4 schema is JSON");
        let schema = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .should_validate_formats(true)
            .with_format("fhir-date", |v: &str| datetime::is_valid(v, Kind::Date))
            .with_format("fhir-dateTime", |v: &str| {
                datetime::is_valid(v, Kind::DateTime)
            })
            .with_format("fhir-instant", |v: &str| {
                datetime::is_valid(v, Kind::Instant)
            })
            .with_format("fhir-xhtml", |v: &str| xhtml::check_div(v).is_ok())
            .build(&prepare_schema(raw))
            .expect("the patched R4 schema compiles");
        Validator { schema }
    }

    /// Validates one resource; on failure every issue names the element it is about.
    pub fn validate(&self, resource: &Value) -> Result<(), Vec<Issue>> {
        let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
            return Err(vec![Issue::error(
                IssueType::Required,
                "the resource has no resourceType",
            )]);
        };
        if !is_resource_type(resource_type) {
            return Err(vec![Issue::error(
                IssueType::NotSupported,
                format!("'{resource_type}' is not an R4 resource type"),
            )
            .at("resourceType")]);
        }
        // JSON FHIR has no empty arrays or objects (R4 json.html); the schema does not say so.
        let mut empty = Vec::new();
        empty_containers(resource, &mut String::new(), &mut empty);
        if !empty.is_empty() {
            return Err(empty
                .into_iter()
                .take(MAX_ISSUES)
                .map(|pointer| {
                    let expression = fhirpath_of_pointer(resource_type, &pointer);
                    Issue::error(
                        IssueType::Structure,
                        format!(
                            "{expression}: empty arrays and objects are not allowed in FHIR JSON"
                        ),
                    )
                    .at(expression)
                })
                .collect());
        }
        let issues: Vec<Issue> = self
            .schema
            .iter_errors(resource)
            .take(MAX_ISSUES)
            .map(|e| {
                let path = e.instance_path().to_string();
                let expression = fhirpath_of_pointer(resource_type, &path);
                let message = match narrative_at(resource, &path) {
                    Some(Err(why)) => why,
                    _ => explain(e.to_string()),
                };
                Issue::error(IssueType::Structure, format!("{expression}: {message}"))
                    .at(expression)
            })
            .collect();
        if !issues.is_empty() {
            return Err(issues);
        }
        hearth_fhirbolt::check_json(resource).map_err(|why| {
            vec![
                Issue::error(IssueType::Structure, format!("{resource_type}: {why}"))
                    .at(resource_type),
            ]
        })
    }
}

/// The JSON pointers of every empty array or object in `value`.
fn empty_containers(value: &Value, pointer: &mut String, out: &mut Vec<String>) {
    let len = pointer.len();
    match value {
        Value::Array(items) if items.is_empty() => out.push(pointer.clone()),
        Value::Object(map) if map.is_empty() => out.push(pointer.clone()),
        Value::Array(items) => {
            for (n, item) in items.iter().enumerate() {
                pointer.push_str(&format!("/{n}"));
                empty_containers(item, pointer, out);
                pointer.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                empty_containers(item, pointer, out);
                pointer.truncate(len);
            }
        }
        _ => {}
    }
}

/// Says what Hearth's own formats mean, instead of naming them.
fn explain(message: String) -> String {
    const FORMATS: [(&str, &str); 3] = [
        (
            "is not a \"fhir-date\"",
            "is not a real calendar date (YYYY, YYYY-MM or YYYY-MM-DD)",
        ),
        (
            "is not a \"fhir-dateTime\"",
            "is not a real dateTime (a date, or a date and time with seconds and a zone)",
        ),
        (
            "is not a \"fhir-instant\"",
            "is not a real instant (date, time with seconds, and zone)",
        ),
    ];
    for (from, to) in FORMATS {
        if message.contains(from) {
            return message.replace(from, to);
        }
    }
    message
}

/// If the pointer designates a narrative div, its detailed check (for a better message).
fn narrative_at(resource: &Value, pointer: &str) -> Option<Result<(), String>> {
    if !pointer.ends_with("/div") {
        return None;
    }
    resource.pointer(pointer)?.as_str().map(xhtml::check_div)
}

/// Turns a JSON pointer (`/name/0/_given/1`) into a FHIRPath (`Patient.name[0].given[1]`).
pub fn fhirpath_of_pointer(resource_type: &str, pointer: &str) -> String {
    let mut out = resource_type.to_string();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(&segment);
            out.push(']');
        } else {
            out.push('.');
            out.push_str(segment.strip_prefix('_').unwrap_or(&segment));
        }
    }
    out
}

/// Applies Hearth's fixes to the published R4 JSON schema. Each fix is a known defect or gap:
///
/// - the root `oneOf` over 146 types (and `ResourceList`, used for contained resources and
///   Bundle entries) gives one useless error and explodes in memory on a large Bundle: replace
///   it with an if/then dispatch on `resourceType`, which needs draft 7;
/// - `fhirVersion` enums lack `4.0.1`, the version of R4 itself;
/// - the `string` pattern `[ \r\n\t\S]+` refuses Unicode spaces (a non-breaking space in a
///   name); R4's rule is "no control characters but tab, CR and LF", which this checks instead
///   (it also keeps `\u0000`, which PostgreSQL cannot store, out);
/// - elements of type `canonical` have no `_element` slot for their extensions;
/// - `integer`, `positiveInt` and `unsignedInt` are 32-bit and must be whole numbers;
/// - date, dateTime and instant patterns allow impossible dates: check them with formats;
/// - `xhtml` is unchecked: check it is safe, well-formed narrative.
pub fn prepare_schema(mut schema: Value) -> Value {
    let definitions = schema["definitions"]
        .as_object_mut()
        .expect("the schema has definitions");

    let dispatch: Vec<Value> = RESOURCE_TYPES
        .iter()
        .map(|t| {
            json!({
                "if": { "properties": { "resourceType": { "const": t } } },
                "then": { "$ref": format!("#/definitions/{t}") }
            })
        })
        .collect();
    definitions.insert(
        "ResourceList".into(),
        json!({
            "type": "object",
            "required": ["resourceType"],
            "properties": { "resourceType": { "enum": RESOURCE_TYPES.as_slice() } },
            "allOf": dispatch
        }),
    );

    // Choice elements (`valueInteger`, `effectiveDateTime` ...) carry their primitive's schema
    // inline: point them at the definitions patched below, recognised by their pattern.
    let inline: Vec<(String, &str)> = [
        "date",
        "dateTime",
        "instant",
        "integer",
        "positiveInt",
        "unsignedInt",
    ]
    .into_iter()
    .filter_map(|name| Some((definitions[name]["pattern"].as_str()?.to_string(), name)))
    .collect();
    for definition in definitions.values_mut() {
        let Some(properties) = definition
            .get_mut("properties")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for property in properties.values_mut() {
            let slot = match property.get_mut("items") {
                Some(items) => items,
                None => property,
            };
            if slot.get("pattern").and_then(Value::as_str) == Some(STRING_PATTERN) {
                slot["pattern"] = json!(STRING_RULE);
            }
            let pattern = slot.get("pattern").and_then(Value::as_str);
            if let Some((_, name)) = inline.iter().find(|(p, _)| Some(p.as_str()) == pattern) {
                *slot = json!({ "$ref": format!("#/definitions/{name}") });
            }
        }
    }

    definitions["string"]["pattern"] = json!(STRING_RULE);
    let int = |min: i64| json!({ "type": "integer", "minimum": min, "maximum": i32::MAX });
    definitions.insert("integer".into(), int(i32::MIN as i64));
    definitions.insert("positiveInt".into(), int(1));
    definitions.insert("unsignedInt".into(), int(0));
    for (name, format) in [
        ("date", "fhir-date"),
        ("dateTime", "fhir-dateTime"),
        ("instant", "fhir-instant"),
    ] {
        definitions[name]["format"] = json!(format);
    }
    definitions.insert(
        "xhtml".into(),
        json!({ "type": "string", "format": "fhir-xhtml" }),
    );

    for definition in definitions.values_mut() {
        let Some(properties) = definition
            .get_mut("properties")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        add_canonical_extension_slots(properties);
        if let Some(values) = properties
            .get_mut("fhirVersion")
            .map(|p| {
                if p.get("items").is_some() {
                    &mut p["items"]
                } else {
                    p
                }
            })
            .and_then(|p| p.get_mut("enum"))
            .and_then(Value::as_array_mut)
        {
            if !values.iter().any(|v| v == "4.0.1") {
                values.push(json!("4.0.1"));
            }
        }
    }

    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": schema["definitions"].take(),
        "$ref": "#/definitions/ResourceList"
    })
}

fn add_canonical_extension_slots(properties: &mut Map<String, Value>) {
    let canonical = |v: &Value| {
        let r = v
            .get("$ref")
            .or_else(|| v.get("items").and_then(|i| i.get("$ref")));
        r.and_then(Value::as_str) == Some("#/definitions/canonical")
    };
    let missing: Vec<(String, bool)> = properties
        .iter()
        .filter(|(name, v)| canonical(v) && !properties.contains_key(&format!("_{name}")))
        .map(|(name, v)| (format!("_{name}"), v.get("items").is_some()))
        .collect();
    for (slot, is_array) in missing {
        let element = json!({ "$ref": "#/definitions/Element" });
        let value = if is_array {
            json!({ "type": "array", "items": element })
        } else {
            element
        };
        properties.insert(slot, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues(v: Value) -> Vec<Issue> {
        Validator::shared().validate(&v).err().unwrap_or_default()
    }

    #[test]
    fn pointers_become_fhirpaths() {
        assert_eq!(fhirpath_of_pointer("Patient", ""), "Patient");
        assert_eq!(
            fhirpath_of_pointer("Patient", "/name/0/_given/1"),
            "Patient.name[0].given[1]"
        );
    }

    #[test]
    fn accepts_a_valid_patient() {
        let p = json!({"resourceType": "Patient", "id": "a", "gender": "female",
            "birthDate": "2000-02-29", "name": [{"family": "Chalmers", "given": ["Peter"]}],
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Peter</div>"}});
        assert!(issues(p).is_empty());
        let cs = json!({"resourceType": "CapabilityStatement", "status": "active", "date": "2024",
            "kind": "instance", "fhirVersion": "4.0.1", "format": ["json"],
            "_instantiates": [{"extension": [{"url": "http://x", "valueString": "y"}]}]});
        assert!(
            issues(cs).is_empty(),
            "4.0.1 and canonical extension slots accepted"
        );
    }

    #[test]
    fn rejects_with_paths() {
        let i = issues(json!({"resourceType": "Patient", "gender": "banana"}));
        assert_eq!(i[0].expression, vec!["Patient.gender"]);
        let i = issues(json!({"resourceType": "Patient", "birthDate": "2021-02-29"}));
        assert_eq!(i[0].expression, vec!["Patient.birthDate"]);
        let i = issues(json!({"resourceType": "Patient", "name": [{"given": ["a", 3]}]}));
        assert_eq!(i[0].expression, vec!["Patient.name[0].given[1]"]);
        let i = issues(json!({"resourceType": "Patient", "foo": 1}));
        assert!(i[0].diagnostics.as_ref().unwrap().contains("foo"));
        let i = issues(json!({"resourceType": "Patient", "multipleBirthInteger": 3000000000u64}));
        assert_eq!(i[0].expression, vec!["Patient.multipleBirthInteger"]);
        let i = issues(
            json!({"resourceType": "Patient", "contained": [{"resourceType": "Basic", "code": {}, "x": 1}]}),
        );
        assert!(i[0].expression[0].starts_with("Patient.contained[0]"));
        assert!(!issues(json!({"resourceType": "Banana"})).is_empty());
        let i = issues(json!({"resourceType": "Patient", "name": [{"family": "a\u{0}b"}]}));
        assert_eq!(i[0].expression, vec!["Patient.name[0].family"]);
        assert!(issues(
            json!({"resourceType": "Patient", "name": [{"family": "Stover,\u{a0}DVM"}]})
        )
        .is_empty());
        let ig = json!({"resourceType": "ImplementationGuide", "url": "http://x", "name": "X", "status": "draft",
            "packageId": "x", "fhirVersion": ["4.0.1"]});
        assert!(issues(ig).is_empty());
    }

    #[test]
    fn strict_model_catches_what_the_schema_cannot() {
        // Observation.status and .code are mandatory (1..1).
        assert!(!issues(json!({"resourceType": "Observation"})).is_empty());
        let two_values = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "valueString": "a", "valueBoolean": true});
        assert!(!issues(two_values).is_empty());
    }
}
