//! "Why can't A reach B?": the tenant's chain walked for one path by the pure
//! [`Chain::explain_path`] (the same order and matching the kernel's chain has), the rule lines
//! and counters the kernel holds for the rows, the data-plane facts of both ends (handshake,
//! endpoint, AllowedIPs, hub, last reconcile) and, for a denied path, the allow that would fix
//! it. Reads only: nothing is written, the kernel is only read (one counter dump).

use super::access::active_org;
use super::views::Presence;
use super::{ApiError, App, Ctx};
use crate::db::machines::Machine;
use crate::db::orgs::Org;
use crate::db::users::Role;
use crate::kernel::RuleObserved;
use crate::policy::evaluate::{
    Chain, Decider, Explained, ExplainedRow, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, summary,
};
use crate::policy::render::{DEFAULT_COMMENT, ESTABLISHED_COMMENT, MachineAddr, policy_comment};
use crate::policy::{Policy, PortRange, Protocol, Selector, Verdict};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use uuid::Uuid;

/// The question as the query string asks it (raw, percent-decoded values).
#[derive(Debug, Clone, Default)]
pub struct ExplainQuery {
    pub src: Option<String>,
    pub dst: Option<String>,
    pub proto: Option<String>,
    pub port: Option<String>,
}

impl ExplainQuery {
    /// From a raw query string (`src=…&dst=…&proto=…&port=…`); other parameters are ignored.
    pub fn parse(query: &str) -> Result<ExplainQuery, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|_| ApiError::bad_request("the query string could not be read"))?;
        let mut q = ExplainQuery::default();
        for (k, v) in pairs {
            let slot = match k.as_str() {
                "src" => &mut q.src,
                "dst" => &mut q.dst,
                "proto" => &mut q.proto,
                "port" => &mut q.port,
                _ => continue,
            };
            *slot = Some(v);
        }
        Ok(q)
    }

    /// Whether anything was asked at all (the page shows an empty form otherwise).
    pub fn is_empty(&self) -> bool {
        [&self.src, &self.dst, &self.proto, &self.port]
            .iter()
            .all(|v| v.as_deref().is_none_or(|s| s.trim().is_empty()))
    }
}

/// One end of the path: an address of the org, and the machine that has it (if any).
#[derive(Debug, Clone, Serialize)]
pub struct EndView {
    pub address: Ipv4Addr,
    pub machine_id: Option<Uuid>,
    pub name: Option<String>,
}

/// A row of the trace: the pure explanation, its one-line summary, the policy's name and the
/// rule line the kernel holds for it (`null` if the kernel has none).
#[derive(Debug, Clone, Serialize)]
pub struct TraceRow {
    #[serde(flatten)]
    pub row: ExplainedRow,
    pub summary: String,
    pub name: Option<String>,
    pub rule: Option<String>,
}

/// One direction of the path walked through the chain.
#[derive(Debug, Clone, Serialize)]
pub struct TraceView {
    pub verdict: Verdict,
    pub decided_by: Decider,
    pub number: Option<usize>,
    pub rows: Vec<TraceRow>,
}

/// The deciding rule's kernel counters.
#[derive(Debug, Clone, Serialize)]
pub struct CounterView {
    pub rule: String,
    pub packets: u64,
    pub bytes: u64,
    /// `total`: `packets` and `bytes` count since the rule was installed.
    pub window: &'static str,
    pub read_at: DateTime<Utc>,
    /// The rule's growth over the last two steps of the tenant's short history (30 s with the
    /// 15 s counters period); `None` until the history has two samples of the rule.
    pub recent: Option<RecentCounter>,
}

/// A rule's packets over a recent window, from the tenant actor's history.
#[derive(Debug, Clone, Serialize)]
pub struct RecentCounter {
    /// `30s`: the last two history steps (their length in seconds).
    pub window: String,
    pub packets: u64,
    pub bytes: u64,
    /// The end of the window: the history's newest sample.
    pub until: DateTime<Utc>,
}

