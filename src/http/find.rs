//! `Appointment/$find` (GET, or POST with a Parameters body): gathers the Schedules the
//! inputs allow, their free Slots in the window and the patient's past visits, and answers
//! the best Slots as proposed Appointments, ranked by `scheduling::find` with the score and
//! its reasons on each. Every search here goes through the same guard as a client's, so a
//! token sees no more through `$find` than through search.
//! OperationDefinition: `conformance/OperationDefinition-appointment-find.json`.

use std::collections::{HashMap, HashSet};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::format::read_resource;
use super::guard;
use super::reply::Reply;
use super::request::FhirRequest;
use super::AppState;
use crate::auth::scope::Interaction;
use crate::error::{Error, Result};
use crate::fhir::datetime::{self, format_instant, Kind};
use crate::scheduling::booking::SlotState;
use crate::scheduling::find::{self, Candidate, History, Urgency, SNOMED};
use crate::search::query;

/// The extension that carries a proposal's score and reasons.
pub const FIND_SCORE: &str = "http://hearth.health/fhir/StructureDefinition/find-score";
/// At most this many free Slots (the earliest) are scored, plus those of practitioners the
/// patient saw before.
const MAX_CANDIDATES: usize = 2000;
const MAX_COUNT: usize = 100;

/// `[base]/Appointment/$find`
pub async fn find(
    State(state): State<AppState>,
    req: FhirRequest,
    Path(resource_type): Path<String>,
    method: Method,
    body: Body,
) -> Response {
    let result = async {
        if resource_type != "Appointment" {
            return Err(Error::not_found(format!(
                "there is no operation $find on {resource_type}"
            )));
        }
        let mut inputs = req.params.clone();
        if method == Method::POST {
            let parameters = read_resource(&req.headers, body, state.max_body_bytes).await?;
            inputs.extend(parameter_values(&parameters)?);
        }
        find_appointments(&state, &req, &inputs).await
    }
    .await;
    req.respond(result)
}

/// The inputs of a Parameters resource as name and text value (`system|code` for codings,
/// the reference for references).
pub fn parameter_values(parameters: &Value) -> Result<Vec<(String, String)>> {
    if parameters["resourceType"] != "Parameters" {
        return Err(Error::bad_request(
            "the body of $find must be a Parameters resource",
        ));
    }
    let mut out = Vec::new();
    for p in parameters["parameter"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("").to_string();
        let value = p.as_object().and_then(|o| {
            o.iter().find_map(|(k, v)| {
                let kind = k.strip_prefix("value")?;
                match (kind, v) {
                    (_, Value::String(s)) => Some(s.clone()),
                    (_, Value::Number(n)) => Some(n.to_string()),
                    (_, Value::Bool(b)) => Some(b.to_string()),
                    ("Reference", v) => v["reference"].as_str().map(str::to_string),
                    ("Coding", v) => Some(token(v)),
                    ("CodeableConcept", v) => v["coding"]
                        .get(0)
                        .map(token)
                        .or_else(|| v["text"].as_str().map(str::to_string)),
                    _ => None,
                }
            })
        });
        match value {
            Some(v) => out.push((name, v)),
            None => {
                return Err(Error::bad_request(format!(
                    "the $find input '{name}' has no value this operation can read"
                )))
            }
        }
    }
    Ok(out)
}

fn token(coding: &Value) -> String {
    match (coding["system"].as_str(), coding["code"].as_str()) {
        (Some(s), Some(c)) => format!("{s}|{c}"),
        (_, Some(c)) => c.to_string(),
        _ => String::new(),
    }
}

/// The inputs, read and checked.
struct Inputs {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    urgency: Urgency,
    practitioners: Vec<String>,
    specialties: Vec<String>,
    service_types: Vec<String>,
    patient: Option<String>,
    symptoms: Vec<String>,
    count: usize,
}

