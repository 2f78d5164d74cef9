//! The signing surface beyond transactions, with real processes. EIP-712 typed data: the EIP's
//! Mail example, an EIP-2612 Permit and an EIP-3009 TransferWithAuthorization (an x402 payment)
//! signed through the public API and the CLI, each signature recovered to the key's address by
//! eth-account over eth-account's own hash. EIP-7702 authorizations: signed through the API and
//! the CLI, the authority recovered by eth-account over its own authorization hash; set-code
//! (type 4) transactions carrying them, through the API's typed field and the CLI's unsigned RLP,
//! decoded and recovered by eth-account. Refused: a domain or a delegate the policies do not
//! allow (also inside a set-code transaction), chain id 0 without the policy saying so (by the
//! coordinator, and by the nodes themselves when a relay goes around it), a malformed document
//! (with the field's path), and a policy that would let an app name alone approve Safe
//! transactions.

use std::collections::BTreeMap;

use serde_json::json;
use shardsign_proto::v1::{
    CreateApiKeyRequest, Eip7702Transaction, FieldCondition, SignAuthorizationRequest,
    SignTransactionRequest, SignTypedDataRequest, SignedAuthorization, TypedDataRule,
    sign_transaction_request::Transaction,
};
use shardsign_tests::cli::Cli;
use shardsign_tests::eth_account;
use shardsign_tests::full::{Cluster, permissive_policy};
use shardsign_tests::relay;
use tonic::Code;

const MAIL_CONTRACT: &str = "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC";
const TOKEN: &str = "0x6B175474E89094C44Da98b954EedeAC495271d0F";
const USDC_BASE: &str = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913";
const BOB: &str = "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB";
/// A smart-account implementation a key may delegate to.
const DELEGATE: &str = "0x63c0c19a282a1B52b07dD5a65b58948A07DAE32B";

fn domain_types(with_name_and_version: bool) -> serde_json::Value {
    let mut fields = Vec::new();
    if with_name_and_version {
        fields.push(json!({"name": "name", "type": "string"}));
        fields.push(json!({"name": "version", "type": "string"}));
    }
    fields.push(json!({"name": "chainId", "type": "uint256"}));
    fields.push(json!({"name": "verifyingContract", "type": "address"}));
    json!(fields)
}

fn mail() -> serde_json::Value {
    json!({
        "types": {
            "EIP712Domain": domain_types(true),
            "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
            "Mail": [{"name": "from", "type": "Person"}, {"name": "to", "type": "Person"},
                     {"name": "contents", "type": "string"}]
        },
        "primaryType": "Mail",
        "domain": {"name": "Ether Mail", "version": "1", "chainId": 1, "verifyingContract": MAIL_CONTRACT},
        "message": {
            "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
            "to": {"name": "Bob", "wallet": BOB},
            "contents": "Hello, Bob!"
        }
    })
}

fn permit(owner: &str) -> serde_json::Value {
    json!({
        "types": {
            "EIP712Domain": domain_types(true),
            "Permit": [{"name": "owner", "type": "address"}, {"name": "spender", "type": "address"},
                       {"name": "value", "type": "uint256"}, {"name": "nonce", "type": "uint256"},
                       {"name": "deadline", "type": "uint256"}]
        },
        "primaryType": "Permit",
        "domain": {"name": "Dai Stablecoin", "version": "1", "chainId": 1, "verifyingContract": TOKEN},
        "message": {"owner": owner, "spender": BOB, "value": "1000000000000000000000",
                    "nonce": 0, "deadline": "0xffffffffffff"}
    })
}

/// Permits in the token's domain, only for BOB and at most 1000 tokens (field conditions).
fn permit_rule() -> TypedDataRule {
    let mut entry = rule(1, TOKEN, "", "Permit");
    entry.conditions = vec![
        FieldCondition {
            path: "message.spender".into(),
            op: "in".into(),
            values: vec![BOB.into()],
        },
        FieldCondition {
            path: "message.value".into(),
            op: "le".into(),
            values: vec!["1000000000000000000000".into()],
        },
    ];
    entry
}

fn x402(from: &str, domain_name: &str) -> serde_json::Value {
    shardsign_tests::x402::Payment {
        domain_name,
        chain_id: 8453,
        token: USDC_BASE,
        from,
        to: BOB,
        value: 10_000,
        valid_before: 1_900_000_000,
        nonce: [0xab; 32],
    }
    .document()
}

