//! How a key generation ends on the three nodes, so that it never leaves half a key: commit on
//! every node (retried: a commit is idempotent) and only then register; or abort everywhere by
//! the ceremony's session id. A node deletes a committed share only with another node's signed
//! abort receipt (proof that node will never commit, so the key was never registered), so the
//! abort runs in two passes: every node first, then the refusers again with the receipts. After
//! registration, a last commit with `registered` seals the shares against any abort.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shardsign_proto::node::v1::{AbortReceipt, FinalizeKeygenReply, FinalizeKeygenRequest};
use tonic::{Code, Status};

use super::relay::{Clients, RelayError};

/// Commit attempts per node before the coordinator gives up and aborts.
const COMMIT_ATTEMPTS: u32 = 4;
/// The pause before the second attempt; doubled before each later one (0.25 s, 0.5 s, 1 s).
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// One `FinalizeKeygen` per node in `nodes`, at once; each node's answer.
async fn finalize_on(
    clients: &Clients,
    nodes: &BTreeSet<u8>,
    request: &FinalizeKeygenRequest,
    timeout: Duration,
) -> BTreeMap<u8, Result<FinalizeKeygenReply, Status>> {
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
            let reply = client.finalize_keygen(call).await.map(|r| r.into_inner());
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

fn request(session_id: &[u8], key_id: &str) -> FinalizeKeygenRequest {
    FinalizeKeygenRequest {
        session_id: session_id.to_vec(),
        key_id: key_id.to_string(),
        ..Default::default()
    }
}

/// Commits the ceremony on every node (sealing it when `registered`), retrying the nodes that
/// did not acknowledge; the last failure when some node never did.
pub async fn commit_everywhere(
    clients: &Clients,
    session_id: &[u8],
    key_id: &str,
    registered: bool,
    timeout: Duration,
) -> Result<(), RelayError> {
    let request = FinalizeKeygenRequest {
        commit: true,
        registered,
        ..request(session_id, key_id)
    };
    let mut waiting: BTreeSet<u8> = clients.keys().copied().collect();
    let mut last_failure = None;
    for attempt in 0..COMMIT_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(FIRST_RETRY_PAUSE * 2u32.pow(attempt - 1)).await;
        }
        for (node, answer) in finalize_on(clients, &waiting, &request, timeout).await {
            let failure = match answer {
                Ok(reply) if reply.found => {
                    waiting.remove(&node);
                    continue;
                }
                Ok(_) => Status::failed_precondition("it holds no share of this key generation"),
                Err(status) => status,
            };
            tracing::warn!(node, attempt, error = %failure.message(), "key generation commit not acknowledged");
            // A node that aborted the ceremony (or holds none of it) never will: stop retrying.
            let hopeless = failure.code() == Code::FailedPrecondition;
            last_failure = Some(RelayError {
                node,
                status: failure,
            });
            if hopeless {
                return Err(last_failure.expect("just set"));
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
    }
    Err(last_failure.unwrap_or_else(|| RelayError {
        node: 0,
        status: Status::unavailable("no node answered the commit"),
    }))
}

/// Aborts the ceremony on every node; returns one line per node that may still hold a share
/// of it (empty: none does).
pub async fn abort_everywhere(
    clients: &Clients,
    session_id: &[u8],
    key_id: &str,
    timeout: Duration,
) -> Vec<String> {
    let everyone: BTreeSet<u8> = clients.keys().copied().collect();
    let mut receipts: Vec<AbortReceipt> = Vec::new();
    let mut refused = BTreeMap::new();
    for (node, answer) in
        finalize_on(clients, &everyone, &request(session_id, key_id), timeout).await
    {
        match answer {
            Ok(reply) => receipts.extend(reply.abort_receipt),
            Err(status) => {
                refused.insert(node, status);
            }
        }
    }
    // A node that committed already deletes its share with another node's receipt.
    let committed: BTreeSet<u8> = refused
        .iter()
        .filter(|(_, status)| status.code() == Code::FailedPrecondition)
        .map(|(node, _)| *node)
        .collect();
    if !committed.is_empty() && !receipts.is_empty() {
        let with_receipts = FinalizeKeygenRequest {
            abort_receipts: receipts,
            ..request(session_id, key_id)
        };
        for (node, answer) in finalize_on(clients, &committed, &with_receipts, timeout).await {
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
        tracing::error!(key_id, left = ?left, "key generation abort incomplete: a share may be left");
    }
    left
}

/// What an abort left, for the caller: nothing anywhere, or which nodes still hold a share.
pub fn describe_abort(left: &[String]) -> String {
    if left.is_empty() {
        "the key generation was aborted on every node and no share of it is left; run it again (the same key id works)".into()
    } else {
        format!(
            "the abort did not reach every node, so a share of this key generation may be left ({}); the key is not registered",
            left.join("; ")
        )
    }
}
