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

/// The current Slots `ids`, each with its stored body.
async fn slots(state: &AppState, ids: &[String]) -> Result<Vec<(SlotState, Value)>> {
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        let v = state
            .store
            .read("Slot", id)
            .await?
            .filter(|v| !v.is_deleted())
            .ok_or_else(|| unprocessable(format!("Slot/{id} does not exist")))?;
        let body = v.body.clone().unwrap_or_default();
        let slot = SlotState::of(id, v.version, &body)
            .ok_or_else(|| unprocessable(format!("Slot/{id} has no readable start and end")))?;
        found.push((slot, body));
    }
    Ok(found)
}

/// The Slot writes that free `ids` (those that still exist and are busy).
async fn freeing(state: &AppState, ids: &[String]) -> Result<Vec<Write>> {
    let mut writes = Vec::new();
    for id in ids {
        let Some(v) = state
            .store
            .read("Slot", id)
            .await?
            .filter(|v| !v.is_deleted())
        else {
            continue;
        };
        let body = v.body.clone().unwrap_or_default();
        let Some(slot) = SlotState::of(id, v.version, &body) else {
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
    mut appointment: Value,
    expected: Option<i64>,
) -> Result<Reply> {
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
    Ok(Reply::written(status, &version, &state.base_url, req.prefer_return).recorded())
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
