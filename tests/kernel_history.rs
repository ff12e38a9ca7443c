//! The short history against the kernel (root; see common/mod.rs): pings between two real
//! `wg-quick` clients show, through `GET /orgs/{org}/history`, as growth in the allowing
//! policy's packets series and in both peers' rx series; a policy no packet matched says
//! "never hit since"; Explain shows the deciding rule's last two steps; a deleted policy's
//! series goes with it. The harness samples every
//! second (its counters period), production every 15 s.
//!
//! ```text
//!  <p>-host ── br0 ──┬── <p>-c1  one  10.100.0.2   allow icmp one → two
//!   (controller, hub)└── <p>-c2  two  10.100.0.3   deny tcp/9 one → two (never hit)
//! ```

mod common;

use common::api::{Api, Client as ApiClient};
use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn history(api: &Api, who: &ApiClient, org: &str) -> Value {
    let r = api
        .call(
            "GET",
            &format!("/api/v1/orgs/{org}/history"),
            Some(who),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

fn sum(v: &Value) -> u64 {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .sum()
}

fn policy<'a>(h: &'a Value, id: &str) -> Option<&'a Value> {
    h["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy_id"] == id)
}

/// Asks until `ok` holds (the history samples once per step), for up to 40 s.
async fn until(api: &Api, who: &ApiClient, org: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40) * slowdown();
    loop {
        let h = history(api, who, org).await;
        if ok(&h) {
            return h;
        }
        assert!(Instant::now() < deadline, "history never showed it: {h:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[test]
fn kernel_history_shows_pings_as_policy_and_peer_series() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let org = h.tenant("History", "10.100.0.0/16").await;
        let id = org.id.to_string();
        let pair = h.pair(&org, [&[], &[]]).await;
        let two = pair.m2.address.to_string();
        let mut ids = Vec::new();
        for body in [
            json!({"name": "ping one to two", "action": "allow",
                "src": {"machine": pair.m1.id}, "dst": {"machine": pair.m2.id}, "protocol": "icmp"}),
            json!({"name": "no discard", "action": "deny",
                "src": {"machine": pair.m1.id}, "dst": {"machine": pair.m2.id},
                "protocol": "tcp", "ports": "9"}),
        ] {
            let r = api
                .call(
                    "POST",
                    &format!("/api/v1/orgs/{id}/policies"),
                    Some(&op),
                    Some(body),
                )
                .await;
            assert_eq!(r.status, 201, "{:?}", r.body);
            ids.push(r.body["id"].as_str().unwrap().to_string());
        }
        let (allow, unused) = (ids[0].clone(), ids[1].clone());
        // Both policies have a series before any ping (baselines are not growth).
        let before = until(&api, &op, &id, |h| {
            policy(h, &allow).is_some() && policy(h, &unused).is_some()
        })
        .await;
        assert_eq!(before["step_seconds"], 1, "{before:#}");
        assert_eq!(
            sum(&policy(&before, &allow).unwrap()["packets"]),
            0,
            "{before:#}"
        );

        const SENT: u64 = 10;
        assert!(pair.vm1.ping(&two, SENT as u32), "allowed ping passes");
        let machine = |h: &Value, m: uuid::Uuid| -> Option<Value> {
            h["machines"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["machine_id"] == m.to_string())
                .cloned()
        };
        let (m1, m2) = (pair.m1.id, pair.m2.id);
        let after = until(&api, &op, &id, |h| {
            policy(h, &allow).is_some_and(|p| sum(&p["packets"]) >= SENT)
                && machine(h, m1).is_some_and(|m| sum(&m["rx_bytes"]) > 0)
                && machine(h, m2).is_some_and(|m| sum(&m["rx_bytes"]) > 0)
        })
        .await;
        let p = policy(&after, &allow).unwrap();
        assert!(p["bytes"].as_array().unwrap().len() <= 120, "{p}");
        assert!(sum(&p["bytes"]) >= SENT * 84, "{p}");
        assert!(p["last_hit_at"].is_string(), "{p}");
        assert!(p["never_hit_since"].is_null(), "{p}");
        assert!(after["newest_at"].is_string(), "{after:#}");
        // The pings went through the hub both ways: it received from one and from two.
        let one = machine(&after, m1).unwrap();
        assert!(sum(&one["rx_bytes"]) >= SENT * 84, "{one}");
        assert_eq!(one["name"], pair.m1.name, "{one}");
        // The deny on tcp/9 matched nothing: never hit since its series began.
        let u = policy(&after, &unused).unwrap();
        assert_eq!(sum(&u["packets"]), 0, "{u}");
        assert!(u["last_hit_at"].is_null(), "{u}");
        assert_eq!(u["never_hit_since"], u["since"], "{u}");
        // The implicit default row has its series too.
        assert!(
            after["policies"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["kind"] == "default"),
            "{after:#}"
        );

        // Explain's deciding-rule counter carries the last two steps too ("30s" in
        // production; 2 s here) while pings flow, beside the total.
        let (from, target) = (pair.vm1.netns.clone(), two.clone());
        let pinging = std::thread::spawn(move || {
            let args = [
                "ping", "-n", "-q", "-c", "40", "-i", "0.2", "-W", "1", &target,
            ];
            ns_out(&from, &args).status.success()
        });
        let deadline = Instant::now() + Duration::from_secs(20) * slowdown();
        let recent = loop {
            let r = api
                .call(
                    "GET",
                    &format!("/api/v1/orgs/{id}/explain?src=one&dst=two&proto=icmp"),
                    Some(&op),
                    None,
                )
                .await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            let c = r.body["counter"].clone();
            assert_eq!(c["window"], "total", "{c}");
            if c["recent"]["packets"].as_u64().unwrap_or(0) > 0 {
                assert!(c["packets"].as_u64().unwrap() >= SENT, "{c}");
                break c["recent"].clone();
            }
            assert!(Instant::now() < deadline, "no recent packets: {c}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(recent["window"], "2s", "{recent}");
        assert!(recent["until"].is_string(), "{recent}");
        assert!(pinging.join().unwrap());

        // A deleted policy's series goes with it.        // A deleted policy's series goes with it.
        let r = api
            .call(
                "DELETE",
                &format!("/api/v1/orgs/{id}/policies/{unused}"),
                Some(&op),
                None,
            )
            .await;
        assert_eq!(r.status, 204, "{:?}", r.body);
        until(&api, &op, &id, |h| policy(h, &unused).is_none()).await;

        // Another tenant's admin cannot read it.
        let (other, admin) = api.org_with_admin(&op, "Other", "10.101.0.0/16").await;
        let r = api
            .call(
                "GET",
                &format!("/api/v1/orgs/{id}/history"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.status, 404, "{:?}", r.body);
        let _ = other;
    });
}
