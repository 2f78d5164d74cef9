//! Why a session aborted, with the faulty party where the protocol can tell.

use thiserror::Error;

use crate::ids::PartyId;

/// A session abort or a refused input. After any error the session is dead: drop it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TssError {
    #[error("party index {0} is not one of 1, 2, 3")]
    InvalidParty(u8),
    #[error("signers must be two distinct parties including this one")]
    InvalidSigners,
    #[error("message is {len} bytes, over the limit of {max}")]
    MessageTooLarge { len: usize, max: usize },
    #[error("message encoding version {0} is not supported")]
    UnsupportedVersion(u8),
    #[error("message is malformed: {0}")]
    MalformedMessage(String),
    #[error("payload from party {from} is malformed: {reason}")]
    MalformedPayload { from: PartyId, reason: String },
    #[error("message belongs to another session")]
    WrongSession,
    #[error("message belongs to another protocol")]
    WrongProtocol,
    #[error("message from party {from} is addressed to party {to}, not to this party")]
    WrongRecipient { from: PartyId, to: PartyId },
    #[error("party {from} is not a participant of this session")]
    NotParticipant { from: PartyId },
    #[error("message claims to come from this party itself")]
    Reflected,
    #[error("party {from} sent round {round} while this party is in round {expected}")]
    UnexpectedRound {
        from: PartyId,
        round: u8,
        expected: u8,
    },
    #[error("party {from} sent a {kind} message in round {round}, where none is expected")]
    UnexpectedKind {
        from: PartyId,
        round: u8,
        kind: &'static str,
    },
    #[error("party {from} sent a second {kind} message for round {round}")]
    Duplicate {
        from: PartyId,
        round: u8,
        kind: &'static str,
    },
    #[error("protocol abort{}: {reason}", culprit_suffix(.culprit, *.ban))]
    Protocol {
        culprit: Option<PartyId>,
        ban: bool,
        reason: String,
    },
    #[error("session has already finished or aborted")]
    Finished,
    #[error("key share is invalid: {0}")]
    InvalidShare(String),
}

fn culprit_suffix(culprit: &Option<PartyId>, ban: bool) -> String {
    match (culprit, ban) {
        (Some(party), true) => format!(" (party {party} cheated and must be excluded)"),
        (Some(party), false) => format!(" (caused by party {party})"),
        (None, _) => String::new(),
    }
}

impl TssError {
    /// The party whose message caused the abort, when the protocol can tell.
    pub fn culprit(&self) -> Option<PartyId> {
        match self {
            TssError::MalformedPayload { from, .. }
            | TssError::WrongRecipient { from, .. }
            | TssError::NotParticipant { from }
            | TssError::UnexpectedRound { from, .. }
            | TssError::UnexpectedKind { from, .. }
            | TssError::Duplicate { from, .. } => Some(*from),
            TssError::Protocol { culprit, .. } => *culprit,
            _ => None,
        }
    }

    /// The party the engine demands be banned (it cheated in a check whose failure leaks the
    /// reused OT state: signing with it again could let it extract the key).
    pub fn banned(&self) -> Option<PartyId> {
        match self {
            TssError::Protocol {
                culprit, ban: true, ..
            } => *culprit,
            _ => None,
        }
    }

    /// Maps a `dkls23` abort, pulling out the counterparty the engine blamed.
    pub(crate) fn from_abort(abort: dkls23::protocols::Abort) -> Self {
        use dkls23::protocols::{AbortKind, AbortReason as R};
        let (ban, banned) = match abort.kind {
            AbortKind::BanCounterparty(party) => (true, Some(party)),
            AbortKind::Recoverable => (false, None),
        };
        let blamed = match &abort.reason {
            R::UnexpectedSender { sender } | R::DuplicateSender { sender } => Some(*sender),
            R::MissingMessageFromParty { party }
            | R::MissingCommittedPoint { party }
            | R::ChainCodeCommitmentFailed { party } => Some(*party),
            R::SessionBindingMismatch { counterparty }
            | R::ProofVerificationFailed { counterparty }
            | R::CommitmentMismatch { counterparty }
            | R::TrivialInstancePoint { counterparty }
            | R::OtConsistencyCheckFailed { counterparty }
            | R::MultiplicationVerificationFailed { counterparty, .. }
            | R::GammaUInconsistency { counterparty }
            | R::ZeroShareDecommitFailed { counterparty } => Some(*counterparty),
            _ => None,
        };
        TssError::Protocol {
            culprit: banned.or(blamed).and_then(PartyId::from_dkls),
            ban,
            reason: abort.description(),
        }
    }
}
