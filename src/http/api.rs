//! The JSON rendering of the service's operations: each route's request becomes the operation's
//! typed input (body, query) and its typed answer becomes the response. No checks live here;
//! they are the service's.

use super::conditional::{json_tagged, tagged};
use super::error::ApiError;
use super::ops::{Op, body};
use super::session::{cookie, login_cookies, logout_cookies, session_cookie};
use super::{App, Request, Response, json, no_content, secret_json};
use crate::service::audit::AuditQuery;
use crate::service::views::Listed;
use crate::service::{Ctx, auth, machines, matrix, orgs, policies, preview, status, users};
use warp::http::{StatusCode, header};

const OK: StatusCode = StatusCode::OK;
const CREATED: StatusCode = StatusCode::CREATED;

/// A page as `{"<key>": [...], "next_cursor": …}`, tagged by its body.
fn page<T: serde::Serialize>(
    req: &Request,
    key: &'static str,
    page: &crate::service::page::Page<T>,
) -> Response {
    let listed = Listed {
        key,
        items: &page.items,
        next_cursor: page.next_cursor.as_deref(),
    };
    json_tagged(req, &listed)
}

/// `limit` and `cursor` of the query string.
fn paging(req: &Request) -> (Option<&str>, Option<&str>) {
    (req.query_param("limit"), req.query_param("cursor"))
}

