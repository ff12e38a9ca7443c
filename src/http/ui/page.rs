//! What every dashboard response shares: the security headers, the layout's data (`Chrome`),
//! HTML and redirect responses, and error pages (another tenant's ids get the same 404 page as
//! ids that do not exist).

use super::assets::{self, Urls};
use crate::db::users::Role;
use crate::http::error::ApiError;
use crate::http::{Request, Response};
use crate::service::Ctx;
use crate::service::access::can_write;
use crate::service::views::OrgView;
use askama::Template;
use warp::http::{HeaderValue, StatusCode, header};

/// The page's content security policy: nothing inline, nothing from elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// Adds the headers every dashboard response carries; `authed` responses are never stored.
pub fn secure(mut resp: Response, authed: bool) -> Response {
    let h = resp.headers_mut();
    for (k, v) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        ("x-frame-options", "DENY"),
        (
            "permissions-policy",
            "camera=(), microphone=(), geolocation=()",
        ),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    if authed || !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The theme cookie's name and its values.
pub const THEME_COOKIE: &str = "meshwg_theme";
pub const THEMES: [(&str, &str); 4] = [
    ("system", "System"),
    ("light", "Light"),
    ("dark", "Dark"),
    ("contrast", "High contrast"),
];

pub fn theme(req: &Request) -> &'static str {
    let chosen = crate::http::session::cookie(req, THEME_COOKIE).unwrap_or("system");
    THEMES
        .iter()
        .find(|(k, _)| *k == chosen)
        .map_or("system", |(k, _)| k)
}

/// The page's own path and query; after a POST, the page the form belongs to is a GET away.
fn here(req: &Request) -> String {
    match (req.method == warp::http::Method::GET, req.query.is_empty()) {
        (true, true) => req.path.clone(),
        (true, false) => format!("{}?{}", req.path, req.query),
        (false, _) => req.path.clone(),
    }
}

/// A navigation entry of the left bar.
pub struct NavItem {
    pub href: String,
    pub label: &'static str,
    pub current: bool,
}

/// What the layout shows around every page.
pub struct Chrome {
    pub assets: Urls,
    pub theme: &'static str,
    pub themes: &'static [(&'static str, &'static str)],
    /// This page's path and query (where the theme menu comes back to).
    pub here: String,
    pub csrf: String,
    pub email: String,
    pub signed_in: bool,
    pub can_write: bool,
    pub operator: bool,
    pub org: Option<OrgView>,
    pub nav: Vec<NavItem>,
    /// A 503 `not_confirmed` after a change: saved, not yet confirmed by the hub; the time of
    /// the change (Unix milliseconds), which the banner's poll asks about.
    pub unconfirmed: Option<i64>,
}

impl Chrome {
    /// For pages without a session (login, errors before one).
    pub fn anonymous(req: &Request) -> Chrome {
        Chrome {
            assets: assets::urls(),
            theme: theme(req),
            themes: &THEMES,
            here: here(req),
            csrf: String::new(),
            email: String::new(),
            signed_in: false,
            can_write: false,
            operator: false,
            org: None,
            nav: Vec::new(),
            unconfirmed: None,
        }
    }

    /// For a signed-in page; `org` adds the org's navigation, `section` marks the current entry.
    pub fn of(req: &Request, ctx: &Ctx, org: Option<OrgView>, section: &str) -> Chrome {
        let s = ctx.session();
        let operator = s.user.role == Role::Operator;
        let mut nav = Vec::new();
        if let Some(o) = &org {
            for (path, label) in [
                ("", "Overview"),
                ("/machines", "Machines"),
                ("/policies", "Policies"),
                ("/explain", "Explain"),
                ("/matrix", "Matrix"),
                ("/timeline", "Timeline"),
                ("/audit", "Audit"),
                ("/users", "Users"),
                ("/settings", "Settings"),
            ] {
                nav.push(NavItem {
                    href: format!("/orgs/{}{path}", o.id),
                    label,
                    current: section == label,
                });
            }
        }
        if operator {
            nav.push(NavItem {
                href: "/operator".into(),
                label: "Operator",
                current: section == "Operator",
            });
        }
        nav.push(NavItem {
            href: "/account".into(),
            label: "Account",
            current: section == "Account",
        });
        Chrome {
            assets: assets::urls(),
            theme: theme(req),
            themes: &THEMES,
            here: here(req),
            csrf: s.csrf_token.clone(),
            email: s.user.email.clone(),
            signed_in: true,
            can_write: can_write(s),
            operator,
            org,
            nav,
            unconfirmed: (req.query_param("saved") == Some("unconfirmed")).then(|| {
                req.query_param("at")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0)
            }),
        }
    }
}

