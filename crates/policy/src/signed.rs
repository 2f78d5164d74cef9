//! Operator-signed key policies. The operator's tooling holds the Ed25519 policy key; nodes (and
//! the coordinator, to refuse early) hold only its public half. What is signed is the exact
//! encoded `KeyPolicy`, prefixed with a domain string so the signature means nothing elsewhere.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message;
use shardsign_proto::v1 as api;
use zeroize::Zeroizing;

use shardsign_request::KeyId;

use crate::error::PolicyError;
use crate::rules::{Rules, RulesFor};

const DOMAIN: &[u8] = b"shardsign key policy v1\0";
/// Longest a signed policy may be valid: an operator renews within this.
pub const MAX_VALIDITY_SECS: i64 = 400 * 86_400;
/// How long `shardsign policy set` makes a policy valid by default.
pub const DEFAULT_VALIDITY_SECS: i64 = 30 * 86_400;

/// Largest encoded `SignedKeyPolicy` accepted anywhere (checked before decoding).
pub const MAX_SIGNED_POLICY_BYTES: usize = 256 * 1024;

/// The operator's private policy key. Zeroized on drop (by ed25519-dalek), never printed.
pub struct OperatorPolicyKey(SigningKey);

impl fmt::Debug for OperatorPolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OperatorPolicyKey(public {}, secret ***)",
            self.public_hex()
        )
    }
}

impl OperatorPolicyKey {
    pub fn generate() -> Self {
        OperatorPolicyKey(SigningKey::generate(&mut rand_core_06::OsRng))
    }

    /// From the 64 hex digits of its 32-byte seed (as written by [`Self::to_secret_hex`]).
    pub fn from_secret_hex(text: &str) -> Result<Self, PolicyError> {
        let bytes = Zeroizing::new(
            hex::decode(text.trim())
                .map_err(|_| PolicyError::Malformed("the policy key file is not hex".into()))?,
        );
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| PolicyError::Malformed("the policy key is not 32 bytes".into()))?,
        );
        Ok(OperatorPolicyKey(SigningKey::from_bytes(&seed)))
    }

    /// The seed as hex, for writing to a 0600 file. The caller owns keeping it secret.
    pub fn to_secret_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.to_bytes()))
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.0.verifying_key().to_bytes())
    }

    /// Signs a policy after checking it parses (so an operator never signs a policy the nodes
    /// would refuse).
    pub fn sign(&self, policy: &api::KeyPolicy) -> Result<api::SignedKeyPolicy, PolicyError> {
        check_shape(policy)?;
        let bytes = policy.encode_to_vec();
        let signature = self.0.sign(&signed_message(&bytes));
        Ok(api::SignedKeyPolicy {
            policy: bytes,
            signature: signature.to_bytes().to_vec(),
        })
    }
}

fn signed_message(policy: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(DOMAIN.len() + policy.len());
    message.extend_from_slice(DOMAIN);
    message.extend_from_slice(policy);
    message
}

fn check_shape(policy: &api::KeyPolicy) -> Result<Rules, PolicyError> {
    KeyId::parse(&policy.key_id).map_err(|e| PolicyError::invalid("key_id", e.to_string()))?;
    if policy.cluster_id.is_empty() || policy.cluster_id.len() > 64 {
        return Err(PolicyError::invalid(
            "cluster_id",
            "expected 1 to 64 characters",
        ));
    }
    if policy.version == 0 {
        return Err(PolicyError::invalid("version", "versions start at 1"));
    }
    // 0: signed before policies expired (accepted, never expires, reported as such until the
    // operator renews it); otherwise a bounded validity.
    let validity = policy.not_after_unix.saturating_sub(policy.issued_at_unix);
    if policy.not_after_unix != 0 && (validity <= 0 || validity > MAX_VALIDITY_SECS) {
        return Err(PolicyError::invalid(
            "not_after_unix",
            format!(
                "a policy is valid for 1 second to {} days after issued_at_unix",
                MAX_VALIDITY_SECS / 86_400
            ),
        ));
    }
    let rules = policy
        .rules
        .as_ref()
        .ok_or_else(|| PolicyError::invalid("rules", "missing"))?;
    Rules::from_proto(rules, RulesFor::SigningKey)
}

impl VerifiedKeyPolicy {
    /// Whether it has expired at `now_unix` (a policy signed before expiry existed never does).
    pub fn expired(&self, now_unix: i64) -> bool {
        self.not_after_unix != 0 && now_unix >= self.not_after_unix
    }

    /// Signed before policies expired: valid until renewed.
    pub fn never_expires(&self) -> bool {
        self.not_after_unix == 0
    }
}

/// A policy whose signature verified, for this cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKeyPolicy {
    pub key_id: String,
    pub version: u64,
    pub issued_at_unix: i64,
    /// When it stops being valid (Unix seconds).
    pub not_after_unix: i64,
    pub rules: Rules,
    /// The encoded `SignedKeyPolicy`, as received: what is stored and forwarded.
    pub signed: Vec<u8>,
}

/// Checks signed policies against the operator's public policy key.
#[derive(Clone)]
pub struct PolicyVerifier {
    key: VerifyingKey,
}

impl fmt::Debug for PolicyVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyVerifier({})", hex::encode(self.key.to_bytes()))
    }
}

