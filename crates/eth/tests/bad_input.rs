//! Every malformed input gets a typed error that names its field, never a panic.
//! Malformed RLP is built by hand here so that the test does not trust our own encoder.

use k256::ecdsa::SigningKey;
use shardsign_eth::{
    AccessListItem, Address, Eip1559Transaction, Eip2930Transaction, EthError, LegacyTransaction,
    Limits, SignedTransaction, U256, UnsignedTransaction, keccak256, parse_u256, sign_prehash,
};

fn rlp_string(bytes: &[u8]) -> Vec<u8> {
    match bytes.len() {
        1 if bytes[0] < 0x80 => bytes.to_vec(),
        len if len < 56 => [&[0x80 + len as u8][..], bytes].concat(),
        len => {
            let len_bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            [&[0xb7 + len_bytes.len() as u8][..], &len_bytes, bytes].concat()
        }
    }
}

fn rlp_list(items: &[Vec<u8>]) -> Vec<u8> {
    let payload = items.concat();
    if payload.len() < 56 {
        [&[0xc0 + payload.len() as u8][..], &payload].concat()
    } else {
        let len_bytes: Vec<u8> = payload
            .len()
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        [&[0xf7 + len_bytes.len() as u8][..], &len_bytes, &payload].concat()
    }
}

fn uint(value: u64) -> Vec<u8> {
    let bytes: Vec<u8> = value
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    rlp_string(&bytes)
}

fn to() -> Vec<u8> {
    rlp_string(&[0x35; 20])
}

/// The EIP-155 example's signing payload fields, with `value` replaced.
fn legacy_payload_with_value(value: Vec<u8>) -> Vec<u8> {
    rlp_list(&[
        uint(9),
        uint(20_000_000_000),
        uint(21000),
        to(),
        value,
        rlp_string(&[]),
        uint(1),
        uint(0),
        uint(0),
    ])
}

fn decode_payload(payload: &[u8]) -> Result<UnsignedTransaction, EthError> {
    UnsignedTransaction::decode_signing_payload(payload, &Limits::DEFAULT)
}

fn eip1559(max_fee: u64, tip: u64) -> UnsignedTransaction {
    Eip1559Transaction {
        chain_id: 1,
        nonce: 0,
        max_priority_fee_per_gas: U256::from(tip),
        max_fee_per_gas: U256::from(max_fee),
        gas_limit: 21000,
        to: Some(Address([1; 20])),
        value: U256::from(1u64),
        data: vec![],
        access_list: vec![],
    }
    .into()
}

fn legacy(chain_id: u64, gas_limit: u64) -> LegacyTransaction {
    LegacyTransaction {
        chain_id,
        nonce: 0,
        gas_price: U256::from(1u64),
        gas_limit,
        to: Some(Address([1; 20])),
        value: U256::ZERO,
        data: vec![],
    }
}

#[test]
fn hand_built_payload_decodes_so_the_bad_variants_below_test_one_thing_each() {
    let tx = decode_payload(&legacy_payload_with_value(uint(5))).unwrap();
    assert_eq!(tx.value(), U256::from(5u64));
}

#[test]
fn value_above_2_pow_256_is_named() {
    let mut too_big = vec![1u8];
    too_big.extend([0u8; 32]);
    assert_eq!(
        decode_payload(&legacy_payload_with_value(rlp_string(&too_big))),
        Err(EthError::ValueOverflow {
            field: "value",
            bits: 256
        })
    );
    let two_256 = "115792089237316195423570985008687907853269984665640564039457584007913129639936";
    assert_eq!(
        parse_u256("value", two_256),
        Err(EthError::ValueOverflow {
            field: "value",
            bits: 256
        })
    );
}

