//! Netfilter over `NETLINK_NETFILTER`: the nf_tables ruleset generation (which moves on every
//! commit of any table, by us or by anyone), the rules of one chain (their handles, counters and
//! raw expressions), the members of ipsets — and one kind of write: rules moved between chains
//! by handle in one atomic batch ([`Batch`]). Rules are only ever *encoded* by
//! `iptables-restore` (and sets by `ipset restore`); a batch copies what it encoded.

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
fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    raw_attrs(buf).map(|(kind, value, _)| (kind, value))
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

/// One rule of a chain as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRule {
    /// The rule's handle: unique in its table, stable for the rule's life.
    pub handle: u64,
    pub packets: u64,
    pub bytes: u64,
    /// The `NFTA_RULE_EXPRESSIONS` and `NFTA_RULE_USERDATA` attributes as received (header
    /// included), ready to be sent again.
    pub expressions: Vec<u8>,
    pub userdata: Vec<u8>,
}

/// Every rule of `table`/`chain` (family ip), in chain order. A rule without a counter
/// expression counts `(0, 0)`.
pub async fn chain_rules(
    sock: &NlSocket,
    table: &str,
    chain: &str,
) -> Result<Vec<RawRule>, NlError> {
    let answers = dump_chain(sock, table, chain).await?;
    Ok(answers
        .iter()
        .map(|rule| {
            let (packets, bytes) = rule_counter(rule);
            let mut r = RawRule {
                handle: 0,
                packets,
                bytes,
                expressions: Vec::new(),
                userdata: Vec::new(),
            };
            for (kind, value, raw) in raw_attrs(rule) {
                match kind {
                    NFTA_RULE_HANDLE => r.handle = be64(value),
                    NFTA_RULE_EXPRESSIONS => r.expressions = raw.to_vec(),
                    NFTA_RULE_USERDATA => r.userdata = raw.to_vec(),
                    _ => {}
                }
            }
            r
        })
        .collect())
}

/// A rule's handle and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub handle: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// The handle and counters of every rule of `table`/`chain` (family ip), in chain order. A
/// rule without a counter expression counts `(0, 0)`.
pub async fn chain_counters(
    sock: &NlSocket,
    table: &str,
    chain: &str,
) -> Result<Vec<Counted>, NlError> {
    Ok(dump_chain(sock, table, chain)
        .await?
        .iter()
        .map(|rule| {
            let (packets, bytes) = rule_counter(rule);
            let handle = raw_attrs(rule)
                .find(|(k, _, _)| *k == NFTA_RULE_HANDLE)
                .map_or(0, |(_, v, _)| be64(v));
            Counted {
                handle,
                packets,
                bytes,
            }
        })
        .collect())
}

/// The attributes of every rule of `table`/`chain`, in chain order.
async fn dump_chain(sock: &NlSocket, table: &str, chain: &str) -> Result<Vec<Vec<u8>>, NlError> {
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
        .into_iter()
        .filter(|a| a.payload.len() >= NFGENMSG_LEN)
        .map(|mut a| a.payload.split_off(NFGENMSG_LEN))
        .filter(|rule| attrs(rule).any(|(k, v)| k == NFTA_RULE_CHAIN && v.starts_with(&want)))
        .collect())
}

fn be64(v: &[u8]) -> u64 {
    v.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// Like [`attrs`], with each attribute's raw bytes (header and padding-free length) as well.
fn raw_attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8], &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let (value, raw) = (&buf[4..len], &buf[..len]);
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((kind, value, raw))
    })
}

const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_BATCH_GENID: u16 = 1;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_COMPAT: u16 = 5;
const NFTA_RULE_POSITION: u16 = 6;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_RULE_COMPAT_PROTO: u16 = 1;
const NFTA_RULE_COMPAT_FLAGS: u16 = 2;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_ECHO: u16 = 0x8;
const NLM_F_APPEND: u16 = 0x800;
const NLM_F_CREATE: u16 = 0x400;

/// Where [`Batch::insert`] puts a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Right before the rule with this handle.
    Before(u64),
    /// At the end of the chain.
    End,
}

/// One nf_tables transaction in family ip: all of it is committed, or none of it. Refused as a
/// whole (`ERESTART`) if the ruleset's generation is no longer the one given, so nothing
/// committed since the caller looked can be overwritten.
pub struct Batch {
    msgs: Vec<NetlinkMessage<RawNf>>,
    /// Requests that insert a rule (their echo carries the new handle).
    inserts: usize,
}

impl Batch {
    pub fn new(generation: u32) -> Self {
        let mut payload = vec![0, 0];
        payload.extend_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
        nla(NFNL_BATCH_GENID, &generation.to_be_bytes(), &mut payload);
        Batch {
            msgs: vec![NetlinkMessage::from(RawNf {
                message_type: NFNL_MSG_BATCH_BEGIN,
                payload,
            })],
            inserts: 0,
        }
    }

