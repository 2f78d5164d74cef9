//! The Rust client (the CLI's too) with several coordinator endpoints: calls start on the first
//! that answers and, when its connection dies, move to the next with the same request id — so a
//! retry of a request signed before the failure returns the first reply. The first endpoint here
//! is a TCP proxy in front of the coordinator that the test kills mid-run (its listener and every
//! connection through it), the way a coordinator's host dies; the HA issue's test does the same
//! with two coordinators on PostgreSQL.

use std::sync::{Arc, Mutex};

use shardsign_client::{Client, ClientConfig, Credential, TransactionBuilder};
use shardsign_tests::full::Cluster;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A TCP forwarder to `target` that can be killed with everything it carries.
struct Proxy {
    address: String,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    connections: Arc<Mutex<usize>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let connections: Arc<Mutex<usize>> = Arc::default();
        let accepting = {
            let (tasks, connections) = (tasks.clone(), connections.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    *connections.lock().unwrap() += 1;
                    let target = target.clone();
                    let forwarding = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    tasks.lock().unwrap().push(forwarding.abort_handle());
                }
            })
        };
        tasks.lock().unwrap().push(accepting.abort_handle());
        Proxy {
            address,
            tasks,
            connections,
        }
    }

    fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }

    /// Stops listening and drops every forwarded connection.
    fn kill(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_fails_over_to_the_next_endpoint_with_the_same_request_id() {
    let cluster = Cluster::start();
    let key = cluster.ceremony("failover", &[1]).await;
    cluster.allow_everything(&key).await;
    let proxy = Proxy::start(cluster.coordinator.address.clone()).await;
    let endpoints = format!(
        "https://{},https://{}",
        proxy.address, cluster.coordinator.address
    );
    let config = ClientConfig::new(
        endpoints,
        Credential::api_key(cluster.signer_token.clone()).unwrap(),
    )
    .with_ca_pem(cluster.nodes.ca.cert_pem());
    assert_eq!(config.endpoints().unwrap().len(), 2);
    let client = Client::connect(config).await.unwrap();
    let tx = |nonce: u64| {
        TransactionBuilder::eip1559(1)
            .nonce(nonce)
            .to_str("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
            .unwrap()
            .value_str("1wei")
            .unwrap()
            .fees_str("30gwei", "1gwei")
            .unwrap()
            .build()
            .unwrap()
    };

    let first = client
        .sign_transaction_with_id(&key.key_id, &tx(0), "failover-1")
        .await
        .expect("signed through the first endpoint");
    assert_eq!(proxy.connections(), 1, "the first endpoint carried it");

    // The first endpoint dies with its connection: the next call moves to the second.
    proxy.kill();
    let second = client
        .sign_transaction_with_id(&key.key_id, &tx(1), "failover-2")
        .await
        .expect("signed through the second endpoint after the first died");
    assert_ne!(second.raw_transaction, first.raw_transaction);
    // The same request id on the other endpoint returns the first reply: never signed twice.
    let again = client
        .sign_transaction_with_id(&key.key_id, &tx(0), "failover-1")
        .await
        .unwrap();
    assert_eq!(again.raw_transaction, first.raw_transaction);
    assert_eq!(
        proxy.connections(),
        1,
        "nothing went back to the dead endpoint"
    );

    // Every endpoint down: connecting says which and why.
    let config = ClientConfig::new(
        format!("https://{},https://{}", proxy.address, proxy.address),
        Credential::api_key(cluster.signer_token.clone()).unwrap(),
    )
    .with_ca_pem(cluster.nodes.ca.cert_pem());
    let refused = Client::connect(config)
        .await
        .err()
        .expect("nothing answers");
    assert!(
        refused.to_string().contains("cannot connect to"),
        "{refused}"
    );
}
