//! Blind indexes in real tables, on SQLite, PostgreSQL and MySQL/MariaDB:
//! insert, look up, rotate, look up before and after re-sealing, destroy the
//! old version and look up again (a row under the destroyed version is
//! reported, never silently missing); `= ANY($1)` on PostgreSQL and `IN (…)`
//! everywhere; and the unique-values pattern of FORMAT.md, raced.

mod common;
#[path = "common/db.rs"]
mod db;

use db::pg;

use common::local_provider;
use fieldseal::secrecy::ExposeSecret as _;
use fieldseal::{
    Context, ContextTemplate, Error, SealedValue, Sealer, TenantSealer,
    blind_index::{BlindIndex, Normalizer, Search},
    jobs::{ColumnForm, ColumnSpec, JobOptions, KeyType, SealedColumns, TableSpec},
};

fn email_index() -> BlindIndex {
    BlindIndex::builder("users", "email", "email_idx")
        .normalizer(Normalizer::email())
        .build()
        .unwrap()
}

fn template(tenant: &str) -> ContextTemplate {
    Context::builder(tenant, "users", "email")
        .template()
        .unwrap()
}

macro_rules! blind_index_suite {
    ($name:ident, $with:path, $db:ty, $bytes:literal, $idx:literal, $sql:expr) => {
        mod $name {
            use super::*;

            type Pool = sqlx::Pool<$db>;

            #[allow(clippy::redundant_closure_call)]
            fn q(sql: &str) -> sqlx::AssertSqlSafe<String> {
                sqlx::AssertSqlSafe(($sql)(sql))
            }

            async fn create_tables(pool: &Pool) {
                for sql in [
                    concat!(
                        "CREATE TABLE users (id BIGINT NOT NULL PRIMARY KEY, ",
                        "tenant_id VARCHAR(255) NOT NULL, email ", $bytes, " NOT NULL, ",
                        "email_idx ", $idx, " NOT NULL, ",
                        "CONSTRAINT users_email_unique UNIQUE (tenant_id, email_idx))"
                    ),
                    "CREATE TABLE tenants (id VARCHAR(255) NOT NULL PRIMARY KEY, n BIGINT NOT NULL)",
                ] {
                    sqlx::query::<$db>(q(sql)).execute(pool).await.unwrap();
                }
                for t in ["acme", "globex"] {
                    sqlx::query::<$db>(q("INSERT INTO tenants (id, n) VALUES (?, 0)"))
                        .bind(t)
                        .execute(pool)
                        .await
                        .unwrap();
                }
            }

            async fn insert(pool: &Pool, t: &TenantSealer, id: i64, email: &str) {
                let sealed = t.seal_row(&template(t.tenant()), id, email.as_bytes()).unwrap();
                let idx = t.blind_index(&email_index(), email.as_bytes()).unwrap();
                assert_eq!(idx.key_version(), sealed.key_version());
                sqlx::query::<$db>(q(
                    "INSERT INTO users (id, tenant_id, email, email_idx) VALUES (?, ?, ?, ?)",
                ))
                .bind(id)
                .bind(t.tenant())
                .bind(&sealed)
                .bind(idx.as_bytes())
                .execute(pool)
                .await
                .unwrap();
            }

            /// The candidates of a search: `IN (…)` built with `push_values`.
            async fn candidates<'c, E>(conn: E, tenant: &str, search: &Search) -> Vec<(i64, SealedValue)>
            where
                E: sqlx::Executor<'c, Database = $db>,
            {
                let mut query = sqlx::QueryBuilder::<$db>::new(
                    "SELECT id, email FROM users WHERE tenant_id = ",
                );
                query.push_bind(tenant.to_string()).push(" AND email_idx IN ");
                search.push_values(&mut query);
                query.push(" ORDER BY id");
                query.build_query_as().fetch_all(conn).await.unwrap()
            }

            /// Looks `email` up and returns the ids of the confirmed rows.
            async fn lookup(pool: &Pool, t: &TenantSealer, email: &str) -> Result<Vec<i64>, Error> {
                let search = t.search(&email_index(), email.as_bytes())?;
                let rows = candidates(pool, t.tenant(), &search).await;
                let found = t.open_matches(&search, &template(t.tenant()), rows)?;
                Ok(found.into_iter().map(|(id, _)| id).collect())
            }

            /// Re-seals one row under the primary with its index recomputed, in
            /// one compare-and-swap write.
            async fn reseal(pool: &Pool, t: &TenantSealer, id: i64) {
                let (sealed,): (SealedValue,) =
                    sqlx::query_as::<$db, (SealedValue,)>(q("SELECT email FROM users WHERE id = ?"))
                        .bind(id)
                        .fetch_one(pool)
                        .await
                        .unwrap();
                let opened = t.open_row(&template(t.tenant()), id, &sealed).unwrap();
                assert!(opened.is_stale());
                let plain = opened.plaintext().expose_secret();
                let new = t.seal_row(&template(t.tenant()), id, plain).unwrap();
                let idx = t.blind_index(&email_index(), plain).unwrap();
                let done = sqlx::query::<$db>(q(
                    "UPDATE users SET email = ?, email_idx = ? WHERE id = ? AND email = ?",
                ))
                .bind(&new)
                .bind(idx.as_bytes())
                .bind(id)
                .bind(&sealed)
                .execute(pool)
                .await
                .unwrap();
                assert_eq!(done.rows_affected(), 1);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn search_through_rotation_and_destruction() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store).build();
                    let admin = sealer.admin();
                    create_tables(&pool).await;
                    let (acme, globex) = (sealer.tenant("acme").await.unwrap(), sealer.tenant("globex").await.unwrap());
                    for id in 1..=20 {
                        insert(&pool, &acme, id, &format!("User{id}@Example.com")).await;
                        // The same addresses for another tenant.
                        insert(&pool, &globex, 100 + id, &format!("user{id}@example.com")).await;
                    }

                    assert_eq!(lookup(&pool, &acme, "user7@EXAMPLE.com.").await.unwrap(), [7]);
                    assert_eq!(lookup(&pool, &globex, "user7@example.com").await.unwrap(), [107]);
                    assert!(lookup(&pool, &acme, "nobody@example.com").await.unwrap().is_empty());
                    // Without the tenant filter, acme's values still match only acme's rows.
                    let search = acme.search(&email_index(), b"user7@example.com").unwrap();
                    let mut query = sqlx::QueryBuilder::<$db>::new("SELECT id, email FROM users WHERE email_idx IN ");
                    search.push_values(&mut query);
                    let rows: Vec<(i64, SealedValue)> = query.build_query_as().fetch_all(&pool).await.unwrap();
                    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [7]);

                    // Rotate: rows not yet re-sealed are found by their version 1 value.
                    admin.rotate("acme").await.unwrap();
                    let acme = sealer.tenant_checked("acme").await.unwrap();
                    assert_eq!(acme.primary_version(), 2);
                    assert_eq!(lookup(&pool, &acme, "user7@example.com").await.unwrap(), [7]);
                    // A row written after the rotation is found by its version 2 value.
                    insert(&pool, &acme, 21, "late@example.com").await;
                    assert_eq!(lookup(&pool, &acme, "LATE@example.com").await.unwrap(), [21]);

                    // Re-seal every row but 9, recomputing its index.
                    for id in (1..=20).filter(|id| *id != 9) {
                        reseal(&pool, &acme, id).await;
                    }
                    assert_eq!(lookup(&pool, &acme, "user7@example.com").await.unwrap(), [7]);
                    assert_eq!(lookup(&pool, &acme, "user9@example.com").await.unwrap(), [9]);
                    let (stored,): (Vec<u8>,) = sqlx::query_as::<$db, (Vec<u8>,)>(q("SELECT email_idx FROM users WHERE id = 7"))
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                    let search = acme.search(&email_index(), b"user7@example.com").unwrap();
                    assert_eq!(stored, search.terms()[0].as_bytes(), "row 7 is indexed under version 2");

                    // Destroy version 1 while row 9 is still under it: every
                    // search reports it instead of returning fewer rows.
                    admin.destroy_version("acme", 1).await.unwrap();
                    let acme = sealer.tenant_checked("acme").await.unwrap();
                    let err = lookup(&pool, &acme, "user9@example.com").await.unwrap_err();
                    assert!(matches!(err, Error::IncompleteSearch { version: 1, .. }), "{err}");
                    assert!(err.to_string().contains("destroyed"), "{err}");
                    // A partial search says what it skipped; row 9 is not found.
                    let partial = acme.search_partial(&email_index(), b"user9@example.com").unwrap();
                    assert!(matches!(partial.skipped(), [Error::KeyDestroyed { version: 1, .. }]));
                    assert!(candidates(&pool, "acme", &partial).await.is_empty());
                    let partial = acme.search_partial(&email_index(), b"user7@example.com").unwrap();
                    assert_eq!(candidates(&pool, "acme", &partial).await.len(), 1);

                    // Once row 9 is gone, the minimum closes the gap.
                    sqlx::query::<$db>(q("DELETE FROM users WHERE id = 9")).execute(&pool).await.unwrap();
                    admin.set_min_decryption_version("acme", 2).await.unwrap();
                    let acme = sealer.tenant_checked("acme").await.unwrap();
                    assert_eq!(lookup(&pool, &acme, "user7@example.com").await.unwrap(), [7]);
                    // globex was never touched.
                    assert_eq!(lookup(&pool, &globex, "user9@example.com").await.unwrap(), [109]);
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_runner_moves_index_values_with_the_values() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store).build();
                    create_tables(&pool).await;
                    for id in 1..=40 {
                        let t = sealer.tenant(if id % 2 == 0 { "acme" } else { "globex" }).await.unwrap();
                        insert(&pool, &t, id, &format!("user{id}@example.com")).await;
                    }
                    for t in ["acme", "globex"] {
                        sealer.admin().rotate(t).await.unwrap();
                    }
                    let spec = TableSpec::new("users", "id", KeyType::Integer)
                        .tenant_column("tenant_id")
                        .column(
                            ColumnSpec::new("email", ColumnForm::Binary)
                                .blind_index("email_idx", email_index()),
                        );
                    // An index column must never be one the contexts are read from.
                    let clash = TableSpec::new("users", "id", KeyType::Integer)
                        .tenant_column("tenant_id")
                        .column(
                            ColumnSpec::new("email", ColumnForm::Binary)
                                .blind_index("tenant_id", email_index()),
                        );
                    let err = SealedColumns::new(pool.clone(), sealer.clone(), vec![clash]).unwrap_err();
                    assert!(err.to_string().contains("indexes[0].column"), "{err}");
                    let columns = SealedColumns::new(pool.clone(), sealer.clone(), vec![spec]).unwrap();
                    let mut options = JobOptions::default();
                    options.batch = 7;
                    options.workers = 2;
                    let report = columns.reseal(&options).await.unwrap();
                    assert_eq!(report.totals().written, 40);
                    assert_eq!(report.totals().failed, 0);

                    // Every index value is now under version 2, as its value.
                    let rows: Vec<(i64, String, SealedValue, Vec<u8>)> = sqlx::query_as::<$db, (i64, String, SealedValue, Vec<u8>)>(q(
                        "SELECT id, tenant_id, email, email_idx FROM users ORDER BY id",
                    ))
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                    for (id, tenant, sealed, idx) in rows {
                        assert_eq!(sealed.key_version(), 2, "row {id}");
                        let t = sealer.tenant(&tenant).await.unwrap();
                        let expected = t.blind_index(&email_index(), format!("user{id}@example.com").as_bytes()).unwrap();
                        assert_eq!(expected.key_version(), 2);
                        assert_eq!(idx, expected.as_bytes(), "row {id}");
                    }

                    // Retire destroys version 1; searches report it until the
                    // minimum is raised, which a second retire run does when
                    // asked (also for versions destroyed by an earlier run).
                    options.min_primary_age = std::time::Duration::ZERO;
                    let report = columns.retire(&options).await.unwrap();
                    assert_eq!(report.tenants["acme"].destroyed, [1]);
                    assert_eq!(report.tenants["acme"].min_decryption_version, None);
                    let acme = sealer.tenant_checked("acme").await.unwrap();
                    assert!(matches!(
                        acme.search(&email_index(), b"user8@example.com"),
                        Err(Error::IncompleteSearch { version: 1, .. })
                    ));
                    options.raise_min_decryption_version = true;
                    let report = columns.retire(&options).await.unwrap();
                    assert!(report.tenants["acme"].destroyed.is_empty());
                    assert_eq!(report.tenants["acme"].min_decryption_version, Some(2));
                    // Idempotent: nothing more to raise.
                    let report = columns.retire(&options).await.unwrap();
                    assert!(!report.tenants.contains_key("acme"));
                    let acme = sealer.tenant_checked("acme").await.unwrap();
                    let search = acme.search(&email_index(), b"user8@example.com").unwrap();
                    assert_eq!(search.terms().len(), 1);
                    assert_eq!(lookup(&pool, &acme, "user8@example.com").await.unwrap(), [8]);
                })
                .await;
            }

            /// FORMAT.md §"Unique values": lock, checked keys, full search,
            /// confirm, insert. Returns whether the row was inserted.
            async fn insert_unique(pool: &Pool, sealer: &Sealer, tenant: &str, id: i64, email: &str) -> bool {
                // The tenant's first key is created before the transaction: on
                // SQLite the key store shares the database's one writer.
                sealer.tenant(tenant).await.unwrap();
                let mut tx = pool.begin().await.unwrap();
                // 1. The lock, as the transaction's first statement.
                sqlx::query::<$db>(q("UPDATE tenants SET n = n + 1 WHERE id = ?"))
                    .bind(tenant)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                // 2. Keys checked against the store after the lock.
                let t = sealer.tenant_checked(tenant).await.unwrap();
                // 3. Every version, confirmed by opening.
                let search = t.search(&email_index(), email.as_bytes()).unwrap();
                let rows = candidates(&mut *tx, tenant, &search).await;
                if !t.open_matches(&search, &template(tenant), rows).unwrap().is_empty() {
                    return false;
                }
                // 4. No rotation since the keys were checked (else start over).
                let again = sealer.tenant_checked(tenant).await.unwrap();
                if again.primary_version() != t.primary_version() {
                    drop(tx);
                    return Box::pin(insert_unique(pool, sealer, tenant, id, email)).await;
                }
                // 5. Insert and commit.
                let sealed = t.seal_row(&template(tenant), id, email.as_bytes()).unwrap();
                let idx = t.blind_index(&email_index(), email.as_bytes()).unwrap();
                sqlx::query::<$db>(q(
                    "INSERT INTO users (id, tenant_id, email, email_idx) VALUES (?, ?, ?, ?)",
                ))
                .bind(id)
                .bind(tenant)
                .bind(&sealed)
                .bind(idx.as_bytes())
                .execute(&mut *tx)
                .await
                .unwrap();
                tx.commit().await.unwrap();
                true
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unique_values_across_versions() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store.clone()).build();
                    create_tables(&pool).await;
                    assert!(insert_unique(&pool, &sealer, "acme", 1, "Erin@example.com").await);
                    assert!(!insert_unique(&pool, &sealer, "acme", 2, "erin@EXAMPLE.com").await);
                    // Another tenant may hold the same address.
                    assert!(insert_unique(&pool, &sealer, "globex", 3, "erin@example.com").await);

                    // Another "process" rotates: the row under version 1 still
                    // blocks a duplicate indexed under version 2, which the
                    // unique constraint alone would let in.
                    let other = Sealer::builder(local_provider(), store).build();
                    other.admin().rotate("acme").await.unwrap();
                    assert!(!insert_unique(&pool, &sealer, "acme", 4, "erin@example.com").await);
                    let v2 = sealer.tenant_checked("acme").await.unwrap();
                    assert_eq!(v2.primary_version(), 2);
                    let sealed = v2.seal_row(&template("acme"), 5, b"erin@example.com").unwrap();
                    let idx = v2.blind_index(&email_index(), b"erin@example.com").unwrap();
                    sqlx::query::<$db>(q(
                        "INSERT INTO users (id, tenant_id, email, email_idx) VALUES (?, ?, ?, ?)",
                    ))
                    .bind(5i64)
                    .bind("acme")
                    .bind(&sealed)
                    .bind(idx.as_bytes())
                    .execute(&pool)
                    .await
                    .expect("the constraint does not see across versions");
                    sqlx::query::<$db>(q("DELETE FROM users WHERE id = 5")).execute(&pool).await.unwrap();

                    // Within one version, the constraint is the backstop.
                    let dup = sqlx::query::<$db>(q(
                        "INSERT INTO users (id, tenant_id, email, email_idx) VALUES (?, ?, ?, ?)",
                    ))
                    .bind(6i64)
                    .bind("globex")
                    .bind(&sealed)
                    .bind(
                        sealer
                            .tenant("globex")
                            .await
                            .unwrap()
                            .blind_index(&email_index(), b"erin@example.com")
                            .unwrap()
                            .as_bytes(),
                    )
                    .execute(&pool)
                    .await;
                    assert!(dup.is_err(), "unique (tenant_id, email_idx) refuses the duplicate");

                    // Six writers race for one new address: exactly one wins.
                    // (Each holds a connection while it waits for the lock, and
                    // the winner needs one more for the key store's generation
                    // check: the pool must have room for both.)
                    let mut tasks = Vec::new();
                    for id in 10..16 {
                        let (pool, sealer) = (pool.clone(), sealer.clone());
                        tasks.push(tokio::spawn(async move {
                            insert_unique(&pool, &sealer, "acme", id, "frank@example.com").await
                        }));
                    }
                    let mut won = 0;
                    for task in tasks {
                        won += usize::from(task.await.unwrap());
                    }
                    assert_eq!(won, 1);
                    let t = sealer.tenant("acme").await.unwrap();
                    assert_eq!(lookup(&pool, &t, "frank@example.com").await.unwrap().len(), 1);
                })
                .await;
            }
        }
    };
}

