//! Human approval on the coordinator: parks a request the signing key's policy sends to
//! approvers, hands in approvers' signed decisions, and gives the nodes the gathered approval
//! when the caller retries. The coordinator's part is bookkeeping: the nodes verify the
//! approvers' signatures and quorum themselves (`shardsign_policy::approval`), so nothing here
//! can approve a request on its own.

use std::sync::Arc;

use prost::Message as _;
use shardsign_policy::approval::{self, ApprovalRequest};
use shardsign_policy::{Refusal, VerifiedKeyPolicy};
use shardsign_proto::v1 as api;
use shardsign_request::Payload;

use crate::access::apikeys::ApiKey;
use crate::access::auth::Caller;
use crate::audit::AuditEntry;
use crate::error::CoordError;
use crate::metrics::CoordinatorMetrics;
use crate::registry::{ApprovalRow, ApprovalState, KeyRecord, Registry, now_ms, unix_now};
use crate::signing::key_policies::KeyPolicies;

/// How long a decided request stays listed (the audit log keeps its story for good).
pub const DECIDED_RETENTION_SECS: i64 = 30 * 86_400;
/// Most parked requests one list returns.
pub const MAX_LIST: u32 = 1000;

pub struct Approvals {
    registry: Arc<Registry>,
    key_policies: Arc<KeyPolicies>,
    metrics: Arc<CoordinatorMetrics>,
    cluster_id: String,
}

/// The approval id given by a caller: 64 hex digits (the request hash).
fn parse_id(text: &str) -> Result<[u8; 32], CoordError> {
    let mut out = [0u8; 32];
    if text.len() != 64 || hex::decode_to_slice(text, &mut out).is_err() {
        return Err(CoordError::invalid(
            "approval_id",
            "expected 64 hex digits (as `shardsign approvals list` shows)",
        ));
    }
    Ok(out)
}

/// The final answer for a decided request.
fn final_error(row: &ApprovalRow) -> CoordError {
    let outcome = match row.state {
        ApprovalState::Rejected => format!(
            "was rejected by approver {}{}",
            short(&row.rejected_by),
            if row.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", shardsign_request::Printable(&row.reason))
            }
        ),
        _ => format!(
            "expired at {} before a quorum approved it",
            shardsign_serve::utc(row.expires_at * 1000)
        ),
    };
    CoordError::ApprovalFinal {
        approval_id: row.approval_id.clone(),
        outcome,
    }
}

/// An approver's key as logs show it.
fn short(key_hex: &str) -> &str {
    &key_hex[..key_hex.len().min(16)]
}

impl Approvals {
    pub fn new(
        registry: Arc<Registry>,
        key_policies: Arc<KeyPolicies>,
        metrics: Arc<CoordinatorMetrics>,
        cluster_id: String,
    ) -> Self {
        Approvals {
            registry,
            key_policies,
            metrics,
            cluster_id,
        }
    }

    fn audit(&self, entry: AuditEntry) {
        if let Err(error) = self.registry.append_audit(AuditEntry {
            at_ms: now_ms(),
            ..entry
        }) {
            tracing::error!(%error, "could not audit an approval event");
        }
    }

    fn refresh_pending(&self) {
        match self.registry.pending_approvals() {
            Ok(count) => self.metrics.set_approvals_pending(count),
            Err(error) => tracing::error!(%error, "could not count pending approvals"),
        }
    }

