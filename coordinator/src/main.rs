//! `shardsign-coordinator run --config <file>`: serve the public API.
//! `shardsign-coordinator admin recover --config <file>`: a new admin API key, made on this host.
//! `shardsign-coordinator backup --config <file> --out <dir>`: the registry and the hashing key.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use shardsign_coordinator::config::CoordinatorConfig;
use shardsign_coordinator::server::serve;
use shardsign_serve::{Hardening, harden_process};

#[derive(Parser)]
#[command(
    name = "shardsign-coordinator",
    version,
    about = "shardsign coordinator: the public signing API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the public gRPC API.
    Run {
        #[arg(long, env = "SHARDSIGN_COORDINATOR_CONFIG")]
        config: PathBuf,
    },
    /// Copy the registry and the API-key hashing key into a new directory (0700, files 0600)
    /// while the coordinator runs; the copy's audit chain is verified.
    Backup {
        #[arg(long, env = "SHARDSIGN_COORDINATOR_CONFIG")]
        config: PathBuf,
        /// A directory that does not exist yet.
        #[arg(long)]
        out: PathBuf,
    },
    /// Local operations on this host's registry.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a new admin API key (when every admin key is lost or revoked; the bootstrap token
    /// is single-use). Prints the key once; restart the coordinator so that it loads it.
    Recover {
        #[arg(long, env = "SHARDSIGN_COORDINATOR_CONFIG")]
        config: PathBuf,
        #[arg(long, default_value = "recovered admin")]
        label: String,
    },
}

fn recover(config: PathBuf, label: &str) -> anyhow::Result<()> {
    let config = CoordinatorConfig::load(&config)?;
    let recovered = shardsign_coordinator::recover::recover_admin(&config, label)?;
    println!("{}", recovered.secret.0.as_str());
    eprintln!(
        "admin API key {} created and audited (admin_recover); it is shown once, above. Restart the coordinator so that it loads it.",
        recovered.id
    );
    Ok(())
}

fn backup(config: PathBuf, out: PathBuf) -> anyhow::Result<()> {
    let config = CoordinatorConfig::load(&config)?;
    let backup = shardsign_coordinator::backup::backup(&config, &out)?;
    println!(
        "backup written to {}: the registry (audit log intact, {} records, head {}) and the API-key hashing key; keep it private",
        backup.dir.display(),
        backup.audit_records,
        hex::encode(backup.audit_head)
    );
    Ok(())
}

async fn run(config: PathBuf, hardening: Hardening) -> anyhow::Result<()> {
    let config = CoordinatorConfig::load(&config)?;
    shardsign_serve::init_logging(config.log_format);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        core_dumps_disabled = hardening.core_dumps_disabled,
        ptrace_attach_blocked = hardening.ptrace_blocked,
        "starting shardsign-coordinator (core dumps disabled: {}, ptrace attach blocked: {})",
        hardening.core_dumps_disabled,
        hardening.ptrace_blocked,
    );
    serve(config, shardsign_serve::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

fn main() -> std::process::ExitCode {
    // Before anything is read: no core dumps, no ptrace, private files (the registry, its WAL).
    let hardening = harden_process();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Admin {
            command: AdminCommand::Recover { config, label },
        } => recover(config, &label),
        Command::Backup { config, out } => backup(config, out),
        Command::Run { config } => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(run(config, hardening))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shardsign-coordinator: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