blind_index_suite!(
    sqlite,
    db::with_sqlite,
    sqlx::Sqlite,
    "BLOB",
    "BLOB",
    |s: &str| s.to_string()
);
blind_index_suite!(
    postgres,
    db::with_postgres,
    sqlx::Postgres,
    "BYTEA",
    "BYTEA",
    pg
);
blind_index_suite!(
    mysql,
    db::with_mysql,
    sqlx::MySql,
    "BLOB",
    "VARBINARY(32)",
    |s: &str| s.to_string()
);

/// PostgreSQL binds all of a search's values as one array: `= ANY($2)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_any_array() {
    db::with_postgres(|pool, store| async move {
        let sealer = Sealer::builder(local_provider(), store).build();
        sqlx::query(
            "CREATE TABLE users (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, \
             email BYTEA NOT NULL, email_idx BYTEA NOT NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let acme = sealer.tenant("acme").await.unwrap();
        let tpl = template("acme");
        for (id, email) in [(1i64, "a@example.com"), (2, "b@example.com")] {
            sqlx::query("INSERT INTO users VALUES ($1, 'acme', $2, $3)")
                .bind(id)
                .bind(acme.seal_row(&tpl, id, email.as_bytes()).unwrap())
                .bind(
                    acme.blind_index(&email_index(), email.as_bytes())
                        .unwrap()
                        .as_bytes(),
                )
                .execute(&pool)
                .await
                .unwrap();
        }
        sealer.admin().rotate("acme").await.unwrap();
        let acme = sealer.tenant_checked("acme").await.unwrap();
        let search = acme.search(&email_index(), b"B@example.com").unwrap();
        assert_eq!(search.values().len(), 2);
        let rows: Vec<(i64, SealedValue)> = sqlx::query_as(
            "SELECT id, email FROM users WHERE tenant_id = $1 AND email_idx = ANY($2)",
        )
        .bind("acme")
        .bind(search.values())
        .fetch_all(&pool)
        .await
        .unwrap();
        let found = acme.open_matches(&search, &tpl, rows).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 2);
        assert_eq!(found[0].1.plaintext().expose_secret(), b"b@example.com");
    })
    .await;
}
