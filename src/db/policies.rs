//! Policies: stored as the API writes them; selectors are JSONB in their API form.

use super::{Conn, DbError, Pool, pending};
use crate::policy::{Policy, PortRange, Protocol, Selector, Verdict};
use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::Json;
use uuid::Uuid;

/// The writable fields of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFields {
    pub name: String,
    pub priority: i32,
    pub action: Verdict,
    pub src: Selector,
    pub dst: Selector,
    pub protocol: Protocol,
    pub ports: Option<PortRange>,
    pub enabled: bool,
}

impl PolicyFields {
    pub fn of(p: &Policy) -> Self {
        Self {
            name: p.name.clone(),
            priority: p.priority,
            action: p.action,
            src: p.src.clone(),
            dst: p.dst.clone(),
            protocol: p.protocol,
            ports: p.ports,
            enabled: p.enabled,
        }
    }
}

const COLUMNS: &str = "id, name, priority, action, src, dst, protocol, ports, enabled, created_at";

fn from_row(row: &Row) -> Result<Policy, DbError> {
    let corrupt = |what: &str| DbError::Corrupt(format!("policies.{what}"));
    let action: String = row.get(3);
    let protocol: String = row.get(6);
    let ports: Option<String> = row.get(7);
    Ok(Policy {
        id: row.get(0),
        name: row.get(1),
        priority: row.get(2),
        action: Verdict::parse(&action).ok_or_else(|| corrupt("action"))?,
        // Straight from the column's bytes (no `serde_json::Value` in between: a tenant's read
        // of 2,000 policies is on the way of every policy change).
        src: row
            .try_get::<_, Json<Selector>>(4)
            .map_err(|_| corrupt("src"))?
            .0,
        dst: row
            .try_get::<_, Json<Selector>>(5)
            .map_err(|_| corrupt("dst"))?
            .0,
        protocol: Protocol::parse(&protocol).ok_or_else(|| corrupt("protocol"))?,
        ports: ports
            .map(|p| p.parse())
            .transpose()
            .map_err(|_| corrupt("ports"))?,
        enabled: row.get(8),
        created_at: row.get(9),
    })
}

fn json(sel: &Selector) -> serde_json::Value {
    serde_json::to_value(sel).expect("selectors always serialise")
}

/// The org's rows that satisfy `rows` (SQL over `$2`… from `more`), in the order the kernel
/// takes them.
async fn list_where(
    conn: &Conn<'_>,
    org_id: Uuid,
    rows: &str,
    more: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Policy>, DbError> {
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&org_id];
    params.extend_from_slice(more);
    conn.query_cached(
        &format!(
            "SELECT {COLUMNS} FROM policies WHERE org_id = $1 AND {rows} \
             ORDER BY priority, created_at, id"
        ),
        &params,
    )
    .await?
    .iter()
    .map(from_row)
    .collect()
}

/// The policies the kernel should enforce: confirmed or pending within their deadline.
pub(crate) async fn list_with(conn: &Conn<'_>, org_id: Uuid) -> Result<Vec<Policy>, DbError> {
    list_where(conn, org_id, pending::LIVE, &[]).await
}

