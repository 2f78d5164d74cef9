//! The engine end to end in one thread: key generation, signing with every pair, and the
//! aborts a hostile relay or peer must cause.

use std::sync::{Arc, OnceLock};

use k256::ecdsa::signature::hazmat::PrehashVerifier;
use shardsign_tss::local::{run_dkg, run_dkg_with, run_sign, run_sign_with};
use shardsign_tss::{
    KeyShare, MAX_SHARE_LEN, Message, PARTIES, PartyId, Recipient, SessionId, SignSession,
    Signature, TssError,
};

fn fresh_session() -> SessionId {
    SessionId(rand::random())
}

/// One key generation shared by every test that only needs a key (a DKG costs seconds).
fn shares() -> &'static Vec<Arc<KeyShare>> {
    static SHARES: OnceLock<Vec<Arc<KeyShare>>> = OnceLock::new();
    SHARES.get_or_init(|| {
        run_dkg(fresh_session())
            .expect("key generation succeeds")
            .into_iter()
            .map(|output| Arc::new(output.share))
            .collect()
    })
}

fn pair(a: u8, b: u8) -> [Arc<KeyShare>; 2] {
    [
        shares()[usize::from(a - 1)].clone(),
        shares()[usize::from(b - 1)].clone(),
    ]
}

fn party(index: u8) -> PartyId {
    PartyId::new(index).unwrap()
}

fn verify(signature: &Signature, hash: &[u8; 32]) {
    let key = shares()[0].public_key().to_verifying_key();
    let ecdsa = k256::ecdsa::Signature::from_scalars(signature.r, signature.s).unwrap();
    key.verify_prehash(hash, &ecdsa)
        .expect("signature verifies against the group key");
    assert_eq!(ecdsa.normalize_s(), ecdsa, "s is low");
    let recovered = k256::ecdsa::VerifyingKey::recover_from_prehash(
        hash,
        &ecdsa,
        k256::ecdsa::RecoveryId::new(signature.recovery_id == 1, false),
    )
    .unwrap();
    assert_eq!(recovered, key, "recovery id recovers the group key");
}

#[test]
fn all_parties_agree_on_the_group_key() {
    let shares = shares();
    assert_eq!(shares.len(), 3);
    for (share, expected) in shares.iter().zip(PARTIES) {
        assert_eq!(share.party_id(), expected);
        assert_eq!(share.public_key(), shares[0].public_key());
    }
}

#[test]
fn every_pair_signs_and_the_signature_verifies() {
    for (a, b) in [(1, 2), (1, 3), (2, 3), (3, 1)] {
        let hash: [u8; 32] = rand::random();
        let signatures = run_sign(pair(a, b), fresh_session(), hash).unwrap();
        assert_eq!(signatures.len(), 2);
        assert_eq!(
            signatures[0], signatures[1],
            "both signers assemble the same signature"
        );
        verify(&signatures[0], &hash);
    }
}

#[test]
fn messages_delivered_out_of_order_across_rounds_still_sign() {
    // Deliver each party's messages last-in first-out: the next round can overtake the current.
    let hash: [u8; 32] = rand::random();
    let session_id = fresh_session();
    let signers = [party(1), party(2)];
    let [a, b] = pair(1, 2);
    let (mut first, out_a) = SignSession::start(a, session_id, signers, hash).unwrap();
    let (mut second, out_b) = SignSession::start(b, session_id, signers, hash).unwrap();
    let mut stack: Vec<Message> = out_a.into_iter().chain(out_b).collect();
    let mut done = Vec::new();
    while let Some(message) = stack.pop() {
        let target = match message.to {
            Recipient::Party(to) => to,
            Recipient::Broadcast => {
                if message.from == party(1) {
                    party(2)
                } else {
                    party(1)
                }
            }
        };
        let session = if target == party(1) {
            &mut first
        } else {
            &mut second
        };
        let step = session.handle(message).unwrap();
        stack.extend(step.outgoing);
        done.extend(step.output);
    }
    assert_eq!(done.len(), 2);
    verify(&done[0], &hash);
}

