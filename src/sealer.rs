//! The handle applications hold: one `Sealer` for every tenant.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU64, Ordering};

use crate::admin::KeyAdmin;
use crate::audit::{AuditAppend, AuditEvent};
use crate::cache::{KeyCache, Lookup};
use crate::context::{Context, ContextTemplate};
use crate::crypto::{HmacKey, TenantKeyDeriver};
use crate::error::{Error, Result};
use crate::format::{Algorithm, SealedValue};
use crate::keyring::{Keyring, Revocation, VersionEntry, VersionStatus};
use crate::provider::{KeyProvider, WrapContext, WrappedKey};
use crate::secret::{Migrating, Opened, TenantKey};
use crate::store::{InsertOutcome, KeyState, KeyStore, NewKeyVersion, StoreIdentity, TenantRecord};
use crate::telemetry::{self, CacheEvent, ObservedProvider, ObservedStore};
use crate::time::Timestamp;

/// Default number of tenants whose keys are cached.
const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// Default time a cached tenant key stays valid.
const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
/// Default youngest age of audit entries that may be pruned.
const DEFAULT_MIN_AUDIT_RETENTION: Duration = Duration::from_secs(86_400);
/// Longest time a tenant's own root key that refused is not asked again.
const OWN_ROOT_RETRY: Duration = Duration::from_secs(5);

/// A refusal of a tenant's own root key: when, its id, what it refused and
/// the provider's message.
type OwnRootRefusal = (Instant, String, &'static str, String);

/// Shortest time between two reloads of a tenant caused by a value under a
/// key version newer than the cached primary.
const MIN_RELOAD_INTERVAL: Duration = Duration::from_millis(100);

/// Seals and opens field values for every tenant.
///
/// Build one per process with [`Sealer::builder`], clone it freely (clones share
/// the key cache), and pass the tenant in each call's [`Context`]. The first
/// use of a tenant loads (or creates) its keys through the key store and the
/// key provider; after that its keys are cached and sealing and opening do no
/// I/O. For the tightest loops, take a [`TenantSealer`] with
/// [`Sealer::tenant`]: its `seal` and `open` are plain synchronous calls.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), fieldseal::Error> {
/// use fieldseal::{Context, LocalKeyProvider, MemoryKeyStore, RootKey, Sealer};
/// use secrecy::ExposeSecret;
///
/// let provider = LocalKeyProvider::new("root-1", RootKey::generate()?)?;
/// let sealer = Sealer::builder(provider, MemoryKeyStore::new()).build();
///
/// let ctx = Context::builder("acme", "integrations", "api_key").row(7).build()?;
/// let sealed = sealer.seal(&ctx, b"sk_live_123").await?;
/// let opened = sealer.open(&ctx, &sealed).await?;
/// assert_eq!(opened.plaintext().expose_secret(), b"sk_live_123");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Sealer {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) provider: Box<dyn KeyProvider>,
    /// Tenants bound to their own root keys, and the providers holding them.
    pub(crate) tenant_roots: BTreeMap<String, Box<dyn KeyProvider>>,
    pub(crate) store: Box<dyn KeyStore>,
    pub(crate) cache: KeyCache,
    algorithm: Algorithm,
    create_tenants: bool,
    revalidate_after: Option<Duration>,
    min_audit_retention: Duration,
    /// Where shreds are recorded outside the database, if anywhere.
    pub(crate) shred_ledger: Option<crate::ledger::ShredLedger>,
    /// Whether metrics carry a `tenant` label (feature `metrics`).
    pub(crate) label_tenant: bool,
    /// The audit-chain key, unwrapped on the first key change.
    audit_key: tokio::sync::OnceCell<HmacKey>,
    /// The key store's identity, read on the first wrap or unwrap.
    store_identity: tokio::sync::OnceCell<Option<StoreIdentity>>,
    /// Set once the store was seen refusing unbound keys after the cached
    /// identity was read.
    unbound_refused: std::sync::atomic::AtomicBool,
    /// Bound tenants whose own root key refused a reload just now: asked
    /// again only after [`OWN_ROOT_RETRY`] (or the cache's time to live, if
    /// shorter), so that a busy tenant whose key is revoked does not turn
    /// every request into a provider call.
    own_root_refusals: std::sync::Mutex<std::collections::HashMap<String, OwnRootRefusal>>,
    pub(crate) clock: crate::time::Clock,
}

/// Configures a [`Sealer`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct SealerBuilder {
    provider: Box<dyn KeyProvider>,
    tenant_roots: BTreeMap<String, Box<dyn KeyProvider>>,
    store: Box<dyn KeyStore>,
    algorithm: Algorithm,
    cache_capacity: usize,
    cache_ttl: Duration,
    create_tenants: bool,
    revalidate_after: Option<Duration>,
    min_audit_retention: Duration,
    shred_ledger: Option<crate::ledger::ShredLedger>,
    label_tenant: bool,
    clock: crate::time::Clock,
}

impl SealerBuilder {
    /// Adds a `tenant` label to fieldseal's metrics (default: off).
    ///
    /// Off, every metric has a bounded set of labels (operation names and
    /// error kinds), whatever the number of tenants. On, each tenant gets its
    /// own series, and counting a seal or an open allocates the label: turn it
    /// on only for a bounded number of tenants, and only where tenant ids may
    /// appear in your metrics system.
    #[cfg(feature = "metrics")]
    pub fn metrics_tenant_label(mut self, label: bool) -> Self {
        self.label_tenant = label;
        self
    }

    /// Reads the time from `clock` instead of the system clock (feature
    /// `testing`; see [`ManualClock`](crate::ManualClock)).
    ///
    /// # Security
    ///
    /// For tests only: never in a deployment.
    #[cfg(feature = "testing")]
    pub fn clock(mut self, clock: crate::time::ManualClock) -> Self {
        self.clock = crate::time::Clock::Manual(clock);
        self
    }

    /// The AEAD for new values (default AES-256-GCM). Values sealed with either
    /// algorithm always open.
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// How many tenants' keys to keep cached (default 10,000; at least 1). When
    /// full, the longest-cached tenant is evicted.
    pub fn cache_capacity(mut self, tenants: usize) -> Self {
        self.cache_capacity = tenants;
        self
    }

