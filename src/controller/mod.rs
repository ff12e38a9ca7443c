//! The operations the API calls, each returning only after the kernel reflects it:
//! create/delete tenant, add/remove machine, sync (after policy changes), status.
//!
//! The operations that change state run as their own task: a client that hangs up (dropping the
//! request future) must not stop a creation or deletion halfway and leave the org stuck in
//! `creating` or `deleting`. The caller awaits the task; if it goes away the task finishes alone.
//!
//! Every creation ends in a known state: nothing, or a complete object whose audit entry was
//! written in the same transaction that made it real. A creation that fails undoes what does
//! not need PostgreSQL at once (actor, kernel) and what does as soon as PostgreSQL answers.

mod pending;
mod rotation;

use crate::actors::supervisor::{Supervisor, SupervisorMsg};
use crate::actors::tenant::{TenantMsg, TenantStatus};
use crate::actors::{CoreError, Deps, KERNEL_CALL_TIMEOUT, QUICK_CALL_TIMEOUT, call};
use crate::db::orgs::{self, NewOrg, Org, OrgState, Rows};
use crate::db::{audit, machines};
use crate::installation::Orphans;
use crate::kernel::RuleObserved;
use crate::keys::PrivateKey;
use crate::overlay::Ipv4Cidr;
use crate::policy::Verdict;
use crate::reconcile::apply::teardown;
use ractor::{Actor, ActorRef};
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

/// Who asked for a creation and what its audit entry says about the object made.
pub struct Audit<T> {
    pub actor: audit::Actor,
    pub detail: Box<dyn Fn(&T) -> serde_json::Value + Send + Sync>,
}

impl<T> Audit<T> {
    /// A creation by the controller itself (tests, tools): audited with an empty detail.
    pub fn system() -> Self {
        Audit {
            actor: audit::Actor::default(),
            detail: Box::new(|_| serde_json::json!({})),
        }
    }
}

/// What a new tenant needs; everything else (port, keys, kernel id) is generated.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub name: String,
    pub cidr: Ipv4Cidr,
    pub default_action: Verdict,
}

#[derive(Clone)]
pub struct Controller {
    supervisor: ActorRef<SupervisorMsg>,
    deps: Deps,
}

impl Controller {
    /// Starts the supervisor, which loads every tenant (waiting for PostgreSQL if it must),
    /// settles interrupted work and removes orphans before this returns.
    pub async fn start(deps: Deps) -> Result<Controller, CoreError> {
        Self::start_with(deps, Orphans::Careful).await
    }

    /// [`Self::start`], saying what start-up may do with kernel objects it does not own.
    pub async fn start_with(deps: Deps, orphans: Orphans) -> Result<Controller, CoreError> {
        let (supervisor, _) = Actor::spawn(None, Supervisor { orphans }, deps.clone())
            .await
            .map_err(|e| CoreError::Internal(format!("supervisor did not start: {e}")))?;
        Ok(Controller { supervisor, deps })
    }

    /// Stops every actor. Kernel objects (namespaces, daemons, rules) stay up.
    pub async fn shutdown(&self) {
        let _ = self
            .supervisor
            .stop_and_wait(None, Some(std::time::Duration::from_secs(60)))
            .await;
    }

    pub fn deps(&self) -> &Deps {
        &self.deps
    }

    /// The actor that owns a tenant (for diagnostics; use the operations below to change it).
    pub async fn tenant_actor(&self, org_id: Uuid) -> Result<ActorRef<TenantMsg>, CoreError> {
        self.tenant(org_id).await
    }

    async fn tenant(&self, org_id: Uuid) -> Result<ActorRef<TenantMsg>, CoreError> {
        call(
            &self.supervisor,
            |reply| SupervisorMsg::Get { org_id, reply },
            QUICK_CALL_TIMEOUT,
        )
        .await?
        .ok_or_else(|| {
            CoreError::Unavailable("tenant is not running (restarting or unknown)".into())
        })
    }

    /// Makes the tenant's kernel equal to the database now; returns once it is.
    pub async fn sync(&self, org_id: Uuid) -> Result<(), CoreError> {
        self.sync_read(org_id, None).await
    }

