//! Node loss and recovery under the public API: one node killed before and during requests,
//! two nodes down, nodes and the coordinator restarted, a key disabled. Each test runs its own
//! cluster because it kills processes.

use std::time::{Duration, Instant};

use shardsign_eth::{Limits, SignedTransaction};
use shardsign_proto::v1::create_key_event::Event;
use shardsign_proto::v1::{
    ClusterStatusRequest, CreateKeyRequest, DisableKeyRequest, GetKeyPolicyRequest, Key, KeyStatus,
    ListKeysRequest, SignTransactionRequest,
};
use shardsign_tests::full::{Cluster, Signer};
use tonic::Code;

async fn create_key(cluster: &Cluster) -> Key {
    let key = cluster.ceremony("failover", &[1]).await;
    cluster.allow_everything(&key).await;
    key
}

fn request(key: &Key, nonce: u64) -> SignTransactionRequest {
    shardsign_tests::full::one_wei_transfer(&key.key_id, nonce)
}

async fn sign_ok(signer: &mut Signer, key: &Key, nonce: u64) {
    let response = signer
        .sign_transaction(request(key, nonce))
        .await
        .unwrap_or_else(|status| panic!("nonce {nonce}: {status:?}"))
        .into_inner();
    let decoded = SignedTransaction::decode(&response.raw_transaction, &Limits::DEFAULT).unwrap();
    assert_eq!(decoded.recover_sender().unwrap().to_checksum(), key.address);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_survives_node_loss_and_recovers_without_operator_action() {
    let mut cluster = Cluster::start();
    let key = create_key(&cluster).await;
    let mut signer = cluster.signer();
    sign_ok(&mut signer, &key, 0).await;

    // One node killed before the requests: every request still succeeds.
    cluster.nodes.node(3).kill();
    for nonce in 1..=6 {
        sign_ok(&mut signer, &key, nonce).await;
    }
    cluster.nodes.node(3).start();

    // One node killed while requests are in flight: every request still succeeds.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..6u64 {
        let mut signer = cluster.signer();
        let key = key.clone();
        let done = done.clone();
        tasks.spawn(async move {
            for i in 0..6 {
                sign_ok(&mut signer, &key, 100 + worker * 10 + i).await;
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    // Kill once some requests have completed, so that others are mid-session.
    while done.load(std::sync::atomic::Ordering::SeqCst) < 6 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    cluster.nodes.node(1).kill();
    while let Some(joined) = tasks.join_next().await {
        joined.expect("every in-flight request succeeds");
    }
    assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 36);

    // Two nodes down: Unavailable, naming them, well within the deadline.
    cluster.nodes.node(2).kill();
    let started = Instant::now();
    let status = signer
        .sign_transaction(request(&key, 500))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("node 1") && status.message().contains("node 2"),
        "{}",
        status.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered in {:?}",
        started.elapsed()
    );
    let health = cluster
        .admin()
        .cluster_status(ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!health.can_sign, "{health:?}");

    // Restarted: signing works again, no operator action.
    cluster.nodes.node(1).start();
    cluster.nodes.node(2).start();
    for nonce in 600..604 {
        sign_ok(&mut signer, &key, nonce).await;
    }
    let health = cluster
        .admin()
        .cluster_status(ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(health.can_sign && health.can_create_keys, "{health:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_a_coordinator_restart_and_a_signed_disable_stops_the_key_on_every_node() {
    let mut cluster = Cluster::start();
    let key = create_key(&cluster).await;
    cluster.coordinator.stop();
    cluster.coordinator.start();
    let mut signer = cluster.signer();
    let keys = signer
        .list_keys(ListKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert!(keys.contains(&key), "{keys:?}");
    sign_ok(&mut signer, &key, 1).await;

    // The policy the coordinator forwarded so far: what a compromised one would keep sending.
    let old_policy = cluster
        .admin()
        .get_key_policy(GetKeyPolicyRequest {
            key_id: key.key_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let statement = cluster.signed_disable(&key.key_id, old_policy.version + 1, "retired");
    let disabled = cluster
        .admin()
        .disable_key(DisableKeyRequest {
            key_id: key.key_id.clone(),
            statement: Some(statement),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        disabled.key.as_ref().unwrap().status,
        KeyStatus::Disabled as i32
    );
    assert_eq!(disabled.nodes_updated, vec![1, 2, 3], "{disabled:?}");
    let status = signer.sign_transaction(request(&key, 2)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("disabled"),
        "{}",
        status.message()
    );

    // Every node refuses the key on its own, whatever a coordinator forwards.
    let tx = shardsign_request::proto::transaction(
        request(&key, 3).transaction.as_ref(),
        &Limits::DEFAULT,
    )
    .unwrap();
    let mut clients = std::collections::BTreeMap::new();
    for id in 1..=3 {
        clients.insert(id, cluster.nodes.client(id).await);
    }
    for pair in [[1, 2], [2, 3]] {
        let error = shardsign_tests::relay::sign_with_policy(
            &clients,
            pair,
            &key.key_id,
            &tx,
            tx.signing_hash(),
            &old_policy.signed,
            None,
            None,
        )
        .await
        .expect_err("the nodes hold the disable statement");
        assert!(
            error
                .status
                .message()
                .contains("was disabled by the operator's signed statement"),
            "{error:?}"
        );
    }

    // The coordinator keeps the statement across a restart; a newer policy is refused.
    cluster.coordinator.stop();
    cluster.coordinator.start();
    let record = cluster
        .admin()
        .get_key_policy(GetKeyPolicyRequest {
            key_id: key.key_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        record.disabled && record.disabled_reason == "retired",
        "{record:?}"
    );
    let mut rules = shardsign_tests::full::permissive_policy(&[1]);
    rules.max_value_per_24h.clear();
    rules.requests_per_minute = 0;
    let error = cluster
        .set_key_policy(&key.key_id, rules)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ceremony_with_a_node_down_fails_cleanly_and_can_be_rerun() {
    let mut cluster = Cluster::start();
    cluster.nodes.node(2).kill();
    let request = CreateKeyRequest {
        label: "retry".into(),
        allowed_chain_ids: vec![1],
        key_id: "retry-me".into(),
    };
    let last = cluster.create_key(request.clone()).await;
    let Some(Event::Failed(failed)) = last else {
        panic!("expected a failure, got {last:?}")
    };
    assert!(failed.reason.contains("node 2"), "{}", failed.reason);
    assert!(
        cluster.registered_key_ids().await.is_empty(),
        "no key registered"
    );

    cluster.nodes.node(2).start();
    let last = cluster.create_key(request).await;
    assert!(
        matches!(last, Some(Event::Done(ref key)) if key.key_id == "retry-me"),
        "{last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_goes_away_cancels_its_sessions_on_the_nodes() {
    use shardsign_proto::node::v1::GetIdentityRequest;
    let mut cluster = Cluster::start();
    let key = create_key(&cluster).await;
    // Node 2 accepts connections but never answers: sessions that include it hang.
    cluster.nodes.node(2).freeze(true);
    let mut signer = cluster.signer();
    let mut abandoned = 0;
    for nonce in 0..3 {
        // The caller gives up after 300 ms (no grpc-timeout: it just goes away).
        let call = signer.sign_transaction(request(&key, nonce));
        if tokio::time::timeout(Duration::from_millis(300), call)
            .await
            .is_err()
        {
            abandoned += 1;
        }
    }
    assert!(
        abandoned >= 1,
        "two of the three pairs include the frozen node"
    );
    // The nodes would keep a session for their 10 s round timeout, and the coordinator's own call
    // to the frozen node times out after 5 s; only the caller's cancellation ends it sooner.
    let started = Instant::now();
    for id in [1u8, 3] {
        let mut client = cluster.nodes.client(id).await;
        loop {
            let identity = client
                .get_identity(GetIdentityRequest {})
                .await
                .unwrap()
                .into_inner();
            if identity.sessions_in_flight == 0 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "node {id} still has {} sessions",
                identity.sessions_in_flight
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    cluster.nodes.node(2).freeze(false);
}
