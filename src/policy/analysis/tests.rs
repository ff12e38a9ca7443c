use super::*;
use crate::policy::evaluate::{Chain, Decider};
use crate::policy::fixtures::{Rng, id, machine, packets, policy, random_org, tag};
use crate::policy::{PortRange, Protocol, Selector};

fn tcp(mut p: Policy, first: u16, last: u16) -> Policy {
    p.protocol = Protocol::Tcp;
    p.ports = Some(PortRange { first, last });
    p
}

fn badge(a: &Analysis, n: u128) -> Option<String> {
    a.of(id(n)).map(Finding::badge)
}

#[test]
fn atoms_cut_at_every_boundary() {
    let p = tcp(
        policy(1, 1, Verdict::Deny, Selector::Any, Selector::Any),
        22,
        22,
    );
    let q = tcp(
        policy(2, 1, Verdict::Deny, Selector::Any, Selector::Any),
        8000,
        65535,
    );
    let a = atoms(&[&p, &q]);
    let labels: Vec<String> = a.iter().map(Atom::label).collect();
    assert_eq!(
        labels,
        [
            "tcp/1-21",
            "tcp/22",
            "tcp/23-7999",
            "tcp/8000-65535",
            "udp/1-65535",
            "icmp",
            "other"
        ]
    );
}

#[test]
fn shadowed_by_an_earlier_rule_with_the_other_verdict() {
    let machines = [machine(1, 2, &["web"]), machine(2, 3, &["db"])];
    let deny_web = policy(1, 10, Verdict::Deny, tag("web"), Selector::Any);
    let ssh = tcp(policy(2, 20, Verdict::Allow, tag("web"), tag("db")), 22, 22);
    let a = analyse(&[deny_web, ssh], &machines, Verdict::Allow);
    assert!(a.complete);
    assert_eq!(badge(&a, 2).as_deref(), Some("shadowed by #1"));
    assert_eq!(badge(&a, 1), None, "the deny decides");
}

#[test]
fn redundant_with_an_earlier_rule_and_with_the_default() {
    let machines = [machine(1, 2, &["web"]), machine(2, 3, &["db"])];
    let all = policy(1, 10, Verdict::Allow, tag("web"), tag("db"));
    let ssh = tcp(
        policy(2, 20, Verdict::Allow, Selector::Any, tag("db")),
        22,
        22,
    );
    // Nothing before it, the default allows: an allow changes nothing.
    let a = analyse(&[all.clone(), ssh.clone()], &machines, Verdict::Allow);
    assert_eq!(
        badge(&a, 1).as_deref(),
        Some("redundant with #2 and the default"),
        "tcp/22 would fall to #2, the rest to the default"
    );
    assert_eq!(
        badge(&a, 2).as_deref(),
        Some("redundant with #1"),
        "db→db has one machine only, web→db is taken by #1: #2 decides nothing new"
    );
    // With the default deny, #1 matters and #2 only repeats it.
    let a = analyse(&[all, ssh], &machines, Verdict::Deny);
    assert_eq!(badge(&a, 1), None);
    assert_eq!(badge(&a, 2).as_deref(), Some("redundant with #1"));
}

#[test]
fn a_deny_before_the_established_row_is_never_redundant_with_the_default() {
    let machines = [machine(1, 2, &[]), machine(2, 3, &[])];
    let deny = policy(1, 10, Verdict::Deny, Selector::Any, Selector::Any);
    let a = analyse(&[deny], &machines, Verdict::Deny);
    assert_eq!(badge(&a, 1), None, "it also drops replies of old flows");
}

#[test]
fn dead_rules_and_page_numbers_count_disabled_ones() {
    let machines = [machine(1, 2, &["web"]), machine(2, 3, &[])];
    let mut off = policy(1, 1, Verdict::Deny, Selector::Any, Selector::Any);
    off.enabled = false;
    let nobody = policy(2, 2, Verdict::Deny, tag("ghost"), Selector::Any);
    let outside = policy(
        3,
        3,
        Verdict::Deny,
        Selector::Cidr("10.100.9.0/24".parse().unwrap()),
        Selector::Any,
    );
    let gone = policy(
        4,
        4,
        Verdict::Deny,
        Selector::Machine(id(99)),
        Selector::Any,
    );
    let web = policy(5, 5, Verdict::Deny, tag("web"), Selector::Any);
    let web_again = policy(
        6,
        6,
        Verdict::Allow,
        Selector::Machine(id(1)),
        Selector::Any,
    );
    let a = analyse(
        &[off, nobody, outside, gone, web, web_again],
        &machines,
        Verdict::Allow,
    );
    assert_eq!(badge(&a, 1), None);
    for n in [2, 3, 4] {
        assert_eq!(badge(&a, n).as_deref(), Some("matches no current machine"));
    }
    assert_eq!(badge(&a, 5), None);
    assert_eq!(badge(&a, 6).as_deref(), Some("shadowed by #5"));
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json["findings"][3]["kind"], "shadowed");
    assert_eq!(json["findings"][3]["by"][0]["number"], 5);
}

/// The analysis agrees with the evaluator: a policy with no finding changes some verdict when
/// removed; a redundant or shadowed one changes none; a shadowed one never decides.
#[test]
fn findings_agree_with_the_evaluator_on_random_chains() {
    let mut r = Rng(0x5eed_1234_abcd_0001);
    let mut seen = BTreeSet::new();
    for _ in 0..300 {
        let (machines, policies, default) = random_org(&mut r);
        let a = analyse(&policies, &machines, default);
        assert!(a.complete);
        let probes = packets(&machines);
        let chain = Chain::new(&policies, &machines, default);
        let before: Vec<_> = probes.iter().map(|p| chain.evaluate(p)).collect();
        for p in policies.iter().filter(|p| p.enabled) {
            let without: Vec<Policy> = policies.iter().filter(|q| q.id != p.id).cloned().collect();
            let other = Chain::new(&without, &machines, default);
            let changes = probes
                .iter()
                .zip(&before)
                .any(|(pk, b)| other.evaluate(pk).verdict != b.verdict);
            let decides = before.iter().any(|t| t.decided_by == Decider::Policy(p.id));
            let finding = a.of(p.id);
            seen.insert(finding.map(|f| f.badge().split(' ').next().unwrap_or("").to_string()));
            let ctx = format!(
                "{p:?} in {policies:#?} over {machines:?}, default {default:?}: {finding:?}"
            );
            match finding {
                None => assert!(changes, "{ctx}"),
                Some(Finding::Redundant { .. }) => assert!(!changes, "{ctx}"),
                Some(Finding::Shadowed { .. }) | Some(Finding::MatchesNothing) => {
                    assert!(!changes && !decides, "{ctx}")
                }
            }
        }
    }
    assert_eq!(seen.len(), 4, "every kind of finding came up: {seen:?}");
}
