//! Explain (`/orgs/{org}/explain`): "why can't A reach B?" as a page. The form is a GET (the
//! question is the URL, so it can be shared and bookmarked); the answer is the service's
//! `explain::explain`, the same operation the API renders as JSON.

use super::form::Form;
use super::page::{Chrome, after_change, fragment, html, is_htmx};
use super::policies::Choice;
use crate::http::error::ApiError;
use crate::http::{App, Request, Response};
use crate::policy::evaluate::FieldWhy;
use crate::policy::{Selector, Verdict};
use crate::service::explain::{self, ExplainQuery, ExplainView, PeerFacts, TraceView};
use crate::service::views::OrgView;
use crate::service::watch::{self, WatchList};
use crate::service::{Ctx, machines, orgs};
use askama::Template;
use warp::http::StatusCode;

/// A field of a trace row as the table shows it.
pub struct Cell {
    pub label: &'static str,
    pub rule: String,
    pub mark: &'static str,
    pub word: &'static str,
    pub why: String,
}

impl Cell {
    fn of(label: &'static str, f: &FieldWhy) -> Cell {
        Cell {
            label,
            rule: f.rule.clone(),
            mark: if f.ok { "✓" } else { "✗" },
            word: if f.ok { "matches" } else { "does not match" },
            why: f.why.clone(),
        }
    }
}

pub struct Line {
    pub number: String,
    pub name: String,
    pub action: &'static str,
    /// Source, destination, protocol, port.
    pub cells: Vec<Cell>,
    pub state: Option<Cell>,
    pub outcome: String,
    pub decided: bool,
    pub rule: String,
    pub summary: String,
}

pub struct Trace {
    /// `forward` or `reply` (the table's id).
    pub id: &'static str,
    pub caption: String,
    pub verdict: &'static str,
    pub by: String,
    pub lines: Vec<Line>,
}

fn trace(id: &'static str, t: &TraceView) -> Trace {
    let lines = t
        .rows
        .iter()
        .map(|r| {
            let number = match r.row.number {
                Some(n) => format!("#{n}"),
                None => "—".into(),
            };
            let outcome = if r.row.matched {
                format!("{} here", r.row.action.as_str())
            } else {
                "no match, next row".into()
            };
            Line {
                number,
                name: r.name.clone().unwrap_or_default(),
                action: r.row.action.as_str(),
                cells: vec![
                    Cell::of("Source", &r.row.src),
                    Cell::of("Destination", &r.row.dst),
                    Cell::of("Protocol", &r.row.protocol),
                    Cell::of("Port", &r.row.port),
                ],
                state: r.row.state.as_ref().map(|s| Cell::of("State", s)),
                outcome,
                decided: r.row.matched,
                rule: r.rule.clone().unwrap_or_else(|| "not in the kernel".into()),
                summary: r.summary.clone(),
            }
        })
        .collect();
    let by = match t.rows.last() {
        Some(r) => match (r.row.number, &r.name) {
            (Some(n), Some(name)) => format!("policy #{n} ({name})"),
            (Some(n), None) => format!("policy #{n}"),
            (None, Some(name)) => format!("the {name} row"),
            (None, None) => "the chain".into(),
        },
        None => "the chain".into(),
    };
    Trace {
        id,
        caption: String::new(),
        verdict: t.verdict.as_str(),
        by,
        lines,
    }
}

/// One end's peer as the facts list shows it.
pub struct Peer {
    pub label: &'static str,
    pub name: String,
    pub present: bool,
    pub handshake: String,
    pub endpoint: String,
    pub allowed: String,
    pub allowed_ok: bool,
}

fn peer(label: &'static str, p: &PeerFacts) -> Peer {
    let handshake = match p.handshake_age_secs {
        Some(s) => format!("{} s ago ({})", s, p.presence.word()),
        None => p.presence.word().into(),
    };
    Peer {
        label,
        name: p.name.clone(),
        present: p.peer_present,
        handshake,
        endpoint: p.endpoint.clone().unwrap_or_else(|| "none yet".into()),
        allowed: if p.allowed_ips.is_empty() {
            "none".into()
        } else {
            p.allowed_ips.join(", ")
        },
        allowed_ok: p.allowed_ips_ok,
    }
}