    /// How long a tenant's cached keys are used before they are reloaded from
    /// the key store (default 5 minutes).
    ///
    /// # Security
    ///
    /// This is also how long *another* process may keep sealing with a rotated
    /// key or opening a shredded tenant's values after the change: keep it as
    /// short as your key provider's request budget allows.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// Checks the key store's cheap per-tenant generation counter when a cached
    /// tenant has not been checked for `interval`, and reloads its keys if they
    /// changed (default: off, so only the cache time to live applies).
    ///
    /// This bounds how long this process keeps using keys that another process
    /// rotated, destroyed or shredded to about `interval`, for the price of one
    /// indexed read per tenant per interval. [`TenantSealer`] handles are
    /// snapshots and are not re-checked.
    pub fn revalidate_after(mut self, interval: Duration) -> Self {
        self.revalidate_after = Some(interval);
        self
    }

    /// The youngest audit entries [`KeyAdmin::prune_audit`] may delete (default
    /// one day), so that a unit mistake cannot erase recent history. Raise it to
    /// your retention policy's floor.
    pub fn min_audit_retention(mut self, minimum: Duration) -> Self {
        self.min_audit_retention = minimum;
        self
    }

    /// Records every shred in `ledger`, a file outside the database (default:
    /// none), so that a database restored from a backup can be shredded
    /// again with [`KeyAdmin::replay_shred_ledger`].
    ///
    /// # Security
    ///
    /// Without a ledger, restoring a backup taken before a shred brings the
    /// tenant back for as long as the root key that wrapped its keys exists.
    /// See [`ShredLedger`](crate::ShredLedger) for where to keep it.
    pub fn shred_ledger(mut self, ledger: crate::ledger::ShredLedger) -> Self {
        self.shred_ledger = Some(ledger);
        self
    }

    /// Binds `tenant` to its own root key ("bring your own key"): `provider`
    /// holds it, for example an [`AwsKmsProvider`](crate::AwsKmsProvider) on
    /// the tenant's KMS key, a Transit key or an HSM key of its own.
    ///
    /// From then on, this sealer wraps the tenant's new key versions under
    /// `provider`'s current root key, and unwraps its keys through `provider`
    /// first and the shared provider second (keys made before the binding
    /// stay under the shared root key until
    /// [`KeyAdmin::bind_tenant_root`](crate::KeyAdmin::bind_tenant_root)
    /// re-wraps them). No other tenant's key and never the audit-chain key
    /// goes to `provider`, and the shared provider never wraps this tenant's
    /// keys. One sealer serves any mix of bound and unbound tenants; a cached
    /// tenant costs no provider call, bound or not.
    ///
    /// # Security
    ///
    /// The key's owner controls the tenant's data: disabling the key or
    /// revoking fieldseal's access stops the tenant's values from opening
    /// (with [`Error::TenantRootKeyUnavailable`], in every process once its
    /// cached keys expire: see [`cache_ttl`](SealerBuilder::cache_ttl)), and
    /// restoring access restores them (a refusal is remembered for the time
    /// to live or 5 seconds, whichever is shorter, so that a busy tenant
    /// whose key is revoked is not a provider call per request); destroying the key erases the tenant,
    /// in every backup of the database too. Configure every process that
    /// serves the tenant alike, the runner included: a process without the
    /// binding cannot unwrap the tenant's keys (it never wraps them under the
    /// shared root key instead: [`KeyAdmin::rewrap_all`](crate::KeyAdmin::rewrap_all)
    /// leaves them alone), but it would create a *new* tenant of that id under
    /// the shared root key.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidContext`] for a tenant id that breaks the tenant id
    /// rules; [`Error::Config`] if the tenant is already bound, or if one of
    /// `provider`'s root key ids is held by the shared provider or by
    /// another tenant's: each tenant's root key must be its own.
    pub fn tenant_root_key(
        mut self,
        tenant: &str,
        provider: impl KeyProvider + 'static,
    ) -> Result<Self> {
        check_tenant_id(tenant)?;
        if self.tenant_roots.contains_key(tenant) {
            return Err(Error::config(format!(
                "tenant `{tenant}` is bound to a root key of its own twice: bind it once"
            )));
        }
        for id in provider.root_key_ids() {
            crate::provider::check_root_key_id(id)?;
            if self.provider.root_key_ids().contains(&id) {
                return Err(Error::config(format!(
                    "tenant `{tenant}`'s own root key `{id}` is also held by the shared key \
                     provider: a tenant's root key must be its own"
                )));
            }
            if let Some((other, _)) = self
                .tenant_roots
                .iter()
                .find(|(_, p)| p.root_key_ids().contains(&id))
            {
                return Err(Error::config(format!(
                    "root key `{id}` is bound to tenants `{other}` and `{tenant}`: each \
                     tenant's root key must be its own"
                )));
            }
        }
        self.tenant_roots
            .insert(tenant.to_string(), Box::new(provider));
        Ok(self)
    }

    /// Whether sealing for a tenant with no keys creates its first key (default
    /// `true`). When `false`, such a seal fails with
    /// [`Error::UnknownTenant`] until the tenant is created with
    /// [`Sealer::create_tenant`].
    ///
    /// # Security
    ///
    /// With the default, any tenant id a caller passes gets a key: a typo
    /// (`"Acme"` for `"acme"`) seals under a new tenant whose values the real
    /// tenant never opens, and a tenant id taken from a request lets a client
    /// create keys (a KMS call and a key store row each). Take tenant ids from
    /// your own authenticated records, or turn this off and create tenants
    /// explicitly when they sign up.
    pub fn create_tenants_on_first_use(mut self, create: bool) -> Self {
        self.create_tenants = create;
        self
    }

    /// Builds the sealer.
    pub fn build(self) -> Sealer {
        Sealer {
            inner: Arc::new(Inner {
                provider: Box::new(ObservedProvider {
                    inner: self.provider,
                    label_tenant: self.label_tenant,
                }),
                tenant_roots: self
                    .tenant_roots
                    .into_iter()
                    .map(|(tenant, inner)| {
                        let observed: Box<dyn KeyProvider> = Box::new(ObservedProvider {
                            inner,
                            label_tenant: self.label_tenant,
                        });
                        (tenant, observed)
                    })
                    .collect(),
                store: Box::new(ObservedStore {
                    inner: self.store,
                    label_tenant: self.label_tenant,
                }),
                cache: KeyCache::new(self.cache_capacity, self.cache_ttl),
                algorithm: self.algorithm,
                create_tenants: self.create_tenants,
                revalidate_after: self.revalidate_after,
                min_audit_retention: self.min_audit_retention,
                shred_ledger: self.shred_ledger,
                label_tenant: self.label_tenant,
                audit_key: tokio::sync::OnceCell::new(),
                store_identity: tokio::sync::OnceCell::new(),
                unbound_refused: std::sync::atomic::AtomicBool::new(false),
                own_root_refusals: std::sync::Mutex::default(),
                clock: self.clock,
            }),
        }
    }
}