/// Reads the inputs (Argonaut's `provider` and `visit-type` are accepted for
/// `practitioner` and `service-type`); anything unknown or malformed is a 400.
fn read_inputs(inputs: &[(String, String)], now: DateTime<Utc>, max_days: i64) -> Result<Inputs> {
    let mut all: HashMap<&str, Vec<&str>> = HashMap::new();
    for (name, value) in inputs {
        let name = match name.as_str() {
            "provider" => "practitioner",
            "visit-type" => "service-type",
            "start" | "end" | "practitioner" | "specialty" | "service-type" | "patient"
            | "urgency" | "symptoms" | "_count" => name.as_str(),
            "_format" | "_pretty" => continue,
            other => {
                return Err(Error::bad_request(format!(
                    "$find has no input '{other}' (it takes start, end, practitioner, \
                     specialty, service-type, patient, urgency, symptoms and _count)"
                )))
            }
        };
        all.entry(name).or_default().push(value.as_str());
    }
    let one = |name: &str| -> Result<Option<&str>> {
        match all.get(name).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([v]) => Ok(Some(*v)),
            Some(_) => Err(Error::bad_request(format!(
                "$find takes at most one '{name}'"
            ))),
        }
    };
    // Several values, given repeated or comma-separated.
    let many = |name: &str| -> Vec<String> {
        all.get(name)
            .into_iter()
            .flatten()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect()
    };
    let time = |name: &str, value: &str| {
        datetime::parse(value, Kind::DateTime).ok_or_else(|| {
            Error::bad_request(format!(
                "{name} must be a FHIR date or dateTime, not '{value}'"
            ))
        })
    };
    let urgency =
        Urgency::parse(one("urgency")?.unwrap_or("routine")).map_err(Error::bad_request)?;
    let from = match one("start")? {
        Some(v) => time("start", v)?.start,
        None => now,
    };
    let to = match one("end")? {
        // A date as the end means through that day.
        Some(v) => time("end", v)?.end,
        None => from.max(now) + urgency.window(),
    };
    if to <= from {
        return Err(Error::bad_request("end must be after start"));
    }
    if to - from > chrono::Duration::days(max_days) {
        return Err(Error::bad_request(format!(
            "the window from start to end may be at most {max_days} days"
        )));
    }
    let count = match one("_count")? {
        None => 10,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_COUNT).contains(&n) => n,
            _ => {
                return Err(Error::bad_request(format!(
                    "_count must be a whole number from 1 to {MAX_COUNT}, not '{v}'"
                )))
            }
        },
    };
    let reference = |kind: &str, value: &str| -> Result<String> {
        let id = value.strip_prefix(&format!("{kind}/")).unwrap_or(value);
        if crate::fhir::id::is_valid_id(id) {
            Ok(format!("{kind}/{id}"))
        } else {
            Err(Error::bad_request(format!(
                "'{value}' is not a {kind} reference ({kind}/[id])"
            )))
        }
    };
    Ok(Inputs {
        // Nothing in the past can be booked.
        from: from.max(now),
        to,
        urgency,
        practitioners: many("practitioner")
            .iter()
            .map(|p| reference("Practitioner", p))
            .collect::<Result<_>>()?,
        specialties: many("specialty"),
        service_types: many("service-type"),
        patient: one("patient")?
            .map(|p| reference("Patient", p))
            .transpose()?,
        symptoms: many("symptoms"),
        count,
    })
}

/// A search as the requester would make it: parsed, then confined by their token.
async fn search(
    state: &AppState,
    req: &FhirRequest,
    resource_type: &str,
    params: &[(&str, String)],
    limit: usize,
) -> Result<Vec<Live>> {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let registry = state.store.indexer().registry();
    let mut search = query::parse(&registry, &state.base_url, resource_type, &params, false)
        .map_err(super::search::param_error)?;
    guard::search(state, &req.access, &mut search)?;
    Ok(state
        .store
        .matches(&search, limit)
        .await?
        .into_iter()
        .filter_map(|v| {
            Some(Live {
                reference: format!("{}/{}", v.resource_type, v.id),
                body: v.body?,
                id: v.id,
                version: v.version,
            })
        })
        .collect())
}

/// A current resource a search found.
struct Live {
    /// `[type]/[id]`
    reference: String,
    id: String,
    version: i64,
    body: Value,
}

/// A Schedule as `$find` needs it.
struct ScheduleInfo {
    body: Value,
    practitioner: Option<String>,
    specialties: Vec<String>,
}

fn codes(concepts: &Value) -> impl Iterator<Item = String> + '_ {
    concepts
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["coding"].as_array().into_iter().flatten())
        .filter_map(|c| c["code"].as_str().map(str::to_string))
}

