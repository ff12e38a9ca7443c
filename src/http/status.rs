//! Health, readiness, a tenant's kernel status and its audit log.

use super::error::ApiError;
use super::router::Ctx;
use super::{App, Request, Response, json};
use crate::db::users::Role;
use crate::db::{audit, machines, orgs};
use crate::policy::render::{DEFAULT_COMMENT, ESTABLISHED_COMMENT};
use chrono::DateTime;
use std::time::Duration;
use warp::http::StatusCode;

pub fn healthz() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

pub async fn readyz(app: &App) -> Response {
    let ready = tokio::time::timeout(Duration::from_secs(2), crate::db::ping(&app.pool))
        .await
        .unwrap_or(false);
    if ready {
        json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
    } else {
        ApiError::unavailable("the database is unreachable").into_response()
    }
}

/// The comment of a rule as `iptables-save` prints it: `… --comment "mwg:…" …`.
fn comment(rule: &str) -> Option<&str> {
    rule.split("--comment \"").nth(1)?.split('"').next()
}

/// Answers from the tenant actor's last observation of the kernel. Machine names come from
/// PostgreSQL when it answers; without it the kernel facts are still served.
pub async fn status(app: &App, ctx: &Ctx) -> Result<Response, ApiError> {
    let org_id = ctx.org();
    let org = match orgs::get(&app.pool, org_id).await {
        Ok(Some(o)) => Some(o),
        Ok(None) => return Err(ApiError::not_found()),
        Err(e) if e.is_unavailable() => None,
        Err(e) => return Err(e.into()),
    };
    let s = app.ctl.status(org_id).await?;
    let machines = machines::list(&app.pool, org_id).await.unwrap_or_default();
    let peers: Vec<_> = s
        .peers
        .iter()
        .map(|(key, p)| {
            let m = machines.iter().find(|m| m.public_key == *key);
            serde_json::json!({
                "machine_id": m.map(|m| m.id),
                "name": m.map(|m| m.name.clone()),
                "public_key": key.to_base64(),
                "allowed_ips": p.allowed_ips,
                "endpoint": p.endpoint,
                "last_handshake_at": p.last_handshake.and_then(|t| DateTime::from_timestamp(t, 0)),
                "rx_bytes": p.rx_bytes,
                "tx_bytes": p.tx_bytes,
            })
        })
        .collect();
    let rules: Vec<_> = s
        .rules
        .iter()
        .map(|r| {
            let c = comment(&r.rule).unwrap_or_default();
            let kind = match c {
                DEFAULT_COMMENT => "default",
                ESTABLISHED_COMMENT => "established",
                _ => "policy",
            };
            serde_json::json!({
                "kind": kind,
                "policy_id": c.strip_prefix("mwg:").filter(|_| kind == "policy"),
                "packets": r.packets,
                "bytes": r.bytes,
            })
        })
        .collect();
    // The error text names kernel commands and their output: the operator's business only.
    let last_error = if ctx.session().user.role == Role::Operator {
        s.last_error
    } else {
        s.last_error.map(|_| {
            "the last repair of the hub failed; the operator's logs have the details".into()
        })
    };
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "hub": {
                "up": s.up,
                "listen_port": s.listen_port,
                "public_key": s.public_key.map(|k| k.to_base64()),
                "address": org.as_ref().map(|o| o.cidr.hub_address().to_string()),
                "name": org.as_ref().map(|o| o.name.clone()),
                "netns": s.netns,
                "device": s.device,
            },
            "peers": peers,
            "rules": rules,
            "observed_at": s.observed_at,
            "last_error": last_error,
        }),
    ))
}

pub async fn audit(app: &App, req: &Request, ctx: &Ctx) -> Result<Response, ApiError> {
    super::orgs::load_org(app, ctx.org()).await?;
    let limit = match req.query_param("limit") {
        None => 100,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", "must be 1 to 1000"))?,
    };
    let before = req
        .query_param("before")
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::invalid("before", "must be an entry id"))
        })
        .transpose()?;
    let entries = audit::list(&app.pool, ctx.org(), limit, before).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"entries": entries}),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn comments() {
        assert_eq!(
            super::comment("-A MWG-ACL -s 10.0.0.2/32 -m comment --comment \"mwg:abc\" -j DROP"),
            Some("mwg:abc")
        );
        assert_eq!(super::comment("-A MWG-ACL -j DROP"), None);
    }
}
