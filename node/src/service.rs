//! The node's gRPC service: thin. It bounds and converts each request, runs the protocol work on
//! the blocking pool (it is CPU-bound), and maps errors to status codes.

use std::sync::Arc;

use shardsign_proto::node::v1::node_server::Node as NodeRpc;
use shardsign_proto::node::v1::{
    AbortReceipt, AgreePackageReply, AgreePackageRequest, CancelReply, CancelRequest,
    DeliverRequest, FinalizeKeygenReply, FinalizeKeygenRequest, FinalizeRefreshReply,
    FinalizeRefreshRequest, GetIdentityRequest, GetStateRequest, Identity, ListKeysReply,
    ListKeysRequest, NodeKey, PutMembershipReply, PutMembershipRequest, PutPolicyReply,
    PutPolicyRequest, RefreshVote, RelearnReply, RelearnRequest, RepairAssembleReply,
    RepairAssembleRequest, RepairTermReply, RepairTermRequest, RoundReply, SignedNodeState,
    SignedVerifyingShare, StartKeygenRequest, StartRefreshRequest, StartSignRequest,
};
use shardsign_request::{KeyId, RequestError, SignRequest};
use shardsign_tss::{PartyId, SessionId};
use tonic::{Request, Response, Status};

use crate::error::NodeError;
use crate::sessions::{MAX_SIGNED_SHARE_LEN, Node, RoundOutcome, StartSign, metric};

pub struct NodeService {
    node: Arc<Node>,
}

impl NodeService {
    pub fn new(node: Arc<Node>) -> Self {
        NodeService { node }
    }
}

/// What the coordinator sees while this node's disk is full: retryable (another pair can sign).
pub const DISK_FULL: &str = "node unavailable: disk full (its store cannot record the session, so it did not sign); free space on its data directory: it resumes without a restart";

/// The status a caller sees for each error; internal details stay in the node's log.
pub fn status(error: NodeError) -> Status {
    if error.is_disk_full() {
        tracing::error!(%error, "disk full: the store cannot write; free space on the data directory");
        return Status::unavailable(DISK_FULL);
    }
    match error {
        NodeError::KeyNotFound(_) | NodeError::UnknownSession => {
            Status::not_found(error.to_string())
        }
        NodeError::KeyExists(_) | NodeError::SessionReused => {
            Status::already_exists(error.to_string())
        }
        NodeError::InvalidArgument { .. } => Status::invalid_argument(error.to_string()),
        NodeError::ChainNotAllowed { .. }
        | NodeError::PolicyRejected(_)
        | NodeError::PolicyRefused(_) => Status::permission_denied(error.to_string()),
        NodeError::PolicyMissing(_)
        | NodeError::PolicyExpired { .. }
        | NodeError::ApprovalRefused { .. }
        | NodeError::StatementPremature { .. }
        | NodeError::KeyDisabled { .. }
        | NodeError::CeremonyAborted(_)
        | NodeError::KeySealed(_)
        | NodeError::CommittedWithoutReceipt(_)
        | NodeError::RefreshPending(_)
        | NodeError::RefreshAborted(_)
        | NodeError::VotedWithoutReceipt(_)
        | NodeError::NoPendingRefresh(_)
        | NodeError::RefreshCommitted(_)
        | NodeError::SessionTime(_)
        | NodeError::Relearn(_)
        | NodeError::SessionBeforeRestore { .. } => Status::failed_precondition(error.to_string()),
        NodeError::RelearnNeeded { .. } => {
            // For the coordinator to run `Relearn` on this node and retry.
            let mut status = Status::failed_precondition(error.to_string());
            status.metadata_mut().insert(
                shardsign_proto::node::RELEARN_HEADER,
                tonic::metadata::MetadataValue::from_static("1"),
            );
            status
        }
        NodeError::Security(_) => Status::permission_denied(error.to_string()),
        NodeError::RateLimited(_) => Status::resource_exhausted(error.to_string()),
        NodeError::Aborted(_) | NodeError::Cheated { .. } => Status::aborted(error.to_string()),
        NodeError::EpochMismatch { current, .. } => {
            // The node's epoch, for a coordinator to hand a node behind the certificate it missed.
            let mut status = Status::failed_precondition(error.to_string());
            status.metadata_mut().insert(
                shardsign_proto::node::KEY_EPOCH_HEADER,
                tonic::metadata::MetadataValue::from(current),
            );
            status
        }
        NodeError::Banned { peer, .. } => {
            // The peer a refusal names, for the coordinator to stop scheduling this pair.
            let mut status = Status::failed_precondition(error.to_string());
            status.metadata_mut().insert(
                shardsign_proto::node::BANNED_PEER_HEADER,
                tonic::metadata::MetadataValue::from(u32::from(peer.get())),
            );
            status
        }
        NodeError::Busy(_) => Status::resource_exhausted(error.to_string()),
        other => {
            tracing::error!(error = %other, "internal error");
            Status::internal("internal error on the node; see its log")
        }
    }
}

