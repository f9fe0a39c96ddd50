//! FHIR search over HTTP, on both backends. <https://hl7.org/fhir/R4/search.html>
//!
//! Each scenario stores a small, known set of resources and checks exactly which ones a
//! search returns: the right ones, no others.

mod common;

use std::collections::BTreeSet;

use common::{expect_outcome, Server};
use serde_json::{json, Value};

on_both_backends!(
    string_parameters,
    token_parameters,
    date_parameters,
    quantity_and_number_parameters,
    reference_parameters_chains_and_has,
    include_and_revinclude,
    paging_and_sorting,
    summary_elements_and_count,
    writes_keep_the_index_current,
    compartment_and_post_search,
    uri_parameters,
    bad_search_input,
    conditional_interactions,
    injection_like_values_are_just_values,
    common_parameters,
    custom_search_parameters,
    composite_parameters,
    system_search,
);

/// Runs a search and returns the bundle, asserting 200.
async fn search(s: &Server, query: &str) -> Value {
    let r = s.get(query).await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "GET {query}: {body}");
    assert_eq!(body["resourceType"], "Bundle");
    assert_eq!(body["type"], "searchset");
    body
}

/// The ids of the `match` entries of a search.
async fn ids(s: &Server, query: &str) -> BTreeSet<String> {
    let bundle = search(s, query).await;
    matches(&bundle)
}

fn matches(bundle: &Value) -> BTreeSet<String> {
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["search"]["mode"] == "match")
                .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

async fn put(s: &Server, resource: Value) {
    let path = format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap(),
        resource["id"].as_str().unwrap()
    );
    let r = s.put_json(&path, &resource).await;
    assert!(
        r.status().is_success(),
        "PUT {path}: {}",
        r.text().await.unwrap()
    );
}

async fn patients(s: &Server) {
    put(
        s,
        json!({"resourceType": "Patient", "id": "anna", "active": true, "gender": "female",
        "birthDate": "1980-05-17", "name": [{"family": "Müller", "given": ["Anna", "Lena"]}],
        "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}],
        "telecom": [{"system": "email", "value": "anna@example.org"}],
        "address": [{"city": "Zürich", "postalCode": "8000"}]}),
    )
    .await;
    put(
        s,
        json!({"resourceType": "Patient", "id": "bob", "active": false, "gender": "male",
        "birthDate": "1975", "name": [{"family": "Mullins", "given": ["Bob"]}],
        "identifier": [{"system": "urn:other", "value": "12345"}, {"value": "no-system"}]}),
    )
    .await;
    put(
        s,
        json!({"resourceType": "Patient", "id": "chloe", "gender": "female",
        "birthDate": "2001-01-01", "name": [{"family": "Smith", "given": ["Chloé"]}]}),
    )
    .await;
}

async fn string_parameters(s: &Server) {
    patients(s).await;
    // Default: case- and accent-insensitive prefix match on any part of the name.
    assert_eq!(ids(s, "Patient?name=mul").await, set(&["anna", "bob"]));
    assert_eq!(ids(s, "Patient?name=MUELLER").await, set(&[]));
    assert_eq!(ids(s, "Patient?family=muller").await, set(&["anna"]));
    assert_eq!(ids(s, "Patient?given=chloe").await, set(&["chloe"]));
    assert_eq!(ids(s, "Patient?name=lena").await, set(&["anna"]));
    // :exact is case- and accent-sensitive and whole-value.
    assert_eq!(ids(s, "Patient?family:exact=Müller").await, set(&["anna"]));
    assert_eq!(ids(s, "Patient?family:exact=muller").await, set(&[]));
    assert_eq!(ids(s, "Patient?family:exact=Mül").await, set(&[]));
    // :contains anywhere in the value.
    assert_eq!(ids(s, "Patient?family:contains=LLI").await, set(&["bob"]));
    // OR with commas, AND with repetition.
    assert_eq!(
        ids(s, "Patient?family=smith,mullins").await,
        set(&["bob", "chloe"])
    );
    assert_eq!(
        ids(s, "Patient?name=mul&gender=female").await,
        set(&["anna"])
    );
    assert_eq!(ids(s, "Patient?address-city=zurich").await, set(&["anna"]));
    // LIKE metacharacters are literal.
    assert_eq!(ids(s, "Patient?family:contains=%25").await, set(&[]));
    assert_eq!(ids(s, "Patient?family:contains=_").await, set(&[]));
}

