//! Content negotiation and body parsing. <https://hl7.org/fhir/R4/http.html#mime-type>
//!
//! Output: `_format` wins over `Accept`; JSON when neither says. Input: the `Content-Type`
//! header. A `fhirVersion` parameter other than 4.0 is refused (406 / 415).

use axum::body::Body;
use axum::http::{header, HeaderMap};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::fhir::outcome::IssueType;
use crate::fhir::xml;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

/// The format of a response and the media type to label it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub format: Format,
    pub content_type: &'static str,
}

pub const FHIR_JSON: Negotiated = Negotiated {
    format: Format::Json,
    content_type: "application/fhir+json; charset=utf-8",
};
const PLAIN_JSON: Negotiated = Negotiated {
    format: Format::Json,
    content_type: "application/json; charset=utf-8",
};
pub const FHIR_XML: Negotiated = Negotiated {
    format: Format::Xml,
    content_type: "application/fhir+xml; charset=utf-8",
};
const PLAIN_XML: Negotiated = Negotiated {
    format: Format::Xml,
    content_type: "application/xml; charset=utf-8",
};

/// Maps a media type (lowercase, without parameters) or a `_format` short name.
fn by_name(name: &str) -> Option<Negotiated> {
    match name {
        "application/fhir+json" | "json" => Some(FHIR_JSON),
        "application/json" | "text/json" => Some(PLAIN_JSON),
        "application/fhir+xml" | "xml" => Some(FHIR_XML),
        "application/xml" | "text/xml" => Some(PLAIN_XML),
        _ => None,
    }
}

/// Splits `type/subtype; a=b; c=d` into the lowercase media type and its parameters.
fn media_type(value: &str) -> (String, Vec<(String, String)>) {
    let mut parts = value.split(';');
    let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            ))
        })
        .collect();
    (mime, params)
}

fn fhir_version_ok(params: &[(String, String)]) -> bool {
    params
        .iter()
        .all(|(k, v)| k != "fhirversion" || v == "4.0" || v == "4.0.1")
}

/// Chooses the response format from `_format` (if given) or `Accept`.
pub fn negotiate(format_param: Option<&str>, accept: Option<&str>) -> Result<Negotiated> {
    if let Some(f) = format_param {
        let (mime, params) = media_type(f);
        return by_name(&mime)
            .filter(|_| fhir_version_ok(&params))
            .ok_or_else(|| not_acceptable(&format!("_format={f} is not a format Hearth serves")));
    }
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(FHIR_JSON);
    };
    let mut best: Option<(f32, Negotiated)> = None;
    for range in accept.split(',') {
        let (mime, params) = media_type(range);
        let q = params
            .iter()
            .find(|(k, _)| k == "q")
            .and_then(|(_, v)| v.parse::<f32>().ok())
            .unwrap_or(1.0);
        if q <= 0.0 || !fhir_version_ok(&params) {
            continue;
        }
        let choice = match mime.as_str() {
            "*/*" | "application/*" => Some(FHIR_JSON),
            "text/*" => Some(PLAIN_XML),
            m => by_name(m),
        };
        if let Some(c) = choice {
            if best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, c));
            }
        }
    }
    best.map(|(_, c)| c).ok_or_else(|| {
        not_acceptable(&format!(
            "none of the media types in Accept ({accept}) is served"
        ))
    })
}

fn not_acceptable(why: &str) -> Error {
    Error::new(
        ErrorKind::NotAcceptable,
        IssueType::NotSupported,
        format!("{why}; Hearth serves application/fhir+json and application/fhir+xml (FHIR 4.0)"),
    )
}

fn unsupported(why: String) -> Error {
    Error::new(
        ErrorKind::UnsupportedMediaType,
        IssueType::NotSupported,
        why,
    )
}

/// The format of a request body, from its `Content-Type` (sniffed when there is none).
fn body_format(headers: &HeaderMap, bytes: &[u8]) -> Result<Format> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'<') => Ok(Format::Xml),
            _ => Ok(Format::Json),
        };
    };
    let value = value
        .to_str()
        .map_err(|_| unsupported("the Content-Type header is not readable".into()))?;
    let (mime, params) = media_type(value);
    if let Some((_, charset)) = params.iter().find(|(k, _)| k == "charset") {
        if !charset.eq_ignore_ascii_case("utf-8") {
            return Err(unsupported(format!(
                "charset {charset} is not supported; send UTF-8"
            )));
        }
    }
    if !fhir_version_ok(&params) {
        return Err(unsupported(format!(
            "{value}: Hearth speaks FHIR 4.0 (R4) only"
        )));
    }
    by_name(&mime)
        .map(|n| n.format)
        .ok_or_else(|| unsupported(format!(
            "Content-Type {mime} is not supported; send application/fhir+json or application/fhir+xml"
        )))
}

/// Reads a request body of at most `limit` bytes and parses it as one resource.
pub async fn read_resource(headers: &HeaderMap, body: Body, limit: usize) -> Result<Value> {
    let bytes = read_bytes(headers, body, limit).await?;
    if bytes.is_empty() {
        return Err(Error::bad_request(
            "the request has no body; a resource is required",
        ));
    }
    parse_resource(headers, &bytes)
}

/// Reads a request body of at most `limit` bytes (413 beyond).
pub async fn read_bytes(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<axum::body::Bytes> {
    let too_large = || {
        Error::new(
            ErrorKind::PayloadTooLarge,
            IssueType::TooLong,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            source = s.source();
        }
        Error::bad_request(format!("the request body could not be read: {e}"))
    })?;
    Ok(bytes)
}

fn parse_resource(headers: &HeaderMap, bytes: &[u8]) -> Result<Value> {
    let resource = match body_format(headers, bytes)? {
        Format::Json => serde_json::from_slice::<Value>(bytes)
            .map_err(|e| Error::bad_request(format!("the body is not valid JSON: {e}")))?,
        Format::Xml => {
            let text = std::str::from_utf8(bytes)
                .map_err(|e| Error::bad_request(format!("the body is not valid UTF-8: {e}")))?;
            xml::from_xml(text)?
        }
    };
    if !resource.is_object() {
        return Err(Error::bad_request(
            "the body must be a JSON object holding one resource",
        ));
    }
    Ok(resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(None, None).unwrap(), FHIR_JSON);
        assert_eq!(
            negotiate(Some("xml"), Some("application/json")).unwrap(),
            FHIR_XML
        );
        assert_eq!(
            negotiate(Some("application/fhir+json"), None).unwrap(),
            FHIR_JSON
        );
        assert!(negotiate(Some("html"), None).is_err());
        assert_eq!(
            negotiate(None, Some("application/fhir+xml")).unwrap(),
            FHIR_XML
        );
        assert_eq!(
            negotiate(None, Some("application/json")).unwrap(),
            PLAIN_JSON
        );
        assert_eq!(negotiate(None, Some("*/*")).unwrap(), FHIR_JSON);
        assert_eq!(
            negotiate(
                None,
                Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
            )
            .unwrap(),
            PLAIN_XML
        );
        assert_eq!(
            negotiate(
                None,
                Some("application/fhir+xml;q=0.5, application/fhir+json")
            )
            .unwrap(),
            FHIR_JSON
        );
        assert!(negotiate(None, Some("text/html")).is_err());
        assert!(negotiate(None, Some("application/fhir+json; fhirVersion=3.0")).is_err());
        assert_eq!(
            negotiate(None, Some("application/fhir+json; fhirVersion=4.0")).unwrap(),
            FHIR_JSON
        );
    }
}
