//! The audit trail over HTTP, on both backends: every interaction kind records the right
//! AuditEvent with the right patients, refusals are recorded with who asked, the trail is
//! append-only through the API, `hearth audit verify` finds a tampered event and `hearth audit
//! purge` trims the chain, and a burst of reads larger than the writer's buffer loses nothing.
//! <https://hl7.org/fhir/R4/auditevent.html>, <https://profiles.ihe.net/ITI/BALP/>

mod common;

use std::time::Duration;

use base64::Engine;
use common::{expect_outcome, Server};
use futures::StreamExt;
use hearth::auth::accounts::{Client, ClientKind};
use hearth::auth::policy::Role;
use serde_json::{json, Value};

on_both_backends!(
    every_interaction_is_audited,
    the_trail_is_append_only_and_tamper_evident,
    a_burst_larger_than_the_buffer_loses_nothing,
    the_audit_table_answers_balp_searches_and_refuses_the_rest,
    an_upgrade_moves_stored_audit_events_into_the_audit_table,
    an_upgrade_moves_single_subtypes_and_request_ids_into_columns,
    events_stored_as_text_stay_readable_after_packing,
);

on_both_backends!(start = start_secured; refusals_and_agents_are_audited);

/// The AuditEvents matching `query`, once there are at least `n` of them (reads are
/// recorded through a buffer, a moment after they are answered).
async fn events(s: &Server, token: Option<&str>, query: &str, n: usize) -> Vec<Value> {
    let mut found = Vec::new();
    for _ in 0..100 {
        let mut r = s
            .client
            .get(s.url(&format!("AuditEvent?{query}&_count=500")));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 200, "AuditEvent?{query}");
        let bundle: Value = r.json().await.unwrap();
        found = bundle["entry"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e["resource"].clone())
            .collect();
        if found.len() >= n {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "AuditEvent?{query}: {} events, expected at least {n}",
        found.len()
    );
}

fn entity_refs(event: &Value) -> Vec<String> {
    event["entity"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["what"]["reference"].as_str().map(str::to_string))
        .collect()
}

fn query_of(event: &Value) -> Option<String> {
    event["entity"].as_array()?.iter().find_map(|e| {
        let q = e["query"].as_str()?;
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(q).ok()?).ok()
    })
}

