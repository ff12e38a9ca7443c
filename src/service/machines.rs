//! An org's machines: create (with a one-time config), list and get with the kernel's view of
//! each peer (from the read model), rename or retag, delete. A server-made private key appears
//! in the creation's answer only and is stored nowhere.

use super::access::{active_org, require_write};
use super::audit::{actor, record_by};
use super::page::{self, DEFAULT_LIMIT, PageRequest};
use super::reads::Model;
use super::validate::{self, non_null};
use super::views::MachineView;
use super::{ApiError, App, Ctx};
use crate::actors::CoreError;
use crate::controller::Audit;
use crate::db::machines::{self, Machine, NewMachine};
use crate::db::orgs::{OrgState, Rows};
use crate::keys::{PrivateKey, PublicKey};
use crate::secret::Secret;
use crate::wgconfig::{MachineConfig, render};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineCreate {
    pub name: String,
    pub public_key: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachinePatch {
    #[serde(default, deserialize_with = "non_null")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    pub tags: Option<Vec<String>>,
}

/// A new machine with its wg-quick config (holding the private key if the server made it) and
/// the config as a QR code. Renderers must not keep copies: see `http::secret_json`.
#[derive(Serialize)]
pub struct Created {
    pub machine: MachineView,
    #[serde(serialize_with = "expose")]
    pub config: Secret<String>,
    #[serde(serialize_with = "expose")]
    pub config_qr_svg: Secret<String>,
}

fn expose<S: serde::Serializer>(s: &Secret<String>, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.expose())
}

/// The page of machines a request asks for (`limit`, `cursor`).
pub fn page(limit: Option<&str>, cursor: Option<&str>) -> Result<PageRequest<Ipv4Addr>, ApiError> {
    page::request(limit, cursor, DEFAULT_LIMIT)
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

/// The machine's public key: the one supplied, or a new pair's (then with its private half);
/// and how it came about, for the audit entry.
fn key_pair(
    supplied: Option<PublicKey>,
    org: &crate::db::orgs::Org,
) -> Result<(PublicKey, Option<PrivateKey>, &'static str), ApiError> {
    let (public_key, generated, how) = match supplied {
        Some(k) => (k, None, "supplied"),
        None => {
            let pair = PrivateKey::generate();
            (pair.public_key(), Some(pair), "server-generated")
        }
    };
    if public_key == org.hub_public_key {
        return Err(ApiError::invalid("public_key", "is the hub's own key"));
    }
    Ok((public_key, generated, how))
}

/// `POST /orgs/{org}/machines`: answered once the peer is live in the hub, confirmed and
/// audited (or abandoned).
pub async fn create(app: &App, ctx: &Ctx, input: MachineCreate) -> Result<Created, ApiError> {
    require_write(ctx)?;
    let name = validate::name("name", &input.name)?;
    let tags = validate::tags(&input.tags)?;
    let supplied = input
        .public_key
        .as_deref()
        .map(validate::public_key)
        .transpose()?;
    let org = active_org(app, ctx).await?;
    let (public_key, generated, key) = key_pair(supplied, &org)?;
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
    // The config and its QR code are made while the hub takes the machine.
    let endpoint = app.config.public_endpoint.clone();
    let of = org.clone();
    let (m, made) = app
        .ctl
        .add_machine_then(org.id, new, audit, move |m| {
            config_of(&endpoint, &of, &m, generated.as_ref())
        })
        .await?;
    app.reads.wrote(org.id);
    let (config, config_qr_svg) = made?;
    Ok(Created {
        machine: MachineView::of(&m),
        config,
        config_qr_svg,
    })
}

/// A machine's wg-quick config (with `private_key` if the server made it) and its QR code.
fn config_of(
    endpoint: &str,
    org: &crate::db::orgs::Org,
    m: &Machine,
    private_key: Option<&PrivateKey>,
) -> Result<(Secret<String>, Secret<String>), ApiError> {
    let config = render(&MachineConfig {
        machine_name: &m.name,
        address: m.address,
        cidr: org.cidr,
        private_key,
        org_name: &org.name,
        hub_public_key: &org.hub_public_key,
        endpoint,
        listen_port: org.listen_port,
    });
    let qr = qr_svg(&config)?;
    Ok((config, qr))
}

/// The body of a key rotation: a public key the machine made itself, or nothing (the server
/// makes the pair).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    #[serde(default)]
    pub public_key: Option<String>,
}

/// A machine with its new key; with the config (and its QR code) when the server made the key
/// pair, shown this once. Renderers must not keep copies: see `http::secret_json`.
#[derive(Serialize)]
pub struct Rotated {
    pub machine: MachineView,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "expose_some"
    )]
    pub config: Option<Secret<String>>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "expose_some"
    )]
    pub config_qr_svg: Option<Secret<String>>,
}

