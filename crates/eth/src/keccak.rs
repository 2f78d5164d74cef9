//! Keccak-256, the hash Ethereum uses everywhere (not NIST SHA3-256: different padding).

use sha3::{Digest, Keccak256};

/// Keccak-256 of `data`.
pub fn keccak256(data: impl AsRef<[u8]>) -> [u8; 32] {
    Keccak256::digest(data.as_ref()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_matches_the_known_digest() {
        assert_eq!(
            hex::encode(keccak256([])),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
    }
}
