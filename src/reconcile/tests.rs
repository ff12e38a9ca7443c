//! Unit tests of the planner: every drift kind maps to the repair it needs, and a kernel that
//! already agrees yields an empty plan.

use super::*;
use crate::kernel::firewall::forward_jump;
use crate::kernel::{DeviceObserved, LinkObserved, PeerObserved, RuleObserved};
use crate::names::KernelPrefix;

fn desired() -> Desired {
    let names = KernelPrefix::new("mwg").unwrap().tenant(7).unwrap();
    let peer = PrivateKey::generate().public_key();
    let private_key = PrivateKey::generate();
    Desired {
        names,
        listen_port: 51820,
        public_key: private_key.public_key(),
        private_key,
        hub_address: Ipv4Addr::new(10, 100, 0, 1),
        prefix: 16,
        peers: BTreeMap::from([(peer, Ipv4Addr::new(10, 100, 0, 2))]),
        endpoint_hints: BTreeMap::from([(peer, "172.30.0.2:40000".parse().unwrap())]),
        firewall: FirewallRules {
            acl: vec!["-A MWG-ACL -m comment --comment \"mwg:default\" -j ACCEPT".into()],
            sets: BTreeMap::new(),
            watch: vec![],
        },
    }
}

fn route(dst: &str, table: u32, dev: &str, kernel_made: bool) -> RouteObserved {
    RouteObserved {
        dst: dst.into(),
        ipv6: false,
        table,
        dev: Some(dev.into()),
        kernel_made,
        unicast: true,
        raw: None,
    }
}

#[test]
fn only_the_kernel_made_prefix_and_local_routes_belong() {
    let d = desired();
    let ok = |r: RouteObserved| route_expected(&d, &r);
    assert!(ok(route("10.100.0.0/16", TABLE_MAIN, "wg0", true)));
    assert!(ok(route("10.100.0.1/32", TABLE_LOCAL, "wg0", true)));
    // A default route is a way out even when it claims to be the kernel's.
    assert!(!ok(route("0.0.0.0/0", TABLE_MAIN, "wg0", true)));
    assert!(
        !ok(route("10.100.0.0/16", TABLE_MAIN, "wg0", false)),
        "static copy"
    );
    assert!(
        !ok(route("10.200.0.0/16", TABLE_MAIN, "wg0", true)),
        "other prefix"
    );
    assert!(
        !ok(route("10.100.0.0/16", TABLE_MAIN, "veth0", true)),
        "other link"
    );
    assert!(!ok(route("10.100.0.0/16", 100, "wg0", true)), "other table");
    assert!(!ok(RouteObserved {
        unicast: false,
        ..route("10.100.0.0/16", TABLE_MAIN, "wg0", true)
    }));
    // IPv6 routes go with the IPv6 switch.
    assert!(ok(RouteObserved {
        ipv6: true,
        ..route("::/0", TABLE_MAIN, "wg0", false)
    }));
}

/// The kernel exactly as `d` wants it.
fn converged(d: &Desired) -> Observed {
    Observed {
        netns: Some(NetnsObserved {
            inode: 4026532000,
            links: vec![
                LinkObserved {
                    name: "lo".into(),
                    mtu: 65536,
                    up: false,
                    ipv4: BTreeSet::new(),
                },
                LinkObserved {
                    name: "wg0".into(),
                    mtu: HUB_MTU,
                    up: true,
                    ipv4: BTreeSet::from([(d.hub_address, d.prefix)]),
                },
            ],
            routes: vec![
                route("10.100.0.0/16", TABLE_MAIN, "wg0", true),
                RouteObserved {
                    unicast: false,
                    ..route("10.100.0.1/32", TABLE_LOCAL, "wg0", true)
                },
            ],
            ip_forward: true,
            ipv6_disabled: true,
            redirects_off: true,
        }),
        host_link: false,
        device: DeviceState::Up(DeviceObserved {
            listen_port: d.listen_port,
            public_key: Some(d.private_key.public_key()),
            peers: d
                .peers
                .iter()
                .map(|(k, a)| {
                    (
                        *k,
                        PeerObserved {
                            allowed_ips: BTreeSet::from([format!("{a}/32")]),
                            endpoint: None,
                            last_handshake: None,
                            rx_bytes: 0,
                            tx_bytes: 0,
                        },
                    )
                })
                .collect(),
            pid: Some(4242),
        }),
        firewall: Some(FirewallObserved {
            forward_policy: Some("DROP".into()),
            forward: vec![forward_jump()],
            acl: Some(
                d.firewall
                    .acl
                    .iter()
                    .map(|r| RuleObserved {
                        rule: r.clone(),
                        packets: 9,
                        bytes: 99,
                    })
                    .collect(),
            ),
            watch: None,
            nat: vec![],
            sets: BTreeMap::new(),
            generation: Some(1),
        }),
    }
}

