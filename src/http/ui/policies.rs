//! An org's policies in evaluation order, ending with the implicit rows (established replies,
//! the default action), each with the kernel's packet and byte counters; the enable switch and
//! the create form.

use super::fmt::bytes;
use super::form::Form;
use super::page::{Chrome, after_change, fragment, html, is_htmx, redirect};
use crate::http::error::ApiError;
use crate::http::{App, Request, Response};
use crate::overlay::Ipv4Cidr;
use crate::policy::{PortRange, Protocol, Selector, Verdict};
use crate::service::views::{MachineView, OrgView};
use crate::service::{Ctx, machines, orgs, policies, preview, status};
use askama::Template;
use std::collections::{BTreeSet, HashMap};
use uuid::Uuid;
use warp::http::StatusCode;

pub struct Row {
    pub id: String,
    pub number: String,
    pub name: String,
    pub action: &'static str,
    pub src: String,
    pub dst: String,
    pub protocol: &'static str,
    pub ports: String,
    pub enabled: bool,
    pub implicit: bool,
    pub first: bool,
    pub last: bool,
    pub packets: u64,
    pub bytes: String,
    /// The static analysis' badge ("shadowed by #3"), empty when it has nothing to say.
    pub finding: String,
    /// The last 30 min of packets, and "last hit 12 s ago" / "never hit since …".
    pub spark: Option<super::spark::Spark>,
    pub hit: String,
}

/// What the policy form shows: a policy's fields as form values (or what was typed).
pub struct Fields {
    /// The policy being edited (empty on the new-policy form).
    pub id: String,
    pub name: String,
    pub action: String,
    pub src: String,
    pub dst: String,
    pub src_other: String,
    pub dst_other: String,
    pub protocol: String,
    pub ports: String,
    pub priority: String,
}

/// A selector as the form's picker value and free-text field.
fn picked(s: &Selector) -> (String, String) {
    match s {
        Selector::Any => ("any".into(), String::new()),
        Selector::Machine(id) => (format!("machine:{id}"), String::new()),
        Selector::Tag(t) => (format!("tag:{t}"), String::new()),
        Selector::Cidr(c) => ("any".into(), c.to_string()),
    }
}

impl Fields {
    fn blank() -> Fields {
        Fields {
            id: String::new(),
            name: String::new(),
            action: "allow".into(),
            src: "any".into(),
            dst: "any".into(),
            src_other: String::new(),
            dst_other: String::new(),
            protocol: "any".into(),
            ports: String::new(),
            priority: String::new(),
        }
    }

    fn of(p: &crate::policy::Policy) -> Fields {
        let (src, src_other) = picked(&p.src);
        let (dst, dst_other) = picked(&p.dst);
        Fields {
            id: p.id.to_string(),
            name: p.name.clone(),
            action: p.action.as_str().into(),
            src,
            dst,
            src_other,
            dst_other,
            protocol: p.protocol.as_str().into(),
            ports: p.ports.map(|r| r.to_string()).unwrap_or_default(),
            priority: p.priority.to_string(),
        }
    }

    /// A new policy pre-filled from the query (`?prefill=1&action=…`: Explain's fix link);
    /// only shown in the form, checked like anything typed when it is submitted.
    fn prefilled(req: &Request) -> Option<Fields> {
        if req.query_param("prefill") != Some("1") {
            return None;
        }
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&req.query).ok()?;
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        Some(Fields {
            id: String::new(),
            name: get("name"),
            action: get("action"),
            src: get("src"),
            dst: get("dst"),
            src_other: get("src_other"),
            dst_other: get("dst_other"),
            protocol: get("protocol"),
            ports: get("ports"),
            priority: get("priority"),
        })
    }

    fn typed(f: &Form) -> Fields {
        let t = |k: &str| f.text(k).to_string();
        Fields {
            id: t("id"),
            name: t("name"),
            action: t("action"),
            src: t("src"),
            dst: t("dst"),
            src_other: t("src_other"),
            dst_other: t("dst_other"),
            protocol: t("protocol"),
            ports: t("ports"),
            priority: t("priority"),
        }
    }
}

