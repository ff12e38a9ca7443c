//! Health, readiness and a tenant's kernel status.

use super::views::{HubView, RuleView, StatusView};
use super::{ApiError, App, Ctx};
use crate::db::users::Role;
use std::time::Duration;

/// `GET /readyz`: PostgreSQL answers within 2 s.
pub async fn ready(app: &App) -> Result<(), ApiError> {
    let ready = tokio::time::timeout(Duration::from_secs(2), crate::db::ping(&app.pool))
        .await
        .unwrap_or(false);
    if ready {
        Ok(())
    } else {
        Err(ApiError::unavailable("the database is unreachable"))
    }
}

/// The org's read model; `None` while PostgreSQL cannot be read (kernel facts are still served).
async fn model(
    app: &App,
    org_id: uuid::Uuid,
) -> Result<Option<std::sync::Arc<super::reads::Model>>, ApiError> {
    match app.reads.machines(app, org_id).await {
        Ok(Some(m)) => Ok(Some(m)),
        Ok(None) => Err(ApiError::not_found()),
        Err(e) if e.is_unavailable() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `GET /orgs/{org}/status`: the tenant's last observation with rule counters read from the
/// kernel now. Names come from the read model (PostgreSQL) when it can be had; without
/// PostgreSQL the kernel facts are still served.
pub async fn status(app: &App, ctx: &Ctx) -> Result<StatusView, ApiError> {
    let org_id = ctx.org();
    let model = model(app, org_id).await?;
    // The observation as published (no copy of it), its rule counters read from the kernel now.
    let s = app.ctl.status_snapshot(org_id).await?;
    let rules = match app.ctl.counters(&s).await {
        Some(rules) => rules.iter().map(RuleView::of).collect(),
        None => s.rules.iter().map(RuleView::of).collect(),
    };
    let peers = app.reads.status_peers(model.as_deref(), &s);
    // The error text names kernel commands and their output: the operator's business only.
    let last_error = if ctx.role() == Role::Operator {
        s.last_error.clone()
    } else {
        s.last_error.as_ref().map(|_| {
            "the last repair of the hub failed; the operator's logs have the details".into()
        })
    };
    let org = model.as_ref().map(|m| &m.rows.org);
    Ok(StatusView {
        hub: HubView {
            up: s.up,
            listen_port: s.listen_port,
            public_key: s.public_key.map(|k| k.to_base64()),
            address: org.map(|o| o.cidr.hub_address().to_string()),
            name: org.map(|o| o.name.clone()),
            netns: s.netns.clone(),
            device: s.device.clone(),
        },
        peers,
        rules,
        observed_at: s.observed_at,
        last_error,
    })
}

/// `GET /orgs/{org}/history`: the tenant actor's last 30 min of peer and rule numbers, peers
/// named from the read model when PostgreSQL can be read.
pub async fn history(app: &App, ctx: &Ctx) -> Result<super::views::HistoryView, ApiError> {
    let org_id = ctx.org();
    let model = model(app, org_id).await?;
    let s = app.ctl.status_snapshot(org_id).await?;
    let rows = model.as_ref().map(|m| &m.rows);
    Ok(super::views::HistoryView::of(&s, |key| {
        rows.and_then(|r| r.machine_by_key(key))
            .map(|m| (m.id, m.name.clone()))
    }))
}
