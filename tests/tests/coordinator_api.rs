//! The public API end to end: three node processes and a coordinator process on loopback, called
//! as an agent and an operator would. Results are cross-checked with eth-account.

use std::sync::OnceLock;

use serde_json::json;
use shardsign_eth::{Address, Limits, SignedTransaction, UnsignedTransaction, personal_sign_hash};
use shardsign_proto::v1::create_key_event::Event;
use shardsign_proto::v1::sign_transaction_request::Transaction;
use shardsign_proto::v1::{
    AccessListItem, ClusterStatusRequest, CreateKeyRequest, Eip1559Transaction, Eip2930Transaction,
    GetKeyRequest, Key, LegacyTransaction, ListKeysRequest, SignMessageRequest,
    SignTransactionRequest,
};
use shardsign_tests::eth_account;
use shardsign_tests::full::{Admin, Cluster};
use shardsign_tests::tx_json::{hex0x, unhex};
use tonic::Code;

struct Shared {
    cluster: Cluster,
    key: Key,
    events: Vec<Event>,
}

/// Runs `CreateKey` and collects its events.
pub async fn create_key(
    admin: &mut Admin,
    label: &str,
    chains: &[u64],
) -> (Vec<Event>, Result<Key, String>) {
    let request = CreateKeyRequest {
        label: label.into(),
        allowed_chain_ids: chains.to_vec(),
        key_id: String::new(),
    };
    let mut stream = admin
        .create_key(request)
        .await
        .expect("create_key accepted")
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.expect("event stream") {
        events.push(event.event.expect("event"));
    }
    let outcome = match events.last() {
        Some(Event::Done(key)) => Ok(key.clone()),
        Some(Event::Failed(failed)) => Err(failed.reason.clone()),
        other => Err(format!("stream ended with {other:?}")),
    };
    (events, outcome)
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let cluster = Cluster::start();
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            let (events, key) = runtime
                .block_on(async { create_key(&mut cluster.admin(), "shared", &[1, 10]).await });
            let key = key.expect("ceremony");
            runtime.block_on(cluster.allow_everything(&key));
            sender
                .send(Shared {
                    cluster,
                    key,
                    events,
                })
                .expect("send");
            loop {
                std::thread::park();
            }
        });
        receiver.recv().expect("shared cluster")
    })
}

fn request_id() -> String {
    format!("req-{}", hex::encode(rand::random::<[u8; 12]>()))
}

fn eip1559(nonce: u64) -> Transaction {
    Transaction::Eip1559(Eip1559Transaction {
        chain_id: 1,
        nonce,
        max_priority_fee_per_gas: "1000000000".into(),
        max_fee_per_gas: "0x6fc23ac00".into(),
        gas_limit: 21_000,
        to: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into(),
        value: "10000000000000000".into(),
        data: vec![],
        access_list: vec![],
    })
}

