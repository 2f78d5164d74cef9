//! The public gRPC services, thin: authentication with the scope each RPC needs, deadlines,
//! audit of administrative changes, error mapping, and the key-expiry header on every reply.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shardsign_proto::v1::admin_server::Admin;
use shardsign_proto::v1::signer_server::Signer;
use shardsign_proto::v1::{
    ApiKeyInfo, ClusterStatusRequest, ClusterStatusResponse, CreateApiKeyRequest,
    CreateApiKeyResponse, CreateKeyEvent, CreateKeyRequest, DisableKeyRequest, GetKeyPolicyRequest,
    GetKeyRequest, Key, ListApiKeysRequest, ListApiKeysResponse, ListAuditRequest,
    ListAuditResponse, ListKeysRequest, ListKeysResponse, RevokeApiKeyRequest, RotateApiKeyRequest,
    SetApiKeyPolicyRequest, SetKeyPolicyRequest, SetKeyPolicyResponse, SignMessageRequest,
    SignMessageResponse, SignTransactionRequest, SignTransactionResponse, SignedKeyPolicy,
    VerifyAuditRequest, VerifyAuditResponse, WhoAmIRequest,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::apikeys::Scope;
use crate::auth::Caller;
use crate::core::{Coordinator, key_to_api};
use crate::error::CoordError;

/// The caller's deadline (`grpc-timeout`), else the configured default.
fn deadline<T>(request: &Request<T>, default: Duration) -> Instant {
    let timeout = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(default, |timeout| timeout.min(default));
    Instant::now() + timeout
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

pub struct SignerService {
    pub core: Arc<Coordinator>,
    pub request_timeout: Duration,
}

pub struct AdminService {
    pub core: Arc<Coordinator>,
}

/// The reply (or error) to an authenticated call, with the key-expiry header when it applies.
fn respond<T>(caller: &Caller, result: Result<T, CoordError>) -> Result<Response<T>, Status> {
    match result {
        Ok(value) => {
            let mut response = Response::new(value);
            caller.annotate(response.metadata_mut());
            Ok(response)
        }
        Err(error) => {
            let mut status = Status::from(error);
            caller.annotate(status.metadata_mut());
            Err(status)
        }
    }
}

#[tonic::async_trait]
impl Signer for SignerService {
    async fn get_key(&self, request: Request<GetKeyRequest>) -> Result<Response<Key>, Status> {
        let caller = self
            .core
            .auth
            .authenticate(&request, Scope::Read, false)
            .await?;
        let key_id = request.into_inner().key_id;
        let result = if caller.api_key().is_some_and(|k| k.may_read(&key_id)) {
            self.core
                .registry
                .get_key(&key_id)
                .map(|key| key_to_api(&key))
        } else {
            Err(CoordError::PermissionDenied(format!(
                "API key {} is not allowed to use key `{key_id}`",
                caller.id()
            )))
        };
        respond(&caller, result)
    }

    async fn list_keys(
        &self,
        request: Request<ListKeysRequest>,
    ) -> Result<Response<ListKeysResponse>, Status> {
        let caller = self
            .core
            .auth
            .authenticate(&request, Scope::Read, false)
            .await?;
        let result = self.core.registry.list_keys().map(|keys| ListKeysResponse {
            keys: keys
                .iter()
                .filter(|key| caller.api_key().is_some_and(|k| k.may_read(&key.key_id)))
                .map(key_to_api)
                .collect(),
        });
        respond(&caller, result)
    }

    async fn sign_transaction(
        &self,
        request: Request<SignTransactionRequest>,
    ) -> Result<Response<SignTransactionResponse>, Status> {
        let caller = self
            .core
            .auth
            .authenticate(&request, Scope::Sign, false)
            .await?;
        let deadline = deadline(&request, self.request_timeout);
        let request = request.into_inner();
        let key_id = request.key_id.clone();
        let result = self.core.sign_transaction(&caller, request, deadline).await;
        match &result {
            Ok(response) => tracing::info!(
                key_id,
                api_key_id = caller.id(),
                tx_hash = hex::encode(&response.tx_hash),
                "transaction signed"
            ),
            Err(error) => {
                tracing::info!(key_id, api_key_id = caller.id(), %error, "sign_transaction refused or failed")
            }
        }
        respond(&caller, result)
    }

    async fn sign_message(
        &self,
        request: Request<SignMessageRequest>,
    ) -> Result<Response<SignMessageResponse>, Status> {
        let caller = self
            .core
            .auth
            .authenticate(&request, Scope::Sign, false)
            .await?;
        let deadline = deadline(&request, self.request_timeout);
        let request = request.into_inner();
        let key_id = request.key_id.clone();
        let span = tracing::info_span!(
            "sign_message",
            key_id = %key_id,
            api_key_id = caller.id(),
            request_id = %request.request_id.escape_default()
        );
        let result = self
            .core
            .sign_message(&caller, request, deadline)
            .instrument(span)
            .await;
        if let Err(error) = &result {
            tracing::info!(key_id, api_key_id = caller.id(), %error, "sign_message refused or failed");
        }
        respond(&caller, result)
    }

    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<ApiKeyInfo>, Status> {
        // Any valid key may ask about itself, whatever its scopes.
        let caller = match self
            .core
            .auth
            .authenticate(&request, Scope::Read, false)
            .await
        {
            Ok(caller) => caller,
            Err(status) if status.code() == tonic::Code::PermissionDenied => self
                .core
                .auth
                .authenticate(&request, Scope::Sign, false)
                .await
                .or(Err(status))?,
            Err(status) => return Err(status),
        };
        let info = self.core.who_am_i(&caller);
        respond(&caller, Ok(info))
    }
}

impl AdminService {
    async fn admin<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.core
            .auth
            .authenticate(request, Scope::Admin, false)
            .await
    }

    /// Audits an administrative call and replies.
    fn finish<T>(
        &self,
        caller: &Caller,
        operation: &str,
        key_id: &str,
        target: &str,
        result: Result<T, CoordError>,
    ) -> Result<Response<T>, Status> {
        let result = match self
            .core
            .audit_admin(caller, operation, key_id, target, &result)
        {
            Ok(()) => result,
            // An unrecorded change must not look like a success.
            Err(error) if result.is_ok() => Err(error),
            Err(_) => result,
        };
        respond(caller, result)
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    type CreateKeyStream = ReceiverStream<Result<CreateKeyEvent, Status>>;

    async fn create_key(
        &self,
        request: Request<CreateKeyRequest>,
    ) -> Result<Response<Self::CreateKeyStream>, Status> {
        let caller = self.admin(&request).await?;
        let request = request.into_inner();
        let checked = self.core.check_create_key(&request);
        let key_id = checked.as_ref().map(String::clone).unwrap_or_default();
        let key_id = self
            .finish(&caller, "create_key", &key_id, &request.label, checked)?
            .into_inner();
        let (sender, receiver) = tokio::sync::mpsc::channel(32);
        // The ceremony runs to its end (commit or abort on every node) even if the caller leaves.
        tokio::spawn(self.core.clone().create_key(request, key_id, sender));
        respond(&caller, Ok(ReceiverStream::new(receiver)))
    }

    async fn cluster_status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let caller = self.admin(&request).await?;
        respond(&caller, Ok(self.core.cluster_status().await))
    }

    async fn disable_key(
        &self,
        request: Request<DisableKeyRequest>,
    ) -> Result<Response<Key>, Status> {
        let caller = self.admin(&request).await?;
        let key_id = request.into_inner().key_id;
        let result = self
            .core
            .registry
            .disable_key(&key_id)
            .map(|key| key_to_api(&key));
        if result.is_ok() {
            tracing::info!(key_id, "key disabled");
        }
        self.finish(&caller, "disable_key", &key_id, "", result)
    }

    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        let caller = self
            .core
            .auth
            .authenticate(&request, Scope::Admin, true)
            .await?;
        let result = self.core.create_api_key(&caller, request.into_inner());
        let target = result
            .as_ref()
            .ok()
            .and_then(|r| r.info.as_ref())
            .map(|info| format!("api key {}", info.id))
            .unwrap_or_default();
        self.finish(&caller, "create_api_key", "", &target, result)
    }

    async fn list_api_keys(
        &self,
        request: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        let caller = self.admin(&request).await?;
        respond(&caller, Ok(self.core.list_api_keys()))
    }

    async fn rotate_api_key(
        &self,
        request: Request<RotateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        let caller = self.admin(&request).await?;
        let request = request.into_inner();
        let target = format!("api key {}", request.id.escape_default());
        let result = self.core.rotate_api_key(request);
        self.finish(&caller, "rotate_api_key", "", &target, result)
    }

    async fn revoke_api_key(
        &self,
        request: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<ApiKeyInfo>, Status> {
        let caller = self.admin(&request).await?;
        let id = request.into_inner().id;
        let target = format!("api key {}", id.escape_default());
        let result = self.core.revoke_api_key(&id);
        self.finish(&caller, "revoke_api_key", "", &target, result)
    }

    async fn set_api_key_policy(
        &self,
        request: Request<SetApiKeyPolicyRequest>,
    ) -> Result<Response<ApiKeyInfo>, Status> {
        let caller = self.admin(&request).await?;
        let request = request.into_inner();
        let target = format!("api key {}", request.id.escape_default());
        let result = self.core.set_api_key_policy(request);
        self.finish(&caller, "set_api_key_policy", "", &target, result)
    }

    async fn set_key_policy(
        &self,
        request: Request<SetKeyPolicyRequest>,
    ) -> Result<Response<SetKeyPolicyResponse>, Status> {
        let caller = self.admin(&request).await?;
        let result = self.core.set_key_policy(request.into_inner()).await;
        let (key_id, target) = match &result {
            Ok(r) => (r.key_id.clone(), format!("policy version {}", r.version)),
            Err(_) => (String::new(), String::new()),
        };
        self.finish(&caller, "set_key_policy", &key_id, &target, result)
    }

    async fn get_key_policy(
        &self,
        request: Request<GetKeyPolicyRequest>,
    ) -> Result<Response<SignedKeyPolicy>, Status> {
        let caller = self.admin(&request).await?;
        let result = self.core.get_key_policy(&request.into_inner().key_id);
        respond(&caller, result)
    }

    async fn verify_audit(
        &self,
        request: Request<VerifyAuditRequest>,
    ) -> Result<Response<VerifyAuditResponse>, Status> {
        let caller = self.admin(&request).await?;
        respond(&caller, self.core.verify_audit())
    }

    async fn list_audit(
        &self,
        request: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditResponse>, Status> {
        let caller = self.admin(&request).await?;
        respond(&caller, self.core.list_audit(request.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("10q"), None);
    }
}
