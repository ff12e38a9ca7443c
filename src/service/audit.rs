//! The audit log: recording who did what (a failure is logged, never shown to the caller) and
//! reading an org's entries, newest first, a page at a time.

use super::access::active_org;
use super::page::{self, AUDIT_DEFAULT_LIMIT, AuditKey, Page, PageRequest};
use super::{ApiError, App, Ctx};
use crate::db::audit::{self, Record};
use crate::db::users::User;
use uuid::Uuid;

/// The caller as the actor of audit entries the controller writes on its behalf.
pub fn actor(ctx: &Ctx) -> audit::Actor {
    let u = &ctx.session().user;
    audit::Actor {
        id: Some(u.id),
        email: Some(u.email.clone()),
    }
}

/// What an entry says: the action and its target.
pub struct Event<'a> {
    pub org: Option<Uuid>,
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: Option<String>,
    pub detail: serde_json::Value,
}

/// Records an entry by `user`; a failure is logged, never shown to the caller.
pub async fn record(app: &App, user: Option<&User>, e: Event<'_>) {
    let entry = audit::Entry {
        org_id: e.org,
        actor_id: user.map(|u| u.id),
        actor_email: user.map(|u| u.email.as_str()),
        action: e.action,
        target_type: e.target_type,
        target_id: e.target_id,
        detail: e.detail,
    };
    if let Err(err) = audit::record(&app.pool, &entry).await {
        tracing::error!(error = %err, action = e.action, "could not record audit entry");
    }
}

/// [`record`] by the caller of an operation, about its org.
pub async fn record_by(
    app: &App,
    ctx: &Ctx,
    action: &str,
    target_type: &str,
    target_id: Uuid,
    detail: serde_json::Value,
) {
    let event = Event {
        org: Some(ctx.org()),
        action,
        target_type,
        target_id: Some(target_id.to_string()),
        detail,
    };
    record(app, Some(&ctx.session().user), event).await;
}

/// Which entries: a page by cursor, or (the older way) those before an entry id; and which of
/// them (action prefix, actor email, target id).
pub struct AuditQuery {
    pub page: PageRequest<AuditKey>,
    pub before: Option<i64>,
    pub filter: audit::Filter,
}

impl AuditQuery {
    /// From the raw `limit`, `cursor` and `before` values of a request.
    pub fn parse(
        limit: Option<&str>,
        cursor: Option<&str>,
        before: Option<&str>,
    ) -> Result<AuditQuery, ApiError> {
        let page = page::request(limit, cursor, AUDIT_DEFAULT_LIMIT)?;
        let before = before
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::invalid("before", "must be an entry id"))
            })
            .transpose()?;
        if before.is_some() && page.after.is_some() {
            return Err(ApiError::invalid(
                "cursor",
                "give either cursor or before, not both",
            ));
        }
        Ok(AuditQuery {
            page,
            before,
            filter: audit::Filter::default(),
        })
    }

    /// Only entries with this action prefix, actor email and target id (empty: any); each at
    /// most 256 bytes.
    pub fn filtered(
        mut self,
        action: Option<&str>,
        actor: Option<&str>,
        target: Option<&str>,
    ) -> Result<AuditQuery, ApiError> {
        let field = |name: &str, v: Option<&str>| -> Result<Option<String>, ApiError> {
            match v.map(str::trim) {
                None | Some("") => Ok(None),
                Some(v) if v.len() > 256 || v.chars().any(char::is_control) => Err(
                    ApiError::invalid(name, "must be at most 256 printable bytes"),
                ),
                Some(v) => Ok(Some(v.to_string())),
            }
        };
        self.filter = audit::Filter {
            action: field("action", action)?,
            actor: field("actor", actor)?,
            target: field("target", target)?,
        };
        Ok(self)
    }
}

/// `GET /orgs/{org}/audit`: newest first.
pub async fn list(app: &App, ctx: &Ctx, q: AuditQuery) -> Result<Page<Record>, ApiError> {
    active_org(app, ctx).await?;
    let before = q.page.after.map(|k| k.0).or(q.before);
    let limit = q.page.limit;
    let rows = audit::list(&app.pool, ctx.org(), limit as i64 + 1, before, &q.filter).await?;
    Ok(Page::of(rows, limit, |r| AuditKey(r.id)))
}
