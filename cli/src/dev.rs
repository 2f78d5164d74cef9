//! `shardsign dev up|down|status`: a development cluster on this machine from the binaries that
//! sit beside this one (nothing is built here). State lives in the dev directory (default
//! `.shardsign/`, mode 0700, git-ignored): certificates, encrypted node stores, configs, logs, and
//! generated secrets in `secrets/` (0600 files): the node passphrase, the bootstrap token, the
//! operator's policy key, the admin API key and, with `--demo`, an agent's API key.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use serde_json::json;
use shardsign_client::{Credential, api};
use shardsign_eth::{Address, Eip1559Transaction, UnsignedTransaction, parse_amount};
use shardsign_policy::OperatorPolicyKey;

use crate::commands::{create_key, set_key_policy, write_secret_file};
use crate::context::{DevState, Global, read_secret};
use crate::output::Out;

const CLUSTER_ID: &str = "local";
const PROCESSES: [&str; 4] = ["node-1", "node-2", "node-3", "coordinator"];

#[derive(Subcommand)]
pub enum DevCommand {
    /// Create what is missing, start the four processes, wait until they serve, create an admin
    /// API key. With --demo: also run a key ceremony, set its policy, create an agent key and
    /// sign a first transaction.
    Up {
        /// The API port; nodes take the next three.
        #[arg(long, default_value_t = 7100)]
        port: u16,
        #[arg(long)]
        demo: bool,
    },
    /// Stop the four processes (state stays).
    Down,
    /// Which processes run, and the cluster's view of its nodes.
    Status,
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    Ok(exe
        .parent()
        .ok_or_else(|| anyhow!("this executable has no directory"))?
        .to_path_buf())
}

fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build the binaries first (cargo build --release --bins)",
            path.display()
        );
    }
    Ok(path)
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

