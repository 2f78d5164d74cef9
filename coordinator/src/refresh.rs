//! Share refresh of a key: all three nodes, progress streamed to the caller, and either every
//! node moves to the next epoch or none does (the nodes' commit rule; see
//! `signing::refresh_end`). The registry moves the key's epoch forward together with the commit
//! certificate, before any node commits, so that a node that misses the commit is handed the
//! certificate later (by the next refresh, or by the signing path when that node refuses a
//! session for being behind: [`Refresher::heal`]). An open refresh left by a crash is resolved
//! before the next one starts: committed if all three nodes voted, aborted otherwise.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardsign_audit::AuditEntry;
use shardsign_proto::v1 as api;
use shardsign_request::KeyId;
use tokio::sync::mpsc;
use tonic::Status;

use crate::error::CoordError;
use crate::metrics::CoordinatorMetrics;
use crate::registry::{KeyRecord, Registry};
use crate::signing::package_agreement::{self, AgreementError};
use crate::signing::pool::NodePool;
use crate::signing::refresh_end::{self, Pending};
use crate::signing::relay::{self, Clients, RelayError};

/// Where a refresh's progress goes: the caller's stream.
pub type Events = mpsc::Sender<Result<api::RefreshKeyEvent, Status>>;

pub struct Refresher {
    pub registry: Arc<Registry>,
    pub pool: Arc<NodePool>,
    pub round_timeout: Duration,
    pub metrics: Arc<CoordinatorMetrics>,
    /// Keys being refreshed by this coordinator (one refresh per key at a time).
    running: Mutex<HashSet<String>>,
}

/// Removes a key from the running set when its refresh ends, however it ends.
struct Running<'a> {
    refresher: &'a Refresher,
    key_id: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.refresher.running().remove(&self.key_id);
    }
}

