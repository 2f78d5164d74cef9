//! Node envelopes, structure-aware: the harness seals the fuzzer's plaintext into a valid
//! envelope (direct: encrypted for the recipient; broadcast: signed), so the fuzzer gets past the
//! AEAD, then optionally flips one byte of the sealed body. Properties: an untouched envelope
//! opens to exactly its plaintext, a touched one never opens, and no plaintext makes the signing
//! engine that receives it panic (it is delivered as the peer's round-1 message).
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use shardsign_seal::{
    Context, NodeSecret, open_broadcast, open_direct, seal_direct, sign_broadcast,
};
use shardsign_tss::{Message, PartyId, Protocol, Recipient, SessionId, SignSession};

const SESSION: [u8; 32] = [1; 32];
const BINDING: [u8; 32] = [9; 32];

fn identities() -> &'static (NodeSecret, NodeSecret) {
    static IDS: OnceLock<(NodeSecret, NodeSecret)> = OnceLock::new();
    IDS.get_or_init(|| (NodeSecret::generate(), NodeSecret::generate()))
}

fn context(round: u8, to: u8) -> Context<'static> {
    Context {
        cluster_id: "fuzz",
        protocol: Protocol::Sign.to_byte(),
        session_id: &SESSION,
        round,
        from: 2,
        to,
        binding: &BINDING,
    }
}

/// Delivers `payload` to party 1's fresh signing session as party 2's round-1 message.
fn deliver_to_engine(payload: Vec<u8>, to: Recipient) {
    let shares = shardsign_fuzz::shares();
    let parties = [shares[0].party_id(), shares[1].party_id()];
    let (mut session, _) =
        SignSession::start(Arc::clone(&shares[0]), SessionId(SESSION), parties, [5; 32])
            .expect("an honest start");
    let _ = session.handle(Message {
        session_id: SessionId(SESSION),
        protocol: Protocol::Sign,
        round: 1,
        from: PartyId::new(2).expect("party 2"),
        to,
        payload,
    });
}

fuzz_target!(|data: &[u8]| {
    let (mode, rest) = shardsign_fuzz::selector(data);
    let (flip_at, plaintext) = shardsign_fuzz::selector(rest);
    let (node1, node2) = identities();
    let broadcast = mode & 1 == 1;
    let tamper = mode & 2 == 2;
    let mut body = if broadcast {
        sign_broadcast(node2, &context(1, 0), plaintext)
    } else {
        seal_direct(node2, &node1.public(), &context(1, 1), plaintext)
    };
    if tamper {
        let at = usize::from(flip_at) % body.len();
        body[at] ^= 1 << (mode >> 5);
    }
    let opened = if broadcast {
        open_broadcast(&node2.public(), &context(1, 0), &body).map(|p| p.to_vec())
    } else {
        open_direct(node1, &node2.public(), &context(1, 1), &body).map(|p| p.to_vec())
    };
    match (opened, tamper) {
        (Ok(_), true) => panic!("a tampered envelope opened"),
        (Err(e), false) => panic!("an untouched envelope did not open: {e}"),
        (Err(_), true) => {}
        (Ok(opened), false) => {
            assert_eq!(opened, plaintext);
            let to = if broadcast {
                Recipient::Broadcast
            } else {
                Recipient::Party(PartyId::new(1).expect("party 1"))
            };
            deliver_to_engine(opened, to);
        }
    }
    // Raw bytes as a body, too: the framing checks come before any cryptography.
    let _ = open_direct(node1, &node2.public(), &context(1, 1), rest);
    let _ = open_broadcast(&node2.public(), &context(1, 0), rest);
});
