//! The dashboard's static files, compiled into the binary and served under content-hashed names
//! (`/assets/app.<hash8>.css`), so they can be cached for a year and never go stale.

use super::page::secure;
use crate::http::Response;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;
use warp::http::{HeaderValue, StatusCode, header};

/// A file as the binary carries it.
struct File {
    stem: &'static str,
    ext: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

const FILES: [File; 3] = [
    File {
        stem: "app",
        ext: "css",
        mime: "text/css; charset=utf-8",
        body: include_bytes!("../../../assets/app.css"),
    },
    File {
        stem: "app",
        ext: "js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../assets/app.js"),
    },
    File {
        stem: "htmx",
        ext: "js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../assets/htmx-2.0.11.min.js"),
    },
];

/// The hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every file's public path, in the order of [`FILES`].
static PATHS: LazyLock<Vec<String>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|f| format!("/assets/{}.{}.{}", f.stem, &sha256_hex(f.body)[..8], f.ext))
        .collect()
});

/// The URLs a page links to.
#[derive(Debug, Clone, Copy)]
pub struct Urls {
    pub css: &'static str,
    pub js: &'static str,
    pub htmx: &'static str,
}

pub fn urls() -> Urls {
    Urls {
        css: &PATHS[0],
        js: &PATHS[1],
        htmx: &PATHS[2],
    }
}

/// `GET /assets/<name>`: only the current hashed names exist.
pub fn serve(path: &str) -> Response {
    let Some(i) = PATHS.iter().position(|p| p == path) else {
        let mut resp = Response::new("not found".into());
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return secure(resp, false);
    };
    let f = &FILES[i];
    let mut resp = Response::new(f.body.into());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(f.mime));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    secure(resp, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vendored htmx is the file whose hash `assets/VENDOR.md` records.
    #[test]
    fn vendored_htmx_has_the_recorded_hash() {
        let vendor = include_str!("../../../assets/VENDOR.md");
        let hash = sha256_hex(FILES[2].body);
        assert!(
            vendor
                .lines()
                .any(|l| l.contains("`assets/htmx-2.0.11.min.js`") && l.contains(&hash)),
            "assets/VENDOR.md does not record {hash}"
        );
    }

    #[test]
    fn asset_urls_are_hashed_and_served() {
        let u = urls();
        for p in [u.css, u.js, u.htmx] {
            assert!(p.starts_with("/assets/") && p.len() > 20, "{p}");
            let r = serve(p);
            assert_eq!(r.status(), 200);
            assert!(
                r.headers()["cache-control"]
                    .to_str()
                    .unwrap()
                    .contains("immutable")
            );
        }
        assert_eq!(serve("/assets/app.css").status(), 404);
    }
}
