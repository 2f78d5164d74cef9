//! Writes the seed corpora under `fuzz/corpus/<target>/` from representative valid inputs (the
//! transaction shapes the tests use, real engine messages from an in-process run, signed
//! statements, policies). Deterministic apart from the engine's and the seal's randomness.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds` (from the project root).

use std::path::Path;
use std::sync::Arc;

use k256::ecdsa::SigningKey;
use prost::Message as _;
use shardsign_eth::{
    AccessListItem, Address, Authorization, Eip1559Transaction, Eip2930Transaction,
    Eip7702Transaction, LegacyTransaction, SignedAuthorization, U256, UnsignedTransaction,
    sign_prehash,
};
use shardsign_policy::file::PolicyFile;
use shardsign_policy::signed::{KeyStatementHeader, OperatorPolicyKey};
use shardsign_proto::node::v1 as node;
use shardsign_proto::v1 as api;
use shardsign_seal::{Context, NodeSecret, seal_direct};
use shardsign_tss::{Message, Protocol, Recipient, SessionId, local};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

fn with(selector: u8, bytes: &[u8]) -> Vec<u8> {
    [&[selector][..], bytes].concat()
}

/// A tuple signed by a fixed authority, so that the seeds do not change between runs.
fn signed_authorization(chain_id: u64) -> SignedAuthorization {
    let authority = SigningKey::from_slice(&[0x0a; 32]).expect("authority key");
    let authorization = Authorization {
        chain_id,
        address: Address([0x63; 20]),
        nonce: 7,
    };
    SignedAuthorization {
        authorization,
        signature: sign_prehash(&authority, &authorization.signing_hash()).normalized_low_s(),
    }
}

fn transactions() -> Vec<UnsignedTransaction> {
    let to = Some(Address([0x35; 20]));
    let eth = U256::from(10u64).pow(U256::from(18u64));
    vec![
        LegacyTransaction {
            chain_id: 1,
            nonce: 9,
            gas_price: U256::from(20_000_000_000u64),
            gas_limit: 21_000,
            to,
            value: eth,
            data: Vec::new(),
        }
        .into(),
        LegacyTransaction {
            chain_id: 31_337,
            nonce: 0,
            gas_price: U256::ZERO,
            gas_limit: 3_000_000,
            to: None,
            value: U256::ZERO,
            data: vec![0x60, 0x80, 0x60, 0x40, 0x52],
        }
        .into(),
        Eip2930Transaction {
            chain_id: 5,
            nonce: 1,
            gas_price: U256::from(1u64),
            gas_limit: 50_000,
            to,
            value: U256::from(1u64),
            data: vec![0xa9, 0x05, 0x9c, 0xbb],
            access_list: vec![AccessListItem {
                address: Address([0x11; 20]),
                storage_keys: vec![[0x22; 32]],
            }],
        }
        .into(),
        Eip1559Transaction {
            chain_id: 1,
            nonce: u64::MAX - 1,
            max_priority_fee_per_gas: U256::from(1_000_000_000u64),
            max_fee_per_gas: U256::from(100_000_000_000u64),
            gas_limit: 21_000,
            to,
            value: U256::MAX >> 8,
            data: vec![0xff; 64],
            access_list: Vec::new(),
        }
        .into(),
        Eip7702Transaction {
            chain_id: 8453,
            nonce: 3,
            max_priority_fee_per_gas: U256::from(1_000_000_000u64),
            max_fee_per_gas: U256::from(30_000_000_000u64),
            gas_limit: 100_000,
            to: Address([0x35; 20]),
            value: U256::ZERO,
            data: vec![0xa9, 0x05, 0x9c, 0xbb],
            access_list: Vec::new(),
            authorization_list: vec![signed_authorization(8453), signed_authorization(0)],
        }
        .into(),
    ]
}

