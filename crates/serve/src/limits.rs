//! What a slow or abusive client may hold of a server, for the node and the coordinator alike:
//! a TLS handshake must finish in time (tonic runs handshakes concurrently, so a stalled one
//! holds only itself, and this reaps it), idle HTTP/2 connections are probed and dropped when
//! the peer stops answering, every connection is asked to go away after an hour (idle or not), a
//! connection carries a bounded number of concurrent streams and headers, and every handler has a
//! deadline.

use std::time::Duration;

use tonic::transport::Server;

/// The default time a client has to finish its TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent streams (calls) one HTTP/2 connection may carry.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Every connection, busy or idle, is asked to go away after this (clients reconnect on their
/// own), so no connection holds its slot for ever.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(3600);
const MAX_CONNECTION_AGE_GRACE: Duration = Duration::from_secs(60);
/// Request headers: far above what a call carries (a bearer token, a deadline).
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Applies the limits to a server builder; `handler_timeout` bounds every call's handler (a
/// backstop: the services have their own, shorter deadlines).
pub fn limit_server<L>(builder: Server<L>, handler_timeout: Duration) -> Server<L> {
    builder
        .timeout(handler_timeout)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .tcp_keepalive(Some(TCP_KEEPALIVE))
        .max_connection_age(MAX_CONNECTION_AGE)
        .max_connection_age_grace(MAX_CONNECTION_AGE_GRACE)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
}
