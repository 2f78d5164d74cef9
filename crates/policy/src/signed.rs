//! Operator-signed key statements: a key's policy, or the statement that disabled it. The
//! operator's tooling holds the Ed25519 policy key; nodes (and the coordinator, to refuse early)
//! hold only its public half. Both kinds are [`crate::statement`]s with the key id as subject and
//! one version sequence per key; a policy signed before statements existed (`SignedKeyPolicy`) is
//! still verified so that a stored one keeps working until it is renewed.

use std::fmt;

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use prost::Message;
use shardsign_proto::v1 as api;
use zeroize::Zeroizing;

use shardsign_request::KeyId;

use crate::error::PolicyError;
use crate::rules::{Rules, RulesFor};
use crate::statement::{self, FORMAT, StatementKind};

pub use crate::statement::{
    MAX_SIGNED_STATEMENT_BYTES as MAX_SIGNED_POLICY_BYTES, MAX_VALIDITY_SECS,
};

/// The format before statements: `SignedKeyPolicy`, verified only.
const LEGACY_DOMAIN: &[u8] = b"shardsign key policy v1\0";
/// How long `shardsign policy set` makes a policy valid by default.
pub const DEFAULT_VALIDITY_SECS: i64 = 30 * 86_400;
/// Longest reason a disable statement may give.
pub const MAX_DISABLE_REASON_LEN: usize = 256;

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

    /// Signs `rules` as version `version` of `key_id`'s policy, valid from `issued_at_unix`
    /// until `not_after_unix`, after checking they parse (so an operator never signs a policy
    /// the nodes would refuse).
    pub fn sign_key_policy(
        &self,
        header: KeyStatementHeader<'_>,
        rules: &api::Policy,
        not_after_unix: i64,
    ) -> Result<api::SignedStatement, PolicyError> {
        Rules::from_proto(rules, RulesFor::SigningKey)?;
        let statement = header.statement(
            StatementKind::KeyPolicy,
            not_after_unix,
            rules.encode_to_vec(),
        )?;
        statement::sign(&self.0, &statement)
    }

    /// Signs a statement that disables `key_id` for good (version: after its current policy's).
    pub fn sign_key_disable(
        &self,
        header: KeyStatementHeader<'_>,
        reason: &str,
    ) -> Result<api::SignedStatement, PolicyError> {
        check_reason(reason)?;
        let body = api::KeyDisable {
            reason: reason.to_string(),
        };
        let statement = header.statement(StatementKind::KeyDisable, 0, body.encode_to_vec())?;
        statement::sign(&self.0, &statement)
    }

    #[cfg(test)]
    fn sign_legacy(&self, policy: &api::KeyPolicy) -> api::SignedKeyPolicy {
        use ed25519_dalek::Signer;
        let bytes = policy.encode_to_vec();
        let signature = self.0.sign(&legacy_message(&bytes));
        api::SignedKeyPolicy {
            policy: bytes,
            signature: signature.to_bytes().to_vec(),
        }
    }
}

/// What every key statement names: the cluster, the key, its version and when it was signed.
#[derive(Debug, Clone, Copy)]
pub struct KeyStatementHeader<'a> {
    pub cluster_id: &'a str,
    pub key_id: &'a str,
    pub version: u64,
    pub issued_at_unix: i64,
}

impl KeyStatementHeader<'_> {
    fn statement(
        &self,
        kind: StatementKind,
        not_after_unix: i64,
        body: Vec<u8>,
    ) -> Result<api::Statement, PolicyError> {
        KeyId::parse(self.key_id).map_err(|e| PolicyError::invalid("key_id", e.to_string()))?;
        Ok(api::Statement {
            format: FORMAT,
            kind: kind.to_proto() as i32,
            cluster_id: self.cluster_id.to_string(),
            subject: self.key_id.to_string(),
            version: self.version,
            issued_at_unix: self.issued_at_unix,
            not_before_unix: 0,
            not_after_unix,
            body,
        })
    }
}

