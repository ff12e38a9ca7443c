//! Who is calling: a session token (the JWT a renderer took from its cookie) names a server-side
//! session, which is looked up (with a short in-process cache) and must match the token's user,
//! role and org.
//!
//! Reads may be answered from the cache for [`SessionPolicy::fresh`]; every way a session can end
//! inside this controller (logout, password change, user or org deletion) evicts it explicitly.
//! State-changing requests always check PostgreSQL, so a session ended by another process
//! (`meshwg admin`) can write nothing more. While PostgreSQL is unreachable a cached session
//! still answers reads, but only if PostgreSQL confirmed it within [`SessionPolicy::stale_max`]:
//! an outage cannot revive a session for longer than that.

use super::{ApiError, App};
use crate::auth::constant_time_eq;
use crate::db::DbError;
use crate::db::sessions::{self, Session};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a session confirmed by PostgreSQL may be trusted without asking again.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    /// Reads within this long of the last confirmation use the cache.
    pub fresh: Duration,
    /// While PostgreSQL is unreachable, reads are answered for sessions confirmed within this
    /// long; older ones (and every write) get 503.
    pub stale_max: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            fresh: Duration::from_secs(30),
            stale_max: Duration::from_secs(5 * 60),
        }
    }
}

pub struct SessionCache {
    policy: SessionPolicy,
    /// Each session with when PostgreSQL last confirmed it. Read-mostly: readers share the lock.
    inner: RwLock<HashMap<Uuid, (Session, Instant)>>,
}

impl Default for SessionCache {
    fn default() -> Self {
        Self::new(SessionPolicy::default())
    }
}

impl SessionCache {
    pub fn new(policy: SessionPolicy) -> Self {
        Self {
            policy,
            inner: RwLock::new(HashMap::new()),
        }
    }

    /// The cached session if it was confirmed less than `within` ago and has not expired.
    fn get(&self, id: Uuid, within: Duration) -> Option<Session> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let (s, at) = map.get(&id)?;
        (s.expires_at > Utc::now() && at.elapsed() < within).then(|| s.clone())
    }

    fn put(&self, s: &Session) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if map.len() > 50_000 {
            let now = Utc::now();
            let stale_max = self.policy.stale_max;
            map.retain(|_, (s, at)| s.expires_at > now && at.elapsed() < stale_max);
        }
        map.insert(s.id, (s.clone(), Instant::now()));
    }

    pub fn evict(&self, id: Uuid) {
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Evicts every session matching `f` (a user's, an org's).
    pub fn evict_where(&self, f: impl Fn(&Session) -> bool) {
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (s, _)| !f(s));
    }
}

/// The caller's live session, or 401 (503 when it cannot be checked at all). `token` is the
/// session cookie's value; `read` says the request changes nothing (it may use the cache).
pub async fn authenticate(app: &App, token: Option<&str>, read: bool) -> Result<Session, ApiError> {
    let claims = token
        .and_then(|t| app.jwt.verify(t).ok())
        .ok_or_else(ApiError::unauthorized)?;
    let cache = &app.sessions;
    let policy = cache.policy;
    let cached = read.then(|| cache.get(claims.sid, policy.fresh)).flatten();
    let session = match cached {
        Some(s) => s,
        None => match sessions::get(&app.pool, claims.sid).await {
            Ok(Some(s)) => {
                cache.put(&s);
                s
            }
            Ok(None) => {
                cache.evict(claims.sid);
                return Err(ApiError::unauthorized());
            }
            Err(DbError::Unavailable(_)) => read
                .then(|| cache.get(claims.sid, policy.stale_max))
                .flatten()
                .ok_or_else(|| ApiError::unavailable("the database is unavailable; try again"))?,
            Err(e) => return Err(e.into()),
        },
    };
    let u = &session.user;
    if u.id != claims.sub || u.role.as_str() != claims.role || u.org_id != claims.org {
        return Err(ApiError::unauthorized());
    }
    Ok(session)
}

/// State-changing requests must present the session's CSRF token (a header for the API, a form
/// field or header for pages), compared in constant time.
pub fn check_csrf(session: &Session, presented: Option<&str>) -> Result<(), ApiError> {
    match presented {
        Some(t) if constant_time_eq(t.as_bytes(), session.csrf_token.as_bytes()) => Ok(()),
        _ => Err(ApiError::csrf()),
    }
}
