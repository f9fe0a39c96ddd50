//! Appointment writes that book, free or move Slots (`scheduling::booking` decides; this file
//! reads the Slots and hands the store one transaction). Each Slot change is an update
//! conditional on the version that was checked: a concurrent booking of the same Slot makes
//! the store refuse ours (the row lock and version check hold across Hearth processes on one
//! database), and that is answered `409`.

use axum::http::StatusCode;
use serde_json::Value;

use super::audit;
use super::reply::Reply;
use super::request::FhirRequest;
use super::AppState;
use crate::error::{Error, ErrorKind, Result};
use crate::fhir::id::new_id;
use crate::fhir::outcome::IssueType;
use crate::scheduling::booking::{self, Refusal, SlotState};
use crate::store::{ResourceStore, Version, Write};

fn unprocessable(message: String) -> Error {
    Error::new(ErrorKind::Unprocessable, IssueType::BusinessRule, message)
}

fn conflict(message: String) -> Error {
    Error::new(ErrorKind::Conflict, IssueType::Conflict, message)
}

/// The current Slot `id` with its stored body; `None` if there is none or its times cannot
/// be read.
async fn read_slot(state: &AppState, id: &str) -> Result<Option<(SlotState, Value)>> {
    let Some(v) = state.store.read("Slot", id).await? else {
        return Ok(None);
    };
    let Some(body) = v.body else {
        return Ok(None);
    };
    Ok(SlotState::of(id, v.version, &body).map(|slot| (slot, body)))
}

/// The current Slots `ids`, each with its stored body; all must exist.
async fn slots(state: &AppState, ids: &[String]) -> Result<Vec<(SlotState, Value)>> {
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        let slot = read_slot(state, id).await?.ok_or_else(|| {
            unprocessable(format!(
                "Slot/{id} does not exist (or has no readable start and end)"
            ))
        })?;
        found.push(slot);
    }
    Ok(found)
}

/// The Slot writes that free `ids` (those that still exist and are busy).
async fn freeing(state: &AppState, ids: &[String]) -> Result<Vec<Write>> {
    let mut writes = Vec::new();
    for id in ids {
        let Some((slot, body)) = read_slot(state, id).await? else {
            continue;
        };
        if slot.status == "busy" {
            writes.push(Write::Update {
                resource_type: "Slot".into(),
                id: slot.id.clone(),
                body: booking::with_status(&body, "free"),
                expected: Some(slot.version),
            });
        }
    }
    Ok(writes)
}

/// Creates (`id` `None`) or updates an Appointment, booking and freeing its Slots in the
/// same transaction. `expected` is the Appointment's `If-Match`; the caller has checked the
/// requester may write it (the Slot changes follow from the booking, whoever makes it).
pub async fn write_appointment(
    state: &AppState,
    req: &FhirRequest,
    id: Option<&str>,
    appointment: Value,
    expected: Option<i64>,
) -> Result<Reply> {
    let (status, version) = store_appointment(state, req, id, appointment, expected).await?;
    Ok(Reply::written(status, &version, &state.base_url, req.prefer_return).recorded())
}

