//! The policy preview and the reachability matrix against the kernel (root: real namespaces,
//! wg-quick clients, the hub's iptables chain). The kernel is the oracle: the pairs and ports a
//! preview says flip are exactly those whose real packets (TCP connects, pings between client
//! namespaces) change outcome once the change is applied over the API, and the preview itself
//! changes no row, no audit entry and no rule; every cell of the matrix, before and after,
//! is what the packets did.
//!
//! ```text
//!  <p>-c1 web1 (tag web) ─┐
//!  <p>-c2 web2 (tag web) ─┼── wg ── hub (tenant namespace, MWG-ACL) ── every pair via the hub
//!  <p>-c3 db1  (tag db)  ─┘         TCP listeners on 5000-5002 in every client namespace
//! ```

mod common;

use common::api::{Api, Client as User};
use common::*;
use meshwg::kernel::ns::in_netns;
use meshwg::secret::Secret;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

const PORTS: [u16; 3] = [5000, 5001, 5002];

struct Vm {
    name: String,
    address: Ipv4Addr,
    client: Client,
}

/// (source name, destination name, probe label) → did it get through.
type Outcomes = BTreeMap<(String, String, String), bool>;

/// A TCP listener on `port` in `netns`, accepting (and dropping) connections forever.
async fn listen(netns: &str, port: u16) {
    let l = in_netns(netns, move || TcpListener::bind(("0.0.0.0", port)))
        .await
        .unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            drop(s);
        }
    });
}

/// One probe: a TCP connect (from inside `from`) or two pings, new connections each time.
async fn probe(from: String, to: Ipv4Addr, what: String) -> bool {
    match what.strip_prefix("tcp/") {
        Some(port) => {
            let addr = SocketAddr::from((to, port.parse::<u16>().unwrap()));
            in_netns(&from, move || {
                Ok(TcpStream::connect_timeout(&addr, Duration::from_millis(1500)).is_ok())
            })
            .await
            .unwrap()
        }
        None => tokio::task::spawn_blocking(move || {
            ns_out(
                &from,
                &[
                    "ping",
                    "-n",
                    "-q",
                    "-c",
                    "2",
                    "-i",
                    "0.2",
                    "-W",
                    "1",
                    &to.to_string(),
                ],
            )
            .status
            .success()
        })
        .await
        .unwrap(),
    }
}

/// Every ordered pair of different machines, on each port and with ping, all at once.
async fn observe(vms: &[Vm]) -> Outcomes {
    let mut set = tokio::task::JoinSet::new();
    for s in vms {
        for d in vms.iter().filter(|d| d.name != s.name) {
            let mut labels: Vec<String> = PORTS.iter().map(|p| format!("tcp/{p}")).collect();
            labels.push("icmp".into());
            for label in labels {
                let key = (s.name.clone(), d.name.clone(), label.clone());
                let (from, to) = (s.client.netns.clone(), d.address);
                set.spawn(async move { (key, probe(from, to, label).await) });
            }
        }
    }
    set.join_all().await.into_iter().collect()
}

/// What the preview says: (src, dst, label) → (from allowed, to allowed), for the probe labels.
fn predicted(preview: &Value) -> BTreeMap<(String, String, String), (bool, bool)> {
    let mut out = BTreeMap::new();
    for f in preview["flips"].as_array().unwrap() {
        let labels: Vec<String> = match f["protocol"].as_str().unwrap() {
            "icmp" => vec!["icmp".into()],
            "tcp" => {
                let ports = f["ports"].as_str().unwrap();
                let (a, b) = ports.split_once('-').unwrap_or((ports, ports));
                let range = a.parse::<u16>().unwrap()..=b.parse::<u16>().unwrap();
                PORTS
                    .iter()
                    .filter(|p| range.contains(p))
                    .map(|p| format!("tcp/{p}"))
                    .collect()
            }
            _ => continue,
        };
        let sample = f["sample"].as_array().unwrap();
        assert_eq!(
            sample.len() as u64,
            f["pairs"].as_u64().unwrap(),
            "all listed"
        );
        for pair in sample {
            for label in &labels {
                let key = (
                    pair["src"]["name"].as_str().unwrap().to_string(),
                    pair["dst"]["name"].as_str().unwrap().to_string(),
                    label.clone(),
                );
                out.insert(key, (f["from"] == "allow", f["to"] == "allow"));
            }
        }
    }
    out
}

