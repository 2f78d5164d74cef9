use thiserror::Error;

/// A policy definition that cannot be accepted; names the field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    #[error("policy {field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("signed policy: {0}")]
    Signature(&'static str),
    #[error("signed policy: {0}")]
    Malformed(String),
    /// A membership change the nodes refuse (unsigned, under quorum, not exactly one change, not
    /// newer, ...).
    #[error("membership statement: {0}")]
    Membership(String),
    /// An approval the nodes refuse (for another request, expired, under quorum, ...).
    #[error("approval: {0}")]
    Approval(String),
    /// A policy file that is not the expected JSON.
    #[error("policy file: {0}")]
    File(String),
}

impl PolicyError {
    pub(crate) fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        PolicyError::Invalid {
            field,
            problem: problem.into(),
        }
    }
}

/// A request the policy does not allow: the rule and the values, e.g.
/// `max_value_per_tx: 2.5 ETH > 1 ETH`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("policy {rule}: {detail}")]
pub struct Refusal {
    pub rule: &'static str,
    pub detail: String,
}

impl Refusal {
    pub fn new(rule: &'static str, detail: impl Into<String>) -> Self {
        Refusal {
            rule,
            detail: detail.into(),
        }
    }
}
