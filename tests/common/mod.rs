//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

mod forms;
#[allow(unused_imports)]
pub use forms::secret_forms;

use fieldseal::{
    Context, Error, LocalKeyProvider, MemoryKeyStore, RootKey, Sealer, async_trait,
    provider::{KeyProvider, TenantKey, WrapContext, WrappedKey},
};

/// A root key with a recognisable pattern, so tests can search output for it.
pub const MARKER_ROOT_KEY: [u8; 32] = *b"MARKER-ROOT-KEY-0123456789abcdef";

pub fn local_provider() -> LocalKeyProvider {
    LocalKeyProvider::new(
        "test-root",
        RootKey::from_bytes(&mut MARKER_ROOT_KEY.clone()),
    )
    .unwrap()
}

/// The second root key of root-rotation tests, named "root-2".
pub fn new_root() -> RootKey {
    RootKey::from_bytes(&mut b"NEW-ROOT-KEY-0123456789abcdefghi".clone())
}

/// A provider mid root rotation: "root-2" current, "test-root" still unwrapping.
pub fn rotated_provider() -> LocalKeyProvider {
    LocalKeyProvider::new("root-2", new_root())
        .unwrap()
        .with_previous(
            "test-root",
            RootKey::from_bytes(&mut MARKER_ROOT_KEY.clone()),
        )
        .unwrap()
}

pub fn sealer() -> Sealer {
    Sealer::builder(local_provider(), MemoryKeyStore::new()).build()
}

pub fn ctx(tenant: &str, row: i64) -> Context {
    Context::builder(tenant, "integrations", "refresh_token")
        .row(row)
        .build()
        .unwrap()
}

/// Counts calls into a local provider, optionally slowing unwraps down so that
/// concurrent callers overlap.
#[derive(Debug, Clone)]
pub struct CountingProvider {
    inner: Arc<LocalKeyProvider>,
    pub wraps: Arc<AtomicUsize>,
    pub unwraps: Arc<AtomicUsize>,
    delay: Duration,
    gate: Arc<std::sync::Mutex<Option<WrapGate>>>,
}

/// Wraps of one tenant key version wait until `parties` of them are waiting.
#[derive(Debug)]
struct WrapGate {
    tenant: String,
    version: u32,
    barrier: Arc<tokio::sync::Barrier>,
}

impl CountingProvider {
    pub fn new(delay: Duration) -> Self {
        Self {
            inner: Arc::new(local_provider()),
            wraps: Arc::default(),
            unwraps: Arc::default(),
            delay,
            gate: Arc::default(),
        }
    }

    /// From now on, a wrap of `tenant`'s key `version` waits until `parties`
    /// such wraps are waiting (in this provider and its clones): concurrent
    /// rotations then all read the tenant before any of them writes, however
    /// the tasks are scheduled. A wrap still waiting after a minute panics.
    pub fn gate_wraps(&self, tenant: &str, version: u32, parties: usize) {
        *self.gate.lock().unwrap() = Some(WrapGate {
            tenant: tenant.to_string(),
            version,
            barrier: Arc::new(tokio::sync::Barrier::new(parties)),
        });
    }

    /// Wraps no longer wait.
    pub fn ungate_wraps(&self) {
        *self.gate.lock().unwrap() = None;
    }

    pub fn wraps(&self) -> usize {
        self.wraps.load(Ordering::SeqCst)
    }

    pub fn unwraps(&self) -> usize {
        self.unwraps.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl KeyProvider for CountingProvider {
    fn current_root_key_id(&self) -> &str {
        self.inner.current_root_key_id()
    }

    async fn wrap(&self, key: &TenantKey, ctx: &WrapContext<'_>) -> Result<WrappedKey, Error> {
        self.wraps.fetch_add(1, Ordering::SeqCst);
        let barrier = self
            .gate
            .lock()
            .unwrap()
            .as_ref()
            .filter(|g| g.tenant == ctx.tenant() && g.version == ctx.version())
            .map(|g| g.barrier.clone());
        if let Some(barrier) = barrier {
            tokio::time::timeout(Duration::from_secs(60), barrier.wait())
                .await
                .expect("the gated wraps never all arrived");
        }
        tokio::time::sleep(self.delay).await;
        self.inner.wrap(key, ctx).await
    }

    async fn unwrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &WrapContext<'_>,
    ) -> Result<TenantKey, Error> {
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.inner.unwrap(wrapped, ctx).await
    }
}

/// A provider that "wraps" by storing the key as is. For loading known tenant
/// keys (test vectors) into a store; never a real provider.
#[derive(Debug)]
pub struct PlainProvider;

#[async_trait]
impl KeyProvider for PlainProvider {
    fn current_root_key_id(&self) -> &str {
        "plain"
    }

