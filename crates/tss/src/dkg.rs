//! 2-of-3 distributed key generation as a session state machine.
//!
//! Rounds (every message addressed to a party is secret to it; broadcasts are public):
//! 1. direct: my polynomial evaluated at your index;
//! 2. broadcast: my proof of knowledge and chain-code commitment; direct: zero-share commitment;
//! 3. broadcast: chain-code opening; direct: zero-share opening and multiplication set-up;
//!
//! then every party derives its share and the group key locally.

use std::collections::BTreeMap;

use dkls23::protocols::dkg::{
    BroadcastDerivationPhase2to4, BroadcastDerivationPhase3to4, ProofCommitment,
    TransmitInitMulPhase3to4, TransmitInitZeroSharePhase2to4, TransmitInitZeroSharePhase3to4,
};
use dkls23::protocols::{Parameters, PartyIndex};
use k256::{Scalar, Secp256k1};
use zeroize::Zeroize;

use crate::codec::{check_parties, decode_from, impersonation, recipient_of};
use crate::error::TssError;
use crate::ids::{PARTIES, PartyId, SessionId, THRESHOLD};
use crate::inbox::{Expect, Inbox, Round};
use crate::message::{Message, Protocol, Recipient};
use crate::package::PublicPackage;
use crate::share::{KeyShare, PublicKey};
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
        broadcast: true,
    },
];

type Round2Broadcast = (ProofCommitment<Secp256k1>, BroadcastDerivationPhase2to4);
type Round3Direct = (
    TransmitInitZeroSharePhase3to4,
    TransmitInitMulPhase3to4<Secp256k1>,
);

/// What a finished key generation leaves with one party.
#[derive(Debug)]
pub struct DkgOutput {
    pub share: KeyShare,
    pub public_key: PublicKey,
    /// The group's public key package (every party's verifying share), checked.
    pub package: PublicPackage,
}

/// One party's side of a key generation.
pub struct DkgSession {
    me: PartyId,
    session_id: SessionId,
    inbox: Inbox,
    engine: Option<dkls23::DkgSession<Secp256k1>>,
    own_fragment: Option<Scalar>,
    proofs: Vec<ProofCommitment<Secp256k1>>,
    chain_code_2: BTreeMap<PartyIndex, BroadcastDerivationPhase2to4>,
    chain_code_3: BTreeMap<PartyIndex, BroadcastDerivationPhase3to4>,
    zero_2: Vec<TransmitInitZeroSharePhase2to4>,
    finished: bool,
}

