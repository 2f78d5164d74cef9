//! 2-party signing with a 2-of-3 share as a session state machine.
//!
//! Rounds: 1. direct: commitment and OT-extension data; 2. direct: multiplication results and
//! instance point; 3. broadcast: the two signature fragments. Each party then assembles and
//! verifies the ECDSA signature (low-s) locally.

use std::collections::BTreeMap;
use std::sync::Arc;

use dkls23::protocols::PartyIndex;
use dkls23::protocols::signing::{
    Broadcast3to4, KeepPhase1to2, KeepPhase2to3, SignData, TransmitPhase1to2, TransmitPhase2to3,
    UniqueKeep1to2, UniqueKeep2to3,
};
use k256::Secp256k1;

use crate::codec::{decode_from, impersonation};
use crate::error::TssError;
use crate::ids::{PartyId, SessionId};
use crate::inbox::{Expect, Inbox, Round};
use crate::message::{Message, Protocol, Recipient};
use crate::share::KeyShare;
use crate::{Step, codec};

const ROUNDS: &[Expect] = &[
    Expect {
        direct: true,
        broadcast: false,
    },
    Expect {
        direct: true,
        broadcast: false,
    },
    Expect {
        direct: false,
        broadcast: true,
    },
];

/// An ECDSA signature over the session's hash, with `s` normalised low and its recovery id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    pub r: [u8; 32],
    pub s: [u8; 32],
    /// 0 or 1: the parity of the y coordinate of the nonce point.
    pub recovery_id: u8,
}

enum State {
    AwaitRound1(
        UniqueKeep1to2<Secp256k1>,
        BTreeMap<PartyIndex, KeepPhase1to2<Secp256k1>>,
    ),
    AwaitRound2(
        UniqueKeep2to3<Secp256k1>,
        BTreeMap<PartyIndex, KeepPhase2to3<Secp256k1>>,
    ),
    AwaitRound3 {
        x_coord: String,
        own: Broadcast3to4<Secp256k1>,
    },
    Finished,
}

/// One party's side of a signing session.
pub struct SignSession {
    share: Arc<KeyShare>,
    data: SignData,
    me: PartyId,
    peer: PartyId,
    session_id: SessionId,
    inbox: Inbox,
    state: State,
}

impl std::fmt::Debug for SignSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignSession")
            .field("party", &self.me)
            .field("peer", &self.peer)
            .field("session_id", &self.session_id)
            .field("round", &self.inbox.round())
            .finish_non_exhaustive()
    }
}

impl SignSession {
    /// Starts signing `message_hash` with `share`, together with the other party in `signers`.
    /// Returns the session and its round-1 message.
    pub fn start(
        share: Arc<KeyShare>,
        session_id: SessionId,
        signers: [PartyId; 2],
        message_hash: [u8; 32],
    ) -> Result<(Self, Vec<Message>), TssError> {
        if share.is_hollow() {
            return Err(TssError::InvalidShare(
                "this share was rebuilt by repair and cannot sign until a complete refresh".into(),
            ));
        }
        let me = share.party_id();
        let peer = match signers {
            [a, b] if a == me && b != me => b,
            [a, b] if b == me && a != me => a,
            _ => return Err(TssError::InvalidSigners),
        };
        let data = SignData {
            sign_id: session_id.as_bytes().to_vec(),
            counterparties: vec![peer.to_dkls()],
            message_hash,
        };
        let (unique, kept, transmit) = share
            .party()
            .sign_phase1(&data)
            .map_err(TssError::from_abort)?;
        #[cfg(feature = "malicious")]
        let transmit = crate::malicious::phase1(transmit);
        let session = SignSession {
            share,
            data,
            me,
            peer,
            session_id,
            inbox: Inbox::new(me, session_id, Protocol::Sign, vec![peer], ROUNDS),
            state: State::AwaitRound1(unique, kept),
        };
        let outgoing = session.direct_messages(1, &transmit, |t| &t.parties)?;
        Ok((session, outgoing))
    }

    pub fn party(&self) -> PartyId {
        self.me
    }

