//! The node's protocol sessions: key generation and signing driven round by round over sealed
//! envelopes. Requests are checked before any protocol work: a signing request carries the full
//! transaction (or EIP-191 message), from which the node computes the hash it signs itself.
//!
//! Key generation adds a confirmation round after the engine's three: each node signs a hash of
//! every broadcast it saw and the resulting public key, and stores its share only when both other
//! nodes confirm the same. A relay that showed different broadcasts to different nodes is caught
//! there, before anything is stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use shardsign_eth::{Limits, MAX_PERSONAL_MESSAGE_LEN, UnsignedTransaction, personal_sign_hash};
use shardsign_groupcommit::Ticket;
use shardsign_proto::node::v1::{Envelope, KeygenResult, SignatureResult, round_reply};
use shardsign_seal::{NodeSecret, PublicIdentity};
use shardsign_tss::{
    DkgOutput, DkgSession, Message, PARTIES, PartyId, Protocol, Recipient, SessionId, SignSession,
    TssError,
};

use crate::envelope::SessionContext;
use crate::error::NodeError;
use crate::policy::PolicyBook;
use crate::store::Store;
use shardsign_metrics::Metrics;
use shardsign_policy::{PolicyVerifier, Rules, VerifiedKeyPolicy};

/// The round in which key-generation confirmations travel.
const CONFIRM_ROUND: u8 = 4;
/// The signing round that carries the signature fragments: a session's id is durably claimed
/// before this round's messages (or a signature) leave the node.
const SIGN_FRAGMENT_ROUND: u32 = 3;
/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 64;
/// Most chain ids one key may be allowed.
pub const MAX_CHAIN_IDS: usize = 64;

/// What a signing request asks the node to sign.
#[derive(Debug, Clone)]
pub enum SignPayload {
    /// An unsigned transaction's signing payload.
    Transaction(Vec<u8>),
    /// An EIP-191 personal_sign message.
    PersonalMessage(Vec<u8>),
}

/// A checked signing request.
#[derive(Debug, Clone)]
pub struct SignRequest {
    pub session_id: SessionId,
    pub key_id: String,
    pub signers: [PartyId; 2],
    pub payload: SignPayload,
    pub expected_hash: [u8; 32],
    /// The key's operator-signed policy (encoded `SignedKeyPolicy`), forwarded by the coordinator.
    pub signed_policy: Vec<u8>,
}

/// What a round produced.
#[derive(Debug, Default)]
pub struct RoundOutcome {
    pub envelopes: Vec<Envelope>,
    pub result: Option<round_reply::Result>,
}

struct KeygenState {
    engine: DkgSession,
    session_id: SessionId,
    key_id: String,
    allowed_chain_ids: Vec<u64>,
    /// Digest of every broadcast payload seen, by (round, sender), this node's own included.
    broadcasts: BTreeMap<(u8, u8), [u8; 32]>,
    /// The engine's output and this node's confirmation, until both peers confirm.
    finished: Option<(DkgOutput, Vec<u8>)>,
    confirmations: BTreeMap<PartyId, ()>,
}

enum Engine {
    Keygen(Box<KeygenState>),
    /// The engine and the hash it signs (this node computed it from the request).
    Sign(Box<SignSession>, [u8; 32]),
}

struct Session {
    protocol: Protocol,
    binding: [u8; 32],
    participants: Vec<PartyId>,
    engine: Engine,
    deadline: Instant,
    /// The durable claim of the session id, still being written (signing only). The rounds run
    /// meanwhile; nothing of the last round leaves before the claim is on disk (see
    /// [`Node::start_sign`]).
    claim: Option<Ticket<Result<(), NodeError>>>,
}

/// One engine step's products: messages to seal, a final result, and a node-level envelope.
type StepOutput = (Vec<Message>, Option<round_reply::Result>, Option<Envelope>);

/// A signer node's protocol core: the store, the identity and the sessions in flight.
pub struct Node {
    store: Store,
    secret: NodeSecret,
    me: PartyId,
    cluster_id: String,
    members: BTreeMap<PartyId, PublicIdentity>,
    sessions: Mutex<HashMap<[u8; 32], Arc<Mutex<Session>>>>,
    round_timeout: Duration,
    max_sessions: usize,
    limits: Limits,
    policies: PolicyBook,
    metrics: Metrics,
}

