//! The coordinator's copy of each signing key's operator-signed statement (its policy, or the
//! statement that disabled it): verified when set (so an
//! operator learns at once about a bad signature), checked before nodes are contacted (a cheap,
//! clear refusal), and forwarded with every signing request (the nodes check it themselves).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use shardsign_policy::{PolicyVerifier, VerifiedKeyPolicy};

use crate::error::CoordError;
use crate::registry::Registry;

/// A policy this close to its expiry is warned about.
pub const EXPIRY_WARNING_SECS: i64 = 7 * 86_400;

pub struct KeyPolicies {
    verifier: Option<PolicyVerifier>,
    metrics: shardsign_metrics::Metrics,
    cluster_id: String,
    by_key: RwLock<HashMap<String, Arc<VerifiedKeyPolicy>>>,
}

/// Every stored policy, re-verified.
fn verified(
    verifier: Option<&PolicyVerifier>,
    cluster_id: &str,
    registry: &Registry,
) -> Result<HashMap<String, Arc<VerifiedKeyPolicy>>, CoordError> {
    let mut by_key = HashMap::new();
    if let Some(verifier) = verifier {
        for (key_id, signed) in registry.load_key_policies()? {
            let policy = verifier.verify(cluster_id, &signed).map_err(|e| {
                CoordError::config(
                    "policy_public_key",
                    format!("the stored policy of `{key_id}` does not verify: {e}"),
                )
            })?;
            by_key.insert(key_id, Arc::new(policy));
        }
    }
    Ok(by_key)
}

impl KeyPolicies {
    /// Loads and re-verifies every stored policy.
    pub fn load(
        verifier: Option<PolicyVerifier>,
        cluster_id: &str,
        registry: &Registry,
        metrics: shardsign_metrics::Metrics,
    ) -> Result<Self, CoordError> {
        let by_key = verified(verifier.as_ref(), cluster_id, registry)?;
        Ok(KeyPolicies {
            verifier,
            metrics,
            cluster_id: cluster_id.to_string(),
            by_key: RwLock::new(by_key),
        })
    }

    /// Whether signing requires a signed policy (a policy key is configured).
    pub fn enforcing(&self) -> bool {
        self.verifier.is_some()
    }

    pub fn get(&self, key_id: &str) -> Option<Arc<VerifiedKeyPolicy>> {
        self.by_key
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(key_id)
            .cloned()
    }

    pub fn verify(&self, signed: &[u8]) -> Result<VerifiedKeyPolicy, CoordError> {
        let verifier = self.verifier.as_ref().ok_or_else(|| {
            CoordError::PermissionDenied(
                "this coordinator has no policy_public_key configured, so key policies are off; configure the operator's policy public key on the coordinator and the nodes".into(),
            )
        })?;
        Ok(verifier.verify(&self.cluster_id, signed)?)
    }

    /// One line per policy that expires within [`EXPIRY_WARNING_SECS`] (or has expired), for
    /// cluster status and the periodic log line; also sets the gauge of how many there are.
    pub fn expiry_warnings(&self, now_unix: i64) -> Vec<String> {
        let mut warnings: Vec<(i64, String)> = self
            .by_key
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            // A disable statement is final: nothing to renew.
            .filter(|p| p.disabled.is_none())
            .filter(|p| p.never_expires() || p.not_after_unix - now_unix <= EXPIRY_WARNING_SECS)
            .map(|p| {
                let when = shardsign_serve::utc(p.not_after_unix * 1000);
                let text = if p.never_expires() {
                    format!("key policy of `{}` (v{}) was signed without an expiry: renew it (shardsign policy renew --all) so that a withheld update cannot stay in force forever", p.key_id, p.version)
                } else if p.expired(now_unix) {
                    format!("key policy of `{}` (v{}) expired at {when}: the key cannot sign; renew it: shardsign policy renew --key {}", p.key_id, p.version, p.key_id)
                } else {
                    format!("key policy of `{}` (v{}) expires at {when}; renew it: shardsign policy renew --all", p.key_id, p.version)
                };
                (p.not_after_unix, text)
            })
            .collect();
        warnings.sort();
        self.metrics.set(
            crate::metrics::POLICIES_EXPIRING,
            "Signing-key policies expired or expiring within 7 days",
            &[],
            warnings.len() as f64,
        );
        warnings.into_iter().map(|(_, text)| text).collect()
    }

    pub fn insert(&self, policy: Arc<VerifiedKeyPolicy>) {
        self.by_key
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(policy.key_id.clone(), policy);
    }
}

impl crate::access::freshness::Reload for KeyPolicies {
    /// Another coordinator stored a policy: take every stored policy again.
    fn reload(&self, registry: &Registry) -> Result<(), CoordError> {
        let by_key = verified(self.verifier.as_ref(), &self.cluster_id, registry)?;
        *self
            .by_key
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = by_key;
        Ok(())
    }
}