/// The last two steps of a rule's history, if it has them.
fn recent(
    status: Option<&crate::actors::tenant::TenantStatus>,
    rule: &str,
) -> Option<RecentCounter> {
    let h = &*status?.history;
    let series = h.rules.get(&crate::actors::tenant::rule_key(rule)?)?;
    let (packets, bytes) = h.values(series);
    if packets.len() < 2 {
        return None;
    }
    let last2 = |v: &[u64]| v[v.len() - 2..].iter().sum();
    Some(RecentCounter {
        window: format!("{}s", h.step.as_secs() * 2),
        packets: last2(&packets),
        bytes: last2(&bytes),
        until: h.newest?.1,
    })
}

/// What the hub's kernel knows of one end's peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerFacts {
    pub machine_id: Uuid,
    pub name: String,
    /// The hub has a peer with the machine's key.
    pub peer_present: bool,
    pub last_handshake_at: Option<DateTime<Utc>>,
    pub handshake_age_secs: Option<i64>,
    pub presence: Presence,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    /// AllowedIPs is exactly the machine's /32.
    pub allowed_ips_ok: bool,
}

/// The data plane as last observed.
#[derive(Debug, Clone, Serialize)]
pub struct DataPlane {
    pub hub_up: bool,
    /// When the reconciler last observed the kernel, and whether that reconcile succeeded.
    pub observed_at: DateTime<Utc>,
    pub last_reconcile: &'static str,
    /// The operator sees the error; org users learn only that the last repair failed.
    pub last_error: Option<String>,
    pub src: Option<PeerFacts>,
    pub dst: Option<PeerFacts>,
}

/// The allow that would let the path through, placed just above the row that denies it.
#[derive(Debug, Clone, Serialize)]
pub struct FixView {
    /// `forward` (the first packet is denied) or `reply` (its reply is).
    pub direction: &'static str,
    pub action: Verdict,
    pub src: Selector,
    pub dst: Selector,
    pub protocol: Protocol,
    pub ports: Option<PortRange>,
    pub priority: i32,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExplainView {
    pub src: EndView,
    pub dst: EndView,
    pub protocol: Protocol,
    pub port: Option<u16>,
    /// The first packet's verdict.
    pub verdict: Verdict,
    /// Whether a real probe gets through (its reply too where the protocol needs one).
    pub reachable: bool,
    pub reply_needed: bool,
    pub forward: TraceView,
    pub reply: TraceView,
    pub counter: Option<CounterView>,
    pub data_plane: Option<DataPlane>,
    pub fix: Option<FixView>,
}

fn resolve<'m>(
    field: &str,
    raw: Option<&str>,
    org: &Org,
    machines: &'m [Machine],
) -> Result<(Ipv4Addr, Option<&'m Machine>), ApiError> {
    let raw = raw.map(str::trim).unwrap_or_default();
    if raw.is_empty() {
        return Err(ApiError::invalid(
            field,
            "required: a machine's id or name, or an address in the org network",
        ));
    }
    if let Ok(id) = Uuid::parse_str(raw) {
        // Another tenant's machine is answered like one that does not exist.
        let m = machines
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| ApiError::invalid(field, "no machine with this id in this org"))?;
        return Ok((m.address, Some(m)));
    }
    if let Ok(ip) = raw.parse::<Ipv4Addr>() {
        let cidr = org.cidr;
        if !cidr.contains(ip) {
            return Err(ApiError::invalid(
                field,
                format!("{ip} is outside the org network {cidr}"),
            ));
        }
        if ip == cidr.hub_address() {
            return Err(ApiError::invalid(
                field,
                format!(
                    "{ip} is the hub itself; only traffic between machines passes the policies"
                ),
            ));
        }
        if ip == cidr.network() || ip == cidr.broadcast() {
            return Err(ApiError::invalid(
                field,
                format!("{ip} is not a host address of {cidr}"),
            ));
        }
        return Ok((ip, machines.iter().find(|m| m.address == ip)));
    }
    let named: Vec<&Machine> = machines.iter().filter(|m| m.name == raw).collect();
    match named.as_slice() {
        [m] => Ok((m.address, Some(*m))),
        [] => Err(ApiError::invalid(
            field,
            "no machine with this id or name in this org, and not an IPv4 address",
        )),
        _ => Err(ApiError::invalid(
            field,
            "several machines have this name; use the machine's id",
        )),
    }
}

