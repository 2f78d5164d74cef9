//! Signing: a request is checked in full before any protocol work. It carries the whole payload
//! (a transaction or a message, never a bare hash); the node checks the key allows the chain and
//! the signed key policy allows the payload, computes the hash itself and refuses if the
//! coordinator's differs. Then two nodes run the engine's rounds.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use shardsign_policy::approval::ApprovalRequest;
use shardsign_policy::{Rules, VerifiedKeyPolicy};
use shardsign_proto::node::v1::{Envelope, SignatureResult, round_reply};
use shardsign_request::{SignRequest, check_session_id_time, session_id_time_ms, unix_now_ms};
use shardsign_tss::{Message, PartyId, Protocol, SessionId, SignSession};

use super::{Engine, Node, Session, StepOutput, engine_error};
use crate::error::NodeError;
use crate::ledger::Reservation;
use crate::store::Charge;

/// The signing round that carries the signature fragments: a session's id is durably claimed
/// before this round's messages (or a signature) leave the node.
pub(super) const SIGN_FRAGMENT_ROUND: u32 = 3;

/// A signing session as the node protocol asks for it, its fields already parsed.
#[derive(Debug, Clone)]
pub struct StartSign {
    pub session_id: SessionId,
    pub signers: [PartyId; 2],
    pub request: SignRequest,
    pub expected_hash: [u8; 32],
    /// The key's operator-signed policy (encoded `SignedStatement`), forwarded by the coordinator.
    pub signed_policy: Vec<u8>,
    /// The key's epoch the coordinator expects this node's share to be at.
    pub epoch: u64,
    /// The caller's request id (bound into an approval's request hash).
    pub request_id: String,
    /// A quorum's APPROVAL statement, when the policy parks this request (encoded
    /// `SignedStatement`; empty otherwise).
    pub approval: Vec<u8>,
}

/// What a signing session's envelopes are bound to: key, signers and the hash being signed, so
/// that nodes given different requests under one session id cannot talk.
fn sign_binding(key_id: &str, epoch: u64, signers: &[PartyId; 2], hash: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"shardsign-sign-binding-v1\0");
    hasher.update(key_id.as_bytes());
    hasher.update([0, signers[0].get(), signers[1].get()]);
    hasher.update(hash);
    // Epoch 0 keeps the binding of sessions from before epochs.
    if epoch > 0 {
        hasher.update(epoch.to_be_bytes());
    }
    hasher.finalize().into()
}

impl Node {
    /// The hash a request asks for, after the key's chain and policy checks.
    fn checked_hash(
        &self,
        request: &SignRequest,
        allowed_chain_ids: &[u64],
        rules: Option<&Rules>,
    ) -> Result<[u8; 32], NodeError> {
        if let Some(chain_id) = request.payload.chain_id()
            && !allowed_chain_ids.contains(&chain_id)
        {
            return Err(NodeError::ChainNotAllowed {
                chain_id,
                key_id: request.key_id.to_string(),
            });
        }
        if let Some(rules) = rules {
            rules.check(&request.payload)?;
        }
        Ok(request.signing_hash())
    }

    /// A request the policy parks for approval needs a quorum of its approvers' signatures over
    /// this very request (key, chain, payload, request id), checked here, not trusted from the
    /// coordinator. Nothing else is relaxed: the rules and the ledger were checked already.
    fn check_approval(
        &self,
        request: &SignRequest,
        rules: &Rules,
        request_id: &str,
        approval: &[u8],
    ) -> Result<(), NodeError> {
        let Some(needed) = rules.approval_needed(&request.payload) else {
            return Ok(());
        };
        let refused = |problem: String| NodeError::ApprovalRefused {
            rule: needed.rule,
            detail: needed.detail.clone(),
            problem,
        };
        let approvers = rules
            .approvers
            .as_ref()
            .ok_or_else(|| refused("the policy lists no approvers".into()))?;
        let expected =
            ApprovalRequest::new(request.key_id.as_str(), &request.payload, request_id).hash();
        approvers
            .verify(&self.cluster_id, approval, &expected, unix_ms() / 1000)
            .map_err(|error| refused(error.to_string()))
    }

    /// Two distinct nodes including this one, and the other not banned here.
    fn check_signers(&self, [a, b]: [PartyId; 2]) -> Result<(), NodeError> {
        if a == b || (a != self.me && b != self.me) {
            return Err(NodeError::invalid(
                "signers",
                format!(
                    "expected two distinct nodes including this one (node {})",
                    self.me
                ),
            ));
        }
        let peer = if a == self.me { b } else { a };
        match self.member(peer) {
            Some(identity) => self.bans.check(peer, &identity),
            None => Ok(()),
        }
    }

