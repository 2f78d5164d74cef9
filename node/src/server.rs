//! Serving: mutual TLS that admits only the coordinator's client certificate, the node service,
//! gRPC health and reflection, a reaper for timed-out sessions, and a ready file that tells
//! supervisors and tests the bound address.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use shardsign_proto::node::v1::node_server::NodeServer;
use shardsign_request::SESSION_ID_MEMORY_SECS;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};

use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::service::NodeService;
use crate::sessions::{Node, metric};
use crate::store::{MAX_SECURITY_EVENTS, SECURITY_EVENT_RETENTION_SECS};

/// Largest request the node decodes: a delivery of a few sealed envelopes.
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// Admits only clients whose leaf certificate hashes to one of `pinned` (the coordinators').
fn coordinator_only(
    pinned: Vec<[u8; 32]>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let digest: [u8; 32] = Sha256::digest(leaf.as_ref()).into();
        if !pinned.contains(&digest) {
            return Err(Status::permission_denied(
                "this client certificate is not a pinned coordinator's",
            ));
        }
        Ok(request)
    }
}

/// Every 500 ms: drops sessions past their round deadline; hourly, prunes security events past
/// their retention and the session ids too old to be accepted again. Pending shares are never purged: a node stores one only with all three
/// nodes' confirmations, so the ceremony can still be committed (or aborted) by its session id.
async fn reap(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut pruned_at: Option<std::time::Instant> = None;
    loop {
        tick.tick().await;
        node.reap_expired();
        if pruned_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600)) {
            pruned_at = Some(std::time::Instant::now());
            let store_of = node.clone();
            let pruned = tokio::task::spawn_blocking(move || {
                let store = store_of.store();
                let events = store
                    .prune_security_events(SECURITY_EVENT_RETENTION_SECS, MAX_SECURITY_EVENTS)?;
                let sessions = store.prune_used_sessions(SESSION_ID_MEMORY_SECS)?;
                Ok::<_, NodeError>((events, sessions))
            })
            .await;
            match pruned {
                Ok(Ok((0, 0))) => {}
                Ok(Ok((events, sessions))) => {
                    tracing::info!(
                        events,
                        sessions,
                        "old security events and session ids pruned"
                    )
                }
                Ok(Err(error)) => tracing::error!(%error, "could not prune the node's store"),
                Err(_) => tracing::error!("the pruning task failed"),
            }
        }
    }
}

/// The gauges computed at scrape time: sessions in flight, keys held.
fn gauges(node: Arc<Node>) -> shardsign_metrics::Refresh {
    Arc::new(move |m: &shardsign_metrics::Metrics| {
        m.set(
            metric::IN_FLIGHT,
            "Key-generation and signing sessions open on this node",
            &[],
            node.sessions_in_flight() as f64,
        );
        if let Ok(keys) = node.store().list_keys(false) {
            m.set(
                metric::KEYS,
                "Keys this node holds a share of",
                &[],
                keys.len() as f64,
            );
        }
    })
}

/// Serves until `shutdown` completes.
pub async fn serve(
    config: NodeConfig,
    node: Arc<Node>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let (listener, address) = shardsign_serve::bind(config.listen).await?;

    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            &config.tls.cert_pem,
            config.tls.key_pem.as_bytes(),
        ))
        .client_ca_root(Certificate::from_pem(&config.tls.client_ca_pem));
    let (health_service, reflection) = shardsign_serve::health_and_reflection(
        &[<NodeServer<NodeService> as NamedService>::NAME],
        shardsign_proto::FILE_DESCRIPTOR_SET,
    )
    .await?;
    let service = NodeServer::new(NodeService::new(node.clone()))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    let service = InterceptedService::new(
        service,
        coordinator_only(config.tls.coordinator_cert_sha256),
    );

    let reaper = tokio::spawn(reap(node.clone()));
    let local_admin = crate::local_admin::serve(&config.data_dir, node.clone())?;
    if let Some(metrics_address) = config.metrics_listen {
        shardsign_serve::serve_metrics(
            metrics_address,
            node.metrics().clone(),
            gauges(node.clone()),
            config.ready_file.as_deref(),
        )
        .await?;
    }
    if let Some(path) = &config.ready_file {
        shardsign_serve::write_ready_file(path, address)?;
    }
    tracing::info!(%address, node_id = %node.node_id(), cluster_id = node.cluster_id(), "serving over mutual TLS");

    // A backstop for every call (a round is bounded by the round timeout already).
    let result = shardsign_serve::limit_server(Server::builder(), Duration::from_secs(120))
        .tls_config(tls.timeout(shardsign_serve::DEFAULT_HANDSHAKE_TIMEOUT))
        .map_err(|e| NodeError::config("tls", e.to_string()))?
        .add_service(health_service)
        .add_service(reflection)
        .add_service(service)
        .serve_with_incoming_shutdown(
            // No Nagle: each round is a small request answered at once; delayed ACKs would add
            // tens of milliseconds per round trip.
            shardsign_serve::PerSourceIncoming::new(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                shardsign_serve::DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
                Some(node.metrics().clone()),
            ),
            shutdown,
        )
        .await;
    reaper.abort();
    local_admin.abort();
    let _ = std::fs::remove_file(crate::local_admin::socket_path(&config.data_dir));
    result.map_err(|e| NodeError::config("listen", format!("server failed: {e}")))
}
