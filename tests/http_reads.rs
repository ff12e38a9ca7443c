//! The read path of the API (root): pages with cursors in a stable order on every list, a bad
//! `limit` or `cursor` refused with a 400 that names it, entity tags and `304 Not Modified`
//! until something changes, reads that see the caller's own writes at once and other
//! processes' writes soon after, per-org quotas that parallel creations cannot exceed, and
//! reads that answer while the tenant's actor is stuck in a reconcile.

mod common;

use common::api::{Api, Client};
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

/// Every item of a paged list, following `next_cursor` with `limit`; also the page sizes.
async fn all_pages(api: &Api, who: &Client, path: &str, key: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let url = match &cursor {
            None => format!("{path}?limit={limit}"),
            Some(c) => format!("{path}?limit={limit}&cursor={c}"),
        };
        let r = api.call("GET", &url, Some(who), None).await;
        assert_eq!(r.status, 200, "{url}: {:?}", r.body);
        let page = r.body[key].as_array().unwrap();
        assert!(page.len() <= limit, "{url}: {} items", page.len());
        items.extend(page.iter().cloned());
        match r.body["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(page.len(), limit, "only a full page has a next one");
                cursor = Some(c.to_string());
            }
            None => {
                assert!(r.body["next_cursor"].is_null(), "{:?}", r.body);
                return items;
            }
        }
    }
    panic!("{path}: more than 100 pages");
}

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| s(&i["id"]).to_string()).collect()
}

/// A GET with `If-None-Match`.
async fn get_if(api: &Api, who: &Client, path: &str, etag: &str) -> common::api::Reply {
    api.send(
        "GET",
        path,
        Some(who),
        None,
        "192.0.2.10:40000".parse().unwrap(),
        &[("if-none-match", etag)],
    )
    .await
}

fn etag(r: &common::api::Reply) -> String {
    r.headers["etag"].to_str().unwrap().to_string()
}

