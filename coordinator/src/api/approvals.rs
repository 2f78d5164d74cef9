//! The `Approvals` service: parked requests for approvers (scope `approve`, or `admin`).

use std::sync::Arc;

use shardsign_proto::v1::approvals_server::Approvals as ApprovalsApi;
use shardsign_proto::v1::{
    ApprovalRecord, DecideApprovalRequest, GetApprovalRequest, ListApprovalsRequest,
    ListApprovalsResponse,
};
use tonic::{Request, Response, Status};

use super::respond;
use crate::access::apikeys::Scope;
use crate::access::auth::{Authenticator, Caller};
use crate::approvals::Approvals;

pub struct ApprovalsService {
    pub auth: Arc<Authenticator>,
    pub approvals: Arc<Approvals>,
}

impl ApprovalsService {
    async fn approver<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.auth.authenticate(request, Scope::Approve, false).await
    }

    /// Runs a registry-bound call off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Approvals) -> Result<T, crate::error::CoordError> + Send + 'static,
    ) -> Result<T, crate::error::CoordError> {
        let approvals = self.approvals.clone();
        tokio::task::spawn_blocking(move || call(&approvals))
            .await
            .map_err(|_| crate::error::CoordError::config("approvals", "a task failed"))?
    }
}

#[tonic::async_trait]
impl ApprovalsApi for ApprovalsService {
    async fn list_approvals(
        &self,
        request: Request<ListApprovalsRequest>,
    ) -> Result<Response<ListApprovalsResponse>, Status> {
        let caller = self.approver(&request).await?;
        let request = request.into_inner();
        let result = self
            .blocking(move |approvals| approvals.list(&request))
            .await
            .map(|rows| ListApprovalsResponse {
                approvals: rows.iter().map(|row| row.to_api()).collect(),
            });
        respond(&caller, result)
    }

    async fn get_approval(
        &self,
        request: Request<GetApprovalRequest>,
    ) -> Result<Response<ApprovalRecord>, Status> {
        let caller = self.approver(&request).await?;
        let id = request.into_inner().approval_id;
        let result = self
            .blocking(move |approvals| approvals.get(&id))
            .await
            .map(|row| row.to_api());
        respond(&caller, result)
    }

    async fn decide_approval(
        &self,
        request: Request<DecideApprovalRequest>,
    ) -> Result<Response<ApprovalRecord>, Status> {
        let caller = self.approver(&request).await?;
        let request = request.into_inner();
        let deciding = caller.clone();
        let result = self
            .blocking(move |approvals| approvals.decide(&deciding, &request))
            .await
            .map(|row| row.to_api());
        respond(&caller, result)
    }
}
