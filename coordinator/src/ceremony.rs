//! The key-generation ceremony: all three nodes, progress streamed to the caller, the key
//! registered only once every node finished with the same key and acknowledged committing it
//! (retried; otherwise aborted everywhere, see `signing::finalize`), then sealed on the nodes.

use std::sync::Arc;
use std::time::Duration;

use shardsign_eth::Address;
use shardsign_proto::v1 as api;
use shardsign_request::KeyId;
use shardsign_request::proto::MAX_CHAIN_ID;
use tokio::sync::mpsc;
use tonic::{Code, Status};

use crate::MAX_LABEL_LEN;
use crate::error::CoordError;
use crate::registry::{KeyRecord, Registry, unix_now};
use crate::signing::finalize;
use crate::signing::pool::NodePool;
use crate::signing::relay::{self, RelayError};

/// Where the ceremony's progress goes: the caller's stream.
pub type Events = mpsc::Sender<Result<api::CreateKeyEvent, Status>>;

pub struct Ceremony {
    pub registry: Arc<Registry>,
    pub pool: Arc<NodePool>,
    pub round_timeout: Duration,
}

impl Ceremony {
    /// Validates a key-creation request; returns the key id to use.
    pub fn check(&self, request: &api::CreateKeyRequest) -> Result<KeyId, CoordError> {
        if request.label.len() > MAX_LABEL_LEN || request.label.chars().any(char::is_control) {
            return Err(CoordError::invalid(
                "label",
                format!("expected at most {MAX_LABEL_LEN} characters, no control characters"),
            ));
        }
        if request.allowed_chain_ids.is_empty() || request.allowed_chain_ids.len() > 64 {
            return Err(CoordError::invalid(
                "allowed_chain_ids",
                "expected 1 to 64 chain ids",
            ));
        }
        if request
            .allowed_chain_ids
            .iter()
            .any(|c| *c == 0 || *c > MAX_CHAIN_ID)
        {
            return Err(CoordError::invalid(
                "allowed_chain_ids",
                "chain ids are 1 to 2^63 - 37",
            ));
        }
        let key_id = if request.key_id.is_empty() {
            format!("key-{}", hex::encode(rand::random::<[u8; 8]>()))
        } else {
            request.key_id.clone()
        };
        let key_id = KeyId::field(&key_id)?;
        if !self.pool.bans().all().is_empty() {
            return Err(CoordError::KeygenRefused(format!(
                "key generation needs all three nodes, and {}; replace the banned node (a membership change) first",
                self.pool.bans().describe()
            )));
        }
        if self.registry.key_exists(key_id.as_str())? {
            return Err(CoordError::KeyExists(key_id.into_string()));
        }
        Ok(key_id)
    }

    /// Runs the ceremony, reporting progress on `events`. The key is registered only if all
    /// three nodes finished and committed.
    pub async fn run(
        self: Arc<Self>,
        request: api::CreateKeyRequest,
        key_id: KeyId,
        events: Events,
    ) {
        use api::create_key_event::{Event, Failed, Started};
        send(
            &events,
            Event::Started(Started {
                key_id: key_id.to_string(),
            }),
        )
        .await;
        let mut chains = request.allowed_chain_ids.clone();
        chains.sort_unstable();
        chains.dedup();
        let session_id = relay::fresh_session_id();
        let outcome = self
            .relay_with_progress(&session_id, &key_id, &chains, &events)
            .await;
        let result = match outcome {
            Ok(results) => {
                let registered = self.register(&request, &key_id, &chains, &results[0].public_key);
                if registered.is_ok() {
                    self.seal(&session_id, &key_id).await;
                }
                registered
            }
            Err(RelayError { node, status }) => {
                if status.code() == Code::Unavailable {
                    self.pool.mark_failed(node, status.message());
                }
                Err(CoordError::KeygenFailed(format!(
                    "node {node}: {}",
                    status.message()
                )))
            }
        };
        match result {
            Ok(key) => {
                tracing::info!(%key_id, address = key.address, "key created");
                send(&events, Event::Done(key.to_api())).await;
            }
            Err(error) => {
                tracing::warn!(%key_id, %error, "key generation failed");
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

    /// Seals the registered key's shares on the nodes (no abort deletes them from then on).
    /// A node that misses it seals its share when the key's policy reaches it.
    async fn seal(&self, session_id: &[u8], key_id: &KeyId) {
        let clients = self.pool.clients();
        let timeout = self.round_timeout.max(Duration::from_secs(10));
        if let Err(error) =
            finalize::commit_everywhere(&clients, session_id, key_id.as_str(), true, timeout).await
        {
            tracing::warn!(%key_id, node = error.node, error = %error.status.message(), "a node did not seal its share of the registered key; it will when the key's policy reaches it");
        }
    }

    /// The relayed key generation, forwarding each node that joined and each round as events.
    async fn relay_with_progress(
        &self,
        session_id: &[u8],
        key_id: &KeyId,
        chains: &[u64],
        events: &Events,
    ) -> Result<Vec<shardsign_proto::node::v1::KeygenResult>, RelayError> {
        use api::create_key_event::{Event, NodeJoined, Round};
        let (progress_tx, mut progress_rx) = mpsc::unbounded_channel::<Event>();
        let forward = {
            let events = events.clone();
            tokio::spawn(async move {
                while let Some(event) = progress_rx.recv().await {
                    send(&events, event).await;
                }
            })
        };
        let joined_tx = progress_tx.clone();
        let mut on_joined = move |node: u8| {
            let _ = joined_tx.send(Event::NodeJoined(NodeJoined {
                node_id: u32::from(node),
            }));
        };
        let mut on_round = move |round: u32| {
            let _ = progress_tx.send(Event::Round(Round { round }));
        };
        let outcome = {
            let mut options = relay::Options {
                call_timeout: self.round_timeout.max(Duration::from_secs(10)),
                on_joined: Some(&mut on_joined),
                on_round: Some(&mut on_round),
                ..Default::default()
            };
            let clients = self.pool.clients();
            relay::keygen(&clients, session_id, key_id.as_str(), chains, &mut options).await
        };
        // The progress closures own the senders: drop them so that the forwarder sees the end.
        drop(on_joined);
        drop(on_round);
        let _ = forward.await;
        outcome
    }

    fn register(
        &self,
        request: &api::CreateKeyRequest,
        key_id: &KeyId,
        chains: &[u64],
        public_key: &[u8],
    ) -> Result<KeyRecord, CoordError> {
        // Compressed SEC1 only: the registry keeps one byte form per key.
        let compressed = public_key.len() == 33 && matches!(public_key[0], 2 | 3);
        let verifying_key = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key)
            .ok()
            .filter(|_| compressed)
            .ok_or_else(|| {
                CoordError::KeygenFailed("the nodes returned an invalid public key".into())
            })?;
        let key = KeyRecord {
            key_id: key_id.to_string(),
            label: request.label.clone(),
            public_key: public_key.to_vec(),
            address: Address::from_public_key(&verifying_key).to_checksum(),
            allowed_chain_ids: chains.to_vec(),
            created_at: unix_now(),
            disabled: false,
            epoch: 0,
            epoch_changed_at: unix_now(),
        };
        self.registry.insert_key(&key)?;
        Ok(key)
    }
}

async fn send(events: &Events, event: api::create_key_event::Event) {
    // A caller that went away does not stop the ceremony (it commits or aborts everywhere).
    let _ = events
        .send(Ok(api::CreateKeyEvent { event: Some(event) }))
        .await;
}
