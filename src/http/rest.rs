//! The instance and type interactions: create, read, vread, update, delete.
//! <https://hl7.org/fhir/R4/http.html>

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::audit;
use super::format::read_resource;
use super::guard;
use super::reply::Reply;
use super::request::FhirRequest;
use super::scheduling;
use super::AppState;
use crate::auth::scope::Interaction;
use crate::error::{Error, ErrorKind, Result};
use crate::fhir::datetime::parse_http_date;
use crate::fhir::id::{etag, is_valid_id, parse_etag, parse_version};
use crate::fhir::outcome::IssueType;
use crate::fhir::resource_type::is_resource_type;
use crate::search::query::{self, Search};

use crate::store::{ResourceStore, Version, Write};

/// Refuses a URL whose type is not an R4 resource type.
pub fn check_type(resource_type: &str) -> Result<()> {
    if is_resource_type(resource_type) {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "'{resource_type}' is not an R4 resource type"
        )))
    }
}

pub(super) fn check_id(id: &str) -> Result<()> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "'{id}' is not a valid id (1 to 64 letters, digits, '-' or '.')"
        )))
    }
}

/// Checks that a write's body is a valid resource of the URL's type.
pub(super) fn check_resource(
    state: &AppState,
    resource: &Value,
    resource_type: &str,
) -> Result<()> {
    match resource.get("resourceType").and_then(Value::as_str) {
        Some(t) if t == resource_type => {}
        Some(t) => {
            return Err(Error::bad_request(format!(
                "the body is a {t} but the URL is for {resource_type}"
            )))
        }
        None => return Err(Error::bad_request("the body has no resourceType")),
    }
    state
        .validator
        .validate(resource)
        .map_err(|issues| Error::with_issues(ErrorKind::Invalid, issues))
}

/// `POST [base]/[type]`
pub async fn create(
    State(state): State<AppState>,
    req: FhirRequest,
    Path(resource_type): Path<String>,
    body: Body,
) -> Response {
    let result = async {
        check_type(&resource_type)?;
        let mut resource = read_resource(&req.headers, body, state.max_body_bytes).await?;
        // The server assigns the id; one in the body is ignored (R4 http.html#create).
        if let Value::Object(map) = &mut resource {
            map.shift_remove("id");
        }
        check_resource(&state, &resource, &resource_type)?;
        guard::write(
            &state,
            &req.access,
            &resource_type,
            None,
            Interaction::Create,
            Some(&resource),
        )
        .await?;
        let v = match req.header(HeaderName::from_static("if-none-exist")) {
            None if resource_type == "Appointment" => {
                return scheduling::write_appointment(&state, &req, None, resource, None).await;
            }
            None => {
                let trail = audit::trail(&state, &req, "create");
                state
                    .store
                    .create(&resource_type, resource, Some(&trail))
                    .await?
            }
            // Conditional create: <https://hl7.org/fhir/R4/http.html#ccreate>
            Some(criteria) => {
                let criteria = criteria.trim_start_matches('?');
                let criteria = criteria.split_once('?').map_or(criteria, |(_, q)| q);
                let mut search = conditional_search(&state, &resource_type, criteria)?;
                guard::search(&state, &req.access, &mut search)?;
                let trail = audit::trail(&state, &req, "create");
                match state
                    .store
                    .create_if_none_exist(&resource_type, resource, &search, Some(&trail))
                    .await?
                {
                    Ok(v) => v,
                    Err(found) if found.len() == 1 => {
                        return Ok(Reply::written(
                            StatusCode::OK,
                            &found[0],
                            &state.base_url,
                            req.prefer_return,
                        ))
                    }
                    Err(_) => {
                        return Err(multiple_matches("If-None-Exist"));
                    }
                }
            }
        };
        after_write(&state, &resource_type).await;
        Ok(Reply::written(StatusCode::CREATED, &v, &state.base_url, req.prefer_return).recorded())
    }
    .await;
    req.respond(result)
}

