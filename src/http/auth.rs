//! `/auth/*`: login (rate-limited, hashing off the async workers), logout, me, password change.

use super::error::ApiError;
use super::router::{Ctx, body};
use super::session::{cookie, login_cookies, logout_cookies, session_cookie};
use super::{App, Request, Response, json, no_content};
use crate::auth::jwt::{AUDIENCE, Claims, ISSUER, TYPE};
use crate::auth::password::{self, PasswordError};
use crate::auth::random_token;
use crate::db::users::User;
use crate::db::{audit, sessions, users};
use crate::secret::Secret;
use chrono::Utc;
use serde::Deserialize;
use std::time::Instant;
use uuid::Uuid;
use warp::http::{StatusCode, header};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    email: String,
    password: Secret<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: Secret<String>,
    new_password: Secret<String>,
}

pub fn user_view(u: &User) -> serde_json::Value {
    serde_json::json!({"id": u.id, "email": u.email, "role": u.role.as_str(), "org_id": u.org_id})
}

fn hash_error(e: PasswordError) -> ApiError {
    match e {
        PasswordError::Length => ApiError::invalid("password", e),
        PasswordError::Busy => ApiError::unavailable("too many logins in progress; try again"),
        PasswordError::Hash => ApiError::internal(e),
    }
}

/// The caller as the actor of audit entries the controller writes on its behalf.
pub fn actor(ctx: &Ctx) -> crate::db::audit::Actor {
    let u = &ctx.session().user;
    crate::db::audit::Actor {
        id: Some(u.id),
        email: Some(u.email.clone()),
    }
}

/// Records an audit entry; a failure is logged, never shown to the caller.
pub async fn record(
    app: &App,
    ctx_user: Option<&User>,
    org_id: Option<Uuid>,
    action: &str,
    target_type: &str,
    target_id: Option<String>,
    detail: serde_json::Value,
) {
    let entry = audit::Entry {
        org_id,
        actor_id: ctx_user.map(|u| u.id),
        actor_email: ctx_user.map(|u| u.email.as_str()),
        action,
        target_type,
        target_id,
        detail,
    };
    if let Err(e) = audit::record(&app.pool, &entry).await {
        tracing::error!(error = %e, action, "could not record audit entry");
    }
}

pub async fn login(app: &App, req: &Request) -> Result<Response, ApiError> {
    let b: Login = body(req)?;
    // Refused before hashing: a megabyte "password" costs nothing.
    if b.password.expose().len() > password::MAX_LEN {
        return Err(ApiError::invalid("password", "must be at most 1024 bytes"));
    }
    // No account has such an address, and PostgreSQL refuses text with a NUL in it.
    if b.email.len() > 1024 || b.email.chars().any(char::is_control) {
        return Err(ApiError::invalid("email", "must be an email address"));
    }
    let account = crate::auth::email_key(&b.email);
    let client = req.client_ip(&app.config.trusted_proxies);
    // Looked up first (no hashing yet) to tell whether a presented token is this account's.
    let found = users::find_for_login(&app.pool, &account).await?;
    let has_session = found.as_ref().is_some_and(|(u, _)| {
        cookie(req, session_cookie(app.config.cookie_secure))
            .and_then(|t| app.jwt.verify_any_age(t).ok())
            .is_some_and(|c| c.sub == u.id)
    });
    let at = Instant::now();
    if let Err(wait) = app.limiter.attempt(&account, client, has_session, at) {
        tracing::warn!(client = %client, "login rate limited");
        metrics::counter!("meshwg_rate_limited_total").increment(1);
        return Err(ApiError::rate_limited(wait.as_secs().max(1)));
    }
    // The attempt already counts as a failure; an error that prevents judging it is refunded.
    let judged = async {
        let (user, hash) = match found {
            Some((u, h)) => (Some(u), h),
            None => (None, app.dummy_hash.clone()),
        };
        let ok = password::check_length(b.password.expose()).is_ok()
            && app
                .hasher
                .verify(b.password, hash)
                .await
                .map_err(hash_error)?;
        Ok::<_, ApiError>(user.filter(|_| ok))
    }
    .await;
    let user = match judged {
        Ok(user) => user,
        Err(e) => {
            app.limiter.refund(&account, client, at);
            return Err(e);
        }
    };
    let Some(user) = user else {
        tracing::info!(client = %client, "login failed");
        metrics::counter!("meshwg_login_failures_total").increment(1);
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong email or password",
        ));
    };
    app.limiter.succeeded(&account, client, Instant::now());

    let sid = Uuid::new_v4();
    let csrf = random_token(32);
    let now = Utc::now();
    let ttl = app.config.session_ttl;
    let expires = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(12));
    sessions::create(&app.pool, sid, user.id, &csrf, expires).await?;
    let token = app.jwt.issue(&Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: user.id,
        sid,
        role: user.role.as_str().into(),
        org: user.org_id,
        typ: TYPE.into(),
        iat: now.timestamp(),
        exp: expires.timestamp(),
    });
    record(
        app,
        Some(&user),
        user.org_id,
        "auth.login",
        "session",
        Some(sid.to_string()),
        serde_json::json!({"client": client.to_string()}),
    )
    .await;
    let mut resp = json(
        StatusCode::OK,
        &serde_json::json!({"user": user_view(&user), "csrf_token": csrf}),
    );
    for c in login_cookies(token.expose(), &csrf, ttl, app.config.cookie_secure) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(resp)
}

