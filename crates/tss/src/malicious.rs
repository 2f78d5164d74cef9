//! Test-only misbehaviour, compiled only with the `malicious` feature (tofnd's pattern): a node
//! binary built with it can be told to cheat, so that tests can prove what an honest node does
//! about a lying counterparty. Release builds never enable the feature (CI checks the resolved
//! features of the workspace build), and the honest code path does not depend on it.

use std::sync::atomic::{AtomicU8, Ordering};

use dkls23::protocols::signing::TransmitPhase1to2;

/// How this process's sessions misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Honest,
    /// Flip a bit of the OT-extension data in every round-1 signing message: the receiver's
    /// multiplication check fails and the engine demands the sender be banned.
    CorruptMultiplication,
}

static BEHAVIOUR: AtomicU8 = AtomicU8::new(0);

/// Sets the behaviour of every session this process starts from now on.
pub fn set(behaviour: Behaviour) {
    let value = match behaviour {
        Behaviour::Honest => 0,
        Behaviour::CorruptMultiplication => 1,
    };
    BEHAVIOUR.store(value, Ordering::SeqCst);
}

pub fn current() -> Behaviour {
    match BEHAVIOUR.load(Ordering::SeqCst) {
        1 => Behaviour::CorruptMultiplication,
        _ => Behaviour::Honest,
    }
}

/// Round-1 signing messages as this process's behaviour has them.
pub(crate) fn phase1(mut transmit: Vec<TransmitPhase1to2>) -> Vec<TransmitPhase1to2> {
    if current() == Behaviour::CorruptMultiplication {
        for message in &mut transmit {
            if let Some(first) = message.mul_transmit.u.first_mut() {
                first[0] ^= 1;
            }
        }
    }
    transmit
}
