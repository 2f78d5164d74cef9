//! Share refresh across three in-process nodes: the epoch rules (sign only at the current epoch,
//! refuse another naming both), the commit certificate (all three votes), aborts that need a
//! never-voted node's receipt, and the old share erased from the store file and its WAL.

use shardsign_node::store::Store;

mod common;
use common::*;

fn epochs(cluster: &Cluster, key_id: &str) -> Vec<u64> {
    cluster
        .nodes
        .iter()
        .map(|n| n.store().key_epoch(key_id).unwrap())
        .collect()
}

fn share_ciphertext(cluster: &Cluster, node: usize, key_id: &str) -> Vec<u8> {
    let conn = rusqlite::Connection::open_with_flags(
        Store::db_path(cluster.dirs[node].path()),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row(
        "SELECT share_ciphertext FROM keys WHERE key_id = ?1",
        [key_id],
        |r| r.get(0),
    )
    .unwrap()
}

/// Whether `needle` appears in the store's database file or its WAL.
fn on_disk(cluster: &Cluster, node: usize, needle: &[u8]) -> bool {
    let db = Store::db_path(cluster.dirs[node].path());
    let wal = db.with_extension("db-wal");
    [db, wal].iter().any(|path| {
        std::fs::read(path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
    })
}

#[test]
fn a_refresh_moves_every_node_to_the_next_epoch_and_erases_the_old_share() {
    let cluster = cluster();
    keygen(&cluster, "fresh");
    let public = public_key(&cluster.nodes[0], "fresh");
    sign(&cluster, "fresh", [1, 2], 0, &public).expect("epoch 0 signs");
    let old_ciphertext = share_ciphertext(&cluster, 0, "fresh");
    let needle = &old_ciphertext[1000..1064];
    assert!(on_disk(&cluster, 0, needle), "the needle is real");

    let (session_id, results) = refresh_rounds(&cluster, "fresh", 0, &mut |_, _| true);
    let results = results.expect("the refresh's rounds");
    assert_eq!(results.len(), 3, "every node voted");
    assert!(
        results
            .values()
            .all(|r| r.new_epoch == 1 && r.public_key == public)
    );
    // Voted, not yet committed: every node still signs at epoch 0, and refuses epoch 1.
    assert_eq!(epochs(&cluster, "fresh"), [0, 0, 0]);
    sign(&cluster, "fresh", [2, 3], 0, &public).expect("still epoch 0 until the commit");
    let error = sign(&cluster, "fresh", [2, 3], 1, &public).unwrap_err();
    assert!(
        error.contains("is at epoch 0 on this node, the session asked for epoch 1"),
        "{error}"
    );

    let certificate = certificate(&results);
    for node in &cluster.nodes {
        assert_eq!(
            node.commit_refresh(session_id, "fresh", &certificate)
                .unwrap(),
            1
        );
        // Idempotent: the coordinator retries until every node acknowledged.
        assert_eq!(
            node.commit_refresh(session_id, "fresh", &certificate)
                .unwrap(),
            1
        );
    }
    assert_eq!(epochs(&cluster, "fresh"), [1, 1, 1]);
    for pair in [[1, 2], [1, 3], [2, 3]] {
        sign(&cluster, "fresh", pair, 1, &public).expect("every pair signs at epoch 1");
    }
    let error = sign(&cluster, "fresh", [1, 2], 0, &public).unwrap_err();
    assert!(
        error.contains("is at epoch 1 on this node, the session asked for epoch 0"),
        "{error}"
    );
    assert!(
        !on_disk(&cluster, 0, needle),
        "the old share's ciphertext is gone from the database file and its WAL"
    );
    // A committed refresh is never aborted.
    let error = cluster.nodes[0]
        .abort_refresh(session_id, "fresh", &[])
        .unwrap_err();
    assert!(error.to_string().contains("cannot be aborted"), "{error}");
    // And the next refresh starts from epoch 1.
    let (_, again) = refresh_rounds(&cluster, "fresh", 0, &mut |_, _| true);
    let error = again.unwrap_err();
    assert!(error.contains("is at epoch 1"), "{error}");
}

#[test]
fn a_refresh_interrupted_between_rounds_leaves_every_node_on_the_old_epoch() {
    let cluster = cluster();
    keygen(&cluster, "interrupted");
    let public = public_key(&cluster.nodes[0], "interrupted");
    // Node 3 "dies" after round 1: nothing reaches it from round 2 on.
    let (session_id, results) = refresh_rounds(&cluster, "interrupted", 0, &mut |to, e| {
        !(to == 3 && e.round >= 2)
    });
    let results = results.expect("the others just wait");
    assert!(results.is_empty(), "nobody finished, nobody voted");
    for node in &cluster.nodes {
        let (deleted, _) = node.abort_refresh(session_id, "interrupted", &[]).unwrap();
        assert!(!deleted, "nothing was stored");
    }
    assert_eq!(epochs(&cluster, "interrupted"), [0, 0, 0]);
    for pair in [[1, 2], [1, 3], [2, 3]] {
        sign(&cluster, "interrupted", pair, 0, &public).expect("signing goes on at epoch 0");
    }
    // A new refresh runs from there.
    let (session_id, results) = refresh_rounds(&cluster, "interrupted", 0, &mut |_, _| true);
    let certificate = certificate(&results.unwrap());
    for node in &cluster.nodes {
        node.commit_refresh(session_id, "interrupted", &certificate)
            .unwrap();
    }
    sign(&cluster, "interrupted", [1, 3], 1, &public).unwrap();
}

#[test]
fn a_commit_needs_all_three_votes_and_an_abort_needs_a_receipt_from_a_node_that_never_voted() {
    let cluster = cluster();
    keygen(&cluster, "votes");
    let public = public_key(&cluster.nodes[0], "votes");
    // Node 3 never sees the confirmations (round 4): nodes 1 and 2 vote, node 3 cannot.
    let (session_id, results) = refresh_rounds(&cluster, "votes", 0, &mut |to, e| {
        !(to == 3 && e.round == 4)
    });
    let results = results.unwrap();
    assert_eq!(results.keys().copied().collect::<Vec<_>>(), [1, 2]);
    let two_votes = certificate(&results);

    // Two votes, or a third forged from another node's, do not commit.
    let error = cluster.nodes[0]
        .commit_refresh(session_id, "votes", &two_votes)
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("node 3's vote for this refresh is missing"),
        "{error}"
    );
    let mut forged = two_votes.clone();
    forged.push((3, two_votes[0].1.clone()));
    assert!(
        cluster.nodes[0]
            .commit_refresh(session_id, "votes", &forged)
            .is_err()
    );

    // A node that voted keeps its new share until a node that never voted gives its receipt.
    let error = cluster.nodes[0]
        .abort_refresh(session_id, "votes", &[])
        .unwrap_err();
    assert!(error.to_string().contains("receipt proving"), "{error}");
    // Node 2 voted too: a receipt that does not verify proves nothing, so it keeps its share.
    let error = cluster.nodes[1]
        .abort_refresh(session_id, "votes", &[(1, vec![0; 80])])
        .unwrap_err();
    assert!(error.to_string().contains("receipt proving"), "{error}");
    let (deleted, receipt_of_3) = cluster.nodes[2]
        .abort_refresh(session_id, "votes", &[])
        .unwrap();
    assert!(!deleted);
    for node in &cluster.nodes[..2] {
        let (deleted, _) = node
            .abort_refresh(session_id, "votes", &[(3, receipt_of_3.clone())])
            .unwrap();
        assert!(deleted);
    }
    assert_eq!(epochs(&cluster, "votes"), [0, 0, 0]);
    sign(&cluster, "votes", [1, 2], 0, &public).unwrap();
    assert!(
        cluster.nodes.iter().all(|n| n
            .store()
            .list_keys(false)
            .unwrap()
            .iter()
            .all(|k| k.pending_refresh.is_none())),
        "no pending share left anywhere"
    );
}

#[test]
fn a_node_that_missed_the_commit_stays_behind_until_it_is_given_the_certificate() {
    let cluster = cluster();
    keygen(&cluster, "behind");
    let public = public_key(&cluster.nodes[0], "behind");
    let (session_id, results) = refresh_rounds(&cluster, "behind", 0, &mut |_, _| true);
    let certificate = certificate(&results.unwrap());
    for node in &cluster.nodes[..2] {
        node.commit_refresh(session_id, "behind", &certificate)
            .unwrap();
    }
    assert_eq!(epochs(&cluster, "behind"), [1, 1, 0]);
    // Node 3 still holds its vote-backed new share and lists it; it refuses epoch 1 until the
    // certificate reaches it, while nodes 1 and 2 sign at epoch 1.
    let listed = cluster.nodes[2].store().list_keys(false).unwrap();
    assert!(listed[0].pending_refresh.is_some());
    sign(&cluster, "behind", [1, 2], 1, &public).unwrap();
    assert!(sign(&cluster, "behind", [1, 3], 1, &public).is_err());
    // No abort can strand it: node 1 committed and refuses, so there is no receipt to use.
    assert!(
        cluster.nodes[0]
            .abort_refresh(session_id, "behind", &[])
            .is_err()
    );
    let error = cluster.nodes[2]
        .abort_refresh(session_id, "behind", &[])
        .unwrap_err();
    assert!(error.to_string().contains("receipt proving"), "{error}");
    cluster.nodes[2]
        .commit_refresh(session_id, "behind", &certificate)
        .unwrap();
    sign(&cluster, "behind", [1, 3], 1, &public).unwrap();
    sign(&cluster, "behind", [2, 3], 1, &public).unwrap();
}

/// Each node's signed verifying share, by node id.
type Published = Vec<(u8, Vec<u8>)>;

/// Drops every node's public key package of `key_id`, as for a key made before nodes kept one.
fn forget_packages(cluster: &Cluster, key_id: &str) {
    for dir in &cluster.dirs {
        let conn = rusqlite::Connection::open(Store::db_path(dir.path())).unwrap();
        conn.execute(
            "UPDATE keys SET public_package = NULL WHERE key_id = ?1",
            [key_id],
        )
        .unwrap();
    }
}

fn packages_kept(cluster: &Cluster, key_id: &str) -> Vec<bool> {
    cluster
        .nodes
        .iter()
        .map(|n| {
            n.store()
                .list_keys(false)
                .unwrap()
                .into_iter()
                .find(|k| k.key_id == key_id)
                .unwrap()
                .has_public_package
        })
        .collect()
}

/// Node 1's signature (it is the liar here) over a verifying share of its choosing, in the
/// agreement's context as the node module builds it.
fn lie_as_node_1(cluster: &Cluster, key_id: &str, epoch: u64, point: &[u8], key: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"shardsign-package-agreement-v1\0");
    hasher.update(key_id.as_bytes());
    hasher.update([0]);
    hasher.update(epoch.to_be_bytes());
    let id: [u8; 32] = hasher.finalize().into();
    let context = shardsign_seal::Context {
        cluster_id: "divergence-test",
        protocol: 0x41,
        session_id: &id,
        round: 1,
        from: 1,
        to: 0,
        binding: &id,
    };
    shardsign_seal::sign_broadcast(&cluster.secret_of_node_1, &context, &[point, key].concat())
}