/// An HTML response of a rendered template.
pub fn html(status: StatusCode, t: &impl Template, authed: bool) -> Response {
    match t.render() {
        Ok(body) => {
            let mut resp = Response::new(body.into());
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            secure(resp, authed)
        }
        Err(e) => secure(ApiError::internal(e).into_response(), authed),
    }
}

/// Whether htmx asks (a poll or a swap): then a page answers with its fragment only.
pub fn is_htmx(req: &Request) -> bool {
    req.header("hx-request") == Some("true")
}

/// A fragment for htmx with an entity tag; `304` when the caller already has it (a poll that
/// changed nothing costs no swap).
pub fn fragment(req: &Request, t: &impl Template) -> Response {
    let body = match t.render() {
        Ok(b) => b,
        Err(e) => return secure(ApiError::internal(e).into_response(), true),
    };
    let tag = format!("\"{}\"", &super::assets::sha256_hex(body.as_bytes())[..16]);
    let mut resp = if req.header("if-none-match") == Some(tag.as_str()) {
        let mut r = Response::new(Vec::new().into());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(body.into());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        r
    };
    if let Ok(v) = HeaderValue::from_str(&tag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    secure(resp, true)
}

/// [`html`] of a page that holds key material: rendered once into a buffer that is wiped when
/// the response body is dropped. Rendered twice: first to learn the size, so that the buffer
/// never grows (a reallocation would leave a copy behind).
pub fn secret_html(status: StatusCode, t: &impl Template) -> Response {
    struct Count(usize);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut size = Count(0);
    if let Err(e) = Template::render_into(t, &mut size) {
        return secure(ApiError::internal(e).into_response(), true);
    }
    let mut buf = String::with_capacity(size.0);
    if let Err(e) = Template::render_into(t, &mut buf) {
        return secure(ApiError::internal(e).into_response(), true);
    }
    let buf = buf.into_bytes();
    let mut resp = Response::new(Vec::new().into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(crate::http::with_wiped_body(resp, buf), true)
}

/// A file to download (an export), never stored.
pub fn download(body: Vec<u8>, mime: &'static str, name: &'static str) -> Response {
    let mut resp = Response::new(body.into());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    secure(resp, true)
}

/// `303 See Other` to a local path (after a form, or to the login page).
pub fn redirect(to: &str) -> Response {
    let mut resp = Response::new(Vec::new().into());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    secure(resp, true)
}

/// Where a change leads: its page, marked when the hub has not confirmed it yet (503
/// `not_confirmed`: saved, the reconciler keeps applying it).
pub fn after_change(result: Result<(), ApiError>, to: &str) -> Result<Response, ApiError> {
    match result {
        Ok(()) => Ok(redirect(to)),
        Err(e) if e.code == "not_confirmed" => {
            let sep = if to.contains('?') { '&' } else { '?' };
            let at = chrono::Utc::now().timestamp_millis();
            Ok(redirect(&format!("{to}{sep}saved=unconfirmed&at={at}")))
        }
        Err(e) => Err(e),
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub chrome: Chrome,
    pub title: &'a str,
    pub message: &'a str,
}

/// An error as a page, with the status (and `Retry-After`) the API would give.
pub fn error_page(chrome: Chrome, e: &ApiError) -> Response {
    let title = match e.status.as_u16() {
        400 => "That did not work",
        401 => "Please sign in",
        403 => "Not allowed",
        404 => "Not found",
        405 => "Method not allowed",
        413 => "Too large",
        415 => "Unsupported form",
        429 => "Too many attempts",
        503 => "Try again",
        _ => "Something went wrong",
    };
    let message = match e.status.as_u16() {
        404 => "There is nothing here, or it is not yours to see.",
        _ => &e.message,
    };
    let authed = chrome.signed_in;
    let mut resp = html(
        e.status,
        &ErrorPage {
            chrome,
            title,
            message,
        },
        authed,
    );
    if let Some(secs) = e.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_the_hub_has_not_confirmed_leads_to_the_amber_banner() {
        let ok = after_change(Ok(()), "/orgs/o/policies").unwrap();
        assert_eq!(ok.status(), StatusCode::SEE_OTHER);
        assert_eq!(ok.headers()["location"], "/orgs/o/policies");
        let e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_confirmed", "saved");
        let r = after_change(Err(e), "/orgs/o/machines?page=2").unwrap();
        let to = r.headers()["location"].to_str().unwrap();
        let at: i64 = to
            .strip_prefix("/orgs/o/machines?page=2&saved=unconfirmed&at=")
            .unwrap()
            .parse()
            .unwrap();
        assert!((chrono::Utc::now().timestamp_millis() - at).abs() < 60_000);
        let e = ApiError::forbidden("no");
        assert_eq!(after_change(Err(e), "/x").unwrap_err().status, 403);
        for (k, v) in [
            ("content-security-policy", CSP),
            ("cache-control", "no-store"),
        ] {
            assert_eq!(ok.headers()[k], v);
        }
    }
}
