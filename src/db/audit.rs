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

pub async fn record(pool: &Pool, e: &Entry<'_>) -> Result<(), DbError> {
    let conn = pool.get().await?;
    conn.execute(
        "INSERT INTO audit_log (org_id, actor_id, actor_email, action, target_type, target_id, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &e.org_id,
            &e.actor_id,
            &e.actor_email,
            &e.action,
            &e.target_type,
            &e.target_id,
            &e.detail,
        ],
    )
    .await?;
    Ok(())
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

/// The newest entries of an org, newest first, older than `before` (an entry id) if given.
pub async fn list(
    pool: &Pool,
    org_id: Uuid,
    limit: i64,
    before: Option<i64>,
) -> Result<Vec<Record>, DbError> {
    let conn = pool.get().await?;
    Ok(conn
        .query(
            "SELECT id, at, actor_id, actor_email, action, target_type, target_id, detail FROM audit_log \
             WHERE org_id = $1 AND ($3::bigint IS NULL OR id < $3) ORDER BY id DESC LIMIT $2",
            &[&org_id, &limit, &before],
        )
        .await?
        .iter()
        .map(|r| Record {
            id: r.get(0),
            at: r.get(1),
            actor_id: r.get(2),
            actor_email: r.get(3),
            action: r.get(4),
            target_type: r.get(5),
            target_id: r.get(6),
            detail: r.get(7),
        })
        .collect())
}