/// After a write: a SearchParameter changes what search can do. The registry and the
/// CapabilityStatement are rebuilt at once; the types whose parameters changed are
/// reindexed in the background.
pub(super) async fn after_write(state: &AppState, resource_type: &str) {
    if resource_type != "SearchParameter" {
        return;
    }
    let before = state.store.indexer().registry();
    match state.store.load_search_parameters().await {
        Ok(refused) => {
            for r in refused {
                tracing::warn!(refused = r, "custom SearchParameter not used");
            }
        }
        Err(e) => {
            tracing::error!(error = e.message(), "cannot reload search parameters");
            return;
        }
    }
    let after = state.store.indexer().registry();
    let changed = before.changed_types(&after);
    if changed.is_empty() {
        // A draft or retired parameter, or one Hearth cannot use: nothing searchable changed.
        return;
    }
    let issuer = state
        .enforce_auth
        .then_some(state.auth.settings.issuer.as_str());
    let statement = super::capability::statement(&state.base_url, &state.started, &after, issuer);
    *state.capability.write().unwrap_or_else(|e| e.into_inner()) = statement;
    let store = state.store.clone();
    tokio::spawn(async move {
        match store.reindex(Some(&changed)).await {
            Ok(n) => tracing::info!(resources = n, "reindexed after a SearchParameter change"),
            Err(e) => tracing::error!(error = e.message(), "reindex failed"),
        }
    });
}

/// Updates (or creates at `id`) and answers as an update does: 201 or 200.
async fn update_at(
    state: &AppState,
    req: &FhirRequest,
    (resource_type, id): (&str, &str),
    resource: Value,
    expected: Option<i64>,
    code: &str,
) -> Result<Reply> {
    if resource_type == "AuditEvent" {
        return create_audit_event_at(state, req, id, resource).await;
    }
    guard::write(
        state,
        &req.access,
        resource_type,
        Some(id),
        Interaction::Update,
        Some(&resource),
    )
    .await?;
    if resource_type == "Appointment" {
        return scheduling::write_appointment(state, req, Some(id), resource, expected).await;
    }
    let trail = audit::trail(state, req, code);
    let updated = state
        .store
        .update(resource_type, id, resource, expected, Some(&trail))
        .await?;
    after_write(state, resource_type).await;
    let status = if updated.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(Reply::written(status, &updated.version, &state.base_url, req.prefer_return).recorded())
}

/// `PUT AuditEvent/[id]` appends an event at a client-chosen id (how the official examples
/// are loaded) but never replaces one: an existing id is `405`, atomically.
async fn create_audit_event_at(
    state: &AppState,
    req: &FhirRequest,
    id: &str,
    resource: Value,
) -> Result<Reply> {
    guard::write(
        state,
        &req.access,
        "AuditEvent",
        None,
        Interaction::Create,
        Some(&resource),
    )
    .await?;
    let create = Write::Create {
        resource_type: "AuditEvent".into(),
        id: id.to_string(),
        body: resource,
        unless: None,
    };
    let trail = audit::trail(state, req, "create");
    let written = match state
        .store
        .transaction(vec![(0, create)], Some(&trail))
        .await
    {
        Err(e) if e.kind == ErrorKind::Conflict => return Err(crate::store::append_only()),
        other => other?,
    };
    let v = written
        .into_iter()
        .next()
        .and_then(|w| w.version)
        .ok_or_else(|| Error::internal("the create wrote no version"))?;
    Ok(Reply::written(StatusCode::CREATED, &v, &state.base_url, req.prefer_return).recorded())
}

/// Deletes one resource (nothing if it is not there).
async fn delete_at(
    state: &AppState,
    req: &FhirRequest,
    resource_type: &str,
    id: &str,
    expected: Option<i64>,
) -> Result<Option<Version>> {
    append_only(resource_type)?;
    guard::write(
        state,
        &req.access,
        resource_type,
        Some(id),
        Interaction::Delete,
        None,
    )
    .await?;
    let trail = audit::trail(state, req, "delete");
    if resource_type == "Appointment" {
        // Deleting an Appointment frees its Slots, in the same transaction.
        let mut writes = scheduling::release_on_delete(state, id).await?;
        writes.push(Write::Delete {
            resource_type: resource_type.into(),
            id: id.into(),
            expected,
        });
        let numbered = writes.into_iter().enumerate().collect();
        let each = audit::trail(state, req, "");
        let written = state.store.transaction(numbered, Some(&each)).await?;
        return Ok(written.into_iter().last().and_then(|w| w.version));
    }
    let deleted = state
        .store
        .delete(resource_type, id, expected, Some(&trail))
        .await?;
    after_write(state, resource_type).await;
    Ok(deleted)
}

