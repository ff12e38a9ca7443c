//! An org's machines: the list (status words, paging, live refresh), adding one (its config
//! shown once), one machine's page (rename, tags, key rotation, delete).

use super::fmt::{ago, bytes, iso};
use super::form::{Form, tags};
use super::page::{Chrome, after_change, fragment, html, is_htmx, secret_html};
use crate::http::error::ApiError;
use crate::http::{App, Request, Response};
use crate::secret::Secret;
use crate::service::machine_query::{self, MachineQuery, SortKey};
use crate::service::views::MachineHistory;
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

/// A sortable column's header: its link and `aria-sort`.
pub struct Column {
    pub label: &'static str,
    pub href: String,
    pub aria_sort: &'static str,
    pub num: bool,
}

#[derive(Template)]
#[template(path = "machines.html")]
struct ListPage {
    chrome: Chrome,
    org: OrgView,
    rows: Vec<Row>,
    columns: Vec<Column>,
    q: String,
    matched: usize,
    here: String,
    prev: Option<String>,
    next: Option<String>,
    all: Option<String>,
    csv: String,
    json: String,
    /// Rows get a box for the bulk form.
    can_write: bool,
}

/// The table alone, for htmx's poll.
#[derive(Template)]
#[template(path = "machines.html", block = "table")]
struct ListTable<'a> {
    org: &'a OrgView,
    rows: &'a [Row],
    columns: &'a [Column],
    q: &'a str,
    here: &'a str,
    can_write: bool,
}

const PER_PAGE: usize = 100;

/// The list's parameters: filter, order and page, from the query string.
pub(super) struct ListParams {
    q: String,
    pub query: MachineQuery,
    page: usize,
    all: bool,
}

pub(super) fn params(req: &Request) -> Result<ListParams, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&req.query)
        .map_err(|_| ApiError::bad_request("the query string could not be read"))?;
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let q = get("q").unwrap_or("").to_string();
    let query = MachineQuery {
        terms: machine_query::parse(&q)?,
        sort: get("sort")
            .map(SortKey::parse)
            .transpose()?
            .unwrap_or_default(),
        descending: get("dir") == Some("desc"),
    };
    let page = match get("page") {
        None => 0,
        Some(p) => p
            .parse::<usize>()
            .map_err(|_| ApiError::invalid("page", "must be a number"))?,
    };
    Ok(ListParams {
        q,
        query,
        page,
        all: get("all") == Some("1"),
    })
}

/// The list's URL with these parameters.
fn link(base: &str, q: &str, sort: SortKey, desc: bool, extra: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    if !q.is_empty() {
        pairs.push(("q", q));
    }
    if sort != SortKey::default() {
        pairs.push(("sort", sort.as_str()));
    }
    if desc {
        pairs.push(("dir", "desc"));
    }
    pairs.extend_from_slice(extra);
    match serde_urlencoded::to_string(&pairs) {
        Ok(s) if !s.is_empty() => format!("{base}?{s}"),
        _ => base.to_string(),
    }
}

