//! What each root key provider costs: the cold start of a tenant (its first
//! seal in a process, which unwraps or creates its key through the provider)
//! and a warm seal (which never calls the provider), against the raw
//! AES-256-GCM floor in the same run; each provider also as a tenant's own
//! root key (`SealerBuilder::tenant_root_key`), warm and after its cached
//! keys expire.
//!
//! The AWS KMS figures need `FIELDSEAL_TEST_KMS_ENDPOINT` (moto on loopback),
//! the PKCS#11 ones `FIELDSEAL_TEST_PKCS11_MODULE`, `_TOKEN`, `_KEY` and `_PIN`
//! (SoftHSM2); `source .ci/key-services.sh` sets both. A provider whose
//! variables are unset is left out, with a printed reason.
//!
//! Run: `cargo bench --all-features --bench providers`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fieldseal::secrecy::SecretString;
use fieldseal::{
    Context, LocalKeyProvider, MemoryKeyStore, RootKey, Sealer,
    provider::{AwsKmsProvider, KeyProvider, Pkcs11Provider},
};

/// Tenants whose cold start is timed, per provider.
const TENANTS: usize = 100;
const SIZE: usize = 256;

fn runtime() -> tokio::runtime::Runtime {
    // One thread: `block_on` then measures the seal, not cross-thread wake-ups.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn providers() -> Vec<(&'static str, Arc<dyn KeyProvider>)> {
    let mut out: Vec<(&'static str, Arc<dyn KeyProvider>)> = vec![(
        "local",
        Arc::new(LocalKeyProvider::new("bench", RootKey::generate().expect("key")).expect("id")),
    )];
    match std::env::var("FIELDSEAL_TEST_KMS_ENDPOINT") {
        Ok(endpoint) => {
            let config = aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .endpoint_url(&endpoint)
                .credentials_provider(Credentials::new("bench", "bench", None, None, "bench"))
                .load()
                .await;
            let created = aws_sdk_kms::Client::new(&config)
                .create_key()
                .send()
                .await
                .expect("the KMS emulator is unreachable");
            let arn = created.key_metadata().and_then(|m| m.arn()).expect("arn");
            let provider = AwsKmsProvider::builder(arn)
                .sdk_config(&config)
                .build()
                .await
                .expect("provider");
            out.push(("aws_kms", Arc::new(provider)));
        }
        Err(_) => eprintln!("leaving out AWS KMS: FIELDSEAL_TEST_KMS_ENDPOINT is not set"),
    }
    match std::env::var("FIELDSEAL_TEST_PKCS11_MODULE") {
        Ok(module) => {
            let var = |name: &str| std::env::var(name).expect(name);
            let provider = Pkcs11Provider::builder(module)
                .token(var("FIELDSEAL_TEST_PKCS11_TOKEN"))
                .key(var("FIELDSEAL_TEST_PKCS11_KEY"))
                .pin(SecretString::from(var("FIELDSEAL_TEST_PKCS11_PIN")))
                .build()
                .await
                .expect("provider");
            out.push(("pkcs11", Arc::new(provider)));
        }
        Err(_) => eprintln!("leaving out PKCS#11: FIELDSEAL_TEST_PKCS11_MODULE is not set"),
    }
    out
}

fn ctx(tenant: &str) -> Context {
    Context::builder(tenant, "integrations", "refresh_token")
        .row(1)
        .build()
        .expect("context")
}

