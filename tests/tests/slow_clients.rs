//! Slow and abusive clients (issue #17): attackers on 127.0.0.2 and up keep 2,000 connections
//! that never finish the TLS handshake (each reopened as soon as the server drops it), and 200
//! more from 127.0.1.x finish TLS and HTTP/2, open a call and never send its body. An honest
//! client on 127.0.0.1 still connects and signs 100 requests with zero errors. One source over
//! its connection cap has the excess closed at once (counted in the metrics).
//!
//! Pass/fail is on behaviour only. The figures (the honest client's p99 idle and under attack,
//! the coordinator's RSS before, during and after) are printed: run with `--nocapture`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shardsign_tests::cluster::{metric_value, scrape};
use shardsign_tests::full::{Cluster, one_wei_transfer};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

const STALLED_HANDSHAKES: usize = 2_000;
const HANDSHAKE_SOURCES: u8 = 20;
const STALLED_STREAMS: u8 = 200;
const HONEST_REQUESTS: u64 = 100;

async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(to).await
}

/// Keeps `count` connections from `source` open without a ClientHello, reopening each one the
/// server drops, until `stop`. Returns how many the server dropped.
async fn hold_stalled_handshakes(
    source: Ipv4Addr,
    to: SocketAddr,
    count: usize,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicU64>,
) -> u64 {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        let (stop, opened) = (stop.clone(), opened.clone());
        tasks.spawn(async move {
            let mut dropped = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut stream) = connect_from(source, to).await else {
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let mut byte = [0u8; 1];
                // Ends when the server closes it (handshake timeout) or the attack stops.
                tokio::select! {
                    _ = stream.read(&mut byte) => dropped += 1,
                    _ = wait_for(&stop) => {}
                }
            }
            dropped
        });
    }
    let mut dropped = 0;
    while let Some(result) = tasks.join_next().await {
        dropped += result.expect("attacker task");
    }
    dropped
}

