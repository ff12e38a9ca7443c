//! The only code that touches the kernel, behind three narrow traits:
//! [`Netns`] (namespace, links, addresses, routes, sysctl), [`WireGuard`] (the hub device, by
//! backend) and [`Firewall`] (iptables and ipsets). Observations are plain data that the pure
//! planner in `reconcile` compares with the desired state.

pub mod firewall;
pub mod kernel_wg;
pub mod netns;
pub mod nl;
pub mod ns;
pub mod uapi;
pub mod userspace;
pub mod watch;

use crate::cmd::CmdError;
use crate::keys::{PrivateKey, PublicKey};
use crate::names::{KernelPrefix, TenantNames};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("unexpected output from {what}: {detail}")]
    Parse { what: String, detail: String },
    #[error("wireguard device {device}: {detail}")]
    Device { device: String, detail: String },
}

impl KernelError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    pub fn parse(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Parse {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

pub type KResult<T> = Result<T, KernelError>;

/// A link inside a tenant namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkObserved {
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    pub ipv4: BTreeSet<(Ipv4Addr, u8)>,
}

/// A route inside a tenant namespace, with what it takes to delete it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteObserved {
    /// `dst/len`: `10.100.0.0/16`, `0.0.0.0/0`, `::/0`.
    pub dst: String,
    pub ipv6: bool,
    /// Routing table id (254 main, 255 local).
    pub table: u32,
    pub dev: Option<String>,
    /// Made by the kernel for an address (`proto kernel`).
    pub kernel_made: bool,
    /// A plain unicast route (not local, broadcast, multicast, blackhole…).
    pub unicast: bool,
    /// What the kernel reported, sent back to delete it (opaque to the planner).
    pub raw: Option<RawRoute>,
}

/// A route message exactly as the kernel sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRoute(pub netlink_packet_route::route::RouteMessage);

pub const TABLE_MAIN: u32 = 254;
pub const TABLE_LOCAL: u32 = 255;

impl std::fmt::Display for RouteObserved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        write!(f, " table {}", self.table)?;
        if self.kernel_made {
            write!(f, " proto kernel")?;
        }
        Ok(())
    }
}

/// A tenant namespace as it is, or `None` if it does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsObserved {
    /// Identity of the namespace (inode of its nsfs handle): changes only if it was recreated.
    pub inode: u64,
    pub links: Vec<LinkObserved>,
    pub routes: Vec<RouteObserved>,
    pub ip_forward: bool,
    /// IPv6 is off for every interface, existing (each one's own switch) and future (the overlay
    /// is IPv4 only; no v6 path can leak).
    pub ipv6_disabled: bool,
    /// The hub sends no ICMP redirects (all, new and every existing interface).
    pub redirects_off: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerObserved {
    pub allowed_ips: BTreeSet<String>,
    pub endpoint: Option<String>,
    /// Unix seconds of the last handshake, `None` if never.
    pub last_handshake: Option<i64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// What a live WireGuard device reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceObserved {
    pub listen_port: u16,
    /// Derived from the device's private key; `None` while it has none.
    pub public_key: Option<PublicKey>,
    pub peers: BTreeMap<PublicKey, PeerObserved>,
    /// Process id of the userspace daemon, if that is the backend.
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceState {
    /// Nothing of the device exists.
    Absent,
    /// Remains (a stale socket, a dead or hung daemon) that must be cleared before a new start.
    Stale(String),
    Up(DeviceObserved),
}

/// A peer as the hub should hold it: one machine, one /32.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    pub public_key: PublicKey,
    pub address: Ipv4Addr,
    /// Where the machine was last seen, for a peer that is (re)added: with it and the hub's
    /// keepalive the hub handshakes at once instead of waiting minutes for the machine to rekey.
    pub endpoint: Option<String>,
}

/// The hub's persistent keepalive towards every peer, in seconds.
pub const HUB_KEEPALIVE: u16 = 25;

/// The cheap part of a namespace observation: identity, sysctls and links (without addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsGlance {
    pub inode: u64,
    /// `(name, mtu, up)` per link, in kernel order.
    pub links: Vec<(String, u32, bool)>,
    pub ip_forward: bool,
    pub ipv6_disabled: bool,
    pub redirects_off: bool,
}

impl NetnsObserved {
    /// What a glance at this namespace would show.
    pub fn glance(&self) -> NetnsGlance {
        NetnsGlance {
            inode: self.inode,
            links: self
                .links
                .iter()
                .map(|l| (l.name.clone(), l.mtu, l.up))
                .collect(),
            ip_forward: self.ip_forward,
            ipv6_disabled: self.ipv6_disabled,
            redirects_off: self.redirects_off,
        }
    }
}

