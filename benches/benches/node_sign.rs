//! 2-node signing over real node processes (mutual TLS, sealed envelopes, the test relay playing
//! coordinator) next to the in-process engine, in the same run.
//!
//! `cargo build --release -p shardsign-node && cargo bench -p shardsign-benches --bench node_sign`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shardsign_benches::{fresh_shares, median, ms, timed_sign};
use shardsign_eth::{Address, Eip1559Transaction, U256, UnsignedTransaction};
use shardsign_tests::cluster::{KekKind, NodeCluster};
use shardsign_tests::relay::{self, Payload};

const WARMUP: usize = 10;
const SAMPLES: usize = 60;

fn tx(nonce: u64) -> UnsignedTransaction {
    Eip1559Transaction {
        chain_id: 1,
        nonce,
        max_priority_fee_per_gas: U256::from(1_000_000_000u64),
        max_fee_per_gas: U256::from(30_000_000_000u64),
        gas_limit: 21_000,
        to: Some(Address([0x22; 20])),
        value: U256::from(10u64).pow(U256::from(16u64)),
        data: vec![],
        access_list: vec![],
    }
    .into()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    // cargo bench passes --bench; nothing else to parse.
    let cluster = NodeCluster::start(KekKind::KeyFile);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (keygen_time, network) = runtime.block_on(async {
        let mut clients = BTreeMap::new();
        for id in 1..=3 {
            clients.insert(id, cluster.client(id).await);
        }
        let started = Instant::now();
        relay::keygen(&clients, "bench", &[1], None)
            .await
            .expect("key generation");
        let keygen_time = started.elapsed();
        let mut times = Vec::new();
        for i in 0..WARMUP + SAMPLES {
            let tx = tx(i as u64);
            let started = Instant::now();
            relay::sign(
                &clients,
                [1, 2],
                "bench",
                &Payload::Transaction(tx.clone()),
                tx.signing_hash(),
                None,
                None,
            )
            .await
            .expect("signing");
            if i >= WARMUP {
                times.push(started.elapsed());
            }
        }
        (keygen_time, times)
    });
    let mut sorted = network.clone();
    sorted.sort();

    let shares = fresh_shares();
    let timings: Vec<_> = (0..SAMPLES)
        .map(|_| timed_sign(&shares[0], &shares[1], rand::random()))
        .collect();
    let one_thread = median(timings.iter().map(|t| t.total()).collect());
    let critical = median(timings.iter().map(|t| t.critical_path()).collect());
    let over_network = median(network);

    println!(
        "== 2-node signing over real processes ({SAMPLES} signatures after {WARMUP} warm-up, sequential) =="
    );
    println!(
        "over the network (relay + mTLS + sealing): median {:>8.3} ms, p95 {:>8.3} ms, max {:>8.3} ms",
        ms(over_network),
        ms(percentile(&sorted, 0.95)),
        ms(*sorted.last().unwrap())
    );
    println!(
        "in-process engine, one thread:             median {:>8.3} ms  (network / this = {:.2}x)",
        ms(one_thread),
        ms(over_network) / ms(one_thread)
    );
    println!(
        "in-process engine, critical path:          median {:>8.3} ms  (network / this = {:.2}x)",
        ms(critical),
        ms(over_network) / ms(critical)
    );
    println!(
        "key generation over the network (3 nodes): {:>8.1} ms",
        ms(keygen_time)
    );
}
