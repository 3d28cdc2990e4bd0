//! Root-key epochs: a new root key per epoch, every live key re-wrapped under
//! it, and the old one destroyed once no live key is under it and the backup
//! retention has passed. Then no backup of any age opens a shredded tenant's
//! keys; a backup younger than the retention restores.
//!
//! Local key files in a directory (`LocalKeyProvider::from_dir`), on SQLite
//! (backups with `VACUUM INTO`) and PostgreSQL (backups as copies of the key
//! table); Transit epochs are in `tests/vault_transit.rs`.

#[path = "common/backup.rs"]
mod backup;
mod common;
#[path = "common/db.rs"]
mod db;

use std::path::Path;
use std::time::Duration;

use backup::Db;
use fieldseal::secrecy::ExposeSecret;
use fieldseal::{
    Context, Error, LocalKeyProvider, RootKey, SealedValue, Sealer, provider::KeyProvider,
};

fn ctx(tenant: &str, id: i64) -> Context {
    Context::builder(tenant, "accounts", "token")
        .row(id)
        .build()
        .unwrap()
}

fn provider(dir: &Path) -> LocalKeyProvider {
    LocalKeyProvider::from_dir(dir, "root").unwrap()
}

fn sealer(dir: &Path, store: impl fieldseal::store::KeyStore + 'static) -> Sealer {
    Sealer::builder(provider(dir), store)
        .min_audit_retention(Duration::ZERO)
        .build()
}

fn db_sealer(db: &Db, dir: &Path) -> Sealer {
    db.builder(provider(dir))
        .min_audit_retention(Duration::ZERO)
        .build()
}

/// Values of acme (shredded later) and globex (kept), as sealed in epoch 1.
struct Values {
    acme: SealedValue,
    globex: SealedValue,
}