    /// A request over an approval threshold (`needed`): the gathered approval for the nodes
    /// when a quorum approved it; otherwise it is parked (first time) or stays parked, and the
    /// caller is told to wait — or that the answer is final (rejected, expired).
    pub fn gate(
        &self,
        api_key: &ApiKey,
        key: &KeyRecord,
        policy: &VerifiedKeyPolicy,
        payload: &Payload,
        request_id: &str,
        needed: Refusal,
    ) -> Result<Vec<u8>, CoordError> {
        let approvers = policy.rules.approvers.as_ref().ok_or_else(|| {
            CoordError::config("key policy", "an approval threshold without approvers")
        })?;
        let request = ApprovalRequest::new(&key.key_id, payload, request_id);
        let approval_id = request.id();
        let now = unix_now();
        let row = match self.registry.get_approval(&approval_id)? {
            Some(row) => row,
            None => {
                let expires_at = now + i64::from(approvers.valid_secs());
                let statement = request.statement(
                    &self.cluster_id,
                    api::approval::Decision::Approve,
                    "",
                    now,
                    expires_at,
                );
                let parked = ApprovalRow {
                    approval_id: approval_id.clone(),
                    state: ApprovalState::Pending,
                    key_id: key.key_id.clone(),
                    request_id: request_id.to_string(),
                    api_key_id: api_key.id.clone(),
                    chain_id: request.chain_id,
                    rule: needed.rule.to_string(),
                    detail: needed.detail.clone(),
                    created_at: now,
                    expires_at,
                    payload_kind: payload.kind().name().to_string(),
                    payload: payload.encode(),
                    statement: statement.encode_to_vec(),
                    signatures: Vec::new(),
                    approvers: approvers.public_keys(),
                    quorum: approvers.quorum() as u32,
                    decided_at: 0,
                    rejected_by: String::new(),
                    reason: String::new(),
                };
                let (row, new) = self.registry.park_approval(&parked)?;
                if new {
                    self.parked(&row);
                }
                row
            }
        };
        if row.api_key_id != api_key.id {
            // The request hash does not name the caller; the coordinator keeps one caller's
            // approval to that caller.
            return Err(CoordError::PermissionDenied(format!(
                "approval {approval_id} was asked for by another API key; use a fresh request_id"
            )));
        }
        match row.state {
            ApprovalState::Pending if row.expires_at <= now => {
                self.sweep();
                Err(final_error(&ApprovalRow {
                    state: ApprovalState::Expired,
                    ..row
                }))
            }
            ApprovalState::Pending => Err(CoordError::ApprovalRequired {
                approval_id,
                rule: row.rule,
                detail: format!(
                    "{} (approved by {} of the {} needed)",
                    row.detail,
                    row.signatures.len(),
                    row.quorum
                ),
                expires_at_unix: row.expires_at,
            }),
            ApprovalState::Approved if row.expires_at <= now => Err(CoordError::ApprovalFinal {
                approval_id,
                outcome: format!(
                    "was approved but not used before it expired at {}",
                    shardsign_serve::utc(row.expires_at * 1000)
                ),
            }),
            ApprovalState::Approved => Ok(row.signed_statement()),
            ApprovalState::Rejected | ApprovalState::Expired => Err(final_error(&row)),
        }
    }

    /// A new parked request: audited, counted, and logged for the approvers' alerting.
    fn parked(&self, row: &ApprovalRow) {
        self.metrics.approval("requested");
        self.refresh_pending();
        tracing::warn!(
            approval_id = %row.approval_id,
            key_id = %row.key_id,
            api_key_id = %row.api_key_id,
            rule = %row.rule,
            detail = %row.detail,
            expires = %shardsign_serve::utc(row.expires_at * 1000),
            "a signing request waits for human approval: `shardsign approvals show {}`",
            row.approval_id
        );
        self.audit(AuditEntry {
            api_key_id: row.api_key_id.clone(),
            operation: "approval_requested".into(),
            key_id: row.key_id.clone(),
            decision: "pending".into(),
            detail: format!(
                "{}: {} (approval {})",
                row.rule, row.detail, row.approval_id
            ),
            request_id: row.request_id.clone(),
            ..Default::default()
        });
    }

    /// Expires every pending request past its time; each one audited and counted.
    pub fn sweep(&self) {
        match self.registry.expire_approvals(unix_now()) {
            Ok(expired) => {
                for row in &expired {
                    self.metrics.approval("expired");
                    tracing::info!(approval_id = %row.approval_id, key_id = %row.key_id, "a parked request expired without a quorum");
                    self.audit(AuditEntry {
                        api_key_id: row.api_key_id.clone(),
                        operation: "approval_expired".into(),
                        key_id: row.key_id.clone(),
                        decision: "expired".into(),
                        detail: format!(
                            "approval {} expired with {} of {} signatures",
                            row.approval_id,
                            row.signatures.len(),
                            row.quorum
                        ),
                        request_id: row.request_id.clone(),
                        ..Default::default()
                    });
                }
            }
            Err(error) => tracing::error!(%error, "could not expire parked requests"),
        }
        self.refresh_pending();
    }

    pub fn list(
        &self,
        request: &api::ListApprovalsRequest,
    ) -> Result<Vec<ApprovalRow>, CoordError> {
        self.sweep();
        let limit = match request.limit {
            0 => 100,
            limit => limit.min(MAX_LIST),
        };
        let key_id = if request.key_id.is_empty() {
            None
        } else {
            Some(shardsign_request::KeyId::field(&request.key_id)?)
        };
        self.registry.list_approvals(
            request.include_decided,
            key_id.as_ref().map(|k| k.as_str()),
            limit,
        )
    }

    pub fn get(&self, approval_id: &str) -> Result<ApprovalRow, CoordError> {
        parse_id(approval_id)?;
        self.sweep();
        self.registry
            .get_approval(approval_id)?
            .ok_or_else(|| CoordError::ApprovalNotFound(approval_id.to_string()))
    }

