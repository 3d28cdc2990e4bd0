//! `SealedColumns::reseal` of 100,000 rows on PostgreSQL, against the
//! database's own floor in the same run: a plain batched UPDATE rewriting the
//! same number of bytes per row, in batches of the same size.
//!
//! Run: `FIELDSEAL_TEST_POSTGRES_URL=postgres://… cargo bench --bench reseal --all-features`
//! (`FIELDSEAL_BENCH_ROWS` to change the row count.)
//!
//! - **Floor**: batches of 500 rows read by keyset (`SELECT id, token … WHERE
//!   id > $last ORDER BY id LIMIT 500`), each rewritten with 246 new random
//!   bytes (the size of a sealed 192-byte token) by one `UPDATE … FROM (VALUES
//!   …)` in its own transaction. No encryption, no compare-and-swap, no job
//!   bookkeeping.
//! - **reseal**: the job as the runner runs it, with 1, 2 and 4 workers: the
//!   job tables and leased ranges, open and seal of each value (under the
//!   tenant's new primary), one compare-and-swap UPDATE per batch in a
//!   transaction with the range's progress. Every round starts from all rows
//!   under an older version (a rotation per round, not timed).
//! - **AEAD floor**: a bare AES-256-GCM seal of the same 192 bytes with a
//!   fixed key, 100,000 times, for scale.
//!
//! Three rounds each, medians reported.

mod common;

use std::time::{Duration, Instant};

use common::{PgSchema, aead_floor};
use fieldseal::{
    Context, LocalKeyProvider, RootKey, Sealer, SqlKeyStore,
    jobs::{ColumnForm, ColumnSpec, JobOptions, KeyType, SealedColumns, TableSpec},
};
use sqlx::PgPool;

const ROUNDS: usize = 3;
const BATCH: usize = 500;
const TENANTS: usize = 10;
const TOKEN: usize = 192;

fn tenant(id: i64) -> String {
    format!("tenant-{:02}", id as usize % TENANTS)
}

