//! Sealing and opening of envelopes.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::{Signature, Signer};
use hkdf::Hkdf;
use rand_core_06::OsRng;
use sha2::Sha256;
use x25519_dalek::{EphemeralSecret, PublicKey};
use zeroize::Zeroizing;

use crate::{Context, NodeSecret, PublicIdentity, SealError};

const DIRECT_VERSION: u8 = 1;
const BROADCAST_VERSION: u8 = 2;
const DIRECT_DOMAIN: &[u8] = b"shardsign-seal-direct-v1";
const BROADCAST_DOMAIN: &[u8] = b"shardsign-seal-broadcast-v1";
const TAG_LEN: usize = 16;

/// Largest number of bytes sealing adds to a payload (direct: version, ephemeral key, tag;
/// broadcast: version, signature).
pub const OVERHEAD: usize = 1 + 32 + TAG_LEN + 32;

fn derive_key(
    ephemeral_shared: &[u8; 32],
    static_shared: &[u8; 32],
    ephemeral_public: &[u8; 32],
    sender: &PublicKey,
    recipient: &PublicKey,
) -> Zeroizing<[u8; 32]> {
    let mut ikm = Zeroizing::new([0u8; 64]);
    ikm[..32].copy_from_slice(ephemeral_shared);
    ikm[32..].copy_from_slice(static_shared);
    let mut info = Vec::with_capacity(DIRECT_DOMAIN.len() + 64);
    info.extend_from_slice(DIRECT_DOMAIN);
    info.extend_from_slice(sender.as_bytes());
    info.extend_from_slice(recipient.as_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(ephemeral_public), ikm.as_slice())
        .expand(&info, key.as_mut_slice())
        .expect("32 bytes is a valid HKDF-SHA-256 output length");
    key
}

