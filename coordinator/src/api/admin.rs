//! The `Admin` service: the ceremony, keys, API keys, key policies, the audit log and cluster
//! status, each change audited before it is answered.

use std::sync::Arc;

use shardsign_proto::v1::admin_server::Admin as AdminApi;
use shardsign_proto::v1::{
    ApiKeyInfo, ClusterStatusRequest, ClusterStatusResponse, CreateApiKeyRequest,
    CreateApiKeyResponse, CreateKeyEvent, CreateKeyRequest, DisableKeyRequest, DisableKeyResponse,
    GetKeyPolicyRequest, KeyPolicyRecord, ListApiKeysRequest, ListApiKeysResponse,
    ListAuditRequest, ListAuditResponse, RefreshKeyEvent, RefreshKeyRequest, ReplaceNodeEvent,
    ReplaceNodeRequest, RevokeApiKeyRequest, RotateApiKeyRequest, SetApiKeyPolicyRequest,
    SetKeyPolicyRequest, SetKeyPolicyResponse, VerifyAuditRequest, VerifyAuditResponse,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::respond;
use crate::access::apikeys::Scope;
use crate::access::auth::{Authenticator, Caller};
use crate::admin::Admin;
use crate::ceremony::Ceremony;
use crate::error::CoordError;
use crate::refresh::Refresher;
use crate::replace::Replacer;

pub struct AdminService {
    pub auth: Arc<Authenticator>,
    pub admin: Arc<Admin>,
    pub ceremony: Arc<Ceremony>,
    pub refresher: Arc<Refresher>,
    pub replacer: Arc<Replacer>,
}

impl AdminService {
    async fn admin<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.auth.authenticate(request, Scope::Admin, false).await
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
            .admin
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
impl AdminApi for AdminService {
    type CreateKeyStream = ReceiverStream<Result<CreateKeyEvent, Status>>;

    async fn create_key(
        &self,
        request: Request<CreateKeyRequest>,
    ) -> Result<Response<Self::CreateKeyStream>, Status> {
        let caller = self.admin(&request).await?;
        let request = request.into_inner();
        let checked = self.ceremony.check(&request);
        let key_id = checked
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let key_id = self
            .finish(&caller, "create_key", &key_id, &request.label, checked)?
            .into_inner();
        let (sender, receiver) = tokio::sync::mpsc::channel(32);
        // The ceremony runs to its end (commit or abort on every node) even if the caller leaves.
        tokio::spawn(self.ceremony.clone().run(request, key_id, sender));
        respond(&caller, Ok(ReceiverStream::new(receiver)))
    }

    type RefreshKeyStream = ReceiverStream<Result<RefreshKeyEvent, Status>>;

    async fn refresh_key(
        &self,
        request: Request<RefreshKeyRequest>,
    ) -> Result<Response<Self::RefreshKeyStream>, Status> {
        let caller = self.admin(&request).await?;
        let request = request.into_inner();
        let key_id = request.key_id.escape_default().to_string();
        let checked = self.refresher.check(&request);
        let target = match &checked {
            Ok(key) => format!("from epoch {}", key.epoch),
            Err(_) => String::new(),
        };
        let key = self
            .finish(&caller, "refresh_key", &key_id, &target, checked)?
            .into_inner();
        let (sender, receiver) = tokio::sync::mpsc::channel(32);
        // The refresh runs to its end (commit or abort on every node) even if the caller leaves.
        let actor = caller.audit_entry(shardsign_audit::AuditEntry::default());
        tokio::spawn(self.refresher.clone().run(key, request.fast, actor, sender));
        respond(&caller, Ok(ReceiverStream::new(receiver)))
    }

    type ReplaceNodeStream = ReceiverStream<Result<ReplaceNodeEvent, Status>>;

    async fn replace_node(
        &self,
        request: Request<ReplaceNodeRequest>,
    ) -> Result<Response<Self::ReplaceNodeStream>, Status> {
        let caller = self.admin(&request).await?;
        let request = request.into_inner();
        let checked = self.replacer.check(&request);
        let target = format!("node {}", request.node_id);
        let node = self
            .finish(&caller, "replace_node", "", &target, checked)?
            .into_inner();
        let (sender, receiver) = tokio::sync::mpsc::channel(32);
        // It runs to its end (or to the key it stops at) even if the caller leaves.
        let actor = caller.audit_entry(shardsign_audit::AuditEntry::default());
        tokio::spawn(
            self.replacer
                .clone()
                .run(node, request.signed_statement, actor, sender),
        );
        respond(&caller, Ok(ReceiverStream::new(receiver)))
    }

    async fn cluster_status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let caller = self.admin(&request).await?;
        respond(&caller, Ok(self.admin.cluster_status().await))
    }

    async fn disable_key(
        &self,
        request: Request<DisableKeyRequest>,
    ) -> Result<Response<DisableKeyResponse>, Status> {
        let caller = self.admin(&request).await?;
        let request = request.into_inner();
        let key_id = request.key_id.escape_default().to_string();
        let signed = request.statement.is_some();
        let result = self.admin.disable_key(request).await;
        let target = match &result {
            Ok(r) if signed => format!("signed statement, nodes {:?}", r.nodes_updated),
            _ => String::new(),
        };
        self.finish(&caller, "disable_key", &key_id, &target, result)
    }

    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        let caller = self.auth.authenticate(&request, Scope::Admin, true).await?;
        let result = self.admin.create_api_key(&caller, request.into_inner());
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
        respond(&caller, Ok(self.admin.list_api_keys()))
    }

    async fn rotate_api_key(
        &self,
        request: Request<RotateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        let caller = self.admin(&request).await?;
        let request = request.into_inner();
        let target = format!("api key {}", request.id.escape_default());
        let result = self.admin.rotate_api_key(request);
        self.finish(&caller, "rotate_api_key", "", &target, result)
    }

    async fn revoke_api_key(
        &self,
        request: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<ApiKeyInfo>, Status> {
        let caller = self.admin(&request).await?;
        let id = request.into_inner().id;
        let target = format!("api key {}", id.escape_default());
        let result = self.admin.revoke_api_key(&id);
        self.finish(&caller, "revoke_api_key", "", &target, result)
    }

    async fn set_api_key_policy(
        &self,
        request: Request<SetApiKeyPolicyRequest>,
    ) -> Result<Response<ApiKeyInfo>, Status> {
        let caller = self.admin(&request).await?;
        let request = request.into_inner();
        let target = format!("api key {}", request.id.escape_default());
        let result = self.admin.set_api_key_policy(request);
        self.finish(&caller, "set_api_key_policy", "", &target, result)
    }

    async fn set_key_policy(
        &self,
        request: Request<SetKeyPolicyRequest>,
    ) -> Result<Response<SetKeyPolicyResponse>, Status> {
        let caller = self.admin(&request).await?;
        let result = self.admin.set_key_policy(request.into_inner()).await;
        let (key_id, target) = match &result {
            Ok(r) => (r.key_id.clone(), format!("policy version {}", r.version)),
            Err(_) => (String::new(), String::new()),
        };
        self.finish(&caller, "set_key_policy", &key_id, &target, result)
    }

    async fn get_key_policy(
        &self,
        request: Request<GetKeyPolicyRequest>,
    ) -> Result<Response<KeyPolicyRecord>, Status> {
        let caller = self.admin(&request).await?;
        let result = self.admin.get_key_policy(&request.into_inner().key_id);
        respond(&caller, result)
    }

    async fn verify_audit(
        &self,
        request: Request<VerifyAuditRequest>,
    ) -> Result<Response<VerifyAuditResponse>, Status> {
        let caller = self.admin(&request).await?;
        respond(&caller, self.admin.verify_audit())
    }

    async fn list_audit(
        &self,
        request: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditResponse>, Status> {
        let caller = self.admin(&request).await?;
        respond(&caller, self.admin.list_audit(request.into_inner()))
    }
}
