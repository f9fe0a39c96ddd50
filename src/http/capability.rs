//! `GET [base]/metadata`: the CapabilityStatement, generated from what this build really
//! implements and nothing more. <https://hl7.org/fhir/R4/capabilitystatement.html>

use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Value};

use super::reply::Reply;
use super::request::FhirRequest;
use super::AppState;
use crate::fhir::resource_type::RESOURCE_TYPES;
use crate::search::registry::{ParamType, Registry};

/// The interactions every resource type supports in this build.
const TYPE_INTERACTIONS: [&str; 9] = [
    "read",
    "patch",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
];

/// The search parameters of a type that Hearth indexes, as CapabilityStatement lists them.
fn search_params(registry: &Registry, resource_type: &str) -> (Vec<Value>, Vec<String>) {
    let mut params = Vec::new();
    let mut includes = Vec::new();
    for p in registry.params(resource_type).filter(|p| p.is_indexed()) {
        let mut param = json!({
            "name": p.code,
            "definition": p.url,
            "type": p.kind.code(),
        });
        if !p.description.is_empty() {
            param["documentation"] = json!(p.description);
        }
        params.push(param);
        if p.kind == ParamType::Reference {
            includes.push(format!("{resource_type}:{}", p.code));
        }
    }
    (params, includes)
}

/// Hearth's operations: the resource type, the name, and the id of the OperationDefinition
/// in `conformance/`.
const OPERATIONS: [(&str, &str, &str); 3] = [
    ("Appointment", "find", "appointment-find"),
    ("Appointment", "book", "appointment-book"),
    ("Schedule", "generate-slots", "schedule-generate-slots"),
];

/// Builds the statement once, at start.
/// The CapabilityStatement; `issuer` is the authorization server's, `None` under
/// `--auth off`.
pub fn statement(
    base_url: &str,
    started: &str,
    registry: &Registry,
    issuer: Option<&str>,
) -> Value {
    let resources: Vec<Value> = RESOURCE_TYPES
        .iter()
        .map(|t| {
            let (params, includes) = search_params(registry, t);
            let mut resource = json!({
                "type": t,
                "profile": format!("http://hl7.org/fhir/StructureDefinition/{t}"),
                "interaction": TYPE_INTERACTIONS.iter().map(|i| json!({"code": i})).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "full-support",
                "conditionalUpdate": true,
                "conditionalDelete": "multiple",
            });
            if *t == "AuditEvent" {
                // The audit trail is append-only.
                resource["interaction"] = json!(TYPE_INTERACTIONS
                    .iter()
                    .filter(|i| !matches!(**i, "patch" | "update" | "delete"))
                    .map(|i| json!({"code": i}))
                    .collect::<Vec<_>>());
                resource["updateCreate"] = json!(false);
                resource["conditionalUpdate"] = json!(false);
                resource["conditionalDelete"] = json!("not-supported");
            }
            let operations: Vec<Value> = OPERATIONS
                .iter()
                .filter(|(on, _, _)| on == t)
                .map(|(_, name, id)| {
                    json!({"name": name,
                           "definition": format!("http://hearth.health/fhir/OperationDefinition/{id}")})
                })
                .collect();
            if !operations.is_empty() {
                resource["operation"] = json!(operations);
            }
            if !includes.is_empty() {
                resource["searchInclude"] = json!(includes);
            }
            if !params.is_empty() {
                resource["searchParam"] = json!(params);
            }
            resource
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
            "security": security(issuer),
            "resource": resources,
            "interaction": [
                {"code": "transaction"},
                {"code": "batch"},
                {"code": "history-system"},
                {"code": "search-system"},
            ],
        }],
    })
}

pub async fn metadata(State(state): State<AppState>, req: FhirRequest) -> Response {
    let statement = state
        .capability
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    req.respond(Ok(Reply::ok(statement)))
}

/// `rest.security`: SMART on FHIR, with the OAuth endpoints, or (under `--auth off`) a
/// plain statement that there is none.
/// <https://hl7.org/fhir/smart-app-launch/conformance.html#using-cors>
fn security(issuer: Option<&str>) -> serde_json::Value {
    match issuer {
        // No CORS headers yet: browser apps on other origins need a proxy that adds them.
        Some(issuer) => json!({
            "cors": false,
            "extension": [{
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": "authorize", "valueUri": format!("{issuer}/authorize")},
                    {"url": "token", "valueUri": format!("{issuer}/token")},
                    {"url": "introspect", "valueUri": format!("{issuer}/introspect")},
                    {"url": "revoke", "valueUri": format!("{issuer}/revoke")},
                ],
            }],
            "service": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR",
            }]}],
            "description": "SMART App Launch 2 and Backend Services; see .well-known/smart-configuration",
        }),
        None => json!({
            "cors": false,
            "description": "Authorization is OFF on this server (--auth off)",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::OPERATIONS;

    /// Each operation the statement names has its OperationDefinition in `conformance/`,
    /// with the same canonical URL, code and resource type.
    #[test]
    fn operations_have_their_definitions() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance");
        for (on, name, id) in OPERATIONS {
            let path = dir.join(format!("OperationDefinition-{id}.json"));
            let text = std::fs::read_to_string(&path).expect("the definition is in conformance/");
            let def: serde_json::Value = serde_json::from_str(&text).expect("it is JSON");
            assert_eq!(def["resourceType"], "OperationDefinition");
            assert_eq!(def["id"], id);
            assert_eq!(def["code"], name);
            assert_eq!(def["resource"][0], on);
            assert_eq!(
                def["url"],
                format!("http://hearth.health/fhir/OperationDefinition/{id}")
            );
        }
    }
}
