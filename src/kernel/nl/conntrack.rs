//! Tracked flows over `NETLINK_NETFILTER` (conntrack subsystem): list the IPv4 flows of the
//! socket's namespace and delete one by its original tuple — what a narrowed policy needs to
//! cut flows that the `ESTABLISHED` shortcut would otherwise keep alive.

use super::{NlError, NlSocket};
use netlink_packet_core::NetlinkMessage;
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use std::net::{IpAddr, Ipv4Addr};

/// One tracked flow in its original direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub dport: Option<u16>,
    /// The tuple as the kernel reported it, sent back to delete the flow.
    orig: Vec<Tuple>,
}

fn flow_of(attrs: &[ConntrackAttribute]) -> Option<Flow> {
    let orig = attrs.iter().find_map(|a| match a {
        ConntrackAttribute::CtaTupleOrig(t) => Some(t),
        _ => None,
    })?;
    let (mut src, mut dst, mut proto, mut dport) = (None, None, None, None);
    for t in orig {
        match t {
            Tuple::Ip(ip) => {
                for a in ip {
                    match a {
                        IPTuple::SourceAddress(IpAddr::V4(v)) => src = Some(*v),
                        IPTuple::DestinationAddress(IpAddr::V4(v)) => dst = Some(*v),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(p) => {
                for a in p {
                    match a {
                        ProtoTuple::Protocol(n) => proto = Some(u8::from(*n)),
                        ProtoTuple::DestinationPort(d) => dport = Some(*d),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(Flow {
        src: src?,
        dst: dst?,
        proto: proto?,
        dport,
        orig: orig.clone(),
    })
}

/// Every IPv4 flow conntrack tracks in the socket's namespace.
pub async fn flows(sock: &NlSocket) -> Result<Vec<Flow>, NlError> {
    let mut msg = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
        ConntrackMessage::Get(vec![]),
    ));
    let answers = match sock.request(&mut msg, true).await {
        Ok(a) => a,
        // Conntrack not loaded in this namespace: nothing is tracked.
        Err(e) if matches!(e.errno(), Some(libc::ENOENT) | Some(libc::EPROTONOSUPPORT)) => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    Ok(answers
        .iter()
        .filter_map(|a| match &a.inner {
            NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)) => flow_of(attrs),
            _ => None,
        })
        .collect())
}

/// Forgets one flow; its next packet is judged by the chain as a new one.
pub async fn delete(sock: &NlSocket, flow: &Flow) -> Result<(), NlError> {
    let mut msg = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
        ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(flow.orig.clone())]),
    ));
    match sock.request(&mut msg, false).await {
        // Gone meanwhile (it ended, or timed out).
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
        r => r.map(|_| ()),
    }
}
