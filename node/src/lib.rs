//! The shardsign signer node: the only place a key share exists.
//!
//! `store` keeps shares and the node identity encrypted at rest; `sessions` runs key-generation
//! and signing sessions over sealed envelopes; `service` and `server` expose them over mutual
//! TLS to the coordinator only. Every byte that reaches the node is treated as hostile,
//! including what the coordinator relays.

pub mod bans;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod kek;
pub mod ledger;
pub mod local_admin;
pub mod policy;
pub mod server;
pub mod service;
pub mod sessions;
mod share_cache;
pub mod store;

mod crypto;
mod envelope;
