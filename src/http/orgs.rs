//! `/orgs` and `/orgs/{org}/users`.

use super::auth::{actor, record, user_view};
use super::error::ApiError;
use super::router::{Ctx, body, non_null};
use super::session::can_write;
use super::{App, Request, Response, json, no_content, validate};
use crate::controller::{Audit, NewTenant};
use crate::db::DbError;
use crate::db::orgs::{self, Org, OrgState};
use crate::db::users::{self, Role};
use crate::policy::Verdict;
use crate::secret::Secret;
use serde::Deserialize;
use uuid::Uuid;
use warp::http::StatusCode;

pub fn org_view(o: &Org) -> serde_json::Value {
    serde_json::json!({
        "id": o.id,
        "name": o.name,
        "cidr": o.cidr.to_string(),
        "hub_address": o.cidr.hub_address().to_string(),
        "listen_port": o.listen_port,
        "hub_public_key": o.hub_public_key.to_base64(),
        "state": o.state.as_str(),
        "default_action": o.default_action.as_str(),
        "created_at": o.created_at,
    })
}

/// The active org of the path (visibility was already checked by the router).
pub async fn load_org(app: &App, id: Uuid) -> Result<Org, ApiError> {
    match orgs::get(&app.pool, id).await? {
        Some(o) if o.state == OrgState::Active => Ok(o),
        _ => Err(ApiError::not_found()),
    }
}

pub fn require_write(ctx: &Ctx) -> Result<(), ApiError> {
    if can_write(ctx.session()) {
        Ok(())
    } else {
        Err(ApiError::forbidden("members can read but not change"))
    }
}

