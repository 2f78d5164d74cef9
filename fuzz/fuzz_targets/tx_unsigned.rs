//! The unsigned transaction decoder (every type: legacy RLP and typed envelopes), as the nodes
//! and the public API's `unsigned_rlp` field use it. Property beside "no panic": an accepted
//! payload re-encodes to exactly its input (one encoding per transaction, so a node and the
//! coordinator can never hash two readings of the same bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardsign_eth::{Limits, UnsignedTransaction};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(tx) = UnsignedTransaction::decode_signing_payload(data, &limits) {
        assert_eq!(
            tx.signing_payload(),
            data,
            "accepted bytes re-encode differently"
        );
        tx.validate(&limits)
            .expect("a decoded transaction is valid");
        let _ = (
            tx.signing_hash(),
            tx.max_total_fee(),
            tx.chain_id(),
            tx.to(),
        );
    }
});
