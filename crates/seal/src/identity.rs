//! A node's long-term identity: an Ed25519 key that signs its broadcasts and an X25519 key that
//! messages for it are sealed to. The secret half zeroizes on drop and never prints.

use std::fmt;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core_06::OsRng;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::SealError;

/// The secret identity. 64 bytes when stored (encrypted by the node's store).
pub struct NodeSecret {
    pub(crate) signing: SigningKey,
    pub(crate) kx: StaticSecret,
}

impl NodeSecret {
    pub fn generate() -> Self {
        NodeSecret {
            signing: SigningKey::generate(&mut OsRng),
            kx: StaticSecret::random_from_rng(OsRng),
        }
    }

    pub fn to_bytes(&self) -> Zeroizing<[u8; 64]> {
        let mut out = Zeroizing::new([0u8; 64]);
        out[..32].copy_from_slice(self.signing.as_bytes());
        out[32..].copy_from_slice(self.kx.as_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        if bytes.len() != 64 {
            return Err(SealError::InvalidKey("a node secret is 64 bytes"));
        }
        let mut signing = Zeroizing::new([0u8; 32]);
        signing.copy_from_slice(&bytes[..32]);
        let mut kx = Zeroizing::new([0u8; 32]);
        kx.copy_from_slice(&bytes[32..]);
        Ok(NodeSecret {
            signing: SigningKey::from_bytes(&signing),
            kx: StaticSecret::from(*kx),
        })
    }

    pub fn public(&self) -> PublicIdentity {
        PublicIdentity {
            signing: self.signing.verifying_key(),
            kx: PublicKey::from(&self.kx),
        }
    }
}

impl fmt::Debug for NodeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeSecret")
            .field("public", &self.public())
            .field("secret", &"***")
            .finish()
    }
}

/// The public identity other nodes are configured with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicIdentity {
    pub(crate) signing: VerifyingKey,
    pub(crate) kx: PublicKey,
}

impl PublicIdentity {
    /// From the two 32-byte public keys; refuses keys that are not valid points or that would
    /// make key agreement degenerate (small-order X25519 points).
    pub fn from_bytes(signing: &[u8], kx: &[u8]) -> Result<Self, SealError> {
        let signing: [u8; 32] = signing
            .try_into()
            .map_err(|_| SealError::InvalidKey("signing key is not 32 bytes"))?;
        let kx: [u8; 32] = kx
            .try_into()
            .map_err(|_| SealError::InvalidKey("kx key is not 32 bytes"))?;
        let signing = VerifyingKey::from_bytes(&signing)
            .map_err(|_| SealError::InvalidKey("signing key is not an Ed25519 point"))?;
        if signing.is_weak() {
            return Err(SealError::InvalidKey("signing key has small order"));
        }
        let kx = PublicKey::from(kx);
        // A small-order point yields a non-contributory shared secret with any key.
        if !StaticSecret::random_from_rng(OsRng)
            .diffie_hellman(&kx)
            .was_contributory()
        {
            return Err(SealError::InvalidKey("kx key has small order"));
        }
        Ok(PublicIdentity { signing, kx })
    }

    pub fn signing_key(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    pub fn kx_key(&self) -> [u8; 32] {
        self.kx.to_bytes()
    }

    /// Hex SHA-256 of both public keys: what operators compare out of band.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"shardsign-identity-v1");
        hasher.update(self.signing.as_bytes());
        hasher.update(self.kx.as_bytes());
        hex::encode(hasher.finalize())
    }
}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicIdentity({})", &self.fingerprint()[..16])
    }
}
