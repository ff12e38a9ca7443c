//! The supervisor: loads every tenant at start, owns the tenant actors and the IP allocator,
//! restarts a failed child with exponential backoff (other tenants are unaffected) and removes
//! kernel objects with our prefix that no tenant owns.
//!
//! Start-up never touches the kernel before PostgreSQL has been read: it retries until it can.
//! Orgs left in state `creating` (the controller died while making them; nobody got an answer)
//! are rolled back, orgs left in `deleting` are finished.

mod events;

use super::ip_allocator::{IpAllocator, IpAllocatorMsg};
use super::tenant::{TenantActor, TenantArgs, TenantMsg};
use super::{CoreError, Deps};
use crate::db::orgs::{self, Org, OrgState};
use crate::installation::{self, Orphans};
use crate::reconcile::apply::teardown;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};
use uuid::Uuid;

const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long before failing starts its backoff from the beginning again.
const BACKOFF_RESET: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// `orphans`: what start-up may do with kernel objects the database does not own.
pub struct Supervisor {
    pub orphans: Orphans,
}

/// How often rows left pending past their deadline are deleted.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

struct Child {
    actor: ActorRef<TenantMsg>,
    kid: i64,
    started: Instant,
}

pub struct SupervisorState {
    deps: Deps,
    tenants: BTreeMap<Uuid, Child>,
    by_actor: HashMap<ActorId, Uuid>,
    /// Kid of each tenant waiting for a restart.
    pending: BTreeMap<Uuid, i64>,
    /// Consecutive quick failures per tenant (for backoff); reset once a child runs long enough.
    attempts: BTreeMap<Uuid, u32>,
    /// Restarts per tenant since this controller started.
    restarts: BTreeMap<Uuid, u64>,
    /// Tenants being stopped, with everybody waiting for that stop to finish.
    stopping: BTreeMap<Uuid, Vec<RpcReplyPort<Result<(), CoreError>>>>,
    allocator: ActorRef<IpAllocatorMsg>,
    /// Controller-wide change feeds (namespace directory, database notifications).
    feeds: Vec<tokio::task::JoinHandle<()>>,
}

pub enum SupervisorMsg {
    /// Something of these kinds changed for one tenant (see `kernel::watch::Dirty`).
    Kick {
        org_id: Uuid,
        bits: u32,
    },
    /// A tenant's rows changed (a database notification).
    Notified(events::Note),
    /// The same, for the tenant with this kernel id.
    KickKid {
        kid: i64,
        bits: u32,
    },
    /// The same, for every tenant.
    KickAll {
        bits: u32,
    },
    /// Spawns the actor of an org that exists in the database (idempotent).
    Start {
        org_id: Uuid,
        kid: i64,
        reply: RpcReplyPort<Result<ActorRef<TenantMsg>, CoreError>>,
    },
    /// Stops an org's actor on purpose (it is not restarted); the kernel is left alone. Answers
    /// only once the actor is gone (killed if it does not stop in time), so the caller may tear
    /// the kernel down without racing it.
    Stop {
        org_id: Uuid,
        reply: RpcReplyPort<Result<(), CoreError>>,
    },
    Get {
        org_id: Uuid,
        reply: RpcReplyPort<Option<ActorRef<TenantMsg>>>,
    },
    Allocator(RpcReplyPort<ActorRef<IpAllocatorMsg>>),
    /// Restarts per tenant since start.
    Restarts(RpcReplyPort<BTreeMap<Uuid, u64>>),
    Restart {
        org_id: Uuid,
    },
    /// Deletes rows left pending past their deadline (off this actor).
    Sweep,
    /// A stop begun by `Stop` has finished.
    Stopped {
        org_id: Uuid,
        result: Result<(), CoreError>,
    },
}

/// Stops a tenant actor, killing it (cancelling the work in hand) if it does not stop in time.
async fn stop_child(org_id: Uuid, actor: ActorRef<TenantMsg>) -> Result<(), CoreError> {
    if actor.stop_and_wait(None, Some(STOP_TIMEOUT)).await.is_ok() {
        return Ok(());
    }
    tracing::warn!(tenant = %org_id, timeout = ?STOP_TIMEOUT, "tenant actor did not stop; killing it");
    actor
        .kill_and_wait(Some(KILL_TIMEOUT))
        .await
        .map_err(|e| CoreError::Internal(format!("tenant actor did not stop: {e}")))
}

