//! Each coordinator error as one gRPC status, with the message a caller can act on. Internal
//! failures are logged here and reach the caller only as "see the coordinator's log".

use tonic::Status;

use crate::error::CoordError;

/// What a caller sees while the coordinator's disk is full: retryable, and what to do.
pub const DISK_FULL: &str = "coordinator unavailable: disk full (its registry cannot record the request, so nothing was signed or stored); free space on its data directory and retry: it resumes without a restart";

impl From<CoordError> for Status {
    fn from(error: CoordError) -> Status {
        let message = error.to_string();
        if error.is_disk_full() {
            tracing::error!(error = %message, "disk full: the registry cannot write; free space on the data directory");
            return Status::unavailable(DISK_FULL);
        }
        match error {
            CoordError::ApprovalRequired {
                approval_id,
                rule,
                detail,
                expires_at_unix,
            } => {
                let required = shardsign_proto::v1::ApprovalRequired {
                    approval_id,
                    rule,
                    detail,
                    expires_at_unix,
                };
                let details = shardsign_proto::rpc::approval_required_details(&message, &required);
                let mut status =
                    Status::with_details(tonic::Code::FailedPrecondition, message, details.into());
                if let Ok(value) = required.approval_id.parse() {
                    status
                        .metadata_mut()
                        .insert(shardsign_proto::APPROVAL_ID_HEADER, value);
                }
                status
            }
            CoordError::ApprovalFinal { .. } => Status::failed_precondition(message),
            CoordError::ApprovalNotFound(_) => Status::not_found(message),
            CoordError::Invalid(_) => Status::invalid_argument(message),
            CoordError::KeyNotFound(_) | CoordError::ApiKeyNotFound(_) => {
                Status::not_found(message)
            }
            CoordError::KeyDisabled(_)
            | CoordError::NoKeyPolicy(_)
            | CoordError::PolicyExpired { .. }
            | CoordError::KeygenRefused(_)
            | CoordError::RefreshRefused(_)
            | CoordError::ReplaceFailed(_) => Status::failed_precondition(message),
            CoordError::Unauthenticated(_) => Status::unauthenticated(message),
            CoordError::PolicyRefused(_) => Status::permission_denied(message),
            CoordError::RateLimited(_) => Status::resource_exhausted(message),
            CoordError::InvalidPolicy(_) => Status::invalid_argument(message),
            CoordError::KeyExists(_) | CoordError::RequestIdReused(_) => {
                Status::already_exists(message)
            }
            CoordError::Unavailable(_) => Status::unavailable(message),
            CoordError::DeadlineExceeded(_) => Status::deadline_exceeded(message),
            CoordError::PermissionDenied(_) => Status::permission_denied(message),
            CoordError::NodeRefused { code, .. } => Status::new(code, message),
            CoordError::SigningFailed(_)
            | CoordError::KeygenFailed(_)
            | CoordError::RefreshFailed(_) => Status::aborted(message),
            // A database that cannot be reached is a retry elsewhere or later, not a bug.
            CoordError::Postgres(error)
                if error.is_closed()
                    || std::error::Error::source(&error)
                        .is_some_and(|source| source.is::<std::io::Error>()) =>
            {
                tracing::error!(error = %message, "the registry database is unreachable");
                Status::unavailable(
                    "the coordinator cannot reach its database; retry, or use another coordinator",
                )
            }
            CoordError::Store(_)
            | CoordError::Postgres(_)
            | CoordError::Commit(_)
            | CoordError::Config { .. } => {
                tracing::error!(error = %message, "internal error");
                Status::internal("internal error in the coordinator; see its log")
            }
        }
    }
}
