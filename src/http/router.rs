//! The route table and the checks every request passes, in this order: body size (413, while
//! reading), content type (415), session (401), CSRF on state-changing methods (403), the org
//! in the path against the session (404 for another tenant's), then the handler.
//!
//! The same table generates the OpenAPI document, so the document cannot drift from the routes.

use super::error::ApiError;
pub use super::ops::Op;
use super::{App, Request, Response, session};
use crate::service::Ctx;
use warp::http::Method;

pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub op: Op,
    pub summary: &'static str,
    /// Needs a session (and, for state-changing methods, the CSRF header).
    pub auth: bool,
    /// OpenAPI schema of the request body.
    pub body: Option<&'static str>,
    /// Status on success and OpenAPI schema of the response body.
    pub ok: u16,
    pub returns: Option<&'static str>,
}

const fn r(
    method: Method,
    path: &'static str,
    op: Op,
    summary: &'static str,
    body: Option<&'static str>,
    ok: u16,
    returns: Option<&'static str>,
) -> Route {
    let auth = !matches!(op, Op::Healthz | Op::Readyz | Op::OpenApi | Op::Login);
    Route {
        method,
        path,
        op,
        summary,
        auth,
        body,
        ok,
        returns,
    }
}

const GET: Method = Method::GET;
const POST: Method = Method::POST;
const PATCH: Method = Method::PATCH;
const DELETE: Method = Method::DELETE;

