//! The node's protocol sessions: the sessions in flight, each driven round by round over sealed
//! envelopes until it yields a result or aborts. What starts a session and what ends one is per
//! protocol: `keygen` (with its node-level confirmation round) and `sign`.

mod keygen;
mod membership;
mod package;
mod refresh;
mod relearn;
mod sign;

pub use keygen::{MAX_CHAIN_IDS, keygen_binding};
pub use package::{Agreement, MAX_SIGNED_SHARE_LEN};
pub use relearn::MAX_STATE_BYTES;
pub use sign::StartSign;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use shardsign_eth::Limits;
use shardsign_groupcommit::Ticket;
use shardsign_metrics::Metrics;
use shardsign_policy::{PolicyVerifier, VerifiedKeyPolicy};
use shardsign_proto::node::v1::{Envelope, round_reply};
use shardsign_seal::{NodeSecret, PublicIdentity};
use shardsign_tss::{
    Message, PARTIES, PartyId, Protocol, Recipient, SessionId, SignSession, TssError,
};

use crate::bans::Bans;
use crate::clock::{Clock, SystemClock};
use crate::envelope::SessionContext;
use crate::error::NodeError;
use crate::ledger::{Ledger, Reservation};
use crate::policy::PolicyBook;
use crate::store::Store;
use keygen::{CONFIRM_ROUND, KeygenState};
use sign::SIGN_FRAGMENT_ROUND;

/// What a round produced.
#[derive(Debug, Default)]
pub struct RoundOutcome {
    pub envelopes: Vec<Envelope>,
    pub result: Option<round_reply::Result>,
}

enum Engine {
    Keygen(Box<KeygenState>),
    Refresh(Box<refresh::RefreshState>),
    /// The engine and the hash it signs (this node computed it from the request).
    Sign(Box<SignSession>, [u8; 32]),
}

impl Engine {
    /// The transcript of broadcasts, for protocols whose confirmation round covers it.
    fn broadcasts(&mut self) -> Option<&mut BTreeMap<(u8, u8), [u8; 32]>> {
        match self {
            Engine::Keygen(state) => Some(&mut state.broadcasts),
            Engine::Refresh(state) => Some(&mut state.broadcasts),
            Engine::Sign(..) => None,
        }
    }
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
    /// What this session charged the key's ledger (signing under a capped policy): given back
    /// if the session is dropped before its round-3 fragment left, final once it did.
    charge: Option<Reservation>,
}

/// One engine step's products: messages to seal, a final result, and a node-level envelope.
type StepOutput = (Vec<Message>, Option<round_reply::Result>, Option<Envelope>);

