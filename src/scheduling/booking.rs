//! Booking Slots with Appointments. An Appointment whose status holds its slots (pending,
//! booked, arrived, fulfilled, checked-in) keeps every Slot it references `busy`; any other
//! status (proposed, waitlist, cancelled, noshow, entered-in-error) holds none. Writing an
//! Appointment therefore books the slots it newly holds (each must exist, be `free` and not
//! be over) and frees those it no longer holds: rescheduling is one write that does both.
//! The store makes the Slot changes in the Appointment's transaction, each conditional on
//! the Slot's version, so of two bookings of one Slot exactly one succeeds.
//! <https://hl7.org/fhir/R4/valueset-appointmentstatus.html>

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// Whether an Appointment in this status holds its slots.
pub fn holds_slots(status: &str) -> bool {
    matches!(
        status,
        "pending" | "booked" | "arrived" | "fulfilled" | "checked-in"
    )
}

/// The ids of the Slots an Appointment references (`Appointment.slot`), whatever its status;
/// `Err` names a reference that is not a local `Slot/[id]`.
pub fn slot_ids(appointment: &Value) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    for slot in appointment["slot"].as_array().into_iter().flatten() {
        let reference = slot["reference"].as_str().unwrap_or("");
        match reference.strip_prefix("Slot/") {
            Some(id) if crate::fhir::id::is_valid_id(id) => {
                if !ids.iter().any(|i| i == id) {
                    ids.push(id.to_string());
                }
            }
            _ => {
                return Err(format!(
                    "Appointment.slot must reference Slot/[id] on this server, not '{reference}'"
                ))
            }
        }
    }
    Ok(ids)
}

/// The Slots an Appointment holds: its slots if its status holds them, else none.
pub fn held_slots(appointment: &Value) -> Result<Vec<String>, String> {
    match appointment["status"].as_str() {
        Some(s) if holds_slots(s) => slot_ids(appointment),
        _ => Ok(Vec::new()),
    }
}

/// Turns an Appointment given to `$book` into the one to store: `proposed` becomes
/// `booked` (`pending` and `booked` stay), the server-assigned id and `$find`'s score
/// extension (`score_url`) go. It must reference at least one Slot.
pub fn propose_to_book(appointment: &mut Value, score_url: &str) -> Result<(), String> {
    match appointment["status"].as_str() {
        Some("proposed") => appointment["status"] = json!("booked"),
        Some("pending" | "booked") => {}
        other => {
            return Err(format!(
                "$book books a proposed, pending or booked Appointment, not one that is {}",
                other.unwrap_or("without a status")
            ))
        }
    }
    if slot_ids(appointment)?.is_empty() {
        return Err("$book needs an Appointment that references the Slot(s) to book".into());
    }
    if let Some(map) = appointment.as_object_mut() {
        map.shift_remove("id");
        map.shift_remove("meta");
        if let Some(Value::Array(ext)) = map.get_mut("extension") {
            ext.retain(|e| e["url"] != score_url);
            if ext.is_empty() {
                map.shift_remove("extension");
            }
        }
    }
    Ok(())
}

/// A Slot as booking needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotState {
    pub id: String,
    pub version: i64,
    pub status: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl SlotState {
    /// Reads a stored Slot; `None` if its times are unreadable.
    pub fn of(id: &str, version: i64, slot: &Value) -> Option<SlotState> {
        let instant = |k: &str| {
            slot[k]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        Some(SlotState {
            id: id.to_string(),
            version,
            status: slot["status"].as_str().unwrap_or("").to_string(),
            start: instant("start")?,
            end: instant("end")?,
        })
    }
}

/// Why a booking is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The Slot is not free (409).
    Busy(String),
    /// The Slot is over (422).
    Past(String),
    /// The Appointment's start or end is not its slots' (422).
    TimesDisagree(String),
}

impl Refusal {
    pub fn message(&self) -> String {
        match self {
            Refusal::Busy(id) => format!("Slot/{id} is not free: it is booked already"),
            Refusal::Past(id) => format!("Slot/{id} is over: it cannot be booked"),
            Refusal::TimesDisagree(why) => why.clone(),
        }
    }
}

/// The slots to mark busy and to free when an Appointment that held `before` comes to hold
/// `after`.
pub fn changes(before: &[String], after: &[String]) -> (Vec<String>, Vec<String>) {
    let book = after
        .iter()
        .filter(|s| !before.contains(s))
        .cloned()
        .collect();
    let free = before
        .iter()
        .filter(|s| !after.contains(s))
        .cloned()
        .collect();
    (book, free)
}

