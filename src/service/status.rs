//! Health, readiness and a tenant's kernel status.

use super::views::{HubView, PeerView, RuleView, StatusView};
use super::{ApiError, App, Ctx};
use crate::db::users::Role;
use chrono::DateTime;
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

/// `GET /orgs/{org}/status`: the tenant's last observation with rule counters read from the
/// kernel now. Names come from the read model (PostgreSQL) when it can be had; without
/// PostgreSQL the kernel facts are still served.
pub async fn status(app: &App, ctx: &Ctx) -> Result<StatusView, ApiError> {
    let org_id = ctx.org();
    let model = match app.reads.machines(app, org_id).await {
        Ok(Some(m)) => Some(m),
        Ok(None) => return Err(ApiError::not_found()),
        Err(e) if e.is_unavailable() => None,
        Err(e) => return Err(e.into()),
    };
    let s = app.ctl.status(org_id).await?;
    let rows = model.as_ref().map(|m| &m.rows);
    let peers = s
        .peers
        .iter()
        .map(|(key, p)| {
            let m = rows.and_then(|r| r.machine_by_key(key));
            PeerView {
                machine_id: m.map(|m| m.id),
                name: m.map(|m| m.name.clone()),
                public_key: key.to_base64(),
                allowed_ips: p.allowed_ips.clone(),
                endpoint: p.endpoint.clone(),
                last_handshake_at: p
                    .last_handshake
                    .and_then(|t| DateTime::from_timestamp(t, 0)),
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
            }
        })
        .collect();
    // The error text names kernel commands and their output: the operator's business only.
    let last_error = if ctx.role() == Role::Operator {
        s.last_error
    } else {
        s.last_error.map(|_| {
            "the last repair of the hub failed; the operator's logs have the details".into()
        })
    };
    let org = rows.map(|r| &r.org);
    Ok(StatusView {
        hub: HubView {
            up: s.up,
            listen_port: s.listen_port,
            public_key: s.public_key.map(|k| k.to_base64()),
            address: org.map(|o| o.cidr.hub_address().to_string()),
            name: org.map(|o| o.name.clone()),
            netns: s.netns,
            device: s.device,
        },
        peers,
        rules: s.rules.iter().map(RuleView::of).collect(),
        observed_at: s.observed_at,
        last_error,
    })
}
