//! The audit trail at the HTTP edge. A middleware around every FHIR request (outside
//! authentication, so that refusals are recorded too) records one AuditEvent per request
//! after it is answered: the interaction, its outcome, who asked from where, the resources
//! the answer disclosed and their patients. Writes record theirs inside their own database
//! transaction instead ([`trail`]) and mark the response [`AuditNote::InTransaction`].
//! <https://profiles.ihe.net/ITI/BALP/content.html>

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;

use super::request::FhirRequest;
use super::AppState;
use crate::audit::{Agent, Event};
use crate::auth::Access;
use crate::search::compartment::patients_of;
use crate::store::audit_events::AuditRecord;
use crate::store::{Indexer, Written};

/// The request id `observe` gave the request.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// How a response's audit is taken care of; `FhirRequest::respond` attaches it.
#[derive(Debug, Clone)]
pub enum AuditNote {
    /// The AuditEvent was written already (with the write, or by the handler itself).
    Recorded,
    /// What the answer carried.
    Disclosed {
        entities: Vec<String>,
        patients: Vec<String>,
    },
}

/// The search a `POST _search` ran, as the equivalent `GET` (`Patient?name=x`): its URL and
/// form parameters together. The middleware records it instead of the URL's query, which
/// holds only part of it (clients POST searches precisely to keep parameters out of URLs).
#[derive(Debug, Clone)]
pub struct PostedSearch(pub String);

impl PostedSearch {
    /// `target` is `Patient` for a type search, empty for a system one.
    pub fn of(target: &str, params: &[(String, String)]) -> PostedSearch {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        PostedSearch(format!("{target}?{query}"))
    }
}

/// The resources a response body carries (a resource, or the entries of a search or history
/// Bundle) and the patients whose data they are.
pub fn disclosed(body: &Value, indexer: &Indexer) -> AuditNote {
    let registry = indexer.registry();
    let mut entities = Vec::new();
    let mut patients: Vec<String> = Vec::new();
    let mut add = |r: &Value| {
        let (Some(t), Some(id)) = (
            r.get("resourceType").and_then(Value::as_str),
            r.get("id").and_then(Value::as_str),
        ) else {
            return;
        };
        if t == "OperationOutcome" {
            return;
        }
        entities.push(match r.pointer("/meta/versionId").and_then(Value::as_str) {
            Some(v) => format!("{t}/{id}/_history/{v}"),
            None => format!("{t}/{id}"),
        });
        for p in patients_of(&registry, r, &indexer.base_url) {
            if !patients.contains(&p) {
                patients.push(p);
            }
        }
    };
    let is_listing = body.get("resourceType").and_then(Value::as_str) == Some("Bundle")
        && matches!(
            body.get("type").and_then(Value::as_str),
            Some("searchset" | "history")
        );
    if is_listing {
        for e in body["entry"].as_array().into_iter().flatten() {
            if let Some(r) = e.get("resource") {
                add(r);
            }
        }
    } else {
        add(body);
    }
    AuditNote::Disclosed { entities, patients }
}

/// The agent of a request: the token's user and client, and the peer address.
fn agent(access: Option<&Access>, peer: Option<SocketAddr>) -> Agent {
    let principal = access.and_then(Access::principal);
    Agent {
        fhir_user: principal.and_then(|p| p.fhir_user.clone()),
        subject: principal.map(|p| p.subject.clone()),
        client_id: principal.map(|p| p.client_id.clone()),
        address: peer.map(|a| a.ip().to_string()),
    }
}

/// The `restful-interaction` code of a route. <https://hl7.org/fhir/R4/valueset-type-restful-interaction.html>
fn interaction(method: &axum::http::Method, route: Option<&str>) -> &'static str {
    match super::metrics::interaction(method, route) {
        "conditional-update" => "update",
        "conditional-delete" => "delete",
        "search-compartment" => "search",
        "other" => "operation",
        known => known,
    }
}

