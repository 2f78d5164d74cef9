//! The shardsign coordinator: the public gRPC API. It authenticates callers, keeps the key
//! registry, picks a pair of healthy nodes, relays their sealed rounds, verifies the signature
//! before replying, and runs the key-generation ceremony. It holds no share and cannot open
//! what it relays.
//!
//! Folders follow a request: `api` (tonic services, status mapping) -> `access` (who is calling)
//! -> `signing` (admission, pair choice, relay, verification, durable completion) or `ceremony`
//! or `admin` -> `registry` (SQLite).

pub mod access;
pub mod admin;
pub mod api;
pub mod approvals;
pub mod audit;
pub mod backup;
pub mod ceremony;
pub mod config;
pub mod error;
pub mod metrics;
pub mod recover;
pub mod refresh;
pub mod refresh_schedule;
pub mod registry;
pub mod replace;
pub mod server;
pub mod signing;

/// Longest key or API-key label.
pub const MAX_LABEL_LEN: usize = 128;
