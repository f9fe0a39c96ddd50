//! Writing the trail without losing an event. A write's AuditEvent is made by the HTTP layer
//! and committed by the store in the write's own transaction (`store::Trail`). Every other
//! event (reads, searches, refusals) goes through [`AuditLog::record`] into a bounded queue
//! that one task drains in batches: when the queue is full, `record` waits (backpressure), so
//! the server slows down instead of forgetting; when the database fails, the batch is retried
//! until it succeeds. A sealer task links stored events into the hash chain (`chain`) and
//! appends them to the optional NDJSON export. Shutdown flushes both.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Mutex};

use super::chain::link_hash;
use super::event::{Agent, Event};
use crate::error::Result;
use crate::store::audit_events::AuditRecord;
use crate::store::Store;

/// How the trail is kept (from `Config`).
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// False only under `--audit off` (benchmarks): nothing is recorded.
    pub enabled: bool,
    /// Events waiting to be written before `record` makes requests wait.
    pub buffer: usize,
    /// Where sealed events are appended as NDJSON: a file, or `-` for standard output.
    pub export: Option<String>,
}

enum Message {
    /// An event and when it happened (small: the resource is made by the writer).
    Event(Box<Event>, chrono::DateTime<chrono::Utc>),
    /// Answered once everything queued before it is stored.
    Flush(oneshot::Sender<()>),
}

/// The most events one insert transaction carries.
const BATCH: usize = 500;
/// The most event texts kept for the sealer.
const MAX_UNSEALED: usize = 100_000;
/// How long the writer waits for more events before it writes a batch.
const GATHER: Duration = Duration::from_millis(5);
/// The most events one sealing transaction links.
const SEAL_BATCH: i64 = 1000;

