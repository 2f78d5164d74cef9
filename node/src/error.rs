//! The node's errors. Messages say what to do and never carry secret material.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("cannot unlock the store: wrong passphrase or key file")]
    WrongKek,
    #[error("the store was initialised with {expected}, but {given} was configured")]
    KekKindMismatch {
        expected: &'static str,
        given: &'static str,
    },
    #[error("store error: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("store error: {0}")]
    Commit(#[from] shardsign_groupcommit::CommitFailed),
    #[error("a store already exists in {0}; refusing to overwrite it")]
    StoreExists(PathBuf),
    #[error("no store in {0}; create one with `shardsign-node init`")]
    NoStore(PathBuf),
    #[error("the store is corrupt or from another version: {0}")]
    Corrupt(String),
    #[error("configuration: {setting}: {problem}")]
    Config { setting: String, problem: String },
    #[error("key `{0}` is not held by this node")]
    KeyNotFound(String),
    #[error("key `{0}` already exists on this node")]
    KeyExists(String),
    #[error("this node aborted the key generation of `{0}`; it never commits it (run a new one)")]
    CeremonyAborted(String),
    #[error(
        "the share of `{0}` from this key generation is sealed (the key is registered); no abort deletes it"
    )]
    KeySealed(String),
    #[error(
        "this node committed its share of `{0}` from this key generation; an abort deletes it only with another node's signed abort receipt"
    )]
    CommittedWithoutReceipt(String),
    /// A session asked for another epoch of the key than this node's current one.
    #[error(
        "key `{key_id}` is at epoch {current} on this node, the session asked for epoch {requested} (a refresh moved the key; the requester's view is behind or ahead)"
    )]
    EpochMismatch {
        key_id: String,
        requested: u64,
        current: u64,
    },
    #[error(
        "a refresh of `{0}` that this node voted for is still open; the coordinator must commit it (with all three votes) or abort it first"
    )]
    RefreshPending(String),
    #[error("this node aborted this refresh of `{0}`; it never votes for it (run a new refresh)")]
    RefreshAborted(String),
    #[error(
        "this node voted for this refresh of `{0}`; an abort deletes its new share only with another node's receipt proving that node never voted"
    )]
    VotedWithoutReceipt(String),
    #[error(
        "this node committed this refresh of `{0}` (it held all three votes); it cannot be aborted"
    )]
    RefreshCommitted(String),
    #[error("this node holds no pending refresh of `{0}` from this session")]
    NoPendingRefresh(String),
    #[error("session id has already been used on this node; the coordinator must make a fresh one")]
    SessionReused,
    /// The session id was made before this node's store was restored from a backup.
    #[error(
        "session id made at {made_ms} ms, before this node's store was restored (at {floor_ms} ms): refused, since it may have been used after the backup was taken; use a fresh session id"
    )]
    SessionBeforeRestore { made_ms: i64, floor_ms: i64 },
    /// A restored node that has not yet re-learned the cluster's state from its peers.
    #[error(
        "this node was restored from a backup (at {}) and signs nothing until it has re-learned the cluster's state (membership, key statements, bans, 24 h ledger) from both peers; the coordinator does this when both peers are reachable (see `shardsign cluster status`)",
        shardsign_serve::utc(*since_ms)
    )]
    RelearnNeeded { since_ms: i64 },
    /// Re-learning could not finish: what is missing or inconsistent, and what to do.
    #[error("re-learning after the restore: {0}")]
    Relearn(String),
    /// The session id's time is outside what the node accepts (see `shardsign_request::session`).
    #[error("{0}")]
    SessionTime(#[from] shardsign_request::SessionIdError),
    #[error("unknown or expired session")]
    UnknownSession,
    #[error("{field}: {problem}")]
    InvalidArgument {
        field: &'static str,
        problem: String,
    },
    #[error("chain id {chain_id} is not allowed for key `{key_id}`")]
    ChainNotAllowed { chain_id: u64, key_id: String },
    #[error(
        "key `{0}` has no signed policy in this request; an operator must set one (shardsign policy set)"
    )]
    PolicyMissing(String),
    #[error("signed policy refused: {0}")]
    PolicyRejected(String),
    #[error(
        "the signed policy of key `{key_id}` (version {version}) expired at {}; the operator renews it with `shardsign policy renew --key {key_id}` (or --all)",
        shardsign_serve::utc(*not_after_unix * 1000)
    )]
    PolicyExpired {
        key_id: String,
        version: u64,
        not_after_unix: i64,
    },
    #[error(
        "the signed statement v{version} of key `{key_id}` is not valid before {}; put it again then",
        shardsign_serve::utc(*not_before_unix * 1000)
    )]
    StatementPremature {
        key_id: String,
        version: u64,
        not_before_unix: i64,
    },
    #[error(
        "key `{key_id}` was disabled by the operator's signed statement v{version} ({reason}); a disabled key is never enabled again"
    )]
    KeyDisabled {
        key_id: String,
        version: u64,
        reason: String,
    },
    /// The key policy's `requests_per_minute` is used up on this node.
    #[error("{0}")]
    RateLimited(shardsign_policy::Refusal),
    /// The policy parks this request for human approval and no valid approval came with it.
    #[error(
        "approval required: {detail} ({rule}); this node refused the approval it was given: {problem}"
    )]
    ApprovalRefused {
        rule: &'static str,
        detail: String,
        problem: String,
    },
    /// The request is outside the key's policy; the message names the rule and the values.
    #[error(transparent)]
    PolicyRefused(#[from] shardsign_policy::Refusal),
    #[error("session aborted: {0}")]
    Aborted(String),
    #[error("session aborted, security event: {0}")]
    Security(String),
    /// The engine caught `culprit` cheating in a check whose failure demands a ban.
    #[error("session aborted: node {culprit} cheated ({reason}); it is banned from now on")]
    Cheated {
        culprit: shardsign_tss::PartyId,
        reason: String,
    },
    /// A session with a peer this node has banned.
    #[error(
        "node {me} has banned node {peer} ({reason} at {}); only replacing node {peer} (a membership change) ends the ban",
        shardsign_serve::utc(*at_ms)
    )]
    Banned {
        me: shardsign_tss::PartyId,
        peer: shardsign_tss::PartyId,
        reason: String,
        at_ms: i64,
    },
    #[error("{0} sessions are in flight, the most this node runs at once; retry later")]
    Busy(usize),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl NodeError {
    /// Whether the store could not write for want of space (the node resumes without a restart
    /// once space is freed).
    pub fn is_disk_full(&self) -> bool {
        match self {
            NodeError::Store(error) => shardsign_groupcommit::is_disk_full(error),
            NodeError::Commit(failed) => failed.disk_full,
            _ => false,
        }
    }

    pub(crate) fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        NodeError::InvalidArgument {
            field,
            problem: problem.into(),
        }
    }

    pub(crate) fn config(setting: impl Into<String>, problem: impl Into<String>) -> Self {
        NodeError::Config {
            setting: setting.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        NodeError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<shardsign_serve::ServeError> for NodeError {
    fn from(error: shardsign_serve::ServeError) -> Self {
        NodeError::Config {
            setting: error.setting.to_string(),
            problem: error.problem,
        }
    }
}
