//! Membership changes: which identity keys speak for node 1, 2 or 3. Repair hands the named node
//! a share, so whoever can name it can lower the threshold; a change is therefore a statement in
//! the one signed-statement format (kind `MEMBERSHIP_CHANGE`, subject `membership`) signed by a
//! quorum of **membership keys**: Ed25519 keys kept offline and separate from the policy key (a
//! coordinator holds neither). One statement carries exactly one change and a version higher
//! than the one a node holds; anything else is refused.

use ed25519_dalek::{SigningKey, VerifyingKey};
use prost::Message;
use shardsign_proto::v1 as api;

use crate::error::PolicyError;
use crate::statement::{self, FORMAT, MAX_SIGNATURES, StatementKind};

/// The subject of every membership statement (one version sequence for the cluster).
pub const SUBJECT: &str = "membership";
/// Most membership keys a cluster may configure.
pub const MAX_KEYS: usize = MAX_SIGNATURES;
/// A node identity: Ed25519 signing key then X25519 encryption key.
pub const IDENTITY_LEN: usize = 64;
/// Largest encoded membership statement accepted (one change and 16 signatures fit in 2 KiB).
pub const MAX_STATEMENT_BYTES: usize = 8 * 1024;

fn refused(reason: impl Into<String>) -> PolicyError {
    PolicyError::Membership(reason.into())
}

/// The membership keys a node trusts and how many of them must sign a change.
#[derive(Clone, Debug)]
pub struct MembershipKeys {
    keys: Vec<VerifyingKey>,
    quorum: usize,
}

/// A verified change: node `node_id` is now the holder of `identity`, from `version` on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedChange {
    pub version: u64,
    pub node_id: u32,
    pub identity: [u8; IDENTITY_LEN],
    pub not_after_unix: i64,
}

