//! What the org's policies mean, computed without touching anything: the static analysis of
//! the chain (`analysis`) and the dry run of a change (`preview`); the reachability matrix is
//! in `matrix`. All of them read the same snapshot the tenant actor renders for the kernel.

use super::access::active_org;
use super::policies::{self, PolicyCreate, PolicyPatch};
use super::{ApiError, App, Ctx};
use crate::db::orgs::{self, Snapshot};
use crate::db::policies::PolicyFields;
use crate::policy::analysis::{self, Analysis};
use crate::policy::impact::{self, Flip, RuleDiff, Side};
use crate::policy::render::{MachineAddr, policy_comment};
use crate::policy::{Policy, Verdict};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use uuid::Uuid;

/// The org as the reconciler renders it (rows that are live, pending ones included).
pub(super) async fn snapshot(app: &App, ctx: &Ctx) -> Result<Snapshot, ApiError> {
    active_org(app, ctx).await?;
    orgs::snapshot(&app.pool, ctx.org())
        .await?
        .ok_or_else(ApiError::not_found)
}

pub(super) fn addrs(snap: &Snapshot) -> Vec<MachineAddr> {
    snap.machines.iter().map(|m| m.addr()).collect()
}

/// `GET /orgs/{org}/policies/analysis`: shadowed, redundant and dead policies.
pub async fn analysis(app: &App, ctx: &Ctx) -> Result<Analysis, ApiError> {
    let snap = snapshot(app, ctx).await?;
    Ok(analysis::analyse(
        &snap.policies,
        &addrs(&snap),
        snap.org.default_action,
    ))
}

/// A change to preview: what `POST …/policies`, `PATCH …/policies/{id}`, `DELETE
/// …/policies/{id}` or `PATCH …/orgs/{org}` (the default action) would take.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum PolicyChange {
    Create { policy: PolicyCreate },
    Update { id: Uuid, changes: PolicyPatch },
    Delete { id: Uuid },
    Default { action: Verdict },
}

/// A machine as a preview names it.
#[derive(Debug, Clone, Serialize)]
pub struct MachineRef {
    pub id: Uuid,
    pub name: String,
    pub address: Ipv4Addr,
}

#[derive(Debug, Clone, Serialize)]
pub struct PairView {
    pub src: MachineRef,
    pub dst: MachineRef,
}

/// A flip with its sample pairs named.
pub type FlipView = Flip<PairView>;

#[derive(Debug, Clone, Serialize)]
pub struct PreviewView {
    /// The rule line of the policy the change creates or updates, as the kernel would have it
    /// (`null` for a delete, a default switch, or a policy that renders no rule). A new policy
    /// has no id yet: its line carries the nil id.
    pub line: Option<String>,
    pub rules: RuleDiff,
    pub flips: Vec<FlipView>,
    pub flipped_pairs: usize,
    pub complete: bool,
    pub analysis: Analysis,
}

impl PreviewView {
    /// Nothing to show (the form is not a valid policy yet).
    pub fn empty() -> Self {
        PreviewView {
            line: None,
            rules: RuleDiff {
                removed: Vec::new(),
                added: Vec::new(),
                reordered: false,
                after: Vec::new(),
            },
            flips: Vec::new(),
            flipped_pairs: 0,
            complete: true,
            analysis: Analysis {
                complete: true,
                findings: Vec::new(),
            },
        }
    }
}

fn policy_of(id: Uuid, created_at: DateTime<Utc>, f: PolicyFields) -> Policy {
    Policy {
        id,
        name: f.name,
        priority: f.priority,
        action: f.action,
        src: f.src,
        dst: f.dst,
        protocol: f.protocol,
        ports: f.ports,
        enabled: f.enabled,
        created_at,
    }
}

/// `POST /orgs/{org}/policies/preview`: what the change would do, checked exactly as the
/// change itself would be; nothing is written and nothing is applied.
pub async fn preview(app: &App, ctx: &Ctx, change: PolicyChange) -> Result<PreviewView, ApiError> {
    let snap = snapshot(app, ctx).await?;
    let machines = addrs(&snap);
    let mut after = snap.policies.clone();
    let mut default = snap.org.default_action;
    let mut subject = None;
    let find = |id: Uuid| {
        snap.policies
            .iter()
            .position(|p| p.id == id)
            .ok_or_else(ApiError::not_found)
    };
    match change {
        PolicyChange::Create { policy } => {
            let fields = policies::create_fields(app, &snap.org, policy).await?;
            after.push(policy_of(Uuid::nil(), Utc::now(), fields));
            subject = Some(Uuid::nil());
        }
        PolicyChange::Update { id, changes } => {
            let i = find(id)?;
            let old = &snap.policies[i];
            let fields = policies::update_fields(app, &snap.org, old, changes).await?;
            after[i] = policy_of(old.id, old.created_at, fields);
            subject = Some(id);
        }
        PolicyChange::Delete { id } => {
            after.remove(find(id)?);
        }
        PolicyChange::Default { action } => default = action,
    }
    let before = Side {
        policies: &snap.policies,
        default: snap.org.default_action,
    };
    let i = impact::impact(
        before,
        Side {
            policies: &after,
            default,
        },
        &machines,
    );
    let line = subject.and_then(|id| {
        let comment = format!("\"{}\"", policy_comment(id));
        i.rules.after.iter().find(|l| l.contains(&comment)).cloned()
    });
    let named = |id: Uuid| {
        snap.machines
            .iter()
            .find(|m| m.id == id)
            .map(|m| MachineRef {
                id,
                name: m.name.clone(),
                address: m.address,
            })
    };
    let flips = i
        .flips
        .into_iter()
        .map(|f| {
            f.describe(|s, d| {
                Some(PairView {
                    src: named(s)?,
                    dst: named(d)?,
                })
            })
        })
        .collect();
    Ok(PreviewView {
        line,
        rules: i.rules,
        flips,
        flipped_pairs: i.flipped_pairs,
        complete: i.complete,
        analysis: i.analysis,
    })
}
