//! No value ever lost: the column jobs (`SealedColumns`, the rotation
//! runner's engine) on SQLite, PostgreSQL and MySQL/MariaDB, against the ways
//! trials on real schemas lost data.
//!
//! - Tenant ids that differ only by case or accent (`acme`, `ACME`, `Acme`,
//!   `café`, `cafe`) are five tenants everywhere: counting, grouping, filters
//!   and `retire`, also in a tenant column whose collation calls them equal.
//! - A job never writes under a version that is not the tenant's primary at
//!   write time, and `retire` destroys nothing while a job that may write
//!   under a tenant's keys holds a live lease.
//! - `migrate` refuses a context recipe under which the column's sealed values
//!   do not open, writing nothing.
//! - Primary keys of every integer width, and text, varchar and uuid keys.

mod common;
#[path = "common/db.rs"]
mod db;

use db::pg;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use common::local_provider;
use fieldseal::secrecy::ExposeSecret;
use fieldseal::{
    Context, Error, ErrorKind, SealedValue, Sealer,
    jobs::{ColumnForm, ColumnSpec, JobOptions, KeyType, Progress, SealedColumns, TableSpec},
};

/// Five tenants that a case- or accent-insensitive collation calls two.
const LOOKALIKES: [&str; 5] = ["acme", "ACME", "Acme", "café", "cafe"];

fn token_ctx(tenant: &str, id: i64) -> Context {
    Context::builder(tenant, "accounts", "token")
        .row(id)
        .build()
        .unwrap()
}

fn spec() -> TableSpec {
    TableSpec::new("accounts", "id", KeyType::Integer)
        .tenant_column("tenant")
        .column(ColumnSpec::new("token", ColumnForm::Binary))
}

fn now_options() -> JobOptions {
    let mut o = JobOptions::default();
    o.batch = 4;
    o.workers = 1;
    o.min_primary_age = Duration::ZERO;
    o
}

fn same(sql: &str) -> String {
    sql.to_string()
}

/// Long and odd actors are refused; the chain stays intact.
async fn audit_bounds(sealer: &Sealer) {
    for actor in [
        "x".repeat(70_000),
        "y".repeat(257),
        "ops\nforged entry".to_string(),
    ] {
        let err = sealer
            .admin()
            .actor(actor.clone())
            .rotate("acme")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err}");
        assert!(err.to_string().contains("actor"), "{err}");
    }
    assert_eq!(
        sealer
            .admin()
            .describe("acme")
            .await
            .unwrap()
            .latest_version(),
        1
    );
    let longest = "z".repeat(256);
    sealer
        .admin()
        .actor(longest.clone())
        .rotate("acme")
        .await
        .unwrap();
    let report = sealer.admin().verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    let entries = sealer.admin().audit_entries(0, 100).await.unwrap();
    assert_eq!(entries.last().unwrap().actor, longest);
}

/// MariaDB in a non-strict `sql_mode` cuts values too long for their column
/// instead of refusing them: the bound holds there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_inputs_are_bounded_on_a_non_strict_mariadb() {
    db::with_mysql(|pool, _| async move {
        let database: String = sqlx::query_scalar("SELECT DATABASE()")
            .fetch_one(&pool)
            .await
            .unwrap();
        let url = db::mysql_url_for(&std::env::var(db::MYSQL_URL).unwrap(), &database);
        let lax = sqlx::mysql::MySqlPoolOptions::new()
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql("SET SESSION sql_mode = ''")
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .unwrap();
        let mode: String = sqlx::query_scalar("SELECT @@SESSION.sql_mode")
            .fetch_one(&lax)
            .await
            .unwrap();
        assert_eq!(mode, "");
        let sealer =
            Sealer::builder(local_provider(), fieldseal::SqlKeyStore::new(lax.clone())).build();
        sealer.create_tenant("acme").await.unwrap();
        audit_bounds(&sealer).await;
        lax.close().await;
    })
    .await;
}

/// Every file of a SQLite database (the main file, its WAL and journal),
/// read whole.
fn sqlite_files(path: &str) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-journal", "-shm"] {
        if let Ok(bytes) = std::fs::read(format!("{path}{suffix}")) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A destroyed version's wrapped key, and a shredded tenant's, are gone from
/// the SQLite files (overwritten, with `secure_delete` on and the WAL
/// checkpointed), not merely unlinked from their rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_wrapped_keys_leave_no_trace_in_sqlite_files() {
    db::with_sqlite(|pool, store| async move {
        let path: String =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(&pool)
                .await
                .unwrap();
        let sealer = Sealer::builder(local_provider(), store.clone()).build();
        let admin = sealer.admin();
        for tenant in ["acme", "globex"] {
            sealer.create_tenant(tenant).await.unwrap();
            admin.rotate(tenant).await.unwrap();
        }
        let wrapped = |tenant: &'static str| {
            let admin = admin.clone();
            async move {
                admin
                    .describe(tenant)
                    .await
                    .unwrap()
                    .keys
                    .iter()
                    .filter_map(|k| k.wrapped.as_ref().map(|w| w.as_bytes().to_vec()))
                    .collect::<Vec<_>>()
            }
        };
        let acme = wrapped("acme").await;
        let globex = wrapped("globex").await;
        assert_eq!((acme.len(), globex.len()), (2, 2));
        let files = sqlite_files(&path);
        assert!(
            acme.iter().chain(&globex).all(|w| contains(&files, w)),
            "the test cannot see the keys"
        );

        admin.destroy_version("acme", 1).await.unwrap();
        admin.shred_tenant("globex").await.unwrap();
        let files = sqlite_files(&path);
        assert!(
            !contains(&files, &acme[0]),
            "acme v1's wrapped key is still in the files"
        );
        assert!(contains(&files, &acme[1]), "acme v2 is live");
        for w in &globex {
            assert!(
                !contains(&files, w),
                "a shredded tenant's wrapped key is still in the files"
            );
        }
    })
    .await;
}

/// The total a job announced and the rows it reported since.
#[derive(Default)]
struct Totals(std::sync::Mutex<(u64, u64)>);

impl Progress for Totals {
    fn start(&self, _table: &str, rows: u64) {
        *self.0.lock().unwrap() = (rows, 0);
    }
    fn advance(&self, _table: &str, rows: u64) {
        self.0.lock().unwrap().1 += rows;
    }
}

/// `plan` times its sample writes in a transaction it rolls back; a MyISAM
/// table ignores the rollback, so there the sample writes match no row:
/// plaintext stays plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_writes_nothing_to_a_table_outside_transactions() {
    db::with_mysql(|pool, store| async move {
        sqlx::raw_sql(
            "CREATE TABLE legacy (id BIGINT PRIMARY KEY, tenant VARCHAR(100) NOT NULL, \
             secret TEXT) ENGINE=MyISAM",
        )
        .execute(&pool)
        .await
        .unwrap();
        for id in 1..=10i64 {
            sqlx::query("INSERT INTO legacy (id, tenant, secret) VALUES (?, 'acme', ?)")
                .bind(id)
                .bind(format!("plaintext-{id}"))
                .execute(&pool)
                .await
                .unwrap();
        }
        let sealer = Sealer::builder(local_provider(), store).build();
        let spec = TableSpec::new("legacy", "id", KeyType::Integer)
            .tenant_column("tenant")
            .column(ColumnSpec::new("secret", ColumnForm::Text).migrate_in_place());
        let columns = SealedColumns::new(pool.clone(), sealer, vec![spec]).unwrap();
        let plan = columns.plan(&now_options()).await.unwrap();
        assert_eq!(plan.legacy(), 10);
        let secrets: Vec<String> = sqlx::query_scalar("SELECT secret FROM legacy ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
        let expected: Vec<String> = (1..=10).map(|id| format!("plaintext-{id}")).collect();
        assert_eq!(
            secrets, expected,
            "plan changed a table that ignores rollbacks"
        );
    })
    .await;
}

/// Counts rows looked at, so a test can act while a job is under way.
#[derive(Default)]
struct Seen(AtomicU64);

impl Progress for Seen {
    fn advance(&self, _table: &str, rows: u64) {
        self.0.fetch_add(rows, Ordering::SeqCst);
    }
}

