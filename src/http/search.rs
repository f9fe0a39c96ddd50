//! Search over HTTP: `GET [base]/[type]?...`, `POST [base]/[type]/_search`, and compartment
//! search `GET [base]/Patient/[id]/[type]`. Parsing and SQL live in `search/` and `store/`;
//! this file turns a request into a [`Search`] and a page into a searchset Bundle.
//! <https://hl7.org/fhir/R4/search.html>

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::Response;
use chrono::Utc;
use serde_json::{json, Value};

use super::audit::PostedSearch;
use super::format::read_bytes;
use super::guard;
use super::history::link;
use super::reply::Reply;
use super::request::FhirRequest;
use super::rest::check_type;
use super::AppState;
use crate::error::{Error, ErrorKind, Result};
use crate::fhir::datetime::format_instant;
use crate::fhir::outcome::{operation_outcome, Issue, IssueType};
use crate::fhir::resource_type::RESOURCE_TYPES;
use crate::fhir::summary::{self, Subset};
use crate::search::compartment;
use crate::search::query::{self, Filter, Search, Summary};
use crate::store::Version;

/// `GET [base]?_type=...&...`: a search across resource types (every type without `_type`),
/// with the parameters every one of those types has. <https://hl7.org/fhir/R4/search.html#all>
pub async fn system_get(State(state): State<AppState>, req: FhirRequest) -> Response {
    let result = system(&state, &req, &req.params).await;
    req.respond(result)
}

async fn system(state: &AppState, req: &FhirRequest, params: &[(String, String)]) -> Result<Reply> {
    let mut types: Vec<String> = Vec::new();
    let mut rest = Vec::new();
    for (k, v) in params {
        if k == "_type" {
            for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                check_type(t)?;
                types.push(t.to_string());
            }
        } else {
            rest.push((k.clone(), v.clone()));
        }
    }
    let listed = !types.is_empty();
    if !listed {
        types = RESOURCE_TYPES.iter().map(|t| t.to_string()).collect();
    }
    types.sort();
    types.dedup();
    let registry = state.store.indexer().registry();
    let lenient = req.lenient(state.lenient_by_default);
    // Every parameter must mean something for every type searched.
    let mut search = None;
    for t in &types {
        let parsed = query::parse(&registry, &state.base_url, t, &rest, lenient).map_err(|e| {
            param_error(query::ParamError {
                message: format!("{} (searching {t})", e.message),
                ..e
            })
        })?;
        search.get_or_insert(parsed);
    }
    let mut search = search.ok_or_else(|| Error::bad_request("_type lists no resource type"))?;
    search.types = types.clone();
    if listed {
        search
            .canonical
            .insert(0, ("_type".to_string(), types.join(",")));
    }
    guard::search(state, &req.access, &mut search)?;
    let count_only = search.summary == Summary::Count || search.count == 0;
    let mut page = state.store.search(&search, count_only).await?;
    page.included
        .retain(|v| guard::visible(state, &req.access, v));
    Ok(Reply::ok(bundle(state, req, &search, page, "/")))
}

/// `POST [base]/_search` with a form-encoded body.
pub async fn system_post(State(state): State<AppState>, req: FhirRequest, body: Body) -> Response {
    let mut posted = None;
    let result = async {
        let params = form_params(&state, &req, body).await?;
        posted = Some(PostedSearch::of("", &params));
        system(&state, &req, &params).await
    }
    .await;
    with_posted(req.respond(result), posted)
}

/// Tells the audit trail what a `POST _search` asked for (its form parameters included).
fn with_posted(mut response: Response, posted: Option<PostedSearch>) -> Response {
    if let Some(posted) = posted {
        response.extensions_mut().insert(posted);
    }
    response
}

