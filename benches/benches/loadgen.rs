//! Load generator: starts a local cluster (three nodes and a coordinator, release binaries),
//! runs the ceremony, then `SignTransaction` at each concurrency level and prints p50/p95/p99,
//! throughput and errors, beside the in-process engine time from the same run.
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p shardsign-benches --bench loadgen
//! LOADGEN_REQUESTS=500 LOADGEN_CONCURRENCY=1,4,16 cargo bench -p shardsign-benches --bench loadgen
//! # sustained: each level runs for a duration instead of a request count
//! LOADGEN_DURATION_SECS=60 LOADGEN_CONCURRENCY=16 cargo bench -p shardsign-benches --bench loadgen
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use shardsign_benches::{fresh_shares, median, ms, timed_sign};
use shardsign_client::{Client, ClientConfig, Credential};
use shardsign_eth::{Address, Eip1559Transaction, UnsignedTransaction, parse_amount};
use shardsign_proto::v1::CreateKeyRequest;
use shardsign_proto::v1::create_key_event::Event;
use shardsign_tests::full::Cluster;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn transaction(nonce: u64) -> UnsignedTransaction {
    UnsignedTransaction::Eip1559(Eip1559Transaction {
        chain_id: 1,
        nonce,
        max_priority_fee_per_gas: parse_amount("tip", "1gwei").expect("amount"),
        max_fee_per_gas: parse_amount("fee", "30gwei").expect("amount"),
        gas_limit: 21_000,
        to: Some(
            Address::parse("to", "0x3535353535353535353535353535353535353535").expect("address"),
        ),
        value: parse_amount("value", "0.01eth").expect("amount"),
        data: vec![],
        access_list: vec![],
    })
}

/// A client of the public API, as an agent would use it (the shardsign-client crate).
async fn client(cluster: &Cluster) -> Client {
    let config = ClientConfig::new(
        format!("https://{}", cluster.coordinator.address),
        Credential::api_key(cluster.signer_token.clone()).expect("API key"),
    )
    .with_ca_pem(cluster.nodes.ca.cert_pem())
    .with_tls_name("localhost");
    Client::connect(config).await.expect("connect")
}