/// What the page shows of an answer.
pub struct Answer {
    pub reachable: bool,
    pub headline: String,
    /// The first packet, then a reply of the same flow.
    pub traces: Vec<Trace>,
    pub counter: String,
    pub hub: String,
    pub reconcile: String,
    pub peers: Vec<Peer>,
    pub fix_href: Option<String>,
    pub fix_text: String,
}

fn picker(s: &Selector) -> (String, String) {
    match s {
        Selector::Machine(id) => (format!("machine:{id}"), String::new()),
        Selector::Tag(t) => (format!("tag:{t}"), String::new()),
        Selector::Cidr(c) => ("any".into(), c.to_string()),
        Selector::Any => ("any".into(), String::new()),
    }
}

fn answer(org: &OrgView, v: &ExplainView) -> Answer {
    let what = match v.port {
        Some(p) => format!("{} port {p}", v.protocol.as_str()),
        None => v.protocol.as_str().to_string(),
    };
    let end = |e: &explain::EndView| match &e.name {
        Some(n) => format!("{n} ({})", e.address),
        None => e.address.to_string(),
    };
    let mut forward = trace("forward", &v.forward);
    let mut reply = trace("reply", &v.reply);
    let headline = if v.reachable {
        format!(
            "{} can reach {} over {what}: allowed by {}.",
            end(&v.src),
            end(&v.dst),
            forward.by
        )
    } else if v.verdict == Verdict::Deny {
        format!(
            "{} cannot reach {} over {what}: denied by {}.",
            end(&v.src),
            end(&v.dst),
            forward.by
        )
    } else {
        format!(
            "{} cannot reach {} over {what}: the first packet is allowed by {}, but the reply is denied by {}.",
            end(&v.src),
            end(&v.dst),
            forward.by,
            reply.by
        )
    };
    forward.caption = format!(
        "The first packet, through the chain row by row: {} by {}",
        forward.verdict, forward.by
    );
    reply.caption = format!(
        "A reply of the same flow, back the other way: {} by {}{}",
        reply.verdict,
        reply.by,
        if v.reply_needed {
            ""
        } else {
            " (udp: the datagram arrives whatever happens to replies)"
        }
    );
    let counter = match &v.counter {
        Some(c) => {
            let recent = match &c.recent {
                Some(r) => format!("{} packets in the last {}; ", r.packets, r.window),
                None => String::new(),
            };
            format!(
                "{recent}{} packets, {} bytes on the deciding rule ({}) in total since the rule was installed",
                c.packets, c.bytes, c.rule
            )
        }
        None => "the kernel holds no such rule right now".into(),
    };
    let (hub, reconcile, peers) = match &v.data_plane {
        Some(d) => {
            let mut peers = Vec::new();
            if let Some(p) = &d.src {
                peers.push(peer("Source", p));
            }
            if let Some(p) = &d.dst {
                peers.push(peer("Destination", p));
            }
            let reconcile = match &d.last_error {
                None => format!(
                    "ok, observed {}",
                    d.observed_at.format("%Y-%m-%d %H:%M:%S UTC")
                ),
                Some(e) => format!(
                    "failed ({e}), last observed {}",
                    d.observed_at.format("%Y-%m-%d %H:%M:%S UTC")
                ),
            };
            (
                if d.hub_up { "up" } else { "down" }.to_string(),
                reconcile,
                peers,
            )
        }
        None => (
            "not observed yet".into(),
            "no observation yet".into(),
            Vec::new(),
        ),
    };
    let (fix_href, fix_text) = match &v.fix {
        Some(f) => {
            let (src, src_other) = picker(&f.src);
            let (dst, dst_other) = picker(&f.dst);
            let ports = f.ports.map(|p| p.to_string()).unwrap_or_default();
            let priority = f.priority.to_string();
            let name = format!("explain fix: {} {what}", f.direction);
            let q = serde_urlencoded::to_string([
                ("prefill", "1"),
                ("name", name.as_str()),
                ("action", "allow"),
                ("src", src.as_str()),
                ("src_other", src_other.as_str()),
                ("dst", dst.as_str()),
                ("dst_other", dst_other.as_str()),
                ("protocol", f.protocol.as_str()),
                ("ports", ports.as_str()),
                ("priority", priority.as_str()),
            ])
            .unwrap_or_default();
            let text = match f.direction {
                "reply" => format!("Allow the replies (priority {})", f.priority),
                _ => format!("Allow this path (priority {})", f.priority),
            };
            let text = match &f.note {
                Some(n) => format!("{text}; {n}"),
                None => text,
            };
            (Some(format!("/orgs/{}/policies?{q}#form-h", org.id)), text)
        }
        None => (None, String::new()),
    };
    Answer {
        reachable: v.reachable,
        headline,
        traces: vec![forward, reply],
        counter,
        hub,
        reconcile,
        peers,
        fix_href,
        fix_text,
    }
}