fn backoff(attempt: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

async fn remove_tenant(deps: &Deps, org: &Org, why: &str) {
    let Ok(names) = deps.prefix.tenant(org.kid) else {
        return;
    };
    match teardown(&deps.kernel, &names).await {
        Ok(()) => match orgs::delete(&deps.pool, org.id).await {
            Ok(_) => tracing::info!(tenant = %org.id, kid = org.kid, "{why}"),
            Err(e) => tracing::error!(tenant = %org.id, error = %e, "could not delete org row"),
        },
        Err(e) => {
            tracing::error!(tenant = %org.id, error = %e, "teardown failed; retried at next start")
        }
    }
}

/// Why start-up cannot go on: retried (PostgreSQL not there yet) or final (refused).
enum LoadError {
    Retry(CoreError),
    Refused(String),
}

impl From<crate::db::DbError> for LoadError {
    fn from(e: crate::db::DbError) -> Self {
        LoadError::Retry(e.into())
    }
}

/// Kernel ids of objects with our prefix (namespaces, devices, birth links); `None` if they
/// could not all be listed (then nothing is judged an orphan).
async fn kernel_kids(deps: &Deps) -> Option<BTreeSet<i64>> {
    let k = &deps.kernel;
    let mut found = BTreeSet::new();
    for listed in [
        k.netns.list(&deps.prefix).await,
        k.wg.list(&deps.prefix).await,
        k.netns.list_host_links(&deps.prefix).await,
    ] {
        match listed {
            Ok(kids) => found.extend(kids),
            Err(e) => {
                tracing::warn!(error = %e, "could not list kernel objects; orphans left for the next start");
                return None;
            }
        }
    }
    Some(found)
}

/// Reads every org, refuses to go on beside kernel objects this database never made, settles
/// interrupted creations and deletions, removes its own orphans; returns the orgs whose actors
/// must run.
async fn load(deps: &Deps, policy: Orphans) -> Result<Vec<Org>, LoadError> {
    let all = orgs::list(&deps.pool).await?;
    let last_issued = crate::db::installation::last_kid(&deps.pool).await?;
    let found = kernel_kids(deps).await;
    let owned: BTreeSet<i64> = all.iter().map(|o| o.kid).collect();
    let sorted = found
        .as_ref()
        .map(|f| installation::sort(f, &owned, last_issued))
        .unwrap_or_default();
    if !sorted.unknown.is_empty() && policy == Orphans::Careful {
        return Err(LoadError::Refused(format!(
            "kernel objects with prefix {} for tenant id(s) {:?} were not made by this database \
             (it issued ids up to {last_issued}): DATABASE_URL may name the wrong database or an \
             older copy; nothing was touched. To remove them anyway start once with --remove-unowned",
            deps.prefix.as_str(),
            sorted.unknown
        )));
    }
    // Leftovers of abandoned creations (see db::pending); the reconciler ignores them already.
    if let Err(e) = crate::db::pending::sweep(&deps.pool).await {
        tracing::warn!(error = %e, "could not delete lapsed pending rows");
    }
    let mut active = Vec::new();
    for org in all {
        match org.state {
            OrgState::Creating => {
                remove_tenant(
                    deps,
                    &org,
                    "rolled back a creation the controller did not finish",
                )
                .await
            }
            OrgState::Deleting => {
                remove_tenant(deps, &org, "finished an interrupted deletion").await
            }
            OrgState::Active => active.push(org),
        }
    }
    let mut remove = sorted.orphans;
    if policy == Orphans::RemoveUnowned {
        remove.extend(sorted.unknown);
    } else if remove.len() > installation::MAX_AUTO_REMOVALS {
        tracing::error!(
            orphans = ?remove,
            "more orphan tenants than start-up removes on its own; left running \
             (start once with --remove-unowned to remove them)"
        );
        remove.clear();
    }
    remove_orphans(deps, &remove).await;
    Ok(active)
}

async fn remove_orphans(deps: &Deps, kids: &[i64]) {
    for kid in kids {
        let Ok(names) = deps.prefix.tenant(*kid) else {
            continue;
        };
        match teardown(&deps.kernel, &names).await {
            Ok(()) => tracing::warn!(kid, netns = %names.netns, "removed orphan kernel objects"),
            Err(e) => tracing::error!(kid, error = %e, "could not remove orphan kernel objects"),
        }
    }
}

impl SupervisorState {
    async fn spawn_tenant(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        org_id: Uuid,
        kid: i64,
        fresh: bool,
    ) -> Result<ActorRef<TenantMsg>, CoreError> {
        if let Some(child) = self.tenants.get(&org_id) {
            return Ok(child.actor.clone());
        }
        let names = self
            .deps
            .prefix
            .tenant(kid)
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        let args = TenantArgs {
            org_id,
            names,
            deps: self.deps.clone(),
            fresh,
        };
        let (actor, _) = Actor::spawn_linked(None, TenantActor, args, myself.get_cell())
            .await
            .map_err(|e| CoreError::Internal(format!("tenant actor did not start: {e}")))?;
        self.by_actor.insert(actor.get_id(), org_id);
        self.tenants.insert(
            org_id,
            Child {
                actor: actor.clone(),
                kid,
                started: Instant::now(),
            },
        );
        Ok(actor)
    }

    async fn restart(&mut self, myself: &ActorRef<SupervisorMsg>, org_id: Uuid) {
        let Some(&kid) = self.pending.get(&org_id) else {
            return;
        };
        let attempt = self.attempts.get(&org_id).copied().unwrap_or(1);
        match orgs::get(&self.deps.pool, org_id).await {
            Ok(Some(org)) if org.state != OrgState::Deleting => {
                self.pending.remove(&org_id);
                *self.restarts.entry(org_id).or_default() += 1;
                self.deps.telemetry.restarted(org_id);
                match self.spawn_tenant(myself, org_id, org.kid, false).await {
                    Ok(_) => {
                        tracing::info!(tenant = %org_id, attempt, "tenant actor restarted");
                        self.deps.events.restarted(org_id, attempt);
                    }
                    Err(e) => {
                        // Never leave a tenant unmanaged: try again later.
                        tracing::error!(tenant = %org_id, error = %e, "tenant actor restart failed");
                        self.pending.insert(org_id, kid);
                        self.attempts.insert(org_id, attempt + 1);
                        myself.send_after(backoff(attempt + 1), move || SupervisorMsg::Restart {
                            org_id,
                        });
                    }
                }
            }
            Ok(Some(_)) => {
                self.pending.remove(&org_id);
                self.attempts.remove(&org_id);
            }
            Ok(None) => {
                self.pending.remove(&org_id);
                self.attempts.remove(&org_id);
                self.deps.telemetry.remove(org_id);
                self.deps.board.remove(org_id);
                let Ok(names) = self.deps.prefix.tenant(kid) else {
                    return;
                };
                let kernel = self.deps.kernel.clone();
                // Off this actor, like every slow step: other tenants' lookups go on meanwhile.
                tokio::spawn(async move {
                    match teardown(&kernel, &names).await {
                        Ok(()) => {
                            tracing::warn!(tenant = %org_id, "org vanished from the database; kernel objects removed")
                        }
                        Err(e) => {
                            tracing::error!(tenant = %org_id, error = %e, "teardown of vanished org failed; orphan removal at next start retries")
                        }
                    }
                });
            }
            Err(e) => {
                let attempt = attempt + 1;
                self.attempts.insert(org_id, attempt);
                tracing::warn!(tenant = %org_id, error = %e, "database unreadable; restart postponed");
                myself.send_after(backoff(attempt), move || SupervisorMsg::Restart { org_id });
            }
        }
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Deps;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        deps: Deps,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let (allocator, _) =
            Actor::spawn_linked(None, IpAllocator, deps.pool.clone(), myself.get_cell()).await?;
        let mut wait = BACKOFF_FIRST;
        let active = loop {
            match load(&deps, self.orphans).await {
                Ok(active) => break active,
                Err(LoadError::Retry(e)) => {
                    tracing::warn!(error = %e, retry_in = ?wait, "cannot load tenants yet; kernel left as it is");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(LoadError::Refused(why)) => return Err(why.into()),
            }
        };
        myself.send_interval(SWEEP_INTERVAL, || SupervisorMsg::Sweep);
        let mut state = SupervisorState {
            deps,
            tenants: BTreeMap::new(),
            by_actor: HashMap::new(),
            pending: BTreeMap::new(),
            attempts: BTreeMap::new(),
            restarts: BTreeMap::new(),
            stopping: BTreeMap::new(),
            allocator,
            feeds: Vec::new(),
        };
        if let Some(period) = state.deps.observer.poll {
            let d = &state.deps;
            state.feeds.push(super::poller::start(
                d.poll.clone(),
                d.kernel.clone(),
                period,
                d.observer.counters,
                d.observer.events,
            ));
        }
        if state.deps.observer.events {
            match events::netns_feed(state.deps.prefix.clone(), myself.clone()) {
                Ok(feed) => state.feeds.push(feed),
                Err(e) => {
                    tracing::warn!(error = %e, "no namespace events; polls cover deleted namespaces")
                }
            }
            if let Some(config) = state.deps.listen.clone() {
                state
                    .feeds
                    .push(events::database_feed(config, myself.clone()));
            }
        }
        for org in &active {
            state.spawn_tenant(&myself, org.id, org.kid, false).await?;
        }
        tracing::info!(tenants = active.len(), "supervisor started");
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        for feed in state.feeds.drain(..) {
            feed.abort();
        }
        // Actors stop, all at once; the kernel objects they own stay up (data-plane independence).
        let children = std::mem::take(&mut state.tenants);
        futures_util::future::join_all(
            children
                .values()
                .map(|c| c.actor.stop_and_wait(None, Some(STOP_TIMEOUT))),
        )
        .await;
        state.allocator.stop(None);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Start { org_id, kid, reply } => {
                let result = state.spawn_tenant(&myself, org_id, kid, true).await;
                let _ = reply.send(result);
            }
            SupervisorMsg::Stop { org_id, reply } => {
                state.pending.remove(&org_id);
                state.attempts.remove(&org_id);
                if let Some(waiting) = state.stopping.get_mut(&org_id) {
                    // A stop is under way: answered when it is over, not before.
                    waiting.push(reply);
                    return Ok(());
                }
                let Some(child) = state.tenants.remove(&org_id) else {
                    let _ = reply.send(Ok(()));
                    return Ok(());
                };
                state.by_actor.remove(&child.actor.get_id());
                state.stopping.insert(org_id, vec![reply]);
                // Waited for off this actor: other tenants' lookups must not queue behind it.
                let supervisor = myself.clone();
                tokio::spawn(async move {
                    let result = stop_child(org_id, child.actor).await;
                    let _ = supervisor.cast(SupervisorMsg::Stopped { org_id, result });
                });
            }
            SupervisorMsg::Get { org_id, reply } => {
                let _ = reply.send(state.tenants.get(&org_id).map(|c| c.actor.clone()));
            }
            SupervisorMsg::Allocator(reply) => {
                let _ = reply.send(state.allocator.clone());
            }
            SupervisorMsg::Restarts(reply) => {
                let _ = reply.send(state.restarts.clone());
            }
            SupervisorMsg::Restart { org_id } => state.restart(&myself, org_id).await,
            SupervisorMsg::Sweep => {
                let pool = state.deps.pool.clone();
                tokio::spawn(async move {
                    match crate::db::pending::sweep(&pool).await {
                        Ok(orgs) if !orgs.is_empty() => {
                            tracing::warn!(orgs = ?orgs, "deleted creations abandoned past their deadline")
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "sweep postponed"),
                    }
                });
            }
            SupervisorMsg::Kick { org_id, bits } => {
                if let Some(child) = state.tenants.get(&org_id) {
                    let _ = child.actor.cast(TenantMsg::Kick(bits));
                }
            }
            SupervisorMsg::Notified(note) => {
                if let Some(child) = state.tenants.get(&note.org_id) {
                    let _ = child.actor.cast(TenantMsg::Notified(note.xid, note.row));
                }
            }
            SupervisorMsg::KickKid { kid, bits } => {
                for child in state.tenants.values().filter(|c| c.kid == kid) {
                    let _ = child.actor.cast(TenantMsg::Kick(bits));
                }
            }
            SupervisorMsg::KickAll { bits } => {
                for child in state.tenants.values() {
                    let _ = child.actor.cast(TenantMsg::Kick(bits));
                }
            }
            SupervisorMsg::Stopped { org_id, result } => {
                for reply in state.stopping.remove(&org_id).unwrap_or_default() {
                    let _ = reply.send(result.clone());
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match &evt {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.clone().unwrap_or_else(|| "stopped".into()))
            }
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            _ => return Ok(()),
        };
        let id = cell.get_id();
        if id == state.allocator.get_id() {
            tracing::error!(reason = %why, "IP allocator exited; starting a new one");
            let (allocator, _) = Actor::spawn_linked(
                None,
                IpAllocator,
                state.deps.pool.clone(),
                myself.get_cell(),
            )
            .await?;
            state.allocator = allocator;
            return Ok(());
        }
        // Children stopped on purpose were unmapped before they stopped.
        let Some(org_id) = state.by_actor.remove(&id) else {
            return Ok(());
        };
        let Some(child) = state.tenants.remove(&org_id) else {
            return Ok(());
        };
        let attempt = if child.started.elapsed() > BACKOFF_RESET {
            1
        } else {
            state.attempts.get(&org_id).map_or(1, |n| n + 1)
        };
        let delay = backoff(attempt);
        tracing::warn!(tenant = %org_id, reason = %why, attempt, retry_in = ?delay, "tenant actor exited unexpectedly");
        state.attempts.insert(org_id, attempt);
        state.pending.insert(org_id, child.kid);
        myself.send_after(delay, move || SupervisorMsg::Restart { org_id });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(5), Duration::from_millis(3200));
        assert_eq!(backoff(30), BACKOFF_MAX);
    }
}
