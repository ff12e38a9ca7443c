//! One actor per tenant: the only writer of that tenant's kernel state.
//!
//! It keeps the kernel equal to PostgreSQL without re-reading everything all the time:
//! - **events** — links, addresses, routes, netconf and every nf_tables commit inside the
//!   namespace, the daemon's exit, the namespace's removal, a database change made elsewhere —
//!   mark it dirty, and one reconcile follows ~20 ms later;
//! - a **cheap poll** ([`Observer::poll`]) glances at what emits no event (sysctls, each link's
//!   IPv6 switch, the device's peers, ipset members, the ruleset generation) and runs the pure
//!   planner on that glance; only a non-empty plan costs a full reconcile;
//! - a **full check** ([`Observer::full`]) re-reads the database and the whole kernel state.
//!
//! A reconcile observes natively, plans and applies until the kernel agrees (`converge`). A
//! change (`Sync`, answered only once the kernel reflects the database) reads the database
//! again — only the rows it names when it names them, and only the rows a notification names
//! (so one policy changed among 2,000 costs a one-row read); a repair uses the desired state
//! last read, so a database outage never empties a tenant and drift is still repaired
//! meanwhile.

mod history;
mod ring;
mod status;
mod watches;

pub use history::{History, Series, rule_key};
pub use ring::SLOTS;
pub use status::TenantStatus;
pub use watches::WatchInfo;

use super::poller::{Expect, with_counters};
use super::{CoreError, Deps, Observer};
use crate::db::orgs::{self, OrgState, Rows, Snapshot};
use crate::db::pending::Table;
use crate::kernel::watch::{Dirty, TenantWatch};
use crate::kernel::{DeviceObserved, DeviceState, FlowKey, RuleObserved};
use crate::names::TenantNames;
use crate::policy::evaluate::Chain;
use crate::policy::render::MachineAddr;
use crate::reconcile::Action;
use crate::reconcile::apply::{Converged, converge};
use crate::reconcile::{Desired, Observed};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// After this many failed reconciles in a row the actor gives up and lets the supervisor restart
/// it with backoff.
const MAX_CONSECUTIVE_FAILURES: u32 = 10;
/// How soon a failed reconcile is tried again when no poll period is configured.
const RETRY: Duration = Duration::from_millis(1500);
/// Events arriving together are handled by one reconcile.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// More rows than this to read again are read with all the others (one query, no id list).
const MAX_REREAD: usize = 64;

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
    /// The database as last read, and the desired state made of it.
    snapshot: Option<Arc<Snapshot>>,
    desired: Option<Desired>,
    /// Something changed in the database since it was last read: read all of it again.
    db_stale: bool,
    /// These rows changed since they were last read: read them again.
    reread: Rows,
    /// Transactions below this id had ended when the database was last read (so a
    /// notification of one of them brings nothing new).
    seen_below: Option<u64>,
    /// The same for rows read alone since: row id → `seen_below` of that read.
    rows_seen: HashMap<Uuid, u64>,
    /// The kernel as the last successful reconcile left it.
    observed: Option<Observed>,
    status: Option<Arc<TenantStatus>>,
    /// Where `status` is published for readers (see `actors::board`).
    status_tx: tokio::sync::watch::Sender<Option<Arc<TenantStatus>>>,
    db_version: Arc<std::sync::atomic::AtomicU64>,
    watch: Option<TenantWatch>,
    /// A debounced reconcile is already on its way.
    kicked: bool,
    /// Kernel kinds ([`Dirty`]) announced changed since the last reconcile began.
    dirty_kernel: u32,
    counters_at: Option<Instant>,
    failures: u32,
    /// The org is gone from the database (or being deleted): stop and let the supervisor decide.
    gone: bool,
    /// Live watches: desired state this actor alone holds (see `watches`).
    watches: watches::Watches,
    /// The last 30 min of numbers, sampled from what is published (see `history`).
    history: Arc<History>,
}