async fn find_appointments(
    state: &AppState,
    req: &FhirRequest,
    inputs: &[(String, String)],
) -> Result<Reply> {
    let now = Utc::now();
    let mut i = read_inputs(inputs, now, state.find_max_days)?;
    // A patient's own token speaks for that patient.
    if i.patient.is_none() {
        if let Ok(limits) = req.access.decide("Appointment", Interaction::Search) {
            i.patient = limits.patient.map(|p| format!("Patient/{p}"));
        }
    }
    let routing = find::route(&i.symptoms);

    // The Schedules the inputs allow.
    let mut base: Vec<(&str, String)> = vec![("active:not", "false".into())];
    if !i.practitioners.is_empty() {
        let roles = search(
            state,
            req,
            "PractitionerRole",
            &[("practitioner", i.practitioners.join(","))],
            1000,
        )
        .await?;
        let actors: Vec<String> = i
            .practitioners
            .iter()
            .cloned()
            .chain(roles.iter().map(|r| r.reference.clone()))
            .collect();
        base.push(("actor", actors.join(",")));
    }
    if !i.service_types.is_empty() {
        base.push(("service-type", i.service_types.join(",")));
    }
    let explicit = !i.specialties.is_empty();
    let wanted: Vec<String> = if explicit {
        i.specialties.clone()
    } else if i.practitioners.is_empty() {
        routing
            .codes()
            .iter()
            .map(|c| format!("{SNOMED}|{c}"))
            .collect()
    } else {
        Vec::new()
    };
    let mut schedules = Vec::new();
    if !wanted.is_empty() {
        let mut by_specialty = base.clone();
        by_specialty.push(("specialty", wanted.join(",")));
        schedules = search(state, req, "Schedule", &by_specialty, 1000).await?;
        let roles = search(
            state,
            req,
            "PractitionerRole",
            &[("specialty", wanted.join(","))],
            1000,
        )
        .await?;
        let actors: Vec<String> = roles
            .iter()
            .map(|r| r.reference.clone())
            .chain(roles.iter().filter_map(|r| {
                r.body["practitioner"]["reference"]
                    .as_str()
                    .map(str::to_string)
            }))
            .collect();
        if !actors.is_empty() {
            let mut by_actor = base.clone();
            by_actor.push(("actor", actors.join(",")));
            schedules.extend(search(state, req, "Schedule", &by_actor, 1000).await?);
        }
    }
    // Routing only ranks: when no Schedule has the routed specialties, all are candidates.
    if wanted.is_empty() || (schedules.is_empty() && !explicit) {
        schedules = search(state, req, "Schedule", &base, 1000).await?;
    }
    let mut seen_schedule = HashSet::new();
    schedules.retain(|s| seen_schedule.insert(s.id.clone()));

    // Who each Schedule is for, and their specialties.
    let practitioner_actors: Vec<String> = schedules
        .iter()
        .flat_map(|s| actors(s, "Practitioner/"))
        .collect();
    let role_actors: Vec<String> = schedules
        .iter()
        .flat_map(|s| actors(s, "PractitionerRole/"))
        .collect();
    let mut roles = Vec::new();
    if !practitioner_actors.is_empty() {
        roles.extend(
            search(
                state,
                req,
                "PractitionerRole",
                &[("practitioner", dedup(&practitioner_actors).join(","))],
                5000,
            )
            .await?,
        );
    }
    if !role_actors.is_empty() {
        let ids: Vec<String> = role_actors
            .iter()
            .map(|r| r["PractitionerRole/".len()..].to_string())
            .collect();
        roles.extend(
            search(
                state,
                req,
                "PractitionerRole",
                &[("_id", dedup(&ids).join(","))],
                5000,
            )
            .await?,
        );
    }
    let mut role_practitioner: HashMap<String, String> = HashMap::new();
    let mut specialties_of: HashMap<String, Vec<String>> = HashMap::new();
    for role in &roles {
        let body = &role.body;
        let codes: Vec<String> = codes(&body["specialty"]).collect();
        if let Some(p) = body["practitioner"]["reference"].as_str() {
            role_practitioner.insert(role.reference.clone(), p.to_string());
            specialties_of
                .entry(p.to_string())
                .or_default()
                .extend(codes.clone());
        }
        specialties_of
            .entry(role.reference.clone())
            .or_default()
            .extend(codes);
    }
    let mut info: HashMap<String, ScheduleInfo> = HashMap::new();
    for s in schedules {
        let body = s.body.clone();
        let mut specialties: Vec<String> = codes(&body["specialty"]).collect();
        let mut practitioner = None;
        for actor in actors(&s, "") {
            specialties.extend(specialties_of.get(&actor).cloned().unwrap_or_default());
            if actor.starts_with("Practitioner/") {
                practitioner.get_or_insert(actor.clone());
            } else if let Some(p) = role_practitioner.get(&actor) {
                practitioner.get_or_insert(p.clone());
            }
        }
        info.insert(
            s.reference.clone(),
            ScheduleInfo {
                body,
                practitioner,
                specialties: dedup(&specialties),
            },
        );
    }

    // The patient's past visits.
    let mut history = History::default();
    if let Some(patient) = &i.patient {
        let visits = search(
            state,
            req,
            "Appointment",
            &[
                ("patient", patient.clone()),
                ("date", format!("lt{}", format_instant(now))),
                ("status", "fulfilled,arrived,checked-in,booked".into()),
                ("_sort", "-date".into()),
            ],
            200,
        )
        .await?;
        for v in visits {
            let body = &v.body;
            let Some(start) = body["start"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            else {
                continue;
            };
            let practitioners: Vec<String> = body["participant"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["actor"]["reference"].as_str())
                .filter(|r| r.starts_with("Practitioner/"))
                .map(str::to_string)
                .collect();
            history.visit(start.with_timezone(&Utc), &practitioners);
        }
    }

    // The free Slots: the earliest of all, and those of practitioners seen before.
    let mut slots: Vec<Live> = Vec::new();
    let all: Vec<String> = info.keys().cloned().collect();
    let seen = history.practitioners();
    let familiar: Vec<String> = info
        .iter()
        .filter(|(_, s)| s.practitioner.as_ref().is_some_and(|p| seen.contains(p)))
        .map(|(k, _)| k.clone())
        .collect();
    for (group, limit) in [(&all, MAX_CANDIDATES), (&familiar, MAX_CANDIDATES / 4)] {
        for chunk in group.chunks(200) {
            slots.extend(
                search(
                    state,
                    req,
                    "Slot",
                    &[
                        ("schedule", chunk.join(",")),
                        ("status", "free".into()),
                        ("start", format!("ge{}", format_instant(i.from))),
                        ("start", format!("lt{}", format_instant(i.to))),
                        ("_sort", "start".into()),
                    ],
                    limit,
                )
                .await?,
            );
        }
    }
    let mut seen_slot = HashSet::new();
    let mut bodies: HashMap<String, (Value, String)> = HashMap::new();
    let mut candidates = Vec::new();
    for v in slots {
        if !seen_slot.insert(v.id.clone()) {
            continue;
        }
        let body = v.body;
        let Some(slot) = SlotState::of(&v.id, v.version, &body) else {
            continue;
        };
        let schedule = body["schedule"]["reference"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let Some(s) = info.get(&schedule) else {
            continue;
        };
        candidates.push(Candidate {
            slot: v.id.clone(),
            start: slot.start,
            end: slot.end,
            practitioner: s.practitioner.clone(),
            specialties: s.specialties.clone(),
        });
        bodies.insert(v.id, (body, schedule));
    }

    let request = find::Request {
        from: i.from,
        urgency: i.urgency,
        routing,
        history,
    };
    let ranked = find::rank(&candidates, &request, i.count);
    let entries: Vec<Value> = ranked
        .iter()
        .filter_map(|s| {
            let (slot, schedule) = bodies.get(&s.candidate.slot)?;
            Some(json!({
                "resource": proposal(s, slot, info.get(schedule)?, &i),
                "search": {"mode": "match", "score": s.score / 100.0},
            }))
        })
        .collect();
    let query: Vec<String> = inputs
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencoding(v)))
        .collect();
    // The proposals are not stored (no ids for the audit trail to read from the body): the
    // AuditEvent names the Slots offered and the patient whose visits ranked them.
    let disclosed = super::audit::AuditNote::Disclosed {
        entities: ranked
            .iter()
            .map(|s| format!("Slot/{}", s.candidate.slot))
            .collect(),
        patients: i
            .patient
            .iter()
            .filter_map(|p| p.strip_prefix("Patient/").map(str::to_string))
            .collect(),
    };
    let mut reply = Reply::ok(json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": entries.len(),
        "link": [{"relation": "self",
                  "url": format!("{}/Appointment/$find?{}", state.base_url, query.join("&"))}],
        "entry": entries,
    }));
    reply.audit = Some(disclosed);
    Ok(reply)
}

