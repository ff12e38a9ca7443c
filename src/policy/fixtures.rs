//! Machines and policies for the policy module's unit tests.

use super::analysis::{IPPROTO_ICMP, IPPROTO_OTHER, IPPROTO_TCP, IPPROTO_UDP};
use super::evaluate::Packet;
use super::render::MachineAddr;
use super::{Policy, PortRange, Protocol, Selector, Verdict};
use chrono::{TimeZone, Utc};
use std::net::Ipv4Addr;
use uuid::Uuid;

pub fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

pub fn machine(n: u128, last: u8, tags: &[&str]) -> MachineAddr {
    MachineAddr {
        id: id(n),
        address: Ipv4Addr::new(10, 100, 0, last),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    }
}

pub fn policy(n: u128, priority: i32, action: Verdict, src: Selector, dst: Selector) -> Policy {
    Policy {
        id: id(n),
        name: String::new(),
        priority,
        action,
        src,
        dst,
        protocol: Protocol::Any,
        ports: None,
        enabled: true,
        created_at: Utc.timestamp_opt(1_700_000_000 + n as i64, 0).unwrap(),
    }
}

pub fn tag(t: &str) -> Selector {
    Selector::Tag(t.into())
}

/// A small deterministic generator, so failures repeat.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub const TAGS: [&str; 3] = ["a", "b", "c"];
pub const PORTS: [(u16, u16); 4] = [(22, 22), (80, 443), (443, 443), (1000, 2000)];

pub fn random_selector(r: &mut Rng, machines: &[MachineAddr]) -> Selector {
    match r.below(4) {
        0 => Selector::Any,
        1 => Selector::Machine(machines[r.below(machines.len() as u64) as usize].id),
        2 => tag(TAGS[r.below(3) as usize]),
        _ => Selector::Cidr(
            ["10.100.0.0/30", "10.100.0.4/30", "10.100.0.0/29"][r.below(3) as usize]
                .parse()
                .unwrap(),
        ),
    }
}

pub fn random_policy(r: &mut Rng, n: u128, machines: &[MachineAddr]) -> Policy {
    let action = if r.below(2) == 0 {
        Verdict::Allow
    } else {
        Verdict::Deny
    };
    let mut p = policy(
        n,
        r.below(5) as i32,
        action,
        random_selector(r, machines),
        random_selector(r, machines),
    );
    p.protocol = [Protocol::Any, Protocol::Tcp, Protocol::Udp, Protocol::Icmp][r.below(4) as usize];
    if matches!(p.protocol, Protocol::Tcp | Protocol::Udp) && r.below(3) > 0 {
        let (first, last) = PORTS[r.below(4) as usize];
        p.ports = Some(PortRange { first, last });
    }
    p.enabled = r.below(8) > 0;
    p
}

/// Every packet a probe can tell apart, between every pair of different machines.
pub fn packets(machines: &[MachineAddr]) -> Vec<Packet> {
    let mut probes: Vec<(u8, Option<u16>)> = vec![(IPPROTO_ICMP, None), (IPPROTO_OTHER, None)];
    for proto in [IPPROTO_TCP, IPPROTO_UDP] {
        for port in [
            1, 21, 22, 23, 79, 80, 200, 442, 443, 444, 999, 1000, 1500, 2000, 2001, 65535,
        ] {
            probes.push((proto, Some(port)));
        }
    }
    let mut out = Vec::new();
    for s in machines {
        for d in machines.iter().filter(|d| d.id != s.id) {
            for (proto, dport) in &probes {
                for established in [false, true] {
                    out.push(Packet {
                        src: s.address,
                        dst: d.address,
                        proto: *proto,
                        dport: *dport,
                        established,
                    });
                }
            }
        }
    }
    out
}

/// Two to six machines with random tags, up to six random policies, a random default.
pub fn random_org(r: &mut Rng) -> (Vec<MachineAddr>, Vec<Policy>, Verdict) {
    let machines: Vec<MachineAddr> = (0..(2 + r.below(5)))
        .map(|i| {
            let tags: Vec<&str> = TAGS.iter().copied().filter(|_| r.below(3) == 0).collect();
            machine(100 + u128::from(i), 1 + i as u8 * 3, &tags)
        })
        .collect();
    let policies: Vec<Policy> = (0..(1 + r.below(6)))
        .map(|n| random_policy(r, u128::from(n) + 1, &machines))
        .collect();
    let default = if r.below(2) == 0 {
        Verdict::Allow
    } else {
        Verdict::Deny
    };
    (machines, policies, default)
}

/// The oracle: the first packet passes as new, and replies to any client port pass as
/// established.
pub fn connects(chain: &super::evaluate::Chain, p: &Packet) -> Verdict {
    let replies = [32768, 45000, 60999].map(|port| Packet {
        src: p.dst,
        dst: p.src,
        dport: p.dport.map(|_| port),
        established: true,
        ..*p
    });
    let pass = |p: &Packet| chain.evaluate(p).verdict == Verdict::Allow;
    match pass(p) && replies.iter().all(pass) {
        true => Verdict::Allow,
        false => Verdict::Deny,
    }
}