pub async fn logout(app: &App, ctx: &Ctx) -> Result<Response, ApiError> {
    let s = ctx.session();
    sessions::delete(&app.pool, s.id).await?;
    app.sessions.evict(s.id);
    record(
        app,
        Some(&s.user),
        s.user.org_id,
        "auth.logout",
        "session",
        Some(s.id.to_string()),
        serde_json::json!({}),
    )
    .await;
    let mut resp = no_content();
    for c in logout_cookies(app.config.cookie_secure) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(resp)
}

pub fn me(ctx: &Ctx) -> Result<Response, ApiError> {
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"user": user_view(&ctx.session().user)}),
    ))
}

pub async fn password(app: &App, req: &Request, ctx: &Ctx) -> Result<Response, ApiError> {
    let b: PasswordChange = body(req)?;
    password::check_length(b.new_password.expose())
        .map_err(|e| ApiError::invalid("new_password", e))?;
    if b.current_password.expose().len() > password::MAX_LEN {
        return Err(ApiError::invalid(
            "current_password",
            "must be at most 1024 bytes",
        ));
    }
    let s = ctx.session();
    // Every try costs an Argon2 verify: limited per session and per account before hashing.
    let at = Instant::now();
    if let Err(wait) = app.password_changes.attempt(s.id, s.user.id, at) {
        tracing::warn!(user = %s.user.id, "password change rate limited");
        metrics::counter!("meshwg_rate_limited_total").increment(1);
        return Err(ApiError::rate_limited(wait.as_secs().max(1)));
    }
    let verified = async {
        let stored = users::password_hash(&app.pool, s.user.id)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        app.hasher
            .verify(b.current_password, stored)
            .await
            .map_err(hash_error)
    }
    .await;
    // Only a wrong password counts.
    if !matches!(verified, Ok(false)) {
        app.password_changes.refund(s.id, s.user.id, at);
    }
    if !verified? {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_password",
            "current_password is wrong",
        ));
    }
    let hash = app.hasher.hash(b.new_password).await.map_err(hash_error)?;
    users::set_password(&app.pool, s.user.id, &hash, s.id).await?;
    let (uid, keep) = (s.user.id, s.id);
    app.sessions
        .evict_where(|o| o.user.id == uid && o.id != keep);
    record(
        app,
        Some(&s.user),
        s.user.org_id,
        "auth.password",
        "user",
        Some(uid.to_string()),
        serde_json::json!({}),
    )
    .await;
    Ok(no_content())
}