pub async fn list(app: &App, req: &Request, ctx: &Ctx) -> Result<Response, ApiError> {
    let org = orgs::get(app, ctx).await?;
    let p = params(req)?;
    let found = machines::query(app, ctx, &p.query).await?;
    let now = Utc::now();
    let base = format!("/orgs/{}/machines", org.id);
    let (q, sort, desc) = (&p.q, p.query.sort, p.query.descending);
    let columns = [
        ("Name", SortKey::Name, false),
        ("Address", SortKey::Address, false),
        ("Status", SortKey::Status, false),
        ("Last handshake", SortKey::Handshake, false),
        ("Received", SortKey::Received, true),
        ("Sent", SortKey::Sent, true),
        ("Created", SortKey::Created, false),
    ]
    .into_iter()
    .map(|(label, key, num)| Column {
        label,
        href: link(&base, q, key, key == sort && !desc, &[]),
        aria_sort: match (key == sort, desc) {
            (false, _) => "none",
            (true, false) => "ascending",
            (true, true) => "descending",
        },
        num,
    })
    .collect();
    let start = if p.all { 0 } else { p.page * PER_PAGE };
    let end = if p.all {
        found.len()
    } else {
        (start + PER_PAGE).min(found.len())
    };
    let shown = found.get(start..end).unwrap_or_default();
    let page_link = |n: usize| link(&base, q, sort, desc, &[("page", &n.to_string())]);
    let more = !p.all && end < found.len();
    let here = link(&base, q, sort, desc, &[]);
    let page = ListPage {
        chrome: Chrome::of(req, ctx, Some(org.clone()), "Machines"),
        rows: shown.iter().map(|m| Row::of(m, now)).collect(),
        columns,
        q: q.clone(),
        matched: found.len(),
        prev: (!p.all && p.page > 0).then(|| page_link(p.page - 1)),
        next: more.then(|| page_link(p.page + 1)),
        all: (more || p.page > 0).then(|| link(&base, q, sort, desc, &[("all", "1")])),
        csv: link(&format!("{base}/export.csv"), q, sort, desc, &[]),
        json: link(&format!("{base}/export.json"), q, sort, desc, &[]),
        can_write: crate::service::access::can_write(ctx.session()),
        here: if p.all || p.page > 0 {
            match req.query.is_empty() {
                true => base.clone(),
                false => format!("{base}?{}", req.query),
            }
        } else {
            here
        },
        org,
    };
    if is_htmx(req) {
        let table = ListTable {
            org: &page.org,
            rows: &page.rows,
            columns: &page.columns,
            q: &page.q,
            here: &page.here,
            can_write: page.can_write,
        };
        return Ok(fragment(req, &table));
    }
    Ok(html(StatusCode::OK, &page, true))
}

#[derive(Template)]
#[template(path = "machine_new.html")]
struct NewPage<'a> {
    chrome: Chrome,
    org: OrgView,
    known_tags: Vec<String>,
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
    let model = machines::model(app, ctx).await?;
    let known: std::collections::BTreeSet<&String> =
        model.machines.iter().flat_map(|m| &m.tags).collect();
    let page = NewPage {
        known_tags: known.into_iter().cloned().collect(),
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
    /// A new key for a machine that exists (not a new machine).
    rotated: bool,
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
    let config = (&created.config, &created.config_qr_svg);
    Ok(config_page(req, ctx, org, &created.machine, config, false))
}

/// The page showing a config once (a new machine's, or a machine's after a key rotation).
fn config_page(
    req: &Request,
    ctx: &Ctx,
    org: OrgView,
    machine: &MachineView,
    (config, qr): (&Secret<String>, &Secret<String>),
    rotated: bool,
) -> Response {
    let config = config.expose();
    let encoded = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD.encode(config.as_bytes()),
    );
    let page = CreatedPage {
        chrome: Chrome::of(req, ctx, Some(org.clone()), "Machines"),
        org,
        machine: Row::of(machine, Utc::now()),
        config,
        config_data_url: format!("data:text/plain;charset=utf-8;base64,{}", encoded.as_str()),
        qr_svg: qr.expose(),
        file_name: format!("{}.conf", machine.name),
        rotated,
    };
    let status = if rotated {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let resp = secret_html(status, &page);
    zeroize::Zeroize::zeroize(&mut { page.config_data_url });
    resp
}

/// `POST …/machines/{id}/rotate-key`: confirmed by a checkbox naming the machine. A server-made
/// key answers with the new config (once); a supplied public key goes back to the machine page.
pub async fn rotate_key(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    form: &Form,
) -> Result<Response, ApiError> {
    let m = machines::get(app, ctx).await?;
    if form.text("confirm") != "yes" {
        let e = ApiError::invalid(
            "confirm",
            format!(
                "tick the box to confirm that {}'s current config stops working",
                m.name
            ),
        );
        return detail(app, req, ctx, Some(&e)).await;
    }
    let key = form.text("public_key").trim();
    let input = machines::RotateKey {
        public_key: (!key.is_empty()).then(|| key.to_string()),
    };
    let rotated = match machines::rotate_key(app, ctx, input).await {
        Ok(r) => r,
        Err(e) if matches!(e.status.as_u16(), 400 | 409) => {
            return detail(app, req, ctx, Some(&e)).await;
        }
        Err(e) => return Err(e),
    };
    let (Some(config), Some(qr)) = (&rotated.config, &rotated.config_qr_svg) else {
        return Ok(super::page::redirect(&format!(
            "/orgs/{}/machines/{}",
            ctx.org(),
            ctx.id()
        )));
    };
    let org = orgs::get(app, ctx).await?;
    Ok(config_page(
        req,
        ctx,
        org,
        &rotated.machine,
        (config, qr),
        true,
    ))
}

