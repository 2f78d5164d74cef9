//! How a refresh ends on the three nodes (the rules are the nodes': see the node's
//! `sessions::refresh`). Commit sends the certificate (all three votes) to every node, retried: a
//! commit is idempotent. Abort runs in two passes like a key generation's: every node first (the
//! ones that never voted answer with a receipt), then the ones that voted again, with the
//! receipts. A refresh with a certificate is never aborted; one without is never committed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shardsign_proto::node::v1::{
    AbortReceipt, FinalizeRefreshReply, FinalizeRefreshRequest, ListKeysRequest, RefreshVote,
};
use tonic::{Code, Status};

use super::relay::Clients;
use crate::registry::{KeyRecord, Registry};

/// Commit attempts per node in one call (a node that misses them all is given the certificate
/// again later: the registry keeps it).
const COMMIT_ATTEMPTS: u32 = 4;
/// The pause before the second attempt; doubled before each later one.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(250);

async fn finalize_on(
    clients: &Clients,
    nodes: &BTreeSet<u8>,
    request: &FinalizeRefreshRequest,
    timeout: Duration,
) -> BTreeMap<u8, Result<FinalizeRefreshReply, Status>> {
    let mut calls = tokio::task::JoinSet::new();
    for node in nodes {
        let Some(client) = clients.get(node) else {
            continue;
        };
        let mut client = client.clone();
        let mut call = tonic::Request::new(request.clone());
        call.set_timeout(timeout);
        let node = *node;
        calls.spawn(async move {
            let reply = client.finalize_refresh(call).await.map(|r| r.into_inner());
            (node, reply)
        });
    }
    let mut answers = BTreeMap::new();
    while let Some(joined) = calls.join_next().await {
        if let Ok((node, reply)) = joined {
            answers.insert(node, reply);
        }
    }
    answers
}

/// The commit request for a refresh with its three votes.
pub fn commit_request(
    session_id: &[u8],
    key_id: &str,
    votes: Vec<RefreshVote>,
) -> FinalizeRefreshRequest {
    FinalizeRefreshRequest {
        session_id: session_id.to_vec(),
        key_id: key_id.to_string(),
        commit: true,
        certificate: votes,
        abort_receipts: Vec::new(),
    }
}

/// Sends the commit to `nodes`, retrying those that did not acknowledge; each node's epoch
/// afterwards, or its last failure.
pub async fn commit_on(
    clients: &Clients,
    nodes: &BTreeSet<u8>,
    request: &FinalizeRefreshRequest,
    timeout: Duration,
) -> BTreeMap<u8, Result<u64, Status>> {
    let mut waiting = nodes.clone();
    let mut outcome = BTreeMap::new();
    for attempt in 0..COMMIT_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(FIRST_RETRY_PAUSE * 2u32.pow(attempt - 1)).await;
        }
        for (node, answer) in finalize_on(clients, &waiting, request, timeout).await {
            match answer {
                Ok(reply) => {
                    waiting.remove(&node);
                    outcome.insert(node, Ok(reply.epoch));
                }
                Err(status) => {
                    tracing::warn!(node, attempt, key_id = request.key_id, error = %status.message(), "refresh commit not acknowledged");
                    // A refusal (no such pending refresh, a certificate it rejects) is final.
                    if matches!(
                        status.code(),
                        Code::FailedPrecondition | Code::InvalidArgument
                    ) {
                        waiting.remove(&node);
                    }
                    outcome.insert(node, Err(status));
                }
            }
        }
        if waiting.is_empty() {
            break;
        }
    }
    outcome
}

