//! A node restored from a backup holds the past: the membership, key statements, bans and ledger
//! of the day the backup was taken. Whatever only moves forward must not move back, so until it
//! has re-learned the present from both peers it signs nothing (and starts no key generation,
//! refresh or repair). Its session-id floor is set by the restore itself.
//!
//! Each peer reports its own state, signed with its identity key for this restored node's
//! challenge (fresh at every start, so an old report cannot be replayed). What the restored node
//! takes, and why it can trust it:
//! - membership changes: verified against the membership keys (a quorum signed each one), applied
//!   in version order; two different changes with one version refuse the whole re-learning. A
//!   change naming this node with another identity means this identity was replaced: it is never
//!   readmitted. Only after the changes are applied are the reports' signatures checked, against
//!   the identities the membership now names (a replaced peer's report counts for nothing);
//! - key statements: verified against the operator's key, taken only when newer than the one held;
//! - bans: every ban either peer holds (the maximum of backup and peers: a restored node cannot
//!   tell whose accusation is true, and never signing with a node another member caught is the
//!   direction that cannot leak the key), except bans naming this node or replaced identities;
//! - ledger: every charge either peer holds from the last 24 h that this node does not, by session
//!   (the union, never less than what this node co-signed: a session it took part in charged one
//!   of the peers too).
//!
//! Both peers' reports are required: one honest peer is enough for the membership and ledger to be
//! complete, but a lone report could come from the one that lies.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;
use sha2::{Digest, Sha256};
use shardsign_eth::U256;
use shardsign_proto::node::v1::{Ban as WireBan, LedgerCharge, NodeState, RelearnReply};
use shardsign_seal::{Context, open_broadcast, sign_broadcast};
use shardsign_tss::PartyId;

use super::Node;
use super::membership::Validity;
use crate::error::NodeError;
use crate::store::{Ban, Charge};

/// The sealing context's protocol byte for state reports (no engine protocol uses it).
const STATE_PROTOCOL: u8 = 0x4c;
/// The most a signed state may be: two of them must fit the node's request limit.
pub const MAX_STATE_BYTES: usize = 960 * 1024;
/// How far ahead of this node's clock a peer's charge may be dated.
const MAX_CHARGE_SKEW_MS: i64 = 5 * 60 * 1000;
const WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// The restored node's pending re-learning: the challenge peers sign their state for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    pub challenge: [u8; 32],
    pub since_ms: i64,
}

fn binding() -> [u8; 32] {
    Sha256::digest(b"shardsign/node-state/v1").into()
}

fn context<'a>(
    cluster_id: &'a str,
    challenge: &'a [u8; 32],
    from: u8,
    to: u8,
    binding: &'a [u8; 32],
) -> Context<'a> {
    Context {
        cluster_id,
        protocol: STATE_PROTOCOL,
        session_id: challenge,
        round: 0,
        from,
        to,
        binding,
    }
}

fn refused(reason: impl Into<String>) -> NodeError {
    NodeError::Relearn(reason.into())
}

fn party(id: u32) -> Option<PartyId> {
    u8::try_from(id).ok().and_then(|n| PartyId::new(n).ok())
}

/// The payload of a signed broadcast, unverified (to read who claims to have sent it).
fn unverified_payload(signed: &[u8]) -> Option<&[u8]> {
    (signed.len() > 1 + 64).then(|| &signed[1..signed.len() - 64])
}

