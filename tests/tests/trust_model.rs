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
