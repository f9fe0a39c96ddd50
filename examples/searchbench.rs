//! Search benchmark: a deterministic generator of a realistic scheduling-and-prescribing
//! dataset, a load step that writes it through Hearth's own store, an HTTP benchmark of the
//! search shapes that matter against a running Hearth, and an `EXPLAIN ANALYZE` of the SQL
//! those searches compile to.
//!
//! ```text
//! # 1. Generate and load (~10 resources per patient: 100,000 patients = ~1 million resources).
//! cargo run --release --example searchbench -- load \
//!     --database-url postgres://postgres@127.0.0.1:5432/hearth_bench --patients 100000
//! # 2. Serve that database, then measure every query kind at 1 and 32 connections.
//! hearth serve --database-url postgres://postgres@127.0.0.1:5432/hearth_bench --listen 127.0.0.1:8080 &
//! cargo run --release --example searchbench -- bench --base http://127.0.0.1:8080/fhir \
//!     --connections 1,32 --seconds 10
//! # 3. The plans PostgreSQL picks (custom and generic), and which nodes still scan.
//! cargo run --release --example searchbench -- explain \
//!     --database-url postgres://postgres@127.0.0.1:5432/hearth_bench
//! ```
//!
//! The dataset, for `--patients N` (everything scales with N):
//! * `ceil(N/100)` Practitioners (name, NPI, qualification), as many PractitionerRoles
//!   (specialty) and Schedules (actor: the Practitioner and its role);
//! * N Patients (names from small weighted lists so that family prefixes have very different
//!   selectivities, gender, birthDate 1930-2020, an MRN identifier, address);
//! * 3N Slots of 30 minutes over 2026-2027, spread evenly over the schedules, 60% busy;
//! * 3N booked Appointments (patient and practitioner participants): one per busy Slot
//!   (referring to it, at its time), the others walk-ins without a slot;
//! * on average 3N MedicationRequests (0 to 6 per patient, RxNorm, requester a Practitioner).
//!
//! The data is written in units of one patient with its slots, appointments and prescriptions,
//! so that a load cut short (`--max-minutes`) still leaves a consistent, proportional dataset.
//! Everything derives from a fixed seed, so the bench knows what every search must return.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeDelta};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Row as _};

use hearth::search::query;
use hearth::search::registry::Registry;
use hearth::store::search_sql::{self, Bind, Dialect, PageCursor, Sql};
use hearth::store::{Indexer, ResourceStore, Store};

/// The base URL the loader indexes with (references here are relative, so any works).
const INDEX_BASE: &str = "http://127.0.0.1:8080/fhir";
const MRN_SYSTEM: &str = "urn:oid:2.16.840.1.113883.19.5";
const NPI_SYSTEM: &str = "http://hl7.org/fhir/sid/us-npi";

#[derive(Parser)]
#[command(about = "Generate a dataset, benchmark Hearth's searches, explain their SQL")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the dataset and write it through hearth::store::Store (no HTTP, no validation).
    Load(LoadArgs),
    /// Measure every query kind against a running Hearth.
    Bench(BenchArgs),
    /// EXPLAIN (ANALYZE, BUFFERS) the SQL of every query kind, custom and generic plans.
    Explain(ExplainArgs),
}

#[derive(Parser)]
struct LoadArgs {
    #[arg(long)]
    database_url: String,
    /// Patients; every other resource type scales with it.
    #[arg(long, default_value_t = 100_000)]
    patients: u64,
    /// Concurrent writers (and database connections).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Stop taking new units after this long (the dataset stays consistent).
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Load even though the database already holds resources (they are updated: new versions).
    #[arg(long)]
    force: bool,
    /// Skip the final VACUUM ANALYZE.
    #[arg(long)]
    no_analyze: bool,
}

#[derive(Parser)]
struct BenchArgs {
    /// FHIR base URL of the running server.
    #[arg(long, default_value = "http://127.0.0.1:8080/fhir")]
    base: String,
    /// Connection counts to measure, comma-separated.
    #[arg(long, default_value = "1,32", value_delimiter = ',')]
    connections: Vec<usize>,
    /// Measured seconds per query kind and connection count.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Unmeasured warm-up seconds before each measurement.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Pages followed by each deep-paging walk.
    #[arg(long, default_value_t = 200)]
    pages: usize,
    /// Only these query kinds (comma-separated names from the table); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// PID of the server, to report its resident memory.
    #[arg(long)]
    pid: Option<u32>,
}

#[derive(Parser)]
struct ExplainArgs {
    #[arg(long)]
    database_url: String,
    /// Also show the generic plan (PREPARE + plan_cache_mode=force_generic_plan), which is
    /// what a pooled connection runs after five executions of a statement if PostgreSQL finds
    /// it no costlier than the custom plans.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    generic: bool,
    /// Pages to skip for the deep-paging plan.
    #[arg(long, default_value_t = 200)]
    pages: usize,
}

// ---------------------------------------------------------------------------------------
// A tiny deterministic PRNG: splitmix64 to seed, xorshift64* to draw.

const SEED: u64 = 0x4845_4152_5448_2021;

#[derive(Clone)]
struct Rng(u64);

impl Rng {
    /// An independent stream for (purpose, index): the same inputs always give the same draws.
    fn new(stream: u64, index: u64) -> Rng {
        let mut z = SEED
            ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..n.
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A pick weighted 1/(rank+1) (Zipf): the first items are far more common.
    fn zipf<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let total: f64 = (1..=items.len()).map(|r| 1.0 / r as f64).sum();
        let mut x = (self.next() >> 11) as f64 / (1u64 << 53) as f64 * total;
        for (r, item) in items.iter().enumerate() {
            x -= 1.0 / (r + 1) as f64;
            if x < 0.0 {
                return item;
            }
        }
        &items[items.len() - 1]
    }
}

// Stream names.
const S_PATIENT: u64 = 1;
const S_FAMILY: u64 = 2;
const S_PRACT: u64 = 3;
const S_SLOT: u64 = 4;
const S_APPT: u64 = 5;
const S_MR_COUNT: u64 = 6;
const S_MR: u64 = 7;
const S_BENCH: u64 = 100;

// ---------------------------------------------------------------------------------------
// Vocabulary.

