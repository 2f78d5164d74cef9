//! The node's own check of each key's operator-signed statements. The coordinator forwards the
//! signed policy with every signing request; this node verifies it against the operator's public
//! policy key, keeps the newest statement per key (persisted, so a restart cannot roll it back),
//! refuses an older or conflicting one, and checks the request against it. A compromised
//! coordinator can therefore not make this node sign what the policy forbids. A disable statement
//! (delivered by the coordinator or through the local admin socket) is final: from then on the
//! key signs nothing here and no later statement for it is accepted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use shardsign_policy::{PolicyVerifier, VerifiedKeyPolicy};

use crate::error::NodeError;
use crate::store::Store;

pub struct PolicyBook {
    verifier: Option<PolicyVerifier>,
    cluster_id: String,
    /// Verified policies by key id; checked against the store's copy on first use.
    cache: Mutex<HashMap<String, Arc<VerifiedKeyPolicy>>>,
    /// Serialises the version check, the store write and the cache update of a new policy, so
    /// that two updates racing cannot leave an older version in force (the store alone keeps the
    /// newest; the cache would keep whichever wrote last).
    update: Mutex<()>,
}

impl PolicyBook {
    pub fn new(verifier: Option<PolicyVerifier>, cluster_id: &str) -> Self {
        PolicyBook {
            verifier,
            cluster_id: cluster_id.to_string(),
            cache: Mutex::new(HashMap::new()),
            update: Mutex::new(()),
        }
    }

