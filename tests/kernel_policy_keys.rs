//! Policies in the kernel and hub keys at rest, against the real kernel and PostgreSQL (root).

mod common;

use base64::Engine;
use common::*;
use meshwg::crypto::SealedKey;
use meshwg::db::policies::{self, PolicyFields};
use meshwg::keys::PrivateKey;
use meshwg::policy::render::{MachineAddr, policy_comment, render, tag_set_name};
use meshwg::policy::{PortRange, Protocol, Selector, Verdict};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

fn fields(action: Verdict, src: Selector, dst: Selector) -> PolicyFields {
    PolicyFields {
        name: String::new(),
        priority: 100,
        action,
        src,
        dst,
        protocol: Protocol::Any,
        ports: None,
        enabled: true,
    }
}

fn acl_rules(netns: &str) -> Vec<String> {
    ns(netns, &["iptables-save", "-t", "filter"])
        .lines()
        .filter(|l| l.starts_with("-A MWG-ACL"))
        .map(str::to_string)
        .collect()
}

/// (packets, bytes) of the rule carrying `comment`.
fn counters(netns: &str, comment: &str) -> Option<(u64, u64)> {
    let save = ns(netns, &["iptables-save", "-c", "-t", "filter"]);
    let line = save
        .lines()
        .find(|l| l.contains(&format!("\"{comment}\"")))?;
    let (p, b) = line.strip_prefix('[')?.split_once(']')?.0.split_once(':')?;
    Some((p.parse().ok()?, b.parse().ok()?))
}

