//! Admission of a signing request, a component that owns its state (the request-rate limiter,
//! the signing keys' verified policies, the 24-hour spend ledger in the registry): the caller's
//! key binding, its request rate, its API-key policy, the signing key's operator-signed policy,
//! and the rolling 24-hour value of ether and of listed tokens, in that order (cheapest first). An admitted request holds a
//! spend reservation that is given back if signing does not complete.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shardsign_eth::{U256, format_eth};
use shardsign_policy::tokens::{TokenRule, token_spend};
use shardsign_policy::{Cap, Refusal, Rules, VerifiedKeyPolicy};
use shardsign_proto::v1 as api;
use shardsign_request::Payload;

use crate::access::apikeys::ApiKey;
use crate::access::auth::Caller;
use crate::access::ratelimit::RateLimiter;
use crate::approvals::Approvals;
use crate::error::CoordError;
use crate::metrics::CoordinatorMetrics;
use crate::registry::{
    KeyRecord, Registry, Reservation, SpendRequest, SpendSubject, now_ms, unix_now,
};
use crate::signing::key_policies::KeyPolicies;

pub struct Admission {
    registry: Arc<Registry>,
    key_policies: Arc<KeyPolicies>,
    rate: Arc<RateLimiter>,
    metrics: Arc<CoordinatorMetrics>,
    approvals: Arc<Approvals>,
    /// How long a reservation counts before the signing's closing write keeps it: longer than
    /// any request may run, so only a coordinator that died mid-request lets one lapse.
    reservation_lease: Duration,
}

/// An admitted request: the signed key policy to forward, and the spends (the API key's, the
/// signing key's) to keep or give back.
pub struct Admitted<'a> {
    registry: &'a Registry,
    reservations: Vec<i64>,
    pub signed_policy: Vec<u8>,
    /// The approvers' statement when the key policy parks this request (empty otherwise).
    pub approval: Vec<u8>,
}

impl Admitted<'_> {
    /// The spend reservations made for this request.
    pub fn reservations(&self) -> &[i64] {
        &self.reservations
    }

    /// The signature was returned: the spends stay counted.
    pub fn commit(mut self) {
        self.reservations.clear();
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        for id in self.reservations.drain(..) {
            if let Err(error) = self.registry.release_spend(id) {
                tracing::error!(%error, "could not release a spend reservation; the 24 h counter over-counts until it ages out");
            }
        }
    }
}

/// One 24 h cap a request counts toward, and the token it is in (`None`: ether).
pub(crate) struct Counted<'r> {
    pub request: SpendRequest<'r>,
    pub token: Option<&'r TokenRule>,
}

impl Counted<'_> {
    /// The refusal when `spent` plus this request would cross the cap.
    fn over(&self, spent: U256) -> Refusal {
        let request = &self.request;
        let whose = match request.subject {
            SpendSubject::ApiKey(_) => "",
            SpendSubject::SigningKey(_) => " (signing key policy)",
        };
        match self.token {
            None => Refusal::new(
                "max_value_per_24h",
                format!(
                    "{} already signed on chain {} in the last 24 h + {} > {}{whose}",
                    format_eth(spent),
                    request.chain_id,
                    format_eth(request.value),
                    format_eth(request.cap)
                ),
            ),
            Some(token) => Refusal::new(
                "tokens.max_amount_per_24h",
                format!(
                    "{} already signed in the last 24 h + {} > {} ({}){whose}",
                    token.shown(spent),
                    token.shown(request.value),
                    token.shown(request.cap),
                    token.named()
                ),
            ),
        }
    }
}

/// Every 24 h cap `payload` counts toward under `rules` for `subject`: ether on its chain, and a
/// token the rules list. Caps that are unlimited, and zero amounts, count nothing.
pub(crate) fn counted<'r>(
    subject: SpendSubject<'r>,
    rules: &'r Rules,
    payload: &Payload,
    out: &mut Vec<Counted<'r>>,
) {
    let value = payload.value();
    if let (Cap::Max(cap), Some(chain_id)) = (rules.max_value_per_24h, payload.chain_id())
        && !value.is_zero()
    {
        out.push(Counted {
            request: SpendRequest {
                subject,
                chain_id,
                asset: None,
                value,
                cap,
            },
            token: None,
        });
    }
    if let Some((token, amount)) = token_spend(rules, payload)
        && let Cap::Max(cap) = token.max_amount_per_24h
        && !amount.is_zero()
    {
        out.push(Counted {
            request: SpendRequest {
                subject,
                chain_id: token.chain_id,
                asset: Some(token.address),
                value: amount,
                cap,
            },
            token: Some(token),
        });
    }
}