fn expose_some<S: serde::Serializer>(
    s: &Option<Secret<String>>,
    ser: S,
) -> Result<S::Ok, S::Error> {
    match s {
        Some(s) => expose(s, ser),
        None => ser.serialize_none(),
    }
}

/// `POST /orgs/{org}/machines/{id}/rotate-key`: answered once the hub knows the machine by its
/// new key only (the old config stops working at once), and audited.
pub async fn rotate_key(app: &App, ctx: &Ctx, input: RotateKey) -> Result<Rotated, ApiError> {
    require_write(ctx)?;
    let supplied = input
        .public_key
        .as_deref()
        .map(validate::public_key)
        .transpose()?;
    let org = active_org(app, ctx).await?;
    let (public_key, generated, key) = key_pair(supplied, &org)?;
    let audit = Audit {
        actor: actor(ctx),
        detail: Box::new(move |m: &Machine| serde_json::json!({"name": m.name, "key": key})),
    };
    let rotated = app
        .ctl
        .rotate_machine_key(org.id, ctx.id(), public_key, audit)
        .await;
    app.reads.wrote(org.id);
    let m = rotated?;
    let (config, config_qr_svg) = match &generated {
        Some(k) => {
            let (c, q) = config_of(&app.config.public_endpoint, &org, &m, Some(k))?;
            (Some(c), Some(q))
        }
        None => (None, None),
    };
    Ok(Rotated {
        machine: MachineView::of(&m),
        config,
        config_qr_svg,
    })
}

/// The org's machines as the read model has them (the list and single reads share it).
pub async fn model(app: &App, ctx: &Ctx) -> Result<Arc<Model>, ApiError> {
    match app.reads.machines(app, ctx.org()).await? {
        Some(m) if m.rows.org.state == OrgState::Active => Ok(m),
        _ => Err(ApiError::not_found()),
    }
}

/// `GET /orgs/{org}/machines`: a page of machines in address order, with the kernel's view.
pub async fn list(
    app: &App,
    ctx: &Ctx,
    req: PageRequest<Ipv4Addr>,
) -> Result<page::Page<MachineView>, ApiError> {
    let model = model(app, ctx).await?;
    let (items, next_cursor) = model.page(&req);
    Ok(page::Page {
        items: items.to_vec(),
        next_cursor,
    })
}

/// The org's machines that match a filter, in its order (the whole list: the read model has it
/// in memory).
pub async fn query(
    app: &App,
    ctx: &Ctx,
    q: &super::machine_query::MachineQuery,
) -> Result<Vec<MachineView>, ApiError> {
    let model = model(app, ctx).await?;
    let now = chrono::Utc::now();
    Ok(q.apply(&model.machines, now).into_iter().cloned().collect())
}

/// `GET /orgs/{org}/machines/{id}`.
pub async fn get(app: &App, ctx: &Ctx) -> Result<MachineView, ApiError> {
    model(app, ctx)
        .await?
        .machine(ctx.id())
        .cloned()
        .ok_or_else(ApiError::not_found)
}

/// `PATCH /orgs/{org}/machines/{id}`: a change of tags is answered once the kernel's tag sets
/// follow it.
pub async fn update(app: &App, ctx: &Ctx, input: MachinePatch) -> Result<MachineView, ApiError> {
    require_write(ctx)?;
    let name = input
        .name
        .as_deref()
        .map(|n| validate::name("name", n))
        .transpose()?;
    let tags = input.tags.as_deref().map(validate::tags).transpose()?;
    active_org(app, ctx).await?;
    let m = machines::update(
        &app.pool,
        ctx.org(),
        ctx.id(),
        name.as_deref(),
        tags.as_deref(),
    )
    .await?
    .ok_or_else(ApiError::not_found)?;
    app.reads.wrote(ctx.org());
    // Saved either way: audited either way.
    let applied = match tags {
        Some(_) => {
            app.ctl
                .apply_saved_rows(ctx.org(), Rows::machine(m.id))
                .await
        }
        None => Ok(()),
    };
    let detail = serde_json::json!({"name": m.name, "tags": m.tags});
    record_by(app, ctx, "machine.update", "machine", m.id, detail).await;
    applied?;
    Ok(MachineView::of(&m))
}

/// `DELETE /orgs/{org}/machines/{id}`: answered once the peer is gone from the hub.
pub async fn delete(app: &App, ctx: &Ctx) -> Result<(), ApiError> {
    require_write(ctx)?;
    active_org(app, ctx).await?;
    let removed = match app.ctl.remove_machine(ctx.org(), ctx.id()).await {
        Ok(()) => Ok(()),
        // The row is gone, so the deletion is audited; the reconciler removes the peer.
        Err(e @ CoreError::NotConfirmed(_)) => Err(e),
        Err(e) => return Err(e.into()),
    };
    app.reads.wrote(ctx.org());
    let detail = serde_json::json!({});
    record_by(app, ctx, "machine.delete", "machine", ctx.id(), detail).await;
    removed?;
    Ok(())
}