pub struct AuditLog {
    enabled: bool,
    /// This server's FHIR base URL, the events' `source`.
    server: String,
    queue: mpsc::Sender<Message>,
    store: Store,
    export: Mutex<Option<Box<dyn std::io::Write + Send>>>,
    /// The text of the events the writer stored and the sealer has not linked yet, by key:
    /// the sealer hashes these without reading them back.
    unsealed: Arc<std::sync::Mutex<HashMap<i64, String>>>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl AuditLog {
    /// Starts the writer and the sealer.
    pub fn start(store: Store, server: String, settings: &AuditSettings) -> Result<Arc<AuditLog>> {
        let export: Option<Box<dyn std::io::Write + Send>> = match settings.export.as_deref() {
            None => None,
            Some("-") => Some(Box::new(std::io::stdout())),
            Some(path) => Some(Box::new(std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        crate::Error::internal(format!("cannot open the audit export {path}: {e}"))
                    })?,
            ))),
        };
        let (queue, rx) = mpsc::channel(settings.buffer.max(1));
        let log = Arc::new(AuditLog {
            enabled: settings.enabled,
            server,
            queue,
            store: store.clone(),
            export: Mutex::new(export),
            unsealed: Default::default(),
            tasks: Default::default(),
        });
        let writer = tokio::spawn(write_loop(
            store,
            log.server.clone(),
            rx,
            log.unsealed.clone(),
        ));
        let sealer = {
            let log = log.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Err(e) = log.seal().await {
                        tracing::warn!(error = e.message(), "sealing the audit chain failed");
                    }
                }
            })
        };
        lock(&log.tasks).extend([writer, sealer]);
        Ok(log)
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The stored form of `event`, recorded now.
    pub fn record_now(&self, event: &Event) -> AuditRecord {
        event.record(&self.server, chrono::Utc::now())
    }

    /// Queues `event`; waits while the queue is full.
    pub async fn record(&self, event: Event) {
        if !self.enabled {
            return;
        }
        let message = Message::Event(Box::new(event), chrono::Utc::now());
        if self.queue.send(message).await.is_err() {
            tracing::error!("an audit event arrived after the audit writer stopped");
        }
    }

    /// Waits until everything queued so far is stored.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.queue.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Links what is stored into the chain and exports it.
    pub async fn seal(&self) -> Result<()> {
        loop {
            let mut known = std::mem::take(&mut *lock(&self.unsealed));
            let sealed = self
                .store
                .audit_seal(SEAL_BATCH, link_hash, &mut known)
                .await;
            // What was not linked yet (beyond this batch, or a failed one) waits for the next.
            lock(&self.unsealed).extend(known);
            let sealed = sealed?;
            if !sealed.is_empty() {
                let mut export = self.export.lock().await;
                if let Some(out) = export.as_mut() {
                    let written = sealed
                        .iter()
                        .try_for_each(|line| writeln!(out, "{line}"))
                        .and_then(|_| out.flush());
                    if let Err(e) = written {
                        tracing::warn!(error = %e, "the audit export could not be written");
                    }
                }
            }
            if (sealed.len() as i64) < SEAL_BATCH {
                return Ok(());
            }
        }
    }

    /// Removes the events recorded more than `days` days ago (only sealed ones: the oldest
    /// part of the chain) and records the purge itself as an AuditEvent. Answers how many
    /// were removed.
    pub async fn purge(&self, days: i64) -> Result<i64> {
        let cutoff = chrono::Utc::now() - chrono::Duration::days(days);
        self.seal().await?;
        let (removed, _) = self.store.audit_purge(cutoff.timestamp_millis()).await?;
        let mut event = Event::new(
            "delete",
            200,
            Agent {
                subject: Some("hearth audit purge".into()),
                ..Agent::default()
            },
        );
        let cutoff = cutoff.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        event.query = Some(format!("AuditEvent?date=lt{cutoff}"));
        event.description = Some(format!(
            "retention: {removed} AuditEvents recorded before {cutoff} removed"
        ));
        self.record(event).await;
        self.flush().await;
        Ok(removed)
    }

    /// At shutdown: stores what is queued, seals and exports it, stops the tasks.
    pub async fn shutdown(&self) {
        self.flush().await;
        if let Err(e) = self.seal().await {
            tracing::warn!(
                error = e.message(),
                "the audit chain could not be sealed at shutdown"
            );
        }
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

/// Drains the queue in batches, each one transaction, retried until the database takes it.
async fn write_loop(
    store: Store,
    server: String,
    mut rx: mpsc::Receiver<Message>,
    unsealed: Arc<std::sync::Mutex<HashMap<i64, String>>>,
) {
    let mut events = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    // True when the last batch was full: more is waiting, so the next one does not wait.
    let mut backlog = false;
    while let Some(first) = rx.recv().await {
        // A moment's wait gathers more events into the batch: fewer, larger transactions
        // under load, and the writer wakes once per batch instead of once per event (while
        // it sleeps, senders only append to the queue). Flushes do not wait.
        if !backlog && matches!(first, Message::Event(..)) {
            tokio::time::sleep(GATHER).await;
        }
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Event(e, recorded) => events.push(e.record(&server, recorded)),
                Message::Flush(f) => flushes.push(f),
            }
            if events.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        backlog = events.len() >= BATCH;
        if !events.is_empty() {
            let batch: Vec<AuditRecord> = std::mem::take(&mut events);
            let mut wait = Duration::from_millis(100);
            let mut retry = false;
            let keys = loop {
                match store.append_audit_events(&batch, retry).await {
                    Ok(keys) => break keys,
                    Err(e) => tracing::warn!(
                        error = e.message(),
                        events = batch.len(),
                        "audit events not stored yet; retrying"
                    ),
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
                // The failed attempt may have been stored all the same (its answer lost).
                retry = true;
            };
            let mut unsealed = lock(&unsealed);
            // Bounded: past this, the sealer reads events back instead.
            if unsealed.len() < MAX_UNSEALED {
                let stored = keys.into_iter().zip(batch.into_iter().map(|r| r.body));
                unsealed.extend(stored.filter_map(|(key, body)| Some((key?, body))));
            }
        }
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
    }
}

/// A lock that a panicked holder did not poison for good (what it guards stays usable).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
