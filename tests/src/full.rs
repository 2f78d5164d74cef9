//! A whole local cluster: three node processes and a coordinator process on loopback, with
//! public-API clients that present the admin or signer token over TLS.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use shardsign_devcert::Usage;
use shardsign_proto::v1::admin_client::AdminClient;
use shardsign_proto::v1::signer_client::SignerClient;
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

pub struct CoordinatorProcess {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub address: String,
    child: Option<Child>,
    admin_token: String,
    signer_token: String,
}

impl CoordinatorProcess {
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
            .env("SHARDSIGN_TEST_ADMIN_TOKEN", &self.admin_token)
            .env("SHARDSIGN_TEST_SIGNER_TOKEN", &self.signer_token)
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
    pub admin_token: String,
    pub signer_token: String,
}

fn write(path: &std::path::Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl Cluster {
    pub fn start() -> Cluster {
        let nodes = NodeCluster::start(KekKind::KeyFile);
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
        let members: String = nodes
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "[[nodes]]\nnode_id = {}\naddress = \"https://{}\"\ntls_name = \"localhost\"\n",
                    n.id, n.address
                )
            })
            .collect();
        let config = dir.join("coordinator.toml");
        write(
            &config,
            &format!(
                "cluster_id = \"test-cluster\"\nlisten = \"127.0.0.1:0\"\ndatabase = \"{db}\"\nready_file = \"{ready}\"\n\
                 request_timeout_secs = 20\nround_timeout_secs = 5\n\
                 auth = {{ admin_token_env = \"SHARDSIGN_TEST_ADMIN_TOKEN\", signer_token_env = \"SHARDSIGN_TEST_SIGNER_TOKEN\" }}\n\
                 tls = {{ cert = \"{cert}\", key = \"{key}\" }}\n\
                 node_tls = {{ ca = \"{ca}\", cert = \"{client_cert}\", key = \"{client_key}\" }}\n\n{members}",
                db = dir.join("coordinator.db").display(),
                ready = dir.join("ready").display(),
                cert = dir.join("api.pem").display(),
                key = dir.join("api.key").display(),
                ca = nodes.root.path().join("ca.pem").display(),
                client_cert = dir.join("node-client.pem").display(),
                client_key = dir.join("node-client.key").display(),
            ),
        );
        let admin_token = format!("admin-{}", hex_random());
        let signer_token = format!("signer-{}", hex_random());
        let mut coordinator = CoordinatorProcess {
            log: dir.join("coordinator.log"),
            dir,
            config,
            address: String::new(),
            child: None,
            admin_token: admin_token.clone(),
            signer_token: signer_token.clone(),
        };
        coordinator.start();
        Cluster {
            nodes,
            coordinator,
            admin_token,
            signer_token,
        }
    }

    pub fn channel(&self) -> Channel {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.nodes.ca.cert_pem()))
            .domain_name("localhost");
        Endpoint::from_shared(format!("https://{}", self.coordinator.address))
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls")
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy()
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
}
