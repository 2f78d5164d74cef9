//! Admission of a signing request: the caller's key binding, its request rate, its API-key
//! policy, the signing key's operator-signed policy, and the rolling 24-hour value, in that
//! order (cheapest first). An admitted transaction holds a spend reservation that is given back
//! if signing does not complete.

use std::sync::Arc;
use std::time::Instant;

use shardsign_eth::{U256, UnsignedTransaction, format_eth};
use shardsign_policy::{Cap, Refusal, VerifiedKeyPolicy};

use crate::apikeys::ApiKey;
use crate::auth::Caller;
use crate::core::Coordinator;
use crate::error::CoordError;
use crate::registry::{KeyRecord, Registry, Reservation, now_ms};

/// An admitted request: the signed key policy to forward, and the spend to keep or give back.
pub struct Admission<'a> {
    registry: &'a Registry,
    reservation: Option<i64>,
    pub signed_policy: Vec<u8>,
}

impl Admission<'_> {
    /// The signature was returned: the spend stays counted.
    pub fn commit(mut self) {
        self.reservation = None;
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.reservation.take()
            && let Err(error) = self.registry.release_spend(id)
        {
            tracing::error!(%error, "could not release a spend reservation; the 24 h counter over-counts until it ages out");
        }
    }
}

/// The transaction rules with the refusal marked as the key policy's.
fn key_policy_refusal(refusal: Refusal, version: u64) -> Refusal {
    Refusal::new(
        refusal.rule,
        format!("{} (signing key policy v{version})", refusal.detail),
    )
}

impl Coordinator {
    fn refuse(&self, refusal: Refusal) -> CoordError {
        self.auth.metrics.refused(refusal.rule);
        CoordError::PolicyRefused(refusal)
    }

    /// The API key behind a caller allowed to use `key_id`.
    pub(crate) fn bound_api_key<'c>(
        &self,
        caller: &'c Caller,
        key_id: &str,
    ) -> Result<&'c ApiKey, CoordError> {
        let api_key = caller.api_key().ok_or_else(|| {
            CoordError::PermissionDenied("the bootstrap credential cannot sign".into())
        })?;
        if !api_key.may_use(key_id) {
            self.auth.metrics.refused("key_binding");
            return Err(CoordError::PermissionDenied(format!(
                "API key {} is not allowed to use key `{key_id}`",
                api_key.id
            )));
        }
        Ok(api_key)
    }

    fn take_rate(&self, api_key: &ApiKey) -> Result<(), CoordError> {
        let per_minute = api_key.rules.requests_per_minute;
        self.rate
            .take(&api_key.id, per_minute, Instant::now())
            .map_err(|wait| {
                self.auth.metrics.refused("requests_per_minute");
                if per_minute == 0 {
                    CoordError::RateLimited(
                        "policy requests_per_minute: 0, so this key may not sign".into(),
                    )
                } else {
                    CoordError::RateLimited(format!(
                        "policy requests_per_minute: limit of {per_minute} reached; retry in {:.1} s",
                        wait.as_secs_f64()
                    ))
                }
            })
    }

    fn key_policy(&self, key_id: &str) -> Result<Option<Arc<VerifiedKeyPolicy>>, CoordError> {
        if !self.key_policies.enforcing() {
            return Ok(None);
        }
        self.key_policies
            .get(key_id)
            .map(Some)
            .ok_or_else(|| CoordError::NoKeyPolicy(key_id.to_string()))
    }

    pub(crate) fn admit_transaction(
        &self,
        caller: &Caller,
        key: &KeyRecord,
        tx: &UnsignedTransaction,
    ) -> Result<Admission<'_>, CoordError> {
        let api_key = self.bound_api_key(caller, &key.key_id)?;
        self.take_rate(api_key)?;
        api_key
            .rules
            .check_transaction(tx)
            .map_err(|r| self.refuse(r))?;
        let mut signed_policy = Vec::new();
        if let Some(policy) = self.key_policy(&key.key_id)? {
            policy
                .rules
                .check_transaction(tx)
                .map_err(|r| self.refuse(key_policy_refusal(r, policy.version)))?;
            signed_policy = policy.signed.clone();
        }
        let mut admission = Admission {
            registry: &self.registry,
            reservation: None,
            signed_policy,
        };
        let value = tx.value();
        if let Cap::Max(cap) = api_key.rules.max_value_per_24h
            && value > U256::ZERO
        {
            match self
                .registry
                .reserve_spend(&api_key.id, value, cap, now_ms())?
            {
                Reservation::Reserved(id) => admission.reservation = Some(id),
                Reservation::Over { spent } => {
                    return Err(self.refuse(Refusal::new(
                        "max_value_per_24h",
                        format!(
                            "{} already signed in the last 24 h + {} > {}",
                            format_eth(spent),
                            format_eth(value),
                            format_eth(cap)
                        ),
                    )));
                }
            }
        }
        Ok(admission)
    }

    pub(crate) fn admit_message(
        &self,
        caller: &Caller,
        key: &KeyRecord,
    ) -> Result<Admission<'_>, CoordError> {
        let api_key = self.bound_api_key(caller, &key.key_id)?;
        self.take_rate(api_key)?;
        api_key.rules.check_message().map_err(|r| self.refuse(r))?;
        let mut signed_policy = Vec::new();
        if let Some(policy) = self.key_policy(&key.key_id)? {
            policy
                .rules
                .check_message()
                .map_err(|r| self.refuse(key_policy_refusal(r, policy.version)))?;
            signed_policy = policy.signed.clone();
        }
        Ok(Admission {
            registry: &self.registry,
            reservation: None,
            signed_policy,
        })
    }
}
