//! MeshWG: a self-hosted, multi-tenant, hub-and-spoke WireGuard controller.
//!
//! `config` reads the environment; `db` is PostgreSQL; `kernel` is the only code that touches
//! namespaces, WireGuard and iptables; `reconcile` plans (purely) and applies; `actors` run one
//! tenant actor per org under a supervisor; `controller` is the typed API over them.

pub mod actors;
pub mod auth;
pub mod capacity;
pub mod cmd;
pub mod config;
pub mod controller;
pub mod crypto;
pub mod db;
pub mod doctor;
pub mod http;
pub mod installation;
pub mod kernel;
pub mod keys;
pub mod names;
pub mod overlay;
pub mod policy;
pub mod reconcile;
pub mod secret;
pub mod serve;
pub mod service;
pub mod telemetry;
pub mod wgconfig;
