//! Replacing a node (lost disk, or banned for cheating) by a fresh node with a new identity at
//! the same address. The coordinator only carries bytes; every rule is the nodes' (see the
//! node's `sessions::membership`): a node applies a membership change only when a quorum of
//! the offline membership keys signed it, makes repair terms only for the node that change
//! replaced and seals them to its new identity, and the new node checks what it assembles
//! against the key's package. Per key: repair terms from the two others, assembly on the new
//! node (a hollow share), then a complete refresh across all three (every share new). A key the
//! new node already holds whole is skipped, so a run stopped half way resumes.

use std::sync::Arc;
use std::time::Duration;

use shardsign_audit::AuditEntry;
use shardsign_proto::node::v1::{
    ListKeysRequest, NodeKey, PutMembershipRequest, RepairAssembleRequest, RepairTermRequest,
};
use shardsign_proto::v1 as api;
use tokio::sync::mpsc;
use tonic::Status;

use crate::error::CoordError;
use crate::refresh::Refresher;
use crate::registry::KeyRecord;
use crate::signing::relay::Clients;

/// Largest encoded membership statement accepted (the nodes' limit too).
const MAX_STATEMENT_BYTES: usize = 8 * 1024;

/// Where a replacement's progress goes: the caller's stream.
pub type Events = mpsc::Sender<Result<api::ReplaceNodeEvent, Status>>;

pub struct Replacer {
    pub refresher: Arc<Refresher>,
}

/// Why a replacement stopped, and at which key.
struct Stopped {
    error: CoordError,
    key_id: String,
}

fn node_said(node: u8, status: &Status) -> String {
    format!("node {node}: {}", status.message())
}

impl Replacer {
    fn call_timeout(&self) -> Duration {
        self.refresher.round_timeout.max(Duration::from_secs(10))
    }

    /// Validates a request; the node to replace.
    pub fn check(&self, request: &api::ReplaceNodeRequest) -> Result<u8, CoordError> {
        let node = u8::try_from(request.node_id)
            .ok()
            .filter(|n| (1..=3).contains(n))
            .ok_or_else(|| CoordError::invalid("node_id", "expected 1, 2 or 3"))?;
        if request.signed_statement.is_empty()
            || request.signed_statement.len() > MAX_STATEMENT_BYTES
        {
            return Err(CoordError::invalid(
                "signed_statement",
                format!(
                    "expected an encoded membership statement of 1 to {MAX_STATEMENT_BYTES} bytes (`shardsign membership sign`)"
                ),
            ));
        }
        Ok(node)
    }

    /// Runs a checked replacement, reporting progress on `events` and auditing the outcome as
    /// done by `actor`.
    pub async fn run(
        self: Arc<Self>,
        node: u8,
        statement: Vec<u8>,
        actor: AuditEntry,
        events: Events,
    ) {
        use api::replace_node_event::{Event, Failed};
        let outcome = self.replace(node, &statement, &events).await;
        let (decision, detail) = match &outcome {
            Ok(keys) => (
                "allowed",
                format!("node {node} replaced; {keys} keys repaired and refreshed"),
            ),
            Err(stopped) => ("failed", stopped.error.to_string()),
        };
        if let Err(error) = self.refresher.registry.append_audit(AuditEntry {
            operation: "node_replaced".into(),
            decision: decision.into(),
            detail,
            peer: format!("node {node}"),
            at_ms: shardsign_request::unix_now_ms(),
            ..actor
        }) {
            tracing::error!(%error, "the replacement's audit record could not be written");
        }
        self.refresher
            .metrics
            .replaced(if outcome.is_ok() { "done" } else { "failed" });
        let event = match outcome {
            Ok(keys) => {
                tracing::warn!(target: "security", node, keys, "node replaced");
                Event::Done(api::replace_node_event::Done { keys })
            }
            Err(Stopped { error, key_id }) => {
                tracing::warn!(node, key_id, %error, "node replacement stopped");
                Event::Failed(Failed {
                    reason: error.to_string(),
                    key_id,
                })
            }
        };
        send(&events, event).await;
    }

