//! Machines: a tenant's peers. Addresses are allocated lowest-free inside a transaction that
//! locks the org row, and a UNIQUE(org_id, address) constraint backs that up.

use super::{Conn, DbError, Pool, pending};
use crate::keys::PublicKey;
use crate::overlay::Ipv4Cidr;
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use tokio_postgres::Row;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub address: Ipv4Addr,
    pub public_key: PublicKey,
    pub tags: Vec<String>,
    /// Where the hub last saw the machine.
    pub last_endpoint: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewMachine {
    pub id: Uuid,
    pub name: String,
    pub public_key: PublicKey,
    pub tags: Vec<String>,
}

pub(super) const COLUMNS: &str =
    "id, org_id, name, address, public_key, tags, created_at, last_endpoint";

pub(super) fn from_row(row: &Row) -> Result<Machine, DbError> {
    let address = match row.get::<_, IpAddr>(3) {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => return Err(DbError::Corrupt("machines.address".into())),
    };
    let key: String = row.get(4);
    Ok(Machine {
        id: row.get(0),
        org_id: row.get(1),
        name: row.get(2),
        address,
        public_key: PublicKey::from_base64(&key)
            .map_err(|_| DbError::Corrupt("machines.public_key".into()))?,
        tags: row.get(5),
        created_at: row.get(6),
        last_endpoint: row.get(7),
    })
}

