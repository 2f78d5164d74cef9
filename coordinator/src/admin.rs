//! The Admin API's operations besides the ceremony: API keys (create, list, rotate, revoke,
//! policy), signing key policies (store, forward to the nodes), keys (disable), the audit log
//! (verify, list) and cluster status. Every change is itself written to the audit log.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use shardsign_policy::{Rules, RulesFor};
use shardsign_proto::node::v1::PutPolicyRequest;
use shardsign_proto::v1 as api;

use shardsign_proto::node::v1::{GetIdentityRequest, Identity};
use shardsign_request::KeyId;

use crate::MAX_LABEL_LEN;
use crate::access::apikeys::{self, ApiKey, Scopes};
use crate::access::auth::{Authenticator, Caller, Principal};
use crate::access::ratelimit::RateLimiter;
use crate::audit::{AuditEntry, Decision};
use crate::config::NodeConfig;
use crate::error::CoordError;
use crate::metrics::CoordinatorMetrics;
use crate::registry::{PolicyUpdate, Registry, now_ms, unix_now};
use crate::signing::bans::Ban;
use crate::signing::key_policies::KeyPolicies;
use crate::signing::pool::NodePool;
use crate::signing::relearn::relearn;

/// Default grace period of a rotated-out secret.
pub const DEFAULT_GRACE_SECS: i64 = 24 * 60 * 60;
/// Longest grace period.
pub const MAX_GRACE_SECS: i64 = 30 * 24 * 60 * 60;
/// Longest lifetime of an API key.
pub const MAX_LIFETIME_SECS: i64 = 10 * 366 * 24 * 60 * 60;
/// Most signing keys one API key can be bound to.
pub const MAX_BOUND_KEYS: usize = 1000;

/// The signing keys an API key is bound to: listed (bounded, each a key id) or all.
fn check_bindings(request: &api::CreateApiKeyRequest) -> Result<(), CoordError> {
    if request.all_keys && !request.key_ids.is_empty() {
        return Err(CoordError::invalid(
            "key_ids",
            "give key_ids or all_keys = true, not both",
        ));
    }
    if request.key_ids.len() > MAX_BOUND_KEYS {
        return Err(CoordError::invalid(
            "key_ids",
            format!("at most {MAX_BOUND_KEYS} keys"),
        ));
    }
    for id in &request.key_ids {
        KeyId::parse(id).map_err(|e| {
            CoordError::invalid(
                "key_ids",
                format!("`{}` is not a key id ({e})", id.escape_default()),
            )
        })?;
    }
    Ok(())
}

pub struct Admin {
    pub registry: Arc<Registry>,
    pub auth: Arc<Authenticator>,
    pub key_policies: Arc<KeyPolicies>,
    pub pool: Arc<NodePool>,
    /// Admission's limiter: a key whose policy changed or that was revoked starts afresh.
    pub rate: Arc<RateLimiter>,
    pub metrics: Arc<CoordinatorMetrics>,
}

impl Admin {
    /// Appends an administrative action to the audit log.
    pub fn audit_admin<T>(
        &self,
        caller: &Caller,
        operation: &str,
        key_id: &str,
        target: &str,
        outcome: &Result<T, CoordError>,
    ) -> Result<(), CoordError> {
        let (decision, detail) = match outcome {
            Ok(_) => (Decision::Allowed, target.to_string()),
            Err(error) => (Decision::of(error), format!("{target}: {error}")),
        };
        self.registry
            .append_audit(caller.audit_entry(AuditEntry {
                operation: operation.to_string(),
                key_id: key_id.to_string(),
                decision: decision.as_str().to_string(),
                detail,
                ..Default::default()
            }))
            .map(|_| ())
    }

    fn api_key_or_not_found(&self, id: &str) -> Result<Arc<ApiKey>, CoordError> {
        self.auth
            .current(id)
            .ok_or_else(|| CoordError::ApiKeyNotFound(id.to_string()))
    }

