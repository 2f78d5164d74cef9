//! Share refresh with real processes (three nodes, the coordinator): `RefreshKey` moves a key to
//! the next epoch with its address unchanged and every pair signing; a refresh that loses a node
//! (before it starts, or killed between rounds) leaves every node on the old epoch and signing
//! goes on; the old epoch is refused by every node afterwards.

use std::collections::BTreeMap;

use k256::ecdsa::signature::hazmat::PrehashVerifier;
use k256::ecdsa::{Signature, VerifyingKey};
use prost::Message as _;
use shardsign_proto::node::v1::node_client::NodeClient;
use shardsign_proto::node::v1::{ListKeysRequest, NodeKey};
use shardsign_proto::v1::refresh_key_event::Event;
use shardsign_proto::v1::{GetKeyRequest, Key, RefreshKeyRequest};
use shardsign_tests::full::{Cluster, permissive_policy};
use shardsign_tests::relay::{self, Action, Payload};
use tonic::transport::Channel;

/// Runs `RefreshKey` (the complete refresh); every event of its stream.
async fn refresh(cluster: &Cluster, key_id: &str) -> Vec<Event> {
    refresh_kind(cluster, key_id, false).await
}

async fn refresh_kind(cluster: &Cluster, key_id: &str, fast: bool) -> Vec<Event> {
    let mut stream = cluster
        .admin()
        .refresh_key(RefreshKeyRequest {
            key_id: key_id.into(),
            fast,
        })
        .await
        .expect("refresh_key")
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.expect("refresh events") {
        events.extend(event.event);
    }
    events
}

async fn registered(cluster: &Cluster, key_id: &str) -> Key {
    cluster
        .signer()
        .get_key(GetKeyRequest {
            key_id: key_id.into(),
        })
        .await
        .expect("get_key")
        .into_inner()
}

async fn node_clients(cluster: &Cluster) -> BTreeMap<u8, NodeClient<Channel>> {
    let mut clients = BTreeMap::new();
    for id in 1..=3u8 {
        clients.insert(id, cluster.nodes.client(id).await);
    }
    clients
}

/// The key as node `id` lists it.
async fn node_key(cluster: &Cluster, id: u8, key_id: &str) -> NodeKey {
    cluster
        .nodes
        .client(id)
        .await
        .list_keys(ListKeysRequest {
            include_pending: false,
        })
        .await
        .expect("list_keys")
        .into_inner()
        .keys
        .into_iter()
        .find(|k| k.key_id == key_id)
        .expect("the node holds the key")
}

/// The key's epoch on each node that answers.
async fn node_epochs(cluster: &Cluster, key_id: &str, nodes: &[u8]) -> Vec<u64> {
    let mut epochs = Vec::new();
    for id in nodes {
        epochs.push(node_key(cluster, *id, key_id).await.epoch);
    }
    epochs
}

/// Drops every node's public key package of `key_id` (the nodes run; SQLite takes the write).
fn forget_packages(cluster: &mut Cluster, key_id: &str) {
    for id in 1..=3u8 {
        let path = shardsign_node::store::Store::db_path(&cluster.nodes.node(id).data_dir());
        let conn = rusqlite::Connection::open(path).expect("open a node's store");
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        conn.execute(
            "UPDATE keys SET public_package = NULL WHERE key_id = ?1",
            [key_id],
        )
        .expect("forget the package");
    }
}

async fn packages_kept(cluster: &Cluster, key_id: &str) -> Vec<bool> {
    let mut kept = Vec::new();
    for id in 1..=3u8 {
        kept.push(node_key(cluster, id, key_id).await.has_public_package);
    }
    kept
}