    /// Charges the key's ledger for this session when its policy caps value or rate.
    fn charge(
        &self,
        session_id: SessionId,
        request: &SignRequest,
        policy: Option<&VerifiedKeyPolicy>,
    ) -> Result<(Option<Reservation>, Option<Charge>), NodeError> {
        let Some(policy) = policy else {
            return Ok((None, None));
        };
        let reserved = self
            .ledger
            .reserve(
                &self.store,
                request.key_id.as_str(),
                *session_id.as_bytes(),
                &request.payload,
                &policy.rules,
                unix_ms(),
            )
            .inspect_err(|error| self.count_policy_refusal(error))?;
        Ok(reserved.unzip())
    }

    /// A fresh session id: recent (so the store may forget older claims) and made after this
    /// node's store was last restored from a backup.
    pub(super) fn check_session_id(&self, session_id: &SessionId) -> Result<(), NodeError> {
        check_session_id_time(session_id.as_bytes(), unix_now_ms())?;
        let made_ms = session_id_time_ms(session_id.as_bytes())?;
        let floor_ms = self.store.session_floor_ms();
        if made_ms < floor_ms {
            return Err(NodeError::SessionBeforeRestore { made_ms, floor_ms });
        }
        Ok(())
    }

    /// Starts this node's side of a signing session, after checking the request in full.
    pub fn start_sign(&self, start: StartSign) -> Result<Vec<Envelope>, NodeError> {
        self.check_relearned()?;
        let checking = Instant::now();
        let StartSign {
            session_id,
            signers,
            request,
            expected_hash,
            signed_policy,
            epoch,
            request_id,
            approval,
        } = start;
        let key_id = request.key_id.as_str();
        self.check_signers(signers)?;
        let policy = self
            .policies
            .for_request(&self.store, key_id, &signed_policy)
            .inspect_err(|error| self.count_policy_refusal(error))?;
        let loaded = self.store.load_key_at(key_id, epoch)?;
        let hash = self
            .checked_hash(
                &request,
                &loaded.allowed_chain_ids,
                policy.as_ref().map(|p| &p.rules),
            )
            .inspect_err(|error| self.count_policy_refusal(error))?;
        if hash != expected_hash {
            return Err(NodeError::invalid(
                "expected_hash",
                "does not match the hash of the transaction this node decoded; refusing to sign",
            ));
        }
        if let Some(policy) = policy.as_deref() {
            self.check_approval(&request, &policy.rules, &request_id, &approval)
                .inspect_err(|error| self.count_policy_refusal(error))?;
        }
        // A session id is used once, across restarts too. The read refuses a replay at once; the
        // durable claim (an fsync) is written by the store's group-commit writer while the first
        // rounds run, and `deliver` waits for it before any signature fragment leaves. A crash
        // before the claim is on disk therefore leaves only earlier-round messages out, sealed
        // to the peer, which refuses to run the same session again (its own claim).
        // An id older than the window is refused, so the store may forget ids claimed before it.
        self.check_session_id(&session_id)?;
        if self.store.session_used(session_id.as_bytes())? {
            return Err(NodeError::SessionReused);
        }
        let (charge, row) = self.charge(session_id, &request, policy.as_deref())?;
        let claim = self.store.claim_session_later(
            session_id.as_bytes(),
            "sign",
            row,
            self.ledger.take_given_back(),
        );
        let starting = Instant::now();
        let (engine, messages) = SignSession::start(loaded.share, session_id, signers, hash)
            .map_err(|e| NodeError::Aborted(e.to_string()))?;
        let sealing = Instant::now();
        let mut session = Session {
            protocol: Protocol::Sign,
            binding: sign_binding(key_id, epoch, &signers, &hash),
            participants: signers.to_vec(),
            engine: Engine::Sign(Box::new(engine), hash),
            deadline: self.clock.now() + self.round_timeout,
            claim: Some(claim),
            charge,
        };
        let envelopes = self.seal_all(session_id, &mut session, messages)?;
        self.insert_session(session_id, session)?;
        let micros = |d: Duration| d.as_micros() as u64;
        tracing::debug!(
            stage = "start",
            checks_us = micros(starting - checking),
            engine_us = micros(sealing - starting),
            seal_us = micros(sealing.elapsed()),
            "timing"
        );
        Ok(envelopes)
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One engine step of a signing session; the last one yields the signature.
pub(super) fn step(
    engine: &mut SignSession,
    hash: [u8; 32],
    message: Message,
) -> Result<StepOutput, NodeError> {
    let step = engine.handle(message).map_err(engine_error)?;
    let result = step.output.map(|signature| {
        round_reply::Result::Signature(SignatureResult {
            r: signature.r.to_vec(),
            s: signature.s.to_vec(),
            recovery_id: u32::from(signature.recovery_id),
            signed_hash: hash.to_vec(),
        })
    });
    Ok((step.outgoing, result, None))
}