#[test]
fn chain_id_zero_and_missing_are_refused() {
    assert_eq!(
        UnsignedTransaction::Legacy(legacy(0, 21000)).validate(&Limits::DEFAULT),
        Err(EthError::ChainIdZero)
    );
    // A pre-EIP-155 payload: six fields, no chain id.
    let unprotected = rlp_list(&[
        uint(9),
        uint(1),
        uint(21000),
        to(),
        uint(1),
        rlp_string(&[]),
    ]);
    assert_eq!(decode_payload(&unprotected), Err(EthError::ChainIdMissing));
    // A raw transaction signed without EIP-155 (v = 27).
    let key = SigningKey::from_slice(&keccak256(b"k")).unwrap();
    let signature = sign_prehash(&key, &keccak256(b"unprotected"));
    let raw = rlp_list(&[
        uint(9),
        uint(1),
        uint(21000),
        to(),
        uint(1),
        rlp_string(&[]),
        uint(27),
        rlp_string(&signature.r()),
        rlp_string(&signature.s()),
    ]);
    assert_eq!(
        SignedTransaction::decode(&raw, &Limits::DEFAULT),
        Err(EthError::ChainIdMissing)
    );
    // v = 35 means chain id 0.
    let raw = rlp_list(&[
        uint(9),
        uint(1),
        uint(21000),
        to(),
        uint(1),
        rlp_string(&[]),
        uint(35),
        rlp_string(&signature.r()),
        rlp_string(&signature.s()),
    ]);
    assert_eq!(
        SignedTransaction::decode(&raw, &Limits::DEFAULT),
        Err(EthError::ChainIdZero)
    );
}

#[test]
fn gas_limit_zero_is_refused() {
    assert_eq!(
        UnsignedTransaction::Legacy(legacy(1, 0)).validate(&Limits::DEFAULT),
        Err(EthError::GasLimitZero)
    );
}

#[test]
fn priority_fee_above_max_fee_is_refused_with_both_values() {
    assert!(eip1559(10, 10).validate(&Limits::DEFAULT).is_ok());
    assert_eq!(
        eip1559(10, 11).validate(&Limits::DEFAULT),
        Err(EthError::PriorityFeeAboveMaxFee {
            priority: "11".into(),
            max_fee: "10".into()
        })
    );
    // The same rule holds on the decoding path.
    assert!(matches!(
        decode_payload(&eip1559(10, 11).signing_payload()),
        Err(EthError::PriorityFeeAboveMaxFee { .. })
    ));
}

#[test]
fn data_over_the_limit_is_refused_at_the_limit_and_one_above() {
    let limits = Limits {
        max_data_len: 1000,
        ..Limits::DEFAULT
    };
    let mut tx = legacy(1, 21000);
    tx.data = vec![0xaa; 1000];
    let at_limit = UnsignedTransaction::Legacy(tx.clone());
    assert!(at_limit.validate(&limits).is_ok());
    assert!(
        UnsignedTransaction::decode_signing_payload(&at_limit.signing_payload(), &limits).is_ok()
    );
    tx.data.push(0);
    let over = UnsignedTransaction::Legacy(tx);
    assert_eq!(
        over.validate(&limits),
        Err(EthError::DataTooLarge {
            len: 1001,
            max: 1000
        })
    );
    assert_eq!(
        UnsignedTransaction::decode_signing_payload(&over.signing_payload(), &limits),
        Err(EthError::DataTooLarge {
            len: 1001,
            max: 1000
        })
    );
    // Default: 128 KiB.
    assert_eq!(Limits::default().max_data_len, 128 * 1024);
}

