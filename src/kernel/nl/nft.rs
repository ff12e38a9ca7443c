//! Netfilter over `NETLINK_NETFILTER`, read-only: the nf_tables ruleset generation (which moves
//! on every commit of any table, by us or by anyone), the packet/byte counters of one chain's
//! rules, and the members of ipsets. Writes stay with `iptables-restore` and `ipset restore`.

use super::{NlError, NlSocket};
use netlink_packet_core::{DefaultNla, NLA_F_NESTED, NetlinkMessage, Nla, NlaBuffer, NlasIterator};
use netlink_packet_netfilter::nftables::{
    ExpressionAttribute, Expressions, GenAttribute, GenMessage, ListAttribute, NfTablesMessage,
    RuleAttribute, RuleMessage,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    NetfilterSubsystem,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// The nf_tables generation id of the socket's namespace.
pub async fn generation(sock: &NlSocket) -> Result<u32, NlError> {
    let mut msg = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 0),
        NfTablesMessage::GetGen(GenMessage { attributes: vec![] }),
    ));
    let answers = sock.request(&mut msg, false).await?;
    answers
        .iter()
        .find_map(|a| match &a.inner {
            NetfilterMessageInner::NfTables(NfTablesMessage::NewGen(g)) => {
                g.attributes.iter().find_map(|a| match a {
                    GenAttribute::Id(id) => Some(*id),
                    _ => None,
                })
            }
            _ => None,
        })
        .ok_or_else(|| NlError::Decode("no generation id".into()))
}

/// `(packets, bytes)` of every rule of `table`/`chain` (family ip), in chain order. A rule
/// without a counter expression counts `(0, 0)`.
pub async fn chain_counters(
    sock: &NlSocket,
    table: &str,
    chain: &str,
) -> Result<Vec<(u64, u64)>, NlError> {
    let mut msg = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
        NfTablesMessage::GetRule(RuleMessage {
            attributes: vec![
                RuleAttribute::Table(table.to_string()),
                RuleAttribute::Chain(chain.to_string()),
            ],
        }),
    ));
    let answers = match sock.request(&mut msg, true).await {
        Ok(a) => a,
        // No such table or chain: no rules.
        Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(answers
        .iter()
        .filter_map(|a| match &a.inner {
            NetfilterMessageInner::NfTables(NfTablesMessage::NewRule(r)) => Some(r),
            _ => None,
        })
        .filter(|r| {
            r.attributes
                .iter()
                .any(|a| matches!(a, RuleAttribute::Chain(c) if c == chain))
        })
        .map(rule_counter)
        .collect())
}

fn be_u64(v: &[u8]) -> u64 {
    v.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

fn rule_counter(rule: &RuleMessage) -> (u64, u64) {
    const NFTA_COUNTER_BYTES: u16 = 1;
    const NFTA_COUNTER_PACKETS: u16 = 2;
    for attr in &rule.attributes {
        let RuleAttribute::Expressions(list) = attr else {
            continue;
        };
        for item in list {
            let ListAttribute::Element(expr) = item else {
                continue;
            };
            for part in expr {
                if let ExpressionAttribute::Data(Expressions::Other {
                    expression_type,
                    attributes,
                }) = part
                    && expression_type == "counter"
                {
                    let get = |kind: u16| {
                        attributes
                            .iter()
                            .find(|a| a.kind() & !NLA_F_NESTED == kind)
                            .map(|a| {
                                let mut v = vec![0u8; a.value_len()];
                                a.emit_value(&mut v);
                                be_u64(&v)
                            })
                            .unwrap_or(0)
                    };
                    return (get(NFTA_COUNTER_PACKETS), get(NFTA_COUNTER_BYTES));
                }
            }
        }
    }
    (0, 0)
}

const NFNL_SUBSYS_IPSET: u8 = 6;
const IPSET_CMD_LIST: u8 = 7;
const IPSET_PROTOCOL: u8 = 7;
const IPSET_ATTR_PROTOCOL: u16 = 1;
const IPSET_ATTR_SETNAME: u16 = 2;
const IPSET_ATTR_ADT: u16 = 8;
const IPSET_ATTR_DATA: u16 = 7;
const IPSET_ATTR_IP: u16 = 1;
const IPSET_ATTR_IPADDR_IPV4: u16 = 1;

/// Every ipset in the socket's namespace with its IPv4 members (`ipset save`, natively).
pub async fn ipsets(sock: &NlSocket) -> Result<BTreeMap<String, BTreeSet<Ipv4Addr>>, NlError> {
    let mut msg = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
        NetfilterMessageInner::Other {
            subsys: NetfilterSubsystem::Other(NFNL_SUBSYS_IPSET),
            message_type: IPSET_CMD_LIST,
            attributes: vec![DefaultNla::new(IPSET_ATTR_PROTOCOL, vec![IPSET_PROTOCOL])],
        },
    ));
    let answers = match sock.request(&mut msg, true).await {
        Ok(a) => a,
        // The ip_set module is not loaded: there are no sets.
        Err(e) if matches!(e.errno(), Some(libc::EPROTONOSUPPORT) | Some(libc::ENOENT)) => {
            return Ok(BTreeMap::new());
        }
        Err(e) => return Err(e),
    };
    let mut sets: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for answer in &answers {
        let NetfilterMessageInner::Other { attributes, .. } = &answer.inner else {
            continue;
        };
        let value = |a: &DefaultNla| {
            let mut v = vec![0u8; a.value_len()];
            a.emit_value(&mut v);
            v
        };
        let Some(name) = attributes
            .iter()
            .find(|a| a.kind() & !NLA_F_NESTED == IPSET_ATTR_SETNAME)
            .map(|a| {
                let v = value(a);
                String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or(&[])).into_owned()
            })
        else {
            continue;
        };
        // A large set arrives in several messages, each naming the set.
        let members = sets.entry(name).or_default();
        for adt in attributes
            .iter()
            .filter(|a| a.kind() & !NLA_F_NESTED == IPSET_ATTR_ADT)
        {
            members.extend(adt_members(&value(adt)));
        }
    }
    Ok(sets)
}

/// The IPv4 members in an `IPSET_ATTR_ADT` payload: DATA { IP { IPADDR_IPV4 } } per member.
fn adt_members(adt: &[u8]) -> Vec<Ipv4Addr> {
    let nested = |buf: &[u8], kind: u16| -> Vec<Vec<u8>> {
        NlasIterator::new(buf)
            .filter_map(Result::ok)
            .filter(|n: &NlaBuffer<&[u8]>| n.kind() & !(NLA_F_NESTED | (1 << 14)) == kind)
            .map(|n| n.value().to_vec())
            .collect()
    };
    let mut out = Vec::new();
    for data in nested(adt, IPSET_ATTR_DATA) {
        for ip in nested(&data, IPSET_ATTR_IP) {
            for v4 in nested(&ip, IPSET_ATTR_IPADDR_IPV4) {
                if let Ok(b) = <[u8; 4]>::try_from(v4.as_slice()) {
                    out.push(Ipv4Addr::from(b));
                }
            }
        }
    }
    out
}