    pub fn create_api_key(
        &self,
        caller: &Caller,
        request: api::CreateApiKeyRequest,
    ) -> Result<api::CreateApiKeyResponse, CoordError> {
        if request.label.is_empty()
            || request.label.len() > MAX_LABEL_LEN
            || request.label.chars().any(char::is_control)
        {
            return Err(CoordError::invalid(
                "label",
                format!("expected 1 to {MAX_LABEL_LEN} characters, no control characters"),
            ));
        }
        let scopes = Scopes::parse(&request.scopes)?;
        if matches!(caller.principal, Principal::Bootstrap) && !scopes.admin {
            return Err(CoordError::PermissionDenied(
                "the bootstrap credential may only create an admin API key".into(),
            ));
        }
        check_bindings(&request)?;
        if !(0..=MAX_LIFETIME_SECS).contains(&request.expires_in_seconds) {
            return Err(CoordError::invalid(
                "expires_in_seconds",
                format!("expected 0 (never) to {MAX_LIFETIME_SECS}"),
            ));
        }
        let policy = request.policy.unwrap_or_default();
        let rules = Rules::from_proto(&policy, RulesFor::ApiKey)?;
        let now = now_ms();
        let id = apikeys::new_id();
        let key = ApiKey {
            id: id.clone(),
            label: request.label,
            scopes,
            key_ids: (!request.all_keys)
                .then(|| request.key_ids.into_iter().collect::<BTreeSet<_>>()),
            expires_at_ms: (request.expires_in_seconds > 0)
                .then(|| now + request.expires_in_seconds * 1000),
            created_at_ms: now,
            created_by: caller.id().to_string(),
            revoked_at_ms: None,
            policy: rules.to_proto(RulesFor::ApiKey),
            rules,
            secrets: Vec::new(),
        };
        if matches!(caller.principal, Principal::Bootstrap) {
            // Single-use: spent (on disk) before the key it makes exists.
            self.auth.use_bootstrap(&self.registry)?;
        }
        let (secret, hash) = self.auth.hasher().issue(self.auth.environment(), &id);
        self.registry.insert_api_key(&key, &hash)?;
        let key = self
            .auth
            .refresh(&self.registry, &id)?
            .ok_or_else(|| CoordError::ApiKeyNotFound(id.clone()))?;
        tracing::info!(
            api_key_id = id,
            created_by = caller.id(),
            scopes = key.scopes.to_column(),
            "API key created"
        );
        Ok(api::CreateApiKeyResponse {
            info: Some(key.to_api(now)),
            api_key: secret.0.to_string(),
        })
    }

    pub fn list_api_keys(&self) -> api::ListApiKeysResponse {
        let now = now_ms();
        api::ListApiKeysResponse {
            api_keys: self.auth.all().iter().map(|k| k.to_api(now)).collect(),
        }
    }

    pub fn rotate_api_key(
        &self,
        request: api::RotateApiKeyRequest,
    ) -> Result<api::CreateApiKeyResponse, CoordError> {
        let key = self.api_key_or_not_found(&request.id)?;
        let now = now_ms();
        if key.status(now) != api::ApiKeyStatus::Active {
            return Err(CoordError::PermissionDenied(format!(
                "API key {} is revoked or expired; create a new one instead",
                key.id
            )));
        }
        let grace = request.grace_seconds.unwrap_or(DEFAULT_GRACE_SECS);
        if !(0..=MAX_GRACE_SECS).contains(&grace) {
            return Err(CoordError::invalid(
                "grace_seconds",
                format!("expected 0 to {MAX_GRACE_SECS} (30 days)"),
            ));
        }
        let (secret, hash) = self.auth.hasher().issue(self.auth.environment(), &key.id);
        self.registry
            .rotate_api_key(&key.id, &hash, now, now + grace * 1000)?;
        let key = self
            .auth
            .refresh(&self.registry, &key.id)?
            .ok_or_else(|| CoordError::ApiKeyNotFound(request.id.clone()))?;
        tracing::info!(
            api_key_id = key.id,
            grace_seconds = grace,
            "API key rotated"
        );
        Ok(api::CreateApiKeyResponse {
            info: Some(key.to_api(now)),
            api_key: secret.0.to_string(),
        })
    }