/// The status line alone, for htmx's poll.
#[derive(Template)]
#[template(path = "machine.html", block = "status")]
struct StatusLine<'a> {
    org: &'a OrgView,
    m: &'a Row,
    rotated: bool,
}

#[derive(Template)]
#[template(path = "machine.html")]
struct DetailPage {
    chrome: Chrome,
    org: OrgView,
    m: Row,
    error: Option<String>,
    history: Vec<super::org::AuditRow>,
    /// The key was rotated: a missing handshake is the new key's.
    rotated: bool,
    /// The last 30 min of bytes received and sent by the hub from and to this machine.
    rx_spark: Option<super::spark::Spark>,
    tx_spark: Option<super::spark::Spark>,
}

/// Whether the machine's key was ever rotated (asked only while no handshake is known).
async fn rotated(app: &App, ctx: &Ctx, row: &Row) -> Result<bool, ApiError> {
    if !row.seen.is_empty() {
        return Ok(false);
    }
    let q = crate::service::audit::AuditQuery::parse(Some("1"), None, None)?.filtered(
        Some("machine.rotate_key"),
        None,
        Some(&row.id),
    )?;
    Ok(!crate::service::audit::list(app, ctx, q)
        .await?
        .items
        .is_empty())
}

pub async fn detail(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    failed: Option<&ApiError>,
) -> Result<Response, ApiError> {
    let org = orgs::get(app, ctx).await?;
    let m = machines::get(app, ctx).await?;
    if is_htmx(req) && failed.is_none() {
        let row = Row::of(&m, Utc::now());
        let rotated = rotated(app, ctx, &row).await?;
        let line = StatusLine {
            org: &org,
            m: &row,
            rotated,
        };
        return Ok(fragment(req, &line));
    }
    let id = m.id.to_string();
    let q = crate::service::audit::AuditQuery::parse(Some("20"), None, None)?.filtered(
        None,
        None,
        Some(&id),
    )?;
    let history = super::org::audit_rows(crate::service::audit::list(app, ctx, q).await?.items);
    let row = Row::of(&m, Utc::now());
    let (rx_spark, tx_spark) = match crate::service::status::history(app, ctx).await {
        Ok(h) => {
            let series = h.machine(m.id).zip(h.newest_at);
            let spark = |what: &str, unit: &str, pick: fn(&MachineHistory) -> &Vec<u64>| {
                series.and_then(|(s, at)| {
                    super::spark::Spark::of(what, unit, pick(s), at, h.step_seconds)
                })
            };
            (
                spark("Bytes the hub received per step", "Bytes received", |s| {
                    &s.rx_bytes
                }),
                spark("Bytes the hub sent per step", "Bytes sent", |s| &s.tx_bytes),
            )
        }
        Err(_) => (None, None),
    };
    let page = DetailPage {
        rx_spark,
        tx_spark,
        chrome: Chrome::of(req, ctx, Some(org.clone()), "Machines"),
        org,
        rotated: rotated(app, ctx, &row).await?,
        m: row,
        error: failed.map(|e| e.message.clone()),
        history,
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
        Err(e) if e.status == StatusCode::BAD_REQUEST => detail(app, req, ctx, Some(&e)).await,
        result => after_change(result.map(drop), &to),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_links_keep_the_filter_and_order() {
        let base = "/orgs/o/machines";
        assert_eq!(link(base, "", SortKey::Address, false, &[]), base);
        assert_eq!(
            link(base, "tag:a b", SortKey::Name, true, &[("page", "2")]),
            "/orgs/o/machines?q=tag%3Aa+b&sort=name&dir=desc&page=2"
        );
    }
}
