//! `/operator`: every org with its hub and reconciler state, and the create-org form.

use super::fmt::{ago, iso};
use super::form::Form;
use super::page::{Chrome, html, redirect};
use crate::http::error::ApiError;
use crate::http::{App, Request, Response};
use crate::service::{Ctx, console, orgs};
use askama::Template;
use chrono::Utc;
use warp::http::StatusCode;

pub struct Row {
    pub id: String,
    pub name: String,
    pub state: &'static str,
    pub active: bool,
    pub deleting: bool,
    pub cidr: String,
    pub hub: &'static str,
    pub port: u16,
    pub machines: String,
    pub reconciled: String,
    pub reconciled_iso: String,
    pub repairs: u64,
    pub restarts: u64,
    pub last_error: String,
}

#[derive(Template)]
#[template(path = "operator.html")]
struct OperatorPage<'a> {
    chrome: Chrome,
    rows: Vec<Row>,
    host: console::Host,
    database: String,
    error: Option<String>,
    name: &'a str,
    cidr: &'a str,
}

pub async fn page(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    failed: Option<(&ApiError, &Form)>,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    let rows = console::orgs(app, ctx)
        .await?
        .into_iter()
        .map(|s| Row {
            id: s.org.id.to_string(),
            active: s.org.state == "active",
            name: s.org.name,
            deleting: s.org.state == "deleting",
            state: s.org.state,
            cidr: s.org.cidr,
            hub: match s.hub_up {
                Some(true) => "up",
                Some(false) => "down",
                None => "unknown",
            },
            port: s.org.listen_port,
            machines: format!("{} / {}", s.machines_online, s.machines_total),
            reconciled: s.observed_at.map(|t| ago(t, now)).unwrap_or_default(),
            reconciled_iso: s.observed_at.map(iso).unwrap_or_default(),
            repairs: s.repairs,
            restarts: s.restarts,
            last_error: s.last_error.unwrap_or_default(),
        })
        .collect();
    let host = console::host(app, ctx).await?;
    let page = OperatorPage {
        chrome: Chrome::of(req, ctx, None, "Operator"),
        rows,
        database: match host.database {
            Some(d) => format!("reachable ({} ms)", d.as_millis()),
            None => "unreachable".into(),
        },
        host,
        error: failed.map(|(e, _)| e.message.clone()),
        name: failed.map_or("", |(_, f)| f.text("name")),
        cidr: failed.map_or("10.100.0.0/16", |(_, f)| f.text("cidr")),
    };
    let status = failed.map_or(StatusCode::OK, |(e, _)| e.status);
    Ok(html(status, &page, true))
}

/// `POST /operator/orgs`: answered once the org's hub is up.
pub async fn create(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    form: &Form,
) -> Result<Response, ApiError> {
    let cidr = form.text("cidr");
    let input = orgs::OrgCreate {
        name: form.text("name").to_string(),
        cidr: (!cidr.is_empty()).then(|| cidr.to_string()),
        default_action: None,
    };
    match orgs::create(app, ctx, input).await {
        Ok(o) => Ok(redirect(&format!("/orgs/{}", o.id))),
        Err(e) if e.status == StatusCode::BAD_REQUEST || e.status == StatusCode::CONFLICT => {
            page(app, req, ctx, Some((&e, form))).await
        }
        Err(e) => Err(e),
    }
}

/// `POST /operator/orgs/{org}/delete`: retries the deletion of an org left `deleting`.
pub async fn retry_delete(app: &App, ctx: &Ctx) -> Result<Response, ApiError> {
    orgs::delete(app, ctx).await?;
    Ok(redirect("/operator"))
}
