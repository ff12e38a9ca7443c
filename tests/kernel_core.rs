//! Controller core against the real kernel and a real PostgreSQL (needs root; see common/mod.rs).

mod common;

use common::*;
use meshwg::db::machines::NewMachine;
use meshwg::keys::PrivateKey;
use meshwg::names::TenantNames;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;

macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(format!($($why)+));
        }
    };
}

/// Checks the documented layout of one tenant namespace.
fn tenant_layout(netns: &str, hub: &str) -> Result<(), String> {
    let out = ns_out(netns, &["ip", "-j", "addr", "show"]);
    ensure!(out.status.success(), "{netns} missing");
    let links: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let names: Vec<&str> = links
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap())
        .collect();
    ensure!(
        names == ["lo", "wg0"],
        "{netns} holds {names:?}, not only lo and wg0"
    );
    let wg0 = &links[1];
    ensure!(wg0["mtu"] == 1420, "wg0 mtu {}", wg0["mtu"]);
    ensure!(
        wg0["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "wg0 down"
    );
    let addrs: Vec<String> = wg0["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    ensure!(addrs == [hub], "wg0 addresses {addrs:?}");
    let routes = ns(netns, &["ip", "route", "show", "table", "all"]);
    ensure!(!routes.contains("default"), "default route: {routes}");
    ensure!(
        ns(netns, &["sysctl", "-n", "net.ipv4.ip_forward"]).trim() == "1",
        "ip_forward off"
    );
    ensure!(
        ns(netns, &["sysctl", "-n", "net.ipv6.conf.all.disable_ipv6"]).trim() == "1",
        "IPv6 on"
    );
    for key in [
        "net.ipv4.conf.all.send_redirects",
        "net.ipv4.conf.wg0.send_redirects",
    ] {
        let out = ns_out(netns, &["sysctl", "-n", key]);
        ensure!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "0",
            "{key}: the hub would tell machines to talk directly"
        );
    }
    let filter = ns(netns, &["iptables-save", "-t", "filter"]);
    ensure!(filter.contains(":FORWARD DROP"), "FORWARD policy: {filter}");
    let forward: Vec<&str> = filter
        .lines()
        .filter(|l| l.starts_with("-A FORWARD"))
        .collect();
    ensure!(
        forward == ["-A FORWARD -i wg0 -o wg0 -j MWG-ACL"],
        "FORWARD: {forward:?}"
    );
    ensure!(filter.contains(":MWG-ACL - "), "no ACL chain: {filter}");
    let nat = ns(netns, &["iptables-save", "-t", "nat"]);
    ensure!(
        !nat.lines().any(|l| l.starts_with("-A")),
        "nat rules: {nat}"
    );
    Ok(())
}

fn assert_tenant_layout(netns: &str, hub: &str) {
    if let Err(why) = tenant_layout(netns, hub) {
        panic!("{why}");
    }
}

#[test]
fn kernel_two_tenants_with_the_same_cidr_side_by_side() {
    run(|h| async move {
        let a = h.tenant("Acme", "10.100.0.0/16").await;
        let b = h
            .tenant(
                "Bravo \"quoted\" 🚀 with a long name that still onboards fine",
                "10.100.0.0/16",
            )
            .await;
        assert_ne!(a.listen_port, b.listen_port);
        let (na, nb) = (h.names(&a), h.names(&b));
        assert_tenant_layout(&na.netns, "10.100.0.1/16");
        assert_tenant_layout(&nb.netns, "10.100.0.1/16");

        // Both ports listen in the controller namespace (the device was born there): each held
        // by its own daemon (userspace), or by the kernel device itself (no process).
        let ss = ns(&h.world.host_ns, &["ss", "-Hulnp"]);
        for port in [a.listen_port, b.listen_port] {
            assert!(
                ss.lines().any(|l| l.contains(&format!(":{port} "))),
                "port {port} listens in the controller namespace: {ss}"
            );
        }
        if backend() == Backend::Userspace {
            let (pa, pb) = (daemon_pid(&h, &na), daemon_pid(&h, &nb));
            assert_ne!(pa, pb);
            for (port, pid) in [(a.listen_port, pa), (b.listen_port, pb)] {
                assert!(
                    ss.lines()
                        .any(|l| l.contains(&format!(":{port} "))
                            && l.contains(&format!("pid={pid},"))),
                    "port {port} held by pid {pid}: {ss}"
                );
                let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
                assert!(cmdline.contains("wireguard-go"), "{cmdline}");
            }
        } else {
            for names in [&na, &nb] {
                let kind = ns(&names.netns, &["ip", "-d", "link", "show", "wg0"]);
                assert!(
                    kind.contains("wireguard"),
                    "wg0 is a kernel WireGuard link: {kind}"
                );
            }
        }
        // The hub keys the kernel holds are the ones PostgreSQL has the public halves of.
        for (org, names) in [(&a, &na), (&b, &nb)] {
            let pk = wg(names, "show", &["public-key"]);
            assert_eq!(pk.trim(), org.hub_public_key.to_base64());
        }
        // Nothing of ours leaks into the controller namespace: the birth links moved away.
        let host_links = ns(&h.world.host_ns, &["ip", "-o", "link", "show"]);
        assert!(
            !host_links.contains(&na.birth) && !host_links.contains(&nb.birth),
            "{host_links}"
        );
    });
}