/// [`write_appointment`]'s work: the status to answer and the Appointment as stored.
async fn store_appointment(
    state: &AppState,
    req: &FhirRequest,
    id: Option<&str>,
    mut appointment: Value,
    expected: Option<i64>,
) -> Result<(StatusCode, Version)> {
    let before = match id {
        Some(id) => match state.store.read("Appointment", id).await? {
            Some(v) if !v.is_deleted() => {
                booking::held_slots(v.body.as_ref().unwrap_or(&Value::Null)).unwrap_or_default()
            }
            _ => Vec::new(),
        },
        None => Vec::new(),
    };
    let after = booking::held_slots(&appointment).map_err(Error::bad_request)?;
    let (book, free) = booking::changes(&before, &after);
    let held = slots(state, &after).await?;
    let states: Vec<SlotState> = held.iter().map(|(s, _)| s.clone()).collect();
    booking::check(&mut appointment, &states, &book, chrono::Utc::now()).map_err(|r| match r {
        Refusal::Busy(_) => conflict(r.message()),
        _ => unprocessable(r.message()),
    })?;
    let mut writes: Vec<Write> = held
        .iter()
        .filter(|(s, _)| book.contains(&s.id))
        .map(|(s, body)| Write::Update {
            resource_type: "Slot".into(),
            id: s.id.clone(),
            body: booking::with_status(body, "busy"),
            expected: Some(s.version),
        })
        .collect();
    writes.extend(freeing(state, &free).await?);
    let slot_writes = writes.len();
    writes.push(match id {
        None => Write::Create {
            resource_type: "Appointment".into(),
            id: new_id(),
            body: appointment,
            unless: None,
        },
        Some(id) => Write::Update {
            resource_type: "Appointment".into(),
            id: id.to_string(),
            body: appointment,
            expected,
        },
    });
    let trail = audit::trail(state, req, "");
    let numbered = writes.into_iter().enumerate().collect();
    let written = match state.store.transaction(numbered, Some(&trail)).await {
        Ok(w) => w,
        Err(e) if e.kind == ErrorKind::PreconditionFailed || e.kind == ErrorKind::Conflict => {
            let entry = format!("Bundle.entry[{slot_writes}]");
            let about_appointment = e
                .issues
                .iter()
                .any(|i| i.expression.first().is_some_and(|x| *x == entry));
            return Err(if about_appointment {
                Error::precondition_failed(
                    "the Appointment is not at the version that If-Match requires",
                )
            } else {
                conflict(
                    "a Slot of this Appointment was booked by another request meanwhile".into(),
                )
            });
        }
        Err(e) => return Err(e),
    };
    let done = written
        .into_iter()
        .last()
        .ok_or_else(|| Error::internal("the booking wrote nothing"))?;
    let version: Version = done
        .version
        .ok_or_else(|| Error::internal("the booking wrote no Appointment"))?;
    let status = if done.created || id.is_none() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, version))
}

/// `POST [base]/Appointment/$book`: books an Appointment, typically one `$find` proposed.
/// The body is the Appointment, a Parameters with it as `appt-resource` (Argonaut
/// Scheduling) or `appointment-resource` (IHE Scheduling), or a Bundle holding it. A
/// proposed Appointment becomes booked; it must reference the Slots it books. The answer is
/// a searchset Bundle with the stored Appointment.
/// OperationDefinition: `conformance/OperationDefinition-appointment-book.json`.
pub async fn book(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: FhirRequest,
    axum::extract::Path(resource_type): axum::extract::Path<String>,
    body: axum::body::Body,
) -> axum::response::Response {
    let result = async {
        if resource_type != "Appointment" {
            return Err(Error::not_found(format!(
                "there is no operation $book on {resource_type}"
            )));
        }
        let input = super::format::read_resource(&req.headers, body, state.max_body_bytes).await?;
        let mut appointment = booking_input(input).map_err(Error::bad_request)?;
        booking::propose_to_book(&mut appointment, super::find::FIND_SCORE)
            .map_err(unprocessable)?;
        super::rest::check_resource(&state, &appointment, "Appointment")?;
        super::guard::write(
            &state,
            &req.access,
            "Appointment",
            None,
            crate::auth::scope::Interaction::Create,
            Some(&appointment),
        )
        .await?;
        let (_, v) = store_appointment(&state, &req, None, appointment, None).await?;
        let full_url = format!("{}/Appointment/{}", state.base_url, v.id);
        Ok(Reply::ok(serde_json::json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "total": 1,
            "entry": [{"fullUrl": full_url, "resource": v.body, "search": {"mode": "match"}}],
        }))
        .recorded())
    }
    .await;
    req.respond(result)
}