async fn id_of(r: reqwest::Response) -> String {
    assert!(r.status().is_success(), "{}", r.status());
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

async fn every_interaction_is_audited(s: &Server) {
    let mut patients = Vec::new();
    for family in ["Ames", "Banks", "Cole"] {
        let r = s
            .post_json(
                "Patient",
                &json!({"resourceType": "Patient", "name": [{"family": family, "given": ["Audit"]}]}),
            )
            .await;
        patients.push(id_of(r).await);
    }
    let (p1, p2, p3) = (&patients[0], &patients[1], &patients[2]);

    // Each kind of interaction once.
    assert_eq!(s.get(&format!("Patient/{p1}")).await.status(), 200);
    assert_eq!(
        s.get(&format!("Patient/{p1}/_history/1")).await.status(),
        200
    );
    let updated = json!({"resourceType": "Patient", "id": p1, "active": true,
        "name": [{"family": "Ames", "given": ["Audit"]}]});
    assert_eq!(
        s.put_json(&format!("Patient/{p1}"), &updated)
            .await
            .status(),
        200
    );
    let patch = s
        .client
        .patch(s.url(&format!("Patient/{p2}")))
        .header("content-type", "application/json-patch+json")
        .body(json!([{"op": "add", "path": "/active", "value": false}]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 200);
    let search: Value = s.get("Patient?given=Audit").await.json().await.unwrap();
    assert_eq!(search["entry"].as_array().unwrap().len(), 3);
    // A POST search keeps its parameters out of the URL; its event has them all the same.
    let posted = s
        .client
        .post(s.url("Patient/_search?_count=10"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("given=Audit&family=Banks")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    assert_eq!(s.get(&format!("Patient/{p1}/_history")).await.status(), 200);
    assert_eq!(s.delete(&format!("Patient/{p3}")).await.status(), 204);
    let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
            "subject": {"reference": format!("Patient/{p2}")}},
         "request": {"method": "POST", "url": "Observation"}}]});
    let tx: Value = s.post_json("", &transaction).await.json().await.unwrap();
    let observation = tx["entry"][0]["response"]["location"]
        .as_str()
        .unwrap()
        .split('/')
        .nth(1)
        .unwrap()
        .to_string();
    // Deleting the patient's Observation changes that patient's data too.
    let removed = s.delete(&format!("Observation/{observation}")).await;
    assert_eq!(removed.status(), 204);
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Patient/{p2}")}},
        {"request": {"method": "GET", "url": "Patient/no-such-patient"}}]});
    assert_eq!(s.post_json("", &batch).await.status(), 200);

    // Creates, with the patient as an entity and action C.
    let created = events(s, None, &format!("subtype=create&patient={p1}"), 1).await;
    assert_eq!(created[0]["action"], "C");
    assert_eq!(created[0]["outcome"], "0");
    assert_eq!(created[0]["type"]["code"], "rest");
    assert!(entity_refs(&created[0]).contains(&format!("Patient/{p1}/_history/1")));
    // Reads: the direct one and the batch entry's.
    let reads = events(s, None, &format!("subtype=read&entity=Patient/{p1}"), 1).await;
    assert_eq!(reads[0]["action"], "R");
    assert_eq!(
        events(s, None, &format!("subtype=read&patient={p2}"), 1)
            .await
            .len(),
        1,
        "the batch's read"
    );
    let missing = events(s, None, "subtype=read&outcome=4", 1).await;
    assert!(entity_refs(&missing[0]).contains(&"Patient/no-such-patient".to_string()));
    events(s, None, &format!("subtype=vread&patient={p1}"), 1).await;
    let updates = events(s, None, &format!("subtype=update&patient={p1}"), 1).await;
    assert_eq!(updates[0]["action"], "U");
    assert!(entity_refs(&updates[0]).contains(&format!("Patient/{p1}/_history/2")));
    events(s, None, &format!("subtype=patch&patient={p2}"), 1).await;
    // One search that returned three patients names all three.
    let searches = events(s, None, "subtype=search-type", 1).await;
    let search_event = searches
        .iter()
        .find(|e| query_of(e).as_deref() == Some("Patient?given=Audit"))
        .expect("the search's event carries its query");
    let named = entity_refs(search_event);
    for p in &patients {
        assert!(named.contains(&format!("Patient/{p}")), "{named:?}");
    }
    for p in &patients {
        let found = events(s, None, &format!("subtype=search-type&patient={p}"), 1).await;
        assert!(found.iter().any(|e| e["id"] == search_event["id"]));
    }
    let by_post = events(s, None, &format!("subtype=search-type&patient={p2}"), 2).await;
    let by_post = by_post
        .iter()
        .find(|e| e["id"] != search_event["id"])
        .expect("the POST search's event");
    assert_eq!(
        query_of(by_post).as_deref(),
        Some("Patient?_count=10&given=Audit&family=Banks")
    );
    let named = entity_refs(by_post);
    assert!(named.contains(&format!("Patient/{p2}")), "{named:?}");
    assert!(!named.contains(&format!("Patient/{p1}")), "{named:?}");
    events(
        s,
        None,
        &format!("subtype=history-instance&patient={p1}"),
        1,
    )
    .await;
    let deletes = events(s, None, &format!("subtype=delete&patient={p3}"), 1).await;
    assert_eq!(deletes[0]["action"], "D");
    // The transaction's entry, in the patient's trail; and the transaction itself.
    let tx_entry = events(s, None, &format!("subtype=create&patient={p2}"), 2).await;
    assert!(tx_entry
        .iter()
        .any(|e| entity_refs(e).contains(&format!("Observation/{observation}/_history/1"))));
    let observation_deleted = events(s, None, &format!("subtype=delete&patient={p2}"), 1).await;
    assert!(observation_deleted
        .iter()
        .any(|e| entity_refs(e).contains(&format!("Observation/{observation}/_history/2"))));
    let whole = events(s, None, "subtype=transaction", 2).await;
    assert!(whole.iter().all(|e| e["action"] == "E"));
    // Every event names this server as its source.
    assert_eq!(created[0]["source"]["site"], s.base.as_str());
}

