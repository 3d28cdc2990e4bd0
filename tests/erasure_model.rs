//! Erasure through backups, as a model on a simulated clock: random
//! schedules of seals, shreds, daily backups, root-key epochs and daily
//! `retire_root_keys` runs, days long, run through the library in moments
//! (a [`ManualClock`], a key directory, a memory key store whose backups are
//! copies of its wrapped keys).
//!
//! After the bound OPERATIONS.md gives (shred + epoch + 2 retire-root
//! intervals + retention; no re-wrap delay and no provider deletion window
//! here), no backup of any age yields a key of a shredded tenant, and
//! `erasure_report` says so no later than that; a backup younger than the
//! retention still yields every key it holds of the tenants not shredded. The
//! negative control, the same schedules without `retire_root_keys`, must
//! break the first property.

use std::path::Path;
use std::time::Duration;

use fieldseal::{
    Context, LocalKeyProvider, MemoryKeyStore, RootKey, Sealer, Timestamp,
    provider::{KeyProvider, WrapContext},
    store::{KeyStore, StoredKey},
    testing::ManualClock,
};
use proptest::prelude::*;

const DAY: u64 = 86_400;
/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600;
const TENANTS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];

#[derive(Clone, Debug)]
enum Event {
    Seal(usize),
    Shred(usize),
}

#[derive(Clone, Debug)]
struct Schedule {
    epoch_days: u64,
    retention_days: u64,
    days: u64,
    /// Application events, by day.
    events: Vec<(u64, Event)>,
}

fn schedule() -> impl Strategy<Value = Schedule> {
    (1u64..=5, 1u64..=6, 12u64..=28).prop_flat_map(|(epoch_days, retention_days, days)| {
        let event = (0..days, 0..TENANTS.len(), prop::bool::weighted(0.3)).prop_map(
            |(day, tenant, shred)| {
                let event = if shred {
                    Event::Shred(tenant)
                } else {
                    Event::Seal(tenant)
                };
                (day, event)
            },
        );
        prop::collection::vec(event, 1..24).prop_map(move |mut events| {
            events.sort_by_key(|(day, _)| *day);
            Schedule {
                epoch_days,
                retention_days,
                days,
                events,
            }
        })
    })
}

/// A backup: the day it was taken and every wrapped key it holds.
struct Backup {
    day: u64,
    keys: Vec<StoredKey>,
}

/// What a run found.
#[derive(Debug, Default)]
struct Findings {
    /// (tenant, day checked, backup day): a shredded tenant's key that a
    /// backup still yields after the bound.
    resurrected: Vec<(String, u64, u64)>,
    /// (tenant, day checked, backup day): a key of a tenant not shredded, in
    /// a backup younger than the retention, that does not unwrap.
    unrestorable: Vec<(String, u64, u64)>,
    /// A shredded tenant that `erasure_report` did not call unrecoverable by
    /// the bound, or did so while a backup still yielded its keys.
    report_wrong: Vec<String>,
    /// Shredded tenants whose bound fell inside the run.
    checked_shreds: usize,
}

fn sealer(dir: &Path, store: &MemoryKeyStore, clock: &ManualClock) -> Sealer {
    Sealer::builder(
        LocalKeyProvider::from_dir(dir, "root").unwrap(),
        store.clone(),
    )
    .clock(clock.clone())
    .min_audit_retention(Duration::ZERO)
    .build()
}

/// Whether `provider` unwraps any key of `tenant` in `backup`.
async fn yields(
    provider: &LocalKeyProvider,
    store_id: Option<&str>,
    backup: &Backup,
    tenant: &str,
) -> bool {
    for stored in backup.keys.iter().filter(|k| k.tenant == tenant) {
        let Some(wrapped) = &stored.key.wrapped else {
            continue;
        };
        let mut ctx = WrapContext::tenant_key(&stored.tenant, stored.key.version);
        if let Some(id) = store_id {
            ctx = ctx.in_store(id);
        }
        if provider.unwrap(wrapped, &ctx).await.is_ok() {
            return true;
        }
    }
    false
}

