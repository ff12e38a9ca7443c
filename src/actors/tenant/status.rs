//! What a tenant's kernel looked like at its last observation, and the two pure translations
//! around a reconcile: database snapshot → desired state, observation → metric facts.

use super::super::{CoreError, Deps};
use crate::db::orgs::Snapshot;
use crate::kernel::{DeviceState, PeerObserved, RuleObserved};
use crate::keys::PublicKey;
use crate::names::TenantNames;
use crate::policy::Verdict;
use crate::policy::render::{DEFAULT_COMMENT, ESTABLISHED_COMMENT};
use crate::policy::render::{MachineAddr, render};
use crate::reconcile::{Desired, Observed};
use crate::telemetry::{KernelFacts, PeerSeries, RuleSeries};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use uuid::Uuid;

/// What the kernel held for a tenant at its last successful reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantStatus {
    /// The tenant's kernel id, namespace and hub device's birth name (which names its UAPI
    /// socket).
    pub kid: i64,
    pub netns: String,
    pub device: String,
    pub observed_at: DateTime<Utc>,
    pub up: bool,
    pub listen_port: u16,
    pub public_key: Option<PublicKey>,
    pub daemon_pid: Option<u32>,
    pub netns_inode: Option<u64>,
    pub peers: BTreeMap<PublicKey, PeerObserved>,
    /// The tenant chain with its counters, in order.
    pub rules: Vec<RuleObserved>,
    /// The last reconcile's failure, if it failed.
    pub last_error: Option<String>,
    /// Moves with every published change (for readers that cache what they made of it).
    pub generation: u64,
    /// The kernel's invariants as this observation shows them (`reconcile::invariants`).
    pub checks: Vec<crate::reconcile::invariants::Check>,
    /// When each invariant was last found broken (and repaired), by check id.
    pub failed_at: BTreeMap<&'static str, DateTime<Utc>>,
    /// The last 30 min of peer and rule numbers (shared, not copied, between publications).
    pub history: std::sync::Arc<super::History>,
}

impl TenantStatus {
    pub fn from_observed(names: &TenantNames, o: &Observed) -> Self {
        let dev = match &o.device {
            DeviceState::Up(dev) => Some(dev),
            _ => None,
        };
        Self {
            kid: names.kid,
            netns: names.netns.clone(),
            device: names.birth.clone(),
            observed_at: Utc::now(),
            up: dev.is_some() && o.netns.is_some(),
            listen_port: dev.map(|d| d.listen_port).unwrap_or_default(),
            public_key: dev.and_then(|d| d.public_key),
            daemon_pid: dev.and_then(|d| d.pid),
            netns_inode: o.netns.as_ref().map(|n| n.inode),
            peers: dev.map(|d| d.peers.clone()).unwrap_or_default(),
            rules: o
                .firewall
                .as_ref()
                .and_then(|f| f.acl.clone())
                .unwrap_or_default(),
            last_error: None,
            generation: 0,
            checks: crate::reconcile::invariants::kernel_checks(o),
            failed_at: BTreeMap::new(),
            history: Default::default(),
        }
    }
}

pub fn desired(
    names: &TenantNames,
    deps: &Deps,
    snap: &Snapshot,
    last: Option<&TenantStatus>,
) -> Result<Desired, CoreError> {
    let org = &snap.org;
    let private_key = deps
        .cipher
        .open(org.id, &org.sealed_key)
        .map_err(|e| CoreError::Internal(e.to_string()))?;
    let machines: Vec<MachineAddr> = snap.machines.iter().map(|m| m.addr()).collect();
    Ok(Desired {
        names: names.clone(),
        listen_port: org.listen_port,
        public_key: private_key.public_key(),
        private_key,
        hub_address: org.cidr.hub_address(),
        prefix: org.cidr.prefix(),
        peers: snap
            .machines
            .iter()
            .map(|m| (m.public_key, m.address))
            .collect(),
        endpoint_hints: endpoint_hints(snap, last),
        firewall: render(&snap.policies, &machines, org.default_action),
    })
}

/// Where machines were last seen: PostgreSQL (survives restarts), then the actor's own fresher
/// observation. Only what parses as an address reaches the device: a hand-edited column must
/// not inject a line into a UAPI set request.
pub fn endpoint_hints(
    snap: &Snapshot,
    last: Option<&TenantStatus>,
) -> BTreeMap<PublicKey, SocketAddr> {
    snap.machines
        .iter()
        .filter_map(|m| Some((m.public_key, m.last_endpoint.as_deref()?)))
        .chain(
            last.iter()
                .flat_map(|s| &s.peers)
                .filter_map(|(k, p)| Some((*k, p.endpoint.as_deref()?))),
        )
        .filter_map(|(k, e)| Some((k, e.parse::<SocketAddr>().ok()?)))
        .collect()
}

/// The kernel's numbers of one reconcile, labelled with what PostgreSQL knows of them.
pub fn facts(status: &TenantStatus, snap: &Snapshot) -> KernelFacts {
    let machines: HashMap<&PublicKey, &crate::db::machines::Machine> =
        snap.machines.iter().map(|m| (&m.public_key, m)).collect();
    let policies: HashMap<Uuid, Verdict> = snap.policies.iter().map(|p| (p.id, p.action)).collect();
    let peers = status
        .peers
        .iter()
        .map(|(key, p)| {
            let m = machines.get(key);
            PeerSeries {
                machine: m.map(|m| m.id),
                machine_name: m.map(|m| m.name.clone()),
                public_key: key.to_base64(),
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
                last_handshake: p.last_handshake.unwrap_or(0),
            }
        })
        .collect();
    let rules = status
        .rules
        .iter()
        .filter_map(|r| {
            let comment = r.rule.split("--comment \"").nth(1)?.split('"').next()?;
            let (policy, action) = match comment {
                DEFAULT_COMMENT => ("default".to_string(), snap.org.default_action),
                ESTABLISHED_COMMENT => ("established".to_string(), Verdict::Allow),
                c => {
                    let id: Uuid = c.strip_prefix("mwg:")?.parse().ok()?;
                    (id.to_string(), *policies.get(&id)?)
                }
            };
            Some(RuleSeries {
                policy,
                action,
                packets: r.packets,
                bytes: r.bytes,
            })
        })
        .collect();
    KernelFacts {
        name: snap.org.name.clone(),
        up: status.up,
        peers,
        rules,
    }
}
