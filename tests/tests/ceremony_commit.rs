//! A key-generation ceremony that cannot leave half a key: the coordinator registers a key only
//! after all three nodes acknowledged committing it, retries a commit that failed, and otherwise
//! aborts the ceremony everywhere (a committed share goes only with another node's signed abort
//! receipt); once registered, the shares are sealed against any abort. Node 2 runs as
//! `shardsign-node-malicious`, refusing commits.

use shardsign_proto::node::v1::{FinalizeKeygenRequest, ListKeysRequest as NodeListKeysRequest};
use shardsign_proto::v1::CreateKeyRequest;
use shardsign_proto::v1::create_key_event::Event;
use shardsign_tests::full::Cluster;
use tonic::Code;

const KEY_ID: &str = "ceremony-commit";

/// Runs `CreateKey` for [`KEY_ID`]; its last event.
async fn create(cluster: &Cluster) -> Option<Event> {
    cluster
        .create_key(CreateKeyRequest {
            label: "commit".into(),
            allowed_chain_ids: vec![1],
            key_id: KEY_ID.into(),
        })
        .await
}

/// What node `id` holds of [`KEY_ID`], pending shares included.
async fn held(cluster: &Cluster, id: u8) -> Option<shardsign_proto::node::v1::NodeKey> {
    cluster
        .nodes
        .client(id)
        .await
        .list_keys(NodeListKeysRequest {
            include_pending: true,
        })
        .await
        .expect("node list_keys")
        .into_inner()
        .keys
        .into_iter()
        .find(|k| k.key_id == KEY_ID)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ceremony_commits_on_all_three_nodes_or_leaves_no_share_anywhere() {
    let mut cluster = Cluster::start();

    // Node 2 never acknowledges its commit: after the retries the ceremony is aborted, nodes 1
    // and 3 give up the shares they had committed, and nothing is registered.
    cluster
        .nodes
        .node(2)
        .restart_misbehaving(Some("refuse-commit"));
    let Some(Event::Failed(failed)) = create(&cluster).await else {
        panic!("expected the ceremony to fail")
    };
    assert!(
        failed.reason.contains("node 2")
            && failed
                .reason
                .contains("aborted on every node and no share of it is left"),
        "{}",
        failed.reason
    );
    let keys = cluster.registered_key_ids().await;
    assert!(!keys.iter().any(|k| k == KEY_ID), "{keys:?}");
    for id in 1..=3 {
        assert_eq!(held(&cluster, id).await, None, "node {id} kept a share");
    }

    // Node 2 refuses its first commit only: the retry commits it, the same key id works, and
    // the key is registered and sealed on every node.
    cluster
        .nodes
        .node(2)
        .restart_misbehaving(Some("refuse-commit-once"));
    let Some(Event::Done(key)) = create(&cluster).await else {
        panic!("expected the retried commit to succeed")
    };
    assert_eq!(key.key_id, KEY_ID);
    let mut sessions = Vec::new();
    for id in 1..=3 {
        let share = held(&cluster, id).await.expect("a share on every node");
        assert_eq!(
            (share.status.as_str(), share.sealed),
            ("active", true),
            "node {id}"
        );
        sessions.push(share.ceremony_session);
    }
    assert!(sessions.iter().all(|s| *s == sessions[0]), "one ceremony");
    cluster.allow_everything(&key).await;

    // No coordinator command deletes a registered key's share: an abort of its ceremony is
    // refused by every node.
    for id in 1..=3 {
        let status = cluster
            .nodes
            .client(id)
            .await
            .finalize_keygen(FinalizeKeygenRequest {
                session_id: sessions[0].clone(),
                key_id: KEY_ID.into(),
                commit: false,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "node {id}");
        assert!(status.message().contains("sealed"), "{status:?}");
        assert!(held(&cluster, id).await.is_some());
    }
}
