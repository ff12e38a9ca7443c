//! The chain walked for one path with the reason for every field of every row: "why can't A
//! reach B?". Computed by the same matching as [`Chain::evaluate`] (a unit test holds the two
//! equal), so what it says is what the kernel does with the packet.

use super::{Chain, Decider, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Packet};
use crate::policy::{Policy, Protocol, Selector, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use uuid::Uuid;

/// Where Linux picks a client's source port from (`ip_local_port_range`): a reply goes there.
pub const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 32768..=60999;

/// One condition of a row and how the packet fared against it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldWhy {
    pub ok: bool,
    /// The condition as the row has it: `any`, `tag web`, `machine laptop`, `10.100.0.0/24`,
    /// `tcp`, `22`.
    pub rule: String,
    /// Why the packet meets it or not, in words.
    pub why: String,
}

/// One row of the chain with the reason for each of its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExplainedRow {
    /// The policy's number on the policies page (`None` for the implicit rows).
    pub number: Option<usize>,
    pub decider: Decider,
    pub action: Verdict,
    pub src: FieldWhy,
    pub dst: FieldWhy,
    pub protocol: FieldWhy,
    pub port: FieldWhy,
    /// The conntrack condition of the `established` row.
    pub state: Option<FieldWhy>,
    pub matched: bool,
}

/// The chain walked for one packet, every row up to the deciding one, with reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explained {
    pub verdict: Verdict,
    pub decided_by: Decider,
    /// The deciding policy's number on the policies page (`None`: an implicit row).
    pub number: Option<usize>,
    pub rows: Vec<ExplainedRow>,
}

/// A path A → B: its first packet, and a reply B → A of the same flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathExplained {
    pub forward: Explained,
    pub reply: Explained,
    /// Whether the protocol needs the reply to work at all (TCP's handshake, ping's echo
    /// reply); a UDP datagram arrives whatever happens to replies.
    pub reply_needed: bool,
    /// What a real probe sees: the first packet passes, and its reply too where one is needed.
    pub reachable: bool,
}

fn proto_name(proto: u8) -> String {
    match proto {
        IPPROTO_TCP => "tcp".into(),
        IPPROTO_UDP => "udp".into(),
        IPPROTO_ICMP => "icmp".into(),
        n => format!("protocol {n}"),
    }
}

