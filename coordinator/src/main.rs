//! `shardsign-coordinator run --config <file>`: serve the public API.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use shardsign_coordinator::config::{CoordinatorConfig, LogFormat};
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

async fn run(config: PathBuf) -> anyhow::Result<()> {
    let config = CoordinatorConfig::load(&config)?;
    init_logging(config.log_format);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "starting shardsign-coordinator"
    );
    serve(config, shutdown_signal()).await?;
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