/// The Appointment in a `$book` body.
fn booking_input(input: Value) -> std::result::Result<Value, String> {
    let found = match input["resourceType"].as_str() {
        Some("Appointment") => Some(input),
        Some("Parameters") => input["parameter"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "appt-resource" || p["name"] == "appointment-resource")
            .map(|p| p["resource"].clone()),
        Some("Bundle") => input["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| &e["resource"])
            .find(|r| r["resourceType"] == "Appointment")
            .cloned(),
        _ => None,
    };
    match found {
        Some(a) if a["resourceType"] == "Appointment" => Ok(a),
        _ => Err(
            "$book needs an Appointment: the body itself, a Parameters with \
                  appt-resource, or a Bundle holding it"
                .into(),
        ),
    }
}

/// The Slot writes that free what a deleted Appointment held.
pub async fn release_on_delete(state: &AppState, id: &str) -> Result<Vec<Write>> {
    let held = match state.store.read("Appointment", id).await? {
        Some(v) if !v.is_deleted() => {
            booking::held_slots(v.body.as_ref().unwrap_or(&Value::Null)).unwrap_or_default()
        }
        _ => Vec::new(),
    };
    freeing(state, &held).await
}

/// `POST [base]/[type]/[id]/$[operation]`: the instance operations.
pub async fn instance_operation(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: FhirRequest,
    axum::extract::Path((resource_type, id, operation)): axum::extract::Path<(
        String,
        String,
        String,
    )>,
) -> axum::response::Response {
    let result = match (resource_type.as_str(), operation.as_str()) {
        ("Schedule", "$generate-slots") => generate_slots(&state, &req, &id).await,
        _ => Err(Error::not_found(format!(
            "there is no operation {operation} on {resource_type}"
        ))),
    };
    req.respond(result)
}

/// The longest period one `$generate-slots` call covers.
const MAX_GENERATION_DAYS: i64 = 366;

/// A Slot id that is the same whenever the same Schedule gets a slot at the same start, so
/// that two generations cannot both create it.
fn slot_id(schedule: &str, start: chrono::DateTime<chrono::Utc>) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{schedule}|{}", start.timestamp()).as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("slot-{hex}")
}

