//! The column jobs (`SealedColumns`, the rotation runner's engine) on SQLite,
//! PostgreSQL and MySQL/MariaDB: plan, verify, re-seal with several workers
//! and a second "process", a concurrent application writer, migration of
//! plaintext (in place and from a source column) under a concurrent reader,
//! retire, and the refusals.

mod common;
#[path = "common/db.rs"]
mod db;

use db::pg;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::local_provider;
use fieldseal::secrecy::ExposeSecret;
use fieldseal::{
    Context, Error, ErrorKind, LocalKeyProvider, RootKey, SealedText, SealedValue, Sealer,
    jobs::{ColumnForm, ColumnSpec, JobOptions, KeyType, SealedColumns, TableSpec},
};

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const PROVIDERS: [&str; 2] = ["github", "slack"];

fn tenant_of(id: i64) -> &'static str {
    TENANTS[(id % 3) as usize]
}

fn provider_of(id: i64) -> &'static str {
    PROVIDERS[(id % 2) as usize]
}

fn token_ctx(id: i64) -> Context {
    Context::builder(tenant_of(id), "integrations", "refresh_token")
        .row(id)
        .build()
        .unwrap()
}

fn secret_ctx(id: i64) -> Context {
    Context::builder(tenant_of(id), "integrations", "api_secret")
        .row(id)
        .extra("provider", provider_of(id))
        .build()
        .unwrap()
}

/// How the application's `integrations` table is configured.
fn spec() -> TableSpec {
    TableSpec::new("integrations", "id", KeyType::Integer)
        .tenant_column("tenant_id")
        .column(ColumnSpec::new("refresh_token", ColumnForm::Binary))
        .column(
            ColumnSpec::new("api_secret", ColumnForm::Text)
                .extra_from_column("provider", "provider"),
        )
}

fn options() -> JobOptions {
    let mut o = JobOptions::default();
    o.batch = 16;
    o.workers = 3;
    o.range_rows = Some(40);
    o.lease = Duration::from_secs(5);
    o
}

fn same(sql: &str) -> String {
    sql.to_string()
}

