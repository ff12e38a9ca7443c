//! Users. Password hashes are Argon2id PHC strings; plain passwords never reach this module.

use super::{Conn, DbError, Pool};
use crate::auth::email_key;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Operator,
    Admin,
    Member,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub org_id: Option<Uuid>,
    pub email: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, org_id, email, role, created_at";

fn from_row(row: &Row) -> Result<User, DbError> {
    let role: String = row.get(3);
    Ok(User {
        id: row.get(0),
        org_id: row.get(1),
        email: row.get(2),
        role: Role::parse(&role).ok_or_else(|| DbError::Corrupt("users.role".into()))?,
        created_at: row.get(4),
    })
}

/// The user with this email (by [`email_key`], so in any case) and their password hash.
pub async fn find_for_login(pool: &Pool, email: &str) -> Result<Option<(User, String)>, DbError> {
    let conn = pool.get().await?;
    conn.query_opt_cached(
        &format!("SELECT {COLUMNS}, password_hash FROM users WHERE email_key = $1"),
        &[&email_key(email)],
    )
    .await?
    .map(|r| Ok((from_row(&r)?, r.get(5))))
    .transpose()
}

pub async fn password_hash(pool: &Pool, id: Uuid) -> Result<Option<String>, DbError> {
    let conn = pool.get().await?;
    Ok(conn
        .query_opt_cached("SELECT password_hash FROM users WHERE id = $1", &[&id])
        .await?
        .map(|r| r.get(0)))
}

/// Sets a new password hash and ends every session of the user except `keep`.
pub async fn set_password(pool: &Pool, id: Uuid, hash: &str, keep: Uuid) -> Result<(), DbError> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    tx.execute(
        "UPDATE users SET password_hash = $2 WHERE id = $1",
        &[&id, &hash],
    )
    .await?;
    tx.execute(
        "DELETE FROM sessions WHERE user_id = $1 AND id <> $2",
        &[&id, &keep],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn create(
    pool: &Pool,
    org_id: Uuid,
    email: &str,
    hash: &str,
    role: Role,
    max: u32,
) -> Result<User, DbError> {
    let mut conn = pool.get().await?;
    let quota = super::OrgQuota::prepare(&conn, "users", "MAX_USERS_PER_ORG").await?;
    let tx = conn.transaction().await?;
    quota.check(&tx, org_id, max).await?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO users (id, org_id, email, email_key, password_hash, role) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
            ),
            &[
                &Uuid::new_v4(),
                &org_id,
                &email,
                &email_key(email),
                &hash,
                &role.as_str(),
            ],
        )
        .await?;
    tx.commit().await?;
    from_row(&row)
}

/// Up to `limit` users of an org in (creation, id) order, after `after` if given (keyset).
pub async fn list_page(
    pool: &Pool,
    org_id: Uuid,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<User>, DbError> {
    let conn = pool.get().await?;
    let rows = match after {
        None => {
            conn.query_cached(
                &format!(
                    "SELECT {COLUMNS} FROM users WHERE org_id = $1 ORDER BY created_at, id LIMIT $2"
                ),
                &[&org_id, &limit],
            )
            .await?
        }
        Some((at, id)) => {
            conn.query_cached(
                &format!(
                    "SELECT {COLUMNS} FROM users WHERE org_id = $1 AND (created_at, id) > ($2, $3) \
                     ORDER BY created_at, id LIMIT $4"
                ),
                &[&org_id, &at, &id, &limit],
            )
            .await?
        }
    };
    rows.iter().map(from_row).collect()
}

/// Deletes a user of an org; their sessions cascade.
pub async fn delete(pool: &Pool, org_id: Uuid, id: Uuid) -> Result<bool, DbError> {
    let conn = pool.get().await?;
    Ok(conn
        .execute(
            "DELETE FROM users WHERE org_id = $1 AND id = $2",
            &[&org_id, &id],
        )
        .await?
        == 1)
}

/// Creates the operator account or, if the email exists, resets its password (and kills its
/// sessions). Returns the user id.
pub async fn upsert_operator(
    pool: &Pool,
    email: &str,
    password_hash: &str,
) -> Result<Uuid, DbError> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    let existing = tx
        .query_opt(
            "SELECT id, role FROM users WHERE email_key = $1 FOR UPDATE",
            &[&email_key(email)],
        )
        .await?;
    let id = match existing {
        Some(row) => {
            let id: Uuid = row.get(0);
            let role: String = row.get(1);
            if role != "operator" {
                return Err(DbError::Conflict(format!(
                    "{email} is an org user, not an operator"
                )));
            }
            tx.execute(
                "UPDATE users SET password_hash = $2 WHERE id = $1",
                &[&id, &password_hash],
            )
            .await?;
            tx.execute("DELETE FROM sessions WHERE user_id = $1", &[&id])
                .await?;
            id
        }
        None => {
            let id = Uuid::new_v4();
            tx.execute(
                "INSERT INTO users (id, org_id, email, email_key, password_hash, role) \
                 VALUES ($1, NULL, $2, $3, $4, 'operator')",
                &[&id, &email, &email_key(email), &password_hash],
            )
            .await?;
            id
        }
    };
    tx.commit().await?;
    Ok(id)
}

/// True if an operator account with this email exists.
pub async fn operator_exists(pool: &Pool, email: &str) -> Result<bool, DbError> {
    let conn = pool.get().await?;
    Ok(conn
        .query_opt(
            "SELECT 1 FROM users WHERE email_key = $1 AND role = 'operator'",
            &[&email_key(email)],
        )
        .await?
        .is_some())
}

/// Gives rows made before schema version 2 their [`email_key`]; two accounts that the rule makes
/// one (`Åsa@…` and `åsa@…`, distinct under SQL's ASCII-only folding) stop the migration with
/// both names, for the operator to resolve.
pub(crate) async fn backfill_email_keys(conn: &Conn<'_>) -> Result<(), DbError> {
    let rows = conn
        .query("SELECT id, email FROM users WHERE email_key IS NULL", &[])
        .await?;
    for r in rows {
        let (id, email): (Uuid, String) = (r.get(0), r.get(1));
        let set = conn
            .execute(
                "UPDATE users SET email_key = $2 WHERE id = $1",
                &[&id, &email_key(&email)],
            )
            .await;
        match set.map_err(DbError::from) {
            Ok(_) => {}
            Err(DbError::Conflict(_)) => {
                return Err(DbError::Migration(format!(
                    "two accounts differ only in the case of their email ({email}); \
                     rename or delete one, then start again"
                )));
            }
            Err(e) => return Err(e),
        }
    }
    conn.execute("ALTER TABLE users ALTER COLUMN email_key SET NOT NULL", &[])
        .await?;
    Ok(())
}