/// Metric names (served on `metrics_listen` at `/metrics`).
pub mod metric {
    pub const STARTED: &str = "shardsign_node_sessions_started_total";
    pub const COMPLETED: &str = "shardsign_node_sessions_completed_total";
    pub const ABORTS: &str = "shardsign_node_session_aborts_total";
    pub const POLICY_REFUSALS: &str = "shardsign_node_policy_refusals_total";
    pub const IN_FLIGHT: &str = "shardsign_node_sessions_in_flight";
    pub const KEYS: &str = "shardsign_node_keys";
    pub const RPC_SECONDS: &str = "shardsign_node_rpc_duration_seconds";
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Dkg => "keygen",
        Protocol::Sign => "sign",
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.me)
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

/// Checks a key id: 1..=64 characters of `[A-Za-z0-9_-]`.
pub fn validate_key_id(key_id: &str) -> Result<(), NodeError> {
    let ok = !key_id.is_empty()
        && key_id.len() <= MAX_KEY_ID_LEN
        && key_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(NodeError::invalid(
            "key_id",
            format!("expected 1 to {MAX_KEY_ID_LEN} characters of A-Z a-z 0-9 _ -"),
        ));
    }
    Ok(())
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

fn sign_binding(key_id: &str, signers: &[PartyId; 2], hash: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"shardsign-sign-binding-v1\0");
    hasher.update(key_id.as_bytes());
    hasher.update([0, signers[0].get(), signers[1].get()]);
    hasher.update(hash);
    hasher.finalize().into()
}

fn digest(payload: &[u8]) -> [u8; 32] {
    Sha256::digest(payload).into()
}

impl Node {
    pub fn new(
        store: Store,
        secret: NodeSecret,
        members: BTreeMap<PartyId, PublicIdentity>,
        round_timeout: Duration,
        max_sessions: usize,
        policy_verifier: Option<PolicyVerifier>,
    ) -> Result<Self, NodeError> {
        let me = store.node_id();
        match members.get(&me) {
            Some(identity) if *identity == secret.public() => {}
            Some(_) => {
                return Err(NodeError::config(
                    format!("members[node_id = {me}]"),
                    "does not match this node's identity (compare the fingerprint printed by `init`)",
                ));
            }
            None => {
                return Err(NodeError::config(
                    "members",
                    format!("node {me} is not listed"),
                ));
            }
        }
        let policies = PolicyBook::new(policy_verifier, store.cluster_id());
        let metrics = Metrics::new();
        metrics.describe_counter(metric::ABORTS, "Sessions aborted, by reason");
        metrics.describe_counter(
            metric::POLICY_REFUSALS,
            "Signing requests refused by the key policy, by reason",
        );
        Ok(Node {
            policies,
            metrics,
            cluster_id: store.cluster_id().to_string(),
            store,
            secret,
            me,
            members,
            sessions: Mutex::new(HashMap::new()),
            round_timeout,
            max_sessions,
            limits: Limits::DEFAULT,
        })
    }

