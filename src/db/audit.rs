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
