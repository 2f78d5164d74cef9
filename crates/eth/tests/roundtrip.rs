//! Property tests: every transaction encodes, signs, decodes back to itself and recovers its
//! sender; arbitrary bytes never make a decoder panic.

use k256::ecdsa::SigningKey;
use proptest::prelude::*;
use shardsign_eth::{
    AccessListItem, Address, Authorization, Eip1559Transaction, Eip2930Transaction,
    Eip7702Transaction, LegacyTransaction, Limits, SignedAuthorization, SignedTransaction, U256,
    UnsignedTransaction, sign_prehash,
};

fn u256() -> impl Strategy<Value = U256> {
    prop_oneof![
        Just(U256::ZERO),
        Just(U256::MAX),
        any::<u64>().prop_map(U256::from),
        (any::<[u8; 32]>(), 0usize..256).prop_map(|(b, shift)| U256::from_be_bytes(b) >> shift),
    ]
}

fn chain_id() -> impl Strategy<Value = u64> {
    prop_oneof![Just(1u64), 1u64..100_000, 1u64..=u64::MAX]
}

fn to() -> impl Strategy<Value = Option<Address>> {
    prop_oneof![1 => Just(None), 9 => any::<[u8; 20]>().prop_map(|a| Some(Address(a)))]
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..300)
}

fn access_list() -> impl Strategy<Value = Vec<AccessListItem>> {
    prop::collection::vec(
        (
            any::<[u8; 20]>(),
            prop::collection::vec(any::<[u8; 32]>(), 0..4),
        )
            .prop_map(|(a, keys)| AccessListItem {
                address: Address(a),
                storage_keys: keys,
            }),
        0..4,
    )
}

fn legacy() -> impl Strategy<Value = UnsignedTransaction> {
    (
        chain_id(),
        any::<u64>(),
        u256(),
        1u64..=u64::MAX,
        to(),
        u256(),
        data(),
    )
        .prop_map(|(chain_id, nonce, gas_price, gas_limit, to, value, data)| {
            LegacyTransaction {
                chain_id,
                nonce,
                gas_price,
                gas_limit,
                to,
                value,
                data,
            }
            .into()
        })
}

fn eip2930() -> impl Strategy<Value = UnsignedTransaction> {
    (
        chain_id(),
        any::<u64>(),
        u256(),
        1u64..=u64::MAX,
        to(),
        u256(),
        data(),
        access_list(),
    )
        .prop_map(
            |(chain_id, nonce, gas_price, gas_limit, to, value, data, access_list)| {
                Eip2930Transaction {
                    chain_id,
                    nonce,
                    gas_price,
                    gas_limit,
                    to,
                    value,
                    data,
                    access_list,
                }
                .into()
            },
        )
}

fn eip1559() -> impl Strategy<Value = UnsignedTransaction> {
    (
        chain_id(),
        any::<u64>(),
        u256(),
        0usize..257,
        1u64..=u64::MAX,
        to(),
        u256(),
        data(),
        access_list(),
    )
        .prop_map(
            |(chain_id, nonce, max_fee, tip_shift, gas_limit, to, value, data, access_list)| {
                let tip = if tip_shift == 256 {
                    U256::ZERO
                } else {
                    max_fee >> tip_shift
                };
                Eip1559Transaction {
                    chain_id,
                    nonce,
                    max_priority_fee_per_gas: tip,
                    max_fee_per_gas: max_fee,
                    gas_limit,
                    to,
                    value,
                    data,
                    access_list,
                }
                .into()
            },
        )
}

/// Tuples signed by authorities derived from a seed (any chain id, including 0 and other chains:
/// the encoding carries whatever policy later decides).
fn authorization_list() -> impl Strategy<Value = Vec<SignedAuthorization>> {
    prop::collection::vec(
        (
            any::<u64>(),
            any::<[u8; 20]>(),
            any::<u64>(),
            any::<[u8; 8]>(),
        )
            .prop_map(|(chain_id, address, nonce, seed)| {
                let authorization = Authorization {
                    chain_id,
                    address: Address(address),
                    nonce,
                };
                let authority = SigningKey::from_slice(&shardsign_eth::keccak256(seed)).unwrap();
                SignedAuthorization {
                    authorization,
                    signature: sign_prehash(&authority, &authorization.signing_hash())
                        .normalized_low_s(),
                }
            }),
        1..4,
    )
}

fn eip7702() -> impl Strategy<Value = UnsignedTransaction> {
    (eip1559(), any::<[u8; 20]>(), authorization_list()).prop_map(|(base, to, tuples)| {
        let UnsignedTransaction::Eip1559(base) = base else {
            unreachable!()
        };
        Eip7702Transaction {
            chain_id: base.chain_id,
            nonce: base.nonce,
            max_priority_fee_per_gas: base.max_priority_fee_per_gas,
            max_fee_per_gas: base.max_fee_per_gas,
            gas_limit: base.gas_limit,
            to: Address(to),
            value: base.value,
            data: base.data,
            access_list: base.access_list,
            authorization_list: tuples,
        }
        .into()
    })
}

fn any_tx() -> impl Strategy<Value = UnsignedTransaction> {
    prop_oneof![legacy(), eip2930(), eip1559(), eip7702()]
}

fn key() -> SigningKey {
    SigningKey::from_slice(&shardsign_eth::keccak256(b"roundtrip key")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn signed_transactions_round_trip(tx in any_tx()) {
        let key = key();
        let signed = tx.clone().into_signed(sign_prehash(&key, &tx.signing_hash()));
        let decoded = SignedTransaction::decode(signed.raw(), &Limits::DEFAULT).unwrap();
        prop_assert_eq!(decoded.transaction(), &tx);
        prop_assert_eq!(decoded.raw(), signed.raw());
        prop_assert_eq!(decoded.hash(), signed.hash());
        prop_assert_eq!(decoded.recover_sender().unwrap(), Address::from_public_key(key.verifying_key()));
    }

    #[test]
    fn signing_payloads_round_trip(tx in any_tx()) {
        let decoded = UnsignedTransaction::decode_signing_payload(&tx.signing_payload(), &Limits::DEFAULT).unwrap();
        prop_assert_eq!(decoded, tx);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = SignedTransaction::decode(&bytes, &Limits::DEFAULT);
        let _ = UnsignedTransaction::decode_signing_payload(&bytes, &Limits::DEFAULT);
    }

    #[test]
    fn decoders_never_panic_on_mutated_transactions(tx in any_tx(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let key = key();
        let signed = tx.clone().into_signed(sign_prehash(&key, &tx.signing_hash()));
        let mut raw = signed.raw().to_vec();
        let i = at.index(raw.len());
        raw[i] = byte;
        if let Ok(decoded) = SignedTransaction::decode(&raw, &Limits::DEFAULT) {
            // Whatever still decodes must be canonical: it re-encodes to the same bytes.
            prop_assert_eq!(decoded.raw(), raw.as_slice());
        }
    }
}