/// Every cap `payload` counts toward: the API key's, then the signing key policy's.
fn all_counted<'r>(
    api_key: &'r ApiKey,
    key: &'r KeyRecord,
    key_policy: Option<&'r VerifiedKeyPolicy>,
    payload: &Payload,
) -> Vec<Counted<'r>> {
    let mut spends = Vec::new();
    counted(
        SpendSubject::ApiKey(&api_key.id),
        &api_key.rules,
        payload,
        &mut spends,
    );
    if let Some(policy) = key_policy {
        counted(
            SpendSubject::SigningKey(&key.key_id),
            &policy.rules,
            payload,
            &mut spends,
        );
    }
    spends
}

/// The rules' refusal marked as the signing key policy's.
fn key_policy_refusal(refusal: Refusal, version: u64) -> Refusal {
    Refusal::new(
        refusal.rule,
        format!("{} (signing key policy v{version})", refusal.detail),
    )
}

impl Admission {
    pub fn new(
        registry: Arc<Registry>,
        key_policies: Arc<KeyPolicies>,
        rate: Arc<RateLimiter>,
        metrics: Arc<CoordinatorMetrics>,
        approvals: Arc<Approvals>,
        request_timeout: Duration,
    ) -> Self {
        Admission {
            registry,
            key_policies,
            rate,
            metrics,
            approvals,
            // The handler's backstop is the request timeout + 30 s.
            reservation_lease: request_timeout + Duration::from_secs(60),
        }
    }

    fn refuse(&self, refusal: Refusal) -> CoordError {
        self.metrics.refused(refusal.rule);
        CoordError::PolicyRefused(refusal)
    }

