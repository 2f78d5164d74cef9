//! The threshold engine and the Ethereum crate together: a 2-of-3 key made by DKG signs
//! transactions of every type with every pair, and the raw transactions recover to the key's
//! address.

use std::sync::Arc;

use shardsign_eth::{Address, Limits, Signature, SignedTransaction, TxType, personal_sign_hash};
use shardsign_tests::random_tx::random_tx;
use shardsign_tss::SessionId;
use shardsign_tss::local::{run_dkg, run_sign};

#[test]
fn dkg_key_signs_every_transaction_type_with_every_pair() {
    let shares: Vec<_> = run_dkg(SessionId(rand::random()))
        .expect("key generation")
        .into_iter()
        .map(|output| Arc::new(output.share))
        .collect();
    let group_key = shares[0].public_key().to_verifying_key();
    let address = Address::from_public_key(&group_key);
    let mut rng = rand::rng();

    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        for kind in [
            TxType::Legacy,
            TxType::Eip2930,
            TxType::Eip1559,
            TxType::Eip7702,
        ] {
            let tx = random_tx(&mut rng, kind);
            let hash = tx.signing_hash();
            let signatures = run_sign(
                [shares[a].clone(), shares[b].clone()],
                SessionId(rand::random()),
                hash,
            )
            .expect("signing");
            let ours = &signatures[0];
            let signature = Signature::new(ours.r, ours.s, ours.recovery_id).unwrap();
            assert!(signature.verify(&hash, &group_key), "verifies with k256");
            let signed = tx.into_signed(signature);
            assert_eq!(signed.recover_sender().unwrap(), address);
            let decoded = SignedTransaction::decode(signed.raw(), &Limits::DEFAULT).unwrap();
            assert_eq!(decoded.recover_sender().unwrap(), address);
        }
        let message_hash = personal_sign_hash(b"shardsign");
        let signatures = run_sign(
            [shares[a].clone(), shares[b].clone()],
            SessionId(rand::random()),
            message_hash,
        )
        .unwrap();
        let ours = &signatures[0];
        let signature = Signature::new(ours.r, ours.s, ours.recovery_id).unwrap();
        assert_eq!(signature.recover_address(&message_hash).unwrap(), address);
    }
}