/// Family names, most common first (weighted 1/rank): `Smi` matches a large share of the
/// patients, `Yam` very few; several share a prefix (Martinez/Martin, Robinson/Roberts).
const FAMILIES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "Kowalski",
    "Fitzgerald",
    "Okafor",
    "Zimmerman",
    "Quinn",
    "Yamamoto",
    "Ivanova",
    "Lindqvist",
    "Oyelaran",
    "Xu",
];
const GIVEN_F: &[&str] = &[
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Barbara",
    "Susan",
    "Jessica",
    "Sarah",
    "Karen",
    "Lisa",
    "Nancy",
    "Betty",
    "Sandra",
    "Margaret",
    "Ashley",
    "Kimberly",
    "Emily",
    "Donna",
    "Michelle",
    "Olivia",
    "Emma",
    "Ava",
    "Sophia",
    "Isabella",
    "Mia",
    "Amelia",
    "Harper",
    "Evelyn",
    "Abigail",
    "Chloe",
    "Grace",
];
const GIVEN_M: &[&str] = &[
    "James",
    "Robert",
    "John",
    "Michael",
    "David",
    "William",
    "Richard",
    "Joseph",
    "Thomas",
    "Charles",
    "Christopher",
    "Daniel",
    "Matthew",
    "Anthony",
    "Mark",
    "Donald",
    "Steven",
    "Paul",
    "Andrew",
    "Joshua",
    "Liam",
    "Noah",
    "Oliver",
    "Elijah",
    "Lucas",
    "Mason",
    "Logan",
    "Ethan",
    "Jacob",
    "Henry",
    "Samuel",
    "Jack",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("Springfield", "IL", "627"),
    ("Madison", "WI", "537"),
    ("Franklin", "TN", "370"),
    ("Greenville", "SC", "296"),
    ("Bristol", "CT", "060"),
    ("Clinton", "IA", "527"),
    ("Salem", "OR", "973"),
    ("Fairview", "NJ", "070"),
    ("Georgetown", "TX", "786"),
    ("Riverside", "CA", "925"),
    ("Arlington", "VA", "222"),
    ("Ashland", "KY", "411"),
    ("Dover", "DE", "199"),
    ("Oxford", "MS", "386"),
    ("Burlington", "VT", "054"),
    ("Manchester", "NH", "031"),
];
const STREETS: &[&str] = &[
    "Main Street",
    "Oak Avenue",
    "Maple Drive",
    "Cedar Lane",
    "Elm Street",
    "Pine Road",
    "Washington Boulevard",
    "Lake Shore Drive",
    "Hillcrest Court",
    "Park Place",
];
/// SNOMED CT practice settings (R4 c80-practice-codes).
const SPECIALTIES: &[(&str, &str)] = &[
    ("394814009", "General practice"),
    ("394579002", "Cardiology"),
    ("394582007", "Dermatology"),
    ("394583002", "Endocrinology"),
    ("394584008", "Gastroenterology"),
    ("394585009", "Obstetrics and gynecology"),
    ("394591006", "Neurology"),
    ("394537008", "Pediatric specialty"),
    ("394587001", "Psychiatry"),
    ("394594003", "Ophthalmology"),
];
/// RxNorm clinical drugs.
const DRUGS: &[(&str, &str, &str)] = &[
    (
        "314076",
        "lisinopril 10 MG Oral Tablet",
        "Take 1 tablet by mouth once daily",
    ),
    (
        "197361",
        "amlodipine 5 MG Oral Tablet",
        "Take 1 tablet by mouth once daily",
    ),
    (
        "860975",
        "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
        "Take 1 tablet by mouth with the evening meal",
    ),
    (
        "310798",
        "hydrochlorothiazide 25 MG Oral Tablet",
        "Take 1 tablet by mouth every morning",
    ),
    (
        "259255",
        "atorvastatin 80 MG Oral Tablet",
        "Take 1 tablet by mouth at bedtime",
    ),
    (
        "312961",
        "simvastatin 20 MG Oral Tablet",
        "Take 1 tablet by mouth at bedtime",
    ),
    (
        "197806",
        "ibuprofen 200 MG Oral Tablet",
        "Take 1 to 2 tablets every 6 hours as needed for pain",
    ),
    (
        "313782",
        "acetaminophen 325 MG Oral Tablet",
        "Take 2 tablets every 6 hours as needed",
    ),
    (
        "308182",
        "amoxicillin 250 MG Oral Capsule",
        "Take 1 capsule by mouth three times daily for 10 days",
    ),
    (
        "895994",
        "120 ACTUAT fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler",
        "Inhale 2 puffs twice daily",
    ),
    (
        "745679",
        "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
        "Inhale 2 puffs every 4 hours as needed",
    ),
];

// ---------------------------------------------------------------------------------------
// The dataset layout: who refers to whom, derived from N alone.

/// Days covered by slots: 2026-01-01 to 2027-12-31.
const SLOT_DAYS: u64 = 730;
/// Share of slots that are booked.
const BUSY: f64 = 0.6;

fn day0() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
}

fn day(n: i64) -> NaiveDate {
    day0() + TimeDelta::days(n)
}

fn instant(d: NaiveDate, minutes: u64) -> String {
    format!("{d}T{:02}:{:02}:00Z", minutes / 60, minutes % 60)
}

#[derive(Clone, Copy)]
struct Layout {
    patients: u64,
    practitioners: u64,
    slots: u64,
    per_schedule: u64,
    /// Multiplier of the affine permutation appointment -> slot.
    perm: u64,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Layout {
    fn new(patients: u64) -> Layout {
        let practitioners = patients.div_ceil(100).max(1);
        let slots = 3 * patients;
        let per_schedule = slots.div_ceil(practitioners).max(1);
        let mut perm = 2_654_435_761 % slots.max(1);
        while slots > 1 && gcd(perm, slots) != 1 {
            perm += 1;
        }
        Layout {
            patients,
            practitioners,
            slots,
            per_schedule,
            perm: perm.max(1),
        }
    }

    /// The slot appointment `k` takes (or, for a walk-in, sits next to): a permutation, so
    /// that each patient's appointments are with different practitioners.
    fn slot_of(&self, k: u64) -> u64 {
        ((self.perm as u128 * k as u128 + 7) % self.slots as u128) as u64
    }

    fn schedule_of(&self, slot: u64) -> u64 {
        (slot / self.per_schedule).min(self.practitioners - 1)
    }

    /// (day number, start minute of the day) of a slot: evenly spaced days per schedule.
    fn slot_time(&self, slot: u64) -> (i64, u64) {
        let local = slot % self.per_schedule;
        let d = (local * SLOT_DAYS / self.per_schedule) as i64;
        let minute = 8 * 60 + 30 * Rng::new(S_SLOT, slot).below(18);
        (d, minute)
    }

    fn busy(&self, appointment: u64) -> bool {
        Rng::new(S_APPT, appointment).chance(BUSY)
    }

    fn prescriptions(&self, patient: u64) -> u64 {
        Rng::new(S_MR_COUNT, patient).below(7)
    }
}

fn pat_id(u: u64) -> String {
    format!("pat-{u:06}")
}
fn prac_id(p: u64) -> String {
    format!("prac-{p:05}")
}
fn sched_id(p: u64) -> String {
    format!("sched-{p:05}")
}
fn slot_id(s: u64) -> String {
    format!("slot-{s:07}")
}

/// A unique, non-sequential medical record number (an affine bijection mod 10^8).
fn mrn(u: u64) -> String {
    format!("{:08}", (u * 48_271 + 12_345) % 100_000_000)
}

fn family_of(u: u64) -> &'static str {
    let family: &&'static str = Rng::new(S_FAMILY, u).zipf(FAMILIES);
    family
}

/// A valid NPI: 9 digits and a Luhn check digit over the prefix 80840.
fn npi(p: u64) -> String {
    let base = format!("{:09}", 100_000_000 + p * 37 % 900_000_000);
    let digits: Vec<u32> = format!("80840{base}")
        .chars()
        .map(|c| c.to_digit(10).unwrap())
        .collect();
    let mut sum = 0;
    for (i, d) in digits.iter().rev().enumerate() {
        let v = if i % 2 == 0 { d * 2 } else { *d };
        sum += if v > 9 { v - 9 } else { v };
    }
    format!("{base}{}", (10 - sum % 10) % 10)
}

fn patient(u: u64) -> Value {
    let mut rng = Rng::new(S_PATIENT, u);
    let gender = match rng.below(100) {
        0 => "other",
        1 => "unknown",
        n if n < 51 => "female",
        _ => "male",
    };
    let names = if gender == "female" || (gender != "male" && rng.chance(0.5)) {
        GIVEN_F
    } else {
        GIVEN_M
    };
    let mut given = vec![json!(rng.pick(names))];
    if rng.chance(0.4) {
        given.push(json!(rng.pick(names)));
    }
    let born =
        NaiveDate::from_ymd_opt(1930, 1, 1).unwrap() + TimeDelta::days(rng.below(33_237) as i64); // to 2020-12-31
    let (city, state, zip) = rng.pick(CITIES);
    json!({
        "resourceType": "Patient",
        "id": pat_id(u),
        "identifier": [{
            "use": "usual",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
            "system": MRN_SYSTEM,
            "value": mrn(u)
        }],
        "active": true,
        "name": [{"use": "official", "family": family_of(u), "given": given}],
        "telecom": [{"system": "phone", "value": format!("555-{:04}", rng.below(10_000)), "use": "home"}],
        "gender": gender,
        "birthDate": born.to_string(),
        "address": [{
            "use": "home",
            "line": [format!("{} {}", 1 + rng.below(9_999), rng.pick(STREETS))],
            "city": city, "state": state,
            "postalCode": format!("{zip}{:02}", rng.below(100)),
            "country": "US"
        }]
    })
}

fn practitioner(p: u64) -> Value {
    let mut rng = Rng::new(S_PRACT, p);
    let female = rng.chance(0.5);
    let (code, display) = if rng.chance(0.85) {
        ("MD", "Doctor of Medicine")
    } else {
        ("DO", "Doctor of Osteopathy")
    };
    json!({
        "resourceType": "Practitioner",
        "id": prac_id(p),
        "identifier": [{"system": NPI_SYSTEM, "value": npi(p)}],
        "active": true,
        "name": [{"use": "official", "family": rng.zipf(FAMILIES),
                  "given": [rng.pick(if female { GIVEN_F } else { GIVEN_M })], "prefix": ["Dr."]}],
        "gender": if female { "female" } else { "male" },
        "qualification": [{"code": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0360|2.7", "code": code, "display": display}],
            "text": code
        }}]
    })
}

