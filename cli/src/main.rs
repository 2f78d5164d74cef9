//! `shardsign`: one CLI for operators and scripts. Every command prints one clear line on error
//! (exit code 1) and takes `--json` for machine-readable output.

mod cluster_files;
mod commands;
mod context;
mod demo;
mod dev;
mod output;
mod policy_file;
mod schema;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::context::Global;
use crate::output::Out;

#[derive(Parser)]
#[command(
    name = "shardsign",
    version,
    about = "Threshold (2-of-3) Ethereum signing: operate a cluster, sign, manage API keys and policies"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    /// Machine-readable output: one JSON document (or one JSON event per line).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A local development cluster (three nodes and a coordinator) from the built binaries.
    #[command(subcommand)]
    Dev(dev::DevCommand),
    /// Signing keys: the key-generation ceremony, listing, disabling.
    #[command(subcommand)]
    Keys(commands::KeysCommand),
    /// Sign a transaction or an EIP-191 message.
    #[command(subcommand)]
    Sign(commands::SignCommand),
    /// API keys for agents and operators.
    #[command(subcommand)]
    Apikeys(commands::ApiKeysCommand),
    /// Signing-key policies, signed with the operator's policy key.
    #[command(subcommand)]
    Policy(commands::PolicyCommand),
    /// The hash-chained audit log.
    #[command(subcommand)]
    Audit(commands::AuditCommand),
    /// The cluster's nodes and whether it can sign; replacing a node.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// The offline membership keys and the membership changes they sign (offline: no
    /// coordinator is contacted).
    #[command(subcommand)]
    Membership(commands::MembershipCommand),
    /// Requests parked for human approval: list, show (decoded and checked here), approve or
    /// reject with an approver key.
    #[command(subcommand)]
    Approvals(commands::ApprovalsCommand),
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Each node's reachability, version and key count.
    Status(Empty),
    /// Replace node N (its disk lost, or banned) by the fresh node now serving at its address:
    /// the membership change on every node, then per key repair and a complete refresh.
    ReplaceNode {
        /// The node to replace: 1, 2 or 3.
        node_id: u8,
        /// The new node's identity (`shardsign-node init --json`).
        #[arg(long)]
        identity: PathBuf,
        /// The membership statement signed by a quorum of membership keys
        /// (`shardsign membership sign`).
        #[arg(long)]
        statement: PathBuf,
    },
}

#[derive(Args)]
struct Empty {}

/// Operator policy key and defaults for a dev directory.
pub fn default_dev_dir() -> PathBuf {
    PathBuf::from(".shardsign")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Out { json: cli.json };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Dev(command) => dev::run(command, &cli.global, out).await,
            Command::Keys(command) => commands::keys(command, &cli.global, out).await,
            Command::Sign(command) => commands::sign(command, &cli.global, out).await,
            Command::Apikeys(command) => commands::apikeys(command, &cli.global, out).await,
            Command::Policy(command) => commands::policy(command, &cli.global, out).await,
            Command::Audit(command) => commands::audit(command, &cli.global, out).await,
            Command::Cluster(ClusterCommand::Status(_)) => {
                commands::cluster_status(&cli.global, out).await
            }
            Command::Cluster(ClusterCommand::ReplaceNode {
                node_id,
                identity,
                statement,
            }) => commands::replace_node(&cli.global, out, node_id, &identity, &statement).await,
            Command::Membership(command) => commands::membership(command, out),
            Command::Approvals(command) => commands::approvals(command, &cli.global, out).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if cli.json {
                println!("{}", serde_json::json!({ "error": format!("{error:#}") }));
            } else {
                eprintln!("error: {error:#}");
            }
            ExitCode::FAILURE
        }
    }
}
