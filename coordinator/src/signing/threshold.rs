//! A threshold signature from two nodes: pick a pair, relay its session, and if a node fails or
//! times out try one more pair that avoids it, inside the caller's deadline. Both nodes' results
//! must agree and verify against the key before a signature is returned.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardsign_eth::Signature;
use shardsign_proto::node::v1::SignatureResult;
use shardsign_request::SignRequest;
use tonic::{Code, Status};

use crate::error::CoordError;
use crate::metrics::CoordinatorMetrics;
use crate::registry::{KeyRecord, Registry};
use crate::signing::bans::banned_peer;
use crate::signing::pool::NodePool;
use crate::signing::refresh_end::{heal, refused_epoch};
use crate::signing::relay::{self, Clients, RelayError};
use crate::signing::relearn::{needs_relearn, relearn};

/// How many pairs one request may try.
const MAX_ATTEMPTS: usize = 2;

pub struct ThresholdSigner {
    pub pool: Arc<NodePool>,
    /// Where a refresh's commit certificate is kept, for a node that missed it.
    pub registry: Arc<Registry>,
    pub round_timeout: Duration,
    pub metrics: Arc<CoordinatorMetrics>,
}

/// Cancels a session on its nodes if dropped before it is disarmed: when the caller goes away
/// (tonic drops the handler), the nodes stop working on its behalf.
struct CancelOnDrop {
    clients: Clients,
    session_id: Vec<u8>,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let clients = std::mem::take(&mut self.clients);
            let session_id = std::mem::take(&mut self.session_id);
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { relay::cancel_all(&clients, &session_id).await });
            }
        }
    }
}

/// Whether a failed attempt is worth retrying on another pair.
fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
            | Code::Internal
            | Code::NotFound
    )
}

fn deadline_passed(reasons: &[String]) -> CoordError {
    CoordError::DeadlineExceeded(format!(
        "the deadline passed while signing ({})",
        reasons.join("; ")
    ))
}

/// What the nodes are given beside the request, for their own checks.
pub struct Forwarded<'a> {
    /// The key's operator-signed policy (encoded).
    pub signed_policy: &'a [u8],
    pub request_id: &'a str,
    /// The approvers' statement, when the policy parked the request.
    pub approval: &'a [u8],
}

