//! The in-process three-node cluster the node's integration tests share: real stores in
//! temporary directories, real identities, envelopes passed by hand (no network).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k256::ecdsa::signature::hazmat::PrehashVerifier;
use k256::ecdsa::{Signature, VerifyingKey};
use shardsign_node::clock::{Clock, SystemClock};
use shardsign_node::kek::KekSource;
use shardsign_node::sessions::{Node, StartSign};
use shardsign_node::store::Store;
use shardsign_policy::PolicyVerifier;
use shardsign_proto::node::v1::{Envelope, RefreshResult, round_reply};
use shardsign_request::{KeyId, Payload, SignRequest};
use shardsign_seal::NodeSecret;
use shardsign_tss::{PARTIES, PartyId, SessionId};
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

pub fn party(id: u8) -> PartyId {
    PartyId::new(id).unwrap()
}

/// Delivers envelopes among `nodes` until none are left; `keep` may drop one on its way to a
/// recipient. Each node's result.
pub fn relay(
    cluster: &Cluster,
    session_id: SessionId,
    mut outgoing: Vec<Envelope>,
    participants: &[u8],
    keep: &mut dyn FnMut(u8, &Envelope) -> bool,
) -> Result<BTreeMap<u8, round_reply::Result>, String> {
    let mut results = BTreeMap::new();
    loop {
        let mut inbox: BTreeMap<u8, Vec<Envelope>> = BTreeMap::new();
        for envelope in outgoing.drain(..) {
            let recipients: Vec<u8> = if envelope.to == 0 {
                participants
                    .iter()
                    .copied()
                    .filter(|p| u32::from(*p) != envelope.from)
                    .collect()
            } else {
                vec![envelope.to as u8]
            };
            for to in recipients {
                if keep(to, &envelope) {
                    inbox.entry(to).or_default().push(envelope.clone());
                }
            }
        }
        if inbox.is_empty() {
            return Ok(results);
        }
        for (to, envelopes) in inbox {
            let outcome = cluster.nodes[usize::from(to - 1)]
                .deliver(session_id, envelopes)
                .map_err(|e| format!("node {to}: {e}"))?;
            if let Some(result) = outcome.result {
                results.insert(to, result);
            }
            outgoing.extend(outcome.envelopes);
        }
    }
}

/// Runs a refresh's rounds of `key_id` at `epoch` on all three nodes; each node's result.
pub fn refresh_rounds(
    cluster: &Cluster,
    key_id: &str,
    epoch: u64,
    keep: &mut dyn FnMut(u8, &Envelope) -> bool,
) -> (SessionId, Result<BTreeMap<u8, RefreshResult>, String>) {
    let session_id = fresh_session();
    let mut outgoing = Vec::new();
    for node in &cluster.nodes {
        match node.start_refresh(
            session_id,
            key_id,
            epoch,
            shardsign_tss::RefreshKind::Complete,
        ) {
            Ok(envelopes) => outgoing.extend(envelopes),
            Err(error) => return (session_id, Err(error.to_string())),
        }
    }
    let results = relay(cluster, session_id, outgoing, &[1, 2, 3], keep).map(|results| {
        results
            .into_iter()
            .filter_map(|(node, r)| match r {
                round_reply::Result::Refresh(r) => Some((node, r)),
                _ => None,
            })
            .collect()
    });
    (session_id, results)
}

pub fn certificate(results: &BTreeMap<u8, RefreshResult>) -> Vec<(u8, Vec<u8>)> {
    results
        .values()
        .map(|r| {
            let vote = r.vote.clone().unwrap();
            (vote.node_id as u8, vote.signed)
        })
        .collect()
}

/// Signs a message with `pair` at `epoch`; the signature, verified against `public_key`.
pub fn sign(
    cluster: &Cluster,
    key_id: &str,
    pair: [u8; 2],
    epoch: u64,
    public_key: &[u8],
) -> Result<(), String> {
    let session_id = fresh_session();
    let request = SignRequest {
        key_id: KeyId::parse(key_id).unwrap(),
        payload: Payload::PersonalMessage(format!("epoch {epoch}").into_bytes()),
    };
    let hash = request.signing_hash();
    let mut outgoing = Vec::new();
    for node in pair {
        let start = StartSign {
            session_id,
            signers: [party(pair[0]), party(pair[1])],
            request: request.clone(),
            expected_hash: hash,
            signed_policy: Vec::new(),
            epoch,
            request_id: String::new(),
            approval: Vec::new(),
        };
        outgoing.extend(
            cluster.nodes[usize::from(node - 1)]
                .start_sign(start)
                .map_err(|e| format!("node {node}: {e}"))?,
        );
    }
    let results = relay(cluster, session_id, outgoing, &pair, &mut |_, _| true)?;
    let Some(round_reply::Result::Signature(result)) = results.values().next() else {
        return Err("no signature".into());
    };
    let signature = Signature::from_scalars(
        <[u8; 32]>::try_from(result.r.as_slice()).unwrap(),
        <[u8; 32]>::try_from(result.s.as_slice()).unwrap(),
    )
    .map_err(|e| e.to_string())?;
    VerifyingKey::from_sec1_bytes(public_key)
        .unwrap()
        .verify_prehash(&hash, &signature)
        .map_err(|e| format!("the signature does not verify: {e}"))
}

pub fn public_key(node: &Node, key_id: &str) -> Vec<u8> {
    node.store()
        .list_keys(false)
        .unwrap()
        .into_iter()
        .find(|k| k.key_id == key_id)
        .unwrap()
        .public_key
}