macro_rules! jobs_suite {
    ($name:ident, $with:path, $second:path, $db:ty, $sql:expr, $ddl:expr, $trigger:expr) => {
        mod $name {
            use super::*;

            #[allow(clippy::redundant_closure_call)]
            fn q(sql: &str) -> sqlx::AssertSqlSafe<String> {
                sqlx::AssertSqlSafe(($sql)(sql))
            }

            type Pool = sqlx::Pool<$db>;

            async fn create(pool: &Pool) {
                for statement in $ddl {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string()))
                        .execute(pool)
                        .await
                        .unwrap();
                }
                for statement in $trigger {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string()))
                        .execute(pool)
                        .await
                        .unwrap();
                }
            }

            /// `n` rows sealed under each tenant's current key; every 7th
            /// row has no API secret.
            async fn fill(pool: &Pool, sealer: &Sealer, n: i64) {
                for id in 0..n {
                    let token = sealer
                        .seal(&token_ctx(id), format!("token-{id}").as_bytes())
                        .await
                        .unwrap();
                    let secret = if id % 7 == 0 {
                        None
                    } else {
                        Some(SealedText(
                            sealer
                                .seal(&secret_ctx(id), format!("secret-{id}").as_bytes())
                                .await
                                .unwrap(),
                        ))
                    };
                    sqlx::query::<$db>(q(
                        "INSERT INTO integrations (id, tenant_id, provider, refresh_token, api_secret) \
                         VALUES (?, ?, ?, ?, ?)",
                    ))
                    .bind(id)
                    .bind(tenant_of(id))
                    .bind(provider_of(id))
                    .bind(token)
                    .bind(secret)
                    .execute(pool)
                    .await
                    .unwrap();
                }
            }

            async fn rotate_all(sealer: &Sealer) {
                for t in TENANTS {
                    sealer.admin().rotate(t).await.unwrap();
                }
            }

            /// Every row opens to what it should; returns (rows, key versions
            /// seen, writes counted by the trigger per row).
            async fn check_rows(
                pool: &Pool,
                sealer: &Sealer,
                expected_token: impl Fn(i64) -> String,
            ) -> Vec<(i64, u32, Option<u32>, i64)> {
                let rows: Vec<(i64, SealedValue, Option<SealedText>, i64)> = sqlx::query_as(q(
                    "SELECT id, refresh_token, api_secret, writes FROM integrations ORDER BY id",
                ))
                .fetch_all(pool)
                .await
                .unwrap();
                let mut out = Vec::new();
                for (id, token, secret, writes) in rows {
                    let opened = sealer.open(&token_ctx(id), &token).await.unwrap();
                    assert_eq!(
                        opened.plaintext().expose_secret(),
                        expected_token(id).as_bytes(),
                        "row {id}"
                    );
                    let secret_version = match secret {
                        Some(SealedText(s)) => {
                            let opened = sealer.open(&secret_ctx(id), &s).await.unwrap();
                            assert_eq!(
                                opened.plaintext().expose_secret(),
                                format!("secret-{id}").as_bytes()
                            );
                            Some(s.key_version())
                        }
                        None => None,
                    };
                    out.push((id, token.key_version(), secret_version, writes));
                }
                out
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn plan_verify_reseal_retire() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store).build();
                    create(&pool).await;
                    fill(&pool, &sealer, 200).await;
                    rotate_all(&sealer).await;
                    let columns =
                        SealedColumns::new(pool.clone(), sealer.clone(), vec![spec()]).unwrap();
                    columns.check().await.unwrap();

                    let secrets = (0..200).filter(|id| id % 7 != 0).count() as u64;
                    let plan = columns.plan(&options()).await.unwrap();
                    assert_eq!(plan.not_primary(), 200 + secrets);
                    assert_eq!(plan.legacy(), 0);
                    let usage = &plan.columns[&("integrations".to_string(), "api_secret".to_string())];
                    assert_eq!(usage["acme"].primary, 2);
                    assert_eq!(usage.values().map(|u| u.nulls).sum::<u64>(), 200 - secrets);

                    // The recipe is right: everything opens, all of it stale.
                    let verify = columns.verify(&options()).await.unwrap();
                    assert_eq!(verify.totals().failed, 0, "{:?}", verify.tables[0].failures);
                    assert_eq!(verify.totals().written, 200 + secrets);

                    let mut dry = options();
                    dry.dry_run = true;
                    let report = columns.reseal(&dry).await.unwrap();
                    assert_eq!(report.totals().written, 200 + secrets);
                    assert_eq!(check_rows(&pool, &sealer, |id| format!("token-{id}")).await[0].1, 1);

                    let report = columns.reseal(&options()).await.unwrap();
                    let table = &report.tables[0];
                    assert!(table.complete);
                    assert_eq!(table.job.as_ref().unwrap().1, 1);
                    assert_eq!(table.counts.written, 200 + secrets);
                    assert_eq!(table.counts.failed, 0);
                    assert_eq!(table.counts.nulls, 200 - secrets);
                    for (id, token_v, secret_v, writes) in
                        check_rows(&pool, &sealer, |id| format!("token-{id}")).await
                    {
                        assert_eq!(token_v, 2, "row {id}");
                        assert!(secret_v.is_none_or(|v| v == 2), "row {id}");
                        assert_eq!(writes, 1, "row {id} was re-sealed {writes} times");
                    }

                    // Again: nothing to do, and no job run recorded for it.
                    let report = columns.reseal(&options()).await.unwrap();
                    assert_eq!(report.tables[0].job, None);
                    assert_eq!(report.totals().written, 0);
                    assert_eq!(report.totals().current, 200 + secrets);

                    // Retire: refused while the primary is young, then done.
                    let report = columns.retire(&options()).await.unwrap();
                    assert!(report.tenants["acme"].destroyed.is_empty());
                    assert!(report.tenants["acme"].primary_too_young.is_some());
                    let mut now = options();
                    now.min_primary_age = Duration::ZERO;
                    let report = columns.retire(&now).await.unwrap();
                    for t in TENANTS {
                        assert_eq!(report.tenants[t].destroyed, vec![1], "{t}");
                    }
                    let verify = columns.verify(&options()).await.unwrap();
                    assert_eq!(verify.totals().failed, 0);
                    assert_eq!(verify.totals().current, 200 + secrets);
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn retire_keeps_versions_in_use() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store).build();
                    create(&pool).await;
                    fill(&pool, &sealer, 30).await;
                    rotate_all(&sealer).await;
                    let columns =
                        SealedColumns::new(pool.clone(), sealer.clone(), vec![spec()]).unwrap();
                    let mut o = options();
                    o.min_primary_age = Duration::ZERO;
                    o.tenant = Some("acme".into());
                    let report = columns.retire(&o).await.unwrap();
                    let acme = &report.tenants["acme"];
                    assert!(acme.destroyed.is_empty());
                    assert_eq!(acme.in_use[&1]["integrations.refresh_token"], 10);
                    // Only acme's rows are re-sealed; then only acme's v1 goes.
                    columns.reseal(&o).await.unwrap();
                    let report = columns.retire(&o).await.unwrap();
                    assert_eq!(report.tenants["acme"].destroyed, vec![1]);
                    let globex = sealer.admin().describe("globex").await.unwrap();
                    assert!(globex.keys.iter().all(|k| k.wrapped.is_some()));
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn two_processes_and_a_concurrent_writer() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store.clone()).build();
                    create(&pool).await;
                    const N: i64 = 2_000;
                    fill(&pool, &sealer, N).await;
                    rotate_all(&sealer).await;

                    // The application: a fresh sealer (its cache has the new
                    // primary) replacing 1,000 rows' tokens while the job runs.
                    let app = Sealer::builder(local_provider(), store.clone()).build();
                    let writer_pool = pool.clone();
                    let writer = tokio::spawn(async move {
                        for i in 0..1_000i64 {
                            let id = (i * 7) % N; // 1,000 distinct rows
                            let token = app
                                .seal(&token_ctx(id), format!("app-{id}").as_bytes())
                                .await
                                .unwrap();
                            sqlx::query::<$db>(q("UPDATE integrations SET refresh_token = ? WHERE id = ?"))
                                .bind(token)
                                .bind(id)
                                .execute(&writer_pool)
                                .await
                                .unwrap();
                            if i % 50 == 0 {
                                tokio::task::yield_now().await;
                            }
                        }
                    });

                    let mut o = options();
                    o.batch = 50;
                    o.workers = 2;
                    o.range_rows = Some(200);
                    let first = SealedColumns::new(pool.clone(), sealer.clone(), vec![spec()]).unwrap();
                    let other_pool = $second(&pool).await;
                    let other_sealer = Sealer::builder(local_provider(), store.clone()).build();
                    let second = SealedColumns::new(other_pool.clone(), other_sealer, vec![spec()]).unwrap();
                    let (a, b) = tokio::join!(first.reseal(&o), second.reseal(&o));
                    let (a, b) = (a.unwrap(), b.unwrap());
                    writer.await.unwrap();
                    other_pool.close().await;
                    // Both processes joined the same run, unless one only
                    // reached the job after the other had completed it: its
                    // new run then found nothing left to re-seal.
                    let (ja, jb) = (&a.tables[0].job, &b.tables[0].job);
                    if ja != jb {
                        eprintln!("one process reached the job after the other completed it");
                        let (earlier, later) = if ja < jb { (&a, &b) } else { (&b, &a) };
                        assert!(earlier.tables[0].complete, "{ja:?} {jb:?}");
                        assert_eq!(
                            later.totals().written,
                            0,
                            "a second run ({ja:?}, {jb:?}) re-sealed rows the first had done"
                        );
                    }

                    let written: std::collections::HashSet<i64> =
                        (0..1_000i64).map(|i| (i * 7) % N).collect();
                    let rows = check_rows(&pool, &sealer, |id| {
                        if written.contains(&id) {
                            format!("app-{id}")
                        } else {
                            format!("token-{id}")
                        }
                    })
                    .await;
                    for (id, token_v, secret_v, writes) in rows {
                        assert_eq!(token_v, 2, "row {id} is not under the primary");
                        assert!(secret_v.is_none_or(|v| v == 2));
                        let app_writes = i64::from(written.contains(&id));
                        assert!(
                            writes - app_writes <= 1,
                            "row {id} was re-sealed {} times",
                            writes - app_writes
                        );
                    }
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn migrate_in_place_under_a_reader() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store).build();
                    create(&pool).await;
                    const N: i64 = 10_000;
                    // Plaintext from before fieldseal, inserted in bulk.
                    for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
                        let mut sql = String::from(
                            "INSERT INTO integrations (id, tenant_id, provider, api_secret) VALUES ",
                        );
                        sql.push_str(&vec!["(?, ?, ?, ?)"; chunk.len()].join(", "));
                        let mut query = sqlx::query::<$db>(q(&sql));
                        for id in chunk {
                            query = query
                                .bind(*id)
                                .bind(tenant_of(*id))
                                .bind(provider_of(*id))
                                .bind(format!("secret-{id}"));
                        }
                        query.execute(&pool).await.unwrap();
                    }
                    let spec = TableSpec::new("integrations", "id", KeyType::Integer)
                        .tenant_column("tenant_id")
                        .column(
                            ColumnSpec::new("api_secret", ColumnForm::Text)
                                .extra_from_column("provider", "provider")
                                .migrate_in_place(),
                        );
                    let columns =
                        SealedColumns::new(pool.clone(), sealer.clone(), vec![spec]).unwrap();
                    assert_eq!(columns.plan(&options()).await.unwrap().legacy(), N as u64);

                    // The application reads everything, all the time.
                    let stop = Arc::new(AtomicBool::new(false));
                    let reads = Arc::new(AtomicU64::new(0));
                    let reader = {
                        let (pool, sealer, stop, reads) =
                            (pool.clone(), sealer.clone(), stop.clone(), reads.clone());
                        tokio::spawn(async move {
                            let mut last_pass = false;
                            loop {
                                let rows: Vec<(i64, String)> = sqlx::query_as(q(
                                    "SELECT id, api_secret FROM integrations ORDER BY id",
                                ))
                                .fetch_all(&pool)
                                .await
                                .unwrap();
                                for (id, stored) in rows {
                                    let read = sealer
                                        .open_migrating(&secret_ctx(id), &stored)
                                        .await
                                        .unwrap_or_else(|e| panic!("row {id}: {e}"));
                                    assert_eq!(read.expose_secret(), format!("secret-{id}").as_bytes());
                                    reads.fetch_add(1, Ordering::Relaxed);
                                }
                                if last_pass {
                                    return;
                                }
                                last_pass = stop.load(Ordering::Relaxed);
                            }
                        })
                    };
                    let mut o = options();
                    o.batch = 500;
                    o.range_rows = Some(2_000);
                    let report = columns.migrate(&o).await;
                    stop.store(true, Ordering::Relaxed);
                    reader.await.unwrap();
                    let report = report.unwrap();
                    assert!(reads.load(Ordering::Relaxed) >= N as u64);
                    assert!(report.tables[0].complete);
                    assert_eq!(report.totals().written, N as u64);
                    assert_eq!(report.totals().failed, 0);
                    let plan = columns.plan(&options()).await.unwrap();
                    assert_eq!(plan.legacy(), 0);
                    let verify = columns.verify(&options()).await.unwrap();
                    assert_eq!(verify.totals().current, N as u64);
                    assert_eq!(verify.totals().failed, 0);
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn migrate_from_a_source_column() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store).build();
                    create(&pool).await;
                    for id in 0..300i64 {
                        sqlx::query::<$db>(q(
                            "INSERT INTO integrations (id, tenant_id, provider, token_plain) VALUES (?, ?, ?, ?)",
                        ))
                        .bind(id)
                        .bind(tenant_of(id))
                        .bind(provider_of(id))
                        .bind((id % 10 != 0).then(|| format!("token-{id}")))
                        .execute(&pool)
                        .await
                        .unwrap();
                    }
                    let spec = TableSpec::new("integrations", "id", KeyType::Integer)
                        .tenant_column("tenant_id")
                        .column(
                            ColumnSpec::new("refresh_token", ColumnForm::Binary)
                                .migrate_from("token_plain"),
                        );
                    let columns =
                        SealedColumns::new(pool.clone(), sealer.clone(), vec![spec]).unwrap();
                    assert_eq!(columns.plan(&options()).await.unwrap().legacy(), 270);
                    let report = columns.migrate(&options()).await.unwrap();
                    assert_eq!(report.totals().written, 270);
                    assert_eq!(report.totals().nulls, 30);
                    let rows: Vec<(i64, Option<SealedValue>)> =
                        sqlx::query_as(q("SELECT id, refresh_token FROM integrations ORDER BY id"))
                            .fetch_all(&pool)
                            .await
                            .unwrap();
                    for (id, token) in rows {
                        match token {
                            Some(t) => {
                                let opened = sealer.open(&token_ctx(id), &t).await.unwrap();
                                assert_eq!(
                                    opened.plaintext().expose_secret(),
                                    format!("token-{id}").as_bytes()
                                );
                            }
                            None => assert_eq!(id % 10, 0),
                        }
                    }
                    // Nothing left: a second run writes nothing.
                    assert_eq!(columns.migrate(&options()).await.unwrap().totals().written, 0);
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn refusals_write_nothing() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store.clone()).build();
                    create(&pool).await;
                    fill(&pool, &sealer, 40).await;
                    rotate_all(&sealer).await;
                    let columns = |spec: TableSpec| {
                        SealedColumns::new(pool.clone(), sealer.clone(), vec![spec]).unwrap()
                    };
                    // A table or column that does not exist.
                    let err = columns(TableSpec::new("integration", "id", KeyType::Integer)
                        .tenant_column("tenant_id")
                        .column(ColumnSpec::new("refresh_token", ColumnForm::Binary)))
                    .check()
                    .await
                    .unwrap_err();
                    assert!(matches!(err, Error::Config { .. }), "{err}");
                    assert!(err.to_string().contains("tables[0]"), "{err}");
                    let err = columns(TableSpec::new("integrations", "id", KeyType::Integer)
                        .tenant_column("tenant_id")
                        .column(ColumnSpec::new("refresh_tokens", ColumnForm::Binary)))
                    .check()
                    .await
                    .unwrap_err();
                    assert!(err.to_string().contains("does not exist"), "{err}");
                    // A key that is not the primary key.
                    let err = columns(TableSpec::new("integrations", "writes", KeyType::Integer)
                        .tenant_column("tenant_id")
                        .column(ColumnSpec::new("refresh_token", ColumnForm::Binary)))
                    .check()
                    .await
                    .unwrap_err();
                    assert!(err.to_string().contains("is not the primary key"), "{err}");
                    // A composite primary key.
                    sqlx::raw_sql(sqlx::AssertSqlSafe(
                        "CREATE TABLE pairs (a BIGINT NOT NULL, b BIGINT NOT NULL, \
                         tenant_id VARCHAR(100), v TEXT, PRIMARY KEY (a, b))"
                            .to_string(),
                    ))
                    .execute(&pool)
                    .await
                    .unwrap();
                    let err = columns(TableSpec::new("pairs", "a", KeyType::Integer)
                        .tenant_column("tenant_id")
                        .column(ColumnSpec::new("v", ColumnForm::Text)))
                    .check()
                    .await
                    .unwrap_err();
                    assert!(err.to_string().contains("composite primary key (a, b)"), "{err}");

                    let before: Vec<(i64, Vec<u8>)> =
                        sqlx::query_as(q("SELECT id, refresh_token FROM integrations ORDER BY id"))
                            .fetch_all(&pool)
                            .await
                            .unwrap();
                    // A recipe that does not match the application's contexts:
                    // verify names every row, re-seal writes none of them.
                    let wrong = columns(TableSpec::new("integrations", "id", KeyType::Integer)
                        .tenant_column("tenant_id")
                        .column(ColumnSpec::new("refresh_token", ColumnForm::Binary)
                            .column_label("token")));
                    let report = wrong.verify(&options()).await.unwrap();
                    assert_eq!(report.totals().failed, 40);
                    assert_eq!(report.tables[0].failures.len(), 40);
                    assert_eq!(report.failures_by_kind()[&ErrorKind::OpenFailed], 40);
                    let report = wrong.reseal(&options()).await.unwrap();
                    assert_eq!(report.totals().failed, 40);
                    assert_eq!(report.totals().written, 0);
                    // A wrong root key stops the job before anything is written.
                    let wrong_root = Sealer::builder(
                        LocalKeyProvider::new("test-root", RootKey::from_bytes(&mut [9; 32])).unwrap(),
                        store.clone(),
                    )
                    .build();
                    let err = SealedColumns::new(pool.clone(), wrong_root, vec![spec()])
                        .unwrap()
                        .reseal(&options())
                        .await
                        .unwrap_err();
                    assert!(matches!(err, Error::UnwrapFailed { .. }), "{err}");
                    let after: Vec<(i64, Vec<u8>)> =
                        sqlx::query_as(q("SELECT id, refresh_token FROM integrations ORDER BY id"))
                            .fetch_all(&pool)
                            .await
                            .unwrap();
                    assert_eq!(before, after);
                })
                .await;
            }
        }
    };
}

