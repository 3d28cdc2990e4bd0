//! The key lifecycle: rotation, lazy re-seal, destruction, shredding, root key
//! rotation and the audit chain.

mod common;

use std::time::Duration;

use common::{
    CountingProvider, StallingWrapProvider, TamperStore, ctx, local_provider, new_root,
    rotated_provider, wrapped_under,
};
use fieldseal::secrecy::ExposeSecret;
use fieldseal::{
    Error, LocalKeyProvider, MemoryKeyStore, SealedValue, Sealer,
    store::{KeyStatus, KeyStore},
};

fn sealer_on(store: impl KeyStore + 'static) -> Sealer {
    Sealer::builder(local_provider(), store).build()
}

#[tokio::test]
async fn rotate_reseal_destroy() {
    let sealer = common::sealer();
    let admin = sealer.admin().actor("alice@ops");
    let (c1, c2) = (ctx("acme", 1), ctx("acme", 2));
    let v1_a = sealer.seal(&c1, b"row one").await.unwrap();
    let v1_b = sealer.seal(&c2, b"row two").await.unwrap();

    let rotation = admin.rotate("acme").await.unwrap();
    assert_eq!(
        (rotation.previous, rotation.primary, rotation.created),
        (1, 2, true)
    );
    let record = admin.describe("acme").await.unwrap();
    assert_eq!(record.status(1), Some(KeyStatus::DecryptOnly));
    assert_eq!(record.status(2), Some(KeyStatus::Primary));

    // New values go under version 2; old ones still open, reported stale.
    assert_eq!(sealer.seal(&c1, b"new").await.unwrap().key_version(), 2);
    let opened = sealer.open(&c1, &v1_a).await.unwrap();
    assert!(opened.is_stale());
    assert_eq!(opened.key_version(), 1);

    // Lazy re-seal of one of them.
    let resealed = sealer
        .reseal(&c1, &v1_a)
        .await
        .unwrap()
        .expect("stale value");
    assert_eq!(resealed.key_version(), 2);
    assert!(sealer.reseal(&c1, &resealed).await.unwrap().is_none());
    let opened = sealer.open(&c1, &resealed).await.unwrap();
    assert!(!opened.is_stale());
    assert_eq!(opened.plaintext().expose_secret(), b"row one");

    // Destroy version 1: the value not re-sealed is gone, with a clear error.
    admin.destroy_version("acme", 1).await.unwrap();
    let err = sealer.open(&c2, &v1_b).await.unwrap_err();
    assert!(
        matches!(err, Error::KeyDestroyed { ref tenant, version: 1, .. } if tenant == "acme"),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("acme") && message.contains("version 1"),
        "{message}"
    );
    assert!(message.contains("destroyed on 20"), "{message}");
    assert!(sealer.open(&c1, &resealed).await.is_ok());
    let record = admin.describe("acme").await.unwrap();
    assert_eq!(record.status(1), Some(KeyStatus::Destroyed));
    assert!(record.keys[0].wrapped.is_none(), "wrapped bytes erased");
}

#[tokio::test]
async fn a_held_tenant_handle_stops_using_a_destroyed_version() {
    let sealer = common::sealer();
    let c = ctx("acme", 1);
    let old = sealer.seal(&c, b"x").await.unwrap();
    sealer.admin().rotate("acme").await.unwrap();
    let handle = sealer.tenant("acme").await.unwrap();
    assert!(handle.open(&c, &old).unwrap().is_stale());
    sealer.admin().destroy_version("acme", 1).await.unwrap();
    assert!(matches!(
        handle.open(&c, &old),
        Err(Error::KeyDestroyed { .. })
    ));
}