    /// Feeds one incoming message. After an error the session is finished and holds no secrets.
    pub fn handle(&mut self, message: Message) -> Result<Step<Signature>, TssError> {
        if matches!(self.state, State::Finished) {
            return Err(TssError::Finished);
        }
        let result = self.handle_inner(message);
        if result.as_ref().map_or(true, |step| step.output.is_some()) {
            self.state = State::Finished;
        }
        result
    }

    fn handle_inner(&mut self, message: Message) -> Result<Step<Signature>, TssError> {
        self.inbox.accept(message)?;
        let mut outgoing = Vec::new();
        while self.inbox.is_complete() {
            let round = self.inbox.take_round();
            match std::mem::replace(&mut self.state, State::Finished) {
                State::AwaitRound1(unique, kept) => {
                    let received: TransmitPhase1to2 = self.decode_direct(&round)?;
                    self.check_parties(&received.parties)?;
                    let (unique, kept, transmit) = self
                        .share
                        .party()
                        .sign_phase2(&self.data, unique, kept, &[received])
                        .map_err(TssError::from_abort)?;
                    self.state = State::AwaitRound2(unique, kept);
                    outgoing.extend(self.direct_messages(2, &transmit, |t| &t.parties)?);
                }
                State::AwaitRound2(unique, kept) => {
                    let received: TransmitPhase2to3<Secp256k1> = self.decode_direct(&round)?;
                    self.check_parties(&received.parties)?;
                    let (x_coord, own) = self
                        .share
                        .party()
                        .sign_phase3(&self.data, unique, kept, &[received])
                        .map_err(TssError::from_abort)?;
                    outgoing.push(self.message(3, Recipient::Broadcast, codec::encode(&own)));
                    self.state = State::AwaitRound3 { x_coord, own };
                }
                State::AwaitRound3 { x_coord, own } => {
                    let peer = self.peer;
                    let theirs: Broadcast3to4<Secp256k1> =
                        decode_from(peer, round.broadcast.get(&peer).ok_or(TssError::Finished)?)?;
                    let (s_hex, recovery_id) = self
                        .share
                        .party()
                        .sign_phase4(&self.data, &x_coord, &[own, theirs], true)
                        .map_err(TssError::from_abort)?;
                    let signature = Signature {
                        r: decode_scalar_hex(&x_coord)?,
                        s: decode_scalar_hex(&s_hex)?,
                        recovery_id,
                    };
                    return Ok(Step {
                        outgoing,
                        output: Some(signature),
                    });
                }
                State::Finished => return Err(TssError::Finished),
            }
        }
        Ok(Step::send(outgoing))
    }

    fn decode_direct<T: serde::de::DeserializeOwned>(&self, round: &Round) -> Result<T, TssError> {
        let payload = round.direct.get(&self.peer).ok_or(TssError::Finished)?;
        decode_from(self.peer, payload)
    }

    fn check_parties(&self, parties: &dkls23::protocols::PartiesMessage) -> Result<(), TssError> {
        if parties.sender != self.peer.to_dkls() || parties.receiver != self.me.to_dkls() {
            return Err(impersonation(self.peer));
        }
        Ok(())
    }

    fn direct_messages<T: serde::Serialize>(
        &self,
        round: u8,
        transmit: &[T],
        parties: impl Fn(&T) -> &dkls23::protocols::PartiesMessage,
    ) -> Result<Vec<Message>, TssError> {
        let mut out = Vec::with_capacity(transmit.len());
        for item in transmit {
            if parties(item).receiver != self.peer.to_dkls() {
                return Err(TssError::Protocol {
                    culprit: None,
                    ban: false,
                    reason: "engine addressed a message to a non-signer".into(),
                });
            }
            out.push(self.message(round, Recipient::Party(self.peer), codec::encode(item)));
        }
        Ok(out)
    }

    fn message(&self, round: u8, to: Recipient, payload: Vec<u8>) -> Message {
        Message {
            session_id: self.session_id,
            protocol: Protocol::Sign,
            round,
            from: self.me,
            to,
            payload,
        }
    }
}

fn decode_scalar_hex(text: &str) -> Result<[u8; 32], TssError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|_| TssError::Protocol {
        culprit: None,
        ban: false,
        reason: "engine returned a malformed signature scalar".into(),
    })?;
    Ok(out)
}
