//! Runs every party of a session in one thread, delivering messages directly. For tests, benches
//! and tooling; the node drives one party over the network instead.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::Step;
use crate::dkg::{DkgOutput, DkgSession};
use crate::error::TssError;
use crate::ids::{PARTIES, PartyId, SessionId};
use crate::message::{Message, Recipient};
use crate::package::PublicPackage;
use crate::refresh::{RefreshKind, RefreshOutput, RefreshSession};
use crate::share::KeyShare;
use crate::sign::{SignSession, Signature};

/// Anything that can take a message and answer with a step.
trait Party {
    type Output;
    fn id(&self) -> PartyId;
    fn handle(&mut self, message: Message) -> Result<Step<Self::Output>, TssError>;
}

impl Party for DkgSession {
    type Output = DkgOutput;
    fn id(&self) -> PartyId {
        self.party()
    }
    fn handle(&mut self, message: Message) -> Result<Step<DkgOutput>, TssError> {
        DkgSession::handle(self, message)
    }
}

impl Party for RefreshSession {
    type Output = RefreshOutput;
    fn id(&self) -> PartyId {
        self.party()
    }
    fn handle(&mut self, message: Message) -> Result<Step<RefreshOutput>, TssError> {
        RefreshSession::handle(self, message)
    }
}

impl Party for SignSession {
    type Output = Signature;
    fn id(&self) -> PartyId {
        self.party()
    }
    fn handle(&mut self, message: Message) -> Result<Step<Signature>, TssError> {
        SignSession::handle(self, message)
    }
}

/// The recipients of `message` among `parties`.
pub fn recipients(message: &Message, parties: &[PartyId]) -> Vec<PartyId> {
    match message.to {
        Recipient::Party(to) => vec![to],
        Recipient::Broadcast => parties
            .iter()
            .copied()
            .filter(|p| *p != message.from)
            .collect(),
    }
}

/// Delivers messages until every party has an output; `tamper` sees every delivery first
/// (tests use it to alter, drop or redirect messages).
fn run<P: Party>(
    mut parties: Vec<P>,
    initial: Vec<Message>,
    mut tamper: impl FnMut(PartyId, Message) -> Option<Message>,
) -> Result<Vec<P::Output>, TssError> {
    let ids: Vec<PartyId> = parties.iter().map(|p| p.id()).collect();
    let mut queue: VecDeque<(PartyId, Message)> = VecDeque::new();
    let enqueue = |queue: &mut VecDeque<(PartyId, Message)>, message: Message| {
        for to in recipients(&message, &ids) {
            queue.push_back((to, message.clone()));
        }
    };
    for message in initial {
        enqueue(&mut queue, message);
    }
    let mut outputs: Vec<Option<P::Output>> = parties.iter().map(|_| None).collect();
    while let Some((to, message)) = queue.pop_front() {
        let Some(message) = tamper(to, message) else {
            continue;
        };
        let Some(index) = ids.iter().position(|id| *id == to) else {
            continue;
        };
        let step = parties[index].handle(message)?;
        for message in step.outgoing {
            enqueue(&mut queue, message);
        }
        if let Some(output) = step.output {
            outputs[index] = Some(output);
        }
    }
    outputs
        .into_iter()
        .map(|o| {
            o.ok_or(TssError::Protocol {
                culprit: None,
                ban: false,
                reason: "a party did not finish".into(),
            })
        })
        .collect()
}

/// Runs a whole 2-of-3 key generation; outputs are in party order 1, 2, 3.
pub fn run_dkg(session_id: SessionId) -> Result<Vec<DkgOutput>, TssError> {
    run_dkg_with(session_id, |_, message| Some(message))
}

/// [`run_dkg`] with a hook on every delivery.
pub fn run_dkg_with(
    session_id: SessionId,
    tamper: impl FnMut(PartyId, Message) -> Option<Message>,
) -> Result<Vec<DkgOutput>, TssError> {
    let mut sessions = Vec::new();
    let mut initial = Vec::new();
    for party in PARTIES {
        let (session, outgoing) = DkgSession::start(party, session_id);
        sessions.push(session);
        initial.extend(outgoing);
    }
    run(sessions, initial, tamper)
}

/// Refreshes all three shares of the key `package` describes; outputs are in party order 1, 2, 3.
pub fn run_refresh(
    shares: [Arc<KeyShare>; 3],
    package: &PublicPackage,
    session_id: SessionId,
) -> Result<Vec<RefreshOutput>, TssError> {
    run_refresh_with(shares, package, session_id, |_, message| Some(message))
}

/// [`run_refresh`] with a hook on every delivery.
pub fn run_refresh_with(
    shares: [Arc<KeyShare>; 3],
    package: &PublicPackage,
    session_id: SessionId,
    tamper: impl FnMut(PartyId, Message) -> Option<Message>,
) -> Result<Vec<RefreshOutput>, TssError> {
    run_refresh_kind(RefreshKind::Complete, shares, package, session_id, tamper)
}

/// [`run_refresh_with`] for either kind of refresh.
pub fn run_refresh_kind(
    kind: RefreshKind,
    shares: [Arc<KeyShare>; 3],
    package: &PublicPackage,
    session_id: SessionId,
    tamper: impl FnMut(PartyId, Message) -> Option<Message>,
) -> Result<Vec<RefreshOutput>, TssError> {
    let mut sessions = Vec::new();
    let mut initial = Vec::new();
    for share in shares {
        let (session, outgoing) =
            RefreshSession::start_kind(kind, share, package.clone(), session_id)?;
        sessions.push(session);
        initial.extend(outgoing);
    }
    run(sessions, initial, tamper)
}

/// Signs `hash` with two shares; returns each signer's signature (they must agree).
pub fn run_sign(
    shares: [Arc<KeyShare>; 2],
    session_id: SessionId,
    hash: [u8; 32],
) -> Result<Vec<Signature>, TssError> {
    run_sign_with(shares, session_id, hash, |_, message| Some(message))
}

/// [`run_sign`] with a hook on every delivery.
pub fn run_sign_with(
    shares: [Arc<KeyShare>; 2],
    session_id: SessionId,
    hash: [u8; 32],
    tamper: impl FnMut(PartyId, Message) -> Option<Message>,
) -> Result<Vec<Signature>, TssError> {
    let signers = [shares[0].party_id(), shares[1].party_id()];
    let mut sessions = Vec::new();
    let mut initial = Vec::new();
    for share in shares {
        let (session, outgoing) = SignSession::start(share, session_id, signers, hash)?;
        sessions.push(session);
        initial.extend(outgoing);
    }
    run(sessions, initial, tamper)
}
