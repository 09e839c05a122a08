//! Writes `vectors/protocol.json`: every request and response in both
//! encodings, for the tests of every client (Rust, Go, Node, Python).
//!
//! `cargo run -p telemetry-proto --example vectors > vectors/protocol.json`;
//! `proto/tests/vectors.rs` fails when the file and this disagree.

#[path = "../tests/messages/mod.rs"]
mod messages;

fn main() {
    print!("{}", messages::render());
}
