//! The client proper: one HTTP/2 channel (TLS), the credential on every call, retries of
//! `UNAVAILABLE` inside a total deadline, and typed results checked before they are returned.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardsign_eth::{Limits, UnsignedTransaction};
use shardsign_proto::v1 as api;
use shardsign_proto::v1::admin_client::AdminClient;
use shardsign_proto::v1::approvals_client::ApprovalsClient;
use shardsign_proto::v1::signer_client::SignerClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status};

use crate::credential::Credential;
use crate::error::ClientError;

/// Adds the credential to every call.
#[derive(Clone)]
pub struct Auth(Credential);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = self.0.header();
        let mut value: MetadataValue<_> = header
            .parse()
            .map_err(|_| Status::invalid_argument("the credential is not a valid header value"))?;
        value.set_sensitive(true);
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

type Stub<T> = T;
pub type SignerStub = Stub<SignerClient<InterceptedService<Channel, Auth>>>;
pub type AdminStub = Stub<AdminClient<InterceptedService<Channel, Auth>>>;
pub type ApprovalsStub = Stub<ApprovalsClient<InterceptedService<Channel, Auth>>>;

/// How `UNAVAILABLE` is retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts, the first included.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_attempts: 5,
        }
    }
}

/// Most endpoints one client takes.
pub const MAX_ENDPOINTS: usize = 16;

type ExpiryCallback = Arc<dyn Fn(Duration) + Send + Sync>;

/// Where and how to connect.
#[derive(Clone)]
pub struct ClientConfig {
    endpoint: String,
    credential: Credential,
    ca_pem: Option<String>,
    tls_name: Option<String>,
    deadline: Duration,
    retry: RetryPolicy,
    on_expiry: Option<ExpiryCallback>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint)
            .field("credential", &self.credential)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// `endpoint` like `https://shardsign.example:7100`, or several comma-separated (see
    /// [`Self::endpoints`]). TLS uses the system roots unless a CA is given.
    pub fn new(endpoint: impl Into<String>, credential: Credential) -> Self {
        ClientConfig {
            endpoint: endpoint.into(),
            credential,
            ca_pem: None,
            tls_name: None,
            deadline: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            on_expiry: None,
        }
    }

    /// The endpoints, in order of preference: `endpoint` may list several, comma-separated
    /// (`https://a:7100,https://b:7100`: coordinators sharing one database); the client uses the
    /// first that answers and fails over to the next on a transport failure, with the same
    /// request id.
    pub fn endpoints(&self) -> Result<Vec<String>, ClientError> {
        let endpoints: Vec<String> = self
            .endpoint
            .split(',')
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() || endpoints.len() > MAX_ENDPOINTS {
            return Err(ClientError::Config(format!(
                "endpoint: expected 1 to {MAX_ENDPOINTS} addresses, comma-separated"
            )));
        }
        Ok(endpoints)
    }

    /// A tonic endpoint for `address` with this config's TLS settings.
    fn endpoint(&self, address: &str) -> Result<Endpoint, ClientError> {
        let mut endpoint = Endpoint::from_shared(address.to_string())
            .map_err(|e| ClientError::Config(format!("endpoint `{address}`: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if address.starts_with("https://") {
            let mut tls = match &self.ca_pem {
                Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
                None => ClientTlsConfig::new().with_native_roots(),
            };
            if let Some(name) = &self.tls_name {
                tls = tls.domain_name(name.clone());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| ClientError::Config(format!("TLS: {e}")))?;
        }
        Ok(endpoint)
    }

    /// Trust this CA (PEM) instead of the system roots.
    pub fn with_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// The name the server certificate must carry, when it is not the endpoint's host.
    pub fn with_tls_name(mut self, name: impl Into<String>) -> Self {
        self.tls_name = Some(name.into());
        self
    }

    /// The total time one call may take, retries included (default 30 s).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Called with the time left whenever the service says the key expires within 7 days.
    pub fn on_key_expiry(mut self, callback: impl Fn(Duration) + Send + Sync + 'static) -> Self {
        self.on_expiry = Some(Arc::new(callback));
        self
    }
}

/// A signed transaction, checked: it decodes, and it recovers to the key's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTransaction {
    /// Ready to broadcast (`eth_sendRawTransaction`).
    pub raw_transaction: Vec<u8>,
    pub tx_hash: [u8; 32],
    pub r: [u8; 32],
    pub s: [u8; 32],
    /// Legacy: recovery id + 35 + 2 * chain id; typed: the y-parity.
    pub v: u64,
    /// EIP-55 address of the signer.
    pub sender: String,
}

