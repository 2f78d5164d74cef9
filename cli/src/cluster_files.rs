//! The config files of the two clusters the CLI sets up, as shardsign-provision's types: the
//! local processes of `dev up`, and the containers of the docker-compose deployment
//! (`dev compose-configs`, which `scripts/compose.sh` runs). Each node's `members` come from the
//! identities `shardsign-node init --json` printed.

use std::path::Path;

use anyhow::Context;
use shardsign_provision::{
    ApiTlsFile, AuthFile, CoordinatorFile, Identity, KekFile, MemberFile, NodeAddressFile,
    NodeClientTlsFile, NodeFile, NodeTlsFile,
};

/// What every config of one cluster shares.
pub struct Shared {
    pub cluster_id: String,
    /// The operator's policy public key (hex).
    pub policy_public_key: String,
    /// SHA-256 (hex) of the coordinator's client certificate, the one client nodes serve.
    pub coordinator_cert_sha256: String,
    pub members: Vec<MemberFile>,
    /// The membership keys' public halves (hex): a quorum of them signs a node replacement.
    pub membership_public_keys: Vec<String>,
}

/// The development cluster's three membership keys, `secrets/membership-{1,2,3}.key` in `dir`
/// (made if missing); their public halves. A production cluster keeps these offline, apart
/// from each other and from the policy key (`shardsign membership keygen`).
pub fn dev_membership_keys(dir: &Path) -> anyhow::Result<Vec<String>> {
    (1..=3)
        .map(|i| {
            let path = dir.join("secrets").join(format!("membership-{i}.key"));
            if path.exists() {
                let key = crate::commands::read_membership_key(&path)?;
                Ok(hex::encode(key.verifying_key().to_bytes()))
            } else {
                crate::commands::write_new_membership_key(&path)
            }
        })
        .collect()
}

/// The three identities `identity-1.json` .. `identity-3.json` in `dir`.
pub fn read_members(dir: &Path) -> anyhow::Result<Vec<MemberFile>> {
    (1..=3)
        .map(|id| {
            let path = dir.join(format!("identity-{id}.json"));
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let identity: Identity = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not `shardsign-node init --json` output",
                    path.display()
                )
            })?;
            Ok(identity.member())
        })
        .collect()
}

/// `dev up`: everything under `root` (absolute), the API on 127.0.0.1:`port` and the nodes on
/// the next three ports.
pub fn local(root: &Path, port: u16, shared: &Shared) -> (Vec<NodeFile>, CoordinatorFile) {
    let at = |rel: &str| root.join(rel);
    let nodes = (1..=3u16)
        .map(|id| NodeFile {
            node_id: id as u8,
            cluster_id: shared.cluster_id.clone(),
            data_dir: at(&format!("node-{id}")),
            listen: format!("127.0.0.1:{}", port + id),
            ready_file: Some(at(&format!("node-{id}.ready"))),
            metrics_listen: None,
            round_timeout_secs: None,
            max_sessions: None,
            log_format: None,
            policy_public_key: Some(shared.policy_public_key.clone()),
            insecure_no_key_policy: None,
            membership_public_keys: shared.membership_public_keys.clone(),
            membership_quorum: None,
            kek: KekFile {
                passphrase_file: Some(at("secrets/node-passphrase")),
                ..Default::default()
            },
            tls: NodeTlsFile {
                cert: at(&format!("certs/node-{id}.pem")),
                key: at(&format!("certs/node-{id}.key")),
                client_ca: at("certs/ca.pem"),
                coordinator_cert_sha256: shared.coordinator_cert_sha256.clone(),
            },
            members: shared.members.clone(),
        })
        .collect();
    let coordinator = CoordinatorFile {
        cluster_id: shared.cluster_id.clone(),
        listen: format!("127.0.0.1:{port}"),
        database: at("coordinator/coordinator.db"),
        ready_file: Some(at("coordinator.ready")),
        metrics_listen: None,
        request_timeout_secs: None,
        round_timeout_secs: None,
        tls_handshake_timeout_secs: None,
        max_connections_per_source: None,
        refresh_every: None,
        log_format: None,
        policy_public_key: Some(shared.policy_public_key.clone()),
        auth: AuthFile {
            bootstrap_token_file: Some(at("secrets/bootstrap-token")),
            api_key_hmac_key_file: Some(at("secrets/api-key-hmac.key")),
            environment: Some("test".into()),
            ..Default::default()
        },
        tls: Some(ApiTlsFile {
            cert: at("certs/api.pem"),
            key: at("certs/api.key"),
        }),
        insecure_plaintext_api: None,
        node_tls: NodeClientTlsFile {
            ca: at("certs/ca.pem"),
            cert: at("certs/coordinator-client.pem"),
            key: at("certs/coordinator-client.key"),
        },
        nodes: (1..=3u16)
            .map(|id| NodeAddressFile {
                node_id: id as u8,
                address: format!("https://127.0.0.1:{}", port + id),
                tls_name: "localhost".into(),
                fingerprint: None,
            })
            .collect(),
    };
    (nodes, coordinator)
}

