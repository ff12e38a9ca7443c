//! PostgreSQL: the pool, migrations (under an advisory lock, so two starts at once are safe) and
//! one module per table group. Errors are classified here once: unavailable, conflict (a unique
//! constraint), constraint, other.

pub mod audit;
pub mod machines;
pub mod orgs;
pub mod policies;
pub mod sessions;
pub mod users;

use crate::secret::Secret;
use bb8_postgres::PostgresConnectionManager;
use std::time::Duration;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

pub type Pool = bb8::Pool<PostgresConnectionManager<NoTls>>;
pub type Conn<'a> = bb8::PooledConnection<'a, PostgresConnectionManager<NoTls>>;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Key of the session-level advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x6d65_7368_7767_0001;
/// Key of the transaction-level advisory lock that serialises listen-port allocation.
pub(crate) const PORT_LOCK: i64 = 0x6d65_7368_7767_0002;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("conflicts with an existing row ({0})")]
    Conflict(String),
    #[error("violates a database constraint: {0}")]
    Constraint(String),
    #[error("not found")]
    NotFound,
    #[error("no free {0} left")]
    Exhausted(&'static str),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database error: {0}")]
    Other(String),
}

impl DbError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DbError::Unavailable(_))
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            // No server error: the connection itself failed or closed.
            return DbError::Unavailable(e.to_string());
        };
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION {
            DbError::Conflict(db.constraint().unwrap_or("unique").to_string())
        } else if [
            SqlState::CHECK_VIOLATION,
            SqlState::FOREIGN_KEY_VIOLATION,
            SqlState::NOT_NULL_VIOLATION,
        ]
        .contains(code)
        {
            DbError::Constraint(db.message().to_string())
        } else if code.code().starts_with("08")
            || code.code().starts_with("57P")
            || *code == SqlState::TOO_MANY_CONNECTIONS
        {
            DbError::Unavailable(db.message().to_string())
        } else {
            DbError::Other(db.message().to_string())
        }
    }
}

impl From<bb8::RunError<tokio_postgres::Error>> for DbError {
    fn from(e: bb8::RunError<tokio_postgres::Error>) -> Self {
        match e {
            bb8::RunError::User(e) => DbError::Unavailable(e.to_string()),
            bb8::RunError::TimedOut => {
                DbError::Unavailable("timed out waiting for a connection".into())
            }
        }
    }
}

fn config(url: &Secret<String>) -> Result<tokio_postgres::Config, DbError> {
    url.expose()
        .parse()
        .map_err(|_| DbError::Other("DATABASE_URL is not a valid connection string".into()))
}

/// The connection settings for the dedicated `LISTEN` connection.
pub fn listen_config(url: &Secret<String>) -> Result<tokio_postgres::Config, DbError> {
    config(url)
}

/// A pool that does not connect until first use, so the caller decides how to wait.
pub fn pool(url: &Secret<String>) -> Result<Pool, DbError> {
    let config = config(url)?;
    let manager = PostgresConnectionManager::new(config, NoTls);
    Ok(bb8::Pool::builder()
        .max_size(16)
        .connection_timeout(Duration::from_secs(3))
        .build_unchecked(manager))
}

/// Applies pending migrations; concurrent callers wait for each other on an advisory lock.
pub async fn migrate(pool: &Pool) -> Result<usize, DbError> {
    let mut conn = pool.get().await?;
    // Length limits are in characters; in a SQL_ASCII database they would count bytes and
    // refuse valid names in any non-Latin script.
    let encoding: String = conn.query_one("SHOW server_encoding", &[]).await?.get(0);
    if encoding != "UTF8" {
        return Err(DbError::Migration(format!(
            "the database uses encoding {encoding}; MeshWG needs UTF8 \
             (CREATE DATABASE meshwg ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0)"
        )));
    }
    conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = embedded::migrations::runner().run_async(&mut *conn).await;
    conn.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    let report = result.map_err(|e| DbError::Migration(e.to_string()))?;
    Ok(report.applied_migrations().len())
}

/// True if a trivial query answers.
pub async fn ping(pool: &Pool) -> bool {
    match pool.get().await {
        Ok(conn) => conn.simple_query("SELECT 1").await.is_ok(),
        Err(_) => false,
    }
}
