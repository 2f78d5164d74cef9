//! Serving the public API: TLS when configured, the two services (each call authenticated inside), health
//! and reflection, and a ready file with the bound address.

use std::future::Future;
use std::sync::Arc;

use shardsign_eth::Limits;
use shardsign_proto::v1::admin_server::AdminServer;
use shardsign_proto::v1::signer_server::SignerServer;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::apikeys::{SecretHasher, load_or_create_hmac_key};
use crate::auth::Authenticator;
use crate::config::CoordinatorConfig;
use crate::core::Coordinator;
use crate::error::CoordError;
use crate::key_policies::KeyPolicies;
use crate::metrics::AccessMetrics;
use crate::pool::NodePool;
use crate::ratelimit::RateLimiter;
use crate::registry::Registry;
use crate::service::{AdminService, SignerService};
use shardsign_policy::PolicyVerifier;

/// Largest public request: a transaction with the largest allowed data, with room to spare.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

pub async fn serve(
    config: CoordinatorConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), CoordError> {
    let registry = Registry::open(&config.database)?;
    let pool = NodePool::new(&config)?;
    let hmac_key = load_or_create_hmac_key(&config.api_key_hmac_key_file)?;
    if config.bootstrap_token.is_some() {
        tracing::info!("the bootstrap credential is enabled until an admin API key exists");
    }
    let auth = Authenticator::new(
        &registry,
        SecretHasher::new(hmac_key),
        config.environment,
        config.bootstrap_token,
        Arc::new(AccessMetrics::new()),
    )?;
    let verifier = config
        .policy_public_key
        .as_deref()
        .map(PolicyVerifier::from_hex)
        .transpose()
        .map_err(|e| CoordError::config("policy_public_key", e.to_string()))?;
    if verifier.is_none() {
        tracing::warn!(
            "no policy_public_key configured: signing keys have no operator-signed policy (API-key policies still apply)"
        );
    }
    let key_policies = KeyPolicies::load(verifier, &config.cluster_id, &registry)?;
    let core = Arc::new(Coordinator {
        registry,
        pool,
        limits: Limits::DEFAULT,
        round_timeout: config.round_timeout,
        cluster_id: config.cluster_id.clone(),
        auth,
        key_policies,
        rate: RateLimiter::default(),
    });

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
    let admin = AdminServer::new(AdminService { core: core.clone() })
        .max_decoding_message_size(MAX_REQUEST_BYTES);

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
    if let Some(metrics_address) = config.metrics_listen {
        let refresh_core = core.clone();
        let bound = shardsign_metrics::spawn(
            metrics_address,
            core.auth.metrics.registry.clone(),
            Arc::new(move |m: &shardsign_metrics::Metrics| {
                for node in [1u8, 2, 3] {
                    let up = if refresh_core.pool.available(node) {
                        1.0
                    } else {
                        0.0
                    };
                    m.set(
                        crate::metrics::NODE_AVAILABLE,
                        "1 if the node has not failed in the last 5 s",
                        &[("node", &node.to_string())],
                        up,
                    );
                }
                for (direction, counter) in [
                    ("from_nodes", &crate::relay::RELAYED_FROM_NODES),
                    ("to_nodes", &crate::relay::RELAYED_TO_NODES),
                ] {
                    m.set(
                        "shardsign_relayed_bytes",
                        "Protocol bytes relayed between nodes (protobuf-encoded), by direction",
                        &[("direction", direction)],
                        counter.load(std::sync::atomic::Ordering::Relaxed) as f64,
                    );
                }
                m.set(
                    crate::metrics::IN_FLIGHT,
                    "Signing requests being served",
                    &[],
                    refresh_core.auth.metrics.in_flight_now() as f64,
                );
            }),
        )
        .await
        .map_err(|e| {
            CoordError::config(
                "metrics_listen",
                format!("cannot bind {metrics_address}: {e}"),
            )
        })?;
        if let Some(path) = &config.ready_file {
            std::fs::write(path.with_extension("metrics"), bound.to_string())
                .map_err(|e| CoordError::config("ready_file", e.to_string()))?;
        }
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
        .add_service(signer)
        .add_service(admin)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
        .map_err(|e| CoordError::config("listen", format!("server failed: {e}")))
}
