//! `/orgs/{org}/machines`: create (with a one-time config), list with kernel stats, get, patch,
//! delete. A server-made private key appears in the creation response only and is stored nowhere.

use super::auth::{actor, record};
use super::error::ApiError;
use super::orgs::{load_org, require_write};
use super::router::{Ctx, body, non_null};
use super::{App, Request, Response, json, no_content, secret_json, validate};
use crate::actors::CoreError;
use crate::actors::tenant::TenantStatus;
use crate::controller::Audit;
use crate::db::machines::{self, Machine, NewMachine};
use crate::keys::PrivateKey;
use crate::secret::Secret;
use crate::wgconfig::{MachineConfig, render};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;
use warp::http::StatusCode;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MachineCreate {
    name: String,
    public_key: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MachinePatch {
    #[serde(default, deserialize_with = "non_null")]
    name: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    tags: Option<Vec<String>>,
}

fn view(m: &Machine) -> serde_json::Value {
    serde_json::json!({
        "id": m.id,
        "name": m.name,
        "address": m.address.to_string(),
        "public_key": m.public_key.to_base64(),
        "tags": m.tags,
        "created_at": m.created_at,
    })
}

/// The machine with what the kernel knows of its peer (nulls when the hub has no status yet).
fn view_with_stats(m: &Machine, status: Option<&TenantStatus>) -> serde_json::Value {
    let mut v = view(m);
    let peer = status.and_then(|s| s.peers.get(&m.public_key));
    let handshake: Option<DateTime<Utc>> = peer
        .and_then(|p| p.last_handshake)
        .and_then(|t| DateTime::from_timestamp(t, 0));
    v["last_handshake_at"] = serde_json::json!(handshake);
    v["rx_bytes"] = serde_json::json!(peer.map(|p| p.rx_bytes));
    v["tx_bytes"] = serde_json::json!(peer.map(|p| p.tx_bytes));
    v["endpoint"] = serde_json::json!(peer.and_then(|p| p.endpoint.clone()));
    v
}

/// The creation response: borrowed, so the config is never copied into a plain `String`.
#[derive(serde::Serialize)]
struct Created<'a> {
    machine: serde_json::Value,
    config: &'a str,
    config_qr_svg: &'a str,
}

/// The config as a QR code (it encodes the private key too).
fn qr_svg(text: &Secret<String>) -> Result<Secret<String>, ApiError> {
    let code = qrcode::QrCode::new(text.expose().as_bytes()).map_err(ApiError::internal)?;
    Ok(Secret::new(
        code.render::<qrcode::render::svg::Color>()
            .min_dimensions(256, 256)
            .build(),
    ))
}

pub async fn create(app: &App, req: &Request, ctx: &Ctx) -> Result<Response, ApiError> {
    require_write(ctx)?;
    let b: MachineCreate = body(req)?;
    let name = validate::name("name", &b.name)?;
    let tags = validate::tags(&b.tags)?;
    let supplied = b
        .public_key
        .as_deref()
        .map(validate::public_key)
        .transpose()?;
    let org = load_org(app, ctx.org()).await?;
    let generated = supplied.is_none().then(PrivateKey::generate);
    let public_key =
        supplied.unwrap_or_else(|| generated.as_ref().expect("generated").public_key());
    if public_key == org.hub_public_key {
        return Err(ApiError::invalid("public_key", "is the hub's own key"));
    }
    let key = if generated.is_some() {
        "server-generated"
    } else {
        "supplied"
    };
    // Audited by the controller, in the transaction that confirms the machine.
    let audit = Audit {
        actor: actor(ctx),
        detail: Box::new(
            move |m: &Machine| serde_json::json!({"name": m.name, "address": m.address.to_string(), "key": key}),
        ),
    };
    let new = NewMachine {
        id: Uuid::new_v4(),
        name,
        public_key,
        tags,
    };
    let m = app.ctl.add_machine_by(org.id, new, audit).await?;
    let config = render(&MachineConfig {
        machine_name: &m.name,
        address: m.address,
        cidr: org.cidr,
        private_key: generated.as_ref(),
        org_name: &org.name,
        hub_public_key: &org.hub_public_key,
        endpoint: &app.config.public_endpoint,
        listen_port: org.listen_port,
    });
    let qr = qr_svg(&config)?;
    Ok(secret_json(
        StatusCode::CREATED,
        &Created {
            machine: view(&m),
            config: config.expose(),
            config_qr_svg: qr.expose(),
        },
    ))
}

pub async fn list(app: &App, ctx: &Ctx) -> Result<Response, ApiError> {
    load_org(app, ctx.org()).await?;
    let list = machines::list(&app.pool, ctx.org()).await?;
    let status = app.ctl.status(ctx.org()).await.ok();
    let out: Vec<_> = list
        .iter()
        .map(|m| view_with_stats(m, status.as_ref()))
        .collect();
    Ok(json(StatusCode::OK, &serde_json::json!({"machines": out})))
}

pub async fn get(app: &App, ctx: &Ctx) -> Result<Response, ApiError> {
    load_org(app, ctx.org()).await?;
    let m = machines::get(&app.pool, ctx.org(), ctx.id())
        .await?
        .ok_or_else(ApiError::not_found)?;
    let status = app.ctl.status(ctx.org()).await.ok();
    Ok(json(StatusCode::OK, &view_with_stats(&m, status.as_ref())))
}

pub async fn patch(app: &App, req: &Request, ctx: &Ctx) -> Result<Response, ApiError> {
    require_write(ctx)?;
    let b: MachinePatch = body(req)?;
    let name = b
        .name
        .as_deref()
        .map(|n| validate::name("name", n))
        .transpose()?;
    let tags = b.tags.as_deref().map(validate::tags).transpose()?;
    load_org(app, ctx.org()).await?;
    let m = machines::update(
        &app.pool,
        ctx.org(),
        ctx.id(),
        name.as_deref(),
        tags.as_deref(),
    )
    .await?
    .ok_or_else(ApiError::not_found)?;
    // Tag sets in the kernel follow the machine's tags. Saved either way: audited either way.
    let applied = match tags {
        Some(_) => app.ctl.apply_saved(ctx.org()).await,
        None => Ok(()),
    };
    record(
        app,
        Some(&ctx.session().user),
        Some(ctx.org()),
        "machine.update",
        "machine",
        Some(m.id.to_string()),
        serde_json::json!({"name": m.name, "tags": m.tags}),
    )
    .await;
    applied?;
    Ok(json(StatusCode::OK, &view(&m)))
}

pub async fn delete(app: &App, ctx: &Ctx) -> Result<Response, ApiError> {
    require_write(ctx)?;
    load_org(app, ctx.org()).await?;
    let removed = match app.ctl.remove_machine(ctx.org(), ctx.id()).await {
        Ok(()) => Ok(()),
        // The row is gone, so the deletion is audited; the reconciler removes the peer.
        Err(e @ CoreError::NotConfirmed(_)) => Err(e),
        Err(e) => return Err(e.into()),
    };
    record(
        app,
        Some(&ctx.session().user),
        Some(ctx.org()),
        "machine.delete",
        "machine",
        Some(ctx.id().to_string()),
        serde_json::json!({}),
    )
    .await;
    removed?;
    Ok(no_content())
}
