//! Load generator: drives a running Hearth with N concurrent connections and prints
//! throughput and p50/p95/p99 latency for create, read, search and update of Patients. With
//! `--raw-postgres URL` it runs the same work as raw SQL against PostgreSQL instead (the same
//! insert of a resource row, its version row and its search index rows; one select by key), so Hearth can be stated
//! as a ratio of what the database alone does. With `--pid` it samples the server's resident
//! memory. On Linux it also prints the CPU time each request cost in the server (`--pid`), in
//! the local PostgreSQL processes and in this generator, and the share of time the machine
//! lost to its host (steal): figures that stay comparable when throughput is noisy. With
//! `--against URL` it compares two servers (say, auditing on and off) in alternating slices
//! of reads and searches, and prints the ratio of their throughputs.
//!
//! ```text
//! cargo run --release --example loadgen -- --base http://127.0.0.1:8080/fhir --connections 64 --pid $(pgrep hearth)
//! cargo run --release --example loadgen -- --base http://127.0.0.1:8081/fhir --against http://127.0.0.1:8080/fhir --connections 32 --reads 40000
//! cargo run --release --example loadgen -- --raw-postgres postgres://postgres@127.0.0.1/bench --connections 64
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser, Clone)]
struct Args {
    /// FHIR base URL of the server under test.
    #[arg(long, default_value = "http://127.0.0.1:8080/fhir")]
    base: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Requests per scenario.
    #[arg(long, default_value_t = 3000)]
    requests: usize,
    /// Requests of the read and search scenarios, if not `--requests` (a longer read phase,
    /// for profiling).
    #[arg(long)]
    reads: Option<usize>,
    /// PID of the server, to report its resident memory.
    #[arg(long)]
    pid: Option<u32>,
    /// Run the equivalent raw SQL against this PostgreSQL database (migrated by `hearth migrate`).
    #[arg(long)]
    raw_postgres: Option<String>,
    /// A second server to compare with (B; `--base` is A): read and search run on both in
    /// alternating slices and the ratio of their throughputs is printed (create and update
    /// only seed the data).
    #[arg(long)]
    against: Option<String>,
    /// Requests per slice in a comparison (`--against`).
    #[arg(long, default_value_t = 2000)]
    slice: usize,
    /// A bearer token to send (from `hearth token`), for a server with authorization on.
    #[arg(long, env = "HEARTH_TOKEN")]
    token: Option<String>,
}

fn patient(i: usize) -> Value {
    json!({"resourceType": "Patient", "active": true,
        "identifier": [{"system": "http://example.org/mrn", "value": format!("MRN{i:08}")}],
        "name": [{"family": format!("Family{i}"), "given": ["Given", "Middle"]}],
        "gender": if i.is_multiple_of(2) { "female" } else { "male" }, "birthDate": "1980-06-15",
        "address": [{"line": ["1 Main Street"], "city": "Springfield", "postalCode": "12345"}]})
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (clock ticks) spent so far by the server, by PostgreSQL, by this generator, and
/// the machine's ticks in total and stolen by its host. From `/proc` (zero elsewhere).
#[derive(Clone, Copy, Default)]
struct Cpu {
    server: u64,
    postgres: u64,
    generator: u64,
    machine: u64,
    /// Idle and waiting for I/O.
    idle: u64,
    steal: u64,
}

static SERVER_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// utime + stime of a process, from `/proc/<pid>/stat`, with its command name.
fn process_ticks(stat_path: &std::path::Path) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15 (1-based, `man 5 proc`).
    Some((
        name,
        fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?,
    ))
}

impl Cpu {
    fn now() -> Cpu {
        let mut cpu = Cpu::default();
        if let Some(pid) = SERVER_PID.get() {
            let path = format!("/proc/{pid}/stat");
            cpu.server = process_ticks(path.as_ref()).map_or(0, |(_, t)| t);
        }
        cpu.generator = process_ticks("/proc/self/stat".as_ref()).map_or(0, |(_, t)| t);
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            if let Some((name, ticks)) = process_ticks(&entry.path().join("stat")) {
                if name == "postgres" {
                    cpu.postgres += ticks;
                }
            }
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
            if let Some(line) = stat.lines().next() {
                let ticks: Vec<u64> = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|t| t.parse().ok())
                    .collect();
                cpu.machine = ticks.iter().take(8).sum();
                cpu.steal = ticks.get(7).copied().unwrap_or(0);
                cpu.idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
            }
        }
        cpu
    }

    fn since(self, start: Cpu) -> Cpu {
        Cpu {
            server: self.server.saturating_sub(start.server),
            postgres: self.postgres.saturating_sub(start.postgres),
            generator: self.generator.saturating_sub(start.generator),
            machine: self.machine.saturating_sub(start.machine),
            steal: self.steal.saturating_sub(start.steal),
            idle: self.idle.saturating_sub(start.idle),
        }
    }

    fn add(self, other: Cpu) -> Cpu {
        Cpu {
            server: self.server + other.server,
            postgres: self.postgres + other.postgres,
            generator: self.generator + other.generator,
            machine: self.machine + other.machine,
            steal: self.steal + other.steal,
            idle: self.idle + other.idle,
        }
    }
}

