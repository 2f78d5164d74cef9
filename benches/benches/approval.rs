//! What human approval adds to the signing path, per node and per coordinator: deciding whether
//! a request crosses an approval threshold (every request under a policy with one), and
//! verifying a quorum's APPROVAL statement (only a parked request's retry, on each node).
//! Besides, for scale: the whole rule check of the same transfer.
//!
//! `cargo bench -p shardsign-benches --bench approval`

use std::hint::black_box;

use criterion::Criterion;
use ed25519_dalek::SigningKey;
use prost::Message as _;
use shardsign_eth::erc20::TRANSFER;
use shardsign_eth::{Address, Eip1559Transaction, Limits, U256, UnsignedTransaction};
use shardsign_policy::approval::{self, ApprovalRequest};
use shardsign_policy::{Rules, RulesFor};
use shardsign_proto::v1 as api;
use shardsign_request::Payload;

const USDC: &str = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";

fn transfer(units: u64) -> Payload {
    let mut data = TRANSFER.to_vec();
    data.extend_from_slice(&[0u8; 12]);
    data.extend_from_slice(&[0xa1; 20]);
    data.extend_from_slice(&U256::from(units).to_be_bytes::<32>());
    let tx = UnsignedTransaction::Eip1559(Eip1559Transaction {
        chain_id: 1,
        gas_limit: 80_000,
        max_fee_per_gas: U256::from(30_000_000_000u64),
        to: Some(Address::parse("to", USDC).unwrap()),
        data,
        ..Default::default()
    });
    Payload::transaction(tx, &Limits::DEFAULT).unwrap()
}

fn benches(c: &mut Criterion) {
    let keys: Vec<SigningKey> = (1..=3u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]))
        .collect();
    let mut policy = shardsign_tests::full::permissive_policy(&[1]);
    policy.require_approval_above = "1000eth".into();
    policy.approvers = Some(api::Approvers {
        public_keys: keys
            .iter()
            .map(|k| hex::encode(k.verifying_key().to_bytes()))
            .collect(),
        quorum: 2,
        valid_secs: 0,
    });
    policy.tokens = vec![api::TokenRule {
        chain_id: 1,
        address: USDC.into(),
        decimals: 6,
        symbol: "USDC".into(),
        max_amount_per_tx: "unlimited".into(),
        allowed_recipients: vec!["*".into()],
        require_approval_above: "1000usdc".into(),
        ..Default::default()
    }];
    let rules = Rules::from_proto(&policy, RulesFor::SigningKey).unwrap();
    let under = transfer(5_000_000);
    let over = transfer(5_000_000_000);
    assert!(rules.approval_needed(&under).is_none() && rules.approval_needed(&over).is_some());
    let request = ApprovalRequest::new("bench", &over, "bench-request");
    let statement = request.statement(
        "bench",
        api::approval::Decision::Approve,
        "",
        1_700_000_000,
        1_700_086_400,
    );
    let mut signed = api::SignedStatement {
        statement: statement.encode_to_vec(),
        signatures: Vec::new(),
    };
    for key in &keys[..2] {
        approval::add_signature(key, &mut signed).unwrap();
    }
    let signed = signed.encode_to_vec();
    let approvers = rules.approvers.as_ref().unwrap();
    approvers
        .verify("bench", &signed, &request.hash(), 1_700_000_100)
        .unwrap();

    let mut group = c.benchmark_group("approval");
    group.bench_function("rules check (USDC transfer)", |b| {
        b.iter(|| rules.check(black_box(&under)))
    });
    group.bench_function("approval_needed, under the threshold", |b| {
        b.iter(|| rules.approval_needed(black_box(&under)))
    });
    group.bench_function("approval_needed, over the threshold", |b| {
        b.iter(|| rules.approval_needed(black_box(&over)))
    });
    group.bench_function("request hash", |b| {
        b.iter(|| ApprovalRequest::new("bench", black_box(&over), "bench-request").hash())
    });
    group.bench_function("verify a 2-of-3 approval", |b| {
        b.iter(|| approvers.verify("bench", black_box(&signed), &request.hash(), 1_700_000_100))
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
}