pub const ROUTES: &[Route] = &[
    r(
        GET,
        "/healthz",
        Op::Healthz,
        "Process is alive",
        None,
        200,
        Some("Health"),
    ),
    r(
        GET,
        "/readyz",
        Op::Readyz,
        "Ready to serve (503 while PostgreSQL is unreachable)",
        None,
        200,
        Some("Health"),
    ),
    r(
        GET,
        "/api/v1/openapi.json",
        Op::OpenApi,
        "This document",
        None,
        200,
        None,
    ),
    r(
        POST,
        "/api/v1/auth/login",
        Op::Login,
        "Log in; sets the session and CSRF cookies",
        Some("Login"),
        200,
        Some("LoginResult"),
    ),
    r(
        POST,
        "/api/v1/auth/logout",
        Op::Logout,
        "End this session",
        None,
        204,
        None,
    ),
    r(
        GET,
        "/api/v1/auth/me",
        Op::Me,
        "The logged-in user",
        None,
        200,
        Some("Me"),
    ),
    r(
        POST,
        "/api/v1/auth/password",
        Op::Password,
        "Change password; ends every other session of the user",
        Some("PasswordChange"),
        204,
        None,
    ),
    r(
        POST,
        "/api/v1/orgs",
        Op::OrgCreate,
        "Create an org (operator); answered once its hub is up",
        Some("OrgCreate"),
        201,
        Some("Org"),
    ),
    r(
        GET,
        "/api/v1/orgs",
        Op::OrgList,
        "Orgs visible to the caller",
        None,
        200,
        Some("OrgList"),
    ),
    r(
        GET,
        "/api/v1/orgs/{org}",
        Op::OrgGet,
        "One org",
        None,
        200,
        Some("Org"),
    ),
    r(
        PATCH,
        "/api/v1/orgs/{org}",
        Op::OrgPatch,
        "Rename an org or change its default action",
        Some("OrgPatch"),
        200,
        Some("Org"),
    ),
    r(
        DELETE,
        "/api/v1/orgs/{org}",
        Op::OrgDelete,
        "Delete an org and everything in it (operator); answered when nothing is left",
        None,
        204,
        None,
    ),
    r(
        POST,
        "/api/v1/orgs/{org}/users",
        Op::UserCreate,
        "Add a user to the org",
        Some("UserCreate"),
        201,
        Some("User"),
    ),
    r(
        GET,
        "/api/v1/orgs/{org}/users",
        Op::UserList,
        "Users of the org",
        None,
        200,
        Some("UserList"),
    ),
    r(
        DELETE,
        "/api/v1/orgs/{org}/users/{id}",
        Op::UserDelete,
        "Delete a user; their sessions end",
        None,
        204,
        None,
    ),
    r(
        POST,
        "/api/v1/orgs/{org}/machines",
        Op::MachineCreate,
        "Add a machine; answered once its peer is live in the hub",
        Some("MachineCreate"),
        201,
        Some("MachineCreated"),
    ),
    r(
        GET,
        "/api/v1/orgs/{org}/machines",
        Op::MachineList,
        "Machines with handshake and transfer from the kernel",
        None,
        200,
        Some("MachineList"),
    ),
    r(
        GET,
        "/api/v1/orgs/{org}/machines/{id}",
        Op::MachineGet,
        "One machine",
        None,
        200,
        Some("Machine"),
    ),
    r(
        PATCH,
        "/api/v1/orgs/{org}/machines/{id}",
        Op::MachinePatch,
        "Rename a machine or change its tags",
        Some("MachinePatch"),
        200,
        Some("Machine"),
    ),
    r(
        DELETE,
        "/api/v1/orgs/{org}/machines/{id}",
        Op::MachineDelete,
        "Delete a machine; answered once its peer is gone from the hub",
        None,
        204,
        None,
    ),
    r(
        POST,
        "/api/v1/orgs/{org}/machines/{id}/rotate-key",
        Op::MachineRotateKey,
        "Give a machine a new key (server-made unless a public key is sent); answered once the hub knows it by the new key only, with the new config shown once",
        Some("MachineRotateKey"),
        200,
        Some("MachineRotated"),
    ),
    r(
        POST,
        "/api/v1/orgs/{org}/machines/batch",
        Op::MachineBatch,
        "Add a tag to, remove a tag from, or delete up to 1,000 machines: all or none (an id that is not the org's changes nothing), one audit entry each; answered once the kernel follows",
        Some("MachineBatch"),
        200,
        Some("MachineBatchDone"),
    ),
    r(
        POST,
        "/api/v1/orgs/{org}/policies",
        Op::PolicyCreate,
        "Add a policy; answered once the kernel enforces it",
        Some("PolicyCreate"),
        201,
        Some("Policy"),
    ),
    r(
        GET,
        "/api/v1/orgs/{org}/policies",
        Op::PolicyList,
        "Policies with their kernel counters",
        None,
        200,
        Some("PolicyList"),
    ),
    r(
        GET,
        "/api/v1/orgs/{org}/policies/analysis",
        Op::PolicyAnalysis,
        "Static analysis of the evaluation order over the org's current machines: policies shadowed by an earlier one, redundant ones, and ones that match no machine",
        None,
        200,
        Some("PolicyAnalysis"),
    ),
    r(
        POST,
        "/api/v1/orgs/{org}/policies/preview",
        Op::PolicyPreview,
        "Dry run of a policy change or a default-action switch: the rule lines removed and added, the machine pairs and ports whose verdict flips, and the static analysis of the new chain; writes nothing",
        Some("PolicyPreview"),
        200,
        Some("PolicyPreviewResult"),
    ),
    r(
        GET,
        "/api/v1/orgs/{org}/policies/{id}",
        Op::PolicyGet,
        "One policy",
        None,
        200,
        Some("Policy"),
    ),
    r(
        PATCH,
        "/api/v1/orgs/{org}/policies/{id}",
        Op::PolicyPatch,
        "Change a policy; answered once the kernel enforces it",
        Some("PolicyPatch"),
        200,
        Some("Policy"),
    ),
    r(
        DELETE,
        "/api/v1/orgs/{org}/policies/{id}",
        Op::PolicyDelete,
        "Delete a policy; answered once the kernel no longer has it",
        None,
        204,
        None,
    ),
    r(
        POST,
        "/api/v1/orgs/{org}/policies/{id}/move",
        Op::PolicyMove,
        "Move a policy one place up or down the evaluation order (priorities are renumbered 10, 20, …); answered once the kernel enforces it",
        Some("PolicyMove"),
        204,
        None,
    ),
    r(
        GET,
        "/api/v1/orgs/{org}/matrix",
        Op::Matrix,
        "Reachability matrix for one protocol and port: can each machine (or tag) connect to each other one through the hub, by the ordered allow/deny chain",
        None,
        200,
        Some("Matrix"),
    ),
    r(
        GET,
        "/api/v1/orgs/{org}/status",
        Op::Status,
        "Hub, peers and policy counters as the kernel has them",
        None,
        200,
        Some("Status"),
    ),
    r(
        GET,
        "/api/v1/orgs/{org}/history",
        Op::History,
        "The last 30 min of each machine's rx/tx bytes and each policy's packets/bytes in 15 s steps, with when each policy last counted a packet",
        None,
        200,
        Some("History"),
    ),
    r(
        GET,
        "/api/v1/orgs/{org}/audit",
        Op::Audit,
        "Who did what, when, to what (newest first)",
        None,
        200,
        Some("AuditList"),
    ),
    r(
        GET,
        "/api/v1/orgs/{org}/explain",
        Op::Explain,
        "Why can (or can't) src reach dst: the policy chain walked row by row as the kernel has it, the reply direction, the deciding rule's counter, both peers' data plane and a fix for a denied path",
        None,
        200,
        Some("Explain"),
    ),
    r(
        POST,
        "/api/v1/orgs/{org}/watch",
        Op::WatchCreate,
        "Watch a path for up to 120 s (default 60): a counting-only rule the reconciler owns, jumped to before the ACL chain, so it changes no verdict; at most 3 per org (a fourth is 409); answered once the kernel counts",
        Some("WatchCreate"),
        201,
        Some("Watch"),
    ),
    r(
        GET,
        "/api/v1/orgs/{org}/watch",
        Op::WatchList,
        "The org's live watches: packets and bytes of each path that reached the hub, and the row of the chain that decides it",
        None,
        200,
        Some("WatchList"),
    ),
    r(
        GET,
        "/api/v1/orgs/{org}/timeline",
        Op::Timeline,
        "What happened to the org, newest first: the reconciler's repairs, failures and restarts (their detail for the operator only) merged with the audit log",
        None,
        200,
        Some("Timeline"),
    ),
    r(
        GET,
        "/api/v1/orgs/{org}/invariants",
        Op::Invariants,
        "The hub's promises as checks of the last observation (FORWARD DROP with one jump, only lo and wg0, nat empty, no default or static route, IPv6 off, AllowedIPs exactly each /32, hub key opens), when verified and last broken; kernel detail for the operator only",
        None,
        200,
        Some("Invariants"),
    ),
];

