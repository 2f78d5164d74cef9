//! The end-to-end benchmark, one command: starts a cluster (three nodes and a coordinator from
//! the release binaries, TLS + mTLS + sealing + policy + audit on), runs the key ceremony, warms
//! up, then for each concurrency level signs EIP-1559 transactions through the public API with
//! `shardsign-client` and reports p50/p95/p99/max latency, throughput, errors and bytes relayed
//! per signature; in the same run it times the bare protocol in-process (both parties in one
//! thread, and the critical path) and a single-key k256 signature, with the ratios. Optionally
//! (`--memory-keys N`) it creates N more keys and reports the nodes' resident memory per key and
//! signing latency with N keys held. `--per-kind N` signs N of each payload kind one at a time
//! (EIP-1559 transaction, EIP-712 document, EIP-7702 authorization, set-code transaction) and
//! reports each kind's latency.
//!
//! ```sh
//! cargo build --release --bins
//! cargo run --release -p shardsign-benches --bin shardsign-bench -- --concurrency 1,16 --requests 300
//! cargo run --release -p shardsign-benches --bin shardsign-bench -- --concurrency 16 --duration 60s --json out.json
//! cargo run --release -p shardsign-benches --bin shardsign-bench -- --concurrency 1 --memory-keys 100
//! cargo run --release -p shardsign-benches --bin shardsign-bench -- --concurrency 1 --requests 50 --per-kind 100
//! cargo run --release -p shardsign-benches --bin shardsign-bench -- --concurrency 1,16 --requests 300 --key-caps --tokens
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use shardsign_benches::{fresh_shares, median, ms, timed_sign};
use shardsign_client::TransactionBuilder;
use shardsign_client::{Client, ClientConfig, Credential};
use shardsign_eth::{
    Address, Authorization, Eip1559Transaction, U256, UnsignedTransaction, parse_amount,
};
use shardsign_proto::v1::{CreateApiKeyRequest, TypedDataRule};
use shardsign_tests::cluster::{metric_value, scrape};
use shardsign_tests::full::Cluster;

#[derive(Parser)]
#[command(about = "shardsign end-to-end signing benchmark")]
struct Args {
    /// Concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    concurrency: Vec<usize>,
    /// Requests per level (ignored with --duration).
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Run each level for this long instead (e.g. 60s).
    #[arg(long)]
    duration: Option<String>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// After the levels, create this many more keys and measure node memory per key.
    #[arg(long, default_value_t = 0)]
    memory_keys: usize,
    /// Give the signing key a policy with a 24 h value cap and a rate (both far above what the
    /// run uses), so that the coordinator's and every node's ledger take part in each request.
    #[arg(long)]
    key_caps: bool,
    /// List USDC in both policies (per-call and 24 h caps) and sign USDC transfers instead of
    /// ether transfers, so that the token rules, the calldata decoding and the token ledgers
    /// (coordinator and nodes) take part in each request.
    #[arg(long)]
    tokens: bool,
    /// Give the signing key's policy approval thresholds (ether, and USDC with --tokens) far
    /// above what the run signs, with three approvers: every request is checked against them
    /// (by the coordinator and every node) and none is parked.
    #[arg(long)]
    approvals: bool,
    /// After the levels, sign this many of each payload kind one at a time (transaction, EIP-712
    /// document, EIP-7702 authorization, set-code transaction) and report each kind's latency.
    #[arg(long, default_value_t = 0)]
    per_kind: usize,
    /// Keep the coordinator's registry in PostgreSQL (a throw-away database on the server
    /// SHARDSIGN_TEST_POSTGRES names; `eval "$(bash scripts/postgres.sh start)"`) instead of
    /// SQLite. Two coordinators share it; the clients use the first only, unless
    /// --two-coordinators.
    #[arg(long)]
    postgres: bool,
    /// With --postgres: spread the clients over both coordinators (half start on each).
    #[arg(long, requires = "postgres")]
    two_coordinators: bool,
    /// Copy the coordinator's and nodes' logs (with per-stage debug timings) into this directory.
    #[arg(long)]
    keep_logs: Option<std::path::PathBuf>,
}

