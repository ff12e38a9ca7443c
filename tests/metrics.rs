//! `/metrics` against the kernel: the per-peer and per-policy series are the kernel's own numbers,
//! deleted tenants leave no series, and every metric the Grafana dashboard queries exists (root).

mod common;

use common::api::Api;
use common::*;
use meshwg::db::policies::{self, PolicyFields};
use meshwg::policy::{Protocol, Selector, Verdict};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

async fn scrape(h: &Harness) -> String {
    let route = meshwg::http::metrics_route(h.deps.telemetry.clone());
    let resp = warp::test::request().path("/metrics").reply(&route).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain; version=0.0.4");
    String::from_utf8(resp.body().to_vec()).unwrap()
}

/// `name{labels} value` lines of one metric, keyed by the value of `key` in the labels.
fn series(text: &str, name: &str, key: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once(' ')?;
            let k = labels
                .split(&format!("{key}=\""))
                .nth(1)?
                .split('"')
                .next()?
                .to_string();
            Some((k, value.parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// `wg show <dev> transfer`: public key → (rx, tx).
fn wg_transfer(names: &meshwg::names::TenantNames) -> BTreeMap<String, (u64, u64)> {
    wg(names, "show", &["transfer"])
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((
                f.next()?.to_string(),
                (f.next()?.parse().ok()?, f.next()?.parse().ok()?),
            ))
        })
        .collect()
}

/// `iptables -L MWG-ACL -v -x -n`: comment (policy id, default) → (packets, bytes).
fn iptables_counters(netns: &str) -> BTreeMap<String, (u64, u64)> {
    ns(netns, &["iptables", "-L", "MWG-ACL", "-v", "-x", "-n"])
        .lines()
        .filter_map(|l| {
            let comment = l.split("/* mwg:").nth(1)?.split(" */").next()?.to_string();
            let mut f = l.split_whitespace();
            Some((comment, (f.next()?.parse().ok()?, f.next()?.parse().ok()?)))
        })
        .collect()
}

#[test]
fn metrics_equal_the_kernel_and_vanish_with_the_tenant() {
    run(|h| async move {
        let org = h.tenant("Metered", "10.100.0.0/16").await;
        let names = h.names(&org);
        let pair = h.pair(&org, [&[], &[]]).await;
        let (m1, vm1, dst) = (&pair.m1, &pair.vm1, pair.dst());
        let mut allow = PolicyFields {
            name: "icmp".into(),
            priority: 10,
            action: Verdict::Allow,
            src: Selector::Any,
            dst: Selector::Any,
            protocol: Protocol::Icmp,
            ports: None,
            enabled: true,
        };
        let allow_p = policies::insert(&h.pool, org.id, Uuid::new_v4(), &allow)
            .await
            .unwrap();
        allow.action = Verdict::Deny;
        allow.protocol = Protocol::Udp;
        allow.ports = Some("9".parse().unwrap());
        let deny_p = policies::insert(&h.pool, org.id, Uuid::new_v4(), &allow)
            .await
            .unwrap();
        h.ctl.sync(org.id).await.unwrap();
        assert!(vm1.ping(&dst, 5));

        // Within a reconcile interval the scrape shows exactly what the kernel counts.
        let (_, took) = eventually(INTERVAL * 3, "scrape equals the kernel", || async {
            let text = scrape(&h).await;
            let wg = wg_transfer(&names);
            let rx = series(&text, "meshwg_peer_rx_bytes_total", "public_key");
            let tx = series(&text, "meshwg_peer_tx_bytes_total", "public_key");
            let peers_ok = wg.len() == 2
                && wg
                    .iter()
                    .all(|(k, (r, t))| rx.get(k) == Some(r) && tx.get(k) == Some(t) && *r > 0);
            let ipt = iptables_counters(&names.netns);
            let pkts = series(&text, "meshwg_policy_packets_total", "policy");
            let bytes = series(&text, "meshwg_policy_bytes_total", "policy");
            let rules_ok = ipt.len() == 3
                && ipt
                    .iter()
                    .all(|(c, (p, b))| pkts.get(c) == Some(p) && bytes.get(c) == Some(b))
                && ipt[&allow_p.id.to_string()].0 >= 10;
            (peers_ok && rules_ok).then_some(())
        })
        .await;
        eprintln!("scrape matched the kernel after {took:?}");
        let text = scrape(&h).await;
        assert!(text.contains(&format!(
            "meshwg_tenant_up{{tenant=\"{}\",tenant_name=\"Metered\"}} 1",
            org.id
        )));
        assert!(text.contains(&format!("meshwg_tenant_peers{{tenant=\"{}\"}} 2", org.id)));
        assert!(text.contains(&format!("policy=\"{}\",action=\"deny\"", deny_p.id)));
        assert!(text.contains(&format!("machine=\"{}\",machine_name=\"one\"", m1.id)));
        let handshakes = series(&text, "meshwg_peer_last_handshake_seconds", "public_key");
        assert!(
            handshakes.values().all(|t| *t > 1_700_000_000),
            "{handshakes:?}"
        );

        // A drift repair is counted by kind.
        ns(
            &names.netns,
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
        eventually(INTERVAL * 3, "repair counted", || async {
            scrape(&h)
                .await
                .contains(&format!(
                    "meshwg_reconcile_repairs_total{{tenant=\"{}\",kind=\"flush_nat\"}} 1",
                    org.id
                ))
                .then_some(())
        })
        .await;
        assert!(scrape(&h).await.contains("meshwg_egress_guard 1"));

        // A removed machine's series go; a deleted tenant's series all go.
        h.ctl.remove_machine(org.id, m1.id).await.unwrap();
        assert!(!scrape(&h).await.contains(&m1.id.to_string()));
        h.ctl.delete_tenant(org.id).await.unwrap();
        let text = scrape(&h).await;
        assert!(
            !text.contains(&org.id.to_string()),
            "series left for a deleted tenant"
        );
    });
}

#[test]
fn metrics_every_dashboard_query_names_a_live_series() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let org = api.org(&op, "Dash", "10.70.0.0/16").await;
        let id = org["id"].as_str().unwrap();
        api.machine(&op, id, "peer").await;
        let r = api
            .call("POST", &format!("/api/v1/orgs/{id}/policies"), Some(&op), Some(json!({"action": "deny", "src": "any", "dst": "any", "protocol": "udp", "ports": "9"})))
            .await;
        assert_eq!(r.status, 201);
        // A restart, so the restart counter exists too.
        let actor = h.ctl.tenant_actor(id.parse().unwrap()).await.unwrap();
        actor.kill();
        eventually(Duration::from_secs(5), "restart", || async {
            h.ctl
                .tenant_actor(id.parse().unwrap())
                .await
                .ok()
                .filter(|a| a.get_id() != actor.get_id())
        })
        .await;
        h.ctl.sync(id.parse().unwrap()).await.unwrap();
        let text = scrape(&h).await;

        let dashboard: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string("grafana/dashboards/meshwg.json").unwrap(),
        )
        .expect("dashboard JSON parses");
        let mut exprs = Vec::new();
        for p in dashboard["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                exprs.push(t["expr"].as_str().unwrap().to_string());
            }
        }
        exprs.push(
            dashboard["templating"]["list"][1]["definition"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        let mut names = std::collections::BTreeSet::new();
        for e in &exprs {
            let mut rest = e.as_str();
            while let Some(i) = rest.find("meshwg_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                names.insert(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
        assert!(names.len() >= 10, "{names:?}");
        for name in &names {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name} "))),
                "{name} is queried by the dashboard but absent from /metrics"
            );
        }
        for prov in [
            "grafana/provisioning/datasources/prometheus.yaml",
            "grafana/provisioning/dashboards/meshwg.yaml",
        ] {
            assert!(std::fs::metadata(prov).is_ok(), "{prov}");
        }
        let _ = Arc::strong_count(&api.app);
    });
}

