//! The three nodes as the coordinator sees them: one long-lived mTLS channel each (reconnects on
//! its own after a node restarts), and a short memory of which node failed recently so that the
//! next pair avoids it. Pairs rotate so that load spreads over all three.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardsign_proto::node::v1::node_client::NodeClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::{CoordinatorConfig, NodeConfig};
use crate::error::CoordError;
use crate::signing::bans::Bans;
use crate::signing::relay::Clients;

/// The three signing pairs.
pub const PAIRS: [[u8; 2]; 3] = [[1, 2], [2, 3], [1, 3]];
/// How long a failed node is avoided when choosing pairs.
const AVOID_FOR: Duration = Duration::from_secs(5);
/// Largest node reply accepted (a round's envelopes).
const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Default)]
struct Health {
    failed_at: Option<Instant>,
    last_error: Option<String>,
}

pub struct NodeHandle {
    pub config: NodeConfig,
    pub client: NodeClient<Channel>,
    health: Mutex<Health>,
}

pub struct NodePool {
    nodes: BTreeMap<u8, NodeHandle>,
    cursor: AtomicUsize,
    bans: Arc<Bans>,
}

impl NodePool {
    pub fn new(config: &CoordinatorConfig, bans: Arc<Bans>) -> Result<Self, CoordError> {
        let mut nodes = BTreeMap::new();
        for node in &config.nodes {
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&config.node_ca))
                .identity(Identity::from_pem(
                    &config.node_client.cert,
                    config.node_client.key.as_bytes(),
                ))
                .domain_name(node.tls_name.clone());
            let channel = Endpoint::from_shared(node.address.clone())
                .map_err(|e| {
                    CoordError::config(format!("nodes[{}].address", node.node_id), e.to_string())
                })?
                .tls_config(tls)
                .map_err(|e| CoordError::config("node_tls", e.to_string()))?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(20))
                .keep_alive_while_idle(true)
                .connect_lazy();
            let client = NodeClient::new(channel).max_decoding_message_size(MAX_REPLY_BYTES);
            nodes.insert(
                node.node_id,
                NodeHandle {
                    config: node.clone(),
                    client,
                    health: Mutex::new(Health::default()),
                },
            );
        }
        Ok(NodePool {
            nodes,
            cursor: AtomicUsize::new(0),
            bans,
        })
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeHandle> {
        self.nodes.values()
    }

    pub fn clients(&self) -> Clients {
        self.nodes
            .iter()
            .map(|(id, n)| (*id, n.client.clone()))
            .collect()
    }

    fn health(&self, node: u8) -> std::sync::MutexGuard<'_, Health> {
        self.nodes[&node]
            .health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn recently_failed(&self, node: u8) -> bool {
        self.health(node)
            .failed_at
            .is_some_and(|at| at.elapsed() < AVOID_FOR)
    }

    /// The bans the nodes hold, as far as the coordinator knows.
    pub fn bans(&self) -> &Bans {
        &self.bans
    }

    /// Pairs in the order to try them: never a pair in which one node banned the other;
    /// rotating for load, pairs with recently failed nodes last.
    pub fn candidate_pairs(&self) -> Vec<[u8; 2]> {
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let mut pairs: Vec<[u8; 2]> = (0..PAIRS.len())
            .map(|i| PAIRS[(start + i) % PAIRS.len()])
            .filter(|pair| !self.bans.pair_banned(*pair))
            .collect();
        pairs.sort_by_key(|pair| pair.iter().filter(|n| self.recently_failed(**n)).count());
        pairs
    }

    pub fn mark_failed(&self, node: u8, error: &str) {
        let mut health = self.health(node);
        health.failed_at = Some(Instant::now());
        health.last_error = Some(error.to_string());
    }

    pub fn mark_ok(&self, node: u8) {
        *self.health(node) = Health::default();
    }

    /// Whether the node has not failed recently.
    pub fn available(&self, node: u8) -> bool {
        !self.recently_failed(node)
    }

    pub fn last_error(&self, node: u8) -> Option<String> {
        self.health(node).last_error.clone()
    }
}
