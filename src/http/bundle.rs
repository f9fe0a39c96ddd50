//! Batch and transaction Bundles: `POST [base]`. <https://hl7.org/fhir/R4/http.html#transaction>
//!
//! A transaction is planned first, outside the database transaction: every entry's target id
//! is decided (new ids for creates, searches for conditional entries), `urn:uuid:` / `urn:oid:`
//! fullUrls and conditional references are replaced by those ids everywhere, and every
//! resource is validated. The writes then run in one database transaction, in the order the
//! specification prescribes (DELETE, POST, PUT/PATCH); reads (GET/HEAD) run last. A batch
//! runs each entry on its own.

use std::collections::{HashMap, HashSet};

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use chrono::Utc;
use serde_json::{json, Value};

use super::audit;
use super::format::read_resource;
use super::guard;
use super::reply::{status_of, Reply};
use super::request::FhirRequest;
use super::rest::{
    after_write, apply_patch, check_id, check_resource, check_type, conditional_search,
    multiple_matches, Patch,
};
use super::search;
use super::AppState;
use crate::auth::scope::Interaction;
use crate::auth::Access;
use crate::error::{Error, ErrorKind, Result};
use crate::fhir::datetime::format_instant;
use crate::fhir::id::{etag, new_id, parse_version};
use crate::fhir::outcome::{operation_outcome, IssueType};
use crate::fhir::resource_type::is_resource_type;
use crate::store::{at_entry, search_sql, ResourceStore, Version, Write, Written};

/// `POST [base]` with a Bundle of type `batch` or `transaction`.
pub async fn process(State(state): State<AppState>, req: FhirRequest, body: Body) -> Response {
    let result = async {
        let bundle = read_resource(&req.headers, body, state.max_body_bytes).await?;
        if bundle["resourceType"] != "Bundle" {
            return Err(Error::bad_request(
                "POST to the base URL takes a batch or transaction Bundle",
            ));
        }
        let entries = match &bundle["entry"] {
            Value::Null => Vec::new(),
            Value::Array(e) => e.clone(),
            _ => return Err(Error::bad_request("Bundle.entry must be an array")),
        };
        if entries.len() > state.max_bundle_entries {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                IssueType::TooCostly,
                format!(
                    "the Bundle has {} entries; this server takes at most {}",
                    entries.len(),
                    state.max_bundle_entries
                ),
            ));
        }
        match bundle["type"].as_str() {
            Some("transaction") => transaction(&state, &req, &entries).await,
            Some("batch") => batch(&state, &req, &entries).await,
            Some(other) => Err(Error::bad_request(format!(
                "a '{other}' Bundle is not processed here; POST it to [base]/Bundle to store it"
            ))),
            None => Err(Error::bad_request("the Bundle has no type")),
        }
    }
    .await;
    req.respond(result)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

/// What an entry's `request.url` names.
#[derive(Debug, Clone)]
enum Target {
    /// `Type` or `Type?criteria`.
    Type(String, Option<String>),
    Instance(String, String),
    Version(String, String, i64),
}

#[derive(Debug, Clone)]
struct Entry {
    method: Method,
    target: Target,
    full_url: Option<String>,
    resource: Option<Value>,
    if_none_exist: Option<String>,
    if_match: Option<i64>,
}