/// A live watch as the panel shows it.
pub struct WatchRow {
    pub path: String,
    pub packets: u64,
    pub bytes: String,
    pub verdict: String,
    pub ends_in: String,
}

fn watch_rows(list: &WatchList) -> Vec<WatchRow> {
    let end = |e: &explain::EndView| match &e.name {
        Some(n) => format!("{n} ({})", e.address),
        None => e.address.to_string(),
    };
    list.watches
        .iter()
        .map(|w| {
            let what = match w.port {
                Some(p) => format!("{} port {p}", w.protocol.as_str()),
                None => w.protocol.as_str().to_string(),
            };
            let by = match (&w.decided_by, w.number) {
                (_, Some(n)) => format!("policy #{n}"),
                (crate::policy::evaluate::Decider::Established, _) => "the established row".into(),
                _ => "the default row".into(),
            };
            WatchRow {
                path: format!("{} → {}, {what}", end(&w.src), end(&w.dst)),
                packets: w.packets,
                bytes: super::fmt::bytes(w.bytes),
                verdict: format!("{} by {by}", w.verdict.as_str()),
                ends_in: format!("{} s", w.expires_in_secs),
            }
        })
        .collect()
}

/// The watches panel alone, for htmx's poll.
#[derive(Template)]
#[template(path = "explain.html", block = "watches")]
struct WatchPanel<'a> {
    org: &'a OrgView,
    watches: &'a [WatchRow],
    poll: &'a str,
}

#[derive(Template)]
#[template(path = "explain.html")]
struct ExplainPage {
    chrome: Chrome,
    org: OrgView,
    choices: Vec<Choice>,
    p: Params,
    error: Option<String>,
    answer: Option<Answer>,
    watches: Vec<WatchRow>,
    watch_error: Option<String>,
    /// This question's page, which the watches panel polls.
    poll: String,
}

/// The question as the form has it (the query of a GET, the hidden fields of the watch POST).
#[derive(Default)]
pub struct Params {
    pub src: String,
    pub src_addr: String,
    pub dst: String,
    pub dst_addr: String,
    pub proto: String,
    pub port: String,
}

impl Params {
    fn from_pairs(get: impl Fn(&str) -> Option<String>) -> Params {
        let t = |k: &str| get(k).unwrap_or_default();
        Params {
            src: t("src"),
            src_addr: t("src_addr"),
            dst: t("dst"),
            dst_addr: t("dst_addr"),
            proto: get("proto").unwrap_or_else(|| "tcp".into()),
            port: t("port"),
        }
    }

