//! A minimal relay: what the coordinator will do, reduced to delivering each round's envelopes to
//! their recipients, with a hook through which tests tamper with, redirect or drop envelopes.

use std::collections::BTreeMap;

use shardsign_proto::node::v1::node_client::NodeClient;
use shardsign_proto::node::v1::{
    CancelRequest, DeliverRequest, Envelope, FinalizeKeygenRequest, KeygenResult, RoundReply,
    SignatureResult, StartKeygenRequest, StartSignRequest, round_reply, start_sign_request,
};
use tonic::Status;
use tonic::transport::Channel;

/// What the relay does with one envelope on its way to `to`.
pub enum Action {
    Deliver,
    Drop,
}

/// Called for every (recipient, envelope) pair before delivery; may alter the envelope.
pub type Hook<'a> = &'a mut (dyn FnMut(u8, &mut Envelope) -> Action + Send);

/// A node refused a call.
#[derive(Debug)]
pub struct RelayError {
    pub node: u8,
    pub status: Status,
}

pub fn fresh_session_id() -> Vec<u8> {
    rand::random::<[u8; 32]>().to_vec()
}

fn no_hook() -> impl FnMut(u8, &mut Envelope) -> Action + Send {
    |_, _| Action::Deliver
}

/// Delivers rounds until no envelopes are left; returns each node's result.
pub async fn drive(
    clients: &BTreeMap<u8, NodeClient<Channel>>,
    session_id: &[u8],
    first: BTreeMap<u8, RoundReply>,
    hook: Hook<'_>,
) -> Result<BTreeMap<u8, round_reply::Result>, RelayError> {
    let participants: Vec<u8> = clients.keys().copied().collect();
    let mut replies = first;
    let mut results = BTreeMap::new();
    loop {
        let mut inbox: BTreeMap<u8, Vec<Envelope>> = BTreeMap::new();
        for (node, reply) in replies {
            if let Some(result) = reply.result {
                results.insert(node, result);
            }
            for envelope in reply.envelopes {
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
                    let mut copy = envelope.clone();
                    if let Action::Deliver = hook(to, &mut copy) {
                        inbox.entry(to).or_default().push(copy);
                    }
                }
            }
        }
        if inbox.is_empty() {
            return Ok(results);
        }
        let mut calls = tokio::task::JoinSet::new();
        for (to, envelopes) in inbox {
            let Some(client) = clients.get(&to) else {
                return Err(RelayError {
                    node: to,
                    status: Status::not_found("no such node in this session"),
                });
            };
            let mut client = client.clone();
            let session_id = session_id.to_vec();
            calls.spawn(async move {
                (
                    to,
                    client
                        .deliver(DeliverRequest {
                            session_id,
                            envelopes,
                        })
                        .await,
                )
            });
        }
        replies = BTreeMap::new();
        let mut failure = None;
        while let Some(joined) = calls.join_next().await {
            let (node, outcome) = joined.expect("delivery task");
            match outcome {
                Ok(reply) => {
                    replies.insert(node, reply.into_inner());
                }
                Err(status) => failure = failure.or(Some(RelayError { node, status })),
            }
        }
        if let Some(failure) = failure {
            cancel_all(clients, session_id).await;
            return Err(failure);
        }
    }
}

/// Best-effort cancellation on every node, as the coordinator does after a failure.
pub async fn cancel_all(clients: &BTreeMap<u8, NodeClient<Channel>>, session_id: &[u8]) {
    for client in clients.values() {
        let _ = client
            .clone()
            .cancel(CancelRequest {
                session_id: session_id.to_vec(),
            })
            .await;
    }
}

/// Runs a key generation on the three nodes.
pub async fn keygen(
    clients: &BTreeMap<u8, NodeClient<Channel>>,
    key_id: &str,
    chains: &[u64],
    hook: Option<Hook<'_>>,
) -> Result<Vec<KeygenResult>, RelayError> {
    let session_id = fresh_session_id();
    let mut first = BTreeMap::new();
    for (&node, client) in clients {
        let reply = client
            .clone()
            .start_keygen(StartKeygenRequest {
                session_id: session_id.clone(),
                key_id: key_id.to_string(),
                allowed_chain_ids: chains.to_vec(),
            })
            .await
            .map_err(|status| RelayError { node, status })?;
        first.insert(node, reply.into_inner());
    }
    let mut default = no_hook();
    let outcome = drive(clients, &session_id, first, hook.unwrap_or(&mut default)).await;
    let results: Vec<KeygenResult> = match &outcome {
        Ok(results) => results
            .values()
            .filter_map(|r| match r {
                round_reply::Result::Keygen(k) => Some(k.clone()),
                _ => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    // Commit only if every node finished with the same key; otherwise abort everywhere.
    let commit = results.len() == clients.len()
        && results
            .iter()
            .all(|r| r.public_key == results[0].public_key);
    for (&node, client) in clients {
        let finalized = client
            .clone()
            .finalize_keygen(FinalizeKeygenRequest {
                session_id: session_id.clone(),
                key_id: key_id.to_string(),
                commit,
            })
            .await;
        if commit {
            finalized.map_err(|status| RelayError { node, status })?;
        }
    }
    outcome?;
    Ok(results)
}

/// What to sign.
#[derive(Debug, Clone)]
pub enum Payload {
    Transaction(Vec<u8>),
    PersonalMessage(Vec<u8>),
}

/// Runs a signing session on two nodes; returns both nodes' results.
pub async fn sign(
    clients: &BTreeMap<u8, NodeClient<Channel>>,
    signers: [u8; 2],
    key_id: &str,
    payload: &Payload,
    expected_hash: [u8; 32],
    session_id: Option<Vec<u8>>,
    hook: Option<Hook<'_>>,
) -> Result<Vec<SignatureResult>, RelayError> {
    let session_id = session_id.unwrap_or_else(fresh_session_id);
    let pair: BTreeMap<u8, NodeClient<Channel>> =
        signers.iter().map(|s| (*s, clients[s].clone())).collect();
    let mut first = BTreeMap::new();
    for (&node, client) in &pair {
        let payload = match payload {
            Payload::Transaction(bytes) => start_sign_request::Payload::Transaction(bytes.clone()),
            Payload::PersonalMessage(bytes) => {
                start_sign_request::Payload::PersonalMessage(bytes.clone())
            }
        };
        let reply = client
            .clone()
            .start_sign(StartSignRequest {
                session_id: session_id.clone(),
                key_id: key_id.to_string(),
                signers: signers.iter().map(|s| u32::from(*s)).collect(),
                payload: Some(payload),
                expected_hash: expected_hash.to_vec(),
            })
            .await;
        match reply {
            Ok(reply) => {
                first.insert(node, reply.into_inner());
            }
            Err(status) => {
                cancel_all(&pair, &session_id).await;
                return Err(RelayError { node, status });
            }
        }
    }
    let mut default = no_hook();
    let results = drive(&pair, &session_id, first, hook.unwrap_or(&mut default)).await?;
    Ok(results
        .into_values()
        .filter_map(|r| match r {
            round_reply::Result::Signature(s) => Some(s),
            _ => None,
        })
        .collect())
}
