//! Bulk actions, with the kernel as the oracle (needs root; see common/mod.rs):
//! `POST …/machines/batch` tags, untags or deletes many machines in one transaction and one
//! reconcile — all of them or, if any id is not the org's, none.
//!
//! ```text
//!  c1 "one" ── hub (default deny; allow tag:web → any) ── c2 "two"
//!  + 50 machines without clients, deleted in one batch
//! ```

mod common;

use common::api::{Api, Client as User};
use common::*;
use meshwg::names::TenantNames;
use meshwg::secret::Secret;
use serde_json::{Value, json};
use std::time::Duration;

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// The public keys the hub has as peers.
fn hub_keys(names: &TenantNames) -> Vec<String> {
    wg(names, "show", &["peers"])
        .lines()
        .map(str::to_string)
        .collect()
}

async fn batch(api: &Api, who: &User, org: &str, body: Value) -> common::api::Reply {
    api.call(
        "POST",
        &format!("/api/v1/orgs/{org}/machines/batch"),
        Some(who),
        Some(body),
    )
    .await
}

async fn audit_count(api: &Api, who: &User, org: &str, action: &str) -> usize {
    let r = api
        .call(
            "GET",
            &format!("/api/v1/orgs/{org}/audit?action={action}&limit=1000"),
            Some(who),
            None,
        )
        .await;
    r.body["entries"].as_array().unwrap().len()
}

