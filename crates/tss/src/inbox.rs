//! Collects one round's messages per session: checks session, protocol, sender, recipient and
//! round; refuses duplicates; holds messages of the next round that arrive early (a relay need
//! not keep rounds in lock-step), and says when a round is complete.

use std::collections::BTreeMap;

use crate::error::TssError;
use crate::ids::{PartyId, SessionId};
use crate::message::{Message, Protocol, Recipient};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Direct,
    Broadcast,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Broadcast => "broadcast",
        }
    }
}

/// Which kinds of message every peer sends in a round.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expect {
    pub direct: bool,
    pub broadcast: bool,
}

impl Expect {
    fn allows(self, kind: Kind) -> bool {
        match kind {
            Kind::Direct => self.direct,
            Kind::Broadcast => self.broadcast,
        }
    }

    fn per_peer(self) -> usize {
        usize::from(self.direct) + usize::from(self.broadcast)
    }
}

type Slots = BTreeMap<(PartyId, Kind), Vec<u8>>;

/// The payloads of one complete round, by sender.
#[derive(Default)]
pub(crate) struct Round {
    pub direct: BTreeMap<PartyId, Vec<u8>>,
    pub broadcast: BTreeMap<PartyId, Vec<u8>>,
}

impl Drop for Round {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for payload in self.direct.values_mut().chain(self.broadcast.values_mut()) {
            payload.zeroize();
        }
    }
}

pub(crate) struct Inbox {
    me: PartyId,
    session_id: SessionId,
    protocol: Protocol,
    peers: Vec<PartyId>,
    round: u8,
    rounds: &'static [Expect],
    current: Slots,
    early: Slots,
}

impl Inbox {
    /// `rounds[i]` says what round `i + 1` carries.
    pub(crate) fn new(
        me: PartyId,
        session_id: SessionId,
        protocol: Protocol,
        peers: Vec<PartyId>,
        rounds: &'static [Expect],
    ) -> Self {
        Inbox {
            me,
            session_id,
            protocol,
            peers,
            round: 1,
            rounds,
            current: Slots::new(),
            early: Slots::new(),
        }
    }

    pub(crate) fn round(&self) -> u8 {
        self.round
    }

    fn expect(&self, round: u8) -> Option<Expect> {
        self.rounds.get(usize::from(round).checked_sub(1)?).copied()
    }

    pub(crate) fn accept(&mut self, mut message: Message) -> Result<(), TssError> {
        if message.session_id != self.session_id {
            return Err(TssError::WrongSession);
        }
        if message.protocol != self.protocol {
            return Err(TssError::WrongProtocol);
        }
        let from = message.from;
        if from == self.me {
            return Err(TssError::Reflected);
        }
        if !self.peers.contains(&from) {
            return Err(TssError::NotParticipant { from });
        }
        let kind = match message.to {
            Recipient::Party(to) if to == self.me => Kind::Direct,
            Recipient::Party(to) => return Err(TssError::WrongRecipient { from, to }),
            Recipient::Broadcast => Kind::Broadcast,
        };
        let round = message.round;
        let slots = if round == self.round {
            &mut self.current
        } else if round == self.round + 1 && self.expect(round).is_some() {
            &mut self.early
        } else {
            return Err(TssError::UnexpectedRound {
                from,
                round,
                expected: self.round,
            });
        };
        let allowed = self.rounds[usize::from(round) - 1].allows(kind);
        if !allowed {
            return Err(TssError::UnexpectedKind {
                from,
                round,
                kind: kind.name(),
            });
        }
        if slots.contains_key(&(from, kind)) {
            return Err(TssError::Duplicate {
                from,
                round,
                kind: kind.name(),
            });
        }
        slots.insert((from, kind), std::mem::take(&mut message.payload));
        Ok(())
    }

    /// Whether every peer's messages for the current round are in.
    pub(crate) fn is_complete(&self) -> bool {
        match self.expect(self.round) {
            Some(expect) => self.current.len() == expect.per_peer() * self.peers.len(),
            None => false,
        }
    }

    /// Takes the complete current round and moves on to the next one.
    pub(crate) fn take_round(&mut self) -> Round {
        let mut round = Round::default();
        for ((from, kind), payload) in std::mem::take(&mut self.current) {
            match kind {
                Kind::Direct => round.direct.insert(from, payload),
                Kind::Broadcast => round.broadcast.insert(from, payload),
            };
        }
        self.current = std::mem::take(&mut self.early);
        self.round += 1;
        round
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for payload in self.current.values_mut().chain(self.early.values_mut()) {
            payload.zeroize();
        }
    }
}