    async fn replace(&self, node: u8, statement: &[u8], events: &Events) -> Result<u32, Stopped> {
        use api::replace_node_event::{Event, KeyDone, Started};
        let at = |key_id: &str| {
            let key_id = key_id.to_string();
            move |error: CoordError| Stopped { error, key_id }
        };
        let clients = self.refresher.pool.clients();
        if clients.len() != 3 {
            return Err(at("")(CoordError::ReplaceFailed(
                "the coordinator is not configured with all three nodes".into(),
            )));
        }
        let version = self
            .put_membership(&clients, node, statement)
            .await
            .map_err(at(""))?;
        let forgotten = self.refresher.pool.bans().forget_node(node);
        if forgotten > 0 {
            tracing::warn!(
                node,
                forgotten,
                "bans by or of the replaced node forgotten (they name its old identity)"
            );
        }
        let keys: Vec<KeyRecord> = self
            .refresher
            .registry
            .list_keys()
            .map_err(at(""))?
            .into_iter()
            .filter(|k| !k.disabled)
            .collect();
        send(
            events,
            Event::Started(Started {
                node_id: u32::from(node),
                membership_version: version,
                keys: keys.len() as u32,
            }),
        )
        .await;
        for key in &keys {
            let (epoch, repaired) = self
                .bring_key(&clients, node, key)
                .await
                .map_err(at(&key.key_id))?;
            send(
                events,
                Event::Key(KeyDone {
                    key_id: key.key_id.clone(),
                    epoch,
                    repaired,
                }),
            )
            .await;
        }
        Ok(keys.len() as u32)
    }

    /// The change on the new node first (it proves it holds the new identity), then on the two
    /// others; the membership version afterwards.
    async fn put_membership(
        &self,
        clients: &Clients,
        node: u8,
        statement: &[u8],
    ) -> Result<u64, CoordError> {
        let mut order = vec![node];
        order.extend((1..=3).filter(|n| *n != node));
        let mut version = 0;
        for id in order {
            let mut client = clients[&id].clone();
            let mut request = tonic::Request::new(PutMembershipRequest {
                signed_statement: statement.to_vec(),
            });
            request.set_timeout(self.call_timeout());
            let reply = client
                .put_membership(request)
                .await
                .map_err(|status| {
                    CoordError::ReplaceFailed(format!(
                        "the membership change was refused by {}{}",
                        node_said(id, &status),
                        if id == node {
                            " (is the new node, with its new identity, serving at this node's address?)"
                        } else {
                            ""
                        }
                    ))
                })?
                .into_inner();
            version = version.max(reply.version);
        }
        Ok(version)
    }

    async fn node_key(
        &self,
        clients: &Clients,
        node: u8,
        key_id: &str,
    ) -> Result<Option<NodeKey>, CoordError> {
        let mut client = clients[&node].clone();
        let mut request = tonic::Request::new(ListKeysRequest {
            include_pending: false,
        });
        request.set_timeout(self.call_timeout());
        let keys = client
            .list_keys(request)
            .await
            .map_err(|status| CoordError::ReplaceFailed(node_said(node, &status)))?
            .into_inner()
            .keys;
        Ok(keys.into_iter().find(|k| k.key_id == key_id))
    }

    /// Repairs `key` on `node` unless it holds it whole, then refreshes it across all three;
    /// the key's epoch afterwards and whether it was repaired now.
    async fn bring_key(
        &self,
        clients: &Clients,
        node: u8,
        key: &KeyRecord,
    ) -> Result<(u64, bool), CoordError> {
        let held = self.node_key(clients, node, &key.key_id).await?;
        if held.as_ref().is_some_and(|k| !k.hollow) {
            return Ok((key.epoch, false));
        }
        if held.is_none() {
            let mut terms = Vec::new();
            for helper in (1..=3u8).filter(|n| *n != node) {
                let mut client = clients[&helper].clone();
                let mut request = tonic::Request::new(RepairTermRequest {
                    key_id: key.key_id.clone(),
                    epoch: key.epoch,
                    target: u32::from(node),
                });
                request.set_timeout(self.call_timeout());
                let reply = client.repair_term(request).await.map_err(|status| {
                    CoordError::ReplaceFailed(format!(
                        "repair term for `{}`: {}",
                        key.key_id,
                        node_said(helper, &status)
                    ))
                })?;
                terms.push(reply.into_inner());
            }
            let mut client = clients[&node].clone();
            let mut request = tonic::Request::new(RepairAssembleRequest {
                key_id: key.key_id.clone(),
                epoch: key.epoch,
                terms,
            });
            request.set_timeout(self.call_timeout());
            client.repair_assemble(request).await.map_err(|status| {
                CoordError::ReplaceFailed(format!(
                    "assembling `{}` on the new node: {}",
                    key.key_id,
                    node_said(node, &status)
                ))
            })?;
        }
        // The complete refresh (never the fast one after a repair) makes every share whole.
        let refreshed = self.refresher.refresh(&key.key_id, false, |_| {}).await?;
        Ok((refreshed.epoch, true))
    }
}

async fn send(events: &Events, event: api::replace_node_event::Event) {
    // A caller that went away does not stop the replacement.
    let _ = events
        .send(Ok(api::ReplaceNodeEvent { event: Some(event) }))
        .await;
}
