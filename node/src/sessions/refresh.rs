//! Share refresh: this node's side of the engine's three rounds, then the key-generation
//! pattern's fourth round (each node signs a hash of every broadcast it saw and the new public
//! key package), then the commit rule that keeps the three nodes on one epoch:
//!
//! - A node that saw both peers confirm what it saw stores its new share (pending, beside the
//!   current one) and only then gives its **vote**: its identity key's signature over the key,
//!   the new epoch and the new package. A vote therefore exists only for a share on disk.
//! - The three votes are the **commit certificate**. With it a node makes the new epoch current
//!   and erases the old share; without it nothing moves.
//! - An abort deletes a pending share at once on a node that never voted (which then never
//!   will); a node that voted deletes it only with a receipt from a node that never voted, the
//!   proof that no certificate can exist. A node that committed refuses to abort. So a
//!   coordinator can neither commit one node and abort another, nor strand a node's new share.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};
use shardsign_proto::node::v1::{Envelope, RefreshResult, RefreshVote, round_reply};
use shardsign_request::KeyId;
use shardsign_seal::{Context, open_broadcast, sign_broadcast};
use shardsign_tss::{
    Message, PARTIES, PartyId, Protocol, PublicPackage, RefreshKind, RefreshOutput, RefreshSession,
    SessionId,
};

use super::keygen::CONFIRM_ROUND;
use super::{Engine, Node, Session, StepOutput, engine_error};
use crate::error::NodeError;
use crate::store::NewShare;

/// The pseudo-round of votes and of abort receipts: no engine or confirmation message uses them.
const VOTE_ROUND: u8 = 5;
const ABORT_RECEIPT_ROUND: u8 = 251;
const ABORT_RECEIPT: &[u8] = b"refresh aborted; this node never voted for it";

pub(super) struct RefreshState {
    engine: RefreshSession,
    session_id: SessionId,
    key_id: String,
    from_epoch: u64,
    /// Digest of every broadcast payload seen, by (round, sender), this node's own included.
    pub(super) broadcasts: BTreeMap<(u8, u8), [u8; 32]>,
    /// The engine's output and this node's confirmation, until both peers confirm.
    finished: Option<(RefreshOutput, Vec<u8>)>,
    confirmations: BTreeSet<PartyId>,
}

/// What a refresh's envelopes and votes are bound to: the key and the epoch it replaces.
fn refresh_binding(key_id: &str, from_epoch: u64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"shardsign-refresh-binding-v1\0");
    hasher.update(key_id.as_bytes());
    hasher.update([0]);
    hasher.update(from_epoch.to_be_bytes());
    hasher.finalize().into()
}

/// What a refresh session's envelopes are bound to: [`refresh_binding`], and for the fast refresh
/// its kind too, so that nodes asked for different kinds never talk to each other. (Votes and
/// receipts keep [`refresh_binding`]: a commit need not know which kind ran.)
fn session_binding(key_id: &str, from_epoch: u64, kind: RefreshKind) -> [u8; 32] {
    let binding = refresh_binding(key_id, from_epoch);
    match kind {
        RefreshKind::Complete => binding,
        RefreshKind::Fast => {
            let mut hasher = Sha256::new();
            hasher.update(b"shardsign-refresh-fast-v1\0");
            hasher.update(binding);
            hasher.finalize().into()
        }
    }
}

/// What every node's vote signs: the key, its new epoch and the new public key package.
fn vote_payload(key_id: &str, new_epoch: u64, package: &PublicPackage) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(b"shardsign-refresh-vote-v1\0");
    hasher.update(key_id.as_bytes());
    hasher.update([0]);
    hasher.update(new_epoch.to_be_bytes());
    hasher.update(Sha256::digest(package.to_bytes()));
    hasher.finalize().to_vec()
}

fn context<'a>(
    cluster_id: &'a str,
    session_id: &'a SessionId,
    round: u8,
    from: u8,
    binding: &'a [u8; 32],
) -> Context<'a> {
    Context {
        cluster_id,
        protocol: Protocol::Refresh.to_byte(),
        session_id: session_id.as_bytes(),
        round,
        from,
        to: 0,
        binding,
    }
}

pub(super) fn key_id_field(key_id: &str) -> Result<(), NodeError> {
    KeyId::parse(key_id)
        .map(|_| ())
        .map_err(|e| NodeError::invalid("key_id", e.to_string()))
}

