//! The authorization server's own storage: JSON objects by kind and id, some with an expiry
//! (see `migrations/*/0005_auth.sql`). The SQL is the same on both databases but for the
//! placeholders; SQLite writes queue behind the store's writer lock like every other write.

use serde_json::Value;
use sqlx::Row;

use super::{db_error, Store};
use crate::error::{Error, Result};

/// What kind of object a row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Client,
    SigningKey,
    /// A login in progress between the authorize request and the consent.
    Pending,
    Code,
    Refresh,
    /// An EHR launch context, named by the `launch` parameter.
    Launch,
    /// A client assertion's `jti`, kept until the assertion expires (replay protection).
    AssertionId,
    /// A revoked access token's `jti`, kept until the token expires.
    Revoked,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Client => "client",
            Kind::SigningKey => "signing_key",
            Kind::Pending => "pending",
            Kind::Code => "code",
            Kind::Refresh => "refresh",
            Kind::Launch => "launch",
            Kind::AssertionId => "assertion_id",
            Kind::Revoked => "revoked",
        }
    }
}

/// `$1` placeholders as each database wants them (SQLite's `?1` means the same).
fn sql(store: &Store, text: &'static str) -> String {
    match store {
        Store::Postgres(_) => text.to_string(),
        Store::Sqlite(_) => text.replace('$', "?"),
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn parse_body(text: &str) -> Result<Value> {
    serde_json::from_str(text)
        .map_err(|e| Error::internal(format!("an auth_object body is not JSON: {e}")))
}

/// Runs a statement that changes rows; answers how many. `$binds` is a list of expressions
/// bound in order.
macro_rules! execute {
    ($store:expr, $text:expr, $($bind:expr),*) => {{
        let text = sql($store, $text);
        match $store {
            Store::Postgres(s) => sqlx::query(sqlx::AssertSqlSafe(text))
                $(.bind($bind))*
                .execute(&s.pool).await.map(|r| r.rows_affected()),
            Store::Sqlite(s) => {
                let _writing = s.writer.lock().await;
                sqlx::query(sqlx::AssertSqlSafe(text))
                    $(.bind($bind))*
                    .execute(&s.pool).await.map(|r| r.rows_affected())
            }
        }
        .map_err(db_error)
    }};
}

/// Runs a statement that yields `(id, body)` rows.
macro_rules! fetch {
    ($store:expr, $text:expr, $($bind:expr),*) => {{
        let text = sql($store, $text);
        let rows: Vec<(String, String)> = match $store {
            Store::Postgres(s) => sqlx::query(sqlx::AssertSqlSafe(text))
                $(.bind($bind))*
                .fetch_all(&s.pool).await
                .and_then(|rows| rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()),
            Store::Sqlite(s) => {
                // A DELETE ... RETURNING writes: it queues like every write.
                let _writing = if $text.starts_with("DELETE") {
                    Some(s.writer.lock().await)
                } else {
                    None
                };
                sqlx::query(sqlx::AssertSqlSafe(text))
                    $(.bind($bind))*
                    .fetch_all(&s.pool).await
                    .and_then(|rows| rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect())
            }
        }
        .map_err(db_error)?;
        rows
    }};
}

impl Store {
    /// The object, unless it is missing or expired.
    pub async fn auth_get(&self, kind: Kind, id: &str) -> Result<Option<Value>> {
        let rows = fetch!(
            self,
            "SELECT id, body FROM auth_object WHERE kind = $1 AND id = $2 \
             AND (expires_at IS NULL OR expires_at > $3)",
            kind.as_str(),
            id,
            now()
        );
        rows.first().map(|(_, b)| parse_body(b)).transpose()
    }

    /// Creates or replaces the object.
    pub async fn auth_put(
        &self,
        kind: Kind,
        id: &str,
        body: &Value,
        expires_at: Option<i64>,
    ) -> Result<()> {
        execute!(
            self,
            "INSERT INTO auth_object (kind, id, body, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body, \
             expires_at = excluded.expires_at",
            kind.as_str(),
            id,
            body.to_string(),
            expires_at
        )?;
        Ok(())
    }

    /// Creates the object unless a live one has its id: false when one does (a replayed
    /// assertion id, a taken user name).
    pub async fn auth_insert(
        &self,
        kind: Kind,
        id: &str,
        body: &Value,
        expires_at: Option<i64>,
    ) -> Result<bool> {
        let n = execute!(
            self,
            "INSERT INTO auth_object (kind, id, body, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body, \
             expires_at = excluded.expires_at \
             WHERE auth_object.expires_at IS NOT NULL AND auth_object.expires_at <= $5",
            kind.as_str(),
            id,
            body.to_string(),
            expires_at,
            now()
        )?;
        Ok(n == 1)
    }

    /// Removes and returns the live object: at most one caller ever gets it (a one-time
    /// authorization code, a rotating refresh token).
    pub async fn auth_take(&self, kind: Kind, id: &str) -> Result<Option<Value>> {
        let rows = fetch!(
            self,
            "DELETE FROM auth_object WHERE kind = $1 AND id = $2 \
             AND (expires_at IS NULL OR expires_at > $3) RETURNING id, body",
            kind.as_str(),
            id,
            now()
        );
        rows.first().map(|(_, b)| parse_body(b)).transpose()
    }

    /// Every live object of a kind, by id.
    pub async fn auth_list(&self, kind: Kind) -> Result<Vec<(String, Value)>> {
        let rows = fetch!(
            self,
            "SELECT id, body FROM auth_object WHERE kind = $1 \
             AND (expires_at IS NULL OR expires_at > $2) ORDER BY id",
            kind.as_str(),
            now()
        );
        rows.into_iter()
            .map(|(id, b)| Ok((id, parse_body(&b)?)))
            .collect()
    }

    /// Deletes the object; false if there was none.
    pub async fn auth_delete(&self, kind: Kind, id: &str) -> Result<bool> {
        let n = execute!(
            self,
            "DELETE FROM auth_object WHERE kind = $1 AND id = $2",
            kind.as_str(),
            id
        )?;
        Ok(n > 0)
    }

    /// Deletes every expired object.
    pub async fn auth_purge_expired(&self) -> Result<u64> {
        execute!(
            self,
            "DELETE FROM auth_object WHERE expires_at IS NOT NULL AND expires_at <= $1",
            now()
        )
    }
}
