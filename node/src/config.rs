//! The node's configuration: one TOML file, read and validated once at start. A missing or
//! malformed value stops the process with a message naming the setting and what it expects.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shardsign_policy::PolicyVerifier;
use shardsign_policy::membership::MembershipKeys;
use shardsign_provision::{MemberFile, NodeFile};
use shardsign_seal::PublicIdentity;
use shardsign_tss::PartyId;

use crate::error::NodeError;
use crate::kek::KekFile;

/// Log output format.
pub use shardsign_serve::LogFormat;

/// TLS material, read from disk at start.
#[derive(Clone)]
pub struct TlsConfig {
    pub cert_pem: String,
    pub key_pem: zeroize::Zeroizing<String>,
    pub client_ca_pem: String,
    /// SHA-256 of each coordinator's client certificate (DER): the only clients served (one,
    /// or several coordinators sharing one database).
    pub coordinator_cert_sha256: Vec<[u8; 32]>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field(
                "coordinator_cert_sha256",
                &self
                    .coordinator_cert_sha256
                    .iter()
                    .map(hex::encode)
                    .collect::<Vec<_>>(),
            )
            .field("key_pem", &"***")
            .finish_non_exhaustive()
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: PartyId,
    pub cluster_id: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub ready_file: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    pub round_timeout: Duration,
    pub max_sessions: usize,
    pub log_format: LogFormat,
    pub kek: KekFile,
    pub tls: TlsConfig,
    /// Verifies operator-signed key policies; `None` disables the node's own policy check.
    pub policy_verifier: Option<PolicyVerifier>,
    /// The three nodes' public identities, this one included.
    pub members: BTreeMap<PartyId, PublicIdentity>,
    /// The offline keys a membership change must be signed by (a quorum of them), and the
    /// warning to log when one key alone is enough; `None`: no membership change is accepted.
    pub membership: Option<(MembershipKeys, Option<String>)>,
}

fn decode_key(setting: &str, text: &str) -> Result<[u8; 32], NodeError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim_start_matches("0x"), &mut out)
        .map_err(|_| NodeError::config(setting, "expected 64 hex digits"))?;
    Ok(out)
}

/// Most coordinators a node serves.
pub const MAX_COORDINATORS: usize = 8;

