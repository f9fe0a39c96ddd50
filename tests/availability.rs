//! A database that goes away makes requests fail with 503 and an OperationOutcome; the server
//! keeps running and serves again once the database is back. PostgreSQL only: it is the
//! backend that lives in another process.

mod common;

use common::{admin_connection, expect_outcome, Backend, Server};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_gives_503_and_recovers() {
    let Some(s) = Server::start(Backend::Postgres).await else {
        return;
    };
    let db = s.database.clone().unwrap();
    let created = s
        .create(&json!({"resourceType": "Patient", "active": true}))
        .await;
    let path = format!("Patient/{}", created["id"].as_str().unwrap());

    let mut admin = admin_connection().await;
    let set_allowed = |allowed: bool| format!("ALTER DATABASE {db} ALLOW_CONNECTIONS {allowed}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(set_allowed(false)))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
    )))
    .execute(&mut admin)
    .await
    .unwrap();

    // Every kind of request answers 503 while the database is away (the first use of a
    // terminated connection may be what discovers it, so allow one retry per request).
    for _ in 0..3 {
        let r = s.get(&path).await;
        if r.status() == 503 {
            expect_outcome(r, 503).await;
            break;
        }
    }
    expect_outcome(s.get(&path).await, 503).await;
    expect_outcome(
        s.post_json("Patient", &json!({"resourceType": "Patient"}))
            .await,
        503,
    )
    .await;
    expect_outcome(s.get("Patient/_history").await, 503).await;
    let ready = s
        .client
        .get(format!("{}/readyz", s.root))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        s.client
            .get(format!("{}/healthz", s.root))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    sqlx::raw_sql(sqlx::AssertSqlSafe(set_allowed(true)))
        .execute(&mut admin)
        .await
        .unwrap();
    let r = s.get(&path).await;
    assert_eq!(r.status(), 200, "served again once the database is back");
    let ready = s
        .client
        .get(format!("{}/readyz", s.root))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}