    /// The API key behind a caller allowed to use `key_id`.
    pub fn bound_api_key<'c>(
        &self,
        caller: &'c Caller,
        key_id: &str,
    ) -> Result<&'c ApiKey, CoordError> {
        let api_key = caller.api_key().ok_or_else(|| {
            CoordError::PermissionDenied("the bootstrap credential cannot sign".into())
        })?;
        if !api_key.may_use(key_id) {
            self.metrics.refused("key_binding");
            return Err(CoordError::PermissionDenied(format!(
                "API key {} is not allowed to use key `{}`",
                api_key.id,
                shardsign_request::Printable(key_id)
            )));
        }
        Ok(api_key)
    }

    fn take_rate(&self, api_key: &ApiKey) -> Result<(), CoordError> {
        self.take_rate_of(&api_key.id, api_key.rules.requests_per_minute)
    }

    /// One request from `id`'s allowance of `per_minute`.
    fn take_rate_of(&self, id: &str, per_minute: u32) -> Result<(), CoordError> {
        // Shared by several coordinators: the budget is counted in the registry, so that it
        // holds cluster-wide (a read-modify-write of one row).
        let taken = if self.registry.is_shared() {
            self.registry.take_shared_rate(id, per_minute)?
        } else {
            self.rate.take(id, per_minute, Instant::now())
        };
        taken.map_err(|wait| {
            self.metrics.refused("requests_per_minute");
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

    /// The signing key's policy in force (`None` when key policies are off): refused when it is
    /// missing, disables the key or has expired.
    fn key_policy(&self, key_id: &str) -> Result<Option<Arc<VerifiedKeyPolicy>>, CoordError> {
        if !self.key_policies.enforcing() {
            return Ok(None);
        }
        let policy = self
            .key_policies
            .get(key_id)
            .ok_or_else(|| CoordError::NoKeyPolicy(key_id.to_string()))?;
        if policy.disabled.is_some() {
            return Err(CoordError::KeyDisabled(key_id.to_string()));
        }
        CoordError::if_expired(&policy, unix_now())
            .inspect_err(|_| self.metrics.refused("policy_expired"))?;
        Ok(Some(policy))
    }

    /// The signing key's policy, after checking `payload` against it (`None` when key policies
    /// are off).
    fn check_key_policy(
        &self,
        key_id: &str,
        payload: &Payload,
    ) -> Result<Option<Arc<VerifiedKeyPolicy>>, CoordError> {
        let Some(policy) = self.key_policy(key_id)? else {
            return Ok(None);
        };
        policy
            .rules
            .check(payload)
            .map_err(|r| self.refuse(key_policy_refusal(r, policy.version)))?;
        if policy.rules.requests_per_minute != u32::MAX {
            // The in-memory limiter's ids are API key ids otherwise; "key:" cannot start one.
            self.take_rate_of(&format!("key:{key_id}"), policy.rules.requests_per_minute)?;
        }
        Ok(Some(policy))
    }

    /// Admits `payload` for `key` on behalf of `api_key` (already checked to be bound to it).
    /// A request the key policy sends to approvers is admitted only once a quorum approved it
    /// (its spends are checked first, so a request over a cap is refused, not parked).
    pub fn admit(
        &self,
        api_key: &ApiKey,
        key: &KeyRecord,
        payload: &Payload,
        request_id: &str,
    ) -> Result<Admitted<'_>, CoordError> {
        self.take_rate(api_key)?;
        api_key.rules.check(payload).map_err(|r| self.refuse(r))?;
        let key_policy = self.check_key_policy(&key.key_id, payload)?;
        let mut admitted = Admitted {
            registry: &self.registry,
            reservations: Vec::new(),
            signed_policy: key_policy
                .as_ref()
                .map(|p| p.signed.clone())
                .unwrap_or_default(),
            approval: Vec::new(),
        };
        let spends = all_counted(api_key, key, key_policy.as_deref(), payload);
        let requests: Vec<SpendRequest<'_>> = spends.iter().map(|c| c.request).collect();
        let lease_ms = self.reservation_lease.as_millis() as i64;
        match self
            .registry
            .reserve_spends(&requests, now_ms(), lease_ms)?
        {
            Reservation::Reserved(ids) => admitted.reservations = ids,
            Reservation::Over { index, spent } => {
                return Err(self.refuse(spends[index].over(spent)));
            }
        }
        if let Some(policy) = &key_policy
            && let Some(needed) = policy.rules.approval_needed(payload)
        {
            let rule = needed.rule;
            admitted.approval = self
                .approvals
                .gate(api_key, key, policy, payload, request_id, needed)
                .inspect_err(|_| self.metrics.refused(rule))?;
        }
        Ok(admitted)
    }

    /// A dry run of [`Self::admit`]: the same policy checks and the coordinator's 24 h budgets,
    /// with nothing taken, reserved or counted (the request rate is not checked).
    pub fn dry_run(
        &self,
        api_key: &ApiKey,
        key: &KeyRecord,
        payload: &Payload,
    ) -> Result<api::CheckPolicyResponse, CoordError> {
        if let Err(refusal) = api_key.rules.check(payload) {
            return Ok(refused(refusal, "api_key", Vec::new()));
        }
        let key_policy = self.key_policy(&key.key_id)?;
        if let Some(policy) = &key_policy
            && let Err(refusal) = policy.rules.check(payload)
        {
            return Ok(refused(
                key_policy_refusal(refusal, policy.version),
                "signing_key",
                Vec::new(),
            ));
        }
        let spends = all_counted(api_key, key, key_policy.as_deref(), payload);
        let now = now_ms();
        let mut budgets = Vec::with_capacity(spends.len());
        let mut first_over = None;
        for spend in &spends {
            let request = &spend.request;
            let spent =
                self.registry
                    .spent(request.subject, request.chain_id, request.asset, now)?;
            let remaining = request.cap.saturating_sub(spent);
            if first_over.is_none() && request.value > remaining {
                first_over = Some((spend.over(spent), policy_name(request.subject)));
            }
            budgets.push(api::Budget {
                policy: policy_name(request.subject).into(),
                chain_id: request.chain_id,
                asset: spend
                    .token
                    .map_or_else(|| "ETH".to_string(), |t| t.symbol.clone()),
                token: spend
                    .token
                    .map(|t| t.address.to_checksum())
                    .unwrap_or_default(),
                cap: request.cap.to_string(),
                spent: spent.to_string(),
                remaining: remaining.to_string(),
                decimals: spend.token.map_or(18, |t| t.decimals),
            });
        }
        let needs_approval = key_policy
            .as_ref()
            .and_then(|policy| policy.rules.approval_needed(payload));
        Ok(match (first_over, needs_approval) {
            (Some((refusal, policy)), _) => refused(refusal, policy, budgets),
            (None, Some(needed)) => api::CheckPolicyResponse {
                decision: api::check_policy_response::Decision::NeedsApproval as i32,
                rule: needed.rule.into(),
                detail: format!(
                    "approval required: {} (approvers sign it before it is signed)",
                    needed.detail
                ),
                policy: "signing_key".into(),
                budgets,
            },
            (None, None) => api::CheckPolicyResponse {
                decision: api::check_policy_response::Decision::Allow as i32,
                budgets,
                ..Default::default()
            },
        })
    }
}

fn policy_name(subject: SpendSubject<'_>) -> &'static str {
    match subject {
        SpendSubject::ApiKey(_) => "api_key",
        SpendSubject::SigningKey(_) => "signing_key",
    }
}

/// A dry run's refusal: the rule, what signing would say, and whose policy.
pub(crate) fn refused(
    refusal: Refusal,
    policy: &str,
    budgets: Vec<api::Budget>,
) -> api::CheckPolicyResponse {
    api::CheckPolicyResponse {
        decision: api::check_policy_response::Decision::Refuse as i32,
        rule: refusal.rule.into(),
        detail: refusal.detail,
        policy: policy.into(),
        budgets,
    }
}
