//! The one signed-statement format (issue #15 §0): everything the operator signs for the nodes to
//! check — key policies and disable statements now, approvals and membership changes later — is a
//! `Statement` (kind, cluster id, subject, version, validity, body) with Ed25519 signatures over a
//! domain string, the kind's name and the encoded statement. A kind's body is parsed by its own
//! module ([`crate::signed`] for the key kinds); this one checks only what every kind shares.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message;
use shardsign_proto::v1 as api;

use crate::error::PolicyError;

const DOMAIN: &[u8] = b"shardsign statement v1\0";
/// The format version this code writes and reads.
pub const FORMAT: u32 = 1;
/// Largest encoded `SignedStatement` accepted anywhere (checked before decoding).
pub const MAX_SIGNED_STATEMENT_BYTES: usize = 256 * 1024;
/// Most signatures a statement may carry (one per approver).
pub const MAX_SIGNATURES: usize = 16;
/// Longest a statement that expires may be valid: an operator renews within this.
pub const MAX_VALIDITY_SECS: i64 = 400 * 86_400;
const MAX_SUBJECT_LEN: usize = 128;
const MAX_CLUSTER_ID_LEN: usize = 64;

/// What a statement is about; fixes its body's message and whether it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    KeyPolicy,
    KeyDisable,
    /// Signed by a quorum of membership keys (see [`crate::membership`]), never the policy key.
    MembershipChange,
    /// Signed by approvers (see [`crate::approval`]), never the policy key.
    Approval,
}

impl StatementKind {
    fn from_proto(value: i32) -> Result<Self, PolicyError> {
        match api::StatementKind::try_from(value) {
            Ok(api::StatementKind::KeyPolicy) => Ok(StatementKind::KeyPolicy),
            Ok(api::StatementKind::KeyDisable) => Ok(StatementKind::KeyDisable),
            Ok(api::StatementKind::MembershipChange) => Ok(StatementKind::MembershipChange),
            Ok(api::StatementKind::Approval) => Ok(StatementKind::Approval),
            _ => Err(PolicyError::invalid(
                "kind",
                format!("unknown statement kind {value}"),
            )),
        }
    }

    pub fn to_proto(self) -> api::StatementKind {
        match self {
            StatementKind::KeyPolicy => api::StatementKind::KeyPolicy,
            StatementKind::KeyDisable => api::StatementKind::KeyDisable,
            StatementKind::MembershipChange => api::StatementKind::MembershipChange,
            StatementKind::Approval => api::StatementKind::Approval,
        }
    }

    /// Signed with the statement: a signature for one kind never verifies as another.
    fn domain_name(self) -> &'static str {
        self.to_proto().as_str_name()
    }

    /// The kind as people write it: `MEMBERSHIP_CHANGE`, `APPROVAL`.
    fn short_name(self) -> &'static str {
        self.domain_name().trim_start_matches("STATEMENT_KIND_")
    }

    /// Whether statements of this kind carry a `not_after` (policies and membership changes
    /// do; a disable is final).
    fn expires(self) -> bool {
        matches!(
            self,
            StatementKind::KeyPolicy | StatementKind::MembershipChange | StatementKind::Approval
        )
    }
}

/// The exact bytes an operator key signs for `statement` (an encoded `Statement`) of `kind`.
pub(crate) fn signed_message(kind: StatementKind, statement: &[u8]) -> Vec<u8> {
    let name = kind.domain_name().as_bytes();
    let mut message = Vec::with_capacity(DOMAIN.len() + name.len() + 1 + statement.len());
    message.extend_from_slice(DOMAIN);
    message.extend_from_slice(name);
    message.push(0);
    message.extend_from_slice(statement);
    message
}

/// Checks the header every kind shares: format, ids, version, validity.
pub(crate) fn check_header(statement: &api::Statement) -> Result<StatementKind, PolicyError> {
    if statement.format != FORMAT {
        return Err(PolicyError::invalid(
            "format",
            format!(
                "format {} is not {FORMAT}; upgrade the node or sign with this release",
                statement.format
            ),
        ));
    }
    let kind = StatementKind::from_proto(statement.kind)?;
    if statement.cluster_id.is_empty() || statement.cluster_id.len() > MAX_CLUSTER_ID_LEN {
        return Err(PolicyError::invalid(
            "cluster_id",
            "expected 1 to 64 characters",
        ));
    }
    if statement.subject.is_empty() || statement.subject.len() > MAX_SUBJECT_LEN {
        return Err(PolicyError::invalid(
            "subject",
            "expected 1 to 128 characters",
        ));
    }
    if statement.version == 0 {
        return Err(PolicyError::invalid("version", "versions start at 1"));
    }
    if statement.not_before_unix != 0 && statement.not_before_unix < statement.issued_at_unix {
        return Err(PolicyError::invalid(
            "not_before_unix",
            "before issued_at_unix",
        ));
    }
    let validity = statement
        .not_after_unix
        .saturating_sub(statement.issued_at_unix);
    match (kind.expires(), statement.not_after_unix) {
        (false, 0) => {}
        (false, _) => {
            return Err(PolicyError::invalid(
                "not_after_unix",
                format!("a {} statement does not expire: 0", kind.domain_name()),
            ));
        }
        (true, _) if validity <= 0 || validity > MAX_VALIDITY_SECS => {
            return Err(PolicyError::invalid(
                "not_after_unix",
                format!(
                    "valid for 1 second to {} days after issued_at_unix",
                    MAX_VALIDITY_SECS / 86_400
                ),
            ));
        }
        (true, _) => {}
    }
    Ok(kind)
}