pub async fn run(app: &App, req: &Request, op: Op, ctx: Ctx) -> Result<Response, ApiError> {
    let ctx = &ctx;
    Ok(match op {
        Op::Healthz => json(OK, &serde_json::json!({"status": "ok"})),
        Op::Readyz => {
            status::ready(app).await?;
            json(OK, &serde_json::json!({"status": "ready"}))
        }
        Op::OpenApi => json(OK, &super::openapi::document(app.config.cookie_secure)),
        Op::Login => return login(app, req).await,
        Op::Logout => {
            auth::logout(app, ctx).await?;
            let mut resp = no_content();
            for c in logout_cookies(app.config.cookie_secure) {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            resp
        }
        Op::Me => json(OK, &auth::me(ctx)),
        Op::Password => {
            auth::change_password(app, ctx, body(req)?).await?;
            no_content()
        }
        Op::OrgCreate => json(CREATED, &orgs::create(app, ctx, body(req)?).await?),
        Op::OrgList => {
            #[derive(serde::Serialize)]
            struct OrgList {
                orgs: Vec<crate::service::views::OrgView>,
            }
            json_tagged(
                req,
                &OrgList {
                    orgs: orgs::list(app, ctx).await?,
                },
            )
        }
        Op::OrgGet => json(OK, &orgs::get(app, ctx).await?),
        Op::OrgPatch => json(OK, &orgs::update(app, ctx, body(req)?).await?),
        Op::OrgDelete => {
            orgs::delete(app, ctx).await?;
            no_content()
        }
        Op::UserCreate => json(CREATED, &users::create(app, ctx, body(req)?).await?),
        Op::UserList => {
            let (limit, cursor) = paging(req);
            let list = users::list(app, ctx, users::page(limit, cursor)?).await?;
            page(req, "users", &list)
        }
        Op::UserDelete => {
            users::delete(app, ctx).await?;
            no_content()
        }
        Op::MachineCreate => secret_json(CREATED, &machines::create(app, ctx, body(req)?).await?),
        Op::MachineList => {
            let (limit, cursor) = paging(req);
            let want = machines::page(limit, cursor)?;
            let model = machines::model(app, ctx).await?;
            tagged(req, &model.etag(&want), || model.rendered(&want))
        }
        Op::MachineGet => json(OK, &machines::get(app, ctx).await?),
        Op::MachinePatch => json(OK, &machines::update(app, ctx, body(req)?).await?),
        Op::MachineDelete => {
            machines::delete(app, ctx).await?;
            no_content()
        }
        Op::MachineRotateKey => {
            // The body is optional: without one the server makes the key pair.
            let input = match req.body.is_empty() {
                true => machines::RotateKey::default(),
                false => body(req)?,
            };
            secret_json(OK, &machines::rotate_key(app, ctx, input).await?)
        }
        Op::MachineBatch => json(OK, &crate::service::batch::run(app, ctx, body(req)?).await?),
        Op::PolicyCreate => json(CREATED, &policies::create(app, ctx, body(req)?).await?),
        Op::PolicyList => {
            let (limit, cursor) = paging(req);
            let list = policies::list(app, ctx, policies::page(limit, cursor)?).await?;
            page(req, "policies", &list)
        }
        Op::PolicyAnalysis => json(OK, &preview::analysis(app, ctx).await?),
        Op::PolicyPreview => json(OK, &preview::preview(app, ctx, body(req)?).await?),
        Op::Matrix => {
            let q = matrix::MatrixQuery {
                proto: req.query_param("proto"),
                port: req.query_param("port"),
                by: req.query_param("by"),
            };
            json(OK, &matrix::matrix(app, ctx, q).await?)
        }
        Op::PolicyGet => json(OK, &policies::get(app, ctx).await?),
        Op::PolicyPatch => json(OK, &policies::update(app, ctx, body(req)?).await?),
        Op::PolicyMove => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct PolicyMove {
                way: Way,
            }
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "lowercase")]
            enum Way {
                Up,
                Down,
            }
            let way = match body::<PolicyMove>(req)?.way {
                Way::Up => policies::Move::Up,
                Way::Down => policies::Move::Down,
            };
            policies::reorder(app, ctx, way).await?;
            no_content()
        }
        Op::PolicyDelete => {
            policies::delete(app, ctx).await?;
            no_content()
        }
        Op::Status => {
            let (body, etag) = status::status(app, ctx).await?.json();
            tagged(req, &etag, || body)
        }
        Op::History => json(OK, &status::history(app, ctx).await?),
        Op::Audit => {
            let (limit, cursor) = paging(req);
            let q = AuditQuery::parse(limit, cursor, req.query_param("before"))?.filtered(
                decoded(req, "action")?.as_deref(),
                decoded(req, "actor")?.as_deref(),
                decoded(req, "target")?.as_deref(),
            )?;
            let list = crate::service::audit::list(app, ctx, q).await?;
            page(req, "entries", &list)
        }
        Op::WatchCreate => json(
            CREATED,
            &crate::service::watch::create(app, ctx, body(req)?).await?,
        ),
        Op::WatchList => json(OK, &crate::service::watch::list(app, ctx).await?),
        Op::Explain => {
            let q = crate::service::explain::ExplainQuery::parse(&req.query)?;
            json(OK, &crate::service::explain::explain(app, ctx, &q).await?)
        }
        Op::Invariants => json(OK, &crate::service::invariants::invariants(app, ctx).await?),
        Op::Timeline => {
            let q = crate::service::timeline::TimelineQuery::parse(
                req.query_param("limit"),
                decoded(req, "before")?.as_deref(),
            )?;
            json(OK, &crate::service::timeline::list(app, ctx, q).await?)
        }
    })
}

/// A query parameter, percent-decoded (an email carries `%40`).
fn decoded(req: &Request, name: &str) -> Result<Option<String>, ApiError> {
    let Some(raw) = req.query_param(name) else {
        return Ok(None);
    };
    serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={raw}"))
        .ok()
        .and_then(|mut v| v.pop())
        .map(|(_, v)| Some(v))
        .ok_or_else(|| ApiError::invalid(name, "could not be read"))
}

async fn login(app: &App, req: &Request) -> Result<Response, ApiError> {
    let origin = auth::Origin {
        client: req.client_ip(&app.config.trusted_proxies),
        token: cookie(req, session_cookie(app.config.cookie_secure)),
    };
    let done = auth::login(app, origin, body(req)?).await?;
    let mut resp = json(OK, &done);
    let secure = app.config.cookie_secure;
    for c in login_cookies(done.token.expose(), &done.csrf_token, done.ttl, secure) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(resp)
}
