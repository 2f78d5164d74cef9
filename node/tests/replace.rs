//! Replacing node 3 across three in-process nodes: a membership change signed by a quorum of the
//! membership keys gives node 3's place to a fresh node with a new identity; the two others seal
//! repair terms to it; it rebuilds a hollow share of every key; a complete refresh makes every
//! share whole, and every pair signs every key. Unsigned, under-quorum, two-change and forged
//! statements are refused and no repair term leaves any node; the old identity is refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use prost::Message as _;
use shardsign_node::clock::SystemClock;
use shardsign_node::kek::KekSource;
use shardsign_node::sessions::Node;
use shardsign_node::store::Store;
use shardsign_policy::membership::{self, MembershipKeys};
use shardsign_proto::node::v1::RepairTermReply;
use shardsign_proto::v1 as api;
use shardsign_seal::PublicIdentity;
use shardsign_tss::PARTIES;
use zeroize::Zeroizing;

mod common;
use common::*;

const CLUSTER: &str = "divergence-test";

fn membership_keys() -> (Vec<SigningKey>, MembershipKeys) {
    let keys: Vec<SigningKey> = (0..3)
        .map(|_| SigningKey::generate(&mut rand_core_06::OsRng))
        .collect();
    let trusted = MembershipKeys::new(keys.iter().map(|k| k.verifying_key()).collect(), None)
        .unwrap()
        .0;
    (keys, trusted)
}

fn identity_bytes(identity: &PublicIdentity) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&identity.signing_key());
    out[32..].copy_from_slice(&identity.kx_key());
    out
}

fn now() -> i64 {
    shardsign_request::unix_now_ms() / 1000
}

/// `statement` signed by `signers`, encoded.
fn signed(statement: &api::Statement, signers: &[&SigningKey]) -> Vec<u8> {
    let mut envelope = api::SignedStatement {
        statement: statement.encode_to_vec(),
        signatures: Vec::new(),
    };
    for key in signers {
        membership::add_signature(key, &mut envelope).unwrap();
    }
    envelope.encode_to_vec()
}

/// A fresh node 3 (new store, new identity) that knows the others as they are.
fn fresh_node_3(cluster: &Cluster, trusted: &MembershipKeys) -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kek = KekSource::KeyFile(Zeroizing::new([33; 32]));
    let (store, secret) = Store::init(dir.path(), PARTIES[2], CLUSTER, &kek).unwrap();
    let mut members: BTreeMap<_, _> = (*cluster.nodes[0].members()).clone();
    members.insert(PARTIES[2], secret.public());
    let node = Node::new(store, secret, members, Duration::from_secs(30), 16, None)
        .unwrap()
        .with_clock(Arc::new(SystemClock))
        .with_membership_keys(trusted.clone());
    (node, dir)
}

fn terms(cluster: &Cluster, key_id: &str, epoch: u64) -> Result<Vec<RepairTermReply>, String> {
    cluster.nodes[..2]
        .iter()
        .map(|helper| {
            helper
                .repair_term(key_id, epoch, PARTIES[2])
                .map_err(|e| e.to_string())
        })
        .collect()
}

fn hollow(node: &Node, key_id: &str) -> bool {
    node.store()
        .list_keys(false)
        .unwrap()
        .into_iter()
        .find(|k| k.key_id == key_id)
        .unwrap()
        .hollow
}

