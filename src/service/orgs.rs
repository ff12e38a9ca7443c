//! Orgs: create and delete (operator), list, get, rename or change the default action.

use super::access::{active_org, require_operator, require_write};
use super::audit::{Event, actor, record};
use super::validate::{self, non_null};
use super::views::OrgView;
use super::{ApiError, App, Ctx};
use crate::controller::{Audit, NewTenant};
use crate::db::orgs::{self, Org, OrgState};
use crate::db::users::Role;
use crate::policy::Verdict;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgCreate {
    pub name: String,
    #[serde(default, deserialize_with = "non_null")]
    pub cidr: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    pub default_action: Option<Verdict>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgPatch {
    #[serde(default, deserialize_with = "non_null")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    pub default_action: Option<Verdict>,
}

fn detail(o: &Org) -> serde_json::Value {
    serde_json::to_value(OrgView::from(o)).unwrap_or_default()
}

/// `POST /orgs`: answered once the org's hub is up.
pub async fn create(app: &App, ctx: &Ctx, input: OrgCreate) -> Result<OrgView, ApiError> {
    require_operator(ctx)?;
    let name = validate::name("name", &input.name)?;
    let cidr = validate::tenant_cidr(input.cidr.as_deref().unwrap_or("10.100.0.0/16"))?;
    let new = NewTenant {
        name,
        cidr,
        default_action: input.default_action.unwrap_or(Verdict::Allow),
    };
    // Audited by the controller, in the transaction that makes the org active.
    let audit = Audit {
        actor: actor(ctx),
        detail: Box::new(detail),
    };
    let org = app.ctl.create_tenant_by(new, audit).await?;
    app.reads.wrote(org.id);
    Ok(OrgView::from(&org))
}

/// `GET /orgs`: the operator sees every org, also those being created or deleted (or stuck
/// there after a failed teardown, which DELETE retries); an org's users see it while active.
pub async fn list(app: &App, ctx: &Ctx) -> Result<Vec<OrgView>, ApiError> {
    let u = &ctx.session().user;
    let all = orgs::list(&app.pool).await?;
    Ok(all
        .iter()
        .filter(|o| {
            u.role == Role::Operator || (o.state == OrgState::Active && u.org_id == Some(o.id))
        })
        .map(OrgView::from)
        .collect())
}

pub async fn get(app: &App, ctx: &Ctx) -> Result<OrgView, ApiError> {
    Ok(OrgView::from(&*active_org(app, ctx).await?))
}

/// `PATCH /orgs/{org}`. A new default action is answered once the kernel enforces it.
pub async fn update(app: &App, ctx: &Ctx, input: OrgPatch) -> Result<OrgView, ApiError> {
    require_write(ctx)?;
    let name = input
        .name
        .as_deref()
        .map(|n| validate::name("name", n))
        .transpose()?;
    active_org(app, ctx).await?;
    let org = orgs::update(&app.pool, ctx.org(), name.as_deref(), input.default_action)
        .await?
        .ok_or_else(ApiError::not_found)?;
    app.reads.wrote(org.id);
    // Saved either way: audited either way, and a kernel that did not confirm is reported.
    let applied = match input.default_action {
        Some(_) => app.ctl.apply_saved(org.id).await,
        None => Ok(()),
    };
    let event = Event {
        org: Some(org.id),
        action: "org.update",
        target_type: "org",
        target_id: Some(org.id.to_string()),
        detail: detail(&org),
    };
    record(app, Some(&ctx.session().user), event).await;
    applied?;
    Ok(OrgView::from(&org))
}

/// `DELETE /orgs/{org}` (operator): answered when nothing of the org is left. Works on an org
/// in any state, so a deletion whose teardown failed (org left `deleting`) is retried this way.
pub async fn delete(app: &App, ctx: &Ctx) -> Result<(), ApiError> {
    require_operator(ctx)?;
    let org = orgs::get(&app.pool, ctx.org())
        .await?
        .ok_or_else(ApiError::not_found)?;
    app.ctl.delete_tenant(org.id).await?;
    app.reads.wrote(org.id);
    app.sessions.evict_where(|s| s.user.org_id == Some(org.id));
    // Recorded without an org: org-scoped entries went with the org, this one stays.
    let event = Event {
        org: None,
        action: "org.delete",
        target_type: "org",
        target_id: Some(org.id.to_string()),
        detail: serde_json::json!({"name": org.name, "cidr": org.cidr.to_string()}),
    };
    record(app, Some(&ctx.session().user), event).await;
    Ok(())
}