/// AuditEvents are append-only: no update, patch or delete through the API (405).
/// <https://hl7.org/fhir/R4/auditevent.html#6.4.4.2>
pub(super) fn append_only(resource_type: &str) -> Result<()> {
    if resource_type == "AuditEvent" {
        return Err(crate::store::append_only());
    }
    Ok(())
}

/// Parses the criteria of a conditional interaction. Always strict: a criterion silently
/// dropped would widen what is updated or deleted.
pub(super) fn conditional_search(
    state: &AppState,
    resource_type: &str,
    criteria: &str,
) -> Result<Search> {
    let params: Vec<(String, String)> = form_urlencoded::parse(criteria.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if params.is_empty() {
        return Err(Error::bad_request(
            "a conditional interaction needs search criteria",
        ));
    }
    let search = query::parse(
        &state.store.indexer().registry(),
        &state.base_url,
        resource_type,
        &params,
        false,
    )
    .map_err(super::search::param_error)?;
    if search.filters.is_empty() {
        return Err(Error::bad_request(
            "a conditional interaction needs at least one search filter",
        ));
    }
    Ok(search)
}

pub(super) fn multiple_matches(what: &str) -> Error {
    Error::new(
        ErrorKind::PreconditionFailed,
        IssueType::MultipleMatches,
        format!("the {what} criteria match more than one resource"),
    )
}

/// The most resources one conditional delete removes; more matches give 412.
const MAX_CONDITIONAL_DELETE: usize = 100;

/// `PUT [base]/[type]?criteria`: conditional update. <https://hl7.org/fhir/R4/http.html#cond-update>
pub async fn conditional_update(
    State(state): State<AppState>,
    req: FhirRequest,
    Path(resource_type): Path<String>,
    body: Body,
) -> Response {
    let result = async {
        check_type(&resource_type)?;
        let criteria = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&req.params)
            .finish();
        let mut search = conditional_search(&state, &resource_type, &criteria)?;
        guard::search(&state, &req.access, &mut search)?;
        let expected = req.if_match()?;
        let resource = read_resource(&req.headers, body, state.max_body_bytes).await?;
        check_resource(&state, &resource, &resource_type)?;
        let body_id = resource
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string);
        let found = state.store.matches(&search, 2).await?;
        let id = match (found.as_slice(), body_id) {
            ([], None) => {
                let trail = audit::trail(&state, &req, "create");
                let v = state
                    .store
                    .create(&resource_type, resource, Some(&trail))
                    .await?;
                after_write(&state, &resource_type).await;
                return Ok(Reply::written(
                    StatusCode::CREATED,
                    &v,
                    &state.base_url,
                    req.prefer_return,
                )
                .recorded());
            }
            ([], Some(id)) => {
                check_id(&id)?;
                id
            }
            ([one], None) => one.id.clone(),
            ([one], Some(id)) if one.id == id => id,
            ([one], Some(id)) => {
                return Err(Error::bad_request(format!(
                    "the body's id '{id}' is not the id '{}' of the resource the criteria match",
                    one.id
                )))
            }
            _ => return Err(multiple_matches("update")),
        };
        let mut resource = resource;
        resource["id"] = Value::String(id.clone());
        update_at(
            &state,
            &req,
            (&resource_type, &id),
            resource,
            expected,
            "update",
        )
        .await
    }
    .await;
    req.respond(result)
}