fn report(
    name: &str,
    conns: usize,
    latencies: Vec<Duration>,
    wall: Duration,
    errors: u64,
    cpu: Cpu,
) {
    let n = latencies.len().max(1) as f64;
    // Clock ticks are 1/100 s on Linux (USER_HZ).
    let micros = |ticks: u64| ticks as f64 * 1e4 / n;
    report_latency(name, conns, latencies, wall, errors);
    println!(
        "{:<14} cpu per request: server {:>5.0}µs  postgres {:>5.0}µs  generator {:>5.0}µs  steal {:>4.1}%",
        "",
        micros(cpu.server),
        micros(cpu.postgres),
        micros(cpu.generator),
        cpu.steal as f64 * 100.0 / cpu.machine.max(1) as f64
    );
}

fn report_latency(
    name: &str,
    conns: usize,
    mut latencies: Vec<Duration>,
    wall: Duration,
    errors: u64,
) {
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1e3
    };
    println!(
        "{name:<14} conns={conns:<3} n={:<6} errors={errors:<4} throughput={:>8.0}/s  p50={:>7.2}ms p95={:>7.2}ms p99={:>7.2}ms",
        latencies.len(),
        latencies.len() as f64 / wall.as_secs_f64(),
        pct(0.50),
        pct(0.95),
        pct(0.99)
    );
}

/// Runs `work(i)` for i in 0..n over `conns` workers; returns latencies, wall time, errors.
async fn drive<F, Fut>(conns: usize, n: usize, work: F) -> (Vec<Duration>, Duration, u64, Cpu)
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let work = Arc::new(work);
    let errors = Arc::new(AtomicU64::new(0));
    let cpu = Cpu::now();
    let started = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|w| {
            let work = work.clone();
            let errors = errors.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(n / conns + 1);
                let mut i = w;
                while i < n {
                    let t = Instant::now();
                    if !work(w, i).await {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    lat.push(t.elapsed());
                    i += conns;
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.expect("a worker"));
    }
    let wall = started.elapsed();
    (
        all,
        wall,
        errors.load(Ordering::Relaxed),
        Cpu::now().since(cpu),
    )
}

async fn http(args: Args) {
    let conns = args.connections;
    let clients: Arc<Vec<reqwest::Client>> = Arc::new(
        (0..conns)
            .map(|_| {
                let mut headers = reqwest::header::HeaderMap::new();
                if let Some(t) = &args.token {
                    headers.insert(
                        reqwest::header::AUTHORIZATION,
                        format!("Bearer {t}").parse().unwrap(),
                    );
                }
                reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .default_headers(headers)
                    .build()
                    .unwrap()
            })
            .collect(),
    );
    let base = Arc::new(args.base.clone());
    let (ids, (lat, wall, err, cpu)) = create_all(&clients, &base, args.requests).await;
    report("create", conns, lat, wall, err, cpu);
    if let Some(other) = &args.against {
        let other = Arc::new(other.clone());
        let (other_ids, _) = create_all(&clients, &other, args.requests).await;
        let reads = args.reads.unwrap_or(args.requests);
        let servers = [(base, ids), (other, other_ids)];
        paired("read", &clients, &servers, reads, args.slice, read).await;
        paired("search", &clients, &servers, reads, args.slice, search).await;
        return;
    }

    let reads = args.reads.unwrap_or(args.requests);
    let (c, b, i2) = (clients.clone(), base.clone(), ids.clone());
    let (lat, wall, err, cpu) = drive(conns, reads, move |w, i| {
        read(c[w].clone(), b.clone(), i2.clone(), i)
    })
    .await;
    report("read", conns, lat, wall, err, cpu);

    let (c, b, i2) = (clients.clone(), base.clone(), ids.clone());
    let (lat, wall, err, cpu) = drive(conns, reads, move |w, i| {
        search(c[w].clone(), b.clone(), i2.clone(), i)
    })
    .await;
    report("search", conns, lat, wall, err, cpu);

    let (c, b, i2) = (clients.clone(), base.clone(), ids.clone());
    let (lat, wall, err, cpu) = drive(conns, args.requests, move |w, i| {
        let (c, b, ids) = (c.clone(), b.clone(), i2.clone());
        async move {
            let id = &ids[i];
            let mut p = patient(i);
            p["id"] = json!(id);
            p["active"] = json!(false);
            let r = c[w]
                .put(format!("{b}/Patient/{id}"))
                .header("content-type", "application/fhir+json")
                .header("prefer", "return=minimal")
                .body(p.to_string())
                .send()
                .await;
            matches!(r, Ok(r) if r.status() == 200)
        }
    })
    .await;
    report("update", conns, lat, wall, err, cpu);
}