    /// [`Self::sync`] after a change that touched these rows of the tenant only (and not its
    /// org row): only they are read again.
    pub async fn sync_rows(&self, org_id: Uuid, rows: Rows) -> Result<(), CoreError> {
        self.sync_read(org_id, Some(rows)).await
    }

    async fn sync_read(&self, org_id: Uuid, rows: Option<Rows>) -> Result<(), CoreError> {
        let tenant = self.tenant(org_id).await?;
        call(
            &tenant,
            |reply| TenantMsg::Sync(rows, reply),
            KERNEL_CALL_TIMEOUT,
        )
        .await?
    }

    /// [`Self::sync`] after a change already committed: its failure is
    /// [`CoreError::NotConfirmed`], since the reconciler will still enforce the change.
    pub async fn apply_saved(&self, org_id: Uuid) -> Result<(), CoreError> {
        self.sync(org_id).await.map_err(CoreError::unconfirmed)
    }

    /// [`Self::apply_saved`] after a change to these rows alone (see [`Self::sync_rows`]).
    pub async fn apply_saved_rows(&self, org_id: Uuid, rows: Rows) -> Result<(), CoreError> {
        self.sync_rows(org_id, rows)
            .await
            .map_err(CoreError::unconfirmed)
    }

    /// The kernel state of the tenant as of its last observation, with rule counters read
    /// from the kernel now (when the chain is still the one observed).
    pub async fn status(&self, org_id: Uuid) -> Result<TenantStatus, CoreError> {
        let mut status = TenantStatus::clone(&*self.status_snapshot(org_id).await?);
        if let Some(rules) = self.counters(&status).await {
            status.rules = rules;
        }
        Ok(status)
    }

    /// The rules of an observation with their counters read from the kernel now; `None` when
    /// the chain is no longer the one observed (or cannot be read).
    pub async fn counters(&self, status: &TenantStatus) -> Option<Vec<RuleObserved>> {
        let names = self.deps.prefix.tenant(status.kid).ok()?;
        let rules = self.deps.kernel.firewall.counters(&names).await.ok()??;
        rules
            .iter()
            .map(|r| &r.rule)
            .eq(status.rules.iter().map(|r| &r.rule))
            .then_some(rules)
    }

    /// The tenant's last published observation, without asking its actor (a read never waits
    /// behind a reconcile) and without reading the kernel. Only before the first observation
    /// of a tenant (just started) does this wait for its actor.
    pub async fn status_snapshot(&self, org_id: Uuid) -> Result<Arc<TenantStatus>, CoreError> {
        if let Some(s) = self
            .deps
            .board
            .get(org_id)
            .and_then(|p| p.status.borrow().clone())
        {
            return Ok(s);
        }
        let tenant = self.tenant(org_id).await?;
        call(&tenant, TenantMsg::Status, QUICK_CALL_TIMEOUT)
            .await?
            .map(Arc::new)
            .ok_or_else(|| CoreError::Unavailable("tenant has not been reconciled yet".into()))
    }

    /// Starts a watch (a counting-only rule for one path, `policy::watch`) for `ttl`; answered
    /// once the kernel counts. At most three per org at a time (a fourth is a conflict).
    pub async fn add_watch(
        &self,
        org_id: Uuid,
        path: crate::policy::watch::WatchPath,
        ttl: std::time::Duration,
    ) -> Result<crate::actors::tenant::WatchInfo, CoreError> {
        let tenant = self.tenant(org_id).await?;
        let w = call(
            &tenant,
            |reply| TenantMsg::AddWatch(path, ttl, reply),
            QUICK_CALL_TIMEOUT,
        )
        .await??;
        self.apply_saved(org_id).await?;
        Ok(w)
    }