async fn wait_for(flag: &AtomicBool) {
    while !flag.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tls_config(ca_pem: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM"))
        .expect("CA");
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A connection from `source` that completes TLS and HTTP/2, starts a `SignTransaction` call and
/// never sends its body. Holding the returned values holds the stream open.
async fn stalled_stream(
    source: Ipv4Addr,
    to: SocketAddr,
    tls: Arc<ClientConfig>,
    token: &str,
) -> impl Sized {
    let tcp = connect_from(source, to).await.expect("connect");
    let tls = TlsConnector::from(tls)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let (mut client, connection) = h2::client::handshake(tls).await.expect("HTTP/2 handshake");
    let driver = tokio::spawn(connection);
    let request = http::Request::post("https://localhost/shardsign.v1.Signer/SignTransaction")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    let (response, body) = client.send_request(request, false).expect("open a stream");
    (client, response, body, driver)
}

/// Signs `nonces` one after another; returns each latency and the errors.
async fn honest_run(
    cluster: &Cluster,
    key_id: &str,
    nonces: std::ops::Range<u64>,
) -> (Vec<Duration>, Vec<String>) {
    let mut signer = cluster.signer();
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for nonce in nonces {
        let started = Instant::now();
        match signer
            .sign_transaction(one_wei_transfer(key_id, nonce))
            .await
        {
            Ok(_) => latencies.push(started.elapsed()),
            Err(status) => errors.push(format!("{status:?}")),
        }
    }
    (latencies, errors)
}

fn p99(latencies: &mut [Duration]) -> Duration {
    latencies.sort();
    latencies[(latencies.len() * 99).div_ceil(100).saturating_sub(1)]
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_abusive_clients_do_not_keep_an_honest_client_out() {
    let cluster = Cluster::start();
    let key = cluster.ceremony("slow-clients", &[1]).await;
    cluster.allow_everything(&key).await;
    let address: SocketAddr = cluster.coordinator.address.parse().expect("address");
    let pid = cluster.coordinator.pid().expect("running");

    let (mut idle, errors) = honest_run(&cluster, &key.key_id, 0..HONEST_REQUESTS).await;
    assert!(errors.is_empty(), "{errors:?}");
    let rss_before = rss_kib(pid);

    // The attack: stalled handshakes, reopened as the server drops them...
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let per_source = STALLED_HANDSHAKES / usize::from(HANDSHAKE_SOURCES);
    let attackers: Vec<_> = (0..HANDSHAKE_SOURCES)
        .map(|i| {
            tokio::spawn(hold_stalled_handshakes(
                Ipv4Addr::new(127, 0, 0, 2 + i),
                address,
                per_source,
                stop.clone(),
                opened.clone(),
            ))
        })
        .collect();
    // ...and stalled calls.
    let tls = tls_config(cluster.nodes.ca.cert_pem());
    let mut streams = Vec::new();
    for i in 1..=STALLED_STREAMS {
        streams.push(
            stalled_stream(
                Ipv4Addr::new(127, 0, 1, i),
                address,
                tls.clone(),
                &cluster.signer_token,
            )
            .await,
        );
    }
    // Every stalled handshake is open before the honest client starts.
    let deadline = Instant::now() + Duration::from_secs(60);
    while opened.load(Ordering::Relaxed) < STALLED_HANDSHAKES as u64 {
        assert!(
            Instant::now() < deadline,
            "the attackers could not open their connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss_during = rss_kib(pid);
    let (mut attacked, errors) =
        honest_run(&cluster, &key.key_id, HONEST_REQUESTS..2 * HONEST_REQUESTS).await;
    assert!(
        errors.is_empty(),
        "the honest client saw errors under attack: {errors:?}"
    );
    assert_eq!(attacked.len() as u64, HONEST_REQUESTS);

    // One source at its cap (connections that finished TLS, so they stay open): every further
    // connection from it is closed before its handshake, and counted.
    let cap = shardsign_serve::DEFAULT_MAX_CONNECTIONS_PER_SOURCE as usize;
    let crowd_source = Ipv4Addr::new(127, 0, 2, 1);
    let connector = TlsConnector::from(tls.clone());
    let mut crowd = Vec::new();
    for _ in 0..cap {
        let tcp = connect_from(crowd_source, address).await.expect("connect");
        let name = ServerName::try_from("localhost").unwrap();
        crowd.push(
            connector
                .connect(name, tcp)
                .await
                .expect("TLS within the cap"),
        );
    }
    for _ in 0..20 {
        let tcp = connect_from(crowd_source, address).await.expect("connect");
        let name = ServerName::try_from("localhost").unwrap();
        assert!(
            connector.connect(name, tcp).await.is_err(),
            "a connection over the cap got a TLS handshake"
        );
    }
    let metrics = cluster.coordinator.metrics_address();
    let refused = metric_value(
        &scrape(&metrics),
        "shardsign_connections_refused_total{reason=\"per_source_cap\"}",
    );
    assert!(refused >= 20.0, "refused {refused}");

    stop.store(true, Ordering::Relaxed);
    let mut dropped_by_server = 0;
    for attacker in attackers {
        dropped_by_server += attacker.await.expect("attacker");
    }
    drop((streams, crowd));
    let (mut after, errors) = honest_run(
        &cluster,
        &key.key_id,
        2 * HONEST_REQUESTS..3 * HONEST_REQUESTS,
    )
    .await;
    assert!(errors.is_empty(), "{errors:?}");
    let rss_after = rss_kib(pid);
    println!(
        "slow clients: honest p99 idle {:.1} ms, under attack {:.1} ms, after {:.1} ms; \
         coordinator RSS before {} MiB, during {} MiB, after {} MiB; \
         {} stalled handshakes opened, {} dropped by the server's handshake timeout, \
         {} stalled streams, {} connections refused over the per-source cap",
        p99(&mut idle).as_secs_f64() * 1e3,
        p99(&mut attacked).as_secs_f64() * 1e3,
        p99(&mut after).as_secs_f64() * 1e3,
        rss_before / 1024,
        rss_during / 1024,
        rss_after / 1024,
        opened.load(Ordering::Relaxed),
        dropped_by_server,
        STALLED_STREAMS,
        refused,
    );
}
