//! Three real signer-node processes on loopback with the test as a minimal relay: key
//! generation, signing with every pair, and every attack a hostile relay can try.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use shardsign_devcert::Usage;
use shardsign_eth::{Address, Signature, TxType, UnsignedTransaction, personal_sign_hash};
use shardsign_proto::node::v1::node_client::NodeClient;
use shardsign_proto::node::v1::{
    DeliverRequest, Envelope, KeygenResult, ListKeysRequest, SignatureResult, StartSignRequest,
    start_sign_request,
};
use shardsign_tests::cluster::{KekKind, NodeCluster};
use shardsign_tests::random_tx::random_tx;
use shardsign_tests::relay::{self, Action, Payload};
use tonic::Code;
use tonic::transport::Channel;

pub const CHAINS: [u64; 2] = [1, 11_155_111];

/// One cluster and one key for every test that only needs a key (a key generation costs seconds).
struct Shared {
    cluster: NodeCluster,
    key: KeygenResult,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        // The processes are tied to this thread (PR_SET_PDEATHSIG), which lives as long as the
        // test binary: they die with it.
        std::thread::spawn(move || {
            let cluster = NodeCluster::start(KekKind::KeyFile);
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            let key = runtime.block_on(async {
                let clients = clients(&cluster).await;
                relay::keygen(&clients, "shared-key", &CHAINS, None)
                    .await
                    .expect("key generation")
            });
            assert_eq!(key.len(), 3);
            assert!(
                key.iter().all(|k| k.public_key == key[0].public_key),
                "all nodes agree on the key"
            );
            sender
                .send(Shared {
                    cluster,
                    key: key[0].clone(),
                })
                .expect("send");
            loop {
                std::thread::park();
            }
        });
        receiver.recv().expect("shared cluster")
    })
}

async fn clients(cluster: &NodeCluster) -> BTreeMap<u8, NodeClient<Channel>> {
    let mut clients = BTreeMap::new();
    for id in 1..=3 {
        clients.insert(id, cluster.client(id).await);
    }
    clients
}

fn address_of(key: &KeygenResult) -> Address {
    let key = k256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_key).expect("SEC1 public key");
    Address::from_public_key(&key)
}

fn to_signature(result: &SignatureResult) -> Signature {
    Signature::new(
        result.r.as_slice().try_into().unwrap(),
        result.s.as_slice().try_into().unwrap(),
        result.recovery_id as u8,
    )
    .expect("valid signature")
}

fn transaction(kind: TxType) -> UnsignedTransaction {
    let mut tx = random_tx(&mut rand::rng(), kind);
    // Only the chain ids the key allows.
    match &mut tx {
        UnsignedTransaction::Legacy(t) => t.chain_id = 1,
        UnsignedTransaction::Eip2930(t) => t.chain_id = 11_155_111,
        UnsignedTransaction::Eip1559(t) => t.chain_id = 1,
        // Not signed here: its tuples' random delegates are for the policy tests to refuse.
        UnsignedTransaction::Eip7702(t) => t.chain_id = 1,
    }
    tx
}

