//! The public gRPC services, thin: deadlines, conversion, error mapping. Authentication happens
//! before these run (see `auth`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use shardsign_proto::v1::admin_server::Admin;
use shardsign_proto::v1::signer_server::Signer;
use shardsign_proto::v1::{
    ClusterStatusRequest, ClusterStatusResponse, CreateKeyEvent, CreateKeyRequest,
    DisableKeyRequest, GetKeyRequest, Key, ListKeysRequest, ListKeysResponse, SignMessageRequest,
    SignMessageResponse, SignTransactionRequest, SignTransactionResponse,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::core::{Coordinator, key_to_api};

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

#[tonic::async_trait]
impl Signer for SignerService {
    async fn get_key(&self, request: Request<GetKeyRequest>) -> Result<Response<Key>, Status> {
        let key = self.core.registry.get_key(&request.into_inner().key_id)?;
        Ok(Response::new(key_to_api(&key)))
    }

    async fn list_keys(
        &self,
        _: Request<ListKeysRequest>,
    ) -> Result<Response<ListKeysResponse>, Status> {
        let keys = self.core.registry.list_keys()?;
        Ok(Response::new(ListKeysResponse {
            keys: keys.iter().map(key_to_api).collect(),
        }))
    }

    async fn sign_transaction(
        &self,
        request: Request<SignTransactionRequest>,
    ) -> Result<Response<SignTransactionResponse>, Status> {
        let deadline = deadline(&request, self.request_timeout);
        let request = request.into_inner();
        let key_id = request.key_id.clone();
        let response = self
            .core
            .sign_transaction(request, deadline)
            .await
            .map_err(|error| {
                tracing::info!(key_id, %error, "sign_transaction refused or failed");
                Status::from(error)
            })?;
        tracing::info!(
            key_id,
            tx_hash = hex::encode(&response.tx_hash),
            "transaction signed"
        );
        Ok(Response::new(response))
    }

    async fn sign_message(
        &self,
        request: Request<SignMessageRequest>,
    ) -> Result<Response<SignMessageResponse>, Status> {
        let deadline = deadline(&request, self.request_timeout);
        let request = request.into_inner();
        let key_id = request.key_id.clone();
        let response = self
            .core
            .sign_message(request, deadline)
            .await
            .map_err(|error| {
                tracing::info!(key_id, %error, "sign_message refused or failed");
                Status::from(error)
            })?;
        Ok(Response::new(response))
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    type CreateKeyStream = ReceiverStream<Result<CreateKeyEvent, Status>>;

    async fn create_key(
        &self,
        request: Request<CreateKeyRequest>,
    ) -> Result<Response<Self::CreateKeyStream>, Status> {
        let request = request.into_inner();
        let key_id = self.core.check_create_key(&request)?;
        let (sender, receiver) = tokio::sync::mpsc::channel(32);
        // The ceremony runs to its end (commit or abort on every node) even if the caller leaves.
        tokio::spawn(self.core.clone().create_key(request, key_id, sender));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn cluster_status(
        &self,
        _: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        Ok(Response::new(self.core.cluster_status().await))
    }

    async fn disable_key(
        &self,
        request: Request<DisableKeyRequest>,
    ) -> Result<Response<Key>, Status> {
        let key = self
            .core
            .registry
            .disable_key(&request.into_inner().key_id)?;
        tracing::info!(key_id = key.key_id, "key disabled");
        Ok(Response::new(key_to_api(&key)))
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
