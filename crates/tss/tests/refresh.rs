//! Share refresh end to end in one thread: new shares of the same key sign with every pair, an
//! old share and a new one cannot sign together, a refresh interrupted or tampered with leaves
//! the old shares working, and a refreshed share survives its encoding.

use std::sync::Arc;

use shardsign_tss::local::{run_dkg, run_refresh, run_refresh_with, run_sign};
use shardsign_tss::{KeyShare, PARTIES, PublicPackage};

mod common;
use common::{fresh_session, verifies};

fn arcs(shares: Vec<KeyShare>) -> Vec<Arc<KeyShare>> {
    shares.into_iter().map(Arc::new).collect()
}

/// The shares of one key before and after a refresh, and the public key packages (as party 1
/// has them) before and after.
type Epochs = (
    Vec<Arc<KeyShare>>,
    Vec<Arc<KeyShare>>,
    PublicPackage,
    PublicPackage,
);

/// One key generation and one refresh of it, shared by the tests below.
fn old_and_new() -> &'static Epochs {
    static SHARES: std::sync::OnceLock<Epochs> = std::sync::OnceLock::new();
    SHARES.get_or_init(|| {
        let outputs = run_dkg(fresh_session()).unwrap();
        assert!(
            outputs.windows(2).all(|w| w[0].package == w[1].package),
            "one package"
        );
        let package = outputs[0].package.clone();
        let old = arcs(outputs.into_iter().map(|o| o.share).collect());
        let three: [Arc<KeyShare>; 3] = old.clone().try_into().unwrap();
        let refreshed = run_refresh(three, &package, fresh_session()).expect("refresh");
        assert!(
            refreshed.windows(2).all(|w| w[0].package == w[1].package),
            "one new package"
        );
        let new_package = refreshed[0].package.clone();
        let new = arcs(refreshed.into_iter().map(|o| o.share).collect());
        (old, new, package, new_package)
    })
}

#[test]
fn refreshed_shares_keep_the_key_and_every_pair_signs() {
    let (old, new, _, _) = old_and_new();
    for (old, new) in old.iter().zip(new) {
        assert_eq!(
            new.public_key(),
            old.public_key(),
            "the address never changes"
        );
        assert_eq!(new.party_id(), old.party_id());
        assert_ne!(
            new.to_bytes().as_slice(),
            old.to_bytes().as_slice(),
            "a new share"
        );
    }
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        let hash: [u8; 32] = rand::random();
        let signatures = run_sign([new[a].clone(), new[b].clone()], fresh_session(), hash).unwrap();
        assert!(verifies(&new[0].public_key(), &signatures[0], &hash));
    }
}

#[test]
fn an_old_epoch_share_and_a_new_epoch_share_cannot_sign_together() {
    let (old, new, _, _) = old_and_new();
    for (a, b) in [(0, 1), (1, 2), (2, 0)] {
        let hash: [u8; 32] = rand::random();
        for pair in [
            [old[a].clone(), new[b].clone()],
            [new[a].clone(), old[b].clone()],
        ] {
            match run_sign(pair, fresh_session(), hash) {
                Err(_) => {}
                Ok(signatures) => assert!(
                    signatures
                        .iter()
                        .all(|s| !verifies(&old[0].public_key(), s, &hash)),
                    "an old and a new share made a valid signature"
                ),
            }
        }
    }
}

#[test]
fn a_refreshed_share_survives_its_encoding() {
    let (_, new, _, _) = old_and_new();
    let decoded = KeyShare::from_bytes(&new[1].to_bytes()).unwrap();
    assert_eq!(decoded.public_key(), new[1].public_key());
    let hash: [u8; 32] = rand::random();
    let signatures = run_sign([new[0].clone(), Arc::new(decoded)], fresh_session(), hash).unwrap();
    assert!(verifies(&new[0].public_key(), &signatures[0], &hash));
}