#[test]
fn access_list_too_long_is_refused() {
    let limits = Limits {
        max_access_list_items: 2,
        ..Limits::DEFAULT
    };
    let item = AccessListItem {
        address: Address([2; 20]),
        storage_keys: vec![[3; 32]],
    };
    let tx: UnsignedTransaction = Eip2930Transaction {
        chain_id: 1,
        gas_limit: 30000,
        access_list: vec![item.clone(), item.clone(), item],
        ..Default::default()
    }
    .into();
    assert_eq!(
        tx.validate(&limits),
        Err(EthError::AccessListTooLong { len: 3, max: 2 })
    );
    assert_eq!(
        UnsignedTransaction::decode_signing_payload(&tx.signing_payload(), &limits),
        Err(EthError::AccessListTooLong { len: 3, max: 2 })
    );
    let few_keys = Limits {
        max_storage_keys: 2,
        ..Limits::DEFAULT
    };
    assert!(matches!(
        UnsignedTransaction::decode_signing_payload(&tx.signing_payload(), &few_keys),
        Err(EthError::TooManyStorageKeys { count: 3, max: 2 })
    ));
}

#[test]
fn trailing_bytes_are_refused() {
    let mut payload = legacy_payload_with_value(uint(5));
    payload.push(0x00);
    assert_eq!(
        decode_payload(&payload),
        Err(EthError::TrailingBytes {
            field: "transaction",
            count: 1
        })
    );
    let key = SigningKey::from_slice(&keccak256(b"k")).unwrap();
    let tx = eip1559(10, 1);
    let mut raw = tx
        .clone()
        .into_signed(sign_prehash(&key, &tx.signing_hash()))
        .raw()
        .to_vec();
    raw.extend([0x80, 0x80]);
    assert_eq!(
        SignedTransaction::decode(&raw, &Limits::DEFAULT),
        Err(EthError::TrailingBytes {
            field: "transaction",
            count: 2
        })
    );
}

#[test]
fn non_canonical_rlp_is_refused_with_the_field_named() {
    // A leading zero in an integer.
    let payload = rlp_list(&[
        vec![0x82, 0x00, 0x09],
        uint(1),
        uint(21000),
        to(),
        uint(1),
        rlp_string(&[]),
        uint(1),
        uint(0),
        uint(0),
    ]);
    assert!(matches!(
        decode_payload(&payload),
        Err(EthError::Rlp { field: "nonce", .. })
    ));
    // A single byte below 0x80 wrapped in a string header.
    let payload = rlp_list(&[
        uint(9),
        uint(1),
        uint(21000),
        to(),
        vec![0x81, 0x05],
        rlp_string(&[]),
        uint(1),
        uint(0),
        uint(0),
    ]);
    assert!(matches!(
        decode_payload(&payload),
        Err(EthError::Rlp { field: "value", .. })
    ));
    // A long-form length for a short list.
    let short = legacy_payload_with_value(uint(5));
    let mut long_form = vec![0xf8, (short.len() - 1) as u8];
    long_form.extend_from_slice(&short[1..]);
    assert!(matches!(
        decode_payload(&long_form),
        Err(EthError::Rlp {
            field: "transaction",
            ..
        })
    ));
    // An integer with a zero byte instead of the empty string.
    let payload = rlp_list(&[
        uint(9),
        uint(1),
        uint(21000),
        to(),
        vec![0x00],
        rlp_string(&[]),
        uint(1),
        uint(0),
        uint(0),
    ]);
    assert!(matches!(
        decode_payload(&payload),
        Err(EthError::Rlp { field: "value", .. })
    ));
}

#[test]
fn wrong_field_counts_types_and_sizes_are_refused() {
    let extra = rlp_list(&[
        uint(9),
        uint(1),
        uint(21000),
        to(),
        uint(1),
        rlp_string(&[]),
        uint(1),
        uint(0),
        uint(0),
        uint(0),
    ]);
    assert!(matches!(
        decode_payload(&extra),
        Err(EthError::FieldCount {
            expected: 9,
            got: 10,
            ..
        })
    ));
    assert_eq!(decode_payload(&[]), Err(EthError::Empty));
    assert_eq!(
        decode_payload(&[0x03, 0xc0]),
        Err(EthError::UnsupportedType(3))
    );
    assert!(
        EthError::UnsupportedType(3)
            .to_string()
            .contains("blob (EIP-4844) transactions are refused")
    );
    assert!(
        EthError::UnsupportedType(5)
            .to_string()
            .ends_with("(supported: legacy, 0x01, 0x02, 0x04)")
    );
    let short_to = rlp_list(&[
        uint(9),
        uint(1),
        uint(21000),
        rlp_string(&[1; 19]),
        uint(1),
        rlp_string(&[]),
        uint(1),
        uint(0),
        uint(0),
    ]);
    assert_eq!(
        decode_payload(&short_to),
        Err(EthError::AddressLength {
            field: "to",
            len: 19
        })
    );
    let huge = vec![0xc0; Limits::DEFAULT.max_encoded_len() + 1];
    assert!(matches!(
        decode_payload(&huge),
        Err(EthError::EncodingTooLarge { .. })
    ));
}

