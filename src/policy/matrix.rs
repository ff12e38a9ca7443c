//! The reachability matrix: for one protocol and port, can each machine (or tag) reach each
//! other one through the hub? Deny-aware and order-aware: a cell is what the chain does with a
//! connection — its first packet as new, its replies as established ([`analysis::connects`]),
//! the same rule the preview's flips follow. Pure; exact over the current machines.

use super::analysis::{self, Atom, Classes, Prepared};
use super::render::MachineAddr;
use super::{Policy, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;
use uuid::Uuid;

/// What a matrix is asked about: `tcp`/`udp` with a port, or `icmp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub proto: u8,
    pub port: Option<u16>,
}

/// A cell of a grouped (tag) matrix: every pair of its machines alike, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cell {
    Allow,
    Deny,
    Mixed,
}

impl Cell {
    pub fn as_str(&self) -> &'static str {
        match self {
            Cell::Allow => "allow",
            Cell::Deny => "deny",
            Cell::Mixed => "mixed",
        }
    }
}

/// One cell: the verdict (none for a machine to itself, or a group to itself when it has one
/// machine) and a pair to explain it by (for a mixed cell, one that is denied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub cell: Option<Cell>,
    pub example: Option<(Uuid, Uuid)>,
}

/// The chain ready to answer many cells of one probe.
pub struct Matrix<'a> {
    chain: Prepared<'a>,
    classes: Classes<'a>,
    atoms: Vec<Atom>,
    atom: Atom,
    default: Verdict,
    class_of: BTreeMap<Uuid, usize>,
    memo: BTreeMap<(usize, usize), bool>,
}

impl<'a> Matrix<'a> {
    pub fn new(
        policies: &'a [Policy],
        machines: &'a [MachineAddr],
        default: Verdict,
        probe: Probe,
    ) -> Self {
        let chain = analysis::ordered(policies, machines);
        let classes = Classes::new(machines, &chain);
        let atoms = analysis::atoms(&chain);
        let port = probe.port.unwrap_or(0);
        let atom = atoms
            .iter()
            .find(|a| {
                a.proto == probe.proto && (a.port().is_none() || (a.first..=a.last).contains(&port))
            })
            .copied()
            // A protocol the chain does not name: judged like all of them.
            .unwrap_or(*atoms.last().expect("atoms end with the other protocols"));
        let mut class_of = BTreeMap::new();
        for (i, members) in classes.members.iter().enumerate() {
            for m in members {
                class_of.insert(m.id, i);
            }
        }
        Matrix {
            chain: classes.prepare(&chain),
            classes,
            atoms,
            atom,
            default,
            class_of,
            memo: BTreeMap::new(),
        }
    }

    /// Can `src` connect to `dst`? `None` for a machine to itself or an unknown one.
    pub fn allows(&mut self, src: Uuid, dst: Uuid) -> Option<bool> {
        if src == dst {
            return None;
        }
        let key = (*self.class_of.get(&src)?, *self.class_of.get(&dst)?);
        if let Some(v) = self.memo.get(&key) {
            return Some(*v);
        }
        let v = analysis::connects(
            &self.chain,
            &self.classes,
            &self.atoms,
            key,
            &self.atom,
            self.default,
        );
        self.memo.insert(key, v);
        Some(v)
    }

    /// The cell of two groups of machines (ids): every pair of different machines in them.
    pub fn group(&mut self, rows: &[Uuid], cols: &[Uuid]) -> Entry {
        let (mut allow, mut deny) = (None, None);
        for s in rows {
            for d in cols {
                match self.allows(*s, *d) {
                    Some(true) => allow = allow.or(Some((*s, *d))),
                    Some(false) => deny = deny.or(Some((*s, *d))),
                    None => {}
                }
            }
        }
        let cell = match (allow, deny) {
            (Some(_), Some(_)) => Some(Cell::Mixed),
            (Some(_), None) => Some(Cell::Allow),
            (None, Some(_)) => Some(Cell::Deny),
            (None, None) => None,
        };
        Entry {
            cell,
            example: deny.or(allow),
        }
    }
}

#[cfg(test)]
mod tests;