/// Records every FHIR request but the public discovery documents.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let fhir = path == "/fhir" || path.starts_with("/fhir/");
    let public = path == "/fhir/metadata" || path == "/fhir/.well-known/smart-configuration";
    if !state.audit.enabled() || !fhir || public {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let code = interaction(request.method(), route.as_deref());
    let relative = path.trim_start_matches("/fhir").trim_start_matches('/');
    let target = relative.to_string();
    let query = code
        .starts_with("search")
        .then(|| format!("{relative}?{}", request.uri().query().unwrap_or("")));
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let request_id = request.extensions().get::<RequestId>().map(|r| r.0.clone());

    let mut response = next.run(request).await;

    // Taken out, not cloned: nothing after this layer reads it.
    let note = response.extensions_mut().remove::<AuditNote>();
    if matches!(note, Some(AuditNote::Recorded)) {
        return response;
    }
    let mut event = Event::new(
        code,
        response.status().as_u16(),
        agent(response.extensions().get::<Access>(), peer),
    );
    event.request_id = request_id;
    event.query = match response.extensions_mut().remove::<PostedSearch>() {
        Some(posted) => Some(posted.0),
        None => query,
    };
    match note {
        Some(AuditNote::Disclosed { entities, patients }) => {
            event.entities = entities;
            event.patients = patients;
        }
        // A failure names what was asked for.
        _ if !target.is_empty() && !target.starts_with('_') && event.query.is_none() => {
            event.entities.push(target)
        }
        _ => {}
    }
    state.audit.record(event).await;
    response
}

/// Records one interaction inside a Bundle (a read, or a write that failed): what it
/// disclosed, or else what it asked for.
pub async fn record_entry(
    state: &AppState,
    req: &FhirRequest,
    code: &str,
    status: u16,
    resource: Option<&Value>,
    target: &str,
) {
    if !state.audit.enabled() {
        return;
    }
    let mut event = Event::new(code, status, agent(Some(&req.access), req.peer));
    event.request_id = req.request_id.clone();
    if code.starts_with("search") {
        event.query = Some(target.to_string());
    }
    match resource.map(|r| disclosed(r, state.store.indexer())) {
        Some(AuditNote::Disclosed { entities, patients }) => {
            event.entities = entities;
            event.patients = patients;
        }
        _ if event.query.is_none() => event.entities.push(target.to_string()),
        _ => {}
    }
    state.audit.record(event).await;
}

/// The [`Trail`](crate::store::Trail) of a write: one AuditEvent per written version, made
/// inside the write's transaction so that both commit or neither does. An empty `code`
/// names each write by what it did (Bundle entries): create, update or delete.
pub fn trail<'a>(
    state: &'a AppState,
    req: &'a FhirRequest,
    code: &'a str,
) -> impl Fn(&[Written]) -> Vec<AuditRecord> + Send + Sync + 'a {
    move |done: &[Written]| {
        if !state.audit.enabled() {
            return Vec::new();
        }
        let indexer = state.store.indexer();
        let registry = indexer.registry();
        done.iter()
            .filter_map(|w| Some((w.version.as_ref()?, w.created, w.before.as_ref())))
            .map(|(v, created, before)| {
                let status = if created { 201 } else { 200 };
                let code = match code {
                    "" if created => "create",
                    "" if v.is_deleted() => "delete",
                    "" => "update",
                    named => named,
                };
                let mut event = Event::new(code, status, agent(Some(&req.access), req.peer));
                event.request_id = req.request_id.clone();
                event.entities = vec![format!(
                    "{}/{}/_history/{}",
                    v.resource_type, v.id, v.version
                )];
                // A delete's patients are those of the body it removed.
                event.patients = match v.body.as_ref().or(before) {
                    Some(body) => patients_of(&registry, body, &indexer.base_url),
                    None if v.resource_type == "Patient" => vec![v.id.clone()],
                    None => Vec::new(),
                };
                state.audit.record_now(&event)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::PostedSearch;

    #[test]
    fn a_posted_search_reads_as_the_equivalent_get() {
        let params = [
            ("_count".to_string(), "10".to_string()),
            ("name".to_string(), "O'Brien & Sons".to_string()),
        ];
        assert_eq!(
            PostedSearch::of("Patient", &params).0,
            "Patient?_count=10&name=O%27Brien+%26+Sons"
        );
        assert_eq!(PostedSearch::of("", &[]).0, "?");
    }
}
