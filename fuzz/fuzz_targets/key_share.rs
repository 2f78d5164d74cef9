//! The key-share decoder (what a node reads back from its store after decryption), the SEC1
//! public-key decoder and the public key package decoder. A decoded share encodes to bytes that
//! decode to the same share; a decoded package re-encodes to an equal package.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardsign_tss::{KeyShare, PublicKey, PublicPackage};

fuzz_target!(|data: &[u8]| {
    if let Ok(share) = KeyShare::from_bytes(data) {
        let bytes = share.to_bytes();
        let again = KeyShare::from_bytes(&bytes).expect("an encoded share decodes");
        assert_eq!(again.public_key(), share.public_key());
        assert_eq!(again.party_id(), share.party_id());
        assert_eq!(again.to_bytes().as_slice(), bytes.as_slice());
    }
    if let Ok(package) = PublicPackage::from_bytes(data) {
        let again =
            PublicPackage::from_bytes(&package.to_bytes()).expect("an encoded package decodes");
        assert_eq!(again, package);
    }
    if let Ok(key) = PublicKey::from_sec1(data) {
        assert_eq!(key.as_bytes().as_slice(), data);
        let _ = key.to_verifying_key();
    }
});
