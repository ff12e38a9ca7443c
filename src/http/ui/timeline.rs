//! An org's timeline: the reconciler's repairs, failures and restarts among the audit log's
//! changes, newest first; refreshed every 5 s on the first page.

use super::fmt::{ago, iso};
use super::page::{Chrome, fragment, html, is_htmx};
use crate::http::error::ApiError;
use crate::http::{App, Request, Response};
use crate::service::timeline::{self, TimelineQuery};
use crate::service::{Ctx, orgs};
use askama::Template;
use chrono::Utc;
use warp::http::StatusCode;

pub struct Row {
    pub at: String,
    pub at_iso: String,
    /// `repair`, `failure`, `restart`, or the audit action.
    pub kind: String,
    pub kind_class: &'static str,
    pub who: String,
    pub summary: String,
    pub count: i32,
    pub took: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "timeline.html")]
struct TimelinePage {
    chrome: Chrome,
    rows: Vec<Row>,
    here: String,
    live: bool,
    older: Option<String>,
}

#[derive(Template)]
#[template(path = "timeline.html", block = "table")]
struct TimelineTable<'a> {
    rows: &'a [Row],
    here: &'a str,
    live: bool,
}

pub async fn page(app: &App, req: &Request, ctx: &Ctx) -> Result<Response, ApiError> {
    let org = orgs::get(app, ctx).await?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&req.query)
        .map_err(|_| ApiError::bad_request("the query string could not be read"))?;
    let before = pairs
        .into_iter()
        .find(|(k, _)| k == "before")
        .map(|(_, v)| v);
    let q = TimelineQuery::parse(Some("100"), before.as_deref())?;
    let live = q.before.is_none();
    let list = timeline::list(app, ctx, q).await?;
    let now = Utc::now();
    let rows: Vec<Row> = list
        .entries
        .iter()
        .map(|e| Row {
            at: ago(e.at, now),
            at_iso: iso(e.at),
            kind_class: match e.kind.as_str() {
                "failure" => "st-bad",
                "repair" | "restart" => "st-warn",
                _ => "",
            },
            kind: e.kind.clone(),
            who: e.actor.clone().unwrap_or_else(|| "reconciler".into()),
            summary: e.summary.clone(),
            count: e.count,
            took: e
                .duration_ms
                .map(|ms| format!("{ms} ms"))
                .unwrap_or_default(),
            detail: match &e.detail {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => String::new(),
            },
        })
        .collect();
    let base = format!("/orgs/{}/timeline", org.id);
    let older = list.next_cursor.map(|c| {
        let q = serde_urlencoded::to_string([("before", c.as_str())]).unwrap_or_default();
        format!("{base}?{q}")
    });
    if is_htmx(req) {
        let here = base.clone();
        return Ok(fragment(
            req,
            &TimelineTable {
                rows: &rows,
                here: &here,
                live,
            },
        ));
    }
    let page = TimelinePage {
        chrome: Chrome::of(req, ctx, Some(org), "Timeline"),
        rows,
        here: base,
        live,
        older,
    };
    Ok(html(StatusCode::OK, &page, true))
}
