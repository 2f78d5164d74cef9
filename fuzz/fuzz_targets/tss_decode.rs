//! Every engine payload type's decoder at full speed (the live-protocol target `tss_payload` runs
//! a key generation per input): the first byte picks the type, the rest is the payload. Property:
//! what decodes re-encodes to bytes that decode and re-encode the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardsign_tss::fuzzing::decode_payload;

fuzz_target!(|data: &[u8]| {
    let (kind, payload) = shardsign_fuzz::selector(data);
    let _ = decode_payload(kind, payload);
});
