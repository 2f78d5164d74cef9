//! Sealing, the node-side cost added to every protocol message: a direct message of the size of
//! signing's round-1 payload sealed and opened (X25519 with a fresh ephemeral key and the cached
//! static secret, HKDF-SHA-256, ChaCha20-Poly1305), and a round-3 broadcast signed and verified
//! (Ed25519).
//!
//! `cargo bench -p shardsign-benches --bench seal`

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use shardsign_seal::{
    Context, NodeSecret, open_broadcast, open_direct, seal_direct, sign_broadcast,
};

/// About the size of one signing round-1 message (OT-extension data).
const DIRECT_LEN: usize = 80 * 1024;
/// About the size of a round-3 broadcast (a signature fragment).
const BROADCAST_LEN: usize = 200;

fn context(to: u8) -> Context<'static> {
    Context {
        cluster_id: "bench",
        protocol: 2,
        session_id: &[9; 32],
        round: 1,
        from: 1,
        to,
        binding: &[3; 32],
    }
}

fn benches(c: &mut Criterion) {
    let sender = NodeSecret::generate();
    let recipient = NodeSecret::generate();
    let (sender_public, recipient_public) = (sender.public(), recipient.public());
    let payload = vec![0x5a; DIRECT_LEN];
    let sealed = seal_direct(&sender, &recipient_public, &context(2), &payload);
    let mut group = c.benchmark_group("seal");
    group.throughput(Throughput::Bytes(DIRECT_LEN as u64));
    group.bench_function("seal_direct 80 KiB", |b| {
        b.iter(|| seal_direct(&sender, &recipient_public, &context(2), black_box(&payload)))
    });
    group.bench_function("open_direct 80 KiB", |b| {
        b.iter(|| {
            open_direct(&recipient, &sender_public, &context(2), black_box(&sealed)).expect("opens")
        })
    });
    group.finish();
    let fragment = vec![0x11; BROADCAST_LEN];
    let signed = sign_broadcast(&sender, &context(0), &fragment);
    c.bench_function("sign_broadcast 200 B", |b| {
        b.iter(|| sign_broadcast(&sender, &context(0), black_box(&fragment)))
    });
    c.bench_function("open_broadcast 200 B", |b| {
        b.iter(|| open_broadcast(&sender_public, &context(0), black_box(&signed)).expect("opens"))
    });
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
}
