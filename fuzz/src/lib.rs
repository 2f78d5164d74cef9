//! Fixtures the fuzz targets share: made once per process, deterministic where the libraries
//! allow it, so that a crash input replays the same way.

use std::sync::{Arc, OnceLock};

use shardsign_tss::{KeyShare, SessionId, local};

/// Key shares of one 2-of-3 key, from a real key generation run once per process.
pub fn shares() -> &'static [Arc<KeyShare>; 3] {
    static SHARES: OnceLock<[Arc<KeyShare>; 3]> = OnceLock::new();
    SHARES.get_or_init(|| {
        let outputs = local::run_dkg(SessionId([7; 32])).expect("an honest key generation");
        let shares: Vec<Arc<KeyShare>> = outputs
            .into_iter()
            .map(|output| Arc::new(output.share))
            .collect();
        shares.try_into().expect("three shares")
    })
}

/// Splits a selector byte off the input (0 for an empty input).
pub fn selector(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (*first, rest),
        None => (0, data),
    }
}