#[test]
fn high_s_signatures_are_refused_when_decoding() {
    let key = SigningKey::from_slice(&keccak256(b"k")).unwrap();
    let tx = eip1559(10, 1);
    let signed = tx
        .clone()
        .into_signed(sign_prehash(&key, &tx.signing_hash()));
    let low = signed.signature();
    let s = <k256::Scalar as k256::elliptic_curve::PrimeField>::from_repr(low.s().into()).unwrap();
    let high_s: [u8; 32] = (-s).to_bytes().into();
    let parity = 1 - low.recovery_id().to_u8();
    let Eip1559Transaction { chain_id, .. } = match &tx {
        UnsignedTransaction::Eip1559(t) => t.clone(),
        _ => unreachable!(),
    };
    let fields = rlp_list(&[
        uint(chain_id),
        uint(0),
        uint(1),
        uint(10),
        uint(21000),
        rlp_string(&[1; 20]),
        uint(1),
        rlp_string(&[]),
        rlp_list(&[]),
        uint(u64::from(parity)),
        rlp_string(&low.r()),
        rlp_string(&high_s),
    ]);
    let raw = [&[0x02][..], &fields].concat();
    assert!(matches!(
        SignedTransaction::decode(&raw, &Limits::DEFAULT),
        Err(EthError::InvalidSignature(_))
    ));
}

#[test]
fn errors_name_their_field_in_the_message() {
    let error = decode_payload(&legacy_payload_with_value(rlp_string(&[1u8; 33]))).unwrap_err();
    assert_eq!(error.to_string(), "value: value does not fit in 256 bits");
    assert!(EthError::GasLimitZero.to_string().starts_with("gas_limit"));
    assert!(EthError::ChainIdMissing.to_string().starts_with("chain_id"));
}

/// Big-endian scalar as an RLP integer (no leading zeros).
fn scalar(bytes: [u8; 32]) -> Vec<u8> {
    let trimmed: Vec<u8> = bytes.into_iter().skip_while(|b| *b == 0).collect();
    rlp_string(&trimmed)
}

/// One authorization tuple signed by `key` (low s), its fields RLP-encoded one by one; the
/// authority; and the same tuple's fields with the high-s twin of its signature.
fn tuple_fields(key: &SigningKey, chain_id: u64) -> (Vec<Vec<u8>>, Address, Vec<Vec<u8>>) {
    let authorization = shardsign_eth::Authorization {
        chain_id,
        address: Address([0x77; 20]),
        nonce: 5,
    };
    let signature = sign_prehash(key, &authorization.signing_hash()).normalized_low_s();
    let parity = u64::from(signature.recovery_id().to_u8());
    let fields = vec![
        uint(chain_id),
        rlp_string(&[0x77; 20]),
        uint(5),
        uint(parity),
        scalar(signature.r()),
        scalar(signature.s()),
    ];
    let s = <k256::Scalar as k256::elliptic_curve::PrimeField>::from_repr(signature.s().into())
        .unwrap();
    let mut high_s = fields.clone();
    high_s[3] = uint(1 - parity);
    high_s[5] = scalar((-s).to_bytes().into());
    (
        fields,
        Address::from_public_key(key.verifying_key()),
        high_s,
    )
}

