//! `GET /orgs/{org}/matrix`: who can connect to whom for one protocol and port, as a table
//! whose every cell links to Explain for a pair that shows its verdict.

use super::page::{Chrome, html};
use crate::http::error::ApiError;
use crate::http::{App, Request, Response};
use crate::service::matrix::{self, MatrixQuery, MatrixView};
use crate::service::views::OrgView;
use crate::service::{Ctx, orgs};
use askama::Template;
use warp::http::StatusCode;

pub struct CellUi {
    pub class: &'static str,
    pub symbol: &'static str,
    pub word: &'static str,
    /// Explain for the cell's pair (none for a machine to itself).
    pub href: Option<String>,
    pub label: String,
}

pub struct RowUi {
    pub label: String,
    pub cells: Vec<CellUi>,
}

#[derive(Template)]
#[template(path = "matrix.html")]
struct MatrixPage {
    chrome: Chrome,
    org: OrgView,
    proto: String,
    port: String,
    by: String,
    error: Option<String>,
    title: String,
    columns: Vec<String>,
    rows: Vec<RowUi>,
    grouped: bool,
    truncated: bool,
}

fn rows(org: &OrgView, m: &MatrixView) -> Vec<RowUi> {
    let port = m.port.map(|p| format!("&port={p}")).unwrap_or_default();
    m.axis
        .iter()
        .zip(&m.cells)
        .map(|(from, cells)| RowUi {
            label: from.label.clone(),
            cells: m
                .axis
                .iter()
                .zip(cells)
                .map(|(to, c)| {
                    let (class, symbol, word) = match c.verdict {
                        Some("allow") => ("cell-allow", "✓", "allow"),
                        Some("deny") => ("cell-deny", "✗", "deny"),
                        Some(_) => ("cell-mixed", "±", "mixed"),
                        None => ("cell-self", "—", "itself"),
                    };
                    let href = match (c.src, c.dst) {
                        (Some(s), Some(d)) => Some(format!(
                            "/orgs/{}/explain?src={s}&dst={d}&proto={}{port}",
                            org.id, m.proto
                        )),
                        _ => None,
                    };
                    CellUi {
                        class,
                        symbol,
                        word,
                        href,
                        label: format!("{} to {}: {word}; explain", from.label, to.label),
                    }
                })
                .collect(),
        })
        .collect()
}

pub async fn page(app: &App, req: &Request, ctx: &Ctx) -> Result<Response, ApiError> {
    let org = orgs::get(app, ctx).await?;
    let q = MatrixQuery {
        proto: req.query_param("proto"),
        port: req.query_param("port"),
        by: req.query_param("by"),
    };
    let (proto, port, by) = (
        q.proto.unwrap_or("icmp").to_string(),
        q.port.unwrap_or("").to_string(),
        q.by.unwrap_or("machine").to_string(),
    );
    let result = matrix::matrix(app, ctx, q).await;
    let (status, error, m) = match result {
        Ok(m) => (StatusCode::OK, None, Some(m)),
        Err(e) if e.status == StatusCode::BAD_REQUEST => (e.status, Some(e.message), None),
        Err(e) => return Err(e),
    };
    let page = MatrixPage {
        chrome: Chrome::of(req, ctx, Some(org.clone()), "Matrix"),
        title: m.as_ref().map_or_else(String::new, |m| match m.port {
            Some(p) => format!("{}/{p}", m.proto),
            None => m.proto.to_string(),
        }),
        columns: m
            .as_ref()
            .map(|m| m.axis.iter().map(|a| a.label.clone()).collect())
            .unwrap_or_default(),
        rows: m.as_ref().map(|m| rows(&org, m)).unwrap_or_default(),
        grouped: m.as_ref().is_some_and(|m| m.grouped),
        truncated: m.as_ref().is_some_and(|m| m.truncated),
        org,
        proto,
        port,
        by,
        error,
    };
    Ok(html(status, &page, true))
}
