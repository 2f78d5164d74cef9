//! `shardsign-node`: create a node's encrypted store (`init`) and serve it (`run`).

fn main() -> std::process::ExitCode {
    shardsign_node::cli::main()
}
