//! Users. Password hashes are Argon2id PHC strings; plain passwords never reach this module.

use super::{DbError, Pool};
use uuid::Uuid;

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
            "SELECT id, role FROM users WHERE lower(email) = lower($1) FOR UPDATE",
            &[&email],
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
                "INSERT INTO users (id, org_id, email, password_hash, role) VALUES ($1, NULL, $2, $3, 'operator')",
                &[&id, &email, &password_hash],
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
            "SELECT 1 FROM users WHERE lower(email) = lower($1) AND role = 'operator'",
            &[&email],
        )
        .await?
        .is_some())
}
