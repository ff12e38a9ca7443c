//! The timeline, with the kernel as the oracle (needs root; see common/mod.rs): drift made by
//! hand — the tenant's namespace deleted, its ACL chain flushed — is repaired by the reconciler
//! and shows in `GET …/timeline` within seconds, merged with the audit log; identical repairs
//! within 60 s are one entry with a count; only the operator sees the kernel detail; deleting
//! the org deletes its events.

mod common;

use common::api::{Api, Client as User};
use common::*;
use serde_json::Value;
use std::time::Duration;

async fn timeline(api: &Api, who: &User, org: &str) -> Vec<Value> {
    let r = api
        .call(
            "GET",
            &format!("/api/v1/orgs/{org}/timeline?limit=500"),
            Some(who),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["entries"].as_array().unwrap().clone()
}

/// Waits until the timeline has a repair whose summary names `what` (and whose count is at
/// least `count`); returns it.
async fn repair_shown(api: &Api, who: &User, org: &str, what: &str, count: i64) -> Value {
    let (found, took) = eventually(
        Duration::from_secs(10),
        &format!("timeline shows {what} ×{count}"),
        || async {
            timeline(api, who, org).await.into_iter().find(|e| {
                e["kind"] == "repair"
                    && e["summary"].as_str().unwrap_or("").contains(what)
                    && e["count"].as_i64() >= Some(count)
            })
        },
    )
    .await;
    eprintln!("{what} ×{count} in the timeline after {took:?}");
    found
}

#[test]
fn kernel_timeline_shows_repairs_of_a_deleted_namespace_and_a_flushed_chain() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let (org, admin) = api.org_with_admin(&op, "Timeline", "10.74.0.0/16").await;
        let names = h.names(&h.org_row(&org).await);
        let member = api
            .user(&admin, &org, "member@timeline.test", "member")
            .await;
        api.machine(&admin, &org, "laptop").await;
        let before = timeline(&api, &member, &org).await;
        assert!(
            before.iter().all(|e| e["source"] == "audit"),
            "nothing was repaired yet: {before:?}"
        );
        assert!(before.iter().any(|e| e["kind"] == "machine.create"
            && e["summary"] == "machine.create laptop"
            && e["actor"] == "admin@timeline.test"));

        // The namespace deleted by hand: recreated, and said so.
        sh(&["ip", "netns", "del", &names.netns]);
        let e = repair_shown(&api, &member, &org, "namespace recreated", 1).await;
        assert_eq!(e["source"], "reconciler");
        assert!(
            e.get("detail").is_none(),
            "a member sees kernel detail: {e}"
        );
        let e = repair_shown(&api, &op, &org, "namespace recreated", 1).await;
        assert!(e["detail"].as_str().unwrap().contains("CreateNetns"), "{e}");

        // The chain flushed by hand, twice within a minute: one entry counted twice.
        ns(&names.netns, &["iptables", "-F", "MWG-ACL"]);
        let e = repair_shown(&api, &admin, &org, "Repaired: firewall rules restored", 1).await;
        assert!(e.get("detail").is_none());
        ns(&names.netns, &["iptables", "-F", "MWG-ACL"]);
        let e = repair_shown(&api, &op, &org, "Repaired: firewall rules restored", 2).await;
        assert!(
            e["detail"].as_str().unwrap().contains("ApplyFirewall"),
            "{e}"
        );
        assert!(e["first_at"].as_str().unwrap() < e["at"].as_str().unwrap());
        let all = timeline(&api, &op, &org).await;
        let flushes = all
            .iter()
            .filter(|e| e["summary"] == "Repaired: firewall rules restored")
            .count();
        assert_eq!(flushes, 1, "{all:?}");
        // Newest first, and paged by `before`.
        let ats: Vec<&str> = all.iter().map(|e| e["at"].as_str().unwrap()).collect();
        assert!(ats.windows(2).all(|w| w[0] >= w[1]), "{ats:?}");
        let r = api
            .call(
                "GET",
                &format!("/api/v1/orgs/{org}/timeline?limit=2"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.body["entries"].as_array().unwrap().len(), 2);
        let cursor = r.body["next_cursor"].as_str().unwrap().to_string();
        let q =
            serde_urlencoded::to_string([("before", cursor.as_str()), ("limit", "500")]).unwrap();
        let r = api
            .call(
                "GET",
                &format!("/api/v1/orgs/{org}/timeline?{q}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["entries"].as_array().unwrap().len(), all.len() - 2);
        let r = api
            .call(
                "GET",
                &format!("/api/v1/orgs/{org}/timeline?before=yesterday"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.status, 400);

        // Another org's users do not see it; deleting the org deletes its events.
        let (_, other_admin) = api.org_with_admin(&op, "Other", "10.75.0.0/16").await;
        let r = api
            .call(
                "GET",
                &format!("/api/v1/orgs/{org}/timeline"),
                Some(&other_admin),
                None,
            )
            .await;
        assert_eq!(r.status, 404);
        let id: uuid::Uuid = org.parse().unwrap();
        let conn = h.pool.get().await.unwrap();
        let count = || async {
            conn.query_one(
                "SELECT count(*) FROM reconcile_events WHERE org_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        };
        assert!(count().await >= 2);
        let r = api
            .call("DELETE", &format!("/api/v1/orgs/{org}"), Some(&op), None)
            .await;
        assert_eq!(r.status, 204, "{:?}", r.body);
        assert_eq!(count().await, 0);
    });
}

/// The org's invariants as the API gives them to `who`, by check id.
async fn invariants(
    api: &Api,
    who: &User,
    org: &str,
) -> (Value, std::collections::BTreeMap<String, Value>) {
    let r = api
        .call(
            "GET",
            &format!("/api/v1/orgs/{org}/invariants"),
            Some(who),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let checks = r.body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_string(), c.clone()))
        .collect();
    (r.body, checks)
}

/// Waits until every check holds and each of `broken` was found broken after `since` (an RFC
/// 3339 time); returns the checks.
async fn repaired(
    api: &Api,
    who: &User,
    org: &str,
    broken: &[&str],
    since: &str,
) -> std::collections::BTreeMap<String, Value> {
    let (checks, took) = eventually(
        Duration::from_secs(10),
        &format!("{broken:?} broken and repaired"),
        || async {
            let (_, checks) = invariants(api, who, org).await;
            let all_hold = checks.values().all(|c| c["pass"] == true);
            let seen = broken.iter().all(|id| {
                checks[*id]["last_failed_at"]
                    .as_str()
                    .is_some_and(|t| t > since)
            });
            (all_hold && seen).then_some(checks)
        },
    )
    .await;
    eprintln!("{broken:?} repaired and shown after {took:?}");
    checks
}

#[test]
fn kernel_invariants_hold_and_record_each_breakage_the_reconciler_repaired() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let (org, admin) = api.org_with_admin(&op, "Invariants", "10.76.0.0/16").await;
        let names = h.names(&h.org_row(&org).await);
        let member = api
            .user(&admin, &org, "member@invariants.test", "member")
            .await;
        let laptop = api.machine(&admin, &org, "laptop").await;
        let vm1 = h.client(
            1,
            &meshwg::secret::Secret::new(laptop["config"].as_str().unwrap().to_string()),
        );
        eventually(
            Duration::from_secs(20),
            "laptop reaches the hub",
            || async { vm1.ping("10.76.0.1", 1).then_some(()) },
        )
        .await;

        // Everything holds, nothing was broken; members see no kernel detail, the operator does.
        let (body, checks) = invariants(&api, &member, &org).await;
        assert!(
            body["verified_at"].is_string() && body["unverified"] == false,
            "{body}"
        );
        assert_eq!(checks.len(), 7);
        for (id, c) in &checks {
            assert_eq!(c["pass"], true, "{id}: {c}");
            assert!(c["last_failed_at"].is_null(), "{id}: {c}");
            assert!(c.get("detail").is_none(), "{id}: {c}");
        }
        let (_, checks) = invariants(&api, &op, &org).await;
        assert!(checks["links"]["detail"].as_str().unwrap().contains("wg0"));
        assert!(
            checks["hub_key"]["detail"]
                .as_str()
                .unwrap()
                .starts_with("opens")
        );
        assert_eq!(checks["allowed_ips"]["detail"], "1 peers");

        // A way out by hand — NAT, a default route, another link — is each found and undone.
        let t0 = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
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
        ns(
            &names.netns,
            &["ip", "route", "add", "default", "dev", "wg0"],
        );
        ns(
            &names.netns,
            &[
                "ip", "link", "add", "rogue0", "type", "veth", "peer", "name", "rogue1",
            ],
        );
        let checks = repaired(&api, &member, &org, &["nat", "routes", "links"], &t0).await;
        for id in ["forward", "ipv6", "hub_key"] {
            assert!(
                checks[id]["last_failed_at"].is_null(),
                "{id}: {:?}",
                checks[id]
            );
        }
        // The chain flushed.
        let t1 = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        ns(&names.netns, &["iptables", "-F", "MWG-ACL"]);
        let checks = repaired(&api, &member, &org, &["forward"], &t1).await;
        assert!(checks["ipv6"]["last_failed_at"].is_null());
        // The namespace deleted: every kernel promise was broken, and holds again.
        let t2 = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        sh(&["ip", "netns", "del", &names.netns]);
        repaired(
            &api,
            &admin,
            &org,
            &["forward", "links", "nat", "routes", "ipv6", "allowed_ips"],
            &t2,
        )
        .await;
        // The timeline recorded the broken observations the checks were repaired from.
        let shown = timeline(&api, &member, &org).await;
        for what in [
            "NAT rules removed",
            "route removed",
            "foreign link removed",
            "namespace recreated",
        ] {
            assert!(
                shown
                    .iter()
                    .any(|e| e["summary"].as_str().unwrap_or("").contains(what)),
                "{what} not in {shown:?}"
            );
        }
        eventually(
            Duration::from_secs(20),
            "laptop reaches the hub again",
            || async { vm1.ping("10.76.0.1", 1).then_some(()) },
        )
        .await;
    });
}

#[test]
fn kernel_timeline_shows_an_actor_restart() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let (org, admin) = api.org_with_admin(&op, "Restart", "10.77.0.0/16").await;
        let id: uuid::Uuid = org.parse().unwrap();
        h.ctl.tenant_actor(id).await.unwrap().kill();
        let (e, _) = eventually(
            Duration::from_secs(10),
            "restart in the timeline",
            || async {
                timeline(&api, &admin, &org)
                    .await
                    .into_iter()
                    .find(|e| e["kind"] == "restart")
            },
        )
        .await;
        assert_eq!(e["source"], "reconciler");
        assert_eq!(e["summary"], "The hub's actor was restarted");
        assert!(e.get("detail").is_none());
        let shown = timeline(&api, &op, &org).await;
        let e = shown.iter().find(|e| e["kind"] == "restart").unwrap();
        assert_eq!(e["detail"], "attempt 1");
    });
}
