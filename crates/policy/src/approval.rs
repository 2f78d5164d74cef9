//! Human approval of parked requests. A signing key policy may say that a request above an amount
//! (`require_approval_above`, for ether or a listed token) is not signed until a quorum of
//! **approvers** (Ed25519 keys listed in the policy) signed an `APPROVAL` statement for exactly
//! that request: the statement's body carries the request hash, which binds the key id, the
//! chain id, the hash of the full payload and the caller's request id. Every signing node
//! recomputes that hash from what it is asked to sign and verifies the signatures and the quorum
//! itself, so a coordinator can neither forge an approval nor move one to another request.
//!
//! One statement per parked request: every approver signs the same encoded `Statement` (the
//! coordinator stores it when it parks the request), so the signatures can be gathered in one
//! `SignedStatement`. A rejection is a statement of its own (decision `REJECT`) that one
//! approver signs; the coordinator treats it as final.

use ed25519_dalek::{SigningKey, VerifyingKey};
use prost::Message;
use sha2::{Digest, Sha256};
use shardsign_proto::v1 as api;
use shardsign_request::Payload;

use crate::error::PolicyError;
use crate::statement::{self, FORMAT, MAX_SIGNATURES, StatementKind};

/// How long a parked request waits for its quorum unless the policy says otherwise.
pub const DEFAULT_VALID_SECS: u32 = 24 * 3600;
/// Longest a parked request may wait.
pub const MAX_VALID_SECS: u32 = 7 * 24 * 3600;
/// Most approvers a policy may list (one signature each fits a statement).
pub const MAX_APPROVERS: usize = MAX_SIGNATURES;
/// Longest rejection reason.
pub const MAX_REASON_LEN: usize = 256;
/// Largest encoded approval statement accepted (16 signatures and a reason fit in 2 KiB).
pub const MAX_STATEMENT_BYTES: usize = 8 * 1024;

const REQUEST_DOMAIN: &[u8] = b"shardsign approval request v1\0";

fn refused(reason: impl Into<String>) -> PolicyError {
    PolicyError::Approval(reason.into())
}

/// What an approval is bound to: one request of one caller for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRequest {
    pub key_id: String,
    /// The payload's chain (0 for a payload without one, like a personal message).
    pub chain_id: u64,
    pub payload_hash: [u8; 32],
    pub request_id: String,
}

/// sha256(kind name 0x00 || payload bytes): what "the full payload" is in a request hash.
pub fn payload_hash(kind_name: &str, payload_bytes: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(kind_name.as_bytes());
    hasher.update([0]);
    hasher.update(payload_bytes);
    hasher.finalize().into()
}

impl ApprovalRequest {
    pub fn new(key_id: &str, payload: &Payload, request_id: &str) -> Self {
        ApprovalRequest {
            key_id: key_id.to_string(),
            chain_id: payload.chain_id().unwrap_or(0),
            payload_hash: payload_hash(payload.kind().name(), &payload.encode()),
            request_id: request_id.to_string(),
        }
    }

    /// The request hash every approval statement for this request carries.
    pub fn hash(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(REQUEST_DOMAIN);
        hasher.update(self.key_id.as_bytes());
        hasher.update([0]);
        hasher.update(self.chain_id.to_be_bytes());
        hasher.update(self.payload_hash);
        hasher.update(self.request_id.as_bytes());
        hasher.finalize().into()
    }

    /// The approval id: the request hash in hex.
    pub fn id(&self) -> String {
        hex::encode(self.hash())
    }

    /// The unsigned statement approvers sign to approve (or, with `Reject`, to reject) this
    /// request: valid from `issued_at_unix` until `not_after_unix`.
    pub fn statement(
        &self,
        cluster_id: &str,
        decision: api::approval::Decision,
        reason: &str,
        issued_at_unix: i64,
        not_after_unix: i64,
    ) -> api::Statement {
        api::Statement {
            format: FORMAT,
            kind: api::StatementKind::Approval as i32,
            cluster_id: cluster_id.to_string(),
            subject: self.id(),
            version: 1,
            issued_at_unix,
            not_before_unix: 0,
            not_after_unix,
            body: api::Approval {
                request_hash: self.hash().to_vec(),
                decision: decision as i32,
                key_id: self.key_id.clone(),
                request_id: self.request_id.clone(),
                chain_id: self.chain_id,
                payload_hash: self.payload_hash.to_vec(),
                reason: reason.to_string(),
            }
            .encode_to_vec(),
        }
    }
}

