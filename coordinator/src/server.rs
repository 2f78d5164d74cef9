//! Serving the public API: TLS when configured, bearer-token interceptors per service, health
//! and reflection, and a ready file with the bound address.

use std::future::Future;
use std::sync::Arc;

use shardsign_eth::Limits;
use shardsign_proto::v1::admin_server::AdminServer;
use shardsign_proto::v1::signer_server::SignerServer;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::auth::{Credentials, Role, require};
use crate::config::CoordinatorConfig;
use crate::core::Coordinator;
use crate::error::CoordError;
use crate::pool::NodePool;
use crate::registry::Registry;
use crate::service::{AdminService, SignerService};

/// Largest public request: a transaction with the largest allowed data, with room to spare.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

pub async fn serve(
    config: CoordinatorConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), CoordError> {
    let registry = Registry::open(&config.database)?;
    let pool = NodePool::new(&config)?;
    let core = Arc::new(Coordinator {
        registry,
        pool,
        limits: Limits::DEFAULT,
        round_timeout: config.round_timeout,
    });
    let credentials = Arc::new(Credentials::new(config.admin_token, config.signer_token));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| CoordError::config("listen", format!("cannot bind {}: {e}", config.listen)))?;
    let address = listener
        .local_addr()
        .map_err(|e| CoordError::config("listen", e.to_string()))?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<SignerServer<SignerService>>()
        .await;
    health_reporter
        .set_serving::<AdminServer<AdminService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(shardsign_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| CoordError::config("reflection", e.to_string()))?;
    let signer = SignerServer::new(SignerService {
        core: core.clone(),
        request_timeout: config.request_timeout,
    })
    .max_decoding_message_size(MAX_REQUEST_BYTES);
    let admin =
        AdminServer::new(AdminService { core }).max_decoding_message_size(MAX_REQUEST_BYTES);

    let mut builder = Server::builder();
    match &config.tls {
        Some(tls) => {
            builder = builder
                .tls_config(
                    ServerTlsConfig::new()
                        .identity(Identity::from_pem(&tls.cert, tls.key.as_bytes())),
                )
                .map_err(|e| CoordError::config("tls", e.to_string()))?;
        }
        None if !address.ip().is_loopback() => {
            tracing::warn!(%address, "serving WITHOUT TLS on a non-loopback address: bearer tokens travel in the clear");
        }
        None => {}
    }
    if let Some(path) = &config.ready_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, address.to_string())
            .map_err(|e| CoordError::config("ready_file", e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| CoordError::config("ready_file", e.to_string()))?;
    }
    tracing::info!(%address, tls = config.tls.is_some(), cluster_id = config.cluster_id, "coordinator serving");
    builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(InterceptedService::new(
            signer,
            require(credentials.clone(), Role::Signer),
        ))
        .add_service(InterceptedService::new(
            admin,
            require(credentials, Role::Admin),
        ))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
        .map_err(|e| CoordError::config("listen", format!("server failed: {e}")))
}
