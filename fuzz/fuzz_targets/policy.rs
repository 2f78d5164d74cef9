//! Policies from outside: the JSON policy files operators write (`shardsign policy sign`,
//! `api-keys create --policy-file`) and the protobuf `Policy` inside statements and requests.
//! The first byte picks the form. Accepted rules write back to a policy that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use shardsign_policy::file::PolicyFile;
use shardsign_policy::{Rules, RulesFor};
use shardsign_proto::v1 as api;

fuzz_target!(|data: &[u8]| {
    let (which, bytes) = shardsign_fuzz::selector(data);
    let policy = if which & 1 == 0 {
        match PolicyFile::parse(bytes) {
            Ok(policy) => policy,
            Err(_) => return,
        }
    } else {
        match api::Policy::decode(bytes) {
            Ok(policy) => policy,
            Err(_) => return,
        }
    };
    for kind in [RulesFor::ApiKey, RulesFor::SigningKey] {
        if let Ok(rules) = Rules::from_proto(&policy, kind) {
            let written = rules.to_proto(kind);
            let again = Rules::from_proto(&written, kind).expect("written rules parse");
            assert_eq!(again, rules);
        }
    }
});
