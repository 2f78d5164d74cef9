//! Key generation: this node's side of the engine's three rounds, then a node-level fourth
//! round in which each node signs a hash of every broadcast it saw and the resulting public key.
//! A node stores its share (pending) only when both others confirm the same, so a relay that
//! showed different broadcasts to different nodes is caught before anything is stored; the
//! coordinator then commits or aborts the pending share on every node.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use shardsign_proto::node::v1::{Envelope, KeygenResult, round_reply};
use shardsign_request::KeyId;
use shardsign_tss::{DkgOutput, DkgSession, Message, PARTIES, PartyId, Protocol, SessionId};

use shardsign_seal::{Context, open_broadcast, sign_broadcast};

use super::{Engine, Node, Session, StepOutput, engine_error};
use crate::error::NodeError;

/// The round in which key-generation confirmations travel.
pub(super) const CONFIRM_ROUND: u8 = 4;
/// Most chain ids one key may be allowed.
pub const MAX_CHAIN_IDS: usize = 64;

pub(super) struct KeygenState {
    engine: DkgSession,
    session_id: SessionId,
    key_id: String,
    allowed_chain_ids: Vec<u64>,
    /// Digest of every broadcast payload seen, by (round, sender), this node's own included.
    pub(super) broadcasts: BTreeMap<(u8, u8), [u8; 32]>,
    /// The engine's output and this node's confirmation, until both peers confirm.
    finished: Option<(DkgOutput, Vec<u8>)>,
    confirmations: BTreeMap<PartyId, ()>,
}

/// What a key generation's envelopes are bound to: the key id and its (sorted) chain ids.
pub fn keygen_binding(key_id: &str, chains: &[u64]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"shardsign-keygen-binding-v1\0");
    hasher.update(key_id.as_bytes());
    hasher.update([0]);
    for chain in chains {
        hasher.update(chain.to_be_bytes());
    }
    hasher.finalize().into()
}

impl Node {
    /// Starts this node's side of a key generation.
    pub fn start_keygen(
        &self,
        session_id: SessionId,
        key_id: &str,
        allowed_chain_ids: &[u64],
    ) -> Result<Vec<Envelope>, NodeError> {
        self.check_relearned()?;
        let key_id =
            KeyId::parse(key_id).map_err(|e| NodeError::invalid("key_id", e.to_string()))?;
        let key_id = key_id.as_str();
        if allowed_chain_ids.is_empty() || allowed_chain_ids.len() > MAX_CHAIN_IDS {
            return Err(NodeError::invalid(
                "allowed_chain_ids",
                format!("expected 1 to {MAX_CHAIN_IDS} chain ids"),
            ));
        }
        if allowed_chain_ids.contains(&0) {
            return Err(NodeError::invalid(
                "allowed_chain_ids",
                "0 is not a valid chain id",
            ));
        }
        let mut chains = allowed_chain_ids.to_vec();
        chains.sort_unstable();
        chains.dedup();
        // Key generation needs all three nodes: none while this node has banned one of them.
        self.bans.check_all(self.members().iter())?;
        if self.store.key_exists(key_id)? {
            return Err(NodeError::KeyExists(key_id.to_string()));
        }
        self.check_session_id(&session_id)?;
        self.store.claim_session(session_id.as_bytes(), "keygen")?;
        let (engine, messages) = DkgSession::start(self.me, session_id);
        let mut session = Session {
            protocol: Protocol::Dkg,
            binding: keygen_binding(key_id, &chains),
            participants: PARTIES.to_vec(),
            engine: Engine::Keygen(Box::new(KeygenState {
                engine,
                session_id,
                key_id: key_id.to_string(),
                allowed_chain_ids: chains,
                broadcasts: BTreeMap::new(),
                finished: None,
                confirmations: BTreeMap::new(),
            })),
            deadline: self.clock.now() + self.round_timeout,
            claim: None,
            charge: None,
        };
        let envelopes = self.seal_all(session_id, &mut session, messages)?;
        self.insert_session(session_id, session)?;
        tracing::info!(session_id = %session_id, key_id, "key generation started");
        Ok(envelopes)
    }

    /// Takes a peer's key-generation confirmation; stores the share once both agree with ours.
    pub(super) fn confirm(
        &self,
        session: &mut Session,
        from: PartyId,
        payload: &[u8],
    ) -> Result<Option<round_reply::Result>, NodeError> {
        let Engine::Keygen(state) = &mut session.engine else {
            return Err(NodeError::Security(
                "confirmation in a signing session".into(),
            ));
        };
        let Some((output, ours)) = &state.finished else {
            return Err(NodeError::Security(format!(
                "confirmation from node {from} before key generation finished"
            )));
        };
        if payload != ours.as_slice() {
            return Err(NodeError::Security(format!(
                "broadcast divergence: node {from} saw different broadcasts or derived a different key than this node"
            )));
        }
        if state.confirmations.insert(from, ()).is_some() {
            return Err(NodeError::Security(format!(
                "second confirmation from node {from}"
            )));
        }
        if state.confirmations.len() < PARTIES.len() - 1 {
            return Ok(None);
        }
        self.store.put_pending_key(
            &state.key_id,
            state.session_id.as_bytes(),
            &output.share,
            &output.package,
            &state.allowed_chain_ids,
        )?;
        tracing::info!(
            key_id = state.key_id,
            public_key = %output.public_key,
            "key generation complete; share stored, pending finalization"
        );
        Ok(Some(round_reply::Result::Keygen(KeygenResult {
            key_id: state.key_id.clone(),
            public_key: output.public_key.as_bytes().to_vec(),
        })))
    }