/// Exactly the predicted probes changed outcome, each in the predicted direction.
fn assert_flips(preview: &Value, before: &Outcomes, after: &Outcomes) {
    let want = predicted(preview);
    let seen: BTreeMap<_, _> = before
        .iter()
        .filter(|(k, b)| after[*k] != **b)
        .map(|(k, b)| (k.clone(), (*b, after[k])))
        .collect();
    assert_eq!(seen, want, "observed flips vs preview {preview:#}");
}

/// What a preview must not touch: the rows, the audit log, the kernel's rules and sets.
async fn state(h: &Harness, api: &Api, who: &User, org: &str, netns: &str) -> Vec<String> {
    let id = org.parse().unwrap();
    let mut out: Vec<String> = meshwg::db::policies::list(&h.pool, id)
        .await
        .unwrap()
        .iter()
        .map(|p| format!("{p:?}"))
        .collect();
    let o = meshwg::db::orgs::get(&h.pool, id).await.unwrap().unwrap();
    out.push(o.default_action.as_str().into());
    let audit = api
        .call("GET", &format!("/api/v1/orgs/{org}/audit"), Some(who), None)
        .await;
    out.push(audit.body["entries"].to_string());
    let rules = ns(netns, &["iptables-save", "-t", "filter"]);
    // Without comments (a timestamp) and chain counters (policy counters move with traffic).
    out.extend(
        rules
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(" [").next().unwrap_or(l).to_string()),
    );
    out.push(ns(netns, &["ipset", "save"]));
    out
}

