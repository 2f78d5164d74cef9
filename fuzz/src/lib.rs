//! Fixtures the fuzz targets share: made once per process, deterministic where the libraries
//! allow it, so that a crash input replays the same way.

use std::sync::{Arc, OnceLock};

use shardsign_tss::{KeyShare, PublicPackage, SessionId, local};

/// One 2-of-3 key from a real key generation run once per process: its shares and package.
fn key() -> &'static ([Arc<KeyShare>; 3], PublicPackage) {
    static KEY: OnceLock<([Arc<KeyShare>; 3], PublicPackage)> = OnceLock::new();
    KEY.get_or_init(|| {
        let outputs = local::run_dkg(SessionId([7; 32])).expect("an honest key generation");
        let package = outputs[0].package.clone();
        let shares: Vec<Arc<KeyShare>> = outputs
            .into_iter()
            .map(|output| Arc::new(output.share))
            .collect();
        (shares.try_into().expect("three shares"), package)
    })
}

/// The key's three shares.
pub fn shares() -> &'static [Arc<KeyShare>; 3] {
    &key().0
}

/// The key's public key package.
pub fn package() -> &'static PublicPackage {
    &key().1
}

/// Splits a selector byte off the input (0 for an empty input).
pub fn selector(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (*first, rest),
        None => (0, data),
    }
}
