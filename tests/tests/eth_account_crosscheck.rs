//! Cross-check of crates/eth against eth-account, a library nobody here wrote: the same key signs
//! the same transactions on both sides and the raw bytes must be identical (all four types; the
//! set-code ones carry tuples signed by other authorities); transactions that eth-account made
//! decode here to the same fields and sender; EIP-191, EIP-712 and EIP-7702 authorizations.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use shardsign_eth::{
    Address, Limits, SignedTransaction, TxType, personal_sign_hash, personal_signature_bytes,
    sign_prehash,
};
use shardsign_tests::eth_account;
use shardsign_tests::random_tx::random_tx;
use shardsign_tests::tx_json::{from_json, hex0x, to_json, unhex};

const PER_TYPE: usize = 100;

fn seeded() -> (u64, StdRng) {
    let seed = rand::random();
    eprintln!("seed {seed}");
    (seed, StdRng::seed_from_u64(seed))
}

fn signing_key(rng: &mut StdRng) -> k256::ecdsa::SigningKey {
    loop {
        if let Ok(key) = k256::ecdsa::SigningKey::from_slice(&rng.random::<[u8; 32]>()) {
            return key;
        }
    }
}

#[test]
fn rust_and_eth_account_produce_identical_signed_transactions() {
    let (_, mut rng) = seeded();
    let key = signing_key(&mut rng);
    let mut txs = Vec::new();
    for kind in [
        TxType::Legacy,
        TxType::Eip2930,
        TxType::Eip1559,
        TxType::Eip7702,
    ] {
        for _ in 0..PER_TYPE {
            txs.push(random_tx(&mut rng, kind));
        }
    }
    let reply = eth_account::call(&json!({
        "key": hex0x(&key.to_bytes()),
        "sign_txs": txs.iter().map(to_json).collect::<Vec<_>>(),
    }));
    let ours_address = Address::from_public_key(key.verifying_key());
    assert_eq!(
        reply["address"].as_str().unwrap(),
        ours_address.to_checksum()
    );
    let theirs = reply["signed"].as_array().unwrap();
    assert_eq!(theirs.len(), txs.len());
    for (tx, theirs) in txs.into_iter().zip(theirs) {
        let signature = sign_prehash(&key, &tx.signing_hash());
        let signed = tx.clone().into_signed(signature);
        assert_eq!(
            hex0x(signed.raw()),
            theirs["raw"].as_str().unwrap(),
            "raw transaction differs for {tx:?}"
        );
        assert_eq!(
            hex0x(&signed.hash()),
            theirs["hash"].as_str().unwrap(),
            "hash differs"
        );
        assert_eq!(signed.recover_sender().unwrap(), ours_address);
    }
}

#[test]
fn transactions_made_by_eth_account_decode_to_their_fields_and_sender() {
    let (seed, _) = seeded();
    let reply = eth_account::call(&json!({
        "generate": { "count": PER_TYPE, "seed": seed },
    }));
    let generated = reply["generated"].as_array().unwrap();
    assert_eq!(generated.len(), 4 * PER_TYPE);
    let mut set_code_tuples = 0;
    for item in generated {
        let raw = unhex(item["raw"].as_str().unwrap());
        let decoded = SignedTransaction::decode(&raw, &Limits::DEFAULT)
            .unwrap_or_else(|e| panic!("decode {}: {e}", item["raw"]));
        assert_eq!(
            decoded.transaction(),
            &from_json(&item["tx"]),
            "fields differ"
        );
        assert_eq!(
            decoded.recover_sender().unwrap(),
            Address::parse("sender", item["sender"].as_str().unwrap()).unwrap()
        );
        assert_eq!(hex0x(&decoded.hash()), item["hash"].as_str().unwrap());
        assert_eq!(decoded.v().to_string(), item["v"].as_str().unwrap());
        assert_eq!(decoded.raw(), raw.as_slice());
        let tuples = decoded.transaction().authorization_list();
        if item["tx"]["type"] == "eip7702" {
            assert!(!tuples.is_empty());
            set_code_tuples += tuples.len();
        }
        for (tuple, theirs) in tuples.iter().zip(
            item["tx"]["authorization_list"]
                .as_array()
                .into_iter()
                .flatten(),
        ) {
            assert_eq!(
                tuple.authority().unwrap().to_checksum(),
                theirs["authority"].as_str().unwrap(),
                "authority of a tuple eth-account signed (seed {seed})"
            );
        }
    }
    eprintln!("set-code transactions from eth-account carried {set_code_tuples} authorizations");
    assert!(set_code_tuples >= PER_TYPE);
}