fn transaction_seeds(signer: &SigningKey) {
    for (i, tx) in transactions().into_iter().enumerate() {
        let payload = tx.signing_payload();
        write("tx_unsigned", &format!("tx-{i}"), &payload);
        let signed = tx
            .clone()
            .into_signed(sign_prehash(signer, &tx.signing_hash()));
        write("tx_signed", &format!("tx-{i}"), signed.raw());
        let node_request = node::StartSignRequest {
            session_id: vec![1; 32],
            key_id: "key-1".into(),
            signers: vec![1, 2],
            payload: Some(node::start_sign_request::Payload::Transaction(
                payload.clone(),
            )),
            expected_hash: tx.signing_hash().to_vec(),
            signed_policy: Vec::new(),
            epoch: 0,
            request_id: String::new(),
            approval: Vec::new(),
        };
        write(
            "node_payload",
            &format!("tx-{i}"),
            &node_request.encode_to_vec(),
        );
        let api_request = api::SignTransactionRequest {
            key_id: "key-1".into(),
            request_id: format!("req-{i}"),
            transaction: Some(api::sign_transaction_request::Transaction::UnsignedRlp(
                payload,
            )),
        };
        write(
            "api_request",
            &format!("rlp-{i}"),
            &with(0, &api_request.encode_to_vec()),
        );
    }
    let typed = api::SignTransactionRequest {
        key_id: "key-1".into(),
        request_id: "typed".into(),
        transaction: Some(api::sign_transaction_request::Transaction::Eip1559(
            api::Eip1559Transaction {
                chain_id: 1,
                nonce: 3,
                max_priority_fee_per_gas: "1gwei".into(),
                max_fee_per_gas: "100gwei".into(),
                gas_limit: 21_000,
                to: "0x3535353535353535353535353535353535353535".into(),
                value: "0.5eth".into(),
                data: Vec::new(),
                access_list: vec![api::AccessListItem {
                    address: "0x1111111111111111111111111111111111111111".into(),
                    storage_keys: vec![vec![0x22; 32]],
                }],
            },
        )),
    };
    write("api_request", "eip1559", &with(0, &typed.encode_to_vec()));
    let legacy = api::SignTransactionRequest {
        key_id: "key-1".into(),
        request_id: "legacy".into(),
        transaction: Some(api::sign_transaction_request::Transaction::Legacy(
            api::LegacyTransaction {
                chain_id: 31_337,
                nonce: 0,
                gas_price: "20000000000".into(),
                gas_limit: 21_000,
                to: "0x3535353535353535353535353535353535353535".into(),
                value: "1".into(),
                data: vec![1, 2, 3],
            },
        )),
    };
    write("api_request", "legacy", &with(0, &legacy.encode_to_vec()));
    let tuple = signed_authorization(8453);
    let set_code = api::SignTransactionRequest {
        key_id: "key-1".into(),
        request_id: "set-code".into(),
        transaction: Some(api::sign_transaction_request::Transaction::Eip7702(
            api::Eip7702Transaction {
                chain_id: 8453,
                nonce: 3,
                max_priority_fee_per_gas: "1gwei".into(),
                max_fee_per_gas: "30gwei".into(),
                gas_limit: 100_000,
                to: "0x3535353535353535353535353535353535353535".into(),
                value: "0".into(),
                data: Vec::new(),
                access_list: Vec::new(),
                authorization_list: vec![api::SignedAuthorization {
                    chain_id: tuple.authorization.chain_id,
                    address: tuple.authorization.address.to_checksum(),
                    nonce: tuple.authorization.nonce,
                    y_parity: u32::from(tuple.signature.recovery_id().to_u8()),
                    r: tuple.signature.r().to_vec(),
                    s: tuple.signature.s().to_vec(),
                }],
            },
        )),
    };
    write(
        "api_request",
        "eip7702",
        &with(0, &set_code.encode_to_vec()),
    );
}

fn message_seeds() {
    let messages: [&[u8]; 4] = [
        b"example.com wants you to sign in with your Ethereum account",
        b"hello",
        &[0u8; 32],
        &[0xff, 0xfe, 0x00, 0x01],
    ];
    for (i, message) in messages.iter().enumerate() {
        write(
            "eip191",
            &format!("text-{i}"),
            &[&[0x04, 11][..], message].concat(),
        );
        write(
            "eip191",
            &format!("plain-{i}"),
            &[&[0x00, 0][..], message].concat(),
        );
        let request = api::SignMessageRequest {
            key_id: "key-1".into(),
            request_id: format!("msg-{i}"),
            message: message.to_vec(),
        };
        write(
            "api_request",
            &format!("message-{i}"),
            &with(1, &request.encode_to_vec()),
        );
        let node_request = node::StartSignRequest {
            session_id: vec![2; 32],
            key_id: "key-1".into(),
            signers: vec![1, 3],
            payload: Some(node::start_sign_request::Payload::PersonalMessage(
                message.to_vec(),
            )),
            ..Default::default()
        };
        write(
            "node_payload",
            &format!("message-{i}"),
            &node_request.encode_to_vec(),
        );
    }
}

