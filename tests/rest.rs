//! The FHIR REST interactions over HTTP, on both backends. <https://hl7.org/fhir/R4/http.html>

mod common;

use common::{expect_outcome, Server};
use serde_json::{json, Value};

fn patient() -> Value {
    json!({"resourceType": "Patient", "id": "ignored-on-create", "active": true,
        "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
        "gender": "male", "birthDate": "1974-12-25"})
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

on_both_backends!(
    create_then_read,
    update_versions_and_vread,
    update_creates_at_client_id,
    delete_then_gone_with_history_kept,
    if_match_guards_updates_and_deletes,
    conditional_read,
    concurrent_updates_lose_nothing,
    concurrent_if_match_updates_one_wins,
    prefer_return,
    history_levels_paging_since_at,
    xml_in_json_out_and_back,
    negotiation_errors,
    invalid_resources_are_refused_and_nothing_written,
    malformed_bodies_are_refused,
    url_errors,
    capability_statement,
    operations_endpoints,
);

async fn create_then_read(s: &Server) {
    let r = s.post_json("Patient", &patient()).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "etag"), "W/\"1\"");
    assert!(!header(&r, "last-modified").is_empty());
    assert!(header(&r, "content-type").starts_with("application/fhir+json"));
    let location = header(&r, "location");
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert_ne!(id, "ignored-on-create", "the server assigns the id");
    assert_eq!(location, s.url(&format!("Patient/{id}/_history/1")));
    assert_eq!(created["meta"]["versionId"], "1");
    assert!(created["meta"]["lastUpdated"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    let r = s.get(&format!("Patient/{id}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "etag"), "W/\"1\"");
    let read: Value = r.json().await.unwrap();
    assert_eq!(read, created);
    assert_eq!(read["name"][0]["given"][1], "James");
    // The key order people expect, whatever the database did with it.
    let keys: Vec<_> = read.as_object().unwrap().keys().take(3).cloned().collect();
    assert_eq!(keys, ["resourceType", "id", "meta"]);
}

async fn update_versions_and_vread(s: &Server) {
    let created = s.create(&patient()).await;
    let id = created["id"].as_str().unwrap();
    let mut changed = created.clone();
    changed["gender"] = json!("female");
    changed["meta"]["versionId"] = json!("77"); // server-managed: ignored
    let r = s.put_json(&format!("Patient/{id}"), &changed).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "etag"), "W/\"2\"");
    let v2: Value = r.json().await.unwrap();
    assert_eq!(v2["meta"]["versionId"], "2");
    assert_eq!(v2["gender"], "female");

    let v1: Value = s
        .get(&format!("Patient/{id}/_history/1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v1["gender"], "male");
    assert_eq!(v1, created);
    let r = s.get(&format!("Patient/{id}/_history/2")).await;
    assert_eq!(header(&r, "etag"), "W/\"2\"");
    assert_eq!(r.json::<Value>().await.unwrap(), v2);
    expect_outcome(s.get(&format!("Patient/{id}/_history/3")).await, 404).await;
    expect_outcome(s.get(&format!("Patient/{id}/_history/abc")).await, 404).await;
}

async fn update_creates_at_client_id(s: &Server) {
    let mut p = patient();
    p["id"] = json!("chosen-by-client");
    let r = s.put_json("Patient/chosen-by-client", &p).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "location"),
        s.url("Patient/chosen-by-client/_history/1")
    );
    let r = s.put_json("Patient/chosen-by-client", &p).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "etag"), "W/\"2\"");
}

