//! The signing pipeline, one for every payload kind (see [`operation`]): request id -> key
//! usable and bound to the caller -> payload -> chain allowed -> idempotency -> admission ->
//! threshold signature -> response -> still authorised -> durable audit + idempotency record.

pub mod admission;
pub mod bans;
mod claim;
mod complete;
pub mod finalize;
pub mod key_policies;
pub mod operation;
pub mod package_agreement;
pub mod pool;
pub mod refresh_end;
pub mod relay;
pub mod relearn;
mod threshold;

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use sha2::{Digest, Sha256};
use shardsign_eth::Limits;
use shardsign_request::{KeyId, PayloadKind, RequestId, SignRequest};

use crate::access::auth::{Authenticator, Caller};
use crate::error::CoordError;
use crate::metrics::CoordinatorMetrics;
use crate::registry::{IdempotencyRecord, KeyRecord, Registry};
use admission::{Admission, Admitted};
use complete::Signed;
use operation::Operation;
use pool::NodePool;
use threshold::ThresholdSigner;

/// Everything a signing request goes through.
pub struct Signing {
    registry: Arc<Registry>,
    auth: Arc<Authenticator>,
    admission: Admission,
    threshold: ThresholdSigner,
    metrics: Arc<CoordinatorMetrics>,
    limits: Limits,
}

/// What identifies a request for idempotency: its kind, caller, key and payload (so one caller
/// cannot read another's reply by reusing its request id).
fn request_hash(kind: PayloadKind, caller: &str, key_id: &str, payload: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(kind.name().as_bytes());
    hasher.update([0]);
    hasher.update(caller.as_bytes());
    hasher.update([0]);
    hasher.update(key_id.as_bytes());
    hasher.update([0]);
    hasher.update(payload);
    hasher.finalize().into()
}

impl Signing {
    pub fn new(
        registry: Arc<Registry>,
        auth: Arc<Authenticator>,
        admission: Admission,
        pool: Arc<NodePool>,
        round_timeout: Duration,
        metrics: Arc<CoordinatorMetrics>,
    ) -> Self {
        Signing {
            registry: registry.clone(),
            auth,
            admission,
            threshold: ThresholdSigner {
                pool,
                registry,
                round_timeout,
                metrics: metrics.clone(),
            },
            metrics,
            limits: Limits::DEFAULT,
        }
    }

    /// Signs one request: the whole pipeline, audited whatever its outcome.
    pub async fn sign<O: Operation>(
        &self,
        caller: &Caller,
        request: O,
        deadline: Instant,
    ) -> Result<O::Response, CoordError> {
        let key_id = request.key_id().to_string();
        let request_id = request.request_id().to_string();
        let _in_flight = self.metrics.in_flight();
        // Released after the outcome is stored (a retry waiting for it then finds the response).
        let mut claim = None;
        let outcome = self
            .sign_unaudited(caller, request, deadline, &mut claim)
            .await;
        let completed = complete::complete(
            &self.registry,
            &self.metrics,
            caller,
            O::NAME,
            &key_id,
            &request_id,
            outcome,
        )
        .await;
        drop(claim);
        completed
    }

    /// A dry run of signing `request` for `caller`: the same checks up to admission, nothing
    /// signed, reserved, counted or audited.
    pub fn check_policy<O: Operation>(
        &self,
        caller: &Caller,
        request: O,
    ) -> Result<shardsign_proto::v1::CheckPolicyResponse, CoordError> {
        let key_id = KeyId::field(request.key_id())?;
        let api_key = self.admission.bound_api_key(caller, key_id.as_str())?;
        let key = self.usable_key(&key_id)?;
        let payload = request.into_payload(&self.limits)?;
        if let Some(chain_id) = payload.chain_id()
            && !key.allowed_chain_ids.contains(&chain_id)
        {
            return Ok(admission::refused(
                shardsign_policy::Refusal::new(
                    "key_chains",
                    format!(
                        "chain id {chain_id} is not allowed for key `{}` (allowed: {:?})",
                        key.key_id, key.allowed_chain_ids
                    ),
                ),
                "key",
                Vec::new(),
            ));
        }
        self.admission.dry_run(api_key, &key, &payload)
    }