/// Checks a booking: every slot in `newly_booked` must be free and not over at `now`, and the
/// Appointment must span exactly its slots (`held`, sorted or not). A missing start or end is
/// filled in from the slots.
pub fn check(
    appointment: &mut Value,
    held: &[SlotState],
    newly_booked: &[String],
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    for slot in held.iter().filter(|s| newly_booked.contains(&s.id)) {
        if slot.status != "free" {
            return Err(Refusal::Busy(slot.id.clone()));
        }
        if slot.end <= now {
            return Err(Refusal::Past(slot.id.clone()));
        }
    }
    let (Some(start), Some(end)) = (
        held.iter().map(|s| s.start).min(),
        held.iter().map(|s| s.end).max(),
    ) else {
        return Ok(());
    };
    let format = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for (key, expected) in [("start", start), ("end", end)] {
        match appointment[key].as_str() {
            None => appointment[key] = json!(format(expected)),
            Some(given) => {
                let same = DateTime::parse_from_rfc3339(given)
                    .is_ok_and(|g| g.with_timezone(&Utc) == expected);
                if !same {
                    return Err(Refusal::TimesDisagree(format!(
                        "Appointment.{key} is {given} but its slots {} at {}",
                        if key == "start" { "start" } else { "end" },
                        format(expected)
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The Slot with a new status.
pub fn with_status(slot: &Value, status: &str) -> Value {
    let mut s = slot.clone();
    s["status"] = json!(status);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
    }

    fn slot(id: &str, status: &str, start: &str, end: &str) -> SlotState {
        SlotState {
            id: id.into(),
            version: 1,
            status: status.into(),
            start: at(start),
            end: at(end),
        }
    }

    #[test]
    fn only_active_statuses_hold_slots() {
        let a =
            json!({"status": "booked", "slot": [{"reference": "Slot/a"}, {"reference": "Slot/b"}]});
        assert_eq!(held_slots(&a).unwrap(), vec!["a", "b"]);
        let cancelled = json!({"status": "cancelled", "slot": [{"reference": "Slot/a"}]});
        assert!(held_slots(&cancelled).unwrap().is_empty());
        let remote =
            json!({"status": "booked", "slot": [{"reference": "http://elsewhere/Slot/a"}]});
        assert!(held_slots(&remote).is_err());
    }

    #[test]
    fn rescheduling_books_the_new_slot_and_frees_the_old() {
        let (book, free) = changes(&["a".into()], &["b".into()]);
        assert_eq!((book, free), (vec!["b".to_string()], vec!["a".to_string()]));
        let (book, free) = changes(&["a".into()], &[]);
        assert_eq!((book.len(), free), (0, vec!["a".to_string()]));
    }

    #[test]
    fn a_booking_needs_a_free_future_slot_and_matching_times() {
        let now = at("2030-01-01T08:00:00Z");
        let s = slot("a", "free", "2030-01-01T09:00:00Z", "2030-01-01T09:30:00Z");
        let mut a = json!({"status": "booked"});
        check(&mut a, std::slice::from_ref(&s), &["a".into()], now).unwrap();
        assert_eq!(a["start"], "2030-01-01T09:00:00Z");
        assert_eq!(a["end"], "2030-01-01T09:30:00Z");
        // The same instant in another offset agrees.
        let mut b = json!({"start": "2030-01-01T10:00:00+01:00", "end": "2030-01-01T09:30:00Z"});
        check(&mut b, std::slice::from_ref(&s), &["a".into()], now).unwrap();
        let mut wrong = json!({"start": "2030-01-01T09:15:00Z"});
        assert!(matches!(
            check(&mut wrong, std::slice::from_ref(&s), &["a".into()], now),
            Err(Refusal::TimesDisagree(_))
        ));
        let busy = slot("a", "busy", "2030-01-01T09:00:00Z", "2030-01-01T09:30:00Z");
        assert_eq!(
            check(
                &mut json!({}),
                std::slice::from_ref(&busy),
                &["a".into()],
                now
            ),
            Err(Refusal::Busy("a".into()))
        );
        // A slot already held by this appointment may be busy (it is busy because of it).
        check(&mut json!({}), &[busy], &[], now).unwrap();
        let past = slot("a", "free", "2029-01-01T09:00:00Z", "2029-01-01T09:30:00Z");
        assert_eq!(
            check(&mut json!({}), &[past], &["a".into()], now),
            Err(Refusal::Past("a".into()))
        );
    }
}
