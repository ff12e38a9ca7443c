//! Where tenant actors publish what readers need, so that a read never waits in an actor's
//! mailbox behind a reconcile: each tenant's last observation (a `watch` of an `Arc`, replaced
//! whole, never mutated) and a counter that moves whenever the tenant's rows may have changed.

use super::tenant::TenantStatus;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;
use uuid::Uuid;

/// One tenant's published state.
#[derive(Clone)]
pub struct Published {
    pub status: watch::Receiver<Option<Arc<TenantStatus>>>,
    /// Moves when the tenant's rows may have changed (a change applied, a notification).
    pub db_version: Arc<AtomicU64>,
}

impl Published {
    pub fn db_version(&self) -> u64 {
        self.db_version.load(Ordering::Acquire)
    }
}

#[derive(Default)]
pub struct StatusBoard {
    tenants: RwLock<HashMap<Uuid, Published>>,
}

impl StatusBoard {
    /// Registers a tenant actor's channel; returns the sender it publishes with and the counter
    /// it bumps. The counter survives the actor (a restarted actor keeps counting from there).
    pub fn register(
        &self,
        org: Uuid,
    ) -> (watch::Sender<Option<Arc<TenantStatus>>>, Arc<AtomicU64>) {
        let mut map = self.tenants.write().unwrap_or_else(|p| p.into_inner());
        let db_version = map
            .get(&org)
            .map(|p| p.db_version.clone())
            .unwrap_or_default();
        let (tx, rx) = watch::channel(None);
        map.insert(
            org,
            Published {
                status: rx,
                db_version: db_version.clone(),
            },
        );
        (tx, db_version)
    }

    pub fn get(&self, org: Uuid) -> Option<Published> {
        self.tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&org)
            .cloned()
    }

    /// Forgets a deleted tenant.
    pub fn remove(&self, org: Uuid) {
        self.tenants
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&org);
    }
}