/// Encrypts `plaintext` for `recipient`, authenticated as coming from `sender`, bound to `context`.
pub fn seal_direct(
    sender: &NodeSecret,
    recipient: &PublicIdentity,
    context: &Context<'_>,
    plaintext: &[u8],
) -> Vec<u8> {
    let ephemeral = EphemeralSecret::random_from_rng(OsRng);
    let ephemeral_public = PublicKey::from(&ephemeral);
    let ephemeral_shared = ephemeral.diffie_hellman(&recipient.kx);
    let static_shared = sender.static_shared(&recipient.kx);
    let key = derive_key(
        ephemeral_shared.as_bytes(),
        &static_shared,
        ephemeral_public.as_bytes(),
        sender.kx_public(),
        &recipient.kx,
    );
    let aad = context.encode(DIRECT_DOMAIN);
    // The key is fresh for every message (fresh ephemeral), so a fixed nonce is safe.
    let ciphertext = ChaCha20Poly1305::new(Key::from_slice(key.as_slice()))
        .encrypt(
            Nonce::from_slice(&[0u8; 12]),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("ChaCha20-Poly1305 encryption does not fail for in-memory buffers");
    let mut out = Vec::with_capacity(1 + 32 + ciphertext.len());
    out.push(DIRECT_VERSION);
    out.extend_from_slice(ephemeral_public.as_bytes());
    out.extend_from_slice(&ciphertext);
    out
}

/// Opens an envelope sealed for `recipient` by `sender` in `context`.
pub fn open_direct(
    recipient: &NodeSecret,
    sender: &PublicIdentity,
    context: &Context<'_>,
    body: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if body.len() < 1 + 32 + TAG_LEN {
        return Err(SealError::Malformed("shorter than a sealed envelope"));
    }
    if body[0] != DIRECT_VERSION {
        return Err(SealError::Malformed(
            "not a direct envelope of a known version",
        ));
    }
    let ephemeral_bytes: [u8; 32] = body[1..33].try_into().expect("32 bytes");
    let ephemeral_public = PublicKey::from(ephemeral_bytes);
    let ephemeral_shared = recipient.kx.diffie_hellman(&ephemeral_public);
    if !ephemeral_shared.was_contributory() {
        return Err(SealError::Unauthentic);
    }
    let static_shared = recipient.static_shared(&sender.kx);
    let key = derive_key(
        ephemeral_shared.as_bytes(),
        &static_shared,
        &ephemeral_bytes,
        &sender.kx,
        recipient.kx_public(),
    );
    let aad = context.encode(DIRECT_DOMAIN);
    ChaCha20Poly1305::new(Key::from_slice(key.as_slice()))
        .decrypt(
            Nonce::from_slice(&[0u8; 12]),
            Payload {
                msg: &body[33..],
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SealError::Unauthentic)
}

fn broadcast_message(context: &Context<'_>, payload: &[u8]) -> Vec<u8> {
    let mut message = context.encode(BROADCAST_DOMAIN);
    message.extend_from_slice(payload);
    message
}

/// Signs a broadcast `payload` in `context` (whose `to` is 0). The payload travels in the clear.
pub fn sign_broadcast(sender: &NodeSecret, context: &Context<'_>, payload: &[u8]) -> Vec<u8> {
    let signature = sender.signing.sign(&broadcast_message(context, payload));
    let mut out = Vec::with_capacity(1 + payload.len() + 64);
    out.push(BROADCAST_VERSION);
    out.extend_from_slice(payload);
    out.extend_from_slice(&signature.to_bytes());
    out
}

/// Checks a broadcast's signature by `sender` in `context`; returns the payload.
pub fn open_broadcast<'b>(
    sender: &PublicIdentity,
    context: &Context<'_>,
    body: &'b [u8],
) -> Result<&'b [u8], SealError> {
    if body.len() < 1 + 64 {
        return Err(SealError::Malformed("shorter than a signed broadcast"));
    }
    if body[0] != BROADCAST_VERSION {
        return Err(SealError::Malformed("not a broadcast of a known version"));
    }
    let (payload, signature) = body[1..].split_at(body.len() - 1 - 64);
    let signature = Signature::from_slice(signature).map_err(|_| SealError::BadSignature)?;
    sender
        .signing
        .verify_strict(&broadcast_message(context, payload), &signature)
        .map_err(|_| SealError::BadSignature)?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: [u8; 32] = [1; 32];
    const OTHER_SESSION: [u8; 32] = [2; 32];
    const BINDING: [u8; 32] = [9; 32];

    fn context(to: u8) -> Context<'static> {
        Context {
            cluster_id: "test",
            protocol: 2,
            session_id: &SESSION,
            round: 1,
            from: 1,
            to,
            binding: &BINDING,
        }
    }

    #[test]
    fn direct_envelope_opens_only_for_its_recipient_and_context() {
        let (alice, bob, carol) = (
            NodeSecret::generate(),
            NodeSecret::generate(),
            NodeSecret::generate(),
        );
        let body = seal_direct(&alice, &bob.public(), &context(2), b"secret share fragment");
        assert_eq!(
            &*open_direct(&bob, &alice.public(), &context(2), &body).unwrap(),
            b"secret share fragment"
        );
        assert!(
            !body.windows(6).any(|w| w == b"secret"),
            "ciphertext hides the plaintext"
        );

        // Another recipient, a forged sender, another session, round, recipient or binding: no.
        assert_eq!(
            open_direct(&carol, &alice.public(), &context(2), &body),
            Err(SealError::Unauthentic)
        );
        assert_eq!(
            open_direct(&bob, &carol.public(), &context(2), &body),
            Err(SealError::Unauthentic)
        );
        let replayed = Context {
            session_id: &OTHER_SESSION,
            ..context(2)
        };
        assert_eq!(
            open_direct(&bob, &alice.public(), &replayed, &body),
            Err(SealError::Unauthentic)
        );
        let reordered = Context {
            round: 2,
            ..context(2)
        };
        assert_eq!(
            open_direct(&bob, &alice.public(), &reordered, &body),
            Err(SealError::Unauthentic)
        );
        assert_eq!(
            open_direct(&bob, &alice.public(), &context(3), &body),
            Err(SealError::Unauthentic)
        );
        let rebound = Context {
            binding: &[0; 32],
            ..context(2)
        };
        assert_eq!(
            open_direct(&bob, &alice.public(), &rebound, &body),
            Err(SealError::Unauthentic)
        );

        // Any flipped bit: no.
        for i in [0, 1, 40, body.len() - 1] {
            let mut altered = body.clone();
            altered[i] ^= 1;
            assert!(
                open_direct(&bob, &alice.public(), &context(2), &altered).is_err(),
                "byte {i}"
            );
        }
        assert!(open_direct(&bob, &alice.public(), &context(2), &body[..20]).is_err());
    }

    #[test]
    fn broadcast_verifies_only_for_its_sender_and_context() {
        let (alice, bob) = (NodeSecret::generate(), NodeSecret::generate());
        let body = sign_broadcast(&alice, &context(0), b"public commitment");
        assert_eq!(
            open_broadcast(&alice.public(), &context(0), &body).unwrap(),
            b"public commitment"
        );
        assert_eq!(
            open_broadcast(&bob.public(), &context(0), &body),
            Err(SealError::BadSignature)
        );
        let replayed = Context {
            session_id: &OTHER_SESSION,
            ..context(0)
        };
        assert_eq!(
            open_broadcast(&alice.public(), &replayed, &body),
            Err(SealError::BadSignature)
        );
        let mut altered = body.clone();
        altered[3] ^= 1;
        assert_eq!(
            open_broadcast(&alice.public(), &context(0), &altered),
            Err(SealError::BadSignature)
        );
    }

    #[test]
    fn secrets_round_trip_and_never_print() {
        let secret = NodeSecret::generate();
        let restored = NodeSecret::from_bytes(secret.to_bytes().as_slice()).unwrap();
        assert_eq!(restored.public(), secret.public());
        let printed = format!("{secret:?}");
        assert!(printed.contains("***"));
        assert!(!printed.contains(&hex::encode(&secret.to_bytes()[..8])));
        let public = secret.public();
        assert_eq!(
            PublicIdentity::from_bytes(&public.signing_key(), &public.kx_key()).unwrap(),
            public
        );
        assert!(
            PublicIdentity::from_bytes(&public.signing_key(), &[0u8; 32]).is_err(),
            "small-order kx key"
        );
    }
}