impl Refresher {
    pub fn new(
        registry: Arc<Registry>,
        pool: Arc<NodePool>,
        round_timeout: Duration,
        metrics: Arc<CoordinatorMetrics>,
    ) -> Self {
        Refresher {
            registry,
            pool,
            round_timeout,
            metrics,
            running: Mutex::new(HashSet::new()),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn call_timeout(&self) -> Duration {
        self.round_timeout.max(Duration::from_secs(10))
    }

    /// Validates a refresh request; returns the key as registered.
    pub fn check(&self, request: &api::RefreshKeyRequest) -> Result<KeyRecord, CoordError> {
        let key_id = KeyId::field(&request.key_id)?;
        let key = self.registry.get_key(key_id.as_str())?;
        if key.disabled {
            return Err(CoordError::RefreshRefused(format!(
                "key `{key_id}` is disabled; a disabled key is never used again, so refreshing it protects nothing"
            )));
        }
        if !self.pool.bans().all().is_empty() {
            return Err(CoordError::RefreshRefused(format!(
                "a refresh needs all three nodes, and {}; replace the banned node (a membership change) first",
                self.pool.bans().describe()
            )));
        }
        Ok(key)
    }

    /// Runs a checked refresh (complete, or `fast`), reporting progress on `events` and auditing
    /// the outcome as done by `actor` (its caller fields filled in).
    pub async fn run(
        self: Arc<Self>,
        key: KeyRecord,
        fast: bool,
        actor: AuditEntry,
        events: Events,
    ) {
        use api::refresh_key_event::{Event, Failed, Round, Started};
        send(
            &events,
            Event::Started(Started {
                key_id: key.key_id.clone(),
                from_epoch: key.epoch,
            }),
        )
        .await;
        let (round_tx, mut round_rx) = mpsc::unbounded_channel::<u32>();
        let forward = {
            let events = events.clone();
            tokio::spawn(async move {
                while let Some(round) = round_rx.recv().await {
                    send(&events, Event::Round(Round { round })).await;
                }
            })
        };
        let outcome = self
            .refresh_audited(&key, fast, actor, "api", move |round| {
                let _ = round_tx.send(round);
            })
            .await;
        let _ = forward.await;
        match outcome {
            Ok(done) => {
                tracing::info!(key_id = done.key_id, epoch = done.epoch, "key refreshed");
                send(&events, Event::Done(done.to_api())).await;
            }
            Err(error) => {
                tracing::warn!(key_id = key.key_id, %error, "refresh failed");
                send(
                    &events,
                    Event::Failed(Failed {
                        reason: error.to_string(),
                    }),
                )
                .await;
            }
        }
    }

    /// [`Self::refresh`], then the audit record (as done by `actor`) and the metric.
    pub async fn refresh_audited(
        &self,
        key: &KeyRecord,
        fast: bool,
        actor: AuditEntry,
        trigger: &'static str,
        on_round: impl FnMut(u32) + Send,
    ) -> Result<KeyRecord, CoordError> {
        let outcome = self.refresh(&key.key_id, fast, on_round).await;
        let kind = if fast { "fast" } else { "complete" };
        let (decision, detail) = match &outcome {
            Ok(done) => (
                "allowed",
                format!("{kind} refresh, epoch {} -> {}", key.epoch, done.epoch),
            ),
            Err(error) => ("failed", format!("{kind} refresh: {error}")),
        };
        self.metrics
            .refreshed(trigger, if outcome.is_ok() { "done" } else { "failed" });
        if let Err(error) = self.registry.append_audit(AuditEntry {
            operation: "key_refreshed".into(),
            key_id: key.key_id.clone(),
            decision: decision.into(),
            detail,
            at_ms: shardsign_request::unix_now_ms(),
            ..actor
        }) {
            tracing::error!(%error, key_id = key.key_id, "the refresh's audit record could not be written");
        }
        outcome
    }

    /// Refreshes `key_id` on the three nodes (the complete refresh, or the `fast` one); the key
    /// at its new epoch.
    pub async fn refresh(
        &self,
        key_id: &str,
        fast: bool,
        mut on_round: impl FnMut(u32) + Send,
    ) -> Result<KeyRecord, CoordError> {
        if !self.running().insert(key_id.to_string()) {
            return Err(CoordError::RefreshRefused(format!(
                "a refresh of `{key_id}` is already running"
            )));
        }
        let _running = Running {
            refresher: self,
            key_id: key_id.to_string(),
        };
        let clients = self.pool.clients();
        self.resolve_open(&clients, key_id).await?;
        let key = self.registry.get_key(key_id)?;
        let timeout = self.call_timeout();
        // Keys made before the nodes kept their package need one agreed first.
        package_agreement::ensure(&clients, key_id, key.epoch, timeout)
            .await
            .map_err(|AgreementError { node, status }| {
                if status.code() == tonic::Code::Unavailable {
                    self.pool.mark_failed(node, status.message());
                }
                CoordError::RefreshFailed(format!(
                    "the nodes could not agree on the key's public key package, which a refresh needs (node {node}: {}); nothing changed",
                    status.message()
                ))
            })?;
        let session_id = relay::fresh_session_id();
        let outcome = {
            let mut options = relay::Options {
                call_timeout: timeout,
                on_round: Some(&mut on_round),
                ..Default::default()
            };
            relay::refresh(&clients, &session_id, key_id, key.epoch, fast, &mut options).await
        };
        let votes: Vec<_> = match &outcome {
            Ok(results) => results.values().filter_map(|r| r.vote.clone()).collect(),
            Err(_) => Vec::new(),
        };
        if votes.len() != clients.len() {
            let left = refresh_end::abort_everywhere(&clients, &session_id, key_id, timeout).await;
            let cause = match outcome {
                Err(RelayError { node, status }) => {
                    if status.code() == tonic::Code::Unavailable {
                        self.pool.mark_failed(node, status.message());
                    }
                    format!("node {node}: {}", status.message())
                }
                Ok(_) => format!("only {} of 3 nodes voted", votes.len()),
            };
            return Err(CoordError::RefreshFailed(format!(
                "{cause}; {}",
                describe_abort(&left, key.epoch)
            )));
        }
        let commit = refresh_end::commit_request(&session_id, key_id, votes);
        let refreshed = self.registry.record_refresh(key_id, key.epoch, &commit)?;
        let everyone: BTreeSet<u8> = clients.keys().copied().collect();
        for (node, answer) in refresh_end::commit_on(&clients, &everyone, &commit, timeout).await {
            if let Err(status) = answer {
                tracing::warn!(node, key_id, error = %status.message(), "a node did not acknowledge the refresh commit; it is given the certificate again when it next refuses a session for being behind, or by the next refresh");
            }
        }
        Ok(refreshed)
    }

    /// Ends any refresh of `key_id` left open on the nodes (by a crash or a lost reply): commits
    /// it where the certificate exists, aborts it otherwise. Needs every node.
    async fn resolve_open(&self, clients: &Clients, key_id: &str) -> Result<(), CoordError> {
        let timeout = self.call_timeout();
        let (open, unreachable) = refresh_end::pending_on_nodes(clients, key_id, timeout).await;
        if let Some(node) = unreachable.first() {
            return Err(CoordError::Unavailable(format!(
                "node {node} did not answer: a refresh needs all three nodes; every node stays on the current epoch"
            )));
        }
        let key = self.registry.get_key(key_id)?;
        for Pending { session_id, votes } in open {
            let stored = self
                .registry
                .refresh_commit(key_id, key.epoch)?
                .filter(|commit| commit.session_id == session_id);
            let commit = match stored {
                Some(commit) => Some(commit),
                None if votes.len() == clients.len() => {
                    // All three voted but the registry never recorded it (the coordinator
                    // stopped in between): the certificate is complete, so commit.
                    let commit = refresh_end::commit_request(&session_id, key_id, votes);
                    self.registry.record_refresh(key_id, key.epoch, &commit)?;
                    Some(commit)
                }
                None => None,
            };
            match commit {
                Some(commit) => {
                    let nodes = clients.keys().copied().collect();
                    for (node, answer) in
                        refresh_end::commit_on(clients, &nodes, &commit, timeout).await
                    {
                        if let Err(status) = answer
                            && status.code() != tonic::Code::FailedPrecondition
                        {
                            return Err(CoordError::RefreshFailed(format!(
                                "an earlier refresh of `{key_id}` could not be committed on node {node}: {}",
                                status.message()
                            )));
                        }
                    }
                    tracing::info!(key_id, "an earlier refresh left open was committed");
                }
                None => {
                    let left =
                        refresh_end::abort_everywhere(clients, &session_id, key_id, timeout).await;
                    if !left.is_empty() {
                        return Err(CoordError::RefreshFailed(format!(
                            "an earlier refresh of `{key_id}` is still open and could not be aborted ({})",
                            left.join("; ")
                        )));
                    }
                    tracing::info!(key_id, "an earlier refresh left open was aborted");
                }
            }
        }
        Ok(())
    }
}

fn describe_abort(left: &[String], epoch: u64) -> String {
    if left.is_empty() {
        format!(
            "the refresh was aborted on every node, which all stay on epoch {epoch} (signing goes on); run it again"
        )
    } else {
        format!(
            "every node stays on epoch {epoch}, but the abort did not reach every node ({}); the next refresh resolves it",
            left.join("; ")
        )
    }
}

async fn send(events: &Events, event: api::refresh_key_event::Event) {
    // A caller that went away does not stop the refresh (it commits or aborts everywhere).
    let _ = events
        .send(Ok(api::RefreshKeyEvent { event: Some(event) }))
        .await;
}