async fn sign_tx(
    clients: &BTreeMap<u8, NodeClient<Channel>>,
    signers: [u8; 2],
    key_id: &str,
    tx: &UnsignedTransaction,
    hook: Option<relay::Hook<'_>>,
) -> Result<Vec<SignatureResult>, relay::RelayError> {
    let payload = Payload::Transaction(tx.clone());
    relay::sign(
        clients,
        signers,
        key_id,
        &payload,
        tx.signing_hash(),
        None,
        hook,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pair_signs_every_transaction_type_over_real_processes() {
    let shared = shared();
    let clients = clients(&shared.cluster).await;
    let address = address_of(&shared.key);
    for signers in [[1, 2], [1, 3], [2, 3]] {
        for kind in [TxType::Legacy, TxType::Eip2930, TxType::Eip1559] {
            let tx = transaction(kind);
            let results = sign_tx(&clients, signers, &shared.key.key_id, &tx, None)
                .await
                .expect("signing");
            assert_eq!(results.len(), 2);
            assert_eq!(
                results[0], results[1],
                "both nodes assemble the same signature"
            );
            assert_eq!(results[0].signed_hash, tx.signing_hash().to_vec());
            let signed = tx.into_signed(to_signature(&results[0]));
            assert_eq!(
                signed.recover_sender().unwrap(),
                address,
                "pair {signers:?}, {kind:?}"
            );
        }
        let message = b"shardsign says hello".to_vec();
        let hash = personal_sign_hash(&message);
        let results = relay::sign(
            &clients,
            signers,
            &shared.key.key_id,
            &Payload::PersonalMessage(message),
            hash,
            None,
            None,
        )
        .await
        .expect("message signing");
        assert_eq!(
            to_signature(&results[0]).recover_address(&hash).unwrap(),
            address
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_list_the_key_they_hold() {
    let shared = shared();
    for (id, mut client) in clients(&shared.cluster).await {
        let keys = client
            .list_keys(ListKeysRequest::default())
            .await
            .unwrap()
            .into_inner()
            .keys;
        let key = keys
            .iter()
            .find(|k| k.key_id == shared.key.key_id)
            .unwrap_or_else(|| panic!("node {id}"));
        assert_eq!(key.public_key, shared.key.public_key);
        assert_eq!(key.allowed_chain_ids, CHAINS.to_vec());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_the_key_does_not_allow_is_refused_by_the_node() {
    let shared = shared();
    let clients = clients(&shared.cluster).await;
    let mut tx = transaction(TxType::Eip1559);
    if let UnsignedTransaction::Eip1559(t) = &mut tx {
        t.chain_id = 137;
    }
    let error = sign_tx(&clients, [1, 2], &shared.key.key_id, &tx, None)
        .await
        .unwrap_err();
    assert_eq!(error.status.code(), Code::PermissionDenied);
    assert!(
        error.status.message().contains("chain id 137"),
        "{}",
        error.status.message()
    );
}

/// After a failed session, no node still knows it.
async fn assert_session_gone(clients: &BTreeMap<u8, NodeClient<Channel>>, session_id: &[u8]) {
    for (id, client) in clients {
        let status = client
            .clone()
            .deliver(DeliverRequest {
                session_id: session_id.to_vec(),
                envelopes: vec![],
            })
            .await
            .expect_err("the session must be gone");
        assert_eq!(status.code(), Code::NotFound, "node {id}: {status:?}");
    }
}

async fn assert_no_key(clients: &BTreeMap<u8, NodeClient<Channel>>, key_id: &str) {
    for (id, client) in clients {
        let request = ListKeysRequest {
            include_pending: true,
        };
        let keys = client
            .clone()
            .list_keys(request)
            .await
            .unwrap()
            .into_inner()
            .keys;
        assert!(
            keys.iter().all(|k| k.key_id != key_id),
            "node {id} kept a share of {key_id}"
        );
    }
}

fn assert_security_abort(error: &relay::RelayError) {
    assert_eq!(
        error.status.code(),
        Code::PermissionDenied,
        "{:?}",
        error.status
    );
    assert!(
        error.status.message().contains("security event"),
        "{}",
        error.status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_ciphertext_aborts_signing_in_every_round() {
    let shared = shared();
    let clients = clients(&shared.cluster).await;
    for round in 1..=3u32 {
        let tx = transaction(TxType::Eip1559);
        let session_id = relay::fresh_session_id();
        let mut hook = |_: u8, envelope: &mut Envelope| {
            if envelope.round == round {
                let middle = envelope.body.len() / 2;
                envelope.body[middle] ^= 0x01;
            }
            Action::Deliver
        };
        let payload = Payload::Transaction(tx.clone());
        let error = relay::sign(
            &clients,
            [1, 3],
            &shared.key.key_id,
            &payload,
            tx.signing_hash(),
            Some(session_id.clone()),
            Some(&mut hook),
        )
        .await
        .expect_err("a tampered envelope must abort the session");
        assert_security_abort(&error);
        assert_session_gone(&clients, &session_id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_replayed_from_another_session_is_rejected() {
    let shared = shared();
    let clients = clients(&shared.cluster).await;
    // Record the round-1 envelope for node 2 of a complete session...
    let mut recorded = None;
    let mut record = |to: u8, envelope: &mut Envelope| {
        if to == 2 && envelope.round == 1 {
            recorded = Some(envelope.clone());
        }
        Action::Deliver
    };
    let tx = transaction(TxType::Legacy);
    sign_tx(&clients, [1, 2], &shared.key.key_id, &tx, Some(&mut record))
        .await
        .expect("first session");
    let old = recorded.expect("recorded an envelope");
    // ...and replay it in a new session over the same transaction.
    let mut replay = |to: u8, envelope: &mut Envelope| {
        if to == 2 && envelope.round == 1 {
            *envelope = old.clone();
        }
        Action::Deliver
    };
    let error = sign_tx(&clients, [1, 2], &shared.key.key_id, &tx, Some(&mut replay))
        .await
        .unwrap_err();
    assert_security_abort(&error);
    assert_eq!(error.node, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_redirected_to_another_node_aborts_key_generation_and_stores_nothing() {
    let shared = shared();
    let clients = clients(&shared.cluster).await;
    // (a) Node 3 is handed node 1's envelope for node 2, addressing intact.
    // (b) The same, with the address rewritten to node 3.
    for rewrite in [false, true] {
        let key_id = format!("redirected-{rewrite}");
        let mut for_two = None;
        let mut hook = |to: u8, envelope: &mut Envelope| {
            if envelope.round == 1 && envelope.from == 1 {
                if to == 2 {
                    for_two = Some(envelope.clone());
                } else if to == 3
                    && let Some(other) = &for_two
                {
                    *envelope = other.clone();
                    if rewrite {
                        envelope.to = 3;
                    }
                }
            }
            Action::Deliver
        };
        let error = relay::keygen(&clients, &key_id, &CHAINS, Some(&mut hook))
            .await
            .unwrap_err();
        assert_security_abort(&error);
        assert_eq!(error.node, 3);
        let message = error.status.message();
        if rewrite {
            assert!(message.contains("does not open"), "{message}");
        } else {
            assert!(message.contains("addressed to node 2"), "{message}");
        }
        assert_no_key(&clients, &key_id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_key_generation_envelope_stores_nothing_anywhere() {
    let shared = shared();
    let clients = clients(&shared.cluster).await;
    for round in 1..=4u32 {
        let key_id = format!("tampered-round-{round}");
        let mut done = false;
        let mut hook = |_: u8, envelope: &mut Envelope| {
            if envelope.round == round && !done {
                done = true;
                let last = envelope.body.len() - 1;
                envelope.body[last] ^= 0x80;
            }
            Action::Deliver
        };
        let error = relay::keygen(&clients, &key_id, &CHAINS, Some(&mut hook))
            .await
            .unwrap_err();
        assert_security_abort(&error);
        assert_no_key(&clients, &key_id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_session_id_is_refused() {
    let shared = shared();
    let clients = clients(&shared.cluster).await;
    let tx = transaction(TxType::Eip2930);
    let payload = Payload::Transaction(tx.clone());
    let session_id = relay::fresh_session_id();
    relay::sign(
        &clients,
        [2, 3],
        &shared.key.key_id,
        &payload,
        tx.signing_hash(),
        Some(session_id.clone()),
        None,
    )
    .await
    .expect("first use");
    let error = relay::sign(
        &clients,
        [2, 3],
        &shared.key.key_id,
        &payload,
        tx.signing_hash(),
        Some(session_id),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(error.status.code(), Code::AlreadyExists);
    assert!(
        error.status.message().contains("already been used"),
        "{}",
        error.status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_id_used_twice_at_once_signs_at_most_once() {
    // The durable claim is written while the rounds run; the id must still be refused at once
    // (in memory) to a second session started alongside the first.
    let shared = shared();
    let clients = clients(&shared.cluster).await;
    let tx = transaction(TxType::Eip1559);
    let payload = Payload::Transaction(tx.clone());
    let session_id = relay::fresh_session_id();
    let attempt = || {
        relay::sign(
            &clients,
            [1, 3],
            &shared.key.key_id,
            &payload,
            tx.signing_hash(),
            Some(session_id.clone()),
            None,
        )
    };
    let (first, second) = tokio::join!(attempt(), attempt());
    assert!(
        !(first.is_ok() && second.is_ok()),
        "a session id signed twice"
    );
    let refused = [&first, &second]
        .iter()
        .filter_map(|outcome| outcome.as_ref().err())
        .any(|error| error.status.code() == Code::AlreadyExists);
    assert!(
        refused,
        "no attempt was refused as a reuse: {first:?} / {second:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_envelope_is_rejected_before_it_is_opened() {
    let shared = shared();
    let clients = clients(&shared.cluster).await;
    let mut hook = |_: u8, envelope: &mut Envelope| {
        envelope.body = vec![0xAB; 300 * 1024];
        Action::Deliver
    };
    let error = sign_tx(
        &clients,
        [1, 2],
        &shared.key.key_id,
        &transaction(TxType::Legacy),
        Some(&mut hook),
    )
    .await
    .unwrap_err();
    assert_security_abort(&error);
    assert!(
        error.status.message().contains("over the limit"),
        "{}",
        error.status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_is_not_found() {
    let shared = shared();
    let clients = clients(&shared.cluster).await;
    let error = sign_tx(
        &clients,
        [1, 2],
        "no-such-key",
        &transaction(TxType::Legacy),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(error.status.code(), Code::NotFound);
    assert!(
        error.status.message().contains("no-such-key"),
        "{}",
        error.status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_that_does_not_match_the_transaction_is_refused() {
    let shared = shared();
    let clients = clients(&shared.cluster).await;
    let tx = transaction(TxType::Eip1559);
    // The coordinator claims the hash of another transaction.
    let other = transaction(TxType::Eip1559);
    let payload = Payload::Transaction(tx.clone());
    let error = relay::sign(
        &clients,
        [1, 2],
        &shared.key.key_id,
        &payload,
        other.signing_hash(),
        None,
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(error.status.code(), Code::InvalidArgument);
    assert!(
        error.status.message().contains("expected_hash"),
        "{}",
        error.status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_precise_errors() {
    let shared = shared();
    let mut client = shared.cluster.client(1).await;
    let tx = transaction(TxType::Legacy);
    let base = StartSignRequest {
        session_id: relay::fresh_session_id(),
        key_id: shared.key.key_id.clone(),
        signers: vec![1, 2],
        payload: Some(start_sign_request::Payload::Transaction(
            tx.signing_payload(),
        )),
        expected_hash: tx.signing_hash().to_vec(),
        signed_policy: Vec::new(),
        epoch: 0,
        request_id: String::new(),
        approval: Vec::new(),
    };
    let cases: Vec<(StartSignRequest, &str)> = vec![
        (
            StartSignRequest {
                session_id: vec![1; 5],
                ..base.clone()
            },
            "session_id",
        ),
        (
            StartSignRequest {
                key_id: "bad key!".into(),
                ..base.clone()
            },
            "key_id",
        ),
        (
            StartSignRequest {
                signers: vec![2, 3],
                ..base.clone()
            },
            "signers",
        ),
        (
            StartSignRequest {
                signers: vec![1, 1],
                ..base.clone()
            },
            "signers",
        ),
        (
            StartSignRequest {
                signers: vec![1, 9],
                ..base.clone()
            },
            "signers",
        ),
        (
            StartSignRequest {
                payload: None,
                ..base.clone()
            },
            "payload",
        ),
        (
            StartSignRequest {
                payload: Some(start_sign_request::Payload::Transaction(vec![0xc0])),
                ..base.clone()
            },
            "transaction",
        ),
        (
            StartSignRequest {
                expected_hash: vec![0; 3],
                ..base.clone()
            },
            "expected_hash",
        ),
    ];
    for (request, field) in cases {
        let status = client.start_sign(request).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_pinned_coordinators_client_certificates_are_served() {
    let shared = shared();
    // Both pinned coordinators are served (several coordinators sharing one database).
    for pinned in [
        &shared.cluster.coordinator,
        &shared.cluster.standby_coordinator,
    ] {
        let mut client = shared.cluster.client_with(1, Some(pinned)).await;
        client
            .list_keys(ListKeysRequest::default())
            .await
            .expect("a pinned coordinator is served");
    }
    let other = shared
        .cluster
        .ca
        .issue("not-the-coordinator", &["x"], Usage::Client)
        .unwrap();
    let mut client = shared.cluster.client_with(1, Some(&other)).await;
    let status = client
        .list_keys(ListKeysRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("not a pinned coordinator's"),
        "{}",
        status.message()
    );
    let mut anonymous = shared.cluster.client_with(1, None).await;
    assert!(
        anonymous
            .list_keys(ListKeysRequest::default())
            .await
            .is_err(),
        "a client without a certificate is refused"
    );
}