    fn of_query(req: &Request) -> Params {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(&req.query).unwrap_or_default();
        Params::from_pairs(|k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    fn of_form(f: &Form) -> Params {
        Params::from_pairs(|k| f.get(k).map(str::to_string))
    }

    /// Whether a question was asked (a GET of the bare page shows the form only).
    fn asked(req: &Request) -> bool {
        ["src", "src_addr", "dst", "dst_addr", "port"]
            .iter()
            .any(|k| req.query_param(k).is_some_and(|v| !v.is_empty()))
    }

    /// The machine picker's value, unless the address field next to it says otherwise.
    fn end(picker: &str, addr: &str) -> Option<String> {
        let v = if addr.trim().is_empty() { picker } else { addr };
        (!v.trim().is_empty()).then(|| v.to_string())
    }

    fn query(&self) -> ExplainQuery {
        let o = |s: &str| (!s.trim().is_empty()).then(|| s.to_string());
        ExplainQuery {
            src: Params::end(&self.src, &self.src_addr),
            dst: Params::end(&self.dst, &self.dst_addr),
            proto: o(&self.proto),
            port: o(&self.port),
        }
    }

    fn encoded(&self) -> String {
        serde_urlencoded::to_string([
            ("src", self.src.as_str()),
            ("src_addr", self.src_addr.as_str()),
            ("dst", self.dst.as_str()),
            ("dst_addr", self.dst_addr.as_str()),
            ("proto", self.proto.as_str()),
            ("port", self.port.as_str()),
        ])
        .unwrap_or_default()
    }
}

async fn render(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    p: Params,
    ask: bool,
    watch_error: Option<&ApiError>,
) -> Result<Response, ApiError> {
    let org = orgs::get(app, ctx).await?;
    let poll = format!("/orgs/{}/explain?{}", org.id, p.encoded());
    // The panel is a side show: a tenant being repaired still gets its answer.
    let watches = watch::list(app, ctx)
        .await
        .map(|l| watch_rows(&l))
        .unwrap_or_default();
    if is_htmx(req) && watch_error.is_none() {
        let panel = WatchPanel {
            org: &org,
            watches: &watches,
            poll: &poll,
        };
        return Ok(fragment(req, &panel));
    }
    let model = machines::model(app, ctx).await?;
    let choices = model
        .machines
        .iter()
        .map(|m| Choice {
            value: m.id.to_string(),
            label: format!("{} ({})", m.name, m.address),
        })
        .collect();
    let (answer, error, mut status) = if ask {
        match explain::explain(app, ctx, &p.query()).await {
            Ok(v) => (Some(answer(&org, &v)), None, StatusCode::OK),
            Err(e) if e.status == StatusCode::BAD_REQUEST => {
                (None, Some(e.message.clone()), e.status)
            }
            Err(e) => return Err(e),
        }
    } else {
        (None, None, StatusCode::OK)
    };
    if let Some(e) = watch_error {
        status = e.status;
    }
    let page = ExplainPage {
        chrome: Chrome::of(req, ctx, Some(org.clone()), "Explain"),
        org,
        choices,
        p,
        error,
        answer,
        watches,
        watch_error: watch_error.map(|e| e.message.clone()),
        poll,
    };
    Ok(html(status, &page, true))
}

/// `GET /orgs/{org}/explain`: the form, the answer when a question was asked, and the org's
/// live watches (alone, for htmx's poll).
pub async fn page(app: &App, req: &Request, ctx: &Ctx) -> Result<Response, ApiError> {
    render(
        app,
        req,
        ctx,
        Params::of_query(req),
        Params::asked(req),
        None,
    )
    .await
}

/// `POST /orgs/{org}/watch`: "Watch this path for 60 s"; back to the question's page, where
/// the panel shows the counts. A refused watch (a fourth, bad input) shows why on that page.
pub async fn watch_path(
    app: &App,
    req: &Request,
    ctx: &Ctx,
    form: &Form,
) -> Result<Response, ApiError> {
    let p = Params::of_form(form);
    let q = p.query();
    let port = match q.port.as_deref().map(str::trim) {
        None => Ok(None),
        Some(v) => v
            .parse::<u32>()
            .map(Some)
            .map_err(|_| ApiError::invalid("port", "must be a number from 1 to 65535")),
    };
    let result = match port {
        Ok(port) => {
            let input = watch::WatchCreate {
                src: q.src.clone().unwrap_or_default(),
                dst: q.dst.clone().unwrap_or_default(),
                proto: q.proto.clone().unwrap_or_default(),
                port,
                ttl_secs: None,
            };
            watch::create(app, ctx, input).await.map(|_| ())
        }
        Err(e) => Err(e),
    };
    match result {
        Err(e) if matches!(e.status.as_u16(), 400 | 409) => {
            render(app, req, ctx, p, true, Some(&e)).await
        }
        r => after_change(r, &format!("/orgs/{}/explain?{}", ctx.org(), p.encoded())),
    }
}
