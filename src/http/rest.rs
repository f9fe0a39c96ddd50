//! The instance and type interactions: create, read, vread, update, delete.
//! <https://hl7.org/fhir/R4/http.html>

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::format::read_resource;
use super::reply::Reply;
use super::request::FhirRequest;
use super::AppState;
use crate::error::{Error, ErrorKind, Result};
use crate::fhir::datetime::parse_http_date;
use crate::fhir::id::{etag, is_valid_id, parse_etag, parse_version};
use crate::fhir::resource_type::is_resource_type;
use crate::store::{ResourceStore, Version};

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

fn check_id(id: &str) -> Result<()> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "'{id}' is not a valid id (1 to 64 letters, digits, '-' or '.')"
        )))
    }
}

/// Checks that a write's body is a valid resource of the URL's type.
fn check_resource(state: &AppState, resource: &Value, resource_type: &str) -> Result<()> {
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
        let v = state.store.create(&resource_type, resource).await?;
        Ok(Reply::written(
            StatusCode::CREATED,
            &v,
            &state.base_url,
            req.prefer_return,
        ))
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
        let v = state
            .store
            .read(&resource_type, &id)
            .await?
            .ok_or_else(|| Error::not_found(format!("{resource_type}/{id} does not exist")))?;
        if v.is_deleted() {
            return Err(Error::gone(format!("{resource_type}/{id} was deleted")));
        }
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
        let updated = state
            .store
            .update(&resource_type, &id, resource, expected)
            .await?;
        let status = if updated.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(Reply::written(
            status,
            &updated.version,
            &state.base_url,
            req.prefer_return,
        ))
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
        let deleted = state.store.delete(&resource_type, &id, expected).await?;
        let reply = Reply::empty(StatusCode::NO_CONTENT);
        Ok(match deleted {
            Some(v) => reply.header(header::ETAG, etag(v.version)),
            None => reply,
        })
    }
    .await;
    req.respond(result)
}
