//! Compartments: which resources belong to a patient (or practitioner, encounter...), from
//! the R4 CompartmentDefinitions. Compartment search uses them, and so does authorization:
//! a `patient/` scope confines a search, a read or a write to the launch patient's
//! compartment. <https://hl7.org/fhir/R4/compartmentdefinition.html>

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::Value;

use super::index::{IndexRow, IndexValue};
use super::query::{Filter, Predicate, Search};
use super::registry::{ParamType, Registry};

/// Compartment → member type → the reference parameters that place a resource in it.
static COMPARTMENTS: LazyLock<HashMap<&'static str, HashMap<String, Vec<String>>>> =
    LazyLock::new(|| {
        let sources = [
            (
                "Patient",
                include_str!("../../conformance/CompartmentDefinition-patient.json"),
            ),
            (
                "Practitioner",
                include_str!("../../conformance/CompartmentDefinition-practitioner.json"),
            ),
            (
                "Encounter",
                include_str!("../../conformance/CompartmentDefinition-encounter.json"),
            ),
            (
                "RelatedPerson",
                include_str!("../../conformance/CompartmentDefinition-relatedPerson.json"),
            ),
            (
                "Device",
                include_str!("../../conformance/CompartmentDefinition-device.json"),
            ),
        ];
        sources
            .into_iter()
            .map(|(name, text)| {
                let def: Value = serde_json::from_str(text).expect("CompartmentDefinition JSON");
                let members = def["resource"]
                    .as_array()
                    .map(|rs| {
                        rs.iter()
                            .filter_map(|r| {
                                let params: Vec<String> = r["param"]
                                    .as_array()?
                                    .iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_string)
                                    .collect();
                                Some((r["code"].as_str()?.to_string(), params))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (name, members)
            })
            .collect()
    });

/// Whether `compartment` is one of the five R4 compartments.
pub fn is_compartment(compartment: &str) -> bool {
    COMPARTMENTS.contains_key(compartment)
}

/// The parameters that place a `resource_type` in `compartment`; `None` if it is never a
/// member.
pub fn links(compartment: &str, resource_type: &str) -> Option<&'static [String]> {
    COMPARTMENTS
        .get(compartment)?
        .get(resource_type)
        .map(Vec::as_slice)
}

/// The filter for "`resource_type` resources in `compartment`/`id`", as compartment
/// search reads it; `None` if the type is never a member.
pub fn filter(
    registry: &Registry,
    compartment: &str,
    id: &str,
    resource_type: &str,
) -> Option<Filter> {
    let links = links(compartment, resource_type)?;
    Some(Filter::AnyOf(
        links
            .iter()
            .filter(|code| registry.get(resource_type, code).is_some())
            .map(|code| Filter::Match {
                param: code.clone(),
                kind: ParamType::Reference,
                values: vec![Predicate::Reference {
                    target_type: Some(compartment.to_string()),
                    id: Some(id.to_string()),
                    url: None,
                }],
                negate: false,
            })
            .collect(),
    ))
}

/// What a patient-confined principal may see of `resource_type`: the patient's own record,
/// the members of their compartment, and (`None`) everything of types that hold no
/// patient's data (Practitioner, Schedule, Slot, Medication...).
pub fn patient_filter(registry: &Registry, patient: &str, resource_type: &str) -> Option<Filter> {
    if resource_type == "Patient" {
        // Not `link`: a linked record is another patient's.
        return Some(Filter::Ids(vec![patient.to_string()]));
    }
    filter(registry, "Patient", patient, resource_type)
}

/// Confines `search` to `patient`'s compartment: its matches, and every resource a chain or
/// `_has` looks at, so that no filter can reveal another patient's data.
pub fn confine_to_patient(search: &mut Search, registry: &Registry, patient: &str) {
    for f in &mut search.filters {
        confine_filter(f, registry, patient);
    }
    if let Some(own) = patient_filter(registry, patient, &search.resource_type) {
        search.filters.push(own);
    }
}

fn confine_filter(f: &mut Filter, registry: &Registry, patient: &str) {
    match f {
        Filter::Chain { targets, .. } => {
            for (target_type, inner) in targets.iter_mut() {
                confine_filter(inner, registry, patient);
                if let Some(own) = patient_filter(registry, patient, target_type) {
                    let narrowed = Filter::AllOf(vec![(**inner).clone(), own]);
                    **inner = narrowed;
                }
            }
        }
        Filter::Has {
            source_type, inner, ..
        } => {
            confine_filter(inner, registry, patient);
            if let Some(own) = patient_filter(registry, patient, source_type) {
                let narrowed = Filter::AllOf(vec![(**inner).clone(), own]);
                **inner = narrowed;
            }
        }
        Filter::AnyOf(fs) | Filter::AllOf(fs) => {
            for f in fs {
                confine_filter(f, registry, patient);
            }
        }
        Filter::Ids(_) | Filter::Match { .. } | Filter::Missing { .. } => {}
    }
}

/// Whether a resource with these index rows is visible to a principal confined to
/// `patient`: it is the patient, a member of their compartment, or of a type that holds no
/// patient's data.
pub fn visible_to_patient(resource_type: &str, id: &str, rows: &[IndexRow], patient: &str) -> bool {
    if resource_type == "Patient" {
        return id == patient;
    }
    let Some(links) = links("Patient", resource_type) else {
        return true;
    };
    rows.iter().any(|row| {
        links.contains(&row.param)
            && matches!(&row.value, IndexValue::Reference { target_type: Some(t), target_id: Some(i), .. }
                if t == "Patient" && i == patient)
    })
}

/// The patients whose data `resource` is: a Patient itself, or the patients that the
/// references placing it in the Patient compartment point to. For the audit trail.
pub fn patients_of(registry: &Registry, resource: &Value, base_url: &str) -> Vec<String> {
    let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
        return Vec::new();
    };
    if resource_type == "Patient" {
        return resource
            .get("id")
            .and_then(Value::as_str)
            .map(|id| vec![id.to_string()])
            .unwrap_or_default();
    }
    let Some(links) = links("Patient", resource_type) else {
        return Vec::new();
    };
    let mut patients = Vec::new();
    for row in crate::search::index::extract_only(registry, resource, base_url, links) {
        if let IndexValue::Reference {
            target_type: Some(t),
            target_id: Some(id),
            ..
        } = row.value
        {
            if t == "Patient" && !patients.contains(&id) {
                patients.push(id);
            }
        }
    }
    patients
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::index::extract;

    #[test]
    fn membership_follows_the_compartment_definition() {
        let registry = Registry::r4();
        let base = "http://h/fhir";
        let obs = serde_json::json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"text": "x"}, "subject": {"reference": "Patient/p1"}});
        let rows = extract(registry, &obs, base);
        assert!(visible_to_patient("Observation", "o1", &rows, "p1"));
        assert!(!visible_to_patient("Observation", "o1", &rows, "p2"));
        assert!(visible_to_patient("Patient", "p1", &[], "p1"));
        assert!(!visible_to_patient("Patient", "p2", &[], "p1"));
        // Practitioners hold no patient's data.
        assert!(visible_to_patient("Practitioner", "d1", &[], "p1"));
        assert!(links("Patient", "Slot").is_none());
    }

    #[test]
    fn the_patients_of_a_resource_are_found_through_its_compartment_links() {
        let registry = Registry::r4();
        let appt = serde_json::json!({"resourceType": "Appointment", "id": "a1", "status": "booked",
            "participant": [
                {"actor": {"reference": "Patient/p1"}, "status": "accepted"},
                {"actor": {"reference": "Practitioner/d1"}, "status": "accepted"},
                {"actor": {"reference": "http://h/fhir/Patient/p2"}, "status": "accepted"}]});
        assert_eq!(
            patients_of(registry, &appt, "http://h/fhir"),
            vec!["p1", "p2"]
        );
        let me = serde_json::json!({"resourceType": "Patient", "id": "p9"});
        assert_eq!(patients_of(registry, &me, "http://h/fhir"), vec!["p9"]);
        let slot = serde_json::json!({"resourceType": "Slot", "id": "s"});
        assert!(patients_of(registry, &slot, "http://h/fhir").is_empty());
    }
}