pub enum TenantMsg {
    /// The poll read new numbers (bytes, handshakes, rule counters) of an unchanged kernel.
    Numbers(Box<DeviceObserved>, Option<Vec<RuleObserved>>),
    /// Full check: database and kernel read afresh.
    Full,
    /// Something of these kinds ([`Dirty`]) changed.
    Kick(u32),
    /// The tenant's kernel events: these kinds changed; for nf_tables commits alone, the newest
    /// one's generation.
    Events(u32, Option<u32>),
    /// The tenant's rows changed (a database notification), in this transaction if known;
    /// only this row if it is named.
    Notified(Option<u64>, Option<(Table, Uuid)>),
    /// The debounced reconcile after events.
    Reconcile,
    /// Reconcile now; answered once the kernel reflects the database. With rows named, a
    /// change to those rows alone was committed: only they are read again.
    Sync(Option<Rows>, RpcReplyPort<Result<(), CoreError>>),
    /// Runs one reconcile for everybody waiting (many `Sync`s coalesce into one).
    Flush,
    /// The last observed kernel state.
    Status(RpcReplyPort<Option<TenantStatus>>),
    /// Starts the periodic timers (sent once, after a per-tenant phase offset).
    StartTimers,
    /// A new watch for this long (a `Sync` then installs it); refused while three are live.
    AddWatch(
        crate::policy::watch::WatchPath,
        Duration,
        RpcReplyPort<Result<WatchInfo, CoreError>>,
    ),
    /// The live watches.
    Watches(RpcReplyPort<Vec<WatchInfo>>),
    /// A watch's time may be up: reconcile without it.
    WatchExpired,
}

/// Why a reconcile runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// A change was saved: read the database, apply it.
    Change,
    /// Events or a poll saw a difference: repair it.
    Drift,
    /// The periodic full check.
    Full,
}

/// Everything that can stop one reconcile.
enum Outcome {
    Done(Box<Converged>),
    /// The org is gone or being deleted: nothing to do.
    Gone,
    Failed(CoreError),
}

/// Whether nf_tables generation `g` is `read` or older (generations wrap around).
fn not_after(g: u32, read: u32) -> bool {
    g.wrapping_sub(read) as i32 <= 0
}

/// Spreads tenants' timers over the period, so a thousand tenants do not poll at once.
fn phase(kid: i64, period: Duration) -> Duration {
    let ms = period.as_millis().max(1) as u64;
    Duration::from_millis((kid as u64).wrapping_mul(2_654_435_761) % ms)
}

impl TenantState {
    /// Reads the database; `Ok(false)` when the org is gone or being deleted.
    async fn load(&mut self) -> Result<bool, CoreError> {
        let (snap, xmin) = match orgs::snapshot_seen(&self.deps.pool, self.org_id).await {
            Ok(Some((snap, xmin))) if snap.org.state != OrgState::Deleting => (snap, xmin),
            Ok(_) => return Ok(false),
            Err(e) => {
                tracing::warn!(tenant = %self.org_id, error = %e, "database unreadable");
                return Err(e.into());
            }
        };
        // Unchanged rows (the periodic full check, mostly): keep the desired state made of
        // them, with no key to open and no chain to render again.
        if self.desired.is_none() || self.snapshot.as_deref() != Some(&snap) {
            let desired = status::desired(&self.names, &self.deps, &snap, self.status.as_deref())?;
            self.snapshot = Some(Arc::new(snap));
            self.desired = Some(desired);
        }
        self.db_stale = false;
        self.reread = Rows::default();
        self.rows_seen.clear();
        self.seen_below = Some(xmin);
        Ok(true)
    }

    /// Reads again the rows in `reread` (and the org's row) and puts them in the snapshot;
    /// `Ok(false)` when the org is gone or being deleted. Everything is read when the org's
    /// row moved.
    async fn load_rows(&mut self) -> Result<bool, CoreError> {
        let Some(mut snap) = self.snapshot.as_deref().cloned() else {
            return self.load().await;
        };
        let reread = match orgs::rows_seen(&self.deps.pool, self.org_id, &self.reread).await {
            Ok(Some(r)) if r.org.state != OrgState::Deleting => r,
            Ok(_) => return Ok(false),
            Err(e) => {
                tracing::warn!(tenant = %self.org_id, error = %e, "database unreadable");
                return Err(e.into());
            }
        };
        if reread.org != snap.org {
            return self.load().await;
        }
        let xmin = reread.xmin;
        let rows = std::mem::take(&mut self.reread);
        snap.patch(&rows, reread);
        for id in rows.ids() {
            self.rows_seen.insert(id, xmin);
        }
        if self.snapshot.as_deref() != Some(&snap) {
            let desired = status::desired(&self.names, &self.deps, &snap, self.status.as_deref())?;
            self.snapshot = Some(Arc::new(snap));
            self.desired = Some(desired);
        }
        Ok(true)
    }

