//! The `stilts` command line: one binary for the gateway, the simulator and the checks.

fn main() {
    println!("stilts {}", env!("CARGO_PKG_VERSION"));
}