#[test]
fn an_interrupted_or_tampered_refresh_leaves_the_old_shares_signing() {
    let (old, _, package, _) = old_and_new();
    let three = || -> [Arc<KeyShare>; 3] { old.clone().try_into().unwrap() };
    // A party that vanishes after round 1: nobody finishes.
    let interrupted = run_refresh_with(three(), package, fresh_session(), |_, message| {
        (message.round < 2 || message.from.get() != 3).then_some(message)
    });
    assert!(
        interrupted.is_err(),
        "a refresh without every party does not finish"
    );
    // A tampered payload in each round aborts it.
    for round in 1..=3 {
        let mut done = false;
        let tampered = run_refresh_with(three(), package, fresh_session(), |_, mut message| {
            if !done && message.round == round {
                done = true;
                let at = message.payload.len() / 2;
                message.payload[at] ^= 1;
            }
            Some(message)
        });
        assert!(
            tampered.is_err(),
            "round {round}: tampering must abort the refresh"
        );
    }
    let hash: [u8; 32] = rand::random();
    let signatures = run_sign([old[0].clone(), old[2].clone()], fresh_session(), hash).unwrap();
    assert!(verifies(&old[0].public_key(), &signatures[0], &hash));
}

#[test]
fn the_public_key_package_follows_the_shares_through_a_refresh() {
    let (old, new, package, new_package) = old_and_new();
    assert_eq!(
        package.public_key(),
        new_package.public_key(),
        "same group key"
    );
    assert_ne!(package, new_package, "new verifying shares");
    for (share, party) in old.iter().zip(PARTIES) {
        assert!(package.matches(share));
        assert!(
            !new_package.matches(share),
            "an old share is not in the new package"
        );
        assert_ne!(
            package.verifying_share(party),
            new_package.verifying_share(party)
        );
    }
    for share in new {
        assert!(new_package.matches(share));
    }
    // The encoding round-trips; a package whose shares are swapped does not interpolate.
    let bytes = new_package.to_bytes();
    assert_eq!(&PublicPackage::from_bytes(&bytes).unwrap(), new_package);
    let mut swapped = bytes.clone();
    let (one, two) = (
        new_package.verifying_share(PARTIES[0]),
        new_package.verifying_share(PARTIES[1]),
    );
    let at_one = swapped
        .windows(33)
        .position(|w| w[1..] == one[1..])
        .expect("share 1 in the encoding");
    let at_two = swapped
        .windows(33)
        .position(|w| w[1..] == two[1..])
        .expect("share 2 in the encoding");
    let (a, b) = (
        swapped[at_one..at_one + 33].to_vec(),
        swapped[at_two..at_two + 33].to_vec(),
    );
    swapped[at_one..at_one + 33].copy_from_slice(&b);
    swapped[at_two..at_two + 33].copy_from_slice(&a);
    assert!(
        PublicPackage::from_bytes(&swapped).is_err(),
        "swapped verifying shares are refused"
    );
    assert!(PublicPackage::from_bytes(&bytes[..bytes.len() - 1]).is_err());
}

#[test]
fn a_package_rebuilt_from_published_verifying_shares_equals_the_ceremonys() {
    let (old, new, package, new_package) = old_and_new();
    for (shares, expected) in [(old, package), (new, new_package)] {
        let published: std::collections::BTreeMap<_, _> = shares
            .iter()
            .map(|s| (s.party_id(), s.verifying_share_bytes()))
            .collect();
        let agreed = PublicPackage::from_verifying_shares(&shares[0].public_key(), &published)
            .expect("the published shares agree");
        assert_eq!(&agreed, expected);
        assert!(shares.iter().all(|s| agreed.matches(s)));
    }
}