/// A choice of the src/dst pickers: its form value and its label.
pub struct Choice {
    pub value: String,
    pub label: String,
}

/// The table alone, for htmx's poll.
#[derive(Template)]
#[template(path = "policies.html", block = "table")]
struct PoliciesTable<'a> {
    chrome: &'a Chrome,
    org: &'a OrgView,
    rows: &'a [Row],
}

#[derive(Template)]
#[template(path = "policies.html")]
struct PoliciesPage {
    chrome: Chrome,
    org: OrgView,
    rows: Vec<Row>,
    /// False when the org was too large for the static analysis (no badges then).
    analysed: bool,
    choices: Vec<Choice>,
    error: Option<String>,
    f: Fields,
    form_action: String,
    submit: &'static str,
}

fn describe(s: &Selector, names: &HashMap<Uuid, String>) -> String {
    match s {
        Selector::Any => "any".into(),
        Selector::Machine(id) => names
            .get(id)
            .map_or_else(|| format!("machine {id}"), |n| format!("machine {n}")),
        Selector::Tag(t) => format!("tag {t}"),
        Selector::Cidr(c) => c.to_string(),
    }
}

/// A picker's value as a selector: `any`, `machine:<id>`, `tag:<tag>` or a CIDR. What it
/// selects is for the operation to check.
fn selector(field: &str, value: &str) -> Result<Selector, ApiError> {
    let value = value.trim();
    if value == "any" || value.is_empty() {
        return Ok(Selector::Any);
    }
    if let Some(id) = value.strip_prefix("machine:") {
        let id = Uuid::parse_str(id).map_err(|_| ApiError::invalid(field, "no such machine"))?;
        return Ok(Selector::Machine(id));
    }
    if let Some(tag) = value.strip_prefix("tag:") {
        return Ok(Selector::Tag(tag.to_string()));
    }
    value
        .parse::<Ipv4Cidr>()
        .map(Selector::Cidr)
        .map_err(|_| ApiError::invalid(field, "any, a machine, tag:NAME or a CIDR"))
}

pub async fn list(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    failed: Option<(&ApiError, &Form)>,
) -> Result<Response, ApiError> {
    let org = orgs::get(app, ctx).await?;
    let all = policies::list(app, ctx, policies::page(Some("1000"), None)?).await?;
    let machines: Vec<MachineView> = machines::model(app, ctx).await?.machines.clone();
    let names: HashMap<Uuid, String> = machines.iter().map(|m| (m.id, m.name.clone())).collect();
    let analysis = preview::analysis(app, ctx).await?;
    // No history (no observation yet): rows without sparklines.
    let history = status::history(app, ctx).await.ok();
    let now = chrono::Utc::now();
    let hist = |key: &str| match &history {
        Some(h) => super::spark::policy(h, h.policy(key), now),
        None => (None, String::new()),
    };
    let count = all.items.len();
    let mut rows: Vec<Row> = all
        .items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let p = &v.policy;
            let (spark, hit) = hist(&p.id.to_string());
            Row {
                id: p.id.to_string(),
                number: (i + 1).to_string(),
                name: p.name.clone(),
                action: p.action.as_str(),
                src: describe(&p.src, &names),
                dst: describe(&p.dst, &names),
                protocol: p.protocol.as_str(),
                ports: p.ports.map(|r| r.to_string()).unwrap_or_default(),
                enabled: p.enabled,
                implicit: false,
                first: i == 0,
                last: i + 1 == count,
                packets: v.packets,
                bytes: bytes(v.bytes),
                finding: analysis.of(p.id).map(|f| f.badge()).unwrap_or_default(),
                spark,
                hit,
            }
        })
        .collect();
    // The implicit rows, as the kernel counts them.
    let rules = status::status(app, ctx)
        .await
        .map(|s| s.rules)
        .unwrap_or_default();
    let counted = |kind: &str| {
        rules
            .iter()
            .find(|r| r.kind == kind)
            .map_or((0, 0), |r| (r.packets, r.bytes))
    };
    let implicit = |name: &str, kind: &str, action: &'static str, (packets, b): (u64, u64)| {
        let (spark, hit) = hist(kind);
        Row {
            id: String::new(),
            number: "—".into(),
            name: name.into(),
            action,
            src: "any".into(),
            dst: "any".into(),
            protocol: "any",
            ports: String::new(),
            enabled: true,
            implicit: true,
            first: false,
            last: false,
            packets,
            bytes: bytes(b),
            finding: String::new(),
            spark,
            hit,
        }
    };
    if org.default_action == Verdict::Deny {
        rows.push(implicit(
            "replies (established, related)",
            "established",
            "allow",
            counted("established"),
        ));
    }
    rows.push(implicit(
        "default",
        "default",
        org.default_action.as_str(),
        counted("default"),
    ));
    let choices = choices(&machines);
    let page = PoliciesPage {
        chrome: Chrome::of(req, ctx, Some(org.clone()), "Policies"),
        form_action: format!("/orgs/{}/policies", org.id),
        org,
        rows,
        analysed: analysis.complete,
        choices,
        error: failed.map(|(e, _)| e.message.clone()),
        f: failed.map_or_else(
            || Fields::prefilled(req).unwrap_or_else(Fields::blank),
            |(_, f)| Fields::typed(f),
        ),
        submit: "Create policy",
    };
    if is_htmx(req) && failed.is_none() {
        let table = PoliciesTable {
            chrome: &page.chrome,
            org: &page.org,
            rows: &page.rows,
        };
        return Ok(fragment(req, &table));
    }
    let status = failed.map_or(StatusCode::OK, |(e, _)| e.status);
    Ok(html(status, &page, true))
}