/// Medians of the coordinator's per-stage debug timings (`stage="..." micros=N`), in ms.
fn stage_medians(log: &str, stage: &str) -> Option<f64> {
    let tag = format!("stage=\"{stage}\"");
    let mut micros: Vec<u64> = log
        .lines()
        .filter(|line| line.contains(&tag))
        .filter_map(|line| {
            line.split("micros=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    if micros.is_empty() {
        return None;
    }
    micros.sort_unstable();
    Some(micros[micros.len() / 2] as f64 / 1000.0)
}

struct Level {
    concurrency: usize,
    latencies: Vec<Duration>,
    errors: usize,
    wall: Duration,
}

/// How much load a level applies: a number of requests, or as many as fit in a duration.
#[derive(Clone, Copy)]
enum Budget {
    Requests(usize),
    Duration(Duration),
}

async fn run_level(cluster: &Cluster, key_id: &str, budget: Budget, concurrency: usize) -> Level {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let (requests, until) = match budget {
        Budget::Requests(n) => (n, None),
        Budget::Duration(d) => (usize::MAX, Some(started + d)),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let signer = client(cluster).await;
        let next = next.clone();
        let key_id = key_id.to_string();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= requests || until.is_some_and(|end| Instant::now() >= end) {
                    return (latencies, errors);
                }
                let begun = Instant::now();
                match signer
                    .sign_transaction(&key_id, &transaction(i as u64))
                    .await
                {
                    Ok(_) => latencies.push(begun.elapsed()),
                    Err(error) => {
                        errors += 1;
                        eprintln!("request {i}: {error}");
                    }
                }
            }
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        let (mut l, e) = joined.expect("worker");
        latencies.append(&mut l);
        errors += e;
    }
    latencies.sort();
    Level {
        concurrency,
        latencies,
        errors,
        wall: started.elapsed(),
    }
}

fn main() {
    let requests = env_number("LOADGEN_REQUESTS", 200);
    let budget = match env_number("LOADGEN_DURATION_SECS", 0) {
        0 => Budget::Requests(requests),
        seconds => Budget::Duration(Duration::from_secs(seconds as u64)),
    };
    let levels: Vec<usize> = std::env::var("LOADGEN_CONCURRENCY")
        .unwrap_or_else(|_| "1,16".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let cluster = Cluster::start();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (ceremony, results) = runtime.block_on(async {
        let started = Instant::now();
        let request = CreateKeyRequest {
            label: "loadgen".into(),
            allowed_chain_ids: vec![1],
            key_id: String::new(),
        };
        let mut stream = cluster
            .admin()
            .create_key(request)
            .await
            .expect("create_key")
            .into_inner();
        let mut key = None;
        while let Some(event) = stream.message().await.expect("events") {
            if let Some(Event::Done(done)) = event.event {
                key = Some(done);
            }
        }
        let ceremony = started.elapsed();
        let key = key.expect("ceremony succeeded");
        cluster.allow_everything(&key).await;
        // Warm up channels and caches.
        run_level(&cluster, &key.key_id, Budget::Requests(20), 4).await;
        let mut results = Vec::new();
        for &concurrency in &levels {
            results.push(run_level(&cluster, &key.key_id, budget, concurrency).await);
        }
        (ceremony, results)
    });

    let shares = fresh_shares();
    let timings: Vec<_> = (0..60)
        .map(|_| timed_sign(&shares[0], &shares[1], rand::random()))
        .collect();
    let one_thread = median(timings.iter().map(|t| t.total()).collect());
    let critical = median(timings.iter().map(|t| t.critical_path()).collect());

    let load = match budget {
        Budget::Requests(n) => format!("{n} requests per level"),
        Budget::Duration(d) => format!("{} s per level", d.as_secs()),
    };
    println!(
        "== SignTransaction through the coordinator ({load}; 3 nodes + coordinator on loopback, TLS + mTLS + sealing) =="
    );
    println!("concurrency  ok    errors  p50 ms   p95 ms   p99 ms   max ms   throughput/s");
    for level in &results {
        let ok = level.latencies.len();
        println!(
            "{:>11}  {:>4}  {:>6}  {:>7.2}  {:>7.2}  {:>7.2}  {:>7.2}  {:>12.1}",
            level.concurrency,
            ok,
            level.errors,
            ms(percentile(&level.latencies, 0.50)),
            ms(percentile(&level.latencies, 0.95)),
            ms(percentile(&level.latencies, 0.99)),
            ms(level.latencies.last().copied().unwrap_or_default()),
            ok as f64 / level.wall.as_secs_f64(),
        );
    }
    println!(
        "in-process engine (same run): one thread {:.2} ms, critical path {:.2} ms",
        ms(one_thread),
        ms(critical)
    );
    if let Some(first) = results.first() {
        let p50 = ms(percentile(&first.latencies, 0.50));
        println!(
            "p50 at concurrency {} / critical path = {:.2}x; / one thread = {:.2}x",
            first.concurrency,
            p50 / ms(critical),
            p50 / ms(one_thread)
        );
    }
    println!(
        "key-generation ceremony through the API: {:.0} ms",
        ms(ceremony)
    );
    let log = cluster.coordinator.log_text();
    if let (Some(admission), Some(audit)) = (
        stage_medians(&log, "admission"),
        stage_medians(&log, "audit"),
    ) {
        println!(
            "access path in the coordinator (median per request, all levels): admission (rate, rules, key policy, 24 h reservation) {admission:.3} ms + audit append {audit:.3} ms = {:.3} ms",
            admission + audit
        );
        if let Some(first) = results.first() {
            let p50 = ms(percentile(&first.latencies, 0.50));
            println!(
                "p50 at concurrency {}: {p50:.2} ms with policy + audit; {:.2} ms without (p50 minus the median access path)",
                first.concurrency,
                p50 - admission - audit
            );
        }
    }
}
