//! ERC-20 token rules with real processes, on both enforcement paths: through the coordinator's
//! public API (API-key and signing-key policies) and around it (a relay's session, refused or
//! signed by the nodes on their own reading of the operator-signed policy). A transfer at the
//! cap signs and eth-account reads it back as a call to the token from the key's address; one
//! unit over, an unlisted recipient, an unlimited approval and malformed calldata are refused
//! with the rule and the amounts in the token's units. Rolling 24 h token caps: the coordinator's
//! ledger refuses the API key's transfer that would cross its cap, and each node's own ledger
//! refuses a relay's transfer that would cross the signing key policy's cap. An x402-shaped
//! EIP-3009 authorization for the listed token counts against the same caps and must expire
//! within the policy's window. `CheckPolicy` (API and CLI) answers the same way as signing would,
//! with the coordinator's budgets, and counts nothing.

use std::collections::BTreeMap;

use serde_json::json;
use shardsign_eth::erc20::{APPROVE, TRANSFER};
use shardsign_eth::{Address, Eip1559Transaction, Limits, U256, UnsignedTransaction};
use shardsign_proto::v1::{
    CheckPolicyRequest, CreateApiKeyRequest, SignTransactionRequest, SignTypedDataRequest,
    TokenRule, TypedDataRule, check_policy_request, check_policy_response::Decision,
    sign_transaction_request::Transaction,
};
use shardsign_request::Payload;
use shardsign_tests::cli::Cli;
use shardsign_tests::eth_account;
use shardsign_tests::full::{Cluster, permissive_policy};
use shardsign_tests::relay;
use shardsign_tests::tx_json::hex0x;
use shardsign_tests::x402::{Payment, nonce};
use tonic::Code;

const USDC: &str = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";
const DAI: &str = "0x6B175474E89094C44Da98b954EedeAC495271d0F";
const ALICE: &str = "0x00000000000000000000000000000000000a11ce";
const BOB: &str = "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB";
/// 250 USDC in base units (6 decimals).
const CAP: u64 = 250_000_000;

/// USDC: 250 per call; 24 h cap `per_24h`.
fn usdc_rule(per_24h: &str) -> TokenRule {
    TokenRule {
        chain_id: 1,
        address: USDC.into(),
        decimals: 6,
        symbol: "USDC".into(),
        max_amount_per_tx: "250usdc".into(),
        allowed_recipients: vec![ALICE.into()],
        allowed_spenders: vec![ALICE.into()],
        allow_unlimited_approval: false,
        require_approval_above: String::new(),
        max_amount_per_24h: per_24h.into(),
    }
}

/// DAI (signing key policy only): 250 per call, 300 per 24 h.
fn dai_rule() -> TokenRule {
    TokenRule {
        address: DAI.into(),
        decimals: 18,
        symbol: "DAI".into(),
        max_amount_per_tx: "250dai".into(),
        ..usdc_rule("300dai")
    }
}

fn word(address: &str) -> Vec<u8> {
    [&[0u8; 12][..], &Address::parse("a", address).unwrap().0[..]].concat()
}

fn amount(value: U256) -> Vec<u8> {
    value.to_be_bytes::<32>().to_vec()
}

fn transfer(to: &str, units: u64) -> Vec<u8> {
    [&TRANSFER[..], &word(to), &amount(U256::from(units))].concat()
}

/// An x402 "exact" payment: EIP-3009 TransferWithAuthorization of `units` USDC to ALICE, valid
/// for `valid_for` seconds.
fn x402(from: &str, units: u64, valid_for: u64) -> String {
    Payment {
        domain_name: "USD Coin",
        chain_id: 1,
        token: USDC,
        from,
        to: ALICE,
        value: units,
        valid_before: shardsign_tests::full::unix_now() as u64 + valid_for,
        nonce: nonce(rand::random::<u64>()),
    }
    .document()
    .to_string()
}

fn usdc_payments() -> TypedDataRule {
    TypedDataRule {
        chain_id: 1,
        verifying_contract: USDC.into(),
        name: "USD Coin".into(),
        version: String::new(),
        primary_types: vec!["TransferWithAuthorization".into()],
        conditions: Vec::new(),
    }
}

fn dai_transfer(whole: u64) -> Vec<u8> {
    let units = U256::from(whole) * U256::from(10u64).pow(U256::from(18u64));
    [&TRANSFER[..], &word(ALICE), &amount(units)].concat()
}

fn token_call(nonce: u64, data: Vec<u8>) -> UnsignedTransaction {
    call_to(USDC, nonce, data)
}

