//! The cells the analysis reasons over: machines that every selector treats alike form a class,
//! ports that every port range treats alike an atom; a chain is then judged per (source class,
//! destination class, atom) cell, exactly for every packet in it.

use super::super::render::MachineAddr;
use super::super::{Policy, Protocol, Selector, Verdict};
use serde::Serialize;
use std::collections::BTreeSet;
use uuid::Uuid;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
/// The representative of every protocol the chain does not name (GRE).
pub const IPPROTO_OTHER: u8 = 47;

/// Cells × rules beyond which the analysis is not attempted (a page must stay fast).
pub const MAX_WORK: usize = 4_000_000;

/// A set of packets that every policy treats alike: one protocol, a destination port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Atom {
    /// IP protocol number; [`IPPROTO_OTHER`] stands for all unnamed protocols.
    pub proto: u8,
    /// Inclusive destination port range (tcp and udp; 0-0 otherwise).
    pub first: u16,
    pub last: u16,
}

impl Atom {
    /// `tcp/22`, `udp/8000-8100`, `icmp`, `other`.
    pub fn label(&self) -> String {
        let name = match self.proto {
            IPPROTO_TCP => "tcp",
            IPPROTO_UDP => "udp",
            IPPROTO_ICMP => return "icmp".into(),
            _ => return "other".into(),
        };
        if self.first == self.last {
            format!("{name}/{}", self.first)
        } else {
            format!("{name}/{}-{}", self.first, self.last)
        }
    }

    /// The port a probe of this atom uses (its first).
    pub fn port(&self) -> Option<u16> {
        matches!(self.proto, IPPROTO_TCP | IPPROTO_UDP).then_some(self.first)
    }
}

/// The port atoms of one protocol, cut at every range boundary the policies mention.
fn port_atoms(proto: u8, policies: &[&Policy]) -> Vec<Atom> {
    let want = if proto == IPPROTO_TCP {
        Protocol::Tcp
    } else {
        Protocol::Udp
    };
    let mut cuts: BTreeSet<u32> = BTreeSet::from([1]);
    for p in policies.iter().filter(|p| p.protocol == want) {
        if let Some(r) = p.ports {
            cuts.insert(u32::from(r.first));
            cuts.insert(u32::from(r.last) + 1);
        }
    }
    let cuts: Vec<u32> = cuts.into_iter().filter(|c| *c <= 65535).collect();
    cuts.iter()
        .enumerate()
        .map(|(i, first)| {
            let last = cuts.get(i + 1).map_or(65535, |n| n - 1);
            Atom {
                proto,
                first: *first as u16,
                last: last as u16,
            }
        })
        .collect()
}

/// Every atom the policies distinguish: tcp and udp port ranges, icmp, any other protocol.
pub fn atoms(policies: &[&Policy]) -> Vec<Atom> {
    let mut out = port_atoms(IPPROTO_TCP, policies);
    out.extend(port_atoms(IPPROTO_UDP, policies));
    for proto in [IPPROTO_ICMP, IPPROTO_OTHER] {
        out.push(Atom {
            proto,
            first: 0,
            last: 0,
        });
    }
    out
}

/// Does `p` match the packets of `a` (protocol and port)?
pub fn matches_atom(p: &Policy, a: &Atom) -> bool {
    let proto = match p.protocol {
        Protocol::Any => return true,
        Protocol::Tcp => IPPROTO_TCP,
        Protocol::Udp => IPPROTO_UDP,
        Protocol::Icmp => return a.proto == IPPROTO_ICMP,
    };
    a.proto == proto
        && p.ports
            .is_none_or(|r| r.first <= a.first && a.last <= r.last)
}

/// Does `sel` select machine `m`?
pub fn selects(sel: &Selector, m: &MachineAddr) -> bool {
    match sel {
        Selector::Any => true,
        Selector::Machine(id) => m.id == *id,
        Selector::Tag(t) => m.tags.contains(t),
        Selector::Cidr(c) => c.contains(m.address),
    }
}

/// A policy of a chain with its selectors' places among the classes' selectors.
pub struct Rule<'p> {
    pub policy: &'p Policy,
    src: Option<usize>,
    dst: Option<usize>,
}

/// A chain ready for cell-by-cell evaluation over one [`Classes`].
pub struct Prepared<'p> {
    pub rules: Vec<Rule<'p>>,
}

/// Machines grouped by how every given selector treats them.
pub struct Classes<'a> {
    /// Each class's machines (at least one), in input order.
    pub members: Vec<Vec<&'a MachineAddr>>,
    selectors: Vec<Selector>,
    /// `hits[class][selector]`.
    hits: Vec<Vec<bool>>,
}

