//! "Watch this path": a counting-only rule for one path in the tenant's `MWG-WATCH` chain,
//! which FORWARD jumps to before the ACL chain, so it counts every packet of the path that
//! reaches the hub and changes no verdict. Desired state held by the tenant actor with a
//! deadline (≤ 120 s, at most three per org); the reconciler installs it, repairs it like any
//! rule and removes it when its time is up. The report is the rule's kernel counters and the
//! verdict the chain gives the path (the row that decides, from the same evaluator as Explain).

use super::access::{active_org, require_write};
use super::audit::record_by;
use super::explain::{EndView, ExplainQuery, asked};
use super::{ApiError, App, Ctx};
use crate::actors::tenant::WatchInfo;
use crate::db::machines::Machine;
use crate::policy::evaluate::{Chain, Decider, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, summary};
use crate::policy::render::MachineAddr;
use crate::policy::watch::{DEFAULT_TTL, MAX_TTL, MAX_WATCHES, WatchPath, watch_comment};
use crate::policy::{Protocol, Verdict};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchCreate {
    pub src: String,
    pub dst: String,
    pub proto: String,
    #[serde(default)]
    pub port: Option<u32>,
    /// 1–120 s; 60 s when left out.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// One watch: its path, its time, what the kernel counted and the verdict the chain gives.
#[derive(Debug, Clone, Serialize)]
pub struct WatchView {
    pub id: Uuid,
    pub src: EndView,
    pub dst: EndView,
    pub protocol: Protocol,
    pub port: Option<u16>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub expires_in_secs: i64,
    /// Packets and bytes of the path that reached the hub since the watch began.
    pub packets: u64,
    pub bytes: u64,
    /// The first packet's verdict, the row that decided it (its number on the policies page)
    /// and whether a real probe gets through (its reply too for tcp and icmp).
    pub verdict: Verdict,
    pub decided_by: Decider,
    pub number: Option<usize>,
    pub reachable: bool,
    pub summary: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct WatchList {
    pub watches: Vec<WatchView>,
    pub max: usize,
}

fn ttl(secs: Option<u64>) -> Result<Duration, ApiError> {
    match secs {
        None => Ok(DEFAULT_TTL),
        Some(s) if (1..=MAX_TTL.as_secs()).contains(&s) => Ok(Duration::from_secs(s)),
        Some(_) => Err(ApiError::invalid(
            "ttl_secs",
            format!("must be between 1 and {}", MAX_TTL.as_secs()),
        )),
    }
}

/// What the views need of the org: its machines and the chain.
struct Org {
    machines: Vec<Machine>,
    policies: Vec<crate::policy::Policy>,
    default: Verdict,
}

async fn load(
    app: &App,
    ctx: &Ctx,
) -> Result<(std::sync::Arc<crate::db::orgs::Org>, Org), ApiError> {
    let org = active_org(app, ctx).await?;
    let model = app
        .reads
        .machines(app, org.id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let policies = crate::db::policies::list(&app.pool, org.id).await?;
    let o = Org {
        machines: model.rows.machines.clone(),
        policies,
        default: org.default_action,
    };
    Ok((org, o))
}

fn views(
    o: &Org,
    list: Vec<WatchInfo>,
    counters: &[crate::kernel::RuleObserved],
) -> Vec<WatchView> {
    let addrs: Vec<MachineAddr> = o.machines.iter().map(Machine::addr).collect();
    let names: BTreeMap<Uuid, String> = o.machines.iter().map(|m| (m.id, m.name.clone())).collect();
    let chain = Chain::new(&o.policies, &addrs, o.default);
    let now = Utc::now();
    list.into_iter()
        .map(|w| {
            let p = w.path;
            let number = match p.protocol {
                Protocol::Tcp => IPPROTO_TCP,
                Protocol::Udp => IPPROTO_UDP,
                _ => IPPROTO_ICMP,
            };
            let path = chain.explain_path(p.src, p.dst, number, p.port, &names);
            let comment = format!("\"{}\"", watch_comment(w.id));
            let counted = counters.iter().find(|r| r.rule.contains(&comment));
            let end = |ip| {
                let m = o.machines.iter().find(|m| m.address == ip);
                EndView {
                    address: ip,
                    machine_id: m.map(|m| m.id),
                    name: m.map(|m| m.name.clone()),
                }
            };
            WatchView {
                id: w.id,
                src: end(p.src),
                dst: end(p.dst),
                protocol: p.protocol,
                port: p.port,
                created_at: w.created_at,
                expires_at: w.expires_at,
                expires_in_secs: (w.expires_at - now).num_seconds().max(0),
                packets: counted.map_or(0, |r| r.packets),
                bytes: counted.map_or(0, |r| r.bytes),
                verdict: path.forward.verdict,
                decided_by: path.forward.decided_by,
                number: path.forward.number,
                reachable: path.reachable,
                summary: path.forward.rows.last().map(summary).unwrap_or_default(),
            }
        })
        .collect()
}

/// `POST /orgs/{org}/watch`: answered once the kernel counts the path.
pub async fn create(app: &App, ctx: &Ctx, input: WatchCreate) -> Result<WatchView, ApiError> {
    require_write(ctx)?;
    let (org, o) = load(app, ctx).await?;
    let q = ExplainQuery {
        src: Some(input.src),
        dst: Some(input.dst),
        proto: Some(input.proto),
        port: input.port.map(|p| p.to_string()),
    };
    let a = asked(&q, &org, &o.machines)?;
    let (src, dst, proto, port) = (a.src, a.dst, a.proto, a.port);
    let ttl = ttl(input.ttl_secs)?;
    let path = WatchPath {
        src,
        dst,
        protocol: proto,
        port,
    };
    let w = app.ctl.add_watch(org.id, path, ttl).await?;
    let (_, counters) = app.ctl.watches(org.id).await.unwrap_or_default();
    let view = views(&o, vec![w], &counters).remove(0);
    let detail = serde_json::json!({
        "src": src.to_string(), "dst": dst.to_string(), "protocol": proto, "port": port,
        "ttl_secs": ttl.as_secs(),
    });
    record_by(app, ctx, "watch.create", "watch", view.id, detail).await;
    Ok(view)
}

/// `GET /orgs/{org}/watch`: the live watches with their counters (at most [`MAX_WATCHES`]).
pub async fn list(app: &App, ctx: &Ctx) -> Result<WatchList, ApiError> {
    let (org, o) = load(app, ctx).await?;
    let (list, counters) = app.ctl.watches(org.id).await?;
    Ok(WatchList {
        watches: views(&o, list, &counters),
        max: MAX_WATCHES,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_one_to_120_seconds_default_60() {
        assert_eq!(ttl(None).unwrap(), Duration::from_secs(60));
        assert_eq!(ttl(Some(120)).unwrap(), Duration::from_secs(120));
        for bad in [0, 121, u64::MAX] {
            assert_eq!(ttl(Some(bad)).unwrap_err().status, 400, "{bad}");
        }
    }
}
