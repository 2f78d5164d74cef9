//! The coordinator's metrics (served on `metrics_listen` at `/metrics`): signing requests by
//! operation and decision, signing latency, authentication failures, policy refusals by rule,
//! failed signing attempts by node, node availability and requests in flight.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

pub use shardsign_metrics::Metrics;

pub const AUTH_FAILURES: &str = "shardsign_auth_failures_total";
pub const POLICY_REFUSALS: &str = "shardsign_policy_refusals_total";
pub const SIGN_REQUESTS: &str = "shardsign_sign_requests_total";
pub const SIGN_SECONDS: &str = "shardsign_sign_duration_seconds";
pub const ATTEMPT_FAILURES: &str = "shardsign_signing_attempt_failures_total";
pub const NODE_AVAILABLE: &str = "shardsign_node_available";
pub const IN_FLIGHT: &str = "shardsign_sign_requests_in_flight";
pub const BANNED_PAIRS: &str = "shardsign_banned_pairs";
pub const POLICIES_EXPIRING: &str = "shardsign_key_policies_expiring";
pub const KEY_REFRESHES: &str = "shardsign_key_refreshes_total";
pub const EPOCH_OLDEST: &str = "shardsign_key_epoch_oldest_age_seconds";
pub const EPOCHS_OVERDUE: &str = "shardsign_keys_epoch_overdue";
pub const NODE_REPLACEMENTS: &str = "shardsign_node_replacements_total";
pub const NODE_RELEARNS: &str = "shardsign_node_relearns_total";
pub const APPROVALS: &str = "shardsign_approvals_total";
pub const APPROVALS_PENDING: &str = "shardsign_approvals_pending";

#[derive(Default)]
pub struct CoordinatorMetrics {
    pub registry: Metrics,
    in_flight: AtomicI64,
}

impl CoordinatorMetrics {
    pub fn new() -> Self {
        let metrics = CoordinatorMetrics::default();
        metrics
            .registry
            .describe_counter(AUTH_FAILURES, "Failed authentications (any reason)");
        metrics.registry.describe_counter(
            POLICY_REFUSALS,
            "Requests refused by a policy rule, by rule",
        );
        metrics
            .registry
            .describe_counter(SIGN_REQUESTS, "Signing requests by operation and decision");
        metrics
    }

    /// A refresh ended: `trigger` is `api` or `schedule`, `outcome` `done` or `failed`.
    pub fn refreshed(&self, trigger: &'static str, outcome: &'static str) {
        self.registry.inc(
            KEY_REFRESHES,
            "Key share refreshes, by trigger and outcome",
            &[("trigger", trigger), ("outcome", outcome)],
        );
    }

    /// A `ReplaceNode` ended: `outcome` is `done` or `failed`.
    pub fn replaced(&self, outcome: &'static str) {
        self.registry.inc(
            NODE_REPLACEMENTS,
            "Node replacements (membership change, repair, refresh), by outcome",
            &[("outcome", outcome)],
        );
    }

    /// A restored node's re-learning was attempted: `outcome` is `done` or `failed`.
    pub fn relearned(&self, outcome: &'static str) {
        self.registry.inc(
            NODE_RELEARNS,
            "Restored nodes taught the cluster's state from their peers, by outcome",
            &[("outcome", outcome)],
        );
    }

    pub fn auth_failed(&self) {
        self.registry
            .inc(AUTH_FAILURES, "Failed authentications (any reason)", &[]);
    }

    pub fn refused(&self, rule: &'static str) {
        self.registry.inc(
            POLICY_REFUSALS,
            "Requests refused by a policy rule, by rule",
            &[("rule", rule)],
        );
    }

    /// A finished signing request: `decision` is allowed, refused or failed.
    pub fn signed(&self, operation: &'static str, decision: &'static str, took: Duration) {
        self.registry.inc(
            SIGN_REQUESTS,
            "Signing requests by operation and decision",
            &[("operation", operation), ("decision", decision)],
        );
        if decision == "allowed" {
            self.registry.observe(
                SIGN_SECONDS,
                "Latency of allowed signing requests, end to end in the coordinator",
                &[("operation", operation)],
                took,
            );
        }
    }

    pub fn attempt_failed(&self, node: u8, code: tonic::Code) {
        let node = node.to_string();
        let code = format!("{code:?}");
        self.registry.inc(
            ATTEMPT_FAILURES,
            "Signing attempts that failed on a node (then retried on another pair), by node and code",
            &[("node", &node), ("code", &code)],
        );
    }

    /// A parked request changed state: `outcome` is `requested`, `signed` (one approver's
    /// signature added), `approved`, `rejected` or `expired`.
    pub fn approval(&self, outcome: &'static str) {
        self.registry.inc(
            APPROVALS,
            "Requests parked for human approval and their decisions, by outcome",
            &[("outcome", outcome)],
        );
    }

    /// How many parked requests wait for approvers (alert on it: someone has to look).
    pub fn set_approvals_pending(&self, count: u64) {
        self.registry.set(
            APPROVALS_PENDING,
            "Signing requests parked and waiting for human approval",
            &[],
            count as f64,
        );
    }

    /// How many (node, banned peer) bans the nodes hold, as far as the coordinator knows.
    pub fn set_banned_pairs(&self, count: usize) {
        self.registry.set(
            BANNED_PAIRS,
            "Bans the nodes hold against a peer (node caught cheating); their pairs are not scheduled",
            &[],
            count as f64,
        );
    }

    /// Tracks a request in flight until the guard drops.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    pub fn in_flight_now(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

pub struct InFlight<'a>(&'a CoordinatorMetrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