impl Chain<'_> {
    fn selector_text(&self, sel: &Selector, names: &BTreeMap<Uuid, String>) -> String {
        match sel {
            Selector::Any => "any".into(),
            Selector::Machine(id) => match names.get(id) {
                Some(n) => format!("machine {n}"),
                None => format!("machine {id}"),
            },
            Selector::Tag(t) => format!("tag {t}"),
            Selector::Cidr(c) => c.to_string(),
        }
    }

    fn who(&self, ip: Ipv4Addr, names: &BTreeMap<Uuid, String>) -> String {
        match self
            .all
            .iter()
            .find(|m| m.address == ip)
            .and_then(|m| names.get(&m.id))
        {
            Some(n) => format!("{ip} ({n})"),
            None => ip.to_string(),
        }
    }

    fn why_selector(
        &self,
        sel: &Selector,
        ip: Ipv4Addr,
        names: &BTreeMap<Uuid, String>,
    ) -> FieldWhy {
        let ok = self.selects(sel, ip);
        let rule = self.selector_text(sel, names);
        let who = self.who(ip, names);
        let why = match (sel, ok) {
            (Selector::Any, _) => "any address".into(),
            (Selector::Machine(_), true) => format!("{who} is that machine"),
            (Selector::Machine(id), false) => match self.machines.get(id) {
                Some(m) => format!("{who} is not that machine ({})", m.address),
                None => "that machine no longer exists".into(),
            },
            (Selector::Tag(t), true) => format!("{who} carries tag {t}"),
            (Selector::Tag(t), false) => format!("{who} does not carry tag {t}"),
            (Selector::Cidr(c), true) => format!("{ip} is inside {c}"),
            (Selector::Cidr(c), false) => format!("{ip} is outside {c}"),
        };
        FieldWhy { ok, rule, why }
    }

    fn why_protocol(policy: &Policy, p: &Packet) -> FieldWhy {
        let (ok, want) = match policy.protocol {
            Protocol::Any => (true, None),
            Protocol::Tcp => (p.proto == IPPROTO_TCP, Some(IPPROTO_TCP)),
            Protocol::Udp => (p.proto == IPPROTO_UDP, Some(IPPROTO_UDP)),
            Protocol::Icmp => (p.proto == IPPROTO_ICMP, Some(IPPROTO_ICMP)),
        };
        let have = proto_name(p.proto);
        let why = match want {
            None => "any protocol".into(),
            Some(_) if ok => format!("{have} is {}", policy.protocol.as_str()),
            Some(_) => format!("{have} is not {}", policy.protocol.as_str()),
        };
        FieldWhy {
            ok,
            rule: policy.protocol.as_str().into(),
            why,
        }
    }

    fn why_port(policy: &Policy, p: &Packet) -> FieldWhy {
        let range = match (policy.protocol, policy.ports) {
            (Protocol::Tcp | Protocol::Udp, Some(r)) => r,
            _ => {
                return FieldWhy {
                    ok: true,
                    rule: "any".into(),
                    why: "no port condition".into(),
                };
            }
        };
        let ok = p
            .dport
            .is_some_and(|d| (range.first..=range.last).contains(&d));
        let why = match p.dport {
            Some(d) if ok => format!("{d} is in {range}"),
            Some(d) => format!("{d} is not in {range}"),
            None if p.established => {
                let overlaps =
                    range.first <= *EPHEMERAL_PORTS.end() && range.last >= *EPHEMERAL_PORTS.start();
                if overlaps {
                    format!(
                        "the reply goes to the sender's ephemeral port (unknown, {}-{}), taken as outside {range}; it may fall inside",
                        EPHEMERAL_PORTS.start(),
                        EPHEMERAL_PORTS.end()
                    )
                } else {
                    format!(
                        "the reply goes to the sender's ephemeral port ({}-{}), outside {range}",
                        EPHEMERAL_PORTS.start(),
                        EPHEMERAL_PORTS.end()
                    )
                }
            }
            None => format!("{} has no port", proto_name(p.proto)),
        };
        FieldWhy {
            ok,
            rule: range.to_string(),
            why,
        }
    }

    /// Walks the chain for `p` like [`Chain::evaluate`], with the reason for every field;
    /// `names` names machines in the reasons.
    pub fn explain(&self, p: &Packet, names: &BTreeMap<Uuid, String>) -> Explained {
        let any = || FieldWhy {
            ok: true,
            rule: "any".into(),
            why: "every packet".into(),
        };
        let mut rows = Vec::new();
        for policy in &self.policies {
            let src = self.why_selector(&policy.src, p.src, names);
            let dst = self.why_selector(&policy.dst, p.dst, names);
            let protocol = Self::why_protocol(policy, p);
            let port = Self::why_port(policy, p);
            let matched = src.ok && dst.ok && protocol.ok && port.ok;
            let number = self.numbers.get(&policy.id).copied();
            rows.push(ExplainedRow {
                number,
                decider: Decider::Policy(policy.id),
                action: policy.action,
                src,
                dst,
                protocol,
                port,
                state: None,
                matched,
            });
            if matched {
                return Explained {
                    verdict: policy.action,
                    decided_by: Decider::Policy(policy.id),
                    number,
                    rows,
                };
            }
        }
        if self.default == Verdict::Deny {
            let matched = p.established;
            let why = if matched {
                "a reply (or later packet) of a flow the kernel already tracks"
            } else {
                "the first packet of a new flow (conntrack state NEW)"
            };
            rows.push(ExplainedRow {
                number: None,
                decider: Decider::Established,
                action: Verdict::Allow,
                src: any(),
                dst: any(),
                protocol: any(),
                port: any(),
                state: Some(FieldWhy {
                    ok: matched,
                    rule: "RELATED,ESTABLISHED".into(),
                    why: why.into(),
                }),
                matched,
            });
            if matched {
                return Explained {
                    verdict: Verdict::Allow,
                    decided_by: Decider::Established,
                    number: None,
                    rows,
                };
            }
        }
        rows.push(ExplainedRow {
            number: None,
            decider: Decider::Default,
            action: self.default,
            src: any(),
            dst: any(),
            protocol: any(),
            port: any(),
            state: None,
            matched: true,
        });
        Explained {
            verdict: self.default,
            decided_by: Decider::Default,
            number: None,
            rows,
        }
    }

    /// The path `src → dst` for `proto` (and `dport`, for TCP and UDP): its first packet, and
    /// a reply of the same flow (to the sender's ephemeral port, which no rule is told).
    pub fn explain_path(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        dport: Option<u16>,
        names: &BTreeMap<Uuid, String>,
    ) -> PathExplained {
        let forward = self.explain(
            &Packet {
                src,
                dst,
                proto,
                dport,
                established: false,
            },
            names,
        );
        let reply = self.explain(
            &Packet {
                src: dst,
                dst: src,
                proto,
                dport: None,
                established: true,
            },
            names,
        );
        let reply_needed = proto != IPPROTO_UDP;
        let reachable =
            forward.verdict == Verdict::Allow && (!reply_needed || reply.verdict == Verdict::Allow);
        PathExplained {
            forward,
            reply,
            reply_needed,
            reachable,
        }
    }
}

