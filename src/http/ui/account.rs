//! Signing in and out, the start page, and the caller's account (password, theme).

use super::form::Form;
use super::page::{Chrome, THEME_COOKIE, THEMES, after_change, html, redirect, secure};
use super::routes::local_next;
use crate::db::users::Role;
use crate::http::error::ApiError;
use crate::http::session::{cookie, login_cookies, logout_cookies, session_cookie};
use crate::http::{App, Request, Response};
use crate::secret::Secret;
use crate::service::{Ctx, auth};
use askama::Template;
use warp::http::{HeaderValue, StatusCode, header};

/// `GET /`: the operator's console, or the user's org.
pub fn root(ctx: &Ctx) -> Response {
    let u = &ctx.session().user;
    match (u.role, u.org_id) {
        (Role::Operator, _) | (_, None) => redirect("/operator"),
        (_, Some(org)) => redirect(&format!("/orgs/{org}")),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    chrome: Chrome,
    next: &'a str,
    email: &'a str,
    error: Option<String>,
}

pub fn login_page(req: &Request, error: Option<(&ApiError, &str)>, email: &str) -> Response {
    let next = req
        .query_param("next")
        .and_then(|n| {
            serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("n={n}"))
                .ok()?
                .pop()
                .map(|(_, v)| v)
        })
        .or_else(|| error.map(|(_, n)| n.to_string()))
        .unwrap_or_default();
    let next = local_next(&next).unwrap_or("");
    let (status, message) = match error {
        None => (StatusCode::OK, None),
        Some((e, _)) => (
            e.status,
            Some(match e.status.as_u16() {
                401 => "Wrong email or password.".to_string(),
                429 => format!(
                    "Too many failed sign-ins. Try again in {} seconds.",
                    e.retry_after.unwrap_or(60)
                ),
                _ => e.message.clone(),
            }),
        ),
    };
    let page = LoginPage {
        chrome: Chrome::anonymous(req),
        next,
        email,
        error: message,
    };
    let mut resp = html(status, &page, true);
    if let Some(secs) = error.and_then(|(e, _)| e.retry_after) {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// `POST /login`: the API's login (same limiter, same cookies), then to `next` or home.
pub async fn login(app: &App, req: &Request, form: &Form) -> Response {
    let next = form.text("next").to_string();
    let email = form.text("email").to_string();
    let origin = auth::Origin {
        client: req.client_ip(&app.config.trusted_proxies),
        token: cookie(req, session_cookie(app.config.cookie_secure)),
    };
    let input = auth::Login {
        email: email.clone(),
        password: Secret::new(form.text("password").to_string()),
    };
    let done = match auth::login(app, origin, input).await {
        Ok(d) => d,
        Err(e) => return login_page(req, Some((&e, &next)), &email),
    };
    let to = match local_next(&next) {
        Some(n) if n != "/login" => n.to_string(),
        _ => match (done.user.role, done.user.org_id) {
            ("operator", _) | (_, None) => "/operator".to_string(),
            (_, Some(org)) => format!("/orgs/{org}"),
        },
    };
    let mut resp = redirect(&to);
    let secure_cookie = app.config.cookie_secure;
    for c in login_cookies(
        done.token.expose(),
        &done.csrf_token,
        done.ttl,
        secure_cookie,
    ) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// `POST /logout`: ends the session, removes the cookies.
pub async fn logout(app: &App, ctx: &Ctx) -> Result<Response, ApiError> {
    auth::logout(app, ctx).await?;
    let mut resp = redirect("/login");
    for c in logout_cookies(app.config.cookie_secure) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(resp)
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    chrome: Chrome,
    themes: &'static [(&'static str, &'static str)],
    error: Option<String>,
    done: bool,
}

pub fn page(req: &Request, ctx: &Ctx, error: Option<&ApiError>) -> Result<Response, ApiError> {
    let page = AccountPage {
        chrome: Chrome::of(req, ctx, None, "Account"),
        themes: &THEMES,
        error: error.map(|e| e.message.clone()),
        done: req.query_param("changed") == Some("1"),
    };
    let status = error.map_or(StatusCode::OK, |e| e.status);
    Ok(html(status, &page, true))
}

/// `POST /account/password`: the API's password change (other sessions end).
pub async fn password(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    form: &Form,
) -> Result<Response, ApiError> {
    let input = auth::PasswordChange {
        current_password: Secret::new(form.text("current_password").to_string()),
        new_password: Secret::new(form.text("new_password").to_string()),
    };
    match auth::change_password(app, ctx, input).await {
        Ok(()) => after_change(Ok(()), "/account?changed=1"),
        Err(e) if e.status.is_client_error() => page(req, ctx, Some(&e)),
        Err(e) => Err(e),
    }
}

/// `POST /theme` (the header's menu) and `/account/theme`: remembered in a cookie, so the
/// server sets it and nothing flashes; back to `back` (a local path) or the account page.
pub fn theme(form: &Form) -> Response {
    let chosen = form.text("theme");
    let theme = THEMES
        .iter()
        .find(|(k, _)| *k == chosen)
        .map_or("system", |(k, _)| k);
    let back = local_next(form.text("back")).unwrap_or("/account");
    let mut resp = redirect(back);
    let c = format!("{THEME_COOKIE}={theme}; Path=/; Max-Age=31536000; SameSite=Strict");
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    secure(resp, true)
}
