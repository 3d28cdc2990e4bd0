//! Seal-and-INSERT and SELECT-and-open of 10,000 rows, against the same rows
//! with plaintext columns, in the same run: the encryption must disappear next
//! to the database.
//!
//! Run: `cargo bench --bench sql_rows --all-features`
//! (PostgreSQL is measured when `FIELDSEAL_TEST_POSTGRES_URL` is set.)
//!
//! Each variant inserts 10,000 rows of a 200-byte token, one INSERT per row,
//! inside one transaction (so the database is as fast as it gets and the
//! encryption as visible as it gets), then reads them back two ways: one
//! SELECT by primary key per row (how an application reads a token), and one
//! SELECT of all rows (how a batch job such as a re-sealing runner reads).
//! Sealed rows are sealed with a cached tenant key and the row's id in the
//! context (built per row), and opened after the SELECT. Five rounds, the
//! order of plaintext and sealed alternating; medians reported.

use std::time::{Duration, Instant};

use fieldseal::{
    Context, LocalKeyProvider, RootKey, SealedValue, Sealer, SqlKeyStore, TenantSealer,
};
use sqlx::Pool;

const ROWS: i64 = 10_000;
const ROUNDS: usize = 5;

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

#[derive(Default)]
struct Timings {
    insert: [Vec<Duration>; 2],
    by_id: [Vec<Duration>; 2],
    all: [Vec<Duration>; 2],
}

fn report(db: &str, t: Timings) {
    println!("{db} (10,000 rows, median of {ROUNDS}):");
    for (what, pair) in [
        ("seal + INSERT, one per row", t.insert),
        ("SELECT by id + open, one per row", t.by_id),
        ("SELECT all + open", t.all),
    ] {
        let [plain, sealed] = pair.map(median);
        println!(
            "  {what:<34} plaintext {plain:>10.2?}  sealed {sealed:>10.2?}  ratio {:.2}x",
            sealed.as_secs_f64() / plain.as_secs_f64()
        );
    }
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
        for table in ["bench_plain", "bench_sealed"] {
            sqlx::query::<$db>(sqlx::AssertSqlSafe(format!(
                "CREATE TABLE {table} (id BIGINT NOT NULL PRIMARY KEY, tenant VARCHAR(64) NOT NULL, token {} NOT NULL)",
                $bytes
            )))
            .execute(&pool)
            .await
            .expect("create");
        }
        let insert = |table: &str| sqlx::AssertSqlSafe(format!("INSERT INTO {table} (id, tenant, token) VALUES {}", $ph));
        let mut t = Timings::default();
        for round in 0..ROUNDS {
            for table in ["bench_plain", "bench_sealed"] {
                sqlx::query::<$db>(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                    .execute(&pool)
                    .await
                    .expect("delete");
            }
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for variant in order {
                let table = ["bench_plain", "bench_sealed"][variant];
                let start = Instant::now();
                let mut tx = pool.begin().await.expect("begin");
                for id in 0..ROWS {
                    let query = sqlx::query::<$db>(insert(table)).bind(id).bind("acme");
                    let query = if variant == 0 {
                        query.bind(token(id))
                    } else {
                        query.bind(tenant.seal(&ctx(id), &token(id)).expect("seal"))
                    };
                    query.execute(&mut *tx).await.expect("insert");
                }
                tx.commit().await.expect("commit");
                t.insert[variant].push(start.elapsed());
            }
            for variant in order {
                let table = ["bench_plain", "bench_sealed"][variant];
                let by_id: std::sync::Arc<str> =
                    format!("SELECT token FROM {table} WHERE id = {}", $id_ph).into();
                let start = Instant::now();
                for id in 0..ROWS {
                    if variant == 0 {
                        let token: Vec<u8> = sqlx::query_scalar::<$db, Vec<u8>>(sqlx::AssertSqlSafe(by_id.clone()))
                            .bind(id)
                            .fetch_one(&pool)
                            .await
                            .expect("select");
                        std::hint::black_box(token);
                    } else {
                        let sealed: SealedValue = sqlx::query_scalar::<$db, SealedValue>(sqlx::AssertSqlSafe(by_id.clone()))
                            .bind(id)
                            .fetch_one(&pool)
                            .await
                            .expect("select");
                        std::hint::black_box(tenant.open(&ctx(id), &sealed).expect("open"));
                    }
                }
                t.by_id[variant].push(start.elapsed());
            }
            for variant in order {
                let table = ["bench_plain", "bench_sealed"][variant];
                let all = sqlx::AssertSqlSafe(format!("SELECT id, token FROM {table}"));
                let start = Instant::now();
                if variant == 0 {
                    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as::<$db, (i64, Vec<u8>)>(all)
                        .fetch_all(&pool)
                        .await
                        .expect("select");
                    assert_eq!(rows.len() as i64, ROWS);
                    std::hint::black_box(rows);
                } else {
                    let rows: Vec<(i64, SealedValue)> = sqlx::query_as::<$db, (i64, SealedValue)>(all)
                        .fetch_all(&pool)
                        .await
                        .expect("select");
                    assert_eq!(rows.len() as i64, ROWS);
                    for (id, sealed) in &rows {
                        std::hint::black_box(tenant.open(&ctx(*id), sealed).expect("open"));
                    }
                }
                t.all[variant].push(start.elapsed());
            }
        }
        t
    }};
}

async fn sqlite() -> Timings {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.expect("sqlite");
    run_backend!(pool, sqlx::Sqlite, "BLOB", "(?, ?, ?)", "?")
}

async fn postgres(url: &str) -> Timings {
    let admin = sqlx::PgPool::connect(url).await.expect("postgres");
    let schema = format!("fieldseal_bench_{:016x}", rand::random::<u64>());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .expect("schema");
    let search_path = schema.clone();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .after_connect(move |conn, _| {
            let sql = format!("SET search_path TO {search_path}");
            Box::pin(async move {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
        .connect(url)
        .await
        .expect("postgres");
    let t = run_backend!(pool.clone(), sqlx::Postgres, "BYTEA", "($1, $2, $3)", "$1");
    pool.close().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .expect("drop");
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
