//! Every official R4 example (npm package `hl7.fhir.r4.examples` 4.0.1) that is a valid R4
//! resource can be PUT at its id and read back equal, ignoring server-managed meta. The
//! examples Hearth rejects are listed, with the reason, in `tests/r4-examples-rejected.txt`;
//! the test fails if that list and reality disagree in either direction.
//!
//! The package is found at `HEARTH_R4_EXAMPLES` or downloaded once with npm into the target
//! directory. `HEARTH_BLESS=1` rewrites the list of rejections.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Backend, Server};
use futures::StreamExt;
use serde_json::Value;

const PACKAGE: &str = "hl7.fhir.r4.examples@4.0.1";

fn examples_dir() -> PathBuf {
    let dir = std::env::var("HEARTH_R4_EXAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hl7.fhir.r4.examples-4.0.1")
        });
    let package = dir.join("package");
    if package.join("package.json").exists() {
        return package;
    }
    std::fs::create_dir_all(&dir).expect("a directory for the R4 examples");
    let packed = Command::new("npm")
        .args(["pack", PACKAGE, "--pack-destination"])
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("npm is needed to fetch {PACKAGE} (or set HEARTH_R4_EXAMPLES): {e}")
        });
    assert!(
        packed.status.success(),
        "npm pack {PACKAGE} failed: {}",
        String::from_utf8_lossy(&packed.stderr)
    );
    let tarball = dir.join("hl7.fhir.r4.examples-4.0.1.tgz");
    let untar = Command::new("tar")
        .arg("xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dir)
        .status()
        .expect("tar");
    assert!(untar.success(), "cannot unpack {}", tarball.display());
    package
}

/// Drops what the server manages (versionId, lastUpdated) and compares numbers by value.
fn normalise(v: &mut Value) {
    if let Some(meta) = v.get_mut("meta").and_then(Value::as_object_mut) {
        meta.shift_remove("versionId");
        meta.shift_remove("lastUpdated");
        if meta.is_empty() {
            v.as_object_mut().unwrap().shift_remove("meta");
        }
    }
    numbers(v);
}

fn numbers(v: &mut Value) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                *v = Value::String(format!("{f}"));
            }
        }
        Value::Array(a) => a.iter_mut().for_each(numbers),
        Value::Object(o) => o.values_mut().for_each(numbers),
        _ => {}
    }
}

enum Outcome {
    Equal,
    Rejected(String),
    Different(String),
}

async fn round_trip(s: &Server, file: &Path) -> Outcome {
    let text = std::fs::read_to_string(file).unwrap();
    let mut resource: Value = serde_json::from_str(&text).unwrap();
    let t = resource["resourceType"].as_str().unwrap().to_string();
    let id = match resource["id"].as_str() {
        Some(id) => id.to_string(),
        None => {
            let id = format!(
                "hearth-{}",
                file.file_stem()
                    .unwrap()
                    .to_string_lossy()
                    .replace(['_', ' '], "-")
            );
            let id: String = id
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
                .take(64)
                .collect();
            resource["id"] = Value::String(id.clone());
            id
        }
    };
    let r = s.put_json(&format!("{t}/{id}"), &resource).await;
    if !r.status().is_success() {
        let status = r.status();
        let oo: Value = r.json().await.unwrap_or(Value::Null);
        let why = oo["issue"][0]["diagnostics"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        return Outcome::Rejected(format!("{status}: {why}"));
    }
    let mut back: Value = s.get(&format!("{t}/{id}")).await.json().await.unwrap();
    normalise(&mut back);
    normalise(&mut resource);
    if back == resource {
        Outcome::Equal
    } else {
        Outcome::Different(format!("{t}/{id} reads back different"))
    }
}

fn example_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !name.starts_with('.') && name != "package.json" && name != "ig-r4.json"
        })
        .collect();
    files.sort();
    files
}

async fn run(backend: Backend) {
    let Some(s) = Server::start(backend).await else {
        return;
    };
    let files = example_files(&examples_dir());
    assert!(files.len() > 5000, "the package holds the R4 examples");
    let results: Vec<(String, Outcome)> = futures::stream::iter(files.iter())
        .map(|f| async {
            (
                f.file_name().unwrap().to_string_lossy().to_string(),
                round_trip(&s, f).await,
            )
        })
        .buffered(8)
        .collect()
        .await;
    let mut rejected = BTreeMap::new();
    let mut different = Vec::new();
    let mut equal = 0;
    for (name, outcome) in results {
        match outcome {
            Outcome::Equal => equal += 1,
            Outcome::Rejected(why) => {
                rejected.insert(name, why);
            }
            Outcome::Different(why) => different.push(format!("{name}: {why}")),
        }
    }
    eprintln!(
        "R4 examples on {backend:?}: {equal} of {} stored and read back equal, {} rejected, {} different",
        files.len(),
        rejected.len(),
        different.len()
    );
    assert!(
        different.is_empty(),
        "examples that read back different: {different:#?}"
    );

    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/r4-examples-rejected.txt");
    if std::env::var("HEARTH_BLESS").is_ok() {
        let text: String = rejected
            .iter()
            .map(|(n, why)| format!("{n}\t{}\n", why.replace('\n', " ")))
            .collect();
        std::fs::write(&list, text).unwrap();
        return;
    }
    let expected: BTreeMap<String, String> = std::fs::read_to_string(&list)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, why)| (n.to_string(), why.to_string()))
        .collect();
    let unexpected: Vec<_> = rejected
        .iter()
        .filter(|(n, _)| !expected.contains_key(*n))
        .collect();
    let now_accepted: Vec<_> = expected
        .keys()
        .filter(|n| !rejected.contains_key(*n))
        .collect();
    assert!(
        unexpected.is_empty(),
        "rejected, but not listed in {}: {unexpected:#?}",
        list.display()
    );
    assert!(
        now_accepted.is_empty(),
        "listed as rejected, but now accepted: {now_accepted:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_examples_round_trip_on_sqlite() {
    run(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_examples_round_trip_on_postgres() {
    run(Backend::Postgres).await;
}
