//! Batch and transaction Bundles and PATCH over HTTP, on both backends.
//! <https://hl7.org/fhir/R4/http.html#transaction>, <https://hl7.org/fhir/R4/http.html#patch>

mod common;

use base64::Engine;
use common::{expect_outcome, Server};
use serde_json::{json, Value};

on_both_backends!(
    transaction_rewrites_references,
    transaction_is_all_or_nothing,
    transaction_conditional_entries,
    transaction_order_and_reads,
    batch_entries_are_independent,
    patch_json_and_fhirpath,
    bad_bundles,
);

async fn post_bundle(s: &Server, bundle: &Value) -> reqwest::Response {
    s.client
        .post(s.base.clone())
        .header("content-type", "application/fhir+json")
        .body(bundle.to_string())
        .send()
        .await
        .unwrap()
}

fn transaction(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

fn post(full_url: &str, resource: Value) -> Value {
    let t = resource["resourceType"].as_str().unwrap().to_string();
    json!({"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": t}})
}

async fn count(s: &Server, query: &str) -> i64 {
    let b: Value = s
        .get(&format!("{query}&_summary=count"))
        .await
        .json()
        .await
        .unwrap();
    b["total"].as_i64().unwrap()
}

async fn transaction_rewrites_references(s: &Server) {
    let bundle = transaction(vec![
        post(
            "urn:uuid:11111111-1111-4111-8111-111111111111",
            json!({"resourceType": "Patient",
            "identifier": [{"system": "urn:t", "value": "p1"}],
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"urn:uuid:11111111-1111-4111-8111-111111111111\">me</a></div>"}}),
        ),
        post(
            "urn:uuid:22222222-2222-4222-8222-222222222222",
            json!({"resourceType": "Encounter", "status": "finished",
            "class": {"code": "AMB"}, "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"}}),
        ),
        post(
            "urn:uuid:33333333-3333-4333-8333-333333333333",
            json!({"resourceType": "Observation", "status": "final",
            "code": {"text": "x"}, "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"},
            "encounter": {"reference": "urn:uuid:22222222-2222-4222-8222-222222222222"},
            "hasMember": [{"reference": "urn:uuid:33333333-3333-4333-8333-333333333333"}]}),
        ),
    ]);
    let r = post_bundle(s, &bundle).await;
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["type"], "transaction-response");
    let entries = b["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    for e in entries {
        assert_eq!(e["response"]["status"], "201 Created");
        assert!(e["response"]["location"]
            .as_str()
            .unwrap()
            .contains("/_history/1"));
        assert_eq!(e["response"]["etag"], "W/\"1\"");
    }
    let patient_id = entries[0]["resource"]["id"].as_str().unwrap();
    let obs_id = entries[2]["resource"]["id"].as_str().unwrap();
    let obs: Value = s
        .get(&format!("Observation/{obs_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(obs["subject"]["reference"], format!("Patient/{patient_id}"));
    assert_eq!(
        obs["encounter"]["reference"],
        format!(
            "Encounter/{}",
            entries[1]["resource"]["id"].as_str().unwrap()
        )
    );
    assert_eq!(
        obs["hasMember"][0]["reference"],
        format!("Observation/{obs_id}"),
        "a self reference too"
    );
    let patient: Value = s
        .get(&format!("Patient/{patient_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert!(patient["text"]["div"]
        .as_str()
        .unwrap()
        .contains(&format!("Patient/{patient_id}")));
    // Prefer: return=minimal leaves the resources out.
    let minimal = transaction(vec![post(
        "urn:uuid:11111111-1111-4111-8111-999999999999",
        json!({"resourceType": "Patient"}),
    )]);
    let r = s
        .client
        .post(s.base.clone())
        .header("content-type", "application/fhir+json")
        .header("prefer", "return=minimal")
        .body(minimal.to_string())
        .send()
        .await
        .unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["entry"][0]["response"]["status"], "201 Created");
    assert!(b["entry"][0].get("resource").is_none());
    // The index was written with the resources.
    assert_eq!(
        count(s, &format!("Observation?subject=Patient/{patient_id}")).await,
        1
    );
    assert_eq!(
        count(s, &format!("Encounter?patient={patient_id}")).await,
        1
    );
}

async fn transaction_is_all_or_nothing(s: &Server) {
    let mut entries: Vec<Value> = (0..60)
        .map(|n| {
            post(
                &format!("urn:uuid:00000000-0000-4000-8000-{n:012}"),
                json!({"resourceType": "Patient",
            "identifier": [{"system": "urn:atomic", "value": format!("{n}")}]}),
            )
        })
        .collect();
    // The last entry is invalid: nothing of the 59 before it may remain.
    entries.push(post(
        "urn:uuid:00000000-0000-4000-8000-999999999999",
        json!({"resourceType": "Patient", "gender": "banana"}),
    ));
    let oo = expect_outcome(post_bundle(s, &transaction(entries)).await, 400).await;
    assert!(oo.to_string().contains("Bundle.entry[60]"), "{oo}");
    assert_eq!(count(s, "Patient?identifier=urn:atomic|").await, 0);
    assert_eq!(s.version_count("Patient").await, 0);

    // A version conflict late in the transaction rolls back earlier writes too.
    let existing = s
        .create(&json!({"resourceType": "Patient", "active": true}))
        .await;
    let id = existing["id"].as_str().unwrap();
    let bundle = transaction(vec![
        post(
            "urn:uuid:aaaaaaaa-0000-4000-8000-000000000001",
            json!({"resourceType": "Patient", "identifier": [{"system": "urn:atomic", "value": "x"}]}),
        ),
        json!({"resource": {"resourceType": "Patient", "id": id, "active": false},
            "request": {"method": "PUT", "url": format!("Patient/{id}"), "ifMatch": "W/\"7\""}}),
    ]);
    let oo = expect_outcome(post_bundle(s, &bundle).await, 412).await;
    assert!(oo.to_string().contains("Bundle.entry[1]"), "{oo}");
    assert_eq!(count(s, "Patient?identifier=urn:atomic|").await, 0);
    let still: Value = s.get(&format!("Patient/{id}")).await.json().await.unwrap();
    assert_eq!(still["active"], true);

    // References to nothing, duplicate fullUrls.
    let dangling = transaction(vec![post(
        "urn:uuid:aaaaaaaa-0000-4000-8000-000000000002",
        json!({"resourceType": "Observation",
        "status": "final", "code": {"text": "x"}, "subject": {"reference": "urn:uuid:aaaaaaaa-0000-4000-8000-00000000dead"}}),
    )]);
    let oo = expect_outcome(post_bundle(s, &dangling).await, 400).await;
    assert!(oo.to_string().contains("00000000dead"));
    let twice = transaction(vec![
        post(
            "urn:uuid:aaaaaaaa-0000-4000-8000-000000000003",
            json!({"resourceType": "Patient"}),
        ),
        post(
            "urn:uuid:aaaaaaaa-0000-4000-8000-000000000003",
            json!({"resourceType": "Patient"}),
        ),
    ]);
    expect_outcome(post_bundle(s, &twice).await, 400).await;
    assert_eq!(
        s.version_count("Patient").await,
        1,
        "only the one created outside"
    );
}

async fn transaction_conditional_entries(s: &Server) {
    let known = s.create(&json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "42"}]})).await;
    let known_id = known["id"].as_str().unwrap();
    s.create(
        &json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "dup"}]}),
    )
    .await;
    s.create(
        &json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "dup"}]}),
    )
    .await;
    let bundle = transaction(vec![
        json!({"fullUrl": "urn:uuid:bbbbbbbb-0000-4000-8000-000000000001",
            "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "42"}]},
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|42"}}),
        post(
            "urn:uuid:bbbbbbbb-0000-4000-8000-000000000002",
            json!({"resourceType": "Observation", "status": "final",
            "code": {"text": "x"}, "subject": {"reference": "urn:uuid:bbbbbbbb-0000-4000-8000-000000000001"},
            "performer": [{"reference": "Patient?identifier=urn:mrn|42"}]}),
        ),
        json!({"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "77"}], "active": true},
            "request": {"method": "PUT", "url": "Patient?identifier=urn:mrn|77"}}),
    ]);
    let r = post_bundle(s, &bundle).await;
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(
        b["entry"][0]["response"]["status"], "200 OK",
        "found, not created"
    );
    assert_eq!(b["entry"][0]["resource"]["id"], known_id);
    assert_eq!(b["entry"][2]["response"]["status"], "201 Created");
    let obs = &b["entry"][1]["resource"];
    assert_eq!(obs["subject"]["reference"], format!("Patient/{known_id}"));
    assert_eq!(
        obs["performer"][0]["reference"],
        format!("Patient/{known_id}")
    );
    assert_eq!(count(s, "Patient?identifier=urn:mrn|42").await, 1);
    // A conditional reference that matches several resources fails the transaction.
    let ambiguous = transaction(vec![post(
        "urn:uuid:bbbbbbbb-0000-4000-8000-000000000003",
        json!({"resourceType": "Observation",
        "status": "final", "code": {"text": "ambiguous"}, "subject": {"reference": "Patient?identifier=urn:mrn|dup"}}),
    )]);
    expect_outcome(post_bundle(s, &ambiguous).await, 412).await;
    assert_eq!(count(s, "Observation?code:text=ambiguous").await, 0);
}

async fn transaction_order_and_reads(s: &Server) {
    let old = s.create(&json!({"resourceType": "Patient", "identifier": [{"system": "urn:order", "value": "old"}]})).await;
    let old_id = old["id"].as_str().unwrap();
    // Listed GET first, POST second, DELETE last: processed DELETE, POST, then GET.
    let bundle = transaction(vec![
        json!({"request": {"method": "GET", "url": "Patient?identifier=urn:order|"}}),
        post(
            "urn:uuid:cccccccc-0000-4000-8000-000000000001",
            json!({"resourceType": "Patient", "identifier": [{"system": "urn:order", "value": "new"}]}),
        ),
        json!({"request": {"method": "DELETE", "url": format!("Patient/{old_id}")}}),
        json!({"request": {"method": "GET", "url": format!("Patient/{old_id}")}}),
    ]);
    let r = post_bundle(s, &bundle).await;
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    let search = &b["entry"][0]["resource"];
    assert_eq!(search["type"], "searchset");
    assert_eq!(search["total"], 1, "the read sees the transaction's writes");
    assert_eq!(
        search["entry"][0]["resource"]["identifier"][0]["value"],
        "new"
    );
    assert_eq!(b["entry"][2]["response"]["status"], "204 No Content");
    assert!(b["entry"][3]["response"]["status"]
        .as_str()
        .unwrap()
        .starts_with("410"));
}

async fn batch_entries_are_independent(s: &Server) {
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        post("urn:uuid:dddddddd-0000-4000-8000-000000000001", json!({"resourceType": "Patient", "identifier": [{"system": "urn:batch", "value": "1"}]})),
        post("urn:uuid:dddddddd-0000-4000-8000-000000000002", json!({"resourceType": "Patient", "birthDate": "2021-02-30"})),
        json!({"request": {"method": "GET", "url": "Patient/nonexistent"}}),
        json!({"request": {"method": "FLY", "url": "Patient"}}),
        json!({"resource": {"resourceType": "Patient", "id": "batch-put", "active": true}, "request": {"method": "PUT", "url": "Patient/batch-put"}}),
    ]});
    let r = post_bundle(s, &bundle).await;
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["type"], "batch-response");
    let status = |n: usize| {
        b["entry"][n]["response"]["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status(0), "201 Created");
    assert!(status(1).starts_with("400"), "{}", status(1));
    assert!(b["entry"][1]["response"]["outcome"]
        .to_string()
        .contains("birthDate"));
    assert!(status(2).starts_with("404"));
    assert!(status(3).starts_with("400"));
    assert_eq!(status(4), "201 Created");
    assert_eq!(count(s, "Patient?identifier=urn:batch|1").await, 1);
    assert_eq!(s.get("Patient/batch-put").await.status(), 200);
}

async fn patch_json_and_fhirpath(s: &Server) {
    let p = s
        .create(&json!({"resourceType": "Patient", "active": true, "name": [{"family": "Before"}]}))
        .await;
    let id = p["id"].as_str().unwrap();
    let send = |body: String, ct: &'static str, if_match: Option<&'static str>| {
        let mut rq = s
            .client
            .patch(s.url(&format!("Patient/{id}")))
            .header("content-type", ct)
            .body(body);
        if let Some(m) = if_match {
            rq = rq.header("if-match", m);
        }
        rq.send()
    };
    let r = send(
        json!([{"op": "replace", "path": "/name/0/family", "value": "After"}]).to_string(),
        "application/json-patch+json",
        Some("W/\"1\""),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["name"][0]["family"], "After");
    assert_eq!(v["meta"]["versionId"], "2");
    assert_eq!(s.get("Patient?family=after").await.status(), 200);
    // Stale If-Match.
    let r = send(
        json!([{"op": "remove", "path": "/active"}]).to_string(),
        "application/json-patch+json",
        Some("W/\"1\""),
    )
    .await
    .unwrap();
    expect_outcome(r, 412).await;
    // A failing test op: 422; a patch that makes the resource invalid: 400; nothing written.
    let r = send(
        json!([{"op": "test", "path": "/active", "value": false}]).to_string(),
        "application/json-patch+json",
        None,
    )
    .await
    .unwrap();
    expect_outcome(r, 422).await;
    let r = send(
        json!([{"op": "add", "path": "/gender", "value": "banana"}]).to_string(),
        "application/json-patch+json",
        None,
    )
    .await
    .unwrap();
    expect_outcome(r, 400).await;
    let r = send(
        json!([{"op": "replace", "path": "/id", "value": "other"}]).to_string(),
        "application/json-patch+json",
        None,
    )
    .await
    .unwrap();
    expect_outcome(r, 422).await;
    // FHIRPath Patch.
    let fp = json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "add"}, {"name": "path", "valueString": "Patient"},
        {"name": "name", "valueString": "birthDate"}, {"name": "value", "valueDate": "1999-09-09"}]}]});
    let r = send(fp.to_string(), "application/fhir+json", None)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["birthDate"], "1999-09-09");
    assert_eq!(v["meta"]["versionId"], "3");
    let current: Value = s.get(&format!("Patient/{id}")).await.json().await.unwrap();
    assert_eq!(current["meta"]["versionId"], "3");
    expect_outcome(
        s.client
            .patch(s.url("Patient/missing"))
            .header("content-type", "application/json-patch+json")
            .body("[]")
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;

    // Both formats inside a transaction.
    let data = base64::engine::general_purpose::STANDARD
        .encode(json!([{"op": "replace", "path": "/active", "value": false}]).to_string());
    let bundle = transaction(vec![
        json!({"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data},
            "request": {"method": "PATCH", "url": format!("Patient/{id}")}}),
    ]);
    let r = post_bundle(s, &bundle).await;
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["entry"][0]["resource"]["active"], false);
    let bundle = transaction(vec![
        json!({"resource": {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Patient.name[0].family"},
        {"name": "value", "valueString": "Patched"}]}]}, "request": {"method": "PATCH", "url": format!("Patient/{id}")}}),
    ]);
    let b: Value = post_bundle(s, &bundle).await.json().await.unwrap();
    assert_eq!(b["entry"][0]["resource"]["name"][0]["family"], "Patched");
}

async fn bad_bundles(s: &Server) {
    expect_outcome(
        post_bundle(s, &json!({"resourceType": "Patient"})).await,
        400,
    )
    .await;
    expect_outcome(
        post_bundle(s, &json!({"resourceType": "Bundle", "type": "collection"})).await,
        400,
    )
    .await;
    expect_outcome(
        post_bundle(
            s,
            &transaction(vec![json!({"resource": {"resourceType": "Patient"}})]),
        )
        .await,
        400,
    )
    .await;
    let wrong_type = transaction(vec![
        json!({"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Observation"}}),
    ]);
    expect_outcome(post_bundle(s, &wrong_type).await, 400).await;
    let too_many = transaction(
        (0..5001)
            .map(|_| json!({"request": {"method": "GET", "url": "Patient/x"}}))
            .collect(),
    );
    expect_outcome(post_bundle(s, &too_many).await, 413).await;
    let empty = post_bundle(s, &transaction(vec![])).await;
    assert_eq!(empty.status(), 200);
    assert_eq!(s.version_count("Patient").await, 0);
}