type Clients = Arc<Vec<reqwest::Client>>;
type Figures = (Vec<Duration>, Duration, u64, Cpu);

/// Creates `n` Patients on `base`: their ids, and the phase's figures.
async fn create_all(
    clients: &Clients,
    base: &Arc<String>,
    n: usize,
) -> (Arc<Vec<String>>, Figures) {
    let ids = Arc::new(std::sync::Mutex::new(vec![String::new(); n]));
    let (c, b, i2) = (clients.clone(), base.clone(), ids.clone());
    let figures = drive(clients.len(), n, move |w, i| {
        let (c, b, ids) = (c.clone(), b.clone(), i2.clone());
        async move {
            let r = c[w]
                .post(format!("{b}/Patient"))
                .header("content-type", "application/fhir+json")
                .header("prefer", "return=minimal")
                .body(patient(i).to_string())
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 201 => {
                    let loc = r.headers()["location"].to_str().unwrap().to_string();
                    ids.lock().unwrap()[i] = loc.split('/').rev().nth(2).unwrap().to_string();
                    true
                }
                _ => false,
            }
        }
    })
    .await;
    let ids = Arc::new(ids.lock().unwrap().clone());
    (ids, figures)
}

/// A read of one of the Patients `ids`.
async fn read(c: reqwest::Client, base: Arc<String>, ids: Arc<Vec<String>>, i: usize) -> bool {
    let id = &ids[(i * 7919) % ids.len()];
    match c.get(format!("{base}/Patient/{id}")).send().await {
        Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
        _ => false,
    }
}

/// A search by identifier (one match), or by family name with a page of results.
async fn search(c: reqwest::Client, base: Arc<String>, ids: Arc<Vec<String>>, i: usize) -> bool {
    let k = (i * 7919) % ids.len();
    let query = if i.is_multiple_of(2) {
        format!("identifier=http://example.org/mrn|MRN{k:08}")
    } else {
        format!("family=Family{}&_count=20", k / 10)
    };
    match c.get(format!("{base}/Patient?{query}")).send().await {
        Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
        _ => false,
    }
}

/// Runs `total` requests of `work` against two servers (each with its own Patients) in
/// alternating slices, ABBA, with a pause after each slice for background work (the audit
/// writer and sealer) to finish. Drift on the machine (steal, checkpoints) then falls on both
/// alike, and the ratio of their throughputs is steadier than two separate runs give.
async fn paired<F, Fut>(
    name: &str,
    clients: &Clients,
    servers: &[(Arc<String>, Arc<Vec<String>>); 2],
    total: usize,
    slice: usize,
    work: F,
) where
    F: Fn(reqwest::Client, Arc<String>, Arc<Vec<String>>, usize) -> Fut
        + Copy
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let conns = clients.len();
    let slice = slice.max(conns);
    let mut latencies = [Vec::new(), Vec::new()];
    let mut walls = [Duration::ZERO; 2];
    let mut errors = [0; 2];
    let mut cpus = [Cpu::default(); 2];
    let mut ratios = Vec::new();
    for round in 0..total.div_ceil(slice) {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut rates = [0.0; 2];
        for side in order {
            let (c, (b, ids)) = (clients.clone(), servers[side].clone());
            let offset = round * slice;
            let (lat, wall, err, cpu) = drive(conns, slice, move |w, i| {
                work(c[w].clone(), b.clone(), ids.clone(), offset + i)
            })
            .await;
            rates[side] = lat.len() as f64 / wall.as_secs_f64();
            latencies[side].extend(lat);
            walls[side] += wall;
            errors[side] += err;
            cpus[side] = cpus[side].add(cpu);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        ratios.push(rates[1] / rates[0]);
    }
    let [a, b] = latencies;
    let rate = |lat: &Vec<Duration>, wall: Duration| lat.len() as f64 / wall.as_secs_f64();
    let ratio = rate(&b, walls[1]) / rate(&a, walls[0]);
    ratios.sort_by(f64::total_cmp);
    let (low, median, high) = (
        ratios[ratios.len() / 10],
        ratios[ratios.len() / 2],
        ratios[(ratios.len() * 9 / 10).min(ratios.len() - 1)],
    );
    // The machine's busy time per request (all processes, the kernel included): what a
    // request costs when the machine, not latency, is the limit.
    let busy = |cpu: &Cpu, n: usize| {
        let ticks = cpu.machine.saturating_sub(cpu.idle + cpu.steal);
        ticks as f64 * 1e4 / n.max(1) as f64
    };
    let (busy_a, busy_b) = (busy(&cpus[0], a.len()), busy(&cpus[1], b.len()));
    let (pg_a, pg_b) = (
        cpus[0].postgres as f64 * 1e4 / a.len().max(1) as f64,
        cpus[1].postgres as f64 * 1e4 / b.len().max(1) as f64,
    );
    report_latency(&format!("{name} A"), conns, a, walls[0], errors[0]);
    report_latency(&format!("{name} B"), conns, b, walls[1], errors[1]);
    println!(
        "{:<14} busy CPU per request: A {busy_a:.0}µs, B {busy_b:.0}µs (B/A {:.3}); postgres A {pg_a:.0}µs, B {pg_b:.0}µs",
        "",
        busy_b / busy_a.max(1.0),
    );
    println!(
        "{:<14} B/A throughput {ratio:.3} overall; per round: median {median:.3}, \
         10th-90th percentile {low:.3}-{high:.3} ({} rounds of {slice})",
        "",
        ratios.len()
    );
}