    pub fn revoke_api_key(&self, id: &str) -> Result<api::ApiKeyInfo, CoordError> {
        let key = self.api_key_or_not_found(id)?;
        let now = now_ms();
        self.registry.revoke_api_key(&key.id, now)?;
        self.rate.forget(&key.id);
        self.registry.forget_shared_rate(&key.id)?;
        let key = self
            .auth
            .refresh(&self.registry, &key.id)?
            .ok_or_else(|| CoordError::ApiKeyNotFound(id.to_string()))?;
        tracing::info!(api_key_id = key.id, "API key revoked");
        Ok(key.to_api(now))
    }

    pub fn set_api_key_policy(
        &self,
        request: api::SetApiKeyPolicyRequest,
    ) -> Result<api::ApiKeyInfo, CoordError> {
        let key = self.api_key_or_not_found(&request.id)?;
        let rules = Rules::from_proto(&request.policy.unwrap_or_default(), RulesFor::ApiKey)?;
        self.registry
            .set_api_key_policy(&key.id, &rules.to_proto(RulesFor::ApiKey))?;
        self.rate.forget(&key.id);
        self.registry.forget_shared_rate(&key.id)?;
        let key = self
            .auth
            .refresh(&self.registry, &key.id)?
            .ok_or_else(|| CoordError::ApiKeyNotFound(request.id.clone()))?;
        tracing::info!(api_key_id = key.id, "API key policy replaced");
        Ok(key.to_api(now_ms()))
    }

    /// Verifies, stores and forwards a signed key policy.
    pub async fn set_key_policy(
        &self,
        request: api::SetKeyPolicyRequest,
    ) -> Result<api::SetKeyPolicyResponse, CoordError> {
        use prost::Message;
        let signed = request
            .statement
            .ok_or_else(|| CoordError::invalid("statement", "missing"))?
            .encode_to_vec();
        let policy = self.key_policies.verify(&signed)?;
        if policy.disabled.is_some() {
            return Err(CoordError::invalid(
                "statement",
                "a disable statement goes to DisableKey (shardsign keys disable)",
            ));
        }
        CoordError::if_expired(&policy, unix_now())?;
        let key = self.registry.get_key(&policy.key_id)?;
        if key.disabled {
            return Err(CoordError::KeyDisabled(key.key_id));
        }
        let version = policy.version;
        let (nodes_updated, node_errors) = self.store_and_forward(policy).await?;
        Ok(api::SetKeyPolicyResponse {
            key_id: key.key_id,
            version,
            nodes_updated,
            node_errors,
        })
    }

    /// Stores a verified key statement (refusing one not newer than the one held), then forwards
    /// it to every node. Stored before it is forwarded, so a node that accepted it is never
    /// ahead of the coordinator. Returns the nodes that took it and why the others did not.
    async fn store_and_forward(
        &self,
        statement: shardsign_policy::VerifiedKeyPolicy,
    ) -> Result<(Vec<u32>, Vec<String>), CoordError> {
        match self.registry.put_key_policy(
            &statement.key_id,
            statement.version,
            &statement.signed,
        )? {
            PolicyUpdate::Stored | PolicyUpdate::Unchanged => {}
            PolicyUpdate::NotNewer { held } => {
                return Err(CoordError::invalid(
                    "version",
                    format!(
                        "version {} is not newer than version {held} already set for `{}`; sign it with a higher version",
                        statement.version, statement.key_id
                    ),
                ));
            }
        }
        let statement = Arc::new(statement);
        self.key_policies.insert(statement.clone());
        let mut calls = tokio::task::JoinSet::new();
        for (node, client) in self.pool.clients() {
            let mut client = client.clone();
            let signed = statement.signed.clone();
            calls.spawn(async move {
                let mut request = tonic::Request::new(PutPolicyRequest {
                    signed_policy: signed,
                });
                request.set_timeout(Duration::from_secs(5));
                (node, client.put_policy(request).await)
            });
        }
        let (mut updated, mut errors) = (Vec::new(), Vec::new());
        while let Some(Ok((node, outcome))) = calls.join_next().await {
            match outcome {
                Ok(_) => updated.push(u32::from(node)),
                Err(status) => errors.push(format!("node {node}: {}", status.message())),
            }
        }
        updated.sort_unstable();
        errors.sort();
        tracing::info!(
            key_id = statement.key_id,
            version = statement.version,
            disabled = statement.disabled.is_some(),
            nodes = ?updated,
            "key statement set"
        );
        Ok((updated, errors))
    }

