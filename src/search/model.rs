//! The R4 element type model: for every resource, datatype and backbone element, the type
//! of each of its elements, as the FHIRPath evaluator needs it to walk a resource and to
//! type the nodes it selects (<http://hl7.org/fhirpath/N1/#models>).
//!
//! Built once from the official R4 JSON schema (`conformance/fhir.schema.json`,
//! <https://hl7.org/fhir/R4/json.html#schema>). In its `definitions`, each type has
//! `properties`, each either `{"$ref": "#/definitions/T"}` or
//! `{"type": "array", "items": {"$ref": ...}}`; codes with a required binding are inlined
//! as `enum`, and the primitive variants of choice elements (`valueString`, ...) are inlined
//! as `pattern`s. `_birthDate`-style extension slots and the `resourceType` constant are not
//! elements and are skipped.
//!
//! The schema does not mark choice elements (`value[x]`): a group of keys `base` + `Type`
//! (`valueQuantity`, `valueString`, ...) whose suffix is the key's own type, that are not
//! repeating, with at least two variants and no element literally named `base`, is taken
//! as the choice `base[x]`. Checked against the R4 StructureDefinitions: this finds every
//! choice element the schema has, plus three harmless pairs (e.g.
//! `PaymentReconciliation.paymentIdentifier`/`paymentDate`, which FHIRPath can then also
//! reach as `payment`).

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::Value;

/// One element of a type: its FHIR type name (`"HumanName"`, `"date"`, `"ResourceList"` for
/// an inline resource such as `Bundle.entry.resource`) and whether it repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element {
    pub type_name: &'static str,
    pub is_array: bool,
}

struct ElementDef {
    type_name: String,
    is_array: bool,
}

#[derive(Default)]
struct TypeDef {
    elements: HashMap<String, ElementDef>,
    /// Choice base (`value`) to its variants `(json key, type)`, in schema order.
    choices: HashMap<String, Vec<(String, String)>>,
}

const SCHEMA: &str = include_str!("../../conformance/fhir.schema.json");

static MODEL: LazyLock<HashMap<String, TypeDef>> = LazyLock::new(build);

/// The element `name` of `type_name` (exactly that JSON key; choice elements are reached
/// through [`choice_elements`]). `None` for unknown types and names.
pub fn element(type_name: &str, name: &str) -> Option<Element> {
    let model: &'static HashMap<String, TypeDef> = &MODEL;
    let e = model.get(type_name)?.elements.get(name)?;
    Some(Element {
        type_name: &e.type_name,
        is_array: e.is_array,
    })
}

/// The variants of the choice element `base[x]` of `type_name`, as `(json key, type)`:
/// `choice_elements("Observation", "value")` gives `("valueQuantity", "Quantity")`,
/// `("valueString", "string")`, ... Empty when `base` is not a choice element.
/// <https://hl7.org/fhir/R4/formats.html#choice>
pub fn choice_elements(type_name: &str, base: &str) -> Vec<(&'static str, &'static str)> {
    let model: &'static HashMap<String, TypeDef> = &MODEL;
    model
        .get(type_name)
        .and_then(|t| t.choices.get(base))
        .map(|v| v.iter().map(|(k, t)| (k.as_str(), t.as_str())).collect())
        .unwrap_or_default()
}

