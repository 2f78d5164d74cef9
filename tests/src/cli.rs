//! The `shardsign` CLI as a test runs it against a [`Cluster`]: the admin key file, the CA and
//! the coordinator's endpoint on every call.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

use crate::cluster::workspace_binary;
use crate::full::Cluster;

/// The CLI with the cluster's admin credentials.
pub struct Cli {
    base: Vec<String>,
    dir: tempfile::TempDir,
}

impl Cli {
    pub fn new(cluster: &Cluster) -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, contents: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            path.display().to_string()
        };
        let ca = write("ca.pem", cluster.nodes.ca.cert_pem());
        let admin = write("admin.key", &cluster.admin_token);
        write("policy.key", &cluster.policy_key.to_secret_hex());
        let base = vec![
            "--endpoint".into(),
            format!("https://{}", cluster.coordinator.address),
            "--ca".into(),
            ca,
            "--api-key-file".into(),
            admin,
            "--dir".into(),
            dir.path().join("no-dev-cluster").display().to_string(),
        ];
        Cli { base, dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn run(&self, args: &[&str], api_key: Option<&str>) -> Output {
        self.run_at(None, args, api_key)
    }

    /// [`Self::run`] against `endpoint` (one or several, comma-separated) instead of the
    /// cluster's coordinator.
    pub fn run_at(&self, endpoint: Option<&str>, args: &[&str], api_key: Option<&str>) -> Output {
        let mut command = Command::new(workspace_binary("shardsign", "SHARDSIGN_CLI_BIN"));
        let mut base = self.base.clone();
        if let Some(endpoint) = endpoint {
            base[1] = endpoint.to_string();
        }
        if let Some(key) = api_key {
            // An agent key comes from the environment, not the admin key file.
            let at = base.iter().position(|a| a == "--api-key-file").unwrap();
            base.drain(at..at + 2);
            command.env("SHARDSIGN_API_KEY", key);
        } else {
            command.env_remove("SHARDSIGN_API_KEY");
        }
        command
            .args(&base)
            .args(args)
            .output()
            .expect("run shardsign")
    }

    /// Runs with `--json`, expects success, returns the last JSON line.
    pub fn json(&self, args: &[&str], api_key: Option<&str>) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = self.run(&all, api_key);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "shardsign {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(stdout.lines().last().expect("output")).expect("JSON")
    }
}
