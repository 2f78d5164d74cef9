//! A cluster's config files, defined once. The node and the coordinator deserialize these
//! structs (then validate them: that stays with each binary), and everything that writes config
//! files — `shardsign dev up`, the test harness, the docker-compose setup — fills them in and
//! renders them with [`NodeFile::to_toml`] / [`CoordinatorFile::to_toml`]. A setting added here
//! is known to every writer at once; no hand-written TOML can drift from what the binaries read.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A node's config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub node_id: u8,
    pub cluster_id: String,
    pub data_dir: PathBuf,
    pub listen: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_file: Option<PathBuf>,
    /// Where to serve Prometheus metrics (`/metrics`, plain HTTP: bind it to a private address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<usize>,
    /// `text` (default) or `json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    /// Hex Ed25519 public key of the operator's policy key. Required: a node without it would
    /// sign whatever the coordinator asks within the key's chains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_public_key: Option<String>,
    /// Development only: lets the node start without `policy_public_key` (it then checks no
    /// key policy and trusts the coordinator's). Never set it in production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_no_key_policy: Option<bool>,
    /// Hex Ed25519 public keys of the offline membership keys (not the policy key): a membership
    /// change (a replaced node's new identity) needs the signatures of `membership_quorum` of
    /// them. Empty: this node accepts no membership change, so no node can be replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub membership_public_keys: Vec<String>,
    /// How many membership keys must sign a change (default: a majority, 2 of 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership_quorum: Option<usize>,
    pub kek: KekFile,
    pub tls: NodeTlsFile,
    pub members: Vec<MemberFile>,
}

/// Where a node's key-encryption key comes from: exactly one of the three.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KekFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeTlsFile {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    /// SHA-256 (hex) of the coordinator's client certificate: the only client served. Several
    /// coordinators (sharing one database): their fingerprints comma-separated, at most 8.
    pub coordinator_cert_sha256: String,
}

/// One node's public identity, as `shardsign-node init --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberFile {
    pub node_id: u8,
    pub signing_key: String,
    pub kx_key: String,
}

/// A node's public identity as `shardsign-node init --json` prints it: what the operator copies
/// into every node's `members` and checks the fingerprint of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: u8,
    pub cluster_id: String,
    pub signing_key: String,
    pub kx_key: String,
    pub fingerprint: String,
}

impl Identity {
    /// This identity as an entry of a node's `members`.
    pub fn member(&self) -> MemberFile {
        MemberFile {
            node_id: self.node_id,
            signing_key: self.signing_key.clone(),
            kx_key: self.kx_key.clone(),
        }
    }
}

/// The coordinator's config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorFile {
    pub cluster_id: String,
    pub listen: String,
    /// The registry: a SQLite file's path (the default, one coordinator), or
    /// `postgres://USER@HOST:PORT/DATABASE` shared by several coordinators (the password, if
    /// any, in the `SHARDSIGN_DATABASE_PASSWORD` environment variable, never here).
    pub database: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_file: Option<PathBuf>,
    /// Where to serve Prometheus metrics (`/metrics`); off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_timeout_secs: Option<u64>,
    /// How long an API client has to finish its TLS handshake (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_handshake_timeout_secs: Option<u64>,
    /// Connections one source address may hold open (default 256); more are closed at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_source: Option<u32>,
    /// Refresh every key's shares when its epoch is this old (`30d`, `12h`, ...; see
    /// [`parse_duration_secs`]), one key at a time; no schedule when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_every: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    /// Hex Ed25519 public key of the operator's policy key (the same one the nodes have).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_public_key: Option<String>,
    pub auth: AuthFile,
    /// The public API's TLS. Without it the coordinator serves plaintext only on a loopback
    /// address, unless `insecure_plaintext_api` says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ApiTlsFile>,
    /// Development only: serve the API without TLS on a non-loopback address (bearer API keys
    /// then travel in the clear). Never set it in production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_plaintext_api: Option<bool>,
    pub node_tls: NodeClientTlsFile,
    pub nodes: Vec<NodeAddressFile>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// The bootstrap credential: creates the first admin API key, nothing else. Omit both to
    /// disable it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_token_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// 32 random bytes (64 hex digits) keying the API-key hashes; created on first start when
    /// missing. Default: `api-key-hmac.key` beside a SQLite database; required with PostgreSQL
    /// (every coordinator sharing it needs the same file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_hmac_key_file: Option<PathBuf>,
    /// `live` (default) or `test`: the API-key prefix this deployment issues and accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTlsFile {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The coordinator's client side of the mutual TLS to the nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeClientTlsFile {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the coordinator finds one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAddressFile {
    pub node_id: u8,
    /// `https://host:port`.
    pub address: String,
    /// The name the node's certificate is checked against.
    pub tls_name: String,
    /// The node identity's fingerprint, checked by `ClusterStatus` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// A file that cannot be parsed (the message names the line and the setting).