    /// Whether a notification of transaction `xid` (about `row` alone, if named) announces
    /// nothing the last reads did not see.
    fn seen(&self, xid: Option<u64>, row: Option<(Table, Uuid)>) -> bool {
        let Some(xid) = xid else {
            return false;
        };
        self.seen_below.is_some_and(|below| xid < below)
            || row.is_some_and(|(_, id)| self.rows_seen.get(&id).is_some_and(|below| xid < *below))
    }

    async fn reconcile(&mut self, why: Why) -> (Outcome, bool) {
        let before = self.desired.as_ref().map(Desired::target);
        let read_all = why == Why::Full
            || self.db_stale
            || self.desired.is_none()
            || self.reread.len() > MAX_REREAD;
        if read_all || !self.reread.is_empty() {
            let read = if read_all {
                self.load().await
            } else {
                self.load_rows().await
            };
            match read {
                Ok(true) => {}
                Ok(false) => return (Outcome::Gone, false),
                // A change must be read to be applied; a repair can use what was last read.
                Err(e) if why == Why::Change || self.desired.is_none() => {
                    return (Outcome::Failed(e), false);
                }
                Err(_) => {}
            }
        }
        // Endpoint hints follow the latest observation, not the one of the last database read.
        if let (Some(want), Some(snap)) = (self.desired.as_mut(), self.snapshot.as_ref()) {
            want.endpoint_hints = status::endpoint_hints(snap, self.status.as_deref());
        }
        // The live watches are part of the desired firewall; expired ones drop out here.
        self.watches.prune(Instant::now());
        if let Some(want) = self.desired.as_mut() {
            want.firewall.watch = self.watches.rules();
        }
        let want = self.desired.as_ref().expect("loaded above");
        // What a run applies counts as drift only if the target did not move meanwhile (a
        // change saved elsewhere and announced by NOTIFY is a change, not drift).
        let target_moved = before.is_some_and(|b| b != want.target());
        match converge(&self.deps.kernel, want, why == Why::Change).await {
            Ok(c) => (Outcome::Done(Box::new(c)), target_moved),
            Err(e) => (
                Outcome::Failed(CoreError::Kernel(e.to_string())),
                target_moved,
            ),
        }
    }