/// An EIP-191 signature: `r || s || v` with v = 27 or 28.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSignature {
    pub signature: [u8; 65],
    pub message_hash: [u8; 32],
    pub signer: String,
}

/// A signed EIP-7702 authorization, as a set-code transaction's `authorization_list` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedAuthorization {
    pub authorization: shardsign_eth::Authorization,
    pub y_parity: u8,
    pub r: [u8; 32],
    pub s: [u8; 32],
    /// keccak256(0x05 || rlp([chain_id, address, nonce])).
    pub hash: [u8; 32],
    /// The authority (the key's address), recovered from the signature over `hash`.
    pub signer: String,
}

impl SignedAuthorization {
    /// The tuple as a set-code transaction carries it
    /// ([`TransactionBuilder::authorization`](crate::TransactionBuilder::authorization)).
    pub fn to_tuple(&self) -> Result<shardsign_eth::SignedAuthorization, ClientError> {
        let signature = shardsign_eth::Signature::new(self.r, self.s, self.y_parity)
            .map_err(|e| ClientError::BadReply(e.to_string()))?;
        Ok(shardsign_eth::SignedAuthorization {
            authorization: self.authorization,
            signature,
        })
    }
}

/// A connected client. Cheap to clone; clones share the channel.
#[derive(Clone)]
pub struct Client {
    /// One set of stubs per endpoint, and the one in use.
    stubs: Arc<Vec<Stubs>>,
    current: Arc<AtomicUsize>,
    config: ClientConfig,
    expires_in: Arc<Mutex<Option<(Duration, Instant)>>>,
}

fn fresh_request_id() -> String {
    format!("rs-{}", hex::encode(rand::random::<[u8; 16]>()))
}

fn bytes32(field: &str, bytes: &[u8]) -> Result<[u8; 32], ClientError> {
    bytes
        .try_into()
        .map_err(|_| ClientError::BadReply(format!("{field} is not 32 bytes")))
}

/// One endpoint's stubs.
#[derive(Clone)]
struct Stubs {
    signer: SignerStub,
    admin: AdminStub,
    approvals: ApprovalsStub,
}