#[test]
fn api_every_list_pages_with_cursors_in_a_stable_order() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let (id, admin) = api.org_with_admin(&op, "Pages", "10.62.0.0/24").await;
        for i in 0..3 {
            api.user(&op, &id, &format!("u{i}@pages.test"), "member")
                .await;
        }
        let mut made = Vec::new();
        for i in 0..7 {
            made.push(api.machine(&admin, &id, &format!("m{i}")).await);
        }
        for prio in [300, 100, 200, 100, 50] {
            let body = json!({"action": "allow", "src": "any", "dst": "any", "priority": prio});
            let r = api
                .call(
                    "POST",
                    &format!("/api/v1/orgs/{id}/policies"),
                    Some(&admin),
                    Some(body),
                )
                .await;
            assert_eq!(r.status, 201, "{:?}", r.body);
        }
        let base = format!("/api/v1/orgs/{id}");

        // Machines: by address, every one exactly once, whatever the page size.
        let whole = api
            .call("GET", &format!("{base}/machines"), Some(&admin), None)
            .await;
        assert_eq!(whole.body["machines"].as_array().unwrap().len(), 7);
        assert!(
            whole.body["next_cursor"].is_null(),
            "default limit holds all 7"
        );
        for limit in [1, 3, 7] {
            let got = all_pages(&api, &admin, &format!("{base}/machines"), "machines", limit).await;
            assert_eq!(ids(&got), ids(whole.body["machines"].as_array().unwrap()));
        }
        let addrs: Vec<std::net::Ipv4Addr> = whole.body["machines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| s(&m["address"]).parse().unwrap())
            .collect();
        assert!(addrs.windows(2).all(|w| w[0] < w[1]), "{addrs:?}");

        // Keyset: the item a cursor points at may go; the next page still follows it.
        let first = api
            .call(
                "GET",
                &format!("{base}/machines?limit=3"),
                Some(&admin),
                None,
            )
            .await;
        let cursor = s(&first.body["next_cursor"]).to_string();
        let third = s(&first.body["machines"][2]["id"]).to_string();
        let fourth = s(&whole.body["machines"][3]["id"]).to_string();
        let d = api
            .call(
                "DELETE",
                &format!("{base}/machines/{third}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(d.status, 204);
        let next = api
            .call(
                "GET",
                &format!("{base}/machines?limit=3&cursor={cursor}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(s(&next.body["machines"][0]["id"]), fourth);

        // Policies: evaluation order (priority, then creation), across pages.
        let policies = all_pages(&api, &admin, &format!("{base}/policies"), "policies", 2).await;
        let prios: Vec<i64> = policies
            .iter()
            .map(|p| p["priority"].as_i64().unwrap())
            .collect();
        assert_eq!(prios, vec![50, 100, 100, 200, 300]);
        let one_page = api
            .call("GET", &format!("{base}/policies"), Some(&admin), None)
            .await;
        assert_eq!(
            ids(&policies),
            ids(one_page.body["policies"].as_array().unwrap())
        );

        // Users: by creation.
        let users = all_pages(&api, &admin, &format!("{base}/users"), "users", 2).await;
        let emails: Vec<&str> = users.iter().map(|u| s(&u["email"])).collect();
        assert_eq!(
            emails,
            vec![
                "admin@pages.test",
                "u0@pages.test",
                "u1@pages.test",
                "u2@pages.test"
            ]
        );

        // Audit: newest first; cursor and the older `before` agree.
        let entries = all_pages(&api, &admin, &format!("{base}/audit"), "entries", 4).await;
        let nums: Vec<i64> = entries.iter().map(|e| e["id"].as_i64().unwrap()).collect();
        assert!(nums.windows(2).all(|w| w[0] > w[1]), "{nums:?}");
        // 7 machines, 4 users and 5 policies made, 1 machine deleted, the org, logins.
        assert!(nums.len() > 17, "{} entries", nums.len());
        let before = api
            .call(
                "GET",
                &format!("{base}/audit?limit=4&before={}", nums[3]),
                Some(&admin),
                None,
            )
            .await;
        let again: Vec<i64> = before.body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect();
        assert_eq!(again, nums[4..8].to_vec());
    });
}

#[test]
fn api_a_bad_limit_or_cursor_is_a_400_that_names_it() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let org = api.org(&op, "Bad pages", "10.63.0.0/24").await;
        let id = s(&org["id"]).to_string();
        api.machine(&op, &id, "m0").await;
        api.machine(&op, &id, "m1").await;
        let base = format!("/api/v1/orgs/{id}");
        let machine_cursor = s(&api
            .call("GET", &format!("{base}/machines?limit=1"), Some(&op), None)
            .await
            .body["next_cursor"])
        .to_string();
        for list in ["machines", "policies", "users", "audit"] {
            for q in ["limit=0", "limit=1001", "limit=abc", "limit=-1", "limit="] {
                let r = api
                    .call("GET", &format!("{base}/{list}?{q}"), Some(&op), None)
                    .await;
                assert_eq!(
                    (r.status.as_u16(), r.code()),
                    (400, "validation"),
                    "{list}?{q}"
                );
                let msg = s(&r.body["error"]["message"]);
                assert!(msg.starts_with("limit: ") && msg.contains("1000"), "{msg}");
            }
            let foreign = if list == "machines" {
                "bWFAAAAA".to_string()
            } else {
                machine_cursor.clone()
            };
            for c in ["garbage!", "AAAA", foreign.as_str(), &"A".repeat(300)] {
                let r = api
                    .call("GET", &format!("{base}/{list}?cursor={c}"), Some(&op), None)
                    .await;
                assert_eq!(
                    (r.status.as_u16(), r.code()),
                    (400, "validation"),
                    "{list} {c}"
                );
                assert!(
                    s(&r.body["error"]["message"]).starts_with("cursor: "),
                    "{:?}",
                    r.body
                );
            }
        }
        let both = api
            .call(
                "GET",
                &format!("{base}/audit?before=5&cursor={}", "YQEAAAAAAAAABQ"),
                Some(&op),
                None,
            )
            .await;
        assert_eq!(both.status, 400, "{:?}", both.body);
        assert!(s(&both.body["error"]["message"]).contains("either cursor or before"));
        // The largest page is allowed.
        let max = api
            .call(
                "GET",
                &format!("{base}/machines?limit=1000"),
                Some(&op),
                None,
            )
            .await;
        assert_eq!(max.status, 200);
    });
}

