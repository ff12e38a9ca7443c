//! The REST API. warp runs the server and hands every request, whole, to one router
//! (`router::dispatch`) whose route table is also the source of the OpenAPI document. The work
//! is the service layer's (`crate::service`); `api` turns requests into its typed inputs and its
//! typed answers into JSON. Errors map to JSON in one place (`error`); entity tags and
//! `If-None-Match` in `conditional`.

mod api;
pub mod conditional;
pub mod error;
pub mod openapi;
mod ops;
pub mod router;
pub mod session;
pub mod ui;

pub use crate::service::{ApiConfig, App};
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

/// One request, read whole.
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub peer: Option<SocketAddr>,
    pub body: Bytes,
}

/// Headers whose values are credentials.
const SECRET_HEADERS: [&str; 4] = [
    "cookie",
    "authorization",
    "proxy-authorization",
    "x-csrf-token",
];

/// Redacted: the body may hold a password or a key, some headers a session. Shows what a log
/// line may: method, path, header names (values of the harmless ones), body size.
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| match v.to_str() {
                Ok(v) if !SECRET_HEADERS.contains(&k.as_str()) => format!("{k}: {v}"),
                _ => format!("{k}: <redacted>"),
            })
            .collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &headers)
            .field("peer", &self.peer)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish()
    }
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
    json_body(status, body.into())
}

/// [`json`] of a body already serialized.
pub fn json_body(status: StatusCode, body: Bytes) -> Response {
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

/// A buffer wiped when the response body that owns it is dropped.
struct Wiped(Vec<u8>);

impl AsRef<[u8]> for Wiped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Wiped {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// Counts what a serializer writes.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len();
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// [`json`] for a body holding key material: serialized once into a buffer of exactly the right
/// size (so no reallocation leaves a copy behind) that is wiped when the body is dropped.
pub fn secret_json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let mut size = Counter(0);
    if serde_json::to_writer(&mut size, value).is_err() {
        return ApiError::internal("response not serializable").into_response();
    }
    let mut buf = Vec::with_capacity(size.0);
    if serde_json::to_writer(&mut buf, value).is_err() {
        return ApiError::internal("response not serializable").into_response();
    }
    let mut resp = json(status, &());
    *resp.body_mut() = Bytes::from_owner(Wiped(buf)).into();
    resp
}

/// `resp` with `buf` as its body, wiped when the body is dropped (it holds key material).
pub(crate) fn with_wiped_body(mut resp: Response, buf: Vec<u8>) -> Response {
    *resp.body_mut() = Bytes::from_owner(Wiped(buf)).into();
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
                    // A change runs as its own task: a client that hangs up cannot cancel it
                    // halfway (after the database, before the kernel or the audit log). A read
                    // changes nothing, so it may simply stop with its client.
                    if req.method == Method::GET {
                        return handle(&app, req).await;
                    }
                    tokio::spawn(async move { handle(&app, req).await })
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

/// The dashboard's paths go to its pages, everything else to the API.
async fn handle(app: &App, req: Request) -> Response {
    if ui::is_ui(&req.path) {
        ui::dispatch(app, req).await
    } else {
        router::dispatch(app, req).await
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_request_shows_no_credentials() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-meshwg_session=eyJ.sess.ion"),
        );
        headers.insert("x-csrf-token", HeaderValue::from_static("csrf-token-value"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let req = Request {
            method: Method::POST,
            path: "/api/v1/auth/password".into(),
            query: String::new(),
            headers,
            peer: None,
            body: Bytes::from_static(
                br#"{"current_password":"hunter2-old","new_password":"hunter2-new"}"#,
            ),
        };
        let text = format!("{req:?}");
        for secret in ["hunter2", "eyJ.sess.ion", "csrf-token-value"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("/api/v1/auth/password") && text.contains("application/json"));
    }
}
