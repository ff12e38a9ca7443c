//! "Watch this path" against the kernel (root; see common/mod.rs): a watch counts the probe
//! packets that reach the hub and changes no verdict, lives in the tenant's `MWG-WATCH` chain
//! jumped to before the ACL chain, is repaired like any rule, and is gone from the kernel when
//! its time is up; a fourth watch is refused.
//!
//! ```text
//!  <p>-host ── br0 ──┬── <p>-c1  one  10.100.0.2   deny icmp one → two
//!   (controller, hub)└── <p>-c2  two  10.100.0.3
//! ```

mod common;

use common::api::{Api, Client as ApiClient};
use common::probe::enter;
use common::*;
use serde_json::{Value, json};
use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

async fn watch(api: &Api, who: &ApiClient, org: &str, body: Value) -> common::api::Reply {
    api.call(
        "POST",
        &format!("/api/v1/orgs/{org}/watch"),
        Some(who),
        Some(body),
    )
    .await
}

async fn watches(api: &Api, who: &ApiClient, org: &str) -> Vec<Value> {
    let r = api
        .call("GET", &format!("/api/v1/orgs/{org}/watch"), Some(who), None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["watches"].as_array().unwrap().clone()
}

/// The filter table's chains (without counters) and rules.
fn filter_rules(netns: &str) -> Vec<String> {
    ns(netns, &["iptables-save", "-t", "filter"])
        .lines()
        .filter_map(|l| {
            if l.starts_with("-A ") {
                Some(l.to_string())
            } else if l.starts_with(':') {
                Some(l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            } else {
                None
            }
        })
        .collect()
}

/// `n` datagrams from `src_ns` to `dst:port`, and how many a socket in `dst_ns` received.
fn udp(src_ns: &str, dst_ns: &str, dst: Ipv4Addr, port: u16, n: usize) -> usize {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let dst_ns = dst_ns.to_string();
    let server = std::thread::spawn(move || {
        enter(&dst_ns);
        let s = UdpSocket::bind(("0.0.0.0", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300) * slowdown()))
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut got = 0;
        let mut buf = [0u8; 64];
        let until = Instant::now() + Duration::from_secs(3) * slowdown();
        while got < n && Instant::now() < until {
            if s.recv_from(&mut buf).is_ok() {
                got += 1;
            }
        }
        got
    });
    ready_rx.recv().unwrap();
    let src_ns = src_ns.to_string();
    std::thread::spawn(move || {
        enter(&src_ns);
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..n {
            s.send_to(b"watched", (dst, port)).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .join()
    .unwrap();
    server.join().unwrap()
}

#[test]
fn kernel_watch_counts_the_probes_changes_no_verdict_and_expires() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let org = h.tenant("Watch", "10.100.0.0/16").await;
        let id = org.id.to_string();
        let names = h.names(&org);
        // Long enough for every step before the expiry, stretched on slow machines.
        let ttl = (15 * u64::from(slowdown())).min(60);
        let pair = h.pair(&org, [&[], &[]]).await;
        let (one, two) = (pair.m1.address, pair.m2.address);
        let r = api
            .call(
                "POST",
                &format!("/api/v1/orgs/{id}/policies"),
                Some(&op),
                Some(json!({"name": "no ping one to two", "action": "deny",
                    "src": {"machine": pair.m1.id}, "dst": {"machine": pair.m2.id},
                    "protocol": "icmp"})),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let acl_only = filter_rules(&names.netns);
        let repairs = || h.deps.telemetry.repairs_and_restarts(org.id).0;
        let baseline = repairs();
        assert!(!acl_only.iter().any(|l| l.contains("MWG-WATCH")));

        // Two watches: a denied path and an allowed one (answered once the kernel counts).
        let r = watch(
            &api,
            &op,
            &id,
            json!({"src": "one", "dst": two.to_string(), "proto": "icmp", "ttl_secs": ttl}),
        )
        .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let denied = r.body["id"].as_str().unwrap().to_string();
        assert_eq!(r.body["verdict"], "deny");
        assert_eq!(r.body["number"], 1);
        let r = watch(
            &api,
            &op,
            &id,
            json!({"src": pair.m2.id, "dst": "one", "proto": "udp", "port": 7000, "ttl_secs": ttl}),
        )
        .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let allowed = r.body["id"].as_str().unwrap().to_string();
        assert_eq!(r.body["verdict"], "allow");
        assert_eq!(r.body["decided_by"]["kind"], "default");

        // In the kernel: the watch chain, jumped to first, its rules with no target.
        let rules = filter_rules(&names.netns);
        let forward: Vec<&String> = rules
            .iter()
            .filter(|l| l.starts_with("-A FORWARD"))
            .collect();
        assert_eq!(
            forward,
            [
                "-A FORWARD -i wg0 -o wg0 -j MWG-WATCH",
                "-A FORWARD -i wg0 -o wg0 -j MWG-ACL"
            ],
            "{rules:#?}"
        );
        let watched: Vec<&String> = rules
            .iter()
            .filter(|l| l.starts_with("-A MWG-WATCH"))
            .collect();
        assert_eq!(watched.len(), 2, "{rules:#?}");
        assert!(watched.iter().all(|l| !l.contains(" -j ")), "{watched:?}");
        assert!(watched[0].contains(&format!("-s {one}/32 -d {two}/32 -p icmp")));

        // The verdicts are unchanged: denied pings stay denied, allowed datagrams arrive; and
        // the watches counted the probes that reached the hub.
        const SENT: u64 = 5;
        assert!(
            !pair.vm1.ping(&two.to_string(), SENT as u32),
            "denied stays denied"
        );
        assert_eq!(
            udp(&pair.vm2.netns, &pair.vm1.netns, one, 7000, SENT as usize),
            SENT as usize,
            "allowed passes"
        );
        let list = watches(&api, &op, &id).await;
        let by = |w: &str| list.iter().find(|v| v["id"] == w).unwrap().clone();
        let (d, a) = (by(&denied), by(&allowed));
        assert!(d["packets"].as_u64().unwrap() >= SENT, "{d}");
        assert_eq!(
            a["packets"].as_u64().unwrap(),
            SENT,
            "exactly the datagrams: {a}"
        );
        assert!(a["bytes"].as_u64().unwrap() >= SENT * 28);
        assert_eq!(d["verdict"], "deny");
        assert!(
            d["summary"].as_str().unwrap().contains("→ deny (#1)"),
            "{d}"
        );
        // The deny counted the same pings: they reached the hub and were dropped there.
        let status = api
            .call("GET", &format!("/api/v1/orgs/{id}/status"), Some(&op), None)
            .await;
        let deny_packets = status.body["rules"][0]["packets"].as_u64().unwrap();
        assert!(deny_packets >= SENT, "{:?}", status.body["rules"]);

        // A third is fine, a fourth is refused with a JSON 409, and nothing changed.
        let third =
            json!({"src": "one", "dst": "two", "proto": "tcp", "port": 22, "ttl_secs": ttl});
        let r = watch(&api, &op, &id, third.clone()).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let r = watch(&api, &op, &id, third).await;
        assert_eq!(r.status, 409, "{:?}", r.body);
        assert_eq!(r.body["error"]["code"], "conflict");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("at most 3 watches"),
            "{:?}",
            r.body
        );
        assert_eq!(watches(&api, &op, &id).await.len(), 3);
        // Bad input is a 400 that says why; a member may look but not watch.
        for (body, says) in [
            (
                json!({"src": "one", "dst": "two", "proto": "icmp", "port": 1}),
                "port",
            ),
            (json!({"src": "one", "dst": "two", "proto": "udp"}), "port"),
            (
                json!({"src": "one", "dst": "10.9.0.1", "proto": "icmp"}),
                "outside",
            ),
            (
                json!({"src": "one", "dst": "two", "proto": "icmp", "ttl_secs": 121}),
                "ttl_secs",
            ),
            (
                json!({"src": "one", "dst": "two", "proto": "icmp", "x": 1}),
                "unknown field",
            ),
        ] {
            let r = watch(&api, &op, &id, body.clone()).await;
            assert_eq!(r.status, 400, "{body}: {:?}", r.body);
            assert!(
                r.body["error"]["message"].as_str().unwrap().contains(says),
                "{:?}",
                r.body
            );
        }
        let member = api.user(&op, &id, "member@watch.test", "member").await;
        let r = watch(
            &api,
            &member,
            &id,
            json!({"src": "one", "dst": "two", "proto": "icmp"}),
        )
        .await;
        assert_eq!(r.status, 403);
        assert_eq!(watches(&api, &member, &id).await.len(), 3);

        assert_eq!(repairs(), baseline, "watches are changes, not drift");
        // Flushed by hand: the reconciler puts the watches back, as it would any rule.
        ns(&names.netns, &["iptables", "-F", "MWG-WATCH"]);
        eventually(Duration::from_secs(10), "watch rules repaired", || async {
            let n = filter_rules(&names.netns)
                .iter()
                .filter(|l| l.starts_with("-A MWG-WATCH"))
                .count();
            (n == 3).then_some(())
        })
        .await;

        // Time's up: chain and jump leave the kernel by themselves, FORWARD is the single jump
        // again, and the limit is free.
        eventually(Duration::from_secs(30), "watches expire", || async {
            let rules = filter_rules(&names.netns);
            (!rules.iter().any(|l| l.contains("MWG-WATCH"))).then_some(rules)
        })
        .await;
        assert_eq!(filter_rules(&names.netns), acl_only);
        let repaired = repairs();
        assert!(repaired > baseline, "the flush was repaired as drift");
        assert!(watches(&api, &op, &id).await.is_empty());
        assert!(
            !pair.vm1.ping(&two.to_string(), 1),
            "the deny is still there"
        );
        let r = watch(
            &api,
            &op,
            &id,
            json!({"src": "two", "dst": "one", "proto": "icmp", "ttl_secs": 1}),
        )
        .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        eventually(
            Duration::from_secs(10),
            "a one-second watch expires",
            || async {
                (!filter_rules(&names.netns)
                    .iter()
                    .any(|l| l.contains("MWG-WATCH")))
                .then_some(())
            },
        )
        .await;
        assert_eq!(repairs(), repaired, "an expiry is no drift repair");
    });
}