    fn push(&mut self, kind: u16, flags: u16, attrs: Vec<u8>) {
        let mut payload = vec![NFPROTO_IPV4, 0, 0, 0];
        payload.extend_from_slice(&attrs);
        let mut msg = NetlinkMessage::from(RawNf {
            message_type: (NFNL_SUBSYS_NFTABLES << 8) | kind,
            payload,
        });
        msg.header.flags = NLM_F_ACK | flags;
        self.msgs.push(msg);
    }

    /// Deletes the rule `handle` of `table`/`chain`.
    pub fn delete(&mut self, table: &str, chain: &str, handle: u64) {
        let mut a = Vec::new();
        nla(NFTA_RULE_TABLE, &cstr(table), &mut a);
        nla(NFTA_RULE_CHAIN, &cstr(chain), &mut a);
        nla(NFTA_RULE_HANDLE, &handle.to_be_bytes(), &mut a);
        self.push(NFT_MSG_DELRULE, 0, a);
    }

    /// Inserts a copy of `rule` (its expressions and comment) into `table`/`chain` at `place`.
    /// `protocol` is the rule's `-p` (what `iptables` tells the kernel's x_tables matches,
    /// which the kernel does not report back).
    pub fn insert(
        &mut self,
        table: &str,
        chain: &str,
        place: Place,
        rule: &RawRule,
        protocol: Option<u8>,
    ) {
        let mut a = Vec::new();
        nla(NFTA_RULE_TABLE, &cstr(table), &mut a);
        nla(NFTA_RULE_CHAIN, &cstr(chain), &mut a);
        let mut flags = NLM_F_CREATE | NLM_F_ECHO;
        match place {
            Place::Before(handle) => nla(NFTA_RULE_POSITION, &handle.to_be_bytes(), &mut a),
            Place::End => flags |= NLM_F_APPEND,
        }
        a.extend_from_slice(&rule.expressions);
        a.resize(a.len().next_multiple_of(4), 0);
        if let Some(proto) = protocol {
            let mut compat = Vec::new();
            nla(
                NFTA_RULE_COMPAT_PROTO,
                &u32::from(proto).to_be_bytes(),
                &mut compat,
            );
            nla(NFTA_RULE_COMPAT_FLAGS, &0u32.to_be_bytes(), &mut compat);
            nla(NFTA_RULE_COMPAT | NLA_F_NESTED, &compat, &mut a);
        }
        a.extend_from_slice(&rule.userdata);
        a.resize(a.len().next_multiple_of(4), 0);
        self.push(NFT_MSG_NEWRULE, flags, a);
        self.inserts += 1;
    }

    /// Deletes the chain `table`/`chain` with its rules (refused if a rule jumps to it).
    pub fn delete_chain(&mut self, table: &str, chain: &str) {
        let mut a = Vec::new();
        nla(NFTA_CHAIN_TABLE, &cstr(table), &mut a);
        nla(NFTA_CHAIN_NAME, &cstr(chain), &mut a);
        self.push(NFT_MSG_DELCHAIN, 0, a);
    }

    /// Commits the batch; answers the handles of the inserted rules, in order (`None` if the
    /// kernel did not echo each of them). `NlError::Kernel` means the batch was refused and
    /// changed nothing; any other error leaves its fate unknown.
    pub async fn commit(mut self, sock: &NlSocket) -> Result<Option<Vec<u64>>, NlError> {
        let acks = self.msgs.len() - 1;
        if acks == 0 {
            return Ok(Some(Vec::new()));
        }
        let mut payload = vec![0, 0];
        payload.extend_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
        self.msgs.push(NetlinkMessage::from(RawNf {
            message_type: NFNL_MSG_BATCH_END,
            payload,
        }));
        let answers = sock.batch(&mut self.msgs, acks).await?;
        let handles: Vec<u64> = answers
            .iter()
            .filter(|a| a.message_type == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE)
            .filter(|a| a.payload.len() >= NFGENMSG_LEN)
            .filter_map(|a| {
                raw_attrs(&a.payload[NFGENMSG_LEN..])
                    .find(|(k, _, _)| *k == NFTA_RULE_HANDLE)
                    .map(|(_, v, _)| be64(v))
            })
            .collect();
        Ok((handles.len() == self.inserts).then_some(handles))
    }
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
    let mut sets = BTreeMap::new();
    match list_sets(sock, None, &mut sets).await {
        // The ip_set module is not loaded: there are no sets.
        Err(e) if matches!(e.errno(), Some(libc::EPROTONOSUPPORT) | Some(libc::ENOENT)) => {}
        r => r?,
    }
    Ok(sets)
}

