//! A whole local cluster: three node processes and a coordinator process on loopback, with
//! public-API clients that present API keys over TLS. `start` also does what an operator does
//! first: creates an admin API key with the bootstrap credential, and holds the operator's
//! policy key to sign key policies (nodes and coordinator enforce them).

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use shardsign_devcert::Usage;
use shardsign_policy::{KeyStatementHeader, OperatorPolicyKey};
use shardsign_proto::v1::admin_client::AdminClient;
use shardsign_proto::v1::signer_client::SignerClient;
use shardsign_proto::v1::{
    ContractCall, CreateApiKeyRequest, CreateApiKeyResponse, Key, Policy, SetKeyPolicyRequest,
    SetKeyPolicyResponse, SignedStatement,
};
use shardsign_provision::{
    ApiTlsFile, AuthFile, CoordinatorFile, NodeAddressFile, NodeClientTlsFile,
};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::cluster::{
    KekKind, NodeCluster, hex_random, spawn_logged, terminate, wait_ready, workspace_binary,
};

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(pub Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            let value: MetadataValue<_> = format!("Bearer {token}")
                .parse()
                .map_err(|_| Status::internal("token"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

pub type Signer = SignerClient<InterceptedService<Channel, Bearer>>;
pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;
pub type Approvals =
    shardsign_proto::v1::approvals_client::ApprovalsClient<InterceptedService<Channel, Bearer>>;

pub struct CoordinatorProcess {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub address: String,
    child: Option<Child>,
    bootstrap_token: String,
}

impl CoordinatorProcess {
    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn start(&mut self) {
        let ready = self.dir.join("ready");
        let _ = std::fs::remove_file(&ready);
        let mut command = Command::new(workspace_binary(
            "shardsign-coordinator",
            "SHARDSIGN_COORDINATOR_BIN",
        ));
        command
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("SHARDSIGN_TEST_BOOTSTRAP_TOKEN", &self.bootstrap_token)
            .env("RUST_LOG", "info,shardsign_coordinator=debug");
        let mut child = spawn_logged(command, &self.log);
        self.address = wait_ready("coordinator", &mut child, &ready, &self.log);
        self.child = Some(child);
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }

    /// SIGKILL: the process dies at once, mid-request, the way a host dies.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Rewrites the coordinator's config with `change` and restarts it on the new one.
    pub fn reconfigure(&mut self, change: impl FnOnce(&mut CoordinatorFile)) {
        let text = std::fs::read_to_string(&self.config).expect("coordinator config");
        let mut file = CoordinatorFile::parse(&text).expect("coordinator config parses");
        change(&mut file);
        write(&self.config, &file.to_toml());
        self.stop();
        self.start();
    }

    /// Where the coordinator serves `/metrics`.
    pub fn metrics_address(&self) -> String {
        std::fs::read_to_string(self.dir.join("ready.metrics")).expect("metrics address")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct Cluster {
    pub nodes: NodeCluster,
    pub coordinator: CoordinatorProcess,
    /// A second coordinator sharing the first one's PostgreSQL registry ([`Cluster::start_shared`]).
    pub second: Option<CoordinatorProcess>,
    pub bootstrap_token: String,
    /// An admin API key (created with the bootstrap credential).
    pub admin_token: String,
    /// A `read` + `sign` API key for every key, with a policy that allows everything.
    pub signer_token: String,
    /// The operator's policy key (the nodes and the coordinator know its public half).
    pub policy_key: OperatorPolicyKey,
    policy_versions: AtomicU64,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A policy that grants everything on `chains` (what tests that are not about policy use).
pub fn permissive_policy(chains: &[u64]) -> Policy {
    Policy {
        allowed_chain_ids: chains.to_vec(),
        max_value_per_tx: "unlimited".into(),
        max_value_per_24h: "unlimited".into(),
        allowed_recipients: vec!["*".into()],
        allowed_contract_calls: vec![ContractCall {
            to: "*".into(),
            selector: "*".into(),
        }],
        allow_contract_creation: true,
        max_fee_per_gas: "unlimited".into(),
        max_total_fee: "unlimited".into(),
        requests_per_minute: 1_000_000,
        allow_message_signing: true,
        message_rules: None,
        // Typed data has no wildcard: tests about it add the domains they sign.
        allowed_typed_data: Vec::new(),
        allowed_delegates: Vec::new(),
        allow_any_chain_authorization: false,
        tokens: Vec::new(),
        max_permit_validity_secs: 0,
        require_approval_above: String::new(),
        approvers: None,
    }
}

/// Every chain id the tests use with the coordinator.
pub const TEST_CHAINS: &[u64] = &[1, 5, 10, 137, 8453, 11155111];

/// A 1-wei EIP-1559 transfer on chain 1 with `key_id`, under a fresh request id.
pub fn one_wei_transfer(key_id: &str, nonce: u64) -> shardsign_proto::v1::SignTransactionRequest {
    use shardsign_proto::v1::sign_transaction_request::Transaction;
    shardsign_proto::v1::SignTransactionRequest {
        key_id: key_id.into(),
        request_id: format!("req-{}", hex::encode(rand::random::<[u8; 12]>())),
        transaction: Some(Transaction::Eip1559(
            shardsign_proto::v1::Eip1559Transaction {
                chain_id: 1,
                nonce,
                max_priority_fee_per_gas: "1".into(),
                max_fee_per_gas: "100".into(),
                gas_limit: 21_000,
                to: "0x3535353535353535353535353535353535353535".into(),
                value: "1".into(),
                ..Default::default()
            },
        )),
    }
}

/// A TLS channel to the coordinator (needs a tokio runtime).
pub fn channel_to(address: &str, ca_pem: &str) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    Endpoint::from_shared(format!("https://{address}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls")
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// Runs `work` on a runtime of its own, from sync or async code alike.
fn on_own_runtime<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(work)
    })
    .join()
    .expect("helper thread")
}

fn write(path: &std::path::Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl Cluster {
    pub fn start() -> Cluster {
        Self::start_with(KekKind::KeyFile)
    }

    /// [`Cluster::start`] with the nodes' stores sealed by `kek`.
    pub fn start_with(kek: KekKind) -> Cluster {
        Self::start_configured(kek, false)
    }

    /// Two coordinators (`coordinator` and `second`) sharing one throw-away PostgreSQL database
    /// on the server `SHARDSIGN_TEST_POSTGRES` names, in front of the same three nodes.
    pub fn start_shared() -> Cluster {
        Self::start_configured(KekKind::KeyFile, true)
    }

    fn start_configured(kek: KekKind, shared: bool) -> Cluster {
        let policy_key = OperatorPolicyKey::generate();
        let nodes = NodeCluster::start_with(kek, Some(&policy_key.public_hex()));
        let dir = nodes.root.path().join("coordinator");
        std::fs::create_dir_all(&dir).expect("coordinator dir");
        let server = nodes
            .ca
            .issue(
                "coordinator-api",
                &["localhost", "127.0.0.1"],
                Usage::Server,
            )
            .expect("cert");
        write(&dir.join("api.pem"), &server.cert_pem);
        write(&dir.join("api.key"), &server.key_pem);
        write(&dir.join("node-client.pem"), &nodes.coordinator.cert_pem);
        write(&dir.join("node-client.key"), &nodes.coordinator.key_pem);
        // SHARDSIGN_TEST_REGISTRY=postgres runs a test's one coordinator on PostgreSQL too
        // (scripts/test.sh reruns the suites that do not open the SQLite file themselves).
        let postgres =
            shared || std::env::var("SHARDSIGN_TEST_REGISTRY").as_deref() == Ok("postgres");
        let database = if postgres {
            PathBuf::from(crate::postgres::fresh_database_url())
        } else {
            dir.join("coordinator.db")
        };
        let file = CoordinatorFile {
            cluster_id: "test-cluster".into(),
            listen: "127.0.0.1:0".into(),
            database,
            ready_file: Some(dir.join("ready")),
            metrics_listen: Some("127.0.0.1:0".into()),
            request_timeout_secs: Some(20),
            // Short, so that a test can watch a stalled handshake being dropped.
            tls_handshake_timeout_secs: Some(1),
            max_connections_per_source: None,
            refresh_every: None,
            round_timeout_secs: Some(5),
            log_format: None,
            policy_public_key: Some(policy_key.public_hex()),
            auth: AuthFile {
                bootstrap_token_env: Some("SHARDSIGN_TEST_BOOTSTRAP_TOKEN".into()),
                environment: Some("test".into()),
                // Coordinators sharing a registry share the API-key hashing key.
                api_key_hmac_key_file: postgres.then(|| nodes.root.path().join("api-key-hmac.key")),
                ..Default::default()
            },
            tls: Some(ApiTlsFile {
                cert: dir.join("api.pem"),
                key: dir.join("api.key"),
            }),
            insecure_plaintext_api: None,
            node_tls: NodeClientTlsFile {
                ca: nodes.root.path().join("ca.pem"),
                cert: dir.join("node-client.pem"),
                key: dir.join("node-client.key"),
            },
            nodes: nodes
                .nodes
                .iter()
                .map(|n| NodeAddressFile {
                    node_id: n.id,
                    address: format!("https://{}", n.address),
                    tls_name: "localhost".into(),
                    fingerprint: None,
                })
                .collect(),
        };
        let config = dir.join("coordinator.toml");
        write(&config, &file.to_toml());
        let bootstrap_token = format!("bootstrap-{}", hex_random());
        let mut coordinator = CoordinatorProcess {
            log: dir.join("coordinator.log"),
            dir,
            config,
            address: String::new(),
            child: None,
            bootstrap_token: bootstrap_token.clone(),
        };
        coordinator.start();
        let second = shared.then(|| {
            // The same API certificate; its own node-client certificate (the nodes pin both).
            let dir = nodes.root.path().join("coordinator-2");
            std::fs::create_dir_all(&dir).expect("second coordinator dir");
            write(
                &dir.join("node-client.pem"),
                &nodes.standby_coordinator.cert_pem,
            );
            write(
                &dir.join("node-client.key"),
                &nodes.standby_coordinator.key_pem,
            );
            let mut file = file.clone();
            file.ready_file = Some(dir.join("ready"));
            file.node_tls.cert = dir.join("node-client.pem");
            file.node_tls.key = dir.join("node-client.key");
            let config = dir.join("coordinator.toml");
            write(&config, &file.to_toml());
            let mut second = CoordinatorProcess {
                log: dir.join("coordinator.log"),
                dir,
                config,
                address: String::new(),
                child: None,
                bootstrap_token: bootstrap_token.clone(),
            };
            second.start();
            second
        });
        let mut cluster = Cluster {
            nodes,
            coordinator,
            second,
            bootstrap_token: bootstrap_token.clone(),
            admin_token: String::new(),
            signer_token: String::new(),
            policy_key,
            policy_versions: AtomicU64::new(1),
        };
        let address = cluster.coordinator.address.clone();
        let ca_pem = cluster.nodes.ca.cert_pem().to_string();
        let (admin_token, signer_token) = on_own_runtime(async move {
            let channel = channel_to(&address, &ca_pem);
            let mut bootstrap =
                AdminClient::with_interceptor(channel.clone(), Bearer(Some(bootstrap_token)));
            let admin = bootstrap
                .create_api_key(CreateApiKeyRequest {
                    label: "test admin".into(),
                    scopes: vec!["admin".into()],
                    ..Default::default()
                })
                .await
                .expect("bootstrap creates the admin key")
                .into_inner()
                .api_key;
            let signer = AdminClient::with_interceptor(channel, Bearer(Some(admin.clone())))
                .create_api_key(CreateApiKeyRequest {
                    label: "test signer".into(),
                    scopes: vec!["read".into(), "sign".into()],
                    all_keys: true,
                    policy: Some(permissive_policy(TEST_CHAINS)),
                    ..Default::default()
                })
                .await
                .expect("admin creates the signer key")
                .into_inner()
                .api_key;
            (admin, signer)
        });
        cluster.admin_token = admin_token;
        cluster.signer_token = signer_token;
        cluster
    }

    /// The next policy version (increasing across all keys, so always newer).
    pub fn next_policy_version(&self) -> u64 {
        self.policy_versions.fetch_add(1, Ordering::Relaxed)
    }

    /// A key policy signed by the operator's key.
    pub fn signed_policy(&self, key_id: &str, rules: Policy, version: u64) -> SignedStatement {
        self.policy_key
            .sign_key_policy(
                self.statement_header(key_id, version),
                &rules,
                unix_now() + 30 * 86_400,
            )
            .expect("a valid policy")
    }

    /// A statement that disables `key_id` for good, signed by the operator's key.
    pub fn signed_disable(&self, key_id: &str, version: u64, reason: &str) -> SignedStatement {
        self.policy_key
            .sign_key_disable(self.statement_header(key_id, version), reason)
            .expect("a valid disable statement")
    }

    /// The header of a key statement for this cluster, issued now.
    pub fn statement_header<'a>(&self, key_id: &'a str, version: u64) -> KeyStatementHeader<'a> {
        KeyStatementHeader {
            cluster_id: "test-cluster",
            key_id,
            version,
            issued_at_unix: unix_now(),
        }
    }

    /// Signs `rules` as the newest policy of `key_id` and sets it through the Admin API.
    pub async fn set_key_policy(
        &self,
        key_id: &str,
        rules: Policy,
    ) -> Result<SetKeyPolicyResponse, Status> {
        let signed = self.signed_policy(key_id, rules, self.next_policy_version());
        self.admin()
            .set_key_policy(SetKeyPolicyRequest {
                statement: Some(signed),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Gives a freshly created key a policy that allows everything on its chains.
    pub async fn allow_everything(&self, key: &Key) {
        let mut rules = permissive_policy(&key.allowed_chain_ids);
        rules.max_value_per_24h.clear();
        rules.requests_per_minute = 0;
        let response = self
            .set_key_policy(&key.key_id, rules)
            .await
            .expect("set key policy");
        assert_eq!(response.nodes_updated, vec![1, 2, 3], "{response:?}");
    }

    /// Signs a 1-wei transfer with `key_id` (nonces from `first_nonce` on), retrying while the
    /// coordinator answers `UNAVAILABLE` (it backs off a node for a few seconds after failures,
    /// e.g. right after a node's restart), for at most 20 s; any other error fails the test.
    pub async fn sign_once_available(
        &self,
        key_id: &str,
        first_nonce: u64,
    ) -> Result<(), tonic::Status> {
        let mut last = None;
        for attempt in 0..100 {
            match self
                .signer()
                .sign_transaction(one_wei_transfer(key_id, first_nonce + attempt))
                .await
            {
                Ok(_) => return Ok(()),
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    last = Some(status);
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(status) => panic!("{status:?}"),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Runs the key ceremony through the Admin API; panics if it does not end with a key.
    pub async fn ceremony(&self, label: &str, chains: &[u64]) -> Key {
        use shardsign_proto::v1::create_key_event::Event;
        let last = self
            .create_key(shardsign_proto::v1::CreateKeyRequest {
                label: label.into(),
                allowed_chain_ids: chains.to_vec(),
                key_id: String::new(),
            })
            .await;
        match last {
            Some(Event::Done(key)) => key,
            other => panic!("ceremony ended with {other:?}"),
        }
    }

    /// Runs `CreateKey`; the last event of its stream.
    pub async fn create_key(
        &self,
        request: shardsign_proto::v1::CreateKeyRequest,
    ) -> Option<shardsign_proto::v1::create_key_event::Event> {
        let mut stream = self
            .admin()
            .create_key(request)
            .await
            .expect("create_key")
            .into_inner();
        let mut last = None;
        while let Some(event) = stream.message().await.expect("ceremony events") {
            last = event.event;
        }
        last
    }

    /// Waits until node `node`, restored from a backup, has re-learned the cluster's state (each
    /// cluster status call has the coordinator try); panics with the coordinator's warnings if
    /// it has not within 30 s.
    pub async fn wait_relearned(&self, node: u8) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let status = self
                .admin()
                .cluster_status(shardsign_proto::v1::ClusterStatusRequest {})
                .await
                .expect("cluster_status")
                .into_inner();
            let done = status
                .nodes
                .iter()
                .any(|n| n.node_id == u32::from(node) && n.reachable && !n.awaiting_relearn);
            if done {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {node} did not re-learn: {:?}",
                status.warnings
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// The key ids the coordinator has registered.
    pub async fn registered_key_ids(&self) -> Vec<String> {
        self.signer()
            .list_keys(shardsign_proto::v1::ListKeysRequest {})
            .await
            .expect("list_keys")
            .into_inner()
            .keys
            .into_iter()
            .map(|k| k.key_id)
            .collect()
    }

    /// Creates an API key through the admin key.
    pub async fn create_api_key(&self, request: CreateApiKeyRequest) -> CreateApiKeyResponse {
        self.admin()
            .create_api_key(request)
            .await
            .expect("create_api_key")
            .into_inner()
    }

    pub fn channel(&self) -> Channel {
        channel_to(&self.coordinator.address, self.nodes.ca.cert_pem())
    }

    /// The second coordinator ([`Cluster::start_shared`]).
    pub fn second(&self) -> &CoordinatorProcess {
        self.second
            .as_ref()
            .expect("a cluster started with start_shared")
    }

    /// A channel to the second coordinator.
    pub fn second_channel(&self) -> Channel {
        channel_to(&self.second().address, self.nodes.ca.cert_pem())
    }

    pub fn second_signer_with(&self, token: Option<&str>) -> Signer {
        SignerClient::with_interceptor(self.second_channel(), Bearer(token.map(str::to_string)))
    }

    pub fn second_admin(&self) -> Admin {
        AdminClient::with_interceptor(
            self.second_channel(),
            Bearer(Some(self.admin_token.clone())),
        )
    }

    pub fn signer_with(&self, token: Option<&str>) -> Signer {
        SignerClient::with_interceptor(self.channel(), Bearer(token.map(str::to_string)))
    }

    pub fn signer(&self) -> Signer {
        self.signer_with(Some(&self.signer_token))
    }

    pub fn admin_with(&self, token: Option<&str>) -> Admin {
        AdminClient::with_interceptor(self.channel(), Bearer(token.map(str::to_string)))
    }

    pub fn admin(&self) -> Admin {
        self.admin_with(Some(&self.admin_token))
    }

    pub fn approvals_with(&self, token: Option<&str>) -> Approvals {
        shardsign_proto::v1::approvals_client::ApprovalsClient::with_interceptor(
            self.channel(),
            Bearer(token.map(str::to_string)),
        )
    }
}