macro_rules! suite {
    ($name:ident, $with:path, $db:ty, $sql:expr, $accounts:expr, $setup:expr,
     keys: $keys:expr, bad_keys: $bad_keys:expr, text: $text:expr, quote: $quote:expr,
     refuse_v2: $refuse_v2:expr) => {
        mod $name {
            use super::*;

            #[allow(clippy::redundant_closure_call)]
            fn q(sql: &str) -> sqlx::AssertSqlSafe<String> {
                sqlx::AssertSqlSafe(($sql)(sql))
            }

            type Pool = sqlx::Pool<$db>;

            async fn exec(pool: &Pool, sql: &str) {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(pool)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }

            /// `accounts` with a tenant column whose collation (where the
            /// database has one) is case- and accent-insensitive.
            async fn create(pool: &Pool) {
                for statement in $setup {
                    exec(pool, statement).await;
                }
                exec(pool, $accounts).await;
            }

            async fn insert(pool: &Pool, sealer: &Sealer, id: i64, tenant: &str) {
                let token = sealer
                    .seal(&token_ctx(tenant, id), format!("token-{id}").as_bytes())
                    .await
                    .unwrap();
                sqlx::query::<$db>(q(
                    "INSERT INTO accounts (id, tenant, token) VALUES (?, ?, ?)",
                ))
                .bind(id)
                .bind(tenant)
                .bind(token)
                .execute(pool)
                .await
                .unwrap();
            }

            /// Every row opens, with a sealer that has never seen a key;
            /// returns each row's tenant and key version.
            async fn all_open(pool: &Pool, sealer: &Sealer) -> BTreeMap<i64, (String, u32)> {
                let rows: Vec<(i64, String, SealedValue)> =
                    sqlx::query_as(q("SELECT id, tenant, token FROM accounts ORDER BY id"))
                        .fetch_all(pool)
                        .await
                        .unwrap();
                let mut out = BTreeMap::new();
                for (id, tenant, token) in rows {
                    let opened = sealer
                        .open(&token_ctx(&tenant, id), &token)
                        .await
                        .unwrap_or_else(|e| panic!("row {id} of tenant {tenant}: {e}"));
                    assert_eq!(
                        opened.plaintext().expose_secret(),
                        format!("token-{id}").as_bytes()
                    );
                    out.insert(id, (tenant, token.key_version()));
                }
                out
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn lookalike_tenants_are_never_merged() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store.clone()).build();
                    create(&pool).await;
                    let mut id = 0;
                    for tenant in LOOKALIKES {
                        for _ in 0..2 {
                            id += 1;
                            insert(&pool, &sealer, id, tenant).await;
                        }
                        sealer.admin().rotate(tenant).await.unwrap();
                    }
                    let columns =
                        SealedColumns::new(pool.clone(), sealer.clone(), vec![spec()]).unwrap();
                    columns.check().await.unwrap();

                    // Counted apart.
                    let plan = columns.plan(&now_options()).await.unwrap();
                    let usage = &plan.columns[&("accounts".to_string(), "token".to_string())];
                    assert_eq!(usage.len(), 5, "{usage:?}");
                    for tenant in LOOKALIKES {
                        assert_eq!(
                            usage[tenant].by_version,
                            BTreeMap::from([(1, 2)]),
                            "{tenant}"
                        );
                        assert_eq!(usage[tenant].primary, 2, "{tenant}");
                    }
                    let in_use = columns.versions_in_use(None).await.unwrap();
                    for tenant in LOOKALIKES {
                        assert_eq!(in_use[tenant][&1]["accounts.token"], 2, "{tenant}");
                    }

                    // Every v1 is in use: retire destroys none of them.
                    let report = columns.retire(&now_options()).await.unwrap();
                    for tenant in LOOKALIKES {
                        let r = &report.tenants[tenant];
                        assert!(r.destroyed.is_empty(), "{tenant}: {r:?}");
                        assert_eq!(r.in_use[&1]["accounts.token"], 2, "{tenant}");
                    }

                    // One tenant's job touches that tenant's rows only.
                    let mut only = now_options();
                    only.tenant = Some("ACME".into());
                    assert_eq!(columns.plan(&only).await.unwrap().not_primary(), 2);
                    let report = columns.reseal(&only).await.unwrap();
                    assert_eq!(report.totals().scanned, 2);
                    assert_eq!(report.totals().written, 2);
                    let report = columns.retire(&only).await.unwrap();
                    assert_eq!(report.tenants["ACME"].destroyed, vec![1]);
                    let report = columns.retire(&now_options()).await.unwrap();
                    for tenant in LOOKALIKES.iter().filter(|t| **t != "ACME") {
                        assert!(report.tenants[*tenant].destroyed.is_empty(), "{tenant}");
                    }
                    let verify = columns.verify(&now_options()).await.unwrap();
                    assert_eq!(verify.totals().failed, 0, "{:?}", verify.tables[0].failures);

                    let fresh = Sealer::builder(local_provider(), store).build();
                    for (id, (tenant, version)) in all_open(&pool, &fresh).await {
                        let expected = if tenant == "ACME" { 2 } else { 1 };
                        assert_eq!(version, expected, "row {id} of {tenant}");
                    }
                })
                .await;
            }

            /// Process A's cache holds the tenant's keys with v2 as primary;
            /// process B rotates to v3 and retires v2 (no row uses it); then
            /// A re-seals. Every batch checks the tenant's keys first: A
            /// writes under v3, not under the v2 B destroyed.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_job_never_writes_under_a_version_destroyed_elsewhere() {
                $with(|pool, store| async move {
                    let a = Sealer::builder(local_provider(), store.clone()).build();
                    create(&pool).await;
                    for id in 1..=16 {
                        insert(&pool, &a, id, "acme").await;
                    }
                    a.admin().rotate("acme").await.unwrap();
                    assert_eq!(a.tenant("acme").await.unwrap().primary_version(), 2);

                    let b = Sealer::builder(local_provider(), store.clone()).build();
                    b.admin().rotate("acme").await.unwrap();
                    let b_columns =
                        SealedColumns::new(pool.clone(), b.clone(), vec![spec()]).unwrap();
                    let report = b_columns.retire(&now_options()).await.unwrap();
                    assert_eq!(report.tenants["acme"].destroyed, vec![2]);
                    assert_eq!(report.tenants["acme"].in_use[&1]["accounts.token"], 16);
                    // A's cached handle still says v2.
                    assert_eq!(a.tenant("acme").await.unwrap().primary_version(), 2);

                    let a_columns =
                        SealedColumns::new(pool.clone(), a.clone(), vec![spec()]).unwrap();
                    let report = a_columns.reseal(&now_options()).await.unwrap();
                    assert_eq!(report.totals().written, 16);
                    assert_eq!(report.totals().failed, 0);
                    let fresh = Sealer::builder(local_provider(), store).build();
                    for (id, (_, version)) in all_open(&pool, &fresh).await {
                        assert_eq!(version, 3, "row {id}");
                    }
                })
                .await;
            }

            /// While a job holds a live lease, `retire` destroys none of the
            /// versions of the tenants it may write (even with a primary of
            /// any age), and names the job; once it is over, it does.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn retire_waits_for_running_jobs() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store.clone()).build();
                    create(&pool).await;
                    for id in 1..=24 {
                        insert(
                            &pool,
                            &sealer,
                            id,
                            if id % 2 == 0 { "acme" } else { "globex" },
                        )
                        .await;
                    }
                    sealer.admin().rotate("acme").await.unwrap();
                    sealer.admin().rotate("globex").await.unwrap();
                    let columns =
                        SealedColumns::new(pool.clone(), sealer.clone(), vec![spec()]).unwrap();

                    // The job pauses the second time it checks a batch's
                    // tenants (its third batch: with no tenant cached, the
                    // first checks none), the batch read and nothing of it
                    // written, until the test has run `retire` and rotated
                    // acme in another process.
                    let (paused, resume) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
                    let calls = Arc::new(AtomicU64::new(0));
                    let hooked = {
                        let (paused, resume, calls) = (paused.clone(), resume.clone(), calls.clone());
                        common::BatchHookStore::new(store.clone(), move || {
                            let (paused, resume, calls) = (paused.clone(), resume.clone(), calls.clone());
                            async move {
                                if calls.fetch_add(1, Ordering::SeqCst) == 1 {
                                    paused.notify_one();
                                    resume.notified().await;
                                }
                            }
                        })
                    };
                    let job_columns = SealedColumns::new(
                        pool.clone(),
                        Sealer::builder(local_provider(), hooked).build(),
                        vec![spec()],
                    )
                    .unwrap();
                    let seen = Arc::new(Seen::default());
                    let mut o = now_options();
                    o.batch = 2;
                    o.range_rows = Some(100);
                    o.progress = Some(seen.clone());
                    let mut job = tokio::spawn(async move { job_columns.reseal(&o).await });
                    tokio::select! {
                        () = paused.notified() => {}
                        ended = &mut job => panic!(
                            "the job ended before it paused: {}",
                            match ended {
                                Ok(Ok(_)) => "complete".to_string(),
                                Ok(Err(e)) => e.to_string(),
                                Err(e) => e.to_string(),
                            }
                        ),
                        () = tokio::time::sleep(Duration::from_secs(60)) => {
                            panic!("the job never paused")
                        }
                    }
                    // Rows committed before the pause: one of acme per batch.
                    let before = seen.0.load(Ordering::SeqCst);
                    assert!(before >= 2, "{before}");
                    let report = columns.retire(&now_options()).await.unwrap();
                    for tenant in ["acme", "globex"] {
                        let r = &report.tenants[tenant];
                        assert!(r.destroyed.is_empty(), "{tenant}: {r:?}");
                        assert_eq!(
                            r.jobs_running,
                            vec!["reseal:accounts:*".to_string()],
                            "{tenant}"
                        );
                    }
                    // Another process rotates acme again mid-job: the job's
                    // next batches see it and write under v3.
                    let other = Sealer::builder(local_provider(), store.clone()).build();
                    other.admin().rotate("acme").await.unwrap();
                    resume.notify_one();
                    let report = job.await.unwrap().unwrap();
                    assert!(report.tables[0].complete);
                    assert_eq!(report.totals().written, 24);
                    let fresh = Sealer::builder(local_provider(), store.clone()).build();
                    let v2 = all_open(&pool, &fresh)
                        .await
                        .values()
                        .filter(|(t, v)| t == "acme" && *v == 2)
                        .count();
                    assert_eq!(
                        v2 as u64,
                        before / 2,
                        "acme's rows written under v2 after v3 existed"
                    );
                    columns.reseal(&now_options()).await.unwrap();

                    let report = columns.retire(&now_options()).await.unwrap();
                    assert_eq!(report.tenants["acme"].destroyed, vec![1, 2]);
                    assert_eq!(report.tenants["globex"].destroyed, vec![1]);
                    for tenant in ["acme", "globex"] {
                        assert!(report.tenants[tenant].jobs_running.is_empty());
                    }
                    let fresh = Sealer::builder(local_provider(), store).build();
                    assert_eq!(all_open(&pool, &fresh).await.len(), 24);
                })
                .await;
            }

            /// Table and column names with `?` in them (PostgreSQL's
            /// placeholders are numbered around quoted identifiers).
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn identifiers_with_question_marks_work() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store.clone()).build();
                    let qt = $quote;
                    exec(
                        &pool,
                        &format!(
                            "CREATE TABLE {} ({} BIGINT PRIMARY KEY, {} {text} NOT NULL, {} {text}, \
                             {} {text})",
                            qt("wh?o"), qt("i?d"), qt("ten?ant"), qt("pl?ain"), qt("tok?en"),
                            text = $text
                        ),
                    )
                    .await;
                    for id in 1..=12 {
                        exec(
                            &pool,
                            &format!(
                                "INSERT INTO {} ({}, {}, {}) VALUES ({id}, '{}', 'secret-{id}')",
                                qt("wh?o"), qt("i?d"), qt("ten?ant"), qt("pl?ain"),
                                if id % 2 == 0 { "acme" } else { "globex" }
                            ),
                        )
                        .await;
                    }
                    let spec = TableSpec::new("wh?o", "i?d", KeyType::Integer)
                        .tenant_column("ten?ant")
                        .column(ColumnSpec::new("tok?en", ColumnForm::Text).migrate_from("pl?ain"));
                    let columns = SealedColumns::new(pool.clone(), sealer.clone(), vec![spec]).unwrap();
                    columns.check().await.unwrap();
                    let mut o = now_options();
                    o.tenant = Some("acme".into());
                    assert_eq!(columns.plan(&o).await.unwrap().legacy(), 6);
                    o.tenant = None;
                    assert_eq!(columns.migrate(&o).await.unwrap().totals().written, 12);
                    sealer.admin().rotate("acme").await.unwrap();
                    assert_eq!(columns.reseal(&o).await.unwrap().totals().written, 6);
                    assert_eq!(columns.verify(&o).await.unwrap().totals().current, 12);
                    assert_eq!(columns.retire(&o).await.unwrap().tenants["acme"].destroyed, vec![1]);
                })
                .await;
            }

            /// A key row deleted behind the store's back leaves a gap in the
            /// tenant's versions: a blind index search refuses, naming it,
            /// instead of quietly searching the versions left.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_deleted_key_row_makes_searches_refuse() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store.clone()).build();
                    sealer.create_tenant("acme").await.unwrap();
                    sealer.admin().rotate("acme").await.unwrap();
                    sealer.admin().rotate("acme").await.unwrap();
                    let index = fieldseal::blind_index::BlindIndex::builder("accounts", "email", "email_idx")
                        .build()
                        .unwrap();
                    let search = sealer.tenant("acme").await.unwrap().search(&index, b"a@b.c").unwrap();
                    assert_eq!(search.values().len(), 3);
                    sqlx::query::<$db>(q("DELETE FROM fieldseal_keys WHERE tenant = ? AND version = 2"))
                        .bind("acme")
                        .execute(&pool)
                        .await
                        .unwrap();
                    let fresh = Sealer::builder(local_provider(), store).build();
                    let handle = fresh.tenant("acme").await.unwrap();
                    let err = handle.search(&index, b"a@b.c").unwrap_err();
                    match &err {
                        Error::IncompleteSearch { version, reason, .. } => {
                            assert_eq!(*version, 2);
                            assert!(reason.contains("no row"), "{reason}");
                        }
                        other => panic!("{other}"),
                    }
                    let partial = handle.search_partial(&index, b"a@b.c").unwrap();
                    assert_eq!(partial.values().len(), 2);
                    assert_eq!(partial.skipped().len(), 1);
                })
                .await;
            }

            /// A database error about a key row (here a constraint the
            /// operator added) carries none of the row's data into the error,
            /// its `Debug` or its causes: PostgreSQL's detail "Failing row
            /// contains (…)" holds the wrapped key.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn store_errors_carry_no_row_data() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store.clone()).build();
                    sealer.create_tenant("acme").await.unwrap();
                    exec(&pool, $refuse_v2).await;
                    let err = sealer.admin().rotate("acme").await.unwrap_err();
                    assert!(matches!(err, Error::Store { .. }), "{err}");
                    let mut shown = format!("{err}\n{err:?}");
                    let mut cause = std::error::Error::source(&err);
                    while let Some(c) = cause {
                        shown.push_str(&format!("\n{c}\n{c:?}"));
                        cause = c.source();
                    }
                    eprintln!("{shown}");
                    for leak in ["Failing row", "\\x", "acme"] {
                        assert!(!shown.contains(leak), "{leak} in {shown}");
                    }
                    assert!(shown.contains("creating a tenant key version"), "{shown}");
                })
                .await;
            }

            /// An audit actor too long for its column, or with a control
            /// character, is refused before anything is written, never stored
            /// cut (which would break the chain).
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn audit_inputs_are_bounded_not_cut() {
                $with(|_pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store.clone()).build();
                    sealer.create_tenant("acme").await.unwrap();
                    audit_bounds(&sealer).await;
                })
                .await;
            }

            /// Key states and the minimum decryption version changed with SQL,
            /// a key row deleted, the log's newest entries deleted or the log
            /// wiped: `verify_audit` reports each; a minimum out of range is
            /// refused on load, never read as "no minimum".
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tampering_with_key_rows_or_the_log_is_reported() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store.clone()).build();
                    let admin = sealer.admin();
                    sealer.create_tenant("acme").await.unwrap();
                    sealer.create_tenant("globex").await.unwrap();
                    admin.rotate("acme").await.unwrap();
                    admin.rotate("acme").await.unwrap();
                    admin.disable_version("acme", 1).await.unwrap();
                    admin.set_min_decryption_version("acme", 2).await.unwrap();
                    let report = admin.verify_audit().await.unwrap();
                    assert!(report.is_intact(), "{report:?}");

                    let tampered = |sql: &'static str, undo: &'static str, version: u32, says: &'static str| {
                        let (pool, admin) = (pool.clone(), admin.clone());
                        async move {
                            exec(&pool, sql).await;
                            let report = admin.verify_audit().await.unwrap();
                            assert!(!report.is_intact(), "{sql}");
                            assert!(report.broken.is_none(), "{sql}: {report:?}");
                            let m = &report.mismatches;
                            assert_eq!(m.len(), 1, "{sql}: {m:?}");
                            assert_eq!((m[0].tenant.as_str(), m[0].version), ("acme", version), "{sql}");
                            assert!(m[0].reason.contains(says), "{sql}: {}", m[0].reason);
                            exec(&pool, undo).await;
                            assert!(admin.verify_audit().await.unwrap().is_intact(), "undo {sql}");
                        }
                    };
                    tampered(
                        "UPDATE fieldseal_keys SET state = 'active' WHERE tenant = 'acme' AND version = 1",
                        "UPDATE fieldseal_keys SET state = 'disabled' WHERE tenant = 'acme' AND version = 1",
                        1,
                        "active in the store, but the audit log says disabled",
                    )
                    .await;
                    tampered(
                        "UPDATE fieldseal_tenants SET min_decryption_version = 0 WHERE tenant = 'acme'",
                        "UPDATE fieldseal_tenants SET min_decryption_version = 2 WHERE tenant = 'acme'",
                        0,
                        "minimum decryption version is 0 in the store, but the audit log says 2",
                    )
                    .await;
                    tampered(
                        "UPDATE fieldseal_tenants SET shredded_at = 1 WHERE tenant = 'acme'",
                        "UPDATE fieldseal_tenants SET shredded_at = NULL WHERE tenant = 'acme'",
                        0,
                        "shredded",
                    )
                    .await;

                    // A minimum of 2^40 is an altered row, not "no minimum".
                    exec(&pool, "UPDATE fieldseal_tenants SET min_decryption_version = 1099511627776 WHERE tenant = 'acme'").await;
                    let fresh = Sealer::builder(local_provider(), store.clone()).build();
                    let err = fresh.tenant("acme").await.unwrap_err();
                    assert!(matches!(err, Error::Store { .. }), "{err}");
                    assert!(err.to_string().contains("1099511627776"), "{err}");
                    exec(&pool, "UPDATE fieldseal_tenants SET min_decryption_version = 2 WHERE tenant = 'acme'").await;

                    // A deleted key row.
                    exec(&pool, "DELETE FROM fieldseal_keys WHERE tenant = 'globex' AND version = 1").await;
                    let report = admin.verify_audit().await.unwrap();
                    assert_eq!(report.mismatches.len(), 1, "{report:?}");
                    assert_eq!(report.mismatches[0].tenant, "globex");
                    assert!(report.mismatches[0].reason.contains("no row"), "{report:?}");

                    // The newest entries deleted; then the whole log.
                    exec(&pool, "DELETE FROM fieldseal_audit WHERE seq > 3").await;
                    let report = admin.verify_audit().await.unwrap();
                    let broken = report.broken.expect("a truncated tail is reported");
                    assert!(broken.reason.contains("the log ends at entry 3"), "{}", broken.reason);
                    exec(&pool, "DELETE FROM fieldseal_audit").await;
                    let report = admin.verify_audit().await.unwrap();
                    let broken = report.broken.expect("a wiped log is reported");
                    assert!(broken.reason.contains("the log was wiped"), "{}", broken.reason);
                })
                .await;
            }

            /// `acme` followed by an invisible code point is refused as a
            /// tenant id, not taken for a distinct tenant.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn invisible_tenant_ids_are_refused() {
                $with(|_pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store.clone()).build();
                    sealer.create_tenant("acme").await.unwrap();
                    for c in ['\u{FE0F}', '\u{034F}', '\u{3164}', '\u{115F}', '\u{1160}', '\u{FFA0}', '\u{2800}'] {
                        let id = format!("acme{c}");
                        let err = sealer.create_tenant(&id).await.unwrap_err();
                        assert!(matches!(err, Error::InvalidContext { .. }), "U+{:04X}: {err}", u32::from(c));
                        // Nor created on first use.
                        let ctx = Context::builder(id.as_str(), "accounts", "token").build().unwrap();
                        let err = sealer.seal(&ctx, b"x").await.unwrap_err();
                        assert!(matches!(err, Error::InvalidContext { .. }), "U+{:04X}: {err}", u32::from(c));
                    }
                    assert_eq!(sealer.admin().tenants().await.unwrap(), vec!["acme".to_string()]);
                })
                .await;
            }

            /// `plan` before the key store exists, and dry runs, write
            /// nothing; a run with nothing to do records no job; a run that
            /// cannot unwrap its keys fails before it records one.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn plans_dry_runs_and_idle_runs_write_nothing() {
                $with(|pool, _| async move {
                    create(&pool).await;
                    exec(&pool, &format!("ALTER TABLE accounts ADD plain {}", $text)).await;
                    for id in 1..=20 {
                        sqlx::query::<$db>(q("INSERT INTO accounts (id, tenant, plain) VALUES (?, ?, ?)"))
                            .bind(id)
                            .bind(if id % 2 == 0 { "acme" } else { "globex" })
                            .bind(format!("token-{id}"))
                            .execute(&pool)
                            .await
                            .unwrap();
                    }
                    let tables = || async {
                        let sql = match stringify!($name) {
                            "postgres" => "SELECT CAST(table_name AS TEXT) FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1",
                            "sqlite" => "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1",
                            _ => "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = DATABASE() ORDER BY 1",
                        };
                        sqlx::query_scalar::<$db, String>(sqlx::AssertSqlSafe(sql.to_string()))
                            .fetch_all(&pool)
                            .await
                            .unwrap()
                            .into_iter()
                            .filter(|t| !t.starts_with("fieldseal_") || t.contains("job"))
                            .collect::<Vec<_>>()
                    };
                    let rows = || async {
                        sqlx::query_as::<$db, (i64, Option<Vec<u8>>)>(q("SELECT id, token FROM accounts ORDER BY id"))
                            .fetch_all(&pool)
                            .await
                            .unwrap()
                    };
                    let (tables_before, rows_before) = (tables().await, rows().await);
                    // A key store whose tables do not exist yet.
                    let store = fieldseal::SqlKeyStore::new(pool.clone()).with_table_prefix("fresh_").unwrap();
                    let sealer = Sealer::builder(local_provider(), store.clone()).build();
                    let spec = TableSpec::new("accounts", "id", KeyType::Integer)
                        .tenant_column("tenant")
                        .column(ColumnSpec::new("token", ColumnForm::Binary).migrate_from("plain"));
                    let columns = SealedColumns::new(pool.clone(), sealer.clone(), vec![spec.clone()]).unwrap();
                    let plan = columns.plan(&now_options()).await.unwrap();
                    assert_eq!(plan.legacy(), 20);
                    assert!(plan.estimated_migrate > Duration::ZERO);
                    let mut dry = now_options();
                    dry.dry_run = true;
                    let report = columns.migrate(&dry).await.unwrap();
                    assert_eq!(report.totals().written, 20);
                    assert_eq!(tables().await, tables_before, "a plan or dry run created tables");
                    assert_eq!(rows().await, rows_before);

                    store.migrate().await.unwrap();
                    let jobs = || async {
                        sqlx::query_scalar::<$db, String>(q("SELECT id FROM fieldseal_jobs ORDER BY id"))
                            .fetch_all(&pool)
                            .await
                            .unwrap_or_default()
                    };
                    let report = columns.migrate(&now_options()).await.unwrap();
                    assert_eq!(report.totals().written, 20);
                    assert_eq!(jobs().await, vec!["migrate:accounts:*".to_string()]);
                    // Nothing to do: no job run, no job row.
                    let report = columns.migrate(&now_options()).await.unwrap();
                    assert_eq!(report.totals().written, 0);
                    assert_eq!(report.tables[0].job, None);
                    assert!(report.tables[0].complete);
                    let report = columns.reseal(&now_options()).await.unwrap();
                    assert_eq!((report.totals().written, report.totals().current), (0, 20));
                    assert_eq!(report.tables[0].job, None);
                    assert_eq!(jobs().await, vec!["migrate:accounts:*".to_string()]);
                    // A wrong root key fails before any job row.
                    sealer.admin().rotate("acme").await.unwrap();
                    let wrong = Sealer::builder(
                        fieldseal::LocalKeyProvider::new("test-root", fieldseal::RootKey::from_bytes(&mut [3; 32])).unwrap(),
                        store.clone(),
                    )
                    .build();
                    let err = SealedColumns::new(pool.clone(), wrong, vec![spec])
                        .unwrap()
                        .reseal(&now_options())
                        .await
                        .unwrap_err();
                    assert!(matches!(err, Error::UnwrapFailed { .. }), "{err}");
                    assert_eq!(jobs().await, vec!["migrate:accounts:*".to_string()]);
                    // A rate limit under which one batch outlasts half the
                    // lease is refused: the batch would lose its lease.
                    let mut slow = now_options();
                    slow.lease = Duration::from_secs(2);
                    slow.max_rows_per_sec = Some(4);
                    let err = columns.reseal(&slow).await.unwrap_err();
                    assert!(matches!(err, Error::Config { .. }), "{err}");
                    assert!(err.to_string().contains("half the lease"), "{err}");
                    // The workers share the rate: four of them wait four
                    // times as long for one batch.
                    let mut shared = now_options();
                    shared.lease = Duration::from_secs(6);
                    shared.batch = 8;
                    shared.max_rows_per_sec = Some(8);
                    shared.workers = 1;
                    columns.reseal(&shared).await.unwrap();
                    shared.workers = 4;
                    let err = columns.reseal(&shared).await.unwrap_err();
                    assert!(err.to_string().contains("shared by 4 workers"), "{err}");
                })
                .await;
            }

            /// The check that a run's keys unwrap, before it records a job,
            /// probes a tenant that is not shredded: a shredded tenant's
            /// plaintext sorting first does not let a wrong root key through.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_wrong_root_key_fails_before_a_job_row_past_a_shredded_tenant() {
                $with(|pool, store| async move {
                    create(&pool).await;
                    exec(&pool, &format!("ALTER TABLE accounts ADD plain {}", $text)).await;
                    let sealer = Sealer::builder(local_provider(), store.clone()).build();
                    sealer.create_tenant("aaa").await.unwrap();
                    sealer.create_tenant("zed").await.unwrap();
                    sealer.admin().shred_tenant("aaa").await.unwrap();
                    for (id, tenant) in [(1, "aaa"), (2, "zed")] {
                        sqlx::query::<$db>(q("INSERT INTO accounts (id, tenant, plain) VALUES (?, ?, 'token')"))
                            .bind(id)
                            .bind(tenant)
                            .execute(&pool)
                            .await
                            .unwrap();
                    }
                    let wrong = Sealer::builder(
                        fieldseal::LocalKeyProvider::new("test-root", fieldseal::RootKey::from_bytes(&mut [3; 32])).unwrap(),
                        store.clone(),
                    )
                    .build();
                    let spec = TableSpec::new("accounts", "id", KeyType::Integer)
                        .tenant_column("tenant")
                        .column(ColumnSpec::new("token", ColumnForm::Binary).migrate_from("plain"));
                    let err = SealedColumns::new(pool.clone(), wrong, vec![spec])
                        .unwrap()
                        .migrate(&now_options())
                        .await
                        .unwrap_err();
                    assert!(matches!(err, Error::UnwrapFailed { .. }), "{err}");
                    let jobs = sqlx::query_scalar::<$db, String>(q("SELECT id FROM fieldseal_jobs"))
                        .fetch_all(&pool)
                        .await
                        .unwrap_or_default();
                    assert!(jobs.is_empty(), "{jobs:?}");
                })
                .await;
            }

            /// Progress never passes the total it announced, even when
            /// ranges are swept again; the values of a shredded tenant are
            /// counted alike by plan, verify and re-seal, and are not
            /// failures.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn progress_and_shredded_tenants_add_up() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store.clone()).build();
                    create(&pool).await;
                    for id in 1..=40 {
                        insert(&pool, &sealer, id, if id % 2 == 0 { "acme" } else { "globex" }).await;
                    }
                    // Two values under v1 for each of acme's rows, which the
                    // application swaps while the job runs.
                    let mut pairs = Vec::new();
                    for id in (2..=40).step_by(2) {
                        let ctx = token_ctx("acme", id);
                        let a = sealer.seal(&ctx, format!("token-{id}").as_bytes()).await.unwrap();
                        let b = sealer.seal(&ctx, format!("token-{id}").as_bytes()).await.unwrap();
                        pairs.push((id, a, b));
                    }
                    sealer.admin().rotate("acme").await.unwrap();
                    sealer.admin().shred_tenant("globex").await.unwrap();
                    let columns = SealedColumns::new(pool.clone(), sealer.clone(), vec![spec()]).unwrap();
                    let plan = columns.plan(&now_options()).await.unwrap();
                    let usage = &plan.columns[&("accounts".to_string(), "token".to_string())];
                    assert!(usage["globex"].shredded);
                    assert_eq!(usage["globex"].not_primary, 0);
                    assert_eq!(plan.not_primary(), 20);
                    let verify = columns.verify(&now_options()).await.unwrap();
                    assert_eq!((verify.totals().shredded, verify.totals().failed), (20, 0));

                    // The application rewrites acme's rows while the job runs,
                    // so that ranges are swept again: at a known point (after
                    // the job read a batch, before it writes it), the first
                    // three times the job checks a batch's tenants.
                    let pairs = Arc::new(pairs);
                    let calls = Arc::new(AtomicU64::new(0));
                    let hooked = {
                        let (pool, pairs, calls) = (pool.clone(), pairs.clone(), calls.clone());
                        common::BatchHookStore::new(store.clone(), move || {
                            let (pool, pairs, calls) = (pool.clone(), pairs.clone(), calls.clone());
                            async move {
                                let round = calls.fetch_add(1, Ordering::SeqCst);
                                if round >= 3 {
                                    return;
                                }
                                for (id, a, b) in pairs.iter() {
                                    let value = if round % 2 == 0 { b } else { a };
                                    sqlx::query::<$db>(q("UPDATE accounts SET token = ? WHERE id = ?"))
                                        .bind(value.clone())
                                        .bind(*id)
                                        .execute(&pool)
                                        .await
                                        .unwrap();
                                }
                            }
                        })
                    };
                    let racing = Sealer::builder(local_provider(), hooked).build();
                    let job = SealedColumns::new(pool.clone(), racing, vec![spec()]).unwrap();
                    let seen = Arc::new(Totals::default());
                    let mut o = now_options();
                    o.batch = 4;
                    o.progress = Some(seen.clone());
                    let report = job.reseal(&o).await.unwrap();
                    let (total, advanced) = *seen.0.lock().unwrap();
                    assert!(calls.load(Ordering::SeqCst) >= 3, "the job checked its batches' tenants");
                    assert!(report.totals().changed > 0, "the application never raced the job");
                    // Each value counted once, though ranges were swept again.
                    assert_eq!(report.totals().scanned, 40);
                    assert!(advanced <= total, "progress reached {advanced} of {total}");
                    assert_eq!(report.totals().shredded, 20);
                    assert_eq!(report.totals().failed, 0, "{:?}", report.tables[0].failures);
                    let verify = columns.verify(&now_options()).await.unwrap();
                    assert_eq!((verify.totals().shredded, verify.totals().failed), (20, 0));
                })
                .await;
            }

            /// Two key stores under one root key: a key row, or the audit key
            /// with the whole audit chain, copied from one into the other
            /// does not unwrap there (every wrap names its store).
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn stores_sharing_a_root_key_are_not_interchangeable() {
                $with(|pool, _| async move {
                    let store = |prefix: &str| fieldseal::SqlKeyStore::new(pool.clone()).with_table_prefix(prefix).unwrap();
                    let (a, b) = (store("a_"), store("b_"));
                    a.migrate().await.unwrap();
                    b.migrate().await.unwrap();
                    let ia = fieldseal::store::KeyStore::store_identity(&a).await.unwrap().unwrap();
                    let ib = fieldseal::store::KeyStore::store_identity(&b).await.unwrap().unwrap();
                    assert_ne!(ia.id, ib.id);
                    assert!(!ia.accepts_unbound && !ib.accepts_unbound);
                    let in_a = Sealer::builder(local_provider(), a.clone()).build();
                    let in_b = Sealer::builder(local_provider(), b.clone()).build();
                    let value = in_a.seal(&token_ctx("acme", 1), b"a's secret").await.unwrap();
                    in_b.create_tenant("acme").await.unwrap();
                    assert!(in_a.admin().verify_audit().await.unwrap().is_intact());

                    // A's key row into B's.
                    for sql in [
                        "UPDATE b_keys SET wrapped = (SELECT wrapped FROM a_keys WHERE tenant = 'acme' AND version = 1) \
                         WHERE tenant = 'acme' AND version = 1",
                    ] {
                        exec(&pool, sql).await;
                    }
                    let fresh_b = Sealer::builder(local_provider(), b.clone()).build();
                    let err = fresh_b.open(&token_ctx("acme", 1), &value).await.unwrap_err();
                    assert!(matches!(err, Error::UnwrapFailed { .. }), "{err}");

                    // A's audit key and whole chain into B.
                    for sql in [
                        "DELETE FROM b_audit",
                        "INSERT INTO b_audit SELECT * FROM a_audit",
                        "DELETE FROM b_audit_head",
                        "INSERT INTO b_audit_head SELECT * FROM a_audit_head",
                        "DELETE FROM b_audit_key",
                        "INSERT INTO b_audit_key SELECT * FROM a_audit_key",
                    ] {
                        exec(&pool, sql).await;
                    }
                    let fresh_b = Sealer::builder(local_provider(), b.clone()).build();
                    match fresh_b.admin().verify_audit().await {
                        Err(Error::UnwrapFailed { .. }) => {}
                        other => panic!("a copied audit chain verified in another store: {other:?}"),
                    }
                })
                .await;
            }

            /// A store upgraded from before stores had identities accepts the
            /// keys wrapped without one until `rewrap_all` has bound every key
            /// to it; then it refuses them, and turning that back on by SQL
            /// is reported by `verify_audit`.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn keys_wrapped_before_store_ids_are_bound_then_refused() {
                $with(|pool, store| async move {
                    // A key of acme's wrapped the old way (no store in the
                    // context), as an upgraded store holds it.
                    let sealer = Sealer::builder(local_provider(), store.clone()).build();
                    sealer.create_tenant("acme").await.unwrap();
                    let key = fieldseal::provider::TenantKey::generate().unwrap();
                    let legacy = fieldseal::provider::KeyProvider::wrap(
                        &local_provider(),
                        &key,
                        &fieldseal::provider::WrapContext::tenant_key("acme", 1),
                    )
                    .await
                    .unwrap();
                    sqlx::query::<$db>(q("UPDATE fieldseal_keys SET wrapped = ?, bound = 0 WHERE tenant = 'acme' AND version = 1"))
                        .bind(legacy.as_bytes().to_vec())
                        .execute(&pool)
                        .await
                        .unwrap();
                    let fresh = || Sealer::builder(local_provider(), store.clone()).build();
                    // A store created with an identity refuses it.
                    let err = fresh().tenant("acme").await.unwrap_err();
                    assert!(matches!(err, Error::UnwrapFailed { .. }), "{err}");
                    assert!(err.to_string().contains("no longer accepts"), "{err}");
                    // An upgraded one accepts it.
                    exec(&pool, "UPDATE fieldseal_store SET accepts_unbound = 1").await;
                    let value = fresh().seal(&token_ctx("acme", 1), b"old key").await.unwrap();
                    // rewrap_all binds it to the store, then refuses unbound keys.
                    let report = fresh().admin().rewrap_all("test-root").await.unwrap();
                    assert_eq!(report.rewrapped, 1, "{report:?}");
                    assert!(report.unbound_refused, "{report:?}");
                    let identity = fieldseal::store::KeyStore::store_identity(&store).await.unwrap().unwrap();
                    assert!(!identity.accepts_unbound);
                    let opened = fresh().open(&token_ctx("acme", 1), &value).await.unwrap();
                    assert_eq!(opened.plaintext().expose_secret(), b"old key");
                    assert!(fresh().admin().verify_audit().await.unwrap().is_intact());
                    // The old unbound row copied back is refused again.
                    sqlx::query::<$db>(q("UPDATE fieldseal_keys SET wrapped = ?, bound = 0 WHERE tenant = 'acme' AND version = 1"))
                        .bind(legacy.as_bytes().to_vec())
                        .execute(&pool)
                        .await
                        .unwrap();
                    let err = fresh().open(&token_ctx("acme", 1), &value).await.unwrap_err();
                    assert!(matches!(err, Error::UnwrapFailed { .. }), "{err}");
                    // Accepting them again by SQL is a mismatch with the log.
                    exec(&pool, "UPDATE fieldseal_store SET accepts_unbound = 1").await;
                    let report = fresh().admin().verify_audit().await.unwrap();
                    assert!(
                        report.mismatches.iter().any(|m| m.reason.contains("without its id again")),
                        "{report:?}"
                    );
                })
                .await;
            }

            /// A store created refusing keys wrapped without its id says so in
            /// its log's first entry: accepting them by SQL is reported by
            /// `verify_audit`, refused by `prune_audit`, and still reported
            /// after the entry that said so was pruned.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_new_store_made_to_accept_unbound_keys_is_reported() {
                $with(|pool, store| async move {
                    let sealer = || {
                        Sealer::builder(local_provider(), store.clone())
                            .min_audit_retention(Duration::ZERO)
                            .build()
                    };
                    sealer().create_tenant("acme").await.unwrap();
                    let entries = sealer().admin().audit_entries(0, 10).await.unwrap();
                    assert_eq!(entries.first().map(|e| e.event.as_str()), Some("store.unbound_wraps_refused"));
                    assert!(sealer().admin().verify_audit().await.unwrap().is_intact());
                    exec(&pool, "UPDATE fieldseal_store SET accepts_unbound = 1").await;
                    let report = sealer().admin().verify_audit().await.unwrap();
                    assert!(
                        report.mismatches.iter().any(|m| m.reason.contains("without its id again")),
                        "{report:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(1100)).await;
                    let err = sealer().admin().prune_audit(Duration::ZERO).await.unwrap_err();
                    assert!(matches!(err, Error::Refused { .. }), "{err}");
                    // Pruned while the store refuses: the refusal is restated.
                    exec(&pool, "UPDATE fieldseal_store SET accepts_unbound = 0").await;
                    assert!(sealer().admin().prune_audit(Duration::ZERO).await.unwrap() > 0);
                    exec(&pool, "UPDATE fieldseal_store SET accepts_unbound = 1").await;
                    let report = sealer().admin().verify_audit().await.unwrap();
                    assert!(
                        report.mismatches.iter().any(|m| m.reason.contains("without its id again")),
                        "{report:?}"
                    );
                })
                .await;
            }

            /// A process that read the store's identity while it accepted
            /// unbound keys refuses them once `rewrap_all` (in another
            /// process) made the store refuse them.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_running_sealer_sees_the_store_refuse_unbound_keys() {
                $with(|pool, store| async move {
                    exec(&pool, "UPDATE fieldseal_store SET accepts_unbound = 1").await;
                    let fresh = || Sealer::builder(local_provider(), store.clone()).build();
                    fresh().create_tenant("beta").await.unwrap();
                    let key = fieldseal::provider::TenantKey::generate().unwrap();
                    let legacy = fieldseal::provider::KeyProvider::wrap(
                        &local_provider(),
                        &key,
                        &fieldseal::provider::WrapContext::tenant_key("beta", 1),
                    )
                    .await
                    .unwrap();
                    let set_legacy = || async {
                        sqlx::query::<$db>(q("UPDATE fieldseal_keys SET wrapped = ?, bound = 0 WHERE tenant = 'beta' AND version = 1"))
                            .bind(legacy.as_bytes().to_vec())
                            .execute(&pool)
                            .await
                            .unwrap();
                    };
                    set_legacy().await;
                    let value = fresh().seal(&token_ctx("beta", 1), b"beta's").await.unwrap();
                    // A long-running process: it has read the identity.
                    let running = fresh();
                    running.seal(&token_ctx("acme", 1), b"acme's").await.unwrap();
                    let report = fresh().admin().rewrap_all("test-root").await.unwrap();
                    assert!(report.unbound_refused, "{report:?}");
                    // The unbound row put back: the running process refuses it.
                    set_legacy().await;
                    let err = running.open(&token_ctx("beta", 1), &value).await.unwrap_err();
                    assert!(matches!(err, Error::UnwrapFailed { .. }), "{err}");
                })
                .await;
            }

            /// `migrate` upgrades a store of schema version 1: the `bound`
            /// columns, an identity that accepts the keys already there, and
            /// version 2.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn migrate_upgrades_a_version_1_store() {
                $with(|pool, store| async move {
                    for sql in [
                        "ALTER TABLE fieldseal_keys DROP COLUMN bound",
                        "ALTER TABLE fieldseal_audit_key DROP COLUMN bound",
                        "DROP TABLE fieldseal_store",
                        "UPDATE fieldseal_schema_version SET version = 1",
                    ] {
                        exec(&pool, sql).await;
                    }
                    let fresh = store.clone();
                    fresh.migrate().await.unwrap();
                    fresh.migrate().await.unwrap();
                    let identity = fieldseal::store::KeyStore::store_identity(&fresh).await.unwrap().unwrap();
                    assert!(identity.accepts_unbound);
                    let sealer = Sealer::builder(local_provider(), fresh.clone()).build();
                    let value = sealer.seal(&token_ctx("acme", 1), b"after the upgrade").await.unwrap();
                    let opened = Sealer::builder(local_provider(), fresh).build().open(&token_ctx("acme", 1), &value).await.unwrap();
                    assert_eq!(opened.plaintext().expose_secret(), b"after the upgrade");
                })
                .await;
            }

            /// Keys changing while `verify_audit` runs (another process
            /// rotating) are no mismatch: the log's newer entries are read
            /// before a disagreement is reported.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn verify_audit_holds_while_keys_change() {
                $with(|_pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store.clone()).build();
                    let tenants = ["t1", "t2", "t3", "t4"];
                    for t in tenants {
                        sealer.create_tenant(t).await.unwrap();
                    }
                    let other = Sealer::builder(local_provider(), store.clone()).build();
                    let churn = tokio::spawn(async move {
                        for i in 0..40 {
                            let t = tenants[i % tenants.len()];
                            let rotation = other.admin().rotate(t).await.unwrap();
                            other.admin().set_min_decryption_version(t, rotation.previous).await.unwrap();
                        }
                    });
                    let mut checked = 0;
                    while !churn.is_finished() || checked < 3 {
                        let report = sealer.admin().verify_audit().await.unwrap();
                        assert!(report.is_intact(), "{report:?}");
                        checked += 1;
                    }
                    churn.await.unwrap();
                    assert!(checked >= 3);
                })
                .await;
            }

            /// A shredded tenant's plaintext is not erased: `migrate` cannot
            /// seal it and reports each value as a failure, never as
            /// "shredded"; its sealed values are counted as shredded.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_shredded_tenants_plaintext_is_reported_not_hidden() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store).build();
                    create(&pool).await;
                    exec(&pool, &format!("ALTER TABLE accounts ADD plain {}", $text)).await;
                    for id in 1..=4 {
                        insert(&pool, &sealer, id, "acme").await;
                    }
                    for id in 5..=9 {
                        sqlx::query::<$db>(q("INSERT INTO accounts (id, tenant, plain) VALUES (?, 'acme', ?)"))
                            .bind(id)
                            .bind(format!("token-{id}"))
                            .execute(&pool)
                            .await
                            .unwrap();
                    }
                    sealer.admin().shred_tenant("acme").await.unwrap();
                    let spec = TableSpec::new("accounts", "id", KeyType::Integer)
                        .tenant_column("tenant")
                        .column(ColumnSpec::new("token", ColumnForm::Binary).migrate_from("plain"));
                    let columns = SealedColumns::new(pool.clone(), sealer, vec![spec]).unwrap();
                    let report = columns.migrate(&now_options()).await.unwrap();
                    let totals = report.totals();
                    assert_eq!((totals.shredded, totals.failed, totals.written), (4, 5, 0), "{totals:?}");
                    assert_eq!(report.failures_by_kind()[&ErrorKind::TenantShredded], 5);
                })
                .await;
            }

            /// A root key file that holds another key under the right id:
            /// `verify_root_keys` and `rewrap_all` unwrap a stored key to
            /// prove it, instead of trusting the id.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_wrong_root_key_under_the_right_id_is_caught() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store.clone()).build();
                    create(&pool).await;
                    for (id, tenant) in [(1, "acme"), (2, "globex")] {
                        insert(&pool, &sealer, id, tenant).await;
                    }
                    sealer.admin().verify_audit().await.unwrap();
                    let check = sealer.admin().verify_root_keys().await.unwrap();
                    assert_eq!(check.keys_per_root, BTreeMap::from([("test-root".to_string(), 3)]));
                    let report = sealer.admin().rewrap_all("test-root").await.unwrap();
                    assert_eq!(report.already_current, 2);

                    let impostor = Sealer::builder(
                        fieldseal::LocalKeyProvider::new(
                            "test-root",
                            fieldseal::RootKey::from_bytes(&mut [7; 32]),
                        )
                        .unwrap(),
                        store.clone(),
                    )
                    .build();
                    let err = impostor.admin().verify_root_keys().await.unwrap_err();
                    assert!(matches!(err, Error::UnwrapFailed { .. }), "{err}");
                    assert!(err.to_string().contains("test-root"), "{err}");
                    let err = impostor.admin().rewrap_all("test-root").await.unwrap_err();
                    assert!(matches!(err, Error::UnwrapFailed { .. }), "{err}");
                    // Nothing changed: the right key still opens everything.
                    assert_eq!(all_open(&pool, &sealer).await.len(), 2);
                })
                .await;
            }

            /// `migrate` with a recipe under which the column's sealed
            /// values do not open (an extra pair the application never
            /// uses): refused as a configuration error, nothing written.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn migrate_refuses_a_recipe_the_sealed_values_do_not_open_under() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store.clone()).build();
                    create(&pool).await;
                    exec(&pool, &format!("ALTER TABLE accounts ADD plain {}", $text)).await;
                    // The application already writes sealed values for new
                    // rows; older rows hold plaintext only.
                    for id in 1..=6 {
                        insert(&pool, &sealer, id, "acme").await;
                    }
                    for id in 7..=30 {
                        sqlx::query::<$db>(q("INSERT INTO accounts (id, tenant, plain) VALUES (?, ?, ?)"))
                            .bind(id)
                            .bind("acme")
                            .bind(format!("token-{id}"))
                            .execute(&pool)
                            .await
                            .unwrap();
                    }
                    let snapshot = || async {
                        sqlx::query_as::<$db, (i64, Option<Vec<u8>>)>(q(
                            "SELECT id, token FROM accounts ORDER BY id",
                        ))
                        .fetch_all(&pool)
                        .await
                        .unwrap()
                    };
                    let before = snapshot().await;
                    let table = |column: ColumnSpec| {
                        TableSpec::new("accounts", "id", KeyType::Integer)
                            .tenant_column("tenant")
                            .column(column)
                    };
                    let wrong = SealedColumns::new(
                        pool.clone(),
                        sealer.clone(),
                        vec![table(
                            ColumnSpec::new("token", ColumnForm::Binary)
                                .migrate_from("plain")
                                .extra_value("provider", "github"),
                        )],
                    )
                    .unwrap();
                    for dry_run in [true, false] {
                        let mut o = now_options();
                        o.dry_run = dry_run;
                        let err = wrong.migrate(&o).await.unwrap_err();
                        assert!(matches!(err, Error::Config { .. }), "{err}");
                        let text = err.to_string();
                        assert!(text.contains("accounts.token"), "{text}");
                        assert!(text.contains("do not open"), "{text}");
                        assert_eq!(snapshot().await, before);
                    }

                    let right = SealedColumns::new(
                        pool.clone(),
                        sealer.clone(),
                        vec![table(ColumnSpec::new("token", ColumnForm::Binary).migrate_from("plain"))],
                    )
                    .unwrap();
                    let report = right.migrate(&now_options()).await.unwrap();
                    assert_eq!(report.totals().written, 24);
                    assert_eq!(all_open(&pool, &sealer).await.len(), 30);
                })
                .await;
            }

            /// Primary keys of every integer width, and text, varchar and
            /// uuid keys: check, plan, migrate, verify, reseal and retire.
            /// Key columns of other types are refused by `check`.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn every_supported_key_type_works_and_others_are_refused() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store.clone()).build();
                    for (i, (sql_type, key_type, uuid)) in $keys.into_iter().enumerate() {
                        let table = format!("keyed_{i}");
                        exec(
                            &pool,
                            &format!(
                                "CREATE TABLE {table} (id {sql_type} PRIMARY KEY, tenant {text} NOT NULL, \
                                 plain {text}, token {text})",
                                text = $text
                            ),
                        )
                        .await;
                        let id_of = |n: i64| match (key_type, uuid) {
                            (KeyType::Integer, _) => n.to_string(),
                            (_, true) => format!("00000000-0000-4000-8000-{n:012}"),
                            _ => format!("row-{n:03}"),
                        };
                        for n in 1..=25 {
                            let insert = match key_type {
                                KeyType::Integer => format!(
                                    "INSERT INTO {table} (id, tenant, plain) VALUES ({}, ?, ?)",
                                    id_of(n)
                                ),
                                _ if uuid => format!(
                                    "INSERT INTO {table} (id, tenant, plain) VALUES (CAST('{}' AS {sql_type}), ?, ?)",
                                    id_of(n)
                                ),
                                _ => format!(
                                    "INSERT INTO {table} (id, tenant, plain) VALUES ('{}', ?, ?)",
                                    id_of(n)
                                ),
                            };
                            sqlx::query::<$db>(q(&insert))
                                .bind(if n % 2 == 0 { "acme" } else { "globex" })
                                .bind(format!("secret-{n}"))
                                .execute(&pool)
                                .await
                                .unwrap();
                        }
                        let spec = TableSpec::new(&table, "id", key_type)
                            .tenant_column("tenant")
                            .column(ColumnSpec::new("token", ColumnForm::Text).migrate_from("plain"));
                        let columns =
                            SealedColumns::new(pool.clone(), sealer.clone(), vec![spec]).unwrap();
                        columns.check().await.unwrap_or_else(|e| panic!("{sql_type}: {e}"));
                        let mut o = now_options();
                        o.batch = 3;
                        o.range_rows = Some(7);
                        let plan = columns.plan(&o).await.unwrap_or_else(|e| panic!("{sql_type}: {e}"));
                        assert_eq!(plan.legacy(), 25, "{sql_type}");
                        let report = columns.migrate(&o).await.unwrap_or_else(|e| panic!("{sql_type}: {e}"));
                        assert_eq!(report.totals().written, 25, "{sql_type}");
                        assert!(report.tables[0].complete, "{sql_type}");
                        for tenant in ["acme", "globex"] {
                            sealer.admin().rotate(tenant).await.unwrap();
                        }
                        let report = columns.reseal(&o).await.unwrap_or_else(|e| panic!("{sql_type}: {e}"));
                        assert_eq!(report.totals().written, 25, "{sql_type}");
                        let verify = columns.verify(&o).await.unwrap();
                        assert_eq!(verify.totals().failed, 0, "{sql_type}: {:?}", verify.tables[0].failures);
                        assert_eq!(verify.totals().current, 25, "{sql_type}");
                        // The row id in each context is the key as text.
                        let rows: Vec<(String, String)> = sqlx::query_as(q(&format!(
                            "SELECT tenant, token FROM {table} ORDER BY id"
                        )))
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                        for (n, (tenant, token)) in (1..).zip(rows) {
                            let ctx = Context::builder(tenant.as_str(), table.as_str(), "token")
                                .row(id_of(n))
                                .build()
                                .unwrap();
                            let value = fieldseal::SealedValue::from_text(&token).unwrap();
                            let opened = sealer.open(&ctx, &value).await.unwrap();
                            assert_eq!(opened.plaintext().expose_secret(), format!("secret-{n}").as_bytes());
                        }
                        let report = columns.retire(&o).await.unwrap();
                        assert_eq!(report.tenants["acme"].destroyed.len(), 1, "{sql_type}");
                        assert_eq!(report.tenants["globex"].destroyed.len(), 1, "{sql_type}");
                    }

                    for (i, (sql_type, key_type, hint)) in $bad_keys.into_iter().enumerate() {
                        let table = format!("badkey_{i}");
                        exec(
                            &pool,
                            &format!(
                                "CREATE TABLE {table} (id {sql_type} PRIMARY KEY, tenant {text}, token {text})",
                                text = $text
                            ),
                        )
                        .await;
                        let spec = TableSpec::new(&table, "id", key_type)
                            .tenant_column("tenant")
                            .column(ColumnSpec::new("token", ColumnForm::Text));
                        let err = SealedColumns::new(pool.clone(), sealer.clone(), vec![spec])
                            .unwrap()
                            .check()
                            .await
                            .unwrap_err();
                        assert!(matches!(err, Error::Config { .. }), "{sql_type}: {err}");
                        let text = err.to_string();
                        assert!(text.contains("tables[0].key"), "{sql_type}: {text}");
                        assert!(text.contains(hint), "{sql_type}: {text}");
                    }
                })
                .await;
            }
        }
    };
}