impl fmt::Debug for SealerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealerBuilder")
            .field("provider", &self.provider)
            .field("tenant_roots", &self.tenant_roots)
            .field("store", &self.store)
            .field("algorithm", &self.algorithm)
            .field("cache_capacity", &self.cache_capacity)
            .field("cache_ttl", &self.cache_ttl)
            .field("create_tenants", &self.create_tenants)
            .field("revalidate_after", &self.revalidate_after)
            .field("min_audit_retention", &self.min_audit_retention)
            .finish()
    }
}

impl Sealer {
    /// The time, from the sealer's clock.
    pub(crate) fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Starts configuring a sealer over a root key provider and a key store.
    pub fn builder(
        provider: impl KeyProvider + 'static,
        store: impl KeyStore + 'static,
    ) -> SealerBuilder {
        SealerBuilder {
            provider: Box::new(provider),
            tenant_roots: BTreeMap::new(),
            store: Box::new(store),
            algorithm: Algorithm::default(),
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            cache_ttl: DEFAULT_CACHE_TTL,
            create_tenants: true,
            revalidate_after: None,
            min_audit_retention: DEFAULT_MIN_AUDIT_RETENTION,
            shred_ledger: None,
            label_tenant: false,
            clock: crate::time::Clock::System,
        }
    }

    pub(crate) fn min_audit_retention(&self) -> Duration {
        self.inner.min_audit_retention
    }

    /// Key lifecycle operations — rotation, destruction, shredding, root key
    /// rotation and the audit log — through this sealer's provider, store and
    /// cache.
    pub fn admin(&self) -> KeyAdmin {
        KeyAdmin::new(self.clone())
    }

    /// A synchronous sealer for one tenant, with its keys loaded (and its first
    /// key created, if it has none and the builder allows it).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidContext`] for a tenant id that breaks the tenant id
    /// rules (empty, over 255 bytes, not in NFC, a control, invisible format
    /// or unassigned code point, surrounding whitespace: FORMAT.md
    /// §"Context rules"); [`Error::UnknownTenant`] if the tenant has no keys
    /// and may not be created; [`Error::TenantShredded`];
    /// [`Error::TenantRootKeyUnavailable`] if its own root key refuses; provider and store
    /// errors.
    pub async fn tenant(&self, tenant: &str) -> Result<TenantSealer> {
        check_tenant_id(tenant)?;
        let keyring = self.keyring(tenant, self.inner.create_tenants).await?;
        self.handle(tenant, keyring)
    }

    /// As [`Sealer::tenant`], with the tenant's keys checked against the key
    /// store now: one small query for the tenant's generation, and a reload if
    /// its keys changed since they were cached, whatever
    /// [`SealerBuilder::revalidate_after`] says.
    ///
    /// Use it where a handle that has not yet seen another process's rotation
    /// would be wrong rather than merely stale: a uniqueness check on a blind
    /// index (FORMAT.md §"Unique values") must search under every version,
    /// the newest included.
    ///
    /// # Errors
    ///
    /// As [`Sealer::tenant`]; a failed generation check is an error here, not
    /// a warning.
    pub async fn tenant_checked(&self, tenant: &str) -> Result<TenantSealer> {
        check_tenant_id(tenant)?;
        let keyring = self
            .keyring_with(tenant, self.inner.create_tenants, None, true)
            .await?;
        self.handle(tenant, keyring)
    }

    /// The handle on a loaded keyring, unless the tenant is shredded.
    fn handle(&self, tenant: &str, keyring: Arc<Keyring>) -> Result<TenantSealer> {
        if let Some(at) = keyring.shredded_at {
            return Err(Error::TenantShredded {
                tenant: tenant.to_string(),
                shredded_at: at,
            });
        }
        Ok(TenantSealer {
            keyring,
            algorithm: self.inner.algorithm,
            label_tenant: self.inner.label_tenant,
        })
    }

    /// As [`Sealer::tenant`] (creating the tenant's first key only if
    /// `create` and the builder allows it), with the tenant's keys checked
    /// against the key store now, as [`Sealer::tenant_checked`] does.
    #[cfg(feature = "_sql")]
    pub(crate) async fn tenant_checked_now(
        &self,
        tenant: &str,
        create: bool,
    ) -> Result<TenantSealer> {
        check_tenant_id(tenant)?;
        let create = create && self.inner.create_tenants;
        let mut keyring = self.keyring_with(tenant, create, None, true).await?;
        // A cache miss may have joined a load that began before a change:
        // compare once more, and reload if the store moved on.
        if self.inner.store.tenant_generation(tenant).await? != Some(keyring.generation) {
            let stale = self.inner.cache.invalidate(tenant);
            keyring = self.keyring_with(tenant, create, stale, false).await?;
        }
        self.handle(tenant, keyring)
    }

    /// The key store's generations of `tenants` now, in one call.
    #[cfg(feature = "_sql")]
    pub(crate) async fn store_generations(&self, tenants: &[&str]) -> Result<Vec<Option<u64>>> {
        self.inner.store.tenant_generations(tenants).await
    }

    /// Seals `plaintext` for the tenant, table, column and row named by `ctx`,
    /// under the tenant's primary key.
    ///
    /// # Errors
    ///
    /// [`Error::PlaintextTooLarge`]; [`Error::TenantShredded`];
    /// [`Error::UnknownTenant`] if the tenant has no keys and may not be
    /// created; [`Error::TenantRootKeyUnavailable`] if the tenant's own root
    /// key refuses; provider and store errors while loading keys.
    pub async fn seal(&self, ctx: &Context, plaintext: &[u8]) -> Result<SealedValue> {
        let result = self.seal_inner(ctx, plaintext).await;
        telemetry::sealed(&result, self.tenant_label(ctx, &result));
        result
    }

