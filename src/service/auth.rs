//! Logging in (rate-limited, hashing off the async workers), out, who am I, password change.

use super::audit::{Event, record};
use super::views::UserView;
use super::{ApiError, App, Ctx};
use crate::auth::jwt::{AUDIENCE, Claims, ISSUER, TYPE};
use crate::auth::password::{self, PasswordError};
use crate::auth::random_token;
use crate::db::{sessions, users};
use crate::secret::Secret;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use uuid::Uuid;
use warp::http::StatusCode;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub email: String,
    pub password: Secret<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: Secret<String>,
    pub new_password: Secret<String>,
}

/// Where a login comes from: the client (after trusted proxies) and the session token it
/// presented, if any (a token we issued for the account proves an earlier login).
pub struct Origin<'a> {
    pub client: IpAddr,
    pub token: Option<&'a str>,
}

/// A new session: the answer's body (`user`, `csrf_token`) and what the renderer sets as
/// cookies (the token, never in a body).
#[derive(Serialize)]
pub struct LoggedIn {
    pub user: UserView,
    pub csrf_token: String,
    #[serde(skip)]
    pub token: Secret<String>,
    #[serde(skip)]
    pub ttl: Duration,
}

#[derive(Serialize)]
pub struct Me {
    pub user: UserView,
}

fn hash_error(e: PasswordError) -> ApiError {
    match e {
        PasswordError::Length => ApiError::invalid("password", e),
        PasswordError::Busy => ApiError::unavailable("too many logins in progress; try again"),
        PasswordError::Hash => ApiError::internal(e),
    }
}

pub async fn login(app: &App, origin: Origin<'_>, input: Login) -> Result<LoggedIn, ApiError> {
    // Refused before hashing: a megabyte "password" costs nothing.
    if input.password.expose().len() > password::MAX_LEN {
        return Err(ApiError::invalid("password", "must be at most 1024 bytes"));
    }
    // No account has such an address, and PostgreSQL refuses text with a NUL in it.
    if input.email.len() > 1024 || input.email.chars().any(char::is_control) {
        return Err(ApiError::invalid("email", "must be an email address"));
    }
    let account = crate::auth::email_key(&input.email);
    let client = origin.client;
    // Looked up first (no hashing yet) to tell whether a presented token is this account's.
    let found = users::find_for_login(&app.pool, &account).await?;
    let has_session = found.as_ref().is_some_and(|(u, _)| {
        origin
            .token
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
        let ok = password::check_length(input.password.expose()).is_ok()
            && app
                .hasher
                .verify(input.password, hash)
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
    let event = Event {
        org: user.org_id,
        action: "auth.login",
        target_type: "session",
        target_id: Some(sid.to_string()),
        detail: serde_json::json!({"client": client.to_string()}),
    };
    record(app, Some(&user), event).await;
    Ok(LoggedIn {
        user: UserView::brief(&user),
        csrf_token: csrf,
        token,
        ttl,
    })
}

/// Ends the caller's session.
pub async fn logout(app: &App, ctx: &Ctx) -> Result<(), ApiError> {
    let s = ctx.session();
    sessions::delete(&app.pool, s.id).await?;
    app.sessions.evict(s.id);
    let event = Event {
        org: s.user.org_id,
        action: "auth.logout",
        target_type: "session",
        target_id: Some(s.id.to_string()),
        detail: serde_json::json!({}),
    };
    record(app, Some(&s.user), event).await;
    Ok(())
}

pub fn me(ctx: &Ctx) -> Me {
    Me {
        user: UserView::brief(&ctx.session().user),
    }
}

/// Changes the caller's password and ends every other session of theirs.
pub async fn change_password(app: &App, ctx: &Ctx, input: PasswordChange) -> Result<(), ApiError> {
    password::check_length(input.new_password.expose())
        .map_err(|e| ApiError::invalid("new_password", e))?;
    if input.current_password.expose().len() > password::MAX_LEN {
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
            .verify(input.current_password, stored)
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
    let hash = app
        .hasher
        .hash(input.new_password)
        .await
        .map_err(hash_error)?;
    users::set_password(&app.pool, s.user.id, &hash, s.id).await?;
    let (uid, keep) = (s.user.id, s.id);
    app.sessions
        .evict_where(|o| o.user.id == uid && o.id != keep);
    let event = Event {
        org: s.user.org_id,
        action: "auth.password",
        target_type: "user",
        target_id: Some(uid.to_string()),
        detail: serde_json::json!({}),
    };
    record(app, Some(&s.user), event).await;
    Ok(())
}