async fn raw_postgres(args: Args, url: String) {
    let conns = args.connections;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(conns as u32)
        .connect(&url)
        .await
        .expect("PostgreSQL");
    let pool = Arc::new(pool);
    let p = pool.clone();
    let (lat, wall, err, cpu) = drive(conns, args.requests, move |_, i| {
        let pool = p.clone();
        async move {
            let id = uuid::Uuid::new_v4().to_string();
            let mut body = patient(i);
            body["id"] = json!(id);
            body["meta"] = json!({"versionId": "1", "lastUpdated": "2026-01-01T00:00:00.000000Z"});
            // The same rows Hearth writes: resource, version, and the search index rows.
            let rows = hearth::search::index::extract(
                hearth::search::registry::Registry::r4(),
                &body,
                "http://127.0.0.1:8080/fhir",
            );
            let Ok(mut tx) = pool.begin().await else { return false };
            let key: Option<i64> = sqlx::query_scalar(
                "WITH r AS (
                    INSERT INTO resource (type, id, version, last_updated, body) VALUES ($1, $2, 1, now(), $3)
                    ON CONFLICT (type, id) DO NOTHING RETURNING key, body)
                 INSERT INTO resource_version (key, type, id, version, last_updated, method, body)
                 SELECT key, $1, $2, 1, now(), 'POST', body FROM r RETURNING key",
            )
            .bind("Patient").bind(&id).bind(sqlx::types::Json(&body))
            .fetch_optional(&mut *tx).await.ok().flatten();
            let Some(key) = key else { return false };
            use hearth::store::search_sql::{Bind, Dialect};
            for sql in hearth::store::index_write::inserts(Dialect::Postgres, key, "Patient", &rows) {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.text.clone())).persistent(false);
                for b in &sql.binds {
                    q = match b {
                        Bind::Text(s) => q.bind(s.clone()),
                        Bind::Int(i) => q.bind(*i),
                        Bind::Float(f) => q.bind(*f),
                    };
                }
                if q.execute(&mut *tx).await.is_err() {
                    return false;
                }
            }
            tx.commit().await.is_ok()
        }
    })
    .await;
    report("raw insert", conns, lat, wall, err, cpu);
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT id FROM resource WHERE type = 'Patient' LIMIT 100000")
            .fetch_all(&*pool)
            .await
            .unwrap();
    let keys = Arc::new(keys);
    let p = pool.clone();
    let (lat, wall, err, cpu) = drive(conns, args.requests, move |_, i| {
        let (pool, keys) = (p.clone(), keys.clone());
        async move {
            let id = &keys[(i * 7919) % keys.len()];
            sqlx::query_as::<_, (i64, sqlx::types::Json<Value>)>(
                "SELECT version, body FROM resource WHERE type = $1 AND id = $2",
            )
            .bind("Patient")
            .bind(id)
            .fetch_one(&*pool)
            .await
            .is_ok()
        }
    })
    .await;
    report("raw select", conns, lat, wall, err, cpu);
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    if let Some(pid) = args.pid {
        let _ = SERVER_PID.set(pid);
        println!("server RSS before: {} KiB", rss_kib(pid).unwrap_or(0));
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    match args.raw_postgres.clone() {
        Some(url) => raw_postgres(args.clone(), url).await,
        None => http(args.clone()).await,
    }
    done.store(true, Ordering::Relaxed);
    if let Some(pid) = args.pid {
        println!(
            "server RSS peak: {} KiB, after: {} KiB",
            peak.load(Ordering::Relaxed),
            rss_kib(pid).unwrap_or(0)
        );
    }
}