impl Node {
    pub(crate) fn relearn_pending(&self) -> Option<Pending> {
        *self
            .relearn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The challenge peers sign their state for, while this node has not re-learned.
    pub fn relearn_challenge(&self) -> Option<[u8; 32]> {
        self.relearn_pending().map(|pending| pending.challenge)
    }

    /// Refuses what needs the present (signing, key generation, refresh, repair terms) while this
    /// node has not re-learned it.
    pub(crate) fn check_relearned(&self) -> Result<(), NodeError> {
        match self.relearn_pending() {
            Some(pending) => Err(NodeError::RelearnNeeded {
                since_ms: pending.since_ms,
            }),
            None => Ok(()),
        }
    }

    /// `GetState`: this node's state, signed for restored node `for_node`'s `challenge`.
    pub fn signed_state(&self, challenge: &[u8], for_node: u32) -> Result<Vec<u8>, NodeError> {
        let challenge: [u8; 32] = challenge
            .try_into()
            .map_err(|_| NodeError::invalid("challenge", "expected 32 bytes"))?;
        let for_node = party(for_node)
            .filter(|node| *node != self.me)
            .ok_or_else(|| NodeError::invalid("for_node", "expected another node's id (1-3)"))?;
        if self.relearn_pending().is_some() {
            return Err(refused(format!(
                "node {} was restored from a backup too and has not re-learned yet: it cannot vouch for the cluster's state",
                self.me
            )));
        }
        let now_ms = shardsign_request::unix_now_ms();
        let state = NodeState {
            cluster_id: self.cluster_id.clone(),
            node_id: u32::from(self.me.get()),
            challenge: challenge.to_vec(),
            at_unix_ms: now_ms,
            membership_statements: self.store.membership_statements()?,
            key_statements: self.store.key_statements()?,
            bans: self
                .bans()
                .into_iter()
                .map(|ban| WireBan {
                    node_id: u32::from(ban.node_id),
                    signing_key: ban.peer_signing_key.to_vec(),
                    reason: ban.reason,
                    at_unix_ms: ban.at_ms,
                })
                .collect(),
            charges: self
                .store
                .all_charges_since(now_ms)?
                .into_iter()
                .map(|charge| LedgerCharge {
                    session_id: charge.session_id.to_vec(),
                    key_id: charge.key_id,
                    chain_id: charge.chain_id,
                    value: charge.value.to_be_bytes_trimmed_vec(),
                    at_unix_ms: charge.at_ms,
                    token: charge
                        .token
                        .map(|(token, _)| token.0.to_vec())
                        .unwrap_or_default(),
                    token_amount: charge
                        .token
                        .map(|(_, amount)| amount.to_be_bytes_trimmed_vec())
                        .unwrap_or_default(),
                })
                .collect(),
        };
        let encoded = state.encode_to_vec();
        if encoded.len() + 1 + 64 > MAX_STATE_BYTES {
            return Err(refused(format!(
                "node {}'s state is {} bytes, over the {MAX_STATE_BYTES} a restored node takes (its 24 h ledger holds {} charges); re-learning needs the ledger to shrink first",
                self.me,
                encoded.len(),
                state.charges.len()
            )));
        }
        let binding = binding();
        Ok(sign_broadcast(
            &self.secret,
            &context(
                &self.cluster_id,
                &challenge,
                self.me.get(),
                for_node.get(),
                &binding,
            ),
            &encoded,
        ))
    }

    /// `Relearn`: takes from both peers' signed states what only moves forward, then signs again.
    pub fn relearn(&self, signed_states: &[Vec<u8>]) -> Result<RelearnReply, NodeError> {
        let Some(pending) = self.relearn_pending() else {
            return Ok(RelearnReply {
                membership_version: self.membership_version(),
                ..Default::default()
            });
        };
        let peers: Vec<PartyId> = (1..=3)
            .filter_map(|n| PartyId::new(n).ok())
            .filter(|p| *p != self.me)
            .collect();
        if signed_states.len() != peers.len() {
            return Err(refused(format!(
                "{} peer states; both peers' (nodes {} and {}) are needed",
                signed_states.len(),
                peers[0],
                peers[1]
            )));
        }
        let mut states = BTreeMap::new();
        for signed in signed_states {
            if signed.len() > MAX_STATE_BYTES {
                return Err(NodeError::invalid(
                    "states",
                    format!("a state over {MAX_STATE_BYTES} bytes"),
                ));
            }
            let state = unverified_payload(signed)
                .and_then(|payload| NodeState::decode(payload).ok())
                .ok_or_else(|| NodeError::invalid("states", "not a signed node state"))?;
            let from = party(state.node_id)
                .filter(|p| peers.contains(p))
                .ok_or_else(|| {
                    refused(format!(
                        "a state from node {}, not from a peer",
                        state.node_id
                    ))
                })?;
            if state.cluster_id != self.cluster_id || state.challenge != pending.challenge {
                return Err(refused(format!(
                    "node {from}'s state is for another cluster or challenge (an old or misdirected report)"
                )));
            }
            if states.insert(from, (signed, state)).is_some() {
                return Err(refused(format!("two states from node {from}")));
            }
        }

        let applied = self.relearn_membership(&states)?;
        // Now the membership is current: each report must be signed by the identity it names.
        let binding = binding();
        let members = self.members();
        for (from, (signed, _)) in &states {
            let identity = members.get(from).ok_or_else(|| refused("no such member"))?;
            open_broadcast(
                identity,
                &context(
                    &self.cluster_id,
                    &pending.challenge,
                    from.get(),
                    self.me.get(),
                    &binding,
                ),
                signed,
            )
            .map_err(|_| {
                NodeError::Security(format!(
                    "node {from}'s state is not signed by node {from}'s current identity (fingerprint {}); nothing but its membership changes (quorum-signed) was taken",
                    identity.fingerprint()
                ))
            })?;
        }

        let mut key_statements_applied = 0;
        for (_, state) in states.values() {
            for signed in &state.key_statements {
                if self.policies.relearn(&self.store, signed)? {
                    key_statements_applied += 1;
                }
            }
        }

        let bans = self.learned_bans(&states);
        let charges = learned_charges(&states, shardsign_request::unix_now_ms())?;
        let (bans_learned, charges_learned) = self.store.finish_relearn(&bans, &charges)?;
        self.bans.reload(&self.store)?;
        self.ledger.reload();
        *self
            .relearn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        let reply = RelearnReply {
            membership_version: self.membership_version(),
            membership_changes_applied: applied,
            key_statements_applied,
            bans_learned: bans_learned as u32,
            charges_learned: charges_learned as u32,
        };
        tracing::warn!(
            target: "security",
            membership_version = reply.membership_version,
            membership_changes_applied = reply.membership_changes_applied,
            key_statements_applied = reply.key_statements_applied,
            bans_learned = reply.bans_learned,
            charges_learned = reply.charges_learned,
            "restored node re-learned the cluster's state from both peers; it signs again"
        );
        Ok(reply)
    }

    /// Applies the membership changes the peers report, oldest first; how many were new here.
    fn relearn_membership(
        &self,
        states: &BTreeMap<PartyId, (&Vec<u8>, NodeState)>,
    ) -> Result<u32, NodeError> {
        let mut by_version: BTreeMap<u64, &Vec<u8>> = BTreeMap::new();
        for (from, (_, state)) in states {
            for signed in &state.membership_statements {
                let Some(version) = statement_version(signed) else {
                    return Err(refused(format!(
                        "node {from} reports a membership change that is not a statement"
                    )));
                };
                match by_version.get(&version) {
                    Some(other) if *other != signed => {
                        return Err(refused(format!(
                            "the peers report two different membership changes with version {version}; resolve it with a newer change signed by the membership keys"
                        )));
                    }
                    _ => {
                        by_version.insert(version, signed);
                    }
                }
            }
        }
        let mut applied = 0;
        for (version, signed) in by_version {
            if version <= self.membership_version() {
                continue;
            }
            let (_, changed) = self
                .apply_membership(signed, Validity::AppliedByPeers)
                .map_err(|error| {
                    refused(format!(
                        "membership change {version} reported by the peers: {error}"
                    ))
                })?;
            applied += u32::from(changed);
        }
        Ok(applied)
    }

    /// Every ban either peer holds that this node should hold too.
    fn learned_bans(&self, states: &BTreeMap<PartyId, (&Vec<u8>, NodeState)>) -> Vec<Ban> {
        let me = self.identity().signing_key();
        let replaced = self.replaced_identities();
        let mut bans = Vec::new();
        let mut seen = BTreeSet::new();
        for (from, (_, state)) in states {
            for ban in &state.bans {
                let Ok(key) = <[u8; 32]>::try_from(ban.signing_key.as_slice()) else {
                    continue;
                };
                let Some(node_id) = party(ban.node_id) else {
                    continue;
                };
                if key == me || replaced.contains(&key) || !seen.insert(key) {
                    continue;
                }
                // A peer's text: bounded and escaped before it reaches refusals and logs.
                let reason = ban
                    .reason
                    .chars()
                    .take(200)
                    .collect::<String>()
                    .escape_default()
                    .to_string();
                bans.push(Ban {
                    peer_signing_key: key,
                    node_id: node_id.get(),
                    reason: format!("learned from node {from} after a restore: {reason}"),
                    at_ms: ban.at_unix_ms,
                });
            }
        }
        bans
    }
}

/// A statement's version, read without verifying (verification follows, in version order).
fn statement_version(signed: &[u8]) -> Option<u64> {
    let envelope = shardsign_proto::v1::SignedStatement::decode(signed).ok()?;
    let statement = shardsign_proto::v1::Statement::decode(envelope.statement.as_slice()).ok()?;
    Some(statement.version)
}

/// Every charge either peer holds within the 24 h before `now_ms` (the store skips the sessions
/// already charged here).
fn learned_charges(
    states: &BTreeMap<PartyId, (&Vec<u8>, NodeState)>,
    now_ms: i64,
) -> Result<Vec<Charge>, NodeError> {
    let mut charges = Vec::new();
    for (from, (_, state)) in states {
        for charge in &state.charges {
            let malformed = || refused(format!("node {from} reports a malformed ledger charge"));
            let session_id: [u8; 32] = charge
                .session_id
                .as_slice()
                .try_into()
                .map_err(|_| malformed())?;
            let big_endian = |bytes: &[u8]| {
                let mut word = [0u8; 32];
                let start = 32usize.checked_sub(bytes.len())?;
                word[start..].copy_from_slice(bytes);
                Some(U256::from_be_bytes(word))
            };
            let value = big_endian(&charge.value).ok_or_else(malformed)?;
            let token = match charge.token.len() {
                0 if charge.token_amount.is_empty() => None,
                20 => Some((
                    shardsign_eth::Address(
                        charge
                            .token
                            .as_slice()
                            .try_into()
                            .map_err(|_| malformed())?,
                    ),
                    big_endian(&charge.token_amount).ok_or_else(malformed)?,
                )),
                _ => return Err(malformed()),
            };
            if charge.key_id.is_empty() || charge.key_id.len() > 128 {
                return Err(malformed());
            }
            if charge.at_unix_ms <= now_ms - WINDOW_MS
                || charge.at_unix_ms > now_ms + MAX_CHARGE_SKEW_MS
            {
                continue;
            }
            charges.push(Charge {
                charge_id: rand::random(),
                session_id,
                key_id: charge.key_id.clone(),
                chain_id: charge.chain_id,
                value,
                token,
                at_ms: charge.at_unix_ms,
            });
        }
    }
    Ok(charges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(key_id: &str, value: U256, at_ms: i64) -> LedgerCharge {
        LedgerCharge {
            session_id: rand::random::<[u8; 32]>().to_vec(),
            key_id: key_id.into(),
            chain_id: 8453,
            value: value.to_be_bytes_trimmed_vec(),
            at_unix_ms: at_ms,
            token: Vec::new(),
            token_amount: Vec::new(),
        }
    }

    fn states(charges: Vec<LedgerCharge>) -> BTreeMap<PartyId, (&'static Vec<u8>, NodeState)> {
        static SIGNED: Vec<u8> = Vec::new();
        BTreeMap::from([(
            PartyId::new(2).unwrap(),
            (
                &SIGNED,
                NodeState {
                    charges,
                    ..Default::default()
                },
            ),
        )])
    }

    #[test]
    fn charges_keep_their_value_and_only_the_last_24_hours_are_taken() {
        let now = 1_800_000_000_000;
        let wei = U256::from(10u64).pow(U256::from(18u64)) * U256::from(3u64);
        let learned = learned_charges(
            &states(vec![
                charge("treasury-hot", wei, now - 1_000),
                charge("treasury-hot", U256::ZERO, now - 2_000),
                charge("treasury-hot", U256::MAX, now - 3_000),
                charge("treasury-hot", wei, now - WINDOW_MS),
                charge("treasury-hot", wei, now + MAX_CHARGE_SKEW_MS + 1),
            ]),
            now,
        )
        .unwrap();
        let values: Vec<U256> = learned.iter().map(|c| c.value).collect();
        assert_eq!(values, vec![wei, U256::ZERO, U256::MAX]);

        let mut long = charge("treasury-hot", wei, now);
        long.value = vec![1; 33];
        assert!(learned_charges(&states(vec![long]), now).is_err());
        let mut short_session = charge("treasury-hot", wei, now);
        short_session.session_id.pop();
        assert!(learned_charges(&states(vec![short_session]), now).is_err());

        // A token charge keeps its token and amount; a token without 20 bytes, or an amount
        // without a token, is malformed.
        let mut usdc = charge("treasury-hot", U256::ZERO, now);
        usdc.token = vec![0xa0; 20];
        usdc.token_amount = U256::from(250_000_000u64).to_be_bytes_trimmed_vec();
        let learned = learned_charges(&states(vec![usdc.clone()]), now).unwrap();
        assert_eq!(
            learned[0].token,
            Some((
                shardsign_eth::Address([0xa0; 20]),
                U256::from(250_000_000u64)
            ))
        );
        let mut short_token = usdc.clone();
        short_token.token.pop();
        let mut orphan_amount = usdc;
        orphan_amount.token.clear();
        for bad in [short_token, orphan_amount] {
            assert!(learned_charges(&states(vec![bad]), now).is_err());
        }
    }

    #[test]
    fn a_state_holds_about_twelve_thousand_charges() {
        // Realistic charges: a 20-character key id, up to 1,000 ETH each.
        let charges: Vec<LedgerCharge> = (0..12_000u64)
            .map(|i| {
                let value = U256::from(i + 1) * U256::from(10u64).pow(U256::from(17u64));
                charge("agent-wallet-0000001", value, 1_800_000_000_000 + i as i64)
            })
            .collect();
        let state = NodeState {
            cluster_id: "c".repeat(64),
            challenge: vec![0; 32],
            charges,
            ..Default::default()
        };
        let signed_len = state.encoded_len() + 1 + 64;
        println!(
            "12,000 charges: {signed_len} bytes signed ({} per charge)",
            signed_len / 12_000
        );
        assert!(signed_len <= MAX_STATE_BYTES, "{signed_len}");
    }
}