fn role(p: u64) -> Value {
    let (code, display) = SPECIALTIES[(p % SPECIALTIES.len() as u64) as usize];
    json!({
        "resourceType": "PractitionerRole",
        "id": format!("role-{p:05}"),
        "active": true,
        "practitioner": {"reference": format!("Practitioner/{}", prac_id(p))},
        "code": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/practitioner-role", "code": "doctor", "display": "Doctor"}]}],
        "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]}]
    })
}

fn schedule(p: u64) -> Value {
    let (code, display) = SPECIALTIES[(p % SPECIALTIES.len() as u64) as usize];
    json!({
        "resourceType": "Schedule",
        "id": sched_id(p),
        "active": true,
        "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]}],
        "actor": [
            {"reference": format!("Practitioner/{}", prac_id(p))},
            {"reference": format!("PractitionerRole/role-{p:05}")}
        ],
        "planningHorizon": {"start": "2026-01-01T00:00:00Z", "end": "2028-01-01T00:00:00Z"}
    })
}

fn slot(l: &Layout, s: u64, busy: bool) -> Value {
    let (d, minute) = l.slot_time(s);
    json!({
        "resourceType": "Slot",
        "id": slot_id(s),
        "schedule": {"reference": format!("Schedule/{}", sched_id(l.schedule_of(s)))},
        "status": if busy { "busy" } else { "free" },
        "start": instant(day(d), minute),
        "end": instant(day(d), minute + 30)
    })
}

fn appointment(l: &Layout, k: u64) -> Value {
    let s = l.slot_of(k);
    let p = l.schedule_of(s);
    let u = k / 3;
    let busy = l.busy(k);
    let mut rng = Rng::new(S_APPT, k);
    rng.next(); // the draw `busy` used
    let (d, minute) = l.slot_time(s);
    let (d, minute, kind) = if busy {
        (
            d,
            minute,
            if rng.chance(0.3) {
                "FOLLOWUP"
            } else {
                "ROUTINE"
            },
        )
    } else {
        // A walk-in the day after one of the practitioner's slot days.
        let d = if d + 1 < SLOT_DAYS as i64 {
            d + 1
        } else {
            d - 1
        };
        (d, 8 * 60 + 30 * rng.below(18), "WALKIN")
    };
    let mut a = json!({
        "resourceType": "Appointment",
        "id": format!("appt-{k:07}"),
        "status": "booked",
        "appointmentType": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0276", "code": kind}]},
        "description": "Office visit",
        "start": instant(day(d), minute),
        "end": instant(day(d), minute + 30),
        "minutesDuration": 30,
        "created": format!("2025-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28)),
        "participant": [
            {"actor": {"reference": format!("Patient/{}", pat_id(u))}, "required": "required", "status": "accepted"},
            {"actor": {"reference": format!("Practitioner/{}", prac_id(p))}, "required": "required", "status": "accepted"}
        ]
    });
    if busy {
        a["slot"] = json!([{"reference": format!("Slot/{}", slot_id(s))}]);
    }
    a
}

fn prescription(l: &Layout, u: u64, j: u64) -> Value {
    let mut rng = Rng::new(S_MR, u * 8 + j);
    let (code, display, text) = rng.pick(DRUGS);
    let authored =
        NaiveDate::from_ymd_opt(2019, 1, 1).unwrap() + TimeDelta::days(rng.below(2_555) as i64);
    json!({
        "resourceType": "MedicationRequest",
        "id": format!("medreq-{u:06}-{j}"),
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code, "display": display}],
            "text": display
        },
        "subject": {"reference": format!("Patient/{}", pat_id(u))},
        "authoredOn": authored.to_string(),
        "requester": {"reference": format!("Practitioner/{}", prac_id(rng.below(l.practitioners)))},
        "dosageInstruction": [{"sequence": 1, "text": text}]
    })
}

/// Everything written for unit `idx`: first one unit per practitioner (practitioner, role,
/// schedule), then one per patient (patient, 3 slots, 3 appointments, 0-6 prescriptions).
fn unit(l: &Layout, idx: u64) -> Vec<Value> {
    if idx < l.practitioners {
        return vec![practitioner(idx), role(idx), schedule(idx)];
    }
    let u = idx - l.practitioners;
    let mut out = vec![patient(u)];
    for k in 3 * u..3 * u + 3 {
        out.push(slot(l, l.slot_of(k), l.busy(k)));
        out.push(appointment(l, k));
    }
    for j in 0..l.prescriptions(u) {
        out.push(prescription(l, u, j));
    }
    out
}

// ---------------------------------------------------------------------------------------
// load

fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mem_available_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? / 1024)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn ensure_database(url: &str) -> Result<(), String> {
    let options = PgConnectOptions::from_str(url).map_err(|e| e.to_string())?;
    let name = options
        .get_database()
        .ok_or("the database URL names no database")?
        .to_string();
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .map_err(|e| format!("cannot connect to the postgres database: {e}"))?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await
        .map_err(|e| e.to_string())?;
    if exists.is_none() {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
            .execute(&mut admin)
            .await
            .map_err(|e| format!("CREATE DATABASE {quoted}: {e}"))?;
        println!("created database {name}");
    } else {
        println!("database {name} exists");
    }
    admin.close().await.ok();
    Ok(())
}