impl ThresholdSigner {
    /// Signs `request` (whose hash is `hash`) with a pair of nodes, forwarding the key's signed
    /// policy; the signature is verified before it is returned.
    pub async fn sign(
        &self,
        key: &KeyRecord,
        request: &SignRequest,
        hash: [u8; 32],
        forwarded: &Forwarded<'_>,
        deadline: Instant,
    ) -> Result<Signature, CoordError> {
        let clients = self.pool.clients();
        let mut failed: BTreeSet<u8> = BTreeSet::new();
        let mut reasons: Vec<String> = Vec::new();
        let mut attempts = 0;
        let mut healed: BTreeSet<u8> = BTreeSet::new();
        let mut relearned: BTreeSet<u8> = BTreeSet::new();
        let mut pairs: std::collections::VecDeque<[u8; 2]> =
            self.pool.candidate_pairs().into_iter().collect();
        while let Some(pair) = pairs.pop_front() {
            if attempts == MAX_ATTEMPTS {
                break;
            }
            if pair.iter().any(|n| failed.contains(n)) {
                continue;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining < Duration::from_millis(50) {
                return Err(deadline_passed(&reasons));
            }
            attempts += 1;
            let job = relay::SignJob {
                request,
                expected_hash: hash,
                signed_policy: forwarded.signed_policy,
                epoch: key.epoch,
                request_id: forwarded.request_id,
                approval: forwarded.approval,
            };
            match self.attempt(&clients, pair, &job, remaining).await {
                Ok(results) => {
                    pair.iter().for_each(|n| self.pool.mark_ok(*n));
                    return verified(key, &results, hash);
                }
                Err(RelayError { node, status })
                    if refused_epoch(&status).is_some_and(|epoch| epoch < key.epoch) =>
                {
                    // The node missed a refresh's commit: hand it the certificate and retry the
                    // pair once; without one, try another pair.
                    self.metrics.attempt_failed(node, status.code());
                    let timeout = self.round_timeout.max(Duration::from_secs(2));
                    if healed.insert(node)
                        && heal(&self.registry, &clients, key, node, timeout).await
                    {
                        attempts -= 1;
                        pairs.push_front(pair);
                        continue;
                    }
                    failed.insert(node);
                    reasons.push(format!("node {node}: {}", status.message()));
                }
                Err(RelayError { node, status }) if needs_relearn(&status) => {
                    // The node was restored from a backup: teach it the present from both peers
                    // and retry the pair once; without both peers, try another pair.
                    self.metrics.attempt_failed(node, status.code());
                    let timeout = self.round_timeout.max(Duration::from_secs(2));
                    if relearned.insert(node) {
                        match relearn(&self.registry, &self.metrics, &clients, node, timeout).await
                        {
                            Ok(_) => {
                                attempts -= 1;
                                pairs.push_front(pair);
                                continue;
                            }
                            Err(reason) => {
                                tracing::warn!(node, reason, "a restored node could not re-learn");
                                reasons.push(reason);
                            }
                        }
                    } else {
                        reasons.push(format!("node {node}: {}", status.message()));
                    }
                    failed.insert(node);
                }
                Err(RelayError { node, status }) if banned_peer(&status).is_some() => {
                    // The engine caught a cheat (or the node refuses a peer it banned before):
                    // that pair is gone for good; this request retries without the culprit.
                    self.metrics.attempt_failed(node, status.code());
                    if let Some(banned) = self.pool.bans().learn_from_refusal(node, &status) {
                        failed.insert(banned);
                        reasons.push(format!("node {node} has banned node {banned}"));
                    }
                }
                Err(RelayError { node, status }) if retryable(&status) => {
                    self.metrics.attempt_failed(node, status.code());
                    tracing::warn!(node, code = ?status.code(), message = status.message(), "signing attempt failed; trying another pair");
                    self.pool.mark_failed(node, status.message());
                    failed.insert(node);
                    reasons.push(format!("node {node}: {}", status.message()));
                }
                Err(RelayError { node, status }) => {
                    return Err(CoordError::NodeRefused {
                        node,
                        code: status.code(),
                        message: status.message().to_string(),
                    });
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(deadline_passed(&reasons));
        }
        if self.pool.candidate_pairs().is_empty() {
            return Err(CoordError::Unavailable(format!(
                "no pair of nodes can sign: {}; replace the banned node (a membership change)",
                self.pool.bans().describe()
            )));
        }
        let down: Vec<String> = failed.iter().map(|n| format!("node {n}")).collect();
        Err(CoordError::Unavailable(format!(
            "signing needs two reachable nodes; failed: {} ({})",
            down.join(", "),
            reasons.join("; ")
        )))
    }

    /// One session on one pair, cancelled on both nodes if the caller goes away meanwhile.
    async fn attempt(
        &self,
        clients: &Clients,
        pair: [u8; 2],
        job: &relay::SignJob<'_>,
        remaining: Duration,
    ) -> Result<Vec<SignatureResult>, RelayError> {
        let session_id = relay::fresh_session_id();
        let mut guard = CancelOnDrop {
            clients: pair
                .iter()
                .filter_map(|n| clients.get(n).map(|c| (*n, c.clone())))
                .collect(),
            session_id: session_id.clone(),
            armed: true,
        };
        let mut options = relay::Options {
            call_timeout: remaining.min(self.round_timeout),
            ..Default::default()
        };
        let outcome = relay::sign(clients, pair, job, &session_id, &mut options).await;
        guard.armed = false;
        outcome
    }
}

/// Both nodes' results must agree and verify against the key; a bad signature is never returned.
fn verified(
    key: &KeyRecord,
    results: &[SignatureResult],
    hash: [u8; 32],
) -> Result<Signature, CoordError> {
    let failed = |why: &str| CoordError::SigningFailed(why.to_string());
    let first = results
        .first()
        .ok_or_else(|| failed("no node returned a signature"))?;
    if results.iter().any(|r| r != first) || first.signed_hash != hash {
        return Err(failed("the nodes returned different signatures or hashes"));
    }
    let signature = Signature::new(
        first
            .r
            .as_slice()
            .try_into()
            .map_err(|_| failed("r is not 32 bytes"))?,
        first
            .s
            .as_slice()
            .try_into()
            .map_err(|_| failed("s is not 32 bytes"))?,
        u8::try_from(first.recovery_id).map_err(|_| failed("bad recovery id"))?,
    )
    .map_err(|e| CoordError::SigningFailed(e.to_string()))?;
    let verifying_key =
        k256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_key).map_err(|_| {
            CoordError::config(
                "registry",
                format!("public key of `{}` is invalid", key.key_id),
            )
        })?;
    if !signature.verify(&hash, &verifying_key) {
        return Err(failed("the signature does not verify against the key"));
    }
    Ok(signature)
}