    pub fn node_id(&self) -> PartyId {
        self.me
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn identity(&self) -> PublicIdentity {
        self.secret.public()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stores an operator-signed policy if it is valid and newer than the one held.
    pub fn put_policy(&self, signed: &[u8]) -> Result<Arc<VerifiedKeyPolicy>, NodeError> {
        self.policies.put(&self.store, signed)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether this node checks signed key policies.
    pub fn enforces_policies(&self) -> bool {
        self.policies.enforcing()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Arc<Mutex<Session>>>> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn sessions_in_flight(&self) -> usize {
        self.sessions().len()
    }

    fn context<'a>(&'a self, session_id: SessionId, session: &Session) -> SessionContext<'a> {
        SessionContext {
            cluster_id: &self.cluster_id,
            protocol: session.protocol,
            session_id,
            binding: session.binding,
            me: self.me,
            secret: &self.secret,
            members: &self.members,
        }
    }

    fn insert_session(&self, session_id: SessionId, session: Session) -> Result<(), NodeError> {
        let mut sessions = self.sessions();
        if sessions.contains_key(&session_id.0) {
            return Err(NodeError::SessionReused);
        }
        if sessions.len() >= self.max_sessions {
            return Err(NodeError::Busy(self.max_sessions));
        }
        self.metrics.inc(
            metric::STARTED,
            "Sessions started, by protocol",
            &[("protocol", protocol_name(session.protocol))],
        );
        sessions.insert(session_id.0, Arc::new(Mutex::new(session)));
        Ok(())
    }

    /// Starts this node's side of a key generation.
    pub fn start_keygen(
        &self,
        session_id: SessionId,
        key_id: &str,
        allowed_chain_ids: &[u64],
    ) -> Result<Vec<Envelope>, NodeError> {
        validate_key_id(key_id)?;
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
        if self.store.key_exists(key_id)? {
            return Err(NodeError::KeyExists(key_id.to_string()));
        }
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
            deadline: Instant::now() + self.round_timeout,
            claim: None,
        };
        let envelopes = self.seal_all(session_id, &mut session, messages)?;
        self.insert_session(session_id, session)?;
        tracing::info!(session_id = %session_id, key_id, "key generation started");
        Ok(envelopes)
    }

    /// Computes the hash a signing request asks for, from the full payload.
    fn signing_hash(
        &self,
        key_id: &str,
        payload: &SignPayload,
        allowed_chain_ids: &[u64],
        rules: Option<&Rules>,
    ) -> Result<[u8; 32], NodeError> {
        match payload {
            SignPayload::Transaction(bytes) => {
                let tx = UnsignedTransaction::decode_signing_payload(bytes, &self.limits)
                    .map_err(|e| NodeError::invalid("transaction", e.to_string()))?;
                if !allowed_chain_ids.contains(&tx.chain_id()) {
                    return Err(NodeError::ChainNotAllowed {
                        chain_id: tx.chain_id(),
                        key_id: key_id.to_string(),
                    });
                }
                if let Some(rules) = rules {
                    rules.check_transaction(&tx)?;
                }
                Ok(tx.signing_hash())
            }
            SignPayload::PersonalMessage(message) => {
                if message.len() > MAX_PERSONAL_MESSAGE_LEN {
                    return Err(NodeError::invalid(
                        "personal_message",
                        format!(
                            "{} bytes is over the limit of {MAX_PERSONAL_MESSAGE_LEN}",
                            message.len()
                        ),
                    ));
                }
                if let Some(rules) = rules {
                    rules.check_message()?;
                }
                Ok(personal_sign_hash(message))
            }
        }
    }

    /// Starts this node's side of a signing session, after checking the request in full.
    pub fn start_sign(&self, request: SignRequest) -> Result<Vec<Envelope>, NodeError> {
        let checking = Instant::now();
        validate_key_id(&request.key_id)?;
        let [a, b] = request.signers;
        if a == b || (a != self.me && b != self.me) {
            return Err(NodeError::invalid(
                "signers",
                format!(
                    "expected two distinct nodes including this one (node {})",
                    self.me
                ),
            ));
        }
        let policy = self
            .policies
            .for_request(&self.store, &request.key_id, &request.signed_policy)
            .inspect_err(|error| self.count_policy_refusal(error))?;
        let (share, allowed_chain_ids) = self.store.load_key(&request.key_id)?;
        let hash = self
            .signing_hash(
                &request.key_id,
                &request.payload,
                &allowed_chain_ids,
                policy.as_ref().map(|p| &p.rules),
            )
            .inspect_err(|error| self.count_policy_refusal(error))?;
        if hash != request.expected_hash {
            return Err(NodeError::invalid(
                "expected_hash",
                "does not match the hash of the transaction this node decoded; refusing to sign",
            ));
        }
        // A session id is used once, across restarts too. The read refuses a replay at once; the
        // durable claim (an fsync) is written by the store's group-commit writer while the first
        // rounds run, and `deliver` waits for it before any signature fragment leaves. A crash
        // before the claim is on disk therefore leaves only earlier-round messages out, sealed
        // to the peer, which refuses to run the same session again (its own claim).
        if self.store.session_used(request.session_id.as_bytes())? {
            return Err(NodeError::SessionReused);
        }
        let claim = self
            .store
            .claim_session_later(request.session_id.as_bytes(), "sign");
        let starting = Instant::now();
        let checks_time = starting - checking;
        let (engine, messages) =
            SignSession::start(share, request.session_id, request.signers, hash)
                .map_err(|e| NodeError::Aborted(e.to_string()))?;
        let sealing = Instant::now();
        let mut session = Session {
            protocol: Protocol::Sign,
            binding: sign_binding(&request.key_id, &request.signers, &hash),
            participants: request.signers.to_vec(),
            engine: Engine::Sign(Box::new(engine), hash),
            deadline: Instant::now() + self.round_timeout,
            claim: Some(claim),
        };
        let envelopes = self.seal_all(request.session_id, &mut session, messages)?;
        self.insert_session(request.session_id, session)?;
        let micros = |d: Duration| d.as_micros() as u64;
        tracing::debug!(
            stage = "start",
            checks_us = micros(checks_time),
            engine_us = micros(sealing - starting),
            seal_us = micros(sealing.elapsed()),
            "timing"
        );
        Ok(envelopes)
    }

    /// Delivers envelopes to a session. Any failure aborts the session and drops its secrets.
    pub fn deliver(
        &self,
        session_id: SessionId,
        envelopes: Vec<Envelope>,
    ) -> Result<RoundOutcome, NodeError> {
        let session = self
            .sessions()
            .get(&session_id.0)
            .cloned()
            .ok_or(NodeError::UnknownSession)?;
        let mut guard = session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let result = self
            .deliver_locked(session_id, &mut guard, envelopes)
            .and_then(|outcome| {
                let last_round = outcome.result.is_some()
                    || outcome
                        .envelopes
                        .iter()
                        .any(|e| e.round >= SIGN_FRAGMENT_ROUND);
                if last_round && let Some(claim) = guard.claim.take() {
                    claim.wait_blocking()?;
                }
                Ok(outcome)
            });
        let finished = match &result {
            Ok(outcome) => outcome.result.is_some(),
            Err(_) => true,
        };
        if let Ok(RoundOutcome {
            result: Some(_), ..
        }) = &result
        {
            self.metrics.inc(
                metric::COMPLETED,
                "Sessions completed, by protocol",
                &[("protocol", protocol_name(guard.protocol))],
            );
        }
        if let Err(error) = &result {
            self.report_abort(session_id, error);
        } else {
            guard.deadline = Instant::now() + self.round_timeout;
        }
        drop(guard);
        if finished {
            self.sessions().remove(&session_id.0);
        }
        result
    }

    fn count_policy_refusal(&self, error: &NodeError) {
        let reason = match error {
            NodeError::PolicyRefused(refusal) => refusal.rule,
            NodeError::PolicyRejected(_) => "policy_rejected",
            NodeError::PolicyMissing(_) => "policy_missing",
            _ => return,
        };
        self.metrics.inc(
            metric::POLICY_REFUSALS,
            "Signing requests refused by the key policy, by reason",
            &[("reason", reason)],
        );
    }

    fn report_abort(&self, session_id: SessionId, error: &NodeError) {
        let reason = match error {
            NodeError::Security(_) => "security",
            NodeError::Aborted(_) => "protocol",
            NodeError::UnknownSession => "unknown_session",
            NodeError::InvalidArgument { .. } => "invalid",
            _ => "other",
        };
        self.metrics.inc(
            metric::ABORTS,
            "Sessions aborted, by reason",
            &[("reason", reason)],
        );
        match error {
            NodeError::Security(detail) => {
                tracing::warn!(target: "security", session_id = %session_id, detail, "security event: session aborted");
                self.store.record_security_event(
                    Some(session_id.as_bytes()),
                    "envelope_rejected",
                    detail,
                );
            }
            other => tracing::warn!(session_id = %session_id, error = %other, "session aborted"),
        }
    }

    fn deliver_locked(
        &self,
        session_id: SessionId,
        session: &mut Session,
        envelopes: Vec<Envelope>,
    ) -> Result<RoundOutcome, NodeError> {
        if envelopes.len() > 2 * PARTIES.len() {
            return Err(NodeError::Security(format!(
                "{} envelopes in one delivery",
                envelopes.len()
            )));
        }
        let max_round = match session.protocol {
            Protocol::Dkg => CONFIRM_ROUND,
            Protocol::Sign => 3,
        };
        let mut outcome = RoundOutcome::default();
        // Per-stage timings for the profile (debug level; `shardsign-bench --keep-logs`).
        let (mut open_time, mut engine_time, mut seal_time) = Default::default();
        for envelope in envelopes {
            let opening = Instant::now();
            let (from, to, round, payload) = self
                .context(session_id, session)
                .open(&envelope, max_round)?;
            open_time += opening.elapsed();
            if !session.participants.contains(&from) {
                return Err(NodeError::Security(format!(
                    "node {from} is not a participant of this session"
                )));
            }
            if round == CONFIRM_ROUND {
                if let Some(result) = self.confirm(session, from, &payload)? {
                    outcome.result = Some(result);
                }
                continue;
            }
            if let (Engine::Keygen(state), Recipient::Broadcast) = (&mut session.engine, to) {
                state
                    .broadcasts
                    .insert((round, from.get()), digest(&payload));
            }
            let message = Message {
                session_id,
                protocol: session.protocol,
                round,
                from,
                to,
                payload,
            };
            let stepping = Instant::now();
            let produced = self.step(session, message)?;
            let sealing = Instant::now();
            engine_time += sealing - stepping;
            outcome
                .envelopes
                .extend(self.seal_all(session_id, session, produced.0)?);
            seal_time += sealing.elapsed();
            if let Some(result) = produced.1 {
                outcome.result = Some(result);
            }
            if let Some(envelope) = produced.2 {
                outcome.envelopes.push(envelope);
            }
        }
        let micros = |d: Duration| d.as_micros() as u64;
        tracing::debug!(
            stage = "round",
            open_us = micros(open_time),
            engine_us = micros(engine_time),
            seal_us = micros(seal_time),
            "timing"
        );
        Ok(outcome)
    }

    /// Runs one engine step: returns messages to seal, a final result, and a node-level envelope.
    fn step(&self, session: &mut Session, message: Message) -> Result<StepOutput, NodeError> {
        let context = self.context(message.session_id, session);
        match &mut session.engine {
            Engine::Sign(engine, hash) => {
                let step = engine.handle(message).map_err(engine_error)?;
                let hash = *hash;
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
            Engine::Keygen(state) => {
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
        }
    }

    /// Takes a peer's key-generation confirmation; stores the share once both agree with ours.
    fn confirm(
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

    fn seal_all(
        &self,
        session_id: SessionId,
        session: &mut Session,
        messages: Vec<Message>,
    ) -> Result<Vec<Envelope>, NodeError> {
        let context = self.context(session_id, session);
        let mut envelopes = Vec::with_capacity(messages.len());
        let mut own_broadcasts = Vec::new();
        for message in &messages {
            if message.to == Recipient::Broadcast {
                own_broadcasts.push((message.round, digest(&message.payload)));
            }
            envelopes.push(context.seal(message)?);
        }
        if let Engine::Keygen(state) = &mut session.engine {
            for (round, digest) in own_broadcasts {
                state.broadcasts.insert((round, self.me.get()), digest);
            }
        }
        Ok(envelopes)
    }

    /// Commits or aborts the pending share a key generation left.
    pub fn finalize_keygen(
        &self,
        session_id: SessionId,
        key_id: &str,
        commit: bool,
    ) -> Result<bool, NodeError> {
        validate_key_id(key_id)?;
        let found = self
            .store
            .finalize_key(key_id, session_id.as_bytes(), commit)?;
        if found {
            tracing::info!(session_id = %session_id, key_id, commit, "key generation finalized");
        }
        Ok(found)
    }

    /// Drops a session; its secrets are wiped with it.
    pub fn cancel(&self, session_id: &SessionId) -> bool {
        self.sessions().remove(&session_id.0).is_some()
    }

    /// Drops sessions whose round deadline passed. Returns how many.
    pub fn reap_expired(&self) -> usize {
        let now = Instant::now();
        let mut sessions = self.sessions();
        let before = sessions.len();
        sessions.retain(|id, session| {
            // A session being worked on is locked and not expired by definition.
            let Ok(session) = session.try_lock() else {
                return true;
            };
            let keep = session.deadline > now;
            if !keep {
                tracing::warn!(session_id = %SessionId(*id), "session timed out and was dropped");
                self.metrics.inc(
                    metric::ABORTS,
                    "Sessions aborted, by reason",
                    &[("reason", "timeout")],
                );
            }
            keep
        });
        before - sessions.len()
    }
}

/// The signed confirmation: the transcript of broadcasts and the resulting public key.
fn confirmation(
    key_id: &str,
    broadcasts: &BTreeMap<(u8, u8), [u8; 32]>,
    output: &DkgOutput,
) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(b"shardsign-keygen-transcript-v1\0");
    hasher.update(key_id.as_bytes());
    for ((round, from), digest) in broadcasts {
        hasher.update([*round, *from]);
        hasher.update(digest);
    }
    let mut payload = hasher.finalize().to_vec();
    payload.extend_from_slice(output.public_key.as_bytes());
    payload
}

fn engine_error(error: TssError) -> NodeError {
    match error {
        TssError::Protocol { ban: true, .. }
        | TssError::MalformedPayload { .. }
        | TssError::WrongSession
        | TssError::WrongRecipient { .. }
        | TssError::Reflected
        | TssError::NotParticipant { .. } => NodeError::Security(error.to_string()),
        other => NodeError::Aborted(other.to_string()),
    }
}
