//! A node restored from a backup, in process: it signs nothing until it has re-learned the
//! present from both peers' signed states. Node 1's backup is taken, then the cluster moves on
//! (a newer key statement, two sessions charged on nodes 2 and 3, node 3 replaced by a new
//! identity, a ban on node 2); node 1 is restored from the backup and must take all of it. The
//! old node 3's report counts for nothing, and a restored old node 3 is never readmitted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use prost::Message as _;
use shardsign_node::clock::SystemClock;
use shardsign_node::error::NodeError;
use shardsign_node::kek::KekSource;
use shardsign_node::sessions::{Node, StartSign};
use shardsign_node::store::{Ban, Store};
use shardsign_policy::membership::{self, MembershipKeys};
use shardsign_policy::{OperatorPolicyKey, PolicyVerifier};
use shardsign_proto::v1 as api;
use shardsign_request::{KeyId, Payload, SignRequest};
use shardsign_seal::PublicIdentity;
use shardsign_tss::{PARTIES, SessionId};
use zeroize::Zeroizing;

mod common;
use common::*;

const CLUSTER: &str = "divergence-test";

fn now() -> i64 {
    shardsign_request::unix_now_ms() / 1000
}

fn kek(node: u8) -> KekSource {
    KekSource::KeyFile(Zeroizing::new([node; 32]))
}

fn identity_bytes(identity: &PublicIdentity) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&identity.signing_key());
    out[32..].copy_from_slice(&identity.kx_key());
    out
}

/// A key statement allowing message signing on chain 1, at most 3 sessions a minute per node.
fn statement(operator: &OperatorPolicyKey, version: u64) -> Vec<u8> {
    let header = shardsign_policy::KeyStatementHeader {
        cluster_id: CLUSTER,
        key_id: "kept",
        version,
        issued_at_unix: now(),
    };
    let rules = api::Policy {
        allow_message_signing: true,
        requests_per_minute: 3,
        ..Default::default()
    };
    operator
        .sign_key_policy(header, &rules, now() + 86_400)
        .unwrap()
        .encode_to_vec()
}

fn start(node: &Node, pair: [u8; 2], policy: &[u8]) -> Result<SessionId, NodeError> {
    let session_id = fresh_session();
    let request = SignRequest {
        key_id: KeyId::parse("kept").unwrap(),
        payload: Payload::PersonalMessage(b"restored".to_vec()),
    };
    node.start_sign(StartSign {
        session_id,
        signers: [party(pair[0]), party(pair[1])],
        expected_hash: request.signing_hash(),
        request,
        signed_policy: policy.to_vec(),
        epoch: 0,
        request_id: String::new(),
        approval: Vec::new(),
    })?;
    Ok(session_id)
}

/// A whole signing session on `pair`, so both nodes keep its charge.
fn sign_on(cluster: &Cluster, pair: [u8; 2], policy: &[u8]) {
    let session_id = fresh_session();
    let request = SignRequest {
        key_id: KeyId::parse("kept").unwrap(),
        payload: Payload::PersonalMessage(b"moving on".to_vec()),
    };
    let mut outgoing = Vec::new();
    for node in pair {
        outgoing.extend(
            cluster.nodes[usize::from(node - 1)]
                .start_sign(StartSign {
                    session_id,
                    signers: [party(pair[0]), party(pair[1])],
                    expected_hash: request.signing_hash(),
                    request: request.clone(),
                    signed_policy: policy.to_vec(),
                    epoch: 0,
                    request_id: String::new(),
                    approval: Vec::new(),
                })
                .unwrap(),
        );
    }
    relay(cluster, session_id, outgoing, &pair, &mut |_, _| true).unwrap();
}

/// Reopens the store in `dir` as node `id` with the configured `members`.
fn open(
    dir: &std::path::Path,
    id: u8,
    members: &BTreeMap<shardsign_tss::PartyId, PublicIdentity>,
    verifier: &PolicyVerifier,
    trusted: &MembershipKeys,
) -> Result<Node, NodeError> {
    let (store, secret) = Store::open(dir, &kek(id))?;
    Ok(Node::new(
        store,
        secret,
        members.clone(),
        Duration::from_secs(30),
        16,
        Some(verifier.clone()),
    )?
    .with_clock(Arc::new(SystemClock))
    .with_membership_keys(trusted.clone()))
}

