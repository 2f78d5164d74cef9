//! The engine's payload decoding inside a live protocol run: an honest key generation, signing
//! or share refresh runs in process, and one delivery (chosen by the first byte: bit 0 signing or
//! not, bit 7 refresh or key generation, the rest which message) has its payload replaced by the
//! fuzzer's bytes. Whatever the bytes, every
//! party returns an error or finishes; a run that finishes agrees on one result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardsign_tss::{Message, SessionId, local};

/// Returns a delivery hook that swaps the payload of the `target`-th delivery.
fn replace_nth(
    target: usize,
    payload: &[u8],
) -> impl FnMut(shardsign_tss::PartyId, Message) -> Option<Message> + '_ {
    let mut seen = 0usize;
    move |_, mut message| {
        if seen == target {
            message.payload = payload.to_vec();
        }
        seen += 1;
        Some(message)
    }
}

fuzz_target!(|data: &[u8]| {
    let (choice, payload) = shardsign_fuzz::selector(data);
    let target = usize::from(choice >> 1);
    if choice & 1 == 0 {
        let shares = shardsign_fuzz::shares();
        let signers = [shares[0].clone(), shares[2].clone()];
        if let Ok(signatures) = local::run_sign_with(
            signers,
            SessionId([3; 32]),
            [5; 32],
            replace_nth(target % 8, payload),
        ) {
            assert!(
                signatures.windows(2).all(|w| w[0] == w[1]),
                "signers disagree"
            );
        }
    } else if choice & 0x80 != 0 {
        let shares = shardsign_fuzz::shares();
        if let Ok(refreshed) = local::run_refresh_with(
            shares.clone(),
            shardsign_fuzz::package(),
            SessionId([6; 32]),
            replace_nth((target & 0x3f) % 24, payload),
        ) {
            assert!(
                refreshed
                    .iter()
                    .all(|o| o.share.public_key() == shares[0].public_key()),
                "a refresh changed the key"
            );
        }
    } else if let Ok(outputs) =
        local::run_dkg_with(SessionId([4; 32]), replace_nth(target % 24, payload))
    {
        assert!(
            outputs
                .windows(2)
                .all(|w| w[0].public_key == w[1].public_key),
            "parties disagree on the key"
        );
    }
});
