//! The `shardsign-node` command line: create a node's encrypted store (`init`) and serve it
//! (`run`). In the library so that the test-only misbehaving binary runs the same code.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{NodeConfig, validate_cluster_id};
use crate::kek::{KekFile, KekSource};
use crate::server::serve;
use crate::sessions::Node;
use crate::store::Store;
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use shardsign_provision::Identity;
use shardsign_serve::{Hardening, harden_process};
use shardsign_tss::PartyId;

#[derive(Parser)]
#[command(
    name = "shardsign-node",
    version,
    about = "shardsign signer node: holds one share of each key"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the data directory, the encrypted store and this node's identity; print the
    /// public identity. Refuses to overwrite an existing store.
    Init(InitArgs),
    /// Serve the node protocol over mutual TLS.
    Run {
        /// The node's TOML configuration.
        #[arg(long, env = "SHARDSIGN_NODE_CONFIG")]
        config: PathBuf,
    },
    /// Local operations on the running node, through its admin socket (same host, same user).
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Write an online, consistent copy of the store to --out (0600), still encrypted under the
    /// node's key-encryption key. It holds live shares: keep it like one. `backup verify FILE`
    /// opens a backup with the configured KEK and lists its keys.
    #[command(args_conflicts_with_subcommands = true)]
    Backup {
        #[arg(long, env = "SHARDSIGN_NODE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also wrap the backup's data key to this age recipient (`age1...`, the operator's
        /// offline recovery key), written to `<out>.data-key.age`.
        #[arg(long)]
        age_recipient: Option<String>,
        #[command(subcommand)]
        command: Option<BackupCommand>,
    },
    /// Put a backup in place of the store (the node stopped; an existing store is moved aside,
    /// never deleted). The restored node refuses session ids made before the restore.
    Restore {
        #[arg(long, env = "SHARDSIGN_NODE_CONFIG")]
        config: PathBuf,
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// Open the backup with the operator's offline age identity (and `<backup>.data-key.age`)
        /// instead of the node's old passphrase or key file; the configured one wraps it from now.
        #[arg(long)]
        age_identity: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BackupCommand {
    /// Decrypt a backup with the configured KEK, check every share, list the keys.
    Verify {
        #[arg(long, env = "SHARDSIGN_NODE_CONFIG")]
        config: PathBuf,
        file: PathBuf,
    },
}

fn backup(
    config: Option<PathBuf>,
    out: Option<PathBuf>,
    age_recipient: Option<String>,
) -> anyhow::Result<()> {
    let (Some(config), Some(out)) = (config, out) else {
        anyhow::bail!("backup needs --config FILE and --out FILE (or: backup verify FILE)");
    };
    let recipient = age_recipient
        .map(|text| shardsign_seal::AgeRecipient::parse(&text).context("--age-recipient"))
        .transpose()?;
    let (config, kek) = match recipient {
        Some(_) => {
            let (config, kek) = prepare_run(&config)?;
            (config, Some(kek))
        }
        None => (NodeConfig::load(&config)?, None),
    };
    let summary = Store::backup(&config.data_dir, &out)?;
    println!(
        "backup written: {} ({} bytes, {} active keys, sha256 {})",
        summary.path.display(),
        summary.bytes,
        summary.active_keys,
        summary.sha256
    );
    if let (Some(recipient), Some(kek)) = (recipient, kek) {
        let wrapped = Store::wrap_backup_for(&out, &kek, &recipient)?;
        println!(
            "its data key, encrypted to the age recipient: {}",
            wrapped.display()
        );
    }
    println!(
        "it holds live key shares, encrypted under this node's key-encryption key: store it like one"
    );
    Ok(())
}

fn print_report(report: &crate::store::backup::BackupReport) {
    println!(
        "node {} of cluster {}, identity {}",
        report.node_id, report.cluster_id, report.identity_fingerprint
    );
    for key in &report.keys {
        println!(
            "  {:<24} {:<8} epoch {:<4} public key {}",
            key.key_id, key.status, key.epoch, key.public_key
        );
    }
    println!(
        "{} keys; every share decrypts and matches its key",
        report.keys.len()
    );
}

fn verify_backup(config: PathBuf, file: PathBuf) -> anyhow::Result<()> {
    let (config, kek) = prepare_run(&config)?;
    let report = Store::verify_backup(&file, &kek)?;
    if report.node_id != config.node_id.get() || report.cluster_id != config.cluster_id {
        anyhow::bail!(
            "{} is a backup of node {} of cluster {}, not of this node ({}, {})",
            file.display(),
            report.node_id,
            report.cluster_id,
            config.node_id,
            config.cluster_id
        );
    }
    print_report(&report);
    match crate::store::backup::live_epochs(&config.data_dir)? {
        None => println!(
            "no live store in {}: cannot say whether the backup is stale",
            config.data_dir.display()
        ),
        Some(live) => {
            let stale = crate::store::backup::stale_keys(&report, &live);
            if stale.is_empty() {
                println!("current: every key's share is at the live store's epoch");
            }
            for key in &stale {
                match key.live_epoch {
                    Some(live) => println!(
                        "STALE  {}: the backup holds epoch {}, the live store epoch {}",
                        key.key_id, key.backup_epoch, live
                    ),
                    None => println!(
                        "STALE  {}: the backup holds epoch {}, the live store no longer holds the key",
                        key.key_id, key.backup_epoch
                    ),
                }
            }
            if !stale.is_empty() {
                println!(
                    "a stale share still makes its key together with the other nodes' shares of the same epoch (their old backups): destroy this backup and take a new one"
                );
            }
        }
    }
    Ok(())
}

fn restore(config: PathBuf, from: PathBuf, age_identity: Option<PathBuf>) -> anyhow::Result<()> {
    let (config, kek) = prepare_run(&config)?;
    let identity = age_identity
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            shardsign_seal::AgeIdentity::parse(&text).with_context(|| format!("{}", path.display()))
        })
        .transpose()?;
    let (report, moved) = Store::restore(
        &config.data_dir,
        &from,
        &kek,
        identity.as_ref(),
        (config.node_id.get(), &config.cluster_id),
        shardsign_request::unix_now_ms(),
    )?;
    print_report(&report);
    if let Some(moved) = moved {
        println!("the previous store was moved aside to {}", moved.display());
    }
    println!(
        "restored; start the node while both peers run: it re-learns the cluster's state from them before it signs again (and refuses session ids made before now)"
    );
    Ok(())
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Put a signed key policy (`shardsign policy sign --out FILE`) on the running node, without
    /// the coordinator: the node checks it as it checks any policy and keeps it if it is newer.
    Put {
        #[arg(long, env = "SHARDSIGN_NODE_CONFIG")]
        config: PathBuf,
        /// The encoded signed policy.
        file: PathBuf,
    },
}