fn set_code_payload(to: Vec<u8>, tuples: &[Vec<u8>]) -> Vec<u8> {
    let fields = rlp_list(&[
        uint(1),
        uint(0),
        uint(1),
        uint(10),
        uint(60_000),
        to,
        uint(0),
        rlp_string(&[]),
        rlp_list(&[]),
        rlp_list(tuples),
    ]);
    [&[0x04][..], &fields].concat()
}

#[test]
fn a_hand_built_set_code_payload_decodes_and_its_tuples_recover_their_authorities() {
    let key = SigningKey::from_slice(&keccak256(b"authority")).unwrap();
    let (fields, authority, _) = tuple_fields(&key, 1);
    let payload = set_code_payload(to(), &[rlp_list(&fields), rlp_list(&fields)]);
    let tx = decode_payload(&payload).unwrap();
    assert_eq!(tx.tx_type(), shardsign_eth::TxType::Eip7702);
    assert_eq!(
        tx.signing_payload(),
        payload,
        "re-encodes to the same bytes"
    );
    assert_eq!(tx.authorization_list().len(), 2);
    assert_eq!(tx.authorization_list()[0].authority().unwrap(), authority);
    assert_eq!(tx.to(), Some(Address([0x35; 20])));

    let sender = SigningKey::from_slice(&keccak256(b"sender")).unwrap();
    let signed = tx
        .clone()
        .into_signed(sign_prehash(&sender, &tx.signing_hash()));
    assert_eq!(signed.raw()[0], 0x04);
    assert_eq!(
        signed.v(),
        u128::from(signed.signature().recovery_id().to_u8())
    );
    let decoded = SignedTransaction::decode(signed.raw(), &Limits::DEFAULT).unwrap();
    assert_eq!(decoded, signed);
    assert_eq!(
        decoded.recover_sender().unwrap(),
        Address::from_public_key(sender.verifying_key())
    );
}

#[test]
fn set_code_transactions_without_to_or_tuples_or_with_bad_tuples_are_refused() {
    let key = SigningKey::from_slice(&keccak256(b"authority")).unwrap();
    let (fields, _, high_s) = tuple_fields(&key, 1);
    let good = rlp_list(&fields);
    assert!(matches!(
        decode_payload(&set_code_payload(
            rlp_string(&[]),
            std::slice::from_ref(&good)
        )),
        Err(EthError::SetCodeWithoutTo)
    ));
    assert!(matches!(
        decode_payload(&set_code_payload(to(), &[])),
        Err(EthError::AuthorizationListEmpty)
    ));

    // The second tuple is broken in one way each time; the error names index 1.
    let mut bad_parity = fields.clone();
    bad_parity[3] = uint(2);
    let mut seven = fields.clone();
    seven.push(uint(0));
    let mut short_address = fields.clone();
    short_address[1] = rlp_string(&[0x77; 19]);
    let mut huge_chain = fields.clone();
    huge_chain[0] = rlp_string(&[1; 9]);
    for (broken, words) in [
        (bad_parity, "recovery id must be 0 or 1"),
        (seven, "expected 6 list items"),
        (short_address, "20 bytes"),
        (huge_chain, "64 bits"),
        (high_s, "upper half"),
    ] {
        let error = decode_payload(&set_code_payload(to(), &[good.clone(), rlp_list(&broken)]))
            .unwrap_err();
        assert!(
            matches!(&error, EthError::Authorization { index: 1, .. }),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(text.starts_with("authorization_list[1]: "), "{text}");
        assert!(text.contains(words), "{text}");
    }

    let few = Limits {
        max_authorizations: 2,
        ..Limits::DEFAULT
    };
    let three = set_code_payload(to(), &[good.clone(), good.clone(), good]);
    assert!(matches!(
        UnsignedTransaction::decode_signing_payload(&three, &few),
        Err(EthError::AuthorizationListTooLong { len: 3, max: 2 })
    ));
}
