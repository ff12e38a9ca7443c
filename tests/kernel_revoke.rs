//! Revoking access cuts flows that are already running (needs root; see common/mod.rs): under
//! default deny the chain accepts replies of established flows, so a narrowed policy must also
//! make conntrack forget the flows it no longer admits, in the same reconcile. Each change below
//! stops a running TCP stream within a second, while an unrelated allowed stream keeps going.

mod common;

use common::*;
use meshwg::db::orgs::Org;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Bytes the stream's server in `c` received so far on `port` (summed over its connections).
fn received(c: &Client, port: u16) -> u64 {
    ns(
        &c.netns,
        &[
            "ss",
            "-Htin",
            "state",
            "established",
            &format!("sport = :{port}"),
        ],
    )
    .split_whitespace()
    .filter_map(|f| f.strip_prefix("bytes_received:"))
    .filter_map(|v| v.parse::<u64>().ok())
    .sum()
}

/// A process in a client namespace, killed when dropped.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bg(netns: &str, args: &[&str]) -> Bg {
    eprintln!("+ [{netns}] {} &", args.join(" "));
    Bg(Command::new("ip")
        .args(["netns", "exec", netns])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap())
}

/// Bytes the server in `c` received on `port` during one second.
async fn flowing(c: &Client, port: u16) -> u64 {
    let before = received(c, port);
    tokio::time::sleep(Duration::from_secs(1)).await;
    received(c, port).saturating_sub(before)
}

/// A TCP stream from `from` to `to` on `port` (iperf3, 1 Mbit/s, long), running.
async fn stream(from: &Client, to: &Client, to_addr: &str, port: u16) -> (Bg, Bg) {
    let p = port.to_string();
    let server = bg(&to.netns, &["iperf3", "-s", "-p", &p]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = bg(
        &from.netns,
        &[
            "iperf3", "-c", to_addr, "-p", &p, "-t", "120", "-b", "1M", "-l", "1000",
        ],
    );
    eventually(Duration::from_secs(10), "stream flows", || async {
        (flowing(to, port).await > 20_000).then_some(())
    })
    .await;
    (server, client)
}

async fn set_default(h: &Harness, org: &Org, action: &str) {
    let conn = h.pool.get().await.unwrap();
    conn.execute(
        "UPDATE orgs SET default_action = $2 WHERE id = $1",
        &[&org.id, &action],
    )
    .await
    .unwrap();
    h.ctl.sync(org.id).await.unwrap();
}

/// Asserts the stream to `to` (port 5201) stopped within a second of the change, and the
/// unrelated one to `other` (port 5202) did not.
async fn cut(what: &str, to: &Client, other: &Client) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let revoked = flowing(to, 5201).await;
    let unrelated = flowing(other, 5202).await;
    assert!(
        revoked < 2_000,
        "{what}: the revoked stream still delivered {revoked} bytes/s"
    );
    assert!(
        unrelated > 20_000,
        "{what}: the unrelated stream stalled ({unrelated} bytes/s)"
    );
}

#[test]
fn kernel_revoking_access_cuts_established_flows_and_spares_others() {
    run(|h| async move {
        let org = h.tenant("Revoke", "10.100.0.0/16").await;
        let pair = h.pair(&org, [&["web"], &["db"]]).await;
        let (vm1, vm2) = (&pair.vm1, &pair.vm2);
        let (a1, a2) = (pair.m1.address.to_string(), pair.m2.address.to_string());
        set_default(&h, &org, "deny").await;
        // The unrelated stream two → one on tcp/5202 stays allowed throughout. (Narrowly: a
        // policy letting two reach one on any port would also admit the revoked stream's
        // acknowledgements, and conntrack would then carry the stream as their reply.)
        let conn = h.pool.get().await.unwrap();
        conn.execute(
            "INSERT INTO policies (id, org_id, action, src, dst, protocol, ports) VALUES ($1, $2, 'allow', $3, $4, 'tcp', '5202')",
            &[&uuid::Uuid::new_v4(), &org.id, &json!({"machine": pair.m2.id}), &json!({"machine": pair.m1.id})],
        )
        .await
        .unwrap();
        h.ctl.sync(org.id).await.unwrap();
        let _other = stream(vm2, vm1, &a1, 5202).await;

        // 1. The allow policy is deleted.
        h.policy(&org, "allow", json!({"tag": "web"}), json!({"tag": "db"}))
            .await;
        let s = stream(vm1, vm2, &a2, 5201).await;
        conn.execute(
            "DELETE FROM policies WHERE org_id = $1 AND src = $2",
            &[&org.id, &json!({"tag": "web"})],
        )
        .await
        .unwrap();
        h.ctl.sync(org.id).await.unwrap();
        cut("policy deleted", vm2, vm1).await;
        drop(s);

        // 2. The allow policy is disabled.
        h.policy(&org, "allow", json!({"tag": "web"}), json!({"tag": "db"}))
            .await;
        let s = stream(vm1, vm2, &a2, 5201).await;
        conn.execute(
            "UPDATE policies SET enabled = false WHERE org_id = $1 AND src = $2",
            &[&org.id, &json!({"tag": "web"})],
        )
        .await
        .unwrap();
        h.ctl.sync(org.id).await.unwrap();
        cut("policy disabled", vm2, vm1).await;
        drop(s);

        // 3. The tag the policy selects is taken off the machine.
        conn.execute(
            "UPDATE policies SET enabled = true WHERE org_id = $1",
            &[&org.id],
        )
        .await
        .unwrap();
        h.ctl.sync(org.id).await.unwrap();
        let s = stream(vm1, vm2, &a2, 5201).await;
        conn.execute(
            "UPDATE machines SET tags = '{}' WHERE id = $1",
            &[&pair.m1.id],
        )
        .await
        .unwrap();
        h.ctl.sync(org.id).await.unwrap();
        cut("tag removed", vm2, vm1).await;
        drop(s);

        // 4. The default flips from allow to deny (the stream ran on the default alone).
        set_default(&h, &org, "allow").await;
        let s = stream(vm1, vm2, &a2, 5201).await;
        set_default(&h, &org, "deny").await;
        cut("default flipped to deny", vm2, vm1).await;
        drop(s);
    });
}