    pub fn get_key_policy(&self, key_id: &str) -> Result<api::KeyPolicyRecord, CoordError> {
        self.key_policies
            .get(key_id)
            .map(|policy| policy.to_record())
            .ok_or_else(|| CoordError::NoKeyPolicy(key_id.to_string()))
    }

    pub fn verify_audit(&self) -> Result<api::VerifyAuditResponse, CoordError> {
        let report = self.registry.verify_audit()?;
        let (first_broken_seq, problem) = report.broken.unwrap_or((0, String::new()));
        Ok(api::VerifyAuditResponse {
            intact: first_broken_seq == 0,
            records: report.records,
            first_broken_seq,
            problem,
            head_hash: report.head_hash.to_vec(),
        })
    }

    pub fn list_audit(
        &self,
        request: api::ListAuditRequest,
    ) -> Result<api::ListAuditResponse, CoordError> {
        let limit = match request.limit {
            0 => 100,
            n if n <= 1000 => n,
            _ => return Err(CoordError::invalid("limit", "expected 1 to 1000")),
        };
        let records = self.registry.list_audit(request.after_seq, limit)?;
        Ok(api::ListAuditResponse {
            records: records
                .into_iter()
                .map(|r| api::AuditRecord {
                    seq: r.seq,
                    at_unix_ms: r.entry.at_ms,
                    api_key_id: r.entry.api_key_id,
                    operation: r.entry.operation,
                    key_id: r.entry.key_id,
                    decision: r.entry.decision,
                    detail: r.entry.detail,
                    tx_hash: r.entry.tx_hash,
                    request_id: r.entry.request_id,
                    peer: r.entry.peer,
                    prev_hash: r.prev_hash,
                    hash: r.hash,
                })
                .collect(),
        })
    }

    /// Disables a key here; with an operator-signed disable statement, also on every node
    /// (stored first, so the statement survives a coordinator restart and is never lost).
    pub async fn disable_key(
        &self,
        request: api::DisableKeyRequest,
    ) -> Result<api::DisableKeyResponse, CoordError> {
        use prost::Message;
        let key_id = self.registry.get_key(&request.key_id)?.key_id;
        let (nodes_updated, node_errors) = match request.statement {
            None => (Vec::new(), Vec::new()),
            Some(statement) => {
                let statement = self.key_policies.verify(&statement.encode_to_vec())?;
                if statement.disabled.is_none() || statement.key_id != key_id {
                    return Err(CoordError::invalid(
                        "statement",
                        format!("expected a disable statement for `{key_id}`"),
                    ));
                }
                self.store_and_forward(statement).await?
            }
        };
        let key = self.registry.disable_key(&key_id)?;
        tracing::info!(key_id, nodes = ?nodes_updated, "key disabled");
        Ok(api::DisableKeyResponse {
            key: Some(key.to_api()),
            nodes_updated,
            node_errors,
        })
    }

