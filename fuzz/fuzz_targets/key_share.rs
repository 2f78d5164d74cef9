//! The key-share decoder (what a node reads back from its store after decryption) and the SEC1
//! public-key decoder. A decoded share encodes to bytes that decode to the same share.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardsign_tss::{KeyShare, PublicKey};

fuzz_target!(|data: &[u8]| {
    if let Ok(share) = KeyShare::from_bytes(data) {
        let bytes = share.to_bytes();
        let again = KeyShare::from_bytes(&bytes).expect("an encoded share decodes");
        assert_eq!(again.public_key(), share.public_key());
        assert_eq!(again.party_id(), share.party_id());
        assert_eq!(again.to_bytes().as_slice(), bytes.as_slice());
    }
    if let Ok(key) = PublicKey::from_sec1(data) {
        assert_eq!(key.as_bytes().as_slice(), data);
        let _ = key.to_verifying_key();
    }
});
