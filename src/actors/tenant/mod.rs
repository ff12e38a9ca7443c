//! One actor per tenant: the only writer of that tenant's kernel state.
//!
//! Every reconcile reads the tenant from PostgreSQL, observes the kernel, plans and applies until
//! they agree. It runs at start, on every change (`Sync`, answered only once the kernel reflects
//! the database) and on a timer. A database that cannot be read changes nothing: the kernel is
//! left as it is and the next tick tries again.

use super::{CoreError, Deps};
use crate::db::orgs::{self, OrgState, Snapshot};
use crate::kernel::{DeviceState, PeerObserved, RuleObserved};
use crate::keys::PublicKey;
use crate::names::TenantNames;
use crate::policy::Verdict;
use crate::policy::render::{DEFAULT_COMMENT, ESTABLISHED_COMMENT};
use crate::policy::render::{MachineAddr, render};
use crate::reconcile::apply::{Converged, converge};
use crate::reconcile::{Desired, Observed};
use crate::telemetry::{KernelFacts, PeerSeries, RuleSeries};
use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;
use uuid::Uuid;

/// After this many failed reconciles in a row the actor gives up and lets the supervisor restart
/// it with backoff.
const MAX_CONSECUTIVE_FAILURES: u32 = 10;

/// What the kernel held for a tenant at its last successful reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantStatus {
    /// The tenant's namespace and its hub device's birth name (which names its UAPI socket).
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
}

impl TenantStatus {
    fn from_observed(names: &TenantNames, o: &Observed) -> Self {
        let dev = match &o.device {
            DeviceState::Up(dev) => Some(dev),
            _ => None,
        };
        Self {
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
        }
    }
}

pub struct TenantActor;

pub struct TenantArgs {
    pub org_id: Uuid,
    pub names: TenantNames,
    pub deps: Deps,
    /// Being created right now: the creator's `Sync` builds it. Otherwise (adopted at start,
    /// restarted) the actor reconciles at once, and whatever that repairs counts as drift.
    pub fresh: bool,
}

pub struct TenantState {
    org_id: Uuid,
    names: TenantNames,
    deps: Deps,
    waiting: Vec<RpcReplyPort<Result<(), CoreError>>>,
    status: Option<TenantStatus>,
    last_run: Option<Instant>,
    failures: u32,
    /// The org is gone from the database (or being deleted): stop and let the supervisor decide.
    gone: bool,
}

pub enum TenantMsg {
    /// Periodic reconcile.
    Tick,
    /// Reconcile now; answered once the kernel reflects the database.
    Sync(RpcReplyPort<Result<(), CoreError>>),
    /// Runs one reconcile for everybody waiting (many `Sync`s coalesce into one).
    Flush,
    /// The last observed kernel state.
    Status(RpcReplyPort<Option<TenantStatus>>),
}

/// Everything that can stop one reconcile.
enum Outcome {
    Done(Box<Converged>, Box<Snapshot>),
    /// The org is gone or being deleted: nothing to do.
    Gone,
    Failed(CoreError),
}

fn desired(
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
    let machines: Vec<MachineAddr> = snap.machines.iter().map(MachineAddr::from).collect();
    Ok(Desired {
        names: names.clone(),
        listen_port: org.listen_port,
        private_key,
        hub_address: org.cidr.hub_address(),
        prefix: org.cidr.prefix(),
        peers: snap
            .machines
            .iter()
            .map(|m| (m.public_key, m.address))
            .collect(),
        // Where machines were last seen: PostgreSQL (survives restarts), then this actor's
        // own fresher observation. Only what parses as an address reaches the device: a
        // hand-edited column must not inject a line into a UAPI set request.
        endpoint_hints: snap
            .machines
            .iter()
            .filter_map(|m| Some((m.public_key, m.last_endpoint.as_deref()?)))
            .chain(
                last.iter()
                    .flat_map(|s| &s.peers)
                    .filter_map(|(k, p)| Some((*k, p.endpoint.as_deref()?))),
            )
            .filter_map(|(k, e)| Some((k, e.parse::<SocketAddr>().ok()?)))
            .collect(),
        firewall: render(&snap.policies, &machines, org.default_action),
    })
}

