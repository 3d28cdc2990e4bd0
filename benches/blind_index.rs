//! Looking one row up by blind index among 100,000, against a plaintext
//! equality lookup on an indexed column of the same rows, in the same run.
//!
//! Run: `FIELDSEAL_TEST_POSTGRES_URL=postgres://… cargo bench --all-features --bench blind_index`
//! (without the variable only the CPU-side benches run).
//!
//! The table holds 100,000 rows of one tenant whose key was rotated once,
//! with half of the rows re-sealed: a search queries two index values, as it
//! does through every rotation. Each lookup picks the next of 1,000 random
//! addresses, so the database's caches are as warm for one variant as for
//! the other.
//!
//! - `floor/aes256gcm_seal/256`: a bare AES-256-GCM seal with a fixed key.
//! - `search_terms`: the index values of one address under both versions
//!   (normalise, derive two index keys, two HMACs), no I/O.
//! - `plaintext_lookup`: `WHERE tenant_id = $1 AND email_plain = $2` on a
//!   B-tree index, returning the address.
//! - `blind_lookup_any`: `search`, then `WHERE tenant_id = $1 AND email_idx =
//!   ANY($2)` on a B-tree index, then `open_matches` on the candidate.
//! - `blind_lookup_in`: the same with `IN (…)` built by `push_values`.

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aes_gcm::aead::{AeadInOut as _, KeyInit as _};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fieldseal::{
    Context, LocalKeyProvider, RootKey, SealedValue, Sealer, SqlKeyStore,
    blind_index::{BlindIndex, Normalizer},
};

const ROWS: i64 = 100_000;
const PROBES: usize = 1_000;

fn email(id: i64) -> String {
    format!("user{id:06}.{:x}@example.com", id.wrapping_mul(0x9e37_79b9))
}

fn floor(c: &mut Criterion) {
    let mut group = c.benchmark_group("floor");
    let cipher = aes_gcm::Aes256Gcm::new(&[7u8; 32].into());
    let nonce = [9u8; 12];
    let mut buf = vec![0u8; 256];
    group.throughput(Throughput::Bytes(256));
    group.bench_function("aes256gcm_seal/256", |b| {
        b.iter(|| {
            let tag = cipher
                .encrypt_inout_detached((&nonce).into(), b"ctx", black_box(&mut buf[..]).into())
                .expect("seal");
            black_box(tag)
        })
    });
    group.finish();
}

