//! Who is calling: the JWT in the session cookie names a server-side session, which is looked up
//! (with a short in-process cache) and must match the token's user, role and org.
//!
//! Reads (`GET`) may be answered from the cache for [`SessionPolicy::fresh`]; every way a session
//! can end inside this controller (logout, password change, user or org deletion) evicts it
//! explicitly. State-changing requests always check PostgreSQL, so a session ended by another
//! process (`meshwg admin`) can write nothing more. While PostgreSQL is unreachable a cached
//! session still answers reads, but only if PostgreSQL confirmed it within
//! [`SessionPolicy::stale_max`]: an outage cannot revive a session for longer than that.
//!
//! With `COOKIE_SECURE` (the default) the cookies carry the `__Host-` prefix: browsers accept
//! them only from a secure origin, for the whole host, without a `Domain`, so neither a sibling
//! subdomain nor a plain-HTTP page can plant a session or CSRF cookie.

use super::Request;
use super::error::ApiError;
use crate::auth::constant_time_eq;
use crate::auth::jwt::{Claims, Jwt};
use crate::db::sessions::{self, Session};
use crate::db::users::Role;
use crate::db::{DbError, Pool};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;
use warp::http::{HeaderValue, Method};

pub const CSRF_HEADER: &str = "x-csrf-token";

/// The session cookie's name: `__Host-` prefixed when cookies are `Secure`.
pub fn session_cookie(secure: bool) -> &'static str {
    if secure {
        "__Host-meshwg_session"
    } else {
        "meshwg_session"
    }
}

/// The CSRF cookie's name (readable by the page; the header must echo it).
pub fn csrf_cookie(secure: bool) -> &'static str {
    if secure {
        "__Host-meshwg_csrf"
    } else {
        "meshwg_csrf"
    }
}

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
    /// Each session with when PostgreSQL last confirmed it.
    inner: Mutex<HashMap<Uuid, (Session, Instant)>>,
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
            inner: Mutex::new(HashMap::new()),
        }
    }

    /// The cached session if it was confirmed less than `within` ago and has not expired.
    fn get(&self, id: Uuid, within: Duration) -> Option<Session> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (s, at) = map.get(&id)?;
        (s.expires_at > Utc::now() && at.elapsed() < within).then(|| s.clone())
    }

    fn put(&self, s: &Session) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 50_000 {
            let now = Utc::now();
            let stale_max = self.policy.stale_max;
            map.retain(|_, (s, at)| s.expires_at > now && at.elapsed() < stale_max);
        }
        map.insert(s.id, (s.clone(), Instant::now()));
    }

    pub fn evict(&self, id: Uuid) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Evicts every session matching `f` (a user's, an org's).
    pub fn evict_where(&self, f: impl Fn(&Session) -> bool) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (s, _)| !f(s));
    }
}

/// Reads a cookie from the request's `Cookie` headers.
pub fn cookie<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(warp::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The verified claims of the request's session cookie, if it carries a token we issued.
pub fn claims(req: &Request, jwt: &Jwt, secure: bool) -> Option<Claims> {
    jwt.verify(cookie(req, session_cookie(secure))?).ok()
}

/// The caller's live session, or 401 (503 when it cannot be checked at all).
pub async fn authenticate(
    req: &Request,
    jwt: &Jwt,
    secure: bool,
    pool: &Pool,
    cache: &SessionCache,
) -> Result<Session, ApiError> {
    let claims = claims(req, jwt, secure).ok_or_else(ApiError::unauthorized)?;
    let read = req.method == Method::GET;
    let policy = cache.policy;
    let cached = read.then(|| cache.get(claims.sid, policy.fresh)).flatten();
    let session = match cached {
        Some(s) => s,
        None => match sessions::get(pool, claims.sid).await {
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

/// State-changing requests must echo the session's CSRF token in `X-CSRF-Token`.
pub fn check_csrf(req: &Request, session: &Session) -> Result<(), ApiError> {
    match req.header(CSRF_HEADER) {
        Some(t) if constant_time_eq(t.as_bytes(), session.csrf_token.as_bytes()) => Ok(()),
        _ => Err(ApiError::csrf()),
    }
}

/// `Set-Cookie` values for a new session (the JWT, HttpOnly) and its CSRF token (readable).
pub fn login_cookies(jwt: &str, csrf: &str, max_age: Duration, secure: bool) -> Vec<HeaderValue> {
    let (session, csrf_name) = (session_cookie(secure), csrf_cookie(secure));
    let flag = if secure { "; Secure" } else { "" };
    let age = max_age.as_secs();
    [
        format!("{session}={jwt}; HttpOnly; SameSite=Strict; Path=/; Max-Age={age}{flag}"),
        format!("{csrf_name}={csrf}; SameSite=Strict; Path=/; Max-Age={age}{flag}"),
    ]
    .into_iter()
    .filter_map(|c| HeaderValue::from_str(&c).ok())
    .collect()
}

/// `Set-Cookie` values that remove both cookies.
pub fn logout_cookies(secure: bool) -> Vec<HeaderValue> {
    let flag = if secure { "; Secure" } else { "" };
    [session_cookie(secure), csrf_cookie(secure)]
        .iter()
        .map(|name| format!("{name}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{flag}"))
        .filter_map(|c| HeaderValue::from_str(&c).ok())
        .collect()
}

/// What the caller may do with an org.
pub fn can_see(session: &Session, org: Uuid) -> bool {
    session.user.role == Role::Operator || session.user.org_id == Some(org)
}

pub fn can_write(session: &Session) -> bool {
    matches!(session.user.role, Role::Operator | Role::Admin)
}