async fn load(args: LoadArgs) -> Result<(), String> {
    ensure_database(&args.database_url).await?;
    let indexer = Arc::new(Indexer::new(Registry::r4().clone(), INDEX_BASE.to_string()));
    let store = Store::connect(&args.database_url, args.concurrency as u32 + 1, indexer)
        .await
        .map_err(|e| e.message().to_string())?;
    let applied = store.migrate().await.map_err(|e| e.message().to_string())?;
    println!("migrations applied: {applied:?}");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&args.database_url)
        .await
        .map_err(|e| e.to_string())?;
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM resource")
        .fetch_one(&pool)
        .await
        .map_err(|e| e.to_string())?;
    if existing > 0 && !args.force {
        return Err(format!(
            "the database already holds {existing} resources; use --force to write new versions over them"
        ));
    }

    let l = Layout::new(args.patients);
    let units = l.practitioners + l.patients;
    let expected: u64 = 3 * l.practitioners
        + l.patients
        + 6 * l.patients
        + (0..l.patients).map(|u| l.prescriptions(u)).sum::<u64>();
    println!(
        "dataset: {} patients, {} practitioners (+ as many PractitionerRoles and Schedules), {} slots \
         ({} per schedule), {} appointments, {} medication requests: {expected} resources",
        l.patients,
        l.practitioners,
        l.slots,
        l.per_schedule,
        3 * l.patients,
        (0..l.patients).map(|u| l.prescriptions(u)).sum::<u64>()
    );
    println!(
        "NOTE: resources are written through hearth::store::Store (ResourceStore::update with \
         client-chosen ids): the same transaction as the server (resource, history and search index \
         rows), but HTTP and validation are bypassed; every 500th unit is checked with the server's \
         validator instead."
    );

    // The server's validator on a sample, before writing anything.
    let validator = hearth::fhir::validate::Validator::shared();
    let check = |r: &Value| -> Result<(), String> {
        validator.validate(r).map_err(|issues| {
            let text: Vec<String> = issues
                .iter()
                .map(|i| {
                    format!(
                        "{} at {:?}",
                        i.diagnostics.clone().unwrap_or_default(),
                        i.expression
                    )
                })
                .collect();
            format!(
                "{}/{} is invalid: {}",
                r["resourceType"],
                r["id"],
                text.join("; ")
            )
        })
    };
    for idx in [0, l.practitioners, l.practitioners + 1] {
        for r in unit(&l, idx.min(units - 1)) {
            check(&r)?;
        }
    }

    let next = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let done_units = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = args
        .max_minutes
        .map(|m| started + Duration::from_secs_f64(m * 60.0));
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (store, next, written, done_units, failed, stop) = (
                store.clone(),
                next.clone(),
                written.clone(),
                done_units.clone(),
                failed.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let validator = hearth::fhir::validate::Validator::shared();
                loop {
                    if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() > d)
                    {
                        break;
                    }
                    let idx = next.fetch_add(1, Ordering::Relaxed);
                    if idx >= units {
                        break;
                    }
                    for r in unit(&l, idx) {
                        if idx % 500 == 0 {
                            if let Err(issues) = validator.validate(&r) {
                                eprintln!("INVALID {}/{}: {issues:?}", r["resourceType"], r["id"]);
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        let rtype = r["resourceType"].as_str().unwrap().to_string();
                        let id = r["id"].as_str().unwrap().to_string();
                        match store.update(&rtype, &id, r, None, None).await {
                            Ok(_) => {
                                written.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                let n = failed.fetch_add(1, Ordering::Relaxed);
                                if n < 10 {
                                    eprintln!("write {rtype}/{id} failed: {}", e.message());
                                }
                                if n > 100 {
                                    stop.store(true, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    done_units.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let me = std::process::id().to_string();
    let progress = {
        let (written, done_units) = (written.clone(), done_units.clone());
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_secs(15)).await;
                let w = written.load(Ordering::Relaxed);
                let now = Instant::now();
                let rate = (w - last.1) as f64 / (now - last.0).as_secs_f64();
                last = (now, w);
                println!(
                    "  {:>7.0}s  {w:>9} resources ({:>5.1}%)  units {:>7}/{units}  {:>6.0}/s now, {:>6.0}/s overall  \
                     loader RSS {} MiB  MemAvailable {} MiB  load {}",
                    started.elapsed().as_secs_f64(),
                    100.0 * w as f64 / expected as f64,
                    done_units.load(Ordering::Relaxed),
                    rate,
                    w as f64 / started.elapsed().as_secs_f64(),
                    rss_kib(&me).unwrap_or(0) / 1024,
                    mem_available_mib().unwrap_or(0),
                    loadavg()
                );
            }
        })
    };
    for w in workers {
        w.await.map_err(|e| e.to_string())?;
    }
    progress.abort();
    let elapsed = started.elapsed();
    let w = written.load(Ordering::Relaxed);
    let units_done = done_units.load(Ordering::Relaxed);
    println!(
        "loaded {w} resources in {:.1}s: {:.0} resources/s with {} writers ({} of {units} units{}, {} failures; load average {})",
        elapsed.as_secs_f64(),
        w as f64 / elapsed.as_secs_f64(),
        args.concurrency,
        units_done,
        if units_done < units { ", STOPPED EARLY" } else { "" },
        failed.load(Ordering::Relaxed),
        loadavg()
    );
    if units_done < units {
        let patients = units_done.saturating_sub(l.practitioners);
        println!(
            "the dataset holds the first ~{patients} patients with their slots, appointments and \
             prescriptions (the bench reads the counts from the server)"
        );
    }
    store.close().await;

    if !args.no_analyze {
        let t = Instant::now();
        sqlx::raw_sql("VACUUM ANALYZE")
            .execute(&pool)
            .await
            .map_err(|e| e.to_string())?;
        println!("VACUUM ANALYZE took {:.1}s", t.elapsed().as_secs_f64());
    }
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT type, count(*) FROM resource WHERE NOT deleted GROUP BY type ORDER BY type",
    )
    .fetch_all(&pool)
    .await
    .map_err(|e| e.to_string())?;
    let total: i64 = counts.iter().map(|c| c.1).sum();
    println!("resources in the database: {total}");
    for (t, n) in counts {
        println!("  {t:<20} {n:>9}");
    }
    let sizes: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT c.relname::text, c.reltuples::bigint, pg_total_relation_size(c.oid)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 3 DESC",
    )
    .fetch_all(&pool)
    .await
    .map_err(|e| e.to_string())?;
    println!("tables (rows estimated, size with indexes):");
    for (t, rows, bytes) in sizes {
        println!(
            "  {t:<20} {rows:>10} rows {:>8.1} MiB",
            bytes as f64 / 1048576.0
        );
    }
    let db: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&pool)
        .await
        .map_err(|e| e.to_string())?;
    println!("database size: {:.0} MiB", db as f64 / 1048576.0);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Query kinds: parameters drawn from the generator, and what the answer must look like.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Family,
    Identifier,
    Birthdate,
    ApptPractitioner,
    SlotFree,
    Chained,
    RevInclude,
}

const KINDS: [Kind; 7] = [
    Kind::Family,
    Kind::Identifier,
    Kind::Birthdate,
    Kind::ApptPractitioner,
    Kind::SlotFree,
    Kind::Chained,
    Kind::RevInclude,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Family => "patient-family",
            Kind::Identifier => "patient-identifier",
            Kind::Birthdate => "patient-birthdate",
            Kind::ApptPractitioner => "appt-prac-date+inc",
            Kind::SlotFree => "slot-sched-free",
            Kind::Chained => "medreq-chained",
            Kind::RevInclude => "patient-revinclude",
        }
    }
}

/// What the data is: counts read from the server (or the database), and what the generator
/// wrote for them.
struct Sizes {
    patients: u64,
    practitioners: u64,
    /// The load's layout (its N is practitioners * 100: exact for multiples of 100).
    layout: Layout,
    truth: Truth,
}

/// The answers, from the generator: how many resources each search must find in all, so
/// that an incomplete page counts as wrong too.
struct Truth {
    /// Folded three-letter prefix -> patients with that family prefix.
    family_patients: std::collections::HashMap<String, usize>,
    /// Folded prefix -> medication requests of those patients.
    family_prescriptions: std::collections::HashMap<String, usize>,
    /// Every birthDate, sorted.
    births: Vec<String>,
    /// Practitioner reference -> start instants of its appointments, sorted.
    appointments: std::collections::HashMap<String, Vec<String>>,
    /// Schedule reference -> start instants of its free slots, sorted.
    free_slots: std::collections::HashMap<String, Vec<String>>,
}

impl Truth {
    /// Regenerates what the load wrote for patients `0..patients`.
    fn new(l: &Layout, patients: u64) -> Truth {
        let mut t = Truth {
            family_patients: Default::default(),
            family_prescriptions: Default::default(),
            births: Vec::with_capacity(patients as usize),
            appointments: Default::default(),
            free_slots: Default::default(),
        };
        let prefixes: Vec<String> = prefixes().iter().map(|p| p.to_lowercase()).collect();
        for u in 0..patients {
            let family = family_of(u).to_lowercase();
            for p in prefixes.iter().filter(|p| family.starts_with(p.as_str())) {
                *t.family_patients.entry(p.clone()).or_default() += 1;
                *t.family_prescriptions.entry(p.clone()).or_default() +=
                    l.prescriptions(u) as usize;
            }
            t.births.push(str_of(&patient(u), "/birthDate").to_string());
            for k in 3 * u..3 * u + 3 {
                let a = appointment(l, k);
                let prac = str_of(&a, "/participant/1/actor/reference").to_string();
                t.appointments
                    .entry(prac)
                    .or_default()
                    .push(str_of(&a, "/start").to_string());
                if !l.busy(k) {
                    let s = slot(l, l.slot_of(k), false);
                    t.free_slots
                        .entry(str_of(&s, "/schedule/reference").to_string())
                        .or_default()
                        .push(str_of(&s, "/start").to_string());
                }
            }
        }
        t.births.sort();
        for v in t.appointments.values_mut().chain(t.free_slots.values_mut()) {
            v.sort();
        }
        t
    }
}

/// How many of the sorted `values` are in [lo, hi) (as text: ISO dates order as text).
fn count_in(values: Option<&Vec<String>>, lo: &str, hi: &str) -> usize {
    values.map_or(0, |v| {
        v.partition_point(|x| x.as_str() < hi) - v.partition_point(|x| x.as_str() < lo)
    })
}

/// Three-letter prefixes of the family names, each once: from very common to very rare.
fn prefixes() -> Vec<String> {
    let mut seen = Vec::new();
    for f in FAMILIES {
        let p: String = f.chars().take(3).collect();
        if !seen.contains(&p) {
            seen.push(p);
        }
    }
    seen
}

enum Expect {
    FamilyPrefix(String),
    Identifier(String),
    Birthdate(String, String),
    Appointment {
        practitioner: String,
        lo: String,
        hi: String,
    },
    Slot {
        schedule: String,
        lo: String,
        hi: String,
    },
    ChainedFamily(String),
    RevInclude {
        id: String,
        prescriptions: usize,
    },
}