#[test]
fn a_restored_node_signs_nothing_until_it_relearns_the_present_from_both_peers() {
    let operator = OperatorPolicyKey::generate();
    let verifier = PolicyVerifier::from_hex(&operator.public_hex()).unwrap();
    let membership_keys: Vec<SigningKey> = (0..3)
        .map(|_| SigningKey::generate(&mut rand_core_06::OsRng))
        .collect();
    let trusted = MembershipKeys::new(
        membership_keys.iter().map(|k| k.verifying_key()).collect(),
        None,
    )
    .unwrap()
    .0;
    let mut cluster = cluster_with(
        Duration::from_secs(30),
        Arc::new(SystemClock),
        Some(verifier.clone()),
    );
    cluster.nodes = cluster
        .nodes
        .into_iter()
        .map(|n| n.with_membership_keys(trusted.clone()))
        .collect();
    let configured = (*cluster.nodes[0].members()).clone();
    keygen(&cluster, "kept");
    let v1 = statement(&operator, 1);
    for node in &cluster.nodes {
        node.put_policy(&v1).unwrap();
    }

    // Node 1's backup, and of node 3 (the identity about to be replaced).
    let backups = tempfile::tempdir().unwrap();
    let backup_1 = backups.path().join("node-1.backup");
    Store::backup(cluster.dirs[0].path(), &backup_1).unwrap();
    let backup_3 = backups.path().join("node-3.backup");
    Store::backup(cluster.dirs[2].path(), &backup_3).unwrap();

    // The cluster moves on: statement v2 everywhere, two sessions on nodes 2 and 3.
    let v2 = statement(&operator, 2);
    for node in &cluster.nodes {
        node.put_policy(&v2).unwrap();
    }
    sign_on(&cluster, [2, 3], &v2);
    sign_on(&cluster, [2, 3], &v2);

    // Node 3 is replaced by a new identity (change v1, applied by nodes 1 and 2 and the new
    // node 3); the old node 3 keeps running, as a thief's copy would.
    let new_dir = tempfile::tempdir().unwrap();
    let (new_store, new_secret) =
        Store::init(new_dir.path(), PARTIES[2], CLUSTER, &kek(33)).unwrap();
    let mut current = configured.clone();
    current.insert(PARTIES[2], new_secret.public());
    let new_three = Node::new(
        new_store,
        new_secret,
        current.clone(),
        Duration::from_secs(30),
        16,
        Some(verifier.clone()),
    )
    .unwrap()
    .with_membership_keys(trusted.clone());
    let mut change = api::SignedStatement {
        statement: membership::change_statement(
            CLUSTER,
            1,
            3,
            &identity_bytes(&new_three.identity()),
            now() - 5,
            3600,
        )
        .encode_to_vec(),
        signatures: Vec::new(),
    };
    for key in &membership_keys[..2] {
        membership::add_signature(key, &mut change).unwrap();
    }
    let change = change.encode_to_vec();
    for node in [&cluster.nodes[0], &cluster.nodes[1], &new_three] {
        node.put_membership(&change).unwrap();
    }
    let old_three = cluster.nodes.pop().unwrap();

    // Node 2 catches the new node 3 cheating (recorded as the engine would, then reopened).
    let node_2 = cluster.nodes.pop().unwrap();
    node_2
        .store()
        .record_ban(&Ban {
            peer_signing_key: new_three.identity().signing_key(),
            node_id: 3,
            reason: "OT consistency check failed".into(),
            at_ms: shardsign_request::unix_now_ms(),
        })
        .unwrap();
    drop(node_2);
    let node_2 = open(cluster.dirs[1].path(), 2, &configured, &verifier, &trusted).unwrap();
    assert_eq!(node_2.bans().len(), 1);

    // Node 1's disk is lost: restored from the backup, it knows the members of that day.
    drop(cluster.nodes.pop().unwrap());
    let restored_dir = tempfile::tempdir().unwrap();
    Store::restore(
        restored_dir.path(),
        &backup_1,
        &kek(1),
        None,
        (1, CLUSTER),
        shardsign_request::unix_now_ms(),
    )
    .unwrap();
    let node_1 = open(restored_dir.path(), 1, &configured, &verifier, &trusted).unwrap();
    assert_eq!(node_1.membership_version(), 0, "the backup's membership");
    let challenge = node_1
        .relearn_challenge()
        .expect("a restored node must re-learn");

    // Until it has re-learned it signs nothing, and vouches for nothing.
    let error = start(&node_1, [1, 2], &v2).unwrap_err();
    assert!(matches!(error, NodeError::RelearnNeeded { .. }), "{error}");
    assert!(error.to_string().contains("re-learned"), "{error}");
    let error = node_1.signed_state(&[7; 32], 2).unwrap_err();
    assert!(error.to_string().contains("cannot vouch"), "{error}");

    // The old node 3's report (signed by the replaced identity, without the change) with node
    // 2's: the change is taken from node 2 (a quorum signed it), the old identity's report is not.
    let from_2 = node_2.signed_state(&challenge, 1).unwrap();
    let from_old_3 = old_three.signed_state(&challenge, 1).unwrap();
    let error = node_1.relearn(&[from_2.clone(), from_old_3]).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("not signed by node 3's current identity"),
        "{error}"
    );
    assert_eq!(node_1.membership_version(), 1);
    assert_eq!(node_1.members()[&PARTIES[2]], new_three.identity());
    assert!(node_1.relearn_challenge().is_some(), "still refusing");
    assert!(start(&node_1, [1, 2], &v2).is_err());

    // Only one peer's report, or one signed for another challenge or node: refused.
    assert!(node_1.relearn(std::slice::from_ref(&from_2)).is_err());
    let for_node_3 = node_2.signed_state(&challenge, 3).unwrap();
    let from_new_3 = new_three.signed_state(&challenge, 1).unwrap();
    assert!(node_1.relearn(&[for_node_3, from_new_3.clone()]).is_err());
    let stale = new_three.signed_state(&[9; 32], 1).unwrap();
    let error = node_1.relearn(&[from_2.clone(), stale]).unwrap_err();
    assert!(error.to_string().contains("challenge"), "{error}");

    // Both current peers: everything that only moves forward is taken.
    let reply = node_1.relearn(&[from_2, from_new_3]).unwrap();
    assert_eq!(reply.membership_version, 1);
    assert_eq!(reply.key_statements_applied, 1, "statement v2");
    assert_eq!(reply.bans_learned, 1, "node 2's ban of the new node 3");
    assert_eq!(
        reply.charges_learned, 2,
        "the two sessions nodes 2 and 3 signed"
    );
    assert!(node_1.relearn_challenge().is_none());

    // The older statement is refused now; the ban holds; the two learned sessions count
    // against the 3-a-minute rate, so the second new session is over it.
    let error = start(&node_1, [1, 2], &v1).unwrap_err();
    assert!(
        error.to_string().contains("older than version 2"),
        "{error}"
    );
    let error = start(&node_1, [1, 3], &v2).unwrap_err();
    assert!(matches!(error, NodeError::Banned { .. }), "{error}");
    start(&node_1, [1, 2], &v2).expect("the third session this minute");
    let error = start(&node_1, [1, 2], &v2).unwrap_err();
    assert!(
        error.to_string().contains("3 sessions for key `kept`"),
        "{error}"
    );

    // The relearned state survives a restart: no challenge, same membership and ban.
    drop(node_1);
    let node_1 = open(restored_dir.path(), 1, &configured, &verifier, &trusted).unwrap();
    assert!(node_1.relearn_challenge().is_none());
    assert_eq!(node_1.membership_version(), 1);
    assert_eq!(node_1.bans().len(), 1);

    // The old node 3 restored from its backup: its own peers' membership names another
    // identity for node 3, so it never comes back.
    drop(old_three);
    let old_dir = tempfile::tempdir().unwrap();
    Store::restore(
        old_dir.path(),
        &backup_3,
        &kek(3),
        None,
        (3, CLUSTER),
        shardsign_request::unix_now_ms(),
    )
    .unwrap();
    let restored_3 = open(old_dir.path(), 3, &configured, &verifier, &trusted).unwrap();
    let challenge = restored_3.relearn_challenge().unwrap();
    let error = restored_3
        .relearn(&[
            node_1.signed_state(&challenge, 3).unwrap(),
            node_2.signed_state(&challenge, 3).unwrap(),
        ])
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("this node is the one being replaced"),
        "{error}"
    );
    assert!(start(&restored_3, [2, 3], &v2).is_err());
}
