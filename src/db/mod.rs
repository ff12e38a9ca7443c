//! PostgreSQL: the pool, migrations (under an advisory lock, so two starts at once are safe) and
//! one module per table group. Errors are classified here once: unavailable, conflict (a unique
//! constraint), constraint, other.

pub mod audit;
pub mod batch;
pub mod events;
pub mod installation;
pub mod machines;
pub mod orgs;
pub mod pending;
pub mod policies;
pub mod sessions;
pub mod users;

use crate::secret::Secret;
use bb8_postgres::PostgresConnectionManager;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, Statement};

pub type Pool = bb8::Pool<Manager>;
pub type Conn<'a> = bb8::PooledConnection<'a, Manager>;

/// A pooled connection with its own cache of prepared statements, so a hot query costs one
/// round trip (bind and execute) instead of two (parse, then bind and execute).
pub struct Client {
    client: tokio_postgres::Client,
    prepared: Mutex<HashMap<String, Statement>>,
}

impl std::ops::Deref for Client {
    type Target = tokio_postgres::Client;
    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

impl std::ops::DerefMut for Client {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.client
    }
}

impl Client {
    /// `sql` prepared on this connection, once.
    pub async fn prepared(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(st) = self
            .prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sql)
        {
            return Ok(st.clone());
        }
        let st = self.client.prepare(sql).await?;
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sql.to_string(), st.clone());
        Ok(st)
    }

    /// `query` with the statement prepared once per connection.
    pub async fn query_cached(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let st = self.prepared(sql).await?;
        self.client.query(&st, params).await
    }

    /// `query_opt` with the statement prepared once per connection.
    pub async fn query_opt_cached(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let st = self.prepared(sql).await?;
        self.client.query_opt(&st, params).await
    }
}

/// bb8's PostgreSQL manager, handing out [`Client`]s.
pub struct Manager(PostgresConnectionManager<NoTls>);

impl bb8::ManageConnection for Manager {
    type Connection = Client;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<Client, Self::Error> {
        Ok(Client {
            client: self.0.connect().await?,
            prepared: Mutex::new(HashMap::new()),
        })
    }

    async fn is_valid(&self, conn: &mut Client) -> Result<(), Self::Error> {
        self.0.is_valid(&mut conn.client).await
    }

    fn has_broken(&self, conn: &mut Client) -> bool {
        self.0.has_broken(&mut conn.client)
    }
}

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
    /// A per-org limit is reached: at most `max` of `what` (configured by `var`).
    #[error("an org has at most {max} {what} ({var})")]
    Quota {
        what: &'static str,
        max: u32,
        var: &'static str,
    },
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

/// Connections in the pool: a burst of requests (each a few short queries, creations holding
/// one while they wait for their org's row lock) must queue, not fail.
pub const POOL_SIZE: u32 = 32;
/// Connections kept open while idle. Opening one costs PostgreSQL a backend start; a burst
/// that found the pool cold would spend its wait on those (on a slow machine, all of it) and
/// be told the database is unavailable while it is merely busy starting backends.
pub const POOL_WARM: u32 = POOL_SIZE / 2;
/// How long a request waits for a pooled connection before it is told the database is
/// unavailable.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// A pool that does not wait for a connection when it is made, so the caller decides how to
/// wait; it opens [`POOL_WARM`] connections in the background and keeps them.
pub fn pool(url: &Secret<String>) -> Result<Pool, DbError> {
    let config = config(url)?;
    let manager = Manager(PostgresConnectionManager::new(config, NoTls));
    Ok(bb8::Pool::builder()
        .max_size(POOL_SIZE)
        .min_idle(Some(POOL_WARM))
        .connection_timeout(POOL_WAIT)
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
    let result = match embedded::migrations::runner()
        .run_async(&mut conn.client)
        .await
    {
        Ok(report) => users::backfill_email_keys(&conn)
            .await
            .map(|()| report.applied_migrations().len()),
        Err(e) => Err(DbError::Migration(e.to_string())),
    };
    conn.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    result
}

/// A per-org quota on the rows of one table, checked inside the transaction that inserts one.
pub(crate) struct OrgQuota {
    table: &'static str,
    var: &'static str,
    lock: Statement,
    count: Statement,
}

impl OrgQuota {
    /// Prepares the check on `conn` (once per connection), before its transaction begins.
    pub(crate) async fn prepare(
        conn: &Client,
        table: &'static str,
        var: &'static str,
    ) -> Result<Self, DbError> {
        Ok(OrgQuota {
            table,
            var,
            lock: conn
                .prepared("SELECT 1 FROM orgs WHERE id = $1 AND state = 'active' FOR UPDATE")
                .await?,
            count: conn
                .prepared(&format!("SELECT count(*) FROM {table} WHERE org_id = $1"))
                .await?,
        })
    }

    /// Locks the org's row (which must be active: else [`DbError::NotFound`]), so parallel
    /// creations cannot both pass, and fails with [`DbError::Quota`] if the org already has
    /// `max` rows. The two statements go together; the server counts once it holds the lock.
    pub(crate) async fn check(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        org_id: uuid::Uuid,
        max: u32,
    ) -> Result<(), DbError> {
        let by_org: [&(dyn ToSql + Sync); 1] = [&org_id];
        let (locked, count) = tokio::try_join!(
            tx.query_opt(&self.lock, &by_org),
            tx.query_one(&self.count, &by_org)
        )?;
        locked.ok_or(DbError::NotFound)?;
        if count.get::<_, i64>(0) >= i64::from(max) {
            return Err(DbError::Quota {
                what: self.table,
                max,
                var: self.var,
            });
        }
        Ok(())
    }
}

/// True if a trivial query answers.
pub async fn ping(pool: &Pool) -> bool {
    match pool.get().await {
        Ok(conn) => conn.simple_query("SELECT 1").await.is_ok(),
        Err(_) => false,
    }
}
