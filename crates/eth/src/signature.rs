//! secp256k1 ECDSA signatures as Ethereum uses them: (r, s, recovery id), low-s (EIP-2),
//! public-key recovery, and local signing for tests, baselines and tooling.

use k256::ecdsa::{self, SigningKey, VerifyingKey};

use crate::address::Address;
use crate::error::EthError;

/// Which of the two candidate points produced `r`: 0 for an even y, 1 for an odd y.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecoveryId(u8);

impl RecoveryId {
    /// 0 or 1; anything else is refused (ids 2 and 3 need `r >= n`, which Ethereum cannot encode).
    pub fn new(value: u8) -> Result<Self, EthError> {
        match value {
            0 | 1 => Ok(RecoveryId(value)),
            _ => Err(EthError::InvalidSignature("recovery id must be 0 or 1")),
        }
    }

    pub fn to_u8(self) -> u8 {
        self.0
    }

    fn flipped(self) -> Self {
        RecoveryId(self.0 ^ 1)
    }
}

/// An ECDSA signature with its recovery id. `r` and `s` are checked to be valid scalars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    inner: ecdsa::Signature,
    recovery_id: RecoveryId,
}

impl Signature {
    /// Builds a signature from big-endian `r` and `s` and a recovery id (0 or 1).
    pub fn new(r: [u8; 32], s: [u8; 32], recovery_id: u8) -> Result<Self, EthError> {
        let inner = ecdsa::Signature::from_scalars(r, s)
            .map_err(|_| EthError::InvalidSignature("r and s must be in 1..n-1"))?;
        Ok(Signature {
            inner,
            recovery_id: RecoveryId::new(recovery_id)?,
        })
    }

    pub fn r(&self) -> [u8; 32] {
        self.inner.split_bytes().0.into()
    }

    pub fn s(&self) -> [u8; 32] {
        self.inner.split_bytes().1.into()
    }

    pub fn recovery_id(&self) -> RecoveryId {
        self.recovery_id
    }

    /// Whether `s <= n/2`, as EIP-2 requires of transaction signatures.
    pub fn is_low_s(&self) -> bool {
        self.inner.normalize_s() == self.inner
    }

    /// The same signature with `s` in the lower half; negating `s` flips the recovery id.
    pub fn normalized_low_s(self) -> Self {
        let normalized = self.inner.normalize_s();
        if normalized == self.inner {
            self
        } else {
            Signature {
                inner: normalized,
                recovery_id: self.recovery_id.flipped(),
            }
        }
    }

    /// Recovers the public key that made this signature over `hash`.
    pub fn recover_public_key(&self, hash: &[u8; 32]) -> Result<VerifyingKey, EthError> {
        let id = ecdsa::RecoveryId::new(self.recovery_id.0 == 1, false);
        VerifyingKey::recover_from_prehash(hash, &self.inner, id)
            .map_err(|_| EthError::InvalidSignature("no public key recovers from it"))
    }

    /// The address of the key that made this signature over `hash`.
    pub fn recover_address(&self, hash: &[u8; 32]) -> Result<Address, EthError> {
        Ok(Address::from_public_key(&self.recover_public_key(hash)?))
    }

    /// Verifies this signature over `hash` against `key` (low-s required).
    pub fn verify(&self, hash: &[u8; 32], key: &VerifyingKey) -> bool {
        use k256::ecdsa::signature::hazmat::PrehashVerifier;
        key.verify_prehash(hash, &self.inner).is_ok()
    }
}

/// Signs a 32-byte hash with a single local key (deterministic RFC 6979 nonce, low-s).
/// shardsign never holds a whole key in production; this exists for tests, benches and the
/// single-key baseline.
pub fn sign_prehash(key: &SigningKey, hash: &[u8; 32]) -> Signature {
    let (inner, id) = key.sign_prehash_recoverable(hash);
    let signature = Signature {
        inner,
        recovery_id: RecoveryId(u8::from(id.is_y_odd())),
    };
    signature.normalized_low_s()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keccak::keccak256;

    fn key() -> SigningKey {
        SigningKey::from_slice(&keccak256(b"shardsign test key")).unwrap()
    }

    #[test]
    fn signature_recovers_the_signing_key() {
        let key = key();
        let hash = keccak256(b"hello");
        let signature = sign_prehash(&key, &hash);
        assert!(signature.is_low_s());
        assert_eq!(
            &signature.recover_public_key(&hash).unwrap(),
            key.verifying_key()
        );
        assert!(signature.verify(&hash, key.verifying_key()));
    }

    #[test]
    fn negating_s_flips_the_recovery_id_and_still_recovers() {
        let key = key();
        let hash = keccak256(b"flip");
        let low = sign_prehash(&key, &hash);
        // n - s, computed with k256's scalar arithmetic.
        let s =
            <k256::Scalar as k256::elliptic_curve::PrimeField>::from_repr(low.s().into()).unwrap();
        let high_s: [u8; 32] = (-s).to_bytes().into();
        let high = Signature::new(low.r(), high_s, low.recovery_id().to_u8() ^ 1).unwrap();
        assert!(!high.is_low_s());
        assert_eq!(
            &high.recover_public_key(&hash).unwrap(),
            key.verifying_key()
        );
        assert_eq!(high.normalized_low_s(), low);
    }

    #[test]
    fn out_of_range_scalars_and_ids_are_refused() {
        assert!(Signature::new([0; 32], [1; 32], 0).is_err());
        assert!(Signature::new([0xff; 32], [1; 32], 0).is_err());
        assert!(Signature::new([1; 32], [1; 32], 2).is_err());
    }
}
