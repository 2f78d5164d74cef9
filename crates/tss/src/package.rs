//! The group's public key package: the key and every party's verifying share (the public point
//! of its share). Public, and what share repair checks a helper's terms against, so the nodes
//! keep it per key and epoch. A package is accepted only when it is consistent: 2-of-3, a share
//! for each party, and every pair of verifying shares interpolating to the group key.

use std::collections::BTreeMap;

use dkls23::protocols::{Parameters, PublicKeyPackage};
use k256::elliptic_curve::sec1::ToSec1Point;
use k256::{AffinePoint, ProjectivePoint, Scalar, Secp256k1};

use crate::codec;
use crate::error::TssError;
use crate::ids::{PARTIES, PartyId, THRESHOLD};
use crate::share::{KeyShare, PublicKey};

const PACKAGE_VERSION: u8 = 1;
/// Largest encoded package accepted (three points and parameters take ~120 bytes).
pub const MAX_PACKAGE_LEN: usize = 1024;

/// A checked public key package.
#[derive(Clone)]
pub struct PublicPackage {
    inner: PublicKeyPackage<Secp256k1>,
    public_key: PublicKey,
}

impl std::fmt::Debug for PublicPackage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicPackage")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl PartialEq for PublicPackage {
    fn eq(&self, other: &Self) -> bool {
        self.to_bytes() == other.to_bytes()
    }
}

impl Eq for PublicPackage {}

/// λ_i for interpolating at 0 from the points at `i` and `j`: j / (j - i).
fn lagrange(i: PartyId, j: PartyId) -> Scalar {
    let (i, j) = (
        Scalar::from(u64::from(i.get())),
        Scalar::from(u64::from(j.get())),
    );
    j * (j - i).invert().expect("distinct party ids")
}

impl PublicPackage {
    /// Checks what the engine produced (or what was decoded).
    pub(crate) fn from_engine(inner: PublicKeyPackage<Secp256k1>) -> Result<Self, TssError> {
        let invalid = |what: &str| TssError::InvalidShare(format!("public key package: {what}"));
        if inner.threshold() != THRESHOLD || usize::from(inner.share_count()) != PARTIES.len() {
            return Err(invalid("not 2-of-3"));
        }
        let key = ProjectivePoint::from(*inner.verifying_key());
        if key == ProjectivePoint::IDENTITY {
            return Err(invalid("the group key is the identity"));
        }
        let share = |p: PartyId| {
            inner
                .verifying_share(p.to_dkls())
                .map(|s| ProjectivePoint::from(*s))
                .ok_or_else(|| invalid("a party's verifying share is missing"))
        };
        for (a, b) in [(0, 1), (0, 2), (1, 2)] {
            let (i, j) = (PARTIES[a], PARTIES[b]);
            let interpolated = share(i)? * lagrange(i, j) + share(j)? * lagrange(j, i);
            if interpolated != key {
                return Err(invalid(
                    "the verifying shares do not interpolate to the group key",
                ));
            }
        }
        let public_key =
            PublicKey::from_sec1(inner.verifying_key().to_sec1_point(true).as_bytes())?;
        Ok(PublicPackage { inner, public_key })
    }

    /// The package of `public_key` from every party's verifying share (SEC1), each published
    /// by its own party: accepted only if the shares interpolate to `public_key`, so no party
    /// can pass off a point of its choosing as another's.
    pub fn from_verifying_shares(
        public_key: &PublicKey,
        shares: &BTreeMap<PartyId, [u8; 33]>,
    ) -> Result<Self, TssError> {
        // Compressed SEC1 only (the arrays are 33 bytes); never the identity.
        let point = |bytes: &[u8]| -> Result<AffinePoint, TssError> {
            k256::ecdsa::VerifyingKey::from_sec1_bytes(bytes)
                .map(|key| *key.as_affine())
                .map_err(|_| TssError::InvalidShare("a verifying share is not a point".into()))
        };
        if shares.len() != PARTIES.len() {
            return Err(TssError::InvalidShare(format!(
                "public key package: {} verifying shares, expected one from each of the {} parties",
                shares.len(),
                PARTIES.len()
            )));
        }
        let verifying_shares = shares
            .iter()
            .map(|(party, bytes)| Ok((party.to_dkls(), point(bytes)?)))
            .collect::<Result<BTreeMap<_, _>, TssError>>()?;
        let parameters = Parameters::new(THRESHOLD, PARTIES.len() as u8)
            .map_err(|_| TssError::InvalidShare("public key package: bad parameters".into()))?;
        let package =
            PublicKeyPackage::new(point(public_key.as_bytes())?, verifying_shares, parameters);
        let package = Self::from_engine(package)?;
        if package.public_key != *public_key {
            return Err(TssError::InvalidShare(
                "public key package: not this key's".into(),
            ));
        }
        Ok(package)
    }

    pub(crate) fn inner(&self) -> &PublicKeyPackage<Secp256k1> {
        &self.inner
    }

    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// `party`'s verifying share, SEC1 compressed.
    pub fn verifying_share(&self, party: PartyId) -> [u8; 33] {
        let point: AffinePoint = *self
            .inner
            .verifying_share(party.to_dkls())
            .expect("a checked package has every party's share");
        let mut out = [0u8; 33];
        out.copy_from_slice(point.to_sec1_point(true).as_bytes());
        out
    }

    /// Whether `share` is the share this package names for its party.
    pub fn matches(&self, share: &KeyShare) -> bool {
        share.public_key() == self.public_key
            && self
                .inner
                .verify_share(share.party_id().to_dkls(), &share.verifying_share())
    }

    /// `[version 1][postcard of the dkls23 package]`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![PACKAGE_VERSION];
        out.extend(codec::encode(&self.inner));
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TssError> {
        if bytes.len() > MAX_PACKAGE_LEN {
            return Err(TssError::InvalidShare(format!(
                "public key package of {} bytes is over the limit of {MAX_PACKAGE_LEN}",
                bytes.len()
            )));
        }
        match bytes.split_first() {
            Some((&PACKAGE_VERSION, rest)) => {
                let inner = codec::decode(rest)
                    .map_err(|e| TssError::InvalidShare(format!("public key package: {e}")))?;
                Self::from_engine(inner)
            }
            _ => Err(TssError::InvalidShare(
                "public key package: unknown version".into(),
            )),
        }
    }
}