/// Flips one byte in the payload of the first message matching `round` that reaches a party.
fn flip_payload_byte(
    round: u8,
    position: fn(usize) -> usize,
) -> impl FnMut(PartyId, Message) -> Option<Message> {
    let mut done = false;
    move |_, mut message| {
        if !done && message.round == round {
            done = true;
            let at = position(message.payload.len());
            message.payload[at] ^= 0x01;
        }
        Some(message)
    }
}

#[test]
fn a_tampered_signing_message_aborts_in_every_round_and_no_signature_is_made() {
    let positions: [fn(usize) -> usize; 3] = [|_| 0, |len| len / 2, |len| len - 1];
    for round in 1..=3 {
        for position in positions {
            let hash: [u8; 32] = rand::random();
            let result = run_sign_with(
                pair(1, 2),
                fresh_session(),
                hash,
                flip_payload_byte(round, position),
            );
            let error = result.expect_err("a tampered message must abort the session");
            // Blame, where given, falls on the sender of the tampered message, never on the victim.
            if let Some(culprit) = error.culprit() {
                assert!(PARTIES.contains(&culprit), "{error}");
            }
        }
    }
}

#[test]
fn a_tampered_key_generation_message_aborts_in_every_round() {
    for round in 1..=3 {
        let result = run_dkg_with(fresh_session(), flip_payload_byte(round, |len| len / 2));
        assert!(
            result.is_err(),
            "round {round}: tampering must abort the ceremony"
        );
    }
}

#[test]
fn a_message_from_another_session_is_rejected() {
    let foreign = fresh_session();
    let mut done = false;
    let result = run_sign_with(pair(1, 2), fresh_session(), [7; 32], |_, mut message| {
        if !done {
            done = true;
            message.session_id = foreign;
        }
        Some(message)
    });
    assert_eq!(result.unwrap_err(), TssError::WrongSession);
}

#[test]
fn a_duplicated_message_is_rejected() {
    let hash = [9; 32];
    let session_id = fresh_session();
    let signers = [party(1), party(2)];
    let [a, b] = pair(1, 2);
    let (mut first, _) = SignSession::start(a, session_id, signers, hash).unwrap();
    let (_second, out_b) = SignSession::start(b, session_id, signers, hash).unwrap();
    let message = out_b[0].clone();
    first.handle(message.clone()).unwrap();
    // The first message completed round 1; its copy is now a round-1 message in round 2.
    let error = first.handle(message).unwrap_err();
    assert!(
        matches!(
            error,
            TssError::UnexpectedRound { .. } | TssError::Duplicate { .. }
        ),
        "{error}"
    );
    assert_eq!(error.culprit(), Some(party(2)));
}

#[test]
fn a_duplicated_early_message_is_rejected_as_duplicate() {
    // Two copies of the same key-generation round-1 message while the other peer is still due.
    let session_id = fresh_session();
    let (mut one, _) = shardsign_tss::DkgSession::start(party(1), session_id);
    let (_two, out_two) = shardsign_tss::DkgSession::start(party(2), session_id);
    let to_one = out_two
        .into_iter()
        .find(|m| m.to == Recipient::Party(party(1)))
        .unwrap();
    one.handle(to_one.clone()).unwrap();
    let error = one.handle(to_one).unwrap_err();
    assert_eq!(
        error,
        TssError::Duplicate {
            from: party(2),
            round: 1,
            kind: "direct"
        }
    );
    // The session is dead afterwards.
    let (_three, out_three) = shardsign_tss::DkgSession::start(party(3), session_id);
    let from_three = out_three
        .into_iter()
        .find(|m| m.to == Recipient::Party(party(1)))
        .unwrap();
    assert_eq!(one.handle(from_three).unwrap_err(), TssError::Finished);
}

#[test]
fn a_message_from_a_non_participant_is_rejected() {
    let hash = [3; 32];
    let session_id = fresh_session();
    let [a, b] = pair(1, 2);
    let (mut first, _) = SignSession::start(a, session_id, [party(1), party(2)], hash).unwrap();
    // Party 3 runs its own session with party 1 under the same id: its message must not count.
    let (_, out_c) =
        SignSession::start(shares()[2].clone(), session_id, [party(3), party(1)], hash).unwrap();
    let error = first.handle(out_c[0].clone()).unwrap_err();
    assert_eq!(error, TssError::NotParticipant { from: party(3) });
    drop(b);
}

