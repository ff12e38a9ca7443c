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
    /// The table named `name` (as in a notification).
    pub fn parse(name: &str) -> Option<Table> {
        match name {
            "machines" => Some(Table::Machines),
            "policies" => Some(Table::Policies),
            _ => None,
        }
    }

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
    let conn = pool.get().await?;
    // One statement (one round trip, atomic): the audit entry is written only if the row was
    // confirmed.
    let sql = format!(
        "WITH confirmed AS (UPDATE {} SET pending_until = NULL \
         WHERE org_id = $8 AND id = $9 AND pending_until > now() RETURNING id) {}",
        table.name(),
        audit::insert_per_row("confirmed")
    );
    let [a, b, c, d, e, f, g] = entry.params();
    let n = conn
        .execute(
            &conn.prepared(&sql).await?,
            &[a, b, c, d, e, f, g, &org_id, &id],
        )
        .await?;
    Ok(n == 1)
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