fn build() -> HashMap<String, TypeDef> {
    let schema: Value =
        serde_json::from_str(SCHEMA).expect("conformance/fhir.schema.json is valid JSON");
    let Some(definitions) = schema.get("definitions").and_then(Value::as_object) else {
        return HashMap::new();
    };
    // Primitive types are the definitions without properties (`ResourceList` is the union
    // of all resources), longest first so that `DateTime` wins over `Time` as a suffix.
    let mut primitives: Vec<&str> = definitions
        .iter()
        .filter(|(name, def)| def.get("properties").is_none() && *name != "ResourceList")
        .map(|(name, _)| name.as_str())
        .collect();
    primitives.sort_by_key(|p| std::cmp::Reverse(p.len()));

    let mut model = HashMap::new();
    for (type_name, def) in definitions {
        let Some(properties) = def.get("properties").and_then(Value::as_object) else {
            continue;
        };
        let mut t = TypeDef::default();
        let mut candidates: Vec<(&str, String, String)> = Vec::new();
        for (key, prop) in properties {
            if key.starts_with('_') || prop.get("const").is_some() {
                continue;
            }
            let (spec, is_array) = match prop.get("items") {
                Some(items) => (items, true),
                None => (prop, false),
            };
            let ty = if let Some(r) = spec.get("$ref").and_then(Value::as_str) {
                r.rsplit('/').next().unwrap_or(r).to_string()
            } else if spec.get("enum").is_some() {
                "code".to_string()
            } else {
                inline_primitive(key, spec, &primitives).to_string()
            };
            let suffix = capitalized(&ty);
            if !is_array && key.len() > suffix.len() && key.ends_with(&suffix) {
                let base = &key[..key.len() - suffix.len()];
                candidates.push((base, key.clone(), ty.clone()));
            }
            t.elements.insert(
                key.clone(),
                ElementDef {
                    type_name: ty,
                    is_array,
                },
            );
        }
        for (base, key, ty) in &candidates {
            let variants = candidates.iter().filter(|(b, _, _)| b == base).count();
            if variants >= 2 && !t.elements.contains_key(*base) {
                let choice = t.choices.entry(base.to_string()).or_default();
                choice.push((key.clone(), ty.clone()));
            }
        }
        model.insert(type_name.clone(), t);
    }
    model
}

/// The type of an inlined primitive property: from its key's suffix (`onsetDateTime` is a
/// `dateTime`), else from its JSON type.
fn inline_primitive<'p>(key: &str, spec: &Value, primitives: &[&'p str]) -> &'p str {
    for p in primitives {
        let suffix = capitalized(p);
        if key.len() > suffix.len() && key.ends_with(&suffix) {
            return p;
        }
    }
    match spec.get("type").and_then(Value::as_str) {
        Some("boolean") => "boolean",
        Some("number") => "decimal",
        _ => "string",
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_have_types() {
        let birth = element("Patient", "birthDate").unwrap();
        assert_eq!((birth.type_name, birth.is_array), ("date", false));
        let name = element("Patient", "name").unwrap();
        assert_eq!((name.type_name, name.is_array), ("HumanName", true));
        assert_eq!(element("Patient", "gender").unwrap().type_name, "code");
        assert_eq!(
            element("Patient", "contact").unwrap().type_name,
            "Patient_Contact"
        );
        assert_eq!(
            element("Patient_Contact", "name").unwrap().type_name,
            "HumanName"
        );
        assert_eq!(
            element("Bundle_Entry", "resource").unwrap().type_name,
            "ResourceList"
        );
        assert_eq!(element("Patient", "id").unwrap().type_name, "id");
        assert_eq!(
            element("Reference", "reference").unwrap().type_name,
            "string"
        );
        assert!(element("Patient", "_birthDate").is_none());
        assert!(element("Patient", "resourceType").is_none());
        assert!(element("Patient", "nope").is_none());
        assert!(element("Nope", "id").is_none());
    }

    #[test]
    fn choices_are_found() {
        let value = choice_elements("Observation", "value");
        assert!(value.contains(&("valueQuantity", "Quantity")));
        assert!(value.contains(&("valueString", "string")));
        assert!(value.contains(&("valueDateTime", "dateTime")));
        assert!(value.contains(&("valueBoolean", "boolean")));
        assert_eq!(value.len(), 11);
        let onset = choice_elements("Condition", "onset");
        assert!(onset.contains(&("onsetAge", "Age")));
        assert!(onset.contains(&("onsetPeriod", "Period")));
        assert!(choice_elements("Extension", "value").len() >= 49);
        assert!(choice_elements("Patient", "deceased").contains(&("deceasedBoolean", "boolean")));
        // Not choices: a single element whose name ends with its type, or repeating pairs.
        assert!(choice_elements("Patient", "birth").is_empty());
        assert!(choice_elements("Meta", "version").is_empty());
        assert!(choice_elements("CarePlan", "instantiates").is_empty());
        assert!(choice_elements("Patient", "name").is_empty());
    }
}
