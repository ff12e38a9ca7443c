//! The runtime: a [`supervisor::Supervisor`] that owns one [`tenant::TenantActor`] per org and the
//! [`ip_allocator::IpAllocator`]. Callers use the typed handles; every call has a timeout.

pub mod board;
pub mod events;
pub mod ip_allocator;
pub mod poller;
pub mod supervisor;
pub mod tenant;

use crate::crypto::HubKeyCipher;
use crate::db::{DbError, Pool};
use crate::kernel::Kernel;
use crate::names::KernelPrefix;
use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

/// How tenant actors learn that the kernel or the database changed.
#[derive(Debug, Clone)]
pub struct Observer {
    /// The cheap poll of what sends no event (`RECONCILE_INTERVAL`); `None`: off.
    pub poll: Option<Duration>,
    /// The full check: database and whole kernel state read afresh (`FULL_CHECK_INTERVAL`).
    pub full: Duration,
    /// How old rule counters may get before a poll reads them again.
    pub counters: Duration,
    /// Kernel events (netlink, pidfd, inotify) and database notifications (`KERNEL_EVENTS`).
    pub events: bool,
}

impl Observer {
    /// Defaults around a poll period: full check every 60 s, counters every 15 s, events on.
    pub fn polling(poll: Duration) -> Self {
        Self {
            poll: Some(poll),
            full: Duration::from_secs(60),
            counters: Duration::from_secs(15),
            events: true,
        }
    }
}

/// What every actor needs from the outside world.
#[derive(Clone)]
pub struct Deps {
    pub pool: Pool,
    pub kernel: Kernel,
    pub cipher: Arc<HubKeyCipher>,
    pub prefix: KernelPrefix,
    pub observer: Observer,
    pub port_range: RangeInclusive<u16>,
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// Where to `LISTEN` for changes made by other processes (`None`: rely on full checks).
    pub listen: Option<tokio_postgres::Config>,
    /// Where tenant actors publish their observations for readers.
    pub board: Arc<board::StatusBoard>,
    /// The tenants the cheap poll visits.
    pub poll: Arc<poller::PollRegistry>,
    pub quotas: Quotas,
    /// Where repairs, failures and restarts go for the org's timeline (never waited for).
    pub events: events::EventLog,
}

/// Per-org limits, enforced inside the creating transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub machines: u32,
    pub policies: u32,
    pub users: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            machines: 5000,
            policies: 5000,
            users: 500,
        }
    }
}

/// Errors of controller operations. `Clone`, because one reconcile answers many waiters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("not found")]
    NotFound,
    #[error("database unavailable")]
    DbUnavailable,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Exhausted(String),
    #[error("kernel: {0}")]
    Kernel(String),
    #[error("timed out waiting for the kernel")]
    Timeout,
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// The change is committed to PostgreSQL (so the reconciler will enforce it) but the kernel
    /// did not confirm it: the cause.
    #[error("saved but not confirmed by the kernel: {0}")]
    NotConfirmed(String),
}

impl CoreError {
    /// For an error met after the change was committed.
    pub fn unconfirmed(self) -> CoreError {
        match self {
            // The org went away meanwhile: nothing will be enforced.
            CoreError::NotConfirmed(_) | CoreError::NotFound => self,
            e => CoreError::NotConfirmed(e.to_string()),
        }
    }
}

impl From<DbError> for CoreError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(_) => CoreError::DbUnavailable,
            DbError::NotFound => CoreError::NotFound,
            DbError::Conflict(c) => CoreError::Conflict(conflict_message(&c).into()),
            DbError::Exhausted(what) => CoreError::Exhausted(format!("no free {what} left")),
            q @ DbError::Quota { .. } => CoreError::Exhausted(q.to_string()),
            other => CoreError::Internal(other.to_string()),
        }
    }
}

/// What a client is told about a unique constraint: the rule it broke, never the schema's name.
fn conflict_message(constraint: &str) -> &'static str {
    if constraint.contains("public_key") {
        "a machine with this public key already exists in this org"
    } else if constraint.contains("address") {
        "the overlay address was taken by a concurrent request; try again"
    } else if constraint.contains("listen_port") {
        "the listen port was taken by a concurrent request; try again"
    } else if constraint.contains("email") {
        "a user with this email already exists"
    } else {
        "conflicts with an existing record"
    }
}

/// How long a caller waits for an actor that must first make the kernel agree.
pub const KERNEL_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a caller waits for an answer that needs no kernel work.
pub const QUICK_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// `actor.call` with a timeout, its failure modes folded into [`CoreError`].
pub async fn call<M, T, F>(actor: &ActorRef<M>, build: F, timeout: Duration) -> Result<T, CoreError>
where
    M: Message,
    T: Send + 'static,
    F: FnOnce(RpcReplyPort<T>) -> M,
{
    match actor.call(build, Some(timeout)).await {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => Err(CoreError::Timeout),
        Ok(CallResult::SenderError) | Err(_) => Err(CoreError::Unavailable(
            "the actor stopped before answering".into(),
        )),
    }
}