fn kinds(actions: &[Action]) -> Vec<&'static str> {
    actions.iter().map(Action::kind).collect()
}

const FULL_CREATE: [&str; 9] = [
    "create_netns",
    "apply_firewall",
    "create_device",
    "configure_device",
    "move_device",
    "rename_device",
    "configure_wg0",
    "set_sysctls",
    "set_peers",
];

#[test]
fn kinds_list_is_complete() {
    let d = desired();
    let o = Observed {
        netns: None,
        host_link: true,
        device: DeviceState::Stale("x".into()),
        firewall: None,
    };
    for k in kinds(&plan(&d, &o)) {
        assert!(Action::KINDS.contains(&k), "{k}");
    }
    let mut unique = Action::KINDS.to_vec();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), Action::KINDS.len());
}

#[test]
fn converged_kernel_needs_nothing() {
    let d = desired();
    assert!(plan(&d, &converged(&d)).is_empty());
}

#[test]
fn nothing_exists_creates_everything_in_safe_order() {
    let d = desired();
    let o = Observed {
        netns: None,
        host_link: false,
        device: DeviceState::Absent,
        firewall: None,
    };
    assert_eq!(kinds(&plan(&d, &o)), FULL_CREATE);
}

#[test]
fn namespace_deleted_while_daemon_still_answers() {
    let d = desired();
    let mut o = converged(&d);
    o.netns = None;
    o.firewall = None;
    let mut want = FULL_CREATE.to_vec();
    want.insert(2, "destroy_device");
    assert_eq!(kinds(&plan(&d, &o)), want);
}

#[test]
fn wg0_deleted_or_daemon_killed() {
    let d = desired();
    let mut o = converged(&d);
    o.netns.as_mut().unwrap().links.retain(|l| l.name != "wg0");
    o.device = DeviceState::Absent;
    assert_eq!(
        kinds(&plan(&d, &o)),
        [
            "create_device",
            "configure_device",
            "move_device",
            "rename_device",
            "configure_wg0",
            "set_peers"
        ]
    );
    let mut o = converged(&d);
    o.device = DeviceState::Stale("socket refuses connections".into());
    o.netns.as_mut().unwrap().links.retain(|l| l.name != "wg0");
    assert_eq!(kinds(&plan(&d, &o))[0], "destroy_device");
}

#[test]
fn foreign_wg0_is_removed_before_ours_is_renamed() {
    let d = desired();
    let mut o = converged(&d);
    o.device = DeviceState::Absent;
    let actions = plan(&d, &o);
    assert_eq!(actions[0], Action::DeleteLink("wg0".into()));
    assert!(actions.contains(&Action::CreateDevice));
}

#[test]
fn interrupted_creation_resumes_without_recreating() {
    let d = desired();
    // Daemon up, link still in the controller namespace.
    let mut o = converged(&d);
    o.netns.as_mut().unwrap().links.retain(|l| l.name == "lo");
    o.host_link = true;
    assert_eq!(
        kinds(&plan(&d, &o)),
        ["move_device", "rename_device", "configure_wg0"]
    );
    // Moved but not renamed.
    let mut o = converged(&d);
    let link = o
        .netns
        .as_mut()
        .unwrap()
        .links
        .iter_mut()
        .find(|l| l.name == "wg0")
        .unwrap();
    link.name = d.names.birth.clone();
    link.up = false;
    assert_eq!(kinds(&plan(&d, &o)), ["rename_device", "configure_wg0"]);
}

