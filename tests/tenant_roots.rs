//! Tenants with root keys of their own ("bring your own key"): two tenants on
//! their own root keys and one on the shared root key, in one `Sealer`; one
//! tenant's key revoked, restored and destroyed while the others go on;
//! root-key epochs leave the tenants' own keys alone; a tenant bound later.
//!
//! The tenants' keys here are local root keys behind a switch (usable,
//! revoked, destroyed), on SQLite and PostgreSQL; the same cycle on an AWS KMS
//! key is in `tests/providers.rs`.

#[path = "common/backup.rs"]
mod backup;
mod common;
#[path = "common/db.rs"]
mod db;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backup::Db;
use fieldseal::secrecy::ExposeSecret;
use fieldseal::{
    Context, Error, ErrorKind, LocalKeyProvider, MemoryKeyStore, RootKey, SealedValue, Sealer,
    SealerBuilder, Timestamp,
    admin::RootKeyFate,
    async_trait,
    provider::{KeyProvider, TenantKey, WrapContext, WrappedKey},
    testing::ManualClock,
};

fn ctx(tenant: &str, id: i64) -> Context {
    Context::builder(tenant, "integrations", "refresh_token")
        .row(id)
        .build()
        .unwrap()
}

#[derive(Debug)]
enum State {
    Usable(Arc<LocalKeyProvider>),
    Revoked(Arc<LocalKeyProvider>),
    /// The only copy of the key material is gone.
    Destroyed,
}

/// A tenant's own root key, as its owner controls it: usable, revoked (the
/// owner disabled it or withdrew access: it comes back) or destroyed. Records
/// every tenant whose key it was asked to wrap or unwrap.
#[derive(Clone, Debug)]
struct OwnKey {
    id: String,
    state: Arc<Mutex<State>>,
    asked_for: Arc<Mutex<BTreeSet<String>>>,
    calls: Arc<AtomicUsize>,
}

impl OwnKey {
    fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            state: Arc::new(Mutex::new(State::Usable(Arc::new(
                LocalKeyProvider::new(id, RootKey::generate().unwrap()).unwrap(),
            )))),
            asked_for: Arc::default(),
            calls: Arc::default(),
        }
    }

    fn set(&self, next: fn(Arc<LocalKeyProvider>) -> State) {
        let mut state = self.state.lock().unwrap();
        *state = match std::mem::replace(&mut *state, State::Destroyed) {
            State::Usable(p) | State::Revoked(p) => next(p),
            State::Destroyed => State::Destroyed,
        };
    }

    fn revoke(&self) {
        self.set(State::Revoked);
    }

    fn restore(&self) {
        self.set(State::Usable);
    }

    fn destroy(&self) {
        self.set(|_| State::Destroyed);
    }

    fn asked_for(&self) -> BTreeSet<String> {
        self.asked_for.lock().unwrap().clone()
    }

    /// Counts a call for `ctx` (every call, whichever key it names).
    fn ask(&self, ctx: &WrapContext<'_>) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.asked_for
            .lock()
            .unwrap()
            .insert(ctx.tenant().to_string());
    }

    /// The provider, or the owner's refusal as a provider error.
    fn usable(&self) -> Result<Arc<LocalKeyProvider>, Error> {
        match &*self.state.lock().unwrap() {
            State::Usable(p) => Ok(Arc::clone(p)),
            State::Revoked(_) => Err(Error::provider(
                format!("key `{}` is disabled", self.id),
                "DisabledException",
            )),
            State::Destroyed => Err(Error::provider(
                format!("key `{}` was not found", self.id),
                "NotFoundException",
            )),
        }
    }
}

#[async_trait]
impl KeyProvider for OwnKey {
    fn current_root_key_id(&self) -> &str {
        &self.id
    }
    async fn wrap(&self, key: &TenantKey, ctx: &WrapContext<'_>) -> Result<WrappedKey, Error> {
        self.ask(ctx);
        self.usable()?.wrap(key, ctx).await
    }
    /// As a KMS: "not my key" before anything about the key's state.
    async fn unwrap(&self, w: &WrappedKey, ctx: &WrapContext<'_>) -> Result<TenantKey, Error> {
        self.ask(ctx);
        if w.root_key_id() != self.id {
            return Err(Error::RootKeyNotConfigured {
                id: w.root_key_id().to_string(),
            });
        }
        self.usable()?.unwrap(w, ctx).await
    }
}