#[test]
fn kernel_policies_render_exactly_keep_counters_and_deny_established_flows() {
    run(|h| async move {
        let org = h.tenant("Policies", "10.100.0.0/16").await;
        let names = h.names(&org);
        let pair = h.pair(&org, [&["web"], &["db", "web"]]).await;
        let (m1, m2, vm1, dst) = (&pair.m1, &pair.m2, &pair.vm1, pair.dst());

        // A mix of selectors, protocols and priorities; the kernel holds exactly the rendering.
        let mut tcp = fields(
            Verdict::Deny,
            Selector::Tag("web".into()),
            Selector::Tag("db".into()),
        );
        tcp.protocol = Protocol::Tcp;
        tcp.ports = Some(PortRange {
            first: 5201,
            last: 5202,
        });
        tcp.priority = 10;
        let tcp = policies::insert(&h.pool, org.id, Uuid::new_v4(), &tcp)
            .await
            .unwrap();
        let mut cidr = fields(
            Verdict::Allow,
            Selector::Cidr("10.100.0.0/24".parse().unwrap()),
            Selector::Any,
        );
        cidr.protocol = Protocol::Udp;
        cidr.ports = Some(PortRange {
            first: 53,
            last: 53,
        });
        policies::insert(&h.pool, org.id, Uuid::new_v4(), &cidr)
            .await
            .unwrap();
        h.ctl.sync(org.id).await.unwrap();
        let all = policies::list(&h.pool, org.id).await.unwrap();
        let machines: Vec<MachineAddr> = [&m1, &m2].into_iter().map(|m| m.addr()).collect();
        let want = render(&all, &machines, Verdict::Allow);
        assert_eq!(
            acl_rules(&names.netns),
            want.acl,
            "kernel chain equals the rendering"
        );
        assert!(
            want.acl[0].contains(&policy_comment(tcp.id)),
            "priority 10 first, commented with its id"
        );
        let sets = ns(&names.netns, &["ipset", "save"]);
        assert!(
            sets.contains(&format!("add {} {}", tag_set_name("web"), m1.address)),
            "{sets}"
        );
        assert!(
            sets.contains(&format!("add {} {}", tag_set_name("db"), m2.address)),
            "{sets}"
        );
        assert!(
            !sets.contains(&format!("add {} {}", tag_set_name("db"), m1.address)),
            "{sets}"
        );

        // Traffic moves the default rule's counters; an unrelated change keeps them.
        assert!(vm1.ping(&dst, 3));
        let before = counters(&names.netns, "mwg:default").unwrap();
        assert!(
            before.0 >= 6,
            "echo requests and replies counted: {before:?}"
        );
        let mut later = PolicyFields::of(&all[1]);
        later.name = "renamed".into();
        later.priority = 50;
        policies::update(&h.pool, org.id, all[1].id, &later)
            .await
            .unwrap();
        h.ctl.sync(org.id).await.unwrap();
        let after = counters(&names.netns, "mwg:default").unwrap();
        assert!(
            after.0 >= before.0,
            "counters carried across the rewrite: {before:?} -> {after:?}"
        );

        // A deny stops the next packet of a flow that is already established.
        let flood = {
            let netns = vm1.netns.clone();
            let dst = dst.clone();
            std::thread::spawn(move || {
                ns_out(
                    &netns,
                    &[
                        "ping", "-n", "-D", "-c", "120", "-i", "0.05", "-W", "1", &dst,
                    ],
                )
            })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let deny = fields(
            Verdict::Deny,
            Selector::Machine(m1.id),
            Selector::Machine(m2.id),
        );
        let deny = policies::insert(&h.pool, org.id, Uuid::new_v4(), &deny)
            .await
            .unwrap();
        h.ctl.sync(org.id).await.unwrap();
        let enforced_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let out = flood.join().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let replies: Vec<f64> = text
            .lines()
            .filter(|l| l.contains("bytes from"))
            .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
            .collect();
        assert!(replies.len() >= 20, "the flow was established: {text}");
        let late: Vec<&f64> = replies
            .iter()
            .filter(|t| **t > enforced_at + 0.05)
            .collect();
        assert!(
            late.is_empty(),
            "replies after the deny was enforced: {late:?}"
        );
        let (dropped, _) = counters(&names.netns, &policy_comment(deny.id)).unwrap();
        assert!(
            dropped >= 40,
            "the deny rule counted the dropped packets: {dropped}"
        );

        // Disabled again: traffic flows.
        let mut off = PolicyFields::of(&deny);
        off.enabled = false;
        policies::update(&h.pool, org.id, deny.id, &off)
            .await
            .unwrap();
        h.ctl.sync(org.id).await.unwrap();
        assert!(vm1.ping(&dst, 2));
        assert!(counters(&names.netns, &policy_comment(deny.id)).is_none());
    });
}

/// The tenant namespace's nf_tables generation (moves by one per commit).
async fn generation(h: &Harness, netns: &str) -> u32 {
    let handles = h.deps.kernel.namespaces.get(netns).await.unwrap();
    meshwg::kernel::nl::nft::generation(&handles.nfnl)
        .await
        .unwrap()
}

#[test]
fn kernel_small_policy_changes_edit_the_chain_in_place_and_are_enforced() {
    run(|h| async move {
        let org = h.tenant("Edits", "10.100.0.0/16").await;
        let names = h.names(&org);
        let pair = h.pair(&org, [&["web"], &["db"]]).await;
        let (m1, m2, vm1, dst) = (&pair.m1, &pair.m2, &pair.vm1, pair.dst());
        let machines: Vec<MachineAddr> = [&m1, &m2].into_iter().map(|m| m.addr()).collect();
        let rendered = || async {
            let all = policies::list(&h.pool, org.id).await.unwrap();
            render(&all, &machines, Verdict::Allow).acl
        };
        for port in [80u16, 443, 8080] {
            let mut p = fields(
                Verdict::Allow,
                Selector::Tag("web".into()),
                Selector::Tag("db".into()),
            );
            p.protocol = Protocol::Tcp;
            p.ports = Some(PortRange {
                first: port,
                last: port,
            });
            p.priority = i32::from(port);
            policies::insert(&h.pool, org.id, Uuid::new_v4(), &p)
                .await
                .unwrap();
        }
        h.ctl.sync(org.id).await.unwrap();
        assert!(vm1.ping(&dst, 3));
        let before = counters(&names.netns, "mwg:default").unwrap();
        assert!(before.0 >= 6, "pings counted: {before:?}");

        // A deny between the allows, by tags (x_tables set matches): two commits — the rule
        // staged by iptables, then the batch that puts it in place — and nothing else moves.
        let g0 = generation(&h, &names.netns).await;
        let mut deny = fields(
            Verdict::Deny,
            Selector::Tag("web".into()),
            Selector::Tag("db".into()),
        );
        deny.priority = 100;
        let deny = policies::insert(&h.pool, org.id, Uuid::new_v4(), &deny)
            .await
            .unwrap();
        h.ctl.sync(org.id).await.unwrap();
        assert_eq!(
            generation(&h, &names.netns).await,
            g0 + 2,
            "staged, then edited in one batch"
        );
        let want = rendered().await;
        assert_eq!(
            acl_rules(&names.netns),
            want,
            "kernel chain equals the rendering"
        );
        assert!(want[1].contains(&policy_comment(deny.id)), "{want:?}");
        let save = ns(&names.netns, &["iptables-save", "-t", "filter"]);
        assert!(!save.contains("MWG-STAGE"), "no staging chain left: {save}");
        let after = counters(&names.netns, "mwg:default").unwrap();
        assert!(
            after.0 >= before.0,
            "counters kept: {before:?} -> {after:?}"
        );
        assert!(!vm1.ping(&dst, 2), "the new deny is enforced");
        let (dropped, _) = counters(&names.netns, &policy_comment(deny.id)).unwrap();
        assert!(dropped >= 2, "the deny counted the pings: {dropped}");

        // A port changed (a TCP match, which the kernel checks against the rule's protocol):
        // the old rule goes and the new one takes its place in the same batch.
        let allows = policies::list(&h.pool, org.id).await.unwrap();
        let web = allows
            .iter()
            .find(|p| p.ports.is_some_and(|r| r.first == 443))
            .unwrap();
        let mut moved = PolicyFields::of(web);
        moved.ports = Some(PortRange {
            first: 4443,
            last: 4444,
        });
        policies::update(&h.pool, org.id, web.id, &moved)
            .await
            .unwrap();
        let g1 = generation(&h, &names.netns).await;
        h.ctl.sync(org.id).await.unwrap();
        assert_eq!(generation(&h, &names.netns).await, g1 + 2);
        assert_eq!(acl_rules(&names.netns), rendered().await);
        assert!(
            acl_rules(&names.netns)
                .iter()
                .any(|r| r.contains("--dport 4443:4444")),
            "{:?}",
            acl_rules(&names.netns)
        );

        // Switched off: only a deletion, one commit; traffic flows again.
        let mut off = PolicyFields::of(&deny);
        off.enabled = false;
        policies::update(&h.pool, org.id, deny.id, &off)
            .await
            .unwrap();
        let g2 = generation(&h, &names.netns).await;
        h.ctl.sync(org.id).await.unwrap();
        assert_eq!(generation(&h, &names.netns).await, g2 + 1);
        assert_eq!(acl_rules(&names.netns), rendered().await);
        assert!(vm1.ping(&dst, 2));

        // Somebody else's rule in the chain: the edit's premise is gone, the next change still
        // lands exactly as rendered (read back, then written through iptables-restore).
        ns(
            &names.netns,
            &[
                "iptables",
                "-I",
                "MWG-ACL",
                "2",
                "-s",
                "10.100.9.9",
                "-j",
                "DROP",
            ],
        );
        let mut on = off.clone();
        on.enabled = true;
        policies::update(&h.pool, org.id, deny.id, &on)
            .await
            .unwrap();
        h.ctl.sync(org.id).await.unwrap();
        assert_eq!(acl_rules(&names.netns), rendered().await);
        assert!(!vm1.ping(&dst, 2));
    });
}

#[test]
fn kernel_hub_keys_are_sealed_at_rest() {
    run(|h| async move {
        let a = h.tenant("A", "10.1.0.0/16").await;
        let b = h.tenant("B", "10.1.0.0/16").await;
        let (_, config) = h.machine(&a, "laptop", &[]).await;
        let machine_key = config
            .expose()
            .lines()
            .find_map(|l| l.strip_prefix("PrivateKey          = "))
            .unwrap()
            .to_string();

        // The private keys the daemons hold, in every form they could be stored in.
        let mut secrets = vec![machine_key.clone()];
        for org in [&a, &b] {
            let b64 = wg(&h.names(org), "show", &["private-key"])
                .trim()
                .to_string();
            let key = PrivateKey::from_base64(&b64).unwrap();
            assert_eq!(
                key.public_key(),
                org.hub_public_key,
                "the daemon holds the hub key"
            );
            secrets.push(b64);
            secrets.push(key.expose_hex().expose().clone());
        }
        let machine = PrivateKey::from_base64(&machine_key).unwrap();
        secrets.push(machine.expose_hex().expose().clone());
        secrets
            .push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(machine.expose_bytes()));

        // Every column of every table, as text (bytea shows as \x… hex).
        let conn = h.pool.get().await.unwrap();
        let tables: Vec<String> = conn
            .query(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(tables.contains(&"orgs".to_string()) && tables.contains(&"machines".to_string()));
        let mut dump = String::new();
        for t in &tables {
            for row in conn
                .query(&format!("SELECT t::text FROM {t} t"), &[])
                .await
                .unwrap()
            {
                dump.push_str(&row.get::<_, String>(0));
                dump.push('\n');
            }
        }
        for s in &secrets {
            assert!(
                !dump.to_lowercase().contains(&s.to_lowercase()),
                "a private key is stored in the clear"
            );
        }

        // The sealed row opens only as itself.
        let read = |org_id: Uuid| {
            let conn = &conn;
            async move {
                let r = conn
                    .query_one("SELECT hub_key_version, hub_key_nonce, hub_key_ciphertext FROM orgs WHERE id = $1", &[&org_id])
                    .await
                    .unwrap();
                SealedKey {
                    version: r.get(0),
                    nonce: r.get(1),
                    ciphertext: r.get(2),
                }
            }
        };
        let sealed_a = read(a.id).await;
        assert!(h.deps.cipher.open(a.id, &sealed_a).is_ok());
        let mut flipped = sealed_a.clone();
        flipped.ciphertext[7] ^= 1;
        assert!(
            h.deps.cipher.open(a.id, &flipped).is_err(),
            "a flipped byte fails"
        );
        assert!(
            h.deps.cipher.open(b.id, &sealed_a).is_err(),
            "A's ciphertext does not open as B"
        );
        let other_key = meshwg::crypto::HubKeyCipher::new(&meshwg::secret::Secret::new([1u8; 32]));
        assert!(
            other_key.open(a.id, &sealed_a).is_err(),
            "nor with another ENCRYPTION_KEY"
        );

        // Copied into B's row, the controller refuses it and leaves B's running hub alone.
        let hub_b = hub_identity(&h, &h.names(&b));
        conn.execute(
            "UPDATE orgs SET hub_key_nonce = $2, hub_key_ciphertext = $3 WHERE id = $1",
            &[&b.id, &sealed_a.nonce, &sealed_a.ciphertext],
        )
        .await
        .unwrap();
        let err = h.ctl.sync(b.id).await.unwrap_err();
        assert!(err.to_string().contains("does not decrypt"), "{err}");
        assert!(!err.to_string().contains(&secrets[1]));
        assert_eq!(
            hub_identity(&h, &h.names(&b)),
            hub_b,
            "B's data plane untouched"
        );
        let pk = wg(&h.names(&b), "show", &["public-key"]);
        assert_eq!(pk.trim(), b.hub_public_key.to_base64());
    });
}
