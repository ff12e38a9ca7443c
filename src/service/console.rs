//! The operator's console: every org with its state, its hub as last observed, how many of its
//! machines are online, and what the reconciler repaired.

use super::access::require_operator;
use super::views::{OrgView, Presence};
use super::{ApiError, App, Ctx};
use crate::db::orgs::{self, OrgState};
use chrono::{DateTime, Utc};

/// One org as the operator sees it (the full `last_error`: the operator's business).
#[derive(Debug, Clone)]
pub struct OrgSummary {
    pub org: OrgView,
    /// `None` while the org is not active or no actor has observed it yet.
    pub hub_up: Option<bool>,
    pub machines_total: usize,
    pub machines_online: usize,
    pub observed_at: Option<DateTime<Utc>>,
    pub repairs: u64,
    pub restarts: u64,
    pub last_error: Option<String>,
}

/// `orgs` for the operator, in the database's order.
pub async fn orgs(app: &App, ctx: &Ctx) -> Result<Vec<OrgSummary>, ApiError> {
    require_operator(ctx)?;
    let now = Utc::now();
    let telemetry = &app.ctl.deps().telemetry;
    let mut out = Vec::new();
    for o in orgs::list(&app.pool).await? {
        let active = o.state == OrgState::Active;
        let status = match active {
            true => app.ctl.status_snapshot(o.id).await.ok(),
            false => None,
        };
        let model = match active {
            true => app.reads.machines(app, o.id).await.ok().flatten(),
            false => None,
        };
        let (total, online) = model.as_ref().map_or((0, 0), |m| {
            let online = m
                .machines
                .iter()
                .filter(|v| {
                    let last = v.stats.as_ref().and_then(|s| s.last_handshake_at);
                    Presence::of(last, now) == Presence::Online
                })
                .count();
            (m.machines.len(), online)
        });
        let (repairs, restarts) = telemetry.repairs_and_restarts(o.id);
        out.push(OrgSummary {
            org: OrgView::from(&o),
            hub_up: status.as_ref().map(|s| s.up),
            machines_total: total,
            machines_online: online,
            observed_at: status.as_ref().map(|s| s.observed_at),
            repairs,
            restarts,
            last_error: status.as_ref().and_then(|s| s.last_error.clone()),
        });
    }
    Ok(out)
}

/// The host as the operator's console shows it (like `meshwg doctor`, from the running
/// controller).
#[derive(Debug, Clone)]
pub struct Host {
    pub version: &'static str,
    /// PostgreSQL answered, and how fast.
    pub database: Option<std::time::Duration>,
    /// `meshwg_egress_guard`: a tenant namespace was found with a way out (and it was removed).
    pub egress_tripped: bool,
    /// `net.ipv4.ip_forward` in the controller's namespace (the hubs forward in their own).
    pub ip_forward: Option<bool>,
    /// The WireGuard backend the hubs run on.
    pub backend: &'static str,
    /// What `meshwg doctor` says of the limits, for the tenants present (this process's limits).
    pub capacity: Vec<crate::capacity::Finding>,
}

pub async fn host(app: &App, ctx: &Ctx) -> Result<Host, ApiError> {
    require_operator(ctx)?;
    let started = std::time::Instant::now();
    let ping = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        crate::db::ping(&app.pool),
    )
    .await
    .unwrap_or(false);
    let ip_forward = tokio::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .await
        .ok()
        .map(|v| v.trim() == "1");
    let deps = app.ctl.deps();
    let backend = deps.kernel.wg.backend();
    let present = orgs::list(&app.pool).await.map_or(0, |o| o.len() as u64);
    let ports = u64::from(*deps.port_range.end() - *deps.port_range.start()) + 1;
    let capacity = crate::capacity::judge(
        present.max(1),
        crate::capacity::Limits::here(),
        backend == "userspace",
        ports,
        None,
    );
    Ok(Host {
        version: env!("CARGO_PKG_VERSION"),
        database: ping.then(|| started.elapsed()),
        egress_tripped: deps.telemetry.egress_tripped(),
        ip_forward,
        backend,
        capacity,
    })
}
