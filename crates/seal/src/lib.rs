//! End-to-end sealing of the messages nodes exchange through the coordinator.
//!
//! - A direct message is encrypted and authenticated for its one recipient: X25519 with a fresh
//!   ephemeral key *and* the sender's static key (the shape of HPKE's auth mode), HKDF-SHA-256,
//!   ChaCha20-Poly1305. Only the recipient can open it and only the sender could have made it.
//! - A broadcast is signed by its sender with Ed25519; every recipient checks the signature.
//!
//! In both, the associated data binds the cluster, protocol, session, round, sender, recipient
//! and a caller-chosen binding (the node puts the hash of what the session is about there), so a
//! message replayed from another session, redirected to another node, moved to another round or
//! altered does not open. The coordinator, which relays these bytes, holds none of the keys.

mod age;
mod context;
mod identity;
mod seal;

pub use age::{AgeIdentity, AgeRecipient, MAX_AGE_FILE_LEN, age_decrypt, age_encrypt};
pub use context::Context;
pub use identity::{NodeSecret, PublicIdentity};
pub use seal::{OVERHEAD, open_broadcast, open_direct, seal_direct, sign_broadcast};

use thiserror::Error;

/// Why an envelope did not open. Deliberately coarse: a failure says nothing about the secret.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SealError {
    #[error("envelope is malformed: {0}")]
    Malformed(&'static str),
    #[error(
        "envelope does not open for this session, round, sender and recipient (altered, replayed or misdirected)"
    )]
    Unauthentic,
    #[error("broadcast signature is invalid (altered, replayed or forged)")]
    BadSignature,
    #[error("public key is invalid: {0}")]
    InvalidKey(&'static str),
}
