//! Makes sure every node keeps a key's public key package before a refresh (keys made before the
//! nodes kept one have none). The coordinator only carries the nodes' signed verifying shares
//! from one node to the others; each node checks them itself (see the node's
//! `sessions::package`), so nothing here is trusted.

use std::collections::BTreeMap;
use std::time::Duration;

use shardsign_proto::node::v1::{AgreePackageReply, AgreePackageRequest, SignedVerifyingShare};
use tonic::Status;

use super::relay::Clients;

/// Why the nodes could not agree on a package: the node and what it said.
#[derive(Debug)]
pub struct AgreementError {
    pub node: u8,
    pub status: Status,
}

async fn ask_all(
    clients: &Clients,
    request: &AgreePackageRequest,
    timeout: Duration,
) -> Result<BTreeMap<u8, AgreePackageReply>, AgreementError> {
    let mut calls = tokio::task::JoinSet::new();
    for (node, client) in clients {
        let mut client = client.clone();
        let mut call = tonic::Request::new(request.clone());
        call.set_timeout(timeout);
        let node = *node;
        calls.spawn(async move { (node, client.agree_package(call).await) });
    }
    let mut replies = BTreeMap::new();
    while let Some(joined) = calls.join_next().await {
        let (node, reply) = joined.map_err(|e| AgreementError {
            node: 0,
            status: Status::internal(format!("an agreement call failed to run: {e}")),
        })?;
        let reply = reply.map_err(|status| AgreementError { node, status })?;
        replies.insert(node, reply.into_inner());
    }
    Ok(replies)
}

/// Has the three nodes agree on `key_id`'s package at `epoch` unless every one keeps it
/// already; whether an agreement ran.
pub async fn ensure(
    clients: &Clients,
    key_id: &str,
    epoch: u64,
    timeout: Duration,
) -> Result<bool, AgreementError> {
    let mut request = AgreePackageRequest {
        key_id: key_id.to_string(),
        epoch,
        shares: Vec::new(),
    };
    let published = ask_all(clients, &request, timeout).await?;
    if published.values().all(|reply| reply.stored) {
        return Ok(false);
    }
    request.shares = published
        .into_values()
        .filter_map(|reply| reply.own)
        .collect::<Vec<SignedVerifyingShare>>();
    let agreed = ask_all(clients, &request, timeout).await?;
    if let Some((node, _)) = agreed.iter().find(|(_, reply)| !reply.stored) {
        return Err(AgreementError {
            node: *node,
            status: Status::internal("the node did not keep the agreed package"),
        });
    }
    tracing::info!(
        key_id,
        epoch,
        "the nodes agreed on the key's public key package"
    );
    Ok(true)
}
