//! An org's overview, users, audit log and settings.

use super::fmt::{ago, bytes, iso};
use super::form::Form;
use super::page::{Chrome, after_change, fragment, html, is_htmx, redirect};
use crate::http::error::ApiError;
use crate::http::{App, Request, Response};
use crate::policy::Verdict;
use crate::secret::Secret;
use crate::service::audit::AuditQuery;
use crate::service::views::{OrgView, Presence};
use crate::service::{Ctx, audit, machines, orgs, policies, status, users};
use askama::Template;
use chrono::Utc;
use warp::http::StatusCode;

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    chrome: Chrome,
    org: OrgView,
    online: usize,
    idle: usize,
    never: usize,
    stale: usize,
    hub_up: bool,
    observed: String,
    last_error: Option<String>,
    recent: Vec<AuditRow>,
    talkers: Vec<Talker>,
    drops: Vec<Drop>,
    invariants: Vec<Invariant>,
    verified: String,
    verified_iso: String,
    operator: bool,
}

/// The invariants panel alone, for htmx's poll (no kernel call: the last observation only).
#[derive(Template)]
#[template(path = "overview.html", block = "invariants")]
struct InvariantsPanel<'a> {
    org: &'a OrgView,
    invariants: Vec<Invariant>,
    verified: String,
    verified_iso: String,
    operator: bool,
}

/// One promise of the hub as the last observation showed it.
struct Invariant {
    label: &'static str,
    word: &'static str,
    class: &'static str,
    last_failed: String,
    last_failed_iso: String,
    detail: String,
}

fn invariant_rows(inv: &crate::service::invariants::Invariants) -> Vec<Invariant> {
    let now = Utc::now();
    inv.checks
        .iter()
        .map(|c| {
            let (word, class) = match c.pass {
                Some(true) => ("holds", "st-pass"),
                Some(false) => ("broken", "st-bad"),
                None => ("not verified", "st-bad"),
            };
            Invariant {
                label: c.label,
                word,
                class,
                last_failed: c.last_failed_at.map(|t| ago(t, now)).unwrap_or_default(),
                last_failed_iso: c.last_failed_at.map(iso).unwrap_or_default(),
                detail: c.detail.clone().unwrap_or_default(),
            }
        })
        .collect()
}

/// A machine among the org's busiest since its hub came up (the kernel's byte counters).
struct Talker {
    name: String,
    rx: String,
    tx: String,
}

/// A rule that dropped packets (a deny policy, or the default when it is deny).
struct Drop {
    name: String,
    /// The policy's page; `None` for the default.
    href: Option<String>,
    packets: u64,
    bytes: String,
}

/// How many rows the overview's top lists show.
const TOP: usize = 5;