/// `DELETE [base]/[type]?criteria`: conditional delete of every match (up to a limit).
/// <https://hl7.org/fhir/R4/http.html#3.1.0.7.1>
pub async fn conditional_delete(
    State(state): State<AppState>,
    req: FhirRequest,
    Path(resource_type): Path<String>,
) -> Response {
    let result = async {
        check_type(&resource_type)?;
        let criteria = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&req.params)
            .finish();
        let mut search = conditional_search(&state, &resource_type, &criteria)?;
        guard::search(&state, &req.access, &mut search)?;
        let found = state
            .store
            .matches(&search, MAX_CONDITIONAL_DELETE + 1)
            .await?;
        if found.len() > MAX_CONDITIONAL_DELETE {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                IssueType::TooCostly,
                format!(
                    "the criteria match more than {MAX_CONDITIONAL_DELETE} resources; narrow them"
                ),
            ));
        }
        for v in &found {
            delete_at(&state, &req, &resource_type, &v.id, None).await?;
        }
        let reply = Reply::empty(StatusCode::NO_CONTENT);
        // Each deletion was audited with it; deleting nothing is audited as asked.
        Ok(if found.is_empty() {
            reply
        } else {
            reply.recorded()
        })
    }
    .await;
    req.respond(result)
}

/// `GET [base]/[type]/[id]`, with `If-None-Match` and `If-Modified-Since`.
pub async fn read(
    State(state): State<AppState>,
    req: FhirRequest,
    Path((resource_type, id)): Path<(String, String)>,
) -> Response {
    let result = async {
        check_type(&resource_type)?;
        check_id(&id)?;
        req.access.decide(&resource_type, Interaction::Read)?;
        let v = state
            .store
            .read(&resource_type, &id)
            .await?
            .ok_or_else(|| Error::not_found(format!("{resource_type}/{id} does not exist")))?;
        if v.is_deleted() {
            return Err(Error::gone(format!("{resource_type}/{id} was deleted")));
        }
        guard::read(&state, &req.access, &v).await?;
        if not_modified(&req, &v) {
            return Ok(Reply::empty(StatusCode::NOT_MODIFIED).versioned(&v));
        }
        Ok(version_reply(v))
    }
    .await;
    req.respond(result)
}

/// Conditional read: whether the client's copy is current. `If-None-Match` wins over
/// `If-Modified-Since` (RFC 9110 §13.1.3).
fn not_modified(req: &FhirRequest, v: &Version) -> bool {
    if let Some(tags) = req.header(header::IF_NONE_MATCH) {
        return tags
            .split(',')
            .any(|t| t.trim() == "*" || parse_etag(t) == Some(v.version));
    }
    if let Some(since) = req
        .header(header::IF_MODIFIED_SINCE)
        .and_then(parse_http_date)
    {
        return v.last_updated.timestamp() <= since.timestamp();
    }
    false
}

fn version_reply(v: Version) -> Reply {
    let reply = Reply::empty(StatusCode::OK).versioned(&v);
    Reply {
        body: v.body,
        ..reply
    }
}

/// `GET [base]/[type]/[id]/_history/[vid]`
pub async fn vread(
    State(state): State<AppState>,
    req: FhirRequest,
    Path((resource_type, id, vid)): Path<(String, String, String)>,
) -> Response {
    let result = async {
        check_type(&resource_type)?;
        check_id(&id)?;
        let missing = || Error::not_found(format!("{resource_type}/{id} has no version {vid}"));
        let version = parse_version(&vid).ok_or_else(missing)?;
        req.access.decide(&resource_type, Interaction::Read)?;
        let v = state
            .store
            .vread(&resource_type, &id, version)
            .await?
            .ok_or_else(missing)?;
        if v.is_deleted() {
            return Err(Error::gone(format!(
                "version {vid} of {resource_type}/{id} is its deletion"
            )));
        }
        guard::read(&state, &req.access, &v).await?;
        Ok(version_reply(v))
    }
    .await;
    req.respond(result)
}

/// `PUT [base]/[type]/[id]`: update, or create at a client-chosen id.
pub async fn update(
    State(state): State<AppState>,
    req: FhirRequest,
    Path((resource_type, id)): Path<(String, String)>,
    body: Body,
) -> Response {
    let result = async {
        check_type(&resource_type)?;
        check_id(&id)?;
        let expected = req.if_match()?;
        let resource = read_resource(&req.headers, body, state.max_body_bytes).await?;
        check_resource(&state, &resource, &resource_type)?;
        match resource.get("id").and_then(Value::as_str) {
            Some(body_id) if body_id == id => {}
            Some(body_id) => {
                return Err(Error::bad_request(format!(
                    "the body's id '{body_id}' differs from the id '{id}' in the URL"
                )))
            }
            None => {
                return Err(Error::bad_request(
                    "an update needs the resource's id in the body",
                ))
            }
        }
        update_at(
            &state,
            &req,
            (&resource_type, &id),
            resource,
            expected,
            "update",
        )
        .await
    }
    .await;
    req.respond(result)
}

