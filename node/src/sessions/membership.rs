//! Membership and share repair on the node: who nodes 1, 2 and 3 are, how that changes (only by a
//! statement signed by a quorum of the membership keys, one change at a time, each with a higher
//! version), and the repair that gives the replaced node its shares back.
//!
//! Repair rules, all checked here (the coordinator only carries bytes):
//! - a helper makes a term only for the node the newest membership change replaced, and seals
//!   it to that node's new identity, so an unsigned, under-quorum or forged change never lets a
//!   term leave a node, and only the new holder can open one;
//! - the term is bound to the cluster, key, epoch, membership version and the target's new
//!   identity (the engine's repair id), so terms from different repairs never combine;
//! - the target accepts only both helpers' terms, each with the key's public data signed by its
//!   helper, and both helpers must vouch for the same package, chains and epoch; the engine
//!   checks the assembled share against the package;
//! - the rebuilt share is hollow (it signs nothing) until the complete refresh that follows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use prost::Message as _;
use sha2::{Digest, Sha256};
use shardsign_policy::membership::MembershipKeys;
use shardsign_proto::node::v1::{RepairKeyInfo, RepairTermReply};
use shardsign_seal::{
    Context, PublicIdentity, open_broadcast, open_direct, seal_direct, sign_broadcast,
};
use shardsign_tss::{PartyId, PublicPackage, helpers_for, repair_assemble};

use super::Node;
use crate::error::NodeError;
use crate::store::{MembershipChangeRecord, RepairedShare, Store};

/// The sealing context's protocol byte for repair (no engine protocol uses it).
const REPAIR_PROTOCOL: u8 = 0x52;
const INFO_ROUND: u8 = 1;
const TERM_ROUND: u8 = 2;
/// Bounds on what a target accepts from the coordinator (checked before any parsing).
pub const MAX_SEALED_TERM_LEN: usize = 2048;
pub const MAX_SIGNED_INFO_LEN: usize = 4096;

/// Whether a membership change's validity window is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Validity {
    /// A change arriving now (`PutMembership`): within its window.
    Now,
    /// A change the peers applied, re-learned after a restore: its window may have closed since.
    AppliedByPeers,
}

/// Who nodes 1, 2 and 3 are now.
#[derive(Debug, Clone)]
pub(crate) struct MembershipView {
    pub members: Arc<BTreeMap<PartyId, PublicIdentity>>,
    /// The newest applied change's version (0: none, the configured members).
    pub version: u64,
    /// The node the newest change replaced: the only node repair terms are made for.
    pub target: Option<PartyId>,
    /// Signing keys of replaced identities: never readmitted.
    pub replaced: BTreeSet<[u8; 32]>,
}

impl MembershipView {
    /// The configured members with every stored change applied, oldest first.
    pub fn load(
        configured: BTreeMap<PartyId, PublicIdentity>,
        store: &Store,
    ) -> Result<Self, NodeError> {
        let mut view = MembershipView {
            members: Arc::new(configured),
            version: 0,
            target: None,
            replaced: BTreeSet::new(),
        };
        for change in store.membership_changes()? {
            view.apply(&change)?;
        }
        Ok(view)
    }

    fn apply(&mut self, change: &MembershipChangeRecord) -> Result<(), NodeError> {
        let identity = PublicIdentity::from_bytes(&change.identity[..32], &change.identity[32..])
            .map_err(|e| {
            NodeError::Corrupt(format!(
                "membership change {}: the identity is invalid: {e}",
                change.version
            ))
        })?;
        let mut members = (*self.members).clone();
        members.insert(change.node_id, identity);
        self.members = Arc::new(members);
        self.version = change.version;
        self.target = Some(change.node_id);
        self.replaced.extend(change.replaced_signing_key);
        Ok(())
    }
}

