//! Why a request is not a valid signing request; every variant names the field.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    #[error("{field}: {problem}")]
    InvalidArgument {
        field: &'static str,
        problem: String,
    },
    /// The transaction is malformed; the message names the field.
    #[error(transparent)]
    InvalidTransaction(#[from] shardsign_eth::EthError),
}

impl RequestError {
    pub(crate) fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        RequestError::InvalidArgument {
            field,
            problem: problem.into(),
        }
    }
}
