//! The SearchParameter registry: which parameters each resource type has, their types and
//! their parsed FHIRPath expressions. Built once from the official R4 definitions vendored in
//! `conformance/search-parameters.json` (<https://hl7.org/fhir/R4/searchparameter-registry.html>).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use serde_json::Value;

use super::fhirpath::{self, Expression};
use crate::fhir::resource_type::RESOURCE_TYPES;

/// A search parameter's type. <https://hl7.org/fhir/R4/search.html#ptypes>
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

impl ParamType {
    pub fn parse(code: &str) -> Option<ParamType> {
        Some(match code {
            "number" => ParamType::Number,
            "date" => ParamType::Date,
            "string" => ParamType::String,
            "token" => ParamType::Token,
            "reference" => ParamType::Reference,
            "composite" => ParamType::Composite,
            "quantity" => ParamType::Quantity,
            "uri" => ParamType::Uri,
            "special" => ParamType::Special,
            _ => return None,
        })
    }

    pub fn code(self) -> &'static str {
        match self {
            ParamType::Number => "number",
            ParamType::Date => "date",
            ParamType::String => "string",
            ParamType::Token => "token",
            ParamType::Reference => "reference",
            ParamType::Composite => "composite",
            ParamType::Quantity => "quantity",
            ParamType::Uri => "uri",
            ParamType::Special => "special",
        }
    }
}

/// One search parameter, ready to extract and to query.
#[derive(Debug)]
pub struct SearchParam {
    pub url: String,
    pub code: String,
    pub kind: ParamType,
    pub description: String,
    /// `None` for parameters Hearth cannot index (no expression, or `special`).
    pub expression: Option<Expression>,
    /// For references: the resource types it may point to.
    pub targets: Vec<String>,
    /// For composites: each component's type and expression (relative to the element the
    /// composite's expression selects).
    pub components: Vec<Component>,
    /// The expression selects at most one element (a simple path to a non-repeating
    /// element): `birthdate=ge..&birthdate=lt..` can then test both bounds on one row.
    pub single_valued: bool,
    /// Every value is a date, dateTime or instant (no Period): its range is at most a year
    /// long, which bounds index scans.
    pub short_dates: bool,
}

/// One component of a composite parameter.
#[derive(Debug)]
pub struct Component {
    pub kind: ParamType,
    pub expression: Expression,
}

impl SearchParam {
    /// Whether values are extracted into the index for this parameter.
    pub fn is_indexed(&self) -> bool {
        match self.kind {
            ParamType::Special => false,
            // Up to three components of simple types: every R4 composite.
            ParamType::Composite => {
                self.expression.is_some()
                    && (2..=3).contains(&self.components.len())
                    && self
                        .components
                        .iter()
                        .all(|c| !matches!(c.kind, ParamType::Composite | ParamType::Special))
            }
            _ => self.expression.is_some(),
        }
    }
}

/// Every parameter of every resource type, by code.
#[derive(Clone)]
pub struct Registry {
    by_type: HashMap<&'static str, BTreeMap<String, Arc<SearchParam>>>,
    /// The type of every parameter by canonical url (composite components refer to them).
    kinds: HashMap<String, ParamType>,
}

/// Types that are not DomainResources: `DomainResource` parameters do not apply to them.
const NOT_DOMAIN: [&str; 3] = ["Binary", "Bundle", "Parameters"];

