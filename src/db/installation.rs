//! The installation this database is (made by schema version 2), and which kernel ids it ever
//! issued: what lets the controller tell its own kernel objects from anybody else's.

use super::{DbError, Pool};
use uuid::Uuid;

/// This database's installation id.
pub async fn id(pool: &Pool) -> Result<Uuid, DbError> {
    let conn = pool.get().await?;
    Ok(conn
        .query_one("SELECT id FROM installation", &[])
        .await?
        .get(0))
}

/// The highest kernel id this database ever handed out (0 if none): an object with a higher
/// one was not made by this database.
pub async fn last_kid(pool: &Pool) -> Result<i64, DbError> {
    let conn = pool.get().await?;
    Ok(conn
        .query_one(
            "SELECT COALESCE(pg_sequence_last_value(pg_get_serial_sequence('orgs', 'kid')::regclass), 0)",
            &[],
        )
        .await?
        .get(0))
}
