//! Netfilter over `NETLINK_NETFILTER`, read-only: the nf_tables ruleset generation (which moves
//! on every commit of any table, by us or by anyone), the packet/byte counters of one chain's
//! rules, and the members of ipsets. Writes stay with `iptables-restore` and `ipset restore`.

use super::{NlError, NlSocket};
use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_packet_netfilter::nftables::{GenAttribute, GenMessage, NfTablesMessage};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
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

/// A netfilter message kept as raw bytes: rule dumps are read by hand, because the typed
/// parser formats every expression's bytes into an error context it then throws away.
struct RawNf {
    message_type: u16,
    payload: Vec<u8>,
}

impl NetlinkSerializable for RawNf {
    fn message_type(&self) -> u16 {
        self.message_type
    }

    fn buffer_len(&self) -> usize {
        self.payload.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer.copy_from_slice(&self.payload);
    }
}

impl From<RawNf> for NetlinkPayload<RawNf> {
    fn from(m: RawNf) -> Self {
        NetlinkPayload::InnerMessage(m)
    }
}

impl NetlinkDeserializable for RawNf {
    type Error = std::convert::Infallible;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Self::Error> {
        Ok(RawNf {
            message_type: header.message_type,
            payload: payload.to_vec(),
        })
    }
}

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETRULE: u16 = 7;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
/// The nfgenmsg header before a netfilter message's attributes.
const NFGENMSG_LEN: usize = 4;
const NFPROTO_IPV4: u8 = 2;

fn nla(kind: u16, value: &[u8], out: &mut Vec<u8>) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// The attributes of `buf` as (kind without the nested and byte-order flags, value); stops at
/// the first malformed one.
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let value = &buf[4..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((kind, value))
    })
}

/// `(packets, bytes)` of one rule's counter expression, `(0, 0)` without one.
fn rule_counter(rule: &[u8]) -> (u64, u64) {
    let be = |v: &[u8]| v.try_into().map(u64::from_be_bytes).unwrap_or(0);
    for (_, elem) in attrs(rule).filter(|(k, _)| *k == NFTA_RULE_EXPRESSIONS) {
        for (_, expr) in attrs(elem).filter(|(k, _)| *k == NFTA_LIST_ELEM) {
            let mut name = &[][..];
            let mut data = &[][..];
            for (k, v) in attrs(expr) {
                match k {
                    NFTA_EXPR_NAME => name = v,
                    NFTA_EXPR_DATA => data = v,
                    _ => {}
                }
            }
            if name.split(|b| *b == 0).next() == Some(b"counter") {
                let (mut packets, mut bytes) = (0, 0);
                for (k, v) in attrs(data) {
                    match k {
                        NFTA_COUNTER_PACKETS => packets = be(v),
                        NFTA_COUNTER_BYTES => bytes = be(v),
                        _ => {}
                    }
                }
                return (packets, bytes);
            }
        }
    }
    (0, 0)
}

/// `(packets, bytes)` of every rule of `table`/`chain` (family ip), in chain order. A rule
/// without a counter expression counts `(0, 0)`.
pub async fn chain_counters(
    sock: &NlSocket,
    table: &str,
    chain: &str,
) -> Result<Vec<(u64, u64)>, NlError> {
    let mut payload = vec![NFPROTO_IPV4, 0, 0, 0];
    nla(NFTA_RULE_TABLE, &cstr(table), &mut payload);
    nla(NFTA_RULE_CHAIN, &cstr(chain), &mut payload);
    let mut msg = NetlinkMessage::from(RawNf {
        message_type: (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE,
        payload,
    });
    let answers = match sock.request(&mut msg, true).await {
        Ok(a) => a,
        // No such table or chain: no rules.
        Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let want = cstr(chain);
    Ok(answers
        .iter()
        .filter(|a| a.payload.len() >= NFGENMSG_LEN)
        .map(|a| &a.payload[NFGENMSG_LEN..])
        .filter(|rule| attrs(rule).any(|(k, v)| k == NFTA_RULE_CHAIN && v.starts_with(&want)))
        .map(rule_counter)
        .collect())
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
    let mut payload = vec![NFPROTO_IPV4, 0, 0, 0];
    nla(IPSET_ATTR_PROTOCOL, &[IPSET_PROTOCOL], &mut payload);
    let mut msg = NetlinkMessage::from(RawNf {
        message_type: (u16::from(NFNL_SUBSYS_IPSET) << 8) | u16::from(IPSET_CMD_LIST),
        payload,
    });
    let answers = match sock.request(&mut msg, true).await {
        Ok(a) => a,
        // The ip_set module is not loaded: there are no sets.
        Err(e) if matches!(e.errno(), Some(libc::EPROTONOSUPPORT) | Some(libc::ENOENT)) => {
            return Ok(BTreeMap::new());
        }
        Err(e) => return Err(e),
    };
    let mut sets: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for answer in answers.iter().filter(|a| a.payload.len() >= NFGENMSG_LEN) {
        let body = &answer.payload[NFGENMSG_LEN..];
        let Some(name) = attrs(body)
            .find(|(k, _)| *k == IPSET_ATTR_SETNAME)
            .map(|(_, v)| {
                String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or(&[])).into_owned()
            })
        else {
            continue;
        };
        // A large set arrives in several messages, each naming the set.
        let members = sets.entry(name).or_default();
        for (_, adt) in attrs(body).filter(|(k, _)| *k == IPSET_ATTR_ADT) {
            // DATA { IP { IPADDR_IPV4 } } per member.
            for (_, data) in attrs(adt).filter(|(k, _)| *k == IPSET_ATTR_DATA) {
                for (_, ip) in attrs(data).filter(|(k, _)| *k == IPSET_ATTR_IP) {
                    for (_, v4) in attrs(ip).filter(|(k, _)| *k == IPSET_ATTR_IPADDR_IPV4) {
                        if let Ok(b) = <[u8; 4]>::try_from(v4) {
                            members.insert(Ipv4Addr::from(b));
                        }
                    }
                }
            }
        }
    }
    Ok(sets)
}
