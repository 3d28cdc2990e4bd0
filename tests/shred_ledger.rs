//! Erasure that survives restores: a database restored from a backup taken
//! before a shred brings the tenant back (its wrapped keys are in the backup
//! and the root key still unwraps them) until the shred ledger is replayed;
//! after the replay none of its values opens, every other tenant's does, and
//! a tenant re-created after its shred keeps its new keys.
//!
//! On SQLite the backup is `VACUUM INTO` (a consistent copy of the file), on
//! PostgreSQL `pg_dump` restored with `psql` into a dropped schema.

mod common;
#[path = "common/db.rs"]
mod db;

use std::path::Path;
use std::process::Command;

use common::local_provider;
use fieldseal::secrecy::ExposeSecret;
use fieldseal::{
    Context, Error, SealedValue, Sealer, SqlKeyStore, audit::ShredLedger, store::KeyStore,
};
use sqlx::SqlitePool;

fn ctx(tenant: &str, id: i64) -> Context {
    Context::builder(tenant, "accounts", "token")
        .row(id)
        .build()
        .unwrap()
}

fn sealer(store: impl KeyStore + 'static, ledger: &Path) -> Sealer {
    Sealer::builder(local_provider(), store)
        .shred_ledger(ShredLedger::new(ledger))
        .build()
}

/// What was sealed before the backup.
struct Before {
    acme: SealedValue,
    globex: SealedValue,
    initech: SealedValue,
}

async fn before_backup(sealer: &Sealer) -> Before {
    Before {
        acme: sealer.seal(&ctx("acme", 1), b"acme's token").await.unwrap(),
        globex: sealer
            .seal(&ctx("globex", 2), b"globex's token")
            .await
            .unwrap(),
        initech: sealer
            .seal(&ctx("initech", 3), b"initech's token")
            .await
            .unwrap(),
    }
}

/// After the backup: acme is shredded, initech shredded and re-created,
/// globex rotated.
async fn after_backup(sealer: &Sealer) {
    sealer.admin().shred_tenant("acme").await.unwrap();
    sealer.admin().shred_tenant("initech").await.unwrap();
    assert_eq!(sealer.admin().recreate_tenant("initech").await.unwrap(), 2);
    sealer.admin().rotate("globex").await.unwrap();
}

/// On the restored database: the shredded tenants are back until the ledger
/// is replayed; then none of their old values opens, globex's does, a forged
/// line is refused, and a second replay does nothing.
async fn after_restore(restored: &Sealer, ledger: &Path, before: &Before) {
    // The restore brought acme back: this is what the ledger is for.
    let opened = restored.open(&ctx("acme", 1), &before.acme).await.unwrap();
    assert_eq!(opened.plaintext().expose_secret(), b"acme's token");

    // A line forged without the audit key names globex: refused.
    let mut text = std::fs::read_to_string(ledger).unwrap();
    let real = text.lines().nth(1).unwrap().to_string();
    let fields: Vec<&str> = real.split(' ').collect();
    let globex_hex: String = "globex".bytes().map(|b| format!("{b:02x}")).collect();
    text.push_str(&format!(
        "{} {} 9 {globex_hex} {} {} {}\n",
        fields[0], fields[1], fields[4], fields[5], fields[6]
    ));
    std::fs::write(ledger, text).unwrap();

    let report = restored
        .admin()
        .replay_shred_ledger(&ShredLedger::new(ledger))
        .await
        .unwrap();
    assert_eq!(report.entries, 2, "{report:?}");
    assert_eq!(
        report.shredded,
        vec!["acme".to_string(), "initech".to_string()]
    );
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert_eq!(report.rejected[0].line, 4);
    assert!(!report.is_clean());

    for (tenant, value, id) in [("acme", &before.acme, 1), ("initech", &before.initech, 3)] {
        let err = restored.open(&ctx(tenant, id), value).await.unwrap_err();
        assert!(
            matches!(err, Error::TenantShredded { .. }),
            "{tenant}: {err}"
        );
    }
    let opened = restored
        .open(&ctx("globex", 2), &before.globex)
        .await
        .unwrap();
    assert_eq!(opened.plaintext().expose_secret(), b"globex's token");
    assert!(restored.admin().verify_audit().await.unwrap().is_intact());

    let again = restored
        .admin()
        .replay_shred_ledger(&ShredLedger::new(ledger))
        .await
        .unwrap();
    assert!(again.shredded.is_empty(), "{again:?}");
    assert_eq!(again.already, 2);
}

