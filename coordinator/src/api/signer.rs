//! The `Signer` service: keys an agent may read, signing, and `WhoAmI`.

use std::sync::Arc;
use std::time::Duration;

use shardsign_proto::v1::check_policy_request::Request as CheckRequest;
use shardsign_proto::v1::signer_server::Signer;
use shardsign_proto::v1::{
    ApiKeyInfo, CheckPolicyRequest, CheckPolicyResponse, GetKeyRequest, Key, ListKeysRequest,
    ListKeysResponse, SignAuthorizationRequest, SignAuthorizationResponse, SignMessageRequest,
    SignMessageResponse, SignTransactionRequest, SignTransactionResponse, SignTypedDataRequest,
    SignTypedDataResponse, WhoAmIRequest,
};
use shardsign_request::Printable;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::{deadline, respond};
use crate::access::apikeys::Scope;
use crate::access::auth::{Authenticator, Caller};
use crate::error::CoordError;
use crate::registry::Registry;
use crate::signing::Signing;
use crate::signing::operation::Operation;

pub struct SignerService {
    pub auth: Arc<Authenticator>,
    pub registry: Arc<Registry>,
    pub signing: Arc<Signing>,
    pub request_timeout: Duration,
}

impl SignerService {
    /// Authenticates, signs within the caller's deadline, and logs the outcome.
    async fn sign<O: Operation>(
        &self,
        request: Request<O>,
    ) -> Result<Response<O::Response>, Status> {
        let caller = self.auth.authenticate(&request, Scope::Sign, false).await?;
        let deadline = deadline(&request, self.request_timeout);
        let request = request.into_inner();
        let span = tracing::info_span!(
            "sign",
            operation = O::NAME,
            key_id = %Printable(request.key_id()),
            api_key_id = caller.id(),
            request_id = %Printable(request.request_id())
        );
        let result = self
            .signing
            .sign(&caller, request, deadline)
            .instrument(span.clone())
            .await;
        let _entered = span.enter();
        match &result {
            Ok(response) => tracing::info!(evidence = hex::encode(O::evidence(response)), "signed"),
            Err(error) => tracing::info!(%error, "refused or failed"),
        }
        respond(&caller, result)
    }

    /// Any valid key may call: with read scope, or with sign scope (an agent asking whether a
    /// request it could send would pass).
    async fn read_or_sign<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        match self.auth.authenticate(request, Scope::Read, false).await {
            Ok(caller) => Ok(caller),
            Err(status) if status.code() == tonic::Code::PermissionDenied => self
                .auth
                .authenticate(request, Scope::Sign, false)
                .await
                .or(Err(status)),
            Err(status) => Err(status),
        }
    }

    fn may_read(caller: &Caller, key_id: &str) -> bool {
        caller.api_key().is_some_and(|k| k.may_read(key_id))
    }
}

#[tonic::async_trait]
impl Signer for SignerService {
    async fn get_key(&self, request: Request<GetKeyRequest>) -> Result<Response<Key>, Status> {
        let caller = self.auth.authenticate(&request, Scope::Read, false).await?;
        let key_id = request.into_inner().key_id;
        let result = if Self::may_read(&caller, &key_id) {
            self.registry.get_key(&key_id).map(|key| key.to_api())
        } else {
            Err(CoordError::PermissionDenied(format!(
                "API key {} is not allowed to use key `{}`",
                caller.id(),
                Printable(&key_id)
            )))
        };
        respond(&caller, result)
    }

    async fn list_keys(
        &self,
        request: Request<ListKeysRequest>,
    ) -> Result<Response<ListKeysResponse>, Status> {
        let caller = self.auth.authenticate(&request, Scope::Read, false).await?;
        let result = self.registry.list_keys().map(|keys| ListKeysResponse {
            keys: keys
                .iter()
                .filter(|key| Self::may_read(&caller, &key.key_id))
                .map(|key| key.to_api())
                .collect(),
        });
        respond(&caller, result)
    }

    async fn sign_transaction(
        &self,
        request: Request<SignTransactionRequest>,
    ) -> Result<Response<SignTransactionResponse>, Status> {
        self.sign(request).await
    }

    async fn sign_message(
        &self,
        request: Request<SignMessageRequest>,
    ) -> Result<Response<SignMessageResponse>, Status> {
        self.sign(request).await
    }

    async fn sign_typed_data(
        &self,
        request: Request<SignTypedDataRequest>,
    ) -> Result<Response<SignTypedDataResponse>, Status> {
        self.sign(request).await
    }

    async fn sign_authorization(
        &self,
        request: Request<SignAuthorizationRequest>,
    ) -> Result<Response<SignAuthorizationResponse>, Status> {
        self.sign(request).await
    }

    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<ApiKeyInfo>, Status> {
        // Any valid key may ask about itself, whatever its scopes.
        let caller = self.read_or_sign(&request).await?;
        let info = caller.info();
        respond(&caller, Ok(info))
    }

    async fn check_policy(
        &self,
        request: Request<CheckPolicyRequest>,
    ) -> Result<Response<CheckPolicyResponse>, Status> {
        let caller = self.read_or_sign(&request).await?;
        let signing = &self.signing;
        let result = match request.into_inner().request {
            Some(CheckRequest::Transaction(r)) => signing.check_policy(&caller, r),
            Some(CheckRequest::Message(r)) => signing.check_policy(&caller, r),
            Some(CheckRequest::TypedData(r)) => signing.check_policy(&caller, r),
            Some(CheckRequest::Authorization(r)) => signing.check_policy(&caller, r),
            None => Err(CoordError::invalid(
                "request",
                "one of transaction, message, typed_data or authorization is required",
            )),
        };
        respond(&caller, result)
    }
}
