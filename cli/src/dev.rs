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
use shardsign_policy::OperatorPolicyKey;

use crate::cluster_files;
use crate::commands::write_secret_file;
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
    /// Write the docker-compose cluster's config files into <dir>/config, from the node
    /// identities <dir>/identity-N.json and <dir>/certs/coordinator-client.sha256
    /// (scripts/compose.sh runs this).
    ComposeConfigs {
        /// The operator's policy key file (its public half goes into every config).
        #[arg(long)]
        policy_key: PathBuf,
        #[arg(long, default_value = "compose")]
        cluster_id: String,
        /// Two coordinators sharing the `postgres` service's database (`--profile ha`): also
        /// writes coordinator-2.toml, and the nodes admit both coordinators' certificates.
        #[arg(long)]
        ha: bool,
    },
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
        }
        let shared = cluster_files::Shared {
            cluster_id: CLUSTER_ID.into(),
            policy_public_key: policy_key.public_hex(),
            coordinator_cert_sha256: std::fs::read_to_string(
                dir.join("certs/coordinator-client.sha256"),
            )?
            .trim()
            .to_string(),
            members: cluster_files::read_members(dir)?,
            membership_public_keys: cluster_files::dev_membership_keys(dir)?,
        };
        let (nodes, coordinator) =
            cluster_files::local(&PathBuf::from(abs(dir)?), self.port, &shared);
        cluster_files::write(dir, &nodes, &coordinator)?;
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
        crate::demo::run(global, &state, &root, out).await?;
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
        DevCommand::ComposeConfigs {
            policy_key,
            cluster_id,
            ha,
        } => compose_configs(&global.dir, &policy_key, cluster_id, ha),
    }
}

fn compose_configs(
    dir: &Path,
    policy_key: &Path,
    cluster_id: String,
    ha: bool,
) -> anyhow::Result<()> {
    let policy_key = OperatorPolicyKey::from_secret_hex(&read_secret(policy_key)?)?;
    let fingerprint = |name: &str| -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(dir.join("certs").join(name))
            .with_context(|| format!("no certs/{name}: run shardsign-devcert first"))?
            .trim()
            .to_string())
    };
    let mut coordinator_cert_sha256 = fingerprint("coordinator-client.sha256")?;
    if ha {
        coordinator_cert_sha256 = format!(
            "{coordinator_cert_sha256},{}",
            fingerprint("coordinator-2-client.sha256")?
        );
    }
    let shared = cluster_files::Shared {
        cluster_id,
        policy_public_key: policy_key.public_hex(),
        coordinator_cert_sha256,
        members: cluster_files::read_members(dir)?,
        membership_public_keys: cluster_files::dev_membership_keys(dir)?,
    };
    let (nodes, mut coordinator) = cluster_files::compose(&shared);
    let config = dir.join("config");
    std::fs::create_dir_all(&config)?;
    if ha {
        cluster_files::share_postgres(&mut coordinator);
        let second = cluster_files::second_coordinator(&coordinator);
        let path = config.join("coordinator-2.toml");
        std::fs::write(&path, second.to_toml())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    cluster_files::write(&config, &nodes, &coordinator)
}
