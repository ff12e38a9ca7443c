//! What the tenant chain does with one packet, computed from the same inputs and in the same
//! order as [`super::render`] lays the chain out for the kernel: enabled policies by (priority,
//! creation, id), first match wins; a policy naming a machine that no longer exists matches
//! nothing; then, for a default-deny tenant, replies of established flows; then the default.
//! Pure, so it can answer "why can't A reach B?" and decide which tracked flows a narrowed
//! policy must cut.

mod explain;

pub use explain::{EPHEMERAL_PORTS, Explained, ExplainedRow, FieldWhy, PathExplained, summary};

use super::render::MachineAddr;
use super::{Policy, Protocol, Selector, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use uuid::Uuid;

/// IP protocol numbers the chain distinguishes.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// One packet as the hub's FORWARD path sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IP protocol number.
    pub proto: u8,
    /// Destination port (TCP and UDP).
    pub dport: Option<u16>,
    /// Part of a flow conntrack already knows (a reply, or a later packet).
    pub established: bool,
}

/// Which row of the chain decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "policy", rename_all = "lowercase")]
pub enum Decider {
    Policy(Uuid),
    Established,
    Default,
}

/// One row of the chain and how the packet fared against it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub decider: Decider,
    pub action: Verdict,
    pub src: bool,
    pub dst: bool,
    pub protocol: bool,
    pub port: bool,
    pub matched: bool,
}

/// The chain walked for one packet: every row up to (and including) the one that decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trace {
    pub verdict: Verdict,
    pub decided_by: Decider,
    pub rows: Vec<Row>,
}

/// The tenant's chain in evaluation order, ready to judge many packets.
pub struct Chain<'a> {
    policies: Vec<&'a Policy>,
    machines: BTreeMap<Uuid, &'a MachineAddr>,
    all: &'a [MachineAddr],
    default: Verdict,
    /// Each policy's number in the full list (disabled ones included), as the policies page
    /// numbers them: 1, 2, 3, … in (priority, creation, id) order.
    numbers: BTreeMap<Uuid, usize>,
}

