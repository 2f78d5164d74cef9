//! A node's long-term identity: an Ed25519 key that signs its broadcasts and an X25519 key that
//! messages for it are sealed to. The secret half zeroizes on drop and never prints.

use std::fmt;
use std::sync::Mutex;

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
    /// `kx`'s public key, computed once (sealing needs it for every message).
    kx_public: PublicKey,
    /// The static Diffie-Hellman secret with each peer, computed once per peer: sealing and
    /// opening a message then costs one X25519 operation instead of two or three. As secret as
    /// `kx` itself (from which anyone holding it derives them), and wiped on drop.
    static_shared: Mutex<Vec<(PublicKey, Zeroizing<[u8; 32]>)>>,
}

/// Most peers whose static secret is remembered (a cluster has three members).
const MAX_REMEMBERED_PEERS: usize = 16;

impl NodeSecret {
    fn new(signing: SigningKey, kx: StaticSecret) -> Self {
        let kx_public = PublicKey::from(&kx);
        NodeSecret {
            signing,
            kx,
            kx_public,
            static_shared: Mutex::new(Vec::new()),
        }
    }

    pub fn generate() -> Self {
        Self::new(
            SigningKey::generate(&mut OsRng),
            StaticSecret::random_from_rng(OsRng),
        )
    }

    pub(crate) fn kx_public(&self) -> &PublicKey {
        &self.kx_public
    }

    /// The static X25519 secret shared with `peer`.
    pub(crate) fn static_shared(&self, peer: &PublicKey) -> Zeroizing<[u8; 32]> {
        let mut remembered = self
            .static_shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, shared)) = remembered.iter().find(|(key, _)| key == peer) {
            return shared.clone();
        }
        let shared = Zeroizing::new(self.kx.diffie_hellman(peer).to_bytes());
        if remembered.len() < MAX_REMEMBERED_PEERS {
            remembered.push((*peer, shared.clone()));
        }
        shared
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
        Ok(Self::new(
            SigningKey::from_bytes(&signing),
            StaticSecret::from(*kx),
        ))
    }

    pub fn public(&self) -> PublicIdentity {
        PublicIdentity {
            signing: self.signing.verifying_key(),
            kx: self.kx_public,
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