/// Protocol and port, checked together: tcp and udp need a port, icmp takes none.
fn protocol(q: &ExplainQuery) -> Result<(Protocol, u8, Option<u16>), ApiError> {
    let raw = q.proto.as_deref().map(str::trim).unwrap_or_default();
    let (proto, number) = match raw.to_ascii_lowercase().as_str() {
        "tcp" => (Protocol::Tcp, IPPROTO_TCP),
        "udp" => (Protocol::Udp, IPPROTO_UDP),
        "icmp" => (Protocol::Icmp, IPPROTO_ICMP),
        "" => return Err(ApiError::invalid("proto", "required: tcp, udp or icmp")),
        _ => return Err(ApiError::invalid("proto", "must be tcp, udp or icmp")),
    };
    let port = q.port.as_deref().map(str::trim).filter(|p| !p.is_empty());
    let port = match (proto, port) {
        (Protocol::Icmp, Some(_)) => {
            return Err(ApiError::invalid("port", "only with proto tcp or udp"));
        }
        (Protocol::Icmp, None) => None,
        (_, None) => {
            return Err(ApiError::invalid("port", "required with proto tcp or udp"));
        }
        (_, Some(p)) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => {
                return Err(ApiError::invalid(
                    "port",
                    "must be a number from 1 to 65535",
                ));
            }
        },
    };
    Ok((proto, number, port))
}

/// A question, checked: both ends, the protocol (and its number) and the port.
pub(crate) struct Asked<'m> {
    pub src: Ipv4Addr,
    pub src_m: Option<&'m Machine>,
    pub dst: Ipv4Addr,
    pub dst_m: Option<&'m Machine>,
    pub proto: Protocol,
    pub number: u8,
    pub port: Option<u16>,
}

/// Checks a question against the org (Explain and Watch ask the same way).
pub(crate) fn asked<'m>(
    q: &ExplainQuery,
    org: &Org,
    machines: &'m [Machine],
) -> Result<Asked<'m>, ApiError> {
    let (src, src_m) = resolve("src", q.src.as_deref(), org, machines)?;
    let (dst, dst_m) = resolve("dst", q.dst.as_deref(), org, machines)?;
    let (proto, number, port) = protocol(q)?;
    if src == dst {
        return Err(ApiError::invalid(
            "dst",
            "the same address as src: a machine's packets to itself never reach the hub",
        ));
    }
    Ok(Asked {
        src,
        src_m,
        dst,
        dst_m,
        proto,
        number,
        port,
    })
}

/// The comment of the rule behind a row.
fn comment_of(d: &Decider) -> String {
    match d {
        Decider::Policy(id) => policy_comment(*id),
        Decider::Established => ESTABLISHED_COMMENT.into(),
        Decider::Default => DEFAULT_COMMENT.into(),
    }
}

fn rule_of<'r>(rules: &'r [RuleObserved], d: &Decider) -> Option<&'r RuleObserved> {
    let c = format!("\"{}\"", comment_of(d));
    rules.iter().find(|r| r.rule.contains(&c))
}

