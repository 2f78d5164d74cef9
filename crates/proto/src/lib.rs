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

/// Response metadata of a signing call that was parked for human approval: the approval id.
pub const APPROVAL_ID_HEADER: &str = "x-shardsign-approval-id";

/// `google.rpc.Status`, the standard form of gRPC error details (`grpc-status-details-bin`),
/// written by hand to avoid a dependency for two messages.
pub mod rpc {
    use prost::Message;

    /// `google.protobuf.Any`.
    #[derive(Clone, PartialEq, Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    /// `google.rpc.Status`.
    #[derive(Clone, PartialEq, Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }

    const APPROVAL_REQUIRED_TYPE: &str = "type.googleapis.com/shardsign.v1.ApprovalRequired";

    /// The status details of a parked request (`code` is FAILED_PRECONDITION's, 9).
    pub fn approval_required_details(
        message: &str,
        required: &crate::v1::ApprovalRequired,
    ) -> Vec<u8> {
        Status {
            code: 9,
            message: message.to_string(),
            details: vec![Any {
                type_url: APPROVAL_REQUIRED_TYPE.into(),
                value: required.encode_to_vec(),
            }],
        }
        .encode_to_vec()
    }

    /// The `ApprovalRequired` in encoded status details, if there is one.
    pub fn approval_required(details: &[u8]) -> Option<crate::v1::ApprovalRequired> {
        let status = Status::decode(details).ok()?;
        status
            .details
            .iter()
            .find(|any| any.type_url == APPROVAL_REQUIRED_TYPE)
            .and_then(|any| crate::v1::ApprovalRequired::decode(any.value.as_slice()).ok())
    }
}

/// Encoded file descriptor set of every proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/shardsign_descriptor.bin"));
