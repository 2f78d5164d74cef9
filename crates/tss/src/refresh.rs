//! Share refresh (DKLs23 §"refresh") as a session state machine: all three parties replace their
//! shares of one key with new shares of the same key. The public key and address never change.
//! Two kinds:
//!
//! - **complete** (the engine's `refresh_complete_phase1..4`, the default): the new shares'
//!   multiplication set-up (the oblivious-transfer state) is made afresh, so an old share and a
//!   new one cannot sign together, and a share rebuilt by repair (which has no such state) can
//!   take part;
//! - **fast** (`refresh_phase1..4`): the OT state is kept and re-keyed from fresh zero-share
//!   seeds, no OT set-up runs; cheaper, but never after a repair (the repaired party has no OT
//!   state and only its own last phase would notice, after the others moved on).
//!
//! Rounds (as in key generation, without the chain-code derivation):
//! 1. direct: my zero-constant polynomial evaluated at your index;
//! 2. broadcast: my proof of knowledge; direct: zero-share commitment;
//! 3. direct: zero-share opening (complete: and multiplication set-up);
//!
//! then every party checks the correction sums to the zero point and corrects its share.

use std::collections::BTreeMap;
use std::sync::Arc;

use dkls23::protocols::PartyIndex;
use dkls23::protocols::dkg::{
    KeepInitMulPhase3to4, KeepInitZeroSharePhase2to3, KeepInitZeroSharePhase3to4, ProofCommitment,
    TransmitInitMulPhase3to4, TransmitInitZeroSharePhase2to4, TransmitInitZeroSharePhase3to4,
};
use dkls23::protocols::refresh::{
    KeepRefreshPhase2to3, KeepRefreshPhase3to4, TransmitRefreshPhase2to4, TransmitRefreshPhase3to4,
};
use k256::{Scalar, Secp256k1};
use zeroize::Zeroize;

use crate::codec::{check_parties, decode_from, impersonation, recipient_of};
use crate::error::TssError;
use crate::ids::{PARTIES, PartyId, SessionId};
use crate::inbox::{Expect, Inbox, Round};
use crate::message::{Message, Protocol, Recipient};
use crate::package::PublicPackage;
use crate::share::KeyShare;
use crate::{Step, codec};

const ROUNDS: &[Expect] = &[
    Expect {
        direct: true,
        broadcast: false,
    },
    Expect {
        direct: true,
        broadcast: true,
    },
    Expect {
        direct: true,
        broadcast: false,
    },
];

type Round3Direct = (
    TransmitInitZeroSharePhase3to4,
    TransmitInitMulPhase3to4<Secp256k1>,
);

/// Which refresh (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshKind {
    Complete,
    Fast,
}

impl RefreshKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshKind::Complete => "complete",
            RefreshKind::Fast => "fast",
        }
    }
}

/// What one party keeps between rounds; every field is secret.
#[derive(Default)]
struct Kept {
    own_fragment: Option<Scalar>,
    correction: Option<Scalar>,
    zero_2: BTreeMap<PartyIndex, KeepInitZeroSharePhase2to3>,
    zero_3: BTreeMap<PartyIndex, KeepInitZeroSharePhase3to4>,
    mul_3: BTreeMap<PartyIndex, KeepInitMulPhase3to4<Secp256k1>>,
    fast_2: BTreeMap<PartyIndex, KeepRefreshPhase2to3>,
    fast_3: BTreeMap<PartyIndex, KeepRefreshPhase3to4>,
}

/// The zero-share commitments received in round 2, by kind.
enum Received2 {
    Complete(Vec<TransmitInitZeroSharePhase2to4>),
    Fast(Vec<TransmitRefreshPhase2to4>),
}

/// What a finished refresh leaves with one party: its new share and the group's new package.
#[derive(Debug)]
pub struct RefreshOutput {
    pub share: KeyShare,
    pub package: PublicPackage,
}

/// One party's side of a share refresh.
pub struct RefreshSession {
    kind: RefreshKind,
    share: Arc<KeyShare>,
    package: PublicPackage,
    me: PartyId,
    session_id: SessionId,
    inbox: Inbox,
    kept: Kept,
    proofs: Vec<ProofCommitment<Secp256k1>>,
    received_2: Received2,
    finished: bool,
}

