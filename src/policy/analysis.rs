//! Static analysis of a tenant's chain over its current machines: which policies never decide
//! ("shadowed by #n") and which could be removed without changing any verdict ("redundant with
//! #m"). Exact for the machines that exist now, in the order [`super::render`] lays the chain
//! out (enabled policies by (priority, creation, id), first match wins, then for a default-deny
//! tenant the established replies, then the default).
//!
//! Exact and cheap at once: machines that every selector treats alike form one class, and
//! ports that every port range treats alike form one atom, so each (source class, destination
//! class, atom) cell stands for all the packets in it. A policy's verdict is judged for new and
//! for established packets, because a deny ahead of the established row also cuts replies.

mod cells;

pub use cells::*;

use super::render::MachineAddr;
use super::{Policy, Verdict};
use serde::Serialize;
use std::collections::BTreeSet;
use uuid::Uuid;

/// A policy as the findings name it: its id and its number on the policies page (its place
/// among all the org's policies in evaluation order, disabled ones included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PolicyRef {
    pub number: usize,
    pub id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// Never decides a packet: earlier rules decide all it matches, these with the other verdict.
    Shadowed { by: Vec<PolicyRef> },
    /// Removing it changes no verdict: these rules (or the default) would decide the same.
    Redundant { with: Vec<PolicyRef>, default: bool },
    /// Matches no packet between the org's current machines.
    MatchesNothing,
}

impl Finding {
    /// The badge text: "shadowed by #3", "redundant with #2 and the default", "matches nothing".
    pub fn badge(&self) -> String {
        let nums = |v: &[PolicyRef]| {
            v.iter()
                .map(|r| format!("#{}", r.number))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Finding::Shadowed { by } => format!("shadowed by {}", nums(by)),
            Finding::Redundant { with, default } => match (with.is_empty(), default) {
                (true, _) => "redundant with the default".into(),
                (false, false) => format!("redundant with {}", nums(with)),
                (false, true) => format!("redundant with {} and the default", nums(with)),
            },
            Finding::MatchesNothing => "matches no current machine".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyFinding {
    pub policy: PolicyRef,
    #[serde(flatten)]
    pub finding: Finding,
}

/// The findings of one chain; `complete` is false when it was too large to analyse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Analysis {
    pub complete: bool,
    pub findings: Vec<PolicyFinding>,
}

impl Analysis {
    pub fn of(&self, id: Uuid) -> Option<&Finding> {
        self.findings
            .iter()
            .find(|f| f.policy.id == id)
            .map(|f| &f.finding)
    }
}

/// The page numbers of all policies (evaluation order, disabled ones included).
pub fn numbers(policies: &[Policy]) -> Vec<PolicyRef> {
    let mut all: Vec<&Policy> = policies.iter().collect();
    all.sort_by_key(|p| (p.priority, p.created_at, p.id));
    all.iter()
        .enumerate()
        .map(|(i, p)| PolicyRef {
            number: i + 1,
            id: p.id,
        })
        .collect()
}

#[derive(Default, Clone)]
struct Tally {
    matched: bool,
    decides: bool,
    /// Decides at least one cell differently from what would decide it without it.
    useful: bool,
    covered_by: BTreeSet<usize>,
    alt: BTreeSet<usize>,
    alt_default: bool,
}

/// Shadowed, redundant and dead policies of the org's chain over its current machines.
pub fn analyse(policies: &[Policy], machines: &[MachineAddr], default: Verdict) -> Analysis {
    let numbers = numbers(policies);
    let refer = |id: Uuid| {
        numbers
            .iter()
            .find(|r| r.id == id)
            .copied()
            .unwrap_or(PolicyRef { number: 0, id })
    };
    let chain = ordered(policies, machines);
    let classes = Classes::new(machines, &chain);
    let atoms = atoms(&chain);
    let work = classes.len() * classes.len() * atoms.len() * chain.len().max(1);
    if work > MAX_WORK {
        return Analysis {
            complete: false,
            findings: Vec::new(),
        };
    }
    let prepared = classes.prepare(&chain);
    let mut tally = vec![Tally::default(); chain.len()];
    let mut hit = Vec::with_capacity(chain.len());
    for s in 0..classes.len() {
        for d in 0..classes.len() {
            if !classes.has_pair(s, d) {
                continue;
            }
            for a in &atoms {
                hit.clear();
                hit.extend(
                    prepared
                        .rules
                        .iter()
                        .enumerate()
                        .filter_map(|(i, r)| classes.matches(r, s, d, a).then_some(i)),
                );
                let Some((&first, rest)) = hit.split_first() else {
                    continue;
                };
                for &k in rest {
                    tally[k].matched = true;
                    tally[k].covered_by.insert(first);
                }
                let t = &mut tally[first];
                t.matched = true;
                t.decides = true;
                let action = chain[first].action;
                match rest.first() {
                    Some(&next) if chain[next].action == action => {
                        t.alt.insert(next);
                    }
                    // Without it, the default takes new packets and established ones pass.
                    None if action == Verdict::Allow && default == Verdict::Allow => {
                        t.alt_default = true;
                    }
                    _ => t.useful = true,
                }
            }
        }
    }
    let mut findings = Vec::new();
    let refs = |set: &BTreeSet<usize>, keep: &dyn Fn(usize) -> bool| -> Vec<PolicyRef> {
        let mut v: Vec<PolicyRef> = set
            .iter()
            .filter(|i| keep(**i))
            .map(|i| refer(chain[*i].id))
            .collect();
        v.sort();
        v
    };
    for (i, t) in tally.iter().enumerate() {
        let action = chain[i].action;
        let finding = if !t.matched {
            Finding::MatchesNothing
        } else if !t.decides {
            let by = refs(&t.covered_by, &|k| chain[k].action != action);
            if by.is_empty() {
                Finding::Redundant {
                    with: refs(&t.covered_by, &|_| true),
                    default: false,
                }
            } else {
                Finding::Shadowed { by }
            }
        } else if !t.useful {
            Finding::Redundant {
                with: refs(&t.alt, &|_| true),
                default: t.alt_default,
            }
        } else {
            continue;
        };
        findings.push(PolicyFinding {
            policy: refer(chain[i].id),
            finding,
        });
    }
    // Enabled policies that name a machine that no longer exists render no rule at all.
    for p in policies.iter().filter(|p| p.enabled) {
        if !chain.iter().any(|c| c.id == p.id) {
            findings.push(PolicyFinding {
                policy: refer(p.id),
                finding: Finding::MatchesNothing,
            });
        }
    }
    findings.sort_by_key(|f| f.policy);
    Analysis {
        complete: true,
        findings,
    }
}

#[cfg(test)]
mod tests;
