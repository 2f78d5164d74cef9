//! Where to connect and as whom: flags, then environment variables, then what `dev up` wrote to
//! the dev directory (so that on a development machine every command just works).

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use clap::Args;
use serde::{Deserialize, Serialize};
use shardsign_client::{Client, ClientConfig, Credential};
use zeroize::Zeroizing;

#[derive(Args)]
pub struct Global {
    /// The coordinator's API (env SHARDSIGN_ENDPOINT; default: the dev cluster's). Several
    /// coordinators sharing one database: comma-separated (`https://a:7100,https://b:7100`),
    /// used in order, failing over on a transport failure with the same request id.
    #[arg(long, global = true, env = "SHARDSIGN_ENDPOINT")]
    pub endpoint: Option<String>,
    /// CA certificate (PEM) to trust for the API (env SHARDSIGN_CA; default: system roots, or the
    /// dev cluster's CA).
    #[arg(long, global = true, env = "SHARDSIGN_CA")]
    pub ca: Option<PathBuf>,
    /// File holding the API key to present (default: env SHARDSIGN_API_KEY, else the dev
    /// cluster's admin key).
    #[arg(long, global = true)]
    pub api_key_file: Option<PathBuf>,
    /// Present the coordinator's bootstrap token from this file instead of an API key (it can
    /// only create the first admin key).
    #[arg(long, global = true, conflicts_with = "api_key_file")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// The dev cluster's state directory.
    #[arg(
        long,
        global = true,
        default_value = ".shardsign",
        env = "SHARDSIGN_DIR"
    )]
    pub dir: PathBuf,
}

/// What `dev up` records for the other commands (no secrets: paths to 0600 files).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DevState {
    pub endpoint: String,
    pub ca: PathBuf,
    pub cluster_id: String,
    pub admin_key_file: PathBuf,
    pub policy_key_file: PathBuf,
}

impl DevState {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("cli.json")
    }

    pub fn load(dir: &Path) -> Option<DevState> {
        let text = std::fs::read_to_string(Self::path(dir)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// Reads a secret from a file, trimmed; the contents never appear in an error.
pub fn read_secret(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
    );
    Ok(Zeroizing::new(text.trim().to_string()))
}

impl Global {
    pub fn dev_state(&self) -> Option<DevState> {
        DevState::load(&self.dir)
    }

    fn credential(&self) -> anyhow::Result<Credential> {
        if let Some(path) = &self.bootstrap_token_file {
            return Ok(Credential::bootstrap(read_secret(path)?.as_str()));
        }
        if let Some(path) = &self.api_key_file {
            return Ok(Credential::api_key(read_secret(path)?.as_str())?);
        }
        if let Ok(key) = std::env::var("SHARDSIGN_API_KEY") {
            let key = Zeroizing::new(key);
            return Ok(Credential::api_key(key.as_str())?);
        }
        if let Some(state) = self.dev_state() {
            return Ok(Credential::api_key(
                read_secret(&state.admin_key_file)?.as_str(),
            )?);
        }
        Err(anyhow!(
            "no API key: set SHARDSIGN_API_KEY, pass --api-key-file, or run `shardsign dev up` first"
        ))
    }

    /// A client with the configured credential.
    pub async fn client(&self) -> anyhow::Result<Client> {
        self.client_as(self.credential()?).await
    }

    pub async fn client_as(&self, credential: Credential) -> anyhow::Result<Client> {
        let state = self.dev_state();
        let endpoint = self
            .endpoint
            .clone()
            .or_else(|| state.as_ref().map(|s| s.endpoint.clone()))
            .unwrap_or_else(|| "https://127.0.0.1:7100".into());
        let mut config = ClientConfig::new(endpoint.clone(), credential);
        let ca = self.ca.clone().or_else(|| state.map(|s| s.ca));
        if let Some(ca) = ca {
            let pem = std::fs::read_to_string(&ca)
                .with_context(|| format!("cannot read the CA {}", ca.display()))?;
            config = config.with_ca_pem(pem);
        }
        Ok(Client::connect(config).await?)
    }
}
