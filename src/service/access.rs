//! Who may do what: the caller's context (session, the org and id of the path) and the checks
//! every operation shares. The org in the path is checked against the session before anything
//! else looks at it, so another tenant's ids are indistinguishable from ids that do not exist.

use super::{ApiError, App};
use crate::db::orgs::{Org, OrgState};
use crate::db::sessions::Session;
use crate::db::users::Role;
use std::sync::Arc;
use uuid::Uuid;

/// What an operation knows of its caller and target.
pub struct Ctx {
    pub session: Option<Session>,
    pub org: Option<Uuid>,
    pub id: Option<Uuid>,
}

impl Ctx {
    /// A caller without a session (health, login).
    pub fn anonymous() -> Ctx {
        Ctx {
            session: None,
            org: None,
            id: None,
        }
    }

    /// The context of a request whose session (if the route needs one) is already
    /// authenticated: the raw `{org}` and `{id}` of the path become ids. Another tenant's org,
    /// and anything that is not an id at all, is simply not found.
    pub fn scoped(
        session: Option<Session>,
        org: Option<&str>,
        id: Option<&str>,
    ) -> Result<Ctx, ApiError> {
        let org = match org {
            None => None,
            Some(raw) => {
                let org = Uuid::parse_str(raw).map_err(|_| ApiError::not_found())?;
                if !session.as_ref().is_some_and(|s| can_see(s, org)) {
                    return Err(ApiError::not_found());
                }
                Some(org)
            }
        };
        let id = id
            .map(|raw| Uuid::parse_str(raw).map_err(|_| ApiError::not_found()))
            .transpose()?;
        Ok(Ctx { session, org, id })
    }

    /// The session of an authenticated operation.
    pub fn session(&self) -> &Session {
        self.session.as_ref().expect("authenticated route")
    }

    pub fn org(&self) -> Uuid {
        self.org.expect("route has {org}")
    }

    pub fn id(&self) -> Uuid {
        self.id.expect("route has {id}")
    }

    pub fn role(&self) -> Role {
        self.session().user.role
    }
}

/// Whether the session may look at an org at all.
pub fn can_see(session: &Session, org: Uuid) -> bool {
    session.user.role == Role::Operator || session.user.org_id == Some(org)
}

pub fn can_write(session: &Session) -> bool {
    matches!(session.user.role, Role::Operator | Role::Admin)
}

pub fn require_write(ctx: &Ctx) -> Result<(), ApiError> {
    if can_write(ctx.session()) {
        Ok(())
    } else {
        Err(ApiError::forbidden("members can read but not change"))
    }
}

pub fn require_operator(ctx: &Ctx) -> Result<(), ApiError> {
    if ctx.role() == Role::Operator {
        Ok(())
    } else {
        Err(ApiError::forbidden("only the operator can do this"))
    }
}

/// The active org of the path (visibility was checked by [`Ctx::scoped`]); an org being
/// created or deleted is not found.
pub async fn active_org(app: &App, ctx: &Ctx) -> Result<Arc<Org>, ApiError> {
    match app.reads.org(app, ctx.org()).await? {
        Some(o) if o.state == OrgState::Active => Ok(o),
        _ => Err(ApiError::not_found()),
    }
}