impl PolicyVerifier {
    /// From the 64 hex digits of the public key.
    pub fn from_hex(text: &str) -> Result<Self, PolicyError> {
        let bytes: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                PolicyError::Malformed("the policy public key must be 64 hex digits".into())
            })?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| {
            PolicyError::Malformed("the policy public key is not a valid Ed25519 key".into())
        })?;
        Ok(PolicyVerifier { key })
    }

    /// Verifies an encoded `SignedKeyPolicy` for `cluster_id`.
    pub fn verify(
        &self,
        cluster_id: &str,
        signed: &[u8],
    ) -> Result<VerifiedKeyPolicy, PolicyError> {
        if signed.len() > MAX_SIGNED_POLICY_BYTES {
            return Err(PolicyError::Malformed(format!(
                "{} bytes is over the limit of {MAX_SIGNED_POLICY_BYTES}",
                signed.len()
            )));
        }
        let envelope = api::SignedKeyPolicy::decode(signed)
            .map_err(|_| PolicyError::Malformed("not an encoded SignedKeyPolicy".into()))?;
        let signature = Signature::from_slice(&envelope.signature)
            .map_err(|_| PolicyError::Signature("the signature is not 64 bytes"))?;
        self.key
            .verify_strict(&signed_message(&envelope.policy), &signature)
            .map_err(|_| {
                PolicyError::Signature(
                    "the signature does not verify under the operator's policy key",
                )
            })?;
        let policy = api::KeyPolicy::decode(envelope.policy.as_slice())
            .map_err(|_| PolicyError::Malformed("the signed bytes are not a KeyPolicy".into()))?;
        if policy.cluster_id != cluster_id {
            return Err(PolicyError::Malformed(format!(
                "the policy is for cluster `{}`, not `{cluster_id}`",
                policy.cluster_id
            )));
        }
        let rules = check_shape(&policy)?;
        Ok(VerifiedKeyPolicy {
            key_id: policy.key_id,
            version: policy.version,
            issued_at_unix: policy.issued_at_unix,
            not_after_unix: policy.not_after_unix,
            rules,
            signed: signed.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(version: u64) -> api::KeyPolicy {
        api::KeyPolicy {
            cluster_id: "c1".into(),
            key_id: "key-1".into(),
            version,
            rules: Some(api::Policy {
                allowed_chain_ids: vec![1],
                max_value_per_tx: "1eth".into(),
                ..Default::default()
            }),
            issued_at_unix: 1,
            not_after_unix: 1 + DEFAULT_VALIDITY_SECS,
        }
    }

    #[test]
    fn signed_policies_verify_and_tampering_is_caught() {
        let key = OperatorPolicyKey::generate();
        let verifier = PolicyVerifier::from_hex(&key.public_hex()).unwrap();
        let signed = key.sign(&policy(3)).unwrap().encode_to_vec();
        let verified = verifier.verify("c1", &signed).unwrap();
        assert_eq!((verified.key_id.as_str(), verified.version), ("key-1", 3));
        assert!(
            verifier
                .verify("c2", &signed)
                .unwrap_err()
                .to_string()
                .contains("cluster")
        );

        let mut envelope = api::SignedKeyPolicy::decode(signed.as_slice()).unwrap();
        let mut forged = policy(3);
        forged.rules.as_mut().unwrap().max_value_per_tx = "unlimited".into();
        envelope.policy = forged.encode_to_vec();
        assert_eq!(
            verifier
                .verify("c1", &envelope.encode_to_vec())
                .unwrap_err(),
            PolicyError::Signature("the signature does not verify under the operator's policy key")
        );

        let other = OperatorPolicyKey::generate().sign(&policy(4)).unwrap();
        assert!(matches!(
            verifier.verify("c1", &other.encode_to_vec()),
            Err(PolicyError::Signature(_))
        ));
        assert!(verifier.verify("c1", &[0xff; 10]).is_err());
        assert!(
            verifier
                .verify("c1", &vec![0; MAX_SIGNED_POLICY_BYTES + 1])
                .is_err()
        );
    }

    #[test]
    fn a_policy_is_valid_for_a_bounded_time_and_expires() {
        let key = OperatorPolicyKey::generate();
        let verifier = PolicyVerifier::from_hex(&key.public_hex()).unwrap();
        let mut p = policy(1);
        p.not_after_unix = p.issued_at_unix;
        assert!(key.sign(&p).is_err(), "no validity");
        p.not_after_unix = p.issued_at_unix + MAX_VALIDITY_SECS + 1;
        assert!(key.sign(&p).is_err(), "too long");
        p.not_after_unix = p.issued_at_unix + 100;
        let verified = verifier
            .verify("c1", &key.sign(&p).unwrap().encode_to_vec())
            .unwrap();
        assert!(!verified.expired(p.issued_at_unix + 99));
        assert!(verified.expired(p.issued_at_unix + 100));
        // Signed before policies expired: accepted, never expires, and reported as such.
        p.not_after_unix = 0;
        let legacy = verifier
            .verify("c1", &key.sign(&p).unwrap().encode_to_vec())
            .unwrap();
        assert!(legacy.never_expires() && !legacy.expired(i64::MAX));
    }

    #[test]
    fn the_secret_round_trips_and_never_prints() {
        let key = OperatorPolicyKey::generate();
        let again = OperatorPolicyKey::from_secret_hex(&key.to_secret_hex()).unwrap();
        assert_eq!(again.public_hex(), key.public_hex());
        let shown = format!("{key:?}");
        assert!(shown.contains("***") && !shown.contains(key.to_secret_hex().as_str()));
        assert!(key.sign(&policy(0)).is_err());
    }
}