/// `DELETE [base]/[type]/[id]`: 204 whether or not there was something to delete.
pub async fn delete(
    State(state): State<AppState>,
    req: FhirRequest,
    Path((resource_type, id)): Path<(String, String)>,
) -> Response {
    let result = async {
        check_type(&resource_type)?;
        check_id(&id)?;
        let expected = req.if_match()?;
        let deleted = delete_at(&state, &req, &resource_type, &id, expected).await?;
        let reply = Reply::empty(StatusCode::NO_CONTENT);
        Ok(match deleted {
            Some(v) => reply.header(header::ETAG, etag(v.version)).recorded(),
            None => reply,
        })
    }
    .await;
    req.respond(result)
}

/// `PATCH [base]/[type]/[id]` with a JSON Patch (`application/json-patch+json`) or a FHIRPath
/// Patch (a Parameters resource). The result is validated like any update.
/// <https://hl7.org/fhir/R4/http.html#patch>
pub async fn patch(
    State(state): State<AppState>,
    req: FhirRequest,
    Path((resource_type, id)): Path<(String, String)>,
    body: Body,
) -> Response {
    let result = async {
        check_type(&resource_type)?;
        check_id(&id)?;
        let expected = req.if_match()?;
        let json_patch = req
            .header(header::CONTENT_TYPE)
            .is_some_and(|ct| ct.trim().starts_with("application/json-patch+json"));
        let document = if json_patch {
            let bytes = super::format::read_bytes(&req.headers, body, state.max_body_bytes).await?;
            let doc: Value = serde_json::from_slice(&bytes).map_err(|e| {
                Error::bad_request(format!("the JSON Patch is not valid JSON: {e}"))
            })?;
            Patch::Json(doc)
        } else {
            Patch::FhirPath(read_resource(&req.headers, body, state.max_body_bytes).await?)
        };
        let (patched, version) = apply_patch(&state, &resource_type, &id, &document).await?;
        // The version patched must still be current: a concurrent update gives 412.
        let version = Some(expected.unwrap_or(version));
        update_at(
            &state,
            &req,
            (&resource_type, &id),
            patched,
            version,
            "patch",
        )
        .await
    }
    .await;
    req.respond(result)
}

/// A PATCH body.
pub enum Patch {
    Json(Value),
    FhirPath(Value),
}

/// Reads the current resource and applies `patch` to it: the patched resource, validated,
/// and the version it was patched from (the update must still find that version).
pub async fn apply_patch(
    state: &AppState,
    resource_type: &str,
    id: &str,
    patch: &Patch,
) -> Result<(Value, i64)> {
    let current = state
        .store
        .read(resource_type, id)
        .await?
        .ok_or_else(|| Error::not_found(format!("{resource_type}/{id} does not exist")))?;
    let Some(mut resource) = current.body else {
        return Err(Error::gone(format!("{resource_type}/{id} was deleted")));
    };
    let applied = match patch {
        Patch::Json(doc) => crate::fhir::patch::json_patch(&mut resource, doc),
        Patch::FhirPath(parameters) => {
            crate::fhir::patch::fhirpath_patch(&mut resource, parameters)
        }
    };
    applied.map_err(|why| {
        Error::new(
            ErrorKind::Unprocessable,
            IssueType::Processing,
            format!("the patch cannot be applied: {why}"),
        )
    })?;
    if resource.get("id").and_then(Value::as_str) != Some(id)
        || resource.get("resourceType").and_then(Value::as_str) != Some(resource_type)
    {
        return Err(Error::new(
            ErrorKind::Unprocessable,
            IssueType::Processing,
            "a patch cannot change the resource's type or id",
        ));
    }
    // meta.versionId and lastUpdated are the server's; the update sets them again.
    check_resource(state, &resource, resource_type)?;
    Ok((resource, current.version))
}