fn rule(chain_id: u64, contract: &str, name: &str, primary: &str) -> TypedDataRule {
    TypedDataRule {
        chain_id,
        verifying_contract: contract.into(),
        name: name.into(),
        version: String::new(),
        primary_types: vec![primary.into()],
        conditions: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_data_and_authorizations_sign_through_the_api_and_recover_with_eth_account() {
    let cluster = Cluster::start();
    let key = cluster.ceremony("typed", &[1, 8453]).await;
    let entries = vec![
        rule(1, MAIL_CONTRACT, "Ether Mail", "Mail"),
        permit_rule(),
        rule(8453, USDC_BASE, "USD Coin", "TransferWithAuthorization"),
    ];
    let mut key_rules = permissive_policy(&key.allowed_chain_ids);
    key_rules.max_value_per_24h.clear();
    key_rules.requests_per_minute = 0;
    key_rules.allowed_typed_data = entries.clone();
    key_rules.allowed_delegates = vec![DELEGATE.into()];
    let set = cluster
        .set_key_policy(&key.key_id, key_rules.clone())
        .await
        .unwrap();
    assert_eq!(set.nodes_updated, vec![1, 2, 3]);
    let mut agent_rules = permissive_policy(&key.allowed_chain_ids);
    agent_rules.allowed_typed_data = entries;
    agent_rules.allowed_delegates = vec![DELEGATE.into()];
    let agent = cluster
        .create_api_key(CreateApiKeyRequest {
            label: "typed-data agent".into(),
            scopes: vec!["sign".into()],
            key_ids: vec![key.key_id.clone()],
            policy: Some(agent_rules),
            ..Default::default()
        })
        .await
        .api_key;
    let mut signer = cluster.signer_with(Some(&agent));
    let sign = |document: &serde_json::Value, request_id: &str| SignTypedDataRequest {
        key_id: key.key_id.clone(),
        request_id: request_id.into(),
        typed_data: document.to_string(),
    };

    let documents = [mail(), permit(&key.address), x402(&key.address, "USD Coin")];
    let mut to_recover = Vec::new();
    for (index, document) in documents.iter().enumerate() {
        let reply = signer
            .sign_typed_data(sign(document, &format!("typed-{index}")))
            .await
            .unwrap_or_else(|e| panic!("document {index}: {e:?}"))
            .into_inner();
        assert_eq!(reply.signer, key.address);
        assert_eq!(reply.signature.len(), 65);
        assert!(matches!(reply.signature[64], 27 | 28));
        assert_eq!(
            reply.primary_type,
            document["primaryType"].as_str().unwrap()
        );
        to_recover.push(json!({
            "document": document.to_string(),
            "signature": format!("0x{}", hex::encode(&reply.signature)),
        }));
    }
    let recovered = eth_account::call(&json!({ "recover_typed": to_recover }));
    for (index, address) in recovered["recovered_typed"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(address.as_str().unwrap(), key.address, "document {index}");
    }

    // The CLI (the Rust client underneath: it hashes the document too and checks the signature
    // recovers over its own hash) signs the permit from a file.
    let cli = Cli::new(&cluster);
    let file = cli.path("permit.json");
    std::fs::write(&file, documents[1].to_string()).unwrap();
    let signed = cli.json(
        &[
            "sign",
            "typed-data",
            "--key",
            &key.key_id,
            file.to_str().unwrap(),
        ],
        Some(&agent),
    );
    assert_eq!(signed["signer"], key.address.as_str(), "{signed}");
    let recovered = eth_account::call(&json!({ "recover_typed": [{
        "document": documents[1].to_string(),
        "signature": signed["signature"],
    }] }));
    assert_eq!(recovered["recovered_typed"][0], key.address.as_str());

    // The same document under the same request id is the same signature (idempotent); a
    // document outside the allowed domains is refused with the rule and the domain.
    let again = signer
        .sign_typed_data(sign(&documents[0], "typed-0"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        format!("0x{}", hex::encode(&again.signature)),
        to_recover[0]["signature"].as_str().unwrap()
    );
    let refused = signer
        .sign_typed_data(sign(&x402(&key.address, "USDC"), "typed-other-name"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("allowed_typed_data: no entry allows TransferWithAuthorization"),
        "{}",
        refused.message()
    );
    // A permit in the allowed domain but over the entry's condition on its value is refused,
    // naming the field and both values.
    let mut too_much = permit(&key.address);
    too_much["message"]["value"] = json!("1000000000000000000001");
    let refused = signer
        .sign_typed_data(sign(&too_much, "typed-over-condition"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains(
            "allowed_typed_data.conditions: Permit in an allowed domain, but message.value: 1000000000000000000001 > 1000000000000000000000"
        ),
        "{}",
        refused.message()
    );
    let mut broken = mail();
    broken["message"]["to"]
        .as_object_mut()
        .unwrap()
        .remove("wallet");
    let invalid = signer
        .sign_typed_data(sign(&broken, "typed-broken"))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        invalid
            .message()
            .contains("typed_data: message.to.wallet: missing"),
        "{}",
        invalid.message()
    );

    // EIP-7702: an authorization for the allowed delegate, through the API and the CLI; the
    // authority eth-account recovers is the key's address.
    let authorize = |chain_id: u64, address: &str, request_id: &str| SignAuthorizationRequest {
        key_id: key.key_id.clone(),
        request_id: request_id.into(),
        chain_id,
        address: address.into(),
        nonce: 7,
    };
    let signed = signer
        .sign_authorization(authorize(8453, DELEGATE, "auth-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((signed.chain_id, signed.nonce), (8453, 7));
    assert_eq!(signed.address, DELEGATE);
    let by_cli = cli.json(
        &[
            "sign",
            "authorization",
            "--key",
            &key.key_id,
            "--chain-id",
            "1",
            "--address",
            DELEGATE,
            "--nonce",
            "0",
        ],
        Some(&agent),
    );
    let authorities = eth_account::call(&json!({ "recover_authorizations": [
        {"chainId": "8453", "address": DELEGATE, "nonce": "7", "yParity": signed.y_parity,
         "r": format!("0x{}", hex::encode(&signed.r)), "s": format!("0x{}", hex::encode(&signed.s))},
        {"chainId": "1", "address": DELEGATE, "nonce": "0", "yParity": by_cli["yParity"],
         "r": by_cli["r"], "s": by_cli["s"]},
    ] }));
    assert_eq!(
        authorities["authorities"],
        json!([key.address, key.address])
    );
    for (request, rule) in [
        (
            authorize(8453, BOB, "auth-other"),
            "allowed_delegates: delegate",
        ),
        (
            authorize(0, DELEGATE, "auth-any-chain"),
            "allow_any_chain_authorization",
        ),
        (authorize(10, DELEGATE, "auth-other-chain"), "chain"),
    ] {
        let refused = signer.sign_authorization(request).await.unwrap_err();
        assert!(
            matches!(
                refused.code(),
                Code::PermissionDenied | Code::InvalidArgument
            ),
            "{refused:?}"
        );
        assert!(refused.message().contains(rule), "{}", refused.message());
    }

    // A set-code transaction carrying the API-signed authorization, through the typed field; then
    // one carrying the CLI-signed one, through the CLI (unsigned RLP underneath). eth-account
    // decodes both as type-4 transactions from the key's address.
    let tuple =
        |chain_id, address: &str, nonce, y_parity, r: Vec<u8>, s: Vec<u8>| SignedAuthorization {
            chain_id,
            address: address.into(),
            nonce,
            y_parity,
            r,
            s,
        };
    let set_code = |request_id: &str, tuples: Vec<SignedAuthorization>| SignTransactionRequest {
        key_id: key.key_id.clone(),
        request_id: request_id.into(),
        transaction: Some(Transaction::Eip7702(Eip7702Transaction {
            chain_id: 8453,
            nonce: 3,
            max_priority_fee_per_gas: "1000000000".into(),
            max_fee_per_gas: "30000000000".into(),
            gas_limit: 100_000,
            to: key.address.clone(),
            value: "0".into(),
            data: vec![],
            access_list: vec![],
            authorization_list: tuples,
        })),
    };
    let api_tuple = tuple(
        8453,
        DELEGATE,
        7,
        signed.y_parity,
        signed.r.clone(),
        signed.s.clone(),
    );
    let by_api = signer
        .sign_transaction(set_code("set-code-1", vec![api_tuple.clone()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_api.raw_transaction[0], 0x04);
    let by_cli_tx = cli.json(
        &[
            "sign",
            "tx",
            "--key",
            &key.key_id,
            "--chain-id",
            "1",
            "--to",
            &key.address,
            "--gas",
            "100000",
            "--authorization",
            &by_cli.to_string(),
        ],
        Some(&agent),
    );
    let raws = [
        format!("0x{}", hex::encode(&by_api.raw_transaction)),
        by_cli_tx["raw_transaction"].as_str().unwrap().to_string(),
    ];
    assert!(raws[1].starts_with("0x04"), "{by_cli_tx}");
    let recovered = eth_account::call(&json!({ "recover_txs": raws }));
    for (index, item) in recovered["recovered_txs"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(item["sender"], key.address.as_str(), "set-code tx {index}");
    }
    assert_eq!(
        recovered["recovered_txs"][0]["hash"],
        format!("0x{}", hex::encode(&by_api.tx_hash))
    );
    // A tuple for a delegate the key may not use, signed by some other authority, is refused
    // with its index; so is a tuple for another chain, and a list with no tuple at all.
    let stranger = k256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap();
    let foreign = shardsign_eth::Authorization {
        chain_id: 8453,
        address: shardsign_eth::Address::parse("a", BOB).unwrap(),
        nonce: 0,
    };
    let foreign_signature =
        shardsign_eth::sign_prehash(&stranger, &foreign.signing_hash()).normalized_low_s();
    let foreign_tuple = tuple(
        8453,
        BOB,
        0,
        u32::from(foreign_signature.recovery_id().to_u8()),
        foreign_signature.r().to_vec(),
        foreign_signature.s().to_vec(),
    );
    let mut other_chain = api_tuple.clone();
    other_chain.chain_id = 1;
    for (request, code, text) in [
        (
            set_code("set-code-foreign", vec![api_tuple.clone(), foreign_tuple]),
            Code::PermissionDenied,
            "allowed_delegates: authorization_list[1]: delegate",
        ),
        (
            set_code("set-code-other-chain", vec![other_chain]),
            Code::PermissionDenied,
            "authorization_list[0] is for chain 1",
        ),
        (
            set_code("set-code-empty", vec![]),
            Code::InvalidArgument,
            "authorization_list: empty",
        ),
    ] {
        let refused = signer.sign_transaction(request).await.unwrap_err();
        assert_eq!(refused.code(), code, "{refused:?}");
        assert!(refused.message().contains(text), "{}", refused.message());
    }

    // Safe transactions by app name alone: the operator's key will not even sign such a policy.
    let mut loose = key_rules.clone();
    loose.allowed_typed_data.push(rule(0, "", "Safe", "SafeTx"));
    let error = cluster
        .policy_key
        .sign_key_policy(
            cluster.statement_header(&key.key_id, cluster.next_policy_version()),
            &loose,
            shardsign_tests::full::unix_now() + 86_400,
        )
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("SafeTx approves account actions"),
        "{error}"
    );

    // Around the coordinator: the nodes check the signed key policy themselves. With one that
    // allows no typed data, a relay's session for the Mail document is refused by the node.
    let mut clients = BTreeMap::new();
    for id in [1u8, 2] {
        clients.insert(id, cluster.nodes.client(id).await);
    }
    // The nodes hold the field conditions of the signed policy themselves.
    let with_conditions = prost::Message::encode_to_vec(&cluster.signed_policy(
        &key.key_id,
        key_rules.clone(),
        cluster.next_policy_version(),
    ));
    let over = shardsign_request::proto::typed_data(too_much.to_string().into_bytes()).unwrap();
    let error = relay::sign_with_policy(
        &clients,
        [1, 2],
        &key.key_id,
        &over,
        over.signing_hash(),
        &with_conditions,
        None,
        None,
    )
    .await
    .expect_err("the node holds the field condition");
    assert_eq!(error.status.code(), Code::PermissionDenied, "{error:?}");
    assert!(
        error
            .status
            .message()
            .contains("allowed_typed_data.conditions"),
        "{}",
        error.status.message()
    );
    let mut without = key_rules;
    without.allowed_typed_data.clear();
    without.allowed_delegates.clear();
    let statement = prost::Message::encode_to_vec(&cluster.signed_policy(
        &key.key_id,
        without,
        cluster.next_policy_version(),
    ));
    let typed =
        shardsign_request::proto::typed_data(documents[0].to_string().into_bytes()).unwrap();
    let delegation =
        shardsign_request::proto::authorization(&authorize(8453, DELEGATE, "relay")).unwrap();
    let Some(set_code_tx) = set_code("relay", vec![api_tuple]).transaction else {
        unreachable!()
    };
    let set_code_payload =
        shardsign_request::proto::transaction(Some(&set_code_tx), &shardsign_eth::Limits::DEFAULT)
            .unwrap();
    for (payload, rule) in [
        (typed, "allowed_typed_data"),
        (delegation, "allowed_delegates"),
        (set_code_payload, "allowed_delegates"),
    ] {
        let error = relay::sign_with_policy(
            &clients,
            [1, 2],
            &key.key_id,
            &payload,
            payload.signing_hash(),
            &statement,
            None,
            None,
        )
        .await
        .expect_err("the node refuses what its signed policy does not allow");
        assert_eq!(error.status.code(), Code::PermissionDenied, "{error:?}");
        assert!(
            error.status.message().contains(rule),
            "{}",
            error.status.message()
        );
    }
}