/// `POST Schedule/[id]/$generate-slots?start=YYYY-MM-DD&end=YYYY-MM-DD`: creates the free
/// Slots of the Schedule's practitioners' working hours on those days (`end` excluded),
/// within its planning horizon, leaving out leave and every start that already has a Slot
/// (booked or not): running it twice creates nothing the second time. Answers a Parameters
/// with how many Slots were `created` and how many `existing` ones were kept.
async fn generate_slots(state: &AppState, req: &FhirRequest, id: &str) -> Result<Reply> {
    use crate::auth::scope::Interaction;
    use crate::scheduling::availability;
    use chrono::NaiveDate;

    let limits = req.access.decide("Slot", Interaction::Create)?;
    if limits.patient.is_some() || !limits.query.is_empty() {
        return Err(Error::forbidden(
            "generating Slots needs an unrestricted scope to create Slots",
        ));
    }
    let param = |name: &str| -> Result<NaiveDate> {
        let text = req
            .params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| {
                Error::bad_request(format!("{name} (a date, YYYY-MM-DD) is required"))
            })?;
        NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
            Error::bad_request(format!("{name} must be a date (YYYY-MM-DD), not '{text}'"))
        })
    };
    let (from, to) = (param("start")?, param("end")?);
    if to <= from {
        return Err(Error::bad_request("end must be after start"));
    }
    if (to - from).num_days() > MAX_GENERATION_DAYS {
        return Err(Error::bad_request(format!(
            "one call generates at most {MAX_GENERATION_DAYS} days"
        )));
    }
    let schedule = state
        .store
        .read("Schedule", id)
        .await?
        .and_then(|v| v.body)
        .ok_or_else(|| Error::not_found(format!("Schedule/{id} does not exist")))?;
    // The planning horizon bounds what may be generated.
    let day = |v: &Value| {
        v.as_str()
            .and_then(|t| NaiveDate::parse_from_str(t.get(..10)?, "%Y-%m-%d").ok())
    };
    let from = match day(&schedule["planningHorizon"]["start"]) {
        Some(h) if h > from => h,
        _ => from,
    };
    let to = match day(&schedule["planningHorizon"]["end"]) {
        Some(h) if h.succ_opt().is_some_and(|next| next < to) => h.succ_opt().unwrap_or(to),
        _ => to,
    };
    // The practitioners' working hours: PractitionerRole actors, or the roles of
    // Practitioner actors.
    let mut roles = Vec::new();
    for actor in schedule["actor"].as_array().into_iter().flatten() {
        let reference = actor["reference"].as_str().unwrap_or("");
        if let Some(role_id) = reference.strip_prefix("PractitionerRole/") {
            if let Some(body) = state
                .store
                .read("PractitionerRole", role_id)
                .await?
                .and_then(|v| v.body)
            {
                roles.push(body);
            }
        } else if reference.starts_with("Practitioner/") {
            let search = crate::search::query::parse(
                &state.store.indexer().registry(),
                &state.base_url,
                "PractitionerRole",
                &[("practitioner".into(), reference.to_string())],
                false,
            )
            .map_err(super::search::param_error)?;
            roles.extend(
                state
                    .store
                    .matches(&search, 100)
                    .await?
                    .into_iter()
                    .filter_map(|v| v.body),
            );
        }
    }
    let mut hours = Vec::new();
    let mut leave = Vec::new();
    for role in &roles {
        hours.extend(availability::hours(role).map_err(unprocessable)?);
        leave.extend(availability::leave(role));
    }
    if hours.is_empty() {
        return Err(unprocessable(format!(
            "Schedule/{id} has no working hours: give its PractitionerRole an availableTime"
        )));
    }
    availability::check_overlaps(&hours).map_err(unprocessable)?;
    // (After the horizon, `to` may not be after `from`: then there is nothing to make.)
    let wanted = availability::slots(&hours, &leave, from, to, chrono::Utc::now());
    let instant =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // Starts that have a Slot already are kept as they are.
    let existing: std::collections::HashSet<i64> = if wanted.is_empty() {
        Default::default()
    } else {
        let (first, last) = (wanted[0].0, wanted[wanted.len() - 1].0);
        let search = crate::search::query::parse(
            &state.store.indexer().registry(),
            &state.base_url,
            "Slot",
            &[
                ("schedule".into(), format!("Schedule/{id}")),
                ("start".into(), format!("ge{}", instant(first))),
                ("start".into(), format!("le{}", instant(last))),
            ],
            false,
        )
        .map_err(super::search::param_error)?;
        state
            .store
            .matches(&search, 1_000_000)
            .await?
            .into_iter()
            .filter_map(|v| {
                let body = v.body?;
                SlotState::of(&v.id, v.version, &body).map(|s| s.start.timestamp())
            })
            .collect()
    };
    let writes: Vec<(usize, Write)> = wanted
        .iter()
        .filter(|(start, _)| !existing.contains(&start.timestamp()))
        .enumerate()
        .map(|(n, (start, end))| {
            (
                n,
                Write::Create {
                    resource_type: "Slot".into(),
                    id: slot_id(id, *start),
                    body: serde_json::json!({"resourceType": "Slot", "status": "free",
                        "schedule": {"reference": format!("Schedule/{id}")},
                        "start": instant(*start), "end": instant(*end)}),
                    unless: None,
                },
            )
        })
        .collect();
    let created = writes.len();
    if !writes.is_empty() {
        let trail = audit::trail(state, req, "create");
        state
            .store
            .transaction(writes, Some(&trail))
            .await
            .map_err(|e| match e.kind {
                ErrorKind::Conflict => conflict(
                    "another $generate-slots for this Schedule ran at the same time; run it again"
                        .into(),
                ),
                _ => e,
            })?;
    }
    Ok(Reply::ok(serde_json::json!({
        "resourceType": "Parameters",
        "parameter": [
            {"name": "created", "valueInteger": created},
            {"name": "existing", "valueInteger": existing.len()},
        ],
    })))
}