/// Signs `statement` after checking its header (the caller checks the body: an operator never
/// signs what the nodes would refuse).
pub(crate) fn sign(
    key: &SigningKey,
    statement: &api::Statement,
) -> Result<api::SignedStatement, PolicyError> {
    let kind = check_header(statement)?;
    let bytes = statement.encode_to_vec();
    let signature = key.sign(&signed_message(kind, &bytes));
    Ok(api::SignedStatement {
        statement: bytes,
        signatures: vec![api::StatementSignature {
            public_key: key.verifying_key().to_bytes().to_vec(),
            signature: signature.to_bytes().to_vec(),
        }],
    })
}

/// Adds `key`'s signature to `signed`, a statement of `kind` that several keys sign (membership
/// changes, approvals), after checking its header; the first signer passes an envelope with no
/// signatures. Signing twice with one key is a no-op.
pub(crate) fn add_signature(
    kind: StatementKind,
    key: &SigningKey,
    signed: &mut api::SignedStatement,
) -> Result<(), String> {
    let parsed = api::Statement::decode(signed.statement.as_slice())
        .map_err(|_| "the signed bytes are not a Statement".to_string())?;
    if check_header(&parsed).map_err(|e| e.to_string())? != kind {
        return Err(format!("not a {} statement", kind.short_name()));
    }
    let public = key.verifying_key().to_bytes();
    if signed
        .signatures
        .iter()
        .any(|s| s.public_key.as_slice() == public.as_slice())
    {
        return Ok(());
    }
    if signed.signatures.len() >= MAX_SIGNATURES {
        return Err(format!("already {MAX_SIGNATURES} signatures"));
    }
    let message = signed_message(kind, &signed.statement);
    signed.signatures.push(api::StatementSignature {
        public_key: public.to_vec(),
        signature: key.sign(&message).to_bytes().to_vec(),
    });
    Ok(())
}

/// The distinct keys among `trusted` whose signatures on `envelope` (a statement of `kind`)
/// verify; signatures by other keys count for nothing.
pub(crate) fn valid_signers(
    kind: StatementKind,
    trusted: &[VerifyingKey],
    envelope: &api::SignedStatement,
) -> Vec<[u8; 32]> {
    let message = signed_message(kind, &envelope.statement);
    let mut signers: Vec<[u8; 32]> = Vec::new();
    for signature in &envelope.signatures {
        let Some(key) = trusted
            .iter()
            .find(|k| k.to_bytes().as_slice() == signature.public_key.as_slice())
        else {
            continue;
        };
        let valid = Signature::from_slice(&signature.signature)
            .is_ok_and(|s| key.verify_strict(&message, &s).is_ok());
        if valid && !signers.contains(&key.to_bytes()) {
            signers.push(key.to_bytes());
        }
    }
    signers
}

/// A statement whose header is well formed, for this cluster, signed by the operator's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedStatement {
    pub kind: StatementKind,
    pub subject: String,
    pub version: u64,
    pub issued_at_unix: i64,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    pub body: Vec<u8>,
}

