//! `/orgs/{org}/policies`: every write is answered once the kernel enforces it; reads carry the
//! kernel's rule counters.

use super::auth::{actor, record};
use super::error::ApiError;
use super::orgs::{load_org, require_write};
use super::router::{Ctx, body, non_null};
use super::{App, Request, Response, json, no_content, validate};
use crate::controller::Audit;
use crate::db::machines;
use crate::db::orgs::Org;
use crate::db::policies::{self, PolicyFields};
use crate::kernel::RuleObserved;
use crate::policy::render::policy_comment;
use crate::policy::{Policy, PortRange, Protocol, Selector, Verdict, valid_tag};
use serde::{Deserialize, Deserializer};
use uuid::Uuid;
use warp::http::StatusCode;

const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = 0..=1_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyCreate {
    #[serde(default, deserialize_with = "non_null")]
    name: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    priority: Option<i32>,
    action: Verdict,
    src: Selector,
    dst: Selector,
    #[serde(default, deserialize_with = "non_null")]
    protocol: Option<Protocol>,
    ports: Option<PortRange>,
    #[serde(default, deserialize_with = "non_null")]
    enabled: Option<bool>,
}

/// `Some(None)` for an explicit `null` (clears the ports), `None` when the field is absent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyPatch {
    #[serde(default, deserialize_with = "non_null")]
    name: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    priority: Option<i32>,
    #[serde(default, deserialize_with = "non_null")]
    action: Option<Verdict>,
    #[serde(default, deserialize_with = "non_null")]
    src: Option<Selector>,
    #[serde(default, deserialize_with = "non_null")]
    dst: Option<Selector>,
    #[serde(default, deserialize_with = "non_null")]
    protocol: Option<Protocol>,
    #[serde(default, deserialize_with = "present")]
    ports: Option<Option<PortRange>>,
    #[serde(default, deserialize_with = "non_null")]
    enabled: Option<bool>,
}

fn view(p: &Policy, rules: &[RuleObserved]) -> serde_json::Value {
    let comment = format!("\"{}\"", policy_comment(p.id));
    let counters = rules.iter().find(|r| r.rule.contains(&comment));
    serde_json::json!({
        "id": p.id,
        "name": p.name,
        "priority": p.priority,
        "action": p.action,
        "src": p.src,
        "dst": p.dst,
        "protocol": p.protocol,
        "ports": p.ports,
        "enabled": p.enabled,
        "created_at": p.created_at,
        "packets": counters.map_or(0, |r| r.packets),
        "bytes": counters.map_or(0, |r| r.bytes),
    })
}

async fn check_selector(app: &App, org: &Org, field: &str, s: &Selector) -> Result<(), ApiError> {
    match s {
        Selector::Any => Ok(()),
        Selector::Tag(t) if valid_tag(t) => Ok(()),
        Selector::Tag(_) => Err(ApiError::invalid(
            field,
            "a tag is 1 to 64 letters, digits or -_.:",
        )),
        Selector::Cidr(c) if org.cidr.contains_cidr(c) => Ok(()),
        Selector::Cidr(_) => Err(ApiError::invalid(
            field,
            format!("cidr must lie inside the org network {}", org.cidr),
        )),
        Selector::Machine(id) => match machines::get(&app.pool, org.id, *id).await? {
            Some(_) => Ok(()),
            None => Err(ApiError::invalid(field, "no such machine in this org")),
        },
    }
}

async fn validated(app: &App, org: &Org, f: PolicyFields) -> Result<PolicyFields, ApiError> {
    let name = validate::optional_name("name", &f.name)?;
    if !PRIORITY_RANGE.contains(&f.priority) {
        return Err(ApiError::invalid(
            "priority",
            "must be between 0 and 1000000",
        ));
    }
    if f.ports.is_some() && !matches!(f.protocol, Protocol::Tcp | Protocol::Udp) {
        return Err(ApiError::invalid("ports", "only with protocol tcp or udp"));
    }
    check_selector(app, org, "src", &f.src).await?;
    check_selector(app, org, "dst", &f.dst).await?;
    Ok(PolicyFields { name, ..f })
}

async fn rules(app: &App, org: Uuid) -> Vec<RuleObserved> {
    app.ctl
        .status(org)
        .await
        .map(|s| s.rules)
        .unwrap_or_default()
}

