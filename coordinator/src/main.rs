//! shardsign coordinator: the public gRPC API that relays sealed protocol rounds between nodes.
//! (The service arrives with the Coordinator issue; for now it reports its version.)

fn main() {
    println!("shardsign-coordinator {}", env!("CARGO_PKG_VERSION"));
}