#[test]
fn kernel_fifty_parallel_machine_additions_get_fifty_distinct_addresses() {
    run(|h| async move {
        let org = h.tenant("Parallel", "10.77.0.0/24").await;
        let mut tasks = Vec::new();
        for i in 0..50 {
            let (ctl, org_id) = (h.ctl.clone(), org.id);
            tasks.push(tokio::spawn(async move {
                ctl.add_machine(
                    org_id,
                    NewMachine {
                        id: Uuid::new_v4(),
                        name: format!("m{i}"),
                        public_key: PrivateKey::generate().public_key(),
                        tags: vec![],
                    },
                )
                .await
            }));
        }
        let mut addrs = BTreeSet::new();
        let mut machines = Vec::new();
        for t in tasks {
            let m = t.await.unwrap().expect("add machine");
            addrs.insert(m.address);
            machines.push(m);
        }
        assert_eq!(addrs.len(), 50, "50 distinct addresses");
        let want: BTreeSet<_> = (2..=51)
            .map(|i| std::net::Ipv4Addr::new(10, 77, 0, i))
            .collect();
        assert_eq!(addrs, want, "lowest free, hub .1 skipped");
        // Every peer is live in the hub with exactly its address.
        let dump = wg(&h.names(&org), "show", &["allowed-ips"]);
        assert_eq!(dump.lines().count(), 50);
        for m in &machines {
            assert!(
                dump.contains(&format!("{}\t{}/32", m.public_key, m.address)),
                "{} {} in {dump}",
                m.public_key,
                m.address
            );
        }
        // A freed address is handed out again.
        h.ctl.remove_machine(org.id, machines[0].id).await.unwrap();
        let (again, _) = h.machine(&org, "again", &[]).await;
        assert_eq!(again.address, machines[0].address);
    });
}

type Inflict = dyn Fn(&TenantNames);

/// One drift inflicted by hand, and the check that it is gone.
struct Drift {
    name: &'static str,
    /// Called with the tenant's kernel names.
    inflict: Box<Inflict>,
    /// Whether the device (and so the clients' sessions) is recreated.
    recreates_device: bool,
}