/// The URL parameters plus those of a form-encoded body (`POST .../_search`).
async fn form_params(
    state: &AppState,
    req: &FhirRequest,
    body: Body,
) -> Result<Vec<(String, String)>> {
    let form = req
        .header(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let bytes = read_bytes(&req.headers, body, state.max_body_bytes).await?;
    if !form && !bytes.is_empty() {
        return Err(Error::new(
            ErrorKind::UnsupportedMediaType,
            IssueType::NotSupported,
            "POST _search takes an application/x-www-form-urlencoded body",
        ));
    }
    let mut params = req.params.clone();
    params.extend(
        form_urlencoded::parse(&bytes)
            .filter(|(k, _)| k != "_format" && k != "_pretty")
            .map(|(k, v)| (k.into_owned(), v.into_owned())),
    );
    Ok(params)
}

/// `GET [base]/[type]?...`
pub async fn type_get(
    State(state): State<AppState>,
    req: FhirRequest,
    Path(resource_type): Path<String>,
) -> Response {
    let params = req.params.clone();
    let path = format!("/{resource_type}");
    let result = run(&state, &req, &resource_type, &params, None, &path).await;
    req.respond(result)
}

/// `POST [base]/[type]/_search` with a form-encoded body; URL parameters count too.
pub async fn type_post(
    State(state): State<AppState>,
    req: FhirRequest,
    Path(resource_type): Path<String>,
    body: Body,
) -> Response {
    let mut posted = None;
    let result = async {
        let params = form_params(&state, &req, body).await?;
        posted = Some(PostedSearch::of(&resource_type, &params));
        let path = format!("/{resource_type}");
        run(&state, &req, &resource_type, &params, None, &path).await
    }
    .await;
    with_posted(req.respond(result), posted)
}

/// `GET [base]/[Compartment]/[id]/[type]?...`: a search within a compartment, following the
/// R4 CompartmentDefinitions. <https://hl7.org/fhir/R4/compartmentdefinition.html>
pub async fn compartment(
    State(state): State<AppState>,
    req: FhirRequest,
    Path((compartment, id, resource_type)): Path<(String, String, String)>,
) -> Response {
    let result = async {
        if !compartment::is_compartment(&compartment) {
            return Err(Error::not_found(format!(
                "{compartment} is not a compartment (Patient, Practitioner, Encounter, RelatedPerson, Device)"
            )));
        }
        check_type(&resource_type)?;
        if !crate::fhir::id::is_valid_id(&id) {
            return Err(Error::bad_request(format!("'{id}' is not a valid id")));
        }
        let registry = state.store.indexer().registry();
        let Some(in_compartment) =
            compartment::filter(&registry, &compartment, &id, &resource_type)
        else {
            return Err(Error::bad_request(format!(
                "{resource_type} is not part of the {compartment} compartment"
            )));
        };
        let path = format!("/{compartment}/{id}/{resource_type}");
        run(
            &state,
            &req,
            &resource_type,
            &req.params,
            Some(in_compartment),
            &path,
        )
        .await
    }
    .await;
    req.respond(result)
}

/// A refused search parameter as a 400 OperationOutcome.
pub fn param_error(e: query::ParamError) -> Error {
    Error::with_issues(
        ErrorKind::BadRequest,
        vec![Issue::error(
            if e.message.contains("not supported") {
                IssueType::NotSupported
            } else {
                IssueType::Invalid
            },
            format!("search parameter '{}': {}", e.param, e.message),
        )],
    )
}

/// Parses, runs and renders one search.
pub(super) async fn run(
    state: &AppState,
    req: &FhirRequest,
    resource_type: &str,
    params: &[(String, String)],
    scope: Option<Filter>,
    path: &str,
) -> Result<Reply> {
    check_type(resource_type)?;
    let mut search = query::parse(
        &state.store.indexer().registry(),
        &state.base_url,
        resource_type,
        params,
        req.lenient(state.lenient_by_default),
    )
    .map_err(param_error)?;
    if let Some(scope) = scope {
        search.filters.push(scope);
    }
    guard::search(state, &req.access, &mut search)?;
    let count_only = search.summary == Summary::Count || search.count == 0;
    let mut page = state.store.search(&search, count_only).await?;
    page.included
        .retain(|v| guard::visible(state, &req.access, v));
    Ok(Reply::ok(bundle(state, req, &search, page, path)))
}

fn bundle(
    state: &AppState,
    req: &FhirRequest,
    search: &Search,
    page: crate::store::SearchPage,
    path: &str,
) -> Value {
    let mut self_params = search.canonical.clone();
    if let Some(c) = &search.cursor {
        self_params.push(("_cursor".into(), c.clone()));
    }
    let mut links =
        vec![json!({"relation": "self", "url": link(&state.base_url, path, &self_params, req)})];
    if let Some(next) = &page.next {
        let mut next_params = search.canonical.clone();
        next_params.push(("_cursor".into(), next.clone()));
        links.push(
            json!({"relation": "next", "url": link(&state.base_url, path, &next_params, req)}),
        );
    }
    let subset = match (&search.elements, search.summary) {
        (_, Summary::True) => Some(Subset::Summary),
        (_, Summary::Text) => Some(Subset::Text),
        (_, Summary::Data) => Some(Subset::Data),
        (Some(names), _) => Some(Subset::Elements(names.clone())),
        _ => None,
    };
    let entry = |v: Version, mode: &str| {
        let mut resource = v.body.unwrap_or(Value::Null);
        if let Some(subset) = &subset {
            summary::apply(&mut resource, subset);
        }
        json!({
            "fullUrl": format!("{}/{}/{}", state.base_url, v.resource_type, v.id),
            "resource": resource,
            "search": {"mode": mode},
        })
    };
    let mut entries: Vec<Value> = page
        .matches
        .into_iter()
        .map(|v| entry(v, "match"))
        .collect();
    entries.extend(page.included.into_iter().map(|v| entry(v, "include")));
    if !search.ignored.is_empty() {
        let issues = vec![Issue {
            severity: crate::fhir::outcome::Severity::Warning,
            ..Issue::information(format!(
                "ignored unknown search parameters: {}",
                search.ignored.join(", ")
            ))
        }];
        entries.push(json!({
            "resource": operation_outcome(&issues),
            "search": {"mode": "outcome"},
        }));
    }
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": crate::fhir::id::new_id(),
        "meta": {"lastUpdated": format_instant(Utc::now())},
        "type": "searchset",
    });
    if let Some(total) = page.total {
        bundle["total"] = json!(total);
    }
    bundle["link"] = json!(links);
    if !entries.is_empty() {
        bundle["entry"] = json!(entries);
    }
    bundle
}