#[test]
fn peer_drift_both_ways() {
    let d = desired();
    let mut o = converged(&d);
    let DeviceState::Up(dev) = &mut o.device else {
        unreachable!()
    };
    let (wanted, _) = d.peers.iter().next().unwrap();
    dev.peers.remove(wanted);
    let rogue = PrivateKey::generate().public_key();
    dev.peers.insert(
        rogue,
        PeerObserved {
            allowed_ips: BTreeSet::from(["0.0.0.0/0".to_string()]),
            endpoint: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
        },
    );
    let actions = plan(&d, &o);
    assert_eq!(
        actions,
        vec![Action::SetPeers {
            upsert: vec![PeerSpec {
                public_key: *wanted,
                address: Ipv4Addr::new(10, 100, 0, 2),
                endpoint: Some("172.30.0.2:40000".into()),
            }],
            remove: vec![rogue],
        }]
    );
}

#[test]
fn allowed_ips_widened_by_hand_are_narrowed() {
    let d = desired();
    let mut o = converged(&d);
    let DeviceState::Up(dev) = &mut o.device else {
        unreachable!()
    };
    dev.peers
        .values_mut()
        .next()
        .unwrap()
        .allowed_ips
        .insert("0.0.0.0/0".into());
    assert_eq!(kinds(&plan(&d, &o)), ["set_peers"]);
}

#[test]
fn firewall_drift_kinds() {
    let d = desired();
    type Edit = Box<dyn Fn(&mut FirewallObserved)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("chain flushed", Box::new(|f| f.acl = Some(vec![]))),
        ("chain deleted", Box::new(|f| f.acl = None)),
        (
            "rule edited",
            Box::new(|f| f.acl.as_mut().unwrap()[0].rule = "-A MWG-ACL -j DROP".into()),
        ),
        (
            "rogue accept on top",
            Box::new(|f| f.forward.insert(0, "-A FORWARD -j ACCEPT".into())),
        ),
        (
            "policy accept",
            Box::new(|f| f.forward_policy = Some("ACCEPT".into())),
        ),
        ("jump removed", Box::new(|f| f.forward.clear())),
        (
            "rogue set",
            Box::new(|f| {
                f.sets.insert("x".into(), BTreeSet::new());
            }),
        ),
    ];
    for (what, edit) in cases {
        let mut o = converged(&d);
        edit(o.firewall.as_mut().unwrap());
        assert_eq!(kinds(&plan(&d, &o)), ["apply_firewall"], "{what}");
    }
    let mut o = converged(&d);
    o.firewall
        .as_mut()
        .unwrap()
        .nat
        .push("-A POSTROUTING -j MASQUERADE".into());
    assert_eq!(kinds(&plan(&d, &o)), ["flush_nat"]);
}

#[test]
fn a_watch_is_desired_state_jumped_to_first_and_repaired_like_any_rule() {
    use crate::kernel::firewall::watch_jump;
    let plain = desired();
    let mut d = plain.clone();
    let rule = "-A MWG-WATCH -s 10.100.0.2/32 -d 10.100.0.3/32 -p icmp -m comment --comment \"mwg-watch:w\"";
    d.firewall.watch = vec![rule.into()];
    // Without its chain and jump the kernel is not what is desired.
    let o = converged(&plain);
    assert_eq!(kinds(&plan(&d, &o)), ["apply_firewall"]);
    let watching = |o: &mut Observed| {
        let fw = o.firewall.as_mut().unwrap();
        fw.forward.insert(0, watch_jump());
        fw.watch = Some(vec![RuleObserved {
            rule: rule.into(),
            packets: 5,
            bytes: 420,
        }]);
    };
    let mut o = converged(&d);
    watching(&mut o);
    assert!(plan(&d, &o).is_empty(), "the watch jump is no rogue rule");
    type Edit = Box<dyn Fn(&mut FirewallObserved)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("watch chain flushed", Box::new(|f| f.watch = Some(vec![]))),
        ("watch chain deleted", Box::new(|f| f.watch = None)),
        (
            "watch jump removed",
            Box::new(|f| {
                f.forward.remove(0);
            }),
        ),
        ("jumps swapped", Box::new(|f| f.forward.reverse())),
    ];
    for (what, edit) in cases {
        let mut o = converged(&d);
        watching(&mut o);
        edit(o.firewall.as_mut().unwrap());
        assert_eq!(kinds(&plan(&d, &o)), ["apply_firewall"], "{what}");
    }
    // Expired: the chain that is left over goes.
    let mut o = converged(&d);
    watching(&mut o);
    assert_eq!(kinds(&plan(&plain, &o)), ["apply_firewall"]);
}

