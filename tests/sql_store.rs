//! One key store suite, run against every backend: the in-memory store, SQLite,
//! PostgreSQL and MySQL/MariaDB. No backend has weaker coverage than another.
//!
//! PostgreSQL and MySQL need `FIELDSEAL_TEST_POSTGRES_URL` and
//! `FIELDSEAL_TEST_MYSQL_URL` (see `tests/common/db.rs`).

mod common;
#[path = "common/db.rs"]
mod db;

use std::time::Duration;

use common::{
    CountingProvider, StallingWrapProvider, ctx, local_provider, new_root, rotated_provider,
    wrapped_under,
};
use fieldseal::secrecy::ExposeSecret;
use fieldseal::{
    Error, LocalKeyProvider, MemoryKeyStore, RootKey, SealedValue, Sealer, SqlKeyStore,
    store::{KeyStatus, KeyStore},
};
use sqlx::{MySqlPool, PgPool, SqlitePool};

// --- The suite ---------------------------------------------------------------

/// Seal, rotate, re-seal, disable, minimum version, destroy, shred, recreate,
/// and an intact audit chain at the end.
async fn lifecycle(store: impl KeyStore + Clone + 'static) {
    // A store with an identity opens its log saying it refuses keys wrapped
    // without its id.
    let refusal = usize::from(store.store_identity().await.unwrap().is_some());
    let sealer = Sealer::builder(local_provider(), store.clone()).build();
    let admin = sealer.admin().actor("suite");
    let (c1, c2) = (ctx("acme", 1), ctx("acme", 2));
    let v1_a = sealer.seal(&c1, b"one").await.unwrap();
    let v1_b = sealer.seal(&c2, b"two").await.unwrap();
    assert_eq!(v1_a.key_version(), 1);

    let rotation = admin.rotate("acme").await.unwrap();
    assert_eq!((rotation.previous, rotation.primary), (1, 2));
    assert!(sealer.open(&c1, &v1_a).await.unwrap().is_stale());
    let v2_a = sealer.reseal(&c1, &v1_a).await.unwrap().unwrap();
    assert_eq!(v2_a.key_version(), 2);

    admin.disable_version("acme", 1).await.unwrap();
    assert!(matches!(
        sealer.open(&c2, &v1_b).await,
        Err(Error::KeyDisabled { .. })
    ));
    admin.enable_version("acme", 1).await.unwrap();
    admin.set_min_decryption_version("acme", 2).await.unwrap();
    assert!(matches!(
        sealer.open(&c2, &v1_b).await,
        Err(Error::BelowMinimumVersion { .. })
    ));
    admin.set_min_decryption_version("acme", 0).await.unwrap();
    assert!(sealer.open(&c2, &v1_b).await.is_ok());

    admin.destroy_version("acme", 1).await.unwrap();
    let err = sealer.open(&c2, &v1_b).await.unwrap_err();
    assert!(
        matches!(err, Error::KeyDestroyed { version: 1, .. }),
        "{err}"
    );
    let err = admin.destroy_version("acme", 1).await.unwrap_err();
    assert!(err.to_string().contains("already destroyed"), "{err}");
    let err = admin.destroy_version("acme", 2).await.unwrap_err();
    assert!(err.to_string().contains("primary"), "{err}");
    assert_eq!(
        sealer
            .open(&c1, &v2_a)
            .await
            .unwrap()
            .plaintext()
            .expose_secret(),
        b"one"
    );

    // A second handle on the same store sees the same state.
    let other = Sealer::builder(local_provider(), store.clone()).build();
    let record = other.admin().describe("acme").await.unwrap();
    assert_eq!(record.status(1), Some(KeyStatus::Destroyed));
    assert_eq!(record.status(2), Some(KeyStatus::Primary));
    assert!(record.keys[0].wrapped.is_none());

    // Shred, with another tenant unaffected.
    let g = ctx("globex", 1);
    let sealed_g = sealer.seal(&g, b"globex").await.unwrap();
    admin.shred_tenant("acme").await.unwrap();
    assert!(matches!(
        sealer.open(&c1, &v2_a).await,
        Err(Error::TenantShredded { .. })
    ));
    assert!(matches!(
        other.open(&c1, &v2_a).await,
        Err(Error::TenantShredded { .. })
    ));
    assert!(matches!(
        admin.rotate("acme").await,
        Err(Error::TenantShredded { .. })
    ));
    assert!(sealer.open(&g, &sealed_g).await.is_ok());
    let record = other.admin().describe("acme").await.unwrap();
    assert!(record.shredded_at.is_some());
    assert!(record.keys.iter().all(|k| k.wrapped.is_none()));
    assert_eq!(admin.recreate_tenant("acme").await.unwrap(), 3);
    assert_eq!(sealer.seal(&c1, b"new").await.unwrap().key_version(), 3);

    let entries = admin.audit_entries(0, 1000).await.unwrap();
    assert_eq!(entries.len(), 10 + refusal, "{entries:#?}");
    let report = other.admin().verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.entries, 10 + refusal as u64);
}

