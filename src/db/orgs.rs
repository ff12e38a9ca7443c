//! Orgs (tenants): the row every kernel object of a tenant derives from.

use super::machines::{self, Machine};
use super::pending::Table;
use super::policies;
use super::{Conn, DbError, PORT_LOCK, Pool};
use crate::crypto::SealedKey;
use crate::keys::PublicKey;
use crate::overlay::Ipv4Cidr;
use crate::policy::{Policy, Verdict};
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use tokio_postgres::Row;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrgState {
    Creating,
    Active,
    Deleting,
}

impl OrgState {
    pub fn as_str(&self) -> &'static str {
        match self {
            OrgState::Creating => "creating",
            OrgState::Active => "active",
            OrgState::Deleting => "deleting",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    pub id: Uuid,
    pub kid: i64,
    pub name: String,
    pub cidr: Ipv4Cidr,
    pub listen_port: u16,
    pub hub_public_key: PublicKey,
    pub sealed_key: SealedKey,
    pub default_action: Verdict,
    pub state: OrgState,
    pub created_at: DateTime<Utc>,
}

/// What a new org needs; the listen port is allocated on insert.
#[derive(Debug)]
pub struct NewOrg {
    pub id: Uuid,
    pub name: String,
    pub cidr: Ipv4Cidr,
    pub default_action: Verdict,
    pub hub_public_key: PublicKey,
    pub sealed_key: SealedKey,
}

const COLUMNS: &str = "id, kid, name, cidr::text, listen_port, hub_public_key, hub_key_version, \
                       hub_key_nonce, hub_key_ciphertext, default_action, state, created_at";

fn corrupt(what: &str) -> DbError {
    DbError::Corrupt(format!("orgs.{what}"))
}

fn from_row(row: &Row) -> Result<Org, DbError> {
    let cidr: String = row.get(3);
    let port: i32 = row.get(4);
    let key: String = row.get(5);
    let action: String = row.get(9);
    let state: String = row.get(10);
    Ok(Org {
        id: row.get(0),
        kid: row.get(1),
        name: row.get(2),
        cidr: cidr.parse().map_err(|_| corrupt("cidr"))?,
        listen_port: u16::try_from(port).map_err(|_| corrupt("listen_port"))?,
        hub_public_key: PublicKey::from_base64(&key).map_err(|_| corrupt("hub_public_key"))?,
        sealed_key: SealedKey {
            version: row.get(6),
            nonce: row.get(7),
            ciphertext: row.get(8),
        },
        default_action: Verdict::parse(&action).ok_or_else(|| corrupt("default_action"))?,
        state: match state.as_str() {
            "creating" => OrgState::Creating,
            "active" => OrgState::Active,
            "deleting" => OrgState::Deleting,
            _ => return Err(corrupt("state")),
        },
        created_at: row.get(11),
    })
}

/// The lowest port of `range` that no org holds and that `bindable` accepts.
pub fn pick_port(
    range: RangeInclusive<u16>,
    used: &BTreeSet<u16>,
    bindable: impl Fn(u16) -> bool,
) -> Option<u16> {
    range
        .into_iter()
        .find(|p| !used.contains(p) && bindable(*p))
}

/// True if nothing in the controller namespace holds UDP `port` (wireguard-go binds v4 and v6).
pub fn udp_port_free(port: u16) -> bool {
    use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
    let v4 = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok();
    let v6 = match UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port)) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::AddrInUse,
    };
    v4 && v6
}

/// Inserts an org in state `creating` with the lowest free listen port of `ports`.
pub async fn insert_creating(
    pool: &Pool,
    new: &NewOrg,
    ports: RangeInclusive<u16>,
) -> Result<Org, DbError> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PORT_LOCK])
        .await?;
    let used: BTreeSet<u16> = tx
        .query("SELECT listen_port FROM orgs", &[])
        .await?
        .iter()
        .filter_map(|r| u16::try_from(r.get::<_, i32>(0)).ok())
        .collect();
    let port = pick_port(ports, &used, udp_port_free).ok_or(DbError::Exhausted("listen port"))?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO orgs (id, name, cidr, listen_port, hub_public_key, hub_key_version, \
                 hub_key_nonce, hub_key_ciphertext, default_action, state) \
                 VALUES ($1, $2, $3::text::cidr, $4, $5, $6, $7, $8, $9, 'creating') RETURNING {COLUMNS}"
            ),
            &[
                &new.id,
                &new.name,
                &new.cidr.to_string(),
                &i32::from(port),
                &new.hub_public_key.to_base64(),
                &new.sealed_key.version,
                &new.sealed_key.nonce,
                &new.sealed_key.ciphertext,
                &new.default_action.as_str(),
            ],
        )
        .await?;
    tx.commit().await?;
    from_row(&row)
}

