//! The shardsign coordinator: the public gRPC API. It authenticates callers, keeps the key
//! registry, picks a pair of healthy nodes, relays their sealed rounds, verifies the signature
//! before replying, and runs the key-generation ceremony. It holds no share and cannot open
//! what it relays.

pub mod access;
pub mod apikeys;
pub mod audit;
pub mod auth;
pub mod config;
pub mod convert;
pub mod core;
pub mod enforce;
pub mod error;
pub mod guard;
pub mod key_policies;
pub mod metrics;
pub mod pool;
pub mod ratelimit;
pub mod registry;
pub mod relay;
pub mod server;
pub mod service;