/// The named ipsets with their IPv4 members; a set that does not exist is left out.
///
/// Cheaper than [`ipsets`] for a few sets: a dump of every set visits all of the namespace's
/// set slots (256 at least) twice, each under a lock, and answers one set per `recv`.
pub async fn ipsets_named(
    sock: &NlSocket,
    names: &[&str],
) -> Result<BTreeMap<String, BTreeSet<Ipv4Addr>>, NlError> {
    let mut sets = BTreeMap::new();
    for name in names {
        match list_sets(sock, Some(*name), &mut sets).await {
            Err(e) if matches!(e.errno(), Some(libc::EPROTONOSUPPORT) | Some(libc::ENOENT)) => {}
            r => r?,
        }
    }
    Ok(sets)
}

/// One `IPSET_CMD_LIST` dump (of one set, or of all), members added to `sets`.
async fn list_sets(
    sock: &NlSocket,
    name: Option<&str>,
    sets: &mut BTreeMap<String, BTreeSet<Ipv4Addr>>,
) -> Result<(), NlError> {
    let mut payload = vec![NFPROTO_IPV4, 0, 0, 0];
    nla(IPSET_ATTR_PROTOCOL, &[IPSET_PROTOCOL], &mut payload);
    if let Some(name) = name {
        nla(IPSET_ATTR_SETNAME, &cstr(name), &mut payload);
    }
    let mut msg = NetlinkMessage::from(RawNf {
        message_type: (u16::from(NFNL_SUBSYS_IPSET) << 8) | u16::from(IPSET_CMD_LIST),
        payload,
    });
    let answers = sock.request(&mut msg, true).await?;
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr_map(payload: &[u8]) -> BTreeMap<u16, Vec<u8>> {
        attrs(&payload[NFGENMSG_LEN..])
            .map(|(k, v)| (k, v.to_vec()))
            .collect()
    }

    #[test]
    fn a_batch_checks_the_generation_and_copies_rules_where_asked() {
        let mut expressions = Vec::new();
        nla(
            NFTA_RULE_EXPRESSIONS,
            &[1, 2, 3, 4, 5, 6, 7, 8],
            &mut expressions,
        );
        let mut userdata = Vec::new();
        nla(NFTA_RULE_USERDATA, b"comment\0", &mut userdata);
        let rule = RawRule {
            handle: 9,
            packets: 0,
            bytes: 0,
            expressions: expressions.clone(),
            userdata,
        };
        let mut b = Batch::new(7);
        b.insert("filter", "MWG-ACL", Place::Before(42), &rule, Some(6));
        b.insert("filter", "MWG-ACL", Place::End, &rule, None);
        b.delete("filter", "MWG-ACL", 5);
        b.delete_chain("filter", "MWG-STAGE");
        assert_eq!(b.inserts, 2);
        let [begin, before, end, del, chain] = &b.msgs[..] else {
            panic!("five messages");
        };
        let inner = |m: &NetlinkMessage<RawNf>| match &m.payload {
            NetlinkPayload::InnerMessage(r) => (r.message_type, r.payload.clone()),
            _ => panic!("inner"),
        };
        let (t, p) = inner(begin);
        assert_eq!(t, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(attr_map(&p)[&NFNL_BATCH_GENID], 7u32.to_be_bytes());
        // Before a handle: a position, no append; the x_tables protocol; the rule's bytes.
        let (t, p) = inner(before);
        assert_eq!(t, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE);
        assert_eq!(before.header.flags & NLM_F_APPEND, 0);
        assert_ne!(before.header.flags & NLM_F_ECHO, 0);
        let a = attr_map(&p);
        assert_eq!(a[&NFTA_RULE_POSITION], 42u64.to_be_bytes());
        assert_eq!(a[&NFTA_RULE_EXPRESSIONS], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(a[&NFTA_RULE_USERDATA], b"comment\0");
        assert_eq!(
            attrs(&a[&NFTA_RULE_COMPAT])
                .find(|(k, _)| *k == NFTA_RULE_COMPAT_PROTO)
                .map(|(_, v)| v.to_vec()),
            Some(6u32.to_be_bytes().to_vec())
        );
        assert!(p.windows(expressions.len()).any(|w| w == expressions));
        // At the end: appended, no position, no protocol.
        let a = attr_map(&inner(end).1);
        assert_ne!(end.header.flags & NLM_F_APPEND, 0);
        assert!(!a.contains_key(&NFTA_RULE_POSITION) && !a.contains_key(&NFTA_RULE_COMPAT));
        let a = attr_map(&inner(del).1);
        assert_eq!(a[&NFTA_RULE_HANDLE], 5u64.to_be_bytes());
        assert_eq!(a[&NFTA_RULE_CHAIN], b"MWG-ACL\0");
        let (t, p) = inner(chain);
        assert_eq!(t, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELCHAIN);
        assert_eq!(attr_map(&p)[&NFTA_CHAIN_NAME], b"MWG-STAGE\0");
    }
}