    async fn wrap(&self, key: &TenantKey, _ctx: &WrapContext<'_>) -> Result<WrappedKey, Error> {
        Ok(WrappedKey::new("plain", key.expose_secret().to_vec()))
    }

    async fn unwrap(
        &self,
        wrapped: &WrappedKey,
        _ctx: &WrapContext<'_>,
    ) -> Result<TenantKey, Error> {
        TenantKey::from_slice(wrapped.as_bytes())
    }
}

/// A short name for an error variant, as used in `tests/vectors/v1.json`.
pub fn kind(error: &Error) -> &'static str {
    error.kind().as_str()
}

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use fieldseal::{
    audit::{AUDIT_MAC_LEN, AuditAppend, AuditEntry},
    store::{
        InsertOutcome, KeyState, KeyStore, NewKeyVersion, StoreIdentity, StoredKey, TenantRecord,
    },
};

type AuditEdit = Box<dyn Fn(&mut Vec<AuditEntry>) + Send>;

/// A key store that an attacker with write access to the database controls:
/// it can replace what a tenant's record reads as, and rewrite the audit log.
/// Everything else goes to an inner `MemoryKeyStore`.
#[derive(Clone, Default)]
pub struct TamperStore {
    pub inner: MemoryKeyStore,
    overrides: Arc<Mutex<HashMap<String, TenantRecord>>>,
    audit_edit: Arc<Mutex<Option<AuditEdit>>>,
    /// How many times `load_tenant` was called.
    pub loads: Arc<AtomicUsize>,
}

impl std::fmt::Debug for TamperStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TamperStore").finish_non_exhaustive()
    }
}

impl TamperStore {
    /// Makes `load_tenant(record.tenant)` return `record`.
    pub fn set_record(&self, record: TenantRecord) {
        self.overrides
            .lock()
            .unwrap()
            .insert(record.tenant.clone(), record);
    }

    /// Rewrites the audit log as read (the whole log, in seq order).
    pub fn edit_audit(&self, edit: impl Fn(&mut Vec<AuditEntry>) + Send + 'static) {
        *self.audit_edit.lock().unwrap() = Some(Box::new(edit));
    }
}

#[async_trait]
impl KeyStore for TamperStore {
    async fn load_tenant(&self, tenant: &str) -> Result<Option<TenantRecord>, Error> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        if let Some(r) = self.overrides.lock().unwrap().get(tenant) {
            return Ok(Some(r.clone()));
        }
        self.inner.load_tenant(tenant).await
    }
    async fn tenant_generation(&self, tenant: &str) -> Result<Option<u64>, Error> {
        if let Some(r) = self.overrides.lock().unwrap().get(tenant) {
            return Ok(Some(r.generation));
        }
        self.inner.tenant_generation(tenant).await
    }
    async fn insert_key_version(
        &self,
        tenant: &str,
        new: NewKeyVersion,
        audit: &AuditAppend<'_>,
    ) -> Result<InsertOutcome, Error> {
        self.inner.insert_key_version(tenant, new, audit).await
    }
    async fn update_key_state(
        &self,
        tenant: &str,
        version: u32,
        from: KeyState,
        to: KeyState,
        audit: &AuditAppend<'_>,
    ) -> Result<bool, Error> {
        self.inner
            .update_key_state(tenant, version, from, to, audit)
            .await
    }
    async fn set_min_decryption_version(
        &self,
        tenant: &str,
        minimum: u32,
        audit: &AuditAppend<'_>,
    ) -> Result<bool, Error> {
        self.inner
            .set_min_decryption_version(tenant, minimum, audit)
            .await
    }
    async fn shred_tenant(&self, tenant: &str, audit: &AuditAppend<'_>) -> Result<bool, Error> {
        self.inner.shred_tenant(tenant, audit).await
    }
    async fn recreate_tenant(
        &self,
        tenant: &str,
        new: NewKeyVersion,
        audit: &AuditAppend<'_>,
    ) -> Result<InsertOutcome, Error> {
        self.inner.recreate_tenant(tenant, new, audit).await
    }
    async fn list_wrapped_keys(
        &self,
        after: Option<(&str, u32)>,
        limit: usize,
    ) -> Result<Vec<StoredKey>, Error> {
        self.inner.list_wrapped_keys(after, limit).await
    }
    async fn rewrap_key(
        &self,
        tenant: &str,
        version: u32,
        old: &WrappedKey,
        new: WrappedKey,
        audit: &AuditAppend<'_>,
    ) -> Result<bool, Error> {
        self.inner
            .rewrap_key(tenant, version, old, new, audit)
            .await
    }
    async fn load_audit_key(&self) -> Result<Option<WrappedKey>, Error> {
        self.inner.load_audit_key().await
    }
    async fn insert_audit_key(&self, wrapped: WrappedKey) -> Result<bool, Error> {
        self.inner.insert_audit_key(wrapped).await
    }
    async fn rewrap_audit_key(
        &self,
        old: &WrappedKey,
        new: WrappedKey,
        audit: &AuditAppend<'_>,
    ) -> Result<bool, Error> {
        self.inner.rewrap_audit_key(old, new, audit).await
    }
    async fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        let mut all = self.inner.audit_entries(0, usize::MAX).await?;
        if let Some(edit) = self.audit_edit.lock().unwrap().as_ref() {
            edit(&mut all);
        }
        // Read in stored order: entries after the position of `after`.
        let start = all.iter().position(|e| e.seq == after).map_or(
            if after == 0 {
                0
            } else {
                all.iter().take_while(|e| e.seq <= after).count()
            },
            |i| i + 1,
        );
        Ok(all.into_iter().skip(start).take(limit).collect())
    }
    async fn prune_audit(
        &self,
        through: u64,
        through_mac: &[u8; AUDIT_MAC_LEN],
        audit: &AuditAppend<'_>,
    ) -> Result<u64, Error> {
        self.inner.prune_audit(through, through_mac, audit).await
    }
}