/// A row in one line, as the trace shows it: `src tag staff ✓ · dst any ✓ · proto tcp ✓ ·
/// port 22 ✓ → deny (#3)`.
pub fn summary(row: &ExplainedRow) -> String {
    let mark = |f: &FieldWhy| if f.ok { "✓" } else { "✗" };
    let mut s = format!(
        "src {} {} · dst {} {} · proto {} {} · port {} {}",
        row.src.rule,
        mark(&row.src),
        row.dst.rule,
        mark(&row.dst),
        row.protocol.rule,
        mark(&row.protocol),
        row.port.rule,
        mark(&row.port)
    );
    if let Some(state) = &row.state {
        s.push_str(&format!(" · state {} {}", state.rule, mark(state)));
    }
    let what = match row.decider {
        Decider::Policy(_) => row.number.map(|n| format!("#{n}")).unwrap_or_default(),
        Decider::Established => "established".into(),
        Decider::Default => "default".into(),
    };
    if row.matched {
        s.push_str(&format!(" → {} ({what})", row.action.as_str()));
    } else {
        s.push_str(&format!(" → no match ({what})"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::tests::{machine, policy};
    use super::*;
    use crate::policy::PortRange;
    use crate::policy::render::MachineAddr;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 100, 0, last)
    }

    fn names() -> BTreeMap<Uuid, String> {
        [(1, "web1"), (2, "db"), (3, "laptop")]
            .into_iter()
            .map(|(n, s)| (Uuid::from_u128(n), s.to_string()))
            .collect()
    }

    /// A mixed chain: tag, machine and CIDR selectors, ports, a disabled policy (which keeps
    /// its number on the policies page) and an icmp rule.
    fn mixed() -> (Vec<MachineAddr>, Vec<Policy>) {
        let machines = vec![
            machine(1, 2, &["web"]),
            machine(2, 3, &["db"]),
            machine(3, 4, &["staff", "web"]),
        ];
        let mut ssh = policy(
            10,
            10,
            Verdict::Deny,
            Selector::Tag("staff".into()),
            Selector::Any,
        );
        ssh.protocol = Protocol::Tcp;
        ssh.ports = Some(PortRange {
            first: 22,
            last: 22,
        });
        let mut off = policy(11, 5, Verdict::Deny, Selector::Any, Selector::Any);
        off.enabled = false;
        let mut web = policy(
            12,
            20,
            Verdict::Allow,
            Selector::Tag("web".into()),
            Selector::Machine(Uuid::from_u128(2)),
        );
        web.protocol = Protocol::Tcp;
        web.ports = Some(PortRange {
            first: 5000,
            last: 5100,
        });
        let mut icmp = policy(
            13,
            30,
            Verdict::Deny,
            Selector::Cidr("10.100.0.0/30".parse().unwrap()),
            Selector::Any,
        );
        icmp.protocol = Protocol::Icmp;
        let udp = {
            let mut p = policy(
                14,
                40,
                Verdict::Allow,
                Selector::Any,
                Selector::Tag("db".into()),
            );
            p.protocol = Protocol::Udp;
            p
        };
        (machines, vec![ssh, off, web, icmp, udp])
    }

    #[test]
    fn explain_agrees_with_evaluate_on_every_packet() {
        let (machines, policies) = mixed();
        for default in [Verdict::Allow, Verdict::Deny] {
            let chain = Chain::new(&policies, &machines, default);
            for s in 2..=5u8 {
                for d in 2..=5u8 {
                    for proto in [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP] {
                        for port in [None, Some(22), Some(80), Some(5000), Some(5100)] {
                            for established in [false, true] {
                                let p = Packet {
                                    src: ip(s),
                                    dst: ip(d),
                                    proto,
                                    dport: port.filter(|_| proto != IPPROTO_ICMP),
                                    established,
                                };
                                let t = chain.evaluate(&p);
                                let e = chain.explain(&p, &names());
                                assert_eq!((t.verdict, t.decided_by), (e.verdict, e.decided_by));
                                assert_eq!(t.rows.len(), e.rows.len());
                                for (a, b) in t.rows.iter().zip(&e.rows) {
                                    assert_eq!(
                                        (a.src, a.dst, a.protocol, a.port, a.matched),
                                        (b.src.ok, b.dst.ok, b.protocol.ok, b.port.ok, b.matched),
                                        "{p:?}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_denied_path_names_the_row_and_why_each_field_matched() {
        let (machines, policies) = mixed();
        let chain = Chain::new(&policies, &machines, Verdict::Deny);
        let path = chain.explain_path(ip(4), ip(3), IPPROTO_TCP, Some(22), &names());
        let f = &path.forward;
        assert_eq!(f.verdict, Verdict::Deny);
        assert_eq!(f.decided_by, Decider::Policy(Uuid::from_u128(10)));
        // The disabled policy (priority 5) is #1 on the policies page; the deny is #2.
        assert_eq!(f.number, Some(2));
        assert_eq!(f.rows.len(), 1);
        let row = &f.rows[0];
        assert_eq!(row.src.why, "10.100.0.4 (laptop) carries tag staff");
        assert_eq!(row.port.why, "22 is in 22");
        assert_eq!(
            summary(row),
            "src tag staff ✓ · dst any ✓ · proto tcp ✓ · port 22 ✓ → deny (#2)"
        );
        assert!(!path.reachable);

        // Allowed by the tag rule; the reply passes as established (default deny).
        let path = chain.explain_path(ip(2), ip(3), IPPROTO_TCP, Some(5050), &names());
        assert_eq!(path.forward.verdict, Verdict::Allow);
        assert_eq!(path.forward.number, Some(3));
        assert_eq!(
            path.forward.rows[0].src.why,
            "10.100.0.2 (web1) does not carry tag staff"
        );
        assert_eq!(path.reply.decided_by, Decider::Established);
        let reply_web = &path.reply.rows[1];
        assert!(!reply_web.src.ok, "db does not carry web");
        assert!(path.reachable);

        // No policy: the default decides, after the established row said NEW.
        let path = chain.explain_path(ip(3), ip(2), IPPROTO_UDP, Some(53), &names());
        assert_eq!(path.forward.decided_by, Decider::Default);
        let est = &path.forward.rows[path.forward.rows.len() - 2];
        assert_eq!(est.decider, Decider::Established);
        assert!(!est.state.as_ref().unwrap().ok);
        assert!(!path.reachable);
    }

    #[test]
    fn the_reply_direction_decides_reachability_for_tcp_and_icmp_only() {
        let machines = [machine(1, 2, &[]), machine(2, 3, &[])];
        // Default allow: no established shortcut; a deny back from .3 drops the replies.
        let back = policy(
            1,
            10,
            Verdict::Deny,
            Selector::Machine(Uuid::from_u128(2)),
            Selector::Machine(Uuid::from_u128(1)),
        );
        let policies = [back];
        let chain = Chain::new(&policies, &machines, Verdict::Allow);
        let n = names();
        let tcp = chain.explain_path(ip(2), ip(3), IPPROTO_TCP, Some(80), &n);
        assert_eq!(tcp.forward.verdict, Verdict::Allow);
        assert_eq!(tcp.reply.verdict, Verdict::Deny);
        assert!(!tcp.reachable);
        let ping = chain.explain_path(ip(2), ip(3), IPPROTO_ICMP, None, &n);
        assert!(!ping.reachable);
        let udp = chain.explain_path(ip(2), ip(3), IPPROTO_UDP, Some(53), &n);
        assert!(
            udp.reachable,
            "a datagram arrives whatever happens to replies"
        );
        assert!(!udp.reply_needed);
    }

    #[test]
    fn a_reply_never_matches_a_port_rule_and_says_so() {
        let machines = [machine(1, 2, &[]), machine(2, 3, &[])];
        let mut high = policy(1, 10, Verdict::Deny, Selector::Any, Selector::Any);
        high.protocol = Protocol::Tcp;
        high.ports = Some(PortRange {
            first: 40000,
            last: 40010,
        });
        let policies = [high];
        let chain = Chain::new(&policies, &machines, Verdict::Allow);
        let path = chain.explain_path(ip(2), ip(3), IPPROTO_TCP, Some(80), &names());
        let port = &path.reply.rows[0].port;
        assert!(!port.ok);
        assert!(port.why.contains("it may fall inside"), "{}", port.why);
        let path = chain.explain_path(ip(2), ip(3), IPPROTO_ICMP, None, &names());
        assert_eq!(path.forward.rows[0].protocol.why, "icmp is not tcp");
        assert_eq!(path.forward.rows[0].port.why, "icmp has no port");
    }
}