fn policy() -> api::Policy {
    api::Policy {
        allowed_chain_ids: vec![1, 31_337],
        max_value_per_tx: "0.5eth".into(),
        max_value_per_24h: "2eth".into(),
        allowed_recipients: vec!["0x3535353535353535353535353535353535353535".into()],
        allowed_contract_calls: vec![api::ContractCall {
            to: "0x1111111111111111111111111111111111111111".into(),
            selector: "0xa9059cbb".into(),
        }],
        allow_contract_creation: false,
        max_fee_per_gas: "100gwei".into(),
        max_total_fee: "0.01eth".into(),
        requests_per_minute: 60,
        allow_message_signing: true,
        message_rules: Some(api::MessageRules {
            allow_hash_shaped: false,
            allow_binary: false,
            max_len: 1024,
            allowed_prefixes: vec!["example.com wants you to sign in".into()],
        }),
        allowed_typed_data: vec![api::TypedDataRule {
            chain_id: 1,
            verifying_contract: "0x1111111111111111111111111111111111111111".into(),
            name: "USD Coin".into(),
            version: "2".into(),
            primary_types: vec!["TransferWithAuthorization".into()],
            conditions: vec![api::FieldCondition {
                path: "message.value".into(),
                op: "le".into(),
                values: vec!["1000000".into()],
            }],
        }],
        allowed_delegates: vec!["0x2222222222222222222222222222222222222222".into()],
        allow_any_chain_authorization: false,
        tokens: vec![api::TokenRule {
            chain_id: 1,
            address: "0x1111111111111111111111111111111111111111".into(),
            decimals: 6,
            symbol: "USDC".into(),
            max_amount_per_tx: "250usdc".into(),
            allowed_recipients: vec!["0x3535353535353535353535353535353535353535".into()],
            allowed_spenders: vec!["*".into()],
            allow_unlimited_approval: false,
            max_amount_per_24h: "unlimited".into(),
            require_approval_above: String::new(),
        }],
        max_permit_validity_secs: 3600,
        require_approval_above: String::new(),
        approvers: None,
    }
}

fn policy_seeds() {
    let policy = policy();
    let json = serde_json::to_vec_pretty(&PolicyFile::from(&policy)).unwrap();
    write("policy", "file", &with(0, &json));
    write("policy", "file-empty", &with(0, b"{}"));
    write("policy", "proto", &with(1, &policy.encode_to_vec()));
    let create = api::CreateApiKeyRequest {
        label: "agent".into(),
        scopes: vec!["sign".into()],
        key_ids: vec!["key-1".into()],
        all_keys: false,
        expires_in_seconds: 3600,
        policy: Some(policy.clone()),
    };
    write(
        "api_request",
        "create-api-key",
        &with(2, &create.encode_to_vec()),
    );
    let set = api::SetApiKeyPolicyRequest {
        id: "ak_1".into(),
        policy: Some(policy.clone()),
    };
    write(
        "api_request",
        "set-api-key-policy",
        &with(3, &set.encode_to_vec()),
    );

    let operator = OperatorPolicyKey::from_secret_hex(&"42".repeat(32)).unwrap();
    let header = KeyStatementHeader {
        cluster_id: "fuzz",
        key_id: "fuzz-key",
        version: 1,
        issued_at_unix: 1_700_000_000,
    };
    let signed = operator
        .sign_key_policy(header, &policy, 1_700_086_400)
        .unwrap();
    write("statement", "raw-policy", &with(0, &signed.encode_to_vec()));
    write(
        "statement",
        "signed-policy-statement",
        &with(1, &signed.statement),
    );
    write(
        "statement",
        "policy-body",
        &with(2, &policy.encode_to_vec()),
    );
    let disable = operator
        .sign_key_disable(
            KeyStatementHeader {
                version: 2,
                ..header
            },
            "lost laptop",
        )
        .unwrap();
    write(
        "statement",
        "raw-disable",
        &with(0, &disable.encode_to_vec()),
    );
    let body = api::KeyDisable {
        reason: "lost laptop".into(),
    };
    write("statement", "disable-body", &with(3, &body.encode_to_vec()));
    // An approval the target's fixture accepts (its key as the only approver), and its body.
    let request = shardsign_policy::approval::ApprovalRequest {
        key_id: "fuzz-key".into(),
        chain_id: 1,
        payload_hash: [7; 32],
        request_id: "fuzz-request".into(),
    };
    let statement = request.statement(
        "fuzz",
        api::approval::Decision::Approve,
        "",
        1_700_000_000,
        1_700_086_400,
    );
    let mut approval = api::SignedStatement {
        statement: statement.encode_to_vec(),
        signatures: Vec::new(),
    };
    shardsign_policy::approval::add_signature(
        &ed25519_dalek::SigningKey::from_bytes(&[0x42; 32]),
        &mut approval,
    )
    .unwrap();
    write(
        "statement",
        "raw-approval",
        &with(8, &approval.encode_to_vec()),
    );
    write(
        "statement",
        "signed-approval-statement",
        &with(9, &approval.statement),
    );
    write("statement", "approval-body", &with(10, &statement.body));
}

