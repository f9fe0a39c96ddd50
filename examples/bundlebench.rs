//! Transaction Bundle benchmark: posts realistic patient-record transactions (a Patient with
//! encounters, observations, conditions, medication requests and appointments; about 200
//! entries that reference each other through `urn:uuid:` fullUrls) with 1, 4 and 16
//! concurrent posters, and then creates the same resources one by one, and prints resources
//! stored per second and bundle latency. Run by hand against a running server, never in CI:
//!
//! ```text
//! cargo run --release -- serve --database-url postgres://postgres@127.0.0.1/bundles &
//! cargo run --release --example bundlebench -- --base http://127.0.0.1:8080/fhir --bundles 48
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser, Clone)]
struct Args {
    /// FHIR base URL of the server under test.
    #[arg(long, default_value = "http://127.0.0.1:8080/fhir")]
    base: String,
    /// Concurrent posters to try, comma-separated.
    #[arg(long, default_value = "1,4,16")]
    posters: String,
    /// Bundles per run.
    #[arg(long, default_value_t = 48)]
    bundles: usize,
}

/// One patient's record as (fullUrl, resource) pairs, 200 in all.
fn record(n: usize) -> Vec<(String, Value)> {
    let uuid = |k: usize| format!("urn:uuid:{:08x}-0000-4000-8000-{:012x}", n, k);
    let patient = uuid(0);
    let mut out = vec![(
        patient.clone(),
        json!({"resourceType": "Patient", "identifier": [{"system": "urn:bench", "value": format!("{n}-{}", std::process::id())}],
            "name": [{"family": format!("Bench{n}"), "given": ["Test"]}], "gender": "female", "birthDate": "1970-01-01"}),
    )];
    let mut k = 1;
    let mut next = |out: &mut Vec<(String, Value)>, r: Value| {
        out.push((uuid(k), r));
        k += 1;
    };
    for e in 0..10 {
        next(
            &mut out,
            json!({"resourceType": "Encounter", "status": "finished", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": patient}, "period": {"start": format!("2024-{:02}-10T09:00:00Z", e + 1), "end": format!("2024-{:02}-10T09:30:00Z", e + 1)}}),
        );
    }
    for o in 0..100 {
        next(
            &mut out,
            json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "subject": {"reference": patient}, "encounter": {"reference": uuid(1 + o % 10)},
            "effectiveDateTime": format!("2024-{:02}-10T09:05:00Z", o % 10 + 1),
            "valueQuantity": {"value": 60 + o % 40, "unit": "beats/min", "system": "http://unitsofmeasure.org", "code": "/min"}}),
        );
    }
    for _ in 0..40 {
        next(
            &mut out,
            json!({"resourceType": "Condition", "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003", "display": "Hypertension"}]}, "subject": {"reference": patient}}),
        );
    }
    for _ in 0..30 {
        next(
            &mut out,
            json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197361"}]},
            "subject": {"reference": patient}, "authoredOn": "2024-03-01"}),
        );
    }
    for a in 0..19 {
        next(
            &mut out,
            json!({"resourceType": "Appointment", "status": "booked",
            "start": format!("2025-{:02}-01T10:00:00Z", a % 12 + 1), "end": format!("2025-{:02}-01T10:30:00Z", a % 12 + 1),
            "participant": [{"actor": {"reference": patient}, "status": "accepted"}]}),
        );
    }
    out
}

fn transaction(entries: &[(String, Value)]) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries.iter().map(|(u, r)| json!({
        "fullUrl": u, "resource": r, "request": {"method": "POST", "url": r["resourceType"]}})).collect::<Vec<_>>()})
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// Runs `work(i)` for i in 0..n on `conns` tasks; returns latencies, wall time, errors.
async fn drive<F, Fut>(conns: usize, n: usize, work: F) -> (Vec<Duration>, Duration, usize)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let work = Arc::new(work);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (work, next) = (work.clone(), next.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let t = Instant::now();
                    if !work(i).await {
                        errors += 1;
                    }
                    lat.push(t.elapsed());
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.expect("task");
        all.extend(lat);
        errors += e;
    }
    all.sort();
    (all, started.elapsed(), errors)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let client = reqwest::Client::new();
    let per_record = record(0).len();
    println!(
        "{per_record} resources per transaction Bundle; {} bundles per run",
        args.bundles
    );
    let base = args.base.clone();
    let offset = Arc::new(AtomicUsize::new(std::process::id() as usize * 100_000));
    for posters in args
        .posters
        .split(',')
        .filter_map(|p| p.trim().parse::<usize>().ok())
    {
        let (client1, base1) = (client.clone(), base.clone());
        let first = offset.fetch_add(args.bundles, Ordering::Relaxed);
        let (lat, wall, errors) = drive(posters, args.bundles, move |i| {
            let (client, base) = (client1.clone(), base1.clone());
            async move {
                let body = transaction(&record(first + i)).to_string();
                match client
                    .post(&base)
                    .header("content-type", "application/fhir+json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => true,
                    Ok(r) => {
                        eprintln!(
                            "transaction failed: {} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        );
                        false
                    }
                    Err(e) => {
                        eprintln!("transaction failed: {e}");
                        false
                    }
                }
            }
        })
        .await;
        let stored = (args.bundles - errors) * per_record;
        println!(
            "transaction  posters={posters:<3} bundles={:<4} errors={errors:<3} resources/s={:>8.0}  bundle p50={:>7.1}ms p95={:>7.1}ms p99={:>7.1}ms",
            args.bundles,
            stored as f64 / wall.as_secs_f64(),
            percentile(&lat, 0.50),
            percentile(&lat, 0.95),
            percentile(&lat, 0.99)
        );
        // The same resources as plain creates: the Patient first, then the rest referring to it.
        let first = offset.fetch_add(args.bundles, Ordering::Relaxed);
        let records = args.bundles.min(8);
        let (client2, base2) = (client.clone(), base.clone());
        let (lat, wall, errors) = drive(posters, records, move |i| {
            let (client, base) = (client2.clone(), base2.clone());
            async move {
                let rec = record(first + i);
                let create = |r: &Value| {
                    client
                        .post(format!("{base}/{}", r["resourceType"].as_str().unwrap()))
                        .header("content-type", "application/fhir+json")
                        .body(r.to_string())
                        .send()
                };
                let Ok(resp) = create(&rec[0].1).await else {
                    return false;
                };
                let Ok(p) = resp.json::<Value>().await else {
                    return false;
                };
                let pid = format!("Patient/{}", p["id"].as_str().unwrap_or_default());
                let mut ok = true;
                for (_, r) in &rec[1..] {
                    let text = r.to_string().replace(&rec[0].0, &pid);
                    let r: Value = serde_json::from_str(&text).unwrap();
                    // Encounter references inside the record stay unresolved in this comparison.
                    let r = strip_urn(r);
                    ok &= matches!(create(&r).await, Ok(resp) if resp.status() == 201);
                }
                ok
            }
        })
        .await;
        let stored = (records - errors) * per_record;
        println!(
            "plain create posters={posters:<3} records={records:<4} errors={errors:<3} resources/s={:>8.0}  per record p50={:>7.1}ms",
            stored as f64 / wall.as_secs_f64(),
            percentile(&lat, 0.50)
        );
    }
}

/// Drops the intra-record `encounter` references (plain creates cannot know those ids).
fn strip_urn(mut r: Value) -> Value {
    if r["encounter"]["reference"]
        .as_str()
        .is_some_and(|s| s.starts_with("urn:"))
    {
        r.as_object_mut().unwrap().shift_remove("encounter");
    }
    r
}