async fn token_parameters(s: &Server) {
    patients(s).await;
    assert_eq!(
        ids(s, "Patient?gender=female").await,
        set(&["anna", "chloe"])
    );
    assert_eq!(ids(s, "Patient?gender:not=female").await, set(&["bob"]));
    assert_eq!(ids(s, "Patient?active=true").await, set(&["anna"]));
    assert_eq!(
        ids(s, "Patient?identifier=12345").await,
        set(&["anna", "bob"])
    );
    assert_eq!(
        ids(s, "Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|12345").await,
        set(&["anna"])
    );
    assert_eq!(ids(s, "Patient?identifier=urn:other|").await, set(&["bob"]));
    assert_eq!(ids(s, "Patient?identifier=|no-system").await, set(&["bob"]));
    assert_eq!(ids(s, "Patient?identifier=|12345").await, set(&[]));
    assert_eq!(
        ids(s, "Patient?email=anna@example.org").await,
        set(&["anna"])
    );
    put(
        s,
        json!({"resourceType": "Patient", "id": "typed", "identifier": [{"type": {"coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
        "system": "urn:hospital", "value": "777"}]}),
    )
    .await;
    assert_eq!(
        ids(
            s,
            "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|777"
        )
        .await,
        set(&["typed"])
    );
    assert_eq!(
        ids(s, "Patient?identifier:of-type=|MR|777").await,
        set(&["typed"])
    );
    assert_eq!(ids(s, "Patient?identifier:of-type=|SS|777").await, set(&[]));
    expect_outcome(s.get("Patient?identifier:of-type=MR|777").await, 400).await;
    assert_eq!(
        ids(s, "Patient?_id=anna,chloe").await,
        set(&["anna", "chloe"])
    );
    assert_eq!(ids(s, "Patient?_id=nobody").await, set(&[]));

    put(s, json!({"resourceType": "Observation", "id": "hr", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}],
                 "text": "Pulse"}})).await;
    put(
        s,
        json!({"resourceType": "Observation", "id": "bp", "status": "amended",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]}}),
    )
    .await;
    assert_eq!(
        ids(s, "Observation?code=http://loinc.org|8867-4").await,
        set(&["hr"])
    );
    assert_eq!(
        ids(s, "Observation?code=http://snomed.info/sct|8867-4").await,
        set(&[])
    );
    assert_eq!(ids(s, "Observation?code:text=heart").await, set(&["hr"]));
    assert_eq!(ids(s, "Observation?code:text=pulse").await, set(&["hr"]));
    assert_eq!(
        ids(s, "Observation?status=final,amended").await,
        set(&["hr", "bp"])
    );
    assert_eq!(ids(s, "Observation?code:not=8867-4").await, set(&["bp"]));
}