pub use toml::de::Error as ParseError;

impl NodeFile {
    pub fn parse(text: &str) -> Result<NodeFile, ParseError> {
        toml::from_str(text)
    }

    pub fn to_toml(&self) -> String {
        render(self)
    }
}

impl CoordinatorFile {
    pub fn parse(text: &str) -> Result<CoordinatorFile, ParseError> {
        toml::from_str(text)
    }

    pub fn to_toml(&self) -> String {
        render(self)
    }
}

/// A duration as config files and the CLI write it: `3600s`, `90m`, `12h`, `30d`, or plain
/// seconds. The message says what is wrong.
pub fn parse_duration_secs(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let number: i64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a duration like 3600s, 90m, 12h or 30d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit is s, m, h or d")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too long"))
}

fn render(file: &impl Serialize) -> String {
    // Every field is a string, a number, a path, a table or an array of tables: always
    // representable in TOML, so this cannot fail for these types.
    toml::to_string(file).unwrap_or_else(|e| unreachable!("config files render as TOML: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeFile {
        NodeFile {
            node_id: 1,
            cluster_id: "c".into(),
            data_dir: "/data/node-1".into(),
            listen: "127.0.0.1:7101".into(),
            ready_file: Some("/run/node-1.ready".into()),
            metrics_listen: None,
            round_timeout_secs: Some(10),
            max_sessions: None,
            log_format: None,
            policy_public_key: Some("ab".repeat(32)),
            insecure_no_key_policy: None,
            membership_public_keys: Vec::new(),
            membership_quorum: None,
            kek: KekFile {
                passphrase_file: Some("/secrets/passphrase".into()),
                ..Default::default()
            },
            tls: NodeTlsFile {
                cert: "/certs/node.pem".into(),
                key: "/certs/node.key".into(),
                client_ca: "/certs/ca.pem".into(),
                coordinator_cert_sha256: "00".repeat(32),
            },
            members: (1..=3)
                .map(|node_id| MemberFile {
                    node_id,
                    signing_key: "11".repeat(32),
                    kx_key: "22".repeat(32),
                })
                .collect(),
        }
    }

    fn coordinator() -> CoordinatorFile {
        CoordinatorFile {
            cluster_id: "c".into(),
            listen: "127.0.0.1:7100".into(),
            database: "/var/lib/shardsign/registry.db".into(),
            ready_file: None,
            metrics_listen: Some("127.0.0.1:0".into()),
            request_timeout_secs: None,
            round_timeout_secs: Some(5),
            tls_handshake_timeout_secs: None,
            max_connections_per_source: None,
            refresh_every: Some("30d".into()),
            log_format: Some("json".into()),
            policy_public_key: None,
            auth: AuthFile {
                bootstrap_token_env: Some("TOKEN".into()),
                environment: Some("test".into()),
                ..Default::default()
            },
            tls: None,
            insecure_plaintext_api: None,
            node_tls: NodeClientTlsFile {
                ca: "/etc/shardsign/ca.pem".into(),
                cert: "/etc/shardsign/client.pem".into(),
                key: "/etc/shardsign/client.key".into(),
            },
            nodes: vec![NodeAddressFile {
                node_id: 2,
                address: "https://10.1.2.3:7001".into(),
                tls_name: "signer-b".into(),
                fingerprint: Some("ff".repeat(8)),
            }],
        }
    }

    #[test]
    fn rendered_files_parse_back_to_the_same_settings() {
        let node = node();
        assert_eq!(NodeFile::parse(&node.to_toml()).unwrap(), node);
        let coordinator = coordinator();
        assert_eq!(
            CoordinatorFile::parse(&coordinator.to_toml()).unwrap(),
            coordinator
        );
    }

    #[test]
    fn absent_options_are_left_out_and_unknown_settings_are_refused() {
        let text = node().to_toml();
        assert!(!text.contains("metrics_listen") && !text.contains("passphrase_env"));
        assert!(text.contains("round_timeout_secs = 10"), "{text}");
        let error = NodeFile::parse(&format!("surprise = 1\n{text}")).unwrap_err();
        assert!(error.to_string().contains("surprise"), "{error}");
    }
}