pub async fn create(app: &App, req: &Request, ctx: &Ctx) -> Result<Response, ApiError> {
    require_write(ctx)?;
    let b: PolicyCreate = body(req)?;
    let org = load_org(app, ctx.org()).await?;
    let fields = validated(
        app,
        &org,
        PolicyFields {
            name: b.name.unwrap_or_default(),
            priority: b.priority.unwrap_or(100),
            action: b.action,
            src: b.src,
            dst: b.dst,
            protocol: b.protocol.unwrap_or(Protocol::Any),
            ports: b.ports,
            enabled: b.enabled.unwrap_or(true),
        },
    )
    .await?;
    // Enforced, confirmed and audited in one go by the controller, or abandoned.
    let audit = Audit {
        actor: actor(ctx),
        detail: Box::new(|p: &Policy| view(p, &[])),
    };
    let p = app.ctl.add_policy_by(org.id, fields, audit).await?;
    Ok(json(StatusCode::CREATED, &view(&p, &[])))
}

pub async fn list(app: &App, ctx: &Ctx) -> Result<Response, ApiError> {
    load_org(app, ctx.org()).await?;
    let list = policies::list(&app.pool, ctx.org()).await?;
    let rules = rules(app, ctx.org()).await;
    let out: Vec<_> = list.iter().map(|p| view(p, &rules)).collect();
    Ok(json(StatusCode::OK, &serde_json::json!({"policies": out})))
}

pub async fn get(app: &App, ctx: &Ctx) -> Result<Response, ApiError> {
    load_org(app, ctx.org()).await?;
    let p = policies::get(&app.pool, ctx.org(), ctx.id())
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(json(
        StatusCode::OK,
        &view(&p, &rules(app, ctx.org()).await),
    ))
}

pub async fn patch(app: &App, req: &Request, ctx: &Ctx) -> Result<Response, ApiError> {
    require_write(ctx)?;
    let b: PolicyPatch = body(req)?;
    let org = load_org(app, ctx.org()).await?;
    let old = policies::get(&app.pool, org.id, ctx.id())
        .await?
        .ok_or_else(ApiError::not_found)?;
    let cur = PolicyFields::of(&old);
    let protocol = b.protocol.unwrap_or(cur.protocol);
    // Changing to a protocol without ports drops ports that no longer apply.
    let ports = match b.ports {
        Some(p) => p,
        None if matches!(protocol, Protocol::Tcp | Protocol::Udp) => cur.ports,
        None => None,
    };
    let fields = validated(
        app,
        &org,
        PolicyFields {
            name: b.name.unwrap_or(cur.name),
            priority: b.priority.unwrap_or(cur.priority),
            action: b.action.unwrap_or(cur.action),
            src: b.src.unwrap_or(cur.src),
            dst: b.dst.unwrap_or(cur.dst),
            protocol,
            ports,
            enabled: b.enabled.unwrap_or(cur.enabled),
        },
    )
    .await?;
    let p = policies::update(&app.pool, org.id, old.id, &fields)
        .await?
        .ok_or_else(ApiError::not_found)?;
    // Saved either way: audited either way, and a kernel that did not confirm is reported.
    let applied = app.ctl.apply_saved(org.id).await;
    let v = view(&p, &rules(app, org.id).await);
    record(
        app,
        Some(&ctx.session().user),
        Some(org.id),
        "policy.update",
        "policy",
        Some(p.id.to_string()),
        v.clone(),
    )
    .await;
    applied?;
    Ok(json(StatusCode::OK, &v))
}

pub async fn delete(app: &App, ctx: &Ctx) -> Result<Response, ApiError> {
    require_write(ctx)?;
    load_org(app, ctx.org()).await?;
    if !policies::delete(&app.pool, ctx.org(), ctx.id()).await? {
        return Err(ApiError::not_found());
    }
    let applied = app.ctl.apply_saved(ctx.org()).await;
    record(
        app,
        Some(&ctx.session().user),
        Some(ctx.org()),
        "policy.delete",
        "policy",
        Some(ctx.id().to_string()),
        serde_json::json!({}),
    )
    .await;
    applied?;
    Ok(no_content())
}