    /// The tenant's live watches and their rules' counters read from the kernel now.
    pub async fn watches(
        &self,
        org_id: Uuid,
    ) -> Result<(Vec<crate::actors::tenant::WatchInfo>, Vec<RuleObserved>), CoreError> {
        let tenant = self.tenant(org_id).await?;
        let list = call(&tenant, TenantMsg::Watches, QUICK_CALL_TIMEOUT).await?;
        let status = self.status_snapshot(org_id).await?;
        let names = self
            .deps
            .prefix
            .tenant(status.kid)
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        let counters = if list.is_empty() {
            Vec::new()
        } else {
            self.deps
                .kernel
                .firewall
                .watch_counters(&names)
                .await
                .map_err(|e| CoreError::Kernel(e.to_string()))?
        };
        Ok((list, counters))
    }

    /// `(rows version, observation generation)` of a tenant: moves whenever what a reader
    /// made of its rows and its observation may have changed. `None` for an unknown tenant.
    pub fn versions(&self, org_id: Uuid) -> Option<(u64, u64)> {
        let p = self.deps.board.get(org_id)?;
        let generation = p.status.borrow().as_ref().map_or(0, |s| s.generation);
        Some((p.db_version(), generation))
    }

    /// Tenant actor restarts since start, per tenant.
    pub async fn restarts(&self) -> Result<BTreeMap<Uuid, u64>, CoreError> {
        call(
            &self.supervisor,
            SupervisorMsg::Restarts,
            QUICK_CALL_TIMEOUT,
        )
        .await
    }

    /// [`Self::create_tenant_by`] the controller itself.
    pub async fn create_tenant(&self, new: NewTenant) -> Result<Org, CoreError> {
        self.create_tenant_by(new, Audit::system()).await
    }

    /// Creates the org row, brings its namespace, wg0, port and chain up, and only then marks it
    /// active, together with its audit entry. On failure nothing is left: the actor is stopped
    /// and the kernel objects torn down at once, the row deleted as soon as PostgreSQL answers.
    pub async fn create_tenant_by(
        &self,
        new: NewTenant,
        audit: Audit<Org>,
    ) -> Result<Org, CoreError> {
        let this = self.clone();
        detached(async move { this.create_tenant_now(new, audit).await }).await
    }

    async fn create_tenant_now(&self, new: NewTenant, audit: Audit<Org>) -> Result<Org, CoreError> {
        let id = Uuid::new_v4();
        let key = PrivateKey::generate();
        let row = NewOrg {
            id,
            name: new.name,
            cidr: new.cidr,
            default_action: new.default_action,
            hub_public_key: key.public_key(),
            sealed_key: self.deps.cipher.seal(id, &key),
        };
        drop(key);
        let mut org =
            orgs::insert_creating(&self.deps.pool, &row, self.deps.port_range.clone()).await?;
        let kid = org.kid;
        let made = async {
            call(
                &self.supervisor,
                |reply| SupervisorMsg::Start {
                    org_id: id,
                    kid,
                    reply,
                },
                QUICK_CALL_TIMEOUT,
            )
            .await??;
            self.sync(id).await?;
            let mut active = org.clone();
            active.state = OrgState::Active;
            let detail = (audit.detail)(&active);
            let entry =
                audit
                    .actor
                    .entry(Some(id), "org.create", "org", Some(id.to_string()), detail);
            if orgs::activate_audited(&self.deps.pool, id, &entry).await? {
                Ok(())
            } else {
                Err(CoreError::Conflict(
                    "the org was deleted while it was being created".into(),
                ))
            }
        };
        match made.await {
            Ok(()) => {
                org.state = OrgState::Active;
                tracing::info!(tenant = %id, kid, port = org.listen_port, "tenant created");
                Ok(org)
            }
            Err(e) => {
                tracing::error!(tenant = %id, error = %e, "tenant creation failed; rolling back");
                self.abort_creation(id, kid).await;
                Err(e)
            }
        }
    }

