//! `shardsign-coordinator run --config <file>`: serve the public API.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use shardsign_coordinator::config::CoordinatorConfig;
use shardsign_coordinator::server::serve;

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
}

async fn run(config: PathBuf) -> anyhow::Result<()> {
    let config = CoordinatorConfig::load(&config)?;
    shardsign_serve::init_logging(config.log_format);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "starting shardsign-coordinator"
    );
    serve(config, shardsign_serve::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(run(config))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shardsign-coordinator: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
