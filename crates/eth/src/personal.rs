//! EIP-191 version 0x45 (`personal_sign`): the prefixed message hash and the 65-byte signature.

use crate::keccak::keccak256;
use crate::signature::Signature;

/// Largest message accepted for `personal_sign`, in bytes.
pub const MAX_PERSONAL_MESSAGE_LEN: usize = 64 * 1024;

/// keccak256("\x19Ethereum Signed Message:\n" || len(message) || message).
pub fn personal_sign_hash(message: &[u8]) -> [u8; 32] {
    let mut prefixed = Vec::with_capacity(message.len() + 48);
    prefixed.extend_from_slice(b"\x19Ethereum Signed Message:\n");
    prefixed.extend_from_slice(message.len().to_string().as_bytes());
    prefixed.extend_from_slice(message);
    keccak256(prefixed)
}

/// The 65-byte `r || s || v` encoding wallets return, with `v` = 27 + recovery id.
pub fn personal_signature_bytes(signature: &Signature) -> [u8; 65] {
    let signature = signature.normalized_low_s();
    let mut out = [0u8; 65];
    out[..32].copy_from_slice(&signature.r());
    out[32..64].copy_from_slice(&signature.s());
    out[64] = 27 + signature.recovery_id().to_u8();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_of_hello_world_matches_the_known_value() {
        // The value every wallet library documents for personal_sign("Hello World").
        assert_eq!(
            hex::encode(personal_sign_hash(b"Hello World")),
            "a1de988600a42c4b4ab089b619297c17d53cffae5d5120d82d8a92d0bb3b78f2"
        );
    }
}
