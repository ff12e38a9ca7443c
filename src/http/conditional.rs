//! Conditional GETs: list and status answers carry an `ETag`; a request whose `If-None-Match`
//! names it gets `304 Not Modified` without a body. Such answers may be kept by the client's
//! own cache but must be revalidated (`Cache-Control: private, no-cache`); everything else stays
//! `no-store`.
//!
//! The machine list's tag comes from its read model (it names the model and the page, so the
//! check costs no serialization); other answers are tagged with a hash of their body.

use super::{Request, Response, json_body};
use bytes::Bytes;
use std::hash::{Hash, Hasher};
use warp::http::{HeaderValue, StatusCode, header};

const REVALIDATE: &str = "private, no-cache";

/// True if `If-None-Match` names `etag` (weak comparison, as RFC 9110 asks for this header;
/// `*` matches any current representation).
pub fn not_modified(req: &Request, etag: &str) -> bool {
    let Some(inm) = req.header("if-none-match") else {
        return false;
    };
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let wanted = bare(etag);
    inm.split(',')
        .map(str::trim)
        .any(|t| t == "*" || bare(t) == wanted)
}

/// 200 with `body`, or 304 if the client already has this `etag`. `body` is only called for a
/// 200.
pub fn tagged(req: &Request, etag: &str, body: impl FnOnce() -> Bytes) -> Response {
    let Ok(tag) = HeaderValue::from_str(etag) else {
        return json_body(StatusCode::OK, body());
    };
    let mut resp = if not_modified(req, etag) {
        let mut r = Response::new(Bytes::new().into());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        json_body(StatusCode::OK, body())
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, tag);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(REVALIDATE));
    resp
}

/// A 200 JSON answer tagged with a hash of its body (304 if the client has it already).
pub fn json_tagged(req: &Request, value: &impl serde::Serialize) -> Response {
    let body = Bytes::from(serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()));
    let etag = body_tag(&body);
    tagged(req, &etag, || body)
}

/// The entity tag of a body: a 64-bit hash of its bytes, quoted.
pub fn body_tag(body: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    format!("\"h{:016x}\"", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::{HeaderMap, Method};

    fn get(inm: Option<&str>) -> Request {
        let mut headers = HeaderMap::new();
        if let Some(v) = inm {
            headers.insert("if-none-match", HeaderValue::from_str(v).unwrap());
        }
        Request {
            method: Method::GET,
            path: "/".into(),
            query: String::new(),
            headers,
            peer: None,
            body: Bytes::new(),
        }
    }

    #[test]
    fn if_none_match_names_the_tag_in_any_of_its_forms() {
        let tag = "\"abc-500-0\"";
        assert!(not_modified(&get(Some(tag)), tag));
        assert!(not_modified(&get(Some("W/\"abc-500-0\"")), tag));
        assert!(not_modified(&get(Some("\"x\", \"abc-500-0\"")), tag));
        assert!(not_modified(&get(Some("*")), tag));
        assert!(!not_modified(&get(Some("\"abc-500-1\"")), tag));
        assert!(!not_modified(&get(Some("abc-500-0")), tag), "unquoted");
        assert!(!not_modified(&get(None), tag));
    }

    #[test]
    fn a_match_is_a_304_without_a_body_and_both_carry_the_tag() {
        let tag = "\"t1\"";
        let hit = tagged(&get(Some(tag)), tag, || panic!("no body for a 304"));
        assert_eq!(hit.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(hit.headers()[header::ETAG], tag);
        let miss = tagged(&get(Some("\"t0\"")), tag, || Bytes::from_static(b"{}"));
        assert_eq!(miss.status(), StatusCode::OK);
        assert_eq!(miss.headers()[header::ETAG], tag);
        assert_eq!(miss.headers()[header::CACHE_CONTROL], REVALIDATE);
    }

    #[test]
    fn body_tags_follow_the_bytes() {
        assert_eq!(body_tag(b"{\"a\":1}"), body_tag(b"{\"a\":1}"));
        assert_ne!(body_tag(b"{\"a\":1}"), body_tag(b"{\"a\":2}"));
    }
}
