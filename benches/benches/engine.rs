//! Benches of the threshold engine against the single-key floor, all in one run:
//! criterion groups for 2-party signing (one thread), 2-of-3 key generation, complete and fast
//! share refresh and k256's
//! `sign_prehash_recoverable`; then a summary of medians, the per-round split and critical path,
//! bytes on the wire and share size, with ratios.
//!
//! `cargo bench -p shardsign-benches --bench engine`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use shardsign_benches::{dkg_bytes, fresh_shares, median, ms, timed_sign};
use shardsign_tss::local::{run_dkg, run_refresh, run_refresh_kind, run_sign};
use shardsign_tss::{RefreshKind, SessionId};

const SUMMARY_SIGNATURES: usize = 60;
const SUMMARY_DKGS: usize = 3;

fn single_key() -> k256::ecdsa::SigningKey {
    k256::ecdsa::SigningKey::from_slice(&[0x42; 32]).expect("valid key")
}

fn criterion_benches(c: &mut Criterion, shares: &[std::sync::Arc<shardsign_tss::KeyShare>]) {
    let key = single_key();
    c.bench_function("k256 sign_prehash_recoverable (single key)", |b| {
        b.iter(|| key.sign_prehash_recoverable(black_box(&[7u8; 32])))
    });
    c.bench_function("tss 2-party sign, one thread", |b| {
        b.iter(|| {
            run_sign(
                [shares[0].clone(), shares[1].clone()],
                SessionId(rand::random()),
                [7; 32],
            )
            .expect("sign")
        })
    });
    let mut group = c.benchmark_group("tss 2-of-3 dkg");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(40));
    group.bench_function("all three parties, one thread", |b| {
        b.iter(|| run_dkg(SessionId(rand::random())).expect("dkg"))
    });
    group.finish();
    let mut group = c.benchmark_group("tss 2-of-3 complete refresh");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(40));
    let outputs = run_dkg(SessionId(rand::random())).expect("dkg");
    let package = outputs[0].package.clone();
    let three: Vec<std::sync::Arc<shardsign_tss::KeyShare>> = outputs
        .into_iter()
        .map(|o| std::sync::Arc::new(o.share))
        .collect();
    group.bench_function("all three parties, one thread", |b| {
        b.iter(|| {
            run_refresh(
                [three[0].clone(), three[1].clone(), three[2].clone()],
                &package,
                SessionId(rand::random()),
            )
            .expect("refresh")
        })
    });
    group.finish();
    let mut group = c.benchmark_group("tss 2-of-3 fast refresh");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("all three parties, one thread", |b| {
        b.iter(|| {
            run_refresh_kind(
                RefreshKind::Fast,
                [three[0].clone(), three[1].clone(), three[2].clone()],
                &package,
                SessionId(rand::random()),
                |_, message| Some(message),
            )
            .expect("fast refresh")
        })
    });
    group.finish();
}

fn summary(shares: &[std::sync::Arc<shardsign_tss::KeyShare>]) {
    let key = single_key();
    let single: Vec<Duration> = (0..200)
        .map(|_| {
            let started = Instant::now();
            black_box(key.sign_prehash_recoverable(&rand::random::<[u8; 32]>()));
            started.elapsed()
        })
        .collect();
    let single = median(single);

    let timings: Vec<_> = (0..SUMMARY_SIGNATURES)
        .map(|_| timed_sign(&shares[0], &shares[1], rand::random()))
        .collect();
    let total = median(timings.iter().map(|t| t.total()).collect());
    let critical = median(timings.iter().map(|t| t.critical_path()).collect());
    let bytes = timings[0].bytes;

    let dkg: Vec<Duration> = (0..SUMMARY_DKGS)
        .map(|_| {
            let started = Instant::now();
            run_dkg(SessionId(rand::random())).expect("dkg");
            started.elapsed()
        })
        .collect();
    let dkg = median(dkg);

    println!(
        "\n== shardsign engine summary ({SUMMARY_SIGNATURES} signatures, {SUMMARY_DKGS} DKGs, medians) =="
    );
    println!("phase means per party (ms):   party 1   party 2");
    let names = [
        "1 start (round-1 msgs)",
        "2 after round 1",
        "3 after round 2",
        "4 assemble",
    ];
    for (phase, name) in names.iter().enumerate() {
        let mean = |party: usize| {
            timings
                .iter()
                .map(|t| ms(t.phases[phase][party]))
                .sum::<f64>()
                / timings.len() as f64
        };
        println!("  {name:<26} {:>8.3}  {:>8.3}", mean(0), mean(1));
    }
    println!("single-key k256 sign:           {:>9.3} ms", ms(single));
    println!(
        "2-party sign, one thread:       {:>9.3} ms  ({:.0}x single key)",
        ms(total),
        ms(total) / ms(single)
    );
    println!(
        "2-party sign, critical path:    {:>9.3} ms  ({:.0}x single key, {:.2}x of one-thread)",
        ms(critical),
        ms(critical) / ms(single),
        ms(critical) / ms(total)
    );
    println!("2-of-3 DKG, one thread:         {:>9.1} ms", ms(dkg));
    println!(
        "bytes per signature:            {:>9} ({} KB)",
        bytes,
        bytes / 1000
    );
    let dkg_bytes = dkg_bytes();
    println!(
        "bytes per DKG:                  {:>9} ({} KB)",
        dkg_bytes,
        dkg_bytes / 1000
    );
    println!(
        "serialised share:               {:>9} bytes",
        shares[0].to_bytes().len()
    );
}

fn main() {
    let shares = fresh_shares();
    let mut c = Criterion::default().configure_from_args();
    criterion_benches(&mut c, &shares);
    c.final_summary();
    summary(&shares);
}
