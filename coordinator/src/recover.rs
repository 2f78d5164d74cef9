//! `shardsign-coordinator admin recover`: admin access back after every admin key is lost or
//! revoked. The bootstrap credential is single-use, so recovery needs the coordinator's host:
//! whoever runs this can read the registry and the API-key hashing key anyway. It makes a new
//! admin API key directly in the registry and writes an audit record of it; the running
//! coordinator loads API keys at start, so it is restarted afterwards.

use shardsign_policy::{Rules, RulesFor};

use crate::MAX_LABEL_LEN;
use crate::access::apikeys::{
    self, ApiKey, IssuedSecret, Scopes, SecretHasher, load_or_create_hmac_key,
};
use crate::audit::{AuditEntry, Decision};
use crate::config::CoordinatorConfig;
use crate::error::CoordError;
use crate::registry::{Registry, now_ms};

/// A new admin API key: its public id and its secret (shown once).
pub struct Recovered {
    pub id: String,
    pub secret: IssuedSecret,
}

/// Creates an admin API key labelled `label` and audits it as a local recovery.
pub fn recover_admin(config: &CoordinatorConfig, label: &str) -> Result<Recovered, CoordError> {
    if label.is_empty() || label.len() > MAX_LABEL_LEN || label.chars().any(char::is_control) {
        return Err(CoordError::invalid(
            "label",
            format!("expected 1 to {MAX_LABEL_LEN} characters, no control characters"),
        ));
    }
    let registry = Registry::open_configured(&config.database)?;
    let hasher = SecretHasher::new(load_or_create_hmac_key(&config.api_key_hmac_key_file)?);
    let rules = Rules::from_proto(&Default::default(), RulesFor::ApiKey)?;
    let now = now_ms();
    let id = apikeys::new_id();
    let key = ApiKey {
        id: id.clone(),
        label: label.to_string(),
        scopes: Scopes {
            admin: true,
            ..Scopes::default()
        },
        key_ids: None,
        expires_at_ms: None,
        created_at_ms: now,
        created_by: "local-recovery".into(),
        revoked_at_ms: None,
        policy: rules.to_proto(RulesFor::ApiKey),
        rules,
        secrets: Vec::new(),
    };
    let (secret, hash) = hasher.issue(config.environment, &id);
    registry.insert_api_key(&key, &hash)?;
    registry.append_audit(AuditEntry {
        at_ms: now,
        api_key_id: "local-recovery".into(),
        operation: "admin_recover".into(),
        decision: Decision::Allowed.as_str().into(),
        detail: format!("admin API key {id} created on the coordinator's host"),
        peer: "coordinator host".into(),
        ..Default::default()
    })?;
    tracing::warn!(target: "security", api_key_id = id, "admin API key created by local recovery");
    Ok(Recovered { id, secret })
}
