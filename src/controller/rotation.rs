//! Changing machines that exist: a key rotation, replacing the peer in one reconcile.

use super::{Audit, Controller, detached, retry_db};
use crate::actors::CoreError;
use crate::db::audit;
use crate::db::machines::{self, Machine};
use crate::db::orgs::Rows;
use crate::keys::PublicKey;
use uuid::Uuid;

impl Controller {
    /// Gives a machine a new public key and returns once the hub has the new key in place of
    /// the old one (one `SetPeers`: the new peer takes the machine's /32, the old one goes),
    /// then audits it (`machine.rotate_key`). Should the kernel not confirm it, the old key is
    /// put back and the error returned: a rotation whose new key nobody may hold (the answer
    /// carrying it is lost) must not stay in force.
    pub async fn rotate_machine_key(
        &self,
        org_id: Uuid,
        machine_id: Uuid,
        new_key: PublicKey,
        audit: Audit<Machine>,
    ) -> Result<Machine, CoreError> {
        let this = self.clone();
        detached(async move {
            let pool = &this.deps.pool;
            let old = machines::get(pool, org_id, machine_id)
                .await?
                .ok_or(CoreError::NotFound)?;
            if old.public_key == new_key {
                return Err(CoreError::Conflict("this is already the machine's key".into()));
            }
            let m = machines::set_public_key(pool, org_id, machine_id, &old.public_key, &new_key)
                .await?
                .ok_or_else(|| {
                    CoreError::Conflict("the machine changed meanwhile; try again".into())
                })?;
            if let Err(e) = this.sync_rows(org_id, Rows::machine(machine_id)).await {
                tracing::error!(tenant = %org_id, machine = %machine_id, error = %e, "key rotation not confirmed; putting the old key back");
                this.unrotate(org_id, machine_id, old.public_key, new_key);
                return Err(e);
            }
            let mut detail = (audit.detail)(&m);
            if let Some(d) = detail.as_object_mut() {
                d.insert("old_public_key".into(), old.public_key.to_base64().into());
                d.insert("public_key".into(), m.public_key.to_base64().into());
            }
            let entry = audit.actor.entry(
                Some(org_id),
                "machine.rotate_key",
                "machine",
                Some(machine_id.to_string()),
                detail,
            );
            if let Err(e) = audit::record(pool, &entry).await {
                tracing::error!(tenant = %org_id, error = %e, "could not record audit entry");
            }
            Ok(m)
        })
        .await
    }

    /// Puts a machine's old key back (if the new one is still in place) as soon as PostgreSQL
    /// answers, then re-syncs the tenant. Runs on its own.
    fn unrotate(&self, org_id: Uuid, machine_id: Uuid, old: PublicKey, new: PublicKey) {
        let this = self.clone();
        tokio::spawn(async move {
            let pool = this.deps.pool.clone();
            let back =
                retry_db(|| machines::set_public_key(&pool, org_id, machine_id, &new, &old)).await;
            if let Err(e) = back {
                tracing::error!(tenant = %org_id, machine = %machine_id, error = %e, "could not put the old key back; rotate again");
            }
            if let Err(e) = this.sync(org_id).await {
                tracing::warn!(tenant = %org_id, error = %e, "re-sync after an unconfirmed rotation failed; the next reconcile repeats it");
            }
        });
    }
}
