//! The REST API. warp runs the server and hands every request, whole, to one router
//! (`router::dispatch`) whose route table is also the source of the OpenAPI document.
//! Errors map to JSON in one place (`error`); handlers live in one file per resource.

mod auth;
pub mod error;
mod machines;
pub mod openapi;
mod orgs;
mod policies;
pub mod router;
pub mod session;
mod status;
mod validate;

use crate::auth::jwt::Jwt;
use crate::auth::password::Hasher;
use crate::auth::ratelimit::{Limits, LoginLimiter};
use crate::controller::Controller;
use crate::db::Pool;
use crate::secret::Secret;
use bytes::{Bytes, BytesMut};
use error::ApiError;
use futures_util::StreamExt;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use warp::Filter;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};

/// Request bodies above this size are refused with 413 before they are parsed.
pub const BODY_LIMIT: usize = 64 * 1024;

pub type Response = warp::reply::Response;

/// Settings of the API that come from the environment.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub jwt_secret: Secret<Vec<u8>>,
    pub cookie_secure: bool,
    pub public_endpoint: String,
    pub trusted_proxies: Vec<IpAddr>,
    pub session_ttl: Duration,
    pub login_limits: Limits,
    /// Password hashes allowed to run at once (each takes 19 MiB and a core for ~30 ms).
    pub concurrent_hashes: usize,
}

impl ApiConfig {
    pub fn new(jwt_secret: Secret<Vec<u8>>, cookie_secure: bool, public_endpoint: String) -> Self {
        Self {
            jwt_secret,
            cookie_secure,
            public_endpoint,
            trusted_proxies: Vec::new(),
            session_ttl: Duration::from_secs(12 * 3600),
            login_limits: Limits::default(),
            concurrent_hashes: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// Everything a handler can reach.
pub struct App {
    pub ctl: Controller,
    pub pool: Pool,
    pub jwt: Jwt,
    pub hasher: Hasher,
    pub limiter: LoginLimiter,
    pub sessions: session::SessionCache,
    pub config: ApiConfig,
    /// Verified against when the email is unknown, so both cases cost the same.
    pub dummy_hash: String,
}

impl App {
    pub fn new(ctl: Controller, config: ApiConfig) -> Arc<App> {
        let dummy = Secret::new(crate::auth::random_token(24));
        Arc::new(App {
            pool: ctl.deps().pool.clone(),
            ctl,
            jwt: Jwt::new(&config.jwt_secret),
            hasher: Hasher::new(config.concurrent_hashes),
            limiter: LoginLimiter::new(config.login_limits),
            sessions: session::SessionCache::default(),
            dummy_hash: crate::auth::password::hash_blocking(&dummy)
                .expect("hashing a random token"),
            config,
        })
    }
}

/// One request, read whole.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub peer: Option<SocketAddr>,
    pub body: Bytes,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The client's address: the peer, or for a trusted proxy the last hop it reports.
    pub fn client_ip(&self, trusted: &[IpAddr]) -> IpAddr {
        let peer = self
            .peer
            .map(|p| p.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if !trusted.contains(&peer) {
            return peer;
        }
        self.header("x-forwarded-for")
            .and_then(|v| v.rsplit(',').map(str::trim).find(|h| !h.is_empty()))
            .and_then(|h| h.parse().ok())
            .unwrap_or(peer)
    }

    /// Parses a query parameter.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// A JSON response with the headers every API answer carries.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

pub fn no_content() -> Response {
    let mut resp = Response::new(Vec::new().into());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Reads the body, refusing more than [`BODY_LIMIT`] bytes (declared or streamed).
async fn read_body<S, B>(headers: &HeaderMap, mut stream: S) -> Result<Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: bytes::Buf,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(ApiError::too_large(BODY_LIMIT));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk =
            chunk.map_err(|_| ApiError::bad_request("could not read the request body"))?;
        if body.len() + chunk.remaining() > BODY_LIMIT {
            return Err(ApiError::too_large(BODY_LIMIT));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            body.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(body.freeze())
}

/// The whole API as one warp filter.
pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::method()
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::addr::remote())
        .and(warp::body::stream())
        .then(
            move |method: Method,
                  path: warp::path::FullPath,
                  query: String,
                  headers: HeaderMap,
                  peer: Option<SocketAddr>,
                  body| {
                let app = app.clone();
                async move {
                    let body = match read_body(&headers, Box::pin(body)).await {
                        Ok(b) => b,
                        Err(e) => return e.into_response(),
                    };
                    let req = Request {
                        method,
                        path: path.as_str().to_string(),
                        query,
                        headers,
                        peer,
                        body,
                    };
                    // The handler runs as its own task: a client that hangs up cannot cancel a
                    // change halfway (after the database, before the kernel or the audit log).
                    tokio::spawn(async move { router::dispatch(&app, req).await })
                        .await
                        .unwrap_or_else(|e| ApiError::internal(e).into_response())
                }
            },
        )
        .recover(|_| async {
            Ok::<_, Infallible>(ApiError::bad_request("malformed request").into_response())
        })
        .unify()
}

/// `GET /metrics` (Prometheus text) and nothing else, for the `METRICS_ADDR` listener.
pub fn metrics_route(
    telemetry: Arc<crate::telemetry::Telemetry>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    warp::get()
        .and(warp::path("metrics"))
        .and(warp::path::end())
        .map(move || {
            let mut resp = Response::new(crate::telemetry::scrape(&telemetry).into());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            resp
        })
        .recover(|_| async { Ok::<_, Infallible>(ApiError::not_found().into_response()) })
        .unify()
}

/// Serves `/metrics` until `shutdown` completes; keeps the exporter's histograms tidy meanwhile.
pub async fn serve_metrics(
    telemetry: Arc<crate::telemetry::Telemetry>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let upkeep = tokio::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            crate::telemetry::recorder().run_upkeep();
        }
    });
    warp::serve(metrics_route(telemetry))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
    upkeep.abort();
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    warp::serve(routes(app))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}