impl<'a> Chain<'a> {
    pub fn new(policies: &'a [Policy], machines: &'a [MachineAddr], default: Verdict) -> Self {
        let by_id: BTreeMap<Uuid, &MachineAddr> = machines.iter().map(|m| (m.id, m)).collect();
        let mut ordered: Vec<&Policy> = policies
            .iter()
            .filter(|p| p.enabled)
            .filter(|p| {
                // Rendered only if every machine it names exists.
                [&p.src, &p.dst]
                    .iter()
                    .all(|s| !matches!(s, Selector::Machine(id) if !by_id.contains_key(id)))
            })
            .collect();
        ordered.sort_by_key(|p| (p.priority, p.created_at, p.id));
        let mut every: Vec<&Policy> = policies.iter().collect();
        every.sort_by_key(|p| (p.priority, p.created_at, p.id));
        let numbers = every
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id, i + 1))
            .collect();
        Chain {
            policies: ordered,
            machines: by_id,
            all: machines,
            default,
            numbers,
        }
    }

    fn selects(&self, sel: &Selector, ip: Ipv4Addr) -> bool {
        match sel {
            Selector::Any => true,
            Selector::Machine(id) => self.machines.get(id).is_some_and(|m| m.address == ip),
            Selector::Cidr(c) => c.contains(ip),
            Selector::Tag(t) => self
                .all
                .iter()
                .any(|m| m.address == ip && m.tags.contains(t)),
        }
    }

    /// Walks the chain for `p`.
    pub fn evaluate(&self, p: &Packet) -> Trace {
        let mut rows = Vec::new();
        for policy in &self.policies {
            let src = self.selects(&policy.src, p.src);
            let dst = self.selects(&policy.dst, p.dst);
            let protocol = match policy.protocol {
                Protocol::Any => true,
                Protocol::Tcp => p.proto == IPPROTO_TCP,
                Protocol::Udp => p.proto == IPPROTO_UDP,
                Protocol::Icmp => p.proto == IPPROTO_ICMP,
            };
            let port = match (policy.protocol, policy.ports) {
                (Protocol::Tcp | Protocol::Udp, Some(r)) => {
                    p.dport.is_some_and(|d| (r.first..=r.last).contains(&d))
                }
                _ => true,
            };
            let matched = src && dst && protocol && port;
            rows.push(Row {
                decider: Decider::Policy(policy.id),
                action: policy.action,
                src,
                dst,
                protocol,
                port,
                matched,
            });
            if matched {
                return Trace {
                    verdict: policy.action,
                    decided_by: Decider::Policy(policy.id),
                    rows,
                };
            }
        }
        if self.default == Verdict::Deny {
            let matched = p.established;
            rows.push(Row {
                decider: Decider::Established,
                action: Verdict::Allow,
                src: true,
                dst: true,
                protocol: true,
                port: true,
                matched,
            });
            if matched {
                return Trace {
                    verdict: Verdict::Allow,
                    decided_by: Decider::Established,
                    rows,
                };
            }
        }
        rows.push(Row {
            decider: Decider::Default,
            action: self.default,
            src: true,
            dst: true,
            protocol: true,
            port: true,
            matched: true,
        });
        Trace {
            verdict: self.default,
            decided_by: Decider::Default,
            rows,
        }
    }

    /// Would a new flow like this one be let through now? (What a tracked flow must still pass
    /// to be kept when the rules change.)
    pub fn admits_new(&self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, dport: Option<u16>) -> bool {
        self.evaluate(&Packet {
            src,
            dst,
            proto,
            dport,
            established: false,
        })
        .verdict
            == Verdict::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PortRange;
    use chrono::{TimeZone, Utc};

    pub(super) fn machine(n: u128, last: u8, tags: &[&str]) -> MachineAddr {
        MachineAddr {
            id: Uuid::from_u128(n),
            address: Ipv4Addr::new(10, 100, 0, last),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    pub(super) fn policy(
        n: u128,
        priority: i32,
        action: Verdict,
        src: Selector,
        dst: Selector,
    ) -> Policy {
        Policy {
            id: Uuid::from_u128(n),
            name: String::new(),
            priority,
            action,
            src,
            dst,
            protocol: Protocol::Any,
            ports: None,
            enabled: true,
            created_at: Utc.timestamp_opt(1_700_000_000 + n as i64, 0).unwrap(),
        }
    }

    fn tcp(src: u8, dst: u8, port: u16) -> Packet {
        Packet {
            src: Ipv4Addr::new(10, 100, 0, src),
            dst: Ipv4Addr::new(10, 100, 0, dst),
            proto: IPPROTO_TCP,
            dport: Some(port),
            established: false,
        }
    }

    #[test]
    fn first_match_in_priority_order_then_established_then_default() {
        let machines = [machine(1, 2, &["web"]), machine(2, 3, &["db"])];
        let mut ssh = policy(
            10,
            10,
            Verdict::Deny,
            Selector::Tag("web".into()),
            Selector::Any,
        );
        ssh.protocol = Protocol::Tcp;
        ssh.ports = Some(PortRange {
            first: 22,
            last: 22,
        });
        let all = policy(
            11,
            20,
            Verdict::Allow,
            Selector::Tag("web".into()),
            Selector::Tag("db".into()),
        );
        let policies = [all.clone(), ssh.clone()];
        let chain = Chain::new(&policies, &machines, Verdict::Deny);

        let t = chain.evaluate(&tcp(2, 3, 22));
        assert_eq!(
            (t.verdict, t.decided_by),
            (Verdict::Deny, Decider::Policy(ssh.id))
        );
        assert_eq!(t.rows.len(), 1, "the deny comes first by priority");

        let t = chain.evaluate(&tcp(2, 3, 443));
        assert_eq!(
            (t.verdict, t.decided_by),
            (Verdict::Allow, Decider::Policy(all.id))
        );
        assert!(!t.rows[0].port && t.rows[0].src && t.rows[0].protocol);

        // The reverse direction: no policy; new is dropped, a reply passes as established.
        let t = chain.evaluate(&tcp(3, 2, 5555));
        assert_eq!((t.verdict, t.decided_by), (Verdict::Deny, Decider::Default));
        let reply = Packet {
            established: true,
            ..tcp(3, 2, 5555)
        };
        assert_eq!(chain.evaluate(&reply).decided_by, Decider::Established);
        // Explicit denies come before the shortcut: an established flow on :22 is dropped.
        let old = Packet {
            established: true,
            ..tcp(2, 3, 22)
        };
        assert_eq!(chain.evaluate(&old).verdict, Verdict::Deny);
    }

    #[test]
    fn disabled_and_dangling_policies_match_nothing() {
        let machines = [machine(1, 2, &[])];
        let mut off = policy(1, 1, Verdict::Deny, Selector::Any, Selector::Any);
        off.enabled = false;
        let gone = policy(
            2,
            2,
            Verdict::Deny,
            Selector::Machine(Uuid::from_u128(99)),
            Selector::Any,
        );
        let policies = [off, gone];
        let chain = Chain::new(&policies, &machines, Verdict::Allow);
        let t = chain.evaluate(&tcp(2, 5, 80));
        assert_eq!(
            (t.verdict, t.decided_by),
            (Verdict::Allow, Decider::Default)
        );
        assert_eq!(t.rows.len(), 1);
        assert!(chain.admits_new(
            Ipv4Addr::new(10, 100, 0, 2),
            Ipv4Addr::new(10, 100, 0, 5),
            IPPROTO_ICMP,
            None
        ));
    }

    #[test]
    fn cidr_machine_and_protocols() {
        let machines = [machine(1, 2, &[]), machine(2, 3, &[])];
        let mut icmp = policy(
            1,
            1,
            Verdict::Deny,
            Selector::Machine(Uuid::from_u128(1)),
            Selector::Cidr("10.100.0.0/30".parse().unwrap()),
        );
        icmp.protocol = Protocol::Icmp;
        let policies = [icmp];
        let chain = Chain::new(&policies, &machines, Verdict::Allow);
        let ping = Packet {
            proto: IPPROTO_ICMP,
            dport: None,
            ..tcp(2, 3, 0)
        };
        assert_eq!(chain.evaluate(&ping).verdict, Verdict::Deny);
        assert_eq!(
            chain.evaluate(&tcp(2, 3, 80)).verdict,
            Verdict::Allow,
            "tcp is not icmp"
        );
        let outside = Packet {
            dst: Ipv4Addr::new(10, 100, 0, 9),
            ..ping
        };
        assert_eq!(
            chain.evaluate(&outside).verdict,
            Verdict::Allow,
            "outside the cidr"
        );
    }
}
