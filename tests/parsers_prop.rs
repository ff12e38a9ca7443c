//! Property tests of the text the controller reads from and writes for other programs
//! (`iptables-save`, `ipset save`, wireguard-go's UAPI, wg-quick configs), with hostile input:
//! parsers never panic whatever they are fed, and what we write reads back as what we meant.
//! Pure (no root, no kernel).

use meshwg::kernel::firewall::{forward_jump, parse_ipset, parse_save, restore_script};
use meshwg::kernel::uapi::parse_get;
use meshwg::kernel::{FirewallRules, RuleObserved};
use meshwg::keys::{PrivateKey, PublicKey};
use meshwg::names::ACL_CHAIN;
use meshwg::secret::Secret;
use meshwg::wgconfig::{MachineConfig, render};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

/// Text built from the pieces these formats are made of, glued with noise: more likely to reach
/// deep into a parser than uniform random strings.
fn hostile_lines() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("*filter".to_string()),
        Just("*nat".to_string()),
        Just("COMMIT".to_string()),
        Just(":FORWARD DROP [0:0]".to_string()),
        Just(format!(":{ACL_CHAIN} - [0:0]")),
        Just(format!("-A {ACL_CHAIN} ")),
        Just("-A FORWARD ".to_string()),
        Just("[".to_string()),
        Just("] ".to_string()),
        Just(":".to_string()),
        Just("=".to_string()),
        Just("create ".to_string()),
        Just("add ".to_string()),
        Just("errno=0".to_string()),
        Just("public_key=".to_string()),
        Just("private_key=".to_string()),
        Just("listen_port=".to_string()),
        Just("allowed_ip=".to_string()),
        Just("rx_bytes=".to_string()),
        Just("last_handshake_time_sec=".to_string()),
        "[0-9a-f]{0,70}",
        "[0-9]{0,25}",
        "-?[0-9]{1,20}:[0-9]{0,25}",
        ".{0,20}",
        Just("\n".to_string()),
        Just("\r\n".to_string()),
        Just("\u{0}".to_string()),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

/// Rule text as iptables-save prints it: tokens without line breaks.
fn rule_text() -> impl Strategy<Value = String> {
    prop::collection::vec("[!-~\u{a0}-\u{2fff}]{1,12}", 1..8)
        .prop_map(|tokens| format!("-A {ACL_CHAIN} {}", tokens.join(" ")))
}

