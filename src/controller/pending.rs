//! Creating machines and policies: inserted pending, installed in the kernel, then confirmed
//! together with their audit entry (see `db::pending`). A creation that fails at any step —
//! allocator timeout, kernel, PostgreSQL gone — abandons its row: deleted as soon as PostgreSQL
//! answers, then the kernel re-synced so nothing it may have installed stays. A row whose
//! abandonment fails too passes its deadline, after which the reconciler leaves it out.

use super::{Audit, Controller, detached, retry_db};
use crate::actors::ip_allocator::IpAllocatorMsg;
use crate::actors::supervisor::SupervisorMsg;
use crate::actors::{CoreError, KERNEL_CALL_TIMEOUT, QUICK_CALL_TIMEOUT, call};
use crate::db::machines::{Machine, NewMachine};
use crate::db::orgs::Rows;
use crate::db::pending::{self, Table};
use crate::db::policies::{self, PolicyFields};
use crate::policy::Policy;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a row may stay pending: longer than the slowest creation (allocation, then the
/// kernel, each bounded by [`KERNEL_CALL_TIMEOUT`]).
pub const PENDING_FOR: Duration = Duration::from_secs(3 * KERNEL_CALL_TIMEOUT.as_secs());

impl Controller {
    /// [`Self::add_machine_by`] the controller itself.
    pub async fn add_machine(&self, org_id: Uuid, new: NewMachine) -> Result<Machine, CoreError> {
        self.add_machine_by(org_id, new, Audit::system()).await
    }

    /// Allocates the lowest free address, inserts the machine and returns once its peer is live
    /// in the hub and the machine is confirmed and audited. Otherwise the machine is abandoned.
    pub async fn add_machine_by(
        &self,
        org_id: Uuid,
        new: NewMachine,
        audit: Audit<Machine>,
    ) -> Result<Machine, CoreError> {
        let added = self.add_machine_then(org_id, new, audit, |_| ()).await?;
        Ok(added.0)
    }

    /// [`Self::add_machine_by`], running `then` on the machine as soon as its address is
    /// allocated, on a blocking thread while the hub takes the machine (what the API answers
    /// with, e.g. the config's QR code, costs no time after the kernel is done).
    pub async fn add_machine_then<T: Send + 'static>(
        &self,
        org_id: Uuid,
        new: NewMachine,
        audit: Audit<Machine>,
        then: impl FnOnce(Machine) -> T + Send + 'static,
    ) -> Result<(Machine, T), CoreError> {
        let this = self.clone();
        detached(async move {
            let machine = this.allocate(org_id, new).await?;
            let made = tokio::task::spawn_blocking({
                let machine = machine.clone();
                move || then(machine)
            });
            this.install(Table::Machines, org_id, machine.id, &audit, &machine)
                .await?;
            let made = made.await.map_err(|e| CoreError::Internal(e.to_string()))?;
            Ok((machine, made))
        })
        .await
    }

    /// Inserts the machine, pending, at the lowest free address.
    async fn allocate(&self, org_id: Uuid, new: NewMachine) -> Result<Machine, CoreError> {
        let id = new.id;
        let allocator = call(
            &self.supervisor,
            SupervisorMsg::Allocator,
            QUICK_CALL_TIMEOUT,
        )
        .await?;
        let allocated = call(
            &allocator,
            |reply| IpAllocatorMsg::Allocate {
                max: self.deps.quotas.machines,
                org_id,
                machine: new,
                pending_for: PENDING_FOR,
                deadline: Instant::now() + KERNEL_CALL_TIMEOUT,
                reply,
            },
            KERNEL_CALL_TIMEOUT,
        )
        .await;
        match allocated {
            Ok(result) => result,
            // The allocator may still insert it after we stopped waiting.
            Err(e) => {
                self.abandon(Table::Machines, org_id, id);
                Err(e)
            }
        }
    }

    /// Inserts a policy and returns once the kernel enforces it and it is confirmed and audited.
    /// Otherwise the policy is abandoned (and the kernel re-synced without it).
    pub async fn add_policy_by(
        &self,
        org_id: Uuid,
        fields: PolicyFields,
        audit: Audit<Policy>,
    ) -> Result<Policy, CoreError> {
        let this = self.clone();
        detached(async move {
            let id = Uuid::new_v4();
            let pool = &this.deps.pool;
            let max = this.deps.quotas.policies;
            let policy =
                policies::insert_pending(pool, org_id, id, &fields, PENDING_FOR, max).await?;
            this.install(Table::Policies, org_id, id, &audit, &policy)
                .await?;
            Ok(policy)
        })
        .await
    }

    /// Makes the kernel take a pending row, then confirms it with its audit entry
    /// (`<table>.create` about `made`).
    async fn install<T>(
        &self,
        table: Table,
        org_id: Uuid,
        id: Uuid,
        audit: &Audit<T>,
        made: &T,
    ) -> Result<(), CoreError> {
        let (action, target) = match table {
            Table::Machines => ("machine.create", "machine"),
            Table::Policies => ("policy.create", "policy"),
        };
        let detail = (audit.detail)(made);
        let entry = audit
            .actor
            .entry(Some(org_id), action, target, Some(id.to_string()), detail);
        let result = async {
            let mut rows = Rows::default();
            rows.insert(table, id);
            self.sync_rows(org_id, rows).await?;
            if pending::confirm(&self.deps.pool, table, org_id, id, &entry).await? {
                Ok(())
            } else {
                Err(CoreError::Timeout)
            }
        }
        .await;
        if let Err(e) = &result {
            tracing::error!(tenant = %org_id, id = %id, ?table, error = %e, "creation failed; abandoning it");
            self.abandon(table, org_id, id);
        }
        result
    }

    /// Deletes a pending row as soon as PostgreSQL answers, then re-syncs the tenant so that
    /// nothing the kernel was given for it stays. Runs on its own.
    fn abandon(&self, table: Table, org_id: Uuid, id: Uuid) {
        let this = self.clone();
        tokio::spawn(async move {
            let pool = this.deps.pool.clone();
            match retry_db(|| pending::abandon(&pool, table, org_id, id)).await {
                Ok(_) => {
                    if let Err(e) = this.sync(org_id).await {
                        tracing::warn!(tenant = %org_id, error = %e, "re-sync after abandoning failed; the next reconcile repeats it");
                    }
                }
                Err(e) => {
                    tracing::error!(tenant = %org_id, id = %id, ?table, error = %e, "could not abandon; it lapses at its deadline")
                }
            }
        });
    }
}