#[test]
fn kernel_batch_tags_change_what_passes_deletes_fifty_peers_and_foreign_ids_change_nothing() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let (org, admin) = api.org_with_admin(&op, "Batch", "10.72.0.0/16").await;
        let row = h.org_row(&org).await;
        let names = h.names(&row);
        let one = api.machine(&admin, &org, "one").await;
        let two = api.machine(&admin, &org, "two").await;
        let one_id = s(&one["machine"]["id"]).to_string();
        let one_key = s(&one["machine"]["public_key"]).to_string();
        let two_addr = s(&two["machine"]["address"]).to_string();
        let vm1 = h.client(1, &Secret::new(s(&one["config"]).to_string()));
        let _vm2 = h.client(2, &Secret::new(s(&two["config"]).to_string()));
        eventually(Duration::from_secs(20), "one reaches two", || async {
            vm1.ping(&two_addr, 1).then_some(())
        })
        .await;

        // Default deny; only tag:web may start connections.
        let r = api
            .call(
                "PATCH",
                &format!("/api/v1/orgs/{org}"),
                Some(&admin),
                Some(json!({"default_action": "deny"})),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let r = api
            .call(
                "POST",
                &format!("/api/v1/orgs/{org}/policies"),
                Some(&admin),
                Some(json!({"action": "allow", "src": {"tag": "web"}, "dst": "any"})),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        assert!(!vm1.ping(&two_addr, 2), "one passes without the tag");

        // Tag added in a batch: one's pings pass; removed: they stop.
        let r = batch(
            &api,
            &admin,
            &org,
            json!({"action": "tag_add", "ids": [one_id, one_id], "tag": "web"}),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["count"], 1, "duplicate ids count once");
        assert_eq!(r.body["machines"][0]["tags"], json!(["web"]));
        assert!(vm1.ping(&two_addr, 2), "tag added, yet one is refused");
        let r = batch(
            &api,
            &admin,
            &org,
            json!({"action": "tag_remove", "ids": [one_id], "tag": "web"}),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["machines"][0]["tags"], json!([]));
        assert!(!vm1.ping(&two_addr, 2), "tag removed, yet one passes");
        assert_eq!(audit_count(&api, &admin, &org, "machine.update").await, 2);

        // One id of another org: 404, and nothing changed (tags, rows, peers, audit).
        let (other, other_admin) = api.org_with_admin(&op, "Other", "10.73.0.0/16").await;
        let theirs = api.machine(&other_admin, &other, "theirs").await;
        let theirs_id = s(&theirs["machine"]["id"]).to_string();
        for body in [
            json!({"action": "tag_add", "ids": [one_id, theirs_id], "tag": "web"}),
            json!({"action": "delete", "ids": [one_id, theirs_id]}),
            json!({"action": "delete", "ids": [one_id, uuid::Uuid::new_v4()]}),
        ] {
            let r = batch(&api, &admin, &org, body).await;
            assert_eq!(r.status, 404, "{:?}", r.body);
            assert!(s(&r.body["error"]["message"]).contains("nothing was changed"));
        }
        let r = api
            .call(
                "GET",
                &format!("/api/v1/orgs/{org}/machines/{one_id}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.body["tags"], json!([]));
        assert!(hub_keys(&names).contains(&one_key));
        assert!(!vm1.ping(&two_addr, 2));
        let r = api
            .call(
                "GET",
                &format!("/api/v1/orgs/{other}/machines/{theirs_id}"),
                Some(&other_admin),
                None,
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["tags"], json!([]));
        assert_eq!(audit_count(&api, &admin, &org, "machine.update").await, 2);
        assert_eq!(audit_count(&api, &admin, &org, "machine.delete").await, 0);

        // Refused before anything is read: rights and input.
        let member = api.user(&admin, &org, "member@batch.test", "member").await;
        let r = batch(
            &api,
            &member,
            &org,
            json!({"action": "delete", "ids": [one_id]}),
        )
        .await;
        assert_eq!(r.status, 403, "{:?}", r.body);
        let many: Vec<String> = (0..1001)
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        for body in [
            json!({"action": "delete", "ids": []}),
            json!({"action": "delete", "ids": many}),
            json!({"action": "delete", "ids": [one_id], "tag": "web"}),
            json!({"action": "tag_add", "ids": [one_id]}),
            json!({"action": "tag_add", "ids": [one_id], "tag": "no spaces"}),
            json!({"action": "rename", "ids": [one_id]}),
            json!({"action": "delete", "ids": ["not-a-uuid"]}),
        ] {
            let r = batch(&api, &admin, &org, body.clone()).await;
            assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        }
        assert!(hub_keys(&names).contains(&one_key));

        // Fifty real peers deleted in one batch: none left in `wg show`, rows gone, fifty
        // audit entries.
        let mut tasks = Vec::new();
        for i in 0..50 {
            let (api, admin, org) = (api.clone(), admin.clone(), org.clone());
            tasks.push(tokio::spawn(async move {
                api.machine(&admin, &org, &format!("bulk{i}")).await
            }));
        }
        let mut ids = Vec::new();
        let mut keys = Vec::new();
        for t in tasks {
            let m = t.await.unwrap();
            ids.push(s(&m["machine"]["id"]).to_string());
            keys.push(s(&m["machine"]["public_key"]).to_string());
        }
        let before = hub_keys(&names);
        assert!(
            keys.iter().all(|k| before.contains(k)),
            "not all fifty are peers"
        );
        assert_eq!(before.len(), 52);
        let r = batch(&api, &admin, &org, json!({"action": "delete", "ids": ids})).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["count"], 50);
        let after = hub_keys(&names);
        assert!(
            !keys.iter().any(|k| after.contains(k)),
            "deleted peers left: {after:?}"
        );
        assert_eq!(after.len(), 2, "{after:?}");
        let conn = h.pool.get().await.unwrap();
        let left: i64 = conn
            .query_one(
                "SELECT count(*) FROM machines WHERE org_id = $1",
                &[&row.id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 2);
        assert_eq!(audit_count(&api, &admin, &org, "machine.delete").await, 50);
        // The two survivors still talk (default deny: add the tag back).
        let r = batch(
            &api,
            &admin,
            &org,
            json!({"action": "tag_add", "ids": [one_id], "tag": "web"}),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert!(vm1.ping(&two_addr, 2));
    });
}