/// The pinned coordinator certificates: one fingerprint, or several comma-separated.
fn pinned_coordinators(text: &str) -> Result<Vec<[u8; 32]>, NodeError> {
    let setting = "tls.coordinator_cert_sha256";
    let pinned = text
        .split(',')
        .map(|part| decode_key(setting, part.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    if pinned.len() > MAX_COORDINATORS {
        return Err(NodeError::config(
            setting,
            format!("at most {MAX_COORDINATORS} coordinator fingerprints"),
        ));
    }
    Ok(pinned)
}

fn read_text(setting: &str, path: &Path) -> Result<String, NodeError> {
    std::fs::read_to_string(path)
        .map_err(|e| NodeError::config(setting, format!("cannot read {}: {e}", path.display())))
}

/// A cluster id: 1..=64 characters of `[A-Za-z0-9_.-]`.
pub fn validate_cluster_id(cluster_id: &str) -> Result<(), NodeError> {
    let ok = !cluster_id.is_empty()
        && cluster_id.len() <= 64
        && cluster_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        return Err(NodeError::config(
            "cluster_id",
            "expected 1 to 64 characters of A-Z a-z 0-9 _ . -",
        ));
    }
    Ok(())
}

/// The three members' public identities, by node id.
fn members(raw: &[MemberFile]) -> Result<BTreeMap<PartyId, PublicIdentity>, NodeError> {
    let mut members = BTreeMap::new();
    for member in raw {
        let id = PartyId::new(member.node_id)
            .map_err(|_| NodeError::config("members.node_id", "expected 1, 2 or 3"))?;
        let setting = format!("members[node_id = {}]", member.node_id);
        let identity = PublicIdentity::from_bytes(
            &decode_key(&format!("{setting}.signing_key"), &member.signing_key)?,
            &decode_key(&format!("{setting}.kx_key"), &member.kx_key)?,
        )
        .map_err(|e| NodeError::config(&setting, e.to_string()))?;
        if members.insert(id, identity).is_some() {
            return Err(NodeError::config(&setting, "listed twice"));
        }
    }
    if members.len() != 3 {
        return Err(NodeError::config(
            "members",
            "expected exactly three entries, node ids 1, 2 and 3",
        ));
    }
    Ok(members)
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            NodeError::config(
                "config file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, NodeError> {
        let raw = NodeFile::parse(text)
            .map_err(|e| NodeError::config("config file", e.message().to_string()))?;
        let node_id = PartyId::new(raw.node_id)
            .map_err(|_| NodeError::config("node_id", "expected 1, 2 or 3"))?;
        validate_cluster_id(&raw.cluster_id)?;
        let listen: SocketAddr = raw
            .listen
            .parse()
            .map_err(|_| NodeError::config("listen", "expected an address like 127.0.0.1:7001"))?;
        let round_timeout = Duration::from_secs(raw.round_timeout_secs.unwrap_or(10));
        if round_timeout.is_zero() || round_timeout > Duration::from_secs(600) {
            return Err(NodeError::config(
                "round_timeout_secs",
                "expected 1 to 600 seconds",
            ));
        }
        let max_sessions = raw.max_sessions.unwrap_or(4096);
        if max_sessions == 0 || max_sessions > 1_000_000 {
            return Err(NodeError::config("max_sessions", "expected 1 to 1000000"));
        }
        let log_format = LogFormat::parse(raw.log_format.as_deref())?;
        let members = members(&raw.members)?;
        let tls = TlsConfig {
            cert_pem: read_text("tls.cert", &raw.tls.cert)?,
            key_pem: zeroize::Zeroizing::new(read_text("tls.key", &raw.tls.key)?),
            client_ca_pem: read_text("tls.client_ca", &raw.tls.client_ca)?,
            coordinator_cert_sha256: pinned_coordinators(&raw.tls.coordinator_cert_sha256)?,
        };
        let policy_verifier = raw
            .policy_public_key
            .as_deref()
            .map(PolicyVerifier::from_hex)
            .transpose()
            .map_err(|e| NodeError::config("policy_public_key", e.to_string()))?;
        if policy_verifier.is_none() && raw.insecure_no_key_policy != Some(true) {
            return Err(NodeError::config(
                "policy_public_key",
                "required: the operator's policy public key (`shardsign policy public-key`); without it this node would check no key policy and sign whatever the coordinator asks. For development only, set insecure_no_key_policy = true",
            ));
        }
        let membership = if raw.membership_public_keys.is_empty() {
            if raw.membership_quorum.is_some() {
                return Err(NodeError::config(
                    "membership_quorum",
                    "set without membership_public_keys",
                ));
            }
            None
        } else {
            Some(
                MembershipKeys::from_hex(&raw.membership_public_keys, raw.membership_quorum)
                    .map_err(|e| NodeError::config("membership_public_keys", e.to_string()))?,
            )
        };
        Ok(NodeConfig {
            membership,
            policy_verifier,
            node_id,
            cluster_id: raw.cluster_id,
            data_dir: raw.data_dir,
            listen,
            ready_file: raw.ready_file,
            metrics_listen: raw
                .metrics_listen
                .as_deref()
                .map(|a| {
                    a.parse().map_err(|_| {
                        NodeError::config(
                            "metrics_listen",
                            "expected an address like 127.0.0.1:9101",
                        )
                    })
                })
                .transpose()?,
            round_timeout,
            max_sessions,
            log_format,
            kek: raw.kek,
            tls,
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_or_several_coordinators_are_pinned() {
        let (a, b) = ("aa".repeat(32), "0xbb".to_string() + &"bb".repeat(31));
        assert_eq!(pinned_coordinators(&a).unwrap(), vec![[0xaa; 32]]);
        assert_eq!(
            pinned_coordinators(&format!("{a}, {b}")).unwrap(),
            vec![[0xaa; 32], [0xbb; 32]]
        );
        for bad in [String::new(), format!("{a},"), "zz".repeat(32)] {
            let error = pinned_coordinators(&bad).unwrap_err().to_string();
            assert!(error.contains("tls.coordinator_cert_sha256"), "{error}");
        }
        let nine = vec![a; MAX_COORDINATORS + 1].join(",");
        assert!(pinned_coordinators(&nine).is_err());
    }

    #[test]
    fn errors_name_the_setting() {
        let error = NodeConfig::parse("node_id = 4").unwrap_err().to_string();
        assert!(error.contains("config file"), "{error}");
        let base = r#"
            node_id = 9
            cluster_id = "c"
            data_dir = "/tmp/x"
            listen = "127.0.0.1:1"
            kek = { key_file = "/k" }
            tls = { cert = "/c", key = "/k", client_ca = "/ca", coordinator_cert_sha256 = "00" }
            members = []
        "#;
        let error = NodeConfig::parse(base).unwrap_err().to_string();
        assert!(error.contains("node_id"), "{error}");
        let error = NodeConfig::parse(
            &base
                .replace("node_id = 9", "node_id = 1")
                .replace("127.0.0.1:1", "nowhere"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("listen"), "{error}");
    }
}
