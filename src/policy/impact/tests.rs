use super::*;
use crate::policy::evaluate::{Chain, Packet};
use crate::policy::fixtures::{
    Rng, connects, machine, packets, policy, random_org, random_policy, tag,
};
use std::collections::BTreeSet;

#[test]
fn diff_lists_removed_and_added_lines_and_notices_a_new_order() {
    let l = |s: &str| s.to_string();
    let d = rule_diff(&[l("a"), l("b"), l("z")], &[l("b"), l("a"), l("c"), l("z")]);
    assert_eq!(d.removed, Vec::<String>::new());
    assert_eq!(d.added, [l("c")]);
    assert!(d.reordered);
    let d = rule_diff(&[l("a"), l("z")], &[l("z")]);
    assert_eq!((d.removed, d.reordered), (vec![l("a")], false));
}

#[test]
fn a_deny_on_ssh_flips_the_tagged_pairs_on_port_22_only() {
    let machines = [
        machine(1, 2, &["web"]),
        machine(2, 3, &["web"]),
        machine(3, 4, &["db"]),
    ];
    let mut ssh = policy(9, 10, Verdict::Deny, tag("web"), tag("db"));
    ssh.protocol = crate::policy::Protocol::Tcp;
    ssh.ports = Some(crate::policy::PortRange {
        first: 22,
        last: 22,
    });
    let before = Side {
        policies: &[],
        default: Verdict::Allow,
    };
    let after_policies = [ssh];
    let after = Side {
        policies: &after_policies,
        default: Verdict::Allow,
    };
    let i = impact(before, after, &machines);
    assert!(i.complete);
    assert_eq!(i.rules.removed, Vec::<String>::new());
    assert_eq!(i.rules.added.len(), 1);
    assert!(i.rules.added[0].contains("--dport 22") && i.rules.added[0].ends_with("-j DROP"));
    assert_eq!(i.flips.len(), 1, "{:?}", i.flips);
    let f = &i.flips[0];
    assert_eq!(
        (
            f.label.as_str(),
            f.ports.as_deref(),
            f.port,
            f.from,
            f.to,
            f.pairs
        ),
        (
            "tcp/22",
            Some("22"),
            Some(22),
            Verdict::Allow,
            Verdict::Deny,
            2
        )
    );
    assert_eq!(i.flipped_pairs, 2);
    let sample: BTreeSet<_> = f.sample.iter().copied().collect();
    assert_eq!(
        sample,
        BTreeSet::from([
            (machines[0].id, machines[2].id),
            (machines[1].id, machines[2].id)
        ])
    );

    // Switching the default to deny flips every pair of different machines on every port,
    // except web→db on 22, which is denied already.
    let i = impact(
        after,
        Side {
            default: Verdict::Deny,
            ..after
        },
        &machines,
    );
    let tcp22 = i.flips.iter().find(|f| f.label == "tcp/22").unwrap();
    assert_eq!(tcp22.pairs, 6 - 2);
    let icmp = i.flips.iter().find(|f| f.label == "icmp").unwrap();
    assert_eq!(icmp.pairs, 6);
    assert_eq!(i.flipped_pairs, 6);
    assert!(i.rules.added.iter().any(|l| l.contains("ESTABLISHED")));
}

/// Flips agree with the evaluator: a pair flips on a probe port exactly when the evaluator lets
/// the connection (first packet and replies) through on one side only, and every sample does.
#[test]
fn flips_agree_with_the_evaluator_on_random_changes() {
    let mut r = Rng(0x0dd_ba11_cafe_f00d);
    for _ in 0..300 {
        let (machines, policies, default) = random_org(&mut r);
        let mut changed = policies.clone();
        match r.below(3) {
            0 => changed.push(random_policy(&mut r, 50, &machines)),
            1 => {
                changed.remove(r.below(changed.len() as u64) as usize);
            }
            _ => {
                let i = r.below(changed.len() as u64) as usize;
                let mut p = random_policy(&mut r, 60, &machines);
                p.id = changed[i].id;
                p.created_at = changed[i].created_at;
                changed[i] = p;
            }
        }
        let new_default = match (r.below(4), default) {
            (0, Verdict::Allow) => Verdict::Deny,
            (0, Verdict::Deny) => Verdict::Allow,
            _ => default,
        };
        let before = Side {
            policies: &policies,
            default,
        };
        let after = Side {
            policies: &changed,
            default: new_default,
        };
        let i = impact(before, after, &machines);
        assert!(i.complete);
        let old = Chain::new(&policies, &machines, default);
        let new = Chain::new(&changed, &machines, new_default);
        let mut flipped = BTreeSet::new();
        for p in packets(&machines).iter().filter(|p| !p.established) {
            let (a, b) = (connects(&old, p), connects(&new, p));
            if a != b {
                flipped.insert((p.src, p.dst));
                let listed = i.flips.iter().any(|f| {
                    f.from == a
                        && f.to == b
                        && match (f.protocol, p.dport) {
                            ("tcp", Some(d)) => p.proto == 6 && port_in(f, d),
                            ("udp", Some(d)) => p.proto == 17 && port_in(f, d),
                            ("icmp", None) => p.proto == 1,
                            ("other", None) => p.proto == 47,
                            _ => false,
                        }
                });
                assert!(listed, "{p:?} flips {a:?}→{b:?}, not in {:?}", i.flips);
            }
        }
        assert_eq!(i.flipped_pairs, flipped.len(), "{:?}", i.flips);
        let addr = |id: Uuid| machines.iter().find(|m| m.id == id).unwrap().address;
        for f in &i.flips {
            let proto = match f.protocol {
                "tcp" => 6,
                "udp" => 17,
                "icmp" => 1,
                _ => 47,
            };
            for (s, d) in &f.sample {
                let p = Packet {
                    src: addr(*s),
                    dst: addr(*d),
                    proto,
                    dport: f.port,
                    established: false,
                };
                assert_eq!(connects(&old, &p), f.from);
                assert_eq!(connects(&new, &p), f.to);
            }
        }
    }
}

fn port_in(f: &Flip, port: u16) -> bool {
    let Some(r) = &f.ports else { return false };
    let (a, b) = r.split_once('-').unwrap_or((r, r));
    (a.parse::<u16>().unwrap()..=b.parse::<u16>().unwrap()).contains(&port)
}
