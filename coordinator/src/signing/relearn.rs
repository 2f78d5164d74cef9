//! A node restored from a backup signs nothing until it has re-learned the cluster's state from
//! both peers (the rules are the node's: see the node's `sessions::relearn`). The coordinator only
//! carries bytes: the restored node's challenge (from `GetIdentity`), each peer's state signed for
//! that challenge (`GetState`), and both states to the restored node (`Relearn`). It runs when a
//! signing request meets the refusal and on every cluster status call; each completed re-learning
//! is audited.

use std::time::Duration;

use shardsign_proto::node::RELEARN_HEADER;
use shardsign_proto::node::v1::{
    GetIdentityRequest, GetStateRequest, RelearnReply, RelearnRequest, SignedNodeState,
};
use tonic::Status;

use super::relay::Clients;
use crate::audit::{AuditEntry, Decision};
use crate::metrics::CoordinatorMetrics;
use crate::registry::{Registry, now_ms};

/// Whether a node's refusal says it must re-learn first.
pub fn needs_relearn(status: &Status) -> bool {
    status.metadata().get(RELEARN_HEADER).is_some()
}

fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Re-teaches `node` from its two peers; `Ok(None)` when it had nothing to re-learn. The error
/// says which step failed, for the operator (a peer down: re-learning waits for it).
pub async fn relearn(
    registry: &Registry,
    metrics: &CoordinatorMetrics,
    clients: &Clients,
    node: u8,
    timeout: Duration,
) -> Result<Option<RelearnReply>, String> {
    let outcome = teach(registry, clients, node, timeout).await;
    match &outcome {
        Ok(Some(_)) => metrics.relearned("done"),
        Ok(None) => {}
        Err(_) => metrics.relearned("failed"),
    }
    outcome
}

async fn teach(
    registry: &Registry,
    clients: &Clients,
    node: u8,
    timeout: Duration,
) -> Result<Option<RelearnReply>, String> {
    let mut client = clients
        .get(&node)
        .cloned()
        .ok_or_else(|| format!("node {node} is not configured"))?;
    let identity = client
        .get_identity(with_timeout(GetIdentityRequest {}, timeout))
        .await
        .map_err(|e| format!("node {node}: {}", e.message()))?
        .into_inner();
    if identity.relearn_challenge.is_empty() {
        return Ok(None);
    }
    let mut states = Vec::new();
    for peer in [1u8, 2, 3].into_iter().filter(|p| *p != node) {
        let mut peer_client = clients
            .get(&peer)
            .cloned()
            .ok_or_else(|| format!("node {peer} is not configured"))?;
        let request = GetStateRequest {
            challenge: identity.relearn_challenge.clone(),
            for_node: u32::from(node),
        };
        let state: SignedNodeState = peer_client
            .get_state(with_timeout(request, timeout))
            .await
            .map_err(|e| {
                format!(
                    "node {node} waits for both peers; node {peer} did not report its state: {}",
                    e.message()
                )
            })?
            .into_inner();
        states.push(state);
    }
    let reply = client
        .relearn(with_timeout(RelearnRequest { states }, timeout))
        .await
        .map_err(|e| format!("node {node} did not re-learn: {}", e.message()))?
        .into_inner();
    let detail = format!(
        "node {node}, restored from a backup, re-learned from both peers: membership version {} ({} changes applied), {} key statements, {} bans, {} ledger charges",
        reply.membership_version,
        reply.membership_changes_applied,
        reply.key_statements_applied,
        reply.bans_learned,
        reply.charges_learned
    );
    tracing::warn!(target: "security", node, "{detail}");
    let entry = AuditEntry {
        at_ms: now_ms(),
        api_key_id: "coordinator".into(),
        operation: "node_relearned".into(),
        decision: Decision::Allowed.as_str().into(),
        detail,
        peer: format!("node {node}"),
        ..Default::default()
    };
    if let Err(error) = registry.append_audit(entry) {
        tracing::error!(%error, "could not audit a node's re-learning");
    }
    Ok(Some(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_with_the_header_asks_for_relearning() {
        let mut status = Status::failed_precondition("restored");
        assert!(!needs_relearn(&status));
        status.metadata_mut().insert(
            RELEARN_HEADER,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        assert!(needs_relearn(&status));
    }
}