/// The pickers' choices: any machine, each machine, each tag in use.
fn choices(machines: &[MachineView]) -> Vec<Choice> {
    let tags: BTreeSet<&String> = machines.iter().flat_map(|m| &m.tags).collect();
    let mut choices = vec![Choice {
        value: "any".into(),
        label: "any machine".into(),
    }];
    choices.extend(machines.iter().map(|m| Choice {
        value: format!("machine:{}", m.id),
        label: format!("machine {} ({})", m.name, m.address),
    }));
    choices.extend(tags.into_iter().map(|t| Choice {
        value: format!("tag:{t}"),
        label: format!("tag {t}"),
    }));
    choices
}

#[derive(Template)]
#[template(path = "policy.html")]
struct PolicyPage {
    chrome: Chrome,
    org: OrgView,
    number: usize,
    /// The static analysis' badge, empty when it has nothing to say.
    finding: String,
    packets: u64,
    bytes: String,
    src_text: String,
    dst_text: String,
    choices: Vec<Choice>,
    error: Option<String>,
    f: Fields,
    form_action: String,
    submit: &'static str,
}

/// `GET …/policies/{id}`: one policy, its counters, and (for writers) its form.
pub async fn detail(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    failed: Option<(&ApiError, &Form)>,
) -> Result<Response, ApiError> {
    let org = orgs::get(app, ctx).await?;
    let v = policies::get(app, ctx).await?;
    let all = policies::list(app, ctx, policies::page(Some("1000"), None)?).await?;
    let number = all
        .items
        .iter()
        .position(|p| p.policy.id == v.policy.id)
        .map_or(0, |i| i + 1);
    let machines: Vec<MachineView> = machines::model(app, ctx).await?.machines.clone();
    let names: HashMap<Uuid, String> = machines.iter().map(|m| (m.id, m.name.clone())).collect();
    let analysis = preview::analysis(app, ctx).await?;
    let page = PolicyPage {
        chrome: Chrome::of(req, ctx, Some(org.clone()), "Policies"),
        form_action: format!("/orgs/{}/policies/{}", org.id, v.policy.id),
        org,
        number,
        finding: analysis
            .of(v.policy.id)
            .map(|f| f.badge())
            .unwrap_or_default(),
        packets: v.packets,
        bytes: bytes(v.bytes),
        src_text: describe(&v.policy.src, &names),
        dst_text: describe(&v.policy.dst, &names),
        choices: choices(&machines),
        error: failed.map(|(e, _)| e.message.clone()),
        f: failed.map_or_else(|| Fields::of(&v.policy), |(_, f)| Fields::typed(f)),
        submit: "Save policy",
    };
    let status = failed.map_or(StatusCode::OK, |(e, _)| e.status);
    Ok(html(status, &page, true))
}

