//! EIP-712 documents as the public API and the nodes take them: parsing never panics, an accepted
//! document parses the same twice, and what the coordinator accepts a node decodes to the same
//! payload and hash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardsign_eth::typed_data::{Limits, TypedData};
use shardsign_request::{Payload, PayloadKind};

fuzz_target!(|data: &[u8]| {
    let Ok(typed) = TypedData::parse(data, &Limits::DEFAULT) else {
        return;
    };
    assert_eq!(
        TypedData::parse(data, &Limits::DEFAULT).expect("parsing is deterministic"),
        typed
    );
    if let Ok(payload) = Payload::typed_data("typed_data", data.to_vec()) {
        let decoded = Payload::decode(
            PayloadKind::TypedData,
            payload.encode(),
            &shardsign_eth::Limits::default(),
        )
        .expect("a node decodes what the coordinator accepted");
        assert_eq!(decoded, payload);
        assert_eq!(decoded.signing_hash(), typed.signing_hash());
    }
});