pub async fn get(pool: &Pool, id: Uuid) -> Result<Option<Org>, DbError> {
    let conn = pool.get().await?;
    get_with(&conn, id).await
}

async fn get_with(conn: &Conn<'_>, id: Uuid) -> Result<Option<Org>, DbError> {
    conn.query_opt_cached(&format!("SELECT {COLUMNS} FROM orgs WHERE id = $1"), &[&id])
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn list(pool: &Pool) -> Result<Vec<Org>, DbError> {
    let conn = pool.get().await?;
    conn.query(
        &format!("SELECT {COLUMNS} FROM orgs ORDER BY created_at, id"),
        &[],
    )
    .await?
    .iter()
    .map(from_row)
    .collect()
}

pub async fn set_state(pool: &Pool, id: Uuid, state: OrgState) -> Result<bool, DbError> {
    let conn = pool.get().await?;
    let n = conn
        .execute(
            "UPDATE orgs SET state = $2, updated_at = now() WHERE id = $1",
            &[&id, &state.as_str()],
        )
        .await?;
    Ok(n == 1)
}

/// Marks a `creating` org active and records its creation in the audit log, in one transaction
/// (an active org is always an audited one); false if it is no longer `creating` (a deletion
/// came first).
pub async fn activate_audited(
    pool: &Pool,
    id: Uuid,
    entry: &super::audit::Entry<'_>,
) -> Result<bool, DbError> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    let n = tx
        .execute(
            "UPDATE orgs SET state = 'active', updated_at = now() \
             WHERE id = $1 AND state = 'creating'",
            &[&id],
        )
        .await?;
    if n != 1 {
        return Ok(false);
    }
    super::audit::record_in(&tx, entry).await?;
    tx.commit().await?;
    Ok(true)
}

/// Changes name and/or default action; returns the updated org.
pub async fn update(
    pool: &Pool,
    id: Uuid,
    name: Option<&str>,
    default_action: Option<Verdict>,
) -> Result<Option<Org>, DbError> {
    let conn = pool.get().await?;
    conn.query_opt(
        &format!(
            "UPDATE orgs SET name = COALESCE($2, name), default_action = COALESCE($3, default_action), \
             updated_at = now() WHERE id = $1 AND state = 'active' RETURNING {COLUMNS}"
        ),
        &[&id, &name, &default_action.map(|a| a.as_str())],
    )
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// Deletes the org row; machines, users, sessions, policies and audit entries cascade.
pub async fn delete(pool: &Pool, id: Uuid) -> Result<bool, DbError> {
    let conn = pool.get().await?;
    Ok(conn
        .execute("DELETE FROM orgs WHERE id = $1", &[&id])
        .await?
        == 1)
}

/// Everything a tenant actor needs to compute its desired state, read on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub org: Org,
    pub machines: Vec<Machine>,
    pub policies: Vec<Policy>,
}

pub async fn snapshot(pool: &Pool, id: Uuid) -> Result<Option<Snapshot>, DbError> {
    Ok(snapshot_seen(pool, id).await?.map(|(snap, _)| snap))
}

/// The oldest transaction still running now: every lower id had ended.
async fn oldest_running(conn: &Conn<'_>) -> Result<u64, DbError> {
    let xmin: i64 = conn
        .query_opt_cached(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            &[],
        )
        .await?
        .ok_or_else(|| DbError::Corrupt("pg_current_snapshot".into()))?
        .get(0);
    Ok(xmin as u64)
}

