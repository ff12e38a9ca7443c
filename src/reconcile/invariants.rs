//! The promises a tenant's kernel keeps, as checks of one observation (pure): what the org's
//! overview shows as its live invariants panel. A repair tells which checks had failed just
//! before it ([`failed_before`]), since the reconciler publishes only what it left behind.

use super::Observed;
use crate::kernel::firewall::{forward_jump, watch_jump};
use crate::kernel::{PeerObserved, TABLE_MAIN};
use crate::keys::PublicKey;
use crate::names::TENANT_IFACE;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Every check, in the order shown: id and what it promises.
pub const CHECKS: [(&str, &str); 7] = [
    (
        "forward",
        "FORWARD policy DROP with the single jump to MWG-ACL (after the counting-only jump to MWG-WATCH while a path is watched)",
    ),
    ("links", "The namespace holds only lo and wg0"),
    ("nat", "The nat table is empty"),
    ("routes", "No default or static route"),
    ("ipv6", "IPv6 is off"),
    ("allowed_ips", "Every peer's AllowedIPs is exactly its /32"),
    ("hub_key", "The hub key opens (to the public key in use)"),
];

/// One check of one observation: passed or not, and what the kernel showed (the operator's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub id: &'static str,
    pub pass: bool,
    pub detail: String,
}

fn check(id: &'static str, pass: bool, detail: String) -> Check {
    Check { id, pass, detail }
}

