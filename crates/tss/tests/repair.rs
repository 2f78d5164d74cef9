//! Share repair in one thread: the two helpers' terms rebuild a lost share of the same key; the
//! rebuilt (hollow) share refuses to sign and refuses the fast refresh until a complete refresh
//! across all three, after which every pair signs; wrong, tampered, mismatched or missing terms
//! are refused.

use std::sync::Arc;

use shardsign_tss::local::{run_dkg, run_refresh, run_refresh_kind, run_sign};
use shardsign_tss::{KeyShare, PARTIES, PublicPackage, RefreshKind, repair_assemble};

mod common;
use common::{fresh_session, verifies};

/// One key's three shares and its package, shared by the tests below.
fn key() -> &'static (Vec<Arc<KeyShare>>, PublicPackage) {
    static KEY: std::sync::OnceLock<(Vec<Arc<KeyShare>>, PublicPackage)> =
        std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let outputs = run_dkg(fresh_session()).unwrap();
        let package = outputs[0].package.clone();
        (
            outputs.into_iter().map(|o| Arc::new(o.share)).collect(),
            package,
        )
    })
}

#[test]
fn two_helpers_rebuild_a_lost_share_that_signs_only_after_a_complete_refresh() {
    let (shares, package) = key();
    let target = PARTIES[2];
    let repair_id = b"replace node 3, membership version 2";
    let terms: Vec<_> = shares[..2]
        .iter()
        .map(|helper| helper.repair_term(target, repair_id).unwrap())
        .collect();
    let hollow = repair_assemble(
        package,
        target,
        &terms.iter().map(|t| t.as_slice()).collect::<Vec<_>>(),
    )
    .expect("the terms assemble");
    assert!(hollow.is_hollow());
    assert_eq!(hollow.party_id(), target);
    assert_eq!(hollow.public_key(), shares[0].public_key());
    assert!(package.matches(&hollow), "the lost share's own point");
    // It survives its encoding (the new node stores it until the refresh).
    let hollow = Arc::new(KeyShare::from_bytes(&hollow.to_bytes()).unwrap());
    assert!(hollow.is_hollow());

    // Hollow: no signing, no fast refresh, no helping another repair.
    let error = run_sign(
        [shares[0].clone(), hollow.clone()],
        fresh_session(),
        [7; 32],
    )
    .unwrap_err();
    assert!(error.to_string().contains("rebuilt by repair"), "{error}");
    let error = run_refresh_kind(
        RefreshKind::Fast,
        [shares[0].clone(), shares[1].clone(), hollow.clone()],
        package,
        fresh_session(),
        |_, m| Some(m),
    )
    .unwrap_err();
    assert!(error.to_string().contains("complete refresh"), "{error}");
    assert!(hollow.repair_term(PARTIES[0], repair_id).is_err());

    // The complete refresh across all three: every pair signs the same key.
    let refreshed = run_refresh(
        [shares[0].clone(), shares[1].clone(), hollow],
        package,
        fresh_session(),
    )
    .expect("the complete refresh takes the hollow share");
    let new: Vec<Arc<KeyShare>> = refreshed.into_iter().map(|o| Arc::new(o.share)).collect();
    assert!(new.iter().all(|s| !s.is_hollow()));
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        let hash: [u8; 32] = rand::random();
        let signatures = run_sign([new[a].clone(), new[b].clone()], fresh_session(), hash)
            .unwrap_or_else(|e| panic!("pair {a},{b}: {e}"));
        assert!(verifies(&shares[0].public_key(), &signatures[0], &hash));
    }
}

#[test]
fn wrong_tampered_mismatched_or_missing_terms_are_refused() {
    let (shares, package) = key();
    let target = PARTIES[2];
    let term = |helper: usize, id: &[u8]| shares[helper].repair_term(target, id).unwrap();
    let good = [term(0, b"r1"), term(1, b"r1")];
    let assemble = |terms: &[&[u8]]| repair_assemble(package, target, terms);
    assert!(assemble(&[&good[0], &good[1]]).is_ok());
    // One helper alone.
    assert!(assemble(&[&good[0]]).is_err());
    // The same helper twice.
    assert!(assemble(&[&good[0], &good[0]]).is_err());
    // The helpers disagree on the repair id: the masks do not cancel.
    let other = term(1, b"r2");
    assert!(assemble(&[&good[0], &other]).is_err());
    // A flipped bit in a term.
    let mut tampered = good[1].to_vec();
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    assert!(assemble(&[&good[0], &tampered]).is_err());
    // Terms for party 3 assembled as party 2's share, or against another key's package.
    assert!(repair_assemble(package, PARTIES[1], &[&good[0], &good[1]]).is_err());
    let another = run_dkg(fresh_session()).unwrap();
    assert!(repair_assemble(&another[0].package, target, &[&good[0], &good[1]]).is_err());
    // Garbage and oversized input.
    assert!(assemble(&[&good[0], &[1, 2, 3]]).is_err());
    assert!(assemble(&[&good[0], &vec![1u8; 4096]]).is_err());
    // No empty repair id, no term for oneself.
    assert!(shares[0].repair_term(target, b"").is_err());
    assert!(shares[2].repair_term(target, b"r1").is_err());
}