fn parse_entry(state: &AppState, e: &Value) -> Result<Entry> {
    let request = &e["request"];
    let method = match request["method"].as_str() {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("POST") => Method::Post,
        Some("PUT") => Method::Put,
        Some("PATCH") => Method::Patch,
        Some("DELETE") => Method::Delete,
        Some(m) => {
            return Err(Error::bad_request(format!(
                "request.method '{m}' is unknown"
            )))
        }
        None => return Err(Error::bad_request("the entry has no request.method")),
    };
    let url = request["url"]
        .as_str()
        .ok_or_else(|| Error::bad_request("the entry has no request.url"))?;
    let local = url
        .strip_prefix(state.base_url.as_str())
        .unwrap_or(url)
        .trim_start_matches('/');
    let (path, query) = match local.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (local, None),
    };
    let segments: Vec<&str> = path.split('/').collect();
    let target = match segments.as_slice() {
        [t] => Target::Type(t.to_string(), query),
        [t, id] if query.is_none() => Target::Instance(t.to_string(), id.to_string()),
        [t, id, "_history", v] if query.is_none() => Target::Version(
            t.to_string(),
            id.to_string(),
            parse_version(v)
                .ok_or_else(|| Error::bad_request(format!("'{v}' is not a version")))?,
        ),
        _ => {
            return Err(Error::bad_request(format!(
                "request.url '{url}' is not supported"
            )))
        }
    };
    let (Target::Type(t, _) | Target::Instance(t, _) | Target::Version(t, _, _)) = &target;
    check_type(t)?;
    if let Target::Instance(_, id) | Target::Version(_, id, _) = &target {
        check_id(id)?;
    }
    let if_match = match request["ifMatch"].as_str() {
        Some(tag) => Some(crate::fhir::id::parse_etag(tag).ok_or_else(|| {
            Error::bad_request("request.ifMatch must be a version ETag such as W/\"3\"")
        })?),
        None => None,
    };
    Ok(Entry {
        method,
        target,
        full_url: e["fullUrl"].as_str().map(str::to_string),
        resource: e.get("resource").cloned(),
        if_none_exist: request["ifNoneExist"].as_str().map(str::to_string),
        if_match,
    })
}

/// What one entry will do.
enum Plan {
    /// A write, run inside the database transaction.
    Write(Write),
    /// Several deletes (a conditional delete).
    Deletes(Vec<Write>),
    /// A conditional create that found its resource: nothing to write.
    Exists(Version),
    /// A read, run after the writes.
    Read,
}

impl Plan {
    /// The position of the entry's writes in the prescribed order: DELETE, POST, PUT/PATCH.
    fn order(&self, method: Method) -> u8 {
        match method {
            Method::Delete => 0,
            Method::Post => 1,
            Method::Put | Method::Patch => 2,
            Method::Get | Method::Head => 3,
        }
    }
}

fn resource_of<'e>(entry: &'e Entry, resource_type: &str) -> Result<&'e Value> {
    let resource = entry
        .resource
        .as_ref()
        .ok_or_else(|| Error::bad_request("this entry needs a resource"))?;
    match resource["resourceType"].as_str() {
        Some(t) if t == resource_type => Ok(resource),
        Some(t) => Err(Error::bad_request(format!(
            "the entry's resource is a {t} but its request.url is for {resource_type}"
        ))),
        None => Err(Error::bad_request(
            "the entry's resource has no resourceType",
        )),
    }
}