/// A provider that wraps `allowed` keys, then never finishes a wrap: an
/// operation that wraps many keys (a root key re-wrap) stops part-way at a
/// known point, where a test aborts it.
#[derive(Debug)]
pub struct StallingWrapProvider {
    inner: LocalKeyProvider,
    allowed: AtomicUsize,
}

impl StallingWrapProvider {
    pub fn new(inner: LocalKeyProvider, allowed: usize) -> Self {
        Self {
            inner,
            allowed: AtomicUsize::new(allowed),
        }
    }
}

#[async_trait]
impl KeyProvider for StallingWrapProvider {
    fn current_root_key_id(&self) -> &str {
        self.inner.current_root_key_id()
    }

    async fn wrap(&self, key: &TenantKey, ctx: &WrapContext<'_>) -> Result<WrappedKey, Error> {
        let spent = self
            .allowed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err();
        if spent {
            std::future::pending::<()>().await;
        }
        self.inner.wrap(key, ctx).await
    }

    async fn unwrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &WrapContext<'_>,
    ) -> Result<TenantKey, Error> {
        self.inner.unwrap(wrapped, ctx).await
    }
}

/// How many of the store's key versions are wrapped under `root`, of how many.
pub async fn wrapped_under(store: &impl KeyStore, root: &str) -> (usize, usize) {
    let keys = store.list_wrapped_keys(None, 100_000).await.unwrap();
    let under = keys
        .iter()
        .filter(|k| {
            k.key
                .wrapped
                .as_ref()
                .is_some_and(|w| w.root_key_id() == root)
        })
        .count();
    (under, keys.len())
}

/// The executable of example `name`, built once per test process with this
/// test's features plus `required` (so that the build reuses this test's
/// artifacts instead of compiling the library again with other features).
pub fn example_exe(name: &str, required: &[&str]) -> std::path::PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !built.iter().any(|b| b == name) {
        let mut features: Vec<&str> = required.to_vec();
        for (on, feature) in [
            (cfg!(feature = "default"), "default"),
            (cfg!(feature = "serde"), "serde"),
            (cfg!(feature = "postgres"), "postgres"),
            (cfg!(feature = "mysql"), "mysql"),
            (cfg!(feature = "sqlite"), "sqlite"),
            (cfg!(feature = "aws-kms"), "aws-kms"),
            (cfg!(feature = "pkcs11"), "pkcs11"),
            (cfg!(feature = "vault-transit"), "vault-transit"),
            (cfg!(feature = "metrics"), "metrics"),
            (cfg!(feature = "rayon"), "rayon"),
            (cfg!(feature = "testing"), "testing"),
        ] {
            if on && !features.contains(&feature) {
                features.push(feature);
            }
        }
        let status = std::process::Command::new(option_env!("CARGO").unwrap_or("cargo"))
            .args(["build", "--quiet", "--example", name])
            .args(["--no-default-features", "--features", &features.join(",")])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap_or_else(|e| panic!("cannot run cargo to build the {name} example: {e}"));
        assert!(status.success(), "building the {name} example failed");
        built.push(name.to_string());
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/examples/<name>
    let dir = exe.parent().and_then(std::path::Path::parent).unwrap();
    let path = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} is missing", path.display());
    path
}

