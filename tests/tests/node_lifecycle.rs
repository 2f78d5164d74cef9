//! Node lifecycle over real processes: keys survive restarts, a wrong passphrase is a clear
//! error that changes nothing, and no secret reaches the database, the logs or Debug output.

use std::collections::BTreeMap;
use std::path::Path;

use shardsign_eth::{Address, LegacyTransaction, Signature, U256, UnsignedTransaction};
use shardsign_node::kek::KekSource;
use shardsign_node::store::Store;
use shardsign_proto::node::v1::node_client::NodeClient;
use shardsign_proto::node::v1::{KeygenResult, SignatureResult};
use shardsign_tests::cluster::{KekKind, NodeCluster};
use shardsign_tests::leak::{contains, forms};
use shardsign_tests::relay::{self, Payload};
use tonic::transport::Channel;
use zeroize::Zeroizing;

async fn clients(cluster: &NodeCluster) -> BTreeMap<u8, NodeClient<Channel>> {
    let mut clients = BTreeMap::new();
    for id in 1..=3 {
        clients.insert(id, cluster.client(id).await);
    }
    clients
}

fn tx(nonce: u64) -> UnsignedTransaction {
    LegacyTransaction {
        chain_id: 1,
        nonce,
        gas_price: U256::from(30_000_000_000u64),
        gas_limit: 21_000,
        to: Some(Address([0x11; 20])),
        value: U256::from(1_000_000_000_000_000u64),
        data: vec![],
    }
    .into()
}

async fn sign(
    clients: &BTreeMap<u8, NodeClient<Channel>>,
    signers: [u8; 2],
    key: &KeygenResult,
    nonce: u64,
) -> SignatureResult {
    let tx = tx(nonce);
    let results = relay::sign(
        clients,
        signers,
        &key.key_id,
        &Payload::Transaction(tx.clone()),
        tx.signing_hash(),
        None,
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("signing with {signers:?}: {e:?}"));
    let signature = Signature::new(
        results[0].r.as_slice().try_into().unwrap(),
        results[0].s.as_slice().try_into().unwrap(),
        results[0].recovery_id as u8,
    )
    .unwrap();
    let expected = Address::from_public_key(
        &k256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_key).unwrap(),
    );
    assert_eq!(
        tx.into_signed(signature).recover_sender().unwrap(),
        expected
    );
    results[0].clone()
}

/// File name -> SHA-256 of its contents.
fn digests_of(dir: &Path) -> BTreeMap<String, String> {
    use sha2::Digest;
    files_of(dir)
        .into_iter()
        .map(|(name, bytes)| (name, hex::encode(sha2::Sha256::digest(bytes))))
        .collect()
}