/// A transport failure that another endpoint may not have: a killed connection surfaces as
/// `UNKNOWN` or `CANCELLED` (the coordinator itself never answers with either), a refused or
/// lost one as `UNAVAILABLE`.
fn transport_failure(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

impl Client {
    /// Connects (TLS). The endpoints are tried in order and calls start on the first that
    /// answers (the others are dialled again when the client fails over to them after a
    /// transport failure; see [`ClientConfig::endpoints`]); none answering is `Unavailable`.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let endpoints = config.endpoints()?;
        let auth = Auth(config.credential.clone());
        let mut stubs = Vec::with_capacity(endpoints.len());
        let mut failures = Vec::new();
        let mut current = None;
        for address in &endpoints {
            let endpoint = config.endpoint(address)?;
            let channel = if current.is_none() {
                match endpoint.connect().await {
                    Ok(channel) => {
                        current = Some(stubs.len());
                        channel
                    }
                    Err(error) => {
                        failures.push(format!("cannot connect to {address}: {error}"));
                        endpoint.connect_lazy()
                    }
                }
            } else {
                endpoint.connect_lazy()
            };
            stubs.push(Stubs {
                signer: SignerClient::with_interceptor(channel.clone(), auth.clone()),
                admin: AdminClient::with_interceptor(channel.clone(), auth.clone()),
                approvals: ApprovalsClient::with_interceptor(channel, auth.clone()),
            });
        }
        let Some(current) = current else {
            return Err(ClientError::Unavailable(failures.join("; ")));
        };
        for failure in &failures {
            tracing::warn!(failure, "an endpoint is down; using the next");
        }
        Ok(Client {
            stubs: Arc::new(stubs),
            current: Arc::new(AtomicUsize::new(current)),
            config,
            expires_in: Arc::new(Mutex::new(None)),
        })
    }

    fn stubs(&self) -> &Stubs {
        &self.stubs[self.current.load(Ordering::Relaxed) % self.stubs.len()]
    }

    /// After a transport failure: the next endpoint (when there are several).
    fn fail_over(&self, from: usize) {
        if self.stubs.len() > 1 {
            let _ = self.current.compare_exchange(
                from,
                (from + 1) % self.stubs.len(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// The raw Admin stub of the endpoint in use (with this client's credential), for operator
    /// tooling.
    pub fn admin(&self) -> AdminStub {
        self.stubs().admin.clone()
    }

    /// The raw Approvals stub of the endpoint in use, for approvers' tooling.
    pub fn approvals(&self) -> ApprovalsStub {
        self.stubs().approvals.clone()
    }

    /// The raw Signer stub of the endpoint in use (with this client's credential).
    pub fn signer(&self) -> SignerStub {
        self.stubs().signer.clone()
    }

    /// Time left before the API key expires, when the service said it is within 7 days.
    pub fn key_expires_in(&self) -> Option<Duration> {
        let seen = *self.expires_in.lock().unwrap_or_else(|p| p.into_inner());
        seen.map(|(left, at)| left.saturating_sub(at.elapsed()))
    }

    /// Notes the expiry header of a reply or error.
    pub fn observe(&self, metadata: &tonic::metadata::MetadataMap) {
        let Some(seconds) = metadata
            .get("x-key-expires-in")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        else {
            return;
        };
        let left = Duration::from_secs(seconds);
        *self.expires_in.lock().unwrap_or_else(|p| p.into_inner()) = Some((left, Instant::now()));
        if let Some(callback) = &self.config.on_expiry {
            callback(left);
        }
    }

    /// Runs `call` until it succeeds, fails with something other than `UNAVAILABLE`, runs out of
    /// attempts, or the deadline passes. Each attempt gets the time that is left.
    pub async fn with_retries<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(Duration) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.config.deadline;
        let mut backoff = self.config.retry.first_backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let endpoint = self.current.load(Ordering::Relaxed);
            match call(left).await {
                Ok(response) => {
                    self.observe(response.metadata());
                    return Ok(response.into_inner());
                }
                Err(status) => {
                    self.observe(status.metadata());
                    // With several endpoints a killed connection (UNKNOWN, CANCELLED) is
                    // retried on the next one too: the same request id keeps it idempotent.
                    let several = self.stubs.len() > 1;
                    let retryable = status.code() == tonic::Code::Unavailable
                        || (several && transport_failure(status.code()));
                    let retry = retryable
                        && attempt < self.config.retry.max_attempts
                        && Instant::now() + backoff < deadline;
                    if !retry {
                        return Err(status.into());
                    }
                    self.fail_over(endpoint);
                    tracing::debug!(attempt, message = status.message(), "unavailable; retrying");
                    // Jitter so that many clients do not retry in step.
                    let jitter = backoff.mul_f64(rand::random::<f64>() * 0.2);
                    tokio::time::sleep(backoff + jitter).await;
                    backoff = (backoff * 2).min(self.config.retry.max_backoff);
                }
            }
        }
    }

    fn timed<T>(message: T, left: Duration) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(left.max(Duration::from_millis(1)));
        request
    }

    pub async fn get_key(&self, key_id: &str) -> Result<api::Key, ClientError> {
        self.with_retries(|left| {
            let mut stub = self.signer();
            let request = Self::timed(
                api::GetKeyRequest {
                    key_id: key_id.to_string(),
                },
                left,
            );
            async move { stub.get_key(request).await }
        })
        .await
    }

    pub async fn list_keys(&self) -> Result<Vec<api::Key>, ClientError> {
        self.with_retries(|left| {
            let mut stub = self.signer();
            let request = Self::timed(api::ListKeysRequest {}, left);
            async move { stub.list_keys(request).await }
        })
        .await
        .map(|r| r.keys)
    }

    pub async fn who_am_i(&self) -> Result<api::ApiKeyInfo, ClientError> {
        self.with_retries(|left| {
            let mut stub = self.signer();
            let request = Self::timed(api::WhoAmIRequest {}, left);
            async move { stub.who_am_i(request).await }
        })
        .await
    }

    /// A dry run: would the service sign this request now? (read or sign scope; nothing is
    /// signed or counted). The reply names the deciding rule and the coordinator's 24 h budgets.
    pub async fn check_policy(
        &self,
        request: api::check_policy_request::Request,
    ) -> Result<api::CheckPolicyResponse, ClientError> {
        self.with_retries(|left| {
            let mut stub = self.signer();
            let request = Self::timed(
                api::CheckPolicyRequest {
                    request: Some(request.clone()),
                },
                left,
            );
            async move { stub.check_policy(request).await }
        })
        .await
    }

    /// [`Self::check_policy`] for a transaction.
    pub async fn check_transaction(
        &self,
        key_id: &str,
        tx: &UnsignedTransaction,
    ) -> Result<api::CheckPolicyResponse, ClientError> {
        tx.validate(&Limits::DEFAULT)
            .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        self.check_policy(api::check_policy_request::Request::Transaction(
            api::SignTransactionRequest {
                key_id: key_id.to_string(),
                request_id: String::new(),
                transaction: Some(api::sign_transaction_request::Transaction::UnsignedRlp(
                    tx.signing_payload(),
                )),
            },
        ))
        .await
    }

    /// Signs `tx` with `key_id`. The reply is decoded and must be this transaction, signed by
    /// the address the service names.
    pub async fn sign_transaction(
        &self,
        key_id: &str,
        tx: &UnsignedTransaction,
    ) -> Result<SignedTransaction, ClientError> {
        self.sign_transaction_with_id(key_id, tx, &fresh_request_id())
            .await
    }

    /// [`Self::sign_transaction`] under the caller's `request_id`: a retry with the same id
    /// returns the first reply, and a request the key policy parked for approval
    /// ([`ClientError::ApprovalRequired`]) signs on the retry after approvers approved it.
    pub async fn sign_transaction_with_id(
        &self,
        key_id: &str,
        tx: &UnsignedTransaction,
        request_id: &str,
    ) -> Result<SignedTransaction, ClientError> {
        tx.validate(&Limits::DEFAULT)
            .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        let request_id = request_id.to_string();
        let payload = tx.signing_payload();
        let reply = self
            .with_retries(|left| {
                let mut stub = self.signer();
                let request = Self::timed(
                    api::SignTransactionRequest {
                        key_id: key_id.to_string(),
                        request_id: request_id.clone(),
                        transaction: Some(api::sign_transaction_request::Transaction::UnsignedRlp(
                            payload.clone(),
                        )),
                    },
                    left,
                );
                async move { stub.sign_transaction(request).await }
            })
            .await?;
        let signed =
            shardsign_eth::SignedTransaction::decode(&reply.raw_transaction, &Limits::DEFAULT)
                .map_err(|e| ClientError::BadReply(format!("raw transaction: {e}")))?;
        if signed.transaction() != tx {
            return Err(ClientError::BadReply(
                "the signed transaction is not the one that was sent".into(),
            ));
        }
        let sender = signed
            .recover_sender()
            .map_err(|e| ClientError::BadReply(e.to_string()))?
            .to_checksum();
        if sender != reply.sender {
            return Err(ClientError::BadReply(
                "the signature does not recover to the key's address".into(),
            ));
        }
        Ok(SignedTransaction {
            tx_hash: bytes32("tx_hash", &reply.tx_hash)?,
            r: bytes32("r", &reply.r)?,
            s: bytes32("s", &reply.s)?,
            raw_transaction: reply.raw_transaction,
            v: reply.v,
            sender,
        })
    }

    /// EIP-191 `personal_sign` of `message` with `key_id`; the signature is checked to recover
    /// to the signer the service names.
    pub async fn sign_message(
        &self,
        key_id: &str,
        message: &[u8],
    ) -> Result<MessageSignature, ClientError> {
        let request_id = fresh_request_id();
        let reply = self
            .with_retries(|left| {
                let mut stub = self.signer();
                let request = Self::timed(
                    api::SignMessageRequest {
                        key_id: key_id.to_string(),
                        request_id: request_id.clone(),
                        message: message.to_vec(),
                    },
                    left,
                );
                async move { stub.sign_message(request).await }
            })
            .await?;
        checked_signature(
            &reply.signature,
            shardsign_eth::personal_sign_hash(message),
            &reply.signer,
        )
    }

    /// Signs an EIP-712 document (`eth_signTypedData_v4` JSON: types, primaryType, domain,
    /// message). The document is checked and hashed here too, and the signature must recover to
    /// the key's address over that hash; the key's policy must allow the document's domain and
    /// primary type.
    pub async fn sign_typed_data(
        &self,
        key_id: &str,
        document: &str,
    ) -> Result<MessageSignature, ClientError> {
        let typed = shardsign_eth::typed_data::TypedData::parse(
            document.as_bytes(),
            &shardsign_eth::typed_data::Limits::DEFAULT,
        )
        .map_err(|e| ClientError::InvalidArgument(format!("typed_data: {e}")))?;
        let request_id = fresh_request_id();
        let reply = self
            .with_retries(|left| {
                let mut stub = self.signer();
                let request = Self::timed(
                    api::SignTypedDataRequest {
                        key_id: key_id.to_string(),
                        request_id: request_id.clone(),
                        typed_data: document.to_string(),
                    },
                    left,
                );
                async move { stub.sign_typed_data(request).await }
            })
            .await?;
        checked_signature(&reply.signature, typed.signing_hash(), &reply.signer)
    }
}

impl Client {
    /// Signs an EIP-7702 authorization for `key_id`'s account: `authorization.address`'s code
    /// may then run as that account (chain id 0: on every chain). The hash is computed here too
    /// and the signature must recover to the key's address over it; the key's policies must list
    /// the delegate.
    pub async fn sign_authorization(
        &self,
        key_id: &str,
        authorization: shardsign_eth::Authorization,
    ) -> Result<SignedAuthorization, ClientError> {
        let request_id = fresh_request_id();
        let reply = self
            .with_retries(|left| {
                let mut stub = self.signer();
                let request = Self::timed(
                    api::SignAuthorizationRequest {
                        key_id: key_id.to_string(),
                        request_id: request_id.clone(),
                        chain_id: authorization.chain_id,
                        address: authorization.address.to_checksum(),
                        nonce: authorization.nonce,
                    },
                    left,
                );
                async move { stub.sign_authorization(request).await }
            })
            .await?;
        let hash = authorization.signing_hash();
        let y_parity = u8::try_from(reply.y_parity)
            .ok()
            .filter(|y| *y <= 1)
            .ok_or_else(|| ClientError::BadReply("y_parity is not 0 or 1".into()))?;
        let mut signature = [0u8; 65];
        signature[..32].copy_from_slice(&bytes32("r", &reply.r)?);
        signature[32..64].copy_from_slice(&bytes32("s", &reply.s)?);
        signature[64] = 27 + y_parity;
        let checked = checked_signature(&signature, hash, &reply.signer)?;
        Ok(SignedAuthorization {
            authorization,
            y_parity,
            r: bytes32("r", &reply.r)?,
            s: bytes32("s", &reply.s)?,
            hash,
            signer: checked.signer,
        })
    }
}

/// A 65-byte `r || s || v` signature over `hash`, checked to recover to `signer`.
fn checked_signature(
    signature: &[u8],
    hash: [u8; 32],
    signer: &str,
) -> Result<MessageSignature, ClientError> {
    let signature: [u8; 65] = signature
        .try_into()
        .map_err(|_| ClientError::BadReply("signature is not 65 bytes".into()))?;
    let parsed = shardsign_eth::Signature::new(
        bytes32("r", &signature[..32])?,
        bytes32("s", &signature[32..64])?,
        signature[64].wrapping_sub(27),
    )
    .map_err(|e| ClientError::BadReply(e.to_string()))?;
    let recovered = parsed
        .recover_address(&hash)
        .map_err(|e| ClientError::BadReply(e.to_string()))?
        .to_checksum();
    if recovered != signer {
        return Err(ClientError::BadReply(
            "the signature does not recover to the key's address".into(),
        ));
    }
    Ok(MessageSignature {
        signature,
        message_hash: hash,
        signer: recovered,
    })
}
