//! Seals and opens one 256-byte value N times with a cached key: a steady loop
//! for profilers and instruction counters.
//!
//! ```sh
//! cargo build --release --example seal_loop [--features metrics]
//! valgrind --tool=callgrind target/release/examples/seal_loop 11000
//! ```
//!
//! The difference between two runs with different N is the cost of N seals
//! and opens, free of start-up.

use fieldseal::{Context, LocalKeyProvider, MemoryKeyStore, RootKey, Sealer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 100_000,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let tenant = runtime.block_on(async {
        let provider = LocalKeyProvider::new("loop", RootKey::from_bytes(&mut [7; 32]))?;
        Sealer::builder(provider, MemoryKeyStore::new())
            .build()
            .tenant("acme")
            .await
    })?;
    let ctx = Context::builder("acme", "integrations", "refresh_token")
        .row(1)
        .build()?;
    let plaintext = [0x5a; 256];
    let mut versions = 0u64;
    for _ in 0..iterations {
        let sealed = tenant.seal(&ctx, &plaintext)?;
        versions += u64::from(tenant.open(&ctx, &sealed)?.key_version());
    }
    println!("{iterations} seals and opens ({versions})");
    Ok(())
}