suite!(
    sqlite,
    db::with_sqlite,
    sqlx::Sqlite,
    same,
    "CREATE TABLE accounts (id INTEGER PRIMARY KEY, tenant TEXT COLLATE NOCASE NOT NULL, \
     token BLOB)",
    [] as [&str; 0],
    keys: [
        ("INTEGER", KeyType::Integer, false),
        ("BIGINT", KeyType::Integer, false),
        ("SMALLINT", KeyType::Integer, false),
        ("TEXT", KeyType::Text, false),
        ("VARCHAR(36)", KeyType::Text, true),
    ],
    bad_keys: [
        ("REAL", KeyType::Integer, "real"),
        ("BLOB", KeyType::Text, "blob"),
        ("TEXT", KeyType::Integer, "text"),
    ],
    text: "TEXT",
    quote: |n: &str| format!("`{n}`"),
    refuse_v2: "CREATE TRIGGER refuse_v2 BEFORE INSERT ON fieldseal_keys WHEN NEW.version >= 2 \
                BEGIN SELECT RAISE(ABORT, 'no second version'); END"
);

suite!(
    postgres,
    db::with_postgres,
    sqlx::Postgres,
    pg,
    "CREATE TABLE accounts (id BIGINT PRIMARY KEY, tenant TEXT COLLATE fs_ci NOT NULL, \
     token BYTEA)",
    [
        "CREATE COLLATION fs_ci (provider = icu, locale = 'und-u-ks-level1', \
         deterministic = false)"
    ],
    keys: [
        ("SMALLINT", KeyType::Integer, false),
        ("INTEGER", KeyType::Integer, false),
        ("BIGINT", KeyType::Integer, false),
        ("SERIAL", KeyType::Integer, false),
        ("TEXT", KeyType::Text, false),
        ("VARCHAR(40)", KeyType::Text, false),
        ("UUID", KeyType::Uuid, true),
    ],
    bad_keys: [
        ("NUMERIC(10)", KeyType::Integer, "numeric"),
        ("BYTEA", KeyType::Text, "bytea"),
        ("UUID", KeyType::Text, "uuid"),
        ("TEXT", KeyType::Uuid, "text"),
    ],
    text: "TEXT",
    quote: |n: &str| format!("\"{n}\""),
    refuse_v2: "ALTER TABLE fieldseal_keys ADD CONSTRAINT refuse_v2 CHECK (version < 2)"
);

