//! The engine's message framing (`Message::decode`: version, protocol, round, parties, session,
//! length-prefixed payload). Accepted bytes re-encode exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardsign_tss::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        assert_eq!(message.encode(), data);
    }
});
