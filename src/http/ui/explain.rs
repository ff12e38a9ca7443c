//! Explain (`/orgs/{org}/explain`): "why can't A reach B?" as a page. The form is a GET (the
//! question is the URL, so it can be shared and bookmarked); the answer is the service's
//! `explain::explain`, the same operation the API renders as JSON.

use super::page::{Chrome, html};
use super::policies::Choice;
use crate::http::error::ApiError;
use crate::http::{App, Request, Response};
use crate::policy::evaluate::FieldWhy;
use crate::policy::{Selector, Verdict};
use crate::service::explain::{self, ExplainQuery, ExplainView, PeerFacts, TraceView};
use crate::service::views::OrgView;
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
        Some(c) => format!(
            "{} packets, {} bytes on the deciding rule ({}), in total since the rule was installed (no history is kept for a 30-second window)",
            c.packets, c.bytes, c.rule
        ),
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

#[derive(Template)]
#[template(path = "explain.html")]
struct ExplainPage {
    chrome: Chrome,
    org: OrgView,
    choices: Vec<Choice>,
    src: String,
    src_addr: String,
    dst: String,
    dst_addr: String,
    proto: String,
    port: String,
    error: Option<String>,
    answer: Option<Answer>,
}

/// The machine picker's value, unless the address field next to it says otherwise.
fn end(req: &Request, picker: &str, addr: &str) -> Option<String> {
    let a = req_param(req, addr).filter(|a| !a.trim().is_empty());
    a.or_else(|| req_param(req, picker))
}

fn req_param(req: &Request, name: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(&req.query)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// `GET /orgs/{org}/explain`: the form, and the answer when a question was asked.
pub async fn page(app: &App, req: &Request, ctx: &Ctx) -> Result<Response, ApiError> {
    let org = orgs::get(app, ctx).await?;
    let model = machines::model(app, ctx).await?;
    let choices = model
        .machines
        .iter()
        .map(|m| Choice {
            value: m.id.to_string(),
            label: format!("{} ({})", m.name, m.address),
        })
        .collect();
    let q = ExplainQuery {
        src: end(req, "src", "src_addr"),
        dst: end(req, "dst", "dst_addr"),
        proto: req_param(req, "proto"),
        port: req_param(req, "port"),
    };
    let (answer, error, status) = if q.is_empty() {
        (None, None, StatusCode::OK)
    } else {
        match explain::explain(app, ctx, &q).await {
            Ok(v) => (Some(answer(&org, &v)), None, StatusCode::OK),
            Err(e) if e.status == StatusCode::BAD_REQUEST => {
                (None, Some(e.message.clone()), e.status)
            }
            Err(e) => return Err(e),
        }
    };
    let p = |k: &str| req_param(req, k).unwrap_or_default();
    let page = ExplainPage {
        chrome: Chrome::of(req, ctx, Some(org.clone()), "Explain"),
        org,
        choices,
        src: p("src"),
        src_addr: p("src_addr"),
        dst: p("dst"),
        dst_addr: p("dst_addr"),
        proto: req_param(req, "proto").unwrap_or_else(|| "tcp".into()),
        port: p("port"),
        error,
        answer,
    };
    Ok(html(status, &page, true))
}
