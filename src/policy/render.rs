//! Pure rendering of a tenant's policies into its ACL chain, in exactly the form `iptables-save`
//! prints rules back (so the reconciler can compare text with text).
//!
//! Order: enabled policies by (priority, creation, id), first match wins; then, for a tenant whose
//! default is deny, replies of allowed flows (conntrack ESTABLISHED) — *after* the explicit rules,
//! so a new deny drops the very next packet even of a flow that is already established; then the
//! tenant default. Tags become ipsets (named by a hash of the tag), so a rule costs the same per
//! packet however many machines carry the tag.

use super::{Policy, Protocol, Selector, Verdict};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use uuid::Uuid;

/// The tenant's ACL chain in its namespace's filter table (FORWARD jumps to it for wg0 → wg0).
pub const ACL_CHAIN: &str = "MWG-ACL";

/// The rendered firewall a tenant should have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallRules {
    /// Rules of the ACL chain exactly as `iptables-save` prints them (`-A MWG-ACL …`).
    pub acl: Vec<String>,
    pub sets: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    /// Counting-only rules of the watch chain (`policy::watch`; empty: no chain, no jump).
    pub watch: Vec<String>,
}

/// What the renderer needs to know of a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineAddr {
    pub id: Uuid,
    pub address: Ipv4Addr,
    pub tags: BTreeSet<String>,
}

/// The comment that maps a rule's counters back to its policy.
pub fn policy_comment(id: Uuid) -> String {
    format!("mwg:{id}")
}

pub const DEFAULT_COMMENT: &str = "mwg:default";
pub const ESTABLISHED_COMMENT: &str = "mwg:established";

/// The ipset holding the addresses of the machines that carry `tag` (FNV-1a; ≤ 31 characters).
pub fn tag_set_name(tag: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tag.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("mwgt{h:016x}")
}

enum Match {
    Addr(String),
    Set(String),
}

/// `None` when the selector names a machine that no longer exists: the rule matches nothing.
fn resolve(sel: &Selector, machines: &BTreeMap<Uuid, &MachineAddr>) -> Option<Option<Match>> {
    Some(match sel {
        Selector::Any => None,
        Selector::Machine(id) => Some(Match::Addr(format!("{}/32", machines.get(id)?.address))),
        Selector::Cidr(c) => Some(Match::Addr(c.to_string())),
        Selector::Tag(t) => Some(Match::Set(tag_set_name(t))),
    })
}

fn target(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "ACCEPT",
        Verdict::Deny => "DROP",
    }
}

fn rule(p: &Policy, machines: &BTreeMap<Uuid, &MachineAddr>) -> Option<String> {
    let src = resolve(&p.src, machines)?;
    let dst = resolve(&p.dst, machines)?;
    let mut r = format!("-A {ACL_CHAIN}");
    if let Some(Match::Addr(a)) = &src {
        let _ = write!(r, " -s {a}");
    }
    if let Some(Match::Addr(a)) = &dst {
        let _ = write!(r, " -d {a}");
    }
    match p.protocol {
        Protocol::Any => {}
        proto => {
            let name = proto.as_str();
            let _ = write!(r, " -p {name}");
            if let (Protocol::Tcp | Protocol::Udp, Some(ports)) = (proto, p.ports) {
                if ports.first == ports.last {
                    let _ = write!(r, " -m {name} --dport {}", ports.first);
                } else {
                    let _ = write!(r, " -m {name} --dport {}:{}", ports.first, ports.last);
                }
            }
        }
    }
    if let Some(Match::Set(s)) = &src {
        let _ = write!(r, " -m set --match-set {s} src");
    }
    if let Some(Match::Set(s)) = &dst {
        let _ = write!(r, " -m set --match-set {s} dst");
    }
    let _ = write!(
        r,
        " -m comment --comment \"{}\" -j {}",
        policy_comment(p.id),
        target(p.action)
    );
    Some(r)
}

