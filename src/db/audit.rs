//! The audit log: who did what, when, to what.

use super::{DbError, Pool};
use uuid::Uuid;

/// One entry to record.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub org_id: Option<Uuid>,
    pub actor_id: Option<Uuid>,
    pub actor_email: Option<&'a str>,
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: Option<String>,
    pub detail: serde_json::Value,
}

const INSERT: &str = "INSERT INTO audit_log (org_id, actor_id, actor_email, action, target_type, \
                      target_id, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// SQL that records `e` once per row of `rows` (a `WITH` query of the same statement), with
/// [`Entry::params`] as `$1`…`$7`.
pub(super) fn insert_per_row(rows: &str) -> String {
    format!(
        "INSERT INTO audit_log (org_id, actor_id, actor_email, action, target_type, target_id, \
         detail) SELECT $1::uuid, $2::uuid, $3::text, $4::text, $5::text, $6::text, $7::jsonb \
         FROM {rows}"
    )
}

pub async fn record(pool: &Pool, e: &Entry<'_>) -> Result<(), DbError> {
    let conn = pool.get().await?;
    conn.execute(INSERT, &e.params()).await?;
    Ok(())
}

/// [`record`] inside the transaction of the change it records.
pub async fn record_in(tx: &tokio_postgres::Transaction<'_>, e: &Entry<'_>) -> Result<(), DbError> {
    tx.execute(INSERT, &e.params()).await?;
    Ok(())
}

impl Entry<'_> {
    pub(super) fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 7] {
        [
            &self.org_id,
            &self.actor_id,
            &self.actor_email,
            &self.action,
            &self.target_type,
            &self.target_id,
            &self.detail,
        ]
    }
}

/// Who made a change, for entries written by the controller on the caller's behalf.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub id: Option<Uuid>,
    pub email: Option<String>,
}

impl Actor {
    /// An entry by this actor.
    pub fn entry<'a>(
        &'a self,
        org_id: Option<Uuid>,
        action: &'a str,
        target_type: &'a str,
        target_id: Option<String>,
        detail: serde_json::Value,
    ) -> Entry<'a> {
        Entry {
            org_id,
            actor_id: self.id,
            actor_email: self.email.as_deref(),
            action,
            target_type,
            target_id,
            detail,
        }
    }
}

/// One entry as read back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Record {
    pub id: i64,
    pub at: chrono::DateTime<chrono::Utc>,
    pub actor_id: Option<Uuid>,
    pub actor_email: Option<String>,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub detail: serde_json::Value,
}

/// Which entries a reader wants: an action prefix (`machine.` or `machine.create`), an actor's
/// email, a target id. Unset fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub action: Option<String>,
    pub actor: Option<String>,
    pub target: Option<String>,
}

/// The newest entries of an org that pass `filter`, newest first, older than `before` (an entry
/// id) if given.
pub async fn list(
    pool: &Pool,
    org_id: Uuid,
    limit: i64,
    before: Option<i64>,
    filter: &Filter,
) -> Result<Vec<Record>, DbError> {
    let conn = pool.get().await?;
    Ok(conn
        .query_cached(
            "SELECT id, at, actor_id, actor_email, action, target_type, target_id, detail FROM audit_log \
             WHERE org_id = $1 AND ($3::bigint IS NULL OR id < $3) \
             AND ($4::text IS NULL OR left(action, length($4)) = $4) \
             AND ($5::text IS NULL OR actor_email = $5) \
             AND ($6::text IS NULL OR target_id = $6) \
             ORDER BY id DESC LIMIT $2",
            &[
                &org_id,
                &limit,
                &before,
                &filter.action,
                &filter.actor,
                &filter.target,
            ],
        )
        .await?
        .iter()
        .map(record_of)
        .collect())
}

/// A row of `SELECT id, at, actor_id, actor_email, action, target_type, target_id, detail`.
pub(crate) fn record_of(r: &tokio_postgres::Row) -> Record {
    Record {
        id: r.get(0),
        at: r.get(1),
        actor_id: r.get(2),
        actor_email: r.get(3),
        action: r.get(4),
        target_type: r.get(5),
        target_id: r.get(6),
        detail: r.get(7),
    }
}