async fn refusals_and_agents_are_audited(s: &Server) {
    s.auth
        .put_client(&Client {
            client_id: "clinic-app".into(),
            name: "Clinic".into(),
            kind: ClientKind::Public,
            secret_hash: None,
            redirect_uris: vec!["http://app.example/cb".into()],
            scope: "user/*.cruds openid fhirUser".into(),
            jwks: None,
        })
        .await
        .unwrap();
    s.auth
        .add_user(&common::account(
            "drjones",
            Role::Practitioner,
            Some("Practitioner/7"),
            None,
        ))
        .await
        .unwrap();
    let token = |t: Value| t["access_token"].as_str().unwrap().to_string();
    let ops = s.system_token().await;
    let dr = token(
        s.auth
            .mint("clinic-app", Some("drjones"), "user/*.cruds", None)
            .await
            .unwrap(),
    );
    let created = s
        .client
        .post(s.url("Patient"))
        .bearer_auth(&ops)
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient", "name": [{"family": "Quinn"}]}).to_string())
        .send()
        .await
        .unwrap();
    let p = id_of(created).await;

    // A practitioner's read names the practitioner, the app and the address.
    let read = s
        .client
        .get(s.url(&format!("Patient/{p}")))
        .bearer_auth(&dr)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let by_dr = events(
        s,
        Some(&ops),
        &format!("agent=Practitioner/7&patient={p}&subtype=read"),
        1,
    )
    .await;
    let agents = by_dr[0]["agent"].as_array().unwrap();
    assert_eq!(agents[0]["who"]["reference"], "Practitioner/7");
    assert_eq!(agents[0]["who"]["identifier"]["value"], "drjones");
    assert_eq!(agents[1]["who"]["identifier"]["value"], "clinic-app");
    assert_eq!(agents[1]["network"]["address"], "127.0.0.1");

    // No token: 401, recorded as a minor failure against what was asked for.
    let anonymous = s.get(&format!("Patient/{p}")).await;
    assert_eq!(anonymous.status(), 401);
    let refused = events(
        s,
        Some(&ops),
        &format!("outcome=4&entity=Patient/{p}&subtype=read"),
        1,
    )
    .await;
    assert_eq!(refused[0]["outcomeDesc"], "HTTP 401");

    // Reading the trail needs an audit-reading role: a practitioner is refused (and that
    // refusal is in the trail too).
    let denied = s
        .client
        .get(s.url("AuditEvent"))
        .bearer_auth(&dr)
        .send()
        .await
        .unwrap();
    expect_outcome(denied, 403).await;
    let refusals = events(
        s,
        Some(&ops),
        "outcome=4&subtype=search-type&agent=Practitioner/7",
        1,
    )
    .await;
    assert_eq!(refusals[0]["outcomeDesc"], "HTTP 403");
}