fn trace(e: Explained, rules: &[RuleObserved], policies: &[Policy]) -> TraceView {
    let rows = e
        .rows
        .into_iter()
        .map(|row| {
            let name = match row.decider {
                Decider::Policy(id) => policies
                    .iter()
                    .find(|p| p.id == id)
                    .map(|p| p.name.clone())
                    .filter(|n| !n.is_empty()),
                Decider::Established => Some("replies (established, related)".into()),
                Decider::Default => Some("default".into()),
            };
            TraceRow {
                summary: summary(&row),
                rule: rule_of(rules, &row.decider).map(|r| r.rule.clone()),
                name,
                row,
            }
        })
        .collect();
    TraceView {
        verdict: e.verdict,
        decided_by: e.decided_by,
        number: e.number,
        rows,
    }
}

fn selector_for(ip: Ipv4Addr, m: Option<&Machine>) -> Selector {
    match m {
        Some(m) => Selector::Machine(m.id),
        None => Selector::Cidr(
            crate::overlay::Ipv4Cidr::new(ip, 32).expect("a /32 of any address is valid"),
        ),
    }
}

/// The allow that lets a denied direction through: just above the denying policy (one
/// priority lower, so it is evaluated before every policy of the deny's priority), or at the
/// default priority when only the default denies.
fn fix_for(
    direction: &'static str,
    t: &TraceView,
    policies: &[Policy],
    src: Selector,
    dst: Selector,
    protocol: Protocol,
    port: Option<u16>,
) -> Option<FixView> {
    if t.verdict == Verdict::Allow {
        return None;
    }
    let (priority, note) = match t.decided_by {
        Decider::Policy(id) => {
            let deny = policies.iter().find(|p| p.id == id)?;
            if deny.priority == 0 {
                (
                    0,
                    Some(
                        "the deny has priority 0: after saving, move the new policy above it"
                            .into(),
                    ),
                )
            } else {
                (deny.priority - 1, None)
            }
        }
        Decider::Default | Decider::Established => (100, None),
    };
    Some(FixView {
        direction,
        action: Verdict::Allow,
        src,
        dst,
        protocol,
        ports: port.map(|p| PortRange { first: p, last: p }),
        priority,
        note,
    })
}

fn peer_facts(
    m: &Machine,
    s: &crate::actors::tenant::TenantStatus,
    now: DateTime<Utc>,
) -> PeerFacts {
    let peer = s.peers.get(&m.public_key);
    let last = peer
        .and_then(|p| p.last_handshake)
        .and_then(|t| DateTime::from_timestamp(t, 0));
    let allowed: Vec<String> = peer
        .map(|p| p.allowed_ips.iter().cloned().collect())
        .unwrap_or_default();
    let want = format!("{}/32", m.address);
    PeerFacts {
        machine_id: m.id,
        name: m.name.clone(),
        peer_present: peer.is_some(),
        last_handshake_at: last,
        handshake_age_secs: last.map(|t| (now - t).num_seconds().max(0)),
        presence: Presence::of(last, now),
        endpoint: peer.and_then(|p| p.endpoint.clone()),
        allowed_ips_ok: allowed == [want],
        allowed_ips: allowed,
    }
}

