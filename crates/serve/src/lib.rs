//! The parts of serving that the node and the coordinator share: the log format and its
//! initialisation, the shutdown signal, the gRPC health and reflection services, binding the
//! listener, the metrics endpoint, the ready files that tell supervisors and tests the bound addresses,
//! and the process hardening both apply first.

mod hardening;
mod incoming;
mod limits;
pub use hardening::{Hardening, harden_process};
pub use incoming::{CountedStream, DEFAULT_MAX_CONNECTIONS_PER_SOURCE, PerSourceIncoming};
pub use limits::{
    DEFAULT_HANDSHAKE_TIMEOUT, MAX_CONNECTION_AGE, MAX_STREAMS_PER_CONNECTION, limit_server,
};

use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_reflection::server::v1::{ServerReflection, ServerReflectionServer};

/// A serving step that failed, naming the config setting it is about.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ServeError {
    pub setting: &'static str,
    pub problem: String,
}

impl ServeError {
    fn new(setting: &'static str, problem: impl Into<String>) -> Self {
        ServeError {
            setting,
            problem: problem.into(),
        }
    }
}

/// How log lines are written (the `log_format` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    /// From the setting's value (`text`, the default, or `json`).
    pub fn parse(value: Option<&str>) -> Result<LogFormat, ServeError> {
        match value {
            None | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => Err(ServeError::new(
                "log_format",
                format!(
                    "expected `text` or `json`, got `{}`",
                    other.escape_default()
                ),
            )),
        }
    }
}

/// Logs to stderr at `RUST_LOG` (default `info`), colours only on a terminal: log files and
/// collectors get plain text.
pub fn init_logging(format: LogFormat) {
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

/// Completes on SIGINT or SIGTERM (what `docker stop` sends).
pub async fn shutdown_signal() {
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

/// Binds the `listen` address; returns the listener and the address it got (port 0 allowed).
pub async fn bind(listen: SocketAddr) -> Result<(TcpListener, SocketAddr), ServeError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| ServeError::new("listen", format!("cannot bind {listen}: {e}")))?;
    let address = listener
        .local_addr()
        .map_err(|e| ServeError::new("listen", e.to_string()))?;
    Ok((listener, address))
}

/// The gRPC health service reporting `services` (their full names) as serving, and server
/// reflection over `descriptor_set`.
pub async fn health_and_reflection(
    services: &[&str],
    descriptor_set: &'static [u8],
) -> Result<
    (
        HealthServer<impl Health>,
        ServerReflectionServer<impl ServerReflection>,
    ),
    ServeError,
> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for service in services {
        reporter
            .set_service_status(*service, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(descriptor_set)
        .build_v1()
        .map_err(|e| ServeError::new("reflection", e.to_string()))?;
    Ok((health, reflection))
}

/// Serves `metrics` on `listen` (`GET /metrics`) in the background, with the bound address in
/// the metrics ready file when there is a ready file.
pub async fn serve_metrics(
    listen: SocketAddr,
    metrics: shardsign_metrics::Metrics,
    refresh: shardsign_metrics::Refresh,
    ready_file: Option<&Path>,
) -> Result<SocketAddr, ServeError> {
    let bound = shardsign_metrics::spawn(listen, metrics, refresh)
        .await
        .map_err(|e| ServeError::new("metrics_listen", format!("cannot bind {listen}: {e}")))?;
    if let Some(path) = ready_file {
        write_metrics_ready_file(path, bound)?;
    }
    Ok(bound)
}

/// Civil UTC time for messages (`2026-11-25 22:49:22 UTC`), without a date library.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Writes `address` to `path` atomically (a reader never sees a partial file).
pub fn write_ready_file(path: &Path, address: SocketAddr) -> Result<(), ServeError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, address.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| ServeError::new("ready_file", format!("{}: {e}", path.display())))
}

/// The ready file of the metrics endpoint: beside `ready_file`, extension `.metrics`.
pub fn write_metrics_ready_file(ready_file: &Path, address: SocketAddr) -> Result<(), ServeError> {
    write_ready_file(&ready_file.with_extension("metrics"), address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_civil_time() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_795_000_000_000), "2026-11-18 11:06:40 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn log_formats_parse_and_a_bad_one_names_the_setting() {
        assert_eq!(LogFormat::parse(None).unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::parse(Some("json")).unwrap(), LogFormat::Json);
        let error = LogFormat::parse(Some("xml")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "log_format: expected `text` or `json`, got `xml`"
        );
    }

    #[test]
    fn ready_files_hold_the_address_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.ready");
        let address: SocketAddr = "127.0.0.1:7101".parse().unwrap();
        write_ready_file(&path, address).unwrap();
        write_metrics_ready_file(&path, "127.0.0.1:9100".parse().unwrap()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "127.0.0.1:7101");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("node.metrics")).unwrap(),
            "127.0.0.1:9100"
        );
        assert!(!dir.path().join("node.tmp").exists());
    }
}