type Hook = Arc<dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A key store that runs a hook each time a column job checks the tenants of
/// a batch (`tenant_generations`): after the job has read the batch and
/// before it writes it. A test changes rows under a running job there, at a
/// known point instead of by a race. Everything goes to `inner`.
#[derive(Clone)]
pub struct BatchHookStore<S> {
    pub inner: S,
    hook: Hook,
}

impl<S> std::fmt::Debug for BatchHookStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchHookStore").finish_non_exhaustive()
    }
}

impl<S> BatchHookStore<S> {
    pub fn new<F, Fut>(inner: S, hook: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self {
            inner,
            hook: Arc::new(move || Box::pin(hook())),
        }
    }
}

#[async_trait]
impl<S: KeyStore> KeyStore for BatchHookStore<S> {
    async fn load_tenant(&self, tenant: &str) -> Result<Option<TenantRecord>, Error> {
        self.inner.load_tenant(tenant).await
    }
    async fn tenant_generation(&self, tenant: &str) -> Result<Option<u64>, Error> {
        self.inner.tenant_generation(tenant).await
    }
    async fn tenant_generations(&self, tenants: &[&str]) -> Result<Vec<Option<u64>>, Error> {
        (self.hook)().await;
        self.inner.tenant_generations(tenants).await
    }
    async fn insert_key_version(
        &self,
        tenant: &str,
        new: NewKeyVersion,
        audit: &AuditAppend<'_>,
    ) -> Result<InsertOutcome, Error> {
        self.inner.insert_key_version(tenant, new, audit).await
    }
    async fn update_key_state(
        &self,
        tenant: &str,
        version: u32,
        from: KeyState,
        to: KeyState,
        audit: &AuditAppend<'_>,
    ) -> Result<bool, Error> {
        self.inner
            .update_key_state(tenant, version, from, to, audit)
            .await
    }
    async fn set_min_decryption_version(
        &self,
        tenant: &str,
        minimum: u32,
        audit: &AuditAppend<'_>,
    ) -> Result<bool, Error> {
        self.inner
            .set_min_decryption_version(tenant, minimum, audit)
            .await
    }
    async fn shred_tenant(&self, tenant: &str, audit: &AuditAppend<'_>) -> Result<bool, Error> {
        self.inner.shred_tenant(tenant, audit).await
    }
    async fn recreate_tenant(
        &self,
        tenant: &str,
        new: NewKeyVersion,
        audit: &AuditAppend<'_>,
    ) -> Result<InsertOutcome, Error> {
        self.inner.recreate_tenant(tenant, new, audit).await
    }
    async fn list_wrapped_keys(
        &self,
        after: Option<(&str, u32)>,
        limit: usize,
    ) -> Result<Vec<StoredKey>, Error> {
        self.inner.list_wrapped_keys(after, limit).await
    }
    async fn rewrap_key(
        &self,
        tenant: &str,
        version: u32,
        old: &WrappedKey,
        new: WrappedKey,
        audit: &AuditAppend<'_>,
    ) -> Result<bool, Error> {
        self.inner
            .rewrap_key(tenant, version, old, new, audit)
            .await
    }
    async fn load_audit_key(&self) -> Result<Option<WrappedKey>, Error> {
        self.inner.load_audit_key().await
    }
    async fn insert_audit_key(&self, wrapped: WrappedKey) -> Result<bool, Error> {
        self.inner.insert_audit_key(wrapped).await
    }
    async fn rewrap_audit_key(
        &self,
        old: &WrappedKey,
        new: WrappedKey,
        audit: &AuditAppend<'_>,
    ) -> Result<bool, Error> {
        self.inner.rewrap_audit_key(old, new, audit).await
    }
    async fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        self.inner.audit_entries(after, limit).await
    }
    async fn store_identity(&self) -> Result<Option<StoreIdentity>, Error> {
        self.inner.store_identity().await
    }
    async fn refuse_unbound_wraps(&self, audit: &AuditAppend<'_>) -> Result<bool, Error> {
        self.inner.refuse_unbound_wraps(audit).await
    }
    async fn record_audit(&self, audit: &AuditAppend<'_>) -> Result<(), Error> {
        self.inner.record_audit(audit).await
    }
    async fn audit_head(&self) -> Result<Option<(u64, [u8; AUDIT_MAC_LEN])>, Error> {
        self.inner.audit_head().await
    }
    async fn prune_audit(
        &self,
        through: u64,
        through_mac: &[u8; AUDIT_MAC_LEN],
        audit: &AuditAppend<'_>,
    ) -> Result<u64, Error> {
        self.inner.prune_audit(through, through_mac, audit).await
    }
}