    fn usable_key(&self, key_id: &KeyId) -> Result<KeyRecord, CoordError> {
        let key = self.registry.get_key(key_id.as_str())?;
        if key.disabled {
            return Err(CoordError::KeyDisabled(key_id.to_string()));
        }
        Ok(key)
    }

    async fn sign_unaudited<O: Operation>(
        &self,
        caller: &Caller,
        request: O,
        deadline: Instant,
        claimed: &mut Option<claim::ClaimGuard>,
    ) -> Result<Signed<'_, O::Response>, CoordError> {
        let request_id = RequestId::parse(request.request_id())?;
        let key_id = KeyId::field(request.key_id())?;
        // The binding first: a key the caller may not use and one that does not exist get the
        // same answer, so an API key cannot probe for key ids.
        let api_key = self.admission.bound_api_key(caller, key_id.as_str())?;
        let key = self.usable_key(&key_id)?;
        let request = SignRequest {
            key_id,
            payload: request.into_payload(&self.limits)?,
        };
        if let Some(chain_id) = request.payload.chain_id()
            && !key.allowed_chain_ids.contains(&chain_id)
        {
            return Err(CoordError::PermissionDenied(format!(
                "chain id {chain_id} is not allowed for key `{}` (allowed: {:?})",
                key.key_id, key.allowed_chain_ids
            )));
        }
        let encoded = request.payload.encode();
        let fingerprint = request_hash(request.payload.kind(), caller.id(), &key.key_id, &encoded);
        let replay = |stored: Vec<u8>| {
            let value = O::Response::decode(stored.as_slice())
                .map_err(|_| CoordError::config("registry", "a stored response is unreadable"))?;
            Ok(Signed::replayed(O::evidence(&value), value))
        };
        if let Some(stored) = self
            .registry
            .idempotent_response(request_id.as_str(), &fingerprint)?
        {
            return replay(stored);
        }
        match claim::claim(&self.registry, request_id.as_str(), &fingerprint, deadline).await? {
            claim::Claimed::Mine(guard) => *claimed = Some(guard),
            claim::Claimed::Done(stored) => return replay(stored),
        }
        let admitting = Instant::now();
        let admitted: Admitted<'_> =
            self.admission
                .admit(api_key, &key, &request.payload, request_id.as_str())?;
        // Per-stage timings (the load generator reads them to report the access path's cost).
        tracing::debug!(
            stage = "admission",
            micros = admitting.elapsed().as_micros() as u64,
            "timing"
        );
        let hash = request.signing_hash();
        let signature = self
            .threshold
            .sign(
                &key,
                &request,
                hash,
                &threshold::Forwarded {
                    signed_policy: &admitted.signed_policy,
                    request_id: request_id.as_str(),
                    approval: &admitted.approval,
                },
                deadline,
            )
            .await?;
        let response = O::respond(request.payload, signature, &key)?;
        self.still_authorised(caller)?;
        let record = IdempotencyRecord {
            request_id: request_id.as_str().to_string(),
            request_hash: fingerprint,
            response: response.encode_to_vec(),
        };
        Ok(Signed::fresh(
            O::evidence(&response),
            response,
            record,
            admitted,
        ))
    }

    /// A revocation that landed while the request was in flight withholds the signature.
    fn still_authorised(&self, caller: &Caller) -> Result<(), CoordError> {
        if let Some(key) = caller.api_key() {
            // Another coordinator may have revoked it meanwhile.
            self.auth.sync()?;
            let now = self.auth.current(&key.id);
            if now.is_none_or(|k| k.revoked_at_ms.is_some()) {
                return Err(CoordError::Unauthenticated(format!(
                    "API key {} was revoked while this request was in flight; the signature was discarded",
                    key.id
                )));
            }
        }
        Ok(())
    }
}
