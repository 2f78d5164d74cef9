//! The relay: delivers each round's sealed envelopes to their recipients until every participant
//! has a result. It cannot read or alter what it carries (the nodes would notice); the hook
//! exists so that tests can play a hostile relay against real nodes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message as _;
use std::time::Duration;

use shardsign_proto::node::v1::node_client::NodeClient;
use shardsign_proto::node::v1::{
    CancelRequest, DeliverRequest, Envelope, KeygenResult, RefreshResult, RoundReply,
    SignatureResult, StartKeygenRequest, StartRefreshRequest, StartSignRequest, round_reply,
};
use shardsign_request::SignRequest;

use crate::signing::bans::banned_peer;
use crate::signing::finalize;
use tonic::Status;
use tonic::transport::Channel;

/// What the relay does with one envelope on its way to a recipient.
pub enum Action {
    Deliver,
    Drop,
}

/// Called for every (recipient, envelope) pair before delivery; may alter the envelope.
pub type Hook<'a> = &'a mut (dyn FnMut(u8, &mut Envelope) -> Action + Send);

/// A node refused or failed a call.
#[derive(Debug)]
pub struct RelayError {
    pub node: u8,
    pub status: Status,
}

/// Clients of the participating nodes, by node id.
pub type Clients = BTreeMap<u8, NodeClient<Channel>>;

/// A new session id: it carries the time it was made, and nodes refuse old ones
/// (`shardsign_request::check_session_id_time`).
pub fn fresh_session_id() -> Vec<u8> {
    shardsign_request::new_session_id(shardsign_request::unix_now_ms()).to_vec()
}

fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Per-call limits and progress reporting.
pub struct Options<'a> {
    /// Deadline of each call to a node (one round's work).
    pub call_timeout: Duration,
    pub hook: Option<Hook<'a>>,
    /// Told the number of each round as it is delivered.
    pub on_round: Option<&'a mut (dyn FnMut(u32) + Send)>,
    /// Told each node that joined the session.
    pub on_joined: Option<&'a mut (dyn FnMut(u8) + Send)>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            call_timeout: Duration::from_secs(10),
            hook: None,
            on_round: None,
            on_joined: None,
        }
    }
}

/// Who gets `envelope` (sent by `node`): every other participant for a broadcast, else the one
/// participant it names. An address outside the session is the relay's to refuse.
fn recipients(envelope: &Envelope, participants: &[u8], node: u8) -> Result<Vec<u8>, RelayError> {
    if envelope.to == 0 {
        return Ok(participants
            .iter()
            .copied()
            .filter(|p| u32::from(*p) != envelope.from)
            .collect());
    }
    match u8::try_from(envelope.to)
        .ok()
        .filter(|to| participants.contains(to))
    {
        Some(to) => Ok(vec![to]),
        None => Err(RelayError {
            node,
            status: Status::internal(format!(
                "node {node} addressed an envelope to node {}",
                envelope.to
            )),
        }),
    }
}

/// Delivers rounds until no envelopes are left; returns each node's result.
pub async fn drive(
    clients: &Clients,
    session_id: &[u8],
    first: BTreeMap<u8, RoundReply>,
    options: &mut Options<'_>,
) -> Result<BTreeMap<u8, round_reply::Result>, RelayError> {
    let participants: Vec<u8> = clients.keys().copied().collect();
    let mut replies = first;
    let mut results = BTreeMap::new();
    loop {
        let mut inbox: BTreeMap<u8, Vec<Envelope>> = BTreeMap::new();
        let mut round = 0;
        for (node, reply) in replies {
            if let Some(result) = reply.result {
                results.insert(node, result);
            }
            for envelope in reply.envelopes {
                round = round.max(envelope.round);
                let recipients = recipients(&envelope, &participants, node)?;
                for to in recipients {
                    let mut copy = envelope.clone();
                    let action = match options.hook.as_mut() {
                        Some(hook) => hook(to, &mut copy),
                        None => Action::Deliver,
                    };
                    if let Action::Deliver = action {
                        inbox.entry(to).or_default().push(copy);
                    }
                }
            }
        }
        if inbox.is_empty() {
            return Ok(results);
        }
        if let Some(on_round) = options.on_round.as_mut() {
            on_round(round);
        }
        let mut calls = tokio::task::JoinSet::new();
        for (to, envelopes) in inbox {
            let mut client = clients[&to].clone();
            let delivery = DeliverRequest {
                session_id: session_id.to_vec(),
                envelopes,
            };
            RELAYED_TO_NODES.fetch_add(delivery.encoded_len() as u64, Ordering::Relaxed);
            let request = with_timeout(delivery, options.call_timeout);
            calls.spawn(async move {
                let started = std::time::Instant::now();
                let reply = client.deliver(request).await;
                tracing::debug!(
                    node = to,
                    round,
                    call_us = started.elapsed().as_micros() as u64,
                    "delivery answered"
                );
                (to, reply)
            });
        }
        replies = collect(calls).await?;
    }
}