#[test]
fn a_package_with_a_forged_stale_or_missing_verifying_share_is_refused() {
    let (old, new, _, _) = old_and_new();
    let public_key = old[0].public_key();
    let published = |shares: &[Arc<KeyShare>]| -> std::collections::BTreeMap<_, _> {
        shares
            .iter()
            .map(|s| (s.party_id(), s.verifying_share_bytes()))
            .collect()
    };
    // Party 3 publishes its old-epoch point beside the others' new ones.
    let mut mixed = published(new);
    mixed.insert(PARTIES[2], old[2].verifying_share_bytes());
    assert!(PublicPackage::from_verifying_shares(&public_key, &mixed).is_err());
    // A point of the publisher's choosing (the generator).
    let mut forged = published(old);
    let generator: [u8; 33] = {
        use k256::elliptic_curve::sec1::ToSec1Point;
        k256::AffinePoint::GENERATOR
            .to_sec1_point(true)
            .as_bytes()
            .try_into()
            .unwrap()
    };
    forged.insert(PARTIES[1], generator);
    assert!(PublicPackage::from_verifying_shares(&public_key, &forged).is_err());
    // Not a point at all.
    let mut garbage = published(old);
    garbage.insert(PARTIES[0], [0xff; 33]);
    assert!(PublicPackage::from_verifying_shares(&public_key, &garbage).is_err());
    // Two of three.
    let mut missing = published(old);
    missing.remove(&PARTIES[0]);
    assert!(PublicPackage::from_verifying_shares(&public_key, &missing).is_err());
    // Another key's shares.
    let other = run_dkg(fresh_session()).unwrap();
    let theirs: std::collections::BTreeMap<_, _> = other
        .iter()
        .map(|o| (o.share.party_id(), o.share.verifying_share_bytes()))
        .collect();
    assert!(PublicPackage::from_verifying_shares(&public_key, &theirs).is_err());
}

#[test]
fn a_fast_refresh_keeps_the_key_every_pair_signs_and_old_and_new_shares_do_not_mix() {
    use shardsign_tss::RefreshKind;
    use shardsign_tss::local::run_refresh_kind;
    let (_, new, _, new_package) = old_and_new();
    let three: [Arc<KeyShare>; 3] = new.clone().try_into().unwrap();
    let fast = run_refresh_kind(
        RefreshKind::Fast,
        three.clone(),
        new_package,
        fresh_session(),
        |_, message| Some(message),
    )
    .expect("fast refresh");
    assert!(fast.windows(2).all(|w| w[0].package == w[1].package));
    assert_ne!(&fast[0].package, new_package, "the package moves with it");
    let faster = arcs(fast.into_iter().map(|o| o.share).collect());
    for (before, after) in new.iter().zip(&faster) {
        assert_eq!(after.public_key(), before.public_key());
        assert_ne!(after.to_bytes().as_slice(), before.to_bytes().as_slice());
    }
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        let hash: [u8; 32] = rand::random();
        let signatures = run_sign(
            [faster[a].clone(), faster[b].clone()],
            fresh_session(),
            hash,
        )
        .unwrap();
        assert!(verifies(&new[0].public_key(), &signatures[0], &hash));
        // A share from before the fast refresh and one after: no valid signature.
        for pair in [
            [new[a].clone(), faster[b].clone()],
            [faster[a].clone(), new[b].clone()],
        ] {
            if let Ok(signatures) = run_sign(pair, fresh_session(), hash) {
                assert!(
                    signatures
                        .iter()
                        .all(|s| !verifies(&new[0].public_key(), s, &hash)),
                    "a pre-refresh and a post-refresh share made a valid signature"
                );
            }
        }
    }
    // Tampering in any round aborts a fast refresh too.
    for round in 1..=3 {
        let mut done = false;
        let tampered = run_refresh_kind(
            RefreshKind::Fast,
            three.clone(),
            new_package,
            fresh_session(),
            |_, mut message| {
                if !done && message.round == round {
                    done = true;
                    let at = message.payload.len() / 2;
                    message.payload[at] ^= 1;
                }
                Some(message)
            },
        );
        assert!(tampered.is_err(), "round {round}: tampering must abort");
    }
}
