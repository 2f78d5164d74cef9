//! A node that cheats on purpose, for the trust-model tests only: built only with the
//! `malicious` feature (`required-features`), which no release build enables (CI checks the
//! workspace's resolved features). `SHARDSIGN_MALICIOUS=corrupt-multiplication` makes every
//! signing session corrupt its multiplication message; `refuse-commit` / `refuse-commit-once`
//! make it refuse key generation commits (every one / the first), `refuse-refresh-commit` every
//! refresh commit; unset, it behaves like
//! `shardsign-node`.

use shardsign_tss::malicious::{self, Behaviour};

fn main() -> std::process::ExitCode {
    let behaviour = match std::env::var("SHARDSIGN_MALICIOUS").as_deref() {
        Ok("corrupt-multiplication") => Behaviour::CorruptMultiplication,
        _ => Behaviour::Honest,
    };
    malicious::set(behaviour);
    eprintln!("shardsign-node-malicious: {behaviour:?}");
    shardsign_node::cli::main()
}
