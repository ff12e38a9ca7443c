//! What a change to the policies (or to the default action) would do, computed purely from the
//! chain before and after: the rule lines the kernel would lose and gain, the machine pairs and
//! ports whose connections flip (get through or not), and the static analysis of the new chain.
//! Also the reachability matrix of one chain. Exact over the org's current machines, by the
//! classes and atoms of [`super::analysis`].

use super::analysis::{self, Analysis, Atom, Classes, MAX_WORK, Prepared};
use super::render::{MachineAddr, render};
use super::{Policy, Verdict};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// At most this many flip groups, and this many example pairs in each.
pub const MAX_GROUPS: usize = 100;
pub const MAX_SAMPLE: usize = 20;

/// One side of a change: the org's policies and its default action.
#[derive(Clone, Copy)]
pub struct Side<'a> {
    pub policies: &'a [Policy],
    pub default: Verdict,
}

/// The rule lines of the ACL chain that a change removes and adds (`-A MWG-ACL …`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleDiff {
    pub removed: Vec<String>,
    pub added: Vec<String>,
    /// Lines kept on both sides but in another order.
    pub reordered: bool,
    /// The whole chain after the change, in order.
    pub after: Vec<String>,
}

/// Pairs of machines whose connections flip between getting through and not (the first packet
/// as new, the replies as established; see [`analysis::connects`]), for one port range that
/// every policy treats alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flip<P = (Uuid, Uuid)> {
    /// `tcp/22`, `udp/1-52`, `icmp`, `other` (any protocol the policies do not name).
    pub label: String,
    pub protocol: &'static str,
    /// The range (tcp and udp), and a port in it to probe with.
    pub ports: Option<String>,
    pub port: Option<u16>,
    pub from: Verdict,
    pub to: Verdict,
    /// How many (source, destination) pairs flip.
    pub pairs: usize,
    /// Some of them (machine ids here), at most [`MAX_SAMPLE`].
    pub sample: Vec<P>,
}

impl Flip {
    /// The same flip with its sample pairs described otherwise (by name, say).
    pub fn describe<P>(self, f: impl Fn(Uuid, Uuid) -> Option<P>) -> Flip<P> {
        Flip {
            sample: self.sample.iter().filter_map(|(s, d)| f(*s, *d)).collect(),
            label: self.label,
            protocol: self.protocol,
            ports: self.ports,
            port: self.port,
            from: self.from,
            to: self.to,
            pairs: self.pairs,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Impact {
    pub rules: RuleDiff,
    pub flips: Vec<Flip>,
    /// Distinct (source, destination) pairs that flip for at least one port.
    pub flipped_pairs: usize,
    /// False when the org was too large to compare cell by cell (no flips then), or when
    /// there were more than [`MAX_GROUPS`] groups.
    pub complete: bool,
    pub analysis: Analysis,
}

fn protocol_name(a: &Atom) -> &'static str {
    match a.proto {
        analysis::IPPROTO_TCP => "tcp",
        analysis::IPPROTO_UDP => "udp",
        analysis::IPPROTO_ICMP => "icmp",
        _ => "other",
    }
}

/// The lines removed and added, as a multiset difference in order.
pub fn rule_diff(before: &[String], after: &[String]) -> RuleDiff {
    fn count(v: &[String]) -> BTreeMap<&str, usize> {
        let mut m: BTreeMap<&str, usize> = BTreeMap::new();
        for l in v {
            *m.entry(l.as_str()).or_default() += 1;
        }
        m
    }
    let (mut b, mut a) = (count(before), count(after));
    let mut removed = Vec::new();
    let mut kept_before = Vec::new();
    for l in before {
        match a.get_mut(l.as_str()) {
            Some(n) if *n > 0 => {
                *n -= 1;
                kept_before.push(l);
            }
            _ => removed.push(l.clone()),
        }
    }
    let mut added = Vec::new();
    let mut kept_after = Vec::new();
    for l in after {
        match b.get_mut(l.as_str()) {
            Some(n) if *n > 0 => {
                *n -= 1;
                kept_after.push(l);
            }
            _ => added.push(l.clone()),
        }
    }
    RuleDiff {
        removed,
        added,
        reordered: kept_before != kept_after,
        after: after.to_vec(),
    }
}

/// What changing `before` into `after` does over `machines`.
pub fn impact(before: Side, after: Side, machines: &[MachineAddr]) -> Impact {
    let rules = rule_diff(
        &render(before.policies, machines, before.default).acl,
        &render(after.policies, machines, after.default).acl,
    );
    let analysis = analysis::analyse(after.policies, machines, after.default);
    let old = analysis::ordered(before.policies, machines);
    let new = analysis::ordered(after.policies, machines);
    let both: Vec<&Policy> = old.iter().chain(&new).copied().collect();
    let classes = Classes::new(machines, &both);
    let atoms = analysis::atoms(&both);
    let work = classes.len() * classes.len() * atoms.len() * both.len().max(1);
    if work > MAX_WORK {
        return Impact {
            rules,
            flips: Vec::new(),
            flipped_pairs: 0,
            complete: false,
            analysis,
        };
    }
    let (old, new) = (classes.prepare(&old), classes.prepare(&new));
    // Keyed by atom and whether it flips to deny (a flip is allow→deny or deny→allow).
    let mut groups: BTreeMap<(usize, bool), Vec<(usize, usize)>> = BTreeMap::new();
    let mut pairs: BTreeSet<(usize, usize)> = BTreeSet::new();
    for (i, atom) in atoms.iter().enumerate() {
        for s in 0..classes.len() {
            for d in 0..classes.len() {
                if !classes.has_pair(s, d) {
                    continue;
                }
                let verdict = |chain: &Prepared, default| match analysis::connects(
                    chain,
                    &classes,
                    &atoms,
                    (s, d),
                    atom,
                    default,
                ) {
                    true => Verdict::Allow,
                    false => Verdict::Deny,
                };
                let (from, to) = (verdict(&old, before.default), verdict(&new, after.default));
                if from != to {
                    groups
                        .entry((i, to == Verdict::Deny))
                        .or_default()
                        .push((s, d));
                    pairs.insert((s, d));
                }
            }
        }
    }
    let complete = groups.len() <= MAX_GROUPS;
    let flips = groups
        .into_iter()
        .take(MAX_GROUPS)
        .map(|((i, denies), cells)| {
            let atom = &atoms[i];
            let (from, to) = match denies {
                true => (Verdict::Allow, Verdict::Deny),
                false => (Verdict::Deny, Verdict::Allow),
            };
            let mut sample = Vec::new();
            for (s, d) in &cells {
                let room = MAX_SAMPLE - sample.len();
                sample.extend(classes.pair_list(*s, *d, room));
            }
            let ports = atom.port().map(|_| match atom.first == atom.last {
                true => atom.first.to_string(),
                false => format!("{}-{}", atom.first, atom.last),
            });
            Flip {
                label: atom.label(),
                protocol: protocol_name(atom),
                ports,
                port: atom.port(),
                from,
                to,
                pairs: cells.iter().map(|(s, d)| classes.pairs(*s, *d)).sum(),
                sample,
            }
        })
        .collect();
    Impact {
        rules,
        flips,
        flipped_pairs: pairs.iter().map(|(s, d)| classes.pairs(*s, *d)).sum(),
        complete,
        analysis,
    }
}

#[cfg(test)]
mod tests;
