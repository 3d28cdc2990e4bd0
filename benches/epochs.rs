//! A root-key epoch over many tenants: `KeyAdmin::create_root_key`, then
//! `KeyAdmin::rewrap_all` moving every live key version under the new root
//! key, on the SQLite key store (the embedded default) and, when
//! `FIELDSEAL_TEST_POSTGRES_URL` is set, on PostgreSQL.
//!
//! Run: `cargo bench --all-features --bench epochs` (with
//! `FIELDSEAL_TEST_POSTGRES_URL=postgres://…` for PostgreSQL too;
//! `FIELDSEAL_BENCH_TENANTS` to change the tenant count, 100,000 by default,
//! and `FIELDSEAL_BENCH_ROUNDS` the number of epochs, 3 by default).
//!
//! - **Epoch re-wrap**: every tenant has one key version, one in a hundred a
//!   second one (rotated), each with sealed values; the provider (local key
//!   files in a directory, one per epoch) counts its calls. Reported: the
//!   time, keys per second and provider calls per live key version (one
//!   unwrap and one wrap each, never one per value). Medians over the epochs.
//! - **Warm seal and open** of 256 bytes with a cached key, before the first
//!   epoch and after the last, against the AEAD floor (the fastest of five
//!   batches of 20,000 each, the three taken in turns).
//! - **AEAD floor**: a bare AES-256-GCM seal with a fixed key, of 256 bytes,
//!   and of 32 bytes as many times as there are live key versions (a wrap
//!   under a local root key is one such seal).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fieldseal::{
    Context, Error, LocalKeyProvider, RootKey, Sealer, SqlKeyStore, Timestamp, async_trait,
    provider::{KeyProvider, TenantKey, WrapContext, WrappedKey},
    store::KeyStore,
};

use common::{PgSchema, aead_floor};

const VALUES_PER_TENANT: usize = 3;
/// Warm operations per batch, and batches (the fastest batch counts).
const WARM_OPS: u32 = 20_000;
const WARM_BATCHES: usize = 5;

/// The key-directory provider, counting its calls.
#[derive(Debug)]
struct Counted {
    inner: LocalKeyProvider,
    wraps: Arc<AtomicU64>,
    unwraps: Arc<AtomicU64>,
}

#[async_trait]
impl KeyProvider for Counted {
    fn current_root_key_id(&self) -> &str {
        self.inner.current_root_key_id()
    }

    fn root_key_ids(&self) -> Vec<&str> {
        self.inner.root_key_ids()
    }

    async fn wrap(&self, key: &TenantKey, ctx: &WrapContext<'_>) -> Result<WrappedKey, Error> {
        self.wraps.fetch_add(1, Ordering::Relaxed);
        self.inner.wrap(key, ctx).await
    }

    async fn unwrap(&self, w: &WrappedKey, ctx: &WrapContext<'_>) -> Result<TenantKey, Error> {
        self.unwraps.fetch_add(1, Ordering::Relaxed);
        self.inner.unwrap(w, ctx).await
    }

    async fn create_root_key(&self) -> Result<String, Error> {
        self.inner.create_root_key().await
    }

    async fn destroy_root_key(&self, id: &str) -> Result<Timestamp, Error> {
        self.inner.destroy_root_key(id).await
    }
}

struct Counters {
    wraps: Arc<AtomicU64>,
    unwraps: Arc<AtomicU64>,
}

impl Counters {
    fn provider(&self, dir: &Path) -> Counted {
        Counted {
            inner: LocalKeyProvider::from_dir(dir, "root").expect("key directory"),
            wraps: Arc::clone(&self.wraps),
            unwraps: Arc::clone(&self.unwraps),
        }
    }

    fn take(&self) -> (u64, u64) {
        (
            self.unwraps.swap(0, Ordering::Relaxed),
            self.wraps.swap(0, Ordering::Relaxed),
        )
    }
}

