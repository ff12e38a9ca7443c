//! The browser dashboard: server-rendered pages (askama templates, auto-escaped, checked at
//! compile time) on the API's listener at `/`, with htmx for live refresh. Every page calls the
//! same typed operations as the JSON API (`crate::service`); nothing here validates or
//! authorises on its own. Static files are compiled in (`assets`).

mod account;
pub mod assets;
mod batch;
mod explain;
mod export;
mod fmt;
mod form;
mod machines;
mod matrix;
mod operator;
mod org;
pub mod page;
mod policies;
mod preview;
pub mod routes;
mod spark;
mod timeline;

pub use routes::{dispatch, is_ui};

#[cfg(test)]
mod tests {
    /// askama escapes everything; `|safe` is allowed once, for the server-made QR code of a
    /// new machine's config (it holds no user text).
    #[test]
    fn only_the_qr_code_is_unescaped() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/templates");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, line) in text.lines().enumerate() {
                if line.contains("|safe") || line.contains("| safe") || line.contains("escape") {
                    found.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                }
            }
            for bad in [
                " style=",
                "<style",
                "javascript:",
                " hx-on",
                " onclick",
                "<script>",
            ] {
                assert!(!text.contains(bad), "{bad} in {}", path.display());
            }
        }
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("machine_created.html") && found[0].contains("qr_svg|safe"));
    }
}
