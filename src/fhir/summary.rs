//! Subsetting resources for `_summary` and `_elements`.
//! <https://hl7.org/fhir/R4/search.html#summary> and <https://hl7.org/fhir/R4/search.html#elements>
//!
//! Which elements are "summary" or mandatory comes from the R4 StructureDefinitions, reduced
//! to top-level element names in `conformance/summary-elements.json`.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::{json, Value};

/// What to keep of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subset {
    /// `_summary=true`: the elements marked isSummary.
    Summary,
    /// `_summary=text`: text, id, meta and the mandatory top-level elements.
    Text,
    /// `_summary=data`: everything but the text.
    Data,
    /// `_elements`: these top-level elements (plus id and meta).
    Elements(Vec<String>),
}

struct Elements {
    summary: Vec<String>,
    mandatory: Vec<String>,
}

static ELEMENTS: LazyLock<HashMap<String, Elements>> = LazyLock::new(|| {
    let all: Value = serde_json::from_str(include_str!("../../conformance/summary-elements.json"))
        .expect("conformance/summary-elements.json is valid JSON");
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    all.as_object()
        .map(|m| {
            m.iter()
                .map(|(t, e)| {
                    (
                        t.clone(),
                        Elements {
                            summary: names(&e["summary"]),
                            mandatory: names(&e["mandatory"]),
                        },
                    )
                })
                .collect()
        })
        .unwrap_or_default()
});

/// Whether the JSON key `key` is the element `name` (`deceased[x]` covers `deceasedBoolean`;
/// `_birthDate` travels with `birthDate`).
fn is_element(key: &str, name: &str) -> bool {
    let key = key.strip_prefix('_').unwrap_or(key);
    match name.strip_suffix("[x]") {
        Some(stem) => key
            .strip_prefix(stem)
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase())),
        None => key == name,
    }
}

/// Reduces `resource` to `subset` and marks it SUBSETTED (except for `Data`, which the
/// specification also marks).
pub fn apply(resource: &mut Value, subset: &Subset) {
    let Some(resource_type) = resource["resourceType"].as_str().map(str::to_string) else {
        return;
    };
    let Value::Object(map) = resource else { return };
    let known = ELEMENTS.get(&resource_type);
    let keep = |key: &str| -> bool {
        if matches!(key, "resourceType" | "id" | "meta") {
            return true;
        }
        match subset {
            Subset::Summary => known.is_some_and(|e| e.summary.iter().any(|n| is_element(key, n))),
            Subset::Text => {
                is_element(key, "text")
                    || known.is_some_and(|e| e.mandatory.iter().any(|n| is_element(key, n)))
            }
            Subset::Data => !is_element(key, "text"),
            Subset::Elements(names) => {
                names.iter().any(|n| is_element(key, n))
                    || known.is_some_and(|e| e.mandatory.iter().any(|n| is_element(key, n)))
            }
        }
    };
    map.retain(|k, _| keep(k));
    let meta = map.entry("meta").or_insert_with(|| json!({}));
    if let Value::Object(meta) = meta {
        let tags = meta.entry("tag").or_insert_with(|| json!([]));
        if let Value::Array(tags) = tags {
            tags.push(json!({
                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                "code": "SUBSETTED",
                "display": "Resource encoded in summary mode"
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient() -> Value {
        json!({
            "resourceType": "Patient", "id": "p", "meta": {"versionId": "1"},
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
            "name": [{"family": "A"}], "deceasedBoolean": false, "photo": [{"title": "x"}],
            "contact": [{"name": {"family": "B"}}]
        })
    }

    #[test]
    fn summary_keeps_summary_elements() {
        let mut p = patient();
        apply(&mut p, &Subset::Summary);
        assert!(p.get("name").is_some());
        assert!(p.get("deceasedBoolean").is_some());
        assert!(p.get("photo").is_none());
        assert!(p.get("text").is_none());
        assert_eq!(p["meta"]["tag"][0]["code"], "SUBSETTED");
    }

    #[test]
    fn elements_and_data() {
        let mut p = patient();
        apply(&mut p, &Subset::Elements(vec!["photo".into()]));
        assert!(p.get("photo").is_some() && p.get("name").is_none() && p.get("id").is_some());
        let mut p = patient();
        apply(&mut p, &Subset::Data);
        assert!(p.get("text").is_none() && p.get("contact").is_some());
        let mut p = patient();
        apply(&mut p, &Subset::Text);
        assert!(p.get("text").is_some() && p.get("name").is_none());
    }
}
