//! The booking load test: many virtual users at once, each searching the free Slots of a
//! random practitioner on a random day and booking one (searching again after a 409), against
//! a running Hearth. Prints bookings per second, p50/p95/p99 of the search and of the booking
//! request, the conflicts, and checks at the end that no Slot holds two active Appointments.
//!
//! ```text
//! hearth serve --auth off --database-url postgres://postgres@127.0.0.1/booking &
//! cargo run --release --example bookingbench -- --load          # the dataset, once
//! cargo run --release --example bookingbench -- --users 500 --bookings 2 --think-ms 5000
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use clap::Parser;
use futures::StreamExt;
use serde_json::{json, Value};

#[derive(Parser, Clone)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080/fhir")]
    base: String,
    /// Load the dataset first (practitioners, their schedules and slots, patients).
    #[arg(long)]
    load: bool,
    #[arg(long, default_value_t = 200)]
    practitioners: usize,
    /// Days of 30-minute slots, 08:00 to 16:00 UTC, from 2030-01-01.
    #[arg(long, default_value_t = 60)]
    days: usize,
    #[arg(long, default_value_t = 50_000)]
    patients: usize,
    /// Concurrent virtual users.
    #[arg(long, default_value_t = 500)]
    users: usize,
    /// Bookings each user makes.
    #[arg(long, default_value_t = 4)]
    bookings: usize,
    /// A user's mean pause, in milliseconds, before each search and before booking what it
    /// found (uniformly random from 0 to twice this): people read a page before they click.
    /// 0: every user fires at once, all the time (a burst, not a realistic load).
    #[arg(long, default_value_t = 0)]
    think_ms: u64,
}

const SLOTS_PER_DAY: usize = 16;

fn day_start(day: usize) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 8, 0, 0).unwrap() + chrono::Duration::days(day as i64)
}

fn instant(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn transaction(http: &reqwest::Client, base: &str, entries: Vec<Value>) {
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    let r = http
        .post(base)
        .header("content-type", "application/fhir+json")
        .body(bundle.to_string())
        .send()
        .await
        .expect("the server answers");
    assert!(
        r.status().is_success(),
        "load failed: {}",
        r.text().await.unwrap_or_default()
    );
}

fn put(resource: Value) -> Value {
    let url = format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap(),
        resource["id"].as_str().unwrap()
    );
    json!({"resource": resource, "request": {"method": "PUT", "url": url}})
}