type Calls = tokio::task::JoinSet<(u8, Result<tonic::Response<RoundReply>, Status>)>;

/// Waits for every call; all replies by node, or the first failure (after all have ended, so
/// that no call is left running unobserved).
/// Bytes of protocol traffic: node replies (every message as a node produced it) and deliveries
/// (each message as forwarded to its recipients), protobuf-encoded, for the metrics and benches.
pub static RELAYED_FROM_NODES: AtomicU64 = AtomicU64::new(0);
pub static RELAYED_TO_NODES: AtomicU64 = AtomicU64::new(0);

async fn collect(mut calls: Calls) -> Result<BTreeMap<u8, RoundReply>, RelayError> {
    let mut replies = BTreeMap::new();
    let mut failure = None;
    while let Some(joined) = calls.join_next().await {
        let (node, outcome) = joined.map_err(|_| RelayError {
            node: 0,
            status: Status::internal("relay task failed"),
        })?;
        match outcome {
            Ok(reply) => {
                let reply = reply.into_inner();
                RELAYED_FROM_NODES.fetch_add(reply.encoded_len() as u64, Ordering::Relaxed);
                replies.insert(node, reply);
            }
            // A refusal naming a banned peer explains the failure best (the other node may
            // only have seen the session cancelled): keep it over any other.
            Err(status) => {
                let names_a_ban = banned_peer(&status).is_some();
                if failure.is_none() || names_a_ban {
                    failure = Some(RelayError { node, status });
                }
            }
        }
    }
    match failure {
        Some(failure) => Err(failure),
        None => Ok(replies),
    }
}

/// Best-effort cancellation of a session on every participant.
pub async fn cancel_all(clients: &Clients, session_id: &[u8]) {
    let mut calls = tokio::task::JoinSet::new();
    for client in clients.values() {
        let mut client = client.clone();
        let request = with_timeout(
            CancelRequest {
                session_id: session_id.to_vec(),
            },
            Duration::from_secs(2),
        );
        calls.spawn(async move { client.cancel(request).await });
    }
    while calls.join_next().await.is_some() {}
}

