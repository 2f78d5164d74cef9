//! Generated protobuf bindings (and, with the `grpc` feature, tonic clients and servers).
//! Hand-written conversions live with their users; this crate is only the wire.

/// The public API (`shardsign.v1`).
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/shardsign.v1.rs"));
}

/// The internal node protocol (`shardsign.node.v1`).
pub mod node {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/shardsign.node.v1.rs"));
    }

    /// Response metadata a node sets on a refusal because of a ban: the banned peer's node id.
    pub const BANNED_PEER_HEADER: &str = "x-shardsign-banned-peer";
    /// Response metadata a node sets when it refuses a session for a key at another epoch: the
    /// key's epoch on that node (a node behind missed a refresh commit).
    pub const KEY_EPOCH_HEADER: &str = "x-shardsign-key-epoch";
    /// Response metadata a restored node sets when it refuses a session because it has not yet
    /// re-learned the cluster's state from its peers (the coordinator then runs `Relearn`).
    pub const RELEARN_HEADER: &str = "x-shardsign-relearn-needed";
}

/// Encoded file descriptor set of every proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/shardsign_descriptor.bin"));