/// Renders the tenant chain and the tag sets its rules use.
pub fn render(policies: &[Policy], machines: &[MachineAddr], default: Verdict) -> FirewallRules {
    let by_id: BTreeMap<Uuid, &MachineAddr> = machines.iter().map(|m| (m.id, m)).collect();
    let mut ordered: Vec<&Policy> = policies.iter().filter(|p| p.enabled).collect();
    ordered.sort_by_key(|p| (p.priority, p.created_at, p.id));

    let mut out = FirewallRules::default();
    for p in ordered {
        let Some(text) = rule(p, &by_id) else {
            continue;
        };
        for sel in [&p.src, &p.dst] {
            if let Selector::Tag(t) = sel {
                let members = machines
                    .iter()
                    .filter(|m| m.tags.contains(t))
                    .map(|m| m.address)
                    .collect();
                out.sets.insert(tag_set_name(t), members);
            }
        }
        out.acl.push(text);
    }
    if default == Verdict::Deny {
        out.acl.push(format!(
            "-A {ACL_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"{ESTABLISHED_COMMENT}\" -j ACCEPT"
        ));
    }
    out.acl.push(format!(
        "-A {ACL_CHAIN} -m comment --comment \"{DEFAULT_COMMENT}\" -j {}",
        target(default)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PortRange;
    use crate::policy::fixtures::{id, machine, policy};

    #[test]
    fn default_allow_is_one_rule() {
        let r = render(&[], &[], Verdict::Allow);
        assert_eq!(
            r.acl,
            vec!["-A MWG-ACL -m comment --comment \"mwg:default\" -j ACCEPT"]
        );
        assert!(r.sets.is_empty());
    }

    #[test]
    fn default_deny_allows_replies_after_explicit_rules() {
        let machines = [machine(1, 2, &[]), machine(2, 3, &[])];
        let mut p = policy(
            10,
            100,
            Verdict::Allow,
            Selector::Machine(id(1)),
            Selector::Machine(id(2)),
        );
        p.protocol = Protocol::Tcp;
        p.ports = Some(PortRange {
            first: 443,
            last: 443,
        });
        let d = policy(
            11,
            50,
            Verdict::Deny,
            Selector::Machine(id(2)),
            Selector::Any,
        );
        let r = render(&[p, d], &machines, Verdict::Deny);
        assert_eq!(
            r.acl,
            vec![
                format!("-A MWG-ACL -s 10.100.0.3/32 -m comment --comment \"mwg:{}\" -j DROP", id(11)),
                format!(
                    "-A MWG-ACL -s 10.100.0.2/32 -d 10.100.0.3/32 -p tcp -m tcp --dport 443 -m comment --comment \"mwg:{}\" -j ACCEPT",
                    id(10)
                ),
                "-A MWG-ACL -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"mwg:established\" -j ACCEPT".to_string(),
                "-A MWG-ACL -m comment --comment \"mwg:default\" -j DROP".to_string(),
            ]
        );
    }

    #[test]
    fn order_is_priority_then_creation_then_id_and_disabled_are_skipped() {
        let a = policy(3, 10, Verdict::Deny, Selector::Any, Selector::Any);
        let b = policy(2, 10, Verdict::Allow, Selector::Any, Selector::Any);
        let c = policy(1, 20, Verdict::Deny, Selector::Any, Selector::Any);
        let mut off = policy(4, 1, Verdict::Deny, Selector::Any, Selector::Any);
        off.enabled = false;
        let one = render(
            &[a.clone(), b.clone(), c.clone(), off.clone()],
            &[],
            Verdict::Allow,
        );
        let two = render(&[off, c, a, b], &[], Verdict::Allow);
        assert_eq!(one, two, "input order does not matter");
        let comments: Vec<_> = one
            .acl
            .iter()
            .map(|r| r.contains(&id(2).to_string()))
            .collect();
        assert_eq!(comments, vec![true, false, false, false]);
        assert!(one.acl[1].contains(&id(3).to_string()));
        assert!(one.acl[2].contains(&id(1).to_string()));
        assert!(!one.acl.iter().any(|r| r.contains(&id(4).to_string())));
    }

    #[test]
    fn tags_become_sets_and_ports_ranges() {
        let machines = [
            machine(1, 2, &["web"]),
            machine(2, 3, &["web", "db"]),
            machine(3, 4, &[]),
        ];
        let mut p = policy(
            9,
            1,
            Verdict::Deny,
            Selector::Tag("web".into()),
            Selector::Tag("db".into()),
        );
        p.protocol = Protocol::Udp;
        p.ports = Some(PortRange {
            first: 8000,
            last: 8100,
        });
        let r = render(&[p], &machines, Verdict::Allow);
        let web = tag_set_name("web");
        let db = tag_set_name("db");
        assert_eq!(
            r.acl[0],
            format!(
                "-A MWG-ACL -p udp -m udp --dport 8000:8100 -m set --match-set {web} src -m set --match-set {db} dst -m comment --comment \"mwg:{}\" -j DROP",
                id(9)
            )
        );
        assert_eq!(r.sets[&web].len(), 2);
        assert_eq!(r.sets[&db], BTreeSet::from([Ipv4Addr::new(10, 100, 0, 3)]));
        assert!(web.len() <= 31);
    }

    #[test]
    fn vanished_machine_rule_matches_nothing_and_icmp_has_no_ports() {
        let mut p = policy(
            5,
            1,
            Verdict::Deny,
            Selector::Machine(id(77)),
            Selector::Any,
        );
        let r = render(&[p.clone()], &[], Verdict::Allow);
        assert_eq!(r.acl.len(), 1, "only the default remains");
        p.src = Selector::Cidr("10.100.4.0/24".parse().unwrap());
        p.protocol = Protocol::Icmp;
        p.ports = Some(PortRange { first: 1, last: 2 });
        let r = render(&[p], &[], Verdict::Allow);
        assert_eq!(
            r.acl[0],
            format!(
                "-A MWG-ACL -s 10.100.4.0/24 -p icmp -m comment --comment \"mwg:{}\" -j DROP",
                id(5)
            )
        );
    }
}