impl std::fmt::Debug for DkgSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkgSession")
            .field("party", &self.me)
            .field("session_id", &self.session_id)
            .field("round", &self.inbox.round())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl DkgSession {
    /// Starts key generation as party `me`; returns the session and its round-1 messages.
    pub fn start(me: PartyId, session_id: SessionId) -> (Self, Vec<Message>) {
        let parameters = Parameters {
            threshold: THRESHOLD,
            share_count: PARTIES.len() as u8,
        };
        let engine = dkls23::DkgSession::<Secp256k1>::new(
            parameters,
            me.to_dkls(),
            session_id.as_bytes().to_vec(),
        );
        let mut fragments = engine.phase1();
        let peers: Vec<PartyId> = PARTIES.into_iter().filter(|p| *p != me).collect();
        let session = DkgSession {
            me,
            session_id,
            inbox: Inbox::new(me, session_id, Protocol::Dkg, peers.clone(), ROUNDS),
            engine: Some(engine),
            own_fragment: Some(fragments[usize::from(me.get() - 1)]),
            proofs: Vec::new(),
            chain_code_2: BTreeMap::new(),
            chain_code_3: BTreeMap::new(),
            zero_2: Vec::new(),
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
        (session, outgoing)
    }

    pub fn party(&self) -> PartyId {
        self.me
    }

    /// Feeds one incoming message. After an error the session is finished and holds no secrets.
    pub fn handle(&mut self, message: Message) -> Result<Step<DkgOutput>, TssError> {
        if self.finished {
            return Err(TssError::Finished);
        }
        let result = self.handle_inner(message);
        if result.as_ref().map_or(true, |step| step.output.is_some()) {
            self.finish();
        }
        result
    }

    fn handle_inner(&mut self, message: Message) -> Result<Step<DkgOutput>, TssError> {
        self.inbox.accept(message)?;
        let mut outgoing = Vec::new();
        while self.inbox.is_complete() {
            let number = self.inbox.round();
            let round = self.inbox.take_round();
            match number {
                1 => outgoing.extend(self.after_round1(&round)?),
                2 => outgoing.extend(self.after_round2(&round)?),
                _ => {
                    let output = self.after_round3(&round)?;
                    return Ok(Step {
                        outgoing,
                        output: Some(output),
                    });
                }
            }
        }
        Ok(Step::send(outgoing))
    }

    fn after_round1(&mut self, round: &Round) -> Result<Vec<Message>, TssError> {
        let mut fragments = Vec::with_capacity(PARTIES.len());
        for party in PARTIES {
            if party == self.me {
                fragments.push(self.own_fragment.take().ok_or(TssError::Finished)?);
            } else {
                fragments.push(decode_from::<Scalar>(party, &round.direct[&party])?);
            }
        }
        let engine = self.engine.as_mut().ok_or(TssError::Finished)?;
        let result = engine.phase2(&fragments);
        fragments.zeroize();
        let (proof, zero_transmit, chain_code) = result.map_err(TssError::from_abort)?;

        let broadcast = codec::encode(&(&proof, &chain_code));
        self.proofs.push(proof);
        self.chain_code_2.insert(self.me.to_dkls(), chain_code);
        let mut outgoing = vec![self.message(2, Recipient::Broadcast, broadcast)];
        for transmit in zero_transmit {
            let to = recipient_of(&transmit.parties)?;
            outgoing.push(self.message(2, Recipient::Party(to), codec::encode(&transmit)));
        }
        Ok(outgoing)
    }

    fn after_round2(&mut self, round: &Round) -> Result<Vec<Message>, TssError> {
        for (&from, payload) in &round.broadcast {
            let (proof, chain_code): Round2Broadcast = decode_from(from, payload)?;
            if proof.index != from.to_dkls() || chain_code.sender_index != from.to_dkls() {
                return Err(impersonation(from));
            }
            self.proofs.push(proof);
            self.chain_code_2.insert(from.to_dkls(), chain_code);
        }
        for (&from, payload) in &round.direct {
            let zero: TransmitInitZeroSharePhase2to4 = decode_from(from, payload)?;
            check_parties(self.me, from, &zero.parties)?;
            self.zero_2.push(zero);
        }
        let engine = self.engine.as_mut().ok_or(TssError::Finished)?;
        let (zero_transmit, mul_transmit, chain_code) =
            engine.phase3().map_err(TssError::from_abort)?;

        let mut outgoing = vec![self.message(3, Recipient::Broadcast, codec::encode(&chain_code))];
        self.chain_code_3.insert(self.me.to_dkls(), chain_code);
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

    fn after_round3(&mut self, round: &Round) -> Result<DkgOutput, TssError> {
        for (&from, payload) in &round.broadcast {
            let chain_code: BroadcastDerivationPhase3to4 = decode_from(from, payload)?;
            if chain_code.sender_index != from.to_dkls() {
                return Err(impersonation(from));
            }
            self.chain_code_3.insert(from.to_dkls(), chain_code);
        }
        let mut zero_3 = Vec::new();
        let mut mul_3 = Vec::new();
        for (&from, payload) in &round.direct {
            let (zero, mul): Round3Direct = decode_from(from, payload)?;
            check_parties(self.me, from, &zero.parties)?;
            check_parties(self.me, from, &mul.parties)?;
            zero_3.push(zero);
            mul_3.push(mul);
        }
        self.proofs.sort_by_key(|proof| proof.index);
        let engine = self.engine.take().ok_or(TssError::Finished)?;
        let (party, package) = engine
            .phase4(
                &self.proofs,
                &self.zero_2,
                &zero_3,
                &mul_3,
                &self.chain_code_2,
                &self.chain_code_3,
                |_| String::new(),
            )
            .map_err(TssError::from_abort)?;
        let share = KeyShare::from_party(party)?;
        let package = PublicPackage::from_engine(package)?;
        if !package.matches(&share) {
            return Err(TssError::Protocol {
                culprit: None,
                ban: false,
                reason: "the public key package does not match this party's share".into(),
            });
        }
        Ok(DkgOutput {
            public_key: share.public_key(),
            share,
            package,
        })
    }

    fn message(&self, round: u8, to: Recipient, payload: Vec<u8>) -> Message {
        Message {
            session_id: self.session_id,
            protocol: Protocol::Dkg,
            round,
            from: self.me,
            to,
            payload,
        }
    }

    /// Drops every secret the session still holds.
    fn finish(&mut self) {
        self.finished = true;
        self.engine = None;
        if let Some(fragment) = self.own_fragment.as_mut() {
            fragment.zeroize();
        }
        self.own_fragment = None;
        self.zero_2.clear();
        self.proofs.clear();
        self.chain_code_2.clear();
        self.chain_code_3.clear();
    }
}
