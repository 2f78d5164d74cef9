//! The coordinator's configuration: one TOML file, validated once at start. Errors name the
//! setting and what it expects. Tokens come from environment variables or files named here,
//! never from the file itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shardsign_provision::{CoordinatorFile, NodeAddressFile};
use zeroize::Zeroizing;

use crate::error::CoordError;

/// A node as configured.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: u8,
    pub address: String,
    pub tls_name: String,
    /// The node identity's fingerprint, checked by `ClusterStatus` when set.
    pub fingerprint: Option<String>,
}

/// PEM material; the key is wiped on drop and never printed.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: Zeroizing<String>,
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pem { key: *** }")
    }
}

pub use shardsign_serve::LogFormat;

/// A bearer token; only its hash is kept once the process runs.
pub struct Token(pub Zeroizing<String>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// Where the registry lives.
#[derive(Clone)]
pub enum Database {
    /// An embedded SQLite file: one coordinator (the default).
    Sqlite(PathBuf),
    /// A PostgreSQL database that several coordinators share.
    Postgres(Box<crate::registry::db::postgres::Target>),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "Sqlite({})", path.display()),
            // Never the password.
            Database::Postgres(target) => write!(f, "Postgres({})", target.describe()),
        }
    }
}

/// The environment variable holding the PostgreSQL password (never in the config file).
pub const DATABASE_PASSWORD_ENV: &str = "SHARDSIGN_DATABASE_PASSWORD";
/// Or the environment variable naming a file that holds it (a container's secret).
pub const DATABASE_PASSWORD_FILE_ENV: &str = "SHARDSIGN_DATABASE_PASSWORD_FILE";

fn database_password() -> Result<Option<Zeroizing<String>>, CoordError> {
    if let Ok(password) = std::env::var(DATABASE_PASSWORD_ENV) {
        return Ok(Some(Zeroizing::new(password)));
    }
    let Ok(path) = std::env::var(DATABASE_PASSWORD_FILE_ENV) else {
        return Ok(None);
    };
    let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
        CoordError::config(
            DATABASE_PASSWORD_FILE_ENV,
            format!("cannot read {path}: {e}"),
        )
    })?);
    Ok(Some(Zeroizing::new(
        text.trim_end_matches(['\n', '\r']).to_string(),
    )))
}

impl Database {
    /// `database = "..."`: a `postgres://` URL, else a SQLite file's path.
    fn parse(text: &Path) -> Result<Database, CoordError> {
        let Some(url) = text
            .to_str()
            .filter(|t| t.starts_with("postgres://") || t.starts_with("postgresql://"))
        else {
            return Ok(Database::Sqlite(text.to_path_buf()));
        };
        let password = database_password()?;
        Ok(Database::Postgres(Box::new(
            crate::registry::db::postgres::Target::parse(
                url,
                password.as_deref().map(|p| p.as_str()),
            )?,
        )))
    }
}

#[derive(Debug)]
pub struct CoordinatorConfig {
    pub cluster_id: String,
    pub listen: SocketAddr,
    pub database: Database,
    pub ready_file: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    pub request_timeout: Duration,
    pub round_timeout: Duration,
    /// How long an API client has to finish its TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Connections one source address may hold open.
    pub max_connections_per_source: u32,
    /// Refresh a key's shares when its epoch is this old (one key at a time); none when absent.
    pub refresh_every: Option<Duration>,
    pub log_format: LogFormat,
    pub bootstrap_token: Option<Token>,
    pub api_key_hmac_key_file: PathBuf,
    /// `live` or `test`.
    pub environment: &'static str,
    pub policy_public_key: Option<String>,
    pub tls: Option<Pem>,
    pub node_ca: String,
    pub node_client: Pem,
    pub nodes: Vec<NodeConfig>,
}

/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;
const MAX_TOKEN_LEN: usize = 512;

fn read(setting: &str, path: &Path) -> Result<String, CoordError> {
    std::fs::read_to_string(path)
        .map_err(|e| CoordError::config(setting, format!("cannot read {}: {e}", path.display())))
}

