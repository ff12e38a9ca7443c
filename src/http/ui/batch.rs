//! Bulk actions on the machines list: the boxes ticked in the table go with the bulk form to
//! `POST …/machines/batch`, which first answers with a confirmation naming the count and the
//! first names (a delete needs the count typed), then runs the service's batch on the second
//! post (`step=apply`). Works without JavaScript.

use super::form::Form;
use super::page::{Chrome, after_change, html};
use crate::http::error::ApiError;
use crate::http::{App, Request, Response};
use crate::service::batch::{self, Action, BatchInput};
use crate::service::views::OrgView;
use crate::service::{Ctx, machines, orgs};
use askama::Template;
use uuid::Uuid;
use warp::http::StatusCode;

/// How many names a confirmation lists before "and N more".
const NAMED: usize = 5;

#[derive(Template)]
#[template(path = "batch_confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    org: OrgView,
    heading: String,
    button: String,
    action: &'static str,
    tag: String,
    ids: Vec<String>,
    names: String,
    more: usize,
    count: usize,
    delete: bool,
    error: Option<String>,
}

/// The form as the service's input.
fn input(form: &Form) -> Result<BatchInput, ApiError> {
    let action = match form.text("action") {
        "tag_add" => Action::TagAdd,
        "tag_remove" => Action::TagRemove,
        "delete" => Action::Delete,
        _ => {
            return Err(ApiError::invalid(
                "action",
                "choose add tag, remove tag or delete",
            ));
        }
    };
    let ids = form
        .all("ids")
        .into_iter()
        .map(|i| i.parse::<Uuid>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ApiError::invalid("ids", "a selected machine could not be read"))?;
    // The tag field is on the form whatever the action: a delete ignores it.
    let tag = form.text("tag").trim();
    let tag = (action != Action::Delete).then(|| tag.to_string());
    Ok(BatchInput { action, ids, tag })
}

pub async fn batch(app: &App, req: &Request, ctx: &Ctx, form: &Form) -> Result<Response, ApiError> {
    crate::service::access::require_write(ctx)?;
    let input = input(form)?;
    let (ids, change) = batch::check(&input)?;
    let delete = input.action == Action::Delete;
    let to = format!("/orgs/{}/machines", ctx.org());
    let error = match form.text("step") {
        "apply" if delete && form.text("confirm").trim() != ids.len().to_string() => {
            Some(format!("type {} to delete these machines", ids.len()))
        }
        "apply" => return after_change(batch::run(app, ctx, input).await.map(drop), &to),
        _ => None,
    };
    // The confirmation: names from the read model, in the order given; ids it does not know
    // are refused as the batch itself would refuse them.
    let model = machines::model(app, ctx).await?;
    let mut names = Vec::with_capacity(ids.len());
    for id in &ids {
        match model.machines.iter().find(|m| m.id == *id) {
            Some(m) => names.push(m.name.clone()),
            None => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "a selected machine is not in this org (nothing was changed)",
                ));
            }
        }
    }
    let count = ids.len();
    let plural = if count == 1 { "machine" } else { "machines" };
    let (heading, button) = match &change {
        crate::db::batch::Change::TagAdd(t) => (
            format!("Add tag {t} to {count} {plural}?"),
            format!("Add tag to {count} {plural}"),
        ),
        crate::db::batch::Change::TagRemove(t) => (
            format!("Remove tag {t} from {count} {plural}?"),
            format!("Remove tag from {count} {plural}"),
        ),
        crate::db::batch::Change::Delete => (
            format!("Delete {count} {plural}?"),
            format!("Delete {count} {plural}"),
        ),
    };
    let org = orgs::get(app, ctx).await?;
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let page = ConfirmPage {
        chrome: Chrome::of(req, ctx, Some(org.clone()), "Machines"),
        org,
        heading,
        button,
        action: change.name(),
        tag: input.tag.unwrap_or_default(),
        ids: ids.iter().map(Uuid::to_string).collect(),
        more: count.saturating_sub(NAMED),
        names: names
            .iter()
            .take(NAMED)
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        count,
        delete,
        error,
    };
    Ok(html(status, &page, true))
}
