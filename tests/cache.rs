//! The tenant key cache: single-flight misses, time to live, capacity.

mod common;

use std::time::Duration;

use common::{CountingProvider, ctx};
use fieldseal::{MemoryKeyStore, Sealer, store::KeyStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_misses_make_one_unwrap() {
    let store = MemoryKeyStore::new();
    // Another process creates the tenant and seals a value.
    let writer = Sealer::builder(CountingProvider::new(Duration::ZERO), store.clone()).build();
    let ctx = ctx("acme", 1);
    let sealed = writer.seal(&ctx, b"token").await.unwrap();

    // A fresh process opens it from 1,000 tasks at once.
    let provider = CountingProvider::new(Duration::from_millis(50));
    let reader = Sealer::builder(provider.clone(), store).build();
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (reader, ctx, sealed) = (reader.clone(), ctx.clone(), sealed.clone());
        tasks.push(tokio::spawn(async move {
            reader.open(&ctx, &sealed).await.map(|_| ())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        provider.unwraps(),
        1,
        "one unwrap for 1,000 concurrent misses"
    );
    assert_eq!(provider.wraps(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_first_seals_create_one_key() {
    let store = MemoryKeyStore::new();
    let provider = CountingProvider::new(Duration::from_millis(50));
    let sealer = Sealer::builder(provider.clone(), store.clone()).build();
    // A first tenant creates the store's audit-chain key (one more wrap).
    sealer.seal(&ctx("warmup", 1), b"x").await.unwrap();
    let wraps_before = provider.wraps();
    let mut tasks = Vec::new();
    for row in 0..1000 {
        let sealer = sealer.clone();
        tasks.push(tokio::spawn(async move {
            let ctx = ctx("newco", row);
            let sealed = sealer.seal(&ctx, b"first").await?;
            sealer
                .open(&ctx, &sealed)
                .await
                .map(|_| sealed.key_version())
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 1);
    }
    assert_eq!(provider.wraps() - wraps_before, 1, "one key created");
    assert_eq!(
        provider.unwraps(),
        0,
        "the creator uses its key without unwrapping it"
    );
    let record = store.load_tenant("newco").await.unwrap().unwrap();
    assert_eq!(record.keys.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_creating_one_tenant_agree() {
    let store = MemoryKeyStore::new();
    let a = Sealer::builder(
        CountingProvider::new(Duration::from_millis(20)),
        store.clone(),
    )
    .build();
    let b = Sealer::builder(
        CountingProvider::new(Duration::from_millis(20)),
        store.clone(),
    )
    .build();
    let (c1, c2) = (ctx("newco", 1), ctx("newco", 2));
    let (ra, rb) = tokio::join!(a.seal(&c1, b"from a"), b.seal(&c2, b"from b"));
    let (sa, sb) = (ra.unwrap(), rb.unwrap());
    // Each opens the other's value: both used the single stored key.
    assert!(a.open(&ctx("newco", 2), &sb).await.is_ok());
    assert!(b.open(&ctx("newco", 1), &sa).await.is_ok());
    assert_eq!(
        store
            .load_tenant("newco")
            .await
            .unwrap()
            .unwrap()
            .keys
            .len(),
        1
    );
}

#[tokio::test]
async fn capacity_evicts_the_oldest_tenant() {
    let provider = CountingProvider::new(Duration::ZERO);
    let store = MemoryKeyStore::new();
    let writer = Sealer::builder(common::local_provider(), store.clone()).build();
    for tenant in ["t1", "t2", "t3"] {
        writer.seal(&ctx(tenant, 1), b"x").await.unwrap();
    }
    let sealer = Sealer::builder(provider.clone(), store)
        .cache_capacity(2)
        .build();
    for tenant in ["t1", "t2"] {
        sealer.tenant(tenant).await.unwrap();
    }
    assert_eq!(provider.unwraps(), 2);
    sealer.tenant("t1").await.unwrap();
    assert_eq!(provider.unwraps(), 2, "t1 is still cached");
    sealer.tenant("t3").await.unwrap(); // evicts t1, the oldest
    assert_eq!(provider.unwraps(), 3);
    sealer.tenant("t2").await.unwrap();
    assert_eq!(provider.unwraps(), 3, "t2 is still cached");
    sealer.tenant("t1").await.unwrap();
    assert_eq!(provider.unwraps(), 4, "t1 was evicted and unwrapped again");
}

#[tokio::test]
async fn forged_key_versions_do_not_turn_into_a_store_read_per_call() {
    let store = common::TamperStore::default();
    let sealer = Sealer::builder(common::local_provider(), store.clone()).build();
    let ctx = ctx("acme", 1);
    let sealed = sealer.seal(&ctx, b"x").await.unwrap();
    let mut forged = sealed.as_bytes().to_vec();
    forged[2..6].copy_from_slice(&u32::MAX.to_be_bytes());
    let forged = fieldseal::SealedValue::from_bytes(forged).unwrap();

    tokio::time::sleep(Duration::from_millis(150)).await;
    let loads = store.loads.load(std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    for _ in 0..100 {
        let err = sealer.open(&ctx, &forged).await.unwrap_err();
        assert!(
            matches!(err, fieldseal::Error::UnknownKeyVersion { .. }),
            "{err}"
        );
    }
    let reloads = store.loads.load(std::sync::atomic::Ordering::SeqCst) - loads;
    // At most one reload per 100 ms (the minimum interval between them):
    // one, unless this machine took longer than that for the loop.
    let allowed = 1 + started.elapsed().as_millis() / 100;
    assert!(
        reloads as u128 <= allowed,
        "{reloads} store reads for 100 forged values"
    );
    assert!(sealer.open(&ctx, &sealed).await.is_ok());
}

#[tokio::test]
async fn failed_loads_do_not_evict_real_tenants() {
    let provider = CountingProvider::new(Duration::ZERO);
    let store = MemoryKeyStore::new();
    let writer = Sealer::builder(common::local_provider(), store.clone()).build();
    let (a, b) = (ctx("t1", 1), ctx("t2", 1));
    let sealed_a = writer.seal(&a, b"x").await.unwrap();
    let sealed_b = writer.seal(&b, b"x").await.unwrap();
    let sealer = Sealer::builder(provider.clone(), store)
        .cache_capacity(2)
        .build();
    sealer.open(&a, &sealed_a).await.unwrap();
    sealer.open(&b, &sealed_b).await.unwrap();
    for i in 0..10 {
        let unknown = ctx(&format!("nobody-{i}"), 1);
        assert!(sealer.open(&unknown, &sealed_a).await.is_err());
    }
    sealer.open(&a, &sealed_a).await.unwrap();
    sealer.open(&b, &sealed_b).await.unwrap();
    assert_eq!(provider.unwraps(), 2, "both tenants stayed cached");
}