/// A SQLite pool on the file at `path`, created if missing.
async fn connect(path: &Path) -> SqlitePool {
    SqlitePool::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap()
}

/// A migrated key store on a new SQLite file.
async fn new_store(path: &Path) -> (SqlitePool, SqlKeyStore<sqlx::Sqlite>) {
    let pool = connect(path).await;
    let store = SqlKeyStore::new(pool.clone());
    store.migrate().await.unwrap();
    (pool, store)
}

/// A consistent copy of the database behind `pool`.
async fn backup_to(pool: &SqlitePool, path: &Path) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "VACUUM INTO '{}'",
        path.display()
    )))
    .execute(pool)
    .await
    .unwrap();
}

/// The restore: `backup` in place of the database file `db` (closed first).
async fn restore(pool: SqlitePool, backup: &Path, db: &Path) -> SqlitePool {
    pool.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::copy(backup, db).unwrap();
    connect(db).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_sqlite_file_does_not_bring_a_shredded_tenant_back() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("shreds.ledger");
    let db = dir.path().join("app.db");
    let backup = dir.path().join("backup.db");
    let (pool, store) = new_store(&db).await;
    let live = sealer(store, &ledger);
    let before = before_backup(&live).await;
    backup_to(&pool, &backup).await;
    after_backup(&live).await;
    let pool = restore(pool, &backup, &db).await;
    let restored = sealer(SqlKeyStore::new(pool.clone()), &ledger);
    after_restore(&restored, &ledger, &before).await;
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_pg_dump_does_not_bring_a_shredded_tenant_back() {
    db::with_postgres(|pool, store| async move {
        let url = std::env::var(db::POSTGRES_URL).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("shreds.ledger");
        let dump = dir.path().join("backup.sql");
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await
            .unwrap();
        let live = sealer(store, &ledger);
        let before = before_backup(&live).await;
        let status = Command::new("pg_dump")
            .args(["--schema", &schema, "--no-owner", "--file"])
            .arg(&dump)
            .arg(&url)
            .status()
            .expect("pg_dump must be installed where FIELDSEAL_TEST_POSTGRES_URL is set");
        assert!(status.success(), "pg_dump failed");
        after_backup(&live).await;

        // The restore: the schema dropped and re-created from the dump.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&pool)
            .await
            .unwrap();
        let status = Command::new("psql")
            .args(["--quiet", "--set", "ON_ERROR_STOP=1", "--file"])
            .arg(&dump)
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("psql must be installed where FIELDSEAL_TEST_POSTGRES_URL is set");
        assert!(status.success(), "psql failed to restore the dump");
        let restored_pool = db::second_postgres_pool(&pool).await;
        let store = SqlKeyStore::new(restored_pool.clone())
            .with_schema(&schema)
            .unwrap();
        let restored = sealer(store, &ledger);
        after_restore(&restored, &ledger, &before).await;
        restored_pool.close().await;
    })
    .await;
}

/// A tenant re-created after its shred keeps its new keys when the ledger
/// is replayed over a store that holds its old ones again (a partial
/// restore): only the versions its shred destroyed are destroyed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_keeps_the_keys_of_a_tenant_recreated_after_its_shred() {
    db::with_sqlite(|pool, store| async move {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("shreds.ledger");
        let live = sealer(store.clone(), &ledger);
        let old = live.seal(&ctx("acme", 1), b"old").await.unwrap();
        let v1: Vec<u8> = sqlx::query_scalar("SELECT wrapped FROM fieldseal_keys WHERE version = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        live.admin().shred_tenant("acme").await.unwrap();
        live.admin().recreate_tenant("acme").await.unwrap();
        let new = live.seal(&ctx("acme", 2), b"new").await.unwrap();
        // Version 1's wrapped key back, as a partial restore would bring it.
        sqlx::query("UPDATE fieldseal_keys SET wrapped = ?, root_key_id = 'test-root', state = 'active' WHERE version = 1")
            .bind(v1)
            .execute(&pool)
            .await
            .unwrap();
        let fresh = sealer(store.clone(), &ledger);
        if let Err(e) = fresh.open(&ctx("acme", 1), &old).await { panic!("{e}") }
        let report = fresh
            .admin()
            .replay_shred_ledger(&ShredLedger::new(&ledger))
            .await
            .unwrap();
        assert_eq!(report.shredded, vec!["acme".to_string()]);
        let fresh = sealer(store, &ledger);
        let err = fresh.open(&ctx("acme", 1), &old).await.unwrap_err();
        assert!(matches!(err, Error::KeyDestroyed { .. }), "{err}");
        let opened = fresh.open(&ctx("acme", 2), &new).await.unwrap();
        assert_eq!(opened.plaintext().expose_secret(), b"new");
    })
    .await;
}

/// A shred whose ledger entry cannot be written reports it (the shred itself
/// committed), and shredding again once the file can be written appends the
/// missing entry, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shred_whose_entry_failed_is_recorded_by_shredding_again() {
    db::with_sqlite(|_pool, store| async move {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("missing-dir").join("shreds.ledger");
        let live = sealer(store.clone(), &ledger);
        live.seal(&ctx("acme", 1), b"x").await.unwrap();
        let err = live.admin().shred_tenant("acme").await.unwrap_err();
        assert!(matches!(err, Error::ShredLedger { .. }), "{err}");
        assert!(err.to_string().contains("was shredded at"), "{err}");
        assert!(err.to_string().contains("run the shred again"), "{err}");
        std::fs::create_dir(ledger.parent().unwrap()).unwrap();
        for _ in 0..2 {
            let err = live.admin().shred_tenant("acme").await.unwrap_err();
            assert!(matches!(err, Error::TenantShredded { .. }), "{err}");
        }
        let text = std::fs::read_to_string(&ledger).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        let report = live
            .admin()
            .replay_shred_ledger(&ShredLedger::new(&ledger))
            .await
            .unwrap();
        assert_eq!((report.entries, report.already), (1, 1), "{report:?}");
    })
    .await;
}