/// The approvers a key policy lists, how many must approve, and how long a request waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approvers {
    keys: Vec<VerifyingKey>,
    quorum: usize,
    valid_secs: u32,
}

/// An approval statement whose header, body and request hash checked out, with the approvers
/// whose signatures on it verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedDecision {
    pub decision: api::approval::Decision,
    pub reason: String,
    pub not_after_unix: i64,
    /// Distinct listed approvers with a valid signature (hex public keys).
    pub signers: Vec<String>,
}

impl Approvers {
    /// Parses the wire form: 1 to 16 distinct keys, a quorum (default a majority) and a wait.
    pub fn from_proto(wire: &api::Approvers) -> Result<Self, PolicyError> {
        if wire.public_keys.is_empty() || wire.public_keys.len() > MAX_APPROVERS {
            return Err(PolicyError::invalid(
                "approvers.public_keys",
                format!("expected 1 to {MAX_APPROVERS} keys"),
            ));
        }
        let mut keys: Vec<VerifyingKey> = Vec::with_capacity(wire.public_keys.len());
        for (index, text) in wire.public_keys.iter().enumerate() {
            let bytes: [u8; 32] = hex::decode(text.trim().trim_start_matches("0x"))
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    PolicyError::invalid(
                        "approvers.public_keys",
                        format!("key {index} is not 64 hex digits"),
                    )
                })?;
            let key = VerifyingKey::from_bytes(&bytes).map_err(|_| {
                PolicyError::invalid(
                    "approvers.public_keys",
                    format!("key {index} is not a valid Ed25519 key"),
                )
            })?;
            if keys.contains(&key) {
                return Err(PolicyError::invalid(
                    "approvers.public_keys",
                    format!("key {index} is listed twice"),
                ));
            }
            keys.push(key);
        }
        let quorum = match wire.quorum as usize {
            0 => keys.len() / 2 + 1,
            quorum if quorum > keys.len() => {
                return Err(PolicyError::invalid(
                    "approvers.quorum",
                    format!("expected 1 to {} (the number of keys)", keys.len()),
                ));
            }
            quorum => quorum,
        };
        let valid_secs = match wire.valid_secs {
            0 => DEFAULT_VALID_SECS,
            secs if secs > MAX_VALID_SECS => {
                return Err(PolicyError::invalid(
                    "approvers.valid_secs",
                    format!("at most {MAX_VALID_SECS} (7 days)"),
                ));
            }
            secs => secs,
        };
        Ok(Approvers {
            keys,
            quorum,
            valid_secs,
        })
    }

    pub fn to_proto(&self) -> api::Approvers {
        api::Approvers {
            public_keys: self.public_keys(),
            quorum: self.quorum as u32,
            valid_secs: self.valid_secs,
        }
    }

    pub fn public_keys(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| hex::encode(k.to_bytes()))
            .collect()
    }

    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// How long a parked request waits for its quorum.
    pub fn valid_secs(&self) -> u32 {
        self.valid_secs
    }

    /// Checks an approval statement for the request hashed `expected` in `cluster_id`: bounded,
    /// kind `APPROVAL`, header, subject and body for that request, valid at `now_unix`; returns
    /// its decision and the listed approvers whose signatures verify (signatures by other keys
    /// count for nothing; there may be none).
    pub fn check(
        &self,
        cluster_id: &str,
        envelope: &api::SignedStatement,
        expected: &[u8; 32],
        now_unix: i64,
    ) -> Result<CheckedDecision, PolicyError> {
        if envelope.signatures.len() > MAX_SIGNATURES {
            return Err(refused(format!(
                "{} signatures; at most {MAX_SIGNATURES}",
                envelope.signatures.len()
            )));
        }
        let parsed = api::Statement::decode(envelope.statement.as_slice())
            .map_err(|_| refused("the signed bytes are not a Statement"))?;
        if api::StatementKind::try_from(parsed.kind) != Ok(api::StatementKind::Approval) {
            return Err(refused("not an APPROVAL statement"));
        }
        statement::check_header(&parsed)?;
        if parsed.cluster_id != cluster_id {
            return Err(refused(format!(
                "the statement is for cluster `{}`, not `{cluster_id}`",
                parsed.cluster_id
            )));
        }
        let expected_id = hex::encode(expected);
        if parsed.subject != expected_id || parsed.version != 1 {
            return Err(refused(format!(
                "the statement approves request {}, not this request ({expected_id})",
                shardsign_request::Printable(&parsed.subject)
            )));
        }
        let validity = parsed.not_after_unix.saturating_sub(parsed.issued_at_unix);
        if validity > i64::from(MAX_VALID_SECS) {
            return Err(refused(format!(
                "valid for {validity} s; an approval lasts at most {MAX_VALID_SECS} s"
            )));
        }
        if now_unix
            < parsed
                .not_before_unix
                .max(parsed.issued_at_unix.saturating_sub(300))
        {
            return Err(refused(format!(
                "not valid yet (issued at {}, now {now_unix})",
                parsed.issued_at_unix
            )));
        }
        if now_unix >= parsed.not_after_unix {
            return Err(refused(format!(
                "expired at {} (now {now_unix}); an expired approval is final: send a new request",
                parsed.not_after_unix
            )));
        }
        let body = api::Approval::decode(parsed.body.as_slice())
            .map_err(|_| refused("the body is not an Approval"))?;
        if body.request_hash.as_slice() != expected {
            return Err(refused(
                "the body's request hash is not this request's: the approval is for another request",
            ));
        }
        let decision = match api::approval::Decision::try_from(body.decision) {
            Ok(d @ (api::approval::Decision::Approve | api::approval::Decision::Reject)) => d,
            _ => return Err(refused("the decision is neither APPROVE nor REJECT")),
        };
        if body.reason.len() > MAX_REASON_LEN {
            return Err(refused(format!(
                "the reason is over {MAX_REASON_LEN} bytes"
            )));
        }
        let signers = statement::valid_signers(StatementKind::Approval, &self.keys, envelope);
        Ok(CheckedDecision {
            decision,
            reason: body.reason,
            not_after_unix: parsed.not_after_unix,
            signers: signers.iter().map(hex::encode).collect(),
        })
    }

    /// Verifies an encoded approval (what a node is given with a parked request): an `APPROVE`
    /// statement for the request hashed `expected`, valid now, signed by at least a quorum of
    /// distinct listed approvers.
    pub fn verify(
        &self,
        cluster_id: &str,
        signed: &[u8],
        expected: &[u8; 32],
        now_unix: i64,
    ) -> Result<(), PolicyError> {
        if signed.is_empty() {
            return Err(refused("none was given"));
        }
        if signed.len() > MAX_STATEMENT_BYTES {
            return Err(refused(format!(
                "{} bytes is over the limit of {MAX_STATEMENT_BYTES}",
                signed.len()
            )));
        }
        let envelope = api::SignedStatement::decode(signed)
            .map_err(|_| refused("not an encoded SignedStatement"))?;
        let checked = self.check(cluster_id, &envelope, expected, now_unix)?;
        if checked.decision != api::approval::Decision::Approve {
            return Err(refused("the statement rejects the request"));
        }
        if checked.signers.len() < self.quorum {
            return Err(refused(format!(
                "signed by {} of the {} approvers; this request needs {}",
                checked.signers.len(),
                self.keys.len(),
                self.quorum
            )));
        }
        Ok(())
    }
}

