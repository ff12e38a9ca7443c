//! An org's policies: every change is answered once the kernel enforces it; reads carry the
//! kernel's rule counters (read at the time of the request).

use super::access::{active_org, require_write};
use super::audit::{actor, record_by};
use super::page::{self, DEFAULT_LIMIT, Page, PageRequest, PolicyKey};
use super::validate::{self, non_null, present};
use super::views::PolicyView;
use super::{ApiError, App, Ctx};
use crate::controller::Audit;
use crate::db::orgs::{Org, Rows};
use crate::db::policies::{self, PolicyFields};
use crate::kernel::RuleObserved;
use crate::policy::{Policy, PortRange, Protocol, Selector, Verdict, valid_tag};
use serde::Deserialize;
use uuid::Uuid;

const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = 0..=1_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyCreate {
    #[serde(default, deserialize_with = "non_null")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    pub priority: Option<i32>,
    pub action: Verdict,
    pub src: Selector,
    pub dst: Selector,
    #[serde(default, deserialize_with = "non_null")]
    pub protocol: Option<Protocol>,
    pub ports: Option<PortRange>,
    #[serde(default, deserialize_with = "non_null")]
    pub enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPatch {
    #[serde(default, deserialize_with = "non_null")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    pub priority: Option<i32>,
    #[serde(default, deserialize_with = "non_null")]
    pub action: Option<Verdict>,
    #[serde(default, deserialize_with = "non_null")]
    pub src: Option<Selector>,
    #[serde(default, deserialize_with = "non_null")]
    pub dst: Option<Selector>,
    #[serde(default, deserialize_with = "non_null")]
    pub protocol: Option<Protocol>,
    /// `Some(None)`: an explicit `null` clears the ports.
    #[serde(default, deserialize_with = "present")]
    pub ports: Option<Option<PortRange>>,
    #[serde(default, deserialize_with = "non_null")]
    pub enabled: Option<bool>,
}

/// The page of policies a request asks for (`limit`, `cursor`).
pub fn page(limit: Option<&str>, cursor: Option<&str>) -> Result<PageRequest<PolicyKey>, ApiError> {
    page::request(limit, cursor, DEFAULT_LIMIT)
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
        Selector::Machine(id) => match crate::db::machines::get(&app.pool, org.id, *id).await? {
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

/// What a creation would store, checked exactly as [`create`] checks it (also for previews).
pub(super) async fn create_fields(
    app: &App,
    org: &Org,
    input: PolicyCreate,
) -> Result<PolicyFields, ApiError> {
    let fields = PolicyFields {
        name: input.name.unwrap_or_default(),
        priority: input.priority.unwrap_or(100),
        action: input.action,
        src: input.src,
        dst: input.dst,
        protocol: input.protocol.unwrap_or(Protocol::Any),
        ports: input.ports,
        enabled: input.enabled.unwrap_or(true),
    };
    validated(app, org, fields).await
}

/// What an update of `old` would store, checked exactly as [`update`] checks it.
pub(super) async fn update_fields(
    app: &App,
    org: &Org,
    old: &Policy,
    input: PolicyPatch,
) -> Result<PolicyFields, ApiError> {
    let cur = PolicyFields::of(old);
    let protocol = input.protocol.unwrap_or(cur.protocol);
    // Changing to a protocol without ports drops ports that no longer apply.
    let ports = match input.ports {
        Some(p) => p,
        None if matches!(protocol, Protocol::Tcp | Protocol::Udp) => cur.ports,
        None => None,
    };
    let fields = PolicyFields {
        name: input.name.unwrap_or(cur.name),
        priority: input.priority.unwrap_or(cur.priority),
        action: input.action.unwrap_or(cur.action),
        src: input.src.unwrap_or(cur.src),
        dst: input.dst.unwrap_or(cur.dst),
        protocol,
        ports,
        enabled: input.enabled.unwrap_or(cur.enabled),
    };
    validated(app, org, fields).await
}

/// The tenant's rules with counters read from the kernel now (none if it cannot be read).
async fn rules(app: &App, org: Uuid) -> Vec<RuleObserved> {
    app.ctl
        .status(org)
        .await
        .map(|s| s.rules)
        .unwrap_or_default()
}

/// `POST /orgs/{org}/policies`: enforced, confirmed and audited in one go, or abandoned.
pub async fn create(app: &App, ctx: &Ctx, input: PolicyCreate) -> Result<PolicyView, ApiError> {
    require_write(ctx)?;
    let org = active_org(app, ctx).await?;
    let fields = create_fields(app, &org, input).await?;
    let audit = Audit {
        actor: actor(ctx),
        detail: Box::new(|p: &Policy| {
            serde_json::to_value(PolicyView::of(p, &[])).unwrap_or_default()
        }),
    };
    let p = app.ctl.add_policy_by(org.id, fields, audit).await?;
    app.reads.wrote(org.id);
    Ok(PolicyView::of(&p, &[]))
}

/// `GET /orgs/{org}/policies`: in evaluation order (priority, creation, id).
pub async fn list(
    app: &App,
    ctx: &Ctx,
    req: PageRequest<PolicyKey>,
) -> Result<Page<PolicyView>, ApiError> {
    active_org(app, ctx).await?;
    let after = req.after.map(|k| (k.priority, k.created_at, k.id));
    let rows = policies::list_page(&app.pool, ctx.org(), after, req.limit as i64 + 1).await?;
    let page = Page::of(rows, req.limit, |p| PolicyKey {
        priority: p.priority,
        created_at: p.created_at,
        id: p.id,
    });
    let rules = rules(app, ctx.org()).await;
    Ok(page.map(|p| PolicyView::of(&p, &rules)))
}

pub async fn get(app: &App, ctx: &Ctx) -> Result<PolicyView, ApiError> {
    active_org(app, ctx).await?;
    let p = policies::get(&app.pool, ctx.org(), ctx.id())
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(PolicyView::of(&p, &rules(app, ctx.org()).await))
}

/// `PATCH /orgs/{org}/policies/{id}`: answered once the kernel enforces the change.
pub async fn update(app: &App, ctx: &Ctx, input: PolicyPatch) -> Result<PolicyView, ApiError> {
    require_write(ctx)?;
    let org = active_org(app, ctx).await?;
    let old = policies::get(&app.pool, org.id, ctx.id())
        .await?
        .ok_or_else(ApiError::not_found)?;
    let fields = update_fields(app, &org, &old, input).await?;
    let p = policies::update(&app.pool, org.id, old.id, &fields)
        .await?
        .ok_or_else(ApiError::not_found)?;
    app.reads.wrote(org.id);
    // Saved either way: audited either way, and a kernel that did not confirm is reported.
    let applied = app.ctl.apply_saved_rows(org.id, Rows::policy(p.id)).await;
    let view = PolicyView::of(&p, &rules(app, org.id).await);
    let detail = serde_json::to_value(&view).unwrap_or_default();
    record_by(app, ctx, "policy.update", "policy", p.id, detail).await;
    applied?;
    Ok(view)
}

/// Which way a policy moves in the evaluation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    Up,
    Down,
}

/// The priorities that put `order` (ids in evaluation order) into effect: 10, 20, 30, …
/// (room to insert between), with the policy at `index` swapped with its neighbour. `None` when
/// there is no neighbour that way.
pub fn renumbered(order: &[Uuid], index: usize, way: Move) -> Option<Vec<(Uuid, i32)>> {
    let other = match way {
        Move::Up => index.checked_sub(1)?,
        Move::Down => Some(index + 1).filter(|i| *i < order.len())?,
    };
    let mut order = order.to_vec();
    order.swap(index, other);
    let step = (*PRIORITY_RANGE.end() / (order.len() as i32 + 1)).clamp(1, 10);
    Some(
        order
            .into_iter()
            .enumerate()
            .map(|(i, id)| (id, (i as i32 + 1) * step))
            .collect(),
    )
}

/// Moves a policy one place up or down the evaluation order by renumbering the org's
/// priorities in one statement; answered once the kernel enforces the new order.
pub async fn reorder(app: &App, ctx: &Ctx, way: Move) -> Result<(), ApiError> {
    require_write(ctx)?;
    let org = active_org(app, ctx).await?;
    let mut all = policies::list(&app.pool, org.id).await?;
    all.sort_by_key(|p| (p.priority, p.created_at, p.id));
    let order: Vec<Uuid> = all.iter().map(|p| p.id).collect();
    let index = order
        .iter()
        .position(|id| *id == ctx.id())
        .ok_or_else(ApiError::not_found)?;
    let Some(priorities) = renumbered(&order, index, way) else {
        return Ok(());
    };
    policies::set_priorities(&app.pool, org.id, &priorities).await?;
    app.reads.wrote(org.id);
    let applied = app.ctl.apply_saved(org.id).await;
    let position = priorities.iter().position(|(id, _)| *id == ctx.id());
    let detail = serde_json::json!({"from": index + 1, "to": position.map(|p| p + 1)});
    record_by(app, ctx, "policy.move", "policy", ctx.id(), detail).await;
    applied?;
    Ok(())
}

pub async fn delete(app: &App, ctx: &Ctx) -> Result<(), ApiError> {
    require_write(ctx)?;
    active_org(app, ctx).await?;
    if !policies::delete(&app.pool, ctx.org(), ctx.id()).await? {
        return Err(ApiError::not_found());
    }
    app.reads.wrote(ctx.org());
    let applied = app
        .ctl
        .apply_saved_rows(ctx.org(), Rows::policy(ctx.id()))
        .await;
    record_by(
        app,
        ctx,
        "policy.delete",
        "policy",
        ctx.id(),
        serde_json::json!({}),
    )
    .await;
    applied?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_swaps_neighbours_and_renumbers_in_steps() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let up = renumbered(&ids, 2, Move::Up).unwrap();
        assert_eq!(up, [(ids[0], 10), (ids[2], 20), (ids[1], 30)]);
        let down = renumbered(&ids, 0, Move::Down).unwrap();
        assert_eq!(down, [(ids[1], 10), (ids[0], 20), (ids[2], 30)]);
        assert_eq!(renumbered(&ids, 0, Move::Up), None);
        assert_eq!(renumbered(&ids, 2, Move::Down), None);
        let many: Vec<Uuid> = (0..200_000).map(|_| Uuid::nil()).collect();
        let last = renumbered(&many, 1, Move::Up).unwrap().last().unwrap().1;
        assert!(PRIORITY_RANGE.contains(&last), "{last}");
    }
}