#[test]
fn personal_sign_signatures_match_and_recover_both_ways() {
    let (_, mut rng) = seeded();
    let key = signing_key(&mut rng);
    let address = Address::from_public_key(key.verifying_key());
    let mut messages: Vec<Vec<u8>> = vec![b"Hello World".to_vec(), vec![], vec![0u8; 1000]];
    for _ in 0..50 {
        let len = rng.random_range(0..300);
        messages.push((0..len).map(|_| rng.random()).collect());
    }
    let ours: Vec<String> = messages
        .iter()
        .map(|m| {
            hex0x(&personal_signature_bytes(&sign_prehash(
                &key,
                &personal_sign_hash(m),
            )))
        })
        .collect();
    let reply = eth_account::call(&json!({
        "key": hex0x(&key.to_bytes()),
        "sign_msgs": messages.iter().map(|m| hex0x(m)).collect::<Vec<_>>(),
        "recover_msgs": messages.iter().zip(&ours).map(|(m, s)| json!({"message": hex0x(m), "signature": s})).collect::<Vec<Value>>(),
    }));
    let theirs = reply["message_signatures"].as_array().unwrap();
    let recovered = reply["recovered"].as_array().unwrap();
    for (i, message) in messages.iter().enumerate() {
        // eth-account recovers our signer...
        assert_eq!(recovered[i].as_str().unwrap(), address.to_checksum());
        // ...and signs exactly what we sign (both use RFC 6979 deterministic nonces)...
        assert_eq!(theirs[i].as_str().unwrap(), ours[i]);
        // ...and its signature recovers here to the same address.
        let bytes = unhex(theirs[i].as_str().unwrap());
        let signature = shardsign_eth::Signature::new(
            bytes[..32].try_into().unwrap(),
            bytes[32..64].try_into().unwrap(),
            bytes[64] - 27,
        )
        .unwrap();
        assert_eq!(
            signature
                .recover_address(&personal_sign_hash(message))
                .unwrap(),
            address
        );
    }
}

#[test]
fn typed_data_hashes_equal_eth_accounts_for_every_document() {
    use shardsign_eth::typed_data::{Limits as TypedLimits, TypedData};
    let (seed, _) = seeded();
    let reply = eth_account::call(&json!({
        "typed_data": {"per_template": 20, "random": 200, "seed": seed},
    }));
    let documents = reply["typed_data"].as_array().unwrap();
    let mut per_kind = std::collections::BTreeMap::new();
    for (index, item) in documents.iter().enumerate() {
        let document = item["document"].as_str().unwrap();
        let typed = TypedData::parse(document.as_bytes(), &TypedLimits::DEFAULT)
            .unwrap_or_else(|e| panic!("document {index} (seed {seed}): {e}\n{document}"));
        assert_eq!(
            hex0x(&typed.signing_hash()),
            item["hash"].as_str().unwrap(),
            "document {index} (seed {seed}):\n{document}"
        );
        *per_kind
            .entry(item["kind"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    eprintln!("typed data cross-checked: {per_kind:?}");
    assert_eq!(documents.len(), 6 * 20 + 200);
}

#[test]
fn eip7702_authorizations_sign_identically_to_eth_account() {
    use rand::RngExt;
    use shardsign_eth::Authorization;
    let (seed, mut rng) = seeded();
    let key = signing_key(&mut rng);
    let authorizations: Vec<Authorization> = (0..100)
        .map(|i| Authorization {
            chain_id: match i % 4 {
                0 => 0,
                1 => 1,
                2 => 8453,
                _ => rng.random::<u64>() >> rng.random_range(0..63),
            },
            address: Address::from_slice("address", &rng.random::<[u8; 20]>()).unwrap(),
            nonce: match i % 3 {
                0 => 0,
                1 => u64::MAX,
                _ => rng.random::<u64>() >> rng.random_range(0..63),
            },
        })
        .collect();
    let reply = eth_account::call(&json!({
        "key": hex0x(&key.to_bytes()),
        "sign_authorizations": authorizations.iter().map(|a| json!({
            "chainId": a.chain_id.to_string(),
            "address": a.address.to_checksum(),
            "nonce": a.nonce.to_string(),
        })).collect::<Vec<_>>(),
    }));
    let signed = reply["signed_authorizations"].as_array().unwrap();
    assert_eq!(signed.len(), 100);
    for (index, (ours, theirs)) in authorizations.iter().zip(signed).enumerate() {
        let hash = ours.signing_hash();
        assert_eq!(
            hex0x(&hash),
            theirs["hash"],
            "authorization {index} (seed {seed})"
        );
        let signature = sign_prehash(&key, &hash).normalized_low_s();
        assert_eq!(
            hex0x(&signature.r()),
            theirs["r"],
            "authorization {index} (seed {seed})"
        );
        assert_eq!(
            hex0x(&signature.s()),
            theirs["s"],
            "authorization {index} (seed {seed})"
        );
        assert_eq!(
            u64::from(signature.recovery_id().to_u8()),
            theirs["yParity"].as_u64().unwrap(),
            "authorization {index} (seed {seed})"
        );
        assert_eq!(
            Authorization::decode_signing_payload(&ours.signing_payload()).unwrap(),
            *ours
        );
    }
}
