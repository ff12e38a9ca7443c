//! The live impact preview: the policy form and the default-action switch post here as the
//! user types (htmx, debounced) and get back a fragment with the rendered rule line, the pairs
//! whose verdict would flip, the rule diff and the warnings. Nothing is written.

use super::form::Form;
use super::page::html;
use super::policies::{create_input, edit_input};
use crate::http::error::ApiError;
use crate::http::{App, Response};
use crate::policy::Verdict;
use crate::policy::impact::MAX_SAMPLE;
use crate::service::Ctx;
use crate::service::preview::{self, PolicyChange, PreviewView};
use askama::Template;
use uuid::Uuid;
use warp::http::StatusCode;

#[derive(Template)]
#[template(path = "policy_preview.html")]
struct Preview {
    error: Option<String>,
    p: PreviewView,
    show_line: bool,
    sample_max: usize,
}

/// A 400 of the operation becomes a message in the fragment (the form shows it while typing);
/// anything else is the error it is.
async fn answer(
    app: &App,
    ctx: &Ctx,
    change: Result<PolicyChange, ApiError>,
    show_line: bool,
) -> Result<Response, ApiError> {
    let result = match change {
        Ok(c) => preview::preview(app, ctx, c).await,
        Err(e) => Err(e),
    };
    let (error, p) = match result {
        Ok(p) => (None, p),
        Err(e) if e.status == StatusCode::BAD_REQUEST => (Some(e.message), PreviewView::empty()),
        Err(e) => return Err(e),
    };
    let t = Preview {
        error,
        p,
        show_line,
        sample_max: MAX_SAMPLE,
    };
    Ok(html(StatusCode::OK, &t, true))
}

/// `POST …/policies/preview`: the policy form as typed; with an `id`, an edit of that policy.
pub async fn policy(app: &App, ctx: &Ctx, form: &Form) -> Result<Response, ApiError> {
    let change = match form.text("id") {
        "" => create_input(form).map(|policy| PolicyChange::Create { policy }),
        id => match Uuid::parse_str(id) {
            Ok(id) => edit_input(form).map(|changes| PolicyChange::Update { id, changes }),
            Err(_) => return Err(ApiError::not_found()),
        },
    };
    answer(app, ctx, change, true).await
}

/// `POST …/settings/preview`: the default action as switched, before it is saved.
pub async fn default_action(app: &App, ctx: &Ctx, form: &Form) -> Result<Response, ApiError> {
    let change = Verdict::parse(form.text("default_action"))
        .map(|action| PolicyChange::Default { action })
        .ok_or_else(|| ApiError::invalid("default_action", "must be allow or deny"));
    answer(app, ctx, change, false).await
}
