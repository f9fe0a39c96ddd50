//! Turning results into HTTP responses: status, FHIR headers, and a body in the negotiated
//! format. Errors become an OperationOutcome with the status their kind maps to.

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::audit::AuditNote;
use super::format::{Format, Negotiated, FHIR_JSON};
use super::request::{FhirRequest, Return};
use crate::error::{Error, ErrorKind, Result};
use crate::fhir::datetime::http_date;
use crate::fhir::id::etag;
use crate::fhir::meta::order_for_display;
use crate::fhir::outcome::{operation_outcome, Issue};
use crate::fhir::xml;
use crate::store::Version;

/// A successful answer, before rendering.
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, String)>,
    pub body: Option<Value>,
    /// How the answer is audited; by default, by what its body discloses.
    pub audit: Option<AuditNote>,
}

impl Reply {
    pub fn ok(body: Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: Some(body),
            audit: None,
        }
    }

    pub fn empty(status: StatusCode) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: None,
            audit: None,
        }
    }

    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// Says that the interaction's AuditEvent is written already (a write's, in its
    /// transaction).
    pub fn recorded(mut self) -> Reply {
        self.audit = Some(AuditNote::Recorded);
        self
    }

    /// The version headers of a resource: `ETag` and `Last-Modified`.
    pub fn versioned(self, v: &Version) -> Reply {
        self.header(header::ETAG, etag(v.version))
            .header(header::LAST_MODIFIED, http_date(v.last_updated))
    }

    /// The answer to a create or update, shaped by `Prefer: return=`.
    /// <https://hl7.org/fhir/R4/http.html#ops>
    pub fn written(status: StatusCode, v: &Version, base: &str, prefer: Return) -> Reply {
        let location = format!("{base}/{}/{}/_history/{}", v.resource_type, v.id, v.version);
        let body = match prefer {
            Return::Representation => v.body.clone(),
            Return::Minimal => None,
            Return::OperationOutcome => Some(operation_outcome(&[Issue::information(format!(
                "{}/{} is now at version {}",
                v.resource_type, v.id, v.version
            ))])),
        };
        let reply = Reply {
            status,
            headers: Vec::new(),
            body,
            audit: None,
        }
        .versioned(v);
        if status == StatusCode::CREATED {
            reply.header(header::LOCATION, location)
        } else {
            reply.header(header::CONTENT_LOCATION, location)
        }
    }
}

/// The HTTP status of an error kind.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest | ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Gone => StatusCode::GONE,
        ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Serialises a resource in the given format.
fn serialise(mut body: Value, format: Negotiated, pretty: bool) -> Result<Vec<u8>> {
    order_for_display(&mut body);
    match format.format {
        Format::Json if pretty => serde_json::to_vec_pretty(&body),
        Format::Json => serde_json::to_vec(&body),
        Format::Xml => return xml::to_xml(&body).map(String::into_bytes),
    }
    .map_err(|e| Error::internal(format!("cannot serialise the response: {e}")))
}

fn response(
    status: StatusCode,
    headers: Vec<(HeaderName, String)>,
    body: Option<(Vec<u8>, &str)>,
) -> Response {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            builder = builder.header(name, v);
        }
    }
    let body = match body {
        Some((bytes, content_type)) => {
            builder = builder.header(header::CONTENT_TYPE, content_type);
            Body::from(bytes)
        }
        None => Body::empty(),
    };
    builder
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Renders an error as an OperationOutcome in `format`.
pub fn error_response(error: &Error, format: Negotiated, pretty: bool) -> Response {
    let status = status_of(error.kind);
    if status.is_server_error() {
        tracing::warn!(
            status = status.as_u16(),
            reason = error.message(),
            "request failed"
        );
    }
    let outcome = operation_outcome(&error.issues);
    let (bytes, format) = match serialise(outcome.clone(), format, pretty) {
        Ok(b) => (b, format),
        Err(_) => (serde_json::to_vec(&outcome).unwrap_or_default(), FHIR_JSON),
    };
    // A body refused for its size was not read to the end: the connection cannot carry
    // another request, so say it will close (RFC 9112 §9.6) instead of dropping it unannounced.
    let headers = if status == StatusCode::PAYLOAD_TOO_LARGE {
        vec![(header::CONNECTION, "close".to_string())]
    } else {
        Vec::new()
    };
    response(status, headers, Some((bytes, format.content_type)))
}

impl FhirRequest {
    /// Renders the result of a FHIR interaction for this request.
    pub fn respond(&self, result: Result<Reply>) -> Response {
        let format = match &self.format {
            Ok(f) => *f,
            Err(e) => return error_response(e, FHIR_JSON, self.pretty),
        };
        match result {
            Err(e) => error_response(&e, format, self.pretty),
            Ok(reply) => {
                let note = match (reply.audit, &reply.body) {
                    (Some(note), _) => Some(note),
                    (None, Some(body)) if reply.status.is_success() => self
                        .disclosure
                        .as_ref()
                        .map(|indexer| super::audit::disclosed(body, indexer)),
                    (None, _) => None,
                };
                let mut answer = match reply.body {
                    None => response(reply.status, reply.headers, None),
                    Some(body) => match serialise(body, format, self.pretty) {
                        Ok(bytes) => response(
                            reply.status,
                            reply.headers,
                            Some((bytes, format.content_type)),
                        ),
                        Err(e) => return error_response(&e, format, self.pretty),
                    },
                };
                if let Some(note) = note {
                    answer.extensions_mut().insert(note);
                }
                answer
            }
        }
    }
}
