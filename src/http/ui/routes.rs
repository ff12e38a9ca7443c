//! The dashboard's route table and the checks before every page, in the API's order: body size
//! (while reading), content type (a form or nothing), session, then on POST the same-origin
//! check and the CSRF token (form field or `X-CSRF-Token`), then the org of the path against
//! the session (404 for another tenant's). What the operations check themselves (rights,
//! validation) is never repeated here.

use super::form::Form;
use super::page::{Chrome, error_page, redirect};
use super::{
    account, assets, batch, explain, export, machines, matrix, operator, org, policies, preview,
    timeline,
};
use crate::http::error::ApiError;
use crate::http::router::matches;
use crate::http::{App, Request, Response, session};
use crate::service::Ctx;
use warp::http::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Root,
    Login,
    LoginSubmit,
    Logout,
    Account,
    AccountPassword,
    AccountTheme,
    Theme,
    Operator,
    OrgCreate,
    OrgRetryDelete,
    Overview,
    Confirmed,
    Machines,
    MachinesExport,
    MachineNew,
    MachineCreate,
    Machine,
    MachineUpdate,
    MachineDelete,
    MachineRotateKey,
    MachineBatch,
    Policies,
    PolicyCreate,
    Policy,
    PolicyUpdate,
    PolicyEnabled,
    PolicyMove,
    PolicyDelete,
    PolicyPreview,
    Matrix,
    DefaultPreview,
    Users,
    UserCreate,
    UserDelete,
    Audit,
    AuditExport,
    Timeline,
    Settings,
    SettingsUpdate,
    OrgDelete,
    Explain,
    Watch,
}

const GET: Method = Method::GET;
const POST: Method = Method::POST;

/// Method, path pattern, page. Every page but the login needs a session.
pub const ROUTES: &[(Method, &str, Page)] = &[
    (GET, "/", Page::Root),
    (GET, "/login", Page::Login),
    (POST, "/login", Page::LoginSubmit),
    (POST, "/logout", Page::Logout),
    (GET, "/account", Page::Account),
    (POST, "/account/password", Page::AccountPassword),
    (POST, "/account/theme", Page::AccountTheme),
    (POST, "/theme", Page::Theme),
    (GET, "/operator", Page::Operator),
    (POST, "/operator/orgs", Page::OrgCreate),
    (POST, "/operator/orgs/{org}/delete", Page::OrgRetryDelete),
    (GET, "/orgs/{org}", Page::Overview),
    (GET, "/orgs/{org}/confirmed", Page::Confirmed),
    (GET, "/orgs/{org}/machines", Page::Machines),
    (GET, "/orgs/{org}/machines/new", Page::MachineNew),
    (GET, "/orgs/{org}/machines/export.csv", Page::MachinesExport),
    (
        GET,
        "/orgs/{org}/machines/export.json",
        Page::MachinesExport,
    ),
    (POST, "/orgs/{org}/machines", Page::MachineCreate),
    // Before `…/machines/{id}`, which would take `batch` for an id.
    (POST, "/orgs/{org}/machines/batch", Page::MachineBatch),
    (GET, "/orgs/{org}/machines/{id}", Page::Machine),
    (POST, "/orgs/{org}/machines/{id}", Page::MachineUpdate),
    (
        POST,
        "/orgs/{org}/machines/{id}/delete",
        Page::MachineDelete,
    ),
    (
        POST,
        "/orgs/{org}/machines/{id}/rotate-key",
        Page::MachineRotateKey,
    ),
    (GET, "/orgs/{org}/policies", Page::Policies),
    (POST, "/orgs/{org}/policies", Page::PolicyCreate),
    (POST, "/orgs/{org}/policies/preview", Page::PolicyPreview),
    (GET, "/orgs/{org}/policies/{id}", Page::Policy),
    (POST, "/orgs/{org}/policies/{id}", Page::PolicyUpdate),
    (
        POST,
        "/orgs/{org}/policies/{id}/enabled",
        Page::PolicyEnabled,
    ),
    (POST, "/orgs/{org}/policies/{id}/delete", Page::PolicyDelete),
    (GET, "/orgs/{org}/matrix", Page::Matrix),
    (GET, "/orgs/{org}/users", Page::Users),
    (POST, "/orgs/{org}/users", Page::UserCreate),
    (POST, "/orgs/{org}/users/{id}/delete", Page::UserDelete),
    (GET, "/orgs/{org}/audit", Page::Audit),
    (GET, "/orgs/{org}/timeline", Page::Timeline),
    (GET, "/orgs/{org}/audit/export.csv", Page::AuditExport),
    (GET, "/orgs/{org}/audit/export.jsonl", Page::AuditExport),
    (GET, "/orgs/{org}/settings", Page::Settings),
    (POST, "/orgs/{org}/settings", Page::SettingsUpdate),
    (POST, "/orgs/{org}/settings/preview", Page::DefaultPreview),
    (POST, "/orgs/{org}/delete", Page::OrgDelete),
    (GET, "/orgs/{org}/explain", Page::Explain),
    (POST, "/orgs/{org}/watch", Page::Watch),
];