/// Aborts the refresh `session_id` of `key_id` on every node; one line per node that may still
/// hold a pending share of it (empty: none does).
pub async fn abort_everywhere(
    clients: &Clients,
    session_id: &[u8],
    key_id: &str,
    timeout: Duration,
) -> Vec<String> {
    let request = FinalizeRefreshRequest {
        session_id: session_id.to_vec(),
        key_id: key_id.to_string(),
        ..Default::default()
    };
    let everyone: BTreeSet<u8> = clients.keys().copied().collect();
    let mut receipts: Vec<AbortReceipt> = Vec::new();
    let mut refused = BTreeMap::new();
    for (node, answer) in finalize_on(clients, &everyone, &request, timeout).await {
        match answer {
            Ok(reply) => receipts.extend(reply.abort_receipt),
            Err(status) => {
                refused.insert(node, status);
            }
        }
    }
    let voted: BTreeSet<u8> = refused
        .iter()
        .filter(|(_, status)| status.code() == Code::FailedPrecondition)
        .map(|(node, _)| *node)
        .collect();
    if !voted.is_empty() && !receipts.is_empty() {
        let with_receipts = FinalizeRefreshRequest {
            abort_receipts: receipts,
            ..request
        };
        for (node, answer) in finalize_on(clients, &voted, &with_receipts, timeout).await {
            match answer {
                Ok(_) => {
                    refused.remove(&node);
                }
                Err(status) => {
                    refused.insert(node, status);
                }
            }
        }
    }
    let left: Vec<String> = refused
        .into_iter()
        .map(|(node, status)| format!("node {node}: {}", status.message()))
        .collect();
    if !left.is_empty() {
        tracing::warn!(key_id, left = ?left, "refresh abort incomplete: a pending share may be left (it never becomes current without all three votes)");
    }
    left
}

/// A refresh some node voted for and that is still open there: its session id and the votes
/// of the nodes that hold it.
#[derive(Debug, Default)]
pub struct Pending {
    pub session_id: Vec<u8>,
    pub votes: Vec<RefreshVote>,
}

/// The open refreshes of `key_id` on the nodes, by session id (a node that cannot be asked is
/// in the error list).
pub async fn pending_on_nodes(
    clients: &Clients,
    key_id: &str,
    timeout: Duration,
) -> (Vec<Pending>, Vec<u8>) {
    let mut calls = tokio::task::JoinSet::new();
    for (node, client) in clients {
        let mut client = client.clone();
        let mut call = tonic::Request::new(ListKeysRequest {
            include_pending: false,
        });
        call.set_timeout(timeout);
        let node = *node;
        calls.spawn(async move { (node, client.list_keys(call).await) });
    }
    let mut by_session: BTreeMap<Vec<u8>, Vec<RefreshVote>> = BTreeMap::new();
    let mut unreachable = Vec::new();
    while let Some(joined) = calls.join_next().await {
        let Ok((node, answer)) = joined else { continue };
        let Ok(reply) = answer else {
            unreachable.push(node);
            continue;
        };
        for key in reply.into_inner().keys {
            if key.key_id == key_id
                && !key.pending_refresh_session.is_empty()
                && let Some(vote) = key.pending_refresh_vote
            {
                by_session
                    .entry(key.pending_refresh_session)
                    .or_default()
                    .push(vote);
            }
        }
    }
    let pending = by_session
        .into_iter()
        .map(|(session_id, votes)| Pending { session_id, votes })
        .collect();
    (pending, unreachable)
}

/// The key epoch a node named when it refused a session for being at another one.
pub fn refused_epoch(status: &Status) -> Option<u64> {
    if status.code() != Code::FailedPrecondition {
        return None;
    }
    status
        .metadata()
        .get(shardsign_proto::node::KEY_EPOCH_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Hands `node` the certificate of `key`'s current epoch, which it missed (it was down or cut
/// off when the refresh committed); whether it is at that epoch now.
pub async fn heal(
    registry: &Registry,
    clients: &Clients,
    key: &KeyRecord,
    node: u8,
    timeout: Duration,
) -> bool {
    let Ok(Some(commit)) = registry.refresh_commit(&key.key_id, key.epoch) else {
        return false;
    };
    let nodes = BTreeSet::from([node]);
    let answers = commit_on(clients, &nodes, &commit, timeout).await;
    let healed = matches!(answers.get(&node), Some(Ok(epoch)) if *epoch == key.epoch);
    if healed {
        tracing::info!(
            node,
            key_id = key.key_id,
            epoch = key.epoch,
            "a node that missed a refresh commit was given its certificate"
        );
    }
    healed
}