    /// Undoes a creation that failed: actor and kernel objects at once (neither needs
    /// PostgreSQL, which may be what failed), the row as soon as PostgreSQL answers. Should this
    /// process die first, the next start rolls the org, still `creating`, back.
    async fn abort_creation(&self, org_id: Uuid, kid: i64) {
        let stopped = call(
            &self.supervisor,
            |reply| SupervisorMsg::Stop { org_id, reply },
            KERNEL_CALL_TIMEOUT,
        )
        .await
        .and_then(|r| r);
        let torn_down = match (stopped, self.deps.prefix.tenant(kid)) {
            (Ok(()), Ok(names)) => teardown(&self.deps.kernel, &names)
                .await
                .map_err(|e| CoreError::Kernel(e.to_string())),
            (Err(e), _) => Err(e),
            (_, Err(e)) => Err(CoreError::Internal(e.to_string())),
        };
        self.deps.telemetry.remove(org_id);
        self.deps.board.remove(org_id);
        let pool = self.deps.pool.clone();
        tokio::spawn(async move {
            let done = match &torn_down {
                // Nothing left in the kernel: the row goes.
                Ok(()) => retry_db(|| orgs::delete(&pool, org_id)).await.map(drop),
                // Left for the operator to see and retry (DELETE), or the next start.
                Err(_) => retry_db(|| orgs::set_state(&pool, org_id, OrgState::Deleting))
                    .await
                    .map(drop),
            };
            match (torn_down, done) {
                (Ok(()), Ok(())) => tracing::info!(tenant = %org_id, "failed creation rolled back"),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(tenant = %org_id, error = %e, "rollback incomplete; finished by DELETE or at next start")
                }
            }
        });
    }

    /// Marks the org deleting, stops its actor, removes every kernel object, deletes the row
    /// (machines, users, sessions, policies cascade). Returns when nothing is left. Works on an
    /// org in any state, so an operator can retry a deletion whose teardown failed.
    pub async fn delete_tenant(&self, org_id: Uuid) -> Result<(), CoreError> {
        let this = self.clone();
        detached(async move {
            let org = orgs::get(&this.deps.pool, org_id)
                .await?
                .ok_or(CoreError::NotFound)?;
            this.destroy(org_id, org.kid).await?;
            tracing::info!(tenant = %org_id, kid = org.kid, "tenant deleted");
            Ok(())
        })
        .await
    }

    async fn destroy(&self, org_id: Uuid, kid: i64) -> Result<(), CoreError> {
        orgs::set_state(&self.deps.pool, org_id, OrgState::Deleting).await?;
        call(
            &self.supervisor,
            |reply| SupervisorMsg::Stop { org_id, reply },
            KERNEL_CALL_TIMEOUT,
        )
        .await??;
        let names = self
            .deps
            .prefix
            .tenant(kid)
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        teardown(&self.deps.kernel, &names)
            .await
            .map_err(|e| CoreError::Kernel(e.to_string()))?;
        orgs::delete(&self.deps.pool, org_id).await?;
        self.deps.telemetry.remove(org_id);
        self.deps.board.remove(org_id);
        Ok(())
    }

    /// Deletes the machine and returns once its peer is gone from the hub. An error after the row
    /// is gone is [`CoreError::NotConfirmed`]: the reconciler still removes the peer.
    pub async fn remove_machine(&self, org_id: Uuid, machine_id: Uuid) -> Result<(), CoreError> {
        let this = self.clone();
        detached(async move {
            if !machines::delete(&this.deps.pool, org_id, machine_id).await? {
                return Err(CoreError::NotFound);
            }
            this.apply_saved_rows(org_id, Rows::machine(machine_id))
                .await
        })
        .await
    }
}

/// Runs a database step until PostgreSQL answers it (backing off while it is unreachable), for
/// at most [`RETRY_DB_FOR`]; any other error ends it at once.
async fn retry_db<T, F, Fut>(step: F) -> Result<T, CoreError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, crate::db::DbError>>,
{
    let give_up = std::time::Instant::now() + RETRY_DB_FOR;
    let mut wait = std::time::Duration::from_millis(200);
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_unavailable() && std::time::Instant::now() < give_up => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// How long an undo waits for PostgreSQL before leaving the rest to the next start (orgs) or to
/// the deadline of a pending row (machines, policies).
const RETRY_DB_FOR: std::time::Duration = std::time::Duration::from_secs(3600);

/// Runs `work` as its own task and waits for it; dropping the wait does not cancel the work.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, CoreError>> + Send + 'static,
) -> Result<T, CoreError> {
    tokio::spawn(work)
        .await
        .map_err(|e| CoreError::Internal(format!("operation task failed: {e}")))?
}