/// Namespace, links, addresses, routes and sysctls of one tenant.
#[async_trait::async_trait]
pub trait Netns: Send + Sync {
    async fn observe(&self, names: &TenantNames) -> KResult<Option<NetnsObserved>>;
    /// [`Netns::observe`] without addresses and routes (which announce their changes).
    async fn glance(&self, names: &TenantNames) -> KResult<Option<NetnsGlance>>;
    /// The identity (inode) of the namespace now, `None` if it does not exist; a `stat`.
    fn identity(&self, names: &TenantNames) -> Option<u64>;
    /// Is the birth link still in the controller namespace (a creation that stopped half-way)?
    async fn birth_link_in_host(&self, names: &TenantNames) -> KResult<bool>;
    async fn create(&self, names: &TenantNames) -> KResult<()>;
    async fn delete(&self, names: &TenantNames) -> KResult<()>;
    /// Moves the birth link from the controller namespace into the tenant namespace.
    async fn move_birth_link(&self, names: &TenantNames) -> KResult<()>;
    /// Renames `from` to `wg0` inside the tenant namespace.
    async fn rename_to_wg0(&self, names: &TenantNames, from: &str) -> KResult<()>;
    /// Exactly one address, the given MTU, and up.
    async fn configure_wg0(
        &self,
        names: &TenantNames,
        addr: Ipv4Addr,
        prefix: u8,
        mtu: u32,
    ) -> KResult<()>;
    async fn delete_link(&self, names: &TenantNames, link: &str) -> KResult<()>;
    async fn delete_route(&self, names: &TenantNames, route: &RouteObserved) -> KResult<()>;
    /// `ip_forward=1`, ICMP redirects off and IPv6 disabled on all (and future) interfaces.
    async fn set_sysctls(&self, names: &TenantNames) -> KResult<()>;
    /// Kernel ids of every namespace with our prefix (for orphan removal).
    async fn list(&self, prefix: &KernelPrefix) -> KResult<BTreeSet<i64>>;
    /// Kernel ids of every birth link with our prefix left in the controller namespace.
    async fn list_host_links(&self, prefix: &KernelPrefix) -> KResult<BTreeSet<i64>>;
    async fn delete_host_link(&self, name: &str) -> KResult<()>;
}

/// The hub device of one tenant, addressed by its birth name for life.
#[async_trait::async_trait]
pub trait WireGuard: Send + Sync {
    /// `"userspace"` or `"kernel"`.
    fn backend(&self) -> &'static str;
    async fn observe(&self, names: &TenantNames) -> KResult<DeviceState>;
    /// [`WireGuard::observe`], or `None` when the device is exactly `same` (the cheap poll's
    /// question: a backend may answer it without building a copy).
    async fn observe_unless(
        &self,
        names: &TenantNames,
        same: &DeviceObserved,
    ) -> KResult<Option<DeviceState>> {
        let state = self.observe(names).await?;
        Ok(match &state {
            DeviceState::Up(d) if d == same => None,
            _ => Some(state),
        })
    }
    /// Creates the device in the controller namespace under its birth name.
    async fn create(&self, names: &TenantNames) -> KResult<()>;
    async fn configure(&self, names: &TenantNames, key: &PrivateKey, port: u16) -> KResult<()>;
    async fn set_peers(
        &self,
        names: &TenantNames,
        upsert: &[PeerSpec],
        remove: &[PublicKey],
    ) -> KResult<()>;
    /// Removes the device and whatever keeps it (daemon, socket). Idempotent.
    async fn destroy(&self, names: &TenantNames) -> KResult<()>;
    /// Kernel ids of every device of ours that exists (for orphan removal).
    async fn list(&self, prefix: &KernelPrefix) -> KResult<BTreeSet<i64>>;
}

/// One rule of the tenant chain as read back, with its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleObserved {
    pub rule: String,
    pub packets: u64,
    pub bytes: u64,
}

/// The tenant's filter and nat tables and ipsets as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallObserved {
    pub forward_policy: Option<String>,
    pub forward: Vec<String>,
    /// `None` if the chain does not exist.
    pub acl: Option<Vec<RuleObserved>>,
    /// The watch chain's counting rules (`policy::watch`); `None` if the chain does not exist.
    pub watch: Option<Vec<RuleObserved>>,
    /// Every rule in the nat table (must stay empty).
    pub nat: Vec<String>,
    pub sets: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    /// The nf_tables generation this was read at (`None` where not known).
    pub generation: Option<u32>,
}

/// A tracked flow in its original direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IP protocol number.
    pub proto: u8,
    pub dport: Option<u16>,
}

/// The rendered firewall a tenant should have (made by `policy::render`, which owns the type).
pub use crate::policy::render::FirewallRules;