#[test]
fn counters_do_not_count_as_drift() {
    let d = desired();
    let mut o = converged(&d);
    o.firewall.as_mut().unwrap().acl.as_mut().unwrap()[0].packets = 123456;
    assert!(plan(&d, &o).is_empty());
}

#[test]
fn egress_drift_routes_links_forwarding() {
    let d = desired();
    let mut o = converged(&d);
    let ns = o.netns.as_mut().unwrap();
    let default = route("0.0.0.0/0", TABLE_MAIN, "veth9", false);
    ns.routes.push(default.clone());
    ns.links.push(LinkObserved {
        name: "veth9".into(),
        mtu: 1500,
        up: true,
        ipv4: BTreeSet::new(),
    });
    ns.ip_forward = false;
    ns.redirects_off = false;
    assert_eq!(
        plan(&d, &o),
        vec![
            Action::DeleteLink("veth9".into()),
            Action::DeleteRoute(default),
            Action::SetSysctls
        ]
    );
    // ICMP redirects alone (a hub must not tell machines to talk directly).
    let mut o = converged(&d);
    o.netns.as_mut().unwrap().redirects_off = false;
    assert_eq!(plan(&d, &o), vec![Action::SetSysctls]);
}

#[test]
fn wrong_port_key_address_or_mtu() {
    let d = desired();
    let mut o = converged(&d);
    let DeviceState::Up(dev) = &mut o.device else {
        unreachable!()
    };
    dev.listen_port = 1;
    assert_eq!(kinds(&plan(&d, &o)), ["configure_device"]);

    let mut o = converged(&d);
    let wg0 = o
        .netns
        .as_mut()
        .unwrap()
        .links
        .iter_mut()
        .find(|l| l.name == "wg0")
        .unwrap();
    wg0.mtu = 1500;
    assert_eq!(kinds(&plan(&d, &o)), ["configure_wg0"]);

    let mut o = converged(&d);
    let wg0 = o
        .netns
        .as_mut()
        .unwrap()
        .links
        .iter_mut()
        .find(|l| l.name == "wg0")
        .unwrap();
    wg0.ipv4.insert((Ipv4Addr::new(192, 0, 2, 1), 24));
    assert_eq!(kinds(&plan(&d, &o)), ["configure_wg0"]);
}

#[test]
fn only_ways_out_count_as_egress_repairs() {
    let d = desired();
    let names = &d.names;
    assert!(Action::FlushNat.is_egress_repair(names));
    assert!(Action::DeleteLink("veth0".into()).is_egress_repair(names));
    assert!(!Action::DeleteLink("wg0".into()).is_egress_repair(names));
    assert!(!Action::DeleteLink(names.birth.clone()).is_egress_repair(names));
    assert!(!Action::SetSysctls.is_egress_repair(names));
    let mut o = converged(&d);
    o.netns
        .as_mut()
        .unwrap()
        .routes
        .push(route("0.0.0.0/0", TABLE_MAIN, "wg0", false));
    assert!(plan(&d, &o).iter().any(|a| a.is_egress_repair(names)));
}