pub struct AuditRow {
    pub at: String,
    pub at_iso: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

pub fn audit_rows(records: Vec<crate::db::audit::Record>) -> Vec<AuditRow> {
    let now = Utc::now();
    records
        .into_iter()
        .map(|r| AuditRow {
            at: ago(r.at, now),
            at_iso: iso(r.at),
            actor: r.actor_email.unwrap_or_else(|| "system".into()),
            action: r.action,
            target: format!("{} {}", r.target_type, r.target_id.unwrap_or_default()),
            detail: r.detail.to_string(),
        })
        .collect()
}

pub async fn overview(app: &App, req: &Request, ctx: &Ctx) -> Result<Response, ApiError> {
    let org = orgs::get(app, ctx).await?;
    let now = Utc::now();
    let inv = crate::service::invariants::invariants(app, ctx).await?;
    let operator = ctx.role() == crate::db::users::Role::Operator;
    if is_htmx(req) {
        let panel = InvariantsPanel {
            org: &org,
            invariants: invariant_rows(&inv),
            verified: inv.verified_at.map(|t| ago(t, now)).unwrap_or_default(),
            verified_iso: inv.verified_at.map(iso).unwrap_or_default(),
            operator,
        };
        return Ok(fragment(req, &panel));
    }
    let model = machines::model(app, ctx).await?;
    let (mut online, mut idle, mut never, mut stale) = (0, 0, 0, 0);
    for m in &model.machines {
        let last = m.stats.as_ref().and_then(|s| s.last_handshake_at);
        match Presence::of(last, now) {
            Presence::Online => online += 1,
            Presence::Idle => idle += 1,
            Presence::Never => never += 1,
            Presence::Stale => stale += 1,
        }
    }
    let st = status::status(app, ctx).await.ok();
    let mut talkers: Vec<&crate::service::views::PeerView> = st
        .as_ref()
        .map(|s| {
            s.peers
                .views
                .iter()
                .filter(|p| p.rx_bytes + p.tx_bytes > 0)
                .collect()
        })
        .unwrap_or_default();
    talkers.sort_by_key(|p| std::cmp::Reverse(p.rx_bytes + p.tx_bytes));
    let talkers = talkers
        .into_iter()
        .take(TOP)
        .map(|p| Talker {
            name: p
                .name
                .clone()
                .unwrap_or_else(|| format!("key {}…", &p.public_key[..8])),
            rx: bytes(p.rx_bytes),
            tx: bytes(p.tx_bytes),
        })
        .collect();
    let all = policies::list(app, ctx, policies::page(Some("1000"), None)?).await?;
    let mut drops: Vec<Drop> = all
        .items
        .iter()
        .filter(|p| p.policy.action == Verdict::Deny && p.packets > 0)
        .map(|p| Drop {
            name: if p.policy.name.is_empty() {
                format!("unnamed deny, priority {}", p.policy.priority)
            } else {
                p.policy.name.clone()
            },
            href: Some(format!("/orgs/{}/policies/{}", org.id, p.policy.id)),
            packets: p.packets,
            bytes: bytes(p.bytes),
        })
        .collect();
    if org.default_action == Verdict::Deny
        && let Some(d) = st
            .as_ref()
            .and_then(|s| s.rules.iter().find(|r| r.kind == "default"))
            .filter(|d| d.packets > 0)
    {
        drops.push(Drop {
            name: "default (deny)".into(),
            href: None,
            packets: d.packets,
            bytes: bytes(d.bytes),
        });
    }
    drops.sort_by_key(|d| std::cmp::Reverse(d.packets));
    drops.truncate(TOP);
    let q = AuditQuery::parse(Some("10"), None, None)?;
    let recent = audit_rows(audit::list(app, ctx, q).await?.items);
    let page = Overview {
        operator,
        invariants: invariant_rows(&inv),
        verified: inv.verified_at.map(|t| ago(t, now)).unwrap_or_default(),
        verified_iso: inv.verified_at.map(iso).unwrap_or_default(),
        chrome: Chrome::of(req, ctx, Some(org.clone()), "Overview"),
        org,
        online,
        idle,
        never,
        stale,
        hub_up: st.as_ref().is_some_and(|s| s.hub.up),
        observed: st
            .as_ref()
            .map(|s| ago(s.observed_at, now))
            .unwrap_or_default(),
        last_error: st.and_then(|s| s.last_error),
        recent,
        talkers,
        drops,
    };
    Ok(html(StatusCode::OK, &page, true))
}

#[derive(Template)]
#[template(path = "unconfirmed.html")]
struct Unconfirmed {
    o: OrgView,
    at: i64,
}

#[derive(Template)]
#[template(path = "confirmed.html")]
struct Confirmed;

/// The amber banner's poll: the banner again while no reconcile after the change (`at`, Unix
/// ms) has succeeded, else the confirmation (which polls no more).
pub async fn confirmed(app: &App, req: &Request, ctx: &Ctx) -> Result<Response, ApiError> {
    let o = orgs::get(app, ctx).await?;
    let at: i64 = req
        .query_param("at")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let st = status::status(app, ctx).await?;
    if st.last_error.is_none() && st.hub.up && st.observed_at.timestamp_millis() >= at {
        return Ok(fragment(req, &Confirmed));
    }
    Ok(fragment(req, &Unconfirmed { o, at }))
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage<'a> {
    chrome: Chrome,
    org_id: String,
    users: Vec<crate::service::views::UserView>,
    next: Option<String>,
    error: Option<String>,
    email: &'a str,
}

pub async fn users(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    failed: Option<(&ApiError, &Form)>,
) -> Result<Response, ApiError> {
    let org = orgs::get(app, ctx).await?;
    let want = users::page(None, req.query_param("cursor"))?;
    let list = users::list(app, ctx, want).await?;
    let page = UsersPage {
        org_id: org.id.to_string(),
        chrome: Chrome::of(req, ctx, Some(org), "Users"),
        users: list.items,
        next: list.next_cursor,
        error: failed.map(|(e, _)| e.message.clone()),
        email: failed.map_or("", |(_, f)| f.text("email")),
    };
    let status = failed.map_or(StatusCode::OK, |(e, _)| e.status);
    Ok(html(status, &page, true))
}

pub async fn user_create(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    form: &Form,
) -> Result<Response, ApiError> {
    let input = users::UserCreate {
        email: form.text("email").to_string(),
        password: Secret::new(form.text("password").to_string()),
        role: form.text("role").to_string(),
    };
    match users::create(app, ctx, input).await {
        Ok(_) => Ok(redirect(&format!("/orgs/{}/users", ctx.org()))),
        Err(e) if matches!(e.status.as_u16(), 400 | 409) => {
            users(app, req, ctx, Some((&e, form))).await
        }
        Err(e) => Err(e),
    }
}

pub async fn user_delete(app: &App, ctx: &Ctx) -> Result<Response, ApiError> {
    users::delete(app, ctx).await?;
    Ok(redirect(&format!("/orgs/{}/users", ctx.org())))
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    org_id: String,
    rows: Vec<AuditRow>,
    action: String,
    actor: String,
    target: String,
    next: Option<String>,
    csv: String,
    jsonl: String,
}

/// The audit page's filter from the query string: (action, actor, target, cursor).
pub(super) fn audit_params(req: &Request) -> Result<[String; 4], ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&req.query)
        .map_err(|_| ApiError::bad_request("the query string could not be read"))?;
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map_or_else(String::new, |(_, v)| v.clone())
    };
    Ok([get("action"), get("actor"), get("target"), get("cursor")])
}

