//! Who is calling: the JWT in the `meshwg_session` cookie names a server-side session, which is
//! looked up (with a short in-process cache) and must match the token's user, role and org.
//!
//! The cache holds sessions for [`FRESH`]; every way a session can end inside this controller
//! (logout, password change, user or org deletion) evicts it explicitly, so ending a session
//! takes effect at once. While PostgreSQL is unreachable a cached session is still honoured
//! until its expiry (nothing can end it meanwhile), so reads of kernel state keep working.

use super::Request;
use super::error::ApiError;
use crate::auth::constant_time_eq;
use crate::auth::jwt::Jwt;
use crate::db::sessions::{self, Session};
use crate::db::users::Role;
use crate::db::{DbError, Pool};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;
use warp::http::HeaderValue;

pub const SESSION_COOKIE: &str = "meshwg_session";
pub const CSRF_COOKIE: &str = "meshwg_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

const FRESH: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct SessionCache {
    inner: Mutex<HashMap<Uuid, (Session, Instant)>>,
}

impl SessionCache {
    fn get(&self, id: Uuid, fresh_only: bool) -> Option<Session> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (s, at) = map.get(&id)?;
        let fresh = at.elapsed() < FRESH;
        (s.expires_at > Utc::now() && (fresh || !fresh_only)).then(|| s.clone())
    }

    fn put(&self, s: &Session) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 50_000 {
            let now = Utc::now();
            map.retain(|_, (s, _)| s.expires_at > now);
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

/// The caller's live session, or 401 (503 when it cannot be checked at all).
pub async fn authenticate(
    req: &Request,
    jwt: &Jwt,
    pool: &Pool,
    cache: &SessionCache,
) -> Result<Session, ApiError> {
    let token = cookie(req, SESSION_COOKIE).ok_or_else(ApiError::unauthorized)?;
    let claims = jwt.verify(token).map_err(|_| ApiError::unauthorized())?;
    let session = match cache.get(claims.sid, true) {
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
            Err(DbError::Unavailable(_)) => cache
                .get(claims.sid, false)
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
    let secure = if secure { "; Secure" } else { "" };
    let age = max_age.as_secs();
    [
        format!("{SESSION_COOKIE}={jwt}; HttpOnly; SameSite=Strict; Path=/; Max-Age={age}{secure}"),
        format!("{CSRF_COOKIE}={csrf}; SameSite=Strict; Path=/; Max-Age={age}{secure}"),
    ]
    .into_iter()
    .filter_map(|c| HeaderValue::from_str(&c).ok())
    .collect()
}

/// `Set-Cookie` values that remove both cookies.
pub fn logout_cookies(secure: bool) -> Vec<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    [SESSION_COOKIE, CSRF_COOKIE]
        .iter()
        .map(|name| format!("{name}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}"))
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
