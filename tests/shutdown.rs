//! Graceful shutdown, on both backends: requests in flight when the server is told to stop
//! finish, and nothing the server acknowledged is lost. Black box: concurrent creates race the
//! shutdown signal, then a new server on the same database reads every acknowledged create back.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{json, Value};

/// Concurrent clients, and the creates each sends one after the other.
const TASKS: usize = 20;
const PER_TASK: usize = 10;
/// Shutdown is signalled once this many creates have been acknowledged: well before the end.
const SIGNAL_AFTER: usize = 40;
/// Hang guards only, never timing assertions.
const HANG_GUARD: Duration = Duration::from_secs(30);

// On a runtime of its own, ended when `serve` returns as the process would end: a `serve` that
// returned before its requests were done would show here as requests cut off.
on_both_backends!(start = start_on_own_runtime; acknowledged_creates_survive_shutdown);

/// One create: when it was sent and answered, and how.
struct Attempt {
    family: String,
    started: Instant,
    finished: Instant,
    /// The status and body, or the error of a request that got no response.
    outcome: Result<(u16, Value), reqwest::Error>,
}

async fn acknowledged_creates_survive_shutdown(s: &Server) {
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(tokio::sync::Notify::new());
    let mut clients = Vec::new();
    for t in 0..TASKS {
        let (client, url) = (s.client.clone(), s.url("Patient"));
        let (acknowledged, enough) = (acknowledged.clone(), enough.clone());
        clients.push(tokio::spawn(async move {
            let mut attempts = Vec::new();
            for i in 0..PER_TASK {
                let family = format!("Shutdown-{t}-{i}");
                let body = json!({"resourceType": "Patient", "active": true,
                    "name": [{"family": family, "given": ["Grace"]}]});
                let started = Instant::now();
                let sent = client
                    .post(&url)
                    .header("content-type", "application/fhir+json")
                    .body(body.to_string())
                    .send()
                    .await;
                let outcome = match sent {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        // A response that starts must arrive whole: shutdown cuts no body short.
                        let text = r.text().await.expect("a whole response body");
                        let body = serde_json::from_str(&text)
                            .unwrap_or_else(|_| panic!("a JSON body, got ({status}): {text}"));
                        Ok((status, body))
                    }
                    Err(e) => Err(e),
                };
                let finished = Instant::now();
                if matches!(outcome, Ok((201, _)))
                    && acknowledged.fetch_add(1, Ordering::SeqCst) + 1 == SIGNAL_AFTER
                {
                    enough.notify_one();
                }
                attempts.push(Attempt {
                    family,
                    started,
                    finished,
                    outcome,
                });
            }
            attempts
        }));
    }

    tokio::time::timeout(HANG_GUARD, enough.notified())
        .await
        .expect("the first creates are acknowledged");
    let signalled = Instant::now();
    tokio::time::timeout(HANG_GUARD, s.shutdown())
        .await
        .expect("shutdown completes: Hearth::serve returns")
        .expect("Hearth::serve returns Ok");
    let stopped = Instant::now();

    let mut attempts = Vec::new();
    for c in clients {
        attempts.extend(
            tokio::time::timeout(HANG_GUARD, c)
                .await
                .expect("the clients finish")
                .expect("a client task"),
        );
    }
    assert_eq!(attempts.len(), TASKS * PER_TASK);

    let mut created = Vec::new();
    let (mut in_flight, mut finished_after, mut refused) = (0, 0, 0);
    for a in &attempts {
        if a.started < signalled && a.finished > signalled {
            in_flight += 1;
        }
        match &a.outcome {
            Ok((201, body)) => {
                assert_eq!(body["name"][0]["family"], a.family, "{body}");
                if a.finished > signalled {
                    finished_after += 1;
                }
                created.push(body.clone());
            }
            Ok((503, body)) => {
                // Acceptable for a request sent to a server already going away; a request sent
                // before is either served or, if the server had not read it yet, cut off.
                assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
                assert!(
                    a.started > signalled,
                    "a create sent before shutdown was answered 503: {body}"
                );
                refused += 1;
            }
            Ok((status, body)) => panic!("create answered {status}: {body}"),
            Err(e) => {
                // Refused because the server was going away: only after the signal, and a
                // connection error, not a request left hanging.
                assert!(
                    a.finished > signalled,
                    "a create failed before shutdown: {e}"
                );
                assert!(!e.is_timeout(), "a create timed out: {e}");
                refused += 1;
            }
        }
    }
    eprintln!(
        "{:?}: {} acknowledged ({finished_after} answered after the signal), {refused} refused, \
         {in_flight} in flight at the signal; shutdown took {:?}",
        s.backend,
        created.len(),
        stopped - signalled
    );
    // Not vacuous: creates were acknowledged, shutdown came while requests were in flight,
    // some of those still completed, and the creates sent later were refused.
    assert!(created.len() >= SIGNAL_AFTER);
    assert!(in_flight > 0, "no request was in flight at the signal");
    assert!(
        finished_after > 0,
        "no request in flight at the signal was allowed to finish"
    );
    assert!(
        refused > 0,
        "the server kept accepting creates after shutdown"
    );

    // The server is gone ...
    assert!(
        s.client.get(s.url("metadata")).send().await.is_err(),
        "the server still answers after shutdown"
    );
    // ... and a new one on the same database has every acknowledged create, as acknowledged.
    let again = s.reopen().await;
    for body in &created {
        let id = body["id"].as_str().expect("an id");
        let r = again.get(&format!("Patient/{id}")).await;
        assert_eq!(r.status(), 200, "acknowledged Patient/{id} is lost");
        assert_eq!(&r.json::<Value>().await.unwrap(), body);
    }
    assert!(again.version_count("Patient").await >= created.len());
}
