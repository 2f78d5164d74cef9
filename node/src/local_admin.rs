//! The local delivery path: an operator on the node's host puts a signed key statement (a policy
//! or a disable statement) on the running node without the coordinator (`shardsign-node policy
//! put --config FILE STATEMENT`), so a coordinator that withholds one can be bypassed. A Unix
//! socket in the data directory (0700), itself 0600: only the node's own user can connect. One
//! request per connection: a 4-byte big-endian length and the encoded `SignedStatement` (bounded
//! before it is read); one answer: a status byte (0 accepted, 1 refused) and a length-prefixed
//! UTF-8 message.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shardsign_policy::signed::MAX_SIGNED_POLICY_BYTES;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::error::NodeError;
use crate::sessions::Node;

/// The socket's file name in the data directory.
pub const SOCKET_FILE: &str = "admin.sock";
/// How long one request may take to arrive.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// Binds the socket (replacing a stale one), owner-only, and serves it in the background.
pub fn serve(data_dir: &Path, node: Arc<Node>) -> Result<tokio::task::JoinHandle<()>, NodeError> {
    let path = socket_path(data_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(NodeError::io(&path, error)),
    }
    let listener = UnixListener::bind(&path).map_err(|e| NodeError::io(&path, e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| NodeError::io(&path, e))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let node = node.clone();
            tokio::spawn(async move {
                if let Err(error) = answer(stream, node).await {
                    tracing::warn!(%error, "local admin request failed");
                }
            });
        }
    }))
}

async fn answer(mut stream: UnixStream, node: Arc<Node>) -> std::io::Result<()> {
    let request = tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream)).await;
    let outcome = match request {
        Err(_) => Err("the request did not arrive in time".to_string()),
        Ok(Err(error)) => Err(error.to_string()),
        Ok(Ok(signed)) => tokio::task::spawn_blocking(move || node.put_policy(&signed))
            .await
            .map_err(|_| "the node could not process the request".to_string())
            .and_then(|stored| stored.map_err(|e| e.to_string()))
            .map(|policy| {
                tracing::info!(
                    key_id = policy.key_id,
                    version = policy.version,
                    "key policy put through the local admin socket"
                );
                match policy.disabled {
                    None => format!(
                        "policy v{} of `{}` is in force on this node",
                        policy.version, policy.key_id
                    ),
                    Some(_) => format!(
                        "key `{}` is disabled on this node (statement v{})",
                        policy.key_id, policy.version
                    ),
                }
            }),
    };
    let (status, message) = match outcome {
        Ok(message) => (0u8, message),
        Err(message) => (1u8, message),
    };
    stream.write_u8(status).await?;
    stream.write_u32(message.len() as u32).await?;
    stream.write_all(message.as_bytes()).await?;
    stream.shutdown().await
}

async fn read_request(stream: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u32().await? as usize;
    if len == 0 || len > MAX_SIGNED_POLICY_BYTES {
        return Err(std::io::Error::other(format!(
            "a signed policy is 1 to {MAX_SIGNED_POLICY_BYTES} bytes, not {len}"
        )));
    }
    let mut signed = vec![0u8; len];
    stream.read_exact(&mut signed).await?;
    Ok(signed)
}

/// The client side (`shardsign-node policy put`): the node's answer, or why there is none.
pub async fn put_policy(data_dir: &Path, signed: &[u8]) -> Result<String, String> {
    let path = socket_path(data_dir);
    let mut stream = UnixStream::connect(&path).await.map_err(|e| {
        format!(
            "cannot reach the running node at {}: {e} (is it running, and are you its user?)",
            path.display()
        )
    })?;
    let io = |e: std::io::Error| format!("local admin socket: {e}");
    stream.write_u32(signed.len() as u32).await.map_err(io)?;
    stream.write_all(signed).await.map_err(io)?;
    let status = stream.read_u8().await.map_err(io)?;
    let len = stream.read_u32().await.map_err(io)? as usize;
    if len > 64 * 1024 {
        return Err("local admin socket: the answer is too long".into());
    }
    let mut message = vec![0u8; len];
    stream.read_exact(&mut message).await.map_err(io)?;
    let message = String::from_utf8_lossy(&message).into_owned();
    if status == 0 {
        Ok(message)
    } else {
        Err(message)
    }
}
