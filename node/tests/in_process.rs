//! Three nodes in-process (no network), for what needs a node's insides: a forged confirmation
//! signed with a node's own key, and session deadlines.
//!
//! The key-generation confirmation round catches a divergent view of the broadcasts. After the engine's three rounds, node 1 (compromised, or a relay
//! holding node 1's key) shows node 3 a confirmation that does not match what node 3 saw. An honest
//! node 1 signs exactly one broadcast per round, so only a malicious signer can produce two
//! versions; what node 3 must do either way is refuse to store anything.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shardsign_node::clock::{ManualClock, SystemClock};
use shardsign_node::sessions::keygen_binding;
use shardsign_policy::{OperatorPolicyKey, PolicyVerifier};
use shardsign_proto::node::v1::Envelope;
use shardsign_seal::{Context, sign_broadcast};
use shardsign_tss::{PARTIES, SessionId};

mod common;
use common::*;

const KEY_ID: &str = "divergent";

#[test]
fn a_divergent_confirmation_aborts_key_generation_and_stores_nothing() {
    let cluster = cluster();
    let session_id = fresh_session();
    let mut outgoing: Vec<Envelope> = Vec::new();
    for node in &cluster.nodes {
        outgoing.extend(node.start_keygen(session_id, KEY_ID, &CHAINS).unwrap());
    }
    // Rounds 1 to 3, delivered honestly.
    for _ in 1..=3 {
        let mut inbox: BTreeMap<u8, Vec<Envelope>> = BTreeMap::new();
        for envelope in outgoing.drain(..) {
            for to in recipients(&envelope) {
                inbox.entry(to).or_default().push(envelope.clone());
            }
        }
        for (to, envelopes) in inbox {
            let outcome = cluster.nodes[usize::from(to - 1)]
                .deliver(session_id, envelopes)
                .unwrap();
            assert!(outcome.result.is_none());
            outgoing.extend(outcome.envelopes);
        }
    }
    // Every node now sends its signed confirmation (round 4).
    assert_eq!(outgoing.len(), 3);
    assert!(outgoing.iter().all(|e| e.round == 4 && e.to == 0));

    // Node 1's confirmation for node 3 is replaced by a validly signed, different one.
    let binding = keygen_binding(KEY_ID, &CHAINS);
    let context = Context {
        cluster_id: "divergence-test",
        protocol: 1,
        session_id: session_id.as_bytes(),
        round: 4,
        from: 1,
        to: 0,
        binding: &binding,
    };
    let forged = Envelope {
        from: 1,
        to: 0,
        round: 4,
        body: sign_broadcast(&cluster.secret_of_node_1, &context, &[0x42; 65]),
    };
    let mut for_three: Vec<Envelope> = outgoing.iter().filter(|e| e.from != 3).cloned().collect();
    for envelope in &mut for_three {
        if envelope.from == 1 {
            *envelope = forged.clone();
        }
    }
    let error = cluster.nodes[2].deliver(session_id, for_three).unwrap_err();
    assert!(
        error.to_string().contains("broadcast divergence"),
        "{error}"
    );
    let store = cluster.nodes[2].store();
    assert!(
        store.list_keys(true).unwrap().is_empty(),
        "node 3 stored nothing"
    );
    assert_eq!(
        store.security_event_count().unwrap(),
        1,
        "the event is on record"
    );

    // Nodes 1 and 2, given honest confirmations, finish; the relay then aborts everywhere
    // because node 3 failed, and no usable share remains.
    for (index, node) in cluster.nodes.iter().enumerate().take(2) {
        let me = (index + 1) as u32;
        let confirmations: Vec<Envelope> =
            outgoing.iter().filter(|e| e.from != me).cloned().collect();
        let outcome = node.deliver(session_id, confirmations).unwrap();
        assert!(outcome.result.is_some(), "node {me} finished");
        assert!(
            node.store().list_keys(false).unwrap().is_empty(),
            "pending shares are not usable"
        );
        assert!(node.abort_keygen(session_id, KEY_ID, &[]).unwrap().0);
        assert!(
            node.store().list_keys(true).unwrap().is_empty(),
            "the abort deleted the pending share"
        );
    }
}

#[test]
fn a_session_past_its_round_deadline_is_dropped() {
    let clock = Arc::new(ManualClock::default());
    let cluster = cluster_with_clock(Duration::from_millis(50), clock.clone());
    let session_id = fresh_session();
    cluster.nodes[0]
        .start_keygen(session_id, "slow", &CHAINS)
        .unwrap();
    assert_eq!(cluster.nodes[0].sessions_in_flight(), 1);
    assert_eq!(cluster.nodes[0].reap_expired(), 0, "not expired yet");
    clock.advance(Duration::from_millis(49));
    assert_eq!(
        cluster.nodes[0].reap_expired(),
        0,
        "1 ms before the deadline"
    );
    clock.advance(Duration::from_millis(2));
    assert_eq!(cluster.nodes[0].reap_expired(), 1);
    assert_eq!(cluster.nodes[0].sessions_in_flight(), 0);
    let error = cluster.nodes[0].deliver(session_id, vec![]).unwrap_err();
    assert!(
        error.to_string().contains("unknown or expired session"),
        "{error}"
    );
}

