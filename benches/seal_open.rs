//! Seal and open with a cached tenant key, against the raw AEAD floor.
//!
//! Every group holds its floor in the same run: a bare AES-256-GCM (or
//! ChaCha20-Poly1305) seal with a fixed, already-initialised key. BENCHMARKS.md
//! reports fieldseal as a ratio to it.
//!
//! `seal`/`open` take a context built once (as a request handler holds one);
//! `seal_row`/`open_row` take a template and the row id, as bulk work does.
//!
//! Run: `cargo bench --bench seal_open`

use std::hint::black_box;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fieldseal::{
    Algorithm, Context, LocalKeyProvider, MemoryKeyStore, RootKey, Sealer, TenantSealer,
};

const SIZES: [usize; 3] = [32, 256, 4096];

fn tenant_sealer(algorithm: Algorithm) -> TenantSealer {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let provider =
            LocalKeyProvider::new("bench", RootKey::from_bytes(&mut [7; 32])).expect("provider");
        let sealer = Sealer::builder(provider, MemoryKeyStore::new())
            .algorithm(algorithm)
            .build();
        sealer.tenant("acme").await.expect("tenant")
    })
}

fn floor_aes(c: &mut Criterion) {
    let mut group = c.benchmark_group("floor");
    let aes = Aes256Gcm::new(&[1u8; 32].into());
    let chacha = ChaCha20Poly1305::new(&[1u8; 32].into());
    let nonce = [2u8; 12];
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0u8; size];
        group.bench_function(format!("aes256gcm_seal/{size}"), |b| {
            b.iter(|| {
                let tag = aes
                    .encrypt_inout_detached((&nonce).into(), b"ctx", black_box(&mut buf[..]).into())
                    .expect("seal");
                black_box(tag)
            })
        });
        group.bench_function(format!("chacha20poly1305_seal/{size}"), |b| {
            b.iter(|| {
                let tag = chacha
                    .encrypt_inout_detached((&nonce).into(), b"ctx", black_box(&mut buf[..]).into())
                    .expect("seal");
                black_box(tag)
            })
        });
    }
    group.finish();
}

fn fieldseal(c: &mut Criterion) {
    let ctx = Context::builder("acme", "integrations", "refresh_token")
        .row(123_456)
        .build()
        .expect("context");
    let template = Context::builder("acme", "integrations", "refresh_token")
        .template()
        .expect("template");
    for (name, algorithm) in [
        ("aes256gcm", Algorithm::Aes256Gcm),
        ("chacha20poly1305", Algorithm::ChaCha20Poly1305),
    ] {
        let tenant = tenant_sealer(algorithm);
        let mut group = c.benchmark_group(format!("fieldseal_{name}"));
        for size in SIZES {
            group.throughput(Throughput::Bytes(size as u64));
            let plaintext = vec![0x5a; size];
            group.bench_function(format!("seal/{size}"), |b| {
                b.iter(|| tenant.seal(&ctx, black_box(&plaintext)).expect("seal"))
            });
            let sealed = tenant.seal(&ctx, &plaintext).expect("seal");
            group.bench_function(format!("open/{size}"), |b| {
                b.iter(|| tenant.open(&ctx, black_box(&sealed)).expect("open"))
            });
            // The same row through a template: no context to build.
            group.bench_function(format!("seal_row/{size}"), |b| {
                b.iter(|| {
                    tenant
                        .seal_row(&template, black_box(123_456), black_box(&plaintext))
                        .expect("seal")
                })
            });
            group.bench_function(format!("open_row/{size}"), |b| {
                b.iter(|| {
                    tenant
                        .open_row(&template, black_box(123_456), black_box(&sealed))
                        .expect("open")
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, floor_aes, fieldseal);
criterion_main!(benches);