/// Runs `hearth audit [flags] <action>` on the server's database; answers (success, output).
fn hearth_audit(s: &Server, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("audit")
        .arg("--database-url")
        .arg(s.database_url())
        .args(args)
        .env_remove("HEARTH_DATA_DIR")
        .output()
        .expect("hearth runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn the_trail_is_append_only_and_tamper_evident(s: &Server) {
    let p = id_of(
        s.post_json(
            "Patient",
            &json!({"resourceType": "Patient", "name": [{"family": "Tamper"}]}),
        )
        .await,
    )
    .await;
    for _ in 0..3 {
        s.get(&format!("Patient/{p}")).await;
    }
    let trail = events(s, None, &format!("patient={p}"), 4).await;
    let id = trail[0]["id"].as_str().unwrap();

    // Append-only: no update, patch or delete, not even inside a Bundle.
    let mut changed = trail[0].clone();
    changed["outcome"] = json!("8");
    expect_outcome(s.put_json(&format!("AuditEvent/{id}"), &changed).await, 405).await;
    // A PUT at a new id appends (that is how the official examples load); at an existing
    // id it would replace, and is refused.
    let mut appended = changed.clone();
    appended["id"] = json!("brand-new");
    assert_eq!(
        s.put_json("AuditEvent/brand-new", &appended).await.status(),
        201
    );
    expect_outcome(s.put_json("AuditEvent/brand-new", &appended).await, 405).await;
    let patch = s
        .client
        .patch(s.url(&format!("AuditEvent/{id}")))
        .header("content-type", "application/json-patch+json")
        .body(json!([{"op": "replace", "path": "/outcome", "value": "8"}]).to_string())
        .send()
        .await
        .unwrap();
    expect_outcome(patch, 405).await;
    let delete = s.delete(&format!("AuditEvent/{id}")).await;
    expect_outcome(delete, 405).await;
    let batch: Value = s
        .post_json(
            "",
            &json!({"resourceType": "Bundle", "type": "batch", "entry": [
                {"request": {"method": "DELETE", "url": format!("AuditEvent/{id}")}}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(batch["entry"][0]["response"]["status"]
        .as_str()
        .unwrap()
        .starts_with("405"));
    let still: Value = s
        .get(&format!("AuditEvent/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(still["outcome"], trail[0]["outcome"]);

    // The chain verifies; changing one stored event behind Hearth's back breaks it there.
    let (ok, out) = hearth_audit(s, &["verify"]);
    assert!(ok, "{out}");
    assert!(out.contains("audit chain intact"), "{out}");
    let victim = s.tamper_with_an_audit_event().await;
    let (ok, out) = hearth_audit(s, &["verify"]);
    assert!(!ok, "verify must fail: {out}");
    assert!(out.contains(&format!("broken at event #{victim}")), "{out}");
    assert!(out.contains("changed after it was recorded"), "{out}");

    // Retention: purging everything recorded before now leaves a chain that verifies from
    // its new start, and the purge itself in the trail.
    let (ok, out) = hearth_audit(s, &["--audit-retention-days", "0", "purge"]);
    assert!(ok, "{out}");
    assert!(out.contains("removed"), "{out}");
    let (ok, out) = hearth_audit(s, &["verify"]);
    assert!(ok, "{out}");
    let purges = events(s, None, "subtype=delete&action=D", 1).await;
    assert!(purges.iter().any(|e| e["outcomeDesc"]
        .as_str()
        .is_some_and(|d| d.starts_with("retention:"))));
}

async fn a_burst_larger_than_the_buffer_loses_nothing(backend_server: &Server) {
    // This test wants its own server with a tiny buffer and an export file.
    let export = tempfile::NamedTempFile::new().unwrap();
    let path = export.path().to_string_lossy().to_string();
    let Some(s) = Server::start_with(backend_server.backend, |c| {
        c.audit_buffer = 8;
        c.audit_export = Some(path.clone());
    })
    .await
    else {
        return;
    };
    let p = id_of(
        s.post_json(
            "Patient",
            &json!({"resourceType": "Patient", "name": [{"family": "Burst"}]}),
        )
        .await,
    )
    .await;
    const READS: usize = 300;
    let statuses: Vec<u16> = futures::stream::iter(0..READS)
        .map(|_| {
            let s = &s;
            let p = &p;
            async move { s.get(&format!("Patient/{p}")).await.status().as_u16() }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(statuses.iter().all(|st| *st == 200));
    // A graceful shutdown flushes the buffer and the export.
    s.shutdown().await.unwrap();
    let exported = std::fs::read_to_string(&path).unwrap();
    let exported_reads = exported
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("each line is an AuditEvent"))
        .filter(|e| e["subtype"][0]["code"] == "read")
        .count();
    assert_eq!(exported_reads, READS, "every read is in the export");
    let again = s.reopen().await;
    let count: Value = again
        .get(&format!(
            "AuditEvent?subtype=read&entity=Patient/{p}&_summary=count"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(count["total"], READS, "every read is in the trail");
}

/// AuditEvents live in their own table: the Basic Audit Log Patterns parameters, sorting by
/// date and paging are answered from it, a client's AuditEvent is stored and found like
/// Hearth's own, and what the table cannot answer is a clear 400.
async fn the_audit_table_answers_balp_searches_and_refuses_the_rest(s: &Server) {
    let p = id_of(
        s.post_json(
            "Patient",
            &json!({"resourceType": "Patient", "name": [{"family": "Paged"}]}),
        )
        .await,
    )
    .await;
    for _ in 0..3 {
        assert_eq!(s.get(&format!("Patient/{p}")).await.status(), 200);
    }
    let reads = events(
        s,
        None,
        &format!("patient={p}&subtype=read&action=R&outcome=0"),
        3,
    )
    .await;
    assert_eq!(reads.len(), 3);

    // Newest first, two per page, following the next link.
    let first: Value = s
        .get(&format!(
            "AuditEvent?patient=Patient/{p}&_sort=-date&_count=2"
        ))
        .await
        .json()
        .await
        .unwrap();
    let dates = |b: &Value| -> Vec<String> {
        b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["recorded"].as_str().unwrap().to_string())
            .collect()
    };
    let mut seen = dates(&first);
    assert_eq!(seen.len(), 2);
    let next = first["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .and_then(|l| l["url"].as_str())
        .expect("a next page")
        .to_string();
    let second: Value = s
        .client
        .get(&next)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    seen.extend(dates(&second));
    assert!(seen.len() >= 4, "the create and three reads: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {seen:?}"
    );

    // A client's own AuditEvent (an app reporting an access) is stored and searchable.
    let own = json!({"resourceType": "AuditEvent",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
        "action": "R", "recorded": "2026-01-02T03:04:05Z", "outcome": "0",
        "agent": [{"who": {"reference": "Practitioner/dr-own"}, "requestor": true}],
        "source": {"observer": {"display": "an app"}},
        "entity": [{"what": {"reference": format!("Patient/{p}")}}]});
    let id = id_of(s.post_json("AuditEvent", &own).await).await;
    let found = events(
        s,
        None,
        "agent=Practitioner/dr-own&date=2026-01-02&type=110110",
        1,
    )
    .await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], id.as_str());
    assert_eq!(
        s.get(&format!("AuditEvent/{id}/_history/1")).await.status(),
        200
    );
    assert_eq!(
        s.get(&format!("AuditEvent/{id}/_history/2")).await.status(),
        404
    );

    for query in [
        "patient:missing=true",
        "agent.name=x",
        "_sort=outcome",
        "_include=AuditEvent:patient",
        "address=10.0.0.1",
    ] {
        let r = s.get(&format!("AuditEvent?{query}")).await;
        assert_eq!(r.status(), 400, "AuditEvent?{query}");
        expect_outcome(r, 400).await;
    }
    let r = s
        .get(&format!("Patient?_id={p}&_revinclude=AuditEvent:patient"))
        .await;
    expect_outcome(r, 400).await;
}

/// A database from before the audit table (AuditEvents stored as generic resources) is
/// migrated forward on start: every event moves to the audit table, stays readable and
/// searchable by patient, leaves no generic row behind, and the chain verifies.
async fn an_upgrade_moves_stored_audit_events_into_the_audit_table(s: &Server) {
    let p = id_of(
        s.post_json(
            "Patient",
            &json!({"resourceType": "Patient", "name": [{"family": "Upgrade"}]}),
        )
        .await,
    )
    .await;
    for _ in 0..2 {
        assert_eq!(s.get(&format!("Patient/{p}")).await.status(), 200);
    }
    let before = events(s, None, &format!("patient={p}"), 3).await;
    s.shutdown().await.unwrap();
    s.undo_the_audit_table().await;
    let legacy = s
        .scalar("SELECT count(*) FROM resource WHERE type = 'AuditEvent'")
        .await;
    assert!(
        legacy >= before.len() as i64,
        "{legacy} generic AuditEvents"
    );

    let again = s.reopen().await;
    assert_eq!(
        again.scalar("SELECT count(*) FROM audit_event").await,
        legacy,
        "every event moved"
    );
    let count = |query: String| {
        let again = &again;
        async move {
            let b: Value = again.get(&query).await.json().await.unwrap();
            b["total"].as_u64().unwrap()
        }
    };
    assert_eq!(
        count(format!(
            "AuditEvent?patient={p}&subtype=read&_summary=count"
        ))
        .await,
        2
    );
    let id = before[0]["id"].as_str().unwrap();
    let moved: Value = again
        .get(&format!("AuditEvent/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(moved["recorded"], before[0]["recorded"]);
    let generic = "SELECT count(*) FROM resource WHERE type = 'AuditEvent'";
    assert_eq!(
        again.scalar(generic).await,
        0,
        "no generic AuditEvent row is left"
    );
    let stale = "SELECT count(*) FROM resource_version WHERE type = 'AuditEvent'";
    assert_eq!(again.scalar(stale).await, 0, "no version row is left");
    let (ok, out) = hearth_audit(&again, &["verify"]);
    assert!(ok, "{out}");
    assert!(out.contains("audit chain intact"), "{out}");
}

/// Migration 0008: an event's only subtype and only X-Request-Id leave `audit_ref` for
/// columns of `audit_event`, and searches by them answer as before.
async fn an_upgrade_moves_single_subtypes_and_request_ids_into_columns(s: &Server) {
    let p = id_of(
        s.post_json(
            "Patient",
            &json!({"resourceType": "Patient", "name": [{"family": "Columns"}]}),
        )
        .await,
    )
    .await;
    let read = s
        .client
        .get(s.url(&format!("Patient/{p}")))
        .header("x-request-id", "upgrade-request-1")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(s.get(&format!("Patient/{p}")).await.status(), 200);
    events(s, None, &format!("patient={p}"), 3).await;
    s.shutdown().await.unwrap();
    s.undo_the_audit_columns().await;
    let rows = "SELECT count(*) FROM audit_ref WHERE param IN ('subtype', 'entity:identifier')";
    assert!(
        s.scalar(rows).await >= 6,
        "the old shape has a row for each"
    );

    let again = s.reopen().await;
    assert_eq!(
        again.scalar(rows).await,
        0,
        "single values moved to columns"
    );
    let total = |query: String| {
        let again = &again;
        async move {
            let r = again.get(&query).await;
            assert_eq!(r.status(), 200, "{query}");
            let b: Value = r.json().await.unwrap();
            b["total"].as_u64().unwrap()
        }
    };
    let q = |params: &str| format!("AuditEvent?patient={p}&{params}&_summary=count");
    assert_eq!(total(q("subtype=read")).await, 2);
    assert_eq!(
        total(q("subtype=http://hl7.org/fhir/restful-interaction|create")).await,
        1
    );
    // (The polling searches above are audited too, naming the patient: count, don't guess.)
    assert_eq!(
        total(q("subtype:not=read")).await,
        total(format!("AuditEvent?patient={p}&_summary=count")).await - 2
    );
    assert_eq!(total(q("entity:identifier=upgrade-request-1")).await, 1);
    assert_eq!(
        total("AuditEvent?entity:identifier=upgrade-request-1&_summary=count".into()).await,
        1
    );
    // Events written after the upgrade are found the same way.
    let read = again
        .client
        .get(again.url(&format!("Patient/{p}")))
        .header("x-request-id", "upgrade-request-2")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    events(&again, None, "entity:identifier=upgrade-request-2", 1).await;
    assert_eq!(total(q("subtype=read")).await, 3);
    let (ok, out) = hearth_audit(&again, &["verify"]);
    assert!(ok, "{out}");
}

/// Migration 0009: new events' text is stored packed. Events stored before as text stay
/// readable and searchable, new ones are packed (a fraction of their text's size), and the
/// chain verifies across both.
async fn events_stored_as_text_stay_readable_after_packing(s: &Server) {
    let p = id_of(
        s.post_json(
            "Patient",
            &json!({"resourceType": "Patient", "name": [{"family": "Packed"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(s.get(&format!("Patient/{p}")).await.status(), 200);
    let before = events(s, None, &format!("patient={p}"), 2).await;
    s.shutdown().await.unwrap();
    s.undo_the_packed_text().await;

    let again = s.reopen().await;
    assert_eq!(again.get(&format!("Patient/{p}")).await.status(), 200);
    let after = events(&again, None, &format!("patient={p}&subtype=read"), 2).await;
    let old = before.iter().find(|e| e["subtype"][0]["code"] == "read");
    let old = old.expect("the read before the upgrade");
    let id = old["id"].as_str().unwrap();
    let reread: Value = again
        .get(&format!("AuditEvent/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(&reread, old, "an event stored as text reads the same");
    assert!(after.iter().any(|e| e["id"] != old["id"]), "{after:?}");
    let packed = "SELECT count(*) FROM audit_event WHERE packed IS NOT NULL";
    assert!(again.scalar(packed).await >= 1, "new events are packed");
    let small = "SELECT count(*) FROM audit_event
        WHERE subtype_code = 'read' AND packed IS NOT NULL AND length(packed) * 3 > 1800";
    assert_eq!(again.scalar(small).await, 0, "packed events are small");
    let (ok, out) = hearth_audit(&again, &["verify"]);
    assert!(ok, "{out}");
    assert!(out.contains("audit chain intact"), "{out}");
}