#[test]
fn kernel_preview_flips_and_matrix_cells_equal_real_packets() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let (org, admin) = api.org_with_admin(&op, "Preview", "10.100.0.0/16").await;
        let base = format!("/api/v1/orgs/{org}");
        let call = |method: &'static str, path: String, body: Option<Value>| {
            let (api, admin) = (&api, &admin);
            async move { api.call(method, &path, Some(admin), body).await }
        };
        let mut vms = Vec::new();
        let mut ids = BTreeMap::new();
        for (n, (name, tag)) in [("web1", "web"), ("web2", "web"), ("db1", "db")]
            .into_iter()
            .enumerate()
        {
            let body = json!({"name": name, "tags": [tag]});
            let r = call("POST", format!("{base}/machines"), Some(body)).await;
            assert_eq!(r.status, 201, "{:?}", r.body);
            let m = &r.body["machine"];
            ids.insert(name, m["id"].as_str().unwrap().to_string());
            let config = Secret::new(r.body["config"].as_str().unwrap().to_string());
            let vm = Vm {
                name: name.into(),
                address: m["address"].as_str().unwrap().parse().unwrap(),
                client: h.client(n as u8 + 1, &config),
            };
            for port in PORTS {
                listen(&vm.client.netns, port).await;
            }
            vms.push(vm);
        }
        for (s, d) in [(0, 1), (1, 2), (2, 0)] {
            let dst = vms[d].address.to_string();
            let vm = &vms[s].client;
            eventually(Duration::from_secs(20), "first ping", || async {
                vm.ping(&dst, 1).then_some(())
            })
            .await;
        }

        // Mixed policies: tags, a machine, a CIDR, port ranges, icmp; default allow.
        let mut policy = Vec::new();
        for body in [
            json!({"priority": 10, "action": "deny", "src": {"tag": "web"}, "dst": {"tag": "db"}, "protocol": "tcp", "ports": "5000-5001"}),
            json!({"priority": 20, "action": "allow", "src": "any", "dst": {"tag": "db"}, "protocol": "tcp", "ports": "5000"}),
            json!({"priority": 30, "action": "deny", "src": {"cidr": format!("{}/32", vms[0].address)}, "dst": {"machine": ids["web2"]}, "protocol": "icmp"}),
            json!({"priority": 40, "action": "deny", "src": {"tag": "db"}, "dst": {"tag": "web"}, "protocol": "tcp", "ports": "5002"}),
        ] {
            let r = call("POST", format!("{base}/policies"), Some(body)).await;
            assert_eq!(r.status, 201, "{:?}", r.body);
            policy.push(r.body["id"].as_str().unwrap().to_string());
        }
        let r = call("GET", format!("{base}/policies/analysis"), None).await;
        assert_eq!(r.body["findings"][0]["policy"]["id"], policy[1].as_str());
        assert_eq!(r.body["findings"][0]["kind"], "shadowed", "{:?}", r.body);
        assert_eq!(r.body["findings"][0]["by"][0]["number"], 1);

        let o = meshwg::db::orgs::get(&h.pool, org.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        let netns = h.names(&o).netns;
        let mut before = observe(&vms).await;
        // The chain as set up: web→db 5000-5001 denied, db→web 5002 denied, web1→web2 no ping.
        assert!(!before[&("web1".into(), "db1".into(), "tcp/5000".into())]);
        assert!(before[&("web1".into(), "db1".into(), "tcp/5002".into())]);
        assert!(!before[&("db1".into(), "web2".into(), "tcp/5002".into())]);
        assert!(!before[&("web1".into(), "web2".into(), "icmp".into())]);
        // The other way too: the deny matches web1's echo replies, and comes before the
        // established row.
        assert!(!before[&("web2".into(), "web1".into(), "icmp".into())]);
        assert!(before[&("web1".into(), "db1".into(), "icmp".into())]);

        // The matrix says what the packets did, cell by cell, on every probed port.
        let check_matrix = |outcomes: Outcomes| {
            let call = &call;
            let base = &base;
            async move {
                let mut labels: Vec<String> = PORTS.iter().map(|p| format!("tcp/{p}")).collect();
                labels.push("icmp".into());
                for label in labels {
                    let query = match label.split_once('/') {
                        Some((proto, port)) => format!("proto={proto}&port={port}"),
                        None => "proto=icmp".into(),
                    };
                    let m = call("GET", format!("{base}/matrix?{query}"), None)
                        .await
                        .body;
                    let axis = m["axis"].as_array().unwrap();
                    for (i, from) in axis.iter().enumerate() {
                        for (j, to) in axis.iter().enumerate().filter(|(j, _)| *j != i) {
                            let key = (
                                from["label"].as_str().unwrap().to_string(),
                                to["label"].as_str().unwrap().to_string(),
                                label.clone(),
                            );
                            let cell = &m["cells"][i][j]["verdict"];
                            assert_eq!(cell == "allow", outcomes[&key], "{key:?}: {m}");
                        }
                    }
                }
            }
        };
        check_matrix(before.clone()).await;

        // Each change: previewed (nothing written), applied over the API, then packets again.
        let changes = [
            (
                json!({"op": "update", "id": policy[0], "changes": {"ports": "5001-5002"}}),
                (
                    "PATCH",
                    format!("{base}/policies/{}", policy[0]),
                    json!({"ports": "5001-5002"}),
                ),
            ),
            (
                json!({"op": "delete", "id": policy[2]}),
                (
                    "DELETE",
                    format!("{base}/policies/{}", policy[2]),
                    Value::Null,
                ),
            ),
            (
                json!({"op": "default", "action": "deny"}),
                ("PATCH", base.clone(), json!({"default_action": "deny"})),
            ),
        ];
        for (change, (method, path, body)) in changes {
            let untouched = state(&h, &api, &admin, &org, &netns).await;
            let r = call(
                "POST",
                format!("{base}/policies/preview"),
                Some(change.clone()),
            )
            .await;
            assert_eq!(r.status, 200, "{change}: {:?}", r.body);
            let preview = r.body;
            assert!(!preview["flips"].as_array().unwrap().is_empty(), "{change}");
            assert_eq!(
                state(&h, &api, &admin, &org, &netns).await,
                untouched,
                "{change}: the preview wrote nothing"
            );
            let body = (!body.is_null()).then_some(body);
            let r = call(method, path, body).await;
            assert!(r.status.is_success(), "{change}: {:?}", r.body);
            let rules: Vec<String> = ns(&netns, &["iptables-save", "-t", "filter"])
                .lines()
                .filter(|l| l.starts_with("-A MWG-ACL"))
                .map(String::from)
                .collect();
            assert_eq!(
                rules,
                preview["rules"]["after"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l.as_str().unwrap().to_string())
                    .collect::<Vec<_>>(),
                "{change}: the kernel holds the previewed chain"
            );
            for l in preview["rules"]["removed"].as_array().unwrap() {
                assert!(!rules.contains(&l.as_str().unwrap().to_string()), "{l}");
            }
            let after = observe(&vms).await;
            assert_flips(&preview, &before, &after);
            before = after;
        }
        check_matrix(before.clone()).await;
        let r = call("POST", format!("{base}/policies/preview"), Some(json!({"op": "create", "policy": {"action": "deny", "src": {"cidr": "192.168.0.0/24"}, "dst": "any"}}))).await;
        assert_eq!(r.status, 400, "{:?}", r.body);
    });
}
