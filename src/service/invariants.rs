//! `GET /orgs/{org}/invariants`: the promises of the org's hub as checks of the tenant actor's
//! last observation (no kernel call), with when they were verified and when each was last found
//! broken (and repaired). Everybody of the org sees pass/fail; the operator also sees what the
//! kernel showed (as with `last_error` in the status).

use super::access::active_org;
use super::{ApiError, App, Ctx};
use crate::db::users::Role;
use crate::reconcile::invariants::{CHECKS, Check, allowed_ips};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Serialize, Clone, Debug)]
pub struct InvariantView {
    pub id: &'static str,
    pub label: &'static str,
    /// `null` when not verified (the last reconcile failed, or none ran yet).
    pub pass: Option<bool>,
    /// When the reconciler last found it broken and repaired it (since the actor started).
    pub last_failed_at: Option<DateTime<Utc>>,
    /// What the kernel showed: the operator's only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Serialize, Clone, Debug)]
pub struct Invariants {
    /// The observation the checks are of.
    pub verified_at: Option<DateTime<Utc>>,
    /// The last reconcile failed: what was verified before may no longer hold.
    pub unverified: bool,
    pub checks: Vec<InvariantView>,
}

pub async fn invariants(app: &App, ctx: &Ctx) -> Result<Invariants, ApiError> {
    let org = active_org(app, ctx).await?;
    let operator = ctx.role() == Role::Operator;
    let status = app.ctl.status_snapshot(org.id).await.ok();
    let model = super::machines::model(app, ctx).await?;
    let mut found: BTreeMap<&'static str, Check> = BTreeMap::new();
    if let Some(s) = &status {
        for c in &s.checks {
            found.insert(c.id, c.clone());
        }
        let want = model
            .rows
            .machines
            .iter()
            .map(|m| (m.public_key, m.address))
            .collect();
        found.insert("allowed_ips", allowed_ips(&s.peers, &want));
        let (opens, detail) = match app.ctl.deps().cipher.open(org.id, &org.sealed_key) {
            Ok(k) if k.public_key() != org.hub_public_key => {
                (false, "opens, but not to the stored public key".to_string())
            }
            Ok(_) if s.public_key != Some(org.hub_public_key) => {
                (false, "opens; the device runs another key".to_string())
            }
            Ok(_) => (true, "opens; the device runs its public key".to_string()),
            Err(e) => (false, e.to_string()),
        };
        found.insert(
            "hub_key",
            Check {
                id: "hub_key",
                pass: opens,
                detail,
            },
        );
    }
    let unverified = status.as_ref().is_none_or(|s| s.last_error.is_some());
    let checks = CHECKS
        .iter()
        .map(|(id, label)| {
            let c = found.get(id);
            InvariantView {
                id,
                label,
                pass: c.filter(|_| !unverified).map(|c| c.pass),
                last_failed_at: status.as_ref().and_then(|s| s.failed_at.get(id).copied()),
                detail: c.filter(|_| operator).map(|c| c.detail.clone()),
            }
        })
        .collect();
    Ok(Invariants {
        verified_at: status.as_ref().map(|s| s.observed_at),
        unverified,
        checks,
    })
}