    async fn seal_inner(&self, ctx: &Context, plaintext: &[u8]) -> Result<SealedValue> {
        crate::envelope::check_plaintext_len(plaintext)?;
        let keyring = self
            .keyring(ctx.tenant(), self.inner.create_tenants)
            .await?;
        keyring.seal(self.inner.algorithm, ctx, plaintext)
    }

    /// The tenant label for metrics, when the application opted in and the
    /// tenant is known: an id that names no tenant never becomes a series.
    fn tenant_label<'a, T>(&self, ctx: &'a Context, result: &Result<T>) -> Option<&'a str> {
        let unknown = matches!(
            result,
            Err(Error::UnknownTenant { .. } | Error::InvalidContext { .. })
        );
        (self.inner.label_tenant && !unknown).then(|| ctx.tenant())
    }

    /// Opens `sealed`, which must have been sealed with exactly this `ctx`.
    ///
    /// A value under a key version this process has not seen yet (another
    /// process rotated) reloads the tenant's keys once.
    ///
    /// # Errors
    ///
    /// [`Error::OpenFailed`] if the value was altered or belongs to another
    /// context (one opaque error, by design); [`Error::KeyDestroyed`],
    /// [`Error::KeyDisabled`], [`Error::BelowMinimumVersion`],
    /// [`Error::TenantShredded`], [`Error::UnknownTenant`],
    /// [`Error::UnknownKeyVersion`]; [`Error::TenantRootKeyUnavailable`] if
    /// the tenant's own root key refuses; provider and store errors.
    pub async fn open(&self, ctx: &Context, sealed: &SealedValue) -> Result<Opened> {
        let result = match self.fresh_keyring_for(ctx.tenant(), sealed).await {
            Ok(keyring) => keyring.open(ctx, sealed),
            Err(err) => Err(err),
        };
        telemetry::opened(&result, self.tenant_label(ctx, &result));
        result
    }

    /// Opens `sealed` and, if it was sealed under an older key version, seals
    /// its plaintext again under the tenant's primary key. Returns the new value
    /// to store, or `None` if `sealed` is already under the primary.
    ///
    /// This is lazy re-sealing: call it where values are read, write back what
    /// it returns, and old key versions empty out without a migration.
    ///
    /// # Security
    ///
    /// Write the new value back with a compare-and-swap —
    /// `UPDATE … SET col = $new WHERE id = $id AND col = $old` — not a plain
    /// `UPDATE … WHERE id = $id`: a concurrent write of a new secret between your
    /// read and your write would otherwise be replaced by the old one.
    ///
    /// # Errors
    ///
    /// As [`Sealer::open`]; `sealed` is left as it was.
    pub async fn reseal(&self, ctx: &Context, sealed: &SealedValue) -> Result<Option<SealedValue>> {
        let result = match self.fresh_keyring_for(ctx.tenant(), sealed).await {
            Ok(keyring) => keyring.reseal(self.inner.algorithm, ctx, sealed),
            Err(err) => Err(err),
        };
        telemetry::resealed(&result, self.tenant_label(ctx, &result));
        result
    }

    /// Reads a value of a TEXT column that is being migrated to fieldseal in
    /// place (`migrate` of the rotation runner): a value that starts with
    /// `fs:` is a sealed value and must open with `ctx`; any other value is
    /// plaintext from before the migration, returned as such.
    ///
    /// # Security
    ///
    /// Plaintext is unauthenticated: while this read path is in use, whoever
    /// can write the column can plant a value. Switch back to [`Sealer::open`]
    /// as soon as the migration is complete (`plan` reports no plaintext
    /// left). A value that starts with `fs:` but does not open is an error,
    /// never plaintext, so a sealed value cannot be downgraded by tampering.
    ///
    /// # Errors
    ///
    /// As [`Sealer::open`], for values starting with `fs:`.
    pub async fn open_migrating(&self, ctx: &Context, stored: &str) -> Result<Migrating> {
        if !stored.starts_with(crate::format::TEXT_PREFIX) {
            return Ok(Migrating::Legacy(secrecy::SecretString::from(stored)));
        }
        let sealed = SealedValue::from_text(stored)?;
        self.open(ctx, &sealed).await.map(Migrating::Sealed)
    }

    /// The tenant's keys, reloaded once if `sealed` names a version newer than
    /// the cached primary (another process rotated).
    async fn fresh_keyring_for(&self, tenant: &str, sealed: &SealedValue) -> Result<Arc<Keyring>> {
        let keyring = self.keyring(tenant, false).await?;
        // At most one such reload per tenant per interval: the version comes
        // from untrusted bytes, and must not turn into a store read per call.
        if !keyring.has_version(sealed.key_version())
            && keyring.shredded_at.is_none()
            && sealed.key_version() > keyring.primary_version()
            && keyring.loaded_at.elapsed() >= MIN_RELOAD_INTERVAL
        {
            let stale = self.inner.cache.invalidate(tenant);
            return self.keyring_with(tenant, false, stale, false).await;
        }
        Ok(keyring)
    }

    /// Creates a tenant's first key explicitly (for deployments that disable
    /// [`create_tenants_on_first_use`](SealerBuilder::create_tenants_on_first_use)).
    /// Does nothing if the tenant already has keys.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidContext`] for an invalid tenant id;
    /// [`Error::TenantShredded`] if the tenant was shredded;
    /// [`Error::TenantRootKeyUnavailable`] if its own root key refuses; provider and store
    /// errors.
    pub async fn create_tenant(&self, tenant: &str) -> Result<()> {
        check_tenant_id(tenant)?;
        match self.inner.store.load_tenant(tenant).await? {
            Some(record) if record.latest_version() > 0 || record.shredded_at.is_some() => {
                if let Some(at) = record.shredded_at {
                    return Err(Error::TenantShredded {
                        tenant: tenant.to_string(),
                        shredded_at: at,
                    });
                }
                Ok(())
            }
            _ => self
                .create_version(tenant, 1, AuditEvent::TenantCreated, None)
                .await
                .map(|_| ()),
        }
    }

    /// The tenant's keys: cached, or loaded once for all concurrent callers.
    pub(crate) async fn keyring(&self, tenant: &str, create: bool) -> Result<Arc<Keyring>> {
        self.keyring_with(tenant, create, None, false).await
    }

    /// As [`Sealer::keyring`]; `stale` is a snapshot just dropped from the cache,
    /// whose unchanged keys the reload may reuse.
    async fn keyring_with(
        &self,
        tenant: &str,
        create: bool,
        mut stale: Option<Arc<Keyring>>,
        force_check: bool,
    ) -> Result<Arc<Keyring>> {
        // At most one generation check, and one reload after it.
        let mut checked = false;
        loop {
            let keyring = match self.inner.cache.lookup(tenant) {
                Lookup::Hit(keyring) => {
                    tracing::trace!(tenant, "tenant key cache hit");
                    telemetry::cache(CacheEvent::Hit);
                    keyring
                }
                Lookup::Miss { cell, previous } => {
                    telemetry::cache(if previous.is_some() {
                        CacheEvent::Expired
                    } else {
                        CacheEvent::Miss
                    });
                    let previous = previous.or(stale.take());
                    if let Some(refused) = self.recent_own_root_refusal(tenant) {
                        return Err(refused);
                    }
                    let loaded = self
                        .inner
                        .cache
                        .load(tenant, cell, || async move {
                            tracing::debug!(tenant, "tenant key cache miss: loading keys");
                            let loaded = self
                                .load_keyring(tenant, create, previous.as_deref(), None)
                                .await?;
                            Ok(Arc::new(loaded))
                        })
                        .await;
                    if let Err(Error::TenantRootKeyUnavailable {
                        root_key_id,
                        action,
                        source,
                        ..
                    }) = &loaded
                    {
                        let message = match &**source {
                            Error::Provider { message, .. } => message.clone(),
                            other => other.to_string(),
                        };
                        lock_refusals(&self.inner.own_root_refusals).insert(
                            tenant.to_string(),
                            (Instant::now(), root_key_id.clone(), action, message),
                        );
                    }
                    return loaded;
                }
            };
            if checked || !(force_check || self.claim_check(&keyring)) {
                return Ok(keyring);
            }
            checked = true;
            match self.inner.store.tenant_generation(tenant).await {
                Ok(Some(generation)) if generation == keyring.generation => {
                    telemetry::cache(CacheEvent::Revalidated("unchanged"));
                    return Ok(keyring);
                }
                Ok(_) => {
                    telemetry::cache(CacheEvent::Revalidated("changed"));
                    tracing::debug!(tenant, "tenant keys changed in the store: reloading");
                    stale = self.inner.cache.invalidate(tenant).or(Some(keyring));
                }
                Err(err) if force_check => {
                    telemetry::cache(CacheEvent::Revalidated("failed"));
                    return Err(err);
                }
                Err(err) => {
                    // The time to live still bounds how long these keys are used.
                    telemetry::cache(CacheEvent::Revalidated("failed"));
                    tracing::warn!(tenant, error = %err, "tenant generation check failed");
                    return Ok(keyring);
                }
            }
        }
    }

    /// The refusal of `tenant`'s own root key, if it refused a reload less
    /// than [`OWN_ROOT_RETRY`] (or the cache's time to live) ago.
    fn recent_own_root_refusal(&self, tenant: &str) -> Option<Error> {
        if !self.inner.tenant_roots.contains_key(tenant) {
            return None;
        }
        let mut refusals = lock_refusals(&self.inner.own_root_refusals);
        let retry = OWN_ROOT_RETRY.min(self.inner.cache.ttl());
        match refusals.get(tenant) {
            Some((at, root_key_id, action, message)) if at.elapsed() < retry => {
                Some(Error::TenantRootKeyUnavailable {
                    tenant: tenant.to_string(),
                    root_key_id: root_key_id.clone(),
                    action,
                    source: Box::new(Error::Provider {
                        message: message.clone(),
                        source: None,
                    }),
                })
            }
            Some(_) => {
                refusals.remove(tenant);
                None
            }
            None => None,
        }
    }

    /// Whether this caller should check the store's generation for `keyring`
    /// now; at most one caller per interval wins.
    fn claim_check(&self, keyring: &Keyring) -> bool {
        let Some(interval) = self.inner.revalidate_after else {
            return false;
        };
        let interval = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        let now = u64::try_from(keyring.loaded_at.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = keyring.last_check_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= interval
            && keyring
                .last_check_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// The audit-chain key, loaded (or created) once per sealer.
    pub(crate) async fn audit_key(&self) -> Result<&HmacKey> {
        self.inner
            .audit_key
            .get_or_try_init(|| async {
                let store = &self.inner.store;
                let ctx = WrapContext::audit_key(1);
                if let Some(wrapped) = store.load_audit_key().await? {
                    let key = self.unwrap_key(&wrapped, ctx).await?;
                    return Ok(HmacKey::new(key.expose_secret()));
                }
                let key = TenantKey::generate()?;
                let wrapped = self.wrap_key(&key, ctx).await?;
                if store.insert_audit_key(wrapped).await? {
                    tracing::info!("created the audit-chain key");
                    let key = HmacKey::new(key.expose_secret());
                    // A store that refuses unbound keys from its creation
                    // says so in its log's first entry, so that accepting
                    // them later by SQL is a mismatch `verify_audit` reports.
                    if let Some(identity) = self.store_identity().await?
                        && !identity.accepts_unbound
                    {
                        let audit = AuditAppend::new(
                            &key,
                            AuditEvent::UnboundWrapsRefused,
                            "",
                            0,
                            None,
                            String::new(),
                            self.now(),
                        )?;
                        store.refuse_unbound_wraps(&audit).await?;
                    }
                    return Ok(key);
                }
                // Another process created it first: use theirs.
                let wrapped = store.load_audit_key().await?.ok_or_else(|| Error::Store {
                    message: "the key store reported an audit key but does not return it".into(),
                    source: None,
                })?;
                let key = self.unwrap_key(&wrapped, ctx).await?;
                Ok(HmacKey::new(key.expose_secret()))
            })
            .await
    }

    /// Whether `handle` is a snapshot this sealer's cache would have
    /// reloaded by now because its tenant's own root key must be asked
    /// again (bring your own key): older than the cache's time to live.
    #[cfg(feature = "_sql")]
    pub(crate) fn own_root_snapshot_expired(&self, handle: &TenantSealer) -> bool {
        self.inner.tenant_roots.contains_key(handle.tenant())
            && handle.keyring.loaded_at.elapsed() >= self.inner.cache.ttl()
    }

    /// The cached keys' time to live.
    #[cfg(feature = "_sql")]
    pub(crate) fn cache_ttl(&self) -> Duration {
        self.inner.cache.ttl()
    }

    /// The key store's identity, read once per sealer.
    pub(crate) async fn store_identity(&self) -> Result<Option<&StoreIdentity>> {
        let identity = self
            .inner
            .store_identity
            .get_or_try_init(|| self.inner.store.store_identity())
            .await?;
        Ok(identity.as_ref())
    }

    /// Whether the key store still accepts keys wrapped without its id. Read
    /// again from the store while the cached identity says it does (a store
    /// stops accepting them, never starts again): a process started before
    /// `rewrap_all` refused them refuses them too, from its next load.
    async fn accepts_unbound(&self, cached: &StoreIdentity) -> Result<bool> {
        if !cached.accepts_unbound || self.inner.unbound_refused.load(Ordering::Acquire) {
            return Ok(false);
        }
        let accepts = self
            .inner
            .store
            .store_identity()
            .await?
            .is_some_and(|now| now.accepts_unbound);
        if !accepts {
            self.inner.unbound_refused.store(true, Ordering::Release);
        }
        Ok(accepts)
    }

    /// The provider of the tenant's own root key, if `ctx` is a key of a
    /// tenant bound to one.
    pub(crate) fn own_root(&self, ctx: &WrapContext<'_>) -> Option<&dyn KeyProvider> {
        if ctx.is_audit_key() {
            return None;
        }
        self.inner
            .tenant_roots
            .get(ctx.tenant())
            .map(|provider| &**provider)
    }

    /// Wraps `key` for `ctx` under the current root key (the tenant's own,
    /// if it is bound to one), bound to the key store when it has an
    /// identity (FORMAT.md §"Wrapped keys").
    pub(crate) async fn wrap_key(
        &self,
        key: &TenantKey,
        ctx: WrapContext<'_>,
    ) -> Result<WrappedKey> {
        let identity = self.store_identity().await?;
        let bound = match identity {
            Some(identity) => ctx.in_store(&identity.id),
            None => ctx,
        };
        let wrapped = match self.own_root(&ctx) {
            Some(own) => own.wrap(key, &bound).await.map_err(|e| {
                own_root_unavailable(ctx.tenant(), own.current_root_key_id(), "wrapped", e)
            })?,
            None => self.inner.provider.wrap(key, &bound).await?,
        };
        Ok(if identity.is_some() {
            wrapped.bound_to_store()
        } else {
            wrapped
        })
    }

    /// Unwraps a key of a tenant bound to its own root key through that
    /// key's provider when it names one of its root keys; otherwise (a key
    /// wrapped before the binding) through the shared provider, and through
    /// the tenant's provider if the shared one does not hold it either (a
    /// root key the tenant's provider does not list). Any other tenant's
    /// key, and the audit-chain key, through the shared provider only.
    async fn routed_unwrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &WrapContext<'_>,
    ) -> Result<TenantKey> {
        let Some(own) = self.own_root(ctx) else {
            return self.inner.provider.unwrap(wrapped, ctx).await;
        };
        if !own.root_key_ids().contains(&wrapped.root_key_id()) {
            match self.inner.provider.unwrap(wrapped, ctx).await {
                Err(Error::RootKeyNotConfigured { .. }) => {}
                Ok(key) => {
                    tracing::warn!(
                        tenant = ctx.tenant(),
                        version = ctx.version(),
                        root_key = wrapped.root_key_id(),
                        "a key of a tenant bound to its own root key is still under a shared \
                         root key: run KeyAdmin::bind_tenant_root"
                    );
                    return Ok(key);
                }
                Err(e) => return Err(e),
            }
        }
        own.unwrap(wrapped, ctx)
            .await
            .map_err(|e| own_root_unavailable(ctx.tenant(), wrapped.root_key_id(), "unwrapped", e))
    }

    /// Unwraps `wrapped` for `ctx`: with the key store's id in the context if
    /// it is marked bound; without, only if the store has no identity or
    /// still accepts keys wrapped before it had one.
    pub(crate) async fn unwrap_key(
        &self,
        wrapped: &WrappedKey,
        ctx: WrapContext<'_>,
    ) -> Result<TenantKey> {
        match (self.store_identity().await?, wrapped.is_store_bound()) {
            (Some(identity), true) => {
                self.routed_unwrap(wrapped, &ctx.in_store(&identity.id))
                    .await
            }
            (Some(identity), false) if !self.accepts_unbound(identity).await? => {
                Err(Error::UnwrapFailed {
                    subject: format!(
                        "{} (wrapped without this key store's id, which the store no longer \
                     accepts)",
                        ctx.describe()
                    ),
                    root_key_id: wrapped.root_key_id().to_string(),
                })
            }
            (None, true) => Err(Error::UnwrapFailed {
                subject: format!(
                    "{} (marked as wrapped with a key store id, but the store has none)",
                    ctx.describe()
                ),
                root_key_id: wrapped.root_key_id().to_string(),
            }),
            _ => self.routed_unwrap(wrapped, &ctx).await,
        }
    }

    /// Reads the tenant from the store (creating its first key if asked) and
    /// unwraps its usable versions, reusing keys from `previous` and `fresh`
    /// whose wrapped form did not change.
    async fn load_keyring(
        &self,
        tenant: &str,
        create: bool,
        previous: Option<&Keyring>,
        fresh: Option<(u32, &WrappedKey, &TenantKeyDeriver)>,
    ) -> Result<Keyring> {
        let store = &self.inner.store;
        // Taken before reading the store, so that a shred or destruction that
        // commits after this read still stops the snapshot built from it.
        let revocation = self.inner.cache.revocation(tenant);
        let epoch = revocation.epoch();
        let record = match store.load_tenant(tenant).await? {
            Some(record) if record.latest_version() > 0 || record.shredded_at.is_some() => record,
            _ if create => {
                let (wrapped, deriver) = self
                    .create_version(tenant, 1, AuditEvent::TenantCreated, None)
                    .await?;
                let record = store
                    .load_tenant(tenant)
                    .await?
                    .ok_or_else(|| Error::Store {
                        message: format!(
                            "tenant `{tenant}` was created but the key store does not return it"
                        ),
                        source: None,
                    })?;
                return self
                    .build_keyring(
                        record,
                        previous,
                        Some((1, &wrapped, &deriver)),
                        revocation,
                        epoch,
                    )
                    .await;
            }
            _ => {
                return Err(Error::UnknownTenant {
                    tenant: tenant.to_string(),
                });
            }
        };
        self.build_keyring(record, previous, fresh, revocation, epoch)
            .await
    }

    async fn build_keyring(
        &self,
        mut record: TenantRecord,
        previous: Option<&Keyring>,
        fresh: Option<(u32, &WrappedKey, &TenantKeyDeriver)>,
        revocation: Arc<Revocation>,
        epoch: u64,
    ) -> Result<Keyring> {
        // The primary is the highest version: do not trust the store's order.
        record.keys.sort_by_key(|k| k.version);
        if record
            .keys
            .windows(2)
            .any(|w| matches!(w, [a, b] if a.version == b.version))
        {
            return Err(Error::Store {
                message: format!(
                    "tenant `{}` has the same key version twice in the key store",
                    record.tenant
                ),
                source: None,
            });
        }
        let tenant = record.tenant.as_str();
        let mut versions = Vec::with_capacity(record.keys.len());
        // A tenant's own root key is its owner's to revoke: a reload asks
        // each root key the tenant's keys are under once (for the newest
        // version under it), so a revocation shows within the cache's time
        // to live. The other versions reuse what the previous snapshot
        // unwrapped.
        let bound = self.inner.tenant_roots.contains_key(tenant);
        let mut asked: BTreeSet<String> = BTreeSet::new();
        if record.shredded_at.is_none() {
            for key in record.keys.into_iter().rev() {
                let status = match (key.state, key.wrapped) {
                    (KeyState::Destroyed, _) | (_, None) => VersionStatus::Destroyed {
                        at: key.state_changed_at,
                    },
                    (KeyState::Disabled, Some(_)) => VersionStatus::Disabled {
                        since: key.state_changed_at,
                    },
                    (KeyState::Active, Some(wrapped)) => {
                        let previous =
                            previous.filter(|_| !bound || asked.contains(wrapped.root_key_id()));
                        let known = reusable(previous, fresh, key.version, &wrapped);
                        let deriver = match known {
                            Some(deriver) => deriver,
                            None => self.unwrap(tenant, key.version, &wrapped).await?,
                        };
                        if bound {
                            asked.insert(wrapped.root_key_id().to_string());
                        }
                        VersionStatus::Usable { deriver, wrapped }
                    }
                };
                versions.push(VersionEntry {
                    version: key.version,
                    status,
                });
            }
            versions.reverse();
        }
        Ok(Keyring {
            tenant: tenant.into(),
            versions,
            min_decryption_version: record.min_decryption_version,
            shredded_at: record.shredded_at,
            generation: record.generation,
            loaded_at: Instant::now(),
            last_check_ms: AtomicU64::new(0),
            revocation,
            epoch,
        })
    }

    async fn unwrap(
        &self,
        tenant: &str,
        version: u32,
        wrapped: &WrappedKey,
    ) -> Result<TenantKeyDeriver> {
        tracing::debug!(
            tenant,
            version,
            root_key_id = wrapped.root_key_id(),
            "unwrapping tenant key"
        );
        let key = self
            .unwrap_key(wrapped, WrapContext::tenant_key(tenant, version))
            .await?;
        Ok(TenantKeyDeriver::new(key.expose_secret()))
    }

    /// Generates, wraps and inserts key `version` for `tenant` (recording
    /// `event`), and returns the wrapped key with its deriver. If another
    /// process created that version first, the store keeps the other key;
    /// `reusable` matches on the wrapped bytes, so the losing key is never used.
    pub(crate) async fn create_version(
        &self,
        tenant: &str,
        version: u32,
        event: AuditEvent,
        actor: Option<&str>,
    ) -> Result<(WrappedKey, TenantKeyDeriver)> {
        if event == AuditEvent::TenantCreated {
            crate::context::check_new_tenant(tenant)?;
        }
        let (new, deriver) = self.new_key_version(tenant, version).await?;
        let wrapped = new.wrapped.clone();
        self.record_own_root(tenant, version, &wrapped, actor)
            .await?;
        let audit_key = self.audit_key().await?;
        let audit = AuditAppend::new(
            audit_key,
            event,
            tenant,
            version,
            actor,
            String::new(),
            self.now(),
        )?;
        match self
            .inner
            .store
            .insert_key_version(tenant, new, &audit)
            .await?
        {
            InsertOutcome::Inserted => {
                tracing::info!(tenant, version, event = %event, "created tenant key");
            }
            InsertOutcome::AlreadyExists => {
                tracing::debug!(
                    tenant,
                    version,
                    "tenant key version was created concurrently"
                );
            }
            InsertOutcome::Shredded => {
                let shredded_at = self
                    .inner
                    .store
                    .load_tenant(tenant)
                    .await?
                    .and_then(|r| r.shredded_at)
                    .unwrap_or_else(Timestamp::now);
                return Err(Error::TenantShredded {
                    tenant: tenant.to_string(),
                    shredded_at,
                });
            }
        }
        Ok((wrapped, deriver))
    }

    /// Records, for a tenant bound to its own root key, that `wrapped` (its
    /// key `version`, not stored yet) is under it: before the key is stored,
    /// so that the audit log names every root key that ever held the
    /// tenant's keys ([`KeyAdmin::erasure_report`](crate::KeyAdmin::erasure_report)).
    pub(crate) async fn record_own_root(
        &self,
        tenant: &str,
        version: u32,
        wrapped: &WrappedKey,
        actor: Option<&str>,
    ) -> Result<()> {
        if !self.inner.tenant_roots.contains_key(tenant) {
            return Ok(());
        }
        let audit = AuditAppend::new(
            self.audit_key().await?,
            AuditEvent::TenantRootBound,
            tenant,
            version,
            actor,
            wrapped.root_key_id().to_string(),
            self.now(),
        )?;
        self.inner.store.record_audit(&audit).await
    }

    /// A fresh random key for `tenant` version `version`, wrapped under the
    /// current root key, and its deriver.
    pub(crate) async fn new_key_version(
        &self,
        tenant: &str,
        version: u32,
    ) -> Result<(NewKeyVersion, TenantKeyDeriver)> {
        let key = TenantKey::generate()?;
        let wrapped = self
            .wrap_key(&key, WrapContext::tenant_key(tenant, version))
            .await?;
        Ok((
            NewKeyVersion {
                version,
                wrapped,
                created_at: self.now(),
            },
            TenantKeyDeriver::new(key.expose_secret()),
        ))
    }
}