async fn date_parameters(s: &Server) {
    patients(s).await;
    // A date searches as the range its precision implies.
    assert_eq!(ids(s, "Patient?birthdate=1980").await, set(&["anna"]));
    assert_eq!(ids(s, "Patient?birthdate=1980-05").await, set(&["anna"]));
    assert_eq!(ids(s, "Patient?birthdate=1980-05-17").await, set(&["anna"]));
    assert_eq!(ids(s, "Patient?birthdate=1980-05-18").await, set(&[]));
    // bob's 1975 is a whole year: not inside 1975-06.
    assert_eq!(ids(s, "Patient?birthdate=1975-06").await, set(&[]));
    assert_eq!(ids(s, "Patient?birthdate=lt1980").await, set(&["bob"]));
    assert_eq!(ids(s, "Patient?birthdate=gt1980").await, set(&["chloe"]));
    assert_eq!(
        ids(s, "Patient?birthdate=ge1980").await,
        set(&["anna", "chloe"])
    );
    assert_eq!(
        ids(s, "Patient?birthdate=le1980-05-17").await,
        set(&["anna", "bob"])
    );
    assert_eq!(ids(s, "Patient?birthdate=sa1990").await, set(&["chloe"]));
    assert_eq!(ids(s, "Patient?birthdate=eb1976").await, set(&["bob"]));
    assert_eq!(
        ids(s, "Patient?birthdate=ne1980").await,
        set(&["bob", "chloe"])
    );
    assert_eq!(
        ids(s, "Patient?birthdate=ge1979&birthdate=lt2000").await,
        set(&["anna"])
    );
    put(s, json!({"resourceType": "Observation", "id": "timed", "status": "final", "code": {"text": "x"},
        "effectiveDateTime": "2001-01-01T10:00:00Z"})).await;
    assert_eq!(
        ids(s, "Observation?date=2001-01-01T10:00:00Z").await,
        set(&["timed"])
    );
    assert_eq!(
        ids(s, "Observation?date=2001-01-01T12:00:00%2B02:00").await,
        set(&["timed"]),
        "time zones are normalised"
    );
    assert_eq!(
        ids(s, "Observation?date=2001-01-01T10:00Z").await,
        set(&["timed"]),
        "minutes precision"
    );
    assert_eq!(
        ids(s, "Observation?date=gt2001-01-01T10:00:00Z").await,
        set(&[])
    );
    // Periods: an open end reaches into the future.
    put(
        s,
        json!({"resourceType": "Encounter", "id": "stay", "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "period": {"start": "2024-03-01T08:00:00Z"}}),
    )
    .await;
    assert_eq!(ids(s, "Encounter?date=gt2030").await, set(&["stay"]));
    assert_eq!(ids(s, "Encounter?date=lt2024-02").await, set(&[]));
    assert_eq!(
        ids(s, "Encounter?date=2024-03").await,
        set(&[]),
        "not contained in March"
    );
}

async fn quantity_and_number_parameters(s: &Server) {
    for (id, v) in [("q1", 4.9), ("q2", 5.0), ("q3", 5.4), ("q4", 100.0)] {
        put(s, json!({"resourceType": "Observation", "id": id, "status": "final",
            "code": {"text": "glucose"},
            "valueQuantity": {"value": v, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}})).await;
    }
    // `5` means [4.5, 5.5); `5.0` means [4.95, 5.05).
    assert_eq!(
        ids(s, "Observation?value-quantity=5").await,
        set(&["q1", "q2", "q3"])
    );
    assert_eq!(ids(s, "Observation?value-quantity=5.0").await, set(&["q2"]));
    assert_eq!(
        ids(s, "Observation?value-quantity=gt5").await,
        set(&["q3", "q4"])
    );
    assert_eq!(
        ids(s, "Observation?value-quantity=le5").await,
        set(&["q1", "q2"])
    );
    assert_eq!(
        ids(
            s,
            "Observation?value-quantity=5.4|http://unitsofmeasure.org|mmol/L"
        )
        .await,
        set(&["q3"])
    );
    assert_eq!(
        ids(s, "Observation?value-quantity=5.4||mmol/L").await,
        set(&["q3"])
    );
    assert_eq!(ids(s, "Observation?value-quantity=5.4||mg").await, set(&[]));
    assert_eq!(
        ids(s, "Observation?value-quantity=ap100").await,
        set(&["q4"])
    );
    assert_eq!(ids(s, "Observation?value-quantity=1e2").await, set(&["q4"]));

    put(
        s,
        json!({"resourceType": "RiskAssessment", "id": "r1", "status": "final",
        "subject": {"reference": "Patient/x"}, "prediction": [{"probabilityDecimal": 0.25}]}),
    )
    .await;
    assert_eq!(
        ids(s, "RiskAssessment?probability=0.25").await,
        set(&["r1"])
    );
    assert_eq!(ids(s, "RiskAssessment?probability=gt0.3").await, set(&[]));
    assert_eq!(
        ids(s, "RiskAssessment?probability=lt0.3").await,
        set(&["r1"])
    );
}

async fn observations_for_anna_and_bob(s: &Server) {
    patients(s).await;
    put(
        s,
        json!({"resourceType": "Practitioner", "id": "drwho", "name": [{"family": "Who"}]}),
    )
    .await;
    put(
        s,
        json!({"resourceType": "Observation", "id": "o-anna", "status": "final",
        "code": {"text": "x"}, "subject": {"reference": "Patient/anna"},
        "performer": [{"reference": "Practitioner/drwho"}]}),
    )
    .await;
    put(
        s,
        json!({"resourceType": "Observation", "id": "o-bob", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]},
        "subject": {"reference": format!("{}/Patient/bob", s.base)}}),
    )
    .await;
    put(
        s,
        json!({"resourceType": "Observation", "id": "o-ident", "status": "final",
        "code": {"text": "x"},
        "subject": {"identifier": {"system": "urn:mrn", "value": "M-1"}}}),
    )
    .await;
}

async fn reference_parameters_chains_and_has(s: &Server) {
    observations_for_anna_and_bob(s).await;
    assert_eq!(
        ids(s, "Observation?subject=Patient/anna").await,
        set(&["o-anna"])
    );
    assert_eq!(
        ids(s, "Observation?subject:Patient=anna").await,
        set(&["o-anna"])
    );
    assert_eq!(ids(s, "Observation?patient=anna").await, set(&["o-anna"]));
    // An absolute reference to this server is the same as a relative one.
    assert_eq!(
        ids(s, "Observation?subject=Patient/bob").await,
        set(&["o-bob"])
    );
    assert_eq!(
        ids(s, &format!("Observation?subject={}/Patient/bob", s.base)).await,
        set(&["o-bob"])
    );
    assert_eq!(
        ids(s, "Observation?subject:identifier=urn:mrn|M-1").await,
        set(&["o-ident"])
    );
    assert_eq!(ids(s, "Observation?subject:missing=true").await, set(&[]));
    assert_eq!(
        ids(s, "Observation?performer:missing=true").await,
        set(&["o-bob", "o-ident"])
    );
    assert_eq!(
        ids(s, "Observation?performer:missing=false").await,
        set(&["o-anna"])
    );
    // Chaining, with and without the type.
    assert_eq!(
        ids(s, "Observation?subject:Patient.name=anna").await,
        set(&["o-anna"])
    );
    assert_eq!(
        ids(s, "Observation?patient.gender=male").await,
        set(&["o-bob"])
    );
    assert_eq!(
        ids(
            s,
            "Observation?subject:Patient.birthdate=lt1990&performer.family=who"
        )
        .await,
        set(&["o-anna"])
    );
    // Reverse chaining.
    assert_eq!(
        ids(s, "Patient?_has:Observation:subject:code=1234-5").await,
        set(&["bob"])
    );
    assert_eq!(
        ids(
            s,
            "Patient?_has:Observation:patient:performer=Practitioner/drwho"
        )
        .await,
        set(&["anna"])
    );
    assert_eq!(
        ids(
            s,
            "Practitioner?_has:Observation:performer:subject.name=anna"
        )
        .await,
        set(&["drwho"])
    );
}