fn check_reason(reason: &str) -> Result<(), PolicyError> {
    if reason.chars().count() > MAX_DISABLE_REASON_LEN || reason.chars().any(char::is_control) {
        return Err(PolicyError::invalid(
            "reason",
            format!("at most {MAX_DISABLE_REASON_LEN} characters, no control characters"),
        ));
    }
    Ok(())
}

fn legacy_message(policy: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(LEGACY_DOMAIN.len() + policy.len());
    message.extend_from_slice(LEGACY_DOMAIN);
    message.extend_from_slice(policy);
    message
}

/// The checks of a policy signed before statements (its own header fields).
fn check_legacy_shape(policy: &api::KeyPolicy) -> Result<Rules, PolicyError> {
    KeyId::parse(&policy.key_id).map_err(|e| PolicyError::invalid("key_id", e.to_string()))?;
    if policy.version == 0 {
        return Err(PolicyError::invalid("version", "versions start at 1"));
    }
    // 0: signed before policies expired (valid until renewed); otherwise a bounded validity.
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

/// A key's statement in force, verified for this cluster: its policy, or (when `disabled` is
/// set) the statement that disabled it, whose rules allow nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKeyPolicy {
    pub key_id: String,
    pub version: u64,
    pub issued_at_unix: i64,
    /// Not valid before (Unix seconds; 0: at once).
    pub not_before_unix: i64,
    /// When it stops being valid (Unix seconds; 0: never).
    pub not_after_unix: i64,
    pub rules: Rules,
    /// `Some(reason)`: the key is disabled for good.
    pub disabled: Option<String>,
    /// The signed bytes, as received: what is stored and forwarded.
    pub signed: Vec<u8>,
}

impl VerifiedKeyPolicy {
    /// Whether it has expired at `now_unix` (a statement without `not_after` never does).
    pub fn expired(&self, now_unix: i64) -> bool {
        self.not_after_unix != 0 && now_unix >= self.not_after_unix
    }

    /// Whether it is not valid yet at `now_unix`.
    pub fn premature(&self, now_unix: i64) -> bool {
        now_unix < self.not_before_unix
    }

    /// A policy signed before policies expired, or a disable: valid until replaced.
    pub fn never_expires(&self) -> bool {
        self.not_after_unix == 0
    }

    /// For `GetKeyPolicy`.
    pub fn to_record(&self) -> api::KeyPolicyRecord {
        api::KeyPolicyRecord {
            key_id: self.key_id.clone(),
            version: self.version,
            issued_at_unix: self.issued_at_unix,
            not_after_unix: self.not_after_unix,
            rules: self.disabled.is_none().then(|| self.rules_as_signed()),
            disabled: self.disabled.is_some(),
            disabled_reason: self.disabled.clone().unwrap_or_default(),
            signed: self.signed.clone(),
        }
    }
}

impl VerifiedKeyPolicy {
    /// The rules as the operator wrote them (amounts keep their units), read back from the
    /// signed bytes, which verified already.
    fn rules_as_signed(&self) -> api::Policy {
        let from_statement = api::SignedStatement::decode(self.signed.as_slice())
            .ok()
            .filter(|envelope| !envelope.statement.is_empty())
            .and_then(|envelope| api::Statement::decode(envelope.statement.as_slice()).ok())
            .and_then(|statement| api::Policy::decode(statement.body.as_slice()).ok());
        let from_legacy = || {
            api::SignedKeyPolicy::decode(self.signed.as_slice())
                .ok()
                .and_then(|envelope| api::KeyPolicy::decode(envelope.policy.as_slice()).ok())
                .and_then(|policy| policy.rules)
        };
        from_statement
            .or_else(from_legacy)
            .unwrap_or_else(|| self.rules.to_proto(RulesFor::SigningKey))
    }
}

