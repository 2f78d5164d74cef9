//! The audit log as the coordinator uses it: the record format and chain are
//! `shardsign-audit`'s; what a request's outcome is called is decided here.

pub use shardsign_audit::{
    AuditEntry, AuditReport, GENESIS, MAX_DETAIL_LEN, MAX_ID_LEN, StoredRecord, chain_hash, verify,
    verify_continuing,
};

/// What happened to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// A rule said no (policy, scope, binding, rate).
    Refused,
    /// It was allowed but did not complete (nodes unavailable, bad input, ...).
    Failed,
}

impl Decision {
    /// How a request that ended in `error` is recorded: refused by a rule, or failed.
    pub fn of(error: &crate::error::CoordError) -> Decision {
        if error.is_refusal() {
            Decision::Refused
        } else {
            Decision::Failed
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Refused => "refused",
            Decision::Failed => "failed",
        }
    }
}