fn require_operator(ctx: &Ctx) -> Result<(), ApiError> {
    if ctx.session().user.role == Role::Operator {
        Ok(())
    } else {
        Err(ApiError::forbidden("only the operator can do this"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgCreate {
    name: String,
    #[serde(default, deserialize_with = "non_null")]
    cidr: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    default_action: Option<Verdict>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgPatch {
    #[serde(default, deserialize_with = "non_null")]
    name: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    default_action: Option<Verdict>,
}

pub async fn create(app: &App, req: &Request, ctx: &Ctx) -> Result<Response, ApiError> {
    require_operator(ctx)?;
    let b: OrgCreate = body(req)?;
    let name = validate::name("name", &b.name)?;
    let cidr = validate::tenant_cidr(b.cidr.as_deref().unwrap_or("10.100.0.0/16"))?;
    let new = NewTenant {
        name,
        cidr,
        default_action: b.default_action.unwrap_or(Verdict::Allow),
    };
    // Audited by the controller, in the transaction that makes the org active.
    let audit = Audit {
        actor: actor(ctx),
        detail: Box::new(org_view),
    };
    let org = app.ctl.create_tenant_by(new, audit).await?;
    Ok(json(StatusCode::CREATED, &org_view(&org)))
}

pub async fn list(app: &App, ctx: &Ctx) -> Result<Response, ApiError> {
    let u = &ctx.session().user;
    let all = orgs::list(&app.pool).await?;
    // The operator also sees orgs being created or deleted (or stuck there after a failed
    // teardown, which DELETE retries); an org's own users see it only while it is active.
    let visible: Vec<_> = all
        .iter()
        .filter(|o| {
            u.role == Role::Operator || (o.state == OrgState::Active && u.org_id == Some(o.id))
        })
        .map(org_view)
        .collect();
    Ok(json(StatusCode::OK, &serde_json::json!({"orgs": visible})))
}

pub async fn get(app: &App, ctx: &Ctx) -> Result<Response, ApiError> {
    Ok(json(
        StatusCode::OK,
        &org_view(&load_org(app, ctx.org()).await?),
    ))
}

pub async fn patch(app: &App, req: &Request, ctx: &Ctx) -> Result<Response, ApiError> {
    require_write(ctx)?;
    let b: OrgPatch = body(req)?;
    let name = b
        .name
        .as_deref()
        .map(|n| validate::name("name", n))
        .transpose()?;
    load_org(app, ctx.org()).await?;
    let org = orgs::update(&app.pool, ctx.org(), name.as_deref(), b.default_action)
        .await?
        .ok_or_else(ApiError::not_found)?;
    // Saved either way: audited either way, and a kernel that did not confirm is reported.
    let applied = match b.default_action {
        Some(_) => app.ctl.apply_saved(org.id).await,
        None => Ok(()),
    };
    record(
        app,
        Some(&ctx.session().user),
        Some(org.id),
        "org.update",
        "org",
        Some(org.id.to_string()),
        org_view(&org),
    )
    .await;
    applied?;
    Ok(json(StatusCode::OK, &org_view(&org)))
}

pub async fn delete(app: &App, ctx: &Ctx) -> Result<Response, ApiError> {
    require_operator(ctx)?;
    // Any state: a deletion whose teardown failed (org left `deleting`) is retried this way.
    let org = orgs::get(&app.pool, ctx.org())
        .await?
        .ok_or_else(ApiError::not_found)?;
    app.ctl.delete_tenant(org.id).await?;
    app.sessions.evict_where(|s| s.user.org_id == Some(org.id));
    // Recorded without an org: org-scoped entries went with the org, this one stays.
    let detail = serde_json::json!({"name": org.name, "cidr": org.cidr.to_string()});
    record(
        app,
        Some(&ctx.session().user),
        None,
        "org.delete",
        "org",
        Some(org.id.to_string()),
        detail,
    )
    .await;
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserCreate {
    email: String,
    password: Secret<String>,
    role: String,
}

pub async fn user_create(app: &App, req: &Request, ctx: &Ctx) -> Result<Response, ApiError> {
    require_write(ctx)?;
    let b: UserCreate = body(req)?;
    let email = validate::email(&b.email)?;
    let role = match Role::parse(&b.role) {
        Some(r @ (Role::Admin | Role::Member)) => r,
        _ => return Err(ApiError::invalid("role", "must be admin or member")),
    };
    crate::auth::password::check_length(b.password.expose())
        .map_err(|e| ApiError::invalid("password", e))?;
    load_org(app, ctx.org()).await?;
    let hash = app
        .hasher
        .hash(b.password)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let max = app.ctl.deps().quotas.users;
    let user = users::create(&app.pool, ctx.org(), &email, &hash, role, max)
        .await
        .map_err(|e| match e {
            DbError::Conflict(_) => ApiError::conflict("a user with this email already exists"),
            e => e.into(),
        })?;
    let mut view = user_view(&user);
    view["created_at"] = serde_json::json!(user.created_at);
    record(
        app,
        Some(&ctx.session().user),
        Some(ctx.org()),
        "user.create",
        "user",
        Some(user.id.to_string()),
        serde_json::json!({"email": user.email, "role": role.as_str()}),
    )
    .await;
    Ok(json(StatusCode::CREATED, &view))
}

pub async fn user_list(app: &App, ctx: &Ctx) -> Result<Response, ApiError> {
    load_org(app, ctx.org()).await?;
    let list: Vec<_> = users::list(&app.pool, ctx.org())
        .await?
        .iter()
        .map(|u| {
            let mut v = user_view(u);
            v["created_at"] = serde_json::json!(u.created_at);
            v
        })
        .collect();
    Ok(json(StatusCode::OK, &serde_json::json!({"users": list})))
}

pub async fn user_delete(app: &App, ctx: &Ctx) -> Result<Response, ApiError> {
    require_write(ctx)?;
    load_org(app, ctx.org()).await?;
    let id = ctx.id();
    if !users::delete(&app.pool, ctx.org(), id).await? {
        return Err(ApiError::not_found());
    }
    app.sessions.evict_where(|s| s.user.id == id);
    record(
        app,
        Some(&ctx.session().user),
        Some(ctx.org()),
        "user.delete",
        "user",
        Some(id.to_string()),
        serde_json::json!({}),
    )
    .await;
    Ok(no_content())
}