/// The dataset, with ids chosen here so that a run needs nothing from the load.
async fn load(args: &Args, http: &reqwest::Client) {
    let started = Instant::now();
    let mut batches: Vec<Vec<Value>> = Vec::new();
    for p in 0..args.practitioners {
        let mut entries = vec![
            put(
                json!({"resourceType": "Practitioner", "id": format!("dr-{p}"),
                "name": [{"family": format!("Doctor{p}")}]}),
            ),
            put(
                json!({"resourceType": "Schedule", "id": format!("sch-{p}"), "active": true,
                "actor": [{"reference": format!("Practitioner/dr-{p}")}]}),
            ),
        ];
        for d in 0..args.days {
            for s in 0..SLOTS_PER_DAY {
                let start = day_start(d) + chrono::Duration::minutes(30 * s as i64);
                entries.push(put(json!({"resourceType": "Slot", "id": format!("sl-{p}-{d}-{s}"),
                    "status": "free", "schedule": {"reference": format!("Schedule/sch-{p}")},
                    "start": instant(start), "end": instant(start + chrono::Duration::minutes(30))})));
            }
        }
        for chunk in entries.chunks(500) {
            batches.push(chunk.to_vec());
        }
    }
    let patients: Vec<Value> = (0..args.patients)
        .map(|i| {
            put(json!({"resourceType": "Patient", "id": format!("pt-{i}"),
                "name": [{"family": format!("Patient{i}")}]}))
        })
        .collect();
    batches.extend(patients.chunks(500).map(<[Value]>::to_vec));
    let total: usize = batches.iter().map(Vec::len).sum();
    futures::stream::iter(batches)
        .for_each_concurrent(4, |b| transaction(http, &args.base, b))
        .await;
    println!(
        "loaded {total} resources in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

fn percentiles(name: &str, mut l: Vec<Duration>) {
    l.sort();
    if l.is_empty() {
        return;
    }
    let p = |q: f64| l[((l.len() as f64 * q) as usize).min(l.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "{name:<8} n={:<6} p50={:>7.1}ms p95={:>7.1}ms p99={:>7.1}ms",
        l.len(),
        p(0.50),
        p(0.95),
        p(0.99)
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.users)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    if args.load {
        load(&args, &http).await;
        return;
    }
    let searches = Arc::new(Mutex::new(Vec::new()));
    let bookings = Arc::new(Mutex::new(Vec::new()));
    let conflicts = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    futures::stream::iter(0..args.users)
        .for_each_concurrent(args.users, |user| {
            let (http, args) = (&http, &args);
            let (searches, bookings) = (searches.clone(), bookings.clone());
            let (conflicts, failures) = (conflicts.clone(), failures.clone());
            async move {
                let mut seed = user as u64 * 7_919 + 17;
                let mut next = move |n: usize| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    ((seed >> 33) as usize) % n
                };
                let mut done = 0;
                let mut tries = 0;
                let think = move |pick: &mut dyn FnMut(usize) -> usize| {
                    let ms = if args.think_ms == 0 { 0 } else { pick(2 * args.think_ms as usize + 1) as u64 };
                    tokio::time::sleep(Duration::from_millis(ms))
                };
                while done < args.bookings && tries < args.bookings * 20 {
                    tries += 1;
                    think(&mut next).await;
                    let p = next(args.practitioners);
                    let d = next(args.days);
                    let t = Instant::now();
                    let found = http
                        .get(format!("{}/Slot", args.base))
                        .query(&[
                            ("schedule", format!("Schedule/sch-{p}")),
                            ("status", "free".into()),
                            ("start", format!("ge{}", instant(day_start(d)))),
                            ("start", format!("lt{}", instant(day_start(d + 1) - chrono::Duration::hours(8)))),
                            ("_count", "16".into()),
                        ])
                        .send()
                        .await;
                    let bundle: Value = match found {
                        Ok(r) if r.status() == 200 => r.json().await.unwrap_or_default(),
                        _ => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    };
                    searches.lock().unwrap().push(t.elapsed());
                    let free: Vec<&str> = bundle["entry"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e["resource"]["id"].as_str())
                        .collect();
                    if free.is_empty() {
                        continue;
                    }
                    let slot = free[next(free.len())].to_string();
                    think(&mut next).await;
                    let appointment = json!({"resourceType": "Appointment", "status": "booked",
                        "slot": [{"reference": format!("Slot/{slot}")}],
                        "participant": [
                            {"actor": {"reference": format!("Patient/pt-{}", next(args.patients))}, "status": "accepted"},
                            {"actor": {"reference": format!("Practitioner/dr-{p}")}, "status": "accepted"}]});
                    let t = Instant::now();
                    let r = http
                        .post(format!("{}/Appointment", args.base))
                        .header("content-type", "application/fhir+json")
                        .header("prefer", "return=minimal")
                        .body(appointment.to_string())
                        .send()
                        .await;
                    let elapsed = t.elapsed();
                    match r.map(|r| r.status().as_u16()) {
                        Ok(201) => {
                            bookings.lock().unwrap().push(elapsed);
                            done += 1;
                        }
                        Ok(409) => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        })
        .await;
    let wall = started.elapsed();
    let booked = bookings.lock().unwrap().len();
    println!(
        "users={} bookings={booked} in {:.1} s: {:.0} bookings/s, conflicts={} failures={}",
        args.users,
        wall.as_secs_f64(),
        booked as f64 / wall.as_secs_f64(),
        conflicts.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed)
    );
    percentiles("search", std::mem::take(&mut searches.lock().unwrap()));
    percentiles("book", std::mem::take(&mut bookings.lock().unwrap()));

    // No Slot may hold two active Appointments.
    let mut holders: HashMap<String, usize> = HashMap::new();
    let mut url = format!(
        "{}/Appointment?status=pending,booked,arrived,fulfilled,checked-in&_count=1000&_elements=slot",
        args.base
    );
    loop {
        let page: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        for e in page["entry"].as_array().into_iter().flatten() {
            for s in e["resource"]["slot"].as_array().into_iter().flatten() {
                *holders
                    .entry(s["reference"].as_str().unwrap_or("").to_string())
                    .or_default() += 1;
            }
        }
        match page["link"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["relation"] == "next"))
        {
            Some(next) => url = next["url"].as_str().unwrap().to_string(),
            None => break,
        }
    }
    let doubled = holders.values().filter(|n| **n > 1).count();
    println!(
        "verified: {} booked slots, {doubled} with two or more active Appointments",
        holders.len()
    );
}