/// The refusals map, even if a thread panicked holding it (it holds no
/// invariant a panic could break).
fn lock_refusals(
    m: &std::sync::Mutex<std::collections::HashMap<String, OwnRootRefusal>>,
) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, OwnRootRefusal>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A provider failure of a tenant's own root key, as the error that names
/// the tenant and the key; other errors (a wrong key, an altered record) as
/// they are.
fn own_root_unavailable(tenant: &str, root_key_id: &str, action: &'static str, e: Error) -> Error {
    match e {
        Error::Provider { .. } => Error::TenantRootKeyUnavailable {
            tenant: tenant.to_string(),
            root_key_id: root_key_id.to_string(),
            action,
            source: Box::new(e),
        },
        other => other,
    }
}

/// A deriver for `version` that is already unwrapped, if its wrapped form is
/// unchanged.
fn reusable(
    previous: Option<&Keyring>,
    fresh: Option<(u32, &WrappedKey, &TenantKeyDeriver)>,
    version: u32,
    wrapped: &WrappedKey,
) -> Option<TenantKeyDeriver> {
    if let Some((v, w, d)) = fresh
        && v == version
        && w == wrapped
    {
        return Some(d.clone());
    }
    previous?
        .versions
        .iter()
        .find_map(|entry| match &entry.status {
            VersionStatus::Usable {
                deriver,
                wrapped: known,
            } if entry.version == version && known == wrapped => Some(deriver.clone()),
            _ => None,
        })
}