/// [`snapshot`], with the oldest transaction still running before it was read (the snapshot
/// `xmin`): every transaction whose id is lower had ended, so what it committed was read.
pub async fn snapshot_seen(pool: &Pool, id: Uuid) -> Result<Option<(Snapshot, u64)>, DbError> {
    let conn = pool.get().await?;
    // Taken first: each read below sees at least what this snapshot does.
    let xmin = oldest_running(&conn).await?;
    // Then the three reads, pipelined on the one connection (one round trip).
    let (org, machines, policies) = tokio::try_join!(
        get_with(&conn, id),
        machines::list_with(&conn, id),
        policies::list_with(&conn, id),
    )?;
    let Some(org) = org else {
        return Ok(None);
    };
    let snap = Snapshot {
        org,
        machines,
        policies,
    };
    Ok(Some((snap, xmin)))
}

/// Machine and policy rows of one tenant, named by id: what a change or a notification says
/// must be read again (see [`rows_seen`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rows {
    pub machines: BTreeSet<Uuid>,
    pub policies: BTreeSet<Uuid>,
}

impl Rows {
    pub fn machine(id: Uuid) -> Rows {
        Rows {
            machines: BTreeSet::from([id]),
            ..Rows::default()
        }
    }

    pub fn policy(id: Uuid) -> Rows {
        Rows {
            policies: BTreeSet::from([id]),
            ..Rows::default()
        }
    }

    pub fn insert(&mut self, table: Table, id: Uuid) {
        match table {
            Table::Machines => self.machines.insert(id),
            Table::Policies => self.policies.insert(id),
        };
    }

    pub fn extend(&mut self, other: Rows) {
        self.machines.extend(other.machines);
        self.policies.extend(other.policies);
    }

    pub fn len(&self) -> usize {
        self.machines.len() + self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.machines.iter().chain(&self.policies).copied()
    }
}

/// The rows named by a [`Rows`], as read by [`rows_seen`].
#[derive(Debug)]
pub struct Reread {
    pub org: Org,
    /// Those of the named rows that the kernel should have (the others are gone, or pending
    /// past their deadline).
    pub machines: Vec<Machine>,
    pub policies: Vec<Policy>,
    /// As in [`snapshot_seen`].
    pub xmin: u64,
}

impl Snapshot {
    /// Puts what was read again of `rows` in place of what was held of them, in the order
    /// [`snapshot`] reads (machines by address, policies by priority, creation, id).
    pub fn patch(&mut self, rows: &Rows, reread: Reread) {
        self.org = reread.org;
        self.machines.retain(|m| !rows.machines.contains(&m.id));
        self.machines.extend(reread.machines);
        self.machines.sort_by_key(|m| m.address);
        self.policies.retain(|p| !rows.policies.contains(&p.id));
        self.policies.extend(reread.policies);
        self.policies
            .sort_by_key(|p| (p.priority, p.created_at, p.id));
    }
}

/// The org row and the named machine and policy rows, read on one connection after a
/// snapshot was taken (as [`snapshot_seen`] does); `None` when the org is gone.
pub async fn rows_seen(pool: &Pool, id: Uuid, rows: &Rows) -> Result<Option<Reread>, DbError> {
    let conn = pool.get().await?;
    let xmin = oldest_running(&conn).await?;
    let machines: Vec<Uuid> = rows.machines.iter().copied().collect();
    let policies: Vec<Uuid> = rows.policies.iter().copied().collect();
    let (org, machines, policies) = tokio::try_join!(
        get_with(&conn, id),
        async {
            if machines.is_empty() {
                return Ok(Vec::new());
            }
            machines::some_with(&conn, id, &machines).await
        },
        async {
            if policies.is_empty() {
                return Ok(Vec::new());
            }
            policies::some_with(&conn, id, &policies).await
        },
    )?;
    Ok(org.map(|org| Reread {
        org,
        machines,
        policies,
        xmin,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_lowest_free_bindable_port() {
        let used = BTreeSet::from([51820, 51822]);
        assert_eq!(pick_port(51820..=51830, &used, |_| true), Some(51821));
        assert_eq!(pick_port(51820..=51830, &used, |p| p != 51821), Some(51823));
        assert_eq!(pick_port(51820..=51822, &used, |p| p != 51821), None);
    }
}