impl Registry {
    /// The official R4 parameters, parsed once.
    pub fn r4() -> &'static Registry {
        static R4: LazyLock<Registry> = LazyLock::new(|| {
            let bundle: Value =
                serde_json::from_str(include_str!("../../conformance/search-parameters.json"))
                    .expect("conformance/search-parameters.json is valid JSON");
            let mut registry = Registry::from_bundle(&bundle);
            registry.trim_audit_event();
            registry
        });
        &R4
    }

    /// Builds a registry from a Bundle of SearchParameter resources.
    pub fn from_bundle(bundle: &Value) -> Registry {
        let mut registry = Registry {
            by_type: RESOURCE_TYPES
                .iter()
                .map(|t| (*t, BTreeMap::new()))
                .collect(),
            kinds: HashMap::new(),
        };
        let entries = bundle["entry"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let kinds: HashMap<String, ParamType> = entries
            .iter()
            .filter_map(|e| {
                let r = &e["resource"];
                Some((
                    r["url"].as_str()?.to_string(),
                    ParamType::parse(r["type"].as_str()?)?,
                ))
            })
            .collect();
        registry.kinds = kinds.clone();
        for entry in entries {
            if let Some(param) = parse_param(&entry["resource"], &kinds) {
                let bases = entry["resource"]["base"]
                    .as_array()
                    .map(|b| b.iter().filter_map(Value::as_str).collect::<Vec<_>>())
                    .unwrap_or_default();
                registry.add(Arc::new(param), &bases);
            }
        }
        registry
    }

    /// AuditEvents are the most written resources (one per access): they are indexed for
    /// the parameters the audit trail is searched by (Basic Audit Log Patterns: patient,
    /// agent, entity, date, type, subtype, action, outcome) and the common `_` ones only.
    fn trim_audit_event(&mut self) {
        const KEPT: [&str; 8] = [
            "patient", "agent", "entity", "date", "type", "subtype", "action", "outcome",
        ];
        if let Some(params) = self.by_type.get_mut("AuditEvent") {
            params.retain(|code, _| code.starts_with('_') || KEPT.contains(&code.as_str()));
        }
    }

    fn add(&mut self, param: Arc<SearchParam>, bases: &[&str]) {
        for base in bases {
            let types: Vec<&'static str> = match *base {
                "Resource" => RESOURCE_TYPES.to_vec(),
                "DomainResource" => RESOURCE_TYPES
                    .iter()
                    .copied()
                    .filter(|t| !NOT_DOMAIN.contains(t))
                    .collect(),
                other => RESOURCE_TYPES
                    .iter()
                    .copied()
                    .filter(|t| *t == other)
                    .collect(),
            };
            for t in types {
                if let Some(params) = self.by_type.get_mut(t) {
                    params.insert(param.code.clone(), param.clone());
                }
            }
        }
    }

    /// The official parameters plus the custom SearchParameter resources in `custom` (active
    /// ones with an expression Hearth can evaluate). A custom parameter never replaces an
    /// official one of the same code. Returns the registry and, per refused resource, why.
    pub fn with_custom(custom: &[Value]) -> (Registry, Vec<String>) {
        let mut registry = Registry::r4().clone();
        let mut refused = Vec::new();
        for sp in custom {
            let url = sp["url"].as_str().unwrap_or("(no url)");
            if sp["status"] != "active" {
                continue;
            }
            let Some(param) = parse_param(sp, &registry.kinds) else {
                refused.push(format!("{url}: no code or an unknown type"));
                continue;
            };
            if !param.is_indexed() {
                refused.push(format!(
                    "{url}: Hearth cannot index a {} parameter with this expression",
                    param.kind.code()
                ));
                continue;
            }
            let bases: Vec<&str> = sp["base"]
                .as_array()
                .map(|b| b.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let free: Vec<&str> = bases
                .into_iter()
                .filter(|b| match Registry::r4().get(b, &param.code) {
                    Some(official) => official.url == param.url,
                    None => true,
                })
                .collect();
            if free.is_empty() {
                refused.push(format!(
                    "{url}: the code '{}' is already an official parameter",
                    param.code
                ));
                continue;
            }
            registry.add(Arc::new(param), &free);
        }
        (registry, refused)
    }

    /// The resource types whose parameters differ between `self` and `newer` (by code,
    /// definition and expression): those whose index rows must be rebuilt.
    pub fn changed_types(&self, newer: &Registry) -> Vec<String> {
        let signature = |r: &Registry, t: &str| -> Vec<(String, String, Option<String>)> {
            r.params(t)
                .map(|p| {
                    (
                        p.code.clone(),
                        p.url.clone(),
                        p.expression.as_ref().map(|e| e.source().to_string()),
                    )
                })
                .collect()
        };
        RESOURCE_TYPES
            .iter()
            .filter(|t| signature(self, t) != signature(newer, t))
            .map(|t| t.to_string())
            .collect()
    }

    /// The parameter `code` of `resource_type`.
    pub fn get(&self, resource_type: &str, code: &str) -> Option<&Arc<SearchParam>> {
        self.by_type.get(resource_type)?.get(code)
    }

    /// Every parameter of `resource_type`, by code.
    pub fn params(&self, resource_type: &str) -> impl Iterator<Item = &Arc<SearchParam>> {
        self.by_type
            .get(resource_type)
            .into_iter()
            .flat_map(|m| m.values())
    }
}

