//! Writing and reading 10,000 sealed rows against the same rows with a
//! plaintext column, in the same run: the encryption must disappear next to
//! the database.
//!
//! Run: `cargo bench --bench sql_rows --all-features`
//! (PostgreSQL is measured when `FIELDSEAL_TEST_POSTGRES_URL` is set.)
//!
//! Each round, with the order of the variants rotating:
//!
//! - **INSERT, one per row**: 10,000 single-row INSERTs in one transaction
//!   (the database as fast as it gets per row, the encryption as visible as
//!   it gets). Sealed with a context built per row.
//! - **INSERT, 500 rows per statement**: multi-row INSERTs in one
//!   transaction, sealed through a context template, on the calling thread
//!   (`seal_rows`) or on a 2-thread rayon pool (`par_seal_rows`).
//! - **SELECT by id, one per row**: how an application reads a credential;
//!   opened through a template (`open_row`).
//! - **SELECT all**: one SELECT of the 10,000 rows (`fetch_all`), then every
//!   value opened through a template: on the calling thread (`open_rows`), or
//!   on a rayon pool of 1 or 2 threads (`par_open_rows`); or streamed
//!   (`fetch`), each chunk of 500 rows handed to a 2-thread pool with
//!   `spawn_open_rows` and opened while the next rows arrive.
//!
//! Five rounds; medians reported, with their ratio to the plaintext variant.

mod common;

use std::time::{Duration, Instant};

use fieldseal::{
    Context, ContextTemplate, LocalKeyProvider, RootKey, SealedValue, Sealer, SqlKeyStore,
    TenantSealer,
};
use futures_util::TryStreamExt as _;
use sqlx::{Pool, QueryBuilder};

const ROWS: i64 = 10_000;
const BATCH: usize = 500;
const ROUNDS: usize = 5;
/// Rows per chunk handed to the pool by the streamed variant.
const STREAM_CHUNK: usize = 500;

fn token(id: i64) -> Vec<u8> {
    let mut t = format!("1//0g{id:08}-").into_bytes();
    t.resize(200, b'x');
    t
}

fn ctx(id: i64) -> Context {
    Context::builder("acme", "bench_sealed", "token")
        .row(id)
        .build()
        .expect("context")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Timings of one operation: the plaintext variant first, then the sealed ones.
struct Op {
    name: &'static str,
    variants: Vec<(&'static str, Vec<Duration>)>,
}

impl Op {
    fn new(name: &'static str, variants: &[&'static str]) -> Self {
        Self {
            name,
            variants: variants.iter().map(|v| (*v, Vec::new())).collect(),
        }
    }
}

fn report(db: &str, ops: Vec<Op>) {
    println!("{db} (10,000 rows, median of {ROUNDS}):");
    for op in ops {
        println!("  {}", op.name);
        let mut plain = None;
        for (variant, times) in op.variants {
            let m = median(times);
            let base = *plain.get_or_insert(m);
            println!(
                "    {variant:<38} {m:>10.2?}  ratio {:.2}x",
                m.as_secs_f64() / base.as_secs_f64()
            );
        }
    }
}

fn thread_pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool")
}

