//! The operations behind every route, one logic for two renderings: the JSON API (`http`) and,
//! next, the HTML dashboard. Each operation is `op(app, ctx, input) -> Result<T, ApiError>`: it
//! validates its typed input, checks the caller's rights, does the work and returns a typed value
//! (`views`); a renderer only turns that value into JSON or HTML and never repeats a check.
//!
//! What every caller passes before an operation runs, in this order (both routers): body size,
//! content type, session, CSRF on state-changing requests, then [`Ctx::scoped`] — the org in the
//! path against the session, so another tenant's ids are simply not found (404).
//!
//! Reads of an org's machines come from a read model (`reads`): the rows and the kernel's last
//! observation, merged once per change and kept with their serialized pages.

pub mod access;
pub mod audit;
pub mod auth;
pub mod batch;
pub mod console;
pub mod error;
pub mod explain;
pub mod invariants;
pub mod machine_query;
pub mod machines;
pub mod matrix;
pub mod orgs;
pub mod page;
pub mod policies;
pub mod preview;
pub mod reads;
pub mod session;
pub mod status;
pub mod timeline;
pub mod users;
pub mod validate;
pub mod views;
pub mod watch;

pub use access::Ctx;
pub use error::ApiError;

use crate::auth::jwt::Jwt;
use crate::auth::password::Hasher;
use crate::auth::ratelimit::{ChangeLimiter, Limits, LoginLimiter};
use crate::controller::Controller;
use crate::db::Pool;
use crate::secret::Secret;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Settings of the API that come from the environment.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub jwt_secret: Secret<Vec<u8>>,
    pub cookie_secure: bool,
    pub public_endpoint: String,
    pub trusted_proxies: Vec<IpAddr>,
    pub session_ttl: Duration,
    pub sessions: session::SessionPolicy,
    pub login_limits: Limits,
    /// Password hashes allowed to run at once (each takes 19 MiB and a core for ~30 ms). Half
    /// the cores by default, so that a flood of logins leaves the other half to everything else.
    pub concurrent_hashes: usize,
}

impl ApiConfig {
    pub fn new(jwt_secret: Secret<Vec<u8>>, cookie_secure: bool, public_endpoint: String) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            jwt_secret,
            cookie_secure,
            public_endpoint,
            trusted_proxies: Vec::new(),
            session_ttl: Duration::from_secs(12 * 3600),
            sessions: Default::default(),
            login_limits: Limits::default(),
            concurrent_hashes: (cores / 2).max(1),
        }
    }
}

/// Everything an operation can reach.
pub struct App {
    pub ctl: Controller,
    pub pool: Pool,
    pub jwt: Jwt,
    pub hasher: Hasher,
    pub limiter: LoginLimiter,
    pub password_changes: ChangeLimiter,
    pub sessions: session::SessionCache,
    pub config: ApiConfig,
    /// Verified against when the email is unknown, so both cases cost the same.
    pub dummy_hash: String,
    /// Per-org read model of machines (and the org row), see [`reads`].
    pub reads: reads::ReadModel,
}

impl App {
    pub fn new(ctl: Controller, config: ApiConfig) -> Arc<App> {
        let dummy = Secret::new(crate::auth::random_token(24));
        Arc::new(App {
            pool: ctl.deps().pool.clone(),
            ctl,
            jwt: Jwt::new(&config.jwt_secret),
            hasher: Hasher::new(config.concurrent_hashes),
            limiter: LoginLimiter::new(config.login_limits),
            password_changes: ChangeLimiter::default(),
            sessions: session::SessionCache::new(config.sessions),
            dummy_hash: crate::auth::password::hash_blocking(&dummy)
                .expect("hashing a random token"),
            config,
            reads: reads::ReadModel::default(),
        })
    }
}