/// Starts a session on every participant at once.
async fn start_all<F, Fut>(
    clients: &Clients,
    start: F,
) -> Result<BTreeMap<u8, RoundReply>, RelayError>
where
    F: Fn(NodeClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<RoundReply>, Status>> + Send + 'static,
{
    let mut calls = Calls::new();
    for (&node, client) in clients {
        let call = start(client.clone());
        calls.spawn(async move { (node, call.await) });
    }
    collect(calls).await
}

/// Runs a key generation on all of `clients` (the three nodes) and finalizes it: committed on
/// every node (retried until each acknowledged) only if every node finished with the same key;
/// otherwise, or if a node never acknowledged its commit, aborted everywhere (see
/// [`finalize`]). The caller registers the key and then seals it ([`finalize::commit_everywhere`]
/// with `registered`).
pub async fn keygen(
    clients: &Clients,
    session_id: &[u8],
    key_id: &str,
    chains: &[u64],
    options: &mut Options<'_>,
) -> Result<Vec<KeygenResult>, RelayError> {
    let timeout = options.call_timeout;
    let started = start_all(clients, |mut client| {
        let request = with_timeout(
            StartKeygenRequest {
                session_id: session_id.to_vec(),
                key_id: key_id.to_string(),
                allowed_chain_ids: chains.to_vec(),
            },
            timeout,
        );
        async move { client.start_keygen(request).await }
    })
    .await;
    let outcome = match started {
        Ok(first) => {
            if let Some(on_joined) = options.on_joined.as_mut() {
                first.keys().for_each(|node| on_joined(*node));
            }
            drive(clients, session_id, first, options).await
        }
        Err(error) => Err(error),
    };
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
    let commit = results.len() == clients.len()
        && results
            .iter()
            .all(|r| r.public_key == results[0].public_key);
    if !commit {
        cancel_all(clients, session_id).await;
        let left = finalize::abort_everywhere(clients, session_id, key_id, timeout).await;
        outcome?;
        return Err(RelayError {
            node: 0,
            status: Status::internal(format!(
                "the nodes derived different keys; {}",
                finalize::describe_abort(&left)
            )),
        });
    }
    if let Err(failed) =
        finalize::commit_everywhere(clients, session_id, key_id, false, timeout).await
    {
        let left = finalize::abort_everywhere(clients, session_id, key_id, timeout).await;
        return Err(RelayError {
            node: failed.node,
            status: Status::new(
                failed.status.code(),
                format!(
                    "the commit was not acknowledged ({}); {}",
                    failed.status.message(),
                    finalize::describe_abort(&left)
                ),
            ),
        });
    }
    Ok(results)
}

/// Runs a refresh (complete, or `fast`) of `key_id` (at `epoch`) on all of `clients` (the three nodes); returns each
/// node's result (with its vote) as far as the session got. Ending it (commit with the three
/// votes, or abort) is the caller's: see [`super::refresh_end`]. On failure the session is
/// cancelled everywhere.
pub async fn refresh(
    clients: &Clients,
    session_id: &[u8],
    key_id: &str,
    epoch: u64,
    fast: bool,
    options: &mut Options<'_>,
) -> Result<BTreeMap<u8, RefreshResult>, RelayError> {
    let timeout = options.call_timeout;
    let started = start_all(clients, |mut client| {
        let request = with_timeout(
            StartRefreshRequest {
                session_id: session_id.to_vec(),
                key_id: key_id.to_string(),
                epoch,
                fast,
            },
            timeout,
        );
        async move { client.start_refresh(request).await }
    })
    .await;
    let outcome = match started {
        Ok(first) => drive(clients, session_id, first, options).await,
        Err(error) => Err(error),
    };
    match outcome {
        Ok(results) => Ok(results
            .into_iter()
            .filter_map(|(node, r)| match r {
                round_reply::Result::Refresh(r) => Some((node, r)),
                _ => None,
            })
            .collect()),
        Err(error) => {
            cancel_all(clients, session_id).await;
            Err(error)
        }
    }
}

/// What a signing session is asked to sign, and the key policy that allows it.
#[derive(Clone, Copy)]
pub struct SignJob<'a> {
    pub request: &'a SignRequest,
    /// The hash the coordinator computed; each node recomputes it and must agree.
    pub expected_hash: [u8; 32],
    /// The key's operator-signed policy (encoded), forwarded for the nodes to check.
    pub signed_policy: &'a [u8],
    /// The key's epoch in the registry; a node whose share is at another one refuses.
    pub epoch: u64,
    /// The caller's request id (an approval is bound to it).
    pub request_id: &'a str,
    /// The approvers' APPROVAL statement (encoded) when the policy parked this request; empty
    /// otherwise.
    pub approval: &'a [u8],
}

/// Runs a signing session on `signers`; returns both nodes' results. On failure the session is
/// cancelled on both.
pub async fn sign(
    clients: &Clients,
    signers: [u8; 2],
    job: &SignJob<'_>,
    session_id: &[u8],
    options: &mut Options<'_>,
) -> Result<Vec<SignatureResult>, RelayError> {
    let SignJob {
        request: sign_request,
        expected_hash,
        signed_policy,
        epoch,
        request_id,
        approval,
    } = *job;
    let payload = shardsign_request::proto::to_node(&sign_request.payload);
    let key_id = sign_request.key_id.as_str();
    let mut pair = Clients::new();
    for signer in signers {
        let client = clients.get(&signer).ok_or_else(|| RelayError {
            node: signer,
            status: Status::internal("no client for this node"),
        })?;
        pair.insert(signer, client.clone());
    }
    let timeout = options.call_timeout;
    let started = start_all(&pair, |mut client| {
        let request = with_timeout(
            StartSignRequest {
                session_id: session_id.to_vec(),
                key_id: key_id.to_string(),
                signers: signers.iter().map(|s| u32::from(*s)).collect(),
                payload: Some(payload.clone()),
                expected_hash: expected_hash.to_vec(),
                signed_policy: signed_policy.to_vec(),
                epoch,
                request_id: request_id.to_string(),
                approval: approval.to_vec(),
            },
            timeout,
        );
        async move { client.start_sign(request).await }
    })
    .await;
    let outcome = match started {
        Ok(first) => drive(&pair, session_id, first, options).await,
        Err(error) => Err(error),
    };
    match outcome {
        Ok(results) => Ok(results
            .into_values()
            .filter_map(|r| match r {
                round_reply::Result::Signature(s) => Some(s),
                _ => None,
            })
            .collect()),
        Err(error) => {
            cancel_all(&pair, session_id).await;
            Err(error)
        }
    }
}
