//! The trust model, attacked: a node that cheats in the protocol is banned by the node that
//! caught it, for good, and the cluster signs on without it. Node 2 runs as
//! `shardsign-node-malicious` (built only with the test-only `malicious` feature) and corrupts
//! its multiplication message in every signing session.

use std::collections::BTreeMap;

use shardsign_eth::{Address, Eip1559Transaction, U256, UnsignedTransaction};
use shardsign_proto::node::v1::GetIdentityRequest;
use shardsign_proto::node::v1::node_client::NodeClient;
use shardsign_proto::v1::sign_transaction_request::Transaction;
use shardsign_proto::v1::{
    self as api, ClusterStatusRequest, CreateApiKeyRequest, ListApiKeysRequest, ListAuditRequest,
    RevokeApiKeyRequest, WhoAmIRequest,
};
use shardsign_tests::cluster::{KekKind, NodeCluster, metric_value, scrape, workspace_binary};
use shardsign_tests::full::Cluster;
use shardsign_tests::relay::{self, Payload};
use tonic::Code;
use tonic::transport::Channel;

const CORRUPT: &str = "corrupt-multiplication";

async fn clients(cluster: &NodeCluster) -> BTreeMap<u8, NodeClient<Channel>> {
    let mut clients = BTreeMap::new();
    for id in 1..=3 {
        clients.insert(id, cluster.client(id).await);
    }
    clients
}