async fn run(s: &Schedule, retire: bool) -> Findings {
    let dir = tempfile::tempdir().unwrap();
    RootKey::create_file(dir.path().join("root-e1.key")).unwrap();
    let store = MemoryKeyStore::new();
    let store_id = store.store_identity().await.unwrap().map(|i| i.id);
    let clock = ManualClock::new(Timestamp::from_unix_seconds(START));
    let retention = Duration::from_secs(s.retention_days * DAY);
    let mut app = sealer(dir.path(), &store, &clock);
    let mut backups: Vec<Backup> = Vec::new();
    // Tenant index -> day shredded; tenants that hold a key.
    let mut shredded: [Option<u64>; TENANTS.len()] = [None; TENANTS.len()];
    let mut created = [false; TENANTS.len()];
    let mut findings = Findings::default();
    let mut row = 0i64;
    for day in 0..s.days {
        let at = |secs: u64| {
            Timestamp::from_unix_seconds(START + i64::try_from(day * DAY + secs).unwrap())
        };
        // The application's day.
        clock_to(&clock, at(3_600));
        for (_, event) in s.events.iter().filter(|(d, _)| *d == day) {
            clock.advance(Duration::from_secs(1));
            match *event {
                Event::Seal(t) if shredded[t].is_none() => {
                    row += 1;
                    let ctx = Context::builder(TENANTS[t], "accounts", "token")
                        .row(row)
                        .build()
                        .unwrap();
                    app.seal(&ctx, b"refresh token").await.unwrap();
                    created[t] = true;
                }
                Event::Shred(t) if created[t] && shredded[t].is_none() => {
                    app.admin().shred_tenant(TENANTS[t]).await.unwrap();
                    shredded[t] = Some(day);
                }
                _ => {}
            }
        }
        // rotate-root at the epoch, the restart, then rewrap-root.
        clock_to(&clock, at(7_200));
        if day > 0 && day % s.epoch_days == 0 {
            let new = app.admin().create_root_key().await.unwrap();
            app = sealer(dir.path(), &store, &clock);
            let report = app.admin().rewrap_all(&new).await.unwrap();
            assert!(report.is_complete(), "{report:?}");
        }
        // The daily retire-root.
        clock_to(&clock, at(10_800));
        if retire {
            let report = app.admin().retire_root_keys(retention).await.unwrap();
            assert!(report.blocked.is_empty(), "{report:?}");
        }
        // The nightly backup.
        clock_to(&clock, at(14_400));
        backups.push(Backup {
            day,
            keys: store.list_wrapped_keys(None, 10_000).await.unwrap(),
        });

        // What every backup taken so far yields today, to a provider built
        // from the key directory as it is now.
        let provider = LocalKeyProvider::from_dir(dir.path(), "root").unwrap();
        let id = store_id.as_deref();
        for (t, tenant) in TENANTS.iter().enumerate() {
            match shredded[t] {
                Some(shred_day) => {
                    let bound = shred_day + s.epoch_days + 2 + s.retention_days;
                    let mut yielded = false;
                    for b in &backups {
                        if yields(&provider, id, b, tenant).await {
                            yielded = true;
                            if day >= bound {
                                findings.resurrected.push((tenant.to_string(), day, b.day));
                            }
                        }
                    }
                    let report = app.admin().erasure_report(tenant, None).await.unwrap();
                    let now = clock.now();
                    let claimed = report.unrecoverable_from.is_some_and(|from| from <= now);
                    if (day >= bound && !claimed) || (claimed && yielded) {
                        findings
                            .report_wrong
                            .push(format!("{tenant} on day {day}: {report:?}"));
                    }
                    // Counted when a backup from before the shred held its
                    // keys (a tenant sealed and shredded between two
                    // backups is in none).
                    let in_a_backup = backups
                        .iter()
                        .any(|b| b.keys.iter().any(|k| k.tenant == *tenant));
                    if day == bound && in_a_backup {
                        findings.checked_shreds += 1;
                    }
                }
                None if created[t] => {
                    for b in backups.iter().filter(|b| day - b.day < s.retention_days) {
                        let holds = b.keys.iter().any(|k| k.tenant == *tenant);
                        if holds && !yields(&provider, id, b, tenant).await {
                            findings.unrestorable.push((tenant.to_string(), day, b.day));
                        }
                    }
                }
                None => {}
            }
        }
    }
    findings
}

/// Sets the clock forward to `to` (never back: the audit log's times only
/// grow).
fn clock_to(clock: &ManualClock, to: Timestamp) {
    let now = clock.now();
    if to > now {
        let secs = u64::try_from(to.unix_seconds() - now.unix_seconds()).unwrap();
        clock.advance(Duration::from_secs(secs));
    }
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// With retire-root: no shredded tenant comes back from any backup after
    /// the bound, the erasure report agrees, and young backups restore.
    #[test]
    fn no_backup_yields_a_shredded_tenant_after_the_bound(s in schedule()) {
        let findings = block_on(run(&s, true));
        prop_assert!(findings.resurrected.is_empty(), "{findings:?}");
        prop_assert!(findings.report_wrong.is_empty(), "{findings:?}");
        prop_assert!(findings.unrestorable.is_empty(), "{findings:?}");
    }

    /// Without retire-root, the old root keys stay: every shredded tenant
    /// whose bound passed inside the run comes back from a backup taken
    /// before its shred. (The property above is not vacuous.)
    #[test]
    fn without_destruction_backups_resurrect_shredded_tenants(s in schedule()) {
        let findings = block_on(run(&s, false));
        if findings.checked_shreds > 0 {
            prop_assert!(!findings.resurrected.is_empty(), "{findings:?}");
        }
    }
}

/// One fixed schedule, so that both sides are exercised on every run
/// whatever proptest draws: a tenant sealed on day 0, shredded on day 2,
/// weekly epochs, five days of retention, 20 days.
#[test]
fn a_fixed_schedule_erases_with_retire_root_and_not_without() {
    let s = Schedule {
        epoch_days: 7,
        retention_days: 5,
        days: 20,
        events: vec![
            (0, Event::Seal(0)),
            (0, Event::Seal(1)),
            (1, Event::Seal(1)),
            (2, Event::Shred(0)),
            (9, Event::Seal(2)),
        ],
    };
    let kept = block_on(run(&s, true));
    assert_eq!(kept.checked_shreds, 1);
    assert!(kept.resurrected.is_empty(), "{kept:?}");
    assert!(kept.report_wrong.is_empty(), "{kept:?}");
    assert!(kept.unrestorable.is_empty(), "{kept:?}");
    let control = block_on(run(&s, false));
    assert_eq!(control.checked_shreds, 1);
    // Bound: 2 + 7 + 2 + 5 = day 16; days 16 to 19 each find backups of
    // days 0 and 1 (before the shred) that yield acme's key.
    assert_eq!(
        control
            .resurrected
            .iter()
            .filter(|(t, _, _)| t == "acme")
            .map(|(_, day, _)| *day)
            .collect::<std::collections::BTreeSet<_>>(),
        (16..20).collect()
    );
}