impl MembershipKeys {
    /// `keys` with `quorum` (default: a majority, so 2 of 3). Also returns a warning for the
    /// operator's log when a single key can change membership on its own (1 of 1 is allowed,
    /// but then one stolen key can hand a share to anyone).
    pub fn new(
        keys: Vec<VerifyingKey>,
        quorum: Option<usize>,
    ) -> Result<(Self, Option<String>), PolicyError> {
        if keys.is_empty() || keys.len() > MAX_KEYS {
            return Err(PolicyError::invalid(
                "membership_keys",
                format!("expected 1 to {MAX_KEYS} keys"),
            ));
        }
        let mut distinct: Vec<[u8; 32]> = keys.iter().map(|k| k.to_bytes()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != keys.len() {
            return Err(PolicyError::invalid(
                "membership_keys",
                "a key is listed twice",
            ));
        }
        let quorum = quorum.unwrap_or(keys.len() / 2 + 1);
        if quorum == 0 || quorum > keys.len() {
            return Err(PolicyError::invalid(
                "membership_quorum",
                format!("expected 1 to {} (the number of keys)", keys.len()),
            ));
        }
        let warning = (quorum == 1).then(|| {
            format!(
                "membership changes need only 1 of {} membership keys: one stolen membership key can give a node's share to anyone; configure at least three keys with a quorum of 2",
                keys.len()
            )
        });
        Ok((MembershipKeys { keys, quorum }, warning))
    }

    /// [`Self::new`] from hex-encoded public keys (as configured).
    pub fn from_hex(
        keys: &[String],
        quorum: Option<usize>,
    ) -> Result<(Self, Option<String>), PolicyError> {
        let keys = keys
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let bytes: [u8; 32] = hex::decode(text.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| {
                        PolicyError::invalid(
                            "membership_public_keys",
                            format!("key {} is not 64 hex digits", i + 1),
                        )
                    })?;
                VerifyingKey::from_bytes(&bytes).map_err(|_| {
                    PolicyError::invalid(
                        "membership_public_keys",
                        format!("key {} is not a valid Ed25519 key", i + 1),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys, quorum)
    }

    pub fn quorum(&self) -> usize {
        self.quorum
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies an encoded `SignedStatement` as a membership change for `cluster_id`, newer than
    /// `held_version`, valid at `now_unix`, signed by at least a quorum of distinct membership
    /// keys (signatures by other keys count for nothing).
    pub fn verify(
        &self,
        cluster_id: &str,
        signed: &[u8],
        held_version: u64,
        now_unix: i64,
    ) -> Result<VerifiedChange, PolicyError> {
        self.verify_within(cluster_id, signed, held_version, Some(now_unix))
    }

    /// [`MembershipKeys::verify`] without the validity window: for a change the cluster already
    /// applied, re-learned by a node restored from a backup after the window closed. The quorum
    /// of membership keys is the authority either way; the window only bounds when a change may
    /// first be applied.
    pub fn verify_applied(
        &self,
        cluster_id: &str,
        signed: &[u8],
        held_version: u64,
    ) -> Result<VerifiedChange, PolicyError> {
        self.verify_within(cluster_id, signed, held_version, None)
    }

    fn verify_within(
        &self,
        cluster_id: &str,
        signed: &[u8],
        held_version: u64,
        now_unix: Option<i64>,
    ) -> Result<VerifiedChange, PolicyError> {
        if signed.len() > MAX_STATEMENT_BYTES {
            return Err(refused(format!(
                "{} bytes is over the limit of {MAX_STATEMENT_BYTES}",
                signed.len()
            )));
        }
        let envelope = api::SignedStatement::decode(signed)
            .map_err(|_| refused("not an encoded SignedStatement"))?;
        if envelope.signatures.len() > MAX_SIGNATURES {
            return Err(refused(format!(
                "{} signatures; at most {MAX_SIGNATURES}",
                envelope.signatures.len()
            )));
        }
        let parsed = api::Statement::decode(envelope.statement.as_slice())
            .map_err(|_| refused("the signed bytes are not a Statement"))?;
        if api::StatementKind::try_from(parsed.kind) != Ok(api::StatementKind::MembershipChange) {
            return Err(refused("not a MEMBERSHIP_CHANGE statement"));
        }
        let signers =
            statement::valid_signers(StatementKind::MembershipChange, &self.keys, &envelope);
        if signers.len() < self.quorum {
            return Err(refused(format!(
                "signed by {} of the {} membership keys; a change needs {}",
                signers.len(),
                self.keys.len(),
                self.quorum
            )));
        }
        statement::check_header(&parsed)?;
        if parsed.cluster_id != cluster_id {
            return Err(refused(format!(
                "the statement is for cluster `{}`, not `{cluster_id}`",
                parsed.cluster_id
            )));
        }
        if parsed.subject != SUBJECT {
            return Err(refused(format!("subject must be `{SUBJECT}`")));
        }
        if parsed.version <= held_version {
            return Err(refused(format!(
                "version {} is not newer than the membership version {held_version} this node holds",
                parsed.version
            )));
        }
        if let Some(now_unix) = now_unix {
            if now_unix < parsed.not_before_unix {
                return Err(refused(format!(
                    "not valid before {} (now {now_unix})",
                    parsed.not_before_unix
                )));
            }
            if now_unix >= parsed.not_after_unix {
                return Err(refused(format!(
                    "expired at {} (now {now_unix}); sign a new one",
                    parsed.not_after_unix
                )));
            }
        }
        let body = api::MembershipChange::decode(parsed.body.as_slice())
            .map_err(|_| refused("the body is not a MembershipChange"))?;
        let [change] = body.changes.as_slice() else {
            return Err(refused(format!(
                "{} changes; a statement carries exactly one",
                body.changes.len()
            )));
        };
        if !(1..=3).contains(&change.node_id) {
            return Err(refused(format!(
                "node id {} is not 1, 2 or 3",
                change.node_id
            )));
        }
        let identity: [u8; IDENTITY_LEN] = change.identity.as_slice().try_into().map_err(|_| {
            refused(format!(
                "the identity is {} bytes, not {IDENTITY_LEN}",
                change.identity.len()
            ))
        })?;
        Ok(VerifiedChange {
            version: parsed.version,
            node_id: change.node_id,
            identity,
            not_after_unix: parsed.not_after_unix,
        })
    }
}

/// The unsigned statement that gives `node_id` the identity `identity`.
pub fn change_statement(
    cluster_id: &str,
    version: u64,
    node_id: u32,
    identity: &[u8; IDENTITY_LEN],
    issued_at_unix: i64,
    valid_for_secs: i64,
) -> api::Statement {
    api::Statement {
        format: FORMAT,
        kind: api::StatementKind::MembershipChange as i32,
        cluster_id: cluster_id.to_string(),
        subject: SUBJECT.to_string(),
        version,
        issued_at_unix,
        not_before_unix: 0,
        not_after_unix: issued_at_unix.saturating_add(valid_for_secs),
        body: api::MembershipChange {
            changes: vec![api::NodeIdentityChange {
                node_id,
                identity: identity.to_vec(),
            }],
        }
        .encode_to_vec(),
    }
}

/// Adds `key`'s signature to `signed` (a membership statement), checking the header first; the
/// first signer passes an envelope with no signatures. Signing twice with one key is a no-op.
pub fn add_signature(
    key: &SigningKey,
    signed: &mut api::SignedStatement,
) -> Result<(), PolicyError> {
    statement::add_signature(StatementKind::MembershipChange, key, signed).map_err(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn keys(n: usize) -> Vec<SigningKey> {
        (0..n)
            .map(|_| SigningKey::generate(&mut rand_core_06::OsRng))
            .collect()
    }

    fn trusted(keys: &[SigningKey]) -> MembershipKeys {
        MembershipKeys::new(keys.iter().map(|k| k.verifying_key()).collect(), None)
            .unwrap()
            .0
    }

    fn signed_by(statement: &api::Statement, signers: &[&SigningKey]) -> Vec<u8> {
        let mut signed = api::SignedStatement {
            statement: statement.encode_to_vec(),
            signatures: Vec::new(),
        };
        for key in signers {
            add_signature(key, &mut signed).unwrap();
        }
        signed.encode_to_vec()
    }

    fn change(version: u64) -> api::Statement {
        change_statement("c1", version, 3, &[7; IDENTITY_LEN], NOW - 10, 3600)
    }

    fn refusal(result: Result<VerifiedChange, PolicyError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn a_quorum_signed_change_verifies() {
        let k = keys(3);
        let verified = trusted(&k)
            .verify("c1", &signed_by(&change(2), &[&k[0], &k[2]]), 1, NOW)
            .unwrap();
        assert_eq!(
            verified,
            VerifiedChange {
                version: 2,
                node_id: 3,
                identity: [7; IDENTITY_LEN],
                not_after_unix: NOW + 3590,
            }
        );
    }

    #[test]
    fn unsigned_under_quorum_forged_or_repeated_signatures_are_refused() {
        let k = keys(3);
        let members = trusted(&k);
        let policy_key = keys(1).remove(0);
        assert!(
            refusal(members.verify("c1", &signed_by(&change(1), &[]), 0, NOW))
                .contains("signed by 0 of the 3")
        );
        assert!(
            refusal(members.verify("c1", &signed_by(&change(1), &[&k[1]]), 0, NOW))
                .contains("signed by 1 of the 3")
        );
        // A coordinator (or the policy key) signing as well adds nothing.
        let forged = signed_by(&change(1), &[&k[1], &policy_key]);
        assert!(refusal(members.verify("c1", &forged, 0, NOW)).contains("needs 2"));
        // One key's signature given twice counts once.
        let mut twice =
            api::SignedStatement::decode(signed_by(&change(1), &[&k[0]]).as_slice()).unwrap();
        twice.signatures.push(twice.signatures[0].clone());
        assert!(
            refusal(members.verify("c1", &twice.encode_to_vec(), 0, NOW)).contains("signed by 1")
        );
        // A membership key's name on a signature that is not its own.
        let mut stolen_name =
            api::SignedStatement::decode(signed_by(&change(1), &[&k[0], &policy_key]).as_slice())
                .unwrap();
        stolen_name.signatures[1].public_key = k[2].verifying_key().to_bytes().to_vec();
        assert!(
            refusal(members.verify("c1", &stolen_name.encode_to_vec(), 0, NOW))
                .contains("signed by 1")
        );
        // Bytes changed after signing.
        let mut tampered =
            api::SignedStatement::decode(signed_by(&change(1), &[&k[0], &k[1]]).as_slice())
                .unwrap();
        let mut statement = api::Statement::decode(tampered.statement.as_slice()).unwrap();
        statement.body = api::MembershipChange {
            changes: vec![api::NodeIdentityChange {
                node_id: 2,
                identity: vec![7; IDENTITY_LEN],
            }],
        }
        .encode_to_vec();
        tampered.statement = statement.encode_to_vec();
        assert!(
            refusal(members.verify("c1", &tampered.encode_to_vec(), 0, NOW))
                .contains("signed by 0")
        );
    }

    #[test]
    fn anything_but_one_newer_valid_change_for_this_cluster_is_refused() {
        let k = keys(3);
        let members = trusted(&k);
        let quorum = [&k[0], &k[1]];
        let check = |statement: &api::Statement, held: u64| {
            refusal(members.verify("c1", &signed_by(statement, &quorum), held, NOW))
        };
        let mut two = change(2);
        two.body = api::MembershipChange {
            changes: vec![
                api::NodeIdentityChange {
                    node_id: 3,
                    identity: vec![7; IDENTITY_LEN],
                },
                api::NodeIdentityChange {
                    node_id: 2,
                    identity: vec![8; IDENTITY_LEN],
                },
            ],
        }
        .encode_to_vec();
        assert!(check(&two, 1).contains("2 changes"));
        let mut none = change(2);
        none.body = api::MembershipChange::default().encode_to_vec();
        assert!(check(&none, 1).contains("0 changes"));
        assert!(check(&change(2), 2).contains("not newer"));
        assert!(check(&change(1), 5).contains("not newer"));
        let mut other_cluster = change(2);
        other_cluster.cluster_id = "c2".into();
        assert!(check(&other_cluster, 1).contains("cluster `c2`"));
        let mut node_4 = change(2);
        node_4.body = api::MembershipChange {
            changes: vec![api::NodeIdentityChange {
                node_id: 4,
                identity: vec![7; IDENTITY_LEN],
            }],
        }
        .encode_to_vec();
        assert!(check(&node_4, 1).contains("node id 4"));
        let mut short = change(2);
        short.body = api::MembershipChange {
            changes: vec![api::NodeIdentityChange {
                node_id: 3,
                identity: vec![7; 32],
            }],
        }
        .encode_to_vec();
        assert!(check(&short, 1).contains("32 bytes"));
        let expired = change_statement("c1", 2, 3, &[7; IDENTITY_LEN], NOW - 7200, 3600);
        assert!(check(&expired, 1).contains("expired"));
        // A change the cluster applied while it was valid is re-learned after its window, but
        // nothing else is relaxed: it must still be newer and signed by a quorum.
        let expired_signed = signed_by(&expired, &quorum);
        assert_eq!(
            members
                .verify_applied("c1", &expired_signed, 1)
                .unwrap()
                .version,
            2
        );
        assert!(refusal(members.verify_applied("c1", &expired_signed, 2)).contains("not newer"));
        assert!(
            refusal(members.verify_applied("c1", &signed_by(&expired, &[&k[0]]), 1))
                .contains("signed by 1")
        );
        let mut subject = change(2);
        subject.subject = "key-1".into();
        assert!(check(&subject, 1).contains("subject"));
        // A key statement signed by the membership keys is not a membership change.
        let mut policy = change(2);
        policy.kind = api::StatementKind::KeyPolicy as i32;
        let signed = api::SignedStatement {
            statement: policy.encode_to_vec(),
            signatures: Vec::new(),
        };
        assert!(
            refusal(members.verify("c1", &signed.encode_to_vec(), 1, NOW))
                .contains("not a MEMBERSHIP_CHANGE")
        );
        assert!(refusal(members.verify("c1", &[0xff; 16], 1, NOW)).contains("not an encoded"));
        assert!(
            refusal(members.verify("c1", &vec![0; MAX_STATEMENT_BYTES + 1], 1, NOW))
                .contains("over the limit")
        );
    }

    #[test]
    fn quorum_defaults_to_a_majority_and_one_key_alone_is_a_warning() {
        let k = keys(3);
        let public: Vec<_> = k.iter().map(|k| k.verifying_key()).collect();
        let (three, warning) = MembershipKeys::new(public.clone(), None).unwrap();
        assert_eq!(three.quorum(), 2);
        assert!(warning.is_none());
        let (one, warning) = MembershipKeys::new(public[..1].to_vec(), None).unwrap();
        assert_eq!(one.quorum(), 1);
        assert!(warning.unwrap().contains("one stolen membership key"));
        assert!(
            MembershipKeys::new(public.clone(), Some(1))
                .unwrap()
                .1
                .is_some()
        );
        assert!(MembershipKeys::new(public.clone(), Some(4)).is_err());
        assert!(MembershipKeys::new(public.clone(), Some(0)).is_err());
        assert!(MembershipKeys::new(vec![public[0], public[0]], None).is_err());
        assert!(MembershipKeys::new(Vec::new(), None).is_err());
        // As configured: hex, each key named by its position when it is not one.
        let configured: Vec<String> = public.iter().map(|k| hex::encode(k.to_bytes())).collect();
        assert_eq!(
            MembershipKeys::from_hex(&configured, None)
                .unwrap()
                .0
                .quorum(),
            2
        );
        let mut bad = configured.clone();
        bad[1] = "zz".into();
        let error = MembershipKeys::from_hex(&bad, None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("key 2"), "{error}");
    }
}