fn put_policy(config: PathBuf, file: PathBuf) -> anyhow::Result<()> {
    let config = NodeConfig::load(&config)?;
    let signed = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let answer = runtime.block_on(crate::local_admin::put_policy(&config.data_dir, &signed));
    match answer {
        Ok(message) => {
            println!("{message}");
            Ok(())
        }
        Err(message) => anyhow::bail!("refused: {message}"),
    }
}

#[derive(Args)]
struct InitArgs {
    #[arg(long)]
    data_dir: PathBuf,
    /// This node's index in the cluster: 1, 2 or 3.
    #[arg(long)]
    node_id: u8,
    #[arg(long)]
    cluster_id: String,
    /// Read the passphrase from this environment variable.
    #[arg(long, group = "kek")]
    passphrase_env: Option<String>,
    /// Read the passphrase from this file.
    #[arg(long, group = "kek")]
    passphrase_file: Option<PathBuf>,
    /// Read a 32-byte key (raw or hex) from this file instead of a passphrase.
    #[arg(long, group = "kek")]
    key_file: Option<PathBuf>,
    /// Print the identity as JSON.
    #[arg(long)]
    json: bool,
}

fn init(args: InitArgs) -> anyhow::Result<()> {
    let node_id =
        PartyId::new(args.node_id).map_err(|_| anyhow::anyhow!("--node-id: expected 1, 2 or 3"))?;
    validate_cluster_id(&args.cluster_id)?;
    let kek = KekSource::load(&KekFile {
        passphrase_env: args.passphrase_env,
        passphrase_file: args.passphrase_file,
        key_file: args.key_file,
    })
    .context(
        "choose the key-encryption key with --passphrase-env, --passphrase-file or --key-file",
    )?;
    let (_, secret) = Store::init(&args.data_dir, node_id, &args.cluster_id, &kek)?;
    let public = secret.public();
    let identity = Identity {
        node_id: node_id.get(),
        cluster_id: args.cluster_id,
        signing_key: hex::encode(public.signing_key()),
        kx_key: hex::encode(public.kx_key()),
        fingerprint: public.fingerprint(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&identity)?);
    } else {
        println!("node_id:     {}", identity.node_id);
        println!("cluster_id:  {}", identity.cluster_id);
        println!("signing_key: {}", identity.signing_key);
        println!("kx_key:      {}", identity.kx_key);
        println!("fingerprint: {}", identity.fingerprint);
    }
    Ok(())
}