fn lookups(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let index = BlindIndex::builder("users", "email", "email_idx")
        .normalizer(Normalizer::email())
        .build()
        .expect("index");
    let template = Context::builder("acme", "users", "email")
        .template()
        .expect("template");

    // CPU only: the index values of one address under two versions.
    let (sealer, _store) = runtime.block_on(async {
        let sealer = Sealer::builder(
            LocalKeyProvider::new("bench", RootKey::from_bytes(&mut [3; 32])).expect("provider"),
            fieldseal::MemoryKeyStore::new(),
        )
        .build();
        sealer.tenant("acme").await.expect("tenant");
        sealer.admin().rotate("acme").await.expect("rotate");
        (sealer, ())
    });
    let tenant = runtime.block_on(sealer.tenant("acme")).expect("tenant");
    c.bench_function("search_terms", |b| {
        b.iter(|| {
            black_box(
                tenant
                    .search(&index, b"User000042@Example.com")
                    .expect("search"),
            )
        })
    });

    let Ok(url) = std::env::var("FIELDSEAL_TEST_POSTGRES_URL") else {
        eprintln!("skipping the PostgreSQL lookups: FIELDSEAL_TEST_POSTGRES_URL is not set");
        return;
    };
    let (pg, pool, sealer) = runtime.block_on(async {
        let pg = common::PgSchema::create(&url, 4).await;
        let pool = pg.pool.clone();
        let store = SqlKeyStore::new(pool.clone())
            .with_schema(&pg.name)
            .expect("store");
        store.migrate().await.expect("migrate");
        let sealer = Sealer::builder(
            LocalKeyProvider::new("bench", RootKey::from_bytes(&mut [3; 32])).expect("provider"),
            store,
        )
        .build();
        (pg, pool, sealer)
    });

    runtime.block_on(async {
        sqlx::raw_sql(
            "CREATE TABLE users (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, \
             email BYTEA NOT NULL, email_idx BYTEA NOT NULL, email_plain TEXT NOT NULL)",
        )
        .execute(&pool)
        .await
        .expect("table");
        let v1 = sealer.tenant("acme").await.expect("tenant");
        sealer.admin().rotate("acme").await.expect("rotate");
        let v2 = sealer.tenant("acme").await.expect("tenant");
        for start in (0..ROWS).step_by(5_000) {
            let (mut ids, mut sealed, mut idx, mut plain) = (vec![], vec![], vec![], vec![]);
            for id in start..start + 5_000 {
                // Even rows re-sealed under version 2, odd ones still under 1.
                let t = if id % 2 == 0 { &v2 } else { &v1 };
                let address = email(id);
                sealed.push(
                    t.seal_row(&template, id, address.as_bytes())
                        .expect("seal")
                        .as_bytes()
                        .to_vec(),
                );
                idx.push(
                    t.blind_index(&index, address.as_bytes())
                        .expect("index")
                        .as_bytes()
                        .to_vec(),
                );
                ids.push(id);
                plain.push(address);
            }
            sqlx::query(
                "INSERT INTO users SELECT u.id, 'acme', u.e, u.i, u.p \
                 FROM UNNEST($1::BIGINT[], $2::BYTEA[], $3::BYTEA[], $4::TEXT[]) AS u(id, e, i, p)",
            )
            .bind(&ids)
            .bind(&sealed)
            .bind(&idx)
            .bind(&plain)
            .execute(&pool)
            .await
            .expect("insert");
        }
        for sql in [
            "CREATE INDEX users_email_idx ON users (tenant_id, email_idx)",
            "CREATE INDEX users_email_plain ON users (tenant_id, email_plain)",
            "VACUUM ANALYZE users",
        ] {
            sqlx::raw_sql(sql).execute(&pool).await.expect("index");
        }
    });

    let probes: Vec<i64> = (0..PROBES).map(|_| rand::random_range(0..ROWS)).collect();
    let next = AtomicUsize::new(0);
    let probe = || probes[next.fetch_add(1, Ordering::Relaxed) % PROBES];

    let mut group = c.benchmark_group("lookup_100k");
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("plaintext_lookup", |b| {
        b.iter(|| {
            let id = probe();
            runtime.block_on(async {
                let row: (i64, String) = sqlx::query_as(
                    "SELECT id, email_plain FROM users WHERE tenant_id = $1 AND email_plain = $2",
                )
                .bind("acme")
                .bind(email(id))
                .fetch_one(&pool)
                .await
                .expect("row");
                assert_eq!(row.0, id);
            })
        })
    });
    group.bench_function("blind_lookup_any", |b| {
        b.iter(|| {
            let id = probe();
            runtime.block_on(async {
                let tenant = sealer.tenant("acme").await.expect("tenant");
                let search = tenant.search(&index, email(id).as_bytes()).expect("search");
                let rows: Vec<(i64, SealedValue)> = sqlx::query_as(
                    "SELECT id, email FROM users WHERE tenant_id = $1 AND email_idx = ANY($2)",
                )
                .bind("acme")
                .bind(search.values())
                .fetch_all(&pool)
                .await
                .expect("rows");
                let found = tenant.open_matches(&search, &template, rows).expect("open");
                assert_eq!(found.len(), 1);
                assert_eq!(found[0].0, id);
            })
        })
    });
    group.bench_function("blind_lookup_in", |b| {
        b.iter(|| {
            let id = probe();
            runtime.block_on(async {
                let tenant = sealer.tenant("acme").await.expect("tenant");
                let search = tenant.search(&index, email(id).as_bytes()).expect("search");
                let mut query =
                    sqlx::QueryBuilder::new("SELECT id, email FROM users WHERE tenant_id = ");
                query.push_bind("acme").push(" AND email_idx IN ");
                search.push_values(&mut query);
                let rows: Vec<(i64, SealedValue)> =
                    query.build_query_as().fetch_all(&pool).await.expect("rows");
                let found = tenant.open_matches(&search, &template, rows).expect("open");
                assert_eq!(found.len(), 1);
            })
        })
    });
    group.finish();

    runtime.block_on(async {
        pool.close().await;
        pg.drop().await;
    });
}

criterion_group!(benches, floor, lookups);
criterion_main!(benches);
