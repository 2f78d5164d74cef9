//! What the API does: signing with failover and verification, idempotency, the key ceremony,
//! cluster status. The gRPC layer (`service`) only converts and authenticates.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use sha2::{Digest, Sha256};
use shardsign_eth::{
    Address, Limits, MAX_PERSONAL_MESSAGE_LEN, Signature, UnsignedTransaction, personal_sign_hash,
    personal_signature_bytes,
};
use shardsign_proto::node::v1::{GetIdentityRequest, SignatureResult};
use shardsign_proto::v1 as api;
use tokio::sync::mpsc;
use tonic::{Code, Status};

use crate::audit::{AuditEntry, Decision};
use crate::auth::{Authenticator, Caller};
use crate::enforce::Admission;
use crate::error::CoordError;
use crate::key_policies::KeyPolicies;
use crate::pool::NodePool;
use crate::ratelimit::RateLimiter;
use crate::registry::{IdempotencyRecord, KeyRecord, Registry, unix_now};
use crate::relay::{self, Clients, Payload, RelayError};

/// Longest request id.
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// Longest key label.
pub const MAX_LABEL_LEN: usize = 128;

pub struct Coordinator {
    pub registry: Registry,
    pub pool: NodePool,
    pub limits: Limits,
    pub round_timeout: Duration,
    pub cluster_id: String,
    pub auth: Authenticator,
    pub key_policies: KeyPolicies,
    pub rate: RateLimiter,
}

/// A signing response before it is made durable: the hash the audit row names, and for a fresh
/// signature the idempotency record to store and the admission to keep once stored (a replayed
/// response was stored before).
struct Signed<'a, T> {
    evidence: Vec<u8>,
    value: T,
    fresh: Option<(IdempotencyRecord, Admission<'a>)>,
}

impl<'a, T: prost::Message> Signed<'a, T> {
    fn replayed(evidence: Vec<u8>, value: T) -> Self {
        Signed {
            evidence,
            value,
            fresh: None,
        }
    }

    fn fresh(
        evidence: Vec<u8>,
        value: T,
        request_id: String,
        request_hash: [u8; 32],
        admission: Admission<'a>,
    ) -> Self {
        let record = IdempotencyRecord {
            request_id,
            request_hash,
            response: value.encode_to_vec(),
        };
        Signed {
            evidence,
            value,
            fresh: Some((record, admission)),
        }
    }
}

/// Cancels a session on its nodes if dropped before it is disarmed: when the caller goes away
/// (tonic drops the handler), the nodes stop working on its behalf.
struct CancelOnDrop {
    clients: Clients,
    session_id: Vec<u8>,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let clients = std::mem::take(&mut self.clients);
            let session_id = std::mem::take(&mut self.session_id);
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { relay::cancel_all(&clients, &session_id).await });
            }
        }
    }
}

fn validate_request_id(request_id: &str) -> Result<(), CoordError> {
    if request_id.is_empty()
        || request_id.len() > MAX_REQUEST_ID_LEN
        || !request_id.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(CoordError::invalid(
            "request_id",
            format!("expected 1 to {MAX_REQUEST_ID_LEN} printable ASCII characters"),
        ));
    }
    Ok(())
}

/// Whether a failed attempt is worth retrying on another pair.
fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
            | Code::Internal
            | Code::NotFound
    )
}

/// What identifies a request for idempotency: its kind, caller, key and payload (so one caller
/// cannot read another's reply by reusing its request id).
fn request_hash(kind: &str, caller: &str, key_id: &str, payload: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(kind.as_bytes());
    hasher.update([0]);
    hasher.update(caller.as_bytes());
    hasher.update([0]);
    hasher.update(key_id.as_bytes());
    hasher.update([0]);
    hasher.update(payload);
    hasher.finalize().into()
}

