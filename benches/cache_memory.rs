//! Heap memory held by the tenant key cache, per cached tenant.
//!
//! Loads 100,000 tenants (one key version each) into one sealer's cache and
//! counts the heap bytes that stay allocated, with a counting global allocator.
//! Then the same for 10,000 tenants with two live key versions each.
//!
//! Run: `cargo bench --bench cache_memory`

use std::alloc::System;

use cap::Cap;
use fieldseal::{LocalKeyProvider, MemoryKeyStore, RootKey, Sealer};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

fn provider() -> LocalKeyProvider {
    LocalKeyProvider::new("bench-root", RootKey::from_bytes(&mut [7; 32])).expect("provider")
}

async fn measure(tenants: usize, versions: u32) -> f64 {
    let store = MemoryKeyStore::new();
    let writer = Sealer::builder(provider(), store.clone())
        .cache_capacity(1)
        .build();
    let names: Vec<String> = (0..tenants).map(|i| format!("tenant-{i:06}")).collect();
    for name in &names {
        writer.create_tenant(name).await.expect("create");
        for _ in 1..versions {
            writer.admin().rotate(name).await.expect("rotate");
        }
    }
    drop(writer);

    let reader = Sealer::builder(provider(), store)
        .cache_capacity(tenants)
        .build();
    // Let one-time allocations (thread-locals, the RNG) happen first.
    drop(reader.tenant(&names[0]).await.expect("load"));
    let before = ALLOCATOR.allocated();
    for name in &names[1..] {
        drop(reader.tenant(name).await.expect("load"));
    }
    let after = ALLOCATOR.allocated();
    (after - before) as f64 / (tenants - 1) as f64
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let one = measure(100_000, 1).await;
        println!("cache memory: 100000 tenants, 1 key version each: {one:.0} bytes per tenant");
        let two = measure(10_000, 2).await;
        println!("cache memory: 10000 tenants, 2 key versions each: {two:.0} bytes per tenant");
    });
}