fn token(
    setting: &str,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<Token>, CoordError> {
    let value = match (env, file) {
        (None, None) => return Ok(None),
        (Some(var), None) => std::env::var(var).map_err(|_| {
            CoordError::config(
                format!("{setting}_env"),
                format!("environment variable {var} is not set"),
            )
        })?,
        (None, Some(path)) => read(&format!("{setting}_file"), path)?
            .trim_end_matches(['\r', '\n'])
            .to_string(),
        _ => {
            return Err(CoordError::config(
                setting,
                format!("set at most one of {setting}_env or {setting}_file"),
            ));
        }
    };
    let value = Zeroizing::new(value);
    if value.len() < MIN_TOKEN_LEN
        || value.len() > MAX_TOKEN_LEN
        || !value.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(CoordError::config(
            setting,
            format!(
                "a token is {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} printable ASCII characters without spaces"
            ),
        ));
    }
    Ok(Some(Token(value)))
}

fn seconds(setting: &str, value: Option<u64>, default: u64) -> Result<Duration, CoordError> {
    let value = value.unwrap_or(default);
    if value == 0 || value > 3600 {
        return Err(CoordError::config(setting, "expected 1 to 3600 seconds"));
    }
    Ok(Duration::from_secs(value))
}

/// A plaintext API only on loopback, unless development says otherwise: off loopback, bearer
/// API keys would travel in the clear.
fn check_plaintext(
    listen: SocketAddr,
    tls: bool,
    insecure: Option<bool>,
) -> Result<(), CoordError> {
    if tls || listen.ip().is_loopback() || insecure == Some(true) {
        return Ok(());
    }
    Err(CoordError::config(
        "tls",
        format!(
            "required when listen ({listen}) is not a loopback address: API keys would travel in the clear. Configure tls = {{ cert, key }}; for development only, set insecure_plaintext_api = true"
        ),
    ))
}

/// The three nodes, checked and sorted by id.
fn nodes(raw: Vec<NodeAddressFile>) -> Result<Vec<NodeConfig>, CoordError> {
    let mut nodes = Vec::new();
    for node in raw {
        if !(1..=3).contains(&node.node_id)
            || nodes.iter().any(|n: &NodeConfig| n.node_id == node.node_id)
        {
            return Err(CoordError::config(
                "nodes.node_id",
                "expected node ids 1, 2 and 3, each once",
            ));
        }
        if !node.address.starts_with("https://") {
            return Err(CoordError::config(
                format!("nodes[{}].address", node.node_id),
                "expected https://host:port",
            ));
        }
        nodes.push(NodeConfig {
            node_id: node.node_id,
            address: node.address,
            tls_name: node.tls_name,
            fingerprint: node.fingerprint,
        });
    }
    if nodes.len() != 3 {
        return Err(CoordError::config("nodes", "expected exactly three nodes"));
    }
    nodes.sort_by_key(|n| n.node_id);
    Ok(nodes)
}

impl CoordinatorConfig {
    pub fn load(path: &Path) -> Result<Self, CoordError> {
        Self::parse(&read("config file", path)?)
    }