fn sign_request(key: &Key, transaction: Transaction) -> SignTransactionRequest {
    SignTransactionRequest {
        key_id: key.key_id.clone(),
        request_id: request_id(),
        transaction: Some(transaction),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ceremony_streams_its_progress_and_registers_the_key() {
    let shared = shared();
    let events = &shared.events;
    assert!(
        matches!(events.first(), Some(Event::Started(_))),
        "{events:?}"
    );
    let joined: Vec<u32> = events
        .iter()
        .filter_map(|e| {
            if let Event::NodeJoined(j) = e {
                Some(j.node_id)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(joined.len(), 3, "{events:?}");
    let rounds: Vec<u32> = events
        .iter()
        .filter_map(|e| {
            if let Event::Round(r) = e {
                Some(r.round)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(rounds, vec![1, 2, 3, 4], "{events:?}");
    let key = &shared.key;
    let verifying_key = k256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_key).unwrap();
    assert_eq!(
        Address::from_public_key(&verifying_key).to_checksum(),
        key.address
    );
    let mut signer = shared.cluster.signer();
    let listed = signer
        .list_keys(ListKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert!(
        listed
            .iter()
            .any(|k| k.key_id == key.key_id && k.label == "shared")
    );
    let fetched = signer
        .get_key(GetKeyRequest {
            key_id: key.key_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&fetched, key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transaction_type_and_a_message_sign_and_eth_account_agrees() {
    let shared = shared();
    let key = &shared.key;
    let mut signer = shared.cluster.signer();
    let unsigned_rlp: UnsignedTransaction = shardsign_eth::LegacyTransaction {
        chain_id: 10,
        nonce: 3,
        gas_price: shardsign_eth::U256::from(7u64),
        gas_limit: 50_000,
        to: None,
        value: shardsign_eth::U256::ZERO,
        data: vec![0x60, 0x00],
    }
    .into();
    let transactions = vec![
        Transaction::Legacy(LegacyTransaction {
            chain_id: 1,
            nonce: 0,
            gas_price: "20000000000".into(),
            gas_limit: 21_000,
            to: "0x3535353535353535353535353535353535353535".into(),
            value: "1000000000000000000".into(),
            data: vec![],
        }),
        Transaction::Eip2930(Eip2930Transaction {
            chain_id: 10,
            nonce: 1,
            gas_price: "0x3b9aca00".into(),
            gas_limit: 60_000,
            to: "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB".into(),
            value: "0".into(),
            data: vec![0xa9, 0x05, 0x9c, 0xbb],
            access_list: vec![AccessListItem {
                address: "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359".into(),
                storage_keys: vec![vec![7; 32]],
            }],
        }),
        eip1559(2),
        Transaction::UnsignedRlp(unsigned_rlp.signing_payload()),
    ];
    let mut raws = Vec::new();
    for transaction in transactions {
        let response = signer
            .sign_transaction(sign_request(key, transaction))
            .await
            .expect("signed")
            .into_inner();
        assert_eq!(response.sender, key.address);
        let decoded =
            SignedTransaction::decode(&response.raw_transaction, &Limits::DEFAULT).unwrap();
        assert_eq!(decoded.recover_sender().unwrap().to_checksum(), key.address);
        assert_eq!(decoded.hash().to_vec(), response.tx_hash);
        assert_eq!(u128::from(response.v), decoded.v());
        raws.push(response);
    }
    let message = b"I am an agent and I approve this message".to_vec();
    let signed_message = signer
        .sign_message(SignMessageRequest {
            key_id: key.key_id.clone(),
            request_id: request_id(),
            message: message.clone(),
        })
        .await
        .expect("message signed")
        .into_inner();
    assert_eq!(
        signed_message.message_hash,
        personal_sign_hash(&message).to_vec()
    );

    let reply = eth_account::call(&json!({
        "recover_txs": raws.iter().map(|r| hex0x(&r.raw_transaction)).collect::<Vec<_>>(),
        "recover_msgs": [{"message": hex0x(&message), "signature": hex0x(&signed_message.signature)}],
    }));
    for (response, recovered) in raws.iter().zip(reply["recovered_txs"].as_array().unwrap()) {
        assert_eq!(
            recovered["sender"].as_str().unwrap(),
            key.address,
            "eth-account recovers the key's address"
        );
        assert_eq!(unhex(recovered["hash"].as_str().unwrap()), response.tx_hash);
    }
    assert_eq!(reply["recovered"][0].as_str().unwrap(), key.address);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_signatures_across_the_pairs_all_verify() {
    let shared = shared();
    let key = shared.key.clone();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8u64 {
        let mut signer = shared.cluster.signer();
        let key = key.clone();
        tasks.spawn(async move {
            for i in 0..25u64 {
                let response = signer
                    .sign_transaction(sign_request(&key, eip1559(1000 + worker * 100 + i)))
                    .await
                    .unwrap_or_else(|status| panic!("worker {worker} signature {i}: {status:?}"))
                    .into_inner();
                let decoded =
                    SignedTransaction::decode(&response.raw_transaction, &Limits::DEFAULT).unwrap();
                assert_eq!(decoded.recover_sender().unwrap().to_checksum(), key.address);
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("worker");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_returns_the_same_reply_and_refuses_another_payload() {
    let shared = shared();
    let mut signer = shared.cluster.signer();
    let request = sign_request(&shared.key, eip1559(77));
    let first = signer
        .sign_transaction(request.clone())
        .await
        .unwrap()
        .into_inner();
    let again = signer
        .sign_transaction(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first, again,
        "the same request id returns the same signed transaction"
    );
    let other = SignTransactionRequest {
        transaction: Some(eip1559(78)),
        ..request
    };
    let status = signer.sign_transaction(other).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status.message().contains("request_id"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_documented_status_and_the_cluster_keeps_serving() {
    let shared = shared();
    let key = &shared.key;
    let mut signer = shared.cluster.signer();
    let with = |edit: &dyn Fn(&mut Eip1559Transaction)| {
        let Transaction::Eip1559(mut tx) = eip1559(5) else {
            unreachable!()
        };
        edit(&mut tx);
        sign_request(key, Transaction::Eip1559(tx))
    };
    let cases: Vec<(SignTransactionRequest, Code, &str)> = vec![
        (
            with(&|t| t.to = "0x1234".into()),
            Code::InvalidArgument,
            "to",
        ),
        (
            with(&|t| t.to = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD".into()),
            Code::InvalidArgument,
            "checksum",
        ),
        (
            with(&|t| {
                t.value =
                    "115792089237316195423570985008687907853269984665640564039457584007913129639936"
                        .into()
            }),
            Code::InvalidArgument,
            "value",
        ),
        (
            with(&|t| t.value = "ten".into()),
            Code::InvalidArgument,
            "value",
        ),
        (with(&|t| t.chain_id = 0), Code::InvalidArgument, "chain_id"),
        (
            with(&|t| t.chain_id = 137),
            Code::PermissionDenied,
            "chain id 137",
        ),
        (
            with(&|t| t.gas_limit = 0),
            Code::InvalidArgument,
            "gas_limit",
        ),
        (
            with(&|t| t.max_priority_fee_per_gas = "99999999999999".into()),
            Code::InvalidArgument,
            "max_priority_fee_per_gas",
        ),
        (
            with(&|t| t.data = vec![0; 200 * 1024]),
            Code::InvalidArgument,
            "data",
        ),
        (
            SignTransactionRequest {
                key_id: "no-such-key".into(),
                ..with(&|_| {})
            },
            Code::NotFound,
            "no-such-key",
        ),
        (
            SignTransactionRequest {
                request_id: String::new(),
                ..with(&|_| {})
            },
            Code::InvalidArgument,
            "request_id",
        ),
        (
            SignTransactionRequest {
                transaction: None,
                ..with(&|_| {})
            },
            Code::InvalidArgument,
            "transaction",
        ),
        (
            sign_request(key, Transaction::UnsignedRlp(vec![0xc0, 0x00])),
            Code::InvalidArgument,
            "transaction",
        ),
    ];
    for (request, code, needle) in cases {
        let status = signer.sign_transaction(request).await.expect_err(needle);
        assert_eq!(status.code(), code, "{needle}: {status:?}");
        assert!(
            status.message().contains(needle),
            "{needle}: {}",
            status.message()
        );
    }
    let oversized = with(&|t| t.data = vec![0; 2 * 1024 * 1024]);
    let status = signer.sign_transaction(oversized).await.unwrap_err();
    assert!(
        matches!(
            status.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::InvalidArgument
        ),
        "{status:?}"
    );

    // A deadline too short to sign in.
    let mut short = tonic::Request::new(sign_request(key, eip1559(9)));
    short.set_timeout(std::time::Duration::from_millis(2));
    let status = signer.sign_transaction(short).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );

    // Credentials.
    let status = shared
        .cluster
        .signer_with(None)
        .list_keys(ListKeysRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("authorization"),
        "{}",
        status.message()
    );
    let status = shared
        .cluster
        .signer_with(Some("wrong-token-1234567890"))
        .list_keys(ListKeysRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = shared
        .cluster
        .admin_with(Some(&shared.cluster.signer_token))
        .cluster_status(ClusterStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let log = shared.cluster.coordinator.log_text();
    assert!(
        !log.contains("wrong-token-1234567890"),
        "a presented token never reaches the log"
    );
    assert!(
        !log.contains(&shared.cluster.signer_token) && !log.contains(&shared.cluster.admin_token)
    );

    // Still serving.
    signer
        .sign_transaction(sign_request(key, eip1559(6)))
        .await
        .expect("still serving");
    let status = shared
        .cluster
        .admin()
        .cluster_status(ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.can_sign && status.can_create_keys, "{status:?}");
}