fn key32() -> impl Strategy<Value = [u8; 32]> {
    prop::array::uniform32(any::<u8>())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn iptables_save_parser_takes_anything(text in hostile_lines()) {
        let obs = parse_save(&text);
        // Whatever it found is made of the input's own lines.
        for r in obs.acl.iter().flatten() {
            prop_assert!(text.contains(&r.rule));
        }
    }

    #[test]
    fn restore_script_reads_back_as_the_rules_and_counters_meant(
        rules in prop::collection::vec(rule_text(), 0..20),
        counters in prop::collection::vec((any::<u64>(), any::<u64>()), 20),
    ) {
        let carry: BTreeMap<String, (u64, u64)> =
            rules.iter().cloned().zip(counters.iter().copied()).collect();
        let script = restore_script(&FirewallRules { acl: rules.clone(), sets: BTreeMap::new(), watch: vec![] }, &carry);
        let obs = parse_save(&script);
        prop_assert_eq!(obs.forward_policy.as_deref(), Some("DROP"));
        prop_assert_eq!(obs.forward, vec![forward_jump()]);
        let want: Vec<RuleObserved> = rules
            .iter()
            .map(|r| {
                let (packets, bytes) = carry[r];
                RuleObserved { rule: r.clone(), packets, bytes }
            })
            .collect();
        prop_assert_eq!(obs.acl, Some(want));
        prop_assert!(obs.nat.is_empty());
    }

    #[test]
    fn ipset_save_parser_takes_anything_and_reads_sets_back(
        text in hostile_lines(),
        sets in prop::collection::btree_map(
            "mwgt[0-9a-f]{1,16}",
            prop::collection::btree_set(any::<u32>().prop_map(Ipv4Addr::from), 0..10),
            0..5,
        ),
    ) {
        let _ = parse_ipset(&text);
        let mut save = String::new();
        for (name, members) in &sets {
            save.push_str(&format!("create {name} hash:ip family inet hashsize 1024 maxelem 65536\n"));
            for ip in members {
                save.push_str(&format!("add {name} {ip}\n"));
            }
        }
        prop_assert_eq!(parse_ipset(&save), sets);
    }

    #[test]
    fn uapi_parser_takes_anything(text in hostile_lines()) {
        // Malformed answers are errors, never panics; a key in hex that is not one is refused.
        let _ = parse_get(&text);
    }

    #[test]
    fn uapi_answer_reads_back_as_the_device(
        private in key32(),
        port in any::<u16>(),
        peers in prop::collection::btree_map(
            key32(),
            (
                prop::collection::btree_set("(10|172|192)\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}/[0-9]{1,2}", 0..4),
                prop::option::of("[0-9.]{7,15}:[0-9]{1,5}"),
                0i64..4_000_000_000,
                any::<u64>(),
                any::<u64>(),
            ),
            0..6,
        ),
    ) {
        let private = PrivateKey::from_bytes(private);
        let mut text = format!("private_key={}\nlisten_port={port}\nfwmark=0\n", private.expose_hex().expose());
        for (key, (ips, endpoint, handshake, rx, tx)) in &peers {
            text.push_str(&format!("public_key={}\n", hex(key)));
            text.push_str("preshared_key=0000000000000000000000000000000000000000000000000000000000000000\n");
            if let Some(e) = endpoint {
                text.push_str(&format!("endpoint={e}\n"));
            }
            for ip in ips {
                text.push_str(&format!("allowed_ip={ip}\n"));
            }
            text.push_str(&format!(
                "last_handshake_time_sec={handshake}\nlast_handshake_time_nsec=0\nrx_bytes={rx}\ntx_bytes={tx}\npersistent_keepalive_interval=25\nprotocol_version=1\n"
            ));
        }
        text.push_str("errno=0\n\n");
        let dev = parse_get(&text).unwrap();
        prop_assert_eq!(dev.listen_port, port);
        prop_assert_eq!(dev.public_key, Some(private.public_key()));
        prop_assert_eq!(dev.peers.len(), peers.len());
        for (key, (ips, endpoint, handshake, rx, tx)) in &peers {
            let p = &dev.peers[&PublicKey::from_bytes(*key)];
            prop_assert_eq!(&p.allowed_ips, ips);
            prop_assert_eq!(&p.endpoint, endpoint);
            prop_assert_eq!(p.last_handshake, (*handshake > 0).then_some(*handshake));
            prop_assert_eq!((p.rx_bytes, p.tx_bytes), (*rx, *tx));
        }
        // An answer with a nonzero errno is that error, whatever else it says.
        prop_assert!(parse_get(&text.replace("errno=0", "errno=5")).is_err());
    }

    #[test]
    fn wg_quick_config_has_one_shape_whatever_the_names(
        machine in "\\PC{0,64}|.{0,64}|[\\n\\r\\[\\]=#\"\\\\ ]{0,64}",
        org in "\\PC{0,64}|.{0,64}|[\\n\\r\\[\\]=#\"\\\\ \u{2028}\u{85}]{0,64}",
        address in any::<u32>(),
        own_key in any::<bool>(),
        port in 1u16..,
    ) {
        let key = PrivateKey::generate();
        let hub = PrivateKey::generate().public_key();
        let cidr = "10.100.0.0/16".parse().unwrap();
        let text: Secret<String> = render(&MachineConfig {
            machine_name: &machine,
            address: Ipv4Addr::from(address),
            cidr,
            private_key: (!own_key).then_some(&key),
            org_name: &org,
            hub_public_key: &hub,
            endpoint: "vpn.example.com",
            listen_port: port,
        });
        // Read it as wg-quick does: sections and `Key = Value` lines; comments are ignored.
        let mut sections = Vec::new();
        let mut keys = BTreeSet::new();
        for line in text.expose().lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('[') {
                sections.push(line.to_string());
                continue;
            }
            let (k, _) = line.split_once('=').expect("a Key = Value line");
            prop_assert!(keys.insert(format!("{}.{}", sections.len(), k.trim())), "{} twice", k);
        }
        prop_assert_eq!(sections, vec!["[Interface]".to_string(), "[Peer]".to_string()]);
        let want: BTreeSet<String> = [
            "1.PrivateKey", "1.Address", "1.MTU",
            "2.PublicKey", "2.Endpoint", "2.AllowedIPs", "2.PersistentKeepalive",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        prop_assert_eq!(keys, want);
        prop_assert_eq!(text.expose().lines().count(), 12);
        let key_b64 = key.expose_base64();
        prop_assert_eq!(text.expose().contains(key_b64.expose().as_str()), !own_key);
    }
}
