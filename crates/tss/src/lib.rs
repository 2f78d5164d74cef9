//! shardsign's threshold-signing engine: 2-of-3 DKLs23 key generation and signing over the
//! `dkls23` crate, as transport-agnostic session state machines.
//!
//! A session is created with its inputs (party, fresh session id, ...), fed incoming [`Message`]s
//! one at a time, and answers with a [`Step`]: messages to send (each addressed to one party or
//! broadcast) and, at the end, its output. Any inconsistency aborts with a typed [`TssError`]
//! that names the faulty party where the protocol can tell. No I/O, no clocks, no globals: the
//! same code runs in unit tests, benches and the node.
//!
//! Nothing outside this crate sees a `dkls23` type: messages and key shares have our own
//! versioned encodings, with sizes checked before decoding.

mod codec;
mod dkg;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod ids;
mod inbox;
pub mod local;
#[cfg(feature = "malicious")]
pub mod malicious;
mod message;
mod package;
mod refresh;
mod repair;
mod share;
mod sign;

pub use dkg::{DkgOutput, DkgSession};
pub use error::TssError;
pub use ids::{PARTIES, PartyId, SessionId, THRESHOLD};
pub use message::{MAX_MESSAGE_LEN, Message, Protocol, Recipient};
pub use package::{MAX_PACKAGE_LEN, PublicPackage};
pub use refresh::{RefreshKind, RefreshOutput, RefreshSession};
pub use repair::{MAX_TERM_LEN, helpers_for, repair_assemble};
pub use share::{KeyShare, MAX_SHARE_LEN, PublicKey};
pub use sign::{SignSession, Signature};

/// What a session answers to its start or to one incoming message.
#[derive(Debug)]
pub struct Step<T> {
    /// Messages to deliver, each to its recipient (or to every other participant if broadcast).
    pub outgoing: Vec<Message>,
    /// The session's result, once it has one. The session accepts no message after it.
    pub output: Option<T>,
}

impl<T> Step<T> {
    fn send(outgoing: Vec<Message>) -> Self {
        Step {
            outgoing,
            output: None,
        }
    }
}