/// The checks that need the kernel only (all but `allowed_ips` and `hub_key`).
pub fn kernel_checks(o: &Observed) -> Vec<Check> {
    let Some(ns) = &o.netns else {
        let gone = || "no namespace".to_string();
        return ["forward", "links", "nat", "routes", "ipv6"]
            .into_iter()
            .map(|id| check(id, false, gone()))
            .collect();
    };
    let (forward, nat) = match &o.firewall {
        Some(fw) => {
            let policy = fw.forward_policy.as_deref().unwrap_or("none");
            // A watched path adds a jump first to rules without a target: it decides nothing.
            let jumps_ok = fw.forward == [forward_jump()]
                || (fw.forward == [watch_jump(), forward_jump()] && fw.watch.is_some());
            let ok = policy == "DROP" && jumps_ok;
            let rules = fw.forward.join("; ");
            (
                check("forward", ok, format!("policy {policy}; rules: {rules}")),
                check("nat", fw.nat.is_empty(), fw.nat.join("; ")),
            )
        }
        None => (
            check("forward", false, "filter table unreadable".into()),
            check("nat", false, "nat table unreadable".into()),
        ),
    };
    let names: Vec<&str> = ns.links.iter().map(|l| l.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    let links = check("links", sorted == ["lo", TENANT_IFACE], names.join(", "));
    let bad_routes: Vec<&str> = ns
        .routes
        .iter()
        .filter(|r| {
            r.dst == "0.0.0.0/0" || r.dst == "::/0" || (r.table == TABLE_MAIN && !r.kernel_made)
        })
        .map(|r| r.dst.as_str())
        .collect();
    let routes = check("routes", bad_routes.is_empty(), bad_routes.join(", "));
    let ipv6 = check(
        "ipv6",
        ns.ipv6_disabled,
        format!("disable_ipv6 everywhere: {}", ns.ipv6_disabled),
    );
    vec![forward, links, nat, routes, ipv6]
}

/// Every peer's AllowedIPs is exactly the /32 of the machine with its key, and every machine
/// is a peer.
pub fn allowed_ips(
    peers: &BTreeMap<PublicKey, PeerObserved>,
    want: &BTreeMap<PublicKey, Ipv4Addr>,
) -> Check {
    let mut wrong = Vec::new();
    for (key, p) in peers {
        let expected = want.get(key).map(|a| format!("{a}/32"));
        let ok = expected
            .as_ref()
            .is_some_and(|e| p.allowed_ips.len() == 1 && p.allowed_ips.contains(e));
        if !ok {
            let ips: Vec<&str> = p.allowed_ips.iter().map(String::as_str).collect();
            wrong.push(format!("{}: {}", key.to_base64(), ips.join(",")));
        }
    }
    for key in want.keys().filter(|k| !peers.contains_key(k)) {
        wrong.push(format!("{}: missing", key.to_base64()));
    }
    let detail = if wrong.is_empty() {
        format!("{} peers", peers.len())
    } else {
        wrong.join("; ")
    };
    check("allowed_ips", wrong.is_empty(), detail)
}

/// The checks a repair of this kind (`Action::kind`) shows to have failed just before it.
pub fn failed_before(kind: &str) -> &'static [&'static str] {
    match kind {
        "create_netns" => &["forward", "links", "nat", "routes", "ipv6", "allowed_ips"],
        "apply_firewall" => &["forward"],
        "flush_nat" => &["nat"],
        "delete_route" => &["routes"],
        "set_sysctls" => &["ipv6"],
        "set_peers" => &["allowed_ips"],
        "configure_device" => &["links", "hub_key"],
        _ => &["links"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{
        DeviceState, FirewallObserved, LinkObserved, NetnsObserved, RouteObserved,
    };
    use std::collections::BTreeSet;

    fn healthy() -> Observed {
        let link = |name: &str| LinkObserved {
            name: name.into(),
            mtu: 1420,
            up: true,
            ipv4: BTreeSet::new(),
        };
        Observed {
            netns: Some(NetnsObserved {
                inode: 1,
                links: vec![link("lo"), link("wg0")],
                routes: vec![RouteObserved {
                    dst: "10.100.0.0/16".into(),
                    ipv6: false,
                    table: TABLE_MAIN,
                    dev: Some("wg0".into()),
                    kernel_made: true,
                    unicast: true,
                    raw: None,
                }],
                ip_forward: true,
                ipv6_disabled: true,
                redirects_off: true,
            }),
            host_link: false,
            device: DeviceState::Absent,
            firewall: Some(FirewallObserved {
                forward_policy: Some("DROP".into()),
                forward: vec![forward_jump()],
                acl: Some(vec![]),
                watch: None,
                nat: vec![],
                sets: BTreeMap::new(),
                generation: None,
            }),
        }
    }

    fn failing(o: &Observed) -> Vec<&'static str> {
        kernel_checks(o)
            .into_iter()
            .filter(|c| !c.pass)
            .map(|c| c.id)
            .collect()
    }

    #[test]
    fn a_healthy_namespace_passes_and_each_break_fails_its_check() {
        let ok = healthy();
        assert!(failing(&ok).is_empty(), "{:?}", kernel_checks(&ok));
        let mut o = healthy();
        o.netns = None;
        assert_eq!(failing(&o), ["forward", "links", "nat", "routes", "ipv6"]);
        let mut o = healthy();
        o.firewall.as_mut().unwrap().forward_policy = Some("ACCEPT".into());
        assert_eq!(failing(&o), ["forward"]);
        let mut o = healthy();
        let fw = o.firewall.as_mut().unwrap();
        fw.forward.insert(0, "-A FORWARD -j ACCEPT".into());
        fw.nat.push("-A POSTROUTING -j MASQUERADE".into());
        assert_eq!(failing(&o), ["forward", "nat"]);
        // A watched path: the counting-only jump first keeps the promise; alone, it does not.
        let mut o = healthy();
        let fw = o.firewall.as_mut().unwrap();
        fw.forward.insert(0, watch_jump());
        assert_eq!(failing(&o), ["forward"], "a watch jump with no watch chain");
        o.firewall.as_mut().unwrap().watch = Some(vec![]);
        assert!(failing(&o).is_empty());
        let mut o = healthy();
        let ns = o.netns.as_mut().unwrap();
        ns.links.push(LinkObserved {
            name: "veth0".into(),
            mtu: 1500,
            up: true,
            ipv4: BTreeSet::new(),
        });
        let mut default = ns.routes[0].clone();
        default.dst = "0.0.0.0/0".into();
        default.kernel_made = false;
        ns.routes.push(default);
        ns.ipv6_disabled = false;
        assert_eq!(failing(&o), ["links", "routes", "ipv6"]);
    }

    #[test]
    fn allowed_ips_must_be_exactly_each_machines_32() {
        let (a, b) = (
            crate::keys::PrivateKey::generate().public_key(),
            crate::keys::PrivateKey::generate().public_key(),
        );
        let peer = |ips: &[&str]| PeerObserved {
            allowed_ips: ips.iter().map(|s| s.to_string()).collect(),
            endpoint: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
        };
        let want = BTreeMap::from([(a, "10.0.0.2".parse().unwrap())]);
        let good = BTreeMap::from([(a, peer(&["10.0.0.2/32"]))]);
        assert!(allowed_ips(&good, &want).pass);
        let wide = BTreeMap::from([(a, peer(&["10.0.0.2/32", "0.0.0.0/0"]))]);
        assert!(!allowed_ips(&wide, &want).pass);
        let stranger = BTreeMap::from([(a, peer(&["10.0.0.2/32"])), (b, peer(&["10.0.0.3/32"]))]);
        assert!(!allowed_ips(&stranger, &want).pass);
        assert!(!allowed_ips(&BTreeMap::new(), &want).pass);
    }

    #[test]
    fn every_repair_kind_names_checks_that_exist() {
        for k in super::super::Action::KINDS {
            for id in failed_before(k) {
                assert!(CHECKS.iter().any(|(c, _)| c == id), "{k}: {id}");
            }
        }
    }
}