async fn delete_then_gone_with_history_kept(s: &Server) {
    let created = s.create(&patient()).await;
    let id = created["id"].as_str().unwrap().to_string();
    let r = s.delete(&format!("Patient/{id}")).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "etag"), "W/\"2\"");
    expect_outcome(s.get(&format!("Patient/{id}")).await, 410).await;
    assert_eq!(
        s.get(&format!("Patient/{id}/_history/1")).await.status(),
        200
    );
    expect_outcome(s.get(&format!("Patient/{id}/_history/2")).await, 410).await;
    // Deleting again, or deleting what never existed: still 204, no new version.
    let r = s.delete(&format!("Patient/{id}")).await;
    assert_eq!(r.status(), 204);
    let r = s.delete("Patient/never-was").await;
    assert_eq!(r.status(), 204);
    let h: Value = s
        .get(&format!("Patient/{id}/_history"))
        .await
        .json()
        .await
        .unwrap();
    let methods: Vec<_> = h["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["request"]["method"].clone())
        .collect();
    assert_eq!(methods, [json!("DELETE"), json!("POST")]);
    assert!(h["entry"][0].get("resource").is_none());
    // Updating a deleted resource brings it back as a new version.
    let r = s
        .put_json(
            &format!("Patient/{id}"),
            &json!({"resourceType": "Patient", "id": id}),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "etag"), "W/\"3\"");
    assert_eq!(s.get(&format!("Patient/{id}")).await.status(), 200);
}

async fn if_match_guards_updates_and_deletes(s: &Server) {
    let created = s.create(&patient()).await;
    let id = created["id"].as_str().unwrap();
    let put = |tag: &'static str| {
        s.client
            .put(s.url(&format!("Patient/{id}")))
            .header("content-type", "application/fhir+json")
            .header("if-match", tag)
            .body(created.to_string())
            .send()
    };
    expect_outcome(put("W/\"2\"").await.unwrap(), 412).await;
    assert_eq!(put("W/\"1\"").await.unwrap().status(), 200);
    expect_outcome(put("W/\"1\"").await.unwrap(), 412).await;
    expect_outcome(put("not-a-tag").await.unwrap(), 400).await;
    let del = |tag: &'static str| {
        s.client
            .delete(s.url(&format!("Patient/{id}")))
            .header("if-match", tag)
            .send()
    };
    expect_outcome(del("W/\"1\"").await.unwrap(), 412).await;
    assert_eq!(del("W/\"2\"").await.unwrap().status(), 204);
    // If-Match on something that does not exist cannot hold.
    let r = s
        .client
        .put(s.url("Patient/nobody"))
        .header("content-type", "application/fhir+json")
        .header("if-match", "W/\"1\"")
        .body(json!({"resourceType": "Patient", "id": "nobody"}).to_string())
        .send()
        .await
        .unwrap();
    expect_outcome(r, 412).await;
    expect_outcome(s.get("Patient/nobody").await, 404).await;
}

async fn conditional_read(s: &Server) {
    let created = s.create(&patient()).await;
    let path = format!("Patient/{}", created["id"].as_str().unwrap());
    let get =
        |name: &'static str, value: String| s.client.get(s.url(&path)).header(name, value).send();
    let r = get("if-none-match", "W/\"1\"".into()).await.unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(header(&r, "etag"), "W/\"1\"");
    assert!(r.bytes().await.unwrap().is_empty());
    assert_eq!(
        get("if-none-match", "W/\"9\"".into())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT".into())
            .await
            .unwrap()
            .status(),
        304
    );
    assert_eq!(
        get("if-modified-since", "Thu, 01 Jan 2015 00:00:00 GMT".into())
            .await
            .unwrap()
            .status(),
        200
    );
}