/// Checks signed key statements against the operator's public policy key.
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

    /// Verifies an encoded key statement (`SignedStatement` of a key kind, or a `SignedKeyPolicy`
    /// signed before statements) for `cluster_id`.
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
        // The two encodings share no field number, so each decodes the other as empty.
        let envelope = api::SignedStatement::decode(signed)
            .map_err(|_| PolicyError::Malformed("not an encoded SignedStatement".into()))?;
        if envelope.statement.is_empty() {
            return self.verify_legacy(cluster_id, signed);
        }
        let verified = statement::verify(&self.key, cluster_id, &envelope)?;
        KeyId::parse(&verified.subject)
            .map_err(|e| PolicyError::invalid("subject", e.to_string()))?;
        let (rules, disabled) = match verified.kind {
            StatementKind::KeyPolicy => {
                let rules = api::Policy::decode(verified.body.as_slice()).map_err(|_| {
                    PolicyError::Malformed("a KEY_POLICY body is not a Policy".into())
                })?;
                (Rules::from_proto(&rules, RulesFor::SigningKey)?, None)
            }
            StatementKind::KeyDisable => {
                let body = api::KeyDisable::decode(verified.body.as_slice()).map_err(|_| {
                    PolicyError::Malformed("a KEY_DISABLE body is not a KeyDisable".into())
                })?;
                check_reason(&body.reason)?;
                let nothing = Rules::from_proto(&api::Policy::default(), RulesFor::SigningKey)?;
                (nothing, Some(body.reason))
            }
            StatementKind::MembershipChange | StatementKind::Approval => {
                return Err(PolicyError::invalid(
                    "kind",
                    "a membership change or an approval is not a key statement (and the policy key never signs one)",
                ));
            }
        };
        Ok(VerifiedKeyPolicy {
            key_id: verified.subject,
            version: verified.version,
            issued_at_unix: verified.issued_at_unix,
            not_before_unix: verified.not_before_unix,
            not_after_unix: verified.not_after_unix,
            rules,
            disabled,
            signed: signed.to_vec(),
        })
    }

    fn verify_legacy(
        &self,
        cluster_id: &str,
        signed: &[u8],
    ) -> Result<VerifiedKeyPolicy, PolicyError> {
        let envelope = api::SignedKeyPolicy::decode(signed)
            .map_err(|_| PolicyError::Malformed("not an encoded SignedStatement".into()))?;
        if envelope.policy.is_empty() {
            return Err(PolicyError::Malformed(
                "not an encoded SignedStatement".into(),
            ));
        }
        let signature = Signature::from_slice(&envelope.signature)
            .map_err(|_| PolicyError::Signature("the signature is not 64 bytes"))?;
        self.key
            .verify_strict(&legacy_message(&envelope.policy), &signature)
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
        let rules = check_legacy_shape(&policy)?;
        Ok(VerifiedKeyPolicy {
            key_id: policy.key_id,
            version: policy.version,
            issued_at_unix: policy.issued_at_unix,
            not_before_unix: 0,
            not_after_unix: policy.not_after_unix,
            rules,
            disabled: None,
            signed: signed.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> api::Policy {
        api::Policy {
            allowed_chain_ids: vec![1],
            max_value_per_tx: "1eth".into(),
            ..Default::default()
        }
    }

    fn header(version: u64) -> KeyStatementHeader<'static> {
        KeyStatementHeader {
            cluster_id: "c1",
            key_id: "key-1",
            version,
            issued_at_unix: 1,
        }
    }

    fn signed_policy(key: &OperatorPolicyKey, version: u64) -> Vec<u8> {
        key.sign_key_policy(header(version), &rules(), 1 + DEFAULT_VALIDITY_SECS)
            .unwrap()
            .encode_to_vec()
    }

    #[test]
    fn signed_policies_verify_and_tampering_is_caught() {
        let key = OperatorPolicyKey::generate();
        let verifier = PolicyVerifier::from_hex(&key.public_hex()).unwrap();
        let signed = signed_policy(&key, 3);
        let verified = verifier.verify("c1", &signed).unwrap();
        assert_eq!((verified.key_id.as_str(), verified.version), ("key-1", 3));
        assert_eq!(verified.disabled, None);
        assert!(
            verifier
                .verify("c2", &signed)
                .unwrap_err()
                .to_string()
                .contains("cluster")
        );

        let mut envelope = api::SignedStatement::decode(signed.as_slice()).unwrap();
        let mut statement = api::Statement::decode(envelope.statement.as_slice()).unwrap();
        let mut looser = rules();
        looser.max_value_per_tx = "unlimited".into();
        statement.body = looser.encode_to_vec();
        envelope.statement = statement.encode_to_vec();
        assert_eq!(
            verifier
                .verify("c1", &envelope.encode_to_vec())
                .unwrap_err(),
            PolicyError::Signature("the signature does not verify under the operator's policy key")
        );

        let other = signed_policy(&OperatorPolicyKey::generate(), 4);
        assert!(matches!(
            verifier.verify("c1", &other),
            Err(PolicyError::Signature(_))
        ));
        assert!(verifier.verify("c1", &[0xff; 10]).is_err());
        assert!(verifier.verify("c1", &[]).is_err());
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
        assert!(
            key.sign_key_policy(header(1), &rules(), 1).is_err(),
            "no validity"
        );
        assert!(
            key.sign_key_policy(header(1), &rules(), 2 + MAX_VALIDITY_SECS)
                .is_err(),
            "too long"
        );
        let signed = key.sign_key_policy(header(1), &rules(), 101).unwrap();
        let verified = verifier.verify("c1", &signed.encode_to_vec()).unwrap();
        assert!(!verified.expired(100));
        assert!(verified.expired(101));
        assert!(!verified.premature(1));
    }

    #[test]
    fn a_disable_statement_allows_nothing_and_never_expires() {
        let key = OperatorPolicyKey::generate();
        let verifier = PolicyVerifier::from_hex(&key.public_hex()).unwrap();
        let signed = key
            .sign_key_disable(header(5), "agent host compromised")
            .unwrap();
        let verified = verifier.verify("c1", &signed.encode_to_vec()).unwrap();
        assert_eq!(verified.disabled.as_deref(), Some("agent host compromised"));
        assert_eq!(verified.version, 5);
        assert!(verified.never_expires() && !verified.expired(i64::MAX));
        assert!(verified.rules.chain_ids.is_empty() && !verified.rules.allow_message_signing);
        let record = verified.to_record();
        assert!(record.disabled && record.rules.is_none());
        assert!(key.sign_key_disable(header(5), "line\nbreak").is_err());
        assert!(key.sign_key_disable(header(5), &"x".repeat(257)).is_err());
    }

    #[test]
    fn a_policy_signed_before_statements_still_verifies() {
        let key = OperatorPolicyKey::generate();
        let verifier = PolicyVerifier::from_hex(&key.public_hex()).unwrap();
        let legacy = key.sign_legacy(&api::KeyPolicy {
            cluster_id: "c1".into(),
            key_id: "key-1".into(),
            version: 2,
            rules: Some(rules()),
            issued_at_unix: 1,
            not_after_unix: 0,
        });
        let verified = verifier.verify("c1", &legacy.encode_to_vec()).unwrap();
        assert_eq!(verified.version, 2);
        assert!(verified.never_expires());
        let mut tampered = legacy.clone();
        tampered.signature[3] ^= 1;
        assert!(matches!(
            verifier.verify("c1", &tampered.encode_to_vec()),
            Err(PolicyError::Signature(_))
        ));
        // A statement's signature never verifies a legacy policy and the reverse: the domains differ.
        let statement = api::SignedStatement::decode(signed_policy(&key, 2).as_slice()).unwrap();
        let crossed = api::SignedKeyPolicy {
            policy: statement.statement.clone(),
            signature: statement.signatures[0].signature.clone(),
        };
        assert!(verifier.verify("c1", &crossed.encode_to_vec()).is_err());
    }

    #[test]
    fn the_secret_round_trips_and_never_prints() {
        let key = OperatorPolicyKey::generate();
        let again = OperatorPolicyKey::from_secret_hex(&key.to_secret_hex()).unwrap();
        assert_eq!(again.public_hex(), key.public_hex());
        let shown = format!("{key:?}");
        assert!(shown.contains("***") && !shown.contains(key.to_secret_hex().as_str()));
        assert!(key.sign_key_policy(header(0), &rules(), 100).is_err());
    }
}