/// Adds `key`'s signature to `signed` (an approval statement), checking the header first.
/// Signing twice with one key is a no-op.
pub fn add_signature(
    key: &SigningKey,
    signed: &mut api::SignedStatement,
) -> Result<(), PolicyError> {
    statement::add_signature(StatementKind::Approval, key, signed).map_err(refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::approval::Decision;

    const NOW: i64 = 1_800_000_000;

    fn keys(n: usize) -> Vec<SigningKey> {
        (0..n)
            .map(|_| SigningKey::generate(&mut rand_core_06::OsRng))
            .collect()
    }

    fn approvers(keys: &[SigningKey], quorum: u32) -> Approvers {
        Approvers::from_proto(&api::Approvers {
            public_keys: keys
                .iter()
                .map(|k| hex::encode(k.verifying_key().to_bytes()))
                .collect(),
            quorum,
            valid_secs: 0,
        })
        .unwrap()
    }

    fn request(request_id: &str) -> ApprovalRequest {
        ApprovalRequest {
            key_id: "treasury".into(),
            chain_id: 1,
            payload_hash: payload_hash("tx", b"payload"),
            request_id: request_id.into(),
        }
    }

    fn signed(
        request: &ApprovalRequest,
        decision: Decision,
        issued: i64,
        signers: &[&SigningKey],
    ) -> Vec<u8> {
        let statement = request.statement("c1", decision, "", issued, issued + 86_400);
        let mut envelope = api::SignedStatement {
            statement: statement.encode_to_vec(),
            signatures: Vec::new(),
        };
        for key in signers {
            add_signature(key, &mut envelope).unwrap();
        }
        envelope.encode_to_vec()
    }

    fn refusal(result: Result<(), PolicyError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn the_request_hash_binds_key_chain_payload_and_request_id() {
        let base = request("r1");
        let mut variants = vec![request("r2")];
        let mut other = base.clone();
        other.key_id = "treasury2".into();
        variants.push(other);
        let mut other = base.clone();
        other.chain_id = 137;
        variants.push(other);
        let mut other = base.clone();
        other.payload_hash = payload_hash("tx", b"payload2");
        variants.push(other);
        let mut other = base.clone();
        other.payload_hash = payload_hash("message", b"payload");
        variants.push(other);
        for variant in variants {
            assert_ne!(variant.hash(), base.hash(), "{variant:?}");
        }
        assert_eq!(base.id().len(), 64);
    }

    #[test]
    fn a_quorum_of_approvers_approves_exactly_one_request() {
        let k = keys(3);
        let trusted = approvers(&k, 2);
        let request = request("r1");
        let hash = request.hash();
        let two = signed(&request, Decision::Approve, NOW, &[&k[0], &k[2]]);
        trusted.verify("c1", &two, &hash, NOW + 60).unwrap();
        // Another request (another request id, so another hash) is not approved by it.
        let other = super::tests::request("r2").hash();
        assert!(refusal(trusted.verify("c1", &two, &other, NOW + 60)).contains("not this request"));
        // Under quorum, twice the same signer, a stranger: not enough.
        let one = signed(&request, Decision::Approve, NOW, &[&k[0]]);
        assert!(
            refusal(trusted.verify("c1", &one, &hash, NOW + 60))
                .contains("signed by 1 of the 3 approvers; this request needs 2")
        );
        let mut doubled = api::SignedStatement::decode(one.as_slice()).unwrap();
        doubled.signatures.push(doubled.signatures[0].clone());
        assert!(
            refusal(trusted.verify("c1", &doubled.encode_to_vec(), &hash, NOW + 60))
                .contains("signed by 1 of")
        );
        let stranger = keys(1);
        let with_stranger = signed(&request, Decision::Approve, NOW, &[&k[0], &stranger[0]]);
        assert!(
            refusal(trusted.verify("c1", &with_stranger, &hash, NOW + 60))
                .contains("signed by 1 of")
        );
        // A tampered signature does not count.
        let mut tampered = api::SignedStatement::decode(two.as_slice()).unwrap();
        tampered.signatures[1].signature[0] ^= 1;
        assert!(
            refusal(trusted.verify("c1", &tampered.encode_to_vec(), &hash, NOW + 60))
                .contains("signed by 1 of")
        );
    }

    #[test]
    fn expired_rejecting_relabelled_or_foreign_statements_are_refused() {
        let k = keys(3);
        let trusted = approvers(&k, 2);
        let request = request("r1");
        let hash = request.hash();
        let two = signed(&request, Decision::Approve, NOW, &[&k[0], &k[1]]);
        assert!(refusal(trusted.verify("c1", &two, &hash, NOW + 86_400)).contains("expired"));
        assert!(refusal(trusted.verify("c2", &two, &hash, NOW)).contains("cluster `c1`"));
        assert!(refusal(trusted.verify("c1", &two, &hash, NOW - 3600)).contains("not valid yet"));
        let rejected = signed(&request, Decision::Reject, NOW, &[&k[0], &k[1]]);
        assert!(refusal(trusted.verify("c1", &rejected, &hash, NOW)).contains("rejects"));
        assert!(refusal(trusted.verify("c1", b"", &hash, NOW)).contains("none was given"));
        assert!(refusal(trusted.verify("c1", b"\xff\xff", &hash, NOW)).contains("not an encoded"));
        // A statement of another kind with the same bytes: the kind is in the signed domain.
        let mut relabelled = api::SignedStatement::decode(two.as_slice()).unwrap();
        let mut statement = api::Statement::decode(relabelled.statement.as_slice()).unwrap();
        statement.kind = api::StatementKind::MembershipChange as i32;
        relabelled.statement = statement.encode_to_vec();
        assert!(
            refusal(trusted.verify("c1", &relabelled.encode_to_vec(), &hash, NOW))
                .contains("not an APPROVAL")
        );
        // A body swapped under the same subject: the signatures no longer verify.
        let mut swapped = api::SignedStatement::decode(two.as_slice()).unwrap();
        let mut statement = api::Statement::decode(swapped.statement.as_slice()).unwrap();
        statement.not_after_unix += 3600;
        swapped.statement = statement.encode_to_vec();
        assert!(
            refusal(trusted.verify("c1", &swapped.encode_to_vec(), &hash, NOW))
                .contains("signed by 0 of")
        );
        // Longer than an approval may last.
        let long = request.statement(
            "c1",
            Decision::Approve,
            "",
            NOW,
            NOW + i64::from(MAX_VALID_SECS) + 1,
        );
        let mut envelope = api::SignedStatement {
            statement: long.encode_to_vec(),
            signatures: Vec::new(),
        };
        add_signature(&k[0], &mut envelope).unwrap();
        add_signature(&k[1], &mut envelope).unwrap();
        assert!(
            refusal(trusted.verify("c1", &envelope.encode_to_vec(), &hash, NOW))
                .contains("at most")
        );
    }

    #[test]
    fn approvers_are_bounded_distinct_and_default_to_a_majority() {
        let k = keys(3);
        assert_eq!(approvers(&k, 0).quorum(), 2);
        assert_eq!(approvers(&k, 0).valid_secs(), DEFAULT_VALID_SECS);
        let hex_keys: Vec<String> = k
            .iter()
            .map(|k| hex::encode(k.verifying_key().to_bytes()))
            .collect();
        let parse = |public_keys: Vec<String>, quorum: u32, valid_secs: u32| {
            Approvers::from_proto(&api::Approvers {
                public_keys,
                quorum,
                valid_secs,
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        assert!(parse(vec![], 0, 0).unwrap_err().contains("1 to 16"));
        assert!(
            parse(vec![hex_keys[0].clone(), hex_keys[0].clone()], 0, 0)
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            parse(hex_keys.clone(), 4, 0)
                .unwrap_err()
                .contains("1 to 3")
        );
        assert!(
            parse(hex_keys.clone(), 2, MAX_VALID_SECS + 1)
                .unwrap_err()
                .contains("7 days")
        );
        assert!(
            parse(vec!["zz".into()], 0, 0)
                .unwrap_err()
                .contains("64 hex")
        );
        assert!(parse(hex_keys, 3, 60).is_ok());
    }
}