#[async_trait::async_trait]
pub trait Firewall: Send + Sync {
    /// The tenant's tables; rule counters are fresh only `with_counters` (else as last read).
    async fn observe(&self, names: &TenantNames, with_counters: bool) -> KResult<FirewallObserved>;
    /// Installs FORWARD policy DROP, the single jump to the ACL chain (preceded by the jump to
    /// the watch chain while there are watches) and the chains themselves in one transaction, editing the chain in place when `have` (the tables as observed) allows it;
    /// rules that stay keep their counters either way.
    async fn apply(
        &self,
        names: &TenantNames,
        rules: &FirewallRules,
        have: Option<&FirewallObserved>,
    ) -> KResult<()>;
    /// The named ipsets and their members (what changes without any event); a set that does
    /// not exist is missing from the answer.
    async fn sets(
        &self,
        h: &ns::NsHandles,
        names: &[&str],
    ) -> KResult<BTreeMap<String, BTreeSet<Ipv4Addr>>>;
    /// Deletes the tracked flows `keep` rejects, so that a narrowed policy cuts flows the
    /// `ESTABLISHED` shortcut would keep alive; returns how many were cut.
    async fn revoke(
        &self,
        names: &TenantNames,
        keep: &(dyn Fn(FlowKey) -> bool + Send + Sync),
    ) -> KResult<usize>;
    /// Fresh counters for the chain as last verified; `None` if it changed since (or is unknown).
    async fn counters(&self, names: &TenantNames) -> KResult<Option<Vec<RuleObserved>>>;
    /// Fresh counters of the watch chain's rules (empty when there is no such chain).
    async fn watch_counters(&self, names: &TenantNames) -> KResult<Vec<RuleObserved>>;
    async fn flush_nat(&self, names: &TenantNames) -> KResult<()>;
}

/// The three kernel seams a tenant actor needs, and the namespace handles they share.
#[derive(Clone)]
pub struct Kernel {
    pub netns: Arc<dyn Netns>,
    pub wg: Arc<dyn WireGuard>,
    pub firewall: Arc<dyn Firewall>,
    pub namespaces: Arc<ns::Namespaces>,
}

/// Which `WireGuard` implementation to build.
pub enum WgBackend {
    Kernel,
    Userspace {
        wireguard_go: std::path::PathBuf,
        runtime_dir: std::path::PathBuf,
    },
}

impl Kernel {
    /// The real kernel seams: native namespaces and links, iptables, and the chosen backend.
    pub fn real(backend: WgBackend) -> Self {
        let namespaces = ns::Namespaces::new();
        let host = Arc::new(ns::HostHandles::default());
        let wg: Arc<dyn WireGuard> = match backend {
            WgBackend::Kernel => {
                Arc::new(kernel_wg::KernelWg::new(namespaces.clone(), host.clone()))
            }
            WgBackend::Userspace {
                wireguard_go,
                runtime_dir,
            } => Arc::new(userspace::Userspace::new(wireguard_go, runtime_dir)),
        };
        Kernel {
            netns: Arc::new(netns::NativeNetns::new(namespaces.clone(), host)),
            wg,
            firewall: Arc::new(firewall::Iptables::new(namespaces.clone())),
            namespaces,
        }
    }
}

/// Resolves a program name against `PATH` (and the safe default path), like a shell would.
pub fn find_program(program: &std::path::Path) -> Option<std::path::PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(crate::cmd::SAFE_PATH.split(':'))
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// Which backend was picked and why, for the start-up log and `meshwg doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendDecision {
    /// `"kernel"` or `"userspace"`.
    pub backend: &'static str,
    pub why: String,
}

/// Decides the backend without building it: `auto` takes kernel WireGuard when the probe
/// (create and remove a probe link, resolve the netlink family) succeeds, else wireguard-go.
pub async fn decide(
    choice: crate::config::BackendChoice,
    cfg: &crate::config::KernelConfig,
) -> Result<BackendDecision, String> {
    use crate::config::BackendChoice;
    let probe = match choice {
        BackendChoice::Userspace => None,
        BackendChoice::Auto | BackendChoice::Kernel => {
            Some(kernel_wg::KernelWg::probe(&cfg.prefix).await)
        }
    };
    let userspace = |why: String| -> Result<BackendDecision, String> {
        let go = find_program(&cfg.wireguard_go).ok_or_else(|| {
            format!(
                "the userspace backend needs wireguard-go, not found as {:?} (install wireguard-go or set WIREGUARD_GO); {why}",
                cfg.wireguard_go
            )
        })?;
        Ok(BackendDecision {
            backend: "userspace",
            why: format!("{why}; wireguard-go is {}", go.display()),
        })
    };
    match (choice, probe) {
        (BackendChoice::Userspace, _) => userspace("WG_BACKEND=userspace".into()),
        (_, Some(Ok(()))) => Ok(BackendDecision {
            backend: "kernel",
            why: "the kernel created and removed a probe WireGuard link".into(),
        }),
        (BackendChoice::Kernel, Some(Err(why))) => Err(format!(
            "WG_BACKEND=kernel, but this host cannot run kernel WireGuard: {why}"
        )),
        (_, Some(Err(why))) => userspace(format!("kernel WireGuard unusable: {why}")),
        (_, None) => userspace("WG_BACKEND=userspace".into()),
    }
}

/// Picks the WireGuard backend (see [`decide`]) and returns the kernel seams.
pub async fn select(
    choice: crate::config::BackendChoice,
    cfg: &crate::config::KernelConfig,
) -> Result<(Kernel, BackendDecision), String> {
    let decision = decide(choice, cfg).await?;
    let backend = if decision.backend == "kernel" {
        WgBackend::Kernel
    } else {
        WgBackend::Userspace {
            wireguard_go: find_program(&cfg.wireguard_go).ok_or("wireguard-go disappeared")?,
            runtime_dir: cfg.runtime_dir.clone(),
        }
    };
    Ok((Kernel::real(backend), decision))
}