struct Request {
    resource_type: &'static str,
    params: Vec<(String, String)>,
    expect: Expect,
    /// How many resources match in all (the page holds min(this, page size)).
    total: usize,
}

fn request(kind: Kind, sizes: &Sizes, rng: &mut Rng) -> Request {
    let p = |k: &str, v: String| (k.to_string(), v);
    let prefixes = prefixes();
    match kind {
        Kind::Family => {
            let prefix = rng.pick(&prefixes).clone();
            Request {
                resource_type: "Patient",
                params: vec![p("family", prefix.clone())],
                total: sizes
                    .truth
                    .family_patients
                    .get(&prefix.to_lowercase())
                    .copied()
                    .unwrap_or(0),
                expect: Expect::FamilyPrefix(prefix.to_lowercase()),
            }
        }
        Kind::Identifier => {
            let value = mrn(rng.below(sizes.patients));
            Request {
                resource_type: "Patient",
                params: vec![p("identifier", format!("{MRN_SYSTEM}|{value}"))],
                expect: Expect::Identifier(value),
                total: 1,
            }
        }
        Kind::Birthdate => {
            let lo = NaiveDate::from_ymd_opt(1930, 1, 1).unwrap()
                + TimeDelta::days(rng.below(33_237 - 30) as i64);
            let hi = lo + TimeDelta::days(30);
            Request {
                resource_type: "Patient",
                params: vec![
                    p("birthdate", format!("ge{lo}")),
                    p("birthdate", format!("lt{hi}")),
                ],
                total: count_in(Some(&sizes.truth.births), &lo.to_string(), &hi.to_string()),
                expect: Expect::Birthdate(lo.to_string(), hi.to_string()),
            }
        }
        Kind::ApptPractitioner => {
            let prac = prac_id(rng.below(sizes.practitioners));
            let lo = day(rng.below(SLOT_DAYS - 7) as i64);
            let hi = lo + TimeDelta::days(7);
            Request {
                resource_type: "Appointment",
                params: vec![
                    p("practitioner", format!("Practitioner/{prac}")),
                    p("date", format!("ge{lo}")),
                    p("date", format!("lt{hi}")),
                    p("_include", "Appointment:patient".into()),
                ],
                total: count_in(
                    sizes
                        .truth
                        .appointments
                        .get(&format!("Practitioner/{prac}")),
                    &lo.to_string(),
                    &hi.to_string(),
                ),
                expect: Expect::Appointment {
                    practitioner: format!("Practitioner/{prac}"),
                    lo: lo.to_string(),
                    hi: hi.to_string(),
                },
            }
        }
        Kind::SlotFree => {
            let sched = sched_id(rng.below(sizes.practitioners));
            let lo = day(rng.below(SLOT_DAYS - 7) as i64);
            let hi = lo + TimeDelta::days(7);
            Request {
                resource_type: "Slot",
                params: vec![
                    p("schedule", format!("Schedule/{sched}")),
                    p("status", "free".into()),
                    p("start", format!("ge{lo}")),
                    p("start", format!("lt{hi}")),
                ],
                total: count_in(
                    sizes.truth.free_slots.get(&format!("Schedule/{sched}")),
                    &lo.to_string(),
                    &hi.to_string(),
                ),
                expect: Expect::Slot {
                    schedule: format!("Schedule/{sched}"),
                    lo: lo.to_string(),
                    hi: hi.to_string(),
                },
            }
        }
        Kind::Chained => {
            let prefix = rng.pick(&prefixes).clone();
            Request {
                resource_type: "MedicationRequest",
                params: vec![
                    p("subject:Patient.family", prefix.clone()),
                    p("_count", "20".into()),
                ],
                total: sizes
                    .truth
                    .family_prescriptions
                    .get(&prefix.to_lowercase())
                    .copied()
                    .unwrap_or(0),
                expect: Expect::ChainedFamily(prefix.to_lowercase()),
            }
        }
        Kind::RevInclude => {
            let u = rng.below(sizes.patients);
            Request {
                resource_type: "Patient",
                params: vec![
                    p("_id", pat_id(u)),
                    p("_revinclude", "MedicationRequest:subject".into()),
                ],
                total: 1,
                expect: Expect::RevInclude {
                    id: pat_id(u),
                    prescriptions: sizes.layout.prescriptions(u) as usize,
                },
            }
        }
    }
}

fn url(base: &str, rtype: &str, params: &[(String, String)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        q.append_pair(k, v);
    }
    format!("{base}/{rtype}?{}", q.finish())
}

/// The matches and includes of a searchset Bundle, or why it is not one.
fn entries(body: &Value) -> Result<(Vec<&Value>, Vec<&Value>), String> {
    if body["resourceType"] != "Bundle" || body["type"] != "searchset" {
        return Err(format!(
            "not a searchset Bundle: {}",
            body.to_string().chars().take(200).collect::<String>()
        ));
    }
    let mut matches = Vec::new();
    let mut included = Vec::new();
    for e in body["entry"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        match e["search"]["mode"].as_str() {
            Some("include") => included.push(&e["resource"]),
            _ => matches.push(&e["resource"]),
        }
    }
    Ok((matches, included))
}

