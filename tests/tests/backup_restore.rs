//! Node backup and restore with real processes: an online backup of a running node, its data key
//! wrapped to an operator's age recipient (decrypted by the `age` CLI), verified with its
//! key-encryption key; restore refused while the node runs; the node's data directory wiped and
//! its key file lost, restored from the backup with the operator's age identity under a new key
//! file, and the key signs again through that node. The restored node
//! refuses a session id made before the restore (it cannot know which ids were claimed after the
//! backup), and accepts a fresh one.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use shardsign_eth::Limits;
use shardsign_tests::cluster::node_binary;
use shardsign_tests::full::{Cluster, one_wei_transfer, permissive_policy};
use shardsign_tests::relay;
use tonic::Code;

fn node_command(args: &[&str], config: &Path) -> Output {
    Command::new(node_binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run shardsign-node")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_restored_from_its_backup_signs_again_and_refuses_older_sessions() {
    let mut cluster = Cluster::start();
    let key = cluster.ceremony("backed-up", &[1]).await;
    cluster.allow_everything(&key).await;
    cluster
        .signer()
        .sign_transaction(one_wei_transfer(&key.key_id, 0))
        .await
        .expect("signs");

    let config = cluster.nodes.node(2).config.clone();
    let backup = cluster.nodes.root.path().join("node-2.backup");
    let backup_arg = backup.to_str().unwrap();
    let age_identity = cluster.nodes.root.path().join("operator.age-identity");
    let keygen = Command::new("age-keygen")
        .arg("-o")
        .arg(&age_identity)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "age-keygen: {}", text(&keygen));
    let recipient = Command::new("age-keygen")
        .arg("-y")
        .arg(&age_identity)
        .output()
        .unwrap();
    let recipient = String::from_utf8(recipient.stdout).unwrap();
    let made = node_command(
        &[
            "backup",
            "--out",
            backup_arg,
            "--age-recipient",
            recipient.trim(),
        ],
        &config,
    );
    assert!(made.status.success(), "{}", text(&made));
    println!("{}", text(&made).lines().next().unwrap_or_default());
    let wrapped = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&age_identity)
        .arg(format!("{backup_arg}.data-key.age"))
        .output()
        .unwrap();
    assert!(wrapped.status.success(), "age -d: {}", text(&wrapped));
    assert_eq!(
        wrapped.stdout.len(),
        32,
        "the age CLI opens the wrapped data key"
    );
    assert!(text(&made).contains("1 active keys"), "{}", text(&made));
    assert_eq!(
        std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = node_command(&["backup", "--out", backup_arg], &config);
    assert!(!again.status.success(), "a backup never overwrites a file");

    let verified = Command::new(node_binary())
        .args(["backup", "verify", "--config"])
        .arg(&config)
        .arg(&backup)
        .output()
        .unwrap();
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(text(&verified).contains(&key.key_id), "{}", text(&verified));

    let refused = node_command(&["restore", "--from", backup_arg], &config);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("the node is running"),
        "{}",
        text(&refused)
    );

    // Node 2's disk is lost, and its key file with it: it comes back from the backup, opened
    // with the operator's age identity, under a new key file.
    cluster.nodes.node(2).stop();
    let data = cluster.nodes.node(2).data_dir();
    std::fs::remove_dir_all(&data).unwrap();
    let key_file = cluster.nodes.node(2).dir.join("kek.key");
    std::fs::write(&key_file, hex::encode(rand::random::<[u8; 32]>())).unwrap();
    let lost_key = node_command(&["restore", "--from", backup_arg], &config);
    assert!(
        !lost_key.status.success(),
        "the old key file is gone: {}",
        text(&lost_key)
    );
    let before_restore = shardsign_request::unix_now_ms() - 1;
    let restored = node_command(
        &[
            "restore",
            "--from",
            backup_arg,
            "--age-identity",
            age_identity.to_str().unwrap(),
        ],
        &config,
    );
    assert!(restored.status.success(), "{}", text(&restored));
    cluster.nodes.node(2).start();

    // The restored node signs nothing until it has re-learned from both peers (the coordinator
    // teaches it on the next cluster status call).
    let mut clients = BTreeMap::new();
    for id in [2u8, 3] {
        clients.insert(id, cluster.nodes.client(id).await);
    }
    let identity = clients
        .get_mut(&2)
        .unwrap()
        .get_identity(shardsign_proto::node::v1::GetIdentityRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        identity.relearn_challenge.len(),
        32,
        "a restored node re-learns"
    );
    cluster.wait_relearned(2).await;
    let audit = cluster
        .admin()
        .list_audit(shardsign_proto::v1::ListAuditRequest {
            after_seq: 0,
            limit: 1000,
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(
        audit
            .iter()
            .any(|r| r.operation == "node_relearned" && r.detail.contains("node 2")),
        "{audit:?}"
    );

    // Only pairs with node 2 are left once node 1 stops: the restored share signs.
    cluster.nodes.node(1).stop();
    cluster
        .sign_once_available(&key.key_id, 1)
        .await
        .expect("the restored node signs");

    // A session id made before the restore is refused by the restored node, a fresh one is not.
    let request = one_wei_transfer(&key.key_id, 500);
    let payload =
        shardsign_request::proto::transaction(request.transaction.as_ref(), &Limits::default())
            .unwrap();
    let policy = cluster.signed_policy(
        &key.key_id,
        permissive_policy(&[1]),
        cluster.next_policy_version(),
    );
    let policy = prost::Message::encode_to_vec(&policy);
    let old_id = shardsign_request::new_session_id(before_restore).to_vec();
    let error = relay::sign_with_policy(
        &clients,
        [2, 3],
        &key.key_id,
        &payload,
        payload.signing_hash(),
        &policy,
        Some(old_id),
        None,
    )
    .await
    .expect_err("an id from before the restore");
    assert_eq!(error.node, 2, "{error:?}");
    assert_eq!(error.status.code(), Code::FailedPrecondition, "{error:?}");
    assert!(
        error.status.message().contains("restored"),
        "{}",
        error.status.message()
    );
    relay::sign_with_policy(
        &clients,
        [2, 3],
        &key.key_id,
        &payload,
        payload.signing_hash(),
        &policy,
        None,
        None,
    )
    .await
    .expect("a fresh session id signs");

    // After a refresh a backup from before is stale: `backup verify` says so (its share still
    // makes the key with the other nodes' old-epoch backups), a new backup is current.
    let before_refresh = cluster
        .nodes
        .root
        .path()
        .join("node-2-before-refresh.backup");
    let made = node_command(
        &["backup", "--out", before_refresh.to_str().unwrap()],
        &config,
    );
    assert!(made.status.success(), "{}", text(&made));
    cluster.nodes.node(1).start();
    let mut stream = cluster
        .admin()
        .refresh_key(shardsign_proto::v1::RefreshKeyRequest {
            key_id: key.key_id.clone(),
            fast: false,
        })
        .await
        .expect("refresh_key")
        .into_inner();
    let mut last = None;
    while let Some(event) = stream.message().await.expect("refresh events") {
        last = event.event;
    }
    assert!(
        matches!(&last, Some(shardsign_proto::v1::refresh_key_event::Event::Done(k)) if k.epoch == 1),
        "{last:?}"
    );
    let stale = Command::new(node_binary())
        .args(["backup", "verify", "--config"])
        .arg(&config)
        .arg(&before_refresh)
        .output()
        .unwrap();
    assert!(stale.status.success(), "{}", text(&stale));
    assert!(
        text(&stale).contains(&format!(
            "STALE  {}: the backup holds epoch 0, the live store epoch 1",
            key.key_id
        )),
        "{}",
        text(&stale)
    );
    let fresh = cluster
        .nodes
        .root
        .path()
        .join("node-2-after-refresh.backup");
    let made = node_command(&["backup", "--out", fresh.to_str().unwrap()], &config);
    assert!(made.status.success(), "{}", text(&made));
    let current = Command::new(node_binary())
        .args(["backup", "verify", "--config"])
        .arg(&config)
        .arg(&fresh)
        .output()
        .unwrap();
    assert!(
        text(&current).contains("current: every key's share is at the live store's epoch"),
        "{}",
        text(&current)
    );
}

/// The coordinator's registry and hashing key, copied while it runs; the copy's audit verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_backs_up_its_registry_and_hashing_key_while_running() {
    let cluster = Cluster::start();
    let out = cluster.nodes.root.path().join("coordinator-backup");
    let run = || {
        Command::new(shardsign_tests::cluster::workspace_binary(
            "shardsign-coordinator",
            "SHARDSIGN_COORDINATOR_BIN",
        ))
        .args(["backup", "--config"])
        .arg(&cluster.coordinator.config)
        .env("SHARDSIGN_TEST_BOOTSTRAP_TOKEN", &cluster.bootstrap_token)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap()
    };
    let made = run();
    assert!(made.status.success(), "{}", text(&made));
    assert!(text(&made).contains("audit log intact"), "{}", text(&made));
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for file in ["registry.db", "api-key-hmac.key"] {
        let mode = std::fs::metadata(out.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    // The copy holds the API keys the running coordinator made (admin and signer).
    let copy = rusqlite::Connection::open(out.join("registry.db")).unwrap();
    let keys: i64 = copy
        .query_row("SELECT COUNT(*) FROM api_keys", [], |r| r.get(0))
        .unwrap();
    assert!(keys >= 2, "{keys}");
    assert!(
        !run().status.success(),
        "a backup never overwrites a directory"
    );
}
