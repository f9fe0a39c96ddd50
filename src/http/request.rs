//! What every FHIR handler needs to know about its request, extracted once: the negotiated
//! response format, `_pretty`, the query parameters, the headers, and the `Prefer` choices.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use super::format::{self, Negotiated};
use super::AppState;
use crate::auth::Access;
use crate::error::{Error, Result};

/// `Prefer: return=...` <https://hl7.org/fhir/R4/http.html#ops>
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    Minimal,
    Representation,
    OperationOutcome,
}

pub struct FhirRequest {
    /// The response format, or why none can be produced (406).
    pub format: Result<Negotiated>,
    /// The `_format` parameter as given, to repeat in links.
    pub format_param: Option<String>,
    pub pretty: bool,
    /// Query parameters other than `_format` and `_pretty`, in order.
    pub params: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub prefer_return: Return,
    /// `Prefer: handling=lenient` (true) or `strict` (false), if the client said.
    pub handling: Option<bool>,
    /// Who is asking, as the authentication layer found (`Anonymous` if it did not run).
    pub access: Access,
    /// Where the request came from, and its id: for the audit trail.
    pub peer: Option<std::net::SocketAddr>,
    pub request_id: Option<String>,
    /// To tell what an answer disclosed (see `audit::disclosed`); `None` when auditing is
    /// off.
    pub disclosure: Option<std::sync::Arc<crate::store::Indexer>>,
}

impl FhirRequest {
    /// Whether unknown parameters are ignored: the client's `Prefer: handling`, else the
    /// server's default.
    pub fn lenient(&self, default: bool) -> bool {
        self.handling.unwrap_or(default)
    }

    pub fn params_format(&self) -> Option<&str> {
        self.format_param.as_deref()
    }

    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The expected version from `If-Match`, if the header is present.
    pub fn if_match(&self) -> Result<Option<i64>> {
        match self.headers.get(header::IF_MATCH) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .ok()
                .and_then(crate::fhir::id::parse_etag)
                .map(Some)
                .ok_or_else(|| {
                    Error::bad_request("If-Match must be a version ETag such as W/\"3\"")
                }),
        }
    }
}

impl FromRequestParts<AppState> for FhirRequest {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let mut params = Vec::new();
        let mut format_param = None;
        let mut pretty = false;
        for (k, v) in form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "_format" => format_param = Some(v.into_owned()),
                "_pretty" => pretty = v == "true",
                _ => params.push((k.into_owned(), v.into_owned())),
            }
        }
        let accept = parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        let format = format::negotiate(format_param.as_deref(), accept);

        let (mut prefer_return, mut handling) = (Return::Representation, None);
        for prefer in parts.headers.get_all("prefer") {
            for token in prefer.to_str().unwrap_or("").split([',', ';']) {
                match token.trim().to_ascii_lowercase().replace(' ', "").as_str() {
                    "return=minimal" => prefer_return = Return::Minimal,
                    "return=representation" => prefer_return = Return::Representation,
                    "return=operationoutcome" => prefer_return = Return::OperationOutcome,
                    "handling=lenient" => handling = Some(true),
                    "handling=strict" => handling = Some(false),
                    _ => {}
                }
            }
        }
        Ok(FhirRequest {
            format,
            format_param,
            pretty,
            params,
            headers: parts.headers.clone(),
            prefer_return,
            handling,
            access: parts
                .extensions
                .get::<Access>()
                .cloned()
                .unwrap_or(Access::Anonymous),
            peer: parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0),
            request_id: parts
                .extensions
                .get::<super::audit::RequestId>()
                .map(|r| r.0.clone()),
            disclosure: state.audit.enabled().then(|| state.store.indexer().clone()),
        })
    }
}