#[test]
fn a_key_without_a_package_gets_one_only_from_each_nodes_own_signed_verifying_share() {
    let cluster = cluster();
    keygen(&cluster, "legacy");
    keygen(&cluster, "other");
    let original = cluster.nodes[0]
        .store()
        .public_package("legacy")
        .unwrap()
        .unwrap();
    forget_packages(&cluster, "legacy");
    assert_eq!(packages_kept(&cluster, "legacy"), [false, false, false]);
    let (_, refused) = refresh_rounds(&cluster, "legacy", 0, &mut |_, _| true);
    assert!(
        refused.unwrap_err().contains("public key package"),
        "no refresh without a package"
    );

    let publish = |key_id: &str| -> Published {
        cluster
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let agreement = n.agree_package(key_id, 0, &[]).unwrap();
                (i as u8 + 1, agreement.own)
            })
            .collect()
    };
    let honest = publish("legacy");
    let public = public_key(&cluster.nodes[0], "legacy");
    let generator = {
        use k256::elliptic_curve::sec1::ToSec1Point;
        k256::AffinePoint::GENERATOR
            .to_sec1_point(true)
            .as_bytes()
            .to_vec()
    };
    let with = |node: u8, signed: Vec<u8>| -> Published {
        let mut shares = honest.clone();
        shares[usize::from(node - 1)] = (node, signed);
        shares
    };
    let forged: Vec<(&str, Published)> = vec![
        ("missing", honest[..2].to_vec()),
        ("twice", [honest.clone(), vec![honest[0].clone()]].concat()),
        // The coordinator passes node 1's share off as node 2's.
        ("relabelled", with(2, honest[0].1.clone())),
        // Another key's shares, validly signed by their nodes.
        ("another key", publish("other")),
        // Node 1 signs a point of its choosing: its signature verifies, the points do not
        // interpolate to the key.
        (
            "lying node",
            with(1, lie_as_node_1(&cluster, "legacy", 0, &generator, &public)),
        ),
        // A stray byte in node 3's share breaks its signature.
        ("tampered", {
            let mut signed = honest[2].1.clone();
            signed[5] ^= 1;
            with(3, signed)
        }),
    ];
    for (what, shares) in &forged {
        for (i, node) in cluster.nodes.iter().enumerate() {
            let error = match node.agree_package("legacy", 0, shares) {
                Ok(_) => panic!("{what}: node {} kept a package", i + 1),
                Err(error) => error.to_string(),
            };
            assert!(error.starts_with("shares: "), "{what}: {error}");
        }
        assert_eq!(
            packages_kept(&cluster, "legacy"),
            [false, false, false],
            "{what}"
        );
    }
    let error = cluster.nodes[0]
        .agree_package("legacy", 1, &honest)
        .unwrap_err();
    assert!(
        error.to_string().contains("at epoch 0 on this node"),
        "{error}"
    );

    for node in &cluster.nodes {
        assert!(node.agree_package("legacy", 0, &honest).unwrap().stored);
        // Idempotent: a repeated agreement keeps what is kept.
        assert!(node.agree_package("legacy", 0, &honest).unwrap().stored);
    }
    assert_eq!(packages_kept(&cluster, "legacy"), [true, true, true]);
    for node in &cluster.nodes {
        assert_eq!(
            node.store().public_package("legacy").unwrap().unwrap(),
            original,
            "the agreed package is the ceremony's"
        );
    }
    let (session_id, results) = refresh_rounds(&cluster, "legacy", 0, &mut |_, _| true);
    let certificate = certificate(&results.expect("the refresh runs once the package is agreed"));
    for node in &cluster.nodes {
        assert_eq!(
            node.commit_refresh(session_id, "legacy", &certificate)
                .unwrap(),
            1
        );
    }
    for pair in [[1, 2], [1, 3], [2, 3]] {
        sign(&cluster, "legacy", pair, 1, &public).expect("every pair signs after the refresh");
    }
}