/// The regular files of `dir` (the node's admin socket is not data).
fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_file())
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_a_restart_of_every_node_and_still_sign() {
    let mut cluster = NodeCluster::start(KekKind::Passphrase);
    let key = relay::keygen(&clients(&cluster).await, "survivor", &[1], None)
        .await
        .expect("keygen")
        .remove(0);
    sign(&clients(&cluster).await, [1, 2], &key, 0).await;

    // A clean stop of all three, then one killed outright and restarted.
    for id in 1..=3 {
        cluster.node(id).stop();
    }
    for id in 1..=3 {
        cluster.node(id).start();
    }
    cluster.node(2).kill();
    cluster.node(2).start();

    let clients = clients(&cluster).await;
    for (nonce, signers) in [[1, 2], [1, 3], [2, 3]].into_iter().enumerate() {
        sign(&clients, signers, &key, nonce as u64 + 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_passphrase_is_a_clear_error_and_leaves_the_store_byte_identical() {
    let mut cluster = NodeCluster::start(KekKind::Passphrase);
    let node = cluster.node(1);
    node.stop();
    let before = digests_of(&node.data_dir());
    let stderr = node.run_expecting_failure("this is not the right passphrase");
    assert!(stderr.contains("wrong passphrase or key file"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert_eq!(
        last, "shardsign-node: cannot unlock the store: wrong passphrase or key file",
        "{stderr}"
    );
    assert_eq!(
        digests_of(&node.data_dir()),
        before,
        "the store must be untouched"
    );
    // And the right one still works.
    node.start();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_malformed_setting_stops_the_node_with_its_name() {
    let mut cluster = NodeCluster::start(KekKind::KeyFile);
    let node = cluster.node(3);
    node.stop();
    let mut file = node.file.clone();
    file.round_timeout_secs = Some(0);
    std::fs::write(&node.config, file.to_toml()).unwrap();
    let stderr = node.run_expecting_failure("");
    assert!(stderr.contains("round_timeout_secs"), "{stderr}");
    let mut file = node.file.clone();
    file.listen = "not an address".into();
    std::fs::write(&node.config, file.to_toml()).unwrap();
    let stderr = node.run_expecting_failure("");
    assert!(stderr.contains("listen"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_policy_key_refuses_to_start_unless_development_says_so() {
    // The harness runs policy-less nodes with `insecure_no_key_policy = true`; without it the
    // same node must not start.
    let mut cluster = NodeCluster::start(KekKind::KeyFile);
    let node = cluster.node(1);
    assert_eq!(node.file.insecure_no_key_policy, Some(true));
    node.stop();
    let mut file = node.file.clone();
    file.insecure_no_key_policy = None;
    std::fs::write(&node.config, file.to_toml()).unwrap();
    let stderr = node.run_expecting_failure("");
    assert!(
        stderr.contains("policy_public_key: required") && stderr.contains("insecure_no_key_policy"),
        "{stderr}"
    );
    std::fs::write(&node.config, node.file.to_toml()).unwrap();
    node.start();
    assert!(node.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_database_the_logs_or_debug_output() {
    let mut cluster = NodeCluster::start(KekKind::Passphrase);
    let key = relay::keygen(&clients(&cluster).await, "leak-check", &[1], None)
        .await
        .expect("keygen")
        .remove(0);
    let clients = clients(&cluster).await;
    for (nonce, signers) in [[1, 2], [2, 3], [1, 3]].into_iter().enumerate() {
        sign(&clients, signers, &key, nonce as u64).await;
    }
    for id in 1..=3 {
        cluster.node(id).stop();
    }

    for id in 1..=3u8 {
        let node = cluster.node(id);
        let passphrase = node.passphrase.clone();
        let (store, identity) = Store::open(
            &node.data_dir(),
            &KekSource::Passphrase(Zeroizing::new(passphrase.clone())),
        )
        .unwrap();
        let share = store.load_key("leak-check").unwrap().share;
        let share_bytes = share.to_bytes();
        let party: dkls23::secp256k1::Party = postcard::from_bytes(&share_bytes[1..]).unwrap();
        let scalar: [u8; 32] = party.poly_point.to_bytes().into();
        let identity_bytes = identity.to_bytes();
        // The needles are real: the scalar is where the engine keeps it.
        assert!(
            contains(&share_bytes, &scalar),
            "the secret scalar is part of the share"
        );

        let mut needles = vec![passphrase.into_bytes()];
        needles.extend(forms(&scalar));
        needles.extend(forms(&identity_bytes[..32]));
        needles.extend(forms(&identity_bytes[32..]));
        // Windows deep inside the share (multiplication and OT state: secret, never public).
        for offset in
            (share_bytes.len() / 4..share_bytes.len() * 3 / 4).step_by(share_bytes.len() / 16)
        {
            needles.extend(forms(&share_bytes[offset..offset + 32]));
        }

        let mut haystacks: Vec<(String, Vec<u8>)> =
            files_of(&node.data_dir()).into_iter().collect();
        haystacks.push(("log".into(), node.log_text().into_bytes()));
        haystacks.push((
            "Debug of the share".into(),
            format!("{share:?}").into_bytes(),
        ));
        haystacks.push((
            "Debug of the identity".into(),
            format!("{identity:?}").into_bytes(),
        ));
        haystacks.push((
            "Debug of the store".into(),
            format!("{store:?}").into_bytes(),
        ));
        assert!(
            !node.log_text().contains('\x1b'),
            "log files carry no terminal escape codes"
        );
        assert!(
            node.log_text().contains("key generation complete"),
            "the log was captured"
        );
        for (name, haystack) in &haystacks {
            for (i, needle) in needles.iter().enumerate() {
                assert!(
                    !contains(haystack, needle),
                    "node {id}: secret #{i} found in {name}"
                );
            }
        }
    }
}