fn str_of<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Checks a page's content against what the generator wrote.
fn check(expect: &Expect, matches: &[&Value], included: &[&Value]) -> Result<(), String> {
    let fail = |what: String| Err(what);
    match expect {
        Expect::FamilyPrefix(prefix) => {
            for m in matches {
                let fam = str_of(m, "/name/0/family").to_lowercase();
                if !fam.starts_with(prefix.as_str()) {
                    return fail(format!("{} has family {fam}, not {prefix}*", m["id"]));
                }
            }
        }
        Expect::Identifier(value) => {
            if matches.len() != 1 || str_of(matches[0], "/identifier/0/value") != value {
                return fail(format!("identifier {value}: {} matches", matches.len()));
            }
        }
        Expect::Birthdate(lo, hi) => {
            for m in matches {
                let b = str_of(m, "/birthDate");
                if b < lo.as_str() || b >= hi.as_str() {
                    return fail(format!("{} born {b}, outside [{lo}, {hi})", m["id"]));
                }
            }
        }
        Expect::Appointment {
            practitioner,
            lo,
            hi,
        } => {
            let patients: HashSet<&str> = included
                .iter()
                .filter(|i| i["resourceType"] == "Patient")
                .map(|i| str_of(i, "/id"))
                .collect();
            if patients.len() != included.len() {
                return fail("an included resource is not a Patient".into());
            }
            for m in matches {
                let start = str_of(m, "/start");
                if start < lo.as_str() || start >= hi.as_str() {
                    return fail(format!("{} starts {start}, outside [{lo}, {hi})", m["id"]));
                }
                let actors: Vec<&str> = m["participant"]
                    .as_array()
                    .map(|a| a.iter().map(|p| str_of(p, "/actor/reference")).collect())
                    .unwrap_or_default();
                if !actors.contains(&practitioner.as_str()) {
                    return fail(format!("{} is not with {practitioner}", m["id"]));
                }
                let patient = actors
                    .iter()
                    .find_map(|a| a.strip_prefix("Patient/"))
                    .unwrap_or("");
                if !patients.contains(patient) {
                    return fail(format!("Patient/{patient} of {} is not included", m["id"]));
                }
            }
        }
        Expect::Slot { schedule, lo, hi } => {
            for m in matches {
                let start = str_of(m, "/start");
                if str_of(m, "/schedule/reference") != schedule
                    || str_of(m, "/status") != "free"
                    || start < lo.as_str()
                    || start >= hi.as_str()
                {
                    return fail(format!("{} does not match", m["id"]));
                }
            }
        }
        Expect::ChainedFamily(prefix) => {
            for m in matches {
                let subject = str_of(m, "/subject/reference");
                let u: u64 = subject
                    .strip_prefix("Patient/pat-")
                    .and_then(|n| n.parse().ok())
                    .ok_or(format!("{} has subject {subject}", m["id"]))?;
                let fam = family_of(u).to_lowercase();
                if !fam.starts_with(prefix.as_str()) {
                    return fail(format!("{} is for a {fam}, not {prefix}*", m["id"]));
                }
            }
        }
        Expect::RevInclude { id, prescriptions } => {
            if matches.len() != 1 || str_of(matches[0], "/id") != id {
                return fail(format!("_id={id}: {} matches", matches.len()));
            }
            if included.len() != *prescriptions
                || included.iter().any(|i| {
                    i["resourceType"] != "MedicationRequest"
                        || str_of(i, "/subject/reference") != format!("Patient/{id}")
                })
            {
                return fail(format!(
                    "_revinclude of {id}: {} included, {prescriptions} expected",
                    included.len()
                ));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// bench

#[derive(Default)]
struct Outcome {
    error: Option<String>,
    wrong: Option<String>,
    entries: usize,
    matches: usize,
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let r = client
        .get(url)
        .header("accept", "application/fhir+json")
        .send()
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = r.status();
    let bytes = r.bytes().await.map_err(|e| format!("body: {e}"))?;
    if status != 200 {
        return Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&bytes)
                .chars()
                .take(300)
                .collect::<String>()
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("JSON: {e}"))
}

async fn run_one(client: &reqwest::Client, base: &str, req: &Request) -> Outcome {
    let body = match get_json(client, &url(base, req.resource_type, &req.params)).await {
        Ok(b) => b,
        Err(e) => {
            return Outcome {
                error: Some(e),
                ..Outcome::default()
            }
        }
    };
    let (matches, included) = match entries(&body) {
        Ok(x) => x,
        Err(e) => {
            return Outcome {
                error: Some(e),
                ..Outcome::default()
            }
        }
    };
    let count = req
        .params
        .iter()
        .find(|(k, _)| k == "_count")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(20);
    Outcome {
        error: None,
        wrong: if matches.len() != req.total.min(count) {
            Some(format!(
                "{} matches on the first page; {} match in all (page size {count})",
                matches.len(),
                req.total
            ))
        } else {
            check(&req.expect, &matches, &included).err()
        },
        entries: matches.len() + included.len(),
        matches: matches.len(),
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e3
}

struct Measured {
    name: String,
    conns: usize,
    latencies: Vec<Duration>,
    wall: Duration,
    errors: u64,
    wrong: u64,
    entries: u64,
    matches: u64,
}

fn header() {
    println!(
        "{:<22} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>8} {:>8}",
        "query",
        "conns",
        "requests",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
        "wrong",
        "entries",
        "matches"
    );
}

fn print_row(r: &mut Measured) {
    r.latencies.sort();
    let n = r.latencies.len().max(1) as f64;
    let p95 = pct(&r.latencies, 0.95);
    println!(
        "{:<22} {:>5} {:>8} {:>8.1} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>6} {:>8.1} {:>8.1}{}",
        r.name,
        r.conns,
        r.latencies.len(),
        r.latencies.len() as f64 / r.wall.as_secs_f64(),
        pct(&r.latencies, 0.50),
        p95,
        pct(&r.latencies, 0.99),
        r.errors,
        r.wrong,
        r.entries as f64 / n,
        r.matches as f64 / n,
        if r.conns == 1 && p95 >= 20.0 {
            "  <- p95 over 20 ms"
        } else {
            ""
        }
    );
}

fn clients(n: usize) -> Arc<Vec<reqwest::Client>> {
    Arc::new(
        (0..n)
            .map(|_| {
                reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap()
            })
            .collect(),
    )
}

/// Runs `kind` on `conns` connections for `seconds` (after a warm-up).
async fn measure(
    kind: Kind,
    conns: usize,
    args: &BenchArgs,
    sizes: Arc<Sizes>,
    samples: Arc<Mutex<Vec<String>>>,
) -> Measured {
    let clients = clients(conns);
    let base = Arc::new(args.base.clone());
    let mut row = Measured {
        name: kind.name().to_string(),
        conns,
        latencies: Vec::new(),
        wall: Duration::ZERO,
        errors: 0,
        wrong: 0,
        entries: 0,
        matches: 0,
    };
    for (phase, secs) in [(0u64, args.warmup), (1, args.seconds)] {
        if secs <= 0.0 {
            continue;
        }
        let started = Instant::now();
        let until = started + Duration::from_secs_f64(secs);
        let tasks: Vec<_> = (0..conns)
            .map(|w| {
                let (clients, base, samples, sizes) = (
                    clients.clone(),
                    base.clone(),
                    samples.clone(),
                    sizes.clone(),
                );
                tokio::spawn(async move {
                    let mut rng = Rng::new(
                        S_BENCH + kind as u64,
                        (phase << 40) + ((conns as u64) << 20) + w as u64,
                    );
                    let mut lat = Vec::new();
                    let (mut errors, mut wrong, mut entries, mut matches) = (0, 0, 0, 0);
                    while Instant::now() < until {
                        let req = request(kind, &sizes, &mut rng);
                        let t = Instant::now();
                        let o = run_one(&clients[w], &base, &req).await;
                        lat.push(t.elapsed());
                        entries += o.entries as u64;
                        matches += o.matches as u64;
                        if let Some(e) = o.error.or(o.wrong.clone().map(|w| format!("WRONG {w}"))) {
                            if o.wrong.is_some() {
                                wrong += 1;
                            } else {
                                errors += 1;
                            }
                            let mut s = samples.lock().unwrap();
                            if s.len() < 20 {
                                s.push(format!(
                                    "{} {}: {e}",
                                    kind.name(),
                                    url("", req.resource_type, &req.params)
                                ));
                            }
                        }
                    }
                    (lat, errors, wrong, entries, matches)
                })
            })
            .collect();
        let mut all = Vec::new();
        let (mut errors, mut wrong, mut entries, mut matches) = (0, 0, 0, 0);
        for t in tasks {
            let (l, e, w, en, m) = t.await.expect("a worker");
            all.extend(l);
            errors += e;
            wrong += w;
            entries += en;
            matches += m;
        }
        if phase == 1 {
            row.wall = started.elapsed();
            row.latencies = all;
            row.errors = errors;
            row.wrong = wrong;
            row.entries = entries;
            row.matches = matches;
        }
    }
    row
}

/// Walks `Slot?status=free&_count=50` by its `next` links, `pages` deep, on every connection
/// at once, for `seconds` (on one connection: at least one whole walk). Latency by page number.
async fn deep_paging(
    conns: usize,
    args: &BenchArgs,
    samples: Arc<Mutex<Vec<String>>>,
) -> (Measured, BTreeMap<usize, Vec<Duration>>) {
    let clients = clients(conns);
    let base = Arc::new(args.base.clone());
    let pages = args.pages;
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.seconds);
    let tasks: Vec<_> = (0..conns)
        .map(|w| {
            let (clients, base, samples) = (clients.clone(), base.clone(), samples.clone());
            tokio::spawn(async move {
                let mut by_page: Vec<Vec<Duration>> = vec![Vec::new(); pages + 1];
                let (mut errors, mut wrong, mut n_entries) = (0u64, 0u64, 0u64);
                let mut walks = 0;
                // On one connection the walk always goes `pages` deep, however long it takes,
                // to show the cost by page number; on more, walks stop at the deadline.
                while (walks == 0 && conns == 1) || Instant::now() < until {
                    walks += 1;
                    let mut next = Some(url(
                        &base,
                        "Slot",
                        &[
                            ("status".into(), "free".into()),
                            ("_count".into(), "50".into()),
                        ],
                    ));
                    let mut seen: HashSet<String> = HashSet::new();
                    let mut page = 0;
                    while let Some(u) = next.take() {
                        page += 1;
                        if page > pages || (conns > 1 && Instant::now() >= until) {
                            break;
                        }
                        let t = Instant::now();
                        let body = get_json(&clients[w], &u).await;
                        by_page[page].push(t.elapsed());
                        let problem = match body {
                            Err(e) => {
                                errors += 1;
                                Some(e)
                            }
                            Ok(body) => match entries(&body) {
                                Err(e) => {
                                    errors += 1;
                                    Some(e)
                                }
                                Ok((matches, _)) => {
                                    n_entries += matches.len() as u64;
                                    next = body["link"].as_array().and_then(|links| {
                                        links
                                            .iter()
                                            .find(|l| l["relation"] == "next")
                                            .and_then(|l| l["url"].as_str().map(str::to_string))
                                    });
                                    let bad = matches.iter().find(|m| {
                                        str_of(m, "/status") != "free"
                                            || !seen.insert(str_of(m, "/id").to_string())
                                    });
                                    let short = matches.len() != 50 && next.is_some();
                                    if bad.is_some() || short {
                                        wrong += 1;
                                        Some(format!(
                                            "WRONG page {page}: {}",
                                            if short {
                                                format!("{} entries", matches.len())
                                            } else {
                                                format!(
                                                    "{} repeated or not free",
                                                    bad.unwrap()["id"]
                                                )
                                            }
                                        ))
                                    } else {
                                        None
                                    }
                                }
                            },
                        };
                        if let Some(p) = problem {
                            let mut s = samples.lock().unwrap();
                            if s.len() < 20 {
                                s.push(format!("slot-deep-paging {p}"));
                            }
                        }
                    }
                }
                (by_page, errors, wrong, n_entries)
            })
        })
        .collect();
    let mut by_page: BTreeMap<usize, Vec<Duration>> = BTreeMap::new();
    let (mut errors, mut wrong, mut entries) = (0, 0, 0);
    let mut all = Vec::new();
    for t in tasks {
        let (pages, e, w, en) = t.await.expect("a walker");
        for (n, lats) in pages.into_iter().enumerate().skip(1) {
            all.extend(lats.iter().copied());
            by_page.entry(n).or_default().extend(lats);
        }
        errors += e;
        wrong += w;
        entries += en;
    }
    (
        Measured {
            name: "slot-deep-paging".into(),
            conns,
            latencies: all,
            wall: started.elapsed(),
            errors,
            wrong,
            entries,
            matches: entries,
        },
        by_page,
    )
}

async fn count_of(client: &reqwest::Client, base: &str, rtype: &str) -> Result<u64, String> {
    let body = get_json(client, &format!("{base}/{rtype}?_summary=count")).await?;
    body["total"]
        .as_u64()
        .ok_or(format!("no total in {rtype}?_summary=count"))
}

async fn bench(args: BenchArgs) -> Result<(), String> {
    let client = reqwest::Client::new();
    let patients = count_of(&client, &args.base, "Patient").await?;
    let practitioners = count_of(&client, &args.base, "Practitioner").await?;
    let slots = count_of(&client, &args.base, "Slot").await?;
    if patients == 0 || practitioners == 0 {
        return Err("the server holds no patients or practitioners: run `load` first".into());
    }
    let layout = Layout::new(practitioners * 100);
    let t = Instant::now();
    let sizes = Arc::new(Sizes {
        patients,
        practitioners,
        layout,
        truth: Truth::new(&layout, patients),
    });
    println!(
        "expected answers regenerated from the seed in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    println!(
        "server {}: {patients} patients, {practitioners} practitioners, {slots} slots; load average {}",
        args.base,
        loadavg()
    );
    println!(
        "each measurement: {:.0}s warm-up, then {:.0}s; parameters vary per request (seeded); every \
         response is checked (200, searchset Bundle) and its content compared with the generator's \
         (wrong = a 200 with the wrong content)",
        args.warmup, args.seconds
    );
    let samples = Arc::new(Mutex::new(Vec::new()));
    let rss_before = args.pid.and_then(|p| rss_kib(&p.to_string()));
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let mut rows = Vec::new();
    let mut paging = Vec::new();
    header();
    for &conns in &args.connections {
        for kind in KINDS {
            if !wanted(kind.name()) {
                continue;
            }
            let mut row = measure(kind, conns, &args, sizes.clone(), samples.clone()).await;
            print_row(&mut row);
            rows.push(row);
        }
        if wanted("slot-deep-paging") {
            let (mut row, by_page) = deep_paging(conns, &args, samples.clone()).await;
            print_row(&mut row);
            rows.push(row);
            paging.push((conns, by_page));
        }
        println!("  (load average {})", loadavg());
    }
    for (conns, by_page) in paging {
        println!(
            "\ndeep paging, Slot?status=free&_count=50 followed by next links, {conns} connection(s):"
        );
        println!(
            "{:>9} {:>8} {:>8} {:>8} {:>8}",
            "pages", "samples", "p50 ms", "p95 ms", "max ms"
        );
        let deepest = by_page.keys().copied().max().unwrap_or(0);
        let mut edges = vec![1, 2, 11, 51, 101, 151, 201];
        edges.retain(|e| *e <= deepest);
        edges.push(deepest + 1);
        for w in edges.windows(2) {
            let mut lats: Vec<Duration> = by_page
                .range(w[0]..w[1])
                .flat_map(|(_, l)| l.iter().copied())
                .collect();
            if lats.is_empty() {
                continue;
            }
            lats.sort();
            let label = if w[1] - w[0] == 1 {
                w[0].to_string()
            } else {
                format!("{}-{}", w[0], w[1] - 1)
            };
            println!(
                "{label:>9} {:>8} {:>8.2} {:>8.2} {:>8.2}",
                lats.len(),
                pct(&lats, 0.5),
                pct(&lats, 0.95),
                lats.last()
                    .map(|d| d.as_secs_f64() * 1e3)
                    .unwrap_or(f64::NAN)
            );
        }
    }
    let samples = samples.lock().unwrap();
    if !samples.is_empty() {
        println!("\nfirst problems:");
        for s in samples.iter() {
            println!("  {s}");
        }
    }
    if let Some(pid) = args.pid {
        println!(
            "server RSS before {} KiB, after {} KiB",
            rss_before.unwrap_or(0),
            rss_kib(&pid.to_string()).unwrap_or(0)
        );
    }
    println!("load average at the end: {}", loadavg());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// explain

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    binds: &[Bind],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind(s.clone()),
            Bind::Int(i) => q.bind(*i),
            Bind::Float(f) => q.bind(*f),
        };
    }
    q
}

fn literal(b: &Bind) -> String {
    match b {
        Bind::Text(s) => format!("'{}'", s.replace('\'', "''")),
        Bind::Int(i) => i.to_string(),
        Bind::Float(f) => format!("{f:?}::float8"),
    }
}

struct PlanSummary {
    indexes: Vec<String>,
    seq_scans: Vec<String>,
    planning: String,
    execution: String,
}

fn summarise(plan: &[String]) -> PlanSummary {
    let mut s = PlanSummary {
        indexes: Vec::new(),
        seq_scans: Vec::new(),
        planning: String::new(),
        execution: String::new(),
    };
    for line in plan {
        let l = line.trim_start().trim_start_matches("->").trim();
        for marker in [
            "Index Scan using ",
            "Index Only Scan using ",
            "Bitmap Index Scan on ",
        ] {
            if let Some(pos) = l.find(marker) {
                let name = l[pos + marker.len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let tag = if marker.starts_with("Index Only") {
                    format!("{name} (index only)")
                } else if marker.starts_with("Bitmap") {
                    format!("{name} (bitmap)")
                } else {
                    name
                };
                if !s.indexes.contains(&tag) {
                    s.indexes.push(tag);
                }
            }
        }
        if let Some(pos) = l.find("Seq Scan on ") {
            let rest = &l[pos + "Seq Scan on ".len()..];
            let table = rest.split_whitespace().next().unwrap_or("");
            let rows = rest
                .find("(actual")
                .map(|p| rest[p..].split(')').next().unwrap_or("").to_string() + ")")
                .unwrap_or_default();
            s.seq_scans.push(format!("{table} {rows}"));
        }
        if let Some(t) = l.strip_prefix("Planning Time: ") {
            s.planning = t.to_string();
        }
        if let Some(t) = l.strip_prefix("Execution Time: ") {
            s.execution = t.to_string();
        }
    }
    s
}

fn print_plan(title: &str, plan: &[String]) -> PlanSummary {
    println!("--- {title}");
    for line in plan {
        let flag = if line.contains("Seq Scan") {
            "   <== SEQ SCAN"
        } else {
            ""
        };
        println!("    {line}{flag}");
    }
    let s = summarise(plan);
    println!(
        "    indexes: {}",
        if s.indexes.is_empty() {
            "none".to_string()
        } else {
            s.indexes.join(", ")
        }
    );
    if !s.seq_scans.is_empty() {
        println!("    SEQ SCANS: {}", s.seq_scans.join("; "));
    }
    s
}

async fn explain_one(
    conn: &mut sqlx::PgConnection,
    label: &str,
    sql: &Sql,
    generic: bool,
    summary: &mut Vec<(String, PlanSummary, Option<PlanSummary>)>,
) -> Result<(), String> {
    println!("\n=== {label}");
    println!("SQL: {}", sql.text);
    println!("binds: {:?}", sql.binds);
    let text = format!("EXPLAIN (ANALYZE, BUFFERS) {}", sql.text);
    let mut plan = Vec::new();
    let mut cold = String::new();
    // Twice: the first run may read from disk; the second shows the warm plan.
    for run in 0..2 {
        let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(text.clone())), &sql.binds)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| format!("{label}: {e}"))?;
        plan = rows
            .iter()
            .map(|r| r.try_get::<String, _>(0).unwrap_or_default())
            .collect();
        if run == 0 {
            cold = summarise(&plan).execution;
        }
    }
    println!("(first run: execution {cold})");
    let custom = print_plan("custom plan (values known to the planner), warm", &plan);
    let generic = if generic {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PREPARE hb_q AS {}", sql.text)))
            .execute(&mut *conn)
            .await
            .map_err(|e| format!("PREPARE {label}: {e}"))?;
        sqlx::raw_sql("SET plan_cache_mode = force_generic_plan")
            .execute(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
        let args: Vec<String> = sql.binds.iter().map(literal).collect();
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, BUFFERS) EXECUTE hb_q({})",
            args.join(", ")
        )))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| format!("EXECUTE {label}: {e}"));
        sqlx::raw_sql("DEALLOCATE hb_q; RESET plan_cache_mode")
            .execute(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
        let plan: Vec<String> = rows?
            .iter()
            .map(|r| r.try_get::<String, _>(0).unwrap_or_default())
            .collect();
        Some(print_plan(
            "generic plan (what a pooled prepared statement may switch to)",
            &plan,
        ))
    } else {
        None
    };
    summary.push((label.to_string(), custom, generic));
    Ok(())
}