async fn include_and_revinclude(s: &Server) {
    observations_for_anna_and_bob(s).await;
    put(
        s,
        json!({"resourceType": "Organization", "id": "clinic", "name": "Clinic"}),
    )
    .await;
    put(s, json!({"resourceType": "PractitionerRole", "id": "role", "practitioner": {"reference": "Practitioner/drwho"},
        "organization": {"reference": "Organization/clinic"}})).await;

    let modes = |b: &Value| -> BTreeSet<String> {
        b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{}:{}/{}",
                    e["search"]["mode"].as_str().unwrap(),
                    e["resource"]["resourceType"].as_str().unwrap(),
                    e["resource"]["id"].as_str().unwrap()
                )
            })
            .collect()
    };
    let b = search(
        s,
        "Observation?_id=o-anna&_include=Observation:subject&_include=Observation:performer",
    )
    .await;
    assert_eq!(
        modes(&b),
        set(&[
            "match:Observation/o-anna",
            "include:Patient/anna",
            "include:Practitioner/drwho"
        ])
    );
    assert_eq!(b["total"], 1, "includes do not count in the total");
    let b = search(
        s,
        "Observation?_id=o-anna&_include=Observation:subject:Practitioner",
    )
    .await;
    assert_eq!(modes(&b), set(&["match:Observation/o-anna"]));
    let b = search(s, "Patient?_id=anna,chloe&_revinclude=Observation:subject").await;
    assert_eq!(
        modes(&b),
        set(&[
            "match:Patient/anna",
            "match:Patient/chloe",
            "include:Observation/o-anna"
        ])
    );
    // :iterate follows includes of included resources.
    let b = search(s, "Observation?_id=o-anna&_include=Observation:performer&_revinclude:iterate=PractitionerRole:practitioner&_include:iterate=PractitionerRole:organization").await;
    assert_eq!(
        modes(&b),
        set(&[
            "match:Observation/o-anna",
            "include:Practitioner/drwho",
            "include:PractitionerRole/role",
            "include:Organization/clinic"
        ])
    );
    let b = search(s, "Observation?_id=o-anna&_include=*").await;
    assert_eq!(
        modes(&b),
        set(&[
            "match:Observation/o-anna",
            "include:Patient/anna",
            "include:Practitioner/drwho"
        ])
    );
}