/// Whether a path is the dashboard's (everything else is the API's).
pub fn is_ui(path: &str) -> bool {
    let exact = ["/", "/login", "/logout", "/theme", "/account", "/operator"];
    exact.contains(&path)
        || ["/account/", "/operator/", "/orgs/", "/assets/"]
            .iter()
            .any(|p| path.starts_with(p))
}

fn is_form(req: &Request) -> bool {
    req.header("content-type")
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|ct| {
            ct.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// A POST must come from one of our own pages: `Sec-Fetch-Site: same-origin`, or where a
/// browser sends no such header, an `Origin` of this host.
fn same_origin(req: &Request) -> bool {
    match req.header("sec-fetch-site") {
        Some(site) => site == "same-origin",
        None => match (req.header("origin"), req.header("host")) {
            (Some(origin), Some(host)) => {
                origin == format!("https://{host}") || origin == format!("http://{host}")
            }
            _ => false,
        },
    }
}

/// A local path to return to after signing in: starts with one `/`, nothing that a browser
/// would read as another host.
pub fn local_next(next: &str) -> Option<&str> {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control() || c == '\\');
    ok.then_some(next)
}

/// Serves one dashboard request; every outcome is a page, a redirect or an asset. Counted like
/// the API's requests, by route pattern (never by raw path).
pub async fn dispatch(app: &App, req: Request) -> Response {
    let started = std::time::Instant::now();
    let method = crate::http::router::method_label(&req.method);
    let (pattern, resp) = route(app, req).await;
    let status = resp.status().as_str().to_string();
    metrics::counter!("meshwg_http_requests_total", "route" => pattern, "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("meshwg_http_request_duration_seconds", "route" => pattern, "method" => method)
        .record(started.elapsed().as_secs_f64());
    resp
}

async fn route(app: &App, req: Request) -> (&'static str, Response) {
    if req.path.starts_with("/assets/") && req.method == GET {
        return ("/assets/{name}", assets::serve(&req.path));
    }
    let mut allowed = false;
    for (method, pattern, page) in ROUTES {
        let Some((org, id)) = matches(pattern, &req.path) else {
            continue;
        };
        if *method != req.method {
            allowed = true;
            continue;
        }
        let resp = match prepare(app, &req, *page, org, id).await {
            Ok((ctx, form)) => match run(app, &req, *page, &ctx, form).await {
                Ok(resp) => resp,
                Err(e) => failed(&req, Some(&ctx), &e),
            },
            Err(Refused::SignIn) => sign_in(&req),
            Err(Refused::Error(e)) => failed(&req, None, &e),
        };
        return (pattern, resp);
    }
    let e = if allowed {
        ApiError::method_not_allowed("GET, POST".into())
    } else {
        ApiError::not_found()
    };
    ("unmatched", failed(&req, None, &e))
}

enum Refused {
    /// No live session: to the login page.
    SignIn,
    Error(ApiError),
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        Refused::Error(e)
    }
}

async fn prepare(
    app: &App,
    req: &Request,
    page: Page,
    org: Option<&str>,
    id: Option<&str>,
) -> Result<(Ctx, Form), Refused> {
    let post = req.method == POST;
    if post && !req.body.is_empty() && !is_form(req) {
        return Err(ApiError::new(
            warp::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "forms must be application/x-www-form-urlencoded",
        )
        .into());
    }
    let form = if post {
        Form::parse(&req.body)?
    } else {
        Form::empty()
    };
    // Signing in and choosing a theme need no session (the theme is a cookie of the browser's).
    if matches!(page, Page::Login | Page::LoginSubmit | Page::Theme) {
        if post && !same_origin(req) {
            return Err(ApiError::forbidden("the form came from another site").into());
        }
        return Ok((Ctx::anonymous(), form));
    }
    let token = session::cookie(req, session::session_cookie(app.config.cookie_secure));
    let session = match crate::service::session::authenticate(app, token, !post).await {
        Ok(s) => s,
        Err(e) if e.status == warp::http::StatusCode::UNAUTHORIZED => return Err(Refused::SignIn),
        Err(e) => return Err(e.into()),
    };
    if post {
        if !same_origin(req) {
            return Err(ApiError::forbidden("the form came from another site").into());
        }
        let presented = form
            .get("csrf_token")
            .or_else(|| req.header(session::CSRF_HEADER));
        crate::service::session::check_csrf(&session, presented)?;
    }
    Ok((Ctx::scoped(Some(session), org, id)?, form))
}

async fn run(
    app: &App,
    req: &Request,
    page: Page,
    ctx: &Ctx,
    form: Form,
) -> Result<Response, ApiError> {
    match page {
        Page::Root => Ok(account::root(ctx)),
        Page::Login => Ok(account::login_page(req, None, "")),
        Page::LoginSubmit => Ok(account::login(app, req, &form).await),
        Page::Logout => account::logout(app, ctx).await,
        Page::Account => account::page(req, ctx, None),
        Page::AccountPassword => account::password(app, req, ctx, &form).await,
        Page::AccountTheme | Page::Theme => Ok(account::theme(&form)),
        Page::Operator => operator::page(app, req, ctx, None).await,
        Page::OrgCreate => operator::create(app, req, ctx, &form).await,
        Page::OrgRetryDelete => operator::retry_delete(app, ctx).await,
        Page::Overview => org::overview(app, req, ctx).await,
        Page::Confirmed => org::confirmed(app, req, ctx).await,
        Page::Machines => machines::list(app, req, ctx).await,
        Page::MachinesExport => export::machines(app, req, ctx).await,
        Page::MachineNew => machines::new(app, req, ctx, None).await,
        Page::MachineCreate => machines::create(app, req, ctx, &form).await,
        Page::Machine => machines::detail(app, req, ctx, None).await,
        Page::MachineUpdate => machines::update(app, req, ctx, &form).await,
        Page::MachineDelete => machines::delete(app, req, ctx, &form).await,
        Page::MachineRotateKey => machines::rotate_key(app, req, ctx, &form).await,
        Page::MachineBatch => batch::batch(app, req, ctx, &form).await,
        Page::Policies => policies::list(app, req, ctx, None).await,
        Page::PolicyCreate => policies::create(app, req, ctx, &form).await,
        Page::Policy => policies::detail(app, req, ctx, None).await,
        Page::PolicyUpdate => policies::update(app, req, ctx, &form).await,
        Page::PolicyEnabled => policies::enabled(app, ctx, &form).await,
        Page::PolicyMove => policies::reorder(app, ctx, &form).await,
        Page::PolicyDelete => policies::delete(app, ctx).await,
        Page::PolicyPreview => preview::policy(app, ctx, &form).await,
        Page::Matrix => matrix::page(app, req, ctx).await,
        Page::DefaultPreview => preview::default_action(app, ctx, &form).await,
        Page::Users => org::users(app, req, ctx, None).await,
        Page::UserCreate => org::user_create(app, req, ctx, &form).await,
        Page::UserDelete => org::user_delete(app, ctx).await,
        Page::Audit => org::audit(app, req, ctx).await,
        Page::AuditExport => export::audit(app, req, ctx).await,
        Page::Timeline => timeline::page(app, req, ctx).await,
        Page::Settings => org::settings(app, req, ctx, None).await,
        Page::SettingsUpdate => org::settings_update(app, req, ctx, &form).await,
        Page::OrgDelete => org::delete(app, req, ctx, &form).await,
        Page::Explain => explain::page(app, req, ctx).await,
        Page::Watch => explain::watch_path(app, req, ctx, &form).await,
    }
}

/// To the login page, coming back here afterwards (GETs only: a form is not replayed).
fn sign_in(req: &Request) -> Response {
    if req.method != GET {
        return redirect("/login");
    }
    let here = if req.query.is_empty() {
        req.path.clone()
    } else {
        format!("{}?{}", req.path, req.query)
    };
    let q = serde_urlencoded::to_string([("next", here.as_str())]).unwrap_or_default();
    redirect(&format!("/login?{q}"))
}

fn failed(req: &Request, ctx: Option<&Ctx>, e: &ApiError) -> Response {
    let chrome = match ctx {
        Some(ctx) if ctx.session.is_some() => Chrome::of(req, ctx, None, ""),
        _ => Chrome::anonymous(req),
    };
    error_page(chrome, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_only_a_local_path() {
        assert_eq!(local_next("/orgs/x"), Some("/orgs/x"));
        for bad in [
            "//evil.example",
            "/\\evil",
            "https://evil",
            "evil",
            "/a\nb",
            "",
        ] {
            assert_eq!(local_next(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ui_and_api_paths_are_apart() {
        for p in [
            "/",
            "/login",
            "/orgs/x/machines",
            "/assets/app.1.css",
            "/operator",
        ] {
            assert!(is_ui(p), "{p}");
        }
        for p in ["/api/v1/orgs", "/healthz", "/readyz", "/loginx", "/orgsx"] {
            assert!(!is_ui(p), "{p}");
        }
    }

    #[test]
    fn every_route_is_unique() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(!(a.0 == b.0 && a.1 == b.1), "{} {}", a.0, a.1);
            }
        }
    }
}