suite!(
    mysql,
    db::with_mysql,
    sqlx::MySql,
    same,
    "CREATE TABLE accounts (id BIGINT PRIMARY KEY, \
     tenant VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, token BLOB)",
    [] as [&str; 0],
    keys: [
        ("TINYINT", KeyType::Integer, false),
        ("SMALLINT", KeyType::Integer, false),
        ("INT", KeyType::Integer, false),
        ("INT UNSIGNED", KeyType::Integer, false),
        ("BIGINT", KeyType::Integer, false),
        ("VARCHAR(40)", KeyType::Text, false),
        ("CHAR(36)", KeyType::Text, true),
    ],
    bad_keys: [
        ("DECIMAL(10,0)", KeyType::Integer, "decimal"),
        ("BIGINT UNSIGNED", KeyType::Integer, "unsigned"),
        ("VARBINARY(16)", KeyType::Text, "varbinary"),
    ],
    text: "VARCHAR(255)",
    quote: |n: &str| format!("`{n}`"),
    refuse_v2: "ALTER TABLE fieldseal_keys ADD CONSTRAINT refuse_v2 CHECK (version < 2)"
);

suite!(
    mysql_ci,
    db::with_mysql,
    sqlx::MySql,
    same,
    "CREATE TABLE accounts (id BIGINT PRIMARY KEY, \
     tenant VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL, token BLOB)",
    [] as [&str; 0],
    keys: [("INT", KeyType::Integer, false)],
    bad_keys: [("FLOAT", KeyType::Integer, "float")],
    text: "VARCHAR(255)",
    quote: |n: &str| format!("`{n}`"),
    refuse_v2: "ALTER TABLE fieldseal_keys ADD CONSTRAINT refuse_v2 CHECK (version < 2)"
);
