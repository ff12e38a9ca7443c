//! Key rotation, with the kernel as the oracle (needs root; see common/mod.rs): after
//! `POST …/machines/{id}/rotate-key` the hub knows the machine by its new key only, with the
//! same /32, so the old config stops working at once and the new one connects.
//!
//! ```text
//!  c1  old config of "one"  ──╳──┐
//!  c3  new config of "one"  ─────┼── hub (tenant namespace) ── c2 "two"
//!  c4  "two" with its own key ───┘   (after "two" rotates to a key it made itself)
//! ```

mod common;

use common::api::Api;
use common::*;
use meshwg::keys::PrivateKey;
use meshwg::secret::Secret;
use serde_json::{Value, json};
use std::time::Duration;

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// The hub's peers as `wg show … allowed-ips` lists them: (public key, allowed IPs).
fn hub_peers(names: &meshwg::names::TenantNames) -> Vec<(String, String)> {
    wg(names, "show", &["allowed-ips"])
        .lines()
        .filter_map(|l| {
            let (k, ips) = l.split_once('\t')?;
            Some((k.to_string(), ips.trim().to_string()))
        })
        .collect()
}

/// The hub's latest handshake with `key`, in seconds since the epoch (0: never).
fn handshake(names: &meshwg::names::TenantNames, key: &str) -> u64 {
    wg(names, "show", &["latest-handshakes"])
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .find(|(k, _)| *k == key)
        .and_then(|(_, t)| t.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn kernel_rotated_key_old_config_stops_new_config_connects() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let (org, admin) = api.org_with_admin(&op, "Rotate", "10.70.0.0/16").await;
        let row = h.org_row(&org).await;
        let names = h.names(&row);
        let one = api.machine(&admin, &org, "one").await;
        let two = api.machine(&admin, &org, "two").await;
        let (one_id, two_id) = (s(&one["machine"]["id"]), s(&two["machine"]["id"]));
        let one_addr = s(&one["machine"]["address"]).to_string();
        let two_addr = s(&two["machine"]["address"]).to_string();
        let old_key = s(&one["machine"]["public_key"]).to_string();
        let vm1 = h.client(1, &Secret::new(s(&one["config"]).to_string()));
        let _vm2 = h.client(2, &Secret::new(s(&two["config"]).to_string()));
        eventually(
            Duration::from_secs(20),
            "old config reaches two",
            || async { vm1.ping(&two_addr, 1).then_some(()) },
        )
        .await;
        assert!(handshake(&names, &old_key) > 0);

        // Refused: a member, a bad key, another machine's key, another org's machine. Nothing
        // changes.
        let member = api.user(&admin, &org, "member@rotate.test", "member").await;
        let path = format!("/api/v1/orgs/{org}/machines/{one_id}/rotate-key");
        let r = api.call("POST", &path, Some(&member), None).await;
        assert_eq!(r.status, 403, "{:?}", r.body);
        let bad = json!({"public_key": "not a key"});
        let r = api.call("POST", &path, Some(&admin), Some(bad)).await;
        assert_eq!(r.status, 400, "{:?}", r.body);
        let taken = json!({"public_key": two["machine"]["public_key"]});
        let r = api.call("POST", &path, Some(&admin), Some(taken)).await;
        assert_eq!(r.status, 409, "{:?}", r.body);
        let (other, other_admin) = api.org_with_admin(&op, "Other", "10.71.0.0/16").await;
        let r = api
            .call(
                "POST",
                &format!("/api/v1/orgs/{other}/machines/{one_id}/rotate-key"),
                Some(&other_admin),
                None,
            )
            .await;
        assert_eq!(r.status, 404, "{:?}", r.body);
        let r = api
            .call("POST", &path.replace(&org, &other), Some(&admin), None)
            .await;
        assert_eq!(r.status, 404, "{:?}", r.body);
        assert!(
            hub_peers(&names).contains(&(old_key.clone(), format!("{one_addr}/32"))),
            "a refused rotation changed the hub"
        );

        // Rotate "one": a new config, once, not cached; the hub swaps the key in place.
        let r = api.call("POST", &path, Some(&admin), None).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.headers["cache-control"], "no-store");
        let new_key = s(&r.body["machine"]["public_key"]).to_string();
        assert_ne!(new_key, old_key);
        assert_eq!(s(&r.body["machine"]["address"]), one_addr);
        let config = s(&r.body["config"]).to_string();
        assert!(s(&r.body["config_qr_svg"]).starts_with("<?xml"));
        let private = config
            .lines()
            .find_map(|l| l.strip_prefix("PrivateKey"))
            .map(|v| v.trim_start_matches([' ', '=']).to_string())
            .unwrap();
        assert_eq!(
            PrivateKey::from_base64(&private)
                .unwrap()
                .public_key()
                .to_base64(),
            new_key,
            "the config holds the new key's private half"
        );
        let peers = hub_peers(&names);
        assert!(
            !peers.iter().any(|(k, _)| *k == old_key),
            "old key still in wg show: {peers:?}"
        );
        assert!(
            peers.contains(&(new_key.clone(), format!("{one_addr}/32"))),
            "new key with the same /32: {peers:?}"
        );
        assert_eq!(peers.len(), 2, "{peers:?}");

        // The old config stops working; the new one connects and reaches "two".
        assert!(!vm1.ping(&two_addr, 3), "the old config still reaches two");
        let vm3 = h.client(3, &Secret::new(config));
        eventually(
            Duration::from_secs(20),
            "new config reaches two",
            || async { vm3.ping(&two_addr, 1).then_some(()) },
        )
        .await;
        assert!(
            handshake(&names, &new_key) > 0,
            "no handshake with the new key"
        );
        assert!(!vm1.ping(&two_addr, 2), "the old config reaches two again");
        // The API shows the handshake with the new key.
        eventually(Duration::from_secs(10), "handshake in the API", || async {
            let m = api
                .call(
                    "GET",
                    &format!("/api/v1/orgs/{org}/machines/{one_id}"),
                    Some(&member),
                    None,
                )
                .await
                .body;
            (m["public_key"] == new_key.as_str() && m["last_handshake_at"].is_string())
                .then_some(())
        })
        .await;

        // "two" rotates to a key it made itself: no config comes back.
        let own = PrivateKey::generate();
        let own_pub = own.public_key().to_base64();
        let r = api
            .call(
                "POST",
                &format!("/api/v1/orgs/{org}/machines/{two_id}/rotate-key"),
                Some(&admin),
                Some(json!({"public_key": own_pub})),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert!(r.body.get("config").is_none(), "{:?}", r.body);
        assert_eq!(s(&r.body["machine"]["public_key"]), own_pub);
        assert!(hub_peers(&names).contains(&(own_pub.clone(), format!("{two_addr}/32"))));
        let filled = s(&two["config"])
            .lines()
            .map(|l| match l.starts_with("PrivateKey") {
                true => format!("PrivateKey          = {}", own.expose_base64().expose()),
                false => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let _vm4 = h.client(4, &Secret::new(filled + "\n"));
        eventually(
            Duration::from_secs(20),
            "one reaches two's own key",
            || async { vm3.ping(&two_addr, 1).then_some(()) },
        )
        .await;
        assert!(handshake(&names, &own_pub) > 0);

        // Audited, once per rotation, with both keys.
        let r = api
            .call(
                "GET",
                &format!("/api/v1/orgs/{org}/audit?action=machine.rotate_key"),
                Some(&admin),
                None,
            )
            .await;
        let entries = r.body["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 2, "{entries:?}");
        let first = entries.iter().find(|e| e["target_id"] == one_id).unwrap();
        assert_eq!(first["detail"]["old_public_key"], old_key.as_str());
        assert_eq!(first["detail"]["public_key"], new_key.as_str());
        assert_eq!(first["detail"]["key"], "server-generated");
        assert!(
            !r.raw
                .windows(private.len())
                .any(|w| w == private.as_bytes())
        );
    });
}
