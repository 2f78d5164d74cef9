//! Serving the public API: TLS when configured, the two services (each call authenticated inside), health
//! and reflection, and a ready file with the bound address.

use std::future::Future;
use std::sync::Arc;

use shardsign_proto::v1::admin_server::AdminServer;
use shardsign_proto::v1::approvals_server::ApprovalsServer;
use shardsign_proto::v1::signer_server::SignerServer;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::access::apikeys::{SecretHasher, load_or_create_hmac_key};
use crate::access::auth::Authenticator;
use crate::access::freshness::{Freshness, Reload};
use crate::access::ratelimit::RateLimiter;
use crate::admin::Admin;
use crate::api::{AdminService, ApprovalsService, SignerService};
use crate::approvals::Approvals;
use crate::ceremony::Ceremony;
use crate::config::CoordinatorConfig;
use crate::error::CoordError;
use crate::metrics::CoordinatorMetrics;
use crate::refresh::Refresher;
use crate::registry::Registry;
use crate::replace::Replacer;
use crate::signing::Signing;
use crate::signing::admission::Admission;
use crate::signing::bans::Bans;
use crate::signing::key_policies::KeyPolicies;
use crate::signing::pool::NodePool;
use sha2::Digest as _;
use shardsign_policy::PolicyVerifier;

/// Largest public request: a transaction with the largest allowed data, with room to spare.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// The coordinator's components, wired: the two public services and what the metrics read.
struct Components {
    signer: SignerService,
    admin: AdminService,
    approvals: ApprovalsService,
    pool: Arc<NodePool>,
    metrics: Arc<CoordinatorMetrics>,
}

/// Opens the registry and builds every component from the config (the bootstrap token moves
/// into the authenticator).
fn build(config: &mut CoordinatorConfig) -> Result<Components, CoordError> {
    let registry = Arc::new(Registry::open_configured(&config.database)?);
    let metrics = Arc::new(CoordinatorMetrics::new());
    let bans = Arc::new(Bans::new(registry.clone(), metrics.clone()));
    let pool = Arc::new(NodePool::new(config, bans)?);
    let hmac_key = load_or_create_hmac_key(&config.api_key_hmac_key_file)?;
    if config.bootstrap_token.is_some() {
        tracing::info!("the bootstrap credential is enabled until an admin API key exists");
    }
    if registry.is_shared() {
        // Every coordinator must hash API keys alike, or keys made on one fail on another.
        let fingerprint: [u8; 8] = sha2::Sha256::new()
            .chain_update(b"shardsign api-key hashing key fingerprint\0")
            .chain_update(hmac_key.as_slice())
            .finalize()[..8]
            .try_into()
            .expect("8 bytes");
        if !registry.agree_on(
            "api_key_hmac_fingerprint",
            i64::from_be_bytes(fingerprint) >> 1,
        )? {
            return Err(CoordError::config(
                "auth.api_key_hmac_key_file",
                format!(
                    "{} is not the hashing key the other coordinators of this registry use; copy theirs",
                    config.api_key_hmac_key_file.display()
                ),
            ));
        }
    }
    let auth = Arc::new(Authenticator::new(
        &registry,
        SecretHasher::new(hmac_key),
        config.environment,
        config.bootstrap_token.take(),
        metrics.clone(),
    )?);
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
    let key_policies = Arc::new(KeyPolicies::load(
        verifier,
        &config.cluster_id,
        &registry,
        metrics.registry.clone(),
    )?);
    if registry.is_shared() {
        auth.follow(Freshness::new(
            registry.clone(),
            vec![key_policies.clone() as Arc<dyn Reload>],
        )?);
    }
    let rate = Arc::new(RateLimiter::default());
    let approvals = Arc::new(Approvals::new(
        registry.clone(),
        key_policies.clone(),
        metrics.clone(),
        config.cluster_id.clone(),
    ));
    approvals.sweep();
    let admission = Admission::new(
        registry.clone(),
        key_policies.clone(),
        rate.clone(),
        metrics.clone(),
        approvals.clone(),
        config.request_timeout,
    );
    let signing = Arc::new(Signing::new(
        registry.clone(),
        auth.clone(),
        admission,
        pool.clone(),
        config.round_timeout,
        metrics.clone(),
    ));
    let ceremony = Arc::new(Ceremony {
        registry: registry.clone(),
        pool: pool.clone(),
        round_timeout: config.round_timeout,
    });
    let refresher = Arc::new(Refresher::new(
        registry.clone(),
        pool.clone(),
        config.round_timeout,
        metrics.clone(),
    ));
    let admin = Arc::new(Admin {
        registry: registry.clone(),
        auth: auth.clone(),
        key_policies,
        pool: pool.clone(),
        rate,
        metrics: metrics.clone(),
    });
    Ok(Components {
        approvals: ApprovalsService {
            auth: auth.clone(),
            approvals,
        },
        signer: SignerService {
            auth: auth.clone(),
            registry,
            signing,
            request_timeout: config.request_timeout,
        },
        admin: AdminService {
            auth,
            admin,
            ceremony,
            replacer: Arc::new(Replacer {
                refresher: refresher.clone(),
            }),
            refresher,
        },
        pool,
        metrics,
    })
}

