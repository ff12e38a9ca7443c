//! An org's users: add (within `MAX_USERS_PER_ORG`), list a page at a time, delete (their
//! sessions end at once).

use super::access::{active_org, require_write};
use super::audit::record_by;
use super::page::{self, DEFAULT_LIMIT, Page, PageRequest, UserKey};
use super::views::UserView;
use super::{ApiError, App, Ctx, validate};
use crate::db::DbError;
use crate::db::users::{self, Role};
use crate::secret::Secret;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserCreate {
    pub email: String,
    pub password: Secret<String>,
    pub role: String,
}

/// The page of users a request asks for (`limit`, `cursor`).
pub fn page(limit: Option<&str>, cursor: Option<&str>) -> Result<PageRequest<UserKey>, ApiError> {
    page::request(limit, cursor, DEFAULT_LIMIT)
}

pub async fn create(app: &App, ctx: &Ctx, input: UserCreate) -> Result<UserView, ApiError> {
    require_write(ctx)?;
    let email = validate::email(&input.email)?;
    let role = match Role::parse(&input.role) {
        Some(r @ (Role::Admin | Role::Member)) => r,
        _ => return Err(ApiError::invalid("role", "must be admin or member")),
    };
    crate::auth::password::check_length(input.password.expose())
        .map_err(|e| ApiError::invalid("password", e))?;
    active_org(app, ctx).await?;
    let hash = app
        .hasher
        .hash(input.password)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let max = app.ctl.deps().quotas.users;
    let user = users::create(&app.pool, ctx.org(), &email, &hash, role, max)
        .await
        .map_err(|e| match e {
            DbError::Conflict(_) => ApiError::conflict("a user with this email already exists"),
            e => e.into(),
        })?;
    let detail = serde_json::json!({"email": user.email, "role": role.as_str()});
    record_by(app, ctx, "user.create", "user", user.id, detail).await;
    Ok(UserView::full(&user))
}

/// `GET /orgs/{org}/users`: by creation, then id.
pub async fn list(
    app: &App,
    ctx: &Ctx,
    req: PageRequest<UserKey>,
) -> Result<Page<UserView>, ApiError> {
    active_org(app, ctx).await?;
    let after = req.after.map(|k| (k.created_at, k.id));
    let rows = users::list_page(&app.pool, ctx.org(), after, req.limit as i64 + 1).await?;
    let page = Page::of(rows, req.limit, |u| UserKey {
        created_at: u.created_at,
        id: u.id,
    });
    Ok(page.map(|u| UserView::full(&u)))
}

pub async fn delete(app: &App, ctx: &Ctx) -> Result<(), ApiError> {
    require_write(ctx)?;
    active_org(app, ctx).await?;
    let id = ctx.id();
    if !users::delete(&app.pool, ctx.org(), id).await? {
        return Err(ApiError::not_found());
    }
    app.sessions.evict_where(|s| s.user.id == id);
    record_by(app, ctx, "user.delete", "user", id, serde_json::json!({})).await;
    Ok(())
}
