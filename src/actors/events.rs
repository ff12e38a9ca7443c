//! The timeline's writer: tenant actors and the supervisor hand events to one background task
//! through a bounded queue and never wait for PostgreSQL. A full queue (PostgreSQL slow or
//! gone while the kernel keeps drifting) drops the event, counted in
//! `meshwg_reconcile_events_dropped_total`; a reconcile is never held up by its record.

use crate::db::events::{self, Event, Kind};
use crate::db::{DbError, Pool};
use crate::reconcile::Action;
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Events waiting to be written, at most.
const QUEUE: usize = 1024;

#[derive(Clone)]
pub struct EventLog {
    tx: mpsc::Sender<Event>,
}

impl EventLog {
    /// Starts the writer (needs a tokio runtime); it ends when every handle is gone.
    pub fn start(pool: Pool) -> EventLog {
        let (tx, mut rx) = mpsc::channel::<Event>(QUEUE);
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                match events::record(&pool, &e).await {
                    Ok(()) => {}
                    // The org is gone (foreign key), or PostgreSQL is: so is the event.
                    Err(err @ (DbError::Constraint(_) | DbError::Unavailable(_))) => {
                        tracing::debug!(tenant = %e.org_id, error = %err, "timeline event not recorded")
                    }
                    Err(err) => {
                        tracing::warn!(tenant = %e.org_id, error = %err, "timeline event not recorded")
                    }
                }
            }
        });
        EventLog { tx }
    }

    fn send(&self, e: Event) {
        if self.tx.try_send(e).is_err() {
            metrics::counter!("meshwg_reconcile_events_dropped_total").increment(1);
        }
    }

    /// A reconcile that changed the kernel with no change asking for it: `kinds` are the
    /// repairs (as [`Action::kind`]), `applied` every action of the run (the detail).
    pub fn repaired(
        &self,
        org_id: Uuid,
        kinds: &[&'static str],
        applied: &[Action],
        took: Duration,
    ) {
        let mut named: Vec<&str> = Vec::new();
        for k in kinds {
            let d = describe(k);
            if !named.contains(&d) {
                named.push(d);
            }
        }
        let detail = applied
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join("\n");
        self.send(Event {
            org_id,
            at: chrono::Utc::now(),
            kind: Kind::Repair,
            summary: format!("Repaired: {}", named.join(", ")),
            detail,
            duration_ms: took.as_millis().min(u32::MAX as u128) as u32,
        });
    }

    /// A reconcile that failed; `error` names kernel commands, so it is the detail only.
    pub fn failed(&self, org_id: Uuid, error: &str, took: Duration) {
        self.send(Event {
            org_id,
            at: chrono::Utc::now(),
            kind: Kind::Failure,
            summary: "A reconcile of the hub failed; it is retried".into(),
            detail: error.to_string(),
            duration_ms: took.as_millis().min(u32::MAX as u128) as u32,
        });
    }

    /// The tenant's actor was restarted by the supervisor.
    pub fn restarted(&self, org_id: Uuid, attempt: u32) {
        self.send(Event {
            org_id,
            at: chrono::Utc::now(),
            kind: Kind::Restart,
            summary: "The hub's actor was restarted".into(),
            detail: format!("attempt {attempt}"),
            duration_ms: 0,
        });
    }
}

/// A repair in words an org's user understands.
fn describe(kind: &str) -> &'static str {
    match kind {
        "create_netns" => "namespace recreated",
        "apply_firewall" => "firewall rules restored",
        "flush_nat" => "NAT rules removed",
        "delete_link" => "foreign link removed",
        "delete_route" => "route removed",
        "destroy_device" | "create_device" | "configure_device" | "move_device"
        | "rename_device" | "configure_wg0" => "hub interface rebuilt",
        "set_sysctls" => "kernel settings restored",
        "set_peers" => "peers restored",
        _ => "kernel state restored",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_repair_kind_has_words() {
        for k in Action::KINDS {
            assert_ne!(describe(k), "kernel state restored", "{k}");
        }
    }
}