/// `POST …/policies/{id}`: every field of the form; the operation checks them.
pub async fn update(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    form: &Form,
) -> Result<Response, ApiError> {
    let to = format!("/orgs/{}/policies", ctx.org());
    let result = match edit_input(form) {
        Ok(input) => policies::update(app, ctx, input).await.map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.status == StatusCode::BAD_REQUEST => {
            detail(app, req, ctx, Some((&e, form))).await
        }
        r => after_change(r, &to),
    }
}

/// The picker, unless the free-text field next to it says otherwise.
fn side(form: &Form, field: &str) -> Result<Selector, ApiError> {
    let other = form.text(&format!("{field}_other"));
    let value = if other.trim().is_empty() {
        form.text(field)
    } else {
        other
    };
    selector(field, value)
}

/// Every field of the edit form, as an update that sets them all (except enabled).
pub(super) fn edit_input(form: &Form) -> Result<policies::PolicyPatch, ApiError> {
    let c = create_input(form)?;
    Ok(policies::PolicyPatch {
        name: Some(c.name.unwrap_or_default()),
        priority: c.priority,
        action: Some(c.action),
        src: Some(c.src),
        dst: Some(c.dst),
        protocol: c.protocol,
        ports: Some(c.ports),
        enabled: None,
    })
}

pub(super) fn create_input(form: &Form) -> Result<policies::PolicyCreate, ApiError> {
    let action = Verdict::parse(form.text("action"))
        .ok_or_else(|| ApiError::invalid("action", "must be allow or deny"))?;
    let protocol = Protocol::parse(form.get("protocol").unwrap_or("any"))
        .ok_or_else(|| ApiError::invalid("protocol", "any, tcp, udp or icmp"))?;
    let ports = match form.text("ports").trim() {
        "" => None,
        p => Some(
            p.parse::<PortRange>()
                .map_err(|e| ApiError::invalid("ports", e))?,
        ),
    };
    let priority = match form.text("priority").trim() {
        "" => None,
        p => Some(
            p.parse::<i32>()
                .map_err(|_| ApiError::invalid("priority", "must be a number"))?,
        ),
    };
    let name = form.text("name").trim();
    Ok(policies::PolicyCreate {
        name: (!name.is_empty()).then(|| name.to_string()),
        priority,
        action,
        src: side(form, "src")?,
        dst: side(form, "dst")?,
        protocol: Some(protocol),
        ports,
        enabled: Some(true),
    })
}

pub async fn create(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    form: &Form,
) -> Result<Response, ApiError> {
    let to = format!("/orgs/{}/policies", ctx.org());
    let result = match create_input(form) {
        Ok(input) => policies::create(app, ctx, input).await.map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.status == StatusCode::BAD_REQUEST => {
            list(app, req, ctx, Some((&e, form))).await
        }
        r => after_change(r, &to),
    }
}

/// `POST …/policies/{id}/enabled`: the switch.
pub async fn enabled(app: &App, ctx: &Ctx, form: &Form) -> Result<Response, ApiError> {
    let input = policies::PolicyPatch {
        name: None,
        priority: None,
        action: None,
        src: None,
        dst: None,
        protocol: None,
        ports: None,
        enabled: Some(form.text("enabled") == "true"),
    };
    let to = format!("/orgs/{}/policies", ctx.org());
    after_change(policies::update(app, ctx, input).await.map(|_| ()), &to)
}

/// `POST …/policies/{id}/move`: one place up or down.
pub async fn reorder(app: &App, ctx: &Ctx, form: &Form) -> Result<Response, ApiError> {
    let way = match form.text("way") {
        "up" => policies::Move::Up,
        "down" => policies::Move::Down,
        _ => return Err(ApiError::invalid("way", "up or down")),
    };
    let to = format!("/orgs/{}/policies", ctx.org());
    after_change(policies::reorder(app, ctx, way).await, &to)
}

pub async fn delete(app: &App, ctx: &Ctx) -> Result<Response, ApiError> {
    policies::delete(app, ctx).await?;
    Ok(redirect(&format!("/orgs/{}/policies", ctx.org())))
}
