//! `GET [base]/metadata`: the CapabilityStatement, generated from what this build really
//! implements and nothing more. <https://hl7.org/fhir/R4/capabilitystatement.html>

use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Value};

use super::reply::Reply;
use super::request::FhirRequest;
use super::AppState;
use crate::fhir::resource_type::RESOURCE_TYPES;

/// The interactions every resource type supports in this build.
const TYPE_INTERACTIONS: [&str; 7] = [
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
];

/// Builds the statement once, at start.
pub fn statement(base_url: &str, started: &str) -> Value {
    let resources: Vec<Value> = RESOURCE_TYPES
        .iter()
        .map(|t| {
            json!({
                "type": t,
                "profile": format!("http://hl7.org/fhir/StructureDefinition/{t}"),
                "interaction": TYPE_INTERACTIONS.iter().map(|i| json!({"code": i})).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": false,
                "conditionalRead": "full-support",
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
            })
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": started,
        "publisher": "Hearth",
        "kind": "instance",
        "software": {"name": "Hearth", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Hearth FHIR R4 server", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/fhir+xml", "json", "xml"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": [{"code": "history-system"}],
        }],
    })
}

pub async fn metadata(State(state): State<AppState>, req: FhirRequest) -> Response {
    req.respond(Ok(Reply::ok(state.capability.clone())))
}
