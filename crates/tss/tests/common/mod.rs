//! Helpers the engine's integration tests share.

#![allow(dead_code)]

use k256::ecdsa::signature::hazmat::PrehashVerifier;
use shardsign_tss::{PublicKey, SessionId, Signature};

pub fn fresh_session() -> SessionId {
    SessionId(rand::random())
}

/// Whether `signature` is a valid ECDSA signature of `hash` under `public_key`.
pub fn verifies(public_key: &PublicKey, signature: &Signature, hash: &[u8; 32]) -> bool {
    let ecdsa = k256::ecdsa::Signature::from_scalars(signature.r, signature.s).unwrap();
    public_key
        .to_verifying_key()
        .verify_prehash(hash, &ecdsa)
        .is_ok()
}