/// The gauges computed at scrape time: node availability, relayed bytes, requests in flight.
fn gauges(
    pool: Arc<NodePool>,
    metrics: Arc<CoordinatorMetrics>,
    registry: Arc<Registry>,
    refresh_every: Option<std::time::Duration>,
) -> shardsign_metrics::Refresh {
    Arc::new(move |m: &shardsign_metrics::Metrics| {
        if let Ok(keys) = registry.list_keys() {
            let now = crate::registry::unix_now();
            let active = keys.iter().filter(|k| !k.disabled);
            let oldest = active
                .clone()
                .map(|k| now.saturating_sub(k.epoch_changed_at))
                .max()
                .unwrap_or(0);
            m.set(
                crate::metrics::EPOCH_OLDEST,
                "Age of the oldest key epoch (time since the key's last refresh or its creation)",
                &[],
                oldest as f64,
            );
            if let Some(every) = refresh_every {
                // Overdue: twice the schedule without a refresh (the schedule retries a key
                // that failed, so one missed round is not yet an alert).
                let limit = 2 * every.as_secs() as i64;
                let overdue = active
                    .filter(|k| now.saturating_sub(k.epoch_changed_at) > limit)
                    .count();
                m.set(
                    crate::metrics::EPOCHS_OVERDUE,
                    "Active keys whose epoch is older than twice refresh_every",
                    &[],
                    overdue as f64,
                );
            }
        }
        for node in [1u8, 2, 3] {
            m.set(
                crate::metrics::NODE_AVAILABLE,
                "1 if the node has not failed in the last 5 s",
                &[("node", &node.to_string())],
                if pool.available(node) { 1.0 } else { 0.0 },
            );
        }
        for (direction, counter) in [
            ("from_nodes", &crate::signing::relay::RELAYED_FROM_NODES),
            ("to_nodes", &crate::signing::relay::RELAYED_TO_NODES),
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
            metrics.in_flight_now() as f64,
        );
    })
}

/// Every minute: parked requests past their expiry become final (audited, counted), so an
/// expiry is recorded when it happens, not when someone next looks.
async fn expire_approvals(approvals: Arc<Approvals>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        let approvals = approvals.clone();
        if tokio::task::spawn_blocking(move || approvals.sweep())
            .await
            .is_err()
        {
            tracing::error!("the approval expiry task failed");
        }
    }
}