impl Node {
    /// Starts this node's side of a refresh (of `kind`) of `key_id`, which must be at `epoch`
    /// here.
    pub fn start_refresh(
        &self,
        session_id: SessionId,
        key_id: &str,
        epoch: u64,
        kind: RefreshKind,
    ) -> Result<Vec<Envelope>, NodeError> {
        self.check_relearned()?;
        key_id_field(key_id)?;
        // A refresh needs all three nodes: none while this node has banned one of them.
        self.bans.check_all(self.members().iter())?;
        let loaded = self.store.load_key_at(key_id, epoch)?;
        if self.store.pending_refresh(key_id)?.is_some() {
            return Err(NodeError::RefreshPending(key_id.to_string()));
        }
        let package = self.store.public_package(key_id)?.ok_or_else(|| {
            NodeError::invalid(
                "key_id",
                format!(
                    "key `{key_id}` was made before nodes kept its public key package, which a refresh needs; it cannot be refreshed yet"
                ),
            )
        })?;
        self.check_session_id(&session_id)?;
        self.store.claim_session(session_id.as_bytes(), "refresh")?;
        let (engine, messages) =
            RefreshSession::start_kind(kind, loaded.share, package, session_id)
                .map_err(engine_error)?;
        let mut session = Session {
            protocol: Protocol::Refresh,
            binding: session_binding(key_id, epoch, kind),
            participants: PARTIES.to_vec(),
            engine: Engine::Refresh(Box::new(RefreshState {
                engine,
                session_id,
                key_id: key_id.to_string(),
                from_epoch: epoch,
                broadcasts: BTreeMap::new(),
                finished: None,
                confirmations: BTreeSet::new(),
            })),
            deadline: self.clock.now() + self.round_timeout,
            claim: None,
            charge: None,
        };
        let envelopes = self.seal_all(session_id, &mut session, messages)?;
        self.insert_session(session_id, session)?;
        tracing::info!(session_id = %session_id, key_id, epoch, kind = kind.as_str(), "refresh started");
        Ok(envelopes)
    }

    /// Takes a peer's confirmation; once both agree with ours, stores the new share with this
    /// node's vote and returns the vote.
    pub(super) fn confirm_refresh(
        &self,
        state: &mut RefreshState,
        from: PartyId,
        payload: &[u8],
    ) -> Result<Option<round_reply::Result>, NodeError> {
        let Some((output, ours)) = &state.finished else {
            return Err(NodeError::Security(format!(
                "confirmation from node {from} before the refresh finished"
            )));
        };
        if payload != ours.as_slice() {
            return Err(NodeError::Security(format!(
                "broadcast divergence: node {from} saw different refresh broadcasts or derived a different package than this node"
            )));
        }
        if !state.confirmations.insert(from) {
            return Err(NodeError::Security(format!(
                "second confirmation from node {from}"
            )));
        }
        if state.confirmations.len() < PARTIES.len() - 1 {
            return Ok(None);
        }
        let new_epoch = state.from_epoch + 1;
        let payload = vote_payload(&state.key_id, new_epoch, &output.package);
        let binding = refresh_binding(&state.key_id, state.from_epoch);
        let vote = sign_broadcast(
            &self.secret,
            &context(
                &self.cluster_id,
                &state.session_id,
                VOTE_ROUND,
                self.me.get(),
                &binding,
            ),
            &payload,
        );
        // On disk before the vote leaves: a certificate never names a share that is not.
        self.store.put_pending_refresh(
            &state.key_id,
            state.session_id.as_bytes(),
            state.from_epoch,
            NewShare {
                share: &output.share,
                package: &output.package,
                vote_payload: &payload,
                vote: &vote,
            },
        )?;
        tracing::info!(
            key_id = state.key_id,
            new_epoch,
            "refresh complete; new share stored, waiting for the commit certificate"
        );
        Ok(Some(round_reply::Result::Refresh(RefreshResult {
            key_id: state.key_id.clone(),
            new_epoch,
            public_key: output.package.public_key().as_bytes().to_vec(),
            vote: Some(RefreshVote {
                node_id: u32::from(self.me.get()),
                signed: vote,
            }),
        })))
    }