fn actors(schedule: &Live, prefix: &str) -> Vec<String> {
    schedule.body["actor"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["reference"].as_str())
        .filter(|r| r.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn dedup(values: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    values
        .iter()
        .filter(|v| seen.insert(v.as_str()))
        .cloned()
        .collect()
}

fn urlencoding(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// A proposed Appointment over one Slot, with its score and reasons.
fn proposal(s: &find::Scored, slot: &Value, schedule: &ScheduleInfo, i: &Inputs) -> Value {
    let mut extension = vec![json!({"url": "score", "valueDecimal": s.score})];
    extension.extend(
        s.reasons
            .iter()
            .map(|r| json!({"url": "reason", "valueString": r})),
    );
    let mut participant = Vec::new();
    for actor in schedule.body["actor"].as_array().into_iter().flatten() {
        participant.push(json!({"actor": actor, "required": "required", "status": "needs-action"}));
    }
    if let Some(p) = &schedule.practitioner {
        if !participant
            .iter()
            .any(|a| a["actor"]["reference"] == p.as_str())
        {
            participant.push(json!({"actor": {"reference": p}, "required": "required", "status": "needs-action"}));
        }
    }
    if let Some(patient) = &i.patient {
        participant.push(json!({"actor": {"reference": patient}, "required": "required", "status": "needs-action"}));
    }
    let mut appointment = json!({
        "resourceType": "Appointment",
        "extension": [{"url": FIND_SCORE, "extension": extension}],
        "status": "proposed",
        "start": slot["start"],
        "end": slot["end"],
        "minutesDuration": (s.candidate.end - s.candidate.start).num_minutes(),
        "slot": [{"reference": format!("Slot/{}", s.candidate.slot)}],
        "participant": participant,
    });
    for (key, from) in [
        ("serviceType", &slot["serviceType"]),
        ("serviceType", &schedule.body["serviceType"]),
        ("specialty", &schedule.body["specialty"]),
    ] {
        if from.is_array() && appointment.get(key).is_none() {
            appointment[key] = from.clone();
        }
    }
    if !i.symptoms.is_empty() {
        appointment["reasonCode"] = i.symptoms.iter().map(|s| json!({"text": s})).collect();
    }
    appointment
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2030-01-07T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn inputs_are_read_and_checked() {
        let i = read_inputs(
            &inputs(&[
                ("urgency", "urgent"),
                ("provider", "dr-1"),
                ("symptoms", "cough, rash"),
            ]),
            now(),
            62,
        )
        .unwrap();
        assert_eq!(i.to - i.from, chrono::Duration::days(3));
        assert_eq!(i.practitioners, vec!["Practitioner/dr-1"]);
        assert_eq!(i.symptoms, vec!["cough", "rash"]);
        let i = read_inputs(
            &inputs(&[("start", "2030-01-08"), ("end", "2030-01-08")]),
            now(),
            62,
        )
        .unwrap();
        assert_eq!(i.to - i.from, chrono::Duration::days(1));
        for (bad, says) in [
            (
                vec![("start", "2030-01-09"), ("end", "2030-01-08")],
                "end must be after start",
            ),
            (
                vec![("start", "2030-01-09"), ("end", "2030-06-08")],
                "at most 62 days",
            ),
            (vec![("urgency", "whenever")], "'whenever'"),
            (vec![("start", "tomorrow")], "'tomorrow'"),
            (vec![("_count", "0")], "_count"),
            (vec![("colour", "blue")], "'colour'"),
            (vec![("patient", "Patient/a b")], "not a Patient reference"),
            (
                vec![("urgency", "stat"), ("urgency", "asap")],
                "at most one",
            ),
        ] {
            let e = read_inputs(&inputs(&bad), now(), 62).err().unwrap();
            assert!(e.to_string().contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn parameters_bodies_are_read() {
        let p = json!({"resourceType": "Parameters", "parameter": [
            {"name": "start", "valueDateTime": "2030-01-08T09:00:00Z"},
            {"name": "specialty", "valueCoding": {"system": SNOMED, "code": "394579002"}},
            {"name": "patient", "valueReference": {"reference": "Patient/p1"}},
            {"name": "_count", "valueInteger": 3}]});
        assert_eq!(
            parameter_values(&p).unwrap(),
            inputs(&[
                ("start", "2030-01-08T09:00:00Z"),
                ("specialty", "http://snomed.info/sct|394579002"),
                ("patient", "Patient/p1"),
                ("_count", "3")
            ])
        );
        assert!(parameter_values(&json!({"resourceType": "Bundle"})).is_err());
        assert!(parameter_values(
            &json!({"resourceType": "Parameters", "parameter": [{"name": "x"}]})
        )
        .is_err());
    }
}