/// Signs through the node protocol with `pair` at `epoch`; checks the signature against the key.
async fn sign_with_pair(
    clients: &BTreeMap<u8, NodeClient<Channel>>,
    key: &Key,
    pair: [u8; 2],
    epoch: u64,
    policy: &[u8],
) -> Result<(), String> {
    let payload = Payload::PersonalMessage(format!("pair {pair:?} epoch {epoch}").into_bytes());
    let results = relay::sign_at_epoch(clients, pair, &key.key_id, epoch, &payload, policy)
        .await
        .map_err(|e| format!("node {}: {}", e.node, e.status.message()))?;
    let result = &results[0];
    let signature = Signature::from_scalars(
        <[u8; 32]>::try_from(result.r.as_slice()).unwrap(),
        <[u8; 32]>::try_from(result.s.as_slice()).unwrap(),
    )
    .unwrap();
    let hash: [u8; 32] = result.signed_hash.as_slice().try_into().unwrap();
    VerifyingKey::from_sec1_bytes(&key.public_key)
        .unwrap()
        .verify_prehash(&hash, &signature)
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_moves_a_key_to_the_next_epoch_and_a_lost_node_leaves_it_where_it_was() {
    let mut cluster = Cluster::start();
    let key = cluster.ceremony("refresh", &[1]).await;
    assert_eq!(key.epoch, 0);
    // A policy the test keeps, to forward on direct node sessions as the coordinator does.
    let mut rules = permissive_policy(&key.allowed_chain_ids);
    rules.max_value_per_24h.clear();
    rules.requests_per_minute = 0;
    let statement = cluster.signed_policy(&key.key_id, rules, cluster.next_policy_version());
    let policy = statement.encode_to_vec();
    cluster
        .admin()
        .set_key_policy(shardsign_proto::v1::SetKeyPolicyRequest {
            statement: Some(statement),
        })
        .await
        .expect("set key policy");
    cluster.sign_once_available(&key.key_id, 0).await.unwrap();
    // As for a key made before nodes kept its public key package: the refresh has the nodes
    // agree on one first (each node's own signed verifying share; see node/tests/refresh.rs).
    forget_packages(&mut cluster, &key.key_id);
    assert_eq!(
        packages_kept(&cluster, &key.key_id).await,
        [false, false, false]
    );

    // The refresh: started from epoch 0, four rounds, done at epoch 1 with the same address.
    let events = refresh(&cluster, &key.key_id).await;
    assert!(
        matches!(events.first(), Some(Event::Started(s)) if s.from_epoch == 0),
        "{events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Round(_)))
            .count(),
        4,
        "{events:?}"
    );
    let Some(Event::Done(done)) = events.last() else {
        panic!("refresh ended with {events:?}");
    };
    assert_eq!(done.epoch, 1);
    assert_eq!(done.address, key.address, "the address never changes");
    assert_eq!(done.public_key, key.public_key);
    let shown = registered(&cluster, &key.key_id).await;
    assert_eq!(shown.epoch, 1);
    assert!(shown.epoch_changed_at_unix >= key.created_at_unix);
    assert_eq!(
        node_epochs(&cluster, &key.key_id, &[1, 2, 3]).await,
        [1, 1, 1]
    );
    assert_eq!(
        packages_kept(&cluster, &key.key_id).await,
        [true, true, true]
    );

    // Every pair signs at epoch 1; every node refuses epoch 0, naming both epochs.
    let clients = node_clients(&cluster).await;
    for pair in [[1, 2], [1, 3], [2, 3]] {
        sign_with_pair(&clients, &key, pair, 1, &policy)
            .await
            .unwrap_or_else(|e| panic!("pair {pair:?}: {e}"));
    }
    let error = sign_with_pair(&clients, &key, [2, 3], 0, &policy)
        .await
        .unwrap_err();
    assert!(
        error.contains("is at epoch 1 on this node, the session asked for epoch 0"),
        "{error}"
    );
    cluster.sign_once_available(&key.key_id, 1).await.unwrap();

    // A refresh needs all three nodes: with node 3 down it fails, and nothing moves.
    cluster.nodes.node(3).stop();
    let events = refresh(&cluster, &key.key_id).await;
    let Some(Event::Failed(failed)) = events.last() else {
        panic!("refresh without node 3 ended with {events:?}");
    };
    assert!(failed.reason.contains("node 3"), "{}", failed.reason);
    assert_eq!(registered(&cluster, &key.key_id).await.epoch, 1);
    assert_eq!(node_epochs(&cluster, &key.key_id, &[1, 2]).await, [1, 1]);
    cluster.sign_once_available(&key.key_id, 2).await.unwrap();
    cluster.nodes.node(3).start();

    // Node 3 killed between rounds (after round 1 reached it): the others never finish, no node
    // votes, the abort leaves every node on epoch 1, and signing goes on.
    let clients = node_clients(&cluster).await;
    let session_id = relay::fresh_session_id();
    let victim = cluster.nodes.node(3).pid().expect("node 3 runs");
    let mut killed = false;
    let mut hook = |_to: u8, envelope: &mut shardsign_proto::node::v1::Envelope| {
        if envelope.round == 2 && !killed {
            // SAFETY: our own child's pid.
            unsafe { libc::kill(victim as i32, libc::SIGKILL) };
            killed = true;
        }
        Action::Deliver
    };
    let outcome =
        relay::refresh_rounds(&clients, &session_id, &key.key_id, 1, Some(&mut hook)).await;
    assert!(killed, "the hook ran");
    let error = outcome.expect_err("a refresh that lost a node does not finish");
    assert!(
        error.node == 3 || error.status.code() == tonic::Code::Unavailable,
        "{error:?}"
    );
    let survivors: BTreeMap<u8, NodeClient<Channel>> = clients
        .iter()
        .filter(|(id, _)| **id != 3)
        .map(|(id, c)| (*id, c.clone()))
        .collect();
    let left = shardsign_coordinator::signing::refresh_end::abort_everywhere(
        &survivors,
        &session_id,
        &key.key_id,
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(node_epochs(&cluster, &key.key_id, &[1, 2]).await, [1, 1]);
    sign_with_pair(&clients, &key, [1, 2], 1, &policy)
        .await
        .expect("signing goes on at epoch 1");
    cluster.nodes.node(3).kill();
    cluster.nodes.node(3).start();

    // The restarted node 3 joins the next refresh: epoch 2, every pair signs.
    let events = refresh(&cluster, &key.key_id).await;
    let Some(Event::Done(done)) = events.last() else {
        panic!("refresh after the restart ended with {events:?}");
    };
    assert_eq!(done.epoch, 2);
    let clients = node_clients(&cluster).await;
    for pair in [[1, 2], [1, 3], [2, 3]] {
        sign_with_pair(&clients, &key, pair, 2, &policy)
            .await
            .unwrap_or_else(|e| panic!("pair {pair:?}: {e}"));
    }
    cluster.sign_once_available(&key.key_id, 3).await.unwrap();

    // The fast refresh (OT state kept, re-keyed): epoch 3, same address, every pair signs, the
    // previous epoch is refused.
    let events = refresh_kind(&cluster, &key.key_id, true).await;
    let Some(Event::Done(done)) = events.last() else {
        panic!("fast refresh ended with {events:?}");
    };
    assert_eq!(done.epoch, 3);
    assert_eq!(done.address, key.address);
    for pair in [[1, 2], [1, 3], [2, 3]] {
        sign_with_pair(&clients, &key, pair, 3, &policy)
            .await
            .unwrap_or_else(|e| panic!("pair {pair:?} after the fast refresh: {e}"));
    }
    let error = sign_with_pair(&clients, &key, [1, 3], 2, &policy)
        .await
        .unwrap_err();
    assert!(error.contains("is at epoch 3 on this node"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_the_commit_is_healed_by_the_signing_path() {
    let mut cluster = Cluster::start();
    let key = cluster.ceremony("heal", &[1]).await;
    cluster.allow_everything(&key).await;
    // Node 3 votes but refuses the commit: the refresh is done (the certificate is complete and
    // recorded), nodes 1 and 2 are at epoch 1, node 3 stays at epoch 0 with its pending share.
    cluster
        .nodes
        .node(3)
        .restart_misbehaving(Some("refuse-refresh-commit"));
    let events = refresh(&cluster, &key.key_id).await;
    let Some(Event::Done(done)) = events.last() else {
        panic!("refresh ended with {events:?}");
    };
    assert_eq!(done.epoch, 1);
    assert_eq!(
        node_epochs(&cluster, &key.key_id, &[1, 2, 3]).await,
        [1, 1, 0]
    );
    // Node 3 honest again but still behind; node 1 down, so only the pair (2, 3) can sign: the
    // coordinator hands node 3 the certificate when it refuses the session, and signs.
    cluster.nodes.node(3).restart_misbehaving(None);
    cluster.nodes.node(1).stop();
    cluster
        .sign_once_available(&key.key_id, 0)
        .await
        .expect("the pair (2, 3) signs once node 3 is healed");
    assert_eq!(node_epochs(&cluster, &key.key_id, &[2, 3]).await, [1, 1]);
    cluster.nodes.node(1).start();
}

/// Every key's epoch as the coordinator has it, by key id.
async fn registry_epochs(cluster: &Cluster) -> BTreeMap<String, u64> {
    cluster
        .signer()
        .list_keys(shardsign_proto::v1::ListKeysRequest {})
        .await
        .expect("list_keys")
        .into_inner()
        .keys
        .into_iter()
        .map(|k| (k.key_id, k.epoch))
        .collect()
}

/// Polls until `done` holds for the registry's epochs (a scheduled refresh takes a few seconds
/// per key); panics with the last epochs after `limit`.
async fn wait_for_epochs(
    cluster: &Cluster,
    limit: std::time::Duration,
    done: impl Fn(&BTreeMap<String, u64>) -> bool,
) -> BTreeMap<String, u64> {
    let started = std::time::Instant::now();
    loop {
        let epochs = registry_epochs(cluster).await;
        if done(&epochs) {
            return epochs;
        }
        assert!(started.elapsed() < limit, "epochs stuck at {epochs:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_schedule_refreshes_every_key_and_resumes_after_a_restart_half_way() {
    let mut cluster = Cluster::start();
    let mut keys = Vec::new();
    for i in 0..4 {
        let key = cluster.ceremony(&format!("scheduled-{i}"), &[1]).await;
        cluster.allow_everything(&key).await;
        keys.push(key);
    }
    let limit = std::time::Duration::from_secs(120);
    cluster
        .coordinator
        .reconfigure(|file| file.refresh_every = Some("2s".into()));
    // Stopped as soon as two keys moved (a refresh may be cut off mid-way: the restarted
    // coordinator resolves it), then restarted: the schedule goes on with the keys still due.
    let half = wait_for_epochs(&cluster, limit, |epochs| {
        epochs.values().filter(|e| **e >= 1).count() >= 2
    })
    .await;
    cluster.coordinator.stop();
    assert!(half.values().any(|e| *e == 0), "stopped half way: {half:?}");
    cluster.coordinator.start();
    let all = wait_for_epochs(&cluster, limit, |epochs| {
        epochs.len() == 4 && epochs.values().all(|e| *e >= 1)
    })
    .await;
    for key in &keys {
        assert!(all[&key.key_id] >= 1);
        cluster
            .sign_once_available(&key.key_id, 0)
            .await
            .expect("a refreshed key signs");
    }
    let scrape = shardsign_tests::cluster::scrape(&cluster.coordinator.metrics_address());
    assert!(
        shardsign_tests::cluster::metric_value(
            &scrape,
            "shardsign_key_refreshes_total{trigger=\"schedule\",outcome=\"done\"}"
        ) >= 2.0,
        "{scrape}"
    );
    assert!(scrape.contains("shardsign_key_epoch_oldest_age_seconds"));
    let audit = cluster
        .admin()
        .list_audit(shardsign_proto::v1::ListAuditRequest::default())
        .await
        .expect("list_audit")
        .into_inner();
    assert!(
        format!("{audit:?}").contains("key_refreshed"),
        "scheduled refreshes are audited"
    );
}