fn call_to(token: &str, nonce: u64, data: Vec<u8>) -> UnsignedTransaction {
    UnsignedTransaction::Eip1559(Eip1559Transaction {
        chain_id: 1,
        nonce,
        max_priority_fee_per_gas: U256::from(1_000_000_000u64),
        max_fee_per_gas: U256::from(30_000_000_000u64),
        gas_limit: 80_000,
        to: Some(Address::parse("to", token).unwrap()),
        value: U256::ZERO,
        data,
        access_list: Vec::new(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_rules_hold_through_the_coordinator_and_at_the_nodes() {
    let cluster = Cluster::start();
    let key = cluster.ceremony("tokens", &[1]).await;
    let mut rules = permissive_policy(&key.allowed_chain_ids);
    rules.max_value_per_24h.clear();
    rules.requests_per_minute = 0;
    rules.tokens = vec![usdc_rule("1000usdc"), dai_rule()];
    rules.allowed_typed_data = vec![usdc_payments()];
    let set = cluster
        .set_key_policy(&key.key_id, rules.clone())
        .await
        .unwrap();
    assert_eq!(set.nodes_updated, vec![1, 2, 3]);
    let mut agent_rules = permissive_policy(&key.allowed_chain_ids);
    agent_rules.tokens = vec![usdc_rule("400usdc")];
    agent_rules.allowed_typed_data = vec![usdc_payments()];
    let agent = cluster
        .create_api_key(CreateApiKeyRequest {
            label: "token agent".into(),
            scopes: vec!["sign".into()],
            key_ids: vec![key.key_id.clone()],
            policy: Some(agent_rules),
            ..Default::default()
        })
        .await
        .api_key;
    let mut signer = cluster.signer_with(Some(&agent));
    let request = |id: &str, tx: &UnsignedTransaction| SignTransactionRequest {
        key_id: key.key_id.clone(),
        request_id: id.into(),
        transaction: Some(Transaction::UnsignedRlp(tx.signing_payload())),
    };

    // A dry run first: allowed, with the budgets before it, and nothing counted (twice the same).
    let check = |tx: &UnsignedTransaction| CheckPolicyRequest {
        request: Some(check_policy_request::Request::Transaction(request("", tx))),
    };
    let at_cap = token_call(0, transfer(ALICE, CAP));
    for _ in 0..2 {
        let answer = signer
            .check_policy(check(&at_cap))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.decision, Decision::Allow as i32, "{answer:?}");
        let budgets: Vec<_> = answer
            .budgets
            .iter()
            .map(|b| {
                (
                    b.policy.as_str(),
                    b.asset.as_str(),
                    b.cap.as_str(),
                    b.spent.as_str(),
                )
            })
            .collect();
        assert_eq!(
            budgets,
            [
                ("api_key", "USDC", "400000000", "0"),
                ("signing_key", "USDC", "1000000000", "0")
            ]
        );
    }
    let answer = signer
        .check_policy(check(&token_call(0, transfer(BOB, 1))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.decision, Decision::Refuse as i32);
    assert_eq!(
        (answer.rule.as_str(), answer.policy.as_str()),
        ("tokens.allowed_recipients", "api_key")
    );

    // At the cap: signed, and eth-account reads a call to the token from the key's address.
    let signed = signer
        .sign_transaction(request("at-cap", &at_cap))
        .await
        .unwrap()
        .into_inner();
    let recovered = eth_account::call(&json!({ "recover_txs": [hex0x(&signed.raw_transaction)] }));
    assert_eq!(
        recovered["recovered_txs"][0]["sender"],
        key.address.as_str()
    );

    let mut unlimited = APPROVE.to_vec();
    unlimited.extend(word(ALICE));
    unlimited.extend([0xff; 32]);
    let refused_cases = [
        (
            "over",
            transfer(ALICE, CAP + 1),
            "tokens.max_amount_per_tx: transfer of 250.000001 USDC > 250 USDC",
        ),
        (
            "stranger",
            transfer(BOB, 1),
            "tokens.allowed_recipients: transfer to 0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB",
        ),
        ("unlimited", unlimited, "tokens.allow_unlimited_approval"),
        (
            "short",
            transfer(ALICE, 1)[..67].to_vec(),
            "transfer: calldata is 67 bytes; the call takes exactly 68",
        ),
    ];
    for (id, data, words) in &refused_cases {
        let refused = signer
            .sign_transaction(request(id, &token_call(1, data.clone())))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{id}: {refused:?}");
        assert!(
            refused.message().contains(words),
            "{id}: {}",
            refused.message()
        );
    }

    // An x402 payment of 100 USDC for the listed token: signed, recovered by eth-account.
    let typed = |id: &str, document: String| SignTypedDataRequest {
        key_id: key.key_id.clone(),
        request_id: id.into(),
        typed_data: document,
    };
    let payment = x402(&key.address, 100_000_000, 600);
    let paid = signer
        .sign_typed_data(typed("x402-100", payment.clone()))
        .await
        .unwrap()
        .into_inner();
    let recovered = eth_account::call(&json!({ "recover_typed": [{
        "document": payment, "signature": hex0x(&paid.signature)}] }));
    assert_eq!(recovered["recovered_typed"][0], key.address.as_str());

    // The API key's 24 h cap (400 USDC), in the coordinator's ledger, counts transfers and
    // payments alike: 350 signed, 200 more would cross it, 50 reaches it exactly, and then even
    // a payment of one unit is refused.
    let refused = signer
        .sign_transaction(request(
            "day-over",
            &token_call(1, transfer(ALICE, 200_000_000)),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains(
            "tokens.max_amount_per_24h: 350 USDC already signed in the last 24 h + 200 USDC > 400 USDC"
        ),
        "{}",
        refused.message()
    );
    signer
        .sign_transaction(request(
            "day-exact",
            &token_call(1, transfer(ALICE, 50_000_000)),
        ))
        .await
        .unwrap();
    // The dry run now says what signing would: the API key's budget is spent.
    let answer = signer
        .check_policy(check(&token_call(2, transfer(ALICE, 1))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.decision, Decision::Refuse as i32);
    assert_eq!(answer.rule, "tokens.max_amount_per_24h");
    assert_eq!(answer.policy, "api_key");
    assert_eq!(answer.budgets[0].remaining, "0");
    assert_eq!(answer.budgets[1].spent, "400000000");
    // So does the CLI, which exits non-zero on a refusal.
    let cli = Cli::new(&cluster);
    let data = hex0x(&transfer(ALICE, 1));
    let dry = cli.run(
        &[
            "--json",
            "policy",
            "check",
            "tx",
            "--key",
            &key.key_id,
            "--chain-id",
            "1",
            "--to",
            USDC,
            "--gas",
            "80000",
            "--data",
            &data,
        ],
        Some(&agent),
    );
    assert!(!dry.status.success());
    let stdout = String::from_utf8_lossy(&dry.stdout);
    let shown: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap_or_default())
        .expect("the answer is shown as JSON");
    assert_eq!(shown["decision"], "refuse");
    assert_eq!(shown["rule"], "tokens.max_amount_per_24h");
    for (id, document, words) in [
        (
            "x402-over-day",
            x402(&key.address, 1, 600),
            "tokens.max_amount_per_24h: 400 USDC already signed in the last 24 h + 0.000001 USDC > 400 USDC",
        ),
        (
            "x402-too-long",
            x402(&key.address, 1, 7_200),
            "max_permit_validity_secs: validBefore",
        ),
    ] {
        let refused = signer
            .sign_typed_data(typed(id, document))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{id}: {refused:?}");
        assert!(
            refused.message().contains(words),
            "{id}: {}",
            refused.message()
        );
    }

    // Around the coordinator: the nodes read the same signed policy and decide alike.
    let mut clients = BTreeMap::new();
    for id in [1u8, 3] {
        clients.insert(id, cluster.nodes.client(id).await);
    }
    let statement = prost::Message::encode_to_vec(&cluster.signed_policy(
        &key.key_id,
        rules,
        cluster.next_policy_version(),
    ));
    let relay_payload = |payload: Payload| {
        let (clients, statement, key_id) = (&clients, &statement, &key.key_id);
        async move {
            relay::sign_with_policy(
                clients,
                [1, 3],
                key_id,
                &payload,
                payload.signing_hash(),
                statement,
                None,
                None,
            )
            .await
        }
    };
    let relay_sign = |tx: UnsignedTransaction| {
        relay_payload(Payload::transaction(tx, &Limits::DEFAULT).unwrap())
    };
    let relay_typed = |document: String| {
        relay_payload(Payload::typed_data("typed_data", document.into_bytes()).unwrap())
    };
    let results = relay_sign(token_call(2, transfer(ALICE, CAP)))
        .await
        .expect("the nodes sign a transfer at the cap");
    assert_eq!(results.len(), 2);
    for (_, data, words) in refused_cases {
        let error = relay_sign(token_call(3, data))
            .await
            .expect_err("the node refuses what its signed policy does not allow");
        assert_eq!(error.status.code(), Code::PermissionDenied, "{error:?}");
        assert!(
            error.status.message().contains(words),
            "{}",
            error.status.message()
        );
    }
    // The nodes read payments the same way: a 250 USDC payment signs, one valid for two hours
    // does not.
    relay_typed(x402(&key.address, CAP, 600))
        .await
        .expect("the nodes sign a 250 USDC payment");
    let error = relay_typed(x402(&key.address, 1, 7_200))
        .await
        .expect_err("the nodes refuse a payment valid for two hours");
    assert!(
        error.status.message().contains("max_permit_validity_secs"),
        "{}",
        error.status.message()
    );
    // Each node's own ledger holds the signing key policy's 24 h cap on DAI (300): nodes 1 and
    // 3 co-signed 250, so 51 more is refused by whichever answers, with its own count.
    relay_sign(call_to(DAI, 4, dai_transfer(250)))
        .await
        .expect("the nodes sign 250 DAI");
    let error = relay_sign(call_to(DAI, 5, dai_transfer(51)))
        .await
        .expect_err("the nodes' ledgers refuse the 24 h cap");
    assert_eq!(error.status.code(), Code::PermissionDenied, "{error:?}");
    assert!(
        error.status.message().contains(
            "tokens.max_amount_per_24h: 250 DAI co-signed by this node in the last 24 h + 51 DAI > 300 DAI"
        ),
        "{}",
        error.status.message()
    );
}