async fn paging_and_sorting(s: &Server) {
    // 25 patients; every other one without a birth date, some sharing one.
    for n in 0..25 {
        let mut p = json!({"resourceType": "Patient", "id": format!("p{n:02}"),
            "name": [{"family": format!("Fam{}", n % 7)}]});
        if n % 2 == 0 {
            p["birthDate"] = json!(format!("19{:02}-01-01", 50 + n % 5));
        }
        put(s, p).await;
    }
    // Follow next links to the end: every patient exactly once.
    let mut seen = Vec::new();
    let mut url = s.url("Patient?_count=10&_sort=-birthdate,family");
    let mut pages = 0;
    let mut previous_key: Option<(Option<String>, String)> = None;
    loop {
        let r = s.client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let b: Value = r.json().await.unwrap();
        pages += 1;
        for e in b["entry"].as_array().unwrap() {
            let id = e["resource"]["id"].as_str().unwrap().to_string();
            let birth = e["resource"]["birthDate"].as_str().map(str::to_string);
            // Descending birth date, missing ones last.
            if let Some((prev_birth, _)) = &previous_key {
                match (prev_birth, &birth) {
                    (Some(a), Some(b)) => assert!(a >= b, "{a} before {b}"),
                    (None, Some(_)) => panic!("a missing birth date sorted before a present one"),
                    _ => {}
                }
            }
            previous_key = Some((birth, id.clone()));
            seen.push(id);
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
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 25);
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>().len(),
        25,
        "no duplicates"
    );

    // Ascending sort by family then id-stable.
    let b = search(s, "Patient?_sort=family,_id&_count=100").await;
    let families: Vec<String> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["resource"]["name"][0]["family"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut sorted = families.clone();
    sorted.sort();
    assert_eq!(families, sorted);
    assert_eq!(b["total"], 25);

    // _total=accurate on a partial page; no total by default when more pages follow.
    let b = search(s, "Patient?_count=5&_total=accurate").await;
    assert_eq!(b["total"], 25);
    assert_eq!(b["entry"].as_array().unwrap().len(), 5);
    let b = search(s, "Patient?_count=5").await;
    assert!(b.get("total").is_none());
    // A page written while paging does not disturb pages already cursored.
    let b = search(s, "Patient?_count=24&_sort=_id").await;
    let next = b["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    put(s, json!({"resourceType": "Patient", "id": "p00a"})).await;
    let last: Value = s
        .client
        .get(&next)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(matches(&last), set(&["p24"]));
}

async fn summary_elements_and_count(s: &Server) {
    patients(s).await;
    let b = search(s, "Patient?_summary=count").await;
    assert_eq!(b["total"], 3);
    assert!(b.get("entry").is_none());
    let b = search(s, "Patient?_id=anna&_elements=gender").await;
    let p = &b["entry"][0]["resource"];
    assert_eq!(p["gender"], "female");
    assert!(p.get("name").is_none() && p.get("birthDate").is_none());
    assert_eq!(p["meta"]["tag"][0]["code"], "SUBSETTED");
    let b = search(s, "Patient?_id=anna&_summary=true").await;
    let p = &b["entry"][0]["resource"];
    assert!(p.get("name").is_some() && p.get("address").is_some());
    assert_eq!(p["meta"]["tag"][0]["code"], "SUBSETTED");
    // A subsetted read of the resource does not change it.
    let full: Value = s.get("Patient/anna").await.json().await.unwrap();
    assert!(full["meta"].get("tag").is_none());
    // XML renders search results too.
    let r = s.get("Patient?_id=anna&_format=xml").await;
    assert_eq!(r.status(), 200);
    let xml = r.text().await.unwrap();
    assert!(xml.contains("<type value=\"searchset\"/>") && xml.contains("<Patient"));
}

async fn writes_keep_the_index_current(s: &Server) {
    patients(s).await;
    assert_eq!(ids(s, "Patient?family=smith").await, set(&["chloe"]));
    put(
        s,
        json!({"resourceType": "Patient", "id": "chloe", "gender": "female",
        "name": [{"family": "Jones"}]}),
    )
    .await;
    assert_eq!(ids(s, "Patient?family=smith").await, set(&[]));
    assert_eq!(ids(s, "Patient?family=jones").await, set(&["chloe"]));
    assert_eq!(
        ids(s, "Patient?birthdate=2001").await,
        set(&[]),
        "old values are gone"
    );
    let r = s.delete("Patient/chloe").await;
    assert_eq!(r.status(), 204);
    assert_eq!(ids(s, "Patient?family=jones").await, set(&[]));
    assert_eq!(ids(s, "Patient?gender=female").await, set(&["anna"]));
    let b = search(s, "Patient?_summary=count").await;
    assert_eq!(b["total"], 2, "deleted resources are not counted");
    // Create and read back through search at once: the index is written with the resource.
    let created = s
        .create(&json!({"resourceType": "Patient", "name": [{"family": "Instant"}]}))
        .await;
    assert_eq!(
        ids(s, "Patient?family=instant").await,
        set(&[created["id"].as_str().unwrap()])
    );
}

async fn compartment_and_post_search(s: &Server) {
    observations_for_anna_and_bob(s).await;
    assert_eq!(ids(s, "Patient/anna/Observation").await, set(&["o-anna"]));
    assert_eq!(
        ids(s, "Patient/bob/Observation?code=1234-5").await,
        set(&["o-bob"])
    );
    assert_eq!(ids(s, "Patient/bob/Observation?code=other").await, set(&[]));
    assert_eq!(
        ids(s, "Practitioner/drwho/Observation").await,
        set(&["o-anna"])
    );
    expect_outcome(s.get("Patient/anna/Banana").await, 400).await;
    expect_outcome(s.get("Observation/o-anna/Patient").await, 404).await;

    let r = s
        .client
        .post(s.url("Observation/_search?status=final"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("subject=Patient%2Fanna")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(matches(&b), set(&["o-anna"]));
    let r = s
        .client
        .post(s.url("Observation/_search"))
        .header("content-type", "application/fhir+json")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_outcome(r, 415).await;
}

async fn uri_parameters(s: &Server) {
    for (id, url) in [
        ("vs1", "http://example.org/fhir/ValueSet/a"),
        ("vs2", "http://example.org/fhir/ValueSet/a/b"),
        ("vs3", "http://other.org/vs"),
    ] {
        put(
            s,
            json!({"resourceType": "ValueSet", "id": id, "status": "active", "url": url}),
        )
        .await;
    }
    assert_eq!(
        ids(s, "ValueSet?url=http://example.org/fhir/ValueSet/a").await,
        set(&["vs1"])
    );
    assert_eq!(
        ids(s, "ValueSet?url:below=http://example.org/fhir").await,
        set(&["vs1", "vs2"])
    );
    assert_eq!(
        ids(
            s,
            "ValueSet?url:above=http://example.org/fhir/ValueSet/a/b/c"
        )
        .await,
        set(&["vs1", "vs2"])
    );
}

async fn bad_search_input(s: &Server) {
    patients(s).await;
    for (query, needle) in [
        ("Patient?nonsense=1", "nonsense"),
        ("Patient?birthdate=yesterday", "birthdate"),
        ("Patient?birthdate=2024-02-30", "birthdate"),
        ("Patient?gender:exact=male", "gender"),
        ("Patient?name:below=x", "name"),
        ("Patient?_count=many", "_count"),
        ("Patient?_sort=nonsense", "nonsense"),
        ("Patient?_summary=maybe", "_summary"),
        ("Patient?_include=Patient:name", "_include"),
        ("Patient?_total=exactly", "_total"),
        (
            "Patient?general-practitioner=Observation/1",
            "general-practitioner",
        ),
        ("Patient?_cursor=forged", "_cursor"),
        ("Patient?_text=anything", "_text"),
        ("Patient?identifier=a|b|c", "identifier"),
        ("Observation?value-quantity=five", "value-quantity"),
        ("Patient?_has:Observation:code:code=x", "_has"),
    ] {
        let oo = expect_outcome(s.get(query).await, 400).await;
        let text = oo.to_string();
        assert!(
            text.contains(needle),
            "{query}: the outcome names {needle}: {text}"
        );
    }
    // Lenient handling ignores unknown parameters and says so in the bundle.
    let r = s
        .client
        .get(s.url("Patient?nonsense=1&gender=male"))
        .header("prefer", "handling=lenient")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(matches(&b), set(&["bob"]));
    let outcome = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .unwrap();
    assert!(outcome["resource"].to_string().contains("nonsense"));
    assert!(
        !b["link"][0]["url"].as_str().unwrap().contains("nonsense"),
        "self link shows what was applied"
    );
    // Searching an unknown type.
    expect_outcome(s.get("Banana?name=x").await, 400).await;
}

async fn post_if_none_exist(s: &Server, body: &Value, criteria: &str) -> reqwest::Response {
    s.client
        .post(s.url(body["resourceType"].as_str().unwrap()))
        .header("content-type", "application/fhir+json")
        .header("if-none-exist", criteria)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn conditional_interactions(s: &Server) {
    let mrn = |v: &str| json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": v}], "gender": "other"});
    // Conditional create: the first creates, the second finds it.
    let r = post_if_none_exist(s, &mrn("1"), "identifier=urn:mrn|1").await;
    assert_eq!(r.status(), 201);
    let first: Value = r.json().await.unwrap();
    let r = post_if_none_exist(s, &mrn("1"), "identifier=urn:mrn|1").await;
    assert_eq!(r.status(), 200);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(
        s.version_count("Patient").await,
        1,
        "nothing written the second time"
    );
    // Racing conditional creates make one resource.
    let race = mrn("race");
    let racers = (0..8).map(|_| post_if_none_exist(s, &race, "identifier=urn:mrn|race"));
    let statuses: Vec<u16> = futures::future::join_all(racers)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(ids(s, "Patient?identifier=urn:mrn|race").await.len(), 1);
    // Several matches: 412, nothing written.
    let r = post_if_none_exist(s, &mrn("2"), "gender=other").await;
    expect_outcome(r, 412).await;
    assert_eq!(ids(s, "Patient?identifier=urn:mrn|2").await.len(), 0);
    // Bad criteria are refused even when the client asks for lenient handling.
    let r = s
        .client
        .post(s.url("Patient"))
        .header("content-type", "application/fhir+json")
        .header("if-none-exist", "nonsense=1")
        .header("prefer", "handling=lenient")
        .body(mrn("3").to_string())
        .send()
        .await
        .unwrap();
    expect_outcome(r, 400).await;

    // Conditional update: one match is updated in place.
    let id = first["id"].as_str().unwrap();
    let mut changed = mrn("1");
    changed["gender"] = json!("female");
    let r = s.put_json("Patient?identifier=urn:mrn|1", &changed).await;
    assert_eq!(r.status(), 200);
    let updated: Value = r.json().await.unwrap();
    assert_eq!(updated["id"], id);
    assert_eq!(updated["meta"]["versionId"], "2");
    // No match and no id: created.
    let r = s
        .put_json("Patient?identifier=urn:mrn|new", &mrn("new"))
        .await;
    assert_eq!(r.status(), 201);
    // One match, a different id in the body: 400.
    let mut wrong = mrn("1");
    wrong["id"] = json!("someone-else");
    expect_outcome(
        s.put_json("Patient?identifier=urn:mrn|1", &wrong).await,
        400,
    )
    .await;
    // Several matches: 412.
    expect_outcome(s.put_json("Patient?gender=other", &mrn("x")).await, 412).await;
    // No criteria at all.
    expect_outcome(s.put_json("Patient", &mrn("x")).await, 400).await;

    // Conditional delete removes every match.
    let before = ids(s, "Patient?gender=other").await;
    assert!(before.len() >= 2);
    let r = s.delete("Patient?gender=other").await;
    assert_eq!(r.status(), 204);
    assert_eq!(ids(s, "Patient?gender=other").await, set(&[]));
    assert_eq!(
        ids(s, "Patient?gender=female").await,
        set(&[id]),
        "others untouched"
    );
    let r = s.delete("Patient?identifier=urn:mrn|nobody").await;
    assert_eq!(r.status(), 204);
    let r = s.delete("Patient?nonsense=1").await;
    expect_outcome(r, 400).await;
}

async fn injection_like_values_are_just_values(s: &Server) {
    patients(s).await;
    put(
        s,
        json!({"resourceType": "Patient", "id": "quote", "name": [{"family": "O'Brien"}]}),
    )
    .await;
    for value in [
        "' OR 1=1 --",
        "%",
        "_",
        "\\",
        "x') OR ('1'='1",
        "; DROP TABLE resource; --",
    ] {
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("family", value)
            .finish();
        assert_eq!(ids(s, &format!("Patient?{q}")).await, set(&[]), "{value}");
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("family:contains", value)
            .finish();
        assert_eq!(ids(s, &format!("Patient?{q}")).await, set(&[]), "{value}");
    }
    assert_eq!(ids(s, "Patient?family=o'b").await, set(&["quote"]));
    assert_eq!(
        ids(s, "Patient?family:exact=O'Brien").await,
        set(&["quote"])
    );
    assert_eq!(ids(s, "Patient?_summary=count").await.len(), 0);
    assert_eq!(
        search(s, "Patient?_summary=count").await["total"],
        4,
        "still all there"
    );
}

async fn common_parameters(s: &Server) {
    put(s, json!({"resourceType": "Patient", "id": "tagged", "meta": {
        "tag": [{"system": "http://example.org/tags", "code": "vip"}],
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
        "profile": ["http://example.org/StructureDefinition/my-patient"],
        "source": "http://example.org/ehr#abc"}})).await;
    put(s, json!({"resourceType": "Patient", "id": "plain"})).await;
    assert_eq!(
        ids(s, "Patient?_tag=http://example.org/tags|vip").await,
        set(&["tagged"])
    );
    assert_eq!(ids(s, "Patient?_tag:not=vip").await, set(&["plain"]));
    assert_eq!(ids(s, "Patient?_security=R").await, set(&["tagged"]));
    assert_eq!(
        ids(
            s,
            "Patient?_profile=http://example.org/StructureDefinition/my-patient"
        )
        .await,
        set(&["tagged"])
    );
    assert_eq!(
        ids(s, "Patient?_source=http://example.org/ehr%23abc").await,
        set(&["tagged"])
    );
    let now = chrono::Utc::now();
    let hour_ago = (now - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ");
    assert_eq!(
        ids(s, &format!("Patient?_lastUpdated=gt{hour_ago}")).await,
        set(&["tagged", "plain"])
    );
    assert_eq!(
        ids(s, &format!("Patient?_lastUpdated=lt{hour_ago}")).await,
        set(&[])
    );
    assert_eq!(ids(s, "Patient?_id:not=plain").await, set(&["tagged"]));
}

async fn custom_search_parameters(s: &Server) {
    put(
        s,
        json!({"resourceType": "Patient", "id": "married", "maritalStatus": {"coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M"}]}}),
    )
    .await;
    // R4 has no marital-status parameter on Patient.
    expect_outcome(s.get("Patient?marital-status=M").await, 400).await;
    let sp = json!({"resourceType": "SearchParameter", "id": "patient-marital-status",
        "url": "http://example.org/SearchParameter/patient-marital-status",
        "name": "marital-status", "status": "active", "description": "Marital status",
        "code": "marital-status", "base": ["Patient"], "type": "token",
        "expression": "Patient.maritalStatus"});
    put(s, sp.clone()).await;
    // Existing resources are reindexed in the background: wait for it (not a timing test).
    let mut found = BTreeSet::new();
    for _ in 0..100 {
        let r = s.get("Patient?marital-status=M").await;
        if r.status() == 200 {
            found = matches(&r.json().await.unwrap());
            if !found.is_empty() {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(found, set(&["married"]));
    put(
        s,
        json!({"resourceType": "Patient", "id": "single", "maritalStatus": {"coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "S"}]}}),
    )
    .await;
    assert_eq!(ids(s, "Patient?marital-status=S").await, set(&["single"]));
    let cs: Value = s.get("metadata").await.json().await.unwrap();
    let patient = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Patient")
        .unwrap()
        .clone();
    assert!(patient["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "marital-status"));
    // A custom parameter cannot take over an official code.
    put(s, json!({"resourceType": "SearchParameter", "id": "hijack", "url": "http://example.org/SearchParameter/hijack",
        "name": "name", "status": "active", "description": "x", "code": "name", "base": ["Patient"],
        "type": "token", "expression": "Patient.gender"})).await;
    put(s, json!({"resourceType": "Patient", "id": "named", "gender": "male", "name": [{"family": "Gender"}]})).await;
    assert_eq!(ids(s, "Patient?name=gender").await, set(&["named"]));
    assert_eq!(ids(s, "Patient?name=male").await, set(&[]));
    // Deleting the parameter removes it.
    let r = s.delete("SearchParameter/patient-marital-status").await;
    assert_eq!(r.status(), 204);
    expect_outcome(s.get("Patient?marital-status=M").await, 400).await;
}

/// `--search-handling lenient` makes lenient the default; a client can still ask for strict.
/// (HTTP-layer behaviour: one backend is enough.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lenient_handling_as_server_default() {
    let Some(s) = Server::start_with(common::Backend::Sqlite, |c| {
        c.search_handling = hearth::config::Handling::Lenient
    })
    .await
    else {
        return;
    };
    patients(&s).await;
    let b = search(&s, "Patient?nonsense=1&gender=male").await;
    assert_eq!(matches(&b), set(&["bob"]));
    let r = s
        .client
        .get(s.url("Patient?nonsense=1"))
        .header("prefer", "handling=strict")
        .send()
        .await
        .unwrap();
    expect_outcome(r, 400).await;
}

async fn composite_parameters(s: &Server) {
    let loinc = |code: &str| json!({"coding": [{"system": "http://loinc.org", "code": code}]});
    let mmhg = |v: f64| json!({"value": v, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"});
    put(
        s,
        json!({"resourceType": "Observation", "id": "sys-high", "status": "final",
        "code": loinc("8480-6"), "valueQuantity": mmhg(150.0)}),
    )
    .await;
    put(
        s,
        json!({"resourceType": "Observation", "id": "sys-low", "status": "final",
        "code": loinc("8480-6"), "valueQuantity": mmhg(95.0)}),
    )
    .await;
    put(s, json!({"resourceType": "Observation", "id": "bp", "status": "final", "code": loinc("85354-9"),
        "component": [
            {"code": loinc("8480-6"), "valueQuantity": mmhg(120.0)},
            {"code": loinc("8462-4"), "valueQuantity": mmhg(80.0)}]})).await;
    put(s, json!({"resourceType": "Observation", "id": "smoker", "status": "final", "code": loinc("72166-2"),
        "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "449868002"}]}})).await;

    assert_eq!(
        ids(
            s,
            "Observation?code-value-quantity=http://loinc.org|8480-6$gt100"
        )
        .await,
        set(&["sys-high"])
    );
    assert_eq!(
        ids(s, "Observation?code-value-quantity=8480-6$lt100").await,
        set(&["sys-low"])
    );
    assert_eq!(
        ids(
            s,
            "Observation?code-value-quantity=8480-6$gt100,8480-6$lt100"
        )
        .await,
        set(&["sys-high", "sys-low"])
    );
    // Components pair up within one element: 120 belongs to systolic, not to diastolic.
    assert_eq!(
        ids(s, "Observation?component-code-value-quantity=8480-6$gt100").await,
        set(&["bp"])
    );
    assert_eq!(
        ids(s, "Observation?component-code-value-quantity=8462-4$gt100").await,
        set(&[])
    );
    assert_eq!(
        ids(
            s,
            "Observation?component-code-value-quantity=8462-4$80||mm[Hg]"
        )
        .await,
        set(&["bp"])
    );
    assert_eq!(
        ids(s, "Observation?combo-code-value-quantity=8480-6$ge120").await,
        set(&["sys-high", "bp"])
    );
    assert_eq!(
        ids(
            s,
            "Observation?code-value-concept=72166-2$http://snomed.info/sct|449868002"
        )
        .await,
        set(&["smoker"])
    );
    expect_outcome(s.get("Observation?code-value-quantity=8480-6").await, 400).await;
    expect_outcome(
        s.get("Observation?code-value-quantity=8480-6$high").await,
        400,
    )
    .await;
}

async fn system_search(s: &Server) {
    observations_for_anna_and_bob(s).await;
    let both = |b: &Value| -> BTreeSet<String> {
        b["entry"]
            .as_array()
            .map(|es| {
                es.iter()
                    .map(|e| {
                        format!(
                            "{}/{}",
                            e["resource"]["resourceType"].as_str().unwrap(),
                            e["resource"]["id"].as_str().unwrap()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let b = search(s, "?_id=anna,o-anna,drwho").await;
    assert_eq!(
        both(&b),
        set(&["Patient/anna", "Observation/o-anna", "Practitioner/drwho"])
    );
    let b = search(s, "?_type=Patient,Observation&_id=anna,o-anna,drwho").await;
    assert_eq!(both(&b), set(&["Patient/anna", "Observation/o-anna"]));
    // A parameter both types have.
    let b = search(s, "?_type=Patient,Practitioner&name=who").await;
    assert_eq!(both(&b), set(&["Practitioner/drwho"]));
    // Paging across types.
    let mut seen = BTreeSet::new();
    let mut url = s.url("?_type=Patient,Observation,Practitioner&_count=2&_sort=_id");
    for _ in 0..10 {
        let b: Value = s
            .client
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen.extend(both(&b));
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
    assert_eq!(seen.len(), 7, "{seen:?}");
    // POST form, and refusals.
    let r = s
        .client
        .post(s.url("_search"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("_type=Observation&subject=Patient%2Fanna")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(both(&r.json().await.unwrap()), set(&["Observation/o-anna"]));
    expect_outcome(s.get("?_type=Patient,Observation&name=x").await, 400).await;
    expect_outcome(s.get("?_type=Banana").await, 400).await;
    expect_outcome(s.get("?family=x").await, 400).await;
}