macro_rules! run_backend {
    ($pool:expr, $db:ty, $bytes:literal, $ph:expr, $id_ph:expr) => {{
        let pool: Pool<$db> = $pool;
        let store = SqlKeyStore::new(pool.clone());
        store.migrate().await.expect("migrate");
        let sealer = Sealer::builder(
            LocalKeyProvider::new("bench", RootKey::from_bytes(&mut [3; 32])).expect("provider"),
            store,
        )
        .build();
        let tenant: TenantSealer = sealer.tenant("acme").await.expect("tenant");
        let template: ContextTemplate = Context::builder("acme", "bench_sealed", "token")
            .template()
            .expect("template");
        let (one, two) = (thread_pool(1), thread_pool(2));
        for table in ["bench_plain", "bench_sealed"] {
            sqlx::query::<$db>(sqlx::AssertSqlSafe(format!(
                "CREATE TABLE {table} (id BIGINT NOT NULL PRIMARY KEY, tenant VARCHAR(64) NOT NULL, token {} NOT NULL)",
                $bytes
            )))
            .execute(&pool)
            .await
            .expect("create");
        }
        let clear = || async {
            for table in ["bench_plain", "bench_sealed"] {
                sqlx::query::<$db>(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                    .execute(&pool)
                    .await
                    .expect("delete");
            }
        };
        let plain: Vec<(i64, Vec<u8>)> = (0..ROWS).map(|id| (id, token(id))).collect();
        let mut single = Op::new("INSERT, one per row", &["plaintext", "sealed, context per row"]);
        let mut multi = Op::new(
            "INSERT, 500 rows per statement",
            &["plaintext", "sealed, template, seal_rows", "sealed, template, par_seal_rows (2 threads)"],
        );
        let mut by_id = Op::new("SELECT by id + open, one per row", &["plaintext", "sealed, open_row"]);
        let mut all = Op::new(
            "SELECT all rows + open",
            &[
                "plaintext",
                "sealed, context per row, open",
                "sealed, template, open_rows",
                "sealed, par_open_rows, 1 thread",
                "sealed, par_open_rows, 2 threads",
                "sealed, streamed, chunks on 2 threads",
                "sealed, SELECT only (none opened)",
            ],
        );
        for round in 0..ROUNDS {
            // One row per INSERT.
            clear().await;
            for v in rotate(2, round) {
                let table = ["bench_plain", "bench_sealed"][v];
                let sql = sqlx::AssertSqlSafe(format!("INSERT INTO {table} (id, tenant, token) VALUES {}", $ph));
                let start = Instant::now();
                let mut tx = pool.begin().await.expect("begin");
                for (id, token) in &plain {
                    let query = sqlx::query::<$db>(sqlx::AssertSqlSafe(sql.0.clone())).bind(*id).bind("acme");
                    let query = if v == 0 {
                        query.bind(token)
                    } else {
                        query.bind(tenant.seal(&ctx(*id), token).expect("seal"))
                    };
                    query.execute(&mut *tx).await.expect("insert");
                }
                tx.commit().await.expect("commit");
                single.variants[v].1.push(start.elapsed());
            }
            // Multi-row INSERTs; each variant starts from empty tables.
            for v in rotate(3, round) {
                clear().await;
                let table = if v == 0 { "bench_plain" } else { "bench_sealed" };
                let start = Instant::now();
                let mut tx = pool.begin().await.expect("begin");
                for chunk in plain.chunks(BATCH) {
                    let mut query = QueryBuilder::<$db>::new(format!("INSERT INTO {table} (id, tenant, token) "));
                    if v == 0 {
                        query.push_values(chunk, |mut b, (id, token)| {
                            b.push_bind(*id).push_bind("acme").push_bind(token);
                        });
                    } else {
                        let sealed: Vec<SealedValue> = if v == 1 {
                            tenant.seal_rows(&template, chunk).collect::<Result<_, _>>().expect("seal")
                        } else {
                            two.install(|| tenant.par_seal_rows(&template, chunk))
                                .into_iter()
                                .collect::<Result<_, _>>()
                                .expect("seal")
                        };
                        query.push_values(chunk.iter().zip(sealed), |mut b, ((id, _), sealed)| {
                            b.push_bind(*id).push_bind("acme").push_bind(sealed);
                        });
                    }
                    query.build().execute(&mut *tx).await.expect("insert");
                }
                tx.commit().await.expect("commit");
                multi.variants[v].1.push(start.elapsed());
            }
            // Both tables full again for the reads.
            clear().await;
            for table in ["bench_plain", "bench_sealed"] {
                let mut tx = pool.begin().await.expect("begin");
                for chunk in plain.chunks(BATCH) {
                    let mut query = QueryBuilder::<$db>::new(format!("INSERT INTO {table} (id, tenant, token) "));
                    if table == "bench_plain" {
                        query.push_values(chunk, |mut b, (id, token)| {
                            b.push_bind(*id).push_bind("acme").push_bind(token);
                        });
                    } else {
                        query.push_values(chunk, |mut b, (id, token)| {
                            b.push_bind(*id).push_bind("acme").push_bind(tenant.seal_row(&template, id, token).expect("seal"));
                        });
                    }
                    query.build().execute(&mut *tx).await.expect("insert");
                }
                tx.commit().await.expect("commit");
            }
            for v in rotate(2, round) {
                let table = ["bench_plain", "bench_sealed"][v];
                let sql = format!("SELECT token FROM {table} WHERE id = {}", $id_ph);
                let start = Instant::now();
                for id in 0..ROWS {
                    if v == 0 {
                        let token: Vec<u8> = sqlx::query_scalar::<$db, Vec<u8>>(sqlx::AssertSqlSafe(sql.clone()))
                            .bind(id)
                            .fetch_one(&pool)
                            .await
                            .expect("select");
                        std::hint::black_box(token);
                    } else {
                        let sealed: SealedValue = sqlx::query_scalar::<$db, SealedValue>(sqlx::AssertSqlSafe(sql.clone()))
                            .bind(id)
                            .fetch_one(&pool)
                            .await
                            .expect("select");
                        std::hint::black_box(tenant.open_row(&template, id, &sealed).expect("open"));
                    }
                }
                by_id.variants[v].1.push(start.elapsed());
            }
            for v in rotate(7, round) {
                let table = if v == 0 { "bench_plain" } else { "bench_sealed" };
                let sql = sqlx::AssertSqlSafe(format!("SELECT id, token FROM {table}"));
                let start = Instant::now();
                if v == 0 {
                    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as::<$db, (i64, Vec<u8>)>(sql)
                        .fetch_all(&pool)
                        .await
                        .expect("select");
                    assert_eq!(rows.len() as i64, ROWS);
                    std::hint::black_box(rows);
                } else if v == 5 {
                    // Chunks of the row stream are opened on the pool while
                    // the next rows arrive; results are gathered in order.
                    let mut stream = sqlx::query_as::<$db, (i64, SealedValue)>(sql).fetch(&pool);
                    let mut pending = Vec::new();
                    let mut chunk = Vec::with_capacity(STREAM_CHUNK);
                    while let Some(row) = stream.try_next().await.expect("row") {
                        chunk.push(row);
                        if chunk.len() == STREAM_CHUNK {
                            let rows = std::mem::replace(&mut chunk, Vec::with_capacity(STREAM_CHUNK));
                            pending.push(two.install(|| tenant.spawn_open_rows(&template, rows)));
                        }
                    }
                    drop(stream);
                    let mut opened = Vec::with_capacity(ROWS as usize);
                    for chunk in pending {
                        opened.extend(chunk.await);
                    }
                    opened.extend(tenant.open_rows(&template, &chunk));
                    assert_eq!(opened.len() as i64, ROWS);
                    assert!(opened.iter().all(Result::is_ok));
                    std::hint::black_box(opened);
                } else {
                    let rows: Vec<(i64, SealedValue)> = sqlx::query_as::<$db, (i64, SealedValue)>(sql)
                        .fetch_all(&pool)
                        .await
                        .expect("select");
                    assert_eq!(rows.len() as i64, ROWS);
                    if v == 6 {
                        std::hint::black_box(rows);
                        all.variants[v].1.push(start.elapsed());
                        continue;
                    }
                    let opened: Vec<_> = match v {
                        1 => rows.iter().map(|(id, sealed)| tenant.open(&ctx(*id), sealed)).collect(),
                        2 => tenant.open_rows(&template, &rows).collect(),
                        3 => one.install(|| tenant.par_open_rows(&template, &rows)),
                        _ => two.install(|| tenant.par_open_rows(&template, &rows)),
                    };
                    assert!(opened.iter().all(Result::is_ok));
                    std::hint::black_box(opened);
                }
                all.variants[v].1.push(start.elapsed());
            }
        }
        vec![single, multi, by_id, all]
    }};
}

/// The variants `0..n` in an order that rotates with the round.
fn rotate(n: usize, round: usize) -> Vec<usize> {
    (0..n).map(|i| (i + round) % n).collect()
}

async fn sqlite() -> Vec<Op> {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.expect("sqlite");
    run_backend!(pool, sqlx::Sqlite, "BLOB", "(?, ?, ?)", "?")
}

async fn postgres(url: &str) -> Vec<Op> {
    let pg = common::PgSchema::create(url, 2).await;
    let pool = pg.pool.clone();
    let t = run_backend!(pool.clone(), sqlx::Postgres, "BYTEA", "($1, $2, $3)", "$1");
    pg.drop().await;
    t
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        report("SQLite (file)", sqlite().await);
        match std::env::var("FIELDSEAL_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => report("PostgreSQL (loopback)", postgres(&url).await),
            _ => println!("PostgreSQL: skipped (FIELDSEAL_TEST_POSTGRES_URL is not set)"),
        }
    });
}
