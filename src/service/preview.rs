//! What the org's policies mean, computed without touching anything: the static analysis of
//! the chain (`analysis`), the dry run of a change (`preview`) and the reachability matrix
//! (`matrix`). All of them read the same snapshot the tenant actor renders for the kernel.

use super::access::active_org;
use super::{ApiError, App, Ctx};
use crate::db::orgs::{self, Snapshot};
use crate::policy::analysis::{self, Analysis};
use crate::policy::render::MachineAddr;

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
