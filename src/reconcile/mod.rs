//! `plan(desired, observed) -> actions`: the pure core of every tenant actor.
//!
//! Desired comes from PostgreSQL, observed from the kernel; the planner never does IO. The
//! actions come out in an order that is safe at every step: the filter (FORWARD DROP and the ACL
//! chain) and the removal of routes, NAT rules and foreign links come before the device, and
//! forwarding and peers come last, so a half-made tenant never forwards unfiltered traffic.
//! `apply` executes a plan; the caller re-observes and re-plans until the plan is empty.

pub mod apply;
pub mod invariants;

use crate::kernel::firewall::forward_rules;
use crate::kernel::{
    DeviceState, FirewallObserved, FirewallRules, NetnsObserved, PeerSpec, RouteObserved,
    TABLE_LOCAL, TABLE_MAIN,
};
use crate::keys::{PrivateKey, PublicKey};
use crate::names::{TENANT_IFACE, TenantNames};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};

pub const HUB_MTU: u32 = 1420;

/// What PostgreSQL says one tenant's kernel state must be.
#[derive(Debug, Clone)]
pub struct Desired {
    pub names: TenantNames,
    pub listen_port: u16,
    pub private_key: PrivateKey,
    /// `private_key`'s public half, derived once.
    pub public_key: PublicKey,
    pub hub_address: Ipv4Addr,
    pub prefix: u8,
    pub peers: BTreeMap<PublicKey, Ipv4Addr>,
    /// Last known endpoints of peers (not state to enforce: hints for peers being re-added).
    pub endpoint_hints: BTreeMap<PublicKey, SocketAddr>,
    pub firewall: FirewallRules,
}

/// What a desired state asks of the kernel, without the private key: two desired states with
/// equal targets need exactly the same kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    listen_port: u16,
    public_key: PublicKey,
    hub_address: Ipv4Addr,
    prefix: u8,
    peers: BTreeMap<PublicKey, Ipv4Addr>,
    firewall: FirewallRules,
}

impl Desired {
    pub fn target(&self) -> Target {
        Target {
            listen_port: self.listen_port,
            public_key: self.public_key,
            hub_address: self.hub_address,
            prefix: self.prefix,
            peers: self.peers.clone(),
            firewall: self.firewall.clone(),
        }
    }
}

/// What the kernel holds for one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub netns: Option<NetnsObserved>,
    /// The birth link is still in the controller namespace (a creation stopped before the move).
    pub host_link: bool,
    pub device: DeviceState,
    /// `None` when the namespace does not exist.
    pub firewall: Option<FirewallObserved>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    CreateNetns,
    ApplyFirewall,
    FlushNat,
    DeleteLink(String),
    DeleteRoute(RouteObserved),
    /// Clear a stale or misplaced device (daemon, socket, link) before creating it anew.
    DestroyDevice,
    CreateDevice,
    ConfigureDevice,
    MoveDevice,
    RenameDevice {
        from: String,
    },
    ConfigureWg0,
    /// `ip_forward=1`, ICMP redirects off, IPv6 off.
    SetSysctls,
    SetPeers {
        upsert: Vec<PeerSpec>,
        remove: Vec<PublicKey>,
    },
}

impl Action {
    /// Every value [`Action::kind`] can return.
    pub const KINDS: [&'static str; 13] = [
        "create_netns",
        "apply_firewall",
        "flush_nat",
        "delete_link",
        "delete_route",
        "destroy_device",
        "create_device",
        "configure_device",
        "move_device",
        "rename_device",
        "configure_wg0",
        "set_sysctls",
        "set_peers",
    ];

    /// May take away something a tracked flow relied on: a rule or set rewritten, a peer
    /// removed.
    pub fn narrows(&self) -> bool {
        match self {
            Action::ApplyFirewall => true,
            Action::SetPeers { remove, .. } => !remove.is_empty(),
            _ => false,
        }
    }