/// The shared root key: local key files by epoch (`shared-e<N>.key`).
fn shared(dir: &Path) -> LocalKeyProvider {
    LocalKeyProvider::from_dir(dir, "shared").unwrap()
}

fn bound(builder: SealerBuilder, acme: &OwnKey, globex: &OwnKey) -> SealerBuilder {
    builder
        .tenant_root_key("acme", acme.clone())
        .unwrap()
        .tenant_root_key("globex", globex.clone())
        .unwrap()
        .min_audit_retention(Duration::ZERO)
}

/// The root key ids a tenant's stored key versions are wrapped under.
async fn roots_of(sealer: &Sealer, tenant: &str) -> Vec<String> {
    let record = sealer.admin().describe(tenant).await.unwrap();
    record
        .keys
        .iter()
        .filter_map(|k| k.wrapped.as_ref().map(|w| w.root_key_id().to_string()))
        .collect()
}

async fn opens(sealer: &Sealer, tenant: &str, value: &SealedValue, expected: &[u8]) {
    let opened = sealer
        .open(&ctx(tenant, 1), value)
        .await
        .unwrap_or_else(|e| panic!("{tenant}: {e}"));
    assert_eq!(opened.plaintext().expose_secret(), expected, "{tenant}");
}

/// The error for a tenant whose own root key is unusable: it names the
/// tenant and the key.
fn assert_unavailable(err: &Error, tenant: &str, key: &str) {
    assert!(
        matches!(err, Error::TenantRootKeyUnavailable { tenant: t, root_key_id, .. }
            if t == tenant && root_key_id == key),
        "{tenant}: {err:?}"
    );
    let shown = err.to_string();
    assert!(
        shown.contains(&format!("tenant `{tenant}`")) && shown.contains(key),
        "{shown}"
    );
    assert_eq!(err.kind(), ErrorKind::TenantRootKeyUnavailable);
}