impl<'a> Classes<'a> {
    pub fn new(machines: &'a [MachineAddr], policies: &[&Policy]) -> Self {
        let mut selectors: Vec<Selector> = Vec::new();
        for p in policies {
            for s in [&p.src, &p.dst] {
                if !selectors.contains(s) {
                    selectors.push(s.clone());
                }
            }
        }
        let mut members: Vec<Vec<&MachineAddr>> = Vec::new();
        let mut hits: Vec<Vec<bool>> = Vec::new();
        for m in machines {
            let sig: Vec<bool> = selectors.iter().map(|s| selects(s, m)).collect();
            match hits.iter().position(|h| *h == sig) {
                Some(i) => members[i].push(m),
                None => {
                    hits.push(sig);
                    members.push(vec![m]);
                }
            }
        }
        Classes {
            members,
            selectors,
            hits,
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// `chain` with each policy's selectors looked up once (the cells then test bits).
    pub fn prepare<'p>(&self, chain: &[&'p Policy]) -> Prepared<'p> {
        let index = |sel: &Selector| self.selectors.iter().position(|s| s == sel);
        Prepared {
            rules: chain
                .iter()
                .map(|p| Rule {
                    policy: p,
                    src: index(&p.src),
                    dst: index(&p.dst),
                })
                .collect(),
        }
    }

    fn hit(&self, class: usize, index: Option<usize>, sel: &Selector) -> bool {
        match index {
            Some(i) => self.hits[class][i],
            // Not one of the selectors the classes were cut by: ask a member.
            None => self.members[class].first().is_some_and(|m| selects(sel, m)),
        }
    }

    /// Does rule `r` match packets of `atom` from class `src` to class `dst`?
    pub fn matches(&self, r: &Rule, src: usize, dst: usize, atom: &Atom) -> bool {
        matches_atom(r.policy, atom)
            && self.hit(src, r.src, &r.policy.src)
            && self.hit(dst, r.dst, &r.policy.dst)
    }

    /// Is there a pair of two different machines from `src` to `dst`?
    pub fn has_pair(&self, src: usize, dst: usize) -> bool {
        src != dst || self.members[src].len() > 1
    }

    /// How many ordered pairs of different machines go from `src` to `dst`.
    pub fn pairs(&self, src: usize, dst: usize) -> usize {
        let (a, b) = (self.members[src].len(), self.members[dst].len());
        if src == dst { a * (a - 1) } else { a * b }
    }

    /// The pairs from `src` to `dst`, at most `limit` of them.
    pub fn pair_list(&self, src: usize, dst: usize, limit: usize) -> Vec<(Uuid, Uuid)> {
        let mut out = Vec::new();
        for s in &self.members[src] {
            for d in &self.members[dst] {
                if out.len() >= limit {
                    return out;
                }
                if s.id != d.id {
                    out.push((s.id, d.id));
                }
            }
        }
        out
    }
}

/// The chain of evaluation as the kernel has it: the enabled policies that render (every
/// machine they name exists), in order.
pub fn ordered<'a>(policies: &'a [Policy], machines: &[MachineAddr]) -> Vec<&'a Policy> {
    let mut out: Vec<&Policy> = policies
        .iter()
        .filter(|p| p.enabled)
        .filter(|p| {
            [&p.src, &p.dst].iter().all(|s| match s {
                Selector::Machine(id) => machines.iter().any(|m| m.id == *id),
                _ => true,
            })
        })
        .collect();
    out.sort_by_key(|p| (p.priority, p.created_at, p.id));
    out
}

/// What the chain does with a new and with an established packet of a cell, and which row
/// decided (`None`: the established row or the default).
pub fn decide(
    chain: &Prepared,
    classes: &Classes,
    src: usize,
    dst: usize,
    atom: &Atom,
    default: Verdict,
) -> (Verdict, Verdict, Option<usize>) {
    for (i, r) in chain.rules.iter().enumerate() {
        if classes.matches(r, src, dst, atom) {
            return (r.policy.action, r.policy.action, Some(i));
        }
    }
    // Established packets that no rule takes: accepted by the established row (default deny)
    // or by the default (allow).
    (default, Verdict::Allow, None)
}

/// The source ports clients pick (Linux's default `ip_local_port_range`): the destination
/// ports of the replies they get.
pub const EPHEMERAL: (u16, u16) = (32768, 60999);

/// Does a connection of `atom` from `src` to `dst` get through? Its first packet must pass as
/// new, and its replies must pass as established, whichever source port the client picked: an
/// explicit deny that matches the reply direction drops the replies (it comes before the
/// established row).
pub fn connects(
    chain: &Prepared,
    classes: &Classes,
    atoms: &[Atom],
    (src, dst): (usize, usize),
    atom: &Atom,
    default: Verdict,
) -> bool {
    if decide(chain, classes, src, dst, atom, default).0 == Verdict::Deny {
        return false;
    }
    atoms
        .iter()
        .filter(|r| r.proto == atom.proto)
        .filter(|r| r.port().is_none() || (r.last >= EPHEMERAL.0 && r.first <= EPHEMERAL.1))
        .all(|r| decide(chain, classes, dst, src, r, default).1 == Verdict::Allow)
}
