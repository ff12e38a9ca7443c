//! Changing many machines of an org at once: all of them in one transaction, with one audit
//! entry per machine, or none of them.

use super::audit::{self, Actor};
use super::machines::Machine;
use super::{DbError, Pool, pending};
use uuid::Uuid;

/// What a batch does to each machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    TagAdd(String),
    TagRemove(String),
    Delete,
}

impl Change {
    /// The audit action of each machine's entry (the same as for one machine).
    fn action(&self) -> &'static str {
        match self {
            Change::TagAdd(_) | Change::TagRemove(_) => "machine.update",
            Change::Delete => "machine.delete",
        }
    }

    /// How the batch is named in the API and in audit details.
    pub fn name(&self) -> &'static str {
        match self {
            Change::TagAdd(_) => "tag_add",
            Change::TagRemove(_) => "tag_remove",
            Change::Delete => "delete",
        }
    }
}

/// How a batch ended. Anything but `Done` changed nothing.
#[derive(Debug)]
pub enum Outcome {
    /// The machines as they are now (deleted ones: as they were).
    Done(Vec<Machine>),
    /// These ids are not confirmed machines of the org.
    Unknown(Vec<Uuid>),
    /// Adding the tag would give this machine more than `max_tags` tags.
    TooManyTags(String),
}

/// Applies `change` to every machine in `ids` (distinct) of the org, with an audit entry for
/// each by `actor`, in one transaction that locks the rows.
pub async fn apply(
    pool: &Pool,
    org_id: Uuid,
    ids: &[Uuid],
    change: &Change,
    max_tags: usize,
    actor: &Actor,
) -> Result<Outcome, DbError> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    let confirmed = pending::CONFIRMED;
    let found = tx
        .query(
            &format!(
                "SELECT id, name, tags FROM machines WHERE org_id = $1 AND id = ANY($2) \
                 AND {confirmed} ORDER BY address FOR UPDATE"
            ),
            &[&org_id, &ids],
        )
        .await?;
    let have: std::collections::BTreeSet<Uuid> = found.iter().map(|r| r.get(0)).collect();
    let unknown: Vec<Uuid> = ids.iter().filter(|i| !have.contains(i)).copied().collect();
    if !unknown.is_empty() {
        return Ok(Outcome::Unknown(unknown));
    }
    if let Change::TagAdd(tag) = change {
        let full = found.iter().find(|r| {
            let tags: Vec<String> = r.get(2);
            tags.len() >= max_tags && !tags.contains(tag)
        });
        if let Some(r) = full {
            return Ok(Outcome::TooManyTags(r.get(1)));
        }
    }
    let columns = super::machines::COLUMNS;
    let rows = match change {
        Change::TagAdd(tag) => {
            tx.query(
                &format!(
                    "UPDATE machines SET tags = CASE WHEN $3 = ANY(tags) THEN tags \
                     ELSE array_append(tags, $3) END \
                     WHERE org_id = $1 AND id = ANY($2) RETURNING {columns}"
                ),
                &[&org_id, &ids, tag],
            )
            .await?
        }
        Change::TagRemove(tag) => {
            tx.query(
                &format!(
                    "UPDATE machines SET tags = array_remove(tags, $3) \
                     WHERE org_id = $1 AND id = ANY($2) RETURNING {columns}"
                ),
                &[&org_id, &ids, tag],
            )
            .await?
        }
        Change::Delete => {
            tx.query(
                &format!(
                    "DELETE FROM machines WHERE org_id = $1 AND id = ANY($2) RETURNING {columns}"
                ),
                &[&org_id, &ids],
            )
            .await?
        }
    };
    let mut machines = rows
        .iter()
        .map(super::machines::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    machines.sort_by_key(|m| m.address);
    for m in &machines {
        let mut detail =
            serde_json::json!({"name": m.name, "batch": change.name(), "of": ids.len()});
        if !matches!(change, Change::Delete) {
            detail["tags"] = serde_json::json!(m.tags);
        }
        let entry = actor.entry(
            Some(org_id),
            change.action(),
            "machine",
            Some(m.id.to_string()),
            detail,
        );
        audit::record_in(&tx, &entry).await?;
    }
    tx.commit().await?;
    Ok(Outcome::Done(machines))
}