    /// A short, stable name, used in logs and as the `kind` label of repair metrics.
    /// Removes a way out of the tenant namespace: a route, a NAT rule, a link that is not
    /// the hub device (our own device's link removed for a rebuild does not count).
    pub fn is_egress_repair(&self, names: &TenantNames) -> bool {
        match self {
            Action::DeleteRoute(_) | Action::FlushNat => true,
            Action::DeleteLink(name) => name != TENANT_IFACE && *name != names.birth,
            _ => false,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Action::CreateNetns => "create_netns",
            Action::ApplyFirewall => "apply_firewall",
            Action::FlushNat => "flush_nat",
            Action::DeleteLink(_) => "delete_link",
            Action::DeleteRoute(_) => "delete_route",
            Action::DestroyDevice => "destroy_device",
            Action::CreateDevice => "create_device",
            Action::ConfigureDevice => "configure_device",
            Action::MoveDevice => "move_device",
            Action::RenameDevice { .. } => "rename_device",
            Action::ConfigureWg0 => "configure_wg0",
            Action::SetSysctls => "set_sysctls",
            Action::SetPeers { .. } => "set_peers",
        }
    }
}

fn firewall_matches(want: &FirewallRules, have: &FirewallObserved) -> bool {
    let Some(acl) = &have.acl else {
        return false;
    };
    // The watch chain exists exactly while there are watches, and holds exactly them.
    let watch_ok = match &have.watch {
        None => want.watch.is_empty(),
        Some(w) => !want.watch.is_empty() && w.iter().map(|r| &r.rule).eq(want.watch.iter()),
    };
    have.forward_policy.as_deref() == Some("DROP")
        && have.forward == forward_rules(want)
        && acl.iter().map(|r| &r.rule).eq(want.acl.iter())
        && watch_ok
        && have.sets == want.sets
}

/// The routes a healthy tenant namespace holds: what the kernel makes for the hub address in the
/// local table (on `wg0`, or `lo` if somebody brought it up), and the one prefix route of the
/// tenant network on `wg0`. Anything else — a default route, a static route, a second prefix,
/// even one with `proto kernel` — is a way out and is removed. IPv6 routes are left to the IPv6
/// switch, which removes them all when it is turned off again.
pub fn route_expected(d: &Desired, r: &RouteObserved) -> bool {
    if r.ipv6 {
        return true;
    }
    let dev = r.dev.as_deref();
    match r.table {
        TABLE_LOCAL => matches!(dev, Some(TENANT_IFACE) | Some("lo")),
        TABLE_MAIN => {
            let mask = u32::MAX.checked_shl(32 - u32::from(d.prefix)).unwrap_or(0);
            let network = Ipv4Addr::from(u32::from(d.hub_address) & mask);
            r.kernel_made
                && r.unicast
                && dev == Some(TENANT_IFACE)
                && r.dst.split_once('/').is_some_and(|(a, p)| {
                    a.parse::<Ipv4Addr>() == Ok(network) && p.parse::<u8>() == Ok(d.prefix)
                })
        }
        _ => false,
    }
}

