//! The in-process three-node cluster the node's integration tests share: real stores in
//! temporary directories, real identities, envelopes passed by hand (no network).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shardsign_node::clock::{Clock, SystemClock};
use shardsign_node::kek::KekSource;
use shardsign_node::sessions::Node;
use shardsign_node::store::Store;
use shardsign_policy::PolicyVerifier;
use shardsign_proto::node::v1::Envelope;
use shardsign_seal::NodeSecret;
use shardsign_tss::{PARTIES, SessionId};
use zeroize::Zeroizing;

pub const CHAINS: [u64; 1] = [1];

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub secret_of_node_1: NodeSecret,
    pub dirs: Vec<tempfile::TempDir>,
}

pub fn cluster() -> Cluster {
    cluster_with(Duration::from_secs(30), Arc::new(SystemClock), None)
}

pub fn cluster_with_clock(round_timeout: Duration, clock: Arc<dyn Clock>) -> Cluster {
    cluster_with(round_timeout, clock, None)
}

pub fn cluster_with(
    round_timeout: Duration,
    clock: Arc<dyn Clock>,
    policies: Option<PolicyVerifier>,
) -> Cluster {
    let mut stores = Vec::new();
    let mut dirs = Vec::new();
    let mut members = BTreeMap::new();
    let mut secret_of_node_1 = None;
    for party in PARTIES {
        let dir = tempfile::tempdir().unwrap();
        let kek = KekSource::KeyFile(Zeroizing::new([party.get(); 32]));
        let (store, secret) = Store::init(dir.path(), party, "divergence-test", &kek).unwrap();
        members.insert(party, secret.public());
        if party.get() == 1 {
            secret_of_node_1 = Some(NodeSecret::from_bytes(secret.to_bytes().as_slice()).unwrap());
        }
        stores.push((store, secret));
        dirs.push(dir);
    }
    let nodes = stores
        .into_iter()
        .map(|(store, secret)| {
            Node::new(
                store,
                secret,
                members.clone(),
                round_timeout,
                16,
                policies.clone(),
            )
            .unwrap()
            .with_clock(clock.clone())
        })
        .collect();
    Cluster {
        nodes,
        secret_of_node_1: secret_of_node_1.unwrap(),
        dirs,
    }
}

/// A session id made now (ids carry their time; a node refuses old ones).
pub fn fresh_session() -> SessionId {
    SessionId(shardsign_request::new_session_id(
        shardsign_request::unix_now_ms(),
    ))
}

pub fn recipients(envelope: &Envelope) -> Vec<u8> {
    if envelope.to == 0 {
        (1..=3).filter(|p| u32::from(*p) != envelope.from).collect()
    } else {
        vec![envelope.to as u8]
    }
}

pub fn keygen(cluster: &Cluster, key_id: &str) {
    let session_id = run_keygen(cluster, key_id);
    for node in &cluster.nodes {
        assert!(node.commit_keygen(session_id, key_id, true).unwrap());
    }
}

/// Runs a whole key generation honestly; every node is left with a pending share.
pub fn run_keygen(cluster: &Cluster, key_id: &str) -> SessionId {
    let session_id = fresh_session();
    let mut outgoing: Vec<Envelope> = Vec::new();
    for node in &cluster.nodes {
        outgoing.extend(node.start_keygen(session_id, key_id, &CHAINS).unwrap());
    }
    let mut finished = 0;
    while finished < 3 {
        let mut inbox: BTreeMap<u8, Vec<Envelope>> = BTreeMap::new();
        for envelope in outgoing.drain(..) {
            for to in recipients(&envelope) {
                inbox.entry(to).or_default().push(envelope.clone());
            }
        }
        assert!(!inbox.is_empty(), "key generation stalled");
        for (to, envelopes) in inbox {
            let outcome = cluster.nodes[usize::from(to - 1)]
                .deliver(session_id, envelopes)
                .unwrap();
            finished += usize::from(outcome.result.is_some());
            outgoing.extend(outcome.envelopes);
        }
    }
    session_id
}