/// What a term and the helpers' signed key data are bound to.
fn repair_id(
    cluster_id: &str,
    key_id: &str,
    epoch: u64,
    version: u64,
    target: &PublicIdentity,
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"shardsign-repair-v1\0");
    hasher.update(cluster_id.as_bytes());
    hasher.update([0]);
    hasher.update(key_id.as_bytes());
    hasher.update([0]);
    hasher.update(epoch.to_be_bytes());
    hasher.update(version.to_be_bytes());
    hasher.update(target.signing_key());
    hasher.update(target.kx_key());
    hasher.finalize().into()
}

fn context<'a>(cluster_id: &'a str, id: &'a [u8; 32], round: u8, from: u8, to: u8) -> Context<'a> {
    Context {
        cluster_id,
        protocol: REPAIR_PROTOCOL,
        session_id: id,
        round,
        from,
        to,
        binding: id,
    }
}

fn refused(reason: String) -> NodeError {
    NodeError::invalid("membership", reason)
}

impl Node {
    /// The same node accepting membership changes signed by a quorum of `keys`.
    pub fn with_membership_keys(mut self, keys: MembershipKeys) -> Self {
        self.membership_keys = Some(keys);
        self
    }

    pub(crate) fn view(&self) -> MembershipView {
        self.membership
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Who nodes 1, 2 and 3 are now (on the signing path: a read lock and an `Arc` clone).
    pub fn members(&self) -> Arc<BTreeMap<PartyId, PublicIdentity>> {
        self.membership
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .members
            .clone()
    }

    pub(crate) fn member(&self, party: PartyId) -> Option<PublicIdentity> {
        self.members().get(&party).copied()
    }

    /// Signing keys of replaced identities (never readmitted).
    pub(crate) fn replaced_identities(&self) -> std::collections::BTreeSet<[u8; 32]> {
        self.membership
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .replaced
            .clone()
    }

    /// The membership version this node holds (0: no change applied).
    pub fn membership_version(&self) -> u64 {
        self.membership
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .version
    }

    /// Applies a signed membership change; returns the version held afterwards and whether it
    /// changed now.
    pub fn put_membership(&self, signed: &[u8]) -> Result<(u64, bool), NodeError> {
        self.apply_membership(signed, Validity::Now)
    }

    /// Applies a signed membership change, checking its validity window as `validity` says.
    pub(super) fn apply_membership(
        &self,
        signed: &[u8],
        validity: Validity,
    ) -> Result<(u64, bool), NodeError> {
        let keys = self.membership_keys.as_ref().ok_or_else(|| {
            refused("this node has no membership keys configured (membership_public_keys), so it accepts no membership change".into())
        })?;
        let mut view = self
            .membership
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let verified = match validity {
            Validity::Now => keys.verify(&self.cluster_id, signed, view.version, self.now_unix()),
            Validity::AppliedByPeers => keys.verify_applied(&self.cluster_id, signed, view.version),
        };
        let verified = match verified {
            Ok(verified) => verified,
            Err(error) => {
                // A statement applied before (a retry, a re-run, other signers, even expired
                // since) is a no-op: the signed statement is compared, not re-verified.
                if self.store.membership_statement_applied(signed)? {
                    return Ok((view.version, false));
                }
                return Err(refused(error.to_string()));
            }
        };
        let node = u8::try_from(verified.node_id)
            .ok()
            .and_then(|n| PartyId::new(n).ok())
            .ok_or_else(|| refused(format!("node id {} is not 1, 2 or 3", verified.node_id)))?;
        let identity =
            PublicIdentity::from_bytes(&verified.identity[..32], &verified.identity[32..])
                .map_err(|e| refused(format!("the new identity is invalid: {e}")))?;
        if view.replaced.contains(&identity.signing_key()) {
            return Err(refused(
                "the new identity was replaced before; a replaced identity is never readmitted"
                    .into(),
            ));
        }
        if let Some((other, _)) = view.members.iter().find(|(party, member)| {
            **party != node && member.signing_key() == identity.signing_key()
        }) {
            return Err(refused(format!(
                "the new identity is node {other}'s; a replacement always gets a new identity"
            )));
        }
        if node == self.me && identity != self.secret.public() {
            return Err(refused(format!(
                "the change gives this node's place (node {node}) to another identity; this node is the one being replaced and takes no part"
            )));
        }
        let record = MembershipChangeRecord {
            version: verified.version,
            node_id: node,
            identity: verified.identity,
            replaced_signing_key: Some(view.members[&node].signing_key())
                .filter(|old| *old != identity.signing_key()),
        };
        self.store.record_membership_change(&record, signed)?;
        view.apply(&record)?;
        tracing::warn!(
            target: "security",
            node = %node,
            version = record.version,
            fingerprint = identity.fingerprint(),
            "membership changed: node {node} has a new identity; the old one is refused from now on"
        );
        Ok((view.version, true))
    }

    /// A helper's repair term for `target`'s share of `key_id` at `epoch`, sealed to `target`,
    /// with the key's public data signed by this node.
    pub fn repair_term(
        &self,
        key_id: &str,
        epoch: u64,
        target: PartyId,
    ) -> Result<RepairTermReply, NodeError> {
        self.check_relearned()?;
        super::refresh::key_id_field(key_id)?;
        let view = self.view();
        if view.target != Some(target) || target == self.me {
            return Err(refused(format!(
                "no repair for node {target}: only the node the newest membership change replaced gets repair terms (membership version {}, {})",
                view.version,
                match view.target {
                    Some(t) => format!("which replaced node {t}"),
                    None => "no change applied".into(),
                }
            )));
        }
        self.bans
            .check_all(view.members.iter().filter(|(party, _)| **party != target))?;
        let loaded = self.store.load_key_at(key_id, epoch)?;
        if loaded.share.is_hollow() {
            return Err(refused(format!(
                "this node's share of `{key_id}` was itself rebuilt by repair and is not refreshed yet"
            )));
        }
        let package = self.store.public_package(key_id)?.ok_or_else(|| {
            refused(format!(
                "key `{key_id}` has no public key package here; the nodes agree on one first (a refresh does it)"
            ))
        })?;
        let target_identity = view.members[&target];
        let id = repair_id(
            &self.cluster_id,
            key_id,
            epoch,
            view.version,
            &target_identity,
        );
        let term = loaded
            .share
            .repair_term(target, &id)
            .map_err(|e| refused(e.to_string()))?;
        let sealed_term = seal_direct(
            &self.secret,
            &target_identity,
            &context(
                &self.cluster_id,
                &id,
                TERM_ROUND,
                self.me.get(),
                target.get(),
            ),
            &term,
        );
        let info = RepairKeyInfo {
            public_key: loaded.share.public_key().as_bytes().to_vec(),
            public_package: package.to_bytes(),
            allowed_chain_ids: loaded.allowed_chain_ids.clone(),
        };
        let mut payload = Vec::new();
        payload.extend_from_slice(&view.version.to_be_bytes());
        payload.extend_from_slice(&epoch.to_be_bytes());
        payload.extend(info.encode_to_vec());
        let signed_info = sign_broadcast(
            &self.secret,
            &context(&self.cluster_id, &id, INFO_ROUND, self.me.get(), 0),
            &payload,
        );
        tracing::info!(key_id, epoch, target = %target, "repair term sealed to the replaced node");
        Ok(RepairTermReply {
            helper: u32::from(self.me.get()),
            sealed_term,
            signed_info,
        })
    }

    /// On the replaced node: rebuilds its share of `key_id` at `epoch` from both helpers' terms;
    /// whether it was stored now (false: already held from this repair).
    pub fn assemble_repair(
        &self,
        key_id: &str,
        epoch: u64,
        terms: &[RepairTermReply],
    ) -> Result<bool, NodeError> {
        super::refresh::key_id_field(key_id)?;
        let view = self.view();
        if view.target != Some(self.me) {
            return Err(refused(format!(
                "this node (node {}) is not the one the newest membership change (version {}) replaced; it assembles no repair",
                self.me, view.version
            )));
        }
        let id = repair_id(
            &self.cluster_id,
            key_id,
            epoch,
            view.version,
            &self.secret.public(),
        );
        let helpers = helpers_for(self.me);
        let mut opened = Vec::new();
        let mut vouched: Option<Vec<u8>> = None;
        for helper in helpers {
            let reply = match terms
                .iter()
                .filter(|t| t.helper == u32::from(helper.get()))
                .collect::<Vec<_>>()
                .as_slice()
            {
                [reply] => *reply,
                [] => return Err(refused(format!("helper node {helper}'s term is missing"))),
                _ => {
                    return Err(refused(format!(
                        "helper node {helper}'s term is given twice"
                    )));
                }
            };
            if reply.sealed_term.len() > MAX_SEALED_TERM_LEN
                || reply.signed_info.len() > MAX_SIGNED_INFO_LEN
            {
                return Err(refused(format!(
                    "helper node {helper}'s reply is over the size limit"
                )));
            }
            let identity = view.members[&helper];
            let info = open_broadcast(
                &identity,
                &context(&self.cluster_id, &id, INFO_ROUND, helper.get(), 0),
                &reply.signed_info,
            )
            .map_err(|_| {
                refused(format!(
                    "helper node {helper}'s key data is not signed by node {helper} for this repair"
                ))
            })?;
            match &vouched {
                None => vouched = Some(info.to_vec()),
                Some(first) if first.as_slice() == info => {}
                Some(_) => {
                    return Err(refused(
                        "the two helpers vouch for different key data (package, chains or epoch)"
                            .into(),
                    ));
                }
            }
            let term = open_direct(
                &self.secret,
                &identity,
                &context(
                    &self.cluster_id,
                    &id,
                    TERM_ROUND,
                    helper.get(),
                    self.me.get(),
                ),
                &reply.sealed_term,
            )
            .map_err(|_| {
                refused(format!(
                    "helper node {helper}'s term was not sealed by it to this node for this repair"
                ))
            })?;
            opened.push(term);
        }
        let payload = vouched.expect("two helpers");
        let (prefix, encoded) = payload
            .split_at_checked(16)
            .ok_or_else(|| refused("the helpers' key data is malformed".into()))?;
        if prefix[..8] != view.version.to_be_bytes() || prefix[8..] != epoch.to_be_bytes() {
            return Err(refused(
                "the helpers' key data is for another membership version or epoch".into(),
            ));
        }
        let info = RepairKeyInfo::decode(encoded)
            .map_err(|_| refused("the helpers' key data is malformed".into()))?;
        let package = PublicPackage::from_bytes(&info.public_package)
            .map_err(|e| refused(format!("the helpers' package: {e}")))?;
        if package.public_key().as_bytes().as_slice() != info.public_key.as_slice() {
            return Err(refused(
                "the helpers' package is not of the key they name".into(),
            ));
        }
        if info.allowed_chain_ids.len() > super::MAX_CHAIN_IDS {
            return Err(refused("the helpers name too many chain ids".into()));
        }
        let share = repair_assemble(
            &package,
            self.me,
            &opened.iter().map(|t| t.as_slice()).collect::<Vec<_>>(),
        )
        .map_err(|e| refused(e.to_string()))?;
        let stored = self.store.put_repaired_key(&RepairedShare {
            key_id,
            epoch,
            share: &share,
            package: &package,
            allowed_chain_ids: &info.allowed_chain_ids,
        })?;
        tracing::info!(
            key_id,
            epoch,
            stored,
            "share rebuilt by repair (hollow until the complete refresh)"
        );
        Ok(stored)
    }

    fn now_unix(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }
}