pub(super) fn audit_query(limit: &str, p: &[String; 4]) -> Result<AuditQuery, ApiError> {
    let cursor = (!p[3].is_empty()).then_some(p[3].as_str());
    AuditQuery::parse(Some(limit), cursor, None)?.filtered(Some(&p[0]), Some(&p[1]), Some(&p[2]))
}

fn audit_link(base: &str, p: &[String; 4], cursor: Option<&str>) -> String {
    let mut pairs: Vec<(&str, &str)> = [("action", &p[0]), ("actor", &p[1]), ("target", &p[2])]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, v.as_str()))
        .collect();
    if let Some(c) = cursor {
        pairs.push(("cursor", c));
    }
    match serde_urlencoded::to_string(&pairs) {
        Ok(q) if !q.is_empty() => format!("{base}?{q}"),
        _ => base.to_string(),
    }
}

pub async fn audit(app: &App, req: &Request, ctx: &Ctx) -> Result<Response, ApiError> {
    let org = orgs::get(app, ctx).await?;
    let p = audit_params(req)?;
    let list = audit::list(app, ctx, audit_query("50", &p)?).await?;
    let base = format!("/orgs/{}/audit", org.id);
    let [action, actor, target, _] = p.clone();
    let page = AuditPage {
        org_id: org.id.to_string(),
        chrome: Chrome::of(req, ctx, Some(org), "Audit"),
        rows: audit_rows(list.items),
        next: list
            .next_cursor
            .as_deref()
            .map(|c| audit_link(&base, &p, Some(c))),
        csv: audit_link(&format!("{base}/export.csv"), &p, None),
        jsonl: audit_link(&format!("{base}/export.jsonl"), &p, None),
        action,
        actor,
        target,
    };
    Ok(html(StatusCode::OK, &page, true))
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    chrome: Chrome,
    org: OrgView,
    endpoint: String,
    error: Option<String>,
}

pub async fn settings(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    failed: Option<&ApiError>,
) -> Result<Response, ApiError> {
    let org = orgs::get(app, ctx).await?;
    let page = SettingsPage {
        chrome: Chrome::of(req, ctx, Some(org.clone()), "Settings"),
        endpoint: format!("{}:{}", app.config.public_endpoint, org.listen_port),
        org,
        error: failed.map(|e| e.message.clone()),
    };
    let status = failed.map_or(StatusCode::OK, |e| e.status);
    Ok(html(status, &page, true))
}

pub async fn settings_update(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    form: &Form,
) -> Result<Response, ApiError> {
    let default_action = match form.get("default_action") {
        None => None,
        Some(v) => Some(
            crate::policy::Verdict::parse(v)
                .ok_or_else(|| ApiError::invalid("default_action", "must be allow or deny"))?,
        ),
    };
    let input = orgs::OrgPatch {
        name: form.get("name").map(str::to_string),
        default_action,
    };
    let to = format!("/orgs/{}/settings", ctx.org());
    match orgs::update(app, ctx, input).await {
        Err(e) if e.status == StatusCode::BAD_REQUEST => settings(app, req, ctx, Some(&e)).await,
        result => after_change(result.map(drop), &to),
    }
}

/// `POST /orgs/{org}/delete` (operator): the name must be typed.
pub async fn delete(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    form: &Form,
) -> Result<Response, ApiError> {
    let org = orgs::get(app, ctx).await?;
    if form.text("confirm") != org.name {
        let e = ApiError::invalid("confirm", "type the organisation's name to delete it");
        return settings(app, req, ctx, Some(&e)).await;
    }
    orgs::delete(app, ctx).await?;
    Ok(redirect("/operator"))
}
