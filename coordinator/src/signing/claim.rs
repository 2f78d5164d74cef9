//! A request id is signed by one call at a time, cluster-wide: the call that claims it signs;
//! another call of the same request (a client's retry, on this coordinator or another) waits for
//! the first one's stored response, or for its claim to be released or to lapse. A shared
//! registry's claim is a lease renewed while the signing runs, so the claim of a coordinator that
//! died lapses within [`SHARED_LEASE`] and a retry elsewhere takes over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::CoordError;
use crate::registry::{Claim, Registry};

/// How long a shared claim lasts without renewal.
pub const SHARED_LEASE: Duration = Duration::from_secs(3);
/// How often a held shared claim is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often a waiting call looks again.
const POLL: Duration = Duration::from_millis(50);

/// A held claim: released when dropped (after the outcome is stored).
pub struct ClaimGuard {
    registry: Arc<Registry>,
    request_id: String,
    renewal: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        if let Err(error) = self.registry.release_claim(&self.request_id) {
            // The lease lapses on its own; a retry waits for it at most that long.
            tracing::warn!(%error, "cannot release a request id's claim");
        }
    }
}

/// What waiting for a request id ended with.
pub enum Claimed {
    /// This call signs; hold the guard until its outcome is stored.
    Mine(ClaimGuard),
    /// Another call signed it meanwhile: its stored response.
    Done(Vec<u8>),
}

/// Claims `request_id` for the request hashed `request_hash`, waiting (until `deadline`) while
/// another call of the same request holds it.
pub async fn claim(
    registry: &Arc<Registry>,
    request_id: &str,
    request_hash: &[u8; 32],
    deadline: Instant,
) -> Result<Claimed, CoordError> {
    let mut waited = false;
    loop {
        // One process's claim lives in its memory and lasts as long as the call may.
        let lease = if registry.is_shared() {
            SHARED_LEASE
        } else {
            deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1)
        };
        match registry.claim_request(request_id, request_hash, lease)? {
            Claim::Claimed => {
                if waited {
                    tracing::info!(
                        request_id = %shardsign_request::Printable(request_id),
                        "claimed a request id another call held (released, or its lease lapsed)"
                    );
                }
                let renewal = registry
                    .is_shared()
                    .then(|| renew(registry.clone(), request_id));
                return Ok(Claimed::Mine(ClaimGuard {
                    registry: registry.clone(),
                    request_id: request_id.to_string(),
                    renewal,
                }));
            }
            Claim::OtherRequest => {
                return Err(CoordError::RequestIdReused(request_id.to_string()));
            }
            Claim::Busy => {}
        }
        if Instant::now() + POLL >= deadline {
            return Err(CoordError::Unavailable(format!(
                "request id {} is being signed by another call; retry with the same id for its signature",
                shardsign_request::Printable(request_id)
            )));
        }
        waited = true;
        tokio::time::sleep(POLL).await;
        if let Some(stored) = registry.idempotent_response(request_id, request_hash)? {
            tracing::info!(
                request_id = %shardsign_request::Printable(request_id),
                "another call signed this request id meanwhile; returning its reply"
            );
            return Ok(Claimed::Done(stored));
        }
    }
}

fn renew(registry: Arc<Registry>, request_id: &str) -> tokio::task::JoinHandle<()> {
    let request_id = request_id.to_string();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RENEW_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            let registry = registry.clone();
            let id = request_id.clone();
            let renewed =
                tokio::task::spawn_blocking(move || registry.renew_claim(&id, SHARED_LEASE)).await;
            match renewed {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => {
                    tracing::warn!("a request id's claim lapsed before it could be renewed");
                    return;
                }
                Ok(Err(error)) => tracing::warn!(%error, "cannot renew a request id's claim"),
                Err(_) => return,
            }
        }
    })
}