    /// One reconcile; answers everybody waiting. `Err` only when the actor should be restarted.
    async fn run(
        &mut self,
        myself: &ActorRef<TenantMsg>,
        why: Why,
    ) -> Result<(), ActorProcessingErr> {
        let waiting = std::mem::take(&mut self.waiting);
        // This run looks at the whole kernel: what was announced so far is covered by it.
        self.dirty_kernel = 0;
        let started = Instant::now();
        let (outcome, target_moved) = self.reconcile(why).await;
        let took = started.elapsed();
        let telemetry = self.deps.telemetry.clone();
        let answer = match outcome {
            Outcome::Done(c) => {
                // Only what no change ever asks for counts as drift when a change was applied.
                let drift_run = why != Why::Change && !target_moved;
                if c.applied.iter().any(|a| a.is_egress_repair(&self.names)) {
                    telemetry.egress_repaired();
                }
                let repairs: Vec<&'static str> = c
                    .applied
                    .iter()
                    .filter(|a| drift_run || a.is_egress_repair(&self.names))
                    .map(|a| a.kind())
                    .collect();
                if !repairs.is_empty() {
                    tracing::warn!(tenant = %self.org_id, repairs = ?repairs, "kernel drift repaired");
                    self.deps
                        .events
                        .repaired(self.org_id, &repairs, &c.applied, took);
                }
                self.failures = 0;
                self.counters_at = Some(Instant::now());
                if c.applied.iter().any(Action::narrows) {
                    self.revoke().await;
                }
                let mut status = TenantStatus::from_observed(&self.names, &c.observed);
                let now = chrono::Utc::now();
                for kind in &repairs {
                    for id in crate::reconcile::invariants::failed_before(kind) {
                        status.failed_at.insert(id, now);
                    }
                }
                let snap = self.snapshot.clone().expect("loaded");
                self.remember_endpoints(&status, &snap).await;
                telemetry.reconciled(
                    self.org_id,
                    "ok",
                    took,
                    &repairs,
                    Some(status::facts(&status, &snap)),
                );
                self.publish(status);
                self.deps.poll.expect(self.org_id, Expect::of(&c.observed));
                self.observed = Some(c.observed);
                self.ensure_watch(myself).await;
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
                    self.deps.events.failed(self.org_id, &e.to_string(), took);
                }
                if let Some(s) = self.status.as_deref() {
                    let mut s = s.clone();
                    s.last_error = Some(e.to_string());
                    self.publish(s);
                }
                // What was observed is no longer known to hold, and the poll has nothing to
                // compare with: try again after a poll period (a database outage included).
                self.observed = None;
                self.deps.poll.expect(self.org_id, None);
                if !self.kicked {
                    self.kicked = true;
                    let retry = self.deps.observer.poll.unwrap_or(RETRY);
                    myself.send_after(retry, || TenantMsg::Reconcile);
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

    /// Cuts tracked flows the chain no longer admits as new, and flows of machines that are
    /// gone (their address goes to the next machine): without this, the `ESTABLISHED` shortcut
    /// of a default-deny chain would keep a revoked flow alive.
    async fn revoke(&self) {
        let Some(snap) = self.snapshot.clone() else {
            return;
        };
        let machines: Vec<MachineAddr> = snap.machines.iter().map(|m| m.addr()).collect();
        let live: HashSet<Ipv4Addr> = machines.iter().map(|m| m.address).collect();
        let chain = Chain::new(&snap.policies, &machines, snap.org.default_action);
        let cidr = snap.org.cidr;
        let keep = |f: FlowKey| {
            // Only forwarded flows between overlay addresses are the chain's business.
            let forwarded = cidr.contains(f.src)
                && cidr.contains(f.dst)
                && f.src != cidr.hub_address()
                && f.dst != cidr.hub_address();
            !forwarded
                || live.contains(&f.src)
                    && live.contains(&f.dst)
                    && chain.admits_new(f.src, f.dst, f.proto, f.dport)
        };
        match self.deps.kernel.firewall.revoke(&self.names, &keep).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(tenant = %self.org_id, flows = n, "tracked flows cut after a policy change")
            }
            Err(e) => {
                tracing::warn!(tenant = %self.org_id, error = %e, "could not cut revoked flows")
            }
        }
    }

    /// New numbers from the poll (bytes, handshakes, counters) for readers; the kernel's shape
    /// is unchanged.
    async fn numbers(&mut self, device: DeviceObserved, rules: Option<Vec<RuleObserved>>) {
        let Some(last) = self.observed.as_mut() else {
            return;
        };
        let moved = !matches!(&last.device, DeviceState::Up(d) if *d == device)
            || rules.as_ref().is_some_and(|rules| {
                last.firewall.as_ref().and_then(|fw| fw.acl.as_ref()) != Some(rules)
            });
        if !moved {
            // Idle (most tenants, most of the time): the status stands as published; only the
            // history's clock moves, once per slot.
            self.sample_unmoved();
            return;
        }
        last.device = DeviceState::Up(device);
        if let Some(rules) = rules
            && let Some(fw) = last
                .firewall
                .as_ref()
                .and_then(|fw| with_counters(fw, rules))
        {
            last.firewall = Some(fw);
        }
        self.refresh_status().await;
    }

    /// The poll read the same numbers as last published: the history samples them again (its
    /// time axis follows its newest sample), with no status to rebuild, no endpoint to store
    /// and no metric to move.
    fn sample_unmoved(&mut self) {
        let Some(old) = self.status.as_deref() else {
            return;
        };
        if !self
            .history
            .due(chrono::Utc::now(), self.deps.observer.counters)
        {
            return;
        }
        let mut status = old.clone();
        status.observed_at = chrono::Utc::now();
        self.publish(status);
    }

    /// Publishes the last observation (after a poll changed it).
    async fn refresh_status(&mut self) {
        let Some(now) = self.observed.as_ref() else {
            return;
        };
        let mut status = TenantStatus::from_observed(&self.names, now);
        if let Some(old) = &self.status {
            status.last_error.clone_from(&old.last_error);
        }
        if let Some(snap) = self.snapshot.clone() {
            self.remember_endpoints(&status, &snap).await;
            self.deps
                .telemetry
                .kernel_facts(self.org_id, status::facts(&status, &snap));
        }
        self.publish(status);
    }

    /// Makes `status` what readers see, with the next generation number.
    fn publish(&mut self, mut status: TenantStatus) {
        status.generation = self.status.as_ref().map_or(1, |s| s.generation + 1);
        // When invariants were last broken outlives the observation that repaired them.
        if let Some(old) = &self.status {
            for (id, at) in &old.failed_at {
                status.failed_at.entry(id).or_insert(*at);
            }
        }
        // Every new observation passes here: the history samples it, at most once per slot.
        let (now, step) = (chrono::Utc::now(), self.deps.observer.counters);
        if self.history.due(now, step) {
            Arc::make_mut(&mut self.history).record(now, step, &status);
        }
        status.history = self.history.clone();
        let status = Arc::new(status);
        self.status = Some(status.clone());
        self.status_tx.send_replace(Some(status));
    }

    /// Keeps the event subscription on the namespace (and daemon) that exist now.
    async fn ensure_watch(&mut self, myself: &ActorRef<TenantMsg>) {
        if !self.deps.observer.events {
            return;
        }
        let Some(o) = &self.observed else {
            return;
        };
        let Some(inode) = o.netns.as_ref().map(|n| n.inode) else {
            self.watch = None;
            return;
        };
        let pid = match &o.device {
            DeviceState::Up(d) => d.pid,
            _ => None,
        };
        if self
            .watch
            .as_ref()
            .is_some_and(|w| w.inode == inode && w.pid == pid)
        {
            return;
        }
        self.watch = None;
        let actor = myself.clone();
        match TenantWatch::start(&self.names.netns, inode, pid, move |bits, generation| {
            let _ = actor.send_message(TenantMsg::Events(bits, generation));
        })
        .await
        {
            Ok(w) => self.watch = Some(w),
            Err(e) => {
                tracing::warn!(tenant = %self.org_id, error = %e, "no kernel events for this tenant; polls cover it")
            }
        }
    }

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

    /// The tenant's rows may have changed: readers' cached views of them are stale.
    fn db_changed(&self) {
        self.db_version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Whether nf_tables commits up to `generation` are ones the last reconcile saw: its final
    /// look read the ruleset at that generation or later (our own commits, mostly).
    fn saw_commits(&self, generation: u32) -> bool {
        let read = self
            .observed
            .as_ref()
            .and_then(|o| o.firewall.as_ref())
            .and_then(|fw| fw.generation);
        read.is_some_and(|read| not_after(generation, read))
    }

    /// Kernel events: a reconcile, unless they are only commits the last one already saw.
    fn events(&mut self, myself: &ActorRef<TenantMsg>, bits: u32, generation: Option<u32>) {
        if bits == Dirty::FIREWALL && generation.is_some_and(|g| self.saw_commits(g)) {
            return;
        }
        self.kick(myself, bits);
    }

    /// Whether a debounced reconcile has nothing to do: no kernel event since the last one
    /// began, no row to read, and that one succeeded (what kicked it was read meanwhile, by a
    /// change that also converged the kernel).
    fn nothing_to_do(&self) -> bool {
        self.dirty_kernel == 0
            && self.reread.is_empty()
            && !self.db_stale
            && self.observed.is_some()
    }

    fn kick(&mut self, myself: &ActorRef<TenantMsg>, bits: u32) {
        self.dirty_kernel |= bits & !Dirty::DATABASE;
        if bits & Dirty::DATABASE != 0 {
            self.db_stale = true;
            self.db_changed();
        }
        if bits & Dirty::NETNS != 0 {
            // Our handles would keep a deleted namespace (and its device and port) alive.
            self.watch = None;
            self.deps.kernel.namespaces.forget(&self.names.netns);
        }
        if !self.kicked {
            self.kicked = true;
            myself.send_after(DEBOUNCE, || TenantMsg::Reconcile);
        }
    }
}

fn start_timers(myself: &ActorRef<TenantMsg>, o: &Observer) {
    myself.send_interval(o.full, || TenantMsg::Full);
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
        myself.send_after(phase(args.names.kid, args.deps.observer.full), || {
            TenantMsg::StartTimers
        });
        args.deps
            .poll
            .register(args.org_id, args.names.clone(), myself.clone());
        if !args.fresh {
            // Adopted or restarted: reconcile before answering anything else.
            myself.send_message(TenantMsg::Reconcile)?;
        }
        let (status_tx, db_version) = args.deps.board.register(args.org_id);
        Ok(TenantState {
            status_tx,
            db_version,
            org_id: args.org_id,
            names: args.names,
            deps: args.deps,
            waiting: Vec::new(),
            snapshot: None,
            desired: None,
            db_stale: true,
            reread: Rows::default(),
            seen_below: None,
            rows_seen: HashMap::new(),
            observed: None,
            status: None,
            watch: None,
            kicked: !args.fresh,
            dirty_kernel: 0,
            counters_at: None,
            failures: 0,
            gone: false,
            watches: Default::default(),
            history: Default::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<TenantMsg>,
        msg: TenantMsg,
        state: &mut TenantState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TenantMsg::StartTimers => start_timers(&myself, &state.deps.observer),
            TenantMsg::Numbers(device, rules) => state.numbers(*device, rules).await,
            TenantMsg::Full => state.run(&myself, Why::Full).await?,
            TenantMsg::Kick(bits) => state.kick(&myself, bits),
            TenantMsg::Events(bits, generation) => state.events(&myself, bits, generation),
            TenantMsg::Notified(xid, row) => {
                // Our own change's notification arrives after the reconcile that read it: no
                // second read for it (readers' views are still refreshed).
                if state.seen(xid, row) {
                    state.db_changed();
                } else if let Some((table, id)) = row {
                    state.reread.insert(table, id);
                    state.db_changed();
                    state.kick(&myself, 0);
                } else {
                    state.kick(&myself, Dirty::DATABASE);
                }
            }
            TenantMsg::Reconcile => {
                state.kicked = false;
                if !state.nothing_to_do() {
                    state.run(&myself, Why::Drift).await?;
                }
            }
            TenantMsg::Sync(rows, reply) => {
                match rows {
                    Some(rows) => state.reread.extend(rows),
                    None => state.db_stale = true,
                }
                state.db_changed();
                state.waiting.push(reply);
                myself.send_message(TenantMsg::Flush)?;
            }
            TenantMsg::Flush => {
                if !state.waiting.is_empty() {
                    state.run(&myself, Why::Change).await?;
                }
            }
            TenantMsg::Status(reply) => {
                let _ = reply.send(state.status.as_deref().cloned());
            }
            TenantMsg::AddWatch(path, ttl, reply) => {
                let added = state.watches.add(path, ttl, Instant::now());
                if let Ok(w) = &added {
                    let left = (w.expires_at - chrono::Utc::now())
                        .to_std()
                        .unwrap_or_default();
                    myself.send_after(left + Duration::from_millis(20), || TenantMsg::WatchExpired);
                }
                let _ = reply.send(added);
            }
            TenantMsg::Watches(reply) => {
                state.watches.prune(Instant::now());
                let _ = reply.send(state.watches.list());
            }
            TenantMsg::WatchExpired => {
                let now = Instant::now();
                if state.watches.due(now) {
                    state.run(&myself, Why::Drift).await?;
                } else if let Some(left) = state.watches.next(now) {
                    // Early (timers and clocks differ by a hair): ask again at the deadline.
                    myself.send_after(left + Duration::from_millis(20), || TenantMsg::WatchExpired);
                }
            }
        }
        if state.gone {
            myself.stop(Some("org no longer in the database".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::not_after;

    #[test]
    fn commits_up_to_the_generation_read_were_seen_across_the_wrap() {
        assert!(not_after(5, 5));
        assert!(not_after(4, 5));
        assert!(!not_after(6, 5));
        assert!(not_after(u32::MAX, 2));
        assert!(!not_after(1, u32::MAX));
    }
}
