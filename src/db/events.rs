//! An org's timeline: what the reconciler did on its own (`reconcile_events`), merged with the
//! audit log, newest first.

use super::{DbError, Pool};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Identical events (org, kind, summary) this close together are one row with a count.
pub const COALESCE_SECS: i64 = 60;
/// The most events an org keeps; older ones are deleted as new ones arrive.
pub const MAX_PER_ORG: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The reconciler changed the kernel without a change asking for it.
    Repair,
    /// A reconcile failed.
    Failure,
    /// The tenant's actor was restarted by the supervisor.
    Restart,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Repair => "repair",
            Kind::Failure => "failure",
            Kind::Restart => "restart",
        }
    }

    fn parse(s: &str) -> Result<Kind, DbError> {
        match s {
            "repair" => Ok(Kind::Repair),
            "failure" => Ok(Kind::Failure),
            "restart" => Ok(Kind::Restart),
            _ => Err(DbError::Corrupt("reconcile_events.kind".into())),
        }
    }
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct Event {
    pub org_id: Uuid,
    pub at: DateTime<Utc>,
    pub kind: Kind,
    /// What an org's users may read.
    pub summary: String,
    /// Commands and errors: the operator's only.
    pub detail: String,
    pub duration_ms: u32,
}

/// Records an event: counted into the newest identical one of the last [`COALESCE_SECS`], or
/// a new row (then the org's oldest beyond [`MAX_PER_ORG`] go). An org deleted meanwhile makes
/// this a foreign-key violation, which the caller may ignore.
pub async fn record(pool: &Pool, e: &Event) -> Result<(), DbError> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    let summary: String = e.summary.chars().take(500).collect();
    let detail: String = e.detail.chars().take(8000).collect();
    let ms = e.duration_ms.min(i32::MAX as u32) as i32;
    let kind = e.kind.as_str();
    let counted = tx
        .execute(
            "UPDATE reconcile_events SET count = count + 1, at = $4::timestamptz, detail = $5, duration_ms = $6 \
             WHERE id = (SELECT id FROM reconcile_events WHERE org_id = $1 AND kind = $2 \
               AND summary = $3 AND at > $4::timestamptz - make_interval(secs => $7) \
               ORDER BY at DESC LIMIT 1)",
            &[
                &e.org_id,
                &kind,
                &summary,
                &e.at,
                &detail,
                &ms,
                &(COALESCE_SECS as f64),
            ],
        )
        .await?;
    if counted == 0 {
        tx.execute(
            "INSERT INTO reconcile_events (org_id, at, first_at, kind, summary, detail, duration_ms) \
             VALUES ($1, $2, $2, $3, $4, $5, $6)",
            &[&e.org_id, &e.at, &kind, &summary, &detail, &ms],
        )
        .await?;
        tx.execute(
            "DELETE FROM reconcile_events WHERE id IN (SELECT id FROM reconcile_events \
             WHERE org_id = $1 ORDER BY at DESC, id DESC OFFSET $2)",
            &[&e.org_id, &MAX_PER_ORG],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// One row of an org's timeline.
#[derive(Debug, Clone)]
pub enum Entry {
    Event {
        at: DateTime<Utc>,
        first_at: DateTime<Utc>,
        kind: Kind,
        summary: String,
        detail: String,
        count: i32,
        duration_ms: i32,
    },
    Audit(super::audit::Record),
}

impl Entry {
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Entry::Event { at, .. } => *at,
            Entry::Audit(r) => r.at,
        }
    }
}

/// The org's newest `limit` timeline entries older than `before`, newest first: events and
/// audit entries merged.
pub async fn timeline(
    pool: &Pool,
    org_id: Uuid,
    before: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<Entry>, DbError> {
    let conn = pool.get().await?;
    let events = conn
        .query_cached(
            "SELECT at, first_at, kind, summary, detail, count, duration_ms FROM reconcile_events \
             WHERE org_id = $1 AND ($2::timestamptz IS NULL OR at < $2) \
             ORDER BY at DESC, id DESC LIMIT $3",
            &[&org_id, &before, &limit],
        )
        .await?;
    let audit = conn
        .query_cached(
            "SELECT id, at, actor_id, actor_email, action, target_type, target_id, detail \
             FROM audit_log WHERE org_id = $1 AND ($2::timestamptz IS NULL OR at < $2) \
             ORDER BY at DESC, id DESC LIMIT $3",
            &[&org_id, &before, &limit],
        )
        .await?;
    let mut all = Vec::with_capacity(events.len() + audit.len());
    for r in &events {
        all.push(Entry::Event {
            at: r.get(0),
            first_at: r.get(1),
            kind: Kind::parse(r.get(2))?,
            summary: r.get(3),
            detail: r.get(4),
            count: r.get(5),
            duration_ms: r.get(6),
        });
    }
    for r in &audit {
        all.push(Entry::Audit(super::audit::record_of(r)));
    }
    // Newest first; stable, so events come before audit entries of the same instant.
    all.sort_by_key(|e| std::cmp::Reverse(e.at()));
    all.truncate(limit.max(0) as usize);
    Ok(all)
}
