//! Three real `shardsign-node` processes on loopback, for the integration tests and the latency
//! bench: temporary data directories, a development CA, ephemeral ports reported through ready
//! files, logs captured per node. The test process plays the coordinator (it holds the pinned
//! client certificate). Processes are killed when the cluster is dropped, and also if the thread
//! that started them dies (PR_SET_PDEATHSIG), so a failed test leaves nothing running.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shardsign_devcert::{DevCa, Issued, Usage};
use shardsign_proto::node::v1::node_client::NodeClient;
use shardsign_provision::{Identity as ProvisionIdentity, KekFile, NodeFile, NodeTlsFile};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How long a node may take to start before the harness gives up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How a node's key-encryption key is supplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KekKind {
    KeyFile,
    Passphrase,
}

/// A workspace binary: `$env_var`, or beside the test executable's `deps/` directory.
pub fn workspace_binary(name: &str, env_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    // A test runs from target/<profile>/deps/, a binary (the benchmark) from target/<profile>/.
    let beside = exe.parent().expect("a directory").to_path_buf();
    let profile_dir = if beside.join(name).exists() {
        beside
    } else {
        beside
            .parent()
            .expect("target/<profile>/deps/<test>")
            .to_path_buf()
    };
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build --workspace --bins` (scripts/test.sh does)",
        binary.display()
    );
    binary
}

/// The `shardsign-node` binary (`SHARDSIGN_NODE_BIN` overrides).
pub fn node_binary() -> PathBuf {
    workspace_binary("shardsign-node", "SHARDSIGN_NODE_BIN")
}

/// The test-only `shardsign-node-malicious` binary (`SHARDSIGN_MALICIOUS_NODE_BIN` overrides),
/// built apart from the workspace with `--features malicious` so that no other build has it.
pub fn malicious_node_binary() -> PathBuf {
    workspace_binary("shardsign-node-malicious", "SHARDSIGN_MALICIOUS_NODE_BIN")
}

/// Starts `command` with its output appended to `log`, killed if the starting thread dies.
pub fn spawn_logged(mut command: Command, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open log");
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    // SAFETY: prctl in the child before exec; no allocation, no locks.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command.spawn().expect("spawn a workspace binary")
}

/// A free loopback address whose port lies below the kernel's ephemeral range, for a process the
/// test restarts in place. A port from `:0` comes from that range, so the moment its listener
/// closes any outgoing connection on the machine may take it as its local port, and the restart
/// then fails to bind; ports below the range are never handed out that way. Handed out one after
/// another from a random start, each probed free.
pub fn restartable_address() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let low = 10_000u32;
    let span = ephemeral_low.saturating_sub(low).max(1);
    let next = NEXT.get_or_init(|| AtomicU32::new(rand::random::<u32>() % span));
    for _ in 0..span {
        let port = low + next.fetch_add(1, Ordering::Relaxed) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return format!("127.0.0.1:{port}");
        }
    }
    panic!("no free port below the ephemeral range");
}

/// Waits until `ready_file` holds an address; panics with the log if the process dies first.
pub fn wait_ready(name: &str, child: &mut Child, ready_file: &Path, log: &Path) -> String {
    let started = Instant::now();
    loop {
        if let Ok(address) = std::fs::read_to_string(ready_file) {
            return address.trim().to_string();
        }
        let log_text = || std::fs::read_to_string(log).unwrap_or_default();
        if !matches!(child.try_wait(), Ok(None)) {
            panic!("{name} exited during start; log:\n{}", log_text());
        }
        assert!(
            started.elapsed() < START_TIMEOUT,
            "{name} did not start; log:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops a child with SIGTERM and waits for it.
pub fn terminate(child: &mut Child) {
    // SAFETY: sending a signal to our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
}

/// One node process and its files.
pub struct NodeProcess {
    pub id: u8,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// What `config` holds (rendered again when a setting changes).
    pub file: NodeFile,
    pub log: PathBuf,
    pub address: String,
    pub passphrase: String,
    /// When set, the node runs as `shardsign-node-malicious` with `SHARDSIGN_MALICIOUS` = this.
    pub misbehaviour: Option<&'static str>,
    child: Option<Child>,
}

impl NodeProcess {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn ready_file(&self) -> PathBuf {
        self.dir.join("ready")
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the process: a node that accepts connections but
    /// never answers.
    pub fn freeze(&mut self, frozen: bool) {
        if let Some(child) = &self.child {
            // SAFETY: sending a signal to our own child's pid.
            unsafe {
                libc::kill(
                    child.id() as i32,
                    if frozen { libc::SIGSTOP } else { libc::SIGCONT },
                );
            }
        }
    }

    /// Stops the process with SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.ready_file());
        let mut command = match self.misbehaviour {
            Some(behaviour) => {
                let mut command = Command::new(malicious_node_binary());
                command.env("SHARDSIGN_MALICIOUS", behaviour);
                command
            }
            None => Command::new(node_binary()),
        };
        command
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("SHARDSIGN_TEST_PASSPHRASE", &self.passphrase)
            .env("RUST_LOG", "info,shardsign_node=debug");
        self.child = Some(spawn_logged(command, &self.log));
    }

    /// Stops the node and starts it again as the misbehaving binary (`Some`) or the real one.
    pub fn restart_misbehaving(&mut self, behaviour: Option<&'static str>) {
        self.stop();
        self.misbehaviour = behaviour;
        self.start();
    }

    /// Starts the process and waits until it reports its address.
    pub fn start(&mut self) {
        self.spawn();
        self.start_wait();
    }

    /// Runs `shardsign-node run` expecting it to fail; returns its stderr.
    pub fn run_expecting_failure(&self, passphrase: &str) -> String {
        let output = Command::new(node_binary())
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("SHARDSIGN_TEST_PASSPHRASE", passphrase)
            .stdin(Stdio::null())
            .output()
            .expect("run shardsign-node");
        assert!(
            !output.status.success(),
            "the node started although it should have failed"
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// Rewrites this node's configuration with `change` (read when the node next starts).
    pub fn reconfigure(&mut self, change: impl FnOnce(&mut NodeFile)) {
        change(&mut self.file);
        write(&self.config, &self.file.to_toml());
    }

    /// This node on a fresh machine: stopped, its data directory deleted, a new store and a new
    /// identity made by `shardsign-node init` (same KEK, same address and TLS certificate), its
    /// own entry in its configuration's members updated. Returns what `init --json` printed (the
    /// identity file an operator hands to `membership sign` and `replace-node`). Not started.
    pub fn wipe_and_init(&mut self) -> String {
        self.kill();
        std::fs::remove_dir_all(self.data_dir()).expect("delete the data directory");
        let mut init = Command::new(node_binary());
        init.arg("init")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--node-id")
            .arg(self.id.to_string())
            .arg("--cluster-id")
            .arg(&self.file.cluster_id)
            .arg("--json");
        match (&self.file.kek.key_file, &self.file.kek.passphrase_env) {
            (Some(key_file), _) => {
                init.arg("--key-file").arg(key_file);
            }
            (None, Some(variable)) => {
                init.arg("--passphrase-env")
                    .arg(variable)
                    .env(variable, &self.passphrase);
            }
            (None, None) => panic!("the test cluster's nodes use a key file or a passphrase"),
        }
        let (identity, printed) = run_init(init);
        let id = self.id;
        self.reconfigure(|file| {
            for member in &mut file.members {
                if member.node_id == id {
                    *member = identity.member();
                }
            }
        });
        printed
    }

    /// The node process's id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Where this node serves `/metrics`.
    pub fn metrics_address(&self) -> String {
        std::fs::read_to_string(self.dir.join("ready.metrics")).expect("metrics address")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a prepared `shardsign-node init --json`; the identity it printed, parsed and as text.
fn run_init(mut init: Command) -> (ProvisionIdentity, String) {
    let output = init.output().expect("run shardsign-node init");
    assert!(
        output.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let identity = serde_json::from_slice(&output.stdout).expect("init --json");
    (identity, String::from_utf8(output.stdout).expect("UTF-8"))
}

/// Three nodes and the material to talk to them as the coordinator.
pub struct NodeCluster {
    pub nodes: Vec<NodeProcess>,
    pub ca: DevCa,
    pub coordinator: Issued,
    /// Another coordinator's client certificate the nodes pin as well.
    pub standby_coordinator: Issued,
    pub root: tempfile::TempDir,
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl NodeCluster {
    /// Initialises three stores (real `init` runs) and starts the three nodes, which check no
    /// signed key policy.
    pub fn start(kek: KekKind) -> NodeCluster {
        Self::start_with(kek, None)
    }

    /// `start`, with the nodes enforcing key policies signed by the key with this public half.
    pub fn start_with(kek: KekKind, policy_public_key: Option<&str>) -> NodeCluster {
        // SHARDSIGN_KEEP_TEST_DIRS=1 keeps data directories and logs for inspection.
        let keep = std::env::var_os("SHARDSIGN_KEEP_TEST_DIRS").is_some();
        let root = tempfile::Builder::new()
            .prefix("shardsign-test-")
            .disable_cleanup(keep)
            .tempdir()
            .expect("tempdir");
        let ca = DevCa::generate("shardsign test CA").expect("CA");
        let coordinator = ca
            .issue("coordinator", &["coordinator"], Usage::Client)
            .expect("client cert");
        // A second coordinator's certificate, pinned too (coordinators sharing one database).
        let standby_coordinator = ca
            .issue("standby-coordinator", &["coordinator"], Usage::Client)
            .expect("client cert");
        write(&root.path().join("ca.pem"), ca.cert_pem());
        let mut identities = Vec::new();
        let mut nodes = Vec::new();
        for id in 1..=3u8 {
            let dir = root.path().join(format!("node-{id}"));
            std::fs::create_dir_all(&dir).expect("node dir");
            let passphrase = format!("test passphrase for node {id} {}", hex_random());
            let mut init = Command::new(node_binary());
            init.arg("init")
                .arg("--data-dir")
                .arg(dir.join("data"))
                .arg("--node-id")
                .arg(id.to_string())
                .arg("--cluster-id")
                .arg("test-cluster")
                .arg("--json");
            let kek_file = match kek {
                KekKind::KeyFile => {
                    let key_file = dir.join("kek.key");
                    write(&key_file, &hex_random());
                    init.arg("--key-file").arg(&key_file);
                    KekFile {
                        key_file: Some(key_file),
                        ..Default::default()
                    }
                }
                KekKind::Passphrase => {
                    init.arg("--passphrase-env")
                        .arg("SHARDSIGN_TEST_PASSPHRASE")
                        .env("SHARDSIGN_TEST_PASSPHRASE", &passphrase);
                    KekFile {
                        passphrase_env: Some("SHARDSIGN_TEST_PASSPHRASE".into()),
                        ..Default::default()
                    }
                }
            };
            let (identity, _) = run_init(init);
            identities.push(identity.member());
            let cert = ca
                .issue(
                    &format!("node-{id}"),
                    &["localhost", "127.0.0.1"],
                    Usage::Server,
                )
                .expect("server cert");
            write(&dir.join("cert.pem"), &cert.cert_pem);
            write(&dir.join("key.pem"), &cert.key_pem);
            nodes.push((id, dir, kek_file, passphrase));
        }
        let nodes = nodes
            .into_iter()
            .map(|(id, dir, kek, passphrase)| {
                let file = NodeFile {
                    node_id: id,
                    cluster_id: "test-cluster".into(),
                    data_dir: dir.join("data"),
                    // Restarted in place by several tests: see `restartable_address`.
                    listen: restartable_address(),
                    ready_file: Some(dir.join("ready")),
                    metrics_listen: Some("127.0.0.1:0".into()),
                    round_timeout_secs: Some(10),
                    max_sessions: None,
                    log_format: None,
                    policy_public_key: policy_public_key.map(str::to_string),
                    insecure_no_key_policy: policy_public_key.is_none().then_some(true),
                    membership_public_keys: Vec::new(),
                    membership_quorum: None,
                    kek,
                    tls: NodeTlsFile {
                        cert: dir.join("cert.pem"),
                        key: dir.join("key.pem"),
                        client_ca: root.path().join("ca.pem"),
                        coordinator_cert_sha256: format!(
                            "{},{}",
                            coordinator.fingerprint, standby_coordinator.fingerprint
                        ),
                    },
                    members: identities.clone(),
                };
                let config = dir.join("node.toml");
                write(&config, &file.to_toml());
                NodeProcess {
                    id,
                    log: dir.join("node.log"),
                    dir,
                    config,
                    file,
                    address: String::new(),
                    passphrase,
                    misbehaviour: None,
                    child: None,
                }
            })
            .collect::<Vec<_>>();
        let mut cluster = NodeCluster {
            nodes,
            ca,
            coordinator,
            standby_coordinator,
            root,
        };
        for node in &mut cluster.nodes {
            node.spawn();
        }
        for node in &mut cluster.nodes {
            node.start_wait();
            // Pin the port the node got, so that a restarted node is found where it was.
            node.file.listen = node.address.clone();
            write(&node.config, &node.file.to_toml());
        }
        cluster
    }

    pub fn node(&mut self, id: u8) -> &mut NodeProcess {
        &mut self.nodes[usize::from(id - 1)]
    }

    /// A client for node `id` presenting `identity` (the coordinator's by default).
    pub async fn client_with(&self, id: u8, identity: Option<&Issued>) -> NodeClient<Channel> {
        let address = &self.nodes[usize::from(id - 1)].address;
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca.cert_pem()))
            .domain_name("localhost");
        if let Some(identity) = identity {
            tls = tls.identity(Identity::from_pem(
                &identity.cert_pem,
                identity.key_pem.as_bytes(),
            ));
        }
        let channel = Endpoint::from_shared(format!("https://{address}"))
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls")
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        NodeClient::new(channel).max_decoding_message_size(4 * 1024 * 1024)
    }

    pub async fn client(&self, id: u8) -> NodeClient<Channel> {
        self.client_with(id, Some(&self.coordinator)).await
    }

    /// Clients for nodes 1, 2, 3 (index 0, 1, 2).
    pub async fn clients(&self) -> Vec<NodeClient<Channel>> {
        let mut clients = Vec::new();
        for id in 1..=3 {
            clients.push(self.client(id).await);
        }
        clients
    }

    /// Every node's log, concatenated.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.log_text())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl NodeProcess {
    fn start_wait(&mut self) {
        let child = self.child.as_mut().expect("spawned");
        self.address = wait_ready(
            &format!("node {}", self.id),
            child,
            &self.dir.join("ready"),
            &self.log,
        );
    }
}

pub fn hex_random() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// `GET /metrics` from `address`, the body.
pub fn scrape(address: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect to metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// The value of one series (`name{labels}`) in a scrape, 0 when absent.
pub fn metric_value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}
