//! EIP-191 `personal_sign` input: the public API's message field and the message rules of a
//! policy (length, text only, hash-shaped, prefixes). The first bytes choose the rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardsign_eth::{Limits, personal_sign_hash};
use shardsign_policy::MessageRules;
use shardsign_request::{Payload, PayloadKind, proto};

fuzz_target!(|data: &[u8]| {
    let (flags, rest) = shardsign_fuzz::selector(data);
    let (prefix_len, message) = shardsign_fuzz::selector(rest);
    let prefix_len = usize::from(prefix_len).min(message.len());
    let prefix = String::from_utf8_lossy(&message[..prefix_len]).into_owned();
    let prefixes = if flags & 4 != 0 {
        vec![prefix]
    } else {
        Vec::new()
    };
    let max_len = if flags & 8 != 0 {
        u32::from(flags) * 16
    } else {
        0
    };
    if let Ok(rules) = MessageRules::new(flags & 1 != 0, flags & 2 != 0, max_len, prefixes) {
        let _ = rules.check(message);
    }
    if let Ok(payload) = proto::personal_message(message.to_vec()) {
        assert_eq!(payload.signing_hash(), personal_sign_hash(message));
        let again = Payload::decode(
            PayloadKind::PersonalMessage,
            payload.encode(),
            &Limits::default(),
        )
        .expect("an accepted message decodes on the node");
        assert_eq!(again, payload);
    }
});