    /// Commits the refresh `session_id` of `key_id` with its certificate (all three votes);
    /// returns the key's epoch here afterwards. Idempotent.
    pub fn commit_refresh(
        &self,
        session_id: SessionId,
        key_id: &str,
        certificate: &[(u8, Vec<u8>)],
    ) -> Result<u64, NodeError> {
        key_id_field(key_id)?;
        if let Some(pending) = self.store.pending_refresh(key_id)?
            && pending.session_id == session_id.as_bytes()
        {
            let binding = refresh_binding(key_id, pending.from_epoch);
            let members = self.members();
            for party in PARTIES {
                let identity = &members[&party];
                let context = context(
                    &self.cluster_id,
                    &session_id,
                    VOTE_ROUND,
                    party.get(),
                    &binding,
                );
                let voted = certificate.iter().any(|(node, signed)| {
                    *node == party.get()
                        && open_broadcast(identity, &context, signed)
                            .is_ok_and(|p| p == pending.vote_payload.as_slice())
                });
                if !voted {
                    return Err(NodeError::invalid(
                        "certificate",
                        format!(
                            "node {party}'s vote for this refresh is missing or does not verify; a refresh commits only with the votes of all three nodes"
                        ),
                    ));
                }
            }
        }
        let epoch = self.store.commit_refresh(key_id, session_id.as_bytes())?;
        tracing::info!(session_id = %session_id, key_id, epoch, "refresh committed; the old share is erased");
        Ok(epoch)
    }

    /// Aborts the refresh `session_id` of `key_id` under the module's rules; returns whether a
    /// pending share was deleted, and this node's receipt.
    pub fn abort_refresh(
        &self,
        session_id: SessionId,
        key_id: &str,
        receipts: &[(u8, Vec<u8>)],
    ) -> Result<(bool, Vec<u8>), NodeError> {
        key_id_field(key_id)?;
        // The session (if still running here) ends now; the store refuses its vote if it raced.
        self.cancel(&session_id);
        let binding = abort_binding(key_id);
        let proven = receipts.iter().any(|(node, signed)| {
            *node != self.me.get()
                && PartyId::new(*node)
                    .ok()
                    .and_then(|p| self.member(p))
                    .is_some_and(|identity| {
                        let context = context(
                            &self.cluster_id,
                            &session_id,
                            ABORT_RECEIPT_ROUND,
                            *node,
                            &binding,
                        );
                        open_broadcast(&identity, &context, signed)
                            .is_ok_and(|p| p == ABORT_RECEIPT)
                    })
        });
        let outcome = self
            .store
            .abort_refresh(key_id, session_id.as_bytes(), proven)?;
        let deleted = outcome == crate::store::RefreshAborted::Deleted;
        tracing::info!(session_id = %session_id, key_id, deleted, "refresh aborted");
        let receipt = sign_broadcast(
            &self.secret,
            &context(
                &self.cluster_id,
                &session_id,
                ABORT_RECEIPT_ROUND,
                self.me.get(),
                &binding,
            ),
            ABORT_RECEIPT,
        );
        Ok((deleted, receipt))
    }
}

/// What a refresh abort receipt is bound to besides the session: the key id.
fn abort_binding(key_id: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"shardsign-refresh-abort-v1\0");
    hasher.update(key_id.as_bytes());
    hasher.finalize().into()
}

/// One engine step of a refresh; once the engine has its output, this node's signed
/// confirmation goes out as the node-level envelope.
pub(super) fn step(
    state: &mut RefreshState,
    context: &crate::envelope::SessionContext<'_>,
    message: Message,
) -> Result<StepOutput, NodeError> {
    if state.finished.is_some() {
        return Err(NodeError::Security(
            "engine message after the refresh finished".into(),
        ));
    }
    let step = state.engine.handle(message).map_err(engine_error)?;
    let mut confirm = None;
    if let Some(output) = step.output {
        let payload = confirmation(&state.key_id, state.from_epoch, &state.broadcasts, &output);
        confirm = Some(context.sign_broadcast(CONFIRM_ROUND, &payload));
        state.finished = Some((output, payload));
    }
    Ok((step.outgoing, None, confirm))
}

/// The signed confirmation: the transcript of broadcasts and the new public key package.
fn confirmation(
    key_id: &str,
    from_epoch: u64,
    broadcasts: &BTreeMap<(u8, u8), [u8; 32]>,
    output: &RefreshOutput,
) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(b"shardsign-refresh-transcript-v1\0");
    hasher.update(key_id.as_bytes());
    hasher.update([0]);
    hasher.update(from_epoch.to_be_bytes());
    for ((round, from), digest) in broadcasts {
        hasher.update([*round, *from]);
        hasher.update(digest);
    }
    hasher.update(Sha256::digest(output.package.to_bytes()));
    hasher.finalize().to_vec()
}
