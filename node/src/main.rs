//! shardsign signer node: holds one key share and joins signing sessions.
//! (The node service arrives with the Signer node issue; for now it reports its version.)

fn main() {
    println!("shardsign-node {}", env!("CARGO_PKG_VERSION"));
}
