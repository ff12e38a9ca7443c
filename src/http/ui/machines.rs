//! An org's machines: the list (status words, paging, live refresh), adding one (its config
//! shown once), one machine's page (rename, tags, delete).

use super::fmt::{ago, bytes, iso};
use super::form::{Form, tags};
use super::page::{Chrome, after_change, html, secret_html};
use crate::http::error::ApiError;
use crate::http::{App, Request, Response};
use crate::service::views::{MachineView, OrgView, Presence};
use crate::service::{Ctx, machines, orgs};
use askama::Template;
use base64::Engine;
use chrono::{DateTime, Utc};
use warp::http::StatusCode;

/// A machine as a row or a detail page shows it.
pub struct Row {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub address: String,
    pub public_key: String,
    pub status: &'static str,
    pub status_class: &'static str,
    pub seen: String,
    pub seen_iso: String,
    pub endpoint: String,
    pub rx: String,
    pub tx: String,
    pub created: String,
}

impl Row {
    pub fn of(m: &MachineView, now: DateTime<Utc>) -> Row {
        let stats = m.stats.clone().unwrap_or_default();
        let last = stats.last_handshake_at;
        let presence = Presence::of(last, now);
        Row {
            id: m.id.to_string(),
            name: m.name.clone(),
            tags: m.tags.clone(),
            address: m.address.to_string(),
            public_key: m.public_key.clone(),
            status: presence.word(),
            status_class: presence.class(),
            seen: last.map(|t| ago(t, now)).unwrap_or_default(),
            seen_iso: last.map(iso).unwrap_or_default(),
            endpoint: stats.endpoint.unwrap_or_default(),
            rx: stats.rx_bytes.map(bytes).unwrap_or_default(),
            tx: stats.tx_bytes.map(bytes).unwrap_or_default(),
            created: m.created_at.format("%Y-%m-%d").to_string(),
        }
    }
}

#[derive(Template)]
#[template(path = "machines.html")]
struct ListPage {
    chrome: Chrome,
    org: OrgView,
    rows: Vec<Row>,
    next: Option<String>,
    here: String,
}

pub async fn list(app: &App, req: &Request, ctx: &Ctx) -> Result<Response, ApiError> {
    let org = orgs::get(app, ctx).await?;
    let want = machines::page(Some("100"), req.query_param("cursor"))?;
    let page = machines::list(app, ctx, want).await?;
    let now = Utc::now();
    let here = match req.query.is_empty() {
        true => req.path.clone(),
        false => format!("{}?{}", req.path, req.query),
    };
    let page = ListPage {
        chrome: Chrome::of(req, ctx, Some(org.clone()), "Machines"),
        org,
        rows: page.items.iter().map(|m| Row::of(m, now)).collect(),
        next: page.next_cursor,
        here,
    };
    Ok(html(StatusCode::OK, &page, true))
}

#[derive(Template)]
#[template(path = "machine_new.html")]
struct NewPage<'a> {
    chrome: Chrome,
    org: OrgView,
    error: Option<String>,
    name: &'a str,
    tags: &'a str,
    public_key: &'a str,
}

pub async fn new(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    failed: Option<(&ApiError, &Form)>,
) -> Result<Response, ApiError> {
    let org = orgs::get(app, ctx).await?;
    let page = NewPage {
        chrome: Chrome::of(req, ctx, Some(org.clone()), "Machines"),
        org,
        error: failed.map(|(e, _)| e.message.clone()),
        name: failed.map_or("", |(_, f)| f.text("name")),
        tags: failed.map_or("", |(_, f)| f.text("tags")),
        public_key: failed.map_or("", |(_, f)| f.text("public_key")),
    };
    let status = failed.map_or(StatusCode::OK, |(e, _)| e.status);
    Ok(html(status, &page, true))
}

/// The config page: shown once, in the answer to the form (never at a URL of its own), not
/// stored (`no-store`), and removed from the DOM when left (`app.js`).
#[derive(Template)]
#[template(path = "machine_created.html")]
struct CreatedPage<'a> {
    chrome: Chrome,
    org: OrgView,
    machine: Row,
    config: &'a str,
    config_data_url: String,
    qr_svg: &'a str,
    file_name: String,
}

pub async fn create(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    form: &Form,
) -> Result<Response, ApiError> {
    let key = form.text("public_key").trim();
    let input = machines::MachineCreate {
        name: form.text("name").to_string(),
        public_key: (!key.is_empty()).then(|| key.to_string()),
        tags: tags(form.text("tags")),
    };
    let created = match machines::create(app, ctx, input).await {
        Ok(c) => c,
        Err(e) if matches!(e.status.as_u16(), 400 | 409) => {
            return new(app, req, ctx, Some((&e, form))).await;
        }
        Err(e) => return Err(e),
    };
    let org = orgs::get(app, ctx).await?;
    let config = created.config.expose();
    let encoded = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD.encode(config.as_bytes()),
    );
    let page = CreatedPage {
        chrome: Chrome::of(req, ctx, Some(org.clone()), "Machines"),
        org,
        machine: Row::of(&created.machine, Utc::now()),
        config,
        config_data_url: format!("data:text/plain;charset=utf-8;base64,{}", encoded.as_str()),
        qr_svg: created.config_qr_svg.expose(),
        file_name: format!("{}.conf", created.machine.name),
    };
    let resp = secret_html(StatusCode::CREATED, &page);
    zeroize::Zeroize::zeroize(&mut { page.config_data_url });
    Ok(resp)
}

#[derive(Template)]
#[template(path = "machine.html")]
struct DetailPage {
    chrome: Chrome,
    org: OrgView,
    m: Row,
    error: Option<String>,
}

pub async fn detail(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    failed: Option<&ApiError>,
) -> Result<Response, ApiError> {
    let org = orgs::get(app, ctx).await?;
    let m = machines::get(app, ctx).await?;
    let page = DetailPage {
        chrome: Chrome::of(req, ctx, Some(org.clone()), "Machines"),
        org,
        m: Row::of(&m, Utc::now()),
        error: failed.map(|e| e.message.clone()),
    };
    let status = failed.map_or(StatusCode::OK, |e| e.status);
    Ok(html(status, &page, true))
}

/// `POST …/machines/{id}`: rename and retag.
pub async fn update(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    form: &Form,
) -> Result<Response, ApiError> {
    let input = machines::MachinePatch {
        name: form.get("name").map(str::to_string),
        tags: form.get("tags").map(tags),
    };
    let to = format!("/orgs/{}/machines/{}", ctx.org(), ctx.id());
    match machines::update(app, ctx, input).await {
        Ok(_) => after_change(Ok(()), &to),
        Err(e) if e.code == "not_confirmed" => after_change(Err(e), &to),
        Err(e) if e.status == StatusCode::BAD_REQUEST => detail(app, req, ctx, Some(&e)).await,
        Err(e) => Err(e),
    }
}

/// `POST …/machines/{id}/delete`: the machine's name must be typed.
pub async fn delete(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    form: &Form,
) -> Result<Response, ApiError> {
    let m = machines::get(app, ctx).await?;
    if form.text("confirm") != m.name {
        let e = ApiError::invalid("confirm", "type the machine's name to delete it");
        return detail(app, req, ctx, Some(&e)).await;
    }
    let to = format!("/orgs/{}/machines", ctx.org());
    after_change(machines::delete(app, ctx).await, &to)
}