pub fn key_to_api(key: &KeyRecord) -> api::Key {
    api::Key {
        key_id: key.key_id.clone(),
        label: key.label.clone(),
        address: key.address.clone(),
        public_key: key.public_key.clone(),
        created_at_unix: key.created_at,
        status: if key.disabled {
            api::KeyStatus::Disabled
        } else {
            api::KeyStatus::Active
        } as i32,
        allowed_chain_ids: key.allowed_chain_ids.clone(),
    }
}

fn verifying_key(key: &KeyRecord) -> Result<k256::ecdsa::VerifyingKey, CoordError> {
    k256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_key).map_err(|_| {
        CoordError::config(
            "registry",
            format!("public key of `{}` is invalid", key.key_id),
        )
    })
}

impl Coordinator {
    fn usable_key(&self, key_id: &str) -> Result<KeyRecord, CoordError> {
        let key = self.registry.get_key(key_id)?;
        if key.disabled {
            return Err(CoordError::KeyDisabled(key_id.to_string()));
        }
        Ok(key)
    }

    /// Signs `hash` (computed from `payload`) with a pair of nodes, trying a second pair if the
    /// first fails, within `deadline`. The signature is verified before it is returned.
    async fn threshold_sign(
        &self,
        key: &KeyRecord,
        payload: Payload,
        hash: [u8; 32],
        signed_policy: &[u8],
        deadline: Instant,
    ) -> Result<Signature, CoordError> {
        let clients = self.pool.clients();
        let mut failed: BTreeSet<u8> = BTreeSet::new();
        let mut reasons: Vec<String> = Vec::new();
        let mut attempts = 0;
        for pair in self.pool.candidate_pairs() {
            if attempts == 2 {
                break;
            }
            if pair.iter().any(|n| failed.contains(n)) {
                continue;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining < Duration::from_millis(50) {
                return Err(CoordError::DeadlineExceeded(format!(
                    "the deadline passed while signing ({})",
                    reasons.join("; ")
                )));
            }
            attempts += 1;
            let session_id = relay::fresh_session_id();
            let pair_clients: Clients = pair.iter().map(|n| (*n, clients[n].clone())).collect();
            let mut guard = CancelOnDrop {
                clients: pair_clients,
                session_id: session_id.clone(),
                armed: true,
            };
            let mut options = relay::Options {
                call_timeout: remaining.min(self.round_timeout),
                ..Default::default()
            };
            let job = relay::SignJob {
                key_id: &key.key_id,
                payload: &payload,
                expected_hash: hash,
                signed_policy,
            };
            let outcome = relay::sign(&clients, pair, &job, &session_id, &mut options).await;
            guard.armed = false;
            match outcome {
                Ok(results) => {
                    pair.iter().for_each(|n| self.pool.mark_ok(*n));
                    return self.verified(key, &results, hash);
                }
                Err(RelayError { node, status }) if retryable(&status) => {
                    self.auth.metrics.attempt_failed(node, status.code());
                    tracing::warn!(node, code = ?status.code(), message = status.message(), "signing attempt failed; trying another pair");
                    self.pool.mark_failed(node, status.message());
                    failed.insert(node);
                    reasons.push(format!("node {node}: {}", status.message()));
                }
                Err(RelayError { node, status }) => {
                    return Err(CoordError::NodeRefused {
                        node,
                        code: status.code(),
                        message: status.message().to_string(),
                    });
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(CoordError::DeadlineExceeded(format!(
                "the deadline passed while signing ({})",
                reasons.join("; ")
            )));
        }
        let down: Vec<String> = failed.iter().map(|n| format!("node {n}")).collect();
        Err(CoordError::Unavailable(format!(
            "signing needs two reachable nodes; failed: {} ({})",
            down.join(", "),
            reasons.join("; ")
        )))
    }

    /// Both nodes' results must agree and verify against the key; a bad signature is never returned.
    fn verified(
        &self,
        key: &KeyRecord,
        results: &[SignatureResult],
        hash: [u8; 32],
    ) -> Result<Signature, CoordError> {
        let first = results
            .first()
            .ok_or_else(|| CoordError::SigningFailed("no node returned a signature".into()))?;
        if results.iter().any(|r| r != first) || first.signed_hash != hash {
            return Err(CoordError::SigningFailed(
                "the nodes returned different signatures or hashes".into(),
            ));
        }
        let signature = Signature::new(
            first
                .r
                .as_slice()
                .try_into()
                .map_err(|_| CoordError::SigningFailed("r is not 32 bytes".into()))?,
            first
                .s
                .as_slice()
                .try_into()
                .map_err(|_| CoordError::SigningFailed("s is not 32 bytes".into()))?,
            u8::try_from(first.recovery_id)
                .map_err(|_| CoordError::SigningFailed("bad recovery id".into()))?,
        )
        .map_err(|e| CoordError::SigningFailed(e.to_string()))?;
        if !signature.verify(&hash, &verifying_key(key)?) {
            return Err(CoordError::SigningFailed(
                "the signature does not verify against the key".into(),
            ));
        }
        Ok(signature)
    }

    /// Makes a signing request's outcome durable: its audit row and, for a fresh signature, its
    /// idempotency record, in one group commit (one fsync shared with every request waiting).
    /// A failed write fails the request: no signature leaves without its record.
    async fn complete_signing<T: prost::Message + Default>(
        &self,
        caller: &Caller,
        operation: &'static str,
        key_id: &str,
        request_id: &str,
        outcome: Result<Signed<'_, T>, CoordError>,
    ) -> Result<T, CoordError> {
        let started = caller.started;
        let (decision, detail, tx_hash) = match &outcome {
            Ok(signed) => (Decision::Allowed, String::new(), signed.evidence.clone()),
            Err(error) => (Decision::of(error), error.to_string(), Vec::new()),
        };
        let entry = Self::callers_entry(
            caller,
            AuditEntry {
                operation: operation.to_string(),
                key_id: key_id.to_string(),
                decision: decision.as_str().to_string(),
                detail,
                tx_hash,
                request_id: request_id.to_string(),
                ..Default::default()
            },
        );
        let (outcome, record) = match outcome {
            Ok(Signed {
                value,
                fresh: Some((record, admission)),
                ..
            }) => (Ok((value, Some(admission))), Some(record)),
            Ok(Signed { value, .. }) => (Ok((value, None)), None),
            Err(error) => (Err(error), None),
        };
        let writing = Instant::now();
        let written = self.registry.complete_signing(entry, record).wait().await;
        tracing::debug!(
            stage = "audit",
            micros = writing.elapsed().as_micros() as u64,
            "timing"
        );
        // One result: the response to return instead of ours (if any), or why there is none
        // (the write failed, or the request id was reused for another request).
        let written = written.and_then(|completed| completed.earlier_response);
        let decision_name = match (&written, decision) {
            (Err(_), Decision::Allowed) => Decision::Failed.as_str(),
            _ => decision.as_str(),
        };
        self.auth
            .metrics
            .signed(operation, decision_name, started.elapsed());
        match (outcome, written) {
            (Ok((value, admission)), Ok(earlier)) => {
                if let Some(admission) = admission {
                    admission.commit();
                }
                match earlier {
                    // A concurrent call with the same request id stored its response first.
                    Some(bytes) => T::decode(bytes.as_slice()).map_err(|_| {
                        CoordError::config("registry", "a stored response is unreadable")
                    }),
                    None => Ok(value),
                }
            }
            (Ok(_), Err(error @ CoordError::RequestIdReused(_))) => Err(error),
            (Ok(_), Err(error)) => {
                tracing::error!(%error, "audit write failed; the signature is withheld");
                Err(error)
            }
            (Err(error), Err(audit_error)) => {
                tracing::error!(error = %audit_error, "audit write failed for a refused or failed request");
                Err(error)
            }
            (Err(error), Ok(_)) => Err(error),
        }
    }

    /// A revocation that landed while the request was in flight withholds the signature.
    fn still_authorised(&self, caller: &Caller) -> Result<(), CoordError> {
        if let Some(key) = caller.api_key() {
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

    pub async fn sign_transaction(
        &self,
        caller: &Caller,
        request: api::SignTransactionRequest,
        deadline: Instant,
    ) -> Result<api::SignTransactionResponse, CoordError> {
        let key_id = request.key_id.clone();
        let request_id = request.request_id.clone();
        let _in_flight = self.auth.metrics.in_flight();
        let outcome = self
            .sign_transaction_unaudited(caller, request, deadline)
            .await;
        self.complete_signing(caller, "sign_transaction", &key_id, &request_id, outcome)
            .await
    }

    async fn sign_transaction_unaudited(
        &self,
        caller: &Caller,
        request: api::SignTransactionRequest,
        deadline: Instant,
    ) -> Result<Signed<'_, api::SignTransactionResponse>, CoordError> {
        validate_request_id(&request.request_id)?;
        let key = self.usable_key(&request.key_id)?;
        self.bound_api_key(caller, &key.key_id)?;
        let tx: UnsignedTransaction =
            crate::convert::transaction(request.transaction.as_ref(), &self.limits)?;
        if !key.allowed_chain_ids.contains(&tx.chain_id()) {
            return Err(CoordError::PermissionDenied(format!(
                "chain id {} is not allowed for key `{}` (allowed: {:?})",
                tx.chain_id(),
                key.key_id,
                key.allowed_chain_ids
            )));
        }
        let payload = tx.signing_payload();
        let fingerprint = request_hash("tx", caller.id(), &key.key_id, &payload);
        if let Some(stored) = self
            .registry
            .idempotent_response(&request.request_id, &fingerprint)?
        {
            let value = api::SignTransactionResponse::decode(stored.as_slice())
                .map_err(|_| CoordError::config("registry", "a stored response is unreadable"))?;
            return Ok(Signed::replayed(value.tx_hash.clone(), value));
        }
        let admitting = Instant::now();
        let admission = self.admit_transaction(caller, &key, &tx)?;
        // Per-stage timings (the load generator reads them to report the access path's cost).
        tracing::debug!(
            stage = "admission",
            micros = admitting.elapsed().as_micros() as u64,
            "timing"
        );
        // The hash of the payload the nodes are sent (what they decode and hash themselves).
        let hash = shardsign_eth::keccak256(&payload);
        let signature = self
            .threshold_sign(
                &key,
                Payload::Transaction(payload),
                hash,
                &admission.signed_policy,
                deadline,
            )
            .await?;
        let signed = tx.into_signed(signature);
        let sender = signed
            .recover_sender()
            .map_err(|e| CoordError::SigningFailed(e.to_string()))?;
        if sender.to_checksum() != key.address {
            return Err(CoordError::SigningFailed(
                "the signed transaction does not recover to the key's address".into(),
            ));
        }
        let v = u64::try_from(signed.v())
            .map_err(|_| CoordError::invalid("chain_id", "too large for a 64-bit v"))?;
        let response = api::SignTransactionResponse {
            raw_transaction: signed.raw().to_vec(),
            tx_hash: signed.hash().to_vec(),
            r: signature.r().to_vec(),
            s: signature.s().to_vec(),
            v,
            y_parity: u32::from(signed.signature().recovery_id().to_u8()),
            sender: sender.to_checksum(),
        };
        self.still_authorised(caller)?;
        Ok(Signed::fresh(
            response.tx_hash.clone(),
            response,
            request.request_id,
            fingerprint,
            admission,
        ))
    }

    pub async fn sign_message(
        &self,
        caller: &Caller,
        request: api::SignMessageRequest,
        deadline: Instant,
    ) -> Result<api::SignMessageResponse, CoordError> {
        let key_id = request.key_id.clone();
        let request_id = request.request_id.clone();
        let _in_flight = self.auth.metrics.in_flight();
        let outcome = self.sign_message_unaudited(caller, request, deadline).await;
        self.complete_signing(caller, "sign_message", &key_id, &request_id, outcome)
            .await
    }

    async fn sign_message_unaudited(
        &self,
        caller: &Caller,
        request: api::SignMessageRequest,
        deadline: Instant,
    ) -> Result<Signed<'_, api::SignMessageResponse>, CoordError> {
        validate_request_id(&request.request_id)?;
        if request.message.len() > MAX_PERSONAL_MESSAGE_LEN {
            return Err(CoordError::invalid(
                "message",
                format!(
                    "{} bytes is over the limit of {MAX_PERSONAL_MESSAGE_LEN}",
                    request.message.len()
                ),
            ));
        }
        let key = self.usable_key(&request.key_id)?;
        self.bound_api_key(caller, &key.key_id)?;
        let fingerprint = request_hash("message", caller.id(), &key.key_id, &request.message);
        if let Some(stored) = self
            .registry
            .idempotent_response(&request.request_id, &fingerprint)?
        {
            let value = api::SignMessageResponse::decode(stored.as_slice())
                .map_err(|_| CoordError::config("registry", "a stored response is unreadable"))?;
            return Ok(Signed::replayed(value.message_hash.clone(), value));
        }
        let admission = self.admit_message(caller, &key)?;
        let hash = personal_sign_hash(&request.message);
        let signature = self
            .threshold_sign(
                &key,
                Payload::PersonalMessage(request.message),
                hash,
                &admission.signed_policy,
                deadline,
            )
            .await?;
        let response = api::SignMessageResponse {
            signature: personal_signature_bytes(&signature).to_vec(),
            message_hash: hash.to_vec(),
            signer: key.address.clone(),
        };
        self.still_authorised(caller)?;
        Ok(Signed::fresh(
            response.message_hash.clone(),
            response,
            request.request_id,
            fingerprint,
            admission,
        ))
    }

    /// Validates a key-creation request; returns the key id to use.
    pub fn check_create_key(&self, request: &api::CreateKeyRequest) -> Result<String, CoordError> {
        if request.label.len() > MAX_LABEL_LEN || request.label.chars().any(char::is_control) {
            return Err(CoordError::invalid(
                "label",
                format!("expected at most {MAX_LABEL_LEN} characters, no control characters"),
            ));
        }
        if request.allowed_chain_ids.is_empty() || request.allowed_chain_ids.len() > 64 {
            return Err(CoordError::invalid(
                "allowed_chain_ids",
                "expected 1 to 64 chain ids",
            ));
        }
        if request
            .allowed_chain_ids
            .iter()
            .any(|c| *c == 0 || *c > crate::convert::MAX_CHAIN_ID)
        {
            return Err(CoordError::invalid(
                "allowed_chain_ids",
                "chain ids are 1 to 2^63 - 37",
            ));
        }
        let key_id = if request.key_id.is_empty() {
            format!("key-{}", hex::encode(rand::random::<[u8; 8]>()))
        } else {
            request.key_id.clone()
        };
        let valid = key_id.len() <= 64
            && key_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(CoordError::invalid(
                "key_id",
                "expected 1 to 64 characters of A-Z a-z 0-9 _ -",
            ));
        }
        if self.registry.key_exists(&key_id)? {
            return Err(CoordError::KeyExists(key_id));
        }
        Ok(key_id)
    }

    /// Runs the ceremony, reporting progress on `events`. The key is registered only if all
    /// three nodes finished and committed.
    pub async fn create_key(
        self: Arc<Self>,
        request: api::CreateKeyRequest,
        key_id: String,
        events: mpsc::Sender<Result<api::CreateKeyEvent, Status>>,
    ) {
        use api::create_key_event::{Event, Failed, NodeJoined, Round, Started};
        let send = |event: Event| {
            let events = events.clone();
            async move {
                let _ = events
                    .send(Ok(api::CreateKeyEvent { event: Some(event) }))
                    .await;
            }
        };
        send(Event::Started(Started {
            key_id: key_id.clone(),
        }))
        .await;
        let (progress_tx, mut progress_rx) = mpsc::unbounded_channel::<Event>();
        let forward = {
            let events = events.clone();
            tokio::spawn(async move {
                while let Some(event) = progress_rx.recv().await {
                    let _ = events
                        .send(Ok(api::CreateKeyEvent { event: Some(event) }))
                        .await;
                }
            })
        };
        let clients = self.pool.clients();
        let session_id = relay::fresh_session_id();
        let mut chains = request.allowed_chain_ids.clone();
        chains.sort_unstable();
        chains.dedup();
        let joined_tx = progress_tx.clone();
        let mut on_joined = move |node: u8| {
            let _ = joined_tx.send(Event::NodeJoined(NodeJoined {
                node_id: u32::from(node),
            }));
        };
        let round_tx = progress_tx.clone();
        let mut on_round = move |round: u32| {
            let _ = round_tx.send(Event::Round(Round { round }));
        };
        let outcome = {
            let mut options = relay::Options {
                call_timeout: self.round_timeout.max(Duration::from_secs(10)),
                on_joined: Some(&mut on_joined),
                on_round: Some(&mut on_round),
                ..Default::default()
            };
            relay::keygen(&clients, &session_id, &key_id, &chains, &mut options).await
        };
        // The progress closures own senders: drop them so that the forwarder sees the end.
        drop(on_joined);
        drop(on_round);
        drop(progress_tx);
        let _ = forward.await;
        let result = match outcome {
            Ok(results) => self.register(&request, &key_id, &chains, &results[0].public_key),
            Err(RelayError { node, status }) => {
                if status.code() == Code::Unavailable {
                    self.pool.mark_failed(node, status.message());
                }
                Err(CoordError::KeygenFailed(format!(
                    "node {node}: {}",
                    status.message()
                )))
            }
        };
        match result {
            Ok(key) => {
                tracing::info!(key_id, address = key.address, "key created");
                send(Event::Done(key_to_api(&key))).await;
            }
            Err(error) => {
                tracing::warn!(key_id, %error, "key generation failed");
                send(Event::Failed(Failed {
                    reason: error.to_string(),
                }))
                .await;
            }
        }
    }

    fn register(
        &self,
        request: &api::CreateKeyRequest,
        key_id: &str,
        chains: &[u64],
        public_key: &[u8],
    ) -> Result<KeyRecord, CoordError> {
        let verifying_key =
            k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).map_err(|_| {
                CoordError::KeygenFailed("the nodes returned an invalid public key".into())
            })?;
        let key = KeyRecord {
            key_id: key_id.to_string(),
            label: request.label.clone(),
            public_key: public_key.to_vec(),
            address: Address::from_public_key(&verifying_key).to_checksum(),
            allowed_chain_ids: chains.to_vec(),
            created_at: unix_now(),
            disabled: false,
        };
        self.registry.insert_key(&key)?;
        Ok(key)
    }

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
            let mut status = api::NodeStatus {
                node_id: u32::from(config.node_id),
                address: config.address.clone(),
                ..Default::default()
            };
            match outcome {
                Ok(identity) => {
                    let identity = identity.into_inner();
                    status.version = identity.version;
                    status.key_count = identity.key_count;
                    status.fingerprint = identity.fingerprint.clone();
                    match &config.fingerprint {
                        Some(expected) if *expected != identity.fingerprint => {
                            status.error = format!(
                                "identity fingerprint {} does not match the configured {expected}",
                                identity.fingerprint
                            );
                        }
                        _ if identity.node_id != u32::from(config.node_id) => {
                            status.error = format!(
                                "the node at this address says it is node {}",
                                identity.node_id
                            );
                        }
                        _ => status.reachable = true,
                    }
                }
                Err(error) => status.error = error.message().to_string(),
            }
            nodes.push(status);
        }
        nodes.sort_by_key(|n| n.node_id);
        let reachable = nodes.iter().filter(|n| n.reachable).count();
        api::ClusterStatusResponse {
            can_sign: reachable >= 2,
            can_create_keys: reachable == 3,
            nodes,
        }
    }
}
