//! Creations that lose PostgreSQL halfway end in a known state: nothing in the database, nothing
//! in the kernel, no actor that later builds it anyway (root). PostgreSQL is a private cluster
//! that the test really stops, at a step it holds the creation at with a lock.

mod common;
mod support;

use common::api::Api;
use common::*;
use serde_json::json;
use std::time::Duration;
use support::Cluster;

/// A connection of the test's own, to hold the lock that stops a creation at one step.
async fn gatekeeper(pg: &Cluster) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&pg.url("meshwg"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// Waits until some backend waits for a lock: the creation has reached the gate.
async fn at_the_gate(pg: &Cluster) {
    eventually(
        Duration::from_secs(30),
        "a backend waits at the gate",
        || async {
            (pg.psql("meshwg", "SELECT count(*) FROM pg_locks WHERE NOT granted") != "0")
                .then_some(())
        },
    )
    .await;
}

fn count(pg: &Cluster, sql: &str) -> i64 {
    pg.psql("meshwg", sql).parse().unwrap()
}

#[test]
fn partial_org_creation_that_loses_the_database_leaves_nothing() {
    run(|mut h| async move {
        let pg = Cluster::start_new(&h.world.prefix);
        support::use_cluster(&mut h, &pg).await;
        let api = Api::new(&h).await;
        let op = api.operator().await;
        // The gate: marking an org active waits for an advisory lock the test holds.
        pg.psql(
            "meshwg",
            "CREATE FUNCTION gate() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NEW; END $$; \
             CREATE TRIGGER gate BEFORE UPDATE ON orgs FOR EACH ROW \
             WHEN (NEW.state = 'active') EXECUTE FUNCTION gate()",
        );
        let gate = gatekeeper(&pg).await;
        gate.execute("SELECT pg_advisory_lock(4242)", &[])
            .await
            .unwrap();
        let create = {
            let (api, op) = (api.clone(), op.clone());
            tokio::spawn(async move {
                let body = json!({"name": "doomed", "cidr": "10.40.0.0/24"});
                api.call("POST", "/api/v1/orgs", Some(&op), Some(body))
                    .await
            })
        };
        at_the_gate(&pg).await;
        // Namespace, wg0 and rules are up; only the activation is missing.
        let kid: i64 = pg.psql("meshwg", "SELECT kid FROM orgs").parse().unwrap();
        let org: uuid::Uuid = pg.psql("meshwg", "SELECT id FROM orgs").parse().unwrap();
        let names = h.deps.prefix.tenant(kid).unwrap();
        assert!(
            netns_inode(&names.netns).is_some(),
            "the kernel side exists"
        );
        pg.stop();
        let r = create.await.unwrap();
        assert!(r.status.is_server_error(), "{} {:?}", r.status, r.body);
        // What needs no database is undone at once, while PostgreSQL is still down.
        eventually(Duration::from_secs(60), "namespace removed", || async {
            netns_inode(&names.netns).is_none().then_some(())
        })
        .await;
        pg.start();
        eventually(Duration::from_secs(60), "org row deleted", || async {
            (count(&pg, "SELECT count(*) FROM orgs") == 0).then_some(())
        })
        .await;
        // No actor is left to build it again.
        assert!(h.ctl.status(org).await.is_err(), "an actor still runs");
        h.ctl.sync(org).await.unwrap_err();
        assert!(netns_inode(&names.netns).is_none());
        assert_eq!(
            count(
                &pg,
                "SELECT count(*) FROM audit_log WHERE action = 'org.create'"
            ),
            0
        );
        h.ctl.shutdown().await;
    });
}

/// What a creation stopped by an outage left: the org, its kernel names, the row's id.
struct Left {
    api: Api,
    op: common::api::Client,
    org: uuid::Uuid,
    names: meshwg::names::TenantNames,
    row: String,
}

/// Creates a `table` row (POST to the org's `table` collection with `body`) while the test holds
/// an exclusive lock on `lock`, a table every reconcile reads: the row goes in, installing it in
/// the kernel waits. Then PostgreSQL stops, right there; the answer must be a 5xx. PostgreSQL
/// starts again, and the row must go away.
async fn create_through_an_outage(
    h: &mut Harness,
    pg: &Cluster,
    lock: &str,
    table: &str,
    body: serde_json::Value,
) -> Left {
    support::use_cluster(h, pg).await;
    let api = Api::new(h).await;
    let op = api.operator().await;
    let org = api.org(&op, "Acme", "10.41.0.0/24").await;
    let org: uuid::Uuid = org["id"].as_str().unwrap().parse().unwrap();
    let kid = meshwg::db::orgs::get(&h.pool, org)
        .await
        .unwrap()
        .unwrap()
        .kid;
    let names = h.deps.prefix.tenant(kid).unwrap();
    let gate = gatekeeper(pg).await;
    gate.batch_execute(&format!(
        "BEGIN; LOCK TABLE {lock} IN ACCESS EXCLUSIVE MODE"
    ))
    .await
    .unwrap();
    let create = {
        let (api, op, path) = (
            api.clone(),
            op.clone(),
            format!("/api/v1/orgs/{org}/{table}"),
        );
        tokio::spawn(async move { api.call("POST", &path, Some(&op), Some(body)).await })
    };
    let rows = format!("SELECT count(*) FROM {table}");
    eventually(Duration::from_secs(30), "row inserted", || async {
        (count(pg, &rows) == 1).then_some(())
    })
    .await;
    let row = pg.psql("meshwg", &format!("SELECT id FROM {table}"));
    at_the_gate(pg).await;
    pg.stop();
    let r = create.await.unwrap();
    assert!(r.status.is_server_error(), "{} {:?}", r.status, r.body);
    pg.start();
    eventually(Duration::from_secs(60), "row deleted", || async {
        (count(pg, &rows) == 0).then_some(())
    })
    .await;
    h.ctl.sync(org).await.unwrap();
    let audited = format!("SELECT count(*) FROM audit_log WHERE target_id = '{row}'");
    assert_eq!(count(pg, &audited), 0, "an audit entry for nothing");
    Left {
        api,
        op,
        org,
        names,
        row,
    }
}

#[test]
fn partial_machine_creation_that_loses_the_database_leaves_no_peer() {
    run(|mut h| async move {
        let pg = Cluster::start_new(&h.world.prefix);
        let body = json!({"name": "laptop"});
        let left = create_through_an_outage(&mut h, &pg, "policies", "machines", body).await;
        // Its private key went nowhere: the machine must not become a peer, now or later.
        assert_eq!(
            wg(&left.names, "show", &["peers"]).trim(),
            "",
            "no peer in the hub"
        );
        // A creation that succeeds is confirmed and audited in one go.
        let made = left
            .api
            .machine(&left.op, &left.org.to_string(), "laptop")
            .await;
        let id = made["machine"]["id"].as_str().unwrap();
        let confirmed = format!(
            "SELECT count(*) FROM machines m JOIN audit_log a ON a.target_id = m.id::text \
             WHERE m.id = '{id}' AND m.pending_until IS NULL AND a.action = 'machine.create'"
        );
        assert_eq!(count(&pg, &confirmed), 1);
        assert_ne!(id, left.row);
        h.ctl.shutdown().await;
    });
}

#[test]
fn partial_policy_creation_that_loses_the_database_is_not_enforced() {
    run(|mut h| async move {
        let pg = Cluster::start_new(&h.world.prefix);
        let body = json!({"action": "deny", "src": "any", "dst": "any"});
        let left = create_through_an_outage(&mut h, &pg, "machines", "policies", body).await;
        let rules = ns(&left.names.netns, &["iptables-save", "-t", "filter"]);
        assert!(
            !rules.contains(&left.row),
            "rule of the failed policy enforced:\n{rules}"
        );
        h.ctl.shutdown().await;
    });
}
