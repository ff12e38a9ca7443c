//! `meshwg serve`: migrate, bootstrap the operator, start the actors, serve until a signal.
//! On SIGTERM/SIGINT the actors stop; namespaces, daemons and rules stay up.

use crate::actors::Deps;
use crate::auth::password;
use crate::config::Config;
use crate::controller::Controller;
use crate::crypto::HubKeyCipher;
use crate::db::{self, Pool};
use crate::http;
use crate::installation::{self, Orphans};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

/// Waits for PostgreSQL and applies migrations; retries while it is unreachable.
pub async fn migrate_when_ready(pool: &Pool) -> anyhow::Result<()> {
    let mut wait = Duration::from_millis(200);
    loop {
        match db::migrate(pool).await {
            Ok(n) => {
                tracing::info!(applied = n, "database schema up to date");
                return Ok(());
            }
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, retry_in = ?wait, "waiting for PostgreSQL");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e).context("migrating the database"),
        }
    }
}

async fn bootstrap_operator(pool: &Pool, config: &Config) -> anyhow::Result<()> {
    let (Some(email), Some(pw)) = (&config.admin_email, &config.admin_password) else {
        return Ok(());
    };
    if db::users::operator_exists(pool, email).await? {
        return Ok(());
    }
    let pw = crate::secret::Secret::new(pw.expose().clone());
    let hash = tokio::task::spawn_blocking(move || password::hash_blocking(&pw))
        .await?
        .context("ADMIN_PASSWORD")?;
    db::users::upsert_operator(pool, email, &hash).await?;
    tracing::info!(email = %email, "operator account created from ADMIN_EMAIL");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Refuses to go on if the kernel objects of our prefix on this host belong to another
/// installation (see [`crate::installation`]); returns the marker's path and our id.
async fn check_installation(
    pool: &Pool,
    config: &Config,
    orphans: Orphans,
) -> anyhow::Result<(std::path::PathBuf, uuid::Uuid)> {
    let id = db::installation::id(pool).await?;
    let prefix = config.kernel.prefix.as_str();
    let marker = installation::marker_path(&config.kernel.runtime_dir, prefix);
    match installation::read_marker(&marker).map_err(anyhow::Error::msg)? {
        Some(other) if other != id && orphans == Orphans::Careful => anyhow::bail!(
            "kernel objects with prefix {prefix} on this host belong to installation {other}, \
             but DATABASE_URL holds installation {id} ({}); nothing was touched. Check \
             DATABASE_URL; to remove the other installation's objects and take the prefix over, \
             start once with --remove-unowned",
            marker.display()
        ),
        _ => Ok((marker, id)),
    }
}

pub async fn run(config: Config, orphans: Orphans) -> anyhow::Result<()> {
    // A thousand tenants need ~16,000 descriptors: take what the hard limit allows.
    let nofile = crate::capacity::raise_nofile();
    tracing::info!(
        nofile,
        tenants = crate::capacity::tenants_for_nofile(nofile),
        "open files limit"
    );
    // Every wireguard-go daemon takes an inotify instance; the kernel default allows 128.
    if let Some(n) = crate::capacity::raise_inotify_instances() {
        tracing::info!(max_user_instances = n, "inotify instances");
    }
    let pool = db::pool(&config.database_url)?;
    migrate_when_ready(&pool).await?;
    bootstrap_operator(&pool, &config).await?;
    let (kernel, decision) = crate::kernel::select(config.backend, &config.kernel)
        .await
        .map_err(anyhow::Error::msg)?;
    tracing::info!(
        backend = decision.backend,
        why = %decision.why,
        prefix = config.kernel.prefix.as_str(),
        "WireGuard backend selected"
    );
    let deps = Deps {
        pool: pool.clone(),
        kernel,
        cipher: Arc::new(HubKeyCipher::new(&config.encryption_key)),
        prefix: config.kernel.prefix.clone(),
        observer: crate::actors::Observer {
            poll: Some(config.reconcile_interval),
            full: config.full_check_interval,
            counters: std::time::Duration::from_secs(15),
            events: config.kernel_events,
        },
        board: Default::default(),
        poll: Default::default(),
        events: crate::actors::events::EventLog::start(pool.clone()),
        quotas: crate::actors::Quotas {
            machines: config.quotas.0,
            policies: config.quotas.1,
            users: config.quotas.2,
        },
        listen: config
            .kernel_events
            .then(|| db::listen_config(&config.database_url))
            .transpose()?,
        port_range: config.port_range.clone(),
        telemetry: Arc::new(crate::telemetry::Telemetry::default()),
    };
    crate::telemetry::recorder();
    // Bind before the (possibly long) tenant load so a taken port fails fast.
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("LISTEN_ADDR {}", config.listen_addr))?;
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("METRICS_ADDR {}", config.metrics_addr))?;
    let telemetry = deps.telemetry.clone();
    let (marker, installation_id) = check_installation(&pool, &config, orphans).await?;
    let controller = Controller::start_with(deps, orphans).await?;
    // Only now: the objects of this prefix are ours (adopted, or the others removed).
    installation::write_marker(&marker, installation_id).map_err(anyhow::Error::msg)?;
    tracing::info!(installation = %installation_id, marker = %marker.display(), "kernel objects bound to this database");
    let mut api = http::ApiConfig::new(
        crate::secret::Secret::new(config.jwt_secret.expose().clone()),
        config.cookie_secure,
        config.public_endpoint.clone(),
    );
    api.trusted_proxies = config.trusted_proxies.clone();
    let app = http::App::new(controller.clone(), api);
    tracing::info!(addr = %listener.local_addr()?, "API listening");
    tracing::info!(addr = %metrics_listener.local_addr()?, "metrics listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let server = tokio::spawn(http::serve(app, listener, stopped(stop_rx.clone())));
    let metrics = tokio::spawn(http::serve_metrics(
        telemetry,
        metrics_listener,
        stopped(stop_rx),
    ));
    tracing::info!("controller running");
    shutdown_signal().await;
    tracing::info!("shutting down; tenant data planes stay up");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), metrics).await;
    controller.shutdown().await;
    Ok(())
}