/// A signer node's protocol core: the store, the identity and the sessions in flight.
pub struct Node {
    store: Store,
    secret: NodeSecret,
    me: PartyId,
    cluster_id: String,
    /// Who nodes 1, 2 and 3 are: the configured members overridden by applied membership changes.
    membership: std::sync::RwLock<membership::MembershipView>,
    /// The keys a membership change must be signed by (a quorum of them); `None`: no change is
    /// ever accepted.
    membership_keys: Option<shardsign_policy::membership::MembershipKeys>,
    sessions: Mutex<HashMap<[u8; 32], Arc<Mutex<Session>>>>,
    round_timeout: Duration,
    max_sessions: usize,
    limits: Limits,
    policies: PolicyBook,
    metrics: Metrics,
    /// Round deadlines and the reaper read time here, so tests can move it.
    clock: Arc<dyn Clock>,
    bans: Bans,
    /// What this node co-signed per key and chain (key policies' 24 h caps and rates).
    ledger: Arc<Ledger>,
    /// Set while this node, restored from a backup, has not re-learned from its peers.
    relearn: Mutex<Option<relearn::Pending>>,
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
    pub const BANS: &str = "shardsign_node_bans_total";
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.me)
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
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
        let view = membership::MembershipView::load(members, &store)?;
        match view.members.get(&me) {
            Some(identity) if *identity == secret.public() => {}
            Some(_) => {
                return Err(NodeError::config(
                    format!("members[node_id = {me}]"),
                    if view.version > 0 {
                        "does not match this node's identity, and a membership change names another one for this node: this identity was replaced and is never readmitted"
                    } else {
                        "does not match this node's identity (compare the fingerprint printed by `init`)"
                    },
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
        let bans = Bans::load(me, &store)?;
        // A fresh challenge at every start: a peer's report signed for an earlier one is void.
        let relearn = store
            .relearn_pending_since()?
            .map(|since_ms| relearn::Pending {
                challenge: rand::random(),
                since_ms,
            });
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
            membership: std::sync::RwLock::new(view),
            membership_keys: None,
            sessions: Mutex::new(HashMap::new()),
            round_timeout,
            max_sessions,
            limits: Limits::DEFAULT,
            clock: Arc::new(SystemClock),
            bans,
            ledger: Arc::new(Ledger::default()),
            relearn: Mutex::new(relearn),
        })
    }

    /// The same node reading time from `clock` (tests move it instead of sleeping).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The size limits requests to this node are decoded with.
    pub fn limits(&self) -> &Limits {
        &self.limits
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
            members: self.members(),
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
            &[("protocol", session.protocol.name())],
        );
        sessions.insert(session_id.0, Arc::new(Mutex::new(session)));
        Ok(())
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
                // The fragment leaves with this answer: from here the charge is never given back.
                if last_round && let Some(charge) = guard.charge.take() {
                    charge.finalize();
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
                &[("protocol", guard.protocol.name())],
            );
        }
        if let Err(error) = &result {
            self.report_abort(session_id, error);
        } else {
            guard.deadline = self.clock.now() + self.round_timeout;
        }
        drop(guard);
        if finished {
            self.sessions().remove(&session_id.0);
        }
        result.map_err(|error| self.ban_if_cheated(error))
    }

    /// A cheat the engine caught becomes a persisted ban of the culprit's identity; the caller
    /// is told the ban (the same refusal every later session with that peer gets).
    fn ban_if_cheated(&self, error: NodeError) -> NodeError {
        let NodeError::Cheated { culprit, reason } = &error else {
            return error;
        };
        let Some(identity) = self.member(*culprit) else {
            return error;
        };
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        match self
            .bans
            .ban(&self.store, *culprit, &identity, reason, at_ms)
        {
            Ok(refusal) => {
                tracing::error!(target: "security", node = %culprit, reason, "peer caught cheating and banned: no session with it will run on this node again");
                self.metrics
                    .inc(metric::BANS, "Peers banned by this node", &[]);
                refusal
            }
            Err(store_error) => {
                tracing::error!(target: "security", node = %culprit, reason, error = %store_error, "peer caught cheating, but the ban could not be stored");
                error
            }
        }
    }

    /// The peers this node has banned.
    pub fn bans(&self) -> Vec<crate::bans::Ban> {
        self.bans.list()
    }

    fn count_policy_refusal(&self, error: &NodeError) {
        let reason = match error {
            NodeError::PolicyRefused(refusal) | NodeError::RateLimited(refusal) => refusal.rule,
            NodeError::PolicyRejected(_) => "policy_rejected",
            NodeError::PolicyMissing(_) => "policy_missing",
            NodeError::PolicyExpired { .. } => "policy_expired",
            NodeError::StatementPremature { .. } => "statement_premature",
            NodeError::KeyDisabled { .. } => "key_disabled",
            NodeError::ApprovalRefused { .. } => "approval_refused",
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
            NodeError::Security(_) | NodeError::Cheated { .. } => "security",
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
            NodeError::Cheated { .. } => {
                self.store.record_security_event(
                    Some(session_id.as_bytes()),
                    "peer_cheated",
                    &error.to_string(),
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
            Protocol::Dkg | Protocol::Refresh => CONFIRM_ROUND,
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
                let result = match &mut session.engine {
                    Engine::Refresh(state) => self.confirm_refresh(state, from, &payload)?,
                    _ => self.confirm(session, from, &payload)?,
                };
                if let Some(result) = result {
                    outcome.result = Some(result);
                }
                continue;
            }
            if to == Recipient::Broadcast
                && let Some(broadcasts) = session.engine.broadcasts()
            {
                broadcasts.insert((round, from.get()), digest(&payload));
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
            Engine::Sign(engine, hash) => sign::step(engine, *hash, message),
            Engine::Keygen(state) => keygen::step(state, &context, message),
            Engine::Refresh(state) => refresh::step(state, &context, message),
        }
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
        if let Some(broadcasts) = session.engine.broadcasts() {
            for (round, digest) in own_broadcasts {
                broadcasts.insert((round, self.me.get()), digest);
            }
        }
        Ok(envelopes)
    }

    /// Drops a session; its secrets are wiped with it.
    pub fn cancel(&self, session_id: &SessionId) -> bool {
        self.sessions().remove(&session_id.0).is_some()
    }

    /// Drops sessions whose round deadline passed. Returns how many.
    pub fn reap_expired(&self) -> usize {
        let now = self.clock.now();
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

fn engine_error(error: TssError) -> NodeError {
    if let (Some(culprit), TssError::Protocol { reason, .. }) = (error.banned(), &error) {
        return NodeError::Cheated {
            culprit,
            reason: reason.clone(),
        };
    }
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