#[test]
fn every_node_keeps_the_same_public_key_package_and_it_matches_its_share() {
    let cluster = cluster();
    keygen(&cluster, "packaged");
    let packages: Vec<_> = cluster
        .nodes
        .iter()
        .map(|node| {
            node.store()
                .public_package("packaged")
                .unwrap()
                .expect("kept")
        })
        .collect();
    assert!(
        packages.windows(2).all(|w| w[0] == w[1]),
        "one package on all three nodes"
    );
    for node in &cluster.nodes {
        let share = node.store().load_key("packaged").unwrap().share;
        assert!(packages[0].matches(&share));
        assert_eq!(packages[0].public_key(), share.public_key());
    }
}

/// Runs a whole key generation honestly and commits it on every node.
#[test]
fn racing_policy_updates_leave_the_newest_version_in_force() {
    let operator = OperatorPolicyKey::generate();
    let verifier = PolicyVerifier::from_hex(&operator.public_hex()).unwrap();
    let cluster = cluster_with(
        Duration::from_secs(30),
        Arc::new(SystemClock),
        Some(verifier),
    );
    keygen(&cluster, "raced");
    let signed: Vec<Vec<u8>> = (1..=40u64)
        .map(|version| {
            use prost::Message as _;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let header = shardsign_policy::KeyStatementHeader {
                cluster_id: "divergence-test",
                key_id: "raced",
                version,
                issued_at_unix: now,
            };
            let rules = shardsign_proto::v1::Policy {
                allowed_chain_ids: vec![1],
                ..Default::default()
            };
            operator
                .sign_key_policy(header, &rules, now + 86_400)
                .unwrap()
                .encode_to_vec()
        })
        .collect();
    let node = &cluster.nodes[0];
    // Four threads put every version in interleaved orders at once.
    std::thread::scope(|scope| {
        for offset in 0..4 {
            let signed = &signed;
            scope.spawn(move || {
                for index in (0..signed.len()).rev().skip(offset).step_by(4) {
                    let _ = node.put_policy(&signed[index]);
                }
                for index in (0..signed.len()).skip(offset).step_by(4) {
                    let _ = node.put_policy(&signed[index]);
                }
            });
        }
    });
    // Version 40 is in force: no older one is accepted, whichever update wrote last.
    for (index, older) in signed[..39].iter().enumerate().rev() {
        let error = node
            .put_policy(older)
            .expect_err("an older version is refused");
        assert!(
            error.to_string().contains("older than version 40"),
            "version {}: {error}",
            index + 1
        );
    }
    node.put_policy(&signed[39]).expect("the newest is held");
}

/// A key policy allowing one message signature per minute on each node, signed by `operator`.
fn one_per_minute(operator: &OperatorPolicyKey, key_id: &str) -> Vec<u8> {
    use prost::Message as _;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let header = shardsign_policy::KeyStatementHeader {
        cluster_id: "divergence-test",
        key_id,
        version: 1,
        issued_at_unix: now,
    };
    let rules = shardsign_proto::v1::Policy {
        allow_message_signing: true,
        requests_per_minute: 1,
        ..Default::default()
    };
    operator
        .sign_key_policy(header, &rules, now + 86_400)
        .unwrap()
        .encode_to_vec()
}

#[test]
fn a_nodes_rate_counts_the_sessions_it_joins_and_gives_back_one_that_never_signed() {
    let operator = OperatorPolicyKey::generate();
    let verifier = PolicyVerifier::from_hex(&operator.public_hex()).unwrap();
    let cluster = cluster_with(
        Duration::from_secs(30),
        Arc::new(SystemClock),
        Some(verifier),
    );
    keygen(&cluster, "rated");
    let policy = one_per_minute(&operator, "rated");
    let start = |session_id: SessionId| {
        let request = shardsign_request::SignRequest {
            key_id: shardsign_request::KeyId::parse("rated").unwrap(),
            payload: shardsign_request::Payload::PersonalMessage(b"hello".to_vec()),
        };
        cluster.nodes[0].start_sign(shardsign_node::sessions::StartSign {
            session_id,
            signers: [PARTIES[0], PARTIES[1]],
            expected_hash: request.signing_hash(),
            request,
            signed_policy: policy.clone(),
            epoch: 0,
            request_id: String::new(),
            approval: Vec::new(),
        })
    };
    let first = fresh_session();
    start(first).expect("the first session this minute");
    let error = start(fresh_session()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("policy requests_per_minute: 1 sessions for key `rated` in the last minute"),
        "{error}"
    );
    // Cancelled before any signature fragment left: the session is given back.
    assert!(cluster.nodes[0].cancel(&first));
    start(fresh_session()).expect("the cancelled session no longer counts");
}

