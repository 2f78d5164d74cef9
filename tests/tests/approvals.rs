//! Human approval with real processes: a signing key policy parks a 5000 USDC transfer (over its
//! 1000 USDC `require_approval_above`) instead of signing it; the caller gets
//! FAILED_PRECONDITION with the approval id in the status details; approvers with their own
//! Ed25519 keys list, inspect (decoded and re-hashed by the CLI) and approve it with the CLI; one
//! approval is not a quorum of two; the caller's retry with the same request id signs once two
//! approved. A rejection is final. Around the coordinator, the nodes check approvals themselves:
//! a hostile relay cannot use an approval for another request id or payload, nor an expired,
//! rejecting, under-quorum or forged one. An approval that is not decided in time expires (final).

use std::collections::BTreeMap;
use std::path::Path;

use ed25519_dalek::SigningKey;
use prost::Message as _;
use serde_json::Value;
use shardsign_eth::erc20::TRANSFER;
use shardsign_eth::{Address, Eip1559Transaction, Limits, U256, UnsignedTransaction};
use shardsign_policy::approval::{self, ApprovalRequest};
use shardsign_proto::v1::{
    Approvers, CheckPolicyRequest, CreateApiKeyRequest, GetApprovalRequest, ListAuditRequest,
    SignTransactionRequest, SignedStatement, TokenRule, VerifyAuditRequest, approval::Decision,
    check_policy_request, check_policy_response, sign_transaction_request::Transaction,
};
use shardsign_request::Payload;
use shardsign_tests::cli::Cli;
use shardsign_tests::full::{Cluster, permissive_policy, unix_now};
use shardsign_tests::relay;
use tonic::Code;

const USDC: &str = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";
const ALICE: &str = "0x00000000000000000000000000000000000A11cE";

fn usdc_transfer(nonce: u64, whole_usdc: u64) -> UnsignedTransaction {
    let mut data = TRANSFER.to_vec();
    data.extend_from_slice(&[0u8; 12]);
    data.extend_from_slice(&Address::parse("a", ALICE).unwrap().0);
    data.extend_from_slice(
        &(U256::from(whole_usdc) * U256::from(1_000_000u64)).to_be_bytes::<32>(),
    );
    transaction(nonce, USDC, U256::ZERO, data)
}

fn ether(nonce: u64, whole_eth: u64) -> UnsignedTransaction {
    let value = U256::from(whole_eth) * U256::from(10u64).pow(U256::from(18u64));
    transaction(nonce, ALICE, value, Vec::new())
}

fn transaction(nonce: u64, to: &str, value: U256, data: Vec<u8>) -> UnsignedTransaction {
    UnsignedTransaction::Eip1559(Eip1559Transaction {
        chain_id: 1,
        nonce,
        max_priority_fee_per_gas: U256::from(1_000_000_000u64),
        max_fee_per_gas: U256::from(30_000_000_000u64),
        gas_limit: 80_000,
        to: Some(Address::parse("to", to).unwrap()),
        value,
        data,
        access_list: Vec::new(),
    })
}

fn json_out(output: &std::process::Output, what: &str) -> Value {
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"))
}

fn read_approver_key(path: &Path) -> SigningKey {
    let seed: [u8; 32] = hex::decode(std::fs::read_to_string(path).unwrap().trim())
        .unwrap()
        .try_into()
        .unwrap();
    SigningKey::from_bytes(&seed)
}