#[test]
fn node_3_is_replaced_by_a_quorum_signed_change_and_every_pair_signs_every_key_after_repair() {
    let (keys, trusted) = membership_keys();
    let mut cluster = cluster();
    cluster.nodes = cluster
        .nodes
        .into_iter()
        .map(|n| n.with_membership_keys(trusted.clone()))
        .collect();
    let key_ids = ["alpha", "beta", "gamma"];
    for key_id in key_ids {
        keygen(&cluster, key_id);
    }
    let publics: Vec<Vec<u8>> = key_ids
        .iter()
        .map(|k| public_key(&cluster.nodes[0], k))
        .collect();
    let (new_node, new_dir) = fresh_node_3(&cluster, &trusted);
    let new_identity = identity_bytes(&new_node.identity());
    let change = |version: u64| {
        membership::change_statement(CLUSTER, version, 3, &new_identity, now() - 5, 3600)
    };

    // Before any change no repair term leaves a node.
    let error = terms(&cluster, "alpha", 0).unwrap_err();
    assert!(error.contains("no repair for node 3"), "{error}");

    // Refused everywhere, and still no term: unsigned, under quorum, signed by a key that is
    // not a membership key (a coordinator's forgery), two changes in one statement.
    let outsider = SigningKey::generate(&mut rand_core_06::OsRng);
    let mut two = change(1);
    two.body = api::MembershipChange {
        changes: vec![
            api::NodeIdentityChange {
                node_id: 3,
                identity: new_identity.to_vec(),
            },
            api::NodeIdentityChange {
                node_id: 2,
                identity: new_identity.to_vec(),
            },
        ],
    }
    .encode_to_vec();
    let forged = [
        ("unsigned", signed(&change(1), &[])),
        ("under quorum", signed(&change(1), &[&keys[0]])),
        ("forged", signed(&change(1), &[&keys[0], &outsider])),
        ("two changes", signed(&two, &[&keys[0], &keys[1]])),
    ];
    for (what, statement) in &forged {
        for node in cluster.nodes.iter().chain([&new_node]) {
            let error = node.put_membership(statement).unwrap_err().to_string();
            assert!(error.starts_with("membership: "), "{what}: {error}");
            assert_eq!(node.membership_version(), 0, "{what}");
        }
        let error = terms(&cluster, "alpha", 0).unwrap_err();
        assert!(error.contains("no repair for node 3"), "{what}: {error}");
    }

    // The real change: quorum-signed. Nodes 1 and 2 adopt it (a retry is a no-op), the new node
    // learns it names itself, the old node 3 refuses to take part in its own replacement.
    let statement = signed(&change(1), &[&keys[1], &keys[2]]);
    for node in &cluster.nodes[..2] {
        assert_eq!(node.put_membership(&statement).unwrap(), (1, true));
        assert_eq!(node.put_membership(&statement).unwrap(), (1, false));
    }
    let error = cluster.nodes[2].put_membership(&statement).unwrap_err();
    assert!(error.to_string().contains("being replaced"), "{error}");
    assert_eq!(new_node.put_membership(&statement).unwrap(), (1, true));
    // The same change signed by another quorum is the same change: a no-op.
    assert_eq!(
        cluster.nodes[0]
            .put_membership(&signed(&change(1), &[&keys[0], &keys[1]]))
            .unwrap(),
        (1, false)
    );
    // Another change under a version already held never applies.
    let other_identity = membership::change_statement(CLUSTER, 1, 3, &[9; 64], now() - 5, 3600);
    let error = cluster.nodes[0]
        .put_membership(&signed(&other_identity, &[&keys[0], &keys[1]]))
        .unwrap_err();
    assert!(error.to_string().contains("not newer"), "{error}");

    // The old node 3 is out: its sessions with node 1 are refused.
    let error = sign(&cluster, "alpha", [1, 3], 0, &publics[0]).unwrap_err();
    assert!(error.contains("node 1"), "{error}");
    let old_node = std::mem::replace(&mut cluster.nodes[2], new_node);
    cluster.dirs.push(new_dir);

    // Repair: the helpers' terms rebuild a hollow share of every key on the new node.
    for key_id in key_ids {
        let replies = terms(&cluster, key_id, 0).expect("terms for the replaced node");
        // Mixed up: one key's terms offered for another, or one helper's reply twice.
        let other = if key_id == "alpha" { "beta" } else { "alpha" };
        assert!(
            cluster.nodes[2]
                .assemble_repair(other, 0, &replies)
                .is_err()
        );
        let twice = vec![replies[0].clone(), replies[0].clone()];
        assert!(cluster.nodes[2].assemble_repair(key_id, 0, &twice).is_err());
        let mut swapped = replies.clone();
        swapped[1].signed_info = replies[0].signed_info.clone();
        assert!(
            cluster.nodes[2]
                .assemble_repair(key_id, 0, &swapped)
                .is_err()
        );
        assert!(
            cluster.nodes[2]
                .assemble_repair(key_id, 0, &replies)
                .unwrap()
        );
        assert!(
            !cluster.nodes[2]
                .assemble_repair(key_id, 0, &replies)
                .unwrap()
        );
        assert!(hollow(&cluster.nodes[2], key_id));
    }
    // A hollow share signs nothing: only the refresh can follow.
    assert!(sign(&cluster, "alpha", [1, 3], 0, &publics[0]).is_err());
    // The old node never got a term it could open, and no term is made for another node.
    assert!(
        old_node
            .assemble_repair("alpha", 0, &terms(&cluster, "alpha", 0).unwrap())
            .is_err()
    );
    assert!(
        cluster.nodes[0]
            .repair_term("alpha", 0, PARTIES[1])
            .is_err()
    );

    // The complete refresh across all three: every share whole, every pair signs every key.
    for (key_id, public) in key_ids.iter().zip(&publics) {
        let (session_id, results) = refresh_rounds(&cluster, key_id, 0, &mut |_, _| true);
        let certificate = certificate(&results.expect("refresh with the repaired share"));
        for node in &cluster.nodes {
            assert_eq!(
                node.commit_refresh(session_id, key_id, &certificate)
                    .unwrap(),
                1
            );
        }
        assert!(!hollow(&cluster.nodes[2], key_id));
        for pair in [[1, 2], [1, 3], [2, 3]] {
            sign(&cluster, key_id, pair, 1, public)
                .unwrap_or_else(|e| panic!("{key_id} pair {pair:?}: {e}"));
        }
    }
}