/// Inserts a machine, pending until `pending_for` from now (see [`super::pending`]), at the lowest
/// free address of its org's network.
pub async fn insert_lowest_free(
    pool: &Pool,
    org_id: Uuid,
    new: &NewMachine,
    pending_for: std::time::Duration,
    max: u32,
) -> Result<Machine, DbError> {
    let mut conn = pool.get().await?;
    // Prepared once per connection; each statement below is then one round trip.
    let lock = conn
        .prepared("SELECT cidr::text FROM orgs WHERE id = $1 AND state = 'active' FOR UPDATE")
        .await?;
    let addresses = conn
        .prepared("SELECT address FROM machines WHERE org_id = $1")
        .await?;
    let insert = conn
        .prepared(&format!(
            "INSERT INTO machines (id, org_id, name, address, public_key, tags, pending_until) \
             VALUES ($1, $2, $3, $4, $5, $6, {}) RETURNING {COLUMNS}",
            pending::deadline(7)
        ))
        .await?;
    let tx = conn.transaction().await?;
    // Serialises allocation per org, across processes too. Pipelined: the server reads the
    // addresses once it holds the lock.
    let by_org: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&org_id];
    let (org, used) =
        tokio::try_join!(tx.query_opt(&lock, &by_org), tx.query(&addresses, &by_org))?;
    let Some(org) = org else {
        return Err(DbError::NotFound);
    };
    let cidr: Ipv4Cidr = org
        .get::<_, String>(0)
        .parse()
        .map_err(|_| DbError::Corrupt("orgs.cidr".into()))?;
    let used: BTreeSet<Ipv4Addr> = used
        .iter()
        .filter_map(|r| match r.get::<_, IpAddr>(0) {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
        .collect();
    if used.len() >= max as usize {
        return Err(DbError::Quota {
            what: "machines",
            max,
            var: "MAX_MACHINES_PER_ORG",
        });
    }
    let address = cidr
        .lowest_free(&used)
        .ok_or(DbError::Exhausted("address in the org network"))?;
    let row = tx
        .query_one(
            &insert,
            &[
                &new.id,
                &org_id,
                &new.name,
                &IpAddr::V4(address),
                &new.public_key.to_base64(),
                &new.tags,
                &pending::seconds(pending_for),
            ],
        )
        .await?;
    tx.commit().await?;
    from_row(&row)
}

/// The org's rows that satisfy `rows` (SQL over `$2`… from `more`), in the order the kernel
/// takes them.
async fn list_where(
    conn: &Conn<'_>,
    org_id: Uuid,
    rows: &str,
    more: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Machine>, DbError> {
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&org_id];
    params.extend_from_slice(more);
    conn.query_cached(
        &format!("SELECT {COLUMNS} FROM machines WHERE org_id = $1 AND {rows} ORDER BY address"),
        &params,
    )
    .await?
    .iter()
    .map(from_row)
    .collect()
}

/// The machines the hub should have as peers: confirmed or pending within their deadline.
pub(crate) async fn list_with(conn: &Conn<'_>, org_id: Uuid) -> Result<Vec<Machine>, DbError> {
    list_where(conn, org_id, pending::LIVE, &[]).await
}

/// Those of `ids` the hub should have as peers (see [`list_with`]).
pub(crate) async fn some_with(
    conn: &Conn<'_>,
    org_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Machine>, DbError> {
    let rows = format!("id = ANY($2) AND {}", pending::LIVE);
    list_where(conn, org_id, &rows, &[&ids]).await
}

/// The org's machines (confirmed ones: a machine being created is not one yet).
pub async fn list(pool: &Pool, org_id: Uuid) -> Result<Vec<Machine>, DbError> {
    let conn = pool.get().await?;
    list_where(&conn, org_id, pending::CONFIRMED, &[]).await
}

pub async fn get(pool: &Pool, org_id: Uuid, id: Uuid) -> Result<Option<Machine>, DbError> {
    let conn = pool.get().await?;
    conn.query_opt_cached(
        &format!(
            "SELECT {COLUMNS} FROM machines WHERE org_id = $1 AND id = $2 AND {}",
            pending::CONFIRMED
        ),
        &[&org_id, &id],
    )
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// Changes name and/or tags.
pub async fn update(
    pool: &Pool,
    org_id: Uuid,
    id: Uuid,
    name: Option<&str>,
    tags: Option<&[String]>,
) -> Result<Option<Machine>, DbError> {
    let conn = pool.get().await?;
    conn.query_opt(
        &format!(
            "UPDATE machines SET name = COALESCE($3, name), tags = COALESCE($4, tags) \
             WHERE org_id = $1 AND id = $2 AND {} RETURNING {COLUMNS}",
            pending::CONFIRMED
        ),
        &[&org_id, &id, &name, &tags],
    )
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// Records where the hub saw machines (only the ones that changed are passed in).
pub async fn record_endpoints(
    pool: &Pool,
    org_id: Uuid,
    seen: &[(Uuid, String)],
) -> Result<(), DbError> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    for (id, endpoint) in seen {
        tx.execute(
            "UPDATE machines SET last_endpoint = $3 WHERE org_id = $1 AND id = $2",
            &[&org_id, id, endpoint],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn delete(pool: &Pool, org_id: Uuid, id: Uuid) -> Result<bool, DbError> {
    let conn = pool.get().await?;
    Ok(conn
        .execute(
            &format!(
                "DELETE FROM machines WHERE org_id = $1 AND id = $2 AND {}",
                pending::CONFIRMED
            ),
            &[&org_id, &id],
        )
        .await?
        == 1)
}

impl Machine {
    /// What policy rendering and evaluation need of a machine.
    pub fn addr(&self) -> crate::policy::render::MachineAddr {
        crate::policy::render::MachineAddr {
            id: self.id,
            address: self.address,
            tags: self.tags.iter().cloned().collect(),
        }
    }
}

/// Replaces a confirmed machine's public key, if it still is `old` (a concurrent rotation
/// loses); returns the machine as it now is.
pub async fn set_public_key(
    pool: &Pool,
    org_id: Uuid,
    id: Uuid,
    old: &PublicKey,
    new: &PublicKey,
) -> Result<Option<Machine>, DbError> {
    let conn = pool.get().await?;
    conn.query_opt(
        &format!(
            "UPDATE machines SET public_key = $4 \
             WHERE org_id = $1 AND id = $2 AND public_key = $3 AND {} RETURNING {COLUMNS}",
            pending::CONFIRMED
        ),
        &[&org_id, &id, &old.to_base64(), &new.to_base64()],
    )
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}