fn transfer(nonce: u64) -> UnsignedTransaction {
    Eip1559Transaction {
        chain_id: 1,
        nonce,
        max_priority_fee_per_gas: U256::from(1_000_000_000u64),
        max_fee_per_gas: U256::from(30_000_000_000u64),
        gas_limit: 21_000,
        to: Some(Address::parse("to", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").unwrap()),
        value: U256::from(1u64),
        data: Vec::new(),
        access_list: Vec::new(),
    }
    .into()
}

/// A 1-wei transfer as the public API takes it.
fn api_transfer(nonce: u64) -> Transaction {
    Transaction::Eip1559(api::Eip1559Transaction {
        chain_id: 1,
        nonce,
        max_priority_fee_per_gas: "1000000000".into(),
        max_fee_per_gas: "30000000000".into(),
        gas_limit: 21_000,
        to: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into(),
        value: "1".into(),
        ..Default::default()
    })
}

/// Signs `tx` with `signers` through the test relay (the test plays the coordinator).
async fn sign_with(
    clients: &BTreeMap<u8, NodeClient<Channel>>,
    signers: [u8; 2],
    key_id: &str,
    tx: &UnsignedTransaction,
) -> Result<(), relay::RelayError> {
    relay::sign(
        clients,
        signers,
        key_id,
        &Payload::Transaction(tx.clone()),
        tx.signing_hash(),
        None,
        None,
    )
    .await
    .map(|_| ())
}

async fn bans_of(client: &mut NodeClient<Channel>) -> Vec<u32> {
    client
        .get_identity(GetIdentityRequest {})
        .await
        .expect("identity")
        .into_inner()
        .bans
        .iter()
        .map(|b| b.node_id)
        .collect()
}

fn assert_banned(error: &relay::RelayError, reporter: u8, banned: u8) {
    assert_eq!(error.node, reporter, "{error:?}");
    assert_eq!(error.status.code(), Code::FailedPrecondition, "{error:?}");
    let expected = format!("node {reporter} has banned node {banned}");
    assert!(
        error.status.message().contains(&expected),
        "{}",
        error.status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_node_that_caught_a_cheat_bans_and_its_ban_survives_a_restart() {
    let mut cluster = NodeCluster::start(KekKind::KeyFile);
    let key_id = "ban-key";
    relay::keygen(&clients(&cluster).await, key_id, &[1], None)
        .await
        .expect("key generation with three honest nodes");
    cluster.node(2).restart_misbehaving(Some(CORRUPT));
    let clients = clients(&cluster).await;

    // Node 2 corrupts its multiplication message: node 1's engine catches it and node 1 bans it.
    let error = sign_with(&clients, [1, 2], key_id, &transfer(1))
        .await
        .expect_err("a corrupted multiplication message cannot sign");
    assert_banned(&error, 1, 2);
    assert_eq!(bans_of(&mut clients[&1].clone()).await, vec![2]);
    // Node 3 cannot verify the accusation and bans no one: with node 2 honest again, the pairs
    // (2, 3) and (1, 3) sign; (1, 2) stays refused by node 1, even for an honest node 2.
    cluster.node(2).restart_misbehaving(None);
    assert!(bans_of(&mut clients[&3].clone()).await.is_empty());
    sign_with(&clients, [2, 3], key_id, &transfer(2))
        .await
        .expect("pair (2, 3)");
    sign_with(&clients, [1, 3], key_id, &transfer(3))
        .await
        .expect("pair (1, 3)");
    let error = sign_with(&clients, [1, 2], key_id, &transfer(4))
        .await
        .expect_err("node 1 refuses its banned peer");
    assert_banned(&error, 1, 2);

    // A restart forgets nothing; a ceremony (all three nodes) is refused while the ban stands.
    cluster.node(1).stop();
    cluster.node(1).start();
    let error = sign_with(&clients, [1, 2], key_id, &transfer(5))
        .await
        .expect_err("the ban survives a restart");
    assert_banned(&error, 1, 2);
    let error = relay::keygen(&clients, "after-ban", &[1], None)
        .await
        .expect_err("no ceremony while a ban stands");
    assert!(
        error.status.message().contains("has banned node 2"),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cheating_node_is_banned_and_every_request_still_signs_on_another_pair() {
    let mut cluster = Cluster::start();
    let key = cluster.ceremony("ban", &[1]).await;
    cluster.allow_everything(&key).await;
    cluster.nodes.node(2).restart_misbehaving(Some(CORRUPT));
    let node_2_metrics = cluster.nodes.node(2).metrics_address();
    let mut signer = cluster.signer();
    // Pairs rotate: within a few requests both honest nodes meet node 2 and ban it. Every
    // request that met it is retried on the honest pair inside its deadline.
    for nonce in 0..9 {
        signer
            .sign_transaction(api::SignTransactionRequest {
                key_id: key.key_id.clone(),
                request_id: format!("ban-{nonce}"),
                transaction: Some(api_transfer(nonce)),
            })
            .await
            .unwrap_or_else(|status| panic!("request {nonce} failed: {status:?}"));
    }
    let status = cluster
        .admin()
        .cluster_status(ClusterStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let banned_by = |node: u32| -> Vec<u32> {
        status.nodes[node as usize - 1]
            .bans
            .iter()
            .map(|b| b.banned_node_id)
            .collect()
    };
    assert_eq!(banned_by(1), vec![2], "{status:?}");
    assert_eq!(banned_by(3), vec![2], "{status:?}");
    assert!(status.can_sign && !status.can_create_keys, "{status:?}");

    // From now on node 2 is never scheduled: it starts no session while more requests sign.
    let started = |scrape_text: &str| {
        metric_value(
            scrape_text,
            "shardsign_node_sessions_started_total{protocol=\"sign\"}",
        )
    };
    let before = started(&scrape(&node_2_metrics));
    for nonce in 9..13 {
        signer
            .sign_transaction(api::SignTransactionRequest {
                key_id: key.key_id.clone(),
                request_id: format!("after-ban-{nonce}"),
                transaction: Some(api_transfer(nonce)),
            })
            .await
            .expect("signs on the honest pair");
    }
    assert_eq!(started(&scrape(&node_2_metrics)), before);

    // Seen in the metrics and the audit log; a ceremony is refused with the reason.
    let coordinator = scrape(&cluster.coordinator.metrics_address());
    assert_eq!(metric_value(&coordinator, "shardsign_banned_pairs"), 2.0);
    let audit = cluster
        .admin()
        .list_audit(ListAuditRequest {
            after_seq: 0,
            limit: 1000,
        })
        .await
        .expect("audit")
        .into_inner()
        .records;
    let bans: Vec<_> = audit
        .iter()
        .filter(|r| r.operation == "node_banned")
        .collect();
    assert_eq!(bans.len(), 2, "{audit:?}");
    let mut stream = cluster
        .admin()
        .create_key(api::CreateKeyRequest {
            label: "refused".into(),
            allowed_chain_ids: vec![1],
            key_id: String::new(),
        })
        .await;
    let refused = match &mut stream {
        Err(status) => status.clone(),
        Ok(_) => panic!("a ceremony must be refused while a ban stands"),
    };
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("has banned node 2"),
        "{refused:?}"
    );
}

fn admin_request() -> CreateApiKeyRequest {
    CreateApiKeyRequest {
        label: "another admin".into(),
        scopes: vec!["admin".into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_token_is_single_use_and_admin_access_is_recovered_on_the_host() {
    let mut cluster = Cluster::start();
    // The harness used the bootstrap token for the first admin key. Revoke every admin key:
    // the token still does not come back.
    let me = cluster
        .signer_with(Some(&cluster.admin_token))
        .who_am_i(WhoAmIRequest {})
        .await
        .expect("who am i")
        .into_inner();
    cluster
        .admin()
        .revoke_api_key(RevokeApiKeyRequest { id: me.id })
        .await
        .expect("revoke the only admin key");
    let bootstrap = cluster.bootstrap_token.clone();
    let refused = cluster
        .admin_with(Some(&bootstrap))
        .create_api_key(admin_request())
        .await
        .expect_err("the bootstrap token is single-use");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("retired for good"),
        "{refused:?}"
    );

    // Recovery is local: stop the coordinator, make a key on its host, start it again.
    cluster.coordinator.stop();
    let output = std::process::Command::new(workspace_binary(
        "shardsign-coordinator",
        "SHARDSIGN_COORDINATOR_BIN",
    ))
    .args(["admin", "recover", "--config"])
    .arg(&cluster.coordinator.config)
    .env("SHARDSIGN_TEST_BOOTSTRAP_TOKEN", &bootstrap)
    .output()
    .expect("run admin recover");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let recovered = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert!(recovered.starts_with("ss_test_"), "prints the new key");
    cluster.coordinator.start();
    let keys = cluster
        .admin_with(Some(&recovered))
        .list_api_keys(ListApiKeysRequest {})
        .await
        .expect("the recovered key is an admin key")
        .into_inner()
        .api_keys;
    assert!(
        keys.iter().any(|k| k.created_by == "local-recovery"),
        "{keys:?}"
    );
    // A restart does not revive the bootstrap token either; the recovery is in the audit log.
    let refused = cluster
        .admin_with(Some(&bootstrap))
        .create_api_key(admin_request())
        .await
        .expect_err("still single-use after a restart");
    assert!(
        refused.message().contains("retired for good"),
        "{refused:?}"
    );
    let audit = cluster
        .admin_with(Some(&recovered))
        .list_audit(ListAuditRequest {
            after_seq: 0,
            limit: 1000,
        })
        .await
        .expect("audit")
        .into_inner()
        .records;
    assert!(
        audit
            .iter()
            .any(|r| r.operation == "admin_recover" && r.api_key_id == "local-recovery"),
        "{audit:?}"
    );
}

/// The operator's CLI (`shardsign`).
fn operator_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(workspace_binary("shardsign", "SHARDSIGN_CLI_BIN"))
        .args(args)
        .output()
        .expect("run shardsign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_or_a_disable_put_on_the_nodes_host_is_enforced_without_the_coordinator() {
    use prost::Message as _;
    let operator = shardsign_policy::OperatorPolicyKey::generate();
    let mut cluster = NodeCluster::start_with(KekKind::KeyFile, Some(&operator.public_hex()));
    let key_id = "local-path";
    let clients = clients(&cluster).await;
    relay::keygen(&clients, key_id, &[1], None)
        .await
        .expect("key generation");
    // Version 1, loose, as the coordinator forwards it with every request.
    let now = shardsign_tests::full::unix_now();
    let header = shardsign_policy::KeyStatementHeader {
        cluster_id: "test-cluster",
        key_id,
        version: 1,
        issued_at_unix: now,
    };
    let loose = api::Policy {
        allowed_chain_ids: vec![1],
        max_value_per_tx: "unlimited".into(),
        allowed_recipients: vec!["*".into()],
        max_fee_per_gas: "unlimited".into(),
        max_total_fee: "unlimited".into(),
        ..Default::default()
    };
    let v1 = operator
        .sign_key_policy(header, &loose, now + 86_400)
        .unwrap()
        .encode_to_vec();
    let mut two_eth = match transfer(1) {
        UnsignedTransaction::Eip1559(tx) => tx,
        _ => unreachable!(),
    };
    two_eth.value = U256::from(2u64) * U256::from(10u64).pow(U256::from(18u64));
    let two_eth = UnsignedTransaction::Eip1559(two_eth);
    let sign = |policy: Vec<u8>| {
        let clients = clients.clone();
        let tx = two_eth.clone();
        async move {
            relay::sign_with_policy(
                &clients,
                [1, 2],
                key_id,
                &Payload::Transaction(tx.clone()),
                tx.signing_hash(),
                &policy,
                None,
                None,
            )
            .await
        }
    };
    sign(v1.clone()).await.expect("2 ETH under v1");

    // The operator signs v2 (1 ETH per transaction) offline and puts it on nodes 1 and 2 on
    // their hosts; the coordinator never sees it.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("policy.key");
    std::fs::write(&key_file, operator.to_secret_hex().as_bytes()).unwrap();
    let rules = dir.path().join("v2.json");
    std::fs::write(
        &rules,
        r#"{"allowed_chain_ids": [1], "max_value_per_tx": "1eth", "allowed_recipients": ["*"],
            "max_fee_per_gas": "unlimited", "max_total_fee": "unlimited"}"#,
    )
    .unwrap();
    let v2 = dir.path().join("v2.bin");
    let signed = operator_cli(&[
        "policy",
        "sign",
        "--key",
        key_id,
        "--policy-file",
        rules.to_str().unwrap(),
        "--policy-key",
        key_file.to_str().unwrap(),
        "--cluster-id",
        "test-cluster",
        "--version",
        "2",
        "--out",
        v2.to_str().unwrap(),
    ]);
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    for id in [1, 2] {
        let put = std::process::Command::new(shardsign_tests::cluster::node_binary())
            .args(["policy", "put", "--config"])
            .arg(&cluster.node(id).config)
            .arg(&v2)
            .output()
            .expect("shardsign-node policy put");
        assert!(
            put.status.success(),
            "{}",
            String::from_utf8_lossy(&put.stderr)
        );
        assert!(
            String::from_utf8_lossy(&put.stdout).contains("policy v2 of `local-path` is in force"),
            "{}",
            String::from_utf8_lossy(&put.stdout)
        );
    }
    // A coordinator that still forwards v1 is refused; under v2, 2 ETH is over the limit.
    let error = sign(v1)
        .await
        .expect_err("v1 is older than what the nodes hold");
    assert!(
        error.status.message().contains("older than version 2"),
        "{error:?}"
    );
    let error = sign(std::fs::read(&v2).unwrap())
        .await
        .expect_err("v2 allows 1 ETH");
    assert!(
        error
            .status
            .message()
            .contains("policy max_value_per_tx: 2 ETH > 1 ETH"),
        "{error:?}"
    );
    // Garbage on the socket is refused with a reason, and the node keeps serving.
    let garbage = dir.path().join("garbage.bin");
    std::fs::write(&garbage, b"not a policy").unwrap();
    let put = std::process::Command::new(shardsign_tests::cluster::node_binary())
        .args(["policy", "put", "--config"])
        .arg(&cluster.node(1).config)
        .arg(&garbage)
        .output()
        .unwrap();
    assert!(!put.status.success());
    assert!(
        String::from_utf8_lossy(&put.stderr).contains("refused: signed policy refused"),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    assert!(cluster.node(1).is_running());

    // The operator disables the key offline and puts the statement on node 1's host only.
    let disable = dir.path().join("v3-disable.bin");
    let signed = operator_cli(&[
        "policy",
        "disable",
        "--key",
        key_id,
        "--version",
        "3",
        "--reason",
        "agent host compromised",
        "--policy-key",
        key_file.to_str().unwrap(),
        "--cluster-id",
        "test-cluster",
        "--out",
        disable.to_str().unwrap(),
    ]);
    assert!(signed.status.success(), "{signed:?}");
    let put = node_policy_put(&mut cluster, 1, &disable);
    assert!(
        put.contains("key `local-path` is disabled on this node (statement v3)"),
        "{put}"
    );
    // Whatever the coordinator forwards — the policy it knows, or a newer one the operator signs
    // later — node 1 refuses the key, before and after a restart (the statement is stored).
    let one_eth = |policy: Vec<u8>| {
        let clients = clients.clone();
        async move {
            let tx = transfer(1);
            relay::sign_with_policy(
                &clients,
                [1, 2],
                key_id,
                &Payload::Transaction(tx.clone()),
                tx.signing_hash(),
                &policy,
                None,
                None,
            )
            .await
        }
    };
    let v4 = operator
        .sign_key_policy(
            shardsign_policy::KeyStatementHeader {
                version: 4,
                ..header
            },
            &loose,
            now + 86_400,
        )
        .unwrap()
        .encode_to_vec();
    for policy in [std::fs::read(&v2).unwrap(), v4.clone()] {
        let error = one_eth(policy).await.expect_err("the key is disabled");
        assert_eq!(error.status.code(), tonic::Code::FailedPrecondition);
        assert!(
            error.status.message().contains(
                "key `local-path` was disabled by the operator's signed statement v3 (agent host compromised)"
            ),
            "{error:?}"
        );
    }
    cluster.node(1).stop();
    cluster.node(1).start();
    let tx = transfer(1);
    let error = relay::sign_with_policy(
        &clients,
        [1, 2],
        key_id,
        &Payload::Transaction(tx.clone()),
        tx.signing_hash(),
        &v4,
        None,
        None,
    )
    .await
    .expect_err("still disabled after a restart");
    assert!(
        error.status.message().contains("disabled by the operator"),
        "{error:?}"
    );
}

/// `shardsign-node policy put` of `file` on node `id`'s host; its output (it must succeed).
fn node_policy_put(cluster: &mut NodeCluster, id: u8, file: &std::path::Path) -> String {
    let put = std::process::Command::new(shardsign_tests::cluster::node_binary())
        .args(["policy", "put", "--config"])
        .arg(&cluster.node(id).config)
        .arg(file)
        .output()
        .expect("shardsign-node policy put");
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    String::from_utf8_lossy(&put.stdout).into_owned()
}
