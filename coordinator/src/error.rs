//! The coordinator's errors; `api::status` maps each to one gRPC status.

use shardsign_request::RequestError;
use thiserror::Error;
use tonic::Code;

#[derive(Debug, Error)]
pub enum CoordError {
    /// A malformed request; the message names the field.
    #[error(transparent)]
    Invalid(#[from] RequestError),
    #[error("key `{}` not found", shardsign_request::Printable(.0))]
    KeyNotFound(String),
    #[error("key `{0}` is disabled")]
    KeyDisabled(String),
    #[error("key `{0}` already exists")]
    KeyExists(String),
    #[error(
        "request_id `{}` was already used with a different payload; use a fresh request id",
        shardsign_request::Printable(.0)
    )]
    RequestIdReused(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// A node refused the request itself (policy, bad input it caught): passed through.
    #[error("node {node}: {message}")]
    NodeRefused {
        node: u8,
        code: Code,
        message: String,
    },
    #[error("{0}")]
    Unauthenticated(String),
    /// A policy rule refused the request; the message names the rule and the values.
    #[error(transparent)]
    PolicyRefused(#[from] shardsign_policy::Refusal),
    #[error("{0}")]
    RateLimited(String),
    #[error(
        "key `{0}` has no signed policy; an operator must set one (shardsign policy set) before it can sign"
    )]
    NoKeyPolicy(String),
    #[error(
        "the signed policy of key `{key_id}` (version {version}) expired at {}; renew it with `shardsign policy renew --key {key_id}` (or --all)",
        shardsign_serve::utc(*not_after_unix * 1000)
    )]
    PolicyExpired {
        key_id: String,
        version: u64,
        not_after_unix: i64,
    },
    /// The key policy parks this request until approvers approve it (retry the same request id).
    #[error(
        "approval required: {detail} ({rule}; approval {approval_id}, waiting until {}); an approver runs `shardsign approvals approve {approval_id}`, then retry with the same request_id",
        shardsign_serve::utc(*expires_at_unix * 1000)
    )]
    ApprovalRequired {
        approval_id: String,
        rule: String,
        detail: String,
        expires_at_unix: i64,
    },
    /// Final: an approver rejected the parked request, or it expired; the message says which.
    #[error(
        "approval {approval_id} {outcome}; this request will not be signed (a new request needs a new approval)"
    )]
    ApprovalFinal {
        approval_id: String,
        outcome: String,
    },
    #[error("approval `{}` not found", shardsign_request::Printable(.0))]
    ApprovalNotFound(String),
    #[error("API key `{}` not found", shardsign_request::Printable(.0))]
    ApiKeyNotFound(String),
    #[error(transparent)]
    InvalidPolicy(#[from] shardsign_policy::PolicyError),
    #[error("signing failed: {0}")]
    SigningFailed(String),
    #[error("key generation failed: {0}")]
    KeygenFailed(String),
    /// Key generation cannot run now (e.g. a node has banned another); the message says why.
    #[error("{0}")]
    KeygenRefused(String),
    #[error("refresh failed: {0}")]
    RefreshFailed(String),
    /// A node replacement stopped (a node refused the membership change or a repair step).
    #[error("replace-node failed: {0}")]
    ReplaceFailed(String),
    /// A refresh cannot run now (a node banned, another refresh of the key running, ...).
    #[error("{0}")]
    RefreshRefused(String),
    #[error("registry error: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("registry error: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("registry error: {0}")]
    Commit(#[from] shardsign_groupcommit::CommitFailed),
    #[error("configuration: {setting}: {problem}")]
    Config { setting: String, problem: String },
}

impl From<shardsign_eth::EthError> for CoordError {
    fn from(error: shardsign_eth::EthError) -> Self {
        CoordError::Invalid(RequestError::InvalidTransaction(error))
    }
}

impl CoordError {
    /// `policy` is expired at `now_unix` (the refusal that says how to renew it).
    pub fn if_expired(
        policy: &shardsign_policy::VerifiedKeyPolicy,
        now_unix: i64,
    ) -> Result<(), CoordError> {
        if !policy.expired(now_unix) {
            return Ok(());
        }
        Err(CoordError::PolicyExpired {
            key_id: policy.key_id.clone(),
            version: policy.version,
            not_after_unix: policy.not_after_unix,
        })
    }

    /// Whether the registry could not write for want of space (an operator frees space; the
    /// coordinator resumes without a restart).
    pub fn is_disk_full(&self) -> bool {
        match self {
            CoordError::Store(error) => shardsign_groupcommit::is_disk_full(error),
            CoordError::Commit(failed) => failed.disk_full,
            _ => false,
        }
    }

    /// Whether a rule refused the request (as opposed to it failing): for the audit log.
    pub fn is_refusal(&self) -> bool {
        match self {
            CoordError::PermissionDenied(_)
            | CoordError::PolicyRefused(_)
            | CoordError::RateLimited(_)
            | CoordError::NoKeyPolicy(_)
            | CoordError::PolicyExpired { .. }
            | CoordError::KeyDisabled(_)
            | CoordError::ApprovalRequired { .. }
            | CoordError::ApprovalFinal { .. }
            | CoordError::Unauthenticated(_) => true,
            CoordError::NodeRefused { code, .. } => {
                matches!(code, Code::PermissionDenied | Code::FailedPrecondition)
            }
            _ => false,
        }
    }

    pub(crate) fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        CoordError::Invalid(RequestError::InvalidArgument {
            field,
            problem: problem.into(),
        })
    }

    pub(crate) fn config(setting: impl Into<String>, problem: impl Into<String>) -> Self {
        CoordError::Config {
            setting: setting.into(),
            problem: problem.into(),
        }
    }
}

impl From<shardsign_serve::ServeError> for CoordError {
    fn from(error: shardsign_serve::ServeError) -> Self {
        CoordError::Config {
            setting: error.setting.to_string(),
            problem: error.problem,
        }
    }
}
