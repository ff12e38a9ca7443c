//! The browser dashboard: server-rendered pages (askama templates, auto-escaped, checked at
//! compile time) on the API's listener at `/`, with htmx for live refresh. Every page calls the
//! same typed operations as the JSON API (`crate::service`); nothing here validates or
//! authorises on its own. Static files are compiled in (`assets`).

mod account;
pub mod assets;
mod fmt;
mod form;
mod machines;
mod operator;
mod org;
pub mod page;
mod policies;
pub mod routes;

pub use routes::{dispatch, is_ui};