/// The cycle: seal in epoch 1, back up (B1); shred acme; a new epoch, every
/// key re-wrapped; back up (B2); restoring B1 now would bring acme back (the
/// negative control); retire: epoch 1's key is marked unused, then destroyed
/// once the retention has passed. Restoring B1 then opens nothing under the
/// destroyed key (it is older than the retention); restoring B2 opens globex,
/// and acme stays shredded.
async fn epochs(mut db: Db) {
    let keys = tempfile::tempdir().unwrap();
    RootKey::create_file(keys.path().join("root-e1.key")).unwrap();
    let a = db_sealer(&db, keys.path());
    let values = Values {
        acme: a.seal(&ctx("acme", 1), b"acme's").await.unwrap(),
        globex: a.seal(&ctx("globex", 2), b"globex's").await.unwrap(),
    };
    db.backup("b1").await;
    a.admin().shred_tenant("acme").await.unwrap();

    // A new epoch (a second later: audit times are in seconds, and a root
    // key made in the second of the shred counts as one that may have
    // wrapped its keys): created, then every live key re-wrapped by a sealer
    // on the new provider.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(a.admin().create_root_key().await.unwrap(), "root-e2");
    let b = db_sealer(&db, keys.path());
    let report = b.admin().rewrap_all("root-e2").await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    // One unwrap and one wrap per live key version, never per value.
    assert_eq!(report.rewrapped, 1, "{report:?}"); // globex's version 1
    assert!(report.audit_key_rewrapped, "{report:?}");
    db.backup("b2").await;

    // The negative control: without destroying epoch 1's key, B1 brings
    // acme back.
    db.restore("b1").await;
    let opened = db_sealer(&db, keys.path())
        .open(&ctx("acme", 1), &values.acme)
        .await
        .unwrap();
    assert_eq!(opened.plaintext().expose_secret(), b"acme's");
    db.restore("b2").await;

    // Retire: marked unused, waiting, then destroyed.
    let b = db_sealer(&db, keys.path());
    let retention = Duration::from_secs(1);
    let r = b.admin().retire_root_keys(retention).await.unwrap();
    assert_eq!(r.marked_unused, vec!["root-e1".to_string()], "{r:?}");
    // The erasure report: acme's keys were only ever under root-e1 (root-e2
    // came after the shred), marked unused, not yet destroyed.
    let report = b
        .admin()
        .erasure_report("acme", Some(retention))
        .await
        .unwrap();
    assert!(report.shredded_at.is_some());
    assert_eq!(report.root_keys.len(), 1, "{report:?}");
    assert_eq!(report.root_keys[0].0, "root-e1");
    assert!(matches!(
        report.root_keys[0].1,
        fieldseal::admin::RootKeyFate::Unused { .. }
    ));
    assert_eq!(report.unrecoverable_from, None);
    assert!(report.expected_from.is_some(), "{report:?}");
    // Waiting, unless a second boundary passed since the mark (audit times
    // are in seconds): then this call already destroys it.
    let r = b.admin().retire_root_keys(retention).await.unwrap();
    assert_eq!(r.waiting.len() + r.destroyed.len(), 1, "{r:?}");
    let r = if r.destroyed.is_empty() {
        tokio::time::sleep(Duration::from_millis(2100)).await;
        b.admin().retire_root_keys(retention).await.unwrap()
    } else {
        r
    };
    assert_eq!(r.destroyed.len(), 1, "{r:?}");
    assert_eq!(r.destroyed[0].0, "root-e1");
    let report = b.admin().erasure_report("acme", None).await.unwrap();
    assert_eq!(
        report.unrecoverable_from,
        Some(r.destroyed[0].1),
        "{report:?}"
    );
    // A tenant that was never shredded has no such date.
    let report = b.admin().erasure_report("globex", None).await.unwrap();
    assert_eq!(
        (report.shredded_at, report.unrecoverable_from),
        (None, None)
    );
    assert!(!keys.path().join("root-e1.key").exists());
    assert!(b.admin().verify_audit().await.unwrap().is_intact());
    let events: Vec<String> = b
        .admin()
        .audit_entries(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    for event in ["root_key.created", "root_key.unused", "root_key.destroyed"] {
        assert!(events.iter().any(|e| e == event), "{event}: {events:?}");
    }
    // Nothing left to do.
    let r = b.admin().retire_root_keys(retention).await.unwrap();
    assert!(
        r.destroyed.is_empty() && r.marked_unused.is_empty(),
        "{r:?}"
    );

    // B1, older than the retention: nothing under the destroyed key opens,
    // and the error names it.
    db.restore("b1").await;
    let restored = db_sealer(&db, keys.path());
    for (tenant, value, id) in [("acme", &values.acme, 1), ("globex", &values.globex, 2)] {
        let err = restored.open(&ctx(tenant, id), value).await.unwrap_err();
        assert!(
            matches!(err, Error::RootKeyNotConfigured { ref id } if id == "root-e1"),
            "{tenant}: {err}"
        );
    }
    // B2: globex opens, acme stays shredded.
    db.restore("b2").await;
    let restored = db_sealer(&db, keys.path());
    let opened = restored
        .open(&ctx("globex", 2), &values.globex)
        .await
        .unwrap();
    assert_eq!(opened.plaintext().expose_secret(), b"globex's");
    let err = restored
        .open(&ctx("acme", 1), &values.acme)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantShredded { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochs_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    epochs(Db::sqlite(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochs_on_postgres() {
    db::with_postgres(|pool, _| async move {
        let dir = tempfile::tempdir().unwrap();
        epochs(Db::postgres(&pool, dir.path()).await).await;
    })
    .await;
}

#[tokio::test]
async fn from_dir_names_keys_by_epoch_and_refuses_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let err = LocalKeyProvider::from_dir(dir.path(), "root").unwrap_err();
    assert!(err.to_string().contains("root-e1.key"), "{err}");
    RootKey::create_file(dir.path().join("root-e1.key")).unwrap();
    // Files of other names, or non-canonical epoch numbers, are ignored.
    std::fs::write(dir.path().join("root-e01.key"), "x").unwrap();
    std::fs::write(dir.path().join("other-e7.key"), "x").unwrap();
    let p = provider(dir.path());
    assert_eq!(p.current_root_key_id(), "root-e1");
    let id = p.create_root_key().await.unwrap();
    assert_eq!(id, "root-e2");
    // The provider built before keeps wrapping under its key; a new one
    // wraps under the new epoch's and unwraps both.
    assert_eq!(p.current_root_key_id(), "root-e1");
    let p2 = provider(dir.path());
    assert_eq!(p2.root_key_ids(), vec!["root-e2", "root-e1"]);
    // The current key is never destroyed; an older one is overwritten and
    // removed.
    let err = p2.destroy_root_key("root-e2").await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    // A link is never followed: refused, nothing destroyed.
    #[cfg(unix)]
    {
        let link = dir.path().join("root-e1.key");
        let real = dir.path().join("elsewhere.key");
        std::fs::rename(&link, &real).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = p2.destroy_root_key("root-e1").await.unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{err}");
        std::fs::remove_file(&link).unwrap();
        std::fs::rename(&real, &link).unwrap();
    }
    p2.destroy_root_key("root-e1").await.unwrap();
    assert!(!dir.path().join("root-e1.key").exists());
    assert_eq!(provider(dir.path()).root_key_ids(), vec!["root-e2"]);
    // The provider built before still holds e1 in memory as its current key,
    // but never wraps under it again.
    let key = fieldseal::provider::TenantKey::generate().unwrap();
    let err = p
        .wrap(
            &key,
            &fieldseal::provider::WrapContext::tenant_key("acme", 1),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("was destroyed"), "{err}");
}

/// A root key the provider lists that this store never used (here an older
/// epoch file another store made, sharing the directory's name) is neither
/// marked nor destroyed: `retire_root_keys` retires only the root keys its
/// own audit log names.
#[tokio::test]
async fn retire_root_keys_leaves_keys_this_store_never_used() {
    let dir = tempfile::tempdir().unwrap();
    RootKey::create_file(dir.path().join("root-e1.key")).unwrap();
    RootKey::create_file(dir.path().join("root-e2.key")).unwrap();
    let store = fieldseal::MemoryKeyStore::new();
    let app = sealer(dir.path(), store.clone());
    let value = app.seal(&ctx("acme", 1), b"token").await.unwrap();
    for _ in 0..2 {
        let r = app.admin().retire_root_keys(Duration::ZERO).await.unwrap();
        assert_eq!(r.not_this_stores, vec!["root-e1".to_string()], "{r:?}");
        assert!(
            r.marked_unused.is_empty() && r.destroyed.is_empty(),
            "{r:?}"
        );
    }
    assert!(dir.path().join("root-e1.key").exists());
    // Once this store re-wraps from a root key, that key is its own, even
    // after the entries that say so are pruned (the prune restates them).
    let next = app.admin().create_root_key().await.unwrap();
    let moved = sealer(dir.path(), store.clone());
    moved.admin().rewrap_all(&next).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(moved.admin().prune_audit(Duration::ZERO).await.unwrap() > 0);
    assert!(moved.admin().verify_audit().await.unwrap().is_intact());
    let r = moved
        .admin()
        .retire_root_keys(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(r.marked_unused, vec!["root-e2".to_string()], "{r:?}");
    assert_eq!(r.not_this_stores, vec!["root-e1".to_string()], "{r:?}");
    let r = moved
        .admin()
        .retire_root_keys(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(r.destroyed.len(), 1, "{r:?}");
    assert_eq!(r.destroyed[0].0, "root-e2");
    assert!(dir.path().join("root-e1.key").exists());
    let opened = sealer(dir.path(), store)
        .open(&ctx("acme", 1), &value)
        .await
        .unwrap();
    assert_eq!(opened.plaintext().expose_secret(), b"token");
}
