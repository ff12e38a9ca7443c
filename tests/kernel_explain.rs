//! Explain against the kernel (root; see common/mod.rs): for random paths between real
//! `wg-quick` clients, the verdict `GET /orgs/{org}/explain` gives is what a real packet does.
//!
//! ```text
//!  <p>-host ── br0 ──┬── <p>-c1  m1  10.100.0.2  tags web
//!   (controller,     ├── <p>-c2  m2  10.100.0.3  tags db
//!    tenant hub)     ├── <p>-c3  m3  10.100.0.4  tags web staff
//!                    └── <p>-c4  m4  10.100.0.5  no tags
//! ```
//!
//! Probes are real packets from one client namespace to another through the hub: TCP and UDP
//! from sockets opened inside the namespaces (a listener on the destination, a connect or a
//! datagram from the source; `nc` is not needed for that), ICMP with `ping`. The random tuples
//! come from a seeded generator; the seed is printed (`MESHWG_EXPLAIN_SEED` replays a run).

mod common;

use common::api::{Api, Client as ApiClient};
use common::probe::{Tuple, probe_all};
use common::*;
use serde_json::{Value, json};
use std::net::Ipv4Addr;
use std::time::Duration;

/// splitmix64: a small, seedable generator (no dependency for 50 numbers).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[(self.next() % from.len() as u64) as usize]
    }
}

async fn explain(api: &Api, who: &ApiClient, org: &str, q: &str) -> common::api::Reply {
    api.call(
        "GET",
        &format!("/api/v1/orgs/{org}/explain?{q}"),
        Some(who),
        None,
    )
    .await
}

