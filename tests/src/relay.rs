//! The coordinator's relay (`shardsign_coordinator::signing::relay`) with the test conveniences: a fresh
//! session id per call and an optional hook through which tests play a hostile relay.

use std::collections::BTreeMap;

use shardsign_coordinator::signing::relay as production;
pub use shardsign_coordinator::signing::relay::{Action, Hook, RelayError, fresh_session_id};
use shardsign_proto::node::v1::node_client::NodeClient;
use shardsign_proto::node::v1::{KeygenResult, RefreshResult, SignatureResult};
pub use shardsign_request::Payload;
use shardsign_request::{KeyId, SignRequest};
use tonic::transport::Channel;

fn options(hook: Option<Hook<'_>>) -> production::Options<'_> {
    production::Options {
        hook,
        ..Default::default()
    }
}

/// Runs and finalizes a key generation on the three nodes.
pub async fn keygen(
    clients: &BTreeMap<u8, NodeClient<Channel>>,
    key_id: &str,
    chains: &[u64],
    hook: Option<Hook<'_>>,
) -> Result<Vec<KeygenResult>, RelayError> {
    production::keygen(
        clients,
        &fresh_session_id(),
        key_id,
        chains,
        &mut options(hook),
    )
    .await
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
    sign_with_policy(
        clients,
        signers,
        key_id,
        payload,
        expected_hash,
        &[],
        session_id,
        hook,
    )
    .await
}

/// `sign`, forwarding a signed key policy as the coordinator does.
#[allow(clippy::too_many_arguments)]
pub async fn sign_with_policy(
    clients: &BTreeMap<u8, NodeClient<Channel>>,
    signers: [u8; 2],
    key_id: &str,
    payload: &Payload,
    expected_hash: [u8; 32],
    signed_policy: &[u8],
    session_id: Option<Vec<u8>>,
    hook: Option<Hook<'_>>,
) -> Result<Vec<SignatureResult>, RelayError> {
    let session_id = session_id.unwrap_or_else(fresh_session_id);
    let request = SignRequest {
        key_id: KeyId::parse(key_id).expect("tests use valid key ids"),
        payload: payload.clone(),
    };
    let job = production::SignJob {
        request: &request,
        expected_hash,
        signed_policy,
        epoch: 0,
        request_id: "",
        approval: &[],
    };
    production::sign(clients, signers, &job, &session_id, &mut options(hook)).await
}

/// `sign_with_policy` with the caller's request id and an approval, as the coordinator forwards
/// a parked request once approved (or as a hostile relay might).
pub async fn sign_with_approval(
    clients: &BTreeMap<u8, NodeClient<Channel>>,
    key_id: &str,
    payload: &Payload,
    signed_policy: &[u8],
    request_id: &str,
    approval: &[u8],
) -> Result<Vec<SignatureResult>, RelayError> {
    let forwarded = Forwarded {
        epoch: 0,
        signed_policy,
        request_id,
        approval,
    };
    sign_forwarding(clients, [1, 2], key_id, payload, &forwarded).await
}

/// `sign_with_policy` of a key at `epoch`.
pub async fn sign_at_epoch(
    clients: &BTreeMap<u8, NodeClient<Channel>>,
    signers: [u8; 2],
    key_id: &str,
    epoch: u64,
    payload: &Payload,
    signed_policy: &[u8],
) -> Result<Vec<SignatureResult>, RelayError> {
    let forwarded = Forwarded {
        epoch,
        signed_policy,
        request_id: "",
        approval: &[],
    };
    sign_forwarding(clients, signers, key_id, payload, &forwarded).await
}

/// What a signing session carries beside the payload.
struct Forwarded<'a> {
    epoch: u64,
    signed_policy: &'a [u8],
    request_id: &'a str,
    approval: &'a [u8],
}

/// A signing session under a fresh id with the payload's own hash and `forwarded`.
async fn sign_forwarding(
    clients: &BTreeMap<u8, NodeClient<Channel>>,
    signers: [u8; 2],
    key_id: &str,
    payload: &Payload,
    forwarded: &Forwarded<'_>,
) -> Result<Vec<SignatureResult>, RelayError> {
    let request = SignRequest {
        key_id: KeyId::parse(key_id).expect("tests use valid key ids"),
        payload: payload.clone(),
    };
    let job = production::SignJob {
        request: &request,
        expected_hash: request.signing_hash(),
        signed_policy: forwarded.signed_policy,
        epoch: forwarded.epoch,
        request_id: forwarded.request_id,
        approval: forwarded.approval,
    };
    production::sign(
        clients,
        signers,
        &job,
        &fresh_session_id(),
        &mut options(None),
    )
    .await
}

/// Runs the rounds of a refresh of `key_id` (at `epoch`) on the three nodes under
/// `session_id`, without ending it; each node's result.
pub async fn refresh_rounds(
    clients: &BTreeMap<u8, NodeClient<Channel>>,
    session_id: &[u8],
    key_id: &str,
    epoch: u64,
    hook: Option<Hook<'_>>,
) -> Result<BTreeMap<u8, RefreshResult>, RelayError> {
    production::refresh(
        clients,
        session_id,
        key_id,
        epoch,
        false,
        &mut options(hook),
    )
    .await
}