impl std::fmt::Debug for RefreshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshSession")
            .field("kind", &self.kind)
            .field("party", &self.me)
            .field("session_id", &self.session_id)
            .field("round", &self.inbox.round())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl RefreshSession {
    /// Starts a complete refresh of `share` of the key `package` describes (all three parties
    /// take part); returns the session and its round-1 messages.
    pub fn start(
        share: Arc<KeyShare>,
        package: PublicPackage,
        session_id: SessionId,
    ) -> Result<(Self, Vec<Message>), TssError> {
        Self::start_kind(RefreshKind::Complete, share, package, session_id)
    }

    /// [`Self::start`] for either kind.
    pub fn start_kind(
        kind: RefreshKind,
        share: Arc<KeyShare>,
        package: PublicPackage,
        session_id: SessionId,
    ) -> Result<(Self, Vec<Message>), TssError> {
        if !package.matches(&share) {
            return Err(TssError::InvalidShare(
                "the public key package does not match the share being refreshed".into(),
            ));
        }
        if kind == RefreshKind::Fast && share.is_hollow() {
            return Err(TssError::InvalidShare(
                "a share rebuilt by repair has no OT state for the fast refresh: run the complete refresh".into(),
            ));
        }
        let me = share.party_id();
        let mut fragments = match kind {
            RefreshKind::Complete => share.party().refresh_complete_phase1(),
            RefreshKind::Fast => share.party().refresh_phase1(),
        };
        let peers: Vec<PartyId> = PARTIES.into_iter().filter(|p| *p != me).collect();
        let session = RefreshSession {
            kind,
            inbox: Inbox::new(me, session_id, Protocol::Refresh, peers.clone(), ROUNDS),
            kept: Kept {
                own_fragment: Some(fragments[usize::from(me.get() - 1)]),
                ..Kept::default()
            },
            share,
            package,
            me,
            session_id,
            proofs: Vec::new(),
            received_2: match kind {
                RefreshKind::Complete => Received2::Complete(Vec::new()),
                RefreshKind::Fast => Received2::Fast(Vec::new()),
            },
            finished: false,
        };
        let outgoing = peers
            .iter()
            .map(|peer| {
                let payload = codec::encode(&fragments[usize::from(peer.get() - 1)]);
                session.message(1, Recipient::Party(*peer), payload)
            })
            .collect();
        fragments.zeroize();
        Ok((session, outgoing))
    }

    pub fn party(&self) -> PartyId {
        self.me
    }

    /// Feeds one incoming message; the output is the new share. After an error the session is
    /// finished and holds no secrets (the old share stays as it was).
    pub fn handle(&mut self, message: Message) -> Result<Step<RefreshOutput>, TssError> {
        if self.finished {
            return Err(TssError::Finished);
        }
        let result = self.handle_inner(message);
        if result.as_ref().map_or(true, |step| step.output.is_some()) {
            self.finish();
        }
        result
    }

    fn handle_inner(&mut self, message: Message) -> Result<Step<RefreshOutput>, TssError> {
        self.inbox.accept(message)?;
        let mut outgoing = Vec::new();
        while self.inbox.is_complete() {
            let number = self.inbox.round();
            let round = self.inbox.take_round();
            match number {
                1 => outgoing.extend(self.after_round1(&round)?),
                2 => outgoing.extend(self.after_round2(&round)?),
                _ => {
                    let share = self.after_round3(&round)?;
                    return Ok(Step {
                        outgoing,
                        output: Some(share),
                    });
                }
            }
        }
        Ok(Step::send(outgoing))
    }

    fn sid(&self) -> &[u8] {
        self.session_id.as_bytes()
    }

    fn after_round1(&mut self, round: &Round) -> Result<Vec<Message>, TssError> {
        let mut fragments = Vec::with_capacity(PARTIES.len());
        for party in PARTIES {
            if party == self.me {
                fragments.push(self.kept.own_fragment.take().ok_or(TssError::Finished)?);
            } else {
                fragments.push(decode_from::<Scalar>(party, &round.direct[&party])?);
            }
        }
        let party = self.share.party();
        let (correction, proof, direct) = match self.kind {
            RefreshKind::Complete => {
                let (correction, proof, kept, transmit) =
                    party.refresh_complete_phase2(self.sid(), &fragments);
                self.kept.zero_2 = kept;
                let direct = transmit
                    .iter()
                    .map(|t| Ok((recipient_of(&t.parties)?, codec::encode(t))))
                    .collect::<Result<Vec<_>, TssError>>()?;
                (correction, proof, direct)
            }
            RefreshKind::Fast => {
                let (correction, proof, kept, transmit) =
                    party.refresh_phase2(self.sid(), &fragments);
                self.kept.fast_2 = kept;
                let direct = transmit
                    .iter()
                    .map(|t| Ok((recipient_of(&t.parties)?, codec::encode(t))))
                    .collect::<Result<Vec<_>, TssError>>()?;
                (correction, proof, direct)
            }
        };
        fragments.zeroize();
        self.kept.correction = Some(correction);
        let mut outgoing = vec![self.message(2, Recipient::Broadcast, codec::encode(&proof))];
        self.proofs.push(proof);
        for (to, payload) in direct {
            outgoing.push(self.message(2, Recipient::Party(to), payload));
        }
        Ok(outgoing)
    }

    fn after_round2(&mut self, round: &Round) -> Result<Vec<Message>, TssError> {
        for (&from, payload) in &round.broadcast {
            let proof: ProofCommitment<Secp256k1> = decode_from(from, payload)?;
            if proof.index != from.to_dkls() {
                return Err(impersonation(from));
            }
            self.proofs.push(proof);
        }
        for (&from, payload) in &round.direct {
            match &mut self.received_2 {
                Received2::Complete(received) => {
                    let zero: TransmitInitZeroSharePhase2to4 = decode_from(from, payload)?;
                    check_parties(self.me, from, &zero.parties)?;
                    received.push(zero);
                }
                Received2::Fast(received) => {
                    let zero: TransmitRefreshPhase2to4 = decode_from(from, payload)?;
                    check_parties(self.me, from, &zero.parties)?;
                    received.push(zero);
                }
            }
        }
        if self.kind == RefreshKind::Fast {
            let (kept, transmit) = self.share.party().refresh_phase3(&self.kept.fast_2);
            self.kept.fast_3 = kept;
            return transmit
                .iter()
                .map(|t| {
                    let to = recipient_of(&t.parties)?;
                    Ok(self.message(3, Recipient::Party(to), codec::encode(t)))
                })
                .collect();
        }
        let (zero_kept, zero_transmit, mul_kept, mul_transmit) = self
            .share
            .party()
            .refresh_complete_phase3(self.sid(), &self.kept.zero_2);
        self.kept.zero_3 = zero_kept;
        self.kept.mul_3 = mul_kept;
        let mut outgoing = Vec::new();
        for zero in zero_transmit {
            let to = recipient_of(&zero.parties)?;
            let mul = mul_transmit
                .iter()
                .find(|mul| mul.parties.receiver == zero.parties.receiver)
                .ok_or_else(|| TssError::Protocol {
                    culprit: None,
                    ban: false,
                    reason: "engine produced no multiplication set-up for a peer".into(),
                })?;
            outgoing.push(self.message(3, Recipient::Party(to), codec::encode(&(&zero, mul))));
        }
        Ok(outgoing)
    }

    fn after_round3(&mut self, round: &Round) -> Result<RefreshOutput, TssError> {
        self.proofs.sort_by_key(|proof| proof.index);
        let correction = self.kept.correction.ok_or(TssError::Finished)?;
        let party = match &self.received_2 {
            Received2::Complete(zero_2) => {
                let mut zero_3 = Vec::new();
                let mut mul_3 = Vec::new();
                for (&from, payload) in &round.direct {
                    let (zero, mul): Round3Direct = decode_from(from, payload)?;
                    check_parties(self.me, from, &zero.parties)?;
                    check_parties(self.me, from, &mul.parties)?;
                    zero_3.push(zero);
                    mul_3.push(mul);
                }
                self.share.party().refresh_complete_phase4(
                    self.sid(),
                    &correction,
                    &self.proofs,
                    &self.kept.zero_3,
                    zero_2,
                    &zero_3,
                    &self.kept.mul_3,
                    &mul_3,
                )
            }
            Received2::Fast(zero_2) => {
                let mut zero_3 = Vec::new();
                for (&from, payload) in &round.direct {
                    let zero: TransmitRefreshPhase3to4 = decode_from(from, payload)?;
                    check_parties(self.me, from, &zero.parties)?;
                    zero_3.push(zero);
                }
                self.share.party().refresh_phase4(
                    self.sid(),
                    &correction,
                    &self.proofs,
                    &self.kept.fast_3,
                    zero_2,
                    &zero_3,
                )
            }
        }
        .map_err(TssError::from_abort)?;
        let share = KeyShare::from_party(party)?;
        let package = self
            .package
            .inner()
            .refresh(self.sid(), &self.proofs)
            .map_err(|reason| TssError::Protocol {
                culprit: None,
                ban: false,
                reason: format!("the public key package does not refresh: {reason:?}"),
            })?;
        let package = PublicPackage::from_engine(package)?;
        // The engine checks the correction sums to zero; these are the belt to its braces.
        if share.public_key() != self.share.public_key() || !package.matches(&share) {
            return Err(TssError::Protocol {
                culprit: None,
                ban: false,
                reason: "the refreshed share does not match the key or its package".into(),
            });
        }
        Ok(RefreshOutput { share, package })
    }

    fn message(&self, round: u8, to: Recipient, payload: Vec<u8>) -> Message {
        Message {
            session_id: self.session_id,
            protocol: Protocol::Refresh,
            round,
            from: self.me,
            to,
            payload,
        }
    }

    /// Drops every secret the session still holds.
    fn finish(&mut self) {
        self.finished = true;
        if let Some(fragment) = self.kept.own_fragment.as_mut() {
            fragment.zeroize();
        }
        if let Some(correction) = self.kept.correction.as_mut() {
            correction.zeroize();
        }
        self.kept = Kept::default();
        self.proofs.clear();
        self.received_2 = Received2::Complete(Vec::new());
    }
}
