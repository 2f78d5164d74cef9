//! The signed transaction decoder (what `shardsign` checks before it returns a raw transaction,
//! and what tools read back). Accepted bytes re-encode exactly; recovery never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardsign_eth::{Limits, SignedTransaction, UnsignedTransaction};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(signed) = SignedTransaction::decode(data, &limits) {
        assert_eq!(signed.raw(), data);
        let payload = signed.transaction().signing_payload();
        let again = UnsignedTransaction::decode_signing_payload(&payload, &limits)
            .expect("the transaction inside a signed one decodes unsigned");
        assert_eq!(&again, signed.transaction());
        let _ = (signed.hash(), signed.v(), signed.recover_sender());
    }
});
