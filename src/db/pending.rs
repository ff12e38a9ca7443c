//! Rows that exist before they are real: a machine or policy is inserted *pending* (with a
//! deadline), installed in the kernel, and only then confirmed together with its audit entry in
//! one transaction. A creation that fails anywhere in between ends as nothing: its row is deleted
//! by whoever failed, or — if that failed too — it passes its deadline, the reconciler leaves it
//! out ([`LIVE`]) and [`sweep`] deletes it. So a row is either confirmed and audited, or gone.

use super::audit::{self, Entry};
use super::{DbError, Pool};
use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;

/// The tables whose rows are created pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Machines,
    Policies,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Machines => "machines",
            Table::Policies => "policies",
        }
    }
}

/// Rows the kernel should have: confirmed, or pending within their deadline.
pub const LIVE: &str = "(pending_until IS NULL OR pending_until > now())";
/// Rows the API shows and changes: confirmed only.
pub const CONFIRMED: &str = "pending_until IS NULL";

/// SQL for a deadline `for_` from now, as the parameter `$n` (seconds).
pub fn deadline(n: usize) -> String {
    format!("now() + make_interval(secs => ${n}::float8)")
}

pub fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Confirms a pending row and records its audit entry, atomically. `false` if the row is no
/// longer pending within its deadline (abandoned or past it): then nothing was recorded.
pub async fn confirm(
    pool: &Pool,
    table: Table,
    org_id: Uuid,
    id: Uuid,
    entry: &Entry<'_>,
) -> Result<bool, DbError> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    let n = tx
        .execute(
            &format!(
                "UPDATE {} SET pending_until = NULL \
                 WHERE org_id = $1 AND id = $2 AND pending_until > now()",
                table.name()
            ),
            &[&org_id, &id],
        )
        .await?;
    if n != 1 {
        return Ok(false);
    }
    audit::record_in(&tx, entry).await?;
    tx.commit().await?;
    Ok(true)
}

/// Deletes a row that is still pending; `false` if there was none (confirmed rows stay).
pub async fn abandon(pool: &Pool, table: Table, org_id: Uuid, id: Uuid) -> Result<bool, DbError> {
    let conn = pool.get().await?;
    Ok(conn
        .execute(
            &format!(
                "DELETE FROM {} WHERE org_id = $1 AND id = $2 AND pending_until IS NOT NULL",
                table.name()
            ),
            &[&org_id, &id],
        )
        .await?
        > 0)
}

/// Deletes every row past its deadline; returns the orgs that had some.
pub async fn sweep(pool: &Pool) -> Result<BTreeSet<Uuid>, DbError> {
    let conn = pool.get().await?;
    let mut orgs = BTreeSet::new();
    for table in [Table::Machines, Table::Policies] {
        let rows = conn
            .query(
                &format!(
                    "DELETE FROM {} WHERE pending_until <= now() RETURNING org_id",
                    table.name()
                ),
                &[],
            )
            .await?;
        orgs.extend(rows.iter().map(|r| r.get::<_, Uuid>(0)));
    }
    Ok(orgs)
}
