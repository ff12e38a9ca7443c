//! The operations the API calls, each returning only after the kernel reflects it:
//! create/delete tenant, add/remove machine, sync (after policy changes), status.
//!
//! The operations that change state run as their own task: a client that hangs up (dropping the
//! request future) must not stop a creation or deletion halfway and leave the org stuck in
//! `creating` or `deleting`. The caller awaits the task; if it goes away the task finishes alone.

use crate::actors::supervisor::{Supervisor, SupervisorMsg};
use crate::actors::tenant::{TenantMsg, TenantStatus};
use crate::actors::{CoreError, Deps, KERNEL_CALL_TIMEOUT, QUICK_CALL_TIMEOUT, call};
use crate::db::machines::{self, Machine, NewMachine};
use crate::db::orgs::{self, NewOrg, Org, OrgState};
use crate::keys::PrivateKey;
use crate::overlay::Ipv4Cidr;
use crate::policy::Verdict;
use crate::reconcile::apply::teardown;
use ractor::{Actor, ActorRef};
use std::collections::BTreeMap;
use uuid::Uuid;

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
        let (supervisor, _) = Actor::spawn(None, Supervisor, deps.clone())
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
        let tenant = self.tenant(org_id).await?;
        call(&tenant, TenantMsg::Sync, KERNEL_CALL_TIMEOUT).await?
    }

    /// [`Self::sync`] after a change already committed: its failure is
    /// [`CoreError::NotConfirmed`], since the reconciler will still enforce the change.
    pub async fn apply_saved(&self, org_id: Uuid) -> Result<(), CoreError> {
        self.sync(org_id).await.map_err(CoreError::unconfirmed)
    }

    /// The kernel state of the tenant as of its last observation, with rule counters read
    /// from the kernel now (when the chain is still the one observed).
    pub async fn status(&self, org_id: Uuid) -> Result<TenantStatus, CoreError> {
        let tenant = self.tenant(org_id).await?;
        let mut status = call(&tenant, TenantMsg::Status, QUICK_CALL_TIMEOUT)
            .await?
            .ok_or_else(|| CoreError::Unavailable("tenant has not been reconciled yet".into()))?;
        if let Ok(names) = self.deps.prefix.tenant(status.kid)
            && let Ok(Some(rules)) = self.deps.kernel.firewall.counters(&names).await
            && rules
                .iter()
                .map(|r| &r.rule)
                .eq(status.rules.iter().map(|r| &r.rule))
        {
            status.rules = rules;
        }
        Ok(status)
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

    /// Creates the org row, brings its namespace, wg0, port and chain up, and only then marks it
    /// active. On failure nothing is left: kernel objects are torn down and the row is deleted.
    pub async fn create_tenant(&self, new: NewTenant) -> Result<Org, CoreError> {
        let this = self.clone();
        detached(async move { this.create_tenant_now(new).await }).await
    }

    async fn create_tenant_now(&self, new: NewTenant) -> Result<Org, CoreError> {
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
            if orgs::activate(&self.deps.pool, id).await? {
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
                if let Err(e2) = self.destroy(id, kid).await {
                    tracing::error!(tenant = %id, error = %e2, "rollback incomplete; finished at next start");
                }
                Err(e)
            }
        }
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
        Ok(())
    }

    /// Allocates the lowest free address, inserts the machine and returns once its peer is live
    /// in the hub. If the hub cannot take it, the machine is removed again.
    pub async fn add_machine(&self, org_id: Uuid, new: NewMachine) -> Result<Machine, CoreError> {
        let this = self.clone();
        detached(async move { this.add_machine_now(org_id, new).await }).await
    }

    async fn add_machine_now(&self, org_id: Uuid, new: NewMachine) -> Result<Machine, CoreError> {
        let allocator = call(
            &self.supervisor,
            SupervisorMsg::Allocator,
            QUICK_CALL_TIMEOUT,
        )
        .await?;
        let machine = call(
            &allocator,
            |reply| crate::actors::ip_allocator::IpAllocatorMsg::Allocate {
                org_id,
                machine: new,
                reply,
            },
            KERNEL_CALL_TIMEOUT,
        )
        .await??;
        if let Err(e) = self.sync(org_id).await {
            tracing::error!(tenant = %org_id, machine = %machine.id, error = %e, "peer not applied; removing machine");
            if machines::delete(&self.deps.pool, org_id, machine.id)
                .await
                .is_ok()
            {
                let _ = self.sync(org_id).await;
            }
            return Err(e);
        }
        Ok(machine)
    }

    /// Deletes the machine and returns once its peer is gone from the hub. An error after the row
    /// is gone is [`CoreError::NotConfirmed`]: the reconciler still removes the peer.
    pub async fn remove_machine(&self, org_id: Uuid, machine_id: Uuid) -> Result<(), CoreError> {
        let this = self.clone();
        detached(async move {
            if !machines::delete(&this.deps.pool, org_id, machine_id).await? {
                return Err(CoreError::NotFound);
            }
            this.sync(org_id).await.map_err(CoreError::unconfirmed)
        })
        .await
    }
}

/// Runs `work` as its own task and waits for it; dropping the wait does not cancel the work.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, CoreError>> + Send + 'static,
) -> Result<T, CoreError> {
    tokio::spawn(work)
        .await
        .map_err(|e| CoreError::Internal(format!("operation task failed: {e}")))?
}