pub(crate) fn check_tenant_id(tenant: &str) -> Result<()> {
    crate::context::check_tenant(tenant)
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("provider", &self.inner.provider)
            .field("tenant_roots", &self.inner.tenant_roots.keys())
            .field("store", &self.inner.store)
            .field("algorithm", &self.inner.algorithm)
            .field("cache", &self.inner.cache)
            .finish()
    }
}

/// Seals and opens values for one tenant, synchronously, with keys already in
/// memory.
///
/// Get one from [`Sealer::tenant`]. It is a snapshot of the tenant's keys: use
/// it for a request or a batch, then drop it, so that changes are picked up.
/// Shredding the tenant and destroying a version stop it at once (when done
/// through this process); a rotation, a disabled version or a new minimum
/// decryption version take effect only in handles fetched afterwards.
///
/// # Security
///
/// A shred made through any clone of the [`Sealer`] that issued it stops this
/// handle at once. A shred made by another process stops it only when it is
/// dropped and fetched again, so do not keep one for longer than the cache time
/// to live.
#[derive(Clone)]
pub struct TenantSealer {
    pub(crate) keyring: Arc<Keyring>,
    algorithm: Algorithm,
    label_tenant: bool,
}

impl TenantSealer {
    /// The tenant this handle serves.
    pub fn tenant(&self) -> &str {
        &self.keyring.tenant
    }