/// A tenant id used again after a restore (its old keys were shredded after
/// the backup) keeps its new keys: the replay destroys only keys made no
/// later than the shred.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_id_used_again_after_a_restore_keeps_its_new_keys() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("shreds.ledger");
    let db = dir.path().join("app.db");
    let backup = dir.path().join("backup.db");
    let (pool, store) = new_store(&db).await;
    let live = sealer(store, &ledger);
    live.seal(&ctx("globex", 1), b"x").await.unwrap();
    backup_to(&pool, &backup).await;
    live.seal(&ctx("acme", 1), b"short-lived").await.unwrap();
    live.admin().shred_tenant("acme").await.unwrap();
    let pool = restore(pool, &backup, &db).await;
    // After the restore (a second later: times are in seconds) the id is used
    // again, before the replay runs.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let restored = sealer(SqlKeyStore::new(pool.clone()), &ledger);
    let new = restored.seal(&ctx("acme", 2), b"new tenant").await.unwrap();
    let report = restored
        .admin()
        .replay_shred_ledger(&ShredLedger::new(&ledger))
        .await
        .unwrap();
    assert!(report.shredded.is_empty(), "{report:?}");
    assert_eq!(report.already, 1, "{report:?}");
    let opened = restored.open(&ctx("acme", 2), &new).await.unwrap();
    assert_eq!(opened.plaintext().expose_secret(), b"new tenant");
    pool.close().await;
}

/// A copy of a store (same identity, same audit key) that shares the ledger
/// does not shred the original's tenant: the original's log holds another
/// entry where the copy's shred was recorded, and the line is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_sharing_the_ledger_does_not_shred_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("shreds.ledger");
    let (prod_db, staging_db) = (dir.path().join("prod.db"), dir.path().join("staging.db"));
    let prod_pool = connect(&prod_db).await;
    let store = SqlKeyStore::new(prod_pool.clone());
    store.migrate().await.unwrap();
    let prod = sealer(store, &ledger);
    let value = prod.seal(&ctx("acme", 1), b"prod's").await.unwrap();
    backup_to(&prod_pool, &staging_db).await;
    // Both go on; staging shreds acme, prod creates a tenant.
    prod.create_tenant("globex").await.unwrap();
    let staging_pool = connect(&staging_db).await;
    let staging = sealer(SqlKeyStore::new(staging_pool.clone()), &ledger);
    staging.admin().shred_tenant("acme").await.unwrap();

    let report = prod
        .admin()
        .replay_shred_ledger(&ShredLedger::new(&ledger))
        .await
        .unwrap();
    assert!(report.shredded.is_empty(), "{report:?}");
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert!(
        report.rejected[0].reason.contains("another copy"),
        "{report:?}"
    );
    let opened = prod.open(&ctx("acme", 1), &value).await.unwrap();
    assert_eq!(opened.plaintext().expose_secret(), b"prod's");
    prod_pool.close().await;
    staging_pool.close().await;
}