#[test]
fn metrics_egress_repair_by_a_change_triggered_run_is_counted() {
    // No event, poll or full check within the test: only the sync a change triggers can repair.
    let hour = Duration::from_secs(3600);
    let observer = meshwg::actors::Observer {
        poll: None,
        full: hour,
        counters: hour,
        events: false,
    };
    run_observed(observer, |h| async move {
        let org = h.tenant("Egress", "10.71.0.0/24").await;
        let names = h.names(&org);
        ns(
            &names.netns,
            &["ip", "route", "add", "default", "dev", "wg0"],
        );
        assert!(!scrape(&h).await.contains("meshwg_egress_guard 1"));
        // Adding a machine reconciles; it also removes the route, and that is drift.
        h.machine(&org, "m", &[]).await;
        assert_eq!(ns(&names.netns, &["ip", "route", "show", "default"]), "");
        let text = scrape(&h).await;
        assert!(
            text.contains(&format!(
                "meshwg_reconcile_repairs_total{{tenant=\"{}\",kind=\"delete_route\"}} 1",
                org.id
            )),
            "{text}"
        );
        assert!(text.contains("meshwg_egress_guard 1"));
        // The machine's own peer is the change, not drift.
        assert!(
            text.contains(&format!(
                "meshwg_reconcile_repairs_total{{tenant=\"{}\",kind=\"set_peers\"}} 0",
                org.id
            )),
            "{text}"
        );
    });
}

/// The distinct `method` label values of the HTTP request series.
fn http_methods(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("meshwg_http_requests_total{"))
        .filter_map(|l| Some(l.split("method=\"").nth(1)?.split('"').next()?.to_string()))
        .collect()
}

/// A random method token of 3 to 12 capital letters.
fn random_method() -> String {
    let mut b = [0u8; 13];
    getrandom::fill(&mut b).unwrap();
    let len = 3 + usize::from(b[0] % 10);
    b[1..=len].iter().map(|x| (b'A' + x % 26) as char).collect()
}

#[test]
fn metrics_random_methods_add_no_series() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let send = |method: String| {
            let api = api.clone();
            async move {
                let r = warp::test::request()
                    .method(&method)
                    .path("/api/v1/orgs")
                    .remote_addr("198.51.100.3:1".parse().unwrap());
                api.raw(r).await.status
            }
        };
        // One unknown method first: whatever series it makes is the one all others share.
        assert_eq!(send(random_method()).await, 405);
        let before = scrape(&h).await;
        // Only this test sends requests that match no route.
        let count = |t: &str| {
            t.lines()
                .filter(|l| l.starts_with("meshwg_http_") && l.contains("route=\"unmatched\""))
                .count()
        };
        for _ in 0..1000 {
            let status = send(random_method()).await;
            assert!(status.is_client_error(), "{status}");
        }
        let after = scrape(&h).await;
        assert_eq!(
            count(&after),
            count(&before),
            "series added by random methods"
        );
        let known = [
            "GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS", "other",
        ];
        let methods = http_methods(&after);
        assert!(
            methods.iter().all(|m| known.contains(&m.as_str())),
            "method label values: {methods:?}"
        );
    });
}
