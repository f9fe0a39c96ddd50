//! History at the system, type and instance level, newest first, paged with `next` links.
//! <https://hl7.org/fhir/R4/http.html#history>

use axum::extract::{Path, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::reply::Reply;
use super::request::FhirRequest;
use super::rest::check_type;
use super::AppState;
use crate::error::{Error, Result};
use crate::fhir::datetime::{self, format_instant, Kind};
use crate::fhir::id::{etag, is_valid_id};
use crate::store::{Cursor, HistoryQuery, HistoryScope, Method, ResourceStore, Version};

const DEFAULT_COUNT: usize = 50;
const MAX_COUNT: usize = 1000;

/// `GET [base]/_history`
pub async fn system(State(state): State<AppState>, req: FhirRequest) -> Response {
    let result = history(&state, &req, HistoryScope::System).await;
    req.respond(result)
}

/// `GET [base]/[type]/_history`
pub async fn type_level(
    State(state): State<AppState>,
    req: FhirRequest,
    Path(resource_type): Path<String>,
) -> Response {
    let result = async {
        check_type(&resource_type)?;
        history(&state, &req, HistoryScope::Type(resource_type)).await
    }
    .await;
    req.respond(result)
}

/// `GET [base]/[type]/[id]/_history`
pub async fn instance(
    State(state): State<AppState>,
    req: FhirRequest,
    Path((resource_type, id)): Path<(String, String)>,
) -> Response {
    let result = async {
        check_type(&resource_type)?;
        if !is_valid_id(&id) {
            return Err(Error::bad_request(format!("'{id}' is not a valid id")));
        }
        let Some(current) = state.store.read(&resource_type, &id).await? else {
            return Err(Error::not_found(format!(
                "{resource_type}/{id} does not exist"
            )));
        };
        if !current.is_deleted() {
            // A resource outside the token's reach: 403 as for a read.
            super::guard::read(&state, &req.access, &current).await?;
        }
        history(&state, &req, HistoryScope::Instance(resource_type, id)).await
    }
    .await;
    req.respond(result)
}

/// The parameters of a history request, parsed.
struct Params {
    since: Option<DateTime<Utc>>,
    at: Option<(DateTime<Utc>, DateTime<Utc>)>,
    count: usize,
    after: Option<Cursor>,
    /// The parameters to repeat in paging links (the cursor excluded).
    echo: Vec<(String, String)>,
}

fn parse_params(req: &FhirRequest, state_lenient: bool) -> Result<Params> {
    let mut p = Params {
        since: None,
        at: None,
        count: DEFAULT_COUNT,
        after: None,
        echo: Vec::new(),
    };
    for (name, value) in &req.params {
        let bad = |what: &str| Error::bad_request(format!("{name}={value}: {what}"));
        match name.as_str() {
            "_since" => {
                let r = datetime::parse(value, Kind::DateTime)
                    .ok_or_else(|| bad("not a valid instant"))?;
                p.since = Some(r.start);
            }
            "_at" => {
                let r = datetime::parse(value, Kind::DateTime)
                    .ok_or_else(|| bad("not a valid date or dateTime"))?;
                p.at = Some((r.start, r.end));
            }
            "_count" => {
                let n: usize = value.parse().map_err(|_| bad("not a whole number"))?;
                p.count = n.min(MAX_COUNT);
            }
            "_cursor" => {
                p.after = Some(
                    parse_cursor(value).ok_or_else(|| bad("not a cursor this server issued"))?,
                );
                continue;
            }
            _ if req.lenient(state_lenient) => continue,
            _ => {
                return Err(bad(
                    "not a parameter of the history interaction (_since, _at, _count)",
                ))
            }
        }
        p.echo.push((name.clone(), value.clone()));
    }
    Ok(p)
}

/// Cursors are `<microseconds>-<sequence>` of the last entry shown.
fn cursor_text(c: &Cursor) -> String {
    format!("{}-{}", c.last_updated.timestamp_micros(), c.seq)
}

fn parse_cursor(text: &str) -> Option<Cursor> {
    let (us, seq) = text.split_once('-')?;
    Some(Cursor {
        last_updated: DateTime::from_timestamp_micros(us.parse().ok()?)?,
        seq: seq.parse().ok()?,
    })
}

pub(super) fn link(
    base: &str,
    path: &str,
    params: &[(String, String)],
    req: &FhirRequest,
) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        query.append_pair(k, v);
    }
    if let Some(f) = req.params_format() {
        query.append_pair("_format", f);
    }
    let query = query.finish();
    if query.is_empty() {
        format!("{base}{path}")
    } else {
        format!("{base}{path}?{query}")
    }
}

async fn history(state: &AppState, req: &FhirRequest, scope: HistoryScope) -> Result<Reply> {
    let params = parse_params(req, state.lenient_by_default)?;
    let path = match &scope {
        HistoryScope::System => "/_history".to_string(),
        HistoryScope::Type(t) => format!("/{t}/_history"),
        HistoryScope::Instance(t, id) => format!("/{t}/{id}/_history"),
    };
    super::guard::history(state, &req.access, &scope)?;
    let mut page = state
        .store
        .history(&HistoryQuery {
            scope,
            since: params.since,
            at: params.at,
            after: params.after,
            count: params.count,
        })
        .await?;
    let mut self_params = params.echo.clone();
    if let Some(c) = &params.after {
        self_params.push(("_cursor".into(), cursor_text(c)));
    }
    let mut links =
        vec![json!({"relation": "self", "url": link(&state.base_url, &path, &self_params, req)})];
    if let Some(next) = &page.next {
        let mut next_params = params.echo.clone();
        next_params.push(("_cursor".into(), cursor_text(next)));
        links.push(
            json!({"relation": "next", "url": link(&state.base_url, &path, &next_params, req)}),
        );
    }
    page.versions
        .retain(|v| super::guard::visible(state, &req.access, v));
    let entries: Vec<Value> = page
        .versions
        .iter()
        .map(|v| entry(&state.base_url, v))
        .collect();
    Ok(Reply::ok(json!({
        "resourceType": "Bundle",
        "id": crate::fhir::id::new_id(),
        "meta": {"lastUpdated": format_instant(Utc::now())},
        "type": "history",
        "link": links,
        "entry": entries,
    })))
}

/// One history entry: the version, how it came about, and its outcome (bdl-3, bdl-4).
fn entry(base: &str, v: &Version) -> Value {
    let (url, status) = match v.method {
        Method::Post => (v.resource_type.clone(), "201 Created"),
        Method::Put => (format!("{}/{}", v.resource_type, v.id), "200 OK"),
        Method::Delete => (format!("{}/{}", v.resource_type, v.id), "204 No Content"),
    };
    let mut entry = json!({
        "fullUrl": format!("{base}/{}/{}", v.resource_type, v.id),
        "request": {"method": v.method.as_str(), "url": url},
        "response": {
            "status": status,
            "etag": etag(v.version),
            "lastModified": format_instant(v.last_updated),
        },
    });
    if let Some(body) = &v.body {
        entry["resource"] = body.clone();
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let c = Cursor {
            last_updated: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            seq: 42,
        };
        assert_eq!(parse_cursor(&cursor_text(&c)), Some(c));
        assert_eq!(parse_cursor("x-1"), None);
        assert_eq!(parse_cursor("12"), None);
    }
}
