//! `POST /orgs/{org}/machines/batch`: add a tag to, remove a tag from, or delete up to
//! [`MAX_IDS`] machines at once — one transaction (all of them or none: an id that is not the
//! org's changes nothing), one audit entry per machine, then one reconcile.

use super::access::{active_org, require_write};
use super::audit::actor;
use super::validate;
use super::views::MachineView;
use super::{ApiError, App, Ctx};
use crate::db::batch::{self, Change, Outcome};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use uuid::Uuid;
use warp::http::StatusCode;

/// The most machines one batch may name.
pub const MAX_IDS: usize = 1000;

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    TagAdd,
    TagRemove,
    Delete,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchInput {
    pub action: Action,
    pub ids: Vec<Uuid>,
    #[serde(default)]
    pub tag: Option<String>,
}

/// What a batch did: the machines as they are now (deleted ones: as they were).
#[derive(Serialize)]
pub struct BatchDone {
    pub action: &'static str,
    pub count: usize,
    pub machines: Vec<MachineView>,
}

/// The input checked: distinct ids (in the order given) and the change.
pub fn check(input: &BatchInput) -> Result<(Vec<Uuid>, Change), ApiError> {
    if input.ids.is_empty() {
        return Err(ApiError::invalid("ids", "name at least one machine"));
    }
    if input.ids.len() > MAX_IDS {
        return Err(ApiError::invalid(
            "ids",
            format!("at most {MAX_IDS} machines at once"),
        ));
    }
    let mut seen = BTreeSet::new();
    let ids: Vec<Uuid> = input
        .ids
        .iter()
        .filter(|i| seen.insert(**i))
        .copied()
        .collect();
    let tag = match (&input.action, input.tag.as_deref()) {
        (Action::Delete, None) => None,
        (Action::Delete, Some(_)) => {
            return Err(ApiError::invalid(
                "tag",
                "is only for tag_add and tag_remove",
            ));
        }
        (_, None) => return Err(ApiError::invalid("tag", "is required for this action")),
        (_, Some(t)) => Some(
            validate::tags(&[t.to_string()])?
                .pop()
                .ok_or_else(|| ApiError::invalid("tag", "must not be empty"))?,
        ),
    };
    let change = match (input.action, tag) {
        (Action::TagAdd, Some(t)) => Change::TagAdd(t),
        (Action::TagRemove, Some(t)) => Change::TagRemove(t),
        _ => Change::Delete,
    };
    Ok((ids, change))
}

/// Runs the batch; answered once the kernel follows it (or 503 `not_confirmed` if it is saved
/// but the hub did not confirm it: the reconciler will still apply it).
pub async fn run(app: &App, ctx: &Ctx, input: BatchInput) -> Result<BatchDone, ApiError> {
    require_write(ctx)?;
    let (ids, change) = check(&input)?;
    let org = active_org(app, ctx).await?;
    let (pool, ctl, actor) = (app.pool.clone(), app.ctl.clone(), actor(ctx));
    let max_tags = validate::MAX_TAGS;
    // Its own task: a client that hangs up must not leave the change saved but not applied.
    let work = tokio::spawn(async move {
        let outcome = batch::apply(&pool, org.id, &ids, &change, max_tags, &actor).await?;
        let applied = match &outcome {
            Outcome::Done(_) => ctl.apply_saved(org.id).await,
            _ => Ok(()),
        };
        Ok::<_, ApiError>((outcome, change, applied))
    });
    let (outcome, change, applied) = work.await.map_err(ApiError::internal)??;
    let machines = match outcome {
        Outcome::Done(m) => m,
        Outcome::Unknown(ids) => {
            let mut named: Vec<String> = ids.iter().take(5).map(Uuid::to_string).collect();
            if ids.len() > 5 {
                named.push(format!("and {} more", ids.len() - 5));
            }
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "not machines of this org (nothing was changed): {}",
                    named.join(", ")
                ),
            ));
        }
        Outcome::TooManyTags(name) => {
            return Err(ApiError::invalid(
                "tag",
                format!(
                    "{name} already has {} tags (nothing was changed)",
                    validate::MAX_TAGS
                ),
            ));
        }
    };
    app.reads.wrote(ctx.org());
    applied?;
    Ok(BatchDone {
        action: change.name(),
        count: machines.len(),
        machines: machines.iter().map(MachineView::of).collect(),
    })
}
