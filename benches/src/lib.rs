//! Measurement helpers shared by the benches: a key made once, and a signing run that times
//! each party's computation per round (to find the protocol's critical path) and counts bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shardsign_tss::local::{run_dkg, run_dkg_with};
use shardsign_tss::{KeyShare, Message, PartyId, Recipient, SessionId, SignSession};

/// Three shares of one fresh key.
pub fn fresh_shares() -> Vec<Arc<KeyShare>> {
    run_dkg(SessionId(rand::random()))
        .expect("key generation")
        .into_iter()
        .map(|o| Arc::new(o.share))
        .collect()
}

/// Bytes exchanged by one key generation (encoded messages, each broadcast counted once per
/// recipient, as a relay forwards it).
pub fn dkg_bytes() -> usize {
    let mut bytes = 0;
    run_dkg_with(SessionId(rand::random()), |_, message| {
        bytes += message.encode().len();
        Some(message)
    })
    .expect("key generation");
    bytes
}

/// Per-round computation time of each of the two signers, and the bytes they exchanged.
pub struct SignTiming {
    /// `[phase][party]`: phase 0 is the start (round-1 messages), phase 3 assembles the signature.
    pub phases: [[Duration; 2]; 4],
    pub bytes: usize,
}

impl SignTiming {
    /// Both parties' work done one after the other.
    pub fn total(&self) -> Duration {
        self.phases.iter().flatten().sum()
    }

    /// The critical path when the two parties compute at the same time: per phase, the slower.
    pub fn critical_path(&self) -> Duration {
        self.phases.iter().map(|p| p[0].max(p[1])).sum()
    }
}

/// Signs `hash` with shares `a` and `b`, delivering every round in lock-step and timing each
/// party's share of each phase.
pub fn timed_sign(a: &Arc<KeyShare>, b: &Arc<KeyShare>, hash: [u8; 32]) -> SignTiming {
    let session_id = SessionId(rand::random());
    let signers = [a.party_id(), b.party_id()];
    let mut phases = [[Duration::ZERO; 2]; 4];
    let mut bytes = 0;
    let mut sessions = Vec::new();
    let mut pending: Vec<Message> = Vec::new();
    for (i, share) in [a, b].into_iter().enumerate() {
        let started = Instant::now();
        let (session, outgoing) =
            SignSession::start(share.clone(), session_id, signers, hash).expect("start");
        phases[0][i] = started.elapsed();
        sessions.push(session);
        pending.extend(outgoing);
    }
    let index_of = |party: PartyId| usize::from(party != signers[0]);
    for phase_time in phases.iter_mut().skip(1) {
        let mut next = Vec::new();
        for message in pending.drain(..) {
            bytes += message.encode().len();
            let to = match message.to {
                Recipient::Party(to) => index_of(to),
                Recipient::Broadcast => 1 - index_of(message.from),
            };
            let started = Instant::now();
            let step = sessions[to].handle(message).expect("signing step");
            phase_time[to] += started.elapsed();
            next.extend(step.outgoing);
        }
        pending = next;
    }
    SignTiming { phases, bytes }
}

pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