/// 16 tasks over two handles ("processes") rotate one tenant and create new
/// tenants at the same time: one version per round, no error reaches a caller.
async fn concurrency(a: impl KeyStore + Clone + 'static, b: impl KeyStore + Clone + 'static) {
    let refusal = u64::from(a.store_identity().await.unwrap().is_some());
    // Every rotation of a round reads the same primary before any of them
    // writes: their wraps of the new version wait for one another.
    let provider = CountingProvider::new(Duration::ZERO);
    let sealers = [
        Sealer::builder(provider.clone(), a.clone()).build(),
        Sealer::builder(provider.clone(), b.clone()).build(),
    ];
    sealers[0].seal(&ctx("acme", 1), b"x").await.unwrap();
    for round in 1..=3u32 {
        provider.gate_wraps("acme", round + 1, 16);
        let mut tasks = Vec::new();
        for i in 0..16 {
            let sealer = sealers[i % 2].clone();
            tasks.push(tokio::spawn(async move {
                let rotation = sealer.admin().rotate("acme").await?;
                let new_tenant = ctx(&format!("new-{round}"), i as i64);
                let sealed = sealer.seal(&new_tenant, b"first").await?;
                sealer.open(&new_tenant, &sealed).await?;
                Ok::<_, Error>((rotation, sealed.key_version()))
            }));
        }
        let mut created = 0;
        for task in tasks {
            let (rotation, new_version) = task.await.unwrap().unwrap();
            assert_eq!((rotation.previous, rotation.primary), (round, round + 1));
            created += usize::from(rotation.created);
            assert_eq!(new_version, 1);
        }
        assert_eq!(created, 1, "round {round}");
        let record = a.load_tenant("acme").await.unwrap().unwrap();
        assert_eq!(record.latest_version(), round + 1);
        assert_eq!(record.keys.len() as u32, round + 1);
        let new = b
            .load_tenant(&format!("new-{round}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(new.keys.len(), 1);
    }
    provider.ungate_wraps();
    let report = sealers[1].admin().verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    // (The store's refusal of unbound keys) + 1 creation + 3 rotations + 3
    // new tenants.
    assert_eq!(report.entries, refusal + 7);
}

/// Root key rotation, interrupted (task aborted) and resumed; then the old
/// root key is dropped and everything still opens. Also an aborted rotation.
async fn interrupted(store: impl KeyStore + Clone + 'static) {
    let writer = Sealer::builder(local_provider(), store.clone()).build();
    let mut values: Vec<(fieldseal::Context, SealedValue)> = Vec::new();
    for t in 0..40 {
        let c = ctx(&format!("tenant-{t:02}"), 1);
        values.push((
            c.clone(),
            writer.seal(&c, format!("v{t}").as_bytes()).await.unwrap(),
        ));
    }

    // A rotation aborted mid-way, while its new key is being wrapped (the
    // wrap waits for a second party that never comes), leaves no new version.
    let provider = CountingProvider::new(Duration::ZERO);
    provider.gate_wraps("tenant-00", 2, 2);
    let stuck = Sealer::builder(provider.clone(), store.clone()).build();
    let task = tokio::spawn(async move { stuck.admin().rotate("tenant-00").await });
    let started = std::time::Instant::now();
    while provider.wraps() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the rotation never wrapped its new key"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let record = store.load_tenant("tenant-00").await.unwrap().unwrap();
    assert_eq!(record.keys.len(), 1);
    assert_eq!(
        record.status(record.latest_version()),
        Some(KeyStatus::Primary)
    );

    // A root re-wrap aborted part-way: its KMS stops answering after ten
    // wraps, and the task is aborted once some keys have moved.
    let stalling = Sealer::builder(
        StallingWrapProvider::new(rotated_provider(), 10),
        store.clone(),
    )
    .build();
    let task = tokio::spawn(async move { stalling.admin().rewrap_all("root-2").await });
    let started = std::time::Instant::now();
    while wrapped_under(&store, "root-2").await.0 < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the re-wrap moved fewer than five keys in a minute"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    let _ = task.await;
    let reader = Sealer::builder(rotated_provider(), store.clone()).build();
    for (c, v) in &values {
        reader.open(c, v).await.unwrap();
    }
    let report = Sealer::builder(rotated_provider(), store.clone())
        .build()
        .admin()
        .rewrap_all("root-2")
        .await
        .unwrap();
    assert!(
        report.already_current > 0,
        "the aborted run did part of the work"
    );
    assert_eq!(report.skipped, 0);
    let only_new = Sealer::builder(
        LocalKeyProvider::new("root-2", new_root()).unwrap(),
        store.clone(),
    )
    .build();
    for (c, v) in &values {
        assert!(
            only_new
                .open(c, v)
                .await
                .unwrap()
                .plaintext()
                .expose_secret()
                .starts_with(b"v")
        );
    }
    assert!(only_new.admin().verify_audit().await.unwrap().is_intact());
}

/// A wrong root key is a clear error and writes nothing.
async fn wrong_root_key(store: impl KeyStore + Clone + 'static) {
    let sealer = Sealer::builder(local_provider(), store.clone()).build();
    let c = ctx("acme", 1);
    let sealed = sealer.seal(&c, b"x").await.unwrap();
    let before = (
        store.load_tenant("acme").await.unwrap(),
        store.audit_entries(0, 1000).await.unwrap(),
    );
    let wrong = LocalKeyProvider::new("test-root", RootKey::generate().unwrap()).unwrap();
    let wrong = Sealer::builder(wrong, store.clone()).build();
    let err = wrong.open(&c, &sealed).await.unwrap_err();
    assert!(matches!(err, Error::UnwrapFailed { .. }), "{err}");
    assert!(wrong.seal(&c, b"y").await.is_err());
    assert!(wrong.admin().rotate("acme").await.is_err());
    let after = (
        store.load_tenant("acme").await.unwrap(),
        store.audit_entries(0, 1000).await.unwrap(),
    );
    assert!(before == after, "a wrong root key changed the store");
}

// --- The backends ------------------------------------------------------------

async fn second_sqlite(pool: &SqlitePool) -> SqlKeyStore<sqlx::Sqlite> {
    let file: String =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(pool)
            .await
            .unwrap();
    let other = SqlitePool::connect(&format!("sqlite://{file}"))
        .await
        .unwrap();
    SqlKeyStore::new(other)
}

async fn second_postgres(pool: &PgPool) -> SqlKeyStore<sqlx::Postgres> {
    let schema: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(pool)
        .await
        .unwrap();
    SqlKeyStore::new(db::second_postgres_pool(pool).await)
        .with_schema(&schema)
        .unwrap()
}

async fn second_mysql(pool: &MySqlPool) -> SqlKeyStore<sqlx::MySql> {
    SqlKeyStore::new(db::second_mysql_pool(pool).await)
}

macro_rules! on_every_backend {
    ($($case:ident: |$a:ident, $b:ident| $body:expr;)*) => {$(
        mod $case {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn memory() {
                let $a = MemoryKeyStore::new();
                let $b = $a.clone();
                $body.await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                db::with_sqlite(|pool, $a| async move {
                    let $b = second_sqlite(&pool).await;
                    $body.await;
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                db::with_postgres(|pool, $a| async move {
                    let $b = second_postgres(&pool).await;
                    $body.await;
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn mysql() {
                db::with_mysql(|pool, $a| async move {
                    let $b = second_mysql(&pool).await;
                    $body.await;
                })
                .await;
            }
        }
    )*};
}

on_every_backend! {
    lifecycle_suite: |a, _b| lifecycle(a);
    concurrent_rotation_and_creation: |a, b| concurrency(a, b);
    interrupted_operations: |a, _b| interrupted(a);
    wrong_root_key_writes_nothing: |a, _b| wrong_root_key(a);
}
