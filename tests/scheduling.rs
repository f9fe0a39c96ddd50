//! Booking Slots with Appointments over HTTP, on both backends: booking marks the Slot busy,
//! a second booking of it is `409`, however many arrive at once exactly one succeeds,
//! cancelling, deleting and rescheduling free and move the booking atomically, and bad
//! bookings are refused with nothing written.
//! <https://hl7.org/fhir/R4/appointment.html>, <https://hl7.org/fhir/R4/slot.html>

mod common;

use chrono::{Duration, Utc};
use common::{expect_outcome, Server};
use futures::StreamExt;
use serde_json::{json, Value};

on_both_backends!(
    booking_marks_the_slot_busy_and_cancelling_frees_it,
    concurrent_bookings_of_one_slot_succeed_once,
    rescheduling_moves_the_booking_atomically,
    bad_bookings_are_refused_and_write_nothing,
    slot_generation_follows_working_hours_and_is_idempotent,
    find_ranks_by_symptoms_urgency_and_continuity_with_reasons,
    book_books_a_proposal_once,
    bad_find_and_book_requests_are_refused,
);

fn instant(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A Schedule and `n` free 30-minute Slots starting tomorrow (or `offset_hours` from now).
async fn slots(s: &Server, n: usize, offset_hours: i64) -> Vec<String> {
    let schedule = s
        .create(&json!({"resourceType": "Schedule", "active": true,
            "actor": [{"reference": "Practitioner/dr-1"}]}))
        .await;
    let first = Utc::now() + Duration::hours(offset_hours);
    let first = first - Duration::seconds(first.timestamp() % 60);
    let mut ids = Vec::new();
    for i in 0..n as i64 {
        let start = first + Duration::minutes(30 * i);
        let slot = s
            .create(&json!({"resourceType": "Slot", "status": "free",
                "schedule": {"reference": format!("Schedule/{}", schedule["id"].as_str().unwrap())},
                "start": instant(start), "end": instant(start + Duration::minutes(30))}))
            .await;
        ids.push(slot["id"].as_str().unwrap().to_string());
    }
    ids
}

fn appointment(slots: &[&str], patient: &str, status: &str) -> Value {
    json!({"resourceType": "Appointment", "status": status,
        "slot": slots.iter().map(|s| json!({"reference": format!("Slot/{s}")})).collect::<Vec<_>>(),
        "participant": [
            {"actor": {"reference": format!("Patient/{patient}")}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/dr-1"}, "status": "accepted"}]})
}

async fn slot_status(s: &Server, id: &str) -> String {
    let slot: Value = s.get(&format!("Slot/{id}")).await.json().await.unwrap();
    slot["status"].as_str().unwrap().to_string()
}

async fn appointments_on(s: &Server, slot: &str) -> Vec<Value> {
    let bundle: Value = s
        .get(&format!(
            "Appointment?slot=Slot/{slot}&status=pending,booked,arrived,fulfilled,checked-in"
        ))
        .await
        .json()
        .await
        .unwrap();
    bundle["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["resource"].clone())
        .collect()
}

async fn booking_marks_the_slot_busy_and_cancelling_frees_it(s: &Server) {
    let ids = slots(s, 1, 24).await;
    let slot = ids[0].as_str();
    let r = s
        .post_json("Appointment", &appointment(&[slot], "p1", "booked"))
        .await;
    assert_eq!(r.status(), 201);
    let booked: Value = r.json().await.unwrap();
    // The times come from the Slot when the Appointment leaves them out.
    let stored_slot: Value = s.get(&format!("Slot/{slot}")).await.json().await.unwrap();
    assert_eq!(booked["start"], stored_slot["start"]);
    assert_eq!(booked["end"], stored_slot["end"]);
    assert_eq!(slot_status(s, slot).await, "busy");

    // A second booking of the busy Slot is a conflict, and writes nothing.
    let second = s
        .post_json("Appointment", &appointment(&[slot], "p2", "booked"))
        .await;
    let outcome = expect_outcome(second, 409).await;
    assert!(outcome.to_string().contains("not free"), "{outcome}");
    assert_eq!(appointments_on(s, slot).await.len(), 1);

    // Cancelling frees the Slot; then it can be booked again.
    let id = booked["id"].as_str().unwrap();
    let mut cancelled = booked.clone();
    cancelled["status"] = json!("cancelled");
    assert_eq!(
        s.put_json(&format!("Appointment/{id}"), &cancelled)
            .await
            .status(),
        200
    );
    assert_eq!(slot_status(s, slot).await, "free");
    let again = s
        .post_json("Appointment", &appointment(&[slot], "p2", "pending"))
        .await;
    assert_eq!(again.status(), 201);
    assert_eq!(slot_status(s, slot).await, "busy");

    // Deleting the Appointment frees its Slot too.
    let again: Value = again.json().await.unwrap();
    let deleted = s
        .delete(&format!("Appointment/{}", again["id"].as_str().unwrap()))
        .await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(slot_status(s, slot).await, "free");
}

async fn concurrent_bookings_of_one_slot_succeed_once(s: &Server) {
    let ids = slots(s, 1, 48).await;
    let slot = ids[0].clone();
    const ATTEMPTS: usize = 24;
    let statuses: Vec<u16> = futures::stream::iter(0..ATTEMPTS)
        .map(|i| {
            let (s, slot) = (&s, &slot);
            async move {
                s.post_json(
                    "Appointment",
                    &appointment(&[slot.as_str()], &format!("p{i}"), "booked"),
                )
                .await
                .status()
                .as_u16()
            }
        })
        .buffer_unordered(ATTEMPTS)
        .collect()
        .await;
    assert_eq!(
        statuses.iter().filter(|st| **st == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|st| *st == 201 || *st == 409),
        "{statuses:?}"
    );
    assert_eq!(appointments_on(s, &slot).await.len(), 1);
    assert_eq!(slot_status(s, &slot).await, "busy");
}

async fn rescheduling_moves_the_booking_atomically(s: &Server) {
    let ids = slots(s, 3, 72).await;
    let (a, b, c) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str());
    let booked: Value = s
        .post_json("Appointment", &appointment(&[a], "p1", "booked"))
        .await
        .json()
        .await
        .unwrap();
    let id = booked["id"].as_str().unwrap();
    // Someone else holds c.
    assert_eq!(
        s.post_json("Appointment", &appointment(&[c], "p2", "booked"))
            .await
            .status(),
        201
    );

    // Moving to b frees a and books b in one write.
    let mut moved = appointment(&[b], "p1", "booked");
    moved["id"] = json!(id);
    assert_eq!(
        s.put_json(&format!("Appointment/{id}"), &moved)
            .await
            .status(),
        200
    );
    assert_eq!(slot_status(s, a).await, "free");
    assert_eq!(slot_status(s, b).await, "busy");

    // Moving to the taken c fails and changes nothing.
    let mut clash = appointment(&[c], "p1", "booked");
    clash["id"] = json!(id);
    expect_outcome(s.put_json(&format!("Appointment/{id}"), &clash).await, 409).await;
    assert_eq!(slot_status(s, b).await, "busy");
    assert_eq!(slot_status(s, a).await, "free");
    let current: Value = s
        .get(&format!("Appointment/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(current["slot"][0]["reference"], format!("Slot/{b}"));
}

async fn bad_bookings_are_refused_and_write_nothing(s: &Server) {
    let future = slots(s, 1, 96).await;
    let past = slots(s, 1, -5).await;
    let refused = [
        (
            appointment(&["no-such-slot"], "p1", "booked"),
            422,
            "does not exist",
        ),
        (
            appointment(&[past[0].as_str()], "p1", "booked"),
            422,
            "is over",
        ),
        (
            {
                let mut a = appointment(&[future[0].as_str()], "p1", "booked");
                a["start"] = json!("2001-01-01T00:00:00Z");
                a
            },
            422,
            "Appointment.start",
        ),
        (
            json!({"resourceType": "Appointment", "status": "booked",
                "slot": [{"reference": "http://elsewhere.example/fhir/Slot/1"}],
                "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}]}),
            400,
            "Slot/[id]",
        ),
    ];
    for (body, status, words) in refused {
        let outcome = expect_outcome(s.post_json("Appointment", &body).await, status).await;
        assert!(outcome.to_string().contains(words), "{words}: {outcome}");
    }
    // Inside a Bundle an Appointment could not change its Slots: refused, not half done.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": appointment(&[future[0].as_str()], "p1", "booked"),
         "request": {"method": "POST", "url": "Appointment"}}]});
    let outcome = expect_outcome(s.post_json("", &bundle).await, 422).await;
    assert!(
        outcome.to_string().contains("not inside a Bundle"),
        "{outcome}"
    );
    assert_eq!(s.version_count("Appointment").await, 0, "nothing written");
    assert_eq!(slot_status(s, &future[0]).await, "free");
    // A proposed Appointment holds no slot: the Slot stays free.
    assert_eq!(
        s.post_json(
            "Appointment",
            &appointment(&[future[0].as_str()], "p1", "proposed")
        )
        .await
        .status(),
        201
    );
    assert_eq!(slot_status(s, &future[0]).await, "free");
}

/// The next Monday at least a week away.
fn a_future_monday() -> chrono::NaiveDate {
    use chrono::Datelike;
    let mut d = (Utc::now() + Duration::days(7)).date_naive();
    while d.weekday() != chrono::Weekday::Mon {
        d = d.succ_opt().unwrap();
    }
    d
}

async fn generate(s: &Server, schedule: &str, start: &str, end: &str) -> reqwest::Response {
    s.client
        .post(s.url(&format!(
            "Schedule/{schedule}/$generate-slots?start={start}&end={end}"
        )))
        .send()
        .await
        .unwrap()
}

fn created_and_existing(p: &Value) -> (i64, i64) {
    let get = |n: &str| {
        p["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .unwrap()["valueInteger"]
            .as_i64()
            .unwrap()
    };
    (get("created"), get("existing"))
}

async fn slot_generation_follows_working_hours_and_is_idempotent(s: &Server) {
    let monday = a_future_monday();
    let wednesday = monday + Duration::days(2);
    s.put_json(
        "PractitionerRole/gp-role",
        &json!({"resourceType": "PractitionerRole", "id": "gp-role", "active": true,
            "practitioner": {"reference": "Practitioner/dr-g"},
            "availableTime": [
                {"daysOfWeek": ["mon", "tue", "wed", "thu", "fri"],
                 "availableStartTime": "09:00:00", "availableEndTime": "12:00:00"},
                {"daysOfWeek": ["mon", "tue", "wed", "thu", "fri"],
                 "availableStartTime": "13:00:00", "availableEndTime": "15:00:00",
                 "extension": [{"url": "http://hearth.health/fhir/StructureDefinition/slot-length",
                    "valueDuration": {"value": 60, "unit": "min", "system": "http://unitsofmeasure.org", "code": "min"}}]}],
            "notAvailable": [{"description": "Training day",
                "during": {"start": wednesday.to_string(), "end": wednesday.to_string()}}]}),
    )
    .await;
    s.put_json(
        "Schedule/gp",
        &json!({"resourceType": "Schedule", "id": "gp", "active": true,
            "actor": [{"reference": "Practitioner/dr-g"}]}),
    )
    .await;
    let (start, end) = (monday.to_string(), (monday + Duration::days(7)).to_string());

    // Mon-Fri, 6 half-hours and 2 hours a day, but not on the Wednesday of leave.
    let first: Value = generate(s, "gp", &start, &end).await.json().await.unwrap();
    assert_eq!(created_and_existing(&first), (32, 0));
    let bundle: Value = s
        .get("Slot?schedule=Schedule/gp&_count=100&_sort=start")
        .await
        .json()
        .await
        .unwrap();
    let slots = bundle["entry"].as_array().unwrap();
    assert_eq!(slots.len(), 32);
    assert_eq!(slots[0]["resource"]["start"], format!("{monday}T09:00:00Z"));
    assert!(slots.iter().all(|e| !e["resource"]["start"]
        .as_str()
        .unwrap()
        .starts_with(&wednesday.to_string())));

    // Booking one, then generating again: nothing new, the booking untouched.
    let slot = slots[3]["resource"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        s.post_json(
            "Appointment",
            &appointment(&[slot.as_str()], "p1", "booked")
        )
        .await
        .status(),
        201
    );
    let again: Value = generate(s, "gp", &start, &end).await.json().await.unwrap();
    assert_eq!(created_and_existing(&again), (0, 32));
    assert_eq!(slot_status(s, &slot).await, "busy");
    let count: Value = s
        .get("Slot?schedule=Schedule/gp&_summary=count")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(count["total"], 32, "no duplicates");

    // Bad requests, and availability that overlaps.
    expect_outcome(generate(s, "gp", &end, &start).await, 400).await;
    expect_outcome(generate(s, "gp", &start, "2099-12-31").await, 400).await;
    expect_outcome(generate(s, "gp", "monday", &end).await, 400).await;
    expect_outcome(generate(s, "nope", &start, &end).await, 404).await;
    s.put_json(
        "PractitionerRole/gp-extra",
        &json!({"resourceType": "PractitionerRole", "id": "gp-extra",
            "practitioner": {"reference": "Practitioner/dr-g"},
            "availableTime": [{"daysOfWeek": ["tue"],
                "availableStartTime": "11:00:00", "availableEndTime": "14:00:00"}]}),
    )
    .await;
    let outcome = expect_outcome(generate(s, "gp", &start, &end).await, 422).await;
    assert!(outcome.to_string().contains("overlaps"), "{outcome}");
}

const SNOMED: &str = "http://snomed.info/sct";

/// A practitioner with a role of `specialty`, a Schedule, and a free 30-minute Slot at each
/// of `hours_ahead` (from the start of the current hour). Returns the Slot ids.
async fn practice(s: &Server, who: &str, specialty: &str, hours_ahead: &[i64]) -> Vec<String> {
    assert_eq!(
        s.put_json(
            &format!("Practitioner/{who}"),
            &json!({"resourceType": "Practitioner", "id": who})
        )
        .await
        .status(),
        201
    );
    s.create(&json!({"resourceType": "PractitionerRole",
        "practitioner": {"reference": format!("Practitioner/{who}")},
        "specialty": [{"coding": [{"system": SNOMED, "code": specialty}]}]}))
        .await;
    let schedule = s
        .create(&json!({"resourceType": "Schedule", "active": true,
            "actor": [{"reference": format!("Practitioner/{who}")}]}))
        .await;
    let hour = Utc::now() - Duration::seconds(Utc::now().timestamp() % 3600);
    let mut ids = Vec::new();
    for h in hours_ahead {
        let start = hour + Duration::hours(*h);
        let slot = s
            .create(&json!({"resourceType": "Slot", "status": "free",
                "schedule": {"reference": format!("Schedule/{}", schedule["id"].as_str().unwrap())},
                "start": instant(start), "end": instant(start + Duration::minutes(30))}))
            .await;
        ids.push(slot["id"].as_str().unwrap().to_string());
    }
    ids
}

/// `$find` by GET with `query`: the proposals' Slot ids, best first, and the Bundle.
async fn find(s: &Server, query: &str) -> (Vec<String>, Value) {
    let r = s.get(&format!("Appointment/$find?{query}")).await;
    assert_eq!(r.status(), 200, "$find?{query}");
    let bundle: Value = r.json().await.unwrap();
    assert_eq!(bundle["type"], "searchset");
    let slots = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let a = &e["resource"];
            assert_eq!(a["status"], "proposed");
            a["slot"][0]["reference"].as_str().unwrap()["Slot/".len()..].to_string()
        })
        .collect();
    (slots, bundle)
}

fn reasons(proposal: &Value) -> Vec<String> {
    let ext = proposal["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == "http://hearth.health/fhir/StructureDefinition/find-score")
        .expect("the score extension");
    ext["extension"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["url"] == "reason")
        .map(|e| e["valueString"].as_str().unwrap().to_string())
        .collect()
}

async fn find_ranks_by_symptoms_urgency_and_continuity_with_reasons(s: &Server) {
    let cardio = practice(s, "cardio", "394579002", &[50, 51]).await;
    let gp = practice(s, "gp", "394814009", &[26, 74]).await;
    let derm = practice(s, "derm", "394582007", &[2, 27]).await;

    // Chest pain goes to cardiology first, then general practice; the reasons say why and
    // the scores fall.
    let (order, bundle) = find(s, "symptoms=crushing%20chest%20pain&_count=6").await;
    assert_eq!(&order[..2], &cardio[..], "{bundle}");
    assert_eq!(&order[2..4], &gp[..], "{bundle}");
    let entries = bundle["entry"].as_array().unwrap();
    let top = &entries[0]["resource"];
    assert!(
        reasons(top)[0].contains("Cardiology sees 'crushing chest pain'"),
        "{top}"
    );
    assert_eq!(
        top["participant"][0]["actor"]["reference"],
        "Practitioner/cardio"
    );
    let scores: Vec<f64> = entries
        .iter()
        .map(|e| e["search"]["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]) && scores[0] <= 1.0,
        "{scores:?}"
    );
    // A symptom the table does not know goes to general practice; a SNOMED CT code works
    // like the word.
    let (order, bundle) = find(s, "symptoms=strange%20feeling").await;
    assert_eq!(&order[..2], &gp[..], "{bundle}");
    assert!(reasons(&bundle["entry"][0]["resource"])[0].contains("general practice"));
    let (order, _) = find(s, &format!("symptoms={SNOMED}|271807003")).await;
    assert_eq!(&order[..2], &derm[..]);

    // Stat: only the next 12 hours, soonest first.
    let (order, _) = find(s, "urgency=stat").await;
    assert_eq!(order, vec![derm[0].clone()]);
    // Urgent prefers sooner Slots, but the fitting specialty still weighs more than two
    // days' wait.
    let (order, _) = find(s, "urgency=urgent&symptoms=palpitations").await;
    assert_eq!(order[0], cardio[0]);
    let (order, _) = find(s, "urgency=urgent").await;
    assert_eq!(
        order[..3],
        [derm[0].clone(), gp[0].clone(), derm[1].clone()]
    );

    // Continuity: a patient who saw the GP twice, on past mornings, gets the GP first.
    for days in [30, 60] {
        let start = Utc::now() - Duration::days(days);
        s.create(
            &json!({"resourceType": "Appointment", "status": "fulfilled",
            "start": instant(start), "end": instant(start + Duration::minutes(30)),
            "participant": [
                {"actor": {"reference": "Patient/p1"}, "status": "accepted"},
                {"actor": {"reference": "Practitioner/gp"}, "status": "accepted"}]}),
        )
        .await;
    }
    let (order, bundle) = find(s, "patient=Patient/p1").await;
    assert!(gp.contains(&order[0]) && gp.contains(&order[1]), "{bundle}");
    let top = &bundle["entry"][0]["resource"];
    assert!(
        reasons(top)
            .iter()
            .any(|r| r.contains("saw Practitioner/gp before (2 visits)")),
        "{top}"
    );
    assert!(top["participant"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["actor"]["reference"] == "Patient/p1"));

    // The client overrides the routing: chest pain, but only dermatology or only one
    // practitioner.
    let (order, _) = find(
        s,
        &format!("symptoms=chest%20pain&specialty={SNOMED}|394582007"),
    )
    .await;
    assert_eq!(order, derm);
    let (order, _) = find(s, "symptoms=chest%20pain&practitioner=Practitioner/gp").await;
    assert_eq!(order, gp);
    // The window: start and end bound the Slots' starts.
    let from = instant(Utc::now() + Duration::hours(40));
    let to = instant(Utc::now() + Duration::hours(60));
    let (order, _) = find(s, &format!("start={from}&end={to}")).await;
    assert_eq!(order, cardio);

    // POST with a Parameters body answers the same.
    let r = s
        .post_json(
            "Appointment/$find",
            &json!({"resourceType": "Parameters", "parameter": [
            {"name": "symptoms", "valueString": "crushing chest pain"},
            {"name": "_count", "valueInteger": 2}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let posted: Value = r.json().await.unwrap();
    let slots: Vec<&str> = posted["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["slot"][0]["reference"].as_str().unwrap())
        .collect();
    assert_eq!(
        slots,
        cardio
            .iter()
            .map(|c| format!("Slot/{c}"))
            .collect::<Vec<_>>()
    );
}

async fn book_books_a_proposal_once(s: &Server) {
    let ids = practice(s, "dr-b", "394814009", &[30]).await;
    let (_, bundle) = find(s, "patient=Patient/p9").await;
    let proposal = bundle["entry"][0]["resource"].clone();
    assert_eq!(proposal["slot"][0]["reference"], format!("Slot/{}", ids[0]));
    // The proposals are not stored, yet the AuditEvent names the patient and the Slots.
    let mut audited = Value::Null;
    for _ in 0..100 {
        audited = s
            .get("AuditEvent?patient=Patient/p9&subtype=operation")
            .await
            .json()
            .await
            .unwrap();
        if audited["entry"].as_array().is_some_and(|e| !e.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let whats: Vec<&str> = audited["entry"][0]["resource"]["entity"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["what"]["reference"].as_str())
        .collect();
    assert!(
        whats.contains(&format!("Slot/{}", ids[0]).as_str()),
        "{audited}"
    );
    assert!(whats.contains(&"Patient/p9"), "{audited}");
    let request = json!({"resourceType": "Parameters",
        "parameter": [{"name": "appt-resource", "resource": proposal}]});
    let r = s.post_json("Appointment/$book", &request).await;
    assert_eq!(r.status(), 200);
    let booked: Value = r.json().await.unwrap();
    let appointment = &booked["entry"][0]["resource"];
    assert_eq!(appointment["status"], "booked");
    assert!(
        appointment["extension"].is_null(),
        "the score is not stored: {appointment}"
    );
    let id = appointment["id"].as_str().unwrap();
    let stored: Value = s
        .get(&format!("Appointment/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored["status"], "booked");
    assert_eq!(slot_status(s, &ids[0]).await, "busy");
    // The same proposal again (here as a Bundle): the Slot is taken.
    let again = json!({"resourceType": "Bundle", "type": "collection",
        "entry": [{"resource": bundle["entry"][0]["resource"]}]});
    expect_outcome(s.post_json("Appointment/$book", &again).await, 409).await;
    assert_eq!(appointments_on(s, &ids[0]).await.len(), 1);
    // And $find no longer offers it.
    let (order, _) = find(s, "patient=Patient/p9").await;
    assert!(order.is_empty(), "{order:?}");
}

async fn bad_find_and_book_requests_are_refused(s: &Server) {
    let ids = practice(s, "dr-x", "394814009", &[30]).await;
    let from = Utc::now() + Duration::days(2);
    for (query, says) in [
        (
            format!(
                "start={}&end={}",
                instant(from),
                instant(from - Duration::hours(1))
            ),
            "end must be after start",
        ),
        (
            format!(
                "start={}&end={}",
                instant(from),
                instant(from + Duration::days(63))
            ),
            "at most 62 days",
        ),
        ("urgency=soon".to_string(), "'soon'"),
        ("symptom=cough".to_string(), "'symptom'"),
        ("start=next-week".to_string(), "'next-week'"),
        ("_count=1000".to_string(), "_count"),
    ] {
        let outcome = expect_outcome(s.get(&format!("Appointment/$find?{query}")).await, 400).await;
        assert!(outcome.to_string().contains(says), "{query}: {outcome}");
    }
    expect_outcome(s.get("Patient/$find").await, 404).await;
    expect_outcome(
        s.post_json("Appointment/$find", &json!({"resourceType": "Patient"}))
            .await,
        400,
    )
    .await;

    // $book: not an Appointment, no Slot, a cancelled one, a Slot that does not exist.
    let no_slot = json!({"resourceType": "Appointment", "status": "proposed",
        "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}]});
    for (body, status, says) in [
        (
            json!({"resourceType": "Patient"}),
            400,
            "needs an Appointment",
        ),
        (no_slot, 422, "references the Slot"),
        (
            appointment(&[&ids[0]], "p1", "cancelled"),
            422,
            "not one that is cancelled",
        ),
        (
            appointment(&["missing"], "p1", "proposed"),
            422,
            "Slot/missing does not exist",
        ),
    ] {
        let outcome = expect_outcome(s.post_json("Appointment/$book", &body).await, status).await;
        assert!(outcome.to_string().contains(says), "{body}: {outcome}");
    }
    assert_eq!(slot_status(s, &ids[0]).await, "free");
    let all: Value = s.get("Appointment").await.json().await.unwrap();
    assert_eq!(all["total"], 0, "nothing was written: {all}");

    // The CapabilityStatement names the operations and their definitions.
    let cs: Value = s.get("metadata").await.json().await.unwrap();
    let appointment = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Appointment")
        .unwrap();
    let names: Vec<&str> = appointment["operation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["find", "book"]);
}
