//! Runs `tests/python/eth_crosscheck.py` under the project's Python venv (eth-account pinned by
//! `scripts/requirements-test.txt`), one JSON request in, one JSON reply out.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The interpreter with eth-account: `SHARDSIGN_PYTHON`, else `.venv/bin/python` at the root.
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("SHARDSIGN_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = workspace_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "the eth-account cross-check needs {}: run scripts/setup-python.sh (scripts/test.sh does it for you)",
        venv.display()
    );
    venv
}

/// Sends `request` to the cross-check script and returns its reply.
pub fn call(request: &Value) -> Value {
    let script = workspace_root().join("tests/python/eth_crosscheck.py");
    let mut child = Command::new(python())
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Python cross-check");
    let input = serde_json::to_vec(request).expect("request serialises");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("write request");
    let output = child.wait_with_output().expect("Python cross-check runs");
    assert!(
        output.status.success(),
        "eth_crosscheck.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("reply is JSON")
}
