//! The coordinator's copy of each signing key's operator-signed policy: verified when set (so an
//! operator learns at once about a bad signature), checked before nodes are contacted (a cheap,
//! clear refusal), and forwarded with every signing request (the nodes check it themselves).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use shardsign_policy::{PolicyVerifier, VerifiedKeyPolicy};

use crate::error::CoordError;
use crate::registry::Registry;

pub struct KeyPolicies {
    verifier: Option<PolicyVerifier>,
    cluster_id: String,
    by_key: RwLock<HashMap<String, Arc<VerifiedKeyPolicy>>>,
}

impl KeyPolicies {
    /// Loads and re-verifies every stored policy.
    pub fn load(
        verifier: Option<PolicyVerifier>,
        cluster_id: &str,
        registry: &Registry,
    ) -> Result<Self, CoordError> {
        let mut by_key = HashMap::new();
        if let Some(verifier) = &verifier {
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
        Ok(KeyPolicies {
            verifier,
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

    pub fn insert(&self, policy: Arc<VerifiedKeyPolicy>) {
        self.by_key
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(policy.key_id.clone(), policy);
    }
}