/// Matches `path` against a pattern; returns the raw `{org}` and `{id}` segments.
pub(crate) fn matches<'a>(
    pattern: &str,
    path: &'a str,
) -> Option<(Option<&'a str>, Option<&'a str>)> {
    let mut pat = pattern.trim_end_matches('/').split('/');
    let mut segs = path.trim_end_matches('/').split('/');
    let (mut org, mut id) = (None, None);
    loop {
        match (pat.next(), segs.next()) {
            (None, None) => return Some((org, id)),
            (Some("{org}"), Some(s)) if !s.is_empty() => org = Some(s),
            (Some("{id}"), Some(s)) if !s.is_empty() => id = Some(s),
            (Some(p), Some(s)) if p == s => {}
            _ => return None,
        }
    }
}

fn is_json(req: &Request) -> bool {
    req.header("content-type")
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|ct| ct.trim().eq_ignore_ascii_case("application/json"))
}

/// The checks before any operation, in order: content type, session (and CSRF for
/// state-changing methods), then the org of the path against the session.
async fn prepare(
    app: &App,
    req: &Request,
    route: &Route,
    org: Option<&str>,
    id: Option<&str>,
) -> Result<Ctx, ApiError> {
    if !req.body.is_empty() && !is_json(req) {
        return Err(ApiError::unsupported_media_type());
    }
    let session = if route.auth {
        Some(session::authenticate(app, req).await?)
    } else {
        None
    };
    Ctx::scoped(session, org, id)
}

/// Routes one request; every outcome is a JSON response.
///
/// Counted by route pattern, method and status (never by raw path: no ids in label values).
pub async fn dispatch(app: &App, req: Request) -> Response {
    let started = std::time::Instant::now();
    let method = method_label(&req.method);
    let (pattern, resp) = route(app, req).await;
    let status = resp.status().as_str().to_string();
    metrics::counter!("meshwg_http_requests_total", "route" => pattern, "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("meshwg_http_request_duration_seconds", "route" => pattern, "method" => method)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// The method as a label value: the standard methods by name, anything else as `other`, so that
/// clients (unauthenticated ones too) cannot create series by inventing methods.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

async fn route(app: &App, req: Request) -> (&'static str, Response) {
    let mut allowed = Vec::new();
    for route in ROUTES {
        let Some((org, id)) = matches(route.path, &req.path) else {
            continue;
        };
        if route.method != req.method {
            allowed.push(route.method.as_str());
            continue;
        }
        let result = match prepare(app, &req, route, org, id).await {
            Ok(ctx) => super::api::run(app, &req, route.op, ctx).await,
            Err(e) => Err(e),
        };
        return (route.path, result.unwrap_or_else(ApiError::into_response));
    }
    let resp = if allowed.is_empty() {
        ApiError::not_found().into_response()
    } else {
        ApiError::method_not_allowed(allowed.join(", ")).into_response()
    };
    ("unmatched", resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_matching() {
        let org = "3f2d3a9e-0000-4000-8000-000000000001";
        assert_eq!(
            matches("/api/v1/orgs/{org}", &format!("/api/v1/orgs/{org}")),
            Some((Some(org), None))
        );
        assert_eq!(
            matches("/api/v1/orgs/{org}", &format!("/api/v1/orgs/{org}/")),
            Some((Some(org), None))
        );
        assert_eq!(matches("/api/v1/orgs/{org}", "/api/v1/orgs//"), None);
        assert_eq!(
            matches(
                "/api/v1/orgs/{org}/machines/{id}",
                &format!("/api/v1/orgs/{org}/machines/x")
            ),
            Some((Some(org), Some("x")))
        );
        assert_eq!(matches("/api/v1/orgs", "/api/v1/orgs/extra"), None);
        assert_eq!(matches("/healthz", "/healthz"), Some((None, None)));
    }

    #[test]
    fn every_route_is_unique() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "{} {}",
                    a.method,
                    a.path
                );
            }
        }
    }
}
