//! Disk full, for real: the coordinator's registry and then one node's store run on a small
//! tmpfs that a filler file fills. Signing stops with `UNAVAILABLE ... disk full` (coordinator)
//! or fails over to the other pair (node), nothing is half written (the refused request id signs
//! afterwards, the audit chain verifies), and both resume when space returns, without a restart.

use std::path::Path;
use std::process::Command;

use shardsign_proto::v1::{SignTransactionRequest, VerifyAuditRequest};
use shardsign_tests::full::{Cluster, one_wei_transfer};
use shardsign_tests::tmpfs::Tmpfs;
use tonic::Code;

const SIZE: u64 = 8 * 1024 * 1024;
/// Most requests it may take to use up the slack the database files already hold.
const ATTEMPTS: usize = 400;

fn copy_all(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .expect("cp");
    assert!(
        status.success(),
        "copy {} to {}",
        from.display(),
        to.display()
    );
}

/// Moves the contents of `dir` onto a fresh tmpfs mounted at `dir` itself.
fn onto_tmpfs(dir: &Path) -> Tmpfs {
    let aside = dir.with_extension("aside");
    std::fs::create_dir_all(&aside).unwrap();
    copy_all(dir, &aside);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let tmpfs = Tmpfs::mount(dir, SIZE);
    copy_all(&aside, dir);
    tmpfs
}

async fn sign(cluster: &Cluster, request: SignTransactionRequest) -> Result<(), tonic::Status> {
    cluster.signer().sign_transaction(request).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_signing_cleanly_and_space_coming_back_resumes_it() {
    let mut cluster = Cluster::start();
    let key = cluster.ceremony("disk-full", &[1]).await;
    cluster.allow_everything(&key).await;

    // --- The coordinator's registry on a tmpfs.
    let db_dir = cluster.coordinator.dir.join("db");
    std::fs::create_dir_all(&db_dir).unwrap();
    cluster.coordinator.stop();
    let database = cluster.coordinator.dir.join("coordinator.db");
    let coordinator_fs = Tmpfs::mount(&db_dir, SIZE);
    // The registry and what lives beside it by default (the API-key hashing key).
    for name in ["coordinator.db", "coordinator.db-wal", "api-key-hmac.key"] {
        let from = cluster.coordinator.dir.join(name);
        if from.exists() {
            let status = Command::new("cp")
                .arg("-a")
                .arg(&from)
                .arg(&db_dir)
                .status()
                .unwrap();
            assert!(status.success());
            std::fs::remove_file(&from).unwrap();
        }
    }
    let config = std::fs::read_to_string(&cluster.coordinator.config).unwrap();
    let moved = config.replace(
        &database.display().to_string(),
        &db_dir.join("coordinator.db").display().to_string(),
    );
    assert_ne!(moved, config, "the config names the database");
    std::fs::write(&cluster.coordinator.config, moved).unwrap();
    cluster.coordinator.start();
    sign(&cluster, one_wei_transfer(&key.key_id, 0))
        .await
        .expect("signs from the tmpfs");

    assert!(coordinator_fs.fill() > 0);
    let mut refused = None;
    for nonce in 1..=ATTEMPTS as u64 {
        let request = one_wei_transfer(&key.key_id, nonce);
        match sign(&cluster, request.clone()).await {
            Ok(()) => continue,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    status.message().contains("disk full"),
                    "{}",
                    status.message()
                );
                refused = Some(request);
                break;
            }
        }
    }
    let refused = refused.expect("the coordinator's disk filled up within the attempts");
    assert!(
        cluster.coordinator.pid().is_some(),
        "the coordinator keeps running"
    );
    coordinator_fs.free();
    // Nothing of the refused request was stored: its request id signs now, once.
    sign(&cluster, refused.clone())
        .await
        .expect("signs again without a restart");
    sign(&cluster, refused).await.expect("an idempotent replay");
    let audit = cluster
        .admin()
        .verify_audit(VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(audit.intact, "{audit:?}");

    // --- Node 1's store on a tmpfs.
    cluster.nodes.node(1).stop();
    let node_fs = onto_tmpfs(&cluster.nodes.node(1).data_dir());
    cluster.nodes.node(1).start();
    assert!(node_fs.fill() > 0);
    // The coordinator signs with the other pair while node 1 cannot record a session.
    let mut nonce = 1_000;
    while !cluster.nodes.node(1).log_text().contains("disk full") {
        nonce += 1;
        assert!(
            nonce < 1_000 + ATTEMPTS as u64,
            "node 1's disk never filled up"
        );
        sign(&cluster, one_wei_transfer(&key.key_id, nonce))
            .await
            .expect("the other pair signs while node 1's disk is full");
    }
    node_fs.free();
    // Only pairs with node 1 are left: it signs again without a restart.
    cluster.nodes.node(3).stop();
    cluster
        .sign_once_available(&key.key_id, 5_000)
        .await
        .expect("node 1 signs again");
    drop(node_fs);
    drop(coordinator_fs);
}
