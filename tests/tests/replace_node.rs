//! Replacing a node with real processes, as an operator would: three membership keys made and
//! used offline with the CLI, node 3's data directory deleted, a fresh node 3 with a new identity
//! at its address, `shardsign cluster replace-node 3` refused with an under-quorum statement and
//! done with a quorum one; then every pair signs every key, every node holds every key at the
//! next epoch, and running it again finds nothing left to do.

use serde_json::Value;
use shardsign_proto::node::v1::ListKeysRequest;
use shardsign_tests::cli::Cli;
use shardsign_tests::full::Cluster;

/// Signs once through the coordinator with `down` stopped, so the other two must sign.
async fn sign_without(cluster: &mut Cluster, down: u8, key_id: &str, nonce: u64) {
    cluster.nodes.node(down).stop();
    cluster
        .sign_once_available(key_id, nonce)
        .await
        .unwrap_or_else(|e| panic!("{key_id} without node {down}: {e:?}"));
    cluster.nodes.node(down).start();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_is_replaced_and_every_pair_signs_every_key() {
    let mut cluster = Cluster::start();
    let cli = Cli::new(&cluster);
    let path = |name: &str| cli.path(name).display().to_string();

    // Three offline membership keys; every node trusts their public halves (2 of 3).
    let publics: Vec<String> = (1..=3)
        .map(|i| {
            let made = cli.json(
                &["membership", "keygen", "--out", &path(&format!("m{i}.key"))],
                None,
            );
            made["public_key"].as_str().unwrap().to_string()
        })
        .collect();
    for id in 1..=3 {
        let node = cluster.nodes.node(id);
        node.stop();
        node.reconfigure(|file| file.membership_public_keys = publics.clone());
        node.start();
    }
    let mut keys = Vec::new();
    for label in ["r1", "r2", "r3"] {
        let key = cluster.ceremony(label, &[1]).await;
        cluster.allow_everything(&key).await;
        cluster.sign_once_available(&key.key_id, 0).await.unwrap();
        keys.push(key);
    }

    // Node 3's disk is lost: a fresh node 3, new identity, same address.
    let identity = cluster.nodes.node(3).wipe_and_init();
    std::fs::write(cli.path("new-node-3.json"), &identity).unwrap();
    cluster.nodes.node(3).start();

    // One signature is under the quorum: refused by the nodes, nothing moves.
    let sign_as = |key: &str, out: &str| {
        cli.json(
            &[
                "membership",
                "sign",
                "--identity",
                &path("new-node-3.json"),
                "--version",
                "1",
                "--key",
                &path(key),
                "--out",
                &path(out),
            ],
            None,
        )
    };
    sign_as("m1.key", "under.json");
    let replace = |statement: &str| {
        cli.run(
            &[
                "--json",
                "cluster",
                "replace-node",
                "3",
                "--identity",
                &path("new-node-3.json"),
                "--statement",
                &path(statement),
            ],
            None,
        )
    };
    let refused = replace("under.json");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!refused.status.success(), "{text}");
    assert!(text.contains("signed by 1 of the 3"), "{text}");

    // A second membership key co-signs: the replacement runs key by key.
    std::fs::copy(cli.path("under.json"), cli.path("quorum.json")).unwrap();
    let cosigned = sign_as("m3.key", "quorum.json");
    assert_eq!(cosigned["signatures"], 2);
    let done = replace("quorum.json");
    let stdout = String::from_utf8_lossy(&done.stdout).into_owned();
    assert!(
        done.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let repaired: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "key" && e["repaired"] == true && e["epoch"] == 1)
        .map(|e| e["key_id"].as_str().unwrap())
        .collect();
    assert_eq!(repaired.len(), 3, "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "done" && e["keys"] == 3)
    );

    // Every node holds every key whole at epoch 1.
    for id in 1..=3u8 {
        let held = cluster
            .nodes
            .client(id)
            .await
            .list_keys(ListKeysRequest {
                include_pending: false,
            })
            .await
            .unwrap()
            .into_inner()
            .keys;
        for key in &keys {
            let k = held
                .iter()
                .find(|k| k.key_id == key.key_id)
                .unwrap_or_else(|| panic!("node {id} lacks {}", key.key_id));
            assert_eq!((k.epoch, k.hollow), (1, false), "node {id} {}", key.key_id);
        }
    }
    // Cluster status shows every node at membership version 1.
    let status = cli.json(&["cluster", "status"], None);
    let versions: Vec<&Value> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["membership_version"])
        .collect();
    assert!(versions.iter().all(|v| **v == 1), "{status}");
    // Every pair signs every key (the third node stopped each time).
    for (i, key) in keys.iter().enumerate() {
        for down in 1..=3u8 {
            sign_without(
                &mut cluster,
                down,
                &key.key_id,
                10 + 10 * i as u64 + u64::from(down),
            )
            .await;
        }
    }
    // Run again: the membership change is already applied and nothing is left to repair.
    let again = replace("quorum.json");
    let stdout = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(again.status.success(), "{stdout}");
    assert!(
        stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["event"] == "key")
            .all(|e| e["repaired"] == false),
        "{stdout}"
    );
}
