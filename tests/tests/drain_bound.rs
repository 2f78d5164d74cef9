//! What a compromised coordinator can drain from honest nodes: each node counts what it
//! co-signs per key and chain against the key policy's `max_value_per_24h`, and a charge is
//! final once the node's signature fragment has left. The relay here plays the worst strategy:
//! it spreads requests over every pair and delivers the last round to one node only, so that the
//! other never completes, then cancels that node's session at once rather than wait for it to
//! time out (a node that gave its charge back then would let the relay drain twice as much).

use std::collections::BTreeMap;

use shardsign_eth::{Address, Eip1559Transaction, U256, UnsignedTransaction};
use shardsign_policy::{KeyStatementHeader, OperatorPolicyKey};
use shardsign_proto::node::v1::node_client::NodeClient;
use shardsign_proto::node::v1::{CancelRequest, Envelope};
use shardsign_proto::v1 as api;
use shardsign_tests::cluster::{KekKind, NodeCluster};
use shardsign_tests::full::unix_now;
use shardsign_tests::relay::{self, Action, Payload};
use tonic::transport::Channel;

const ETH: u64 = 1_000_000_000_000_000_000;

fn one_eth(nonce: u64) -> UnsignedTransaction {
    Eip1559Transaction {
        chain_id: 1,
        nonce,
        max_priority_fee_per_gas: U256::from(1_000_000_000u64),
        max_fee_per_gas: U256::from(30_000_000_000u64),
        gas_limit: 21_000,
        to: Some(Address::parse("to", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").unwrap()),
        value: U256::from(ETH),
        data: Vec::new(),
        access_list: Vec::new(),
    }
    .into()
}

/// 1 ETH per transaction, 5 ETH per 24 h on chain 1, signed by the operator.
fn capped_policy(operator: &OperatorPolicyKey, key_id: &str) -> Vec<u8> {
    use prost::Message as _;
    let now = unix_now();
    let header = KeyStatementHeader {
        cluster_id: "test-cluster",
        key_id,
        version: 1,
        issued_at_unix: now,
    };
    let rules = api::Policy {
        allowed_chain_ids: vec![1],
        max_value_per_tx: "1eth".into(),
        max_value_per_24h: "5eth".into(),
        allowed_recipients: vec!["*".into()],
        max_fee_per_gas: "unlimited".into(),
        max_total_fee: "unlimited".into(),
        ..Default::default()
    };
    operator
        .sign_key_policy(header, &rules, now + 86_400)
        .unwrap()
        .encode_to_vec()
}

async fn sign_once(
    clients: &BTreeMap<u8, NodeClient<Channel>>,
    pair: [u8; 2],
    key_id: &str,
    policy: &[u8],
    nonce: u64,
    starved: Option<u8>,
) -> Result<bool, relay::RelayError> {
    let tx = one_eth(nonce);
    let session_id = relay::fresh_session_id();
    let mut starve = |to: u8, envelope: &mut Envelope| {
        if Some(to) == starved && envelope.round >= 3 {
            Action::Drop
        } else {
            Action::Deliver
        }
    };
    let results = relay::sign_with_policy(
        clients,
        pair,
        key_id,
        &Payload::Transaction(tx.clone()),
        tx.signing_hash(),
        policy,
        Some(session_id.clone()),
        Some(&mut starve),
    )
    .await?;
    if let Some(starved) = starved {
        clients[&starved]
            .clone()
            .cancel(CancelRequest { session_id })
            .await
            .expect("cancel the starved session");
    }
    Ok(!results.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_relay_gets_at_most_one_and_a_half_caps_a_day_from_honest_nodes() {
    let operator = OperatorPolicyKey::generate();
    let mut cluster = NodeCluster::start_with(KekKind::KeyFile, Some(&operator.public_hex()));
    let key_id = "capped";
    let mut clients = BTreeMap::new();
    for id in 1..=3 {
        clients.insert(id, cluster.client(id).await);
    }
    relay::keygen(&clients, key_id, &[1], None)
        .await
        .expect("key generation");
    let policy = capped_policy(&operator, key_id);

    // 50 compliant 1 ETH transfers, spread over the pairs, the last round withheld from the
    // first node of each pair. Every signature charges both co-signers: 3 nodes x 5 ETH / 2.
    let pairs = [[1, 2], [2, 3], [3, 1]];
    let mut signed = 0;
    for nonce in 0..50u64 {
        let pair = pairs[nonce as usize % 3];
        match sign_once(&clients, pair, key_id, &policy, nonce, Some(pair[0])).await {
            Ok(true) => signed += 1,
            Ok(false) => panic!("attempt {nonce}: the relay got no signature and no refusal"),
            Err(error) => assert!(
                error.status.message().contains(
                    "policy max_value_per_24h: 5 ETH co-signed by this node on chain 1 in the last 24 h + 1 ETH > 5 ETH"
                ),
                "attempt {nonce}: {error:?}"
            ),
        }
    }
    assert!(signed <= 7, "{signed} signatures: over 1.5 x the 5 ETH cap");
    // Not fewer either: refusals given back before the last round do not count against a node.
    assert_eq!(signed, 7, "every compliant request within the bound signs");

    // The ledger is on disk: node 1 still refuses after a restart, though node 3 has room.
    cluster.node(1).stop();
    cluster.node(1).start();
    let error = sign_once(&clients, [1, 3], key_id, &policy, 50, None)
        .await
        .expect_err("node 1 co-signed 5 ETH today");
    assert_eq!(error.node, 1, "{error:?}");
    assert!(
        error.status.message().contains("max_value_per_24h"),
        "{error:?}"
    );
}
