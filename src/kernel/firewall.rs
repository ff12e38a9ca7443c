//! The tenant firewall through iptables (whatever flavour `iptables` is on the host) and ipset.
//!
//! Reading: `iptables-save -c` (rules with counters) and `ipset save`. Writing: one
//! `iptables-restore --noflush -c` transaction that sets FORWARD's policy to DROP, leaves exactly
//! one rule in FORWARD (the jump to the ACL chain) and rewrites the ACL chain, carrying the
//! counters of rules that stay. Tag sets are replaced by building a new set and swapping it in.

use super::{Firewall, FirewallObserved, FirewallRules, KResult, RuleObserved};
use crate::cmd::Cmd;
use crate::names::{ACL_CHAIN, TENANT_IFACE, TenantNames};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The one rule FORWARD must hold.
pub fn forward_jump() -> String {
    format!("-A FORWARD -i {TENANT_IFACE} -o {TENANT_IFACE} -j {ACL_CHAIN}")
}

#[derive(Debug, Default, Clone)]
pub struct Iptables;

/// Splits an `iptables-save -c` rule line into counters and rule text.
fn split_counters(line: &str) -> (u64, u64, &str) {
    if let Some(rest) = line.strip_prefix('[')
        && let Some((counts, rule)) = rest.split_once("] ")
        && let Some((p, b)) = counts.split_once(':')
    {
        return (p.parse().unwrap_or(0), b.parse().unwrap_or(0), rule);
    }
    (0, 0, line)
}

/// Parses `iptables-save -c` output into what the planner compares.
pub fn parse_save(text: &str) -> FirewallObserved {
    let mut obs = FirewallObserved::default();
    let mut table = "";
    let acl_decl = format!(":{ACL_CHAIN} ");
    let acl_rule = format!("-A {ACL_CHAIN} ");
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = if t == "filter" {
                "filter"
            } else if t == "nat" {
                "nat"
            } else {
                "other"
            };
            continue;
        }
        match table {
            "filter" => {
                if let Some(rest) = line.strip_prefix(":FORWARD ") {
                    obs.forward_policy = rest.split_whitespace().next().map(str::to_string);
                } else if line.starts_with(&acl_decl) {
                    obs.acl.get_or_insert_with(Vec::new);
                } else {
                    let (packets, bytes, rule) = split_counters(line);
                    if rule.starts_with("-A FORWARD ") {
                        obs.forward.push(rule.to_string());
                    } else if rule.starts_with(&acl_rule) {
                        obs.acl.get_or_insert_with(Vec::new).push(RuleObserved {
                            rule: rule.to_string(),
                            packets,
                            bytes,
                        });
                    }
                }
            }
            "nat" => {
                let (_, _, rule) = split_counters(line);
                if rule.starts_with("-A ") {
                    obs.nat.push(rule.to_string());
                }
            }
            _ => {}
        }
    }
    obs
}

/// Parses `ipset save`: `create NAME hash:ip …` and `add NAME 10.0.0.2` lines.
pub fn parse_ipset(text: &str) -> BTreeMap<String, BTreeSet<Ipv4Addr>> {
    let mut sets: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match (f.next(), f.next(), f.next()) {
            (Some("create"), Some(name), _) => {
                sets.entry(name.to_string()).or_default();
            }
            (Some("add"), Some(name), Some(member)) => {
                if let Ok(ip) = member.trim_end_matches("/32").parse() {
                    sets.entry(name.to_string()).or_default().insert(ip);
                }
            }
            _ => {}
        }
    }
    sets
}

/// The `iptables-restore --noflush -c` transaction for a tenant.
pub fn restore_script(rules: &FirewallRules, carry: &BTreeMap<String, (u64, u64)>) -> String {
    let mut s = String::from("*filter\n:FORWARD DROP [0:0]\n");
    let _ = writeln!(s, ":{ACL_CHAIN} - [0:0]");
    s.push_str("-F FORWARD\n");
    let _ = writeln!(s, "[0:0] {}", forward_jump());
    for rule in &rules.acl {
        let (p, b) = carry.get(rule).copied().unwrap_or((0, 0));
        let _ = writeln!(s, "[{p}:{b}] {rule}");
    }
    s.push_str("COMMIT\n");
    s
}

/// The `ipset restore` script that replaces each desired set atomically (build, then swap).
pub fn ipset_script(sets: &BTreeMap<String, BTreeSet<Ipv4Addr>>) -> String {
    let mut s = String::new();
    for (name, members) in sets {
        let tmp = format!("{name}-n");
        let _ = writeln!(s, "create {name} hash:ip family inet");
        let _ = writeln!(s, "create {tmp} hash:ip family inet");
        let _ = writeln!(s, "flush {tmp}");
        for ip in members {
            let _ = writeln!(s, "add {tmp} {ip}");
        }
        let _ = writeln!(s, "swap {tmp} {name}");
        let _ = writeln!(s, "destroy {tmp}");
    }
    s
}