fn parse_search(rtype: &str, params: &[(String, String)]) -> Result<query::Search, String> {
    query::parse(Registry::r4(), INDEX_BASE, rtype, params, false)
        .map_err(|e| format!("{rtype}: {}: {}", e.param, e.message))
}

/// A labelled search: (label, resource type, parameters).
type Case = (String, &'static str, Vec<(String, String)>);

async fn explain(args: ExplainArgs) -> Result<(), String> {
    let mut conn = PgConnectOptions::from_str(&args.database_url)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let patients: i64 =
        sqlx::query_scalar("SELECT count(*) FROM resource WHERE type = 'Patient' AND NOT deleted")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
    let practitioners: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM resource WHERE type = 'Practitioner' AND NOT deleted",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| e.to_string())?;
    if patients == 0 || practitioners == 0 {
        return Err("the database holds no patients: run `load` first".into());
    }
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN \
         ('shared_buffers', 'work_mem', 'effective_cache_size', 'random_page_cost', 'jit', 'plan_cache_mode')",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(|e| e.to_string())?;
    println!(
        "PostgreSQL {version}; {patients} patients, {practitioners} practitioners; load average {}",
        loadavg()
    );
    println!("settings: {settings:?}");
    let layout = Layout::new(practitioners as u64 * 100);
    let sizes = Sizes {
        patients: patients as u64,
        practitioners: practitioners as u64,
        layout,
        truth: Truth::new(&layout, patients as u64),
    };

    // One representative request per kind (a fixed draw), plus the extremes of selectivity.
    let mut cases: Vec<Case> = Vec::new();
    for kind in KINDS {
        let req = request(kind, &sizes, &mut Rng::new(S_BENCH + 50, kind as u64));
        cases.push((kind.name().to_string(), req.resource_type, req.params));
    }
    let p = |k: &str, v: &str| (k.to_string(), v.to_string());
    cases.push((
        "patient-family (common: Smi)".into(),
        "Patient",
        vec![p("family", "Smi")],
    ));
    cases.push((
        "patient-family (rare: Xu)".into(),
        "Patient",
        vec![p("family", "Xu")],
    ));
    cases.push((
        "medreq-chained (common: Smi)".into(),
        "MedicationRequest",
        vec![p("subject:Patient.family", "Smi"), p("_count", "20")],
    ));
    cases.push((
        "medreq-chained (rare: Xu)".into(),
        "MedicationRequest",
        vec![p("subject:Patient.family", "Xu"), p("_count", "20")],
    ));

    let mut summary = Vec::new();
    for (label, rtype, params) in &cases {
        let search = parse_search(rtype, params)?;
        println!("\n\n##### {label}: {}", url("", rtype, params));
        let sql = search_sql::page_query(Dialect::Postgres, &search, None, search.count + 1);
        explain_one(
            &mut conn,
            &format!("{label}: page"),
            &sql,
            args.generic,
            &mut summary,
        )
        .await?;
        if search.includes.is_empty() && search.revincludes.is_empty() {
            continue;
        }
        // The page's resources, for the include step the server runs next.
        let rows = bind_all(
            sqlx::query(sqlx::AssertSqlSafe(sql.text.clone())),
            &sql.binds,
        )
        .fetch_all(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
        let mut found: Vec<(i64, String, String)> = rows
            .iter()
            .map(|r| (r.get("key"), r.get("type"), r.get("id")))
            .collect();
        found.truncate(search.count);
        let keys: Vec<i64> = found.iter().map(|f| f.0).collect();
        println!("(the page has {} matches)", keys.len());
        for inc in &search.includes {
            let source = (inc.source_type != "*").then_some(inc.source_type.as_str());
            let sql = search_sql::include_query(
                Dialect::Postgres,
                source,
                inc.param.as_deref(),
                inc.target_type.as_deref(),
                &keys,
            );
            explain_one(
                &mut conn,
                &format!("{label}: _include"),
                &sql,
                args.generic,
                &mut summary,
            )
            .await?;
        }
        for inc in &search.revincludes {
            let source = (inc.source_type != "*").then_some(inc.source_type.as_str());
            let targets: Vec<(String, String)> = found
                .iter()
                .filter(|f| inc.target_type.as_deref().is_none_or(|t| t == f.1))
                .map(|f| (f.1.clone(), f.2.clone()))
                .collect();
            let sql = search_sql::revinclude_query(
                Dialect::Postgres,
                source,
                inc.param.as_deref(),
                &targets,
            );
            explain_one(
                &mut conn,
                &format!("{label}: _revinclude"),
                &sql,
                args.generic,
                &mut summary,
            )
            .await?;
        }
    }

    // Deep paging: page 1 and page N of Slot?status=free&_count=50.
    let params = vec![p("status", "free"), p("_count", "50")];
    let search = parse_search("Slot", &params)?;
    println!("\n\n##### slot-deep-paging: {}", url("", "Slot", &params));
    let first = search_sql::page_query(Dialect::Postgres, &search, None, 51);
    explain_one(
        &mut conn,
        "slot-deep-paging: page 1",
        &first,
        args.generic,
        &mut summary,
    )
    .await?;
    // The cursor of page N: the key of the last row of page N-1.
    let skip = 50 * (args.pages - 1);
    let all = search_sql::page_query(Dialect::Postgres, &search, None, skip);
    let last: Option<i64> = bind_all(
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT max(z.key) FROM ({}) z",
            all.text
        ))),
        &all.binds,
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| e.to_string())?
    .get(0);
    let cursor = PageCursor {
        values: Vec::new(),
        key: last.unwrap_or(0),
    };
    let deep = search_sql::page_query(Dialect::Postgres, &search, Some(&cursor), 51);
    explain_one(
        &mut conn,
        &format!("slot-deep-paging: page {}", args.pages),
        &deep,
        args.generic,
        &mut summary,
    )
    .await?;

    println!("\n\n##### summary (warm; custom plan, then generic plan)");
    for (label, custom, generic) in &summary {
        println!("{label}");
        println!(
            "    custom : planning {:>10}  execution {:>10}  indexes: {}{}",
            custom.planning,
            custom.execution,
            custom.indexes.join(", "),
            if custom.seq_scans.is_empty() {
                String::new()
            } else {
                format!("  SEQ SCAN: {}", custom.seq_scans.join("; "))
            }
        );
        if let Some(g) = generic {
            println!(
                "    generic: planning {:>10}  execution {:>10}  indexes: {}{}",
                g.planning,
                g.execution,
                g.indexes.join(", "),
                if g.seq_scans.is_empty() {
                    String::new()
                } else {
                    format!("  SEQ SCAN: {}", g.seq_scans.join("; "))
                }
            );
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Load(a) => load(a).await,
        Command::Bench(a) => bench(a).await,
        Command::Explain(a) => explain(a).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("searchbench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