/// An APPROVAL statement for `request`, signed by `signers`, valid from `issued` for `secs`.
fn statement(
    request: &ApprovalRequest,
    decision: Decision,
    issued: i64,
    secs: i64,
    signers: &[&SigningKey],
) -> Vec<u8> {
    let statement = request.statement("test-cluster", decision, "", issued, issued + secs);
    let mut signed = SignedStatement {
        statement: statement.encode_to_vec(),
        signatures: Vec::new(),
    };
    for key in signers {
        approval::add_signature(key, &mut signed).unwrap();
    }
    signed.encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_requests_sign_after_a_quorum_of_approvers_and_the_nodes_check_it() {
    let cluster = Cluster::start();
    let key = cluster.ceremony("approvals", &[1]).await;
    let cli = Cli::new(&cluster);

    // Three approvers, each with a key made by the CLI; two of them must approve.
    let mut approver_keys = Vec::new();
    let mut public_keys = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let path = cli.path(&format!("{name}.approver"));
        let made = json_out(
            &cli.run(
                &[
                    "--json",
                    "approvals",
                    "keygen",
                    "--out",
                    path.to_str().unwrap(),
                ],
                None,
            ),
            "approvals keygen",
        );
        public_keys.push(made["public_key"].as_str().unwrap().to_string());
        approver_keys.push(path);
    }
    let mut rules = permissive_policy(&key.allowed_chain_ids);
    rules.max_value_per_24h.clear();
    rules.requests_per_minute = 0;
    rules.require_approval_above = "1eth".into();
    rules.approvers = Some(Approvers {
        public_keys: public_keys.clone(),
        quorum: 2,
        valid_secs: 0,
    });
    rules.tokens = vec![TokenRule {
        chain_id: 1,
        address: USDC.into(),
        decimals: 6,
        symbol: "USDC".into(),
        max_amount_per_tx: "10000usdc".into(),
        allowed_recipients: vec!["*".into()],
        require_approval_above: "1000usdc".into(),
        ..Default::default()
    }];
    let set = cluster
        .set_key_policy(&key.key_id, rules.clone())
        .await
        .unwrap();
    assert_eq!(set.nodes_updated, vec![1, 2, 3]);
    let agent = cluster
        .create_api_key(CreateApiKeyRequest {
            label: "agent".into(),
            scopes: vec!["sign".into(), "read".into()],
            key_ids: vec![key.key_id.clone()],
            policy: Some(permissive_policy(&key.allowed_chain_ids)),
            ..Default::default()
        })
        .await
        .api_key;
    let approver = cluster
        .create_api_key(CreateApiKeyRequest {
            label: "approvers' desk".into(),
            scopes: vec!["approve".into()],
            all_keys: true,
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

    // The dry run says so, without parking anything; at the threshold signs at once.
    let answer = signer
        .check_policy(CheckPolicyRequest {
            request: Some(check_policy_request::Request::Transaction(request(
                "",
                &usdc_transfer(0, 5000),
            ))),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.decision,
        check_policy_response::Decision::NeedsApproval as i32
    );
    assert_eq!(answer.rule, "tokens.require_approval_above");
    signer
        .sign_transaction(request("at-threshold", &usdc_transfer(0, 1000)))
        .await
        .expect("1000 USDC is not over the threshold");

    // 5000 USDC: parked, with the approval id in the status details and a header.
    let pay = usdc_transfer(1, 5000);
    let parked = signer
        .sign_transaction(request("pay-5000", &pay))
        .await
        .unwrap_err();
    assert_eq!(parked.code(), Code::FailedPrecondition, "{parked:?}");
    assert!(
        parked
            .message()
            .starts_with("approval required: 5000 USDC > 1000 USDC"),
        "{}",
        parked.message()
    );
    let required = shardsign_proto::rpc::approval_required(parked.details())
        .expect("an ApprovalRequired in the status details");
    let approval_id = required.approval_id.clone();
    assert_eq!(approval_id.len(), 64);
    assert!(
        parked
            .message()
            .contains(&format!("approval {approval_id}"))
    );
    assert_eq!(
        parked
            .metadata()
            .get(shardsign_proto::APPROVAL_ID_HEADER)
            .unwrap(),
        approval_id.as_str()
    );
    assert!(required.expires_at_unix > unix_now() + 23 * 3600);
    let expected = ApprovalRequest::new(
        &key.key_id,
        &Payload::transaction(pay.clone(), &Limits::DEFAULT).unwrap(),
        "pay-5000",
    );
    assert_eq!(approval_id, expected.id(), "the id is the request hash");

    // Approvers see it, decoded by their own CLI.
    let listed = json_out(
        &cli.run(&["--json", "approvals", "list"], Some(&approver)),
        "approvals list",
    );
    assert_eq!(listed["approvals"][0]["approval_id"], approval_id.as_str());
    let shown = json_out(
        &cli.run(
            &["--json", "approvals", "show", &approval_id],
            Some(&approver),
        ),
        "approvals show",
    );
    assert_eq!(shown["request"]["erc20"]["amount"], "5000000000");
    assert_eq!(shown["request"]["erc20"]["to"], ALICE);
    assert_eq!(shown["state"], "pending");
    assert_eq!(shown["cluster_id"], "test-cluster");
    // The agent's key may not reach the approvals service.
    let denied = cli.run(&["approvals", "list"], Some(&agent));
    assert!(!denied.status.success());

    let approve = |who: usize| {
        cli.run(
            &[
                "--json",
                "approvals",
                "approve",
                &approval_id,
                "--key",
                approver_keys[who].to_str().unwrap(),
            ],
            Some(&approver),
        )
    };
    // One approval (twice by the same approver) is not a quorum of two.
    for _ in 0..2 {
        let one = json_out(&approve(0), "approve by alice");
        assert_eq!(one["state"], "pending");
        assert_eq!(one["approved_by"].as_array().unwrap().len(), 1);
    }
    let still = signer
        .sign_transaction(request("pay-5000", &pay))
        .await
        .unwrap_err();
    assert_eq!(still.code(), Code::FailedPrecondition);
    assert!(
        still.message().contains("approved by 1 of the 2 needed"),
        "{}",
        still.message()
    );
    // A stranger's key (not in the policy) counts for nothing.
    let stranger = cli.path("stranger.approver");
    json_out(
        &cli.run(
            &[
                "--json",
                "approvals",
                "keygen",
                "--out",
                stranger.to_str().unwrap(),
            ],
            None,
        ),
        "keygen",
    );
    let refused = cli.run(
        &[
            "approvals",
            "approve",
            &approval_id,
            "--key",
            stranger.to_str().unwrap(),
        ],
        Some(&approver),
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("no valid signature by an approver"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let two = json_out(&approve(1), "approve by bob");
    assert_eq!(two["state"], "approved");

    // The retry with the same request id signs, and again returns the same reply.
    let signed = signer
        .sign_transaction(request("pay-5000", &pay))
        .await
        .expect("approved by a quorum")
        .into_inner();
    let decoded =
        shardsign_eth::SignedTransaction::decode(&signed.raw_transaction, &Limits::DEFAULT)
            .unwrap();
    assert_eq!(decoded.transaction(), &pay);
    assert_eq!(decoded.recover_sender().unwrap().to_checksum(), key.address);
    let again = signer
        .sign_transaction(request("pay-5000", &pay))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.raw_transaction, signed.raw_transaction);

    // Around the coordinator: the nodes verify the approval themselves.
    let record = cluster
        .approvals_with(Some(&approver))
        .get_approval(GetApprovalRequest {
            approval_id: approval_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let quorum_approval = SignedStatement {
        statement: record.statement.clone(),
        signatures: record.signatures.clone(),
    }
    .encode_to_vec();
    let mut clients = BTreeMap::new();
    for id in [1u8, 2] {
        clients.insert(id, cluster.nodes.client(id).await);
    }
    let policy = cluster
        .signed_policy(&key.key_id, rules.clone(), cluster.next_policy_version())
        .encode_to_vec();
    let relay_sign = |tx: UnsignedTransaction, request_id: &'static str, approval: Vec<u8>| {
        let (clients, policy, key_id) = (&clients, &policy, &key.key_id);
        async move {
            relay::sign_with_approval(
                clients,
                key_id,
                &Payload::transaction(tx, &Limits::DEFAULT).unwrap(),
                policy,
                request_id,
                &approval,
            )
            .await
        }
    };
    relay_sign(pay.clone(), "pay-5000", quorum_approval.clone())
        .await
        .expect("the nodes accept the quorum's approval of this very request");
    let keys: Vec<SigningKey> = approver_keys.iter().map(|p| read_approver_key(p)).collect();
    let strangers = [
        SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
        SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
    ];
    let now = unix_now();
    let under_quorum = SignedStatement {
        statement: record.statement.clone(),
        signatures: record.signatures[..1].to_vec(),
    }
    .encode_to_vec();
    let cases: Vec<(&str, UnsignedTransaction, &'static str, Vec<u8>, &str)> = vec![
        (
            "another request id",
            pay.clone(),
            "pay-5000-again",
            quorum_approval.clone(),
            "not this request",
        ),
        (
            "another payload",
            usdc_transfer(1, 6000),
            "pay-5000",
            quorum_approval.clone(),
            "not this request",
        ),
        (
            "no approval",
            pay.clone(),
            "pay-5000",
            Vec::new(),
            "none was given",
        ),
        (
            "under quorum",
            pay.clone(),
            "pay-5000",
            under_quorum,
            "signed by 1 of the 3 approvers; this request needs 2",
        ),
        (
            "expired",
            pay.clone(),
            "pay-5000",
            statement(
                &expected,
                Decision::Approve,
                now - 7200,
                3600,
                &[&keys[0], &keys[1]],
            ),
            "expired at",
        ),
        (
            "a rejection relabelled",
            pay.clone(),
            "pay-5000",
            statement(
                &expected,
                Decision::Reject,
                now,
                3600,
                &[&keys[0], &keys[1]],
            ),
            "rejects the request",
        ),
        (
            "forged by strangers",
            pay.clone(),
            "pay-5000",
            statement(
                &expected,
                Decision::Approve,
                now,
                3600,
                &[&strangers[0], &strangers[1]],
            ),
            "signed by 0 of the 3 approvers",
        ),
    ];
    for (name, tx, request_id, approval, words) in cases {
        let error = relay_sign(tx, request_id, approval)
            .await
            .expect_err("the nodes refuse");
        assert_eq!(
            error.status.code(),
            Code::FailedPrecondition,
            "{name}: {error:?}"
        );
        assert!(
            error.status.message().contains("approval required")
                && error.status.message().contains(words),
            "{name}: {}",
            error.status.message()
        );
    }

    // A rejection by one approver is final.
    let big = ether(2, 2);
    let parked = signer
        .sign_transaction(request("big-2", &big))
        .await
        .unwrap_err();
    let big_id = shardsign_proto::rpc::approval_required(parked.details())
        .unwrap()
        .approval_id;
    assert!(
        parked.message().contains("2 ETH > 1 ETH"),
        "{}",
        parked.message()
    );
    let rejected = json_out(
        &cli.run(
            &[
                "--json",
                "approvals",
                "reject",
                &big_id,
                "--key",
                approver_keys[2].to_str().unwrap(),
                "--reason",
                "not today",
            ],
            Some(&approver),
        ),
        "approvals reject",
    );
    assert_eq!(rejected["state"], "rejected");
    let final_answer = signer
        .sign_transaction(request("big-2", &big))
        .await
        .unwrap_err();
    assert_eq!(final_answer.code(), Code::FailedPrecondition);
    assert!(
        final_answer.message().contains("was rejected by approver")
            && final_answer.message().contains("not today"),
        "{}",
        final_answer.message()
    );
    let late = cli.run(
        &[
            "approvals",
            "approve",
            &big_id,
            "--key",
            approver_keys[0].to_str().unwrap(),
        ],
        Some(&approver),
    );
    assert!(!late.status.success());
    assert!(String::from_utf8_lossy(&late.stderr).contains("is already rejected"));

    // A request nobody decides in time expires, for good (a policy with a 1 s wait).
    rules.approvers.as_mut().unwrap().valid_secs = 1;
    cluster
        .set_key_policy(&key.key_id, rules.clone())
        .await
        .unwrap();
    let slow = ether(3, 3);
    let parked = signer
        .sign_transaction(request("slow-3", &slow))
        .await
        .unwrap_err();
    let slow_id = shardsign_proto::rpc::approval_required(parked.details())
        .unwrap()
        .approval_id;
    let mut approvals = cluster.approvals_with(Some(&approver));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let state = approvals
            .get_approval(GetApprovalRequest {
                approval_id: slow_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .state;
        if state == "expired" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let expired = signer
        .sign_transaction(request("slow-3", &slow))
        .await
        .unwrap_err();
    assert_eq!(expired.code(), Code::FailedPrecondition);
    assert!(
        expired.message().contains("expired at"),
        "{}",
        expired.message()
    );

    // Every step is in the audit log, which still verifies.
    let mut admin = cluster.admin();
    let audit = admin
        .list_audit(ListAuditRequest {
            after_seq: 0,
            limit: 1000,
        })
        .await
        .unwrap()
        .into_inner();
    let operations: Vec<&str> = audit.records.iter().map(|r| r.operation.as_str()).collect();
    for operation in [
        "approval_requested",
        "approval_signed",
        "approval_approved",
        "approval_rejected",
        "approval_expired",
    ] {
        assert!(
            operations.contains(&operation),
            "{operation} missing from {operations:?}"
        );
    }
    let report = admin
        .verify_audit(VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(report.intact, "{report:?}");
}