fn read_pid(dir: &Path, name: &str) -> Option<i32> {
    std::fs::read_to_string(dir.join(format!("{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|pid| pid_alive(*pid))
}

fn secret(dir: &Path, name: &str, make: impl FnOnce() -> String) -> anyhow::Result<PathBuf> {
    let path = dir.join("secrets").join(name);
    if !path.exists() {
        write_secret_file(&path, &make())?;
    }
    Ok(path)
}

fn abs(path: &Path) -> anyhow::Result<String> {
    Ok(std::fs::canonicalize(path)
        .with_context(|| format!("cannot resolve {}", path.display()))?
        .display()
        .to_string())
}

/// Starts `name` unless it runs; waits for its ready file.
fn start(dir: &Path, name: &str, program: &Path, config: &Path) -> anyhow::Result<String> {
    let ready = dir.join(format!("{name}.ready"));
    if read_pid(dir, name).is_some()
        && let Ok(address) = std::fs::read_to_string(&ready)
    {
        return Ok(address);
    }
    let _ = std::fs::remove_file(&ready);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))?;
    let mut child = Command::new(program)
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C at this terminal later does not stop the cluster.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    std::fs::write(dir.join(format!("{name}.pid")), child.id().to_string())?;
    let started = Instant::now();
    loop {
        if let Ok(address) = std::fs::read_to_string(&ready)
            && !address.is_empty()
        {
            return Ok(address);
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!(
                "{name} exited ({status}); last lines of {}/{name}.log:\n{}",
                dir.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "{name} did not become ready in 120 s; see {}/{name}.log",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Layout {
    dir: PathBuf,
    port: u16,
}

impl Layout {
    fn prepare(&self) -> anyhow::Result<()> {
        let dir = &self.dir;
        std::fs::create_dir_all(dir.join("secrets"))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        std::fs::set_permissions(dir.join("secrets"), std::fs::Permissions::from_mode(0o700))?;
        let passphrase = secret(dir, "node-passphrase", random_hex)?;
        secret(dir, "bootstrap-token", || {
            format!("bootstrap-{}", random_hex())
        })?;
        let policy_key_file = secret(dir, "policy.key", || {
            OperatorPolicyKey::generate().to_secret_hex().to_string()
        })?;
        let policy_key = OperatorPolicyKey::from_secret_hex(&read_secret(&policy_key_file)?)?;
        if !dir.join("certs/ca.pem").exists() {
            let status = Command::new(binary("shardsign-devcert")?)
                .arg(dir.join("certs"))
                .stdout(Stdio::null())
                .status()?;
            if !status.success() {
                bail!("shardsign-devcert failed");
            }
        }
        let mut members = String::new();
        for id in 1..=3 {
            let identity_file = dir.join(format!("identity-{id}.json"));
            if !dir.join(format!("node-{id}/node.db")).exists() {
                let output = Command::new(binary("shardsign-node")?)
                    .args(["init", "--data-dir"])
                    .arg(dir.join(format!("node-{id}")))
                    .args(["--node-id", &id.to_string(), "--cluster-id", CLUSTER_ID])
                    .arg("--passphrase-file")
                    .arg(&passphrase)
                    .arg("--json")
                    .output()?;
                if !output.status.success() {
                    bail!(
                        "shardsign-node init failed: {}",
                        String::from_utf8_lossy(&output.stderr).trim()
                    );
                }
                std::fs::write(&identity_file, &output.stdout)?;
            }
            let identity: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&identity_file)?)?;
            members.push_str(&format!(
                "[[members]]\nnode_id = {id}\nsigning_key = \"{}\"\nkx_key = \"{}\"\n\n",
                identity["signing_key"].as_str().unwrap_or_default(),
                identity["kx_key"].as_str().unwrap_or_default()
            ));
        }
        let root = abs(dir)?;
        let pin = std::fs::read_to_string(dir.join("certs/coordinator-client.sha256"))?;
        for id in 1..=3u16 {
            std::fs::write(
                dir.join(format!("node-{id}.toml")),
                format!(
                    "node_id = {id}\ncluster_id = \"{CLUSTER_ID}\"\ndata_dir = \"{root}/node-{id}\"\n\
                     listen = \"127.0.0.1:{port}\"\nready_file = \"{root}/node-{id}.ready\"\n\
                     policy_public_key = \"{policy}\"\n\
                     kek = {{ passphrase_file = \"{root}/secrets/node-passphrase\" }}\n\
                     tls = {{ cert = \"{root}/certs/node-{id}.pem\", key = \"{root}/certs/node-{id}.key\", \
                     client_ca = \"{root}/certs/ca.pem\", coordinator_cert_sha256 = \"{pin}\" }}\n\n{members}",
                    port = self.port + id,
                    policy = policy_key.public_hex(),
                    pin = pin.trim(),
                ),
            )?;
        }
        let nodes: String = (1..=3u16)
            .map(|id| {
                format!(
                    "\n[[nodes]]\nnode_id = {id}\naddress = \"https://127.0.0.1:{}\"\ntls_name = \"localhost\"\n",
                    self.port + id
                )
            })
            .collect();
        std::fs::write(
            dir.join("coordinator.toml"),
            format!(
                "cluster_id = \"{CLUSTER_ID}\"\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{root}/coordinator/coordinator.db\"\n\
                 ready_file = \"{root}/coordinator.ready\"\npolicy_public_key = \"{policy}\"\n\
                 auth = {{ bootstrap_token_file = \"{root}/secrets/bootstrap-token\", environment = \"test\", \
                 api_key_hmac_key_file = \"{root}/secrets/api-key-hmac.key\" }}\n\
                 tls = {{ cert = \"{root}/certs/api.pem\", key = \"{root}/certs/api.key\" }}\n\
                 node_tls = {{ ca = \"{root}/certs/ca.pem\", cert = \"{root}/certs/coordinator-client.pem\", \
                 key = \"{root}/certs/coordinator-client.key\" }}\n{nodes}",
                port = self.port,
                policy = policy_key.public_hex(),
            ),
        )?;
        Ok(())
    }
}

async fn up(global: &Global, port: u16, demo: bool, out: Out) -> anyhow::Result<()> {
    let dir = global.dir.clone();
    let layout = Layout {
        dir: dir.clone(),
        port,
    };
    layout.prepare()?;
    for name in PROCESSES {
        let program = binary(if name == "coordinator" {
            "shardsign-coordinator"
        } else {
            "shardsign-node"
        })?;
        let address = start(&dir, name, &program, &dir.join(format!("{name}.toml")))?;
        out.event(
            &json!({"event": "ready", "process": name, "address": address}),
            || format!("{name} ready on {address}"),
        );
    }
    let root = PathBuf::from(abs(&dir)?);
    let state = DevState {
        endpoint: format!("https://127.0.0.1:{port}"),
        ca: root.join("certs/ca.pem"),
        cluster_id: CLUSTER_ID.into(),
        admin_key_file: root.join("secrets/admin.key"),
        policy_key_file: root.join("secrets/policy.key"),
    };
    std::fs::write(DevState::path(&dir), serde_json::to_string_pretty(&state)?)?;
    if !state.admin_key_file.exists() {
        let bootstrap = read_secret(&root.join("secrets/bootstrap-token"))?;
        let client = global
            .client_as(Credential::bootstrap(bootstrap.as_str()))
            .await?;
        let created = client
            .admin()
            .create_api_key(api::CreateApiKeyRequest {
                label: "dev admin".into(),
                scopes: vec!["admin".into()],
                ..Default::default()
            })
            .await
            .map_err(shardsign_client::ClientError::from)?
            .into_inner();
        write_secret_file(&state.admin_key_file, &created.api_key)?;
    }
    if demo {
        run_demo(global, &state, &root, out).await?;
    }
    out.show(
        &json!({"endpoint": state.endpoint, "ca": state.ca, "admin_key_file": state.admin_key_file,
                "dir": root}),
        || {
            format!(
                "\nshardsign is running: API {endpoint} (TLS; CA {ca})\n\
                 admin API key: {admin} (the CLI uses it by default here)\n\
                 try:   target/release/shardsign cluster status\n\
                 \u{20}      target/release/shardsign keys list\n\
                 logs:  {root}/*.log      stop: target/release/shardsign dev down",
                endpoint = state.endpoint,
                ca = state.ca.display(),
                admin = state.admin_key_file.display(),
                root = root.display(),
            )
        },
    );
    Ok(())
}

const DEMO_KEY: &str = "demo";
const DEMO_RECIPIENT: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

async fn run_demo(global: &Global, state: &DevState, root: &Path, out: Out) -> anyhow::Result<()> {
    let admin = global
        .client_as(Credential::api_key(
            read_secret(&state.admin_key_file)?.as_str(),
        )?)
        .await?;
    let key = match admin.get_key(DEMO_KEY).await {
        Ok(key) => key,
        Err(shardsign_client::ClientError::NotFound(_)) => {
            let request = api::CreateKeyRequest {
                label: "demo key".into(),
                allowed_chain_ids: vec![1, 11155111],
                key_id: DEMO_KEY.into(),
            };
            create_key(global, &admin, out, request).await?
        }
        Err(error) => return Err(error.into()),
    };
    out.event(
        &json!({"event": "key", "key_id": key.key_id, "address": key.address}),
        || format!("demo key `{}`: address {}", key.key_id, key.address),
    );
    let policy_key = OperatorPolicyKey::from_secret_hex(&read_secret(&state.policy_key_file)?)?;
    if admin
        .admin()
        .get_key_policy(api::GetKeyPolicyRequest {
            key_id: DEMO_KEY.into(),
        })
        .await
        .is_err()
    {
        let rules = api::Policy {
            allowed_chain_ids: vec![1, 11155111],
            max_value_per_tx: "1eth".into(),
            allowed_recipients: vec!["*".into()],
            max_fee_per_gas: "200gwei".into(),
            max_total_fee: "0.05eth".into(),
            allow_message_signing: true,
            ..Default::default()
        };
        let set = set_key_policy(&admin, &policy_key, CLUSTER_ID, DEMO_KEY, rules, None).await?;
        out.event(
            &json!({"event": "key_policy", "version": set.version}),
            || {
                format!(
                    "key policy v{} signed with the operator key and set on nodes {:?}",
                    set.version, set.nodes_updated
                )
            },
        );
    }
    let agent_file = root.join("secrets/agent.key");
    if !agent_file.exists() {
        let created = admin
            .admin()
            .create_api_key(api::CreateApiKeyRequest {
                label: "demo agent".into(),
                scopes: vec!["sign".into(), "read".into()],
                key_ids: vec![DEMO_KEY.into()],
                policy: Some(api::Policy {
                    allowed_chain_ids: vec![11155111],
                    max_value_per_tx: "0.1eth".into(),
                    max_value_per_24h: "1eth".into(),
                    allowed_recipients: vec![DEMO_RECIPIENT.into()],
                    max_fee_per_gas: "100gwei".into(),
                    max_total_fee: "0.01eth".into(),
                    requests_per_minute: 60,
                    allow_message_signing: true,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map_err(shardsign_client::ClientError::from)?
            .into_inner();
        write_secret_file(&agent_file, &created.api_key)?;
        out.event(&json!({"event": "agent_key", "file": agent_file}), || {
            format!(
                "agent API key (sign, demo key only, 0.1 ETH/tx, 1 ETH/24 h, Sepolia) in {}",
                agent_file.display()
            )
        });
    }
    let agent = global
        .client_as(Credential::api_key(read_secret(&agent_file)?.as_str())?)
        .await?;
    let tx = UnsignedTransaction::Eip1559(Eip1559Transaction {
        chain_id: 11155111,
        nonce: 0,
        max_priority_fee_per_gas: parse_amount("tip", "1gwei")?,
        max_fee_per_gas: parse_amount("fee", "30gwei")?,
        gas_limit: 21_000,
        to: Some(Address::parse("to", DEMO_RECIPIENT)?),
        value: parse_amount("value", "0.01eth")?,
        data: Vec::new(),
        access_list: Vec::new(),
    });
    let signed = agent.sign_transaction(DEMO_KEY, &tx).await?;
    out.show(
        &json!({"event": "signed", "raw_transaction": format!("0x{}", hex::encode(&signed.raw_transaction)),
                "tx_hash": format!("0x{}", hex::encode(signed.tx_hash)), "sender": signed.sender}),
        || {
            format!(
                "\nsigned as the demo agent: 0.01 ETH to {DEMO_RECIPIENT} on Sepolia (EIP-1559)\n\
                 raw transaction: 0x{}\ntx hash: 0x{}\nfrom: {}",
                hex::encode(&signed.raw_transaction),
                hex::encode(signed.tx_hash),
                signed.sender
            )
        },
    );
    Ok(())
}

fn down(dir: &Path, out: Out) -> anyhow::Result<()> {
    for name in PROCESSES.iter().rev() {
        if let Some(pid) = read_pid(dir, name) {
            // SAFETY: plain SIGTERM to a process this directory's pid file names.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let started = Instant::now();
            while pid_alive(pid) && started.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(50));
            }
            out.event(&json!({"event": "stopped", "process": name}), || {
                format!("{name} stopped")
            });
        }
        let _ = std::fs::remove_file(dir.join(format!("{name}.pid")));
        let _ = std::fs::remove_file(dir.join(format!("{name}.ready")));
    }
    if out.json {
        println!("{}", json!({"event": "down"}));
    }
    Ok(())
}

async fn status(global: &Global, out: Out) -> anyhow::Result<()> {
    let processes: Vec<_> = PROCESSES
        .iter()
        .map(|name| (name.to_string(), read_pid(&global.dir, name)))
        .collect();
    out.show(
        &json!(
            processes
                .iter()
                .map(|(name, pid)| json!({"process": name, "pid": pid}))
                .collect::<Vec<_>>()
        ),
        || {
            processes
                .iter()
                .map(|(name, pid)| match pid {
                    Some(pid) => format!("{name}: running (pid {pid})"),
                    None => format!("{name}: stopped"),
                })
                .collect::<Vec<_>>()
                .join("\n")
        },
    );
    if processes
        .iter()
        .any(|(name, pid)| name == "coordinator" && pid.is_some())
    {
        crate::commands::cluster_status(global, out).await?;
    }
    Ok(())
}

pub async fn run(command: DevCommand, global: &Global, out: Out) -> anyhow::Result<()> {
    match command {
        DevCommand::Up { port, demo } => up(global, port, demo, out).await,
        DevCommand::Down => down(&global.dir, out),
        DevCommand::Status => status(global, out).await,
    }
}