/// The configuration and the KEK source, read while the process has one thread: a passphrase
/// from the environment is then removed from it at once (no other thread can be reading the
/// environment). The original bytes stay in the process's initial environment block, which
/// /proc/PID/environ shows — to root only, since the node is not dumpable; prefer
/// `passphrase_file` or `key_file`.
fn prepare_run(config_path: &Path) -> anyhow::Result<(NodeConfig, KekSource)> {
    let config = NodeConfig::load(config_path)?;
    let kek = KekSource::load(&config.kek)?;
    if let Some(var) = &config.kek.passphrase_env {
        // SAFETY: called from `main` before the async runtime (or any other thread) starts.
        unsafe { std::env::remove_var(var) };
    }
    Ok((config, kek))
}

async fn run((config, kek): (NodeConfig, KekSource), hardening: Hardening) -> anyhow::Result<()> {
    shardsign_serve::init_logging(config.log_format);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        node_id = %config.node_id,
        core_dumps_disabled = hardening.core_dumps_disabled,
        ptrace_attach_blocked = hardening.ptrace_blocked,
        "starting shardsign-node (core dumps disabled: {}, ptrace attach blocked: {})",
        hardening.core_dumps_disabled,
        hardening.ptrace_blocked,
    );
    let (store, secret) = Store::open(&config.data_dir, &kek)?;
    drop(kek);
    if store.node_id() != config.node_id || store.cluster_id() != config.cluster_id {
        anyhow::bail!(
            "configuration: node_id/cluster_id ({}, {}) do not match the store in {} ({}, {})",
            config.node_id,
            config.cluster_id,
            config.data_dir.display(),
            store.node_id(),
            store.cluster_id()
        );
    }
    let mut node = Node::new(
        store,
        secret,
        config.members.clone(),
        config.round_timeout,
        config.max_sessions,
        config.policy_verifier.clone(),
    )?;
    match &config.membership {
        Some((keys, warning)) => {
            if let Some(warning) = warning {
                tracing::warn!("{warning}");
            }
            tracing::info!(
                quorum = keys.quorum(),
                keys = keys.len(),
                "membership changes need a quorum of the configured membership keys"
            );
            node = node.with_membership_keys(keys.clone());
        }
        None => {
            tracing::info!(
                "no membership_public_keys: this node accepts no membership change (no node can be replaced)"
            );
        }
    }
    let node = Arc::new(node);
    if !node.enforces_policies() {
        tracing::warn!(
            "insecure_no_key_policy = true and no policy_public_key: this node does NOT check signed key policies and trusts the coordinator's (development only)"
        );
    }
    serve(config, node, shardsign_serve::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Runs the command line; the exit code says whether it succeeded.
pub fn main() -> std::process::ExitCode {
    // Before anything is read: no core dumps, no ptrace, private files.
    let hardening = harden_process();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => init(args),
        Command::Policy {
            command: PolicyCommand::Put { config, file },
        } => put_policy(config, file),
        Command::Backup {
            command: Some(BackupCommand::Verify { config, file }),
            ..
        } => verify_backup(config, file),
        Command::Backup {
            config,
            out,
            age_recipient,
            ..
        } => backup(config, out, age_recipient),
        Command::Restore {
            config,
            from,
            age_identity,
        } => restore(config, from, age_identity),
        Command::Run { config } => prepare_run(&config).and_then(|prepared| {
            tokio::runtime::Runtime::new()
                .context("cannot start the async runtime")
                .and_then(|runtime| runtime.block_on(run(prepared, hardening)))
        }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One clear line, never a backtrace.
            eprintln!("shardsign-node: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
