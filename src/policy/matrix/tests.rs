use super::*;
use crate::policy::evaluate::{Chain, Packet};
use crate::policy::fixtures::{Rng, connects, machine, policy, random_org, tag};
use crate::policy::{PortRange, Protocol, Selector};

const PROBES: [Probe; 5] = [
    Probe {
        proto: analysis::IPPROTO_TCP,
        port: Some(22),
    },
    Probe {
        proto: analysis::IPPROTO_TCP,
        port: Some(443),
    },
    Probe {
        proto: analysis::IPPROTO_UDP,
        port: Some(1500),
    },
    Probe {
        proto: analysis::IPPROTO_UDP,
        port: Some(9),
    },
    Probe {
        proto: analysis::IPPROTO_ICMP,
        port: None,
    },
];

/// Every cell is what the evaluator says of that connection (first packet and replies).
#[test]
fn cells_equal_the_evaluator_on_random_orgs() {
    let mut r = Rng(0x3a7_71c5_0000_0042);
    for _ in 0..300 {
        let (machines, policies, default) = random_org(&mut r);
        let chain = Chain::new(&policies, &machines, default);
        for probe in PROBES {
            let mut m = Matrix::new(&policies, &machines, default, probe);
            for s in &machines {
                for d in &machines {
                    let got = m.allows(s.id, d.id);
                    if s.id == d.id {
                        assert_eq!(got, None);
                        continue;
                    }
                    let p = Packet {
                        src: s.address,
                        dst: d.address,
                        proto: probe.proto,
                        dport: probe.port,
                        established: false,
                    };
                    let want = connects(&chain, &p) == Verdict::Allow;
                    assert_eq!(got, Some(want), "{p:?} in {policies:#?} over {machines:?}");
                }
            }
        }
    }
}

#[test]
fn tag_cells_are_allow_deny_or_mixed_with_an_example_to_explain() {
    let machines = [
        machine(1, 2, &["web"]),
        machine(2, 3, &["web"]),
        machine(3, 4, &["db"]),
    ];
    let mut ssh = policy(
        9,
        10,
        Verdict::Deny,
        Selector::Machine(machines[0].id),
        tag("db"),
    );
    ssh.protocol = Protocol::Tcp;
    ssh.ports = Some(PortRange {
        first: 22,
        last: 22,
    });
    let policies = [ssh];
    let mut m = Matrix::new(&policies, &machines, Verdict::Allow, PROBES[0]);
    let web = [machines[0].id, machines[1].id];
    let db = [machines[2].id];
    let e = m.group(&web, &db);
    assert_eq!(e.cell, Some(Cell::Mixed));
    assert_eq!(
        e.example,
        Some((machines[0].id, machines[2].id)),
        "the denied pair"
    );
    assert_eq!(m.group(&db, &web).cell, Some(Cell::Allow));
    assert_eq!(m.group(&web, &web).cell, Some(Cell::Allow), "web1↔web2");
    assert_eq!(
        m.group(&db, &db),
        Entry {
            cell: None,
            example: None
        }
    );
    let mut other = Matrix::new(&policies, &machines, Verdict::Allow, PROBES[1]);
    assert_eq!(
        other.group(&web, &db).cell,
        Some(Cell::Allow),
        "443 is not 22"
    );
}