async fn concurrent_updates_lose_nothing(s: &Server) {
    let created = s.create(&patient()).await;
    let id = created["id"].as_str().unwrap().to_string();
    let writers = (0..20).map(|i| {
        let mut p = created.clone();
        p["name"][0]["family"] = json!(format!("Writer{i}"));
        let path = format!("Patient/{id}");
        async move { s.put_json(&path, &p).await.status().as_u16() }
    });
    let statuses = futures::future::join_all(writers).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let r = s.get(&format!("Patient/{id}")).await;
    assert_eq!(header(&r, "etag"), "W/\"21\"");
    let h: Value = s
        .get(&format!("Patient/{id}/_history?_count=100"))
        .await
        .json()
        .await
        .unwrap();
    let entries = h["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 21, "every write is a version");
    let mut families: Vec<_> = entries[..20]
        .iter()
        .map(|e| {
            e["resource"]["name"][0]["family"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    families.sort();
    families.dedup();
    assert_eq!(families.len(), 20, "no write was lost");
}

async fn concurrent_if_match_updates_one_wins(s: &Server) {
    let created = s.create(&patient()).await;
    let id = created["id"].as_str().unwrap().to_string();
    let writers = (0..10).map(|_| {
        let body = created.to_string();
        let url = s.url(&format!("Patient/{id}"));
        async move {
            s.client
                .put(url)
                .header("content-type", "application/fhir+json")
                .header("if-match", "W/\"1\"")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let mut statuses = futures::future::join_all(writers).await;
    statuses.sort();
    assert_eq!(statuses, [200, 412, 412, 412, 412, 412, 412, 412, 412, 412]);
}

async fn prefer_return(s: &Server) {
    let send = |prefer: &'static str| {
        s.client
            .post(s.url("Patient"))
            .header("content-type", "application/fhir+json")
            .header("prefer", prefer)
            .body(patient().to_string())
            .send()
    };
    let r = send("return=minimal").await.unwrap();
    assert_eq!(r.status(), 201);
    assert!(!header(&r, "location").is_empty());
    assert!(r.bytes().await.unwrap().is_empty());
    let r = send("return=OperationOutcome").await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.json::<Value>().await.unwrap()["resourceType"],
        "OperationOutcome"
    );
    let r = send("return=representation").await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["resourceType"], "Patient");
}

async fn history_levels_paging_since_at(s: &Server) {
    let before = s
        .create(&json!({"resourceType": "Practitioner", "active": true}))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mark = before["meta"]["lastUpdated"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for i in 0..7 {
        let p = s
            .create(&json!({"resourceType": "Patient", "name": [{"family": format!("P{i}")}]}))
            .await;
        ids.push(p["id"].as_str().unwrap().to_string());
    }
    // Newest first.
    let h: Value = s.get("Patient/_history").await.json().await.unwrap();
    assert_eq!(h["type"], "history");
    let first = &h["entry"][0];
    assert_eq!(first["resource"]["id"], ids[6].as_str());
    assert_eq!(first["request"]["method"], "POST");
    assert_eq!(first["response"]["status"], "201 Created");
    assert_eq!(
        first["fullUrl"],
        s.url(&format!("Patient/{}", ids[6])).as_str()
    );
    // Paging: 3 + 3 + 1, following next links, no duplicates, no gaps.
    let mut url = s.url("Patient/_history?_count=3");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let b: Value = s
            .client
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        for e in b["entry"].as_array().unwrap() {
            seen.push(e["resource"]["id"].as_str().unwrap().to_string());
        }
        match b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
        {
            Some(next) => url = next["url"].as_str().unwrap().to_string(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected);
    // System level sees both types; _since cuts off the older Practitioner.
    let all: Value = s.get("_history").await.json().await.unwrap();
    assert_eq!(all["entry"].as_array().unwrap().len(), 8);
    let since = s
        .client
        .get(s.url("_history"))
        .query(&[("_since", &ids_time(s, &ids[0]).await)])
        .send()
        .await
        .unwrap();
    let since: Value = since.json().await.unwrap();
    assert_eq!(since["entry"].as_array().unwrap().len(), 7);
    // _at: what was current at the Practitioner's creation instant.
    let at: Value = s
        .client
        .get(s.url("_history"))
        .query(&[("_at", &mark)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(at["entry"].as_array().unwrap().len(), 1);
    // Bad parameters are refused, naming the parameter.
    let bad = expect_outcome(s.get("_history?_since=yesterday").await, 400).await;
    assert!(bad["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("_since"));
    expect_outcome(s.get("_history?_count=-1").await, 400).await;
    expect_outcome(s.get("_history?_cursor=zzz").await, 400).await;
    expect_outcome(s.get("_history?name=x").await, 400).await;
    let lenient = s
        .client
        .get(s.url("_history?name=x"))
        .header("prefer", "handling=lenient")
        .send()
        .await
        .unwrap();
    assert_eq!(lenient.status(), 200);
    expect_outcome(s.get("Patient/none/_history").await, 404).await;
}

async fn ids_time(s: &Server, id: &str) -> String {
    let p: Value = s.get(&format!("Patient/{id}")).await.json().await.unwrap();
    p["meta"]["lastUpdated"].as_str().unwrap().to_string()
}

async fn xml_in_json_out_and_back(s: &Server) {
    let div = "<div xmlns=\"http://www.w3.org/1999/xhtml\">\n  <p>Peter  <b>James</b>   Chalmers</p>\n</div>";
    let xml = format!(
        "<Patient xmlns=\"http://hl7.org/fhir\"><text><status value=\"generated\"/>{div}</text>\
         <active value=\"true\"/><name><family value=\"Chalmers\"/><given value=\"Peter\"/></name>\
         <gender value=\"male\"/><birthDate value=\"1974-12-25\"/></Patient>"
    );
    let r = s
        .client
        .post(s.url("Patient"))
        .header("content-type", "application/fhir+xml")
        .body(xml)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let id = header(&r, "location")
        .split('/')
        .rev()
        .nth(2)
        .unwrap()
        .to_string();
    let json: Value = s.get(&format!("Patient/{id}")).await.json().await.unwrap();
    assert_eq!(json["text"]["div"], div, "narrative whitespace kept");
    assert_eq!(json["active"], true);
    assert_eq!(json["name"][0]["given"][0], "Peter");

    let r = s
        .client
        .get(s.url(&format!("Patient/{id}")))
        .header("accept", "application/fhir+xml")
        .send()
        .await
        .unwrap();
    assert!(header(&r, "content-type").starts_with("application/fhir+xml"));
    let back = r.text().await.unwrap();
    assert!(back.contains(div), "{back}");
    // The XML read back, sent again, stores the same resource.
    let mut again = json.clone();
    let r = s
        .client
        .put(s.url(&format!("Patient/{id}")))
        .header("content-type", "application/fhir+xml")
        .body(back)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v2: Value = r.json().await.unwrap();
    again["meta"] = v2["meta"].clone();
    assert_eq!(v2, again);
    let r = s.get(&format!("Patient/{id}?_format=xml")).await;
    assert!(header(&r, "content-type").starts_with("application/fhir+xml"));
    let pretty = s
        .get(&format!("Patient/{id}?_pretty=true"))
        .await
        .text()
        .await
        .unwrap();
    assert!(pretty.contains("\n  \"resourceType\""));
}

async fn negotiation_errors(s: &Server) {
    let created = s.create(&patient()).await;
    let path = format!("Patient/{}", created["id"].as_str().unwrap());
    let r = s
        .client
        .get(s.url(&path))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    expect_outcome(r, 406).await;
    expect_outcome(s.get(&format!("{path}?_format=html")).await, 406).await;
    let r = s
        .client
        .get(s.url(&path))
        .header("accept", "application/fhir+json; fhirVersion=3.0")
        .send()
        .await
        .unwrap();
    expect_outcome(r, 406).await;
    let post = |ct: &'static str| {
        s.client
            .post(s.url("Patient"))
            .header("content-type", ct)
            .body(patient().to_string())
            .send()
    };
    expect_outcome(post("text/plain").await.unwrap(), 415).await;
    expect_outcome(
        post("application/x-www-form-urlencoded").await.unwrap(),
        415,
    )
    .await;
    expect_outcome(
        post("application/fhir+json; fhirVersion=3.0")
            .await
            .unwrap(),
        415,
    )
    .await;
    expect_outcome(
        post("application/fhir+json; charset=latin1").await.unwrap(),
        415,
    )
    .await;
    assert_eq!(post("application/json").await.unwrap().status(), 201);
}

async fn invalid_resources_are_refused_and_nothing_written(s: &Server) {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"resourceType": "Patient", "gender": "banana"}),
            "Patient.gender",
        ),
        (
            json!({"resourceType": "Patient", "birthDate": "2021-02-30"}),
            "Patient.birthDate",
        ),
        (
            json!({"resourceType": "Patient", "birthDate": "1990-1-1"}),
            "Patient.birthDate",
        ),
        (
            json!({"resourceType": "Patient", "favouriteColour": "blue"}),
            "Patient",
        ),
        (
            json!({"resourceType": "Patient", "active": "yes"}),
            "Patient.active",
        ),
        (
            json!({"resourceType": "Patient", "name": [{"given": ["ok", 3]}]}),
            "Patient.name[0].given[1]",
        ),
        (
            json!({"resourceType": "Patient", "name": {"family": "not an array"}}),
            "Patient.name",
        ),
        // Empty arrays and objects are not FHIR JSON (and once crashed the typed parser).
        (
            json!({"resourceType": "Patient", "name": []}),
            "Patient.name",
        ),
        (
            json!({"resourceType": "Patient", "name": [{"given": []}]}),
            "Patient.name[0].given",
        ),
        (
            json!({"resourceType": "Patient", "maritalStatus": {}}),
            "Patient.maritalStatus",
        ),
        (
            json!({"resourceType": "Patient", "multipleBirthInteger": 1.5}),
            "Patient.multipleBirthInteger",
        ),
        (
            json!({"resourceType": "Patient", "deceasedBoolean": true, "deceasedDateTime": "2020"}),
            "Patient",
        ),
        (
            json!({"resourceType": "Patient", "text": {"status": "generated", "div": "<div>no namespace</div>"}}),
            "Patient.text.div",
        ),
        (
            json!({"resourceType": "Patient", "text": {"status": "generated",
            "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><script>alert(1)</script></div>"}}),
            "Patient.text.div",
        ),
        (
            json!({"resourceType": "Patient", "contained": [{"resourceType": "Practitioner", "gender": "x"}]}),
            "Patient.contained[0].gender",
        ),
    ];
    for (resource, expression) in cases {
        let r = s.post_json("Patient", &resource).await;
        let oo = expect_outcome(r, 400).await;
        let expressions: Vec<String> = oo["issue"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|i| i["expression"].as_array().cloned().unwrap_or_default())
            .map(|e| e.as_str().unwrap().to_string())
            .collect();
        assert!(
            expressions.iter().any(|e| e.starts_with(expression)),
            "{resource}: {oo}"
        );
    }
    // Observation without its mandatory status and code.
    expect_outcome(
        s.post_json("Observation", &json!({"resourceType": "Observation"}))
            .await,
        400,
    )
    .await;
    // Wrong resourceType for the URL, unknown types, ids that disagree.
    expect_outcome(
        s.post_json("Patient", &json!({"resourceType": "Practitioner"}))
            .await,
        400,
    )
    .await;
    expect_outcome(s.post_json("Patient", &json!({"name": []})).await, 400).await;
    expect_outcome(
        s.post_json("Banana", &json!({"resourceType": "Banana"}))
            .await,
        400,
    )
    .await;
    expect_outcome(
        s.put_json("Patient/a", &json!({"resourceType": "Patient", "id": "b"}))
            .await,
        400,
    )
    .await;
    expect_outcome(
        s.put_json("Patient/a", &json!({"resourceType": "Patient"}))
            .await,
        400,
    )
    .await;
    expect_outcome(
        s.put_json(
            "Patient/a",
            &json!({"resourceType": "Patient", "id": "a", "gender": 1}),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(s.version_count("Patient").await, 0, "nothing was written");
    assert_eq!(s.version_count("Observation").await, 0);
    assert_eq!(s.version_count("Practitioner").await, 0);
}

async fn malformed_bodies_are_refused(s: &Server) {
    let raw = |ct: &'static str, body: Vec<u8>| {
        s.client
            .post(s.url("Patient"))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let json_ct = "application/fhir+json";
    for body in [
        b"{\"resourceType\": \"Patient\",".to_vec(),
        b"not json".to_vec(),
        b"[1, 2]".to_vec(),
        b"".to_vec(),
        b"{\"resourceType\": \"Patient\", \"name\": [{\"family\": \"\xff\xfe\"}]}".to_vec(),
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
        format!(
            "{{\"resourceType\": \"Patient\", \"extension\": {}1{}}}",
            "[".repeat(500),
            "]".repeat(500)
        )
        .into_bytes(),
    ] {
        expect_outcome(raw(json_ct, body).await.unwrap(), 400).await;
    }
    let xml_ct = "application/fhir+xml";
    for body in [
        "<Patient xmlns=\"http://hl7.org/fhir\"><active value=\"true\"></Patient>".to_string(),
        "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><Patient xmlns=\"http://hl7.org/fhir\"><id value=\"&e;\"/></Patient>".to_string(),
        format!("<Patient xmlns=\"http://hl7.org/fhir\">{}{}</Patient>", "<extension>".repeat(10_000), "</extension>".repeat(10_000)),
        "<Patient xmlns=\"http://hl7.org/fhir\"><unknownElement value=\"1\"/></Patient>".to_string(),
        "<Patient xmlns=\"http://hl7.org/fhir\"><gender value=\"banana\"/></Patient>".to_string(),
    ] {
        expect_outcome(raw(xml_ct, body.into_bytes()).await.unwrap(), 400).await;
    }
    // Over the 16 MiB default limit: 413, whether or not the length is declared up front.
    let big = format!(
        "{{\"resourceType\": \"Patient\", \"id\": \"{}\"}}",
        "x".repeat(17 * 1024 * 1024)
    );
    // A declared length over the limit is refused before the body is read.
    let head = format!(
        "POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: {json_ct}\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(s.root.trim_start_matches("http://"))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, head.as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::io::AsyncReadExt::read(&mut tcp, &mut answer)
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("OperationOutcome"), "{answer}");
    let stream = futures::stream::iter(
        big.into_bytes()
            .chunks(1 << 20)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    // The server answers 413 as soon as the limit is crossed and closes the connection; a
    // client still writing may see that answer or a broken pipe, depending on timing.
    match s
        .client
        .post(s.url("Patient"))
        .header("content-type", json_ct)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
    {
        Ok(r) => {
            assert_eq!(r.headers()["connection"], "close");
            expect_outcome(r, 413).await;
        }
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    assert_eq!(s.version_count("Patient").await, 0, "nothing was written");
}

async fn url_errors(s: &Server) {
    expect_outcome(s.get("Banana/1").await, 400).await;
    expect_outcome(s.get("Patient/not_valid!").await, 400).await;
    expect_outcome(s.get(&format!("Patient/{}", "a".repeat(65))).await, 400).await;
    expect_outcome(s.get("Patient/missing").await, 404).await;
    expect_outcome(s.get("Patient/1/2/3/4/5").await, 404).await;
    let r = s
        .client
        .request(reqwest::Method::OPTIONS, s.url("Patient/1"))
        .send()
        .await
        .unwrap();
    expect_outcome(r, 405).await;
    // An unknown search parameter is refused, not silently dropped.
    expect_outcome(s.get("Patient?nonsense=x").await, 400).await;
}

async fn capability_statement(s: &Server) {
    let r = s.get("metadata").await;
    assert_eq!(r.status(), 200);
    let cs: Value = r.json().await.unwrap();
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    assert_eq!(cs["kind"], "instance");
    let resources = cs["rest"][0]["resource"].as_array().unwrap();
    assert_eq!(resources.len(), 146);
    let patient = resources.iter().find(|r| r["type"] == "Patient").unwrap();
    let interactions: Vec<_> = patient["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    assert!(interactions.contains(&"read") && interactions.contains(&"history-instance"));
    assert!(interactions.contains(&"search-type") && interactions.contains(&"patch"));
    let system: Vec<_> = cs["rest"][0]["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    for code in ["transaction", "batch", "history-system", "search-system"] {
        assert!(system.contains(&code), "{code}");
    }
    let params: Vec<_> = patient["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(params.contains(&"name") && params.contains(&"birthdate") && params.contains(&"_id"));
    assert!(
        !params.contains(&"_text"),
        "full-text search is not implemented, so not claimed"
    );
    // The statement is itself a valid resource: the server accepts it.
    assert_eq!(s.post_json("CapabilityStatement", &cs).await.status(), 201);
    let xml = s.get("metadata?_format=xml").await.text().await.unwrap();
    assert!(xml.contains("<fhirVersion value=\"4.0.1\"/>"));
}

async fn operations_endpoints(s: &Server) {
    let get = |p: &str| s.client.get(format!("{}{p}", s.root)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let r = s
        .client
        .get(s.url("metadata"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-request-id"), "trace-me-123");
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .contains("hearth_http_requests_total{interaction=\"capabilities\",status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hearth_http_request_duration_seconds_bucket{interaction=\"operations\"")
    );
}