/// The kernel's numbers of one reconcile, labelled with what PostgreSQL knows of them.
fn facts(status: &TenantStatus, snap: &Snapshot) -> KernelFacts {
    let peers = status
        .peers
        .iter()
        .map(|(key, p)| {
            let m = snap.machines.iter().find(|m| m.public_key == *key);
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
                    (
                        id.to_string(),
                        snap.policies.iter().find(|p| p.id == id)?.action,
                    )
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

impl TenantState {
    /// Stores endpoints that changed since PostgreSQL last heard of them (rare: roaming).
    async fn remember_endpoints(&self, status: &TenantStatus, snap: &Snapshot) {
        let changed: Vec<(Uuid, String)> = snap
            .machines
            .iter()
            .filter_map(|m| {
                let seen = status.peers.get(&m.public_key)?.endpoint.as_ref()?;
                (m.last_endpoint.as_ref() != Some(seen)).then(|| (m.id, seen.clone()))
            })
            .collect();
        if changed.is_empty() {
            return;
        }
        if let Err(e) =
            crate::db::machines::record_endpoints(&self.deps.pool, self.org_id, &changed).await
        {
            tracing::warn!(tenant = %self.org_id, error = %e, "could not record machine endpoints");
        }
    }

    async fn reconcile(&mut self) -> Outcome {
        let snap = match orgs::snapshot(&self.deps.pool, self.org_id).await {
            Ok(Some(snap)) if snap.org.state != OrgState::Deleting => snap,
            Ok(_) => return Outcome::Gone,
            Err(e) => {
                tracing::warn!(tenant = %self.org_id, error = %e, "database unreadable; kernel left as it is");
                return Outcome::Failed(e.into());
            }
        };
        let want = match desired(&self.names, &self.deps, &snap, self.status.as_ref()) {
            Ok(d) => d,
            Err(e) => return Outcome::Failed(e),
        };
        match converge(&self.deps.kernel, &want).await {
            Ok(c) => Outcome::Done(Box::new(c), Box::new(snap)),
            Err(e) => Outcome::Failed(CoreError::Kernel(e.to_string())),
        }
    }

    /// One reconcile; answers everybody waiting. `Err` only when the actor should be restarted.
    /// `periodic`: not asked for by a change, so whatever it applies is drift being repaired;
    /// otherwise only the egress repairs (which no change asks for) count as drift.
    async fn run(&mut self, periodic: bool) -> Result<(), ActorProcessingErr> {
        let waiting = std::mem::take(&mut self.waiting);
        let started = Instant::now();
        let outcome = self.reconcile().await;
        self.last_run = Some(Instant::now());
        let took = started.elapsed();
        let telemetry = self.deps.telemetry.clone();
        let answer = match outcome {
            Outcome::Done(c, snap) => {
                // A run asked for by a change applies that change, so only what no change ever
                // asks for (removing a route, a NAT rule, a foreign link) counts as drift then.
                let egress = c.applied.iter().any(|a| a.is_egress_repair(&self.names));
                if egress {
                    telemetry.egress_repaired();
                }
                let repairs: Vec<&'static str> = c
                    .applied
                    .iter()
                    .filter(|a| periodic || a.is_egress_repair(&self.names))
                    .map(|a| a.kind())
                    .collect();
                if !repairs.is_empty() {
                    tracing::warn!(tenant = %self.org_id, repairs = ?repairs, "kernel drift repaired");
                }
                self.failures = 0;
                let status = TenantStatus::from_observed(&self.names, &c.observed);
                self.remember_endpoints(&status, &snap).await;
                telemetry.reconciled(
                    self.org_id,
                    "ok",
                    took,
                    &repairs,
                    Some(facts(&status, &snap)),
                );
                self.status = Some(status);
                Ok(())
            }
            Outcome::Gone => {
                self.gone = true;
                Err(CoreError::NotFound)
            }
            Outcome::Failed(e) => {
                let result = if e == CoreError::DbUnavailable {
                    "db_unavailable"
                } else {
                    "error"
                };
                telemetry.reconciled(self.org_id, result, took, &[], None);
                if e != CoreError::DbUnavailable {
                    telemetry.down(self.org_id);
                    self.failures += 1;
                    tracing::error!(tenant = %self.org_id, error = %e, failures = self.failures, "reconcile failed");
                }
                if let Some(s) = self.status.as_mut() {
                    s.last_error = Some(e.to_string());
                }
                Err(e)
            }
        };
        for reply in waiting {
            let _ = reply.send(answer.clone());
        }
        if self.failures >= MAX_CONSECUTIVE_FAILURES {
            return Err(format!("{} reconciles failed in a row", self.failures).into());
        }
        Ok(())
    }
}

impl Actor for TenantActor {
    type Msg = TenantMsg;
    type State = TenantState;
    type Arguments = TenantArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TenantMsg>,
        args: TenantArgs,
    ) -> Result<TenantState, ActorProcessingErr> {
        myself.send_interval(args.deps.reconcile_interval, || TenantMsg::Tick);
        if !args.fresh {
            myself.send_message(TenantMsg::Tick)?;
        }
        Ok(TenantState {
            org_id: args.org_id,
            names: args.names,
            deps: args.deps,
            waiting: Vec::new(),
            status: None,
            last_run: None,
            failures: 0,
            gone: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<TenantMsg>,
        msg: TenantMsg,
        state: &mut TenantState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TenantMsg::Tick => {
                // Ticks that queued up behind a slow reconcile are dropped, not replayed.
                let half = state.deps.reconcile_interval / 2;
                if state.last_run.is_none_or(|t| t.elapsed() >= half) {
                    state.run(true).await?;
                }
            }
            TenantMsg::Sync(reply) => {
                state.waiting.push(reply);
                myself.send_message(TenantMsg::Flush)?;
            }
            TenantMsg::Flush => {
                if !state.waiting.is_empty() {
                    state.run(false).await?;
                }
            }
            TenantMsg::Status(reply) => {
                let _ = reply.send(state.status.clone());
            }
        }
        if state.gone {
            myself.stop(Some("org no longer in the database".into()));
        }
        Ok(())
    }
}
