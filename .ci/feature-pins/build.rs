// Empty: it exists so that Cargo.toml's build-dependencies (the host crates' features) count.
fn main() {}