/// Those of `ids` the kernel should enforce (see [`list_with`]).
pub(crate) async fn some_with(
    conn: &Conn<'_>,
    org_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Policy>, DbError> {
    let rows = format!("id = ANY($2) AND {}", pending::LIVE);
    list_where(conn, org_id, &rows, &[&ids]).await
}

/// The org's policies (confirmed ones: a policy being created is not one yet).
pub async fn list(pool: &Pool, org_id: Uuid) -> Result<Vec<Policy>, DbError> {
    let conn = pool.get().await?;
    list_where(&conn, org_id, pending::CONFIRMED, &[]).await
}

/// Up to `limit` of the org's policies in evaluation order (priority, creation, id), after
/// `after` if given (keyset).
pub async fn list_page(
    pool: &Pool,
    org_id: Uuid,
    after: Option<(i32, DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Policy>, DbError> {
    let conn = pool.get().await?;
    let order = "ORDER BY priority, created_at, id";
    let rows = match after {
        None => {
            conn.query_cached(
                &format!(
                    "SELECT {COLUMNS} FROM policies WHERE org_id = $1 AND {} {order} LIMIT $2",
                    pending::CONFIRMED
                ),
                &[&org_id, &limit],
            )
            .await?
        }
        Some((priority, at, id)) => {
            conn.query_cached(
                &format!(
                    "SELECT {COLUMNS} FROM policies WHERE org_id = $1 AND {} \
                     AND (priority, created_at, id) > ($2, $3, $4) {order} LIMIT $5",
                    pending::CONFIRMED
                ),
                &[&org_id, &priority, &at, &id, &limit],
            )
            .await?
        }
    };
    rows.iter().map(from_row).collect()
}

pub async fn get(pool: &Pool, org_id: Uuid, id: Uuid) -> Result<Option<Policy>, DbError> {
    let conn = pool.get().await?;
    conn.query_opt_cached(
        &format!(
            "SELECT {COLUMNS} FROM policies WHERE org_id = $1 AND id = $2 AND {}",
            pending::CONFIRMED
        ),
        &[&org_id, &id],
    )
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// Inserts a policy that is in force at once (no pending stage).
pub async fn insert(
    pool: &Pool,
    org_id: Uuid,
    id: Uuid,
    f: &PolicyFields,
) -> Result<Policy, DbError> {
    insert_until(pool, org_id, id, f, None, None).await
}

/// Inserts a policy pending until `pending_for` from now (see [`super::pending`]).
pub async fn insert_pending(
    pool: &Pool,
    org_id: Uuid,
    id: Uuid,
    f: &PolicyFields,
    pending_for: std::time::Duration,
    max: u32,
) -> Result<Policy, DbError> {
    insert_until(
        pool,
        org_id,
        id,
        f,
        Some(pending::seconds(pending_for)),
        Some(max),
    )
    .await
}

async fn insert_until(
    pool: &Pool,
    org_id: Uuid,
    id: Uuid,
    f: &PolicyFields,
    pending_secs: Option<f64>,
    max: Option<u32>,
) -> Result<Policy, DbError> {
    let mut conn = pool.get().await?;
    let quota = match max {
        Some(max) => Some((
            super::OrgQuota::prepare(&conn, "policies", "MAX_POLICIES_PER_ORG").await?,
            max,
        )),
        None => None,
    };
    let insert = conn
        .prepared(&format!(
            "INSERT INTO policies (id, org_id, name, priority, action, src, dst, protocol, ports, \
             enabled, pending_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             CASE WHEN $11::float8 IS NULL THEN NULL ELSE {} END) RETURNING {COLUMNS}",
            pending::deadline(11)
        ))
        .await?;
    let tx = conn.transaction().await?;
    if let Some((quota, max)) = &quota {
        quota.check(&tx, org_id, *max).await?;
    }
    let row = tx
        .query_one(
            &insert,
            &[
                &id,
                &org_id,
                &f.name,
                &f.priority,
                &f.action.as_str(),
                &json(&f.src),
                &json(&f.dst),
                &f.protocol.as_str(),
                &f.ports.map(|p| p.to_string()),
                &f.enabled,
                &pending_secs,
            ],
        )
        .await?;
    tx.commit().await?;
    from_row(&row)
}

/// Replaces every writable field.
pub async fn update(
    pool: &Pool,
    org_id: Uuid,
    id: Uuid,
    f: &PolicyFields,
) -> Result<Option<Policy>, DbError> {
    let conn = pool.get().await?;
    conn.query_opt_cached(
        &format!(
            "UPDATE policies SET name = $3, priority = $4, action = $5, src = $6, dst = $7, protocol = $8, \
             ports = $9, enabled = $10, updated_at = now() WHERE org_id = $1 AND id = $2 AND {} \
             RETURNING {COLUMNS}",
            pending::CONFIRMED
        ),
        &[
            &org_id,
            &id,
            &f.name,
            &f.priority,
            &f.action.as_str(),
            &json(&f.src),
            &json(&f.dst),
            &f.protocol.as_str(),
            &f.ports.map(|p| p.to_string()),
            &f.enabled,
        ],
    )
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// Gives the org's confirmed policies these priorities (one statement, so all or none); returns
/// how many rows took one.
pub async fn set_priorities(
    pool: &Pool,
    org_id: Uuid,
    priorities: &[(Uuid, i32)],
) -> Result<u64, DbError> {
    let conn = pool.get().await?;
    let ids: Vec<Uuid> = priorities.iter().map(|(id, _)| *id).collect();
    let values: Vec<i32> = priorities.iter().map(|(_, p)| *p).collect();
    Ok(conn
        .execute(
            &format!(
                "UPDATE policies SET priority = v.priority, updated_at = now() \
                 FROM unnest($2::uuid[], $3::int[]) AS v(id, priority) \
                 WHERE policies.org_id = $1 AND policies.id = v.id AND policies.priority <> v.priority \
                 AND {}",
                pending::CONFIRMED
            ),
            &[&org_id, &ids, &values],
        )
        .await?)
}

pub async fn delete(pool: &Pool, org_id: Uuid, id: Uuid) -> Result<bool, DbError> {
    let conn = pool.get().await?;
    Ok(conn
        .execute(
            &format!(
                "DELETE FROM policies WHERE org_id = $1 AND id = $2 AND {}",
                pending::CONFIRMED
            ),
            &[&org_id, &id],
        )
        .await?
        == 1)
}
