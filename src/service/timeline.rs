//! `GET /orgs/{org}/timeline`: what happened to an org, newest first — the reconciler's own
//! repairs, failures and restarts (`reconcile_events`) merged with the audit log. Everybody of
//! the org sees the summaries; only the operator sees the reconciler's detail (kernel commands
//! and errors), as with `last_error` in the status.

use super::access::active_org;
use super::{ApiError, App, Ctx};
use crate::db::events::{self, Entry};
use crate::db::users::Role;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// Which entries: the newest `limit` older than `before` (the previous page's `next_cursor`).
pub struct TimelineQuery {
    pub before: Option<DateTime<Utc>>,
    pub limit: i64,
}

impl TimelineQuery {
    pub fn parse(limit: Option<&str>, before: Option<&str>) -> Result<TimelineQuery, ApiError> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(l) => l
                .parse::<i64>()
                .ok()
                .filter(|l| (1..=MAX_LIMIT).contains(l))
                .ok_or_else(|| ApiError::invalid("limit", format!("must be 1 to {MAX_LIMIT}")))?,
        };
        let before = before
            .map(|b| {
                DateTime::parse_from_rfc3339(b)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| ApiError::invalid("before", "must be a next_cursor of this list"))
            })
            .transpose()?;
        Ok(TimelineQuery { before, limit })
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    /// `reconciler` or `audit`.
    pub source: &'static str,
    /// `repair`, `failure`, `restart`, or the audit action (`machine.create`, …).
    pub kind: String,
    pub summary: String,
    /// Occurrences folded into this entry (identical events within 60 s).
    pub count: i32,
    /// The first occurrence, when `count` > 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_at: Option<DateTime<Utc>>,
    /// How long the reconcile took (reconciler entries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i32>,
    /// Who did it (audit entries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Audit entries: their detail. Reconciler entries: the applied actions or the error, for
    /// the operator only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

#[derive(Serialize)]
pub struct Timeline {
    pub entries: Vec<TimelineEntry>,
    pub next_cursor: Option<String>,
}

fn entry(e: Entry, operator: bool) -> TimelineEntry {
    match e {
        Entry::Event {
            at,
            first_at,
            kind,
            summary,
            detail,
            count,
            duration_ms,
        } => TimelineEntry {
            at,
            source: "reconciler",
            kind: kind.as_str().into(),
            summary,
            count,
            first_at: (count > 1).then_some(first_at),
            duration_ms: Some(duration_ms),
            actor: None,
            detail: operator.then_some(serde_json::Value::String(detail)),
        },
        Entry::Audit(r) => {
            let name = r.detail.get("name").and_then(|n| n.as_str());
            let summary = match name {
                Some(n) => format!("{} {n}", r.action),
                None => r.action.clone(),
            };
            TimelineEntry {
                at: r.at,
                source: "audit",
                kind: r.action,
                summary,
                count: 1,
                first_at: None,
                duration_ms: None,
                actor: Some(r.actor_email.unwrap_or_else(|| "controller".into())),
                detail: Some(r.detail),
            }
        }
    }
}

pub async fn list(app: &App, ctx: &Ctx, q: TimelineQuery) -> Result<Timeline, ApiError> {
    let org = active_org(app, ctx).await?;
    let operator = ctx.role() == Role::Operator;
    let found = events::timeline(&app.pool, org.id, q.before, q.limit).await?;
    let full = found.len() as i64 == q.limit;
    let entries: Vec<TimelineEntry> = found.into_iter().map(|e| entry(e, operator)).collect();
    let next_cursor = entries
        .last()
        .filter(|_| full)
        .map(|e| e.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    Ok(Timeline {
        entries,
        next_cursor,
    })
}