#[test]
fn a_message_for_another_recipient_is_rejected() {
    let result = run_sign_with(pair(1, 2), fresh_session(), [5; 32], |to, mut message| {
        if to == party(2) {
            // A relay hands party 2 a message it claims was for party 1.
            message.to = Recipient::Party(party(1));
        }
        Some(message)
    });
    assert_eq!(
        result.unwrap_err(),
        TssError::WrongRecipient {
            from: party(1),
            to: party(1)
        }
    );
}

#[test]
fn a_reflected_message_is_rejected() {
    let result = run_sign_with(pair(1, 2), fresh_session(), [5; 32], |to, mut message| {
        message.from = to;
        Some(message)
    });
    assert_eq!(result.unwrap_err(), TssError::Reflected);
}

#[test]
fn a_round_3_message_in_round_1_is_rejected() {
    let result = run_sign_with(pair(1, 2), fresh_session(), [5; 32], |_, mut message| {
        message.round = 3;
        Some(message)
    });
    assert!(matches!(
        result.unwrap_err(),
        TssError::UnexpectedRound {
            round: 3,
            expected: 1,
            ..
        }
    ));
}

#[test]
fn signers_must_include_self_and_be_distinct() {
    let share = shares()[0].clone();
    for signers in [[party(2), party(3)], [party(1), party(1)]] {
        let error =
            SignSession::start(share.clone(), fresh_session(), signers, [0; 32]).unwrap_err();
        assert_eq!(error, TssError::InvalidSigners);
    }
}

#[test]
fn share_encoding_round_trips_and_the_decoded_share_signs() {
    let bytes = shares()[1].to_bytes();
    let decoded = Arc::new(KeyShare::from_bytes(&bytes).unwrap());
    assert_eq!(decoded.party_id(), party(2));
    assert_eq!(decoded.public_key(), shares()[0].public_key());
    assert_eq!(*decoded.to_bytes(), *bytes, "encoding is stable");
    let hash: [u8; 32] = rand::random();
    let signatures = run_sign([shares()[0].clone(), decoded], fresh_session(), hash).unwrap();
    verify(&signatures[0], &hash);
}

#[test]
fn truncated_oversized_and_foreign_share_encodings_are_rejected() {
    let bytes = shares()[0].to_bytes();
    for cut in [0, 1, 2, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            matches!(
                KeyShare::from_bytes(&bytes[..cut]),
                Err(TssError::InvalidShare(_))
            ),
            "cut {cut}"
        );
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(matches!(
        KeyShare::from_bytes(&longer),
        Err(TssError::InvalidShare(_))
    ));
    let oversized = vec![1u8; MAX_SHARE_LEN + 1];
    assert!(matches!(
        KeyShare::from_bytes(&oversized),
        Err(TssError::InvalidShare(_))
    ));
    let mut version = bytes.to_vec();
    version[0] = 2;
    assert!(matches!(
        KeyShare::from_bytes(&version),
        Err(TssError::InvalidShare(_))
    ));
}

#[test]
fn debug_output_hides_the_share() {
    let share = &shares()[0];
    let printed = format!("{share:?}");
    assert!(printed.contains("***"), "{printed}");
    // No run of 8 bytes from the encoding appears in hex in the Debug output.
    let encoded = hex::encode(&share.to_bytes()[1..]);
    for window in (0..encoded.len().saturating_sub(16)).step_by(997) {
        assert!(!printed.contains(&encoded[window..window + 16]));
    }
    assert!(printed.len() < 300, "{printed}");
}

#[test]
fn message_and_share_sizes_stay_under_their_limits() {
    let hash: [u8; 32] = rand::random();
    let mut largest = 0;
    run_sign_with(pair(2, 3), fresh_session(), hash, |_, message| {
        largest = largest.max(message.encode().len());
        Some(message)
    })
    .unwrap();
    assert!(largest < shardsign_tss::MAX_MESSAGE_LEN, "{largest}");
    assert!(shares()[0].to_bytes().len() < MAX_SHARE_LEN);
}