fn ctx(tenant: usize, row: usize) -> Context {
    Context::builder(format!("tenant-{tenant:06}"), "accounts", "refresh_token")
        .row(i64::try_from(row).expect("row"))
        .build()
        .expect("context")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Seal and open of 256 bytes under one cached key, and the AEAD floor of
/// 256 bytes, per operation: the fastest of a few batches each, taken in
/// turns.
async fn warm(sealer: &Sealer) -> (Duration, Duration, Duration) {
    let c = ctx(0, 0);
    let value = sealer.seal(&c, &[1u8; 256]).await.expect("seal");
    let _ = sealer.open(&c, &value).await.expect("open");
    let (mut seal, mut open, mut floor) = (Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..WARM_BATCHES {
        let start = Instant::now();
        for _ in 0..WARM_OPS {
            std::hint::black_box(sealer.seal(&c, &[1u8; 256]).await.expect("seal"));
        }
        seal = seal.min(start.elapsed() / WARM_OPS);
        let start = Instant::now();
        for _ in 0..WARM_OPS {
            std::hint::black_box(sealer.open(&c, &value).await.expect("open"));
        }
        open = open.min(start.elapsed() / WARM_OPS);
        floor = floor.min(aead_floor(256, u64::from(WARM_OPS)) / WARM_OPS);
    }
    (seal, open, floor)
}

async fn bench<S>(name: &str, store: S, tenants: usize, rounds: usize)
where
    S: KeyStore + Clone + 'static,
{
    let dir = tempfile::tempdir().expect("tempdir");
    RootKey::create_file(dir.path().join("root-e1.key")).expect("key file");
    let counters = Counters {
        wraps: Arc::default(),
        unwraps: Arc::default(),
    };
    let sealer = Sealer::builder(counters.provider(dir.path()), store.clone()).build();

    // Tenants, their values, and one rotation in a hundred.
    let start = Instant::now();
    let mut handles = Vec::new();
    let workers = 8;
    for w in 0..workers {
        let sealer = sealer.clone();
        handles.push(tokio::spawn(async move {
            for t in (w..tenants).step_by(workers) {
                for v in 0..VALUES_PER_TENANT {
                    sealer.seal(&ctx(t, v), b"token").await.expect("seal");
                }
                if t % 100 == 0 {
                    let tenant = format!("tenant-{t:06}");
                    sealer.admin().rotate(&tenant).await.expect("rotate");
                }
            }
        }));
    }
    for h in handles {
        h.await.expect("fill");
    }
    let versions = tenants + tenants.div_ceil(100);
    println!(
        "{name}: {tenants} tenants, {versions} live key versions, {} values, made in {:.1?}",
        tenants * VALUES_PER_TENANT,
        start.elapsed()
    );
    let _ = counters.take();
    let (seal_before, open_before, floor_before) = warm(&sealer).await;

    let mut times = Vec::new();
    let mut calls = Vec::new();
    let mut sealer = sealer;
    for _ in 0..rounds {
        let new = sealer.admin().create_root_key().await.expect("new epoch");
        sealer = Sealer::builder(counters.provider(dir.path()), store.clone()).build();
        let _ = counters.take();
        let start = Instant::now();
        let report = sealer.admin().rewrap_all(&new).await.expect("rewrap");
        times.push(start.elapsed());
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(report.rewrapped as usize, versions, "{report:?}");
        calls.push(counters.take());
    }
    let (seal_after, open_after, floor_after) = warm(&sealer).await;
    let floor_wrap = aead_floor(32, u64::try_from(versions).expect("versions"));

    let time = median(times.clone());
    let (unwraps, wraps) = calls[calls.len() / 2];
    println!(
        "  epoch re-wrap: {time:.2?} (rounds {times:.2?}), {:.0} keys/s",
        versions as f64 / time.as_secs_f64()
    );
    println!(
        "  provider calls: {unwraps} unwraps + {wraps} wraps for {versions} live key versions \
         (+ the audit-chain key) and {} values: {:.3} per live version",
        tenants * VALUES_PER_TENANT,
        (unwraps + wraps) as f64 / versions as f64
    );
    println!(
        "  AEAD floor: bare AES-256-GCM seal of 32 B x {versions}: {floor_wrap:.2?} ({:.4}x of \
         the re-wrap)",
        floor_wrap.as_secs_f64() / time.as_secs_f64()
    );
    let ns = |d: Duration| d.as_secs_f64() * 1e9;
    for (when, seal, open, floor) in [
        ("before the epochs", seal_before, open_before, floor_before),
        ("after the epochs", seal_after, open_after, floor_after),
    ] {
        println!(
            "  warm 256 B {when}: floor {:.0} ns, seal {:.0} ns ({:.2}x), open {:.0} ns ({:.2}x)",
            ns(floor),
            ns(seal),
            ns(seal) / ns(floor),
            ns(open),
            ns(open) / ns(floor)
        );
    }
}

fn main() {
    let tenants: usize = std::env::var("FIELDSEAL_BENCH_TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rounds: usize = std::env::var("FIELDSEAL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("keys.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.expect("sqlite");
        let store = SqlKeyStore::new(pool.clone());
        store.migrate().await.expect("migrate");
        bench("SQLite", store, tenants, rounds).await;
        pool.close().await;

        match std::env::var("FIELDSEAL_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => {
                let schema = PgSchema::create(&url, 8).await;
                let store = SqlKeyStore::new(schema.pool.clone());
                store.migrate().await.expect("migrate");
                bench("PostgreSQL", store, tenants, rounds).await;
                schema.drop().await;
            }
            _ => println!("PostgreSQL: skipped (FIELDSEAL_TEST_POSTGRES_URL is not set)"),
        }
    });
}
