//! Replacing a node with real processes, as an operator would: three membership keys made and
//! used offline with the CLI. Node 3 is first restored from a backup a refresh made stale: it
//! re-learns from its peers, `backup verify` says STALE, and every session with it is refused
//! naming both epochs. It is healed the documented way: its data directory deleted, a fresh node
//! 3 with a new identity at its address, `shardsign cluster replace-node 3` refused with an
//! under-quorum statement and done with a quorum one; then every pair signs every key, every node
//! holds every key at the next epoch, and running it again finds nothing left to do. Last, the
//! replaced identity is restored from its backup: it never re-learns and never signs.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use shardsign_proto::node::v1::ListKeysRequest;
use shardsign_tests::cli::Cli;
use shardsign_tests::cluster::node_binary;
use shardsign_tests::full::{Cluster, one_wei_transfer};

fn node_command(args: &[&str], config: &Path) -> Output {
    let output = Command::new(node_binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run shardsign-node");
    assert!(
        output.status.success(),
        "shardsign-node {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// With node 1 stopped, only pairs with node 3 are left: signing must fail, and the refusal
/// must contain `expected` (retried while the coordinator still backs off a restarted node).
async fn refused_without_node_1(cluster: &mut Cluster, key_id: &str, expected: &str) {
    cluster.nodes.node(1).stop();
    let mut last = String::new();
    for nonce in 0..100 {
        match cluster
            .signer()
            .sign_transaction(one_wei_transfer(key_id, 500 + nonce))
            .await
        {
            Ok(_) => panic!("signed with node 3 in the pair"),
            Err(status) if status.message().contains(expected) => {
                cluster.nodes.node(1).start();
                return;
            }
            Err(status) => last = status.message().to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("no refusal naming `{expected}`: {last}");
}

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

    // Node 3's backup at epoch 0; a refresh moves every key to epoch 1: the backup is stale.
    let config_3 = cluster.nodes.node(3).config.clone();
    let old_member = cluster
        .nodes
        .node(3)
        .file
        .members
        .iter()
        .find(|m| m.node_id == 3)
        .unwrap()
        .clone();
    let backup = path("node-3.backup");
    node_command(&["backup", "--out", &backup], &config_3);
    let refreshed = cli.run(&["keys", "refresh", "--all"], None);
    assert!(
        refreshed.status.success(),
        "{}",
        String::from_utf8_lossy(&refreshed.stderr)
    );
    let verified = node_command(&["backup", "verify", &backup], &config_3);
    let verified = String::from_utf8_lossy(&verified.stdout).into_owned();
    assert!(
        verified.contains("STALE") && verified.contains("epoch 0, the live store epoch 1"),
        "{verified}"
    );

    // Node 3 restored from it: it re-learns (the membership has not moved), but its shares are
    // a refresh behind, and every session with it is refused naming both epochs.
    cluster.nodes.node(3).stop();
    node_command(&["restore", "--from", &backup], &config_3);
    cluster.nodes.node(3).start();
    cluster.wait_relearned(3).await;
    refused_without_node_1(&mut cluster, &keys[0].key_id, "at epoch 0 on this node").await;

    // Healed as the docs say, with replace-node: a fresh node 3, new identity, same address.
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
        .filter(|e| e["event"] == "key" && e["repaired"] == true && e["epoch"] == 2)
        .map(|e| e["key_id"].as_str().unwrap())
        .collect();
    assert_eq!(repaired.len(), 3, "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "done" && e["keys"] == 3)
    );

    // Every node holds every key whole at epoch 2 (the refresh that followed the repair).
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
            assert_eq!((k.epoch, k.hollow), (2, false), "node {id} {}", key.key_id);
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

    // The replaced identity comes back from its backup, configured as it was: its peers' membership
    // names another identity for node 3, so it never re-learns, and no pair with it signs.
    cluster.nodes.node(3).stop();
    node_command(&["restore", "--from", &backup], &config_3);
    cluster.nodes.node(3).reconfigure(|file| {
        for member in &mut file.members {
            if member.node_id == 3 {
                *member = old_member.clone();
            }
        }
    });
    cluster.nodes.node(3).start();
    let status = cli.json(&["cluster", "status"], None);
    assert_eq!(status["nodes"][2]["awaiting_relearn"], true, "{status}");
    assert!(
        status["warnings"].as_array().unwrap().iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("this node is the one being replaced")),
        "{status}"
    );
    refused_without_node_1(&mut cluster, &keys[0].key_id, "node 3 waits for both peers").await;
}