async fn byok(mut db: Db) {
    let keys = tempfile::tempdir().unwrap();
    RootKey::create_file(keys.path().join("shared-e1.key")).unwrap();
    let acme = OwnKey::new("acme-own-key");
    let globex = OwnKey::new("globex-own-key");
    // A process that reloads keys on every call, so that a change of the
    // owner's key shows at once (a deployment waits out its cache_ttl).
    let live = bound(db.builder(shared(keys.path())), &acme, &globex)
        .cache_ttl(Duration::ZERO)
        .build();
    let plain = |t: &str| format!("{t}'s refresh token").into_bytes();
    let mut values = Vec::new();
    for tenant in ["acme", "globex", "initech"] {
        values.push((
            tenant,
            live.seal(&ctx(tenant, 1), &plain(tenant)).await.unwrap(),
        ));
    }
    live.admin().rotate("acme").await.unwrap();
    assert_eq!(roots_of(&live, "acme").await, ["acme-own-key"; 2]);
    assert_eq!(roots_of(&live, "globex").await, ["globex-own-key"]);
    assert_eq!(roots_of(&live, "initech").await, ["shared-e1"]);
    // Each tenant's key saw its own tenant only (the audit-chain key is on
    // the shared root key).
    assert_eq!(acme.asked_for(), BTreeSet::from(["acme".to_string()]));
    assert_eq!(globex.asked_for(), BTreeSet::from(["globex".to_string()]));
    db.backup("before").await;

    // A process with the default cache keeps opening acme until its cached
    // keys expire: the bound cache_ttl documents.
    let cached = bound(db.builder(shared(keys.path())), &acme, &globex).build();
    for (tenant, value) in &values {
        opens(&cached, tenant, value, &plain(tenant)).await;
    }

    // Revoked: acme's values, seals and rotations fail, naming acme and its
    // key; the others are unaffected.
    acme.revoke();
    for (tenant, value) in &values {
        match *tenant {
            "acme" => {
                let err = live.open(&ctx("acme", 1), value).await.unwrap_err();
                assert_unavailable(&err, "acme", "acme-own-key");
                assert!(err.to_string().contains("is disabled"), "{err}");
            }
            _ => opens(&live, tenant, value, &plain(tenant)).await,
        }
    }
    let err = live.seal(&ctx("acme", 2), b"new").await.unwrap_err();
    assert_unavailable(&err, "acme", "acme-own-key");
    let err = live.admin().rotate("acme").await.unwrap_err();
    assert_unavailable(&err, "acme", "acme-own-key");
    live.seal(&ctx("globex", 2), b"new").await.unwrap();
    opens(&cached, "acme", &values[0].1, &plain("acme")).await;

    // Restored: acme's values open again, in the same process.
    acme.restore();
    opens(&live, "acme", &values[0].1, &plain("acme")).await;

    // A root-key epoch moves the shared tenants only; a sealer without the
    // bindings leaves the tenants' own keys alone and says so.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(live.admin().create_root_key().await.unwrap(), "shared-e2");
    let next = bound(db.builder(shared(keys.path())), &acme, &globex).build();
    let report = next.admin().rewrap_all("shared-e2").await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(
        (
            report.rewrapped,
            report.already_current,
            report.own_root_keys
        ),
        (1, 3, 0),
        "{report:?}"
    );
    RootKey::create_file(keys.path().join("shared-e3.key")).unwrap();
    let unbound = db
        .builder(shared(keys.path()))
        .min_audit_retention(Duration::ZERO)
        .build();
    let report = unbound.admin().rewrap_all("shared-e3").await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(
        (report.rewrapped, report.own_root_keys),
        (1, 3),
        "{report:?}"
    );
    assert_eq!(roots_of(&unbound, "acme").await, ["acme-own-key"; 2]);
    assert_eq!(roots_of(&unbound, "globex").await, ["globex-own-key"]);
    assert_eq!(roots_of(&unbound, "initech").await, ["shared-e3"]);
    // Without the binding, acme's keys do not unwrap (and nothing is
    // wrapped for it under the shared root key).
    let err = unbound
        .open(&ctx("acme", 1), &values[0].1)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::RootKeyNotConfigured { id } if id == "acme-own-key"),
        "{err}"
    );
    let err = unbound.admin().rotate("acme").await.unwrap_err();
    assert!(matches!(err, Error::RootKeyNotConfigured { .. }), "{err}");
    assert_eq!(roots_of(&unbound, "acme").await, ["acme-own-key"; 2]);
    // The shared root keys are retired as usual; the tenants' own keys are
    // never the shared provider's to destroy.
    let retired = unbound
        .admin()
        .retire_root_keys(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        retired.marked_unused,
        ["shared-e1".to_string(), "shared-e2".to_string()],
        "{retired:?}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let retired = unbound
        .admin()
        .retire_root_keys(Duration::ZERO)
        .await
        .unwrap();
    let destroyed: Vec<&str> = retired
        .destroyed
        .iter()
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(destroyed, ["shared-e1", "shared-e2"], "{retired:?}");

    // Destroyed: acme is erased, here and in the backup taken before; the
    // others open from the current database.
    acme.destroy();
    let current = bound(db.builder(shared(keys.path())), &acme, &globex).build();
    for (tenant, value) in &values {
        match *tenant {
            "acme" => {
                let err = current.open(&ctx("acme", 1), value).await.unwrap_err();
                assert_unavailable(&err, "acme", "acme-own-key");
            }
            _ => opens(&current, tenant, value, &plain(tenant)).await,
        }
    }
    // The audit log names acme's own key for acme, and only for acme: the
    // erasure report lists it (fieldseal cannot see its destruction, so it
    // claims no date).
    let after = &current;
    after.admin().shred_tenant("acme").await.unwrap();
    let report = after.admin().erasure_report("acme", None).await.unwrap();
    let ids: Vec<&str> = report.root_keys.iter().map(|(id, _)| id.as_str()).collect();
    assert!(ids.contains(&"acme-own-key"), "{report:?}");
    assert!(!ids.contains(&"globex-own-key"), "{report:?}");
    assert!(
        report
            .root_keys
            .iter()
            .any(|(id, fate)| id == "acme-own-key" && matches!(fate, RootKeyFate::TenantOwned))
    );
    assert_eq!(report.unrecoverable_from, None, "{report:?}");
    let report = after.admin().erasure_report("initech", None).await.unwrap();
    assert!(
        report
            .root_keys
            .iter()
            .all(|(id, _)| !id.ends_with("own-key")),
        "{report:?}"
    );
    assert!(after.admin().verify_audit().await.unwrap().is_intact());

    db.restore("before").await;
    let restored = bound(db.builder(shared(keys.path())), &acme, &globex).build();
    let err = restored
        .open(&ctx("acme", 1), &values[0].1)
        .await
        .unwrap_err();
    assert_unavailable(&err, "acme", "acme-own-key");
    // globex's key still opens its values in the old backup; initech's was
    // under shared-e1, destroyed after the retention.
    opens(&restored, "globex", &values[1].1, &plain("globex")).await;
    let err = restored
        .open(&ctx("initech", 1), &values[2].1)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RootKeyNotConfigured { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_root_keys_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    byok(Db::sqlite(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_root_keys_on_postgres() {
    db::with_postgres(|pool, _| async move {
        let dir = tempfile::tempdir().unwrap();
        byok(Db::postgres(&pool, dir.path()).await).await;
    })
    .await;
}

/// A process whose cached keys expire asks the tenant's own key again (once
/// per reload, whatever the number of versions), so its owner's revocation
/// shows within the cache's time to live; the shared root key is not asked
/// again for keys it already unwrapped.
#[tokio::test]
async fn a_revocation_shows_within_the_cache_ttl() {
    let shared = LocalKeyProvider::new("shared", RootKey::generate().unwrap()).unwrap();
    let own = OwnKey::new("acme-own-key");
    let sealer = Sealer::builder(shared, MemoryKeyStore::new())
        .tenant_root_key("acme", own.clone())
        .unwrap()
        .cache_ttl(Duration::from_secs(2))
        .build();
    let acme = sealer.seal(&ctx("acme", 1), b"acme's").await.unwrap();
    sealer.admin().rotate("acme").await.unwrap();
    sealer.seal(&ctx("acme", 2), b"acme's too").await.unwrap();
    let calls = own.calls.load(Ordering::SeqCst);
    // Cached: no call.
    opens(&sealer, "acme", &acme, b"acme's").await;
    assert_eq!(own.calls.load(Ordering::SeqCst), calls);
    // Expired: one call for two versions.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    opens(&sealer, "acme", &acme, b"acme's").await;
    assert_eq!(own.calls.load(Ordering::SeqCst), calls + 1);
    // Revoked: still cached, then refused once the keys expire.
    own.revoke();
    opens(&sealer, "acme", &acme, b"acme's").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = sealer.open(&ctx("acme", 1), &acme).await.unwrap_err();
    assert_unavailable(&err, "acme", "acme-own-key");
    // The refusal is remembered for the cache's time to live (at most 5 s):
    // a busy revoked tenant is not a provider call per request.
    let calls = own.calls.load(Ordering::SeqCst);
    for _ in 0..10 {
        let err = sealer.open(&ctx("acme", 1), &acme).await.unwrap_err();
        assert_unavailable(&err, "acme", "acme-own-key");
    }
    assert_eq!(own.calls.load(Ordering::SeqCst), calls);
    // Restored: asked again once the refusal is that old.
    own.restore();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    opens(&sealer, "acme", &acme, b"acme's").await;
}

/// What a process without a tenant's binding, and the audit log's pruning,
/// must not undo: a bound tenant's keys moved by `rewrap_all` are recorded
/// as under its own key; after a prune the record survives, so an unbound
/// `rewrap_all` still leaves them and `erasure_report` still names the key;
/// an unbound process does not recreate the shredded tenant under the
/// shared root key. A revoked own key holds back only its tenant's keys in
/// `rewrap_all`.
#[tokio::test]
async fn bindings_outlive_pruning_and_unbound_processes() {
    let clock = ManualClock::new(Timestamp::from_unix_seconds(1_800_000_000));
    let store = MemoryKeyStore::new();
    let keys = tempfile::tempdir().unwrap();
    RootKey::create_file(keys.path().join("shared-e1.key")).unwrap();
    let build = |own: &[(&str, &OwnKey)]| {
        let mut builder = Sealer::builder(shared(keys.path()), store.clone())
            .clock(clock.clone())
            .min_audit_retention(Duration::from_secs(3600));
        for (tenant, key) in own {
            builder = builder.tenant_root_key(tenant, (*key).clone()).unwrap();
        }
        builder.build()
    };
    let unbound = build(&[]);
    for tenant in ["hooli", "initech"] {
        unbound.seal(&ctx(tenant, 1), b"v").await.unwrap();
    }
    // hooli bound; an epoch's rewrap_all completes its binding.
    let own = OwnKey::new("hooli-own-key");
    RootKey::create_file(keys.path().join("shared-e2.key")).unwrap();
    let bound = build(&[("hooli", &own)]);
    let report = bound.admin().rewrap_all("shared-e2").await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.rewrapped, 2, "{report:?}"); // hooli to its key, initech to e2
    assert_eq!(roots_of(&bound, "hooli").await, ["hooli-own-key"]);
    assert_eq!(roots_of(&bound, "initech").await, ["shared-e2"]);

    // A tenant bound while its keys are still under a shared root key, its
    // own key revoked: its key cannot move and stays under the shared root
    // key, so the epoch is not complete (and that root key not retired).
    let late = OwnKey::new("initech-own-key");
    late.revoke();
    RootKey::create_file(keys.path().join("shared-e3.key")).unwrap();
    let both = build(&[("hooli", &own), ("initech", &late)]);
    let report = both.admin().rewrap_all("shared-e3").await.unwrap();
    assert!(!report.is_complete(), "{report:?}");
    assert_eq!(
        (
            report.skipped,
            report.own_root_unavailable,
            report.already_current
        ),
        (1, 1, 1),
        "{report:?}"
    );
    assert_eq!(roots_of(&both, "initech").await, ["shared-e2"]);
    let retired = both
        .admin()
        .retire_root_keys(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(
        retired.in_use,
        [("shared-e2".to_string(), 1)],
        "{retired:?}"
    );
    // Without the binding the epoch completes: initech moves to e3.
    let report = build(&[("hooli", &own)])
        .admin()
        .rewrap_all("shared-e3")
        .await
        .unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(roots_of(&both, "initech").await, ["shared-e3"]);

    // A revoked own key: hooli's key waits, the epoch goes on.
    RootKey::create_file(keys.path().join("shared-e4.key")).unwrap();
    let bound = build(&[("hooli", &own)]);
    own.revoke();
    let report = bound.admin().rewrap_all("shared-e4").await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(
        (report.rewrapped, report.own_root_unavailable),
        (1, 1),
        "{report:?}"
    );
    own.restore();

    // Pruned: the bindings are restated.
    clock.advance(Duration::from_secs(2 * 86_400));
    let pruned = unbound_prune(&build(&[])).await;
    assert!(pruned > 0);
    let entries = bound.admin().audit_entries(0, 1000).await.unwrap();
    assert!(
        !entries.iter().any(|e| e.event == "tenant.created"),
        "{entries:?}"
    );
    RootKey::create_file(keys.path().join("shared-e5.key")).unwrap();
    let report = build(&[]).admin().rewrap_all("shared-e5").await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(
        (report.rewrapped, report.own_root_keys),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(roots_of(&bound, "hooli").await, ["hooli-own-key"]);

    // Shredded; an unbound process does not bring it back on the shared
    // root key, a bound one does, on its own.
    let bound = build(&[("hooli", &own)]);
    bound.admin().shred_tenant("hooli").await.unwrap();
    let report = bound.admin().erasure_report("hooli", None).await.unwrap();
    assert!(
        report.root_keys.iter().any(|(id, _)| id == "hooli-own-key"),
        "{report:?}"
    );
    let err = build(&[])
        .admin()
        .recreate_tenant("hooli")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Refused { reason }
            if reason.contains("hooli-own-key") && reason.contains("tenant_root_key")),
        "{err}"
    );
    bound.admin().recreate_tenant("hooli").await.unwrap();
    assert_eq!(
        roots_of(&bound, "hooli").await,
        ["hooli-own-key"],
        "the shredded version holds no key"
    );
    assert!(bound.admin().verify_audit().await.unwrap().is_intact());
}

async fn unbound_prune(sealer: &Sealer) -> u64 {
    sealer
        .admin()
        .prune_audit(Duration::from_secs(86_400))
        .await
        .unwrap()
}

/// A tenant created on the shared root key moves to its own with
/// `bind_tenant_root`: every version re-wrapped, no other tenant touched, its
/// values open throughout, and the binding is in the audit log.
#[tokio::test]
async fn a_tenant_is_bound_later() {
    let store = MemoryKeyStore::new();
    let shared = Arc::new(LocalKeyProvider::new("shared", RootKey::generate().unwrap()).unwrap());
    let before = Sealer::builder(Arc::clone(&shared), store.clone())
        .min_audit_retention(Duration::ZERO)
        .build();
    let hooli = before.seal(&ctx("hooli", 1), b"hooli's").await.unwrap();
    before.admin().rotate("hooli").await.unwrap();
    let other = before.seal(&ctx("pied-piper", 1), b"pp's").await.unwrap();

    let own = OwnKey::new("hooli-own-key");
    let after = Sealer::builder(shared, store)
        .tenant_root_key("hooli", own.clone())
        .unwrap()
        .build();
    // Bound but not yet moved: its keys still unwrap through the shared key.
    opens(&after, "hooli", &hooli, b"hooli's").await;
    let report = after.admin().bind_tenant_root("hooli").await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!((report.examined, report.rewrapped), (2, 2), "{report:?}");
    assert_eq!(roots_of(&after, "hooli").await, ["hooli-own-key"; 2]);
    assert_eq!(roots_of(&after, "pied-piper").await, ["shared"]);
    opens(&after, "hooli", &hooli, b"hooli's").await;
    opens(&after, "pied-piper", &other, b"pp's").await;
    // Again: nothing to do.
    let report = after.admin().bind_tenant_root("hooli").await.unwrap();
    assert_eq!((report.rewrapped, report.already_current), (0, 2));
    // The binding and the re-wraps are in the log, which verifies.
    let entries = after.admin().audit_entries(0, 100).await.unwrap();
    assert!(entries.iter().any(|e| e.event == "tenant.root_bound"
        && e.tenant == "hooli"
        && e.detail == "hooli-own-key"));
    assert!(after.admin().verify_audit().await.unwrap().is_intact());
    // Only hooli's keys went to its key.
    assert_eq!(own.asked_for(), BTreeSet::from(["hooli".to_string()]));
    // A tenant this sealer does not bind cannot be bound.
    let err = after
        .admin()
        .bind_tenant_root("pied-piper")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Refused { reason } if reason.contains("tenant_root_key")),
        "{err}"
    );
}

/// Each tenant's root key must be its own: a key shared with the shared
/// provider or with another tenant, a tenant bound twice, and an invalid
/// tenant id are configuration errors.
#[test]
fn bindings_are_checked_when_configured() {
    let shared = || LocalKeyProvider::new("shared", RootKey::generate().unwrap()).unwrap();
    let builder = || Sealer::builder(shared(), MemoryKeyStore::new());
    let config = |r: Result<SealerBuilder, Error>| match r {
        Err(Error::Config { reason }) => reason,
        other => panic!("{other:?}"),
    };
    let reason = config(builder().tenant_root_key("acme", OwnKey::new("shared")));
    assert!(reason.contains("shared key provider"), "{reason}");
    let reason = config(
        builder()
            .tenant_root_key("acme", OwnKey::new("k1"))
            .unwrap()
            .tenant_root_key("globex", OwnKey::new("k1")),
    );
    assert!(reason.contains("`acme` and `globex`"), "{reason}");
    let reason = config(
        builder()
            .tenant_root_key("acme", OwnKey::new("k1"))
            .unwrap()
            .tenant_root_key("acme", OwnKey::new("k2")),
    );
    assert!(reason.contains("twice"), "{reason}");
    assert!(matches!(
        builder().tenant_root_key("", OwnKey::new("k1")),
        Err(Error::InvalidContext { .. })
    ));
}