    /// Commits the share a key generation left (sealing it once the key is `registered`);
    /// returns whether this node holds it.
    pub fn commit_keygen(
        &self,
        session_id: SessionId,
        key_id: &str,
        registered: bool,
    ) -> Result<bool, NodeError> {
        KeyId::parse(key_id).map_err(|e| NodeError::invalid("key_id", e.to_string()))?;
        let found = self
            .store
            .commit_key(key_id, session_id.as_bytes(), registered)?;
        tracing::info!(session_id = %session_id, key_id, found, registered, "key generation committed");
        Ok(found)
    }

    /// Aborts a key generation: deletes its share under the store's rules (a committed one only
    /// with another node's valid receipt in `receipts`) and returns this node's own receipt.
    pub fn abort_keygen(
        &self,
        session_id: SessionId,
        key_id: &str,
        receipts: &[(u8, Vec<u8>)],
    ) -> Result<(bool, Vec<u8>), NodeError> {
        KeyId::parse(key_id).map_err(|e| NodeError::invalid("key_id", e.to_string()))?;
        let proven = receipts.iter().any(|(node, signed)| {
            *node != self.me.get() && self.verify_abort_receipt(session_id, key_id, *node, signed)
        });
        let outcome = self
            .store
            .abort_key(key_id, session_id.as_bytes(), proven)?;
        let deleted = outcome == crate::store::Aborted::Deleted;
        tracing::info!(session_id = %session_id, key_id, deleted, "key generation aborted");
        let binding = abort_binding(key_id);
        let context = abort_context(&self.cluster_id, &session_id, self.me.get(), &binding);
        Ok((
            deleted,
            sign_broadcast(&self.secret, &context, ABORT_RECEIPT),
        ))
    }

    fn verify_abort_receipt(
        &self,
        session_id: SessionId,
        key_id: &str,
        node: u8,
        signed: &[u8],
    ) -> bool {
        let Some(identity) = PartyId::new(node).ok().and_then(|p| self.member(p)) else {
            return false;
        };
        let binding = abort_binding(key_id);
        let context = abort_context(&self.cluster_id, &session_id, node, &binding);
        open_broadcast(&identity, &context, signed).is_ok_and(|payload| payload == ABORT_RECEIPT)
    }
}

/// The pseudo-round of abort receipts: no engine or confirmation message uses it.
const ABORT_RECEIPT_ROUND: u8 = 250;
const ABORT_RECEIPT: &[u8] = b"keygen aborted";

/// What an abort receipt is bound to besides the session: the key id.
fn abort_binding(key_id: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"shardsign-keygen-abort-v1\0");
    hasher.update(key_id.as_bytes());
    hasher.finalize().into()
}

fn abort_context<'a>(
    cluster_id: &'a str,
    session_id: &'a SessionId,
    from: u8,
    binding: &'a [u8; 32],
) -> Context<'a> {
    Context {
        cluster_id,
        protocol: Protocol::Dkg.to_byte(),
        session_id: session_id.as_bytes(),
        round: ABORT_RECEIPT_ROUND,
        from,
        to: 0,
        binding,
    }
}

/// One engine step of a key generation; once the engine has its output, this node's signed
/// confirmation goes out as the node-level envelope.
pub(super) fn step(
    state: &mut KeygenState,
    context: &crate::envelope::SessionContext<'_>,
    message: Message,
) -> Result<StepOutput, NodeError> {
    if state.finished.is_some() {
        return Err(NodeError::Security(
            "engine message after key generation finished".into(),
        ));
    }
    let step = state.engine.handle(message).map_err(engine_error)?;
    let mut confirm = None;
    if let Some(output) = step.output {
        let payload = confirmation(&state.key_id, &state.broadcasts, &output);
        confirm = Some(context.sign_broadcast(CONFIRM_ROUND, &payload));
        state.finished = Some((output, payload));
    }
    Ok((step.outgoing, None, confirm))
}

/// The signed confirmation: the transcript of broadcasts, the group's public key package and
/// the resulting public key. Every node stores the package only when all three agree on it.
fn confirmation(
    key_id: &str,
    broadcasts: &BTreeMap<(u8, u8), [u8; 32]>,
    output: &DkgOutput,
) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(b"shardsign-keygen-transcript-v2\0");
    hasher.update(key_id.as_bytes());
    for ((round, from), digest) in broadcasts {
        hasher.update([*round, *from]);
        hasher.update(digest);
    }
    hasher.update(Sha256::digest(output.package.to_bytes()));
    let mut payload = hasher.finalize().to_vec();
    payload.extend_from_slice(output.public_key.as_bytes());
    payload
}
