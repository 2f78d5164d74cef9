//! Generated protobuf and tonic bindings. Hand-written conversions live with their users; this
//! crate is only the wire.

/// The public API (`shardsign.v1`).
pub mod v1 {
    tonic::include_proto!("shardsign.v1");
}

/// The internal node protocol (`shardsign.node.v1`).
pub mod node {
    pub mod v1 {
        tonic::include_proto!("shardsign.node.v1");
    }
}

/// Encoded file descriptor set of every proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("shardsign_descriptor");