async fn policy(api: &Api, who: &ApiClient, org: &str, body: Value) -> Value {
    let r = api
        .call(
            "POST",
            &format!("/api/v1/orgs/{org}/policies"),
            Some(who),
            Some(body),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body
}

fn random_tuples(rng: &mut Rng, n: usize) -> Vec<Tuple> {
    (0..n)
        .map(|_| {
            let src = rng.pick(&[0, 1, 2, 3]);
            let dst = loop {
                let d = rng.pick(&[0, 1, 2, 3]);
                if d != src {
                    break d;
                }
            };
            let proto = rng.pick(&["tcp", "udp", "icmp"]);
            let port = match proto {
                "tcp" => Some(rng.pick(&[22, 80, 443, 5000])),
                "udp" => Some(rng.pick(&[53, 5000])),
                _ => None,
            };
            Tuple {
                src,
                dst,
                proto,
                port,
            }
        })
        .collect()
}

#[test]
fn kernel_explain_verdicts_equal_what_real_packets_do() {
    run(|h| async move {
        let seed = std::env::var("MESHWG_EXPLAIN_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("kernel_explain seed: {seed} (MESHWG_EXPLAIN_SEED={seed} replays it)");
        let mut rng = Rng(seed);

        let api = Api::new(&h).await;
        let op = api.operator().await;
        let org = h.tenant("Explain", "10.100.0.0/16").await;
        let id = org.id.to_string();
        let tags: [&[&str]; 4] = [&["web"], &["db"], &["web", "staff"], &[]];
        let mut machines = Vec::new();
        let mut clients = Vec::new();
        for (i, t) in tags.iter().enumerate() {
            let (m, conf) = h.machine(&org, &format!("m{}", i + 1), t).await;
            clients.push(h.client(i as u8 + 1, &conf));
            machines.push(m);
        }
        let addrs: Vec<Ipv4Addr> = machines.iter().map(|m| m.address).collect();
        let netns: Vec<String> = clients.iter().map(|c| c.netns.clone()).collect();
        // Every client has handshaken and the hub knows where each one is.
        for i in 0..4 {
            let dst = addrs[(i + 1) % 4].to_string();
            eventually(Duration::from_secs(20), "first pings", || async {
                clients[i].ping(&dst, 1).then_some(())
            })
            .await;
        }

        // Mixed policies: tags, machines, CIDRs, ports, denies above allows, both directions.
        let m = |i: usize| json!({"machine": machines[i].id});
        for body in [
            json!({"name": "no ssh from staff", "priority": 10, "action": "deny", "src": {"tag": "staff"}, "dst": "any", "protocol": "tcp", "ports": "22"}),
            json!({"name": "web to db", "priority": 20, "action": "allow", "src": {"tag": "web"}, "dst": m(1), "protocol": "tcp", "ports": "80-443"}),
            json!({"name": "no ping from m4 to the low block", "priority": 30, "action": "deny", "src": m(3), "dst": {"cidr": "10.100.0.0/30"}, "protocol": "icmp"}),
            json!({"name": "dns to db", "priority": 40, "action": "allow", "src": "any", "dst": {"tag": "db"}, "protocol": "udp", "ports": "53"}),
            json!({"name": "m3 never to m1", "priority": 50, "action": "deny", "src": {"cidr": "10.100.0.4/32"}, "dst": m(0)}),
            json!({"name": "m4 to web apps", "priority": 60, "action": "allow", "src": m(3), "dst": {"tag": "web"}, "protocol": "tcp", "ports": "5000"}),
            json!({"name": "ping", "priority": 70, "action": "allow", "src": "any", "dst": "any", "protocol": "icmp"}),
            json!({"name": "no udp 5000 to m4", "priority": 80, "action": "deny", "src": "any", "dst": m(3), "protocol": "udp", "ports": "5000"}),
        ] {
            policy(&api, &op, &id, body).await;
        }

        // Bad questions are 400s that say why; another tenant is not found.
        let other = h.tenant("Other", "10.100.0.0/16").await;
        let (foreign, _) = h.machine(&other, "theirs", &[]).await;
        let a = |i: usize| addrs[i].to_string();
        for (q, says) in [
            (format!("src=nobody&dst={}&proto=icmp", a(1)), "src:"),
            (
                format!("src={}&dst={}&proto=icmp", foreign.id, a(1)),
                "src: no machine with this id",
            ),
            (
                format!("src={}&dst={}&proto=icmp", uuid::Uuid::new_v4(), a(1)),
                "src: no machine with this id",
            ),
            (
                format!("src={}&dst=10.200.0.9&proto=icmp", a(0)),
                "outside the org network",
            ),
            (
                format!("src={}&dst={}&proto=icmp&port=22", a(0), a(1)),
                "port: only with proto tcp or udp",
            ),
            (
                format!("src={}&dst={}&proto=tcp", a(0), a(1)),
                "port: required",
            ),
            (format!("src={}&dst={}&proto=gre", a(0), a(1)), "proto:"),
            (format!("src={}&dst=10.100.0.1&proto=icmp", a(0)), "hub"),
            (format!("src={}&dst={}&proto=icmp", a(0), a(0)), "dst:"),
        ] {
            let r = explain(&api, &op, &id, &q).await;
            assert_eq!(r.status, 400, "{q}: {:?}", r.body);
            let msg = r.body["error"]["message"].as_str().unwrap();
            assert!(msg.contains(says), "{q}: {msg}");
        }
        let admin = api.user(&op, &id, "admin@explain.test", "admin").await;
        let r = explain(
            &api,
            &admin,
            &other.id.to_string(),
            &format!("src={}&dst={}&proto=icmp", foreign.id, foreign.id),
        )
        .await;
        assert_eq!(r.status, 404, "another tenant's org: {:?}", r.body);

        let mut checked = 0;
        let mut denied_by_policy = 0;
        let mut reachable = 0;
        for default in ["deny", "allow"] {
            let r = api
                .call(
                    "PATCH",
                    &format!("/api/v1/orgs/{id}"),
                    Some(&op),
                    Some(json!({"default_action": default})),
                )
                .await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            let tuples = random_tuples(&mut rng, 25);
            let mut answers = Vec::new();
            for (n, t) in tuples.iter().enumerate() {
                // Ends named three ways: id, name, address.
                let name = |i: usize| match n % 3 {
                    0 => machines[i].id.to_string(),
                    1 => machines[i].name.clone(),
                    _ => addrs[i].to_string(),
                };
                let mut q = format!("src={}&dst={}&proto={}", name(t.src), name(t.dst), t.proto);
                if let Some(p) = t.port {
                    q.push_str(&format!("&port={p}"));
                }
                let r = explain(&api, &admin, &id, &q).await;
                assert_eq!(r.status, 200, "{q}: {:?}", r.body);
                answers.push(r.body);
            }
            let seen = probe_all(&tuples, &netns, &addrs);
            for ((t, e), got) in tuples.iter().zip(&answers).zip(&seen) {
                let said = e["reachable"].as_bool().unwrap();
                let rows: Vec<&str> = e["forward"]["rows"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .chain(e["reply"]["rows"].as_array().unwrap())
                    .map(|r| r["summary"].as_str().unwrap())
                    .collect();
                assert_eq!(
                    said,
                    *got,
                    "seed {seed}, default {default}: m{} → m{} {} {:?}: explain says {said}, the kernel {got}\n{}",
                    t.src + 1,
                    t.dst + 1,
                    t.proto,
                    t.port,
                    rows.join("\n")
                );
                reachable += usize::from(*got);
                if e["forward"]["decided_by"]["kind"] == "policy" && e["verdict"] == "deny" {
                    denied_by_policy += 1;
                }
                // The data plane as the hub has it: both peers, exactly their /32.
                let dp = &e["data_plane"];
                assert_eq!(dp["hub_up"], true);
                assert_eq!(dp["last_reconcile"], "ok");
                for end in ["src", "dst"] {
                    assert_eq!(dp[end]["peer_present"], true, "{end}: {dp}");
                    assert_eq!(dp[end]["allowed_ips_ok"], true, "{end}: {dp}");
                    assert!(dp[end]["endpoint"].is_string(), "{end}: {dp}");
                    assert!(dp[end]["handshake_age_secs"].is_i64(), "{end}: {dp}");
                }
                // The deciding row is in the kernel, with its counter.
                let decided = e["forward"]["rows"].as_array().unwrap().last().unwrap();
                assert!(decided["rule"].as_str().unwrap().starts_with("-A MWG-ACL"));
                assert!(e["counter"]["packets"].is_u64());
                checked += 1;
            }
        }
        assert_eq!(checked, 50);
        eprintln!(
            "kernel_explain: 50 tuples agree ({reachable} reachable, {denied_by_policy} denied by a policy)"
        );
        assert!((1..50).contains(&reachable), "both outcomes were probed");

        // A denied path, its counter moving with the probe, and its fix: the suggested allow
        // (created as the fix says) lets the very same packet through.
        let t = Tuple {
            src: 2,
            dst: 0,
            proto: "tcp",
            port: Some(5000),
        };
        let q = "src=m3&dst=m1&proto=tcp&port=5000".to_string();
        let before = explain(&api, &admin, &id, &q).await.body;
        assert_eq!(before["reachable"], false, "{before}");
        assert_eq!(before["forward"]["number"], 5, "m3 never to m1");
        let packets = before["counter"]["packets"].as_u64().unwrap();
        assert!(!probe_all(&[t], &netns, &addrs)[0]);
        let after = explain(&api, &admin, &id, &q).await.body;
        assert!(
            after["counter"]["packets"].as_u64().unwrap() > packets,
            "the SYNs were counted on the deny: {after}"
        );
        // The answer has exactly the fields the OpenAPI document names, at every level.
        let doc = api
            .call("GET", "/api/v1/openapi.json", None, None)
            .await
            .body;
        let schema = &doc["components"]["schemas"]["Explain"];
        let keys = |v: &Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let p = &schema["properties"];
        for (what, s, v) in [
            ("Explain", schema, &after),
            ("src", &p["src"], &after["src"]),
            ("forward", &p["forward"], &after["forward"]),
            (
                "row",
                &p["forward"]["properties"]["rows"]["items"],
                &after["forward"]["rows"][0],
            ),
            (
                "field",
                &p["forward"]["properties"]["rows"]["items"]["properties"]["src"],
                &after["forward"]["rows"][0]["src"],
            ),
            ("counter", &p["counter"], &after["counter"]),
            ("data_plane", &p["data_plane"], &after["data_plane"]),
            (
                "peer",
                &p["data_plane"]["properties"]["src"],
                &after["data_plane"]["src"],
            ),
            ("fix", &p["fix"], &after["fix"]),
        ] {
            assert_eq!(keys(&s["properties"]), keys(v), "{what}");
        }
        let fix = &after["fix"];
        assert_eq!(fix["direction"], "forward");
        assert_eq!(fix["priority"], 49, "just above the deny at 50");
        let mut body = json!({"name": "fixed"});
        for k in ["action", "src", "dst", "protocol", "ports", "priority"] {
            body[k] = fix[k].clone();
        }
        policy(&api, &op, &id, body).await;
        let fixed = explain(&api, &admin, &id, &q).await.body;
        assert_eq!(fixed["verdict"], "allow", "{fixed}");
        assert_eq!(fixed["reachable"], true, "{fixed}");
        assert!(
            probe_all(&[t], &netns, &addrs)[0],
            "the fix works in the kernel"
        );
    });
}