    /// Hands in an approver's decision: a signature on the parked request's statement (approve)
    /// or a signed REJECT statement for it. Only signatures by the approvers of the key's
    /// current policy count, as on the nodes.
    pub fn decide(
        &self,
        caller: &Caller,
        request: &api::DecideApprovalRequest,
    ) -> Result<ApprovalRow, CoordError> {
        let expected = parse_id(&request.approval_id)?;
        if request.signed_statement.len() > approval::MAX_STATEMENT_BYTES {
            return Err(CoordError::invalid(
                "signed_statement",
                format!("at most {} bytes", approval::MAX_STATEMENT_BYTES),
            ));
        }
        let envelope =
            api::SignedStatement::decode(request.signed_statement.as_slice()).map_err(|_| {
                CoordError::invalid("signed_statement", "not an encoded SignedStatement")
            })?;
        let row = self.get(&request.approval_id)?;
        if row.state != ApprovalState::Pending {
            return Err(CoordError::ApprovalFinal {
                approval_id: row.approval_id.clone(),
                outcome: format!("is already {}", row.state.as_str()),
            });
        }
        let policy = self
            .key_policies
            .get(&row.key_id)
            .ok_or_else(|| CoordError::NoKeyPolicy(row.key_id.clone()))?;
        let approvers = policy.rules.approvers.as_ref().ok_or_else(|| {
            CoordError::PermissionDenied(format!(
                "the policy of key `{}` (v{}) lists no approvers any more",
                row.key_id, policy.version
            ))
        })?;
        let now = unix_now();
        let checked = approvers
            .check(&self.cluster_id, &envelope, &expected, now)
            .map_err(|e| CoordError::invalid("signed_statement", e.to_string()))?;
        let Some(signer) = checked.signers.first().cloned() else {
            return Err(CoordError::PermissionDenied(format!(
                "no valid signature by an approver of key `{}` (policy v{} lists {} approvers)",
                row.key_id,
                policy.version,
                approvers.public_keys().len()
            )));
        };
        let decided = match checked.decision {
            api::approval::Decision::Reject => {
                self.registry.decide_approval(&row.approval_id, |row| {
                    Ok(ApprovalRow {
                        state: ApprovalState::Rejected,
                        decided_at: now,
                        rejected_by: signer.clone(),
                        reason: checked.reason.clone(),
                        ..row
                    })
                })?
            }
            _ => {
                if envelope.statement != row.statement {
                    return Err(CoordError::invalid(
                        "signed_statement",
                        "an approval signs the parked request's own statement (as `shardsign approvals approve` does)",
                    ));
                }
                self.registry.decide_approval(&row.approval_id, |mut row| {
                    for signature in &envelope.signatures {
                        let key = hex::encode(&signature.public_key);
                        let new = !row
                            .signatures
                            .iter()
                            .any(|s| s.public_key == signature.public_key);
                        if new && checked.signers.contains(&key) {
                            row.signatures.push(signature.clone());
                        }
                    }
                    let gathered = api::SignedStatement {
                        statement: row.statement.clone(),
                        signatures: row.signatures.clone(),
                    };
                    let valid = approvers
                        .check(&self.cluster_id, &gathered, &expected, now)
                        .map(|c| c.signers.len())
                        .unwrap_or(0);
                    if valid >= approvers.quorum() {
                        row.state = ApprovalState::Approved;
                        row.decided_at = now;
                    }
                    Ok(row)
                })?
            }
        };
        let (outcome, detail) = match decided.state {
            ApprovalState::Approved => ("approved", "a quorum approved".to_string()),
            ApprovalState::Rejected => (
                "rejected",
                format!(
                    "rejected: {}",
                    shardsign_request::Printable(&decided.reason)
                ),
            ),
            _ => (
                "signed",
                format!(
                    "{} of {} approvals",
                    decided.signatures.len(),
                    decided.quorum
                ),
            ),
        };
        self.metrics.approval(outcome);
        self.refresh_pending();
        tracing::info!(approval_id = %decided.approval_id, approver = %short(&signer), outcome, "approval decision");
        self.audit(caller.audit_entry(AuditEntry {
            operation: format!("approval_{outcome}"),
            key_id: decided.key_id.clone(),
            decision: decided.state.as_str().into(),
            detail: format!(
                "approval {} by approver {}: {detail}",
                decided.approval_id,
                short(&signer)
            ),
            request_id: decided.request_id.clone(),
            ..Default::default()
        }));
        Ok(decided)
    }
}