fn ctx(id: i64) -> Context {
    Context::builder(tenant(id), "bench_reseal", "token")
        .row(id)
        .build()
        .expect("context")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn fill(pool: &PgPool, sealer: &Sealer, rows: i64) {
    sqlx::query(
        "CREATE TABLE bench_reseal (id BIGINT PRIMARY KEY, tenant TEXT NOT NULL, token BYTEA NOT NULL)",
    )
    .execute(pool)
    .await
    .expect("create");
    let mut handles = Vec::new();
    for t in 0..TENANTS {
        handles.push(
            sealer
                .tenant(&format!("tenant-{t:02}"))
                .await
                .expect("tenant"),
        );
    }
    for chunk in (0..rows).collect::<Vec<_>>().chunks(2000) {
        let (mut ids, mut tenants, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for &id in chunk {
            let mut token = format!("1//0g{id:08}-").into_bytes();
            token.resize(TOKEN, b'x');
            let sealed = handles[id as usize % TENANTS]
                .seal(&ctx(id), &token)
                .expect("seal");
            ids.push(id);
            tenants.push(tenant(id));
            values.push(sealed.as_bytes().to_vec());
        }
        sqlx::query(
            "INSERT INTO bench_reseal SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bytea[])",
        )
        .bind(&ids)
        .bind(&tenants)
        .bind(&values)
        .execute(pool)
        .await
        .expect("insert");
    }
}

/// The floor: read by keyset, rewrite each batch with as many new bytes.
async fn floor(pool: &PgPool, value_len: usize) -> Duration {
    let start = Instant::now();
    let mut last = -1i64;
    loop {
        let ids: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT id, token FROM bench_reseal WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(last)
                .bind(BATCH as i64)
                .fetch_all(pool)
                .await
                .expect("select");
        let Some(&(max, _)) = ids.last() else {
            break;
        };
        let keys: Vec<i64> = ids.iter().map(|(id, _)| *id).collect();
        let values: Vec<Vec<u8>> = ids
            .iter()
            .map(|_| (0..value_len).map(|_| rand::random::<u8>()).collect())
            .collect();
        let mut tx = pool.begin().await.expect("begin");
        sqlx::query(
            "UPDATE bench_reseal AS t SET token = v.n FROM UNNEST($1::bigint[], $2::bytea[]) \
             AS v(k, n) WHERE t.id = v.k",
        )
        .bind(&keys)
        .bind(&values)
        .execute(&mut *tx)
        .await
        .expect("update");
        tx.commit().await.expect("commit");
        last = max;
        if ids.len() < BATCH {
            break;
        }
    }
    start.elapsed()
}

async fn bench(url: &str, rows: i64) {
    let pg = PgSchema::create(url, 8).await;
    let (pool, schema) = (pg.pool.clone(), pg.name.clone());
    let store = SqlKeyStore::new(pool.clone())
        .with_schema(&schema)
        .expect("schema name");
    store.migrate().await.expect("migrate");
    let sealer = Sealer::builder(
        LocalKeyProvider::new("bench", RootKey::from_bytes(&mut [3; 32])).expect("provider"),
        store,
    )
    .cache_ttl(Duration::from_millis(1))
    .build();
    fill(&pool, &sealer, rows).await;
    let value_len: i32 = sqlx::query_scalar("SELECT length(token) FROM bench_reseal LIMIT 1")
        .fetch_one(&pool)
        .await
        .expect("length");
    let columns = SealedColumns::new(
        pool.clone(),
        sealer.clone(),
        vec![
            TableSpec::new("bench_reseal", "id", KeyType::Integer)
                .tenant_column("tenant")
                .column(ColumnSpec::new("token", ColumnForm::Binary)),
        ],
    )
    .expect("spec")
    .with_job_tables("fieldseal_", Some(&schema))
    .expect("job tables");
    columns.check().await.expect("check");

    let mut floors = Vec::new();
    let mut reseals: [Vec<Duration>; 3] = Default::default();
    for _ in 0..ROUNDS {
        floors.push(floor(&pool, value_len as usize).await);
        // The floor rewrote the tokens with random bytes: seal them again.
        sqlx::query("DROP TABLE bench_reseal")
            .execute(&pool)
            .await
            .expect("drop");
        fill(&pool, &sealer, rows).await;
        for (i, workers) in [1usize, 2, 4].into_iter().enumerate() {
            for t in 0..TENANTS {
                sealer
                    .admin()
                    .rotate(&format!("tenant-{t:02}"))
                    .await
                    .expect("rotate");
            }
            let mut options = JobOptions::default();
            options.batch = BATCH;
            options.workers = workers;
            let start = Instant::now();
            let report = columns.reseal(&options).await.expect("reseal");
            reseals[i].push(start.elapsed());
            let totals = report.totals();
            assert_eq!(totals.written, rows as u64, "every row re-sealed");
            assert_eq!(totals.failed, 0);
        }
    }
    let aead = aead_floor(TOKEN, u64::try_from(rows).expect("rows"));
    let floor = median(floors);
    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    println!(
        "PostgreSQL (loopback), {rows} rows of a {value_len}-byte sealed token, batches of {BATCH}, median of {ROUNDS}:"
    );
    println!(
        "  floor: batched UPDATE of the same bytes     {floor:>10.2?}  {:>9.0} rows/s",
        rate(floor)
    );
    for (i, workers) in [1, 2, 4].into_iter().enumerate() {
        let d = median(std::mem::take(&mut reseals[i]));
        println!(
            "  reseal, {workers} worker{}                          {d:>10.2?}  {:>9.0} rows/s  ratio {:.2}x",
            if workers == 1 { " " } else { "s" },
            rate(d),
            d.as_secs_f64() / floor.as_secs_f64()
        );
    }
    println!(
        "  AEAD floor: bare AES-256-GCM seal of {TOKEN} B x {rows}  {aead:>10.2?}  ({:.0} ns per value)",
        aead.as_nanos() as f64 / rows as f64
    );
    pg.drop().await;
}

fn main() {
    let rows: i64 = std::env::var("FIELDSEAL_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match std::env::var("FIELDSEAL_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => bench(&url, rows).await,
            _ => println!("reseal: skipped (FIELDSEAL_TEST_POSTGRES_URL is not set)"),
        }
    });
}
