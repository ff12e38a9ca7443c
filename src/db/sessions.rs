//! Server-side sessions: a JWT is only honoured while its session row exists, so logout,
//! password change and user deletion take effect at once.

use super::users::{Role, User};
use super::{DbError, Pool};
use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
    pub user: User,
}

pub async fn create(
    pool: &Pool,
    id: Uuid,
    user_id: Uuid,
    csrf_token: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), DbError> {
    let conn = pool.get().await?;
    let insert = conn
        .prepared(
            "INSERT INTO sessions (id, user_id, csrf_token, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .await?;
    conn.execute(&insert, &[&id, &user_id, &csrf_token, &expires_at])
        .await?;
    // Expired rows are of no use to anybody.
    let expired = conn
        .prepared("DELETE FROM sessions WHERE expires_at < now()")
        .await?;
    conn.execute(&expired, &[]).await?;
    Ok(())
}

/// A live session with its user, or `None`.
pub async fn get(pool: &Pool, id: Uuid) -> Result<Option<Session>, DbError> {
    let conn = pool.get().await?;
    let Some(r) = conn
        .query_opt_cached(
            "SELECT s.id, s.csrf_token, s.expires_at, u.id, u.org_id, u.email, u.role, u.created_at \
             FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1 AND s.expires_at > now()",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let role: String = r.get(6);
    Ok(Some(Session {
        id: r.get(0),
        csrf_token: r.get(1),
        expires_at: r.get(2),
        user: User {
            id: r.get(3),
            org_id: r.get(4),
            email: r.get(5),
            role: Role::parse(&role).ok_or_else(|| DbError::Corrupt("users.role".into()))?,
            created_at: r.get(7),
        },
    }))
}

pub async fn delete(pool: &Pool, id: Uuid) -> Result<(), DbError> {
    let conn = pool.get().await?;
    let delete = conn.prepared("DELETE FROM sessions WHERE id = $1").await?;
    conn.execute(&delete, &[&id]).await?;
    Ok(())
}
