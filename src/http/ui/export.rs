//! Exports of what a list shows: machines (the current filter and order) as CSV or JSON, the
//! audit log (its filter) as CSV or JSON Lines. Same operations as the pages.

use super::fmt::iso;
use super::page::download;
use crate::http::error::ApiError;
use crate::http::{App, Request, Response};
use crate::service::views::Presence;
use crate::service::{self, Ctx};
use chrono::Utc;

/// A CSV field: quoted, and never read as a formula by a spreadsheet.
fn csv_field(s: &str) -> String {
    let s = match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_string(),
    };
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `GET …/machines/export.csv|json`: the current filter and order, every match.
pub async fn machines(app: &App, req: &Request, ctx: &Ctx) -> Result<Response, ApiError> {
    let p = super::machines::params(req)?;
    let found = service::machines::query(app, ctx, &p.query).await?;
    let (body, mime, name) = if req.path.ends_with(".json") {
        let body = serde_json::to_vec(&serde_json::json!({ "machines": found }))
            .map_err(ApiError::internal)?;
        (body, "application/json", "machines.json")
    } else {
        let mut out = String::from(
            "name,address,tags,status,last_handshake_at,endpoint,rx_bytes,tx_bytes,public_key,created_at\r\n",
        );
        let now = Utc::now();
        for m in &found {
            let stats = m.stats.clone().unwrap_or_default();
            let seen = stats.last_handshake_at;
            let fields = [
                m.name.clone(),
                m.address.to_string(),
                m.tags.join(" "),
                Presence::of(seen, now).word().to_string(),
                seen.map(iso).unwrap_or_default(),
                stats.endpoint.unwrap_or_default(),
                stats.rx_bytes.map(|n| n.to_string()).unwrap_or_default(),
                stats.tx_bytes.map(|n| n.to_string()).unwrap_or_default(),
                m.public_key.clone(),
                iso(m.created_at),
            ];
            let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            out.push_str(&line.join(","));
            out.push_str("\r\n");
        }
        (out.into_bytes(), "text/csv; charset=utf-8", "machines.csv")
    };
    Ok(download(body, mime, name))
}

/// At most this many entries per export.
const EXPORT_MAX: usize = 10_000;

/// `GET …/audit/export.csv|jsonl`: the filtered entries, newest first.
pub async fn audit(app: &App, req: &Request, ctx: &Ctx) -> Result<Response, ApiError> {
    let mut p = super::org::audit_params(req)?;
    let mut records = Vec::new();
    loop {
        let list = service::audit::list(app, ctx, super::org::audit_query("1000", &p)?).await?;
        records.extend(list.items);
        match list.next_cursor {
            Some(c) if records.len() < EXPORT_MAX => p[3] = c,
            _ => break,
        }
    }
    records.truncate(EXPORT_MAX);
    let jsonl = req.path.ends_with(".jsonl");
    let mut out = String::new();
    if !jsonl {
        out.push_str("id,at,actor,action,target_type,target_id,detail\r\n");
    }
    for r in &records {
        if jsonl {
            let line = serde_json::json!({
                "id": r.id, "at": r.at, "actor_id": r.actor_id, "actor_email": r.actor_email,
                "action": r.action, "target_type": r.target_type, "target_id": r.target_id,
                "detail": r.detail,
            });
            out.push_str(&line.to_string());
            out.push('\n');
        } else {
            let fields = [
                r.id.to_string(),
                iso(r.at),
                r.actor_email.clone().unwrap_or_default(),
                r.action.clone(),
                r.target_type.clone(),
                r.target_id.clone().unwrap_or_default(),
                r.detail.to_string(),
            ];
            let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            out.push_str(&line.join(","));
            out.push_str("\r\n");
        }
    }
    let (mime, name) = match jsonl {
        true => ("application/jsonl", "audit.jsonl"),
        false => ("text/csv; charset=utf-8", "audit.csv"),
    };
    Ok(download(out.into_bytes(), mime, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("laptop"), "\"laptop\"");
        assert_eq!(csv_field("a\"b,c"), "\"a\"\"b,c\"");
        assert_eq!(csv_field("=cmd|' /C calc'!A0"), "\"'=cmd|' /C calc'!A0\"");
        assert_eq!(csv_field("-1+1"), "\"'-1+1\"");
    }
}