#[test]
fn a_session_id_older_than_the_window_is_refused_so_forgetting_it_cannot_reopen_a_replay() {
    let cluster = cluster();
    let made = shardsign_request::unix_now_ms() - shardsign_request::SESSION_ID_MAX_AGE_MS - 1_000;
    let old = SessionId(shardsign_request::new_session_id(made));
    let error = cluster.nodes[0]
        .start_keygen(old, "late", &CHAINS)
        .unwrap_err();
    assert!(
        matches!(error, shardsign_node::error::NodeError::SessionTime(_)),
        "{error}"
    );
    assert!(
        error.to_string().contains("over the 600 s a node accepts"),
        "{error}"
    );
    let ahead =
        shardsign_request::unix_now_ms() + shardsign_request::SESSION_ID_MAX_AHEAD_MS + 60_000;
    let error = cluster.nodes[0]
        .start_keygen(
            SessionId(shardsign_request::new_session_id(ahead)),
            "early",
            &CHAINS,
        )
        .unwrap_err();
    assert!(
        error.to_string().contains("ahead of this node's clock"),
        "{error}"
    );
    // Neither was claimed: the store holds only what it accepted.
    assert_eq!(cluster.nodes[0].store().used_session_count().unwrap(), 0);
}

#[test]
fn a_half_committed_ceremony_is_undone_only_with_another_nodes_abort_receipt() {
    let cluster = cluster();
    let session_id = run_keygen(&cluster, "half");
    let [one, two, three] = &cluster.nodes[..] else {
        unreachable!()
    };
    // Nodes 1 and 3 committed; node 2 never did (its commit failed) and aborts.
    assert!(one.commit_keygen(session_id, "half", false).unwrap());
    assert!(three.commit_keygen(session_id, "half", false).unwrap());
    let (deleted, receipt_of_two) = two.abort_keygen(session_id, "half", &[]).unwrap();
    assert!(deleted, "node 2's pending share");
    let error = two.commit_keygen(session_id, "half", false).unwrap_err();
    assert!(error.to_string().contains("never commits it"), "{error}");

    // Node 1 keeps its committed share without a receipt, or with one that is not another
    // node's genuine receipt for this ceremony.
    let error = one.abort_keygen(session_id, "half", &[]).unwrap_err();
    assert!(
        error.to_string().contains("signed abort receipt"),
        "{error}"
    );
    let forged = vec![(2u8, receipt_of_two[..receipt_of_two.len() - 1].to_vec())];
    assert!(one.abort_keygen(session_id, "half", &forged).is_err());
    let (_, own) = three.abort_keygen(SessionId([9; 32]), "half", &[]).unwrap();
    assert!(
        one.abort_keygen(session_id, "half", &[(3, own)]).is_err(),
        "a receipt for another ceremony"
    );
    assert_eq!(one.store().list_keys(false).unwrap().len(), 1);

    // With node 2's receipt, nodes 1 and 3 delete their shares: nothing is left anywhere.
    for node in [one, three] {
        let receipts = vec![(2u8, receipt_of_two.clone())];
        assert!(node.abort_keygen(session_id, "half", &receipts).unwrap().0);
        assert!(node.store().list_keys(true).unwrap().is_empty());
    }
    // The key id is free again on every node.
    keygen(&cluster, "half");
}

#[test]
fn a_registered_keys_share_is_never_deleted_by_an_abort() {
    let cluster = cluster();
    let session_id = run_keygen(&cluster, "kept");
    for node in &cluster.nodes {
        assert!(node.commit_keygen(session_id, "kept", true).unwrap());
    }
    // A compromised node 1 signs a receipt for this very ceremony (its key is in the test's
    // hands); a coordinator presents it to node 3, whose share is sealed: nothing is deleted.
    use sha2::Digest as _;
    let binding: [u8; 32] = sha2::Sha256::new()
        .chain_update(b"shardsign-keygen-abort-v1\0")
        .chain_update(b"kept")
        .finalize()
        .into();
    let context = Context {
        cluster_id: "divergence-test",
        protocol: shardsign_tss::Protocol::Dkg.to_byte(),
        session_id: session_id.as_bytes(),
        round: 250,
        from: 1,
        to: 0,
        binding: &binding,
    };
    let receipt = sign_broadcast(&cluster.secret_of_node_1, &context, b"keygen aborted");
    let error = cluster.nodes[2]
        .abort_keygen(session_id, "kept", &[(1, receipt)])
        .unwrap_err();
    assert!(error.to_string().contains("sealed"), "{error}");
    assert_eq!(cluster.nodes[2].store().list_keys(false).unwrap().len(), 1);
}