    /// Every node's identity, keys and bans (bans learned here stop their pairs being
    /// scheduled), and whether the cluster can sign and create keys.
    pub async fn cluster_status(&self) -> api::ClusterStatusResponse {
        let mut calls = tokio::task::JoinSet::new();
        for node in self.pool.nodes() {
            let mut client = node.client.clone();
            let config = node.config.clone();
            calls.spawn(async move {
                let mut request = tonic::Request::new(GetIdentityRequest {});
                request.set_timeout(Duration::from_secs(2));
                (config, client.get_identity(request).await)
            });
        }
        let mut nodes = Vec::new();
        while let Some(Ok((config, outcome))) = calls.join_next().await {
            nodes.push(self.node_status(&config, outcome.map(|r| r.into_inner())));
        }
        nodes.sort_by_key(|n| n.node_id);
        // A node restored from a backup signs nothing until it re-learns: teach it now.
        let mut warnings = self.key_policies.expiry_warnings(unix_now());
        let clients = self.pool.clients();
        for status in nodes
            .iter_mut()
            .filter(|n| n.reachable && n.awaiting_relearn)
        {
            let node = status.node_id as u8;
            let relearned = relearn(
                &self.registry,
                &self.metrics,
                &clients,
                node,
                Duration::from_secs(5),
            )
            .await;
            match relearned {
                Ok(_) => {
                    status.awaiting_relearn = false;
                    warnings.push(format!(
                        "node {node} was restored from a backup and has now re-learned the cluster's state from both peers (see the audit log: node_relearned)"
                    ));
                }
                Err(reason) => warnings.push(format!(
                    "node {node} was restored from a backup and signs nothing until it re-learns from both peers: {reason}"
                )),
            }
        }
        let up = |id: u8| {
            nodes
                .iter()
                .any(|n| n.reachable && !n.awaiting_relearn && n.node_id == u32::from(id))
        };
        let can_sign = self
            .pool
            .candidate_pairs()
            .iter()
            .any(|pair| pair.iter().all(|id| up(*id)));
        let can_create_keys =
            [1, 2, 3].iter().all(|id| up(*id)) && self.pool.bans().all().is_empty();
        api::ClusterStatusResponse {
            can_sign,
            can_create_keys,
            nodes,
            warnings,
        }
    }

    /// One node's status from its `GetIdentity` answer; its bans are learned on the way.
    fn node_status(
        &self,
        config: &NodeConfig,
        outcome: Result<Identity, tonic::Status>,
    ) -> api::NodeStatus {
        let mut status = api::NodeStatus {
            node_id: u32::from(config.node_id),
            address: config.address.clone(),
            ..Default::default()
        };
        let identity = match outcome {
            Ok(identity) => identity,
            Err(error) => {
                status.error = error.message().to_string();
                return status;
            }
        };
        status.version = identity.version;
        status.key_count = identity.key_count;
        status.membership_version = identity.membership_version;
        status.awaiting_relearn = !identity.relearn_challenge.is_empty();
        status.fingerprint = identity.fingerprint.clone();
        match &config.fingerprint {
            Some(expected) if *expected != identity.fingerprint => {
                status.error = format!(
                    "identity fingerprint {} does not match the configured {expected}",
                    identity.fingerprint
                );
                return status;
            }
            _ if identity.node_id != u32::from(config.node_id) => {
                status.error = format!(
                    "the node at this address says it is node {}",
                    identity.node_id
                );
                return status;
            }
            _ => status.reachable = true,
        }
        for ban in identity.bans {
            let Ok(banned) = u8::try_from(ban.node_id) else {
                continue;
            };
            self.pool.bans().learn(Ban {
                reporter: config.node_id,
                banned,
                reason: ban.reason.clone(),
                at_ms: ban.at_unix_ms,
            });
            status.bans.push(api::NodeBan {
                banned_node_id: ban.node_id,
                reason: ban.reason,
                at_unix_ms: ban.at_unix_ms,
            });
        }
        status
    }
}