fn engine_seeds() {
    let outputs = local::run_dkg(SessionId([7; 32])).unwrap();
    let package = outputs[0].package.clone();
    write("key_share", "package", &package.to_bytes());
    for output in &outputs {
        let party = output.share.party_id().get();
        write(
            "key_share",
            &format!("share-{party}"),
            &output.share.to_bytes(),
        );
    }
    write("key_share", "public-key", outputs[0].public_key.as_bytes());

    let mut dkg: Vec<Message> = Vec::new();
    local::run_dkg_with(SessionId([4; 32]), |_, message| {
        dkg.push(message.clone());
        Some(message)
    })
    .unwrap();
    // The decoder target: each payload with the kind byte of its type.
    let kind = |protocol: Protocol, round: u8, broadcast: bool| -> u8 {
        match (protocol, round, broadcast) {
            (Protocol::Sign, 1, _) => 6,
            (Protocol::Sign, 2, _) => 7,
            (Protocol::Sign, _, _) => 8,
            (_, 1, _) => 0,
            (Protocol::Dkg, 2, true) => 1,
            (Protocol::Refresh, 2, true) => 5,
            (_, 2, false) => 2,
            (Protocol::Dkg, 3, true) => 3,
            _ => 4,
        }
    };
    let mut decode_seeds = Vec::new();
    for (i, message) in dkg.iter().enumerate().take(24) {
        write(
            "tss_payload",
            &format!("dkg-{i}"),
            &with(((i as u8) << 1) | 1, &message.payload),
        );
        write("tss_message", &format!("dkg-{i}"), &message.encode());
        decode_seeds.push((format!("dkg-{i}"), message.clone()));
    }
    let shares: Vec<Arc<_>> = outputs.into_iter().map(|o| Arc::new(o.share)).collect();
    let mut sign: Vec<Message> = Vec::new();
    local::run_sign_with(
        [shares[0].clone(), shares[2].clone()],
        SessionId([3; 32]),
        [5; 32],
        |_, message| {
            sign.push(message.clone());
            Some(message)
        },
    )
    .unwrap();
    for (i, message) in sign.iter().enumerate().take(8) {
        write(
            "tss_payload",
            &format!("sign-{i}"),
            &with((i as u8) << 1, &message.payload),
        );
        write("tss_message", &format!("sign-{i}"), &message.encode());
        decode_seeds.push((format!("sign-{i}"), message.clone()));
    }
    let mut refresh: Vec<Message> = Vec::new();
    let three: [Arc<_>; 3] = shares.clone().try_into().unwrap();
    local::run_refresh_with(three, &package, SessionId([6; 32]), |_, message| {
        refresh.push(message.clone());
        Some(message)
    })
    .unwrap();
    for (i, message) in refresh.iter().enumerate().take(24) {
        let selector = 0x80 | ((i as u8) << 1) | 1;
        write(
            "tss_payload",
            &format!("refresh-{i}"),
            &with(selector, &message.payload),
        );
        write("tss_message", &format!("refresh-{i}"), &message.encode());
        decode_seeds.push((format!("refresh-{i}"), message.clone()));
    }
    for (name, message) in decode_seeds {
        let selector = kind(
            message.protocol,
            message.round,
            message.to == Recipient::Broadcast,
        );
        write("tss_decode", &name, &with(selector, &message.payload));
    }
    // The envelope target delivers to party 1 as party 2's round 1: real round-1 payloads.
    let mut round1: Vec<Message> = Vec::new();
    local::run_sign_with(
        [shares[1].clone(), shares[0].clone()],
        SessionId([1; 32]),
        [5; 32],
        |_, message| {
            if message.round == 1 && message.from.get() == 2 {
                round1.push(message.clone());
            }
            Some(message)
        },
    )
    .unwrap();
    for (i, message) in round1.iter().enumerate() {
        write(
            "envelope",
            &format!("direct-{i}"),
            &[&[0u8, 0][..], &message.payload].concat(),
        );
        write(
            "envelope",
            &format!("tampered-{i}"),
            &[&[2u8, 40][..], &message.payload].concat(),
        );
    }
    write("envelope", "broadcast", &[1u8, 0, 1, 2, 3]);
    // A sealed body, for the raw-body path.
    let (a, b) = (NodeSecret::generate(), NodeSecret::generate());
    let context = Context {
        cluster_id: "fuzz",
        protocol: 2,
        session_id: &[1; 32],
        round: 1,
        from: 2,
        to: 1,
        binding: &[9; 32],
    };
    write(
        "envelope",
        "sealed-body",
        &[&[0u8][..], &seal_direct(&a, &b.public(), &context, b"x")].concat(),
    );
}