    pub fn parse(text: &str) -> Result<Self, CoordError> {
        let raw = CoordinatorFile::parse(text)
            .map_err(|e| CoordError::config("config file", e.message().to_string()))?;
        if raw.cluster_id.is_empty() || raw.cluster_id.len() > 64 {
            return Err(CoordError::config(
                "cluster_id",
                "expected 1 to 64 characters",
            ));
        }
        let listen: SocketAddr = raw
            .listen
            .parse()
            .map_err(|_| CoordError::config("listen", "expected an address like 127.0.0.1:7000"))?;
        let log_format = LogFormat::parse(raw.log_format.as_deref())?;
        check_plaintext(listen, raw.tls.is_some(), raw.insecure_plaintext_api)?;
        let nodes = nodes(raw.nodes)?;
        let tls = match raw.tls {
            Some(tls) => Some(Pem {
                cert: read("tls.cert", &tls.cert)?,
                key: Zeroizing::new(read("tls.key", &tls.key)?),
            }),
            None => None,
        };
        let database = Database::parse(&raw.database)?;
        let api_key_hmac_key_file = match (&raw.auth.api_key_hmac_key_file, &database) {
            (Some(file), _) => file.clone(),
            (None, Database::Sqlite(path)) => path
                .parent()
                .unwrap_or(Path::new("."))
                .join("api-key-hmac.key"),
            // Every coordinator of a shared registry must hash API keys with the same key.
            (None, Database::Postgres(_)) => {
                return Err(CoordError::config(
                    "auth.api_key_hmac_key_file",
                    "required with a PostgreSQL database: every coordinator sharing it needs the same hashing key file (copy the first coordinator's)",
                ));
            }
        };
        Ok(CoordinatorConfig {
            cluster_id: raw.cluster_id,
            listen,
            database,
            ready_file: raw.ready_file,
            metrics_listen: raw
                .metrics_listen
                .as_deref()
                .map(|a| {
                    a.parse().map_err(|_| {
                        CoordError::config(
                            "metrics_listen",
                            "expected an address like 127.0.0.1:9100",
                        )
                    })
                })
                .transpose()?,
            request_timeout: seconds("request_timeout_secs", raw.request_timeout_secs, 30)?,
            round_timeout: seconds("round_timeout_secs", raw.round_timeout_secs, 5)?,
            tls_handshake_timeout: seconds(
                "tls_handshake_timeout_secs",
                raw.tls_handshake_timeout_secs,
                shardsign_serve::DEFAULT_HANDSHAKE_TIMEOUT.as_secs(),
            )?,
            max_connections_per_source: match raw.max_connections_per_source {
                None => shardsign_serve::DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
                Some(0) => {
                    return Err(CoordError::config(
                        "max_connections_per_source",
                        "must be at least 1",
                    ));
                }
                Some(n) => n,
            },
            refresh_every: match raw.refresh_every.as_deref() {
                None => None,
                Some(text) => {
                    let secs = shardsign_provision::parse_duration_secs(text)
                        .map_err(|e| CoordError::config("refresh_every", e))?;
                    if secs < 1 {
                        return Err(CoordError::config(
                            "refresh_every",
                            "must be at least 1s (30d is a sensible schedule)",
                        ));
                    }
                    Some(Duration::from_secs(secs as u64))
                }
            },
            log_format,
            bootstrap_token: token(
                "auth.bootstrap_token",
                &raw.auth.bootstrap_token_env,
                &raw.auth.bootstrap_token_file,
            )?,
            api_key_hmac_key_file,
            environment: match raw.auth.environment.as_deref() {
                None | Some("live") => "live",
                Some("test") => "test",
                Some(_) => {
                    return Err(CoordError::config(
                        "auth.environment",
                        "expected \"live\" or \"test\"",
                    ));
                }
            },
            policy_public_key: raw.policy_public_key,
            tls,
            node_ca: read("node_tls.ca", &raw.node_tls.ca)?,
            node_client: Pem {
                cert: read("node_tls.cert", &raw.node_tls.cert)?,
                key: Zeroizing::new(read("node_tls.key", &raw.node_tls.key)?),
            },
            nodes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listen: &str, tls: bool, insecure: bool) -> String {
        let mut file = CoordinatorFile::parse(&format!(
            r#"
            cluster_id = "c"
            listen = "{listen}"
            database = "/nonexistent/c.db"
            auth = {{}}
            node_tls = {{ ca = "/nonexistent/ca.pem", cert = "/nonexistent/c.pem", key = "/nonexistent/c.key" }}
            nodes = []
            "#
        ))
        .unwrap();
        if tls {
            file.tls = Some(shardsign_provision::ApiTlsFile {
                cert: "/nonexistent/api.pem".into(),
                key: "/nonexistent/api.key".into(),
            });
        }
        file.insecure_plaintext_api = insecure.then_some(true);
        file.to_toml()
    }

    /// The setting a parse error names (every config error names one).
    fn failing_setting(text: &str) -> String {
        match CoordinatorConfig::parse(text).unwrap_err() {
            CoordError::Config { setting, .. } => setting,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_plaintext_api_is_refused_off_loopback_unless_development_says_so() {
        let error = CoordinatorConfig::parse(&config("0.0.0.0:7100", false, false))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("configuration: tls: required when listen (0.0.0.0:7100)")
                && error.contains("insecure_plaintext_api = true"),
            "{error}"
        );
        // Past the TLS check, parsing stops at the next problem (here: no nodes).
        assert_eq!(
            failing_setting(&config("0.0.0.0:7100", false, true)),
            "nodes"
        );
        assert_eq!(
            failing_setting(&config("127.0.0.1:7100", false, false)),
            "nodes"
        );
        assert_eq!(
            failing_setting(&config("0.0.0.0:7100", true, false)),
            "nodes"
        );
    }
}