/// (single-valued, short dates) for an expression made of simple paths `Type.element`, one
/// per base (`Patient.birthDate | Person.birthDate`): each resource matches one branch.
fn shape(sp: &Value) -> (bool, bool) {
    let Some(expression) = sp["expression"].as_str() else {
        return (false, false);
    };
    expression
        .split('|')
        .map(|branch| branch_shape(branch.trim()))
        .fold((true, true), |(a, b), (c, d)| (a && c, b && d))
}

fn branch_shape(path: &str) -> (bool, bool) {
    let Some((t, element)) = path.split_once('.') else {
        return (false, false);
    };
    if !element.chars().all(|c| c.is_ascii_alphanumeric()) || !RESOURCE_TYPES.contains(&t) {
        return (false, false);
    }
    const SHORT: [&str; 3] = ["date", "dateTime", "instant"];
    if let Some(e) = super::model::element(t, element) {
        return (!e.is_array, SHORT.contains(&e.type_name));
    }
    let choices = super::model::choice_elements(t, element);
    if choices.is_empty() {
        (false, false)
    } else {
        (true, choices.iter().all(|(_, ty)| SHORT.contains(ty)))
    }
}

fn parse_param(sp: &Value, kinds: &HashMap<String, ParamType>) -> Option<SearchParam> {
    let code = sp["code"].as_str()?.to_string();
    let kind = ParamType::parse(sp["type"].as_str()?)?;
    let expression = match sp["expression"].as_str() {
        Some(src) => match fhirpath::parse(src) {
            Ok(e) => Some(e),
            Err(why) => {
                tracing::warn!(code, why, "search parameter expression not supported");
                None
            }
        },
        None => None,
    };
    Some(SearchParam {
        url: sp["url"].as_str().unwrap_or_default().to_string(),
        code,
        kind,
        description: sp["description"].as_str().unwrap_or_default().to_string(),
        expression,
        targets: sp["target"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        single_valued: shape(sp).0,
        short_dates: shape(sp).1,
        components: sp["component"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| {
                        Some(Component {
                            kind: *kinds.get(c["definition"].as_str()?)?,
                            expression: fhirpath::parse(c["expression"].as_str()?).ok()?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_the_r4_parameters() {
        let r = Registry::r4();
        let name = r.get("Patient", "name").expect("Patient.name");
        assert_eq!(name.kind, ParamType::String);
        assert!(name.is_indexed());
        // Resource-level parameters apply to every type, DomainResource ones not to Bundle.
        assert!(r.get("Bundle", "_id").is_some());
        assert!(r.get("Observation", "_lastUpdated").is_some());
        assert!(r.get("Bundle", "_text").is_none());
        // A parameter shared by several bases keeps its targets.
        let subject = r
            .get("Observation", "patient")
            .expect("Observation.patient");
        assert_eq!(subject.kind, ParamType::Reference);
        assert!(subject.targets.iter().any(|t| t == "Patient"));
        assert!(r.get("Patient", "nonsense").is_none());
        // A custom parameter changes only the types it applies to.
        let (custom, refused) = Registry::with_custom(&[serde_json::json!({
            "resourceType": "SearchParameter", "url": "http://x/sp", "status": "active",
            "code": "marital", "base": ["Patient"], "type": "token",
            "expression": "Patient.maritalStatus"})]);
        assert!(refused.is_empty());
        assert_eq!(r.changed_types(&custom), vec!["Patient"]);
        assert!(r.changed_types(r).is_empty());
        let composite = r
            .get("Observation", "code-value-quantity")
            .expect("composite");
        assert_eq!(composite.components.len(), 2, "{composite:?}");
        assert_eq!(composite.components[1].kind, ParamType::Quantity);
        assert!(composite.is_indexed());
        let birthdate = r.get("Patient", "birthdate").unwrap();
        assert!(birthdate.single_valued && birthdate.short_dates);
        let effective = r.get("Observation", "date").unwrap();
        assert!(!effective.short_dates, "effective[x] may be a Period");
        assert!(!r.get("Patient", "name").unwrap().single_valued);
    }
}