/// Hourly: logs every signing-key policy that expires within 7 days (or has no expiry), and
/// deletes the idempotency records older than their window and decided approvals past theirs.
async fn hourly_upkeep(key_policies: Arc<KeyPolicies>, registry: Arc<Registry>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tick.tick().await;
        for warning in key_policies.expiry_warnings(crate::registry::unix_now()) {
            tracing::warn!(warning, "key policy needs renewal");
        }
        let pruning = registry.clone();
        match tokio::task::spawn_blocking(move || pruning.prune_idempotency()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(pruned)) => tracing::info!(pruned, "expired idempotency records deleted"),
            Ok(Err(error)) => tracing::error!(%error, "could not prune idempotency records"),
            Err(_) => tracing::error!("the idempotency pruning task failed"),
        }
        let pruning = registry.clone();
        let cutoff = crate::registry::unix_now() - crate::approvals::DECIDED_RETENTION_SECS;
        match tokio::task::spawn_blocking(move || pruning.prune_approvals(cutoff)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(pruned)) => tracing::info!(pruned, "decided approvals past retention deleted"),
            Ok(Err(error)) => tracing::error!(%error, "could not prune decided approvals"),
            Err(_) => tracing::error!("the approval pruning task failed"),
        }
    }
}

pub async fn serve(
    mut config: CoordinatorConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), CoordError> {
    let components = build(&mut config)?;
    // Learn the bans the nodes hold before the first request needs them (best effort: a node
    // that is down now is asked again by every cluster status, and refuses a banned pair itself).
    tokio::spawn({
        let admin = components.admin.admin.clone();
        async move { admin.cluster_status().await }
    });
    if let Some(every) = config.refresh_every {
        tokio::spawn(crate::refresh_schedule::run(
            components.admin.refresher.clone(),
            components.admin.admin.registry.clone(),
            every,
        ));
    }
    tokio::spawn(hourly_upkeep(
        components.admin.admin.key_policies.clone(),
        components.admin.admin.registry.clone(),
    ));
    tokio::spawn(expire_approvals(components.approvals.approvals.clone()));
    let (listener, address) = shardsign_serve::bind(config.listen).await?;
    let (health_service, reflection) = shardsign_serve::health_and_reflection(
        &[
            <SignerServer<SignerService> as NamedService>::NAME,
            <AdminServer<AdminService> as NamedService>::NAME,
            <ApprovalsServer<ApprovalsService> as NamedService>::NAME,
        ],
        shardsign_proto::FILE_DESCRIPTOR_SET,
    )
    .await?;
    // A backstop: signing has its own deadline (request_timeout); a key ceremony answers with a
    // stream at once.
    let mut builder = shardsign_serve::limit_server(
        Server::builder(),
        config.request_timeout + std::time::Duration::from_secs(30),
    );
    match &config.tls {
        Some(tls) => {
            builder = builder
                .tls_config(
                    ServerTlsConfig::new()
                        .identity(Identity::from_pem(&tls.cert, tls.key.as_bytes()))
                        .timeout(config.tls_handshake_timeout),
                )
                .map_err(|e| CoordError::config("tls", e.to_string()))?;
        }
        None if !address.ip().is_loopback() => {
            tracing::warn!(%address, "serving WITHOUT TLS on a non-loopback address: bearer tokens travel in the clear");
        }
        None => {}
    }
    if let Some(metrics_address) = config.metrics_listen {
        shardsign_serve::serve_metrics(
            metrics_address,
            components.metrics.registry.clone(),
            gauges(
                components.pool.clone(),
                components.metrics.clone(),
                components.admin.admin.registry.clone(),
                config.refresh_every,
            ),
            config.ready_file.as_deref(),
        )
        .await?;
    }
    if let Some(path) = &config.ready_file {
        shardsign_serve::write_ready_file(path, address)?;
    }
    tracing::info!(%address, tls = config.tls.is_some(), cluster_id = config.cluster_id, "coordinator serving");
    builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            SignerServer::new(components.signer).max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            AdminServer::new(components.admin).max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            ApprovalsServer::new(components.approvals).max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .serve_with_incoming_shutdown(
            shardsign_serve::PerSourceIncoming::new(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                config.max_connections_per_source,
                Some(components.metrics.registry.clone()),
            ),
            shutdown,
        )
        .await
        .map_err(|e| CoordError::config("listen", format!("server failed: {e}")))
}
