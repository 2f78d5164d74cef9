use thiserror::Error;
use tonic::{Code, Status};

/// What went wrong, sorted by what the caller should do about it.
#[derive(Debug, Clone, Error)]
pub enum ClientError {
    /// A policy rule refused the request; the message names the rule and the values. Do not
    /// retry the same request.
    #[error("refused: {0}")]
    PolicyRefused(String),
    /// The key policy parked the request for human approval. Once approvers approve
    /// `approval_id`, retry with the same request id; rejection or expiry is final
    /// ([`ClientError::Other`] with `FailedPrecondition`).
    #[error("{message}")]
    ApprovalRequired {
        approval_id: String,
        expires_at_unix: i64,
        message: String,
    },
    /// The key's requests-per-minute budget is used up; retry later.
    #[error("rate limited: {0}")]
    RateLimited(String),
    /// The API key lacks the scope or the binding for this call.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The API key expired: an operator must issue a new one.
    #[error("API key expired: {0}")]
    KeyExpired(String),
    /// Missing, wrong, rotated-out or revoked API key.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// Fewer than two signer nodes are reachable, or the service is down; retried already.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// The client's own configuration (endpoint, CA, API key shape).
    #[error("client configuration: {0}")]
    Config(String),
    /// The reply did not check out (it never should): do not use it.
    #[error("bad reply from the service: {0}")]
    BadReply(String),
    #[error("{code:?}: {message}")]
    Other { code: Code, message: String },
}

impl From<Status> for ClientError {
    fn from(status: Status) -> Self {
        let message = status.message().to_string();
        if status.code() == Code::FailedPrecondition
            && let Some(required) = shardsign_proto::rpc::approval_required(status.details())
        {
            return ClientError::ApprovalRequired {
                approval_id: required.approval_id,
                expires_at_unix: required.expires_at_unix,
                message,
            };
        }
        match status.code() {
            Code::PermissionDenied if message.contains("policy ") => {
                ClientError::PolicyRefused(message)
            }
            Code::PermissionDenied => ClientError::PermissionDenied(message),
            Code::ResourceExhausted => ClientError::RateLimited(message),
            Code::Unauthenticated if message.contains("expired") => {
                ClientError::KeyExpired(message)
            }
            Code::Unauthenticated => ClientError::Unauthenticated(message),
            Code::Unavailable => ClientError::Unavailable(message),
            Code::DeadlineExceeded => ClientError::DeadlineExceeded(message),
            Code::InvalidArgument => ClientError::InvalidArgument(message),
            Code::NotFound => ClientError::NotFound(message),
            code => ClientError::Other { code, message },
        }
    }
}

impl ClientError {
    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Unavailable(_)
                | ClientError::RateLimited(_)
                | ClientError::DeadlineExceeded(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardsign_proto::v1::ApprovalRequired;

    #[test]
    fn a_parked_request_becomes_approval_required_with_its_id() {
        let message = "approval required: 2 ETH > 1 ETH (require_approval_above; approval ab12)";
        let required = ApprovalRequired {
            approval_id: "ab12".into(),
            rule: "require_approval_above".into(),
            detail: "2 ETH > 1 ETH".into(),
            expires_at_unix: 1_800_000_000,
        };
        let details = shardsign_proto::rpc::approval_required_details(message, &required);
        let status = Status::with_details(Code::FailedPrecondition, message, details.into());
        match ClientError::from(status) {
            ClientError::ApprovalRequired {
                approval_id,
                expires_at_unix,
                message: shown,
            } => {
                assert_eq!(approval_id, "ab12");
                assert_eq!(expires_at_unix, 1_800_000_000);
                assert_eq!(shown, message);
            }
            other => panic!("{other:?}"),
        }
        // A final answer (rejected, expired) carries no details: not retryable, not parked.
        let rejected = ClientError::from(Status::failed_precondition("approval ab12 was rejected"));
        assert!(matches!(
            rejected,
            ClientError::Other {
                code: Code::FailedPrecondition,
                ..
            }
        ));
        assert!(!rejected.is_retryable());
    }
}