/// A request the node cannot parse, as the status naming its field.
/// The caller's request id as the coordinator forwards it: empty (from a coordinator that does
/// not send it; then no approval can match), or a valid request id.
fn checked_request_id(request_id: String) -> Result<String, Status> {
    if request_id.is_empty() {
        return Ok(request_id);
    }
    shardsign_request::RequestId::parse(&request_id)
        .map(|id| id.as_str().to_string())
        .map_err(request_error)
}

fn request_error(error: RequestError) -> Status {
    status(match error {
        RequestError::InvalidArgument { field, problem } => {
            NodeError::InvalidArgument { field, problem }
        }
        RequestError::InvalidTransaction(e) => NodeError::invalid("transaction", e.to_string()),
    })
}

fn session_id(bytes: &[u8]) -> Result<SessionId, Status> {
    let array: [u8; 32] = bytes.try_into().map_err(|_| {
        Status::invalid_argument(format!(
            "session_id: expected 32 bytes, got {}",
            bytes.len()
        ))
    })?;
    Ok(SessionId(array))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| Status::internal("internal error on the node; see its log"))?
        .map_err(status)
}

/// Records how long an RPC took, from arrival to reply.
fn timed(node: &Node, rpc: &'static str, since: std::time::Instant) {
    node.metrics().observe(
        metric::RPC_SECONDS,
        "Node RPC latency (queueing and work), by RPC",
        &[("rpc", rpc)],
        since.elapsed(),
    );
}

/// Runs one session step (on the blocking pool, inside the step's span), logging at debug level
/// how long it waited for a thread and how long it worked: the profile's per-call figures.
fn timed_step<T>(step: &'static str, arrived: std::time::Instant, work: impl FnOnce() -> T) -> T {
    let queued = arrived.elapsed();
    let started = std::time::Instant::now();
    let outcome = work();
    tracing::debug!(
        step,
        queued_us = queued.as_micros() as u64,
        work_us = started.elapsed().as_micros() as u64,
        "step processed"
    );
    outcome
}

fn reply(outcome: RoundOutcome) -> Response<RoundReply> {
    Response::new(RoundReply {
        envelopes: outcome.envelopes,
        result: outcome.result,
    })
}