/// The actions that turn `o` into `d`, in a safe order; empty when they already agree.
pub fn plan(d: &Desired, o: &Observed) -> Vec<Action> {
    let mut actions = Vec::new();
    let birth = d.names.birth.as_str();
    let links = o
        .netns
        .as_ref()
        .map(|n| n.links.as_slice())
        .unwrap_or_default();
    let wg0 = links.iter().find(|l| l.name == TENANT_IFACE);
    let unrenamed = links.iter().find(|l| l.name == birth);

    if o.netns.is_none() {
        actions.push(Action::CreateNetns);
    }

    // Filter first: FORWARD policy DROP and the tenant chain before anything can forward.
    match &o.firewall {
        Some(fw) if firewall_matches(&d.firewall, fw) => {}
        _ => actions.push(Action::ApplyFirewall),
    }
    if o.firewall.as_ref().is_some_and(|fw| !fw.nat.is_empty()) {
        actions.push(Action::FlushNat);
    }

    // The device: healthy, resumable (moved but not renamed, or not moved yet), or to be remade.
    let device = match &o.device {
        DeviceState::Up(dev) => Some(dev),
        _ => None,
    };
    let mut device_steps = Vec::new();
    let fresh = match (device, wg0, unrenamed) {
        (Some(_), Some(_), _) => false,
        (Some(_), None, Some(_)) => {
            device_steps.push(Action::RenameDevice {
                from: birth.to_string(),
            });
            false
        }
        (Some(_), None, None) if o.host_link => {
            device_steps.push(Action::MoveDevice);
            device_steps.push(Action::RenameDevice {
                from: birth.to_string(),
            });
            false
        }
        _ => {
            if o.device != DeviceState::Absent || o.host_link {
                device_steps.push(Action::DestroyDevice);
            }
            device_steps.extend([
                Action::CreateDevice,
                Action::ConfigureDevice,
                Action::MoveDevice,
                Action::RenameDevice {
                    from: birth.to_string(),
                },
            ]);
            true
        }
    };

    // Links that do not belong: anything but lo and the hub device (a wg0 that is not our
    // device is removed too, before ours is renamed into place).
    for l in links {
        let ours = !fresh && (l.name == TENANT_IFACE || l.name == birth);
        if l.name != "lo" && !ours {
            actions.push(Action::DeleteLink(l.name.clone()));
        }
    }
    if let Some(ns) = &o.netns {
        for r in ns.routes.iter().filter(|r| !route_expected(d, r)) {
            actions.push(Action::DeleteRoute(r.clone()));
        }
    }

    let relinked = !device_steps.is_empty();
    actions.extend(device_steps);
    if let Some(dev) = device.filter(|_| !fresh)
        && (dev.listen_port != d.listen_port || dev.public_key != Some(d.public_key))
    {
        actions.push(Action::ConfigureDevice);
    }
    let want_addr = BTreeSet::from([(d.hub_address, d.prefix)]);
    let wg0_ok = wg0.is_some_and(|l| l.up && l.mtu == HUB_MTU && l.ipv4 == want_addr);
    if relinked || !wg0_ok {
        actions.push(Action::ConfigureWg0);
    }
    if !o
        .netns
        .as_ref()
        .is_some_and(|n| n.ip_forward && n.ipv6_disabled && n.redirects_off)
    {
        actions.push(Action::SetSysctls);
    }

    // Peers last.
    let none = BTreeMap::new();
    let have = device.filter(|_| !fresh).map_or(&none, |dev| &dev.peers);
    let mut upsert = Vec::new();
    // Exactly `addr/32` (compared without formatting: this runs at every poll).
    let only = |ips: &BTreeSet<String>, addr: &Ipv4Addr| {
        ips.len() == 1
            && ips
                .first()
                .and_then(|ip| ip.strip_suffix("/32")?.parse::<Ipv4Addr>().ok())
                == Some(*addr)
    };
    for (key, addr) in &d.peers {
        match have.get(key) {
            Some(p) if only(&p.allowed_ips, addr) => {}
            Some(_) => upsert.push(PeerSpec {
                public_key: *key,
                address: *addr,
                endpoint: None,
            }),
            None => upsert.push(PeerSpec {
                public_key: *key,
                address: *addr,
                endpoint: d.endpoint_hints.get(key).map(|a| a.to_string()),
            }),
        }
    }
    let remove: Vec<PublicKey> = have
        .keys()
        .filter(|k| !d.peers.contains_key(k))
        .copied()
        .collect();
    if !upsert.is_empty() || !remove.is_empty() {
        actions.push(Action::SetPeers { upsert, remove });
    }
    actions
}

#[cfg(test)]
mod tests;
