//! Authenticated encryption at rest: XChaCha20-Poly1305 with a random 192-bit nonce stored in
//! front of the ciphertext, associated data binding each blob to its place.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core_06::OsRng;
use zeroize::Zeroizing;

const NONCE_LEN: usize = 24;

pub(crate) fn encrypt(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("XChaCha20-Poly1305 encryption does not fail for in-memory buffers");
    let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    out
}

/// `None` when the key is wrong or the blob was altered or moved to another place.
pub(crate) fn decrypt(key: &[u8; 32], aad: &[u8], blob: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if blob.len() < NONCE_LEN + 16 {
        return None;
    }
    let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
    XChaCha20Poly1305::new(key.into())
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_open_only_with_their_key_and_place() {
        let key = [7u8; 32];
        let blob = encrypt(&key, b"share:1:k1", b"secret");
        assert_eq!(
            decrypt(&key, b"share:1:k1", &blob).unwrap().as_slice(),
            b"secret"
        );
        assert!(decrypt(&[8u8; 32], b"share:1:k1", &blob).is_none());
        assert!(decrypt(&key, b"share:2:k1", &blob).is_none());
        let mut altered = blob.clone();
        altered[30] ^= 1;
        assert!(decrypt(&key, b"share:1:k1", &altered).is_none());
    }
}
