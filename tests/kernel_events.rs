//! Each way the controller learns of drift works on its own (needs root; see common/mod.rs):
//! kernel events alone repair what announces itself, the cheap poll alone repairs what does not
//! (and what announces itself, through the ruleset generation, sysctls and links it glances at),
//! the full check alone repairs everything, and a database change made by another process
//! reaches the kernel through `LISTEN`/`NOTIFY`. These are correctness bounds (generous
//! deadlines), not timings: timings are in bench/.

mod common;

use common::*;
use meshwg::actors::Observer;
use meshwg::names::TenantNames;
use std::time::Duration;

/// A drift inflicted by hand.
struct Kind {
    name: &'static str,
    inflict: fn(&Harness, &TenantNames, &str),
}

fn ns_of(names: &TenantNames) -> &str {
    &names.netns
}

const DEFAULT_ROUTE: Kind = Kind {
    name: "default route",
    inflict: |_, n, _| {
        ns(ns_of(n), &["ip", "route", "add", "default", "dev", "wg0"]);
    },
};
const FORWARD_RULE: Kind = Kind {
    name: "foreign rule on top of FORWARD",
    inflict: |_, n, _| {
        ns(
            ns_of(n),
            &["iptables", "-I", "FORWARD", "1", "-j", "ACCEPT"],
        );
    },
};
const CHAIN_FLUSH: Kind = Kind {
    name: "ACL chain flushed",
    inflict: |_, n, _| {
        ns(ns_of(n), &["iptables", "-F", "MWG-ACL"]);
    },
};
const NAT_RULE: Kind = Kind {
    name: "NAT rule",
    inflict: |_, n, _| {
        ns(
            ns_of(n),
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
    },
};
const IP_FORWARD: Kind = Kind {
    name: "ip_forward off",
    inflict: |_, n, _| {
        ns(ns_of(n), &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    },
};
const FOREIGN_LINK: Kind = Kind {
    name: "foreign link",
    inflict: |_, n, _| {
        ns(
            ns_of(n),
            &[
                "ip", "link", "add", "rogue0", "type", "veth", "peer", "name", "rogue1",
            ],
        );
    },
};
const WG0_DELETED: Kind = Kind {
    name: "wg0 deleted",
    inflict: |_, n, _| {
        ns(ns_of(n), &["ip", "link", "del", "wg0"]);
    },
};
const NETNS_DELETED: Kind = Kind {
    name: "namespace deleted",
    inflict: |_, n, _| {
        sh(&["ip", "netns", "del", ns_of(n)]);
    },
};
const IPV6_ALL: Kind = Kind {
    name: "IPv6 switched on",
    inflict: |_, n, _| {
        ns(
            ns_of(n),
            &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0"],
        );
    },
};
const IPV6_WG0: Kind = Kind {
    name: "IPv6 switched on for wg0 alone",
    inflict: |_, n, _| {
        ns(
            ns_of(n),
            &["sysctl", "-qw", "net.ipv6.conf.wg0.disable_ipv6=0"],
        );
    },
};
const REDIRECTS_ON: Kind = Kind {
    name: "ICMP redirects switched on",
    inflict: |_, n, _| {
        ns(
            ns_of(n),
            &["sysctl", "-qw", "net.ipv4.conf.all.send_redirects=1"],
        );
    },
};
const PEER_REMOVED: Kind = Kind {
    name: "peer removed by hand",
    inflict: |_, n, peer| {
        wg(n, "set", &["peer", peer, "remove"]);
    },
};
const IPSET_MEMBER: Kind = Kind {
    name: "ipset member added",
    inflict: |_, n, _| {
        let sets = ns(ns_of(n), &["ipset", "list", "-n"]);
        let set = sets.lines().next().expect("a tag set").to_string();
        ns(ns_of(n), &["ipset", "add", &set, "10.100.99.99"]);
    },
};
const DAEMON_KILLED: Kind = Kind {
    name: "daemon killed",
    inflict: |h, n, _| {
        sh(&["kill", "-9", &daemon_pid(h, n).to_string()]);
    },
};

/// The tenant as the test expects it: its layout, its chain, one ipset with one member, both
/// peers with their /32.
fn healthy(names: &TenantNames, peers: &[String]) -> Result<(), String> {
    // Missing while it is being recreated: not healthy yet (not a test failure).
    let ns = |netns: &str, args: &[&str]| -> Result<String, String> {
        let out = ns_out(netns, args);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
            .ok_or_else(|| format!("{args:?} failed"))
    };
    let links = ns(&names.netns, &["ip", "-o", "link", "show"])?;
    let names_seen: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
        .collect();
    if names_seen != ["lo", "wg0"] {
        return Err(format!("links {names_seen:?}"));
    }
    let routes = ns(&names.netns, &["ip", "route", "show", "table", "main"])?;
    if routes.contains("default") {
        return Err(format!("routes {routes}"));
    }
    for (key, want) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.conf.all.send_redirects", "0"),
        ("net.ipv4.conf.wg0.send_redirects", "0"),
        ("net.ipv6.conf.all.disable_ipv6", "1"),
        ("net.ipv6.conf.wg0.disable_ipv6", "1"),
    ] {
        let got = ns(&names.netns, &["sysctl", "-n", key])?;
        if got.trim() != want {
            return Err(format!("{key}={}", got.trim()));
        }
    }
    let filter = ns(&names.netns, &["iptables-save", "-t", "filter"])?;
    let forward: Vec<&str> = filter
        .lines()
        .filter(|l| l.starts_with("-A FORWARD"))
        .collect();
    if forward != ["-A FORWARD -i wg0 -o wg0 -j MWG-ACL"] {
        return Err(format!("FORWARD {forward:?}"));
    }
    if filter
        .lines()
        .filter(|l| l.starts_with("-A MWG-ACL"))
        .count()
        != 2
    {
        return Err(format!("chain {filter}"));
    }
    let nat = ns(&names.netns, &["iptables-save", "-t", "nat"])?;
    if nat.lines().any(|l| l.starts_with("-A")) {
        return Err(format!("nat {nat}"));
    }
    let sets = ns(&names.netns, &["ipset", "save"])?;
    if sets.lines().filter(|l| l.starts_with("add ")).count() != 1 {
        return Err(format!("ipsets {sets}"));
    }
    let out = wg_out(names, "show", &["allowed-ips"]);
    let dump = String::from_utf8_lossy(&out.stdout);
    if !out.status.success()
        || dump.lines().count() != 2
        || !peers.iter().all(|p| dump.contains(p.as_str()))
    {
        return Err(format!("peers {dump}"));
    }
    Ok(())
}

/// A tenant with two machines (one tagged, one tag policy), healthy: its names and peers.
async fn healthy_tenant(h: &Harness) -> (TenantNames, Vec<String>) {
    let org = h.tenant("Events", "10.100.0.0/16").await;
    let names = h.names(&org);
    let (a, _) = h.machine(&org, "a", &["web"]).await;
    let (b, _) = h.machine(&org, "b", &[]).await;
    h.policy(
        &org,
        "deny",
        serde_json::json!({"tag": "web"}),
        serde_json::json!("any"),
    )
    .await;
    let peers = vec![a.public_key.to_base64(), b.public_key.to_base64()];
    eventually(Duration::from_secs(10), "healthy at start", || async {
        healthy(&names, &peers).ok()
    })
    .await;
    (names, peers)
}

/// Sets up a tenant with two machines (one tagged, one tag policy) and inflicts each kind,
/// expecting a repair within `bound`.
fn repairs(observer: Observer, kinds: Vec<Kind>, bound: Duration) {
    run_observed(observer, move |h| async move {
        let (names, peers) = healthy_tenant(&h).await;
        for kind in kinds {
            (kind.inflict)(&h, &names, &peers[1]);
            let (_, took) =
                eventually(bound, kind.name, || async { healthy(&names, &peers).ok() }).await;
            eprintln!("REPAIRED {:<36} in {took:?}", kind.name);
        }
    });
}

fn event_kinds() -> Vec<Kind> {
    let mut kinds = vec![
        DEFAULT_ROUTE,
        FORWARD_RULE,
        CHAIN_FLUSH,
        NAT_RULE,
        IP_FORWARD,
        FOREIGN_LINK,
        WG0_DELETED,
        NETNS_DELETED,
        IPV6_ALL,
        IPV6_WG0,
    ];
    if backend() == Backend::Userspace {
        kinds.push(DAEMON_KILLED);
    }
    kinds
}

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn kernel_events_alone_repair_what_announces_itself() {
    repairs(
        Observer {
            poll: None,
            full: HOUR,
            counters: HOUR,
            events: true,
        },
        event_kinds(),
        Duration::from_secs(5),
    );
}

#[test]
fn kernel_the_cheap_poll_alone_repairs_what_sends_no_event() {
    let mut kinds = vec![IPV6_ALL, IPV6_WG0, REDIRECTS_ON, PEER_REMOVED, IPSET_MEMBER];
    // ... and, through the generation, sysctls and links it glances at, these too.
    kinds.extend([
        FORWARD_RULE,
        CHAIN_FLUSH,
        NAT_RULE,
        IP_FORWARD,
        FOREIGN_LINK,
        WG0_DELETED,
    ]);
    repairs(
        Observer {
            poll: Some(Duration::from_secs(1)),
            full: HOUR,
            counters: HOUR,
            events: false,
        },
        kinds,
        Duration::from_secs(5),
    );
}

#[test]
fn kernel_with_events_on_the_poll_needs_only_what_sends_no_event() {
    // Production settings (events, and a poll that reads just the device, the ipsets and now
    // and then counters): what no event announces is still repaired by the poll.
    repairs(
        Observer {
            poll: Some(Duration::from_secs(1)),
            full: HOUR,
            counters: Duration::from_secs(2),
            events: true,
        },
        vec![
            PEER_REMOVED,
            IPSET_MEMBER,
            REDIRECTS_ON,
            IPV6_WG0,
            CHAIN_FLUSH,
        ],
        Duration::from_secs(5),
    );
}

#[test]
fn kernel_the_full_check_alone_repairs_everything() {
    let mut kinds = event_kinds();
    kinds.extend([IPV6_ALL, IPV6_WG0, REDIRECTS_ON, PEER_REMOVED, IPSET_MEMBER]);
    repairs(
        Observer {
            poll: None,
            full: Duration::from_secs(2),
            counters: HOUR,
            events: false,
        },
        kinds,
        Duration::from_secs(8),
    );
}

#[test]
fn kernel_a_database_change_made_elsewhere_reaches_the_kernel_by_notification() {
    run_observed(
        Observer {
            poll: None,
            full: HOUR,
            counters: HOUR,
            events: true,
        },
        |h| async move {
            let org = h.tenant("Notified", "10.100.0.0/16").await;
            let names = h.names(&org);
            let (m, _) = h.machine(&org, "a", &[]).await;
            // Another process (an operator's psql) removes the machine and adds a policy.
            let conn = h.pool.get().await.unwrap();
            conn.execute("DELETE FROM machines WHERE id = $1", &[&m.id])
                .await
                .unwrap();
            conn.execute(
                "INSERT INTO policies (id, org_id, action, src, dst) VALUES ($1, $2, 'deny', '\"any\"', '\"any\"')",
                &[&uuid::Uuid::new_v4(), &org.id],
            )
            .await
            .unwrap();
            let acl = || {
                ns(&names.netns, &["iptables-save", "-t", "filter"])
                    .lines()
                    .filter(|l| l.starts_with("-A MWG-ACL"))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            };
            eventually(
                Duration::from_secs(5),
                "peer gone and rule in place",
                || async {
                    let peers = wg(&names, "show", &["peers"]);
                    (peers.trim().is_empty() && acl().len() == 2).then_some(())
                },
            )
            .await;
            // A row changed in place (each notification names its row, which alone is read
            // again): the deny becomes an allow of TCP 22.
            conn.execute(
                "UPDATE policies SET action = 'allow', protocol = 'tcp', ports = '22' WHERE org_id = $1",
                &[&org.id],
            )
            .await
            .unwrap();
            eventually(Duration::from_secs(5), "rule changed", || async {
                let acl = acl();
                (acl.len() == 2 && acl[0].contains("--dport 22") && acl[0].contains("ACCEPT"))
                    .then_some(())
            })
            .await;
            // Switched off: only the default rule is left.
            conn.execute(
                "UPDATE policies SET enabled = false WHERE org_id = $1",
                &[&org.id],
            )
            .await
            .unwrap();
            eventually(Duration::from_secs(5), "rule switched off", || async {
                (acl().len() == 1).then_some(())
            })
            .await;
        },
    );
}

/// What a tenant holds of its rows after reading only the changed ones again is what reading
/// all of them gives, whatever the change (order, deletion, a row past its pending deadline).
#[test]
fn kernel_rows_read_again_alone_add_up_to_the_whole_snapshot() {
    use meshwg::db::orgs::{Rows, rows_seen, snapshot};
    run(|h| async move {
        let org = h.tenant("Rows", "10.100.0.0/16").await;
        let (a, _) = h.machine(&org, "a", &["x"]).await;
        let (b, _) = h.machine(&org, "b", &[]).await;
        let conn = h.pool.get().await.unwrap();
        // Twenty policies made in one transaction: equal priority and creation time, ordered
        // by id.
        let ids: Vec<uuid::Uuid> = (0..20).map(|_| uuid::Uuid::new_v4()).collect();
        conn.execute(
            "INSERT INTO policies (id, org_id, action, src, dst, priority) \
             SELECT id, $2, 'deny', '\"any\"', '\"any\"', 100 FROM unnest($1::uuid[]) AS id",
            &[&ids, &org.id],
        )
        .await
        .unwrap();
        let mut held = snapshot(&h.pool, org.id).await.unwrap().unwrap();
        assert_eq!(held.policies.len(), 20);
        let fresh = uuid::Uuid::new_v4();
        let expired = uuid::Uuid::new_v4();
        let steps: Vec<(&str, Rows)> = vec![
            (
                "UPDATE policies SET priority = 5 WHERE id = '{p3}'",
                Rows::policy(ids[3]),
            ),
            (
                "UPDATE policies SET priority = 500 WHERE id = '{p0}'",
                Rows::policy(ids[0]),
            ),
            (
                "DELETE FROM policies WHERE id = '{p7}'",
                Rows::policy(ids[7]),
            ),
            (
                "INSERT INTO policies (id, org_id, action, src, dst, priority) \
                 VALUES ('{fresh}', '{org}', 'allow', '{{\"tag\": \"x\"}}', '\"any\"', 100)",
                Rows::policy(fresh),
            ),
            (
                "INSERT INTO policies (id, org_id, action, src, dst, pending_until) \
                 VALUES ('{expired}', '{org}', 'allow', '\"any\"', '\"any\"', now() - interval '1 second')",
                Rows::policy(expired),
            ),
            (
                "UPDATE machines SET tags = '{y,z}' WHERE id = '{a}'",
                Rows::machine(a.id),
            ),
            ("DELETE FROM machines WHERE id = '{b}'", Rows::machine(b.id)),
        ];
        for (sql, rows) in steps {
            let sql = sql
                .replace("{p3}", &ids[3].to_string())
                .replace("{p0}", &ids[0].to_string())
                .replace("{p7}", &ids[7].to_string())
                .replace("{fresh}", &fresh.to_string())
                .replace("{expired}", &expired.to_string())
                .replace("{org}", &org.id.to_string())
                .replace("{a}", &a.id.to_string())
                .replace("{b}", &b.id.to_string())
                .replace("{{", "{")
                .replace("}}", "}");
            conn.batch_execute(&sql).await.unwrap();
            let reread = rows_seen(&h.pool, org.id, &rows).await.unwrap().unwrap();
            held.patch(&rows, reread);
            let whole = snapshot(&h.pool, org.id).await.unwrap().unwrap();
            assert_eq!(held, whole, "after {sql}");
        }
        assert_eq!(held.policies[0].id, ids[3]);
        assert_eq!(held.policies.last().unwrap().id, ids[0]);
        assert_eq!(held.machines.len(), 1);
    });
}

#[test]
fn kernel_a_slow_daemon_is_left_alone_and_a_hung_one_replaced() {
    if backend() != Backend::Userspace {
        eprintln!("the kernel backend has no daemon; nothing to test");
        return;
    }
    run(|h| async move {
        let org = h.tenant("Slow", "10.100.0.0/16").await;
        let names = h.names(&org);
        let pair = h.pair(&org, [&[], &[]]).await;
        let pid = daemon_pid(&h, &names);
        // Daemons yield the CPU to the controller (niceness, field 19 of /proc/<pid>/stat).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after_name = stat.rsplit_once(')').unwrap().1;
        let nice: i32 = after_name
            .split_whitespace()
            .nth(16)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(nice, meshwg::kernel::userspace::DAEMON_NICE);
        // Stopped long enough to miss a read or two (each waits 3 s), then back: still the
        // same daemon, and the machines never lost their hub.
        sh(&["kill", "-STOP", &pid.to_string()]);
        tokio::time::sleep(Duration::from_secs(4)).await;
        sh(&["kill", "-CONT", &pid.to_string()]);
        eventually(
            Duration::from_secs(10),
            "traffic through the same daemon",
            || async { pair.vm1.ping(&pair.dst(), 1).then_some(()) },
        )
        .await;
        assert_eq!(daemon_pid(&h, &names), pid, "a slow daemon is not replaced");
        // Stopped for good: after a run of failed reads it is replaced, and traffic flows again.
        sh(&["kill", "-STOP", &pid.to_string()]);
        // (A quiet daemon is asked at least every 15 s; then three reads of 3 s fail.)
        eventually(Duration::from_secs(60), "hung daemon replaced", || async {
            let now =
                std::fs::read_to_string(h.world.runtime_dir.join(format!("{}.pid", names.birth)))
                    .ok()?;
            (now.split_whitespace().next()? != pid.to_string()).then_some(())
        })
        .await;
        // (Replacing it killed it already; make sure.)
        sh_out(&["kill", "-KILL", &pid.to_string()]);
        eventually(
            Duration::from_secs(40),
            "traffic after replacement",
            || async { pair.vm1.ping(&pair.dst(), 1).then_some(()) },
        )
        .await;
    });
}

/// Bytes a process has read with read(2) (`rchar` of `/proc/<pid>/io`).
fn rchar(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn kernel_an_idle_daemon_is_not_asked_at_every_glance_yet_hand_changes_are_seen() {
    if backend() != Backend::Userspace {
        eprintln!("the kernel backend has no daemon; nothing to test");
        return;
    }
    run_observed(
        Observer {
            poll: Some(Duration::from_secs(1)),
            full: HOUR,
            counters: HOUR,
            events: true,
        },
        |h| async move {
            let (names, peers) = healthy_tenant(&h).await;
            let pid = daemon_pid(&h, &names);
            tokio::time::sleep(Duration::from_secs(2)).await;
            // Six glances: a daemon asked at each would read six `get=1\n\n` requests (7
            // bytes each); a quiet one is asked at most once (numbers every 15 s).
            let before = rchar(pid);
            tokio::time::sleep(Duration::from_secs(6)).await;
            let read = rchar(pid) - before;
            assert!(
                read <= 7,
                "the idle daemon read {read} bytes in 6 s of polling"
            );
            // What anybody asks the daemon rings the doorbell: a read by hand, then a change.
            wg(&names, "show", &[]);
            wg(&names, "set", &["peer", &peers[1], "remove"]);
            let (_, took) = eventually(Duration::from_secs(5), "peer put back", || async {
                healthy(&names, &peers).ok()
            })
            .await;
            eprintln!("peer removed by hand repaired in {took:?}");
            assert_eq!(daemon_pid(&h, &names), pid, "the same daemon");
        },
    );
}
