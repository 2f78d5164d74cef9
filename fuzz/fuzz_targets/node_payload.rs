//! A node's reading of what it is asked to sign: the node protocol's `StartSignRequest` (protobuf)
//! and its payload oneof, decoded strictly. Accepted payloads re-encode to exactly their bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use shardsign_eth::Limits;
use shardsign_proto::node::v1::StartSignRequest;
use shardsign_request::{KeyId, proto};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = StartSignRequest::decode(data) else {
        return;
    };
    let _ = KeyId::parse(&request.key_id);
    let original = request.payload.clone();
    if let Ok(payload) = proto::from_node(request.payload, &Limits::default()) {
        // Same oneof arm, same bytes.
        assert_eq!(
            Some(proto::to_node(&payload)),
            original,
            "accepted payload re-encodes differently"
        );
    }
});