/// Verifies an encoded `SignedStatement`: bounded, decoded, one valid signature by `operator`
/// (signatures by other keys are ignored: approvals of later kinds add them), header checked,
/// for `cluster_id`.
pub(crate) fn verify(
    operator: &VerifyingKey,
    cluster_id: &str,
    envelope: &api::SignedStatement,
) -> Result<VerifiedStatement, PolicyError> {
    if envelope.signatures.len() > MAX_SIGNATURES {
        return Err(PolicyError::Malformed(format!(
            "{} signatures; at most {MAX_SIGNATURES}",
            envelope.signatures.len()
        )));
    }
    let statement = api::Statement::decode(envelope.statement.as_slice())
        .map_err(|_| PolicyError::Malformed("the signed bytes are not a Statement".into()))?;
    let kind = StatementKind::from_proto(statement.kind)?;
    let message = signed_message(kind, &envelope.statement);
    let operator_bytes = operator.to_bytes();
    let by_operator = envelope
        .signatures
        .iter()
        .find(|s| s.public_key.as_slice() == operator_bytes.as_slice())
        .ok_or(PolicyError::Signature(
            "the statement does not verify: no signature by the operator's policy key",
        ))?;
    let signature = Signature::from_slice(&by_operator.signature)
        .map_err(|_| PolicyError::Signature("the signature is not 64 bytes"))?;
    operator.verify_strict(&message, &signature).map_err(|_| {
        PolicyError::Signature("the signature does not verify under the operator's policy key")
    })?;
    check_header(&statement)?;
    if statement.cluster_id != cluster_id {
        return Err(PolicyError::Malformed(format!(
            "the statement is for cluster `{}`, not `{cluster_id}`",
            statement.cluster_id
        )));
    }
    Ok(VerifiedStatement {
        kind,
        subject: statement.subject,
        version: statement.version,
        issued_at_unix: statement.issued_at_unix,
        not_before_unix: statement.not_before_unix,
        not_after_unix: statement.not_after_unix,
        body: statement.body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(kind: api::StatementKind) -> api::Statement {
        api::Statement {
            format: FORMAT,
            kind: kind as i32,
            cluster_id: "c1".into(),
            subject: "key-1".into(),
            version: 2,
            issued_at_unix: 100,
            not_before_unix: 0,
            not_after_unix: if kind == api::StatementKind::KeyPolicy {
                200
            } else {
                0
            },
            body: b"body".to_vec(),
        }
    }

    fn key() -> SigningKey {
        SigningKey::generate(&mut rand_core_06::OsRng)
    }

    #[test]
    fn a_signed_statement_verifies_for_its_cluster_only() {
        let key = key();
        let signed = sign(&key, &statement(api::StatementKind::KeyPolicy)).unwrap();
        let verified = verify(&key.verifying_key(), "c1", &signed).unwrap();
        assert_eq!(verified.kind, StatementKind::KeyPolicy);
        assert_eq!((verified.subject.as_str(), verified.version), ("key-1", 2));
        assert_eq!(verified.body, b"body");
        let other_cluster = verify(&key.verifying_key(), "c2", &signed).unwrap_err();
        assert!(other_cluster.to_string().contains("cluster `c1`"));
    }

    #[test]
    fn a_signature_over_one_kind_never_verifies_as_another() {
        let key = key();
        let signed = sign(&key, &statement(api::StatementKind::KeyDisable)).unwrap();
        // The same header and body relabelled as a policy: the kind is in the signed domain.
        let mut relabelled = api::Statement::decode(signed.statement.as_slice()).unwrap();
        relabelled.kind = api::StatementKind::KeyPolicy as i32;
        relabelled.not_after_unix = 200;
        let forged = api::SignedStatement {
            statement: relabelled.encode_to_vec(),
            signatures: signed.signatures.clone(),
        };
        assert!(matches!(
            verify(&key.verifying_key(), "c1", &forged),
            Err(PolicyError::Signature(_))
        ));
    }

    #[test]
    fn only_the_operators_signature_counts() {
        let operator = key();
        let stranger = key();
        let signed = sign(&stranger, &statement(api::StatementKind::KeyPolicy)).unwrap();
        assert_eq!(
            verify(&operator.verifying_key(), "c1", &signed).unwrap_err(),
            PolicyError::Signature(
                "the statement does not verify: no signature by the operator's policy key"
            )
        );
        // A stranger's signature beside the operator's is ignored; the operator's must verify.
        let mut both = sign(&operator, &statement(api::StatementKind::KeyPolicy)).unwrap();
        both.signatures.insert(0, signed.signatures[0].clone());
        assert!(verify(&operator.verifying_key(), "c1", &both).is_ok());
        both.signatures[1].signature[0] ^= 1;
        assert!(matches!(
            verify(&operator.verifying_key(), "c1", &both),
            Err(PolicyError::Signature(_))
        ));
        both.signatures = vec![both.signatures[0].clone(); MAX_SIGNATURES + 1];
        assert!(matches!(
            verify(&operator.verifying_key(), "c1", &both),
            Err(PolicyError::Malformed(_))
        ));
    }

    #[test]
    fn headers_are_checked_before_signing() {
        let key = key();
        let mut bad = statement(api::StatementKind::KeyPolicy);
        bad.format = 2;
        assert!(sign(&key, &bad).is_err(), "unknown format");
        let mut bad = statement(api::StatementKind::KeyPolicy);
        bad.kind = 99;
        assert!(sign(&key, &bad).is_err(), "unknown kind");
        let mut bad = statement(api::StatementKind::KeyPolicy);
        bad.version = 0;
        assert!(sign(&key, &bad).is_err(), "version 0");
        let mut bad = statement(api::StatementKind::KeyPolicy);
        bad.not_after_unix = 0;
        assert!(sign(&key, &bad).is_err(), "a policy must expire");
        bad.not_after_unix = bad.issued_at_unix + MAX_VALIDITY_SECS + 1;
        assert!(sign(&key, &bad).is_err(), "too long");
        let mut bad = statement(api::StatementKind::KeyDisable);
        bad.not_after_unix = 500;
        assert!(sign(&key, &bad).is_err(), "a disable does not expire");
        let mut bad = statement(api::StatementKind::KeyPolicy);
        bad.not_before_unix = bad.issued_at_unix - 1;
        assert!(sign(&key, &bad).is_err(), "not_before before issue");
        let mut bad = statement(api::StatementKind::KeyPolicy);
        bad.subject = "k".repeat(MAX_SUBJECT_LEN + 1);
        assert!(sign(&key, &bad).is_err(), "subject too long");
    }
}
