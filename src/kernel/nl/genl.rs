//! The kernel WireGuard device over its generic-netlink family (`wireguard`, version 1): read a
//! device with its peers, set key and port, upsert and remove peers. Keys travel in memory only
//! (never argv); request and answer buffers are wiped after use.

use super::{NlError, NlSocket};
use crate::kernel::{DeviceObserved, HUB_KEEPALIVE, PeerObserved, PeerSpec};
use crate::keys::{PrivateKey, PublicKey};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::GenlMessage;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardMessage, WireguardPeer, WireguardPeerAttribute, WireguardPeerFlags,
};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use zeroize::Zeroize;

/// Peers per `SET_DEVICE` message: keeps each well under the socket's send buffer.
const PEERS_PER_MESSAGE: usize = 100;

/// The id the kernel gave the `wireguard` family (global, not per namespace); asking for it
/// loads the module if needed. `ENOENT`: this kernel has no WireGuard.
pub async fn family_id(sock: &NlSocket) -> Result<u16, NlError> {
    let msg = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName("wireguard".into())],
    });
    let answers = sock.request(&mut NetlinkMessage::from(msg), false).await?;
    answers
        .iter()
        .flat_map(|a| &a.payload.nlas)
        .find_map(|a| match a {
            GenlCtrlAttrs::FamilyId(id) => Some(*id),
            _ => None,
        })
        .ok_or_else(|| NlError::Decode("no family id for wireguard".into()))
}

fn message(
    family: u16,
    cmd: WireguardCmd,
    attributes: Vec<WireguardAttribute>,
) -> NetlinkMessage<GenlMessage<WireguardMessage>> {
    let mut genl = GenlMessage::from_payload(WireguardMessage { cmd, attributes });
    genl.set_resolved_family_id(family);
    NetlinkMessage::from(genl)
}

/// Reads the device `ifname` in the socket's namespace. `ENODEV`: no such link;
/// `EOPNOTSUPP`: a link of another kind under that name.
pub async fn get_device(
    sock: &NlSocket,
    family: u16,
    ifname: &str,
) -> Result<DeviceObserved, NlError> {
    let mut msg = message(
        family,
        WireguardCmd::GetDevice,
        vec![WireguardAttribute::IfName(ifname.to_string())],
    );
    let mut answers = sock.request(&mut msg, true).await?;
    let mut dev = DeviceObserved {
        listen_port: 0,
        public_key: None,
        peers: BTreeMap::new(),
        pid: None,
    };
    // A device with many peers arrives in several messages; a peer may continue in the next.
    for answer in &mut answers {
        for attr in &mut answer.payload.attributes {
            match attr {
                WireguardAttribute::ListenPort(p) => dev.listen_port = *p,
                WireguardAttribute::PublicKey(k) => {
                    dev.public_key = Some(PublicKey::from_bytes(*k))
                }
                WireguardAttribute::PrivateKey(k) => k.zeroize(),
                WireguardAttribute::Peers(peers) => {
                    for peer in peers.iter_mut() {
                        merge_peer(&mut dev.peers, &mut peer.0);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(dev)
}

fn merge_peer(peers: &mut BTreeMap<PublicKey, PeerObserved>, attrs: &mut [WireguardPeerAttribute]) {
    let Some(key) = attrs.iter().find_map(|a| match a {
        WireguardPeerAttribute::PublicKey(k) => Some(PublicKey::from_bytes(*k)),
        _ => None,
    }) else {
        return;
    };
    let peer = peers.entry(key).or_insert_with(|| PeerObserved {
        allowed_ips: Default::default(),
        endpoint: None,
        last_handshake: None,
        rx_bytes: 0,
        tx_bytes: 0,
    });
    for attr in attrs.iter_mut() {
        match attr {
            WireguardPeerAttribute::PresharedKey(k) => k.zeroize(),
            WireguardPeerAttribute::Endpoint(addr) => peer.endpoint = Some(addr.to_string()),
            WireguardPeerAttribute::LastHandshake(t) => {
                peer.last_handshake = (t.seconds > 0).then_some(t.seconds)
            }
            WireguardPeerAttribute::RxBytes(n) => peer.rx_bytes = *n,
            WireguardPeerAttribute::TxBytes(n) => peer.tx_bytes = *n,
            WireguardPeerAttribute::AllowedIps(ips) => {
                for ip in ips.iter() {
                    let addr = ip.iter().find_map(|a| match a {
                        WireguardAllowedIpAttr::IpAddr(a) => Some(*a),
                        _ => None,
                    });
                    let cidr = ip.iter().find_map(|a| match a {
                        WireguardAllowedIpAttr::Cidr(c) => Some(*c),
                        _ => None,
                    });
                    if let (Some(addr), Some(cidr)) = (addr, cidr) {
                        peer.allowed_ips.insert(format!("{addr}/{cidr}"));
                    }
                }
            }
            _ => {}
        }
    }
}

/// Sets the device's private key and listen port.
pub async fn set_key_and_port(
    sock: &NlSocket,
    family: u16,
    ifname: &str,
    key: &PrivateKey,
    port: u16,
) -> Result<(), NlError> {
    let mut msg = message(
        family,
        WireguardCmd::SetDevice,
        vec![
            WireguardAttribute::IfName(ifname.to_string()),
            WireguardAttribute::PrivateKey(*key.expose_bytes()),
            WireguardAttribute::ListenPort(port),
        ],
    );
    let result = sock.request(&mut msg, false).await.map(|_| ());
    if let NetlinkPayload::InnerMessage(genl) = &mut msg.payload {
        for attr in &mut genl.payload.attributes {
            if let WireguardAttribute::PrivateKey(k) = attr {
                k.zeroize();
            }
        }
    }
    result
}

fn peer_attrs(p: &PeerSpec) -> WireguardPeer {
    let mut attrs = vec![
        WireguardPeerAttribute::PublicKey(*p.public_key.as_bytes()),
        WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
        WireguardPeerAttribute::PersistentKeepalive(HUB_KEEPALIVE),
        WireguardPeerAttribute::AllowedIps(vec![WireguardAllowedIp(vec![
            WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv4),
            WireguardAllowedIpAttr::IpAddr(IpAddr::V4(p.address)),
            WireguardAllowedIpAttr::Cidr(32),
        ])]),
    ];
    if let Some(endpoint) = p
        .endpoint
        .as_deref()
        .and_then(|e| e.parse::<SocketAddr>().ok())
    {
        attrs.push(WireguardPeerAttribute::Endpoint(endpoint));
    }
    WireguardPeer(attrs)
}

/// Adds or updates `upsert` (each with exactly its /32) and removes `remove`, in as few messages
/// as fit.
pub async fn set_peers(
    sock: &NlSocket,
    family: u16,
    ifname: &str,
    upsert: &[PeerSpec],
    remove: &[PublicKey],
) -> Result<(), NlError> {
    let peers: Vec<WireguardPeer> = upsert
        .iter()
        .map(peer_attrs)
        .chain(remove.iter().map(|k| {
            WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(*k.as_bytes()),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
            ])
        }))
        .collect();
    for chunk in peers.chunks(PEERS_PER_MESSAGE) {
        let mut msg = message(
            family,
            WireguardCmd::SetDevice,
            vec![
                WireguardAttribute::IfName(ifname.to_string()),
                WireguardAttribute::Peers(chunk.to_vec()),
            ],
        );
        sock.request(&mut msg, false).await?;
    }
    Ok(())
}
