//! Links, addresses and routes over `NETLINK_ROUTE`, in the namespace of the socket used: the
//! native replacement for `ip -j … show`, `ip link add/set/del`, `ip address …`, `ip route del`.

use super::{NlError, NlSocket};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NetlinkMessage};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet, AfSpecInet6, AfSpecUnspec, InfoKind, LinkAttribute, LinkExtentMask, LinkFlags,
    LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

/// A link as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `None` for kindless links such as `lo`.
    pub kind: Option<String>,
    pub mtu: u32,
    pub up: bool,
    /// The link's own `disable_ipv6` (`None` when the kernel reports no IPv6 state for it).
    pub ipv6_disabled: Option<bool>,
    /// The link's own IPv4 `send_redirects` (`None` when not reported).
    pub send_redirects: Option<bool>,
}

fn link_of(msg: &LinkMessage) -> Option<Link> {
    let mut name = None;
    let mut kind = None;
    let mut mtu = 0;
    let mut ipv6_disabled = None;
    let mut send_redirects = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Mtu(m) => mtu = *m,
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(k) = info {
                        kind = Some(k.to_string());
                    }
                }
            }
            LinkAttribute::AfSpecUnspec(specs) => {
                for spec in specs {
                    match spec {
                        AfSpecUnspec::Inet6(v6) => {
                            for a in v6 {
                                if let AfSpecInet6::DevConf(conf) = a {
                                    ipv6_disabled = Some(conf.disable_ipv6 != 0);
                                }
                            }
                        }
                        AfSpecUnspec::Inet(v4) => {
                            for a in v4 {
                                if let AfSpecInet::DevConf(conf) = a {
                                    send_redirects = Some(conf.send_redirects != 0);
                                }
                            }
                        }
                        _ => {}
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
        mtu,
        up: msg.header.flags.contains(LinkFlags::Up),
        ipv6_disabled,
        send_redirects,
    })
}

/// Every link in the socket's namespace.
pub async fn links(sock: &NlSocket) -> Result<Vec<Link>, NlError> {
    let mut req = LinkMessage::default();
    // Counters are not wanted: they make every answer several times longer to parse.
    req.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::GetLink(req));
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

/// One change to a link, by index.
#[derive(Debug, Clone)]
pub enum LinkChange {
    /// Move into the namespace behind this descriptor (`ip link set … netns`).
    Netns(RawFd),
    /// Rename (the link must be down).
    Name(String),
    Mtu(u32),
    Up(bool),
}

/// `ip link set dev #INDEX …`.
pub async fn set_link(sock: &NlSocket, index: u32, change: LinkChange) -> Result<(), NlError> {
    let mut req = LinkMessage::default();
    req.header.index = index;
    match change {
        LinkChange::Netns(fd) => req.attributes.push(LinkAttribute::NetNsFd(fd)),
        LinkChange::Name(name) => req.attributes.push(LinkAttribute::IfName(name)),
        LinkChange::Mtu(mtu) => req.attributes.push(LinkAttribute::Mtu(mtu)),
        LinkChange::Up(up) => {
            req.header.change_mask = LinkFlags::Up;
            if up {
                req.header.flags = LinkFlags::Up;
            }
        }
    }
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::SetLink(req));
    sock.request(&mut msg, false).await.map(|_| ())
}

/// An address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Address {
    pub index: u32,
    pub addr: IpAddr,
    pub prefix: u8,
}

/// Every address (both families) in the socket's namespace.
pub async fn addresses(sock: &NlSocket) -> Result<Vec<Address>, NlError> {
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::GetAddress(AddressMessage::default()));
    let answers = sock.request(&mut msg, true).await?;
    Ok(answers
        .iter()
        .filter_map(|a| match a {
            RouteNetlinkMessage::NewAddress(m) => {
                // IFA_LOCAL is the address itself on point-to-point links; IFA_ADDRESS otherwise.
                let addr = m
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        AddressAttribute::Local(ip) => Some(*ip),
                        _ => None,
                    })
                    .or_else(|| {
                        m.attributes.iter().find_map(|a| match a {
                            AddressAttribute::Address(ip) => Some(*ip),
                            _ => None,
                        })
                    })?;
                Some(Address {
                    index: m.header.index,
                    addr,
                    prefix: m.header.prefix_len,
                })
            }
            _ => None,
        })
        .collect())
}

fn address_message(index: u32, addr: Ipv4Addr, prefix: u8) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.prefix_len = prefix;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(IpAddr::V4(addr)));
    m.attributes
        .push(AddressAttribute::Address(IpAddr::V4(addr)));
    m
}

/// `ip address add ADDR/PREFIX dev #INDEX` (replacing an equal one).
pub async fn add_address(
    sock: &NlSocket,
    index: u32,
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<(), NlError> {
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::NewAddress(address_message(
        index, addr, prefix,
    )));
    msg.header.flags = NLM_F_CREATE | NLM_F_REPLACE;
    sock.request(&mut msg, false).await.map(|_| ())
}

/// `ip address del ADDR/PREFIX dev #INDEX` (any family).
pub async fn del_address(sock: &NlSocket, a: &Address) -> Result<(), NlError> {
    let mut m = AddressMessage::default();
    m.header.family = match a.addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.prefix_len = a.prefix;
    m.header.index = a.index;
    m.attributes.push(AddressAttribute::Local(a.addr));
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::DelAddress(m));
    match sock.request(&mut msg, false).await {
        Err(e) if e.errno() == Some(libc::EADDRNOTAVAIL) => Ok(()),
        r => r.map(|_| ()),
    }
}

/// Every route of every table and family in the socket's namespace, as the kernel sent them.
pub async fn routes(sock: &NlSocket) -> Result<Vec<RouteMessage>, NlError> {
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::GetRoute(RouteMessage::default()));
    let answers = sock.request(&mut msg, true).await?;
    Ok(answers
        .into_iter()
        .filter_map(|a| match a {
            RouteNetlinkMessage::NewRoute(r) => Some(r),
            _ => None,
        })
        .collect())
}

/// Deletes a route by sending back what the kernel reported for it.
pub async fn del_route(sock: &NlSocket, route: &RouteMessage) -> Result<(), NlError> {
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::DelRoute(route.clone()));
    match sock.request(&mut msg, false).await {
        Err(e) if e.errno() == Some(libc::ESRCH) => Ok(()),
        r => r.map(|_| ()),
    }
}

/// The table a route is in (the 32-bit attribute wins over the 8-bit header field).
pub fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(r.header.table as u32)
}

/// `dst/len` of a route (`0.0.0.0/0` or `::/0` for a default route).
pub fn route_dst(r: &RouteMessage) -> String {
    let addr = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        RouteAttribute::Destination(RouteAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        _ => None,
    });
    let addr = addr.unwrap_or(if r.header.address_family == AddressFamily::Inet6 {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    format!("{addr}/{}", r.header.destination_prefix_length)
}

/// The output interface index of a route, if it names one.
pub fn route_oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

/// A short text for logs: `default via 10.0.0.9 proto static table 254`.
pub fn route_text(r: &RouteMessage) -> String {
    let mut s = format!(
        "{} {:?} proto {:?} table {}",
        route_dst(r),
        r.header.kind,
        r.header.protocol,
        route_table(r)
    );
    for a in &r.attributes {
        if let RouteAttribute::Gateway(gw) = a {
            s.push_str(&format!(" via {gw:?}"));
        }
    }
    s
}
