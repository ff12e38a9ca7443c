//! Every API error becomes `{"error":{"code":"…","message":"…"}}` here, with its status and the
//! headers some errors carry (`Retry-After`, `Allow`).

pub use crate::service::error::ApiError;
use warp::http::{HeaderValue, header};

impl ApiError {
    pub fn into_response(self) -> warp::reply::Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = super::json(self.status, &body);
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(allow) = self.allow
            && let Ok(v) = HeaderValue::from_str(&allow)
        {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        resp
    }
}