fn median_and_p90(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

/// Times, one tenant after another, the first seal that creates a tenant and
/// the first seal of an existing tenant in a process with a cold cache.
fn cold_start(
    runtime: &tokio::runtime::Runtime,
    providers: &[(&'static str, Arc<dyn KeyProvider>)],
) {
    println!("\ncold start: the first seal for a tenant, {TENANTS} tenants, median / p90");
    println!(
        "| provider | first seal, creating the tenant | first seal of an existing tenant, cold cache |"
    );
    println!("|---|---:|---:|");
    for (name, provider) in providers {
        let (created, loaded) = runtime.block_on(async {
            let store = MemoryKeyStore::new();
            let first = Sealer::builder(Arc::clone(provider), store.clone()).build();
            // The store's audit key is made once per store, not per tenant.
            first.create_tenant("warm-up").await.expect("warm-up");
            let tenants: Vec<String> = (0..TENANTS).map(|i| format!("tenant-{i}")).collect();
            let mut created = Vec::with_capacity(TENANTS);
            for tenant in &tenants {
                let start = Instant::now();
                black_box(first.seal(&ctx(tenant), &[0x5a; SIZE]).await.expect("seal"));
                created.push(start.elapsed());
            }
            let cold = Sealer::builder(Arc::clone(provider), store).build();
            let mut loaded = Vec::with_capacity(TENANTS);
            for tenant in &tenants {
                let start = Instant::now();
                black_box(cold.seal(&ctx(tenant), &[0x5a; SIZE]).await.expect("seal"));
                loaded.push(start.elapsed());
            }
            (median_and_p90(created), median_and_p90(loaded))
        });
        println!(
            "| {name} | {:.1?} / {:.1?} | {:.1?} / {:.1?} |",
            created.0, created.1, loaded.0, loaded.1
        );
    }
    println!();
}

/// A sealer on `provider`: as the shared root key, or (`own`) as tenant
/// acme's own root key beside a local shared one. `ttl`: its cache's.
fn sealer_on(provider: &Arc<dyn KeyProvider>, own: bool, ttl: Duration) -> Sealer {
    let builder = if own {
        let shared =
            LocalKeyProvider::new("shared", RootKey::generate().expect("key")).expect("id");
        Sealer::builder(shared, MemoryKeyStore::new())
            .tenant_root_key("acme", Arc::clone(provider))
            .expect("binding")
    } else {
        Sealer::builder(Arc::clone(provider), MemoryKeyStore::new())
    };
    builder.cache_ttl(ttl).build()
}

/// A seal whose cached keys just expired (a cache time to live of zero):
/// a tenant on the shared root key reuses what it unwrapped; a tenant on its
/// own root key asks it again, once, so that a revocation shows.
fn reload(runtime: &tokio::runtime::Runtime, providers: &[(&'static str, Arc<dyn KeyProvider>)]) {
    println!(
        "
a seal after its tenant's cached keys expired, {TENANTS} seals, median / p90"
    );
    println!("| provider | as the shared root key | as the tenant's own root key |");
    println!("|---|---:|---:|");
    for (name, provider) in providers {
        let mut row = Vec::new();
        for own in [false, true] {
            let sealer = sealer_on(provider, own, Duration::ZERO);
            let times = runtime.block_on(async {
                sealer
                    .seal(&ctx("acme"), &[0x5a; SIZE])
                    .await
                    .expect("seal");
                let mut times = Vec::with_capacity(TENANTS);
                for _ in 0..TENANTS {
                    let start = Instant::now();
                    black_box(
                        sealer
                            .seal(&ctx("acme"), &[0x5a; SIZE])
                            .await
                            .expect("seal"),
                    );
                    times.push(start.elapsed());
                }
                median_and_p90(times)
            });
            row.push(format!("{:.1?} / {:.1?}", times.0, times.1));
        }
        println!("| {name} | {} | {} |", row[0], row[1]);
    }
    println!();
}

fn bench(c: &mut Criterion) {
    let runtime = runtime();
    let providers = runtime.block_on(providers());
    cold_start(&runtime, &providers);
    reload(&runtime, &providers);

    let mut group = c.benchmark_group("providers_warm_seal");
    group.throughput(Throughput::Bytes(SIZE as u64));
    let aes = Aes256Gcm::new(&[1u8; 32].into());
    let nonce = [2u8; 12];
    let mut buf = vec![0u8; SIZE];
    group.bench_function("floor_aes256gcm_seal", |b| {
        b.iter(|| {
            let tag = aes
                .encrypt_inout_detached((&nonce).into(), b"ctx", black_box(&mut buf[..]).into())
                .expect("seal");
            black_box(tag)
        })
    });
    let plaintext = vec![0x5a; SIZE];
    let context = ctx("acme");
    for (name, provider) in &providers {
        for own in [false, true] {
            let sealer = sealer_on(provider, own, Duration::from_secs(300));
            let name = if own {
                format!("{name}_own")
            } else {
                name.to_string()
            };
            let tenant = runtime.block_on(sealer.tenant("acme")).expect("tenant");
            group.bench_function(format!("{name}/tenant_handle"), |b| {
                b.iter(|| tenant.seal(&context, black_box(&plaintext)).expect("seal"))
            });
            group.bench_function(format!("{name}/sealer_async"), |b| {
                b.iter(|| {
                    runtime
                        .block_on(sealer.seal(&context, black_box(&plaintext)))
                        .expect("seal")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