#[async_trait::async_trait]
impl Firewall for Iptables {
    async fn observe(&self, names: &TenantNames) -> KResult<FirewallObserved> {
        let save = Cmd::new("iptables-save")
            .arg("-c")
            .netns(&names.netns)
            .run()
            .await?;
        let mut obs = parse_save(&save);
        let sets = Cmd::new("ipset")
            .arg("save")
            .netns(&names.netns)
            .run()
            .await?;
        obs.sets = parse_ipset(&sets);
        Ok(obs)
    }

    async fn apply(
        &self,
        names: &TenantNames,
        rules: &FirewallRules,
        carry: &BTreeMap<String, (u64, u64)>,
    ) -> KResult<()> {
        let before = Cmd::new("ipset")
            .arg("save")
            .netns(&names.netns)
            .run()
            .await?;
        if !rules.sets.is_empty() {
            Cmd::new("ipset")
                .args(["-exist", "restore"])
                .netns(&names.netns)
                .stdin(ipset_script(&rules.sets).into_bytes())
                .run()
                .await?;
        }
        Cmd::new("iptables-restore")
            .args(["--noflush", "--counters"])
            .netns(&names.netns)
            .stdin(restore_script(rules, carry).into_bytes())
            .run()
            .await?;
        // Sets no rule needs any more; only now unreferenced, so they can go.
        for name in parse_ipset(&before)
            .keys()
            .filter(|n| !rules.sets.contains_key(*n))
        {
            Cmd::new("ipset")
                .args(["destroy", name])
                .netns(&names.netns)
                .run()
                .await?;
        }
        Ok(())
    }

    async fn flush_nat(&self, names: &TenantNames) -> KResult<()> {
        for args in [["-t", "nat", "-F"], ["-t", "nat", "-X"]] {
            Cmd::new("iptables")
                .args(args)
                .netns(&names.netns)
                .run()
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [12:1000]
:OUTPUT ACCEPT [0:0]
:MWG-ACL - [0:0]
[3:180] -A FORWARD -j ACCEPT
[40:3360] -A FORWARD -i wg0 -o wg0 -j MWG-ACL
[5:420] -A MWG-ACL -s 10.100.0.2/32 -d 10.100.0.3/32 -p icmp -m comment --comment \"mwg:p1\" -j DROP
[35:2940] -A MWG-ACL -m comment --comment \"mwg:default\" -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
[0:0] -A POSTROUTING -j MASQUERADE
COMMIT
";

    #[test]
    fn parses_filter_and_nat() {
        let o = parse_save(SAVE);
        assert_eq!(o.forward_policy.as_deref(), Some("DROP"));
        assert_eq!(
            o.forward,
            vec!["-A FORWARD -j ACCEPT".to_string(), forward_jump()]
        );
        let acl = o.acl.unwrap();
        assert_eq!(acl.len(), 2);
        assert_eq!((acl[0].packets, acl[0].bytes), (5, 420));
        assert!(acl[0].rule.starts_with("-A MWG-ACL -s 10.100.0.2/32"));
        assert_eq!(o.nat, vec!["-A POSTROUTING -j MASQUERADE".to_string()]);
    }

    #[test]
    fn missing_chain_is_none() {
        let o = parse_save("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n");
        assert_eq!(o.acl, None);
        assert_eq!(o.forward_policy.as_deref(), Some("ACCEPT"));
        assert!(o.forward.is_empty());
    }

    #[test]
    fn restore_script_carries_counters() {
        let rules = FirewallRules {
            acl: vec!["-A MWG-ACL -m comment --comment \"mwg:default\" -j ACCEPT".into()],
            sets: Default::default(),
        };
        let carry = BTreeMap::from([(rules.acl[0].clone(), (7, 700))]);
        let s = restore_script(&rules, &carry);
        assert_eq!(
            s,
            "*filter\n:FORWARD DROP [0:0]\n:MWG-ACL - [0:0]\n-F FORWARD\n[0:0] -A FORWARD -i wg0 -o wg0 -j MWG-ACL\n[7:700] -A MWG-ACL -m comment --comment \"mwg:default\" -j ACCEPT\nCOMMIT\n"
        );
    }

    #[test]
    fn ipset_parse_and_script() {
        let sets = parse_ipset(
            "create mwgtabc hash:ip family inet hashsize 1024 maxelem 65536\nadd mwgtabc 10.1.0.2\nadd mwgtabc 10.1.0.3\ncreate other hash:ip family inet\n",
        );
        assert_eq!(sets["mwgtabc"].len(), 2);
        assert!(sets["other"].is_empty());
        let script = ipset_script(&sets);
        assert!(script.contains("swap mwgtabc-n mwgtabc\n"));
        assert!(script.contains("add mwgtabc-n 10.1.0.2\n"));
    }
}