/// docker-compose: paths inside the containers (docker-compose.yml mounts them there), each
/// node at `node-N:7001`, JSON logs, metrics on 9100 inside the network.
pub fn compose(shared: &Shared) -> (Vec<NodeFile>, CoordinatorFile) {
    let nodes = (1..=3u8)
        .map(|id| NodeFile {
            node_id: id,
            cluster_id: shared.cluster_id.clone(),
            data_dir: "/data/store".into(),
            listen: "0.0.0.0:7001".into(),
            ready_file: None,
            metrics_listen: Some("0.0.0.0:9100".into()),
            round_timeout_secs: None,
            max_sessions: None,
            log_format: Some("json".into()),
            policy_public_key: Some(shared.policy_public_key.clone()),
            insecure_no_key_policy: None,
            membership_public_keys: shared.membership_public_keys.clone(),
            membership_quorum: None,
            kek: KekFile {
                passphrase_file: Some("/run/secrets/node_passphrase".into()),
                ..Default::default()
            },
            tls: NodeTlsFile {
                cert: "/certs/node.pem".into(),
                key: "/certs/node.key".into(),
                client_ca: "/certs/ca.pem".into(),
                coordinator_cert_sha256: shared.coordinator_cert_sha256.clone(),
            },
            members: shared.members.clone(),
        })
        .collect();
    let coordinator = CoordinatorFile {
        cluster_id: shared.cluster_id.clone(),
        listen: "0.0.0.0:7100".into(),
        database: "/data/coordinator.db".into(),
        ready_file: None,
        metrics_listen: Some("0.0.0.0:9100".into()),
        request_timeout_secs: None,
        round_timeout_secs: None,
        tls_handshake_timeout_secs: None,
        max_connections_per_source: None,
        refresh_every: None,
        log_format: Some("json".into()),
        policy_public_key: Some(shared.policy_public_key.clone()),
        auth: AuthFile {
            bootstrap_token_file: Some("/run/secrets/bootstrap_token".into()),
            environment: Some("test".into()),
            ..Default::default()
        },
        tls: Some(ApiTlsFile {
            cert: "/certs/api.pem".into(),
            key: "/certs/api.key".into(),
        }),
        insecure_plaintext_api: None,
        node_tls: NodeClientTlsFile {
            ca: "/certs/ca.pem".into(),
            cert: "/certs/coordinator-client.pem".into(),
            key: "/certs/coordinator-client.key".into(),
        },
        nodes: (1..=3u8)
            .map(|id| NodeAddressFile {
                node_id: id,
                address: format!("https://node-{id}:7001"),
                tls_name: format!("node-{id}"),
                fingerprint: None,
            })
            .collect(),
    };
    (nodes, coordinator)
}

/// The compose coordinator on the `postgres` service's database (`--profile ha`): the password
/// and the API-key hashing key both coordinators share come from container secrets.
pub fn share_postgres(coordinator: &mut CoordinatorFile) {
    coordinator.database = "postgres://shardsign@postgres:5432/shardsign".into();
    coordinator.auth.api_key_hmac_key_file = Some("/run/secrets/api_key_hmac_key".into());
}

/// The second compose coordinator: the first's config with its own node-client certificate.
pub fn second_coordinator(first: &CoordinatorFile) -> CoordinatorFile {
    let mut second = first.clone();
    second.node_tls.cert = "/certs/coordinator-2-client.pem".into();
    second.node_tls.key = "/certs/coordinator-2-client.key".into();
    second
}

/// Writes `node-1.toml` .. `node-3.toml` and `coordinator.toml` into `dir`.
pub fn write(dir: &Path, nodes: &[NodeFile], coordinator: &CoordinatorFile) -> anyhow::Result<()> {
    for node in nodes {
        let path = dir.join(format!("node-{}.toml", node.node_id));
        std::fs::write(&path, node.to_toml())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let path = dir.join("coordinator.toml");
    std::fs::write(&path, coordinator.to_toml())
        .with_context(|| format!("cannot write {}", path.display()))
}
