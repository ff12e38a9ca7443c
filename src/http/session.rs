//! The session as the API carries it: the JWT in an HttpOnly cookie, the CSRF token in a
//! readable cookie that state-changing requests echo in `X-CSRF-Token`. Checking them is the
//! service's (`service::session`); this module reads and writes the cookies.
//!
//! With `COOKIE_SECURE` (the default) the cookies carry the `__Host-` prefix: browsers accept
//! them only from a secure origin, for the whole host, without a `Domain`, so neither a sibling
//! subdomain nor a plain-HTTP page can plant a session or CSRF cookie.

use super::Request;
use super::error::ApiError;
use crate::db::sessions::Session;
use crate::service::App;
use std::time::Duration;
use warp::http::{HeaderValue, Method};

pub use crate::service::session::{SessionCache, SessionPolicy};

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

/// The caller's live session (GETs may be answered from the cache), then for state-changing
/// methods the CSRF header.
pub async fn authenticate(app: &App, req: &Request) -> Result<Session, ApiError> {
    let token = cookie(req, session_cookie(app.config.cookie_secure));
    let read = req.method == Method::GET;
    let session = crate::service::session::authenticate(app, token, read).await?;
    if !read {
        crate::service::session::check_csrf(&session, req.header(CSRF_HEADER))?;
    }
    Ok(session)
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