#[tonic::async_trait]
impl NodeRpc for NodeService {
    async fn get_identity(
        &self,
        _: Request<GetIdentityRequest>,
    ) -> Result<Response<Identity>, Status> {
        let node = self.node.clone();
        let key_count = blocking(move || node.store().list_keys(false)).await?.len() as u32;
        let identity = self.node.identity();
        Ok(Response::new(Identity {
            node_id: u32::from(self.node.node_id().get()),
            cluster_id: self.node.cluster_id().to_string(),
            signing_key: identity.signing_key().to_vec(),
            kx_key: identity.kx_key().to_vec(),
            fingerprint: identity.fingerprint(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            key_count,
            sessions_in_flight: self.node.sessions_in_flight() as u32,
            membership_version: self.node.membership_version(),
            relearn_challenge: self
                .node
                .relearn_challenge()
                .map(|c| c.to_vec())
                .unwrap_or_default(),
            bans: self
                .node
                .bans()
                .into_iter()
                .map(|ban| shardsign_proto::node::v1::Ban {
                    node_id: u32::from(ban.node_id),
                    signing_key: ban.peer_signing_key.to_vec(),
                    reason: ban.reason,
                    at_unix_ms: ban.at_ms,
                })
                .collect(),
        }))
    }

    async fn start_keygen(
        &self,
        request: Request<StartKeygenRequest>,
    ) -> Result<Response<RoundReply>, Status> {
        let request = request.into_inner();
        let session_id = session_id(&request.session_id)?;
        let node = self.node.clone();
        let envelopes = blocking(move || {
            node.start_keygen(session_id, &request.key_id, &request.allowed_chain_ids)
        })
        .await?;
        Ok(reply(RoundOutcome {
            envelopes,
            result: None,
        }))
    }

    async fn start_sign(
        &self,
        request: Request<StartSignRequest>,
    ) -> Result<Response<RoundReply>, Status> {
        let request = request.into_inner();
        let session_id = session_id(&request.session_id)?;
        let party = |id: &u32| {
            u8::try_from(*id)
                .ok()
                .and_then(|id| PartyId::new(id).ok())
                .ok_or_else(|| Status::invalid_argument("signers: node ids are 1, 2 or 3"))
        };
        let signers: [PartyId; 2] = match request.signers.as_slice() {
            [a, b] => [party(a)?, party(b)?],
            _ => {
                return Err(Status::invalid_argument(
                    "signers: expected exactly two node ids",
                ));
            }
        };
        let expected_hash: [u8; 32] = request
            .expected_hash
            .as_slice()
            .try_into()
            .map_err(|_| Status::invalid_argument("expected_hash: expected 32 bytes"))?;
        let sign_request = SignRequest {
            key_id: KeyId::field(&request.key_id).map_err(request_error)?,
            payload: shardsign_request::proto::from_node(request.payload, self.node.limits())
                .map_err(request_error)?,
        };
        let sign = StartSign {
            session_id,
            signers,
            request: sign_request,
            expected_hash,
            signed_policy: request.signed_policy,
            epoch: request.epoch,
            request_id: checked_request_id(request.request_id)?,
            approval: request.approval,
        };
        let node = self.node.clone();
        let arrived = std::time::Instant::now();
        let envelopes = blocking(move || {
            let _span = tracing::info_span!(
                "start_sign",
                session_id = %sign.session_id,
                key_id = %sign.request.key_id
            )
            .entered();
            timed_step("start", arrived, || node.start_sign(sign))
        })
        .await?;
        timed(&self.node, "start_sign", arrived);
        Ok(reply(RoundOutcome {
            envelopes,
            result: None,
        }))
    }

    async fn deliver(
        &self,
        request: Request<DeliverRequest>,
    ) -> Result<Response<RoundReply>, Status> {
        let request = request.into_inner();
        let session_id = session_id(&request.session_id)?;
        let node = self.node.clone();
        let received = std::time::Instant::now();
        let outcome = blocking(move || {
            let _span = tracing::info_span!("deliver", session_id = %session_id).entered();
            timed_step("deliver", received, || {
                node.deliver(session_id, request.envelopes)
            })
        })
        .await?;
        timed(&self.node, "deliver", received);
        Ok(reply(outcome))
    }

    async fn cancel(
        &self,
        request: Request<CancelRequest>,
    ) -> Result<Response<CancelReply>, Status> {
        let session_id = session_id(&request.into_inner().session_id)?;
        let existed = self.node.cancel(&session_id);
        if existed {
            tracing::info!(session_id = %session_id, "session cancelled");
        }
        Ok(Response::new(CancelReply { existed }))
    }

    async fn finalize_keygen(
        &self,
        request: Request<FinalizeKeygenRequest>,
    ) -> Result<Response<FinalizeKeygenReply>, Status> {
        let request = request.into_inner();
        let session_id = session_id(&request.session_id)?;
        #[cfg(feature = "malicious")]
        if request.commit
            && let Some(refusal) = misbehaviour::refuse_commit()
        {
            return Err(refusal);
        }
        if request.abort_receipts.len() > 3 {
            return Err(Status::invalid_argument(
                "abort_receipts: at most one per node",
            ));
        }
        let node = self.node.clone();
        if request.commit {
            let found = blocking(move || {
                node.commit_keygen(session_id, &request.key_id, request.registered)
            })
            .await?;
            return Ok(Response::new(FinalizeKeygenReply {
                found,
                abort_receipt: None,
            }));
        }
        let receipts: Vec<(u8, Vec<u8>)> = request
            .abort_receipts
            .into_iter()
            .filter_map(|r| u8::try_from(r.node_id).ok().map(|node| (node, r.signed)))
            .collect();
        let me = u32::from(self.node.node_id().get());
        let (found, signed) =
            blocking(move || node.abort_keygen(session_id, &request.key_id, &receipts)).await?;
        Ok(Response::new(FinalizeKeygenReply {
            found,
            abort_receipt: Some(AbortReceipt {
                node_id: me,
                signed,
            }),
        }))
    }

    async fn start_refresh(
        &self,
        request: Request<StartRefreshRequest>,
    ) -> Result<Response<RoundReply>, Status> {
        let request = request.into_inner();
        let session_id = session_id(&request.session_id)?;
        let node = self.node.clone();
        let kind = if request.fast {
            shardsign_tss::RefreshKind::Fast
        } else {
            shardsign_tss::RefreshKind::Complete
        };
        let envelopes =
            blocking(move || node.start_refresh(session_id, &request.key_id, request.epoch, kind))
                .await?;
        Ok(reply(RoundOutcome {
            envelopes,
            result: None,
        }))
    }

    async fn finalize_refresh(
        &self,
        request: Request<FinalizeRefreshRequest>,
    ) -> Result<Response<FinalizeRefreshReply>, Status> {
        let request = request.into_inner();
        let session_id = session_id(&request.session_id)?;
        if request.certificate.len() > 3 || request.abort_receipts.len() > 3 {
            return Err(Status::invalid_argument(
                "certificate, abort_receipts: at most one per node",
            ));
        }
        #[cfg(feature = "malicious")]
        if request.commit
            && let Some(refusal) = misbehaviour::refuse_refresh_commit()
        {
            return Err(refusal);
        }
        let node = self.node.clone();
        if request.commit {
            let certificate: Vec<(u8, Vec<u8>)> = request
                .certificate
                .into_iter()
                .filter_map(|v| u8::try_from(v.node_id).ok().map(|node| (node, v.signed)))
                .collect();
            let epoch =
                blocking(move || node.commit_refresh(session_id, &request.key_id, &certificate))
                    .await?;
            return Ok(Response::new(FinalizeRefreshReply {
                epoch,
                abort_receipt: None,
                deleted: false,
            }));
        }
        let receipts: Vec<(u8, Vec<u8>)> = request
            .abort_receipts
            .into_iter()
            .filter_map(|r| u8::try_from(r.node_id).ok().map(|node| (node, r.signed)))
            .collect();
        let me = u32::from(self.node.node_id().get());
        let (deleted, signed, epoch) = blocking(move || {
            let (deleted, signed) = node.abort_refresh(session_id, &request.key_id, &receipts)?;
            let epoch = node.store().key_epoch(&request.key_id).unwrap_or(0);
            Ok((deleted, signed, epoch))
        })
        .await?;
        Ok(Response::new(FinalizeRefreshReply {
            epoch,
            abort_receipt: Some(AbortReceipt {
                node_id: me,
                signed,
            }),
            deleted,
        }))
    }

    async fn agree_package(
        &self,
        request: Request<AgreePackageRequest>,
    ) -> Result<Response<AgreePackageReply>, Status> {
        let request = request.into_inner();
        if request.shares.len() > 3
            || request
                .shares
                .iter()
                .any(|s| s.signed.len() > MAX_SIGNED_SHARE_LEN)
        {
            return Err(Status::invalid_argument(
                "shares: at most one signed verifying share per node, each at most 131 bytes",
            ));
        }
        let published: Vec<(u8, Vec<u8>)> = request
            .shares
            .into_iter()
            .filter_map(|s| u8::try_from(s.node_id).ok().map(|node| (node, s.signed)))
            .collect();
        let me = u32::from(self.node.node_id().get());
        let node = self.node.clone();
        let agreement =
            blocking(move || node.agree_package(&request.key_id, request.epoch, &published))
                .await?;
        Ok(Response::new(AgreePackageReply {
            own: Some(SignedVerifyingShare {
                node_id: me,
                signed: agreement.own,
            }),
            stored: agreement.stored,
        }))
    }

    async fn put_membership(
        &self,
        request: Request<PutMembershipRequest>,
    ) -> Result<Response<PutMembershipReply>, Status> {
        let signed = request.into_inner().signed_statement;
        if signed.len() > shardsign_policy::membership::MAX_STATEMENT_BYTES {
            return Err(Status::invalid_argument(format!(
                "signed_statement: at most {} bytes",
                shardsign_policy::membership::MAX_STATEMENT_BYTES
            )));
        }
        let node = self.node.clone();
        let (version, changed) = blocking(move || node.put_membership(&signed)).await?;
        Ok(Response::new(PutMembershipReply { version, changed }))
    }

    async fn repair_term(
        &self,
        request: Request<RepairTermRequest>,
    ) -> Result<Response<RepairTermReply>, Status> {
        let request = request.into_inner();
        let target = u8::try_from(request.target)
            .ok()
            .and_then(|t| PartyId::new(t).ok())
            .ok_or_else(|| Status::invalid_argument("target: expected 1, 2 or 3"))?;
        let node = self.node.clone();
        let reply =
            blocking(move || node.repair_term(&request.key_id, request.epoch, target)).await?;
        Ok(Response::new(reply))
    }

    async fn repair_assemble(
        &self,
        request: Request<RepairAssembleRequest>,
    ) -> Result<Response<RepairAssembleReply>, Status> {
        let request = request.into_inner();
        if request.terms.len() > 2 {
            return Err(Status::invalid_argument(
                "terms: one from each of the two helpers",
            ));
        }
        let node = self.node.clone();
        let stored =
            blocking(move || node.assemble_repair(&request.key_id, request.epoch, &request.terms))
                .await?;
        Ok(Response::new(RepairAssembleReply { stored }))
    }

    async fn list_keys(
        &self,
        request: Request<ListKeysRequest>,
    ) -> Result<Response<ListKeysReply>, Status> {
        let include_pending = request.into_inner().include_pending;
        let me = self.node.node_id().get();
        let node = self.node.clone();
        let keys = blocking(move || node.store().list_keys(include_pending)).await?;
        Ok(Response::new(ListKeysReply {
            keys: keys
                .into_iter()
                .map(|k| NodeKey {
                    key_id: k.key_id,
                    public_key: k.public_key,
                    allowed_chain_ids: k.allowed_chain_ids,
                    created_at_unix: k.created_at,
                    status: k.status,
                    ceremony_session: k.ceremony_session,
                    sealed: k.sealed,
                    epoch: k.epoch,
                    epoch_changed_at_unix: k.epoch_changed_at,
                    pending_refresh_session: k
                        .pending_refresh
                        .as_ref()
                        .map(|(session, _)| session.clone())
                        .unwrap_or_default(),
                    pending_refresh_vote: k.pending_refresh.map(|(_, vote)| RefreshVote {
                        node_id: u32::from(me),
                        signed: vote,
                    }),
                    has_public_package: k.has_public_package,
                    hollow: k.hollow,
                })
                .collect(),
        }))
    }

    async fn put_policy(
        &self,
        request: Request<PutPolicyRequest>,
    ) -> Result<Response<PutPolicyReply>, Status> {
        let signed = request.into_inner().signed_policy;
        let node = self.node.clone();
        let policy = blocking(move || node.put_policy(&signed)).await?;
        Ok(Response::new(PutPolicyReply {
            key_id: policy.key_id.clone(),
            version: policy.version,
        }))
    }

    async fn get_state(
        &self,
        request: Request<GetStateRequest>,
    ) -> Result<Response<SignedNodeState>, Status> {
        let request = request.into_inner();
        let node = self.node.clone();
        let signed =
            blocking(move || node.signed_state(&request.challenge, request.for_node)).await?;
        Ok(Response::new(SignedNodeState { signed }))
    }

    async fn relearn(
        &self,
        request: Request<RelearnRequest>,
    ) -> Result<Response<RelearnReply>, Status> {
        let states: Vec<Vec<u8>> = request
            .into_inner()
            .states
            .into_iter()
            .map(|state| state.signed)
            .collect();
        if states.len() > 2 {
            return Err(Status::invalid_argument("states: one from each peer"));
        }
        let node = self.node.clone();
        let reply = blocking(move || node.relearn(&states)).await?;
        Ok(Response::new(reply))
    }
}

/// Test-only misbehaviour of `shardsign-node-malicious` at the node level (the engine's is in
/// `shardsign_tss::malicious`): `SHARDSIGN_MALICIOUS=refuse-commit` refuses every key
/// generation commit, `refuse-commit-once` the first one only, `refuse-refresh-commit` every
/// refresh commit (the node then lags one epoch behind its peers).
#[cfg(feature = "malicious")]
mod misbehaviour {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tonic::Status;

    static REFUSED_ONCE: AtomicBool = AtomicBool::new(false);

    pub fn refuse_commit() -> Option<Status> {
        let refuse = match std::env::var("SHARDSIGN_MALICIOUS").as_deref() {
            Ok("refuse-commit") => true,
            Ok("refuse-commit-once") => !REFUSED_ONCE.swap(true, Ordering::SeqCst),
            _ => false,
        };
        refuse.then(|| Status::unavailable("refusing to commit (test misbehaviour)"))
    }

    pub fn refuse_refresh_commit() -> Option<Status> {
        (std::env::var("SHARDSIGN_MALICIOUS").as_deref() == Ok("refuse-refresh-commit"))
            .then(|| Status::unavailable("refusing to commit a refresh (test misbehaviour)"))
    }
}