/// Decides what `entry` does, and which id its fullUrl stands for.
async fn plan(state: &AppState, entry: &Entry) -> Result<(Plan, Option<String>)> {
    match (entry.method, &entry.target) {
        (Method::Get | Method::Head, _) => Ok((Plan::Read, None)),
        (Method::Post, Target::Type(t, None)) => {
            let mut body = resource_of(entry, t)?.clone();
            let unless = match &entry.if_none_exist {
                Some(criteria) => {
                    let criteria = criteria
                        .split_once('?')
                        .map_or(criteria.as_str(), |(_, q)| q);
                    let search = conditional_search(state, t, criteria)?;
                    let found = state.store.matches(&search, 2).await?;
                    match found.as_slice() {
                        [] => Some(search_sql::page_query(
                            state.store.dialect(),
                            &search,
                            None,
                            2,
                        )),
                        [one] => {
                            let reference = format!("{t}/{}", one.id);
                            return Ok((Plan::Exists(one.clone()), Some(reference)));
                        }
                        _ => return Err(multiple_matches("ifNoneExist")),
                    }
                }
                None => None,
            };
            let id = new_id();
            body["id"] = json!(id);
            Ok((
                Plan::Write(Write::Create {
                    resource_type: t.clone(),
                    id: id.clone(),
                    body,
                    unless,
                }),
                Some(format!("{t}/{id}")),
            ))
        }
        (Method::Put, Target::Instance(t, id)) => {
            let mut body = resource_of(entry, t)?.clone();
            match body.get("id").and_then(Value::as_str) {
                Some(b) if b != id => {
                    return Err(Error::bad_request(format!(
                        "the resource's id '{b}' differs from the id '{id}' in request.url"
                    )))
                }
                _ => body["id"] = json!(id),
            }
            Ok((
                Plan::Write(Write::Update {
                    resource_type: t.clone(),
                    id: id.clone(),
                    body,
                    expected: entry.if_match,
                }),
                Some(format!("{t}/{id}")),
            ))
        }
        (Method::Put, Target::Type(t, Some(criteria))) => {
            let mut body = resource_of(entry, t)?.clone();
            let search = conditional_search(state, t, criteria)?;
            let found = state.store.matches(&search, 2).await?;
            let body_id = body.get("id").and_then(Value::as_str).map(str::to_string);
            let id = match (found.as_slice(), body_id) {
                ([], None) => new_id(),
                ([], Some(id)) => id,
                ([one], None) => one.id.clone(),
                ([one], Some(id)) if one.id == id => id,
                ([_], Some(id)) => {
                    return Err(Error::bad_request(format!(
                        "the resource's id '{id}' is not that of the resource the criteria match"
                    )))
                }
                _ => return Err(multiple_matches("conditional update")),
            };
            check_id(&id)?;
            body["id"] = json!(id);
            Ok((
                Plan::Write(Write::Update {
                    resource_type: t.clone(),
                    id: id.clone(),
                    body,
                    expected: entry.if_match,
                }),
                Some(format!("{t}/{id}")),
            ))
        }
        (Method::Patch, Target::Instance(t, id)) => {
            let patch = match &entry.resource {
                Some(r) if r["resourceType"] == "Parameters" => Patch::FhirPath(r.clone()),
                Some(r) if r["resourceType"] == "Binary" => {
                    let data = r["data"].as_str().unwrap_or_default();
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .map_err(|_| Error::bad_request("the Binary's data is not base64"))?;
                    Patch::Json(serde_json::from_slice(&bytes).map_err(|e| {
                        Error::bad_request(format!("the JSON Patch is not valid JSON: {e}"))
                    })?)
                }
                _ => return Err(Error::bad_request(
                    "a PATCH entry carries a Parameters (FHIRPath Patch) or a Binary (JSON Patch)",
                )),
            };
            let (body, version) = apply_patch(state, t, id, &patch).await?;
            Ok((
                Plan::Write(Write::Update {
                    resource_type: t.clone(),
                    id: id.clone(),
                    body,
                    expected: Some(entry.if_match.unwrap_or(version)),
                }),
                None,
            ))
        }
        (Method::Delete, Target::Instance(t, id)) => Ok((
            Plan::Write(Write::Delete {
                resource_type: t.clone(),
                id: id.clone(),
                expected: entry.if_match,
            }),
            None,
        )),
        (Method::Delete, Target::Type(t, Some(criteria))) => {
            let search = conditional_search(state, t, criteria)?;
            let found = state.store.matches(&search, 101).await?;
            if found.len() > 100 {
                return Err(Error::new(
                    ErrorKind::PreconditionFailed,
                    IssueType::TooCostly,
                    "the criteria match more than 100 resources; narrow them",
                ));
            }
            Ok((
                Plan::Deletes(
                    found
                        .into_iter()
                        .map(|v| Write::Delete {
                            resource_type: t.clone(),
                            id: v.id,
                            expected: None,
                        })
                        .collect(),
                ),
                None,
            ))
        }
        _ => Err(Error::bad_request(
            "this combination of request.method and request.url is not supported",
        )),
    }
}