jobs_suite!(
    sqlite,
    db::with_sqlite,
    second_sqlite_pool,
    sqlx::Sqlite,
    same,
    [
        "CREATE TABLE integrations (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, \
         provider TEXT NOT NULL, refresh_token BLOB, api_secret TEXT, token_plain TEXT, \
         writes INTEGER NOT NULL DEFAULT 0)"
    ],
    [
        "CREATE TRIGGER count_writes AFTER UPDATE OF refresh_token ON integrations \
         BEGIN UPDATE integrations SET writes = writes + 1 WHERE id = NEW.id; END"
    ]
);

jobs_suite!(
    postgres,
    db::with_postgres,
    db::second_postgres_pool,
    sqlx::Postgres,
    pg,
    [
        "CREATE TABLE integrations (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, \
         provider TEXT NOT NULL, refresh_token BYTEA, api_secret TEXT, token_plain TEXT, \
         writes BIGINT NOT NULL DEFAULT 0)"
    ],
    [
        "CREATE FUNCTION count_writes() RETURNS trigger AS $$ BEGIN \
         NEW.writes := OLD.writes + 1; RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER count_writes BEFORE UPDATE OF refresh_token ON integrations \
         FOR EACH ROW EXECUTE FUNCTION count_writes()"
    ]
);

jobs_suite!(
    mysql,
    db::with_mysql,
    db::second_mysql_pool,
    sqlx::MySql,
    same,
    [
        "CREATE TABLE integrations (id BIGINT PRIMARY KEY, tenant_id VARCHAR(100) NOT NULL, \
         provider VARCHAR(100) NOT NULL, refresh_token BLOB, api_secret TEXT, token_plain TEXT, \
         writes BIGINT NOT NULL DEFAULT 0)"
    ],
    [
        "CREATE TRIGGER count_writes BEFORE UPDATE ON integrations FOR EACH ROW \
         SET NEW.writes = OLD.writes + IF(NEW.refresh_token <=> OLD.refresh_token, 0, 1)"
    ]
);

/// A second pool on the same SQLite file: another "process".
async fn second_sqlite_pool(first: &sqlx::SqlitePool) -> sqlx::SqlitePool {
    let path: String =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(first)
            .await
            .unwrap();
    sqlx::SqlitePool::connect(&format!("sqlite://{path}"))
        .await
        .unwrap()
}