#[test]
fn kernel_every_drift_kind_is_repaired_and_traffic_flows_again() {
    run(|h| async move {
        let org = h.tenant("Drift", "10.100.0.0/16").await;
        let names = h.names(&org);
        let pair = h.pair(&org, [&[], &[]]).await;
        let (vm1, dst) = (&pair.vm1, pair.dst());
        let peer_two = pair.m2.public_key.to_base64();

        let drifts = vec![
            Drift {
                name: "peer removed by hand",
                recreates_device: false,
                inflict: Box::new({
                    let k = peer_two.clone();
                    move |names| {
                        wg(names, "set", &["peer", &k, "remove"]);
                    }
                }),
            },
            Drift {
                name: "rogue peer added by hand",
                recreates_device: false,
                inflict: Box::new(|names| {
                    let k = PrivateKey::generate().public_key().to_base64();
                    wg(names, "set", &["peer", &k, "allowed-ips", "10.100.9.9/32"]);
                }),
            },
            Drift {
                name: "ACL chain flushed",
                recreates_device: false,
                inflict: Box::new(|n| {
                    let netns = n.netns.as_str();
                    ns(netns, &["iptables", "-F", "MWG-ACL"]);
                }),
            },
            Drift {
                name: "ACL chain edited",
                recreates_device: false,
                inflict: Box::new(|n| {
                    let netns = n.netns.as_str();
                    ns(netns, &["iptables", "-I", "MWG-ACL", "1", "-j", "DROP"]);
                }),
            },
            Drift {
                name: "foreign rule on top of FORWARD",
                recreates_device: false,
                inflict: Box::new(|n| {
                    let netns = n.netns.as_str();
                    ns(netns, &["iptables", "-I", "FORWARD", "1", "-j", "ACCEPT"]);
                    ns(netns, &["iptables", "-P", "FORWARD", "ACCEPT"]);
                }),
            },
            Drift {
                name: "ip_forward switched off",
                recreates_device: false,
                inflict: Box::new(|n| {
                    let netns = n.netns.as_str();
                    ns(netns, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
                }),
            },
            Drift {
                name: "default route added",
                recreates_device: false,
                inflict: Box::new(|n| {
                    let netns = n.netns.as_str();
                    ns(netns, &["ip", "route", "add", "default", "dev", "wg0"]);
                }),
            },
            Drift {
                name: "NAT rule added",
                recreates_device: false,
                inflict: Box::new(|n| {
                    let netns = n.netns.as_str();
                    ns(
                        netns,
                        &[
                            "iptables",
                            "-t",
                            "nat",
                            "-A",
                            "POSTROUTING",
                            "-j",
                            "MASQUERADE",
                        ],
                    );
                }),
            },
            Drift {
                name: "foreign link added",
                recreates_device: false,
                inflict: Box::new(|n| {
                    let netns = n.netns.as_str();
                    ns(
                        netns,
                        &[
                            "ip", "link", "add", "rogue0", "type", "veth", "peer", "name", "rogue1",
                        ],
                    );
                }),
            },
            Drift {
                name: "IPv6 switched on",
                recreates_device: false,
                inflict: Box::new(|n| {
                    let netns = n.netns.as_str();
                    ns(
                        netns,
                        &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0"],
                    );
                }),
            },
            Drift {
                name: "wg0 deleted",
                recreates_device: true,
                inflict: Box::new(|n| {
                    let netns = n.netns.as_str();
                    ns(netns, &["ip", "link", "del", "wg0"]);
                }),
            },
            Drift {
                name: "listen port changed by hand",
                recreates_device: true,
                inflict: Box::new(|names| {
                    wg(names, "set", &["listen-port", "40999"]);
                }),
            },
            Drift {
                name: "private key changed by hand",
                recreates_device: true,
                inflict: Box::new(|names| {
                    let file = std::env::temp_dir().join(format!("{}-key", names.birth));
                    let key = PrivateKey::generate();
                    std::fs::write(&file, key.expose_base64().expose()).unwrap();
                    wg(names, "set", &["private-key", file.to_str().unwrap()]);
                    std::fs::remove_file(&file).unwrap();
                }),
            },
            Drift {
                name: "namespace deleted",
                recreates_device: true,
                inflict: Box::new(|n| {
                    let netns = n.netns.as_str();
                    sh(&["ip", "netns", "del", netns]);
                }),
            },
        ];

        let mut drifts = drifts;
        if backend() == Backend::Userspace {
            // The kernel backend has no daemon to kill; its device is deleted above.
            let pid_of = h.clone();
            drifts.insert(
                drifts.len() - 1,
                Drift {
                    name: "daemon killed (stale socket)",
                    recreates_device: true,
                    inflict: Box::new(move |names| {
                        sh(&["kill", "-9", &daemon_pid(&pid_of, names).to_string()]);
                    }),
                },
            );
        }
        let two_intervals = 2 * INTERVAL;
        for d in drifts {
            (d.inflict)(&names);
            // Kernel state back within two intervals (plus the time one reconcile takes).
            let (_, took) = eventually(two_intervals + Duration::from_millis(1500), d.name, || {
                let names = names.clone();
                let peer_two = peer_two.clone();
                async move {
                    let back = || -> Result<(), String> {
                        tenant_layout(&names.netns, "10.100.0.1/16")?;
                        let acl = ns(&names.netns, &["iptables-save", "-t", "filter"]);
                        let rules: Vec<&str> = acl
                            .lines()
                            .filter(|l| l.starts_with("-A MWG-ACL"))
                            .collect();
                        ensure!(
                            rules == ["-A MWG-ACL -m comment --comment \"mwg:default\" -j ACCEPT"],
                            "{rules:?}"
                        );
                        let peers = wg_out(&names, "show", &["peers"]);
                        let peers = String::from_utf8_lossy(&peers.stdout);
                        ensure!(
                            peers.lines().count() == 2 && peers.contains(&peer_two),
                            "peers {peers}"
                        );
                        Ok(())
                    };
                    back().ok()
                }
            })
            .await;
            eprintln!("REPAIRED {:<32} in {took:?}", d.name);
            // And traffic flows again (after a re-handshake when the device was recreated).
            let deadline = if d.recreates_device {
                Duration::from_secs(40)
            } else {
                Duration::from_secs(10)
            };
            eventually(deadline, &format!("ping after {}", d.name), || async {
                vm1.ping(&dst, 1).then_some(())
            })
            .await;
        }
    });
}

#[test]
fn kernel_delete_tenant_leaves_nothing() {
    run(|h| async move {
        let org = h.tenant("Doomed", "10.5.0.0/16").await;
        let keep = h.tenant("Survivor", "10.5.0.0/16").await;
        let names = h.names(&org);
        h.machine(&org, "a", &["web"]).await;
        h.machine(&org, "b", &[]).await;
        let pid = (backend() == Backend::Userspace).then(|| daemon_pid(&h, &names));
        let conn = h.pool.get().await.unwrap();
        conn.execute(
            "INSERT INTO policies (id, org_id, action, src, dst) VALUES ($1, $2, 'deny', '\"any\"', '\"any\"')",
            &[&Uuid::new_v4(), &org.id],
        )
        .await
        .unwrap();

        h.ctl.delete_tenant(org.id).await.unwrap();

        assert!(netns_inode(&names.netns).is_none(), "namespace gone");
        assert!(!pid.is_some_and(process_alive), "daemon gone");
        assert!(
            !std::path::Path::new(&format!("/var/run/wireguard/{}.sock", names.birth)).exists(),
            "socket gone"
        );
        assert!(
            !h.world
                .runtime_dir
                .join(format!("{}.pid", names.birth))
                .exists(),
            "pidfile gone"
        );
        let links = ns(&h.world.host_ns, &["ip", "-o", "link", "show"]);
        assert!(!links.contains(&names.birth), "no birth link: {links}");
        let ss = ns(&h.world.host_ns, &["ss", "-Huln"]);
        assert!(
            !ss.contains(&format!(":{} ", org.listen_port)),
            "port closed: {ss}"
        );
        for table in ["orgs", "machines", "policies", "users", "audit_log"] {
            let col = if table == "orgs" { "id" } else { "org_id" };
            let n: i64 = conn
                .query_one(
                    &format!("SELECT count(*) FROM {table} WHERE {col} = $1"),
                    &[&org.id],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 0, "{table} rows left");
        }
        // The other tenant is untouched.
        assert!(h.ctl.status(keep.id).await.unwrap().up);
        assert!(
            h.ctl.delete_tenant(org.id).await.is_err(),
            "second delete is NotFound"
        );
    });
}

#[test]
fn kernel_restart_adopts_and_kill_minus_nine_recreates_nothing() {
    run(|mut h| async move {
        let org = h.tenant("Steady", "10.100.0.0/16").await;
        let names = h.names(&org);
        let pair = h.pair(&org, [&[], &[]]).await;
        let (vm1, dst) = (&pair.vm1, pair.dst());
        let hub = hub_identity(&h, &names);
        let inode = netns_inode(&names.netns).unwrap();

        // Hand over from the in-process controller to the real binary, under a ping flood.
        let flood = {
            let netns = vm1.netns.clone();
            let dst = dst.clone();
            std::thread::spawn(move || {
                ns_out(
                    &netns,
                    &["ping", "-n", "-q", "-c", "600", "-i", "0.01", &dst],
                )
            })
        };
        h.ctl.shutdown().await;
        let first = h.spawn_binary("serve1.log");
        eventually(Duration::from_secs(20), "binary running", || async {
            h.log("serve1.log")
                .contains("controller running")
                .then_some(())
        })
        .await;
        tokio::time::sleep(INTERVAL * 2).await;
        sh(&["kill", "-9", &first.to_string()]);
        let second = h.spawn_binary("serve2.log");
        eventually(Duration::from_secs(20), "binary running again", || async {
            h.log("serve2.log")
                .contains("controller running")
                .then_some(())
        })
        .await;
        tokio::time::sleep(INTERVAL * 2).await;
        let out = flood.join().unwrap();
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(
            summary.contains(" 0% packet loss"),
            "no packet lost: {summary}"
        );

        assert_eq!(hub_identity(&h, &names), hub, "same hub device");
        assert_eq!(netns_inode(&names.netns), Some(inode), "same namespace");
        let log = h.log("serve2.log");
        assert!(
            !log.contains("applying"),
            "nothing applied after adoption: {log}"
        );
        assert!(
            !log.contains("wireguard-go started"),
            "no daemon started: {log}"
        );

        sh(&["kill", "-9", &second.to_string()]);
        h.restart_controller().await;
        let status = h.ctl.status(org.id).await.unwrap();
        assert!(status.up);
        assert_eq!(hub_identity(&h, &names), hub, "still the same hub device");
        if backend() == Backend::Userspace {
            assert_eq!(Some(daemon_pid(&h, &names)), status.daemon_pid);
        }
    });
}

#[test]
fn kernel_start_settles_interrupted_work_and_removes_orphans() {
    run(|mut h| async move {
        let keep = h.tenant("Keep", "10.1.0.0/16").await;
        let creating = h.tenant("Half made", "10.2.0.0/16").await;
        let deleting = h.tenant("Half deleted", "10.3.0.0/16").await;
        h.ctl.shutdown().await;
        let pool = h.pool.clone();
        let conn = pool.get().await.unwrap();
        conn.execute(
            "UPDATE orgs SET state = 'creating' WHERE id = $1",
            &[&creating.id],
        )
        .await
        .unwrap();
        conn.execute(
            "UPDATE orgs SET state = 'deleting' WHERE id = $1",
            &[&deleting.id],
        )
        .await
        .unwrap();
        // An orphan: kernel objects of a tenant no row knows (kid 900), half made by hand. The
        // database issued kid 900 (and lost the row): an id it never issued would not be its
        // orphan but another installation's tenant, which start-up refuses to touch.
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('orgs', 'kid'), 900)",
            &[],
        )
        .await
        .unwrap();
        let orphan = h.deps.prefix.tenant(900).unwrap();
        h.deps.kernel.netns.create(&orphan).await.unwrap();
        h.deps.kernel.wg.create(&orphan).await.unwrap();
        let keep_hub = hub_identity(&h, &h.names(&keep));

        h.restart_controller().await;

        for names in [h.names(&creating), h.names(&deleting), orphan.clone()] {
            assert!(
                netns_inode(&names.netns).is_none(),
                "{} removed",
                names.netns
            );
            assert!(
                !std::path::Path::new(&format!("/var/run/wireguard/{}.sock", names.birth)).exists()
            );
            let links = ns(&h.world.host_ns, &["ip", "-o", "link", "show"]);
            assert!(!links.contains(&names.birth), "{links}");
        }
        let left: Vec<String> = conn
            .query("SELECT name FROM orgs ORDER BY name", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(left, ["Keep"]);
        assert_eq!(
            hub_identity(&h, &h.names(&keep)),
            keep_hub,
            "the healthy tenant was adopted as is"
        );
    });
}

#[test]
fn kernel_failed_actor_is_restarted_and_others_are_unaffected() {
    run(|h| async move {
        let a = h.tenant("A", "10.1.0.0/16").await;
        let b = h.tenant("B", "10.1.0.0/16").await;
        let actor = h.ctl.tenant_actor(a.id).await.unwrap();
        let other = h.ctl.tenant_actor(b.id).await.unwrap();
        actor.kill();
        let (_, took) = eventually(Duration::from_secs(5), "actor restarted", || async {
            h.ctl
                .tenant_actor(a.id)
                .await
                .ok()
                .filter(|n| n.get_id() != actor.get_id())
        })
        .await;
        eprintln!("restarted in {took:?}");
        assert_eq!(h.ctl.restarts().await.unwrap().get(&a.id), Some(&1));
        assert_eq!(
            h.ctl.tenant_actor(b.id).await.unwrap().get_id(),
            other.get_id()
        );
        // The new actor works: a machine added now is live in the hub.
        let (m, _) = h.machine(&a, "after", &[]).await;
        let peers = wg(&h.names(&a), "show", &["peers"]);
        assert!(peers.contains(&m.public_key.to_base64()));
    });
}