    /// The key version new values are sealed under.
    pub fn primary_version(&self) -> u32 {
        self.keyring.primary_version()
    }

    /// Seals `plaintext` under the tenant's primary key. No I/O: the salt comes
    /// from the thread's user-space generator.
    ///
    /// # Errors
    ///
    /// [`Error::TenantMismatch`] if `ctx` names another tenant;
    /// [`Error::PlaintextTooLarge`]; [`Error::TenantShredded`].
    pub fn seal(&self, ctx: &Context, plaintext: &[u8]) -> Result<SealedValue> {
        let result = self.keyring.seal(self.algorithm, ctx, plaintext);
        telemetry::sealed(&result, self.tenant_label());
        result
    }

    /// The key store's generation of the tenant when these keys were read.
    #[cfg(feature = "_sql")]
    pub(crate) fn generation(&self) -> u64 {
        self.keyring.generation
    }

    pub(crate) fn tenant_label(&self) -> Option<&str> {
        self.label_tenant.then_some(&*self.keyring.tenant)
    }

    /// As [`TenantSealer::seal_row`], without counting it in the metrics.
    pub(crate) fn seal_row_uncounted(
        &self,
        template: &ContextTemplate,
        row: impl fmt::Display,
        plaintext: &[u8],
    ) -> Result<SealedValue> {
        self.keyring
            .seal_row(self.algorithm, template, row, plaintext)
    }