/// The resource of a create or update.
fn body_of(write: &mut Write) -> Option<(&str, &mut Value)> {
    match write {
        Write::Create {
            resource_type,
            body,
            ..
        }
        | Write::Update {
            resource_type,
            body,
            ..
        } => Some((resource_type.as_str(), body)),
        Write::Delete { .. } => None,
    }
}

/// Collects the conditional references (`Type?criteria`) of a resource.
fn conditional_references(v: &Value, out: &mut HashSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, item) in map {
                if k == "reference" {
                    if let Some(r) = item.as_str() {
                        if let Some((t, _)) = r.split_once('?') {
                            if is_resource_type(t) {
                                out.insert(r.to_string());
                            }
                        }
                    }
                } else {
                    conditional_references(item, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| conditional_references(i, out)),
        _ => {}
    }
}

/// Replaces fullUrls and conditional references by the ids they stand for, everywhere in a
/// resource (and inside its narrative). A `urn:` reference that no entry defines is an error.
fn rewrite(v: &mut Value, ids: &HashMap<String, String>, key: &str) -> Result<()> {
    match v {
        Value::String(s) => {
            if let Some(to) = ids.get(s.as_str()) {
                *s = to.clone();
            } else if key == "div" {
                for (from, to) in ids.iter().filter(|(f, _)| f.starts_with("urn:")) {
                    if s.contains(from.as_str()) {
                        *s = s.replace(from.as_str(), to);
                    }
                }
            } else if key == "reference"
                && (s.starts_with("urn:uuid:") || s.starts_with("urn:oid:"))
            {
                return Err(Error::bad_request(format!(
                    "the reference '{s}' names no entry of this transaction"
                )));
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                rewrite(item, ids, k)?;
            }
        }
        Value::Array(items) => {
            for item in items {
                rewrite(item, ids, key)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Resolves one conditional reference: exactly one match.
async fn resolve_conditional(state: &AppState, reference: &str) -> Result<String> {
    let (t, criteria) = reference.split_once('?').unwrap_or((reference, ""));
    let search = conditional_search(state, t, criteria)?;
    let found = state.store.matches(&search, 2).await?;
    match found.as_slice() {
        [one] => Ok(format!("{t}/{}", one.id)),
        [] => Err(Error::new(
            ErrorKind::PreconditionFailed,
            IssueType::NotFound,
            format!("the conditional reference '{reference}' matches nothing"),
        )),
        _ => Err(multiple_matches(&format!(
            "conditional reference '{reference}'"
        ))),
    }
}

async fn transaction(state: &AppState, req: &FhirRequest, raw: &[Value]) -> Result<Reply> {
    let mut entries = Vec::with_capacity(raw.len());
    let mut full_urls = HashSet::new();
    for (n, e) in raw.iter().enumerate() {
        let entry = parse_entry(state, e).map_err(|err| at_entry(n, err))?;
        if let Some(u) = &entry.full_url {
            if !full_urls.insert(u.clone()) {
                return Err(at_entry(
                    n,
                    Error::bad_request(format!("the fullUrl '{u}' appears twice")),
                ));
            }
        }
        entries.push(entry);
    }
    // Plan every entry; record what each fullUrl stands for.
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut plans = Vec::with_capacity(entries.len());
    for (n, entry) in entries.iter().enumerate() {
        let (plan, reference) = plan(state, entry).await.map_err(|e| at_entry(n, e))?;
        if let (Some(full_url), Some(reference)) = (&entry.full_url, reference) {
            if full_url != &reference {
                ids.insert(full_url.clone(), reference.clone());
            }
        }
        plans.push(plan);
    }
    // Conditional references, resolved once each.
    let mut conditionals = HashSet::new();
    for plan in &plans {
        if let Plan::Write(Write::Create { body, .. } | Write::Update { body, .. }) = plan {
            conditional_references(body, &mut conditionals);
        }
    }
    for reference in conditionals {
        let resolved = resolve_conditional(state, &reference).await?;
        ids.insert(reference, resolved);
    }
    // Rewrite, validate, and check that no resource is written twice.
    let mut touched = HashSet::new();
    for (n, plan) in plans.iter_mut().enumerate() {
        let writes: Vec<&mut Write> = match plan {
            Plan::Write(w) => vec![w],
            Plan::Deletes(ws) => ws.iter_mut().collect(),
            _ => Vec::new(),
        };
        for write in writes {
            let (t, id) = match write {
                Write::Create {
                    resource_type, id, ..
                }
                | Write::Update {
                    resource_type, id, ..
                }
                | Write::Delete {
                    resource_type, id, ..
                } => (resource_type.clone(), id.clone()),
            };
            if !touched.insert(format!("{t}/{id}")) {
                return Err(at_entry(
                    n,
                    Error::bad_request(format!("{t}/{id} is written by more than one entry")),
                ));
            }
            if let Some((t, body)) = body_of(write) {
                rewrite(body, &ids, "").map_err(|e| at_entry(n, e))?;
                let t = t.to_string();
                check_resource(state, body, &t).map_err(|e| at_entry(n, e))?;
            }
            guard_write(state, &req.access, write)
                .await
                .map_err(|e| at_entry(n, e))?;
        }
        if let Plan::Exists(v) = plan {
            guard::read(state, &req.access, v)
                .await
                .map_err(|e| at_entry(n, e))?;
        }
    }
    // The writes, in the prescribed order, in one database transaction.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|n| plans[*n].order(entries[*n].method));
    let mut writes = Vec::new();
    for &n in &order {
        match &plans[n] {
            Plan::Write(w) => writes.push((n, w.clone())),
            Plan::Deletes(ws) => writes.extend(ws.iter().map(|w| (n, w.clone()))),
            _ => {}
        }
    }
    let trail = audit::trail(state, req, "");
    let written = state
        .store
        .transaction(writes.clone(), Some(&trail))
        .await?;
    let mut results: HashMap<usize, Vec<Written>> = HashMap::new();
    for ((n, _), w) in writes.iter().zip(written) {
        results.entry(*n).or_default().push(w);
    }
    // SearchParameters written by the transaction change what search can do.
    if writes
        .iter()
        .any(|(_, w)| w.resource_type() == "SearchParameter")
    {
        after_write(state, "SearchParameter").await;
    }
    // The responses, in the order of the request; reads last, after the writes.
    let mut response_entries = vec![Value::Null; entries.len()];
    for &n in &order {
        response_entries[n] = match &plans[n] {
            Plan::Read => read_entry(state, req, &entries[n]).await,
            Plan::Exists(v) => written_entry(state, v, StatusCode::OK),
            Plan::Write(_) | Plan::Deletes(_) => {
                let done = results.remove(&n).unwrap_or_default();
                written_result(state, &done)
            }
        };
    }
    let methods: Vec<Method> = entries.iter().map(|e| e.method).collect();
    prefer(req, &methods, &mut response_entries);
    Ok(Reply::ok(response_bundle(
        "transaction-response",
        response_entries,
    )))
}

async fn batch(state: &AppState, req: &FhirRequest, raw: &[Value]) -> Result<Reply> {
    let mut response_entries = Vec::with_capacity(raw.len());
    for (n, e) in raw.iter().enumerate() {
        let result = async {
            let entry = parse_entry(state, e)?;
            let (plan, _) = plan(state, &entry).await?;
            let writes = match plan {
                Plan::Read => return Ok(read_entry(state, req, &entry).await),
                Plan::Exists(v) => {
                    guard::read(state, &req.access, &v).await?;
                    return Ok(written_entry(state, &v, StatusCode::OK));
                }
                Plan::Write(mut w) => {
                    if let Some((t, body)) = body_of(&mut w) {
                        let mut refs = HashSet::new();
                        conditional_references(body, &mut refs);
                        let mut ids = HashMap::new();
                        for r in refs {
                            let resolved = resolve_conditional(state, &r).await?;
                            ids.insert(r, resolved);
                        }
                        rewrite(body, &ids, "")?;
                        let t = t.to_string();
                        check_resource(state, body, &t)?;
                    }
                    guard_write(state, &req.access, &w).await?;
                    vec![(n, w)]
                }
                Plan::Deletes(ws) => {
                    for w in &ws {
                        guard_write(state, &req.access, w).await?;
                    }
                    ws.into_iter().map(|w| (n, w)).collect()
                }
            };
            let trail = audit::trail(state, req, "");
            let written = state
                .store
                .transaction(writes.clone(), Some(&trail))
                .await?;
            if let Some((_, w)) = writes.first() {
                after_write(state, w.resource_type()).await;
            }
            Ok::<Value, Error>(written_result(state, &written))
        }
        .await;
        response_entries.push(match result {
            Ok(entry) => entry,
            Err(err) => {
                let err = at_entry(n, err);
                // A refused or failed write is audited here; reads audit themselves.
                let code = match raw[n]["request"]["method"].as_str() {
                    Some("POST") => Some("create"),
                    Some("PUT") => Some("update"),
                    Some("PATCH") => Some("patch"),
                    Some("DELETE") => Some("delete"),
                    _ => None,
                };
                if let Some(code) = code {
                    let target = raw[n]["request"]["url"].as_str().unwrap_or_default();
                    audit::record_entry(
                        state,
                        req,
                        code,
                        status_of(err.kind).as_u16(),
                        None,
                        target,
                    )
                    .await;
                }
                error_entry(&err)
            }
        });
    }
    let methods: Vec<Method> = raw
        .iter()
        .map(|e| match e["request"]["method"].as_str() {
            Some("GET") => Method::Get,
            Some("HEAD") => Method::Head,
            _ => Method::Post,
        })
        .collect();
    prefer(req, &methods, &mut response_entries);
    Ok(Reply::ok(response_bundle(
        "batch-response",
        response_entries,
    )))
}

/// `Prefer: return=minimal` leaves the written resources out of the response entries;
/// `return=OperationOutcome` puts an outcome in their place. Reads keep their resources.
fn prefer(req: &FhirRequest, methods: &[Method], entries: &mut [Value]) {
    use super::request::Return;
    for (entry, method) in entries.iter_mut().zip(methods) {
        if matches!(method, Method::Get | Method::Head) {
            continue;
        }
        let Value::Object(map) = entry else { continue };
        let written = match req.prefer_return {
            Return::Representation => continue,
            Return::Minimal | Return::OperationOutcome => map.shift_remove("resource").is_some(),
        };
        if written && req.prefer_return == Return::OperationOutcome {
            let status = map["response"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            map["response"]["outcome"] =
                operation_outcome(&[crate::fhir::outcome::Issue::information(format!(
                    "written: {status}"
                ))]);
        }
    }
}

fn response_bundle(kind: &str, entries: Vec<Value>) -> Value {
    json!({
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": format_instant(Utc::now())},
        "type": kind,
        "entry": entries,
    })
}

fn status_line(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    )
}

/// The response entry of one or several writes of one request entry.
fn written_result(state: &AppState, done: &[Written]) -> Value {
    match done {
        [Written {
            version: Some(v),
            created,
            ..
        }] if !v.is_deleted() => written_entry(
            state,
            v,
            if *created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
        ),
        _ => json!({"response": {"status": status_line(StatusCode::NO_CONTENT)}}),
    }
}

fn written_entry(state: &AppState, v: &Version, status: StatusCode) -> Value {
    let mut entry = json!({
        "fullUrl": format!("{}/{}/{}", state.base_url, v.resource_type, v.id),
        "response": {
            "status": status_line(status),
            "location": format!("{}/{}/_history/{}", v.resource_type, v.id, v.version),
            "etag": etag(v.version),
            "lastModified": format_instant(v.last_updated),
        },
    });
    if let Some(body) = &v.body {
        entry["resource"] = body.clone();
    }
    entry
}

fn error_entry(e: &Error) -> Value {
    json!({"response": {
        "status": status_line(status_of(e.kind)),
        "outcome": operation_outcome(&e.issues),
    }})
}

/// The token must permit each write of a Bundle, as if it came on its own.
async fn guard_write(state: &AppState, access: &Access, w: &Write) -> Result<()> {
    if !matches!(w, Write::Create { .. }) {
        super::rest::append_only(w.resource_type())?;
    }
    // Booking a Slot changes the Slot too: that is done by `POST`/`PUT Appointment`.
    if let Write::Create { body, .. } | Write::Update { body, .. } = w {
        let with_slots = crate::scheduling::booking::slot_ids(body).map_or(true, |s| !s.is_empty());
        if w.resource_type() == "Appointment" && with_slots {
            return Err(Error::new(
                ErrorKind::Unprocessable,
                IssueType::BusinessRule,
                "an Appointment with slots is booked by POST or PUT of the Appointment itself, \
                 not inside a Bundle (the Slots change with it)",
            ));
        }
    }
    match w {
        Write::Create {
            resource_type,
            body,
            ..
        } => {
            guard::write(
                state,
                access,
                resource_type,
                None,
                Interaction::Create,
                Some(body),
            )
            .await
        }
        Write::Update {
            resource_type,
            id,
            body,
            ..
        } => {
            guard::write(
                state,
                access,
                resource_type,
                Some(id),
                Interaction::Update,
                Some(body),
            )
            .await
        }
        Write::Delete {
            resource_type, id, ..
        } => {
            guard::write(
                state,
                access,
                resource_type,
                Some(id),
                Interaction::Delete,
                None,
            )
            .await
        }
    }
}

/// A GET or HEAD entry: read, vread or search.
async fn read_entry(state: &AppState, req: &FhirRequest, entry: &Entry) -> Value {
    let result: Result<Value> = async {
        match &entry.target {
            Target::Instance(t, id) => {
                req.access.decide(t, Interaction::Read)?;
                let v = state
                    .store
                    .read(t, id)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("{t}/{id} does not exist")))?;
                if v.is_deleted() {
                    return Err(Error::gone(format!("{t}/{id} was deleted")));
                }
                guard::read(state, &req.access, &v).await?;
                Ok(written_entry(state, &v, StatusCode::OK))
            }
            Target::Version(t, id, version) => {
                let v = state
                    .store
                    .vread(t, id, *version)
                    .await?
                    .filter(|v| !v.is_deleted())
                    .ok_or_else(|| {
                        Error::not_found(format!("{t}/{id} has no version {version}"))
                    })?;
                guard::read(state, &req.access, &v).await?;
                Ok(written_entry(state, &v, StatusCode::OK))
            }
            Target::Type(t, query) => {
                let params: Vec<(String, String)> =
                    form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect();
                let reply = search::run(state, req, t, &params, None, &format!("/{t}")).await?;
                Ok(json!({
                    "resource": reply.body.unwrap_or(Value::Null),
                    "response": {"status": status_line(StatusCode::OK)},
                }))
            }
        }
    }
    .await;
    let (code, target) = match &entry.target {
        Target::Instance(t, id) => ("read", format!("{t}/{id}")),
        Target::Version(t, id, v) => ("vread", format!("{t}/{id}/_history/{v}")),
        Target::Type(t, q) => ("search-type", format!("{t}?{}", q.as_deref().unwrap_or(""))),
    };
    let status = result
        .as_ref()
        .map_or_else(|e| status_of(e.kind).as_u16(), |_| 200);
    let disclosed = result.as_ref().ok().and_then(|e| e.get("resource"));
    audit::record_entry(state, req, code, status, disclosed, &target).await;
    let mut entry_json = result.unwrap_or_else(|e| error_entry(&e));
    if entry.method == Method::Head {
        if let Value::Object(map) = &mut entry_json {
            map.shift_remove("resource");
        }
    }
    entry_json
}