fn parse_duration(text: &str) -> Duration {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number.parse().expect("a duration like 60s or 2m");
    match unit {
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        other => panic!("unknown duration unit `{other}`"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// What each request signs, and with which API key.
struct Workload {
    api_key: String,
    tokens: bool,
}

impl Workload {
    fn transaction(&self, nonce: u64) -> UnsignedTransaction {
        if !self.tokens {
            return transaction(nonce);
        }
        // transfer(0x3535…, 1 USDC) on the listed token.
        let mut data = shardsign_eth::erc20::TRANSFER.to_vec();
        data.extend([0u8; 12]);
        data.extend([0x35; 20]);
        data.extend(U256::from(1_000_000u64).to_be_bytes::<32>());
        UnsignedTransaction::Eip1559(Eip1559Transaction {
            to: Some(Address::parse("usdc", USDC).expect("address")),
            value: U256::ZERO,
            data,
            gas_limit: 60_000,
            ..match transaction(nonce) {
                UnsignedTransaction::Eip1559(tx) => tx,
                _ => unreachable!("transaction() is EIP-1559"),
            }
        })
    }
}

fn usdc_rule() -> shardsign_proto::v1::TokenRule {
    shardsign_proto::v1::TokenRule {
        chain_id: 1,
        address: USDC.into(),
        decimals: 6,
        symbol: "USDC".into(),
        max_amount_per_tx: "1000usdc".into(),
        max_amount_per_24h: "1000000000usdc".into(),
        allowed_recipients: vec!["*".into()],
        allowed_spenders: Vec::new(),
        allow_unlimited_approval: false,
        require_approval_above: String::new(),
    }
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

/// Which coordinators the clients use.
static SPREAD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static NEXT_CLIENT: AtomicUsize = AtomicUsize::new(0);

async fn client_with(cluster: &Cluster, api_key: &str) -> Client {
    let first = format!("https://{}", cluster.coordinator.address);
    let endpoints = match &cluster.second {
        Some(second) if SPREAD.load(Ordering::Relaxed) => {
            let second = format!("https://{}", second.address);
            if NEXT_CLIENT
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(2)
            {
                format!("{first},{second}")
            } else {
                format!("{second},{first}")
            }
        }
        _ => first,
    };
    let config = ClientConfig::new(
        endpoints,
        Credential::api_key(api_key.to_string()).expect("API key"),
    )
    .with_ca_pem(cluster.nodes.ca.cert_pem())
    .with_tls_name("localhost");
    Client::connect(config).await.expect("connect")
}

#[derive(Clone, Copy)]
enum Budget {
    Requests(usize),
    Duration(Duration),
}

struct Level {
    concurrency: usize,
    latencies: Vec<Duration>,
    errors: usize,
    wall: Duration,
    relayed_bytes: f64,
}

fn relayed(cluster: &Cluster) -> f64 {
    cluster
        .second
        .iter()
        .chain(std::iter::once(&cluster.coordinator))
        .map(|coordinator| {
            let text = scrape(&coordinator.metrics_address());
            metric_value(&text, "shardsign_relayed_bytes{direction=\"from_nodes\"}")
                + metric_value(&text, "shardsign_relayed_bytes{direction=\"to_nodes\"}")
        })
        .sum()
}

async fn run_level(
    cluster: &Cluster,
    key_id: &str,
    workload: &Arc<Workload>,
    budget: Budget,
    concurrency: usize,
) -> Level {
    let next = Arc::new(AtomicUsize::new(0));
    let bytes_before = relayed(cluster);
    let mut clients = Vec::new();
    for _ in 0..concurrency {
        clients.push(client_with(cluster, &workload.api_key).await);
    }
    let started = Instant::now();
    let (requests, until) = match budget {
        Budget::Requests(n) => (n, None),
        Budget::Duration(d) => (usize::MAX, Some(started + d)),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for signer in clients {
        let next = next.clone();
        let key_id = key_id.to_string();
        let workload = workload.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests || until.is_some_and(|end| Instant::now() >= end) {
                    return (latencies, errors);
                }
                let begun = Instant::now();
                match signer
                    .sign_transaction(&key_id, &workload.transaction(i as u64))
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
    let wall = started.elapsed();
    latencies.sort();
    let relayed_bytes = (relayed(cluster) - bytes_before) / latencies.len().max(1) as f64;
    Level {
        concurrency,
        latencies,
        errors,
        wall,
        relayed_bytes,
    }
}

const USDC: &str = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";
const DELEGATE: &str = "0x63c0c19a282a1B52b07dD5a65b58948A07DAE32B";

/// An x402-style EIP-3009 payment document, unique per `nonce`.
fn x402_document(from: &str, nonce: u64) -> String {
    shardsign_tests::x402::Payment {
        domain_name: "USD Coin",
        chain_id: 1,
        token: USDC,
        from,
        to: "0x3535353535353535353535353535353535353535",
        value: 1_000_000,
        valid_before: 4_000_000_000,
        nonce: shardsign_tests::x402::nonce(nonce),
    }
    .document()
    .to_string()
}

/// Latencies of `count` sequential requests of each payload kind, with policies that allow them.
async fn per_kind_latencies(
    cluster: &Cluster,
    key_id: &str,
    count: usize,
) -> Vec<(&'static str, Vec<Duration>)> {
    let mut rules = shardsign_tests::full::permissive_policy(&[1]);
    rules.max_value_per_24h.clear();
    rules.requests_per_minute = 0;
    rules.allowed_typed_data = vec![TypedDataRule {
        chain_id: 1,
        verifying_contract: USDC.into(),
        name: "USD Coin".into(),
        version: String::new(),
        primary_types: vec!["TransferWithAuthorization".into()],
        conditions: Vec::new(),
    }];
    rules.allowed_delegates = vec![DELEGATE.into()];
    let set = cluster.set_key_policy(key_id, rules.clone()).await;
    assert_eq!(set.expect("key policy").nodes_updated, vec![1, 2, 3]);
    let mut agent_rules = rules;
    agent_rules.requests_per_minute = 1_000_000;
    agent_rules.max_value_per_24h = "unlimited".into();
    let api_key = cluster
        .create_api_key(CreateApiKeyRequest {
            label: "bench per kind".into(),
            scopes: vec!["read".into(), "sign".into()],
            key_ids: vec![key_id.into()],
            policy: Some(agent_rules),
            ..Default::default()
        })
        .await
        .api_key;
    let signer = client_with(cluster, &api_key).await;
    let address = signer.get_key(key_id).await.expect("key").address;
    let delegate = Address::parse("delegate", DELEGATE).expect("address");
    let tuple = signer
        .sign_authorization(
            key_id,
            Authorization {
                chain_id: 1,
                address: delegate,
                nonce: 0,
            },
        )
        .await
        .expect("authorization")
        .to_tuple()
        .expect("tuple");
    let mut results = Vec::new();
    for kind in [
        "eip1559 transaction",
        "EIP-712 document",
        "EIP-7702 authorization",
        "set-code transaction",
    ] {
        let mut latencies = Vec::with_capacity(count);
        for i in 0..count as u64 {
            let begun = Instant::now();
            let outcome = match kind {
                "eip1559 transaction" => signer
                    .sign_transaction(key_id, &transaction(i))
                    .await
                    .map(drop),
                "EIP-712 document" => signer
                    .sign_typed_data(key_id, &x402_document(&address, i))
                    .await
                    .map(drop),
                "EIP-7702 authorization" => signer
                    .sign_authorization(
                        key_id,
                        Authorization {
                            chain_id: 1,
                            address: delegate,
                            nonce: i,
                        },
                    )
                    .await
                    .map(drop),
                _ => {
                    let tx = TransactionBuilder::eip7702(1)
                        .nonce(i)
                        .to(delegate)
                        .gas_limit(100_000)
                        .fees_str("30gwei", "1gwei")
                        .and_then(|builder| builder.authorization(tuple).build())
                        .expect("set-code transaction");
                    signer.sign_transaction(key_id, &tx).await.map(drop)
                }
            };
            outcome.unwrap_or_else(|error| panic!("{kind} {i}: {error}"));
            latencies.push(begun.elapsed());
        }
        latencies.sort();
        results.push((kind, latencies));
    }
    results
}

/// Approval thresholds no request of the run reaches, and three approvers (2 of 3).
fn with_approvals(rules: &mut shardsign_proto::v1::Policy) {
    rules.require_approval_above = "1000eth".into();
    rules.approvers = Some(shardsign_proto::v1::Approvers {
        public_keys: (1..=3u8)
            .map(|i| {
                hex::encode(
                    ed25519_dalek::SigningKey::from_bytes(&[i; 32])
                        .verifying_key()
                        .to_bytes(),
                )
            })
            .collect(),
        quorum: 2,
        valid_secs: 0,
    });
    for token in &mut rules.tokens {
        token.require_approval_above = "1000000000usdc".into();
    }
}

/// The signing key's policy on chain 1: everything allowed, with `tokens`; 24 h caps and a rate
/// far above the run (`key_caps`), or none; approval thresholds none of it reaches (`approvals`).
fn key_policy(
    key_caps: bool,
    approvals: bool,
    tokens: Vec<shardsign_proto::v1::TokenRule>,
) -> shardsign_proto::v1::Policy {
    let mut rules = shardsign_tests::full::permissive_policy(&[1]);
    if key_caps {
        rules.max_value_per_24h = "1000000eth".into();
        rules.requests_per_minute = 1_000_000;
    } else {
        rules.max_value_per_24h.clear();
        rules.requests_per_minute = 0;
    }
    rules.tokens = tokens;
    if approvals {
        with_approvals(&mut rules);
    }
    rules
}

async fn ceremony(
    cluster: &Cluster,
    label: &str,
    key_caps: bool,
    approvals: bool,
) -> (Duration, String) {
    let started = Instant::now();
    let key = cluster.ceremony(label, &[1]).await;
    let took = started.elapsed();
    if key_caps || approvals {
        let rules = key_policy(key_caps, approvals, Vec::new());
        let set = cluster.set_key_policy(&key.key_id, rules).await;
        assert_eq!(set.expect("key policy").nodes_updated, vec![1, 2, 3]);
    } else {
        cluster.allow_everything(&key).await;
    }
    (took, key.key_id)
}

/// The workload of the levels: the test signer's key and ether transfers, or (`--tokens`) USDC
/// listed in both policies and USDC transfers.
async fn workload(
    cluster: &Cluster,
    key_id: &str,
    key_caps: bool,
    tokens: bool,
    approvals: bool,
) -> Workload {
    if !tokens {
        return Workload {
            api_key: cluster.signer_token.clone(),
            tokens,
        };
    }
    let rules = key_policy(key_caps, approvals, vec![usdc_rule()]);
    let set = cluster.set_key_policy(key_id, rules).await;
    assert_eq!(set.expect("key policy").nodes_updated, vec![1, 2, 3]);
    let mut agent_rules = shardsign_tests::full::permissive_policy(&[1]);
    agent_rules.tokens = vec![usdc_rule()];
    let api_key = cluster
        .create_api_key(CreateApiKeyRequest {
            label: "bench tokens".into(),
            scopes: vec!["read".into(), "sign".into()],
            key_ids: vec![key_id.into()],
            policy: Some(agent_rules),
            ..Default::default()
        })
        .await
        .api_key;
    Workload { api_key, tokens }
}

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

fn stage_median_ms(log: &str, stage: &str) -> Option<f64> {
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
    micros.sort_unstable();
    micros.get(micros.len() / 2).map(|m| *m as f64 / 1000.0)
}

fn level_json(level: &Level) -> serde_json::Value {
    let ok = level.latencies.len();
    json!({
        "concurrency": level.concurrency, "ok": ok, "errors": level.errors,
        "p50_ms": ms(percentile(&level.latencies, 0.50)), "p95_ms": ms(percentile(&level.latencies, 0.95)),
        "p99_ms": ms(percentile(&level.latencies, 0.99)),
        "max_ms": ms(level.latencies.last().copied().unwrap_or_default()),
        "throughput_per_s": ok as f64 / level.wall.as_secs_f64(),
        "relayed_bytes_per_signature": level.relayed_bytes,
    })
}

fn main() {
    let args = Args::parse();
    let budget = match &args.duration {
        Some(d) => Budget::Duration(parse_duration(d)),
        None => Budget::Requests(args.requests),
    };
    let cluster = if args.postgres {
        Cluster::start_shared()
    } else {
        Cluster::start()
    };
    SPREAD.store(args.two_coordinators, Ordering::Relaxed);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (ceremonies, results, memory, per_kind) = runtime.block_on(async {
        let mut ceremonies = Vec::new();
        let (took, key_id) = ceremony(&cluster, "bench", args.key_caps, args.approvals).await;
        ceremonies.push(took);
        let work = Arc::new(
            workload(
                &cluster,
                &key_id,
                args.key_caps,
                args.tokens,
                args.approvals,
            )
            .await,
        );
        run_level(&cluster, &key_id, &work, Budget::Requests(20), 4).await; // warm-up
        let mut results = Vec::new();
        for &concurrency in &args.concurrency {
            results.push(run_level(&cluster, &key_id, &work, budget, concurrency).await);
        }
        let mut memory = None;
        if args.memory_keys > 0 {
            let pids: Vec<u32> = cluster.nodes.nodes.iter().filter_map(|n| n.pid()).collect();
            let before: Vec<f64> = pids.iter().map(|p| rss_kib(*p)).collect();
            for i in 0..args.memory_keys {
                let (took, _) = ceremony(&cluster, &format!("memory-{i}"), false, false).await;
                ceremonies.push(took);
            }
            let after: Vec<f64> = pids.iter().map(|p| rss_kib(*p)).collect();
            let slope: Vec<f64> = before
                .iter()
                .zip(&after)
                .map(|(b, a)| (a - b) / args.memory_keys as f64)
                .collect();
            let with_keys =
                run_level(&cluster, &key_id, &work, Budget::Requests(args.requests), 1).await;
            memory = Some((before, after, slope, with_keys));
        }
        let per_kind = if args.per_kind > 0 {
            per_kind_latencies(&cluster, &key_id, args.per_kind).await
        } else {
            Vec::new()
        };
        (ceremonies, results, memory, per_kind)
    });

    let shares = fresh_shares();
    let timings: Vec<_> = (0..60)
        .map(|_| timed_sign(&shares[0], &shares[1], rand::random()))
        .collect();
    let one_thread = ms(median(timings.iter().map(|t| t.total()).collect()));
    let critical = ms(median(timings.iter().map(|t| t.critical_path()).collect()));
    let single_key = {
        let key =
            k256::ecdsa::SigningKey::from_bytes(&rand::random::<[u8; 32]>().into()).expect("key");
        let samples: Vec<Duration> = (0..200)
            .map(|_| {
                let hash: [u8; 32] = rand::random();
                let started = Instant::now();
                std::hint::black_box(shardsign_eth::sign_prehash(&key, &hash));
                started.elapsed()
            })
            .collect();
        ms(median(samples))
    };
    let ceremony_ms = ms(median(ceremonies.clone()));
    // Both coordinators' per-stage timings, when there are two.
    let log = cluster.coordinator.log_text()
        + &cluster
            .second
            .as_ref()
            .map(|c| c.log_text())
            .unwrap_or_default();
    if let Some(dir) = &args.keep_logs {
        std::fs::create_dir_all(dir).expect("create the log directory");
        std::fs::write(dir.join("coordinator.log"), &log).expect("write coordinator.log");
        for node in &cluster.nodes.nodes {
            std::fs::copy(&node.log, dir.join(format!("node-{}.log", node.id)))
                .expect("copy a node log");
        }
    }
    let admission = stage_median_ms(&log, "admission").unwrap_or(0.0);
    let audit = stage_median_ms(&log, "audit").unwrap_or(0.0);

    println!(
        "== SignTransaction through the public API (3 nodes + coordinator on loopback; TLS, mTLS, sealing, policy, audit) =="
    );
    println!(
        "concurrency  ok     errors  p50 ms   p95 ms   p99 ms   max ms   throughput/s  relayed B/sig"
    );
    for level in &results {
        let v = level_json(level);
        println!(
            "{:>11}  {:>5}  {:>6}  {:>7.2}  {:>7.2}  {:>7.2}  {:>7.2}  {:>12.1}  {:>13.0}",
            level.concurrency,
            v["ok"],
            v["errors"],
            v["p50_ms"].as_f64().unwrap_or(0.0),
            v["p95_ms"].as_f64().unwrap_or(0.0),
            v["p99_ms"].as_f64().unwrap_or(0.0),
            v["max_ms"].as_f64().unwrap_or(0.0),
            v["throughput_per_s"].as_f64().unwrap_or(0.0),
            level.relayed_bytes
        );
    }
    println!(
        "in-process, same run: 2-party sign one thread {one_thread:.2} ms, critical path {critical:.2} ms, single-key k256 {single_key:.3} ms"
    );
    if let Some(first) = results.first() {
        let p50 = ms(percentile(&first.latencies, 0.50));
        println!(
            "p50 at concurrency {}: {:.2}x critical path, {:.2}x one thread, {:.0}x single key",
            first.concurrency,
            p50 / critical,
            p50 / one_thread,
            p50 / single_key
        );
    }
    println!(
        "access path in the coordinator (median, registry on {}): admission {admission:.3} ms + durable write (audit row + idempotency record) {audit:.3} ms",
        if args.postgres {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    println!(
        "key ceremony through the API: median {ceremony_ms:.0} ms over {} ceremonies",
        ceremonies.len()
    );
    if !per_kind.is_empty() {
        println!(
            "by payload kind, one request at a time ({} each):",
            args.per_kind
        );
    }
    let per_kind_json: Vec<serde_json::Value> = per_kind
        .iter()
        .map(|(kind, latencies)| {
            let (p50, p95) = (
                ms(percentile(latencies, 0.50)),
                ms(percentile(latencies, 0.95)),
            );
            println!("  {kind:<24} p50 {p50:>6.2} ms  p95 {p95:>6.2} ms");
            json!({"kind": kind, "n": latencies.len(), "p50_ms": p50, "p95_ms": p95})
        })
        .collect();
    let memory_json = memory.as_ref().map(|(before, after, slope, with_keys)| {
        println!(
            "node RSS KiB before/after {} more keys: {:?} -> {:?}; per key: {:?} KiB",
            args.memory_keys,
            before,
            after,
            slope
                .iter()
                .map(|s| (s * 10.0).round() / 10.0)
                .collect::<Vec<_>>()
        );
        println!(
            "signing p50 with {} keys held: {:.2} ms (concurrency 1)",
            args.memory_keys + 1,
            ms(percentile(&with_keys.latencies, 0.5))
        );
        json!({"keys_added": args.memory_keys, "rss_kib_before": before, "rss_kib_after": after,
               "kib_per_key": slope, "p50_ms_with_keys": ms(percentile(&with_keys.latencies, 0.5))})
    });
    if let Some(path) = &args.json {
        let report = json!({
            "levels": results.iter().map(level_json).collect::<Vec<_>>(),
            "engine": {"one_thread_ms": one_thread, "critical_path_ms": critical, "single_key_ms": single_key},
            "access_path_ms": {"admission": admission, "audit": audit},
            "ceremony_median_ms": ceremony_ms,
            "memory": memory_json,
            "per_kind": per_kind_json,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report).expect("json"))
            .expect("write json");
        println!("JSON written to {}", path.display());
    }
}