/// `GET /orgs/{org}/explain?src=&dst=&proto=&port=`.
pub async fn explain(app: &App, ctx: &Ctx, q: &ExplainQuery) -> Result<ExplainView, ApiError> {
    let org = active_org(app, ctx).await?;
    let model = app
        .reads
        .machines(app, org.id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let machines = &model.rows.machines;
    let Asked {
        src: src_ip,
        src_m,
        dst: dst_ip,
        dst_m,
        proto,
        number,
        port,
    } = asked(q, &org, machines)?;
    let policies = crate::db::policies::list(&app.pool, org.id).await?;
    let addrs: Vec<MachineAddr> = machines.iter().map(Machine::addr).collect();
    let names: BTreeMap<Uuid, String> = machines.iter().map(|m| (m.id, m.name.clone())).collect();
    let chain = Chain::new(&policies, &addrs, org.default_action);
    let path = chain.explain_path(src_ip, dst_ip, number, port, &names);

    // The kernel's side: the last observation, its rule counters read now.
    let now = Utc::now();
    let status = app.ctl.status_snapshot(org.id).await.ok();
    let rules: Vec<RuleObserved> = match &status {
        Some(s) => match app.ctl.counters(s).await {
            Some(r) => r,
            None => s.rules.clone(),
        },
        None => Vec::new(),
    };
    let forward = trace(path.forward, &rules, &policies);
    let reply = trace(path.reply, &rules, &policies);
    let counter = rule_of(&rules, &forward.decided_by).map(|r| CounterView {
        rule: comment_of(&forward.decided_by),
        packets: r.packets,
        bytes: r.bytes,
        window: "total",
        read_at: now,
        recent: recent(status.as_deref(), &r.rule),
    });
    let data_plane = status.as_deref().map(|s| DataPlane {
        hub_up: s.up,
        observed_at: s.observed_at,
        last_reconcile: if s.last_error.is_some() {
            "failed"
        } else {
            "ok"
        },
        last_error: if ctx.role() == Role::Operator {
            s.last_error.clone()
        } else {
            s.last_error.as_ref().map(|_| {
                "the last repair of the hub failed; the operator's logs have the details".into()
            })
        },
        src: src_m.map(|m| peer_facts(m, s, now)),
        dst: dst_m.map(|m| peer_facts(m, s, now)),
    });
    let (src_sel, dst_sel) = (selector_for(src_ip, src_m), selector_for(dst_ip, dst_m));
    let fix = fix_for(
        "forward",
        &forward,
        &policies,
        src_sel.clone(),
        dst_sel.clone(),
        proto,
        port,
    )
    .or_else(|| {
        path.reply_needed
            .then(|| fix_for("reply", &reply, &policies, dst_sel, src_sel, proto, None))
            .flatten()
    });
    let end = |ip: Ipv4Addr, m: Option<&Machine>| EndView {
        address: ip,
        machine_id: m.map(|m| m.id),
        name: m.map(|m| m.name.clone()),
    };
    Ok(ExplainView {
        src: end(src_ip, src_m),
        dst: end(dst_ip, dst_m),
        protocol: proto,
        port,
        verdict: forward.verdict,
        reachable: path.reachable,
        reply_needed: path.reply_needed,
        forward,
        reply,
        counter,
        data_plane,
        fix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(src: &str, dst: &str, proto: &str, port: &str) -> ExplainQuery {
        let o = |s: &str| (!s.is_empty()).then(|| s.to_string());
        ExplainQuery {
            src: o(src),
            dst: o(dst),
            proto: o(proto),
            port: o(port),
        }
    }

    #[test]
    fn protocol_and_port_are_checked_together() {
        assert_eq!(
            protocol(&q("a", "b", "tcp", "22")).unwrap().2,
            Some(22),
            "tcp with a port"
        );
        assert_eq!(protocol(&q("a", "b", "ICMP", "")).unwrap().2, None);
        for (proto, port, field) in [
            ("icmp", "22", "port"),
            ("tcp", "", "port"),
            ("udp", "0", "port"),
            ("udp", "65536", "port"),
            ("udp", "+5", "port"),
            ("sctp", "5", "proto"),
            ("", "", "proto"),
        ] {
            let e = protocol(&q("a", "b", proto, port)).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(
                e.message.starts_with(field),
                "{proto}/{port}: {}",
                e.message
            );
        }
    }

    #[test]
    fn the_query_string_is_decoded() {
        let q =
            ExplainQuery::parse("src=my%20laptop&dst=10.100.0.3&proto=tcp&port=22&x=1").unwrap();
        assert_eq!(q.src.as_deref(), Some("my laptop"));
        assert_eq!(q.port.as_deref(), Some("22"));
        assert!(ExplainQuery::parse("").unwrap().is_empty());
    }
}
