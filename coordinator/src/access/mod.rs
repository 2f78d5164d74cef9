//! Who is calling and what they may do: API keys (format, keyed hashes), the authenticator
//! (per-RPC scopes, the in-memory key table, the bootstrap credential, the expiry header), the
//! guard that slows repeated failures, and the request-rate limiter admission uses.

pub mod apikeys;
pub mod auth;
pub mod freshness;
pub mod guard;
pub mod ratelimit;