    /// As [`TenantSealer::open`], without counting it in the metrics (for a
    /// caller that counts the outcome itself, or not at all).
    #[cfg(feature = "_sql")]
    pub(crate) fn open_uncounted(&self, ctx: &Context, sealed: &SealedValue) -> Result<Opened> {
        self.keyring.open(ctx, sealed)
    }

    /// As [`TenantSealer::seal`], without counting it in the metrics.
    #[cfg(feature = "_sql")]
    pub(crate) fn seal_uncounted(&self, ctx: &Context, plaintext: &[u8]) -> Result<SealedValue> {
        self.keyring.seal(self.algorithm, ctx, plaintext)
    }

    /// Counts an open made with [`TenantSealer::open_uncounted`].
    #[cfg(feature = "_sql")]
    pub(crate) fn counted_open(&self, result: Result<Opened>) -> Result<Opened> {
        telemetry::opened(&result, self.tenant_label());
        result
    }

    /// Opens `sealed`, which must have been sealed with exactly this `ctx`.
    ///
    /// # Errors
    ///
    /// As [`Sealer::open`], plus [`Error::TenantMismatch`]. A value under a key
    /// version newer than this snapshot gives [`Error::UnknownKeyVersion`]:
    /// [`Sealer::open`] reloads in that case.
    pub fn open(&self, ctx: &Context, sealed: &SealedValue) -> Result<Opened> {
        let result = self.keyring.open(ctx, sealed);
        telemetry::opened(&result, self.tenant_label());
        result
    }

    /// As [`Sealer::reseal`], synchronously, with this snapshot's keys.
    ///
    /// # Errors
    ///
    /// As [`TenantSealer::open`].
    pub fn reseal(&self, ctx: &Context, sealed: &SealedValue) -> Result<Option<SealedValue>> {
        let result = self.keyring.reseal(self.algorithm, ctx, sealed);
        telemetry::resealed(&result, self.tenant_label());
        result
    }
}

impl fmt::Debug for TenantSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantSealer")
            .field("tenant", &self.keyring.tenant)
            .field("primary_version", &self.keyring.primary_version())
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}