#[test]
fn a_node_without_membership_keys_accepts_no_change_and_a_replaced_identity_never_returns() {
    let (keys, trusted) = membership_keys();
    let cluster = cluster();
    let (new_node, _dir) = fresh_node_3(&cluster, &trusted);
    let identity = identity_bytes(&new_node.identity());
    let statement = signed(
        &membership::change_statement(CLUSTER, 1, 3, &identity, now() - 5, 3600),
        &[&keys[0], &keys[1]],
    );
    let error = cluster.nodes[0].put_membership(&statement).unwrap_err();
    assert!(error.to_string().contains("no membership keys"), "{error}");

    // With keys: node 3 replaced, then an attempt to bring the old identity back as node 3.
    let node = cluster
        .nodes
        .into_iter()
        .next()
        .unwrap()
        .with_membership_keys(trusted);
    let old_identity = identity_bytes(&node.members()[&PARTIES[2]]);
    assert_eq!(node.put_membership(&statement).unwrap(), (1, true));
    let back = signed(
        &membership::change_statement(CLUSTER, 2, 3, &old_identity, now() - 5, 3600),
        &[&keys[0], &keys[2]],
    );
    let error = node.put_membership(&back).unwrap_err();
    assert!(error.to_string().contains("never readmitted"), "{error}");
    // Nor may node 2's identity take node 3's place.
    let node_2 = identity_bytes(&node.members()[&PARTIES[1]]);
    let stolen = signed(
        &membership::change_statement(CLUSTER, 2, 3, &node_2, now() - 5, 3600),
        &[&keys[0], &keys[2]],
    );
    let error = node.put_membership(&stolen).unwrap_err();
    assert!(error.to_string().contains("node 2's"), "{error}");
    assert_eq!(node.membership_version(), 1);
}
