//! Scheduled rotation: [`KeyAdmin::rotate_if_due`] rotates a tenant only when
//! its primary key version is old enough, on the sealer's clock; a dry run
//! changes nothing; a refusal that concerns one tenant is reported, not
//! raised, so that a schedule goes on with the others.

use std::time::Duration;

use fieldseal::admin::RotationOutcome;
use fieldseal::testing::ManualClock;
use fieldseal::{
    ErrorKind, KeyAdmin, LocalKeyProvider, MemoryKeyStore, RootKey, Sealer, Timestamp,
};

const DAY: u64 = 86_400;

fn days(n: u64) -> Duration {
    Duration::from_secs(n * DAY)
}

async fn primary(admin: &KeyAdmin, tenant: &str) -> u32 {
    admin.describe(tenant).await.unwrap().latest_version()
}

#[tokio::test]
async fn only_tenants_whose_primary_is_old_enough_are_rotated() {
    let clock = ManualClock::new(Timestamp::from_unix_seconds(1_800_000_000));
    let provider = LocalKeyProvider::new("root", RootKey::generate().unwrap()).unwrap();
    let sealer = Sealer::builder(provider, MemoryKeyStore::new())
        .clock(clock.clone())
        .build();
    sealer.create_tenant("acme").await.unwrap();
    clock.advance(days(40));
    sealer.create_tenant("globex").await.unwrap();
    clock.advance(days(60));
    // acme's primary is 100 days old, globex's 60.
    let admin = sealer.admin();
    let ninety = Some(days(90));

    let acme = admin.rotate_if_due("acme", ninety, true).await.unwrap();
    assert!(
        matches!(acme.outcome, RotationOutcome::WouldRotate),
        "{acme:?}"
    );
    assert_eq!((acme.primary, acme.primary_age), (1, days(100)));
    assert_eq!(
        primary(&admin, "acme").await,
        1,
        "a dry run changes nothing"
    );

    let globex = admin.rotate_if_due("globex", ninety, false).await.unwrap();
    assert!(
        matches!(globex.outcome, RotationOutcome::NotDue),
        "{globex:?}"
    );
    assert_eq!((globex.primary, globex.primary_age), (1, days(60)));
    assert_eq!(primary(&admin, "globex").await, 1);

    let acme = admin.rotate_if_due("acme", ninety, false).await.unwrap();
    match acme.outcome {
        RotationOutcome::Rotated(r) => assert_eq!((r.previous, r.primary, r.created), (1, 2, true)),
        other => panic!("acme was due: {other:?}"),
    }
    // Its new primary is new: not due again.
    let again = admin.rotate_if_due("acme", ninety, false).await.unwrap();
    assert!(
        matches!(again.outcome, RotationOutcome::NotDue),
        "{again:?}"
    );
    assert_eq!((again.primary, again.primary_age), (2, Duration::ZERO));

    // Without a limit every tenant is due.
    let forced = admin.rotate_if_due("globex", None, false).await.unwrap();
    assert!(
        matches!(forced.outcome, RotationOutcome::Rotated(_)),
        "{forced:?}"
    );
    assert_eq!(primary(&admin, "globex").await, 2);

    // A tenant with no keys is an error, not a quiet "not due".
    assert!(admin.rotate_if_due("initech", None, false).await.is_err());

    // A shredded tenant is refused alike in a dry run and a real one.
    admin.shred_tenant("globex").await.unwrap();
    for dry_run in [true, false] {
        let err = admin
            .rotate_if_due("globex", None, dry_run)
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::TenantShredded,
            "dry run {dry_run}: {err}"
        );
    }
}

#[tokio::test]
async fn a_tenant_under_a_root_key_this_process_lacks_is_reported_as_refused() {
    let store = MemoryKeyStore::new();
    let old = LocalKeyProvider::new("old-root", RootKey::generate().unwrap()).unwrap();
    Sealer::builder(old, store.clone())
        .build()
        .create_tenant("acme")
        .await
        .unwrap();
    let other = LocalKeyProvider::new("other-root", RootKey::generate().unwrap()).unwrap();
    let admin = Sealer::builder(other, store).build().admin();

    let acme = admin.rotate_if_due("acme", None, false).await.unwrap();
    match acme.outcome {
        RotationOutcome::Refused(e) => assert!(e.to_string().contains("old-root"), "{e}"),
        other => panic!("expected a refusal: {other:?}"),
    }
    assert_eq!(primary(&admin, "acme").await, 1, "nothing was changed");
}
