//! Three real signer-node processes on loopback with the test as a minimal relay: key
//! generation, signing with every pair, and every attack a hostile relay can try.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use shardsign_eth::{Address, Signature, TxType, UnsignedTransaction, personal_sign_hash};
use shardsign_proto::node::v1::node_client::NodeClient;
use shardsign_proto::node::v1::{KeygenResult, ListKeysRequest, SignatureResult};
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
    let payload = Payload::Transaction(tx.signing_payload());
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
            .list_keys(ListKeysRequest {})
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
    drop(Action::Deliver);
}
