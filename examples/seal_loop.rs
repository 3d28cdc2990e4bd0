//! Seals and opens one 256-byte value N times with a cached key: a steady loop
//! for profilers and instruction counters.
//!
//! ```sh
//! cargo build --release --example seal_loop [--features metrics]
//! valgrind --tool=callgrind target/release/examples/seal_loop 11000
//! valgrind --tool=callgrind target/release/examples/seal_loop 11000 rows
//! ```
//!
//! With `rows`, the loop seals and opens through a context template
//! (`seal_row`/`open_row`, as bulk work does) instead of a built context.
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
    let template = Context::builder("acme", "integrations", "refresh_token").template()?;
    let rows = std::env::args().nth(2).as_deref() == Some("rows");
    let plaintext = [0x5a; 256];
    let mut versions = 0u64;
    for i in 0..iterations {
        versions += u64::from(if rows {
            let sealed = tenant.seal_row(&template, i, &plaintext)?;
            tenant.open_row(&template, i, &sealed)?.key_version()
        } else {
            let sealed = tenant.seal(&ctx, &plaintext)?;
            tenant.open(&ctx, &sealed)?.key_version()
        });
    }
    println!("{iterations} seals and opens ({versions})");
    Ok(())
}