#[tokio::test]
async fn disable_enable_and_minimum_version() {
    let sealer = common::sealer();
    let admin = sealer.admin();
    let c = ctx("acme", 1);
    let old = sealer.seal(&c, b"x").await.unwrap();
    admin.rotate("acme").await.unwrap();

    admin.disable_version("acme", 1).await.unwrap();
    admin.disable_version("acme", 1).await.unwrap(); // idempotent
    let err = sealer.open(&c, &old).await.unwrap_err();
    assert!(
        matches!(err, Error::KeyDisabled { version: 1, .. }),
        "{err}"
    );
    admin.enable_version("acme", 1).await.unwrap();
    assert!(sealer.open(&c, &old).await.is_ok());

    admin.set_min_decryption_version("acme", 2).await.unwrap();
    let err = sealer.open(&c, &old).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::BelowMinimumVersion {
                version: 1,
                minimum: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        admin.set_min_decryption_version("acme", 3).await,
        Err(Error::Refused { .. })
    ));
    admin.set_min_decryption_version("acme", 0).await.unwrap();
    assert!(sealer.open(&c, &old).await.is_ok());
}

#[tokio::test]
async fn shredding_one_tenant_leaves_the_others_alone() {
    let store = MemoryKeyStore::new();
    let sealer = sealer_on(store.clone());
    // Another "process" on the same store, checking generations every 100 ms,
    // and a third relying on a short time to live only.
    let revalidating = Sealer::builder(local_provider(), store.clone())
        .revalidate_after(Duration::from_millis(100))
        .build();
    let ttl_only = Sealer::builder(local_provider(), store.clone())
        .cache_ttl(Duration::from_millis(300))
        .build();

    let (a, b) = (ctx("tenant-a", 1), ctx("tenant-b", 1));
    let sealed_a = sealer.seal(&a, b"a's token").await.unwrap();
    let sealed_b = sealer.seal(&b, b"b's token").await.unwrap();
    let held = sealer.tenant("tenant-a").await.unwrap();
    for other in [&revalidating, &ttl_only] {
        assert!(other.open(&a, &sealed_a).await.is_ok());
    }

    let admin = sealer.admin();
    let at = admin.shred_tenant("tenant-a").await.unwrap();

    // In this process, at once, for every operation.
    let shredded =
        |err: Error| matches!(err, Error::TenantShredded { shredded_at, .. } if shredded_at == at);
    assert!(shredded(sealer.open(&a, &sealed_a).await.unwrap_err()));
    assert!(shredded(sealer.seal(&a, b"new").await.unwrap_err()));
    assert!(shredded(sealer.tenant("tenant-a").await.unwrap_err()));
    assert!(shredded(held.open(&a, &sealed_a).unwrap_err()));
    assert!(shredded(held.seal(&a, b"x").unwrap_err()));
    assert!(shredded(admin.rotate("tenant-a").await.unwrap_err()));
    assert!(shredded(
        admin.destroy_version("tenant-a", 1).await.unwrap_err()
    ));
    assert!(shredded(admin.shred_tenant("tenant-a").await.unwrap_err()));
    let message = sealer.open(&a, &sealed_a).await.unwrap_err().to_string();
    assert!(
        message.contains("tenant-a") && message.contains("was shredded on"),
        "{message}"
    );

    // Tenant B works on.
    assert!(sealer.open(&b, &sealed_b).await.is_ok());
    assert!(sealer.seal(&b, b"more").await.is_ok());

    // Other processes: within the revalidation interval, and within the TTL.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(shredded(
        revalidating.open(&a, &sealed_a).await.unwrap_err()
    ));
    assert!(revalidating.open(&b, &sealed_b).await.is_ok());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(shredded(ttl_only.open(&a, &sealed_a).await.unwrap_err()));
    assert!(ttl_only.open(&b, &sealed_b).await.is_ok());

    // The keys are gone from the store.
    let record = store.load_tenant("tenant-a").await.unwrap().unwrap();
    assert!(record.keys.iter().all(|k| k.wrapped.is_none()));

    // Re-creating the tenant is explicit, and old values stay unreadable.
    assert!(shredded(sealer.seal(&a, b"x").await.unwrap_err()));
    let version = admin.recreate_tenant("tenant-a").await.unwrap();
    assert_eq!(version, 2);
    let fresh = sealer.seal(&a, b"after").await.unwrap();
    assert_eq!(fresh.key_version(), 2);
    assert!(matches!(
        sealer.open(&a, &sealed_a).await,
        Err(Error::KeyDestroyed { version: 1, .. })
    ));
    assert!(matches!(
        admin.recreate_tenant("tenant-a").await,
        Err(Error::Refused { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rotations_make_one_version_per_round() {
    let store = MemoryKeyStore::new();
    // Two "processes" whose wraps of a round's new version wait for one
    // another, so every rotation of a round reads the same primary before
    // any of them writes.
    let provider = CountingProvider::new(Duration::ZERO);
    let a = Sealer::builder(provider.clone(), store.clone()).build();
    let b = Sealer::builder(provider.clone(), store.clone()).build();
    a.seal(&ctx("acme", 1), b"x").await.unwrap();

    for round in 1..=4u32 {
        provider.gate_wraps("acme", round + 1, 32);
        let mut tasks = Vec::new();
        for i in 0..32 {
            let admin = if i % 2 == 0 { a.admin() } else { b.admin() };
            tasks.push(tokio::spawn(async move { admin.rotate("acme").await }));
        }
        let mut created = 0;
        for task in tasks {
            let rotation = task.await.unwrap().unwrap();
            assert_eq!(rotation.previous, round);
            assert_eq!(
                rotation.primary,
                round + 1,
                "all callers see the same result"
            );
            created += usize::from(rotation.created);
        }
        assert_eq!(
            created, 1,
            "round {round}: exactly one caller created the version"
        );
        let record = store.load_tenant("acme").await.unwrap().unwrap();
        assert_eq!(record.latest_version(), round + 1);
        assert_eq!(record.keys.len() as u32, round + 1);
    }
    provider.ungate_wraps();
    // Both processes seal under the newest primary.
    assert_eq!(
        a.seal(&ctx("acme", 2), b"x").await.unwrap().key_version(),
        5
    );
    assert_eq!(
        b.seal(&ctx("acme", 2), b"x").await.unwrap().key_version(),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_rewrap_interrupted_and_resumed() {
    let store = MemoryKeyStore::new();
    let writer = sealer_on(store.clone());
    let mut values = Vec::new();
    for t in 0..60 {
        let c = ctx(&format!("tenant-{t:02}"), 1);
        values.push((
            c.clone(),
            writer
                .seal(&c, format!("secret {t}").as_bytes())
                .await
                .unwrap(),
        ));
    }
    writer.admin().rotate("tenant-07").await.unwrap();

    // Re-wrap under root-2 with a KMS that stops answering after 20 wraps,
    // and pull the plug there.
    let stalling = Sealer::builder(
        StallingWrapProvider::new(rotated_provider(), 20),
        store.clone(),
    )
    .build();
    let admin = stalling.admin();
    let task = tokio::spawn(async move { admin.rewrap_all("root-2").await });
    // Meanwhile, fresh readers (new caches, so they read the store each time)
    // open every value, until at least ten keys have moved.
    let started = std::time::Instant::now();
    loop {
        let reader = Sealer::builder(rotated_provider(), store.clone()).build();
        for (c, v) in &values {
            reader.open(c, v).await.unwrap();
        }
        if wrapped_under(&store, "root-2").await.0 >= 10 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the re-wrap moved fewer than ten keys in a minute"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    let _ = task.await;

    let (moved, total) = wrapped_under(&store, "root-2").await;
    assert_eq!(total, 61);
    assert!(
        (10..=20).contains(&moved),
        "interrupted part-way: {moved}/{total}"
    );

    // Throughout, every value opens with both roots configured.
    let both = Sealer::builder(rotated_provider(), store.clone()).build();
    for (c, v) in &values {
        assert!(both.open(c, v).await.is_ok());
    }

    // Resume: only what is left is re-wrapped.
    let report = Sealer::builder(rotated_provider(), store.clone())
        .build()
        .admin()
        .rewrap_all("root-2")
        .await
        .unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.examined, 61);
    assert_eq!(report.rewrapped + report.already_current, 61);
    assert_eq!(report.already_current, moved as u64);
    let again = Sealer::builder(rotated_provider(), store.clone())
        .build()
        .admin()
        .rewrap_all("root-2")
        .await
        .unwrap();
    assert_eq!((again.rewrapped, again.already_current), (0, 61));

    // The old root key can now be dropped: every value opens under root-2 alone.
    let only_new = Sealer::builder(
        LocalKeyProvider::new("root-2", new_root()).unwrap(),
        store.clone(),
    )
    .build();
    for (c, v) in &values {
        let opened = only_new.open(c, v).await.unwrap();
        assert!(opened.plaintext().expose_secret().starts_with(b"secret"));
    }
    assert!(only_new.admin().verify_audit().await.unwrap().is_intact());
}

#[tokio::test]
async fn bad_lifecycle_input_is_refused_and_changes_nothing() {
    let store = MemoryKeyStore::new();
    let sealer = sealer_on(store.clone());
    let admin = sealer.admin();
    sealer.seal(&ctx("acme", 1), b"x").await.unwrap();
    admin.rotate("acme").await.unwrap();
    admin.destroy_version("acme", 1).await.unwrap();
    sealer.seal(&ctx("gone", 1), b"x").await.unwrap();
    admin.shred_tenant("gone").await.unwrap();

    let snapshot = || async {
        (
            store.load_tenant("acme").await.unwrap(),
            store.load_tenant("gone").await.unwrap(),
            store.audit_entries(0, usize::MAX).await.unwrap(),
        )
    };
    let before = snapshot().await;

    for lookalike in ["acme ", " acme", "acme\0"] {
        let err = admin.shred_tenant(lookalike).await.unwrap_err();
        assert!(matches!(err, Error::InvalidContext { .. }), "{err}");
        let err = admin.destroy_version(lookalike, 1).await.unwrap_err();
        assert!(matches!(err, Error::InvalidContext { .. }), "{err}");
    }
    let err = admin.rotate("nobody").await.unwrap_err();
    assert!(matches!(err, Error::UnknownTenant { .. }), "{err}");
    let err = admin.rotate("gone").await.unwrap_err();
    assert!(matches!(err, Error::TenantShredded { .. }), "{err}");
    let err = admin.destroy_version("acme", 2).await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert!(err.to_string().contains("primary"), "{err}");
    let err = admin.disable_version("acme", 2).await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    let err = admin.destroy_version("acme", 1).await.unwrap_err();
    assert!(err.to_string().contains("already destroyed on"), "{err}");
    let err = admin.enable_version("acme", 1).await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    let err = admin.destroy_version("acme", 9).await.unwrap_err();
    assert!(
        matches!(err, Error::UnknownKeyVersion { version: 9, .. }),
        "{err}"
    );
    let err = admin.rewrap_all("root-9").await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert!(err.to_string().contains("root-9"), "{err}");
    let err = admin.recreate_tenant("acme").await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");

    assert!(
        before == snapshot().await,
        "a refused operation changed the store"
    );
}

#[tokio::test]
async fn audit_chain_records_every_event_and_verifies() {
    let store = TamperStore::default();
    let sealer = sealer_on(store.clone());
    let admin = sealer.admin().actor("bob@ops");
    sealer.seal(&ctx("acme", 1), b"x").await.unwrap();
    admin.rotate("acme").await.unwrap();
    admin.disable_version("acme", 1).await.unwrap();
    admin.enable_version("acme", 1).await.unwrap();
    admin.set_min_decryption_version("acme", 2).await.unwrap();
    admin.destroy_version("acme", 1).await.unwrap();
    sealer.seal(&ctx("gone", 1), b"x").await.unwrap();
    admin.shred_tenant("gone").await.unwrap();
    admin.recreate_tenant("gone").await.unwrap();

    let entries = admin.audit_entries(0, 100).await.unwrap();
    let events: Vec<&str> = entries.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        events,
        [
            "tenant.created",
            "tenant_key.rotated",
            "tenant_key.disabled",
            "tenant_key.enabled",
            "tenant.min_decryption_version_set",
            "tenant_key.destroyed",
            "tenant.created",
            "tenant.shredded",
            "tenant.recreated",
        ]
    );
    assert_eq!(entries[1].actor, "bob@ops");
    assert_eq!(entries[0].actor, "", "first-use creation has no actor");
    assert_eq!(
        (entries[1].tenant.as_str(), entries[1].version),
        ("acme", 2)
    );
    let report = admin.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(
        (report.entries, report.first_seq, report.last_seq),
        (9, 1, 9)
    );

    // Each kind of tampering is found, at the right place.
    type Edit = Box<dyn Fn(&mut Vec<fieldseal::audit::AuditEntry>) + Send>;
    let cases: Vec<(&str, Edit, u64)> = vec![
        ("edit", Box::new(|log| log[3].actor = "mallory".into()), 4),
        (
            "edit time",
            Box::new(|log| log[2].at = fieldseal::Timestamp::from_unix_seconds(0)),
            3,
        ),
        (
            "delete",
            Box::new(|log| {
                log.remove(4);
            }),
            5,
        ),
        ("reorder", Box::new(|log| log.swap(5, 6)), 6),
        (
            "renumber after reorder",
            Box::new(|log| {
                log.swap(5, 6);
                let (a, b) = (log[5].seq, log[6].seq);
                log[5].seq = b;
                log[6].seq = a;
            }),
            6,
        ),
        (
            "insert",
            Box::new(|log| {
                let mut forged = log[2].clone();
                forged.event = "tenant_key.enabled".into();
                forged.seq = 4;
                log.insert(3, forged);
                for (i, e) in log.iter_mut().enumerate() {
                    e.seq = i as u64 + 1;
                }
            }),
            4,
        ),
        (
            "delete the first entry",
            Box::new(|log| {
                log.remove(0);
            }),
            2,
        ),
    ];
    for (what, edit, seq) in cases {
        store.edit_audit(edit);
        let report = admin.verify_audit().await.unwrap();
        let broken = report
            .broken
            .unwrap_or_else(|| panic!("{what}: not detected"));
        assert_eq!(broken.seq, seq, "{what}: {}", broken.reason);
    }
    store.edit_audit(|_| {});
    assert!(admin.verify_audit().await.unwrap().is_intact());
}

#[tokio::test]
async fn pruning_keeps_the_rest_verifiable() {
    let store = TamperStore::default();
    let sealer = Sealer::builder(local_provider(), store.clone())
        .min_audit_retention(Duration::ZERO)
        .build();
    let admin = sealer.admin();
    // By default, pruning anything younger than a day is refused.
    let err = sealer_on(store.clone())
        .admin()
        .prune_audit(Duration::from_secs(90))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    for t in 0..5 {
        sealer.seal(&ctx(&format!("t{t}"), 1), b"x").await.unwrap();
    }
    // Entries are timestamped in seconds: the first five are two seconds
    // older than the rotation, so that a cut one second back parts them
    // even if a second boundary passes between the rotation and the prune.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    admin.rotate("t0").await.unwrap();
    let deleted = admin.prune_audit(Duration::from_secs(1)).await.unwrap();
    assert_eq!(deleted, 5);
    let entries = admin.audit_entries(0, 100).await.unwrap();
    assert_eq!(entries.first().unwrap().seq, 6);
    assert_eq!(entries.last().unwrap().event, "audit.pruned");
    let report = admin.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.first_seq, report.last_seq), (6, 7));

    // More activity, and the chain still verifies.
    admin.rotate("t1").await.unwrap();
    assert!(admin.verify_audit().await.unwrap().is_intact());

    // Deleting entries beyond what was pruned is caught.
    store.edit_audit(|log| {
        log.remove(0);
    });
    let report = admin.verify_audit().await.unwrap();
    assert_eq!(report.broken.unwrap().seq, 7);
}

#[tokio::test]
async fn values_survive_everything_but_their_own_destruction() {
    // A round trip through every non-destructive operation.
    let store = MemoryKeyStore::new();
    let sealer = sealer_on(store.clone());
    let admin = sealer.admin();
    let c = ctx("acme", 1);
    let mut history: Vec<SealedValue> = Vec::new();
    for _ in 0..3 {
        history.push(sealer.seal(&c, b"v").await.unwrap());
        admin.rotate("acme").await.unwrap();
    }
    Sealer::builder(rotated_provider(), store.clone())
        .build()
        .admin()
        .rewrap_all("root-2")
        .await
        .unwrap();
    let after = Sealer::builder(rotated_provider(), store).build();
    for (i, v) in history.iter().enumerate() {
        let opened = after.open(&c, v).await.unwrap();
        assert_eq!(opened.key_version(), i as u32 + 1);
        assert!(opened.is_stale());
    }
}

#[tokio::test]
async fn handles_from_before_a_rotation_stop_on_shred_and_destroy() {
    let sealer = common::sealer();
    let admin = sealer.admin();
    let c = ctx("acme", 1);
    let v1 = sealer.seal(&c, b"x").await.unwrap();
    let before_rotation = sealer.tenant("acme").await.unwrap();
    admin.rotate("acme").await.unwrap();
    // The cache now holds a newer snapshot; the old handle is not in it.
    let v2 = sealer.seal(&c, b"y").await.unwrap();
    assert_eq!(v2.key_version(), 2);
    assert_eq!(before_rotation.primary_version(), 1);

    // Destroying version 1 stops the old handle from sealing under it (which
    // would write values nobody can open) and from opening with it.
    admin.destroy_version("acme", 1).await.unwrap();
    assert!(matches!(
        before_rotation.seal(&c, b"z"),
        Err(Error::KeyDestroyed { version: 1, .. })
    ));
    assert!(matches!(
        before_rotation.open(&c, &v1),
        Err(Error::KeyDestroyed { version: 1, .. })
    ));

    // Shredding stops every handle, however old.
    let current = sealer.tenant("acme").await.unwrap();
    assert!(current.open(&c, &v2).is_ok());
    admin.shred_tenant("acme").await.unwrap();
    assert!(matches!(
        current.open(&c, &v2),
        Err(Error::TenantShredded { .. })
    ));
    assert!(matches!(
        before_rotation.seal(&c, b"z"),
        Err(Error::TenantShredded { .. })
    ));

    // After re-creation, new handles work and old ones stay stopped.
    admin.recreate_tenant("acme").await.unwrap();
    let fresh = sealer.tenant("acme").await.unwrap();
    let v3 = fresh.seal(&c, b"again").unwrap();
    assert!(fresh.open(&c, &v3).is_ok());
    assert!(matches!(
        current.open(&c, &v2),
        Err(Error::TenantShredded { .. })
    ));
}

#[tokio::test]
async fn a_broken_chain_is_never_pruned() {
    let store = TamperStore::default();
    let sealer = sealer_on(store.clone());
    let admin = sealer.admin();
    for t in 0..4 {
        sealer.seal(&ctx(&format!("t{t}"), 1), b"x").await.unwrap();
    }
    // An attacker backdates every entry, hoping the next routine prune erases
    // the whole history.
    store.edit_audit(|log| {
        log.iter_mut()
            .for_each(|e| e.at = fieldseal::Timestamp::from_unix_seconds(0))
    });
    let err = admin
        .prune_audit(Duration::from_secs(90 * 86_400))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert!(err.to_string().contains("broken at entry 1"), "{err}");
    store.edit_audit(|_| {});
    let report = admin.verify_audit().await.unwrap();
    assert!(report.is_intact());
    assert_eq!(report.entries, 4, "nothing was deleted");
}

#[tokio::test]
async fn the_primary_is_the_highest_version_whatever_the_store_order() {
    let store = TamperStore::default();
    let sealer = sealer_on(store.clone());
    let c = ctx("acme", 1);
    sealer.seal(&c, b"x").await.unwrap();
    sealer.admin().rotate("acme").await.unwrap();
    let mut record = store.inner.load_tenant("acme").await.unwrap().unwrap();
    record.keys.reverse();
    store.set_record(record.clone());
    let fresh = sealer_on(store.clone());
    assert_eq!(fresh.seal(&c, b"y").await.unwrap().key_version(), 2);

    record.keys.push(record.keys[0].clone());
    store.set_record(record);
    let fresh = sealer_on(store);
    assert!(matches!(
        fresh.seal(&c, b"y").await,
        Err(Error::Store { .. })
    ));
}
