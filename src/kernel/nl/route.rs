//! Links over `NETLINK_ROUTE`: list, look up, create (kind `wireguard`) and delete, in the
//! namespace of the socket used.

use super::{NlError, NlSocket};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NetlinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};

/// A link as the kernel lists it: name, index and kind (`None` for kindless links such as `lo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
}

fn link_of(msg: &LinkMessage) -> Option<Link> {
    let mut name = None;
    let mut kind = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(k) = info {
                        kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Some(Link {
        index: msg.header.index,
        name: name?,
        kind,
    })
}

/// Every link in the socket's namespace.
pub async fn links(sock: &NlSocket) -> Result<Vec<Link>, NlError> {
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::GetLink(LinkMessage::default()));
    let answers = sock.request(&mut msg, true).await?;
    Ok(answers
        .iter()
        .filter_map(|a| match a {
            RouteNetlinkMessage::NewLink(l) => link_of(l),
            _ => None,
        })
        .collect())
}

/// The link named `name`, or `None` if there is none.
pub async fn link(sock: &NlSocket, name: &str) -> Result<Option<Link>, NlError> {
    let mut req = LinkMessage::default();
    req.attributes.push(LinkAttribute::IfName(name.to_string()));
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::GetLink(req));
    match sock.request(&mut msg, false).await {
        Ok(answers) => Ok(answers.iter().find_map(|a| match a {
            RouteNetlinkMessage::NewLink(l) => link_of(l),
            _ => None,
        })),
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `ip link add dev NAME type wireguard`. `EEXIST` if the name is taken; `EOPNOTSUPP` (or
/// `ENOENT`) where the kernel has no WireGuard.
pub async fn add_wireguard(sock: &NlSocket, name: &str) -> Result<(), NlError> {
    let mut req = LinkMessage::default();
    req.attributes.push(LinkAttribute::IfName(name.to_string()));
    req.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
            InfoKind::Wireguard,
        )]));
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::NewLink(req));
    msg.header.flags = NLM_F_CREATE | NLM_F_EXCL;
    sock.request(&mut msg, false).await.map(|_| ())
}

/// `ip link del dev NAME`; `Ok(false)` if there was no such link.
pub async fn del_link(sock: &NlSocket, name: &str) -> Result<bool, NlError> {
    let mut req = LinkMessage::default();
    req.attributes.push(LinkAttribute::IfName(name.to_string()));
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::DelLink(req));
    match sock.request(&mut msg, false).await {
        Ok(_) => Ok(true),
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(e),
    }
}