/// EIP-712 documents: the EIP's Mail example, an x402 payment (EIP-3009), a Permit2 batch, and
/// one with every kind of field.
fn typed_data_seeds() {
    let domain = r#"[{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}]"#;
    let documents = [
        format!(
            r#"{{"types": {{"EIP712Domain": {domain},
              "Person": [{{"name": "name", "type": "string"}}, {{"name": "wallet", "type": "address"}}],
              "Mail": [{{"name": "from", "type": "Person"}}, {{"name": "to", "type": "Person"}}, {{"name": "contents", "type": "string"}}]}},
             "primaryType": "Mail",
             "domain": {{"name": "Ether Mail", "version": "1", "chainId": 1, "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"}},
             "message": {{"from": {{"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"}},
                          "to": {{"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"}}, "contents": "Hello, Bob!"}}}}"#
        ),
        format!(
            r#"{{"types": {{"EIP712Domain": {domain},
              "TransferWithAuthorization": [{{"name": "from", "type": "address"}}, {{"name": "to", "type": "address"}},
                {{"name": "value", "type": "uint256"}}, {{"name": "validAfter", "type": "uint256"}},
                {{"name": "validBefore", "type": "uint256"}}, {{"name": "nonce", "type": "bytes32"}}]}},
             "primaryType": "TransferWithAuthorization",
             "domain": {{"name": "USDC", "version": "2", "chainId": 8453, "verifyingContract": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"}},
             "message": {{"from": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "to": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB",
                          "value": "10000", "validAfter": 0, "validBefore": "0xffffffff",
                          "nonce": "0x0101010101010101010101010101010101010101010101010101010101010101"}}}}"#
        ),
        r#"{"types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
            "PermitDetails": [{"name": "token", "type": "address"}, {"name": "amount", "type": "uint160"}, {"name": "expiration", "type": "uint48"}, {"name": "nonce", "type": "uint48"}],
            "PermitBatch": [{"name": "details", "type": "PermitDetails[]"}, {"name": "spender", "type": "address"}, {"name": "sigDeadline", "type": "uint256"}]},
           "primaryType": "PermitBatch",
           "domain": {"name": "Permit2", "chainId": 1, "verifyingContract": "0x000000000022D473030F116dDEE9F6B43aC78BA3"},
           "message": {"details": [{"token": "0x6B175474E89094C44Da98b954EedeAC495271d0F", "amount": "1461501637330902918203684832716283019655932542975", "expiration": 1, "nonce": 0}],
                       "spender": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB", "sigDeadline": "1900000000"}}"#
            .to_string(),
        r#"{"types": {"EIP712Domain": [{"name": "chainId", "type": "uint256"}, {"name": "salt", "type": "bytes32"}],
            "All": [{"name": "a", "type": "address"}, {"name": "b", "type": "bool"}, {"name": "s", "type": "string"},
                    {"name": "d", "type": "bytes"}, {"name": "f", "type": "bytes4"}, {"name": "u", "type": "uint8"},
                    {"name": "i", "type": "int256"}, {"name": "m", "type": "uint16[2][]"}, {"name": "n", "type": "Inner[1]"}],
            "Inner": [{"name": "x", "type": "int8"}]},
           "primaryType": "All",
           "domain": {"chainId": "0x1", "salt": "0x0000000000000000000000000000000000000000000000000000000000000001"},
           "message": {"a": "0x0000000000000000000000000000000000000001", "b": true, "s": "é
", "d": "0x00ff",
                       "f": "0x01020304", "u": 255, "i": "-57896044618658097711785492504343953926634992332820282019728792003956564819968",
                       "m": [[1, 2], [3, 4]], "n": [{"x": -128}]}}"#
            .to_string(),
    ];
    for (i, document) in documents.iter().enumerate() {
        write("typed_data", &format!("document-{i}"), document.as_bytes());
    }
}

fn main() {
    transaction_seeds(&SigningKey::from_bytes(&[0x11; 32].into()).unwrap());
    message_seeds();
    typed_data_seeds();
    policy_seeds();
    engine_seeds();
    println!("seed corpora written under fuzz/corpus/");
}