#[test]
fn api_lists_and_status_answer_304_until_something_changes() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let (id, admin) = api.org_with_admin(&op, "Tags", "10.64.0.0/24").await;
        let m = api.machine(&admin, &id, "laptop").await;
        let mid = s(&m["machine"]["id"]).to_string();
        let base = format!("/api/v1/orgs/{id}");

        // Every list and the status carry a tag; sent back, it is a 304 without a body (the
        // tenant's observation may move between two reads, so try until it holds still).
        for path in ["machines", "policies", "users", "audit", "status"] {
            let path = format!("{base}/{path}");
            eventually(
                Duration::from_secs(20),
                &format!("304 on {path}"),
                || async {
                    let r = api.call("GET", &path, Some(&admin), None).await;
                    assert_eq!(r.status, 200, "{path}");
                    assert_eq!(r.headers["cache-control"], "private, no-cache");
                    let again = get_if(&api, &admin, &path, &etag(&r)).await;
                    (again.status == 304).then(|| {
                        assert!(again.raw.is_empty(), "{path}: 304 with a body");
                        assert_eq!(etag(&again), etag(&r));
                    })
                },
            )
            .await;
        }
        let orgs = api.call("GET", "/api/v1/orgs", Some(&op), None).await;
        assert_eq!(
            get_if(&api, &op, "/api/v1/orgs", &etag(&orgs)).await.status,
            304
        );

        // A stale tag gets the new list at once: the caller's own changes show immediately,
        // also those that send no database notification (a new machine's confirmation).
        let list = format!("{base}/machines");
        let before = api.call("GET", &list, Some(&admin), None).await;
        let tag = etag(&before);
        let second = api.machine(&admin, &id, "phone").await;
        let r = get_if(&api, &admin, &list, &tag).await;
        assert_eq!(r.status, 200);
        assert_ne!(etag(&r), tag);
        let names: BTreeSet<&str> = r.body["machines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| s(&m["name"]))
            .collect();
        assert_eq!(names, BTreeSet::from(["laptop", "phone"]));
        let tag = etag(&r);
        let p = api
            .call(
                "PATCH",
                &format!("{base}/machines/{mid}"),
                Some(&admin),
                Some(json!({"name": "desk"})),
            )
            .await;
        assert_eq!(p.status, 200);
        let r = get_if(&api, &admin, &list, &tag).await;
        assert_eq!(r.status, 200);
        assert_eq!(s(&r.body["machines"][0]["name"]), "desk");
        let one = api
            .call("GET", &format!("{base}/machines/{mid}"), Some(&admin), None)
            .await;
        assert_eq!(s(&one.body["name"]), "desk");
        let gone = s(&second["machine"]["id"]).to_string();
        let d = api
            .call(
                "DELETE",
                &format!("{base}/machines/{gone}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(d.status, 204);
        let r = api.call("GET", &list, Some(&admin), None).await;
        assert_eq!(r.body["machines"].as_array().unwrap().len(), 1);
        let missing = api
            .call(
                "GET",
                &format!("{base}/machines/{gone}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(missing.status, 404);

        // A change made by another process (SQL) reaches the list through its notification.
        let tag = etag(&r);
        let conn = h.pool.get().await.unwrap();
        conn.execute(
            "UPDATE machines SET name = 'renamed by sql' WHERE id = $1::text::uuid",
            &[&mid],
        )
        .await
        .unwrap();
        eventually(
            Duration::from_secs(10),
            "the list sees the SQL rename",
            || async {
                let r = get_if(&api, &admin, &list, &tag).await;
                (r.status == 200 && s(&r.body["machines"][0]["name"]) == "renamed by sql")
                    .then_some(())
            },
        )
        .await;

        // Another tenant's list is a 404, with or without a tag or a cursor.
        let other = api.org(&op, "Other", "10.65.0.0/24").await;
        let path = format!("/api/v1/orgs/{}/machines", s(&other["id"]));
        assert_eq!(get_if(&api, &admin, &path, "*").await.status, 404);
    });
}

#[test]
fn api_parallel_creations_never_exceed_the_org_quotas() {
    let quotas = meshwg::actors::Quotas {
        machines: 3,
        policies: 2,
        users: 2,
    };
    run_with_quotas(quotas, |h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let org = api.org(&op, "Quota", "10.66.0.0/24").await;
        let id = s(&org["id"]).to_string();
        let base = format!("/api/v1/orgs/{id}");
        let cases = [
            ("machines", 3, "MAX_MACHINES_PER_ORG"),
            ("policies", 2, "MAX_POLICIES_PER_ORG"),
            ("users", 2, "MAX_USERS_PER_ORG"),
        ];
        for (what, max, var) in cases {
            let calls = (0..8).map(|i| {
                let body = match what {
                    "machines" => json!({"name": format!("m{i}")}),
                    "policies" => json!({"action": "deny", "src": "any", "dst": "any", "priority": i}),
                    _ => json!({"email": format!("u{i}@quota.test"), "password": "password123", "role": "member"}),
                };
                let (api, op, path) = (api.clone(), op.clone(), format!("{base}/{what}"));
                tokio::spawn(async move { api.call("POST", &path, Some(&op), Some(body)).await })
            });
            let mut created = 0;
            for call in calls {
                let r = call.await.unwrap();
                match r.status.as_u16() {
                    201 => created += 1,
                    409 => {
                        let msg = s(&r.body["error"]["message"]);
                        assert_eq!(msg, format!("an org has at most {max} {what} ({var})"));
                    }
                    other => panic!("{what}: {other} {:?}", r.body),
                }
            }
            assert_eq!(created, max, "{what}");
            let conn = h.pool.get().await.unwrap();
            let rows: i64 = conn
                .query_one(
                    &format!("SELECT count(*) FROM {what} WHERE org_id = $1::text::uuid"),
                    &[&id],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(rows, max as i64, "{what} rows");
            let listed = api
                .call("GET", &format!("{base}/{what}"), Some(&op), None)
                .await;
            assert_eq!(listed.body[what].as_array().unwrap().len(), max as usize);
        }
        // The kernel holds exactly the machines that were created.
        let status = api
            .call("GET", &format!("{base}/status"), Some(&op), None)
            .await;
        assert_eq!(status.body["peers"].as_array().unwrap().len(), 3);
        // Deleting one makes room for one more.
        let m = api
            .call("GET", &format!("{base}/machines"), Some(&op), None)
            .await;
        let first = s(&m.body["machines"][0]["id"]).to_string();
        let d = api
            .call(
                "DELETE",
                &format!("{base}/machines/{first}"),
                Some(&op),
                None,
            )
            .await;
        assert_eq!(d.status, 204);
        api.machine(&op, &id, "again").await;
    });
}

#[test]
fn api_reads_answer_while_the_tenant_is_stuck_in_a_reconcile() {
    if backend() != Backend::Userspace {
        eprintln!("the kernel backend has no daemon to stop; nothing to test");
        return;
    }
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let (id, admin) = api.org_with_admin(&op, "Busy", "10.67.0.0/24").await;
        api.machine(&admin, &id, "first").await;
        let org = meshwg::db::orgs::get(&h.pool, id.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        let pid = daemon_pid(&h, &h.names(&org)).to_string();
        let base = format!("/api/v1/orgs/{id}");

        // The hub's daemon stops answering: the tenant's next reconcile (a machine added)
        // waits on it for seconds. Reads of that tenant must not wait with it.
        sh(&["kill", "-STOP", &pid]);
        let adding = {
            let (api, admin, path) = (api.clone(), admin.clone(), format!("{base}/machines"));
            tokio::spawn(async move {
                api.call("POST", &path, Some(&admin), Some(json!({"name": "second"})))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !adding.is_finished(),
            "the addition waits for the stopped hub"
        );
        for path in ["machines", "status", "policies", "audit"] {
            let r = api
                .call("GET", &format!("{base}/{path}"), Some(&admin), None)
                .await;
            assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        }
        let status = api
            .call("GET", &format!("{base}/status"), Some(&admin), None)
            .await;
        assert!(
            !adding.is_finished(),
            "every read answered while the reconcile was still waiting on the hub"
        );
        assert!(status.body["peers"].is_array(), "{:?}", status.body);
        sh(&["kill", "-CONT", &pid]);
        let added = adding.await.unwrap();
        assert!(
            [201, 503].contains(&added.status.as_u16()),
            "{}: {:?}",
            added.status,
            added.body
        );
    });
}
