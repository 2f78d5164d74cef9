//! A party's key share: what DKG leaves on one node. Zeroized on drop (the inner `dkls23` party
//! wipes itself), `***` in Debug, and a versioned encoding checked before and after decoding.

use std::fmt;

use dkls23::secp256k1::Party;
use k256::ecdsa::VerifyingKey;
use zeroize::Zeroizing;

use crate::codec;
use crate::error::TssError;
use crate::ids::{PARTIES, PartyId, THRESHOLD};

/// Largest encoded key share accepted (a 2-of-3 share is ~105 KB).
pub const MAX_SHARE_LEN: usize = 256 * 1024;

const SHARE_VERSION: u8 = 1;

/// The group public key (SEC1 compressed). Public; safe to print and store in the clear.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 33]);

impl PublicKey {
    /// From the 33-byte compressed SEC1 encoding, the only one accepted: the other encodings
    /// of the same point (uncompressed, hybrid, compact) would give one key two byte forms.
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, TssError> {
        if bytes.len() != 33 || !matches!(bytes[0], 2 | 3) {
            return Err(TssError::InvalidShare(
                "public key is not a 33-byte compressed SEC1 point".into(),
            ));
        }
        let key = VerifyingKey::from_sec1_bytes(bytes).map_err(|_| {
            TssError::InvalidShare("public key is not a valid secp256k1 point".into())
        })?;
        Ok(Self::from_verifying_key(&key))
    }

    fn from_verifying_key(key: &VerifyingKey) -> Self {
        let mut out = [0u8; 33];
        out.copy_from_slice(key.to_sec1_point(true).as_bytes());
        PublicKey(out)
    }

    pub fn as_bytes(&self) -> &[u8; 33] {
        &self.0
    }

    pub fn to_verifying_key(&self) -> VerifyingKey {
        // Constructed only from valid points.
        VerifyingKey::from_sec1_bytes(&self.0).expect("PublicKey holds a valid point")
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// One party's share of a 2-of-3 key.
pub struct KeyShare {
    party: Party,
    id: PartyId,
    public_key: PublicKey,
}

impl KeyShare {
    /// Wraps a share produced by DKG, checking that it is one of ours.
    pub(crate) fn from_party(party: Party) -> Result<Self, TssError> {
        if party.parameters.threshold != THRESHOLD
            || usize::from(party.parameters.share_count) != PARTIES.len()
        {
            return Err(TssError::InvalidShare(format!(
                "parameters are {}-of-{}, expected {THRESHOLD}-of-{}",
                party.parameters.threshold,
                party.parameters.share_count,
                PARTIES.len()
            )));
        }
        let id = PartyId::from_dkls(party.party_index)
            .ok_or_else(|| TssError::InvalidShare("party index out of range".into()))?;
        let key = VerifyingKey::from_affine(party.pk)
            .map_err(|_| TssError::InvalidShare("public key is the identity".into()))?;
        // Signing indexes these maps by counterparty and panics on a missing entry: refuse a share
        // whose maps do not name exactly the two other parties. Both empty is a hollow share
        // (rebuilt by repair): it only ever takes part in a complete refresh.
        let others: Vec<_> = PARTIES
            .iter()
            .filter(|p| **p != id)
            .map(|p| p.to_dkls())
            .collect();
        let senders: Vec<_> = party.mul_senders.keys().copied().collect();
        let receivers: Vec<_> = party.mul_receivers.keys().copied().collect();
        let hollow = senders.is_empty() && receivers.is_empty();
        if !hollow && (senders != others || receivers != others) {
            return Err(TssError::InvalidShare(
                "multiplication state does not match the cluster".into(),
            ));
        }
        Ok(KeyShare {
            public_key: PublicKey::from_verifying_key(&key),
            party,
            id,
        })
    }

    pub fn party_id(&self) -> PartyId {
        self.id
    }

    /// Rebuilt by share repair and not refreshed since: the right share of the key, but without
    /// the multiplication (OT) state signing needs. Only a complete refresh fills it in.
    pub fn is_hollow(&self) -> bool {
        self.party.mul_senders.is_empty() && self.party.mul_receivers.is_empty()
    }

    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    pub(crate) fn party(&self) -> &Party {
        &self.party
    }

    /// The public point of this share (what the group's public key package records for it).
    pub(crate) fn verifying_share(&self) -> k256::AffinePoint {
        (k256::ProjectivePoint::GENERATOR * self.party.poly_point).to_affine()
    }

    /// [`Self::verifying_share`], SEC1 compressed: what a node publishes (signed) when the
    /// nodes agree on a package for a key made before they kept one.
    pub fn verifying_share_bytes(&self) -> [u8; 33] {
        use k256::elliptic_curve::sec1::ToSec1Point;
        let mut out = [0u8; 33];
        out.copy_from_slice(self.verifying_share().to_sec1_point(true).as_bytes());
        out
    }

    /// The versioned encoding, in a buffer that is wiped when dropped. Serialised straight into
    /// a buffer of the maximum size so that no reallocation leaves a copy behind.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut buf = Zeroizing::new(vec![0u8; MAX_SHARE_LEN]);
        buf[0] = SHARE_VERSION;
        let used = postcard::to_slice(&self.party, &mut buf[1..])
            .expect("a 2-of-3 share fits in MAX_SHARE_LEN")
            .len();
        buf.truncate(1 + used);
        buf
    }

    /// Decodes [`Self::to_bytes`]; the size and version are checked before parsing, the share's
    /// shape after.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TssError> {
        if bytes.len() > MAX_SHARE_LEN {
            return Err(TssError::InvalidShare(format!(
                "{} bytes is over the limit of {MAX_SHARE_LEN}",
                bytes.len()
            )));
        }
        match bytes.first() {
            None => return Err(TssError::InvalidShare("empty".into())),
            Some(&SHARE_VERSION) => {}
            Some(&other) => {
                return Err(TssError::InvalidShare(format!(
                    "encoding version {other} is not supported"
                )));
            }
        }
        let party: Party = codec::decode(&bytes[1..]).map_err(|_| {
            // postcard's message could echo share contents; say only what failed.
            TssError::InvalidShare("encoding is truncated or corrupt".into())
        })?;
        KeyShare::from_party(party)
    }
}

impl fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyShare")
            .field("party", &self.id.get())
            .field("public_key", &self.public_key)
            .field("secret", &"***")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Found by the key_share fuzz target: k256 also reads the compact (0x05) and uncompressed
    // forms, which would give one key a second byte form.
    #[test]
    fn only_the_compressed_sec1_form_is_a_public_key() {
        let compact =
            hex::decode("055dca95050d8ff1c2a2822e772e114d3c26ed7ddeb558183573fc47e2bea2eada")
                .unwrap();
        assert!(PublicKey::from_sec1(&compact).is_err());
        let mut compressed = compact.clone();
        compressed[0] = 2;
        let key = PublicKey::from_sec1(&compressed).unwrap();
        assert_eq!(key.as_bytes().as_slice(), compressed.as_slice());
        let uncompressed = key.to_verifying_key().to_sec1_point(false);
        assert!(PublicKey::from_sec1(uncompressed.as_bytes()).is_err());
    }
}