    pub fn enforcing(&self) -> bool {
        self.verifier.is_some()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<VerifiedKeyPolicy>>> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The newest policy this node holds for `key_id`, verified.
    fn held(
        &self,
        verifier: &PolicyVerifier,
        store: &Store,
        key_id: &str,
    ) -> Result<Option<Arc<VerifiedKeyPolicy>>, NodeError> {
        if let Some(policy) = self.cache().get(key_id) {
            return Ok(Some(policy.clone()));
        }
        let Some(signed) = store.load_policy(key_id)? else {
            return Ok(None);
        };
        let policy = verifier
            .verify(&self.cluster_id, &signed)
            .map_err(|e| NodeError::Corrupt(format!("stored policy of `{key_id}`: {e}")))?;
        let policy = Arc::new(policy);
        self.cache().insert(key_id.to_string(), policy.clone());
        Ok(Some(policy))
    }

    /// Accepts `signed` if it verifies and is not older than what is held; stores a newer one.
    fn accept(
        &self,
        verifier: &PolicyVerifier,
        store: &Store,
        signed: &[u8],
        expected_key: Option<&str>,
    ) -> Result<Arc<VerifiedKeyPolicy>, NodeError> {
        if let Some(key_id) = expected_key
            && let Some(held) = self.held(verifier, store, key_id)?
            && held.signed == signed
        {
            return Ok(held);
        }
        let policy = verifier
            .verify(&self.cluster_id, signed)
            .map_err(|e| self.reject(store, e.to_string()))?;
        let _one_update_at_a_time = self
            .update
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(key_id) = expected_key
            && policy.key_id != key_id
        {
            return Err(self.reject(
                store,
                format!("the policy is for key `{}`, not `{key_id}`", policy.key_id),
            ));
        }
        refuse_out_of_time(&policy)?;
        if !store.key_exists(&policy.key_id)? {
            return Err(NodeError::KeyNotFound(policy.key_id));
        }
        if let Some(held) = self.held(verifier, store, &policy.key_id)? {
            if held.disabled.is_some() && policy.signed != held.signed {
                return Err(disabled(&held));
            }
            if policy.version < held.version {
                return Err(self.reject(
                    store,
                    format!(
                        "policy version {} of `{}` is older than version {} held here",
                        policy.version, policy.key_id, held.version
                    ),
                ));
            }
            if policy.version == held.version {
                if policy.signed == held.signed {
                    return Ok(held);
                }
                return Err(self.reject(
                    store,
                    format!(
                        "a different policy with the same version {} for `{}`",
                        policy.version, policy.key_id
                    ),
                ));
            }
        }
        store.store_policy(&policy.key_id, policy.version, &policy.signed)?;
        // A key with a policy is in use: its share is sealed against any ceremony abort.
        store.seal_key(&policy.key_id)?;
        let policy = self.remember(Arc::new(policy));
        match &policy.disabled {
            None => tracing::info!(
                key_id = policy.key_id,
                version = policy.version,
                "key policy updated"
            ),
            Some(reason) => tracing::warn!(
                key_id = policy.key_id,
                version = policy.version,
                reason,
                "key disabled by the operator's signed statement"
            ),
        }
        Ok(policy)
    }

    /// Caches `policy` unless a newer version is cached already; returns the one in force. The
    /// cache, like the store, never goes back to an older version.
    fn remember(&self, policy: Arc<VerifiedKeyPolicy>) -> Arc<VerifiedKeyPolicy> {
        let mut cache = self.cache();
        let in_force = match cache.get(&policy.key_id) {
            Some(cached) if cached.version > policy.version => cached.clone(),
            _ => policy,
        };
        cache.insert(in_force.key_id.clone(), in_force.clone());
        in_force
    }

    fn reject(&self, store: &Store, detail: String) -> NodeError {
        tracing::warn!(target: "security", detail, "signed policy rejected");
        store.record_security_event(None, "policy_rejected", &detail);
        NodeError::PolicyRejected(detail)
    }

    /// `PutPolicy`: stores a newer signed policy.
    pub fn put(&self, store: &Store, signed: &[u8]) -> Result<Arc<VerifiedKeyPolicy>, NodeError> {
        let verifier = self.verifier.as_ref().ok_or_else(|| {
            NodeError::config(
                "policy_public_key",
                "this node is not configured with an operator policy key",
            )
        })?;
        self.accept(verifier, store, signed, None)
    }

    /// A key statement a peer holds, re-learned after a restore: taken when it verifies and is
    /// newer than the one held (and in force now); whether it was taken. One for a key this
    /// node has no share of, or not newer, changes nothing; one that does not verify refuses.
    pub fn relearn(&self, store: &Store, signed: &[u8]) -> Result<bool, NodeError> {
        let Some(verifier) = &self.verifier else {
            return Ok(false);
        };
        let policy = verifier.verify(&self.cluster_id, signed).map_err(|e| {
            NodeError::Security(format!(
                "a peer reports a key statement that does not verify: {e}"
            ))
        })?;
        if !store.key_exists(&policy.key_id)? {
            return Ok(false);
        }
        if let Some(held) = self.held(verifier, store, &policy.key_id)?
            && (held.version >= policy.version || held.disabled.is_some())
        {
            return Ok(false);
        }
        match self.accept(verifier, store, signed, None) {
            Ok(taken) => Ok(taken.version == policy.version),
            // Out of its time, it allows nothing anyway; the operator sends a current one.
            Err(NodeError::PolicyExpired { .. } | NodeError::StatementPremature { .. }) => {
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    /// The policy a signing request must satisfy: `None` only when this node enforces none.
    pub fn for_request(
        &self,
        store: &Store,
        key_id: &str,
        signed: &[u8],
    ) -> Result<Option<Arc<VerifiedKeyPolicy>>, NodeError> {
        let Some(verifier) = &self.verifier else {
            return Ok(None);
        };
        if signed.is_empty() {
            return Err(NodeError::PolicyMissing(key_id.to_string()));
        }
        let policy = self.accept(verifier, store, signed, Some(key_id))?;
        if policy.disabled.is_some() {
            return Err(disabled(&policy));
        }
        refuse_out_of_time(&policy)?;
        Ok(Some(policy))
    }
}

fn disabled(statement: &VerifiedKeyPolicy) -> NodeError {
    NodeError::KeyDisabled {
        key_id: statement.key_id.clone(),
        version: statement.version,
        reason: statement.disabled.clone().unwrap_or_default(),
    }
}

/// An expired policy allows nothing (and is not stored): the operator renews it. One not valid
/// yet is not stored either (it would displace the one in force before its time).
fn refuse_out_of_time(policy: &VerifiedKeyPolicy) -> Result<(), NodeError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if policy.premature(now) {
        return Err(NodeError::StatementPremature {
            key_id: policy.key_id.clone(),
            version: policy.version,
            not_before_unix: policy.not_before_unix,
        });
    }
    if policy.expired(now) {
        return Err(NodeError::PolicyExpired {
            key_id: policy.key_id.clone(),
            version: policy.version,
            not_after_unix: policy.not_after_unix,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(version: u64) -> Arc<VerifiedKeyPolicy> {
        Arc::new(VerifiedKeyPolicy {
            key_id: "k".into(),
            version,
            issued_at_unix: 0,
            not_before_unix: 0,
            not_after_unix: i64::MAX,
            disabled: None,
            rules: shardsign_policy::Rules::from_proto(
                &Default::default(),
                shardsign_policy::RulesFor::SigningKey,
            )
            .unwrap(),
            signed: vec![version as u8],
        })
    }

    #[test]
    fn the_cache_never_goes_back_to_an_older_version() {
        let book = PolicyBook::new(None, "c");
        assert_eq!(book.remember(policy(6)).version, 6);
        // An update that lost a race and writes after a newer one changes nothing.
        assert_eq!(book.remember(policy(5)).version, 6);
        assert_eq!(book.cache().get("k").unwrap().version, 6);
        assert_eq!(book.remember(policy(7)).version, 7);
    }
}
